"""Data-parallel training across processes and nodes, on MPI (through mpi4py).

    mpiexec -n 4 python train.py          # or srun, or any MPI launcher

    from tracejit import distributed
    distributed.initialize()              # MPI under a launcher, else one process
    distributed.broadcast_variables(model.variables + optimizer.variables)
    optimizer = distributed.DistributedOptimizer(optimizer)
    ...
    with tracejit.GradientTape() as tape:
        loss = ...
    optimizer.apply_gradients(zip(tape.gradient(loss, vars), vars))   # averaged over ranks

Horovod's model: every rank runs the same program on its own shard of the
data; gradients are summed across ranks by one in-place `Allreduce` of one
flat buffer per step. Keras' `fit` gets the same through
`tracejit.distribution.set_distribution(DataParallel())` (distribution.py).

Faults: a rank that raises aborts the whole job (`MPI_Abort`, through
`sys.excepthook`); a rank that dies is cleaned up by the launcher; a
collective that waits longer than `TRACEJIT_DISTRIBUTED_TIMEOUT` seconds
(default 600, 0 = forever) aborts the job with a message naming it. Each rank
limits BLAS and Numba to its share of the node's cores.

Without mpi4py (`pip install "tracejit[mpi]"`) a program not started by a
launcher runs as one process (rank 0 of 1) and every call below works; one
started by a launcher, or `initialize(backend="mpi")`, raises
`DistributedUnavailableError` (an ImportError) saying what to install.
"""

from __future__ import annotations

import os
import sys
import threading
import time

import numpy as np

from .core import pytree
from .frontend.variables import Variable

INSTALL_HINT = 'pip install "tracejit[mpi]"  (mpi4py and an MPI library, e.g. mpich)'

# Set by MPICH/Intel MPI (PMI_*), Open MPI (OMPI_*), PMIx (srun --mpi=pmix), MVAPICH.
_LAUNCHER_VARIABLES = ("PMI_SIZE", "PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE",
                       "MV2_COMM_WORLD_SIZE")


class DistributedUnavailableError(ImportError):
    """MPI was asked for (or the program was launched by mpiexec/srun) but
    mpi4py is not installed."""


class DistributedError(RuntimeError):
    """Ranks disagree (data, shapes) or a collective could not complete."""


def launched_by_mpi() -> bool:
    """Was this process started by an MPI launcher (mpiexec, mpirun, srun)?
    `TRACEJIT_DISTRIBUTED=off` says no whatever the environment holds."""
    env = os.environ
    if env.get("TRACEJIT_DISTRIBUTED", "").strip().lower() in {"0", "off", "no", "false"}:
        return False
    if any(name in env for name in _LAUNCHER_VARIABLES):
        return True
    return int(env.get("SLURM_STEP_NUM_TASKS", "1") or 1) > 1  # srun without an MPI plugin


def _timeout_seconds() -> float:
    return float(os.environ.get("TRACEJIT_DISTRIBUTED_TIMEOUT", "600") or 0)


# ------------------------------------------------------------------ worlds

class _SingleProcess:
    """Rank 0 of 1: the collectives are identities."""

    backend = "single"
    rank, size, local_rank, local_size = 0, 1, 0, 1

    def allreduce_sum(self, buffer: np.ndarray, what: str) -> None:
        pass

    def broadcast_bytes(self, buffer: np.ndarray, root: int, what: str) -> None:
        pass

    def broadcast_object(self, value, root: int, what: str):
        return value

    def gather_object(self, value, what: str) -> list:
        return [value]

    def barrier(self, what: str) -> None:
        pass


class _MPIWorld:
    """COMM_WORLD through mpi4py; every collective runs under the watchdog."""

    backend = "mpi"

    def __init__(self, MPI, timeout: float):  # noqa: N803 - the module's own name
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        node = self.comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        self.local_rank, self.local_size = node.Get_rank(), node.Get_size()
        node.Free()
        self.watchdog = _Watchdog(timeout, self) if timeout > 0 else None

    def _run(self, what: str, call, *args):
        dog = self.watchdog
        if dog is None:
            return call(*args)
        dog.start(what)
        try:
            return call(*args)
        finally:
            dog.deadline = None

    def allreduce_sum(self, buffer: np.ndarray, what: str) -> None:
        self._run(what, self.comm.Allreduce, self.MPI.IN_PLACE, buffer, self.MPI.SUM)

    def broadcast_bytes(self, buffer: np.ndarray, root: int, what: str) -> None:
        self._run(what, self.comm.Bcast, buffer, root)

    def broadcast_object(self, value, root: int, what: str):
        return self._run(what, self.comm.bcast, value, root)

    def gather_object(self, value, what: str) -> list:
        return self._run(what, self.comm.allgather, value)

    def barrier(self, what: str) -> None:
        self._run(what, self.comm.Barrier)

    def say(self, message: str) -> None:
        sys.stderr.write(f"tracejit.distributed: rank {self.rank} of {self.size}: {message}\n")
        sys.stderr.flush()

    def abort(self, message: str | None, code: int = 1) -> None:
        """Print `message` (unless None: said already) and end every rank of the
        job (never returns)."""
        if message is not None:
            self.say(message)
        time.sleep(0.5)  # mpiexec forwards ranks' output: let it pass the message on first
        try:
            self.comm.Abort(code)
        finally:
            os._exit(code)


class _Watchdog:
    """One daemon thread that aborts the job when a collective outlives its
    deadline (a rank hung, left early, or swallowed an exception). Arming it
    is two attribute writes, so every collective can afford it."""

    def __init__(self, seconds: float, world: _MPIWorld):
        self.seconds, self.world = seconds, world
        self.deadline: float | None = None
        self.what = ""
        threading.Thread(target=self._watch, name="tracejit-mpi-watchdog", daemon=True).start()

    def start(self, what: str) -> None:
        self.what = what
        self.deadline = time.monotonic() + self.seconds

    def _watch(self) -> None:
        tick = min(1.0, self.seconds / 4)
        while True:
            time.sleep(tick)
            deadline = self.deadline
            if deadline is not None and time.monotonic() > deadline:
                self.world.abort(f"{self.what} waited more than {self.seconds:g} s for the "
                                 "other ranks (one died, hung or left early; "
                                 "TRACEJIT_DISTRIBUTED_TIMEOUT sets the limit); aborting the "
                                 "job", code=3)


_world: _SingleProcess | _MPIWorld | None = None


def initialize(backend: str | None = None, timeout: float | None = None):
    """Join the job: MPI when launched by mpiexec/srun (or `backend="mpi"`),
    one process otherwise (`backend="single"`). Idempotent; every other call
    of this module initializes on first use."""
    global _world
    if _world is not None:
        return _world
    backend = backend or ("mpi" if launched_by_mpi() else "single")
    if backend not in ("mpi", "single"):
        raise ValueError(f"initialize: backend must be 'mpi' or 'single', got {backend!r}")
    if backend == "single":
        _world = _SingleProcess()
        return _world
    world = _MPIWorld(_import_mpi(), _timeout_seconds() if timeout is None else timeout)
    # Loading a kernel imports scipy.linalg (BLAS) in a background thread; a trace
    # starting meanwhile would find it half imported (a race seen on followers).
    import scipy.linalg  # noqa: F401
    _install_abort_on_error(world)
    _share_cores(world.local_size)
    _world = world
    return world


def _import_mpi():
    try:
        from mpi4py import MPI
    except ImportError as err:
        launched = " (this process was started by an MPI launcher)" if launched_by_mpi() else ""
        raise DistributedUnavailableError(
            f"tracejit.distributed needs mpi4py for MPI{launched}: {INSTALL_HINT}. "
            f"({err})") from err
    return MPI


def _world_now():
    return _world if _world is not None else initialize()


def rank() -> int:
    """This process's rank in the job (0 in one process)."""
    return _world_now().rank


def size() -> int:
    """How many processes train together (1 in one process)."""
    return _world_now().size


def local_rank() -> int:
    """This process's rank among those on its node."""
    return _world_now().local_rank


def local_size() -> int:
    """How many ranks share this node."""
    return _world_now().local_size


def is_root() -> bool:
    return rank() == 0


# ------------------------------------------------------------------- faults

def _install_abort_on_error(world: _MPIWorld) -> None:
    """An uncaught exception (Ctrl-C included) on any rank ends every rank,
    instead of leaving the others blocked in their next collective."""
    previous = sys.excepthook

    def abort_job(kind, value, tb):
        said = f": {value}" if str(value) else ""
        # said first: printing the traceback is slow, and another rank may end the job
        world.say(f"uncaught {kind.__name__}{said}; aborting all ranks")
        try:
            previous(kind, value, tb)
        finally:
            world.abort(None)

    sys.excepthook = abort_job


def _share_cores(ranks_on_node: int) -> None:
    """Give this rank its share of the node's cores for BLAS and Numba's
    parallel loops (an explicit OMP_NUM_THREADS wins)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = int(os.environ.get("OMP_NUM_THREADS") or max(1, (cores or 1) // ranks_on_node))
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, str(threads))  # and for any child process
    try:
        import numba

        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    except (ImportError, ValueError):
        pass
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # BLAS keeps its threads; the env above covers new processes
        return
    threadpool_limits(threads)


# -------------------------------------------------------------- collectives

def _arrays(tree) -> tuple[list, tuple]:
    leaves, treedef = pytree.flatten(tree)
    arrays = [np.asarray(leaf.numpy() if isinstance(leaf, Variable) else leaf) for leaf in leaves]
    return arrays, treedef


def _pack(arrays: list, dtype) -> np.ndarray:
    buffer = np.empty(sum(a.size for a in arrays), dtype=dtype)
    offset = 0
    for a in arrays:
        buffer[offset:offset + a.size] = a.ravel()
        offset += a.size
    return buffer


def _unpack(buffer: np.ndarray, like: list) -> list:
    out, offset = [], 0
    for a in like:
        part = buffer[offset:offset + a.size].reshape(a.shape)
        out.append(part.astype(a.dtype) if a.dtype != buffer.dtype else part)
        offset += a.size
    return out


def all_reduce_sum_(buffer: np.ndarray, what: str = "all_reduce") -> np.ndarray:
    """Sum a contiguous buffer over the ranks, in place (one Allreduce)."""
    _world_now().allreduce_sum(buffer, what)
    return buffer


def all_reduce_mean(tree):
    """The mean over the ranks of every array in `tree` (same structure back).
    All leaves travel in one flat buffer: one Allreduce per call."""
    arrays, treedef = _arrays(tree)
    if not arrays:
        return tree
    dtype = np.result_type(*arrays)
    dtype = dtype if np.issubdtype(dtype, np.inexact) else np.dtype(np.float64)
    buffer = all_reduce_sum_(_pack(arrays, dtype), "all_reduce_mean")
    buffer /= size()
    means = [m if a.ndim else m[()] for m, a in zip(_unpack(buffer, arrays), arrays)]
    return pytree.unflatten(treedef, means)


def broadcast(tree, root: int = 0):
    """`root`'s values of every array in `tree`, on every rank, bit for bit.
    All ranks pass the same structure of the same shapes and dtypes."""
    world = _world_now()
    arrays, treedef = _arrays(tree)
    layout = [(a.shape, a.dtype.str) for a in arrays]
    root_layout = world.broadcast_object(layout, root, "broadcast")
    if layout != root_layout:
        raise DistributedError(f"broadcast: rank {world.rank} holds arrays {layout}, root "
                               f"{root} holds {root_layout}: every rank must pass the same "
                               "structure, shapes and dtypes")
    raw = [np.ascontiguousarray(a).view(np.uint8).reshape(-1) for a in arrays]
    buffer = _pack(raw, np.uint8)
    world.broadcast_bytes(buffer, root, "broadcast")
    out, offset = [], 0
    for a, r in zip(arrays, raw):
        value = buffer[offset:offset + r.size].view(a.dtype).reshape(a.shape).copy()  # aligned
        out.append(value if a.ndim else value[()])
        offset += r.size
    return pytree.unflatten(treedef, out)


def broadcast_variables(variables, root: int = 0) -> None:
    """Assign `root`'s values to these Variables on every rank (Horovod's
    `broadcast_variables`): call it once before training."""
    variables = list(variables)
    for var, value in zip(variables, broadcast([v.numpy() for v in variables], root)):
        var.assign(value)


def broadcast_object(value, root: int = 0):
    """Any picklable Python value from `root`."""
    return _world_now().broadcast_object(value, root, "broadcast_object")


def all_gather_object(value) -> list:
    """Every rank's picklable `value`, in rank order."""
    return _world_now().gather_object(value, "all_gather_object")


def barrier(what: str = "barrier") -> None:
    """Wait until every rank gets here."""
    _world_now().barrier(what)


def compile_once(function, *args, leading: bool | None = None):
    """Call a `tracejit.function` on every rank so a new signature compiles once
    per cluster: the leading rank (rank 0 unless said) calls it and waits for
    its kernel to land in the disk cache, the others wait at a barrier and
    then load it from there. Collective: every rank calls it."""
    leading = rank() == 0 if leading is None else leading
    if leading:
        out = function(*args)
        getattr(function, "wait", lambda: None)()
    barrier("compile_once (waiting for the leading rank's compile)")
    return out if leading else function(*args)


# ---------------------------------------------------------------- optimizer

class DistributedOptimizer:
    """Horovod's wrapper: `apply_gradients` averages the gradients over the
    ranks (one Allreduce of one flat buffer), then applies the wrapped
    optimizer's update, the same on every rank. Everything else is the
    wrapped optimizer's.

    `apply_gradients(pairs, num_samples=n)` weights each rank's gradient by
    its sample count (a mean over an uneven shard), so the step equals the
    one-process step over the whole batch. Every rank calls it each step with
    gradients for the same variables (a rank without rows passes zeros)."""

    def __init__(self, optimizer):
        from .nn import optimizers

        self.__dict__["optimizer"] = optimizers.get(optimizer)
        self.__dict__["_synced"] = False

    def __getattr__(self, name):
        return getattr(self.__dict__["optimizer"], name)

    def __setattr__(self, name, value):
        setattr(self.optimizer, name, value)

    def apply_gradients(self, grads_and_vars, num_samples=None):
        pairs = [(g, v) for g, v in grads_and_vars if g is not None]
        if any(_is_traced(g) for g, _ in pairs):
            raise DistributedError(
                "DistributedOptimizer.apply_gradients all-reduces across processes, which "
                "cannot happen inside a compiled function: return the gradients from the "
                "@tracejit.function and call apply_gradients outside it")
        grads = self.reduce_gradients([g for g, _ in pairs], num_samples)
        var_list = [v for _, v in pairs]
        if not self._synced:  # slots and step count from rank 0, once
            self.optimizer.build(var_list)
            broadcast_variables(self.optimizer.variables)
            self.__dict__["_synced"] = True
        return self.optimizer.apply_gradients(zip(grads, var_list))

    @staticmethod
    def reduce_gradients(grads: list, num_samples=None) -> list:
        """The mean of `grads` over the ranks (weighted by `num_samples`)."""
        if num_samples is None:
            return all_reduce_mean(list(grads))
        arrays = [np.asarray(g) for g in grads]
        dtype = np.result_type(*arrays, np.float64)
        buffer = _pack([a * num_samples for a in arrays] + [np.array([num_samples])], dtype)
        all_reduce_sum_(buffer, "DistributedOptimizer.apply_gradients")
        total = buffer[-1]
        if total <= 0:
            raise DistributedError("DistributedOptimizer.apply_gradients: num_samples add up "
                                   f"to {total} over the ranks")
        buffer /= total
        return _unpack(buffer[:-1], arrays)


def _is_traced(value) -> bool:
    from .trace.tracer import Tracer

    return isinstance(value, Tracer)
