"""Data-parallel training on MPI (tracejit.distributed, tracejit.distribution).

The MPI tests launch `mpiexec -n 2` on tests/distributed_job.py and compare
with one process training on the same global batches (float64). They are
skipped, saying why, without mpi4py and an `mpiexec` (`pip install -e
".[mpi]"`). The single-process tests run everywhere.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import tracejit
from tracejit import distributed, distribution, nn

JOB = Path(__file__).with_name("distributed_job.py")
ROOT = JOB.parents[1]


def _mpiexec() -> str | None:
    beside_python = Path(sys.executable).with_name("mpiexec")
    return str(beside_python) if beside_python.exists() else shutil.which("mpiexec")


def _mpi_missing() -> str | None:
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return 'mpi4py is not installed (pip install -e ".[mpi]")'
    if _mpiexec() is None:
        return "no mpiexec on PATH or beside the Python executable (pip install mpich)"
    return None


needs_mpi = pytest.mark.skipif(_mpi_missing() is not None, reason=str(_mpi_missing()))


def launch(mode: str, cache_dir, timeout: float = 240, **env) -> tuple[subprocess.CompletedProcess,
                                                                        float]:
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "TRACEJIT_CACHE_DIR": str(cache_dir),
                   **env}
    start = time.perf_counter()
    done = subprocess.run([_mpiexec(), "-n", "2", sys.executable, str(JOB), mode],
                          capture_output=True, text=True, timeout=timeout, env=environment)
    return done, time.perf_counter() - start


def result_of(done: subprocess.CompletedProcess) -> dict:
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert len(lines) == 1, done.stdout + done.stderr
    return json.loads(lines[0][len("RESULT "):])


# --------------------------------------------------------------- MPI, 2 ranks

@pytest.fixture(scope="module")
def compiled_run(tmp_path_factory):
    """37 rows, global batches of 10: shards 5/5, the last 4/3; a cold cache
    directory shared by both ranks."""
    done, _ = launch("train", tmp_path_factory.mktemp("cold_cache"))
    return result_of(done)


@pytest.fixture(scope="module")
def interpreted_run(tmp_path_factory):
    """41 rows: the last global batch has one row, so rank 1 gets none and rank
    0 a one-row shard; with validation data and `evaluate` (sharded too)."""
    done, _ = launch("train", tmp_path_factory.mktemp("cache"), TRACEJIT_DISABLE_JIT="1",
                     JOB_ROWS="41", JOB_VALIDATE="1")
    return result_of(done)


@needs_mpi
@pytest.mark.parametrize("run", ["compiled_run", "interpreted_run"])
def test_two_rank_fit_equals_one_process_fit(run, request):
    result = request.getfixturevalue(run)
    assert result["difference"] < 1e-12
    for name, values in result["reference"].items():
        np.testing.assert_allclose(result["history"][name], values, rtol=1e-12)
    if result["evaluated"] is not None:  # the sharded evaluate, validation included
        np.testing.assert_allclose(result["evaluated"], result["evaluated_alone"], rtol=1e-12)


@needs_mpi
@pytest.mark.parametrize("run", ["compiled_run", "interpreted_run"])
def test_gradient_tape_with_distributed_optimizer_equals_one_process(run, request):
    result = request.getfixturevalue(run)
    assert result["tape_weighted"] < 1e-12  # uneven shards, num_samples weights
    assert result["tape_mean"] < 1e-12  # even shards, Horovod's mean


@needs_mpi
def test_cold_shared_cache_compiles_each_kernel_once(compiled_run):
    for kind in ("gradient", "apply"):
        leader, other = (stats[kind] for stats in compiled_run["stats"])
        assert leader["compiles"] == 1 and other["compiles"] == 0, compiled_run["stats"]
        assert other["disk_hits"] == 1, compiled_run["stats"]


@needs_mpi
@pytest.mark.parametrize("mode, says", [("kill", "BAD TERMINATION"),
                                        ("raise", "rank 1 failed on purpose"),
                                        ("hang", "waited more than 2 s")])
def test_a_failed_rank_ends_the_job(mode, says, tmp_path):
    done, seconds = launch(mode, tmp_path, timeout=90, TRACEJIT_DISTRIBUTED_TIMEOUT="2",
                           TRACEJIT_DISABLE_JIT="1")
    assert done.returncode != 0
    assert seconds < 60
    assert says in done.stdout + done.stderr
    assert "not reached" not in done.stdout


# ----------------------------------------------------------- one process

def test_one_process_api_is_the_identity():
    assert (distributed.rank(), distributed.size()) == (0, 1)
    tree = {"w": np.arange(6.0).reshape(2, 3), "n": [np.int32(4)]}
    mean = distributed.all_reduce_mean(tree)
    np.testing.assert_array_equal(mean["w"], tree["w"])
    assert mean["n"][0] == 4.0
    same = distributed.broadcast(tree)
    np.testing.assert_array_equal(same["w"], tree["w"])
    assert same["n"][0].dtype == np.int32
    distributed.barrier()
    assert distribution.list_devices() == ["cpu:0"]


def test_fit_under_one_rank_data_parallel_is_the_plain_fit():
    nn.set_floatx("float64")
    try:
        x = np.random.default_rng(0).normal(size=(30, 4))
        y = x.sum(axis=1, keepdims=True)
        weights = []
        for strategy in (None, distribution.DataParallel()):
            nn.set_random_seed(3)
            model = nn.Sequential([nn.Input((4,)), nn.Dense(1)])
            model.compile(optimizer="sgd", loss="mse")
            with contextlib_scope(strategy):
                model.fit(x, y, batch_size=8, epochs=2, verbose=0)
            weights.append([v.numpy() for v in model.weights])
    finally:
        nn.set_floatx("float32")
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)
    assert distribution.distribution() is None


def contextlib_scope(strategy):
    import contextlib

    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def test_distributed_optimizer_in_one_process_is_the_optimizer():
    w1, w2 = tracejit.Variable(np.ones(3)), tracejit.Variable(np.ones(3))
    plain = nn.optimizers.Adam(0.1)
    wrapped = distributed.DistributedOptimizer(nn.optimizers.Adam(0.1))
    for _ in range(3):
        plain.apply_gradients([(np.array([1.0, -2.0, 3.0]), w1)])
        wrapped.apply_gradients([(np.array([1.0, -2.0, 3.0]), w2)], num_samples=7)
    np.testing.assert_array_equal(w1.numpy(), w2.numpy())
    assert wrapped.iterations.numpy() == 3  # the wrapped optimizer's attributes


def test_distributed_optimizer_refuses_to_run_inside_a_compiled_function():
    w = tracejit.Variable(np.ones(3))
    optimizer = distributed.DistributedOptimizer("sgd")

    @tracejit.function
    def step(x):
        with tracejit.GradientTape() as tape:
            loss = np.sum(w * x)
        optimizer.apply_gradients(zip(tape.gradient(loss, [w]), [w]))

    with pytest.raises(distributed.DistributedError, match="outside"):
        step(np.ones(3))


def test_launched_by_mpi_without_mpi4py_says_what_to_install(monkeypatch):
    monkeypatch.setattr(distributed, "_world", None)
    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # import mpi4py raises ImportError
    with pytest.raises(ImportError, match=r'pip install "tracejit\[mpi\]"'):
        distributed.initialize()
    monkeypatch.setenv("TRACEJIT_DISTRIBUTED", "off")
    assert distributed.initialize().size == 1
