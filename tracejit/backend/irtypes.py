"""Numba's typing of a loop nest's source, as irgen.py needs it: the LLVM type of
each scalar, NumPy's promotion of mixed operations (int64 Python ints, float64
Python floats), conversions as Numba converts, and the type of every name and
expression of a nest (a name assigned several types has their common type)."""

from __future__ import annotations

import ast

import numpy as np
from llvmlite import ir

I1, I8, I32, I64 = ir.IntType(1), ir.IntType(8), ir.IntType(32), ir.IntType(64)
VOID_P = I8.as_pointer()
BOOL = np.dtype(bool)
INT = np.dtype(np.int64)
FLOAT = np.dtype(np.float64)



class Unsupported(Exception):
    """The nest uses something the translation does not: Numba compiles it."""


def lltype(dtype: np.dtype) -> ir.Type:
    """The LLVM type of a scalar in registers."""
    if dtype.kind == "f" and dtype.itemsize in (4, 8):
        return ir.FloatType() if dtype.itemsize == 4 else ir.DoubleType()
    if dtype.kind in "iu":
        return ir.IntType(8 * dtype.itemsize)
    if dtype.kind == "b":
        return I1
    raise Unsupported(f"dtype {dtype}")


def memtype(dtype: np.dtype) -> ir.Type:
    """The LLVM type of a scalar in memory (a bool is a byte)."""
    return I8 if dtype.kind == "b" else lltype(dtype)


def promote(a: np.dtype, b: np.dtype) -> np.dtype:
    """The type of a mixed operation, as Numba types it (NumPy's scalar promotion);
    signed with unsigned is not decided the same way everywhere: refused."""
    if {a.kind, b.kind} == {"i", "u"}:
        raise Unsupported("signed and unsigned integers mixed")
    return np.promote_types(a, b)


def arithmetic(a: np.dtype, b: np.dtype) -> np.dtype:
    kind = promote(a, b)
    return INT if kind == BOOL else kind



def cast(builder: ir.IRBuilder, value, source: np.dtype, target: np.dtype):
    """`value` of type `source` converted as Numba converts it."""
    if source == target:
        return value
    to = lltype(target)
    if source.kind == "b":
        return (builder.uitofp(value, to) if target.kind == "f" else builder.zext(value, to))
    if target.kind == "b":
        zero = ir.Constant(value.type, 0)
        return (builder.fcmp_unordered("!=", value, zero) if source.kind == "f"
                else builder.icmp_unsigned("!=", value, zero))
    if source.kind == "f":
        if target.kind == "f":
            wider = target.itemsize > source.itemsize
            return builder.fpext(value, to) if wider else builder.fptrunc(value, to)
        return builder.fptosi(value, to) if target.kind == "i" else builder.fptoui(value, to)
    if target.kind == "f":
        return builder.sitofp(value, to) if source.kind == "i" else builder.uitofp(value, to)
    if target.itemsize == source.itemsize:
        return value
    if target.itemsize < source.itemsize:
        return builder.trunc(value, to)
    return builder.sext(value, to) if source.kind == "i" else builder.zext(value, to)


class Param:
    """One argument of the nest, from its Numba type: a scalar or an array."""

    def __init__(self, dtype: np.dtype, ndim: int | None = None, layout: str = "C"):
        self.dtype, self.ndim, self.layout = np.dtype(dtype), ndim, layout

    @property
    def is_array(self) -> bool:
        return self.ndim is not None



COMPARE = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">",
            ast.GtE: ">="}
# NumPy functions Numba lowers to these LLVM intrinsics (np.log2 it does not)
MATH = {"log", "sqrt", "sin", "cos", "floor", "ceil", "log10", "fabs"}
# ... and these to the C library's (float32: the name with an f)
LIBM = {"log1p": "log1p", "tan": "tan", "sinh": "sinh", "cosh": "cosh", "arcsin": "asin",
         "arccos": "acos", "arctan": "atan", "arcsinh": "asinh", "arccosh": "acosh",
         "arctanh": "atanh"}
ALLOCATORS = ("empty", "full")
COPIES = ("put1", "put2", "put3")


def rt_call(node, names) -> str | None:
    """`f` of a call `_rt.f(...)` whose f is in `names`, else None."""
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name) and node.func.value.id == "_rt"
            and node.func.attr in names):
        return node.func.attr
    return None


def np_attr(node) -> str | None:
    if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
            and node.value.id == "np"):
        return node.attr
    return None


def np_dtype(name: str | None) -> np.dtype | None:
    try:
        dtype = np.dtype(name) if name else None
    except TypeError:
        return None
    return dtype if dtype is not None and dtype.kind in "biuf" else None


def constant_type(value) -> np.dtype:
    if isinstance(value, (bool, np.bool_)):
        return BOOL
    if type(value) is int:
        return INT
    if type(value) is float:
        return FLOAT
    if isinstance(value, np.generic) and value.dtype.kind in "iuf":
        return value.dtype
    raise Unsupported(f"constant {value!r}")


def constant(value, dtype: np.dtype):
    if dtype.kind == "f":
        return ir.Constant(lltype(dtype), float(value))
    return ir.Constant(lltype(dtype), int(value))


# ------------------------------------------------------------------ types of the source

class Types:
    """The type of every scalar name, inferred as Numba does: a name assigned values
    of several types has their common type."""

    def __init__(self, scalars: dict, arrays: dict, helpers=None):
        self.scalars = dict(scalars)  # name -> dtype
        self.arrays = arrays  # name -> dtype
        self.helpers = helpers  # (name, argument dtypes) -> Helper, or raises Unsupported

    def infer(self, body: list) -> None:
        for _ in range(8):
            before = dict(self.scalars)
            self._block(body)
            if before == self.scalars:
                return
        raise Unsupported("types do not settle")

    def _assign(self, name: str, dtype: np.dtype) -> None:
        if name in self.arrays:
            raise Unsupported(f"{name} is an array and a scalar")
        old = self.scalars.get(name)
        self.scalars[name] = dtype if old is None else promote(old, dtype)

    def _block(self, body: list) -> None:
        for stmt in body:
            if isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Name):
                if stmt.targets[0].id not in self.arrays:  # not an allocation or a view
                    self._assign(stmt.targets[0].id, self.of(stmt.value))
            elif isinstance(stmt, ast.AugAssign) and isinstance(stmt.target, ast.Name):
                name = stmt.target.id
                if name in self.scalars:
                    self._assign(name, self.binop(stmt.op, self.scalars[name],
                                                   self.of(stmt.value)))
            elif isinstance(stmt, ast.For):
                self._assign(stmt.target.id, INT)
                self._block(stmt.body)
            elif isinstance(stmt, ast.If):
                self._block(stmt.body)
                self._block(stmt.orelse)

    def of(self, node) -> np.dtype:  # noqa: C901 - one case per expression kind
        if isinstance(node, ast.Constant):
            return constant_type(node.value)
        if isinstance(node, ast.Name):
            if node.id in self.scalars:
                return self.scalars[node.id]
            raise Unsupported(f"name {node.id} not a known scalar here")
        if isinstance(node, ast.BinOp):
            return self.binop(node.op, self.of(node.left), self.of(node.right))
        if isinstance(node, ast.UnaryOp):
            inner = self.of(node.operand)
            if isinstance(node.op, ast.Not):
                return BOOL
            if inner == BOOL or not isinstance(node.op, (ast.USub, ast.UAdd)):
                raise Unsupported("unary operator")
            return inner
        if isinstance(node, ast.Compare):
            if len(node.ops) != 1 or type(node.ops[0]) not in COMPARE:
                raise Unsupported("comparison")
            promote(self.of(node.left), self.of(node.comparators[0]))
            return BOOL
        if isinstance(node, (ast.BoolOp)):
            if any(self.of(v) != BOOL for v in node.values):
                raise Unsupported("and/or of non-booleans")
            return BOOL
        if isinstance(node, ast.IfExp):
            self.of(node.test)
            return promote(self.of(node.body), self.of(node.orelse))
        if isinstance(node, ast.Subscript):
            if isinstance(node.value, ast.Name) and node.value.id in self.arrays:
                return self.arrays[node.value.id]
            raise Unsupported("subscript of a non-array")
        if isinstance(node, ast.Call):
            return self._call(node)
        raise Unsupported(type(node).__name__)

    @staticmethod
    def binop(op, left: np.dtype, right: np.dtype) -> np.dtype:
        if isinstance(op, (ast.Add, ast.Sub, ast.Mult)):
            return arithmetic(left, right)
        if isinstance(op, ast.Div):
            kind = arithmetic(left, right)
            return FLOAT if kind.kind in "iu" else kind
        if isinstance(op, (ast.BitAnd, ast.BitOr, ast.BitXor)) and left == right == BOOL:
            return BOOL
        if isinstance(op, ast.Pow) and left.kind == right.kind == "f":
            return promote(left, right)  # llvm.pow, as Numba's float ** float
        raise Unsupported(f"operator {type(op).__name__}")

    def _call(self, node: ast.Call) -> np.dtype:
        if node.keywords:
            raise Unsupported("keyword arguments")
        args = [self.of(a) for a in node.args]
        if rt_call(node, (node.func.attr,) if isinstance(node.func, ast.Attribute) else ()):
            if self.helpers is None:
                raise Unsupported(f"call {ast.unparse(node.func)}")
            return self.helpers(node.func.attr, tuple(args)).result
        target = np_dtype(np_attr(node.func))
        if target is not None and len(args) == 1:
            return target
        if (np_attr(node.func) in MATH or np_attr(node.func) in LIBM) and len(args) == 1:
            return args[0] if args[0].kind == "f" else FLOAT
        if isinstance(node.func, ast.Name) and node.func.id == "abs" and len(args) == 1:
            if args[0] == BOOL:
                raise Unsupported("abs of a bool")
            return args[0]
        raise Unsupported(f"call {ast.unparse(node.func)}")


