"""tracejit.nn's convolution, pooling, normalization, dropout, embedding and
recurrent layers against NumPy references written here (loops, straight from
Keras' definitions), and against PyTorch in float64 when it is installed:
forward outputs, gradients through GradientTape (eager and inside a compiled
function) against central finite differences of the reference."""

import numpy as np
import pytest

import tracejit
from tracejit import nn

RNG = np.random.default_rng(0)


def f64(layer):
    layer.dtype = np.dtype(np.float64)
    return layer


def numeric_grad(fn, x, eps=1e-6):
    """Central differences of the scalar fn at every element of x."""
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + eps
        up = fn()
        x[i] = old - eps
        down = fn()
        x[i] = old
        g[i] = (up - down) / (2 * eps)
    return g


def tape_grads(layer, x, weights, compiled=False):
    """d sum(layer(x) * probe) / d (x, *weights), through a GradientTape."""
    def loss_and_grads(x, probe):
        x = tracejit.Variable(x, name="x") if not compiled else x
        with tracejit.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = (y * probe).sum()
        return tape.gradient(loss, [x, *weights])

    y = layer(x)
    probe = RNG.standard_normal(np.shape(y))
    fn = tracejit.function(loss_and_grads) if compiled else loss_and_grads
    return probe, [np.asarray(g) for g in fn(x, probe)]


def check_against(reference, layer, x, compiled=False, rtol=1e-6):
    """Forward equal to the reference; gradients for x and every weight equal
    to finite differences of the reference."""
    y = layer(x)  # builds the weights
    weights = layer.trainable_variables
    np.testing.assert_allclose(y, reference(x, *[w.numpy() for w in weights]),
                               rtol=1e-10, atol=1e-12)
    probe, grads = tape_grads(layer, x, weights, compiled)
    arrays = [x.copy(), *[w.numpy().copy() for w in weights]]
    for k, (array, grad) in enumerate(zip(arrays, grads)):
        expected = numeric_grad(lambda: (reference(*arrays) * probe).sum(), array)
        np.testing.assert_allclose(grad, expected, rtol=rtol, atol=1e-6, err_msg=f"operand {k}")


# ------------------------------------------------------------ references

def conv_reference(x, kernel, bias, strides, padding, dilation=(1, 1)):
    """Keras' Conv2D (channels_last, cross-correlation) by loops."""
    kh, kw, _, filters = kernel.shape
    (sh, sw), (dh, dw) = strides, dilation
    pads = []
    for n, k, s, d in zip(x.shape[1:3], (kh, kw), strides, dilation):
        span = (k - 1) * d + 1
        if padding == "valid":
            pads.append((0, 0, (n - span) // s + 1))
        else:
            out = -(-n // s)
            total = max((out - 1) * s + span - n, 0)
            pads.append((total // 2, total - total // 2, out))
    xp = np.pad(x, [(0, 0), pads[0][:2], pads[1][:2], (0, 0)])
    out = np.zeros((x.shape[0], pads[0][2], pads[1][2], filters))
    for i in range(out.shape[1]):
        for j in range(out.shape[2]):
            for a in range(kh):
                for b in range(kw):
                    out[:, i, j] += xp[:, i * sh + a * dh, j * sw + b * dw] @ kernel[a, b]
    return out + bias


def pool_reference(x, size, strides, kind):
    outs = [(n - k) // s + 1 for n, k, s in zip(x.shape[1:3], size, strides)]
    out = np.zeros((x.shape[0], *outs, x.shape[3]))
    for i in range(outs[0]):
        for j in range(outs[1]):
            window = x[:, i * strides[0]:i * strides[0] + size[0],
                       j * strides[1]:j * strides[1] + size[1]]
            out[:, i, j] = window.max((1, 2)) if kind == "max" else window.mean((1, 2))
    return out


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def lstm_reference(x, kernel, recurrent, bias):
    n = recurrent.shape[0]
    h = c = np.zeros((x.shape[0], n))
    hs = []
    for t in range(x.shape[1]):
        z = x[:, t] @ kernel + h @ recurrent + bias
        i, f, g, o = sigmoid(z[:, :n]), sigmoid(z[:, n:2 * n]), np.tanh(z[:, 2 * n:3 * n]), \
            sigmoid(z[:, 3 * n:])
        c = f * c + i * g
        h = o * np.tanh(c)
        hs.append(h)
    return np.stack(hs, 1)


def gru_reference(x, kernel, recurrent, bias):
    n = recurrent.shape[0]
    h = np.zeros((x.shape[0], n))
    for t in range(x.shape[1]):
        xz = x[:, t] @ kernel + bias[0]
        hz = h @ recurrent + bias[1]
        z = sigmoid(xz[:, :n] + hz[:, :n])
        r = sigmoid(xz[:, n:2 * n] + hz[:, n:2 * n])
        hh = np.tanh(xz[:, 2 * n:] + r * hz[:, 2 * n:])
        h = z * h + (1 - z) * hh
    return h


def rnn_reference(x, kernel, recurrent, bias):
    h = np.zeros((x.shape[0], recurrent.shape[0]))
    for t in range(x.shape[1]):
        h = np.tanh(x[:, t] @ kernel + h @ recurrent + bias)
    return h


# ------------------------------------------------------------ tests

@pytest.mark.parametrize("strides, padding, dilation", [
    ((1, 1), "valid", (1, 1)), ((2, 1), "same", (1, 1)), ((1, 1), "same", (2, 2))])
def test_conv2d_forward_and_gradients(strides, padding, dilation, interpret):
    layer = f64(nn.Conv2D(3, (3, 2), strides=strides, padding=padding, dilation_rate=dilation,
                          bias_initializer="random_normal"))
    x = RNG.standard_normal((2, 6, 5, 2))
    check_against(lambda x, k, b: conv_reference(x, k, b, strides, padding, dilation), layer, x)


def test_conv1d_causal_is_a_padded_conv2d(interpret):
    layer = f64(nn.Conv1D(2, 3, padding="causal", dilation_rate=2))
    x = RNG.standard_normal((2, 7, 3))

    def reference(x, k, b):
        padded = np.pad(x, [(0, 0), (4, 0), (0, 0)])[:, :, None, :]
        return conv_reference(padded, k[:, None], b, (1, 1), "valid", (2, 1))[:, :, 0]

    check_against(reference, layer, x)


def test_conv2d_compiled_through_gradient_tape_matches(compiled):
    layer = f64(nn.Conv2D(2, 2, activation="relu"))  # small: kernels compile per nest
    x = RNG.standard_normal((3, 4, 4, 1))
    layer(x)
    probe, grads = tape_grads(layer, x, layer.trainable_variables)
    fn = tracejit.function(lambda x, p: _grads(layer, x, p))
    for got, want in zip(fn(x, probe), grads):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    assert fn(x[:2], probe[:2])[0].shape == (2, 4, 4, 1)  # the input's gradient
    assert fn.stats.traces == 1  # the batch size stays symbolic


def _grads(layer, x, probe):
    with tracejit.GradientTape() as tape:
        tape.watch(x)
        loss = (layer(x) * probe).sum()
    return tape.gradient(loss, [x, *layer.trainable_variables])


@pytest.mark.parametrize("kind", ["max", "average"])
def test_pooling(kind, interpret):
    cls = nn.MaxPooling2D if kind == "max" else nn.AveragePooling2D
    layer = cls((2, 3), strides=(2, 2))
    x = RNG.standard_normal((2, 7, 8, 3))
    reference = lambda x: pool_reference(x, (2, 3), (2, 2), kind)  # noqa: E731
    check_against(reference, layer, x)
    same = nn.AveragePooling2D(3, strides=1, padding="same")(np.ones((1, 4, 4, 1)))
    np.testing.assert_allclose(same, 1.0)  # padding is left out of the mean


def test_flatten_reshape_global_pooling(interpret):
    x = RNG.standard_normal((2, 3, 4, 5))
    np.testing.assert_array_equal(nn.Flatten()(x), x.reshape(2, -1))
    np.testing.assert_array_equal(nn.Reshape((12, 5))(x), x.reshape(2, 12, 5))
    np.testing.assert_allclose(nn.GlobalAveragePooling2D()(x), x.mean((1, 2)))
    f = tracejit.function(lambda x: nn.Flatten()(x))
    assert f(x).shape == (2, 60) and f(x[:1].repeat(5, 0)).shape == (5, 60)
    assert f.stats.traces == 1


def test_batch_normalization_training_and_inference(mode):
    layer = f64(nn.BatchNormalization(momentum=0.9, epsilon=1e-3, gamma_initializer="random_normal",
                                      beta_initializer="random_normal"))
    x = RNG.standard_normal((6, 3, 4)) * 2 + 1
    layer(x)
    gamma, beta = layer.gamma.numpy(), layer.beta.numpy()
    step = tracejit.function(lambda x: layer(x, training=True))
    for _ in range(2):
        y = step(x)
    mean, var = x.mean((0, 1)), x.var((0, 1))
    np.testing.assert_allclose(y, (x - mean) / np.sqrt(var + 1e-3) * gamma + beta, rtol=1e-10)
    moving_mean = (0.0 * 0.9 + mean * 0.1) * 0.9 + mean * 0.1
    moving_var = (1.0 * 0.9 + var * 0.1) * 0.9 + var * 0.1
    np.testing.assert_allclose(layer.moving_mean.numpy(), moving_mean, rtol=1e-12)
    np.testing.assert_allclose(layer.moving_variance.numpy(), moving_var, rtol=1e-12)
    inference = layer(x, training=False)
    np.testing.assert_allclose(inference, (x - moving_mean) / np.sqrt(moving_var + 1e-3) * gamma
                               + beta, rtol=1e-10)

    def reference(x, gamma, beta):
        m, v = x.mean((0, 1)), x.var((0, 1))
        return (x - m) / np.sqrt(v + 1e-3) * gamma + beta

    train = f64(nn.BatchNormalization(gamma_initializer="random_normal"))
    check_against(reference, _Training(train), x)


class _Training(nn.Layer):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def call(self, x):
        return self.inner(x, training=True)


def test_layer_normalization(interpret):
    layer = f64(nn.LayerNormalization(epsilon=1e-3, gamma_initializer="random_normal",
                                      beta_initializer="random_normal"))
    x = RNG.standard_normal((3, 5))

    def reference(x, gamma, beta):
        m, v = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - m) / np.sqrt(v + 1e-3) * gamma + beta

    check_against(reference, layer, x)


@pytest.mark.parametrize("cls, reference, sequences", [
    (nn.LSTM, lstm_reference, True), (nn.GRU, gru_reference, False),
    (nn.SimpleRNN, rnn_reference, False)])
def test_recurrent_layers(cls, reference, sequences, interpret):
    layer = f64(cls(3, return_sequences=sequences, bias_initializer="random_normal"))
    if cls is nn.LSTM:
        layer.unit_forget_bias = False
    x = RNG.standard_normal((2, 4, 2))
    check_against(reference, layer, x)


def test_lstm_return_state_and_forget_bias(interpret):
    layer = nn.LSTM(4, return_state=True)
    out, h, c = layer(RNG.standard_normal((2, 3, 5)).astype(np.float32))
    np.testing.assert_array_equal(out, h)
    assert c.shape == (2, 4)
    np.testing.assert_array_equal(layer.bias.numpy(), np.r_[np.zeros(4), np.ones(4),
                                                            np.zeros(8)])
    assert [v.path.split("/")[-1] for v in layer.weights] == ["kernel", "recurrent_kernel", "bias"]


def test_embedding_rows_and_scattered_gradient(interpret):
    layer = f64(nn.Embedding(6, 3))
    ids = np.array([[1, 4], [1, 0]])
    np.testing.assert_array_equal(layer(ids), layer.embeddings.numpy()[ids])
    with tracejit.GradientTape() as tape:
        loss = (layer(ids) ** 2).sum()
    (grad,) = tape.gradient(loss, [layer.embeddings])
    expected = np.zeros((6, 3))
    np.add.at(expected, ids, 2 * layer.embeddings.numpy()[ids])
    np.testing.assert_allclose(grad, expected, rtol=1e-12)


def test_dropout_masks_scale_and_change_every_call(mode):
    layer = nn.Dropout(0.25, seed=3)
    x = np.ones((200, 50), np.float32)
    np.testing.assert_array_equal(layer(x), x)  # not training: the identity
    step = tracejit.function(lambda x: layer(x, training=True))
    first, second = step(x), step(x)
    assert set(np.unique(first).tolist()) <= {0.0, np.float32(1 / 0.75)}
    assert abs((first == 0).mean() - 0.25) < 0.01
    assert abs(first.mean() - 1.0) < 0.02
    assert not np.array_equal(first, second)
    v = tracejit.Variable(x)
    with tracejit.GradientTape() as tape:
        y = layer(v, training=True)
        loss = (y * 2).sum()
    (g,) = tape.gradient(loss, [v])
    np.testing.assert_allclose(g, 2 * np.asarray(y))  # d y / d x is the scaled mask
    shared = nn.Dropout(0.5, noise_shape=(None, 1, 4), seed=0)(np.ones((3, 5, 4)), training=True)
    assert (shared == shared[:, :1]).all() and not (shared == shared[:1]).all()


def test_conv2d_and_lstm_match_pytorch(interpret):
    torch = pytest.importorskip("torch")
    conv = f64(nn.Conv2D(4, 3, padding="same", strides=1))
    x = RNG.standard_normal((2, 5, 5, 3))
    y = conv(x)
    weight = torch.tensor(conv.kernel.numpy().transpose(3, 2, 0, 1))
    ref = torch.nn.functional.conv2d(torch.tensor(x.transpose(0, 3, 1, 2)), weight,
                                     torch.tensor(conv.bias.numpy()), padding="same")
    np.testing.assert_allclose(y, ref.numpy().transpose(0, 2, 3, 1), rtol=1e-10, atol=1e-12)

    lstm = f64(nn.LSTM(3, return_sequences=True))
    s = RNG.standard_normal((2, 4, 2))
    out = lstm(s)
    t = torch.nn.LSTM(2, 3, batch_first=True).double()
    with torch.no_grad():
        t.weight_ih_l0.copy_(torch.tensor(lstm.kernel.numpy().T))
        t.weight_hh_l0.copy_(torch.tensor(lstm.recurrent_kernel.numpy().T))
        t.bias_ih_l0.copy_(torch.tensor(lstm.bias.numpy()))
        t.bias_hh_l0.zero_()
        ref, _ = t(torch.tensor(s))
    np.testing.assert_allclose(out, ref.numpy(), rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------ fit with callbacks

def blobs(n=120, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    return rng.standard_normal((n, 4)) + 2.0 * np.eye(3, 4)[labels], labels


def classifier(lr=0.01):
    nn.set_random_seed(0)
    model = nn.Sequential([nn.Input((4,)), nn.Dense(16, activation="relu"),
                           nn.BatchNormalization(), nn.Dropout(0.2, seed=0), nn.Dense(3)])
    model.compile(optimizer=nn.optimizers.Adam(lr),
                  loss=nn.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def test_fit_with_callbacks_and_validation_split(tmp_path, interpret):
    x, y = blobs()
    seen = []
    model = classifier()
    history = model.fit(
        x, y, epochs=30, batch_size=32, verbose=0, validation_split=0.25, callbacks=[
            nn.callbacks.EarlyStopping(monitor="loss", patience=0, min_delta=10.0),
            nn.callbacks.ModelCheckpoint(str(tmp_path / "w{epoch}.npz"), monitor="val_loss"),
            nn.callbacks.CSVLogger(str(tmp_path / "log.csv")),
            nn.callbacks.LearningRateScheduler(lambda epoch, lr: lr * 0.5),
            nn.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: seen.append(e))])
    assert history.epoch == [0, 1] == seen  # no improvement of 10 after the first epoch
    assert "val_accuracy" in history.history and (tmp_path / "w2.npz").exists()
    assert (tmp_path / "log.csv").read_text().splitlines()[0].startswith("epoch,loss")
    assert float(model.optimizer.learning_rate) == pytest.approx(0.0025)
    assert model.step_function("train").stats.traces == 1
    moving = model.layers[1].moving_mean.numpy()
    assert np.abs(moving).sum() > 0  # updated by the compiled train step


def test_reduce_lr_on_plateau_and_restore_best_weights(interpret):
    x, y = blobs(60)
    model = classifier(lr=0.0)  # nothing improves: the rate drops, the best weights stay
    reduce = nn.callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1,
                                            min_delta=10.0)
    stop = nn.callbacks.EarlyStopping(monitor="loss", patience=3, min_delta=10.0,
                                      restore_best_weights=True)
    model.fit(x, y, epochs=10, batch_size=30, verbose=0, callbacks=[reduce, stop])
    assert stop.stopped_epoch == 3 and stop.best_weights is not None
    assert float(model.optimizer.learning_rate) == 0.0


def test_bidirectional_and_merge_layers(interpret):
    x = RNG.standard_normal((2, 5, 3))
    bi = f64(nn.Bidirectional(f64(nn.LSTM(4, return_sequences=True))))
    out = bi(x)
    forward, backward = bi.forward_layer, bi.backward_layer
    assert (forward.name.startswith("forward_lstm") and backward.name.startswith("backward_lstm"))
    weights = [w.numpy() for w in backward.trainable_variables]
    reversed_run = lstm_reference(x[:, ::-1], *weights)[:, ::-1]
    np.testing.assert_allclose(out[..., :4], lstm_reference(x, *[w.numpy() for w in
                                                                forward.trainable_variables]),
                               rtol=1e-10)
    np.testing.assert_allclose(out[..., 4:], reversed_run, rtol=1e-10)
    traced = tracejit.function(lambda x: bi(x))(x)
    np.testing.assert_allclose(traced, out, rtol=1e-12)
    a, b = RNG.standard_normal((2, 3)), RNG.standard_normal((2, 3))
    np.testing.assert_allclose(nn.Add()([a, b]), a + b)
    np.testing.assert_allclose(nn.Average()([a, b]), (a + b) / 2)
    np.testing.assert_allclose(nn.Concatenate()([a, b]), np.concatenate([a, b], -1))
    np.testing.assert_allclose(tracejit.function(lambda a, b: nn.Subtract()([a, b]))(a, b), a - b)


def test_fit_sample_and_class_weights(interpret):
    x, y = blobs(64)
    frozen = classifier()
    frozen.build((None, 4))
    before = frozen.layers[0].kernel.numpy()
    frozen.fit(x, y, epochs=1, batch_size=32, verbose=0, sample_weight=np.zeros(64))
    np.testing.assert_array_equal(frozen.layers[0].kernel.numpy(), before)  # no gradient
    by_class, by_sample = classifier(), classifier()
    by_class.fit(x, y, epochs=1, batch_size=32, verbose=0, shuffle=False,
                 class_weight={0: 3.0, 2: 0.5})
    by_sample.fit(x, y, epochs=1, batch_size=32, verbose=0, shuffle=False,
                  sample_weight=np.array([3.0, 1.0, 0.5])[y])
    for a, b in zip(by_class.get_weights(), by_sample.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_fit_on_a_generator_and_a_list_of_batches(interpret):
    x, y = blobs(96)

    def batches():
        while True:
            for k in range(0, 96, 32):
                yield x[k:k + 32], y[k:k + 32]

    model = classifier()
    history = model.fit(batches(), epochs=3, steps_per_epoch=3, verbose=0)
    assert history.epoch == [0, 1, 2] and history.history["loss"][-1] < history.history["loss"][0]
    listed = classifier().fit([(x[:48], y[:48]), (x[48:], y[48:])], epochs=2, verbose=0)
    assert len(listed.history["loss"]) == 2
    with pytest.raises(ValueError, match="no batch"):
        classifier().fit(iter([]), epochs=1, verbose=0)


def test_save_and_load_a_whole_model(tmp_path, interpret):
    x, y = blobs(64)
    model = classifier()
    model.compile(optimizer=nn.optimizers.Adam(learning_rate=0.02),
                  loss=nn.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(x, y, epochs=2, batch_size=32, verbose=0)
    path = tmp_path / "model.keras.npz"
    model.save(path)
    loaded = nn.load_model(path)
    assert [type(a).__name__ for a in loaded.layers] == [type(a).__name__ for a in model.layers]
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(loaded.predict(x), model.predict(x), rtol=1e-6)
    assert float(loaded.optimizer.learning_rate) == pytest.approx(0.02)
    for a, b in zip(loaded.optimizer.variables, model.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())  # training resumes exactly
    with np.load(path, allow_pickle=False) as data:  # arrays only: nothing to execute
        assert "config" in data.files
    with pytest.raises(ValueError, match="subclassed"):
        nn.Model.save(type("Net", (nn.Model,), {"call": lambda self, x: x})(), path)


def test_functional_model_with_branches_and_two_inputs(interpret):
    nn.set_random_seed(0)
    image, extra = nn.Input((6, 6, 1)), nn.Input((3,))
    conv, pool, flat, flat_s = (nn.Conv2D(4, 3, padding="same", activation="relu"),
                                nn.MaxPooling2D(2), nn.Flatten(), nn.Flatten())
    dense_f, dense_s, dense_e, head = (nn.Dense(36), nn.Dense(36), nn.Dense(4, activation="relu"),
                                       nn.Dense(3))
    mixed = nn.Add()([dense_f(flat(pool(conv(image)))), dense_s(flat_s(image))])
    logits = head(nn.Concatenate()([mixed, dense_e(extra)]))
    model = nn.Model([image, extra], logits)
    assert repr(logits).startswith("<tracejit.nn symbolic tensor shape=(None, 3)")
    assert len(model.layers) == 10 and len(model.trainable_variables) == 10
    assert model.layers[0] is conv and model.layers[-1] is head
    x = RNG.standard_normal((8, 6, 6, 1)).astype(np.float32)
    e = RNG.standard_normal((8, 3)).astype(np.float32)
    mixed_value = np.asarray(dense_f(flat(pool(conv(x))))) + np.asarray(dense_s(x.reshape(8, -1)))
    expected = head(np.concatenate([mixed_value, np.asarray(dense_e(e))], -1))
    np.testing.assert_allclose(model([x, e]), expected, rtol=1e-5, atol=1e-6)
    labels = RNG.integers(0, 3, 8)
    model.compile(optimizer="adam", loss=nn.losses.SparseCategoricalCrossentropy(from_logits=True))
    step = model.step_function("train")
    losses = [float(step([x, e], labels)[0]) for _ in range(5)]
    assert losses[-1] < losses[0] and step.stats.traces <= 2
    history = model.fit([x, e], labels, epochs=2, batch_size=4, verbose=0, validation_split=0.25)
    assert "val_loss" in history.history and model.predict([x, e]).shape == (8, 3)


def test_gru_and_simple_rnn_match_pytorch(interpret):
    torch = pytest.importorskip("torch")
    x = RNG.standard_normal((2, 5, 3))
    gru = f64(nn.GRU(4, return_sequences=True, bias_initializer="random_normal"))
    out = gru(x)
    k, r, b = (w.numpy() for w in gru.trainable_variables)

    def zrh_to_rzn(a):  # Keras' gate blocks z, r, h; PyTorch's r, z, n
        return np.concatenate([a[..., 4:8], a[..., :4], a[..., 8:]], -1)

    t = torch.nn.GRU(3, 4, batch_first=True).double()
    with torch.no_grad():
        t.weight_ih_l0.copy_(torch.tensor(zrh_to_rzn(k).T))
        t.weight_hh_l0.copy_(torch.tensor(zrh_to_rzn(r).T))
        t.bias_ih_l0.copy_(torch.tensor(zrh_to_rzn(b[0])))
        t.bias_hh_l0.copy_(torch.tensor(zrh_to_rzn(b[1])))
        ref, _ = t(torch.tensor(x))
    np.testing.assert_allclose(out, ref.numpy(), rtol=1e-10, atol=1e-12)

    rnn = f64(nn.SimpleRNN(4, return_sequences=True, bias_initializer="random_normal"))
    out = rnn(x)
    k, r, b = (w.numpy() for w in rnn.trainable_variables)
    t = torch.nn.RNN(3, 4, batch_first=True).double()
    with torch.no_grad():
        t.weight_ih_l0.copy_(torch.tensor(k.T))
        t.weight_hh_l0.copy_(torch.tensor(r.T))
        t.bias_ih_l0.copy_(torch.tensor(b))
        t.bias_hh_l0.zero_()
        ref, _ = t(torch.tensor(x))
    np.testing.assert_allclose(out, ref.numpy(), rtol=1e-10, atol=1e-12)


def test_batch_normalization_matches_pytorch(interpret):
    torch = pytest.importorskip("torch")
    x = RNG.standard_normal((16, 5)) * 3 + 1
    layer = f64(nn.BatchNormalization(momentum=0.9, gamma_initializer="random_normal",
                                      beta_initializer="random_normal"))
    layer(x)
    t = torch.nn.BatchNorm1d(5, eps=1e-3, momentum=0.1).double()  # PyTorch's is 1 - Keras'
    with torch.no_grad():
        t.weight.copy_(torch.tensor(layer.gamma.numpy()))
        t.bias.copy_(torch.tensor(layer.beta.numpy()))
    np.testing.assert_allclose(layer(x, training=True), t(torch.tensor(x)).detach().numpy(),
                               rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.moving_mean.numpy(), t.running_mean.numpy(), rtol=1e-12)
    # PyTorch moves toward the unbiased variance, Keras toward the biased one
    biased = 0.9 + 0.1 * x.var(0)
    np.testing.assert_allclose(layer.moving_variance.numpy(), biased, rtol=1e-12)
    np.testing.assert_allclose(t.running_var.numpy(), 0.9 + 0.1 * x.var(0, ddof=1), rtol=1e-12)
    layer.moving_variance.assign(t.running_var.numpy())
    t.eval()
    np.testing.assert_allclose(layer(x), t(torch.tensor(x)).detach().numpy(), rtol=1e-10,
                               atol=1e-12)


@pytest.mark.parametrize("options", [dict(return_sequences=True, go_backwards=True),
                                     dict(return_state=True)])
def test_lstm_own_gradient_equals_the_scan_gradient(options, interpret, monkeypatch):
    """The default LSTM's custom_vjp (one forward loop, a hand-written reverse
    loop) gives the gradients of differentiating its scan."""
    layer = f64(nn.LSTM(3, bias_initializer="random_normal", **options))
    x = RNG.standard_normal((2, 4, 2))
    outs = layer(x)
    probes = [RNG.standard_normal(np.shape(o)) for o in (outs if options.get("return_state")
                                                        else [outs])]

    def loss_and_grads(x):
        with tracejit.GradientTape() as tape:
            tape.watch(x)
            ys = layer(x)
            loss = sum((y * p).sum() for y, p in zip(ys if isinstance(ys, list) else [ys],
                                                     probes))
        return loss, tape.gradient(loss, [x, *layer.trainable_variables])

    own = tracejit.function(loss_and_grads)(x)
    monkeypatch.setattr(nn.LSTM, "_fused", lambda self: False)
    scanned = tracejit.function(loss_and_grads)(x)
    np.testing.assert_allclose(own[0], scanned[0], rtol=1e-12)
    for a, b in zip(own[1], scanned[1]):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_conv_and_pooling_compiled_match_the_references(compiled):
    """im2col/col2im records and tiled pooling in a kernel, against the loops."""
    conv = f64(nn.Conv2D(3, (2, 3), padding="same", dilation_rate=(1, 2)))
    x = RNG.standard_normal((2, 5, 6, 2))
    check_against(lambda x, k, b: conv_reference(x, k, b, (1, 1), "same", (1, 2)), conv, x,
                  compiled=True)
    pool = nn.MaxPooling2D(2)
    x = RNG.standard_normal((2, 5, 7, 3))
    out = tracejit.function(lambda x: pool(x))(x)
    np.testing.assert_allclose(out, pool_reference(x, (2, 2), (2, 2), "max"))
