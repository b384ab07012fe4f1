"""Compilation in the worker process: calls never wait for it, a dead or failing
worker costs nothing but time, and shared nest functions are reused across
programs and processes."""

import json
import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import tracejit
from tracejit.backend import linking, worker


@pytest.fixture
def background(monkeypatch):
    monkeypatch.delenv("TRACEJIT_DISABLE_JIT", raising=False)
    monkeypatch.setenv("TRACEJIT_COMPILE", "background")


def loss(W, x):
    return np.sum(np.tanh(x @ W) ** 2)


def entry_of(fn, *args):
    entry, _ = fn.entry(args)
    return entry


@pytest.mark.usefixtures("background")
def test_calls_made_while_the_kernel_compiles_are_served_without_waiting(monkeypatch):
    release = threading.Event()
    real = worker.compile_elsewhere

    def slow_compile(kernel, args, **options):  # the compile takes until the calls are done
        release.wait(timeout=60)
        return real(kernel, args, **options)

    monkeypatch.setattr(worker, "compile_elsewhere", slow_compile)
    g = tracejit.grad(loss)
    W, x = np.full((3, 2), 0.1), np.arange(12.0).reshape(4, 3) / 10
    expected = g(W, x)
    entry = entry_of(g, W, x)
    served = []
    for k in range(30):
        served.append(g(W * (1 + k / 100), x))
        assert entry.compiling is not None and entry.compiling.is_alive()  # never joined
    release.set()
    g.wait()
    assert entry.kernel.fn is not None and g.stats.compiles == 1
    for k, value in enumerate(served):
        np.testing.assert_allclose(value, tracejit.grad(loss)(W * (1 + k / 100), x), rtol=1e-12)
    np.testing.assert_allclose(g(W, x), expected, rtol=1e-12)


@pytest.mark.usefixtures("background")
def test_a_busy_caller_switches_to_the_kernel_while_it_keeps_calling(monkeypatch):
    """The worker compiles; a thread of ours loads the machine code while the caller's
    calls keep running on the interpreter; the kernel then takes over, with equal results."""
    from tracejit.backend import compiler

    loaders = []
    real = compiler.Kernel.compile

    def noting_the_thread(self, leaves):
        loaders.append((self, threading.get_ident()))
        return real(self, leaves)

    monkeypatch.setattr(compiler.Kernel, "compile", noting_the_thread)
    f = tracejit.function(lambda x: np.sum(np.cos(x) * 1.25 - x))
    x = np.linspace(0, 1, 9)
    f(x)
    entry, deadline = entry_of(f, x), time.monotonic() + 600  # a bound, not a timing
    while not entry.ready and time.monotonic() < deadline:
        assert f(x) == pytest.approx(np.sum(np.cos(x) * 1.25 - x))  # never sleeps or waits
    assert entry.ready and entry.kernel.worker_report is not None
    loaders = [thread for kernel, thread in loaders if kernel is entry.kernel]
    assert len(loaders) == 1 and loaders[0] != threading.get_ident()
    assert f.stats.compiles == 1 and f(x) == pytest.approx(np.sum(np.cos(x) * 1.25 - x))


@pytest.mark.usefixtures("background")
@pytest.mark.parametrize("where", ["worker", "here"])
def test_calls_pause_briefly_only_while_their_kernel_loads_here(monkeypatch, tmp_path, where):
    """While this process prepares the request and loads the kernel, each interpreted
    call pauses for a moment (`_YIELD_SECONDS`): a busy caller would starve that work.
    Not while the worker compiles, nor while a compile runs here (seconds, either)."""
    from tracejit.backend import compiler

    monkeypatch.setenv("TRACEJIT_CACHE_DIR", str(tmp_path))  # nothing on disk yet
    if where == "here":
        monkeypatch.setenv("TRACEJIT_COMPILE_WORKER", "0")
    asked, loading_here = threading.Event(), threading.Event()
    release_ask, release_load = threading.Event(), threading.Event()
    real_ask, real_compile = worker._ask, compiler.Kernel.compile

    def held_ask(request, meanwhile=lambda: None):
        asked.set()
        release_ask.wait(timeout=300)
        return real_ask(request, meanwhile)

    def held_compile(self, leaves):
        loading_here.set()
        release_load.wait(timeout=300)
        return real_compile(self, leaves)

    monkeypatch.setattr(worker, "_ask", held_ask)
    monkeypatch.setattr(compiler.Kernel, "compile", held_compile)
    f = tracejit.function(lambda x: np.sum(np.sin(x) * 0.75 + x))
    x = np.linspace(0, 1, 7)
    expected = np.sum(np.sin(x) * 0.75 + x)
    f(x)
    entry = entry_of(f, x)
    if where == "worker":
        assert asked.wait(timeout=300)
        assert entry.loading is None and f(x) == pytest.approx(expected)
        release_ask.set()
    assert loading_here.wait(timeout=300)
    loading = entry.loading
    assert (loading is not None and not loading.is_set()) == (where == "worker")

    class Recorded:
        def __init__(self):
            self.waits = []

        def wait(self, timeout):
            self.waits.append(timeout)

        def set(self):
            pass

    if where == "worker":
        entry.loading = recorded = Recorded()
        assert f(x) == pytest.approx(expected)
        assert recorded.waits == [compiler._YIELD_SECONDS]
    release_load.set()
    f.wait()
    assert entry.ready and entry.loading is None and f(x) == pytest.approx(expected)


WARM_USER = textwrap.dedent("""
    import json, sys, threading
    import numpy as np
    import tracejit
    from tracejit.backend import linking

    def loss(W, x):
        return np.sum(np.tanh(x @ W + 0.5) ** 2)

    W, x = np.full((3, 2), 0.1), np.arange(12.0).reshape(4, 3) / 10
    g = tracejit.value_and_grad(loss)
    if sys.argv[1] == "cold":
        g(W, x)
        sys.exit()
    release, load = threading.Event(), linking.load_recorded_callees

    def held(*args):  # the load waits until the caller has served calls meanwhile
        loader.append(threading.current_thread().name)
        release.wait(timeout=300)
        return load(*args)

    loader, linking.load_recorded_callees = [], held
    values = [g(W * (1 + k / 10), x) for k in range(20)]
    entry = g.entry((W, x))[0]
    served = not entry.ready
    release.set()
    g.wait()
    values += [g(W * (1 + k / 10), x) for k in range(20)]
    # BLAS was bound for the products without importing scipy.linalg (0.2-0.4 s)
    bound = not any(name.startswith("scipy.linalg") for name in sys.modules)
    import scipy.linalg.cython_blas as blas  # and imports as usual
    import scipy.linalg
    print(json.dumps({"served": served, "ready": entry.ready, "loader": loader,
                      "stats": [g.stats.compiles, g.stats.disk_hits],
                      "blas": bound and scipy.linalg.cython_blas is blas,
                      "values": [[float(v), np.asarray(d).tolist()] for v, d in values]}))
""")


def test_a_warm_process_serves_calls_while_its_kernel_loads_then_switches(tmp_path):
    """A new process whose disk cache holds the kernel: calls run on the interpreter while
    a thread loads the machine code (held here until 20 calls were served), then the
    kernel serves them; every value equals the NumPy reference."""
    env = {**os.environ, "TRACEJIT_CACHE_DIR": str(tmp_path)}
    env.pop("TRACEJIT_DISABLE_JIT", None)

    def run(mode, compile_mode):
        proc = subprocess.run([sys.executable, "-c", WARM_USER, mode], capture_output=True,
                              env={**env, "TRACEJIT_COMPILE": compile_mode}, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout.strip().splitlines()

    run("cold", "sync")  # fills the disk cache
    warm = json.loads(run("warm", "background")[-1])
    assert warm["served"] and warm["ready"] and warm["blas"]
    assert warm["loader"] and warm["loader"][0] != "MainThread"
    assert warm["stats"] == [0, 1]  # read back from disk, nothing compiled
    x = np.arange(12.0).reshape(4, 3) / 10
    for k, (value, grad) in enumerate(warm["values"]):
        t = np.tanh(x @ (np.full((3, 2), 0.1) * (1 + k % 20 / 10)) + 0.5)
        assert value == pytest.approx(np.sum(t**2), rel=1e-12)
        np.testing.assert_allclose(grad, x.T @ (2 * t * (1 - t**2)), rtol=1e-12)


def run_script(script: str, cache_dir, compile_mode: str) -> list[str]:
    """`python -c script` in a new process on this cache directory, JIT on: its output."""
    env = {**os.environ, "TRACEJIT_CACHE_DIR": str(cache_dir), "TRACEJIT_COMPILE": compile_mode}
    env.pop("TRACEJIT_DISABLE_JIT", None)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, env=env,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip().splitlines()


# Scripts that fork reap their child with this: its exit code, or "hung" (killed).
REAP = textwrap.dedent("""
    import os, time

    def reap(pid):
        deadline = time.monotonic() + 60
        while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        if done[0] == 0:
            os.kill(pid, 9)
            return "hung"
        return os.waitstatus_to_exitcode(done[1])
""")

SET_UP_USER = textwrap.dedent("""
    import json
    import numpy as np
    import tracejit
    from tracejit.backend import worker

    worker._CALLS_FIRST_SECONDS = 60  # a loaded machine's first call may take 0.05 s
    f = tracejit.function(lambda x: np.sin(x) * 2.0)
    eager = list(worker._eager_set_up)
    y = [f(np.ones(3)) for _ in range(3)]
    set_up_before_the_calls = worker._numba_set_up.is_set()
    f.wait()  # gives way: the set-up and the load go on
    z = f(np.ones(3))
    print(json.dumps({"eager": eager, "before_the_calls": set_up_before_the_calls,
                      "at_the_end": worker._numba_set_up.is_set(),
                      "right": bool(np.allclose(y + [z], 2.0 * np.sin(1.0)))}))
""")


def test_a_warm_process_sets_up_numba_eagerly_after_its_first_calls(tmp_path):
    """Done beside busy interpreted calls, the set-up took 0.4-1.2 s of GIL hand-offs
    and slowed those calls twofold. A process whose cache holds kernels starts it with
    its first function, but its steps wait while the first calls come first (for a
    minute here); `wait()` ends that. A cold one sets up once its first kernel goes to
    the worker."""
    cold, warm = (json.loads(run_script(SET_UP_USER, tmp_path, "background")[-1])
                  for _ in range(2))
    assert cold["eager"] == [False] and cold["at_the_end"] and cold["right"]
    assert warm["eager"] == [True] and not warm["before_the_calls"]
    assert warm["at_the_end"] and warm["right"]


def test_a_warm_processs_calls_come_first_then_wait_for_the_load(monkeypatch):
    # Ski rental: a warm process's first calls (its first answer, and 50 ms after it)
    # don't pause for the set-up and load running beside them; the call after them
    # waits for the load (capped), which interleaved calls slowed; a cold process's
    # calls only ever pause briefly.
    monkeypatch.setattr(worker, "_calls_gave_way", threading.Event())
    monkeypatch.setattr(worker, "_calls_first_until", [0.0])
    assert worker.pause_seconds(0.001) == 0.001  # cold
    monkeypatch.setattr(worker, "_eager_set_up", [True])
    monkeypatch.setattr(worker, "_numba_set_up", threading.Event())
    monkeypatch.setattr(worker, "_first_answered", threading.Event())
    worker.first_trace()  # until the first answer (a second at most)
    assert worker.calls_come_first() and worker.pause_seconds(0.001) == 0.0
    assert worker._calls_first_until[0] > time.perf_counter() + 0.5
    worker.answered()  # and 50 ms after it
    assert worker.calls_come_first() and worker.pause_seconds(0.001) == 0.0
    assert worker._calls_first_until[0] <= time.perf_counter() + worker._CALLS_FIRST_SECONDS
    worker._calls_first_until[0] = time.perf_counter() - 0.01  # those calls are served
    assert 0.9 < worker.pause_seconds(0.001) <= worker._WAITS_UNTIL_SECONDS
    worker._calls_first_until[0] -= worker._WAITS_UNTIL_SECONDS  # waited long enough
    assert worker.pause_seconds(0.001) == 0.001
    worker._calls_first_until[0] = time.perf_counter() + 60
    worker.give_way()  # the caller waits itself: its calls no longer come first
    assert not worker.calls_come_first() and worker.pause_seconds(0.001) > 0.9


WORKER_START_USER = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    import tracejit
    from tracejit.backend import worker

    at_import = worker._child
    worker._VERDICT_SECONDS = 60  # how long a warm process waits for its first lookup
    f = tracejit.function(lambda x: np.cos(x) * 3.0)
    deadline = time.monotonic() + (20 if sys.argv[1] == "cold" else 1.5)
    while worker._child is None and time.monotonic() < deadline:
        time.sleep(0.01)
    started = worker._child is not None
    y = f(np.ones(3))
    f.wait()
    entry = f.entry((np.ones(3),))[0]
    print(json.dumps({"at_import": at_import is not None,
                      "started_before_the_first_call": started,
                      "compiled_by_it": entry.kernel.worker_report is not None
                                        and worker._child is at_import,
                      "right": bool(np.allclose(y, 3.0 * np.cos(1.0)))}))
""")


def test_a_cold_process_starts_its_worker_with_import_tracejit(tmp_path):
    """A cold process will compile: its worker's start-up (0.5-0.9 s) begins with
    `import tracejit`, beside the rest of that import, and that worker compiles its
    first kernel; a warm one starts none, and waits to learn whether it needs one."""
    def run(kind):
        env = {**os.environ, "TRACEJIT_CACHE_DIR": str(tmp_path),
               "TRACEJIT_COMPILE": "background"}
        for name in ("TRACEJIT_DISABLE_JIT", "TRACEJIT_COMPILE_WORKER", "TRACEJIT_DISABLE_CACHE"):
            env.pop(name, None)
        proc = subprocess.run([sys.executable, "-c", WORKER_START_USER, kind], env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    assert run("cold") == {"at_import": True, "started_before_the_first_call": True,
                           "compiled_by_it": True, "right": True}
    assert run("warm") == {"at_import": False, "started_before_the_first_call": False,
                           "compiled_by_it": False, "right": True}


@pytest.mark.parametrize("setting", [
    {}, {"TRACEJIT_DISABLE_JIT": "1"}, {"TRACEJIT_COMPILE": "sync"},
    {"TRACEJIT_COMPILE_WORKER": "0"}, {"TRACEJIT_DISABLE_CACHE": "1"}, "warm"])
def test_import_starts_a_worker_only_where_one_will_compile(monkeypatch, tmp_path, setting):
    """No worker at import when none would be asked: the JIT off, compiles in this
    process, no disk cache to compile into, or kernels already in the cache."""
    from tracejit.backend import startup

    for name in ("TRACEJIT_DISABLE_JIT", "TRACEJIT_COMPILE", "TRACEJIT_COMPILE_WORKER",
                 "TRACEJIT_DISABLE_CACHE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TRACEJIT_CACHE_DIR", str(tmp_path / "cache"))
    if setting == "warm":
        (tmp_path / "cache").mkdir()
        (tmp_path / "cache" / f"loss_0123456789ab.py{startup.SIGNATURES_SUFFIX}").write_text("")
    else:
        for name, value in setting.items():
            monkeypatch.setenv(name, value)
    spawned = []
    monkeypatch.setattr(startup, "spawn", spawned.append)
    monkeypatch.setattr(startup, "_started", [])
    startup.start_worker_if_cold()
    assert spawned == ([str(tmp_path / "cache")] if setting == {} else [])
    assert (startup.take_started() is not None) == (setting == {})
    assert startup.take_started() is None  # taken once


def test_a_cold_processs_first_request_waits_for_its_starting_worker_only(monkeypatch):
    """The first request's code generation and writes (0.02-0.03 CPU s) would share the
    GIL with a cold process's first calls; they wait while its worker is starting
    anyway (0.2 s at most), and never otherwise: a warm process, a worker up."""
    def pause(starting):
        slept = []
        monkeypatch.setattr(worker, "_worker_starting", starting)
        monkeypatch.setattr(worker.time, "sleep", slept.append)
        worker.before_a_request()
        monkeypatch.undo()
        return sum(slept)

    assert pause([time.perf_counter()]) == pytest.approx(worker._QUIET_SECONDS, abs=0.05)
    assert pause([time.perf_counter() - 10.0]) == 0.0  # its worker is up by now
    assert pause([]) == 0.0  # a warm process, or no worker


FORKING_USER = REAP + textwrap.dedent("""
    import json, threading
    import numpy as np
    import tracejit
    from tracejit.backend import worker

    held, set_up = threading.Event(), worker._set_up_loading
    worker._set_up_loading = lambda: (held.wait(60), set_up())
    f = tracejit.function(lambda x: np.sin(x) * 2.0)  # a warm cache: the set-up starts, held
    pid = os.fork()
    if pid == 0:  # the parent's threads are not here: nothing may wait for them
        os._exit(0 if np.allclose(f(np.ones(3)), 2.0 * np.sin(1.0)) else 1)
    child = reap(pid)
    held.set()
    y = f(np.ones(3))
    print(json.dumps({"child": child, "parent": bool(np.allclose(y, 2.0 * np.sin(1.0)))}))
""")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_does_not_wait_for_the_parents_set_up(tmp_path):
    """A child forked while the warm set-up ran has no such thread: its first trace
    used to wait for it forever."""
    run_script(SET_UP_USER, tmp_path, "background")  # fills the cache: the next is warm
    assert json.loads(run_script(FORKING_USER, tmp_path, "background")[-1]) == {
        "child": 0, "parent": True}


FORKED_WHILE_LOCKED = REAP + textwrap.dedent("""
    import threading
    import numpy as np
    import tracejit
    from tracejit.backend import cache, store
    from tracejit.observe import events

    held, release = threading.Event(), threading.Event()

    def hold():  # a compile thread of the parent, caught mid-way by the fork
        with cache._lock, store._lock, events._lock:
            held.set()
            release.wait(60)

    threading.Thread(target=hold, daemon=True).start()
    held.wait(10)
    pid = os.fork()
    if pid == 0:
        f = tracejit.function(lambda x: np.cos(x) + 1.0)
        right = np.allclose(f(np.ones(2)), np.cos(1.0) + 1.0)
        os._exit(0 if right and f.stats.compiles + f.stats.disk_hits == 1 else 1)
    child = reap(pid)
    release.set()
    print(child)
""")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_child_forked_while_a_thread_held_tracejits_locks_compiles(tmp_path):
    """multiprocessing forks on Linux: a lock a parent thread held at that moment was
    held forever in the child, whose first compile then hung."""
    assert run_script(FORKED_WHILE_LOCKED, tmp_path, "sync")[-1] == "0"


FORKED_WHILE_COMPILING = REAP + textwrap.dedent("""
    import numpy as np
    import tracejit

    f = tracejit.function(lambda x: np.cos(x) * 3.0)
    x = np.ones(2)
    f(x)  # its compile runs in a thread of this process, which a fork does not copy
    pid = os.fork()
    if pid == 0:
        right = np.allclose(f(x), np.cos(1.0) * 3.0)
        f.wait()
        os._exit(0 if right and f.entry((x,))[0].ready else 1)
    print(reap(pid))
""")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_child_forked_during_a_compile_compiles_the_function_itself(tmp_path):
    """The child's function waited for the parent's compile thread, which it does not
    have: it stayed on the interpreter for good."""
    assert run_script(FORKED_WHILE_COMPILING, tmp_path, "background")[-1] == "0"


@pytest.mark.usefixtures("background")
def test_the_worker_compiles_into_the_cache_directory_in_use_now(monkeypatch, tmp_path):
    """A worker started under another TRACEJIT_CACHE_DIR (a script or fixture setting it
    after its first function) is replaced: code it wrote elsewhere would never be read
    here, and every piece would be compiled again in this process."""
    monkeypatch.setenv("TRACEJIT_CACHE_DIR", str(tmp_path / "before"))
    worker._ensure_child()
    monkeypatch.setenv("TRACEJIT_CACHE_DIR", str(tmp_path / "now"))
    f = tracejit.function(lambda x: np.sum(np.sin(x) * 0.75 + x))
    x = np.linspace(0, 1, 6)
    assert f(x) == pytest.approx(np.sum(np.sin(x) * 0.75 + x))
    f.wait()
    kernel = entry_of(f, x).kernel
    assert kernel.worker_report is not None and worker._child.cache_dir == str(tmp_path / "now")
    assert kernel.worker_report["where"] == "compiled" and f.stats.compiles == 1
    assert sum(sum(n.stats.cache_misses.values()) for n in kernel.nests) == 0  # all from disk
    assert list((tmp_path / "now").glob("*.compiled"))


@pytest.mark.usefixtures("background")
def test_a_killed_worker_is_replaced_and_calls_stay_correct():
    f = tracejit.function(lambda x: np.sum(np.sin(x) * 3.0))
    x = np.linspace(0, 1, 7)
    assert f(x) == pytest.approx(np.sum(np.sin(x) * 3.0))
    child = _wait_for_child()
    child.kill()
    assert f(x) == pytest.approx(np.sum(np.sin(x) * 3.0))
    f.wait()
    assert f(x) == pytest.approx(np.sum(np.sin(x) * 3.0)) and f.stats.compiles == 1
    h = tracejit.function(lambda x: np.sum(np.cos(x) * 2.0))
    h(x)
    h.wait()  # a later compile goes to a new worker
    assert worker._child is None or worker._child.pid != child.pid
    assert h(x) == pytest.approx(np.sum(np.cos(x) * 2.0))


def _wait_for_child():
    for _ in range(600):
        if worker._child is not None:
            return worker._child
        time.sleep(0.01)
    pytest.skip("no worker process was started (disk cache disabled?)")


@pytest.mark.usefixtures("background")
def test_the_request_goes_out_before_the_modules_are_imported_here(monkeypatch):
    """Beside a busy caller, importing the modules took 0.2-0.5 s before the request
    was sent; now it overlaps the worker's compile."""
    seen = []

    def ask(request, meanwhile):
        kernel = entry_of(f, x).kernel
        seen.append(kernel.path is None)
        meanwhile()
        seen.append(kernel.path is not None and kernel.path.exists())
        return {"ok": False, "error": "not compiled here"}

    monkeypatch.setattr(worker, "_ask", ask)
    f = tracejit.function(lambda x: np.sum(np.sqrt(x) * 0.5))
    x = np.full(5, 4.0)
    assert f(x) == pytest.approx(5.0)
    f.wait()
    assert seen == [True, True]
    assert entry_of(f, x).kernel.fn is not None and f(x) == pytest.approx(5.0)


@pytest.mark.usefixtures("background")
def test_a_failing_worker_falls_back_to_compiling_here(monkeypatch):
    monkeypatch.setattr(worker, "_ask", lambda request, meanwhile: {"ok": False, "error": "boom"})
    f = tracejit.function(lambda x: np.sum(np.exp(x) - 0.5))
    x = np.ones(5)
    assert f(x) == pytest.approx(np.sum(np.exp(x) - 0.5))
    f.wait()
    entry = entry_of(f, x)
    assert entry.kernel.fn is not None and entry.kernel.worker_report is None
    assert f.stats.compiles == 1


def test_signatures_round_trip_through_their_description():
    import numba

    frozen = np.ones(3)
    frozen.flags.writeable = False
    args = (np.ones((2, 3)), np.ones((3, 2)).T, np.ones(4, np.float32)[::2], 1.5, 3, True,
            np.int64(2), np.ones(()), frozen, np.ones((2, 3))[:, 1], np.zeros(2, bool),
            np.ones((2, 2), np.complex64), np.ones(3, np.uint8), np.ones((0, 3)),
            np.ones(2, "M8[s]"), np.float32(2))
    described = worker.describe_args(args)  # plain arrays without Numba's typeof
    assert described == linking.describe_types([numba.typeof(a) for a in args])
    assert linking.rebuild_signature(json.loads(json.dumps(described))) == tuple(
        numba.typeof(a) for a in args)
    assert worker.describe_args((object(),)) is None


NEST_USER = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tracejit
    from tracejit.backend import cache, nestcall

    def layer(W, x):  # the matmuls around it end its nest: the same in both programs
        return np.tanh(x @ W + 1.0) @ W.T

    def first(W, x):
        return np.sum(layer(W, x))

    def second(W, x):
        return np.max(layer(W, x) ** 2)

    f = tracejit.function(first if sys.argv[1] == "first" else second)
    f(np.full((3, 4), 0.1), np.ones((5, 3)))
    nests = {name: fn for m in cache._loaded.values() for name, fn in vars(m.module).items()
             if name.startswith("nest_") and hasattr(fn, "stats")}
    print(json.dumps({name: nestcall.cache_counts(fn) for name, fn in nests.items()}))
""")


def test_a_shared_nest_compiled_for_one_program_is_reused_by_another_process(tmp_path):
    env = {**os.environ, "TRACEJIT_CACHE_DIR": str(tmp_path), "TRACEJIT_COMPILE": "sync"}
    env.pop("TRACEJIT_DISABLE_JIT", None)

    def run(which):
        proc = subprocess.run([sys.executable, "-c", NEST_USER, which], env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout.strip().splitlines()[-1])

    first = run("first")
    second = run("second")
    shared = set(first) & set(second)
    assert shared, (first, second)  # the tanh layer's nest is the same function
    for name in shared:
        hits, misses = second[name]
        assert hits >= 1 and misses == 0, (name, second[name])


STACKER = textwrap.dedent("""
    import sys
    import numpy as np
    import tracejit

    def loss(ws, x):  # a rolled layer loop: the weights stacked by a concatenate nest
        for w in ws:
            x = np.tanh(x @ w)
        return np.sum(x)

    ws = [np.full((4, 4), 0.1 * k) for k in range(1, 6)]
    grad = tracejit.grad(loss)
    g = grad(ws, np.ones((3, 4)))
    driver = grad.entry((ws, np.ones((3, 4))))[0].kernel.fn
    print(sum(driver.stats.cache_hits.values()), sum(float(np.sum(gk)) for gk in g))
""")


@pytest.mark.parametrize("translated", [False, True], ids=["numba-nests", "translated-nests"])
def test_every_kernel_piece_loads_from_disk_in_a_new_process(tmp_path, translated):
    # Machine code read from disk names the no-link functions it calls: a nest
    # calling one, or a driver loaded before its nests, aborted the next process
    # inside LLVM (symbol not found). The driver is read back only once
    # linking.py has loaded what it calls under the names it was compiled with.
    env = {**os.environ, "TRACEJIT_CACHE_DIR": str(tmp_path), "TRACEJIT_COMPILE": "sync",
           "TRACEJIT_NEST_IR": "1" if translated else "0"}
    env.pop("TRACEJIT_DISABLE_JIT", None)

    def run():
        proc = subprocess.run([sys.executable, "-c", STACKER], env=env, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        hits, total = proc.stdout.split()[-2:]
        return int(hits), float(total)

    first, second = run(), run()
    assert first[0] == 0 and second[0] == 1 and first[1] == second[1]
    assert list(tmp_path.glob("loss_grad_*.links"))
    if translated:  # named by content: made again under the same symbols, the driver loads
        objects = list(tmp_path.glob("nest_*.o"))
        assert len(objects) >= 3
        for path in objects:
            path.unlink()
        assert run() == (1, first[1]) and len(list(tmp_path.glob("nest_*.o"))) == len(objects)
        return
    nests = sorted((tmp_path / "__pycache__").glob("nest_*"))
    assert nests
    (driver_code,) = (tmp_path / "__pycache__").glob("loss_grad_*.nbc")
    old_code = driver_code.read_bytes()
    stem = nests[0].name.split(".")[0]
    for path in nests:  # a nest compiled again gets new symbol names
        if path.name.startswith(stem):
            path.unlink()
    third, fourth = run(), run()
    assert third == (0, first[1])  # the driver compiled again instead of aborting
    assert fourth == (1, first[1])  # and its new record serves the next process
    # The old driver back (validly sealed, as a concurrent process could have
    # written it): the record is for another file, so it is compiled, not loaded.
    driver_code.write_bytes(old_code)
    assert run() == (0, first[1])


def test_background_work_gets_the_gil_back_promptly_and_the_interval_is_restored():
    before = sys.getswitchinterval()
    with worker.prompt_switching():
        with worker.prompt_switching():  # nested (two background tasks): one restore
            assert sys.getswitchinterval() < before
        assert sys.getswitchinterval() < before
    assert sys.getswitchinterval() == before


@pytest.mark.usefixtures("background")
def test_the_workers_report_times_each_translated_nest(monkeypatch, tmp_path):
    # bench_kernel_ready splits a compile into its nests and its driver from this.
    monkeypatch.setenv("TRACEJIT_CACHE_DIR", str(tmp_path))
    f = tracejit.function(lambda x: np.sum(np.exp(x) * 0.25 + x) * np.max(x * 3.0))
    x = np.linspace(0, 1, 6)
    assert f(x) == pytest.approx(np.sum(np.exp(x) * 0.25 + x) * np.max(x * 3.0))
    f.wait()
    kernel = entry_of(f, x).kernel
    names = {nest.py_func.__name__ for nest in kernel.nests}
    seconds = kernel.worker_report["functions"]
    assert names and names <= set(seconds), (names, seconds)
    assert all(seconds[name] > 0 for name in names)
