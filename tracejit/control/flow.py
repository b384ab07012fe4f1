"""Structured control flow as primitives: each equation holds its body as a
closed sub-program (no constvars: what a body reads from outside is passed
as leading operands), so every pass, the printer and the verifier see it.

    scan[body, n_consts, n_carry, length, reverse]     consts carry xs -> carry ys
    while_loop[cond, body, n_cond, n_consts, n_carry, length]
                                  cond_consts consts carry -> count carry ys
    switch[branches]                                index operands -> outs

`scan` runs `body(consts, carry, x_t) -> (carry, y_t)` over the leading axis
of `xs` and stacks the `y_t`. `while_loop` runs `body(consts, carry) ->
(carry, y_t)` while `cond(cond_consts, carry)` holds; its per-step values are
stacked along `length`, a size the loop defines (its first output, the trip
count). `switch` runs the branch `index` picks (clamped, as JAX does).

Reverse mode: a loop's forward pass saves what its body's backward needs at
every step (`vjp_forward`: the body's joint program is split at its
cotangents, and the residuals become extra stacked outputs); the backward is
a `scan` in the other direction over those stacks, carrying the carry's
cotangent and accumulating the loop invariants'. A while loop is reversed
the same way over its recorded trip count. `switch` differentiates only the
branch taken: the backward is a `switch` over the branches' adjoints.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..core.dtypes import is_float
from ..core.errors import TracerTypeError
from ..core.ir import AVal, Program, Var
from ..core.shapes import Sym, join, resolve
from ..trace import ops
from ..trace.registry import CONTROL, Primitive, register
from ..trace.tracer import bind, replay, trace_closed


def _types(atoms) -> list:
    return [a.aval for a in atoms]


def _check_same(got: list, want: list, what: str, checks=None) -> None:
    """Operands must have the types a body was traced for; sizes are joined
    rather than compared, so a body replayed where a size is known (or is
    another input's symbol) agrees with it."""
    for g, w in zip(got, want, strict=True):
        if g.dtype != w.dtype or g.ndim != w.ndim:
            raise TracerTypeError(f"{what}: got {g}, expected {w}")
        for a, b in zip(g.shape, w.shape):
            join(a, b, what, checks)


def _strong(aval: AVal) -> AVal:
    return AVal(tuple(aval.shape), aval.dtype)


def _stacked(length, aval: AVal) -> AVal:
    return AVal((length,) + tuple(aval.shape), aval.dtype)


def _unstacked(aval: AVal) -> AVal:
    return AVal(tuple(aval.shape[1:]), aval.dtype)


def close(program: Program) -> tuple[Program, list]:
    """Constvars become leading inputs: (closed program, their values)."""
    if not program.constvars:
        return program, []
    closed = replace(program, invars=program.constvars + program.invars, constvars=[],
                     consts=[])
    return closed, list(program.consts)


def zeros(aval: AVal):
    return ops.broadcast_in_dim(np.zeros((), aval.dtype), aval.shape, (), traced=True)


def _run(program: Program, args) -> list:
    from ..backend.interpreter import interpret

    return interpret(program, list(args), [])


def _runner(program: Program):
    """The interpreter's function for a loop body (called once per step)."""
    from ..backend.interpreter import runner

    return runner(program)


def _sizes_of(avals, shapes) -> dict:
    sizes = {}
    for aval, shape in zip(avals, shapes):
        for dim, size in zip(aval.shape, shape):
            if type(resolve(dim)) is not int:
                sizes[id(resolve(dim))] = size
    return sizes


def _empty_stacks(avals, sizes: dict) -> list:
    """Per-step outputs of a loop that ran no step."""
    def size(d):
        return d if type(d) is int else sizes.get(id(d), 0)

    return [np.empty((0,) + tuple(size(resolve(d)) for d in a.shape), a.dtype) for a in avals]


def _stack(rows: list, avals, sizes: dict, unstacked=()) -> list:
    """Per-step outputs stacked; those numbered in `unstacked` left as their rows
    (the interpreter's choice when only other scans read them)."""
    if not rows:
        return _empty_stacks(avals, sizes)
    from ..backend.interpreter import Rows

    return [Rows([row[k] for row in rows]) if k in unstacked
            else np.stack([np.asarray(row[k]) for row in rows]) for k in range(len(avals))]


def _live_inputs(program: Program, keep_outs: list) -> tuple[Program, list]:
    """Drop the outputs not kept and what only they needed; returns the
    narrowed program and which of its inputs it still reads."""
    from ..transforms.passes import dce

    kept = [a for a, k in zip(program.outvars, keep_outs) if k]
    narrowed = dce(replace(program, outvars=kept))
    read = {id(a) for e in narrowed.eqns for a in e.inputs if isinstance(a, Var)}
    read |= {id(a) for a in narrowed.outvars if isinstance(a, Var)}
    return narrowed, [id(v) in read for v in program.invars]


def _select(items, keep) -> list:
    return [x for x, k in zip(items, keep) if k]


# ------------------------------------------------------ reverse-mode pieces

class BodyAdjoint:
    """A loop body split for reverse mode: `fwd` computes the outputs and the
    residuals, `bwd` the input cotangents from the residuals and the output
    cotangents. Each residual the backward reads is, cheapest first:
    an operand or constant as it is; a loop invariant (`W.T`), computed once
    outside the loop; a moved slice of a scanned operand (`x_t[:, None]`),
    recomputed in the backward step from the same slice; or, otherwise, a
    value the forward loop stacks per step."""

    def __init__(self, body: Program, n_consts: int, n_carry: int):
        from ..transforms.autodiff import INPUT, split_at_cotangents, vjp_program
        from ..transforms.pipeline import run_passes

        self.body, self.n_consts, self.n_carry = body, n_consts, n_carry
        self.wrt = [k for k, v in enumerate(body.invars) if is_float(v.aval)]
        self.seeded = [k for k, a in enumerate(body.outvars) if is_float(a.aval)]
        seeds = [INPUT if k in self.seeded else None for k in range(len(body.outvars))]
        joint = run_passes(vjp_program(body, self.wrt, seeds))
        fwd, self.bwd, _ = split_at_cotangents(joint, len(body.invars), len(body.outvars))
        n_out = len(body.outvars)
        position = {id(v): k for k, v in enumerate(fwd.invars)}  # the body's inputs, re-traced
        constant = {id(v): value for v, value in zip(fwd.constvars, fwd.consts)}
        invariant = _invariant_values(fwd, n_consts)
        defined_by = {id(v): e for e in fwd.eqns for v in e.outputs}
        self.sources = []  # per residual: (kind, what), see `residuals`
        stacked, outside = [], []
        for r in fwd.outvars[n_out:]:
            k = position.get(id(r))
            chain = _moved_slice(r, defined_by, position, n_consts + n_carry)
            if k is not None and (k < n_consts or k >= n_consts + n_carry):
                self.sources.append(("operand", k))
            elif id(r) in constant:
                self.sources.append(("value", constant[id(r)]))
            elif id(r) in invariant:
                self.sources.append(("outside", len(outside)))
                outside.append(r)
            elif chain is not None:
                self.sources.append(("remat", chain))
            else:
                self.sources.append(("stack", None))
                stacked.append(r)
        self.outside = _narrowed(replace(fwd, outvars=outside))
        self.fwd, self.fwd_consts = close(replace(fwd, outvars=fwd.outvars[:n_out] + stacked))
        self.n_stacked = len(stacked)

    def residuals(self, operands: list, stacks: list) -> tuple[list, list, list]:
        """(invariant residuals, per-step inputs, where each residual is):
        ("c", k) an invariant, ("x", k) a per-step input, ("remat", (k, chain))
        the chain of index maps applied to per-step input k."""
        outside = replay(self.outside, operands, self.outside.consts) if self.outside.outvars \
            else []
        invariant, per_step, layout = [], [], []
        stacks = iter(stacks)
        for kind, what in self.sources:
            if kind in ("value", "outside") or (kind == "operand" and what < self.n_consts):
                layout.append(("c", len(invariant)))
                if kind == "value":
                    invariant.append(what)
                else:
                    invariant.append(outside[what] if kind == "outside" else operands[what])
            elif kind == "remat":
                layout.append(("remat", (len(per_step), what[1])))
                per_step.append(operands[what[0]])
            else:
                layout.append(("x", len(per_step)))
                per_step.append(next(stacks) if kind == "stack" else operands[what])
        return invariant, per_step, layout

    def backward_loop(self, operands, outs, cts, stacks, length, reverse: bool,
                      count=None) -> list:
        """Bind the reverse scan; returns one cotangent (or None) per operand."""
        nc, ncarry = self.n_consts, self.n_carry
        invariant, per_step, layout = self.residuals(operands, stacks)
        bwd, bwd_consts = close(self.bwd)
        wrt_consts = [k for k in self.wrt if k < nc]
        wrt_carry = [k for k in self.wrt if nc <= k < nc + ncarry]
        wrt_xs = [k for k in self.wrt if k >= nc + ncarry]
        seeded_carry = [k for k in self.seeded if k < ncarry]
        seeded_ys = [k for k in self.seeded if k >= ncarry]
        given_ys = [k for k in seeded_ys if cts[k] is not None]
        ct_carry = [cts[k] if cts[k] is not None else zeros(outs[k].aval) for k in seeded_carry]
        acc = [zeros(_strong(ops.aval_of(operands[k]))) for k in wrt_consts]
        consts = bwd_consts + invariant
        carry = ct_carry + acc
        xs = per_step + [cts[k] for k in given_ys]
        body = self.body

        def step(*ins):
            fixed, rest = ins[:len(consts)], ins[len(consts):]
            c_ct, c_acc = rest[:len(ct_carry)], rest[len(ct_carry):len(carry)]
            x_res = rest[len(carry):len(carry) + len(per_step)]
            y_ct = dict(zip(given_ys, rest[len(carry) + len(per_step):]))
            inv = fixed[len(bwd_consts):]
            res = [inv[k] if where == "c" else x_res[k] if where == "x"
                   else replay(k[1], [x_res[k[0]]], k[1].consts)[0] for where, k in layout]
            out_cts = list(c_ct) + [y_ct[k] if k in y_ct else zeros(body.outvars[k].aval)
                                    for k in seeded_ys]
            grads = dict(zip(self.wrt, replay(bwd, list(fixed[:len(bwd_consts)]) + res
                                              + out_cts, [])))
            grad = lambda k: grads[k] if grads.get(k) is not None else zeros(  # noqa: E731
                body.invars[k].aval)
            return ([grad(k) for k in wrt_carry] + [ops.add(a, grad(k)) for a, k in
                                                    zip(c_acc, wrt_consts)]
                    + [grad(k) for k in wrt_xs])

        in_avals = ([_strong(ops.aval_of(v)) for v in consts + carry]
                    + [_unstacked(ops.aval_of(v)) for v in xs])
        if xs or count is None:
            program, captured, _ = trace_closed(step, in_avals, body.name + "_bwd")
            outs_b = scan_bind(captured + consts, carry, xs, program, length, not reverse)
        else:  # nothing per step: count the while loop's trips down instead
            outs_b = _countdown(step, count, consts, carry, in_avals, body.name + "_bwd")
        by_input = dict(zip(wrt_carry + wrt_consts + wrt_xs, outs_b))
        return [by_input.get(k) for k in range(len(operands))]


def _invariant_values(program: Program, n_consts: int) -> set:
    """Values a loop body computes from its loop invariants and constants alone."""
    known = {id(v) for v in program.invars[:n_consts] + program.constvars}
    for eqn in program.eqns:
        if all(not isinstance(a, Var) or id(a) in known for a in eqn.inputs):
            known.update(id(v) for v in eqn.outputs)
    return known - {id(v) for v in program.invars[:n_consts] + program.constvars}


def _moved_slice(r, defined_by: dict, position: dict, first_x: int):
    """(x position, program) when `r` only moves the elements of a scanned
    slice (index maps, e.g. `x_t[:, None].T`): the backward step recomputes it
    from the same slice instead of the forward stacking a copy."""
    from ..trace.registry import INDEXMAP

    chain, atom = [], r
    while id(atom) in defined_by and defined_by[id(atom)].prim.kind == INDEXMAP:
        chain.append(defined_by[id(atom)])
        atom = chain[-1].inputs[0]
        if not isinstance(atom, Var):
            return None
    k = position.get(id(atom))
    if not chain or k is None or k < first_x:
        return None
    return k, Program([atom], [], chain[::-1], [r], name="moved_slice")


def _narrowed(program: Program) -> Program:
    from ..transforms.passes import dce

    return dce(program)


def _countdown(step, count, consts, carry, in_avals, name) -> list:
    """`carry = step(consts, carry)` `count` times, as a while loop (the trip
    count is a value here, not a size any operand has)."""
    n_consts = len(consts)
    index = AVal((), np.dtype(np.int64))

    def body(*ins):
        return [ops.add(ins[n_consts], 1)] + list(step(*ins[:n_consts], *ins[n_consts + 1:]))

    def cond(limit, k, *rest):
        return ops.lt(k, limit)

    carry_avals = in_avals[n_consts:]
    program, captured, _ = trace_closed(body, in_avals[:n_consts] + [index] + carry_avals, name)
    cond_program, cond_captured, _ = trace_closed(cond, [index, index] + carry_avals, name + "_c")
    outs, _ = while_bind(cond_captured + [count], captured + consts, [np.int64(0)] + carry,
                         cond_program, program)
    return outs[2:]


# ===================================================================== scan

def _scan_rule(avals, params, checks):
    body, nc, ncarry = params["body"], params["n_consts"], params["n_carry"]
    length = params["length"]
    fixed, xs = avals[:nc + ncarry], avals[nc + ncarry:]
    if len(body.invars) != len(avals) or len(body.outvars) < ncarry:
        raise TracerTypeError("scan: the body does not match the loop's operands")
    _check_same(fixed, _types(body.invars[:nc + ncarry]), "scan operand", checks)
    _check_same([_unstacked(x) for x in xs], _types(body.invars[nc + ncarry:]), "scan slice",
                checks)
    for x in xs:
        join(x.shape[0], length, "scan: leading axis of xs", checks)
    carry = fixed[nc:]
    _check_same(_types(body.outvars[:ncarry]), carry, "scan carry", checks)
    return [_strong(a) for a in carry] + [_stacked(length, a.aval)
                                         for a in body.outvars[ncarry:]]


def _scan_impl(*args, body, n_consts, n_carry, length, reverse, unstacked=()):
    consts, carry = list(args[:n_consts]), list(args[n_consts:n_consts + n_carry])
    xs = args[n_consts + n_carry:]
    rows, step = [], _runner(body)
    for t in (range(length - 1, -1, -1) if reverse else range(length)):
        outs = step(*consts, *carry, *[x[t] for x in xs])
        carry = outs[:n_carry]
        rows.append(outs[n_carry:])
    if reverse:
        rows.reverse()
    sizes = _sizes_of(_types(body.invars), [np.shape(a) for a in args[:n_consts + n_carry]]
                      + [np.shape(x)[1:] for x in xs])
    y_avals = _types(body.outvars[n_carry:])
    return [np.asarray(c) for c in carry] + _stack(rows, y_avals, sizes, unstacked)


def scan_bind(consts, carry, xs, body: Program, length, reverse: bool) -> list:
    return bind(SCAN, *consts, *carry, *xs, _traced=True, body=body, n_consts=len(consts),
                n_carry=len(carry), length=length, reverse=reverse)


def _scan_vjp_forward(*args, body, n_consts, n_carry, length, reverse):
    adjoint = BodyAdjoint(body, n_consts, n_carry)
    consts, rest = list(args[:n_consts]), list(args[n_consts:])
    outs = scan_bind(adjoint.fwd_consts + consts, rest[:n_carry], rest[n_carry:], adjoint.fwd,
                     length, reverse)
    n_out = len(body.outvars)
    primal, stacks = outs[:n_out], outs[n_out:]

    def pullback(cts):
        return adjoint.backward_loop(list(args), primal, cts, stacks, length, reverse)

    return primal, pullback


def _reorder_jvp(body: Program, groups):
    """Forward mode through a loop body: the body's JVP program, with primal
    and tangent operands interleaved per group (consts, carry, xs)."""
    from ..transforms.autodiff import jvp_program

    wrt = [k for k, v in enumerate(body.invars) if is_float(v.aval)]
    joint, extra = close(jvp_program(body, wrt))
    layout = []
    for group in groups:
        layout += [("p", k) for k in group] + [("t", k) for k in group if k in wrt]
    return joint, extra, wrt, layout


def _jvp_operands(layout, args, tangents):
    return [args[k] if kind == "p" else (tangents[k] if tangents[k] is not None else
                                          zeros(_strong(ops.aval_of(args[k]))))
            for kind, k in layout]


def _jvp_step(joint, extra, wrt, layout, n_out, float_outs_first):
    """A body over the interleaved operands returning primal and tangent
    outputs in the loop's order (carry, carry tangents, ys, ys tangents)."""
    n_in = max(k for _, k in layout) + 1 if layout else 0

    def step(*ins):
        ex, rest = ins[:len(extra)], ins[len(extra):]
        primal, tangent = [None] * n_in, {}
        for (kind, k), value in zip(layout, rest):
            if kind == "p":
                primal[k] = value
            else:
                tangent[k] = value
        outs = replay(joint, list(ex) + primal + [tangent[k] for k in wrt], [])
        return float_outs_first(outs[:n_out], outs[n_out:])

    return step


def _scan_jvp(tangents, *args, body, n_consts, n_carry, length, reverse):
    """Forward mode: one loop carrying primal and tangent side by side."""
    nc, n_in, n_out = n_consts, len(body.invars), len(body.outvars)
    groups = [range(0, nc), range(nc, nc + n_carry), range(nc + n_carry, n_in)]
    joint, extra, wrt, layout = _reorder_jvp(body, groups)
    float_carry = [j for j in range(n_carry) if is_float(body.outvars[j].aval)]
    float_ys = [j for j in range(n_carry, n_out) if is_float(body.outvars[j].aval)]

    def arrange(prim, tan):
        return (list(prim[:n_carry]) + [tan[j] for j in float_carry] + list(prim[n_carry:])
                + [tan[j] for j in float_ys])

    step = _jvp_step(joint, extra, wrt, layout, n_out, arrange)
    values = _jvp_operands(layout, args, tangents)
    split = [sum(1 for kind, k in layout if k in g) for g in groups]
    consts, carry, xs = (values[:split[0]], values[split[0]:split[0] + split[1]],
                         values[split[0] + split[1]:])
    in_avals = ([_strong(ops.aval_of(v)) for v in extra + consts + carry]
                + [_unstacked(ops.aval_of(v)) for v in xs])
    program, captured, _ = trace_closed(step, in_avals, body.name + "_jvp")
    outs = scan_bind(captured + extra + consts, carry, xs, program, length, reverse)
    n_carry_all = n_carry + len(float_carry)
    carry_p, carry_t = outs[:n_carry], dict(zip(float_carry, outs[n_carry:n_carry_all]))
    ys = outs[n_carry_all:]
    ys_p, ys_t = ys[:n_out - n_carry], dict(zip(float_ys, ys[n_out - n_carry:]))
    return (list(carry_p) + list(ys_p),
            [carry_t.get(j) for j in range(n_carry)] + [ys_t.get(j)
                                                       for j in range(n_carry, n_out)])


def _scan_prune(eqn, used):
    body, nc, ncarry = eqn.params["body"], eqn.params["n_consts"], eqn.params["n_carry"]
    keep_carry = list(used[:ncarry])
    while True:  # a dead carry may still feed another carry or a y
        keep_outs = keep_carry + list(used[ncarry:])
        narrowed, live = _live_inputs(body, keep_outs)
        grown = [k or live[nc + j] for j, k in enumerate(keep_carry)]
        if grown == keep_carry:
            break
        keep_carry = grown
    keep_in = live[:nc] + keep_carry + live[nc + ncarry:]
    if all(keep_in) and all(keep_outs):
        return None
    new_body = replace(narrowed, invars=_select(body.invars, keep_in))
    params = dict(eqn.params, body=new_body, n_consts=sum(keep_in[:nc]),
                  n_carry=sum(keep_carry))
    return replace(eqn, inputs=_select(eqn.inputs, keep_in), params=params,
                   outputs=_select(eqn.outputs, keep_outs))


def _scan_constants(eqn) -> list:
    body = eqn.params["body"]
    return [(a, body, body.invars[k]) for k, a in enumerate(eqn.inputs[:eqn.params["n_consts"]])]


SCAN = register(Primitive(
    "scan", CONTROL, _scan_rule, _scan_impl, vjp_forward=_scan_vjp_forward, jvp=_scan_jvp,
    multiple_results=True, prune=_scan_prune, loop_constants=_scan_constants))


# =============================================================== while loop

def _while_rule(avals, params, checks):
    cond, body = params["cond"], params["body"]
    n_cond, nc, ncarry = params["n_cond"], params["n_consts"], params["n_carry"]
    carry = avals[n_cond + nc:]
    if len(carry) != ncarry or len(body.invars) != nc + ncarry:
        raise TracerTypeError("while_loop: the body does not match the loop's operands")
    _check_same(avals[:n_cond] + carry, _types(cond.invars), "while_loop condition operand",
                checks)
    _check_same(avals[n_cond:], _types(body.invars), "while_loop operand", checks)
    (pred,) = cond.outvars
    if pred.aval.ndim or pred.aval.dtype != np.bool_:
        raise TracerTypeError(f"while_loop: the condition must return a bool scalar, got "
                              f"{pred.aval}")
    _check_same(_types(body.outvars[:ncarry]), carry, "while_loop carry", checks)
    count = AVal((), np.dtype(np.int64))
    return [count] + [_strong(a) for a in carry] + [
        _stacked(params["length"], a.aval) for a in body.outvars[ncarry:]]


def _while_impl(*args, cond, body, n_cond, n_consts, n_carry, length):
    cond_consts = list(args[:n_cond])
    consts, carry = list(args[n_cond:n_cond + n_consts]), list(args[n_cond + n_consts:])
    rows, test, step = [], _runner(cond), _runner(body)
    while bool(test(*cond_consts, *carry)[0]):
        outs = step(*consts, *carry)
        carry = list(outs[:n_carry])
        rows.append(outs[n_carry:])
    sizes = _sizes_of(_types(body.invars), [np.shape(a) for a in args[n_cond:]])
    stacks = _stack(rows, _types(body.outvars[n_carry:]), sizes)
    return [np.int64(len(rows))] + [np.asarray(c) for c in carry] + stacks


def while_bind(cond_consts, consts, carry, cond: Program, body: Program) -> tuple[list, Sym]:
    """Bind a while loop: ([trip count, carry..., stacked ys...], the trip
    count's symbol, the leading axis of the stacks)."""
    length = Sym(0, dynamic=True)
    outs = bind(WHILE, *cond_consts, *consts, *carry, _traced=True, cond=cond, body=body,
                n_cond=len(cond_consts), n_consts=len(consts), n_carry=len(carry), length=length)
    return outs, length


def _while_vjp_forward(*args, cond, body, n_cond, n_consts, n_carry, length):
    adjoint = BodyAdjoint(body, n_consts, n_carry)
    cond_consts, operands = list(args[:n_cond]), list(args[n_cond:])
    outs, new_length = while_bind(cond_consts, adjoint.fwd_consts + operands[:n_consts],
                                  operands[n_consts:], cond, adjoint.fwd)
    n_out = len(body.outvars)
    primal, stacks = outs[1:1 + n_out], outs[1 + n_out:]

    def pullback(cts):
        operand_cts = adjoint.backward_loop(operands, primal, cts[1:], stacks, new_length,
                                            reverse=False, count=outs[0])
        return [None] * n_cond + operand_cts

    return [outs[0]] + primal, pullback


def _while_jvp(tangents, *args, cond, body, n_cond, n_consts, n_carry, length):
    nc, n_in = n_consts, n_consts + n_carry
    shifted = list(tangents[n_cond:])
    groups = [range(0, nc), range(nc, n_in)]
    joint, extra, wrt, layout = _reorder_jvp(body, groups)
    n_out = len(body.outvars)
    float_carry = [j for j in range(n_carry) if is_float(body.outvars[j].aval)]
    float_ys = [j for j in range(n_carry, n_out) if is_float(body.outvars[j].aval)]

    def arrange(prim, tan):
        return (list(prim[:n_carry]) + [tan[j] for j in float_carry] + list(prim[n_carry:])
                + [tan[j] for j in float_ys])

    step = _jvp_step(joint, extra, wrt, layout, n_out, arrange)
    operands = list(args[n_cond:])
    values = _jvp_operands(layout, operands, shifted)
    n_consts_new = sum(1 for _, k in layout if k < nc)
    consts, carry = values[:n_consts_new], values[n_consts_new:]
    in_avals = [_strong(ops.aval_of(v)) for v in extra + consts + carry]
    new_body, captured, _ = trace_closed(step, in_avals, body.name + "_jvp")
    carry_layout = [(kind, k) for kind, k in layout if k >= nc]
    new_cond = replace(cond, invars=cond.invars[:n_cond] + _interleaved_inputs(
        cond.invars[n_cond:], carry_layout, nc))
    outs, _ = while_bind(list(args[:n_cond]), captured + extra + consts, carry, new_cond,
                         new_body)
    count, rest = outs[0], outs[1:]
    n_carry_all = n_carry + len(float_carry)
    carry_p, carry_t = rest[:n_carry], dict(zip(float_carry, rest[n_carry:n_carry_all]))
    ys = rest[n_carry_all:]
    ys_p, ys_t = ys[:n_out - n_carry], dict(zip(float_ys, ys[n_out - n_carry:]))
    return ([count] + list(carry_p) + list(ys_p),
            [None] + [carry_t.get(j) for j in range(n_carry)]
            + [ys_t.get(j) for j in range(n_carry, n_out)])


def _interleaved_inputs(carry_vars, carry_layout, offset) -> list:
    """The condition's carry inputs with an unused input for each tangent."""
    out = []
    for kind, k in carry_layout:
        out.append(carry_vars[k - offset] if kind == "p" else Var(carry_vars[k - offset].aval))
    return out


def _while_prune(eqn, used):
    """Drop per-step outputs nobody reads (the carries all feed the condition)."""
    body, ncarry = eqn.params["body"], eqn.params["n_carry"]
    n_cond, nc = eqn.params["n_cond"], eqn.params["n_consts"]
    keep_ys = list(used[1 + ncarry:])
    if all(keep_ys):
        return None
    narrowed, live = _live_inputs(body, [True] * ncarry + keep_ys)
    keep_consts = live[:nc]
    new_body = replace(narrowed, invars=_select(body.invars, keep_consts + [True] * ncarry))
    params = dict(eqn.params, body=new_body, n_consts=sum(keep_consts))
    keep_in = [True] * n_cond + keep_consts + [True] * ncarry
    return replace(eqn, inputs=_select(eqn.inputs, keep_in), params=params,
                   outputs=_select(eqn.outputs, [True] * (1 + ncarry) + keep_ys))


def _while_constants(eqn) -> list:
    body, first = eqn.params["body"], eqn.params["n_cond"]
    consts = eqn.inputs[first:first + eqn.params["n_consts"]]
    return [(a, body, body.invars[k]) for k, a in enumerate(consts)]


WHILE = register(Primitive(
    "while_loop", CONTROL, _while_rule, _while_impl, vjp_forward=_while_vjp_forward,
    jvp=_while_jvp, multiple_results=True, prune=_while_prune,
    dims_defined=lambda params: [(params["length"], 0)], loop_constants=_while_constants))


# =================================================================== switch

def _switch_rule(avals, params, checks):
    index, operands = avals[0], avals[1:]
    branches = params["branches"]
    if index.ndim or not np.issubdtype(index.dtype, np.integer):
        raise TracerTypeError(f"switch: the index must be an integer scalar, got {index}")
    for branch in branches:
        _check_same(operands, _types(branch.invars), "switch operand", checks)
        _check_same(_types(branch.outvars), _types(branches[0].outvars), "switch branch output",
                    checks)
    return [_strong(a.aval) for a in branches[0].outvars]


def _switch_impl(index, *operands, branches):
    k = int(np.clip(index, 0, len(branches) - 1))
    return [np.asarray(v) for v in _run(branches[k], operands)]


def switch_bind(index, operands, branches) -> list:
    return bind(SWITCH, ops.convert(index, np.int32), *operands, _traced=True,
                branches=tuple(branches))


def unify_closed(programs: list, captured: list) -> tuple[list, list]:
    """Branches that read different outside values: each takes all of them
    (as trailing inputs, unused by the others). Returns (programs, values)."""
    values = [v for group in captured for v in group]
    out = []
    for k, (program, group) in enumerate(zip(programs, captured)):
        n = len(group)
        own, inputs = program.invars[:n], program.invars[n:]
        trailing = []
        for j, other in enumerate(captured):
            trailing += own if j == k else [Var(_strong(ops.aval_of(v))) for v in other]
        out.append(replace(program, invars=inputs + trailing))
    return out, values


def _switch_vjp(cts, outs, index, *operands, branches):
    from ..transforms.autodiff import INPUT, vjp_program

    wrt = [k for k, v in enumerate(branches[0].invars) if is_float(v.aval)]
    given = [k for k, g in enumerate(cts) if g is not None]
    seeds = [INPUT if k in given else None for k in range(len(cts))]
    n_out = len(outs)
    adjoints, extras = [], []
    for branch in branches:
        joint = vjp_program(branch, wrt, seeds)
        joint, extra = close(replace(joint, outvars=joint.outvars[n_out:]))
        adjoints.append(joint)
        extras.append(extra)
    adjoints, values = unify_closed(adjoints, extras)
    grads = switch_bind(index, list(operands) + [cts[k] for k in given] + values, adjoints)
    by_operand = dict(zip(wrt, grads))
    return [None] + [by_operand.get(k) for k in range(len(operands))]


def _switch_jvp(tangents, index, *operands, branches):
    from ..transforms.autodiff import jvp_program

    wrt = [k for k, v in enumerate(branches[0].invars) if is_float(v.aval)]
    n_out = len(branches[0].outvars)
    float_outs = [j for j in range(n_out) if is_float(branches[0].outvars[j].aval)]
    joints, extras = [], []
    for branch in branches:
        joint = jvp_program(branch, wrt)
        joint = replace(joint, outvars=joint.outvars[:n_out]
                        + [joint.outvars[n_out + j] for j in float_outs])
        joint, extra = close(joint)
        joints.append(joint)
        extras.append(extra)
    joints, values = unify_closed(joints, extras)
    ts = [tangents[1 + k] if tangents[1 + k] is not None else
          zeros(_strong(ops.aval_of(operands[k]))) for k in wrt]
    outs = switch_bind(index, list(operands) + ts + values, joints)
    t_outs = dict(zip(float_outs, outs[n_out:]))
    return list(outs[:n_out]), [t_outs.get(j) for j in range(n_out)]


SWITCH = register(Primitive(
    "switch", CONTROL, _switch_rule, _switch_impl, vjp=_switch_vjp, jvp=_switch_jvp,
    multiple_results=True))
