"""A profiler session as a timeline in Chrome's trace event format, for
Perfetto (ui.perfetto.dev) and chrome://tracing.

One track per thread (and per process, for compiles in a worker): the calls
of the main thread, interpreted or by the kernel, with the trace and the
passes inside the first call; each compile on its own thread, code generation
then Numba, whose own compiles and phases (from its event stream) nest inside.
The overlap of a background compile with interpreted calls is what to look at.
"""

from __future__ import annotations

import json
import os
import threading

from ..observe.events import PHASES, _phase_of

TIMELINE_LIMIT = 5000  # calls per row written to the timeline


def chrome_trace(prof) -> dict:
    """The session as {"traceEvents": [...]} (complete "X" events in µs)."""
    base = prof.start
    spans: list[dict] = []
    threads: dict = {}
    pid = os.getpid()
    main = threading.main_thread()
    threads[(pid, main.ident)] = main.name

    def span(name, cat, start, end, where, args=None):
        if start is None or end is None:
            return
        ts = round((start - base) * 1e6, 3)
        spans.append({"name": name, "cat": cat, "ph": "X", "ts": ts,
                      "dur": max(round((end - base) * 1e6, 3) - ts, 0.0),
                      "pid": where[0], "tid": where[1], **({"args": args} if args else {})})

    for report in prof._reports.values():
        _report_spans(report, span, threads, pid)
    remote = [s for r in prof._reports.values() for c in r.compiles for s in c.numba_spans]
    _numba_spans(prof.numba_spans + remote, span)  # ours, and those a compile worker sent
    spans.sort(key=lambda e: (e["pid"], e["tid"], e["ts"], -e["dur"]))
    instants = [_first_kernel_call(r, base, pid) for r in prof._reports.values()]
    return {"traceEvents": _metadata(threads, spans, main.ident) + spans
            + [i for i in instants if i], "displayTimeUnit": "ms",
            "otherData": {"producer": "tracejit profiler", "clock": "time.perf_counter"}}


def write_chrome_trace(prof, path) -> None:
    with open(path, "w") as file:
        json.dump(chrome_trace(prof), file)


def _report_spans(report, span, threads, pid) -> None:
    name = report.name
    trace = report.trace
    if trace is not None:
        where = trace.thread[:2]
        threads[where] = trace.thread[2]
        first = report.calls[0] if report.calls else None
        if first is not None and first[3] == where[1] and first[0] >= trace.end:
            span(f"first call {name}", "first call", trace.start, report.first_call_end, where)
        span(f"trace {name}", "trace", trace.start, trace.traced, where,
             {"reason": trace.reason.text, "signature": report.signature})
        span(f"passes {name}", "passes", trace.traced, trace.end, where,
             {"equations": {k: list(v) for k, v in report.ir_eqns.items()}})
    for record in report.compiles:
        if record.source == "memory" and record.error is None:
            continue
        where = record.thread[:2]
        threads[where] = record.thread[2]
        args = {"source": record.source, "error": record.error,
                "numba phases (s)": record.phases}
        elsewhere = record.worker_seconds is not None
        span(f"compile {record.kernel.name}" + (" (worker process)" if elsewhere else ""),
             "compile", record.start, record.end, where, args)
        span("code generation", "codegen", record.start, record.codegen_end, where)
        if elsewhere:
            _worker_spans(record, span, where)
            continue
        span("module write and import", "load", record.codegen_end, record.loaded, where)
        numba = "Numba disk cache" if record.source == "disk" else "Numba compile"
        span(numba, "numba", record.loaded or record.codegen_end or record.start, record.end,
             where)
    for start, end, interpreted, tid in report.calls[:TIMELINE_LIMIT]:
        threads.setdefault((pid, tid), f"thread {tid}")
        kind = "interpreted" if interpreted else "kernel"
        span(f"{name} ({kind})", kind, start, end, (pid, tid))


def _worker_spans(record, span, where) -> None:
    """Waiting for the worker; inside, its own compile (its wall time, ending
    when the answer came: the worker sends no timestamps)."""
    after = record.codegen_end or record.start
    span("module write, worker compile, answer", "worker", after, record.end, where)
    span("Numba compile in the worker", "numba", max(after, record.end - record.worker_seconds),
         record.end, where, {"worker seconds": record.worker_seconds})


def _numba_spans(numba_spans, span) -> None:
    """Numba's dispatcher compiles as spans; its passes merged into PHASES per
    function (consecutive passes of one phase make one span)."""
    groups: dict = {}  # (pid, tid, qualname) -> [phase index, start, end]

    def flush(key):
        group = groups.pop(key, None)
        if group is not None:
            span(f"{PHASES[group[0]]} [{key[2]}]", "numba phase", group[1], group[2], key[:2])

    for kind, name, start, end, pid, tid in sorted(numba_spans, key=lambda s: s[2]):
        if kind == "compile":
            span(f"Numba compiles {name}", "numba", start, end, (pid, tid))
            continue
        pass_name, _, qualname = name.partition(" [")
        key = (pid, tid, qualname.rstrip("]"))
        group = groups.get(key)
        previous = 0 if group is None or "translate_bytecode" in pass_name else group[0]
        phase = _phase_of(pass_name, previous)
        if group is not None and group[0] == phase and start >= group[2]:
            group[2] = end
        else:
            flush(key)
            groups[key] = [phase, start, end]
    for key in list(groups):
        flush(key)


def _first_kernel_call(report, base, pid):
    first = next((s for s in report.calls if not s[2]), None)
    if first is None or report.interpreted_calls == 0:
        return None
    return {"name": f"{report.name}: kernel takes over", "cat": "switch", "ph": "i", "s": "t",
            "ts": round((first[0] - base) * 1e6, 3), "pid": pid, "tid": first[3]}


def _metadata(threads: dict, spans: list, main_tid) -> list:
    seen = {(e["pid"], e["tid"]) for e in spans} | set(threads)
    events = [{"name": "process_name", "ph": "M", "pid": pid, "tid": 0,
               "args": {"name": "tracejit" if pid == os.getpid() else f"compile worker {pid}"}}
              for pid in sorted({p for p, _ in seen})]
    for order, (pid, tid) in enumerate(sorted(seen, key=lambda k: (k[0], k[1] != main_tid))):
        name = threads.get((pid, tid), f"thread {tid}")
        label = "main thread" if tid == main_tid else f"compile: {name}" if "compile" in name \
            else name
        events.append({"name": "thread_name", "ph": "M", "pid": pid, "tid": tid,
                       "args": {"name": label}})
        events.append({"name": "thread_sort_index", "ph": "M", "pid": pid, "tid": tid,
                       "args": {"sort_index": order}})
    return events
