"""Forward pass per call: tracejit vs plain NumPy, small and large inputs, and
the first-call times (cold: empty caches; warm: a new process, disk cache).

    python benchmarks/bench_forward.py [--quick]

Ratios are measured side by side in one run (see harness.time_many).
"""

from __future__ import annotations

import argparse

import numpy as np
from harness import cold_first_call, fmt_ratio, fmt_us, markdown_table, time_many

import tracejit


def mlp_forward(params, x):
    (W1, b1), (W2, b2) = params
    h = np.maximum(x @ W1 + b1, 0.0)
    z = h @ W2 + b2
    z = z - z.max(axis=1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)


def elementwise(a, c, x):
    return np.sum(np.tanh(a * x + c) ** 2 * np.exp(-x * x))


def layer_norm(x, gamma, beta):
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return gamma * (x - mu) / np.sqrt(var + 1e-5) + beta


def mlp_case(batch, n_in, n_hidden, n_out, rng):
    params = ((rng.normal(0, 0.1, (n_in, n_hidden)), np.zeros(n_hidden)),
              (rng.normal(0, 0.1, (n_hidden, n_out)), np.zeros(n_out)))
    return (params, rng.normal(size=(batch, n_in)))


CASES = {
    "mlp 32x10->5->2": (mlp_forward, lambda r: mlp_case(32, 10, 5, 2, r)),
    "mlp 2048x784->256->10": (mlp_forward, lambda r: mlp_case(2048, 784, 256, 10, r)),
    "elementwise 1e3": (elementwise, lambda r: (0.7, 0.1, r.normal(size=1_000))),
    "elementwise 1e6": (elementwise, lambda r: (0.7, 0.1, r.normal(size=1_000_000))),
    "layer_norm 16x64": (layer_norm, lambda r: (r.normal(size=(16, 64)), np.ones(64),
                                                 np.zeros(64))),
    "layer_norm 4096x512": (layer_norm, lambda r: (r.normal(size=(4096, 512)), np.ones(512),
                                                    np.zeros(512))),
}

FIRST_CALL_SETUP = """
import numpy as np, tracejit
from bench_forward import mlp_forward, mlp_case
args = mlp_case(32, 10, 5, 2, np.random.default_rng(0))
f = tracejit.function(mlp_forward)
"""


def steady_state(target_s: float) -> None:
    rng = np.random.default_rng(0)
    rows = []
    for name, (fn, make) in CASES.items():
        args = make(rng)
        compiled = tracejit.function(fn)
        np.testing.assert_allclose(compiled(*args), fn(*args), rtol=1e-9, atol=1e-12)
        compiled.wait()
        times = time_many({"numpy": (fn, args), "tracejit": (compiled, args)}, target_s)
        numpy_us, tj_us = times["numpy"].median_us, times["tracejit"].median_us
        rows.append([name, fmt_us(numpy_us), fmt_us(tj_us), fmt_ratio(numpy_us / tj_us)])
    print(markdown_table(["forward pass", "NumPy µs", "tracejit µs", "NumPy / tracejit"], rows))


def first_calls() -> None:
    rows = []
    for mode in ("sync", "background"):
        setup = f"import os; os.environ['TRACEJIT_COMPILE'] = '{mode}'\n" + FIRST_CALL_SETUP
        timing = cold_first_call("f(*args)", setup, after="f.wait()")
        rows.append([mode, f"{timing.cold:.3f}", f"{timing.warm:.3f}"])
    print(markdown_table(["mlp-seed forward, first call", "cold s", "warm (disk) s"], rows))
    print("(background: the first calls run the NumPy interpreter while Numba compiles)")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="shorter timings")
    args = parser.parse_args(argv)
    steady_state(0.1 if args.quick else 0.5)
    print()
    first_calls()


if __name__ == "__main__":
    main()
