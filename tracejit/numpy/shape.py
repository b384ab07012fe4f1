"""NumPy's array-manipulation functions on tracers, composed from primitives.

Flips, rolls, diagonals, triangles, repeats, stacks and splits only move
elements, so they are slices, gathers, concatenations and selects with
constant masks: exact, and differentiable through those primitives' rules.
The running sum is its own primitive (`cumsum`); the running product is a
masked product, exact with zeros at O(n^2) work along its axis.
"""

from __future__ import annotations

import operator

import numpy as np

from ..core.errors import ShapeError, UnsupportedError, with_location
from ..core.shapes import bind as bind_dim
from ..core.shapes import normalize_axes
from ..primitives.array import cumsum as _cumsum
from ..trace import ops
from .api import _gather, asarray, concatenate, implements, ravel, reshape, sum_, tracer_methods


def _axis(axis, ndim, what):
    return normalize_axes(int(axis), ndim, what)[0]


def _reverse(x, axes):
    starts = [-1 if k in axes else 0 for k in range(x.ndim)]
    stops = [None] * x.ndim
    steps = [-1 if k in axes else 1 for k in range(x.ndim)]
    return ops.static_slice(x, starts, stops, steps)


@implements(np.flip)
def flip(m, axis=None):
    m = asarray(m)
    return _reverse(m, normalize_axes(axis, m.ndim, "flip"))


@implements(np.flipud)
def flipud(m):
    return flip(m, 0)


@implements(np.fliplr)
def fliplr(m):
    return flip(m, 1)


@implements(np.rot90)
def rot90(m, k=1, axes=(0, 1)):
    m = asarray(m)
    a, b = (ax % m.ndim for ax in axes)
    perm = list(range(m.ndim))
    perm[a], perm[b] = perm[b], perm[a]
    k = int(k) % 4
    if k == 0:
        return m
    if k == 2:
        return flip(flip(m, a), b)
    if k == 1:
        return ops.transpose(flip(m, b), perm)
    return flip(ops.transpose(m, perm), b)


@implements(np.roll)
def roll(a, shift, axis=None):
    a = asarray(a)
    if axis is None:
        return reshape(roll(ravel(a), shift, 0), tuple(bind_dim(d) for d in ops.aval_of(a).shape))
    shifts = (shift,) * len(axis) if isinstance(axis, tuple) and isinstance(shift, int) else (
        shift if isinstance(shift, tuple) else (shift,))
    axes = axis if isinstance(axis, tuple) else (axis,)
    for s, ax in zip(shifts, axes):
        ax = _axis(ax, a.ndim, "roll")
        n = bind_dim(ops.aval_of(a).shape[ax])
        s = operator.index(s) % n if n else 0
        if s:
            a = concatenate([_take_range(a, ax, n - s, n), _take_range(a, ax, 0, n - s)], ax)
    return a


def _take_range(x, axis, start, stop):
    starts = [start if k == axis else 0 for k in range(x.ndim)]
    stops = [stop if k == axis else None for k in range(x.ndim)]
    return ops.static_slice(x, starts, stops, [1] * x.ndim)


@implements(np.diagonal)
def diagonal(a, offset=0, axis1=0, axis2=1):
    a = asarray(a)
    axis1, axis2 = _axis(axis1, a.ndim, "diagonal"), _axis(axis2, a.ndim, "diagonal")
    rest = [k for k in range(a.ndim) if k not in (axis1, axis2)]
    moved = ops.transpose(a, rest + [axis1, axis2])
    rows, cols = bind_dim(ops.aval_of(a).shape[axis1]), bind_dim(ops.aval_of(a).shape[axis2])
    if min(rows, cols - offset) <= max(0, -offset):  # an offset past the matrix: NumPy's
        return sum_(_take_range(moved, moved.ndim - 2, 0, 0), axis=-1)  # (..., 0), derivative 0
    return ops.diagonal(moved, offset)


@implements(np.trace)
def trace(a, offset=0, axis1=0, axis2=1, dtype=None, out=None):
    if out is not None:
        raise UnsupportedError(with_location("np.trace(out=) is not supported while tracing"))
    return sum_(diagonal(a, offset, axis1, axis2), axis=-1, dtype=dtype)


@implements(np.diag)
def diag(v, k=0):
    v = asarray(v)
    if v.ndim == 2:
        return diagonal(v, k)
    if v.ndim != 1:
        raise ShapeError(with_location("np.diag: input must be 1-D or 2-D"))
    n = bind_dim(ops.aval_of(v).shape[0]) + abs(k)
    padded = concatenate([v, np.zeros(abs(k), v.dtype)]) if k else v
    spread = ops.expand_dims(padded, (1,) if k >= 0 else (0,))
    return ops.select(np.eye(n, k=k, dtype=bool), spread, ops.zeros_like(spread))


def _triangle(m, k, lower):
    m = asarray(m)
    rows, cols = (bind_dim(d) for d in ops.aval_of(m).shape[-2:])
    keep = np.tri(rows, cols, k, dtype=bool)
    keep = keep if lower else ~np.tri(rows, cols, k - 1, dtype=bool)
    return ops.select(keep, m, ops.zeros_like(m))


@implements(np.tril)
def tril(m, k=0):
    return _triangle(m, k, lower=True)


@implements(np.triu)
def triu(m, k=0):
    return _triangle(m, k, lower=False)


@implements(np.repeat)
def repeat(a, repeats, axis=None):
    a = asarray(a)
    if axis is None:
        a, axis = ravel(a), 0
    axis = _axis(axis, a.ndim, "repeat")
    n = bind_dim(ops.aval_of(a).shape[axis])
    return _gather(a, [np.repeat(np.arange(n), repeats)], axis)


@implements(np.tile)
def tile(A, reps):
    A = asarray(A)
    reps = (reps,) if isinstance(reps, int) else tuple(reps)
    if A.ndim < len(reps):
        A = ops.expand_dims(A, tuple(range(len(reps) - A.ndim)))
    reps = (1,) * (A.ndim - len(reps)) + reps
    for axis, r in enumerate(reps):
        if r != 1:
            n = bind_dim(ops.aval_of(A).shape[axis])
            A = _gather(A, [np.tile(np.arange(n), r)], axis)
    return A


# ------------------------------------------------------- running sums, diffs

def _accumulating(x, dtype):
    x = asarray(x, dtype)
    if x.dtype == np.bool_ or (np.issubdtype(x.dtype, np.integer) and x.dtype.itemsize < 8):
        x = ops.convert(x, np.int64)
    return x


@implements(np.cumsum)
def cumsum(a, axis=None, dtype=None, out=None):
    if out is not None:
        raise UnsupportedError(with_location("np.cumsum(out=) is not supported while tracing"))
    a = _accumulating(a, dtype)
    if axis is None:
        a, axis = ravel(a), 0
    return _cumsum(a, _axis(axis, a.ndim, "cumsum"))


@implements(np.cumprod)
def cumprod(a, axis=None, dtype=None, out=None):
    """out[i] = prod_j where(j <= i, x[j], 1): exact with zeros, to any order."""
    if out is not None:
        raise UnsupportedError(with_location("np.cumprod(out=) is not supported while tracing"))
    a = _accumulating(a, dtype)
    if axis is None:
        a, axis = ravel(a), 0
    axis = _axis(axis, a.ndim, "cumprod")
    n = bind_dim(ops.aval_of(a).shape[axis])
    lower = np.tri(n, dtype=bool).reshape((n, n) + (1,) * (a.ndim - axis - 1))
    spread = ops.expand_dims(a, (axis,))  # axis: i, axis + 1: j
    pairs = ops.select(lower, spread, ops.ones_like(spread))
    return ops.reduce_prod(pairs, (axis + 1,))


@implements(np.diff)
def diff(a, n=1, axis=-1, prepend=None, append=None):
    a = asarray(a)
    axis = _axis(axis, a.ndim, "diff")
    if prepend is not None or append is not None:
        parts = [p for p in (prepend, a, append) if p is not None]
        a = concatenate([_broadcast_edge(asarray(p), a, axis) for p in parts], axis)
    for _ in range(n):
        size = bind_dim(ops.aval_of(a).shape[axis])
        a = ops.sub(_take_range(a, axis, 1, size), _take_range(a, axis, 0, size - 1))
    return a


def _broadcast_edge(p, a, axis):
    if p.ndim == a.ndim:
        return p
    shape = list(ops.aval_of(a).shape)
    shape[axis] = 1
    return ops.broadcast_to(p, tuple(shape))


@implements(np.gradient)
def gradient(f, *varargs, axis=None, edge_order=1):
    """Central differences inside, one-sided at the edges (uniform spacing)."""
    f = asarray(f)
    axes = normalize_axes(axis, f.ndim, "gradient")
    spacing = varargs if len(varargs) == len(axes) else varargs * len(axes) if varargs else (
        1.0,) * len(axes)
    if any(np.ndim(h) for h in spacing):
        raise UnsupportedError(with_location(
            "np.gradient: only scalar (uniform) spacings are traced"))
    outs = [_gradient_along(f, ax, float(h), edge_order) for ax, h in zip(axes, spacing)]
    return outs[0] if len(outs) == 1 else outs


def _gradient_along(f, axis, h, edge_order):
    n = bind_dim(ops.aval_of(f).shape[axis])
    if n < edge_order + 1:
        raise ShapeError(with_location("np.gradient: too few points for the edge order"))
    f = f if ops.is_inexact(f.dtype) else ops.convert(f, np.float64)

    def at(start, stop=None):
        return _take_range(f, axis, start, start + 1 if stop is None else stop)

    inner = ops.div(ops.sub(at(2, n), at(0, n - 2)), 2.0 * h)
    if edge_order == 1:
        first = ops.div(ops.sub(at(1), at(0)), h)
        last = ops.div(ops.sub(at(n - 1), at(n - 2)), h)
    else:
        first = ops.div(ops.add(ops.add(ops.mul(at(0), -1.5), ops.mul(at(1), 2.0)),
                                ops.mul(at(2), -0.5)), h)
        last = ops.div(ops.add(ops.add(ops.mul(at(n - 3), 0.5), ops.mul(at(n - 2), -2.0)),
                               ops.mul(at(n - 1), 1.5)), h)
    return concatenate([first, inner, last], axis)


# ------------------------------------------------------------ constructors

@implements(np.linspace)
def linspace(start, stop, num=50, endpoint=True, retstep=False, dtype=None, axis=0):
    if np.ndim(start) or np.ndim(stop) or axis != 0:
        raise UnsupportedError(with_location("np.linspace: traced only for scalar start/stop"))
    num = operator.index(num)
    div = (num - 1) if endpoint else num
    start, stop = ops.promote(start, stop, to_float=True)
    delta = ops.sub(stop, start)
    ramp = np.arange(num, dtype=ops.aval_of(delta).dtype)
    if div > 0:
        step = ops.div(delta, float(div))
        y = ops.add(ops.mul(ramp, step), start)
    else:  # num 0 or 1: NumPy's values are [] or [start], its step NaN (no division by 0:
        # the derivatives stay finite)
        step = ops.add(ops.mul(delta, 0.0), np.nan)
        y = ops.add(ops.mul(ramp, 0.0), start)
    if endpoint and num > 1:
        last = np.arange(num) == num - 1
        y = ops.select(last, stop, y)
    if dtype is not None:
        y = ops.convert(y, dtype)
    return (y, step) if retstep else y


@implements(np.nan_to_num)
def nan_to_num(x, copy=True, nan=0.0, posinf=None, neginf=None):
    x = asarray(x)
    if ops.is_complex(x.dtype):  # each part on its own, as NumPy
        parts = (nan_to_num(part, copy, nan, posinf, neginf) for part in (ops.real(x), ops.imag(x)))
        return ops.make_complex(*parts)
    if not np.issubdtype(x.dtype, np.floating):
        return x
    big = np.finfo(x.dtype).max
    x = ops.select(ops.ne(x, x), nan, x)
    x = ops.select(ops.eq(x, np.inf), big if posinf is None else posinf, x)
    return ops.select(ops.eq(x, -np.inf), -big if neginf is None else neginf, x)


# ------------------------------------------------------------ stacks, splits

def _atleast(ndim, arys):
    outs = []
    for a in arys:
        a = asarray(a)
        if a.ndim == 0:
            a = ops.expand_dims(a, tuple(range(ndim)))
        elif a.ndim == 1 and ndim >= 2:
            a = ops.expand_dims(a, (0, 2) if ndim == 3 else (0,))
        elif a.ndim == 2 and ndim == 3:
            a = ops.expand_dims(a, (2,))
        outs.append(a)
    return outs[0] if len(outs) == 1 else outs


@implements(np.atleast_1d)
def atleast_1d(*arys):
    return _atleast(1, arys)


@implements(np.atleast_2d)
def atleast_2d(*arys):
    return _atleast(2, arys)


@implements(np.atleast_3d)
def atleast_3d(*arys):
    return _atleast(3, arys)


def _listed(arrays, n):
    out = _atleast(n, list(arrays))
    return out if isinstance(out, list) else [out]


@implements(np.vstack)
def vstack(tup, **unused):
    return concatenate(_listed(tup, 2), 0)


@implements(np.hstack)
def hstack(tup, **unused):
    arrays = _listed(tup, 1)
    return concatenate(arrays, 0 if arrays[0].ndim == 1 else 1)


@implements(np.dstack)
def dstack(tup):
    return concatenate(_listed(tup, 3), 2)


@implements(np.column_stack)
def column_stack(tup):
    arrays = [asarray(a) for a in tup]
    columns = [ops.reshape(a, (1, 1)) if a.ndim == 0 else ops.expand_dims(a, (1,))
               if a.ndim == 1 else a for a in arrays]
    return concatenate(columns, 1)


@implements(np.array_split)
def array_split(ary, indices_or_sections, axis=0):
    ary = asarray(ary)
    axis = _axis(axis, ary.ndim, "array_split")
    n = bind_dim(ops.aval_of(ary).shape[axis])
    if isinstance(indices_or_sections, (int, np.integer)):
        sections = int(indices_or_sections)
        each, extra = divmod(n, sections)
        sizes = [each + 1] * extra + [each] * (sections - extra)
        bounds = np.concatenate([[0], np.cumsum(sizes)]).tolist()
    else:
        bounds = [0] + [min(max(int(i) % n if int(i) < 0 else int(i), 0), n)
                        for i in indices_or_sections] + [n]
    return [_take_range(ary, axis, a, max(a, b)) for a, b in zip(bounds[:-1], bounds[1:])]


@implements(np.split)
def split(ary, indices_or_sections, axis=0):
    ary = asarray(ary)
    n = bind_dim(ops.aval_of(ary).shape[_axis(axis, ary.ndim, "split")])
    if isinstance(indices_or_sections, (int, np.integer)) and n % int(indices_or_sections):
        raise ShapeError(with_location("np.split: array split does not result in an equal "
                                       "division (use np.array_split)"))
    return array_split(ary, indices_or_sections, axis)


@implements(np.moveaxis)
def moveaxis(a, source, destination):
    a = asarray(a)
    source = normalize_axes(source, a.ndim, "moveaxis") if isinstance(source, int) else [
        s % a.ndim for s in source]
    destination = [destination % a.ndim] if isinstance(destination, int) else [
        d % a.ndim for d in destination]
    source = list(source) if not isinstance(source, tuple) else list(source)
    order = [k for k in range(a.ndim) if k not in source]
    for dest, src in sorted(zip(destination, source)):
        order.insert(dest, src)
    return ops.transpose(a, order)


@implements(np.append)
def append(arr, values, axis=None):
    if axis is None:
        return concatenate([ravel(asarray(arr)), ravel(asarray(values))], 0)
    return concatenate([arr, values], axis)


# ------------------------------------------------------------ small composites

@implements(np.kron)
def kron(a, b):
    """Operands of any ranks (the lower one gets leading unit axes, as in NumPy):
    every product a[i] * b[j] at index i * b.shape + j."""
    a, b = asarray(a), asarray(b)
    nd = max(a.ndim, b.ndim)
    a = reshape(a, (1,) * (nd - a.ndim) + _sizes(a))
    b = reshape(b, (1,) * (nd - b.ndim) + _sizes(b))
    if nd == 0:
        return ops.mul(a, b)
    pairs = ops.mul(ops.expand_dims(a, tuple(range(1, 2 * nd, 2))),
                    ops.expand_dims(b, tuple(range(0, 2 * nd, 2))))  # (a0, b0, a1, b1, ...)
    return reshape(pairs, tuple(m * n for m, n in zip(_sizes(a), _sizes(b))))


def _sizes(x):
    return tuple(bind_dim(d) for d in ops.aval_of(x).shape)


@implements(np.cross)
def cross(a, b, axisa=-1, axisb=-1, axisc=-1, axis=None):
    """NumPy's cross product of 2- or 3-vectors along axisa / axisb (result along axisc)."""
    if axis is not None:
        axisa = axisb = axisc = axis
    a, b = ops.promote(asarray(a), asarray(b))
    a = moveaxis(a, _axis(axisa, a.ndim, "cross"), -1)
    b = moveaxis(b, _axis(axisb, b.ndim, "cross"), -1)
    na, nb = bind_dim(ops.aval_of(a).shape[-1]), bind_dim(ops.aval_of(b).shape[-1])
    if na not in (2, 3) or nb not in (2, 3):
        raise ValueError(with_location(
            f"np.cross: incompatible dimensions for cross product ({na} and {nb}; "
            "dimension must be 2 or 3)"))
    a0, a1, a2 = _components(a)
    b0, b1, b2 = _components(b)
    z = ops.sub(ops.mul(a0, b1), ops.mul(a1, b0))
    if na == nb == 2:
        return z
    x = ops.sub(ops.mul(a1, b2), ops.mul(a2, b1))
    y = ops.sub(ops.mul(a2, b0), ops.mul(a0, b2))
    out = concatenate([ops.expand_dims(c, (ops.aval_of(c).ndim,))
                       for c in _broadcast_all([x, y, z])], -1)
    return moveaxis(out, -1, _axis(axisc, out.ndim, "cross"))


def _components(x):
    """A vector's components along the last axis (a 2-vector's third is 0)."""
    last = ops.aval_of(x).ndim - 1
    n = bind_dim(ops.aval_of(x).shape[-1])
    parts = [ops.squeeze(_take_range(x, last, k, k + 1), (last,)) for k in range(n)]
    return parts if n == 3 else parts + [ops.zeros_like(parts[0])]


def _broadcast_all(xs):
    shapes = [_sizes(x) for x in xs]
    shape = np.broadcast_shapes(*shapes)
    return [ops.broadcast_to(x, shape) for x in xs]


def trapezoid(y, x=None, dx=1.0, axis=-1):
    y = asarray(y)
    axis = _axis(axis, y.ndim, "trapezoid")
    n = bind_dim(ops.aval_of(y).shape[axis])
    pairs = ops.add(_take_range(y, axis, 1, n), _take_range(y, axis, 0, n - 1))
    widths = dx if x is None else diff(x, axis=-1 if asarray(x).ndim == 1 else axis)
    if x is not None and asarray(x).ndim == 1 and y.ndim > 1:
        shape = [1] * y.ndim
        shape[axis] = n - 1
        widths = reshape(widths, tuple(shape))
    return sum_(ops.mul(ops.mul(pairs, widths), 0.5), axis)


for _trapezoid_name in ("trapezoid", "trapz"):
    if hasattr(np, _trapezoid_name):
        implements(getattr(np, _trapezoid_name))(trapezoid)


@implements(np.polyval)
def polyval(p, x):
    """Horner's rule, as NumPy evaluates it."""
    p = asarray(p)
    n = bind_dim(ops.aval_of(p).shape[0])
    y = 0.0
    for k in range(n):
        coeff = ops.squeeze(_take_range(p, 0, k, k + 1), (0,))
        y = ops.add(ops.mul(y, x), coeff)
    return y


@implements(np.sinc)
def sinc(x):
    (x,) = ops.promote(asarray(x), to_float=True)
    arg = ops.mul(x, np.pi)
    safe = ops.select(ops.eq(x, 0.0), ops.ones_like(arg), arg)
    return ops.select(ops.eq(x, 0.0), 1.0, ops.div(ops.sin(safe), safe))


tracer_methods(cumsum=cumsum, cumprod=cumprod, diagonal=diagonal, trace=trace, repeat=repeat)


# ------------------------------------------------- issue 17's array functions

@implements(np.rollaxis)
def rollaxis(a, axis, start=0):
    """NumPy's rollaxis: `axis` moved to just before `start` (counted before the move)."""
    a = asarray(a)
    n = a.ndim
    axis = _axis(axis, n, "rollaxis")
    start = start + n if start < 0 else start
    if not 0 <= start <= n:
        raise np.exceptions.AxisError(with_location(
            f"np.rollaxis: start {start} is out of bounds for an array of {n} dims"))
    start = start - 1 if axis < start else start
    order = [k for k in range(n) if k != axis]
    order.insert(start, axis)
    return ops.transpose(a, order)


def _split_along(axis, min_ndim, name):
    def split_fn(ary, indices_or_sections):
        ary = asarray(ary)
        if ary.ndim < min_ndim:
            raise ValueError(with_location(
                f"np.{name} only works on arrays of {min_ndim} or more dimensions"))
        along = axis if ary.ndim > 1 or name != "hsplit" else 0
        return split(ary, indices_or_sections, along)

    return split_fn


vsplit = implements(np.vsplit)(_split_along(0, 2, "vsplit"))
hsplit = implements(np.hsplit)(_split_along(1, 1, "hsplit"))
dsplit = implements(np.dsplit)(_split_along(2, 3, "dsplit"))


@implements(np.select)
def select(condlist, choicelist, default=0):
    """The first choice whose condition holds, else `default` (nested selects)."""
    if len(condlist) != len(choicelist):
        raise ValueError(with_location("np.select: list of cases must be same length as list "
                                       "of conditions"))
    choices = ops.promote(*[asarray(c) for c in choicelist], default)
    out = choices[-1]
    for cond, choice in zip(reversed(condlist), reversed(choices[:-1])):
        cond = asarray(cond)
        if cond.dtype != np.bool_:
            raise TypeError(with_location(f"np.select: condlist entries must be boolean, "
                                          f"got {cond.dtype}"))
        out = ops.select(cond, choice, out)
    return out


_INDEX_MODES = ("edge", "reflect", "symmetric", "wrap")


@implements(np.pad)
def pad(array, pad_width, mode="constant", **kwargs):
    """np.pad in the modes that only move elements or add constants: constant (a
    traced constant too), edge, reflect, symmetric, wrap. The index modes gather
    along each axis the indices NumPy's own pad gives `arange(n)`."""
    x = asarray(array)
    widths = np.broadcast_to(np.asarray(pad_width, dtype=np.int64), (x.ndim, 2))
    if np.any(widths < 0):
        raise ValueError(with_location("np.pad: index can't contain negative values"))
    if mode == "constant":
        values = kwargs.pop("constant_values", 0)
        _no_pad_options(kwargs, mode)
        return _pad_constant(x, widths, values)
    if mode not in _INDEX_MODES:
        raise UnsupportedError(with_location(
            f"np.pad(mode={mode!r}) is not traced",
            hint=f"modes traced: constant, {', '.join(_INDEX_MODES)}"))
    if kwargs.get("reflect_type", "even") != "even":
        raise UnsupportedError(with_location("np.pad(reflect_type='odd') is not traced"))
    kwargs.pop("reflect_type", None)
    _no_pad_options(kwargs, mode)
    for axis, (before, after) in enumerate(widths.tolist()):
        if before or after:
            n = bind_dim(ops.aval_of(x).shape[axis])
            index = np.pad(np.arange(n), (before, after), mode=mode)
            x = _gather(x, [index], axis)
    return x


def _no_pad_options(kwargs, mode):
    if kwargs:
        raise ValueError(with_location(
            f"np.pad: unsupported keyword arguments for mode {mode!r}: {sorted(kwargs)}"))


def _pad_constant(x, widths, values):
    pairs = values if isinstance(values, (list, tuple)) else None
    for axis, (before, after) in enumerate(widths.tolist()):
        if not (before or after):
            continue
        low, high = (values, values) if pairs is None else _pair_for(pairs, axis)
        shape = list(_sizes(x))
        parts = []
        for width, value in ((before, low), (after, high)):
            shape[axis] = width
            parts.append(ops.add(np.zeros(shape, x.dtype), ops.convert(asarray(value), x.dtype))
                         if width else None)
        x = concatenate([p for p in (parts[0], x, parts[1]) if p is not None], axis)
    return x


def _pair_for(values, axis):
    """constant_values as NumPy reads them: c, (c,), (before, after) or one pair per axis."""
    if len(values) == 1:
        values = values[0]
    if not isinstance(values, (list, tuple)):
        return values, values
    if isinstance(values[0], (list, tuple)):
        pair = values[axis] if len(values) > 1 else values[0]
        return (pair[0], pair[-1])
    return values[0], values[1]
