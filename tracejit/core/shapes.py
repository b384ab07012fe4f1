"""Symbolic dimensions: what lets one compiled kernel serve every batch size.

Every input dimension that is not 1 becomes a `Sym` carrying the size seen
while tracing. Ops join symbols (union-find) when NumPy's rules say two
dimensions must agree; a join of two different inputs' dimensions becomes a
runtime check in the kernel. When the trace needs a dimension as a Python int
(`x.shape[0]`, a reshape that merges axes, a slice) the symbol is *bound* to
its value, and the argument's size joins the cache key.
"""

from __future__ import annotations

import itertools

from .errors import ConcretizationError, ShapeError, with_location

_counter = itertools.count()


class Sym:
    """A dimension known only when the kernel runs; `value` is the traced size."""

    __slots__ = ("id", "value", "parent", "bound", "dynamic")

    def __init__(self, value: int, dynamic: bool = False):
        self.id = next(_counter)
        self.value = value
        self.parent: Sym | None = None
        self.bound = False
        # Defined by an equation when the kernel runs (a while loop's trip
        # count), not by an input: never known while tracing.
        self.dynamic = dynamic

    def __repr__(self) -> str:
        return f"n{self.id}"


Dim = "int | Sym"


def resolve(dim):
    """The canonical form of a dimension: an int, or the root symbol."""
    if type(dim) is int:
        return dim
    while dim.parent is not None:
        dim = dim.parent
    return dim.value if dim.bound else dim


def resolve_shape(shape) -> tuple:
    return tuple(resolve(d) for d in shape)


def value(dim) -> int:
    """The size seen while tracing."""
    return dim if type(dim) is int else dim.value


def concrete_shape(shape) -> tuple[int, ...]:
    return tuple(value(d) for d in shape)


def bind(dim) -> int:
    """Fix a symbol to its traced size (the argument's size joins the cache key)."""
    root = resolve(dim)
    if type(root) is not int:
        if root.dynamic:
            raise ConcretizationError(with_location(
                f"the size {root!r} is the trip count of a while loop: it is only known "
                "when the kernel runs"))
        root.bound = True
        return root.value
    return root


def bind_shape(shape) -> tuple[int, ...]:
    return tuple(bind(d) for d in shape)


def is_one(dim) -> bool:
    """A size known to be 1 (a unit axis: broadcasting stretches it for free)."""
    dim = resolve(dim)
    return type(dim) is int and dim == 1


def is_symbolic(shape) -> bool:
    return any(type(resolve(d)) is not int for d in shape)


class ShapeChecks:
    """Joins of dimensions that came from different places, checked at run time."""

    def __init__(self):
        self.pairs: list[tuple[Sym, Sym, str]] = []

    def record(self, a: Sym, b: Sym, what: str) -> None:
        self.pairs.append((a, b, what))


def join(a, b, what: str, checks: ShapeChecks | None):
    """Unify two dimensions that must be equal; returns the joined dimension."""
    ra, rb = resolve(a), resolve(b)
    if ra is rb or (type(ra) is int and ra == rb):
        return ra
    if value(ra) != value(rb):
        raise ShapeError(f"{what}: dimensions {value(ra)} and {value(rb)} do not match")
    if type(ra) is int:
        return _bind_to(rb, ra)
    if type(rb) is int:
        return _bind_to(ra, rb)
    rb.parent = ra
    if checks is not None:
        checks.record(a, b, what)
    return ra


def _bind_to(sym: Sym, size: int) -> int:
    sym.bound = True
    return size


def broadcast_dim(a, b, what: str, checks: ShapeChecks | None):
    ra, rb = resolve(a), resolve(b)
    if ra == 1 and type(ra) is int:
        return rb
    if rb == 1 and type(rb) is int:
        return ra
    return join(ra, rb, what, checks)


def broadcast_shapes(shapes, what: str, checks: ShapeChecks | None) -> tuple:
    """NumPy broadcasting over symbolic shapes (right-aligned)."""
    rank = max((len(s) for s in shapes), default=0)
    out = [1] * rank
    for shape in shapes:
        padded = (1,) * (rank - len(shape)) + tuple(shape)
        try:
            out = [broadcast_dim(o, d, what, checks) for o, d in zip(out, padded)]
        except ShapeError:
            pretty = " and ".join(format_shape(s) for s in shapes)
            raise ShapeError(f"{what}: shapes {pretty} do not broadcast") from None
    return tuple(out)


def format_dim(dim) -> str:
    dim = resolve(dim)
    return str(dim) if type(dim) is int else f"{dim!r}={dim.value}"


def format_shape(shape) -> str:
    inner = ", ".join(format_dim(d) for d in shape)
    return f"({inner},)" if len(shape) == 1 else f"({inner})"


def normalize_axes(axis, ndim: int, what: str) -> tuple[int, ...]:
    """`axis` as given to NumPy (None, int or tuple) -> sorted tuple of non-negative axes."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    out = []
    for ax in axes:
        if not -ndim <= ax < ndim:
            raise ShapeError(f"{what}: axis {ax} is out of bounds for an array of {ndim} dims")
        out.append(ax % ndim)
    if len(set(out)) != len(out):
        raise ShapeError(f"{what}: repeated axis in {axis}")
    return tuple(sorted(out))
