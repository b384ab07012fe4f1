"""The IR: a small typed SSA program of variables, literals and equations.

    { lambda a:f64[n0,3] b:f64[3] .
        c:f64[n0,3] = mul a b
        d:f64[] = reduce_sum[axes=(0, 1)] c
      in (d) }

A `Program` has input variables, constant variables (arrays captured from the
user's closure, passed to the kernel as extra arguments), equations in
execution order and outputs. `verify` re-derives every type from the
primitive's shape rule; every pass must leave a program that verifies.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from .shapes import ShapeChecks, Sym, format_dim, resolve, resolve_shape


@dataclass(frozen=True)
class AVal:
    """Abstract value: symbolic shape and dtype. `weak` marks Python scalars,
    whose type yields to the other operand's (float32 stays float32)."""

    shape: tuple
    dtype: np.dtype
    weak: bool = False

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def canonical(self) -> AVal:
        return AVal(resolve_shape(self.shape), self.dtype, self.weak)

    def same_type(self, other: AVal) -> bool:
        return (self.dtype == other.dtype
                and resolve_shape(self.shape) == resolve_shape(other.shape))

    def __str__(self) -> str:
        dims = ",".join(format_short(d) for d in self.shape)
        return f"{dtype_name(self.dtype)}[{dims}]"


def format_short(dim) -> str:
    dim = resolve(dim)
    return str(dim) if type(dim) is int else repr(dim)


_DTYPE_NAMES = {"float64": "f64", "float32": "f32", "int64": "i64", "int32": "i32",
                "bool": "bool", "int8": "i8", "int16": "i16", "uint8": "u8",
                "complex64": "c64", "complex128": "c128"}


def dtype_name(dtype) -> str:
    return _DTYPE_NAMES.get(np.dtype(dtype).name, np.dtype(dtype).name)


_var_ids = itertools.count()


class Var:
    __slots__ = ("aval", "id")

    def __init__(self, aval: AVal):
        self.aval = aval
        self.id = next(_var_ids)

    def __repr__(self) -> str:
        return f"Var#{self.id}:{self.aval}"


class Literal:
    """A scalar constant, inlined where it is used."""

    __slots__ = ("value", "aval")

    def __init__(self, value, aval: AVal):
        self.value = np.asarray(value, dtype=aval.dtype)[()]
        self.aval = aval

    def __repr__(self) -> str:
        return repr(self.value.item())


Atom = "Var | Literal"


@dataclass
class Eqn:
    prim: object  # primitives.Primitive
    inputs: list
    params: dict
    outputs: list
    location: str = ""


@dataclass(eq=False)  # compared and hashed by identity (a loop body is a parameter)
class Program:
    invars: list
    constvars: list
    eqns: list
    outvars: list
    checks: ShapeChecks = field(default_factory=ShapeChecks)
    name: str = "fn"
    consts: list = field(default_factory=list)  # values of constvars (arrays or outer tracers)

    def __str__(self) -> str:
        return pretty(self)


def consumers_of(program: Program) -> dict:
    """Map id(var) to the equations that read it."""
    consumers: dict[int, list] = {}
    for eqn in program.eqns:
        for a in eqn.inputs:
            if isinstance(a, Var):
                consumers.setdefault(id(a), []).append(eqn)
    return consumers


def use_counts(program: Program) -> dict:
    """How often each variable's value is read (size-only reads do not count)."""
    counts: dict = {}
    for eqn in program.eqns:
        if eqn.prim.shape_only:
            continue
        for a in eqn.inputs:
            if isinstance(a, Var):
                counts[id(a)] = counts.get(id(a), 0) + 1
    for a in program.outvars:
        if isinstance(a, Var):
            counts[id(a)] = counts.get(id(a), 0) + 1
    return counts


# ---------------------------------------------------------------- printing

def _names():
    for length in itertools.count(1):
        for letters in itertools.product("abcdefghijklmnopqrstuvwxyz", repeat=length):
            yield "".join(letters)


def pretty(program: Program) -> str:
    names: dict = {}
    fresh = _names()

    def name(atom) -> str:
        if isinstance(atom, Literal):
            return repr(atom)
        if id(atom) not in names:
            names[id(atom)] = next(fresh)
        return names[id(atom)]

    return "\n".join(_program_lines(program, name, ""))


def _program_lines(program: Program, name, indent: str) -> list[str]:
    """Sub-programs (loop bodies, branches) print nested, sharing one namespace."""
    def decl(v: Var) -> str:
        return f"{name(v)}:{v.aval}"

    head = " ".join(decl(v) for v in program.invars)
    if program.constvars:
        head += " ; " + " ".join(decl(v) for v in program.constvars)
    lines = [f"{{ lambda {head} ."]
    for eqn in program.eqns:
        outs = " ".join(decl(v) for v in eqn.outputs)
        plain = {k: v for k, v in eqn.params.items() if not _holds_programs(v)}
        args = " ".join(name(a) for a in eqn.inputs)
        lines.append(f"    {outs} = {eqn.prim.name}{_format_params(plain)} {args}".rstrip())
        for key, value in eqn.params.items():
            for k, sub in enumerate(programs_in(value)):
                label = key if not isinstance(value, tuple) else f"{key}[{k}]"
                body = _program_lines(sub, name, indent + "      ")
                lines.append(f"      {label}={body[0]}")
                lines.extend("      " + line for line in body[1:])
    outs = " ".join(name(a) for a in program.outvars)
    lines.append(f"  in ({outs}) }}")
    return lines


def programs_in(value) -> list:
    """The sub-programs held by one parameter value (a Program or a tuple of them)."""
    if isinstance(value, Program):
        return [value]
    if isinstance(value, tuple) and value and all(isinstance(v, Program) for v in value):
        return list(value)
    return []


def _holds_programs(value) -> bool:
    return bool(programs_in(value))


def subprograms(eqn: Eqn) -> list:
    """Every program an equation holds in its parameters (bodies, branches)."""
    return [p for value in eqn.params.values() for p in programs_in(value)]


def _format_params(params: dict) -> str:
    if not params:
        return ""
    items = ", ".join(f"{k}={_format_value(v)}" for k, v in params.items())
    return f"[{items}]"


def _format_value(value) -> str:
    if isinstance(value, tuple):
        inner = ", ".join(_format_value(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, Sym):
        return format_dim(value)
    if isinstance(value, np.dtype):
        return dtype_name(value)
    return repr(value)


# --------------------------------------------------------------- verifier

class VerifyError(AssertionError):
    pass


def verify(program: Program, outer_dims: frozenset = frozenset()) -> Program:
    """Check SSA form, types against shape rules, and that every symbol is
    readable from an input dimension (of this program, of an enclosing one
    for a loop body, or defined by an equation such as a while loop's trip
    count). Sub-programs are verified too. Returns the program for chaining."""
    defined = {id(v) for v in program.invars + program.constvars}
    if len(defined) != len(program.invars) + len(program.constvars):
        raise VerifyError("an input variable is listed twice")
    readable = set(outer_dims) | _input_dims(program)
    for index, eqn in enumerate(program.eqns):
        for atom in eqn.inputs:
            _check_atom(atom, defined, f"equation {index} ({eqn.prim.name})")
        _check_types(eqn, index)
        for sub in subprograms(eqn):
            verify(sub, frozenset(readable))
        for v in eqn.outputs:
            if id(v) in defined:
                raise VerifyError(f"equation {index} redefines a variable")
            defined.add(id(v))
        readable |= {id(resolve(d)) for d, _ in eqn.prim.defined_dims(eqn.params)}
        _check_symbols(eqn, readable)
    for atom in program.outvars:
        _check_atom(atom, defined, "program outputs")
    return program


def _check_atom(atom, defined: set, where: str) -> None:
    if isinstance(atom, Var):
        if id(atom) not in defined:
            raise VerifyError(f"{where}: uses a variable before it is defined")
    elif not isinstance(atom, Literal):
        raise VerifyError(f"{where}: operand {atom!r} is neither Var nor Literal")


def _check_types(eqn: Eqn, index: int) -> None:
    expected = eqn.prim.abstract_eval([a.aval for a in eqn.inputs], eqn.params, None)
    if len(expected) != len(eqn.outputs):
        raise VerifyError(f"equation {index} ({eqn.prim.name}): wrong number of outputs")
    for want, var in zip(expected, eqn.outputs):
        if not want.same_type(var.aval):
            raise VerifyError(
                f"equation {index} ({eqn.prim.name}): output typed {var.aval}, rule says {want}")


def _input_dims(program: Program) -> set:
    return {id(resolve(d)) for v in program.invars + program.constvars
            for d in v.aval.shape if type(resolve(d)) is not int}


def _check_symbols(eqn: Eqn, readable: set) -> None:
    for v in eqn.outputs:
        for d in v.aval.shape:
            root = resolve(d)
            if type(root) is not int and id(root) not in readable:
                raise VerifyError(
                    f"{eqn.prim.name}: dimension {root!r} is not the size of any input")
