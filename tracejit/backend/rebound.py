"""NumPy's own functions known to Numba even if its overloads went to tracejit's stand-ins.

While a trace is open, `np.asarray` & co. are rebound process-wide to tracer-aware
stand-ins (numpy/build.py). Numba's modules register their overloads on whatever
`np.asarray` is when they are first imported, and that import may happen on another
thread during a trace (the warm-up's, or a background compile's first refresh): the
overload then went to the stand-in, NumPy's own function stayed unknown and every
later kernel using it failed to type ("Use of unsupported NumPy function
'numpy.ascontiguousarray'"), depending on timing. Such registrations are repeated
for the original (Numba's typing context installs them at its next refresh, which
every compile starts with).
"""

from __future__ import annotations

import threading

from ..core import forksafe
from ..trace.tracer import rebound_callables

_lock = threading.Lock()
forksafe.renew_after_fork(globals(), "_lock", threading.Lock)
_scanned = [0]  # entries of Numba's builtin typing registry already looked at


def type_alike() -> bool:
    """Register the original wherever Numba registered a stand-in since the last
    look (no import, no refresh: cheap before every compile). True if any was."""
    from numba.core.typing.templates import builtin_registry

    originals = {id(stand_in): original for original, stand_in in rebound_callables}
    found = []
    with _lock:
        registered = builtin_registry.globals  # (value, Numba type), appended to only
        start = _scanned[0]
        _scanned[0] = len(registered)
        for value, numba_type in registered[start:_scanned[0]]:
            original = originals.get(id(value))
            if original is not None:
                found.append((original, numba_type))
        for original, numba_type in found:
            builtin_registry.register_global(original, numba_type)
    return bool(found)
