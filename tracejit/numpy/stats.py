"""Statistics on tracers: sorting, quantiles, medians, averages, covariances.

Sorting is one primitive (`argsort`, a stable sort along the last axis, not
differentiable); the sorted values are a gather of it, so their gradient goes
back to where each value came from. Quantiles are NumPy's default 'linear'
interpolation between order statistics, NaN wherever the data holds one.
"""

from __future__ import annotations

import numpy as np

from ..core.errors import UnsupportedError, with_location
from ..core.shapes import bind as bind_dim
from ..core.shapes import normalize_axes
from ..trace import ops
from .api import _gather, amax, amin, asarray, concatenate, implements, mean, ravel, reshape, sum_
from .shape import _axis, _take_range, diagonal, moveaxis


def _last_axis_rows(a, axis):
    """a with `axis` moved last and the others merged: (rows, n), and the undo."""
    a = asarray(a)
    axis = _axis(axis, a.ndim, "sort")
    moved = moveaxis(a, axis, -1)
    shape = tuple(bind_dim(d) for d in ops.aval_of(moved).shape)
    rows = reshape(moved, (int(np.prod(shape[:-1])), shape[-1]))

    def undo(x):
        last = bind_dim(ops.aval_of(x).shape[-1])
        return moveaxis(reshape(x, shape[:-1] + (last,)), -1, axis)

    return rows, undo


def _take_rows(rows, order):
    n_rows = bind_dim(ops.aval_of(rows).shape[0])
    return _gather(rows, [np.arange(n_rows)[:, None], order], 0)


@implements(np.argsort)
def argsort(a, axis=-1, kind=None, order=None, stable=None):
    if order is not None:
        raise UnsupportedError(with_location("np.argsort(order=) is not traced"))
    if axis is None:
        a, axis = ravel(a), 0
    rows, undo = _last_axis_rows(a, axis)
    return undo(ops.bind(ops.R["argsort"], rows))


@implements(np.sort)
def sort(a, axis=-1, kind=None, order=None, stable=None):
    """Values in order; the gradient goes to where each value came from."""
    if order is not None:
        raise UnsupportedError(with_location("np.sort(order=) is not traced"))
    if axis is None:
        a, axis = ravel(a), 0
    rows, undo = _last_axis_rows(a, axis)
    return undo(_take_rows(rows, ops.bind(ops.R["argsort"], rows)))


@implements(np.partition)
def partition(a, kth, axis=-1, kind="introselect", order=None):
    """A partition around `kth`: the fully sorted array is one (NumPy leaves the
    order inside each part unspecified; the kth entries are NumPy's exactly)."""
    _check_kth(a, kth, axis, "partition")
    return sort(a, axis, order=order)


@implements(np.argpartition)
def argpartition(a, kth, axis=-1, kind="introselect", order=None):
    _check_kth(a, kth, axis, "argpartition")
    return argsort(a, axis, order=order)


def _check_kth(a, kth, axis, name):
    a = asarray(a)
    n = bind_dim(ops.aval_of(ravel(a) if axis is None else a).shape[
        0 if axis is None else int(axis) % a.ndim])
    for k in np.atleast_1d(kth):
        if not -n <= int(k) < n:
            raise ValueError(with_location(f"np.{name}: kth(={int(k)}) out of bounds ({n})"))


@implements(np.take_along_axis)
def take_along_axis(arr, indices, axis=-1):
    if axis is None:
        arr, axis = ravel(arr), 0
    rows, undo = _last_axis_rows(arr, axis)
    index_rows, _ = _last_axis_rows(indices, axis)
    return undo(_take_rows(rows, index_rows))


@implements(np.quantile)
def quantile(a, q, axis=None, out=None, overwrite_input=False, method="linear",
             keepdims=False, **unused):
    """NumPy's default ('linear') quantiles of constant q; NaN where the data has one."""
    if out is not None or method != "linear" or unused:
        raise UnsupportedError(with_location(
            "np.quantile / np.percentile: only method='linear' without out= is traced"))
    a = asarray(a)
    if not ops.is_inexact(a.dtype):  # complex ones meet the sort's error
        a = ops.convert(a, np.float64)
    ndim = a.ndim
    if axis is None:
        a, axis = ravel(a), 0
    else:
        axes = normalize_axes(axis, a.ndim, "quantile")
        if len(axes) != 1:
            raise UnsupportedError(with_location("np.quantile: one axis (or all) only"))
        axis = axes[0]
    ordered = sort(a, axis)
    n = bind_dim(ops.aval_of(a).shape[axis])
    has_nan = ops.gt(sum_(ops.convert(ops.ne(a, a), np.int64), axis, keepdims=True), 0)
    qs = np.asarray(q, dtype=np.float64)
    if isinstance(q, (np.ndarray, list, tuple)):  # an array of q promotes, as in NumPy
        a = ops.convert(a, np.result_type(a.dtype, np.asarray(q).dtype))
        ordered = ops.convert(ordered, a.dtype)
    outs = []
    for fraction in qs.reshape(-1):
        position = fraction * (n - 1)
        below, t = int(np.floor(position)), float(position - np.floor(position))
        above = min(below + 1, n - 1)
        lo = _take_range(ordered, axis, below, below + 1)
        hi = _take_range(ordered, axis, above, above + 1)
        value = ops.select(has_nan, np.nan, ops.add(lo, ops.mul(ops.sub(hi, lo), t)))
        if not keepdims:
            value = ops.squeeze(value, (axis,))
        elif ops.aval_of(value).ndim != ndim:  # axis=None: every axis kept as 1
            value = reshape(value, (1,) * ndim)
        outs.append(value)
    if qs.ndim == 0:
        return outs[0]
    stacked = concatenate([ops.expand_dims(v, (0,)) for v in outs], 0)
    rest = tuple(bind_dim(d) for d in ops.aval_of(stacked).shape[1:])
    return reshape(stacked, qs.shape + rest) if qs.ndim > 1 else stacked


@implements(np.percentile)
def percentile(a, q, axis=None, out=None, overwrite_input=False, method="linear",
               keepdims=False, **unused):
    return quantile(a, np.asarray(q, dtype=np.float64) / 100.0, axis, out, overwrite_input,
                    method, keepdims, **unused)


@implements(np.median)
def median(a, axis=None, out=None, overwrite_input=False, keepdims=False):
    return quantile(a, 0.5, axis, out, keepdims=keepdims)



@implements(np.average)
def average(a, axis=None, weights=None, returned=False, keepdims=False):
    a = asarray(a)
    if weights is None:
        total = mean(a, axis, keepdims=keepdims)
        count = ops.div(sum_(ops.ones_like(a), axis, keepdims=keepdims), 1.0)
        return (total, count) if returned else total
    weights = asarray(weights)
    if weights.ndim != a.ndim:  # 1-D weights along `axis`
        shape = [1] * a.ndim
        shape[_axis(axis, a.ndim, "average")] = -1
        weights = reshape(weights, tuple(shape))
    norm = sum_(ops.mul(ops.ones_like(a), weights), axis, keepdims=keepdims)
    total = ops.div(sum_(ops.mul(a, weights), axis, keepdims=keepdims), norm)
    return (total, norm) if returned else total


@implements(np.ptp)
def ptp(a, axis=None, keepdims=False):
    return ops.sub(amax(a, axis, keepdims), amin(a, axis, keepdims))


@implements(np.cov)
def cov(m, y=None, rowvar=True, bias=False, ddof=None, fweights=None, aweights=None,
        **unused):
    if fweights is not None or aweights is not None or unused:
        raise UnsupportedError(with_location("np.cov with weights is not traced"))
    m = asarray(m)
    x = m if m.ndim == 2 else ops.expand_dims(m, (0,))
    if not rowvar:
        x = ops.swap_last(x)
    if y is not None:
        other = asarray(y)
        other = other if other.ndim == 2 else ops.expand_dims(other, (0,))
        x = concatenate([x, other if rowvar else ops.swap_last(other)], 0)
    x = ops.convert(x, np.result_type(x.dtype, np.float64))  # NumPy: at least float64
    n = bind_dim(ops.aval_of(x).shape[1])
    ddof = (0 if bias else 1) if ddof is None else ddof
    centred = ops.sub(x, mean(x, axis=1, keepdims=True))
    # conj: a complex covariance is Hermitian (NumPy's X @ X^H)
    out = ops.div(ops.matmul(centred, ops.conj(ops.swap_last(centred))), float(n - ddof))
    return ops.squeeze(out, (0, 1)) if bind_dim(ops.aval_of(out).shape[0]) == 1 else out


@implements(np.corrcoef)
def corrcoef(x, y=None, rowvar=True, **unused):
    c = cov(x, y, rowvar)
    if ops.aval_of(c).ndim == 0:
        return ops.div(c, c)
    d = ops.sqrt(ops.real(diagonal(c)))
    return ops.div(ops.div(c, ops.expand_dims(d, (1,))), ops.expand_dims(d, (0,)))
