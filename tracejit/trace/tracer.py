"""Tracing: run the user's Python function on `Tracer`s and record the IR.

A `Builder` collects equations for one program. Tracers are placeholders that
know only their abstract value; every NumPy operation on them goes through
`bind`, which applies the primitive's shape rule and records an equation.
Builders nest (a `grad` traced inside a `function`): a tracer of an outer
builder met by an inner one is captured as an input of the inner program.
The stack of open builders is per thread: a call made on another thread while
a trace is open traces (or runs) on its own, never into that trace.
"""

from __future__ import annotations

import contextlib
import functools
import threading

import numpy as np

from ..core import forksafe, pytree
from ..core.errors import (
    ConcretizationError,
    LeakedTracerError,
    ShapeError,
    TracejitError,
    TracerTypeError,
    UnsupportedError,
    describe_value,
    leaf_problem,
    user_location,
    with_location,
)
from ..core.ir import AVal, Eqn, Literal, Program, Var
from ..core.shapes import ShapeChecks, Sym, format_shape, resolve


class _ThreadStack(threading.local):
    """A stack per thread: a trace belongs to the thread running it, so a call
    made on another thread meanwhile neither records into it nor sees its tracers."""

    def __init__(self):
        self.items: list = []

    def append(self, item) -> None:
        self.items.append(item)

    def pop(self):
        return self.items.pop()

    def __getitem__(self, index):
        return self.items[index]

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):
        return iter(self.items)

    def __contains__(self, item) -> bool:
        return any(i is item for i in self.items)


_builders = _ThreadStack()  # this thread's open builders, innermost last
_locations = _ThreadStack()  # set while replaying or differentiating an equation
# (install, uninstall) pairs: install runs when a thread opens its outermost trace
# (it must be idempotent), uninstall when the process's last trace closes, whichever
# threads they run on (numpy_build rebinds np.array & co. for the duration)
_tracing_hooks: list[tuple] = []
_hooks_lock = threading.Lock()
forksafe.renew_after_fork(globals(), "_hooks_lock", threading.Lock)
# (original, stand-in) pairs among those rebindings: the stand-in replaces a
# callable process-wide, so a module imported meanwhile on another thread (Numba's,
# registering its overloads) sees it; backend/rebound.py registers the original too
rebound_callables: list[tuple] = []
# Context-manager factories `guard(fn)` entered around each `trace(fn, ...)`
_trace_guards: list = []
tracing_thread: list[int] = []  # the threads with a trace open (one entry per thread)


def add_tracing_hook(install, uninstall) -> None:
    _tracing_hooks.append((install, uninstall))


def add_trace_guard(guard) -> None:
    _trace_guards.append(guard)

# Types that stand for an array and know what they are in the current trace
# (a `tracejit.Variable` reads as a traced input): type -> fn(value) -> operand.
OPERANDS: dict[type, object] = {}


def operand(value):
    """`value` as the op layer sees it: registered stand-ins are resolved."""
    resolve_fn = OPERANDS.get(type(value))
    return value if resolve_fn is None else resolve_fn(value)


@contextlib.contextmanager
def located(location: str):
    """Equations made inside take `location` (the equation being replayed or
    differentiated), not the caller's frame: generated code, and so the
    kernel cache key, must not depend on where a transformation is called."""
    _locations.append(location)
    try:
        yield
    finally:
        _locations.pop()


class Builder:
    """Collects the equations of one program while its function is traced."""

    fast_bind = None  # (prim, args, params, _traced) -> result or NotImplemented (eager tapes)
    call_memo = None  # (head, fn, args, kwargs) -> fn's result, replayed (eager tapes)
    read_alone = None  # (variable, tape) -> its read, the builder and tape alone (eager tapes)

    def __init__(self, name: str = "fn"):
        self.name = name
        self.invars: list[Var] = []
        self.eqns: list[Eqn] = []
        self.constvars: list[Var] = []
        self.const_values: list = []
        self._captured: dict[int, Var] = {}
        self.checks = ShapeChecks()
        self.input_syms: list[tuple[int, int, Sym]] = []
        self.input_names: list[str] = []  # the user's name of each input, for messages

    def __enter__(self) -> Builder:
        if not _builders:  # this thread's outermost trace: (re)install, idempotent
            with _hooks_lock:
                for install, _ in _tracing_hooks:
                    install()
                tracing_thread.append(threading.get_ident())
        _builders.append(self)
        return self

    def __exit__(self, *exc) -> None:
        _builders.pop()
        if not _builders:
            with _hooks_lock:
                tracing_thread.remove(threading.get_ident())
                if not tracing_thread:
                    for _, uninstall in reversed(_tracing_hooks):
                        uninstall()

    def new_input(self, aval: AVal) -> Tracer:
        var = Var(aval)
        self.invars.append(var)
        return Tracer(self, var)

    def capture(self, value) -> Var:
        """An array or outer tracer used here becomes a constant input."""
        key = id(value)
        if key not in self._captured:
            aval = value.aval if isinstance(value, Tracer) else AVal(value.shape, value.dtype)
            var = Var(aval)
            self.constvars.append(var)
            self.const_values.append(value)
            self._captured[key] = var
        return self._captured[key]

    def atom(self, value):
        """The IR operand for `value`: a variable, a captured constant or a literal."""
        if isinstance(value, Tracer):
            if value.builder is self:
                return value.ir_var
            check_live(value)
            return self.capture(value)
        if isinstance(value, PYTHON_SCALARS) and not isinstance(value, np.generic):
            return Literal(value, weak_aval(value))
        if isinstance(value, (np.ndarray, np.generic)):
            problem = leaf_problem(value)
            if problem:
                raise UnsupportedError(with_location(f"a constant used here {problem}"))
            if value.ndim == 0:
                return Literal(value, AVal((), value.dtype))
            return self.capture(value)
        if type(value) in OPERANDS:
            return self.atom(operand(value))
        raise TracerTypeError(with_location(
            f"cannot use a {type(value).__name__} as an array operand"))

    def result(self, prim, args, params, outs: list):
        """What `bind` hands back for a recorded equation: its tracer(s). (The
        eager tape's builder also computes the values.)"""
        if prim.multiple_results:
            return [Tracer(self, out) for out in outs]
        return Tracer(self, outs[0])

    def program(self, outputs: list) -> Program:
        outvars = [self.atom(o) for o in outputs]
        return Program(self.invars, self.constvars, self.eqns, outvars, self.checks, self.name,
                       self.const_values)


CONTROL_FLOW_HINT = (
    "use np.where(cond, a, b) for data-dependent values, tracejit.lax.cond / "
    "tracejit.lax.while_loop for data-dependent control flow, or mark the argument static "
    "(static_argnums / static_argnames); to follow any Python control flow, record the "
    "function eagerly with tracejit.GradientTape instead of tracing it")


def known_value(tracer):
    """The NumPy value of `tracer` if it depends on no input's value (only on
    constants and sizes, which are then bound); else None."""
    builder = tracer.builder
    producer = {id(v): e for e in builder.eqns for v in e.outputs}
    consts = {id(v): c for v, c in zip(builder.constvars, builder.const_values)}
    values: dict[int, object] = {}

    def value_of(atom):
        if isinstance(atom, Literal):
            return atom.value
        key = id(atom)
        if key in values:
            return values[key]
        if key in consts:
            const = consts[key]
            if isinstance(const, Tracer):
                raise LookupError
            values[key] = const
            return const
        eqn = producer.get(key)
        if eqn is None:
            raise LookupError  # an input of the program
        if eqn.prim.shape_only:
            from ..core.shapes import bind as bind_dim
            args = [np.empty(tuple(bind_dim(d) for d in a.aval.shape)) for a in eqn.inputs]
        else:
            args = [value_of(a) for a in eqn.inputs]
        params = {k: _bound(v) for k, v in eqn.params.items()}
        with np.errstate(all="ignore"):
            values[key] = np.asarray(eqn.prim.impl(*args, **params))
        return values[key]

    try:
        return np.asarray(value_of(tracer.ir_var), dtype=tracer.dtype)
    except LookupError:
        return None


def _bound(param):
    from ..core.shapes import bind as bind_dim
    if isinstance(param, Sym):
        return bind_dim(param)
    if isinstance(param, tuple):
        return tuple(_bound(p) for p in param)
    return param


PYTHON_SCALARS = (bool, int, float, complex)  # weakly typed arguments and operands


def weak_aval(value) -> AVal:
    """Python scalars are weakly typed: they take the other operand's dtype."""
    if isinstance(value, bool):
        return AVal((), np.dtype(bool), True)
    if isinstance(value, int):
        return AVal((), np.dtype(np.int64), True)
    if isinstance(value, complex):
        return AVal((), np.dtype(np.complex128), True)
    return AVal((), np.dtype(np.float64), True)


def current_builder() -> Builder | None:
    return _builders[-1] if _builders else None



def bind(prim, *args, _traced=False, **params):
    """Apply `prim`: record an equation when tracing, else run the NumPy reference.
    Constant operands are folded eagerly unless the result's shape is symbolic
    (a parameter holds a `Sym`) or `_traced` asks for an equation anyway."""
    builder = _builders[-1] if _builders else None
    if builder is not None and builder.fast_bind is not None:
        result = builder.fast_bind(prim, args, params, _traced)  # an eager tape's lean path
        if result is not NotImplemented:
            return result
    if builder is None or not (_traced or any(isinstance(a, Tracer) for a in args)
                               or _symbolic_params(params)):
        for a in args:
            if isinstance(a, Tracer):
                check_live(a)  # no trace is running: it escaped one
        return prim.impl(*args, **params)
    inputs = [builder.atom(a) for a in args]
    location = _locations[-1] if _locations else user_location()
    joins = len(builder.checks.pairs)
    try:
        avals = prim.abstract_eval([a.aval for a in inputs], params, builder.checks)
    except TracejitError as err:
        message = f"{err.args[0]}\n  op: {prim.name} on {describe_operands(builder, inputs)}"
        raise type(err)(with_location(message, location)) from None
    # Sizes this op joined are checked when the kernel runs: say which op, where.
    builder.checks.pairs[joins:] = [(a, b, f"{what} at {location}")
                                    for a, b, what in builder.checks.pairs[joins:]]
    outs = [Var(aval) for aval in avals]
    if outs:  # an equation with no results is dead (the IR has no effects)
        builder.eqns.append(Eqn(prim, inputs, params, outs, location))
    return builder.result(prim, args, params, outs)


def memoised(fn):
    """`fn` (a pure function of arrays and static arguments) as one call that
    an eager tape can replay instead of running its Python again."""
    @functools.wraps(fn)
    def call(*args, **kwargs):
        items = _builders.items
        if items and items[-1].call_memo is not None:
            return items[-1].call_memo(fn, fn, args, kwargs)
        return fn(*args, **kwargs)

    return call


def _symbolic_params(params: dict) -> bool:
    return any(isinstance(v, Sym) or (isinstance(v, tuple) and any(isinstance(d, Sym) for d in v))
               for v in params.values())


def describe_operands(builder: Builder, inputs: list) -> str:
    """`x: float64 (n0=3, 4), a float64 (n0=3,)` and where each symbolic size came
    from (`n0 = x.shape[0]`): the operands as the user knows them."""
    names = {id(v): n for v, n in zip(builder.invars, builder.input_names)}
    parts = []
    for atom in inputs:
        text = f"{atom.aval.dtype} {format_shape(atom.aval.shape)}"
        parts.append(f"{names[id(atom)]}: {text}" if id(atom) in names else text)
    sources = {}
    for leaf, axis, sym in builder.input_syms:
        if leaf < len(builder.input_names):
            sources.setdefault(id(resolve(sym)), f"{builder.input_names[leaf]}.shape[{axis}]")
    legend = {}
    for atom in inputs:
        for dim in atom.aval.shape:
            root = resolve(dim)
            if type(root) is not int and id(root) in sources:
                legend[f"{root!r}"] = sources[id(root)]
    text = ", ".join(parts)
    if legend:
        text += "\n  sizes: " + ", ".join(f"{sym} = {src}" for sym, src in legend.items())
    return text


def check_live(tracer: Tracer) -> None:
    """A tracer of a trace that has ended (it escaped its function) raises a leak error
    naming the function and the op that made it."""
    if tracer.builder in _builders:
        return
    origin = tracer.builder
    made = next((f"made by {e.prim.name} at {e.location}" for e in origin.eqns
                 if any(v is tracer.ir_var for v in e.outputs)), None)
    if made is None:
        names = {id(v): n for v, n in zip(origin.invars, origin.input_names)}
        made = f"the input {names.get(id(tracer.ir_var), 'of the function')}"
    raise LeakedTracerError(with_location(
        f"a traced value ({describe_value(tracer)}) of `{origin.name}` was used after that trace "
        f"ended ({made})",
        hint="a traced value escaped the traced function (kept in a global, a list or an "
             "attribute); return it from the function instead"))


class Tracer:
    """Stands for an array while a function is traced. Supports NumPy's
    operators, ufuncs, functions and array methods (see numpy_api.py)."""

    __slots__ = ("builder", "ir_var")
    __array_priority__ = 1000

    def __init__(self, builder: Builder, var: Var):
        self.builder = builder
        self.ir_var = var

    @property
    def aval(self) -> AVal:
        return self.ir_var.aval

    @property
    def dtype(self) -> np.dtype:
        return self.ir_var.aval.dtype

    @property
    def ndim(self) -> int:
        return self.ir_var.aval.ndim

    def __repr__(self) -> str:
        return f"Tracer<{self.ir_var.aval}>"

    def __bool__(self):
        return bool(self._concrete("bool"))

    def _concrete(self, what):
        """The value, when it is fixed at trace time (it depends on constants and
        sizes only: reading a size ties the kernel to it); else raise."""
        check_live(self)
        value = known_value(self)
        if value is None:
            raise ConcretizationError(with_location(
                f"{what}() of a traced array {self.aval}: its value is only known when the "
                "kernel runs", hint=CONTROL_FLOW_HINT))
        return value

    def __float__(self):
        return float(self._concrete("float"))

    def __complex__(self):
        return complex(self._concrete("complex"))

    def __int__(self):
        return int(self._concrete("int"))

    def __index__(self):
        if not np.issubdtype(self.dtype, np.integer):
            raise TypeError(f"only integer arrays can be used as an index, not {self.dtype}")
        if known_value(self) is None:  # NumPy asks for a Python int: x[i] of a non-traced x
            raise ConcretizationError(with_location(
                f"index() of a traced integer {self.aval}: it indexes or slices something "
                "that is not traced (a NumPy array global, a list) or is a range() bound, so "
                "Python asks for its value, which only exists when the kernel runs",
                hint="pass the array in as an argument of the traced function: then "
                     "x[i * b:(i + 1) * b] (a traced start, a fixed length) and x[i] are traced"))
        return int(self._concrete("index"))

    def __array__(self, *args, **kwargs):
        check_live(self)
        raise TracerTypeError(with_location(
            f"np.asarray() of a traced array {self.aval}: the value does not exist while "
            "tracing", hint="this usually means a NumPy function tracejit does not trace was "
            "called; use the np.* functions listed in the README"))

    def __hash__(self):
        return id(self)

    def tolist(self):
        self._concrete("tolist")

    def __setitem__(self, key, value):
        raise UnsupportedError(with_location(
            f"assignment into a traced array {self.aval} (x[...] = value) is not supported",
            hint="build a new array instead: np.where(mask, value, x), np.concatenate, ..."))

    def __getattr__(self, name):
        # Reached only for names nothing defines: NumPy's array API tracejit does not trace.
        if name.startswith("__") or not hasattr(np.ndarray, name):
            raise AttributeError(f"'Tracer' object has no attribute {name!r}")
        raise UnsupportedError(with_location(
            f"ndarray.{name} is not supported while tracing (on a traced "
            f"{describe_value(self)})",
            hint="compose it from supported NumPy functions (see the README's op list)"))


def _unsupported_operator(symbol: str):
    def operator(self, *others):
        raise UnsupportedError(with_location(
            f"the operator {symbol} on a traced {describe_value(self)} is not supported",
            hint="compose it from supported operators and functions (see the README)"))

    return operator


# Operators Tracer does not implement get a named error, not Python's bare TypeError
# (numpy_api.py installs the ones that are supported over these).
for _name, _symbol in {"__floordiv__": "//", "__rfloordiv__": "//", "__mod__": "%",
                       "__rmod__": "%", "__divmod__": "divmod", "__rdivmod__": "divmod",
                       "__lshift__": "<<", "__rlshift__": "<<", "__rshift__": ">>",
                       "__rrshift__": ">>", "__xor__": "^", "__rxor__": "^", "__rand__": "&",
                       "__ror__": "|"}.items():
    setattr(Tracer, _name, _unsupported_operator(_symbol))


# --------------------------------------------------------- tracing entry

def abstractify(leaf, builder_leaf_index: int, builder: Builder) -> AVal:
    """The abstract value of an argument leaf: non-1 dims become symbols."""
    if isinstance(leaf, Tracer):
        return leaf.aval
    if isinstance(leaf, PYTHON_SCALARS) and not isinstance(leaf, np.generic):
        return weak_aval(leaf)
    if isinstance(leaf, (np.ndarray, np.generic)):
        shape = []
        for axis, size in enumerate(np.shape(leaf)):
            if size == 1:
                shape.append(1)
            else:
                sym = Sym(size)
                builder.input_syms.append((builder_leaf_index, axis, sym))
                shape.append(sym)
        return AVal(tuple(shape), np.asarray(leaf).dtype)
    raise TracerTypeError(with_location(
        f"argument leaf of type {type(leaf).__name__} is not an array or scalar",
        hint="pass NumPy arrays or Python scalars in tuples/lists/dicts; mark other values "
             "static with static_argnums / static_argnames"))


def trace(fn, args: tuple, name: str | None = None, leaf_names: list | None = None):
    """Trace `fn(*args)` (args are pytrees) into a Program.

    Returns (program, out_treedef, builder). Leaves that are Tracers of an
    outer builder are traced as inputs too, keeping their abstract values.
    `leaf_names` (the user's name of each leaf) make error messages name them."""
    leaves, treedef = pytree.flatten(args)
    builder = Builder(name or getattr(fn, "__name__", "fn"))
    builder.input_names = list(leaf_names or [])
    tracers = [builder.new_input(abstractify(leaf, i, builder)) for i, leaf in enumerate(leaves)]
    with builder, contextlib.ExitStack() as guards:
        for guard in _trace_guards:
            guards.enter_context(guard(fn))
        out = fn(*pytree.unflatten(treedef, tracers))
        out_leaves, out_treedef = pytree.flatten(out)
        for leaf in out_leaves:
            _check_output(leaf)
        program = builder.program(out_leaves)
    return program, out_treedef, builder


def _check_output(leaf) -> None:
    if not isinstance(leaf, (Tracer, np.ndarray, np.generic, *PYTHON_SCALARS)):
        raise TracerTypeError(with_location(
            f"function returned a {type(leaf).__name__}; outputs must be arrays or scalars "
            "in tuples/lists/dicts"))


def replay(program: Program, args: list, consts: list, apply=None) -> list:
    """Evaluate `program` equation by equation with `apply(prim, *values,
    **params)`; the default, `bind`, records IR into the current trace."""
    apply = apply or bind
    env: dict[int, object] = {}
    for var, val in zip(program.invars, args):
        env[id(var)] = val
    for var, val in zip(program.constvars, consts):
        env[id(var)] = val

    def read(atom):
        return atom.value if isinstance(atom, Literal) else env[id(atom)]

    for eqn in program.eqns:
        with located(eqn.location):
            result = apply(eqn.prim, *[read(a) for a in eqn.inputs], **eqn.params)
        store(env, eqn, result)
    return [read(a) for a in program.outvars]


def store(env: dict, eqn: Eqn, result) -> None:
    """Record an equation's result (a list for multi-output primitives) in `env`."""
    if eqn.prim.multiple_results:
        for var, value in zip(eqn.outputs, result):
            env[id(var)] = value
    else:
        env[id(eqn.outputs[0])] = result


def trace_closed(fn, in_avals: list, name: str):
    """Trace `fn(*tracers)` (a loop body, a branch) as a closed sub-program of
    the current trace. Arrays and outer tracers it reads become leading inputs:
    returns (program, captured values, output treedef); the program's invars
    are [captured..., inputs...] and it has no constvars."""
    builder = Builder(name)
    tracers = [builder.new_input(aval) for aval in in_avals]
    with builder:
        out = fn(*tracers)
        out_leaves, out_treedef = pytree.flatten(out)
        for leaf in out_leaves:
            _check_output(leaf)
        program = builder.program(out_leaves)
    outer = current_builder()
    if outer is not None:
        outer.checks.pairs.extend(builder.checks.pairs)
    captured = list(program.consts)
    program = Program(program.constvars + program.invars, [], program.eqns, program.outvars,
                      builder.checks, name, [])
    return program, captured, out_treedef


__all__ = ["Builder", "ShapeError", "Tracer", "bind", "trace", "replay"]
