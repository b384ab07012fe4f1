"""Memory over many retraces: does anything keep functions (and the arrays they
capture) alive after the user drops them?

    python benchmarks/bench_memory.py                # 1000 retraces, kernels
    python benchmarks/bench_memory.py --interpret --retraces 300

Each retrace makes a new function closing over a fresh 4 MB array, calls it
(and its gradient, vjp and jacobian), then drops it. Printed: the process's
resident memory before, its peak and its end (MB), with the cyclic gc on (as
users run) and off (what reference counting alone frees: nothing may need the
gc), and the per-function cache's bound (tracejit.config.cache_size) holding.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tracejit  # noqa: E402

MB = 1 << 20


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MB


def one_retrace(k: int) -> None:
    captured = np.full(MB // 2, float(k))  # 4 MB of float64
    x = np.ones(8)
    f = tracejit.function(lambda v: np.tanh(v * captured[:8]))
    f(x)
    tracejit.grad(lambda v: np.sum(v * captured[:8]))(x)
    out, vjp_fn = tracejit.vjp(f, x)
    vjp_fn(np.ones(8))
    tracejit.jacobian(lambda v: v[:2] * captured[:2])(np.ones(2))


def run(retraces: int, collect: bool) -> tuple[float, float, float, float]:
    (gc.enable if collect else gc.disable)()
    one_retrace(-1)  # compile (or load) every kernel once
    start, peak = rss_mb(), 0.0
    began = time.perf_counter()
    for k in range(retraces):
        one_retrace(k)
        peak = max(peak, rss_mb())
    per_retrace = (time.perf_counter() - began) / retraces
    gc.enable()
    return start, peak, rss_mb(), per_retrace


def bounded_cache(size: int = 16, shapes: int = 100) -> int | None:
    if not hasattr(tracejit, "config"):
        return None
    tracejit.config.cache_size = size
    saved = os.environ.get("TRACEJIT_DISABLE_JIT")
    os.environ["TRACEJIT_DISABLE_JIT"] = "1"  # 100 kernels would be 100 compiles
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the retrace warning: retracing is the point
            f = tracejit.function(lambda x: x * x.shape[0])  # each size its own entry
            for n in range(2, 2 + shapes):
                f(np.ones(n))
    finally:
        os.environ.pop("TRACEJIT_DISABLE_JIT") if saved is None else None
    return len(f._recent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--retraces", type=int, default=1000)
    parser.add_argument("--interpret", action="store_true")
    args = parser.parse_args()
    if args.interpret:
        os.environ["TRACEJIT_DISABLE_JIT"] = "1"
    os.environ.setdefault("TRACEJIT_COMPILE", "sync")
    print(f"{args.retraces} retraces of a function over a fresh 4 MB array "
          f"({'interpreter' if args.interpret else 'kernels'}); resident MB")
    print(f"{'gc':<6}{'before':>9}{'peak':>9}{'after':>9}{'growth':>9}{'ms/retrace':>12}")
    for collect in (True, False):
        before, peak, after, per = run(args.retraces, collect)
        print(f"{'on' if collect else 'off':<6}{before:>9.0f}{peak:>9.0f}{after:>9.0f}"
              f"{peak - before:>9.0f}{per * 1e3:>12.1f}")
    print(f"max RSS of the process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}"
          " MB")
    print(f"entries kept by a function called with 100 shapes, cache_size 16: {bounded_cache()}")


if __name__ == "__main__":
    main()
