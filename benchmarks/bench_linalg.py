"""Linear algebra through tracejit: compile time of the gradient kernels, and
steady-state value-and-gradient time against NumPy+autograd and JAX.

    python benchmarks/bench_linalg.py            # n = 8
    python benchmarks/bench_linalg.py 64

Each loss is compiled from an empty kernel cache (the runtime's LAPACK helpers
stay in Numba's own disk cache after their first use, as for users), then timed
after the compile has finished; implementations are interleaved and each sample
follows a 0.2 s sleep (OpenBLAS threads keep spinning after a call). Ratios are
measured in one run; absolute times drift on the shared machine.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

os.environ.setdefault("TRACEJIT_CACHE_DIR", tempfile.mkdtemp(prefix="tracejit-bench-linalg-"))
os.environ["TRACEJIT_COMPILE"] = "sync"

import numpy as np  # noqa: E402

import tracejit  # noqa: E402


def losses(np_, solve_triangular):
    def cholesky_nll(a, y):
        L = np_.linalg.cholesky(a @ a.T + a.shape[0] * np_.eye(a.shape[0]))
        z = solve_triangular(L, y, lower=True)
        return 0.5 * np_.sum(z ** 2) + np_.sum(np_.log(np_.diag(L)))

    def solve_logdet(a, y):
        m = a @ a.T + a.shape[0] * np_.eye(a.shape[0])
        return y @ np_.linalg.solve(m, y) + np_.linalg.slogdet(m)[1]

    def eigh_spectrum(a, y):
        w, v = np_.linalg.eigh(a + a.T)
        return np_.sum(w ** 2) + np_.sum((v.T @ y) ** 2 * w)

    def svd_nuclear(a, y):
        return np_.sum(np_.linalg.svd(a, compute_uv=False)) + y @ a @ y

    return {"cholesky + triangular solve": cholesky_nll, "solve + slogdet": solve_logdet,
            "eigh": eigh_spectrum, "svd": svd_nuclear}


def median_us(fn, repeats=7, inner=20):
    samples = []
    for _ in range(repeats):
        time.sleep(0.2)
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - start) / inner * 1e6)
    return float(np.median(samples))


def main(n=8):
    from scipy.linalg import solve_triangular

    rng = np.random.default_rng(0)
    a, y = rng.standard_normal((n, n)), rng.standard_normal(n)
    ours = losses(np, solve_triangular)
    peers = {}
    try:
        import autograd
        import autograd.numpy as anp
        import autograd.scipy.linalg as asla
        peers["autograd"] = {k: autograd.value_and_grad(f, (0, 1)) for k, f in
                             losses(anp, asla.solve_triangular).items()}
    except ImportError:
        pass
    try:
        import jax
        jax.config.update("jax_enable_x64", True)
        import jax.scipy.linalg as jsla
        peers["JAX jit"] = {k: jax.jit(jax.value_and_grad(f, (0, 1))) for k, f in
                            losses(jax.numpy, jsla.solve_triangular).items()}
    except ImportError:
        pass
    print(f"value and gradient, n = {n}, float64 (us per call; compile in s)")
    print(f"{'loss':28} {'compile':>8} {'tracejit':>9} " + " ".join(f"{p:>10}" for p in peers)
          + "  ratios")
    for name, loss in ours.items():
        f = tracejit.value_and_grad(loss, (0, 1))
        start = time.perf_counter()
        f(a, y)
        compile_s = time.perf_counter() - start
        for peer in peers.values():
            peer[name](a, y)  # compile / warm up
        t_ours = median_us(lambda f=f: f(a, y))
        t_peers = [median_us(lambda g=p[name]: g(a, y)) for p in peers.values()]
        ratios = " ".join(f"{t / t_ours:.1f}x" for t in t_peers)
        print(f"{name:28} {compile_s:8.2f} {t_ours:9.1f} "
              + " ".join(f"{t:10.1f}" for t in t_peers) + f"  {ratios}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 8)
