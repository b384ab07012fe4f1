"""GradientTape, eager and inside @tracejit.function, and tracejit.gradients:
TensorFlow's conventions, values against derivations by hand and finite
differences, and the eager adjoint cache."""

import sys

import numpy as np
import pytest

import tracejit
from tracejit import GradientTape, Variable
from tracejit.testing import check_grads

RNG = np.random.default_rng(5)


def mlp_loss(params, x, y):
    """Dense(relu) -> Dense -> softmax cross-entropy with one-hot labels."""
    W1, b1, W2, b2 = params
    h = np.maximum(x @ W1 + b1, 0.0)
    return tracejit.nn.cross_entropy(h @ W2 + b2, y)


def mlp_gradients_by_hand(params, x, y):
    W1, b1, W2, b2 = params
    pre = x @ W1 + b1
    h = np.maximum(pre, 0.0)
    z = h @ W2 + b2
    p = np.exp(z - z.max(1, keepdims=True))
    dz = (p / p.sum(1, keepdims=True) - y) / len(x)
    dh = dz @ W2.T * (pre > 0)
    return [x.T @ dh, dh.sum(0), h.T @ dz, dz.sum(0)]


def mlp_data(batch=6):
    params = [RNG.standard_normal((4, 3)), RNG.standard_normal(3), RNG.standard_normal((3, 2)),
              RNG.standard_normal(2)]
    x = RNG.standard_normal((batch, 4))
    y = np.eye(2)[RNG.integers(0, 2, batch)]
    return params, x, y


# ------------------------------------------------------------------ eager

def test_eager_square_and_linear_model(interpret):
    x = Variable(3.0)
    with GradientTape() as tape:
        y = x ** 2
    assert tape.gradient(y, x) == 6.0
    assert float(y) == 9.0 and y.numpy() == 9.0 and f"{y:.1f}" == "9.0"
    W, b = Variable(np.array([0.5])), Variable(np.zeros(1))
    xs, ys = np.array([1.0, 2.0, 3.0, 4.0]), np.array([2.0, 4.0, 6.0, 8.0])
    with GradientTape() as tape:
        loss = np.mean(np.square(W * xs + b - ys))
    dW, db = tape.gradient(loss, [W, b])
    np.testing.assert_allclose(dW, [-22.5])
    np.testing.assert_allclose(db, [-7.5])


def test_eager_gradients_match_finite_differences_and_grad(interpret):
    params, x, y = mlp_data()
    variables = [Variable(p) for p in params]
    with GradientTape() as tape:
        loss = mlp_loss(variables, x, y)
    grads = tape.gradient(loss, variables)
    expected = tracejit.grad(mlp_loss)(params, x, y)
    for g, e in zip(grads, expected):
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-14)
    check_grads(lambda *p: mlp_loss(p, x, y), params, order=1)


def test_sources_in_any_structure_and_unconnected_ones(interpret):
    a, b, c = Variable(2.0), Variable(np.ones(2)), Variable(5.0)
    k = Variable(np.int64(3))
    with GradientTape(persistent=True) as tape:
        y = a * np.sum(b) * k
    grads = tape.gradient(y, {"a": a, "pair": (b, [c, k])})
    assert grads["a"] == 6.0
    np.testing.assert_allclose(grads["pair"][0], [6.0, 6.0])
    assert grads["pair"][1] == [None, None]  # c unused; k is an integer
    zeros = tape.gradient(y, [c], unconnected_gradients="zero")
    assert zeros[0] == 0.0
    zeros = tape.gradient(y, [c], unconnected_gradients=tracejit.UnconnectedGradients.ZERO)
    assert zeros[0] == 0.0


def test_a_non_persistent_tape_answers_once(interpret):
    x = Variable(2.0)
    with GradientTape() as tape:
        y = x * x
    tape.gradient(y, x)
    with pytest.raises(RuntimeError, match="non-persistent"):
        tape.gradient(y, x)


def test_persistent_tape_and_several_targets(interpret):
    x = Variable(3.0)
    with GradientTape(persistent=True) as tape:
        y, z = x ** 2, x ** 3
    assert tape.gradient(y, x) == 6.0
    assert tape.gradient(z, x) == 27.0
    assert tape.gradient([y, z], x) == 33.0  # the gradient of the sum
    assert tape.gradient(z, x, output_gradients=2.0) == 54.0


def test_watch_arrays_and_watch_accessed_variables_false(interpret):
    w, v = Variable(2.0), Variable(3.0)
    with GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(w)
        y = w * v
    dw, dv = tape.gradient(y, [w, v])
    assert dw == 3.0 and dv is None
    assert tape.watched_variables() == [w]
    data = np.array([1.0, 2.0])
    with GradientTape() as tape:
        x = tape.watch(data)  # NumPy operations on `data` alone would not be recorded
        y = np.sum(x ** 2) * w
    np.testing.assert_allclose(tape.gradient(y, data), [4.0, 8.0])
    with GradientTape() as tape:
        tape.watch(data)
        y = np.sum(data ** 2)  # plain NumPy: TensorFlow's habit, not recorded here
    with pytest.warns(UserWarning, match="not recorded"):
        assert tape.gradient(y, data) is None


def test_unwatched_arrays_and_values_read_before_the_tape_are_constants(interpret):
    w = Variable(2.0)
    before = w * 1.0
    with GradientTape(persistent=True) as tape:
        y = before * w
    assert tape.gradient(y, w) == 2.0  # only the read on the tape counts
    assert tape.gradient(y, np.array(1.0)) is None


def test_stop_recording_and_intermediate_sources(interpret):
    x = Variable(2.0)
    with GradientTape(persistent=True) as tape:
        y = x * x
        with tape.stop_recording():
            z = y * 3.0  # a constant for this tape
        w = y * z
    assert tape.gradient(w, y) == 12.0  # d(y z)/dy with z constant
    assert tape.gradient(w, x) == 48.0  # z * dy/dx = 12 * 4
    assert tape.gradient(z, x) is None


def test_nested_tapes_give_second_derivatives(interpret):
    x = Variable(2.0)
    with GradientTape() as outer:
        with GradientTape() as inner:
            y = x ** 3
        dy_dx = inner.gradient(y, x)
    assert float(dy_dx) == 12.0
    assert outer.gradient(dy_dx, x) == 12.0  # 6 x


def test_jacobian(interpret):
    x = Variable(np.array([1.0, 2.0, 3.0]))
    with GradientTape(persistent=True) as tape:
        y = x ** 2 * np.array([1.0, 0.0, 2.0])
        z = np.sum(x) * x
    np.testing.assert_allclose(tape.jacobian(y, x), np.diag([2.0, 0.0, 12.0]))
    jac = tape.jacobian(z, [x])[0]
    np.testing.assert_allclose(jac, np.full((3, 3), 1.0) * np.arange(1.0, 4.0)[:, None]
                               + np.eye(3) * 6.0)


def test_assignment_on_the_tape_starts_a_new_version(interpret):
    v = Variable(2.0)
    with GradientTape() as tape:
        a = v * 3.0
        v.assign(10.0)
        b = v * a  # d/dv: 3 * 10 (through a) + a (the new read) = 30 + 6
    assert tape.gradient(b, v) == 36.0


def test_recorded_values_behave_as_arrays_after_the_tape(interpret):
    x = Variable(np.array([1.0, -2.0]))
    with GradientTape() as tape:
        y = x * 2.0
    assert isinstance(np.asarray(y), np.ndarray)
    np.testing.assert_allclose(np.abs(y) + 1.0, [3.0, 5.0])
    assert (y * 2.0).tolist() == [4.0, -8.0]
    assert "EagerTensor" in repr(y)
    np.testing.assert_allclose(tracejit.function(lambda v: v * 3.0)(y), [6.0, -12.0])
    np.testing.assert_allclose(tracejit.nn.relu(y), [2.0, 0.0])
    del tape


def test_the_adjoint_is_cached_by_structure(interpret):
    params, x, y = mlp_data()
    variables = [Variable(p) for p in params]
    before = GradientTape.stats.traces
    for batch in (6, 6, 9, 6, 4):
        x, y = RNG.standard_normal((batch, 4)), np.eye(2)[RNG.integers(0, 2, batch)]
        with GradientTape() as tape:
            loss = mlp_loss(variables, x, y) * float(batch)  # a new Python float every step
        grads = tape.gradient(loss, variables)
        expected = tracejit.grad(lambda p, x, y, s: mlp_loss(p, x, y) * s)(params, x, y, batch)
        for g, e in zip(grads, expected):
            np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-14)
    # one structure: interpreted the first time, built once when it came again
    assert GradientTape.stats.traces - before == 1


def test_transformations_and_functions_on_the_eager_tape(interpret):
    w = Variable(2.0)

    @tracejit.function
    def scaled(x):  # traced through on the tape: its reads of w are recorded
        return w * x

    with GradientTape() as tape:
        y = tracejit.grad(lambda v: v ** 3)(w) + scaled(3.0)  # 3 w^2 + 3 w
    assert float(y) == 18.0
    assert tape.gradient(y, w) == 6 * 2.0 + 3.0


def test_the_eager_adjoint_compiles_when_its_structure_recurs(compiled):
    GradientTape.clear_cache()  # earlier tests made interpreting entries for this structure
    params, x, y = mlp_data()
    variables = [Variable(p) for p in params]
    before = GradientTape.stats.traces
    for _ in range(3):
        with GradientTape() as tape:
            loss = mlp_loss(variables, x, y)
        grads = tape.gradient(loss, variables)
    assert GradientTape.stats.traces == before + 1  # built (and compiled) on the 2nd sight
    for g, e in zip(grads, mlp_gradients_by_hand(params, x, y)):
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-14)


def test_lax_loop_on_the_eager_tape(interpret):
    w = Variable(1.5)
    with GradientTape() as tape:
        y = tracejit.lax.fori_loop(0, 3, lambda i, acc: acc * w, 1.0)
    assert float(y) == pytest.approx(1.5 ** 3)
    assert tape.gradient(y, w) == pytest.approx(3 * 1.5 ** 2)


# ----------------------------------------------------------------- traced

def test_tape_inside_a_function_equals_the_eager_tape(mode):
    params, x, y = mlp_data()
    variables = [Variable(p) for p in params]

    @tracejit.function
    def gradients(x, y):
        with GradientTape() as tape:
            loss = mlp_loss(variables, x, y)
        return loss, tape.gradient(loss, variables)

    with GradientTape() as tape:
        eager_loss = mlp_loss(variables, x, y)
    eager = tape.gradient(eager_loss, variables)
    loss, traced = gradients(x, y)
    assert loss == pytest.approx(float(eager_loss), rel=1e-12)
    for a, b in zip(traced, eager):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    gradients(x[:4], y[:4])
    assert gradients.stats.traces == 1


def test_traced_tape_conventions(interpret):
    w, u = Variable(np.array([1.0, 2.0])), Variable(3.0)

    @tracejit.function
    def f(x):
        with GradientTape(persistent=True) as tape:
            tape.watch(x)
            y = np.sum(w * x) * 2.0
            with tape.stop_recording():
                c = np.sum(w) * 1.0
            z = y * c
            wx = w * x
        return (tape.gradient(y, [w, u, x]), tape.gradient(z, w),
                tape.jacobian(wx, w), tape.gradient(y, u, unconnected_gradients="zero"))

    x = np.array([3.0, 4.0])
    (dw, du, dx), dz_dw, jac, zero_u = f(x)
    np.testing.assert_allclose(dw, 2 * x)
    assert du is None and zero_u == 0.0
    np.testing.assert_allclose(dx, 2 * w.numpy())
    np.testing.assert_allclose(dz_dw, 2 * x * 3.0)  # c = sum(w) is constant for the tape
    np.testing.assert_allclose(jac, np.diag(x))


def test_traced_nested_tapes(interpret):
    x = Variable(2.0)

    @tracejit.function
    def second(scale):
        with GradientTape() as outer:
            with GradientTape() as inner:
                y = scale * x ** 3
            dy = inner.gradient(y, x)
        return dy, outer.gradient(dy, x)

    assert second(1.0) == (12.0, 12.0)
    x.assign(1.0)
    assert second(2.0) == (6.0, 12.0)
    assert second.stats.traces == 1


def test_tf_gradients_is_built_once(interpret):
    var = Variable(np.array([1.0, -1.0]))
    other = Variable(1.0)
    grad_fn = tracejit.gradients(lambda data: np.sum((data @ var) ** 2), [var, other])
    for data in (np.eye(2), RNG.standard_normal((5, 2))):
        g, none = grad_fn(data)
        np.testing.assert_allclose(g, 2 * data.T @ (data @ var.numpy()))
        assert none is None
    var.assign([2.0, 0.5])
    np.testing.assert_allclose(grad_fn(np.eye(2))[0], [4.0, 1.0])
    assert grad_fn.stats.traces == 1
    with pytest.raises(TypeError, match="Variables"):
        tracejit.gradients(lambda d: d, [np.ones(2)])


# ------------------------------------------- the lean eager path (issue 21)

def test_an_error_on_the_tape_names_the_users_line(interpret):
    w = Variable(np.ones((3, 2)))
    for _ in range(2):  # the second time, the structure up to the error is a known one
        with GradientTape():
            h = w * 2.0
            with pytest.raises(tracejit.ShapeError) as info:
                line = sys._getframe().f_lineno + 1
                h @ np.ones((3, 3))
        assert f"{__file__}:{line}" in str(info.value)
        assert "matmul" in str(info.value)


def _loss_with_a_branch(w, x):
    y = w * x
    if float(np.sum(y)) > 0:  # a Python `if` on a recorded value
        return np.sum(y ** 2), "square"
    return np.sum(np.sin(y)), "sine"


@pytest.mark.parametrize("fixture", ["interpret", "compiled"])
def test_a_step_whose_structure_changes_gets_its_gradient(fixture, request):
    request.getfixturevalue(fixture)
    x = np.array([0.5, -1.0, 2.0])
    w = Variable(np.ones(3))
    branches = []
    for scale in (1.0, 1.5, 2.0, -1.0, 1.0, -2.0):  # the branch flips at the 4th step
        w.assign(scale * np.array([1.0, 0.3, 0.7]))
        with GradientTape() as tape:
            loss, branch = _loss_with_a_branch(w, x)
        (grad,) = tape.gradient(loss, [w])
        value = w.numpy() * x
        expected = 2 * value * x if branch == "square" else np.cos(value) * x
        np.testing.assert_allclose(grad, expected, rtol=1e-13)
        np.testing.assert_allclose(float(loss), np.sum(value ** 2) if branch == "square"
                                   else np.sum(np.sin(value)), rtol=1e-13)
        branches.append(branch)
    assert branches == ["square"] * 3 + ["sine", "square", "sine"]


def test_repeated_steps_reuse_the_cut_and_give_fresh_values(interpret):
    """A training loop: the same structure every step (the cut is made once),
    new values (assigned Variables, new batches, new Python floats) each time."""
    params, _, _ = mlp_data()
    variables = [Variable(p) for p in params]
    for step in range(4):
        x, y = RNG.standard_normal((6, 4)), np.eye(2)[RNG.integers(0, 2, 6)]
        scale = 1.0 + step
        with GradientTape() as tape:
            loss = mlp_loss(variables, x, y) * scale
        grads = tape.gradient(loss, variables)
        current = [v.numpy() for v in variables]
        for g, e in zip(grads, mlp_gradients_by_hand(current, x, y)):
            np.testing.assert_allclose(g, scale * e, rtol=1e-12, atol=1e-14)
        for v, g in zip(variables, grads):
            v.assign_sub(0.1 * g)


def test_reused_plans_follow_what_each_tape_watches(interpret):
    """Recordings of one structure that differ in what is watched, stopped or
    asked for each get their own gradient, however often they come."""
    W, b = Variable(RNG.standard_normal((3, 2))), Variable(RNG.standard_normal(2))
    for _ in range(3):
        x = RNG.standard_normal((4, 3))
        W.assign(RNG.standard_normal((3, 2)))
        Wv, bv = W.numpy(), b.numpy()
        with GradientTape(persistent=True) as tape:
            loss = np.sum(np.tanh(x @ W + b) ** 2)
        t = np.tanh(x @ Wv + bv)
        d_pre = 2 * t * (1 - t ** 2)
        np.testing.assert_allclose(tape.gradient(loss, W), x.T @ d_pre, rtol=1e-12)
        np.testing.assert_allclose(tape.gradient(loss, [b])[0], d_pre.sum(0), rtol=1e-12)
        jac = tape.jacobian(np.tanh(x @ W + b)[0], b)  # recorded after the tape: a constant
        assert jac is None
        with GradientTape(watch_accessed_variables=False) as tape:
            xs = tape.watch(x)
            loss = np.sum(np.tanh(xs @ W + b) ** 2)
        dW, dx = tape.gradient(loss, [W, x])
        assert dW is None
        np.testing.assert_allclose(dx, d_pre @ Wv.T, rtol=1e-12)
        with GradientTape() as tape:
            pre = x @ W + b
            with tape.stop_recording():
                side = pre * 2.0  # not recorded: a constant for this tape
            loss = np.sum(np.tanh(pre) ** 2) + np.sum(side)
        dW, db, dx = tape.gradient(loss, [W, b, x], unconnected_gradients="zero")
        np.testing.assert_allclose(dW, x.T @ d_pre, rtol=1e-12)
        np.testing.assert_allclose(db, d_pre.sum(0), rtol=1e-12)
        np.testing.assert_array_equal(dx, np.zeros_like(x))
