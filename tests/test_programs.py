"""Small NumPy programs, in the style of Google Tangent's test suite.

Each program is a plain NumPy function `loss(*params, *data) -> scalar`; the
table `CASES` picks its inputs. Every case is checked

- against finite differences with `tracejit.testing.check_grads` (reverse and
  forward mode, float64, through the NumPy reference interpreter),
- against JAX's gradient of the *same source* (the module's `np` rebound to
  `jax.numpy`), when JAX is installed,
- against an independent PyTorch formulation (`torch.nn.functional` where it
  has one), when PyTorch is installed and the case has a twin,
- in float32 (value and gradients stay float32 and agree with float64).

A handful are also compiled with Numba and compared with the interpreter.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

import tracejit
from tracejit.testing import check_grads

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    torch = F = None

RNG = np.random.default_rng(20240611)


def normal(*shape):
    return RNG.standard_normal(shape)


def one_hot(labels, classes):
    return np.eye(classes)[labels]


# ---------------------------------------------------------------- helpers
# Written in NumPy, as a user would; the programs below call them.

def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def softplus(z):
    """log(1 + exp(z)) without overflow."""
    return np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z)))


def logsumexp(x, axis=-1):
    m = np.max(x, axis=axis, keepdims=True)
    return m + np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))


def log_softmax(x):
    return x - logsumexp(x)


def softmax(x):
    e = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


# --------------------------------------------------------------- programs

def mse_linear_regression(w, b, x, y):
    return np.mean((x @ w + b - y) ** 2)


def logistic_regression_softplus(w, b, x, y):
    """Binary cross-entropy from logits: softplus(z) - y * z."""
    z = x @ w + b
    return np.mean(softplus(z) - y * z)


def logistic_regression_sigmoid(w, x, y):
    p = sigmoid(x @ w)
    return -np.mean(y * np.log(p) + (1.0 - y) * np.log(1.0 - p))


def mlp(W1, b1, W2, b2, w3, x, y):
    h = np.maximum(x @ W1 + b1, 0.0)
    h = np.tanh(h @ W2 + b2)
    return np.mean((h @ w3 - y) ** 2)


def softmax_cross_entropy(logits, onehot):
    z = logits - np.max(logits, axis=1, keepdims=True)
    log_p = z - np.log(np.sum(np.exp(z), axis=1, keepdims=True))
    return -np.mean(np.sum(onehot * log_p, axis=1))


def weighted_log_softmax(x, weights):
    return np.sum(weights * log_softmax(x))


def layer_norm(x, gain, bias, weights):
    mu = x.mean(axis=-1, keepdims=True)
    var = x.var(axis=-1, keepdims=True)
    out = (x - mu) / np.sqrt(var + 1e-5) * gain + bias
    return np.sum(weights * out)


def embedding_lookup(E, W, idx):
    """Repeated indices: their gradients must add up in E's rows."""
    return np.sum(np.tanh(E[idx] @ W) ** 2)


def gather_cross_entropy(logits, labels):
    n = logits.shape[0]
    return -np.mean(log_softmax(logits)[np.arange(n), labels])


def huber(pred, target):
    r = pred - target
    return np.sum(np.where(np.abs(r) < 1.0, 0.5 * r**2, np.abs(r) - 0.5))


def clipped_activation(x, w):
    return np.sum(np.clip(x @ w, -1.0, 1.0) ** 2) + np.sum(np.clip(x, -0.5, None))


def distances(x, y):
    """Euclidean distance plus the sum of per-row norms."""
    return np.linalg.norm(x - y) + np.sum(np.linalg.norm(x, axis=1)) * 0.5


def concat_features(x, w):
    features = np.concatenate([x, x**2, np.sin(x)], axis=1)
    return np.sum((features @ w) ** 2)


def stack_pair(a, b):
    pair = np.stack([a * b, np.cos(a)], axis=0)
    return np.sum(pair ** 3) + np.sum(np.stack([a, b], axis=1)[:, 0] * b)


def smoothness(x):
    """Finite-difference penalties built from slices, with steps and reversal."""
    rows = np.sum((x[1:] - x[:-1]) ** 2)
    cols = np.sum(x[:, ::2] * x[::-1, 1::2])
    return rows + cols + np.sum(x[-1] * x[0])


def keepdims_normalise(x):
    p = x / x.sum(axis=1, keepdims=True)
    centred = x - x.max(axis=0, keepdims=True)
    return np.sum(p * centred) + np.sum(x.mean(axis=(0, 1), keepdims=True) * x)


def cross_covariance(x, y):
    return np.sum((x.T @ y) ** 2) / x.shape[0]


def batched_attention(q, k, v):
    d = q.shape[-1]
    scores = q @ np.transpose(k, (0, 2, 1)) * d**-0.5
    return np.sum(np.tanh(softmax(scores) @ v))


# ----------------------------------------------------------------- cases

@dataclass
class Case:
    """A program with its differentiated `params` and closed-over `data`."""

    fn: Callable
    params: tuple
    data: tuple = ()
    order: int = 2

    def loss(self):
        return lambda *params: self.fn(*params, *self.data)


LABELS = np.array([0, 2, 1, 1, 0, 2, 2])
TOKENS = np.array([3, 0, 3, 1, 4, 3])

CASES = {
    "mse_linear_regression": Case(
        mse_linear_regression, (normal(3), 0.3), (normal(8, 3), normal(8))),
    "logistic_regression_softplus": Case(
        logistic_regression_softplus, (normal(3), -0.2),
        (normal(9, 3), (RNG.random(9) > 0.5).astype(float))),
    "logistic_regression_sigmoid": Case(
        logistic_regression_sigmoid, (normal(3),),
        (normal(9, 3), (RNG.random(9) > 0.5).astype(float))),
    "mlp": Case(
        mlp, (normal(4, 5), normal(5), normal(5, 3), normal(3), normal(3)),
        (normal(6, 4), normal(6))),
    "softmax_cross_entropy": Case(
        softmax_cross_entropy, (normal(7, 3) * 3,), (one_hot(LABELS, 3),)),
    "weighted_log_softmax": Case(weighted_log_softmax, (normal(4, 5),), (normal(4, 5),)),
    "layer_norm": Case(layer_norm, (normal(3, 6), normal(6), normal(6)), (normal(3, 6),)),
    "embedding_lookup": Case(embedding_lookup, (normal(5, 3), normal(3, 2)), (TOKENS,)),
    "gather_cross_entropy": Case(gather_cross_entropy, (normal(7, 3),), (LABELS,)),
    "huber": Case(huber, (np.array([-2.5, -0.4, 0.2, 0.6, 1.7, 3.0]),), (normal(6) * 0.05,)),
    "clipped_activation": Case(clipped_activation, (normal(5, 3), normal(3)), order=1),
    "distances": Case(distances, (normal(4, 3), normal(4, 3))),
    "concat_features": Case(concat_features, (normal(4, 2), normal(6, 3))),
    "stack_pair": Case(stack_pair, (normal(5), normal(5))),
    "smoothness": Case(smoothness, (normal(5, 4),)),
    "keepdims_normalise": Case(keepdims_normalise, (RNG.random((3, 4)) + 0.5,)),
    "cross_covariance": Case(cross_covariance, (normal(6, 3), normal(6, 2))),
    "batched_attention": Case(batched_attention, (normal(2, 3, 4), normal(2, 5, 4),
                                                  normal(2, 5, 3))),
}

NAMES = sorted(CASES)

# PyTorch twins of some programs, written with torch's own building blocks
# (torch.nn.functional where it has them) rather than transliterated NumPy.
TORCH_TWINS = {
    "mse_linear_regression": lambda w, b, x, y: torch.mean((x @ w + b - y) ** 2),
    "logistic_regression_softplus": lambda w, b, x, y: torch.mean(
        F.softplus(x @ w + b) - y * (x @ w + b)),
    "logistic_regression_sigmoid": lambda w, x, y: F.binary_cross_entropy(
        torch.sigmoid(x @ w), y),
    "mlp": lambda W1, b1, W2, b2, w3, x, y: torch.mean(
        (torch.tanh(F.relu(x @ W1 + b1) @ W2 + b2) @ w3 - y) ** 2),
    "softmax_cross_entropy": lambda logits, onehot: F.cross_entropy(logits, onehot),
    "weighted_log_softmax": lambda x, weights: torch.sum(weights * F.log_softmax(x, dim=-1)),
    "layer_norm": lambda x, gain, bias, weights: torch.sum(
        weights * F.layer_norm(x, x.shape[-1:], gain, bias, eps=1e-5)),
    "embedding_lookup": lambda E, W, idx: torch.sum(torch.tanh(F.embedding(idx, E) @ W) ** 2),
    "gather_cross_entropy": lambda logits, labels: F.cross_entropy(logits, labels),
    "huber": lambda pred, target: F.huber_loss(pred, target, reduction="sum", delta=1.0),
    "distances": lambda x, y: torch.linalg.norm(x - y) + torch.sum(
        torch.linalg.norm(x, dim=1)) * 0.5,
    "cross_covariance": lambda x, y: torch.sum((x.T @ y) ** 2) / x.shape[0],
    "batched_attention": lambda q, k, v: torch.sum(torch.tanh(
        torch.softmax(q @ k.transpose(1, 2) * q.shape[-1] ** -0.5, dim=-1) @ v)),
}


def _argnums(case):
    return tuple(range(len(case.params)))


# ------------------------------------------------ finite differences (interpreter)

@pytest.mark.parametrize("name", NAMES)
def test_gradients_match_finite_differences(name, interpret):
    case = CASES[name]
    check_grads(case.loss(), case.params, order=case.order)


@pytest.mark.parametrize("name", NAMES)
def test_value_matches_numpy(name, interpret):
    case = CASES[name]
    value = tracejit.function(case.fn)(*case.params, *case.data)
    np.testing.assert_allclose(value, case.fn(*case.params, *case.data), rtol=1e-12)


def test_minimum_routes_the_gradient_to_the_smaller_operand(interpret):
    x = np.array([0.2, 0.7])
    np.testing.assert_array_equal(
        tracejit.grad(lambda x: np.sum(np.minimum(x, 0.5)))(x), [1.0, 0.0])


def test_argmax_accuracy_as_aux(interpret):
    """A training step reports accuracy (argmax, not differentiated) as aux."""
    logits, onehot = CASES["softmax_cross_entropy"].params[0], one_hot(LABELS, 3)

    def loss_and_accuracy(logits):
        accuracy = np.mean(np.argmax(logits, axis=1) == LABELS)
        return softmax_cross_entropy(logits, onehot), accuracy

    grads, accuracy = tracejit.grad(loss_and_accuracy, has_aux=True)(logits)
    assert accuracy == np.mean(np.argmax(logits, axis=1) == LABELS)
    expected = (np.exp(log_softmax(logits)) - onehot) / len(LABELS)
    np.testing.assert_allclose(grads, expected, rtol=1e-12, atol=1e-15)


def test_batched_matrix_times_vector(interpret):
    """NumPy's matmul broadcasts a vector against a stack of matrices."""
    def pooled(a, v):
        return np.sum(np.tanh(a @ v))

    a, v = normal(2, 3, 4), normal(4)
    np.testing.assert_allclose(tracejit.function(pooled)(a, v), pooled(a, v), rtol=1e-12)
    check_grads(pooled, (a, v), order=1)


# ------------------------------------------------------------- peer libraries

def _with_numpy(fn, xp):
    """`fn` with this module's global `np` (and the helpers it calls) bound to `xp`."""
    namespace = dict(fn.__globals__, np=xp)
    for name, value in fn.__globals__.items():
        if isinstance(value, types.FunctionType) and value.__module__ == __name__:
            namespace[name] = types.FunctionType(value.__code__, namespace, name,
                                                 value.__defaults__, value.__closure__)
    return namespace[fn.__name__]


def _tracejit_value_and_grads(case):
    loss = tracejit.value_and_grad(case.fn, argnums=_argnums(case))
    return loss(*case.params, *case.data)


@pytest.mark.parametrize("name", NAMES)
def test_matches_jax(name, interpret, jax_x64):
    jax = jax_x64
    case = CASES[name]
    peer = _with_numpy(case.fn, jax.numpy)
    want_value, want_grads = jax.jit(jax.value_and_grad(peer, argnums=_argnums(case)))(
        *case.params, *case.data)
    value, grads = _tracejit_value_and_grads(case)
    np.testing.assert_allclose(value, want_value, rtol=1e-10)
    for got, want in zip(grads, want_grads):
        np.testing.assert_allclose(got, np.asarray(want), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", sorted(TORCH_TWINS))
def test_matches_torch(name, interpret):
    if torch is None:
        pytest.skip("PyTorch is not installed")
    case = CASES[name]
    params = [torch.tensor(np.asarray(p, dtype=np.float64), requires_grad=True)
              for p in case.params]
    data = [torch.from_numpy(np.asarray(d)) for d in case.data]
    want = TORCH_TWINS[name](*params, *data)
    want.backward()
    value, grads = _tracejit_value_and_grads(case)
    np.testing.assert_allclose(value, want.item(), rtol=1e-10)
    for got, param in zip(grads, params):
        np.testing.assert_allclose(got, param.grad.numpy(), rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------ float32

def _float32(value):
    """Float arrays and Python floats as float32; integer arrays unchanged."""
    return np.asarray(value, np.float32) if np.asarray(value).dtype.kind == "f" else value


@pytest.mark.parametrize("name", NAMES)
def test_float32_gradients_stay_float32(name, interpret):
    case = CASES[name]
    loss = tracejit.value_and_grad(case.fn, argnums=_argnums(case))
    value, grads = loss(*map(_float32, case.params), *map(_float32, case.data))
    want_value, want_grads = _tracejit_value_and_grads(case)
    assert np.asarray(value).dtype == np.float32
    np.testing.assert_allclose(value, want_value, rtol=2e-5, atol=1e-5)
    for got, want in zip(grads, want_grads):
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)


# ----------------------------------------------------------------- compiled
# Each of these costs a Numba compile, so only a representative handful.

COMPILED = ["mlp", "gather_cross_entropy", "embedding_lookup", "huber"]


@pytest.mark.parametrize("name", COMPILED)
def test_compiled_kernel_matches_interpreter(name, monkeypatch):
    case = CASES[name]
    monkeypatch.setenv("TRACEJIT_DISABLE_JIT", "1")
    want_value, want_grads = _tracejit_value_and_grads(case)
    monkeypatch.delenv("TRACEJIT_DISABLE_JIT")
    monkeypatch.setenv("TRACEJIT_COMPILE", "sync")
    loss = tracejit.value_and_grad(case.fn, argnums=_argnums(case))
    value, grads = loss(*case.params, *case.data)
    assert loss.stats.compiles + loss.stats.disk_hits == 1  # machine code, not the interpreter
    np.testing.assert_allclose(value, want_value, rtol=1e-12)
    for got, want in zip(grads, want_grads):
        np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-14)
