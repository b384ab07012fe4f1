"""The NumPy reference interpreter of the IR (TRACEJIT_DISABLE_JIT=1, and the
calls served while a kernel compiles in the background).

A program is shape-generic, so symbolic sizes in parameters (the target of a
broadcast, the shape of a scatter) are read from this call's inputs, never
taken from the sizes seen while tracing.
"""

from __future__ import annotations

import numpy as np

from .ir import Literal, Program
from .shapes import Sym, resolve


def interpret(program: Program, args, consts) -> list:
    """Evaluate `program` on NumPy values; returns the outputs in order."""
    env: dict[int, object] = {}
    sizes = _input_sizes(program, args, consts)
    for var, val in zip(program.invars, args):
        env[id(var)] = val
    for var, val in zip(program.constvars, consts):
        env[id(var)] = val

    def read(atom):
        return atom.value if isinstance(atom, Literal) else env[id(atom)]

    with np.errstate(all="ignore"):  # inf and NaN flow as in the kernels, silently
        for eqn in program.eqns:
            params = {k: _sized(v, sizes) for k, v in eqn.params.items()}
            env[id(eqn.outputs[0])] = eqn.prim.impl(*[read(a) for a in eqn.inputs], **params)
    return [read(a) for a in program.outvars]


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
