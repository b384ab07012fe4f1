"""The eager side of `GradientTape`: operations recorded as IR while they run.

An `EagerBuilder` is the `Builder` of eager tapes. Operations on watched
values go through `bind` exactly as in a trace - the same primitives, the same
shape rules, one equation each - and `result` also computes the value with the
primitive's NumPy implementation. What they return are `EagerTracer`s: tracers
that carry their value, so they print, convert (`float`, `np.asarray`,
`.numpy()`) and branch like arrays. Once no tape records on their builder they
compute with NumPy on their values. Differentiation is tape.py's business: it
cuts the recorded equations into a program and hands it to autodiff.

The recording is lean (`fast_bind`, tried first by `bind`): sizes are
concrete, and each recorded step follows a trie of the structures recorded
before (`_Node`): when a recording repeats an earlier one (a training loop),
an op's result types and the user's line come from the node, its value from
the primitive's NumPy implementation called directly. Only a step that is new
runs the shape rule and reads the stack. The node a recording ends on names
its structure: tape.py keeps the gradient's cut per node.
"""

from __future__ import annotations

import numpy as np

from ..core.errors import (
    TracejitError,
    UnsupportedError,
    leaf_problem,
    user_location,
    with_location,
)
from ..core.ir import AVal, Eqn, Literal, Var
from ..core.shapes import Sym, resolve
from ..numpy import api as numpy_api
from ..trace.tracer import (
    OPERANDS,
    Builder,
    Tracer,
    _builders,
    _locations,
    describe_operands,
    weak_aval,
)
from .eager_memo import MAX_ENTRIES, MISS, SEEN, UNMEMOISABLE, replayer
from .variables import recording_tapes


class EagerBuilder(Builder):
    """Records the operations of eager tapes (nested tapes share one) and
    keeps every recorded value, for the gradient."""

    def __init__(self):
        super().__init__("tape")
        self.values: dict[int, object] = {}  # id(Var) -> its value
        self.active = False  # on the builder stack: operations on its tracers record
        # id(Variable) -> its current read (a Var: a tracer here would make a
        # cycle, and every step's recording would wait for the cyclic GC)
        self.variable_inputs: dict[int, Var] = {}
        self.watched_arrays: list = []  # keeps watched arrays alive (inputs keyed by id)
        self.ordinal: dict[int, int] = {}  # id(Var) -> its position in `vars`
        self.vars: list[Var] = []  # every recorded variable, in order
        self.trail: list = []  # their values, in the same order (the gradient gathers them)
        self.node = _TRIE.root  # the structure recorded so far (see `_Node`)
        self.unshared = 0  # steps recorded off the trie (their structure is their own)
        self.reads = 0  # values read by Python (`bool(t)`...): a call that does is not memoised

    def push(self) -> None:
        _builders.append(self)
        self.active = True

    def pop(self) -> None:
        assert _builders and _builders[-1] is self, "tapes must exit in the order they entered"
        _builders.pop()
        self.active = False

    def result(self, prim, args, params, outs: list):
        """bind's general path (symbolic parameters, foreign tracers): its
        steps get a structure of their own, never shared with another step."""
        values = prim.impl(*[self.value_of(a) for a in args], **_concrete_params(params))
        if outs:
            self.node = _Node(None, None)
            self.unshared += 1
            self._number_all(prim, outs, values)
        return self._tracers(prim, outs, values)

    def _tracers(self, prim, outs: list, values):
        tracers = []
        for var, value in zip(outs, values if prim.multiple_results else [values]):
            self.values[id(var)] = value
            tracers.append(EagerTracer(self, var, value))
        return tracers if prim.multiple_results else tracers[0]

    # ------------------------------------------------------ the lean path
    def fast_bind(self, prim, args, params, traced: bool):
        """`bind` on this tape's values: the equation and its value. The step
        of structure it makes (`_Node`) knows the result types and the user's
        line when an earlier recording took it; otherwise they are worked out
        (and the line read) now. NotImplemented leaves the op to `bind`'s
        general path (foreign tracers, or constants only: bind folds them)."""
        inputs, values, refs = [], [], []
        recorded = traced
        ordinal = self.ordinal
        for arg in args:
            kind = type(arg)
            if kind is EagerTracer and arg.builder is self:
                atom = arg.ir_var
                recorded = True
                refs.append(ordinal[id(atom)])
                values.append(arg.value)
            elif kind in _LITERAL_AVALS:  # a Python scalar, a NumPy scalar of a plain dtype
                atom = _literal(arg, _LITERAL_AVALS[kind])
                refs.append(kind)  # (the type stands for the literal's aval)
                values.append(arg)
            elif kind is np.ndarray or isinstance(arg, np.generic):
                atom = None  # a constant: captured below, if the op is recorded
                refs.append(None)
                values.append(arg)
            else:
                return NotImplemented
            inputs.append(atom)
        if not recorded:
            return NotImplemented
        if None in refs:
            self._constants(inputs, refs, values)
        key = (id(prim), tuple(refs), params_key(params))
        try:
            node = self.node.children.get(key)
        except TypeError:  # an unhashable parameter: a structure of its own
            node, key = None, None
        if node is None:
            location = _locations[-1] if _locations else user_location()
            avals = self._result_types(prim, inputs, params, location)
            node = self._grow(key, _Node(avals, location, prim))
        else:
            location = _locations[-1] if _locations else node.location
        value = prim.impl(*values, **params)
        if node.single:  # one result (the common case, unrolled)
            var = Var(node.avals[0])
            self.eqns.append(Eqn(prim, inputs, params, [var], location))
            self.node = node
            self.ordinal[id(var)] = len(self.vars)
            self.vars.append(var)
            self.trail.append(value)
            self.values[id(var)] = value
            return EagerTracer(self, var, value)
        outs = [Var(aval) for aval in node.avals]
        if outs:  # an equation with no results is dead (the IR has no effects)
            self.eqns.append(Eqn(prim, inputs, params, outs, location))
            self.node = node
            self._number_all(prim, outs, value)
        return self._tracers(prim, outs, value)

    def _result_types(self, prim, inputs, params, location):
        """The shape and dtype rule, on concrete sizes (results are concrete)."""
        try:
            return prim.abstract_eval([a.aval for a in inputs], params, self.checks)
        except TracejitError as err:
            message = f"{err.args[0]}\n  op: {prim.name} on {describe_operands(self, inputs)}"
            raise type(err)(with_location(message, location)) from None

    def _constants(self, inputs: list, refs: list, values: list) -> None:
        """The array operands of a recorded op: captured constants (literals when 0-d)."""
        for k, ref in enumerate(refs):
            if ref is None:
                atom = inputs[k] = self._constant(values[k])
                refs[k] = self.ordinal[id(atom)] if type(atom) is Var else atom.aval

    def _constant(self, array):
        var = self._captured.get(id(array)) if array.ndim else None
        if var is not None:
            return var
        problem = leaf_problem(array)
        if problem:
            raise UnsupportedError(with_location(f"a constant used here {problem}"))
        return self.capture(array) if array.ndim else Literal(array, AVal((), array.dtype))

    # ------------------------------------------------------ the memo of calls
    def call_memo(self, head, fn, args, kwargs, arrays_ok=False):
        """`fn(*args, **kwargs)` (`head` names the call: a ufunc, a NumPy
        function, a method), replayed when this node of the trie has seen
        the same call before (eager_memo.py). `arrays_ok`: array operands
        enter the key by type only (elementwise ops and matmul, whose
        structure does not depend on their values)."""
        items = _builders.items
        if not items or items[-1] is not self or _locations.items:
            return fn(*args, **kwargs) if kwargs else fn(*args)
        key = self._call_key(head, args, kwargs, arrays_ok)
        if key is None:
            return fn(*args, **kwargs) if kwargs else fn(*args)
        node = self.node
        memo = node.memo
        if memo is None:
            memo = node.memo = {}
        entry = memo.get(key)
        if entry is None:  # the first time here: only noted (most structures never recur)
            if len(memo) < MAX_ENTRIES and _TRIE.memos < MAX_MEMOS:
                memo[key] = SEEN
                _TRIE.memos += 1
            return fn(*args, **kwargs) if kwargs else fn(*args)
        if entry is SEEN:  # the second time: recorded and turned into a replay
            return self._first_call(memo, key, fn, args, kwargs)
        if entry is not UNMEMOISABLE:
            result = entry(self, args)
            if result is not MISS:
                return result
        return fn(*args, **kwargs) if kwargs else fn(*args)

    def _call_key(self, head, args, kwargs, arrays_ok):
        """(head, each operand: its position in the recording (a value of this
        tape), its type and value (a static argument), or for an array its
        type, which operand it aliases and where it was captured (if it was);
        the keywords likewise). None when some argument is of another kind."""
        key = [head]
        ordinal = self.ordinal
        for k, arg in enumerate(args):
            kind = type(arg)
            if kind is EagerTracer:
                position = ordinal.get(id(arg.ir_var))
                if position is None or arg.builder is not self:
                    return None
                key.append(position)
            elif kind in _STATIC_KINDS:
                # (-0.0 == 0.0, but x * -0.0 is not x * 0.0)
                key.append((kind, arg) if arg or kind not in _FLOATS else (kind, arg, str(arg)))
            elif kind is np.ndarray and arrays_ok and arg.ndim:
                var = self._captured.get(id(arg))
                same = k
                for i in range(k):
                    if args[i] is arg:
                        same = i
                        break
                key.append((arg.shape, arg.dtype, same,
                            None if var is None else ordinal[id(var)]))
            else:
                part = _static_key(arg)
                if part is None:
                    return None
                key.append(part)
        if kwargs:
            for name, value in kwargs.items():
                part = _static_key(value)
                if part is None:
                    return None
                key.append((name, part))
        return tuple(key)  # (hashable: every part is)

    def _first_call(self, memo: dict, key, fn, args, kwargs):
        """The call in full (its second time at this node), turned into a
        replay for the next times when its structure depends only on the key."""
        start = (len(self.eqns), len(self.vars), len(self.constvars))
        marks = (self.unshared, self.reads, len(self.invars), _TRIE.generation)
        result = fn(*args, **kwargs) if kwargs else fn(*args)
        entry = None
        if marks == (self.unshared, self.reads, len(self.invars), _TRIE.generation):
            entry = replayer(self, args, result, start, self.node, EagerTracer)
        memo[key] = entry or UNMEMOISABLE
        return result

    # ------------------------------------------------------ the structure
    def _grow(self, key, node: _Node) -> _Node:
        """`node` as the step `key` after the current one (kept for later
        recordings unless the key is None: then no recording repeats it)."""
        if key is not None:
            _TRIE.count += 1
            if _TRIE.count > MAX_NODES:
                _TRIE.reset()
            self.node.children[key] = node
        else:
            self.unshared += 1
        return node

    def _number(self, var: Var, value) -> None:
        self.ordinal[id(var)] = len(self.vars)
        self.vars.append(var)
        self.trail.append(value)

    def _number_all(self, prim, outs: list, values) -> None:
        for var, value in zip(outs, values if prim.multiple_results else [values]):
            self._number(var, value)

    def _note_input(self, var: Var, kind: str, value) -> None:
        aval = var.aval
        key = (kind, aval.shape, aval.dtype)  # (cheaper to hash than the AVal)
        node = self.node.children.get(key) or self._grow(key, _Node((aval,), None))
        self.node = node
        self._number(var, value)

    def value_of(self, value):
        if isinstance(value, EagerTracer):
            return value.value
        if isinstance(value, Tracer):
            return self.values[id(value.ir_var)]
        return value

    def input(self, value) -> EagerTracer:
        """A new recorded input (a watched Variable's value, a watched array)."""
        var = Var(concrete_aval(value))
        self.invars.append(var)
        self.values[id(var)] = value
        self._note_input(var, "in", value)
        return EagerTracer(self, var, value)

    def capture(self, value) -> Var:
        """Arrays (and values of other tapes) met by recorded operations are
        constants of the recording."""
        if isinstance(value, Tracer):
            value = value.value if isinstance(value, EagerTracer) else self.value_of(value)
        var = self._captured.get(id(value))
        if var is None:
            var = self._captured[id(value)] = Var(concrete_aval(value))
            self.constvars.append(var)
            self.const_values.append(value)
            self.values[id(var)] = value
            self._note_input(var, "const", value)
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
        var = self.variable_inputs.get(id(variable))
        if var is not None:
            return EagerTracer(self, var, self.values[id(var)])
        if not any(t.builder is self and t._would_watch(variable) for t in recording_tapes):
            return variable._value
        tracer = self.input(variable._value)
        self.variable_inputs[id(variable)] = tracer.ir_var
        return tracer


def concrete_aval(value) -> AVal:
    """The abstract value of a recorded array: its sizes as they are (an eager
    recording serves one step; tape.py's gradient programs are keyed by them)."""
    if type(value) is np.ndarray:
        key = (value.shape, value.dtype)
        aval = _CONCRETE_AVALS.get(key)
        if aval is None:
            if len(_CONCRETE_AVALS) >= 4096:
                _CONCRETE_AVALS.clear()
            aval = _CONCRETE_AVALS[key] = AVal(*key)
        return aval
    return AVal(tuple(np.shape(value)), np.result_type(value))


_CONCRETE_AVALS: dict = {}  # (shape, dtype) -> its AVal (made once: AVal() is slow)


# scalar type -> the aval of its literals (Python scalars are weak)
_LITERAL_AVALS = {kind: weak_aval(kind()) for kind in (bool, int, float, complex)} | {
    kind: AVal((), np.dtype(kind)) for kind in (np.float32, np.float64, np.int32, np.int64,
                                                  np.bool_)}


def _static_key(value):
    """A static argument (a scalar, a tuple of them: axes, shapes) as part of a
    call's key: its type and value (and a zero's sign: x * -0.0 is not x * 0.0).
    None for anything else."""
    kind = type(value)
    if kind is tuple:
        parts = tuple(_static_key(v) for v in value)
        return None if None in parts else (kind, parts)
    if kind not in _STATIC_KINDS:
        return None
    return (kind, value) if value or kind not in _FLOATS else (kind, value, str(value))


_FLOATS = frozenset({float, np.float32, np.float64})
# types of static arguments, keyed by value in the memo of calls
_STATIC_KINDS = frozenset({bool, int, float, complex, str, type(None), type, np.float32,
                           np.float64, np.int32, np.int64, np.bool_} | {
    type(np.dtype(t)) for t in ("float32", "float64", "int32", "int64", "bool", "complex64",
                                "complex128")})


def _literal(value, aval: AVal) -> Literal:
    """`Literal(value, aval)` for a scalar, without NumPy's conversion machinery."""
    literal = Literal.__new__(Literal)
    literal.value = aval.dtype.type(value)
    literal.aval = aval
    return literal


class _Node:
    """A recording's structure so far, as a node of a trie shared by every
    eager recording: the root is the empty recording; a child is one more
    recorded input or constant (keyed by its type) or equation (keyed by its
    primitive, operands by position or, for literals, by type, and
    parameters). A node knows the result types of its step and the user's
    line of the first recording that took it, so a recording that repeats an
    earlier one's structure works out neither. tape.py keys the gradient's
    plan by the node a recording reached."""

    __slots__ = ("children", "avals", "location", "prim", "single", "memo")

    def __init__(self, avals, location, prim=None):
        self.children: dict = {}
        self.memo: dict | None = None  # call key -> its replay from here (eager_memo.py)
        self.avals, self.location = avals, location
        self.prim = prim  # (keeps the primitive whose id is in the keys alive)
        self.single = prim is not None and not prim.multiple_results and len(avals) == 1


class _Trie:
    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.root = _Node((), None)
        self.count = 0
        self.memos = 0  # memo entries on its nodes (at most MAX_MEMOS)
        self.generation = getattr(self, "generation", 0) + 1


MAX_NODES = 200_000
MAX_MEMOS = 20_000  # calls memoised (each replay holds a small code object)
_TRIE = _Trie()


def params_key(params: dict):
    """Parameters as part of a key (with their types: 1 and 1.0 differ)."""
    return tuple((k, type(v), v) for k, v in params.items()) if params else ()


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
        self.builder = builder
        self.ir_var = var
        self.value = value

    def numpy(self):
        """A copy of the value (a NumPy scalar when 0-d), as `EagerTensor.numpy()`."""
        self.builder.reads += 1
        return np.asarray(self.value).copy()[()]

    def __array__(self, dtype=None, copy=None):
        self.builder.reads += 1
        return np.array(self.value, dtype=dtype) if copy else np.asarray(self.value, dtype)

    def __float__(self):
        self.builder.reads += 1
        return float(self.value)

    def __int__(self):
        self.builder.reads += 1
        return int(self.value)

    def __index__(self):
        self.builder.reads += 1
        return int(np.asarray(self.value).__index__())

    def __bool__(self):
        self.builder.reads += 1
        return bool(self.value)

    def item(self, *args):
        self.builder.reads += 1
        return np.asarray(self.value).item(*args)

    def tolist(self):
        self.builder.reads += 1
        return np.asarray(self.value).tolist()

    def __format__(self, spec):
        return format(self.value, spec)

    def __repr__(self):
        value = np.asarray(self.value)
        return f"EagerTensor({value!r}, shape={value.shape}, dtype={value.dtype})"

    __str__ = __repr__

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        builder = self.builder
        if builder.active:
            fn = _UFUNCS.get(ufunc)
            if fn is not None and not kwargs and method == "__call__":
                return builder.call_memo(ufunc, fn, inputs, None, True)
            return numpy_api.array_ufunc(self, ufunc, method, *inputs, **kwargs)
        return getattr(ufunc, method)(*unwrap(inputs), **unwrap(kwargs))

    def __array_function__(self, func, types, args, kwargs):
        builder = self.builder
        if builder.active:
            fn = _FUNCTIONS.get(func)
            if fn is not None:
                return builder.call_memo(func, fn, args, kwargs)
            return numpy_api.array_function(self, func, types, args, kwargs)
        return func(*unwrap(args), **unwrap(kwargs))


_UFUNCS, _FUNCTIONS = numpy_api.UFUNCS, numpy_api.FUNCTIONS


def _after_recording(name, method):
    """Tracer's `name`, or the same on the value once the tape stopped."""
    if isinstance(method, property):
        def get(self):
            return method.fget(self) if self.builder.active else getattr(
                np.asarray(self.value), name)
        return property(get)

    if name in _BINARY_OPERATORS:  # the hot ones: no argument packing
        def operator(self, other):
            builder = self.builder
            if builder.active:
                if type(other) is not EagerTracer:
                    resolve_fn = OPERANDS.get(type(other))  # a Variable: its value here
                    if resolve_fn is not None:
                        other = resolve_fn(other)
                return builder.call_memo(method, method, (self, other), None, True)
            return getattr(np.asarray(self.value), name)(unwrap(other))

        operator.__name__ = name
        return operator

    def call(self, *args, **kwargs):
        builder = self.builder
        if builder.active:
            return builder.call_memo(method, method, (self, *args), kwargs)
        return getattr(np.asarray(self.value), name)(*unwrap(args), **unwrap(kwargs))

    call.__name__ = name
    return call


_BINARY_OPERATORS = {f"__{kind}{op}__" for kind in ("", "r") for op in (
    "add", "sub", "mul", "truediv", "pow", "matmul")}


for _name, _method in numpy_api.METHODS.items():
    if _name not in EagerTracer.__dict__:
        setattr(EagerTracer, _name, _after_recording(_name, _method))

# Once its tape stopped, a recorded value is its array for the op layer too.
OPERANDS[EagerTracer] = lambda t: t if t.builder.active else t.value

__all__ = ["EagerBuilder", "EagerTracer", "unwrap"]
