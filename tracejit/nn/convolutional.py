"""Keras' convolution, pooling and reshaping layers (channels_last):
`Conv1D`, `Conv2D`, `MaxPooling1D/2D`, `AveragePooling1D/2D`,
`GlobalAveragePooling1D/2D`, `GlobalMaxPooling2D`, `Flatten`, `Reshape`.

A convolution is composed from existing primitives (im2col): one strided
slice of the input per kernel offset, concatenated along the channels into
patches (batch, out positions, kh*kw*cin), and one product with the kernel
reshaped to (kh*kw*cin, filters): one BLAS gemm over every batch element's rows
(and one for the kernel's gradient, `matmul_tn`). The batch
axis stays symbolic throughout, so one kernel serves every batch size.
Pooling whose windows tile the input (strides = pool_size, the default) is a
reduction over a (batch, out1, k1, out2, k2, channels) view of it; other
pooling is an elementwise maximum (or sum) of the window's strided slices,
which fuses into one loop nest. Max pooling splits the gradient evenly
between tied maxima (as `np.maximum`'s rule), where TensorFlow gives it to
the first: they differ only on exact ties.
"""

from __future__ import annotations

import itertools

import numpy as np

from ..primitives import conv
from ..trace import ops
from ..trace.tracer import Tracer, operand
from . import activations, initializers
from .layers import Layer, cast_input, static_shape

_PADDINGS = ("valid", "same")


def _tuple(value, n: int, what: str) -> tuple:
    values = (value,) * n if isinstance(value, (int, np.integer)) else tuple(value)
    if len(values) != n or not all(int(v) >= 1 for v in values):
        raise ValueError(f"{what} must be {n} positive integers, got {value!r}")
    return tuple(int(v) for v in values)


def _padding(padding: str, allowed=_PADDINGS) -> str:
    padding = str(padding).lower()
    if padding not in allowed:
        raise ValueError(f"padding must be one of {', '.join(allowed)}, got {padding!r}")
    return padding


def batch_reshape(x, tail):
    """`x.reshape(len(x), *tail)` keeping a traced batch size symbolic."""
    x = operand(x)
    if isinstance(x, Tracer):
        return ops.reshape(x, (x.aval.shape[0], *tail))
    return np.reshape(x, (np.shape(x)[0], *tail))


def output_size(n: int, k: int, stride: int, dilation: int, padding: str) -> tuple:
    """(output length, padding before, padding after) along one axis, as Keras."""
    span = (k - 1) * dilation + 1
    if padding == "valid":
        return max(0, (n - span) // stride + 1), 0, 0
    if padding == "causal":
        return (n - 1) // stride + 1, span - 1, 0
    out = -(-n // stride)
    total = max((out - 1) * stride + span - n, 0)
    return out, total // 2, total - total // 2


def pad_axis(x, axis: int, before: int, after: int, value=0.0):
    """Constant padding along one axis (traced: concatenated constant blocks)."""
    if not before and not after:
        return x
    x = operand(x)
    if not isinstance(x, Tracer):
        widths = [(0, 0)] * np.ndim(x)
        widths[axis] = (before, after)
        return np.pad(x, widths, constant_values=value)
    edge = [slice(None)] * x.ndim
    edge[axis] = slice(0, 1)
    unit = ops.full_like(x[tuple(edge)], value)
    pieces = []
    for width in (before, after):
        shape = list(unit.aval.shape)
        shape[axis] = width
        pieces.append(ops.broadcast_in_dim(unit, tuple(shape), tuple(range(x.ndim)))
                      if width else None)
    parts = [p for p in (pieces[0], x, pieces[1]) if p is not None]
    return np.concatenate(parts, axis=axis)


def windows(x, sizes, strides, dilations, outs):
    """The input's strided slices, one per window offset (spatial axes 1..n)."""
    for offsets in itertools.product(*(range(k) for k in sizes)):
        index = [slice(None)]
        for off, stride, dilation, out in zip(offsets, strides, dilations, outs):
            start = off * dilation
            index.append(slice(start, start + (out - 1) * stride + 1, stride))
        yield x[tuple(index) + (slice(None),)]


def _same_or_causal(padding, rank):
    return _padding(padding, ("valid", "same", "causal") if rank == 1 else _PADDINGS)


class Conv(Layer):
    """The n-d convolution behind Conv1D and Conv2D (channels_last)."""

    rank = 2

    def __init__(self, filters, kernel_size, strides=1, padding="valid", data_format=None,
                 dilation_rate=1, activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        if data_format not in (None, "channels_last"):
            raise ValueError(f"{self.name}: only data_format='channels_last' is supported")
        self.filters = int(filters)
        self.kernel_size = _tuple(kernel_size, self.rank, "kernel_size")
        self.strides = _tuple(strides, self.rank, "strides")
        self.dilation_rate = _tuple(dilation_rate, self.rank, "dilation_rate")
        self.padding = _same_or_causal(padding, self.rank)
        self.activation = activations.get(activation)
        self._activate = activations.layer_activation(self.activation)
        self.use_bias = use_bias
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel = self.bias = None

    def build(self, input_shape) -> None:
        if len(input_shape) != self.rank + 2:
            raise ValueError(f"{self.name}: {type(self).__name__} expects inputs of rank "
                             f"{self.rank + 2} (batch, *spatial, channels), got shape "
                             f"{tuple(input_shape)}")
        shape = (*self.kernel_size, input_shape[-1], self.filters)
        self.kernel = self.add_weight(shape, self.kernel_initializer, name="kernel")
        if self.use_bias:
            self.bias = self.add_weight((self.filters,), self.bias_initializer, name="bias")
        self.built = True

    def call(self, inputs):
        x = operand(cast_input(inputs, self.dtype))
        spatial = static_shape(x)[1:-1]
        outs = []
        for axis, (n, k, s, d) in enumerate(zip(spatial, self.kernel_size, self.strides,
                                                self.dilation_rate), start=1):
            out, before, after = output_size(n, k, s, d, self.padding)
            x = pad_axis(x, axis, before, after)
            outs.append(out)
        patches = _patches(x, self.kernel_size, self.strides, self.dilation_rate, outs)
        depth = int(np.prod(self.kernel_size)) * self.kernel.shape[-2]
        rows = batch_reshape(patches, (int(np.prod(outs)), depth))
        y = batch_reshape(rows @ self.kernel.reshape(depth, self.filters), (*outs, self.filters))
        if self.use_bias:  # after the reshape: bias and activation fuse into one nest
            y = y + self.bias
        return self._activate(y)




def _patches(x, sizes, strides, dilations, outs):
    """(batch, *outs, prod(sizes) * channels): the window offsets' strided
    slices side by side along the channels (im2col)."""
    if isinstance(x, Tracer):
        return conv.patches(x, sizes, strides, dilations)
    pieces = list(windows(x, sizes, strides, dilations, outs))
    return pieces[0] if len(pieces) == 1 else np.concatenate(pieces, axis=-1)


class Conv1D(Conv):
    """`keras.layers.Conv1D`: inputs (batch, steps, channels); padding valid,
    same or causal."""

    rank = 1


class Conv2D(Conv):
    """`keras.layers.Conv2D`: inputs (batch, rows, cols, channels)."""

    rank = 2


class Pooling(Layer):
    """Max or average pooling over windows of the spatial axes."""

    rank = 2
    reducer = "max"

    def __init__(self, pool_size=2, strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__(**kwargs)
        if data_format not in (None, "channels_last"):
            raise ValueError(f"{self.name}: only data_format='channels_last' is supported")
        self.pool_size = _tuple(pool_size, self.rank, "pool_size")
        self.strides = self.pool_size if strides is None else _tuple(strides, self.rank,
                                                                      "strides")
        self.padding = _padding(padding)

    def call(self, inputs):
        x = operand(inputs)
        spatial = static_shape(x)[1:-1]
        plan = [output_size(n, k, s, 1, self.padding)
                for n, k, s in zip(spatial, self.pool_size, self.strides)]
        fill = -np.inf if self.reducer == "max" else 0.0
        for axis, (_, before, after) in enumerate(plan, start=1):
            x = pad_axis(x, axis, before, after, fill)
        outs = [out for out, _, _ in plan]
        if self.strides == self.pool_size:
            total = self._tiled(x, outs)
        else:
            pieces = windows(x, self.pool_size, self.strides, (1,) * self.rank, outs)
            combine = np.maximum if self.reducer == "max" else np.add
            total = next(pieces)
            for piece in pieces:
                total = combine(total, piece)
        if self.reducer == "max":
            return total
        return total * self._inverse_counts(spatial, plan).astype(ops.aval_of(total).dtype)

    def _tiled(self, x, outs):
        """Windows that tile the input (strides = pool_size): the input viewed as
        (batch, out1, k1, out2, k2, channels) and reduced over the k axes, so the
        forward and its gradient are each one loop nest over the input."""
        x = operand(x)
        spatial = static_shape(x)[1:-1]
        if any(n != out * k for n, out, k in zip(spatial, outs, self.pool_size)):
            x = x[(slice(None), *[slice(0, out * k) for out, k in zip(outs, self.pool_size)])]
        tiles = [d for out, k in zip(outs, self.pool_size) for d in (out, k)]
        x = batch_reshape(x, (*tiles, static_shape(x)[-1]))
        axes = tuple(range(2, 2 + 2 * self.rank, 2))
        return np.max(x, axis=axes) if self.reducer == "max" else np.sum(x, axis=axes)

    def _inverse_counts(self, spatial, plan) -> np.ndarray:
        """1 / (cells of each window inside the input): Keras' average pooling
        leaves padding out of the mean."""
        ones = np.ones((1, *spatial, 1))
        for axis, (_, before, after) in enumerate(plan, start=1):
            ones = pad_axis(ones, axis, before, after, 0.0)
        windows_ = windows(ones, self.pool_size, self.strides, (1,) * self.rank,
                           [out for out, _, _ in plan])
        return 1.0 / sum(windows_)[0]


class MaxPooling1D(Pooling):
    rank, reducer = 1, "max"


class MaxPooling2D(Pooling):
    """`keras.layers.MaxPooling2D` (pool_size 2, strides = pool_size)."""

    rank, reducer = 2, "max"


class AveragePooling1D(Pooling):
    rank, reducer = 1, "average"


class AveragePooling2D(Pooling):
    """`keras.layers.AveragePooling2D` (padding excluded from the mean)."""

    rank, reducer = 2, "average"


class GlobalPooling(Layer):
    reducer = "average"

    def __init__(self, keepdims=False, data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.keepdims = keepdims

    def call(self, inputs):
        x = operand(inputs)
        axes = tuple(range(1, len(static_shape(x)) - 1))
        reduce = np.mean if self.reducer == "average" else np.max
        return reduce(x, axis=axes, keepdims=self.keepdims)


class GlobalAveragePooling1D(GlobalPooling):
    reducer = "average"


class GlobalAveragePooling2D(GlobalPooling):
    reducer = "average"


class GlobalMaxPooling2D(GlobalPooling):
    reducer = "max"


class Flatten(Layer):
    """`keras.layers.Flatten`: (batch, ...) -> (batch, product of the rest)."""

    def call(self, inputs):
        return batch_reshape(inputs, (int(np.prod(static_shape(inputs)[1:])),))


class Reshape(Layer):
    """`keras.layers.Reshape(target_shape)`: the shape without the batch axis
    (one entry may be -1)."""

    def __init__(self, target_shape, **kwargs):
        super().__init__(**kwargs)
        self.target_shape = tuple(int(d) for d in target_shape)

    def call(self, inputs):
        return batch_reshape(inputs, self.target_shape)
