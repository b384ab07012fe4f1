"""Count tracejit's modules, import circles and upward imports from the code's own imports.

    python tools/import_graph.py            # summary
    python tools/import_graph.py --edges    # every intra-package import, module-level and local
    python tools/import_graph.py --upward   # imports against the layer order in pyproject.toml

Reads every ``import`` statement (module level and inside functions) with ``ast``;
an import of a package counts as an import of its ``__init__``.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "tracejit"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def resolve(current: str, is_package: bool, node, modules) -> list[str]:
    """The modules an import statement reads: `from . import ops` reads `ops`, not `__init__`."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = current if is_package else current.rpartition(".")[0]
    for _ in range(node.level - 1):
        base = base.rpartition(".")[0]
    stem = (base + "." + node.module) if node.module and node.level else (node.module or base)
    submodules = [stem + "." + alias.name for alias in node.names]
    if all(name in modules for name in submodules):
        return submodules
    return [stem] + [name for name in submodules if name in modules]


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in ROOT.rglob("*.py")}
    edges: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in resolve(name, path.name == "__init__.py", node, files):
                    if target in files and target != name:
                        edges[name].add(target)
    return edges


def strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in edges:
        if v not in index:
            visit(v)
    return found


def layer_order() -> list[set[str]]:
    """The import-linter layers contract of pyproject.toml, lowest layer first."""
    import tomllib

    config = tomllib.loads((ROOT.parent / "pyproject.toml").read_text())
    contract = next(c for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "layers")
    layers = [{name.strip() for name in layer.replace(":", "|").split("|")}
              for layer in contract["layers"]]
    return list(reversed(layers))


def upward(edges: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Imports from a module of a lower layer into a higher one."""
    order = layer_order()

    def rank(module: str):
        parts = module.split(".")
        top = parts[1] if len(parts) > 1 else None
        return next((k for k, layer in enumerate(order) if top in layer), None)

    found = []
    for source, targets in edges.items():
        for target in targets:
            a, b = rank(source), rank(target)
            if a is not None and b is not None and a < b:
                found.append((source, target))
    return sorted(found)


def main() -> None:
    edges = graph()
    circles = strongly_connected(edges)
    print(f"modules: {len(edges)}")
    print(f"import circles: {len(circles)} (sizes {sorted(map(len, circles), reverse=True)})")
    for circle in circles:
        print("  " + ", ".join(circle))
    if "--upward" in sys.argv:
        against = upward(edges)
        print(f"imports against the layer order: {len(against)}")
        for source, target in against:
            print(f"  {source} -> {target}")
    if "--edges" in sys.argv:
        for source in sorted(edges):
            for target in sorted(edges[source]):
                print(f"{source} -> {target}")


if __name__ == "__main__":
    main()
