"""The functional op layer: NumPy's type promotion on top of the primitives.

Rules in primitives.py and the NumPy surface in numpy_api.py both build IR
through these functions. Promotion happens here, once, as explicit `convert`
equations, so every elementwise equation sees operands of one dtype. Python
scalars are weak (NumPy 2 / JAX semantics): `x32 * 2.0` stays float32.
"""

from __future__ import annotations

import numpy as np

from ..core.dtypes import WEAK_STAND_INS, complex_dtype, is_complex, is_inexact, real_dtype  # noqa: F401
from ..core.errors import UnsupportedError, dtype_problem, operand_type_error, with_location
from ..core.ir import AVal
from ..core.shapes import Sym, is_one, normalize_axes, resolve
from ..core.shapes import bind as bind_dim
from .registry import REGISTRY as R
from .tracer import PYTHON_SCALARS, Tracer, bind, operand, weak_aval


def aval_of(value):
    if isinstance(value, Tracer):
        return value.aval
    if isinstance(value, PYTHON_SCALARS) and not isinstance(value, np.generic):
        return weak_aval(value)
    if type(value) is np.ndarray:
        return AVal(value.shape, value.dtype)
    arr = np.asarray(value)
    if arr.dtype.kind in "OUSV" and not isinstance(value, np.ndarray):
        raise operand_type_error(value)  # None, a string...: NumPy's TypeError
    return AVal(arr.shape, arr.dtype)


def result_dtype(*values) -> np.dtype:
    """NumPy 2 promotion, with weak Python scalars and weak scalar arguments."""
    return _result_dtype([aval_of(v) for v in values])


def _result_dtype(avals: list) -> np.dtype:
    strong = [a for a in avals if not a.weak]
    weak = [a for a in avals if a.weak]
    stand_ins = [WEAK_STAND_INS[w.dtype.kind] for w in weak]
    if not strong:
        return np.result_type(*[w.dtype for w in weak])
    return np.result_type(*[s.dtype for s in strong], *stand_ins)


def convert(x, dtype):
    """`x.astype(dtype)`; from complex to bool it is `x != 0`, to other real dtypes
    the real part (as NumPy, which warns)."""
    dtype = np.dtype(dtype)
    problem = dtype_problem(dtype)
    if problem:
        raise UnsupportedError(with_location(f"astype / conversion to {dtype}: {problem}"))
    if is_complex(aval_of(x).dtype) and not is_complex(dtype):
        if dtype == np.bool_:
            return ne(x, 0)
        x = real(x)
    if isinstance(x, Tracer):
        if x.dtype == dtype and not x.aval.weak:
            return x
        return bind(R["convert"], x, dtype=dtype)
    return np.asarray(x, dtype=dtype)[()] if np.ndim(x) == 0 else np.asarray(x, dtype=dtype)


def promote(*values, to_float=False):
    """The operands converted to their common dtype (NumPy 2's promotion, Python
    scalars weak). One pass, the promoted dtype cached per operand types: every
    traced or eagerly recorded binary operation comes through here."""
    operands, key = [], [to_float]
    for value in values:
        value = operand(value)
        if isinstance(value, Tracer):
            aval = value.ir_var.aval
        else:
            aval = _WEAK_AVALS.get(type(value)) or aval_of(value)
        operands.append((value, aval))
        key += (aval.dtype, aval.weak)
    key = tuple(key)
    dtype = _PROMOTED.get(key)
    if dtype is None:
        dtype = _PROMOTED[key] = _promoted([aval for _, aval in operands], to_float)
    return [_promoted_operand(v, aval, dtype) for v, aval in operands]


_WEAK_AVALS = {kind: weak_aval(kind()) for kind in PYTHON_SCALARS}
_PLAIN_DTYPES = frozenset(map(np.dtype, ("float32", "float64", "int32", "int64", "bool")))
_PROMOTED: dict = {}  # (to_float, (dtype, weak) per operand...) -> the promoted dtype


def _promoted_operand(value, aval, dtype):
    """`convert(value, dtype)`, cheaply in the common cases: a strong tracer of
    the dtype is its own conversion, a real Python scalar a NumPy scalar."""
    if isinstance(value, Tracer):
        if aval.dtype == dtype and not aval.weak:
            return value
    elif type(value) in (float, int, bool) and dtype in _PLAIN_DTYPES:
        return dtype.type(value)
    return convert(value, dtype)


def _promoted(avals: list, to_float: bool) -> np.dtype:
    dtype = _result_dtype(avals)
    if to_float and not is_inexact(dtype):
        dtype = np.dtype(np.float64)
    return dtype


def _binary(name, to_float=False):
    def op(x, y):
        return bind(R[name], *promote(x, y, to_float=to_float))

    op.__name__ = name
    return op


add, sub, mul, maximum, minimum = (_binary(n) for n in
                                   ("add", "sub", "mul", "maximum", "minimum"))
div = _binary("div", to_float=True)
lt, le, gt, ge, eq, ne = (_binary(n) for n in ("lt", "le", "gt", "ge", "eq", "ne"))
remainder, fmod, floor_divide = (_binary(n) for n in ("remainder", "fmod", "floor_divide"))
arctan2 = _binary("arctan2", to_float=True)
logical_and, logical_or = _binary("logical_and"), _binary("logical_or")


def _unary(name, to_float=True):
    def op(x):
        (x,) = promote(x, to_float=to_float)
        return bind(R[name], x)

    op.__name__ = name
    return op


(exp, log, log1p, expm1, sqrt, sin, cos, tan, tanh, arctan, sinh, cosh, arcsin, arccos,
 arcsinh, arccosh, arctanh) = (
    _unary(n) for n in ("exp", "log", "log1p", "expm1", "sqrt", "sin", "cos", "tan", "tanh",
                        "arctan", "sinh", "cosh", "arcsin", "arccos", "arcsinh", "arccosh",
                        "arctanh"))
neg, abs_ = _unary("neg", False), _unary("abs", False)
exp2, log2, log10, cbrt = (_unary(n) for n in ("exp2", "log2", "log10", "cbrt"))  # real only


def sign(x):
    """np.sign; of a complex number z / |z| (0 at 0), as NumPy 2."""
    (x,) = promote(x)
    if not is_complex(aval_of(x).dtype):
        return bind(R["sign"], x)
    size = abs_(x)
    return select(eq(size, 0.0), zeros_like(x), div(x, size))


# ------------------------------------------------------------------ complex

def real(x):
    """np.real: the real part; a real array is its own."""
    x = operand(x)
    if not is_complex(aval_of(x).dtype):
        return x
    return bind(R["real"], x)


def imag(x):
    """np.imag: the imaginary part; of a real array, zeros."""
    x = operand(x)
    if not is_complex(aval_of(x).dtype):
        return zeros_like(x)
    return bind(R["imag"], x)


def conj(x):
    x = operand(x)
    if not is_complex(aval_of(x).dtype):
        return x
    return bind(R["conj"], x)


def make_complex(re, im):
    """re + im * 1j, exactly (no 0 * inf from the multiplication)."""
    re, im = promote(re, im, to_float=True)
    return bind(R["complex"], re, im, dtype=complex_dtype(aval_of(re).dtype))


def abs2(x):
    """|x|^2, real: re^2 + im^2 for complex x (no square root)."""
    if not is_complex(aval_of(x).dtype):
        return integer_pow(promote(x)[0], 2)
    return add(integer_pow(real(x), 2), integer_pow(imag(x), 2))
floor, ceil, round_ = _unary("floor"), _unary("ceil"), _unary("round")


def trunc(x):
    (x,) = promote(x, to_float=True)
    return select(lt(x, 0.0), ceil(x), floor(x))


def logical_not(x):
    return bind(R["logical_not"], convert(x, bool))


def power(x, y):
    """`x ** y`; a small integral constant exponent becomes integer_pow (exact,
    and differentiable at x <= 0), and `x ** 0.5` is `sqrt(x)`, as NumPy's
    operator computes it (so its derivative at 0 is sqrt's). Integers to a negative or
    traced integer power raise, as NumPy raises or keeps integers where a float would
    differ."""
    if np.issubdtype(result_dtype(x, y), np.integer):
        if not (isinstance(y, (int, np.integer)) and 0 <= y <= 64):
            raise UnsupportedError(with_location(
                "integer ** integer is traced for constant exponents 0..64 only (NumPy "
                "raises for negative ones)", hint="convert the base to float first"))
    if isinstance(y, (int, float, np.integer, np.floating)) and not isinstance(y, bool):
        if y == 0.5:
            return sqrt(x)
        if float(y).is_integer() and abs(y) <= 64:
            (x,) = promote(x, to_float=isinstance(y, float) or y < 0)
            if y < 0:
                return div(1.0, integer_pow(x, -int(y)))
            return integer_pow(x, int(y))
    return bind(R["pow"], *promote(x, y, to_float=True))


def norm_root(x, p: float = 2.0):
    """x ** (1/p) for a norm's sum of p-th powers (x >= 0), with the subgradient 0 at
    x == 0 (PyTorch's convention for norms; the root's own slope there is infinite,
    and infinity times the zero slope of the powers would make NaN)."""
    is_zero = eq(x, 0.0)
    safe = select(is_zero, ones_like(x), x)
    root = sqrt(safe) if p == 2.0 else power(safe, 1.0 / p)
    return select(is_zero, zeros_like(root), root)


def integer_pow(x, n: int):
    if n == 1:
        return x
    return bind(R["integer_pow"], x, y=int(n))


def select(cond, x, y):
    x, y = promote(x, y)
    return bind(R["select"], convert(cond, bool), x, y)


def full_like(x, value, dtype=None):
    dtype = np.dtype(dtype or aval_of(x).dtype)
    fill = np.asarray(value, dtype=dtype)[()]
    if not isinstance(x, Tracer):
        return np.full(np.shape(x), fill)
    return broadcast_in_dim(fill, x.aval.shape, (), traced=True)


def zeros_like(x, dtype=None):
    return full_like(x, 0, dtype)


def ones_like(x, dtype=None):
    return full_like(x, 1, dtype)


def broadcast_in_dim(x, shape, bdims, traced=False):
    shape, bdims = tuple(shape), tuple(bdims)
    xs = aval_of(x).shape
    if bdims == tuple(range(len(shape))) and tuple(map(resolve, xs)) == tuple(map(resolve, shape)):
        return x
    return bind(R["broadcast_in_dim"], x, _traced=traced, shape=shape, bdims=bdims)


def broadcast_to(x, shape):
    shape = tuple(shape)
    rank = len(aval_of(x).shape)
    return broadcast_in_dim(x, shape, tuple(range(len(shape) - rank, len(shape))))


def _reduce(name, x, axes):
    axes = tuple(axes)
    if not axes:
        return x
    return bind(R[name], x, axes=axes)


def reduce_sum(x, axes):
    return _reduce("reduce_sum", x, axes)


def reduce_max(x, axes):
    return _reduce("reduce_max", x, axes)


def reduce_min(x, axes):
    return _reduce("reduce_min", x, axes)


def reduce_prod(x, axes):
    return _reduce("reduce_prod", x, axes)


def squeeze(x, axes):
    axes = tuple(sorted(axes))
    return bind(R["squeeze"], x, axes=axes) if axes else x


def expand_dims(x, axes):
    """Insert unit axes at the given (output) positions."""
    shape = list(aval_of(x).shape)
    rank = len(shape) + len(axes)
    axes = normalize_axes(axes, rank, "expand_dims")
    it = iter(range(len(shape)))
    out_shape, bdims = [], []
    for k in range(rank):
        if k in axes:
            out_shape.append(1)
        else:
            src = next(it)
            out_shape.append(shape[src])
            bdims.append(k)
    return broadcast_in_dim(x, tuple(out_shape), tuple(bdims))


def transpose(x, perm):
    perm = tuple(int(p) for p in perm)
    return x if perm == tuple(range(len(perm))) else bind(R["transpose"], x, perm=perm)


def swap_last(x):
    n = aval_of(x).ndim
    return transpose(x, tuple(range(n - 2)) + (n - 1, n - 2))


def reshape(x, shape):
    """Reshape; only unit axes moving keeps symbolic sizes, anything else binds them."""
    in_shape = aval_of(x).shape
    unit_only = _unit_only_reshape(in_shape, tuple(shape))
    if unit_only is not None:
        out_shape, targets = unit_only
        squeezed = squeeze(x, [k for k, d in enumerate(in_shape) if is_one(d)])
        return broadcast_in_dim(squeezed, out_shape, targets)
    kept = _kept_leading(in_shape, tuple(shape))
    if kept is not None:  # (batch, h, w, c) -> (batch, h * w * c): the batch stays symbolic
        return bind(R["reshape"], x, shape=kept)
    size = int(np.prod([bind_dim(d) for d in in_shape]))
    shape = [bind_dim(d) if isinstance(d, Sym) else int(d) for d in shape]
    if -1 in shape:
        known = int(np.prod([d for d in shape if d != -1]))
        shape[shape.index(-1)] = size // known if known else 0
    return bind(R["reshape"], x, shape=tuple(shape))


def _kept_leading(in_shape, shape):
    """The output shape of a reshape that keeps its leading axes (the same
    symbols) and regroups the trailing ones, binding only the trailing sizes."""
    k = 0
    while (k < min(len(in_shape), len(shape)) and isinstance(shape[k], Sym)
           and resolve(shape[k]) is resolve(in_shape[k])):
        k += 1
    rest = list(shape[k:])
    if k == 0 or rest.count(-1) > 1 or not all(isinstance(d, (int, np.integer)) for d in rest):
        return None
    size = int(np.prod([bind_dim(d) for d in in_shape[k:]]))  # the regrouped sizes are fixed
    if -1 in rest:
        known = int(np.prod([d for d in rest if d != -1]))
        rest[rest.index(-1)] = size // known if known else 0
    if int(np.prod(rest)) != size:
        return None
    return (*in_shape[:k], *map(int, rest))


def _unit_only_reshape(in_shape, new_shape):
    """If `new_shape` only adds or removes unit axes of `in_shape` (the other
    sizes given as -1 or matching), return (output shape, where the kept
    axes go) with symbolic sizes kept."""
    src = [d for d in in_shape if not is_one(d)]
    dst = [k for k, d in enumerate(new_shape) if not (type(d) is int and d == 1)]
    if len(src) != len(dst) or list(new_shape).count(-1) > 1:
        return None
    out = list(new_shape)
    for d, k in zip(src, dst):
        want = new_shape[k]
        if want == -1 or resolve(want) is resolve(d):
            out[k] = d
        elif isinstance(want, (int, np.integer)) and want == _value(d):
            out[k] = bind_dim(d)
        else:
            return None
    return tuple(out), tuple(dst)


def _value(d) -> int:
    d = resolve(d)
    return d if type(d) is int else d.value


def matmul(a, b):
    a, b = promote(a, b, to_float=True)
    return bind(R["matmul"], a, b)


def outer(a, b):
    return mul(expand_dims(a, (1,)), expand_dims(b, (0,)))


def gather(x, indices, axis):
    return bind(R["gather"], x, *indices, axis=axis)


def diagonal(x, offset=0):
    """The diagonal `offset` of the last two axes, as the last axis (non-empty)."""
    rows, cols = bind_dim(aval_of(x).shape[-2]), bind_dim(aval_of(x).shape[-1])
    i = np.arange(max(0, -offset), min(rows, cols - offset))
    return gather(x, [i, i + offset], aval_of(x).ndim - 2)


def scatter_add(g, indices, axis, shape):
    return bind(R["scatter_add"], g, *indices, axis=axis, shape=tuple(shape))


def static_slice(x, starts, stops, steps, normalized=False):
    """Static slice with Python's slice semantics, or already `normalized`
    (what `slice.indices` returns: a stop of -1 means "past index 0").
    A sliced (not whole) symbolic dimension is bound to its size."""
    shape = aval_of(x).shape
    norm = []
    for d, start, stop, step in zip(shape, starts, stops, steps):
        if start in (0, None) and stop is None and step in (1, None):
            norm.append((0, None, 1))
        elif normalized:
            bind_dim(d)
            norm.append((start, stop, step))
        else:
            norm.append(slice(start, stop, step).indices(bind_dim(d)))
    if all(stop is None for _, stop, _ in norm):
        return x
    starts, stops, steps = (tuple(col) for col in zip(*norm))
    return bind(R["slice"], x, starts=starts, stops=stops, steps=steps)


def slice_embed(g, shape, starts, steps):
    return bind(R["slice_embed"], g, shape=tuple(shape), starts=tuple(starts),
                steps=tuple(steps))


def concatenate(xs, axis):
    xs = promote(*xs)
    if len(xs) == 1:
        return xs[0]
    for x in xs:
        bind_dim(aval_of(x).shape[axis])
    return bind(R["concatenate"], *xs, axis=axis)


def stop_gradient(x):
    x = operand(x)
    return bind(R["stop_gradient"], x) if isinstance(x, Tracer) else x


def dimsize(x, axes, dtype):
    sizes = [resolve(aval_of(x).shape[a]) for a in axes]
    if all(type(s) is int for s in sizes):
        return np.asarray(np.prod(sizes), dtype=dtype)[()]
    return bind(R["dimsize"], x, axes=tuple(axes), dtype=np.dtype(dtype))
