"""Training steps of the layers people train, across frameworks (issue 19).

    python benchmarks/bench_layers.py [--only convnet|lstm] [--steps 10] [--threads 1]

Workloads (float32, Adam, sparse cross-entropy from logits):
- convnet: 28x28x1 images, batch 64: Conv2D(32, 3, relu) -> MaxPooling2D(2) ->
  Conv2D(64, 3, relu) -> MaxPooling2D(2) -> Flatten -> Dense(10);
- lstm: batch 32, 50 steps of 16 features, LSTM(128) -> Dense(10).

Columns: tracejit (`Model.fit`'s step, one kernel call), PyTorch eager
(autograd + torch.optim.Adam), JAX + optax under `jit` (convolution by
`lax.conv_general_dilated`, the LSTM by `lax.scan`), Keras `tf.function`
(n/a when TensorFlow is not installed). Every column runs in its own process
(so start-up costs are its own): `ready` is the wall time from the start of
the first step to its end (trace + compile for the JIT columns), for tracejit
cold (empty kernel cache) and warm (a new process, the cache filled by the
cold one). `step` is the median of rounds of steady-state steps, each round
preceded by a 0.2 s sleep; `step CPU ms` the median CPU time of the process
per step (one thread: less distorted than wall time by other jobs on a busy
machine, though cache sharing still inflates it). All columns start from the same weights and the
same batch; the first step's loss is compared with PyTorch's. Every library's
thread pool is capped at `--threads` (default 1: on a busy 2-core machine a
parallel region waits for its second thread to be scheduled, and a step took
20-35x longer with two threads than with one, in every framework).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
LEARNING_RATE = 1e-3


def data(kind: str):
    rng = np.random.default_rng(0)
    if kind == "convnet":
        x = rng.standard_normal((64, 28, 28, 1)).astype(np.float32)
    else:
        x = rng.standard_normal((32, 50, 16)).astype(np.float32)
    return x, rng.integers(0, 10, len(x))


def tracejit_model(kind: str):
    from tracejit import nn

    nn.set_random_seed(0)
    if kind == "convnet":
        layers = [nn.Input((28, 28, 1)), nn.Conv2D(32, 3, activation="relu"), nn.MaxPooling2D(2),
                  nn.Conv2D(64, 3, activation="relu"), nn.MaxPooling2D(2), nn.Flatten(),
                  nn.Dense(10)]
    else:
        layers = [nn.Input((50, 16)), nn.LSTM(128), nn.Dense(10)]
    return nn.Sequential(layers)


def weights(kind: str) -> list:
    return tracejit_model(kind).get_weights()  # Keras' layout, float32


# -------------------------------------------------------------- the columns

def run_tracejit(kind, x, y):
    from tracejit import nn

    model = tracejit_model(kind)
    model.compile(optimizer=nn.optimizers.Adam(LEARNING_RATE),
                  loss=nn.losses.SparseCategoricalCrossentropy(from_logits=True))
    step = model.step_function("train")
    return lambda: float(step(x, y)[0])


def run_torch(kind, x, y):
    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    w = [torch.tensor(a) for a in weights(kind)]
    if kind == "convnet":
        model = torch.nn.Sequential(
            torch.nn.Conv2d(1, 32, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(32, 64, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Flatten(), torch.nn.Linear(1600, 10))
        with torch.no_grad():
            model[0].weight.copy_(w[0].permute(3, 2, 0, 1))
            model[0].bias.copy_(w[1])
            model[3].weight.copy_(w[2].permute(3, 2, 0, 1))
            model[3].bias.copy_(w[3])
            # Keras flattens (h, w, c); PyTorch (c, h, w): reorder the dense rows
            model[7].weight.copy_(w[4].reshape(5, 5, 64, 10).permute(3, 2, 0, 1).reshape(10, -1))
            model[7].bias.copy_(w[5])
        xt = torch.tensor(x.transpose(0, 3, 1, 2)).contiguous()

        def forward():
            return model(xt)
    else:
        lstm, head = torch.nn.LSTM(16, 128, batch_first=True), torch.nn.Linear(128, 10)
        with torch.no_grad():
            lstm.weight_ih_l0.copy_(w[0].T)
            lstm.weight_hh_l0.copy_(w[1].T)
            lstm.bias_ih_l0.copy_(w[2])
            lstm.bias_hh_l0.zero_()
            head.weight.copy_(w[3].T)
            head.bias.copy_(w[4])
        model = torch.nn.ModuleList([lstm, head])
        xt = torch.tensor(x)

        def forward():
            _, (h, _) = lstm(xt)
            return head(h[0])

    yt = torch.tensor(y)
    optimizer = torch.optim.Adam(model.parameters(), LEARNING_RATE, eps=1e-7)

    def step():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(forward(), yt)
        loss.backward()
        optimizer.step()
        return float(loss)

    return step


def run_jax(kind, x, y):
    import jax
    import jax.numpy as jnp
    import optax

    params = [jnp.asarray(a) for a in weights(kind)]
    xj, yj = jnp.asarray(x), jnp.asarray(y)

    def conv(h, k, b):
        out = jax.lax.conv_general_dilated(h, k, (1, 1), "VALID",
                                           dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jax.nn.relu(out + b)

    def pool(h):
        return jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1),
                                     "VALID")

    def logits_of(p, x):
        if kind == "convnet":
            h = pool(conv(x, p[0], p[1]))
            h = pool(conv(h, p[2], p[3]))
            return h.reshape(len(x), -1) @ p[4] + p[5]
        n = p[1].shape[0]

        def cell(carry, x_t):
            h, c = carry
            z = x_t + h @ p[1]
            i, f = jax.nn.sigmoid(z[:, :n]), jax.nn.sigmoid(z[:, n:2 * n])
            g, o = jnp.tanh(z[:, 2 * n:3 * n]), jax.nn.sigmoid(z[:, 3 * n:])
            c = f * c + i * g
            h = o * jnp.tanh(c)
            return (h, c), None

        projected = jnp.swapaxes(x @ p[0] + p[2], 0, 1)
        zeros = jnp.zeros((x.shape[0], n), x.dtype)
        (h, _), _ = jax.lax.scan(cell, (zeros, zeros), projected)
        return h @ p[3] + p[4]

    def loss_fn(p, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(logits_of(p, x), y).mean()

    optimizer = optax.adam(LEARNING_RATE, eps=1e-7)
    state = {"p": params, "o": optimizer.init(params)}

    @jax.jit
    def train(p, o, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(p, x, y)
        updates, o = optimizer.update(grads, o, p)
        return optax.apply_updates(p, updates), o, loss

    def step():
        state["p"], state["o"], loss = train(state["p"], state["o"], xj, yj)
        return float(loss)

    return step


def run_keras(kind, x, y):
    import keras
    import tensorflow as tf

    if kind == "convnet":
        model = keras.Sequential([
            keras.Input((28, 28, 1)), keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.MaxPooling2D(2), keras.layers.Conv2D(64, 3, activation="relu"),
            keras.layers.MaxPooling2D(2), keras.layers.Flatten(), keras.layers.Dense(10)])
    else:
        model = keras.Sequential([keras.Input((50, 16)), keras.layers.LSTM(128),
                                  keras.layers.Dense(10)])
    model.set_weights(weights(kind))
    optimizer = keras.optimizers.Adam(LEARNING_RATE)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    xt, yt = tf.constant(x), tf.constant(y)

    @tf.function
    def train(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    return lambda: float(train(xt, yt))


COLUMNS = {"tracejit": run_tracejit, "PyTorch eager": run_torch, "JAX+optax jit": run_jax,
           "Keras tf.function": run_keras}


def child(column: str, kind: str, steps: int, rounds: int) -> dict:
    """In a fresh process: the first step's wall time, then steady-state steps."""
    x, y = data(kind)
    start = time.perf_counter()
    step = COLUMNS[column](kind, x, y)
    first_loss = step()
    ready = time.perf_counter() - start
    for _ in range(2):
        step()
    samples, cpu = [], []
    for _ in range(rounds):
        time.sleep(0.2)
        t, c = time.perf_counter(), time.process_time()
        for _ in range(steps):
            step()
        samples.append((time.perf_counter() - t) / steps)
        cpu.append((time.process_time() - c) / steps)
    return {"ready_s": ready, "step_ms": statistics.median(samples) * 1e3,
            "cpu_ms": statistics.median(cpu) * 1e3, "first_loss": first_loss}


def spawn(column, kind, steps, rounds, threads, env_extra=None) -> dict:
    from harness import thread_env

    env = dict(os.environ, PYTHONPATH=ROOT, TRACEJIT_COMPILE="sync", BENCH_THREADS=str(threads),
               **thread_env(threads), **(env_extra or {}))
    cmd = [sys.executable, __file__, "--child", column, "--only", kind, "--steps", str(steps),
           "--rounds", str(rounds)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": last[:60]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["convnet", "lstm"])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--child")
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.only, args.steps, args.rounds)))
        return
    for kind in [args.only] if args.only else ["convnet", "lstm"]:
        cache = tempfile.mkdtemp(prefix="tracejit-bench-layers-")
        results = {}
        for column in COLUMNS:
            extra = {"TRACEJIT_CACHE_DIR": cache} if column == "tracejit" else None
            results[column] = spawn(column, kind, args.steps, args.rounds, args.threads, extra)
        warm = spawn("tracejit", kind, args.steps, args.rounds, args.threads,
                     {"TRACEJIT_CACHE_DIR": cache})
        report(kind, results, warm)


def report(kind, results, warm) -> None:
    reference = results["PyTorch eager"].get("first_loss")
    fastest = min((r["step_ms"] for n, r in results.items() if n != "tracejit" and "step_ms" in r),
                  default=None)
    print(f"\n{kind}: step time (median), first step (ready), loss of the first step")
    print("| column | step ms | vs tracejit | step CPU ms | ready s | first loss |")
    print("|---|---:|---:|---:|---:|---:|")
    ours = results["tracejit"].get("step_ms")
    for name, r in results.items():
        if "error" in r:
            print(f"| {name} | n/a ({r['error']}) | | | | |")
            continue
        ratio = f"{r['step_ms'] / ours:.2f}x" if ours else ""
        ready = f"{r['ready_s']:.1f}"
        if name == "tracejit" and "ready_s" in warm:
            ready += f" cold, {warm['ready_s']:.1f} warm"
        print(f"| {name} | {r['step_ms']:.1f} | {ratio} | {r['cpu_ms']:.1f} | {ready} | "
              f"{r['first_loss']:.6f} |")
    if ours and fastest:
        print(f"tracejit vs the fastest other column: {fastest / ours:.2f}x "
              f"({'faster' if fastest > ours else 'slower'})")
        ours_cpu = results["tracejit"]["cpu_ms"]
        least = min(r["cpu_ms"] for n, r in results.items() if n != "tracejit" and "cpu_ms" in r)
        print(f"in CPU time (what a loaded machine distorts least): {least / ours_cpu:.2f}x")
    if reference is not None and "first_loss" in results["tracejit"]:
        print(f"first-step loss, tracejit - PyTorch: "
              f"{results['tracejit']['first_loss'] - reference:.2e}")


if __name__ == "__main__":
    main()
