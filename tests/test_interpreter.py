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

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
import compile_programs as cp  # noqa: E402  (the benchmark's programs and hand gradients)


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
