"""Shared fixtures: a private kernel cache, the IR verifier on, and interpreter / Numba modes."""

import pytest
from hypothesis import settings

# CI must be reproducible: the default profile draws the same examples every
# run. `pytest --hypothesis-profile=explore` draws fresh ones to hunt for bugs.
settings.register_profile("default", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile("default")


@pytest.fixture(autouse=True, scope="session")
def _private_cache_and_verifier(tmp_path_factory):
    """Kernels and the runtime helpers go to fresh cache directories, and every pass is
    verified."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRACEJIT_CACHE_DIR", str(tmp_path_factory.mktemp("tracejit-cache")))
        mp.setenv("TRACEJIT_RUNTIME_CACHE_DIR", str(tmp_path_factory.mktemp("tracejit-runtime")))
        mp.setenv("TRACEJIT_VERIFY", "1")
        yield


@pytest.fixture
def interpret(monkeypatch):
    """Kernels built in this test run through the NumPy reference interpreter."""
    monkeypatch.setenv("TRACEJIT_DISABLE_JIT", "1")


@pytest.fixture
def compiled(monkeypatch):
    """Kernels built in this test are compiled by Numba before the first call
    returns (no interpreter while a background compile runs)."""
    monkeypatch.delenv("TRACEJIT_DISABLE_JIT", raising=False)
    monkeypatch.setenv("TRACEJIT_COMPILE", "sync")


@pytest.fixture(params=["interpret", "compiled"])
def mode(request):
    """Run the test through the interpreter and through compiled kernels
    (the `interpret` and `compiled` fixtures above)."""
    request.getfixturevalue(request.param)
    return request.param


@pytest.fixture(scope="session")
def jax_x64():
    """JAX in float64 (the peer the tests compare with), or a skip when it is not installed."""
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    return jax
