"""Program-to-program passes. Each returns a new Program that still verifies.

- `fold_constants`: scalar equations on literals (and sizes known at trace
  time) become literals;
- `simplify`: `x + 0`, `x * 1`, same-dtype converts... become `x`;
- `cse`: equal equations on equal operands are computed once;
- `dce`: equations no output depends on are dropped;
- `simplify_algebra` (algebra.py): broadcasts left to elementwise broadcasting,
  chains of broadcasts/reshapes/sums folded, masked products as selects;
- `strip_identities`: after differentiation, stop_gradient (and custom_vjp_call)
  are the identity.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace

import numpy as np

from ..core.ir import Eqn, Literal, Program, Var, programs_in, subprograms
from ..core.shapes import resolve
from ..trace.registry import canonical_params
from .algebra import detach_shifts, simplify_algebra


def _rewrite(program: Program, visit) -> Program:
    """Run `visit(eqn) -> atom | [atoms] | Eqn | None` over the equations in
    order. An atom (a list of atoms for multi-output equations) replaces the
    equation's outputs; an Eqn replaces the equation."""
    subst: dict[int, object] = {}

    def read(atom):
        return subst.get(id(atom), atom) if isinstance(atom, Var) else atom

    eqns = []
    for eqn in program.eqns:
        eqn = Eqn(eqn.prim, [read(a) for a in eqn.inputs], eqn.params, eqn.outputs, eqn.location)
        result = visit(eqn)
        if isinstance(result, (Var, Literal)):
            subst[id(eqn.outputs[0])] = result
        elif isinstance(result, list):
            subst.update((id(v), atom) for v, atom in zip(eqn.outputs, result))
        else:
            eqns.append(result if isinstance(result, Eqn) else eqn)
    outvars = [read(a) for a in program.outvars]
    return replace(program, eqns=eqns, outvars=outvars)


def dce(program: Program) -> Program:
    """Drop equations no output depends on; a multi-output equation with dead
    outputs is narrowed by its primitive's `prune` rule (a loop drops the
    per-step values nobody reads)."""
    live = {id(a) for a in program.outvars if isinstance(a, Var)}
    kept = []
    for eqn in reversed(program.eqns):
        used = [id(v) in live for v in eqn.outputs]
        if not any(used):
            continue
        if not all(used) and eqn.prim.prune is not None:
            eqn = eqn.prim.prune(eqn, used) or eqn
        kept.append(eqn)
        live.update(id(a) for a in eqn.inputs if isinstance(a, Var))
    return replace(program, eqns=kept[::-1])


def _atom_key(atom):
    if isinstance(atom, Literal):
        return ("lit", atom.aval.dtype.str, atom.value.item())
    return id(atom)


def cse(program: Program) -> Program:
    seen: dict = {}

    def visit(eqn):
        key = (eqn.prim.name, tuple(_atom_key(a) for a in eqn.inputs),
               canonical_params(eqn.params))
        if key in seen:
            return seen[key]
        seen[key] = list(eqn.outputs) if eqn.prim.multiple_results else eqn.outputs[0]
        return None

    return _rewrite(program, visit)


def fold_constants(program: Program) -> Program:
    def visit(eqn):
        out = eqn.outputs[0]
        if (out.aval.ndim == 0 and not eqn.prim.multiple_results and not subprograms(eqn)
                and all(isinstance(a, Literal) for a in eqn.inputs)):
            with np.errstate(all="ignore"):
                value = eqn.prim.impl(*[a.value for a in eqn.inputs], **eqn.params)
            return Literal(value, out.aval)
        return None

    return _rewrite(program, visit)


def simplify(program: Program) -> Program:
    """Each primitive's own rewrite rules (its record's `simplify`): `x + 0`,
    `x * 1`, a same-dtype convert, a select on a constant, a reduction over
    unit axes, a size known at trace time...; and `fold`, the rules that look
    at the equation defining an operand (a squeeze of an added unit axis)."""
    defining: dict = {}

    def visit(eqn):
        prim = eqn.prim
        result = prim.simplify(eqn) if prim.simplify else None
        if result is None and prim.fold:
            result = prim.fold(eqn, lambda atom: defining.get(id(atom)))
        if result is None:
            defining.update((id(v), eqn) for v in eqn.outputs)
        return result

    return _rewrite(program, visit)


def strip_identities(program: Program) -> Program:
    """After differentiation, stop_gradient and custom_vjp_call are their operand."""
    program = map_subprograms(program, strip_identities)
    return _rewrite(program, lambda eqn: eqn.inputs[0] if eqn.prim.forward_identity else None)


def sizes_from_inputs(program: Program) -> Program:
    """A size-only equation (mean's divisor `dimsize`) reads its size from a
    program input with that dimension rather than from the intermediate value
    it was traced on, so that value dies if nothing else needs it (grad does
    not need the loss vector whose length is the divisor)."""
    where: dict[int, tuple] = {}
    for var in program.invars + program.constvars:
        for axis, dim in enumerate(var.aval.shape):
            root = resolve(dim)
            if type(root) is not int:
                where.setdefault(id(root), (var, axis))

    def visit(eqn):
        if not eqn.prim.shape_only or not isinstance(eqn.inputs[0], Var):
            return None
        dims = [resolve(eqn.inputs[0].aval.shape[a]) for a in eqn.params["axes"]]
        found = [where.get(id(d)) for d in dims]
        if not found or any(f is None for f in found) or len({id(f[0]) for f in found}) != 1:
            return None
        params = dict(eqn.params, axes=tuple(axis for _, axis in found))
        return Eqn(eqn.prim, [found[0][0]], params, eqn.outputs, eqn.location)

    return _rewrite(program, visit)


def optimize(program: Program) -> Program:
    """The standard pipeline run before differentiation and code generation;
    loop bodies and branches are optimised too."""
    program = map_subprograms(program, optimize)
    steps = (fold_constants, simplify, simplify_algebra, sizes_from_inputs, cse, dce)
    for step in steps if _algebra[0] else steps[:2] + steps[3:]:
        program = step(program)
    return program


_algebra = [True]


def before_reverse(program: Program, seeded: list) -> Program:
    """The program reverse mode differentiates: shifts its outputs cannot see
    detached (algebra.detach_shifts), unless the simplifier is disabled."""
    return detach_shifts(program, seeded) if _algebra[0] else program


@contextmanager
def algebra_disabled():
    """Optimise without the algebraic simplifier (to count what it saves)."""
    _algebra[0] = False
    try:
        yield
    finally:
        _algebra[0] = True


def equation_count(program: Program) -> int:
    """Equations in `program`, those of loop bodies and branches included."""
    return sum(1 + sum(equation_count(sub) for sub in subprograms(eqn)) for eqn in program.eqns)


def map_subprograms(program: Program, transform) -> Program:
    """Apply `transform(sub) -> sub` to every sub-program held by an equation
    (a loop body keeps its inputs and outputs, so the equation stays typed)."""
    if not any(subprograms(e) for e in program.eqns):
        return program
    done: dict = {}  # a body shared by equations stays shared (so CSE can merge them)

    def once(sub):
        if id(sub) not in done:
            done[id(sub)] = (sub, transform(sub))
        return done[id(sub)][1]

    eqns = []
    for eqn in program.eqns:
        if subprograms(eqn):
            params = {k: _map_value(v, once) for k, v in eqn.params.items()}
            eqn = Eqn(eqn.prim, eqn.inputs, params, eqn.outputs, eqn.location)
        eqns.append(eqn)
    return replace(program, eqns=eqns)


def _map_value(value, transform):
    subs = programs_in(value)
    if not subs:
        return value
    return transform(value) if isinstance(value, Program) else tuple(map(transform, subs))
