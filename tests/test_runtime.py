"""Accuracy, special values, dtype and vectorisation of tracejit.backend.runtime.

Numba compiles are the cost here, so every function is exercised through one
kernel (`_apply`), compiled once per dtype with the fastmath flags tracejit's
generated kernels use, and run over a large grid of points.
"""

import ast
import re

import numba
import numpy as np
import pytest
from numba import njit, prange, types

from tracejit.backend import codegen
from tracejit.backend import runtime as rt

# The flags generated kernels are compiled with (no nnan/ninf).
FASTMATH = ast.literal_eval(codegen.FASTMATH)
NAMES = ("exp", "expm1", "tanh", "sigmoid", "log", "log1p", "sign", "round", "max", "min")

# Max relative error against the exact value (NumPy in long double), float64.
# Measured: exp 1.6e-16, expm1 2.8e-16, tanh 3.7e-16, sigmoid 3.3e-16,
# log 1.5e-16, log1p 1.5e-16 (0.75-2.5 ulp).
BOUND64 = dict(exp=2.5e-16, expm1=4e-16, tanh=4.5e-16, sigmoid=4.5e-16, log=2.5e-16, log1p=2.5e-16)
# Max error in float32 ulps against the float64 result rounded to float32.
# Measured: 1 ulp for exp/log/log1p, 2 for expm1/tanh, 3 for sigmoid.
ULPS32 = dict(exp=1, expm1=2, tanh=2, sigmoid=3, log=1, log1p=1)

EXTENDED = np.finfo(np.longdouble).eps < 1e-18  # x86 80-bit long double


@njit(fastmath=FASTMATH, error_model="numpy")
def _all(v, w):
    """Every runtime function at one point (w is the second max/min operand)."""
    return (
        rt.exp(v),
        rt.expm1(v),
        rt.tanh(v),
        rt.sigmoid(v),
        rt.log(v),
        rt.log1p(v),
        rt.sign(v),
        rt.round_half_even(v),
        rt.maximum(v, w),
        rt.minimum(v, w),
    )


@njit(fastmath=FASTMATH, error_model="numpy")
def _apply(x, y, out):
    for i in range(x.size):
        r = _all(x[i], y[i])
        for k in range(len(r)):
            out[k, i] = r[k]


@njit(fastmath=FASTMATH, error_model="numpy", parallel=True)
def _reduce_loop(x):
    """The shape of a generated value+grad kernel: a map and a reduction."""
    s = 0.0
    for i in prange(x.size):
        s += rt.tanh(x[i]) * rt.exp(-x[i]) + rt.log(x[i]) + rt.sigmoid(x[i])
    return s


def _grid(dt):
    """Dense and log-spaced points incl. subnormal, huge and special values."""
    fi = np.finfo(dt)
    edge = 800.0 if dt == np.float64 else 110.0
    with np.errstate(over="ignore"):  # the last point may round up to inf
        mags = 10.0 ** np.linspace(np.log10(fi.smallest_subnormal), np.log10(fi.max), 20001)
    rng = np.random.default_rng(1)
    special = [
        0.0,
        -0.0,
        np.inf,
        -np.inf,
        np.nan,
        0.5,
        1.5,
        2.5,
        -0.5,
        -1.0,
        -1.5,
        fi.tiny,
        fi.smallest_subnormal,
        fi.max,
        709.782712893384,
        709.7827128933841,
        -745.1332191019411,
        88.72283172607422,
        88.72284,
        -103.972,
        1e-8,
        -1e-8,
    ]
    x = np.concatenate(
        [
            np.linspace(-edge, edge, 40001),
            np.linspace(-3, 3, 40001),
            mags,
            -mags,
            rng.standard_normal(20000),
            special,
        ]
    )
    with np.errstate(over="ignore"):
        return x.astype(dt)


def _numpy(x):
    """NumPy reference for each of NAMES, in x's dtype (partner for max/min: x[::-1])."""
    y = x[::-1]
    with np.errstate(all="ignore"):
        sig = np.where(
            x >= 0, 1 / (1 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1 + np.exp(-np.abs(x)))
        )
        return [
            np.exp(x),
            np.expm1(x),
            np.tanh(x),
            sig,
            np.log(x),
            np.log1p(x),
            np.sign(x),
            np.round(x),
            np.maximum(x, y),
            np.minimum(x, y),
        ]


@pytest.fixture(scope="module")
def runs():
    """dtype name -> (grid, {function name: results})."""
    res = {}
    for dt in (np.float64, np.float32):
        x = _grid(dt)
        out = np.empty((len(NAMES), x.size), x.dtype)
        _apply(x, np.ascontiguousarray(x[::-1]), out)
        res[x.dtype.name] = (x, dict(zip(NAMES, out, strict=True)))
    return res


def _check_specials(x, got, want):
    """Where the reference is not a finite normal number, demand exactness.

    That covers NaN, ±inf, ±0 (sign included) and subnormal results; the
    last may differ by one unit in the last place of the subnormal.
    """
    fi = np.finfo(x.dtype)
    odd = ~np.isfinite(want) | (np.abs(want) < fi.tiny)
    g, w = got[odd], want[odd]
    np.testing.assert_array_equal(np.isnan(g), np.isnan(w))
    np.testing.assert_array_equal(np.signbit(g)[~np.isnan(w)], np.signbit(w)[~np.isnan(w)])
    with np.errstate(invalid="ignore"):
        diff = np.where(np.isnan(w) | (g == w), 0, np.abs(g - w))
    assert diff.max(initial=0) <= 2 * fi.smallest_subnormal


@pytest.mark.parametrize("dt", ["float64", "float32"])
@pytest.mark.parametrize("name", NAMES)
def test_special_values_match_numpy(runs, name, dt):
    x, out = runs[dt]
    want = _numpy(x)[NAMES.index(name)].astype(x.dtype)
    _check_specials(x, out[name], want)


@pytest.mark.parametrize("dt", ["float64", "float32"])
@pytest.mark.parametrize("name", ["sign", "round", "max", "min"])
def test_exact_helpers(runs, name, dt):
    x, out = runs[dt]
    want = _numpy(x)[NAMES.index(name)]
    np.testing.assert_array_equal(out[name], want)
    np.testing.assert_array_equal(np.signbit(out[name]), np.signbit(want))


@pytest.mark.parametrize("name", list(BOUND64))
def test_float64_relative_error(runs, name):
    x, out = runs["float64"]
    ref_dt = np.longdouble if EXTENDED else np.float64
    want = _numpy(x.astype(ref_dt))[NAMES.index(name)]
    with np.errstate(over="ignore"):
        rounded = want.astype(np.float64)  # overflow/underflow as float64 would
    ok = np.isfinite(rounded) & (np.abs(rounded) >= np.finfo(np.float64).tiny)
    rel = np.abs((out[name][ok] - want[ok]) / want[ok]).max()
    # Against a float64 NumPy reference the reference's own ulp adds in.
    assert rel <= BOUND64[name] * (1 if EXTENDED else 2.5), rel


@pytest.mark.parametrize("name", list(ULPS32))
def test_float32_ulps(runs, name):
    x, out = runs["float32"]
    with np.errstate(over="ignore"):
        want = _numpy(x.astype(np.float64))[NAMES.index(name)].astype(np.float32)
    ok = np.isfinite(want) & (np.abs(want) >= np.finfo(np.float32).tiny)
    got = out[name][ok].astype(np.float64)
    ulps = np.abs(got - want[ok]) / np.spacing(np.abs(want[ok])).astype(np.float64)
    assert ulps.max() <= ULPS32[name], ulps.max()
    # And against NumPy's own float32 results (themselves ~1-2 ulp off).
    f32 = _numpy(x)[NAMES.index(name)][ok].astype(np.float64)
    assert (np.abs(got - f32) / np.spacing(np.abs(want[ok]))).max() <= ULPS32[name] + 3


def test_tiny_arguments_are_relatively_exact():
    for dt in (np.float64, np.float32):
        x = (10.0 ** -np.arange(4, 30)).astype(dt)
        x = np.concatenate([x, -x])
        out = np.empty((len(NAMES), x.size), dt)
        _apply(x, x, out)
        want = _numpy(x.astype(np.float64))
        for name in ("expm1", "tanh", "log1p"):
            got = out[NAMES.index(name)].astype(np.float64)
            ref = want[NAMES.index(name)]
            assert np.abs(got / ref - 1).max() <= 2 * np.finfo(dt).eps, (dt, name)


def test_float32_stays_float32():
    """No float64 constant may leak into the float32 specialisations."""
    _all(np.float32(0.5), np.float32(0.25))
    sig = _all.overloads[(types.float32, types.float32)].signature
    assert sig.return_type == types.UniTuple(types.float32, len(NAMES))
    _all(0.5, 0.25)
    sig = _all.overloads[(types.float64, types.float64)].signature
    assert sig.return_type == types.UniTuple(types.float64, len(NAMES))


def test_integer_helpers():
    @njit
    def ints(a, b):
        return rt.maximum(a, b), rt.minimum(a, b), rt.sign(a)

    assert ints(3, -5) == (3, -5, 1)
    assert ints(-7, 2) == (2, -7, -1)


def test_loop_vectorises_without_libm_calls():
    """Guard against a change that puts a branch or a libm call in the loop."""
    x = np.linspace(0.1, 3.0, 1001)
    want = np.sum(np.tanh(x) * np.exp(-x) + np.log(x) + 1 / (1 + np.exp(-x)))
    assert _reduce_loop(x) == pytest.approx(want, rel=1e-13)
    ir = _reduce_loop.inspect_llvm(_reduce_loop.signatures[0])
    assert re.search(r"<\d+ x double>", ir)
    assert not re.search(r"@(llvm\.)?(exp|log|tanh)[.(]", ir)


def _layouts(A, B):
    """Operand pairs in every memory layout a kernel may hand to BLAS."""
    return [(A, B), (np.asfortranarray(A), B), (A, np.asfortranarray(B)), (A[::2], B),
            (A[:, ::2], B[::2]), (A[::-1], B[:, ::-1]), (A[:1], B), (A[:, :1], B[:1]),
            (A[:, :0], B[:0]), (np.broadcast_to(A[:1], A.shape), B), (A.T.T, B.T.copy().T)]


@pytest.mark.parametrize("dt", [np.float32, np.float64, np.complex128])
def test_gemm_reads_any_layout_with_one_machine_code_per_dtype(dt):
    @njit
    def product(a, b):
        return rt.gemm(rt.as_any(a), rt.as_any(b))

    rng = np.random.default_rng(0)
    A = rng.standard_normal((7, 6)).astype(dt)
    B = rng.standard_normal((6, 4)).astype(dt)
    for a, b in _layouts(A, B):
        np.testing.assert_allclose(product(a, b), a @ b, rtol=1e-5, atol=1e-5)
    typed = [sig for sig in rt.gemm.signatures if sig[0].dtype == numba.from_dtype(np.dtype(dt))]
    assert len(typed) == 1 and typed[0][0].layout == "A"


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(32, 130, 520), (700, 60, 100), (60, 3000, 40)])
def test_gemm_in_blocks_for_openblas_small_kernels_equals_numpy(dt, shape):
    """Products above OpenBLAS's small-matrix size (an LSTM's per-step one, a
    convolution's and its kernel gradient) are made in blocks of columns, of rows or
    of the inner dimension (summed) that fit its small-matrix kernels, where it has
    them."""
    @njit
    def product(a, b):
        return rt.gemm(rt.as_any(a), rt.as_any(b))

    @njit
    def block(m, n, k):
        return rt._block(m, n, k, True)

    if rt.SMALL_GEMM:
        assert block(32, 520, 130) == (32, 240, 130) and block(700, 100, 60) == (166, 100, 60)
        assert block(60, 40, 3000) == (60, 40, 416) and block(32, 520, 1300) == (32, 520, 60)
        assert block(1024, 256, 256) == (1024, 256, 256)
        assert block(128, 512, 1600) == (128, 512, 1600)
    m, k, n = shape
    rng = np.random.default_rng(1)
    A = rng.standard_normal((m, k)).astype(dt)
    B = rng.standard_normal((k, n)).astype(dt)
    for a, b in _layouts(A, B):
        want = a.astype(np.float64) @ b.astype(np.float64)
        np.testing.assert_allclose(product(a, b), want, rtol=1e-4 if dt == np.float32 else 1e-12,
                                   atol=1e-4 if dt == np.float32 else 1e-12)


def test_helpers_have_no_python_wrapper_and_refuse_python_calls():
    """Compiled without the CPython/cfunc wrappers (a quarter of a small compile): kernels
    call them (the tests above); a call from Python would crash, so it raises."""
    for helper in (rt.exp, rt.tanh, rt.gemm, rt.put1, rt.dot):
        assert helper.targetoptions["no_cpython_wrapper"], helper
        assert helper.targetoptions["no_cfunc_wrapper"], helper
    with pytest.raises(TypeError, match="only from compiled code"):
        rt.exp(1.0)

    @njit
    def caller(x):
        return rt.tanh(x) + rt.exp(x)

    assert caller(0.5) == pytest.approx(np.tanh(0.5) + np.exp(0.5), rel=1e-15)


def test_no_helper_calls_itself():
    """A Numba function calling another specialisation of itself (polygamma(0, .) from
    polygamma(n, .)) holds an unresolved symbol in its machine code; a process that read
    such code from the disk cache without that specialisation aborted at its next link
    ("LLVM ERROR: Symbol not found: .numba.unresolved$..."). No helper recurses."""
    tree = ast.parse(open(rt.__file__).read())
    for fn in (node for node in tree.body if isinstance(node, ast.FunctionDef)):
        calls = {node.func.id for node in ast.walk(fn)
                 if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
        assert fn.name not in calls, fn.name
    for n in (types.int64, types.IntegerLiteral(0), types.IntegerLiteral(1)):
        rt.polygamma.compile((n, types.float64))
    for overload in rt.polygamma.overloads.values():
        assert ".numba.unresolved$" not in overload.library.get_llvm_str()


@pytest.mark.parametrize("x", [-2.5, -0.3, -7.75, 0.2, 3.0, 41.5])
def test_digamma_reflects_negative_arguments(x):
    import scipy.special

    got = njit(lambda x: rt.polygamma(0, x))(x)
    assert got == pytest.approx(scipy.special.digamma(x), rel=4e-15)
