"""From a traced program to a callable kernel: passes, code generation,
compilation through the cache, and the per-signature dispatch tables.

`Dispatcher` is the machinery shared by `tracejit.function` and every
transformation (`grad`, `value_and_grad`, `jvp`, ...): they differ only in
how they turn arguments into a Program.
"""

from __future__ import annotations

import functools
import os
import threading
import time
import warnings
import weakref
from collections import OrderedDict
from dataclasses import dataclass

import numba
import numpy as np

from ..core import config, errors, pytree
from ..core.ir import Literal, Program
from ..core.shapes import resolve
from ..observe import events
from ..trace.tracer import Tracer, current_builder, replay
from ..transforms import debug
from ..transforms.pipeline import run_passes
from . import cache, codegen, linking, nestcall, worker
from .interpreter import server as interpreter_for
from .startup import background_compile, jit_disabled

BACKGROUND_COMPILE = "tracejit-background-compile"  # the threads' name (tests wait on it)
# How long an interpreted call pauses while its kernel's load runs here. The load
# (~0.05 CPU s) releases the GIL at each of its ~1,000 LLVM calls and, beside a busy
# caller, waited a switch interval to get it back each time: a warm seeds' MLP took
# over after 0.5-0.8 s, 0.1-0.2 s when the caller pauses (a hundred calls or so).
_YIELD_SECONDS = 0.0005


@dataclass
class Stats:
    """How often a function traced, compiled, and found its kernel cached."""

    traces: int = 0
    compiles: int = 0
    memory_hits: int = 0
    disk_hits: int = 0


class Kernel:
    """A program and, once compiled, its Numba kernel. Until then (or with
    TRACEJIT_DISABLE_JIT=1) calls run the NumPy reference interpreter."""

    def __init__(self, program: Program, name: str, use_disk: bool, interpret: bool):
        self.program = program
        self.consts = tuple(np.ascontiguousarray(c) for c in program.consts)
        self.out_avals = [a.aval for a in program.outvars]
        self.interpret = interpret
        self.use_disk = use_disk
        self.name = codegen.identifier(name)
        self.fn = None
        self.worker_report = None  # what the compile worker said, when it compiled this
        self.path = None  # the kernel module's file, once loaded
        self.nests: list = []  # the shared nest functions it calls, once loaded
        self._convert = [_scalar_type(a) for a in self.out_avals]
        self.debug_checks: tuple = ()  # what each debug check names (debug.instrument)

    @functools.cached_property
    def generated(self) -> codegen.Generated:
        return codegen.generate(self.program, self.name, cache.version_tag(),
                                cache.package(self.use_disk))

    @property
    def source(self) -> str:
        """The kernel module and the shared nest modules it calls, readable."""
        return self.generated.text()

    def write(self):
        """Put the nest modules and the kernel module in the disk cache without importing
        them (a compile worker reads them); the kernel module's path, or None."""
        paths = [cache.write_module(text, module, stem=module)
                 for module, (_, text) in self.generated.helpers.items()]
        if None in paths:
            return None
        return cache.write_module(self.generated.source, self.name)

    def load(self):
        """Import the nest modules, then the kernel module; its Numba dispatcher."""
        self.nests = [cache.load_module(text, module, use_disk=self.use_disk, stem=module)
                      .function(name) for module, (name, text) in self.generated.helpers.items()]
        module = cache.load_module(self.generated.source, self.name, use_disk=self.use_disk)
        self.path = module.path
        return module.function(self.name)

    def compile(self, leaves) -> str:
        """Load (or write) the modules and compile for these argument types;
        says where the machine code came from: memory, disk or compiled."""
        compiling = events.compile_begin(self)
        args = tuple(leaves) + self.consts
        fn = self.fn
        if fn is None:
            events.codegen_end(compiling, self.generated.source, len(self.generated.helpers))
            fn = self.load()
            events.loaded(compiling)
        on_disk = worker.known_compiled(self, leaves)
        known = self.fn is None and on_disk
        misses = _cache_misses(self.nests)
        sig = tuple(numba.typeof(arg) for arg in args)
        if sig in fn.overloads or not self.use_disk:
            where = cache.compile_signature(fn, sig)
        else:
            where = linking.compile_driver(fn, self.path, sig, on_disk)
        if where == "compiled" and known and _cache_misses(self.nests) == misses:
            where = "disk"  # every nest came from disk: only the short driver compiled
        elif where == "disk" and _cache_misses(self.nests) != misses:
            where = "compiled"  # the driver came from disk, not every nest did
        worker.bind_blas()  # here, not in the kernel's first call
        if self.fn is None:
            self.fn = fn
            worker.record_compiled(self, leaves)
        events.compile_end(compiling, where, fn, args)
        return where

    def interpreted(self, leaves) -> list:
        return interpreter_for(self.program)(leaves, self.consts)  # checks sizes as the kernel

    def __call__(self, leaves) -> list:
        """A call with the size checks (not compiled into the kernel); the dispatcher
        checks each new set of sizes once and calls `run`."""
        if self.fn is not None:
            errors.check_sizes(self.program, list(leaves) + list(self.consts))
        return self.run(leaves)

    def run(self, leaves) -> list:
        if self.fn is None:
            return self.interpreted(leaves)
        outs = self.fn(*leaves, *self.consts)
        return [conv(o) if conv else o for conv, o in zip(self._convert, outs)]


def make_kernel(program: Program, name: str, use_disk: bool, interpret: bool) -> Kernel:
    """The kernel of a traced program: the passes, then the debug checks that
    tracejit.config.debug_nans / debug_infs ask for (debug.instrument)."""
    program, checks = run_passes(program), ()
    if config.kernel_flags():
        program, checks = debug.instrument(program, config.kernel_flags())
    kernel = Kernel(program, name, use_disk, interpret)
    kernel.debug_checks = checks
    return kernel


def _cache_misses(nests) -> int:
    """How often these nests' machine code was compiled rather than loaded from disk
    (by Numba or as translations: nestcall.py)."""
    return sum(nestcall.cache_counts(fn)[1] for fn in nests)


def _scalar_type(aval):
    """Numba returns 0-d results as Python scalars; give them their dtype back."""
    return aval.dtype.type if aval.ndim == 0 else None


def abstract_signature(leaf):
    """Per-leaf key independent of sizes: dtype, rank and which axes are 1.
    (The generated code is layout-generic; Numba's dispatcher specialises the
    machine code per memory layout, so layout is part of its key, not ours.)"""
    if isinstance(leaf, np.ndarray):
        return (leaf.dtype, tuple(d == 1 for d in leaf.shape))
    if isinstance(leaf, np.generic):
        return (leaf.dtype,)
    if isinstance(leaf, (bool, int, float, complex)):
        return type(leaf)
    return ("other", type(leaf))


class Entry:
    """Kernel + the output structure for one abstract signature. `call` is
    specialised once the kernel is compiled, so the hot path makes no
    per-call decisions; before that it runs the interpreter."""

    def __init__(self, kernel: Kernel, out_treedef, bound_axes):
        self.kernel = kernel
        self.out_treedef = out_treedef
        self.build_outputs = pytree.builder(out_treedef)
        self.bound_axes = bound_axes  # (leaf, axis) sizes the trace depended on
        self.extra = None
        self.compiling: threading.Thread | None = None
        self.loading: threading.Event | None = None  # while work here would want the GIL
        self.interpreted_seconds = 0.0
        self.call = self._interpreting = _interpreting(weakref.ref(self))  # no cycle
        self.hits = 0  # calls served from the fast table (memory hits)
        self.seen_hits = 0  # `hits` when the LRU last looked: used since, if they differ

    def __call__(self, leaves):
        return self.call(leaves)

    @property
    def ready(self) -> bool:
        """Whether calls are served by the compiled kernel now (its specialised call in
        place: another thread may have set `kernel.fn` and not yet `call`)."""
        return self.call is not self._interpreting and self.compiling is None

    def _interpreted(self, leaves):
        """Serve a call while the kernel compiles and loads (in the worker process and a
        thread of ours: no call waits for a compile; in a warm process, once its first
        calls are served, one waits for the load: `worker.pause_seconds`)."""
        if self.ready:
            return self.call(leaves)
        for leaf in leaves:  # as the compiled kernel would (the dispatcher names it)
            if type(leaf) is int and not errors.fits_int64(leaf):
                raise OverflowError(f"Python int too large for int64: {leaf}")
        loading = self.loading
        if loading is not None:  # the kernel is loaded here: let that have the GIL
            loading.wait(worker.pause_seconds(_YIELD_SECONDS))
            if self.ready:  # it was waited for
                return self.call(leaves)
        start = time.perf_counter()
        out = self.build_outputs(self.kernel(leaves))
        end = time.perf_counter()
        self.interpreted_seconds += end - start
        worker.answered()
        if events.recording:
            events.interpreted_call(self, leaves, start, end)
        return out

    def ensure_compiled(self, leaves, stats: Stats, background: bool) -> None:
        """Make sure machine code exists for these argument types: now, or in a
        background thread while calls keep running on the interpreter."""
        if self.kernel.interpret:
            stats.memory_hits += 1
            return
        if self.compiling is not None:
            stats.memory_hits += 1  # the pending compile will serve these too
            return
        if self.kernel.fn is not None or not background:
            self._compile(leaves, stats)
            return
        self.compiling = threading.Thread(target=self._compile_in_background,
                                          args=(list(leaves), stats), daemon=True,
                                          name=BACKGROUND_COMPILE)
        self.compiling.start()

    def wait(self) -> None:
        """Block until a background compile has finished and its kernel is loaded."""
        thread = self.compiling
        if thread is not None:
            worker.give_way()
            thread.join()

    def _compile(self, leaves, stats: Stats, elsewhere: bool = False) -> None:
        where = self.kernel.compile(leaves)
        if elsewhere and where == "disk":  # the worker compiled it for this call
            where = "compiled"
        stats.compiles += where == "compiled"
        stats.disk_hits += where == "disk"
        stats.memory_hits += where == "memory"
        self.call = events.kernel_call(self, self._specialise())

    def _compile_in_background(self, leaves, stats: Stats) -> None:
        """Generate the code, have the worker compile it into the disk cache, and load
        it, all in this thread while the caller's calls run the interpreter. A busy
        caller would starve what runs here (its many short GIL releases: file reads,
        LLVM calls): the switch interval is short meanwhile, and the calls pause briefly
        (`loading`, `_YIELD_SECONDS`) except while the worker compiles. Without a
        worker: compile here, the calls not pausing."""
        try:
            worker.after_the_first_calls()  # a warm process's: its code generation and load
            worker.before_a_request()
            self.loading = threading.Event()  # work here until the request is sent
            remote = events.compile_begin(self.kernel)
            events.codegen_end(remote, self.kernel.generated.source,
                               len(self.kernel.generated.helpers))
            report = worker.compile_elsewhere(self.kernel, leaves, asking=self._stop_yielding)
            self.kernel.worker_report = report
            events.compiled_elsewhere(remote, report)
            if report is None and self.kernel.path is None and self.kernel.use_disk and \
                    cache.disk_cache_enabled():
                with worker.prompt_switching():  # no worker: is its machine code on disk?
                    self.kernel.load()
            if report is not None or worker.known_compiled(self.kernel, leaves):
                worker.numba_ready()  # waits (without the GIL) for Numba's set-up here
                self.loading = self.loading or threading.Event()
                with worker.prompt_switching():
                    self._load_or_warn(leaves, stats, report is not None)
            else:  # compiled here: seconds, no yielding meanwhile
                self._stop_yielding()
                self._load_or_warn(leaves, stats)
        except Exception as err:  # the interpreter keeps serving calls correctly
            self._failed(err)
        finally:
            self.compiling = None
            self._stop_yielding()

    def _stop_yielding(self) -> None:
        """Calls no longer pause for work here (the request is out, or all is done)."""
        loading, self.loading = self.loading, None
        if loading is not None:
            loading.set()

    def _load_or_warn(self, leaves, stats: Stats, elsewhere: bool = False) -> None:
        try:
            self._compile(leaves, stats, elsewhere)
        except Exception as err:
            self._failed(err)

    def _failed(self, err: Exception) -> None:
        events.compile_failed(self.kernel, err)
        warnings.warn(f"tracejit: compiling {self.kernel.name} failed, running the NumPy "
                      f"interpreter instead: {type(err).__name__}: {err}",
                      TracejitCompileWarning, stacklevel=1)

    def _specialise(self):
        """The hot call, generated once: the kernel call and the output tree
        built in one expression (scalars get their NumPy type back)."""
        kernel = self.kernel
        convert = kernel._convert
        namespace = {"fn": kernel.fn, "consts": kernel.consts}
        namespace.update({f"t{k}": conv for k, conv in enumerate(convert) if conv})

        def leaf(k):
            return f"t{k}(r[{k}])" if convert[k] else f"r[{k}]"

        treedef = self.out_treedef
        tree = pytree.expression(treedef, leaf)
        if tree is None:
            return lambda leaves: pytree.unflatten(treedef, kernel.run(leaves))
        call = "fn(*leaves, *consts)" if kernel.consts else "fn(*leaves)"
        exec(f"def call(leaves):\n    r = {call}\n    return {tree}\n", namespace)
        return namespace.pop("call")  # its globals must not hold it: no cycle


def _interpreting(entry_ref):
    """An entry's call before its kernel exists; holds the entry weakly (the caller
    holds it strongly), so entries form no reference cycle."""
    def call(leaves):
        return entry_ref()._interpreted(leaves)

    return call


class TracejitCompileWarning(UserWarning):
    """A background compile failed; results still come from the interpreter."""


class Dispatcher:
    """Per-signature tables of compiled entries for one traceable callable.

    Subclasses implement `build(args) -> (program, out_treedef, input_syms)`.
    """

    def __init__(self, name: str, cache_enabled: bool = True):
        _dispatchers.add(self)
        self.name = name
        self.cache_enabled = cache_enabled
        if not jit_disabled():  # calls will come: get Numba and the worker ready meanwhile
            worker.warm_up(start_worker=cache_enabled and cache.disk_cache_enabled()
                           and background_compile())
        self._stats = Stats()  # traces, compiles, disk hits; memory hits of evicted entries
        self._fast: dict = {}
        self._entries: dict = {}
        self._recent: OrderedDict = OrderedDict()  # (abstract, sizes) -> entry, LRU first
        self._lock = threading.RLock()

    def call_flat(self, args: tuple, statics: tuple = (), extra=None, extra_key=None):
        """The hot path: flatten with the key, one dict lookup, the call.
        `extra` (a tuple of arrays) are trailing inputs the program reads
        besides `args`: the values of the Variables the function captured.
        `extra_key`, when given, stands for their dtypes and shapes in the key
        (the caller changes it whenever one of those changes)."""
        leaves: list = []
        if extra is None:
            key = pytree.signature(args, leaves)
        elif extra_key is None:
            key = pytree.signature((args, extra), leaves)
        else:
            key = (pytree.signature(args, leaves), extra_key)
            leaves.extend(extra)
        entry = self._fast.get((key, statics) if statics else key)
        if entry is None:
            entry = self._miss(key, args, statics, extra)
        else:
            entry.hits += 1
        try:
            return entry.call(leaves)
        except errors.KERNEL_CHECKS as err:  # a size or debug check: name what failed
            self._fast.pop((key, statics) if statics else key, None)  # keep no failed key
            raise self.explain(err, entry, args, statics, leaves) from None
        except (OverflowError, ValueError):  # Numba's typing of an int past int64
            self.check_leaves(args, statics, leaves)
            raise

    def explain(self, err, entry, args, statics, leaves=None) -> Exception:
        """The user's error for a failed kernel check: argument names, shapes, op, line.
        `leaves` are the kernel's inputs (the arguments', then Variables' values)."""
        leaves = pytree.flatten(args)[0] if leaves is None else leaves
        names = self.leaf_names(args, statics)
        names += [f"Variable {k}" for k in range(len(leaves) - len(names))]
        return errors.explain(err, entry.kernel, names, list(leaves) + list(entry.kernel.consts))

    def leaf_names(self, args, statics) -> list[str]:
        """The user's name for each argument leaf (`params[0]`, `batch['x']`)."""
        return [f"argument {k}{path}" for k, arg in enumerate(args)
                for path in pytree.leaf_paths(arg)]

    def entry(self, args: tuple, statics: tuple = (), extra=None):
        """(entry, leaves) for these arguments, compiling on a miss."""
        leaves: list = []
        key = pytree.signature(args if extra is None else (args, extra), leaves)
        entry = self._fast.get((key, statics) if statics else key)
        if entry is None:
            entry = self._miss(key, args, statics, extra)
        return entry, leaves

    def clear(self) -> None:
        """Forget every entry: the next calls trace again (a change the
        dispatch keys cannot see, such as a new learning-rate schedule)."""
        with self._lock:
            self._fast.clear()
            self._entries.clear()
            self._stats.memory_hits += sum(e.hits for e in self._recent.values())
            self._recent.clear()

    def _miss(self, key, args, statics, extra=None) -> Entry:
        key = (key, statics) if statics else key
        leaves, treedef = pytree.flatten(args if extra is None else (args, extra))
        with self._lock:
            self.check_leaves(args, statics, leaves)
            abstract = (treedef, statics, *[abstract_signature(leaf) for leaf in leaves])
            flags = config.kernel_flags()  # debug_nans...: kernels of their own
            abstract += (flags,) if flags else ()
            entry = self._lookup(abstract, leaves)
            new = entry is None
            if new:
                entry = self._trace_entry(abstract, args, statics, leaves)
            try:
                # The kernel's size checks, once per new set of sizes (the fast table is
                # keyed by them): not compiled into the kernel, whose compile they slow.
                errors.check_sizes(entry.kernel.program, leaves + list(entry.kernel.consts))
                entry.ensure_compiled(leaves, self._stats, background_compile())
            except BaseException as err:
                if new:  # a failed call leaves no entry behind
                    self._forget(entry)
                if isinstance(err, errors.SizeMismatch):
                    raise self.explain(err, entry, args, statics, leaves) from None
                raise
            if len(self._fast) > 512:  # many distinct shapes: keep the table bounded
                self._fast.clear()
            self._fast[key] = entry
            return entry

    def check_leaves(self, args, statics, leaves) -> None:
        """Raise the user's error for the first argument leaf no kernel can take."""
        for k, leaf in enumerate(leaves):
            problem = errors.leaf_problem(leaf)
            if problem:
                names = self.leaf_names(args, statics)
                name = names[k] if k < len(names) else f"Variable {k - len(names)}"
                raise errors.leaf_error_type(leaf)(errors.with_location(
                    f"{self.name}: {name} {problem}")) from None

    def _lookup(self, abstract, leaves):
        table = self._entries.get(abstract)
        if table is None:
            return None
        axes, by_sizes = table
        sizes = _sizes(leaves, axes)
        entry = by_sizes.get(sizes)
        if entry is not None:
            self._recent.move_to_end((abstract, sizes))
        return entry

    def _trace_entry(self, abstract, args, statics, leaves) -> Entry:
        """A new entry: trace (`build`), make its kernel (compiled by `ensure_compiled`)."""
        worker.first_trace()
        traced = events.trace_begin(self, args, statics, abstract, leaves)
        program, out_treedef, input_syms = self.build(args, statics)
        events.trace_end(traced, program)
        self._stats.traces += 1
        bound = tuple((leaf, axis) for leaf, axis, sym in input_syms
                      if type(resolve(sym)) is int)
        entry = Entry(self.kernel(program, self.name), out_treedef, bound)
        self.extend(entry, program)
        events.prepared(traced, entry)
        axes, by_sizes = self._entries.setdefault(abstract, (bound, {}))
        if axes != bound:  # a retrace bound other sizes: key on both sets
            axes = tuple(sorted(set(axes) | set(bound)))
            by_sizes = {}
            self._entries[abstract] = (axes, by_sizes)
            for old in [k for k in self._recent if k[0] == abstract]:
                del self._recent[old]
        sizes = _sizes(leaves, axes)
        by_sizes[sizes] = entry
        self._recent[(abstract, sizes)] = entry
        while len(self._recent) > config.cache_size:
            where, oldest = next(iter(self._recent.items()))
            if oldest is entry or oldest.hits != oldest.seen_hits:  # new, or called since
                oldest.seen_hits = oldest.hits  # last looked at: a second chance
                self._recent.move_to_end(where)
                continue
            self._evict(*self._recent.popitem(last=False))
        return entry

    @property
    def stats(self) -> Stats:
        """How often this function traced, compiled and found its kernel cached (a
        snapshot; memory hits are counted per entry, so the hot path shares no counter)."""
        s = self._stats
        hits = s.memory_hits + sum(e.hits for e in self._recent.values())
        return Stats(s.traces, s.compiles, hits, s.disk_hits)

    @stats.setter
    def stats(self, shared: Stats) -> None:
        """Count traces, compiles and disk hits into `shared` (dispatchers may share one)."""
        self._stats = shared

    def _evict(self, where, entry) -> None:
        """Forget the least recently used entry (tracejit.config.cache_size bounds them;
        the order is by lookup, with a second chance for entries called since: CLOCK)."""
        self._stats.memory_hits += entry.hits
        abstract, sizes = where
        table = self._entries.get(abstract)
        if table is not None:
            table[1].pop(sizes, None)
            if not table[1]:
                del self._entries[abstract]
        for key in [k for k, e in self._fast.items() if e is entry]:
            del self._fast[key]

    def _forget(self, entry) -> None:
        for where, known in list(self._recent.items()):
            if known is entry:
                del self._recent[where]
                self._evict(where, entry)

    def wait(self) -> None:
        """Block until every background compile of this function has finished."""
        for entry in list(self._fast.values()):
            entry.wait()

    def kernel(self, program: Program, name: str) -> Kernel:
        use_disk = self.cache_enabled and cache.disk_cache_enabled()
        return make_kernel(program, name, use_disk, jit_disabled())

    def extend(self, entry: Entry, program: Program) -> None:
        """Hook for dispatchers that attach more to an entry (vjp's backward kernel)."""

    def build(self, args, statics):
        """-> (program, out_treedef, input_syms) for these (dynamic) arguments."""
        raise NotImplementedError


_dispatchers: weakref.WeakSet = weakref.WeakSet()


def _forget_fast_paths() -> None:
    """A switch that changes kernels (config.debug_nans...) was set: every call looks
    its kernel up again, under the new flags (part of the abstract key)."""
    for dispatcher in list(_dispatchers):
        dispatcher._fast.clear()


config.on_change(_forget_fast_paths)


def _after_fork_in_child() -> None:
    """A forked child has none of the parent's threads: a dispatcher lock one of them
    held is new, and a function whose compile one of them ran forgets its entries
    (its next call traces and compiles again instead of waiting for that compile)."""
    for dispatcher in list(_dispatchers):
        dispatcher._lock = threading.RLock()
        if any(entry.compiling is not None for entry in dispatcher._recent.values()):
            dispatcher.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _sizes(leaves, axes) -> tuple:
    return tuple(np.shape(leaves[leaf])[axis] for leaf, axis in axes)


def is_tracing(args) -> bool:
    """True when called from inside another trace with traced arguments."""
    if current_builder() is None:
        return False
    leaves, _ = pytree.flatten(args)
    return any(isinstance(leaf, Tracer) for leaf in leaves)


def inline(program: Program, out_treedef, args):
    """Replay a program into the enclosing trace (nested transformations)."""
    leaves, _ = pytree.flatten(args)
    outs = replay(program, leaves, program.consts)
    return pytree.unflatten(out_treedef, outs)


__all__ = ["Dispatcher", "Kernel", "Literal", "Stats"]
