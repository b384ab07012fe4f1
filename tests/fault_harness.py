"""Crash trials against the kernel cache: child processes that compile and load
kernels while files in their cache directory are damaged, swapped, planted,
made unsafe, read-only or full, or while they are killed mid-compile.

Used by tests/test_cache_faults.py (a few trials) and by
benchmarks/crash_trials.py (many). Every trial asserts: the child exits
normally (no crash), every result equals NumPy's, and no code planted in the
cache ran (a planted pickle or bytecode file would create a marker file).
"""

from __future__ import annotations

import json
import os
import pickle
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

# Two kernels with the same signature (swapping their machine code would give wrong
# numbers), a gradient kernel, and the runtime helpers they call.
CHILD = r'''
import json, os, sys, warnings
import numpy as np

mode = os.environ.get("TJ_FAULT", "")
if mode in ("enospc", "erofs"):  # storage that refuses every write in the cache directory
    import errno, tempfile
    code = errno.ENOSPC if mode == "enospc" else errno.EROFS
    root = os.path.realpath(os.environ["TRACEJIT_CACHE_DIR"])
    real_mkstemp, real_replace, real_link = tempfile.mkstemp, os.replace, os.link

    def inside(path):
        return os.path.realpath(str(path)).startswith(root)

    def refuse(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    def mkstemp(*args, dir=None, **kwargs):
        return refuse() if dir is not None and inside(dir) else real_mkstemp(
            *args, dir=dir, **kwargs)

    tempfile.mkstemp = mkstemp
    os.replace = lambda a, b, **k: refuse() if inside(b) else real_replace(a, b, **k)
    os.link = lambda a, b, **k: refuse() if inside(b) else real_link(a, b, **k)
if mode == "kill-mid-write":  # die inside the n-th file write, after half the bytes
    from tracejit.backend import store
    real_write = store.atomic_write
    countdown = [int(os.environ.get("TJ_KILL_AT", "1"))]

    def dying_write(path, data):
        countdown[0] -= 1
        if countdown[0] == 0:
            leftover = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.killed.tmp")
            with open(leftover, "wb") as f:
                f.write(data[: len(data) // 2])
            os.kill(os.getpid(), 9)
        real_write(path, data)

    store.atomic_write = dying_write
if mode == "foreign-uid":  # the directory seems to belong to someone else
    real_uid = os.geteuid()
    os.geteuid = lambda: real_uid + 4321

import tracejit

light = os.environ.get("TJ_PROGRAM") == "light"  # no runtime helpers: compiles faster
f = (lambda x: x) if light else np.tanh

def a(x):
    return f(x) * 2.0 + 1.0

def b(x):
    return f(x) * 3.0 - 1.0

def loss(w, x):
    return np.mean((w * x - 1.0) ** 2)

def run():
    x = np.linspace(-2.0, 2.0, 7)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fa, fb = tracejit.function(a), tracejit.function(b)
        vg = tracejit.value_and_grad(loss)
        out = {"a": fa(x).tolist(), "b": fb(x).tolist()}
        value, grad = vg(0.5, x)
        out["loss"], out["grad"] = float(value), float(grad)
        for fn in (fa, fb, vg):
            fn.wait()
        out["a2"], out["b2"] = fa(x).tolist(), fb(x).tolist()
    stats = [vars(fn.stats) for fn in (fa, fb, vg)]
    out["compiles"] = sum(s["compiles"] for s in stats)
    out["disk_hits"] = sum(s["disk_hits"] for s in stats)
    out["warnings"] = [f"{type(w.message).__name__}: {w.message}" for w in caught]
    return out

# Several cache directories may be tried in turn by one process (each is checked on
# its own; kernels kept in memory are compiled once).
for directory in os.environ.get("TJ_DIRS", os.environ["TRACEJIT_CACHE_DIR"]).split(os.pathsep):
    os.environ["TRACEJIT_CACHE_DIR"] = directory
    print("RESULT " + json.dumps(run()), flush=True)
'''


def expected(light: bool = False) -> dict:
    x = np.linspace(-2.0, 2.0, 7)
    f = x if light else np.tanh(x)
    a, b = f * 2.0 + 1.0, f * 3.0 - 1.0
    return {"a": a, "b": b, "a2": a, "b2": b, "loss": np.mean((0.5 * x - 1.0) ** 2),
            "grad": np.mean(2.0 * (0.5 * x - 1.0) * x)}


def child_env(cache_dir: Path, fault: str = "", compile_mode: str = "sync", light=False,
              **extra) -> dict:
    # The runtime helpers' machine code in the (first) directory tried: damaged, copied
    # and judged unsafe with it (one warning for both).
    runtime_dir = str(extra.get("TJ_DIRS", cache_dir)).split(os.pathsep)[0]
    env = {**os.environ, "TRACEJIT_CACHE_DIR": str(cache_dir), "TRACEJIT_COMPILE": compile_mode,
           "TRACEJIT_RUNTIME_CACHE_DIR": runtime_dir,
           "TJ_FAULT": fault, "PYTHONPATH": str(ROOT), "TJ_PROGRAM": "light" if light else ""}
    for name in ("TRACEJIT_DISABLE_JIT", "TRACEJIT_DISABLE_CACHE", "NUMBA_CACHE_DIR"):
        env.pop(name, None)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def start_child(env: dict) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", CHILD], env=env, cwd=str(ROOT),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.tj_light = env.get("TJ_PROGRAM") == "light"
    return proc


def finish(proc: subprocess.Popen, timeout: float = 300) -> dict:
    """The child's result; raises AssertionError on a crash or a wrong number."""
    return finish_all(proc, timeout)[-1]


def finish_all(proc: subprocess.Popen, timeout: float = 300) -> list[dict]:
    """The child's results, one per cache directory it tried."""
    stdout, stderr = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"child crashed (exit {proc.returncode}):\n{stderr[-3000:]}")
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    if not lines:
        raise AssertionError(f"child printed no result:\n{stdout[-2000:]}\n{stderr[-3000:]}")
    results = [json.loads(line[len("RESULT "):]) for line in lines]
    for result in results:
        for name, want in expected(getattr(proc, "tj_light", False)).items():
            np.testing.assert_allclose(result[name], want, rtol=1e-12, atol=1e-12,
                                       err_msg=f"wrong result for {name}")
    return results


def run_child(cache_dir: Path, fault: str = "", **kwargs) -> dict:
    return finish(start_child(child_env(cache_dir, fault, **kwargs)))


def cache_warnings(result: dict) -> list[str]:
    return [w for w in result["warnings"] if w.startswith("TracejitCacheWarning")]


# --------------------------------------------------------------- cache files

def numba_files(cache_dir: Path, suffix: str) -> list[Path]:
    return sorted((cache_dir / "__pycache__").glob(f"*.{suffix}"))


def kernel_files(cache_dir: Path, kernel: str, suffix: str) -> list[Path]:
    """The module (.py), Numba (.nbi/.nbc) or object (.o) files of kernel `a` or `b`: the
    kernel's own module, or the machine code of its driver and of the loop nests it calls."""
    (module,) = sorted(cache_dir.glob(f"{kernel}_*.py"))
    if suffix == "py":
        return [module]
    nests = re.findall(r"^from \w+\.(nest_\w+) import", module.read_text(), re.M)
    if suffix == "o":  # the nests' translations, named by function and argument types
        return sorted(p for stem in nests for p in cache_dir.glob(f"{stem.rsplit('_', 1)[0]}_*.o"))
    return sorted(p for stem in [module.stem, *nests]
                  for p in (cache_dir / "__pycache__").glob(f"{stem}.*.{suffix}"))


def damage(path: Path, how: str, rng: random.Random) -> None:
    data = bytearray(path.read_bytes())
    if how == "flip":
        for _ in range(3):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif how == "truncate":
        data = data[: rng.randrange(len(data))]
    elif how == "empty":
        data = bytearray()
    elif how == "garbage":
        data = bytearray(rng.randbytes(len(data)))
    else:
        raise ValueError(how)
    path.write_bytes(bytes(data))


def swap(first: Path, second: Path) -> None:
    tmp = first.with_name(first.name + ".swap")
    os.replace(first, tmp)
    os.replace(second, first)
    os.replace(tmp, second)


class _Marker:
    """Unpickling this creates the marker file: it must never happen."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def malicious_pickle(marker: Path) -> bytes:
    return pickle.dumps(_Marker(marker))


def plant(cache_dir: Path, marker: Path) -> list[Path]:
    """Replace every index/data/object file with a pickle that would create `marker`, some
    bare, some behind a header that looks like tracejit's (wrong key), and put a
    bytecode file that would do the same next to every module."""
    import hashlib

    from tracejit.backend.store import _MAGIC

    payload = malicious_pickle(marker)
    planted = []
    files = numba_files(cache_dir, "nbi") + numba_files(cache_dir, "nbc")
    for k, path in enumerate(files + sorted(cache_dir.glob("*.o"))):
        header = _MAGIC + hashlib.sha256(payload).digest() if k % 2 else b""
        path.write_bytes(header + payload)
        planted.append(path)
    code = compile(f"open({str(marker)!r}, 'w')", "<planted>", "exec")
    for module in cache_dir.glob("*.py"):
        pyc = cache_dir / "__pycache__" / f"{module.stem}.cpython-{sys.version_info[0]}" \
            f"{sys.version_info[1]}.pyc"
        import importlib._bootstrap_external as ext
        info = module.stat()
        pyc.write_bytes(ext._code_to_timestamp_pyc(code, info.st_mtime, info.st_size))
        planted.append(pyc)
    return planted


def warm_cache(cache_dir: Path) -> dict:
    """A cache directory holding every kernel of the child (compiled once)."""
    result = run_child(cache_dir)
    assert result["compiles"] > 0, result
    return result


def copy_cache(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, symlinks=True)
    return target


# --------------------------------------------------------------- kill trials

def kill_trials(cache_dir: Path, rounds: int, procs: int, seed: int = 0,
                max_delay: float = 4.0) -> dict:
    """`rounds` times: start `procs` cold children on one directory and kill -9 each
    at a random moment (some mid-write, by the kill-mid-write fault); then one child
    must load or rebuild everything correctly. Returns counts."""
    rng = random.Random(seed)
    killed = survived = 0
    for _ in range(rounds):
        children = []
        for k in range(procs):
            fault = "kill-mid-write" if k % 2 else ""
            env = child_env(cache_dir, fault, TJ_KILL_AT=rng.randint(1, 12))
            children.append((start_child(env), rng.uniform(0.2, max_delay)))
        start = time.monotonic()
        for proc, delay in sorted(children, key=lambda c: c[1]):
            time.sleep(max(0.0, start + delay - time.monotonic()))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.communicate()
            killed += proc.returncode == -signal.SIGKILL
        finish(start_child(child_env(cache_dir)))
        survived += 1
        if rng.random() < 0.5:  # sometimes start the next round from scratch
            shutil.rmtree(cache_dir / "__pycache__", ignore_errors=True)
    return {"rounds": rounds, "killed": killed, "verified": survived}
