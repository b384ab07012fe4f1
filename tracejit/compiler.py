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
from dataclasses import dataclass

import numpy as np

from . import cache, codegen, events, passes, pytree, worker
from .interpreter import interpret
from .ir import Literal, Program, verify
from .shapes import resolve
from .trace import Tracer, current_builder, replay

_TRUE = {"1", "true", "yes", "on"}


def jit_disabled() -> bool:
    return os.environ.get("TRACEJIT_DISABLE_JIT", "").lower() in _TRUE


def verify_passes() -> bool:
    return os.environ.get("TRACEJIT_VERIFY", "").lower() in _TRUE


@dataclass
class Stats:
    """How often a function traced, compiled, and found its kernel cached."""

    traces: int = 0
    compiles: int = 0
    memory_hits: int = 0
    disk_hits: int = 0


def prepare(program: Program) -> Program:
    """The pass pipeline before code generation (verified when TRACEJIT_VERIFY=1)."""
    checked = verify_passes()
    for step in (passes.optimize, passes.strip_identities, passes.optimize):
        program = step(program)
        if checked:
            verify(program)
    return program


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

    @functools.cached_property
    def generated(self) -> codegen.Generated:
        return codegen.generate(self.program, self.name, cache.version_tag(),
                                cache.package(self.use_disk))

    @property
    def source(self) -> str:
        """The kernel module and the shared nest modules it calls, readable."""
        return self.generated.text()

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
        known = self.fn is None and worker.known_compiled(self, leaves)
        misses = _cache_misses(self.nests)
        where = cache.compile_for(fn, args)
        if where == "compiled" and known and _cache_misses(self.nests) == misses:
            where = "disk"  # every nest came from disk: only the short driver compiled
        if self.fn is None:
            self.fn = fn
            worker.record_compiled(self, leaves)
        events.compile_end(compiling, where, fn, args)
        return where

    def interpreted(self, leaves) -> list:
        outs = interpret(self.program, leaves, self.consts)
        return [np.asarray(o, dtype=a.dtype) if a.ndim else a.dtype.type(o)
                for o, a in zip(outs, self.out_avals)]

    def __call__(self, leaves) -> list:
        if self.fn is None:
            return self.interpreted(leaves)
        outs = self.fn(*leaves, *self.consts)
        return [conv(o) if conv else o for conv, o in zip(self._convert, outs)]


def _cache_misses(nests) -> int:
    """How often these nest functions were compiled rather than loaded from disk."""
    return sum(sum(fn.stats.cache_misses.values()) for fn in nests)


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
        self.bound_axes = bound_axes  # (leaf, axis) sizes the trace depended on
        self.extra = None
        self.compiling: threading.Thread | None = None
        self.interpreted_seconds = 0.0
        self.call = self._interpreted

    def __call__(self, leaves):
        return self.call(leaves)

    def _interpreted(self, leaves):
        """Serve a call while the kernel compiles (in the worker process: no call
        ever waits for it)."""
        if self.kernel.fn is not None and self.compiling is None:
            return self.call(leaves)
        start = time.perf_counter()
        out = pytree.unflatten(self.out_treedef, self.kernel(leaves))
        end = time.perf_counter()
        self.interpreted_seconds += end - start
        if events.recording:
            events.interpreted_call(self, leaves, start, end)
        return out

    def prepare(self, leaves, stats: Stats, background: bool) -> None:
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
                                          args=(list(leaves), stats), daemon=True)
        self.compiling.start()

    def wait(self) -> None:
        """Block until a background compile has finished."""
        thread = self.compiling
        if thread is not None:
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
        try:
            remote = events.compile_begin(self.kernel)
            events.codegen_end(remote, self.kernel.generated.source,
                               len(self.kernel.generated.helpers))
            self.kernel.worker_report = worker.compile_elsewhere(self.kernel, leaves)
            events.compiled_elsewhere(remote, self.kernel.worker_report)
            self._compile(leaves, stats, elsewhere=self.kernel.worker_report is not None)
        except Exception as err:  # the interpreter keeps serving calls correctly
            events.compile_failed(self.kernel, err)
            warnings.warn(f"tracejit: compiling {self.kernel.name} failed, running the NumPy "
                          f"interpreter instead: {type(err).__name__}: {err}",
                          TracejitCompileWarning, stacklevel=1)
        finally:
            self.compiling = None

    def _specialise(self):
        """The hot call, generated once: the kernel call and the output tree
        built in one expression (scalars get their NumPy type back)."""
        kernel = self.kernel
        convert = kernel._convert
        namespace = {"fn": kernel.fn, "consts": kernel.consts}
        namespace.update({f"t{k}": conv for k, conv in enumerate(convert) if conv})

        def leaf(k):
            return f"t{k}(r[{k}])" if convert[k] else f"r[{k}]"

        tree = pytree.expression(self.out_treedef, leaf)
        if tree is None:
            return lambda leaves: pytree.unflatten(self.out_treedef, kernel(leaves))
        call = "fn(*leaves, *consts)" if kernel.consts else "fn(*leaves)"
        exec(f"def call(leaves):\n    r = {call}\n    return {tree}\n", namespace)
        return namespace["call"]


class TracejitCompileWarning(UserWarning):
    """A background compile failed; results still come from the interpreter."""


def background_compile() -> bool:
    """Compile in the background - in the compile worker process, waited for by a
    thread - while calls run the interpreter, unless TRACEJIT_COMPILE=sync."""
    return os.environ.get("TRACEJIT_COMPILE", "background").lower() != "sync"


class Dispatcher:
    """Per-signature tables of compiled entries for one traceable callable.

    Subclasses implement `build(args) -> (program, out_treedef, input_syms)`.
    """

    def __init__(self, name: str, cache_enabled: bool = True):
        self.name = name
        self.cache_enabled = cache_enabled
        self.stats = Stats()
        self._fast: dict = {}
        self._entries: dict = {}
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
            self.stats.memory_hits += 1
        return entry.call(leaves)

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

    def _miss(self, key, args, statics, extra=None) -> Entry:
        key = (key, statics) if statics else key
        leaves, treedef = pytree.flatten(args if extra is None else (args, extra))
        with self._lock:
            for leaf in leaves:
                _check_leaf(leaf)
            abstract = (treedef, statics, *[abstract_signature(leaf) for leaf in leaves])
            entry = self._lookup(abstract, leaves)
            if entry is None:
                entry = self._compile(abstract, args, statics, leaves)
            entry.prepare(leaves, self.stats, background_compile())
            if len(self._fast) > 512:  # many distinct shapes: keep the table bounded
                self._fast.clear()
            self._fast[key] = entry
            return entry

    def _lookup(self, abstract, leaves):
        table = self._entries.get(abstract)
        if table is None:
            return None
        axes, by_sizes = table
        return by_sizes.get(_sizes(leaves, axes))

    def _compile(self, abstract, args, statics, leaves) -> Entry:
        traced = events.trace_begin(self, args, statics, abstract, leaves)
        program, out_treedef, input_syms = self.build(args, statics)
        events.trace_end(traced, program)
        self.stats.traces += 1
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
        by_sizes[_sizes(leaves, axes)] = entry
        return entry

    def wait(self) -> None:
        """Block until every background compile of this function has finished."""
        for entry in list(self._fast.values()):
            entry.wait()

    def kernel(self, program: Program, name: str) -> Kernel:
        use_disk = self.cache_enabled and cache.disk_cache_enabled()
        return Kernel(prepare(program), name, use_disk, jit_disabled())

    def extend(self, entry: Entry, program: Program) -> None:
        """Hook for dispatchers that attach more to an entry (vjp's backward kernel)."""

    def build(self, args, statics):
        """-> (program, out_treedef, input_syms) for these (dynamic) arguments."""
        raise NotImplementedError


def _sizes(leaves, axes) -> tuple:
    return tuple(np.shape(leaves[leaf])[axis] for leaf, axis in axes)


def _check_leaf(leaf) -> None:
    from .errors import TracerTypeError

    if isinstance(leaf, np.ndarray):
        if leaf.dtype.kind not in "fiubc" or not leaf.dtype.isnative or leaf.dtype.itemsize > 16:
            raise TracerTypeError(f"unsupported array dtype {leaf.dtype} (float, complex, int "
                                  "and bool arrays in native byte order are supported)")
        return
    if isinstance(leaf, (bool, int, float, complex, np.generic)):
        return
    raise TracerTypeError(
        f"argument leaf of type {type(leaf).__name__} is not an array or scalar; pass NumPy "
        "arrays or Python scalars in tuples/lists/dicts, or mark the argument static")


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


__all__ = ["Dispatcher", "Kernel", "Literal", "Stats", "prepare"]
