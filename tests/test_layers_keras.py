"""tracejit.nn's layers against Keras 3 (TensorFlow backend) on the same weights
and inputs: forward outputs, gradients of sum(outputs * probe) w.r.t. the inputs
and every trainable weight (Keras through tf.GradientTape; tracejit through
tracejit.GradientTape eagerly and inside a compiled tracejit.function), and
BatchNormalization's moving statistics after a training call. float64 to 1e-10,
float32 to 1e-5. Skipped when Keras is not installed."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

import tracejit  # noqa: E402
from tracejit import nn  # noqa: E402

TOLERANCE = {"float64": 1e-10, "float32": 1e-5}


def _seq(units=3, **kwargs):
    return dict(units=units, **kwargs)


# name: (layer class name, constructor arguments, input shapes, call keyword arguments)
CASES = {
    "dense": ("Dense", dict(units=4, activation="tanh"), [(3, 5)], {}),
    "conv1d_same_stride": ("Conv1D", dict(filters=3, kernel_size=3, strides=2, padding="same"),
                           [(2, 7, 2)], {}),
    "conv2d_valid": ("Conv2D", dict(filters=3, kernel_size=(3, 2)), [(2, 6, 5, 2)], {}),
    "conv2d_same_strides": ("Conv2D", dict(filters=2, kernel_size=3, strides=(2, 1),
                                           padding="same", activation="relu"),
                            [(2, 6, 5, 2)], {}),
    "conv2d_dilated": ("Conv2D", dict(filters=2, kernel_size=2, dilation_rate=2,
                                      padding="same"), [(2, 6, 5, 2)], {}),
    "max_pooling2d": ("MaxPooling2D", dict(pool_size=(2, 3), strides=(2, 2)),
                      [(2, 7, 8, 3)], {}),
    "average_pooling2d_same": ("AveragePooling2D", dict(pool_size=3, strides=2,
                                                        padding="same"), [(2, 5, 6, 2)], {}),
    "global_average_pooling2d": ("GlobalAveragePooling2D", {}, [(2, 3, 4, 5)], {}),
    "flatten": ("Flatten", {}, [(2, 3, 4, 5)], {}),
    "reshape": ("Reshape", dict(target_shape=(12, 5)), [(2, 3, 4, 5)], {}),
    "batch_norm_training": ("BatchNormalization", dict(momentum=0.9), [(6, 3, 4)],
                            dict(training=True)),
    "batch_norm_inference": ("BatchNormalization", {}, [(6, 4)], dict(training=False)),
    "layer_norm": ("LayerNormalization", {}, [(3, 2, 5)], {}),
    "embedding": ("Embedding", dict(input_dim=7, output_dim=3), ["ids"], {}),
    "simple_rnn_state": ("SimpleRNN", _seq(return_sequences=True, return_state=True),
                         [(2, 4, 3)], {}),
    "lstm_sequences_state": ("LSTM", _seq(return_sequences=True, return_state=True),
                             [(2, 4, 3)], {}),
    "lstm_last": ("LSTM", _seq(), [(2, 4, 3)], {}),
    "gru_sequences_state": ("GRU", _seq(return_sequences=True, return_state=True),
                            [(2, 4, 3)], {}),
    "bidirectional_lstm": ("Bidirectional", dict(layer="LSTM", return_sequences=True),
                           [(2, 4, 3)], {}),
    "bidirectional_gru_sum": ("Bidirectional", dict(layer="GRU", merge_mode="sum"),
                              [(2, 4, 3)], {}),
    "dropout_inference": ("Dropout", dict(rate=0.5), [(3, 4)], dict(training=False)),
    "concatenate": ("Concatenate", dict(axis=1), [(2, 3), (2, 4)], {}),
    "add": ("Add", {}, [(2, 3), (2, 3)], {}),
}

# Less common arguments: float64, eager only (no kernel compiles).
EDGE_CASES = {
    "dense_rank3_no_bias": ("Dense", dict(units=2, use_bias=False), [(2, 3, 4)], {}),
    "conv1d_causal_dilated": ("Conv1D", dict(filters=2, kernel_size=3, padding="causal",
                                             dilation_rate=2), [(2, 7, 3)], {}),
    "conv2d_same_even_kernel_strided": ("Conv2D", dict(filters=2, kernel_size=(2, 4),
                                                       strides=2, padding="same",
                                                       use_bias=False), [(1, 5, 7, 2)], {}),
    "max_pooling2d_same": ("MaxPooling2D", dict(pool_size=3, strides=2, padding="same"),
                           [(2, 5, 6, 2)], {}),
    "average_pooling2d_overlapping": ("AveragePooling2D", dict(pool_size=(3, 2), strides=1),
                                      [(1, 4, 5, 2)], {}),
    "max_pooling1d": ("MaxPooling1D", dict(pool_size=2), [(2, 7, 3)], {}),
    "average_pooling1d_same": ("AveragePooling1D", dict(pool_size=3, strides=2,
                                                        padding="same"), [(2, 7, 3)], {}),
    "global_max_pooling2d": ("GlobalMaxPooling2D", {}, [(2, 3, 4, 5)], {}),
    "global_average_pooling1d_keepdims": ("GlobalAveragePooling1D", dict(keepdims=True),
                                          [(2, 4, 3)], {}),
    "batch_norm_axis1_training": ("BatchNormalization", dict(axis=1, center=False),
                                  [(5, 3, 4)], dict(training=True)),
    "batch_norm_no_scale_inference": ("BatchNormalization", dict(scale=False, epsilon=0.1),
                                      [(5, 3)], dict(training=False)),
    "layer_norm_two_axes": ("LayerNormalization", dict(axis=(1, 2)), [(3, 2, 5)], {}),
    "layer_norm_axis1": ("LayerNormalization", dict(axis=1, epsilon=0.01), [(3, 4, 2)], {}),
    "simple_rnn_relu_backwards": ("SimpleRNN", _seq(activation="relu", go_backwards=True,
                                                    return_sequences=True), [(2, 4, 3)], {}),
    "lstm_backwards_state": ("LSTM", _seq(go_backwards=True, return_state=True),
                             [(2, 4, 3)], {}),
    "lstm_hard_sigmoid_relu": ("LSTM", _seq(recurrent_activation="hard_sigmoid",
                                            activation="relu", return_sequences=True),
                               [(2, 4, 3)], {}),
    "gru_backwards_no_bias": ("GRU", _seq(go_backwards=True, use_bias=False,
                                          return_sequences=True), [(2, 4, 3)], {}),
    "bidirectional_rnn_ave": ("Bidirectional", dict(layer="SimpleRNN", merge_mode="ave",
                                                    return_sequences=True), [(2, 4, 3)], {}),
    "bidirectional_lstm_mul": ("Bidirectional", dict(layer="LSTM", merge_mode="mul"),
                               [(2, 4, 3)], {}),
    "bidirectional_gru_list": ("Bidirectional", dict(layer="GRU", merge_mode=None),
                               [(2, 4, 3)], {}),
    "multiply": ("Multiply", {}, [(2, 3), (2, 3), (2, 3)], {}),
    "subtract": ("Subtract", {}, [(2, 3), (2, 3)], {}),
    "average": ("Average", {}, [(2, 3), (2, 3)], {}),
    "maximum": ("Maximum", {}, [(2, 3), (2, 3)], {}),
    "minimum": ("Minimum", {}, [(2, 3), (2, 3)], {}),
    "reshape_minus_one": ("Reshape", dict(target_shape=(-1, 5)), [(2, 3, 4, 5)], {}),
    "dense_softmax": ("Dense", dict(units=4, activation="softmax"), [(3, 5)], {}),
    "lstm_initial_state": ("LSTM", _seq(return_sequences=True), [(2, 4, 3)], dict(
        initial_state=[np.full((2, 3), 0.3), np.full((2, 3), -0.2)])),
    "gru_initial_state_state": ("GRU", _seq(return_state=True), [(2, 4, 3)], dict(
        initial_state=[np.full((2, 3), 0.4)])),
    "bidirectional_lstm_state": ("Bidirectional", dict(layer="LSTM", return_sequences=True,
                                                       return_state=True), [(2, 4, 3)], {}),
    "bidirectional_gru_list_state": ("Bidirectional", dict(layer="GRU", merge_mode=None,
                                                           return_state=True), [(2, 4, 3)], {}),
    "concatenate_axis0": ("Concatenate", dict(axis=0), [(2, 3), (1, 3)], {}),
}


def make_layer(module, name, args, dtype):
    args = dict(args)
    if name == "Bidirectional":
        inner = getattr(module, args.pop("layer"))(
            3, return_sequences=args.pop("return_sequences", False),
            return_state=args.pop("return_state", False), dtype=dtype)
        return module.Bidirectional(inner, dtype=dtype, **args)
    return getattr(module, name)(dtype=dtype, **args)


def make_inputs(shapes, dtype, seed):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 7, (3, 4)) if s == "ids" else rng.standard_normal(s).astype(dtype)
            for s in shapes]


def randomise(keras_layer, seed):
    """Random weights of unit scale (variances positive): Keras' own start
    (zeros, ones, orthogonal) would leave terms of the gradients untested."""
    rng = np.random.default_rng(seed)
    for w in keras_layer.weights:
        value = rng.standard_normal(tuple(w.shape)) * 0.5
        w.assign((np.abs(value) + 0.5 if "variance" in w.name else value).astype(w.dtype))


def copy_weights(keras_layer, layer):
    """Keras' weights into the tracejit layer, pairing them by Keras' names."""
    theirs, ours = keras_layer.weights, layer.weights
    assert [w.name for w in theirs] == [v.name for v in ours]
    for w, v in zip(theirs, ours):
        assert tuple(w.shape) == v.shape, w.path
        v.assign(np.asarray(w.numpy()))


def as_list(y):
    return list(y) if isinstance(y, (list, tuple)) else [y]


def differentiable(xs):
    return [k for k, x in enumerate(xs) if x.dtype.kind == "f"]


def keras_run(layer, xs, call_kwargs, seed):
    """Keras' outputs, probes, gradients (inputs, then trainable weights)."""
    tensors = [tf.constant(x) for x in xs]
    with tf.GradientTape() as tape:
        for k in differentiable(xs):
            tape.watch(tensors[k])
        ys = as_list(layer(tensors if len(xs) > 1 else tensors[0], **call_kwargs))
        rng = np.random.default_rng(seed)
        probes = [rng.standard_normal(tuple(y.shape)).astype(y.dtype.as_numpy_dtype)
                  for y in ys]
        loss = tf.add_n([tf.reduce_sum(y * p) for y, p in zip(ys, probes)])
    sources = [tensors[k] for k in differentiable(xs)] + list(layer.trainable_weights)
    grads = [tf.convert_to_tensor(g).numpy() for g in tape.gradient(loss, sources)]
    return [y.numpy() for y in ys], probes, grads


def tracejit_grads(layer, xs, probes, call_kwargs, eager):
    """tracejit's outputs and gradients, through its GradientTape."""
    watched = differentiable(xs)
    if eager:
        xs = [tracejit.Variable(x, name=f"x{k}") if k in watched else x
              for k, x in enumerate(xs)]
    with tracejit.GradientTape() as tape:
        for k in watched:
            tape.watch(xs[k])
        ys = as_list(layer(xs if len(xs) > 1 else xs[0], **call_kwargs))
        loss = sum((y * p).sum() for y, p in zip(ys, probes))
    grads = tape.gradient(loss, [xs[k] for k in watched] + layer.trainable_variables)
    return ys, grads


def check_layer(case, dtype, compiled):
    cls, args, shapes, call_kwargs = {**CASES, **EDGE_CASES}[case]
    xs = make_inputs(shapes, dtype, seed=1)
    theirs = make_layer(keras.layers, cls, args, dtype)
    theirs(xs if len(xs) > 1 else xs[0])  # builds the weights
    randomise(theirs, seed=2)
    start = [w.numpy().copy() for w in theirs.weights]
    want_ys, probes, want_grads = keras_run(theirs, xs, call_kwargs, seed=3)
    want_state = [w.numpy() for w in theirs.non_trainable_weights]

    ours = make_layer(nn, cls, args, dtype)
    ours(xs if len(xs) > 1 else xs[0])
    tol = TOLERANCE[dtype]
    runs = {"eager": lambda: tracejit_grads(ours, xs, probes, call_kwargs, eager=True)}
    if compiled:
        step = tracejit.function(
            lambda xs, probes: tracejit_grads(ours, xs, probes, call_kwargs, eager=False))
        runs["compiled"] = lambda: step(xs, probes)
    for how, run in runs.items():  # from the weights before Keras' call (moving statistics too)
        for w, value in zip(theirs.weights, start):
            w.assign(value)
        copy_weights(theirs, ours)
        ys, grads = run()
        for k, (got, want) in enumerate(zip(ys, want_ys)):
            np.testing.assert_allclose(np.asarray(got), want, rtol=tol, atol=tol,
                                       err_msg=f"{how}: output {k}")
        assert len(grads) == len(want_grads)
        for k, (got, want) in enumerate(zip(grads, want_grads)):
            np.testing.assert_allclose(np.asarray(got), want, rtol=tol, atol=tol,
                                       err_msg=f"{how}: gradient {k}")
        for v, want in zip(ours.non_trainable_variables, want_state):
            np.testing.assert_allclose(v.numpy(), want, rtol=tol, atol=tol,
                                       err_msg=f"{how}: {v.name}")
    if compiled:  # a Numba kernel ran, not the interpreter
        assert step.stats.compiles + step.stats.disk_hits >= 1


# Their kernels repeat another case's (or move data only): compiling them again
# would add seconds per case and check nothing new.
NOT_COMPILED = {"lstm_last", "bidirectional_gru_sum", "flatten", "reshape", "dropout_inference"}


@pytest.mark.parametrize("case", sorted(CASES))
def test_float64_eager_and_compiled_match_keras(case, compiled):
    check_layer(case, "float64", compiled=case not in NOT_COMPILED)


@pytest.mark.parametrize("case", sorted(EDGE_CASES))
def test_float64_eager_edge_cases_match_keras(case):
    check_layer(case, "float64", compiled=False)


@pytest.mark.parametrize("case", sorted(CASES))
def test_float32_eager_matches_keras(case):
    check_layer(case, "float32", compiled=False)


def test_value_and_grad_of_a_conv_model_matches_keras(compiled):
    """A compiled tracejit.value_and_grad of a small model's loss w.r.t. its input."""
    x = np.random.default_rng(4).standard_normal((2, 6, 6, 1))
    layers = [("Conv2D", dict(filters=2, kernel_size=3, padding="same", activation="relu")),
              ("MaxPooling2D", {}), ("Flatten", {}), ("Dense", dict(units=3))]
    theirs = [make_layer(keras.layers, n, a, "float64") for n, a in layers]
    ours = [make_layer(nn, n, a, "float64") for n, a in layers]
    h, g = x, x
    for k, (t, o) in enumerate(zip(theirs, ours)):
        h, g = t(h), o(g)
        randomise(t, seed=10 + k)
        copy_weights(t, o)

    def forward(stack, x):
        for layer in stack:
            x = layer(x)
        return x

    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        loss = tf.reduce_sum(tf.tanh(forward(theirs, xt)))
    want_grad = tape.gradient(loss, xt).numpy()
    value, grad = tracejit.value_and_grad(lambda x: np.tanh(forward(ours, x)).sum())(x)
    np.testing.assert_allclose(value, loss.numpy(), rtol=1e-10)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-10, atol=1e-10)
