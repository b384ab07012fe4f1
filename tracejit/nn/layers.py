"""Keras-style layers: `Layer` (weights, sub-layer tracking, build on first
call) and `Dense`.

A layer builds its Variables the first time it is called, from the input's
shape. Inside a trace that shape is read without fixing the batch size, so
one kernel keeps serving every batch size. Floating inputs are cast to the
layer's dtype (Keras' autocasting); the default dtype is `floatx()`.
"""

from __future__ import annotations

import inspect
import re

import numpy as np

from ..core.shapes import value as traced_size
from ..frontend.eager import EagerTracer
from ..frontend.variables import Variable
from ..trace import ops
from ..trace.tracer import Tracer, operand
from . import activations, arguments, initializers

_floatx = np.dtype(np.float32)


def floatx() -> np.dtype:
    """The default dtype of layers' weights (float32, as in Keras)."""
    return _floatx


def set_floatx(dtype) -> None:
    global _floatx
    _floatx = np.dtype(dtype)


_name_counts: dict[str, int] = {}
_name_scope: list[str] = []  # names of the layers being called: variables' paths


def unique_name(base: str) -> str:
    """Keras' automatic names: "dense", "dense_1", "dense_2"..."""
    count = _name_counts.get(base, 0)
    _name_counts[base] = count + 1
    return base if count == 0 else f"{base}_{count}"


def snake_case(name: str) -> str:
    """Keras' automatic names: a capitalised word starts a part, and so does a capital
    after a lower-case letter (Conv2D -> conv2d, MaxPooling2D -> max_pooling2d,
    SimpleRNN -> simple_rnn, ReLU -> re_lu)."""
    name = re.sub(r"(?<=.)(?=[A-Z][a-z])", "_", name)
    return re.sub(r"(?<=[a-z])(?=[A-Z])", "_", name).lower()


def static_shape(x) -> tuple:
    """The shape of an array or traced value without binding traced sizes:
    building weights from it keeps the kernel generic in the batch size."""
    if type(x) is np.ndarray:
        return x.shape
    x = operand(x)
    if isinstance(x, Tracer):
        return tuple(traced_size(d) for d in x.aval.shape)
    return np.shape(x)


def cast_input(x, dtype):
    """Numeric inputs in the layer's dtype."""
    if type(x) is np.ndarray and x.dtype == dtype:
        return x
    x = operand(x)
    if isinstance(x, Tracer):
        return x if x.dtype == dtype else ops.convert(x, dtype)
    return np.asarray(x, dtype=dtype)


class Layer:
    """The base of layers and models: tracks the Variables and sub-layers
    assigned to it, builds itself on the first call."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        arguments.capture_init(cls)  # constructor arguments, for model.save

    def __init__(self, name=None, dtype=None, trainable=True, input_shape=None,
                 input_dim=None):
        self.name = name or unique_name(snake_case(type(self).__name__))
        self.dtype = np.dtype(dtype) if dtype is not None else floatx()
        self.trainable = trainable
        self.built = False
        self._output_shape = None
        shape = (input_dim,) if input_dim is not None else input_shape
        self._input_shape = None if shape is None else (None, *tuple(shape))

    def __setattr__(self, name, value):
        tracked = self.__dict__.setdefault("_tracked", {})
        if isinstance(value, (Layer, Variable)) or (
                isinstance(value, (list, tuple)) and value
                and all(isinstance(v, (Layer, Variable)) for v in value)):
            tracked[name] = value
        else:
            tracked.pop(name, None)
        object.__setattr__(self, name, value)

    # ------------------------------------------------------------ weights
    def add_weight(self, shape=(), initializer="glorot_uniform", dtype=None, trainable=True,
                   name=None) -> Variable:
        """A new Variable of this layer, its value drawn by `initializer`."""
        dtype = np.dtype(dtype) if dtype is not None else self.dtype
        value = initializers.get(initializer)(tuple(shape), dtype)
        # C order: an F-ordered start (orthogonal's QR) made the second train step,
        # whose updated weights are C-ordered, a new signature (6.6 s to compile)
        var = Variable(np.ascontiguousarray(value, dtype=dtype), trainable=trainable,
                       name=name or "weight")
        var.path = "/".join([*_name_scope, var.name]) if _name_scope else f"{self.name}/{var.name}"
        self.__dict__.setdefault("_own_weights", []).append(var)
        return var

    def _children(self) -> list:
        """Variables and layers assigned to this one, in assignment order."""
        out = list(self.__dict__.get("_own_weights", []))
        for value in self.__dict__.get("_tracked", {}).values():
            out.extend(value if isinstance(value, (list, tuple)) else [value])
        return out

    @property
    def layers(self) -> list:
        return [c for c in self._children() if isinstance(c, Layer)]

    def _collect(self, trainable_only: bool) -> list:
        if trainable_only and not self.trainable:
            return []
        seen, out = set(), []
        for child in self._children():
            found = child._collect(trainable_only) if isinstance(child, Layer) else (
                [child] if child.trainable or not trainable_only else [])
            for var in found:
                if id(var) not in seen:
                    seen.add(id(var))
                    out.append(var)
        return out

    @property
    def variables(self) -> list:
        return self._collect(trainable_only=False)

    @property
    def weights(self) -> list:
        return self.variables

    @property
    def trainable_variables(self) -> list:
        return self._collect(trainable_only=True)

    trainable_weights = trainable_variables

    @property
    def non_trainable_variables(self) -> list:
        trainable = {id(v) for v in self.trainable_variables}
        return [v for v in self.variables if id(v) not in trainable]

    non_trainable_weights = non_trainable_variables

    def count_params(self) -> int:
        return int(sum(v.size for v in self.variables))

    def get_weights(self) -> list:
        return [v.numpy() for v in self.weights]

    def set_weights(self, weights) -> None:
        variables = self.weights
        if len(weights) != len(variables):
            raise ValueError(f"{self.name}: {len(weights)} arrays for {len(variables)} weights")
        for var, value in zip(variables, weights):
            var.assign(value)

    # ------------------------------------------------------------ calling
    def build(self, input_shape) -> None:
        """Create the weights for inputs of `input_shape` (called once)."""
        self.built = True

    def call(self, inputs, *args, **kwargs):
        return inputs

    def __call__(self, inputs, *args, training=None, **kwargs):
        if _symbolic(inputs):  # the functional API: record the call, infer the shape
            return _record_call(self, inputs, args, kwargs)
        _name_scope.append(self.name)
        try:
            if not self.built:
                self._build_for_call(static_shape(inputs))
            if training is not None and _takes_training(type(self)):
                kwargs["training"] = training
            out = self.call(inputs, *args, **kwargs)
        finally:
            _name_scope.pop()
        self._note_output(out)
        return out

    def _note_output(self, out) -> None:
        """`_output_shape` (for `summary`); an eager tape's value of the same
        type as the last one (the same AVal object: concrete sizes) keeps it."""
        aval = out.ir_var.aval if type(out) is EagerTracer else None
        if aval is not None and aval is self.__dict__.get("_output_aval"):
            return
        shape = static_shape(out) if not isinstance(out, (list, tuple, dict)) else None
        # (neither is a Layer or Variable: no tracking to update)
        object.__setattr__(self, "_output_shape", shape)
        object.__setattr__(self, "_output_aval", aval)

    def _build_for_call(self, input_shape) -> None:
        self.build(input_shape)
        self.built = True

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name}, built={self.built}>"


_training_arg: dict[type, bool] = {}


def _takes_training(cls) -> bool:
    if cls not in _training_arg:
        try:
            params = inspect.signature(cls.call).parameters
        except (TypeError, ValueError):
            params = {}
        _training_arg[cls] = "training" in params or any(
            p.kind is p.VAR_KEYWORD for p in params.values())
    return _training_arg[cls]


class Dense(Layer):
    """`activation(inputs @ kernel + bias)`, as `keras.layers.Dense`; `kernel`
    and `bias` exist once the layer has been called (or built)."""

    def __init__(self, units, activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.activation = activations.get(activation)
        self._activate = activations.layer_activation(self.activation)
        self.use_bias = use_bias
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel = None
        self.bias = None

    def build(self, input_shape) -> None:
        if not input_shape:
            raise ValueError(f"{self.name}: Dense needs inputs of rank >= 1")
        self.kernel = self.add_weight((input_shape[-1], self.units), self.kernel_initializer,
                                      name="kernel")
        if self.use_bias:
            self.bias = self.add_weight((self.units,), self.bias_initializer, name="bias")
        self.built = True

    def call(self, inputs):
        y = cast_input(inputs, self.dtype) @ self.kernel
        if self.use_bias:
            y = y + self.bias
        return self._activate(y)


class Activation(Layer):
    """An activation as a layer: `Activation("relu")`."""

    def __init__(self, activation, **kwargs):
        super().__init__(**kwargs)
        self.activation = activations.get(activation)
        self._activate = activations.layer_activation(self.activation)

    def call(self, inputs):
        return self._activate(inputs)


class InputSpec:
    """What `Input(shape=...)` gives, and what a layer called on one returns (a
    symbolic tensor of the functional API): the shape without the batch, the
    layer and inputs that produce it, and an example value (batch 1) that
    layers were built and shapes inferred from."""

    def __init__(self, shape, dtype=None, name=None, layer=None, parents=None, kwargs=None,
                 index=None, example=None):
        self.shape = tuple(shape)
        self.dtype = dtype
        self.name = name
        self.layer, self.parents, self.kwargs, self.index = layer, parents, kwargs or {}, index
        if example is None:
            sizes = [1 if d is None else int(d) for d in self.shape]
            example = np.zeros((1, *sizes), dtype=np.dtype(dtype) if dtype else floatx())
        self.example = example

    def __repr__(self) -> str:
        source = f" from {self.layer.name}" if self.layer is not None else ""
        return f"<tracejit.nn symbolic tensor shape={(None, *self.shape)}{source}>"


def Input(shape, dtype=None, name=None) -> InputSpec:  # noqa: N802 - Keras' name
    return InputSpec(shape, dtype, name)


def _symbolic(inputs) -> bool:
    if isinstance(inputs, (list, tuple)):
        return any(isinstance(x, InputSpec) for x in inputs)
    return isinstance(inputs, InputSpec)


def _record_call(layer, inputs, args, kwargs):
    """`layer(symbolic inputs)`: run it on their examples (building its weights)
    and return symbolic tensors of its outputs."""
    examples = [x.example for x in inputs] if isinstance(inputs, (list, tuple)) \
        else inputs.example
    out = layer(examples, *args, **kwargs)
    call = dict(layer=layer, parents=inputs, kwargs=dict(kwargs, _args=args))
    if isinstance(out, (list, tuple)):
        return [InputSpec(np.shape(o)[1:], np.asarray(o).dtype, index=k, example=o, **call)
                for k, o in enumerate(out)]
    return InputSpec(np.shape(out)[1:], np.asarray(out).dtype, example=out, **call)
