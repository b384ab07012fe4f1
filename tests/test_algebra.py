"""The algebraic simplifier (tracejit/algebra.py): each rewrite fires where it
should, and values and derivatives stay those of the program before it
(against NumPy by hand and finite differences, interpreted and compiled);
the seed programs' equation counts are pinned from above."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

import tracejit
from tracejit.core.ir import Literal
from tracejit.testing import check_grads
from tracejit.transforms import passes

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
from bench_time_to_result import seed_programs  # noqa: E402  (the benchmark prints the same)

RNG = np.random.default_rng(15)


def names(program) -> list[str]:
    return [e.prim.name for e in program.eqns]


def grad_program(fn, *args):
    return tracejit.value_and_grad(fn).ir(*args)


def relu_layer(W, x, c):
    return np.sum(np.maximum(x @ W, 0.0) * c)


def softmax_ce(z, y):
    z = z - z.max(axis=1, keepdims=True)
    return -np.mean(np.sum(y * (z - np.log(np.exp(z).sum(axis=1, keepdims=True))), axis=1))


def test_relu_derivative_is_one_nested_select(interpret):
    W, x, c = RNG.standard_normal((4, 3)), RNG.standard_normal((8, 4)), RNG.standard_normal(3)
    program = grad_program(relu_layer, W, x, c)
    assert "convert" not in names(program) and "add" not in names(program)
    selects = [e for e in program.eqns if e.prim.name == "select"]
    assert len(selects) == 2  # where(h > 0, g, where(h == 0, 0.5 * g, 0))
    mask = (x @ W > 0) * c
    value, grad = tracejit.value_and_grad(relu_layer)(W, x, c)
    assert value == pytest.approx(relu_layer(W, x, c))
    np.testing.assert_allclose(grad, x.T @ mask, rtol=1e-13)


def test_relu_tie_keeps_half_the_gradient(interpret):
    W, x, c = np.eye(2), np.array([[0.0, 1.0], [-1.0, 2.0]]), np.array([1.0, 1.0])
    d_hidden = np.array([[0.5, 1.0], [0.0, 1.0]])  # h = x: a tie at 0 gets half
    np.testing.assert_allclose(tracejit.grad(relu_layer)(W, x, c), x.T @ d_hidden)


def test_no_broadcast_of_a_literal_survives(interpret):
    z, y = RNG.standard_normal((16, 3)), np.eye(3)[RNG.integers(0, 3, 16)]
    program = grad_program(softmax_ce, z, y)
    for eqn in program.eqns:
        assert not (eqn.prim.name == "broadcast_in_dim" and isinstance(eqn.inputs[0], Literal))
    check_grads(lambda z: softmax_ce(z, y), (z,), order=2)


def test_the_max_is_broadcast_once(interpret):
    """The forward's keepdims max and the backward's comparison with it are one
    broadcast (CSE sees them equal once the second is left to broadcasting)."""
    z, y = RNG.standard_normal((16, 3)), np.eye(3)[RNG.integers(0, 3, 16)]
    program = grad_program(softmax_ce, z, y)
    (maximum,) = [e.outputs[0] for e in program.eqns if e.prim.name == "reduce_max"]
    readers = [e for e in program.eqns if maximum in e.inputs]
    assert [e.prim.name for e in readers] == ["broadcast_in_dim"]


def compares_with_max(program) -> bool:
    """Whether the adjoint of a max (its comparison with the max) is in `program`."""
    maxima = {id(e.outputs[0]) for e in program.eqns if e.prim.name == "reduce_max"}
    seen = set(maxima)
    for eqn in program.eqns:  # the max, broadcast or reshaped
        if eqn.prim.name in ("broadcast_in_dim", "reshape") and id(eqn.inputs[0]) in seen:
            seen.add(id(eqn.outputs[0]))
    return any(e.prim.name == "eq" and any(id(a) in seen for a in e.inputs)
               for e in program.eqns)


def test_the_shift_of_log_softmax_is_detached(interpret):
    """x - max(x) feeding log-softmax: the max gets no cotangent (its adjoint sums
    to zero), so no comparison with it is left; the gradient is (softmax - y) / n."""
    z, y = RNG.standard_normal((16, 3)), np.eye(3)[RNG.integers(0, 3, 16)]
    z[0, :2] = z[0].max() + 1.0  # a tie at the maximum
    program = grad_program(softmax_ce, z, y)
    assert not compares_with_max(program)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    value, grad = tracejit.value_and_grad(softmax_ce)(z, y)
    assert value == pytest.approx(softmax_ce(z, y), rel=1e-14)
    np.testing.assert_allclose(grad, (e / e.sum(axis=1, keepdims=True) - y) / 16,
                               rtol=1e-12, atol=1e-16)
    check_grads(lambda z: softmax_ce(z, y), (z,), order=2)


def shifted_forms(x, w):
    """The invariant shapes the rule follows: logsumexp with a scalar max, softmax
    with a max over the last axis, both with the shift read back in."""
    m = np.max(x)
    lse = m + np.log(np.sum(np.exp(x - m)))
    rows = x - np.max(x, axis=1, keepdims=True)
    soft = np.exp(rows) / np.sum(np.exp(rows), axis=1, keepdims=True)
    return lse + np.sum(w * soft) + np.sum((x - lse) * w)


def test_detached_shifts_keep_values_and_derivatives(interpret):
    x, w = RNG.standard_normal((4, 5)), RNG.standard_normal((4, 5))
    assert not compares_with_max(grad_program(shifted_forms, x, w))
    with passes.algebra_disabled():
        want_value, want_grad = tracejit.value_and_grad(shifted_forms)(x, w)
    value, grad = tracejit.value_and_grad(shifted_forms)(x, w)
    assert value == pytest.approx(want_value, rel=1e-14)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-12, atol=1e-15)
    check_grads(lambda x: shifted_forms(x, w), (x,), order=2)


@pytest.mark.parametrize("fn", [
    lambda x: np.sum(x - np.max(x)),  # a sum of shifts: n times the shift
    lambda x: np.sum(np.exp(x - np.max(x))),  # exp of a shift, not normalised
    lambda x: np.max(x, axis=0) @ np.log(np.sum(np.exp(x - np.max(x, axis=0)), axis=0)),
    lambda x: np.sum(np.log(np.sum(np.exp(x - np.max(x, axis=1, keepdims=True)), axis=0))),
], ids=["sum", "exp", "product", "other-axis"])
def test_visible_shifts_keep_their_derivative(fn, interpret):
    x = RNG.standard_normal((3, 4))
    with passes.algebra_disabled():
        want = tracejit.grad(fn)(x)
    np.testing.assert_allclose(tracejit.grad(fn)(x), want, rtol=1e-13, atol=1e-15)
    check_grads(fn, (x,), order=1)


def test_chains_fold(interpret):
    def fn(x, s):
        wide = np.broadcast_to(np.broadcast_to(s, (3,)), (2, 3))
        flat = x.reshape(6).reshape(3, 2).reshape(2, 3)
        return np.sum(np.sum(flat * wide, axis=1)) + np.sum(np.squeeze(x[:, None, :], 1) * x)

    x, s = RNG.standard_normal((2, 3)), 0.7
    program = tracejit.function(fn).ir(x, s)
    assert names(program).count("reshape") == 0
    assert names(program).count("reduce_sum") == 2  # the sum of a sum is one sum
    assert "broadcast_in_dim" not in names(program) and "squeeze" not in names(program)
    assert tracejit.function(fn)(x, s) == pytest.approx(np.sum(x * s) + np.sum(x * x))
    check_grads(fn, (x, s), order=2)


def test_masked_products_keep_their_branch(interpret):
    """select(c, 0, x) * y keeps its zero on the true side; exclusive selects added
    become one nested select."""
    def fn(a, b, x, y):
        picked = np.where(x > y, a, 0.0) + np.where(x == y, b, 0.0)
        return np.sum(np.where(x > 0, 0.0, a) * b) + np.sum(picked * b)

    x = np.array([1.0, -1.0, 2.0, 0.5, -3.0])
    y = np.array([0.5, -1.0, 3.0, 0.5, -4.0])
    a, b = RNG.standard_normal(5), RNG.standard_normal(5)
    program = grad_program(fn, a, b, x, y)
    assert "convert" not in names(program)
    want = np.sum(np.where(x > 0, 0.0, a) * b) + np.sum(np.where(x > y, a, np.where(
        x == y, b, 0.0)) * b)
    value, grad = tracejit.value_and_grad(fn, argnums=(0, 1))(a, b, x, y)
    assert value == pytest.approx(want)
    np.testing.assert_allclose(grad[0], np.where(x > 0, 0.0, b) + np.where(x > y, b, 0.0))
    check_grads(lambda a, b: fn(a, b, x + 0.01, y), (a, b), order=2)


def masked_program(params, x, y):
    """Every rewrite at once: relu, softmax CE, a masked where, a sum of a sum."""
    W1, W2 = params
    h = np.maximum(x @ W1, 0.0)
    z = h @ W2
    masked = np.where(z > 0.1, 0.0, z) * z
    return softmax_ce(z, y) + np.sum(np.sum(masked, axis=1)) * 1e-2


def test_interpreted_and_compiled_tiers_agree(monkeypatch):
    params = [RNG.standard_normal((6, 5)), RNG.standard_normal((5, 3))]
    x, y = RNG.standard_normal((12, 6)), np.eye(3)[RNG.integers(0, 3, 12)]
    monkeypatch.setenv("TRACEJIT_DISABLE_JIT", "1")
    want_value, want_grads = tracejit.value_and_grad(masked_program)(params, x, y)
    check_grads(lambda p: masked_program(p, x, y), (params,), order=1)
    with passes.algebra_disabled():
        plain_value, plain_grads = tracejit.value_and_grad(masked_program)(params, x, y)
    monkeypatch.delenv("TRACEJIT_DISABLE_JIT")
    monkeypatch.setenv("TRACEJIT_COMPILE", "sync")
    value, grads = tracejit.value_and_grad(masked_program)(params, x, y)
    for got in (value, plain_value):
        assert got == pytest.approx(want_value, rel=1e-12)
    for got in (grads, plain_grads):
        for g, w in zip(got, want_grads):
            np.testing.assert_allclose(g, w, rtol=1e-11, atol=1e-14)


# Equations in each seed's value-and-grad program after the passes (the benchmark
# prints before and after): a change that adds equations must say why here.
SEED_EQUATIONS = {"000 linear model": 15, "001 scalar squared error": 7, "002 x**2": 2,
                  "003 Keras MLP": 43}


@pytest.mark.parametrize("label", list(SEED_EQUATIONS))
def test_seed_equation_counts(label, interpret):
    fn, args = seed_programs()[label]
    after = passes.equation_count(tracejit.value_and_grad(fn).ir(*args))
    with passes.algebra_disabled():
        before = passes.equation_count(tracejit.value_and_grad(fn).ir(*args))
    assert after <= SEED_EQUATIONS[label]
    assert after <= before


def test_the_users_masked_product_keeps_numpys_nan(interpret):
    """Only the adjoint's masked products become selects: NumPy's 0 * NaN is NaN."""
    x = np.array([2.0, -1.0, 0.5])
    with np.errstate(invalid="ignore"):
        want = np.sum((x > 0) * np.log(x))
    assert np.isnan(want)
    assert np.isnan(tracejit.function(lambda x: np.sum((x > 0) * np.log(x)))(x))


def test_the_total_of_a_picked_cotangent_is_the_cotangent(interpret):
    """-(z - logsumexp(z))[y]: the adjoint sums the one-hot cotangent, which is the
    cotangent itself (no sum of a scatter is left); picking along an inner axis by
    a traced index, negative too, scatters in place."""
    def nll(z, y):
        return -(z - np.max(z) - np.log(np.sum(np.exp(z - np.max(z)))))[y]

    z = RNG.standard_normal(7)
    program = grad_program(nll, z, 3)
    scattered = {id(e.outputs[0]) for e in program.eqns if e.prim.name == "scatter_add"}
    assert not any(e.prim.name == "reduce_sum" and id(e.inputs[0]) in scattered
                   for e in program.eqns)
    p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    np.testing.assert_allclose(tracejit.grad(nll)(z, 3), p - np.eye(7)[3], rtol=1e-13,
                               atol=1e-16)
    x = RNG.standard_normal((3, 4))
    for i in (2, -1):
        got = tracejit.grad(lambda x, i: np.sum(x[:, i] ** 2))(x, i)
        want = np.zeros_like(x)
        want[:, i] = 2 * x[:, i]
        np.testing.assert_array_equal(got, want)


def test_picked_nll_agrees_interpreted_and_compiled(monkeypatch):
    """The detached shift and the scatter's total, in the kernel as in the interpreter."""
    def nll(z, y):
        return -(z - np.max(z) - np.log(np.sum(np.exp(z - np.max(z)))))[y]

    z = RNG.standard_normal(9)
    monkeypatch.setenv("TRACEJIT_DISABLE_JIT", "1")
    want_value, want_grad = tracejit.value_and_grad(nll)(z, 4)
    monkeypatch.delenv("TRACEJIT_DISABLE_JIT")
    monkeypatch.setenv("TRACEJIT_COMPILE", "sync")
    value, grad = tracejit.value_and_grad(nll)(z, 4)
    assert value == pytest.approx(want_value, rel=1e-13)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-12, atol=1e-16)
