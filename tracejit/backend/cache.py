"""Compile/cache stage: load generated kernel source as a real module and compile it.

Generated source is written to a file named by a digest of the source and of everything
the compiled code depends on (tracejit, Numba, NumPy and Python versions, the runtime
helpers). Numba's ``cache=True`` needs a real file, and Numba itself does not notice
changes in other modules, so our file name is the cache key.

Nothing is loaded from the cache directory without a check (store.py): a module file
is executed only if its bytes are exactly what this process would write (and from
those checked bytes, never re-read, never through a bytecode file); Numba's index and
machine-code files are sealed and checked before they are unpickled
(numba_cache.py). A file that fails is a warning and a rebuild. A directory that is
unsafe, read-only or full keeps kernels in memory instead, with one warning.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import importlib.util
import linecache
import os
import re
import shutil
import sys
import tempfile
import threading
import types
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np
from numba.core.dispatcher import Dispatcher

from ..core import forksafe
from ..core.errors import TracejitCacheWarning, warn
from ..core.version import __version__
from . import numba_cache, rebound, store
from .startup import configured_cache_dir, disk_cache_enabled, named_dir, user_cache_dir

__all__ = ["TracejitCacheWarning", "cache_dir", "clear_cache", "compile_for",
           "configured_cache_dir", "disk_cache_enabled", "load_module"]

_PACKAGE = "tracejit_kernels"
_HEADER = "# tracejit-digest: "
_FORMAT = "sealed-1"  # how files are written: part of every name, so old files are never read
# Our module files and the temporary files of interrupted writes (see store.atomic_write).
_OWN_FILE = re.compile(r"^\w+_[0-9a-f]{10,20}\.py$", re.ASCII)
_OBJECT_FILE = re.compile(r"^nest_[0-9a-f]{16}_[0-9a-f]{10}\.o$", re.ASCII)  # irgen.py's

_lock = threading.RLock()  # one module file is executed once, even with compile threads
forksafe.renew_after_fork(globals(), "_lock", threading.RLock)
_loaded: dict[Path, KernelModule] = {}
_private_dir: Path | None = None
_runtime_store: list = []  # the store the runtime helpers cache their code in, once set


@dataclass(frozen=True)
class KernelModule:
    """A generated module loaded from a real file (so tracebacks and pdb show its source)."""

    path: Path
    module: types.ModuleType
    written: bool = False  # this process wrote the file (removed again if nothing compiles)

    def function(self, name: str) -> Dispatcher:
        """Return the Numba dispatcher called ``name`` defined in the module."""
        obj = getattr(self.module, name, None)
        if not isinstance(obj, Dispatcher):
            raise AttributeError(f"{self.path} defines no Numba kernel named {name!r}")
        return obj


def cache_dir() -> Path:
    """The cache directory, created private (0700) if missing. Whether it is used is
    decided by its checks (see store.py): it may be unsafe, read-only or full."""
    path = configured_cache_dir()
    store.open_store(path)
    return path


def load_module(source: str, name_hint: str, *, use_disk: bool,
                stem: str | None = None) -> KernelModule:
    """Write ``source`` to a digest-named file and import it (once per process).

    With ``use_disk`` (and the disk cache neither disabled by the environment nor
    unusable) the file lives in the checked cache directory and its Numba dispatchers
    cache their machine code there, verified. Otherwise the module stays private to
    this process (a temporary directory, or memory alone) and nothing is cached. A
    caller that names its modules by content itself (shared loop nests, imported by
    name from kernels) passes ``stem``, which must then include :func:`version_tag`.
    The module's name is ``package(use_disk).stem`` either way: kernels import their
    nests by that name, whether the store took the files or not.
    """
    use_disk = use_disk and disk_cache_enabled()
    stem = stem or _stem(source, name_hint)
    name = f"{package(use_disk)}.{stem}"
    target = _disk_store() if use_disk else None
    if target is not None and not _runtime_store:  # before a module calls a helper
        install_runtime_cache()
    with _lock:
        if target is not None:
            loaded = _loaded.get(target.path / f"{stem}.py")
            if loaded is None:
                loaded = _load_from_store(target, stem, source, name)
            if loaded is not None:
                return loaded
        return _load_private(name, source)


def write_module(source: str, name_hint: str, *, stem: str | None = None) -> Path | None:
    """Put the file `load_module(source, name_hint, use_disk=True, stem=stem)` would
    import into the store, without importing it: where it is, or None if the store
    cannot take it. A compile worker reads it; this process imports it meanwhile."""
    target = _disk_store() if disk_cache_enabled() else None
    if target is None:
        return None
    path = target.path / f"{stem or _stem(source, name_hint)}.py"
    with _lock:
        if path in _loaded or _put(target, path, _render(source)) is not None:
            return path
    return None


def package(use_disk: bool) -> str:
    """The package generated modules are imported under (kernels import their shared
    nests from it by name). A distinct one for private modules keeps them from replacing
    disk-cached ones in sys.modules, where Numba looks up the globals of cached kernels."""
    return _PACKAGE if use_disk and disk_cache_enabled() else f"{_PACKAGE}_private"


def compile_for(kernel: Dispatcher, args: tuple) -> str:
    """Ensure ``kernel`` has machine code for the Numba types of ``args``.

    Returns where the code came from: "memory" (compiled earlier in this process),
    "disk" (the verified disk cache) or "compiled". Unusable cache files are ignored
    with a :class:`TracejitCacheWarning` (numba_cache.py); typing and lowering errors
    propagate unchanged, and the module of a kernel that never compiled is forgotten.
    """
    return compile_signature(kernel, tuple(numba.typeof(arg) for arg in args))


def compile_signature(kernel: Dispatcher, sig: tuple) -> str:
    """`compile_for` given the Numba argument types (a compile worker has no values)."""
    if sig in kernel.overloads:  # fast path without the lock: a compile may be running
        return "memory"
    with _lock:
        if sig in kernel.overloads:
            return "memory"
        hits = kernel.stats.cache_hits[sig]
        try:
            _compile_apart(kernel, sig)
        except Exception:
            _forget_if_unused(kernel)
            raise
        # Dispatcher.compile counts a hit exactly when it took the code from disk.
        return "disk" if kernel.stats.cache_hits[sig] > hits else "compiled"


def enable_disk_cache(kernel: Dispatcher, save_only: bool = False) -> bool:
    """Give a dispatcher the verified disk cache (kernel drivers have none unless
    linking.py can vouch for the functions their machine code calls)."""
    target = _disk_store() if disk_cache_enabled() else None
    if target is None:
        return False
    kernel._cache = numba_cache.VerifiedCache(kernel.py_func, target, save_only=save_only)
    return True


def store_writable() -> bool:
    """Whether new files can go to the cache directory now (it is usable, and neither
    read-only nor full): a compile worker is only worth asking then."""
    target = _disk_store() if disk_cache_enabled() else None
    return target is not None and target.writable


def runtime_cache_writable() -> bool:
    """Whether the runtime helpers' machine code can go to their disk cache now."""
    if not disk_cache_enabled():
        return False
    install_runtime_cache()
    target = _runtime_store[0]
    return target is not None and target.writable


def read_note(path: Path) -> str | None:
    """A small text file written by `write_note` beside the modules in the cache
    directory; None if missing, unusable, or failing its seal."""
    payload = read_sealed(path)
    return None if payload is None else payload.decode(errors="replace")


def write_note(path: Path, text: str) -> None:
    """Seal `text` into `path` in the cache directory (atomically; silently skipped when
    the directory cannot take it)."""
    write_sealed(path, text.encode())


def read_sealed(path: Path) -> bytes | None:
    """The payload of a file written by `write_sealed`; None if missing, unusable, or
    failing its seal."""
    path = Path(path)
    target = _disk_store()
    if target is None or path.parent != target.path:
        return None
    try:
        return target.unseal(path.name, path.read_bytes())
    except OSError:
        return None


def write_sealed(path: Path, payload: bytes) -> None:
    """Seal `payload` into `path` in the cache directory (atomically; silently skipped
    when the directory cannot take it)."""
    path = Path(path)
    target = _disk_store()
    if target is not None and path.parent == target.path:
        target.write(path, target.seal(path.name, payload))


def object_path(symbol: str) -> Path | None:
    """Where a loop nest's object code (irgen.py) is kept, or None without a disk cache."""
    target = _disk_store() if disk_cache_enabled() else None
    return None if target is None else target.path / f"{symbol}.o"


def _compile_apart(kernel: Dispatcher, sig: tuple) -> None:
    """Compile on a thread of its own. Numba keeps some exceptions it raised and caught
    while compiling (failed overload lookups), tracebacks included; on this thread their
    frames lead back to no caller, so nothing the caller holds (the user's arrays) is
    kept alive by them."""
    failure: list = []

    def run():
        try:
            rebound.type_alike()
            try:
                kernel.compile(sig)
            except numba.core.errors.TypingError:
                if not rebound.type_alike():  # Numba's NumPy overloads, registered
                    raise  # on stand-ins while this compile imported them
                kernel.compile(sig)
        except BaseException as err:  # re-raised in the caller
            failure.append(err)

    worker = threading.Thread(target=run, name="tracejit-compile", daemon=True)
    worker.start()
    worker.join()
    if failure:
        raise failure[0]


def clear_cache() -> None:
    """Delete tracejit's module files, their Numba cache files and leftover temp files
    from the cache directory. The runtime helpers' own directory, shared by every cache
    directory (`runtime_cache_dir`), is kept: its files depend on no program."""
    directory = configured_cache_dir()
    if not directory.is_dir():
        return
    with _lock:
        for entry in directory.iterdir():
            if (_OWN_FILE.match(entry.name) or _OBJECT_FILE.match(entry.name)
                    or store.is_temp_name(entry.name)):
                entry.unlink(missing_ok=True)
            if _OWN_FILE.match(entry.name):
                for note in (".compiled", ".links"):
                    entry.with_name(entry.name + note).unlink(missing_ok=True)
        numba_files = directory / numba_cache.CACHE_SUBDIR
        if numba_files.is_dir() and not numba_files.is_symlink():
            for entry in numba_files.iterdir():
                if entry.suffix in (".nbi", ".nbc") or store.is_temp_name(entry.name):
                    entry.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                numba_files.rmdir()  # only if nothing else lives there
        # Loading again must rewrite the files, so forget the modules that came from here.
        for path in [p for p in _loaded if p.parent == directory]:
            del _loaded[path]
    from . import worker

    worker.stop()  # it remembers the modules and machine code of the files removed


# --- cache directory ------------------------------------------------------------------


def runtime_cache_dir() -> Path:
    """Where the runtime helpers' machine code is cached: TRACEJIT_RUNTIME_CACHE_DIR,
    else `runtime` in the user's tracejit directory (XDG's), whatever TRACEJIT_CACHE_DIR
    says. The helpers are the same for every program, so their compile (about 0.8 s of
    a small kernel's first compile) is paid once per user and machine, not once per
    cache directory; a kernel embeds their code, so its own cache never depends on it."""
    return named_dir("TRACEJIT_RUNTIME_CACHE_DIR") or user_cache_dir() / "runtime"


def _runtime_store_now() -> store.Store | None:
    """The runtime helpers' store. The default one, when unusable (a read-only home on
    a cluster node), is replaced by the kernels' own without a word: only a directory
    the user named is worth a warning."""
    if named_dir("TRACEJIT_RUNTIME_CACHE_DIR"):
        return store.open_store(runtime_cache_dir())
    return store.open_store(runtime_cache_dir(), quiet=True) or _disk_store()


def _disk_store() -> store.Store | None:
    return store.open_store(configured_cache_dir())


def install_runtime_cache() -> None:
    """Give the runtime helpers their verified disk cache (once per process)."""
    from . import runtime

    with _lock:
        if _runtime_store:
            return
        target = _runtime_store_now()
        _runtime_store.append(target)
        if target is not None:
            numba_cache.install(runtime, target, requested_only=False)


def _private_tmp_dir() -> Path | None:
    global _private_dir
    with _lock:
        if _private_dir is None:
            try:
                _private_dir = Path(tempfile.mkdtemp(prefix="tracejit-"))
            except OSError:
                return None
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
        _FORMAT,
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
    (tracejit, Numba, NumPy, Python, the runtime helpers, the cache's file format)."""
    return _digest("")[:10]


def _tracejit_version() -> str:
    return __version__


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


def _stem(source: str, name_hint: str) -> str:
    return f"{_sanitize(name_hint)}_{_digest(source)[:20]}"


def _load_from_store(target: store.Store, stem: str, source: str,
                     name: str) -> KernelModule | None:
    """The module from the store's file, written first unless it already holds exactly
    these bytes; None if the store cannot take the file (read-only, full)."""
    path = target.path / f"{stem}.py"
    expected = _render(source)
    if _put(target, path, expected) is None:
        return None
    module = _import(path, name, expected.decode())
    numba_cache.install(module, target)
    written = path in _written_here  # now, or by write_module before
    _written_here.discard(path)
    loaded = _loaded[path] = KernelModule(path, module, written)
    return loaded


_written_here: set = set()  # module files this process wrote and has not loaded yet


def _put(target: store.Store, path: Path, expected: bytes) -> bool | None:
    """Make `path` hold `expected`: whether this call wrote it, None if it could not."""
    current = _read_if_present(path)
    if current == expected:  # reused untouched: rewriting would disturb concurrent readers
        return False
    if current is not None:
        warn(f"corrupt tracejit cache file {path} (not the source its name stands "
             "for); rewriting it", TracejitCacheWarning)
    if not target.write(path, expected):
        return None
    _written_here.add(path)
    return True


def _read_if_present(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError:
        return b""  # unreadable (a directory, no permission): replaced by a good file


def _load_private(name: str, source: str) -> KernelModule:
    """Module `name` private to this process: a file in a temporary directory (for
    tools that read source files), or, if even that cannot be written, memory alone."""
    directory = _private_tmp_dir()
    in_memory = Path(f"<tracejit {name}>")
    path = directory / f"{name}.py" if directory is not None else in_memory
    loaded = _loaded.get(path) or _loaded.get(in_memory)
    if loaded is None:
        text = _render(source)
        if directory is not None:
            try:
                store.atomic_write(path, text)
            except OSError:
                path = in_memory
        loaded = _loaded[path] = KernelModule(path, _import(path, name, text.decode()))
    return loaded


def _import(path: Path, name: str, text: str) -> types.ModuleType:
    """Execute the checked `text` as module `name` (never re-read from disk, never
    from a bytecode file someone could plant beside it)."""
    package_name = name.rpartition(".")[0]
    parent = sys.modules.get(package_name)
    if parent is None:
        parent = sys.modules[package_name] = types.ModuleType(package_name)
        parent.__path__ = []
    # mtime None: linecache keeps the lines even if the file is deleted later.
    linecache.cache[str(path)] = (len(text), None, text.splitlines(True), str(path))
    module = importlib.util.module_from_spec(
        importlib.util.spec_from_loader(name, loader=None, origin=str(path)))
    module.__file__ = str(path)
    # Read by the @njit(cache=_CACHE) decorators: Numba's own (unverified) cache stays
    # off; numba_cache.install gives the dispatchers the verified one.
    module._CACHE = False
    # Numba's cache loader imports the module by name, also in a fresh process.
    sys.modules[name] = module
    try:
        exec(compile(text, str(path), "exec", dont_inherit=True), module.__dict__)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    setattr(parent, name.rpartition(".")[2], module)
    return module


def _forget_if_unused(kernel: Dispatcher) -> None:
    """After a failed compile: the kernel's module and the nest modules it calls, when
    none of their kernels has machine code, are forgotten, and their files removed if
    this process wrote them (a failed call leaves nothing behind)."""
    module = sys.modules.get(kernel.py_func.__module__)
    names = {kernel.py_func.__module__}
    called = [getattr(v, "_tracejit_nest", v) for v in vars(module).values()]
    names |= {getattr(v, "dispatcher", v).py_func.__module__ for v in called
              if isinstance(getattr(v, "dispatcher", v), Dispatcher)}
    for path, loaded in list(_loaded.items()):
        if loaded.module.__name__ in names and not any(
                v.overloads for v in vars(loaded.module).values() if isinstance(v, Dispatcher)):
            _forget(path, loaded)


def _forget(path: Path, loaded: KernelModule) -> None:
    name = loaded.module.__name__
    del _loaded[path]
    sys.modules.pop(name, None)
    with contextlib.suppress(AttributeError, KeyError):
        delattr(sys.modules[name.rpartition(".")[0]], name.rpartition(".")[2])
    linecache.cache.pop(str(path), None)
    if loaded.written:
        with contextlib.suppress(OSError):
            path.unlink()
