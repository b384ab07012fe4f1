"""Keras' merge layers: `Add`, `Subtract`, `Multiply`, `Average`, `Maximum`,
`Minimum`, `Concatenate(axis=-1)`, called on a list of tensors (for models
written by subclassing: `self.add([x, shortcut])`)."""

from __future__ import annotations

import functools

import numpy as np

from .layers import Layer


class Merge(Layer):
    combine = staticmethod(np.add)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.built = True  # no weights: nothing to build from the inputs' shapes

    def call(self, inputs):
        if not isinstance(inputs, (list, tuple)) or len(inputs) < 2:
            raise ValueError(f"{self.name}: {type(self).__name__} takes a list of at least "
                             "two inputs")
        return functools.reduce(self.combine, inputs)


class Add(Merge):
    combine = staticmethod(np.add)


class Multiply(Merge):
    combine = staticmethod(np.multiply)


class Maximum(Merge):
    combine = staticmethod(np.maximum)


class Minimum(Merge):
    combine = staticmethod(np.minimum)


class Subtract(Merge):
    combine = staticmethod(np.subtract)

    def call(self, inputs):
        if len(inputs) != 2:
            raise ValueError(f"{self.name}: Subtract takes exactly two inputs")
        return inputs[0] - inputs[1]


class Average(Merge):
    def call(self, inputs):
        return super().call(inputs) * (1.0 / len(inputs))


class Concatenate(Merge):
    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        self.axis = axis

    def call(self, inputs):
        return np.concatenate(list(inputs), axis=self.axis)
