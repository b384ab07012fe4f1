"""Pytrees: nested tuples, lists, dicts and None with arrays and scalars as leaves.

`flatten` runs on every cached call, so it is one recursive walk with no
allocation beyond the leaf list and a hashable description of the structure.
"""

from __future__ import annotations

from typing import Any

from numpy import ndarray

# A treedef is a hashable nested tuple: ("*",) for a leaf, (None,) for None,
# ("t", children), ("l", children) or ("d", keys, children).
LEAF = ("*",)
NONE = (None,)


def flatten(tree: Any) -> tuple[list, tuple]:
    """Return (leaves, treedef); `unflatten(treedef, leaves)` rebuilds the tree."""
    leaves: list = []
    return leaves, _flatten_into(tree, leaves)


def _flatten_into(tree: Any, leaves: list) -> tuple:
    kind = type(tree)
    if kind is tuple or kind is list:
        tag = "t" if kind is tuple else "l"
        return (tag, tuple([_flatten_into(child, leaves) for child in tree]))
    if kind is dict:
        keys = tuple(sorted(tree))
        return ("d", keys, tuple([_flatten_into(tree[k], leaves) for k in keys]))
    if tree is None:
        return NONE
    leaves.append(tree)
    return LEAF


def signature(tree: Any, leaves: list):
    """One pass that collects the leaves and returns a hashable key of the
    structure *and* each array's dtype, shape and strides. The hot dispatch
    path of every compiled function is this call plus one dict lookup, so
    array children are handled inline rather than by recursion."""
    kind = type(tree)
    if kind is tuple or kind is list:
        parts = []
        for child in tree:
            if type(child) is ndarray:
                leaves.append(child)
                parts.append((child.dtype.num, child.shape, child.strides))
            else:
                parts.append(signature(child, leaves))
        return (kind, tuple(parts))
    if kind is ndarray:
        leaves.append(tree)
        return (tree.dtype.num, tree.shape, tree.strides)
    if kind is dict:
        keys = tuple(sorted(tree))
        return (keys, tuple([signature(tree[k], leaves) for k in keys]))
    if tree is None:
        return None
    leaves.append(tree)
    return kind


def unflatten(treedef: tuple, leaves) -> Any:
    """Inverse of `flatten`: build the tree of `treedef` from `leaves` in order."""
    return _build(treedef, iter(leaves))


def _build(treedef: tuple, leaves) -> Any:
    tag = treedef[0]
    if tag == "*":
        return next(leaves)
    if tag is None:
        return None
    if tag == "t":
        return tuple([_build(child, leaves) for child in treedef[1]])
    if tag == "l":
        return [_build(child, leaves) for child in treedef[1]]
    keys, children = treedef[1], treedef[2]
    return {key: _build(child, leaves) for key, child in zip(keys, children)}


def num_leaves(treedef: tuple) -> int:
    tag = treedef[0]
    if tag == "*":
        return 1
    if tag is None:
        return 0
    children = treedef[2] if tag == "d" else treedef[1]
    return sum(num_leaves(child) for child in children)


def tree_map(fn, tree: Any, *rest: Any) -> Any:
    """Apply `fn` leafwise over trees of one structure."""
    leaves, treedef = flatten(tree)
    others = [flatten(other)[0] for other in rest]
    return unflatten(treedef, [fn(*group) for group in zip(leaves, *others)])


def describe(treedef: tuple) -> str:
    """A short human-readable form of a structure, for error messages."""
    tag = treedef[0]
    if tag == "*":
        return "*"
    if tag is None:
        return "None"
    if tag == "d":
        items = ", ".join(f"{k!r}: {describe(c)}" for k, c in zip(treedef[1], treedef[2]))
        return "{" + items + "}"
    inner = ", ".join(describe(c) for c in treedef[1])
    return f"({inner},)" if tag == "t" and len(treedef[1]) == 1 else (
        f"({inner})" if tag == "t" else f"[{inner}]")
