"""Scaling sweep: value-and-gradient time per call of an MLP against batch size and
against hidden width, tracejit and its peers side by side at every point.

    python benchmarks/bench_scaling.py [--quick] [--frameworks jax,torch] [--plot out.png]

Every point is a workload of its own (data, hand-written NumPy and Numba, frameworks),
checked against the NumPy gradient and timed interleaved, with a pause before each timed
batch (see harness.time_many). tracejit's kernels are shape-generic, so the whole batch
sweep runs on two kernels (batch 1 has a unit axis, a signature of its own); JAX compiles
one per shape (not timed: steady state only).
"""

from __future__ import annotations

import argparse
import os
import sys

_BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [_BENCH_DIR, os.path.dirname(_BENCH_DIR)]

import numpy as np  # noqa: E402
from bench_grad import run_workload  # noqa: E402
from frameworks import FRAMEWORKS  # noqa: E402
from harness import fmt_us, markdown_table  # noqa: E402
from workloads import mlp_workload  # noqa: E402

BATCHES = (1, 4, 16, 64, 256, 1024, 4096)
WIDTHS = (8, 32, 128, 512, 2048)
N_IN, HIDDEN, N_OUT, BATCH = 64, 128, 10, 128  # the fixed sizes of each sweep
DEFAULT_PEERS = ("jax", "torch")  # TF and autograd: slow to run, see bench_grad.py


def sweep(axis: str, values, frameworks, target_s: float, pause: float) -> dict:
    """{value: {implementation: µs or None}} for axis "batch" or "width"."""
    points = {}
    for value in values:
        batch, hidden = (value, HIDDEN) if axis == "batch" else (BATCH, value)
        w = mlp_workload(f"mlp {batch}x{N_IN}->{hidden}->{N_OUT}", "", (batch, N_IN, hidden,
                                                                      N_OUT))
        cells = run_workload(w, np.float64, frameworks, target_s, "median", pause, repeats=5)
        points[value] = {name: cell.us for name, cell in cells.items()
                         if cell.status != "wrong"}
        print(f"  {axis} {value}: " + ", ".join(f"{k} {fmt_us(v)}" for k, v in
                                                points[value].items() if v), file=sys.stderr,
              flush=True)
    return points


def table(axis: str, points: dict) -> str:
    names = sorted({n for row in points.values() for n in row},
                   key=lambda n: (n != "tracejit", n))
    rows = []
    for value, row in points.items():
        ref = row.get("tracejit")
        cells = [fmt_us(row["tracejit"]) if ref else "—"]
        for name in names[1:]:
            us = row.get(name)
            cells.append("—" if us is None else fmt_us(us) + (f" ({us / ref:.2g})" if ref else ""))
        rows.append([str(value), *cells])
    label = {"batch": f"batch ({N_IN}->{HIDDEN}->{N_OUT})",
             "width": f"hidden width (batch {BATCH}, {N_IN}->w->{N_OUT})"}[axis]
    return markdown_table([label, *[f"{n} µs" + ("" if n == "tracejit" else " (/tj)")
                                    for n in names]], rows)


def plot(sweeps: dict, path: str) -> str | None:
    """One panel per sweep, log-log µs per call; None if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(1, len(sweeps), figsize=(6 * len(sweeps), 4.5))
    for ax, (axis, points) in zip(np.atleast_1d(axes), sweeps.items()):
        names = sorted({n for row in points.values() for n in row})
        for name in names:
            xs = [v for v, row in points.items() if row.get(name)]
            ax.plot(xs, [points[v][name] for v in xs], marker="o", label=name,
                    linewidth=2.5 if name == "tracejit" else 1.2)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size" if axis == "batch" else "hidden width")
        ax.set_ylabel("µs per value-and-gradient call")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle("tracejit vs peers: MLP value and gradient, float64")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer points, short cells")
    p.add_argument("--frameworks", default=",".join(DEFAULT_PEERS),
                   help="comma-separated subset of " + ",".join(FRAMEWORKS))
    p.add_argument("--pause", type=float, default=0.2)
    p.add_argument("--plot", metavar="OUT", help="draw both sweeps (needs matplotlib)")
    args = p.parse_args(argv)
    frameworks = [f for f in args.frameworks.split(",") if f]
    sweeps = run_sweeps(frameworks, args.quick, args.pause)
    for axis, points in sweeps.items():
        print(table(axis, points) + "\n")
    if args.plot and plot(sweeps, args.plot) is None:
        print("no plot: matplotlib is not installed", file=sys.stderr)
    return 0


def run_sweeps(frameworks, quick: bool, pause: float) -> dict:
    batches = BATCHES[::2] if quick else BATCHES
    widths = WIDTHS[::2] if quick else WIDTHS
    target_s = 0.05 if quick else 0.25
    return {"batch": sweep("batch", batches, frameworks, target_s, pause),
            "width": sweep("width", widths, frameworks, target_s, pause)}


if __name__ == "__main__":
    sys.exit(main())
