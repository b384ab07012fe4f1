"""Arrays built from traced values: `np.array([a, b])`, `np.asarray(t)`, `np.r_`, `np.c_`.

NumPy builds an array from a list by asking each element for its data
(`__array__`, the buffer protocol), and neither `np.array` nor `np.asarray`
dispatches through `__array_function__` on list elements (in NumPy 1.26 or
2.x). So while a trace is open, tracejit rebinds those few entry points of the
`numpy` module to wrappers: a wrapper whose argument holds a tracer builds the
array with `stack`/`concatenate` (so it is differentiable); any other
argument goes straight to NumPy's own function.

Thread safety: the rebinding is process-wide, done when the first trace
opens and undone when the last closes (under a lock). A thread running plain
NumPy meanwhile reaches a wrapper, finds no tracer, and gets NumPy's result;
it pays one type check per call. Code that bound the functions before the trace
(`from numpy import array`) keeps NumPy's and still raises the clear
"np.asarray() of a traced array" error.
"""

from __future__ import annotations

import threading

import numpy as np

from . import ops
from .errors import UnsupportedError, with_location
from .numpy_api import asarray, concatenate, implements
from .trace import Tracer, add_tracing_hook


def holds_tracer(obj) -> bool:
    if isinstance(obj, Tracer):
        return True
    if isinstance(obj, (list, tuple)):
        return any(holds_tracer(o) for o in obj)
    return False


def build(obj, dtype=None):
    """The traced array for a (nested) list or tuple holding tracers. Python
    scalars in the list are float64/int64/bool, as NumPy's array coercion has
    them (they are not weak here, unlike in arithmetic)."""
    if not isinstance(obj, (list, tuple)):
        return _strong(obj)
    items = [build(o) for o in obj]
    if not items:
        return np.array(obj, dtype=dtype)
    shapes = {tuple(map(_value, ops.aval_of(i).shape)) for i in items}
    if len(shapes) > 1:
        raise ValueError(with_location(
            "np.array: the elements have different shapes "
            f"({', '.join(map(str, sorted(shapes)))}): NumPy would build a ragged array"))
    items = ops.promote(*items)
    out = concatenate([ops.expand_dims(i, (0,)) for i in items], 0)
    return out if dtype is None else ops.convert(out, dtype)


def _value(d):
    from .shapes import value
    return value(d)


def _strong(x):
    if isinstance(x, Tracer):
        return ops.convert(x, x.dtype) if x.aval.weak else x
    return np.asarray(x)


def _array(obj, dtype=None, *args, **kwargs):
    if not holds_tracer(obj):
        return _ORIGINAL["array"](obj, dtype, *args, **kwargs)
    return build(obj, dtype)


def _converter(name):
    def convert(a, dtype=None, *args, **kwargs):
        if not holds_tracer(a):
            return _ORIGINAL[name](a, dtype, *args, **kwargs)
        return build(a, dtype)

    convert.__name__ = name
    return convert


class _Concatenator:
    """`np.r_` / `np.c_` with tracers among the items (plain ones go to NumPy's)."""

    def __init__(self, name):
        self.name = name

    def __getitem__(self, key):
        items = key if isinstance(key, tuple) else (key,)
        if not holds_tracer(list(items)):
            return _ORIGINAL[self.name][key]
        if any(isinstance(k, str) for k in items):
            raise UnsupportedError(with_location(
                f"np.{self.name}[...] with a directive string is not traced"))
        parts = [np.asarray(_ORIGINAL["r_"][k]) if isinstance(k, slice) else k for k in items]
        parts = [build(p) if isinstance(p, (list, tuple)) else p for p in parts]
        parts = ops.promote(*parts)  # Python scalars are weak here, as in NumPy's r_
        if self.name == "r_":
            return concatenate([_at_least_1d(p) for p in parts], 0)
        return concatenate([_as_column(p) for p in parts], -1)

    def __len__(self):
        return 0


def _at_least_1d(p):
    p = asarray(p)
    return ops.expand_dims(p, (0,)) if ops.aval_of(p).ndim == 0 else p


def _as_column(p):
    p = _at_least_1d(p)
    ndim = ops.aval_of(p).ndim
    return ops.expand_dims(p, (1,)) if ndim == 1 else p


_PATCHED = {
    "array": _array, "asarray": _converter("asarray"), "asanyarray": _converter("asanyarray"),
    "ascontiguousarray": _converter("ascontiguousarray"),
    "r_": _Concatenator("r_"), "c_": _Concatenator("c_"),
}
_ORIGINAL = {name: getattr(np, name) for name in _PATCHED}
_lock = threading.Lock()


def _install():
    with _lock:
        for name, wrapper in _PATCHED.items():
            setattr(np, name, wrapper)


def _uninstall():
    with _lock:
        for name, original in _ORIGINAL.items():
            setattr(np, name, original)


add_tracing_hook(_install, _uninstall)


@implements(_ORIGINAL["array"])
def array(obj, dtype=None, copy=True, order="K", subok=False, ndmin=0, **unused):
    out = build(obj, dtype) if holds_tracer(obj) else asarray(obj, dtype)
    if ndmin > ops.aval_of(out).ndim:
        out = ops.expand_dims(out, tuple(range(ndmin - ops.aval_of(out).ndim)))
    return out


for _name in ("asarray", "asanyarray", "ascontiguousarray"):
    implements(_ORIGINAL[_name])(lambda a, dtype=None, **unused: build(a, dtype))
