"""The benchmark suite in one command: value and gradient of the ANCHORS.md workloads in
float64 and float32 for tracejit, NumPy by hand, Numba fused by hand and every installed
framework; kernel-ready times in fresh processes (cold, then from the disk cache); where
tracejit stands against each ANCHORS.md target; and the scaling sweep.

    python benchmarks/run_all.py [--quick] [--out DIR] [--dtypes float64,float32]
        [--frameworks jax,torch,tf,autograd] [--no-cold] [--no-sweep] [--pause 0.2]
        [--threads N]

Writes DIR/latest.md, DIR/latest.json and (with matplotlib) DIR/scaling.png; DIR is
benchmarks/results by default. All implementations of a workload are timed interleaved in
one process, with a pause before each timed batch; every ratio is another column's time
over tracejit's from the same run (> 1: tracejit is faster).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

_BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [_BENCH_DIR, os.path.dirname(_BENCH_DIR)]

import numpy as np  # noqa: E402
from bench_grad import REFERENCE, columns_of, run_workload, selected_workloads  # noqa: E402
from bench_scaling import plot as plot_scaling  # noqa: E402
from bench_scaling import run_sweeps  # noqa: E402
from bench_scaling import table as scaling_table  # noqa: E402
from frameworks import FRAMEWORKS  # noqa: E402
from harness import (  # noqa: E402
    FirstCallError,
    cold_first_call,
    fmt_ratio,
    markdown_table,
    reexec_with_threads,
)
from workloads import WORKLOADS, check_hand_gradient  # noqa: E402

DTYPES = ("float64", "float32")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="short cells, no mlp-large, no tf, fewer sweep points")
    p.add_argument("--out", default=os.path.join(_BENCH_DIR, "results"))
    p.add_argument("--dtypes", default=",".join(DTYPES))
    p.add_argument("--frameworks", help="subset of " + ",".join(FRAMEWORKS) + " (default: all; "
                   "no tf with --quick)")
    p.add_argument("--no-cold", action="store_true", help="skip the fresh-process first calls")
    p.add_argument("--no-sweep", action="store_true", help="skip the scaling sweep")
    p.add_argument("--pause", type=float, default=0.2,
                   help="seconds of sleep before each timed batch (BLAS threads spin)")
    p.add_argument("--threads", type=int, metavar="N", help="cap every thread pool at N")
    args = p.parse_args(argv)
    args.only = None
    if args.frameworks is None:
        args.frameworks = ",".join(f for f in FRAMEWORKS if not (args.quick and f == "tf"))
    return args


# --------------------------------------------------------------------------- steady state


def steady_state(args, dtype: str, frameworks) -> dict:
    """{workload: {implementation: Cell}} for one dtype."""
    target_s = 0.1 if args.quick else 0.4
    results = {}
    for w in selected_workloads(args):
        start = time.perf_counter()
        results[w.name] = run_workload(w, np.dtype(dtype), frameworks, target_s, "median",
                                       args.pause, repeats=5)
        print(f"  {dtype} {w.name}: {time.perf_counter() - start:.1f} s", file=sys.stderr,
              flush=True)
    return results


def cell_text(cells: dict, name: str) -> str:
    cell, ref = cells.get(name), cells.get(REFERENCE)
    if cell is None:
        return "—"
    if cell.us is None or name == REFERENCE or ref is None or ref.us is None:
        return cell.text()
    return f"{cell.text()} ({fmt_ratio(cell.us / ref.us)})"


def steady_table(results: dict, dtype: str) -> str:
    cols = columns_of(results)
    header = [f"{dtype}, µs per call (ratio to tracejit)"] + cols
    rows = [[name] + [cell_text(cells, c) for c in cols] for name, cells in results.items()]
    return markdown_table(header, rows)


def cells_json(results: dict) -> dict:
    return {w: {name: {"us": c.us, "spread": c.spread, "status": c.status, "note": c.note,
                       "ratio_to_tracejit": _ratio(cells, name)}
                for name, c in cells.items()}
            for w, cells in results.items()}


def _ratio(cells: dict, name: str):
    cell, ref = cells.get(name), cells.get(REFERENCE)
    if cell is None or ref is None or cell.us is None or ref.us is None:
        return None
    return cell.us / ref.us


# --------------------------------------------------------------------------- first calls

_SETUP = """
import numpy as np
import workloads
w = workloads.WORKLOADS[{name!r}]
params, data = w.make_data(np.float64, 0)
"""

# tracejit answers the first call with its interpreter while Numba compiles in a background
# thread: the process reports the first result, the kernel ready, and (from the profiler)
# what the compile was made of.
_TRACEJIT = """
with tracejit.profiler() as prof:
    vg = tracejit.value_and_grad(w.loss)
    vg(params, *data)
    mark("first result")
    vg.wait()
"""
_TRACEJIT_AFTER = """
(report,) = [r for r in prof.reports if r.trace is not None]
mark("trace and passes", report.trace_s + report.passes_s)
mark("compile", report.compile_s)
for phase, seconds in report.phases.items():
    mark("numba " + phase, seconds)
"""

_REFERENCES = {  # the ANCHORS.md first-call references, for mlp-seed
    "numba (hand)": ("import numba", "w.numba_value_and_grad(params, *data)"),
    "jax": ("import frameworks, jax\nimpl = frameworks.build_jax(w, params, data)",
            "impl.call(*impl.args)"),
}


def first_calls(args, frameworks) -> dict:
    """{(implementation, workload): {"cold": s, "warm": s, "marks_cold": {...}, ...}}."""
    names = [w.name for w in selected_workloads(args)]
    jobs = [("tracejit", name, "import tracejit", _TRACEJIT, _TRACEJIT_AFTER) for name in names]
    jobs += [(impl, "mlp-seed", extra, code, "") for impl, (extra, code) in _REFERENCES.items()
             if impl not in FRAMEWORKS or impl in frameworks]
    found = {}
    for impl, name, extra, code, after in jobs:
        try:
            fc = cold_first_call(code, _SETUP.format(name=name) + extra, after)
            found[(impl, name)] = {"cold": fc.cold, "warm": fc.warm,
                                   "marks_cold": fc.marks_cold, "marks_warm": fc.marks_warm}
        except FirstCallError as exc:
            found[(impl, name)] = {"error": str(exc)}
        print(f"  first call {impl} {name}: {found[(impl, name)].get('cold', 'n/a')}",
              file=sys.stderr, flush=True)
    return found


def first_call_table(found: dict) -> str:
    def s(value):
        return "n/a" if value is None else f"{value:.2f}"

    rows = []
    for (impl, name), r in found.items():
        if "error" in r:
            rows.append([f"{impl}, {name}", "n/a", "n/a", "n/a", "n/a", r["error"][:60]])
            continue
        cold = r["marks_cold"]
        phases = ", ".join(f"{k[6:]} {v:.2f}" for k, v in cold.items()
                           if k.startswith("numba ") and "callees" not in k)
        rows.append([f"{impl}, {name}", s(cold.get("first result")), s(r["cold"]),
                     s(r["warm"]), s(cold.get("compile")), phases or "—"])
    header = ["first call, float64 (s)", "first result, cold", "kernel ready, cold",
              "kernel ready, warm disk cache", "compile, cold", "of which Numba phases"]
    return markdown_table(header, rows)


# --------------------------------------------------------------------------- ANCHORS targets


def targets(steady: dict, found: dict) -> list[list[str]]:
    """One row per ANCHORS.md target: the measured ratio or time and whether it is met."""
    rows = []
    f64 = steady.get("float64", {})

    def ratio(workload, other):
        cells = f64.get(workload, {})
        return _ratio(cells, other)

    for name in ("seed-linear", "mlp-seed"):
        r = ratio(name, "numba")
        if r is not None:
            rows.append([f"{name}: tracejit within 1.5x of Numba by hand", f"tj/numba {1 / r:.2f}",
                         _met(1 / r <= 1.5)])
    for dtype, results in steady.items():
        for name in ("mlp-medium", "mlp-large"):
            cells = results.get(name)
            if not cells or cells.get(REFERENCE) is None or cells[REFERENCE].us is None:
                continue
            others = {n: c.us for n, c in cells.items() if n != REFERENCE and c.us
                      and c.status != "wrong"}
            if others:
                best = min(others, key=others.get)
                share = cells[REFERENCE].us / others[best]
                rows.append([f"{name} ({dtype}): no slower than the fastest column",
                             f"tj/{best} {share:.2f}", _met(share <= 1.0)])
    r = ratio("elementwise-1e6", "jax")
    if r is not None:
        rows.append(["elementwise-1e6: at least 4x faster than JAX", f"jax/tj {r:.2f}",
                     _met(r >= 4)])
    seed = found.get(("tracejit", "mlp-seed"), {})
    if "cold" in seed:
        rows.append(["mlp-seed gradient, kernel ready cold <= 2 s", f"{seed['cold']:.2f} s",
                     _met(seed["cold"] <= 2)])
        rows.append(["mlp-seed gradient, kernel ready from disk <= 0.5 s",
                     f"{seed['warm']:.2f} s", _met(seed["warm"] <= 0.5)])
    return rows


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


# --------------------------------------------------------------------------- main


def machine(command: str) -> str:
    import numba

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as file:
            model = next(line.split(":", 1)[1].strip() for line in file
                         if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{time.strftime('%Y-%m-%d %H:%M')}, {model}, {os.cpu_count()} CPUs, load average "
            f"{os.getloadavg()[0]:.2f}; Python {platform.python_version()}, NumPy "
            f"{np.__version__}, Numba {numba.__version__}; "
            f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}.  \n"
            f"Command: `{command}`")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.threads:
        reexec_with_threads(args.threads, __file__, argv)
    frameworks = [f for f in args.frameworks.split(",") if f]
    command = " ".join(["python benchmarks/run_all.py", *argv])
    for w in WORKLOADS.values():
        check_hand_gradient(w)  # the reference every column is checked against
    md = ["# tracejit benchmarks", "", machine(command), ""]
    data: dict = {"machine": machine(command), "command": command, "steady_state": {}}
    steady = {}
    for dtype in args.dtypes.split(","):
        steady[dtype] = steady_state(args, dtype, frameworks)
        md += [steady_table(steady[dtype], dtype), ""]
        data["steady_state"][dtype] = cells_json(steady[dtype])
    found = {} if args.no_cold else first_calls(args, frameworks)
    if found:
        md += [first_call_table(found), ""]
        data["first_calls"] = {f"{impl} {name}": r for (impl, name), r in found.items()}
    rows = targets(steady, found)
    md += [markdown_table(["ANCHORS.md target", "measured", ""], rows, numeric_from=1), ""]
    data["targets"] = rows
    if not args.no_sweep:
        peers = [f for f in ("jax", "torch") if f in frameworks]
        sweeps = run_sweeps(peers, args.quick, args.pause)
        md += [line for axis, points in sweeps.items()
               for line in (scaling_table(axis, points), "")]
        data["scaling"] = {axis: {str(k): v for k, v in points.items()}
                           for axis, points in sweeps.items()}
        os.makedirs(args.out, exist_ok=True)
        if plot_scaling(sweeps, os.path.join(args.out, "scaling.png")):
            md += ["", "![scaling](scaling.png)"]
    text = "\n".join(md).rstrip() + "\n"
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "latest.md"), "w") as file:
        file.write(text)
    with open(os.path.join(args.out, "latest.json"), "w") as file:
        json.dump(data, file, indent=1, default=str)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
