"""Eager tapes' memo of surface calls: a call recorded once is replayed.

A NumPy call on an eager tape's values (`x @ W`, `np.sum(t, axis=1)`, a
composite such as `log_softmax`) goes through the NumPy surface, the op layer
and promotion before it reaches `bind`: some 70 Python calls per equation.
Where a recording has been before (the same node of eager.py's trie of
structures) the same call - the same function, operands at the same
positions of the recording, the same static arguments and the same array
types - binds the same equations. The first time the call is only noted
(most structures never recur: a loop to a tolerance). The second time it
runs in full and `replayer` turns what it recorded into a generated Python
function: the primitives' NumPy expressions in order, the equations appended
with fresh variables, the trie's node set to where the call ended. From then
on the entry point checks the key (one dict lookup) and runs that.

A call is not memoised when its structure may depend on more than the key:
it read a value (`bool(t)`), took a path whose structure is not shared (the
general `bind`), read a Variable, or made constants while it had array
operands (a converted copy of an operand would be replayed stale).
"""

from __future__ import annotations

import numpy as np

from ..core.ir import Eqn, Literal, Var
from ..core.shapes import Sym, resolve

MISS = object()  # a replay that cannot serve this call: run it in full
SEEN = object()  # stored for a call seen once: the next time it is recorded for replay
UNMEMOISABLE = object()  # stored for a call that always runs in full
MAX_ENTRIES = 16  # memoised calls per node of the trie (a changing float makes new keys)


def replayer(builder, args, result, start: tuple, end_node, tracer_type):
    """A function (builder, args) -> result replaying the call that just
    recorded builder.eqns/vars from `start` (their lengths and those of the
    constants before it), or None when the call cannot be replayed."""
    e0, v0, c0 = start
    eqns = builder.eqns[e0:]
    new_vars = builder.vars[v0:]
    consts = {id(v) for v in builder.constvars[c0:]}
    made_by = {id(out): eqn for eqn in eqns for out in eqn.outputs}
    if len(new_vars) != len(consts) + len(made_by):
        return None
    code = _Code(builder, args, tracer_type)
    has_arrays = any(type(a) is np.ndarray for a in args)
    for var in new_vars:
        if id(var) in consts:
            if not code.capture(var, builder.values[id(var)], has_arrays):
                return None
        else:
            eqn = made_by[id(var)]
            if var is eqn.outputs[0] and not code.equation(eqn):
                return None
    returned = code.returned(result)
    if returned is None:
        return None
    return code.function(end_node, returned)


class _Code:
    """The generated replay, a line at a time; its constants in `env`."""

    def __init__(self, builder, args, tracer_type):
        self.builder, self.args = builder, args
        self.tracer_type = tracer_type
        self.env = {"Var": Var, "Eqn": Eqn, "EagerTracer": tracer_type, "MISS": MISS, "np": np}
        self.checks: list[str] = []  # before any effect: MISS unless they hold
        self.lines: list[str] = []
        self.atoms: dict[int, str] = {}  # id(Var) -> expression of the variable
        self.values: dict[int, str] = {}  # id(Var) -> expression of its value
        self.n = 0
        self.numbered = 0
        for k, arg in enumerate(args):
            if type(arg) is tracer_type:
                self.atoms.setdefault(id(arg.ir_var), f"args[{k}].ir_var")
                self.values.setdefault(id(arg.ir_var), f"args[{k}].value")
            elif type(arg) is np.ndarray:
                var = builder._captured.get(id(arg))
                if var is not None and id(var) not in self.atoms:  # captured before the call
                    self.atoms[id(var)] = f"captured[id(args[{k}])]"
                    self.values[id(var)] = f"args[{k}]"

    def constant(self, value) -> str:
        name = f"K{len(self.env)}"
        self.env[name] = value
        return name

    def capture(self, var, value, has_arrays: bool) -> bool:
        """A constant captured by the call: an array operand (captured anew, as
        the key says), or a constant the call made (the same each time, unless
        an array operand could have been its source)."""
        source = next((f"args[{k}]" for k, a in enumerate(self.args) if a is value), None)
        if source is None:
            if has_arrays:
                return False
            source = self.constant(value)
            self.checks.append(f"if id({source}) in captured: return MISS")
        name = f"c{self.n}"
        self.n += 1
        self.lines += [f"{name} = Var({self.constant(var.aval)})",
                       f"captured[id({source})] = {name}",
                       f"b.constvars.append({name}); b.const_values.append({source})",
                       *self._number(name, source)]
        self.atoms[id(var)], self.values[id(var)] = name, source
        return True

    def equation(self, eqn) -> bool:
        atoms, values = [], []
        for atom in eqn.inputs:
            if type(atom) is Literal:
                atoms.append(self.constant(atom))
                # the operand bind was given: a Python scalar for a weak literal
                values.append(self.constant(atom.value.item() if atom.aval.weak else atom.value))
            elif id(atom) in self.atoms:
                atoms.append(self.atoms[id(atom)])
                values.append(self.values[id(atom)])
            else:  # a variable from elsewhere in the recording
                return False
        j = self.n
        self.n += 1
        params = self.constant(eqn.params)
        call = self._inline(eqn, values)
        if call is None:
            call = f"{self.constant(eqn.prim.impl)}({', '.join(values)}"
            call += f", **{params})" if eqn.params else ")"
        outs = [f"o{j}_{i}" for i in range(len(eqn.outputs))]
        if eqn.prim.multiple_results:
            self.lines.append(f"y{j} = {call}")
            results = [f"y{j}[{i}]" for i in range(len(outs))]
        else:
            self.lines.append(f"y{j}_0 = {call}")
            results = [f"y{j}_0"]
        for out, result, var in zip(outs, results, eqn.outputs):
            self.lines += [f"{out} = Var({self.constant(var.aval)})",
                           *self._number(out, result)]
            self.atoms[id(var)], self.values[id(var)] = out, result
        self.lines.append(f"eqns.append(Eqn({self.constant(eqn.prim)}, [{', '.join(atoms)}], "
                          f"{params}, [{', '.join(outs)}], {self.constant(eqn.location)}))")
        return True

    def _inline(self, eqn, values: list) -> str | None:
        """The primitive's NumPy expression, where it has one (the
        interpreter's: a reshape, a reduction with its accumulator dtype, a
        conversion), without the Python of its `impl`."""
        if eqn.prim.impl_source is None or eqn.prim.multiple_results:
            return None
        try:
            inline = eqn.prim.impl_source(eqn, False, self._sizes)
            return None if inline is None else inline.format(*values)
        except (IndexError, KeyError, ValueError):
            return None

    def _sizes(self, value) -> str:
        """A parameter as source (sizes are concrete on an eager tape)."""
        if isinstance(value, Sym):
            value = resolve(value)
        if type(value) is int:
            return str(value)
        if type(value) is tuple and all(type(resolve(d)) is int for d in value):
            return repr(tuple(int(resolve(d)) for d in value))
        return self.constant(value)

    def _number(self, name: str, value: str) -> list[str]:
        """The new variable `name`, the `numbered`-th of the call, takes its
        place in the recording (vars, ordinal) with its value."""
        self.numbered += 1
        return [f"i = id({name}); ordinal[i] = n + {self.numbered - 1}; values[i] = {value}",
                f"vars_.append({name}); trail.append({value})"]

    def returned(self, result) -> str | None:
        """The expression of the call's result: its tracers rebuilt (an
        operand returned as it is stays that object)."""
        if type(result) is self.tracer_type:
            var = result.ir_var
            if result.builder is not self.builder or id(var) not in self.atoms:
                return None
            for k, arg in enumerate(self.args):
                if arg is result:
                    return f"args[{k}]"
            return f"EagerTracer(b, {self.atoms[id(var)]}, {self.values[id(var)]})"
        if type(result) in (tuple, list):
            parts = [self.returned(r) for r in result]
            if None in parts:
                return None
            inner = ", ".join(parts) + ("," if len(parts) == 1 else "")
            return f"({inner})" if type(result) is tuple else f"[{inner}]"
        return None

    def function(self, end_node, returned: str):
        self.env["END"] = end_node
        body = ["captured = b._captured", *self.checks,
                "values = b.values; ordinal = b.ordinal; vars_ = b.vars; eqns = b.eqns",
                "trail = b.trail",
                "n = len(vars_)",
                *self.lines, "b.node = END", f"return {returned}"]
        source = "def replay(b, args):\n" + "".join(f"    {line}\n" for line in body)
        exec(compile(source, "<eager replay>", "exec"), self.env)  # noqa: S102
        return self.env["replay"]


__all__ = ["MISS", "SEEN", "UNMEMOISABLE", "MAX_ENTRIES", "replayer"]
