"""The interpreter tier as a person would write the NumPy: results written into
dead operands' buffers, stacks that only loops read left as rows, float32
sums accumulated wide; checked against backpropagation by hand."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

import tracejit
from tracejit.backend import interpreter
from tracejit.testing import check_grads

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
import compile_programs as cp  # noqa: E402  (the benchmark's programs and hand gradients)

RNG = np.random.default_rng(21)


def source_of(program) -> str:
    writer = interpreter._Writer(program)
    writer.function()
    return "\n".join(writer.lines)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_rolled_mlp_matches_backprop_by_hand(interpret, dtype):
    params, x, y = cp.mlp_data(6)
    cast = lambda a: a.astype(dtype)  # noqa: E731
    params = [(cast(W), cast(b)) for W, b in params]
    x, y = cast(x), cast(y)
    loss = cp.mlp_loss(np)
    program = tracejit.value_and_grad(loss).ir(params, x, y)
    text = source_of(program)
    assert "Rows(" in text  # the stacked weights are never copied into one array
    assert "out=" in text
    value, grads = tracejit.value_and_grad(loss)(params, x, y)
    want_value, want_grads = cp.hand_mlp_value_and_grad(params, x, y)
    rtol = 1e-12 if dtype == np.float64 else 2e-5
    assert value == pytest.approx(want_value, rel=rtol)
    for got, want in zip(grads, want_grads):
        for g, w in zip(got, want):
            assert g.dtype == dtype
            np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol * np.abs(w).max())


def test_rnn_matches_backprop_by_hand(interpret):
    args = cp.rnn_data(7)
    value, grads = tracejit.value_and_grad(cp.rnn_loss(np))(*args)
    want_value, want_grads = cp.hand_rnn_value_and_grad(*args)
    assert value == pytest.approx(want_value, rel=1e-12)
    for g, w in zip(grads, want_grads):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-14)


def test_a_buffer_is_reused_only_when_nothing_else_reads_it(interpret):
    def fn(x, y):
        a = x * y  # read twice: its buffer must survive the first reader
        b = a + 1.0
        return np.sum(b * a) + np.sum(np.exp(a) * y)

    x, y = np.linspace(-1, 1, 12).reshape(3, 4), np.linspace(0, 2, 4)
    a = x * y
    assert tracejit.function(fn)(x, y) == pytest.approx(np.sum((a + 1) * a)
                                                         + np.sum(np.exp(a) * y))
    np.testing.assert_allclose(tracejit.grad(fn)(x, y), (2 * a + 1) * y + np.exp(a) * y * y)


def test_float32_sums_accumulate_in_float64(interpret):
    x = np.full(10**6, 0.1, np.float32)
    got = tracejit.function(np.sum)(x)
    assert got.dtype == np.float32
    assert got == np.float32(np.sum(x, dtype=np.float64))


def loop_program(W, xs, c0, literal=True):
    """A loop body with an invariant (run once before the loop) read by a ufunc
    that could write into it, per-step values that are the incoming carry, a
    literal output, and a reversed inner loop."""
    from tracejit import lax

    def step(c, x):
        shift = np.exp(W[0])  # loop-invariant and fresh: no step may reuse its buffer
        new = np.tanh(shift + c) * x
        back, _ = lax.scan(lambda d, _: (d * 0.5 + new, None), c, None, length=2,
                           reverse=True)
        return new + back, (c, new @ W, 3.0 if literal else new)

    c, (old, mixed, three) = lax.scan(step, c0, xs)
    return c, old, mixed, three


def loop_by_hand(W, xs, c0):
    c, olds, mixed = c0, [], []
    for x in xs:
        new = np.tanh(np.exp(W[0]) + c) * x
        back = (c * 0.5 + new) * 0.5 + new
        olds.append(c)
        mixed.append(new @ W)
        c = new + back
    return c, np.stack(olds), np.stack(mixed), np.full(len(xs), 3.0)


def test_loops_are_written_inline(interpret):
    W, xs, c0 = RNG.standard_normal((3, 3)), RNG.standard_normal((5, 3)), np.ones(3)
    writer = interpreter._Writer(tracejit.function(loop_program).ir(W, xs, c0))
    writer.function()
    text = "\n".join(writer.lines)
    assert text.count("for t") == 2 and "else:" in text  # impl if the length is 0
    (exp,) = [name for name, value in writer.namespace.items() if value is np.exp]
    assert text.index(f"{exp}(") < text.index("for t")  # hoisted
    for got, want in zip(tracejit.function(loop_program)(W, xs, c0), loop_by_hand(W, xs, c0)):
        np.testing.assert_allclose(got, want, rtol=1e-14)
    # (a literal per-step output breaks the second derivative, compiled or not: not here)
    check = lambda W, xs: sum(np.sum(o * o) for o in loop_program(W, xs, c0, False))  # noqa
    check_grads(check, (W, xs), order=2)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_relu_slope_is_one_heaviside(interpret, dtype):
    """max(a, 0)'s slope, ties split and NaN giving 0 as the two selects it replaces."""
    def fn(a, c):
        return np.sum(np.maximum(a, 0.0) * c)

    a = np.array([2.0, -1.0, 0.0, -0.0, np.nan, np.inf, -np.inf, 1e-300], dtype)
    c = np.linspace(1.0, 2.0, a.size).astype(dtype)
    assert "heaviside" in source_of(tracejit.value_and_grad(fn).ir(a, c))
    with np.errstate(invalid="ignore"):
        want = c * np.where(a > 0, 1.0, np.where(a == 0, 0.5, 0.0)).astype(dtype)
    got = tracejit.grad(fn)(a, c)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, want)
