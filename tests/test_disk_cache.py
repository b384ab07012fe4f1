"""The kernel disk cache seen from the API: a new process loads the kernel
instead of compiling it, and a damaged cache file is rebuilt with a warning."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import json, warnings
    import numpy as np
    import tracejit

    @tracejit.function
    def predict(x, W):
        return np.tanh(x @ W).sum(axis=1)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = predict(np.ones((4, 3)), np.full((3, 2), 0.5))
    s = predict.stats
    print(json.dumps({"out": out.tolist(), "traces": s.traces, "compiles": s.compiles,
                      "disk_hits": s.disk_hits,
                      "warnings": [type(w.message).__name__ for w in caught]}))
""")


def run_in_new_process(cache_dir) -> dict:
    env = {**os.environ, "TRACEJIT_CACHE_DIR": str(cache_dir), "TRACEJIT_COMPILE": "sync"}
    env.pop("TRACEJIT_DISABLE_JIT", None)
    env.pop("TRACEJIT_DISABLE_CACHE", None)
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("disk-cache")


@pytest.fixture(scope="module")
def first_run(cache_dir):
    return run_in_new_process(cache_dir)


EXPECTED = [2 * float(__import__("numpy").tanh(1.5))] * 4


def test_first_process_compiles(first_run, cache_dir):
    assert first_run["compiles"] == 1 and first_run["disk_hits"] == 0
    assert first_run["out"] == pytest.approx(EXPECTED)
    assert os.stat(cache_dir).st_mode & 0o777 == 0o700
    assert [p for p in os.listdir(cache_dir) if p.endswith(".py")]


def test_second_process_loads_from_disk(first_run, cache_dir):
    second = run_in_new_process(cache_dir)
    assert second["traces"] == 1  # tracing is cheap and always redone
    assert second["compiles"] == 0 and second["disk_hits"] == 1
    assert second["out"] == pytest.approx(EXPECTED)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_damaged_module_file_is_rebuilt_with_a_warning(first_run, cache_dir, damage):
    (module,) = [cache_dir / p for p in os.listdir(cache_dir)
                 if p.startswith("predict") and p.endswith(".py")]
    text = module.read_bytes()
    module.write_bytes(text[: len(text) // 2] if damage == "truncate" else b"\x00garbage(")
    rebuilt = run_in_new_process(cache_dir)
    assert "TracejitCacheWarning" in rebuilt["warnings"]
    assert rebuilt["out"] == pytest.approx(EXPECTED)
    assert module.read_bytes() == text  # rewritten whole, not left half-written
    assert not [p for p in os.listdir(cache_dir) if p.endswith(".tmp")]


HELPER_USER = textwrap.dedent("""
    import json
    import numpy as np
    import tracejit
    from tracejit.backend import runtime

    f = tracejit.function(lambda x: np.exp(x) * 2.0)  # exp is a runtime helper
    out = f(np.ones(3))
    print(json.dumps({"exp": [sum(runtime.exp.stats.cache_hits.values()),
                              sum(runtime.exp.stats.cache_misses.values())],
                      "right": bool(np.allclose(out, 2.0 * np.exp(1.0)))}))
""")


def test_runtime_helpers_are_compiled_once_for_every_cache_directory(tmp_path):
    """The runtime helpers (a third of a small kernel's first compile) are the same for
    every program: cached once in their own directory, then read back by a process
    whose kernel cache directory is new."""
    runtime_dir = tmp_path / "runtime"

    def run(cache_dir):
        env = {**os.environ, "TRACEJIT_CACHE_DIR": str(cache_dir), "TRACEJIT_COMPILE": "sync",
               "TRACEJIT_RUNTIME_CACHE_DIR": str(runtime_dir)}
        env.pop("TRACEJIT_DISABLE_JIT", None)
        proc = subprocess.run([sys.executable, "-c", HELPER_USER], env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    first, second = run(tmp_path / "one"), run(tmp_path / "two")
    assert first == {"exp": [0, 1], "right": True}
    assert second == {"exp": [1, 0], "right": True}  # read back: nothing compiled
    assert list((runtime_dir / "__pycache__").glob("runtime.exp-*.nbc"))
    for kernels in (tmp_path / "one", tmp_path / "two"):
        assert not list((kernels / "__pycache__").glob("runtime.*"))
        assert list(kernels.glob("*.py"))  # the kernels' own files stay there


WARNING_USER = textwrap.dedent("""
    import json, warnings
    import numpy as np
    import tracejit

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = tracejit.function(lambda x: np.exp(x) * 2.0)(np.ones(3))
    print(json.dumps({"warnings": [str(w.message) for w in caught],
                      "right": bool(np.allclose(out, 2.0 * np.exp(1.0)))}))
""")


def test_an_unusable_default_runtime_directory_is_replaced_by_the_kernels_quietly(tmp_path):
    """A read-only home (a cluster node) with TRACEJIT_CACHE_DIR on scratch: the runtime
    helpers go to the kernels' directory, as before they had one of their own, and
    nothing is said; a directory the user named and that cannot be used is reported."""
    blocked = tmp_path / "home-cache"
    blocked.write_text("a file where the cache home should be\n")

    def run(**extra):
        env = {**os.environ, "TRACEJIT_CACHE_DIR": str(tmp_path / "kernels"),
               "TRACEJIT_COMPILE": "sync", "XDG_CACHE_HOME": str(blocked), **extra}
        env.pop("TRACEJIT_DISABLE_JIT", None)
        if "TRACEJIT_RUNTIME_CACHE_DIR" not in extra:  # the default one, under XDG's
            env.pop("TRACEJIT_RUNTIME_CACHE_DIR", None)
        proc = subprocess.run([sys.executable, "-c", WARNING_USER], env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    assert run() == {"warnings": [], "right": True}
    assert list((tmp_path / "kernels" / "__pycache__").glob("runtime.exp-*.nbc"))
    named = run(TRACEJIT_RUNTIME_CACHE_DIR=str(blocked / "runtime"))
    assert named["right"] and len(named["warnings"]) == 1
    assert str(blocked / "runtime") in named["warnings"][0]
