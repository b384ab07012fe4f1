"""An MLP with batch normalization and dropout on scikit-learn's digits.

Dropout draws a fresh mask on every compiled training step (from its own
`tracejit.random.SeedGenerator`, inside the step's loop nests), batch
normalization moves its statistics in the same kernel call, and
`evaluate`/`predict` run both in inference mode. EarlyStopping watches the
validation loss.

    python examples/dropout_bn_mlp.py [--epochs 30]
"""

import argparse
import time

import numpy as np

from tracejit import nn


def load(seed: int):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    return train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y)


def make_model(seed: int) -> nn.Sequential:
    model = nn.Sequential([
        nn.Input(shape=(64,)),
        nn.Dense(128, use_bias=False),
        nn.BatchNormalization(momentum=0.9),
        nn.Activation("relu"),
        nn.Dropout(0.3, seed=seed),
        nn.Dense(64, use_bias=False),
        nn.BatchNormalization(momentum=0.9),
        nn.Activation("relu"),
        nn.Dropout(0.3, seed=seed + 1),
        nn.Dense(10),
    ])
    model.compile(optimizer=nn.optimizers.Adam(learning_rate=2e-3),
                  loss=nn.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, default=1)
    args = parser.parse_args(argv)

    x_train, x_test, y_train, y_test = load(args.seed)
    nn.set_random_seed(args.seed)
    model = make_model(args.seed)
    start = time.perf_counter()
    stop = nn.callbacks.EarlyStopping(monitor="val_loss", patience=5, restore_best_weights=True)
    history = model.fit(x_train, y_train, epochs=args.epochs, batch_size=32,
                        validation_split=0.15, callbacks=[stop], verbose=args.verbose)
    loss, accuracy = model.evaluate(x_test, y_test)
    print(f"{len(history.epoch)} epochs in {time.perf_counter() - start:.2f}s; test loss "
          f"{loss:.4f}, test accuracy {accuracy:.4f}")
    print("train step:", model.step_function("train").stats)
    return {"accuracy": accuracy, "loss": loss, "history": history}


if __name__ == "__main__":
    main()
