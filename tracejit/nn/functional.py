"""Numerically stable composites, built from primitives so their gradients
come for free. They work on traced values and on plain NumPy arrays alike.

`-inf` entries (masked logits) get weight exactly 0 and finite gradients:
the shift by the maximum is a `stop_gradient`, and an all-`-inf` row
shifts by 0 instead of producing `-inf - -inf = nan`.
"""

from __future__ import annotations

import numpy as np

from .. import ops
from ..numpy_api import amax, asarray, mean, sum_


def _safe_max(x, axis):
    m = amax(x, axis=axis, keepdims=True)
    return ops.stop_gradient(ops.select(ops.eq(ops.abs_(m), np.inf), ops.zeros_like(m), m))


def logsumexp(x, axis=None, keepdims=False):
    """log(sum(exp(x))) without overflow."""
    x = asarray(x)
    shift = _safe_max(x, axis)
    total = sum_(ops.exp(ops.sub(x, shift)), axis=axis, keepdims=True)
    out = ops.add(ops.log(total), shift)
    if keepdims:
        return out
    return ops.squeeze(out, range(x.ndim) if axis is None else _axes(axis, x.ndim))


def _axes(axis, ndim):
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    return tuple(a % ndim for a in axes)


def softmax(x, axis=-1):
    x = asarray(x)
    e = ops.exp(ops.sub(x, _safe_max(x, axis)))
    return ops.div(e, sum_(e, axis=axis, keepdims=True))


def log_softmax(x, axis=-1):
    x = asarray(x)
    shifted = ops.sub(x, _safe_max(x, axis))
    return ops.sub(shifted, ops.log(sum_(ops.exp(shifted), axis=axis, keepdims=True)))


def sigmoid(x):
    """1 / (1 + exp(-x)), as 0.5 * (tanh(x / 2) + 1): no overflow either way."""
    return ops.mul(0.5, ops.add(ops.tanh(ops.mul(x, 0.5)), 1.0))


def relu(x):
    return ops.maximum(x, 0.0)


def softplus(x):
    """log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|))."""
    return ops.add(ops.maximum(x, 0.0), ops.log1p(ops.exp(ops.neg(ops.abs_(x)))))


def erf(x):
    """The error function (a primitive: SciPy's in NumPy, libm's in kernels)."""
    (x,) = ops.promote(x, to_float=True)
    return ops.bind(ops.R["erf"], x)


def cross_entropy(logits, labels_one_hot, axis=-1):
    """Mean softmax cross-entropy from logits (Keras' `from_logits=True`)."""
    return mean(ops.neg(sum_(ops.mul(labels_one_hot, log_softmax(logits, axis)), axis=axis)))
