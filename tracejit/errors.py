"""Error types, and the user's own source line for messages raised while tracing."""

from __future__ import annotations

import os
import sys
import threading
import warnings

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_NUMPY_DIR = os.path.dirname(os.path.abspath(__import__("numpy").__file__))
# Frames that are never the user's: where a warning is attributed past them.
_MACHINERY = (_PACKAGE_DIR, _NUMPY_DIR, os.path.dirname(os.path.abspath(threading.__file__)))


class TracejitError(Exception):
    """Base class of every error tracejit raises on purpose."""


class ShapeError(TracejitError, ValueError):
    """Operand shapes that NumPy's rules reject (broadcasting, matmul, reshape...)."""


class TracerTypeError(TracejitError, TypeError):
    """An argument or operand tracejit cannot trace (wrong type, integer gradient...)."""


class ConcretizationError(TracejitError, TypeError):
    """Python control flow (`if`, `float()`, ...) on a value only known when the kernel runs."""


class UnsupportedError(TracejitError, NotImplementedError):
    """A NumPy function or feature tracejit does not trace."""


class TracejitCacheWarning(UserWarning):
    """A cache file or directory was unusable (corrupt, unsafe, unwritable, full) and
    tracejit worked around it: rebuilt the kernel, or kept it in memory."""


def user_location() -> str:
    """`file:line` of the innermost frame outside tracejit and NumPy."""
    frame = sys._getframe(1)
    while frame is not None:
        path = os.path.abspath(frame.f_code.co_filename)
        if not (path.startswith(_PACKAGE_DIR) or path.startswith(_NUMPY_DIR)):
            return f"{frame.f_code.co_filename}:{frame.f_lineno}"
        frame = frame.f_back
    return "<unknown>"


def with_location(message: str, location: str | None = None, hint: str | None = None) -> str:
    text = f"{message}\n  at {location or user_location()}"
    return f"{text}\n  hint: {hint}" if hint else text


def warn_user(message: str, category=UserWarning) -> None:
    """Warn, attributing the warning to the innermost frame outside tracejit, NumPy,
    Numba and the import and thread machinery (the user's call)."""
    import numba

    skip = (*_MACHINERY, os.path.dirname(os.path.abspath(numba.__file__)))
    frame, level = sys._getframe(0), 1
    while frame is not None and _is_machinery(frame.f_code.co_filename, skip):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level if frame is not None else 1)


def _is_machinery(filename: str, skip: tuple) -> bool:
    return filename.startswith("<frozen ") or os.path.abspath(filename).startswith(skip)
