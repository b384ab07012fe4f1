"""Keras' normalization, regularization and embedding layers:
`BatchNormalization`, `LayerNormalization`, `Dropout`, `Embedding`.

BatchNormalization updates its moving statistics with `Variable.assign`
inside the compiled train step (they are extra outputs of the kernel), and
uses them when `training` is false (`evaluate`, `predict`, a plain call).
Dropout draws its mask from its own `tracejit.random.SeedGenerator`: a new
mask on every step, inside the step's fused loop nest.
"""

from __future__ import annotations

import numpy as np

from .. import random as tr
from ..trace import ops
from ..trace.tracer import Tracer, operand
from . import initializers
from .layers import Layer, cast_input


def _axes(axis, rank: int) -> tuple:
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    return tuple(sorted(int(a) % rank for a in axes))


def _along(value, axes, rank: int):
    """A per-feature vector shaped to broadcast against the inputs."""
    if axes == tuple(range(rank - len(axes), rank)):
        return value  # trailing axes: NumPy's broadcasting lines it up
    shape = [1] * rank
    for a, n in zip(axes, np.shape(operand(value)) if not isinstance(operand(value), Tracer)
                    else [int(d) for d in operand(value).shape]):
        shape[a] = n
    return value.reshape(shape) if hasattr(value, "reshape") else np.reshape(value, shape)


class BatchNormalization(Layer):
    """`keras.layers.BatchNormalization(axis=-1, momentum=0.99, epsilon=1e-3)`:
    training normalises with the batch's mean and (biased) variance and moves
    `moving_mean` / `moving_variance` toward them (new = old * momentum +
    batch * (1 - momentum)); inference uses the moving statistics."""

    def __init__(self, axis=-1, momentum=0.99, epsilon=1e-3, center=True, scale=True,
                 beta_initializer="zeros", gamma_initializer="ones",
                 moving_mean_initializer="zeros", moving_variance_initializer="ones",
                 **kwargs):
        super().__init__(**kwargs)
        self.axis, self.momentum, self.epsilon = axis, float(momentum), float(epsilon)
        self.center, self.scale = center, scale
        self.initializers = [initializers.get(i) for i in (
            gamma_initializer, beta_initializer, moving_mean_initializer,
            moving_variance_initializer)]
        self.gamma = self.beta = self.moving_mean = self.moving_variance = None

    def build(self, input_shape) -> None:
        self._rank = len(input_shape)
        self._feature_axes = _axes(self.axis, self._rank)
        shape = tuple(input_shape[a] for a in self._feature_axes)
        gamma, beta, mean, var = self.initializers
        if self.scale:
            self.gamma = self.add_weight(shape, gamma, name="gamma")
        if self.center:
            self.beta = self.add_weight(shape, beta, name="beta")
        self.moving_mean = self.add_weight(shape, mean, name="moving_mean", trainable=False)
        self.moving_variance = self.add_weight(shape, var, name="moving_variance",
                                               trainable=False)
        self.built = True

    def call(self, inputs, training=None):
        x = cast_input(inputs, self.dtype)
        features = self._feature_axes
        reduced = tuple(a for a in range(self._rank) if a not in features)
        if training:
            mean = np.mean(x, axis=reduced)
            var = np.mean(np.square(x - _along(mean, features, self._rank)), axis=reduced)
            m = self.momentum
            self.moving_mean.assign(self.moving_mean * m + ops.stop_gradient(mean) * (1 - m))
            self.moving_variance.assign(self.moving_variance * m
                                        + ops.stop_gradient(var) * (1 - m))
        else:
            mean, var = self.moving_mean, self.moving_variance
        inv = 1.0 / np.sqrt(var + self.epsilon)
        if self.scale:
            inv = inv * self.gamma
        shift = -mean * inv
        if self.center:
            shift = shift + self.beta
        return x * _along(inv, features, self._rank) + _along(shift, features, self._rank)


class LayerNormalization(Layer):
    """`keras.layers.LayerNormalization(axis=-1, epsilon=1e-3)`: each sample
    normalised over `axis` with its own mean and (biased) variance."""

    def __init__(self, axis=-1, epsilon=1e-3, center=True, scale=True,
                 beta_initializer="zeros", gamma_initializer="ones", **kwargs):
        super().__init__(**kwargs)
        self.axis, self.epsilon, self.center, self.scale = axis, float(epsilon), center, scale
        self.beta_initializer = initializers.get(beta_initializer)
        self.gamma_initializer = initializers.get(gamma_initializer)
        self.gamma = self.beta = None

    def build(self, input_shape) -> None:
        self._rank = len(input_shape)
        self._feature_axes = _axes(self.axis, self._rank)
        shape = tuple(input_shape[a] for a in self._feature_axes)
        if self.scale:
            self.gamma = self.add_weight(shape, self.gamma_initializer, name="gamma")
        if self.center:
            self.beta = self.add_weight(shape, self.beta_initializer, name="beta")
        self.built = True

    def call(self, inputs):
        x = cast_input(inputs, self.dtype)
        axes = self._feature_axes
        mean = np.mean(x, axis=axes, keepdims=True)
        centred = x - mean
        var = np.mean(np.square(centred), axis=axes, keepdims=True)
        y = centred * (1.0 / np.sqrt(var + self.epsilon))
        if self.scale:
            y = y * _along(self.gamma, axes, self._rank)
        if self.center:
            y = y + _along(self.beta, axes, self._rank)
        return y


class Dropout(Layer):
    """`keras.layers.Dropout(rate, noise_shape=None, seed=None)`: in training,
    each input is zeroed with probability `rate` and the rest scaled by
    1 / (1 - rate); the identity otherwise."""

    def __init__(self, rate, noise_shape=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= float(rate) <= 1.0:
            raise ValueError(f"{self.name}: rate must be in [0, 1], got {rate!r}")
        self.rate, self.noise_shape, self.seed = float(rate), noise_shape, seed
        self.seed_generator = tr.SeedGenerator(seed, name=f"{self.name}/seed_generator_state")

    def call(self, inputs, training=None):
        if not training or self.rate == 0.0:
            return inputs
        x = operand(inputs)
        if self.rate == 1.0:
            return x * 0
        dtype = ops.aval_of(x).dtype
        dtype = dtype if dtype in (np.float32, np.float64) else np.float64
        keep = tr.uniform(self.seed_generator, self._mask_like(x), dtype) >= self.rate
        return np.where(keep, x * (1.0 / (1.0 - self.rate)), 0.0).astype(dtype)


    def _mask_like(self, x):
        """An array shaped like the mask: the input, with a unit axis wherever
        `noise_shape` has 1 (the mask is shared along it; None keeps the input's size)."""
        if self.noise_shape is None:
            return x
        for axis, size in enumerate(self.noise_shape):
            if size == 1:
                x = x[(slice(None),) * axis + (slice(0, 1),)]
        return x


class Embedding(Layer):
    """`keras.layers.Embedding(input_dim, output_dim)`: integer ids -> rows of
    `embeddings` (initialised uniformly in [-0.05, 0.05], as Keras)."""

    def __init__(self, input_dim, output_dim, embeddings_initializer="uniform", **kwargs):
        super().__init__(**kwargs)
        self.input_dim, self.output_dim = int(input_dim), int(output_dim)
        self.embeddings_initializer = initializers.get(embeddings_initializer)
        self.embeddings = None

    def build(self, input_shape) -> None:
        self.embeddings = self.add_weight((self.input_dim, self.output_dim),
                                          self.embeddings_initializer, name="embeddings")
        self.built = True

    def call(self, inputs):
        ids = operand(inputs)
        if ops.aval_of(ids).dtype.kind not in "iu":
            ids = ops.convert(ids, np.int64)
        return ops.gather(operand(self.embeddings), [ids], 0)
