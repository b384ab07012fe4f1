"""The random-number primitive: Threefry-2x32 as an elementwise record.

`random_bits(k0, k1, c0, like, dtype)` is, at each element of `like`'s shape
with row-major position i, Threefry-2x32 of the key (k0, k1) at the counter
(c0, i): a pure function of its operands (only `like`'s shape is read). So it
is an ordinary elementwise equation: it fuses into the loop nest of its
consumers (a dropout mask never exists as an array), runs under `prange`,
and the interpreter and the kernel draw the same numbers.

`dtype` uint32: the first output word; float32 / float64: a uniform float in
[0, 1) from the top 24 / 53 bits of the block. It has no derivative (its
consumers treat it as a constant). Counters wrap after 2**32 elements.
"""

from __future__ import annotations

import numpy as np

from ..core.ir import AVal
from ..core.shapes import broadcast_shapes
from ..trace.batch_axes import aligned_operands
from ..trace.registry import ELEMENTWISE, Primitive, register

_MASK = np.uint64(0xFFFFFFFF)
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def _rounds(x0, x1, rotations):
    for r in rotations:
        x0 = (x0 + x1) & _MASK
        x1 = ((x1 << np.uint64(r)) | (x1 >> np.uint64(32 - r))) & _MASK
        x1 = x1 ^ x0
    return x0, x1


def threefry2x32(key, counter):
    """Threefry-2x32-20 of uint32 words: key (k0, k1), counter (c0, c1) broadcast
    together; returns the two output words as uint32 arrays."""
    k0, k1 = (np.asarray(k, dtype=np.uint64) & _MASK for k in key)
    k2 = k0 ^ k1 ^ np.uint64(0x1BD11BDA)
    schedule = (k0, k1, k2)
    x0 = (np.asarray(counter[0], dtype=np.uint64) + k0) & _MASK
    x1 = (np.asarray(counter[1], dtype=np.uint64) + k1) & _MASK
    for step in range(1, 6):
        x0, x1 = _rounds(x0, x1, _ROTATIONS[(step - 1) % 2])
        x0 = (x0 + schedule[step % 3]) & _MASK
        x1 = (x1 + schedule[(step + 1) % 3] + np.uint64(step)) & _MASK
    return x0.astype(np.uint32), x1.astype(np.uint32)


def _to_uniform(x0, x1, dtype):
    if dtype == np.float32:
        return (x0 >> np.uint32(8)).astype(np.float32) * np.float32(2.0 ** -24)
    bits = (x0.astype(np.uint64) << np.uint64(21)) | (x1.astype(np.uint64) >> np.uint64(11))
    return bits.astype(np.float64) * 2.0 ** -53


def _impl(k0, k1, c0, like, *, dtype, batch_dims=0):
    """`batch_dims` leading axes (added by vmap) are left out of a draw's
    position: each example draws what it would draw alone."""
    shape = np.broadcast_shapes(*(np.shape(a) for a in (k0, k1, c0, like)))
    inner = shape[batch_dims:]
    index = np.broadcast_to(np.arange(int(np.prod(inner)), dtype=np.uint64).reshape(inner),
                            shape)
    x0, x1 = threefry2x32((k0, k1), (c0, index))
    dtype = np.dtype(dtype)
    out = x0 if dtype == np.uint32 else _to_uniform(x0, x1, dtype)
    return out if out.ndim else out[()]


def _rule(avals, params, checks):
    shape = broadcast_shapes([a.shape for a in avals], "random_bits", checks)
    return [AVal(shape, np.dtype(params["dtype"]))]


def _flat(index, sizes) -> str:
    flat = ""
    for i, n in zip(index, sizes):
        flat = i if not flat else f"({flat}) * {n} + {i}"
    return flat or "0"


def _scalar(k0, k1, c0, like, *, dtype, index=(), sizes=(), batch_dims=0):
    dtype = np.dtype(dtype)
    flat = _flat(index[batch_dims:], sizes[batch_dims:])
    if dtype == np.uint32:
        return f"_rt.threefry_bits({k0}, {k1}, {c0}, {flat})"
    return f"_rt.threefry_uniform(np.{dtype.name}(0), {k0}, {k1}, {c0}, {flat})"


random_bits = register(Primitive("random_bits", ELEMENTWISE, _rule, _impl, scalar=_scalar,
                                 differentiable=False, indexed=True))


def _batch(size, args, dims, *, dtype, batch_dims=0):
    """As elementwise, and the batch axis is left out of a draw's position: each
    example draws what it would alone (the same key, the same numbers, as JAX)."""
    return random_bits.bind(*aligned_operands(args, dims), dtype=dtype,
                            batch_dims=batch_dims + 1), 0


random_bits.batch = _batch
