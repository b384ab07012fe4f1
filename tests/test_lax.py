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


# Loop bodies returning literals (`return c, 3.0`) or their own inputs: a literal
# output once took no cotangent input in the body's adjoint, shifting the later
# outputs' cotangents onto the wrong inputs: wrong first derivatives when a literal
# per-step output came before a computed one, and wrong second derivatives (grad of
# grad, through the adjoint's own stacked outputs) even when it came last.
def _loops_with_literals(np_, lax_):  # and a cond
    def scan_literal_y(x):
        c, ys = lax_.scan(lambda c, xi: (c * np_.sin(xi) + c * c, 3.0), x[0], x)
        return c + ys.sum()

    def scan_literal_before_var(x):
        def body(c, xi):
            return c * np_.cos(xi) + 0.5 * c * c, (2.0, xi * c, c)  # `c` aliases an input
        c, (a, b, d) = lax_.scan(body, x[1], x)
        return c * c + a.sum() + (b * b).sum() + (d * x).sum()

    def scan_literal_carry(x):
        def body(carry, xi):
            c, k = carry
            return (c * np_.sin(xi) + k * c * c, 1.5), xi  # `xi` aliases an input
        (c, k), ys = lax_.scan(body, (x[0], x[2]), x, reverse=True)
        return c * k + (ys * c).sum()

    def fori_literal_carry(x):
        def body(i, v):
            a, b = v
            return a * b + np_.sin(a), 0.5
        a, b = lax_.fori_loop(0, 3, body, (x, x[0]))
        return (a * a).sum() + b

    def while_literal_carry(x):
        def body(v):
            a, b, i = v
            return np_.tanh(a) * b + a, 0.75, i + 1
        a, b, _ = lax_.while_loop(lambda v: v[2] < 3, body, (x, x[1], 0))
        return (a * a).sum() * b

    def cond_literal_in_one_branch(x):
        a, b = lax_.cond(x.sum() > 0, lambda v: (2.0, np_.sin(v) * v), lambda v: (v[0], v), x)
        return a * (b * b).sum()

    return [scan_literal_y, scan_literal_before_var, scan_literal_carry, fori_literal_carry,
            while_literal_carry, cond_literal_in_one_branch]


LITERAL_LOOPS = _loops_with_literals(np, lax)
X3 = np.array([0.3, 0.2, -0.1])
U3 = np.array([0.7, -1.2, 0.4])


def _second_derivatives(f, x, u):
    """H u three ways: grad of <grad f, u>, jvp of grad f, central differences of grad f."""
    grad = tracejit.grad(f)
    rev_rev = tracejit.grad(lambda x: np.sum(grad(x) * u))(x)
    fwd_rev = tracejit.jvp(grad, (x,), (u,))[1]
    eps = 1e-6
    finite = (grad(x + eps * u) - grad(x - eps * u)) / (2 * eps)
    return rev_rev, fwd_rev, finite


@pytest.mark.parametrize("f", LITERAL_LOOPS, ids=lambda f: f.__name__)
def test_second_derivatives_through_loops_with_literal_outputs(f):
    eps = 1e-6  # the first derivative too: a literal before a computed output zeroed it
    np.testing.assert_allclose(np.sum(tracejit.grad(f)(X3) * U3),
                               (f(X3 + eps * U3) - f(X3 - eps * U3)) / (2 * eps), rtol=1e-6)
    rev_rev, fwd_rev, finite = _second_derivatives(f, X3, U3)
    np.testing.assert_allclose(rev_rev, finite, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(fwd_rev, finite, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(tracejit.grad(lambda x: tracejit.grad(f)(x)[1])(X3),
                               tracejit.hessian(f)(X3)[1], rtol=1e-10, atol=1e-12)


def test_second_derivatives_through_loops_with_literal_outputs_match_jax(jax_x64):
    ours = _loops_with_literals(np, lax)
    theirs = _loops_with_literals(jax_x64.numpy, jax_x64.lax)
    for f, g in zip(ours, theirs):
        want = jax_x64.jvp(jax_x64.jacfwd(g), (X3,), (U3,))[1]  # JAX reverses no while_loop
        np.testing.assert_allclose(_second_derivatives(f, X3, U3)[0], want, rtol=1e-10,
                                   atol=1e-12, err_msg=f.__name__)
