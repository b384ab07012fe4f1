"""Concurrency stress: threads making cold calls of fresh transformations at once.

Every round makes a fresh `tracejit.function` / `value_and_grad` of each
program (so every call in the round traces), starts `threads` threads at one
barrier and has each call every program on its own signatures (float32 and
float64, several batch sizes, 1 included). Checked after every round:
- every result is an array (never a tracer of another thread's trace) equal
  to the serial result of the same call (to rounding: the interpreter and the
  compiled kernel may serve different threads);
- once every thread has joined, no rebinding of numpy_build is installed
  (`np.array` & co., SciPy's entry points) and no trace is open.

    python benchmarks/stress_threads.py                  # long mode: 60 rounds x 3 compile modes
    python benchmarks/stress_threads.py --rounds 5 --threads 4

tests/test_threads.py runs a few rounds of it in CI.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tracejit  # noqa: E402
from tracejit.numpy import build as numpy_build  # noqa: E402
from tracejit.trace import tracer as trace  # noqa: E402

# (compile mode, compile worker) pairs: interpreter until a background compile in
# the worker process lands; the same in a thread of this process; compile first
MODES = {"worker": ("background", "1"), "thread": ("background", "0"), "sync": ("sync", "0")}
BATCHES = (1, 2, 3, 5)
DTYPES = (np.float64, np.float32)


def _loss(w, x):
    return np.sum(np.tanh(x @ w) ** 2) + 0.5 * np.sum(w * w)


def _built(w, x):  # np.array of tracers: reaches numpy_build's rebinding
    rows = np.array([np.sum(x, axis=0), np.max(x, axis=0)])
    return np.sum(np.exp(-rows) @ w)


def _elementwise(w, x):
    return np.sqrt(1.0 + x * x) * np.log1p(np.abs(x)) + np.sum(w)


PROGRAMS = {
    "value_and_grad": lambda: tracejit.value_and_grad(_loss),
    "grad_of_array": lambda: tracejit.grad(_built),
    "function": lambda: tracejit.function(_elementwise),
}


def signatures(thread: int, batches=BATCHES) -> list[tuple]:
    """(dtype, batch) pairs: neighbouring threads share some, so traces of one
    signature race as well as traces of different ones."""
    return [(DTYPES[(thread + k) % 2], batches[(thread + k) % len(batches)]) for k in range(2)]


def arguments(dtype, batch: int) -> tuple:
    rng = np.random.default_rng(batch)
    w = rng.standard_normal((3, 2)).astype(dtype)
    x = rng.standard_normal((batch, 3)).astype(dtype)
    return w, x


def serial_results(batches=BATCHES) -> dict:
    """(program, dtype, batch) -> the result of one call on this thread alone
    (through the interpreter: the reference costs no compile)."""
    out = {}
    saved = os.environ.get("TRACEJIT_DISABLE_JIT")
    os.environ["TRACEJIT_DISABLE_JIT"] = "1"
    try:
        for name, make in PROGRAMS.items():
            fn = make()
            for dtype in DTYPES:
                for batch in batches:
                    out[name, np.dtype(dtype).name, batch] = fn(*arguments(dtype, batch))
    finally:
        if saved is None:
            os.environ.pop("TRACEJIT_DISABLE_JIT")
        else:
            os.environ["TRACEJIT_DISABLE_JIT"] = saved
    return out


def installed_rebindings() -> list[str]:
    """The rebindings still in place (none may be once every trace has closed)."""
    return [f"{getattr(owner, '__name__', type(owner).__name__)}.{name}"
            for owner, name, wrapper, *_ in numpy_build.REBINDINGS.entries
            if getattr(owner, name, None) is wrapper]


def check_result(got, expected, where: str) -> None:
    got_leaves = got if isinstance(got, tuple) else (got,)
    expected_leaves = expected if isinstance(expected, tuple) else (expected,)
    for g, e in zip(got_leaves, expected_leaves):
        if not isinstance(g, (np.ndarray, np.generic)):
            raise AssertionError(f"{where}: returned a {type(g).__name__}, not an array")
        rtol = 1e-5 if np.asarray(e).dtype == np.float32 else 1e-12
        np.testing.assert_allclose(g, e, rtol=rtol, atol=rtol, err_msg=where)


def one_round(threads: int, expected: dict, batches=BATCHES) -> int:
    """Run one round; returns how many calls it checked."""
    fns = {name: make() for name, make in PROGRAMS.items()}
    barrier = threading.Barrier(threads)
    results: list = [None] * threads

    def work(thread: int) -> None:
        calls = [(name, dtype, batch) for dtype, batch in signatures(thread, batches)
                 for name in (list(fns)[thread % 3:] + list(fns)[:thread % 3])]
        try:
            barrier.wait()
            results[thread] = [(call, fns[call[0]](*arguments(*call[1:]))) for call in calls]
        except BaseException as err:  # reported by the main thread
            results[thread] = err

    workers = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    checked = 0
    for thread, got in enumerate(results):
        if isinstance(got, BaseException):
            raise AssertionError(f"thread {thread} raised {type(got).__name__}: {got}") from got
        for (name, dtype, batch), value in got:
            where = f"thread {thread}: {name}({np.dtype(dtype).name}, batch {batch})"
            check_result(value, expected[name, np.dtype(dtype).name, batch], where)
            checked += 1
    left = installed_rebindings()
    if left or trace.tracing_thread:
        raise AssertionError(f"after every trace closed: rebindings {left} still installed, "
                             f"traces open on threads {trace.tracing_thread}")
    for fn in fns.values():
        fn.wait()  # a background compile must not outlive its round's checks
    return checked


@contextlib.contextmanager
def compile_mode(mode: str):
    compile_, worker = MODES[mode]
    saved = {k: os.environ.get(k) for k in ("TRACEJIT_COMPILE", "TRACEJIT_COMPILE_WORKER")}
    os.environ["TRACEJIT_COMPILE"], os.environ["TRACEJIT_COMPILE_WORKER"] = compile_, worker
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def stress(rounds: int, threads: int, modes=tuple(MODES), batches=BATCHES) -> dict:
    """mode -> calls checked; raises AssertionError at the first wrong result."""
    expected = serial_results(batches)
    checked = {}
    with warnings.catch_warnings():  # fresh objects every round, on purpose
        warnings.simplefilter("ignore", tracejit.RetraceWarning)
        for mode in modes:
            with compile_mode(mode):
                checked[mode] = sum(one_round(threads, expected, batches)
                                    for _ in range(rounds))
    return checked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--modes", nargs="*", default=list(MODES), choices=list(MODES))
    args = parser.parse_args()
    start = time.perf_counter()
    checked = stress(args.rounds, args.threads, args.modes)
    print(f"{args.rounds} rounds x {args.threads} threads: "
          + ", ".join(f"{mode} {n} calls" for mode, n in checked.items())
          + f" all arrays equal to the serial results; no rebinding left installed "
            f"({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
