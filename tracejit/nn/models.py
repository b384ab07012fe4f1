"""Keras-style models: `Model` (subclass it, write `call(self, x)`) and
`Sequential`; both train with `compile` / `fit` (training.py), print a
`summary()` and save their weights to `.npz` files.
"""

from __future__ import annotations

import numpy as np

from ..core.errors import UnsupportedError
from .layers import InputSpec, Layer
from .training import Trainer


class Model(Trainer, Layer):
    """Subclass and define `call`, as with `keras.Model`:

        class SimpleModel(tracejit.nn.Model):
            def __init__(self):
                super().__init__()
                self.dense1 = tracejit.nn.Dense(5, activation="relu")
                self.dense2 = tracejit.nn.Dense(2, activation="softmax")

            def call(self, x):
                return self.dense2(self.dense1(x))
    """

    def __init__(self, *args, name=None, **kwargs):
        inputs = args[0] if args else kwargs.pop("inputs", None)
        outputs = args[1] if len(args) > 1 else kwargs.pop("outputs", None)
        if len(args) > 2 or (inputs is None) != (outputs is None):
            raise UnsupportedError("Model takes Model(inputs, outputs) (the functional API) "
                                   "or no arguments (subclassing)")
        super().__init__(name=name, **kwargs)
        self._graph = None
        if inputs is not None:
            self._graph = (inputs, outputs)
            self._graph_layers = _graph_layers(outputs)
            self._built_shape = (None,)  # summary shows the batch as None
            self.built = True

    def call(self, inputs, training=None):
        if self.__dict__.get("_graph") is None:
            raise NotImplementedError(f"{type(self).__name__} must define call(self, inputs)")
        sources, outputs = self._graph
        values = {}
        given = inputs if isinstance(sources, (list, tuple)) else [inputs]
        for spec, value in zip(_as_list(sources), given):
            values[id(spec)] = value
        results = [_evaluate(node, values, training) for node in _as_list(outputs)]
        return results if isinstance(outputs, (list, tuple)) else results[0]

    def _build_for_call(self, input_shape) -> None:
        self.built = True  # the layers inside build themselves when called

    def build(self, input_shape) -> None:
        """Build the weights for inputs of `input_shape` (None for the batch) by
        running the model once on zeros."""
        shape = tuple(1 if d is None else d for d in input_shape)
        self(np.zeros(shape, dtype=self.dtype))
        self._built_shape = tuple(input_shape)

    # ------------------------------------------------------------ summary
    def summary(self, print_fn=print) -> None:
        """A table of the layers, their output shapes and parameter counts."""
        if not self.variables:
            raise ValueError(f"{self.name} is not built yet: call it on a batch, or call "
                             "model.build(input_shape), before summary()")
        rows = [(f"{layer.name} ({type(layer).__name__})", self._shown_shape(layer),
                 f"{layer.count_params():,}") for layer in self.layers]
        widths = (33, 24, 15)
        lines = [f'Model: "{self.name}"', _rule("┏", "┳", "┓", "━", widths),
                 _row(("Layer (type)", "Output Shape", "Param #"), widths, "┃"),
                 _rule("┡", "╇", "┩", "━", widths)]
        for k, row in enumerate(rows):
            lines.append(_row(row, widths, "│"))
            lines.append(_rule("├", "┼", "┤", "─", widths) if k < len(rows) - 1 else
                         _rule("└", "┴", "┘", "─", widths))
        trainable = self.trainable_variables
        fixed = self.non_trainable_variables
        lines += [f" Total params: {_count(self.variables)}",
                  f" Trainable params: {_count(trainable)}",
                  f" Non-trainable params: {_count(fixed)}"]
        for line in lines:
            print_fn(line)

    def _shown_shape(self, layer) -> str:
        shape = layer._output_shape
        if shape is None:
            return "?"
        if getattr(self, "_built_shape", None) is not None:  # built from a shape: batch None
            shape = (None, *shape[1:])
        return str(tuple(shape))

    # ------------------------------------------------------------ weights
    def save_weights(self, filepath) -> None:
        """Write the weights to a NumPy `.npz` file, in order, named by path."""
        filepath = str(filepath)
        if not filepath.endswith(".npz"):
            raise ValueError(f"save_weights writes .npz files, got {filepath!r}")
        arrays = {f"{k:04d}/{v.path}": np.asarray(v.numpy()) for k, v in enumerate(self.weights)}
        np.savez(filepath, **arrays)

    def save(self, filepath) -> None:
        """The whole model (a Sequential's architecture, weights, optimizer and its
        state) in one `.npz` file that loading never executes (saving.py)."""
        from .saving import save_model
        save_model(self, filepath)

    def load_weights(self, filepath) -> None:
        """Read weights written by `save_weights` (matched by order and shape)."""
        with np.load(str(filepath)) as data:
            arrays = [data[name] for name in sorted(data.files)]
        weights = self.weights
        if not weights:
            raise ValueError(f"{self.name} is not built yet: call it (or build it) before "
                             "load_weights")
        if len(arrays) != len(weights):
            raise ValueError(f"{filepath}: {len(arrays)} arrays for {len(weights)} weights")
        for var, array in zip(weights, arrays):
            if array.shape != var.shape:
                raise ValueError(f"{filepath}: weight {var.path} has shape {var.shape}, the "
                                 f"file {array.shape}")
        for var, array in zip(weights, arrays):
            var.assign(array)


def _as_list(x) -> list:
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _graph_layers(outputs) -> list:
    """The layers producing `outputs`, each once, in an order that computes
    every layer's inputs before it."""
    order, seen = [], set()

    def visit(node):
        if node.layer is None or id(node.layer) in seen:
            return
        for parent in _as_list(node.parents):
            visit(parent)
        if id(node.layer) not in seen:
            seen.add(id(node.layer))
            order.append(node.layer)

    for node in _as_list(outputs):
        visit(node)
    return order


def _evaluate(node, values: dict, training):
    """The value of a symbolic tensor given the model's inputs (memoised per call)."""
    key = (id(node.layer), id(node.parents)) if node.layer is not None else id(node)
    if key not in values:
        if node.layer is None:
            raise ValueError(f"the model's outputs depend on an input not given: {node!r}")
        parents = [_evaluate(p, values, training) for p in _as_list(node.parents)]
        args = parents if isinstance(node.parents, (list, tuple)) else parents[0]
        kwargs = dict(node.kwargs)
        extra = kwargs.pop("_args", ())
        values[key] = node.layer(args, *extra, training=training, **kwargs)
    out = values[key]
    return out[node.index] if node.index is not None else out


class Sequential(Model):
    """Layers applied in order: `Sequential([Input((784,)), Dense(256, "relu"), Dense(10)])`."""

    def __init__(self, layers=None, name=None):
        super().__init__(name=name)
        self._sequence = []
        self._input = None
        for layer in layers or []:
            self.add(layer)

    def add(self, layer) -> None:
        if isinstance(layer, InputSpec):
            if self._sequence:
                raise ValueError("Input must come first in a Sequential model")
            self._input = (None, *layer.shape)
            return
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential.add: expected a layer, got {type(layer).__name__}")
        if not self._sequence and self._input is None and layer._input_shape is not None:
            self._input = layer._input_shape
        self._sequence = [*self._sequence, layer]
        if self._input is not None:
            self.build(self._input)

    @property
    def layers(self) -> list:
        return list(self._sequence)

    def call(self, inputs, training=None):
        for layer in self._sequence:
            inputs = layer(inputs, training=training)
        return inputs


def _rule(left, middle, right, fill, widths) -> str:
    return left + middle.join(fill * w for w in widths) + right


def _row(cells, widths, bar) -> str:
    padded = [f" {cells[0]:<{widths[0] - 2}} ", f" {cells[1]:<{widths[1] - 2}} ",
              f" {cells[2]:>{widths[2] - 2}} "]
    return bar + bar.join(padded) + bar


def _count(variables) -> str:
    params = sum(v.size for v in variables)
    size = float(sum(v.size * v.dtype.itemsize for v in variables))
    unit = "B"
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            break
        size /= 1024
    return f"{params:,} ({size:.2f} {unit})"
