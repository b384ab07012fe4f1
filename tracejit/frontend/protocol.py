"""The call protocol of a compiled function, from arguments to kernel and back.

    Function.__call__ / Transform.__call__                      api.py
      | the hot path: Dispatcher.call_flat(args), one dict lookup  backend/compiler.py
      | otherwise (keywords, static arguments, Variables):
      v
    call(dispatcher, fun, dynamic, statics, writes)             here
      | the current values of `fun.variables` as trailing inputs
      v
    Dispatcher.call_flat(dynamic, statics, values)              a hit runs the kernel;
      | a miss traces: dispatcher.build(args, statics)           api.py, then
      v
    trace_function(fun, fn, args, writes)                       here
      | a `variables.Scope` (the hook Variables plug in by) turns the Variables
      | the trace reads into trailing inputs, their assignments into outputs
      v
    results; with `writes`, the values assigned to Variables stored back

A trace that reads Variables its function did not know yet records them on
the function and raises `VariablesDiscovered`; `call` (and the hot paths'
fallbacks) call again with the new trailing inputs.
"""

from __future__ import annotations

import weakref
from dataclasses import replace

from ..core.errors import TracerTypeError
from ..trace.tracer import _builders, trace
from . import variables
from .variables import VariablesDiscovered, read_all

RETRIES = 4  # discovery rounds before a function is said to create Variables on every call


def call(dispatcher, fun, dynamic, statics, writes: bool):
    """Call `dispatcher` with `fun`'s Variables as trailing inputs; with
    `writes`, store the values the kernel assigned to them."""
    out = _attempt(fun, lambda values: dispatcher.call_flat(dynamic, statics, values,
                                                            variables.epoch[0]))
    if fun.variables:
        _stateful.add(dispatcher)
    if writes and fun.variables:
        out, written = out
        known = fun.variables
        for k, value in written.items():
            if k < 0:  # the kernel returned an input as it is: store a copy
                k, value = ~k, value.copy()
            known[k]._value = value
    return out


def entry(dispatcher, fun, args):
    """`dispatcher.entry(args)` with `fun`'s Variables as trailing inputs."""
    return _attempt(fun, lambda values: dispatcher.entry(args, (), values))


def retrying(build, fun):
    """`build()` again while it discovers Variables (for `.ir()`, `.source()`)."""
    for _ in range(RETRIES):
        try:
            return build()
        except VariablesDiscovered:
            continue
    raise TracerTypeError(f"{fun.name} creates new Variables every time it is traced")


def _attempt(fun, attempt):
    """`attempt(values)` with the current values of `fun`'s Variables (None when
    it has none), again while traces discover new ones."""
    for _ in range(RETRIES):
        known = fun.variables
        try:
            return attempt(tuple([v._value for v in known]) if known else None)
        except VariablesDiscovered:
            continue
    raise TracerTypeError(f"{fun.name} creates new Variables every time it is traced; create "
                          "them once (outside the function, or on its first call only)")


def trace_function(fun, fn, args, writes: bool, leaf_names=None):
    """`trace(fn, args)` for a Function: at top level inside a Scope holding
    the Variables `fun` is known to use. Returns (program, treedef, input_syms).
    `leaf_names` name the argument leaves in error messages."""

    def traced(*args):  # a Variable returned is its value at the end of the function
        return read_all(fn(*args))

    traced.__wrapped__ = fn

    if _builders or variables.scope_open():  # nested: Variables belong to the outer trace
        program, treedef, builder = trace(traced, args, fun.name, leaf_names)
        return program, treedef, builder.input_syms
    with variables.scope_for(fun.variables) as scope:
        program, treedef, builder = trace(traced, args, fun.name, leaf_names)
    if scope.new:
        fun.add_variables(scope.new)
        variables.types_changed()  # its cached calls passed fewer trailing inputs
        raise VariablesDiscovered
    if scope.builder is None:
        scope.builder = builder
    program, treedef = scope.finish(program, treedef, writes)
    return program, treedef, builder.input_syms


_stateful = weakref.WeakSet()  # dispatchers that have run with Variables


def structure_changed() -> None:
    """Something traced code baked in changed (an optimizer's learning-rate
    schedule): every function that reads Variables traces again."""
    for dispatcher in list(_stateful):
        dispatcher.clear()


def trailing_inputs(program, first: int, count: int, input_syms: list, shift: int):
    """Move `program`'s inputs [first, first + count) (a function's Variables)
    to the end, for transforms whose program adds inputs after the primal ones
    (jvp's tangents); their leaf indices in `input_syms` move by `shift`."""
    moved = program.invars[first:first + count]
    invars = program.invars[:first] + program.invars[first + count:] + moved
    syms = [(leaf + shift if leaf >= first else leaf, axis, sym)
            for leaf, axis, sym in input_syms]
    return replace(program, invars=invars), syms
