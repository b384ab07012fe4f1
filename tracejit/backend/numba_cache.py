"""Numba's on-disk machine-code cache, with every file sealed by the store.

Numba's own cache unpickles its index (.nbi) and data (.nbc) files as it
finds them: one flipped byte crashes the process, and the data file of one
kernel copied over another's (same signature) runs the wrong code. Here the
dispatchers of tracejit's modules get a `VerifiedCache` instead: the same
file layout and freshness rules, but
- every file is sealed (store.py) and checked before it is unpickled;
- a data file also records the index key it was written for (signature,
  target, bytecode), so an entry written by a racing process for another
  signature is never taken;
- the files live in the store's own `__pycache__` (a fixed locator, whatever
  NUMBA_CACHE_DIR or NUMBA_CACHE_LOCATOR_CLASSES say);
- a file that fails a check, or whose code cannot be rebuilt, is a warning
  and a recompile; a failed write stops writes to the store (store.py).
Numba's extension point for this is `Cache` with its `IndexDataCacheFile`;
the subclasses below replace only how files are found, read and written.
"""

from __future__ import annotations

import hashlib
import inspect
import itertools
import linecache
import os
import pickle
import stat
import sys
from pathlib import Path

from numba.core import caching
from numba.core.dispatcher import Dispatcher
from numba.core.runtime import rtsys
from numba.core.serialize import dumps

from .store import Store, warn_once

CACHE_SUBDIR = "__pycache__"


def runtime_symbols() -> None:
    """Register Numba's runtime functions (NRT_MemInfo_alloc_aligned, ...) that machine
    code read back calls: code naming a symbol not yet there aborts the process inside
    LLVM. Numba's own load refreshes the whole target context for this (its registries,
    SciPy's BLAS: ~0.5 s per process). Never under a lock of ours: a compile holds
    Numba's lock while it takes them."""
    from numba.core.compiler_lock import global_compiler_lock
    from numba.core.registry import cpu_target

    if getattr(rtsys, "_init", False):
        return  # set up: no need to wait for a compile that holds Numba's lock
    context = cpu_target.target_context  # made under the lock by Numba itself: not held
    with global_compiler_lock:  # here (its property's lock and this one: a deadlock)
        rtsys.initialize(context)


def install(module, store: Store, requested_only: bool = True) -> None:
    """Give the Numba dispatchers defined in `module` a verified disk cache in `store`:
    those whose decorator asks for one (`cache=_CACHE`, which generated modules set
    False so that Numba's own cache stays off), or all with `requested_only=False`.
    A kernel driver, which calls its nests by symbol, is cached only through
    linking.py: its machine code names the nests as the compiling process knew them."""
    for obj in list(vars(module).values()):
        if (isinstance(obj, Dispatcher) and obj.py_func.__module__ == module.__name__
                and not isinstance(obj._cache, VerifiedCache)
                and (not requested_only or _asks_for_cache(obj.py_func))):
            obj._cache = VerifiedCache(obj.py_func, store)


def _asks_for_cache(py_func) -> bool:
    code = py_func.__code__  # its first line is its first decorator's
    lines = linecache.getlines(code.co_filename)[code.co_firstlineno - 1:]
    return "cache=_CACHE" in "".join(itertools.takewhile(
        lambda line: not line.lstrip().startswith("def "), lines))


class _Locator(caching._SourceFileBackedLocatorMixin, caching._CacheLocator):
    """Cache files of any tracejit function go to the store's own subdirectory; the
    source stamp is Numba's (a hash of the module file's contents)."""

    def __init__(self, py_func, py_file: str, store: Store):
        self._py_file = py_file
        self._lineno = py_func.__code__.co_firstlineno
        self._path = store.path / CACHE_SUBDIR

    def get_cache_path(self) -> str:
        return str(self._path)

    def ensure_cache_path(self) -> None:
        self._path.mkdir(mode=0o700, exist_ok=True)
        info = self._path.lstat()
        if not stat.S_ISDIR(info.st_mode) or (os.name == "posix"
                                              and info.st_uid != os.geteuid()):
            raise PermissionError(f"{self._path} is not a private directory")


class _Impl(caching.CompileResultCacheImpl):
    def __init__(self, py_func, locator: _Locator):  # no search through Numba's locators
        self._lineno = py_func.__code__.co_firstlineno
        self._locator = locator
        modname = Path(inspect.getfile(py_func)).stem
        qualname = getattr(py_func, "__qualname__", py_func.__name__)
        self._filename_base = self.get_filename_base(f"{modname}.{qualname}",
                                                     getattr(sys, "abiflags", ""))


class _SealedFiles(caching.IndexDataCacheFile):
    """Numba's index and data files, sealed; a data file holds (index key, payload)."""

    def __init__(self, cache_path: str, filename_base: str, source_stamp, store: Store):
        super().__init__(cache_path, filename_base, source_stamp)
        self._store = store
        # Machine code is loaded only if its file digests to this (None: any); the
        # digest of the last file saved. linking.py binds a driver's record to it.
        self.expected_digest: str | None = None
        self.saved_digest: str | None = None

    def load(self, key):
        name = self._load_index().get(key)
        if name is None:
            return None
        path = self._data_path(name)
        if self.expected_digest is not None and self._digest(path) != self.expected_digest:
            return None  # written by another compile than the one vouched for
        entry = self._read(path)
        if entry is None:
            return None
        if not (isinstance(entry, tuple) and len(entry) == 2 and entry[0] == key):
            self._reject(self._data_path(name), "it holds machine code for another signature")
            return None
        return entry[1]

    def save(self, key, data) -> None:
        overloads = self._load_index()
        name = overloads.get(key)
        if name is None:
            taken = set(overloads.values())
            name = next(n for n in map(self._data_name, itertools.count(1)) if n not in taken)
            overloads[key] = name
            self._save_index(overloads)
        self.saved_digest = self._write(self._data_path(name), (key, data))

    def _load_index(self) -> dict:
        entry = self._read(self._index_path)
        if entry is None:
            return {}
        if not (isinstance(entry, tuple) and len(entry) == 3 and isinstance(entry[2], dict)):
            self._reject(self._index_path, "it is not an index")
            return {}
        version, stamp, overloads = entry
        # Another Numba, or an older module file: stale, overwritten by the next save.
        return overloads if (version, stamp) == (self._version, self._source_stamp) else {}

    def _save_index(self, overloads: dict) -> None:
        self._write(self._index_path, (self._version, self._source_stamp, overloads))

    def _read(self, path: str):
        """The object in the sealed file at `path`; None if missing or rejected."""
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as err:
            self._reject(path, f"it cannot be read ({err.strerror or err})")
            return None
        payload = self._store.unseal(os.path.basename(path), data)
        if payload is None:
            self._reject(path, "its seal does not match (truncated, corrupt, copied from "
                               "another entry, or not written by tracejit)")
            return None
        try:
            return pickle.loads(payload)
        except Exception as err:  # sealed by us, yet unreadable here (another environment)
            self._reject(path, f"it cannot be unpickled ({err!r})")
            return None

    def _write(self, path: str, obj) -> str:
        """Seal and write `obj`; the digest of the file written."""
        sealed = self._store.seal(os.path.basename(path), dumps(obj))
        self._store.write(Path(path), sealed)
        return hashlib.sha256(sealed).hexdigest()

    @staticmethod
    def _digest(path: str) -> str | None:
        try:
            return hashlib.sha256(Path(path).read_bytes()).hexdigest()
        except OSError:
            return None

    def _reject(self, path: str, why: str) -> None:
        warn_once(("rejected", path), f"ignoring the tracejit cache file {path}: {why}; "
                                      "the kernel is compiled again")


class VerifiedCache(caching.FunctionCache):
    """Numba's per-function cache over sealed files in a checked store."""

    def __init__(self, py_func, store: Store, save_only: bool = False):
        # (Numba's __init__ would pick its own locator.) save_only: never load, so
        # a kernel driver's code is read back only once
        # linking.load_recorded_callees vouches for it.
        self._save_only = save_only
        self._name = repr(py_func)
        self._py_func = py_func
        locator = _Locator(py_func, inspect.getfile(py_func), store)
        self._impl = _Impl(py_func, locator)
        self._cache_path = locator.get_cache_path()
        self._cache_file = _SealedFiles(self._cache_path, self._impl.filename_base,
                                        locator.get_source_stamp(), store)
        self._store = store
        self.enable()

    def load_overload(self, sig, target_context):
        if self._save_only:
            return None
        try:
            # Not Numba's refresh of the whole target context: the runtime's symbols
            # (compiles refresh for themselves).
            runtime_symbols()
            with self._guard_against_spurious_io_errors():
                return self._load_overload(sig, target_context)
        except Exception as err:  # verified, but its code does not rebuild here
            warn_once(("rebuild", self._cache_path, self._name),
                      f"cached machine code for {self._name} could not be loaded ({err!r}); "
                      "compiling it again")
            return None

    def save_overload(self, sig, data) -> None:
        if not self._store.writable:
            return
        try:
            super().save_overload(sig, data)
        except OSError as err:
            self._store.stop_writing(err)
