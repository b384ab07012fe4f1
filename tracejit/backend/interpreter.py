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
import re
import weakref
from types import SimpleNamespace

import numpy as np

from ..core import errors
from ..core.ir import Literal, Program, Var, consumers_of
from ..core.shapes import Sym, is_one, resolve, resolve_shape
from ..trace.registry import ELEMENTWISE, INDEXMAP, REDUCE


def interpret(program: Program, args, consts) -> list:
    """Evaluate `program` on NumPy values; returns the outputs in order."""
    run = runner(program)
    with np.errstate(all="ignore"):  # inf and NaN flow as in the kernels, silently
        return run(*args, *consts)


def runner(program: Program):
    """`program` as a Python function of its inputs and constants (no errstate:
    for loop bodies, run inside an interpreted program)."""
    return _compiled(program)


def server(program: Program):
    """`serve(leaves, consts) -> outputs`: a kernel's call served by the interpreter,
    with the kernel's size checks (errors.check_sizes names a failure) and its
    output types (NumPy scalars for 0-d outputs), all written into one function."""
    serve = _servers.get(id(program))
    if serve is None:
        serve = _cache(_servers, program, _serving_function(program, _compiled(program)))
    return serve


# id(program) -> its function, dropped when the program is collected (a plain dict:
# a WeakKeyDictionary's lookup makes a weak reference on every call)
_runners: dict = {}
_servers: dict = {}


def _cache(table: dict, program: Program, value):
    table[id(program)] = value
    weakref.finalize(program, table.pop, id(program), None)
    return value


def _compiled(program: Program):
    run = _runners.get(id(program))
    if run is None:
        run = _cache(_runners, program, _Writer(program).function())
    return run


def _serving_function(program: Program, run):
    where = _input_dims(program)
    pairs = [(where[id(a)], where[id(b)]) for a, b, _ in program.checks.pairs
             if id(a) in where and id(b) in where]
    lines = ["def serve(leaves, consts):"]
    if pairs:
        lines.append("    values = [*leaves, *consts]")
        first = ", ".join(f"values[{k}].shape[{axis}]" for (k, axis), _ in pairs)
        second = ", ".join(f"values[{k}].shape[{axis}]" for _, (k, axis) in pairs)
        lines += [f"    if ({first},) != ({second},):",
                  "        check_sizes(program, values)"]
    lines.append("    r = run(*leaves, *consts)")
    # what check_sizes reads, not the program: a cached value must not keep its
    # key (nor the arrays the program captured) alive
    signature = SimpleNamespace(invars=program.invars, constvars=program.constvars,
                                checks=program.checks)
    # inf and NaN flow as in the kernels, silently (errstate as a decorator: no
    # context manager made per call, and thread-safe)
    namespace = {"np": np, "run": np.errstate(all="ignore")(run), "program": signature,
                 "check_sizes": errors.check_sizes}
    outs = []
    for k, atom in enumerate(program.outvars):
        namespace[f"t{k}"] = atom.aval.dtype
        outs.append(f"np.asarray(r[{k}], dtype=t{k})" if atom.aval.ndim else f"t{k}.type(r[{k}])")
    lines.append(f"    return [{', '.join(outs)}]")
    exec(compile("\n".join(lines) + "\n", f"<interpreter call of {program.name}>", "exec"),
         namespace)
    return namespace["serve"]


def _input_dims(program: Program) -> dict:
    """id(dimension) -> (input index, axis) for the program's inputs' symbolic sizes."""
    where: dict = {}
    for k, var in enumerate(program.invars + program.constvars):
        for axis, dim in enumerate(var.aval.shape):
            if type(dim) is not int:
                where.setdefault(id(dim), (k, axis))
    return where


class _Writer:
    """Writes the Python source of a program's runner."""

    def __init__(self, program: Program, outer: _Writer | None = None):
        self.program = program
        self.consumers = consumers_of(program)
        self.producer = {id(v): e for e in program.eqns for v in e.outputs}
        self.outputs = {id(a) for a in program.outvars if isinstance(a, Var)}
        self.names: dict[int, str] = {}
        self.lazy: set = set()  # broadcasts left to NumPy's broadcasting in their consumers
        self.rows: set = set()  # ids of the stacks left as their rows (Rows)
        self.lines: list[str] = []
        # a loop body written inside `outer`'s function shares its names and sizes
        self.dims: dict[int, str] = dict(outer.dims) if outer else {}
        self.namespace: dict = outer.namespace if outer else {}
        self._fresh = outer._fresh if outer else itertools.count()
        self.once: set = set()  # values hoisted out of a loop: no step may write into them
        self.maybe_python: set = set()  # scalar selects: may pass a user's Python float on
        self.deferred: dict = {}  # one-position scatters, written when first read
        self.steps = _relu_slopes(program, self.consumers, self.outputs)

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
                                                           for line in _read_sizes(self.lines))
        self.namespace["np"] = np
        exec(compile(source, f"<interpreter of {program.name}>", "exec"), self.namespace)
        run = self.namespace["run"]
        run.source = source  # what it runs, for reading (benchmarks, debugging)
        return run

    def _atom(self, atom) -> str:
        if isinstance(atom, Literal):
            name = self.fresh("k")
            self.namespace[name] = atom.value
            return name
        waiting = self.deferred.pop(id(atom), None)
        if waiting is not None:  # written where it is first read
            self._equation(waiting, now=True)
        return self.names[id(atom)]

    def _equation(self, eqn, now: bool = False) -> None:
        if eqn.prim.name == "scan" and self._inline_scan(eqn):
            return
        if not now and self._deferrable(eqn):
            self.deferred[id(eqn.outputs[0])] = eqn  # its reader may take it apart
            return
        step = self.steps.get(id(eqn))
        if step is not None:  # a relu's slope; its masks are written into it
            if step:
                (name,) = self._name_outputs(eqn)
                self.lines.append(f"{name} = np.fmax(np.heaviside({self._atom(step[0])}, "
                                  f"{self._atom(step[1])}), {self._atom(step[2])})")
            return
        call = self._call(eqn)
        outs = self._name_outputs(eqn)
        target = ", ".join(outs) + ("," if eqn.prim.multiple_results and len(outs) == 1 else "")
        if eqn.prim.multiple_results and not outs:
            target = "_"
        self.lines.append(f"{target} = {call}")
        for sym, output in eqn.prim.defined_dims(eqn.params):  # a while loop's trip count
            self.dims[id(resolve(sym))] = dim = self.fresh("n")
            self.lines.append(f"{dim} = int({outs[output]})")

    def _deferrable(self, eqn) -> bool:
        """Whether `eqn`'s one reader may write it away: a one-position scatter read
        by an add (added in place), a unit row put into a stack left as rows, or a
        row of such a stack whose unit axis is squeezed (the row itself, both)."""
        out = eqn.outputs[0] if eqn.outputs else None
        users = self.consumers.get(id(out), ()) if out is not None else ()
        if len(users) != 1 or id(out) in self.outputs:
            return False
        (user,) = users
        return (_one_position(eqn)
                or _leading_unit(eqn) and self._rows_of(user)
                or self._squeezed_row(user, eqn))

    def _squeezed_row(self, user, eqn) -> bool:
        return (user.prim.name == "squeeze" and tuple(user.params["axes"]) == (0,)
                and _row_of(eqn) is not None and id(eqn.inputs[0]) in self.rows)

    def _name_outputs(self, eqn) -> list:
        outs = [self.fresh("v") for _ in eqn.outputs]
        for var, name in zip(eqn.outputs, outs):
            self.names[id(var)] = name
        return outs

    def _call(self, eqn) -> str:
        """The expression computing `eqn`'s output(s)."""
        added = self._added_at(eqn)
        if added is not None:
            return added
        waiting = self.deferred.get(id(eqn.inputs[0])) if eqn.inputs else None
        if waiting is not None and self._squeezed_row(eqn, waiting):
            del self.deferred[id(eqn.inputs[0])]
            return f"{self._atom(waiting.inputs[0])}[{_row_of(waiting)}]"
        static = {k: v for k, v in eqn.params.items() if not _sized_param(v)}
        dynamic = {k: v for k, v in eqn.params.items() if _sized_param(v)}
        args = [] if self._rows_of(eqn) else [self._atom(a) for a in eqn.inputs]
        impl, inline = self._impl(eqn)
        if eqn.prim.name == "scan":
            static["unstacked"] = self._unstacked(eqn)
        row = _row_of(eqn) if eqn.inputs and id(eqn.inputs[0]) in self.rows else None
        if self._rows_of(eqn):
            self.namespace["Rows"] = Rows
            self.rows.add(id(eqn.outputs[0]))
            return f"Rows([{', '.join(self._row(a) for a in eqn.inputs)}])"
        if row is not None:  # one row of a stack left as rows
            return f"{args[0]}[{row}][None]"
        if inline is not None:  # an expression, its parameters written in
            return inline.format(*args)
        fn = self.fresh(f"{eqn.prim.name}_")  # named for reading
        self.namespace[fn] = functools.partial(impl, **static) if static else impl
        args += [f"{k}={self._sizes(v)}" for k, v in dynamic.items()]
        spare = self._spare_operand(eqn) if not eqn.params else None
        if spare is not None:  # written into an operand's buffer, dead after this
            args.append(f"out={self._atom(spare)}")
        return f"{fn}({', '.join(args)})"

    def _row(self, atom) -> str:
        """A unit row of a stack left as rows: the array it was made from."""
        waiting = self.deferred.pop(id(atom), None)
        if waiting is not None and _leading_unit(waiting):
            return self._atom(waiting.inputs[0])
        if waiting is not None:
            self._equation(waiting, now=True)
        return f"{self._atom(atom)}[0]"

    def _inline_scan(self, eqn) -> bool:
        """A scan as a Python loop with its body written inline: no call, argument
        tuple or output list per step, the body's loop-invariant equations run
        once before the loop, and the per-step values only later loops read kept
        as their rows. A length known only at run time may be 0: then `impl`."""
        length = eqn.params["length"]
        if isinstance(length, Sym) and type(resolve(length)) is int:
            length = resolve(length)
        if type(length) is int:
            if length < 1:
                return False
            self._write_loop(eqn, str(length), self._name_outputs(eqn))
            return True
        steps = self._sizes(length)
        for atom in eqn.inputs:  # deferred operands written before both branches
            self._atom(atom)
        outer, self.lines = self.lines, []
        outs = self._name_outputs(eqn)
        self._write_loop(eqn, steps, outs)
        loop, self.lines = self.lines, outer
        call = self._call(eqn)
        self.lines += [f"if {steps}:"] + [f"    {x}" for x in loop] + [
            "else:", f"    {', '.join(outs)}, = {call}"]
        return True

    def _write_loop(self, eqn, steps: str, outs: list) -> None:
        p = eqn.params
        body, n_consts, n_carry = p["body"], p["n_consts"], p["n_carry"]
        args = [self._atom(a) for a in eqn.inputs]
        unstacked = self._unstacked(eqn)
        inner = _Writer(body, outer=self)
        for k, (var, name) in enumerate(zip(body.invars, args)):
            stacked = k >= n_consts + n_carry
            for axis, d in enumerate(var.aval.shape):
                root = resolve(d)
                if type(root) is not int and id(root) not in inner.dims:
                    inner.dims[id(root)] = dim = self.fresh("n")
                    self.lines.append(f"{dim} = np.shape({name})[{axis + stacked}]")
        carry = [self.fresh("c") for _ in range(n_carry)]
        rows = [self.fresh("y") for _ in body.outvars[n_carry:]]
        for names, values in ((carry, args[n_consts:n_consts + n_carry]), (rows, None)):
            if names:
                values = values or ["[]"] * len(names)
                self.lines.append(f"{', '.join(names)}, = {', '.join(values)},")
        step = self.fresh("t")
        order = f"range({steps} - 1, -1, -1)" if p["reverse"] else f"range({steps})"
        loop = inner.write_loop_body(args[:n_consts], carry, args[n_consts + n_carry:], rows,
                                     step)
        self.lines += inner.hoisted + [f"for {step} in {order}:"] + [f"    {x}" for x in loop]
        for name, c in zip(outs, carry):
            self.lines.append(f"{name} = np.asarray({c})")
        for k, (name, row) in enumerate(zip(outs[n_carry:], rows)):
            if p["reverse"]:
                self.lines.append(f"{row}.reverse()")
            self.namespace["Rows"] = Rows
            self.lines.append(f"{name} = {'Rows' if k in unstacked else 'np.stack'}({row})")

    def write_loop_body(self, consts: list, carry: list, xs: list, rows: list,
                        step: str) -> list:
        """The lines of one step of a loop whose body is this writer's program;
        its invariant equations go to `self.hoisted`."""
        body = self.program
        n_consts, n_carry = len(consts), len(carry)
        for var, name in zip(body.invars, consts + carry):
            self.names[id(var)] = name
        loop: list = []
        for var, stack in zip(body.invars[n_consts + n_carry:], xs):
            self.names[id(var)] = self.fresh("x")
            loop.append(f"{self.names[id(var)]} = {stack}[{step}]")
        invariant = {id(v) for v in body.invars[:n_consts]}
        invariant.update(id(v) for v, out in zip(body.invars[n_consts:], body.outvars[:n_carry])
                         if v is out)  # a carry passed on unchanged
        self.hoisted: list = []
        for eqn in body.eqns:
            still = _hoistable(eqn) and all(
                id(a) in invariant for a in eqn.inputs if isinstance(a, Var))
            self.lines = self.hoisted if still else loop
            if still:
                invariant.update(id(v) for v in eqn.outputs)
                self.once.update(id(v) for v in eqn.outputs)
            self._equation(eqn)
        outs = [self._atom(a) for a in body.outvars]
        self.lines = loop  # rows first: a row may be this step's carry, read before it moves
        loop += [f"{row}.append({out})" for row, out in zip(rows, outs[n_carry:])]
        if carry:
            loop.append(f"{', '.join(carry)}, = {', '.join(outs[:n_carry])},")
        return loop

    def _read_by_scans_only(self, var, slices: bool = False) -> bool:
        """Whether only scans read `var`, and only as xs (one row a step); with
        `slices`, single rows sliced out of it are fine too."""
        users = self.consumers.get(id(var), ())
        return bool(users) and id(var) not in self.outputs and all(
            (u.prim.name == "scan" and all(
                k >= u.params["n_consts"] + u.params["n_carry"]
                for k, a in enumerate(u.inputs) if a is var))
            or (slices and _row_of(u) is not None) for u in users)

    def _unstacked(self, eqn) -> tuple:
        """The per-step outputs of scan `eqn` to leave as rows. Sliced rows may
        reach the program's outputs, so only rows the body makes afresh (not
        views of its inputs, which may be the caller's arrays) are sliced."""
        body, n_carry = eqn.params["body"], eqn.params["n_carry"]
        made = {id(v): e for e in body.eqns for v in e.outputs}
        unstacked = []
        for k, var in enumerate(eqn.outputs[n_carry:]):
            fresh = id(body.outvars[n_carry + k]) in made and _fresh_array(
                made[id(body.outvars[n_carry + k])])
            if self._read_by_scans_only(var, slices=fresh):
                unstacked.append(k)
                self.rows.add(id(var))
        return tuple(unstacked)

    def _rows_of(self, eqn) -> bool:
        """A concatenation of unit rows that only scans read is left as its rows."""
        return (eqn.prim.name == "concatenate" and eqn.params["axis"] == 0
                and all(isinstance(a, Var) and a.aval.ndim and resolve(a.aval.shape[0]) == 1
                        for a in eqn.inputs)
                and self._read_by_scans_only(eqn.outputs[0]))

    def _spare_operand(self, eqn, only=None):
        """An operand whose buffer a ufunc `eqn` may write its result into: an
        array made by a ufunc or a product in this program (not an input, a view
        or a lazy broadcast), read by `eqn` alone, of the result's shape and dtype."""
        out = eqn.outputs[0]
        if (eqn.prim.kind != ELEMENTWISE or not isinstance(eqn.prim.impl, np.ufunc)
                or eqn.prim.impl.nout != 1 or not out.aval.ndim):
            return None
        for atom in eqn.inputs if only is None else [only]:
            producer = self.producer.get(id(atom)) if isinstance(atom, Var) else None
            if (producer is not None and _fresh_array(producer) and id(atom) not in self.once
                    and len(self.consumers.get(id(atom), ())) == 1
                    and id(atom) not in self.outputs and atom.aval.dtype == out.aval.dtype
                    and resolve_shape(atom.aval.shape) == resolve_shape(out.aval.shape)):
                return atom
        return None

    def _impl(self, eqn) -> tuple:
        """(the callable for `eqn`, or None and its inline expression)."""
        prim = eqn.prim
        shortcut = (self._scalar_operator(eqn) or _matrix_product(eqn) or _pick_one(eqn)
                    or self._filled(eqn) or self._scatter_one(eqn))
        if shortcut is not None:
            return None, shortcut
        lazy = self._lazy_broadcast(eqn)
        if prim.impl_source is not None:
            inline = prim.impl_source(eqn, lazy, self._sizes)
            if inline is not None and eqn.inputs and eqn.inputs[0].aval.ndim:
                inline = inline.replace("np.asarray({0})", "{0}")  # an array already
            if inline is not None:
                return None, inline
        return (prim.impl_broadcasting if lazy else prim.impl), None

    def _scalar_operator(self, eqn):
        """A float scalar's arithmetic as Python's operator: a NumPy scalar's own
        method costs ~0.05 us where the ufunc's call costs ~1 us. Only where an
        operand is a NumPy scalar made here (a literal or a result): a user's
        Python floats would raise ZeroDivisionError where NumPy gives inf."""
        if eqn.outputs[0].aval.ndim or any(a.aval.ndim for a in eqn.inputs):
            return None
        if eqn.prim.name == "select":  # a scalar's where: one of two values
            self.maybe_python.add(id(eqn.outputs[0]))
            return "({1} if {0} else {2})"
        symbol = _OPERATORS.get(eqn.prim.name)
        if (symbol is None or any(a.aval.dtype.kind not in "fc" for a in eqn.inputs)
                or not any(isinstance(a, Literal) or (
                    id(a) in self.producer and id(a) not in self.maybe_python)
                    for a in eqn.inputs)):
            return None
        if len(eqn.inputs) == 1:
            return f"({symbol}{{0}})"
        return f"({{0}} {symbol} {{1}})"

    def _filled(self, eqn):
        """A literal broadcast to a full array (a loop's zero accumulator), as a
        read-only array of zero strides over the literal's bytes, as broadcast_to
        makes it at a quarter of its cost."""
        (x,) = eqn.inputs if eqn.prim.name == "broadcast_in_dim" else (None,)
        out = eqn.outputs[0].aval
        if not isinstance(x, Literal) or not out.ndim or self._lazy_broadcast(eqn):
            return None
        value, dtype = self.fresh("k"), self.fresh("d")
        self.namespace[value] = np.asarray(x.value, out.dtype).tobytes()  # immutable
        self.namespace[dtype] = out.dtype
        shape = self._sizes(tuple(out.shape))
        return f"np.ndarray({shape}, {dtype}, {value}, 0, {(0,) * out.ndim})"

    def _added_at(self, eqn):
        """scatter-add(g, at i) + y, y dead after this: g added into y's buffer at i
        (no zeros, no second pass), the same sums."""
        if eqn.prim.name != "add" or not eqn.outputs[0].aval.ndim:
            return None
        for k in (0, 1):
            scatter = self.deferred.get(id(eqn.inputs[k]))
            y = eqn.inputs[1 - k]
            if scatter is not None and self._spare_operand(eqn, only=y) is y:
                del self.deferred[id(eqn.inputs[k])]
                g, *where = (self._atom(a) for a in scatter.inputs)
                fn = self.fresh("add_at_")
                self.namespace[fn] = functools.partial(_add_at, axis=scatter.params["axis"])
                return f"{fn}({self._atom(y)}, {g}, ({', '.join(where)},))"
        return None

    def _scatter_one(self, eqn):
        """A scatter-add of one value (the adjoint of picking one element) needs no
        np.add.at: its one position is added to in place."""
        if not _one_position(eqn):
            return None
        fn = self.fresh("scatter_at_")
        self.namespace[fn] = functools.partial(
            _scatter_at, axis=eqn.params["axis"], dtype=eqn.outputs[0].aval.dtype)
        where = ", ".join(f"{{{k}}}" for k in range(1, len(eqn.inputs)))
        return f"{fn}({{0}}, ({where},), {self._sizes(tuple(eqn.params['shape']))})"

    def _lazy_broadcast(self, eqn) -> bool:
        """Whether `eqn`'s result may be left to NumPy's broadcasting in its consumers."""
        out = eqn.outputs[0]
        return (eqn.prim.impl_broadcasting is not None and id(out) not in self.outputs
                and all(u.prim.kind == ELEMENTWISE and self._restores_shape(u, out)
                        for u in self.consumers.get(id(out), ())))

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


class Rows(list):
    """A stack left as its rows (a scan's xs or ys that only scans read): a scan
    reads them one row at a time, so the interpreter never copies them into one
    array (the weights of a rolled 16-layer MLP, the per-layer residuals)."""

    __slots__ = ("shape",)

    def __init__(self, rows):
        super().__init__(rows)
        self.shape = (len(self),) + np.shape(self[0])


_OPERATORS = {"add": "+", "sub": "-", "mul": "*", "div": "/", "neg": "-", "gt": ">", "lt": "<",
              "ge": ">=", "le": "<=", "eq": "==", "ne": "!="}


def _read_sizes(lines: list) -> list:
    """`lines` without the sizes read from inputs that nothing uses."""
    text = "\n".join(lines)
    unused = {name for name in re.findall(r"^\s*(n\d+) = np\.shape\(", text, re.M)
              if len(re.findall(rf"\b{name}\b", text)) == 1}
    return [line for line in lines if line.strip().split(" = ")[0] not in unused]


def _matrix_product(eqn):
    """A matmul over a unit axis multiplies, exactly (one term per sum), at a third
    of BLAS's cost (`h[:, None] @ g[None, :]` in a backward pass); of vectors and
    matrices it is np.dot, the same BLAS call without the ufunc machinery (and
    with a transposed float32 operand, BLAS rather than NumPy's own loop)."""
    if eqn.prim.name != "matmul" or eqn.params:
        return None
    a, b = (x.aval for x in eqn.inputs)
    if a.ndim >= 2 and b.ndim >= 2 and is_one(a.shape[-1]) and is_one(b.shape[-2]):
        return "np.multiply({0}, {1})"
    if a.ndim <= 2 and b.ndim <= 2:
        return "np.dot({0}, {1})"
    return None


def _pick_one(eqn):
    """A gather at one position (`logits[y]`) is plain indexing."""
    if eqn.prim.name != "gather" or any(a.aval.ndim for a in eqn.inputs[1:]) \
            or not eqn.inputs[0].aval.ndim:
        return None
    where = [":"] * eqn.params["axis"] + [f"{{{k}}}" for k in range(1, len(eqn.inputs))]
    return f"{{0}}[{', '.join(where)}]"


def _leading_unit(eqn) -> bool:
    """Whether `eqn` only puts a unit axis in front of its operand."""
    if eqn.prim.name not in ("broadcast_in_dim", "reshape") or not eqn.inputs:
        return False
    x, out = eqn.inputs[0], eqn.outputs[0].aval
    if not isinstance(x, Var) or out.ndim != x.aval.ndim + 1 or not is_one(out.shape[0]):
        return False
    same = resolve_shape(tuple(out.shape[1:])) == resolve_shape(tuple(x.aval.shape))
    return same and (eqn.prim.name == "reshape"
                     or tuple(eqn.params["bdims"]) == tuple(range(1, out.ndim)))


def _one_position(eqn) -> bool:
    return eqn.prim.name == "scatter_add" and not any(a.aval.ndim for a in eqn.inputs[1:])


def _add_at(y, g, indices, *, axis):
    y[(slice(None),) * axis + indices] += g
    return y


def _scatter_at(g, indices, shape, *, axis, dtype):
    out = np.zeros(shape, dtype)
    out[(slice(None),) * axis + indices] += g  # one position: no repeats to accumulate
    return out


def _relu_slopes(program: Program, consumers: dict, outputs: set) -> dict:
    """The slope of max(a, 0) with ties split (JAX's), as the adjoint writes it:
    select(a > 0, 1, select(a == 0, 0.5, 0)). Two comparisons and two wheres
    (one of them broadcasting two scalars) are np.fmax(np.heaviside(a, 0.5), 0),
    the same numbers (fmax turns heaviside's NaN for a NaN into select's 0).
    Returns id(eqn) -> (a, 0.5, 0) for the outer select, () for the equations
    it absorbs."""
    producer = {id(v): e for e in program.eqns for v in e.outputs}

    def made(atom, names):
        eqn = producer.get(id(atom)) if isinstance(atom, Var) else None
        alone = eqn is not None and id(atom) not in outputs and len(
            consumers.get(id(atom), ())) == 1
        return eqn if alone and eqn.prim.name in names else None

    steps: dict = {}
    for eqn in program.eqns:
        if eqn.prim.name != "select" or not _is(eqn.inputs[1], 1):
            continue
        above, half = made(eqn.inputs[0], ("gt", "lt")), made(eqn.inputs[2], ("select",))
        tie = half and _is(half.inputs[1], 0.5) and _is(half.inputs[2], 0) and made(
            half.inputs[0], ("eq",))
        a = _against_zero(above) if above and tie else None
        if a is None or _against_zero(tie) is not a or eqn.outputs[0].aval.dtype != a.aval.dtype:
            continue
        steps.update({id(above): (), id(half): (), id(tie): ()})
        steps[id(eqn)] = (a, half.inputs[1], half.inputs[2])
    return steps


def _against_zero(eqn):
    """a, if `eqn` is a > 0, 0 < a, a == 0 or 0 == a for a float a."""
    a, b = eqn.inputs if eqn.prim.name != "lt" else eqn.inputs[::-1]
    if eqn.prim.name == "eq" and _is(a, 0):
        a, b = b, a
    return a if _is(b, 0) and isinstance(a, Var) and a.aval.dtype.kind == "f" else None


def _is(atom, value) -> bool:
    return isinstance(atom, Literal) and atom.value == value


def _hoistable(eqn) -> bool:
    """Whether `eqn` computes a pure function of its operands (and may run once for
    every step of a loop whose operands it does not read)."""
    return (eqn.prim.kind in (ELEMENTWISE, INDEXMAP, REDUCE) and not eqn.prim.multiple_results
            or eqn.prim.name == "matmul")


def _fresh_array(eqn) -> bool:
    """Whether `eqn`'s result is a new array nothing else refers to."""
    return (eqn.prim.kind == REDUCE or not eqn.params and eqn.prim.name == "matmul"
            or eqn.prim.name in ("select", "scatter_add")  # np.where, zeros: new arrays
            or isinstance(eqn.prim.impl, np.ufunc) and not eqn.params)


def _row_of(eqn):
    """k if `eqn` slices out row k of its operand (axis 0, every other axis whole)."""
    if eqn.prim.name != "slice":
        return None
    starts, stops, steps = eqn.params["starts"], eqn.params["stops"], eqn.params["steps"]
    rest = zip(starts[1:], stops[1:], steps[1:])
    if (steps[0] == 1 and type(starts[0]) is int and stops[0] == starts[0] + 1
            and all((a, b, c) == (0, None, 1) for a, b, c in rest)):
        return starts[0]
    return None


def _sized_param(value) -> bool:
    return isinstance(value, Sym) or (isinstance(value, tuple) and any(map(_sized_param, value)))
