"""Losses with Keras' names and semantics: called as `loss(y_true, y_pred)`,
per-sample values reduced to their mean ("sum_over_batch_size").

Cross-entropies work from logits (`from_logits=True`) through log-softmax /
softplus, stable at any scale; from probabilities they clip to [1e-7, 1 - 1e-7]
as Keras does. Probabilities that a layer's softmax or sigmoid activation
produced are traced back to their logits, as Keras does too.
"""

from __future__ import annotations

import numpy as np

from ..core.errors import warn
from ..core.shapes import bind as bind_dim
from ..numpy.api import squeeze
from ..trace import ops
from ..trace.tracer import Tracer, operand
from . import activations, arguments, functional

EPSILON = 1e-7


def _size(x, axis: int) -> int:
    """One size as an int (binds only that axis of a traced value)."""
    if isinstance(x, Tracer):
        return bind_dim(x.aval.shape[axis])
    return np.shape(x)[axis]


def _as_pred(y_pred):
    y_pred = operand(y_pred)
    if not isinstance(y_pred, Tracer):
        y_pred = np.asarray(y_pred)
        if not np.issubdtype(y_pred.dtype, np.floating):
            y_pred = y_pred.astype(np.float64)
    return y_pred


def _like(y_true, y_pred):
    """Labels in the predictions' dtype (Keras casts them)."""
    if type(y_true) is np.ndarray and y_true.ndim and isinstance(y_pred, Tracer) and \
            y_true.dtype == y_pred.ir_var.aval.dtype:  # (the common case: nothing to convert)
        return y_true
    return ops.convert(operand(y_true), ops.aval_of(y_pred).dtype)


def _logits(y_pred, from_logits: bool, activation: str, loss: str):
    """The logits to compute from, or None for probabilities. As in Keras, the
    output of a softmax/sigmoid layer is traced back to its logits (with a
    warning when `from_logits=True` was given: it was not logits)."""
    logits = activations.logits_of(y_pred, activation)
    if logits is not None:
        if from_logits:
            warn(f"{loss} received from_logits=True, but the predictions were produced by a "
                 f"{activation} activation and thus are not logits; computing from the logits "
                 "before it, as Keras does")
        return logits
    return y_pred if from_logits else None


# ---------------------------------------------------- per-sample functions

def mean_squared_error(y_true, y_pred):
    y_pred = _as_pred(y_pred)
    return np.mean(np.square(y_pred - _like(y_true, y_pred)), axis=-1)


def mean_absolute_error(y_true, y_pred):
    y_pred = _as_pred(y_pred)
    return np.mean(np.abs(y_pred - _like(y_true, y_pred)), axis=-1)


def categorical_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0,
                             axis=-1):
    y_pred = _as_pred(y_pred)
    y_true = _like(y_true, y_pred)
    if label_smoothing:
        classes = _size(y_pred, axis)
        y_true = y_true * (1.0 - label_smoothing) + label_smoothing / classes
    logits = _logits(y_pred, from_logits, "softmax", "categorical_crossentropy")
    if logits is not None:
        return -np.sum(y_true * functional.log_softmax(logits, axis), axis=axis)
    probabilities = y_pred / np.sum(y_pred, axis=axis, keepdims=True)
    probabilities = np.clip(probabilities, EPSILON, 1.0 - EPSILON)
    return -np.sum(y_true * np.log(probabilities), axis=axis)


def sparse_categorical_crossentropy(y_true, y_pred, from_logits=False, axis=-1):
    """Integer labels (shape `y_pred.shape[:-1]`, or with a trailing 1)."""
    y_pred = _as_pred(y_pred)
    return categorical_crossentropy(one_hot(y_true, y_pred, axis), y_pred, from_logits,
                                    axis=axis)


def one_hot(labels, like, axis=-1):
    """Integer labels as one-hot rows of `like`'s class axis, by comparison with
    the class numbers (no gather that would fix the batch size)."""
    labels = operand(labels)
    ndim = ops.aval_of(like).ndim
    if ops.aval_of(labels).ndim == ndim:
        labels = squeeze(labels, axis=axis)
    classes = np.arange(_size(like, axis))
    labels = ops.convert(labels, np.int64)
    return ops.convert(ops.eq(ops.expand_dims(labels, (axis % ndim,)), classes),
                       ops.aval_of(like).dtype)


def binary_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0, axis=-1):
    y_pred = _as_pred(y_pred)
    y_true = _like(y_true, y_pred)
    if label_smoothing:
        y_true = y_true * (1.0 - label_smoothing) + 0.5 * label_smoothing
    logits = _logits(y_pred, from_logits, "sigmoid", "binary_crossentropy")
    if logits is not None:  # z softplus(-x) + (1 - z) softplus(x): exact when confident
        per_entry = functional.sigmoid_cross_entropy(logits, y_true)
    else:
        p = np.clip(y_pred, EPSILON, 1.0 - EPSILON)
        per_entry = -(y_true * np.log(p) + (1.0 - y_true) * np.log(1.0 - p))
    return np.mean(per_entry, axis=axis)


# -------------------------------------------------------- loss objects

class Loss:
    """A loss as an object: `loss(y_true, y_pred, sample_weight=None)`."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        arguments.capture_init(cls)  # constructor arguments, for model.save

    def __init__(self, reduction="sum_over_batch_size", name=None):
        if reduction not in ("sum_over_batch_size", "sum", "none", None):
            raise ValueError(f"unknown reduction {reduction!r}")
        self.reduction = reduction
        self.name = name or _snake(type(self).__name__)

    def call(self, y_true, y_pred):
        raise NotImplementedError

    def __call__(self, y_true, y_pred, sample_weight=None):
        losses = self.call(y_true, y_pred)
        if sample_weight is not None:
            losses = losses * ops.convert(operand(sample_weight), ops.aval_of(losses).dtype)
        if self.reduction in ("none", None):
            return losses
        if self.reduction == "sum":
            return np.sum(losses)
        return np.mean(losses)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name}>"


def _snake(name: str) -> str:
    from .layers import snake_case
    return snake_case(name)


class LossFunctionWrapper(Loss):
    def __init__(self, fn, reduction="sum_over_batch_size", name=None, **options):
        super().__init__(reduction, name or fn.__name__)
        self.fn, self.options = fn, options

    def call(self, y_true, y_pred):
        return self.fn(y_true, y_pred, **self.options)


class MeanSquaredError(LossFunctionWrapper):
    def __init__(self, reduction="sum_over_batch_size", name="mean_squared_error"):
        super().__init__(mean_squared_error, reduction, name)


class MeanAbsoluteError(LossFunctionWrapper):
    def __init__(self, reduction="sum_over_batch_size", name="mean_absolute_error"):
        super().__init__(mean_absolute_error, reduction, name)


class CategoricalCrossentropy(LossFunctionWrapper):
    def __init__(self, from_logits=False, label_smoothing=0.0, axis=-1,
                 reduction="sum_over_batch_size", name="categorical_crossentropy"):
        super().__init__(categorical_crossentropy, reduction, name, from_logits=from_logits,
                         label_smoothing=label_smoothing, axis=axis)


class SparseCategoricalCrossentropy(LossFunctionWrapper):
    def __init__(self, from_logits=False, axis=-1, reduction="sum_over_batch_size",
                 name="sparse_categorical_crossentropy"):
        super().__init__(sparse_categorical_crossentropy, reduction, name,
                         from_logits=from_logits, axis=axis)


class BinaryCrossentropy(LossFunctionWrapper):
    def __init__(self, from_logits=False, label_smoothing=0.0, axis=-1,
                 reduction="sum_over_batch_size", name="binary_crossentropy"):
        super().__init__(binary_crossentropy, reduction, name, from_logits=from_logits,
                         label_smoothing=label_smoothing, axis=axis)


NAMES = {
    "mean_squared_error": MeanSquaredError, "mse": MeanSquaredError,
    "mean_absolute_error": MeanAbsoluteError, "mae": MeanAbsoluteError,
    "categorical_crossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
    "binary_crossentropy": BinaryCrossentropy,
}


def get(identifier):
    """A loss from a name, a Loss object or a function `(y_true, y_pred) -> per-sample`."""
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, str):
        try:
            return NAMES[identifier]()
        except KeyError:
            raise ValueError(f"unknown loss {identifier!r}; known: "
                             f"{', '.join(sorted(NAMES))}") from None
    if callable(identifier):
        return LossFunctionWrapper(identifier)
    raise ValueError(f"a loss must be a name, a Loss or a function, got {identifier!r}")
