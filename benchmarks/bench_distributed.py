"""Data-parallel training on MPI: step time at 1 and 2 ranks, the all-reduce's
share of a step, what a one-rank `DataParallel` costs against plain `fit`,
and the scaling that follows on 4-64 nodes.

    pip install -e ".[mpi]"
    python benchmarks/bench_distributed.py [--epochs 5] [--steps 30] [--only mlp-medium]

Workloads (float32, Adam, sparse cross-entropy from logits, batch 128):
- mlp-medium: Dense(784 -> 256, relu) -> Dense(10), 203,530 parameters;
- mlp-1m: Dense(784 -> 1024, relu) -> Dense(256, relu) -> Dense(10), 1,068,810.

Each configuration runs in its own processes (`--worker`; 2 ranks through
`mpiexec -n 2`), after a warm-up epoch that compiles (the disk cache is shared).
A sample is one epoch of `--steps` steps after a 0.2 s sleep; the best of
`--epochs` samples (the least disturbed by other processes). Columns:
- 1 rank: plain `fit` (all cores; and with one BLAS/Numba thread, what each
  of 2 ranks gets on a 2-core machine); size()=1: the same model with
  `DataParallel` set, epochs interleaved with the plain ones (ABBA) in the
  one-thread process; the overhead compares the CPU seconds of whole `fit`
  calls (goal <= 2%; CPU time is the steadier measure on a busy machine);
- 2 ranks strong: the same global batch of 128 (64 rows per rank), speedup
  against the faster 1-rank column; 2 ranks weak: 128 rows per rank (global
  256), efficiency = that 1-rank step / step;
- all-reduce in fit: seconds inside the gradient all-reduce per step at 2
  ranks (with the wait for the slower rank) and its share of the step;
  Allreduce alone: the same buffer all-reduced back to back (the transfer).

The projection uses the ring all-reduce model, T_ar(P) = 2 (P-1)/P * M / BW +
2 (P-1) * alpha, with BW and alpha measured here (an Allreduce of 8 MB and of
8 bytes between 2 ranks on one node) or a 10 GbE network's (1.1 GB/s, 20 us),
the gradient kernel's time T_g divided over the ranks and the update kernel's
T_u repeated on each: a step takes T_g / P + T_u + T_ar(P) (strong scaling) or
T_g + T_u + T_ar(P) (weak), with T_g and T_u the CPU times of the two kernels
on one thread (the wall times of a busy machine are inflated by other
processes; CPU time much less so: a second table gives the CPU per rank and
step outside the all-reduce). The
all-reduce share measured inside `fit` also holds the wait for the slower rank.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

WORKLOADS = {"mlp-medium": (784, 256, 10), "mlp-1m": (784, 1024, 256, 10)}
BATCH = 128
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "NUMBA_NUM_THREADS")
NETWORK = {"name": "10 GbE", "bandwidth": 1.1e9, "alpha": 20e-6}


# ------------------------------------------------------------------ worker

def build(sizes):
    from tracejit import nn

    nn.set_random_seed(0)
    layers = [nn.Input((sizes[0],))]
    layers += [nn.Dense(n, activation="relu") for n in sizes[1:-1]] + [nn.Dense(sizes[-1])]
    model = nn.Sequential(layers)
    model.compile(optimizer=nn.optimizers.Adam(1e-3),
                  loss=nn.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def epoch_times(model, x, y, batch: int) -> tuple[float, float]:
    """(wall, CPU) seconds of one epoch."""
    time.sleep(0.2)
    cpu = time.process_time()
    wall = model.fit(x, y, batch_size=batch, epochs=1, verbose=0,
                     shuffle=False).epoch_seconds[0]
    return wall, time.process_time() - cpu


def timed_all_reduce():
    """Wrap the all-reduce `fit` calls; returns the list their (wall, CPU)
    seconds go to (MPI spins while it waits: that CPU is not compute)."""
    from tracejit import distributed

    spent, inner = [], distributed.all_reduce_sum_

    def timed(buffer, what="all_reduce"):
        start, cpu = time.perf_counter(), time.process_time()
        inner(buffer, what)
        spent.append((time.perf_counter() - start, time.process_time() - cpu))
        return buffer

    distributed.all_reduce_sum_ = timed
    return spent


def timed_calls(fn, spent: list):
    """`fn`, noting each call's (wall, CPU) seconds in `spent`."""
    def timed(*args):
        start, cpu = time.perf_counter(), time.process_time()
        out = fn(*args)
        spent.append((time.perf_counter() - start, time.process_time() - cpu))
        return out

    return timed


def per_step(spent: list, reduce: list, steps: int) -> tuple:
    """(wall, all-reduce wall, CPU outside the all-reduce) per step, from the
    steps' and all-reduces' (wall, CPU) records of one epoch."""
    wall, cpu = np.sum(spent, axis=0)
    reduce_wall, reduce_cpu = np.sum(reduce, axis=0) if reduce else (0.0, 0.0)
    return wall / steps, reduce_wall / steps, (cpu - reduce_cpu) / steps


def all_reduce_seconds(nbytes: int, repeats: int = 20) -> float:
    from tracejit import distributed

    buffer = np.ones(max(1, nbytes // 4), np.float32)
    distributed.barrier()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        distributed.all_reduce_sum_(buffer)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def kernel_cpu_seconds(model, x, y, calls: int = 20, repeats: int = 5) -> tuple:
    """CPU seconds per call of the split step's halves on one process: the
    gradient kernel on a whole batch, and the update kernel (the part of a
    step every rank repeats whatever its shard)."""
    gradient, update = model.step_function("gradient"), model.step_function("apply")
    flat = gradient(x, y, 1.0)
    update(np.zeros_like(flat))
    gradient.wait()
    update.wait()
    zeros = np.zeros_like(flat)  # applying zero gradients keeps the weights usable
    best = []
    for call in (lambda: gradient(x, y, 1.0), lambda: update(zeros)):
        samples = []
        for _ in range(repeats):
            time.sleep(0.2)
            start = time.process_time()
            for _ in range(calls):
                call()
            samples.append((time.process_time() - start) / calls)
        best.append(min(samples))
    return tuple(best)


def worker(args) -> None:
    from tracejit import distributed, distribution

    sizes = WORKLOADS[args.workload]
    global_batch = args.batch
    rows = args.steps * global_batch
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], size=rows)
    model = build(sizes)
    parallel = distribution.DataParallel()
    result = {"params": int(sum(v.size for v in model.trainable_variables))}
    if distributed.size() == 1:  # plain fit and DataParallel with one rank, interleaved
        model.fit(x, y, batch_size=global_batch, epochs=1, verbose=0)
        model.step_function("train").wait()
        samples = {None: [], parallel: []}
        for k in range(args.epochs):
            for strategy in (None, parallel)[::1 if k % 2 else -1]:  # ABBA: no order bias
                distribution.set_distribution(strategy)
                samples[strategy].append(epoch_times(model, x, y, global_batch))
        steps = []
        model._step_functions["train"] = timed_calls(model.step_function("train"), steps)
        distribution.set_distribution(None)
        cpu = []
        for _ in range(args.epochs):
            del steps[:]
            epoch_times(model, x, y, global_batch)
            cpu.append(per_step(steps, [], args.steps)[2])
        result.update(step=min(samples[None])[0] / args.steps,
                      step_dp1=min(samples[parallel])[0] / args.steps, cpu=min(cpu),
                      fit_cpu=min(c for _, c in samples[None]) / args.steps,
                      fit_cpu_dp1=min(c for _, c in samples[parallel]) / args.steps)
        result["gradient_cpu"], result["update_cpu"] = kernel_cpu_seconds(
            model, x[:global_batch], y[:global_batch])
    else:
        distribution.set_distribution(parallel)
        model.fit(x, y, batch_size=global_batch, epochs=1, verbose=0)  # compiles once
        spent, steps = timed_all_reduce(), []
        sharded = parallel.train_step  # the steps alone: not fit's start (broadcasts)
        parallel.train_step = lambda *a: timed_calls(sharded(*a), steps)
        epochs = []
        for _ in range(args.epochs):
            del spent[:], steps[:]
            epoch_times(model, x, y, global_batch)
            epochs.append(per_step(steps, spent, args.steps))
        best = min(epochs)
        result.update(step=best[0], all_reduce=best[1], cpu=min(e[2] for e in epochs),
                      mb=(result["params"] + 1) * 4 / 1e6,
                      ar_8mb=all_reduce_seconds(8_000_000), ar_8b=all_reduce_seconds(8))
        result["ar_buffer"] = all_reduce_seconds(int(result["mb"] * 1e6))
    if distributed.rank() == 0:
        print("RESULT " + json.dumps(result), flush=True)


# ------------------------------------------------------------------ driver

def launch(workload: str, ranks: int, batch: int, args, cache_dir: str,
           threads: int | None = None) -> dict:
    command = [sys.executable, os.path.abspath(__file__), "--worker", "--workload", workload,
               "--batch", str(batch), "--epochs", str(args.epochs), "--steps", str(args.steps)]
    if ranks > 1:
        mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
        command = [mpiexec if os.path.exists(mpiexec) else "mpiexec", "-n", str(ranks)] + command
    env = {**os.environ, "PYTHONPATH": ROOT, "TRACEJIT_CACHE_DIR": cache_dir}
    if threads:
        env.update({name: str(threads) for name in THREAD_VARIABLES})
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
    return json.loads(lines[0][len("RESULT "):])


def ring_seconds(megabytes: float, ranks: int, bandwidth: float, alpha: float) -> float:
    return 2 * (ranks - 1) / ranks * megabytes * 1e6 / bandwidth + 2 * (ranks - 1) * alpha


def projection(single: dict, strong: dict) -> list:
    """Rows (ranks, then strong and weak efficiency for this machine's
    all-reduce and for NETWORK's). The gradient divides over the ranks, the
    update does not (every rank applies it): a step is T_g / P + T_u + T_ar(P)
    strong, T_g + T_u + T_ar(P) weak."""
    gradient, update = single["gradient_cpu"], single["update_cpu"]
    measured_bw = 8e6 / max(strong["ar_8mb"] - strong["ar_8b"], 1e-9)
    measured_alpha = strong["ar_8b"] / 2
    rows = []
    for ranks in (4, 8, 16, 32, 64):
        row = [ranks]
        for bandwidth, alpha in ((measured_bw, measured_alpha),
                                 (NETWORK["bandwidth"], NETWORK["alpha"])):
            reduce = ring_seconds(strong["mb"], ranks, bandwidth, alpha)
            one = gradient + update
            row += [one / (ranks * (gradient / ranks + update + reduce)),
                    one / (one + reduce)]
        rows.append(row)
    return rows


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--only", choices=sorted(WORKLOADS))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workload", default="mlp-medium", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=BATCH, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    cache_dir = tempfile.mkdtemp(prefix="tracejit-bench-distributed-")
    print("| workload | params | grads MB | 1 rank ms | 1 rank, 1 thread ms | "
          "size()=1, 1 thread ms | "
          "overhead (CPU) | 2 ranks strong ms | speedup | 2 ranks weak ms | weak efficiency | "
          "all-reduce in fit ms | share | Allreduce alone ms | share |")
    print("|---|" + "---:|" * 14)
    projections, cpu_rows, singles = {}, {}, {}
    for name in [args.only] if args.only else list(WORKLOADS):
        one = launch(name, 1, BATCH, args, cache_dir)
        single = launch(name, 1, BATCH, args, cache_dir, threads=1)
        strong = launch(name, 2, BATCH, args, cache_dir)
        weak = launch(name, 2, 2 * BATCH, args, cache_dir)
        overhead = (single["fit_cpu_dp1"] / single["fit_cpu"] - 1) * 100  # CPU: steadier
        best = min(one["step"], single["step"])  # the fastest single process is the baseline
        cells = [name, f"{one['params']:,}", f"{strong['mb']:.2f}", _ms(one["step"]),
                 _ms(single["step"]), _ms(single["step_dp1"]), f"{overhead:+.1f}%",
                 _ms(strong["step"]), f"{best / strong['step']:.2f}x", _ms(weak["step"]),
                 f"{best / weak['step']:.2f}", _ms(strong["all_reduce"]),
                 f"{strong['all_reduce'] / strong['step'] * 100:.0f}%",
                 _ms(strong["ar_buffer"]), f"{strong['ar_buffer'] / strong['step'] * 100:.0f}%"]
        print("| " + " | ".join(cells) + " |", flush=True)
        projections[name] = (projection(single, strong), strong)
        cpu_rows[name] = (single["cpu"], strong["cpu"], weak["cpu"])
        singles[name] = single
    print("\nCPU per step and rank outside the all-reduce (what the load of other processes "
          "does not inflate):\n")
    print("| workload | 1 rank, 1 thread ms | 2 ranks strong ms | / (1 rank / 2) | "
          "2 ranks weak ms | / 1 rank |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, (single, strong, weak) in cpu_rows.items():
        print(f"| {name} | {_ms(single)} | {_ms(strong)} | {strong / (single / 2):.2f} | "
              f"{_ms(weak)} | {weak / single:.2f} |")
    for name, (rows, strong) in projections.items():
        single = singles[name]
        print(f"\n{name}: measured all-reduce {strong['ar_8mb'] / 8 * 1e3:.2f} ms/MB, "
              f"{strong['ar_8b'] * 1e6:.0f} us for 8 bytes (2 ranks, one node); gradient "
              f"kernel {_ms(single['gradient_cpu'])} ms, update kernel "
              f"{_ms(single['update_cpu'])} ms CPU (batch {BATCH}, one thread)")
        print(f"| ranks | strong eff. (this machine's all-reduce) | weak eff. | strong eff. "
              f"({NETWORK['name']}) | weak eff. |")
        print("|---:|---:|---:|---:|---:|")
        for ranks, s_here, w_here, s_net, w_net in rows:
            print(f"| {ranks} | {s_here:.2f} | {w_here:.2f} | {s_net:.2f} | {w_net:.2f} |")


if __name__ == "__main__":
    main()
