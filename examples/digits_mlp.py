"""Train an MLP on scikit-learn's handwritten digits (8x8 images, 1797 of
them, shipped with scikit-learn: no download) with the Keras-style API.

`fit` runs each training step - forward, loss, gradient, Adam update,
accuracy - as one compiled kernel. The same model is then trained for a few
epochs with `run_eagerly=True` (the GradientTape recording and the update
done eagerly) to compare the time per epoch. With matplotlib installed the
loss curves are saved to a PNG.

    pip install -e ".[examples]"
    python examples/digits_mlp.py [--epochs 40] [--eager-epochs 3] [--plot digits_loss.png]
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


def make_model(run_eagerly: bool) -> nn.Sequential:
    model = nn.Sequential([
        nn.Input(shape=(64,)),
        nn.Dense(128, activation="relu"),
        nn.Dense(64, activation="relu"),
        nn.Dense(10),
    ])
    model.compile(optimizer=nn.optimizers.Adam(learning_rate=2e-3),
                  loss=nn.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"], run_eagerly=run_eagerly)
    return model


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--eager-epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--plot", default="digits_loss.png", help="'' to skip the plot")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, default=1)
    args = parser.parse_args(argv)

    x_train, x_test, y_train, y_test = load(args.seed)
    nn.set_random_seed(args.seed)
    model = make_model(run_eagerly=False)
    model.summary()
    start = time.perf_counter()
    history = model.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
                        validation_data=(x_test, y_test), verbose=args.verbose)
    total = time.perf_counter() - start
    loss, accuracy = model.evaluate(x_test, y_test)
    # the first epoch includes the kernel's compile (the steps run interpreted meanwhile)
    steady = history.epoch_seconds[1:] or history.epoch_seconds
    compiled_epoch = float(np.median(steady))
    print(f"compiled: {args.epochs} epochs in {total:.2f}s (first {history.epoch_seconds[0]:.2f}s"
          f" with the compile), {compiled_epoch * 1e3:.1f} ms per epoch after; "
          f"test loss {loss:.4f}, test accuracy {accuracy:.4f}")
    print("train step:", model.step_function("train").stats)

    eager_epoch = None
    if args.eager_epochs:
        nn.set_random_seed(args.seed)
        eager = make_model(run_eagerly=True)
        eager_history = eager.fit(x_train, y_train, epochs=args.eager_epochs,
                                  batch_size=args.batch_size, verbose=0)
        eager_epoch = float(np.median(eager_history.epoch_seconds[1:]
                                      or eager_history.epoch_seconds))
        print(f"eager: {eager_epoch * 1e3:.1f} ms per epoch; compiled is "
              f"{eager_epoch / compiled_epoch:.1f}x faster per epoch")

    if args.plot:
        plot(history, args.plot)
    return {"accuracy": accuracy, "loss": loss, "history": history,
            "compiled_epoch": compiled_epoch, "eager_epoch": eager_epoch}


def plot(history, path: str) -> None:
    try:
        import matplotlib
    except ImportError:
        print("(matplotlib is not installed: no loss curve)")
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    axis.plot(history.epoch, history.history["loss"], label="train loss")
    axis.plot(history.epoch, history.history["val_loss"], label="test loss")
    axis.set_xlabel("epoch")
    axis.set_ylabel("cross-entropy")
    axis.set_title("MLP on scikit-learn digits (tracejit)")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    print(f"loss curve saved to {path}")


if __name__ == "__main__":
    main()
