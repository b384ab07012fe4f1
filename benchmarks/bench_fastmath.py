"""Measure tracejit.backend.runtime's polynomial exp/tanh against libm in Numba loops.

Workload: value and gradient (w.r.t. x, a, c; written out by hand) of
``sum(tanh(a*x + c)**2 * exp(-x*x))`` over 1e6 float64 values.  Kernels:

1. ``range`` loop calling np.tanh / np.exp (scalar libm calls),
2. ``range`` loop calling runtime.tanh / runtime.exp,
3. ``prange`` loop (parallel=True) calling the runtime functions, at the
   default thread count and at one thread,

each with the fastmath set tracejit's kernels use (codegen.FASTMATH), and the
runtime kernels again with the set used before special values were checked
(``PREVIOUS``: it added nsz/arcp/afn; tests/test_special_values.py).  The
runtime kernels are built twice:
calling the helpers as plain ``njit`` functions (LLVM inlines them, their own
flags survive) and as ``inline="always"`` copies (Numba inlines them into the
caller, whose flags then apply).  The script also reports compile times and
whether the loop was vectorised, read off the kernel's LLVM IR.

Run: ``python benchmarks/bench_fastmath.py [n] [repeats]``.
"""

import ast
import re
import sys
import time
import types

import numba
import numpy as np
from numba import njit, prange

from tracejit.backend import codegen, runtime

# 'reassoc' lets LLVM vectorise the float reductions; no nnan/ninf (they
# would delete the NaN/inf handling inside the runtime functions).
FASTMATH = ast.literal_eval(codegen.FASTMATH)
PREVIOUS = {"reassoc", "nsz", "contract", "afn", "arcp"}


def inline_always_runtime():
    """A copy of tracejit.backend.runtime whose helpers are all inline="always"."""
    import inspect

    src = inspect.getsource(runtime)
    # Override the helpers' options right after they are defined; exec'd code
    # has no file for Numba's disk cache, hence cache=False.
    override = r'\1\n_JIT.update(inline="always", cache=False)'
    src = re.sub(r"(?m)^(_JIT = .*)$", override, src, count=1)
    mod = types.ModuleType("tracejit_runtime_inline")
    mod.__package__ = runtime.__package__  # its relative imports (`..core.errors`)
    # Numba looks functions' modules up in sys.modules while compiling.
    sys.modules[mod.__name__] = mod
    exec(compile(src, "<runtime inline=always>", "exec"), mod.__dict__)
    return mod


def make_kernel(exp, tanh, parallel, fastmath=FASTMATH):
    """Value and gradient kernel over x; exp/tanh are the scalar functions."""
    loop = prange if parallel else range

    @njit(fastmath=fastmath, error_model="numpy", parallel=parallel)
    def kernel(x, a, c, gx):
        val = 0.0
        ga = 0.0
        gc = 0.0
        for i in loop(x.size):
            xi = x[i]
            t = tanh(a * xi + c)
            e = exp(-xi * xi)
            # d/du tanh(u)^2 = 2 t (1 - t^2); d/dx exp(-x^2) = -2 x e.
            dt = 2.0 * t * (1.0 - t * t) * e
            val += t * t * e
            ga += dt * xi
            gc += dt
            gx[i] = dt * a - 2.0 * xi * t * t * e
        return val, ga, gc

    return kernel


def compile_seconds(kernel, args):
    """Time of the first call, which compiles the kernel (and its callees)."""
    t0 = time.perf_counter()
    kernel(*args)
    return time.perf_counter() - t0


def time_rounds(rows, args, repeats, default_threads):
    """Per-call seconds for every row, measured in interleaved rounds.

    Interleaving spreads any load from other processes over all variants
    instead of penalising whichever one happened to run at that moment.
    """
    times = [[] for _ in rows]
    for _ in range(repeats):
        for row, bucket in zip(rows, times, strict=True):
            numba.set_num_threads(row["threads"] or default_threads)
            t0 = time.perf_counter()
            row["kernel"](*args)
            bucket.append(time.perf_counter() - t0)
    numba.set_num_threads(default_threads)
    return times


def vector_report(kernel):
    """Was the loop vectorised, and did libm calls survive?

    Read off the LLVM IR (which for a parallel kernel includes the outlined
    gufunc): the widest ``<N x double>`` arithmetic, and any exp/tanh calls.
    Without SVML, LLVM vectorises ``llvm.exp.v8f64`` by calling scalar libm
    ``exp`` once per lane, so packed registers alone do not mean fast code.
    """
    ir = "\n".join(kernel.inspect_llvm(sig) for sig in kernel.signatures)
    widths = re.findall(r"= (?:fmul|fadd|fsub|call)\b[^\n]*<(\d+) x double>", ir)
    width = max(map(int, widths), default=1)
    libm = sorted(set(re.findall(r"@(?:llvm\.)?(exp|tanh)[.(]", ir)))
    text = f"yes, {width} x double" if width > 1 else "no (scalar)"
    if libm:
        text += f"; {'/'.join(libm)} are scalar libm calls per lane"
    return text


def check_same(results, ref):
    """All variants must agree with the libm kernel (sums to 1e-12 relative)."""
    for out in results:
        for got, want in zip(out, ref, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def build_rows():
    """(name, kernel, thread count or None for the default) per variant."""
    inl = inline_always_runtime()
    rows = [
        ("range, np.tanh/np.exp (libm)", make_kernel(np.exp, np.tanh, False), None),
        ("range, runtime (njit)", make_kernel(runtime.exp, runtime.tanh, False), None),
        ("range, runtime (inline=always)", make_kernel(inl.exp, inl.tanh, False), None),
        ("prange, runtime (njit)", make_kernel(runtime.exp, runtime.tanh, True), None),
        ("prange, runtime (njit), 1 thread", None, 1),
        ("prange, runtime (inline=always)", make_kernel(inl.exp, inl.tanh, True), None),
        ("prange, runtime (inline=always), 1 thread", None, 1),
        ("range, runtime (njit), PREVIOUS flags",
         make_kernel(runtime.exp, runtime.tanh, False, PREVIOUS), None),
        ("prange, runtime (njit), PREVIOUS flags",
         make_kernel(runtime.exp, runtime.tanh, True, PREVIOUS), None),
        ("prange, runtime (njit), PREVIOUS, 1 thread", None, 1),
    ]
    out = []
    for name, kernel, threads in rows:
        # A row without a kernel re-runs the previous kernel at another
        # thread count (numba.set_num_threads needs no recompile).
        out.append(
            dict(name=name, kernel=kernel or out[-1]["kernel"], threads=threads, compile=None)
        )
    return out


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 40
    x = np.random.default_rng(0).standard_normal(n)
    gx = np.empty_like(x)
    args = (x, 1.3, -0.2, gx)
    default_threads = numba.get_num_threads()
    rows = build_rows()
    outs = []
    for row in rows:
        if row["threads"] is None:
            row["compile"] = compile_seconds(row["kernel"], args)
        outs.append((*row["kernel"](*args), gx.copy()))
    check_same(outs[1:], outs[0])
    times = time_rounds(rows, args, repeats, default_threads)
    print_table(rows, times, n, default_threads)


def print_table(rows, times, n, default_threads):
    """Medians and minima; ratios are against the libm kernel (first row).

    On a shared machine the minimum is the better estimate of the undisturbed
    time: other processes only ever add to a measurement.
    """
    base_med, base_min = float(np.median(times[0])), min(times[0])
    print(
        f"value+grad of sum(tanh(a*x+c)**2 * exp(-x*x)), n={n}, float64, "
        f"numba {numba.__version__}, fastmath={sorted(FASTMATH)}, PREVIOUS={sorted(PREVIOUS)}"
    )
    print(
        f"{'kernel':42s} {'thr':>3s} {'median ms':>9s} {'ratio':>6s} {'min ms':>7s} "
        f"{'ratio':>6s} {'compile s':>9s}  vectorised"
    )
    for row, ts in zip(rows, times, strict=True):
        med = float(np.median(ts))
        parallel = row["kernel"].targetoptions.get("parallel", False)
        threads = (row["threads"] or default_threads) if parallel else 1
        comp = f"{row['compile']:9.2f}" if row["compile"] is not None else f"{'-':>9s}"
        print(
            f"{row['name']:42s} {threads:3d} {med * 1e3:9.2f} {base_med / med:5.1f}x "
            f"{min(ts) * 1e3:7.2f} {base_min / min(ts):5.1f}x {comp}  "
            f"{vector_report(row['kernel'])}"
        )


if __name__ == "__main__":
    main()
