"""The public API: `function`, `grad`, `value_and_grad`, `vjp`, `jvp`,
`jacobian`, `hessian`, `make_ir`, `stop_gradient`.

Every transformation is a `Dispatcher` (compiler.py) with its own `build`:
trace the user's function, transform the program, return it. Called from
inside another trace, a transformation replays its program into that trace
instead, which is how `grad(grad(f))` and `hessian` work.
"""

from __future__ import annotations

import functools
import inspect
import weakref
from dataclasses import replace

import numpy as np

from ..backend.compiler import Dispatcher, inline, is_tracing, make_kernel
from ..control import rolling
from ..core import errors, pytree
from ..core.errors import TracerTypeError, UnsupportedError, with_location
from ..core.ir import Program
from ..core.shapes import concrete_shape, resolve
from ..observe import events
from ..trace import ops
from ..trace.tracer import _builders, current_builder
from ..transforms import autodiff, batching
from ..transforms.pipeline import run_passes
from . import eager_grad, protocol, variables
from .tape import GradientTape, UnconnectedGradients
from .variables import Variable


def _as_tuple(value) -> tuple:
    if value is None:
        return ()
    return (value,) if isinstance(value, (int, str)) else tuple(value)


class Function(Dispatcher):
    """A traced, compiled NumPy function. See `function`."""

    def __init__(self, fn, static_argnums=(), static_argnames=(), cache=True, roll_loops=True):
        super().__init__(getattr(fn, "__name__", "fn"), cache)
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.roll_loops = roll_loops
        self.static_argnums = frozenset(_as_tuple(static_argnums))
        self.static_argnames = frozenset(_as_tuple(static_argnames))
        try:
            self._signature = inspect.signature(fn)
        except (TypeError, ValueError):
            self._signature = None
        self._static_free = not (self.static_argnums or self.static_argnames)
        self._simple = self._static_free  # and no Variables: the hot path applies
        self.variables: list = []  # the Variables its traces read: trailing inputs of every call
        self._method: Function | None = None
        self._transforms: dict = {}  # jvp()'s and vjp()'s, kept for the next call

    def __call__(self, *args, **kwargs):
        if not (kwargs or _builders.items) and self._simple:  # no trace open on this thread
            try:
                return self.call_flat(args)  # the hot path
            except variables.VariablesDiscovered:
                pass  # its trace read Variables: they are inputs from now on
            except TracerTypeError:
                variables.reraise_unless_passed(args)  # Variables as arguments: their values
        if current_builder() is not None:
            return self.fn(*args, **kwargs)  # inside a trace or an eager tape: trace through
        dynamic, statics = self._dynamic(variables.read_all(args), variables.read_all(kwargs))
        return protocol.call(self, self, dynamic, statics, writes=True)

    def add_variables(self, new: list) -> None:
        """Called by the call protocol when a trace read Variables not known yet."""
        self.variables.extend(new)
        self._simple = False

    def __get__(self, instance, owner):
        """Decorating a method: `self` is a static argument (hashed by identity,
        baked into the trace, as with jax.jit on methods)."""
        if instance is None:
            return self
        if self._method is None:
            self._method = Function(self.fn, self.static_argnums | {0}, self.static_argnames,
                                    self.cache_enabled, self.roll_loops)
        return functools.partial(self._method, instance)

    # --------------------------------------------------- static arguments
    # Calls with keywords or static arguments are normalised to a "split"
    # form: dynamic = (positional tuple, keyword dict), statics = (SPLIT,
    # (name, value)...). Plain positional calls skip all of this.
    def split(self, args, kwargs) -> tuple[tuple, tuple]:
        if self._signature is None:
            raise TracerTypeError(f"{self.name}: keyword arguments need an inspectable "
                                  "signature")
        bound = self._signature.bind(*args, **kwargs)
        positional, keywords, statics = [], {}, []
        for index, (name, value) in enumerate(bound.arguments.items()):
            param = self._signature.parameters[name]
            if index in self.static_argnums or name in self.static_argnames:
                statics.append((name, Static(name, value)))
            elif param.kind is param.VAR_POSITIONAL:
                positional.extend(value)
            elif param.kind is param.VAR_KEYWORD:
                keywords.update(value)
            elif param.kind is param.KEYWORD_ONLY or statics or keywords:
                keywords[name] = value  # after a static one, pass by name
            else:
                positional.append(value)
        return (tuple(positional), keywords), (SPLIT, *statics)

    def python_call(self, dynamic, static_values: dict):
        """Call the user's function with dynamic and static arguments rejoined."""
        positional, keywords = dynamic
        return self.fn(*positional, **keywords, **static_values)

    def argument_leaves(self, dynamic, statics, argnum: int) -> tuple:
        """(first leaf, leaf count, treedef) of positional argument `argnum` in
        the flattened dynamic arguments."""
        if not statics:
            ordered, position = list(dynamic), argnum
        else:
            positional, keywords = dynamic
            ordered = list(positional) + [keywords[k] for k in sorted(keywords)]
            names = list(self._signature.parameters)
            name = names[argnum] if -len(names) <= argnum < len(names) else None
            if name in dict(statics[1:]):
                raise TracerTypeError(f"argnums {argnum} names the static argument {name!r}")
            dynamic_names = [n for n in names if n not in dict(statics[1:])]
            position = dynamic_names.index(name) if name in dynamic_names else len(ordered)
            if position >= len(positional) and name in keywords:
                position = len(positional) + sorted(keywords).index(name)
        if not -len(ordered) <= position < len(ordered):
            raise TracerTypeError(f"argnums {argnum} is out of range for {len(ordered)} "
                                  "dynamic arguments")
        offset = sum(len(pytree.flatten(piece)[0]) for piece in ordered[:position % len(ordered)])
        leaves, treedef = pytree.flatten(ordered[position])
        return offset, len(leaves), treedef

    def build(self, args, statics, writes=True):
        """Trace into a program; Variables it reads are trailing inputs and,
        with `writes`, the values it assigns them extra outputs."""
        fn = self.fn
        if statics:
            # The values themselves (not their keys) in the closure: checks that look
            # into what a traced function reaches (random generators) see them.
            values = {name: static.value for name, static in statics[1:]}

            def fn(positional, keywords):
                return self.python_call((positional, keywords), values)
        program, treedef, input_syms = protocol.trace_function(
            self, fn, args, writes, self.leaf_names(args, statics))
        if self.roll_loops:
            program = rolling.roll_loops(program)
        return program, treedef, input_syms

    def leaf_names(self, dynamic, statics) -> list[str]:
        """The user's name of each dynamic argument leaf, from the signature: `x`,
        `params[0]`, `batch['labels']` (`argument 2` where the signature cannot tell)."""
        params = list(self._signature.parameters.values()) if self._signature else []
        if statics:
            positional, keywords = dynamic
            static_names = {name for name, _ in statics[1:]}
            params = [p for p in params if p.name not in static_names]
            named = [(_positional_name(params, k), arg) for k, arg in enumerate(positional)]
            named += [(name, keywords[name]) for name in sorted(keywords)]
        else:
            named = [(_positional_name(params, k), arg) for k, arg in enumerate(dynamic)]
        return [name + path for name, arg in named for path in pytree.leaf_paths(arg)]

    # ------------------------------------------------------------ inspection
    def _dynamic(self, args, kwargs):
        if self._static_free and not kwargs:
            return args, ()
        return self.split(args, kwargs)

    def _program(self, args, kwargs) -> Program:
        program, _, _ = protocol.retrying(lambda: self.build(*self._dynamic(args, kwargs)), self)
        return run_passes(program)

    def ir(self, *args, **kwargs) -> Program:
        """The optimised IR for these arguments (prints readably)."""
        return self._program(args, kwargs)

    def source(self, *args, **kwargs) -> str:
        """The generated Numba source for these arguments."""
        return make_kernel(self._program(args, kwargs), self.name, use_disk=False,
                           interpret=True).source

    def grad_ir(self, *args, argnums=0, **kwargs) -> Program:
        """The optimised IR of the value-and-gradient program (forward equations,
        then the adjoint) for these arguments."""
        return value_and_grad(self, argnums).ir(*args, **kwargs)


SPLIT = "__split__"


def _positional_name(params, k: int) -> str:
    """The name of positional argument `k` under these parameters."""
    for index, param in enumerate(params):
        if param.kind is param.VAR_POSITIONAL:
            return f"{param.name}[{k - index}]" if k >= index else params[k].name
        if index == k and param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
            return param.name
    return f"argument {k}"


class Static:
    """A static argument's value in a cache key: keyed by type and value, so that
    `1`, `1.0` and `True` (equal, with equal hashes) get entries of their own."""

    __slots__ = ("value", "_key", "_hash")

    def __init__(self, name, value):
        self.value = value
        self._key = _typed(value)
        try:
            self._hash = hash(self._key)
        except TypeError:
            raise TracerTypeError(with_location(
                f"static argument {name!r} must be hashable, got {type(value).__name__}",
                hint="pass a tuple instead of a list, or make the argument dynamic")) from None

    def __eq__(self, other):
        return type(other) is Static and self._key == other._key

    def __hash__(self):
        return self._hash

    def __repr__(self):  # as the user wrote it (logs and reports show it)
        return repr(self.value)


def _typed(value):
    """A key telling apart equal values of different types, inside tuples too."""
    if type(value) in (tuple, frozenset):
        return type(value), type(value)(_typed(v) for v in value)
    return type(value), value


def function(fn=None, *, static_argnums=(), static_argnames=(), cache=True, roll_loops=True):
    """Trace `fn` (plain NumPy code) into IR and run it as a cached Numba kernel.

    Works as `@function` or `@function(static_argnums=..., cache=False)`.
    Static arguments are hashable Python values baked into the trace; all
    others are pytrees of arrays and scalars. Kernels are shape-generic: a new
    batch size reuses the compiled kernel unless the code reads `x.shape`.
    A Python loop whose steps repeat the same work is rolled back into one
    `lax.scan` (its body compiled once); `roll_loops=False` keeps it unrolled.
    """
    if fn is None:
        return lambda f: function(f, static_argnums=static_argnums,
                                  static_argnames=static_argnames, cache=cache,
                                  roll_loops=roll_loops)
    if isinstance(fn, Function):
        return fn
    return Function(fn, static_argnums, static_argnames, cache, roll_loops)


def as_function(fn) -> Function:
    return fn if isinstance(fn, Function) else Function(fn)


# --------------------------------------------------------------- transforms

class Transform(Dispatcher):
    """A transformation of a Function: same dispatch, its own program."""

    kind = "transform"

    def __init__(self, fun: Function):
        super().__init__(f"{fun.name}_{self.kind}", fun.cache_enabled)
        self.fun = fun
        functools.update_wrapper(self, fun.fn, updated=())

    eagerly = False  # set (by Grad) once tracing met Python control flow on a value

    def __call__(self, *args, **kwargs):
        if self.eagerly and eager_grad.can_fall_back():
            return eager_grad.eager_grad(self, args, kwargs)
        if not (kwargs or _builders.items) and self.fun._simple:
            try:
                return self.call_flat(args)  # the hot path
            except variables.VariablesDiscovered:
                pass
            except errors.ConcretizationError as error:
                return self.cannot_trace(error, args, kwargs)
            except TracerTypeError:
                variables.reraise_unless_passed(args)
        dynamic, statics = self.fun._dynamic(variables.read_all(args), variables.read_all(kwargs))
        try:
            if current_builder() is not None:
                program, treedef, _ = self.build(dynamic, statics)
                return inline(program, treedef, dynamic)
            return protocol.call(self, self.fun, dynamic, statics, writes=False)
        except errors.ConcretizationError as error:
            return self.cannot_trace(error, args, kwargs)

    def cannot_trace(self, error, args, kwargs):
        """Tracing met Python control flow on a traced value: raise (Grad runs eagerly)."""
        raise error

    def trace_fun(self, dynamic, statics):
        traced = self.fun.build(dynamic, statics, writes=False)
        events.forward_traced(traced[0])
        return traced

    def leaf_names(self, dynamic, statics) -> list[str]:
        return self.fun.leaf_names(dynamic, statics)

    def _program(self, args, kwargs) -> Program:
        program, _, _ = protocol.retrying(
            lambda: self.build(*self.fun._dynamic(args, kwargs)), self.fun)
        return run_passes(program)

    def ir(self, *args, **kwargs) -> Program:
        return self._program(args, kwargs)

    def source(self, *args, **kwargs) -> str:
        return make_kernel(self._program(args, kwargs), self.name, use_disk=False,
                           interpret=True).source


def _leaf_ranges(fun: Function, dynamic, statics, argnums):
    """For each argnum: (first leaf index, leaf count, treedef) in the flat args."""
    return [fun.argument_leaves(dynamic, statics, num) for num in argnums]


class Grad(Transform):
    """`grad` and `value_and_grad`: one fused kernel for value and gradient."""

    def __init__(self, fun, argnums=0, has_aux=False, with_value=False, holomorphic=False):
        self.kind = "value_and_grad" if with_value else "grad"
        super().__init__(fun)
        self.argnums = argnums
        self.has_aux = has_aux
        self.with_value = with_value
        self.holomorphic = holomorphic

    def cannot_trace(self, error, args, kwargs):
        """Value-dependent Python control flow: from now on the gradient runs on the
        eager tape (warned once), unless inside a trace that cannot leave it."""
        if not eager_grad.can_fall_back():
            raise error
        eager_grad.warn_once(self, error)
        self.eagerly = True
        return eager_grad.eager_grad(self, args, kwargs)

    def build(self, dynamic, statics):
        argnums = _as_tuple(self.argnums)
        spans = _leaf_ranges(self.fun, dynamic, statics, argnums)
        self._check_arguments(dynamic, statics, spans)
        program, out_treedef, input_syms = self.trace_fun(dynamic, statics)
        value_def, aux_def = _split_aux(out_treedef, self.has_aux)
        self._check_output(program.outvars[0], value_def, out_treedef)
        _check_complex_output(program.outvars[0].aval, self.holomorphic,
                              f"{self.kind} of {self.fun.name}")
        wrt = [leaf for start, count, _ in spans for leaf in range(start, start + count)]
        seeds = [1.0] + [None] * (len(program.outvars) - 1)
        joint = autodiff.vjp_program(program, wrt, seeds)
        n_out = len(program.outvars)
        grads = joint.outvars[n_out:]
        grad_def = _grads_treedef(spans, self.argnums)
        outs, treedef = _assemble(joint.outvars[:n_out], grads, grad_def, value_def,
                                  aux_def, self.with_value, self.has_aux)
        return replace(joint, outvars=outs, name=self.name), treedef, input_syms

    def _check_arguments(self, dynamic, statics, spans) -> None:
        """Gradients are taken w.r.t. float leaves: name the argument that is not."""
        leaves = pytree.flatten(dynamic)[0]
        for start, count, _ in spans:
            for k in range(start, start + count):
                aval = ops.aval_of(leaves[k])
                if not autodiff.is_float(aval):
                    name = self.leaf_names(dynamic, statics)[k]
                    raise TracerTypeError(with_location(
                        f"{self.kind} of {self.fun.name}: cannot differentiate with respect to "
                        f"{name} ({errors.describe_value(leaves[k])}): gradients need "
                        "floating-point or complex arguments",
                        hint=f"pass {name} as a float (e.g. np.asarray(..., float)), or leave "
                             "it out of argnums"))
                _check_holomorphic_input(aval, self.holomorphic,
                                         self.leaf_names(dynamic, statics)[k])

    def _check_output(self, value, value_def, out_treedef) -> None:
        """grad needs one float scalar: say what the function returned instead."""
        if pytree.num_leaves(value_def) == 1 and _is_size_one(value.aval) and autodiff.is_float(
                value.aval):
            return  # a scalar, or an array of one element (as autograd accepts)
        if pytree.num_leaves(value_def) != 1:
            got = f"a structure {pytree.describe(value_def)} of {pytree.num_leaves(value_def)} "
            got += "values"
        else:
            shape = concrete_shape(value.aval.shape)
            got = (f"a {value.aval.dtype} array of shape {shape}" if shape
                   else f"a {value.aval.dtype} scalar")
        returned_pair = out_treedef[0] in ("t", "l") and not self.has_aux
        hint = ("if it returns (value, aux), set has_aux=True" if returned_pair else
                "for the derivatives of every output use tracejit.jacobian, or tracejit.vjp "
                "with a cotangent; to differentiate a sum or mean, return np.sum(...)")
        raise TracerTypeError(with_location(
            f"{self.kind} of {self.fun.name}: the function must return a float scalar (or a "
            f"float array of size 1), it returned {got}", hint=hint))


def _check_complex_output(aval, holomorphic: bool, what: str) -> None:
    """JAX's rule: a gradient is of a real output, or with `holomorphic` of a complex one
    (f'(z): the cotangent 1 of a holomorphic function)."""
    if ops.is_complex(aval.dtype) and not holomorphic:
        raise TracerTypeError(
            f"{what}: the function returns a complex value ({aval}); a gradient needs a real "
            "one. For a holomorphic function pass holomorphic=True (the result is f'(z)); "
            "for other complex outputs take tracejit.vjp or tracejit.jvp, or differentiate "
            "a real function of the output such as np.abs(out) ** 2")
    if holomorphic and not ops.is_complex(aval.dtype):
        raise TracerTypeError(f"{what} with holomorphic=True: the function must return a "
                              f"complex value, got {aval}")


def _check_holomorphic_input(aval, holomorphic: bool, what: str) -> None:
    if holomorphic and not ops.is_complex(aval.dtype):
        raise TracerTypeError(f"cannot differentiate holomorphically with respect to {what}: "
                              f"its dtype is {aval.dtype}, not complex")


def _is_size_one(aval) -> bool:
    """A scalar, or an array of one element (shape (1,), (1, 1): autograd accepts those)."""
    return all(type(resolve(d)) is int and resolve(d) == 1 for d in aval.shape)


def _split_aux(out_treedef, has_aux):
    if not has_aux:
        return out_treedef, None
    if out_treedef[0] not in ("t", "l") or len(out_treedef[1]) != 2:
        raise TracerTypeError("has_aux=True: the function must return a pair (value, aux)")
    return out_treedef[1][0], out_treedef[1][1]


def _grads_treedef(spans, argnums):
    defs = tuple(treedef for _, _, treedef in spans)
    return defs[0] if isinstance(argnums, int) else ("t", defs)


def _assemble(outs, grads, grad_def, value_def, aux_def, with_value, has_aux):
    value, aux = outs[:1], outs[1:]
    if with_value and has_aux:
        return value + aux + grads, ("t", (("t", (value_def, aux_def)), grad_def))
    if with_value:
        return value + grads, ("t", (value_def, grad_def))
    if has_aux:
        return grads + aux, ("t", (grad_def, aux_def))
    return grads, grad_def


def grad(fun, argnums=0, has_aux=False, holomorphic=False):
    """Compiled gradient of a scalar function w.r.t. `argnums` (same pytree
    structure as those arguments). `fun` may be a plain Python function.

    Complex arguments follow JAX: for a real `fun` of complex z = x + iy the
    gradient is df/dx - i df/dy (the conjugate of the steepest-ascent direction:
    descend with z - lr * conj(g)); with `holomorphic=True`, `fun` returns a
    complex value and the gradient is f'(z)."""
    return Grad(as_function(fun), argnums, has_aux, with_value=False, holomorphic=holomorphic)


def value_and_grad(fun, argnums=0, has_aux=False, holomorphic=False):
    """Compiled `(value, gradient)`, forward and backward in one fused kernel."""
    return Grad(as_function(fun), argnums, has_aux, with_value=True, holomorphic=holomorphic)


class Jvp(Transform):
    kind = "jvp"

    def leaf_names(self, dynamic, statics) -> list[str]:
        primals = self.fun.leaf_names(dynamic[0], statics)
        return primals + [f"the tangent of {name}" for name in primals]

    def build(self, dynamic, statics):
        primals, tangents = dynamic
        program, out_treedef, input_syms = self.trace_fun(primals, statics)
        n = len(pytree.flatten(primals)[0])
        tangent_leaves, tangent_def = pytree.flatten(tangents)
        if tangent_def != pytree.flatten(primals)[1]:
            raise TracerTypeError("jvp: tangents must have the same structure as primals")
        for var, t in zip(program.invars, tangent_leaves):
            if concrete_shape(ops.aval_of(t).shape) != concrete_shape(var.aval.shape):
                raise TracerTypeError("jvp: each tangent must have its primal's shape, got "
                                      f"{concrete_shape(ops.aval_of(t).shape)} for "
                                      f"{concrete_shape(var.aval.shape)}")
        joint = autodiff.jvp_program(program, list(range(n)))
        if len(program.invars) > n:  # the function's Variables come after the tangents
            joint, input_syms = protocol.trailing_inputs(
                joint, n, len(program.invars) - n, input_syms, shift=n)
        treedef = ("t", (out_treedef, out_treedef))
        return replace(joint, name=self.name), treedef, input_syms


def jvp(fun, primals, tangents):
    """Forward mode: `(fun(*primals), J @ tangents)`, compiled."""
    fun = as_function(fun)  # held here: its transform refers to it weakly
    transform = _transform(Jvp, fun)
    primals, tangents = variables.read_all(tuple(primals)), tuple(tangents)
    if current_builder() is not None:
        program, treedef, _ = transform.build((primals, tangents), ())
        return inline(program, treedef, (primals, tangents))
    return protocol.call(transform, transform.fun, (primals, tangents), (), writes=False)


class Vjp(Transform):
    """Forward kernel returning outputs and residuals; backward kernel on them."""

    kind = "vjp"

    def build(self, dynamic, statics):
        program, out_treedef, input_syms = self.trace_fun(dynamic, statics)
        n_in, n_out = len(program.invars), len(program.outvars)
        n_args = len(pytree.flatten(dynamic)[0])  # then the function's Variables
        wrt = [k for k, v in enumerate(program.invars[:n_args]) if autodiff.is_float(v.aval)]
        joint = autodiff.vjp_program(program, wrt, [autodiff.INPUT] * n_out)
        joint = run_passes(joint)
        fwd, bwd, n_res = autodiff.split_at_cotangents(joint, n_in, n_out)
        # outputs that got a cotangent input (literal ones too, unread)
        seeded = [k for k, a in enumerate(program.outvars) if autodiff.is_float(a.aval)]
        self._pending = (bwd, wrt, seeded, out_treedef)
        return fwd, ("t", (out_treedef, ("t", (pytree.LEAF,) * n_res))), input_syms

    def extend(self, entry, program) -> None:
        bwd, wrt, seeded, out_treedef = self._pending
        entry.extra = (self.kernel(bwd, self.name + "_bwd"), wrt, seeded, out_treedef)


def vjp(fun, *primals):
    """`(fun(*primals), vjp_fn)`; `vjp_fn(cotangent)` returns one cotangent per primal."""
    fun = as_function(fun)  # held here: its transform refers to it weakly
    transform = _transform(Vjp, fun)
    primals = variables.read_all(primals)
    if current_builder() is not None and is_tracing(primals):
        raise UnsupportedError("vjp inside a traced function: use grad or jvp there")
    entry, leaves = protocol.entry(transform, transform.fun, primals)
    try:
        outs, residuals = entry(leaves)
    except errors.KERNEL_CHECKS as err:
        raise transform.explain(err, entry, primals, (), leaves) from None
    backward, wrt, seeded, out_treedef = entry.extra
    structure = pytree.flatten(primals)

    def vjp_fn(cotangent):
        ct_leaves = _cotangent_leaves(cotangent, out_treedef, pytree.flatten(outs)[0])
        leaves = list(residuals) + [ct_leaves[k] for k in seeded]
        if backward.fn is None and not backward.interpret:
            backward.compile(leaves)
        try:
            grads = backward(leaves)
        except errors.KERNEL_CHECKS as err:
            paths = pytree.leaf_paths(cotangent)
            names = [f"residual {k}" for k in range(len(residuals))]
            names += [f"cotangent{paths[k]}" for k in seeded]
            raise errors.explain(err, backward, names, leaves) from None
        full = [np.zeros_like(leaf, dtype=float) for leaf in structure[0]]
        for k, g in zip(wrt, grads):
            full[k] = g
        return pytree.unflatten(structure[1], full)

    return outs, vjp_fn


def _cotangent_leaves(cotangent, out_treedef, outs) -> list:
    """The cotangent's leaves, each of its output's shape and dtype."""
    leaves, treedef = pytree.flatten(cotangent)
    if treedef != out_treedef:
        raise TracerTypeError(with_location(
            f"vjp_fn: the cotangent must have the output's structure "
            f"{pytree.describe(out_treedef)}, got {pytree.describe(treedef)}"))
    converted = []
    for path, c, out in zip(pytree.leaf_paths(cotangent), leaves, outs):
        if np.shape(c) != np.shape(out):
            raise errors.ShapeError(with_location(
                f"vjp_fn: cotangent{path} has shape {np.shape(c)}, the output it belongs to "
                f"has shape {np.shape(out)}"))
        converted.append(np.asarray(c, dtype=np.asarray(out).dtype))
    return converted


def _transform(kind, fun: Function) -> Transform:
    """One jvp / vjp transformation per tracejit function, so that calling `jvp(f, ...)`
    again reuses its kernels. Kept on the function, referring back to it weakly: the
    pair is freed with the function, without the cyclic gc (an lru_cache would keep
    hundreds of functions, and what they capture, alive)."""
    transform = fun._transforms.get(kind)
    if transform is None:
        transform = fun._transforms[kind] = kind(weakref.proxy(fun))
    return transform


def vmap(fun, in_axes=0, out_axes=0, axis_size=None, chunk_size=None):
    """Vectorise `fun` over a mapped axis of its arguments, as `jax.vmap`: `in_axes`
    (an int, None, or a pytree prefix of the arguments) says which axis of each
    argument is mapped (None: broadcast, the same for every example); `out_axes`
    where the mapped axis goes in the outputs. Keyword arguments map along axis
    0. The batched function is one traced program, compiled into one kernel whose
    batch size is symbolic (a new batch size does not recompile); it composes
    with `grad`, `jvp`, `function`, `lax` loops and another `vmap`. `chunk_size`
    (as torch.func.vmap) runs a call's batch in chunks of that many examples."""
    def batched(*args, **kwargs):
        return batching.vmap_traced(fun, args, in_axes, out_axes, axis_size, kwargs)

    batched.__name__ = batched.__qualname__ = f"vmap_{getattr(fun, '__name__', 'fn')}"
    batched.__doc__ = getattr(fun, "__doc__", None)
    compiled = Function(batched)
    return compiled if chunk_size is None else batching.Chunked(compiled, chunk_size, in_axes,
                                                                out_axes)


def _jacobian(fun, argnums, holomorphic, reverse: bool, name: str):
    fun = as_function(fun)

    def jac(*args):
        for n in _as_tuple(argnums):
            for leaf in pytree.flatten(args[n])[0]:
                _check_holomorphic_input(ops.aval_of(leaf), holomorphic,
                                         f"argument {n} of {fun.name}")
        return batching.jacobian_traced(fun, args, argnums, reverse, holomorphic)

    jac.__name__ = jac.__qualname__ = f"{name}_{fun.name}"
    return Function(jac)


def jacrev(fun, argnums=0, holomorphic=False):
    """Dense Jacobian by reverse mode, as `jax.jacrev`: the VJP mapped over the
    output basis (vmap), one kernel; each entry has shape `out.shape + x.shape`.
    Complex outputs need `holomorphic=True` (the entries are then d out_i / d z_j)."""
    return _jacobian(fun, argnums, holomorphic, True, "jacrev")


jacobian = jacrev


def jacfwd(fun, argnums=0, holomorphic=False):
    """Dense Jacobian by forward mode, as `jax.jacfwd`: the JVP mapped over the
    input basis, one kernel (cheaper than `jacrev` when inputs are fewer than outputs)."""
    return _jacobian(fun, argnums, holomorphic, False, "jacfwd")


def hessian(fun, argnums=0, holomorphic=False):
    """Second derivatives, `jacfwd(jacrev(fun))` as JAX: one kernel."""
    return jacfwd(jacrev(fun, argnums, holomorphic), argnums, holomorphic)


def stop_gradient(x):
    """The identity, with a zero derivative."""
    return ops.stop_gradient(x)


class custom_vjp:  # noqa: N801 - named like jax.custom_vjp, used as a decorator
    """A function with a user-defined gradient rule, as `jax.custom_vjp`:

        @tracejit.custom_vjp
        def f(x): ...
        f.defvjp(fwd, bwd)   # fwd(*args) -> (out, residuals); bwd(residuals, g) -> cotangents

    `f` must return one array; `bwd` returns a tuple with one cotangent per argument.
    """

    def __init__(self, fun):
        functools.update_wrapper(self, fun)
        self.fun = fun
        self.fwd = self.bwd = None

    def defvjp(self, fwd, bwd):
        self.fwd, self.bwd = fwd, bwd
        return self

    def __call__(self, *args):
        if current_builder() is None or not is_tracing(args):
            return self.fun(*args)
        if self.fwd is None:
            raise TracerTypeError(f"custom_vjp {self.__name__}: call defvjp(fwd, bwd) first")
        out, residuals = self.fwd(*args)
        res_leaves, res_def = pytree.flatten(residuals)
        arg_leaves, arg_def = pytree.flatten(args)
        return ops.bind(ops.R["custom_vjp_call"], out, *res_leaves, *arg_leaves,
                        _traced=True, bwd=self.bwd, n_res=len(res_leaves), res_def=res_def,
                        arg_def=arg_def)


def make_ir(fn, static_argnums=()):
    """`make_ir(fn)(*args)` -> the (optimised) IR of an undecorated function."""
    return Function(fn, static_argnums).ir


# ------------------------------------------------------------ tf.gradients

def gradients(fn, sources, unconnected_gradients=UnconnectedGradients.NONE):
    """The symbolic gradient of `tf.gradients`, built once: returns a compiled
    function of `fn`'s arguments giving d fn(*args) / d sources (Variables,
    in the structure of `sources`). New data or new Variable values do not
    trace again.

        grad_fn = tracejit.gradients(lambda data: loss(var, data), [var])
        grad_fn(data)[0]        # as sess.run(var_grad, feed_dict={data: ...})
    """
    for source in pytree.flatten(sources)[0]:
        if not isinstance(source, Variable):
            raise TracerTypeError("tracejit.gradients: sources must be tracejit.Variables "
                                  f"(got a {type(source).__name__}); pass data as arguments")

    def gradient_of(*args):
        with GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(sources)
            loss = fn(*args)
        return tape.gradient(loss, sources, unconnected_gradients=unconnected_gradients)

    gradient_of.__name__ = f"gradients_of_{getattr(fn, '__name__', 'fn')}"
    return Function(gradient_of)
