"""Outlining: each loop nest of a kernel becomes a small shared function.

Numba's compile time grows faster than linearly with the length of a
function (LLVM's SROA and Numba's SSA passes), so a kernel made of many
nests compiles far faster as a short driver calling one function per nest.
And nests are repetitive: every time step of an RNN, every layer of the
same width has the same nest. So the nest's code is put in canonical form:

- the names it reads become parameters, the names it defines locals, both
  renamed in order of appearance (p0, p1, ... / v0, v1, ...);
- integer constants in subscripts (the row `t` of `X[t]`) become parameters;
  an index that was provably non-negative before (sums and products of loop
  counters and non-negative constants) is cast to uint64, so that it stays so:
  Numba wraps a signed index that may be negative (`i < 0 ? i + n : i`), and
  behind that select LLVM's vectoriser gathers instead of loading (an LSTM's
  gate nest, reading its gates at lifted column offsets, ran 2.6x slower);
- a loop's static trip count becomes a parameter when the loops it holds are
  more than a small static block (at most UNROLLED iterations: a pool's
  window). With literal counts LLVM unrolled the outer loops too, for nothing:
  the convnet's gradient masks over (n, 11, 11, 64) compiled in 0.45 s, 0.19 s
  with the two 11s as parameters, and ran as fast;
- the function is named by a digest of that canonical source.

Identical nests are then one function, in its own module file named by the
same digest, compiled once per machine: Numba's disk cache serves it to
every later kernel and process that contains that nest.
"""

from __future__ import annotations

import ast
import hashlib
from dataclasses import dataclass

_NAME = "__nest__"  # stands for the name, a digest of the source it appears in
UNROLLED = 16  # iterations of a block of static loops that stays literal (a window)
GLOBALS = frozenset({"np", "_rt", "range", "prange", "min", "max", "abs", "int", "float",
                     "bool", "len", "IndexError", "ValueError", "True", "False", "None"})


@dataclass(frozen=True)
class Helper:
    """A shared nest function: its name, the module source defining it, and
    the call that replaces the nest in a kernel."""

    name: str
    module: str
    call: str


class _Names(ast.NodeVisitor):
    """Names in order of first appearance, and which ones are assigned."""

    def __init__(self):
        self.order: list[str] = []
        self.stored: set[str] = set()

    def visit_Name(self, node: ast.Name) -> None:  # noqa: N802 - ast's visitor protocol
        if node.id not in self.order:
            self.order.append(node.id)
        if isinstance(node.ctx, ast.Store):
            self.stored.add(node.id)


def _lifted(name: str) -> int | None:
    """The position of a lifted constant's parameter (`o3` -> 3), or None."""
    return int(name[1:]) if name[:1] == "o" and name[1:].isdigit() else None


def _bound(loop: ast.For):
    """n of `for i in range(n)` (or prange), else None."""
    it = loop.iter
    if (isinstance(it, ast.Call) and isinstance(it.func, ast.Name)
            and it.func.id in ("range", "prange") and len(it.args) == 1):
        return it.args[0]
    return None


def _counters(fn: ast.FunctionDef) -> set[str]:
    """Loop variables counting up from 0: `for i in range(n)` (or prange)."""
    return {node.target.id for node in ast.walk(fn)
            if isinstance(node, ast.For) and isinstance(node.target, ast.Name)
            and _bound(node) is not None}


def _static_count(loop: ast.For) -> int | None:
    """The trip count of `for i in range(K)` (or prange) with a literal K, else None."""
    bound = _bound(loop)
    if isinstance(bound, ast.Constant) and type(bound.value) is int:
        return bound.value
    return None


def _count_lifted(loop: ast.For) -> bool:
    """Whether a loop's literal trip count becomes a parameter: the loops it holds are
    more than one small static block (which LLVM unrolls whole: a pool's window, the
    loop around it keeps its count)."""
    inner = [node for stmt in loop.body for node in ast.walk(stmt) if isinstance(node, ast.For)]
    block = 1
    for node in inner:
        count = _static_count(node)
        if count is None:
            return True
        block *= count
    return block > UNROLLED


class _Rename(ast.NodeTransformer):
    def __init__(self, mapping: dict, lift: list, counters: set[str]):
        self.mapping = mapping
        self.lift = lift  # integer constants found in subscripts, in order
        self.counters = counters  # renamed loop counters: never negative
        self.in_subscript = 0

    def visit_Name(self, node: ast.Name):  # noqa: N802
        return ast.copy_location(ast.Name(self.mapping.get(node.id, node.id), node.ctx), node)

    def visit_For(self, node: ast.For):  # noqa: N802
        if _static_count(node) is not None and _count_lifted(node):
            self.lift.append(_static_count(node))
            node.iter.args[0] = ast.copy_location(
                ast.Name(f"o{len(self.lift) - 1}", ast.Load()), node.iter.args[0])
        return self.generic_visit(node)

    def visit_Subscript(self, node: ast.Subscript):  # noqa: N802
        node.value = self.visit(node.value)
        self.in_subscript += 1
        lifted = len(self.lift)
        node.slice = self.visit(node.slice)
        self.in_subscript -= 1
        if len(self.lift) > lifted:
            node.slice = self._unsigned(node.slice)
        return node

    def _unsigned(self, index):
        if isinstance(index, ast.Tuple):
            index.elts = [self._unsigned(e) for e in index.elts]
            return index
        if isinstance(index, ast.BinOp) and self._lifted_in(index) and self._nonnegative(index):
            cast = ast.Attribute(ast.Name("np", ast.Load()), "uint64", ast.Load())
            return ast.copy_location(ast.Call(cast, [index], []), index)
        return index

    @staticmethod
    def _lifted_in(node) -> bool:
        return any(isinstance(n, ast.Name) and _lifted(n.id) is not None for n in ast.walk(node))

    def _nonnegative(self, node) -> bool:
        if isinstance(node, ast.BinOp):
            return (isinstance(node.op, (ast.Add, ast.Mult))
                    and self._nonnegative(node.left) and self._nonnegative(node.right))
        if isinstance(node, ast.Name):
            position = _lifted(node.id)
            return node.id in self.counters if position is None else self.lift[position] >= 0
        return isinstance(node, ast.Constant) and type(node.value) is int and node.value >= 0

    def visit_Constant(self, node: ast.Constant):  # noqa: N802
        if self.in_subscript and type(node.value) is int and node.value != 0:
            self.lift.append(node.value)
            return ast.copy_location(ast.Name(f"o{len(self.lift) - 1}", ast.Load()), node)
        return node


def outline(lines: list[str], exports: list[str], constants: dict, summary: str,
            decorator: str) -> Helper:
    """Lift a block of kernel lines into a shared function.

    `exports` are the names the rest of the kernel reads; `constants` maps
    module constant names (`_k0`) to their defining expressions;
    `decorator(parallel) -> "@njit(...)"` is the function's decorator line."""
    tree = ast.parse("def block():\n" + "".join(f"    {line}\n" for line in lines))
    fn = tree.body[0]
    names = _Names()
    names.visit(fn)
    used_constants = [n for n in names.order if n in constants]
    params = [n for n in names.order if n not in names.stored and n not in GLOBALS
              and n not in constants]
    local_names = [n for n in names.order if n in names.stored]
    mapping = {n: f"p{k}" for k, n in enumerate(params)}
    mapping.update({n: f"v{k}" for k, n in enumerate(local_names)})
    mapping.update({n: f"_k{k}" for k, n in enumerate(used_constants)})
    lifted: list[int] = []
    counters = {mapping[n] for n in _counters(fn)}
    body = [_Rename(mapping, lifted, counters).visit(stmt) for stmt in fn.body]
    args = [mapping[n] for n in params] + [f"o{k}" for k in range(len(lifted))]
    returns = [mapping.get(n, n) for n in exports]
    code = "\n".join(ast.unparse(stmt) for stmt in body)
    if len(returns) == 1:
        result = returns[0]
    else:  # a store has nothing to return
        result = "(" + ", ".join(returns) + ",)" if returns else "None"
    text = "\n".join(
        [decorator("prange(" in code), f"def {_NAME}(" + ", ".join(args) + "):",
         f"    # {summary}"]
        + ["    " + line for line in code.splitlines()] + [f"    return {result}"])
    header = [f"_k{k} = {constants[n]}" for k, n in enumerate(used_constants)]
    digest = hashlib.sha256("\n".join(header + [text]).encode()).hexdigest()[:16]
    name = f"nest_{digest}"
    module = "\n".join([
        f'"""A loop nest shared by tracejit kernels ({summary}). Generated: do not edit."""',
        "import numpy as np", "from numba import njit, prange", "",
        "import tracejit.backend.runtime as _rt", "", *header, "", "",
        text.replace(_NAME, name), ""])
    # np.int64(k), not k: Numba would compile the nest again for every literal value
    call = f"{name}({', '.join(params + [f'np.int64({v})' for v in lifted])})"
    return Helper(name, module, f"{', '.join(exports)} = {call}" if exports else call)


__all__ = ["Helper", "outline"]
