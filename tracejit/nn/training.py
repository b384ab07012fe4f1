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

import itertools
import math
import time

import numpy as np

from ..core.errors import UnsupportedError
from . import initializers
from . import losses as losses_module
from . import metrics as metrics_module
from . import optimizers as optimizers_module

try:
    import tqdm as _tqdm
except ImportError:  # optional: plain per-epoch lines instead
    _tqdm = None

# The data-parallel strategy: tracejit.distribution sets it (nn never imports it).
# When it spans more than one process, `fit` and `evaluate` take their steps from it.
data_parallel = None


def _parallel():
    return data_parallel if data_parallel is not None and data_parallel.active() else None


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
    def compute_loss(self, y, y_pred, sample_weight=None):
        if sample_weight is None:
            return self.loss(y, y_pred)
        return self.loss(y, y_pred, sample_weight=sample_weight)

    def train_step(self, x, y, sample_weight=None):
        """Forward, loss, gradient and update; returns (loss, *metrics)."""
        from ..frontend.tape import GradientTape

        with GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.compute_loss(y, y_pred, sample_weight)
        variables = self.trainable_variables
        grads = tape.gradient(loss, variables)
        self.optimizer.apply_gradients(zip(grads, variables))
        return (loss, *[m(y, y_pred) for m in self.compiled_metrics])

    def gradient_step(self, x, y, weight):
        """A data-parallel step's first half: forward, loss and gradient on this
        rank's shard, scaled by its share `weight` of the global batch, packed
        with the loss and metrics into one flat vector (what the ranks sum)."""
        from ..frontend.tape import GradientTape

        with GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.compute_loss(y, y_pred)
        variables = self.trainable_variables
        grads = tape.gradient(loss, variables, unconnected_gradients="zero")
        values = [loss, *[m(y, y_pred) for m in self.compiled_metrics]]
        return np.concatenate([np.ravel(g) for g in grads]
                              + [np.reshape(v, (1,)) for v in values]) * weight

    def apply_step(self, flat):
        """The second half: the summed gradients (the head of `flat`) unpacked
        and applied by the optimizer."""
        variables = self.trainable_variables
        grads, offset = [], 0
        for var in variables:
            grads.append(np.reshape(flat[offset:offset + var.size], var.shape))
            offset += var.size
        self.optimizer.apply_gradients(zip(grads, variables))

    def test_step(self, x, y):
        y_pred = self(x, training=False)
        return (self.compute_loss(y, y_pred), *[m(y, y_pred) for m in self.compiled_metrics])

    def predict_step(self, x):
        return self(x, training=False)

    def step_function(self, kind: str):
        """The train/test/predict step: compiled once per model (or eager)."""
        step = {"train": self.train_step, "test": self.test_step,
                "predict": self.predict_step, "gradient": self.gradient_step,
                "apply": self.apply_step}[kind]
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
    def fit(self, x, y=None, batch_size=None, epochs=1, verbose=1, callbacks=None,
            validation_split=0.0, validation_data=None, shuffle=True, class_weight=None,
            sample_weight=None, initial_epoch=0, steps_per_epoch=None):
        """Train for `epochs` passes over (x, y); returns a `History` of the
        per-epoch loss and metrics (and their `val_` values). `validation_split`
        holds out the last fraction of (x, y), as Keras; `callbacks` are
        `tracejit.nn.callbacks` objects; `sample_weight` (per sample) and
        `class_weight` ({class: weight}) weight the loss, not the metrics.
        `x` may instead be an iterable of (x, y) or (x, y, sample_weight) batches
        (a list, reread every epoch, or a generator: `steps_per_epoch` batches
        of it per epoch, all it has if None)."""
        from .callbacks import CallbackList

        self._require_compiled("fit")
        source = _BatchSource(x, y, batch_size or 32, shuffle, sample_weight, class_weight,
                              validation_split, steps_per_epoch)
        validation_data = validation_data or source.validation
        parallel = _parallel()
        if parallel:
            step = parallel.train_step(self, *_one_input_and_labels(source))
            verbose = parallel.verbose(verbose)
        else:
            step = self.step_function("train")
        history = History()
        hooks = CallbackList(callbacks, self)
        names = self._metric_names()
        self.stop_training = False
        hooks.on_train_begin({})
        for epoch in range(initial_epoch, epochs):
            start = time.perf_counter()
            hooks.on_epoch_begin(epoch, {})
            progress = _Progress(epoch + 1, epochs, source.steps, verbose)
            logs = self._fit_epoch(step, source.batches(), hooks, progress, names)
            if validation_data is not None:
                val = self.evaluate(*validation_data, batch_size=batch_size, verbose=0,
                                    return_dict=True)
                logs.update({f"val_{name}": value for name, value in val.items()})
            seconds = time.perf_counter() - start
            progress.finish(logs, seconds)
            hooks.on_epoch_end(epoch, logs)
            history.append(epoch, logs, seconds)
            if self.stop_training:
                break
        hooks.on_train_end(logs if history.epoch else {})
        self.history = history
        return history

    def _fit_epoch(self, step, batches, hooks, progress, names):
        totals, seen = [0.0] * len(names), 0
        for k, batch in enumerate(batches):
            if hooks.batch_hooks:
                hooks.on_train_batch_begin(k, {})
            n = _count(batch[0])
            values = step(*batch)
            seen += n
            for i, value in enumerate(values):
                totals[i] += float(value) * n
            progress.step(names, totals, seen)
            if hooks.batch_hooks:
                hooks.on_train_batch_end(k, {n: float(v) for n, v in zip(names, values)})
        if not seen:
            raise ValueError("fit: the data gave no batch this epoch (an exhausted generator?"
                             " pass steps_per_epoch, or a list of batches)")
        return {name: total / seen for name, total in zip(names, totals)}

    def evaluate(self, x, y, batch_size=None, verbose=0, return_dict=False):
        """The loss and metrics over (x, y): a float, [loss, *metrics], or a dict."""
        self._require_compiled("evaluate")
        x, y = _arrays(x), np.asarray(y)
        batch_size = batch_size or 32
        parallel = _parallel()
        step = parallel.test_step(self, x, y) if parallel else self.step_function("test")
        verbose = parallel.verbose(verbose) if parallel else verbose
        names = self._metric_names()
        totals, seen = [0.0] * len(names), 0
        for k in range(0, _count(x), batch_size):
            values = step(_take(x, slice(k, k + batch_size)), y[k:k + batch_size])
            n = len(y[k:k + batch_size])
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
        x = _arrays(x)
        batch_size = batch_size or 32
        step = self.step_function("predict")
        return np.concatenate([np.asarray(step(_take(x, slice(k, k + batch_size))))
                               for k in range(0, _count(x), batch_size)])


class _BatchSource:
    """What `fit` iterates over each epoch: slices of arrays (shuffled), or
    the batches of an iterable."""

    def __init__(self, x, y, batch_size, shuffle, sample_weight, class_weight,
                 validation_split, steps_per_epoch):
        self.validation, self.steps_per_epoch = None, steps_per_epoch
        if y is None and not isinstance(x, np.ndarray):
            self.iterable, self.arrays = x, None
            self.steps = steps_per_epoch or (len(x) if hasattr(x, "__len__") else None)
            return
        x, y = _arrays(x), np.asarray(y)  # x: an array, or a list (several inputs)
        weights = _sample_weights(y, sample_weight, class_weight)
        if validation_split:
            cut = int(len(y) * (1.0 - float(validation_split)))
            self.validation = (_take(x, slice(cut, None)), y[cut:])
            x, y = _take(x, slice(None, cut)), y[:cut]
            weights = None if weights is None else weights[:cut]
        self.arrays = [a for a in (x, y, weights) if a is not None]
        self.batch_size, self.shuffle = batch_size, shuffle
        self.steps = math.ceil(len(y) / batch_size)

    def batches(self):
        if self.arrays is None:
            return self._from_iterable()
        arrays = self.arrays
        if self.shuffle:
            order = initializers._rng.permutation(len(arrays[1]))
            arrays = [_take(a, order) for a in arrays]
        size = self.batch_size
        return (tuple(_take(a, slice(k * size, (k + 1) * size)) for a in arrays)
                for k in range(self.steps))

    def _from_iterable(self):
        # a list is reread every epoch; a generator continues where it stopped
        for batch in itertools.islice(self.iterable, self.steps_per_epoch):
            yield tuple(np.asarray(b) for b in batch)


def _one_input_and_labels(source) -> tuple:
    """(x, y) of a data-parallel fit, which shards one input array and its labels."""
    arrays = source.arrays
    if arrays is None or len(arrays) != 2 or isinstance(arrays[0], list):
        raise UnsupportedError(
            "a data-parallel fit takes one input array and its labels: no iterable of "
            "batches, several inputs, sample_weight or class_weight yet")
    return arrays[0], arrays[1]


def _arrays(x):
    """A model's inputs: one array, or a list of arrays (a model with several)."""
    return [np.asarray(a) for a in x] if isinstance(x, (list, tuple)) else np.asarray(x)


def _take(x, index):
    return [a[index] for a in x] if isinstance(x, list) else x[index]


def _count(x) -> int:
    return len(x[0]) if isinstance(x, list) else len(x)


def _sample_weights(y, sample_weight, class_weight):
    """Per-sample loss weights: `sample_weight` times the weight of each sample's
    class (integer labels, or one-hot rows)."""
    if sample_weight is None and class_weight is None:
        return None
    weights = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, float)
    if class_weight is not None:
        labels = np.argmax(y, axis=-1) if y.ndim > 1 and y.shape[-1] > 1 else y.reshape(len(y))
        weights = weights * np.array([class_weight.get(int(c), 1.0) for c in labels])
    return weights


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
