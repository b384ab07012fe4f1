"""The public API's behaviours: pytrees, static arguments, retracing and
recompiling, inspection, errors, the transformations, and NaN-safe gradients.

Tests that take `mode` run twice: through the NumPy reference interpreter
(TRACEJIT_DISABLE_JIT=1) and as Numba kernels. Compiles cost about a second
each, so the other tests use the interpreter unless compiling is the point.
"""

import os

import numpy as np
import pytest

import tracejit

RNG = np.random.default_rng(7)


# ------------------------------------------------------------------ pytrees


def test_pytrees_in_and_out(interpret):
    @tracejit.function
    def f(params, xs, scale):
        (w, b), layers = params["linear"], params["layers"]
        y = xs[0] @ w + b
        return {"y": y * scale, "parts": [y, (layers[0] * xs[1],)], "nothing": None}

    w, b, layer = RNG.standard_normal((3, 2)), RNG.standard_normal(2), RNG.standard_normal(4)
    x0, x1 = RNG.standard_normal((5, 3)), RNG.standard_normal(4)
    out = f({"linear": (w, b), "layers": [layer]}, [x0, x1], 2.0)
    assert sorted(out) == ["nothing", "parts", "y"]
    assert out["nothing"] is None
    assert isinstance(out["parts"], list) and isinstance(out["parts"][1], tuple)
    np.testing.assert_allclose(out["y"], 2.0 * (x0 @ w + b))
    np.testing.assert_allclose(out["parts"][0], x0 @ w + b)
    np.testing.assert_allclose(out["parts"][1][0], layer * x1)


def test_none_in_an_input_pytree(interpret):
    x = np.arange(3.0)
    assert tracejit.function(lambda pair: pair[1] * 2.0)((None, x)).tolist() == [0.0, 2.0, 4.0]


def test_grad_has_the_structure_of_its_argument(interpret):
    params = {"w": RNG.standard_normal(3), "layers": [(RNG.standard_normal(3), 0.5)]}

    def loss(p):
        a, c = p["layers"][0]
        return np.sum(p["w"] * a) * c

    grads = tracejit.grad(loss)(params)
    assert isinstance(grads["layers"], list) and isinstance(grads["layers"][0], tuple)
    a, c = params["layers"][0]
    np.testing.assert_allclose(grads["w"], a * c)
    np.testing.assert_allclose(grads["layers"][0][0], params["w"] * c)
    np.testing.assert_allclose(grads["layers"][0][1], np.sum(params["w"] * a))


def test_keyword_arguments(interpret):
    f = tracejit.function(lambda a, b: a - b)
    x, y = np.arange(3.0), np.ones(3)
    np.testing.assert_array_equal(f(b=y, a=x), x - y)
    np.testing.assert_array_equal(f(x, b=y), x - y)


# --------------------------------------------------------- static arguments


def test_static_argnums_retrace_only_for_a_new_static_value(interpret):
    @tracejit.function(static_argnums=1)
    def power(x, n):
        return x**n

    x = np.array([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(power(x, 2), x**2)
    np.testing.assert_array_equal(power(x + 1, 2), (x + 1) ** 2)
    assert power.stats.traces == 1
    np.testing.assert_array_equal(power(x, 3), x**3)
    assert power.stats.traces == 2


def test_static_argnames(interpret):
    @tracejit.function(static_argnames="activation")
    def layer(x, activation="tanh"):
        return np.tanh(x) if activation == "tanh" else np.maximum(x, 0.0)

    x = np.array([-1.0, 0.5])
    np.testing.assert_allclose(layer(x), np.tanh(x))
    np.testing.assert_allclose(layer(x, activation="relu"), [0.0, 0.5])
    np.testing.assert_allclose(layer(x * 2, activation="relu"), [0.0, 1.0])
    assert layer.stats.traces == 2


def test_unhashable_static_argument_is_a_type_error(interpret):
    f = tracejit.function(lambda x, opts: x * len(opts), static_argnums=1)
    with pytest.raises(TypeError, match="opts"):
        f(np.ones(2), [1, 2])


# ---------------------------------------------------- retracing, recompiling
# cache=False where compiles are counted: a disk-cache hit would not count.


def test_python_scalar_is_a_runtime_input(compiled):
    @tracejit.function(cache=False)
    def sgd_update_lr(w, g, lr):
        return w - lr * g

    w, g = np.ones(3), np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(sgd_update_lr(w, g, 0.1), [0.9, 0.8, 0.7])
    np.testing.assert_allclose(sgd_update_lr(w, g, 0.01), [0.99, 0.98, 0.97])
    assert sgd_update_lr.stats.traces == 1
    assert sgd_update_lr.stats.compiles == 1


def test_new_batch_size_does_not_retrace_or_recompile(compiled):
    @tracejit.function(cache=False)
    def scores_batch(x, w):
        return np.tanh(x @ w).sum(axis=1)

    w = RNG.standard_normal((3, 2))
    for batch in (4, 9, 2):
        x = RNG.standard_normal((batch, 3))
        np.testing.assert_allclose(scores_batch(x, w), np.tanh(x @ w).sum(axis=1))
    assert scores_batch.stats.traces == 1
    assert scores_batch.stats.compiles == 1


def test_grad_for_a_new_batch_size_in_the_interpreter(interpret):
    loss_grad = tracejit.grad(lambda x: np.sum(x**2))
    np.testing.assert_array_equal(loss_grad(np.ones(3)), [2.0] * 3)
    np.testing.assert_array_equal(loss_grad(np.ones(5)), [2.0] * 5)


def test_last_smaller_batch_while_the_kernel_compiles(monkeypatch):
    """By default the first calls run the interpreter while Numba compiles in
    the background; a training loop's last, smaller batch can arrive then."""
    monkeypatch.delenv("TRACEJIT_DISABLE_JIT", raising=False)
    monkeypatch.delenv("TRACEJIT_COMPILE", raising=False)
    loss_grad = tracejit.grad(lambda w, x: np.mean((x @ w) ** 2))
    w = RNG.standard_normal(3)
    for batch in (4, 2):
        x = RNG.standard_normal((batch, 3))
        np.testing.assert_allclose(loss_grad(w, x), 2 * x.T @ (x @ w) / batch)


def test_reading_the_shape_retraces_for_a_new_size(interpret):
    @tracejit.function
    def times_length(x):
        return x * x.shape[0]

    np.testing.assert_array_equal(times_length(np.ones(3)), [3.0] * 3)
    np.testing.assert_array_equal(times_length(np.ones(4)), [4.0] * 4)
    np.testing.assert_array_equal(times_length(np.ones(4)), [4.0] * 4)
    assert times_length.stats.traces == 2


def test_float32_stays_float32_with_python_scalars(mode):
    def loss(w, x, lr):
        return np.mean((x @ w * 2.0 + 1 - x[:, 0] / 3) ** 2) * lr

    w, x = np.ones(3, np.float32), RNG.standard_normal((4, 3)).astype(np.float32)
    value, grad = tracejit.value_and_grad(loss)(w, x, 0.5)
    assert value.dtype == np.float32 and grad.dtype == np.float32
    assert tracejit.function(lambda x: x * 2.5 + 1)(x).dtype == np.float32


# --------------------------------------------------------------- inspection


def test_ir_prints_readably(interpret):
    def layer(x, w):
        return np.tanh(x @ w).sum()

    x, w = np.ones((4, 3)), np.ones((3, 2))
    for ir in (tracejit.function(layer).ir(x, w), tracejit.make_ir(layer)(x, w)):
        text = str(ir)
        for word in ("matmul", "tanh", "reduce_sum", "f64"):
            assert word in text
        assert len(text.splitlines()) >= 4  # one equation a line


def test_source_is_a_numba_kernel(interpret):
    source = tracejit.function(lambda x: np.exp(x) + 1.0).source(np.ones(3))
    assert "@njit" in source
    compile(source, "<kernel>", "exec")  # valid Python


# ----------------------------------------------------- shape errors at call


def test_matmul_inner_dimension_mismatch_names_matmul(mode):
    f = tracejit.function(lambda a, b: a @ b)
    f(np.ones((2, 3)), np.ones((3, 4)))
    with pytest.raises(ValueError, match="matmul"):
        f(np.ones((2, 5)), np.ones((3, 4)))


def test_elementwise_size_mismatch_raises(mode):
    f = tracejit.function(lambda a, b: a * b)
    f(np.ones(3), np.ones(3))
    with pytest.raises(ValueError):
        f(np.ones(5), np.ones(3))


def test_compiled_shape_check_names_the_op(compiled):
    f = tracejit.function(lambda a, b: a * b + 1.0)
    f(np.ones(3), np.ones(3))
    with pytest.raises(ValueError, match="mul"):
        f(np.ones(5), np.ones(3))


def test_out_of_range_index_raises_instead_of_reading(mode):
    f = tracejit.function(lambda E, idx: E[idx] * 2.0)
    E = np.ones((4, 2))
    np.testing.assert_array_equal(f(E, np.array([0, 3, -4])), np.full((3, 2), 2.0))
    for bad in ([0, 4], [-5, 1], [1 << 20, 0]):
        with pytest.raises(IndexError):
            f(E, np.array(bad))


# ------------------------------------------------------ errors while tracing


def branchy(x):
    if x.sum() > 0:  # the line the error must point at
        return x
    return -x


def test_python_if_on_a_traced_value(interpret):
    with pytest.raises(tracejit.ConcretizationError) as err:
        tracejit.function(branchy)(np.ones(3))
    assert isinstance(err.value, TypeError)
    message = str(err.value)
    assert f"{os.path.basename(__file__)}:{branchy.__code__.co_firstlineno + 1}" in message
    assert "np.where" in message


def test_unsupported_numpy_function_is_named(interpret):
    with pytest.raises(tracejit.UnsupportedError, match="linalg.qr"):
        tracejit.function(lambda x: np.linalg.qr(x)[1].sum())(np.eye(3))


def test_string_leaf_is_a_type_error(interpret):
    with pytest.raises(TypeError):
        tracejit.function(lambda x, name: x * 2)(np.ones(2), "double")


def test_grad_with_respect_to_an_integer_array(interpret):
    f = lambda x, counts: np.sum(x * counts)  # noqa: E731
    with pytest.raises(TypeError, match="respect to counts"):
        tracejit.grad(f, argnums=1)(np.ones(3), np.arange(3))
    np.testing.assert_array_equal(tracejit.grad(f)(np.ones(3), np.arange(3)), [0, 1, 2])


# ----------------------------------------------------------- transformations


def test_has_aux(interpret):
    def loss(w):
        residual = w - 1.0
        return np.sum(residual**2), {"residual": residual}

    w = np.array([0.0, 3.0])
    grads, aux = tracejit.grad(loss, has_aux=True)(w)
    np.testing.assert_array_equal(grads, [-2.0, 4.0])
    np.testing.assert_array_equal(aux["residual"], [-1.0, 2.0])
    (value, aux), grads = tracejit.value_and_grad(loss, has_aux=True)(w)
    assert value == 5.0
    np.testing.assert_array_equal(aux["residual"], [-1.0, 2.0])


def test_argnums_tuple(interpret):
    def f(a, b, c):
        return np.sum(a * b**2 * c)

    a, b, c = np.array([1.0, 2.0]), np.array([3.0, 4.0]), np.array([5.0, 6.0])
    da, dc = tracejit.grad(f, argnums=(0, 2))(a, b, c)
    np.testing.assert_array_equal(da, b**2 * c)
    np.testing.assert_array_equal(dc, a * b**2)
    value, (db,) = tracejit.value_and_grad(f, argnums=(1,))(a, b, c)
    assert value == f(a, b, c)
    np.testing.assert_array_equal(db, 2 * a * b * c)


def test_grad_of_grad_of_a_scalar_function(interpret):
    cube = lambda x: x**3  # noqa: E731
    assert tracejit.grad(tracejit.grad(cube))(2.0) == 12.0
    assert tracejit.grad(tracejit.grad(tracejit.grad(cube)))(2.0) == 6.0


def test_grad_of_grad_of_a_vector_function(interpret):
    inner = tracejit.grad(lambda y: np.sum(y**3))  # 3 y^2
    x = np.array([1.0, -2.0, 0.5])
    np.testing.assert_allclose(tracejit.grad(lambda x: np.sum(inner(x)))(x), 6 * x)


def test_hessian(interpret):
    A = np.array([[2.0, 1.0], [0.0, 3.0]])
    x = np.array([0.3, -1.2])

    def f(x):
        return 0.5 * x @ A @ x + np.sum(np.sin(x))

    np.testing.assert_allclose(tracejit.hessian(f)(x), (A + A.T) / 2 - np.diag(np.sin(x)))


def test_jacobian(interpret):
    A = RNG.standard_normal((2, 3))
    x = RNG.standard_normal(3)
    jac = tracejit.jacobian(lambda x: A @ np.tanh(x))(x)
    np.testing.assert_allclose(jac, A * (1 - np.tanh(x) ** 2))
    da, db = tracejit.jacobian(lambda a, b: a * b, argnums=(0, 1))(x, 2 * x)
    np.testing.assert_allclose(da, np.diag(2 * x))
    np.testing.assert_allclose(db, np.diag(x))


def test_jvp(interpret):
    x, y = np.array([0.5, -1.0]), np.array([2.0, 0.25])
    tx, ty = np.array([1.0, 2.0]), np.array([-1.0, 3.0])
    out, tangent = tracejit.jvp(lambda x, y: x * np.sin(y), (x, y), (tx, ty))
    np.testing.assert_allclose(out, x * np.sin(y))
    np.testing.assert_allclose(tangent, tx * np.sin(y) + x * np.cos(y) * ty)


def test_vjp(interpret):
    x, y = np.array([0.5, -1.0]), np.array([2.0, 0.25])
    out, vjp_fn = tracejit.vjp(lambda x, y: (x * y, np.sum(x)), x, y)
    np.testing.assert_allclose(out[0], x * y)
    assert out[1] == np.sum(x)
    ct = np.array([1.0, -2.0])
    dx, dy = vjp_fn((ct, 3.0))
    np.testing.assert_allclose(dx, ct * y + 3.0)
    np.testing.assert_allclose(dy, ct * x)


def test_vjp_and_jacrev_of_a_function_with_a_literal_output(interpret):
    # the literal takes a cotangent too, so the next output's is not shifted onto it
    x = np.array([0.5, -1.0])
    (dx,) = tracejit.vjp(lambda x: (3.0, x * x), x)[1]((7.0, np.array([1.0, 2.0])))
    np.testing.assert_allclose(dx, [1.0, -4.0])
    d_literal, d_square = tracejit.jacrev(lambda x: (3.0, x * x))(x)
    np.testing.assert_allclose(d_literal, 0.0)
    np.testing.assert_allclose(d_square, np.diag(2 * x))


def test_vjp_of_integer_indexing(mode):
    E, idx = np.arange(8.0).reshape(4, 2), np.array([3, 0, 3])
    out, vjp_fn = tracejit.vjp(lambda E: E[idx] * 2.0, E)
    np.testing.assert_array_equal(out, E[idx] * 2.0)
    (dE,) = vjp_fn(np.ones((3, 2)))
    np.testing.assert_array_equal(dE, [[2, 2], [0, 0], [0, 0], [4, 4]])


def test_stop_gradient(mode):
    x = np.array([1.0, -2.0, 3.0])
    np.testing.assert_array_equal(
        tracejit.grad(lambda x: np.sum(x * tracejit.stop_gradient(x)))(x), x)


def test_decorated_method_binds_self(interpret):
    class Scaler:
        def __init__(self, scale):
            self.scale = scale

        @tracejit.function
        def apply(self, x):
            return x * self.scale

    np.testing.assert_array_equal(Scaler(3.0).apply(np.ones(2)), [3.0, 3.0])


# ---------------------------------------------------------------- NaN safety
# The gradient must stay finite where a branch not taken (or a zero
# cotangent) meets an infinite partial derivative.


def logsumexp(x):
    m = np.max(x)
    return m + np.log(np.sum(np.exp(x - m)))


def softmax(x):
    e = np.exp(x - np.max(x))
    return e / np.sum(e)


def test_where_log_at_zero(mode):
    grad = tracejit.grad(lambda x: np.sum(np.where(x > 0, np.log(x), 0.0)))
    np.testing.assert_array_equal(grad(np.array([0.0, 2.0])), [0.0, 0.5])


def test_sqrt_at_zero(mode):
    """+inf, the one-sided derivative, as JAX and PyTorch (it was 0); a zero cotangent
    still contributes nothing: where(x > 0, sqrt(x), 0) is flat at 0."""
    grad = tracejit.grad(lambda x: np.sum(np.sqrt(x)))
    np.testing.assert_array_equal(grad(np.array([0.0, 4.0])), [np.inf, 0.25])
    guarded = tracejit.grad(lambda x: np.sum(np.where(x > 0, np.sqrt(x), 0.0)))
    np.testing.assert_array_equal(guarded(np.array([0.0, 4.0])), [0.0, 0.25])
    for power in (lambda x: x ** 0.5, lambda x: np.power(x, 0.5), lambda x: x ** 0.3):
        assert tracejit.grad(power)(0.0) == np.inf
    assert tracejit.grad(lambda x: x ** np.float64(0.0))(0.0) == 0.0  # constant: no 0 * inf
    assert tracejit.grad(lambda x: np.power(x, np.zeros(())))(0.0) == 0.0


def test_derivatives_at_the_edge_of_the_domain(mode):
    """log at 0, arcsin / arccos at +-1: infinite, as JAX and PyTorch; abs at 0: the
    subgradient 0 (PyTorch's; JAX takes 1)."""
    assert tracejit.grad(np.log)(0.0) == np.inf
    assert tracejit.grad(np.arcsin)(1.0) == np.inf and tracejit.grad(np.arcsin)(-1.0) == np.inf
    assert tracejit.grad(np.arccos)(1.0) == -np.inf
    assert tracejit.grad(np.abs)(0.0) == 0.0


def test_norm_at_zero(mode):
    """Norms (and std, hypot) take the subgradient 0 at 0, as PyTorch (JAX gives NaN)."""
    zeros = np.zeros(3)
    for norm in (np.linalg.norm, lambda x: np.linalg.norm(x, 3),
                 lambda x: np.linalg.norm(x.reshape(1, 3), "fro"),
                 lambda x: np.sum(np.linalg.norm(x[:, None], axis=1)), np.std,
                 lambda x: np.sum(np.hypot(x, 0.0))):
        np.testing.assert_array_equal(tracejit.grad(norm)(zeros), zeros)
    np.testing.assert_allclose(tracejit.grad(np.linalg.norm)(np.array([3.0, 4.0])), [0.6, 0.8])
    np.testing.assert_allclose(tracejit.grad(lambda x: np.linalg.norm(x, 3))(np.array([1.0, 1.0])),
                               [2 ** (-2 / 3)] * 2)


def test_edge_derivatives_agree_with_jax(jax_x64):
    jnp = jax_x64.numpy
    for ours, theirs, at in [(np.sqrt, jnp.sqrt, 0.0), (np.log, jnp.log, 0.0),
                             (np.arcsin, jnp.arcsin, 1.0), (np.arcsin, jnp.arcsin, -1.0),
                             (lambda x: x ** 0.5, lambda x: x ** 0.5, 0.0)]:
        assert tracejit.grad(ours)(at) == float(jax_x64.grad(theirs)(at))


def test_logsumexp_with_minus_inf(mode):
    x = np.array([0.0, -np.inf, 1.0])
    grad = tracejit.grad(logsumexp)(x)
    np.testing.assert_allclose(grad, np.array([1.0, 0.0, np.e]) / (1.0 + np.e))


def test_softmax_with_minus_inf(mode):
    x, c = np.array([0.0, -np.inf, 1.0]), np.array([1.0, 5.0, -1.0])
    grad = tracejit.grad(lambda x: np.sum(softmax(x) * c))(x)
    p = np.array([1.0, 0.0, np.e]) / (1.0 + np.e)
    np.testing.assert_allclose(grad, p * (c - p @ c))
    assert grad[1] == 0.0


# ------------------------------------------------------ interpreter vs Numba


def mlp_loss(params, x, y):
    (W1, b1), (W2, b2) = params
    h = np.maximum(x @ W1 + b1, 0.0)
    z = np.tanh(h @ W2 + b2)
    return np.mean(np.sum((z - y) ** 2, axis=1)) + 1e-3 * np.sum(W1 * W1)


def test_interpreter_gives_the_compiled_results(monkeypatch):
    params = [(RNG.standard_normal((4, 6)), RNG.standard_normal(6)),
              (RNG.standard_normal((6, 2)), RNG.standard_normal(2))]
    x, y = RNG.standard_normal((16, 4)), RNG.standard_normal((16, 2))
    monkeypatch.setenv("TRACEJIT_DISABLE_JIT", "1")
    want_value, want_grads = tracejit.value_and_grad(mlp_loss)(params, x, y)
    monkeypatch.delenv("TRACEJIT_DISABLE_JIT")
    monkeypatch.setenv("TRACEJIT_COMPILE", "sync")
    loss_and_grads = tracejit.value_and_grad(mlp_loss)
    value, grads = loss_and_grads(params, x, y)
    assert loss_and_grads.stats.compiles + loss_and_grads.stats.disk_hits == 1
    assert value == pytest.approx(want_value, rel=1e-12)
    for (gw, gb), (ww, wb) in zip(grads, want_grads):
        np.testing.assert_allclose(gw, ww, rtol=1e-11, atol=1e-15)
        np.testing.assert_allclose(gb, wb, rtol=1e-11, atol=1e-15)
