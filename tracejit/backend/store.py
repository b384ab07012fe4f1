"""The cache directory as a checked store: nothing is read back without a check.

Before tracejit uses a cache directory it checks that the directory and its
subdirectories are really directories (not symbolic links) owned by this user
and writable by nobody else, and that no parent can be replaced by another
user. A directory that fails, or that cannot be created, is not used: tracejit
warns once and keeps kernels in memory. A read-only directory still serves
what it holds; new kernels stay in memory. A write that fails (a full disk)
switches the directory to that read-only mode, with one warning.

Every file read back is sealed: a header holding an HMAC-SHA256, under a
random key private to the directory, of the file's name and its contents. A
file that is truncated, corrupt, copied from another entry (two kernels'
machine code swapped) or planted without the key fails the check before it is
unpickled or executed. Files are written to a temporary name and renamed, so
readers in other processes see the old file or the whole new one.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import stat
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..core import forksafe
from ..core.errors import TracejitCacheWarning, warn

KEY_FILE = ".tracejit-key"
_MAGIC = b"tracejit-sealed-1\n"
_MAC_SIZE = hashlib.sha256().digest_size
_STALE_TEMP_SECONDS = 3600.0  # temp files of interrupted writes older than this are removed

_lock = threading.RLock()
forksafe.renew_after_fork(globals(), "_lock", threading.RLock)
_stores: dict[str, Store | None] = {}
_warned: set = set()


@dataclass
class Store:
    """A checked cache directory and the key that seals its files."""

    path: Path
    key: bytes = field(repr=False)
    writable: bool = True

    def seal(self, name: str, payload: bytes) -> bytes:
        return _MAGIC + self._mac(name, payload) + payload

    def unseal(self, name: str, data: bytes) -> bytes | None:
        """The payload of a sealed file called `name`, or None if the seal does not hold."""
        head = len(_MAGIC) + _MAC_SIZE
        if len(data) < head or not data.startswith(_MAGIC):
            return None
        mac, payload = data[len(_MAGIC):head], data[head:]
        return payload if hmac.compare_digest(mac, self._mac(name, payload)) else None

    def _mac(self, name: str, payload: bytes) -> bytes:
        signer = hmac.new(self.key, name.encode() + b"\0", hashlib.sha256)
        signer.update(payload)
        return signer.digest()

    def write(self, path: Path, data: bytes) -> bool:
        """Atomically replace `path` with `data`; on failure (full or read-only storage)
        warn once, stop writing to this store and return False."""
        if not self.writable:
            return False
        try:
            atomic_write(path, data)
        except OSError as err:
            self.stop_writing(err)
            return False
        return True

    def stop_writing(self, err: OSError) -> None:
        self.writable = False
        warn_once(("unwritable", self.path),
                  f"cannot write to the tracejit cache {self.path} ({err.strerror or err}); "
                  "new kernels are kept in memory for the rest of this process")


def open_store(path: Path, quiet: bool = False) -> Store | None:
    """The checked store at `path`, or None (after one warning, unless `quiet`) if it
    cannot be used. The result is kept per process; a directory removed meanwhile is
    checked again."""
    with _lock:
        name = str(path)
        if name in _stores:
            store = _stores[name]
            if store is None or _is_real_dir(store.path):
                return store
        store = _stores[name] = _open(path, quiet)
        return store


def forget_stores() -> None:
    """Check every directory again on next use (tests, or after fixing permissions)."""
    with _lock:
        _stores.clear()
        _warned.clear()


def _open(path: Path, quiet: bool = False) -> Store | None:
    say = (lambda key, message: None) if quiet else warn_once
    problem = _create(path) or unsafe_reason(path)
    if problem:
        say(("unusable", path), f"not using the tracejit cache directory {path}: "
            f"{problem}; kernels are kept in memory")
        return None
    _make_private(path)
    unwritable = _why_unwritable(path)
    writable = unwritable is None
    key = _load_key(path, writable)
    if key is None:
        say(("unusable", path), f"not using the tracejit cache directory {path}: it is "
            "read-only and holds no key; kernels are kept in memory")
        return None
    if not writable:
        say(("unwritable", path), f"the tracejit cache directory {path} is read-only "
            f"({unwritable}): kernels it holds are used, new kernels are kept in memory")
    else:
        _remove_stale_temp_files(path)
    return Store(path, key, writable)


def _create(path: Path) -> str | None:
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except FileExistsError:
        return "the path exists and is not a directory"
    except OSError as err:
        return f"it cannot be created ({err.strerror or err})"
    return None


def _is_real_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(path.lstat().st_mode)
    except OSError:
        return False


def unsafe_reason(path: Path) -> str | None:
    """Why files in `path` could have been planted by someone else, or None."""
    problem = _unsafe_dir(path, "it")
    if problem:
        return problem
    try:
        entries = list(os.scandir(path))
    except OSError as err:
        return f"it cannot be listed ({err.strerror or err})"
    for entry in entries:
        if entry.is_dir():  # follows links: a link to a directory is reported below
            problem = _unsafe_dir(Path(entry.path), f"its subdirectory {entry.name}")
            if problem:
                return problem
    return _unsafe_parents(path)


def _unsafe_dir(path: Path, what: str) -> str | None:
    try:
        info = path.lstat()
    except OSError as err:
        return f"{what} cannot be examined ({err.strerror or err})"
    if stat.S_ISLNK(info.st_mode):
        return f"{what} is a symbolic link"
    if not stat.S_ISDIR(info.st_mode):
        return f"{what} is not a directory"
    if os.name != "posix":
        return None
    if info.st_uid != os.geteuid():
        return f"{what} is owned by uid {info.st_uid}, not by this user ({os.geteuid()})"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"{what} is writable by other users (mode {stat.S_IMODE(info.st_mode):o})"
    return None


def _unsafe_parents(path: Path) -> str | None:
    """A parent another user owns or can write to (without the sticky bit, as /tmp
    has) lets them replace the whole directory."""
    if os.name != "posix":
        return None
    for parent in path.resolve().parents:
        info = parent.stat()
        if info.st_uid not in (0, os.geteuid()):
            return f"its parent {parent} is owned by uid {info.st_uid}"
        if info.st_mode & stat.S_IWOTH and not info.st_mode & stat.S_ISVTX:
            return f"its parent {parent} is writable by every user"
    return None


def _make_private(path: Path) -> None:
    # Nobody else may even read the key: an existing directory of ours is made 0700.
    if os.name == "posix" and stat.S_IMODE(path.stat().st_mode) != 0o700:
        with contextlib.suppress(OSError):
            os.chmod(path, 0o700)


def _why_unwritable(path: Path) -> str | None:
    """None if a file can be made in `path`, else why not ("No space left on device")."""
    try:
        fd, probe = tempfile.mkstemp(dir=path, prefix=".probe-", suffix=".tmp")
    except OSError as err:
        return err.strerror or str(err)
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return None


def _load_key(path: Path, writable: bool) -> bytes | None:
    key_path = path / KEY_FILE
    for _ in range(3):  # bounded: another process may be replacing a broken key meanwhile
        current = _read_key(key_path)
        if current is not None and len(current) == _MAC_SIZE:
            return current
        if not writable:
            return None
        if _install_key(key_path, replace=current is not None):
            continue  # read back what is on disk: another process's key may have won
    return None


def _read_key(key_path: Path) -> bytes | None:
    try:
        info = key_path.lstat()
        if not stat.S_ISREG(info.st_mode) or (os.name == "posix" and info.st_uid != os.geteuid()):
            return b""  # present but not ours: replaced by a fresh key
        return key_path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError:
        return b""


def _install_key(key_path: Path, replace: bool) -> bool:
    fd, tmp = tempfile.mkstemp(dir=key_path.parent, prefix=".key-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(os.urandom(_MAC_SIZE))
            file.flush()
            os.fsync(file.fileno())
        if replace:
            os.replace(tmp, key_path)
        else:
            with contextlib.suppress(FileExistsError):  # another process made one first
                _link_or_rename(tmp, key_path)
        return True
    except OSError:
        return False
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _link_or_rename(tmp: str, target: Path) -> None:
    try:
        os.link(tmp, target)  # atomic, and fails if the target exists
    except FileExistsError:
        raise
    except OSError:  # a file system without hard links
        if target.exists():
            raise FileExistsError(target) from None
        os.rename(tmp, target)


def _remove_stale_temp_files(path: Path) -> None:
    """Temporary files left by processes killed while writing (never read: names differ)."""
    cutoff = time.time() - _STALE_TEMP_SECONDS
    for directory in (path, path / "__pycache__"):
        with contextlib.suppress(OSError):
            for entry in os.scandir(directory):
                if is_temp_name(entry.name) and entry.is_file(follow_symlinks=False):
                    with contextlib.suppress(OSError):
                        if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                            os.unlink(entry.path)


def is_temp_name(name: str) -> bool:
    return name.startswith(".") and name.endswith(".tmp")


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same directory (mode 0600)
    renamed over it: readers see the old file or the complete new one."""
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


def warn_once(what, message: str) -> None:
    with _lock:
        if what in _warned:
            return
        _warned.add(what)
    warn(message, TracejitCacheWarning)
