"""The digits MLP of examples/digits_mlp.py trained data-parallel on MPI ranks:
the same model and `fit` call, plus one line that sets the distribution.

    pip install -e ".[examples,mpi]"
    mpiexec -n 2 python examples/distributed_digits.py [--epochs 20] [--batch-size 64]

Every rank loads the whole dataset; each global batch of `--batch-size` rows
is split across the ranks, the gradients are summed by one all-reduce per
step, and every rank applies the same update. Rank 0 prints the progress and
the result; each rank reports its share of the work. Run without `mpiexec`
it trains in one process, with the same numbers up to rounding.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # digits_mlp beside it

from digits_mlp import load, make_model  # noqa: E402

from tracejit import distributed, distribution, nn  # noqa: E402


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64, help="global: over all ranks")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, default=2)
    args = parser.parse_args(argv)

    distribution.set_distribution(distribution.DataParallel())
    rank, ranks = distributed.rank(), distributed.size()
    x_train, x_test, y_train, y_test = load(args.seed)
    nn.set_random_seed(args.seed)
    model = make_model(run_eagerly=False)  # weights and slots are broadcast from rank 0
    if rank == 0:
        print(f"{ranks} rank(s); global batch {args.batch_size}, about "
              f"{-(-args.batch_size // ranks)} rows per rank")
    start = time.perf_counter()
    history = model.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
                        validation_data=(x_test, y_test), verbose=args.verbose)
    total = time.perf_counter() - start
    loss, accuracy = model.evaluate(x_test, y_test, batch_size=args.batch_size)
    steady = sorted(history.epoch_seconds[1:] or history.epoch_seconds)
    if rank == 0:
        print(f"{args.epochs} epochs in {total:.2f}s ({steady[len(steady) // 2] * 1e3:.1f} ms "
              f"per epoch after the first); test loss {loss:.4f}, test accuracy {accuracy:.4f}")
    stats = distributed.all_gather_object(vars(model.step_function("gradient").stats))
    if rank == 0:
        for k, s in enumerate(stats):
            print(f"rank {k}: gradient kernel compiled {s['compiles']}x, loaded from the "
                  f"shared disk cache {s['disk_hits']}x")
    return {"accuracy": accuracy, "loss": loss, "history": history}


if __name__ == "__main__":
    main()
