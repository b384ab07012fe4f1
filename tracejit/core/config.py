"""Runtime switches, read and set as attributes of this module:

    tracejit.config.debug_nans = True     # kernels raise FloatingPointError at the op making a NaN
    tracejit.config.debug_infs = True     # ... and at the op making an infinity
    tracejit.config.cache_size = 32       # compiled entries kept per function (LRU)

Each starts from an environment variable (TRACEJIT_DEBUG_NANS, TRACEJIT_DEBUG_INFS,
TRACEJIT_CACHE_SIZE). Changing a switch that alters the generated kernels makes every
function look its kernels up again, so calls after the change use kernels built for it;
calls never read a switch on their fast path.
"""

from __future__ import annotations

import os
import sys
import types

_TRUE = {"1", "true", "yes", "on"}


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name, "").strip()
    try:
        return max(1, int(text)) if text else default
    except ValueError:
        return default


_values = {
    "debug_nans": _env_flag("TRACEJIT_DEBUG_NANS"),
    "debug_infs": _env_flag("TRACEJIT_DEBUG_INFS"),
    "cache_size": _env_int("TRACEJIT_CACHE_SIZE", 128),
}
_listeners: list = []  # called with no arguments after a kernel-changing switch changes


def on_change(callback) -> None:
    """Register `callback()` to run whenever a switch that changes kernels is set."""
    _listeners.append(callback)


def kernel_flags() -> tuple:
    """The switches that change generated code, as part of a kernel's cache key
    (empty when all are off, so the default kernels are keyed as before)."""
    return tuple(name for name in ("debug_nans", "debug_infs") if _values[name])


def _flag_property(name: str):
    def get(module):
        return _values[name]

    def set_(module, value):
        value = bool(value)
        if value != _values[name]:
            _values[name] = value
            for callback in list(_listeners):
                callback()

    return property(get, set_, doc=f"bool; default from TRACEJIT_{name.upper()}")


def _get_cache_size(module) -> int:
    return _values["cache_size"]


def _set_cache_size(module, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"tracejit.config.cache_size must be a positive int, got {value!r}")
    _values["cache_size"] = value


class _ConfigModule(types.ModuleType):
    debug_nans = _flag_property("debug_nans")
    debug_infs = _flag_property("debug_infs")
    cache_size = property(_get_cache_size, _set_cache_size,
                          doc="compiled entries kept per function, least recently used "
                              "dropped first; default from TRACEJIT_CACHE_SIZE (128)")


sys.modules[__name__].__class__ = _ConfigModule
