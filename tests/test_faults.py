"""Faults a demanding user meets, each asserted the same way: the error's type, a
message naming the argument, the shapes as passed, the op and the user's own
line, and that the next good call works (nothing bad was cached). Also NaN/Inf
debugging, memory (no reference cycles, bounded caches), static argument keys
and numerics in the tails. The cache's crash tests are tests/test_cache_faults.py.
"""

import gc
import os
import re
import subprocess
import sys
import tracemalloc
import weakref
from pathlib import Path

import numpy as np
import pytest

import tracejit
from tracejit import config, nn
from tracejit.backend import cache

HERE = re.escape(__file__) + r":\d+"  # the user's file:line, in every message
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


@pytest.fixture
def flags():
    """Restore tracejit.config after the test."""
    saved = config.debug_nans, config.debug_infs, config.cache_size
    yield config
    config.debug_nans, config.debug_infs, config.cache_size = saved


def predict(x, W):
    return np.tanh(x @ W)


# ------------------------------------------------------------- shape errors

@pytest.mark.parametrize("mode", ["compiled", "interpret"])
def test_kernel_size_check_names_arguments_sizes_op_and_caller(request, mode):
    request.getfixturevalue(mode)
    f = tracejit.function(predict)
    good = f(np.ones((3, 4)), np.ones((4, 2)))
    with pytest.raises(tracejit.ShapeError) as info:
        f(np.ones((3, 4)), np.ones((5, 2)))
    message = str(info.value)
    assert re.search(r"x\.shape\[1\] = 4 but W\.shape\[0\] = 5", message), message
    assert "float64 array of shape (3, 4)" in message and "shape (5, 2)" in message
    assert re.search(r"matmul at " + HERE, message)  # where the trace joined them
    assert re.search(r"\n  at " + HERE, message)  # the failing call
    np.testing.assert_allclose(f(np.ones((7, 4)), np.ones((4, 2))), np.tanh(np.full((7, 2), 4.0)))
    np.testing.assert_allclose(f(np.ones((3, 4)), np.ones((4, 2))), good)


def test_trace_time_shape_error_names_operands_and_where_sizes_came_from(interpret):
    def model(params, x):
        return x @ params["W"] + params["b"]

    f = tracejit.function(model)
    with pytest.raises(tracejit.ShapeError) as info:
        f({"W": np.ones((4, 2)), "b": np.ones(3)}, np.ones((5, 4)))
    message = str(info.value)
    assert "params['b']: float64 (n" in message and "do not broadcast" in message
    assert re.search(r"n\d+ = params\['W'\]\.shape\[1\]", message)
    assert re.search(HERE, message)
    assert f({"W": np.ones((4, 2)), "b": np.ones(2)}, np.ones((5, 4))).shape == (5, 2)
    assert not [e for e in f._recent.values() if e is None]


def test_a_failed_size_check_leaves_no_fast_entry(compiled):
    f = tracejit.function(lambda x, y: x + y)
    f(np.ones(3), np.ones(3))
    with pytest.raises(tracejit.ShapeError, match=r"y\.shape\[0\] = 4"):
        f(np.ones(3), np.ones(4))
    assert len(f._recent) == 1 and len(f._fast) == 1  # only the good call's key
    np.testing.assert_array_equal(f(np.ones(4), np.ones(4)), np.full(4, 2.0))


def test_size_checks_run_before_the_call_not_in_the_kernel(compiled):
    """The kernel compiles faster without them; each new set of sizes is checked once."""
    f = tracejit.function(predict)
    x, W = np.ones((3, 4)), np.ones((4, 2))
    f(x, W)
    assert "SizeMismatch" not in f.source(x, W)
    with pytest.raises(tracejit.ShapeError, match=r"W\.shape\[0\] = 5") as info:
        f(np.ones((6, 4)), np.ones((5, 2)))
    assert re.search(r"matmul at " + HERE, str(info.value))
    np.testing.assert_allclose(f(np.ones((6, 4)), W), np.tanh(np.full((6, 2), 4.0)))


def test_vjp_cotangent_of_the_wrong_shape(interpret):
    out, vjp_fn = tracejit.vjp(lambda x: x * 2.0, np.ones(3))
    with pytest.raises(tracejit.ShapeError, match=r"cotangent has shape \(4,\).*\(3,\)"):
        vjp_fn(np.ones(4))
    (grad,) = vjp_fn(np.ones(3))
    np.testing.assert_array_equal(grad, np.full(3, 2.0))


def test_interpreted_gradients_keep_their_shapes(interpret):
    """A broadcast left to NumPy's broadcasting must meet an operand of full shape (a
    seed times a constant is a scalar otherwise: wrong shapes and sums)."""
    f = lambda x, b: np.sum((x + b) * 2.0)  # noqa: E731
    gx, gb = tracejit.grad(f, argnums=(0, 1))(np.ones((3, 4)), np.ones(4))
    np.testing.assert_array_equal(gx, np.full((3, 4), 2.0))
    np.testing.assert_array_equal(gb, np.full(4, 6.0))
    g = tracejit.grad(lambda x: np.sum(x * 2.0) + np.sum(x))(np.ones(3))
    np.testing.assert_array_equal(g, [3.0, 3.0, 3.0])


# ------------------------------------------------------- argument checks

@pytest.mark.parametrize(("bad", "pattern"), [
    ("text", r"x is a str"),
    ({"a": object()}, r"x\['a'\] is an object"),
    (np.ones(3, np.float16), r"x is a float16 array of shape \(3,\).*use float32"),
    (np.array(["a"]), r"x is a <U1 array.*not supported"),
    (np.float16(1.0), r"x is a float16 scalar"),
])
def test_bad_arguments_are_named(interpret, bad, pattern):
    f = tracejit.function(lambda x: x * 2)
    with pytest.raises(tracejit.TracerTypeError, match=pattern) as info:
        f(bad)
    assert re.search(HERE, str(info.value))
    np.testing.assert_array_equal(f(np.ones(2)), [2.0, 2.0])


def test_none_operand_is_numpys_type_error_naming_the_argument(interpret):
    """It was an UnsupportedError about "conversion to object"."""
    def product(x, y):
        return x * y

    with pytest.raises(TypeError, match=r"the argument y is None") as info:
        tracejit.function(product)(np.ones(2), None)
    assert isinstance(info.value, tracejit.TracejitError) and re.search(HERE, str(info.value))


@pytest.mark.parametrize("compile_mode", ["sync", "background"])
def test_int_beyond_int64_names_the_line_and_leaves_no_kernel_files(
        compile_mode, monkeypatch, tmp_path):
    """It raised Numba's bare ValueError ("Int value is too large") from inside the
    compile, and the failed call left its kernel's files in the cache directory."""
    monkeypatch.setenv("TRACEJIT_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("TRACEJIT_COMPILE", compile_mode)
    monkeypatch.delenv("TRACEJIT_DISABLE_JIT", raising=False)
    scaled = tracejit.function(lambda x, factor: x * factor)
    with pytest.raises(OverflowError, match=r"factor is the Python int 2361183241434822606848, "
                                            r"beyond int64") as info:
        scaled(np.ones(2), 2 ** 71)
    assert re.search(HERE, str(info.value))
    assert not [p.name for p in tmp_path.rglob("*.py")]
    monkeypatch.setenv("TRACEJIT_DISABLE_JIT", "1")  # the next good call: no cold compile here
    np.testing.assert_array_equal(scaled(np.ones(2), 3), [3.0, 3.0])
    with pytest.raises(OverflowError, match=r"factor is the Python int -9223372036854775809"):
        scaled(np.ones(2), -(2 ** 63) - 1)  # the same dispatch key as 3: the hot path
    scaled.wait()


def test_grad_of_a_non_scalar_output_gives_its_shape_and_points_to_jacobian(interpret):
    g = tracejit.grad(lambda x: x * 2.0)
    with pytest.raises(tracejit.TracerTypeError) as info:
        g(np.ones(3))
    message = str(info.value)
    assert "float64 array of shape (3,)" in message and "jacobian" in message
    assert "vjp" in message and re.search(HERE, message)
    assert tracejit.grad(lambda x: np.sum(x * 2.0))(np.ones(3)).tolist() == [2.0] * 3


def test_grad_with_respect_to_an_int_argument_blames_the_argument(interpret):
    def loss(weights, counts):
        return np.sum(weights * counts)

    with pytest.raises(tracejit.TracerTypeError) as info:
        tracejit.grad(loss, argnums=1)(np.ones(3), np.arange(3))
    message = str(info.value)
    assert "respect to counts (int64 array of shape (3,))" in message
    assert "must return" not in message and re.search(HERE, message)
    with pytest.raises(tracejit.TracerTypeError, match=r"respect to x \(int 3\)"):
        tracejit.grad(lambda x: x ** 2)(3)
    assert tracejit.grad(lambda x: x ** 2)(3.0) == 6.0


def test_grad_argument_names_with_keywords_and_statics(interpret):
    def loss(w, *, scale, data):
        return np.sum(w * data["x"]) * scale

    g = tracejit.grad(tracejit.function(loss, static_argnames="scale"), argnums=0)
    with pytest.raises(tracejit.TracerTypeError, match="respect to w"):
        g(np.arange(3), scale=2.0, data={"x": np.ones(3)})
    np.testing.assert_array_equal(g(np.ones(3), scale=2.0, data={"x": np.ones(3)}), [2.0] * 3)


# ------------------------------------------------------- unsupported operations

def _result_or_named_error(fn, arg):
    """Either NumPy's answer (once the numpy branch implements it) or a named error."""
    try:
        return tracejit.function(fn)(arg)
    except tracejit.TracejitError as err:
        assert re.search(HERE, str(err)), err
        return err


@pytest.mark.parametrize(("fn", "reference"), [
    (lambda x: x.cumsum(), lambda x: x.cumsum()),
    (lambda x: x // 2.0, lambda x: x // 2.0),
    (lambda x: x % 2.0, lambda x: x % 2.0),
    (lambda x: np.float64(x.sum().item()) * x, lambda x: x.sum() * x),
    (lambda x: x.astype(np.float16), None),
    (lambda x: x.tobytes(), None),
    (lambda x: x.searchsorted(0.5), None),
])
def test_unsupported_operations_raise_named_errors(interpret, fn, reference):
    x = np.array([0.5, 1.5, 2.5])
    got = _result_or_named_error(fn, x)
    if not isinstance(got, Exception):
        assert reference is not None
        np.testing.assert_allclose(got, reference(x))
    assert tracejit.function(lambda v: v * 2)(x).tolist() == [1.0, 3.0, 5.0]


def test_assignment_into_a_traced_array(interpret):
    def f(x):
        x[0] = 1.0
        return x

    with pytest.raises(tracejit.UnsupportedError, match="assignment into a traced"):
        tracejit.function(f)(np.zeros(2))


# ------------------------------------------------------- leaked tracers

def test_a_leaked_tracer_names_the_function_that_made_it(interpret):
    kept = []

    def leaky(x):
        kept.append(x * 2.0)
        return np.sum(x)

    assert tracejit.function(leaky)(np.ones(3)) == 3.0
    for use in (lambda: kept[0] + 1.0, lambda: np.sum(kept[0]),
                lambda: tracejit.function(lambda y: y + kept[0])(np.ones(3)),
                lambda: bool(kept[0])):
        with pytest.raises(tracejit.LeakedTracerError) as info:
            use()
        message = str(info.value)
        assert "`leaky`" in message and re.search(r"made by mul at " + HERE, message)
    assert tracejit.function(lambda y: y + 1.0)(np.ones(2)).tolist() == [2.0, 2.0]


# ------------------------------------------------------- empty reductions

@pytest.mark.parametrize("mode", ["compiled", "interpret"])
def test_max_of_an_empty_array_raises_as_numpy_does(request, mode):
    request.getfixturevalue(mode)
    f = tracejit.function(lambda x: (np.max(x, axis=1), np.argmin(x, axis=1)))
    assert [a.tolist() for a in f(np.array([[1.0, 3.0], [2.0, 0.0]]))] == [[3.0, 2.0], [0, 1]]
    for empty in (np.ones((2, 0)), np.ones((0, 0))):
        with pytest.raises(ValueError, match="zero-size array to reduction operation maximum"
                                             "|empty sequence"):
            f(empty)
    assert [a.shape for a in f(np.ones((0, 3)))] == [(0,), (0,)]  # nothing reduced is empty
    with pytest.raises(ValueError, match="zero-size array"):
        np.ones(0).max()  # NumPy's own error, for comparison
    assert f(np.ones((1, 2)))[0].tolist() == [1.0]


def test_empty_reduction_known_while_tracing(interpret):
    with pytest.raises(tracejit.ShapeError, match="zero-size array") as info:
        tracejit.function(lambda x: x[:0].max())(np.ones(3))
    assert re.search(HERE, str(info.value))


# ------------------------------------------------------- failed calls

def test_a_failed_compile_leaves_no_entry_and_no_module(compiled, monkeypatch, tmp_path):
    monkeypatch.setenv("TRACEJIT_CACHE_DIR", str(tmp_path / "cache"))
    f = tracejit.function(lambda x: x * 3.0 + 1.0)

    def failing(self, sig):
        raise RuntimeError("simulated compile failure")

    with monkeypatch.context() as patched:
        patched.setattr(cache.Dispatcher, "compile", failing)
        with pytest.raises(RuntimeError, match="simulated"):
            f(np.ones(2))
    assert not f._recent and not f._entries and not f._fast
    assert not list((tmp_path / "cache").glob("*.py"))  # the module written was removed
    assert f(np.ones(2)).tolist() == [4.0, 4.0]
    assert f.stats.compiles == 1


def test_a_failed_trace_leaves_nothing_and_the_next_call_works(interpret):
    def f(x, flag):
        if flag:
            raise KeyError("user bug")
        return x + 1.0

    g = tracejit.function(f, static_argnums=1)
    with pytest.raises(KeyError):
        g(np.ones(2), True)
    assert not g._recent
    assert g(np.ones(2), False).tolist() == [2.0, 2.0]


# ------------------------------------------------------- static arguments

def test_static_arguments_are_keyed_by_type_and_value(interpret):
    f = tracejit.function(lambda x, k: x + (100.0 if k is True else 10.0 if type(k) is float
                                           else 1.0), static_argnums=1)
    x = np.zeros(1)
    assert [f(x, k)[0] for k in (1, 1.0, True, 1, (1,), (1.0,))] == [1, 10, 100, 1, 1, 1]
    assert f.stats.traces == 5  # (1,) and (1.0,) differ too
    h = tracejit.function(lambda x, k: x * len(k), static_argnames="k")
    with pytest.raises(tracejit.TracerTypeError, match="'k' must be hashable") as info:
        h(x, k=[1, 2])
    assert re.search(HERE, str(info.value))


# ------------------------------------------------------- debug_nans

def loss_with_a_bad_log(w, x):
    return np.sum(np.sqrt(np.log(w * x)))  # log(0.5) < 0: sqrt of it is NaN


@pytest.mark.parametrize("mode", ["compiled", "interpret"])
def test_debug_nans_names_the_op_the_pass_and_the_line(request, mode, flags):
    request.getfixturevalue(mode)
    w, x = np.ones(3), np.array([1.0, 2.0, 0.5])
    f = tracejit.function(loss_with_a_bad_log)
    assert np.isnan(f(w, x))  # off: NaN flows, nothing checked
    flags.debug_nans = True
    with pytest.raises(FloatingPointError) as info:
        f(w, x)
    message = str(info.value)
    assert re.search(r"a NaN was produced by sqrt in the forward pass, at " + HERE, message)
    with pytest.raises(FloatingPointError, match="by sqrt in the forward"):
        tracejit.value_and_grad(loss_with_a_bad_log)(w, x)
    # NaN made only by the gradient: d/dy x ** y = x ** y * log(x) at x < 0
    with pytest.raises(FloatingPointError, match=r"by log in the backward \(gradient\) pass"):
        tracejit.grad(lambda x, y: np.sum(x ** y), argnums=1)(np.array([-1.0, 2.0]), 2.0)
    assert f(w, np.array([1.0, 2.0, 3.0])) > 0  # good input: no error
    flags.debug_nans = False
    assert np.isnan(f(w, x))


def test_debug_infs_and_the_operands_named(interpret, flags):
    flags.debug_infs = True
    with pytest.raises(FloatingPointError, match=r"an infinity was produced by exp(.|\n)*"
                                                 r"arguments x") as info:
        tracejit.function(lambda x: np.exp(x) * 2.0)(np.array([1.0, 1000.0]))
    assert re.search(HERE, str(info.value))


def test_debug_checks_are_free_when_off_and_keyed_when_on(flags):
    f = tracejit.function(loss_with_a_bad_log)
    args = (np.ones(3), np.ones(3))
    plain = f.source(*args)
    assert "debug_check" not in plain
    flags.debug_nans = True
    checked = f.source(*args)
    assert "debug_check" in checked and checked != plain
    flags.debug_nans = False
    assert f.source(*args) == plain


def test_debug_nans_from_the_environment(tmp_path):
    code = ("import numpy as np, tracejit\n"
            "assert tracejit.config.debug_nans\n"
            "try:\n"
            "    tracejit.function(lambda x: np.log(x))(np.array([-1.0]))\n"
            "except FloatingPointError as err:\n"
            "    print('raised', err)\n")
    env = {**os.environ, "TRACEJIT_DEBUG_NANS": "1", "TRACEJIT_DISABLE_JIT": "1",
           "TRACEJIT_CACHE_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "raised a NaN was produced by log" in done.stdout


# ------------------------------------------------------- memory

def _use_everything(captured):
    """Functions and transformations closing over `captured`, each called once."""
    f = tracejit.function(lambda x: x + captured)
    g = tracejit.grad(lambda x: np.sum(x * captured))
    x = np.ones(captured.size)
    f(x), g(x)
    out, vjp_fn = tracejit.vjp(f, x)
    vjp_fn(np.ones(captured.size))
    jac = tracejit.jacobian(lambda v: v[:2] * captured[:2])
    jac(np.ones(2))
    return f, g, out, vjp_fn, jac


@pytest.mark.parametrize("mode", ["compiled", "interpret"])
def test_a_captured_array_is_freed_on_del_without_the_gc(request, mode):
    request.getfixturevalue(mode)
    gc.disable()
    try:
        captured = np.ones(1000)
        alive = weakref.ref(captured)
        users = _use_everything(captured)
        del captured, users
        assert alive() is None, [type(r).__name__ for r in gc.get_referrers(alive())]
    finally:
        gc.enable()


def test_the_per_function_cache_is_a_bounded_lru(interpret, flags):
    flags.cache_size = 3
    f = tracejit.function(lambda x: x.sum() * x.shape[0])  # reading the size: one entry each
    for n in (2, 3, 4):
        f(np.ones(n))
    f(np.ones(2))  # 2 is now the most recently used
    f(np.ones(5))  # evicts 3, the least recently used
    assert len(f._recent) == 3
    traces = f.stats.traces
    f(np.ones(2)), f(np.ones(4)), f(np.ones(5))
    assert f.stats.traces == traces
    f(np.ones(3))
    assert f.stats.traces == traces + 1
    with pytest.raises(ValueError):
        flags.cache_size = 0


def test_memory_is_flat_over_many_retraces(interpret):
    big = 512 * 1024  # 4 MB of float64 captured by every function
    gc.disable()  # freed by reference counting alone
    tracemalloc.start()
    try:
        for k in range(120):
            data = np.full(big, float(k))
            f = tracejit.function(lambda x, d=data: x + d[:4])
            f(np.ones(4))
            if k == 20:
                settled = tracemalloc.get_traced_memory()[0]
        grown = tracemalloc.get_traced_memory()[0] - settled
    finally:
        tracemalloc.stop()
        gc.enable()
    assert grown < 6 * 8 * big, f"{grown / 1e6:.1f} MB kept over 100 retraces"


# ------------------------------------------------------- numerics

def test_sigmoid_tail_in_float32(compiled):
    nll = tracejit.value_and_grad(lambda x: -np.log(nn.sigmoid(x)))
    value, grad = nll(np.float32(-20.0))
    assert value == np.float32(20.0) and grad == np.float32(-1.0)
    assert value.dtype == np.float32
    value, grad = tracejit.value_and_grad(lambda x: -nn.log_sigmoid(x))(np.float32(30.0))
    np.testing.assert_allclose([value, grad], [np.exp(-30.0), -np.exp(-30.0)], rtol=1e-6)


def test_special_values(interpret):
    x = np.array([-np.inf, np.inf, np.nan, 0.0, -0.0])
    np.testing.assert_array_equal(nn.sigmoid(x), [0.0, 1.0, np.nan, 0.5, 0.5])
    np.testing.assert_array_equal(nn.softplus(x[:2]), [0.0, np.inf])
    np.testing.assert_array_equal(nn.log_sigmoid(x[:2]), [-np.inf, 0.0])
    assert nn.logsumexp(np.array([0.0, -40.0])) == np.log1p(np.exp(-40.0))  # not 0
    masked = np.array([[-np.inf, 1.0], [-np.inf, -np.inf]])
    np.testing.assert_array_equal(nn.logsumexp(masked, axis=1), [1.0, -np.inf])
    np.testing.assert_array_equal(tracejit.grad(lambda v: nn.logsumexp(v[0]))(masked)[0],
                                  [0.0, 1.0])


def test_derivatives_at_zero_agree(interpret):
    assert tracejit.grad(lambda x: x ** 0.5)(0.0) == tracejit.grad(lambda x: np.sqrt(x))(0.0)
    assert tracejit.grad(lambda x: x ** 0.5)(0.0) == np.inf  # sqrt's, JAX's, PyTorch's
    assert tracejit.grad(lambda x: np.power(x, 0.5))(0.0) == np.inf
    assert tracejit.grad(nn.sigmoid)(0.0) == 0.25
    assert tracejit.grad(nn.softplus)(0.0) == 0.5
    assert tracejit.grad(tracejit.grad(nn.softplus))(0.0) == 0.25  # -|x| right at 0
    x = np.array([0.0, -1.0, 0.5])
    p = np.exp(x) / np.exp(x).sum()
    np.testing.assert_allclose(tracejit.hessian(nn.logsumexp)(x), np.diag(p) - np.outer(p, p))


def test_soft_labels_binary_cross_entropy(interpret):
    logits, labels = np.array([-3.0, 0.0, 2.0, 50.0]), np.array([0.2, 0.5, 1.0, 1.0])
    value, grad = tracejit.value_and_grad(nn.binary_cross_entropy)(logits, labels)
    s = 1 / (1 + np.exp(-logits))
    np.testing.assert_allclose(value, np.mean(labels * np.logaddexp(0, -logits) + (1 - labels)
                                              * np.logaddexp(0, logits)))
    np.testing.assert_allclose(grad[:3], (s - labels)[:3] / 4)
    assert grad[3] == -np.exp(-50.0) / 4  # confident and right: still exact


@pytest.mark.parametrize("mode", ["compiled", "interpret"])
def test_float32_reductions_accumulate_accurately(request, mode):
    request.getfixturevalue(mode)
    x = np.random.default_rng(0).random((1000, 1000)).astype(np.float32) + 10.0
    f = tracejit.function(lambda x: (np.mean(x), np.sum(x, axis=0), np.sum(x * 1.5)))
    mean, cols, scaled = f(x)
    exact = x.astype(np.longdouble)
    for got, want in ((mean, exact.mean()), (scaled, (exact * 1.5).sum())):
        assert got.dtype == np.float32
        assert abs(got - want) <= np.spacing(np.float32(want)), (got, want)
    np.testing.assert_array_less(np.abs(cols - exact.sum(axis=0)),
                                 np.spacing(cols) * 1.01)


def test_numerics_table_is_within_its_bounds(interpret):
    pytest.importorskip("mpmath")  # the references (the test extra)
    import numerics

    for row in numerics.table():
        bound = numerics.BOUNDS[row.name]
        assert row.value_ulps <= bound[0] and row.grad_ulps <= bound[1], row


def test_numerics_table_compiled(compiled):
    """The kernels' polynomial exp/log (runtime.py): the elementwise functions in
    float32, where they are tightest (the row functions share those helpers)."""
    pytest.importorskip("mpmath")
    import numerics

    for row in numerics.table((np.float32,), numerics.ELEMENTWISE):
        bound = numerics.BOUNDS[row.name]
        assert row.value_ulps <= bound[0] and row.grad_ulps <= bound[1], row


COMPILED_MATH = ("exp", "exp2", "expm1", "log", "log1p", "log10", "sqrt", "cbrt", "tanh",
                 "arcsin", "arccosh", "arctan", "erfc", "gammaln")


@pytest.mark.parametrize("mode", ["interpret", "compiled"])
def test_every_elementwise_function_within_4_ulps(request, mode):
    """A sample of each function's sweep (benchmarks/numerics.py --ufuncs has them all):
    values and derivatives within 4 ulps of mpmath. np.exp2 was 360 ulps off in
    float64 (exp(x ln 2)), tanh's derivative 1e8 in float32 (1 - tanh^2)."""
    pytest.importorskip("mpmath")
    request.getfixturevalue(mode)
    import numerics

    if mode == "compiled":  # tracejit's own math and the fast-math-sensitive rules
        table = numerics.ufunc_table((np.float32,), ("compiled",), COMPILED_MATH, 120, 48)
    else:
        table = numerics.ufunc_table(tiers=("interpreter",), n=120, sample=48)
    for row in table:
        bound = numerics.UFUNC_BOUNDS.get(row.name, (numerics.UFUNC_BOUND,) * 2)
        assert row.value_ulps <= bound[0] and row.grad_ulps <= bound[1], row
