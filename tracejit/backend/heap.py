"""Keep freed memory in the process for the next kernel call (glibc only).

A training step allocates the same large arrays on every call (patches of a
convolution, per-step residuals of a scan: megabytes each). glibc's malloc
serves blocks above its mmap threshold with fresh mmaps and trims the heap top
when it frees them, so every call page-faults and zero-fills the same memory
again: measured, 41% of a convnet step's CPU time was the kernel's page-fault
handling, and the step took 51 ms of CPU against 28 ms with the thresholds
below. Raising them (once, when the first kernel is loaded) keeps up to
`TRIM_BYTES` of freed memory for reuse, as PyTorch's and TensorFlow's caching
allocators do. Left alone if the user set either threshold (MALLOC_*_ in the
environment) or TRACEJIT_KEEP_FREED_MEMORY=0; a no-op off glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_BYTES = 32 << 20  # glibc's ceiling for the mmap threshold on 64-bit
TRIM_BYTES = 256 << 20
_done = False


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds once per process; True if set."""
    global _done
    if _done:
        return False
    _done = True
    if os.environ.get("TRACEJIT_KEEP_FREED_MEMORY", "1") == "0" or any(
            name in os.environ for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_BYTES) and mallopt(M_TRIM_THRESHOLD, TRIM_BYTES))
