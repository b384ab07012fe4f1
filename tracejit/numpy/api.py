"""NumPy's surface on tracers: operators, ufuncs, `np.*` functions, methods, indexing.

Users keep writing plain NumPy. Ufuncs reach `Tracer.__array_ufunc__`,
functions reach `Tracer.__array_function__`; both map onto the op layer.
Composites (mean, var, norm, clip, ...) are written here from primitives, so
their gradients come for free.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..core.errors import ConcretizationError, TracerTypeError, UnsupportedError, with_location
from ..core.shapes import bind as bind_dim
from ..core.shapes import bind_shape, normalize_axes, resolve
from ..trace import ops
from ..trace.tracer import CONTROL_FLOW_HINT, Tracer, known_value, operand

LN2 = float(np.log(2.0))
LN10 = float(np.log(10.0))

UFUNCS = {
    np.add: ops.add, np.subtract: ops.sub, np.multiply: ops.mul, np.divide: ops.div,
    np.true_divide: ops.div, np.power: ops.power, np.float_power: ops.power,
    np.maximum: ops.maximum, np.minimum: ops.minimum,
    np.fmax: lambda x, y: _ignoring_nan(ops.maximum, x, y),
    np.fmin: lambda x, y: _ignoring_nan(ops.minimum, x, y),
    np.negative: ops.neg, np.positive: lambda x: x, np.exp: ops.exp, np.log: ops.log,
    np.log1p: ops.log1p, np.expm1: ops.expm1, np.sqrt: ops.sqrt, np.absolute: ops.abs_,
    np.fabs: lambda x: _real_only("fabs", ops.abs_, x), np.sign: ops.sign,
    np.conjugate: ops.conj, np.sin: ops.sin, np.cos: ops.cos, np.tan: ops.tan,
    np.tanh: ops.tanh, np.arctan: ops.arctan, np.sinh: ops.sinh, np.cosh: ops.cosh,
    np.floor: ops.floor, np.ceil: ops.ceil, np.rint: ops.round_,
    np.less: ops.lt, np.less_equal: ops.le, np.greater: ops.gt, np.greater_equal: ops.ge,
    np.equal: ops.eq, np.not_equal: ops.ne, np.logical_and: ops.logical_and,
    np.logical_or: ops.logical_or, np.logical_not: ops.logical_not, np.matmul: ops.matmul,
    np.square: lambda x: ops.integer_pow(ops.promote(x)[0], 2),
    np.reciprocal: lambda x: ops.div(1.0, x),
    np.exp2: lambda x: _real_or(ops.exp2, lambda z: ops.exp(ops.mul(z, LN2)), x),
    np.log2: lambda x: _real_or(ops.log2, lambda z: ops.div(ops.log(z), LN2), x),
    np.log10: lambda x: _real_or(ops.log10, lambda z: ops.div(ops.log(z), LN10), x),
    np.logaddexp: lambda x, y: _logaddexp(x, y),
    np.logaddexp2: lambda x, y: _logaddexp2(x, y),
    np.bitwise_and: lambda x, y: _bool_only(ops.logical_and, x, y),
    np.bitwise_or: lambda x, y: _bool_only(ops.logical_or, x, y),
    np.invert: lambda x: _bool_only(ops.logical_not, x),
    np.remainder: ops.remainder, np.fmod: ops.fmod, np.floor_divide: ops.floor_divide,
    np.divmod: lambda x, y: (ops.floor_divide(x, y), ops.remainder(x, y)),
    np.trunc: lambda x: ops.trunc(x), np.isnan: lambda x: ops.ne(x, x),
    np.isinf: lambda x: ops.eq(ops.abs_(x), np.inf),
    np.isfinite: lambda x: ops.lt(ops.abs_(x), np.inf),
    np.arcsin: ops.arcsin, np.arccos: ops.arccos, np.arcsinh: ops.arcsinh,
    np.arccosh: ops.arccosh, np.arctanh: ops.arctanh,
    np.arctan2: lambda y, x: ops.arctan2(y, x), np.hypot: lambda x, y: _real_only(
        "hypot", lambda x, y: ops.norm_root(ops.add(ops.abs2(ops.promote(x, to_float=True)[0]),
                                               ops.abs2(ops.promote(y, to_float=True)[0]))),
        x, y),
    np.cbrt: lambda x: _real_only("cbrt", ops.cbrt, x),
    np.deg2rad: lambda x: ops.mul(x, np.pi / 180.0), np.radians: lambda x: ops.mul(
        x, np.pi / 180.0),
    np.rad2deg: lambda x: ops.mul(x, 180.0 / np.pi), np.degrees: lambda x: ops.mul(
        x, 180.0 / np.pi),
    np.copysign: lambda x, y: _copysign(x, y),
    np.heaviside: lambda x, h: ops.select(ops.lt(x, 0.0), 0.0, ops.select(
        ops.eq(x, 0.0), h, 1.0)),
    np.logical_xor: lambda x, y: ops.ne(ops.convert(x, bool), ops.convert(y, bool)),
    np.signbit: lambda x: _signbit(x),
}


def _real_or(real_fn, complex_fn, x):
    """The real primitive (one rounding), or its composition for complex operands."""
    (x,) = ops.promote(operand(x), to_float=True)
    return complex_fn(x) if ops.is_complex(ops.aval_of(x).dtype) else real_fn(x)


def _real_only(name, fn, *xs):
    """NumPy's ufuncs that have no complex loop raise for complex operands: so do these."""
    if any(ops.is_complex(ops.aval_of(operand(x)).dtype) for x in xs):
        raise TracerTypeError(with_location(f"np.{name} is not defined for complex operands"))
    return fn(*xs)


def _ignoring_nan(op, x, y):
    """np.fmax / np.fmin: a NaN operand loses to the other one (NaN only if both are)."""
    x, y = ops.promote(x, y)
    return ops.select(ops.ne(y, y), x, ops.select(ops.ne(x, x), y, op(x, y)))


def _signbit(x):
    """x < 0, and -0.0 (whose reciprocal is -inf)."""
    (x,) = ops.promote(x, to_float=True)
    return ops.logical_or(ops.lt(x, 0.0), ops.logical_and(ops.eq(x, 0.0),
                                                          ops.lt(ops.div(1.0, x), 0.0)))


def _copysign(x, y):
    x, y = ops.promote(x, y, to_float=True)
    size = ops.abs_(x)
    return ops.select(_signbit(y), ops.neg(size), size)


def _bool_only(op, *xs):
    if any(ops.aval_of(x).dtype != np.bool_ for x in xs):
        raise UnsupportedError(with_location("bitwise ops are traced for bool arrays only"))
    return op(*xs)


def _logaddexp(x, y):
    big = ops.maximum(x, y)
    safe = ops.stop_gradient(ops.select(big == -np.inf, ops.zeros_like(big), big))
    return ops.add(safe, ops.log(ops.add(ops.exp(ops.sub(x, safe)), ops.exp(ops.sub(y, safe)))))


def _logaddexp2(x, y):
    x, y = ops.promote(x, y, to_float=True)
    ln2 = float(np.log(2.0))  # a weak Python float: float32 stays float32
    return ops.div(_logaddexp(ops.mul(x, ln2), ops.mul(y, ln2)), ln2)


def array_ufunc(self, ufunc, method, *inputs, out=None, **kwargs):
    if method != "__call__" or out is not None or kwargs:
        detail = f"np.{ufunc.__name__}.{method}" if method != "__call__" else (
            f"np.{ufunc.__name__} with {', '.join(['out'] * (out is not None) + list(kwargs))}")
        raise UnsupportedError(with_location(f"{detail} is not supported while tracing"))
    fn = UFUNCS.get(ufunc)
    if fn is None:  # a SciPy ufunc whose module was imported after the trace opened
        for register in LATE_REGISTRARS:
            register()
        fn = UFUNCS.get(ufunc)
    if fn is None:
        raise UnsupportedError(with_location(f"np.{ufunc.__name__} is not supported by tracejit"))
    return fn(*inputs)


# ------------------------------------------------------------- reductions

def _reduction(name, fn, x, axis, keepdims, dtype=None):
    x = asarray(x, dtype)  # NumPy accumulates in `dtype`
    axes = normalize_axes(axis, x.ndim, name)
    out = fn(x, axes)
    return ops.expand_dims(out, axes) if keepdims else out


def sum_(x, axis=None, dtype=None, keepdims=False, **unused):
    _no_extras("sum", unused)
    x = asarray(x)
    if x.dtype == np.bool_ or (np.issubdtype(x.dtype, np.integer) and x.dtype.itemsize < 8):
        x = ops.convert(x, np.int64)
    return _reduction("sum", ops.reduce_sum, x, axis, keepdims, dtype)


def mean(x, axis=None, dtype=None, keepdims=False, **unused):
    _no_extras("mean", unused)
    x = asarray(x, dtype)  # NumPy accumulates in `dtype`
    if not ops.is_inexact(x.dtype):
        x = ops.convert(x, np.float64)
    axes = normalize_axes(axis, x.ndim, "mean")
    total = ops.reduce_sum(x, axes)
    out = ops.div(total, ops.dimsize(x, axes, ops.real_dtype(x.dtype)))
    return ops.expand_dims(out, axes) if keepdims else out


def var(x, axis=None, dtype=None, keepdims=False, ddof=0, **unused):
    _no_extras("var", unused)
    centred = ops.sub(x, mean(x, axis, keepdims=True))
    squares = ops.abs2(centred)  # |x - mean|^2: real for complex x, as NumPy
    if ddof == 0:
        return mean(squares, axis, dtype, keepdims)
    axes = normalize_axes(axis, squares.ndim, "var")
    count = ops.sub(ops.dimsize(squares, axes, squares.dtype), float(ddof))
    return ops.div(sum_(squares, axis, dtype, keepdims), count)


def std(x, axis=None, dtype=None, keepdims=False, ddof=0, **unused):
    return ops.norm_root(var(x, axis, dtype, keepdims, ddof, **unused))  # 0 at 0, as norms


def amax(x, axis=None, keepdims=False, **unused):
    _no_extras("max", unused)
    return _reduction("max", _extreme(ops.reduce_max, -np.inf), x, axis, keepdims)


def amin(x, axis=None, keepdims=False, **unused):
    _no_extras("min", unused)
    return _reduction("min", _extreme(ops.reduce_min, np.inf), x, axis, keepdims)


def _extreme(reduce, worst):
    """A max/min; of complex numbers, NumPy's lexicographic one (real part, then imaginary)."""
    def extreme(x, axes):
        if not ops.is_complex(ops.aval_of(x).dtype):
            return reduce(x, axes)
        re, im = ops.real(x), ops.imag(x)
        best_re = reduce(re, axes)
        on_best = ops.eq(re, ops.expand_dims(best_re, axes))
        return ops.make_complex(best_re, reduce(ops.select(on_best, im, worst), axes))

    return extreme


def prod(x, axis=None, dtype=None, keepdims=False, **unused):
    _no_extras("prod", unused)
    return _reduction("prod", ops.reduce_prod, x, axis, keepdims, dtype)


def _arg_reduction(name):
    def reduce(x, axis=None, keepdims=False, **unused):
        _no_extras(name, unused)
        x = asarray(x)
        axes = normalize_axes(axis, x.ndim, name)
        out = ops.bind(ops.R[name], x, axes=axes)
        return ops.expand_dims(out, axes) if keepdims and axis is not None else out

    return reduce


argmax, argmin = _arg_reduction("argmax"), _arg_reduction("argmin")


def any_(x, axis=None, keepdims=False, **unused):
    _no_extras("any", unused)
    count = sum_(ops.ne(asarray(x), False), axis, keepdims=keepdims)
    return ops.gt(count, 0)


def all_(x, axis=None, keepdims=False, **unused):
    _no_extras("all", unused)
    misses = sum_(ops.eq(asarray(x), False), axis, keepdims=keepdims)
    return ops.eq(misses, 0)


def _no_extras(name, unused):
    if unused:
        raise UnsupportedError(with_location(
            f"np.{name}: argument(s) {', '.join(unused)} are not supported while tracing"))


# Areas whose functions can appear after import (SciPy's modules, imported by the
# user later) add a function here that registers what is new.
LATE_REGISTRARS: list = []


# ---------------------------------------------------------- shape functions

# Lists of traced values become arrays through numpy/build.py, which registers
# itself here (a module with `holds_tracer(x)` and `build(x, dtype)`).
LIST_BUILDER: list = []


def asarray(x, dtype=None):
    if isinstance(x, (list, tuple)) and LIST_BUILDER and LIST_BUILDER[0].holds_tracer(x):
        return LIST_BUILDER[0].build(x, dtype)
    x = operand(x)
    if not isinstance(x, Tracer):
        x = np.asarray(x)
    return x if dtype is None else _astype(x, dtype)


def transpose(x, axes=None):
    x = asarray(x)
    perm = tuple(reversed(range(x.ndim))) if axes is None else tuple(a % x.ndim for a in axes)
    return ops.transpose(x, perm)


def swapaxes(x, axis1, axis2):
    perm = list(range(asarray(x).ndim))
    perm[axis1], perm[axis2] = perm[axis2], perm[axis1]
    return ops.transpose(x, perm)


def reshape(x, *shape, order="C", newshape=None, **unused):
    if order != "C":
        raise UnsupportedError(with_location("reshape: only order='C' is supported"))
    shape = newshape if newshape is not None else shape
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    return ops.reshape(asarray(x), tuple(int(s) for s in shape))


def ravel(x):
    return reshape(x, -1)


def expand_dims(x, axis):
    return ops.expand_dims(asarray(x), axis if isinstance(axis, tuple) else (axis,))


def squeeze(x, axis=None):
    x = asarray(x)
    if axis is None:
        axes = [k for k, d in enumerate(x.aval.shape) if isinstance(d, int) and d == 1]
    else:
        axes = normalize_axes(axis, x.ndim, "squeeze")
    return ops.squeeze(x, axes)


def broadcast_to(x, shape):
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    return ops.broadcast_to(asarray(x), shape)


def concatenate(arrays, axis=0, **unused):
    _no_extras("concatenate", unused)
    arrays = [asarray(a) for a in arrays]
    if axis is None:
        return ops.concatenate([ravel(a) for a in arrays], 0)
    return ops.concatenate(arrays, axis % arrays[0].ndim)


def stack(arrays, axis=0, **unused):
    _no_extras("stack", unused)
    arrays = [asarray(a) for a in arrays]
    axis = axis % (arrays[0].ndim + 1)
    return ops.concatenate([ops.expand_dims(a, (axis,)) for a in arrays], axis)


def where(cond, x=None, y=None):
    if x is None or y is None:
        raise UnsupportedError(with_location(
            "np.where(cond) with one argument has a data-dependent shape",
            hint="use the three-argument form np.where(cond, x, y)"))
    return ops.select(cond, x, y)


def clip(x, a_min=None, a_max=None, **kwargs):
    a_min, a_max = kwargs.pop("min", a_min), kwargs.pop("max", a_max)
    _no_extras("clip", kwargs)
    if a_min is not None:
        x = ops.maximum(x, a_min)
    if a_max is not None:
        x = ops.minimum(x, a_max)
    return x


def outer(a, b):
    return ops.outer(ravel(a), ravel(b))


def like(value):
    def make(x, dtype=None, shape=None, **unused):
        _no_extras("*_like", unused)
        if shape is not None:
            return np.full(shape, value, dtype=dtype or asarray(x).dtype)
        return ops.full_like(x, value, dtype)

    return make


def full_like(x, fill_value, dtype=None, **unused):
    _no_extras("full_like", unused)
    return ops.full_like(x, fill_value, dtype)


def result_type(*arrays_and_dtypes):
    """NumPy's promotion, tracers standing for arrays of their dtype."""
    return np.result_type(*[a.dtype if isinstance(a, Tracer) else a
                            for a in arrays_and_dtypes])


def real_if_close(a, tol=100):
    """A real array as it is; of a traced complex one the result's dtype would depend
    on its values (real only if every imaginary part is tiny), so it raises."""
    a = asarray(a)
    if not ops.is_complex(a.dtype):
        return a
    raise UnsupportedError(with_location(
        f"np.real_if_close of a traced complex array {a.aval}: whether the result is real "
        "depends on the values, so its type is unknown while tracing",
        hint="use np.real(a) where the imaginary parts are known to be negligible"))


def angle(z, deg=False):
    """np.angle: arctan2(imag, real) (pi for a negative real number)."""
    z = asarray(z)
    (z,) = ops.promote(z, to_float=True)
    out = ops.arctan2(ops.imag(z), ops.real(z))
    return ops.mul(out, 180.0 / np.pi) if deg else out


def _is_complex_array(x) -> bool:
    return ops.is_complex(asarray(x).dtype)


def round_(x, decimals=0, out=None):
    if decimals != 0 or out is not None:
        raise UnsupportedError(with_location("np.round: only decimals=0 is supported"))
    return ops.round_(x)


FUNCTIONS = {
    np.sum: sum_, np.mean: mean, np.var: var, np.std: std, np.max: amax, np.amax: amax,
    np.min: amin, np.amin: amin, np.prod: prod, np.argmax: argmax, np.argmin: argmin,
    np.transpose: transpose, np.swapaxes: swapaxes, np.reshape: reshape,
    np.ravel: ravel, np.expand_dims: expand_dims, np.squeeze: squeeze,
    np.broadcast_to: broadcast_to, np.concatenate: concatenate, np.stack: stack,
    np.where: where, np.clip: clip, np.outer: outer,
    np.zeros_like: like(0), np.ones_like: like(1), np.full_like: full_like,
    np.asarray: asarray, np.array: lambda x, dtype=None, **kw: asarray(x, dtype),
    np.shape: lambda x: x.shape, np.ndim: lambda x: asarray(x).ndim,
    np.size: lambda x: x.size, np.round: round_, np.around: round_, np.any: any_,
    np.all: all_, np.result_type: result_type,
    np.real: ops.real, np.imag: ops.imag, np.angle: angle, np.real_if_close: real_if_close,
    np.iscomplexobj: _is_complex_array, np.isrealobj: lambda x: not _is_complex_array(x),
    np.iscomplex: lambda x: ops.ne(ops.imag(asarray(x)), 0),
    np.isreal: lambda x: ops.eq(ops.imag(asarray(x)), 0),
}


def implements(*np_functions):
    """Register the decorated function as the traced form of `np_functions`."""
    def register(fn):
        for np_fn in np_functions:
            FUNCTIONS[np_fn] = fn
        return fn

    return register


def array_function(self, func, types, args, kwargs):
    fn = FUNCTIONS.get(func)
    if fn is None:
        name = getattr(func, "__module__", "numpy").replace("numpy", "np") + "." + func.__name__
        raise UnsupportedError(with_location(
            f"{name} is not supported by tracejit",
            hint="compose it from supported NumPy functions (see the README's op list)"))
    return fn(*args, **kwargs)


def _gather(x, indices, axis):
    indices = [i if isinstance(i, Tracer) or i.ndim else np.asarray(i, np.int64)
               for i in indices]
    return ops.gather(x, indices, axis)


# ------------------------------------------------- methods on the tracer

def _shape(self):
    """Reading the shape ties the kernel to these sizes (they join the cache key)."""
    return bind_shape(self.aval.shape)


def _size(self):
    return int(np.prod(bind_shape(self.aval.shape)))


def _len(self):
    if self.ndim == 0:
        raise TypeError("len() of unsized object")
    return bind_dim(self.aval.shape[0])


def _astype(self, dtype, copy=True):
    """As NumPy: complex to a real dtype keeps the real part, with a ComplexWarning."""
    if ops.is_complex(ops.aval_of(self).dtype) and not ops.is_complex(np.dtype(dtype)) and (
            np.dtype(dtype) != np.bool_):
        warnings.warn("Casting complex values to real discards the imaginary part",
                      np.exceptions.ComplexWarning, stacklevel=3)
    return ops.convert(self, dtype)


def _item(self, *args):
    """A size-1 traced array as a 0-d one (its value exists only when the kernel
    runs); a Python number when it is fixed at trace time."""
    if args or not all(type(resolve(d)) is int and resolve(d) == 1 for d in self.aval.shape):
        raise ConcretizationError(with_location(
            f"item() of a traced array {self.aval}", hint=CONTROL_FLOW_HINT))
    value = known_value(self)
    return value.item() if value is not None else ops.reshape(self, ())


def _swap(op):
    return lambda self, other: op(other, self)


METHODS = {
    "__array_ufunc__": array_ufunc, "__array_function__": array_function,
    "__add__": ops.add, "__radd__": _swap(ops.add), "__sub__": ops.sub,
    "__rsub__": _swap(ops.sub), "__mul__": ops.mul, "__rmul__": _swap(ops.mul),
    "__truediv__": ops.div, "__rtruediv__": _swap(ops.div), "__pow__": ops.power,
    "__rpow__": _swap(ops.power), "__matmul__": ops.matmul, "__rmatmul__": _swap(ops.matmul),
    "__neg__": ops.neg, "__pos__": lambda self: self, "__abs__": ops.abs_,
    "__lt__": ops.lt, "__le__": ops.le, "__gt__": ops.gt, "__ge__": ops.ge, "__eq__": ops.eq,
    "__ne__": ops.ne, "__and__": UFUNCS[np.bitwise_and], "__or__": UFUNCS[np.bitwise_or],
    "__invert__": UFUNCS[np.invert],
    "__len__": _len,
    "sum": sum_, "mean": mean, "var": var, "std": std, "max": amax, "min": amin,
    "prod": prod, "argmax": argmax, "argmin": argmin, "reshape": reshape,
    "transpose": lambda self, *axes: transpose(
        self, axes[0] if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else
        (axes or None)),
    "swapaxes": swapaxes, "squeeze": squeeze, "ravel": ravel, "flatten": ravel,
    "astype": _astype, "item": _item,
    "clip": clip, "round": round_,
    "copy": lambda self, *a, **k: self,
    "__mod__": ops.remainder, "__rmod__": _swap(ops.remainder),
    "__floordiv__": ops.floor_divide, "__rfloordiv__": _swap(ops.floor_divide),
    "__divmod__": UFUNCS[np.divmod], "__rdivmod__": _swap(UFUNCS[np.divmod]),
    "any": lambda self, *a, **k: any_(self, *a, **k),
    "all": lambda self, *a, **k: all_(self, *a, **k),
    "shape": property(_shape), "size": property(_size),
    "T": property(lambda self: transpose(self)),
    "real": property(ops.real), "imag": property(ops.imag),
    "conj": ops.conj, "conjugate": ops.conj,
}



def tracer_methods(**methods) -> None:
    """Install array methods on tracers; the areas of the surface call this for theirs."""
    METHODS.update(methods)
    for name, method in methods.items():
        setattr(Tracer, name, method)


tracer_methods(**METHODS)
