"""One full training step - forward, gradient, Adam update - across frameworks,
and the per-call cost of the eager GradientTape.

    python benchmarks/bench_training.py [--dtype float32] [--rounds 5] [--only seed-model]
                                        [--threads 1] [--clock cpu]

Workloads (issue 8):
- seed-model: the fourth seed's Keras model, Dense(10 -> 5, relu) -> Dense(2),
  categorical cross-entropy from logits, batch 32;
- mlp-784: Dense(784 -> 256, relu) -> Dense(10), the same loss, batch 128.

Columns, all starting from the same weights: tracejit (`Model.fit`'s step:
one compiled kernel that writes the new weights and Adam slots back), JAX +
optax under `jit`, Keras `train_on_batch`, a `tf.function` step (GradientTape
+ Keras Adam), PyTorch eager (autograd + torch.optim.Adam). A framework that
is not installed shows "n/a". Before timing, every column runs three steps
from the same start and its weights are compared with tracejit's (max
difference relative to the largest weight). Keras and tracejit add Adam's
epsilon to sqrt(v); optax and PyTorch to the bias-corrected sqrt(v_hat): where
a gradient is as small as epsilon the two conventions differ (with epsilon
1e-12 everywhere all columns agree to ~1e-5).

Timing: steady state (after compiles), each sample a batch of calls preceded by
a 0.2 s sleep (BLAS threads spinning after one framework's call slow the next),
implementations interleaved round by round, median over rounds, ratios from
this one run. Targets: seed-model >= 5x faster than JAX and >= 30x faster than
Keras; mlp-784 no slower than the fastest column.

The eager section times `with GradientTape(): loss = ...; tape.gradient(...)`
on both workloads: tracejit's eager tape against TensorFlow's eager tape (no
tf.function) and PyTorch's autograd (issue 21's target: no slower than
PyTorch). Under each table, the tape's cost per recorded operation: the
operations one step records, the forward pass on the tape, the same
operations' NumPy implementations called back to back, and the difference
per operation (target: at most 5 µs).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
if "--threads" in sys.argv[:-1]:  # before NumPy loads its BLAS, which reads them once
    for _variable in THREAD_VARIABLES:
        os.environ[_variable] = sys.argv[sys.argv.index("--threads") + 1]

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

LEARNING_RATE = 1e-3
STEPS_CHECKED = 3


@dataclass
class Workload:
    name: str
    sizes: tuple  # (inputs, hidden, classes)
    batch: int


WORKLOADS = [Workload("seed-model", (10, 5, 2), 32), Workload("mlp-784", (784, 256, 10), 128)]


def initial(w: Workload, dtype):
    """Glorot-uniform weights, zero biases, inputs and one-hot labels."""
    rng = np.random.default_rng(0)
    n_in, n_hidden, n_out = w.sizes

    def glorot(a, b):
        limit = np.sqrt(6.0 / (a + b))
        return rng.uniform(-limit, limit, (a, b)).astype(dtype)

    weights = [glorot(n_in, n_hidden), np.zeros(n_hidden, dtype), glorot(n_hidden, n_out),
               np.zeros(n_out, dtype)]
    x = rng.standard_normal((w.batch, n_in)).astype(dtype)
    y = np.eye(n_out, dtype=dtype)[rng.integers(0, n_out, w.batch)]
    return weights, x, y


@dataclass
class Impl:
    name: str
    step: Callable  # one training step on the workload's batch, returns the loss
    weights: Callable  # -> list of NumPy arrays (W1, b1, W2, b2)
    settle: Callable | None = None  # untimed, after the first steps (background compiles)


# ----------------------------------------------------------------- tracejit

def _tracejit_model(w: Workload, dtype, weights):
    from tracejit import nn

    model = nn.Sequential([nn.Input((w.sizes[0],)), nn.Dense(w.sizes[1], activation="relu",
                                                              dtype=dtype),
                           nn.Dense(w.sizes[2], dtype=dtype)])
    model.set_weights(weights)
    return model


def build_tracejit(w: Workload, dtype) -> Impl:
    import tracejit
    from tracejit import nn

    weights, x, y = initial(w, dtype)
    model = _tracejit_model(w, dtype, weights)
    model.compile(optimizer=nn.optimizers.Adam(LEARNING_RATE),
                  loss=nn.losses.CategoricalCrossentropy(from_logits=True))
    step = model.step_function("train")
    assert isinstance(step, tracejit.Function)
    return Impl("tracejit", lambda: step(x, y)[0], model.get_weights, step.wait)


def _tracejit_eager_forward(w: Workload, dtype):
    """(forward on a new tape -> (tape, loss), the model's variables)."""
    import tracejit
    from tracejit import nn

    weights, x, y = initial(w, dtype)
    model = _tracejit_model(w, dtype, weights)
    loss_fn = nn.losses.CategoricalCrossentropy(from_logits=True)

    def forward():
        with tracejit.GradientTape() as tape:
            loss = loss_fn(y, model(x))
        return tape, loss

    return forward, model


def build_tracejit_eager_tape(w: Workload, dtype) -> Impl:
    """Forward and gradient on tracejit's eager tape (no update)."""
    import tracejit

    forward, model = _tracejit_eager_forward(w, dtype)
    variables = model.trainable_variables

    def step():
        tape, loss = forward()
        return tape.gradient(loss, variables)

    return Impl("tracejit eager tape", step, model.get_weights, tracejit.GradientTape.wait)


def eager_overhead(w: Workload, dtype, rounds: int, sample_s: float) -> None:
    """The tape's cost per recorded operation: the forward pass on the tape
    against the NumPy implementations of the operations it records."""
    from tracejit.core.ir import Literal

    forward, _ = _tracejit_eager_forward(w, dtype)
    tape, _ = forward()
    builder = tape.builder
    calls = [(e.prim.impl, [a.value if isinstance(a, Literal) else builder.values[id(a)]
                            for a in e.inputs], e.params) for e in builder.eqns]

    def numpy_only():
        for impl, args, params in calls:
            impl(*args, **params)

    times = time_interleaved([Impl("tape forward", forward, list),
                              Impl("numpy", numpy_only, list)], rounds, sample_s)
    n = len(calls)
    per_op = (times["tape forward"] - times["numpy"]) / n
    print(f"\n{w.name}: {n} recorded operations per step; forward on the tape "
          f"{times['tape forward']:,.1f} µs, their NumPy implementations alone "
          f"{times['numpy']:,.1f} µs: the tape's overhead {per_op:.1f} µs per operation")


# ---------------------------------------------------------------------- JAX

def build_jax(w: Workload, dtype) -> Impl:
    import jax
    import jax.numpy as jnp
    import optax

    weights, x, y = initial(w, dtype)
    params = [jnp.asarray(a) for a in weights]
    optimizer = optax.adam(LEARNING_RATE, eps=1e-7)
    state = {"params": params, "opt": optimizer.init(params)}
    xj, yj = jnp.asarray(x), jnp.asarray(y)

    def loss_fn(p, x, y):
        h = jnp.maximum(x @ p[0] + p[1], 0.0)
        logits = h @ p[2] + p[3]
        return -jnp.mean(jnp.sum(y * jax.nn.log_softmax(logits), axis=-1))

    @jax.jit
    def train(p, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(p, x, y)
        updates, opt_state = optimizer.update(grads, opt_state, p)
        return optax.apply_updates(p, updates), opt_state, loss

    def step():
        state["params"], state["opt"], loss = train(state["params"], state["opt"], xj, yj)
        return loss.block_until_ready()

    return Impl("JAX+optax jit", step, lambda: [np.asarray(a) for a in state["params"]])


# ----------------------------------------------------------- TensorFlow/Keras

def _keras_model(w: Workload, dtype, weights):
    import keras

    model = keras.Sequential([keras.Input((w.sizes[0],), dtype=dtype),
                              keras.layers.Dense(w.sizes[1], activation="relu", dtype=dtype),
                              keras.layers.Dense(w.sizes[2], dtype=dtype)])
    model.set_weights(weights)
    return model


def build_keras(w: Workload, dtype) -> Impl:
    import keras

    weights, x, y = initial(w, dtype)
    model = _keras_model(w, dtype, weights)
    model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE),
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True))
    return Impl("Keras train_on_batch", lambda: model.train_on_batch(x, y), model.get_weights)


def build_tf_function(w: Workload, dtype) -> Impl:
    import keras
    import tensorflow as tf

    weights, x, y = initial(w, dtype)
    model = _keras_model(w, dtype, weights)
    optimizer = keras.optimizers.Adam(LEARNING_RATE)
    loss_fn = keras.losses.CategoricalCrossentropy(from_logits=True)
    xt, yt = tf.constant(x), tf.constant(y)

    @tf.function
    def train(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    return Impl("tf.function step", lambda: train(xt, yt).numpy(), model.get_weights)


def build_tf_eager_tape(w: Workload, dtype) -> Impl:
    import keras
    import tensorflow as tf

    weights, x, y = initial(w, dtype)
    model = _keras_model(w, dtype, weights)
    loss_fn = keras.losses.CategoricalCrossentropy(from_logits=True)
    xt, yt = tf.constant(x), tf.constant(y)

    def step():
        with tf.GradientTape() as tape:
            loss = loss_fn(yt, model(xt))
        return tape.gradient(loss, model.trainable_variables)

    return Impl("TF eager tape", step, model.get_weights)


# ------------------------------------------------------------------ PyTorch

def _torch_model(w: Workload, dtype, weights):
    import torch

    if os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

    torch_dtype = getattr(torch, np.dtype(dtype).name)
    model = torch.nn.Sequential(torch.nn.Linear(w.sizes[0], w.sizes[1]), torch.nn.ReLU(),
                                torch.nn.Linear(w.sizes[1], w.sizes[2])).to(torch_dtype)
    with torch.no_grad():
        for layer, (kernel, bias) in zip((model[0], model[2]), (weights[:2], weights[2:])):
            layer.weight.copy_(torch.from_numpy(kernel.T.copy()))
            layer.bias.copy_(torch.from_numpy(bias))
    return model


def _torch_weights(model):
    return [a for layer in (model[0], model[2])
            for a in (layer.weight.detach().numpy().T.copy(), layer.bias.detach().numpy().copy())]


def build_torch(w: Workload, dtype) -> Impl:
    import torch

    weights, x, y = initial(w, dtype)
    model = _torch_model(w, dtype, weights)
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE, eps=1e-7)
    loss_fn = torch.nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def step():
        optimizer.zero_grad()
        loss = loss_fn(model(xt), yt)
        loss.backward()
        optimizer.step()
        return loss.item()

    return Impl("PyTorch eager", step, lambda: _torch_weights(model))


def build_torch_autograd(w: Workload, dtype) -> Impl:
    import torch

    weights, x, y = initial(w, dtype)
    model = _torch_model(w, dtype, weights)
    loss_fn = torch.nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    params = list(model.parameters())

    def step():
        return torch.autograd.grad(loss_fn(model(xt), yt), params)

    return Impl("PyTorch autograd", step, lambda: _torch_weights(model))


TRAINING = [build_tracejit, build_jax, build_keras, build_tf_function, build_torch]
EAGER = [build_tracejit_eager_tape, build_tf_eager_tape, build_torch_autograd]


# ------------------------------------------------------------------ running

def build_all(builders, w: Workload, dtype) -> tuple[list[Impl], dict]:
    impls, missing = [], {}
    for build in builders:
        try:
            impls.append(build(w, dtype))
        except Exception as err:  # a missing or broken framework costs one column
            missing[build.__name__.removeprefix("build_")] = type(err).__name__
    return impls, missing


def check_agreement(builders, w: Workload, dtype) -> dict:
    """Max relative weight difference to tracejit's after STEPS_CHECKED steps."""
    impls, _ = build_all(builders, w, dtype)
    finals = {}
    for impl in impls:
        for _ in range(STEPS_CHECKED):
            impl.step()
        finals[impl.name] = impl.weights()
    reference = finals.get("tracejit")
    if reference is None:
        return {}
    return {name: max(float(np.max(np.abs(a - r)) / (np.max(np.abs(r)) + 1e-12))
                      for a, r in zip(weights, reference)) for name, weights in finals.items()}


CLOCK = [time.perf_counter]  # what a sample measures: wall time, or the process's CPU time


def time_interleaved(impls: list[Impl], rounds: int, sample_s: float) -> dict[str, float]:
    """Median µs per step, implementations interleaved, a sleep before each sample."""
    counts = {}
    for impl in impls:
        for _ in range(3):
            impl.step()
        if impl.settle is not None:
            impl.settle()
        for _ in range(3):
            impl.step()
        start, n = time.perf_counter(), 0
        while time.perf_counter() - start < 0.05:
            impl.step()
            n += 1
        counts[impl.name] = max(1, int(n * sample_s / 0.05))
    samples: dict[str, list[float]] = {impl.name: [] for impl in impls}
    for _ in range(rounds):
        for impl in impls:
            time.sleep(0.2)
            n = counts[impl.name]
            start = CLOCK[0]()
            for _ in range(n):
                impl.step()
            samples[impl.name].append((CLOCK[0]() - start) / n * 1e6)
    return {name: statistics.median(s) for name, s in samples.items()}


def report(title: str, times: dict, missing: dict, reference: str, extra=None) -> None:
    print(f"\n### {title}\n")
    print(f"| implementation | µs per step | vs {reference} |" + (" weights vs tracejit |"
                                                                   if extra else ""))
    print("|---|---:|---:|" + ("---:|" if extra else ""))
    base = times.get(reference)
    for name, us in sorted(times.items(), key=lambda kv: kv[1]):
        ratio = f"{us / base:.1f}x" if base else "n/a"
        check = f" {extra[name]:.1e} |" if extra and name in extra else (" |" if extra else "")
        print(f"| {name} | {us:,.1f} | {ratio} |{check}")
    for name, err in missing.items():
        print(f"| {name} | n/a ({err}) | |" + (" |" if extra else ""))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sample-seconds", type=float, default=0.1)
    parser.add_argument("--only", choices=[w.name for w in WORKLOADS] + ["eager"])
    parser.add_argument("--threads", type=int, help="BLAS and PyTorch threads (all columns; "
                        "1 keeps a loaded machine's figures steady)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="cpu: the process's CPU time (with --threads 1, steady on a "
                        "machine other jobs load)")
    args = parser.parse_args(argv)
    if args.clock == "cpu":
        CLOCK[0] = time.process_time
    dtype = np.dtype(args.dtype)
    print(f"dtype {dtype}, {args.rounds} rounds, Adam(learning_rate={LEARNING_RATE}), "
          f"{args.clock} clock, threads {args.threads or 'default'}")
    for w in WORKLOADS:
        if args.only not in (None, w.name):
            continue
        agreement = check_agreement(TRAINING, w, dtype)
        impls, missing = build_all(TRAINING, w, dtype)
        times = time_interleaved(impls, args.rounds, args.sample_seconds)
        report(f"{w.name}: training step, batch {w.batch}", times, missing, "tracejit",
               agreement)
        if "tracejit" in times:
            others = {n: t / times["tracejit"] for n, t in times.items() if n != "tracejit"}
            print("\ntracejit is " + ", ".join(f"{r:.1f}x faster than {n}"
                                             for n, r in sorted(others.items())))
    if args.only in (None, "eager"):
        for w in WORKLOADS:
            impls, missing = build_all(EAGER, w, dtype)
            times = time_interleaved(impls, args.rounds, args.sample_seconds)
            report(f"{w.name}: eager forward + tape.gradient, batch {w.batch}", times, missing,
                   "tracejit eager tape")
            eager_overhead(w, dtype, args.rounds, args.sample_seconds)


if __name__ == "__main__":
    main()
