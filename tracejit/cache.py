"""Compile/cache stage: load generated kernel source as a real module and compile it.

Generated source is written to a file named by a digest of the source and of everything
the compiled code depends on (tracejit, Numba, NumPy and Python versions, the runtime
helpers). Numba's ``cache=True`` needs a real file, and Numba itself does not notice
changes in other modules, so our file name is the cache key. Files carry a digest header
so that truncated or garbage files are detected and rewritten instead of executed.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import importlib.util
import inspect
import linecache
import os
import re
import shutil
import stat
import sys
import tempfile
import threading
import traceback
import types
import warnings
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np
from numba.core import caching
from numba.core.dispatcher import Dispatcher

_PACKAGE = "tracejit_kernels"
_HEADER = "# tracejit-digest: "
_TRUE_WORDS = {"1", "true", "yes"}
# Our module files and the temporary files of interrupted writes (see _atomic_write).
_OWN_FILE = re.compile(r"^\w+_[0-9a-f]{10,20}\.py$", re.ASCII)
_OWN_TEMP = re.compile(r"^\.\w+_[0-9a-f]{10,20}\.py\..+\.tmp$", re.ASCII)

_lock = threading.RLock()  # one module file is executed once, even with compile threads
_loaded: dict[Path, KernelModule] = {}
_private_dir: Path | None = None


class TracejitCacheWarning(UserWarning):
    """A cache file was unusable (corrupt, unwritable, unsafe) and tracejit worked around it."""


@dataclass(frozen=True)
class KernelModule:
    """A generated module loaded from a real file (so tracebacks and pdb show its source)."""

    path: Path
    module: types.ModuleType

    def function(self, name: str) -> Dispatcher:
        """Return the Numba dispatcher called ``name`` defined in the module."""
        obj = getattr(self.module, name, None)
        if not isinstance(obj, Dispatcher):
            raise AttributeError(f"{self.path} defines no Numba kernel named {name!r}")
        return obj


def cache_dir() -> Path:
    """Return the private (0700) directory for cached kernel modules, creating it."""
    path = _configured_cache_dir()
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    _make_private(path)
    return path


def disk_cache_enabled() -> bool:
    """False when the environment variable TRACEJIT_DISABLE_CACHE is 1/true/yes."""
    return os.environ.get("TRACEJIT_DISABLE_CACHE", "").strip().lower() not in _TRUE_WORDS


def load_module(source: str, name_hint: str, *, use_disk: bool,
                stem: str | None = None) -> KernelModule:
    """Write ``source`` to a digest-named file and import it (once per process).

    With ``use_disk`` (and the disk cache not disabled by the environment) the file lives
    in :func:`cache_dir` and the module global ``_CACHE`` is True, so Numba caches the
    machine code next to it. Otherwise the file goes to a per-process temporary directory
    and ``_CACHE`` is False. A caller that names its modules by content itself (shared
    loop nests, imported by name from kernels) passes ``stem``, which must then include
    :func:`version_tag`.
    """
    use_disk = use_disk and disk_cache_enabled()
    stem = stem or f"{_sanitize(name_hint)}_{_digest(source)[:20]}"
    directory = cache_dir() if use_disk else _private_tmp_dir()
    path = directory / f"{stem}.py"
    with _lock:
        loaded = _loaded.get(path)
        if loaded is None:
            text = _ensure_file(path, source)
            # A distinct package keeps a private copy from replacing the disk-cached module
            # in sys.modules, where Numba looks up the globals of kernels it loads from disk.
            name = f"{package(use_disk)}.{stem}"
            loaded = _loaded[path] = KernelModule(path, _import(path, name, text, use_disk))
        return loaded


def package(use_disk: bool) -> str:
    """The package generated modules are imported under (kernels import their shared
    nests from it by name)."""
    return _PACKAGE if use_disk and disk_cache_enabled() else f"{_PACKAGE}_private"


def compile_for(kernel: Dispatcher, args: tuple) -> str:
    """Ensure ``kernel`` has machine code for the Numba types of ``args``.

    Returns where the code came from: "memory" (compiled earlier in this process),
    "disk" (Numba's on-disk cache) or "compiled". Corrupt Numba cache files are deleted
    with a :class:`TracejitCacheWarning` and the kernel is compiled afresh; typing and
    lowering errors propagate unchanged.
    """
    return compile_signature(kernel, tuple(numba.typeof(arg) for arg in args))


def compile_signature(kernel: Dispatcher, sig: tuple) -> str:
    """`compile_for` given the Numba argument types (a compile worker has no values)."""
    if sig in kernel.overloads:  # fast path without the lock: a compile may be running
        return "memory"
    with _lock:
        if sig in kernel.overloads:
            return "memory"
        failures: dict = {}
        while True:  # ends: each cache is purged, then disabled, then its error re-raised
            try:
                return _compile_counted(kernel, sig)
            except _CacheLoadError as err:
                _recover(err, failures)


def clear_cache() -> None:
    """Delete tracejit's module files, their Numba cache files and leftover temp files."""
    directory = _configured_cache_dir()
    if not directory.is_dir():
        return
    with _lock:
        for entry in directory.iterdir():
            if _OWN_FILE.match(entry.name):
                _remove_numba_files(entry)
                entry.unlink(missing_ok=True)
                entry.with_name(entry.name + ".compiled").unlink(missing_ok=True)
            elif _OWN_TEMP.match(entry.name):
                entry.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            (directory / "__pycache__").rmdir()  # only if nothing else lives there
        # Loading again must rewrite the files, so forget the modules that came from here.
        for path in [p for p in _loaded if p.parent == directory]:
            del _loaded[path]


# --- cache directory ------------------------------------------------------------------


def _configured_cache_dir() -> Path:
    explicit = os.environ.get("TRACEJIT_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    # The XDG spec says relative paths are invalid and must be ignored.
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "tracejit"


def _make_private(path: Path) -> None:
    # Files in this directory are executed: nobody else may be able to plant them.
    if os.name != "posix":
        return
    info = path.stat()
    if stat.S_IMODE(info.st_mode) == 0o700:
        return
    # Never chmod a shared sticky directory such as /tmp, even when we (root) own it.
    if info.st_uid == os.getuid() and not info.st_mode & stat.S_ISVTX:
        os.chmod(path, 0o700)
    elif info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        _warn(f"tracejit cache directory {path} is writable by other users")


def _private_tmp_dir() -> Path:
    global _private_dir
    with _lock:
        if _private_dir is None:
            _private_dir = Path(tempfile.mkdtemp(prefix="tracejit-"))
            atexit.register(_remove_private_dir, _private_dir, os.getpid())
        return _private_dir


def _remove_private_dir(path: Path, owner_pid: int) -> None:
    # A forked child inherits the atexit hook but must not delete its parent's files.
    if os.getpid() == owner_pid:
        shutil.rmtree(path, ignore_errors=True)


# --- module files ---------------------------------------------------------------------


def _sanitize(name_hint: str) -> str:
    name = re.sub(r"\W", "_", name_hint, flags=re.ASCII)[:40]
    return name if name[:1].isalpha() or name[:1] == "_" else f"k{name}"


def _digest(source: str) -> str:
    parts = (
        source,
        _tracejit_version(),
        numba.__version__,
        np.__version__,
        sys.version,
        _runtime_digest(),
    )
    hasher = hashlib.sha256()
    for part in parts:
        data = part.encode()
        hasher.update(len(data).to_bytes(8, "little"))  # length prefix: no ambiguous joins
        hasher.update(data)
    return hasher.hexdigest()


@functools.lru_cache(maxsize=1)
def version_tag() -> str:
    """A short digest of everything compiled code depends on besides its own source
    (tracejit, Numba, NumPy, Python, the runtime helpers)."""
    return _digest("")[:10]


def _tracejit_version() -> str:
    try:
        import tracejit
    except ImportError:
        return "dev"
    return str(getattr(tracejit, "__version__", "dev"))


@functools.lru_cache(maxsize=1)
def _runtime_digest() -> str:
    # Once per process: kernels run against the runtime helpers imported at startup.
    try:
        return hashlib.sha256(Path(__file__).with_name("runtime.py").read_bytes()).hexdigest()
    except FileNotFoundError:
        return ""


def _render(source: str) -> bytes:
    body = source.encode()
    return f"{_HEADER}{hashlib.sha256(body).hexdigest()}\n".encode() + body


def _ensure_file(path: Path, source: str) -> str:
    """Make ``path`` hold the rendered source; return the file's text."""
    expected = _render(source)
    try:
        current = path.read_bytes()
    except FileNotFoundError:
        current = None
    # An intact file is reused untouched: rewriting it would disturb concurrent readers and,
    # with Numba versions that stamp sources by mtime and size, invalidate Numba's cache.
    if current != expected:
        if current is not None:
            _warn(
                f"corrupt tracejit cache file {path} (digest header missing or wrong); rewriting it"
            )
            _remove_numba_files(path)
        _atomic_write(path, expected)
    return expected.decode()


def _atomic_write(path: Path, data: bytes) -> None:
    # mkstemp creates the file with mode 0600 in the target directory, so the final
    # os.replace is atomic: readers see the old file or the complete new one.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _import(path: Path, name: str, text: str, use_disk: bool) -> types.ModuleType:
    package_name = name.rpartition(".")[0]
    parent = sys.modules.get(package_name)
    if parent is None:
        parent = sys.modules[package_name] = types.ModuleType(package_name)
        parent.__path__ = []
    # mtime None: linecache keeps the lines even if the file is deleted later.
    linecache.cache[str(path)] = (len(text), None, text.splitlines(True), str(path))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    module._CACHE = use_disk  # read by the @njit(cache=_CACHE) decorators on execution
    # Numba's cache loader imports the module by name, also in a fresh process.
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    setattr(parent, name.rpartition(".")[2], module)
    return module


# --- Numba's cache files --------------------------------------------------------------


class _CacheLoadError(Exception):
    """Numba failed while reading its own cache files (raised from the original error)."""

    def __init__(self, cache: caching.Cache) -> None:
        super().__init__(cache)
        self.cache = cache


def _compile_counted(kernel: Dispatcher, sig: tuple) -> str:
    hits = kernel.stats.cache_hits[sig]
    try:
        kernel.compile(sig)
    except Exception as exc:
        bad_cache = _failed_numba_cache(exc)
        if bad_cache is not None:
            raise _CacheLoadError(bad_cache) from exc
        if sig in kernel.overloads:  # compiled, only saving to disk failed
            _warn(f"could not save the Numba cache for {_kernel_file(kernel)}: {exc!r}")
            return "compiled"
        raise
    # Dispatcher.compile counts a hit exactly when it took the code from disk.
    return "disk" if kernel.stats.cache_hits[sig] > hits else "compiled"


def _failed_numba_cache(exc: BaseException | None) -> caching.Cache | None:
    """The Numba cache whose loading raised ``exc`` (or an exception it chains), if any."""
    # The corrupt cache may belong to a kernel called by the one being compiled, so the
    # hit/miss counters of the latter cannot tell; the frames of the loader can.
    for _ in range(8):  # bounded: exception chains may be cyclic
        if exc is None:
            return None
        for frame, _ in traceback.walk_tb(exc.__traceback__):
            code = frame.f_code
            if code.co_filename == caching.__file__ and code.co_name == "_load_overload":
                return frame.f_locals.get("self")
        exc = exc.__cause__ or exc.__context__
    return None


def _recover(err: _CacheLoadError, failures: dict) -> None:
    cache = err.cache
    failures[cache] = count = failures.get(cache, 0) + 1
    if count == 1:
        py_file = Path(inspect.getfile(cache._py_func))
        _warn(
            f"unreadable Numba cache for {py_file} ({err.__cause__!r}); "
            "deleting it and compiling again"
        )
        _remove_numba_files(py_file, Path(cache.cache_path))
    elif count == 2:
        cache.disable()  # deleting the files did not help (permissions?): stop reading them
    else:
        raise err.__cause__ from None


def _kernel_file(kernel: Dispatcher) -> Path:
    return Path(inspect.getfile(kernel.py_func))


def _numba_cache_dirs(py_file: Path) -> list[Path]:
    dirs = [py_file.parent / "__pycache__"]
    if numba.config.CACHE_DIR:  # NUMBA_CACHE_DIR moves the files to a mirrored tree
        subpath = caching._CacheLocator.get_suitable_cache_subpath(str(py_file))
        dirs.append(Path(numba.config.CACHE_DIR) / subpath)
    return dirs


def _remove_numba_files(py_file: Path, *extra_dirs: Path) -> None:
    """Delete the Numba index/data files (and bytecode) belonging to ``py_file``."""
    # "<stem>.<qualname>-<line>.py311[.N].nbi|nbc", library caches add "<prefix>-" in
    # front, interrupted Numba writes leave ".tmp.<uid>" behind.
    pattern = re.compile(
        rf"^(?:[\w.]+-)?{re.escape(py_file.stem)}\..*\.(?:nbi|nbc|pyc)(?:\.tmp\.\w+)?$"
    )
    for directory in {*_numba_cache_dirs(py_file), *extra_dirs}:
        with contextlib.suppress(FileNotFoundError):
            for entry in directory.iterdir():
                if pattern.match(entry.name):
                    with contextlib.suppress(OSError):
                        entry.unlink()


def _warn(message: str) -> None:
    warnings.warn(message, TracejitCacheWarning, stacklevel=4)  # caller of the public API
