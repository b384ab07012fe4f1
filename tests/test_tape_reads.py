"""Variable reads on an eager tape: one tape recording alone reads in one
call (variables.read -> EagerBuilder.read_alone), `ndarray op Variable` goes
straight to the tracer's override; results and gradients as before."""

import numpy as np

import tracejit
from tracejit import GradientTape, Variable

RNG = np.random.default_rng(7)


def test_array_op_variable_on_a_tape_is_recorded_once(interpret):
    x = RNG.standard_normal((5, 3))
    W, b = Variable(RNG.standard_normal((3, 2))), Variable(RNG.standard_normal(2))
    for _ in range(3):  # noted, recorded for replay, replayed
        with GradientTape() as tape:
            z = x @ W + b
            loss = np.sum(np.exp(W)) + np.sum(z * z)
        assert sum(e.prim.name == "dot_general" or e.prim.name == "matmul"
                   for e in tape.builder.eqns) == 1
        assert len(tape.builder.invars) == 2  # each Variable read once, as one input
        gW, gb = tape.gradient(loss, [W, b])
        zv = x @ W.numpy() + b.numpy()
        np.testing.assert_allclose(gW, np.exp(W.numpy()) + x.T @ (2 * zv), rtol=1e-12)
        np.testing.assert_allclose(gb, np.sum(2 * zv, axis=0), rtol=1e-12)
        W.assign_sub(0.01 * gW)


def test_reads_of_unwatched_and_nested_tapes_keep_their_meaning(interpret):
    W = Variable(np.array([1.0, 2.0]))
    frozen = Variable(np.array([3.0, 4.0]), trainable=False)
    with GradientTape(watch_accessed_variables=False) as tape:
        assert type(W + 0.0) is np.ndarray  # not watched: its array
        tape.watch(W)
        loss = np.sum(W * W * frozen)
    np.testing.assert_allclose(tape.gradient(loss, W), 2 * W.numpy() * frozen.numpy())
    with GradientTape() as outer:
        with GradientTape() as inner:  # two tapes recording: the general read
            y = np.sum(W * W)
        g = inner.gradient(y, W)
        z = np.sum(g * W)
    np.testing.assert_allclose(outer.gradient(z, W), 4 * W.numpy())


def test_a_layer_called_again_on_another_batch_size_updates_its_output_shape(interpret):
    model = tracejit.nn.Sequential([tracejit.nn.Input((3,)), tracejit.nn.Dense(2)])
    for batch in (4, 4, 6):
        with GradientTape():
            model(RNG.standard_normal((batch, 3)).astype(np.float32))
        assert model.layers[-1]._output_shape == (batch, 2)
