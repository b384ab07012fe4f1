"""Batch axes: what vmap's rules are written with.

Under vmap each value is a pair (array, batch axis), the axis None for a value
that is the same for every example. A record's `batch` rule (set where the
record is defined, in `tracejit.primitives`) rewrites one equation on such
pairs with ordinary primitives, using these helpers to move, add and
broadcast batch axes; the transformation that walks a program is
`tracejit.transforms.batching`.
"""

from __future__ import annotations

import numpy as np

from ..core.ir import AVal
from . import ops
from .registry import REGISTRY
from .tracer import bind


def ndim(x) -> int:
    return ops.aval_of(x).ndim


def shape(x) -> tuple:
    return tuple(ops.aval_of(x).shape)


def move(x, src: int, dst: int):
    """`x` with its axis `src` moved to position `dst`."""
    if src == dst:
        return x
    perm = list(range(ndim(x)))
    perm.insert(dst, perm.pop(src))
    return ops.transpose(x, perm)


def front(x, dim):
    """The batch axis first (an unbatched value as it is)."""
    return x if dim is None else move(x, dim, 0)


def materialize(x, dim, size):
    """`x` batched along axis 0: moved there, or broadcast when unbatched."""
    if dim is not None:
        return move(x, dim, 0)
    rank = ndim(x)
    return bind(REGISTRY["broadcast_in_dim"], x, _traced=True, shape=(size,) + shape(x),
                bdims=tuple(range(1, rank + 1)))


def all_front(size, args, dims) -> list:
    """Every operand batched along axis 0 (ops whose operands share leading axes)."""
    return [materialize(x, d, size) for x, d in zip(args, dims)]


def with_unit_axes(x, rank: int):
    """A front-batched `x` padded with unit axes after the batch axis to
    `rank` per-example axes (right-aligned broadcasting against the others)."""
    have = ndim(x) - 1
    if have >= rank:
        return x
    full = shape(x)
    pad = rank - have
    return bind(REGISTRY["broadcast_in_dim"], x, shape=full[:1] + (1,) * pad + full[1:],
                bdims=(0,) + tuple(range(1 + pad, 1 + rank)))


def aligned_operands(args, dims) -> list:
    """Operands of an elementwise op, batched ones with the batch axis first and
    padded to the widest example's rank: they broadcast per example."""
    rank = max(ndim(x) - (d is not None) for x, d in zip(args, dims))
    return [x if d is None else with_unit_axes(move(x, d, 0), rank)
            for x, d in zip(args, dims)]


def shift_axes(axes) -> tuple:
    """Per-example axes as axes of the front-batched value."""
    return tuple(a + 1 for a in axes)


def leading_batch_rule(name, shift_params=None):
    """The rule of an op on one operand along its trailing axes: the batch axis
    first, axis parameters shifted past it (`shift_params(size, params) -> params`)."""
    def rule(size, args, dims, **params):
        x = move(args[0], dims[0], 0)
        if shift_params is not None:
            params = shift_params(size, params)
        return bind(REGISTRY[name], x, *args[1:], **params), 0

    return rule


def batched_aval(aval: AVal, dim, size) -> AVal:
    if dim is None:
        return aval
    dims = tuple(aval.shape)
    return AVal(dims[:dim] + (size,) + dims[dim:], aval.dtype, aval.weak)


def unbatched_aval(aval: AVal, dim) -> AVal:
    if dim is None:
        return aval
    dims = tuple(aval.shape)
    return AVal(dims[:dim] + dims[dim + 1:], aval.dtype, aval.weak)


def iota(size, rank: int):
    """0, 1, ..., size - 1 (int64) along axis 0, with `rank` unit axes after it
    (the batch size may be symbolic: a running sum of ones, exact in integers)."""
    ones = bind(REGISTRY["broadcast_in_dim"], np.int64(1), _traced=True, shape=(size,), bdims=())
    counts = ops.sub(bind(REGISTRY["cumsum"], ones, axis=0, reverse=False), np.int64(1))
    return with_unit_axes(counts, rank) if rank else counts
