"""The eager tape's memo of surface calls (frontend/eager_memo.py): a call
repeated at the same point of a recording's structure is replayed, and the
replay gives NumPy's values and the compiled gradient; a call whose static
arguments, scalars or array types change there runs in full."""

import numpy as np
import pytest

import tracejit
from tracejit import GradientTape, Variable
from tracejit.frontend import eager, eager_memo
from tracejit.trace.tracer import memoised

RNG = np.random.default_rng(21)


def _replays():
    """The memo entries of every node of the trie: (head name, replayable)."""
    found, stack = [], [eager._TRIE.root]
    while stack:
        node = stack.pop()
        for key, entry in (node.memo or {}).items():
            found.append((getattr(key[0], "__name__", str(key[0])),
                          entry not in (eager_memo.UNMEMOISABLE, eager_memo.SEEN)))
        stack.extend(node.children.values())
    return found


def _mlp_step(variables, x, y):
    W1, b1, W2, b2 = variables
    with GradientTape() as tape:
        h = tracejit.nn.functional.relu(x @ W1 + b1)
        loss = np.mean(-np.sum(y * tracejit.nn.functional.log_softmax(h @ W2 + b2), axis=-1))
    return tape, loss


def _mlp_loss(params, x, y):
    W1, b1, W2, b2 = params
    h = np.maximum(x @ W1 + b1, 0.0)
    return tracejit.nn.cross_entropy(h @ W2 + b2, y)


def test_replayed_steps_equal_numpy_and_the_compiled_gradient(interpret):
    params = [RNG.standard_normal((4, 3)), RNG.standard_normal(3),
              RNG.standard_normal((3, 2)), RNG.standard_normal(2)]
    variables = [Variable(p) for p in params]
    reference = tracejit.grad(_mlp_loss)
    for _ in range(4):
        x, y = RNG.standard_normal((5, 4)), np.eye(2)[RNG.integers(0, 2, 5)]
        tape, loss = _mlp_step(variables, x, y)
        current = [v.numpy() for v in variables]
        h = np.maximum(x @ current[0] + current[1], 0.0)
        z = h @ current[2] + current[3]
        log_p = z - z.max(1, keepdims=True)
        log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
        np.testing.assert_allclose(float(loss), -np.mean(np.sum(y * log_p, 1)), rtol=1e-13)
        grads = tape.gradient(loss, variables)
        for g, e in zip(grads, reference(current, x, y)):
            np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-14)
        for v, g in zip(variables, grads):
            v.assign_sub(0.1 * g)
    replays = dict(_replays())
    for head in ("matmul", "add", "relu", "log_softmax", "multiply", "sum", "mean"):
        assert replays.get(head), (head, replays)


@pytest.mark.parametrize("change", ["axis", "scalar", "array dtype", "array shape"])
def test_a_call_that_changes_at_the_same_point_is_not_replayed_wrongly(interpret, change):
    """The same operation at the same point of the same structure, with a
    different static argument, Python scalar or constant array each step."""
    w = Variable(RNG.standard_normal((3, 3)))
    for step in range(4):
        axis, scale = step % 2, 1.0 + step
        constant = RNG.standard_normal((3, 3) if change != "array shape" or step % 2 else (3,))
        if change == "array dtype" and step % 2:
            constant = constant.astype(np.float32)
        with GradientTape() as tape:
            t = w * 1.0
            if change == "axis":
                out = np.sum(t, axis=axis)
            elif change == "scalar":
                out = t * scale
            else:
                out = t * constant
            loss = np.sum(np.sin(out))
        value = w.numpy()
        expected = {"axis": np.sum(value, axis=axis), "scalar": value * scale}.get(
            change, value * constant)
        np.testing.assert_allclose(out.numpy(), expected, rtol=1e-13)
        assert out.dtype == expected.dtype
        factor = {"axis": 1.0, "scalar": scale}.get(change, constant)
        (grad,) = tape.gradient(loss, [w])
        if change == "axis":
            dw = np.broadcast_to(np.expand_dims(np.cos(expected), axis), value.shape)
        else:
            dw = np.cos(expected) * factor
        np.testing.assert_allclose(grad, dw, rtol=1e-5 if expected.dtype == np.float32 else 1e-12)


def test_an_array_captured_earlier_or_anew_is_read_each_time(interpret):
    """`y` used twice in one step (captured once), then two different arrays:
    the replay keys the capture, so each step reads its own arrays."""
    w = Variable(RNG.standard_normal(4))
    y = RNG.standard_normal(4)
    for a, b in [(y, y), (RNG.standard_normal(4), RNG.standard_normal(4)), (y, y)]:
        with GradientTape() as tape:
            loss = np.sum(w * a) + np.sum(w * b)
        np.testing.assert_allclose(float(loss), np.sum(w.numpy() * (a + b)), rtol=1e-13)
        np.testing.assert_allclose(tape.gradient(loss, w), a + b, rtol=1e-13)


@memoised
def _branches_on_its_value(x):
    return x * 2.0 if float(np.sum(x)) > 0 else x * 3.0


def test_a_call_that_reads_a_value_runs_in_full_each_time(interpret):
    w = Variable(np.ones(2))
    for sign in (1.0, -1.0, 1.0, -1.0):
        w.assign(sign * np.ones(2))
        with GradientTape() as tape:
            out = _branches_on_its_value(w * 1.0)
        np.testing.assert_allclose(out.numpy(), w.numpy() * (2.0 if sign > 0 else 3.0))
        np.testing.assert_allclose(tape.gradient(out, w), [2.0 if sign > 0 else 3.0] * 2)
    assert ("_branches_on_its_value", False) in _replays()


def test_replayed_values_are_arrays_after_the_tape_and_nested_tapes_still_work(interpret):
    x = Variable(np.array([0.3, -0.7]))
    for _ in range(3):
        with GradientTape() as outer:
            with GradientTape() as inner:
                y = np.sum(np.sin(x) * x)
            dy = inner.gradient(y, x)
        d2 = outer.gradient(dy, x)
        v = x.numpy()
        np.testing.assert_allclose(dy, np.cos(v) * v + np.sin(v), rtol=1e-13)
        np.testing.assert_allclose(d2, 2 * np.cos(v) - np.sin(v) * v, rtol=1e-13)
        np.testing.assert_allclose(np.exp(y), np.exp(np.sum(np.sin(v) * v)), rtol=1e-13)


def test_negative_zero_is_not_zero(interpret):
    w = Variable(np.array([1.0, -2.0]))
    for scale in (0.0, -0.0, 0.0):
        with GradientTape():
            out = w * 1.0 * scale
        np.testing.assert_array_equal(np.signbit(out.numpy()), np.signbit(w.numpy() * scale))


def test_a_structure_seen_once_costs_no_replay(interpret, monkeypatch):
    """A loop to a tolerance makes a new structure at every step: its calls
    are noted, never turned into replays (that would cost more than it saves)."""
    made = []
    monkeypatch.setattr(eager, "replayer", lambda *a: made.append(a) or None)
    x = Variable(np.array(2.0))
    with GradientTape() as tape:
        guess = x * 1.0
        for _ in range(30):  # Newton's iteration for sqrt(x), unrolled on the tape
            guess = 0.5 * (guess + x / guess)
    np.testing.assert_allclose(float(guess), np.sqrt(2.0))
    np.testing.assert_allclose(tape.gradient(guess, x), 0.5 / np.sqrt(2.0))
    assert not made
