"""Classify generated sequences with an LSTM: each sequence is a noisy sine,
square or sawtooth wave (random frequency and phase), and the model tells
which. `tracejit.nn.LSTM` runs its time loop as one `lax.scan`: the compiled
training step holds one loop whatever the sequence length.

    python examples/lstm_sequences.py [--epochs 12] [--steps 24]
"""

import argparse
import time

import numpy as np

from tracejit import nn

WAVES = ("sine", "square", "sawtooth")


def make_data(n: int, steps: int, seed: int):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(WAVES), n)
    t = np.arange(steps)[None, :]
    freq = rng.uniform(0.05, 0.15, (n, 1))
    phase = rng.uniform(0, 1, (n, 1))
    cycle = (freq * t + phase) % 1.0
    waves = np.stack([np.sin(2 * np.pi * cycle), np.where(cycle < 0.5, 1.0, -1.0),
                      2.0 * cycle - 1.0])
    x = waves[labels, np.arange(n)] + 0.2 * rng.standard_normal((n, steps))
    return x[..., None].astype(np.float32), labels


def make_model() -> nn.Sequential:
    model = nn.Sequential([nn.LSTM(24), nn.Dense(len(WAVES))])
    model.compile(optimizer=nn.optimizers.Adam(learning_rate=1e-2),
                  loss=nn.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, default=1)
    args = parser.parse_args(argv)

    x_train, y_train = make_data(1200, args.steps, args.seed)
    x_test, y_test = make_data(400, args.steps, args.seed + 1)
    nn.set_random_seed(args.seed)
    model = make_model()
    start = time.perf_counter()
    model.fit(x_train, y_train, epochs=args.epochs, batch_size=32, verbose=args.verbose)
    loss, accuracy = model.evaluate(x_test, y_test)
    print(f"{args.epochs} epochs in {time.perf_counter() - start:.2f}s; test loss {loss:.4f}, "
          f"test accuracy {accuracy:.4f}")
    print("train step:", model.step_function("train").stats)
    return {"accuracy": accuracy, "loss": loss}


if __name__ == "__main__":
    main()
