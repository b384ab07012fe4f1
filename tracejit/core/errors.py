"""Error types, and the user's own source line for messages raised while tracing."""

from __future__ import annotations

import os
import sys
import threading
import warnings

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # tracejit/
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


class IntegerOverflowError(TracejitError, OverflowError):
    """A Python int argument beyond int64, the widest integer a kernel holds (NumPy and
    JAX raise OverflowError for such an int meeting an int64 array)."""


class UnsupportedError(TracejitError, NotImplementedError):
    """A NumPy function or feature tracejit does not trace."""


class LeakedTracerError(TracejitError, TypeError):
    """A traced value used after the trace that made it has ended (it escaped the
    traced function: stored in a global, a list, an attribute...)."""


class SizeMismatch(ShapeError):
    """Raised by a kernel's size check number `index` (sizes `first` != `second`); the
    dispatcher turns it into a ShapeError naming the arguments and their shapes."""

    def __init__(self, index, first, second):
        super().__init__(index, first, second)
        self.index, self.first, self.second = int(index), int(first), int(second)

    def __str__(self) -> str:
        return (f"size check {self.index} of the kernel failed: {self.first} != "
                f"{self.second} (the sizes differ from what the trace assumed)")


class NonFiniteError(FloatingPointError):
    """Raised by a kernel built with tracejit.config.debug_nans / debug_infs: check
    number `index` found a NaN (`kind` 0) or an infinity (1); the dispatcher names the op."""

    def __init__(self, index, kind=0):
        super().__init__(index, kind)
        self.index, self.kind = int(index), int(kind)

    def __str__(self) -> str:
        return (f"debug check {self.index} of the kernel found "
                f"{'an infinity' if self.kind else 'a NaN'}")


KERNEL_CHECKS = (SizeMismatch, NonFiniteError)  # what kernels raise for the dispatcher to explain


class TracejitCacheWarning(UserWarning):
    """A cache file or directory was unusable (corrupt, unsafe, unwritable, full) and
    tracejit worked around it: rebuilt the kernel, or kept it in memory."""


_is_user_file: dict[str, bool] = {}  # code filename -> outside tracejit and NumPy


def user_location() -> str:
    """`file:line` of the innermost frame outside tracejit and NumPy (every
    traced or eagerly recorded operation asks: the answer per file is cached)."""
    frame = _user_frame(sys._getframe(1))
    return "<unknown>" if frame is None else f"{frame.f_code.co_filename}:{frame.f_lineno}"


def _user_frame(frame):
    while frame is not None:
        filename = frame.f_code.co_filename
        outside = _is_user_file.get(filename)
        if outside is None:
            path = os.path.abspath(filename)
            outside = not (path.startswith(_PACKAGE_DIR) or path.startswith(_NUMPY_DIR))
            _is_user_file[filename] = outside
        if outside:
            return frame
        frame = frame.f_back
    return None


def warn(message: str, category=UserWarning) -> None:
    """A warning attributed to the user's line (shown once per line, as usual): the
    innermost frame outside tracejit, NumPy, Numba and the import and thread
    machinery (a cache warning raised while Numba compiles still names the call)."""
    import numba

    skip = (*_MACHINERY, os.path.dirname(os.path.abspath(numba.__file__)))
    frame = sys._getframe(1)
    while frame is not None and _is_machinery(frame.f_code.co_filename, skip):
        frame = frame.f_back
    if frame is None:  # a background thread: no user frame to name
        warnings.warn(message, category, stacklevel=2)
        return
    warnings.warn_explicit(message, category, frame.f_code.co_filename, frame.f_lineno,
                           module=frame.f_globals.get("__name__"),
                           registry=frame.f_globals.setdefault("__warningregistry__", {}))


def with_location(message: str, location: str | None = None, hint: str | None = None) -> str:
    text = f"{message}\n  at {location or user_location()}"
    return f"{text}\n  hint: {hint}" if hint else text


def _is_machinery(filename: str, skip: tuple) -> bool:
    return filename.startswith("<frozen ") or os.path.abspath(filename).startswith(skip)


# --------------------------------------------------------- describing values

def describe_value(value) -> str:
    """How the user passed a value: `float64 array of shape (3, 4)`, `float 2.0`."""
    aval = getattr(value, "aval", None)  # a tracer: never read its .shape (that binds it)
    if aval is not None:
        shape, dtype = tuple(getattr(d, "value", d) for d in aval.shape), aval.dtype
    else:
        shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
    if shape is not None and dtype is not None:
        return f"{dtype} array of shape {tuple(shape)}" if shape else f"{dtype} scalar"
    if isinstance(value, (bool, int, float, complex)):
        return f"{type(value).__name__} {value!r}"
    return type(value).__name__


def explain_size_mismatch(err: SizeMismatch, program, names: list, values: list) -> ShapeError:
    """The ShapeError for a failed kernel size check: which two argument sizes the trace
    joined (by which op, where), what this call passed, and the caller's line."""
    a, b, what = program.checks.pairs[err.index]
    where = _input_dims(program)
    parts, involved = [], []
    for dim in (a, b):
        k, axis = where.get(id(dim), (None, None))
        if k is None:
            parts.append(f"a size computed from the inputs ({what})")
            continue
        involved.append(k)
        parts.append(f"{_leaf_name(names, k)}.shape[{axis}] = {_shape_of(values[k])[axis]}")
    arguments = "; ".join(f"{_leaf_name(names, k)}: {describe_value(values[k])}"
                          for k in dict.fromkeys(involved))
    return ShapeError(with_location(
        f"{parts[0]} but {parts[1]}: the function was traced with these sizes equal "
        f"({what})\n  arguments: {arguments}",
        hint="the sizes must agree as they did when the function was traced"))


def _input_dims(program) -> dict:
    """id(dimension object) -> (input index, axis) for the program's inputs' dimensions."""
    where: dict = {}
    for k, var in enumerate(list(program.invars) + list(program.constvars)):
        for axis, dim in enumerate(var.aval.shape):
            where.setdefault(id(dim), (k, axis))
    return where


def _leaf_name(names: list, k: int) -> str:
    return names[k] if k < len(names) else f"captured constant {k - len(names)}"


def _shape_of(value) -> tuple:
    return tuple(getattr(value, "shape", ()))


def check_sizes(program, values) -> None:
    """The kernel's size checks, for calls run by the interpreter: raise SizeMismatch
    for the first join of two input sizes that these values break."""
    where = _input_dims(program)
    for index, (a, b, _) in enumerate(program.checks.pairs):
        if id(a) in where and id(b) in where:
            (ka, axa), (kb, axb) = where[id(a)], where[id(b)]
            first, second = _shape_of(values[ka])[axa], _shape_of(values[kb])[axb]
            if first != second:
                raise SizeMismatch(index, first, second)


def explain(err: Exception, kernel, names: list, values: list) -> Exception:
    """The error a user sees for a kernel check that failed (KERNEL_CHECKS)."""
    if isinstance(err, SizeMismatch):
        return explain_size_mismatch(err, kernel.program, names, values)
    op, location, operands = kernel.debug_checks[err.index]
    backward = location.endswith(BACKWARD)
    where = location[: -len(BACKWARD)] if backward else location
    named = [names[k] for k in operands if k < len(names)]
    return FloatingPointError(with_location(
        f"{'an infinity' if err.kind else 'a NaN'} was produced by {op} in the "
        f"{'backward (gradient)' if backward else 'forward'} pass, at {where}"
        + (f"\n  its operands include the arguments {', '.join(named)}" if named else "")
        + "\n  (tracejit.config.debug_nans / debug_infs check the output of every op)",
        hint="this is the first op whose output is not finite; look at its inputs at that line"))


BACKWARD = " (backward)"  # ends the location of equations made by reverse-mode AD


def backward_location(location: str) -> str:
    return location if location.endswith(BACKWARD) else location + BACKWARD


def dtype_problem(dtype) -> str | None:
    """Why values of `dtype` cannot be traced, or None."""
    import numpy as np

    dtype = np.dtype(dtype)
    if dtype == np.float16:
        return "float16 is not supported (Numba has no float16 arithmetic): use float32"
    if (dtype.kind not in "fiubc" or dtype.itemsize > (16 if dtype.kind == "c" else 8)
            or not dtype.isnative):
        return (f"{dtype} is not supported: only bool, integer, float32, float64, complex64 "
                "and complex128 values in native byte order are")
    return None


def leaf_problem(leaf) -> str | None:
    """Why an argument leaf cannot be passed to a traced function, or None."""
    import numpy as np

    if isinstance(leaf, (np.ndarray, np.generic)):
        problem = dtype_problem(leaf.dtype)
        return f"is {_a(describe_value(leaf))}: {problem}" if problem else None
    if isinstance(leaf, int) and not isinstance(leaf, bool) and not fits_int64(leaf):
        return (f"is the Python int {leaf}, beyond int64 (the widest integer a kernel "
                "holds); pass it as a float, or as an array of an explicit dtype")
    if isinstance(leaf, (bool, int, float, complex)):
        return None
    return (f"is {_a(type(leaf).__name__)}, not an array or scalar; pass NumPy arrays or "
            "Python scalars (in tuples, lists and dicts), or mark the argument static")


def fits_int64(value: int) -> bool:
    return -(2 ** 63) <= value < 2 ** 63


def leaf_error_type(leaf) -> type:
    """The error type for an argument leaf `leaf_problem` rejects."""
    return IntegerOverflowError if isinstance(leaf, int) else TracerTypeError


def operand_type_error(value) -> TracerTypeError:
    """NumPy's TypeError for an operand that is no number or array (`x * None`),
    naming the variables of the user's frame that hold it (the argument `y`)."""
    frame = _user_frame(sys._getframe(1))
    holders = []
    if frame is not None and value is None:
        code = frame.f_code
        names = code.co_varnames[:code.co_argcount + code.co_kwonlyargcount]
        holders = [n for n in names if n in frame.f_locals and frame.f_locals[n] is None]
    held = f" (the argument {' and '.join(holders)} is None)" if holders else ""
    return TracerTypeError(with_location(
        f"unsupported operand type {type(value).__name__!r}{held}: an operand must be an "
        "array or a number"))


def _a(noun: str) -> str:
    return f"an {noun}" if noun[:1] in "aeiou" else f"a {noun}"
