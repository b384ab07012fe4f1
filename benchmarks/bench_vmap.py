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
- the memory floor: the per-example gradients' bytes written into pre-faulted memory
  (no kernel can beat it; by memset and by a compiled loop) and into fresh memory;
- kernel-ready seconds (trace + compile, or load from the disk cache) in fresh processes,
  cold and warm, beside the time per call of every row.
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
    reexec_with_threads,
    time_many,
)
from workloads import WORKLOADS, tree_leaves  # noqa: E402

import tracejit  # noqa: E402

MLPS = ("mlp-seed", "mlp-medium")
STAT = "median"  # or "min" (--stat)


def stat_us(timing) -> float:
    return timing.min_us if STAT == "min" else timing.median_us
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

    loop.ready_fn, loop.first_args = single, (params, x[0], y[0])  # for its kernel-ready time

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


def memory_rows(impls, params, x, y) -> dict:
    """The memory floor beside the kernel: the per-example gradients' bytes written into
    memory already faulted (what no kernel can beat), by memset and by a compiled loop, and
    into fresh memory. (The kernel without the buffer pool: bench_output_alloc.py, one
    process per setting; here, emptying the pool would slow the other rows too.)"""
    fn = impls["tracejit vmap(grad)"][0]
    nbytes = sum(leaf.nbytes for leaf in tree_leaves(fn(params, x, y)))
    floor = np.empty(nbytes // 8)
    floor.fill(0.0)
    store_loop = _store_loop()
    store_loop(floor)
    return {f"write {nbytes / 1e6:.0f} MB, pre-faulted (floor)": (floor.fill, (1.0,)),
            f"write {nbytes / 1e6:.0f} MB by a compiled loop, pre-faulted": (store_loop, (floor,)),
            f"write {nbytes / 1e6:.0f} MB, fresh": (lambda: np.empty(nbytes // 8).fill(1.0), ())}


def _store_loop():
    """A Numba loop storing computed values (ordinary stores: each line is read before it
    is written, where memset streams), as a kernel's loop nest writes its output."""
    from numba import njit

    @njit(nogil=True)
    def store(out):
        for i in range(out.size):
            out[i] = i * 0.5

    return store


def per_example_section(frameworks, quick, pause, ready) -> str:
    rows, notes = [], []
    for name in MLPS:
        w = WORKLOADS[name]
        params, (x, y) = w.make_data(np.float64, 0)
        impls = per_example_impls(w, params, x, y, frameworks)
        notes += check_per_example(w, impls, params, x, y)
        calls = {k: (fn, args) for k, (fn, args, _) in impls.items()}
        calls.update(memory_rows(impls, params, x, y))
        timings = time_many(calls, target_s=0.2 if quick else 0.5, repeats=3 if quick else 7,
                            pause=pause)
        ours = stat_us(timings["tracejit vmap(grad)"])
        for impl, t in timings.items():
            rows.append([f"{name} (batch {len(x)})", impl, fmt_us(stat_us(t)),
                         fmt_ratio(stat_us(t) / ours), *ready.get((name, impl), ("", ""))])
        notes.append(_targets(name, timings))
    table = markdown_table(["workload", "implementation", "µs per call", "÷ vmap(grad)",
                            "ready cold (s)", "ready warm (s)"], rows, numeric_from=2)
    return table + "".join(f"\n- {n}" for n in notes)


def _targets(name, timings) -> str:
    """The issue's targets for one workload, and what the memory floor allows."""
    t = {k: stat_us(v) for k, v in timings.items()}
    ours, mean = t["tracejit vmap(grad)"], t["tracejit mean grad"]
    floor = next(v for k, v in t.items() if k.endswith("(floor)"))
    stores = next(v for k, v in t.items() if "compiled loop" in k)
    mean_ok = "met" if ours <= 3 * mean else "missed"
    loop_ok = "met" if t["tracejit loop of grad"] >= 10 * ours else "missed"
    text = (f"{name}: vmap(grad) = {ours / mean:.1f}x the mean gradient (target <= 3x: "
            f"{mean_ok}); the loop of grad takes {t['tracejit loop of grad'] / ours:.1f}x "
            f"vmap(grad) (target >= 10x: {loop_ok}); the output alone, written into "
            f"pre-faulted memory, takes {floor / mean:.1f}x the mean gradient by memset and "
            f"{stores / mean:.1f}x by a compiled loop (vmap(grad) = {ours / floor:.1f}x and "
            f"{ours / stores:.1f}x those)")
    for peer in ("jax.vmap(jax.grad)", "torch.func.vmap(grad)"):
        if peer in t:
            faster = "faster: met" if ours < t[peer] else "not faster"
            text += f"; {peer} takes {t[peer] / ours:.2f}x vmap(grad)'s time ({faster})"
    return text


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


def jacobian_impls(frameworks) -> dict:
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
    return impls


def jacobian_section(frameworks, quick, pause, ready) -> str:
    want = jacobian_problem()[3]
    impls = jacobian_impls(frameworks)
    notes = [f"{name}: differs from the analytic Jacobian" for name, (fn, args) in impls.items()
             if not np.allclose(np.asarray(fn(*args)), want, rtol=1e-9, atol=1e-12)]
    timings = time_many(impls, target_s=0.2 if quick else 0.5, repeats=3 if quick else 7,
                        pause=pause)
    ours = stat_us(timings["tracejit jacrev"])
    rows = [[impl, fmt_us(stat_us(t)), fmt_ratio(stat_us(t) / ours),
             *ready.get(("jacobian", impl), ("", ""))] for impl, t in timings.items()]
    table = markdown_table([f"Jacobian {JACOBIAN_SIZE}x{JACOBIAN_SIZE}", "µs per call",
                            "÷ jacrev", "ready cold (s)", "ready warm (s)"], rows)
    t = {k: stat_us(v) for k, v in timings.items()}
    speedup = t["previous jacobian (loop of vjp)"] / ours
    notes.append(f"jacrev is {speedup:.0f}x faster than the previous jacobian (target >= 10x: "
                 f"{'met' if speedup >= 10 else 'missed'})" + (
                     f"; jax.jacrev takes {t['jax.jacrev'] / ours:.2f}x its time (target >= 1: "
                     f"{'met' if t['jax.jacrev'] >= ours else 'missed'})" if "jax.jacrev" in t
                     else ""))
    return table + "".join(f"\n- {n}" for n in notes)


# -------------------------------------------------------------- kernel ready

_SETUP = """
import os
import numpy as np
import tracejit, workloads, bench_vmap
"""

_PER_EXAMPLE = """
w = workloads.WORKLOADS[{workload!r}]
params, (x, y) = w.make_data(np.float64, 0)
fn, args, _ = bench_vmap.per_example_impls(w, params, x, y, {frameworks!r})[{impl!r}]
"""

_JACOBIAN = """
fn, args = bench_vmap.jacobian_impls({frameworks!r})[{impl!r}]
"""


def first_ready(fn, args) -> None:
    """Call `fn` once and return when its kernel is ready: tracejit's first call is
    answered by the interpreter while the kernel compiles in the background (as in a
    user's process), `wait()` returns once it is loaded; a loop times its kernel's first
    call; a function without `wait` (JAX, PyTorch, the row-by-row jacobian) is ready when
    its first call returns (tracejit's compiling synchronously for it)."""
    fn, args = getattr(fn, "ready_fn", fn), getattr(fn, "first_args", args)
    if not hasattr(fn, "wait"):
        os.environ["TRACEJIT_COMPILE"] = "sync"
    fn(*args)
    getattr(fn, "wait", lambda: None)()


def ready_times(frameworks) -> dict:
    """(section, implementation) -> (cold, warm) seconds to a ready kernel, each in a fresh
    process: cold with empty caches, warm with the cold run's disk cache."""
    os.environ.pop("TRACEJIT_COMPILE", None)
    jobs = [(name, impl, _PER_EXAMPLE.format(workload=name, frameworks=frameworks, impl=impl))
            for name in MLPS for impl in _PER_EXAMPLE_ROWS
            if impl.startswith("tracejit") or impl.split(".")[0] in frameworks]
    jobs += [("jacobian", impl, _JACOBIAN.format(frameworks=frameworks, impl=impl))
             for impl in _JACOBIAN_ROWS if impl.startswith(("tracejit", "previous"))
             or impl.split(".")[0] in frameworks]
    times = {}
    for section, impl, setup in jobs:
        try:
            fc = cold_first_call("bench_vmap.first_ready(fn, args)", _SETUP + setup)
            times[section, impl] = (f"{fc.cold:.2f}", f"{fc.warm:.2f}")
        except FirstCallError as exc:
            times[section, impl] = (f"n/a ({exc.kind})", "n/a")
    os.environ["TRACEJIT_COMPILE"] = "sync"
    return times


_PER_EXAMPLE_ROWS = ("tracejit vmap(grad)", "tracejit mean grad", "tracejit loop of grad",
                     "jax.vmap(jax.grad)", "torch.func.vmap(grad)")
_JACOBIAN_ROWS = ("tracejit jacrev", "tracejit jacfwd", "previous jacobian (loop of vjp)",
                  "jax.jacrev")


# --------------------------------------------------------------------- main

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="short timings")
    p.add_argument("--no-cold", action="store_true", help="skip the fresh-process runs")
    p.add_argument("--frameworks", default="jax,torch", help="comma-separated peers to include")
    p.add_argument("--pause", type=float, default=0.2, help="sleep before each timed batch (s)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="cap BLAS/OpenMP/Numba/XLA threads at N (steadier on a busy machine)")
    p.add_argument("--stat", choices=["median", "min"], default="median",
                   help="per-cell statistic over timed batches; min resists a busy machine")
    return p.parse_args(argv)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.threads:
        reexec_with_threads(args.threads, __file__, argv)
    global STAT
    STAT = args.stat
    warnings.simplefilter("ignore", tracejit.RetraceWarning)
    os.environ.setdefault("TRACEJIT_COMPILE", "sync")  # time kernels, not the interpreter
    frameworks = {f for f in args.frameworks.split(",") if f}
    load = os.getloadavg()[0]
    print(f"numpy {np.__version__}; {os.cpu_count()} CPUs; load average {load:.2f}; "
          f"threads {args.threads or 'default'}; {args.stat} of timed batches; "
          f"{time.strftime('%Y-%m-%d %H:%M')}\n")
    ready = {} if args.no_cold else ready_times(frameworks)
    print("## Per-example gradients\n")
    print(per_example_section(frameworks, args.quick, args.pause, ready))
    print("\n## Jacobian\n")
    print(jacobian_section(frameworks, args.quick, args.pause, ready))
    return 0


if __name__ == "__main__":
    sys.exit(main())
