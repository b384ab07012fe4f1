"""Numerically stable composites, built from primitives so their gradients
come for free. They work on traced values and on plain NumPy arrays alike.

Each is accurate to a few ulp over the whole float32 and float64 range, its
derivatives too (`benchmarks/numerics.py` prints the table, the tests bound
it), because the formulas are chosen for their derivatives as much as for
their values:
- exponentials are only ever taken of non-positive numbers (`exp(-|x|)`),
  so nothing overflows, and `-|x|` takes its derivative from the branch
  x >= 0 at 0, so smooth functions of it differentiate right there, to any
  order;
- logsumexp is `m + log1p(sum of the others)` (not `log(1 + ...)`, which
  loses everything below one ulp of 1), and its maxima contribute
  `exp(0) - 1`: exactly 0 in value, `exp`'s derivatives in every order.

`-inf` entries (masked logits) get weight exactly 0 and finite gradients:
the shift by the maximum is a `stop_gradient`, and an all-`-inf` row
shifts by 0 instead of producing `-inf - -inf = nan`.
"""

from __future__ import annotations

import numpy as np

from ..trace import ops
from ..trace.tracer import memoised
from .api import amax, asarray, mean, sum_


def _safe_max(x, axis):
    m = amax(x, axis=axis, keepdims=True)
    return ops.stop_gradient(ops.select(ops.eq(ops.abs_(m), np.inf), ops.zeros_like(m), m))


def _shift_and_log_rest(x, axis):
    """(x - m, log(sum(exp(x - m)))) with keepdims, the second as log1p of the sum of
    everything but one maximum, so it keeps its digits when that sum is tiny."""
    shift = _safe_max(x, axis)
    shifted = ops.sub(x, shift)
    at_max = ops.convert(ops.eq(shifted, 0.0), shifted.dtype)
    others = sum_(ops.sub(ops.exp(shifted), at_max), axis=axis, keepdims=True)
    extra_maxima = ops.sub(sum_(at_max, axis=axis, keepdims=True), 1.0)
    return shifted, ops.log1p(ops.add(others, extra_maxima)), shift


@memoised  # (eager tapes replay it)
def logsumexp(x, axis=None, keepdims=False):
    """log(sum(exp(x))) without overflow, accurate when one term dominates."""
    x = _as_float(x)
    _, log_rest, shift = _shift_and_log_rest(x, axis)
    out = ops.add(shift, log_rest)
    if keepdims:
        return out
    return ops.squeeze(out, range(x.ndim) if axis is None else _axes(axis, x.ndim))


def _axes(axis, ndim):
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    return tuple(a % ndim for a in axes)


@memoised  # (eager tapes replay it)
def softmax(x, axis=-1):
    x = _as_float(x)
    e = ops.exp(ops.sub(x, _safe_max(x, axis)))
    return ops.div(e, sum_(e, axis=axis, keepdims=True))


@memoised  # (eager tapes replay it)
def log_softmax(x, axis=-1):
    shifted, log_rest, _ = _shift_and_log_rest(_as_float(x), axis)
    return ops.sub(shifted, log_rest)


def _as_float(x):
    x = asarray(x)
    return x if np.issubdtype(x.dtype, np.floating) else ops.convert(x, np.float64)


def _softplus_parts(x):
    """(max(x, 0), max(-x, 0), log1p(exp(-|x|))): softplus(x) is the first plus the
    last, softplus(-x) the second plus the last. Every piece takes its derivative from
    the branch x >= 0 at 0, so their sums differentiate right there, to any order."""
    x = _as_float(x)
    right = ops.ge(x, 0.0)
    tail = ops.log1p(ops.exp(ops.select(right, ops.neg(x), x)))
    return ops.select(right, x, 0.0), ops.select(right, 0.0, ops.neg(x)), tail


@memoised  # (eager tapes replay it)
def sigmoid(x):
    """1 / (1 + exp(-x)) from e = exp(-|x|): 1 / (1 + e) or e / (1 + e)."""
    x = _as_float(x)
    right = ops.ge(x, 0.0)
    e = ops.exp(ops.select(right, ops.neg(x), x))
    return ops.div(ops.select(right, 1.0, e), ops.add(1.0, e))


@memoised  # (eager tapes replay it)
def log_sigmoid(x):
    """log(sigmoid(x)) = -softplus(-x), accurate where sigmoid(x) underflows."""
    _, negative, tail = _softplus_parts(x)
    return ops.neg(ops.add(negative, tail))


@memoised  # (eager tapes replay it)
def relu(x):
    """max(x, 0) with derivative 0 at 0, as relu in Keras, PyTorch and jax.nn (NaN
    passes through). Its backward is then a select on a bool mask: np.maximum splits
    a tie's gradient (as jnp.maximum), a float mask of 1, 0.5 and 0 kept for a product."""
    return ops.select(ops.le(x, 0), 0, x)


@memoised  # (eager tapes replay it)
def softplus(x):
    """log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)); its derivative is sigmoid(x)."""
    positive, _, tail = _softplus_parts(x)
    return ops.add(positive, tail)


@memoised  # (eager tapes replay it)
def erf(x):
    """The error function (a primitive: SciPy's in NumPy, libm's in kernels)."""
    (x,) = ops.promote(x, to_float=True)
    return ops.bind(ops.R["erf"], x)


@memoised  # (eager tapes replay it)
def cross_entropy(logits, labels_one_hot, axis=-1):
    """Mean softmax cross-entropy from logits (Keras' `from_logits=True`)."""
    return mean(ops.neg(sum_(ops.mul(labels_one_hot, log_softmax(logits, axis)), axis=axis)))


@memoised  # (eager tapes replay it)
def sparse_cross_entropy(logits, labels, axis=-1):
    """Mean softmax cross-entropy from logits and integer class labels (the number of
    classes, `logits.shape[axis]`, becomes part of the kernel's key)."""
    logits = _as_float(logits)
    classes = np.arange(logits.shape[axis]).reshape((-1,) + (1,) * (-1 - axis % logits.ndim
                                                                   + logits.ndim))
    picked = ops.eq(ops.expand_dims(asarray(labels), (axis % logits.ndim,)), classes)
    log_p = log_softmax(logits, axis)
    return mean(ops.neg(sum_(ops.select(picked, log_p, 0.0), axis=axis)))


@memoised  # (eager tapes replay it)
def sigmoid_cross_entropy(logits, labels):
    """Sigmoid cross-entropy from logits, per entry (TF's
    `sigmoid_cross_entropy_with_logits`): labels * softplus(-x) + (1 - labels) *
    softplus(x), so both its value and its gradient sigmoid(x) - labels keep their
    digits for confident predictions (softplus(x) - x * labels loses them)."""
    positive, negative, tail = _softplus_parts(logits)
    labels = ops.convert(asarray(labels), ops.aval_of(tail).dtype)
    return ops.add(ops.add(ops.mul(labels, negative), ops.mul(ops.sub(1.0, labels), positive)),
                   tail)


@memoised  # (eager tapes replay it)
def binary_cross_entropy(logits, labels):
    """Mean sigmoid cross-entropy from logits (Keras' `BinaryCrossentropy(from_logits=
    True)`)."""
    return mean(sigmoid_cross_entropy(logits, labels))
