"""Tests of tracejit.backend.cache: digest-named module files, Numba's disk cache, corrupt files."""

import hashlib
import json
import linecache
import os
import re
import stat
import subprocess
import sys
import textwrap
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
from numba.core.errors import TypingError

from tracejit.backend import cache, compiler, numba_cache

SOURCE = textwrap.dedent(
    """\
    import numpy as np
    from numba import njit

    @njit(cache=_CACHE)
    def twice(x):
        out = np.empty_like(x)
        for i in range(x.shape[0]):
            out[i] = 2.0 * x[i]
        return out
    """
)

# A kernel calling another cached kernel: the callee's cache is read while typing the caller.
NESTED_SOURCE = textwrap.dedent(
    """\
    import numpy as np
    from numba import njit

    @njit(cache=_CACHE)
    def double(v):
        return 2.0 * v

    @njit(cache=_CACHE)
    def twice(x):
        out = np.empty_like(x)
        for i in range(x.shape[0]):
            out[i] = double(x[i])
        return out
    """
)

CHILD = textwrap.dedent(
    """\
    import json, sys
    import numpy as np
    from tracejit.backend import cache
    kernel = cache.load_module(sys.argv[1], "twice", use_disk=True).function("twice")
    x = np.arange(4.0)
    print(json.dumps([cache.compile_for(kernel, (x,)), kernel(x).tolist()]))
    """
)

X = np.arange(5.0)


@pytest.fixture
def cdir(tmp_path, monkeypatch):
    # An earlier test's background compile may still be running: it must not
    # write into this test's directory once the environment points there.
    for thread in threading.enumerate():
        if thread.name == compiler.BACKGROUND_COMPILE:
            thread.join()
    path = tmp_path / "cache"
    monkeypatch.setenv("TRACEJIT_CACHE_DIR", str(path))
    monkeypatch.delenv("TRACEJIT_DISABLE_CACHE", raising=False)
    yield path
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name], "temp file left behind"


def new_process_view(monkeypatch):
    """Forget loaded modules, so the next load_module executes the file afresh (like a new
    process would) and its new dispatchers read Numba's disk cache."""
    monkeypatch.setattr(cache, "_loaded", {})


def load_twice(source=SOURCE, use_disk=True):
    module = cache.load_module(source, "twice", use_disk=use_disk)
    return module, module.function("twice")


def numba_files(module, kernel=None):
    kernel = kernel or module.function("twice")
    return sorted(Path(kernel.stats.cache_path).glob(f"{module.path.stem}.*.nb[ic]"))


def check_result(kernel):
    np.testing.assert_array_equal(kernel(X), 2.0 * X)


def test_cache_dir_location_and_mode(tmp_path, monkeypatch):
    explicit = tmp_path / "explicit"
    explicit.mkdir(mode=0o755)
    os.chmod(explicit, 0o755)  # an existing directory of ours is made private
    monkeypatch.setenv("TRACEJIT_CACHE_DIR", str(explicit))
    assert cache.cache_dir() == explicit
    assert stat.S_IMODE(explicit.stat().st_mode) == 0o700

    monkeypatch.delenv("TRACEJIT_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_dir() == tmp_path / "xdg" / "tracejit"
    assert stat.S_IMODE((tmp_path / "xdg" / "tracejit").stat().st_mode) == 0o700

    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.cache_dir() == tmp_path / "home" / ".cache" / "tracejit"


@pytest.mark.parametrize(
    ("value", "enabled"),
    [(None, True), ("0", True), ("", True), ("1", False), ("true", False), ("YES", False)],
)
def test_disk_cache_enabled(monkeypatch, value, enabled):
    if value is None:
        monkeypatch.delenv("TRACEJIT_DISABLE_CACHE", raising=False)
    else:
        monkeypatch.setenv("TRACEJIT_DISABLE_CACHE", value)
    assert cache.disk_cache_enabled() is enabled


def test_module_file_is_named_by_digest(cdir):
    module = cache.load_module(SOURCE, "my kernel!", use_disk=True)
    path = module.path
    assert path.parent == cdir and stat.S_IMODE(cdir.stat().st_mode) == 0o700
    assert re.fullmatch(r"my_kernel__[0-9a-f]{20}\.py", path.name)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    header, rest = path.read_bytes().split(b"\n", 1)
    assert rest == SOURCE.encode()
    assert header == b"# tracejit-digest: " + hashlib.sha256(rest).hexdigest().encode()

    # Numba's own cache is off; every kernel has the verified one, in the cache directory.
    assert module.module._CACHE is False
    assert isinstance(module.function("twice")._cache, numba_cache.VerifiedCache)
    assert Path(module.function("twice").stats.cache_path) == cdir / "__pycache__"
    assert sys.modules[f"tracejit_kernels.{path.stem}"] is module.module
    assert linecache.getline(str(path), 6) == "def twice(x):\n"  # line 1 is the header
    with pytest.raises(AttributeError, match="np"):
        module.function("np")  # a module global, not a kernel

    assert cache.load_module(SOURCE, "my kernel!", use_disk=True) is module
    other = cache.load_module(SOURCE.replace("2.0", "3.0"), "my kernel!", use_disk=True)
    assert other.path != path and other.path.parent == cdir


def test_compiled_then_memory_then_disk_in_a_new_process(cdir):
    module, kernel = load_twice()
    assert cache.compile_for(kernel, (X,)) == "compiled"
    assert cache.compile_for(kernel, (X,)) == "memory"
    check_result(kernel)
    assert numba_files(module)

    child = subprocess.run(
        [sys.executable, "-c", CHILD, SOURCE],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert json.loads(child.stdout) == ["disk", [0.0, 2.0, 4.0, 6.0]]


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_module_file_is_rewritten(cdir, monkeypatch, damage):
    module, kernel = load_twice()
    cache.compile_for(kernel, (X,))
    good = module.path.read_bytes()
    bad = good[: len(good) // 2] if damage == "truncate" else os.urandom(len(good))
    module.path.write_bytes(bad)

    new_process_view(monkeypatch)
    with pytest.warns(cache.TracejitCacheWarning, match=re.escape(module.path.name)):
        module, kernel = load_twice()
    assert module.path.read_bytes() == good
    # The machine code was cached for exactly this source (sealed, stamped with its
    # hash), so it is still the right code.
    assert cache.compile_for(kernel, (X,)) == "disk"
    check_result(kernel)


@pytest.mark.parametrize("suffix", ["nbi", "nbc"])
@pytest.mark.parametrize("damage", ["truncate", "garbage", "flip"])
def test_corrupt_numba_file_is_ignored_and_recompiled(cdir, monkeypatch, suffix, damage):
    # Numba itself unpickles such files (numba 0.68.1: UnpicklingError, EOFError, or a
    # crash for a flipped byte in the machine code); tracejit checks their seal first.
    module, kernel = load_twice()
    cache.compile_for(kernel, (X,))
    (target,) = [p for p in numba_files(module) if p.suffix == f".{suffix}"]
    good = bytearray(target.read_bytes())
    if damage == "flip":
        good[len(good) // 2] ^= 0x40
        target.write_bytes(bytes(good))
    else:
        target.write_bytes(good[:100] if damage == "truncate" else os.urandom(len(good)))

    new_process_view(monkeypatch)
    module, kernel = load_twice()
    with pytest.warns(cache.TracejitCacheWarning, match="seal does not match"):
        assert cache.compile_for(kernel, (X,)) == "compiled"
    check_result(kernel)

    new_process_view(monkeypatch)  # the files written by the recompile are good
    module, kernel = load_twice()
    assert cache.compile_for(kernel, (X,)) == "disk"
    check_result(kernel)


def test_corrupt_cache_of_a_called_kernel_is_recovered(cdir, monkeypatch):
    module, kernel = load_twice(NESTED_SOURCE)
    cache.compile_for(kernel, (X,))
    for path in numba_files(module):
        if ".twice-" in path.name:
            path.unlink()  # so the caller is compiled and types its callee
        else:
            path.write_bytes(b"garbage")

    new_process_view(monkeypatch)
    module, kernel = load_twice(NESTED_SOURCE)
    with pytest.warns(cache.TracejitCacheWarning, match="seal does not match"):
        assert cache.compile_for(kernel, (X,)) == "compiled"
    check_result(kernel)


def test_typing_errors_propagate_without_warning(cdir):
    _, kernel = load_twice(SOURCE.replace("2.0 * x[i]", '2.0 * x[i] + "a"'))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(TypingError):
            cache.compile_for(kernel, (X,))


@pytest.mark.parametrize("how", ["environment", "argument"])
def test_no_disk_cache_leaves_cache_dir_empty(cdir, monkeypatch, how):
    if how == "environment":
        monkeypatch.setenv("TRACEJIT_DISABLE_CACHE", "1")
    # Distinct sources: the private directory is shared by the whole test process.
    module, kernel = load_twice(f"{SOURCE}# {how}\n", use_disk=how == "environment")
    assert module.module._CACHE is False
    assert module.path.is_file() and module.path.parent != cdir
    assert cache.compile_for(kernel, (X,)) == "compiled"
    check_result(kernel)
    assert not cdir.exists() or not any(cdir.iterdir())
    assert not list(module.path.parent.rglob("*.nb[ic]"))


def test_failed_write_keeps_the_kernel_in_memory(cdir, monkeypatch):
    real_replace = os.replace

    def fail(src, dst):
        if str(dst).startswith(str(cdir)):
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", fail)
    with pytest.warns(cache.TracejitCacheWarning, match="No space left"):
        module, kernel = load_twice()
    assert module.path.parent != cdir and module.module._CACHE is False
    assert cache.compile_for(kernel, (X,)) == "compiled"
    check_result(kernel)
    assert sorted(p.name for p in cdir.iterdir()) == [".tracejit-key"]


def test_clear_cache_removes_only_tracejit_files(cdir):
    module, kernel = load_twice()
    cache.compile_for(kernel, (X,))
    (cdir / "notes.py").write_text("# not ours\n")
    (cdir / f".{module.path.name}.abc123.tmp").write_text("interrupted write")

    cache.clear_cache()
    assert sorted(p.name for p in cdir.iterdir()) == [".tracejit-key", "notes.py"]
    module, kernel = load_twice()  # written and executed afresh
    assert module.path.is_file()
    assert cache.compile_for(kernel, (X,)) == "compiled"
