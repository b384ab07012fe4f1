"""The array primitives' records: elementwise math, index maps, reductions and
array ops, one record per op holding every rule for it.

A record holds
- `abstract_eval`: the shape and dtype rule (symbolic shapes, see shapes.py);
- `impl`: the NumPy reference implementation (the interpreter runs these);
- the derivative: for elementwise ops `partials` (one derivative per operand,
  from which both the VJP and the JVP follow), otherwise `vjp` and `jvp`
  written with tracejit ops, so the adjoint is IR;
- the Numba emission: `scalar` (an expression template over scalar operand
  expressions) for elementwise ops (`complex_scalar` where complex operands
  need other math), `index_map` for ops that only move elements, a `monoid`
  for reductions, or `emit` for array ops;
- `batch`: the vmap rule (written with `tracejit.trace.batch_axes`): the
  elementwise and reduction families' rules are set by their factories.

Complex operands: `partials` are complex derivatives (exact for holomorphic
ops, whose rules are their real ones under JAX's convention, see autodiff.py);
ops that are not holomorphic (abs, real, imag, conj) give `vjp` and `jvp`;
ops that need an order (comparisons, max, floor, ...) refuse complex operands.

The code generator, interpreter, autodiff and verifier all read these records
and keep no per-op tables of their own.
"""

from __future__ import annotations

import math

import numpy as np

from ..core.dtypes import is_real_float, real_dtype
from ..core.errors import NonFiniteError, ShapeError, TracerTypeError
from ..core.ir import AVal, Eqn, Literal
from ..core.shapes import bind as bind_dim
from ..core.shapes import (
    broadcast_shapes,
    concrete_shape,
    format_shape,
    is_one,
    join,
    resolve,
)
from ..trace import ops
from ..trace.batch_axes import (
    aligned_operands,
    all_front,
    iota,
    leading_batch_rule,
    materialize,
    move,
    ndim,
    shift_axes,
    unbatched_aval,
    with_unit_axes,
)
from ..trace.batch_axes import shape as shape_of
from ..trace.registry import ARRAY, ELEMENTWISE, INDEXMAP, REDUCE, REGISTRY, Primitive, register

# ------------------------------------------------------------ elementwise

def _same_dtype(avals, name):
    dtypes = {a.dtype for a in avals}
    if len(dtypes) > 1:
        names = ", ".join(str(d) for d in sorted(dtypes, key=str))
        raise TracerTypeError(f"{name}: operands must share a dtype, got {names}")
    return avals[0].dtype


def _elementwise_rule(out_dtype=None, operands=slice(None), dtype_rule=None, real_only=None):
    """Broadcast all operands; dtype from the operands picked by `operands`
    (all must agree) unless `out_dtype` fixes it (comparisons give bool) or
    `dtype_rule` maps it (abs of complex is real). `real_only` says why
    complex operands are refused."""

    def rule(avals, params, checks, name="elementwise"):
        if real_only:
            reject_complex(avals, name, real_only)
        shape = broadcast_shapes([a.shape for a in avals], name, checks)
        dtype = _same_dtype(avals[operands], name)
        if dtype_rule is not None:
            dtype = dtype_rule(dtype)
        if out_dtype is not None:
            dtype = np.dtype(out_dtype)
        if "dtype" in params:
            dtype = np.dtype(params["dtype"])
        return [AVal(shape, dtype, all(a.weak for a in avals))]

    return rule


UNORDERED = ("complex numbers are not ordered (NumPy compares them lexicographically, "
             "tracejit does not): compare np.real(z), np.imag(z) or np.abs(z)")
REAL_ONLY = "it is defined for real operands only (take np.real(z) or np.abs(z) first)"


def reject_complex(avals, name, why) -> None:
    """TracerTypeError for an op that needs real operands and got a complex one."""
    if any(a.dtype.kind == "c" for a in avals):
        raise TracerTypeError(f"{name} of a complex operand: {why}")


def _batch_elementwise(prim):
    """The elementwise family's vmap rule: batch axes first, operands broadcast per example."""
    def rule(size, args, dims, **params):
        return ops.bind(prim, *aligned_operands(args, dims), **params), 0

    return rule


def elementwise(name, nin, impl, scalar, partials=None, out_dtype=None, operands=slice(None),
                dtype_rule=None, real_only=None, **extra) -> Primitive:
    base = _elementwise_rule(out_dtype, operands, dtype_rule, real_only)
    rule = lambda avals, params, checks: base(avals, params, checks, name)  # noqa: E731
    differentiable = partials is not None or "vjp" in extra
    prim = Primitive(name, ELEMENTWISE, rule, impl, partials=partials, scalar=scalar,
                     differentiable=differentiable, **extra)
    prim.nin = nin
    prim.batch = _batch_elementwise(prim)
    return register(prim)


def _recip(x):
    return 1.0 / x


def _arccosh_partial(out, x):
    """1 / (sqrt(x - 1) sqrt(x + 1)): no cancellation near 1, no overflow of x^2 (and
    for complex x the branch of NumPy's arccosh, which sqrt(x^2 - 1) is not)."""
    return _recip(ops.sqrt(x - 1.0) * ops.sqrt(x + 1.0))


def _sqrt_slope(out, x):
    """0.5 / sqrt(x), written 0.5 sqrt(x) / x: fast-math kernels turn a division by a
    square root into a reciprocal-square-root estimate (NaN at 0, -inf at float32
    subnormals). +inf at 0, 0 at inf."""
    if ops.is_complex(x.dtype):
        return 0.5 / out
    inside = ops.logical_and(x > 0.0, x < np.inf)
    safe = ops.select(inside, x, ops.ones_like(x))
    edge = ops.select(x == 0.0, ops.full_like(x, np.inf), ops.zeros_like(x))
    return ops.select(inside, (0.5 * out) / safe, edge)


def _cbrt_slope(out, x):
    """1 / (3 cbrt(x)^2) as cbrt(x) / x / 3 (one rounded cbrt, not two); inf at 0."""
    at_zero = out == 0.0
    safe = ops.select(at_zero, ops.ones_like(x), x)
    return ops.select(at_zero, _recip(3.0 * (out * out)), (out / safe) / 3.0)


def _one_minus_square(x):
    """1 - x^2 as (1 - x)(1 + x): exact factors where 1 - x*x cancels (|x| near 1)."""
    return (1.0 - x) * (1.0 + x)


def _arcsin_partial(out, x):
    return _recip(ops.sqrt(1.0 - x) * ops.sqrt(1.0 + x))


def _real_or_complex(real_rule, complex_rule):
    """A partial whose accurate real form has no complex counterpart."""
    return lambda out, x: [complex_rule(out, x) if ops.is_complex(x.dtype) else real_rule(x)]


def _tanh_slope(x):
    """sech^2 x = 4e / (1 + e(2 + e)), e = exp(-2|x|): relatively accurate to the tails,
    where 1 - tanh^2 cancels (tanh rounds to 1 long before sech^2 underflows)."""
    e = ops.exp(-2.0 * ops.abs_(x))
    return (4.0 * e) / (1.0 + e * (2.0 + e))


_HUGE = 1e18  # x^2 + 1 is x^2 past it (both dtypes) and 1e18^2 is finite in float32


def _arcsinh_slope(x):
    """1 / sqrt(x^2 + 1), and 1 / |x| where x^2 would overflow."""
    big = ops.abs_(x) > _HUGE
    safe = ops.select(big, ops.ones_like(x), x)
    return ops.select(big, _recip(ops.abs_(x)), _recip(ops.sqrt(safe * safe + 1.0)))


def _arctan_slope(x):
    """1 / (1 + x^2); past |x| = 1 as t / (x + t), t = 1/x: no overflow of x^2."""
    big = ops.abs_(x) > 1.0
    t = _recip(ops.select(big, x, ops.ones_like(x)))
    return ops.select(big, t / (x + t), _recip(1.0 + x * x))


unary = [
    ("neg", np.negative, "(-{0})", lambda out, x: [-1.0]),
    ("exp", np.exp, "_rt.exp({0})", lambda out, x: [out]),
    ("log", np.log, "np.log({0})", lambda out, x: [_recip(x)], True),
    ("log1p", np.log1p, "np.log1p({0})", lambda out, x: [_recip(x + 1.0)], True),
    # exp(x), not out + 1: that cancels where out is near -1
    ("expm1", np.expm1, "_rt.expm1({0})", lambda out, x: [ops.exp(x)]),
    # +inf at 0, the one-sided derivative (JAX, PyTorch); nan_safe: a zero cotangent
    # still contributes 0 (where(x > 0, sqrt(x), 0) at 0)
    ("sqrt", np.sqrt, "np.sqrt({0})", lambda out, x: [_sqrt_slope(out, x)], True),
    ("sin", np.sin, "np.sin({0})", lambda out, x: [ops.cos(x)]),
    ("cos", np.cos, "np.cos({0})", lambda out, x: [-ops.sin(x)]),
    ("tan", np.tan, "np.tan({0})", lambda out, x: [1.0 + out * out], True),
    ("tanh", np.tanh, "_rt.tanh({0})",
     _real_or_complex(_tanh_slope, lambda out, x: 1.0 - out * out)),
    ("arctan", np.arctan, "np.arctan({0})",
     _real_or_complex(_arctan_slope, lambda out, x: _recip(1.0 + x * x))),
    ("sinh", np.sinh, "np.sinh({0})", lambda out, x: [ops.cosh(x)]),
    ("cosh", np.cosh, "np.cosh({0})", lambda out, x: [ops.sinh(x)]),
    # +-inf at +-1, as JAX and PyTorch
    ("arcsin", np.arcsin, "np.arcsin({0})", lambda out, x: [_arcsin_partial(out, x)], True),
    ("arccos", np.arccos, "np.arccos({0})", lambda out, x: [-_arcsin_partial(out, x)], True),
    ("arcsinh", np.arcsinh, "np.arcsinh({0})",
     _real_or_complex(_arcsinh_slope, lambda out, x: _recip(ops.sqrt(x * x + 1.0)))),
    ("arccosh", np.arccosh, "np.arccosh({0})", lambda out, x: [_arccosh_partial(out, x)], True),
    ("arctanh", np.arctanh, "np.arctanh({0})", lambda out, x: [_recip(_one_minus_square(x))],
     True),
]
# Numba's complex math for the complex operands the runtime's polynomials do not take
_COMPLEX_MATH = {"exp": "np.exp({0})", "expm1": "np.expm1({0})", "tanh": "np.tanh({0})"}
for _name, _impl, _scalar, _partials, *_safe in unary:
    elementwise(_name, 1, _impl, _scalar, _partials, nan_safe=bool(_safe),
                complex_scalar=_COMPLEX_MATH.get(_name))

_LN2, _LN10 = float(np.log(2.0)), float(np.log(10.0))
# Real only (numpy/api.py composes complex ones): one rounding each, where exp(x ln 2)
# amplified the rounding of x ln 2 |x ln 2| times (exp2 was 360 ulps off at 1000)
for _name, _impl, _scalar, _partials in [
        ("exp2", np.exp2, "_rt.exp2({0})", lambda out, x: [out * _LN2]),
        ("log2", np.log2, "np.log2({0})", lambda out, x: [(1.0 / _LN2) / x]),
        ("log10", np.log10, "np.log10({0})", lambda out, x: [(1.0 / _LN10) / x]),
        ("cbrt", np.cbrt, "_rt.cbrt({0})", lambda out, x: [_cbrt_slope(out, x)])]:
    elementwise(_name, 1, _impl, _scalar, _partials, nan_safe=True, real_only=REAL_ONLY)


def _abs_partial(out, x):
    """sign(x); for complex x, conj(x) / |x| (0 at 0, as JAX), the gradient of |x|
    in JAX's convention."""
    if not ops.is_complex(x.dtype):
        return ops.sign(x)
    safe = ops.select(out == 0.0, ops.ones_like(out), out)
    return ops.conj(x) * (1.0 / safe)


def _abs_jvp(tangents, out, x):
    (t,) = tangents
    product = t * _abs_partial(out, x)
    return ops.real(product) if ops.is_complex(x.dtype) else product


# Not holomorphic for complex operands: its own VJP and JVP; |z| is real.
elementwise("abs", 1, np.abs, "abs({0})", dtype_rule=real_dtype,
            vjp=lambda g, out, x: [g * _abs_partial(out, x)], jvp=_abs_jvp)

# scipy.special's ufuncs (the NumPy reference runs SciPy's own)
def _scipy_special(name):
    def run(*args, **params):
        import scipy.special
        out = getattr(scipy.special, name)(*args, **params)
        return np.asarray(out, dtype=np.result_type(args[-1]))

    return run


_LOG_TWO_OVER_SQRT_PI = float(np.log(2.0 / np.sqrt(np.pi)))
_SPECIAL_REAL = "tracejit compiles its real form only"


def _erf_slope(x):
    """2/sqrt(pi) exp(-x^2) without rounding x^2 (exp would amplify that x^2 times):
    x = a + b with a a multiple of 2^-s, so a^2 is exact and the rest small,
    exp(-a^2) * exp(log(2/sqrt(pi)) - b(2a + b))."""
    grid = 2.0 ** (7 if x.dtype == np.float32 else 12)
    x = ops.minimum(ops.abs_(x), 40.0)  # exp(-1600) is 0 in both dtypes
    a = ops.round_(x * grid) / grid
    b = x - a
    return ops.exp(-(a * a)) * ops.exp(_LOG_TWO_OVER_SQRT_PI - b * (2.0 * a + b))


def _libm(fn):
    """The C library's function elementwise (the kernels' too): SciPy's erfc and
    gammaln are hundreds of ulps off in erfc's tail and at negative arguments."""
    each = np.frompyfunc(fn, 1, 1)

    def run(x):
        x = np.asarray(x)
        with np.errstate(all="ignore"):
            return np.asarray(each(x.astype(np.float64)), np.float64).astype(x.dtype)[()]

    return run


def _c_lgamma():
    """The C library's lgamma (the kernels'): Python's math.lgamma is a Lanczos sum,
    relatively inaccurate near its zeros 1 and 2."""
    import ctypes
    import ctypes.util

    try:
        fn = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6").lgamma
    except (OSError, AttributeError, TypeError):
        return math.lgamma
    fn.restype, fn.argtypes = ctypes.c_double, [ctypes.c_double]
    return fn


_LGAMMA = _c_lgamma()


def _lgamma_or_pole(x: float) -> float:
    """lgamma, inf at its poles (0, -1, -2...) as SciPy, -log|x| below 2^-60."""
    if x != 0.0 and abs(x) < 2.0 ** -60:
        return -math.log(abs(x))
    try:
        return _LGAMMA(x)
    except (ValueError, OverflowError):
        return math.inf if x == x else x


elementwise("erf", 1, _scipy_special("erf"), "_rt.erf({0})",
            lambda out, x: [_erf_slope(x)], real_only=_SPECIAL_REAL)
elementwise("erfc", 1, _libm(math.erfc), "_rt.erfc({0})",
            lambda out, x: [-_erf_slope(x)], real_only=_SPECIAL_REAL)
elementwise("lgamma", 1, _libm(_lgamma_or_pole), "_rt.lgamma({0})",
            lambda out, x: [polygamma(x, 0)], real_only=_SPECIAL_REAL)


def polygamma(x, n: int):
    """The n-th derivative of digamma (n = 0: digamma)."""
    return ops.bind(REGISTRY["polygamma"], x, n=int(n))


def _polygamma_impl(x, *, n):
    """SciPy's polygamma; digamma at negative x by the reflection
    psi(x) = psi(1 - x) - pi / tan(pi r), r = x - rint(x) exact (SciPy's psi is
    tens of ulps off there)."""
    out = _scipy_special("polygamma")(n, x)
    if n != 0:
        return out
    x = np.asarray(x, np.float64)  # float32 too: the two terms nearly cancel
    with np.errstate(all="ignore"):
        r = x - np.rint(x)
        reflected = _scipy_special("psi")(1.0 - x) - np.pi / np.tan(np.pi * r)
    return np.where((x < 0) & (r != 0), reflected, out).astype(out.dtype)


elementwise("polygamma", 1, _polygamma_impl,
            lambda x, *, n: f"_rt.polygamma({n}, {x})",
            lambda out, x, *, n: [polygamma(x, n + 1)], real_only=_SPECIAL_REAL)


# Piecewise-constant ops: their derivative is zero almost everywhere.
for _name, _impl, _scalar in [("sign", np.sign, "_rt.sign({0})"),
                              ("floor", np.floor, "np.floor({0})"),
                              ("ceil", np.ceil, "np.ceil({0})"),
                              ("round", np.round, "_rt.round_half_even({0})")]:
    elementwise(_name, 1, _impl, _scalar, real_only=REAL_ONLY)

elementwise("logical_not", 1, np.logical_not, "(not {0})", out_dtype=bool)


def _debug_check_impl(x, *, index, mode):
    x = np.asarray(x)
    if mode & 1 and np.isnan(x).any():
        raise NonFiniteError(index, 0)
    if mode & 2 and np.isinf(x).any():
        raise NonFiniteError(index, 1)
    return x


# tracejit.config.debug_nans / debug_infs: `x` unchanged, after raising NonFiniteError(index)
# if it holds a NaN (mode bit 1) or an infinity (bit 2). Inserted by debug.instrument.
elementwise("debug_check", 1, _debug_check_impl,
            lambda x, *, index, mode: f"_rt.debug_check({x}, {index}, {mode})", raises=True,
            complex_scalar=lambda x, *, index, mode: f"_rt.debug_check_parts({x}, {index}, {mode})")


def _pow_partials(out, x, y):
    x_is_zero = x == 0.0
    safe_x = ops.select(x_is_zero, ops.ones_like(x), x)
    # y x^(y-1), infinite at x = 0 for 0 < y < 1 as sqrt's (JAX, PyTorch); x^0 is
    # constant, so y = 0 gives 0 (not 0 * inf)
    dx = ops.select(y == 0.0, ops.zeros_like(out), y * x ** (y - 1.0))
    dy = ops.select(x_is_zero, ops.zeros_like(out), out * ops.log(safe_x))
    return [dx, dy]


def _max_partials(out, x, y):
    # Ties split the gradient evenly, as JAX does.
    half = ops.select(x == y, ops.full_like(out, 0.5), ops.zeros_like(out))
    wins = ops.convert(x > y, out.dtype)
    return [wins + half, (1.0 - wins) - half]


def _min_partials(out, x, y):
    return _max_partials(out, y, x)  # d min(x, y)/dx = [y > x], ties split


def _drop_neutral(neutral, positions, signed_zero=False):
    """`x + 0`, `x * 1`, ... is `x` (when it does not broadcast `x` further). With
    `signed_zero` a float's neutral is -0.0: x + 0.0 is +0.0 at x = -0.0 (IEEE, NumPy)."""
    def rewrite(eqn):
        out = eqn.outputs[0].aval
        for pos in positions:
            literal, other = eqn.inputs[pos], eqn.inputs[1 - pos]
            if (isinstance(literal, Literal) and literal.value == neutral
                    and other.aval.same_type(out)
                    and not (signed_zero and _positive_float_zero(literal, out))):
                return other
        return None

    return rewrite


def _positive_float_zero(literal, out) -> bool:
    return np.dtype(out.dtype).kind in "fc" and not np.signbit(np.real(literal.value))


binary = [
    ("add", np.add, "({0} + {1})", lambda out, x, y: [1.0, 1.0],
     _drop_neutral(0, (0, 1), signed_zero=True)),
    ("sub", np.subtract, "({0} - {1})", lambda out, x, y: [1.0, -1.0], _drop_neutral(0, (1,))),
    ("mul", np.multiply, "({0} * {1})", lambda out, x, y: [y, x], _drop_neutral(1, (0, 1))),
    ("div", np.divide, "({0} / {1})", lambda out, x, y: [_recip(y), -out / y],
     _drop_neutral(1, (1,)), True),
    ("pow", np.power, "({0} ** {1})", _pow_partials, None, True),
    ("maximum", np.maximum, "_rt.maximum({0}, {1})", _max_partials, None),
    ("minimum", np.minimum, "_rt.minimum({0}, {1})", _min_partials, None),
]
for _name, _impl, _scalar, _partials, _simplify, *_safe in binary:
    elementwise(_name, 2, _impl, _scalar, _partials, nan_safe=bool(_safe), simplify=_simplify,
                real_only=UNORDERED if _name in ("maximum", "minimum") else None,
                complex_scalar="_rt.cdiv({0}, {1})" if _name == "div" else None)

def _trunc(x):
    return ops.select(ops.lt(x, 0.0), ops.ceil(x), ops.floor(x))


# x - y * q with q the rounded quotient: d/dx = 1, d/dy = -q (JAX's rule for rem)
elementwise("remainder", 2, np.remainder, "({0} % {1})",
            lambda out, x, y: [1.0, -ops.floor(x / y)], nan_safe=True, real_only=REAL_ONLY)
elementwise("fmod", 2, np.fmod, "np.fmod({0}, {1})",
            lambda out, x, y: [1.0, -_trunc(x / y)], nan_safe=True, real_only=REAL_ONLY)
elementwise("floor_divide", 2, np.floor_divide, "({0} // {1})", real_only=REAL_ONLY)
elementwise("arctan2", 2, np.arctan2, "np.arctan2({0}, {1})",
            lambda out, y, x: [x / (x * x + y * y), -y / (x * x + y * y)], nan_safe=True,
            real_only=REAL_ONLY)

for _name, _impl, _op in [("lt", np.less, "<"), ("le", np.less_equal, "<="),
                          ("gt", np.greater, ">"), ("ge", np.greater_equal, ">="),
                          ("eq", np.equal, "=="), ("ne", np.not_equal, "!=")]:
    elementwise(_name, 2, _impl, f"({{0}} {_op} {{1}})", out_dtype=bool,
                real_only=None if _name in ("eq", "ne") else UNORDERED)

elementwise("logical_and", 2, np.logical_and, "({0} and {1})", out_dtype=bool)
elementwise("logical_or", 2, np.logical_or, "({0} or {1})", out_dtype=bool)


def _integer_pow_partials(out, x, *, y):
    if y == 0:
        return [None]
    return [float(y) * (x if y == 2 else ops.integer_pow(x, y - 1))]


def _integer_pow_scalar(x, *, y):
    if y == 0:
        return f"({x} * 0 + 1)"
    if 0 < y <= 4:
        return "(" + " * ".join([x] * y) + ")"
    return f"({x} ** {y})"


elementwise("integer_pow", 1, lambda x, *, y: np.power(x, y), _integer_pow_scalar,
            _integer_pow_partials,
            simplify=lambda eqn: eqn.inputs[0] if eqn.params["y"] == 1 else None)


def _select_vjp(g, out, c, x, y):
    zeros = ops.zeros_like(g)
    return [None, ops.select(c, g, zeros), ops.select(c, zeros, g)]


def _select_jvp(tangents, out, c, x, y):
    _, tx, ty = tangents
    tx = ops.zeros_like(out) if tx is None else tx
    ty = ops.zeros_like(out) if ty is None else ty
    return ops.select(c, tx, ty)


def _select_constant(eqn):
    """A select on a constant condition is the branch it picks."""
    cond, x, y = eqn.inputs
    if not isinstance(cond, Literal):
        return None
    chosen = x if cond.value else y
    return chosen if chosen.aval.same_type(eqn.outputs[0].aval) else None


select = elementwise("select", 3, np.where, "({1} if {0} else {2})", operands=slice(1, None),
                     vjp=_select_vjp, jvp=_select_jvp, simplify=_select_constant)


def _convert_scalar(x, *, dtype):
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return f"({x} != 0)"
    return f"np.{dtype.name}({x})"


def _convert_vjp(g, out, x, *, dtype):
    """Real to complex: the cotangent's real part (ops.convert takes it)."""
    if not (ops.is_inexact(x.dtype) and ops.is_inexact(np.dtype(dtype))):
        return [None]
    return [ops.convert(g, x.dtype)]


def _convert_rule(avals, params, checks):
    """Complex to real goes through `real` first (ops.convert): a convert never
    drops an imaginary part (`np.float64(z)` would not compile)."""
    if ops.is_complex(avals[0].dtype) and not ops.is_complex(params["dtype"]):
        raise TracerTypeError(f"convert: {avals[0].dtype} to {np.dtype(params['dtype'])} "
                              "must take the real part first")
    return _convert_elementwise(avals, params, checks, "convert")


_convert_elementwise = _elementwise_rule()
convert = elementwise("convert", 1, lambda x, *, dtype: np.asarray(x).astype(dtype),
            _convert_scalar,
            vjp=_convert_vjp, jvp=lambda ts, out, x, *, dtype: (
                None if ts[0] is None or not ops.is_inexact(np.dtype(dtype))
                else ops.convert(ts[0], dtype)),
            # to its own dtype it is nothing (weak typing only matters while tracing)
            simplify=lambda eqn: eqn.inputs[0] if eqn.inputs[0].aval.same_type(
                eqn.outputs[0].aval) else None)
convert.abstract_eval = _convert_rule
convert.impl_source = lambda eqn, lazy, sizes: (
    f"np.asarray({{0}}).astype(np.{np.dtype(eqn.params['dtype']).name})")


# ---------------------------------------------------------------- indexmap
# Ops that only move elements: out[i] = x[map(i)]. In a fused loop they cost
# index arithmetic, never a copy.

def _indexmap(name, rule, impl, index_map, vjp, differentiable=True):
    def linear_jvp(tangents, out, x, **params):
        return None if tangents[0] is None else ops.bind(REGISTRY[name], tangents[0], **params)

    return register(Primitive(name, INDEXMAP, rule, impl, vjp=vjp, index_map=index_map,
                              jvp=linear_jvp if differentiable else lambda *a, **p: None,
                              differentiable=differentiable))


def _broadcast_rule(avals, params, checks):
    (x,) = avals
    shape, bdims = params["shape"], params["bdims"]
    if len(bdims) != x.ndim or any(b >= len(shape) for b in bdims):
        raise ShapeError(f"broadcast_to: cannot map {format_shape(x.shape)} into "
                         f"{format_shape(shape)}")
    for k, b in enumerate(bdims):
        d = resolve(x.shape[k])
        if not (type(d) is int and d == 1):
            join(d, shape[b], "broadcast_to", checks)
    return [AVal(tuple(shape), x.dtype, x.weak)]


def _broadcast_impl(x, *, shape, bdims):
    x = np.asarray(x)
    target = concrete_shape(shape)
    expanded = [1] * len(target)
    for k, b in enumerate(bdims):
        expanded[b] = x.shape[k]
    x = x.reshape(expanded)
    return x if x.shape == target else np.broadcast_to(x, target)


def _broadcast_map(x, out, *, shape, bdims):
    return [(None if is_one(x.shape[k]) and not is_one(shape[b]) else b, 0, 1)
            for k, b in enumerate(bdims)]


def _broadcast_vjp(g, out, x, *, shape, bdims):
    summed = [b for b in range(len(shape)) if b not in bdims]
    summed += [b for k, b in enumerate(bdims) if is_one(x.aval.shape[k]) and not is_one(shape[b])]
    g = ops.reduce_sum(g, tuple(sorted(summed))) if summed else g
    kept = [b for b in range(len(shape)) if b not in summed]
    kept_x = tuple(k for k in range(x.ndim) if bdims[k] in kept)
    return [ops.broadcast_in_dim(g, x.aval.shape, kept_x)]


def _broadcast_unit_axes(x, *, shape, bdims):
    """`x` with unit axes where the broadcast adds axes: elementwise consumers broadcast."""
    x = np.asarray(x)
    expanded = [1] * len(shape)
    for k, b in enumerate(bdims):
        expanded[b] = x.shape[k]
    return x.reshape(expanded)


def _adds_unit_axes(eqn) -> bool:
    """Only inserts axes of size 1 (an expand_dims): a view, `x[None, :]`."""
    (x,), shape, bdims = eqn.inputs, eqn.params["shape"], eqn.params["bdims"]
    return (x.aval.ndim > 0 and list(bdims) == sorted(bdims)  # kernels hold 0-d as scalars
            and all(is_one(d) for b, d in enumerate(shape) if b not in bdims)
            and all(resolve(x.aval.shape[k]) == resolve(shape[b]) for k, b in enumerate(bdims)))


broadcast_in_dim = _indexmap("broadcast_in_dim", _broadcast_rule, _broadcast_impl,
                             _broadcast_map, _broadcast_vjp)
broadcast_in_dim.impl_broadcasting = _broadcast_unit_axes


def _broadcast_source(eqn, lazy, sizes):
    (x,), shape, bdims = eqn.inputs, eqn.params["shape"], eqn.params["bdims"]
    target = tuple(resolve(d) for d in shape)
    expanded = [1] * len(target)
    for k, b in enumerate(bdims):
        expanded[b] = resolve(x.aval.shape[k])
    reshaped = f"np.asarray({{0}}).reshape({sizes(tuple(expanded))})"
    if lazy or all(a is b for a, b in zip(expanded, target)):
        return reshaped
    return f"np.broadcast_to({reshaped}, {sizes(target)})"


broadcast_in_dim.impl_source = _broadcast_source
broadcast_in_dim.view = lambda x, *, shape, bdims: index_view(
    x, [":" if b in bdims else "None" for b in range(len(shape))])
broadcast_in_dim.view_if = _adds_unit_axes


def _batch_broadcast_params(size, p):
    return dict(p, shape=(size,) + tuple(p["shape"]), bdims=(0,) + shift_axes(p["bdims"]))


broadcast_in_dim.batch = leading_batch_rule("broadcast_in_dim", _batch_broadcast_params)


def _transpose_rule(avals, params, checks):
    (x,) = avals
    perm = params["perm"]
    if sorted(perm) != list(range(x.ndim)):
        raise ShapeError(f"transpose: axes {perm} do not fit {format_shape(x.shape)}")
    return [AVal(tuple(x.shape[p] for p in perm), x.dtype, x.weak)]


def _transpose_view(x: str, *, perm) -> str:
    return f"{x}.T" if tuple(perm) == (1, 0) else f"{x}.transpose({tuple(perm)!r})"


transpose = _indexmap("transpose", _transpose_rule, lambda x, *, perm: np.transpose(x, perm),
                      lambda x, out, *, perm: [(perm.index(k), 0, 1) for k in range(len(perm))],
                      lambda g, out, x, *, perm: [ops.transpose(g, tuple(np.argsort(perm)))])
transpose.view = lambda x, *, perm: (  # a cheap-to-compile view (runtime.permute_*)
    f"_rt.permute_{''.join(map(str, perm))}({x})"
    if len(perm) in (3, 4) and tuple(perm) != tuple(range(len(perm)))[::-1]
    else _transpose_view(x, perm=perm))
transpose.view_slow_in_blas = True  # a transposed operand: BLAS's 'T' case
transpose.impl_source = lambda eqn, lazy, sizes: _transpose_view("np.asarray({0})",
                                                                  **eqn.params)
transpose.batch = leading_batch_rule(
    "transpose", lambda size, p: dict(p, perm=(0,) + shift_axes(p["perm"])))


def _squeeze_rule(avals, params, checks):
    (x,) = avals
    for ax in params["axes"]:
        if not is_one(x.shape[ax]):
            raise ShapeError(f"squeeze: axis {ax} of {format_shape(x.shape)} is not 1")
    shape = tuple(d for k, d in enumerate(x.shape) if k not in params["axes"])
    return [AVal(shape, x.dtype, x.weak)]


def _squeeze_map(x, out, *, axes):
    positions, mapping = iter(range(out.ndim)), []
    for k in range(x.ndim):
        mapping.append((None if k in axes else next(positions), 0, 1))
    return mapping


def _squeeze_vjp(g, out, x, *, axes):
    kept = [k for k in range(x.ndim) if k not in axes]
    return [ops.broadcast_in_dim(g, x.aval.shape, tuple(kept))]


def _squeeze_added_axes(eqn, defining):
    """squeeze(broadcast_in_dim(x)) is x when the broadcast only added the unit
    axes the squeeze removes (an expand_dims undone)."""
    (y,) = eqn.inputs
    source = defining(y)
    if source is None or source.prim.name != "broadcast_in_dim":
        return None
    (x,) = source.inputs
    kept = tuple(k for k in range(y.aval.ndim) if k not in eqn.params["axes"])
    if source.params["bdims"] != kept or not x.aval.same_type(eqn.outputs[0].aval):
        return None
    return x


squeeze = _indexmap("squeeze", _squeeze_rule, lambda x, *, axes: np.squeeze(x, axes),
                    _squeeze_map, _squeeze_vjp)
squeeze.view = lambda x, *, axes: index_view(
    x, ["0" if k in axes else ":" for k in range(max(axes) + 1)])
squeeze.fold = _squeeze_added_axes
squeeze.impl_source = lambda eqn, lazy, sizes: squeeze.view("np.asarray({0})", **eqn.params)
squeeze.batch = leading_batch_rule("squeeze", lambda size, p: dict(p, axes=shift_axes(p["axes"])))


def index_view(x: str, items: list) -> str:
    """`x[items]` (trailing whole axes left out): a view, or a scalar when nothing is left."""
    while items and items[-1] == ":":
        items = items[:-1]
    return f"{x}[{', '.join(items)}]" if items else x


def _slice_rule(avals, params, checks):
    (x,) = avals
    shape = []
    for d, start, stop, step in zip(x.shape, params["starts"], params["stops"], params["steps"]):
        if (start, stop, step) == (0, None, 1):
            shape.append(d)
        else:
            shape.append(len(range(start, stop, step)))
    return [AVal(tuple(shape), x.dtype, x.weak)]


def _python_slice(start, step, count) -> slice:
    """The slice taking `count` elements from `start` by `step` (negative steps too)."""
    stop = start + step * (count - 1) + (1 if step > 0 else -1)
    return slice(start, None if stop < 0 else stop, step)


def _slice_impl(x, *, starts, stops, steps):
    x = np.asarray(x)
    return x[tuple(slice(None) if b is None else _python_slice(a, c, len(range(a, b, c)))
                   for a, b, c in zip(starts, stops, steps))]


def slice_item(start: int, step: int, count: int) -> str:
    """The index item `start:stop:step` taking `count` elements (negative steps too)."""
    sl = _python_slice(start, step, count)
    return f"{sl.start}:{'' if sl.stop is None else sl.stop}:{sl.step}"


def _slice_view(x: str, *, starts, stops, steps) -> str:
    items = []
    for start, stop, step in zip(starts, stops, steps):
        if stop is None and (start, step) == (0, 1):
            items.append(":")
            continue
        items.append(slice_item(start, step, len(range(start, stop, step))))
    return index_view(x, items)


_indexmap("slice", _slice_rule, _slice_impl,
          lambda x, out, *, starts, stops, steps: [
              (k, a, c) for k, (a, c) in enumerate(zip(starts, steps))],
          lambda g, out, x, *, starts, stops, steps: [
              ops.slice_embed(g, x.aval.shape, starts, steps)]).view = _slice_view


def _batch_slice_params(size, p):
    return dict(p, starts=(0,) + tuple(p["starts"]), stops=(None,) + tuple(p["stops"]),
                steps=(1,) + tuple(p["steps"]))


REGISTRY["slice"].batch = leading_batch_rule("slice", _batch_slice_params)

_indexmap("stop_gradient", lambda avals, params, checks: [avals[0]], lambda x: x,
          lambda x, out: [(k, 0, 1) for k in range(x.ndim)],
          lambda g, out, x: [None], differentiable=False).forward_identity = True
REGISTRY["stop_gradient"].batch = leading_batch_rule("stop_gradient")


def _custom_vjp_vjp(g, out, value, *rest, bwd, n_res, res_def, arg_def):
    from ..core import pytree

    residuals = pytree.unflatten(res_def, rest[:n_res])
    cts = bwd(residuals, g)
    ct_leaves, ct_def = pytree.flatten(tuple(cts) if isinstance(cts, list) else cts)
    if ct_def != arg_def:
        raise TracerTypeError("custom_vjp: bwd must return one cotangent per argument, "
                              f"structured like the arguments ({pytree.describe(arg_def)})")
    return [None] * (1 + n_res) + ct_leaves


def _custom_vjp_jvp(tangents, out, *xs, **params):
    raise TracerTypeError("forward mode (jvp) through a custom_vjp function is not "
                          "supported; define the gradient with grad/vjp only")


# `custom_vjp_call(value, *residuals, *args)`: the forward value computed by the
# user's fwd, with the user's bwd as its VJP rule (see api.custom_vjp).
register(Primitive(
    "custom_vjp_call", ARRAY, lambda avals, params, checks: [avals[0]],
    lambda value, *rest, **params: value, vjp=_custom_vjp_vjp, jvp=_custom_vjp_jvp,
    forward_identity=True))


# -------------------------------------------------------------- reductions

def _reduce_rule(out_dtype=None, empty_error=None, name="reduce", real_only=None):
    def rule(avals, params, checks):
        if real_only:
            reject_complex(avals, name, real_only)
        (x,) = avals
        axes = params["axes"]
        if empty_error and any(resolve(x.shape[a]) == 0 for a in axes):
            raise ShapeError(empty_error)  # sizes that may be 0 are checked by the kernel
        shape = tuple(d for k, d in enumerate(x.shape) if k not in axes)
        return [AVal(shape, np.dtype(out_dtype or x.dtype), x.weak and out_dtype is None)]

    return rule


def _identity(kind):
    def make(dtype):
        dtype = np.dtype(dtype)
        if kind in (0, 1):
            return dtype.type(kind)
        info = np.finfo(dtype) if is_real_float(dtype) else np.iinfo(dtype)
        big = dtype.type(np.inf) if is_real_float(dtype) else dtype.type(info.max)
        small = dtype.type(-np.inf) if is_real_float(dtype) else dtype.type(info.min)
        return small if kind == "max" else big

    return make


def _sum_vjp(g, out, x, *, axes):
    kept = tuple(k for k in range(x.ndim) if k not in axes)
    return [ops.broadcast_in_dim(g, x.aval.shape, kept)]


def _extremum_weights(out, x, axes):
    """Where x attains its max/min, split evenly among ties (as JAX)."""
    kept = tuple(k for k in range(x.ndim) if k not in axes)
    hit = ops.convert(x == ops.broadcast_in_dim(out, x.aval.shape, kept), x.dtype)
    count = ops.broadcast_in_dim(ops.reduce_sum(hit, axes), x.aval.shape, kept)
    return hit / count, kept


def _extremum_vjp(g, out, x, *, axes):
    weights, kept = _extremum_weights(out, x, axes)
    return [ops.broadcast_in_dim(g, x.aval.shape, kept) * weights]


def _extremum_jvp(tangents, out, x, *, axes):
    weights, _ = _extremum_weights(out, x, axes)
    return None if tangents[0] is None else ops.reduce_sum(tangents[0] * weights, axes)


def _prod_others(x, axes):
    """d prod / d x_i: the product of the *other* entries over the reduced axes.
    Along one axis k it is prod_j where(i == j, 1, x_j) over an n x n mask; over
    several, the others along the last axis times the others of the rows'
    products over the rest. Exact for any zeros and to any order (only selects
    and products), at O(n^2) work per axis; each n becomes part of the key."""
    *rest, k = sorted(axes)
    n = bind_dim(x.aval.shape[k])
    mask = np.eye(n, dtype=bool).reshape((n, n) + (1,) * (x.ndim - k - 1))
    pairs = ops.select(mask, 1.0, ops.expand_dims(x, (k,)))  # axes k: i, k + 1: j
    along_k = ops.reduce_prod(pairs, (k + 1,))
    if not rest:
        return along_k
    rows = _prod_others(ops.reduce_prod(x, (k,)), tuple(rest))  # rest < k: same indices
    return along_k * ops.expand_dims(rows, (k,))


def _prod_vjp(g, out, x, *, axes):
    kept = tuple(k for k in range(x.ndim) if k not in axes)
    return [ops.broadcast_in_dim(g, x.aval.shape, kept) * _prod_others(x, axes)]


def _prod_jvp(tangents, out, x, *, axes):
    if tangents[0] is None:
        return None
    return ops.reduce_sum(tangents[0] * _prod_others(x, axes), axes)


def _unit_reduction_is_squeeze(eqn):
    """Reducing over unit axes only moves elements: a squeeze."""
    x = eqn.inputs[0].aval
    if not all(is_one(x.shape[a]) for a in eqn.params["axes"]):
        return None
    return Eqn(REGISTRY["squeeze"], eqn.inputs, {"axes": eqn.params["axes"]}, eqn.outputs,
               eqn.location)


def _batch_reduction(name):
    """The reductions' vmap rule: the batch axis first, the reduced axes (`axes`;
    `axis` for argmax/argmin) shifted past it."""
    def rule(size, args, dims, **params):
        key = "axes" if "axes" in params else "axis"
        params = dict(params, **{key: shift_axes(params[key])})
        return ops.bind(REGISTRY[name], move(args[0], dims[0], 0), **params), 0

    return rule


def _reduction(name, impl, identity, update, vjp=None, jvp=None, out_dtype=None,
               accumulate=None, empty_error=None, ordered=False):
    reduce = impl.reduce if isinstance(impl, np.ufunc) else impl

    def run(x, *, axes):
        x = np.asarray(x)
        if accumulate is None or accumulate(x.dtype) == x.dtype:
            return reduce(x, axis=axes)
        return reduce(x, axis=axes, dtype=accumulate(x.dtype)).astype(x.dtype)

    def source(eqn, lazy, sizes):
        dtype = eqn.inputs[0].aval.dtype
        call = f"np.{impl.__name__}.reduce(np.asarray({{0}}), {eqn.params['axes']!r}"
        if accumulate is None or accumulate(dtype) == dtype:
            return call + ")"
        return f"{call}, dtype=np.{accumulate(dtype).name}).astype(np.{dtype.name})"

    rule = _reduce_rule(out_dtype, empty_error, name, UNORDERED if ordered else None)
    return register(Primitive(name, REDUCE, rule, run, vjp=vjp, jvp=jvp, monoid=(identity, update),
                              impl_source=source if isinstance(impl, np.ufunc) else None,
                              differentiable=vjp is not None,
                              simplify=_unit_reduction_is_squeeze if vjp else None,
                              accumulate=accumulate, empty_error=empty_error,
                              batch=_batch_reduction(name)))


def _no_identity(operation: str) -> str:
    return f"zero-size array to reduction operation {operation} which has no identity"


def _wide(dtype):
    """float32 sums and products accumulate in float64 (complex64 in complex128): a
    float32 accumulator loses ~n/2 ulp over n terms (NumPy's pairwise sum only
    ~log2(n)/2, and not along every axis); the result is rounded to float32 once."""
    wider = {np.dtype(np.float32): np.float64, np.dtype(np.complex64): np.complex128}
    return np.dtype(wider.get(np.dtype(dtype), dtype))


_reduction("reduce_sum", np.add, _identity(0), "{acc} += {v}", _sum_vjp,
           lambda ts, out, x, *, axes: None if ts[0] is None else ops.reduce_sum(ts[0], axes),
           accumulate=_wide)
_reduction("reduce_prod", np.multiply, _identity(1), "{acc} *= {v}", _prod_vjp, _prod_jvp,
           accumulate=_wide)
_reduction("reduce_max", np.maximum, _identity("max"), "{acc} = _rt.maximum({acc}, {v})",
           _extremum_vjp, _extremum_jvp, empty_error=_no_identity("maximum"), ordered=True)
_reduction("reduce_min", np.minimum, _identity("min"), "{acc} = _rt.minimum({acc}, {v})",
           _extremum_vjp, _extremum_jvp, empty_error=_no_identity("minimum"), ordered=True)


def _arg_impl(fn):
    def run(x, *, axis):
        x, axes = np.asarray(x), axis
        if len(axes) == 1:
            return fn(x, axis=axes[0])
        moved = np.moveaxis(x, axes, range(x.ndim - len(axes), x.ndim))
        flat = moved.reshape(moved.shape[: x.ndim - len(axes)] + (-1,))
        return fn(flat, axis=-1)

    return run


# The update keeps the first extremum and the first NaN, as NumPy does.
_reduction("argmax", _arg_impl(np.argmax), _identity("max"),
           "if {v} > {acc} or ({v} != {v} and {acc} == {acc}):\n    {acc} = {v}\n    {idx} = {k}",
           out_dtype=np.int64, empty_error="attempt to get argmax of an empty sequence",
           ordered=True)
_reduction("argmin", _arg_impl(np.argmin), _identity("min"),
           "if {v} < {acc} or ({v} != {v} and {acc} == {acc}):\n    {acc} = {v}\n    {idx} = {k}",
           out_dtype=np.int64, empty_error="attempt to get argmin of an empty sequence",
           ordered=True)


# -------------------------------------------------------------- array ops

def _array_op(name, rule, impl, emit, vjp=None, jvp=None, linear=False, **flags):
    if linear and jvp is None:
        def jvp(tangents, out, *xs, **params):
            if all(t is None for t in tangents):
                return None
            filled = [ops.zeros_like(x) if t is None else t for t, x in zip(tangents, xs)]
            return ops.bind(REGISTRY[name], *filled, **params)
    return register(Primitive(name, ARRAY, rule, impl, vjp=vjp, jvp=jvp, emit=emit,
                              differentiable=vjp is not None, **flags))


def _matmul_rule(avals, params, checks):
    """NumPy matmul: 1-D operands gain (and lose) a unit axis, batch axes broadcast."""
    a, b = avals
    if a.ndim == 0 or b.ndim == 0:
        raise ShapeError("matmul: operands must be at least 1-D (use * for scalars)")
    dtype = _same_dtype(avals, "matmul")
    if not ops.is_inexact(dtype):
        raise TracerTypeError(f"matmul: only floating-point and complex operands are compiled, "
                              f"got {dtype}")
    inner_b = b.shape[0] if b.ndim == 1 else b.shape[-2]
    try:
        join(a.shape[-1], inner_b, "matmul", checks)
    except ShapeError:
        raise ShapeError(f"matmul: inner dimensions of {format_shape(a.shape)} @ "
                         f"{format_shape(b.shape)} do not match") from None
    batch = broadcast_shapes([a.shape[:-2], b.shape[:-2]], "matmul (batch)", checks)
    rows = a.shape[-2:-1] if a.ndim >= 2 else ()
    cols = b.shape[-1:] if b.ndim >= 2 else ()
    return [AVal(tuple(batch) + tuple(rows) + tuple(cols), dtype)]


def _matmul_vjp(g, out, a, b):
    """Through the 2-D form: 1-D operands gain a unit axis (as NumPy does);
    autodiff's unbroadcast sums the batch axes an operand was broadcast over."""
    a2 = a if a.ndim >= 2 else ops.expand_dims(a, (0,))
    b2 = b if b.ndim >= 2 else ops.expand_dims(b, (1,))
    g2 = g
    if a.ndim == 1:
        g2 = ops.expand_dims(g2, (g2.ndim - (1 if b.ndim >= 2 else 0),))
    if b.ndim == 1:
        g2 = ops.expand_dims(g2, (g2.ndim,))
    ga = ops.matmul(g2, ops.swap_last(b2))
    if b.ndim == 2 and a.ndim >= 3:  # one matrix against stacked rows: one product
        return [ga, ops.bind(REGISTRY["matmul_tn"], a, g)]
    gb = ops.matmul(ops.swap_last(a2), g2)
    return [ops.squeeze(ga, (ga.ndim - 2,)) if a.ndim == 1 else ga,
            ops.squeeze(gb, (gb.ndim - 1,)) if b.ndim == 1 else gb]


def _matmul_jvp(tangents, out, a, b):
    ta, tb = tangents
    terms = []
    if ta is not None:
        terms.append(ops.matmul(ta, b))
    if tb is not None:
        terms.append(ops.matmul(a, tb))
    return None if not terms else terms[0] if len(terms) == 1 else terms[0] + terms[1]


def _emit_matmul(ctx, out, ins, eqn):
    """2-D (and 1-D) products are one BLAS call; batched ones loop over the
    broadcast batch axes, each operand reading index 0 along its unit axes."""
    a, b = (x.aval for x in eqn.inputs)
    aval = eqn.outputs[0].aval
    nbatch = aval.ndim - (a.ndim >= 2) - (b.ndim >= 2)
    if nbatch == 0:  # vectors as 1-row / 1-column views
        left = ins[0] if a.ndim == 2 else f"{ins[0]}[None, :]"
        right = ins[1] if b.ndim == 2 else f"{ins[1]}[:, None]"
        pick = {(2, 2): "", (1, 2): "[0]", (2, 1): "[:, 0]", (1, 1): "[0, 0]"}[a.ndim, b.ndim]
        return [f"{out} = _rt.gemm(_rt.as_any({left}), _rt.as_any({right})){pick}"]
    if b.ndim == 2 and a.ndim >= 3:  # stacked rows against one matrix: one BLAS call
        rows = _rows_2d(ins[0], a.ndim)
        return [f"{out} = _rt.gemm(_rt.as_any({rows}), _rt.as_any({ins[1]}))"
                f".reshape({ctx.shape(aval)})"]
    idx, lines, indent = ctx.loops(ctx.dims(aval)[:nbatch], 0)

    def operand(name, x):
        own = x.ndim - min(x.ndim, 2)
        if own == 0:
            return name
        picks = ["0" if is_one(d) else i for d, i in zip(x.shape[:own], idx[nbatch - own:])]
        return f"np.ascontiguousarray({name}[{', '.join(picks)}])"

    body = f"{out}[{', '.join(idx)}] = _rt.dot({operand(ins[0], a)}, {operand(ins[1], b)})"
    return [ctx.empty(out, eqn.outputs[0])] + lines + [" " * indent + body]


_array_op("matmul", _matmul_rule, np.matmul, _emit_matmul, _matmul_vjp, _matmul_jvp, blas=True)


def _batch_matmul(size, args, dims):
    """Products of one batched and one unbatched operand stay single BLAS calls
    where the per-example operand is a vector (or a 1-row / 1-column matrix);
    products over an inner size 1 (outer products, per-example gradients of a
    dense layer) are elementwise; the rest become batched products."""
    (a, b), (da, db) = args, dims
    ra, rb = ndim(a) - (da is not None), ndim(b) - (db is not None)
    pa, pb = _example_shape(a, da), _example_shape(b, db)
    if db is None and rb <= 2 and (ra == 1 or (ra == 2 and is_one(pa[0]))):
        rows = _drop_unit(move(a, da, 0), 1) if ra == 2 else move(a, da, 0)
        out = ops.matmul(rows, b)  # rows of a against one matrix: one product
        return (_insert_unit(out, 1) if ra == 2 else out), 0
    if da is None and ra <= 2 and (rb == 1 or (rb == 2 and is_one(pb[1]))):
        cols = move(b, db, 0) if rb == 1 else _drop_unit(move(b, db, 0), 2)
        out = ops.matmul(cols, ops.swap_last(a) if ra == 2 else a)  # columns against one matrix
        return (_insert_unit(out, ndim(out)) if rb == 2 else out), 0
    a, b = move(a, da, 0) if da is not None else a, move(b, db, 0) if db is not None else b
    if ra == 1:
        a = _insert_unit(a, ndim(a) - 1)
    if rb == 1:
        b = _insert_unit(b, ndim(b))
    n = max(max(ra, 2) - 2, max(rb, 2) - 2)
    if da is not None:
        a = with_unit_axes(a, n + 2)
    if db is not None:
        b = with_unit_axes(b, n + 2)
    if is_one(shape_of(a)[-1]):  # an outer product: a (.., m, 1) * b (.., 1, n), exact
        out = ops.mul(a, b)
    else:
        out = ops.bind(REGISTRY["matmul"], a, b)
    drop = ([ndim(out) - 1] if rb == 1 else []) + ([ndim(out) - 2] if ra == 1 else [])
    return ops.squeeze(out, drop), 0


def _example_shape(x, dim) -> tuple:
    return tuple(unbatched_aval(ops.aval_of(x), dim).shape)


def _drop_unit(x, axis: int):
    return ops.bind(REGISTRY["squeeze"], x, axes=(axis,))


def _insert_unit(x, position: int):
    full = shape_of(x)
    bdims = tuple(k if k < position else k + 1 for k in range(len(full)))
    return ops.bind(REGISTRY["broadcast_in_dim"], x,
                    shape=full[:position] + (1,) + full[position:], bdims=bdims)


REGISTRY["matmul"].batch = _batch_matmul
def _rows_2d(name: str, ndim: int) -> str:
    """The source of `name` (C order) with its leading axes merged into rows."""
    rows = " * ".join(f"{name}.shape[{k}]" for k in range(ndim - 1))
    return f"np.ascontiguousarray({name}).reshape(({rows}, {name}.shape[{ndim - 1}]))"


# `matmul_tn(a, g)`: a.reshape(-1, k).T @ g.reshape(-1, n), the gradient of the
# matrix in `rows @ matrix` (a dense layer on stacked rows, a convolution's
# patches @ kernel): one BLAS call over every row instead of a product per batch
# element then a sum over the batch. The leading axes stay symbolic.
def _matmul_tn_rule(avals, params, checks):
    a, g = avals
    if a.ndim < 2 or a.ndim != g.ndim:
        raise ShapeError(f"matmul_tn: operands of equal rank >= 2 expected, got "
                         f"{format_shape(a.shape)} and {format_shape(g.shape)}")
    for da, dg in zip(a.shape[:-1], g.shape[:-1]):
        join(da, dg, "matmul_tn", checks)
    return [AVal((a.shape[-1], g.shape[-1]), _same_dtype(avals, "matmul_tn"))]


def _matmul_tn_impl(a, g):
    return np.tensordot(a, g, axes=(list(range(a.ndim - 1)),) * 2)


def _matmul_tn_vjp(ct, out, a, g):
    return [ops.matmul(g, ops.swap_last(ct)), ops.matmul(a, ct)]


def _matmul_tn_jvp(tangents, out, a, g):
    ta, tg = tangents
    terms = [ops.bind(REGISTRY["matmul_tn"], *pair)
             for pair, t in (((ta, g), ta), ((a, tg), tg)) if t is not None]
    return None if not terms else terms[0] if len(terms) == 1 else ops.add(*terms)


def _emit_matmul_tn(ctx, out, ins, eqn):
    ndim = eqn.inputs[0].aval.ndim
    return [f"{out} = _rt.gemm(_rt.as_any({_rows_2d(ins[0], ndim)}.T), "
            f"_rt.as_any({_rows_2d(ins[1], ndim)}))"]


def _batch_matmul_tn(size, args, dims):
    """Per example: the products summed over the leading axes but the mapped one."""
    a, g = (x if d is None else ops.transpose(x, (d, *[k for k in range(x.ndim) if k != d]))
            for x, d in zip(args, dims))
    a, g = (ops.expand_dims(x, (0,)) if d is None else x for x, d in zip((a, g), dims))
    out = ops.matmul(ops.swap_last(a), g)  # (V, *leading, K, N)
    return ops.reduce_sum(out, tuple(range(1, out.ndim - 2))), 0


_array_op("matmul_tn", _matmul_tn_rule, _matmul_tn_impl, _emit_matmul_tn, _matmul_tn_vjp,
          _matmul_tn_jvp, blas=True, batch=_batch_matmul_tn)


def _cumsum_rule(avals, params, checks):
    (x,) = avals
    if not 0 <= params["axis"] < max(x.ndim, 1):
        raise ShapeError(f"cumsum: axis {params['axis']} is out of bounds for {x.ndim} dims")
    return [AVal(x.shape, x.dtype, x.weak)]


def _emit_cumsum(ctx, out, ins, eqn):
    """A running sum along `axis` (from the end when `reverse`): each element
    adds its predecessor's result."""
    aval, axis, reverse = eqn.outputs[0].aval, eqn.params["axis"], eqn.params["reverse"]
    dims = ctx.dims(aval)
    idx, lines, indent = ctx.loops(dims, 0)
    pad, at = " " * indent, list(idx)
    first, step = "0", "- 1"
    if reverse:
        at[axis] = ctx.fresh("j")
        lines.append(f"{pad}{at[axis]} = {dims[axis]} - 1 - {idx[axis]}")
        first, step = f"{dims[axis]} - 1", "+ 1"
    prev = list(at)
    prev[axis] = f"{at[axis]} {step}"
    here = ", ".join(at)
    return ([ctx.empty(out, eqn.outputs[0])] + lines
            + [f"{pad}if {at[axis]} == {first}:", f"{pad}    {out}[{here}] = {ins[0]}[{here}]",
               f"{pad}else:",
               f"{pad}    {out}[{here}] = {out}[{', '.join(prev)}] + {ins[0]}[{here}]"])


def _cumsum_impl(x, *, axis, reverse):
    x = np.asarray(x)
    if not reverse:
        return np.cumsum(x, axis=axis)
    return np.flip(np.cumsum(np.flip(x, axis), axis=axis), axis)


def cumsum(x, axis, reverse=False):
    return ops.bind(REGISTRY["cumsum"], x, axis=axis, reverse=reverse)


_array_op("cumsum", _cumsum_rule, _cumsum_impl, _emit_cumsum,
          lambda g, out, x, *, axis, reverse: [cumsum(g, axis, not reverse)], linear=True)
REGISTRY["cumsum"].batch = leading_batch_rule(
    "cumsum", lambda size, p: dict(p, axis=p["axis"] + 1))


def _argsort_rule(avals, params, checks):
    reject_complex(avals, "argsort", UNORDERED)
    (x,) = avals
    if x.ndim == 0:
        raise ShapeError("argsort: a 0-d array has nothing to sort")
    return [AVal(x.shape, np.dtype(np.int64))]


def _emit_argsort(ctx, out, ins, eqn):
    """A stable sort (merge sort) of each row along the last axis."""
    aval = eqn.outputs[0].aval
    if aval.ndim == 1:
        return [f"{out} = _rt.argsort(np.ascontiguousarray({ins[0]}))"]
    idx, lines, indent = ctx.loops(ctx.dims(aval)[:-1], 0)
    at = ", ".join(idx)
    return ([f"{out} = _rt.empty({ctx.shape(aval)}, np.int64)"] + lines
            + [" " * indent + f"{out}[{at}] = _rt.argsort(np.ascontiguousarray({ins[0]}[{at}]))"])


# Along the last axis, stable: equal elements keep their order (NumPy's default
# sort is not stable, so its order of ties is unspecified).
_array_op("argsort", _argsort_rule, lambda x: np.argsort(x, axis=-1, kind="stable"),
          _emit_argsort)
REGISTRY["argsort"].batch = leading_batch_rule("argsort")  # along the last axis


def _reshape_rule(avals, params, checks):
    (x,) = avals
    shape = params["shape"]
    if int(np.prod(concrete_shape(x.shape))) != int(np.prod(concrete_shape(shape))):
        raise ShapeError(f"reshape: cannot reshape {format_shape(x.shape)} into "
                         f"{format_shape(shape)}")
    return [AVal(tuple(shape), x.dtype, x.weak)]


_array_op("reshape", _reshape_rule, lambda x, *, shape: np.reshape(x, concrete_shape(shape)),
          lambda ctx, out, ins, eqn: [
              f"{out} = np.ascontiguousarray({ins[0]}).reshape({ctx.shape(eqn.outputs[0].aval)})"],
          lambda g, out, x, *, shape: [ops.reshape(g, x.aval.shape)], linear=True)
REGISTRY["reshape"].batch = leading_batch_rule(
    "reshape", lambda size, p: dict(p, shape=(size,) + tuple(p["shape"])))


def _concat_rule(avals, params, checks):
    axis = params["axis"]
    first = avals[0]
    _same_dtype(avals, "concatenate")
    if any(a.ndim != first.ndim for a in avals) or not 0 <= axis < first.ndim:
        raise ShapeError("concatenate: operands need the same number of dims, got "
                         + ", ".join(format_shape(a.shape) for a in avals))
    shape = list(first.shape)
    for a in avals[1:]:
        for k in range(first.ndim):
            if k != axis:
                shape[k] = join(shape[k], a.shape[k], "concatenate", checks)
    shape[axis] = sum(resolve(a.shape[axis]) for a in avals)
    return [AVal(tuple(shape), first.dtype)]


def _emit_concatenate(ctx, out, ins, eqn):
    axis, aval = eqn.params["axis"], eqn.outputs[0].aval
    lines = [ctx.empty(out, eqn.outputs[0])]
    sizes = [resolve(x.aval.shape[axis]) for x in eqn.inputs]
    if len(ins) >= 3 and aval.ndim <= 3 and all(type(n) is int for n in sizes):
        return lines + _put_pieces(out, ins, sizes, axis, aval.ndim)
    start = 0
    for name, x in zip(ins, eqn.inputs):
        placement = [(start, 1) if k == axis else (0, 1) for k in range(aval.ndim)]
        lines += copy_loops(ctx, out, name, x.aval, placement)
        start += resolve(x.aval.shape[axis])
    return lines


def _put_pieces(out, ins, sizes, axis, ndim) -> list[str]:
    """One runtime call per piece (`_rt.put<ndim>`, compiled once per machine)
    rather than a copy loop per piece, whose compile grows with the count."""
    perm = (axis, *(k for k in range(ndim) if k != axis))

    def front(name):  # the concatenated axis first
        return name if axis == 0 else f"{name}.transpose({perm!r})"

    starts = np.cumsum([0, *sizes[:-1]])
    return [f"_rt.put{ndim}(_rt.as_any({front(out)}), np.int64({start}), _rt.as_any({front(name)}))"
            for name, start in zip(ins, starts)]


def copy_loops(ctx, dst: str, src: str, aval, placement) -> list[str]:
    """Loops copying `src` (of type `aval`) to `dst[start + step * i, ...]`, one
    (start, step) per axis: explicit loops, which Numba compiles far faster than
    slice assignments."""
    idx, lines, indent = ctx.loops(ctx.dims(aval), 0)
    where = [i if (start, step) == (0, 1) else f"{start} + {step} * {i}"
             for i, (start, step) in zip(idx, placement)]
    return lines + [" " * indent + f"{dst}[{', '.join(where)}] = {src}[{', '.join(idx)}]"]


def _concat_vjp(g, out, *xs, axis):
    cts, start = [], 0
    for x in xs:
        size = resolve(x.aval.shape[axis])
        starts = tuple(start if k == axis else 0 for k in range(g.ndim))
        stops = tuple(start + size if k == axis else None for k in range(g.ndim))
        cts.append(ops.static_slice(g, starts, stops, (1,) * g.ndim, normalized=True))
        start += size
    return cts


_array_op("concatenate", _concat_rule, lambda *xs, axis: np.concatenate(xs, axis),
          _emit_concatenate, _concat_vjp,
          linear=True, strided_operands=True, pieces_along="axis")
REGISTRY["concatenate"].batch = lambda size, args, dims, *, axis: (
    ops.bind(REGISTRY["concatenate"], *all_front(size, args, dims), axis=axis + 1), 0)


def _gather_rule(avals, params, checks):
    x, *indices = avals
    axis = params["axis"]
    for idx in indices:
        if not np.issubdtype(idx.dtype, np.integer):
            raise TracerTypeError(f"indexing: index arrays must be integers, got {idx.dtype}")
    if axis + len(indices) > x.ndim:
        raise ShapeError(f"indexing: too many indices for {format_shape(x.shape)}")
    index_shape = broadcast_shapes([i.shape for i in indices], "indexing", checks)
    shape = x.shape[:axis] + index_shape + x.shape[axis + len(indices):]
    return [AVal(tuple(shape), x.dtype, x.weak)]


def _gather_impl(x, *indices, axis):
    return np.asarray(x)[(slice(None),) * axis + tuple(indices)]


_array_op("gather", _gather_rule, _gather_impl,
          lambda ctx, out, ins, eqn: _emit_indexed(ctx, out, ins, eqn, scatter=False),
          lambda g, out, x, *idx, axis: [ops.scatter_add(g, idx, axis, x.aval.shape)]
          + [None] * len(idx),
          lambda ts, out, x, *idx, axis: None if ts[0] is None else ops.gather(ts[0], idx, axis))


def _index_rank(indices, dims) -> int:
    return max(ndim(i) - (d is not None) for i, d in zip(indices, dims))


def _batched_indices(indices, dims, rank):
    return [i if d is None else with_unit_axes(move(i, d, 0), rank)
            for i, d in zip(indices, dims)]


def _batch_gather(size, args, dims, *, axis):
    """Batched indices index the batch axis too, with an iota."""
    (x, *indices), (dx, *di) = args, dims
    if all(d is None for d in di):
        return ops.bind(REGISTRY["gather"], move(x, dx, 0), *indices, axis=axis + 1), 0
    rank = _index_rank(indices, di)
    idx = _batched_indices(indices, di, rank)
    if dx is None:  # the indices' batch axis lands where the index axes go
        return ops.bind(REGISTRY["gather"], x, *idx, axis=axis), axis
    # batch axis just before the indexed ones, indexed by an iota
    x = move(move(x, dx, 0), 0, axis)
    return ops.bind(REGISTRY["gather"], x, iota(size, rank), *idx, axis=axis), axis


REGISTRY["gather"].batch = _batch_gather


def _emit_indexed(ctx, out, ins, eqn, scatter):
    """gather: out[i, j, t] = x[i, idx[j], t]; scatter_add: out[i, idx[j], t] += g[i, j, t].
    Negative indices wrap; out-of-range ones raise IndexError, never read outside."""
    axis = eqn.params["axis"]
    data, indices = eqn.inputs[0].aval, [a.aval for a in eqn.inputs[1:]]
    big = eqn.outputs[0].aval if scatter else data  # the array indexed by idx
    loop_aval = data if scatter else eqn.outputs[0].aval
    dims = ctx.dims(loop_aval)
    idx, lines, indent = ctx.loops(dims, 0)
    index_rank = loop_aval.ndim - (big.ndim - len(indices))  # axes the indices span
    mid = idx[axis:axis + index_rank]
    positions = []
    for name, ind in zip(ins[1:], indices):
        offset = index_rank - ind.ndim
        read = [("0" if is_one(ind.shape[k]) else mid[offset + k]) for k in range(ind.ndim)]
        pos = ctx.fresh("p")
        size = ctx.dim(big.shape[axis + len(positions)])
        lines += [" " * indent + line for line in (
            f"{pos} = {name}[{', '.join(read)}]" if read else f"{pos} = {name}",
            f"if {pos} < 0:", f"    {pos} += {size}",
            f"if {pos} < 0 or {pos} >= {size}:",
            f"    raise IndexError('index out of bounds in {eqn.prim.name} at "
            f"{eqn.location.replace(chr(39), '')}')")]
        positions.append(pos)
    big_index = ", ".join(idx[:axis] + positions + idx[axis + index_rank:])
    # 0-d values are scalars in kernels: no index, no array
    small = f"[{', '.join(idx)}]" if idx else ""
    if scatter:
        head = [f"{out} = _rt.full({ctx.shape(big)}, {ctx.dtype(big)}(0))"]
        body = f"{out}[{big_index}] += {ins[0]}{small}"
    elif idx:
        head = [f"{out} = _rt.empty({ctx.shape(loop_aval)}, {ctx.dtype(loop_aval)})"]
        body = f"{out}{small} = {ins[0]}[{big_index}]"
    else:
        head, body = [], f"{out} = {ins[0]}[{big_index}]"
    return head + lines + [" " * indent + body]


def _scatter_rule(avals, params, checks):
    g = avals[0]
    return [AVal(tuple(params["shape"]), g.dtype, g.weak)]


def _scatter_impl(g, *indices, axis, shape):
    out = np.zeros(concrete_shape(shape), dtype=np.asarray(g).dtype)
    np.add.at(out, (slice(None),) * axis + tuple(indices), g)
    return out


_array_op("scatter_add", _scatter_rule, _scatter_impl,
          lambda ctx, out, ins, eqn: _emit_indexed(ctx, out, ins, eqn, scatter=True),
          lambda g, out, x, *idx, axis, shape: [ops.gather(g, idx, axis)] + [None] * len(idx),
          lambda ts, out, x, *idx, axis, shape: None if ts[0] is None
          else ops.scatter_add(ts[0], idx, axis, shape))


def _batch_scatter_add(size, args, dims, *, axis, shape):
    (g, *indices), (dg, *di) = args, dims
    if all(d is None for d in di):
        return ops.bind(REGISTRY["scatter_add"], move(g, dg, 0), *indices, axis=axis + 1,
                        shape=(size,) + tuple(shape)), 0
    rank = _index_rank(indices, di)
    idx = _batched_indices(indices, di, rank)
    g = move(materialize(g, dg, size), 0, axis)
    full = tuple(shape)
    out_shape = full[:axis] + (size,) + full[axis:]
    return ops.bind(REGISTRY["scatter_add"], g, iota(size, rank), *idx, axis=axis,
                    shape=out_shape), axis


REGISTRY["scatter_add"].batch = _batch_scatter_add


def _embed_impl(g, *, shape, starts, steps):
    out = np.zeros(concrete_shape(shape), dtype=np.asarray(g).dtype)
    g = np.asarray(g)
    out[tuple(_python_slice(a, c, n) for a, c, n in zip(starts, steps, g.shape))] = g
    return out


def _emit_embed(ctx, out, ins, eqn):
    aval, g = eqn.outputs[0].aval, eqn.inputs[0].aval
    placement = list(zip(eqn.params["starts"], eqn.params["steps"]))
    return ([f"{out} = _rt.full({ctx.shape(aval)}, {ctx.dtype(aval)}(0))"]
            + copy_loops(ctx, out, ins[0], g, placement))


def _embed_vjp(g, out, x, *, shape, starts, steps):
    stops = []
    for a, c, n in zip(starts, steps, x.aval.shape):
        n = resolve(n)
        if type(n) is not int:  # a symbolic size is only ever sliced whole
            stops.append(None)
        else:
            stops.append(a + c * (n - 1) + (1 if c > 0 else -1))
    return [ops.static_slice(g, starts, tuple(stops), steps, normalized=True)]


_array_op("slice_embed",
          lambda avals, params, checks: [AVal(tuple(params["shape"]), avals[0].dtype,
                                              avals[0].weak)],
          _embed_impl, lambda ctx, out, ins, eqn: _emit_embed(ctx, out, ins, eqn),
          _embed_vjp, linear=True)
REGISTRY["slice_embed"].batch = leading_batch_rule(
    "slice_embed", lambda size, p: dict(p, shape=(size,) + tuple(p["shape"]),
                                        starts=(0,) + tuple(p["starts"]),
                                        steps=(1,) + tuple(p["steps"])))


def _dynamic_start(start, n, size):
    """The offset of NumPy's x[start:start + size] on an axis of n; IndexError
    where NumPy would return fewer than `size` elements."""
    start = int(start)
    offset = start + n if start < 0 else start
    if offset < 0 or (start + size >= 0 if start < 0 else offset + size > n):
        raise IndexError(f"dynamic slice [{start}:{start + size}] of an axis of {n} is not "
                         f"{size} elements long")
    return offset


def _dynamic_rule(avals, params, checks):
    x, start = avals[:2]
    if start.ndim or not np.issubdtype(start.dtype, np.integer):
        raise TracerTypeError(f"dynamic_slice: the start must be an integer scalar, got {start}")
    shape = list(params.get("shape") or x.shape)
    if "shape" not in params:
        shape[params["axis"]] = params["size"]
    return [AVal(tuple(shape), x.dtype, x.weak)]


def _dynamic_where(axis, ndim, offset, size):
    return tuple(slice(offset, offset + size) if k == axis else slice(None) for k in range(ndim))


def _dynamic_impl(x, start, *, axis, size):
    x = np.asarray(x)
    offset = _dynamic_start(start, x.shape[axis], size)
    return x[_dynamic_where(axis, x.ndim, offset, size)]


def _dynamic_embed_impl(g, start, *, axis, shape):
    g = np.asarray(g)
    out = np.zeros(concrete_shape(shape), g.dtype)
    size = g.shape[axis]
    out[_dynamic_where(axis, g.ndim, _dynamic_start(start, out.shape[axis], size), size)] = g
    return out


def _emit_dynamic(ctx, out, ins, eqn, embed):
    axis = eqn.params["axis"]
    big = eqn.outputs[0].aval if embed else eqn.inputs[0].aval
    small = eqn.inputs[0].aval if embed else eqn.outputs[0].aval
    n, size = ctx.dim(big.shape[axis]), ctx.dim(small.shape[axis])
    offset = ctx.fresh("s")
    where = ", ".join(f"{offset}:{offset} + {size}" if k == axis else ":"
                      for k in range(big.ndim))
    message = f"dynamic slice out of range in {eqn.prim.name} at {eqn.location}"
    lines = [f"{offset} = {ins[1]}",
             f"if {offset} < 0:",
             f"    if {offset} + {n} < 0 or {offset} + {size} >= 0:",
             f"        raise IndexError({message!r})",
             f"    {offset} += {n}",
             f"elif {offset} + {size} > {n}:",
             f"    raise IndexError({message!r})"]
    if embed:
        return lines + [f"{out} = _rt.full({ctx.shape(big)}, {ctx.dtype(big)}(0))",
                        f"{out}[{where}] = {ins[0]}"]
    return lines + [f"{out} = {ins[0]}[{where}]"]


_array_op("dynamic_slice", _dynamic_rule, _dynamic_impl,
          lambda ctx, out, ins, eqn: _emit_dynamic(ctx, out, ins, eqn, embed=False),
          lambda g, out, x, start, *, axis, size: [
              ops.bind(REGISTRY["dynamic_slice_embed"], g, start, axis=axis,
                       shape=tuple(x.aval.shape)), None],
          lambda ts, out, x, start, *, axis, size: None if ts[0] is None else ops.bind(
              REGISTRY["dynamic_slice"], ts[0], start, axis=axis, size=size))
_array_op("dynamic_slice_embed", _dynamic_rule, _dynamic_embed_impl,
          lambda ctx, out, ins, eqn: _emit_dynamic(ctx, out, ins, eqn, embed=True),
          lambda g, out, x, start, *, axis, shape: [
              ops.bind(REGISTRY["dynamic_slice"], g, start, axis=axis,
                       size=resolve(x.aval.shape[axis])), None],
          lambda ts, out, x, start, *, axis, shape: None if ts[0] is None else ops.bind(
              REGISTRY["dynamic_slice_embed"], ts[0], start, axis=axis, shape=shape))


def _window(start, size_):
    """The positions start, start + 1, ..., start + size_ - 1 per example."""
    return ops.add(ops.expand_dims(ops.convert(start, np.int64), (1,)),
                   np.arange(size_, dtype=np.int64)[None, :])


def _batch_dynamic_slice(n, args, dims, /, *, axis, size):
    """A batched start reads a window per example: a gather."""
    (x, start), (dx, ds) = args, dims
    if ds is None:
        return ops.bind(REGISTRY["dynamic_slice"], move(x, dx, 0), start, axis=axis + 1,
                        size=size), 0
    return _batch_gather(n, [x, _window(move(start, ds, 0), size)], [dx, 0], axis=axis)


def _batch_dynamic_embed(size, args, dims, *, axis, shape):
    (g, start), (dg, ds) = args, dims
    if ds is None:
        return ops.bind(REGISTRY["dynamic_slice_embed"], move(g, dg, 0), start, axis=axis + 1,
                        shape=(size,) + tuple(shape)), 0
    width = resolve(unbatched_aval(ops.aval_of(g), dg).shape[axis])
    return _batch_scatter_add(size, [g, _window(move(start, ds, 0), width)], [dg, 0],
                              axis=axis, shape=shape)


REGISTRY["dynamic_slice"].batch = _batch_dynamic_slice
REGISTRY["dynamic_slice_embed"].batch = _batch_dynamic_embed


def _known_size(eqn):
    """A size fixed at trace time is a constant."""
    sizes = [resolve(eqn.inputs[0].aval.shape[a]) for a in eqn.params["axes"]]
    if all(type(s) is int for s in sizes):
        return Literal(np.prod(sizes), eqn.outputs[0].aval)
    return None


def _dimsize_rule(avals, params, checks):
    return [AVal((), np.dtype(params["dtype"]))]


def _dimsize_impl(x, *, axes, dtype):
    shape = np.shape(x)
    return np.asarray(np.prod([shape[a] for a in axes]), dtype=dtype)


_array_op("dimsize", _dimsize_rule, _dimsize_impl,
          lambda ctx, out, ins, eqn: [
              f"{out} = {ctx.dtype(eqn.outputs[0].aval)}("
              + " * ".join(ctx.dim(eqn.inputs[0].aval.shape[a]) for a in eqn.params["axes"])
              + ")"], shape_only=True, simplify=_known_size)
REGISTRY["dimsize"].impl_source = lambda eqn, lazy, sizes: (  # the sizes, not np.prod
    f"np.{np.dtype(eqn.params['dtype']).name}("
    + " * ".join(sizes(eqn.inputs[0].aval.shape[a]) for a in eqn.params["axes"]) + ")")


def _batch_dimsize(size, args, dims, *, axes, dtype):
    """Sizes are the same for every example: the result is unbatched."""
    return ops.bind(REGISTRY["dimsize"], move(args[0], dims[0], 0), axes=shift_axes(axes),
                    dtype=dtype), None


REGISTRY["dimsize"].batch = _batch_dimsize
