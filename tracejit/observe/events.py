"""Compiler events: what the compiler tells its observers (the profiler, the
compile log, the retrace warning), in a handful of one-line calls.

The interface. Times are `time.perf_counter()` seconds, which on Linux and
macOS is the system-wide monotonic clock, so timestamps taken in a compile
worker process compare with the caller's.

    t = events.trace_begin(dispatcher, args, statics, abstract, leaves)
        A call missed every table and tracing starts. `abstract` is the
        size-free key `(treedef, statics, *compiler.abstract_signature(leaf))`;
        the reason for the trace is worked out here, against the signatures
        this dispatcher traced before (see log.py).
    events.forward_traced(program)
        A transformation traced the function it transforms (its forward
        program, before differentiation): gives the IR size of the forward part.
    events.trace_end(t, program)       traced and transformed, before the passes
    events.prepared(t, entry)          passes done, the Entry exists
    c = events.compile_begin(kernel)   code generation and compilation start
    events.codegen_end(c, source, helpers)
        The kernel's source exists (and `helpers` shared modules it calls).
    events.loaded(c)                   its modules are written and imported
    events.compile_end(c, source, fn, args)
        Machine code is ready; `source` is "memory", "disk" or "compiled";
        `fn` is the Numba dispatcher and `args` the arguments it was compiled
        for (Numba's phase times are read from fn.overloads[sig].metadata).
    events.compile_failed(kernel, error)
        The compile that `compile_begin(kernel)` started raised.
    events.compiled_elsewhere(c, reply)
        The compile worker process answered (worker.compile_elsewhere): the
        record closes with its phases and wall time; None (no worker, code
        already on disk, or a failure) leaves the record open, and the
        caller's own `compile_begin` for the kernel continues it.
    entry.call = events.kernel_call(entry, call)
        Installing the compiled call of an entry. Returns `call`, or while a
        profiler records, a timing wrapper around it. This is how the hot path
        (Dispatcher.call_flat -> entry.call) costs nothing when no profiler is
        active: starting a profiler swaps the wrapper into every compiled
        entry, stopping it swaps the plain call back.
    if events.recording: events.interpreted_call(entry, leaves, start, end)
        A call served by the NumPy interpreter (while the kernel compiles, or
        with TRACEJIT_DISABLE_JIT=1).

The worker process (worker.py) answers with its wall time and the Numba
pass times of its compile; a worker that also sends `start`, `end` (its
perf_counter), `pid`, `tid` and `numba_spans` (from `with numba_recorder()
as spans:` around its compile; plain tuples) gets its own exact process track
in the timeline: pass those to `compile_end(c, source, phases=..., start=...,
end=..., pid=..., tid=..., numba_spans=...)`. The caller's load of the result
from the disk cache is a second compile record (source "disk"); the report
adds both.

What observers read from the compiler's objects: `entry.kernel`, `entry.call`;
`kernel.name`, `kernel.program`, `kernel.fn`, `kernel.consts`,
`kernel.interpreted(leaves)`; `dispatcher.name`, `dispatcher.call_flat`,
`dispatcher.wait()`.
"""

from __future__ import annotations

import os
import threading
import weakref
from time import perf_counter

from numba.core import event as numba_event

from ..core import forksafe
from . import log

recording = False  # a profiler is active: compiled calls go through timing wrappers
_recorders: list = []  # active profilers: on_trace, on_compile, on_*_call(...)
_entries: weakref.WeakSet = weakref.WeakSet()  # every entry whose call may be wrapped
_lock = threading.RLock()
forksafe.renew_after_fork(globals(), "_lock", threading.RLock)
_tracing = threading.local()  # the traces in progress on this thread (nested calls)
_open_compiles: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # kernel -> record


class TraceRecord:
    """One trace: who, why, how long, how big. Filled in as the stages pass."""

    __slots__ = ("dispatcher", "args", "statics", "abstract", "leaves", "reason", "start",
                 "traced", "end", "program", "optimized", "forward", "entry", "thread")

    def __init__(self, dispatcher, args, statics, abstract, leaves):
        self.dispatcher = dispatcher
        self.args, self.statics, self.abstract, self.leaves = args, statics, abstract, leaves
        self.reason = None
        self.program = self.optimized = self.forward = self.entry = None
        self.thread = _thread()
        self.start = perf_counter()
        self.traced = self.end = None


class CompileRecord:
    """One compile of one kernel: code generation, then Numba (or its caches)."""

    __slots__ = ("kernel", "start", "codegen_end", "end", "source", "phases", "thread",
                 "numba_spans", "error", "source_lines", "helpers", "loaded", "continued",
                 "worker_seconds")

    def __init__(self, kernel):
        self.kernel = kernel
        self.thread = _thread()
        self.start = perf_counter()
        self.codegen_end = self.loaded = self.end = None
        self.source = None
        self.phases: dict = {}
        self.numba_spans: list = []
        self.error = None
        self.source_lines = self.helpers = 0
        self.continued = False  # the worker did not compile: this process goes on with it
        self.worker_seconds = None  # the compile worker's own wall time


def _notify(method: str, log_event, record) -> None:
    """Tell the log and every active profiler; their failures never reach the caller."""
    _safely(log_event, record)
    for recorder in list(_recorders):
        _safely(getattr(recorder, method), record)


def _safely(fn, *args):
    """Observers must not break a trace or a compile: a failure is logged, not raised."""
    try:
        return fn(*args)
    except Warning:  # a warning turned into an error (-W error) is the user's to see
        raise
    except Exception:  # noqa: BLE001
        log.logger.exception("tracejit: an observer of the compiler failed in %s",
                             getattr(fn, "__qualname__", fn))
        return None


def _thread() -> tuple:
    """(pid, thread id, thread name): the track an event belongs on."""
    current = threading.current_thread()
    return (os.getpid(), current.ident, current.name)


# ----------------------------------------------------------------- tracing

def trace_begin(dispatcher, args, statics, abstract, leaves) -> TraceRecord:
    stack = _stack()
    if not _tracing_now():
        stack.clear()  # left behind by traces that raised
    record = TraceRecord(dispatcher, args, statics, abstract, list(leaves))
    record.reason = _safely(log.reason_for, record) or log.Reason("first", "unknown")
    stack.append(record)
    return record


def forward_traced(program) -> None:
    stack = _stack()
    if stack:
        stack[-1].forward = program


def trace_end(record: TraceRecord, program) -> None:
    record.traced = perf_counter()
    record.program = program


def prepared(record: TraceRecord, entry) -> None:
    record.end = perf_counter()
    record.entry = entry
    record.optimized = entry.kernel.program
    stack = _stack()
    if record in stack:
        del stack[stack.index(record):]
    _entries.add(entry)
    _notify("on_trace", log.traced, record)


def _stack() -> list:
    stack = getattr(_tracing, "stack", None)
    if stack is None:
        stack = _tracing.stack = []
    return stack


def _tracing_now() -> bool:
    from ..trace.tracer import current_builder

    return current_builder() is not None


# ----------------------------------------------------------------- compiling

def compile_begin(kernel) -> CompileRecord:
    record = _open_compiles.get(kernel)
    if record is not None and record.continued:
        record.continued = False
        return record
    record = _open_compiles[kernel] = CompileRecord(kernel)
    return record


def codegen_end(record: CompileRecord, source: str = "", helpers: int = 0) -> None:
    if record.codegen_end is None:  # a continued record has it already
        record.codegen_end = perf_counter()
        record.source_lines, record.helpers = source.count("\n"), helpers


def loaded(record: CompileRecord) -> None:
    record.loaded = perf_counter()


def compile_end(record: CompileRecord, source: str, fn=None, args=None, *, phases=None,
                start=None, end=None, pid=None, tid=None, numba_spans=None) -> None:
    """Machine code is ready. In this process pass the Numba dispatcher and the
    arguments; from a worker pass what it measured (see the module docstring)."""
    record.end = perf_counter() if end is None else end
    record.start = record.start if start is None else start
    record.source = source
    if pid is not None or tid is not None:
        record.thread = (pid, tid, f"compile worker {pid}")
    if phases is None and fn is not None and source == "compiled":
        phases = numba_phases(fn, args)
    record.phases = phases or {}
    record.numba_spans = list(numba_spans or ())
    _open_compiles.pop(record.kernel, None)
    _notify("on_compile", log.compiled, record)


def compiled_elsewhere(record: CompileRecord, reply) -> None:
    """The compile worker's answer: {"where", "seconds", "phases": {pass: s}}."""
    if reply is None:
        record.continued = True
        return
    record.worker_seconds = reply.get("seconds")
    compile_end(record, reply.get("where", "compiled"),
                phases=group_pass_seconds(reply.get("phases") or {}))


def compile_failed(kernel, error: BaseException) -> None:
    record = _open_compiles.pop(kernel, None) or CompileRecord(kernel)
    record.end = perf_counter()
    record.error = f"{type(error).__name__}: {error}"
    _notify("on_compile", log.compiled, record)


def numba_phases(fn, args) -> dict:
    """Seconds per phase of the Numba compile of `fn` for `args`, as Numba
    reports them in `fn.overloads[sig].metadata` (empty for code loaded from
    Numba's disk cache, which keeps no metadata). Plain floats: picklable."""
    import numba

    sig = tuple(numba.typeof(a) for a in args)
    result = fn.overloads.get(sig)
    metadata = getattr(result, "metadata", None) or {}
    return group_pipeline_times(metadata.get("pipeline_times", {}), metadata.get("timers", {}))


# Numba's nopython pipeline in order; pass lists differ between pipelines (the
# parallel one has more) but all have type inference and native lowering.
PHASES = ("untyped passes", "type inference", "typed passes", "lowering + LLVM", "backend")


def _phase_of(name: str, previous: int) -> int:
    if "type_inference" in name:
        return max(previous, 1)
    if "native" in name and "lowering" in name:  # native_lowering, native_parfor_lowering
        return max(previous, 3)
    return previous + 1 if previous in (1, 3) else previous


def group_pass_seconds(passes: dict) -> dict:
    """{pass name: seconds} in pipeline order (a worker's report) summed into PHASES."""
    phases, phase = dict.fromkeys(PHASES, 0.0), 0
    for name, seconds in passes.items():
        phase = _phase_of(name, phase)
        phases[PHASES[phase]] += seconds
    return {k: v for k, v in phases.items() if v}


def group_pipeline_times(pipeline_times: dict, timers: dict) -> dict:
    """Numba's per-pass `pipeline_times` summed into PHASES. Type inference
    includes compiling the functions the kernel calls (Numba types a call by
    compiling the callee); "LLVM (callees too)" (Numba's `timers`: the time
    its LLVM lock was held) overlaps the phases."""
    if not pipeline_times:
        return {}
    phases = dict.fromkeys(PHASES, 0.0)
    for passes in pipeline_times.values():
        phase = 0
        for name, t in passes.items():
            phase = _phase_of(name, phase)
            phases[PHASES[phase]] += t.init + t.run + t.finalize
    if timers.get("llvm_lock") is not None:
        phases["LLVM (callees too)"] = float(timers["llvm_lock"])
    return {k: v for k, v in phases.items() if v}


# ----------------------------------------------------------------- calls

def kernel_call(entry, call):
    """The call to install on a compiled entry: `call` itself, or while a
    profiler records, a timing wrapper around it."""
    with _lock:
        _entries.add(entry)
        entry.untimed_call = call
        return _timed(entry, call) if recording else call


def interpreted_call(entry, leaves, start: float, end: float) -> None:
    for recorder in list(_recorders):
        recorder.on_interpreted_call(entry, leaves, start, end)


def _timed(entry, call, recorders=_recorders):
    """The timing wrapper: `recorders` is the live list of active profilers."""
    def timed(leaves):
        if not recorders:  # installed just as the last profiler stopped: heal
            entry.call = call
            return call(leaves)
        start = perf_counter()
        out = call(leaves)
        end = perf_counter()
        for recorder in recorders:
            recorder.on_kernel_call(entry, leaves, start, end)
        return out

    timed.__wrapped__ = call
    return timed


def start_recording(recorder) -> None:
    """Make `recorder` receive events; the first one swaps in the timing wrappers."""
    global recording
    with _lock:
        _recorders.append(recorder)
        if not recording:
            recording = True
            for entry in list(_entries):
                call = getattr(entry, "untimed_call", None)
                if call is not None and entry.call is call:
                    entry.call = _timed(entry, call)


def stop_recording(recorder) -> None:
    global recording
    with _lock:
        if recorder in _recorders:
            _recorders.remove(recorder)
        if recording and not _recorders:
            recording = False
            for entry in list(_entries):
                wrapped = getattr(entry.call, "__wrapped__", None)
                if wrapped is not None and wrapped is getattr(entry, "untimed_call", None):
                    entry.call = wrapped


# ----------------------------------------------------------------- Numba's own events

class numba_recorder:  # noqa: N801 - used as a context manager, like open()
    """Collect Numba's compile and pass events on every thread while active, as
    `(kind, name, start, end, pid, tid)` tuples: kind "compile" (a dispatcher
    compiling; name is its function's qualified name) or "pass" (name
    "<pass> [<qualname>]"). Numba broadcasts these always; listening costs
    microseconds per pass."""

    def __init__(self):
        self.spans: list = []
        self._listener = _NumbaListener(self.spans)

    def __enter__(self) -> list:
        for kind in _NUMBA_KINDS:
            numba_event.register(kind, self._listener)
        return self.spans

    def __exit__(self, *exc) -> None:
        for kind in _NUMBA_KINDS:
            numba_event.unregister(kind, self._listener)


_NUMBA_KINDS = {"numba:compile": "compile", "numba:run_pass": "pass"}


class _NumbaListener(numba_event.Listener):
    def __init__(self, spans: list):
        self.spans = spans
        self.open: dict = {}

    @staticmethod
    def _key(evt) -> tuple:
        data = evt.data or {}
        if evt.kind == "numba:compile":
            name = getattr(getattr(data.get("dispatcher"), "py_func", None), "__qualname__", "?")
        else:
            name = data.get("name", "?")
        return (threading.get_ident(), evt.kind, name)

    def on_start(self, evt) -> None:
        self.open.setdefault(self._key(evt), []).append(perf_counter())

    def on_end(self, evt) -> None:
        key = self._key(evt)
        starts = self.open.get(key)
        if starts:
            self.spans.append((_NUMBA_KINDS[evt.kind], key[2], starts.pop(), perf_counter(),
                               os.getpid(), key[0]))
