"""Error types, and the user's own source line for messages raised while tracing."""

from __future__ import annotations

import os
import sys
import warnings

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_NUMPY_DIR = os.path.dirname(os.path.abspath(__import__("numpy").__file__))


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


_is_user_file: dict[str, bool] = {}  # code filename -> outside tracejit and NumPy


def user_location() -> str:
    """`file:line` of the innermost frame outside tracejit and NumPy (every
    traced or eagerly recorded operation asks: the answer per file is cached)."""
    frame = sys._getframe(1)
    while frame is not None:
        filename = frame.f_code.co_filename
        outside = _is_user_file.get(filename)
        if outside is None:
            path = os.path.abspath(filename)
            outside = not (path.startswith(_PACKAGE_DIR) or path.startswith(_NUMPY_DIR))
            _is_user_file[filename] = outside
        if outside:
            return f"{filename}:{frame.f_lineno}"
        frame = frame.f_back
    return "<unknown>"


def warn(message: str, category=UserWarning) -> None:
    """A warning attributed to the user's line (shown once per line, as usual)."""
    frame = sys._getframe(1)
    location = user_location()
    while frame is not None and f"{frame.f_code.co_filename}:{frame.f_lineno}" != location:
        frame = frame.f_back
    if frame is None:
        warnings.warn(message, category, stacklevel=2)
        return
    warnings.warn_explicit(message, category, frame.f_code.co_filename, frame.f_lineno,
                           module=frame.f_globals.get("__name__"),
                           registry=frame.f_globals.setdefault("__warningregistry__", {}))


def with_location(message: str, location: str | None = None, hint: str | None = None) -> str:
    text = f"{message}\n  at {location or user_location()}"
    return f"{text}\n  hint: {hint}" if hint else text
