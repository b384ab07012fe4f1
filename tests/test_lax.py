"""Structured control flow (tracejit.lax): values, both derivative modes and
higher orders against Python loops and finite differences, through the NumPy
reference interpreter. (The compiled loops are checked in test_primitives.)"""

import numpy as np
import pytest

import tracejit
from tracejit import lax
from tracejit.testing import check_grads

pytestmark = pytest.mark.usefixtures("interpret")
RNG = np.random.default_rng(0)
W = RNG.standard_normal((3, 3)) * 0.5
XS = RNG.standard_normal((5, 3))
H0 = RNG.standard_normal(3)


def rnn(W, xs, h0):
    def step(h, x):
        h = np.tanh(x @ W + h)
        return h, np.sum(h * h)

    h, ys = lax.scan(step, h0, xs)
    return np.sum(ys) + np.sum(h)


def rnn_unrolled(W, xs, h0):
    h, total = h0, 0.0
    for x in xs:
        h = np.tanh(x @ W + h)
        total = total + np.sum(h * h)
    return total + np.sum(h)


def test_scan_matches_the_python_loop_and_its_gradient():
    assert np.isclose(tracejit.function(rnn)(W, XS, H0), rnn_unrolled(W, XS, H0))
    got = tracejit.grad(rnn, argnums=(0, 1, 2))(W, XS, H0)
    want = tracejit.grad(rnn_unrolled, argnums=(0, 1, 2))(W, XS, H0)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)


def test_scan_runs_eagerly_outside_a_trace():
    assert np.isclose(rnn(W, XS, H0), rnn_unrolled(W, XS, H0))


def test_hessian_of_a_scan_matches_the_unrolled_loop():
    np.testing.assert_allclose(tracejit.hessian(rnn)(W, XS, H0),
                               tracejit.hessian(rnn_unrolled)(W, XS, H0), rtol=1e-10, atol=1e-10)


def test_scan_body_is_traced_once_and_prints_nested():
    text = str(tracejit.make_ir(rnn)(W, XS, H0))
    assert text.count("scan[") == 1 and "body={ lambda" in text
    assert text.count("tanh") == 1


def test_scan_over_zero_steps():
    def f(W, xs, h0):
        h, ys = lax.scan(lambda h, x: (np.tanh(x @ W + h), h), h0, xs)
        return np.sum(h) + np.sum(ys)

    empty = np.zeros((0, 3))
    assert np.isclose(tracejit.function(f)(W, empty, H0), np.sum(H0))
    gW, gxs, gh = tracejit.grad(f, argnums=(0, 1, 2))(W, empty, H0)
    assert np.all(gW == 0) and gxs.shape == (0, 3) and np.all(gh == 1)


def test_scan_with_pytrees_and_reverse():
    def f(a, xs):
        def step(c, x):
            return {"s": c["s"] + x["u"] * c["p"], "p": c["p"] * 0.5}, (x["u"], c["s"])
        c, (us, ss) = lax.scan(step, {"s": a, "p": 1.0}, {"u": xs}, reverse=True)
        return c["s"] + np.sum(ss * us)

    check_grads(f, (0.3, RNG.standard_normal(4)), order=2)


def test_nested_scans():
    def f(W, xs):
        def outer(c, x):
            d, _ = lax.scan(lambda d, _: (np.tanh(d * x + c), None), c, None, length=3)
            return d @ W, np.sum(d)
        c, ys = lax.scan(outer, np.ones(3), xs)
        return np.sum(ys) + np.sum(c)

    check_grads(f, (W, XS), order=2)


def test_scan_carry_must_keep_its_type():
    with pytest.raises(tracejit.TracerTypeError, match="carry"):
        tracejit.function(lambda x: lax.scan(lambda c, _: (np.stack([c, c]), None), x, None,
                                             length=2))(np.ones(3))


def newton_sqrt(a):
    """Iterate to convergence: a data-dependent trip count."""
    def body(c):
        x, i = c
        return 0.5 * (x + a / x), i + 1
    x, _ = lax.while_loop(lambda c: np.abs(c[0] * c[0] - a) > 1e-12 * a, body, (a, 0))
    return x


def test_reverse_mode_through_a_while_loop():
    for a in (2.0, 9.0, 0.3):
        assert np.isclose(tracejit.function(newton_sqrt)(a), np.sqrt(a))
        assert np.isclose(tracejit.grad(newton_sqrt)(a), 0.5 / np.sqrt(a), rtol=1e-6)


def test_while_loop_gradient_matches_the_unrolled_loop():
    def looped(x, a):
        return lax.while_loop(lambda c: c[1] < 5, lambda c: (np.sin(c[0]) * a, c[1] + 1),
                              (x, 0))[0]

    def unrolled(x, a):
        for _ in range(5):
            x = np.sin(x) * a
        return x

    x = np.array([0.2, -0.7, 1.1])
    got = tracejit.jacobian(looped, argnums=(0, 1))(x, 1.3)
    want = tracejit.jacobian(unrolled, argnums=(0, 1))(x, 1.3)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-12)
    check_grads(looped, (x, 1.3), order=2)


def test_while_loop_with_nothing_to_save_per_step():
    def power(x, a):  # the backward needs only `a`: it counts the trips down
        return lax.while_loop(lambda c: c[1] < 5, lambda c: (c[0] * a, c[1] + 1), (x, 0))[0]

    gx, ga = tracejit.grad(power, argnums=(0, 1))(1.5, 1.1)
    assert np.isclose(gx, 1.1 ** 5) and np.isclose(ga, 5 * 1.5 * 1.1 ** 4)


def test_fori_loop_static_and_traced_bounds():
    def body(i, v):
        return v * 0.9 + np.sin(v) * i

    def static(x):
        return lax.fori_loop(0, 4, body, x)

    def traced(x, n):
        return lax.fori_loop(0, n, body, x)

    expected = 0.5
    for i in range(4):
        expected = body(i, expected)
    assert np.isclose(tracejit.function(static)(0.5), expected)
    assert np.isclose(tracejit.function(traced)(0.5, 4), expected)
    assert np.isclose(tracejit.grad(static)(0.5), tracejit.grad(traced)(0.5, 4))
    assert "scan[" in str(tracejit.make_ir(static)(0.5))
    assert "while_loop[" in str(tracejit.make_ir(traced)(0.5, 4))


def test_fori_loop_index_keeps_float32():
    out = tracejit.function(lambda x: lax.fori_loop(0, 3, lambda i, v: v * i + v, x))(
        np.ones(2, np.float32))
    assert out.dtype == np.float32


def test_cond_differentiates_only_the_branch_taken():
    def f(x):
        return lax.cond(x > 0, lambda v: np.sqrt(v) * np.log(v), lambda v: 2.0 * v, x)

    assert tracejit.grad(f)(-1.0) == 2.0  # sqrt and log of -1 are never differentiated
    assert tracejit.grad(f)(0.0) == 2.0
    assert np.isclose(tracejit.grad(f)(4.0), 0.25 * np.log(4.0) + 0.5)
    check_grads(f, (2.0,), order=2)


def test_switch_clamps_and_differentiates():
    def f(x, i):
        return lax.switch(i, [np.sin, np.cos, lambda v: v ** 3], x)

    for i, want in [(-2, np.cos(0.7)), (0, np.cos(0.7)), (1, -np.sin(0.7)), (7, 3 * 0.49)]:
        assert np.isclose(tracejit.grad(f)(0.7, i), want)


def test_cond_branches_with_different_dtypes_are_promoted():
    f = tracejit.function(lambda x: lax.cond(x.sum() > 0, lambda v: v * 2, lambda v: 0.0 * v, x))
    assert f(np.ones(2, np.float32)).dtype == np.float32


def test_cond_branch_outputs_must_agree():
    with pytest.raises(tracejit.ShapeError, match="different shapes"):
        tracejit.function(lambda x: lax.cond(x.sum() > 0, lambda v: v, lambda v: v[:1], x))(
            np.ones(2))


def test_python_if_on_a_traced_value_suggests_lax_cond():
    def f(x):
        if x > 0:
            return x
        return -x

    with pytest.raises(tracejit.ConcretizationError, match="lax.cond"):
        tracejit.function(f)(1.0)


def test_jvp_through_loops():
    def f(x):
        y = lax.while_loop(lambda c: c[1] < 3, lambda c: (np.sin(c[0]) + c[0], c[1] + 1),
                           (x, 0))[0]
        return lax.cond(y.sum() > 0, np.exp, np.cos, y)

    x = np.array([0.3, 0.9])
    check_grads(f, (x,), order=2, modes=("fwd",))
