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

import sys
import threading
import types

import numpy as np

from ..core import forksafe
from ..core.errors import UnsupportedError, with_location
from ..trace import ops
from ..trace.tracer import Tracer, add_tracing_hook, rebound_callables
from .api import LIST_BUILDER, asarray, concatenate, implements


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
        return _strong(obj) if dtype is None else asarray(_strong(obj), dtype)
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
    from ..core.shapes import value
    return value(d)


def _strong(x):
    if isinstance(x, Tracer):
        return ops.convert(x, x.dtype) if x.aval.weak else x
    return np.asarray(x)


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


class _Rebindings:
    """Attributes (of modules, or of objects such as SciPy's distribution
    singletons) swapped for tracer-aware wrappers while a trace is open.

    `install` runs whenever a thread opens its outermost trace: it first lets
    the `before_install` callbacks add entries (scipy_api registers the SciPy
    modules imported since), then installs the entries not yet installed.
    `uninstall` runs when the process's last trace closes."""

    def __init__(self):
        self.entries: list[tuple] = []  # (owner, name, wrapper, original, had_own)
        self.before_install: list = []  # callbacks that may add entries (scipy_api)
        self.lock = threading.Lock()
        self._installed = 0  # entries[:_installed] are in place
        add_tracing_hook(self.install, self.uninstall)

    def add(self, owner, name, wrapper) -> None:
        original = getattr(owner, name)
        had_own = name in getattr(owner, "__dict__", {})
        self.entries.append((owner, name, wrapper, original, had_own))
        if callable(original):
            rebound_callables.append((original, wrapper))

    def add_code(self, fn, code) -> None:
        """Swap a Python function's code (so references imported by name, as in
        `from scipy.special import logsumexp`, reach the wrapper too)."""
        self.entries.append((fn, "__code__", code, fn.__code__, True))

    def install(self) -> None:
        with self.lock:
            for callback in self.before_install:
                callback()
            for owner, name, wrapper, _, _ in self.entries[self._installed:]:
                setattr(owner, name, wrapper)
            self._installed = len(self.entries)

    def uninstall(self) -> None:
        with self.lock:
            for owner, name, _, original, had_own in self.entries[:self._installed]:
                if had_own:
                    setattr(owner, name, original)
                else:
                    delattr(owner, name)  # the class attribute shows through again
            self._installed = 0


REBINDINGS = _Rebindings()
forksafe.renew_after_fork(vars(REBINDINGS), "lock", threading.Lock)


def rebind_while_tracing(owner, name, traced):
    """While tracing, `owner.name(...)` with a tracer among its arguments runs
    `traced(...)`; every other call runs the original. A plain Python function
    has its code swapped instead, which also reaches references to it that
    were imported by name."""
    original = getattr(owner, name)
    if isinstance(original, types.FunctionType):
        REBINDINGS.add_code(original, _trampoline(original, traced))
        return
    REBINDINGS.add(owner, name, _router(original, traced))


def _router(original, traced):
    def route(*args, **kwargs):
        if holds_tracer(args) or holds_tracer(list(kwargs.values())):
            return traced(*args, **kwargs)
        return original(*args, **kwargs)

    route.__name__ = getattr(original, "__name__", "route")
    return route


def _trampoline(fn, traced):
    """Code for `fn` that calls a router: traced(...) on tracers, else a copy of
    `fn` with its original code. The router is a global of fn's module under a
    private name; the code has fn's free variables (unused) so it fits fn."""
    copy = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__,
                              fn.__closure__)
    copy.__kwdefaults__ = fn.__kwdefaults__
    route_name = f"_tracejit_route_{id(fn)}"
    fn.__globals__[route_name] = _router(copy, traced)
    free = fn.__code__.co_freevars
    call = f"return {route_name}(*args, **kwargs)"
    if free:
        lines = ["def outer():", f"    {' = '.join(free)} = None",
                 "    def trampoline(*args, **kwargs):", f"        {', '.join(free)},",
                 f"        {call}", "    return trampoline"]
    else:
        lines = ["def trampoline(*args, **kwargs):", f"    {call}"]
    namespace: dict = {}
    exec("\n".join(lines) + "\n", {}, namespace)
    made = namespace["outer"]() if free else namespace["trampoline"]
    return made.__code__


_ORIGINAL = {name: getattr(np, name) for name in
             ("array", "asarray", "asanyarray", "ascontiguousarray", "r_", "c_")}


@implements(_ORIGINAL["array"])
def array(obj, dtype=None, *, copy=True, order="K", subok=False, ndmin=0, **unused):
    out = build(obj, dtype) if holds_tracer(obj) else asarray(obj, dtype)
    if ndmin > ops.aval_of(out).ndim:
        out = ops.expand_dims(out, tuple(range(ndmin - ops.aval_of(out).ndim)))
    return out


def _converter(a, dtype=None, *args, **kwargs):
    return build(a, dtype)


for _name in ("asarray", "asanyarray", "ascontiguousarray"):
    implements(_ORIGINAL[_name])(_converter)
    rebind_while_tracing(np, _name, _converter)
rebind_while_tracing(np, "array", array)
REBINDINGS.add(np, "r_", _Concatenator("r_"))
REBINDINGS.add(np, "c_", _Concatenator("c_"))
LIST_BUILDER.append(sys.modules[__name__])  # np.asarray of a list holding tracers builds here


# Functions NumPy gives the list itself (`np.mean([a, b])`): its dispatch looks at
# the list, not at the tracers inside, and its own code then asks them for data.
# While tracing, a list or tuple of traced values among their arguments is built
# into one traced array first, as np.array([...]) would.
_TAKING_ARRAY_LIKES = [(np, name) for name in (
    "mean", "std", "var", "sum", "prod", "max", "min", "amax", "amin", "median", "average",
    "append", "cumsum", "ptp", "nanmean", "nansum")] + [(np.linalg, "norm")]


def _from_lists(original):
    def traced(*args, **kwargs):
        from .api import FUNCTIONS
        args = [build(a) if isinstance(a, (list, tuple)) and holds_tracer(a) else a
                for a in args]
        kwargs = {k: build(v) if isinstance(v, (list, tuple)) and holds_tracer(v) else v
                  for k, v in kwargs.items()}
        fn = FUNCTIONS.get(original)
        if fn is None:  # not traced: NumPy's own error path names it
            return original(*args, **kwargs)
        return fn(*args, **kwargs)

    return traced


for _owner, _name in _TAKING_ARRAY_LIKES:
    if hasattr(_owner, _name):
        rebind_while_tracing(_owner, _name, _from_lists(getattr(_owner, _name)))
