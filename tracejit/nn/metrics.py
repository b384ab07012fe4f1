"""Metrics for `Model.compile(metrics=[...])`: functions of `(y_true, y_pred)`
giving one value per sample; `fit` and `evaluate` average them over samples.
"accuracy" picks binary, sparse or categorical accuracy from the shapes and
the loss, as Keras does.
"""

from __future__ import annotations

import numpy as np

from ..trace import ops
from ..trace.tracer import operand
from . import losses as losses_module


def _labels(y_true, y_pred):
    """Integer labels of shape y_pred.shape[:-1] (a trailing unit axis dropped)."""
    y_true = operand(y_true)
    if ops.aval_of(y_true).ndim == ops.aval_of(y_pred).ndim:
        y_true = y_true[..., 0]
    return ops.convert(y_true, np.int64)


def binary_accuracy(y_true, y_pred, threshold=0.5):
    y_pred = operand(y_pred)
    predicted = ops.convert(y_pred > threshold, ops.aval_of(y_pred).dtype)
    hits = ops.eq(ops.convert(operand(y_true), ops.aval_of(y_pred).dtype), predicted)
    return np.mean(ops.convert(hits, ops.aval_of(y_pred).dtype), axis=-1)


def categorical_accuracy(y_true, y_pred):
    y_pred = operand(y_pred)
    hits = ops.eq(np.argmax(operand(y_true), axis=-1), np.argmax(y_pred, axis=-1))
    return ops.convert(hits, ops.aval_of(y_pred).dtype)


def sparse_categorical_accuracy(y_true, y_pred):
    y_pred = operand(y_pred)
    hits = ops.eq(_labels(y_true, y_pred), np.argmax(y_pred, axis=-1))
    return ops.convert(hits, ops.aval_of(y_pred).dtype)


class Metric:
    """A named per-sample metric function."""

    def __init__(self, fn, name):
        self.fn, self.name = fn, name

    def __call__(self, y_true, y_pred):
        """The mean over the batch (fit weighs batches by their size)."""
        return np.mean(self.fn(y_true, y_pred))

    def __repr__(self) -> str:
        return f"<Metric {self.name}>"


class _Accuracy(Metric):
    """Keras' "accuracy": resolved from the shapes when first computed."""

    def __init__(self, loss):
        super().__init__(None, "accuracy")
        self.loss = loss

    def __call__(self, y_true, y_pred):
        if self.fn is None:
            self.fn = _accuracy_for(self.loss, y_true, y_pred)
        return super().__call__(y_true, y_pred)


def _accuracy_for(loss, y_true, y_pred):
    pred, true = ops.aval_of(operand(y_pred)), ops.aval_of(operand(y_true))
    last = pred.shape[-1] if pred.ndim else 1
    fn = getattr(loss, "fn", None)
    if fn is losses_module.binary_crossentropy or (isinstance(last, int) and last == 1):
        return binary_accuracy
    if fn is losses_module.sparse_categorical_crossentropy or true.ndim < pred.ndim:
        return sparse_categorical_accuracy
    return categorical_accuracy


NAMES = {
    "binary_accuracy": binary_accuracy, "categorical_accuracy": categorical_accuracy,
    "sparse_categorical_accuracy": sparse_categorical_accuracy,
    "mse": losses_module.mean_squared_error, "mae": losses_module.mean_absolute_error,
    "mean_squared_error": losses_module.mean_squared_error,
    "mean_absolute_error": losses_module.mean_absolute_error,
}


def get(identifier, loss=None) -> Metric:
    if isinstance(identifier, Metric):
        return identifier
    if identifier in ("accuracy", "acc"):
        return _Accuracy(loss)
    if isinstance(identifier, str):
        try:
            return Metric(NAMES[identifier], identifier)
        except KeyError:
            raise ValueError(f"unknown metric {identifier!r}; known: accuracy, "
                             f"{', '.join(sorted(NAMES))}") from None
    if callable(identifier):
        return Metric(identifier, getattr(identifier, "__name__", "metric"))
    raise ValueError(f"a metric must be a name or a function, got {identifier!r}")
