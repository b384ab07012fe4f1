"""vmap rules of the loops and branches (scan, while_loop, switch), and the
fallback for primitives without a rule: a scan over the batch.

A loop's body is batched with the batch axis first for every batched operand;
a carry that the body makes batched is batched from the start (iterated to a
fixed point, as JAX does). A while loop whose predicate is batched runs until
every example is done, each example's carry frozen (selected) once its own
predicate is false; a switch on a batched index runs every branch and selects
per example.
"""

from __future__ import annotations

import numpy as np

from ..core.errors import UnsupportedError, with_location
from ..core.ir import AVal
from ..trace import ops
from ..trace.batch_axes import materialize, move
from ..trace.tracer import replay, trace_closed
from ..transforms import batching
from ..transforms.batching import batch_program, batch_replay
from .flow import (
    SCAN,
    SWITCH,
    WHILE,
    close,
    scan_bind,
    switch_bind,
    unify_closed,
    while_bind,
)


def _flags(dims) -> list:
    return [d is not None for d in dims]


def _fixed_point(batch_body, carry_batched: list, n_carry: int):
    """Batch a body until the carries it makes batched are batched on entry too."""
    while True:
        program, out_dims = batch_body(carry_batched)
        grown = [c or d is not None for c, d in zip(carry_batched, out_dims[:n_carry])]
        if grown == carry_batched:
            return program, out_dims, carry_batched
        carry_batched = grown


def _carry_values(carry, dims, batched, size) -> list:
    return [materialize(x, d, size) if b else x for x, d, b in zip(carry, dims, batched)]


# --------------------------------------------------------------------- scan

def _scan(size, args, dims, *, body, n_consts, n_carry, length, reverse):
    nc = n_consts
    consts, carry, xs = args[:nc], args[nc:nc + n_carry], args[nc + n_carry:]
    c_dims, x_dims = dims[:nc], dims[nc + n_carry:]
    consts = [x if d is None else move(x, d, 0) for x, d in zip(consts, c_dims)]
    xs = [x if d is None else move(x, d, 1) for x, d in zip(xs, x_dims)]  # steps stay first
    inner = [None if d is None else 0 for d in c_dims]
    slices = [None if d is None else 0 for d in x_dims]

    def batch_body(carry_batched):
        in_dims = inner + [0 if b else None for b in carry_batched] + slices
        forced = carry_batched + [False] * (len(body.outvars) - n_carry)
        return batch_program(body, in_dims, size, forced)

    program, out_dims, batched = _fixed_point(batch_body, _flags(dims[nc:nc + n_carry]), n_carry)
    program, extra = close(program)
    outs = scan_bind(extra + consts, _carry_values(carry, dims[nc:nc + n_carry], batched, size),
                     xs, program, length, reverse)
    ys_dims = [None if d is None else 1 for d in out_dims[n_carry:]]
    return outs, [0 if b else None for b in batched] + ys_dims


# --------------------------------------------------------------- while loop

def _while(size, args, dims, *, cond, body, n_cond, n_consts, n_carry, length):
    cond_consts, consts, carry = (args[:n_cond], args[n_cond:n_cond + n_consts],
                                  args[n_cond + n_consts:])
    cc_dims, c_dims = dims[:n_cond], dims[n_cond:n_cond + n_consts]
    carry_dims = dims[n_cond + n_consts:]
    cond_consts = [x if d is None else move(x, d, 0) for x, d in zip(cond_consts, cc_dims)]
    consts = [x if d is None else move(x, d, 0) for x, d in zip(consts, c_dims)]
    cc_inner = [None if d is None else 0 for d in cc_dims]
    c_inner = [None if d is None else 0 for d in c_dims]

    def batch_both(carry_batched):
        carry_in = [0 if b else None for b in carry_batched]
        body_b, out_dims = batch_program(
            body, c_inner + carry_in, size, carry_batched + [False] * (len(body.outvars) - n_carry))
        cond_b, pred_dims = batch_program(cond, cc_inner + carry_in, size)
        return (body_b, cond_b, pred_dims[0]), out_dims

    (body_b, cond_b, pred_dim), out_dims, batched = _fixed_point(
        batch_both, _flags(carry_dims), n_carry)
    if pred_dim is not None:
        return _while_batched_predicate(size, cond, body, cond_consts, consts, carry, cc_inner,
                                        c_inner, carry_dims)
    body_b, body_extra = close(body_b)
    cond_b, cond_extra = close(cond_b)
    outs, _ = while_bind(cond_extra + cond_consts, body_extra + consts,
                         _carry_values(carry, carry_dims, batched, size), cond_b, body_b)
    ys_dims = [None if d is None else 1 for d in out_dims[n_carry:]]
    return outs, [None] + [0 if b else None for b in batched] + ys_dims


def _while_batched_predicate(size, cond, body, cond_consts, consts, carry, cc_inner, c_inner,
                             carry_dims):
    """Run while any example's predicate holds; an example whose predicate is
    false keeps its carry (a select per step). Each example's trip count is
    carried too."""
    n_carry = len(carry)
    if len(body.outvars) != n_carry:
        raise UnsupportedError(with_location(
            "vmap of a while_loop whose condition depends on the mapped axis, under reverse "
            "mode (its per-step residuals differ per example): take the gradient of the "
            "vmapped function instead (grad(lambda p: vmap(f)(p).sum())), or make the trip "
            "count the same for every example"))
    carry_in = [0] * n_carry
    body_b, _ = batch_program(body, c_inner + carry_in, size, [True] * n_carry)
    cond_b, _ = batch_program(cond, cc_inner + carry_in, size, [True])
    n_cc, n_c = len(cond_consts), len(consts)
    values = _carry_values(carry, carry_dims, [True] * n_carry, size)
    count0 = materialize(np.int64(0), None, size)

    def any_active(*ins):
        (pred,) = replay(cond_b, list(ins[:n_cc]) + list(ins[n_cc + 1:]), cond_b.consts)
        return ops.gt(ops.reduce_sum(ops.convert(pred, np.int64), (0,)), 0)

    def step(*ins):
        fixed, rest = ins[:n_cc + n_c], ins[n_cc + n_c:]
        count, state = rest[0], list(rest[1:])
        (pred,) = replay(cond_b, list(fixed[:n_cc]) + state, cond_b.consts)
        new = replay(body_b, list(fixed[n_cc:]) + state, body_b.consts)
        kept = [ops.select(_across(pred, ops.aval_of(v)), v, old) for v, old in zip(new, state)]
        return [ops.add(count, ops.convert(pred, np.int64))] + kept

    avals = [ops.aval_of(v) for v in [count0] + values]
    strong = [AVal(tuple(a.shape), a.dtype) for a in avals]
    cond_avals = [ops.aval_of(v) for v in cond_consts] + strong
    cond_program, cond_captured, _ = trace_closed(any_active, cond_avals, "while_any")
    body_avals = [ops.aval_of(v) for v in cond_consts + consts] + strong
    body_program, body_captured, _ = trace_closed(step, body_avals, "while_masked")
    outs, _ = while_bind(cond_captured + cond_consts, body_captured + cond_consts + consts,
                         [count0] + values, cond_program, body_program)
    return outs[1:], [0] * (1 + n_carry)


def _across(pred, aval):
    """A per-example predicate broadcast over the example's axes."""
    return ops.broadcast_in_dim(pred, aval.shape, (0,))


# ------------------------------------------------------------------- switch

def _switch(size, args, dims, *, branches):
    index, operands = args[0], list(args[1:])
    index_dim, op_dims = dims[0], list(dims[1:])
    if index_dim is not None:
        return _select_branches(size, move(index, index_dim, 0), operands, op_dims, branches)
    operands = [x if d is None else move(x, d, 0) for x, d in zip(operands, op_dims)]
    inner = [None if d is None else 0 for d in op_dims]
    n_out = len(branches[0].outvars)
    batched = [False] * n_out
    while True:
        results = [batch_program(b, inner, size, list(batched)) for b in branches]
        grown = [any(d[k] is not None for _, d in results) for k in range(n_out)]
        if grown == batched:
            break
        batched = grown
    closed = [close(p) for p, _ in results]
    programs, values = unify_closed([p for p, _ in closed], [v for _, v in closed])
    outs = switch_bind(index, operands + values, programs)
    return outs, [0 if b else None for b in batched]


def _select_branches(size, index, operands, dims, branches):
    """Every branch runs; each example takes its own (the index clamped, as JAX)."""
    chosen = ops.minimum(ops.maximum(ops.convert(index, np.int64), 0), len(branches) - 1)
    result = None
    for k, branch in enumerate(branches):
        outs, out_dims = batch_replay(branch, operands, dims, size)
        outs = [materialize(v, d, size) for v, d in zip(outs, out_dims)]
        if result is None:
            result = outs
            continue
        hit = ops.eq(chosen, k)
        result = [ops.select(_across(hit, ops.aval_of(v)), v, r) for v, r in zip(outs, result)]
    return result, [0] * len(result)


# ----------------------------------------------------------------- fallback

def _loop_over_batch(prim, size, args, dims, params):
    """A primitive without a rule: one example per step of a scan."""
    batched = [k for k, d in enumerate(dims) if d is not None]
    fixed = [k for k, d in enumerate(dims) if d is None]

    def body(*ins):
        operands = [None] * len(args)
        for k, v in zip(fixed + batched, ins):
            operands[k] = v
        out = prim.bind(*operands, **params)
        return list(out) if prim.multiple_results else [out]

    xs = [move(args[k], dims[k], 0) for k in batched]
    avals = [ops.aval_of(args[k]) for k in fixed] + [
        AVal(tuple(ops.aval_of(x).shape[1:]), ops.aval_of(x).dtype) for x in xs]
    program, captured, _ = trace_closed(body, avals, prim.name + "_per_example")
    outs = scan_bind(captured + [args[k] for k in fixed], [], xs, program, size, False)
    if prim.multiple_results:
        return outs, [0] * len(outs)
    return outs[0], 0


SCAN.batch = _scan
WHILE.batch = _while
SWITCH.batch = _switch
batching.FALLBACK = _loop_over_batch
