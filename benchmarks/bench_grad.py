"""Value-and-gradient benchmark: tracejit against hand-written and framework baselines.

    python benchmarks/bench_grad.py [--dtype float64|float32] [--only NAME ...] [--quick]
                                    [--no-cold] [--frameworks jax,torch,tf,autograd]

Prints markdown: median µs per call for every implementation that runs, ratios of each column
to tracejit ("numba/tj" > 1 means tracejit is faster), and the first-call (trace + compile)
seconds of mlp-seed in fresh processes, cold and with a warm disk cache.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import dataclass

# Run as a script from anywhere: siblings by plain name, and the in-tree tracejit ahead of
# any installed copy, so the numbers are for the code in this checkout.
_BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [_BENCH_DIR, os.path.dirname(_BENCH_DIR)]

import numpy as np  # noqa: E402
from frameworks import BUILDERS, FRAMEWORKS, build_extras  # noqa: E402
from harness import (  # noqa: E402
    FirstCallError,
    cold_first_call,
    fmt_ratio,
    fmt_us,
    markdown_table,
    thread_env,
    time_many,
)
from workloads import WORKLOADS, check_hand_gradient, compare, tolerance  # noqa: E402

REFERENCE = "tracejit"
COLUMN_ORDER = ("tracejit", "numpy", "numba", "numba-par", *FRAMEWORKS)
NOISY = 1.5  # slowest/fastest batch of a cell above this gets a footnote


@dataclass
class Cell:
    us: float | None = None
    status: str = ""  # "" ok, "n/a (Type)", or "wrong"
    note: str = ""  # long-form error or check message, printed under the tables

    def text(self) -> str:
        if self.us is None:
            return self.status
        return fmt_us(self.us) + (f" ({self.status})" if self.status else "")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    p.add_argument("--only", nargs="+", metavar="NAME", choices=list(WORKLOADS))
    p.add_argument("--quick", action="store_true", help="short cells, no mlp-large (< 60 s)")
    p.add_argument("--no-cold", action="store_true", help="skip the first-call subprocesses")
    p.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="cap BLAS/OpenMP/Numba/XLA/TF threads at N (steadier on a busy machine)",
    )
    p.add_argument(
        "--frameworks",
        default=",".join(FRAMEWORKS),
        help="comma-separated subset of " + ",".join(FRAMEWORKS) + " ('' for none)",
    )
    return p.parse_args(argv)


def _error_cell(exc: BaseException) -> Cell:
    return Cell(status=f"n/a ({type(exc).__name__})", note=f"{type(exc).__name__}: {exc}")


def prepare(impl_or_builder, workload, dtype, params, data, ref):
    """Build (if given a builder) and check one implementation: (Impl or None, Cell)."""
    try:
        impl = impl_or_builder
        if callable(impl_or_builder):
            impl = impl_or_builder(workload, params, data)
        # The first call also absorbs tracing/compilation, so timing starts warm.
        ok, message = compare(impl.to_numpy(impl.call(*impl.args)), ref, tolerance(dtype))
    except Exception as exc:  # any failure of one column must not stop the table
        return None, _error_cell(exc)
    # A wrong result is still timed (useful while tracejit is being built) but flagged.
    return impl, Cell(status="" if ok else "wrong", note="" if ok else message)


def candidates(workload, dtype, frameworks, params, data) -> dict:
    found = {name: BUILDERS[name] for name in ("tracejit", "numpy", "numba")}
    found.update({impl.name: impl for impl in build_extras(workload, dtype, params, data)})
    found.update({name: BUILDERS[name] for name in frameworks})
    return found


def run_workload(workload, dtype, frameworks, target_s) -> dict[str, Cell]:
    params, data = workload.make_data(dtype, 0)
    value, grads = workload.numpy_value_and_grad(params, *data)
    ref = (float(value), grads)
    cells, runnable = {}, {}
    for name, what in candidates(workload, dtype, frameworks, params, data).items():
        impl, cells[name] = prepare(what, workload, dtype, params, data, ref)
        if impl is not None:
            runnable[name] = (impl.call, impl.args)
    for name, timing in time_many(runnable, target_s=target_s).items():
        cells[name].us = timing.median_us
        if timing.max_us > NOISY * timing.min_us:
            cells[name].note = (cells[name].note + "; " if cells[name].note else "") + (
                f"noisy: batches {fmt_us(timing.min_us)}-{fmt_us(timing.max_us)} µs"
            )
    return cells


def columns_of(results: dict) -> list[str]:
    """Union of the columns that appear in any workload, in a fixed order."""
    seen = {c for cells in results.values() for c in cells}
    known = [c for c in COLUMN_ORDER if c in seen]
    return known + sorted(seen - set(known))


def times_table(results: dict) -> str:
    cols = columns_of(results)
    rows = [
        [name] + [cells[c].text() if c in cells else "—" for c in cols]
        for name, cells in results.items()
    ]
    return markdown_table(["workload (µs/call)"] + cols, rows)


def ratio_text(cells: dict, col: str) -> str:
    ref, other = cells.get(REFERENCE), cells.get(col)
    if other is None or other.us is None:
        return "—"
    if ref is None or ref.us is None:
        return "n/a"
    return fmt_ratio(other.us / ref.us)


def ratios_table(results: dict) -> str:
    cols = [c for c in columns_of(results) if c != REFERENCE]
    rows = [[name] + [ratio_text(cells, c) for c in cols] for name, cells in results.items()]
    header = ["workload (>1: tracejit faster)"] + [f"{c}/tj" for c in cols]
    return markdown_table(header, rows)


def notes(results: dict) -> list[str]:
    return [
        f"- {name} / {col}: {cell.note}"
        for name, cells in results.items()
        for col, cell in cells.items()
        if cell.note
    ]


# --------------------------------------------------------------------------- first call

_SETUP = """
import numpy as np
import workloads
w = workloads.WORKLOADS["mlp-seed"]
params, data = w.make_data(np.{dtype}, 0)
"""

# name -> (extra setup, timed code). Imports are setup: the targets are for trace + compile.
_FIRST_CALLS = {
    "tracejit": ("import tracejit", "tracejit.value_and_grad(w.loss)(params, *data)"),
    "numba (hand)": ("import numba", "w.numba_value_and_grad(params, *data)"),
    "jax": (
        "import frameworks, jax\nimpl = frameworks.build_jax(w, params, data)",
        "impl.call(*impl.args)",
    ),
}


def first_call_section(dtype: str, frameworks) -> str:
    rows = []
    for name, (extra, code) in _FIRST_CALLS.items():
        if name in FRAMEWORKS and name not in frameworks:
            continue
        try:
            fc = cold_first_call(code, _SETUP.format(dtype=dtype) + extra)
            rows.append([name, f"{fc.cold:.2f}", f"{fc.warm:.2f}", f"{fc.setup_cold:.2f}"])
        except FirstCallError as exc:
            rows.append([name, f"n/a ({exc.kind})", "n/a", "n/a"])
    header = ["mlp-seed first call (s)", "cold", "warm disk cache", "imports+data (cold)"]
    return markdown_table(header, rows)


# --------------------------------------------------------------------------- main


def preamble(args) -> str:
    import numba

    threads = numba.config.NUMBA_NUM_THREADS
    load = os.getloadavg()[0]
    text = (
        f"dtype {args.dtype}; Python {platform.python_version()}, numpy {np.__version__}, "
        f"numba {numba.__version__}; {os.cpu_count()} CPUs, numba threads {threads}, "
        f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}; "
        f"load average {load:.2f}; {time.strftime('%Y-%m-%d %H:%M')}"
        f"{' (quick)' if args.quick else ''}"
    )
    if load > 0.5:
        # Multithreaded BLAS on a busy 2-core machine slows down by 10x and more: the
        # absolute numbers are then worthless, the ratios of one run less so.
        text += "\n\n**Warning: the machine is busy; absolute times are unreliable.**"
    return text


def selected_workloads(args):
    names = args.only or [n for n, w in WORKLOADS.items() if not (args.quick and w.heavy)]
    return [WORKLOADS[n] for n in names]


def reexec_with_threads(n: int, argv: list[str]) -> None:
    """Restart this script with thread caps in the environment: pools size themselves when
    their library is imported, and NumPy (hence OpenBLAS) is already imported here."""
    env = thread_env(n)
    if all(os.environ.get(k) == v for k, v in env.items()):
        return
    os.environ.update(env)
    os.execv(sys.executable, [sys.executable, os.path.abspath(__file__), *argv])


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.threads:
        reexec_with_threads(args.threads, argv)
    frameworks = [f for f in args.frameworks.split(",") if f]
    unknown = set(frameworks) - set(FRAMEWORKS)
    if unknown:
        sys.exit(f"unknown frameworks: {sorted(unknown)}")
    dtype = np.dtype(args.dtype)
    target_s = 0.1 if args.quick else 0.5
    print(preamble(args), flush=True)
    results = {}
    for w in selected_workloads(args):
        check_hand_gradient(w)  # the reference every column is checked against
        results[w.name] = run_workload(w, dtype, frameworks, target_s)
        print(f"  measured {w.name}", file=sys.stderr, flush=True)
    print("\n" + times_table(results) + "\n\n" + ratios_table(results))
    if notes(results):
        print("\n" + "\n".join(notes(results)))
    if not args.no_cold:
        print("\n" + first_call_section(args.dtype, frameworks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
