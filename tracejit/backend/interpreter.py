"""The NumPy reference interpreter of the IR (TRACEJIT_DISABLE_JIT=1, and the
calls served while a kernel compiles).

Each equation runs its primitive's NumPy `impl`, nothing else, so this is
the reference semantics. To serve calls at close to hand-written NumPy speed
a program is turned once into a straight-line Python function (one line per
equation, parameters bound ahead of time) rather than walked equation by
equation. A program is shape-generic, so symbolic sizes in parameters (the
target of a broadcast, the shape of a scatter) are read from each call's
inputs, never taken from the sizes seen while tracing.
"""

from __future__ import annotations

import functools
import itertools
import weakref

import numpy as np

from ..core.ir import Literal, Program, Var, consumers_of
from ..core.shapes import Sym, resolve, resolve_shape
from ..trace.registry import ELEMENTWISE


def interpret(program: Program, args, consts) -> list:
    """Evaluate `program` on NumPy values; returns the outputs in order."""
    run = runner(program)
    with np.errstate(all="ignore"):  # inf and NaN flow as in the kernels, silently
        return run(*args, *consts)


def runner(program: Program):
    """`program` as a Python function of its inputs and constants (no errstate:
    for loop bodies, run inside an interpreted program)."""
    return _compiled(program)


_runners: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _compiled(program: Program):
    run = _runners.get(program)
    if run is None:
        run = _runners[program] = _Writer(program).function()
    return run


class _Writer:
    """Writes the Python source of a program's runner."""

    def __init__(self, program: Program):
        self.program = program
        self.consumers = consumers_of(program)
        self.producer = {id(v): e for e in program.eqns for v in e.outputs}
        self.outputs = {id(a) for a in program.outvars if isinstance(a, Var)}
        self.names: dict[int, str] = {}
        self.dims: dict[int, str] = {}
        self.namespace: dict = {}
        self.lazy: set = set()  # broadcasts left to NumPy's broadcasting in their consumers
        self.lines: list[str] = []
        self._fresh = itertools.count()

    def fresh(self, prefix: str) -> str:
        return f"{prefix}{next(self._fresh)}"

    def function(self):
        program = self.program
        args = [self.fresh("a") for _ in program.invars + program.constvars]
        for var, name in zip(program.invars + program.constvars, args):
            self.names[id(var)] = name
        for var, name in zip(program.invars + program.constvars, args):
            for axis, d in enumerate(var.aval.shape):
                root = resolve(d)
                if type(root) is not int and id(root) not in self.dims:
                    self.dims[id(root)] = dim = self.fresh("n")
                    self.lines.append(f"{dim} = np.shape({name})[{axis}]")
        for eqn in program.eqns:
            self._equation(eqn)
        outs = ", ".join(self._atom(a) for a in program.outvars)
        self.lines.append(f"return [{outs}]")
        source = f"def run({', '.join(args)}):\n" + "".join(f"    {line}\n"
                                                           for line in self.lines)
        self.namespace["np"] = np
        exec(compile(source, f"<interpreter of {program.name}>", "exec"), self.namespace)
        return self.namespace["run"]

    def _atom(self, atom) -> str:
        if isinstance(atom, Literal):
            name = self.fresh("k")
            self.namespace[name] = atom.value
            return name
        return self.names[id(atom)]

    def _equation(self, eqn) -> None:
        static = {k: v for k, v in eqn.params.items() if not _sized_param(v)}
        dynamic = {k: v for k, v in eqn.params.items() if _sized_param(v)}
        args = [self._atom(a) for a in eqn.inputs]
        impl, inline = self._impl(eqn)
        if inline is not None:  # an expression, its parameters written in
            call = inline.format(*args)
        else:
            fn = self.fresh("f")
            self.namespace[fn] = functools.partial(impl, **static) if static else impl
            args += [f"{k}={self._sizes(v)}" for k, v in dynamic.items()]
            call = f"{fn}({', '.join(args)})"
        outs = [self.fresh("v") for _ in eqn.outputs]
        for var, name in zip(eqn.outputs, outs):
            self.names[id(var)] = name
        target = ", ".join(outs) + ("," if eqn.prim.multiple_results and len(outs) == 1 else "")
        if eqn.prim.multiple_results and not outs:
            target = "_"
        self.lines.append(f"{target} = {call}")
        for sym, output in eqn.prim.defined_dims(eqn.params):  # a while loop's trip count
            self.dims[id(resolve(sym))] = dim = self.fresh("n")
            self.lines.append(f"{dim} = int({outs[output]})")

    def _impl(self, eqn) -> tuple:
        """(the callable for `eqn`, or None and its inline expression)."""
        prim, out = eqn.prim, eqn.outputs[0]
        lazy = (prim.impl_broadcasting is not None and id(out) not in self.outputs
                and all(u.prim.kind == ELEMENTWISE and self._restores_shape(u, out)
                        for u in self.consumers.get(id(out), ())))
        if prim.impl_source is not None:
            inline = prim.impl_source(eqn, lazy, self._sizes)
            if inline is not None:
                return None, inline
        return (prim.impl_broadcasting if lazy else prim.impl), None

    def _restores_shape(self, user, lazy) -> bool:
        """NumPy's broadcasting inside `user` gives it the shape `lazy` was broadcast
        to only if another operand has that full shape and is materialised itself."""
        full = resolve_shape(lazy.aval.shape)
        return any(isinstance(a, Var) and a is not lazy and not self._maybe_lazy(a)
                   and resolve_shape(a.aval.shape) == full for a in user.inputs)

    def _maybe_lazy(self, var) -> bool:
        eqn = self.producer.get(id(var))
        return eqn is not None and eqn.prim.impl_broadcasting is not None

    def _sizes(self, value) -> str:
        """A parameter holding symbolic sizes, as an expression of this call's sizes."""
        if isinstance(value, Sym):
            root = resolve(value)
            if type(root) is int:
                return str(root)
            return self.dims.get(id(root), str(root.value))
        if isinstance(value, tuple):
            inner = ", ".join(self._sizes(v) for v in value)
            return f"({inner},)" if len(value) == 1 else f"({inner})"
        if type(value) is int:
            return str(value)
        name = self.fresh("p")
        self.namespace[name] = value
        return name


def _sized_param(value) -> bool:
    return isinstance(value, Sym) or (isinstance(value, tuple) and any(map(_sized_param, value)))
