"""The command line.

    python -m tracejit demo
    python -m tracejit profile [--json out.json] [--trace out.trace.json] [--plot out.png]
        script.py [args...]
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import sys
import traceback

from .profiling.profiler import Profiler


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tracejit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="train the seed models, print their gradients and the "
                                     "profile table")
    prof = commands.add_parser("profile", help="run a script under the profiler and print the "
                                               "table at exit")
    prof.add_argument("--json", metavar="OUT", help="write the table as JSON")
    prof.add_argument("--trace", metavar="OUT", help="write the timeline (Chrome trace format, "
                                                     "for ui.perfetto.dev)")
    prof.add_argument("--plot", metavar="OUT", help="draw time per call, compiled against "
                                                    "eager (needs matplotlib)")
    prof.add_argument("script")
    prof.add_argument("args", nargs=argparse.REMAINDER)
    ns = parser.parse_args(argv)
    if ns.command == "demo":
        from .demo import main as demo

        demo()
        return 0
    return profile_script(ns)


def profile_script(ns) -> int:
    """Run the script as __main__ with its own argv; the table (and files) at exit."""
    argv, path = sys.argv, list(sys.path)
    sys.argv = [ns.script, *ns.args]
    sys.path.insert(0, os.path.dirname(os.path.abspath(ns.script)))
    status = 0
    try:
        with Profiler() as prof:
            try:
                runpy.run_path(ns.script, run_name="__main__")
            except SystemExit as exit_:
                status = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
            except BaseException:  # the script's error, then the profile of what ran
                traceback.print_exc()
                status = 1
            prof.wait()  # compiles still running belong in the table
    finally:
        sys.argv, sys.path[:] = argv, path
    sys.stdout.flush()
    print(prof)
    if ns.json:
        with open(ns.json, "w") as file:
            json.dump(prof.as_dict(), file, indent=1)
    if ns.trace:
        prof.export_chrome_trace(ns.trace)
    if ns.plot:
        plot(prof, ns.plot)
    return status


def plot(prof, path: str) -> None:
    """Horizontal bars per function and signature: compiled and eager µs per call."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("--plot needs matplotlib: pip install 'tracejit[plot]'", file=sys.stderr)
        return
    reports = [r for r in prof.reports if r.call_us or r.eager_us][::-1]
    labels = [f"{r.name}\n{r.signature[:40]}" for r in reports]
    fig, ax = plt.subplots(figsize=(9, 1 + 0.6 * max(len(reports), 1)))
    rows = range(len(reports))
    ax.barh([k + 0.2 for k in rows], [r.call_us or 0 for r in reports], 0.4, label="compiled")
    ax.barh([k - 0.2 for k in rows], [r.eager_us or 0 for r in reports], 0.4,
            label="eager (NumPy interpreter)")
    ax.set_yticks(list(rows), labels, fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("µs per call")
    ax.legend()
    ax.set_title("tracejit profile: time per call")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
