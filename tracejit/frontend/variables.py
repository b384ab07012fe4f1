"""Variables: mutable arrays that compiled functions read and assign.

A `Variable` holds a NumPy array and can be used wherever an array can
(operators, ufuncs, `np.*` functions, methods). What a use of it means
depends on where it happens:

- outside any trace it is its value;
- inside `@tracejit.function` its value is an implicit input: the first trace
  that reads Variables records them on the function (`Function.variables`), and
  from then on every call passes their current values as trailing kernel
  inputs (the call protocol, protocol.py; a `Scope` here is its hook into a
  trace). A new value reuses the kernel; a new dtype or rank misses the
  dispatch key and traces again.
  `assign` inside the trace makes the new value an extra kernel output, which
  the wrapper stores back into the Variable after the call;
- inside an eager `GradientTape` (tape.py) a watched Variable is a recorded
  input of the tape's program.

Assignment always rebinds the Variable to a new array (never writes into the
old one), so values already handed out (to a tape, to the user) never change.
"""

from __future__ import annotations

import contextlib
import operator
import threading
from dataclasses import replace

import numpy as np

from ..core import pytree
from ..core.errors import ShapeError, TracerTypeError, UnsupportedError, with_location
from ..core.ir import Var
from ..core.shapes import bind_shape, join
from ..trace import ops
from ..trace.tracer import OPERANDS, Builder, Tracer, _builders, abstractify

# Tapes recording right now (tape.py): told about every Variable read.
recording_tapes: list = []


class VariablesDiscovered(Exception):  # noqa: N818 - a signal, not an error
    """A trace read or assigned Variables its function did not know yet; the
    call is retried with them as trailing inputs (TensorFlow also traces twice
    when a function creates its variables on the first call). Raised and caught
    by the call protocol (protocol.py) only."""


class Variable:
    """A mutable array, as `tf.Variable`:

        W = tracejit.Variable(np.zeros((3, 2)), name="W")
        W.assign_sub(0.1 * grad)         # eagerly, or inside @tracejit.function
        W.numpy()                        # a copy of the value

    `shape` is fixed unless given with `None` entries (`shape=(None, 2)`) or
    `validate_shape=False`; `dtype` is fixed (assigned values are cast)."""

    __array_priority__ = 2000  # NumPy binary operators defer to ours

    def __init__(self, initial_value, trainable=True, name=None, dtype=None, shape=None,
                 validate_shape=True):
        if callable(initial_value):
            initial_value = initial_value()
        value = _concrete(initial_value, "a Variable's initial value")
        self._value = _stored(np.array(value, dtype=dtype))
        self.name = name or "Variable"
        self.path = self.name
        self.trainable = bool(trainable)
        if not validate_shape:
            self._spec = None
        else:
            self._spec = tuple(np.shape(self._value) if shape is None else shape)
            _check_shape(self, np.shape(self._value))

    # -------------------------------------------------------------- value
    @property
    def dtype(self) -> np.dtype:
        return self._value.dtype

    @property
    def shape(self) -> tuple:
        return np.shape(self._value)

    @property
    def ndim(self) -> int:
        return np.ndim(self._value)

    @property
    def size(self) -> int:
        return int(np.size(self._value))

    @property
    def value(self):
        """The value where it is used: an array, or a traced value inside a trace."""
        return read(self)

    def read_value(self):
        return read(self)

    def numpy(self):
        """A copy of the current value (a NumPy scalar for 0-d variables)."""
        return self._value.copy()

    def __array__(self, dtype=None, copy=None):
        if copy:
            return np.array(self._value, dtype=dtype)
        return np.asarray(self._value, dtype=dtype)

    # --------------------------------------------------------- assignment
    def assign(self, value, read_value=True):
        """Set the value (cast to this Variable's dtype; the shape must fit).
        Inside a trace the new value becomes an output of the kernel."""
        scope = _owner_scope()
        if scope is not None:
            scope.assign(self, value)
        else:
            self._store(np.asarray(_concrete(value, "an assigned value")))
        return self if read_value else None

    def assign_add(self, delta, read_value=True):
        return self.assign(self._current() + delta, read_value)

    def assign_sub(self, delta, read_value=True):
        return self.assign(self._current() - delta, read_value)

    def _current(self):
        return current(self)

    def _store(self, value) -> None:
        _check_shape(self, np.shape(value))
        if not np.can_cast(value.dtype, self.dtype, "same_kind"):
            raise TracerTypeError(f"cannot assign a {value.dtype} value to Variable "
                                  f"{self.name!r} of dtype {self.dtype}")
        value = _stored(np.array(value, dtype=self.dtype))
        for tape in recording_tapes:
            tape._assigned(self)
        if np.shape(value) != np.shape(self._value):
            types_changed()  # (a dtype never changes)
        self._value = value

    # ------------------------------------------------------------ display
    def __repr__(self) -> str:
        return (f"<tracejit.Variable {self.name!r} shape={self.shape} dtype={self.dtype}, "
                f"numpy={self._value!r}>")

    def __hash__(self):
        return id(self)

    def __bool__(self):
        return bool(read(self))

    def __float__(self):
        return float(read(self))

    def __int__(self):
        return int(read(self))

    def __index__(self):
        return operator.index(read(self))

    def __len__(self):
        return len(read(self))

    def __iter__(self):
        return iter(read(self))

    def __getitem__(self, key):
        return read(self)[key]

    def __getattr__(self, name):
        """Array methods and properties (`.sum()`, `.T`, `.reshape(...)`) of the value."""
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(read(self), name)

    # ------------------------------------------------------ NumPy protocol
    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        if out is None and not kwargs and method == "__call__":
            values = [read(x) if type(x) is Variable else read_all(x) for x in inputs]
            tracer = _sole_override(values)
            if tracer is not None:  # its override at once: NumPy would dispatch again to it
                result = tracer.__array_ufunc__(ufunc, method, *values)
                if result is not NotImplemented:
                    return result
            return ufunc(*values)
        if out is not None and any(isinstance(o, Variable) for o in pytree.flatten(out)[0]):
            raise UnsupportedError(f"np.{ufunc.__name__}(..., out=<Variable>): use "
                                   "variable.assign(...) to change a Variable")
        if out is not None:
            kwargs["out"] = out
        return getattr(ufunc, method)(*read_all(inputs), **kwargs)

    def __array_function__(self, func, types, args, kwargs):
        return func(*read_all(args), **read_all(kwargs))


def _sole_override(values):
    """The tracer whose `__array_ufunc__` NumPy would call on `values`, when
    they are tracers of one type and plain arrays or scalars; else None."""
    found = None
    for value in values:
        kind = type(value)
        if isinstance(value, Tracer):
            if found is None:
                found = value
            elif kind is not type(found):
                return None
        elif kind is not np.ndarray and kind not in _PLAIN_SCALARS:
            return None
    return found


_PLAIN_SCALARS = frozenset({bool, int, float, complex, np.float32, np.float64, np.int32,
                            np.int64, np.bool_})


def _binary(op):
    return (lambda self, other: op(read(self), read_all(other)),
            lambda self, other: op(read_all(other), read(self)))


for _name, _op in [("add", operator.add), ("sub", operator.sub), ("mul", operator.mul),
                   ("truediv", operator.truediv), ("floordiv", operator.floordiv),
                   ("mod", operator.mod), ("pow", operator.pow), ("matmul", operator.matmul),
                   ("and", operator.and_), ("or", operator.or_), ("xor", operator.xor)]:
    _forward, _reflected = _binary(_op)
    setattr(Variable, f"__{_name}__", _forward)
    setattr(Variable, f"__r{_name}__", _reflected)
for _name, _op in [("lt", operator.lt), ("le", operator.le), ("gt", operator.gt),
                   ("ge", operator.ge), ("eq", operator.eq), ("ne", operator.ne)]:
    setattr(Variable, f"__{_name}__", _binary(_op)[0])
for _name, _op in [("neg", operator.neg), ("pos", operator.pos), ("abs", operator.abs),
                   ("invert", operator.invert)]:
    setattr(Variable, f"__{_name}__", lambda self, _op=_op: _op(read(self)))


def _stored(value):
    """0-d values are kept as NumPy scalars: what kernels return for them."""
    return value[()] if value.ndim == 0 else value


def _concrete(value, what: str):
    value = read(value) if isinstance(value, Variable) else value
    if isinstance(value, Tracer):
        concrete = getattr(value, "value", None)  # an eager tape's value
        if concrete is None:
            raise TracerTypeError(with_location(
                f"{what} must be concrete, got a traced {value.aval}",
                hint="create Variables outside traced code, or from NumPy arrays"))
        return concrete
    return value


def _check_shape(var: Variable, shape: tuple) -> None:
    spec = var._spec
    if spec is None:
        return
    if len(spec) != len(shape) or any(s is not None and s != d for s, d in zip(spec, shape)):
        raise ShapeError(f"cannot assign a value of shape {tuple(shape)} to Variable "
                         f"{var.name!r} of shape {tuple(spec)}")


def read_all(tree):
    """`tree` with every stand-in for an array in it (Variables, values of a
    finished eager tape; nested in lists, tuples, dicts) resolved."""
    kind = type(tree)
    if kind is tuple or kind is list:
        return kind(read_all(t) for t in tree)
    if kind is dict:
        return {k: read_all(v) for k, v in tree.items()}
    resolve_fn = OPERANDS.get(kind)
    return tree if resolve_fn is None else resolve_fn(tree)


def reraise_unless_passed(args) -> None:
    """Called while a dispatch error is handled: re-raise it unless `args`
    hold stand-ins for arrays (then the call goes on with their values)."""
    if not any(type(leaf) in OPERANDS for leaf in pytree.flatten(args)[0]):
        raise  # the exception being handled


# ------------------------------------------------------------------ reading

def read(var: Variable):
    """What `var` is here: its array outside traces; inside a trace the value
    the outermost trace holds for it (captured into nested traces); on an
    eager tape a recorded input when a tape watches it."""
    items = _builders.items
    if not items:
        return var._value
    owner = items[0]
    # (the common eager case, in one call: one builder open, one tape recording on it)
    if len(items) == 1 and owner.read_alone is not None and _current.scope is None and len(
            recording_tapes) == 1 and recording_tapes[0].builder is owner:
        return owner.read_alone(var, recording_tapes[0])
    scope = _owner_scope()
    if scope is not None:
        value = scope.read(var)
    elif hasattr(owner, "read_variable"):  # an eager tape's builder
        value = owner.read_variable(var)
    else:
        return var._value  # a trace of a program, not of user code
    current = _builders[-1]
    here = value
    if isinstance(value, Tracer) and value.builder is not current:
        here = Tracer(current, current.capture(value))
    for tape in recording_tapes:
        tape._read(var, value, here)
    return here


OPERANDS[Variable] = read


def current(var: Variable):
    """The value an update of `var` starts from: traced inside a trace of a
    function, else its array (eager updates are not recorded by tapes, as in
    TensorFlow)."""
    return read(var) if _owner_scope() is not None else var._value


# --------------------------------------------------- traces of functions

class _ThreadScope(threading.local):
    scope: Scope | None = None  # the Function trace open on this thread, if any


_current = _ThreadScope()


@contextlib.contextmanager
def scope_for(known: list):
    """The Scope through which the top-level trace opened inside reads Variables
    (`known`: those its function is already known to read, in order)."""
    scope = _current.scope = Scope(list(known))
    try:
        yield scope
    finally:
        _current.scope = None


def scope_open() -> bool:
    return _current.scope is not None


def _owner_scope() -> Scope | None:
    """The scope of the outermost trace, when that trace is a Function's."""
    scope = _current.scope
    if scope is None or not _builders:
        return None
    if scope.builder is None:
        scope.builder = _builders[0]
    return scope if scope.builder is _builders[0] else None


class Scope:
    """The Variables of one top-level trace of a Function: the known ones are
    inputs after the arguments, in the function's order; reads of unknown ones
    are recorded (and make the call retry); assignments become outputs."""

    def __init__(self, known: list):
        self.known = known
        self.builder: Builder | None = None
        self.values: dict[int, object] = {}  # id(var) -> its traced value now
        self.new: list = []
        self.assigned: dict[int, Variable] = {}
        self._inputs_made = False

    def read(self, var: Variable):
        self._make_inputs()
        value = self.values.get(id(var))
        if value is None:
            value = self.values[id(var)] = self._input(var)
            self.new.append(var)
        return value

    def assign(self, var: Variable, value) -> None:
        if _builders[-1] is not self.builder:
            raise UnsupportedError(with_location(
                f"assigning Variable {var.name!r} inside grad/jvp/vjp is not supported",
                hint="compute gradients with a GradientTape and assign outside the transform"))
        old = self.read(var)
        value = ops.convert(read_all(value), var.dtype)
        shape = ops.aval_of(value).shape
        if len(shape) != old.ndim:
            raise ShapeError(with_location(
                f"assign: a value of rank {len(shape)} to Variable {var.name!r} of shape "
                f"{var.shape}"))
        for a, b in zip(old.aval.shape, shape):
            join(a, b, f"assign to Variable {var.name!r}", self.builder.checks)
        self.values[id(var)] = value
        self.assigned[id(var)] = var

    def _make_inputs(self) -> None:
        if not self._inputs_made:
            self._inputs_made = True
            for var in self.known:
                self.values[id(var)] = self._input(var)

    def _input(self, var: Variable) -> Tracer:
        builder = self.builder
        aval = abstractify(var._value, len(builder.invars), builder)
        bind_shape(aval.shape)  # a Variable's sizes are part of the dispatch key
        return builder.new_input(aval)

    def finish(self, program, treedef, writes: bool):
        """The traced program with the Variables' inputs and written outputs
        (call this only when the trace discovered no new Variable: `self.new`)."""
        if not self.known:
            return program, treedef
        self._make_inputs()
        program = replace(program, invars=list(self.builder.invars))
        if not self.assigned:
            return program, ("t", (treedef, ("d", (), ()))) if writes else treedef
        if not writes:
            raise UnsupportedError(
                "assigning Variables inside grad/jvp/vjp is not supported; use a "
                "GradientTape inside @tracejit.function to compute and apply gradients")
        return self._with_writes(program, treedef)

    def _with_writes(self, program, treedef):
        computed = {id(v) for e in program.eqns for v in e.outputs}
        index = {id(v): k for k, v in enumerate(self.known)}
        writes = []
        for key in self.assigned:
            atom = self.builder.atom(self.values[key])
            # a kernel returns an input as it is: store a copy, never the caller's array
            aliased = isinstance(atom, Var) and id(atom) not in computed
            writes.append((~index[key] if aliased else index[key], atom))
        writes.sort(key=lambda w: w[0])
        keys = tuple(k for k, _ in writes)
        outs = list(program.outvars) + [atom for _, atom in writes]
        written = ("d", keys, (pytree.LEAF,) * len(keys))
        return replace(program, outvars=outs), ("t", (treedef, written))


# Changes whenever a Variable's shape changes (only Variables made with free
# dimensions can): the dispatch key of the trailing inputs, so a cached call
# makes no per-Variable check. Values written back by kernels keep their shape.
epoch = [0]


def types_changed() -> None:
    epoch[0] += 1


__all__ = ["Variable", "read", "VariablesDiscovered"]
