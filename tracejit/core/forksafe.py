"""Module-level locks made new in a forked child.

`os.fork` copies the locks of the parent but only the calling thread: a lock that
another thread held at that moment (a compile thread, a trace) stays held forever
in the child, and the child's first compile hangs on it. multiprocessing forks by
default on Linux, so a training script that starts a pool after its first kernel
meets this."""

from __future__ import annotations

import os


def renew_after_fork(module_globals: dict, name: str, factory) -> None:
    """In a forked child, `module_globals[name]` becomes a new `factory()`."""
    os.register_at_fork(after_in_child=lambda: module_globals.__setitem__(name, factory()))
