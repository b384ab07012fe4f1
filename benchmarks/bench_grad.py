"""Value-and-gradient benchmark: tracejit against hand-written and framework baselines.

    python benchmarks/bench_grad.py [--dtype float64|float32] [--only NAME ...] [--quick]
        [--no-cold] [--frameworks jax,torch,tf,autograd] [--stat median|min] [--threads N]

Prints markdown: µs per call (median over timed batches) of every implementation that runs,
ratios of each column to tracejit ("numba/tj" > 1 means tracejit is faster), and the
first-call seconds of mlp-seed in fresh processes, cold and with a warm disk cache. Every
column is checked against the hand-written NumPy gradient before it is timed.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import warnings
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
    reexec_with_threads,
    time_many,
)
from workloads import WORKLOADS, check_hand_gradient, compare, tolerance  # noqa: E402

REFERENCE = "tracejit"
COLUMN_ORDER = ("tracejit", "numpy", "numba", "numba-par", *FRAMEWORKS)
NOISY = 1.5  # slowest/fastest batch of a cell above this gets a footnote


@dataclass
class Cell:
    us: float | None = None
    spread: float = 1.0  # slowest / fastest timed batch
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
    p.add_argument(
        "--quick",
        action="store_true",
        help="short cells, no mlp-large, no tf, first calls of tracejit and numba only (< 60 s)",
    )
    p.add_argument("--no-cold", action="store_true", help="skip the first-call subprocesses")
    p.add_argument(
        "--pause",
        type=float,
        default=0.2,
        help="seconds of sleep before each timed batch (BLAS threads spin after a call)",
    )
    p.add_argument(
        "--stat",
        choices=["median", "min"],
        default="median",
        help="per-cell statistic over timed batches; min resists a busy machine better",
    )
    p.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="cap BLAS/OpenMP/Numba/XLA/TF threads at N (steadier on a busy machine)",
    )
    p.add_argument(
        "--frameworks",
        help="comma-separated subset of " + ",".join(FRAMEWORKS) + " ('' for none); default: "
        "all, but no tf with --quick (its import alone takes 5-15 s)",
    )
    return p.parse_args(argv)


def _error_cell(exc: BaseException) -> Cell:
    return Cell(status=f"n/a ({type(exc).__name__})", note=f"{type(exc).__name__}: {exc}")


def prepare(impl_or_builder, workload, dtype, params, data, ref):
    """Build (if given a builder) and check one implementation: (Impl or None, Cell)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            impl, message = _build_and_check(impl_or_builder, workload, dtype, params, data, ref)
        except Exception as exc:  # any failure of one column must not stop the table
            return None, _error_cell(exc)
    # Warnings matter here: e.g. a failed background compile means the timing is of
    # tracejit's interpreter, not of its kernel.
    message += "".join(f"; {w.category.__name__}: {w.message}" for w in caught)
    # A wrong result is still timed (useful while tracejit is being built) but flagged.
    wrong = message.startswith("wrong")
    return impl, Cell(status="wrong" if wrong else "", note=message if caught or wrong else "")


def _build_and_check(impl_or_builder, workload, dtype, params, data, ref):
    impl = impl_or_builder
    if callable(impl_or_builder):
        impl = impl_or_builder(workload, params, data)
    # The first call absorbs tracing/compilation, so timing starts warm. With a settle step
    # (background compile) the first and the settled result are both checked: they come
    # from different code (interpreter, kernel).
    results = [impl.call(*impl.args)]
    if impl.settle is not None:
        impl.settle()
        results.append(impl.call(*impl.args))
    checks = [compare(impl.to_numpy(r), ref, tolerance(dtype)) for r in results]
    bad = [m for ok, m in checks if not ok]
    if bad:
        return impl, "wrong: " + "; ".join(bad)
    return impl, checks[-1][1]


def candidates(workload, dtype, frameworks, params, data) -> dict:
    found = {name: BUILDERS[name] for name in ("tracejit", "numpy", "numba")}
    found.update({impl.name: impl for impl in build_extras(workload, dtype, params, data)})
    found.update({name: BUILDERS[name] for name in frameworks})
    return found


def run_workload(workload, dtype, frameworks, target_s, stat, pause=0.0, repeats=7) -> dict[
    str, Cell
]:
    """Check and time every implementation of one workload, interleaved; ``pause`` s of
    sleep before each timed batch (see harness.time_many)."""
    params, data = workload.make_data(dtype, 0)
    value, grads = workload.numpy_value_and_grad(params, *data)
    ref = (float(value), grads)
    cells, runnable = {}, {}
    for name, what in candidates(workload, dtype, frameworks, params, data).items():
        impl, cells[name] = prepare(what, workload, dtype, params, data, ref)
        if impl is not None:
            runnable[name] = (impl.call, impl.args)
    timings = time_many(runnable, target_s=target_s, repeats=repeats, pause=pause)
    for name, timing in timings.items():
        cells[name].us = timing.min_us if stat == "min" else timing.median_us
        cells[name].spread = timing.max_us / timing.min_us
    return cells


def columns_of(results: dict) -> list[str]:
    """Union of the columns that appear in any workload, in a fixed order."""
    seen = {c for cells in results.values() for c in cells}
    known = [c for c in COLUMN_ORDER if c in seen]
    return known + sorted(seen - set(known))


def times_table(results: dict, stat: str) -> str:
    cols = columns_of(results)
    rows = [
        [name] + [cells[c].text() if c in cells else "—" for c in cols]
        for name, cells in results.items()
    ]
    return markdown_table([f"workload ({stat} µs/call)"] + cols, rows)


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
    lines = [
        f"- {name} / {col}: {cell.note}"
        for name, cells in results.items()
        for col, cell in cells.items()
        if cell.note
    ]
    for name, cells in results.items():
        noisy = [f"{c} {cell.spread:.1f}x" for c, cell in cells.items() if cell.spread > NOISY]
        if noisy:
            lines.append(f"- {name}, noisy (slowest/fastest batch): " + ", ".join(noisy))
    return lines


# --------------------------------------------------------------------------- first call

_SETUP = """
import numpy as np
import workloads
w = workloads.WORKLOADS["mlp-seed"]
params, data = w.make_data(np.{dtype}, 0)
"""

# name -> (extra setup, timed code, label of the full time). Imports are setup: the targets
# are for trace + compile. tracejit compiles in a background thread by default and answers
# the first call with an interpreter, so one process reports two moments: the first call
# as a user sees it (mark), and the kernel compiled or loaded from disk and ready (total).
_FIRST_CALLS = {
    "tracejit": (
        "import tracejit",
        "vg = tracejit.value_and_grad(w.loss)\n"
        "vg(params, *data)\n"
        "mark('first call')\n"
        "getattr(vg, 'wait', lambda: None)()",
        "kernel ready",
    ),
    "numba (hand)": ("import numba", "w.numba_value_and_grad(params, *data)", ""),
    "jax": (
        "import frameworks, jax\nimpl = frameworks.build_jax(w, params, data)",
        "impl.call(*impl.args)",
        "",
    ),
}


def _first_call_rows(name: str, label: str, fc) -> list[list[str]]:
    rows = [
        [f"{name}, {mark}", f"{cold:.2f}", f"{fc.marks_warm.get(mark, float('nan')):.2f}", ""]
        for mark, cold in fc.marks_cold.items()
    ]
    total = f"{name}, {label}" if label else name
    return rows + [[total, f"{fc.cold:.2f}", f"{fc.warm:.2f}", f"{fc.setup_cold:.2f}"]]


def first_call_section(dtype: str, names) -> str:
    rows = []
    for name in names:
        extra, code, label = _FIRST_CALLS[name]
        try:
            fc = cold_first_call(code, _SETUP.format(dtype=dtype) + extra)
            rows += _first_call_rows(name, label, fc)
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
    if args.only:
        return [w for n, w in WORKLOADS.items() if n in args.only]
    return [w for w in WORKLOADS.values() if not (args.quick and w.heavy)]


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.threads:
        reexec_with_threads(args.threads, __file__, argv)
    if args.frameworks is None:
        args.frameworks = ",".join(f for f in FRAMEWORKS if not (args.quick and f == "tf"))
    frameworks = [f for f in args.frameworks.split(",") if f]
    unknown = set(frameworks) - set(FRAMEWORKS)
    if unknown:
        sys.exit(f"unknown frameworks: {sorted(unknown)}")
    dtype = np.dtype(args.dtype)
    target_s = 0.1 if args.quick else 0.5
    print(preamble(args), flush=True)
    results = {}
    for w in selected_workloads(args):
        start = time.perf_counter()
        check_hand_gradient(w)  # the reference every column is checked against
        results[w.name] = run_workload(w, dtype, frameworks, target_s, args.stat, args.pause)
        elapsed = time.perf_counter() - start
        print(f"  measured {w.name} in {elapsed:.1f} s", file=sys.stderr, flush=True)
    print("\n" + times_table(results, args.stat) + "\n\n" + ratios_table(results))
    if notes(results):
        print("\n" + "\n".join(notes(results)))
    if not args.no_cold:
        # JAX is a reference here, not a target: --quick leaves it out to stay under a minute.
        names = [n for n in _FIRST_CALLS if n not in FRAMEWORKS or n in frameworks]
        if args.quick:
            names = [n for n in names if n not in FRAMEWORKS]
        print("\n" + first_call_section(args.dtype, names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
