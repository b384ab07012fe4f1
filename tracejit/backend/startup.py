"""What `import tracejit` does first: start the compile worker of a cold process.

A worker's start-up (a Python process importing Numba and readying its target) takes
0.5-0.9 s, and a cold process (its cache directory holds no kernel yet) will wait for
it at its first compile. Started at the top of `import tracejit`, it runs on another
core while this process imports NumPy, Numba and tracejit itself (0.3-0.4 s), instead
of after them. A warm process (kernels on disk) starts none here: most likely it
compiles nothing, and the worker's start-up slowed its loads.

This module imports the standard library only, so the worker starts before anything
heavy is imported. It also holds the environment's switches that decide whether a
worker is used at all, and where the cache directory is, for the same reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

TRUE_WORDS = {"1", "true", "yes"}
SIGNATURES_SUFFIX = ".compiled"  # a kernel's note of its compiled signatures (worker.py)

_started: list = []  # [(worker, perf_counter at its start)] until the worker module takes it


def jit_disabled() -> bool:
    """TRACEJIT_DISABLE_JIT=1: every call runs the interpreter."""
    return os.environ.get("TRACEJIT_DISABLE_JIT", "").lower() in TRUE_WORDS | {"on"}


def background_compile() -> bool:
    """Compile in the background - in the compile worker process, waited for by a
    thread - while calls run the interpreter, unless TRACEJIT_COMPILE=sync."""
    return os.environ.get("TRACEJIT_COMPILE", "background").lower() != "sync"


def worker_enabled() -> bool:
    """TRACEJIT_COMPILE_WORKER=0 compiles in-process (in a background thread)."""
    return os.environ.get("TRACEJIT_COMPILE_WORKER", "1").strip().lower() not in {
        "0", "no", "false"}


def disk_cache_enabled() -> bool:
    """False when the environment variable TRACEJIT_DISABLE_CACHE is 1/true/yes."""
    return os.environ.get("TRACEJIT_DISABLE_CACHE", "").strip().lower() not in TRUE_WORDS


def named_dir(variable: str) -> Path | None:
    explicit = os.environ.get(variable)
    return Path(explicit).expanduser() if explicit else None


def user_cache_dir() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    # The XDG spec says relative paths are invalid and must be ignored.
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "tracejit"


def configured_cache_dir() -> Path:
    """The directory the environment names (TRACEJIT_CACHE_DIR, else XDG's), as is."""
    return named_dir("TRACEJIT_CACHE_DIR") or user_cache_dir()


def holds_kernels(directory: Path) -> bool:
    """Has `directory` machine code of an earlier process (a kernel's note of its
    compiled signatures)? Names only: it is neither created nor checked here."""
    try:
        with os.scandir(directory) as entries:
            return any(entry.name.endswith(SIGNATURES_SUFFIX) for entry in entries)
    except OSError:
        return False


def start_worker_if_cold() -> None:
    """Start the compile worker now if this process will want one and its cache
    directory holds no kernel. The worker module adopts it (`take_started`); the cache
    directory's own checks come before its first request, as for any worker."""
    if (jit_disabled() or not background_compile() or not worker_enabled()
            or not disk_cache_enabled() or _started):
        return
    directory = configured_cache_dir()
    if holds_kernels(directory):
        return
    try:
        _started.append((spawn(str(directory)), time.perf_counter()))
    except OSError:  # the first compile starts one again, or compiles here
        pass


def take_started():
    """(worker, when it started) if `import tracejit` started one, once; else None."""
    return _started.pop() if _started else None


def spawn(directory: str) -> subprocess.Popen:
    """A compile worker process for the cache directory `directory`."""
    package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, TRACEJIT_CACHE_DIR=directory)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH"))
                                        if p)
    package = os.path.join(package_parent, "tracejit")
    child = subprocess.Popen([sys.executable, "-c", _BOOT, package],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True, env=env, bufsize=1)
    child.cache_dir = directory  # where it compiles to
    return child


# The worker needs the backend alone: a bare `tracejit` package spares it importing the
# tracer, the NumPy surface and the front end (a third of its start-up).
_BOOT = """
import time
booted = time.perf_counter()
import sys, types
package = types.ModuleType("tracejit")
package.__path__ = [sys.argv[1]]
sys.modules["tracejit"] = package
from tracejit.core.version import __version__
package.__version__ = __version__  # in every cache file's name: the parent's version
from tracejit.backend import worker
worker._serve(booted)
"""


__all__ = ["background_compile", "configured_cache_dir", "disk_cache_enabled",
           "holds_kernels", "jit_disabled", "spawn", "start_worker_if_cold",
           "take_started", "worker_enabled"]
