"""Profiling: what the JIT costs and what it buys, per function and signature.

    report = tracejit.profile(loss, params, x, y)   # or profile(tracejit.grad(loss), ...)
    print(report); report.speedup, report.break_even_calls, report.as_dict()

    with tracejit.profiler() as prof:               # every tracejit function called inside
        for batch in batches: train_step(...)
    print(prof); prof.as_dict(); prof.export_chrome_trace("trace.json")

A profiler observes the compiler's events (events.py): traces with their
reason, passes, code generation, compiles with Numba's phase times and where
the machine code came from, calls served by the interpreter and by the
kernel. Off, it costs nothing: compiled calls run untouched. On, each compiled
call goes through a timing wrapper (`profiler_overhead_us` in `as_dict()`).

The eager time is the NumPy reference interpreter running the same program:
what the code costs without the JIT. It, the bare Numba kernel and (where
needed) the call itself are timed once per row when a table is first made,
on the inputs of the row's first call.
"""

from __future__ import annotations

import gc
import math
import statistics
import threading
import time
import weakref
from threading import get_ident
from time import perf_counter

from ..core.version import __version__
from ..observe import events, log

PAUSE = 0.2  # s of sleep before each timed sample of profile(): BLAS threads spin after a call
TABLE_PAUSE = 0.05  # the same when a profiler's table measures its rows
CALL_LIMIT = 100_000  # calls per row kept (for the median and the timeline); counts keep all
MEASURE_SECONDS = 0.1  # per quantity and row when a table measures eager and bare times


class Report:
    """One function and signature: its trace, compile, calls and speed.

    Times are seconds unless the name ends in `_us`. `speedup` is the eager
    time over the compiled call; `break_even_calls` the number of calls after
    which the one-time cost (trace, passes, code generation, compile) has been
    repaid by what each call saves against eager."""

    def __init__(self, kernel, name: str, kind: str = "function"):
        self._kernel = weakref.ref(kernel)
        self.name, self.kind = name, kind
        self.signature = ""
        self.reason = None  # log.Reason, or None if traced before profiling began
        self.trace = None  # events.TraceRecord
        self.compiles: list = []  # events.CompileRecord
        self.interpreted_calls = self.kernel_calls = 0
        self.interpreted_s = 0.0
        self.calls: list = []  # (start, end, interpreted, thread id) of the first CALL_LIMIT
        self.kernel_s_beyond = 0.0  # kernel seconds of the calls beyond CALL_LIMIT
        self.leaves = None  # the first call's inputs, for measuring
        self.call_us = self.call_iqr_us = None
        self.eager_us = self.bare_us = self.python_us = None
        self.call_measured = "kernel calls"  # what call_us times
        self.profiler = None  # set by profile(): the session, for its timeline
        self._ir = None

    # ------------------------------------------------------------ derived numbers
    @property
    def kernel(self):
        return self._kernel()

    @property
    def kernel_s(self) -> float:
        return self.kernel_s_beyond + sum(e - s for s, e, interpreted, _ in self.calls
                                          if not interpreted)

    @property
    def samples(self) -> list:
        """Durations of the kernel calls kept, in seconds."""
        return [e - s for s, e, interpreted, _ in self.calls if not interpreted]

    @property
    def first_call_end(self):
        return self.calls[0][1] if self.calls else None

    @property
    def traces(self) -> int:
        return int(self.trace is not None)

    @property
    def trace_s(self) -> float:
        return self.trace.traced - self.trace.start if self.trace else 0.0

    @property
    def passes_s(self) -> float:
        return self.trace.end - self.trace.traced if self.trace else 0.0

    def _loads(self) -> list:
        """The compiles that made machine code ready: from Numba or its disk
        cache, or from memory for a new kernel (code generated, then perhaps
        a wait for another compile holding the cache's lock)."""
        return [c for c in self.compiles
                if c.source in ("compiled", "disk") or c.codegen_end is not None]

    @property
    def compile_s(self) -> float:
        """Code generation plus Numba (compile or disk load), over all loads."""
        return sum(c.end - c.start for c in self._loads())

    @property
    def codegen_s(self) -> float:
        return sum(c.codegen_end - c.start for c in self.compiles if c.codegen_end)

    @property
    def phases(self) -> dict:
        merged: dict = {}
        for record in self._loads():
            for name, seconds in record.phases.items():
                merged[name] = merged.get(name, 0.0) + seconds
        return merged

    @property
    def generated(self) -> tuple[int, int]:
        """(lines of the kernel's source, shared nest modules it calls)."""
        first = next((c for c in self.compiles if c.codegen_end), None)
        return (first.source_lines, first.helpers) if first else (0, 0)

    def count(self, source: str) -> int:
        return sum(c.source == source for c in self.compiles)

    @property
    def source(self) -> str:
        """Where the machine code came from: fresh, disk, memory; interpreter
        (TRACEJIT_DISABLE_JIT), failed, or compiling (not ready yet)."""
        for record in self.compiles:
            if record.error is not None:
                return "failed"
            return {"compiled": "fresh"}.get(record.source, record.source)
        kernel = self.kernel
        if kernel is not None and getattr(kernel, "interpret", False):
            return "interpreter"
        return "compiling" if kernel is None or kernel.fn is None else "memory"

    @property
    def error(self):
        return next((c.error for c in self.compiles if c.error), None)

    @property
    def first_call_s(self):
        """From the start of the trace to the first result."""
        if self.trace is None or self.first_call_end is None:
            return None
        return self.first_call_end - self.trace.start

    @property
    def kernel_ready_s(self):
        """From the start of the trace to machine code ready in this process."""
        ready = [c.end for c in self.compiles if c.error is None and c.worker_seconds is None]
        return ready[0] - self.trace.start if self.trace and ready else None

    @property
    def setup_s(self) -> float:
        return self.trace_s + self.passes_s + self.compile_s

    @property
    def total_s(self) -> float:
        return self.setup_s + self.interpreted_s + self.kernel_s

    @property
    def overhead_us(self):
        """Python around the bare Numba kernel: dispatch and output building."""
        if self.call_us is None or self.bare_us is None:
            return None
        return max(self.call_us - self.bare_us, 0.0)

    @property
    def speedup(self):
        if not self.eager_us or not self.call_us:
            return None
        return self.eager_us / self.call_us

    @property
    def break_even_calls(self):
        if self.eager_us is None or self.call_us is None:
            return None
        saving = (self.eager_us - self.call_us) * 1e-6
        if saving <= 0:
            return None  # never: the kernel is not faster than eager
        return math.ceil(self.setup_s / saving)

    @property
    def ir_eqns(self) -> dict:
        """Equation counts before and after the passes: "total" (what was
        compiled: forward and adjoint for a transformation) and "forward" (the
        function alone, optimised on its own); "adjoint" is their difference."""
        if self.trace is None:
            return {}
        if self._ir is None:
            total = (len(self.trace.program.eqns), len(self.trace.optimized.eqns))
            forward = self.trace.forward
            self._ir = {"total": total}
            if forward is not None:
                from ..transforms.pipeline import run_passes

                fwd = (len(forward.eqns), len(run_passes(forward).eqns))
                self._ir = {"forward": fwd, "adjoint": (total[0] - fwd[0], total[1] - fwd[1]),
                            "total": total}
        return self._ir

    # ------------------------------------------------------------ measuring
    def measure(self, seconds: float = MEASURE_SECONDS, call=None, pause: float = None) -> Report:
        """Time what is still unknown, on the first call's inputs: `call` (the
        full call) or, if no kernel call was recorded, the entry's call,
        interleaved with the bare Numba kernel; then the eager interpreter.
        Returns self."""
        kernel = self.kernel
        if kernel is None or self.leaves is None:
            return self
        leaves, consts = self.leaves, kernel.consts
        timed = {}
        if call is not None:
            timed["call"], self.call_measured = call, "full call, measured"
        elif self.call_us is None:
            self._from_samples()
            entry_call = self._untimed_call()
            if self.call_us is None and entry_call is not None:
                timed["call"] = lambda: entry_call(leaves)
                self.call_measured = "entry call, measured"
        if kernel.fn is not None and not getattr(kernel, "interpret", False) and (
                timed or self.bare_us is None):
            fn = kernel.fn
            timed["bare"] = lambda: fn(*leaves, *consts)
        if timed:
            _pause(pause)
            timed = _timings(timed, seconds)
            self.bare_us = timed["bare"][0] if "bare" in timed else self.bare_us
            if "call" in timed:
                self.call_us, self.call_iqr_us = timed["call"]
        if self.eager_us is None:
            _pause(pause)
            self.eager_us = _median_us(lambda: kernel.interpreted(leaves), seconds)
        return self

    def _from_samples(self) -> None:
        steady = self.samples[1:]  # the first kernel call may still pay one-time costs
        if len(steady) >= 3:
            self.call_us = statistics.median(steady) * 1e6
            self.call_iqr_us = _iqr(steady) * 1e6

    def _untimed_call(self):
        entry = self.trace.entry if self.trace else None
        return getattr(entry, "untimed_call", None)

    # ------------------------------------------------------------ output
    def as_dict(self) -> dict:
        def ms(seconds):
            return None if seconds is None else round(seconds * 1e3, 3)

        return {
            "function": self.name, "kind": self.kind, "signature": self.signature,
            "reason": self.reason.text if self.reason else None,
            "reason_kind": self.reason.kind if self.reason else None,
            "traces": self.traces, "compiles": self.count("compiled"),
            "disk_loads": self.count("disk"), "memory_hits": self.count("memory"),
            "source": self.source, "compile_error": self.error,
            "trace_ms": ms(self.trace_s), "passes_ms": ms(self.passes_s),
            "codegen_ms": ms(self.codegen_s), "kernel_source_lines": self.generated[0],
            "shared_nest_modules": self.generated[1], "compile_s": _round(self.compile_s),
            "numba_phases_s": {k: _round(v) for k, v in self.phases.items()},
            "ir_eqns": {k: list(v) for k, v in self.ir_eqns.items()},
            "first_call_s": _round(self.first_call_s),
            "kernel_ready_s": _round(self.kernel_ready_s),
            "interpreted_calls": self.interpreted_calls,
            "interpreted_s": _round(self.interpreted_s),
            "kernel_calls": self.kernel_calls, "kernel_s": _round(self.kernel_s),
            "call_us": _round(self.call_us), "call_iqr_us": _round(self.call_iqr_us),
            "call_measured": self.call_measured,
            "bare_kernel_us": _round(self.bare_us), "overhead_us": _round(self.overhead_us),
            "eager_us": _round(self.eager_us), "python_us": _round(self.python_us),
            "speedup": _round(self.speedup), "break_even_calls": self.break_even_calls,
            "setup_s": _round(self.setup_s), "total_s": _round(self.total_s),
        }

    def __str__(self) -> str:
        from .text import report_text

        return report_text(self)

    def export_chrome_trace(self, path) -> None:
        """The timeline of the session that made this report (see Profiler)."""
        if self.profiler is None:
            raise ValueError("only reports made by tracejit.profile() have a timeline")
        self.profiler.export_chrome_trace(path)

    def __repr__(self) -> str:
        return f"<tracejit.Report {self.name} {self.signature} source={self.source}>"


class Profiler:
    """Records every tracejit function called while active; see `profiler()`."""

    def __init__(self):
        self._reports: dict = {}  # kernel -> Report, in order of first appearance
        self._by_entry: dict = {}  # entry -> Report, for the calls
        self._dispatchers: weakref.WeakSet = weakref.WeakSet()
        self._measured = False
        self._numba = events.numba_recorder()
        self.numba_spans: list = []
        self.start = self.stop = None
        self.thread = (None, threading.main_thread().ident, "MainThread")

    def __enter__(self) -> Profiler:
        self.start = perf_counter()
        self.numba_spans = self._numba.__enter__()
        events.start_recording(self)
        return self

    def __exit__(self, *exc) -> None:
        events.stop_recording(self)
        self._numba.__exit__(*exc)
        self.stop = perf_counter()

    # ------------------------------------------------------------ events
    def on_trace(self, record) -> None:
        self._dispatchers.add(record.dispatcher)
        report = self._report(record.entry.kernel, record.dispatcher.name,
                              getattr(record.dispatcher, "kind", "function"))
        report.trace, report.reason = record, record.reason
        self._by_entry[record.entry] = report
        report.signature = log.signature_text(record)
        report.leaves = record.leaves

    def on_compile(self, record) -> None:
        self._report(record.kernel, record.kernel.name).compiles.append(record)

    def on_kernel_call(self, entry, leaves, start: float, end: float) -> None:
        """The hot one while recording: kept to a lookup, a count and an append."""
        report = self._by_entry.get(entry)
        if report is None:
            report = self._first_call(entry, leaves)
        report.kernel_calls += 1
        calls = report.calls
        if len(calls) < CALL_LIMIT:
            calls.append((start, end, False, get_ident()))
        else:
            report.kernel_s_beyond += end - start

    def on_interpreted_call(self, entry, leaves, start: float, end: float) -> None:
        report = self._by_entry.get(entry) or self._first_call(entry, leaves)
        report.interpreted_calls += 1
        report.interpreted_s += end - start
        if len(report.calls) < CALL_LIMIT:
            report.calls.append((start, end, True, get_ident()))

    def _first_call(self, entry, leaves) -> Report:
        """The report of an entry seen first by a call (traced before profiling)."""
        report = self._by_entry[entry] = self._report(entry.kernel, entry.kernel.name)
        if report.leaves is None:
            report.leaves = list(leaves)
            report.signature = " ".join(log._leaf_text(leaf) for leaf in leaves)
        return report

    def _report(self, kernel, name: str, kind: str = "function") -> Report:
        report = self._reports.get(kernel)
        if report is None:
            report = self._reports[kernel] = Report(kernel, name, kind)
        return report

    # ------------------------------------------------------------ results
    @property
    def reports(self) -> list[Report]:
        """One per function and signature, the most expensive first (call
        `measure()` first for the eager and bare-kernel times)."""
        return sorted(self._reports.values(), key=lambda r: r.total_s, reverse=True)

    def measure(self) -> Profiler:
        """Time, once, what the calls did not show: each row's eager
        interpreter and bare kernel (about 0.1 s per row); the table and
        `as_dict()` do this themselves."""
        if not self._measured:
            self._measured = True
            for report in self._reports.values():
                report.measure(pause=TABLE_PAUSE)
        return self

    def wait(self) -> None:
        """Block until the background compiles of the functions seen are done."""
        for dispatcher in list(self._dispatchers):
            dispatcher.wait()

    def as_dict(self) -> dict:
        end = self.stop if self.stop is not None else perf_counter()
        self.measure()
        return {"tracejit": __version__,
                "elapsed_s": _round(end - self.start) if self.start else None,
                "profiler_overhead_us": _round(wrapper_overhead_us()),
                "reports": [r.as_dict() for r in self.reports]}

    def export_chrome_trace(self, path) -> None:
        """Write the timeline in Chrome's trace event format (Perfetto,
        chrome://tracing): traces, passes, code generation and compiles on
        their threads, interpreted and kernel calls as spans."""
        from .timeline import write_chrome_trace

        write_chrome_trace(self, path)

    def __str__(self) -> str:
        from .text import profiler_text

        return profiler_text(self.measure())


def profiler() -> Profiler:
    """`with tracejit.profiler() as prof:` records every tracejit function
    called inside; `print(prof)` shows one row per function and signature."""
    return Profiler()


def profile(fn, *args, seconds: float = 0.5, **kwargs) -> Report:
    """Profile one call signature of `fn` (a tracejit function or
    transformation; a plain Python function is wrapped with
    `tracejit.function`): the first call and the calls a loop would make
    until the kernel serves them, then the steady state of the call, the bare
    kernel, the eager interpreter and, for a plain function, the Python
    function itself, about `seconds` in all."""
    from ..backend.compiler import Dispatcher
    from ..frontend.api import Function, function

    target = fn if isinstance(fn, Dispatcher) else function(fn)
    with Profiler() as prof:
        target(*args, **kwargs)
        while _waiting_for_kernel(prof):
            target(*args, **kwargs)
    report = max(prof._reports.values(), key=lambda r: r.kernel_calls + r.interpreted_calls)
    report.profiler = prof
    share = seconds / 3
    report.measure(share, call=lambda: target(*args, **kwargs))
    if isinstance(target, Function):
        python = target.fn
        _pause()
        try:
            report.python_us = _median_us(lambda: python(*args, **kwargs), share)
        except Exception:  # noqa: BLE001 - code that only runs traced has no plain time
            report.python_us = None
    prof._measured = True
    for other in prof._reports.values():
        other.measure(share)
    return report


def _waiting_for_kernel(prof: Profiler) -> bool:
    """Keep calling as a loop would while the kernel compiles in the background."""
    from ..backend.startup import jit_disabled

    if jit_disabled():
        return False
    return not any(r.kernel_calls or r.error for r in prof._reports.values())


# ----------------------------------------------------------------- timing

def _pause(seconds: float | None = None) -> None:
    seconds = PAUSE if seconds is None else min(seconds, PAUSE)
    if seconds:
        time.sleep(seconds)


def _batch_size(fn) -> tuple[int, float]:
    """Calls per batch (a batch takes >= 1 ms) and that batch's seconds per call."""
    fn()
    number = 1
    while True:
        start = perf_counter()
        for _ in range(number):
            fn()
        elapsed = perf_counter() - start
        if elapsed >= 1e-3 or number >= 1 << 16:
            return number, elapsed / number
        number *= 2


def _timings(fns: dict, seconds: float) -> dict:
    """{name: (median, interquartile range)} in µs per call of each `fn()`,
    batches interleaved round-robin so that every one sees the same machine
    load (their difference is what matters); >= 5 batches each (3 for slow
    calls), in about `seconds` in all."""
    plans = {name: _batch_size(fn) for name, fn in fns.items()}
    means = {name: [per_call] for name, (_, per_call) in plans.items()}
    round_s = sum(number * per_call for number, per_call in plans.values())
    least = 5 if 5 * round_s <= seconds else 3  # slow calls: three rounds, over budget
    deadline = perf_counter() + seconds
    enabled = gc.isenabled()
    gc.disable()  # a collection of someone else's garbage would land in one batch
    try:
        rounds = 1
        while rounds < least or (perf_counter() < deadline and rounds < 500):
            for name, fn in fns.items():
                number = plans[name][0]
                start = perf_counter()
                for _ in range(number):
                    fn()
                means[name].append((perf_counter() - start) / number)
            rounds += 1
    finally:
        if enabled:
            gc.enable()
    return {name: (statistics.median(m) * 1e6, _iqr(m) * 1e6) for name, m in means.items()}


def _timing(fn, seconds: float) -> tuple[float, float]:
    """(median, interquartile range) in µs per call."""
    return _timings({"": fn}, seconds)[""]


def _median_us(fn, seconds: float) -> float:
    return _timing(fn, seconds)[0]


def _iqr(values) -> float:
    if len(values) < 4:
        return max(values) - min(values)
    q = statistics.quantiles(values, n=4)
    return q[2] - q[0]


def _round(value, digits: int = 4):
    if value is None:
        return None
    return float(f"{value:.{digits}g}")


_wrapper_overhead: list = []


class _NullKernel:
    name = "calibration"
    consts = ()
    fn = None


class _NullEntry:
    kernel = _NullKernel()


def wrapper_overhead_us() -> float:
    """What a profiler adds to a compiled call: its timing wrapper and record
    keeping around a call that does nothing (measured once per process)."""
    if not _wrapper_overhead:
        def call(leaves):
            return leaves

        entry, leaves = _NullEntry(), [None]
        timed = events._timed(entry, call, [Profiler()])
        wrapped = _median_us(lambda: timed(leaves), 0.02)
        _wrapper_overhead.append(max(wrapped - _median_us(lambda: call(leaves), 0.02), 0.0))
    return _wrapper_overhead[0]
