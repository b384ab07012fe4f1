"""Tracing on several threads at once: a trace belongs to its thread, and the
process-wide rebindings (np.array & co., SciPy's entry points) are installed
while any trace is open and never read a module still being imported.
(The long stress mode: benchmarks/stress_threads.py.)"""

import importlib.abc
import importlib.util
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import tracejit
from tracejit.numpy import build as numpy_build
from tracejit.numpy import scipy as scipy_api
from tracejit.trace import tracer as trace

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import stress_threads  # noqa: E402


@pytest.mark.parametrize("mode", list(stress_threads.MODES))
def test_concurrent_cold_calls_return_arrays_equal_to_serial(mode):
    """Before the builder stack was per thread, a cold call made while another
    thread traced recorded into that trace and returned one of its tracers."""
    checked = stress_threads.stress(rounds=2, threads=6, modes=(mode,), batches=(2, 3))
    assert checked[mode] == 2 * 6 * 2 * len(stress_threads.PROGRAMS)


def test_a_call_on_another_thread_during_a_trace_is_not_traced_into_it():
    inside, release = threading.Event(), threading.Event()
    other = {}

    def outer(x):
        inside.set()
        release.wait(10)
        return x * 2.0

    def run_other():
        inside.wait(10)
        other["value"] = tracejit.grad(lambda y: np.sum(y ** 2))(np.ones(3))
        release.set()

    thread = threading.Thread(target=run_other)
    thread.start()
    value = tracejit.function(outer)(np.ones(2))
    thread.join()
    assert isinstance(other["value"], np.ndarray)
    np.testing.assert_array_equal(other["value"], 2.0 * np.ones(3))
    np.testing.assert_array_equal(value, 2.0 * np.ones(2))
    assert not trace.tracing_thread


# ------------------------------------------- a registered module half imported

FAKE = "tracejit_test_half_imported_linalg"
FAKE_SOURCE = '''
import numpy as np
import tracejit_test_gate as gate
gate.started.set()
gate.release.wait(10)  # the rest of the module is not defined yet meanwhile


def solve_triangular(a, b, lower=False, **kwargs):
    return np.linalg.solve(a, b)


def cholesky(a, lower=False, **kwargs):
    return np.linalg.cholesky(a)
'''


class _Gate:
    """A module the fake module's code waits on (importable by name)."""

    __name__ = "tracejit_test_gate"

    def __init__(self):
        self.started, self.release = threading.Event(), threading.Event()


class _SourceFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        return importlib.util.spec_from_loader(name, self) if name == FAKE else None

    def exec_module(self, module):
        exec(compile(FAKE_SOURCE, f"<{FAKE}>", "exec"), module.__dict__)


@pytest.fixture
def half_imported(monkeypatch):
    """A module registered like scipy.linalg, whose import another thread holds
    half done until `gate.release` is set."""
    gate = _Gate()
    monkeypatch.setitem(sys.modules, "tracejit_test_gate", gate)
    monkeypatch.setitem(scipy_api._REGISTER, FAKE, scipy_api.register_linalg)
    finder = _SourceFinder()
    sys.meta_path.insert(0, finder)
    importer = threading.Thread(target=importlib.import_module, args=(FAKE,))
    importer.start()
    assert gate.started.wait(10)
    yield gate
    gate.release.set()
    importer.join()
    sys.meta_path.remove(finder)
    sys.modules.pop(FAKE, None)
    scipy_api._registered.discard(FAKE)
    numpy_build.REBINDINGS.entries[:] = [
        e for e in numpy_build.REBINDINGS.entries
        if getattr(e[0], "__module__", getattr(e[0], "__name__", None)) != FAKE]


def test_tracing_while_a_registered_module_is_half_imported(half_imported):
    """The registration once read the half-imported module and the trace died with
    "partially initialized module ... has no attribute 'solve_triangular'"."""
    assert sys.modules[FAKE].__spec__._initializing  # in sys.modules, half run
    grad = tracejit.grad(lambda x: np.sum(np.sin(x)))(np.ones(3))
    np.testing.assert_allclose(grad, np.cos(np.ones(3)))
    assert FAKE not in scipy_api._registered

    half_imported.release.set()  # the import completes: the next trace registers it
    module = importlib.import_module(FAKE)
    assert not module.__spec__._initializing
    a = np.array([[2.0, 0.0], [1.0, 3.0]])

    def solve(b):
        return np.sum(module.solve_triangular(a, b, lower=True))

    expected = np.linalg.solve(a.T, np.ones(2))  # d/db sum(A^-1 b) = A^-T 1
    np.testing.assert_allclose(tracejit.grad(solve)(np.ones(2)), expected)
    assert FAKE in scipy_api._registered


# ------------------------------------------ Numba's modules imported during a trace

NUMBA_IMPORTED_DURING_A_TRACE = """
import sys
import numpy as np
import numba
import tracejit
from tracejit.trace import tracer

assert "numba.np.arraymath" not in sys.modules
with tracer.Builder("held open"):  # Numba registers its overloads on the stand-ins
    import numba.np.arraymath, numba.np.arrayobj  # noqa: E401,F401
x = np.arange(6.0).reshape(2, 3)
grad = tracejit.grad(lambda a: np.sum(a.T.reshape(-1) ** 2))(x)
assert np.array_equal(grad, 2 * x), grad
print(numba.njit(lambda a: np.asarray(a).sum() + np.ascontiguousarray(a.T).sum())(x))
"""


def test_numba_imported_during_a_trace_still_types_numpy(tmp_path):
    """Numba's overloads of np.asarray & co., registered while a trace held them
    rebound, serve the originals too (kernels and the user's own Numba code)."""
    env = dict(os.environ, TRACEJIT_COMPILE="sync", TRACEJIT_CACHE_DIR=str(tmp_path))
    env.pop("TRACEJIT_DISABLE_JIT", None)
    done = subprocess.run([sys.executable, "-c", NUMBA_IMPORTED_DURING_A_TRACE], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert float(done.stdout) == 30.0
