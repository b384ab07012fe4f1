"""Dispatch overhead: a compiled call against the bare Numba kernel it runs.

    python benchmarks/bench_dispatch.py

The target (issue 2): at most 2 µs above the bare Numba call for a function
of three array arguments. Both are timed interleaved in one run.
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
    times = time_many({"bare": (fn, (a, b, c, *consts)), "tj": (three_arrays, (a, b, c))}, 0.5)
    rows.append(["a + b * c, three (3,) arrays", times])
    params, x = {"W": np.ones((3, 2)), "b": np.zeros(2)}, np.ones((4, 3))
    fn, consts = bare_kernel(pytree_args, params, x)
    leaves = (params["W"], params["b"], x)
    times = time_many({"bare": (fn, (*leaves, *consts)), "tj": (pytree_args, (params, x))}, 0.5)
    rows.append(["x @ W + b, dict params", times])
    print(markdown_table(
        ["call", "bare Numba µs", "tracejit µs", "overhead µs"],
        [[name, fmt_us(t["bare"].median_us), fmt_us(t["tj"].median_us),
          fmt_us(t["tj"].median_us - t["bare"].median_us)] for name, t in rows]))


if __name__ == "__main__":
    main()
