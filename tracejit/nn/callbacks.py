"""Keras' training callbacks for `fit`: `Callback` (subclass it),
`EarlyStopping`, `ModelCheckpoint` (weights to .npz), `ReduceLROnPlateau`,
`LearningRateScheduler`, `CSVLogger`, `LambdaCallback`.

Hooks are Keras': `on_train_begin/end(logs)`, `on_epoch_begin/end(epoch,
logs)`, `on_train_batch_begin/end(batch, logs)`; `self.model` is the model
being trained, and setting `model.stop_training = True` ends `fit` after
the current epoch.
"""

from __future__ import annotations

import csv
import math

import numpy as np


class Callback:
    """The base class: override the hooks you need."""

    model = None

    def set_model(self, model) -> None:
        self.model = model

    def on_train_begin(self, logs=None): ...

    def on_train_end(self, logs=None): ...

    def on_epoch_begin(self, epoch, logs=None): ...

    def on_epoch_end(self, epoch, logs=None): ...

    def on_train_batch_begin(self, batch, logs=None): ...

    def on_train_batch_end(self, batch, logs=None): ...


class CallbackList(Callback):
    """Every hook called on each callback in order."""

    def __init__(self, callbacks, model):
        self.callbacks = list(callbacks or [])
        for callback in self.callbacks:
            callback.set_model(model)
        self.batch_hooks = any(_overrides(c, "on_train_batch_begin")
                               or _overrides(c, "on_train_batch_end") for c in self.callbacks)

    def __getattribute__(self, name):
        if name.startswith("on_"):
            return lambda *args: [getattr(c, name)(*args) for c in self.callbacks]
        return object.__getattribute__(self, name)


def _overrides(callback, hook: str) -> bool:
    return getattr(type(callback), hook) is not getattr(Callback, hook)


class LambdaCallback(Callback):
    """Hooks given as functions: `LambdaCallback(on_epoch_end=lambda e, logs: ...)`."""

    def __init__(self, **hooks):
        for name, fn in hooks.items():
            if not name.startswith("on_"):
                raise ValueError(f"LambdaCallback: unknown hook {name!r}")
            setattr(self, name, fn)


class _Monitor(Callback):
    """A monitored metric and whether lower or higher is better (Keras' "auto":
    higher for accuracies, lower otherwise)."""

    def __init__(self, monitor, mode, min_delta):
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
        self.monitor = monitor
        higher = mode == "max" or (mode == "auto" and ("acc" in monitor or "auc" in monitor))
        self.sign = 1.0 if higher else -1.0
        self.min_delta = abs(float(min_delta))
        self.best = -math.inf

    def value(self, logs):
        if not logs or self.monitor not in logs:
            return None
        return float(logs[self.monitor])

    def improved(self, value) -> bool:
        return self.sign * value - self.min_delta > self.best

    def record(self, value) -> None:
        self.best = self.sign * value


class EarlyStopping(_Monitor):
    """Stop when `monitor` has not improved by `min_delta` for `patience`
    epochs; `restore_best_weights` puts the best epoch's weights back."""

    def __init__(self, monitor="val_loss", min_delta=0, patience=0, verbose=0, mode="auto",
                 baseline=None, restore_best_weights=False, start_from_epoch=0):
        super().__init__(monitor, mode, min_delta)
        self.patience, self.verbose, self.baseline = int(patience), verbose, baseline
        self.restore_best_weights = restore_best_weights
        self.start_from_epoch = int(start_from_epoch)
        self.stopped_epoch = 0
        self.best_weights = None

    def on_train_begin(self, logs=None):
        self.wait, self.stopped_epoch, self.best_weights = 0, 0, None
        self.best = -math.inf if self.baseline is None else self.sign * float(self.baseline)

    def on_epoch_end(self, epoch, logs=None):
        value = self.value(logs)
        if value is None or epoch < self.start_from_epoch:
            return
        self.wait += 1
        if self.improved(value):
            self.record(value)
            self.wait = 0
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True
            if self.restore_best_weights and self.best_weights is not None:
                self.model.set_weights(self.best_weights)
            if self.verbose:
                print(f"Epoch {epoch + 1}: early stopping")


class ModelCheckpoint(_Monitor):
    """Save the weights (`save_weights`, .npz) after each epoch, or only when
    `monitor` improves with `save_best_only`; `filepath` may hold
    `{epoch}` and log names (`weights.{epoch:02d}-{val_loss:.2f}.npz`)."""

    def __init__(self, filepath, monitor="val_loss", verbose=0, save_best_only=False,
                 save_weights_only=True, mode="auto"):
        super().__init__(monitor, mode, 0)
        self.filepath, self.verbose, self.save_best_only = str(filepath), verbose, save_best_only

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.save_best_only:
            value = self.value(logs)
            if value is None or not self.improved(value):
                return
            self.record(value)
        path = self.filepath.format(epoch=epoch + 1, **logs)
        self.model.save_weights(path)
        if self.verbose:
            print(f"Epoch {epoch + 1}: saved weights to {path}")


class LearningRateScheduler(Callback):
    """`schedule(epoch, lr) -> new lr` (or `schedule(epoch)`), set before each epoch."""

    def __init__(self, schedule, verbose=0):
        self.schedule, self.verbose = schedule, verbose

    def on_epoch_begin(self, epoch, logs=None):
        optimizer = self.model.optimizer
        current = float(optimizer.learning_rate)
        try:
            lr = self.schedule(epoch, current)
        except TypeError:
            lr = self.schedule(epoch)
        optimizer.learning_rate = float(lr)
        if self.verbose:
            print(f"Epoch {epoch + 1}: learning rate {float(lr):.6g}")

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(self.model.optimizer.learning_rate)


class ReduceLROnPlateau(_Monitor):
    """Multiply the learning rate by `factor` when `monitor` has not improved
    for `patience` epochs (then wait `cooldown` epochs), down to `min_lr`."""

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, verbose=0, mode="auto",
                 min_delta=1e-4, cooldown=0, min_lr=0.0):
        if factor >= 1.0:
            raise ValueError("ReduceLROnPlateau: factor must be < 1")
        super().__init__(monitor, mode, min_delta)
        self.factor, self.patience, self.verbose = float(factor), int(patience), verbose
        self.cooldown, self.min_lr = int(cooldown), float(min_lr)

    def on_train_begin(self, logs=None):
        self.wait, self.cooling, self.best = 0, 0, -math.inf

    def on_epoch_end(self, epoch, logs=None):
        value = self.value(logs)
        if value is None:
            return
        if self.cooling > 0:
            self.cooling -= 1
            self.wait = 0
        if self.improved(value):
            self.record(value)
            self.wait = 0
            return
        self.wait += 1
        optimizer = self.model.optimizer
        lr = float(optimizer.learning_rate)
        if self.wait >= self.patience and self.cooling == 0 and lr > self.min_lr:
            optimizer.learning_rate = max(lr * self.factor, self.min_lr)
            self.cooling, self.wait = self.cooldown, 0
            if self.verbose:
                print(f"Epoch {epoch + 1}: learning rate reduced to "
                      f"{float(optimizer.learning_rate):.6g}")


class CSVLogger(Callback):
    """One row per epoch: `epoch` and every log, to `filename`."""

    def __init__(self, filename, separator=",", append=False):
        self.filename, self.separator, self.append = str(filename), separator, append

    def on_train_begin(self, logs=None):
        self.file = open(self.filename, "a" if self.append else "w", newline="")  # noqa: SIM115
        self.writer = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.writer is None:
            self.writer = csv.DictWriter(self.file, ["epoch", *logs], delimiter=self.separator)
            if not self.append or self.file.tell() == 0:
                self.writer.writeheader()
        self.writer.writerow({"epoch": epoch, **{k: _plain(v) for k, v in logs.items()}})
        self.file.flush()

    def on_train_end(self, logs=None):
        self.file.close()


def _plain(value):
    return float(value) if isinstance(value, (np.floating, np.ndarray)) else value
