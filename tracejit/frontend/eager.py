"""The eager side of `GradientTape`: operations recorded as IR while they run.

An `EagerBuilder` is the `Builder` of eager tapes. Operations on watched
values go through `bind` exactly as in a trace - the same primitives, the same
shape rules, one equation each - and `result` also computes the value with the
primitive's NumPy implementation. What they return are `EagerTracer`s: tracers
that carry their value, so they print, convert (`float`, `np.asarray`,
`.numpy()`) and branch like arrays. Once no tape records on their builder they
compute with NumPy on their values. Differentiation is tape.py's business: it
cuts the recorded equations into a program and hands it to autodiff.
"""

from __future__ import annotations

import numpy as np

from ..core.ir import AVal, Var
from ..core.shapes import Sym, resolve
from ..numpy import api as numpy_api
from ..trace.tracer import OPERANDS, Builder, Tracer, _builders
from .variables import recording_tapes


class EagerBuilder(Builder):
    """Records the operations of eager tapes (nested tapes share one) and
    keeps every recorded value, for the gradient."""

    def __init__(self):
        super().__init__("tape")
        self.values: dict[int, object] = {}  # id(Var) -> its value
        self.active = False  # on the builder stack: operations on its tracers record
        self.variable_inputs: dict[int, EagerTracer] = {}  # id(Variable) -> current read
        self.watched_arrays: list = []  # keeps watched arrays alive (inputs keyed by id)

    def push(self) -> None:
        _builders.append(self)
        self.active = True

    def pop(self) -> None:
        assert _builders and _builders[-1] is self, "tapes must exit in the order they entered"
        _builders.pop()
        self.active = False

    def result(self, prim, args, params, outs: list):
        values = prim.impl(*[self.value_of(a) for a in args], **_concrete_params(params))
        tracers = []
        for var, value in zip(outs, values if prim.multiple_results else [values]):
            self.values[id(var)] = value
            tracers.append(EagerTracer(self, var, value))
        return tracers if prim.multiple_results else tracers[0]

    def value_of(self, value):
        if isinstance(value, EagerTracer):
            return value.value
        if isinstance(value, Tracer):
            return self.values[id(value.ir_var)]
        return value

    def input(self, value) -> EagerTracer:
        """A new recorded input (a watched Variable's value, a watched array)."""
        var = Var(symbolic_aval(value))
        self.invars.append(var)
        self.values[id(var)] = value
        return EagerTracer(self, var, value)

    def capture(self, value) -> Var:
        """Arrays (and values of other tapes) met by recorded operations are
        constants of the recording, with symbolic sizes like inputs, so that
        the gradient program serves every batch size."""
        if isinstance(value, Tracer):
            value = value.value if isinstance(value, EagerTracer) else self.value_of(value)
        var = self._captured.get(id(value))
        if var is None:
            var = self._captured[id(value)] = Var(symbolic_aval(value))
            self.constvars.append(var)
            self.const_values.append(value)
            self.values[id(var)] = value
        return var

    def watch_array(self, value) -> EagerTracer:
        """`tape.watch(array)`: later operations meeting this array object see
        a recorded input instead of a constant."""
        var = self._captured.get(id(value))
        if var is None:
            tracer = self.input(value)
            self._captured[id(value)] = tracer.ir_var
            self.watched_arrays.append(value)
            return tracer
        return EagerTracer(self, var, self.values[id(var)])

    def read_variable(self, variable):
        """A Variable read while eager tapes record: a recorded input when a
        tape watches it (the same one until it is assigned), else its array."""
        tracer = self.variable_inputs.get(id(variable))
        if tracer is not None:
            return tracer
        if not any(t.builder is self and t._would_watch(variable) for t in recording_tapes):
            return variable._value
        tracer = self.variable_inputs[id(variable)] = self.input(variable._value)
        return tracer


def symbolic_aval(value) -> AVal:
    """The abstract value of a concrete array: non-1 sizes become symbols."""
    shape = tuple(d if d == 1 else Sym(d) for d in np.shape(value))
    return AVal(shape, np.result_type(value))


def _concrete_params(params: dict) -> dict:
    return {k: _concrete(v) for k, v in params.items()}


def _concrete(value):
    if isinstance(value, Sym):
        root = resolve(value)
        return root if type(root) is int else root.value
    if isinstance(value, tuple):
        return tuple(_concrete(v) for v in value)
    return value


# ------------------------------------------------------------ the values

def unwrap(tree):
    """`tree` with eager tracers replaced by their values (nested containers too)."""
    kind = type(tree)
    if kind is EagerTracer:
        return tree.value
    if kind is tuple or kind is list:
        return kind(unwrap(t) for t in tree)
    if kind is dict:
        return {k: unwrap(v) for k, v in tree.items()}
    return tree


class EagerTracer(Tracer):
    """A recorded value of an eager tape. While a tape records it traces like
    any tracer; afterwards NumPy operations use its value."""

    __slots__ = ("value",)

    def __init__(self, builder: EagerBuilder, var: Var, value):
        super().__init__(builder, var)
        self.value = value

    def numpy(self):
        """A copy of the value (a NumPy scalar when 0-d), as `EagerTensor.numpy()`."""
        return np.asarray(self.value).copy()[()]

    def __array__(self, dtype=None, copy=None):
        return np.array(self.value, dtype=dtype) if copy else np.asarray(self.value, dtype)

    def __float__(self):
        return float(self.value)

    def __int__(self):
        return int(self.value)

    def __index__(self):
        return int(np.asarray(self.value).__index__())

    def __bool__(self):
        return bool(self.value)

    def item(self, *args):
        return np.asarray(self.value).item(*args)

    def tolist(self):
        return np.asarray(self.value).tolist()

    def __format__(self, spec):
        return format(self.value, spec)

    def __repr__(self):
        value = np.asarray(self.value)
        return f"EagerTensor({value!r}, shape={value.shape}, dtype={value.dtype})"

    __str__ = __repr__

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if self.builder.active:
            return numpy_api.array_ufunc(self, ufunc, method, *inputs, **kwargs)
        return getattr(ufunc, method)(*unwrap(inputs), **unwrap(kwargs))

    def __array_function__(self, func, types, args, kwargs):
        if self.builder.active:
            return numpy_api.array_function(self, func, types, args, kwargs)
        return func(*unwrap(args), **unwrap(kwargs))


def _after_recording(name, method):
    """Tracer's `name`, or the same on the value once the tape stopped."""
    if isinstance(method, property):
        def get(self):
            return method.fget(self) if self.builder.active else getattr(
                np.asarray(self.value), name)
        return property(get)

    def call(self, *args, **kwargs):
        if self.builder.active:
            return method(self, *args, **kwargs)
        return getattr(np.asarray(self.value), name)(*unwrap(args), **unwrap(kwargs))

    call.__name__ = name
    return call


for _name, _method in numpy_api.METHODS.items():
    if _name not in EagerTracer.__dict__:
        setattr(EagerTracer, _name, _after_recording(_name, _method))

# Once its tape stopped, a recorded value is its array for the op layer too.
OPERANDS[EagerTracer] = lambda t: t if t.builder.active else t.value

__all__ = ["EagerBuilder", "EagerTracer", "unwrap"]
