"""Gradient checking for users' own functions (as `jax.test_util.check_grads`).

`check_grads(f, args, order=2)` compares tracejit's forward-mode (`jvp`) and
reverse-mode (`vjp` / `grad`) derivatives with central finite differences in
float64, along random directions, and recursively for higher orders.

Complex arguments are checked in complex128 along random complex directions
(real and imaginary parts at once), and reverse mode against JAX's pairing:
<vjp(w), t> = Re(sum(vjp(w) * t)) must equal Re(sum(w * jvp(t))).
"""

from __future__ import annotations

import warnings

import numpy as np

from .core import pytree
from .frontend import api
from .observe.log import RetraceWarning


def _is_complex(x) -> bool:
    return np.iscomplexobj(x)


def _wide(x):
    """x in float64, or complex128 if it is complex."""
    return np.asarray(x, np.complex128 if _is_complex(x) else np.float64)


def _random_like(tree, rng):
    def draw(x):
        d = rng.standard_normal(np.shape(x))
        return d + 1j * rng.standard_normal(np.shape(x)) if _is_complex(x) else d

    return pytree.tree_map(draw, tree)


def _inner(a, b) -> float:
    """Re(sum(a * b)): the bilinear pairing of JAX's complex convention (a dot
    product for real values)."""
    la, _ = pytree.flatten(a)
    lb, _ = pytree.flatten(b)
    return float(sum(np.real(np.sum(_wide(x) * _wide(y))) for x, y in zip(la, lb)))


def _shift(args, direction, eps):
    return pytree.tree_map(lambda x, d: _wide(x) + eps * d, args, direction)


def numerical_jvp(f, args, direction, eps=1e-6):
    """Central difference of f along `direction` (a pytree like `args`)."""
    plus = f(*_shift(args, direction, eps))
    minus = f(*_shift(args, direction, -eps))
    return pytree.tree_map(lambda p, m: (np.asarray(p) - np.asarray(m)) / (2 * eps),
                           plus, minus)


def _assert_close(actual, expected, atol, rtol, what):
    la, _ = pytree.flatten(actual)
    le, _ = pytree.flatten(expected)
    for a, e in zip(la, le):
        np.testing.assert_allclose(_wide(a), _wide(e), atol=atol, rtol=rtol, err_msg=what)


def check_jvp(f, args, atol=1e-5, rtol=1e-5, eps=1e-6, rng=None):
    rng = rng or np.random.default_rng(0)
    direction = _random_like(args, rng)
    _, tangent = api.jvp(f, args, direction)
    _assert_close(tangent, numerical_jvp(f, args, direction, eps), atol, rtol,
                  "forward mode (jvp) disagrees with finite differences")


def check_vjp(f, args, atol=1e-5, rtol=1e-5, eps=1e-6, rng=None):
    rng = rng or np.random.default_rng(1)
    direction = _random_like(args, rng)
    out, vjp_fn = api.vjp(f, *args)
    cotangent = _random_like(out, rng)
    reverse = _inner(vjp_fn(cotangent), direction)
    forward = _inner(cotangent, numerical_jvp(f, args, direction, eps))
    np.testing.assert_allclose(reverse, forward, atol=atol, rtol=rtol,
                               err_msg="reverse mode (vjp) disagrees with finite differences")


def check_grads(f, args, order=2, modes=("rev", "fwd"), atol=1e-5, rtol=1e-5, eps=1e-6):
    """Check derivatives of `f` at `args` (a tuple of array pytrees) up to
    `order`, in reverse ("rev") and forward ("fwd") mode. Raises
    AssertionError naming the mode and order that disagrees."""
    args = tuple(pytree.tree_map(_wide, a) for a in args)
    rng = np.random.default_rng(0)
    with warnings.catch_warnings():
        # Finite differences call jvp/vjp on the same signatures again and again, by design.
        warnings.simplefilter("ignore", RetraceWarning)
        for level in range(1, order + 1):
            if "fwd" in modes:
                check_jvp(f, args, atol, rtol, eps, rng)
            if "rev" in modes:
                check_vjp(f, args, atol, rtol, eps, rng)
            if level < order:
                f = _directional_derivative(f, args, rng)


def _directional_derivative(f, args, rng):
    """x -> Re <u, J(x) v>: a real scalar function whose derivatives are f's next order."""
    v = _random_like(args, rng)
    out = f(*args)
    u = _random_like(out, rng)

    def next_f(*xs):
        _, tangent = api.jvp(f, xs, v)
        total = 0.0
        for t, w in zip(pytree.flatten(tangent)[0], pytree.flatten(u)[0]):
            total = total + np.real(t * w).sum()
        return total

    return next_f
