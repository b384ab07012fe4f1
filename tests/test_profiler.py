"""The profiler: report fields on known functions, the context manager, the
timeline file, compile reasons in the log, and the retrace warning.
No timing assertions: only counts, sources, structure and consistency."""

import json
import logging
import math
import warnings

import numpy as np
import pytest

import tracejit
from tracejit.backend import worker
from tracejit.observe import events, log
from tracejit.profiling import profiler as profiling
from tracejit.profiling import timeline


@pytest.fixture(autouse=True)
def _no_pauses(monkeypatch):
    monkeypatch.setattr(profiling, "PAUSE", 0.0)


def unique_function(scale: float):
    """A function whose kernel no other test compiled (the literal is in its source)."""
    def affine_tanh(x, w):
        return np.tanh(x * w + scale).sum()

    return affine_tanh


X, W = np.linspace(-1.0, 1.0, 7), np.full(7, 0.5)


def test_report_of_a_fresh_synchronous_compile(compiled):
    fn = unique_function(0.125)
    report = tracejit.profile(tracejit.function(fn), X, W, seconds=0.05)
    d = report.as_dict()
    assert (d["traces"], d["compiles"], d["disk_loads"], d["memory_hits"]) == (1, 1, 0, 0)
    assert d["source"] == "fresh" and d["reason_kind"] == "first"
    assert d["interpreted_calls"] == 0 and d["kernel_calls"] >= 1  # sync: the kernel at once
    assert {"type inference", "lowering + LLVM"} <= set(d["numba_phases_s"])
    assert d["ir_eqns"]["total"][1] >= 1
    assert d["signature"] == "(f64[7], f64[7])"
    assert d["call_measured"] == "full call, measured"
    assert d["python_us"] > 0  # a plain function: its untraced NumPy time too
    assert report.speedup > 0
    _check_break_even(report)
    json.dumps(d)
    text = str(report)
    for label in ("why traced", "type inference", "eager", "speedup", "break-even"):
        assert label in text


def _check_break_even(report):
    saving = (report.eager_us - report.call_us) * 1e-6
    if saving <= 0:
        assert report.break_even_calls is None
        return
    calls = report.break_even_calls
    assert calls == math.ceil(report.setup_s / saving)
    assert calls * saving >= report.setup_s > (calls - 1) * saving
    assert report.setup_s == pytest.approx(report.trace_s + report.passes_s + report.compile_s)


def test_a_new_object_for_a_compiled_program_finds_it_in_memory(compiled):
    fn = unique_function(0.25)
    tracejit.function(fn)(X, W)
    report = tracejit.profile(tracejit.function(fn), X, W, seconds=0.02)
    assert (report.traces, report.count("compiled"), report.count("memory")) == (1, 0, 1)
    assert report.source == "memory"
    assert report.reason.kind == "recreated"
    assert "tracejit.function(affine_tanh)" in report.reason.text


def test_background_compile_serves_calls_by_the_interpreter(monkeypatch):
    monkeypatch.delenv("TRACEJIT_DISABLE_JIT", raising=False)
    monkeypatch.setenv("TRACEJIT_COMPILE", "background")
    loss = unique_function(0.375)
    report = tracejit.profile(tracejit.value_and_grad(loss, argnums=1), X, W, seconds=0.05)
    assert report.kind == "value_and_grad" and report.source == "fresh"
    assert report.interpreted_calls >= 1 and report.kernel_calls >= 1
    assert report.compiles[0].thread[2] != "MainThread"
    if worker.enabled():  # compiled in the worker process, then loaded from disk
        # the worker's compile, then this process's load of it, every piece from disk
        sources = [(c.source, c.worker_seconds) for c in report.compiles]
        assert report.compiles[0].worker_seconds > 0 and report.count("disk") == 1, sources
        assert {"type inference", "lowering + LLVM"} <= set(report.phases)
    assert report.kernel_ready_s >= report.first_call_s > 0
    assert report.python_us is None  # a transformation has no untraced counterpart
    ir = report.ir_eqns
    assert set(ir) == {"forward", "adjoint", "total"}
    assert ir["adjoint"][0] == ir["total"][0] - ir["forward"][0] > 0
    _check_break_even(report)
    check_timeline(report.profiler, expect_background=True)


def test_profiler_context_manager_rows_counts_and_reasons(interpret):
    @tracejit.function
    def scaled(x, a):
        return (x * a).sum()

    with tracejit.profiler() as prof:
        for _ in range(3):
            scaled(X, 2.0)
        scaled(X.astype(np.float32), 2.0)
        scaled(X.astype(np.float32), 3.0)
    scaled(X, 2.0)  # after the profiler: not recorded
    rows = {r.signature: r for r in prof.measure().reports}
    assert set(rows) == {"(f64[7], float)", "(f32[7], float)"}
    f64, f32 = rows["(f64[7], float)"], rows["(f32[7], float)"]
    assert (f64.interpreted_calls, f64.kernel_calls, f64.traces) == (3, 0, 1)
    assert (f32.interpreted_calls, f32.kernel_calls) == (2, 0)
    assert f64.source == f32.source == "interpreter"
    assert f32.reason.kind == "dtype" and f32.reason.text == "x is float32 (was float64)"
    assert [r.total_s for r in prof.reports] == sorted((r.total_s for r in prof.reports),
                                                       reverse=True)
    text = str(prof)
    assert "scaled" in text and "calls interp/kernel" in text and "3/0" in text
    d = prof.as_dict()
    assert len(d["reports"]) == 2 and d["profiler_overhead_us"] >= 0
    json.dumps(d)


def test_a_profiler_wraps_compiled_calls_only_while_active(compiled):
    fn = tracejit.function(unique_function(0.5))
    fn(X, W)  # compiled before the profiler starts
    (entry,) = set(fn._fast.values())
    plain = entry.call
    with tracejit.profiler() as prof:
        assert entry.call is not plain and entry.call.__wrapped__ is plain
        for _ in range(4):
            fn(X, W)
    assert entry.call is plain  # the hot path is untouched again
    (report,) = prof.measure().reports
    assert (report.traces, report.kernel_calls, report.interpreted_calls) == (0, 4, 0)
    assert report.reason is None and report.source == "memory"
    assert report.call_us > 0 and report.bare_us > 0 and report.eager_us > 0


def test_profile_of_grad_with_the_jit_disabled(interpret):
    report = tracejit.profile(tracejit.grad(lambda x: (x ** 3).sum()), X, seconds=0.02)
    assert report.source == "interpreter" and report.kernel_calls == 0
    assert report.interpreted_calls == 1 and report.call_us > 0
    assert report.speedup is not None and report.bare_us is None


# ------------------------------------------------------------------ timeline

def check_timeline(prof, expect_background, tmp_path=None):
    path = "/dev/null" if tmp_path is None else tmp_path / "trace.json"
    prof.export_chrome_trace(path)
    data = timeline.chrome_trace(prof)
    json.loads(json.dumps(data))
    events_ = data["traceEvents"]
    spans = [e for e in events_ if e["ph"] == "X"]
    for e in spans:
        assert {"name", "cat", "ts", "dur", "pid", "tid"} <= set(e) and e["dur"] >= 0
    tracks: dict = {}
    for e in spans:
        tracks.setdefault((e["pid"], e["tid"]), []).append(e)
    for track in tracks.values():
        assert [e["ts"] for e in track] == sorted(e["ts"] for e in track)
        _check_nested(track)
    categories = {e["cat"] for e in spans}
    assert {"trace", "passes"} <= categories and categories & {"kernel", "interpreted"}
    names = {e["args"]["name"] for e in events_ if e["ph"] == "M" and e["name"] == "thread_name"}
    assert "main thread" in names
    if expect_background:
        assert {"interpreted", "compile", "codegen", "load", "numba"} <= categories
        assert categories & {"worker", "numba phase"}  # in the worker, or in a thread here
        compile_tracks = {(e["pid"], e["tid"]) for e in spans if e["cat"] == "compile"}
        call_tracks = {(e["pid"], e["tid"]) for e in spans if e["cat"] == "interpreted"}
        # The compile has its own track (a thread waiting for the worker, then loading
        # its machine code, or compiling).
        assert compile_tracks - call_tracks
        assert any(e["ph"] == "i" for e in events_)  # the switch to the kernel


def _check_nested(track):
    """Spans on one track are disjoint or nested: a stack of open ends."""
    open_ends: list = []
    for e in track:
        start, end = e["ts"], e["ts"] + e["dur"]
        while open_ends and open_ends[-1] <= start + 1e-3:  # float rounding of ts + dur
            open_ends.pop()
        assert not open_ends or end <= open_ends[-1] + 1e-3, e
        open_ends.append(end)


def test_timeline_of_a_synchronous_session(compiled, tmp_path):
    fn = tracejit.function(unique_function(0.625))
    with tracejit.profiler() as prof:
        for _ in range(3):
            fn(X, W)
    check_timeline(prof, expect_background=False, tmp_path=tmp_path)
    data = json.loads((tmp_path / "trace.json").read_text())
    phases = {e["name"].split(" [")[0] for e in data["traceEvents"]
              if e.get("cat") == "numba phase"}
    assert {"untyped passes", "type inference", "lowering + LLVM"} <= phases
    main_track = [e for e in data["traceEvents"] if e["ph"] == "X" and e["cat"] in
                  ("first call", "trace", "passes", "compile", "kernel")]
    first = next(e for e in main_track if e["cat"] == "first call")
    inside = [e["cat"] for e in main_track if first["ts"] <= e["ts"] and
              e["ts"] + e["dur"] <= first["ts"] + first["dur"] and e is not first]
    assert inside[:3] == ["trace", "passes", "compile"] and inside[-1] == "kernel"


# ------------------------------------------------------------------ reasons and the log

@pytest.mark.filterwarnings("ignore::tracejit.RetraceWarning")
def test_every_trace_is_logged_with_its_reason(interpret, caplog):
    @tracejit.function(static_argnums=1)
    def power(x, n):
        return x ** n

    with caplog.at_level(logging.INFO, logger="tracejit"):
        power(X, 2)
        power(X, 3)
        power(X[None, :], 3)
        power(np.ones((3, 7)), 3)
        power(X.astype(np.float32), 3)
        power(X.astype(np.float32), n=3)  # the same signature: no trace
    messages = [r.getMessage() for r in caplog.records if r.name == "tracejit"]
    assert len(messages) == 5 and messages[0].startswith("trace power(f64[7], n=2): first call")
    assert "first call" in messages[0]
    assert "static argument n = 3 (was 2)" in messages[1]
    assert "x has 2 dimensions (was 1)" in messages[2]
    assert "x: axis 0 is no longer 1" in messages[3]
    assert "x is float32 (was float64)" in messages[4]


def test_broadcast_pattern_and_size_reasons(interpret, caplog):
    @tracejit.function
    def per_row(x):
        return x.sum(axis=1) / x.shape[1]

    with caplog.at_level(logging.INFO, logger="tracejit"):
        per_row(np.ones((4, 3)))
        per_row(np.ones((1, 3)))
        per_row(np.ones((4, 5)))
    messages = [r.getMessage() for r in caplog.records if r.name == "tracejit"]
    assert "x: axis 0 has size 1" in messages[1]
    assert "x.shape[1] is 5; the code read it as a Python int when it was 3" in messages[2]


def test_retrace_warning_names_the_size_read_and_the_fix(interpret):
    @tracejit.function
    def mean_by_hand(x):
        return x.sum() / x.shape[0]

    with pytest.warns(tracejit.RetraceWarning) as caught:
        for n in range(2, 2 + log.RETRACE_LIMIT):
            mean_by_hand(np.ones(n))
    (warning,) = caught
    text = str(warning.message)
    assert text.startswith("mean_by_hand has been traced 5 times")
    assert "4 of the 4 retraces came from sizes the code reads as Python ints: x.shape[0] took " \
           "the sizes 2, 3, 4, 5, 6" in text
    assert "x.mean() rather than x.sum() / x.shape[0]" in text
    assert warning.filename == __file__  # points at the user's call
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mean_by_hand(np.ones(40))  # once only


def test_retrace_warning_for_a_transformation_created_in_a_loop(interpret):
    def loss(x):
        return (x ** 2).sum()

    with pytest.warns(tracejit.RetraceWarning, match=r"create it once, outside the loop") as w:
        for _ in range(log.RETRACE_LIMIT):
            tracejit.grad(loss)(X)
    assert "new tracejit.grad(loss) objects traced signatures" in str(w[0].message)


def test_retrace_warning_for_static_values(interpret):
    @tracejit.function(static_argnames="k")
    def shifted(x, k):
        return x + k

    with pytest.warns(tracejit.RetraceWarning, match=r"static argument k took the values "
                                                     r"0, 1, 2, 3, 4\. Fix: .*ordinary argument"):
        for k in range(log.RETRACE_LIMIT):
            shifted(X, k=k)


def test_compile_events_reach_the_log(compiled, caplog):
    fn = tracejit.function(unique_function(0.75))
    with caplog.at_level(logging.INFO, logger="tracejit"):
        fn(X, W)
    messages = [r.getMessage() for r in caplog.records if r.name == "tracejit"]
    assert messages[0].startswith("trace affine_tanh(f64[7], f64[7]): first call")
    assert messages[1].startswith("compile affine_tanh: compiled by Numba in ")
    assert "type inference" in messages[1]


def test_numba_phases_are_grouped_in_pipeline_order():
    timing = type("T", (), {"init": 0.0, "finalize": 0.0})
    names = ["0_translate_bytecode", "3_with_lifting", "17_nopython_type_inference",
             "18_strip_phis", "24_parfor_prelowering_pass", "26_ir_legalization",
             "28_native_parfor_lowering", "29_nopython_backend"]
    times = {name: type("P", (timing,), {"run": float(k + 1)})() for k, name in enumerate(names)}
    phases = events.group_pipeline_times({"nopython": times}, {"llvm_lock": 2.5})
    assert phases == {"untyped passes": 3.0, "type inference": 3.0, "typed passes": 15.0,
                      "lowering + LLVM": 7.0, "backend": 8.0, "LLVM (callees too)": 2.5}


def test_a_failing_observer_does_not_break_the_call(interpret, monkeypatch, caplog):
    def broken(self, record):
        raise RuntimeError("observer bug")

    monkeypatch.setattr(profiling.Profiler, "on_trace", broken)
    with caplog.at_level(logging.ERROR, logger="tracejit"), tracejit.profiler():
        assert tracejit.function(lambda x: x * 3.0)(X)[1] == pytest.approx(X[1] * 3.0)
    assert "an observer of the compiler failed" in caplog.text


def test_a_compile_reported_by_a_worker_process(interpret):
    """The interface a compile worker uses: its phases, times and process track."""
    fn = tracejit.function(lambda x: x + 1.0)
    with tracejit.profiler() as prof:
        fn(X)
        (entry,) = set(fn._fast.values())
        job = events.compile_begin(entry.kernel)
        start = job.start
        events.compile_end(job, "compiled", phases={"type inference": 0.25}, start=start,
                           end=start + 0.5, pid=99999, tid=7,
                           numba_spans=[("compile", "k", start + 0.1, start + 0.4, 99999, 7)])
    (report,) = prof.reports
    assert report.source == "fresh" and report.phases == {"type inference": 0.25}
    assert report.compile_s == pytest.approx(0.5)
    data = timeline.chrome_trace(prof)
    worker = [e for e in data["traceEvents"] if e["pid"] == 99999]
    assert {"name": "compile worker 99999"} in [e["args"] for e in worker if e["ph"] == "M"]
    assert {"compile", "numba"} <= {e["cat"] for e in worker if e["ph"] == "X"}
    check_timeline(prof, expect_background=False)


def test_retrace_reason_is_against_the_nearest_signature_and_names_every_change(
        interpret, caplog):
    """The third trace was once explained against the float32 trace ("x is
    float64 (was float32)") though a float64 one of rank 1 came first."""
    @tracejit.function
    def double(x, y):
        return x * 2.0 + y

    with caplog.at_level(logging.INFO, logger="tracejit"):
        double(np.ones(3), 1.0)
        double(np.ones(3, np.float32), 1.0)
        double(np.ones((2, 2)), 1.0)
        double(np.ones((1, 2), np.float32), np.ones(2, np.float32))
    messages = [r.getMessage() for r in caplog.records if r.name == "tracejit"]
    assert "double(f64[2,2], float): x has 2 dimensions (was 1); trace" in messages[2]
    # nearest: (f32[3], float), two differences (against f64[2,2]: three)
    assert "double(f32[1,2], f32[2]): x has 2 dimensions (was 1); y is a float32 array of " \
           "rank 1 (was a Python float); trace" in messages[3]
