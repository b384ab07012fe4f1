"""Outlining: each loop nest of a kernel becomes a small shared function.

Numba's compile time grows faster than linearly with the length of a
function (LLVM's SROA and Numba's SSA passes), so a kernel made of many
nests compiles far faster as a short driver calling one function per nest.
And nests are repetitive: every time step of an RNN, every layer of the
same width has the same nest. So the nest's code is put in canonical form:

- the names it reads become parameters, the names it defines locals, both
  renamed in order of appearance (p0, p1, ... / v0, v1, ...);
- integer constants in subscripts (the row `t` of `X[t]`) become parameters;
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


class _Rename(ast.NodeTransformer):
    def __init__(self, mapping: dict, lift: list):
        self.mapping = mapping
        self.lift = lift  # integer constants found in subscripts, in order
        self.in_subscript = 0

    def visit_Name(self, node: ast.Name):  # noqa: N802
        return ast.copy_location(ast.Name(self.mapping.get(node.id, node.id), node.ctx), node)

    def visit_Subscript(self, node: ast.Subscript):  # noqa: N802
        node.value = self.visit(node.value)
        self.in_subscript += 1
        node.slice = self.visit(node.slice)
        self.in_subscript -= 1
        return node

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
    body = [_Rename(mapping, lifted).visit(stmt) for stmt in fn.body]
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
