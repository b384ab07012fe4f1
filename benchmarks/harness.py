"""Timing helpers: steady-state median per call, first call in a fresh process, tables."""

from __future__ import annotations

import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import NamedTuple

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(BENCH_DIR)

# --------------------------------------------------------------------------- steady state


class Timing(NamedTuple):
    median_us: float
    min_us: float
    max_us: float


class _Plan(NamedTuple):
    fn: Callable
    args: tuple
    number: int  # calls per timed batch
    repeats: int  # timed batches


def _time_batch(fn: Callable, args: tuple, number: int) -> float:
    start = time.perf_counter()
    for _ in range(number):
        fn(*args)
    return time.perf_counter() - start


def _calibrate(fn: Callable, args: tuple, min_batch_s: float) -> tuple[int, float]:
    """Smallest power-of-two call count whose batch takes >= min_batch_s, and its time.

    One call of a 3 µs kernel is too short to time alone (timer resolution, cache noise),
    so the estimate comes from a batch, as timeit's autorange does.
    """
    number = 1
    while True:
        elapsed = _time_batch(fn, args, number)
        if elapsed >= min_batch_s or number >= 1 << 20:
            return number, elapsed
        number *= 2


def _plan(fn: Callable, args: tuple, target_s: float, repeats: int, warmup: int) -> _Plan:
    for _ in range(warmup):
        fn(*args)
    number, elapsed = _calibrate(fn, args, min_batch_s=min(0.02, target_s / 10))
    per_call = elapsed / number
    # Calls slower than target/repeats still get three batches, so a 100 ms cell costs
    # ~0.3 s rather than resting on a single sample.
    repeats = max(3, min(repeats, int(target_s / per_call)))
    return _Plan(fn, args, max(1, int(target_s / repeats / per_call)), repeats)


def time_many(
    calls: dict, target_s: float = 0.5, repeats: int = 7, warmup: int = 2, pause: float = 0.0
) -> dict[str, Timing]:
    """Time several ``name -> (fn, args)`` side by side; µs per call, about target_s each.

    The batches are interleaved round-robin rather than one implementation after the other:
    on a shared machine the load drifts within seconds, and interleaving makes every column
    see the same drift, so the ratios (the thing ANCHORS.md compares) stay meaningful. The
    median of the per-batch means resists the odd slow batch.

    ``pause`` seconds of sleep precede every timed batch: NumPy's and SciPy's bundled
    OpenBLAS threads keep spinning for a while after a call and slow whatever runs next
    (measured here: it made tracejit look 2.8x slower than it is right after NumPy).
    """
    plans = {name: _plan(fn, args, target_s, repeats, warmup) for name, (fn, args) in calls.items()}
    samples: dict[str, list[float]] = {name: [] for name in plans}
    # Python's GC is off while timing, as in timeit: a collection of garbage made by one
    # framework would otherwise land in whichever cell happens to trigger it.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(max((p.repeats for p in plans.values()), default=0)):
            for name, p in plans.items():
                if r < p.repeats:
                    if pause:
                        time.sleep(pause)
                    samples[name].append(_time_batch(p.fn, p.args, p.number) / p.number)
    finally:
        if was_enabled:
            gc.enable()
    return {
        name: Timing(statistics.median(s) * 1e6, min(s) * 1e6, max(s) * 1e6)
        for name, s in samples.items()
    }


def median_us(
    fn: Callable, args: tuple = (), target_s: float = 0.5, repeats: int = 7, warmup: int = 2
) -> float:
    """Median µs per call of ``fn(*args)``, the measurement taking about ``target_s``."""
    return time_many({"": (fn, args)}, target_s, repeats, warmup)[""].median_us


# --------------------------------------------------------------------------- first call

# Runs in the child. setup (imports, data) and code (the first call) are timed apart so the
# report can tell import cost from trace+compile cost. Inside code, mark("label") records the
# seconds since code started (several moments from one process: each process costs seconds).
# `after` runs untimed (e.g. waits for a background compile so that the disk cache is
# complete for the next process).
_RUNNER = r"""
import json, sys, time
setup, code, after, paths = json.loads(sys.argv[1])
sys.path[:0] = paths
marks = {}
ns = {"__name__": "__firstcall__"}
# mark(label): seconds since the timed code started; mark(label, value): any number.
ns["mark"] = lambda label, value=None: marks.__setitem__(
    label, time.perf_counter() - t1 if value is None else value)
try:
    t0 = time.perf_counter()
    exec(compile(setup, "<setup>", "exec"), ns)
    t1 = time.perf_counter()
    exec(compile(code, "<first-call>", "exec"), ns)
    t2 = time.perf_counter()
    exec(compile(after, "<after>", "exec"), ns)
except BaseException as exc:
    print("@@RESULT " + json.dumps({"error": type(exc).__name__, "message": str(exc)[:300]}))
    sys.exit(1)
print("@@RESULT " + json.dumps({"setup": t1 - t0, "call": t2 - t1, "marks": marks}))
"""


class FirstCallError(RuntimeError):
    def __init__(self, kind: str, message: str):
        super().__init__(f"{kind}: {message}")
        self.kind = kind


class FirstCall(NamedTuple):
    cold: float  # seconds of the first call, empty caches
    warm: float  # seconds of the first call in a new process, caches from the cold run
    setup_cold: float  # seconds of setup (imports, data) in the cold process
    marks_cold: dict  # label -> seconds, from mark(label) calls in the code
    marks_warm: dict


def run_first_call(
    code: str, setup: str = "", after: str = "", env: dict | None = None, timeout=600
) -> dict:
    """Run setup then time ``code`` once in a fresh interpreter.

    Returns {'setup': s, 'call': s, 'marks': {label: s}}; raises FirstCallError.
    """
    payload = json.dumps([setup, code, after, [BENCH_DIR, REPO_DIR]])
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _RUNNER, payload],
            env={**os.environ, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        raise FirstCallError("Timeout", f"no result after {timeout} s") from exc
    for line in proc.stdout.splitlines():
        if line.startswith("@@RESULT "):
            result = json.loads(line[len("@@RESULT ") :])
            if "error" in result:
                raise FirstCallError(result["error"], result["message"])
            return result
    raise FirstCallError("ChildCrashed", (proc.stderr or proc.stdout)[-300:])


FILL_RUNTIME = """
from tracejit.backend import worker
for task in worker._warm_ups():
    task()
"""


def fill_runtime_cache(runtime_dir: str) -> None:
    """Compile the runtime helpers into `runtime_dir` (TRACEJIT_RUNTIME_CACHE_DIR), as
    any earlier program on the machine would have: a benchmark's "cold" then means
    an empty kernel cache on a machine where tracejit ran before."""
    run_first_call(FILL_RUNTIME, env={"TRACEJIT_RUNTIME_CACHE_DIR": runtime_dir},
                   timeout=600)


def cold_first_call(code_str: str, setup: str = "", after: str = "", timeout=600) -> FirstCall:
    """First-call seconds of ``code_str``: cold (empty caches), then warm from the disk cache.

    Both TRACEJIT_CACHE_DIR and NUMBA_CACHE_DIR point into one new temporary directory, so
    "cold" is cold even for ``cache=True`` Numba kernels whose cache already sits in
    __pycache__, and the second process sees exactly what the first one wrote.
    """
    with tempfile.TemporaryDirectory(prefix="tracejit-bench-") as tmp:
        env = {
            "TRACEJIT_CACHE_DIR": os.path.join(tmp, "tracejit"),
            "NUMBA_CACHE_DIR": os.path.join(tmp, "numba"),
        }
        cold = run_first_call(code_str, setup, after, env, timeout)
        warm = run_first_call(code_str, setup, after, env, timeout)
    return FirstCall(cold["call"], warm["call"], cold["setup"], cold["marks"], warm["marks"])


# --------------------------------------------------------------------------- threads


def thread_env(n: int) -> dict[str, str]:
    """Environment that caps every library's thread pool at ``n`` (read at import time).

    On a busy 2-core machine a 2-thread BLAS call waits for its second thread to be
    scheduled and a 1 ms product can take 30 ms; one thread everywhere gives numbers that
    survive other people's jobs, at the price of no longer measuring parallel speed-up.
    """
    env = {
        name: str(n)
        for name in (
            "OMP_NUM_THREADS",  # PyTorch, libgomp
            "OPENBLAS_NUM_THREADS",  # NumPy's and SciPy's (so Numba's) BLAS
            "MKL_NUM_THREADS",
            "NUMBA_NUM_THREADS",
            "TF_NUM_INTRAOP_THREADS",
            "TF_NUM_INTEROP_THREADS",
        )
    }
    flag = "--xla_cpu_multi_thread_eigen=false"  # XLA has a switch for one thread, no count
    flags = os.environ.get("XLA_FLAGS", "")
    if n == 1 and flag not in flags:  # idempotent: bench_grad re-executes until env matches
        env["XLA_FLAGS"] = (flags + " " + flag).strip()
    return env


def reexec_with_threads(n: int, script: str, argv: list[str]) -> None:
    """Restart ``script`` with thread caps in the environment: pools size themselves when
    their library is imported, and NumPy (hence OpenBLAS) is already imported by then."""
    env = thread_env(n)
    if all(os.environ.get(k) == v for k, v in env.items()):
        return
    os.environ.update(env)
    os.execv(sys.executable, [sys.executable, os.path.abspath(script), *argv])


# --------------------------------------------------------------------------- tables


def fmt_us(us: float) -> str:
    return f"{us:,.1f}" if us < 100 else f"{us:,.0f}"


def fmt_ratio(r: float) -> str:
    return f"{r:.2f}" if r < 10 else f"{r:.0f}"


def markdown_table(header: list[str], rows: list[list[str]], numeric_from: int = 1) -> str:
    """Markdown table; columns from ``numeric_from`` on are right-aligned."""
    align = ["---" if i < numeric_from else "---:" for i in range(len(header))]
    lines = [header, align, *rows]
    return "\n".join("| " + " | ".join(str(c) for c in line) + " |" for line in lines)
