"""Loop rolling: Python loops traced into repeated blocks come back as one scan,
exactly (same values as the unrolled program), and only when provably regular."""

import sys
from pathlib import Path

import numpy as np
import pytest

import tracejit
from tracejit import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from compile_programs import hand_rnn_grad  # noqa: E402  (the benchmark's reference)

pytestmark = pytest.mark.usefixtures("interpret")


def char_rnn(params, X, Y, h0):
    Wxh, Whh, Why, bh, by = params
    h, loss = h0, 0.0
    for t in range(X.shape[0]):
        h = np.tanh(X[t] @ Wxh + h @ Whh + bh)
        logits = h @ Why + by
        loss = loss - (logits - nn.logsumexp(logits))[Y[t]]
    return loss / X.shape[0]


def rnn_data(steps, vocab=7, hidden=5, seed=0):
    rng = np.random.default_rng(seed)
    shapes = [(vocab, hidden), (hidden, hidden), (hidden, vocab), (hidden,), (vocab,)]
    params = tuple(rng.standard_normal(shape) * 0.3 for shape in shapes)
    ids = rng.integers(0, vocab, steps + 1)
    return params, np.eye(vocab)[ids[:-1]], ids[1:], np.zeros(hidden)


@pytest.mark.parametrize("steps", [3, 25])
def test_char_rnn_rolls_into_one_scan_and_matches_the_unrolled_program(steps):
    args = rnn_data(steps)
    rolled = tracejit.function(char_rnn)
    unrolled = tracejit.function(char_rnn, roll_loops=False)
    text = str(rolled.ir(*args))
    assert text.count("scan[") == 1 and f"length={steps}" in text
    assert rolled(*args) == unrolled(*args)  # bit for bit: the same operations in order
    for g, u, h in zip(tracejit.grad(rolled)(*args), tracejit.grad(unrolled)(*args),
                       hand_rnn_grad(*args)):
        np.testing.assert_array_equal(g, u)
        np.testing.assert_allclose(g, h, rtol=1e-12, atol=1e-14)


def test_rolled_program_has_the_same_size_for_every_step_count():
    sizes = {len(str(tracejit.grad(char_rnn).ir(*rnn_data(steps))).splitlines())
             for steps in (4, 12, 40)}
    assert len(sizes) == 1


def test_two_steps_stay_unrolled():
    assert "scan[" not in str(tracejit.make_ir(char_rnn)(*rnn_data(2)))


def mlp(params, x):
    h = x
    for W, b in params:
        h = np.tanh(h @ W + b)
    return np.sum(h ** 2)


def mlp_params(widths, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((a, b)) / np.sqrt(a), rng.standard_normal(b) * 0.1)
            for a, b in zip(widths, widths[1:])]


def test_layer_loop_over_same_shaped_weights_rolls():
    params, x = mlp_params([6] * 6), np.random.default_rng(1).standard_normal((4, 6))
    assert "scan[" in str(tracejit.make_ir(mlp)(params, x))
    got = tracejit.grad(mlp)(params, x)
    want = tracejit.grad(tracejit.function(mlp, roll_loops=False))(params, x)
    for (gw, gb), (ww, wb) in zip(got, want):
        np.testing.assert_allclose(gw, ww, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(gb, wb, rtol=1e-13, atol=1e-15)


def test_layers_of_different_shapes_are_not_rolled():
    params, x = mlp_params([6, 5, 4, 3, 2]), np.ones((4, 6))
    assert "scan[" not in str(tracejit.make_ir(mlp)(params, x))


def test_steps_with_different_ops_are_not_rolled():
    def f(x, W):
        for k in range(4):
            x = np.tanh(x @ W) if k % 2 else np.sin(x @ W)
        return x.sum()

    text = str(tracejit.make_ir(f)(np.ones((3, 4)), np.eye(4)))
    assert "scan[" not in text


def test_elementwise_only_loops_are_left_to_fusion():
    def horner(x):
        y = x
        for _ in range(5):
            y = y * x + 1.0
        return y

    assert "scan[" not in str(tracejit.make_ir(horner)(np.ones(3)))


def test_repeated_dead_code_rolls_and_differentiates():
    # Found by the random-program tests: three unused `x @ x` roll into a scan
    # whose gradient forward has no results; it must vanish, not break a pass.
    def f(x):
        for _ in range(3):
            x @ x
        return np.sin(x).sum()

    x = np.arange(4.0).reshape(2, 2)
    np.testing.assert_allclose(tracejit.grad(f)(x), np.cos(x))


def test_rolling_can_be_switched_off():
    f = tracejit.function(char_rnn, roll_loops=False)
    assert "scan[" not in str(f.ir(*rnn_data(5)))


def test_rolling_is_logged(caplog):
    with caplog.at_level("INFO", logger="tracejit"):
        tracejit.make_ir(char_rnn)(*rnn_data(6))
    assert any("rolled 6 iterations" in r.getMessage() for r in caplog.records)


def test_kernel_source_has_the_same_length_for_every_step_count():
    def driver_lines(steps):
        source = tracejit.grad(char_rnn).source(*rnn_data(steps))
        return source.split("# ----")[0].count("\n"), source.count("\n")

    assert len({driver_lines(steps) for steps in (25, 50, 100)}) == 1
