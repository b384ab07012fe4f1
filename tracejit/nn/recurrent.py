"""Keras' recurrent layers: `SimpleRNN`, `LSTM`, `GRU` (batch-major inputs
(batch, steps, features), Keras' weight names, shapes, gate order and
initializers: glorot_uniform kernels, orthogonal recurrent kernels).

The input projection of every step is one batched product before the loop;
the loop itself is `tracejit.lax.scan`, so the kernel holds one loop whatever
the sequence length (and its gradient is one reverse loop).

The LSTM with its default activations has its own gradient (`custom_vjp`, as
cuDNN's and Keras' fused kernels): the forward loop runs once and stacks the
gates; the reverse loop makes one product per step (dz @ U^T) and the
recurrent kernel's gradient is one product over every step after it, where
differentiating the scan ran the forward twice, stacked 21 values per step and
made two products per step. Forward mode (jvp) through it is not supported.
"""

from __future__ import annotations

import copy

import numpy as np

from .. import lax
from ..frontend.api import custom_vjp
from ..trace import ops
from ..trace.registry import REGISTRY
from ..trace.tracer import Tracer, operand
from . import activations, initializers
from .layers import Layer, cast_input


class RNN(Layer):
    """What the three cells share: weights, the scan over time, the outputs."""

    gates = 1  # blocks of `units` columns in the kernels

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid",
                 use_bias=True, kernel_initializer="glorot_uniform",
                 recurrent_initializer="orthogonal", bias_initializer="zeros",
                 return_sequences=False, return_state=False, go_backwards=False, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.activation = activations.get(activation)
        self.recurrent_activation = activations.get(recurrent_activation)
        self.use_bias = use_bias
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.recurrent_initializer = initializers.get(recurrent_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.return_sequences, self.return_state = return_sequences, return_state
        self.go_backwards = go_backwards
        self.kernel = self.recurrent_kernel = self.bias = None

    def build(self, input_shape) -> None:
        if len(input_shape) != 3:
            raise ValueError(f"{self.name}: {type(self).__name__} expects inputs (batch, "
                             f"steps, features), got shape {tuple(input_shape)}")
        width = self.gates * self.units
        self.kernel = self.add_weight((input_shape[-1], width), self.kernel_initializer,
                                      name="kernel")
        self.recurrent_kernel = self.add_weight((self.units, width), self.recurrent_initializer,
                                                name="recurrent_kernel")
        if self.use_bias:
            self.bias = self.add_weight(self._bias_shape(), self._bias_init(), name="bias")
        self.built = True

    def _bias_shape(self) -> tuple:
        return (self.gates * self.units,)

    def _bias_init(self):
        return self.bias_initializer

    def _input_bias(self):
        return self.bias

    def state_count(self) -> int:
        return 1

    def _recurrent_weights(self) -> tuple:
        return (operand(self.recurrent_kernel),)

    def step(self, states, projected, recurrent_kernel):
        raise NotImplementedError

    def call(self, inputs, initial_state=None):
        x = cast_input(inputs, self.dtype)
        projected = x @ self.kernel  # (batch, steps, gates * units), one product
        bias = self._input_bias()
        if bias is not None:
            projected = projected + bias
        projected = np.swapaxes(projected, 0, 1)  # time-major for the scan
        if initial_state is None:
            zeros = np.zeros_like(operand(projected)[0][:, :self.units])
            states = tuple(zeros for _ in range(self.state_count()))
        else:
            states = tuple(initial_state) if isinstance(initial_state, (list, tuple)) \
                else (initial_state,)
        weights = self._recurrent_weights()  # read once, outside the loop body

        def body(carry, x_t):
            new = self.step(carry, x_t, *weights)
            return new, new[0]

        final, outputs = lax.scan(body, states, projected, reverse=self.go_backwards)
        if self.go_backwards:  # Keras' order: the first output is of the last step
            outputs = outputs[::-1]
        output = np.swapaxes(outputs, 0, 1) if self.return_sequences else final[0]
        return [output, *final] if self.return_state else output


class SimpleRNN(RNN):
    """`keras.layers.SimpleRNN`: h = activation(x W + h U + b)."""

    gates = 1

    def step(self, states, projected, kernel):
        (h,) = states
        return (self.activation(projected + h @ kernel),)


class LSTM(RNN):
    """`keras.layers.LSTM`: gates i, f, c, o in Keras' column order;
    `unit_forget_bias` starts the forget gate's bias at 1."""

    gates = 4

    def __init__(self, units, unit_forget_bias=True, **kwargs):
        super().__init__(units, **kwargs)
        self.unit_forget_bias = unit_forget_bias

    def _bias_init(self):
        if not self.unit_forget_bias:
            return self.bias_initializer
        n, base = self.units, self.bias_initializer

        def init(shape, dtype=np.float32):
            value = np.asarray(base(shape, dtype)).copy()
            value[n:2 * n] = 1.0
            return value

        return init

    def state_count(self) -> int:
        return 2

    def _fused(self) -> bool:
        return (self.activation is activations.tanh
                and self.recurrent_activation is activations.sigmoid)

    def call(self, inputs, initial_state=None):
        if not self._fused():
            return super().call(inputs, initial_state)
        x = cast_input(inputs, self.dtype)
        # time-major before the product (the input is the narrow side): each
        # step's slice is then contiguous, which the gates' loop needs to vectorise
        projected = np.swapaxes(x, 0, 1) @ self.kernel
        if self.bias is not None:
            projected = projected + self.bias
        if self.go_backwards:  # processing order, which is Keras' order of the outputs
            projected = projected[::-1]
        if initial_state is None:
            h0 = c0 = np.zeros_like(operand(projected)[0][:, :self.units])
        else:
            h0, c0 = initial_state
        seq = _lstm_sequence(projected, operand(self.recurrent_kernel), h0, c0)
        n = self.units
        h_last, c_last = seq[-1][:, :n], seq[-1][:, n:]
        output = np.swapaxes(seq[:, :, :n], 0, 1) if self.return_sequences else h_last
        return [output, h_last, c_last] if self.return_state else output

    def step(self, states, projected, kernel):
        h, c = states
        z = projected + h @ kernel
        n = self.units
        i = self.recurrent_activation(z[:, :n])
        f = self.recurrent_activation(z[:, n:2 * n])
        g = self.activation(z[:, 2 * n:3 * n])
        o = self.recurrent_activation(z[:, 3 * n:])
        c = f * c + i * g
        return (o * self.activation(c), c)


def _lstm_steps(projected, kernel, h0, c0):
    """The LSTM loop (sigmoid gates, tanh): per step h, c and the gates i, f,
    g, o and tanh(c), stacked over time."""
    n = np.shape(kernel)[0]  # static (the batch size of h0 stays symbolic)
    sigmoid = activations.sigmoid

    def body(carry, z_in):
        h, c = carry
        m = h @ kernel
        # the input's and the product's slices added gate by gate: the sums then
        # fuse into the gates' (batch, units) loop, no (batch, 4 units) pass
        i, f = sigmoid(z_in[:, :n] + m[:, :n]), sigmoid(z_in[:, n:2 * n] + m[:, n:2 * n])
        g = np.tanh(z_in[:, 2 * n:3 * n] + m[:, 2 * n:3 * n])
        o = sigmoid(z_in[:, 3 * n:] + m[:, 3 * n:])
        c = f * c + i * g
        tc = np.tanh(c)
        h = o * tc
        return (h, c), (h, c, i, f, g, o, tc)

    return lax.scan(body, (h0, c0), projected)[1]


def _lstm_plain(projected, kernel, h0, c0):
    hs, cs = _lstm_steps(projected, kernel, h0, c0)[:2]
    return np.concatenate([hs, cs], axis=-1)


_lstm_sequence = custom_vjp(_lstm_plain)


def _lstm_forward(projected, kernel, h0, c0):
    """(h and c of every step side by side: (steps, batch, 2 units), residuals)."""
    steps = _lstm_steps(projected, kernel, h0, c0)
    # no derivative through the loop itself (the backward below is its
    # derivative): it stays the primal loop, which CSE then computes once
    held = [ops.stop_gradient(s) for s in steps]
    return ops.stop_gradient(np.concatenate(steps[:2], axis=-1)), (kernel, h0, c0, *held)


def _lstm_backward(residuals, g_seq):
    kernel, h0, c0, hs, cs, i, f, g, o, tc = residuals
    n = np.shape(kernel)[0]  # static (the batch size of h0 stays symbolic)
    c_prev = np.concatenate([operand(c0)[None], cs[:-1]], axis=0)
    kernel_t = np.swapaxes(kernel, 0, 1)  # written out once before the loop (codegen)

    def body(carry, xs):
        dh_next, dc = carry
        g_h, g_c, i, f, g, o, tc, c_prev = xs
        dh = g_h + dh_next
        dc = dc + g_c + dh * o * (1.0 - tc * tc)
        # the gates' nest writes each piece into the concatenation (codegen)
        dz = np.concatenate([dc * g * i * (1.0 - i), dc * c_prev * f * (1.0 - f),
                             dc * i * (1.0 - g * g), dh * tc * o * (1.0 - o)], axis=-1)
        return (dz @ kernel_t, dc * f), dz

    zeros = np.zeros_like(operand(hs)[0])
    (dh0, dc0), dzs = lax.scan(body, (zeros, zeros),
                               (g_seq[:, :, :n], g_seq[:, :, n:], i, f, g, o, tc, c_prev),
                               reverse=True)
    h_prev = np.concatenate([operand(h0)[None], hs[:-1]], axis=0)
    return dzs, _rows_t_matmul(h_prev, dzs), dh0, dc0


def _rows_t_matmul(a, g):
    """a.reshape(-1, k).T @ g.reshape(-1, n), one product, batch size symbolic."""
    if isinstance(a, Tracer) or isinstance(g, Tracer):
        return ops.bind(REGISTRY["matmul_tn"], operand(a), operand(g))
    return np.tensordot(a, g, axes=(list(range(np.ndim(a) - 1)),) * 2)


_lstm_sequence.defvjp(_lstm_forward, _lstm_backward)


class GRU(RNN):
    """`keras.layers.GRU` with Keras 3's defaults (reset_after=True): gates z,
    r, h; `bias` has two rows, the input's and the recurrent one's."""

    gates = 3

    def __init__(self, units, reset_after=True, **kwargs):
        super().__init__(units, **kwargs)
        if not reset_after:
            raise ValueError(f"{self.name}: only GRU(reset_after=True) (Keras' default) is "
                             "supported")

    def _bias_shape(self) -> tuple:
        return (2, 3 * self.units)

    def _input_bias(self):
        return None if self.bias is None else self.bias[0]

    def _recurrent_weights(self) -> tuple:
        bias = None if self.bias is None else operand(self.bias)[1]
        return (operand(self.recurrent_kernel), bias)

    def step(self, states, projected, kernel, bias):
        (h,) = states
        inner = h @ kernel
        if bias is not None:
            inner = inner + bias
        n = self.units
        z = self.recurrent_activation(projected[:, :n] + inner[:, :n])
        r = self.recurrent_activation(projected[:, n:2 * n] + inner[:, n:2 * n])
        candidate = self.activation(projected[:, 2 * n:] + r * inner[:, 2 * n:])
        return (z * h + (1.0 - z) * candidate,)


class Bidirectional(Layer):
    """`keras.layers.Bidirectional(layer, merge_mode="concat")`: the layer and a
    copy reading the sequence backwards (`forward_<name>`, `backward_<name>`),
    their outputs merged by "concat", "sum", "mul", "ave" or kept as a list (None)."""

    def __init__(self, layer, merge_mode="concat", backward_layer=None, **kwargs):
        super().__init__(**kwargs)
        if merge_mode not in ("concat", "sum", "mul", "ave", None):
            raise ValueError(f"{self.name}: unknown merge_mode {merge_mode!r}")
        if layer.built:
            raise ValueError(f"{self.name}: wrap a layer that has not been built yet")
        self.merge_mode = merge_mode
        backward = backward_layer or copy.deepcopy(layer)
        backward.go_backwards = not layer.go_backwards
        layer.name, backward.name = f"forward_{layer.name}", f"backward_{layer.name}"
        self.forward_layer, self.backward_layer = layer, backward
        self.return_sequences = layer.return_sequences
        self.return_state = layer.return_state

    def call(self, inputs):
        forward = self.forward_layer(inputs)
        backward = self.backward_layer(inputs)
        states = []
        if self.return_state:  # Keras' order: the output(s), the forward states, the backward
            states = [*forward[1:], *backward[1:]]
            forward, backward = forward[0], backward[0]
        if self.return_sequences:
            backward = backward[:, ::-1]  # back in the inputs' order
        merged = self._merge(forward, backward)
        return [*merged, *states] if self.merge_mode is None else (
            [merged, *states] if self.return_state else merged)

    def _merge(self, forward, backward):
        if self.merge_mode is None:
            return [forward, backward]
        if self.merge_mode == "concat":
            return np.concatenate([forward, backward], axis=-1)
        merged = {"sum": np.add, "mul": np.multiply}.get(self.merge_mode, np.add)(forward,
                                                                                 backward)
        return merged * 0.5 if self.merge_mode == "ave" else merged
