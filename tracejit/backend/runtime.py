"""Scalar math helpers called from tracejit-generated Numba kernels.

Why this module exists: the llvmlite wheels we run on have no SVML, so
``np.exp``/``np.tanh``/``np.log`` inside a loop are scalar libm calls that stop
LLVM from vectorising the loop.  The functions here are short polynomial
approximations built only from arithmetic, ``llvm.rint``, ``llvm.fma``,
integer bit tricks and conditional expressions (which LLVM turns into
selects: no early returns), all of which LLVM vectorises once the function
is inlined into the caller's loop.

Every function is generic over float64 and float32: Numba compiles one
specialisation per argument type, constants are cast to the argument's type
(``_c``) so float32 code never silently becomes float64, and where the two
precisions need different constants or polynomials the choice is made with
``_is32``, which folds to a compile-time constant.

Calling conventions the code generator must respect (see the benchmark in
``benchmarks/bench_fastmath.py`` for the measurements behind them):

* The helpers are ``njit`` functions without Python wrappers (``callee``),
  compiled with their own flags (``_JIT``); LLVM inlines them into the
  caller.  Their instructions keep those flags, so a caller may use
  ``reassoc`` for its reductions without that licence leaking into (and
  breaking) the range reductions in here.
* Callers may use 'reassoc' and 'contract' (the kernels' set, codegen.FASTMATH)
  but never ``nnan``/``ninf``: the NaN/inf handling below is made of
  comparisons that those flags allow LLVM to delete.
* Callers should use ``error_model='numpy'``; the Python error model puts a
  zero-division check (an exit from the loop) in front of every division.
* Loops with a float reduction (``s += ...``) vectorise only if the caller
  has 'reassoc'; map loops vectorise with no fastmath at all.
* The helpers are disk-cached: compiling a kernel that uses exp/tanh/log/sigmoid
  drops from ~1.8 s to ~0.2 s once they are cached.  Numba's own cache is off
  (``cache=False``); tracejit.cache gives every dispatcher here its verified
  cache in the tracejit cache directory (numba_cache.py).  A cached *kernel*
  embeds the helpers' machine code, so a kernel cache key includes this file's
  contents.
"""

import math

import numpy as np
from llvmlite import binding as llvm_binding
from llvmlite import ir
from numba import types
from numba.core.registry import CPUDispatcher
from numba.extending import intrinsic, overload

from ..core.errors import NonFiniteError, SizeMismatch  # raised by kernels' checks
from . import pool

__all__ = [
    "NonFiniteError",
    "debug_check",
    "debug_check_parts",
    "SizeMismatch",
    "as_scalar",
    "as_any",
    "cdiv",
    "dot",
    "empty",
    "erf",
    "exp",
    "expm1",
    "fft",
    "full",
    "gemm",
    "grow",
    "log",
    "log1p",
    "maximum",
    "minimum",
    "nest",
    "put1",
    "put2",
    "put3",
    "round_half_even",
    "sigmoid",
    "sign",
    "tanh",
    "threefry_bits",
    "threefry_uniform",
]

# Flags for the helpers' own instructions.  'contract' lets LLVM fuse a*b+c
# into an FMA (never less accurate).  No 'reassoc': it would let LLVM fold the
# hi/lo splitting tricks away.  No 'nnan'/'ninf': the special-value selects
# are comparisons against NaN/inf.  error_model='numpy' because the Python
# model adds a branch (a loop exit) before every division.  Disk-cached by
# tracejit.cache, verified (the helpers are most of a small kernel's compile
# time; everything they depend on is in this file, whose hash stamps the cache).
_JIT = dict(fastmath={"contract"}, error_model="numpy", cache=False)


class _CompiledOnly(CPUDispatcher):
    """A function called only from compiled code (kernels, nests, other helpers):
    compiled without the CPython and cfunc wrappers, which Numba otherwise builds and
    optimises for every signature (a quarter of a small kernel's compile). Called from
    Python, such a function would crash the process (numba#2541): refused instead."""

    def __call__(self, *args, **kwargs):
        raise TypeError(f"tracejit.backend.runtime.{self.py_func.__name__} is called only "
                        "from compiled code (it has no Python wrapper)")


def callee(**options):
    """`njit` for a function called only from compiled code (see `_CompiledOnly`)."""
    return _decorate(_CompiledOnly, options)


class _NotInlined(_CompiledOnly):
    """A helper whose callers keep a call to it: its machine code is linked into each
    caller (as any callee's) but marked `noinline`, so LLVM does not optimise a copy of
    it at every call site. For helpers called many times per kernel with work enough
    that a call costs nothing (a rolled loop's 16 weight copies, inlined, made one
    nest's compile 1.3 s)."""

    def add_overload(self, cres):
        # The module callers link (and the disk cache keeps), made once per library.
        module = cres.library._get_module_for_linking()
        module.get_function(cres.fndesc.mangled_name).add_function_attribute("noinline")
        super().add_overload(cres)


def called(**options):
    """`callee`, never inlined into its callers (see `_NotInlined`)."""
    return _decorate(_NotInlined, options)


def _decorate(kind, options):
    cache = options.pop("cache", False)

    def wrap(fn):
        dispatcher = kind(py_func=fn, locals={}, targetoptions={
            **options, "nopython": True, "no_cpython_wrapper": True, "no_cfunc_wrapper": True})
        if cache:
            dispatcher.enable_caching()
        return dispatcher

    return wrap

_FLOATS = (types.float32, types.float64)


# --------------------------------------------------------------------------
# Intrinsics: tiny LLVM snippets that Numba has no spelling for.
# --------------------------------------------------------------------------


@intrinsic
def _is32(typingctx, x):
    """True when x is float32, as an LLVM constant, so branches on it fold."""

    def codegen(context, builder, sig, args):
        return context.get_constant(types.boolean, x == types.float32)

    return types.boolean(x), codegen


@intrinsic
def _c(typingctx, like, value):
    """`value` converted to the type of `like` (a typed constant).

    A Python float literal is float64 in Numba and would promote float32
    arithmetic; casting a literal here is folded by LLVM at compile time.
    """

    def codegen(context, builder, sig, args):
        return context.cast(builder, args[1], sig.args[1], like)

    return like(like, value), codegen


@intrinsic
def _bits(typingctx, x):
    """The IEEE bits of a float as a signed integer of the same width."""
    if x not in _FLOATS:
        return None
    ity = types.int32 if x == types.float32 else types.int64

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(x.bitwidth))

    return ity(x), codegen


@intrinsic
def _from_bits(typingctx, like, i):
    """A float of like's type whose bits are the low bits of integer i.

    Numba widens int32 arithmetic to int64, so i may be wider than the float;
    truncation keeps exactly the bits we built.
    """
    if like not in _FLOATS or not isinstance(i, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        ity = ir.IntType(like.bitwidth)
        v = args[1]
        if i.bitwidth > like.bitwidth:
            v = builder.trunc(v, ity)
        elif i.bitwidth < like.bitwidth:
            v = builder.sext(v, ity)
        return builder.bitcast(v, context.get_value_type(like))

    return like(like, i), codegen


@intrinsic
def _to_int(typingctx, x):
    """Integral float -> int64, going through int32.

    float64 -> int32 converts in vector registers on plain AVX2 (cvttpd2dq),
    float64 -> int64 needs AVX-512DQ; our values are tiny exponents anyway.
    """
    if x not in _FLOATS:
        return None

    def codegen(context, builder, sig, args):
        i32 = builder.fptosi(args[0], ir.IntType(32))
        return builder.sext(i32, ir.IntType(64))

    return types.int64(x), codegen


@intrinsic
def _to_float(typingctx, like, i):
    """Small integer -> float of like's type, via int32 (vectorises on AVX2)."""
    if like not in _FLOATS or not isinstance(i, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        v = args[1]
        if i.bitwidth > 32:
            v = builder.trunc(v, ir.IntType(32))
        elif i.bitwidth < 32:
            v = builder.sext(v, ir.IntType(32))
        return builder.sitofp(v, context.get_value_type(like))

    return like(like, i), codegen


@intrinsic
def _fma(typingctx, a, b, c):
    """a*b + c rounded once (llvm.fma).

    An intrinsic call is opaque to LLVM's reassociation, so a range reduction
    written with it survives a caller compiled with 'reassoc'.
    """
    if a not in _FLOATS or b != a or c != a:
        return None

    def codegen(context, builder, sig, args):
        return builder.fma(*args)

    return a(a, b, c), codegen


# --------------------------------------------------------------------------
# Shared building blocks for exp-like functions.
# --------------------------------------------------------------------------

# Near-minimax coefficients (Chebyshev fit, computed with mpmath) of
# q(r) = (e^r - 1 - r) / r^2 on |r| <= ln2/2, lowest degree first.  The fit
# error times r^2 is 1.4e-17 (float64) and 8e-9 (float32) relative.
_Q64 = (
    0.5000000000000001,
    0.16666666666666669,
    0.041666666666624094,
    0.00833333333333006,
    0.0013888888917230724,
    0.00019841269863066696,
    2.4801521269532122e-05,
    2.7557268439678e-06,
    2.7620101012098e-07,
    2.5100395159429243e-08,
)
_Q32 = (0.5, 0.16666576266288757, 0.041666556149721146, 0.008363185450434685, 0.0013926191022619605)

# ln2 split Cody-Waite style: k*_LN2_HI is exact for every k we produce
# (|k| < 2^11 needs <= 42 significant bits in float64; |k| < 2^8 needs <= 16
# in float32), so x - k*ln2 loses nothing to cancellation.
_LN2_HI64 = 0.6931471805601177
_LN2_LO64 = -1.7239444525614835e-13
_LN2_HI32 = 0.693145751953125
_LN2_LO32 = 1.428606765330187e-06


@callee(**_JIT)
def _expm1_poly(r):
    """e^r - 1 for |r| <= ln2/2, written r + r^2*q(r) so tiny r stays exact."""
    if _is32(r):
        q = _c(r, _Q32[4])
        q = _c(r, _Q32[3]) + r * q
        q = _c(r, _Q32[2]) + r * q
        q = _c(r, _Q32[1]) + r * q
        q = _c(r, _Q32[0]) + r * q
        return r + (r * r) * q
    # Estrin-style pairing: shorter dependency chains than Horner; measured
    # ~10% faster in a vectorised exp/tanh loop.  (float32's degree 6 is
    # short enough for Horner.)
    r2 = r * r
    r4 = r2 * r2
    a = _c(r, _Q64[0]) + r * _c(r, _Q64[1])
    b = _c(r, _Q64[2]) + r * _c(r, _Q64[3])
    c = _c(r, _Q64[4]) + r * _c(r, _Q64[5])
    d = _c(r, _Q64[6]) + r * _c(r, _Q64[7])
    e = _c(r, _Q64[8]) + r * _c(r, _Q64[9])
    q = (a + r2 * b) + r4 * ((c + r2 * d) + r4 * e)
    return r + r2 * q


@callee(**_JIT)
def _reduce(x):
    """Split x = k*ln2 + r with k integral and |r| <= ln2/2 (x finite)."""
    log2e = _c(x, 1.4426950408889634)
    hi = _c(x, _LN2_HI32 if _is32(x) else _LN2_HI64)
    lo = _c(x, _LN2_LO32 if _is32(x) else _LN2_LO64)
    # rint, not the "add 1.5*2^52" trick: a caller's 'reassoc' folds that away.
    k = np.rint(x * log2e)
    r = _fma(-k, hi, x)
    r = _fma(-k, lo, r)
    return k, r


@callee(**_JIT)
def _scale(p, k):
    """p * 2^k for p in [0.7, 1.42] and integral k in [-1077, 1024].

    The exponent is added to p's bits as an integer (exact, no libm ldexp).
    Results that would be subnormal get k+64 first and a final multiply by
    2^-64, so the only rounding happens in that multiply: subnormal results are
    correctly rounded from p rather than flushed.
    """
    mant = 23 if _is32(p) else 52
    tiny = k < (-125 if _is32(p) else -1021)
    shift = 32 if _is32(p) else 64
    kk = _to_int(k) + (shift if tiny else 0)
    y = _from_bits(p, _bits(p) + (kk << mant))
    undo = _c(p, 2.3283064365386963e-10 if _is32(p) else 5.421010862427522e-20)
    return y * (undo if tiny else _c(p, 1.0))


@callee(**_JIT)
def _exp_finite(x):
    """e^x for x already clamped to the finite working range."""
    k, r = _reduce(x)
    return _scale(_c(x, 1.0) + _expm1_poly(r), k)


@callee(**_JIT)
def _pow2(like, k):
    """2^k in like's type for integral k in the normal exponent range."""
    mant = 23 if _is32(like) else 52
    bias = 127 if _is32(like) else 1023
    return _from_bits(like, (_to_int(k) + bias) << mant)


@callee(**_JIT)
def _expm1_finite(x):
    """e^x - 1 for x already clamped to [-40, ln(max float)]."""
    k, r = _reduce(x)
    pm1 = _expm1_poly(r)
    # e^x - 1 = 2^k*pm1 + (2^k - 1).  For |k| <= 53 both operands are exact,
    # so the FMA rounds once: ~1 ulp, where (1 + pm1)*2^k - 1 lost up to 4.
    # k == 0 gives pm1 itself, relatively exact for tiny x.  Above k = 60 the
    # "- 1" is invisible; the excess exponent goes into a second exact factor
    # so that k = 1024 (x near 709.78) does not overflow 2^k.
    kc = k if k < _c(x, 60.0) else _c(x, 60.0)
    s = _pow2(x, kc)
    return _fma(s, pm1, s - _c(x, 1.0)) * _pow2(x, k - kc)


@callee(**_JIT)
def _clamp(x, lo, hi):
    """Clamp x to [lo, hi]; NaN maps to hi so no NaN reaches integer code."""
    x = x if x < hi else hi
    return x if x > lo else lo


# Largest x with a finite e^x (checked against mpmath: e^hi < max < e^next).
_EXP_HI64 = 709.782712893384
_EXP_HI32 = 88.72283172607422
# Below these e^x rounds to 0 (float64 subnormals end at 2^-1074).
_EXP_LO64 = -746.0
_EXP_LO32 = -104.0


# --------------------------------------------------------------------------
# Public exp-like functions.
# --------------------------------------------------------------------------


@callee(**_JIT)
def exp(x):
    """e^x like np.exp: inf above ~709.78, 0 below ~-745.1, NaN stays NaN."""
    hi = _c(x, _EXP_HI32 if _is32(x) else _EXP_HI64)
    lo = _c(x, _EXP_LO32 if _is32(x) else _EXP_LO64)
    y = _exp_finite(_clamp(x, lo, hi))
    y = _c(x, np.inf) if x > hi else y
    return x if x != x else y


@callee(**_JIT)
def expm1(x):
    """e^x - 1 like np.expm1, relatively accurate for tiny x."""
    hi = _c(x, _EXP_HI32 if _is32(x) else _EXP_HI64)
    # e^-40 < half an ulp of 1 in float64 (e^-18 in float32): result is -1.
    lo = _c(x, -18.0 if _is32(x) else -40.0)
    y = _expm1_finite(_clamp(x, lo, hi))
    y = _c(x, np.inf) if x > hi else y
    # Passing x through for NaN, ±0 and tiny x keeps NaN and the sign of zero.
    tiny = _c(x, 1e-30)
    return y if abs(x) > tiny else x


@callee(**_JIT)
def exp2(x):
    """2^x like np.exp2: 2^k e^(f ln2) with k = rint(x) and f = x - k exact, so only
    the small product f ln2 rounds (exp(x ln2) amplified that rounding |x ln2| times)."""
    hi = _c(x, 128.0 if _is32(x) else 1024.0)  # 2^hi overflows; 2^lo rounds to 0
    lo = _c(x, -151.0 if _is32(x) else -1076.0)
    xc = _clamp(x, lo, hi)
    k = np.rint(xc)
    r = (xc - k) * _c(x, 0.6931471805599453)
    y = _scale(_c(x, 1.0) + _expm1_poly(r), k)
    y = _c(x, np.inf) if x >= hi else y
    return x if x != x else y


@callee(**_JIT)
def cbrt(x):
    """np.cbrt, polished by one Newton step whose residual y^3 - x is formed
    exactly with FMAs (Numba's cbrt alone is up to ~3.5 ulps off). Tiny x are
    scaled by 2^(3m) first so that the residual stays a normal number."""
    tiny = abs(x) < _c(x, 1e-30 if _is32(x) else 1e-270)
    up = _c(x, 2.0 ** 48 if _is32(x) else 2.0 ** 300)
    down = _c(x, 2.0 ** -16 if _is32(x) else 2.0 ** -100)
    xs = x * up if tiny else x
    y = np.cbrt(xs)
    square = y * y
    square_lo = _fma(y, y, -square)
    residual = _fma(square, y, -xs) + square_lo * y
    polished = y - residual / (_c(x, 3.0) * square)
    y = polished if (y != _c(x, 0.0) and abs(y) < _c(x, np.inf)) else y
    return y * down if tiny else y


@callee(**_JIT)
def erf(x):
    """`math.erf` in the argument's precision (Numba's gives float64)."""
    return _c(x, math.erf(x))


@callee(**_JIT)
def tanh(x):
    """tanh like np.tanh, from expm1 so it stays relatively exact near 0.

    tanh|x| = em1 / (em1 + 2) with em1 = e^(2|x|) - 1 >= 0, so nothing cancels;
    |x| is clamped at 20 where tanh is 1 to the last bit in both precisions.
    """
    a = abs(x)
    a = a if a < _c(x, 20.0) else _c(x, 20.0)
    em1 = _expm1_finite(a + a)
    t = np.copysign(em1 / (em1 + _c(x, 2.0)), x)
    return x if x != x else t


@callee(**_JIT)
def sigmoid(x):
    """Logistic 1 / (1 + e^-x), relatively accurate on both tails.

    With e = e^-|x| <= 1: 1/(1+e) for x >= 0 and e/(1+e) for x < 0; neither
    form overflows or cancels, and e^x underflows gracefully for x << 0.
    """
    lo = _c(x, _EXP_LO32 if _is32(x) else _EXP_LO64)
    e = _exp_finite(_clamp(-abs(x), lo, _c(x, 0.0)))
    s = _c(x, 1.0) / (_c(x, 1.0) + e)
    y = s if x >= _c(x, 0.0) else e * s
    return x if x != x else y


# --------------------------------------------------------------------------
# Logarithms.
# --------------------------------------------------------------------------

# Near-minimax g(z), z = s^2, s = f/(2+f), with log(1+f) = 2s + s*z*g(z), on
# z <= ((sqrt2-1)/(sqrt2+1))^2; relative fit error 5e-18 (f64), 3e-9 (f32).
_G64 = (
    0.666666666666667,
    0.3999999999989827,
    0.28571428626533335,
    0.22222211043822487,
    0.18182895746801428,
    0.1533150172120742,
    0.1461916477718642,
)
_G32 = (0.6666668653488159, 0.399887353181839, 0.2958202362060547)


@callee(**_JIT)
def _log_g(z):
    """The polynomial g(z) above, in z's precision."""
    if _is32(z):
        return _c(z, _G32[0]) + z * (_c(z, _G32[1]) + z * _c(z, _G32[2]))
    z2 = z * z
    a = _c(z, _G64[0]) + z * _c(z, _G64[1])
    b = _c(z, _G64[2]) + z * _c(z, _G64[3])
    c = _c(z, _G64[4]) + z * _c(z, _G64[5])
    return (a + z2 * b) + (z2 * z2) * (c + z2 * _c(z, _G64[6]))


@callee(**_JIT)
def _log_split(u):
    """Write u = 2^k * m with m in [sqrt(1/2), sqrt(2)) using integer ops.

    Subtracting the bits of sqrt(1/2) before the shift moves the split point
    from 1 to sqrt(1/2), so |m - 1| <= 0.42 and s = f/(2+f) stays inside the
    polynomial's range.  u must be a positive normal number.
    """
    mant = 23 if _is32(u) else 52
    off = 0x3F3504F3 if _is32(u) else 0x3FE6A09E667F3BCD
    ib = _bits(u)
    k = (ib - off) >> mant
    return k, _from_bits(u, ib - (k << mant))


@callee(**_JIT)
def _log_parts(f, k, c):
    """log(2^k * (1 + f)) + c for |f| <= 0.42, with c a tiny correction.

    log(1+f) = f - hfsq + s*(hfsq + z*g(z)) (an identity, s = f/(2+f)):
    the leading term f is exact and the rest is a small correction, so the
    result is accurate to ~1 ulp.
    """
    hi = _c(f, _LN2_HI32 if _is32(f) else _LN2_HI64)
    lo = _c(f, _LN2_LO32 if _is32(f) else _LN2_LO64)
    kf = _to_float(f, k)
    s = f / (_c(f, 2.0) + f)
    z = s * s
    hfsq = _c(f, 0.5) * f * f
    low = s * (hfsq + z * _log_g(z)) + (kf * lo + c)
    return kf * hi + (f - (hfsq - low))


@callee(**_JIT)
def _log_special(x, y):
    """Apply np.log's special values: log(0) = -inf, log(<0) = NaN, inf, NaN."""
    y = x if not (x < _c(x, np.inf)) else y
    y = _c(x, -np.inf) if x == _c(x, 0.0) else y
    return _c(x, np.nan) if x < _c(x, 0.0) else y


@callee(**_JIT)
def log(x):
    """Natural log like np.log, including subnormal inputs."""
    # Subnormals have no implicit leading bit; scale them into the normal
    # range first and take the scale back out of the exponent.
    tiny = x < _c(x, 1.1754943508222875e-38 if _is32(x) else 2.2250738585072014e-308)
    big = _c(x, 33554432.0 if _is32(x) else 18014398509481984.0)  # 2^25, 2^54
    xs = x * big if tiny else x
    k, m = _log_split(xs)
    k = k - ((25 if _is32(x) else 54) if tiny else 0)
    y = _log_parts(m - _c(x, 1.0), k, _c(x, 0.0))
    return _log_special(x, y)


@callee(**_JIT)
def log1p(x):
    """log(1 + x) like np.log1p, relatively accurate for tiny x."""
    u = _c(x, 1.0) + x
    k, m = _log_split(u)
    # k == 0: u = 1 + f with f = x exactly, so use x itself (no rounding).
    # Otherwise correct for the rounding of 1 + x: log(u) + (x - (u-1))/u.
    f = x if k == 0 else m - _c(x, 1.0)
    c = _c(x, 0.0) if k == 0 else (x - (u - _c(x, 1.0))) / u
    y = _log_parts(f, k, c)
    y = _log_special(u, y)
    # NaN, ±0 and tiny x: log1p(x) == x to the last bit; keeps -0.0.
    return y if abs(x) > _c(x, 1e-30) else x


# --------------------------------------------------------------------------
# NaN-propagating helpers with NumPy semantics.
# --------------------------------------------------------------------------


@callee(**_JIT)
def debug_check(x, index, mode):
    """`x`, after raising NonFiniteError(index, kind) if it is a NaN (mode bit 1) or an
    infinity (bit 2): tracejit.config.debug_nans / debug_infs."""
    if mode & 1 and x != x:
        raise NonFiniteError(index, 0)
    if mode & 2 and (x == np.inf or x == -np.inf):
        raise NonFiniteError(index, 1)
    return x


@callee(**_JIT)
def debug_check_parts(z, index, mode):
    """`debug_check` of a complex value: of each of its parts."""
    debug_check(z.real, index, mode)
    debug_check(z.imag, index, mode)
    return z


@callee(**_JIT)
def maximum(a, b):
    """np.maximum: NaN if either is NaN; on a tie (e.g. ±0) returns b."""
    return a if (a > b or a != a) else b


@callee(**_JIT)
def minimum(a, b):
    """np.minimum: NaN if either is NaN; on a tie (e.g. ±0) returns b."""
    return a if (a < b or a != a) else b


@callee(**_JIT)
def sign(x):
    """np.sign: -1, 0 or 1 in x's type; NaN stays NaN, sign(-0.0) is +0.0."""
    s = _c(x, 1) if x > _c(x, 0) else _c(x, 0)
    s = _c(x, -1) if x < _c(x, 0) else s
    return x if x != x else s


@callee(**_JIT)
def round_half_even(x):
    """np.round(x): nearest integer, ties to even (llvm.rint, vectorises)."""
    return np.rint(x)


@callee(**_JIT)
def cdiv(a, b):
    """a / b for complex numbers as NumPy divides them (Smith's algorithm, no
    overflow in |b|^2): a zero divisor gives inf or NaN where Numba's `/` raises
    ZeroDivisionError. The result has a's precision."""
    ar, ai, br, bi = a.real, a.imag, b.real, b.imag
    abs_br, abs_bi = abs(br), abs(bi)
    if abs_br >= abs_bi:
        if abs_br == 0 and abs_bi == 0:
            return _c(a, complex(ar / abs_br, ai / abs_br))
        rat = bi / br
        scl = _c(br, 1.0) / (br + bi * rat)
        return _c(a, complex((ar + ai * rat) * scl, (ai - ar * rat) * scl))
    rat = br / bi
    scl = _c(br, 1.0) / (bi + br * rat)
    return _c(a, complex((ar * rat + ai) * scl, (ai * rat - ar) * scl))


# --------------------------------------------------------------------------
# Argument normalisation.
# --------------------------------------------------------------------------


def as_scalar(x):
    """A 0-d argument as a scalar: a 0-d array's element, or the scalar itself.
    The IR does not tell 0-d arrays from scalars, the kernel's argument types do."""
    return x[()] if isinstance(x, np.ndarray) else x


@overload(as_scalar)
def _as_scalar_typed(x):
    if isinstance(x, types.Array):
        return lambda x: x[()]
    return lambda x: x


# --------------------------------------------------------------------------
# Arrays: big ones on recycled, already-faulted blocks (pool.py).
# --------------------------------------------------------------------------

POOL_MIN_BYTES = pool.MIN_BYTES  # arrays this large or larger come from the pool
pool.install()


def _dtype_of(dtype):
    if isinstance(dtype, types.DType):
        return dtype.dtype
    if isinstance(dtype, types.NumberClass):
        return dtype.instance_type
    return None


@intrinsic
def empty(typingctx, shape, dtype):
    """`np.empty(shape, dtype)` (C order) for kernels: an array of at least
    POOL_MIN_BYTES lives on a block of the buffer pool, which gets it back, already
    faulted, once no array or view over it is left (pool.py); smaller ones as np.empty."""
    arrtype = _new_array_type(shape, _dtype_of(dtype))
    if arrtype is None:
        return None

    def codegen(context, builder, sig, args):
        return _allocate(context, builder, sig.args[0], args[0], arrtype)._getvalue()

    return arrtype(shape, dtype), codegen


@intrinsic
def full(typingctx, shape, value):
    """`np.full(shape, value)` for kernels (reduction accumulators): `empty`, then a
    fill loop. Numba's np.full is typed and compiled for each element type and rank
    the first time a process meets it, ~0.15 s of a nest's compile."""
    value = types.unliteral(value)
    numeric = isinstance(value, (types.Number, types.Boolean))
    arrtype = _new_array_type(shape, value if numeric else None)
    if arrtype is None:
        return None

    def codegen(context, builder, sig, args):
        from numba.core import cgutils

        array = _allocate(context, builder, sig.args[0], args[0], arrtype)
        with cgutils.for_range(builder, array.nitems) as loop:
            context.pack_value(builder, arrtype.dtype, args[1],
                               builder.gep(array.data, [loop.index]))
        return array._getvalue()

    return arrtype(shape, value), codegen


def _new_array_type(shape, elem):
    """The C-order array type `empty(shape, ...)` makes, or None if it cannot."""
    if elem is None:
        return None
    if isinstance(shape, types.Integer):
        return types.Array(elem, 1, "C")
    if isinstance(shape, types.BaseTuple) and all(isinstance(d, types.Integer) for d in shape):
        return types.Array(elem, len(shape), "C")
    return None


def _allocate(context, builder, shape_type, shape, arrtype):
    """A new C-order array of `arrtype` (its struct), on the pool when it is large."""
    from numba.core import cgutils

    elem, ndim = arrtype.dtype, arrtype.ndim
    intp = context.get_value_type(types.intp)
    if isinstance(shape_type, types.BaseTuple):
        dims = [context.cast(builder, d, t, types.intp) for d, t in
                zip(cgutils.unpack_tuple(builder, shape, ndim), shape_type)]
    else:
        dims = [context.cast(builder, shape, shape_type, types.intp)]
    itemsize = ir.Constant(intp, context.get_abi_sizeof(context.get_data_type(elem)))
    strides = _c_strides(builder, dims, itemsize)
    nbytes = builder.mul(strides[0], dims[0]) if ndim else itemsize
    big = builder.icmp_signed(">=", nbytes, ir.Constant(intp, POOL_MIN_BYTES))
    with builder.if_else(big, likely=False) as (pooled, small):
        with pooled:
            take = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(cgutils.voidptr_t, [intp]), pool.SYMBOL)
            from_pool = builder.call(take, [nbytes])
            pooled_block = builder.block
        with small:
            align = context.get_preferred_array_alignment(elem)
            from_malloc = context.nrt.meminfo_alloc_aligned_unchecked(builder, nbytes, align)
            small_block = builder.block
    meminfo = builder.phi(cgutils.voidptr_t)
    meminfo.add_incoming(from_pool, pooled_block)
    meminfo.add_incoming(from_malloc, small_block)
    with builder.if_then(cgutils.is_null(builder, meminfo), likely=False):
        context.call_conv.return_user_exc(builder, MemoryError,
                                          ("tracejit: cannot allocate an array",))
    return c_order_array(context, builder, arrtype, dims, meminfo,
                         context.nrt.meminfo_data(builder, meminfo))


def _c_strides(builder, dims: list, itemsize) -> list:
    strides = [itemsize]
    for d in reversed(dims[1:]):
        strides.append(builder.mul(strides[-1], d))
    return strides[::-1]


def c_order_array(context, builder, arrtype, dims: list, meminfo, data):
    """The struct of a C-order array of `arrtype` with these sizes (intp values) over
    memory that `meminfo` owns (`_allocate`'s, or a translated nest's: nestcall.py)."""
    from numba.core import cgutils
    from numba.np.arrayobj import make_array, populate_array

    intp = context.get_value_type(types.intp)
    itemsize = ir.Constant(intp, context.get_abi_sizeof(context.get_data_type(arrtype.dtype)))
    array = make_array(arrtype)(context, builder)
    populate_array(array, data=builder.bitcast(data, array.data.type),
                   shape=cgutils.pack_array(builder, dims, ty=intp),
                   strides=cgutils.pack_array(builder, _c_strides(builder, dims, itemsize),
                                              ty=intp),
                   itemsize=itemsize, meminfo=meminfo)
    return array


# --------------------------------------------------------------------------
# Linear algebra.
# --------------------------------------------------------------------------


@callee()  # disk-cached, verified, by tracejit.cache
def dot(a, b):
    """np.dot through BLAS, compiled once per operand layout and cached on disk:
    typing np.dot costs ~0.3-0.8 s per layout pair in every kernel otherwise."""
    return np.dot(a, b)


# --------------------------------------------------------------------------
# Loops: per-step values stacked by while loops.
# --------------------------------------------------------------------------


@callee()  # disk-cached, verified, by tracejit.cache
def grow(stack):
    """The stack of a while loop's per-step values with room for twice as many."""
    bigger = empty((2 * stack.shape[0] + 1,) + stack.shape[1:], stack.dtype)
    bigger[:stack.shape[0]] = stack
    return bigger


# --------------------------------------------------------------------------
# Shared loop-nest functions: called, never linked into their callers.
# --------------------------------------------------------------------------


class _NestDispatcher(_CompiledOnly):
    """A loop nest shared by kernels (outline.py). Numba normally links a
    callee's code into each caller and optimises it again there, so a kernel's
    compile grows with the code of everything it calls; a nest's machine code
    is instead made once, and kernels call it by its symbol (it is already
    loaded in the process when they are compiled). Only kernel drivers, which
    are never loaded from disk, may call one: machine code read from the cache
    (a nest's) must link what it calls, or a new process aborts on the symbol."""

    def add_overload(self, cres):
        super().add_overload(cres)
        defined = self.targetctx._defns.get(cres.entry_point)
        for _, impl in getattr(defined, "versions", ()):
            if getattr(impl, "libs", None):
                impl.libs = ()  # calls to it link no library


def nest(**options):
    """`njit` for a loop nest (see `_NestDispatcher`)."""
    return _decorate(_NestDispatcher, options)


# Matrix products through BLAS, one machine code per dtype (vectors come as
# 1-row / 1-column views): np.dot is typed again for every pair of operand
# layouts (~0.5 s each; a gradient has three or four: x @ W, g @ W.T, x.T @ g),
# so kernels pass `as_any` views and the strides are read at run time instead.

_BLAS_KINDS = {types.float32: "s", types.float64: "d", types.complex64: "c",
               types.complex128: "z"}


@intrinsic
def as_any(typingctx, x):
    """The same array typed with layout 'A' and writable, so that one
    specialisation of a callee serves every layout (an array's data model does
    not depend on its layout). Only for callees that never write to it."""
    if not isinstance(x, types.Array):
        return None

    def codegen(context, builder, sig, args):
        context.nrt.incref(builder, sig.args[0], args[0])
        return args[0]

    return x.copy(layout="A", readonly=False)(x), codegen


@intrinsic
def _xxgemm(typingctx, transa, transb, m, n, k, a, lda, b, ldb, c, ldc, beta):
    """c = op(a) @ op(b) + beta c, column-major (BLAS's convention), through the gemm
    wrapper Numba's own np.dot calls; `trans*` are 0 or 1, alpha 1."""
    if not isinstance(c, types.Array) or c.dtype not in _BLAS_KINDS:
        return None
    kind = _BLAS_KINDS[c.dtype]

    def codegen(context, builder, sig, args):
        from numba.core import cgutils
        from numba.np.linalg import ensure_blas

        ensure_blas()
        char, void_p = ir.IntType(8), ir.IntType(8).as_pointer()
        intp = context.get_value_type(types.intp)
        fnty = ir.FunctionType(ir.IntType(32), [char, char, char, intp, intp, intp, void_p,
                                                void_p, intp, void_p, intp, void_p, void_p, intp])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "numba_xxgemm")

        def size(i):
            return context.cast(builder, args[i], sig.args[i], types.intp)

        def flag(i):
            set_ = builder.icmp_signed("!=", size(i), ir.Constant(intp, 0))
            return builder.select(set_, ir.Constant(char, ord("t")), ir.Constant(char, ord("n")))

        def data(i):
            array = context.make_array(sig.args[i])(context, builder, args[i])
            return builder.bitcast(array.data, void_p)

        def scalar(value):
            slot = cgutils.alloca_once(builder, context.get_value_type(c.dtype))
            builder.store(value, slot)
            return builder.bitcast(slot, void_p)

        beta_ = context.cast(builder, args[11], sig.args[11], c.dtype)
        return builder.call(fn, [ir.Constant(char, ord(kind)), flag(0), flag(1), size(2),
                                 size(3), size(4), scalar(context.get_constant(c.dtype, 1.0)),
                                 data(5), size(6), data(7), size(8), scalar(beta_), data(9),
                                 size(10)])

    return types.int32(transa, transb, m, n, k, a, lda, b, ldb, c, ldc, beta), codegen


@callee(**_JIT)
def _blas_view(x):
    """(x or a contiguous copy, transposed, leading dimension): BLAS's
    column-major view of x's transpose, from x's strides (row-major: as is;
    column-major: transposed; anything else, or broadcast: copied)."""
    rows, cols = x.shape
    item = x.itemsize
    s0, s1 = x.strides
    if (cols <= 1 or s1 == item) and (rows <= 1 or (s0 % item == 0 and s0 // item >= cols)):
        return x, 0, max(1, cols) if rows <= 1 else s0 // item
    if (rows <= 1 or s0 == item) and (cols <= 1 or (s1 % item == 0 and s1 // item >= rows)):
        return x, 1, max(1, rows) if cols <= 1 else s1 // item
    copy = np.empty((rows, cols), x.dtype)
    for i in range(rows):
        for j in range(cols):
            copy[i, j] = x[i, j]
    return as_any(copy), 0, max(1, cols)


# OpenBLAS's AVX-512 builds have small-matrix kernels that skip packing the operands,
# for real products of at most 100^3 multiply-adds. Larger products made in blocks
# that fit took less time on this project's 2-core AVX-512 machine (float32 and float64):
# - blocks of rows, for products at most 128 columns wide, when a block has at least 32
#   rows: a convolution's product 7744x288 @ 288x64 3.7 -> 2.8 ms, 43264x9 @ 9x32
#   0.44 -> 0.29 ms, 0.6-0.9x on ten other shapes; 288 or 256 columns: slower;
# - else blocks of at least 32 columns, up to 10^7 multiply-adds: an LSTM's per-step
#   product 32x128 @ 128x512 60 -> 37 us, 0.6-0.85x; larger, or narrower: slower;
# - else, for a long inner dimension, a sum of blocks of at least 32 of it: a
#   convolution's kernel gradient 288x7744 @ 7744x64 6.4 -> 3.4 ms, 9x43264 @ 43264x32
#   1.1 -> 0.3 ms; blocks of 15 (an LSTM's 128x1600 @ 1600x512): slower in float64.
# Elsewhere (no such kernels) the blocks would only add calls.
SMALL_GEMM = 100**3 if llvm_binding.get_host_cpu_features().get("avx512f") else 0


def _is_real(x):
    return not np.iscomplexobj(x)


@overload(_is_real)
def _is_real_typed(x):
    real = isinstance(x.dtype, types.Float)
    return lambda x: real


@callee(**_JIT)
def _block(m, n, k, real):
    """(rows, columns, inner) of the product `(m, k) @ (k, n)` made by one BLAS call:
    all, or a block that OpenBLAS's small-matrix kernels take (see SMALL_GEMM)."""
    if real and SMALL_GEMM < m * n * k:
        if n <= 128 and SMALL_GEMM // (n * k) >= 32:
            return SMALL_GEMM // (n * k), n, k
        columns = SMALL_GEMM // (m * k) // 16 * 16
        if m * n * k <= 10 * SMALL_GEMM and columns >= 32:
            return m, columns, k
        if SMALL_GEMM // (m * n) >= 32:
            return m, n, SMALL_GEMM // (m * n)
    return m, n, k


@nest()  # disk-cached, verified, by tracejit.cache
def gemm(a, b):
    """`a @ b` of 2-D float or complex arrays, called with `as_any` operands."""
    m, k = a.shape
    n = b.shape[1]
    out = empty((m, n), a.dtype)
    if k == 0:
        for i in range(m):
            for j in range(n):
                out[i, j] = 0
    elif m > 0 and n > 0:  # row-major out is column-major out.T = b.T @ a.T
        b_, b_trans, ldb = _blas_view(b)
        a_, a_trans, lda = _blas_view(a)
        rows, columns, inner = _block(m, n, k, _is_real(out))
        for i in range(0, m, rows):  # a block's pointers: its first row and column
            for j in range(0, n, columns):
                for s in range(0, k, inner):  # summed into the block after the first
                    _xxgemm(b_trans, a_trans, min(columns, n - j), min(rows, m - i),
                            min(inner, k - s), b_[s:, j:], ldb, a_[i:, s:], lda,
                            out[i:, j:], n, 0.0 if s == 0 else 1.0)
    return out


# `out[start:start + len(src)] = src` for concatenations of many pieces (a
# rolled loop stacks every layer's weights): one call per piece to code compiled
# once per dtype and rank, called with `as_any` arrays (other axes: transposed
# views). Explicit loops: Numba takes seconds to compile a slice assignment.
# Linked into their callers (njit, not `nest`): they are called from nests,
# whose machine code comes from the disk cache and may name no other nest.


@called()  # disk-cached, verified, by tracejit.cache
def put1(out, start, src):
    for i in range(src.shape[0]):
        out[start + i] = src[i]


@called()  # disk-cached, verified, by tracejit.cache
def put2(out, start, src):
    for i in range(src.shape[0]):
        for j in range(src.shape[1]):
            out[start + i, j] = src[i, j]


@called()  # disk-cached, verified, by tracejit.cache
def put3(out, start, src):
    for i in range(src.shape[0]):
        for j in range(src.shape[1]):
            for k in range(src.shape[2]):
                out[start + i, j, k] = src[i, j, k]


# LAPACK through NumPy's linalg in Numba: each typed once per dtype and cached
# on disk (typing one costs ~1-3 s), called by the linear-algebra primitives
# (linalg_primitives.py) on C-contiguous matrices.


@callee()  # disk-cached, verified, by tracejit.cache
def argsort(x):
    """Stable, NaN last (as NumPy's kind='stable')."""
    return np.argsort(x, kind="mergesort")


@callee()  # disk-cached, verified, by tracejit.cache
def cholesky(a):
    return np.linalg.cholesky(a)


@callee()  # disk-cached, verified, by tracejit.cache
def solve(a, b):
    return np.linalg.solve(a, b)


@callee()  # disk-cached, verified, by tracejit.cache
def solve_triangular(a, b, lower, trans):
    """op(a)^-1 b by substitution; op(a) = a.T when `trans`."""
    n, k = b.shape
    x = b.copy()
    forward = lower != trans  # op(a) is lower triangular
    for c in range(k):
        for step in range(n):
            i = step if forward else n - 1 - step
            total = x[i, c]
            lo, hi = (0, i) if forward else (i + 1, n)
            for j in range(lo, hi):
                total -= (a[j, i] if trans else a[i, j]) * x[j, c]
            x[i, c] = total / a[i, i]
    return x


@callee()  # disk-cached, verified, by tracejit.cache
def slogdet(a):
    sign, logabs = np.linalg.slogdet(a)
    out = np.empty(2, a.dtype)
    out[0] = sign
    out[1] = logabs
    return out


@callee()  # disk-cached, verified, by tracejit.cache
def eigh(a):
    w, v = np.linalg.eigh(a)
    return _values_over_vectors(w, v, a.dtype)


@callee()  # disk-cached, verified, by tracejit.cache
def eig(a):
    w, v = np.linalg.eig(a)
    return _values_over_vectors(w, v, a.dtype)


@callee()
def _values_over_vectors(w, v, dtype):
    """[w; V] in one (n + 1, n) array, the packing the eigh and eig records unpack."""
    n = v.shape[0]
    out = np.empty((n + 1, n), dtype)
    out[0] = w
    out[1:] = v
    return out


@callee()  # disk-cached, verified, by tracejit.cache
def svd(a):
    u, s, vt = np.linalg.svd(a, full_matrices=False)
    m, k = u.shape
    n = vt.shape[1]
    out = np.empty((k, m + 1 + n), a.dtype)
    out[:, :m] = u.T
    out[:, m] = s
    out[:, m + 1:] = vt
    return out



# --------------------------------------------------------------------------
# Special functions (scipy.special's erf, erfc, gammaln, digamma, polygamma).
# --------------------------------------------------------------------------


@callee(**_JIT)
def erfc(x):
    return _c(x, math.erfc(x))


@callee(**_JIT)
def lgamma(x):
    """math.lgamma, and -log|x| below 2^-60 (where it overflows 1/x: inf at 1e-310)."""
    if x != 0.0 and abs(x) < 8.673617379884035e-19:
        return _c(x, -math.log(abs(x)))
    return _c(x, math.lgamma(x))


# Bernoulli numbers B_2k / (2k)! for the asymptotic series below.
_B2K = (1.0 / 6.0, -1.0 / 30.0, 1.0 / 42.0, -1.0 / 30.0, 5.0 / 66.0, -691.0 / 2730.0, 7.0 / 6.0)


@callee(**_JIT)
def polygamma(n, x):
    """The n-th derivative of digamma (n = 0: digamma itself), any non-pole x:
    shift x up past 20 by the recurrence, then the asymptotic series. Not recursive:
    a call to another of its own specialisations (polygamma(0, .) from polygamma(n, .))
    is an unresolved symbol in Numba's machine code, and a process that read such
    code from the disk cache without that specialisation aborted at its next link."""
    if x != x or (x <= 0.0 and x == math.floor(x)):
        return np.nan + x * 0.0
    reflected = 0.0
    if n == 0 and x < 0.0:  # reflection, with pi r exact to the last bit of r
        r = x - np.rint(x)
        reflected = math.pi / math.tan(math.pi * r)
        x = 1.0 - x
    shift = 0.0
    factorial = 1.0
    for k in range(2, n + 1):
        factorial *= k
    sign = 1.0 if n % 2 == 1 else -1.0  # (-1)^(n+1)
    steps = max(0, int(math.ceil(20.0 - x)))
    for k in range(steps - 1, -1, -1):  # smallest terms first; x + k rounds once each
        shift += 1.0 / (x + k) ** (n + 1)
    x = x + steps
    if n == 0:
        inv2 = 1.0 / (x * x)
        series = 0.0
        power = inv2
        for k in range(7):
            series += _B2K[k] / (2 * k + 2) * power
            power *= inv2
        return math.log(x) - 0.5 / x - series - shift - reflected
    # (-1)^(n+1) [(n-1)!/x^n + n!/(2 x^(n+1)) + sum_k B_2k (2k+n-1)!/(2k)! / x^(2k+n)]
    total = factorial / n / x ** n + factorial / (2.0 * x ** (n + 1))
    inv = 1.0 / x ** (n + 2)
    for k in range(1, 8):
        coeff = 1.0  # (2k + n - 1)! / (2k)!
        for j in range(2 * k + 1, 2 * k + n):
            coeff *= j
        total += _B2K[k - 1] * coeff * inv
        inv /= x * x
    return sign * (total + factorial * shift)


# --------------------------------------------------------------------------
# The FFT (Numba has no np.fft).
# --------------------------------------------------------------------------

# `fft(x, inverse)` transforms each row of a 2-D C-contiguous complex array with
# NumPy's conventions: X_k = sum_j x_j e^(-2 pi i jk / n), the inverse with +i and
# divided by n. Powers of two take the iterative radix-2 algorithm; other sizes
# Bluestein's chirp-z transform, which writes the DFT as a convolution computed
# by radix-2 FFTs of a power-of-two size >= 2n - 1, so every size is O(n log n).
# The work is done in complex128 (a complex64 result is rounded once, at the
# end); twiddles and chirps are computed from exact integer angles, not by
# recurrence, so the error stays near NumPy's pocketfft (~1e-16 * log n relative
# to the norm in float64).


@callee()  # disk-cached, verified, by tracejit.cache
def _twiddles(n, sign):
    """exp(sign * 2 pi i k / n) for k < n / 2."""
    out = np.empty(max(n // 2, 1), np.complex128)
    for k in range(out.shape[0]):
        angle = sign * 2.0 * np.pi * k / n
        out[k] = complex(np.cos(angle), np.sin(angle))
    return out


@callee()  # disk-cached, verified, by tracejit.cache
def _radix2(a, twiddles):
    """In-place FFT of `a` (length a power of two) with the given twiddles."""
    n = a.shape[0]
    j = 0
    for i in range(1, n):  # bit-reversal permutation
        bit = n >> 1
        while j & bit:
            j ^= bit
            bit >>= 1
        j |= bit
        if i < j:
            a[i], a[j] = a[j], a[i]
    size = 2
    while size <= n:
        half, step = size // 2, n // size
        for start in range(0, n, size):
            for k in range(half):
                v = a[start + k + half] * twiddles[k * step]
                u = a[start + k]
                a[start + k] = u + v
                a[start + k + half] = u - v
        size *= 2


@callee()  # disk-cached, verified, by tracejit.cache
def _chirp(n, sign):
    """exp(sign * pi i k^2 / n), the angle reduced exactly (k^2 mod 2n)."""
    out = np.empty(n, np.complex128)
    for k in range(n):
        angle = sign * np.pi * ((k * k) % (2 * n)) / n
        out[k] = complex(np.cos(angle), np.sin(angle))
    return out


@callee()  # disk-cached, verified, by tracejit.cache
def fft(x, inverse):
    """FFT of each row of `x` (rows, n); the inverse divides by n."""
    rows, n = x.shape
    if n < 1:
        raise ValueError("Invalid number of FFT data points (0) specified.")
    sign = 1.0 if inverse else -1.0
    out = np.empty((rows, n), x.dtype)
    work = np.empty(n, np.complex128)
    scale = 1.0 / n if inverse else 1.0
    if n & (n - 1) == 0:
        twiddles = _twiddles(n, sign)
        for r in range(rows):
            for k in range(n):
                work[k] = x[r, k]
            _radix2(work, twiddles)
            for k in range(n):
                out[r, k] = work[k] * scale
        return out
    m = 1
    while m < 2 * n - 1:
        m *= 2
    chirp = _chirp(n, sign)
    forward, backward = _twiddles(m, -1.0), _twiddles(m, 1.0)
    kernel = np.zeros(m, np.complex128)  # conj(chirp) at offsets -(n-1) .. n-1, circularly
    kernel[0] = chirp[0].conjugate()
    for k in range(1, n):
        kernel[k] = kernel[m - k] = chirp[k].conjugate()
    _radix2(kernel, forward)
    a = np.empty(m, np.complex128)
    for r in range(rows):
        for k in range(n):
            a[k] = x[r, k] * chirp[k]
        for k in range(n, m):
            a[k] = 0.0
        _radix2(a, forward)
        for k in range(m):
            a[k] *= kernel[k]
        _radix2(a, backward)  # the circular convolution, times m
        for k in range(n):
            out[r, k] = a[k] * chirp[k] * (scale / m)
    return out


# --------------------------------------------------------------------------
# Threefry-2x32 (20 rounds; Salmon et al., "Parallel random numbers: as easy
# as 1, 2, 3", SC 2011): a random draw is a pure function of a key and a
# counter, so it is computed inside any loop nest, in any order, in parallel.
# Words are held in uint64 and masked to 32 bits (Numba types uint32 + uint32
# as uint64). tracejit/primitives/random.py has the NumPy reference.
# --------------------------------------------------------------------------

_M32 = np.uint64(0xFFFFFFFF)
_PARITY = np.uint64(0x1BD11BDA)


@callee(**_JIT)
def _tf_rounds(x0, x1, r0, r1, r2, r3):
    for r in (r0, r1, r2, r3):
        x0 = (x0 + x1) & _M32
        x1 = ((x1 << np.uint64(r)) | (x1 >> np.uint64(32 - r))) & _M32
        x1 = x1 ^ x0
    return x0, x1


@callee(**_JIT)
def _threefry(k0, k1, c0, c1):
    k0 = np.uint64(k0) & _M32
    k1 = np.uint64(k1) & _M32
    k2 = k0 ^ k1 ^ _PARITY
    x0 = (np.uint64(c0) + k0) & _M32
    x1 = (np.uint64(c1) + k1) & _M32
    x0, x1 = _tf_rounds(x0, x1, 13, 15, 26, 6)
    x0, x1 = (x0 + k1) & _M32, (x1 + k2 + np.uint64(1)) & _M32
    x0, x1 = _tf_rounds(x0, x1, 17, 29, 16, 24)
    x0, x1 = (x0 + k2) & _M32, (x1 + k0 + np.uint64(2)) & _M32
    x0, x1 = _tf_rounds(x0, x1, 13, 15, 26, 6)
    x0, x1 = (x0 + k0) & _M32, (x1 + k1 + np.uint64(3)) & _M32
    x0, x1 = _tf_rounds(x0, x1, 17, 29, 16, 24)
    x0, x1 = (x0 + k1) & _M32, (x1 + k2 + np.uint64(4)) & _M32
    x0, x1 = _tf_rounds(x0, x1, 13, 15, 26, 6)
    return (x0 + k2) & _M32, (x1 + k0 + np.uint64(5)) & _M32


@callee(**_JIT)
def threefry_bits(k0, k1, c0, c1):
    """The first output word of Threefry-2x32 at counter (c0, c1), as uint32."""
    return np.uint32(_threefry(k0, k1, c0, c1)[0])


@callee(**_JIT)
def threefry_uniform(like, k0, k1, c0, c1):
    """A uniform float in [0, 1) of like's type: 24 bits for float32, 53 for float64."""
    x0, x1 = _threefry(k0, k1, c0, c1)
    if _is32(like):
        return np.float32(x0 >> np.uint64(8)) * np.float32(5.9604644775390625e-08)
    bits = (x0 << np.uint64(21)) | (x1 >> np.uint64(11))
    return np.float64(bits) * 1.1102230246251565e-16


# --------------------------------------------------------------------------
# Axis permutations of 3-d and 4-d arrays as views (`_rt.permute_102(x)`):
# Numba's `x.transpose(axes)` compiles, on first use in each process, a Python
# helper whose fancy slice assignment brings its error formatting (measured
# ~5 s of an LSTM step's cold compile); these build the permuted view directly.
# --------------------------------------------------------------------------


def _permutation_view(perm: tuple):
    @intrinsic
    def permuted(typingctx, x):
        if not isinstance(x, types.Array) or x.ndim != len(perm):
            return None

        def codegen(context, builder, sig, args):
            from numba.core import cgutils
            from numba.core.imputils import impl_ret_borrowed
            from numba.np.arrayobj import make_array, populate_array

            ary = make_array(sig.args[0])(context, builder, args[0])
            out = make_array(sig.return_type)(context, builder)
            shape = cgutils.unpack_tuple(builder, ary.shape, len(perm))
            strides = cgutils.unpack_tuple(builder, ary.strides, len(perm))
            populate_array(out, data=ary.data,
                           shape=cgutils.pack_array(builder, [shape[p] for p in perm]),
                           strides=cgutils.pack_array(builder, [strides[p] for p in perm]),
                           itemsize=ary.itemsize, meminfo=ary.meminfo, parent=ary.parent)
            return impl_ret_borrowed(context, builder, sig.return_type, out._getvalue())

        return x.copy(layout="A")(x), codegen

    return permuted


def _define_permutations():
    from itertools import permutations

    for n in (3, 4):
        for perm in permutations(range(n)):
            globals()["permute_" + "".join(map(str, perm))] = _permutation_view(perm)


_define_permutations()
