"""The NumPy reference interpreter of the IR (TRACEJIT_DISABLE_JIT=1, and the
calls served while a kernel compiles in the background).

A program is shape-generic, so symbolic sizes in parameters (the target of a
broadcast, the shape of a scatter) are read from this call's inputs, never
taken from the sizes seen while tracing.
"""

from __future__ import annotations

import numpy as np

from .ir import Program
from .shapes import Sym, resolve
from .trace import replay


def interpret(program: Program, args, consts) -> list:
    """Evaluate `program` on NumPy values; returns the outputs in order."""
    sizes = _input_sizes(program, args, consts)

    def apply(prim, *values, **params):
        result = prim.impl(*values, **{k: _sized(v, sizes) for k, v in params.items()})
        for sym, output in prim.defined_dims(params):  # a while loop's trip count
            sizes[id(resolve(sym))] = int(result[output])
        return result

    with np.errstate(all="ignore"):  # inf and NaN flow as in the kernels, silently
        return replay(program, list(args), list(consts), apply)


def _input_sizes(program: Program, args, consts) -> dict:
    sizes = {}
    for var, val in zip(program.invars + program.constvars, list(args) + list(consts)):
        for dim, size in zip(var.aval.shape, np.shape(val)):
            root = resolve(dim)
            if type(root) is not int:
                sizes[id(root)] = size
    return sizes


def _sized(value, sizes):
    if isinstance(value, Sym):
        root = resolve(value)
        return root if type(root) is int else sizes.get(id(root), root.value)
    if isinstance(value, tuple):
        return tuple(_sized(v, sizes) for v in value)
    return value
