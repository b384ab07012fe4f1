"""Dispatch overhead: a compiled call against the bare Numba kernel it runs, and
what an active profiler adds to it.

    python benchmarks/bench_dispatch.py

The target (issue 2): at most 2 µs above the bare Numba call for a function
of three array arguments. The profiler must cost nothing when off (the hot
path has no hook: a profiler swaps a timing wrapper into each compiled entry
while it records) and little when on. All are timed interleaved in one run.
"""

from __future__ import annotations

import numpy as np
from harness import fmt_us, markdown_table, time_many

import tracejit


@tracejit.function
def three_arrays(a, b, c):
    return a + b * c


@tracejit.function
def pytree_args(params, x):
    W, b = params["W"], params["b"]
    return x @ W + b


def bare_kernel(function, *args):
    """The Numba dispatcher behind `function` for these arguments, and its consts."""
    function(*args)
    function.wait()
    entry = next(iter(function._fast.values()))
    return entry.kernel.fn, entry.kernel.consts


def main() -> None:
    rows = []
    a, b, c = (np.ones(3) for _ in range(3))
    fn, consts = bare_kernel(three_arrays, a, b, c)
    rows.append(["a + b * c, three (3,) arrays", fn, (a, b, c, *consts), three_arrays, (a, b, c)])
    params, x = {"W": np.ones((3, 2)), "b": np.zeros(2)}, np.ones((4, 3))
    fn, consts = bare_kernel(pytree_args, params, x)
    leaves = (params["W"], params["b"], x)
    rows.append(["x @ W + b, dict params", fn, (*leaves, *consts), pytree_args, (params, x)])
    table = []
    for name, fn, bare_args, function, args in rows:
        off = time_many({"bare": (fn, bare_args), "tj": (function, args)}, 0.5)
        with tracejit.profiler():  # timing wrappers in place: the profiler's cost per call
            on = time_many({"bare": (fn, bare_args), "tj": (function, args)}, 0.5)
        table.append([name, fmt_us(off["bare"].median_us), fmt_us(off["tj"].median_us),
                      fmt_us(off["tj"].median_us - off["bare"].median_us),
                      fmt_us(on["tj"].median_us),
                      fmt_us(on["tj"].median_us - on["bare"].median_us
                             - (off["tj"].median_us - off["bare"].median_us))])
    print(markdown_table(["call", "bare Numba µs", "tracejit µs", "overhead µs",
                          "tracejit, profiler on µs", "profiler adds µs"], table))


if __name__ == "__main__":
    main()
