"""Pytrees: nested tuples, lists, dicts, namedtuples and None with arrays and scalars
as leaves (a namedtuple is what np.linalg.eigh/slogdet/svd return).

`flatten` runs on every cached call, so it is one recursive walk with no
allocation beyond the leaf list and a hashable description of the structure.
"""

from __future__ import annotations

from typing import Any

from numpy import ndarray

# A treedef is a hashable nested tuple: ("*",) for a leaf, (None,) for None,
# ("t", children), ("l", children), ("d", keys, children) or ("n", type, children)
# for a namedtuple.
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
    if isinstance(tree, tuple) and hasattr(kind, "_fields"):
        return ("n", kind, tuple([_flatten_into(child, leaves) for child in tree]))
    leaves.append(tree)
    return LEAF


def signature(tree: Any, leaves: list) -> tuple:
    """One pass collecting the leaves and a flat hashable key of the structure
    and each array's dtype and shape. The hot dispatch path of every compiled
    function is this call plus one dict lookup, so it is kept flat and inline.
    (Memory layout is left to Numba's own dispatch: the kernels are
    layout-generic, Numba specialises them per layout.)"""
    key: list = []
    _signature_into(tree, leaves, key)
    return tuple(key)


def _signature_into(tree, leaves: list, key: list) -> None:
    kind = type(tree)
    if kind is tuple or kind is list:
        key.append(len(tree) if kind is tuple else ~len(tree))
        for child in tree:
            if type(child) is ndarray:
                leaves.append(child)
                key.append(child.dtype)
                key.append(child.shape)
            else:
                _signature_into(child, leaves, key)
    elif kind is ndarray:
        leaves.append(tree)
        key.append(tree.dtype)
        key.append(tree.shape)
    elif kind is dict:
        keys = tuple(sorted(tree))
        key.append(keys)
        for k in keys:
            _signature_into(tree[k], leaves, key)
    elif tree is None:
        key.append(None)
    elif isinstance(tree, tuple) and hasattr(kind, "_fields"):
        key.append(kind)
        key.append(len(tree))
        for child in tree:
            _signature_into(child, leaves, key)
    else:
        leaves.append(tree)
        key.append(kind)


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
    if tag == "n":
        return treedef[1](*[_build(child, leaves) for child in treedef[2]])
    keys, children = treedef[1], treedef[2]
    return {key: _build(child, leaves) for key, child in zip(keys, children)}


def expression(treedef: tuple, leaf, counter=None) -> str | None:
    """Python source building the tree of `treedef`, `leaf(k)` giving the k-th
    leaf's source; None when a dict key has no literal form. Compiled once per
    signature, it rebuilds outputs without walking the treedef on every call."""
    counter = counter if counter is not None else iter(range(1 << 30))
    tag = treedef[0]
    if tag == "*":
        return leaf(next(counter))
    if tag is None:
        return "None"
    if tag == "n":
        return None  # the namedtuple's type has no literal form: unflatten builds it
    if tag == "d":
        if not all(type(k) in (str, int) for k in treedef[1]):
            return None
        items = [(repr(k), expression(c, leaf, counter)) for k, c in zip(treedef[1], treedef[2])]
        if any(v is None for _, v in items):
            return None
        return "{" + ", ".join(f"{k}: {v}" for k, v in items) + "}"
    items = [expression(c, leaf, counter) for c in treedef[1]]
    if any(v is None for v in items):
        return None
    if tag == "l":
        return "[" + ", ".join(items) + "]"
    return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"


def builder(treedef: tuple):
    """`leaves -> tree` for one treedef, generated once (`expression`): a hot call
    rebuilds its outputs without walking the treedef."""
    tree = expression(treedef, lambda k: f"r[{k}]")
    if tree is None:
        return lambda leaves: unflatten(treedef, leaves)
    namespace: dict = {}
    exec(f"def build(r):\n    return {tree}\n", namespace)
    return namespace["build"]


def num_leaves(treedef: tuple) -> int:
    tag = treedef[0]
    if tag == "*":
        return 1
    if tag is None:
        return 0
    children = treedef[2] if tag in ("d", "n") else treedef[1]
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
    if tag == "n":
        return f"{treedef[1].__name__}({', '.join(describe(c) for c in treedef[2])})"
    inner = ", ".join(describe(c) for c in treedef[1])
    return f"({inner},)" if tag == "t" and len(treedef[1]) == 1 else (
        f"({inner})" if tag == "t" else f"[{inner}]")


def leaf_paths(tree: Any) -> list[str]:
    """Each leaf's path in `tree`, in `flatten` order, as Python would index it:
    `[0]`, `['w']`, `[1]['b']`; the empty string for a tree that is a leaf."""
    paths: list[str] = []
    _paths_into(tree, "", paths)
    return paths


def _paths_into(tree: Any, prefix: str, paths: list) -> None:
    kind = type(tree)
    if kind is tuple or kind is list:
        for k, child in enumerate(tree):
            _paths_into(child, f"{prefix}[{k}]", paths)
    elif kind is dict:
        for key in sorted(tree):
            _paths_into(tree[key], f"{prefix}[{key!r}]", paths)
    elif tree is not None:
        paths.append(prefix)
