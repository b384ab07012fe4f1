"""The programs tests/test_distributed.py launches with `mpiexec -n 2`.

    mpiexec -n 2 python tests/distributed_job.py train   # fit and a GradientTape loop
    mpiexec -n 2 python tests/distributed_job.py kill    # rank 1 dies mid-training
    mpiexec -n 2 python tests/distributed_job.py raise   # rank 1 raises mid-training
    mpiexec -n 2 python tests/distributed_job.py hang    # rank 1 leaves early

`train` trains with 2 ranks, then rank 0 trains the same model alone on the
same global batches (no distribution) and prints one line `RESULT {json}`:
the largest relative difference of the weights, both histories, and every
rank's compile counts.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import numpy as np

from tracejit import GradientTape, Variable, distributed, distribution, nn


def data(rows: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 5))
    return x, (x @ rng.normal(size=(5, 3)) > 0).argmax(axis=1)


def classifier(seed: int, optimizer):
    nn.set_random_seed(seed)
    model = nn.Sequential([nn.Input((5,)), nn.Dense(8, activation="tanh"), nn.Dense(3)])
    model.compile(optimizer=optimizer,
                  loss=nn.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def largest_difference(weights, reference) -> float:
    return max(float(np.max(np.abs(a - np.asarray(b)) / np.maximum(np.abs(b), 1e-300)))
               for a, b in zip(weights, reference))


def fit_both(rows: int, batch: int, make_optimizer, validate: bool) -> dict:
    """A 2-rank fit (each rank starts from other weights: rank 0's are broadcast),
    then on rank 0 a one-process fit on the same batches."""
    x, y = data(rows)
    extra = {"validation_data": (x[:9], y[:9])} if validate else {}
    distribution.set_distribution(distribution.DataParallel())
    model = classifier(distributed.rank(), make_optimizer())
    history = model.fit(x, y, batch_size=batch, epochs=3, verbose=0, **extra)
    evaluated = model.evaluate(x, y, batch_size=batch) if validate else None
    for kind in ("gradient", "apply"):  # a load from the shared cache may still be landing
        model.step_function(kind).wait()
    stats = {kind: vars(model.step_function(kind).stats) for kind in ("gradient", "apply")}
    weights = [v.numpy() for v in model.weights]
    distribution.set_distribution(None)
    result = {"stats": distributed.all_gather_object(stats)}
    if distributed.rank() == 0:
        alone = classifier(0, make_optimizer())
        reference = alone.fit(x, y, batch_size=batch, epochs=3, verbose=0, **extra)
        result.update(difference=largest_difference(weights, [v.numpy() for v in alone.weights]),
                      history=history.history, reference=reference.history,
                      evaluated=evaluated,
                      evaluated_alone=alone.evaluate(x, y, batch_size=batch) if validate else None)
    return result


def tape_loop(rows: int, batch: int, distributed_run: bool, weighted: bool) -> list:
    """A GradientTape loop: DistributedOptimizer on each rank's shard, or one
    process on whole batches."""
    x, y = data(rows)
    target = np.eye(3)[y]
    rng = np.random.default_rng(10 + (distributed.rank() if distributed_run else 0))
    w, b = Variable(rng.normal(size=(5, 3))), Variable(np.zeros(3))
    optimizer = nn.optimizers.SGD(0.1, momentum=0.9)
    if distributed_run:
        distributed.broadcast_variables([w, b])
        optimizer = distributed.DistributedOptimizer(optimizer)
    for _ in range(3):
        for start in range(0, rows, batch):
            xb, tb = x[start:start + batch], target[start:start + batch]
            if distributed_run:
                sizes = distribution.shard_sizes(len(xb), distributed.size())
                first = sum(sizes[:distributed.rank()])
                xb, tb = (a[first:first + sizes[distributed.rank()]] for a in (xb, tb))
            with GradientTape() as tape:
                loss = np.mean(np.square(xb @ w + b - tb))
            grads = tape.gradient(loss, [w, b])
            if distributed_run and weighted:
                optimizer.apply_gradients(zip(grads, [w, b]), num_samples=len(xb))
            else:
                optimizer.apply_gradients(zip(grads, [w, b]))
    return [w.numpy(), b.numpy()]


def train() -> None:
    nn.set_floatx("float64")
    rows, batch = int(os.environ.get("JOB_ROWS", "37")), int(os.environ.get("JOB_BATCH", "10"))
    result = fit_both(rows, batch, lambda: nn.optimizers.Adam(0.01),
                      validate=os.environ.get("JOB_VALIDATE") == "1")
    for weighted, tape_rows in ((True, rows), (False, 40)):  # uneven shards; even, averaged
        weights = tape_loop(tape_rows, batch, True, weighted)
        if distributed.rank() == 0:
            alone = tape_loop(tape_rows, batch, False, weighted)
            key = "tape_weighted" if weighted else "tape_mean"
            result[key] = largest_difference(weights, alone)
    if distributed.rank() == 0:
        print("RESULT " + json.dumps(result), flush=True)
    distributed.barrier()


def fault(mode: str) -> None:
    """Rank 1 fails at its 5th step while rank 0 keeps all-reducing."""
    distributed.initialize()
    for step in range(10_000):
        if distributed.rank() == 1 and step == 5:
            if mode == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if mode == "raise":
                raise RuntimeError("rank 1 failed on purpose")
            if mode == "hang":
                sys.exit(0)
        distributed.all_reduce_mean(np.ones(4))
        time.sleep(0.01)
    print("not reached: the job should have ended", flush=True)


if __name__ == "__main__":
    what = sys.argv[1]
    train() if what == "train" else fault(what)
