"""Indexing tracers as NumPy does: `x[key]` for every key form with a static shape.

- basic indexing (ints, slices, `None`, `...`) is a static slice, a squeeze and
  an expand;
- integer arrays (and ints among them) are a `gather`; when they are not
  adjacent (`x[i, :, j]`, or split by `None`) NumPy puts the broadcast index
  axes first, and so does this;
- a boolean mask that is a constant is its `np.nonzero` indices; a traced mask
  has a data-dependent shape and raises;
- a slice with a traced start (`x[i * b:(i + 1) * b]`) is a `dynamic_slice`
  when its length is static: start and stop are affine in the same traced
  integers and their difference is a constant.
"""

from __future__ import annotations

import numpy as np

from ..core.errors import ShapeError, TracerTypeError, UnsupportedError, with_location
from ..core.ir import Literal
from ..core.shapes import bind as bind_dim
from ..trace import ops
from ..trace.registry import canonical_params
from ..trace.tracer import Tracer
from .api import FUNCTIONS, _gather, asarray, ravel, tracer_methods


def getitem(x, key):
    key = key if isinstance(key, tuple) else (key,)
    # a list or tuple inside the key is an index array, as in NumPy (x[(0, 1), (3, 2)])
    key = _expand_masks(tuple(index_array(k) if isinstance(k, (list, tuple)) else k
                              for k in key))
    if any(isinstance(k, slice) and _is_traced_slice(k) for k in key):
        x, key = _dynamic_slices(x, key)
    if any(_is_advanced(k) for k in key):
        return _advanced_index(x, key)
    return _basic_index(x, key)


def _is_advanced(k) -> bool:
    return isinstance(k, (Tracer, np.ndarray)) and not isinstance(k, np.generic)


def index_array(k):
    arr = asarray(k)
    if arr.dtype == np.bool_:
        raise UnsupportedError(with_location(
            "indexing with a traced boolean mask gives a data-dependent shape",
            hint="use np.where(mask, x, 0) (and a sum) instead of x[mask]"))
    if not np.issubdtype(arr.dtype, np.integer):
        raise TracerTypeError(with_location(f"index arrays must be integers, got {arr.dtype}"))
    return arr


def _expand_masks(key):
    """A constant boolean mask is the integer indices of its True entries."""
    out = []
    for k in key:
        if isinstance(k, np.ndarray) and k.dtype == np.bool_:
            out.extend(np.nonzero(k))
        else:
            out.append(k)
    return tuple(out)


def _expand_ellipsis(key, ndim):
    used = sum(1 for k in key if k is not None and k is not Ellipsis)
    if used > ndim:
        raise ShapeError(with_location(f"too many indices ({used}) for an array of {ndim} dims"))
    out = []
    for k in key:
        if k is Ellipsis:
            out.extend([slice(None)] * (ndim - used))
        else:
            out.append(k)
    if not any(k is Ellipsis for k in key):
        out.extend([slice(None)] * (ndim - used))
    return out


def _basic_index(x, key):
    key = _expand_ellipsis(key, x.ndim)
    starts, stops, steps, int_axes, new_axes = [], [], [], [], []
    axis, out_pos = 0, 0
    for k in key:
        if k is None:
            new_axes.append(out_pos)
            out_pos += 1
            continue
        if isinstance(k, slice):
            starts.append(k.start), stops.append(k.stop), steps.append(k.step)
            out_pos += 1
        else:
            size = bind_dim(x.aval.shape[axis])
            i = int(k)
            if not -size <= i < size:
                raise IndexError(with_location(
                    f"index {i} is out of bounds for axis {axis} with size {size}"))
            i %= size
            starts.append(i), stops.append(i + 1), steps.append(1)
            int_axes.append(axis)
        axis += 1
    out = ops.static_slice(x, starts, stops, steps)
    out = ops.squeeze(out, int_axes)
    return ops.expand_dims(out, tuple(new_axes)) if new_axes else out


def _advanced_index(x, key):
    key = _expand_ellipsis(key, x.ndim)
    if any(k is None for k in key):  # new axes first, then index them as whole slices
        positions = [p for p, k in enumerate(key) if k is None]
        x = ops.expand_dims(x, tuple(positions))
        key = [slice(None) if k is None else k for k in key]
    positions = [i for i, k in enumerate(key) if not isinstance(k, slice)]
    sliced = ops.static_slice(
        x, *zip(*[(k.start, k.stop, k.step) if isinstance(k, slice) else (0, None, 1)
                  for k in key]))
    indices = [index_array(key[i]) for i in positions]
    if positions == list(range(positions[0], positions[-1] + 1)):
        return _gather(sliced, indices, positions[0])
    # Not adjacent: NumPy puts the broadcast index axes first, the others keep their order.
    rest = [k for k in range(sliced.ndim) if k not in positions]
    return _gather(ops.transpose(sliced, positions + rest), indices, 0)


# ---------------------------------------------------------- dynamic slices

def _is_traced_slice(k: slice) -> bool:
    return isinstance(k.start, Tracer) or isinstance(k.stop, Tracer)


def _dynamic_slices(x, key):
    """Apply the slices with traced bounds; returns (x, the rest of the key)."""
    key = _expand_ellipsis(key, x.ndim)
    rest, axis = [], 0
    for k in key:
        if isinstance(k, slice) and _is_traced_slice(k):
            x = dynamic_slice(x, k.start, _static_length(k), axis)
            k = slice(None)
        rest.append(k)
        axis += k is not None
    return x, tuple(rest)


def _static_length(k: slice) -> int:
    if k.step not in (None, 1):
        raise UnsupportedError(with_location("a slice with a traced bound must have step 1"))
    start, stop = affine(k.start), affine(k.stop)
    if start is None or stop is None:
        raise UnsupportedError(with_location(
            "slice with a traced bound: its length must be fixed at trace time",
            hint="write it as x[i:i + size] (or x[i * b:(i + 1) * b]) with a constant size, "
                 "or make the bound a static argument (static_argnums)"))
    length = {v: stop.get(v, 0) - start.get(v, 0) for v in set(start) | set(stop)}
    if any(c != 0 for v, c in length.items() if v is not None):
        raise UnsupportedError(with_location(
            "slice with a traced bound: its length depends on traced values",
            hint="x[i:i + size] with a constant size is traced as a dynamic slice"))
    size = int(length.get(None, 0))
    if size <= 0:
        raise UnsupportedError(with_location(
            "slice with a traced bound: its length is not positive at trace time"))
    return size


def affine(value):
    """`value` (an int, or a traced integer scalar) as {variable: coefficient,
    None: constant}, when it is affine in traced integers; else None. Other
    integer computations (`i // 2`) are opaque variables, equal when written alike."""
    if not isinstance(value, Tracer):
        if value is None:
            return {None: 0}
        return {None: int(value)} if isinstance(value, (int, np.integer)) else None
    if value.ndim != 0 or not np.issubdtype(value.dtype, np.integer):
        return None
    return _Affine().form(value.ir_var, value.builder)


class _Affine:
    """Walks the equations behind a traced integer, through nested traces (an
    outer tracer used inside a `grad` is a captured constant of the inner one)."""

    def __init__(self):
        self.producers: dict = {}

    def origin(self, atom, builder):
        """(equation producing atom or None, the atom/builder it really is)."""
        if id(builder) not in self.producers:
            consts = {id(v): c for v, c in zip(builder.constvars, builder.const_values)}
            self.producers[id(builder)] = ({id(v): e for e in builder.eqns for v in e.outputs},
                                           consts)
        producer, consts = self.producers[id(builder)]
        outer = consts.get(id(atom))
        if isinstance(outer, Tracer):
            return self.origin(outer.ir_var, outer.builder)
        return producer.get(id(atom)), atom, builder

    def form(self, atom, builder):
        if isinstance(atom, Literal):
            return {None: int(atom.value)} if np.issubdtype(atom.aval.dtype, np.integer) else None
        eqn, atom, builder = self.origin(atom, builder)
        if eqn is None:
            return {id(atom): 1}
        parts = [self.form(a, builder) for a in eqn.inputs]
        if len(eqn.outputs) != 1 or any(p is None for p in parts):
            return {self.structure(atom, builder): 1}
        name = eqn.prim.name
        if name == "convert" and np.issubdtype(eqn.outputs[0].aval.dtype, np.integer):
            return parts[0]
        if name in ("add", "sub"):
            sign = 1 if name == "add" else -1
            a, b = parts
            return {v: a.get(v, 0) + sign * b.get(v, 0) for v in set(a) | set(b)}
        if name == "neg":
            return {v: -c for v, c in parts[0].items()}
        if name == "mul" and any(set(p) <= {None} for p in parts):
            const, other = parts if set(parts[0]) <= {None} else parts[::-1]
            return {v: c * const.get(None, 0) for v, c in other.items()}
        return {self.structure(atom, builder): 1}

    def structure(self, atom, builder):
        """Equal for equal computations (`i // 2` written twice is one variable)."""
        if isinstance(atom, Literal):
            return ("literal", atom.value.item())
        eqn, atom, builder = self.origin(atom, builder)
        if eqn is None:
            return id(atom)
        position = [id(v) for v in eqn.outputs].index(id(atom))
        return (eqn.prim.name, canonical_params(eqn.params), position,
                tuple(self.structure(a, builder) for a in eqn.inputs))


def dynamic_slice(x, start, size: int, axis: int):
    """x[..., start:start + size, ...] along `axis` with a traced start (NumPy's
    negative-start rule; a slice NumPy would shorten raises IndexError at run time)."""
    (start,) = ops.promote(start)
    start = ops.convert(start, np.int64)
    if size > bind_dim(x.aval.shape[axis]) and isinstance(x.aval.shape[axis], int):
        raise IndexError(with_location(f"slice of {size} on an axis of "
                                       f"{x.aval.shape[axis]}"))
    return ops.bind(ops.R["dynamic_slice"], x, start, axis=axis, size=int(size))


def take(x, indices, axis=None):
    x = asarray(x)
    if axis is None:
        x, axis = ravel(x), 0
    return _gather(x, [index_array(indices)], axis % x.ndim)


FUNCTIONS[np.take] = take
tracer_methods(
    __getitem__=getitem, take=take,
    __iter__=lambda self: (getitem(self, i) for i in range(len(self))))
