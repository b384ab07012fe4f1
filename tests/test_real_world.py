"""Loss functions as scientific NumPy code is written, differentiated unmodified.

In the style of HIPS autograd's examples (written afresh here): parameters
assembled with `np.array([...])`, a Gaussian-process marginal likelihood
through a Cholesky factor, a mixture model through `logsumexp`, a small
convolution written with `einsum` and with slicing, an LSTM unrolled over a
sequence, an ODE integrated with a fixed-step RK4 loop, a logistic regression
with `np.dot`, and a variational objective whose noise is an argument.

Every case is checked against central finite differences
(`tracejit.testing.check_grads`, float64, interpreter) and, when HIPS autograd
is installed, against autograd's gradient of the same source (the module's
`np`, `logsumexp`, `norm`, `solve_triangular` names rebound to autograd's).
A few are compiled with Numba and compared with the interpreter.

Then programs whose Python control flow reads values (a fixed-point iteration,
a series summed to tolerance: `grad` runs them on the eager tape) and an ODE
net integrated by RK4 in a Python loop (rolled back into one loop).
"""

from __future__ import annotations

import types
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from scipy.linalg import solve_triangular
from scipy.special import logsumexp
from scipy.stats import norm

import tracejit
from tracejit.testing import check_grads

RNG = np.random.default_rng(20261201)


# ------------------------------------------------------------------ the models

def damped_oscillator(theta, t, y):
    """Parameters as scalars, assembled into the model with np.array."""
    amplitude, decay, frequency = theta[0], theta[1], theta[2]
    coeffs = np.array([amplitude, -decay, frequency])
    model = coeffs[0] * np.exp(coeffs[1] * t) * np.cos(coeffs[2] * t)
    return np.mean((model - y) ** 2)


def gp_negative_log_marginal(log_params, x, y):
    """-log p(y | x) of a GP with an RBF kernel and Gaussian noise."""
    lengthscale, variance, noise = np.exp(log_params[0]), np.exp(log_params[1]), np.exp(
        log_params[2])
    sqdist = (x[:, None] - x[None, :]) ** 2
    K = variance * np.exp(-0.5 * sqdist / lengthscale ** 2) + (noise + 1e-6) * np.eye(len(x))
    L = np.linalg.cholesky(K)
    alpha = solve_triangular(L, y, lower=True)
    return 0.5 * np.dot(alpha, alpha) + np.sum(np.log(np.diag(L))) + 0.5 * len(x) * np.log(
        2 * np.pi)


def gp_with_solve(log_params, x, y):
    """The same likelihood through np.linalg.solve and slogdet."""
    lengthscale, variance = np.exp(log_params[0]), np.exp(log_params[1])
    K = variance * np.exp(-0.5 * (x[:, None] - x[None, :]) ** 2 / lengthscale ** 2)
    K = K + np.exp(log_params[2]) * np.eye(x.shape[0])
    _, logdet = np.linalg.slogdet(K)
    return 0.5 * y @ np.linalg.solve(K, y) + 0.5 * logdet


def gaussian_mixture_nll(params, x):
    """Negative log-likelihood of a 1-D mixture of Gaussians."""
    logits, means, log_scales = params[0], params[1], params[2]
    log_weights = logits - logsumexp(logits)
    log_probs = norm.logpdf(x[:, None], means[None, :], np.exp(log_scales)[None, :])
    return -np.sum(logsumexp(log_weights[None, :] + log_probs, axis=1))


def conv1d_einsum(kernel, signal):
    """A valid 1-D convolution over channels: patches by slicing, contraction by einsum."""
    width = kernel.shape[2]
    length = signal.shape[1] - width + 1
    patches = np.stack([signal[:, k:k + length] for k in range(width)], axis=-1)
    out = np.einsum("oik,ilk->ol", kernel, patches)
    return np.sum(np.tanh(out) ** 2)


def conv2d_slicing(filters, images):
    """A 3x3 valid convolution of a batch of images written with slices."""
    n, h, w = images.shape
    out = 0.0
    for i in range(3):
        for j in range(3):
            out = out + filters[i, j] * images[:, i:h - 2 + i, j:w - 2 + j]
    return np.mean(np.maximum(out, 0.0) ** 2)


def sigmoid(z):
    return 0.5 * (np.tanh(0.5 * z) + 1.0)


def lstm_loss(params, xs, target):
    """An LSTM unrolled over the rows of xs; squared error of a readout."""
    W, U, b, v = params
    hidden = U.shape[1]
    h = np.zeros(hidden)
    c = np.zeros(hidden)
    for t in range(xs.shape[0]):
        gates = np.dot(W, xs[t]) + np.dot(U, h) + b
        i = sigmoid(gates[:hidden])
        f = sigmoid(gates[hidden:2 * hidden])
        o = sigmoid(gates[2 * hidden:3 * hidden])
        g = np.tanh(gates[3 * hidden:])
        c = f * c + i * g
        h = o * np.tanh(c)
    return (np.dot(v, h) - target) ** 2


def lotka_volterra_fit(log_rates, y0, observed):
    """Fixed-step RK4 integration of a predator-prey ODE, fitted to observations."""
    a, b, c, d = np.exp(log_rates)

    def rhs(state):
        prey, predator = state[0], state[1]
        return np.array([a * prey - b * prey * predator, d * prey * predator - c * predator])

    dt, state, loss = 0.05, y0, 0.0
    for step in range(observed.shape[0]):
        k1 = rhs(state)
        k2 = rhs(state + 0.5 * dt * k1)
        k3 = rhs(state + 0.5 * dt * k2)
        k4 = rhs(state + dt * k3)
        state = state + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
        loss = loss + np.sum((state - observed[step]) ** 2)
    return loss


def logistic_regression(w, X, labels):
    logits = np.dot(X, w[:-1]) + w[-1]
    return np.mean(np.logaddexp(0.0, logits) - labels * logits) + 0.01 * np.dot(w, w)


def elbo(variational, eps, x):
    """A reparameterised Gaussian ELBO for the mean of Gaussian data (noise passed in)."""
    mean, log_std = variational[0], variational[1]
    samples = mean + np.exp(log_std) * eps
    log_lik = np.sum(norm.logpdf(x[None, :], samples[:, None], 1.0), axis=1)
    log_prior = norm.logpdf(samples, 0.0, 3.0)
    entropy = log_std + 0.5 * np.log(2 * np.pi * np.e)
    return -(np.mean(log_lik + log_prior) + entropy)


def trace_regularised_quadratic(A, B):
    """A matrix objective with trace, inverse, triangles and Frobenius norms."""
    M = A @ A.T + 3.0 * np.eye(A.shape[0])
    return (np.trace(np.linalg.inv(M) @ B) + np.linalg.norm(np.triu(A), "fro") ** 2
            + np.sum(np.cumsum(np.diag(M))))


# ------------------------------------------------------------------ the cases

@dataclass
class Case:
    fn: Callable
    params: tuple  # differentiated arguments
    data: tuple = ()
    order: int = 1
    tol: float = 1e-5


def _series():
    t = np.linspace(0.0, 4.0, 25)
    return t, 1.3 * np.exp(-0.4 * t) * np.cos(2.1 * t) + 0.05 * RNG.standard_normal(t.size)


def _gp_data():
    x = np.sort(RNG.uniform(-2, 2, 8))
    return x, np.sin(2 * x) + 0.1 * RNG.standard_normal(8)


def _lstm_params(inputs=3, hidden=4):
    return [0.4 * RNG.standard_normal((4 * hidden, inputs)),
            0.4 * RNG.standard_normal((4 * hidden, hidden)), 0.1 * RNG.standard_normal(
                4 * hidden), RNG.standard_normal(hidden)]


def _predator_prey():
    observed = np.abs(1.0 + 0.2 * RNG.standard_normal((12, 2)))
    return np.log(np.array([1.0, 0.5, 0.8, 0.4])), np.array([1.0, 0.6]), observed


X_LOGISTIC = RNG.standard_normal((20, 3))

CASES = {
    "damped_oscillator": Case(damped_oscillator, (np.array([1.0, 0.3, 2.0]),), _series(),
                              order=2),
    "gp_cholesky": Case(gp_negative_log_marginal, (np.log(np.array([0.7, 1.2, 0.05])),),
                        _gp_data(), order=2, tol=1e-4),
    "gp_solve": Case(gp_with_solve, (np.log(np.array([0.9, 0.8, 0.1])),), _gp_data()),
    "gaussian_mixture": Case(gaussian_mixture_nll,
                             (np.array([[0.1, -0.3, 0.2], [-1.0, 0.5, 2.0], [0.0, -0.5, 0.3]]),),
                             (np.concatenate([RNG.normal(-1, 0.5, 10), RNG.normal(2, 1, 10)]),),
                             order=2),
    "conv1d_einsum": Case(conv1d_einsum, (0.5 * RNG.standard_normal((2, 3, 3)),),
                          (RNG.standard_normal((3, 10)),), order=2),
    "conv2d_slicing": Case(conv2d_slicing, (RNG.standard_normal((3, 3)),),
                           (RNG.standard_normal((2, 6, 7)),)),
    "lstm": Case(lstm_loss, (_lstm_params(),), (RNG.standard_normal((5, 3)), 0.7)),
    "lotka_volterra": Case(lotka_volterra_fit, _predator_prey()[:1], _predator_prey()[1:],
                           tol=1e-4),
    "logistic_regression": Case(logistic_regression, (0.1 * RNG.standard_normal(4),),
                                (X_LOGISTIC, (X_LOGISTIC[:, 0] > 0).astype(float)), order=2),
    "elbo": Case(elbo, (np.array([0.3, -0.5]),), (RNG.standard_normal(16),
                                                  RNG.normal(1.0, 1.0, 12)), order=2),
    "matrix_objective": Case(trace_regularised_quadratic, (RNG.standard_normal((3, 3)),),
                             (RNG.standard_normal((3, 3)),), order=2),
}
NAMES = sorted(CASES)


def _argnums(case):
    return tuple(range(len(case.params)))


@pytest.mark.parametrize("name", NAMES)
def test_value_matches_numpy(name, interpret):
    case = CASES[name]
    value = tracejit.function(case.fn)(*case.params, *case.data)
    np.testing.assert_allclose(value, case.fn(*case.params, *case.data), rtol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_gradients_match_finite_differences(name, interpret):
    case = CASES[name]
    n = len(case.params)

    def of_params(*params):
        return case.fn(*params, *case.data)

    check_grads(of_params, case.params[:n], order=case.order, atol=case.tol, rtol=case.tol)


# ------------------------------------------------------------------ autograd

@pytest.fixture(scope="module")
def autograd_names():
    autograd = pytest.importorskip("autograd")
    import autograd.numpy as anp
    import autograd.scipy.linalg as asla
    import autograd.scipy.special as asp
    import autograd.scipy.stats as ast
    return autograd, {"np": anp, "logsumexp": asp.logsumexp, "norm": ast.norm,
                      "solve_triangular": asla.solve_triangular}


def _rebound(fn, names):
    """`fn` with this module's globals (and the helpers it calls) rebound to `names`."""
    namespace = dict(fn.__globals__, **names)
    for name, value in fn.__globals__.items():
        if isinstance(value, types.FunctionType) and value.__module__ == __name__:
            namespace[name] = types.FunctionType(value.__code__, namespace, name,
                                                 value.__defaults__, value.__closure__)
    return namespace[fn.__name__]


@pytest.mark.parametrize("name", NAMES)
def test_gradients_match_autograd(name, interpret, autograd_names):
    autograd, names = autograd_names
    case = CASES[name]
    peer = _rebound(case.fn, names)
    want = autograd.grad(peer, _argnums(case))(*case.params, *case.data)
    got = tracejit.grad(case.fn, _argnums(case))(*case.params, *case.data)
    for g, w in zip(got, want):
        for gl, wl in zip(g if isinstance(g, list) else [g], w if isinstance(w, list) else [w]):
            np.testing.assert_allclose(gl, wl, rtol=1e-8, atol=1e-10)


# ------------------------------------------------------------------ compiled

@pytest.mark.parametrize("name", ["gp_cholesky", "gaussian_mixture", "conv1d_einsum"])
def test_compiled_matches_interpreter(name, monkeypatch):
    case = CASES[name]
    args = (*case.params, *case.data)
    monkeypatch.setenv("TRACEJIT_DISABLE_JIT", "1")
    want_value, want_grads = tracejit.value_and_grad(case.fn, _argnums(case))(*args)
    monkeypatch.delenv("TRACEJIT_DISABLE_JIT")
    monkeypatch.setenv("TRACEJIT_COMPILE", "sync")
    f = tracejit.value_and_grad(case.fn, _argnums(case))
    value, grads = f(*args)
    assert f.stats.compiles + f.stats.disk_hits == 1
    np.testing.assert_allclose(value, want_value, rtol=1e-12)
    for g, w in zip(grads, want_grads):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)


# ------------------------------------- value-dependent control flow under grad

def fixed_point_cosine(a):
    """The solution of y = cos(a * y), iterated to convergence (a `while` on values)."""
    y = 0.5
    while np.abs(np.cos(a * y) - y) > 1e-13:
        y = np.cos(a * y)
    return y


def taylor_sine(x):
    """sin(x) summed term by term until a term is negligible."""
    term, total, k = x, x, 1
    while np.max(np.abs(term)) > 1e-16:
        term = -term * x * x / ((2 * k) * (2 * k + 1))
        total = total + term
        k += 1
    return np.sum(total)


def test_grad_of_a_fixed_point_iteration_runs_eagerly(interpret):
    grad = tracejit.grad(fixed_point_cosine)
    with pytest.warns(tracejit.EagerFallbackWarning, match="lax.while_loop"):
        g = grad(0.8)
    y = fixed_point_cosine(0.8)
    # implicit function theorem: y = cos(a y) => dy/da = -y sin(a y) / (1 + a sin(a y))
    want = -y * np.sin(0.8 * y) / (1 + 0.8 * np.sin(0.8 * y))
    np.testing.assert_allclose(g, want, rtol=1e-9)
    value, g2 = tracejit.value_and_grad(fixed_point_cosine)(1.1)
    np.testing.assert_allclose(value, fixed_point_cosine(1.1), rtol=1e-12)
    eps = 1e-6
    fd = (fixed_point_cosine(1.1 + eps) - fixed_point_cosine(1.1 - eps)) / (2 * eps)
    np.testing.assert_allclose(g2, fd, rtol=1e-7)
    with pytest.raises(tracejit.ConcretizationError):  # inside a trace there is no tape to use
        tracejit.function(lambda a: tracejit.grad(fixed_point_cosine)(a))(0.8)


def test_grad_of_a_taylor_series_to_tolerance(interpret):
    x = np.array([0.3, -1.2, 2.5])
    with pytest.warns(tracejit.EagerFallbackWarning, match="runs eagerly"):
        g = tracejit.grad(taylor_sine)(x)
    np.testing.assert_allclose(g, np.cos(x), rtol=1e-12)
    # nested: the inner eager tape records its gradient on the outer one
    with pytest.warns(tracejit.EagerFallbackWarning, match="runs eagerly"):
        second = tracejit.grad(lambda x: tracejit.grad(taylor_sine)(x).sum())(x)
    np.testing.assert_allclose(second, -np.sin(x), rtol=1e-10, atol=1e-12)


# ----------------------------------------------- an ODE net integrated with RK4

def mlp_dynamics(params, y):
    W1, b1, W2, b2 = params
    return np.tanh(y @ W1 + b1) @ W2 + b2


def ode_net_loss(params, y0, target, steps=12, dt=0.05):
    """A neural ODE: RK4 steps of a small MLP's vector field in a Python loop."""
    y = y0
    for _ in range(steps):
        k1 = mlp_dynamics(params, y)
        k2 = mlp_dynamics(params, y + 0.5 * dt * k1)
        k3 = mlp_dynamics(params, y + 0.5 * dt * k2)
        k4 = mlp_dynamics(params, y + dt * k3)
        y = y + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
    return np.mean((y - target) ** 2)


def _ode_net_case(hidden=8, dim=2, batch=5):
    params = [0.5 * RNG.standard_normal((dim, hidden)), 0.1 * RNG.standard_normal(hidden),
              0.5 * RNG.standard_normal((hidden, dim)), 0.1 * RNG.standard_normal(dim)]
    return params, RNG.standard_normal((batch, dim)), RNG.standard_normal((batch, dim))


def test_rk4_ode_net_rolls_into_one_loop_and_its_gradient_is_right(interpret):
    params, y0, target = _ode_net_case()
    f = tracejit.function(ode_net_loss)
    top = [e.prim.name for e in f.ir(params, y0, target).eqns]
    assert top.count("scan") == 1 and "matmul" not in top  # the 12 steps are one loop
    np.testing.assert_allclose(f(params, y0, target), ode_net_loss(params, y0, target),
                               rtol=1e-12)
    check_grads(lambda p: ode_net_loss(p, y0, target), (params,), order=1)


def test_rk4_ode_net_compiled_gradient_matches_interpreter(monkeypatch):
    params, y0, target = _ode_net_case()
    monkeypatch.setenv("TRACEJIT_DISABLE_JIT", "1")
    want_value, want_grads = tracejit.value_and_grad(ode_net_loss)(params, y0, target)
    monkeypatch.delenv("TRACEJIT_DISABLE_JIT")
    monkeypatch.setenv("TRACEJIT_COMPILE", "sync")
    value, grads = tracejit.value_and_grad(ode_net_loss)(params, y0, target)
    np.testing.assert_allclose(value, want_value, rtol=1e-12)
    for g, w in zip(grads, want_grads):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)
