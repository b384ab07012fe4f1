"""Kernel-ready time: how long a gradient takes to exist, against JAX, and how it grows.

    python benchmarks/bench_compile.py [--quick] [--no-jax]

Every number comes from a fresh process. "cold" starts from empty caches
(tracejit's and Numba's); "warm" is a new process reading the disk cache the
cold one left; "helpers on disk" is a new program whose loop-nest functions
another program already compiled (a 16-layer MLP after an 8-layer one of the
same width). tracejit's "ready" is from the first call until the compiled
kernel serves calls; meanwhile the interpreter answers (its time per call is
shown). JAX's is the first call of `jit(grad(f))`. Imports (`import tracejit`,
`import jax`) come before the clock starts. Steady state is measured after
the kernel is ready, after a pause (BLAS threads spin after a call).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import FirstCallError, run_first_call  # noqa: E402

SETUP = """
import time, statistics
import numpy as np
from compile_programs import make, hand_rnn_grad
loss, args = make({name!r}, {size!r}, {framework!r})
"""

TRACEJIT = """
g = tracejit.grad(loss)
g(*args)
mark("first")
entry, _ = g.entry(args)
served = []
while entry.compiling is not None or entry.kernel.fn is None:
    start = time.perf_counter()
    g(*args)
    served.append(time.perf_counter() - start)
    if len(served) > 20000:
        break
g.wait()
mark("ready")
mark("interp_ms", statistics.median(served) * 1e3 if served else float("nan"))
mark("interp_calls", len(served))
"""

TRACEJIT_AFTER = """
from harness import median_us
time.sleep(0.2)
mark("steady_us", median_us(g, args, target_s=1.0))
text = g.source(*args)
mark("kernel_lines", text.split("# ----")[0].count("\\n"))
mark("total_lines", text.count("\\n"))
"""

FIRST_200 = """
g = tracejit.grad(loss)
for _ in range(200):
    g(*args)
mark("calls_200")
"""

HAND_200 = """
time.sleep(0.2)
start = time.perf_counter()
for _ in range(200):
    hand_rnn_grad(*args)
mark("hand_200", time.perf_counter() - start)
"""

JAX_SETUP = "import jax\njax.config.update('jax_enable_x64', True)\n"

JAX = """
g = jax.jit(jax.grad(loss))
jax.block_until_ready(g(*args))
mark("first")
"""

JAX_AFTER = """
from harness import median_us
time.sleep(0.2)
mark("steady_us", median_us(lambda: jax.block_until_ready(g(*args)), (), target_s=1.0))
"""


def child(code, after, name, size, framework, cache_dir):
    setup = SETUP.format(name=name, size=size, framework=framework)
    if framework == "jax":
        setup = JAX_SETUP + setup
    else:  # imports are not timed, JAX's neither
        setup = "import tracejit\n" + setup
    env = {"TRACEJIT_CACHE_DIR": os.path.join(cache_dir, "tracejit"),
           "NUMBA_CACHE_DIR": os.path.join(cache_dir, "numba"),
           "JAX_PLATFORMS": "cpu"}
    try:
        return run_first_call(code, setup, after, env, timeout=1200)["marks"]
    except FirstCallError as err:
        return {"error": str(err)[:120]}


def tracejit_runs(name, size, cache_dir=None) -> dict:
    """Cold then warm (a second process on the same cache)."""
    with tempfile.TemporaryDirectory(prefix="tracejit-bench-") as tmp:
        directory = cache_dir or tmp
        cold = child(TRACEJIT, TRACEJIT_AFTER, name, size, "tracejit", directory)
        warm = child(TRACEJIT, "", name, size, "tracejit", directory)
    return {"cold": cold, "warm": warm}


def jax_run(name, size) -> dict:
    with tempfile.TemporaryDirectory(prefix="jax-bench-") as tmp:
        return child(JAX, JAX_AFTER, name, size, "jax", tmp)


def seconds(marks, key) -> str:
    value = marks.get(key)
    return "error" if value is None else f"{value:.2f}"


def ratio(a, b) -> str:
    if a is None or b is None or not b:
        return ""
    return f"{a / b:.2f}"


ROWS = [("char-RNN, 25 steps (Python loop)", "rnn", 25),
        ("char-RNN, 50 steps (Python loop)", "rnn", 50),
        ("char-RNN, 25 steps (lax.scan)", "rnn_scan", 25),
        ("char-RNN, 50 steps (lax.scan)", "rnn_scan", 50),
        ("MLP, 16 tanh layers of width 64, batch 32", "mlp", 16),
        ("ODE net, RK4 of a 2-32-2 MLP, 20 steps (Python loop)", "ode_net", 20),
        ("seeds' 2-layer MLP (batch 32, 10-5-2)", "seed_mlp", 0)]


def main_table(results, with_jax) -> list[str]:
    head = ("| program | kernel lines (driver / with nests) | ready cold s | ready warm s "
            "| JAX first call s | cold / JAX | interpreted ms/call | steady µs | JAX steady µs "
            "| steady / JAX |")
    lines, nan = [head, "|" + "---|" * 10], float("nan")
    for label, name, size in ROWS:
        t = results[name, size]
        cold, warm = t["cold"], t["warm"]
        jax = t.get("jax", {}) if with_jax else {}
        lines.append(
            f"| {label} | {cold.get('kernel_lines', '?')} / {cold.get('total_lines', '?')} "
            f"| {seconds(cold, 'ready')} | {seconds(warm, 'ready')} | {seconds(jax, 'first')} "
            f"| {ratio(cold.get('ready'), jax.get('first'))} "
            f"| {cold.get('interp_ms', nan):.2f} "
            f"| {cold.get('steady_us', nan):.0f} | {jax.get('steady_us', nan):.0f} "
            f"| {ratio(cold.get('steady_us'), jax.get('steady_us'))} |")
    return lines


def sweep_table(results, name, sizes, label, with_jax) -> list[str]:
    base = results[name, sizes[0]]
    lines = [f"| {label} | tracejit ready cold s | growth | driver lines | JAX first call s "
             "| growth |", "|---|---|---|---|---|---|"]
    for size in sizes:
        t = results[name, size]
        jax = t.get("jax", {}) if with_jax else {}
        lines.append(
            f"| {size} | {seconds(t['cold'], 'ready')} "
            f"| {ratio(t['cold'].get('ready'), base['cold'].get('ready'))}x "
            f"| {t['cold'].get('kernel_lines', '?')} | {seconds(jax, 'first')} "
            f"| {ratio(jax.get('first'), base.get('jax', {}).get('first'))}x |")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer sweep points")
    parser.add_argument("--no-jax", action="store_true", help="tracejit only")
    args = parser.parse_args(argv)
    with_jax = not args.no_jax
    if with_jax:
        try:
            import jax  # noqa: F401
        except ImportError:
            with_jax = False
    rnn_steps = [5, 25, 100] if args.quick else [5, 10, 25, 50, 100]
    mlp_depths = [2, 16] if args.quick else [2, 4, 8, 16]
    wanted = {(name, size) for _, name, size in ROWS}
    wanted |= {("rnn", s) for s in rnn_steps} | {("mlp", d) for d in mlp_depths}
    results = {}
    for name, size in sorted(wanted):
        print(f"measuring {name} {size} ...", file=sys.stderr, flush=True)
        results[name, size] = tracejit_runs(name, size)
        if with_jax:
            results[name, size]["jax"] = jax_run(name, size)
    with tempfile.TemporaryDirectory(prefix="tracejit-bench-") as shared:
        child(TRACEJIT, "", "mlp", 8, "tracejit", shared)  # puts the layer nests on disk
        reuse = child(TRACEJIT, "", "mlp", 16, "tracejit", shared)
    with tempfile.TemporaryDirectory(prefix="tracejit-bench-") as tmp:
        first = child(FIRST_200, HAND_200, "rnn", 25, "tracejit", tmp)

    out = ["## Kernel-ready time (gradient of each program)", ""]
    out += main_table(results, with_jax)
    out += ["", f"16-layer MLP ready when an 8-layer MLP of the same width put its nests on "
            f"disk: {seconds(reuse, 'ready')} s (cold: "
            f"{seconds(results['mlp', 16]['cold'], 'ready')} s)."]
    calls, hand = first.get("calls_200"), first.get("hand_200")
    out += [f"First 200 calls of the 25-step RNN gradient from a cold start: "
            f"{seconds(first, 'calls_200')} s; the same 200 calls of hand-written NumPy "
            f"backprop: {seconds(first, 'hand_200')} s ({ratio(calls, hand)}x).", ""]
    out += ["## Growth with the program's size", ""]
    out += sweep_table(results, "rnn", rnn_steps, "RNN steps", with_jax) + [""]
    out += sweep_table(results, "mlp", mlp_depths, "MLP depth", with_jax)
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
