"""Large kernel buffers, recycled: the blocks behind big arrays that kernels allocate
(their outputs and temporaries of at least `MIN_BYTES`) come from here.

Why: glibc returns a block above its mmap threshold (at most 32 MB) to the OS when it is
freed, so a kernel that writes a 205 MB result page-faults all of it again on every call
(per-example gradients of a 784x256 layer at batch 128: 250 ms of faults for 25 ms of
writing). A block handed back here is kept, already faulted, for the next array of its
size.

How a block is known to be free: the kernel's array is a Numba MemInfo over the block that
holds a `_Lease`; every array and view handed out keeps that MemInfo (their `base`) alive.
When the last of them goes, Numba drops the lease and the lease puts its block on the free
list of its size. Nothing is reused while anything still references it.

Bounded: at most `TRACEJIT_BUFFER_POOL_MB` megabytes (default 1024) sit idle; beyond that
the oldest idle blocks are freed. `TRACEJIT_BUFFER_POOL_MB=0` keeps none (every big array
is then a fresh NumPy block: hugepage-backed where the kernel allows it, but faulted anew).
`trim()` frees the idle blocks now. Process-wide malloc settings are left alone.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections import OrderedDict

import numpy as np

__all__ = ["limit_bytes", "set_limit", "stats", "trim"]


def _limit_from_env() -> int:
    text = os.environ.get("TRACEJIT_BUFFER_POOL_MB", "1024")
    try:
        return max(0, int(float(text) * (1 << 20)))
    except ValueError:
        raise ValueError(f"TRACEJIT_BUFFER_POOL_MB must be a number of megabytes, "
                         f"not {text!r}") from None


class _Pool:
    """Idle blocks by size (most recently returned last), within a byte budget."""

    def __init__(self, limit: int):
        self.limit = limit
        self.idle: OrderedDict = OrderedDict()  # (nbytes, id) -> block, oldest first
        self.by_size: dict[int, list] = {}  # nbytes -> keys of its idle blocks
        self.idle_bytes = 0
        self.counts = {"new": 0, "reused": 0, "freed": 0}
        self.lock = threading.RLock()  # a lease may be dropped by GC inside our own call

    def take(self, nbytes: int) -> np.ndarray:
        with self.lock:
            keys = self.by_size.get(nbytes)
            if keys:
                block = self.idle.pop(keys.pop())
                self.idle_bytes -= nbytes
                self.counts["reused"] += 1
                return block
            self.counts["new"] += 1
        return np.empty(nbytes, np.uint8)  # NumPy asks for huge pages for large blocks

    def give(self, block: np.ndarray) -> None:
        nbytes = block.nbytes
        with self.lock:
            if nbytes > self.limit:
                self.counts["freed"] += 1
                return
            while self.idle_bytes + nbytes > self.limit:
                self._free_oldest()
            key = (nbytes, id(block))
            self.idle[key] = block
            self.by_size.setdefault(nbytes, []).append(key)
            self.idle_bytes += nbytes

    def _free_oldest(self) -> None:
        key, _ = self.idle.popitem(last=False)
        self.by_size[key[0]].remove(key)
        self.idle_bytes -= key[0]
        self.counts["freed"] += 1

    def trim(self) -> None:
        with self.lock:
            while self.idle:
                self._free_oldest()


_pool = _Pool(_limit_from_env())


class _Lease:
    """Held by the MemInfo of the arrays over `block`: returns it when they are all gone."""

    __slots__ = ("block", "pool")

    def __init__(self, block, pool):
        self.block, self.pool = block, pool

    def __del__(self):
        try:
            self.pool.give(self.block)
        except Exception:  # noqa: BLE001 - interpreter shutting down: the block is just freed
            pass


def _take_meminfo(nbytes: int, pool=_pool, new=None, lease=_Lease) -> int:
    """Called by compiled code (`runtime.empty`) for a block of `nbytes`: a new Numba
    MemInfo (reference count 1, owned by the caller) over a pooled block; 0 if that
    fails, which the caller raises as MemoryError. The defaults keep what it needs
    reachable while the interpreter shuts down."""
    try:
        block = pool.take(nbytes)
        return new(block.ctypes.data, lease(block, pool))
    except BaseException:  # noqa: BLE001 - the compiled caller raises MemoryError
        return 0


# Below this, malloc's own reuse is cheaper than a call into Python. Not higher: glibc
# hands the heap's free top back to the OS above 128 KiB (M_TRIM_THRESHOLD), so arrays
# of 128 KiB-1 MiB were faulted again every call (the LSTM step's 800 KB stacks: 17% of
# its time in the kernel's page-fault path, 0.2% pooled)
MIN_BYTES = 1 << 17  # arrays this large or larger come from the pool
SYMBOL = "tracejit_pool_take"  # what `runtime.empty` calls
_callback = None


def install() -> None:
    """Make `tracejit_pool_take` callable from machine code in this process (kernels loaded
    from the disk cache link it by name, as Numba's own runtime functions)."""
    global _callback
    if _callback is not None:
        return
    import llvmlite.binding as ll
    from numba.core.runtime import _nrt_python

    take = _take_meminfo
    take.__defaults__ = (_pool, _nrt_python.meminfo_new, _Lease)
    _callback = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_ssize_t)(take)
    ll.add_symbol(SYMBOL, ctypes.cast(_callback, ctypes.c_void_p).value)


def _after_fork_in_child() -> None:
    _pool.lock = threading.RLock()  # another thread of the parent may have held it


os.register_at_fork(after_in_child=_after_fork_in_child)


# ------------------------------------------------------------------- the user's controls

def stats() -> dict:
    """Blocks made, reused and freed so far; bytes and blocks idle now; the limit."""
    with _pool.lock:
        return {**_pool.counts, "idle_bytes": _pool.idle_bytes, "idle_blocks": len(_pool.idle),
                "limit_bytes": _pool.limit}


def limit_bytes() -> int:
    return _pool.limit


def set_limit(nbytes: int) -> None:
    """Keep at most `nbytes` idle (0: none); idle blocks beyond it are freed now."""
    with _pool.lock:
        _pool.limit = max(0, int(nbytes))
        while _pool.idle_bytes > _pool.limit:
            _pool._free_oldest()


def trim() -> None:
    """Free every idle block now (arrays still in use are not affected)."""
    _pool.trim()
