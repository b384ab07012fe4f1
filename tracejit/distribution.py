"""Data-parallel `fit` and `evaluate` in Keras 3's words (`keras.distribution`):

    from tracejit import distribution
    distribution.set_distribution(distribution.DataParallel())
    model.fit(x, y, batch_size=256, epochs=10)       # mpiexec -n 4 python train.py

Every rank holds the whole dataset and runs the same program. Each global
batch of `batch_size` rows is cut into one contiguous shard per rank (sizes
differ by at most one row; a rank may get none). A training step is split
where the ranks meet: a gradient kernel (forward, loss, gradient, scaled by
the rank's share of the batch, packed with the loss and metrics into one flat
vector), one in-place Allreduce of that vector, and an update kernel (the
optimizer) that every rank runs on the same sum, so weights stay identical.
The result equals a one-process `fit` on the same global batches, the last
uneven one included, up to rounding. At the start of `fit` the weights,
optimizer slots and the shuffling seed are broadcast from rank 0; progress
bars and printed logs come from rank 0 only, and `History` holds the
batch-weighted means over all ranks, the same on each.

A new kind of shard (the first batch; a one-row shard) is compiled once per
cluster: one rank compiles into the shared disk cache
(`TRACEJIT_CACHE_DIR`, on a shared file system across nodes) while the others
wait at a barrier, then they load it. With one process (`size() == 1`) `fit`
runs its fused one-kernel step exactly as without a distribution.
"""

from __future__ import annotations

import contextlib

import numpy as np

from . import distributed
from .core.errors import UnsupportedError
from .nn import initializers
from .nn import training as _training

_current = None


def initialize(job_addresses=None, num_processes=None, process_id=None) -> None:
    """Join the job. Under MPI the launcher says who is who, so Keras'
    arguments are accepted for compatibility and must agree with it."""
    distributed.initialize()
    for given, actual, what in ((num_processes, distributed.size(), "num_processes"),
                                (process_id, distributed.rank(), "process_id")):
        if given is not None and given != actual:
            raise ValueError(f"initialize: {what}={given} but the MPI launcher says {actual}")


def list_devices(device_type=None) -> list:
    """One device per rank, named as Keras names CPU devices."""
    if device_type not in (None, "cpu", "CPU"):
        raise ValueError(f"list_devices: tracejit runs on CPUs, not {device_type!r}")
    return [f"cpu:{k}" for k in range(distributed.size())]


def distribution():
    """The distribution set by `set_distribution` (None: one process)."""
    return _current


def set_distribution(value) -> None:
    """Make `value` (a `DataParallel`, or None) the distribution `fit` uses."""
    global _current
    if value is not None and not isinstance(value, DataParallel):
        raise TypeError(f"set_distribution: expected a DataParallel or None, got "
                        f"{type(value).__name__}")
    _current = value
    _training.data_parallel = value


class DataParallel:
    """Replicate the model on every rank and shard each batch across them.

    `devices`: the devices to use; under MPI they are the ranks, one per
    process (`list_devices()`), which is the default."""

    def __init__(self, devices=None, auto_shard_dataset=True):
        distributed.initialize()
        self.devices = list_devices() if devices is None else list(devices)
        if len(self.devices) != distributed.size():
            raise ValueError(f"DataParallel: {len(self.devices)} devices, but the job has "
                             f"{distributed.size()} ranks (one device per rank)")
        self.auto_shard_dataset = auto_shard_dataset

    def __repr__(self) -> str:
        return f"<DataParallel ranks={distributed.size()}>"

    @contextlib.contextmanager
    def scope(self):
        """Use this distribution inside the block (Keras' and TensorFlow's scope)."""
        previous = distribution()
        set_distribution(self)
        try:
            yield self
        finally:
            set_distribution(previous)

    # -------------------------------------------- what nn.training calls
    def active(self) -> bool:
        return distributed.size() > 1

    def verbose(self, verbose: int) -> int:
        """Progress and logs print on rank 0 only."""
        return verbose if distributed.rank() == 0 else 0

    def train_step(self, model, x, y):
        """The sharded step `fit` calls per global batch -> (loss, *metrics)."""
        _require_builtin_train_step(model)
        _check_same_data(x, y, "fit")
        _synchronise(model, x)
        return _ShardedTrainStep(model)

    def test_step(self, model, x, y):
        """The sharded step `evaluate` calls per global batch -> (loss, *metrics)."""
        _check_same_data(x, y, "evaluate")
        return _ShardedTestStep(model)


def _require_builtin_train_step(model) -> None:
    if type(model).train_step is not _training.Trainer.train_step:
        raise UnsupportedError(
            f"{type(model).__name__} overrides train_step: a data-parallel fit runs its own "
            "split step (gradient, all-reduce, update). Override compute_loss instead, or "
            "write the loop with GradientTape and distributed.DistributedOptimizer")


def _check_same_data(x, y, what: str) -> None:
    held = distributed.all_gather_object((len(x), x.shape[1:], str(x.dtype),
                                          y.shape, str(y.dtype)))
    if len(set(held)) > 1:
        raise distributed.DistributedError(
            f"{what}: every rank must pass the same dataset (each takes its shard of every "
            f"global batch); (rows, row shape, dtype, y shape, y dtype) by rank: {held}")


def _synchronise(model, x) -> None:
    """Rank 0's weights, optimizer slots and shuffling state on every rank."""
    if not model.trainable_variables:
        model(x[:1])  # a subclassed model builds its weights on its first call
    model.optimizer.build(model.trainable_variables)
    distributed.broadcast_variables(model.weights + model.optimizer.variables)
    state = distributed.broadcast_object(initializers._rng.bit_generator.state)
    initializers._rng.bit_generator.state = state


def shard_sizes(rows: int, ranks: int) -> list:
    """Rows of a global batch per rank: contiguous, differing by at most one,
    and never a one-row shard beside others (a one-row batch is a kernel of
    its own: its size-1 axis broadcasts), so a small last batch goes to fewer
    ranks."""
    used = max(1, min(ranks, rows // 2))
    return [rows // used + (k < rows % used) if k < used else 0 for k in range(ranks)]


class _ShardedStep:
    """Runs `function` on this rank's shard of each global batch. The first
    call of each kind of shard (many rows, one row: each its own kernel) is
    compiled by one rank while the others wait, then loaded by them."""

    def __init__(self, function):
        self.function = function
        self.rank, self.size = distributed.rank(), distributed.size()
        self.kinds_seen: set = set()

    def __call__(self, x, y):
        sizes = shard_sizes(len(x), self.size)
        start, rows = sum(sizes[:self.rank]), sizes[self.rank]
        weight = rows / len(x)
        out = self.run(sizes, x[start:start + rows], y[start:start + rows], weight)
        return self.reduce(out, weight)

    def run(self, sizes, *args):
        kinds = {r: n == 1 for r, n in enumerate(sizes) if n}
        mine = kinds.get(self.rank)
        new = set(kinds.values()) - self.kinds_seen
        if not new:
            return None if mine is None else self.call(*args)
        self.kinds_seen |= new
        leading = mine in new and min(r for r, k in kinds.items() if k == mine) == self.rank
        if leading:
            out = self.call(*args)
            getattr(self.function, "wait", lambda: None)()
        distributed.barrier("the first step of a new shard size (one rank compiles)")
        if mine is None:
            return None
        return out if leading else self.call(*args)

    def call(self, x, y, weight):
        return self.function(x, y, weight)

    def reduce(self, out, weight):
        raise NotImplementedError


class _ShardedTrainStep(_ShardedStep):
    """gradient kernel -> one Allreduce of one flat buffer -> update kernel."""

    def __init__(self, model):
        super().__init__(model.step_function("gradient"))
        self.update = model.step_function("apply")
        self.values = 1 + len(model.compiled_metrics)
        variables = model.trainable_variables
        self.layout = (sum(v.size for v in variables) + self.values,
                       np.result_type(*[v.dtype for v in variables]))
        self.updated = False

    def reduce(self, flat, weight):
        if flat is None:  # no rows here this step: add nothing
            flat = np.zeros(*self.layout)
        elif flat.dtype != self.layout[1] or not (flat.flags.c_contiguous
                                                  and flat.flags.writeable):
            flat = np.array(flat, dtype=self.layout[1])  # every rank sends the same type
        distributed.all_reduce_sum_(flat, "fit (the gradient all-reduce)")
        if self.updated:
            self.update(flat)
        else:
            distributed.compile_once(self.update, flat)
            self.updated = True
        return tuple(flat[-self.values:])


class _ShardedTestStep(_ShardedStep):
    def __init__(self, model):
        super().__init__(model.step_function("test"))
        self.values = 1 + len(model.compiled_metrics)

    def call(self, x, y, weight):
        return self.function(x, y)

    def reduce(self, values, weight):
        flat = np.zeros(self.values) if values is None else (
            np.array([float(v) for v in values]) * weight)
        distributed.all_reduce_sum_(flat, "evaluate (the metrics all-reduce)")
        return tuple(flat)
