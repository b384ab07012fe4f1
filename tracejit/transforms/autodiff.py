"""Differentiation as program transformations: Program in, Program out.

`vjp_program` builds one program holding the forward equations followed by
the adjoint equations (reverse mode); `jvp_program` interleaves tangents
(forward mode). Both work by re-tracing: the primal program is replayed on
fresh tracers and each primitive's rule, written with tracejit ops, adds its
derivative equations. The result is ordinary IR: it prints, optimises,
compiles, and can be differentiated again.

Cross-cutting concerns live here, once:
- broadcasting is undone by `unbroadcast` (rules return cotangents in the
  output's shape);
- zero cotangents are `None` and cost nothing;
- elementwise ops give `partials`, from which both modes follow; rules marked
  `nan_safe` use a zero-preserving product so that a zero cotangent stays zero
  where the partial is inf or NaN (the `where(x > 0, log(x), 0)` trap).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..core.dtypes import is_float
from ..core.errors import TracerTypeError, backward_location
from ..core.ir import Literal, Program, Var
from ..core.shapes import is_one, resolve
from ..trace import ops
from ..trace.registry import ELEMENTWISE
from ..trace.tracer import Builder, Tracer, bind, located, store
from .passes import before_reverse

INPUT = "input"  # a seed given as a program input rather than a constant



def _replay_forward(program: Program, builder: Builder, primals: list):
    """Rebind the program's equations; returns (env: id(var) -> value, outputs,
    pullbacks: id(eqn) -> the backward of primitives with a `vjp_forward`)."""
    env: dict[int, object] = {}
    pullbacks: dict[int, object] = {}
    for var, val in zip(program.invars, primals):
        env[id(var)] = val
    for var, val in zip(program.constvars, program.consts):
        env[id(var)] = _const_tracer(builder, var, val)
    carriers = _cotangent_carriers(program)
    for eqn in program.eqns:
        xs = [_read(env, a) for a in eqn.inputs]
        with located(eqn.location):
            if (eqn.prim.vjp_forward is not None and _needs_gradient(eqn)
                    and any(id(v) in carriers for v in eqn.outputs)):
                result, pullbacks[id(eqn)] = eqn.prim.vjp_forward(*xs, **eqn.params)
            else:
                result = bind(eqn.prim, *xs, **eqn.params)
        store(env, eqn, result)
    return env, [_read(env, a) for a in program.outvars], pullbacks


def _cotangent_carriers(program: Program) -> set:
    """Ids of the values a cotangent can reach: the outputs, and the inputs of
    differentiable equations with a carrier output. A loop none of whose
    outputs is one (its values feed only stop_gradient, e.g. a custom_vjp's
    residuals) is bound as it was, not re-run saving its steps, so CSE can
    merge it with the primal loop."""
    live = {id(a) for a in program.outvars if isinstance(a, Var)}
    for eqn in reversed(program.eqns):
        if eqn.prim.differentiable and any(id(v) in live for v in eqn.outputs):
            live.update(id(a) for a in eqn.inputs if isinstance(a, Var))
    return live


def _needs_gradient(eqn) -> bool:
    return eqn.prim.differentiable and any(
        isinstance(a, Var) and is_float(a.aval) for a in eqn.inputs)


def _const_tracer(builder: Builder, var: Var, value):
    return Tracer(builder, builder.atom(value))


def _read(env, atom):
    return atom.value if isinstance(atom, Literal) else env[id(atom)]


# ------------------------------------------------------------------ reverse

def vjp_program(program: Program, wrt: list[int], seeds: list) -> Program:
    """Program computing (outputs..., d<seeded outputs>/d inputs[wrt]...).

    `seeds[k]` is the cotangent of output k: None (not differentiated), a
    constant (1.0 for a scalar loss), or INPUT (a trailing input, one per
    float output seeded so, literal outputs included)."""
    program = before_reverse(program, [seed is not None for seed in seeds])
    builder = Builder(program.name + "_vjp")
    builder.checks.pairs.extend(program.checks.pairs)
    with builder, located(f"<gradient of {program.name}>"):
        primals = [builder.new_input(v.aval) for v in program.invars]
        env, outs, pullbacks = _replay_forward(program, builder, primals)
        cts = _seed_cotangents(builder, program.outvars, seeds, env)
        _backward(program, env, cts, pullbacks)
        grads = [_gradient_of(cts, program.invars[i], primals[i]) for i in wrt]
        result = builder.program(list(outs) + grads)
    return result


def _seed_cotangents(builder: Builder, outvars: list, seeds: list, env: dict) -> dict:
    """The outputs' cotangents. Every float output seeded INPUT gets its input,
    a literal one's (a loop body's `return c, 3.0`) included though nothing
    reads it: callers pass one cotangent per seeded output, so skipping it
    would shift the later outputs' onto the wrong inputs."""
    cts: dict[int, object] = {}
    for atom, seed in zip(outvars, seeds):
        if seed is None or not is_float(atom.aval):
            continue
        value = builder.new_input(atom.aval) if seed is INPUT else None
        if isinstance(atom, Var):
            _accumulate(cts, atom, value if value is not None else ops.full_like(
                env[id(atom)], seed))
    return cts


def _backward(program: Program, env: dict, cts: dict, pullbacks: dict) -> None:
    for eqn in reversed(program.eqns):
        gs = [cts.pop(id(v), None) for v in eqn.outputs]
        if all(g is None for g in gs) or not _needs_gradient(eqn):
            continue
        xs = [_read(env, a) for a in eqn.inputs]
        with located(backward_location(eqn.location)):  # debug_nans names the direction
            if id(eqn) in pullbacks:
                input_cts = pullbacks[id(eqn)](gs)
            elif eqn.prim.multiple_results:
                input_cts = eqn.prim.vjp(gs, [env[id(v)] for v in eqn.outputs], *xs,
                                         **eqn.params)
            else:
                input_cts = _input_cotangents(eqn, gs[0], env[id(eqn.outputs[0])], xs)
            for atom, ct in zip(eqn.inputs, input_cts):
                if ct is not None and isinstance(atom, Var) and is_float(atom.aval):
                    _accumulate(cts, atom, unbroadcast(ct, atom.aval))


def _input_cotangents(eqn, g, out, xs) -> list:
    prim, params = eqn.prim, eqn.params
    if prim.vjp is not None:
        return prim.vjp(g, out, *xs, **params)
    partials = prim.partials(out, *xs, **params)
    return [None if d is None else _times(g, d, prim.nan_safe) for d in partials]


def _times(g, d, nan_safe: bool):
    """g * d; with nan_safe, exactly 0 where g is 0 even if d is inf or NaN."""
    product = ops.mul(g, d)
    if not nan_safe or not isinstance(g, Tracer):
        return product
    return ops.select(ops.eq(g, 0.0), ops.zeros_like(product), product)


def _accumulate(cts: dict, atom, value) -> None:
    key = id(atom)
    cts[key] = value if key not in cts else ops.add(cts[key], value)


def _gradient_of(cts, var: Var, primal):
    ct = cts.get(id(var))
    if ct is None:
        return ops.zeros_like(primal) if is_float(var.aval) else None
    return ops.convert(ct, var.aval.dtype)


def unbroadcast(ct, aval):
    """Sum a cotangent back to the shape of the operand it flows to."""
    ct_shape = ops.aval_of(ct).shape
    extra = len(ct_shape) - aval.ndim
    summed = list(range(extra))
    for k, dim in enumerate(aval.shape):
        d = resolve(dim)
        if type(d) is int and d == 1 and not is_one(ct_shape[extra + k]):
            summed.append(extra + k)
    if summed:
        ct = ops.reduce_sum(ct, tuple(summed))
        kept = [k for k in range(aval.ndim) if extra + k not in summed]
        ct = ops.broadcast_in_dim(ct, aval.shape, tuple(kept))
    return ct


# ------------------------------------------------------------------ forward

def jvp_program(program: Program, wrt: list[int]) -> Program:
    """Program computing (outputs..., tangents of outputs...) from
    (inputs..., tangents of inputs[wrt]...)."""
    builder = Builder(program.name + "_jvp")
    builder.checks.pairs.extend(program.checks.pairs)
    with builder, located(f"<tangent of {program.name}>"):
        primals = [builder.new_input(v.aval) for v in program.invars]
        tangents = {id(program.invars[i]): builder.new_input(program.invars[i].aval)
                    for i in wrt}
        env: dict[int, object] = {id(v): p for v, p in zip(program.invars, primals)}
        for var, val in zip(program.constvars, program.consts):
            env[id(var)] = _const_tracer(builder, var, val)
        for eqn in program.eqns:
            with located(eqn.location):
                _jvp_equation(eqn, env, tangents)
        outs = [_read(env, a) for a in program.outvars]
        t_outs = [_tangent_out(tangents, a, o) for a, o in zip(program.outvars, outs)]
        result = builder.program(outs + t_outs)
    return result


def _jvp_equation(eqn, env: dict, tangents: dict) -> None:
    """Multi-output primitives (loops) compute primal and tangent outputs in
    one equation: their `jvp(tangents, *xs) -> (outputs, output tangents)`."""
    xs = [_read(env, a) for a in eqn.inputs]
    ts = [tangents.get(id(a)) if isinstance(a, Var) else None for a in eqn.inputs]
    active = any(t is not None for t in ts) and eqn.prim.differentiable
    if active and eqn.prim.multiple_results:
        out, t_outs = eqn.prim.jvp(ts, *xs, **eqn.params)
        store(env, eqn, out)
    else:
        out = bind(eqn.prim, *xs, **eqn.params)
        store(env, eqn, out)
        if not active:
            return
        t_outs = [_output_tangent(eqn, ts, out, xs)]
    for var, t_out in zip(eqn.outputs, t_outs):
        if t_out is not None:
            tangents[id(var)] = t_out


def _output_tangent(eqn, ts, out, xs):
    prim = eqn.prim
    if prim.kind != ELEMENTWISE or prim.partials is None:
        return prim.jvp(ts, out, *xs, **eqn.params)
    partials = prim.partials(out, *xs, **eqn.params)
    terms = [_times(t, d, prim.nan_safe) for t, d in zip(ts, partials)
             if t is not None and d is not None]
    if not terms:
        return None
    total = terms[0]
    for term in terms[1:]:
        total = ops.add(total, term)
    return ops.broadcast_to(total, out.aval.shape)


def _tangent_out(tangents, atom, out):
    t = tangents.get(id(atom)) if isinstance(atom, Var) else None
    if t is None:
        return ops.zeros_like(out) if is_float(ops.aval_of(out)) else np.zeros(np.shape(out))
    return t


# -------------------------------------------------------- split for vjp()

def split_at_cotangents(program: Program, n_primal: int, n_out: int):
    """Split a joint (forward + adjoint) program whose trailing inputs are
    cotangents into a forward program (primals -> outputs + residuals) and a
    backward program (residuals + cotangents -> gradients)."""
    seeded = {id(v) for v in program.invars[n_primal:]}
    forward, backward = [], []
    for eqn in program.eqns:
        if any(isinstance(a, Var) and id(a) in seeded for a in eqn.inputs):
            backward.append(eqn)
            seeded.update(id(v) for v in eqn.outputs)
        else:
            forward.append(eqn)
    grads = program.outvars[n_out:]
    defined_fwd = {id(v) for v in program.invars[:n_primal] + program.constvars}
    defined_fwd |= {id(v) for e in forward for v in e.outputs}
    residuals = _residuals(backward, grads, defined_fwd)
    residuals += _size_carriers(program, n_primal, backward, residuals)
    fwd = replace(program, invars=program.invars[:n_primal], eqns=forward,
                  outvars=program.outvars[:n_out] + residuals,
                  name=program.name + "_fwd")
    bwd = replace(program, invars=residuals + program.invars[n_primal:], constvars=[],
                  consts=[], eqns=backward, outvars=grads, name=program.name + "_bwd")
    return fwd, bwd, len(residuals)


def _residuals(backward, grads, defined_fwd) -> list:
    seen, residuals = set(), []
    for atom in [a for e in backward for a in e.inputs] + list(grads):
        if isinstance(atom, Var) and id(atom) in defined_fwd and id(atom) not in seen:
            seen.add(id(atom))
            residuals.append(atom)
    return residuals


def _size_carriers(program: Program, n_primal: int, backward, residuals) -> list:
    """Forward values passed along only for their sizes: the backward kernel
    reads every symbolic size from one of its inputs."""
    def roots(avals):
        return {id(r): r for a in avals for r in map(resolve, a.shape) if type(r) is not int}

    have = roots([v.aval for v in residuals + program.invars[n_primal:]])
    need = roots([v.aval for e in backward for v in e.outputs])
    extra = []
    for key in need:
        if key not in have:
            carrier = next(v for v in program.invars[:n_primal] + program.constvars
                           if key in roots([v.aval]))
            extra.append(carrier)
            have.update(roots([carrier.aval]))
    return extra


def check_differentiable(aval, name: str) -> None:
    if not is_float(aval):
        raise TracerTypeError(
            f"cannot differentiate with respect to {name}: its dtype is {aval.dtype}; "
            "gradients need floating-point or complex inputs (pass it as float, or leave it "
            "out of argnums)")
