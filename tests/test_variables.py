"""Variables: arrays everywhere, implicit inputs of traced functions, and
assignments written back from the kernel (variables.py)."""

import numpy as np
import pytest

import tracejit
from tracejit import Variable

RNG = np.random.default_rng(3)


# ------------------------------------------------------------- the object

def test_value_name_dtype_shape_and_numpy_copy():
    v = Variable(np.arange(6.0).reshape(2, 3), name="w", trainable=False)
    assert (v.name, v.trainable, v.shape, v.dtype, v.ndim, v.size) == (
        "w", False, (2, 3), np.float64, 2, 6)
    copy = v.numpy()
    copy[0, 0] = 100.0
    assert v.numpy()[0, 0] == 0.0
    assert "tracejit.Variable 'w' shape=(2, 3) dtype=float64" in repr(v)
    scalar = Variable(3.0)
    assert isinstance(scalar.numpy(), np.float64) and scalar.numpy() == 3.0


def test_assign_casts_to_the_dtype_and_checks_the_shape():
    v = Variable(np.zeros(3, np.float32))
    v.assign(np.array([1.0, 2.0, 3.0]))  # float64 values into a float32 variable
    assert v.dtype == np.float32 and v.numpy().tolist() == [1.0, 2.0, 3.0]
    v.assign_add(np.ones(3))
    v.assign_sub(np.full(3, 0.5))
    np.testing.assert_allclose(v.numpy(), [1.5, 2.5, 3.5])
    with pytest.raises(tracejit.ShapeError, match="shape"):
        v.assign(np.zeros(4))
    with pytest.raises(TypeError, match="cannot assign"):
        Variable(np.zeros(2, np.int64)).assign(np.array([0.5, 1.5]))


def test_assign_rebinds_so_values_handed_out_do_not_change():
    v = Variable(np.zeros(2))
    seen = np.asarray(v)
    v.assign_add(np.ones(2))
    assert seen.tolist() == [0.0, 0.0] and v.numpy().tolist() == [1.0, 1.0]


def test_shape_with_free_dimensions_and_validate_shape():
    v = Variable(np.zeros((2, 3)), shape=(None, 3))
    v.assign(np.ones((5, 3)))
    assert v.shape == (5, 3)
    with pytest.raises(tracejit.ShapeError):
        v.assign(np.ones((5, 4)))
    free = Variable(np.zeros(2), validate_shape=False)
    free.assign(np.ones((2, 2)))
    assert free.shape == (2, 2)


def test_usable_wherever_an_array_is():
    a, b = RNG.standard_normal((3, 3)), RNG.standard_normal(3)
    va, vb = Variable(a), Variable(b)
    pairs = [
        (va + vb, a + b), (vb - va, b - a), (va * 2.0, a * 2.0), (2.0 / (vb + 5), 2.0 / (b + 5)),
        (va ** 2, a ** 2), (va @ vb, a @ b), (b @ va, b @ a), (-va, -a), (abs(va), abs(a)),
        (va > 0, a > 0), (np.exp(va), np.exp(a)), (np.maximum(va, vb), np.maximum(a, b)),
        (np.mean(va, axis=0), a.mean(axis=0)), (np.stack([vb, vb]), np.stack([b, b])),
        (np.concatenate([va, va]), np.concatenate([a, a])), (va.sum(), a.sum()), (va.T, a.T),
        (va.reshape(9), a.reshape(9)), (va[1:, 0], a[1:, 0]), (np.where(va > 0, va, 0), np.where(
            a > 0, a, 0)), (a + vb, a + b),
    ]
    for got, want in pairs:
        np.testing.assert_allclose(got, want)
    assert float(Variable(2.5)) == 2.5 and len(va) == 3
    with pytest.raises(tracejit.UnsupportedError, match="assign"):
        np.add(a, b, out=va)


# ------------------------------------------- inside traced functions

def test_a_function_reads_variables_as_inputs(interpret):
    W, b = Variable(np.array([2.0])), Variable(np.zeros(1))

    @tracejit.function
    def model(x):
        return W * x + b

    x = np.arange(4.0)
    np.testing.assert_allclose(model(x), 2.0 * x)
    W.assign([3.0])
    b.assign([1.0])
    np.testing.assert_allclose(model(x), 3.0 * x + 1.0)
    np.testing.assert_allclose(model(np.arange(7.0)), 3.0 * np.arange(7.0) + 1.0)
    assert model.stats.traces == 1  # new values, new batch size: the same program
    assert "f64[1]" in str(model.ir(x))  # the variables are inputs of the program


def test_a_new_rank_traces_again_a_new_value_does_not(interpret):
    v = Variable(np.ones(3), validate_shape=False)

    @tracejit.function
    def total(x):
        return np.sum(v) * x

    assert total(2.0) == 6.0
    v.assign(np.full(3, 2.0))
    assert total(2.0) == 12.0 and total.stats.traces == 1
    v.assign(np.ones((2, 2)))
    assert total(2.0) == 8.0 and total.stats.traces == 2


def test_assignments_are_written_back(interpret):
    w = Variable(np.array([1.0, 2.0]))
    count = Variable(np.int64(0), trainable=False)

    @tracejit.function
    def step(x):
        w.assign_sub(0.5 * x)
        count.assign_add(1)
        return np.sum(w)  # reads see the new value

    assert step(np.array([2.0, 2.0])) == 1.0
    assert step(np.array([2.0, 2.0])) == -1.0
    np.testing.assert_allclose(w.numpy(), [-1.0, 0.0])
    assert count.numpy() == 2 and step.stats.traces == 1


def test_assigning_an_input_stores_a_copy(interpret):
    v = Variable(np.zeros(3))

    @tracejit.function
    def set_to(x):
        v.assign(x)
        return x

    x = np.ones(3)
    set_to(x)
    x[:] = 5.0  # the caller's array changes: the variable must not
    assert v.numpy().tolist() == [1.0, 1.0, 1.0]


def test_variables_under_transformations(interpret):
    w = Variable(np.array([1.0, -2.0]))

    def loss(x):
        return np.sum(w * x ** 2)

    x = np.array([3.0, 0.5])
    grad = tracejit.grad(loss)
    np.testing.assert_allclose(grad(x), 2 * w.numpy() * x)
    w.assign([4.0, 1.0])
    np.testing.assert_allclose(grad(x), [24.0, 1.0])
    assert grad.stats.traces == 1
    value, g = tracejit.value_and_grad(loss)(x)
    assert value == pytest.approx(36.25)
    out, tangent = tracejit.jvp(loss, (x,), (np.array([1.0, 0.0]),))
    assert tangent == pytest.approx(24.0)
    out, vjp_fn = tracejit.vjp(loss, x)
    np.testing.assert_allclose(vjp_fn(1.0)[0], [24.0, 1.0])


def test_variables_passed_as_arguments_are_their_values(interpret):
    w = Variable(np.array([3.0, 1.0]))
    np.testing.assert_allclose(tracejit.grad(lambda v: np.sum(v ** 2))(w), [6.0, 2.0])
    double = tracejit.function(lambda v, x: v * x)
    np.testing.assert_allclose(double(w, 2.0), [6.0, 2.0])
    with pytest.raises(TypeError, match="not an array"):
        double("text", 2.0)


def test_a_variable_read_by_an_inner_function_is_an_input_of_the_outer(interpret):
    w = Variable(2.0)

    @tracejit.function
    def inner(x):
        return w * x

    @tracejit.function
    def outer(x):
        return inner(x) + tracejit.grad(lambda y: w * y ** 2)(x)

    assert outer(3.0) == 6.0 + 12.0
    w.assign(1.0)
    assert outer(3.0) == 3.0 + 6.0
    assert outer.stats.traces == 1


def test_variables_created_on_the_first_call_trace_twice_then_never(interpret):
    made = []

    @tracejit.function
    def lazy(x):
        if not made:
            made.append(Variable(np.full(2, 3.0)))
        return made[0] * x

    np.testing.assert_allclose(lazy(np.ones(2)), [3.0, 3.0])
    made[0].assign([1.0, 1.0])
    np.testing.assert_allclose(lazy(np.ones(2)), [1.0, 1.0])
    assert lazy.stats.traces == 1


def test_a_later_signature_that_reads_more_variables(interpret):
    a, b = Variable(1.0), Variable(2.0)

    @tracejit.function
    def f(x):
        return x * a if x.ndim == 1 else x * a * b

    assert f(np.ones(2)).tolist() == [1.0, 1.0]
    assert f(np.ones((1, 2))).tolist() == [[2.0, 2.0]]  # reads b too: inputs (a, b) from now on
    a.assign(3.0)
    assert f(np.ones(2)).tolist() == [3.0, 3.0]  # the first signature, traced with both
    assert f(np.ones((1, 2))).tolist() == [[6.0, 6.0]]


def test_a_new_variable_on_every_trace_is_an_error(interpret):
    @tracejit.function
    def fresh(x):
        return Variable(np.ones(2)) * x

    with pytest.raises(TypeError, match="creates new Variables"):
        fresh(np.ones(2))


def test_assigning_inside_grad_is_an_error(interpret):
    w = Variable(1.0)

    def loss(x):
        w.assign(x)
        return x * 2.0

    with pytest.raises(tracejit.UnsupportedError, match="assign"):
        tracejit.grad(loss)(1.0)


def test_compiled_step_updates_variables(compiled):
    """An SGD step compiled into one kernel, against the same step in NumPy."""
    W = Variable(RNG.standard_normal((3, 2)))
    b = Variable(np.zeros(2))
    x, y = RNG.standard_normal((5, 3)), RNG.standard_normal((5, 2))
    W_ref, b_ref = W.numpy(), b.numpy()

    @tracejit.function
    def sgd_step(x, y, lr):
        with tracejit.GradientTape() as tape:
            loss = np.mean((x @ W + b - y) ** 2)
        dW, db = tape.gradient(loss, [W, b])
        W.assign_sub(lr * dW)
        b.assign_sub(lr * db)
        return loss

    for lr in (0.1, 0.05, 0.2):
        r = x @ W_ref + b_ref - y
        loss = np.mean(r ** 2)
        W_ref, b_ref = W_ref - lr * 2 * x.T @ r / r.size, b_ref - lr * 2 * r.sum(0) / r.size
        assert sgd_step(x, y, lr) == pytest.approx(loss)
        np.testing.assert_allclose(W.numpy(), W_ref, rtol=1e-12)
        np.testing.assert_allclose(b.numpy(), b_ref, rtol=1e-12, atol=1e-15)
    assert (sgd_step.stats.traces, sgd_step.stats.compiles) == (1, 1)  # a new rate: no retrace
