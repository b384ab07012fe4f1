"""Kernel-ready time with calls being served: when does the compiled kernel take over?

    python benchmarks/bench_kernel_ready.py [--programs seed_mlp,rnn,mlp,logreg] [--limit 30]

Each number comes from a fresh process (`import tracejit` and the data are
not timed). The clock starts at the first call of `value_and_grad(loss)`;
the process then keeps calling it in a loop, as a training script does, and
"ready" is the moment a call is served by the compiled kernel. "cold" starts
from an empty TRACEJIT_CACHE_DIR, on a machine where tracejit ran before: the
runtime helpers' machine code, the same for every program, is in its own cache
(TRACEJIT_RUNTIME_CACHE_DIR, filled first); "first on this machine" has that
empty too; "warm" is a new process on the directory the cold one filled;
"idle" is a warm process that makes one call and then only polls (sleeps)
until the kernel is there. "calls" is how many calls the
interpreter served before the hand-over; "longest call" the slowest of those
calls and the kernel's first (no call should wait for the load). A process gives up after --limit
seconds (shown as "> limit").

Targets (issue 15): seeds' MLP <= 1 s cold, <= 0.2 s warm; RNN-25 and MLP16
<= 2 s cold, <= 0.3 s warm; a busy caller no slower to switch than an idle one.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import FirstCallError, fill_runtime_cache, run_first_call  # noqa: E402

SETUP = """
import time
import numpy as np
import tracejit
from bench_kernel_ready import make
loss, args = make({name!r})
g = tracejit.value_and_grad(loss)


def ready(entry):  # calls are served by the compiled kernel
    return getattr(entry, "ready", entry.kernel.fn is not None and entry.compiling is None)
"""

# The entry is looked up after the first call (that call traces and starts the compile).
BUSY = """
g(*args)
mark("first")
entry, _ = g.entry(args)
calls, longest = 1, 0.0
while not ready(entry):
    start = time.perf_counter()
    g(*args)
    longest = max(longest, time.perf_counter() - start)
    calls += 1
    if time.perf_counter() - t0 > {limit}:
        break
else:
    mark("ready")
start = time.perf_counter()
g(*args)  # the kernel's first call
mark("longest_ms", 1e3 * max(longest, time.perf_counter() - start))
mark("calls", calls)
report = entry.kernel.worker_report or dict()
mark("worker_s", report.get("seconds", 0.0))
mark("worker_cpu_s", report.get("cpu_seconds", 0.0))
if report:  # the cold compile's stages, in seconds from the first call
    mark("sent", report["asked_at"] - t0)
    mark("landed", report["answered_at"] - t0)
    mark("worker_start_s", report.get("start_seconds") or 0.0)
    for name, seconds in report.get("functions", dict()).items():
        mark("fn:" + name, seconds)
"""

IDLE = """
g(*args)
mark("first")
entry, _ = g.entry(args)
while entry.compiling is not None:  # waits; its next call then takes the kernel over
    time.sleep(0.001)
    if time.perf_counter() - t0 > {limit}:
        break
else:
    g(*args)
    if ready(entry):
        mark("ready")
mark("calls", 2)
"""

AFTER = "g.wait()\n"  # the cold process leaves a complete disk cache behind


def logreg_loss(w, b, X, y):
    """L2-regularised logistic regression (the issue's hand-over example)."""
    z = X @ w + b
    return np.mean(np.logaddexp(0.0, -y * z)) + 0.01 * np.sum(w * w)


def make(name: str):
    """(loss, args) of a benchmark program, by name."""
    from compile_programs import make as make_program

    if name == "logreg":
        rng = np.random.default_rng(0)
        X = rng.standard_normal((256, 50))
        y = np.sign(rng.standard_normal(256))
        return logreg_loss, (rng.standard_normal(50) * 0.1, 0.0, X, y)
    size = {"seed_mlp": 0, "rnn": 25, "mlp": 16}[name]
    return make_program(name, size, "numpy")


LABELS = {"seed_mlp": "seeds' MLP (value_and_grad)", "rnn": "char-RNN, 25 steps",
          "mlp": "MLP, 16 tanh layers of 64", "logreg": "L2 logistic regression 256x50"}
TARGETS = {"seed_mlp": (1.0, 0.2), "rnn": (2.0, 0.3), "mlp": (2.0, 0.3)}


def run(code: str, name: str, directory: str, limit: float, runtime: str) -> dict:
    t0 = "t0 = time.perf_counter()\n"
    env = {"TRACEJIT_CACHE_DIR": directory, "TRACEJIT_RUNTIME_CACHE_DIR": runtime,
           "NUMBA_CACHE_DIR": os.path.join(directory, "numba")}
    time.sleep(0.2)  # BLAS threads of the last process settle
    try:
        marks = run_first_call(t0 + code.format(limit=limit), SETUP.format(name=name),
                               AFTER, env, timeout=limit + 300)["marks"]
    except FirstCallError as err:
        return {"error": str(err)[:100]}
    return marks


def measure(name: str, limit: float, runtime: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="tracejit-ready-") as tmp:
        first = os.path.join(tmp, "first")
        directory = os.path.join(tmp, "cache")
        return {"first": run(BUSY, name, first, limit, os.path.join(first, "runtime")),
                "cold": run(BUSY, name, directory, limit, runtime),
                "warm": run(BUSY, name, directory, limit, runtime),
                "idle": run(IDLE, name, directory, limit, runtime)}


def cell(marks: dict, limit: float) -> str:
    if "error" in marks:
        return "error"
    ready = marks.get("ready")
    calls = int(marks.get("calls", 0))
    return f"> {limit:.0f} ({calls:,})" if ready is None else f"{ready:.2f} ({calls:,})"


def table(results: dict, limit: float) -> list[str]:
    lines = ["| program | first on this machine s (calls) | cold s (calls) "
             "| worker compile s (CPU s) | warm s (calls) "
             "| warm: longest call ms | warm, idle s | target cold / warm |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, runs in results.items():
        target = TARGETS.get(name)
        goal = f"{target[0]} / {target[1]}" if target else "-"
        idle, cold = runs["idle"].get("ready"), runs["cold"]
        worker = (f"{cold['worker_s']:.2f} ({cold['worker_cpu_s']:.2f})"
                  if cold.get("worker_s") else "-")
        lines.append(f"| {LABELS[name]} | {cell(runs['first'], limit)} "
                     f"| {cell(cold, limit)} | {worker} "
                     f"| {cell(runs['warm'], limit)} | {runs['warm'].get('longest_ms', 0):.0f} "
                     f"| {'-' if idle is None else f'{idle:.2f}'} | {goal} |")
    return lines


def breakdown(name: str, cold: dict) -> list[str]:
    """Where the cold kernel-ready time went: the first call, the wait for the worker
    (its start-up), its compile (Numba's pipeline seconds per function: each nest with
    the runtime helpers it compiled, then the driver), then the load here and the switch."""
    if "landed" not in cold:
        return []
    functions = {k[3:]: v for k, v in cold.items() if k.startswith("fn:")}
    driver = max(functions, key=lambda k: not k.startswith("nest_"), default=None)
    nests = sum(v for k, v in functions.items() if k != driver)
    compile_s = cold["worker_s"]
    waited = cold["landed"] - cold["sent"] - compile_s
    lines = [f"{LABELS[name]}, cold: first call {cold['first']:.2f} s; request sent at "
             f"{cold['sent']:.2f} s; waited {waited:.2f} s for the worker (its start-up: "
             f"{cold['worker_start_s']:.2f} s); compile {compile_s:.2f} s "
             f"({cold['worker_cpu_s']:.2f} CPU s): {len(functions) - 1} nests "
             f"{nests:.2f} s, then the driver {functions.get(driver, 0.0) - nests:.2f} s "
             f"(Numba's pipeline times, or a translated nest's translation and compile; "
             f"a nest's include the runtime helpers it compiled); "
             f"landed at {cold['landed']:.2f} s, "
             f"load here and switch {cold.get('ready', cold['landed']) - cold['landed']:.2f} s"]
    lines.append("  per nest: " + ", ".join(f"{k[:12]} {v:.2f}" for k, v in functions.items()
                                              if k != driver))
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--programs", default="seed_mlp,rnn,mlp,logreg")
    parser.add_argument("--limit", type=float, default=30.0, help="seconds before giving up")
    args = parser.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory(prefix="tracejit-runtime-") as runtime:
        fill_runtime_cache(runtime)
        for name in args.programs.split(","):
            print(f"measuring {name} ...", file=sys.stderr, flush=True)
            results[name] = measure(name, args.limit, runtime)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"Kernel ready from the first call, calls served meanwhile (load average {load:.2f}):")
    print("\n".join(table(results, args.limit)))
    for name, runs in results.items():
        print("\n".join(breakdown(name, runs["cold"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
