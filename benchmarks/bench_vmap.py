"""vmap benchmark: per-example gradients and dense Jacobians in one kernel.

    python benchmarks/bench_vmap.py [--quick] [--no-cold] [--frameworks jax,torch]

Prints markdown, every ratio measured in one run (implementations timed interleaved,
0.2 s of sleep before each timed batch):
- per-example gradients (`vmap(grad(loss))`) of mlp-seed and mlp-medium against the mean
  gradient of the same batch (target: at most 3x), a Python loop of compiled `grad` calls
  (target: at least 10x faster), `jax.vmap(jax.grad)` (jitted) and
  `torch.func.vmap(torch.func.grad)`;
- the Jacobian of a 100-output, 100-input function: `jacrev` against the previous
  `jacobian` (one backward kernel call per output element; target: at least 10x) and
  `jax.jacrev` (jitted);
- kernel-ready seconds (trace + compile, or load from the disk cache) in fresh processes,
  cold and warm, beside the time per call.
Every column is checked against NumPy (per-example hand-written gradients, the analytic
Jacobian) before it is timed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

_BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [_BENCH_DIR, os.path.dirname(_BENCH_DIR)]

import numpy as np  # noqa: E402
from harness import (  # noqa: E402
    FirstCallError,
    cold_first_call,
    fmt_ratio,
    fmt_us,
    markdown_table,
    time_many,
)
from workloads import WORKLOADS, tree_leaves  # noqa: E402

import tracejit  # noqa: E402

MLPS = ("mlp-seed", "mlp-medium")
JACOBIAN_SIZE = 100


# ------------------------------------------------------------ per-example gradients

def one_example(loss):
    """The workload's batch loss on a batch of one example."""
    def per_example(params, x, y):
        return loss(params, x[None], y[None])

    return per_example


def numpy_per_example(w, params, x, y):
    return [w.numpy_value_and_grad(params, x[i:i + 1], y[i:i + 1])[1] for i in range(len(x))]


def per_example_impls(w, params, x, y, frameworks) -> dict:
    """name -> (fn, args, to_numpy(result) -> list of per-example gradient leaves)."""
    per_example = tracejit.vmap(tracejit.grad(one_example(w.loss)), in_axes=(None, 0, 0))
    mean = tracejit.grad(w.loss)
    single = tracejit.grad(one_example(w.loss))

    def loop(params, x, y):
        return [single(params, x[i], y[i]) for i in range(len(x))]

    impls = {
        "tracejit vmap(grad)": (per_example, (params, x, y), tree_leaves),
        "tracejit mean grad": (mean, (params, x, y), None),
        "tracejit loop of grad": (loop, (params, x, y), _stack_rows),
    }
    if "jax" in frameworks:
        impls.update(_jax_per_example(w, params, x, y))
    if "torch" in frameworks:
        impls.update(_torch_per_example(params, x, y))
    return impls


def _stack_rows(rows):
    leaves = [tree_leaves(r) for r in rows]
    return [np.stack([np.asarray(r[k]) for r in leaves]) for k in range(len(leaves[0]))]


def _jax_per_example(w, params, x, y):
    try:
        import frameworks
        import jax
    except ImportError:
        return {}
    jax.config.update("jax_enable_x64", True)
    loss = frameworks._mlp_loss_xp(jax.numpy)
    fn = jax.jit(jax.vmap(jax.grad(lambda p, x, y: loss(p, x[None], y[None])),
                          in_axes=(None, 0, 0)))
    args = jax.device_put((params, x, y))

    def call(*a):
        return jax.block_until_ready(fn(*a))

    return {"jax.vmap(jax.grad)": (call, args, lambda r: [np.asarray(v) for v in
                                                           jax.tree_util.tree_leaves(r)])}


def _torch_per_example(params, x, y):
    try:
        import frameworks
        import torch
        from torch.func import grad, vmap
    except ImportError:
        return {}
    mlp = frameworks._torch_losses(torch)["mlp"]
    leaves = [torch.from_numpy(np.array(p)) for p in tree_leaves(params)]

    def loss(flat, x, y):
        (w1, b1, w2, b2) = flat
        return mlp(((w1, b1), (w2, b2)), x[None], y[None])

    fn = vmap(grad(loss), in_dims=(None, 0, 0))
    args = (tuple(leaves), torch.from_numpy(x), torch.from_numpy(y))
    return {"torch.func.vmap(grad)": (fn, args, lambda r: [v.numpy() for v in r])}


def check_per_example(w, impls, params, x, y) -> list[str]:
    want = _stack_rows(numpy_per_example(w, params, x, y))
    problems = []
    for name, (fn, args, convert) in impls.items():
        if convert is None:
            continue
        got = convert(fn(*args))
        for g, r in zip(got, want):
            if not np.allclose(g, r, rtol=1e-7, atol=1e-9):
                problems.append(f"{name}: per-example gradients differ from NumPy's")
                break
    return problems


def per_example_section(frameworks, quick, pause) -> str:
    rows, notes = [], []
    for name in MLPS:
        w = WORKLOADS[name]
        params, (x, y) = w.make_data(np.float64, 0)
        impls = per_example_impls(w, params, x, y, frameworks)
        notes += check_per_example(w, impls, params, x, y)
        timings = time_many({k: (fn, args) for k, (fn, args, _) in impls.items()},
                            target_s=0.2 if quick else 0.5, repeats=3 if quick else 7,
                            pause=pause)
        ours = timings["tracejit vmap(grad)"].median_us
        for impl, t in timings.items():
            rows.append([f"{name} (batch {len(x)})", impl, fmt_us(t.median_us),
                         fmt_ratio(t.median_us / ours)])
    table = markdown_table(["workload", "implementation", "µs per call", "÷ vmap(grad)"], rows,
                           numeric_from=2)
    return table + "".join(f"\n- {n}" for n in notes)


# --------------------------------------------------------------------- Jacobians

def jacobian_problem(n=JACOBIAN_SIZE, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, n)) / np.sqrt(n)
    x = rng.standard_normal(n)

    def f(x):
        return np.tanh(a @ x) * np.cos(x)

    t = np.tanh(a @ x)
    want = (1 - t * t)[:, None] * a * np.cos(x)[:, None] - np.diag(t * np.sin(x))
    return f, a, x, want


def loop_jacobian(f):
    """The previous `tracejit.jacobian`: one backward kernel call per output element."""
    def jac(x):
        out, vjp_fn = tracejit.vjp(f, x)
        rows = []
        for k in range(out.size):
            basis = np.zeros(out.size)
            basis[k] = 1.0
            rows.append(vjp_fn(basis.reshape(out.shape))[0])
        return np.stack(rows).reshape(out.shape + x.shape)

    return jac


def jacobian_section(frameworks, quick, pause) -> str:
    f, a, x, want = jacobian_problem()
    impls = {"tracejit jacrev": (tracejit.jacrev(f), (x,)),
             "tracejit jacfwd": (tracejit.jacfwd(f), (x,)),
             "previous jacobian (loop of vjp)": (loop_jacobian(f), (x,))}
    if "jax" in frameworks:
        try:
            import jax
            jax.config.update("jax_enable_x64", True)
            jnp = jax.numpy
            jf = jax.jit(jax.jacrev(lambda v: jnp.tanh(jnp.asarray(a) @ v) * jnp.cos(v)))
            impls["jax.jacrev"] = (lambda v: jax.block_until_ready(jf(v)), (jax.device_put(x),))
        except ImportError:
            pass
    notes = [f"{name}: differs from the analytic Jacobian" for name, (fn, args) in impls.items()
             if not np.allclose(np.asarray(fn(*args)), want, rtol=1e-9, atol=1e-12)]
    timings = time_many(impls, target_s=0.2 if quick else 0.5, repeats=3 if quick else 7,
                        pause=pause)
    ours = timings["tracejit jacrev"].median_us
    rows = [[impl, fmt_us(t.median_us), fmt_ratio(t.median_us / ours)]
            for impl, t in timings.items()]
    table = markdown_table([f"Jacobian {JACOBIAN_SIZE}x{JACOBIAN_SIZE}", "µs per call",
                            "÷ jacrev"], rows)
    return table + "".join(f"\n- {n}" for n in notes)


# -------------------------------------------------------------- kernel ready

_SETUP = """
import numpy as np
import tracejit, workloads, bench_vmap
"""

_READY = {
    "per-example grads, mlp-seed": (
        "w = workloads.WORKLOADS['mlp-seed']\nparams, (x, y) = w.make_data(np.float64, 0)",
        "fn = tracejit.vmap(tracejit.grad(bench_vmap.one_example(w.loss)), in_axes=(None, 0, 0))\n"
        "fn(params, x, y)\nmark('first call')\nfn.wait()"),
    "per-example grads, mlp-medium": (
        "w = workloads.WORKLOADS['mlp-medium']\nparams, (x, y) = w.make_data(np.float64, 0)",
        "fn = tracejit.vmap(tracejit.grad(bench_vmap.one_example(w.loss)), in_axes=(None, 0, 0))\n"
        "fn(params, x, y)\nmark('first call')\nfn.wait()"),
    "jacrev 100x100": (
        "f, a, x, want = bench_vmap.jacobian_problem()",
        "fn = tracejit.jacrev(f)\nfn(x)\nmark('first call')\nfn.wait()"),
}


def ready_section() -> str:
    """The children compile in the background as users' processes do: the first call is
    answered by the interpreter, `wait()` returns when the kernel is ready."""
    os.environ.pop("TRACEJIT_COMPILE", None)
    rows = []
    for name, (setup, code) in _READY.items():
        try:
            fc = cold_first_call(code, _SETUP + setup)
        except FirstCallError as exc:
            rows.append([name, f"n/a ({exc.kind})", "n/a", "n/a", "n/a"])
            continue
        rows.append([name, f"{fc.marks_cold['first call']:.2f}",
                     f"{fc.marks_warm['first call']:.2f}", f"{fc.cold:.2f}", f"{fc.warm:.2f}"])
    header = ["seconds", "first call cold", "first call warm", "kernel ready cold",
              "kernel ready warm"]
    return markdown_table(header, rows)


# --------------------------------------------------------------------- main

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="short timings")
    p.add_argument("--no-cold", action="store_true", help="skip the fresh-process runs")
    p.add_argument("--frameworks", default="jax,torch", help="comma-separated peers to include")
    p.add_argument("--pause", type=float, default=0.2, help="sleep before each timed batch (s)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    warnings.simplefilter("ignore", tracejit.RetraceWarning)
    os.environ.setdefault("TRACEJIT_COMPILE", "sync")  # time kernels, not the interpreter
    frameworks = {f for f in args.frameworks.split(",") if f}
    load = os.getloadavg()[0]
    print(f"numpy {np.__version__}; {os.cpu_count()} CPUs; load average {load:.2f}; "
          f"{time.strftime('%Y-%m-%d %H:%M')}\n")
    print("## Per-example gradients\n")
    print(per_example_section(frameworks, args.quick, args.pause))
    print("\n## Jacobian\n")
    print(jacobian_section(frameworks, args.quick, args.pause))
    if not args.no_cold:
        print("\n## Kernel ready (fresh processes)\n")
        print(ready_section())
    return 0


if __name__ == "__main__":
    sys.exit(main())
