"""tracejit.config.debug_nans / debug_infs: kernels that check what every op makes.

`instrument` runs after the passes, just before code generation: after each
equation with a float output it inserts a `debug_check` of that output, which
fuses into the equation's loop nest. The first check to fail raises
NonFiniteError(index); the dispatcher turns the index into the op, the pass
(forward, or backward for the gradient) and the user's line. Ops that only
move elements (index maps) cannot make a NaN or an infinity and are not
checked. The checks are part of the generated source, so checked kernels
are cached apart from the plain ones, which are unchanged: free when off.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..core.ir import Eqn, Program, Var
from ..trace.registry import INDEXMAP, REGISTRY


def instrument(program: Program, flags: tuple) -> tuple[Program, tuple]:
    """(program with checks, one (op name, location, argument indices) per check)."""
    check = REGISTRY["debug_check"]
    mode = ("debug_nans" in flags) | 2 * ("debug_infs" in flags)
    arguments = {id(v): k for k, v in enumerate(program.invars)}
    eqns, checks = [], []
    for eqn in program.eqns:
        eqns.append(eqn)
        if eqn.prim.kind == INDEXMAP or eqn.prim.shape_only or eqn.prim is check:
            continue
        operands = tuple(arguments[id(a)] for a in eqn.inputs if id(a) in arguments)
        for out in eqn.outputs:
            if np.issubdtype(out.aval.dtype, np.inexact):  # complex: either part
                eqns.append(Eqn(check, [out], {"index": len(checks), "mode": mode},
                                [Var(out.aval)], eqn.location))
                checks.append((eqn.prim.name, eqn.location, operands))
    return replace(program, eqns=eqns), tuple(checks)
