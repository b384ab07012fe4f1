"""NumPy as users write it: the cases that used to give silent wrong answers,
random draws inside a trace, arrays built from traced values, SciPy import
styles, and the messages for what cannot be traced.

The per-function value and derivative checks live in the primitive table
(test_primitives.py); this file checks the mechanisms around them.
"""

from __future__ import annotations

import threading
import warnings

import numpy as np
import pytest
import scipy.special
import scipy.stats
from numpy.random import randn as randn_imported_by_name
from scipy.special import logsumexp
from scipy.stats import norm

import tracejit
from tracejit.numpy.random import RandomInTraceError
from tracejit.testing import check_grads

RNG = np.random.default_rng(7)


# ------------------------------------------------- np.dot is dot, not matmul

DOT_SHAPES = [((2, 3), (4, 3, 5)), ((2, 3, 4), (5, 4, 2)), ((3,), (2, 3, 4)), ((2, 3, 4), (4,))]


@pytest.mark.parametrize("sa, sb", DOT_SHAPES, ids=str)
def test_dot_of_nd_arrays_is_numpy_dot(sa, sb, interpret):
    a, b = RNG.standard_normal(sa), RNG.standard_normal(sb)
    out = tracejit.function(np.dot)(a, b)
    assert out.shape == np.dot(a, b).shape
    np.testing.assert_allclose(out, np.dot(a, b), rtol=1e-12)
    check_grads(lambda a, b: (np.dot(a, b) ** 2).sum(), (a, b), order=1)


# --------------------------------------------------------- random draws

def test_legacy_random_without_a_runtime_draw_raises_naming_the_line(interpret):
    # randn, uniform, ... draw at run time (tests/test_random.py); gamma does not
    def noisy(x):
        return (x + np.random.gamma(2.0, size=x.shape)).sum()  # the line named

    with pytest.raises(RandomInTraceError, match="np.random.gamma") as err:
        tracejit.grad(noisy)(np.ones(3))
    assert f"test_numpy_surface.py:{noisy.__code__.co_firstlineno + 1}" in str(err.value)
    assert "pass them in as an argument" in str(err.value)


def test_generator_in_a_closure_is_caught(interpret):
    rng = np.random.default_rng(0)

    def dropout(x):
        keep = rng.random(x.shape) > 0.5
        return np.where(keep, x, 0.0).sum()

    with pytest.raises(RandomInTraceError, match="Generator"):
        tracejit.function(dropout)(np.ones(4))


def test_generator_as_a_global_and_a_static_argument_are_caught(interpret):
    with pytest.raises(RandomInTraceError):
        tracejit.function(lambda x: x + RNG.standard_normal())(np.ones(2))
    f = tracejit.function(lambda x, rng: x * rng.normal(), static_argnums=1)
    with pytest.raises(RandomInTraceError):
        f(np.ones(2), np.random.default_rng(1))


def test_random_function_imported_by_name_is_caught(interpret):
    with pytest.raises(RandomInTraceError, match="global generator"):
        tracejit.function(lambda x: x + randn_imported_by_name())(np.ones(2))


def test_unseeded_default_rng_raises_and_a_seeded_one_is_a_constant(interpret):
    with pytest.raises(RandomInTraceError, match="without a seed"):
        tracejit.function(lambda x: x + np.random.default_rng().normal())(np.ones(2))
    # seeded inside the function: eager code draws the same numbers every call too
    seeded = lambda x: x + np.random.default_rng(3).normal(size=2)  # noqa: E731
    np.testing.assert_array_equal(tracejit.function(seeded)(np.ones(2)), seeded(np.ones(2)))


def test_draws_passed_in_are_fresh_on_every_call(interpret):
    rng = np.random.default_rng(5)
    f = tracejit.function(lambda x, eps: x + eps)
    first, second = f(np.zeros(3), rng.standard_normal(3)), f(np.zeros(3), rng.standard_normal(3))
    assert not np.array_equal(first, second)


def test_np_random_is_restored_after_tracing_and_untouched_in_other_threads(interpret):
    original = np.random.normal
    results = []

    def slow(x):
        worker = threading.Thread(target=lambda: results.append(np.random.normal(size=2)))
        worker.start()
        worker.join()
        return x * 2

    # The other thread draws normally; that it advanced the global generator while the
    # trace was open cannot be told from a draw of the traced function, so the trace
    # still refuses (never a silently frozen draw).
    with pytest.raises(RandomInTraceError, match="another thread"):
        tracejit.function(slow)(np.ones(2))
    assert np.random.normal is original
    assert len(results) == 1 and results[0].shape == (2,)


# ------------------------------------------------- arrays from traced values

def test_parameters_assembled_with_np_array_have_gradients(interpret):
    def loss(theta):
        a, b, c = theta[0], theta[1], theta[2]
        params = np.array([[a, b], [b, c]])
        return (params @ np.array([1.0, 2.0])).sum() + np.asarray([a * c, 1.0]).sum()

    theta = np.array([0.3, -1.2, 2.0])
    check_grads(loss, (theta,), order=2)


def test_np_array_is_numpys_again_after_the_trace(interpret):
    originals = (np.array, np.asarray, np.r_, np.c_)
    tracejit.function(lambda x: np.array([x[0], x[1]]))(np.ones(2))
    assert (np.array, np.asarray, np.r_, np.c_) == originals


def test_np_array_in_another_thread_during_a_trace(interpret):
    """The rebinding is process-wide: plain NumPy elsewhere must be unaffected."""
    seen = []

    def traced(x):
        worker = threading.Thread(target=lambda: seen.append(np.array([[1, 2], [3, 4]])))
        worker.start()
        worker.join()
        return np.array([x.sum(), 2.0])

    out = tracejit.function(traced)(np.ones(3))
    np.testing.assert_array_equal(out, [3.0, 2.0])
    np.testing.assert_array_equal(seen[0], [[1, 2], [3, 4]])
    assert seen[0].dtype == np.array([[1, 2]]).dtype


def test_ragged_list_raises_like_numpy(interpret):
    with pytest.raises(ValueError, match="different shapes"):
        tracejit.function(lambda x: np.array([x, x[:2]]))(np.ones(3))


def test_float_of_a_size_is_a_constant_and_of_data_raises(interpret):
    f = tracejit.function(lambda x: x / float(np.ones_like(x).sum()))
    np.testing.assert_allclose(f(np.arange(4.0)), np.arange(4.0) / 4)
    with pytest.raises(tracejit.ConcretizationError):
        tracejit.function(lambda x: x * float(x.sum()))(np.ones(3))


def test_control_flow_message_names_the_ways_out(interpret):
    def f(x):
        return x.sum() if x.sum() > 0 else -x.sum()

    with pytest.raises(tracejit.ConcretizationError) as err:
        tracejit.function(f)(np.ones(3))
    message = str(err.value)
    for remedy in ("np.where", "lax.cond", "lax.while_loop", "static_argnums", "GradientTape"):
        assert remedy in message
    # grad follows the branch on the eager tape instead, once warned (test_real_world.py)
    with pytest.warns(tracejit.EagerFallbackWarning, match="runs eagerly on the GradientTape"):
        np.testing.assert_allclose(tracejit.grad(f)(-np.ones(3)), -np.ones(3))


# ------------------------------------------------------------- SciPy styles

def test_scipy_functions_imported_by_name_are_traced(interpret):
    x = RNG.standard_normal((3, 4))
    f = lambda x: logsumexp(x, axis=1).sum() + norm.logpdf(x, 0.5, 2.0).sum()  # noqa: E731
    np.testing.assert_allclose(tracejit.function(f)(x), f(x), rtol=1e-12)
    check_grads(f, (x,), order=2)
    # SciPy's own code is back after the trace
    assert logsumexp.__code__ is scipy.special._logsumexp.logsumexp.__code__
    assert "logpdf" not in vars(norm)
    np.testing.assert_allclose(logsumexp(x), np.log(np.exp(x).sum()), rtol=1e-12)


def test_scipy_special_ufuncs_compiled(compiled):
    x = RNG.uniform(0.5, 2.0, 5)
    f = tracejit.value_and_grad(lambda x: (scipy.special.gammaln(x) + scipy.special.digamma(x)
                                           + scipy.special.erf(x)).sum())
    value, grad = f(x)
    np.testing.assert_allclose(value, (scipy.special.gammaln(x) + scipy.special.digamma(x)
                                       + scipy.special.erf(x)).sum(), rtol=1e-12)
    expected = (scipy.special.digamma(x) + scipy.special.polygamma(1, x)
                + 2 / np.sqrt(np.pi) * np.exp(-x * x))
    np.testing.assert_allclose(grad, expected, rtol=1e-12)


def test_stats_frozen_and_unsupported_methods_raise_clearly(interpret):
    with pytest.raises(tracejit.TracejitError):
        tracejit.function(lambda x: scipy.stats.t.cdf(x, 3.0))(np.ones(2))


# ----------------------------------------------------------- signatures

def test_grad_of_a_size_one_output(interpret):
    x = np.arange(3.0)
    np.testing.assert_allclose(tracejit.grad(lambda x: (x ** 2).sum(keepdims=True))(x), 2 * x)
    np.testing.assert_allclose(tracejit.grad(lambda x: x[None, :1] * 3.0)(x), [3.0, 0.0, 0.0])


def test_keyword_forms(interpret):
    x = RNG.standard_normal((2, 3, 4))
    out = tracejit.function(lambda x: np.swapaxes(x, axis1=0, axis2=2))(x)
    np.testing.assert_array_equal(out, np.swapaxes(x, 0, 2))


def test_traced_integer_arithmetic_picks_a_batch(compiled):
    data = np.arange(12.0).reshape(6, 2)
    f = tracejit.function(lambda data, step: data[(step % 3) * 2:(step % 3) * 2 + 2].sum())
    for step in range(5):
        assert f(data, step) == data[(step % 3) * 2:(step % 3) * 2 + 2].sum()
    assert f.stats.traces == 1


# ------------------------------------------ issue 17: silent wrong answers

@pytest.mark.parametrize("uplo", ["L", "U", "l", "u"])
def test_eigh_reads_the_triangle_uplo_names(uplo, interpret):
    """A non-symmetric input: NumPy reads one triangle only (main read 'l' as 'U')."""
    a = 5 * RNG.standard_normal((6, 6))
    w, v = tracejit.function(lambda x: np.linalg.eigh(x, uplo))(a)
    want_w, want_v = np.linalg.eigh(a, uplo)
    np.testing.assert_allclose(w, want_w, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(np.abs(v), np.abs(want_v), rtol=1e-8, atol=1e-8)


def test_eigh_uplo_broadcast_compiled_and_refused(compiled):
    a = RNG.standard_normal((2, 3, 6, 6))
    for kwargs in ({"UPLO": "U"}, {"UPLO": "l"}, {}):
        got = tracejit.function(lambda x, kw=kwargs: np.linalg.eigvalsh(x, **kw))(a)
        np.testing.assert_allclose(got, np.linalg.eigvalsh(a, **kwargs), rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="UPLO must be 'L' or 'U'"):
        tracejit.function(lambda x: np.linalg.eigh(x, "X"))(a)


def test_eigh_gradient_is_symmetrised_and_exact_by_construction(interpret):
    """The documented convention: JAX's symmetrised gradient; the exact derivative
    of NumPy's one-triangle function comes from building the symmetric matrix."""
    a = RNG.standard_normal((4, 4))
    weights = np.arange(1.0, 5.0)
    g = tracejit.grad(lambda x: np.linalg.eigvalsh(x) @ weights)(a)
    np.testing.assert_allclose(g, g.T, atol=1e-12)
    exact = lambda x: np.linalg.eigvalsh(np.tril(x) + np.tril(x, -1).T) @ weights  # noqa: E731
    check_grads(exact, (a,), order=1)
    np.testing.assert_allclose(tracejit.grad(exact)(a)[np.triu_indices(4, 1)], 0.0)


@pytest.mark.parametrize("num, endpoint", [(0, True), (1, True), (1, False), (2, True)])
def test_linspace_of_few_points_has_finite_derivatives(num, endpoint, interpret):
    def f(lo, hi):
        return np.sum(np.linspace(lo, hi, num, endpoint=endpoint) ** 2) + lo

    lo, hi = 0.3, 1.7
    np.testing.assert_allclose(tracejit.function(f)(lo, hi), f(lo, hi), rtol=1e-12)
    grads = tracejit.grad(f, (0, 1))(lo, hi)
    assert np.all(np.isfinite(grads))
    check_grads(f, (lo, hi), order=2)
    values, step = tracejit.function(lambda a, b: np.linspace(a, b, num, retstep=True))(lo, hi)
    want, want_step = np.linspace(lo, hi, num, retstep=True)
    np.testing.assert_allclose(values, want)
    np.testing.assert_allclose(step, want_step)  # NaN for num 1 with an endpoint, as NumPy


@pytest.mark.parametrize("transform", [np.fft.rfftn, np.fft.irfftn])
def test_nd_fft_picked_by_tuples_of_indices(transform, interpret):
    """x[(0, 1, 0), (3, 3, 2)]: tuples inside the key are index arrays (main: TypeError)."""
    x = RNG.standard_normal((5, 5, 5))

    def f(x):
        return np.abs(transform(x)[(0, 1, 0), (3, 3, 2)]) ** 2

    np.testing.assert_allclose(tracejit.function(f)(x), f(x), rtol=1e-10)
    check_grads(lambda x: f(x).sum(), (x,), order=1)


# ------------------------------------------------ issue 17: idioms

def test_column_stack_of_scalars_vectors_and_matrices(interpret):
    x = RNG.standard_normal(3)
    for f in (lambda x: np.column_stack([x, x ** 2]),
              lambda x: np.column_stack([x[0], x[1]]),
              lambda x: np.column_stack([x, np.ones((3, 2))])):
        np.testing.assert_allclose(tracejit.function(f)(x), f(x))


def test_reductions_and_append_of_lists_of_traced_values(interpret):
    x = RNG.standard_normal(3)
    cases = [lambda x: np.mean([x[0], x[1], 2.0]),
             lambda x: np.std([x[0], x[1] * x[2]]),
             lambda x: np.var((x[0], x[2])),
             lambda x: np.linalg.norm([x[0], x[1]]),
             lambda x: np.sum(np.append([[x[0], x[1]]], [[x[2], 1.0]], axis=0) ** 2),
             lambda x: np.sum(np.append(x, [x[0] * 2]))]
    for f in cases:
        np.testing.assert_allclose(tracejit.function(f)(x), f(x), rtol=1e-12)
        check_grads(f, (x,), order=1)


TRAIN = np.arange(40.0).reshape(20, 2)


def test_traced_integer_slicing_a_global_array_says_what_works(interpret):
    def batch(i, b=4):
        return TRAIN[slice(i * b, (i + 1) * b)].sum()

    with pytest.raises(tracejit.ConcretizationError) as err:
        tracejit.function(batch)(2)
    message = str(err.value)
    assert "not traced (a NumPy array global" in message
    assert "pass the array in as an argument" in message

    def passed_in(data, i, b=4):
        return data[i * b:(i + 1) * b].sum()

    assert tracejit.function(passed_in)(TRAIN, 2) == TRAIN[8:12].sum()


def test_jacobian_of_jacobian_composes(interpret):
    def f(x):
        return np.sin(x) * x[0] + np.array([x[1] ** 3, x[2] * x[0], 1.0])

    x = np.array([0.3, -0.5, 0.7])
    inner = tracejit.jacobian(f)
    second = tracejit.jacobian(inner)(x)
    eps = 1e-6
    fd = np.stack([(inner(x + eps * e) - inner(x - eps * e)) / (2 * eps) for e in np.eye(3)],
                  axis=-1)
    assert second.shape == (3, 3, 3)
    np.testing.assert_allclose(second, fd, atol=1e-7)
    hess = tracejit.jacobian(tracejit.jacobian(lambda x: np.sum(x ** 3)))(x)
    np.testing.assert_allclose(hess, np.diag(6 * x), atol=1e-12)


def test_eig_of_a_stack_vmapped_and_reconstructed(interpret):
    """Always complex results (as JAX); A V = V diag(w), unit columns; vmap batches the record."""
    a = RNG.standard_normal((2, 3, 4, 4))
    w, v = tracejit.function(np.linalg.eig)(a)
    assert w.dtype == np.complex128 and v.shape == (2, 3, 4, 4)
    np.testing.assert_allclose(a @ v, v * w[..., None, :], atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(v, axis=-2), 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback loop: eig has a batching rule
        mapped = tracejit.vmap(np.linalg.eigvals)(a[0])
    np.testing.assert_allclose(mapped, w[0], atol=1e-12)
