"""Compilation out of the caller's process: a child process compiles kernels
into the disk cache while the caller keeps serving calls.

A Numba compile holds the GIL nearly all the time, so in a thread it starves
the calls the interpreter serves meanwhile (and they starve it). A child
process has neither problem: it receives the generated module sources and
the argument types, compiles with Numba's disk cache on, and answers; the
caller then loads the machine code from the cache, which takes milliseconds.
One child serves every compile of its parent, one request at a time; it
exits when the parent does (its stdin closes). A lock file in the cache
directory keeps concurrent processes from compiling the same code twice:
the second waits, then loads what the first wrote.

If the child cannot be started, dies, or a request fails, `compile_elsewhere`
says so and the caller compiles in-process instead; the next request starts
a new child.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np

from . import startup
from .linking import describe_types, rebuild_signature

_lock = threading.Lock()  # one request at a time per parent
_state_lock = threading.Lock()  # the warm-up thread and the switch interval (held briefly)
_child: subprocess.Popen | None = None
_adopted = startup.take_started()  # (worker, when it started), if `import tracejit` did
if _adopted:
    _child = _adopted[0]
_warming: list = []  # the warm-up thread, once started
_setting_up: list = []  # the thread running `_set_up_loading`, once started
_eager_set_up: list = []  # [True] when it started with the first function (warm_up)
_numba_set_up = threading.Event()  # machine code can be loaded in this process


enabled = startup.worker_enabled


def warm_up(start_worker: bool) -> None:
    """Called when the first traced function is made: calls will follow. In a background
    thread, start the compile worker (its own start-up, ~0.6 CPU s, then overlaps
    whatever the program does before its first call) unless it runs: a cold process
    (no kernel in its cache directory) started it with `import tracejit` (startup.py).
    A warm one starts it only if the first kernel turns out not to be on disk: most
    likely it has no use for it, and its start-up slowed the load here (seeds' MLP,
    idle caller, load average 3.6: ready 0.44 s with it, 0.26 s without).

    What loading machine code needs here (`_set_up_loading`) starts now too when the
    cache directory already holds kernels (a warm process, most likely). Its steps wait
    while the first calls come first (`first_trace`), then the calls give way to it:
    done beside busy interpreted calls it took 0.4-1.2 s of GIL hand-offs (its file
    reads and LLVM calls) instead of 0.05 s, and slowed those calls twofold. A cold
    process needs it only when its first kernel comes back from the worker: it starts
    with that compile (`set_up_soon`), off the first calls."""
    with _state_lock:
        if _warming:
            return
        likely_warm = _cache_holds_kernels()
        _warming.append(threading.Thread(target=_warm, args=(start_worker, likely_warm),
                                         daemon=True, name="tracejit-warm-up"))
        _eager_set_up.append(likely_warm)
        if start_worker and not likely_warm and enabled():
            _worker_starting.append(_adopted[1] if _adopted else time.perf_counter())
    _warming[0].start()


_worker_starting: list = []  # when a cold process started its worker (warm_up)
_START_SECONDS = 0.45  # a worker's start-up takes at least this long (0.5-0.9 s measured)
_QUIET_SECONDS = 0.2  # the longest the first request's preparation waits for it


def before_a_request() -> None:
    """Let a cold process's first calls (a short script's thousand) run alone for a
    moment: the first request's code generation and file writes (0.02-0.03 CPU s,
    0.05 s beside a busy caller) wait while its worker is still starting, up to 0.2 s.
    No answer could come before the worker is up."""
    if _worker_starting:
        time.sleep(max(0.0, min(_QUIET_SECONDS,
                                _worker_starting[0] + _START_SECONDS - time.perf_counter())))


def _cache_holds_kernels() -> bool:
    """Has the disk cache machine code of an earlier process (a kernel's note of its
    compiled signatures, see `record_compiled`)?"""
    from . import cache

    if not cache.disk_cache_enabled():
        return False
    return startup.holds_kernels(cache.configured_cache_dir())


# A warm process's first calls run before its set-up and load, then a call waits for
# them (ski rental: a short script's answers come first, then the kernel): the first
# answer and 30 ms of calls after it. Against waiting for the set-up before the first
# trace, then interleaving: first call 0.10-0.16 -> 0.01-0.04 s on the seeds' MLP, the
# 16-layer MLP and the RNN-25, tenth 0.14-0.22 -> 0.01-0.05 s, kernel ready +0-0.05 s.
_CALLS_FIRST_SECONDS = 0.03
_FIRST_ANSWER_SECONDS = 1.0  # the first trace and call, at most (one that fails)
_calls_first_until = [0.0]  # perf_counter until which the calls here come first
_calls_gave_way = threading.Event()
_first_answered = threading.Event()
_WAKE_SECONDS = 0.005  # how often the paused set-up looks at the time


def first_trace() -> None:
    """The first trace of a process whose set-up started eagerly (a warm one): its calls
    come first until its first answer and `_CALLS_FIRST_SECONDS` after it. The set-up
    pauses at its next step (done beside busy calls, each slowed the other twofold),
    and the calls don't give way to a kernel's load until then."""
    if _eager_set_up == [True] and not _numba_set_up.is_set() and \
            _calls_first_until[0] == 0.0:
        _calls_first_until[0] = time.perf_counter() + _FIRST_ANSWER_SECONDS


def answered() -> None:
    """An interpreted call returned: the first one starts the calls' last 30 ms."""
    if not _first_answered.is_set():
        _first_answered.set()
        _calls_first_until[0] = min(_calls_first_until[0],
                                    time.perf_counter() + _CALLS_FIRST_SECONDS)


def calls_come_first() -> bool:
    """Do this process's calls still run without pausing for work in the background?"""
    return time.perf_counter() < _calls_first_until[0] and not _calls_gave_way.is_set()


_WAITS_UNTIL_SECONDS = 1.0  # after its first calls, how long a warm process waits at most


def pause_seconds(short: float) -> float:
    """How long an interpreted call waits for a kernel's load here. A cold process's:
    `short`, then it goes on. A warm one's first calls: not at all; the next call waits
    for the load (until `_WAITS_UNTIL_SECONDS` after those calls, then `short` again).
    Interleaved, the calls and the load each slowed the other, and a warm RNN-25's
    kernel was ready at 0.17-0.21 s; waited for, at 0.15-0.16 s, the first calls served."""
    if _calls_first_until[0] == 0.0:
        return short
    if calls_come_first():
        return 0.0
    return max(short, _calls_first_until[0] + _WAITS_UNTIL_SECONDS - time.perf_counter())


def give_way() -> None:
    """The caller waits (`wait()`): background work no longer waits for its calls."""
    _calls_gave_way.set()


def after_the_first_calls() -> None:
    """Before work that loads machine code here (the set-up's steps, a kernel's
    modules): wait while the first calls come first."""
    while calls_come_first():  # in slices: the first answer moves the end nearer
        _calls_gave_way.wait(min(_WAKE_SECONDS, _calls_first_until[0] - time.perf_counter()))


def set_up_soon() -> None:
    """Start what loading machine code needs, in a thread of its own (once)."""
    with _state_lock:
        if _setting_up:
            return
        _setting_up.append(threading.Thread(target=_set_up, daemon=True,
                                            name="tracejit-set-up"))
    _setting_up[0].start()


def _set_up() -> None:
    try:
        with prompt_switching():
            _set_up_loading()
    except Exception:  # noqa: BLE001 (an optimisation only: the first compile does it)
        pass
    finally:
        _numba_set_up.set()


_SWITCH_SECONDS = 0.00005  # sys.setswitchinterval while tracejit works in the background
_switching = [0, None]  # background tasks under `prompt_switching`, the interval before


@contextlib.contextmanager
def prompt_switching():
    """Let a background thread of ours get the GIL back promptly. Its work (imports, file
    reads, LLVM calls) releases the GIL many times, and each time a busy calling thread
    keeps it for a whole switch interval (5 ms): a 0.3 s task would take seconds. With a
    short interval the calls still run in between. A kernel's load from disk releases it
    ~1,200 times (every LLVM call): at 0.2 ms that alone was ~0.25 s of waiting, at 50 us
    ~0.06 s (a busy caller switches as often either way: once per release). The previous
    interval is restored when the last such task ends."""
    with _state_lock:
        if _switching[0] == 0:
            _switching[1] = sys.getswitchinterval()
            sys.setswitchinterval(min(_switching[1], _SWITCH_SECONDS))
        _switching[0] += 1
    try:
        yield
    finally:
        with _state_lock:
            _switching[0] -= 1
            if _switching[0] == 0:
                sys.setswitchinterval(_switching[1])


_VERDICT_SECONDS = 0.2  # how long the worker's start waits to learn if a compile is due
_first_lookup = threading.Event()  # the first kernel's machine code was looked up on disk
_first_on_disk: list = []


def _warm(start_worker: bool, likely_warm: bool) -> None:
    if likely_warm:
        set_up_soon()
        _numba_set_up.wait()  # the worker's start (its Popen) after it, as before
        if start_worker:  # a compile due starts the worker meanwhile
            _first_lookup.wait(_VERDICT_SECONDS)
    if start_worker:
        if _first_on_disk != [True]:
            with contextlib.suppress(Exception):
                _ensure_child()


def _note_lookup(on_disk: bool) -> None:
    if not _first_lookup.is_set():
        _first_on_disk.append(on_disk)
        _first_lookup.set()


def _set_up_loading() -> None:
    """What reading machine code back from the disk cache needs, whatever the kernel:
    Numba's runtime symbols (not Numba's full set-up: numba_cache.VerifiedCache), the
    module that the environments of array code are rebuilt from (numba.np.arrayobj, and
    what it imports: ~0.1 s), Numba's typing of argument values (`describe_args`), and
    the runtime helpers' module with its disk cache, which every kernel imports (0.03 s
    alone; beside a busy caller, inside the kernel's load, 0.1-0.3 s). Its steps wait
    while a warm process's first calls come first (`first_trace`)."""
    import numba

    after_the_first_calls()
    import numba.np.arrayobj  # noqa: F401
    after_the_first_calls()
    from . import cache, numba_cache, runtime  # noqa: F401

    after_the_first_calls()
    numba_cache.runtime_symbols()
    after_the_first_calls()
    numba.typeof(np.ones((1, 1)))
    numba.typeof(1.0)
    if cache.disk_cache_enabled():
        cache.install_runtime_cache()


def _set_up_numba() -> None:
    """Numba's full set-up, which every compile needs first (the worker's)."""
    from numba.core.compiler_lock import global_compiler_lock
    from numba.core.registry import cpu_target

    with global_compiler_lock:  # Numba's compiles refresh too: never both at once
        cpu_target.target_context.refresh()
        cpu_target.typing_context.refresh()


def numba_ready() -> None:
    """Block until machine code can be loaded here (starting the set-up if needed)."""
    if not _numba_set_up.is_set():
        set_up_soon()
        _numba_set_up.wait()


_blas: list = []  # the BLAS extension module, once bound


def bind_blas() -> None:
    """Bind BLAS for the matrix products of kernels loaded here (`runtime.gemm`) before
    their first call. Numba's `numba_xxgemm` finds BLAS on its first call of each dtype by
    importing scipy.linalg.cython_blas, and with it all of scipy.linalg: 0.2-0.4 s holding
    the GIL inside the first call the kernel serves. Here the extension module alone is
    loaded (its package is not imported, and the module is in sys.modules only for the
    microseconds of Numba's lookups) and Numba's lookup made for every BLAS type; Numba
    keeps the routines' addresses."""
    from . import runtime

    if _blas or not runtime.gemm.overloads:
        return
    imported = _CYTHON_BLAS in sys.modules
    try:
        _blas.append(_bind_blas(sys.modules.get(_CYTHON_BLAS) or _load_cython_blas()))
    except Exception:  # noqa: BLE001 (Numba's own lookup then happens on the first call)
        pass
    finally:
        if not imported:  # the module puts itself there: not imported, as far as users see
            sys.modules.pop(_CYTHON_BLAS, None)


_CYTHON_BLAS = "scipy.linalg.cython_blas"


def _load_cython_blas():
    import importlib.machinery
    import importlib.util

    scipy = importlib.util.find_spec("scipy")  # Numba imported it: no import here
    folders = [os.path.join(path, "linalg") for path in scipy.submodule_search_locations]
    spec = importlib.machinery.PathFinder.find_spec(_CYTHON_BLAS, folders)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _bind_blas(module):
    """Numba's lookup of each gemm, through a 1x1 product (PYFUNCTYPE: with the GIL, which
    the lookup needs), finds `module` in sys.modules."""
    import ctypes

    from numba import _helperlib

    size, pointer, char = ctypes.c_ssize_t, ctypes.c_void_p, ctypes.c_char
    # (kind, trans a, trans b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
    xxgemm = ctypes.PYFUNCTYPE(ctypes.c_int, char, char, char, size, size, size, pointer,
                               pointer, size, pointer, size, pointer, pointer, size)(
        _helperlib.c_helpers["xxgemm"])
    kinds = dict(zip(b"sdcz", (np.float32, np.float64, np.complex64, np.complex128)))
    buffers = {kind: (np.ones(1, dtype), np.zeros(1, dtype), np.zeros(1, dtype))
               for kind, dtype in kinds.items()}  # alive until the calls are done
    sys.modules.setdefault(_CYTHON_BLAS, module)
    for kind, (one, zero, out) in buffers.items():
        if xxgemm(bytes([kind]), b"n", b"n", 1, 1, 1, one.ctypes.data, one.ctypes.data, 1,
                  one.ctypes.data, 1, zero.ctypes.data, out.ctypes.data, 1) != 0:
            raise RuntimeError("BLAS lookup failed")
    return module


def _ensure_child() -> None:
    """Start the worker unless it runs (its start-up is then off the first compile's path)."""
    from . import cache

    if enabled() and cache.disk_cache_enabled() and cache.store_writable():
        with _lock:
            _running_child(str(cache.cache_dir()))


def _running_child(directory: str) -> subprocess.Popen:
    """The worker, (re)started unless it runs and compiles into `directory`: the cache
    directory is read from the environment, which may change after a worker started
    (a test's fixture, a script setting TRACEJIT_CACHE_DIR after its first function), and
    code a worker puts in another directory never reaches this process. Under `_lock`."""
    global _child
    if _child is None or _child.poll() is not None or _child.cache_dir != directory:
        _stop()
        _child = startup.spawn(directory)
    return _child


def compile_elsewhere(kernel, args, asking=lambda: None) -> dict | None:
    """Have the worker put `kernel`'s machine code for these arguments in the disk
    cache. Blocks the calling thread (not the GIL). Returns the worker's report
    ({"seconds", "phases"}), or None when the caller must compile itself. `asking` is
    called just before the request goes out (from then on this thread only waits)."""
    from . import cache

    if not (enabled() and kernel.use_disk and cache.store_writable()):
        return None  # nothing a worker writes could reach this process
    signature = describe_args(tuple(args) + tuple(kernel.consts))
    if signature is None:
        return None
    with prompt_switching():
        path = kernel.write()  # the module files the worker reads (not imported here yet)
    on_disk = path is not None and known_compiled(kernel, args, path)
    _note_lookup(on_disk)
    if path is None or on_disk:
        return None  # on disk already: loading it here is quick
    request = {"modules": [[stem, text] for stem, (_, text) in kernel.generated.helpers.items()],
               "kernel": [kernel.name, kernel.generated.source], "signature": signature,
               "cache_dir": str(cache.cache_dir())}
    asking()
    for _ in range(2):  # a dead worker is replaced once
        asked = time.perf_counter()
        reply = _ask(request, meanwhile=functools.partial(_prepare_to_load, kernel, asked))
        if reply is not None:  # when it was sent and answered (benchmarks/bench_kernel_ready)
            reply.update(asked_at=asked, answered_at=time.perf_counter())
            return reply if reply.get("ok") else None
    return None


_PREPARE_AFTER = 0.2  # seconds between a request and the preparations for its answer


def _prepare_to_load(kernel, asked: float) -> None:
    """While the worker compiles (0.8 s at least): what loading its machine code needs
    here, Numba's set-up and the modules. Not at once: the first calls, a short
    script's thousand, run without sharing the GIL with it (seeds' MLP, busy caller:
    0.1 CPU s of such work spread over them)."""
    time.sleep(max(0.0, asked + _PREPARE_AFTER - time.perf_counter()))
    set_up_soon()
    _import_modules(kernel)


def _import_modules(kernel) -> None:
    """Import the modules here (0.03 s alone, 0.2-0.5 s beside a busy caller: imports
    and Numba's dispatchers hand the GIL back and forth), so that only the machine code
    is left to load when it comes back."""
    if kernel.path is None:
        with prompt_switching(), contextlib.suppress(Exception):  # loaded again later
            kernel.load()


def _ask(request: dict, meanwhile=lambda: None) -> dict | None:
    line = json.dumps(request) + "\n"
    with _lock:
        try:
            child = _running_child(request["cache_dir"])
            child.stdin.write(line)
            child.stdin.flush()
            meanwhile()
            answer = child.stdout.readline()
        except OSError:
            answer = ""
        if not answer:  # the worker died or never started
            _stop()
            return None
        return json.loads(answer)


def stop() -> None:
    """End the worker (the next request starts a new one)."""
    with _lock:
        _stop()


def _stop() -> None:
    global _child
    child, _child = _child, None
    if child is not None:
        with contextlib.suppress(OSError):
            child.stdin.close()
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            child.wait(timeout=1)
        if child.poll() is None:
            child.kill()


atexit.register(_stop)


def _after_fork_in_child() -> None:
    """A forked child has none of the parent's threads: a set-up they left half done
    is started again when needed (its first trace waited for it forever), a lock they
    held is new, and the parent's worker stays the parent's (this child's exit would
    have stopped it)."""
    global _lock, _state_lock, _child, _numba_set_up, _first_lookup
    _lock, _state_lock, _child = threading.Lock(), threading.Lock(), None
    if _switching[0]:  # a background task of the parent had shortened the interval
        sys.setswitchinterval(_switching[1])
        _switching[:] = [0, None]
    ready, looked_up = _numba_set_up.is_set(), _first_lookup.is_set()
    _numba_set_up, _first_lookup = threading.Event(), threading.Event()
    if ready:
        _numba_set_up.set()
    if looked_up:
        _first_lookup.set()
    _warming.clear()
    _setting_up.clear()
    _eager_set_up.clear()
    _worker_starting.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


def known_compiled(kernel, args, path=None) -> bool:
    """Was machine code for these argument types put on disk before (beside the kernel
    module's file: `path`, else where the kernel was loaded from)?"""
    signature = describe_args(tuple(args) + tuple(kernel.consts))
    path = path or kernel.path
    return (signature is not None and path is not None
            and json.dumps(signature) in _compiled_signatures(path))


def record_compiled(kernel, args) -> None:
    """Note that machine code for these argument types is in the disk cache, so
    a later process loads it itself instead of asking a worker."""
    signature = describe_args(tuple(args) + tuple(kernel.consts))
    if signature is None or kernel.path is None or not kernel.use_disk:
        return
    known = _compiled_signatures(kernel.path)
    if json.dumps(signature) not in known:
        from . import cache

        cache.write_note(_signatures_file(kernel.path), "\n".join(known | {json.dumps(signature)}))




def _signatures_file(path) -> str:
    return f"{path}{startup.SIGNATURES_SUFFIX}"


def _compiled_signatures(path) -> set:
    """Sealed by the cache (like every file read back from its directory)."""
    from . import cache

    text = cache.read_note(_signatures_file(path))
    return set(text.splitlines()) if text else set()


# ------------------------------------------------------------------ types

def describe_args(args) -> list | None:
    """Numba's types of the arguments as JSON data (None if any is not an array or
    a number). Plain arrays are described here as Numba would: its `typeof` of a
    first array imports numpy.ma (0.03 s; 0.2 s beside a busy caller), on the way to
    a cold process's first compile request."""
    try:
        described = [(_describe_array(arg) if type(arg) is np.ndarray else None)
                     or _described_by_numba(arg) for arg in args]
    except ValueError:
        return None
    return None if None in described else described


def _describe_array(array: np.ndarray) -> list | None:
    """`describe_types` of Numba's type of a plain numeric array (None for others)."""
    dtype = array.dtype
    if dtype.kind not in "biufc" or not dtype.isnative:
        return None
    flags = array.flags
    layout = "C" if flags.c_contiguous else "F" if flags.f_contiguous else "A"
    return ["array", dtype.name, array.ndim, layout, flags.writeable, flags.aligned]


def _described_by_numba(arg) -> list | None:
    import numba

    described = describe_types([numba.typeof(arg)])
    return None if described is None else described[0]


# ------------------------------------------------------------------ the child

_start_seconds: list = []  # the worker's: from its first line to Numba set up


def _serve(booted: float | None = None) -> None:
    """Answer requests; between them (none waiting), do the next warm-up compile."""
    _set_up_numba()  # before the first request arrives
    if booted is not None:
        _start_seconds.append(time.perf_counter() - booted)
    warm_ups = _warm_ups()
    while True:
        while not _request_waiting() and _run_next(warm_ups):
            pass
        line = sys.stdin.readline()
        if not line:
            return  # the parent exited
        sys.stdout.write(json.dumps(_compile_request(json.loads(line))) + "\n")
        sys.stdout.flush()


def _request_waiting() -> bool:
    import select

    return bool(select.select([sys.stdin], [], [], 0)[0])


def _run_next(tasks) -> bool:
    task = next(tasks, None)
    if task is None:
        return False
    with contextlib.suppress(Exception):  # an optimisation only: the kernel compiles anyway
        task()
    return True


def _warm_ups():
    """Compiles worth doing before any program asks, each short (a request waits for one
    at most): the runtime helpers kernels call most, into their disk cache
    (`cache.runtime_cache_dir`), once per machine, or read back from it: compiled, they
    are a third of a small kernel's first compile (seeds' MLP in-process 2.3 s; 1.25 s
    with them read back, which takes 0.05 s). (A typical nest and driver compiled first,
    to ready Numba's typing of arrays and loops, saved a request nothing: the seeds' MLP
    then compiled in 1.32-1.41 s.)"""
    from numba import types

    from . import cache
    from . import runtime as rt

    if not cache.runtime_cache_writable():  # opens the runtime's disk cache
        return
    helpers = (rt.gemm, rt.exp, rt.tanh, rt.log, rt.maximum, rt.sigmoid, rt.log1p, rt.expm1,
               rt.minimum, rt.sign)
    for dtype in (types.float64, types.float32):
        for helper in helpers:
            arity = helper.py_func.__code__.co_argcount
            arg = types.Array(dtype, 2, "A") if helper is rt.gemm else dtype
            yield functools.partial(cache.compile_signature, helper, (arg,) * arity)


def _compile_request(request: dict) -> dict:
    """Compile one kernel into the disk cache; the reply for the parent."""
    from . import cache, linking, nestcall

    start, cpu = time.perf_counter(), time.process_time()
    translated_before = nestcall.compile_seconds()
    try:
        nests = [cache.load_module(text, stem, use_disk=True, stem=stem)
                 for stem, text in request["modules"]]
        name, source = request["kernel"]
        module = cache.load_module(source, name, use_disk=True)
        before = {(fn, sig) for fn, sig, _ in _overloads([*nests, module])}
        kernel = module.function(name)
        sig = rebuild_signature(request["signature"])
        with _claim(request["cache_dir"]):
            path = module.path
            where = linking.compile_driver(kernel, path, sig, known=json.dumps(
                request["signature"]) in _compiled_signatures(path))
        known = _compiled_signatures(path) | {json.dumps(request["signature"])}
        cache.write_note(_signatures_file(path), "\n".join(known))
        return {"ok": True, "where": where, "seconds": time.perf_counter() - start,
                "cpu_seconds": time.process_time() - cpu, "phases": _phases(kernel, sig),
                "functions": {**_compile_seconds([*nests, module], before),
                              **_translated_seconds(translated_before)},
                "start_seconds": _start_seconds[0] if _start_seconds else None}
    except Exception as err:  # reported; the parent compiles in-process and warns
        return {"ok": False, "error": f"{type(err).__name__}: {err}"}


@contextlib.contextmanager
def _claim(directory: str):
    """Hold the cache directory's compile lock (processes compile one at a time)."""
    import fcntl

    with open(os.path.join(directory, ".compile.lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _overloads(modules):
    """(function name, signature, overload) of the Numba functions these modules define."""
    for loaded in modules:
        for name, fn in vars(loaded.module).items():
            if hasattr(fn, "overloads") and fn.py_func.__module__ == loaded.module.__name__:
                for sig, overload in list(fn.overloads.items()):
                    yield name, sig, overload


def _compile_seconds(modules, before: set) -> dict:
    """{function: seconds of Numba's pipeline, the callees it compiled included} for the
    machine code these modules compiled since `before` (not read from disk)."""
    found = {}
    for name, sig, overload in _overloads(modules):
        times = (getattr(overload, "metadata", None) or {}).get("pipeline_times")
        if times and (name, sig) not in before:
            found[name] = round(sum(t.run for stages in times.values()
                                    for t in stages.values()), 4)
    return found


def _translated_seconds(before: dict) -> dict:
    """{nest: seconds} of the nests translated and compiled since `before` (nestcall.py;
    inside the driver's typing, as Numba's nests were)."""
    from . import nestcall

    return {name: round(seconds - before.get(name, 0.0), 4)
            for name, seconds in nestcall.compile_seconds().items()
            if seconds > before.get(name, 0.0)}


def _phases(kernel, sig) -> dict:
    """Seconds per Numba compiler phase, as Numba reports them."""
    overload = kernel.overloads.get(sig)
    times = getattr(overload, "metadata", {}).get("pipeline_times", {}) if overload else {}
    return {name.split("_", 1)[-1]: round(t.run, 6) for stages in times.values()
            for name, t in stages.items()}


if __name__ == "__main__":
    _serve()
