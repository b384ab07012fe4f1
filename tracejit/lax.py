"""Structured control flow for traced code, with JAX's names and semantics:

    carry, ys = tracejit.lax.scan(step, init, xs, length=None, reverse=False)
    x = tracejit.lax.fori_loop(0, n, body, x)          # n static or traced
    x = tracejit.lax.while_loop(cond, body, x)
    y = tracejit.lax.cond(pred, true_fn, false_fn, *operands)
    y = tracejit.lax.switch(index, branches, *operands)

Inside a trace each call becomes one equation whose body is traced once,
whatever the trip count, and compiles to a real loop. Outside a trace they run
eagerly as the Python loops they describe. All are differentiable in both
modes, `while_loop` in reverse mode too (its trip count and residuals are
recorded as it runs).
"""

from __future__ import annotations

import numpy as np

from .control import flow as cf
from .core import pytree
from .core.errors import ShapeError, TracerTypeError, with_location
from .core.ir import AVal
from .core.shapes import join, resolve, value
from .trace import ops
from .trace.tracer import Tracer, current_builder, trace_closed


def _tracing() -> bool:
    return current_builder() is not None


def _aval(leaf) -> AVal:
    return ops.aval_of(leaf)


def _carry_avals(leaves) -> list:
    """Carry types; Python scalars stay weak (a loop index mixes with float32
    as a Python int does), and the body may narrow a weak float (see below)."""
    return [_aval(x) for x in leaves]


def _as_operand(leaf, aval: AVal):
    """A carry's initial value in the dtype the loop keeps it in."""
    if isinstance(leaf, Tracer):
        return ops.convert(leaf, aval.dtype) if leaf.dtype != aval.dtype else leaf
    return np.asarray(leaf, dtype=aval.dtype)


def _trace_carrying(fn, init_avals, other_avals, name):
    """Trace a loop body whose first outputs are the new carry. A carry that
    starts as a Python scalar takes the dtype the body gives it (so `loss =
    0.0` carried through float32 code stays float32): then trace once more."""
    avals = list(init_avals)
    for attempt in range(2):
        program, captured, out_def = trace_closed(fn, avals + other_avals, name)
        outs = [a.aval for a in program.outvars[:len(avals)]]
        if not all(_join_shapes(o, a, name) for o, a in zip(outs, avals)):
            break
        if all(o.dtype == a.dtype for o, a in zip(outs, avals)):
            return program, captured, out_def, avals
        if attempt:
            break
        avals = [AVal(tuple(a.shape), o.dtype) for o, a in zip(outs, avals)]
    got = ", ".join(str(o) for o in outs)
    want = ", ".join(str(a) for a in avals)
    raise TracerTypeError(with_location(
        f"{name}: the body must return a carry of the types it was given: got ({got}), "
        f"expected ({want})"))


def _join_shapes(a: AVal, b: AVal, what: str) -> bool:
    """Do the shapes agree (joining sizes: a constant init fixes a symbol)?"""
    if a.ndim != b.ndim:
        return False
    try:
        for x, y in zip(a.shape, b.shape):
            join(x, y, what, current_builder().checks)
    except ShapeError:
        return False
    return True


def resolve_shape(aval) -> tuple:
    return tuple(resolve(d) for d in aval.shape)


# --------------------------------------------------------------------- scan

def scan(f, init, xs=None, length=None, reverse=False, unroll=1):
    """Loop `carry, y = f(carry, x)` over the leading axis of `xs` (pytrees),
    returning the final carry and the stacked `y`s."""
    del unroll  # one loop either way: codegen decides how the body is emitted
    init_leaves, init_def = pytree.flatten(init)
    x_leaves, x_def = pytree.flatten(xs)
    length = _scan_length(x_leaves, length)
    if not _tracing():
        return _scan_eager(f, init, xs, x_leaves, x_def, length, reverse)
    structure = {}

    def body(*ins):
        carry = pytree.unflatten(init_def, ins[:len(init_leaves)])
        x = pytree.unflatten(x_def, ins[len(init_leaves):])
        new_carry, y = f(carry, x)
        carry_leaves, carry_def = pytree.flatten(new_carry)
        if carry_def != init_def:
            raise TracerTypeError(with_location(
                f"scan: the body returned a carry structured {pytree.describe(carry_def)}, "
                f"not like init ({pytree.describe(init_def)})"))
        y_leaves, structure["y"] = pytree.flatten(y)
        return carry_leaves + y_leaves

    x_avals = [AVal(tuple(_aval(x).shape[1:]), _aval(x).dtype) for x in x_leaves]
    program, captured, _, carry_avals = _trace_carrying(body, _carry_avals(init_leaves), x_avals,
                                                        "scan")
    carry = [_as_operand(v, a) for v, a in zip(init_leaves, carry_avals)]
    outs = cf.scan_bind(captured, carry, x_leaves, program, length, reverse)
    n = len(carry)
    return pytree.unflatten(init_def, outs[:n]), pytree.unflatten(structure["y"], outs[n:])


def _scan_length(x_leaves, length):
    """The trip count: the xs' common leading axis (a size the kernel reads
    at run time), or `length` when there are no xs."""
    if any(_aval(x).ndim == 0 for x in x_leaves):
        raise ShapeError(with_location("scan: every leaf of xs needs a leading axis to scan"))
    if not x_leaves:
        if length is None:
            raise TracerTypeError(with_location("scan: give length= when xs is None"))
        return int(length)
    checks = current_builder().checks if _tracing() else None
    dim = _aval(x_leaves[0]).shape[0]
    for x in x_leaves[1:]:
        dim = join(dim, _aval(x).shape[0], "scan: leading axes of xs", checks)
    if length is not None and int(length) != value(dim):
        raise ShapeError(with_location(f"scan: length={length} but xs have {value(dim)} steps"))
    return resolve(dim)


def _scan_eager(f, init, xs, x_leaves, x_def, length, reverse):
    carry, ys = init, []
    steps = range(length - 1, -1, -1) if reverse else range(length)
    for t in steps:
        carry, y = f(carry, pytree.unflatten(x_def, [x[t] for x in x_leaves]))
        ys.append(y)
    if reverse:
        ys.reverse()
    if not ys:
        return carry, _empty_ys(f, init, x_leaves, x_def)
    y_leaves = [pytree.flatten(y)[0] for y in ys]
    stacked = [np.stack([np.asarray(row[k]) for row in y_leaves]) for k in range(len(y_leaves[0]))]
    return carry, pytree.unflatten(pytree.flatten(ys[0])[1], stacked)


def _empty_ys(f, init, x_leaves, x_def):
    """The stacked outputs of zero steps: their shapes come from tracing `f`."""
    init_leaves, init_def = pytree.flatten(init)
    structure = {}

    def body(*ins):
        _, y = f(pytree.unflatten(init_def, ins[:len(init_leaves)]),
                 pytree.unflatten(x_def, ins[len(init_leaves):]))
        leaves, structure["y"] = pytree.flatten(y)
        return leaves

    x_avals = [AVal(tuple(np.shape(x)[1:]), np.asarray(x).dtype) for x in x_leaves]
    program, _, _ = trace_closed(body, _carry_avals(init_leaves) + x_avals, "scan")
    empty = [np.empty((0,) + tuple(value(d) for d in a.aval.shape), a.aval.dtype)
             for a in program.outvars]
    return pytree.unflatten(structure["y"], empty)


def map(f, xs):  # noqa: A001 - jax.lax.map
    """`f` applied to each slice of `xs` along its leading axis, stacked."""
    _, ys = scan(lambda carry, x: ((), f(x)), (), xs)
    return ys


# --------------------------------------------------------------- while_loop

def while_loop(cond_fun, body_fun, init_val):
    """`while cond_fun(val): val = body_fun(val)`; differentiable in both
    modes (reverse mode records the trip count and each step's residuals)."""
    if not _tracing():
        val = init_val
        while bool(cond_fun(val)):
            val = body_fun(val)
        return val
    leaves, treedef = pytree.flatten(init_val)

    def body(*ins):
        out_leaves, out_def = pytree.flatten(body_fun(pytree.unflatten(treedef, ins)))
        if out_def != treedef:
            raise TracerTypeError(with_location(
                "while_loop: body_fun must return a value structured like init_val"))
        return out_leaves

    program, body_captured, _, avals = _trace_carrying(body, _carry_avals(leaves), [],
                                                       "while_loop")

    def condition(*ins):
        pred = cond_fun(pytree.unflatten(treedef, ins))
        if ops.aval_of(pred).ndim:
            raise TracerTypeError(with_location(
                f"while_loop: cond_fun must return a scalar, got {ops.aval_of(pred)}"))
        return ops.convert(pred, bool)

    cond_program, cond_captured, _ = trace_closed(condition, avals, "while_cond")
    carry = [_as_operand(v, a) for v, a in zip(leaves, avals)]
    outs, _ = cf.while_bind(cond_captured, body_captured, carry, cond_program, program)
    return pytree.unflatten(treedef, outs[1:1 + len(carry)])


def fori_loop(lower, upper, body_fun, init_val):
    """`for i in range(lower, upper): val = body_fun(i, val)`. With Python int
    bounds it is a scan (a fixed trip count); with traced bounds a while loop."""
    static = not any(isinstance(b, Tracer) for b in (lower, upper))
    if not _tracing():
        val = init_val
        for i in range(int(lower), int(upper)):
            val = body_fun(i, val)
        return val
    # A Python int index stays weak: `i * x` keeps x's float32.
    index = ops.convert(lower, np.int64) if isinstance(lower, Tracer) else int(lower)
    if static:
        def step(carry, _):
            i, val = carry
            return (ops.add(i, 1), body_fun(i, val)), None

        (_, val), _ = scan(step, (index, init_val), None, length=max(0, int(upper) - int(lower)))
        return val
    (_, val) = while_loop(lambda c: ops.lt(c[0], upper),
                          lambda c: (ops.add(c[0], 1), body_fun(c[0], c[1])),
                          (index, init_val))
    return val


# --------------------------------------------------------------- branching

def switch(index, branches, *operands):
    """`branches[clip(index, 0, len(branches) - 1)](*operands)`; only the
    branch taken runs, and only it is differentiated."""
    branches = list(branches)
    if not branches:
        raise TracerTypeError(with_location("switch: give at least one branch"))
    if not isinstance(index, Tracer) or not _tracing():
        k = int(np.clip(int(index), 0, len(branches) - 1))
        return branches[k](*operands)
    leaves, treedef = pytree.flatten(operands)
    avals = _carry_avals(leaves)
    traced = [trace_closed(lambda *ins, fn=fn: fn(*pytree.unflatten(treedef, ins)), avals,
                           f"branch{k}") for k, fn in enumerate(branches)]
    out_defs = {out_def for _, _, out_def in traced}
    if len(out_defs) != 1:
        raise TracerTypeError(with_location(
            "switch/cond: every branch must return the same structure, got "
            + " and ".join(pytree.describe(d) for d in out_defs)))
    traced = _common_output_types(traced, branches, treedef, avals)
    programs, values = cf.unify_closed([p for p, _, _ in traced], [c for _, c, _ in traced])
    outs = cf.switch_bind(index, list(leaves) + values, programs)
    return pytree.unflatten(traced[0][2], outs)


def _common_output_types(traced, branches, treedef, avals):
    """Branches returning different dtypes (a Python 0.0 against a float32
    array) are retraced converting to the promoted dtype."""
    columns = list(zip(*[[a.aval for a in p.outvars] for p, _, _ in traced]))
    for column in columns:
        shapes = {resolve_shape(a) for a in column}
        if len(shapes) != 1:
            raise ShapeError(with_location(
                "switch/cond: branches return different shapes: "
                + ", ".join(str(a) for a in column)))
    dtypes = [ops.result_dtype(*[_placeholder(a) for a in column]) for column in columns]
    if all(a.dtype == d for column, d in zip(columns, dtypes) for a in column):
        return traced

    def converted(fn):
        def run(*ins):
            leaves, out_def = pytree.flatten(fn(*pytree.unflatten(treedef, ins)))
            return pytree.unflatten(out_def, [ops.convert(v, d) for v, d in zip(leaves, dtypes)])
        return run

    return [trace_closed(converted(fn), avals, f"branch{k}") for k, fn in enumerate(branches)]


def _placeholder(aval: AVal):
    """Something with `aval`'s dtype and weakness, for result_dtype."""
    if aval.weak:
        return ops.WEAK_STAND_INS[aval.dtype.kind]
    return np.zeros((), aval.dtype)


def cond(pred, true_fun, false_fun, *operands):
    """`true_fun(*operands) if pred else false_fun(*operands)` on a traced
    predicate; only the branch taken runs and is differentiated."""
    if not isinstance(pred, Tracer) or not _tracing():
        return true_fun(*operands) if bool(pred) else false_fun(*operands)
    if ops.aval_of(pred).ndim:
        raise TracerTypeError(with_location(
            f"cond: the predicate must be a scalar, got {ops.aval_of(pred)}"))
    return switch(ops.convert(ops.convert(pred, bool), np.int32), [false_fun, true_fun],
                  *operands)


__all__ = ["cond", "fori_loop", "map", "scan", "switch", "while_loop"]
