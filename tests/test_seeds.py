"""The four seed programs of shared/seeds/, TensorFlow `GradientTape` examples of
"the gradient of the loss with respect to the variables", redone in NumPy with
tracejit and checked against derivations by hand.

- 000: linear model `mean((W * x + b - y) ** 2)`, W and b of shape (1,);
- 001: `(y - (w * x + b)) ** 2` for scalars;
- 002 / 003: `x ** 2` at 3.0 is 6.0;
- 003: a Keras model, Dense(10 -> 5, relu) -> Dense(5 -> 2) and categorical
  cross-entropy from logits, batch 32, one-hot labels; then an SGD step.
  (The seed gives the second layer a softmax activation *and* passes
  `from_logits=True`, which applies softmax twice; we follow the intent and
  treat the second layer's output as the logits.)
"""

import numpy as np
import pytest

import tracejit
from tracejit.testing import check_grads

# --------------------------------------------------------------- seed 002/003


def square(x):
    return x**2


def test_square_at_three_is_six(interpret):
    assert tracejit.grad(square)(3.0) == 6.0


def test_square_in_float32(interpret):
    dy_dx = tracejit.grad(square)(np.float32(3.0))
    assert dy_dx == 6.0
    assert dy_dx.dtype == np.float32


# ------------------------------------------------------------------ seed 000


@tracejit.function
def model(W, x, b):
    return W * x + b


@tracejit.function
def loss_fn(y_pred, y_true):
    return np.mean(np.square(y_pred - y_true))


def linear_loss(variables, x, y_true):
    W, b = variables
    return loss_fn(model(W, x, b), y_true)


def test_linear_model_gradients_by_hand(interpret):
    W, b = np.array([0.5]), np.array([0.0])
    x, y = np.array([1.0, 2.0, 3.0, 4.0]), np.array([2.0, 4.0, 6.0, 8.0])
    # r = W x + b - y = -1.5 x, so loss = 2.25 * mean(x^2) = 2.25 * 7.5;
    # dL/dW = mean(2 r x) = -3 * mean(x^2) = -22.5, dL/db = mean(2 r) = -3 * mean(x) = -7.5.
    loss, gradients = tracejit.value_and_grad(linear_loss)([W, b], x, y)
    assert loss == pytest.approx(16.875)
    assert isinstance(gradients, list)
    dW, db = gradients
    assert dW.shape == db.shape == (1,)
    np.testing.assert_allclose(dW, [-22.5])
    np.testing.assert_allclose(db, [-7.5])


# ------------------------------------------------------------------ seed 001


def squared_error(w, b, x, y):
    return np.square(y - (w * x + b))


def test_scalar_model_gradients_by_hand(interpret):
    # y_pred = 0.5 * 2 + 1 = 2, r = y - y_pred = 1, loss = r^2 = 1;
    # dL/dw = -2 r x = -4, dL/db = -2 r = -2.
    loss, (dw, db) = tracejit.value_and_grad(squared_error, argnums=(0, 1))(0.5, 1.0, 2.0, 3.0)
    assert (loss, dw, db) == (1.0, -4.0, -2.0)


# ------------------------------------------------------------------ seed 003

BATCH, FEATURES, HIDDEN, CLASSES = 32, 10, 5, 2


def glorot(rng, fan_in, fan_out):
    """Keras' default Dense kernel initialiser."""
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, (fan_in, fan_out))


def make_problem(seed=3):
    rng = np.random.default_rng(seed)
    variables = [glorot(rng, FEATURES, HIDDEN), np.zeros(HIDDEN),
                 glorot(rng, HIDDEN, CLASSES), np.zeros(CLASSES)]
    inputs = rng.standard_normal((BATCH, FEATURES))
    labels = np.eye(CLASSES)[rng.integers(0, CLASSES, BATCH)]
    return variables, inputs, labels


def dense_dense_loss(variables, inputs, labels):
    kernel1, bias1, kernel2, bias2 = variables
    hidden = np.maximum(inputs @ kernel1 + bias1, 0.0)
    logits = hidden @ kernel2 + bias2
    shifted = logits - np.max(logits, axis=1, keepdims=True)
    log_probs = shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))
    return -np.mean(np.sum(labels * log_probs, axis=1))


def by_hand(variables, inputs, labels):
    """Loss and gradients of `dense_dense_loss`, backpropagated by hand."""
    kernel1, bias1, kernel2, bias2 = variables
    pre = inputs @ kernel1 + bias1
    hidden = np.maximum(pre, 0.0)
    logits = hidden @ kernel2 + bias2
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    loss = -np.mean(np.sum(labels * np.log(probs), axis=1))
    d_logits = (probs - labels) / len(inputs)  # each label row sums to 1
    d_hidden = d_logits @ kernel2.T
    d_pre = d_hidden * (pre > 0)
    return loss, [inputs.T @ d_pre, d_pre.sum(axis=0), hidden.T @ d_logits,
                  d_logits.sum(axis=0)]


def assert_matches_hand(loss, gradients, variables, inputs, labels):
    want_loss, want_gradients = by_hand(variables, inputs, labels)
    assert loss == pytest.approx(want_loss, rel=1e-12)
    assert [g.shape for g in gradients] == [v.shape for v in variables]
    for got, want in zip(gradients, want_gradients):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-14)


def test_two_layer_model_gradients_by_hand(interpret):
    variables, inputs, labels = make_problem()
    loss, gradients = tracejit.value_and_grad(dense_dense_loss)(variables, inputs, labels)
    assert_matches_hand(loss, gradients, variables, inputs, labels)


def test_two_layer_model_finite_differences(interpret):
    variables, inputs, labels = make_problem(seed=4)
    check_grads(lambda v: dense_dense_loss(v, inputs, labels), (variables,), order=1)


def test_sgd_steps_lower_the_loss_compiled(compiled):
    """The compiled kernel agrees with the hand derivation at every step, and
    `W - lr * dW` (the seed's SGD optimiser) lowers the loss."""
    variables, inputs, labels = make_problem()
    loss_and_grads = tracejit.value_and_grad(dense_dense_loss)
    losses = []
    for _ in range(5):
        loss, gradients = loss_and_grads(variables, inputs, labels)
        assert_matches_hand(loss, gradients, variables, inputs, labels)
        losses.append(loss)
        variables = [v - 0.1 * g for v, g in zip(variables, gradients)]
    assert all(later < earlier for earlier, later in zip(losses, losses[1:]))
    assert loss_and_grads.stats.traces == 1


# ======================================= the seeds in TensorFlow's own words
# The same four programs written with tracejit.Variable, GradientTape,
# tracejit.gradients and the Keras-style nn package (examples/seed_*.py are
# the line-for-line translations), eagerly and compiled; against TensorFlow
# itself when it is installed.

LINEAR_X, LINEAR_Y = np.array([1.0, 2.0, 3.0, 4.0]), np.array([2.0, 4.0, 6.0, 8.0])


def linear_seed(w0):
    W = tracejit.Variable(np.array([w0]), name="weight")
    b = tracejit.Variable(np.zeros(1), name="bias")

    @tracejit.function
    def model(x):
        return W * x + b

    @tracejit.function
    def loss_fn(y_pred, y_true):
        return np.mean(np.square(y_pred - y_true))

    @tracejit.function
    def compiled(x, y_true):
        with tracejit.GradientTape() as tape:
            loss = loss_fn(model(x), y_true)
        return tape.gradient(loss, [W, b])

    with tracejit.GradientTape() as tape:
        loss = loss_fn(model(LINEAR_X), LINEAR_Y)
    return tape.gradient(loss, [W, b]), compiled(LINEAR_X, LINEAR_Y)


def test_seed_000_in_tensorflow_words(mode):
    eager, compiled = linear_seed(0.5)
    for got in (eager, compiled):  # by hand: dW = -22.5, db = -7.5 at W = 0.5 (see above)
        np.testing.assert_allclose(got[0], [-22.5])
        np.testing.assert_allclose(got[1], [-7.5])


def test_seed_001_in_tensorflow_words(interpret):
    w, b = tracejit.Variable(0.5), tracejit.Variable(1.0)
    with tracejit.GradientTape() as tape:
        loss = np.square(3.0 - (w * 2.0 + b))
    assert tape.gradient(loss, [w, b]) == [-4.0, -2.0]


def test_seed_002_in_tensorflow_words(interpret):
    x = tracejit.Variable(3.0)
    with tracejit.GradientTape() as tape:
        y = x ** 2
    assert tape.gradient(y, x) == 6.0
    var = tracejit.Variable(np.array([1.0, -2.0]))
    var_grad = tracejit.gradients(lambda data: np.mean(np.square(data @ var - 1.0)), [var])
    for data in (np.eye(2), np.array([[2.0, 1.0], [1.0, 3.0], [0.5, 0.5]])):
        residual = data @ var.numpy() - 1.0
        np.testing.assert_allclose(var_grad(data)[0], 2 * data.T @ residual / len(data))
    assert var_grad.stats.traces == 1


class SeedModel(tracejit.nn.Model):
    def __init__(self, dtype=None):
        super().__init__()
        self.dense1 = tracejit.nn.Dense(5, activation="relu", dtype=dtype)
        self.dense2 = tracejit.nn.Dense(2, activation="softmax", dtype=dtype)

    def call(self, x):
        return self.dense2(self.dense1(x))


def seed_model(variables, dtype=np.float64):
    model = SeedModel(dtype)
    model.build((None, FEATURES))
    model.set_weights(variables)
    return model


@pytest.mark.filterwarnings("ignore:categorical_crossentropy received from_logits")
def test_seed_003_in_tensorflow_words(mode):
    """Keras computes the loss of a softmax output from its logits, so the
    seed's softmax + from_logits=True gives the single softmax by hand."""
    variables, inputs, labels = make_problem()
    model = seed_model(variables)
    loss_fn = tracejit.nn.losses.CategoricalCrossentropy(from_logits=True)
    trainable_vars = model.trainable_variables
    with tracejit.GradientTape() as tape:
        loss = loss_fn(labels, model(inputs))
    gradients = tape.gradient(loss, trainable_vars)
    assert_matches_hand(float(loss), gradients, variables, inputs, labels)
    optimizer = tracejit.nn.optimizers.SGD(learning_rate=0.01)
    optimizer.apply_gradients(zip(gradients, trainable_vars))
    for var, before, grad in zip(trainable_vars, variables, gradients):
        np.testing.assert_allclose(var.numpy(), before - 0.01 * grad, rtol=1e-14)

    @tracejit.function
    def train_step(inputs, labels):
        with tracejit.GradientTape() as tape:
            loss = loss_fn(labels, model(inputs))
        gradients = tape.gradient(loss, trainable_vars)
        optimizer.apply_gradients(zip(gradients, trainable_vars))
        return loss

    for _ in range(2):  # one kernel: forward, gradient, update, weights written back
        current = model.get_weights()
        want_loss, want_gradients = by_hand(current, inputs, labels)
        assert train_step(inputs, labels) == pytest.approx(want_loss, rel=1e-12)
        for var, before, grad in zip(trainable_vars, current, want_gradients):
            np.testing.assert_allclose(var.numpy(), before - 0.01 * grad, rtol=1e-10)
    assert train_step.stats.traces == 1


# ------------------------------------------------- against TensorFlow itself

def test_seeds_000_to_002_match_tensorflow():
    tf = pytest.importorskip("tensorflow")
    w0 = 0.3
    W, b = tf.Variable([w0], dtype=tf.float64), tf.Variable([0.0], dtype=tf.float64)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(W * LINEAR_X + b - LINEAR_Y))
    want = [g.numpy() for g in tape.gradient(loss, [W, b])]
    for got in linear_seed(w0):
        np.testing.assert_allclose(got, want, rtol=1e-12)
    w, b = tf.Variable(0.5, dtype=tf.float64), tf.Variable(1.0, dtype=tf.float64)
    with tf.GradientTape() as tape:
        loss = tf.square(3.0 - (w * 2.0 + b))
    assert [g.numpy() for g in tape.gradient(loss, [w, b])] == [-4.0, -2.0]
    data = np.array([[2.0, 1.0], [1.0, 3.0], [0.5, 0.5]])
    var = tf.Variable([1.0, -2.0], dtype=tf.float64)

    @tf.function
    def tf_gradients(data):
        return tf.gradients(tf.reduce_mean(tf.square(tf.linalg.matvec(data, var) - 1.0)),
                            [var])[0]

    ours = tracejit.gradients(lambda d: np.mean(np.square(d @ ours_var - 1.0)),
                              [ours_var := tracejit.Variable(np.array([1.0, -2.0]))])
    np.testing.assert_allclose(ours(data)[0], tf_gradients(tf.constant(data)).numpy())


@pytest.mark.filterwarnings("ignore:categorical_crossentropy received from_logits")
@pytest.mark.filterwarnings("ignore:.*received `from_logits=True`")
def test_seed_003_matches_keras():
    tf = pytest.importorskip("tensorflow")
    keras = pytest.importorskip("keras")
    variables, inputs, labels = make_problem()
    variables = [v.astype(np.float32) for v in variables]
    theirs = keras.Sequential([keras.Input((FEATURES,)), keras.layers.Dense(5, activation="relu"),
                               keras.layers.Dense(2, activation="softmax")])
    theirs.set_weights(variables)
    with tf.GradientTape() as tape:
        loss = keras.losses.CategoricalCrossentropy(from_logits=True)(labels, theirs(inputs))
    want = tape.gradient(loss, theirs.trainable_variables)
    ours = seed_model(variables, np.float32)
    with tracejit.GradientTape() as tape:
        our_loss = tracejit.nn.losses.CategoricalCrossentropy(from_logits=True)(
            labels, ours(inputs))
    got = tape.gradient(our_loss, ours.trainable_variables)
    assert float(our_loss) == pytest.approx(float(loss), rel=1e-6)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w.numpy(), rtol=1e-4, atol=1e-6)
