"""The convolution's im2col and its adjoint, each one loop nest.

`patches(x)`: x (batch, *spatial, channels) -> (batch, *outs, prod(sizes) *
channels), the input under every window offset side by side along the
channels (offsets in row-major order, as a (*sizes, cin, filters) kernel is
laid out), so a convolution is `patches(x) @ kernel.reshape(-1, filters)`, one
BLAS gemm. `unpatches(g)` is its adjoint (col2im): each patch element added
back where it was read. Padding is done before (the caller pads x).

Written as slices and a concatenation, im2col was 9 strided copies into one
output and its gradient 27 nests (a slice, a zero-filled embedding and an add
per offset); as records, each is one nest with the sizes, strides and
dilations as constants, and compiles in a fraction of the time.
"""

from __future__ import annotations

import itertools

import numpy as np

from ..core.errors import ShapeError
from ..core.ir import AVal
from ..core.shapes import bind as bind_dim
from ..core.shapes import format_shape
from ..trace import ops
from ..trace.registry import ARRAY, REGISTRY, Primitive, register


def output_sizes(spatial, sizes, strides, dilations) -> tuple:
    return tuple((n - (k - 1) * d - 1) // s + 1
                 for n, k, s, d in zip(spatial, sizes, strides, dilations))


def _check(x, sizes, what):
    if x.ndim != len(sizes) + 2:
        raise ShapeError(f"{what}: expected (batch, {len(sizes)} spatial axes, channels), "
                         f"got {format_shape(x.shape)}")


def _patches_rule(avals, params, checks):
    (x,) = avals
    sizes = params["sizes"]
    _check(x, sizes, "patches")
    spatial = tuple(bind_dim(d) for d in x.shape[1:-1])
    outs = output_sizes(spatial, sizes, params["strides"], params["dilations"])
    if min(outs) < 1:
        raise ShapeError(f"patches: window {sizes} larger than the input {spatial}")
    depth = int(np.prod(sizes)) * bind_dim(x.shape[-1])
    return [AVal((x.shape[0], *outs, depth), x.dtype, x.weak)]


def _unpatches_rule(avals, params, checks):
    (g,) = avals
    sizes, spatial = params["sizes"], params["spatial"]
    _check(g, sizes, "unpatches")
    channels = bind_dim(g.shape[-1]) // int(np.prod(sizes))
    return [AVal((g.shape[0], *spatial, channels), g.dtype, g.weak)]


def _windows(sizes, strides, dilations, outs):
    """Per window offset: its index in the patches and the input's slices."""
    for k, offsets in enumerate(itertools.product(*(range(n) for n in sizes))):
        yield k, tuple(slice(o * d, o * d + (out - 1) * s + 1, s)
                       for o, d, s, out in zip(offsets, dilations, strides, outs))


def _patches_impl(x, *, sizes, strides, dilations):
    x = np.asarray(x)
    outs = output_sizes(x.shape[1:-1], sizes, strides, dilations)
    return np.concatenate([x[(slice(None), *index)] for _, index in
                           _windows(sizes, strides, dilations, outs)], axis=-1)


def _unpatches_impl(g, *, sizes, strides, dilations, spatial):
    g = np.asarray(g)
    channels = g.shape[-1] // int(np.prod(sizes))
    out = np.zeros((g.shape[0], *spatial, channels), g.dtype)
    for k, index in _windows(sizes, strides, dilations, g.shape[1:-1]):
        out[(slice(None), *index)] += g[..., k * channels:(k + 1) * channels]
    return out


def _emit(ctx, out, ins, eqn, adjoint: bool):
    """One nest: (batch, *outs, *window offsets, channels), the channels innermost."""
    p = eqn.params
    small = eqn.inputs[0].aval if adjoint else eqn.outputs[0].aval  # the patches
    big = eqn.outputs[0].aval if adjoint else eqn.inputs[0].aval
    rank = len(p["sizes"])
    channels = ctx.dim(big.shape[-1])
    dims = ctx.dims(small)[:1 + rank] + [str(k) for k in p["sizes"]] + [channels]
    idx, lines, indent = ctx.loops(dims, 0)
    pos, offs, c = idx[1:1 + rank], idx[1 + rank:1 + 2 * rank], idx[-1]
    flat = offs[0]
    for off, k in zip(offs[1:], p["sizes"][1:]):
        flat = f"({flat} * {k} + {off})"
    at_patch = f"{idx[0]}, {', '.join(pos)}, {flat} * {channels} + {c}"
    at_input = ", ".join([idx[0], *[f"{i} * {s} + {o} * {d}" for i, o, s, d in
                                    zip(pos, offs, p["strides"], p["dilations"])], c])
    if adjoint:
        head = [f"{out} = _rt.empty({ctx.shape(big)}, {ctx.dtype(big)})", f"{out}[...] = 0"]
        body = f"{out}[{at_input}] += {ins[0]}[{at_patch}]"
    else:
        head = [ctx.empty(out, eqn.outputs[0])]
        body = f"{out}[{at_patch}] = {ins[0]}[{at_input}]"
    return head + lines + [" " * indent + body]


def patches(x, sizes, strides, dilations):
    return ops.bind(REGISTRY["patches"], x, sizes=tuple(sizes), strides=tuple(strides),
                    dilations=tuple(dilations))


def _patches_vjp(g, out, x, *, sizes, strides, dilations):
    spatial = tuple(bind_dim(d) for d in x.aval.shape[1:-1])
    return [ops.bind(REGISTRY["unpatches"], g, sizes=sizes, strides=strides,
                     dilations=dilations, spatial=spatial)]


def _unpatches_vjp(g, out, x, *, sizes, strides, dilations, spatial):
    return [patches(g, sizes, strides, dilations)]


def _linear_jvp(name):
    def jvp(tangents, out, *xs, **params):
        return None if tangents[0] is None else ops.bind(REGISTRY[name], tangents[0], **params)
    return jvp


for _name, _rule, _impl, _vjp, _adjoint in (
        ("patches", _patches_rule, _patches_impl, _patches_vjp, False),
        ("unpatches", _unpatches_rule, _unpatches_impl, _unpatches_vjp, True)):
    register(Primitive(_name, ARRAY, _rule, _impl, vjp=_vjp, jvp=_linear_jvp(_name),
                       emit=lambda ctx, out, ins, eqn, _a=_adjoint: _emit(ctx, out, ins, eqn, _a),
                       strided_operands=True))


# ------------------------------------------------------------------ vmap
# The mapped axis rides along with the channels (channels are independent in
# both records), so a batched call is one call of the record on V * C channels.

def _move(x, src: int, dst: int):
    perm = list(range(ops.aval_of(x).ndim))
    perm.insert(dst, perm.pop(src))
    return ops.transpose(x, perm)


def _split_last(x, sizes):
    shape = ops.aval_of(x).shape
    return ops.reshape(x, (*shape[:-1], *sizes))


def _merge_last(x, count: int):
    shape = ops.aval_of(x).shape
    return ops.reshape(x, (*shape[:-count], int(np.prod([bind_dim(d) for d in shape[-count:]]))))


def _batch_patches(size, args, dims, *, sizes, strides, dilations):
    (x,), (d,) = args, dims
    rank, k = len(sizes), int(np.prod(sizes))
    x = _merge_last(_move(x, d, rank + 1), 2)  # (B, *spatial, V * C)
    v = bind_dim(size)
    y = patches(x, sizes, strides, dilations)  # channels (offset, v, c)
    y = _split_last(y, (k, v, bind_dim(ops.aval_of(y).shape[-1]) // (k * v)))
    return _merge_last(_move(y, rank + 2, rank + 1), 2), rank + 1  # (B, *outs, V, K * C)


def _batch_unpatches(size, args, dims, *, sizes, strides, dilations, spatial):
    (g,), (d,) = args, dims
    rank, k = len(sizes), int(np.prod(sizes))
    v = bind_dim(size)
    g = _move(g, d, rank + 1)  # (B, *outs, V, K * C)
    g = _split_last(g, (k, bind_dim(ops.aval_of(g).shape[-1]) // k))
    g = _merge_last(_move(g, rank + 1, rank + 2), 3)  # (B, *outs, K * V * C)
    x = ops.bind(REGISTRY["unpatches"], g, sizes=sizes, strides=strides, dilations=dilations,
                 spatial=spatial)
    return _split_last(x, (v, bind_dim(ops.aval_of(x).shape[-1]) // v)), rank + 1


REGISTRY["patches"].batch = _batch_patches
REGISTRY["unpatches"].batch = _batch_unpatches
