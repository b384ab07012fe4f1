"""Error types, and the user's own source line for messages raised while tracing."""

from __future__ import annotations

import os
import sys

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
