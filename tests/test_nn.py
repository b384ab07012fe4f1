"""The Keras-style API (tracejit.nn): layers, models, activations, losses,
optimizers and the training loop, against formulas written out in NumPy, and
against Keras / PyTorch when they are installed."""

import math

import numpy as np
import pytest

import tracejit
from tracejit import Variable, nn

RNG = np.random.default_rng(11)


# ----------------------------------------------------------------- layers

def test_dense_builds_on_first_call_with_keras_names():
    dense = nn.Dense(4, activation="tanh", name="my_dense")
    assert dense.kernel is None and not dense.built
    x = RNG.standard_normal((3, 5))
    y = dense(x)
    assert dense.kernel.shape == (5, 4) and dense.bias.shape == (4,)
    assert dense.kernel.dtype == np.float32 and y.dtype == np.float32  # floatx, input cast
    np.testing.assert_allclose(y, np.tanh(x.astype(np.float32) @ dense.kernel.numpy()),
                               rtol=1e-6)
    assert [v.name for v in dense.trainable_variables] == ["kernel", "bias"]
    limit = math.sqrt(6.0 / (5 + 4))  # glorot_uniform
    assert np.all(np.abs(dense.kernel.numpy()) <= limit) and not dense.bias.numpy().any()
    assert nn.Dense(2, use_bias=False, kernel_initializer="ones")(np.ones((1, 3))).tolist() == [
        [3.0, 3.0]]
    with pytest.raises(ValueError, match="unknown activation"):
        nn.Dense(2, activation="nope")


@pytest.mark.parametrize("cls, name", [
    ("Conv2D", "conv2d"), ("MaxPooling2D", "max_pooling2d"), ("Conv1D", "conv1d"),
    ("GlobalAveragePooling2D", "global_average_pooling2d"), ("SimpleRNN", "simple_rnn"),
    ("LSTM", "lstm"), ("BatchNormalization", "batch_normalization"), ("ReLU", "re_lu"),
    ("Dense", "dense")])
def test_automatic_names_are_keras(cls, name):
    assert nn.layers.snake_case(cls) == name


def test_optimizer_names_are_keras():
    names = [cls().name for cls in (nn.optimizers.SGD, nn.optimizers.Adam,
                                    nn.optimizers.AdamW, nn.optimizers.RMSprop)]
    assert names == ["SGD", "adam", "adamw", "rmsprop"]


class TwoLayers(nn.Model):
    def __init__(self):
        super().__init__()
        self.dense1 = nn.Dense(5, activation="relu")
        self.dense2 = nn.Dense(2, activation="softmax")

    def call(self, x):
        return self.dense2(self.dense1(x))


def test_model_subclass_variables_summary_and_weights(tmp_path):
    model = TwoLayers()
    assert model.trainable_variables == []  # not built yet, as in Keras
    model(np.ones((4, 10)))
    names = [v.path for v in model.trainable_variables]
    assert names[0].endswith("/kernel") and names[1].endswith("/bias") and len(names) == 4
    assert model.variables == model.trainable_variables and model.count_params() == 67
    lines = []
    model.summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert "(Dense)" in text and "(4, 5)" in text and "Total params: 67 (268.00 B)" in text
    path = tmp_path / "weights.npz"
    model.save_weights(path)
    saved = model.get_weights()
    for v in model.trainable_variables:
        v.assign(np.zeros(v.shape))
    model.load_weights(path)
    for a, b in zip(model.get_weights(), saved):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="arrays for"):
        nn.Sequential([nn.Input((3,)), nn.Dense(1)]).load_weights(path)


def test_sequential_with_input_is_built_at_once():
    model = nn.Sequential([nn.Input((3,)), nn.Dense(4, activation="relu"), nn.Dense(1)])
    assert model.built and len(model.weights) == 4
    lines = []
    model.summary(print_fn=lines.append)
    assert any("(None, 4)" in line for line in lines)
    assert model(np.ones((2, 3))).shape == (2, 1)


# ------------------------------------------------------------ activations

def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


ACTIVATIONS = {
    "relu": lambda x: np.maximum(x, 0.0),
    "sigmoid": _sigmoid,
    "tanh": np.tanh,
    "softplus": lambda x: np.log1p(np.exp(x)),
    "gelu": lambda x: 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0))),
    "leaky_relu": lambda x: np.where(x > 0, x, 0.2 * x),
    "elu": lambda x: np.where(x > 0, x, np.expm1(x)),
    "silu": lambda x: x * _sigmoid(x),
    "softmax": lambda x: np.exp(x) / np.exp(x).sum(-1, keepdims=True),
    "log_softmax": lambda x: x - np.log(np.exp(x).sum(-1, keepdims=True)),
    "linear": lambda x: x,
    "relu6": lambda x: np.clip(x, 0.0, 6.0),
    "hard_sigmoid": lambda x: np.clip(x + 3.0, 0.0, 6.0) / 6.0,
    "hard_silu": lambda x: x * np.clip(x + 3.0, 0.0, 6.0) / 6.0,
    "selu": lambda x: 1.0507009873554805 * np.where(x > 0, x, 1.6732632423543772 * np.expm1(x)),
    "softsign": lambda x: x / (1.0 + np.abs(x)),
    "exponential": np.exp,
    "mish": lambda x: x * np.tanh(np.log1p(np.exp(x))),
    "log_sigmoid": lambda x: -np.log1p(np.exp(-x)),
}


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activations_by_name_match_their_formulas(name, interpret):
    x = np.linspace(-5.0, 5.0, 12).reshape(3, 4)
    fn = nn.activations.get(name)
    np.testing.assert_allclose(fn(x), ACTIVATIONS[name](x), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(tracejit.function(fn)(x), ACTIVATIONS[name](x), rtol=1e-12,
                               atol=1e-15)
    if name not in ("relu", "leaky_relu", "linear"):  # kinks at 0 are not on the grid
        tracejit.testing.check_grads(lambda x: np.sum(fn(x) ** 2), (x,), order=1)


def test_relu_has_derivative_zero_at_zero_and_passes_nan(compiled):
    """As relu in Keras, PyTorch and jax.nn; np.maximum(x, 0) splits a tie (as JAX's
    jnp.maximum). Its backward is a select on a bool mask, not a product with a float
    one."""
    x = np.array([-1.0, -0.0, 0.0, 2.0, np.nan])
    f = tracejit.function(nn.activations.relu)
    np.testing.assert_array_equal(f(x), [0.0, 0.0, 0.0, 2.0, np.nan])
    grad = tracejit.grad(lambda x: np.sum(nn.activations.relu(x) * 3.0))
    np.testing.assert_array_equal(grad(x), [0.0, 0.0, 0.0, 3.0, 3.0])
    np.testing.assert_array_equal(tracejit.grad(lambda x: np.sum(np.maximum(x, 0.0)))(x[:4]),
                                  [0.0, 0.5, 0.5, 1.0])
    program = tracejit.value_and_grad(lambda x: np.sum(nn.activations.relu(x) * 3.0)).ir(x)
    names = [e.prim.name for e in program.eqns]
    assert names.count("select") == 2 and "eq" not in names and "convert" not in names


def test_gelu_approximation_and_activations_at_extremes(interpret):
    x = np.array([-1000.0, -30.0, 0.0, 30.0, 1000.0])
    for name in ("sigmoid", "softplus", "elu", "silu", "gelu", "tanh"):
        grad = tracejit.grad(lambda x, name=name: np.sum(nn.activations.get(name)(x)))(x)
        assert np.all(np.isfinite(nn.activations.get(name)(x))), name
        assert np.all(np.isfinite(grad)), name
    approx = nn.activations.gelu(np.linspace(-3, 3, 7), approximate=True)
    np.testing.assert_allclose(approx, ACTIVATIONS["gelu"](np.linspace(-3, 3, 7)), atol=1e-3)


@pytest.mark.parametrize("name", sorted(set(ACTIVATIONS) - {"linear"}))
def test_activations_match_keras(name):
    keras = pytest.importorskip("keras")
    x = np.linspace(-6, 6, 13, dtype=np.float32).reshape(1, 13)
    np.testing.assert_allclose(nn.activations.get(name)(x), keras.activations.get(name)(x),
                               rtol=2e-6, atol=2e-7)


# ----------------------------------------------------------------- losses

LOGITS = np.array([[1000.0, -1000.0, 0.0], [-50.0, 50.0, 3.0], [0.1, 0.2, 0.3]])
LABELS = np.array([1, 1, 2])
ONE_HOT = np.eye(3)[LABELS]


def _log_softmax(z):
    m = z.max(-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(-1, keepdims=True))


def test_losses_by_hand(interpret):
    y_true, y_pred = RNG.standard_normal((4, 3)), RNG.standard_normal((4, 3))
    assert nn.losses.MeanSquaredError()(y_true, y_pred) == pytest.approx(
        np.mean((y_true - y_pred) ** 2))
    assert nn.losses.MeanAbsoluteError()(y_true, y_pred) == pytest.approx(
        np.mean(np.abs(y_true - y_pred)))
    expected = -np.mean(np.sum(ONE_HOT * _log_softmax(LOGITS), -1))
    # -log p: 2000 (row 0), ~0 (row 1), logsumexp(0.1, 0.2, 0.3) - 0.3 (row 2)
    assert expected == pytest.approx((2000.0 + np.log(np.exp(LOGITS[2]).sum()) - 0.3) / 3)
    for loss in (nn.losses.CategoricalCrossentropy(from_logits=True),):
        assert loss(ONE_HOT, LOGITS) == pytest.approx(expected, rel=1e-12)
    assert nn.losses.SparseCategoricalCrossentropy(from_logits=True)(LABELS, LOGITS) == \
        pytest.approx(expected, rel=1e-12)
    assert nn.losses.SparseCategoricalCrossentropy(from_logits=True)(
        LABELS[:, None], LOGITS) == pytest.approx(expected, rel=1e-12)
    probs = np.exp(_log_softmax(LOGITS))
    clipped = np.clip(probs, 1e-7, 1 - 1e-7)
    assert nn.losses.CategoricalCrossentropy()(ONE_HOT, probs) == pytest.approx(
        -np.mean(np.sum(ONE_HOT * np.log(clipped), -1)), rel=1e-12)
    z, t = np.array([[100.0, -100.0], [-30.0, 2.0]]), np.array([[0.0, 1.0], [1.0, 0.0]])
    bce = np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z)))
    assert nn.losses.BinaryCrossentropy(from_logits=True)(t, z) == pytest.approx(bce.mean())
    weighted = nn.losses.MeanSquaredError()(y_true, y_pred, sample_weight=np.arange(4.0))
    assert weighted == pytest.approx(np.mean(np.mean((y_true - y_pred) ** 2, -1) * np.arange(4)))


def test_cross_entropies_are_stable_at_extreme_logits(interpret):
    for loss, target in [(nn.losses.CategoricalCrossentropy(from_logits=True), ONE_HOT),
                         (nn.losses.SparseCategoricalCrossentropy(from_logits=True), LABELS),
                         (nn.losses.BinaryCrossentropy(from_logits=True), ONE_HOT)]:
        value, grad = tracejit.value_and_grad(lambda z, loss=loss, t=target: loss(t, z))(LOGITS)
        assert np.isfinite(value) and np.all(np.isfinite(grad)), loss


def test_probabilities_from_a_softmax_layer_use_its_logits(interpret):
    """As in Keras: the loss of a softmax output is computed from the logits."""
    dense = nn.Dense(3, activation="softmax", kernel_initializer="ones", dtype=np.float64)
    x = np.array([[400.0], [-400.0]])
    probs = dense(x)
    loss = nn.losses.CategoricalCrossentropy()(np.eye(3)[[1, 2]], probs)
    assert loss == pytest.approx(0.0 + np.log(3.0), abs=1e-9)  # the clipped form gives ~16


@pytest.mark.parametrize("name", ["CategoricalCrossentropy", "SparseCategoricalCrossentropy",
                                  "BinaryCrossentropy"])
@pytest.mark.parametrize("from_logits", [True, False])
def test_losses_match_keras(name, from_logits):
    keras = pytest.importorskip("keras")
    logits = LOGITS.astype(np.float32)
    target = (LABELS if name.startswith("Sparse") else ONE_HOT).astype(np.float32)
    activation = keras.activations.sigmoid if name.startswith("Binary") else \
        keras.activations.softmax
    pred = logits if from_logits else np.asarray(activation(logits))
    ours = getattr(nn.losses, name)(from_logits=from_logits)(target, pred)
    theirs = getattr(keras.losses, name)(from_logits=from_logits)(target, pred)
    assert float(ours) == pytest.approx(float(theirs), rel=1e-5)


# ------------------------------------------------------------- optimizers

def reference_rule(name, options):
    """The update rules written out in NumPy, as Keras states them."""
    lr = options.get("learning_rate")
    eps = options.get("epsilon", 1e-7)

    def sgd(w, g, s, t):
        momentum = options.get("momentum", 0.0)
        if not momentum:
            return w - lr * g
        s["m"] = momentum * s.get("m", 0.0) - lr * g
        if options.get("nesterov"):
            return w + momentum * s["m"] - lr * g
        return w + s["m"]

    def adam(w, g, s, t):
        b1, b2 = options.get("beta_1", 0.9), options.get("beta_2", 0.999)
        w = w - w * options.get("weight_decay", 0.0) * lr
        s["m"] = s.get("m", 0.0) + (g - s.get("m", 0.0)) * (1 - b1)
        s["v"] = s.get("v", 0.0) + (g * g - s.get("v", 0.0)) * (1 - b2)
        v = s["v"]
        if options.get("amsgrad"):
            v = s["vh"] = np.maximum(s.get("vh", 0.0), s["v"])
        return w - lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t) * s["m"] / (np.sqrt(v) + eps)

    def rmsprop(w, g, s, t):
        rho, momentum = options.get("rho", 0.9), options.get("momentum", 0.0)
        s["v"] = rho * s.get("v", 0.0) + (1 - rho) * g * g
        denominator = s["v"] + eps
        if options.get("centered"):
            s["a"] = rho * s.get("a", 0.0) + (1 - rho) * g
            denominator = denominator - s["a"] ** 2
        increment = lr * g / np.sqrt(denominator)
        if momentum:
            s["m"] = momentum * s.get("m", 0.0) + increment
            return w - s["m"]
        return w - increment

    def adagrad(w, g, s, t):
        s["a"] = s.get("a", 0.1) + g * g
        return w - lr * g / np.sqrt(s["a"] + eps)

    return {"SGD": sgd, "Adam": adam, "AdamW": adam, "RMSprop": rmsprop, "Adagrad": adagrad}[name]


OPTIMIZERS = [
    ("SGD", {"learning_rate": 0.1}), ("SGD", {"learning_rate": 0.1, "momentum": 0.9}),
    ("SGD", {"learning_rate": 0.1, "momentum": 0.9, "nesterov": True}),
    ("Adam", {"learning_rate": 0.01}), ("Adam", {"learning_rate": 0.01, "amsgrad": True}),
    ("AdamW", {"learning_rate": 0.01, "weight_decay": 0.004}),
    ("RMSprop", {"learning_rate": 0.01}),
    ("RMSprop", {"learning_rate": 0.01, "momentum": 0.5, "centered": True}),
    ("Adagrad", {"learning_rate": 0.1}),
]
W0 = RNG.standard_normal((3, 4))
GRADS = [RNG.standard_normal((3, 4)) for _ in range(5)]


def _ours(name, options, compiled_step=False):
    w = Variable(W0.copy())
    optimizer = getattr(nn.optimizers, name)(**options)
    if compiled_step:
        step = tracejit.function(lambda g: optimizer.apply_gradients([(g, w)]))
    else:
        step = lambda g: optimizer.apply_gradients([(g, w)])  # noqa: E731
    history = []
    for g in GRADS:
        step(g)
        history.append(w.numpy())
    return history, optimizer


@pytest.mark.parametrize("name, options", OPTIMIZERS, ids=lambda o: str(o))
def test_optimizer_matches_its_numpy_rule(name, options, interpret):
    rule, w, state = reference_rule(name, options), W0.copy(), {}
    eager, optimizer = _ours(name, options)
    traced, _ = _ours(name, options, compiled_step=True)
    for t, (g, ours, ours_traced) in enumerate(zip(GRADS, eager, traced), start=1):
        w = rule(w, g, state, t)
        np.testing.assert_allclose(ours, w, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(ours_traced, w, rtol=1e-12, atol=1e-14)
    assert optimizer.iterations.numpy() == len(GRADS)
    assert all(isinstance(v, Variable) and not v.trainable for v in optimizer.variables)


@pytest.mark.parametrize("name, options", OPTIMIZERS, ids=lambda o: str(o))
def test_optimizer_matches_keras(name, options):
    keras = pytest.importorskip("keras")
    ours, _ = _ours(name, options)
    w = keras.Variable(W0.astype(np.float32))
    optimizer = getattr(keras.optimizers, name)(**options)
    for g, expected in zip(GRADS, ours):
        optimizer.apply_gradients([(g.astype(np.float32), w)])
        np.testing.assert_allclose(np.asarray(w), expected, rtol=2e-5, atol=2e-6)


def test_sgd_and_adam_match_pytorch():
    torch = pytest.importorskip("torch")
    for name, make in [("SGD", lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9)),
                       ("Adam", lambda p: torch.optim.Adam(p, lr=0.01, eps=1e-7))]:
        options = {"learning_rate": 0.1, "momentum": 0.9} if name == "SGD" else \
            {"learning_rate": 0.01}
        ours, _ = _ours(name, options)
        w = torch.tensor(W0, requires_grad=True)
        optimizer = make([w])
        for g, expected in zip(GRADS, ours):
            w.grad = torch.tensor(g)
            optimizer.step()
            # torch puts Adam's epsilon outside the bias correction: equal up to ~eps
            np.testing.assert_allclose(w.detach().numpy(), expected, rtol=1e-6, atol=1e-7)


def test_hyperparameters_change_without_retracing(interpret):
    w = Variable(np.ones(2))
    optimizer = nn.optimizers.SGD(learning_rate=0.5, momentum=0.0)
    step = tracejit.function(lambda g: optimizer.apply_gradients([(g, w)]))
    step(np.ones(2))
    optimizer.learning_rate = 0.25
    step(np.ones(2))
    np.testing.assert_allclose(w.numpy(), [0.25, 0.25])
    assert optimizer.learning_rate == 0.25 and step.stats.traces == 1
    optimizer.learning_rate = nn.optimizers.schedules.ExponentialDecay(1.0, 1, 0.5)
    step(np.ones(2))  # a schedule changes the program: traced again, then used
    np.testing.assert_allclose(w.numpy(), [0.25 - 0.25, 0.0])  # step 2: 1.0 * 0.5 ** 2
    assert step.stats.traces == 2
    with pytest.raises(ValueError, match="no .gradient, variable. pairs"):
        optimizer.apply_gradients([(None, w)])


def test_schedules_match_keras():
    keras = pytest.importorskip("keras")
    pairs = [("ExponentialDecay", (0.1, 3, 0.5)), ("ExponentialDecay", (0.1, 3, 0.5, True)),
             ("InverseTimeDecay", (0.1, 2, 0.5)), ("CosineDecay", (0.1, 4, 0.1)),
             ("PiecewiseConstantDecay", ([1, 3], [0.1, 0.05, 0.01]))]
    for name, args in pairs:
        ours = getattr(nn.optimizers.schedules, name)(*args)
        theirs = getattr(keras.optimizers.schedules, name)(*args)
        for step in range(7):
            assert float(ours(step)) == pytest.approx(float(theirs(step)), rel=1e-6), name


# ------------------------------------------------------------------- fit

def blobs(n=200, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    x = rng.standard_normal((n, 4)) + 2.0 * np.eye(3, 4)[labels]
    return x, labels


def make_classifier(run_eagerly=False):
    nn.set_random_seed(0)
    model = nn.Sequential([nn.Input((4,)), nn.Dense(16, activation="relu"), nn.Dense(3)])
    model.compile(optimizer=nn.optimizers.Adam(0.01),
                  loss=nn.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"], run_eagerly=run_eagerly)
    return model


def test_fit_trains_with_one_kernel_for_every_batch_size(mode, capsys, monkeypatch):
    monkeypatch.setattr(tracejit.nn.training, "_tqdm", None)  # plain per-epoch lines
    x, y = blobs()
    model = make_classifier()
    history = model.fit(x, y, epochs=4, batch_size=48, validation_data=blobs(60, 1),
                        verbose=2)  # 200 = 4 * 48 + 8: a last, smaller batch
    assert sorted(history.history) == ["accuracy", "loss", "val_accuracy", "val_loss"]
    assert history.epoch == [0, 1, 2, 3] and len(history.epoch_seconds) == 4
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert history.history["accuracy"][-1] > 0.8
    assert model.step_function("train").stats.traces == 1
    output = capsys.readouterr().out
    assert "Epoch 4/4" in output and "val_accuracy" in output
    loss, accuracy = model.evaluate(x, y)
    assert accuracy == pytest.approx(np.mean(np.argmax(model.predict(x), -1) == y))
    assert model.predict(x, batch_size=64).shape == (200, 3)


def test_fit_compiled_equals_fit_eager(interpret):
    x, y = blobs(100)
    compiled, eager = make_classifier(), make_classifier(run_eagerly=True)
    for model in (compiled, eager):
        model.fit(x, y, epochs=2, batch_size=32, shuffle=False, verbose=0)
    for a, b in zip(compiled.get_weights(), eager.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_fit_progress_bar_with_tqdm(capsys, interpret):
    pytest.importorskip("tqdm")
    x, y = blobs(64)
    make_classifier().fit(x, y, epochs=1, batch_size=32, verbose=1)
    assert "Epoch 1/1" in capsys.readouterr().err


def test_fit_needs_compile():
    with pytest.raises(RuntimeError, match="compile"):
        nn.Sequential([nn.Dense(1)]).fit(np.ones((2, 1)), np.ones(2))


class SelfTraining(nn.Model):
    """A custom training step as a compiled method (the model is a static argument)."""

    def __init__(self):
        super().__init__()
        self.dense = nn.Dense(3, dtype=np.float64)
        self.sgd = nn.optimizers.SGD(0.1)

    def call(self, x):
        return self.dense(x)

    @tracejit.function
    def step(self, x, y):
        with tracejit.GradientTape() as tape:
            loss = np.mean((self(x) - y) ** 2)
        grads = tape.gradient(loss, self.trainable_variables)
        self.sgd.apply_gradients(zip(grads, self.trainable_variables))
        return loss


def test_a_compiled_training_method(interpret):
    model = SelfTraining()
    x, y = RNG.standard_normal((8, 4)), RNG.standard_normal((8, 3))
    losses = [float(model.step(x, y)) for _ in range(4)]
    assert losses == sorted(losses, reverse=True)
    kernel = model.dense.kernel.numpy()
    residual = x @ kernel + model.dense.bias.numpy() - y
    model.step(x, y)
    np.testing.assert_allclose(model.dense.kernel.numpy(),
                               kernel - 0.1 * 2 * x.T @ residual / residual.size, rtol=1e-12)
    assert SelfTraining.step._method.stats.traces == 1
