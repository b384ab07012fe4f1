"""Train a small convnet on scikit-learn's handwritten digits (8x8 images,
shipped with scikit-learn: no download) with tracejit's Keras-style layers.

Conv2D -> BatchNormalization -> Conv2D -> MaxPooling2D -> Flatten ->
Dropout -> Dense: every training step (forward, loss, gradient, Adam update,
moving statistics, a fresh dropout mask) is one compiled kernel call.

    pip install -e ".[examples]"
    python examples/convnet_digits.py [--epochs 15]
"""

import argparse
import time

import numpy as np

from tracejit import nn


def load(seed: int):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32).reshape(-1, 8, 8, 1)
    return train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y)


def make_model(seed: int) -> nn.Sequential:
    model = nn.Sequential([
        nn.Input(shape=(8, 8, 1)),
        nn.Conv2D(16, 3, padding="same", activation="relu"),
        nn.BatchNormalization(momentum=0.9),
        nn.Conv2D(32, 3, padding="same", activation="relu"),
        nn.MaxPooling2D(2),
        nn.Flatten(),
        nn.Dropout(0.3, seed=seed),
        nn.Dense(10),
    ])
    model.compile(optimizer=nn.optimizers.Adam(learning_rate=2e-3),
                  loss=nn.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, default=1)
    args = parser.parse_args(argv)

    x_train, x_test, y_train, y_test = load(args.seed)
    nn.set_random_seed(args.seed)
    model = make_model(args.seed)
    model.summary()
    start = time.perf_counter()
    history = model.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
                        verbose=args.verbose)
    total = time.perf_counter() - start
    loss, accuracy = model.evaluate(x_test, y_test)
    steady = float(np.median(history.epoch_seconds[1:] or history.epoch_seconds))
    print(f"{args.epochs} epochs in {total:.2f}s ({steady * 1e3:.0f} ms per epoch after the "
          f"first); test loss {loss:.4f}, test accuracy {accuracy:.4f}")
    print("train step:", model.step_function("train").stats)
    return {"accuracy": accuracy, "loss": loss, "history": history}


if __name__ == "__main__":
    main()
