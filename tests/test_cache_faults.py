"""Crash tests of the kernel cache, in child processes (tests/fault_harness.py):
damaged, truncated, swapped and planted files of every kind, unsafe directories,
read-only and full storage, kill -9 during compiles and writes, concurrent cold
processes. Every child must exit normally with NumPy's results, and nothing
planted in the cache may run. (Many more trials: benchmarks/crash_trials.py.)
"""

import os
import random
import shutil
import stat
import subprocess

import fault_harness as h
import pytest


@pytest.fixture(scope="module")
def warm(tmp_path_factory):
    """A cache directory holding every kernel of the child, compiled once."""
    path = tmp_path_factory.mktemp("warm") / "cache"
    h.warm_cache(path)
    return path


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "planted-code-ran"
    yield path
    assert not path.exists(), "code planted in the cache directory was executed"


def run_all(cases: dict) -> dict:
    """Start every child at once (two cores), then check each: name -> result."""
    started = {name: h.start_child(h.child_env(*args, **kwargs))
               for name, (args, kwargs) in cases.items()}
    results, failures = {}, []
    for name, proc in started.items():
        try:
            results[name] = h.finish(proc)
        except AssertionError as err:
            failures.append(f"{name}: {err}")
    assert not failures, "\n".join(failures)
    return results


def test_warm_cache_serves_every_kernel_from_disk(warm, tmp_path):
    result = h.run_child(h.copy_cache(warm, tmp_path / "cache"))
    assert result["compiles"] == 0 and result["disk_hits"] == 3
    assert not h.cache_warnings(result)


def test_damaged_files_of_every_kind_are_rebuilt(warm, tmp_path):
    dirs = {}
    for suffix in ("py", "nbi", "nbc", "o", "key", "compiled", "links"):
        cache = dirs[suffix] = h.copy_cache(warm, tmp_path / suffix / "cache")
        rng = random.Random(suffix)
        if suffix == "key":
            targets = [cache / ".tracejit-key"]
        elif suffix in ("py", "o", "compiled", "links"):  # "o": nests' translations
            targets = sorted(cache.glob(f"*.{suffix}"))
        else:  # every kernel's and every runtime helper's
            targets = h.numba_files(cache, suffix)
        for k, path in enumerate(targets):
            h.damage(path, ["flip", "truncate", "empty", "garbage"][k % 4], rng)
    first = run_all({suffix: ((cache,), {}) for suffix, cache in dirs.items()})
    for suffix, result in first.items():
        # A bad key is replaced; a bad note is advice not taken (the driver compiles).
        assert h.cache_warnings(result) or suffix in ("key", "compiled", "links"), suffix
        # A rewritten module file is the source its machine code was cached for; with
        # a bad `.links`, or bad Numba files where every nest is a translation, only the
        # driver compiles (counted as disk: its nests were).
        assert result["compiles"] > 0 or suffix in ("py", "links", "nbi", "nbc"), suffix
    for suffix, result in run_all({s: ((c,), {}) for s, c in dirs.items()}).items():
        assert result["compiles"] == 0 and not h.cache_warnings(result), suffix  # repaired


@pytest.mark.parametrize("suffix", ["nbc", "nbi", "o"])
def test_swapped_files_of_two_kernels_with_one_signature_are_rejected(warm, tmp_path, suffix):
    cache = h.copy_cache(warm, tmp_path / "cache")
    first, second = h.kernel_files(cache, "a", suffix), h.kernel_files(cache, "b", suffix)
    assert first and len(first) == len(second) and set(first).isdisjoint(second)
    for one, other in zip(first, second):
        h.swap(one, other)
    result = h.run_child(cache)  # checks a's and b's numbers
    warned = any("seal does not match" in w for w in h.cache_warnings(result))
    # A driver reads only the data file its record names (linking.py): another one is
    # not opened. The nests here are translations (.o), so swapping the Numba files
    # recompiles just the short drivers, which counts as disk.
    assert warned or suffix == "nbc"
    assert result["compiles"] == (2 if suffix == "o" else 0)


def test_planted_pickles_and_bytecode_never_run(warm, tmp_path, marker):
    cache = h.copy_cache(warm, tmp_path / "cache")
    planted = h.plant(cache, marker)
    assert len(planted) >= 8
    result = h.run_child(cache)
    assert result["compiles"] == 3 and h.cache_warnings(result)


def _unsafe(kind: str, tmp_path, warm, marker):
    """A copy of the warm cache (with planted files) made unsafe in one way."""
    cache = h.copy_cache(warm, tmp_path / kind / "cache")
    h.plant(cache, marker)
    pycache = cache / "__pycache__"
    if kind == "world-writable":
        os.chmod(cache, 0o777)
    elif kind == "group-writable":
        os.chmod(cache, 0o770)
    elif kind == "pycache-group-writable":
        os.chmod(pycache, 0o775)
    elif kind == "symlinked-dir":
        link = tmp_path / kind / "link"
        link.symlink_to(cache)
        return link, {}
    elif kind == "symlinked-pycache":
        elsewhere = tmp_path / kind / "elsewhere"
        shutil.move(pycache, elsewhere)
        pycache.symlink_to(elsewhere)
    elif kind == "foreign-owner":
        if os.geteuid() == 0:
            os.chown(cache, 4321, 4321)
        else:
            return cache, {"fault": "foreign-uid"}
    elif kind == "parent-world-writable":
        os.chmod(cache.parent, 0o777)
    elif kind == "not-a-directory":
        shutil.rmtree(cache)
        cache.write_text("a file where the cache directory should be\n")
    return cache, {}


UNSAFE = ["world-writable", "group-writable", "pycache-group-writable", "symlinked-dir",
          "symlinked-pycache", "foreign-owner", "parent-world-writable", "not-a-directory"]


def test_unsafe_directories_are_not_used(warm, tmp_path, marker):
    dirs, foreign = {}, {}
    for kind in UNSAFE:
        cache, fault = _unsafe(kind, tmp_path, warm, marker)
        (foreign if fault else dirs)[kind] = cache
    cases = {"sync": ((dirs["world-writable"],), {"light": True, "TJ_DIRS": os.pathsep.join(
        map(str, dirs.values()))}),
        "background": ((dirs["world-writable"],), {"light": True, "compile_mode": "background",
                                                   "TJ_DIRS": dirs["group-writable"]})}
    if foreign:
        cases["foreign"] = ((foreign["foreign-owner"], "foreign-uid"), {"light": True})
    started = {name: h.start_child(h.child_env(*args, **kwargs))
               for name, (args, kwargs) in cases.items()}
    results = {name: h.finish_all(proc) for name, proc in started.items()}
    checked = list(zip(dirs, results["sync"])) + [("background", results["background"][0])]
    checked += [("foreign", r) for r in results.get("foreign", [])]
    assert len(checked) == len(UNSAFE) + 1
    for kind, result in checked:
        warnings = h.cache_warnings(result)
        assert len(warnings) == 1 and "not using the tracejit cache" in warnings[0], (
            kind, warnings)
        assert result["disk_hits"] == 0, kind


def test_read_only_storage_serves_what_it_holds(warm, tmp_path):
    cases = {}
    for mode in ("sync", "background"):
        cases[f"warm-{mode}"] = ((h.copy_cache(warm, tmp_path / mode / "warm"), "erofs"),
                                 {"compile_mode": mode})
        cases[f"empty-{mode}"] = ((tmp_path / mode / "empty", "erofs"),
                                  {"compile_mode": mode, "light": True})
    results = run_all(cases)
    for name, result in results.items():
        assert len(h.cache_warnings(result)) == 1, (name, result["warnings"])
        if name.startswith("warm"):
            assert result["disk_hits"] == 3 and result["compiles"] == 0, name
        else:
            assert result["compiles"] == 3, name


def test_a_full_directory_that_holds_kernels_says_why_it_is_not_written(warm, tmp_path):
    # Another process (a cold one's worker, started at import) may have made the key
    # first: the directory is then used read-only, and the warning says why.
    result = h.run_child(h.copy_cache(warm, tmp_path / "cache"), "enospc")
    (warning,) = h.cache_warnings(result)
    assert "No space left" in warning and "read-only" in warning
    assert result["disk_hits"] == 3 and result["compiles"] == 0


def test_full_storage_keeps_kernels_in_memory(tmp_path):
    results = run_all({mode: ((tmp_path / mode, "enospc"), {"compile_mode": mode, "light": True})
                       for mode in ("sync", "background")})
    for mode, result in results.items():
        (warning,) = h.cache_warnings(result)
        assert "No space left" in warning or "not using" in warning, mode
        assert result["compiles"] == 3, mode


def _mount_tmpfs(path, size):
    path.mkdir(parents=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                           str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")


def test_a_really_full_and_a_really_read_only_file_system(warm, tmp_path):
    full, ro = tmp_path / "full", tmp_path / "ro"
    _mount_tmpfs(full, "48k")  # room for the module files, not for the machine code
    try:
        _mount_tmpfs(ro, "4m")
        try:
            h.copy_cache(warm, ro / "cache")
            subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
            results = run_all({"full": ((full / "cache",), {}), "ro": ((ro / "cache",), {})})
        finally:
            subprocess.run(["umount", str(ro)])
    finally:
        subprocess.run(["umount", str(full)])
    assert results["ro"]["disk_hits"] == 3 and len(h.cache_warnings(results["ro"])) == 1
    assert results["full"]["compiles"] == 3
    assert any("No space left" in w for w in h.cache_warnings(results["full"]))


def test_kill_9_during_compiles_and_writes(tmp_path):
    counts = h.kill_trials(tmp_path / "cache", rounds=2, procs=2, seed=1, max_delay=2.5)
    assert counts["verified"] == 2 and counts["killed"] >= 1, counts


def test_concurrent_cold_processes(tmp_path):
    cache = tmp_path / "cache"
    run_all({f"p{k}": ((cache,), {"light": True}) for k in range(3)})
    after = h.run_child(cache, light=True)
    assert after["compiles"] == 0 and after["disk_hits"] == 3
    assert not h.cache_warnings(after)
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
