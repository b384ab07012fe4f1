"""The algebraic simplifier (after XLA's AlgebraicSimplifier): rewrites that
make a program cheaper without changing what it computes, so the
interpreter runs fewer NumPy calls, the code generator writes smaller nests
and Numba compiles less, all at once.

- `relax_broadcasts`: a broadcast read only by elementwise ops that get the
  full shape from another operand is left to their broadcasting: a literal's
  broadcast becomes the literal, an array's keeps unit axes (`x[:, None]`);
  the same value broadcast twice is then one equation for CSE;
- `fold_chains`: broadcast of a broadcast, broadcast undoing a squeeze (and
  back), a transposed broadcast, reshape of a reshape, a sum of a sum are one
  equation or none; a sum of negated terms is a negated sum (a scalar's
  negation, not an array's); in an adjoint, the total of a scatter-add (the
  cotangent of picking elements) is the total of its updates;
- `detach_shifts` (before differentiation): a max (or min) whose shift the
  differentiated outputs cannot see, as in `x - max(x)` feeding log-sum-exp,
  softmax or log-softmax, is under stop_gradient, as in JAX's logsumexp: its
  cotangent is zero exactly (softmax rows sum to one), so the adjoint of the
  max (a comparison, a count, a division, a product and a sum) is dropped;
- `fold_selects`: `select(c, x, 0) * y` is `select(c, x * y, 0)`, a bool
  converted to a number and multiplied is a select, and two selects on
  exclusive conditions (`a > b`, `a == b`) that are added are one nested
  select: relu's derivative times its cotangent is `where(h > 0, g, ...)`,
  not two masks, an add and a product.

Values agree with the program before (a sum of a sum may round differently,
as any reordered sum); in the adjoint, where a cotangent is inf or NaN, a
product with a zero mask now gives 0, not NaN, as the zero-preserving
products of autodiff.py already do (the user's own products are left alone).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..core.errors import BACKWARD
from ..core.ir import AVal, Eqn, Literal, Program, Var, consumers_of
from ..core.shapes import resolve_shape
from ..trace.registry import ELEMENTWISE, REGISTRY


def simplify_algebra(program: Program) -> Program:
    for step in (fold_chains, relax_broadcasts, fold_chains, fold_selects):
        program = step(program)
    return program


# ------------------------------------------------------------------ the driver

class _Rewriter:
    """One forward pass: `rule(eqn) -> atom | None` sees operands already
    rewritten, looks up the equations defining them (`defining`), and may emit
    new equations (`emit`, which runs the rules and the primitive's own
    `simplify` on them too)."""

    def __init__(self, program: Program, rule):
        self.program, self.rule = program, rule
        self.subst: dict[int, object] = {}
        self.defining: dict[int, Eqn] = {}
        self.eqns: list = []
        self.uses = _use_counts(program)

    def read(self, atom):
        return self.subst.get(id(atom), atom) if isinstance(atom, Var) else atom

    def define(self, atom):
        return self.defining.get(id(atom)) if isinstance(atom, Var) else None

    def single_use(self, atom) -> bool:
        return isinstance(atom, Var) and self.uses.get(id(atom), 0) == 1

    def emit(self, name: str, inputs: list, params: dict | None = None, like: Eqn = None):
        """A new equation's output (or what it simplifies to)."""
        prim, params = REGISTRY[name], params or {}
        (aval,) = prim.abstract_eval([a.aval for a in inputs], params, None)
        eqn = Eqn(prim, inputs, params, [Var(aval)], like.location if like else "")
        return self.place(eqn)

    def place(self, eqn: Eqn):
        result = self.rule(self, eqn)
        if result is None and eqn.prim.simplify:
            result = eqn.prim.simplify(eqn)
        if isinstance(result, (Var, Literal)):
            return result
        self.eqns.append(eqn)
        self.defining.update((id(v), eqn) for v in eqn.outputs)
        return eqn.outputs[0]

    def run(self) -> Program:
        for eqn in self.program.eqns:
            eqn = Eqn(eqn.prim, [self.read(a) for a in eqn.inputs], eqn.params, eqn.outputs,
                      eqn.location)
            result = self.rule(self, eqn) if not eqn.prim.multiple_results else None
            if result is None:
                self.eqns.append(eqn)
                self.defining.update((id(v), eqn) for v in eqn.outputs)
            else:
                self.subst[id(eqn.outputs[0])] = result
        outvars = [self.read(a) for a in self.program.outvars]
        return replace(self.program, eqns=self.eqns, outvars=outvars)


def _use_counts(program: Program) -> dict:
    counts: dict = {}
    for atom in [a for e in program.eqns for a in e.inputs] + list(program.outvars):
        if isinstance(atom, Var):
            counts[id(atom)] = counts.get(id(atom), 0) + 1
    return counts


def _same_shape(a, b) -> bool:
    return resolve_shape(tuple(a)) == resolve_shape(tuple(b))


def _is_literal(atom, value) -> bool:
    return isinstance(atom, Literal) and atom.value == value


# ------------------------------------------------------------ relax broadcasts

def relax_broadcasts(program: Program) -> Program:
    consumers = consumers_of(program)
    outputs = {id(a) for a in program.outvars}
    relaxable = {id(e.outputs[0]) for e in program.eqns
                 if e.prim.name == "broadcast_in_dim" and id(e.outputs[0]) not in outputs
                 and consumers.get(id(e.outputs[0]))}
    relaxable = {v for v in relaxable if all(_completes(u, relaxable) for u in consumers[v])}

    def rule(rw, eqn):
        if id(eqn.outputs[0]) not in relaxable:
            return None
        (x,), bdims = eqn.inputs, eqn.params["bdims"]
        if isinstance(x, Literal):
            return Literal(x.value, AVal((), x.aval.dtype, x.aval.weak))
        rank = len(eqn.params["shape"])
        if list(bdims) == list(range(rank - x.aval.ndim, rank)):
            return x  # NumPy's broadcasting aligns the trailing axes
        unit = [1] * rank
        for k, b in enumerate(bdims):
            unit[b] = x.aval.shape[k]
        if _same_shape(unit, eqn.params["shape"]):
            return None
        return rw.emit("broadcast_in_dim", [x], {"shape": tuple(unit), "bdims": bdims}, eqn)

    return _Rewriter(program, rule).run()


def _completes(user: Eqn, relaxable: set) -> bool:
    """An elementwise `user` whose output shape some operand, not itself relaxed,
    already has: NumPy-style broadcasting restores the rest."""
    if user.prim.kind != ELEMENTWISE or user.prim.multiple_results:
        return False
    full = user.outputs[0].aval.shape
    return any(isinstance(a, Var) and id(a) not in relaxable and _same_shape(a.aval.shape, full)
               for a in user.inputs)


# ----------------------------------------------------------------- fold chains

def fold_chains(program: Program) -> Program:
    return _Rewriter(program, _chain_rule).run()


def _chain_rule(rw, eqn):
    name = eqn.prim.name
    if name == "broadcast_in_dim":
        return _fold_broadcast(rw, eqn)
    if name == "squeeze":
        return _fold_squeeze(rw, eqn)
    if name == "reshape":
        return _fold_reshape(rw, eqn)
    if name == "reduce_sum":
        return _fold_sum(rw, eqn)
    if name == "transpose":
        return _fold_transpose(rw, eqn)
    return None


def _fold_transpose(rw, eqn):
    """A transposed broadcast that keeps its operand's axes in order is one
    broadcast (a vector's column: `h[None, :].T` is `h[:, None]`)."""
    (x,), perm = eqn.inputs, eqn.params["perm"]
    inner = rw.define(x)
    if inner is None or inner.prim.name != "broadcast_in_dim" or not rw.single_use(x):
        return None
    bdims = tuple(perm.index(b) for b in inner.params["bdims"])
    if list(bdims) != sorted(bdims):
        return None
    shape = tuple(inner.params["shape"][p] for p in perm)
    return rw.emit("broadcast_in_dim", inner.inputs, {"shape": shape, "bdims": bdims}, eqn)


def _fold_broadcast(rw, eqn):
    (x,), shape, bdims = eqn.inputs, eqn.params["shape"], eqn.params["bdims"]
    if _same_shape(x.aval.shape, shape) and list(bdims) == list(range(len(shape))):
        return x
    inner = rw.define(x)
    if inner is None:
        return None
    if inner.prim.name == "broadcast_in_dim":  # one broadcast straight to the target
        composed = tuple(bdims[b] for b in inner.params["bdims"])
        return rw.emit("broadcast_in_dim", inner.inputs, {"shape": shape, "bdims": composed},
                       eqn)
    if inner.prim.name == "squeeze":  # the squeezed unit axes put back
        (y,) = inner.inputs
        kept = [k for k in range(y.aval.ndim) if k not in inner.params["axes"]]
        if _same_shape(y.aval.shape, shape) and list(bdims) == kept:
            return y
    return None


def _fold_squeeze(rw, eqn):
    (x,), axes = eqn.inputs, eqn.params["axes"]
    inner = rw.define(x)
    if inner is None or inner.prim.name != "broadcast_in_dim":
        return None
    (y,), bdims = inner.inputs, inner.params["bdims"]
    kept = [k for k in range(x.aval.ndim) if k not in axes]
    if list(bdims) == kept and _same_shape(y.aval.shape, eqn.outputs[0].aval.shape):
        return y  # squeezing exactly the axes the broadcast added
    return None


def _fold_reshape(rw, eqn):
    (x,), shape = eqn.inputs, eqn.params["shape"]
    if _same_shape(x.aval.shape, shape):
        return x
    inner = rw.define(x)
    if inner is not None and inner.prim.name == "reshape":
        (y,) = inner.inputs
        return y if _same_shape(y.aval.shape, shape) else rw.emit(
            "reshape", [y], {"shape": shape}, eqn)
    return None


def _fold_sum(rw, eqn):
    """A sum of a sum read nowhere else is one sum over both sets of axes; a sum
    of negated terms is the negated sum (exactly: rounding is symmetric)."""
    (x,), axes = eqn.inputs, eqn.params["axes"]
    inner = rw.define(x)
    if inner is not None and inner.prim.name == "scatter_add" and len(axes) == x.aval.ndim \
            and eqn.location.endswith(BACKWARD):  # the forward's gather checked the indices
        (g, *_) = inner.inputs  # every update lands once: the total is theirs
        return g if not g.aval.ndim else rw.emit(
            "reduce_sum", [g], {"axes": tuple(range(g.aval.ndim))}, eqn)
    if inner is None or not rw.single_use(x):
        return None
    negated = _negated(inner)
    if negated is not None:
        return rw.emit("neg", [rw.emit("reduce_sum", [negated], {"axes": axes}, eqn)], like=eqn)
    if inner.prim.name != "reduce_sum":
        return None
    (y,) = inner.inputs
    left = [k for k in range(y.aval.ndim) if k not in inner.params["axes"]]
    merged = tuple(sorted(set(inner.params["axes"]) | {left[a] for a in axes}))
    return rw.emit("reduce_sum", [y], {"axes": merged}, eqn)


def _negated(eqn):
    """y if `eqn` computes -y (neg, or a product with -1 that does not broadcast y)."""
    if eqn.prim.name == "neg":
        return eqn.inputs[0]
    if eqn.prim.name == "mul":
        for k in (0, 1):
            y = eqn.inputs[1 - k]
            if (_is_literal(eqn.inputs[k], -1) and isinstance(y, Var)
                    and y.aval.same_type(eqn.outputs[0].aval)):
                return y
    return None


# ---------------------------------------------------------------- fold selects

def fold_selects(program: Program) -> Program:
    return _Rewriter(program, _select_rule).run()


def _select_rule(rw, eqn):
    name = eqn.prim.name
    if name == "mul":
        return _masked_product(rw, eqn)
    if name == "add":
        return _exclusive_sum(rw, eqn)
    return None


def _as_select(rw, atom):
    """(condition, value, on_true) if `atom`, read only here, is `select(c, value, 0)`
    (on_true) or `select(c, 0, value)`, or a bool converted to a number (value 1)."""
    eqn = rw.define(atom)
    if eqn is None or not rw.single_use(atom):
        return None
    if eqn.prim.name == "select":
        cond, if_true, if_false = eqn.inputs
        if _is_literal(if_false, 0):
            return cond, if_true, True
        if _is_literal(if_true, 0):
            return cond, if_false, False
    if (eqn.prim.name == "convert" and eqn.inputs[0].aval.dtype == np.bool_
            and eqn.outputs[0].aval.dtype.kind in "fc"):
        return eqn.inputs[0], Literal(1, AVal((), eqn.outputs[0].aval.dtype)), True
    return None


def _masked(rw, cond, value, on_true: bool, like: Eqn):
    zero = Literal(0, AVal((), value.aval.dtype))
    return rw.emit("select", [cond, value, zero] if on_true else [cond, zero, value], like=like)


def _masked_product(rw, eqn):
    """select(c, x, 0) * y -> select(c, x * y, 0) (and with the branches swapped), in
    the adjoint only: where y is inf or NaN the product is now 0, autodiff's
    convention (and JAX's relu), while the user's own `(x > 0) * y` keeps NumPy's NaN."""
    if not eqn.location.endswith(BACKWARD):
        return None
    out = eqn.outputs[0].aval
    for k in (0, 1):
        masked, other = eqn.inputs[k], eqn.inputs[1 - k]
        found = _as_select(rw, masked)
        if (found is None or not isinstance(other, Var) or other.aval.dtype != out.dtype
                or not all(_same_shape(a.aval.shape, out.shape) for a in (masked, other))):
            continue  # a select on fewer elements than the product stays the cheaper
        cond, value, on_true = found
        return _masked(rw, cond, rw.emit("mul", [value, other], like=eqn), on_true, eqn)
    return None


def _condition(rw, cond):
    """(comparison, a, b) of a condition, comparisons written with > or ==."""
    eqn = rw.define(cond)
    if eqn is None or eqn.prim.name not in ("gt", "lt", "eq"):
        return None
    a, b = eqn.inputs
    if eqn.prim.name == "lt":
        return "gt", b, a
    return eqn.prim.name, a, b


def _exclusive(rw, c1, c2) -> bool:
    """Whether c1 and c2 are never true together (a > b and a == b)."""
    first, second = _condition(rw, c1), _condition(rw, c2)
    if first is None or second is None:
        return False
    (op1, *ab1), (op2, *ab2) = first, second
    same = all(_same_atom(x, y) for x, y in zip(ab1, ab2))
    swapped = all(_same_atom(x, y) for x, y in zip(ab1, ab2[::-1]))
    if op1 == op2 == "gt":
        return swapped
    return {op1, op2} == {"gt", "eq"} and (same or swapped)


def _same_atom(a, b) -> bool:
    if isinstance(a, Literal) and isinstance(b, Literal):
        return a.aval.dtype == b.aval.dtype and a.value == b.value
    return a is b


def _exclusive_sum(rw, eqn):
    """select(c1, x, 0) + select(c2, y, 0) -> select(c1, x, select(c2, y, 0)) when
    c1 and c2 exclude each other (x + 0 is x)."""
    first, second = (_as_select(rw, a) for a in eqn.inputs)
    out = eqn.outputs[0].aval
    if (first is None or second is None or not (first[2] and second[2])
            or not _exclusive(rw, first[0], second[0])):
        return None
    inner = _masked(rw, second[0], second[1], True, eqn)
    result = rw.emit("select", [first[0], first[1], inner], like=eqn)
    return result if _same_shape(result.aval.shape, out.shape) else None  # no new broadcast


# --------------------------------------------------------------- detach shifts
#
# Shift a max m by d (per kept element). A value that depends on m then changes
# as v + c*d ("add", c) or v * exp(c*d) ("scale", c), for an integer c, d read
# along some of the value's axes (`axes`, one per axis of m); c == 0 is not
# changed at all. If every differentiated output is unchanged for every d, its
# derivative with respect to m is zero, and m can be a constant to autodiff.

_ADD, _SCALE = "add", "scale"


class _Unknown(Exception):
    """A value depends on the shift in a way these rules do not follow."""


def detach_shifts(program: Program, seeded: list) -> Program:
    """`program` with the shift-invariant maxes and mins under stop_gradient (seeded[k]:
    whether output k is differentiated). The same max taken twice is one shift."""
    consumers = consumers_of(program)
    watched = {id(a) for a, s in zip(program.outvars, seeded) if s and isinstance(a, Var)}
    groups: dict = {}
    for k, eqn in enumerate(program.eqns):
        if (eqn.prim.name in ("reduce_max", "reduce_min") and isinstance(eqn.inputs[0], Var)
                and eqn.outputs[0].aval.dtype.kind == "f"):
            key = (eqn.prim.name, id(eqn.inputs[0]), tuple(eqn.params["axes"]))
            groups.setdefault(key, []).append(k)
    detached = {}
    for members in groups.values():
        if _invisible_shift(program.eqns, members, consumers, watched):
            for k in members:
                out = program.eqns[k].outputs[0]
                detached[id(out)] = Var(out.aval)
    if not detached:
        return program
    eqns = []
    for eqn in program.eqns:
        inputs = [detached.get(id(a), a) if isinstance(a, Var) else a for a in eqn.inputs]
        eqns.append(Eqn(eqn.prim, inputs, eqn.params, eqn.outputs, eqn.location))
        if eqn.outputs and id(eqn.outputs[0]) in detached:
            eqns.append(Eqn(REGISTRY["stop_gradient"], [eqn.outputs[0]], {},
                            [detached[id(eqn.outputs[0])]], eqn.location))
    return replace(program, eqns=eqns)


def _invisible_shift(eqns: list, members: list, consumers: dict, watched: set) -> bool:
    """Whether no differentiated output sees one shift of the results of eqns[members]."""
    states, pending = {}, 0  # pending: reads of shifted values not yet followed
    starts = set(members)
    try:
        for k in range(members[0], len(eqns)):
            eqn = eqns[k]
            if k in starts:
                out = eqn.outputs[0]
                state = (_ADD, 1, tuple(range(out.aval.ndim)))
            elif pending == 0 and k > members[-1]:
                break
            else:
                shifted = [states.get(id(a)) if isinstance(a, Var) else None
                           for a in eqn.inputs]
                if all(s is None for s in shifted):
                    continue
                pending -= sum(s is not None for s in shifted)
                state = _shift_of(eqn, shifted)
            if state is not None:
                result = eqn.outputs[0]
                if id(result) in watched:
                    return False
                states[id(result)] = state
                pending += len(consumers.get(id(result), ()))
    except _Unknown:
        return False
    return pending == 0


def _shift_of(eqn: Eqn, shifted: list):
    """How `eqn`'s result changes, given how its operands do (None: not at all)."""
    name, params = eqn.prim.name, eqn.params
    if eqn.prim.shape_only:
        return None
    if eqn.prim.multiple_results:
        raise _Unknown
    if eqn.prim.kind == ELEMENTWISE:
        state = _elementwise_shift(eqn, shifted)
    else:
        if len(shifted) != 1:
            raise _Unknown  # the shape ops and reductions below have one operand
        ((kind, c, axes),) = shifted
        state = kind, c, _moved_axes(name, params, axes, kind, eqn.inputs[0].aval.ndim)
    return None if state[1] == 0 else state


def _moved_axes(name: str, params: dict, axes: tuple, kind: str, rank: int) -> tuple:
    """Where the shift's axes are after a shape op or a reduction."""
    if name == "broadcast_in_dim":
        return tuple(params["bdims"][a] for a in axes)
    if name == "transpose":
        return tuple(params["perm"].index(a) for a in axes)
    if name == "reshape" and not axes:
        return ()
    if name in ("squeeze", "reduce_sum", "reduce_max", "reduce_min"):
        gone = set(params["axes"])
        if gone & set(axes) or (name == "reduce_sum" and kind != _SCALE):
            raise _Unknown  # a sum of shifts, or a reduction along the shift
        return tuple(a - sum(g < a for g in gone) for a in axes)
    raise _Unknown


def _elementwise_shift(eqn: Eqn, shifted: list) -> tuple:
    name, rank = eqn.prim.name, eqn.outputs[0].aval.ndim
    aligned = [None if s is None else (s[0], s[1], tuple(a + rank - x.aval.ndim for a in s[2]))
               for s, x in zip(shifted, eqn.inputs)]
    moved = [s for s in aligned if s is not None]
    if any(s[2] != moved[0][2] for s in moved):
        raise _Unknown  # two shifts along different axes
    kinds, axes = {s[0] for s in moved}, moved[0][2]
    cs = [0 if s is None else s[1] for s in aligned]
    if name == "convert" and eqn.outputs[0].aval.dtype.kind == "f":
        return aligned[0]
    if name == "neg":
        return (_ADD, -cs[0], axes) if kinds == {_ADD} else aligned[0]
    if name == "exp" and kinds == {_ADD}:
        return _SCALE, cs[0], axes
    if name == "log" and kinds == {_SCALE}:
        return _ADD, cs[0], axes
    if name in ("add", "sub") and kinds == {_ADD}:
        return _ADD, cs[0] + (cs[1] if name == "add" else -cs[1]), axes
    if name in ("add", "sub") and kinds == {_SCALE} and len(moved) == 2 and cs[0] == cs[1]:
        return _SCALE, cs[0], axes  # a * exp(c d) + b * exp(c d)
    if name in ("mul", "div") and kinds == {_SCALE}:
        return _SCALE, cs[0] + (cs[1] if name == "mul" else -cs[1]), axes
    raise _Unknown
