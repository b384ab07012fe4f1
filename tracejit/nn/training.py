"""Keras' training loop for `Model`: `compile`, `fit`, `evaluate`, `predict`.

Each step is one `@tracejit.function` built once per model: the training
step - forward, loss, gradient (a GradientTape inside the trace), optimizer
update and metrics - is one kernel call per batch, and writes the new weights
and slots back into their Variables. Kernels are shape-generic in the batch
size, so the last, smaller batch reuses the same kernel. With
`compile(run_eagerly=True)` the same steps run eagerly, for debugging.

`fit` shows one progress bar per epoch when tqdm is installed (verbose=1),
one line per epoch otherwise (or with verbose=2).
"""

from __future__ import annotations

import math
import time

import numpy as np

from . import initializers
from . import losses as losses_module
from . import metrics as metrics_module
from . import optimizers as optimizers_module

try:
    import tqdm as _tqdm
except ImportError:  # optional: plain per-epoch lines instead
    _tqdm = None


class History:
    """What `fit` returns: `history[name]` is the per-epoch list of a metric."""

    def __init__(self):
        self.history: dict[str, list] = {}
        self.epoch: list[int] = []
        self.epoch_seconds: list[float] = []

    def append(self, epoch: int, logs: dict, seconds: float) -> None:
        self.epoch.append(epoch)
        self.epoch_seconds.append(seconds)
        for name, value in logs.items():
            self.history.setdefault(name, []).append(value)

    def __repr__(self) -> str:
        return f"<History epochs={len(self.epoch)} {sorted(self.history)}>"


class Trainer:
    """The training methods of `Model` (a mixin)."""

    optimizer = None
    loss = None
    compiled_metrics: list = []
    run_eagerly = False

    def compile(self, optimizer="rmsprop", loss=None, metrics=None, run_eagerly=False):
        """Choose the optimizer, loss and metrics (names, objects or functions)."""
        self.optimizer = optimizers_module.get(optimizer)
        self.loss = None if loss is None else losses_module.get(loss)
        self.compiled_metrics = [metrics_module.get(m, self.loss) for m in (metrics or [])]
        self.run_eagerly = run_eagerly
        self._step_functions = {}

    # ------------------------------------------------------------- steps
    def compute_loss(self, y, y_pred):
        return self.loss(y, y_pred)

    def train_step(self, x, y):
        """Forward, loss, gradient and update; returns (loss, *metrics)."""
        from ..frontend.tape import GradientTape

        with GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.compute_loss(y, y_pred)
        variables = self.trainable_variables
        grads = tape.gradient(loss, variables)
        self.optimizer.apply_gradients(zip(grads, variables))
        return (loss, *[m(y, y_pred) for m in self.compiled_metrics])

    def test_step(self, x, y):
        y_pred = self(x, training=False)
        return (self.compute_loss(y, y_pred), *[m(y, y_pred) for m in self.compiled_metrics])

    def predict_step(self, x):
        return self(x, training=False)

    def step_function(self, kind: str):
        """The train/test/predict step: compiled once per model (or eager)."""
        step = {"train": self.train_step, "test": self.test_step,
                "predict": self.predict_step}[kind]
        if self.run_eagerly:
            return step
        functions = self.__dict__.setdefault("_step_functions", {})
        if kind not in functions:
            from ..frontend.api import Function
            functions[kind] = Function(step)
        return functions[kind]

    def _metric_names(self) -> list:
        return ["loss"] + [m.name for m in self.compiled_metrics]

    def _require_compiled(self, what: str) -> None:
        if self.optimizer is None or self.loss is None:
            raise RuntimeError(f"{what}: call model.compile(optimizer=..., loss=...) first")

    # --------------------------------------------------------------- loops
    def fit(self, x, y, batch_size=None, epochs=1, verbose=1, validation_data=None,
            shuffle=True, initial_epoch=0):
        """Train for `epochs` passes over (x, y); returns a `History` of the
        per-epoch loss and metrics (and their `val_` values)."""
        self._require_compiled("fit")
        x, y = np.asarray(x), np.asarray(y)
        batch_size = batch_size or 32
        step = self.step_function("train")
        steps = math.ceil(len(x) / batch_size)
        history = History()
        names = self._metric_names()
        for epoch in range(initial_epoch, epochs):
            start = time.perf_counter()
            order = initializers._rng.permutation(len(x)) if shuffle else None
            xs, ys = (x[order], y[order]) if shuffle else (x, y)
            progress = _Progress(epoch + 1, epochs, steps, verbose)
            totals, seen = [0.0] * len(names), 0
            for k in range(steps):
                xb, yb = xs[k * batch_size:(k + 1) * batch_size], ys[k * batch_size:
                                                                     (k + 1) * batch_size]
                values = step(xb, yb)
                seen += len(xb)
                for i, value in enumerate(values):
                    totals[i] += float(value) * len(xb)
                progress.step(names, totals, seen)
            logs = {name: total / seen for name, total in zip(names, totals)}
            if validation_data is not None:
                val = self.evaluate(*validation_data, batch_size=batch_size, verbose=0,
                                    return_dict=True)
                logs.update({f"val_{name}": value for name, value in val.items()})
            seconds = time.perf_counter() - start
            progress.finish(logs, seconds)
            history.append(epoch, logs, seconds)
        self.history = history
        return history

    def evaluate(self, x, y, batch_size=None, verbose=0, return_dict=False):
        """The loss and metrics over (x, y): a float, [loss, *metrics], or a dict."""
        self._require_compiled("evaluate")
        x, y = np.asarray(x), np.asarray(y)
        batch_size = batch_size or 32
        step = self.step_function("test")
        names = self._metric_names()
        totals, seen = [0.0] * len(names), 0
        for k in range(0, len(x), batch_size):
            values = step(x[k:k + batch_size], y[k:k + batch_size])
            n = len(x[k:k + batch_size])
            seen += n
            for i, value in enumerate(values):
                totals[i] += float(value) * n
        logs = {name: total / seen for name, total in zip(names, totals)}
        if verbose:
            print(" - ".join(f"{name}: {value:.4f}" for name, value in logs.items()))
        if return_dict:
            return logs
        return logs["loss"] if len(names) == 1 else list(logs.values())

    def predict(self, x, batch_size=None, verbose=0):
        """The model's outputs for `x`, computed batch by batch."""
        x = np.asarray(x)
        batch_size = batch_size or 32
        step = self.step_function("predict")
        return np.concatenate([np.asarray(step(x[k:k + batch_size]))
                               for k in range(0, len(x), batch_size)])


class _Progress:
    """A tqdm bar for one epoch (verbose=1, when tqdm is installed), or one
    line at its end."""

    REFRESH_SECONDS = 0.2

    def __init__(self, epoch: int, epochs: int, steps: int, verbose: int):
        self.title = f"Epoch {epoch}/{epochs}"
        self.verbose = verbose
        self.bar = None
        if verbose == 1 and _tqdm is not None:
            self.bar = _tqdm.tqdm(total=steps, desc=self.title, unit="step", leave=True)
        self.shown = time.perf_counter()

    def step(self, names, totals, seen) -> None:
        if self.bar is None:
            return
        self.bar.update(1)
        now = time.perf_counter()
        if now - self.shown > self.REFRESH_SECONDS:
            self.shown = now
            self.bar.set_postfix_str(_format({n: t / seen for n, t in zip(names, totals)}),
                                     refresh=False)

    def finish(self, logs: dict, seconds: float) -> None:
        line = f"{seconds:.2f}s - {_format(logs)}"
        if self.bar is not None:
            self.bar.set_postfix_str(line)
            self.bar.close()
        elif self.verbose:
            print(f"{self.title} - {line}", flush=True)


def _format(logs: dict) -> str:
    return " - ".join(f"{name}: {value:.4f}" for name, value in logs.items())
