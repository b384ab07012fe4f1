"""Keras' recurrent layers: `SimpleRNN`, `LSTM`, `GRU` (batch-major inputs
(batch, steps, features), Keras' weight names, shapes, gate order and
initializers: glorot_uniform kernels, orthogonal recurrent kernels).

The input projection of every step is one batched product before the loop;
the loop itself is `tracejit.lax.scan`, so the kernel holds one loop whatever
the sequence length (and its gradient is one reverse loop).
"""

from __future__ import annotations

import copy

import numpy as np

from .. import lax
from ..trace.tracer import operand
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

    def call(self, inputs):
        forward = self.forward_layer(inputs)
        backward = self.backward_layer(inputs)
        if self.return_sequences:
            backward = backward[:, ::-1]  # back in the inputs' order
        if self.merge_mode is None:
            return [forward, backward]
        if self.merge_mode == "concat":
            return np.concatenate([forward, backward], axis=-1)
        merged = {"sum": np.add, "mul": np.multiply}.get(self.merge_mode, np.add)(forward,
                                                                                 backward)
        return merged * 0.5 if self.merge_mode == "ave" else merged
