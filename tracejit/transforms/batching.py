"""Batching (vmap) as a program transformation: Program in, Program out.

`batch_program(program, in_dims, size)` replays a per-example program on
batched values: each value is a pair (array, batch axis or None). Equations
whose operands are all unbatched are recorded as they are; the others go
through their primitive's `batch` rule, `rule(size, args, dims, **params) ->
(out, out_dim)` (lists of both for multi-result primitives), which writes
the batched computation with ordinary primitives. The result is ordinary IR
whose batch size is the batched inputs' (symbolic) leading size: one kernel
serves every batch size, and it can be differentiated, batched again and
compiled like any other program.

Each record holds its rule, set where the record is defined (the families in
tracejit/primitives, written with tracejit/trace/batch_axes.py; the loops and
branches in control/batching.py); custom_vjp_call's is here, since it vmaps
the user's bwd. A primitive without a rule runs through `FALLBACK` (a loop
over the batch, a scan) with a one-time warning naming it.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..core import pytree
from ..core.errors import ShapeError, TracerTypeError, UnsupportedError, with_location
from ..core.ir import Literal, Program
from ..core.shapes import bind_shape, join, resolve
from ..trace import ops
from ..trace.batch_axes import batched_aval, front, materialize, move, ndim, shape, unbatched_aval
from ..trace.registry import REGISTRY
from ..trace.tracer import Builder, bind, current_builder, located, store, trace_closed
from . import autodiff

R = REGISTRY
FALLBACK = None  # (prim, size, args, dims, params) -> (out, dims); set by control/batching.py
_warned: set = set()


# ------------------------------------------------------------------ replay

def batch_replay(program: Program, values: list, dims: list, size) -> tuple[list, list]:
    """Evaluate `program` on batched values into the current trace; returns
    (outputs, their batch axes)."""
    env: dict = {}
    for var, value, dim in zip(program.invars, values, dims, strict=True):
        env[id(var)] = (value, dim)
    for var, value in zip(program.constvars, program.consts):
        env[id(var)] = (value, None)

    def read(atom):
        return (atom.value, None) if isinstance(atom, Literal) else env[id(atom)]

    for eqn in program.eqns:
        args, arg_dims = zip(*[read(a) for a in eqn.inputs]) if eqn.inputs else ((), ())
        with located(eqn.location):
            out, out_dims = _batch_equation(eqn, list(args), list(arg_dims), size)
        if eqn.prim.multiple_results:
            store(env, eqn, list(zip(out, out_dims)))
        else:
            store(env, eqn, (out, out_dims))
    outs = [read(a) for a in program.outvars]
    return [v for v, _ in outs], [d for _, d in outs]


def _batch_equation(eqn, args, dims, size):
    prim, params = eqn.prim, eqn.params
    if all(d is None for d in dims):
        out = bind(prim, *args, **params)
        return out, ([None] * len(out) if prim.multiple_results else None)
    if prim.batch is not None:
        return prim.batch(size, args, dims, **params)
    if FALLBACK is None:
        raise UnsupportedError(with_location(f"vmap: the primitive {prim.name} has no batching "
                                             "rule"))
    if prim.name not in _warned:
        _warned.add(prim.name)
        warnings.warn(f"vmap: the primitive {prim.name} has no batching rule; it runs as a "
                      "loop over the batch (a scan)", stacklevel=2)
    return FALLBACK(prim, size, args, dims, params)


def batch_program(program: Program, in_dims: list, size, forced=None) -> tuple[Program, list]:
    """The batched program: inputs batched along `in_dims` (None: unbatched),
    outputs batched along axis 0 or unbatched; `forced[k]` makes output k
    batched even if it does not depend on the batch. Returns (program, out dims)."""
    builder = Builder(program.name + "_vmap")
    builder.checks.pairs.extend(program.checks.pairs)
    with builder:
        inputs = [builder.new_input(batched_aval(v.aval, d, size))
                  for v, d in zip(program.invars, in_dims, strict=True)]
        outs, dims = batch_replay(program, inputs, list(in_dims), size)
        forced = forced or [False] * len(outs)
        moved, out_dims = [], []
        for out, dim, force in zip(outs, dims, forced):
            if dim is None and not force:
                moved.append(out)
                out_dims.append(None)
            else:
                moved.append(materialize(out, dim, size))
                out_dims.append(0)
        result = builder.program(moved)
    outer = current_builder()
    if outer is not None:
        outer.checks.pairs.extend(builder.checks.pairs)
    return result, out_dims


def batch_call(fn, leaves: list, dims: list, size, name: str = "vmap") -> tuple[list, list, tuple]:
    """Trace `fn(*per-example leaves)` and replay it batched into the current
    trace: (output leaves, their batch axes, output treedef)."""
    avals = [unbatched_aval(ops.aval_of(x), d) for x, d in zip(leaves, dims)]
    program, captured, out_def = trace_closed(fn, avals, name)
    outs, out_dims = batch_replay(program, list(captured) + list(leaves),
                                  [None] * len(captured) + list(dims), size)
    return outs, out_dims, out_def


# ------------------------------------------------------------ custom_vjp

def _custom_vjp(size, args, dims, *, bwd, n_res, res_def, arg_def):
    """The user's bwd is per-example: the batched equation's bwd is its vmap;
    cotangents of unbatched arguments are summed over the batch."""
    value = materialize(args[0], dims[0], size)
    moved = [front(x, d) for x, d in zip(args[1:], dims[1:])]
    res_dims = [None if d is None else 0 for d in dims[1:1 + n_res]]
    arg_dims = dims[1 + n_res:]

    def batched_bwd(residuals, g):
        def per_example(*leaves):
            return bwd(pytree.unflatten(res_def, leaves[:-1]), leaves[-1])

        leaves = pytree.flatten(residuals)[0] + [g]
        cts, ct_dims, _ = batch_call(per_example, leaves, res_dims + [0], size, "custom_vjp_bwd")
        summed = [ops.reduce_sum(materialize(ct, cd, size), (0,)) if d is None
                  else materialize(ct, cd, size) for ct, cd, d in zip(cts, ct_dims, arg_dims)]
        return pytree.unflatten(arg_def, summed)

    out = bind(R["custom_vjp_call"], value, *moved, _traced=True, bwd=batched_bwd, n_res=n_res,
               res_def=res_def, arg_def=arg_def)
    return out, 0


# Set here, not with the record (primitives/array.py): the rule vmaps the user's
# bwd, which is this transformation.
R["custom_vjp_call"].batch = _custom_vjp


# ------------------------------------------------------------------ vmap

def leaf_axes(axes, tree, what: str) -> list:
    """One axis (int or None) per leaf of `tree`: `axes` is an int, None, or a
    pytree prefix of `tree` (JAX's in_axes / out_axes)."""
    if axes is None or isinstance(axes, (int, np.integer)):
        return [None if axes is None else int(axes)] * len(pytree.flatten(tree)[0])
    if isinstance(axes, (tuple, list)) and isinstance(tree, (tuple, list)) \
            and len(axes) == len(tree):
        return [a for sub, t in zip(axes, tree) for a in leaf_axes(sub, t, what)]
    if isinstance(axes, dict) and isinstance(tree, dict) and set(axes) == set(tree):
        return [a for key in sorted(tree) for a in leaf_axes(axes[key], tree[key], what)]
    raise TracerTypeError(with_location(
        f"vmap {what}: {axes!r} does not match the structure "
        f"{pytree.describe(pytree.flatten(tree)[1])} (give an int, None, or a pytree prefix "
        "of it with one int or None per leaf)"))


def normalize_axis(axis, rank: int, what: str):
    """`axis` of a batched value of `rank` dims as a non-negative int (None stays None)."""
    if axis is None:
        return None
    if not -rank <= axis < rank:
        where = f"a batched value of {rank} dims" if rank else "a 0-d value (nothing to map)"
        raise ShapeError(with_location(f"vmap {what}: axis {axis} is out of bounds for {where}"))
    return axis % rank


def batch_size(leaves, axes, axis_size, names):
    """The common size of the mapped axes (their sizes are joined: one symbol)."""
    size, where = None, None
    checks = current_builder().checks if current_builder() is not None else None
    for leaf, axis, name in zip(leaves, axes, names):
        if axis is None:
            continue
        dim = ops.aval_of(leaf).shape[axis]
        if size is None:
            size, where = dim, name
            continue
        try:
            size = join(size, dim, "vmap", checks)
        except ShapeError:
            raise ShapeError(with_location(
                f"vmap got inconsistent sizes for the mapped axes: {where} has "
                f"{_value(size)}, {name} has {_value(dim)}")) from None
    if size is None:
        if axis_size is None:
            raise TracerTypeError(with_location(
                "vmap: every in_axes is None, so the batch size is unknown; give axis_size"))
        return int(axis_size)
    if axis_size is not None and _value(size) != int(axis_size):
        raise ShapeError(with_location(
            f"vmap: axis_size={axis_size} but the mapped axes have size {_value(size)}"))
    return size


def _value(dim) -> int:
    dim = resolve(dim)
    return dim if type(dim) is int else dim.value


def place_outputs(outs, dims, out_axes, out_def, size):
    """Move each output's batch axis to its out_axes entry (None: unbatched)."""
    tree = pytree.unflatten(out_def, outs)
    axes = leaf_axes(out_axes, tree, "out_axes")
    placed = []
    for out, dim, axis in zip(outs, dims, axes):
        if axis is None:
            if dim is not None:
                raise TracerTypeError(with_location(
                    "vmap: out_axes is None for an output that depends on the mapped "
                    f"axis ({ops.aval_of(out)} batched)"))
            placed.append(out)
            continue
        axis = normalize_axis(axis, ndim(out) + (dim is None), "out_axes")
        placed.append(move(materialize(out, dim, size), 0, axis))
    return pytree.unflatten(out_def, placed)


def vmap_traced(fun, args: tuple, in_axes, out_axes, axis_size, kwargs=None):
    """`vmap(fun)(*args)` inside a trace: the batched computation recorded there."""
    kwargs = kwargs or {}
    leaves, in_def = pytree.flatten((args, kwargs))
    axes = leaf_axes(in_axes, args, "in_axes")
    axes += [0] * len(pytree.flatten(kwargs)[0])  # keyword arguments map along axis 0
    axes = [normalize_axis(a, ndim(x), "in_axes") for a, x in zip(axes, leaves)]
    names = [f"argument{p}" for p in pytree.leaf_paths((args, kwargs))]
    size = batch_size(leaves, axes, axis_size, names)

    def per_example(*xs):
        a, k = pytree.unflatten(in_def, xs)
        return fun(*a, **k)

    outs, dims, out_def = batch_call(per_example, leaves, axes, size,
                                     getattr(fun, "__name__", "fn"))
    return place_outputs(outs, dims, out_axes, out_def, size)


class Chunked:
    """A vmapped function run `chunk_size` examples at a time (torch.func.vmap's
    `chunk_size`): bounds the memory of one call; every chunk reuses the kernel."""

    def __init__(self, compiled, chunk_size: int, in_axes, out_axes):
        if int(chunk_size) < 1:
            raise ValueError(f"vmap: chunk_size must be positive, got {chunk_size}")
        self.compiled, self.chunk_size = compiled, int(chunk_size)
        self.in_axes, self.out_axes = in_axes, out_axes
        self.__name__ = compiled.__name__

    def __call__(self, *args):
        if current_builder() is not None:
            return self.compiled(*args)
        leaves, treedef = pytree.flatten(args)
        axes = [normalize_axis(a, np.ndim(x), "in_axes")
                for a, x in zip(leaf_axes(self.in_axes, args, "in_axes"), leaves)]
        sizes = {np.shape(x)[a] for x, a in zip(leaves, axes) if a is not None}
        if len(sizes) != 1:
            return self.compiled(*args)  # the compiled call names the problem
        (n,) = sizes
        pieces = []
        for start in range(0, n, self.chunk_size):
            where = slice(start, start + self.chunk_size)
            chunk = [x if a is None else np.take(x, np.arange(n)[where], axis=a)
                     for x, a in zip(leaves, axes)]
            pieces.append(self.compiled(*pytree.unflatten(treedef, chunk)))
        out_leaves, out_def = pytree.flatten(pieces[0])
        out_axes = leaf_axes(self.out_axes, pieces[0], "out_axes")
        joined = [np.concatenate([pytree.flatten(p)[0][k] for p in pieces],
                                 axis=normalize_axis(a, np.ndim(out_leaves[k]), "out_axes"))
                  if a is not None else out_leaves[k] for k, a in enumerate(out_axes)]
        return pytree.unflatten(out_def, joined)


__all__ = ["batch_call", "batch_program", "batch_replay", "vmap_traced"]


# -------------------------------------------------------------- Jacobians

def jacobian_traced(fun, args: tuple, argnums, reverse: bool, holomorphic=False) -> object:
    """The Jacobian of `fun` at `args` inside a trace: the vmap of its VJP over
    the output basis (reverse) or of its JVP over the input basis (forward),
    one batched program. Each output leaf's entry has shape out.shape + x.shape."""
    leaves, args_def = pytree.flatten(args)
    program, captured, out_def = trace_closed(
        lambda *xs: fun(*pytree.unflatten(args_def, xs)), [ops.aval_of(x) for x in leaves],
        getattr(fun, "__name__", "fn"))
    spans, wrt = _argnum_spans(args, argnums, len(captured))
    for out in program.outvars:
        if not autodiff.is_float(out.aval):
            raise TracerTypeError(with_location(
                f"jacobian: the function returns a {out.aval.dtype} value; Jacobians need "
                "floating-point or complex outputs"))
        if ops.is_complex(out.aval.dtype) and not holomorphic:
            raise TracerTypeError(with_location(
                f"jacobian: the function returns a complex value ({out.aval}); pass "
                "holomorphic=True for d out / d z of a holomorphic function, or differentiate "
                "its real and imaginary parts"))
    primal = list(captured) + list(leaves)
    outs = [_concrete_shape(a.aval) for a in program.outvars]
    ins = [_concrete_shape(program.invars[k].aval) for k in wrt]
    if reverse:
        joint = autodiff.vjp_program(program, wrt, [autodiff.INPUT] * len(outs))
        bases, n = _basis([a.aval.dtype for a in program.outvars], outs)
        values, dims = batch_replay(joint, primal + bases, [None] * len(primal)
                                    + [0] * len(bases), n)
        rows = [materialize(g, d, n) for g, d in zip(values[len(outs):], dims[len(outs):])]
        blocks = [[_block(rows[j], off, o, i) for j, i in enumerate(ins)]
                  for off, o in _offsets(outs)]
    else:
        joint = autodiff.jvp_program(program, wrt)
        bases, n = _basis([program.invars[k].aval.dtype for k in wrt], ins)
        values, dims = batch_replay(joint, primal + bases, [None] * len(primal)
                                    + [0] * len(bases), n)
        cols = [materialize(t, d, n) for t, d in zip(values[len(outs):], dims[len(outs):])]
        blocks = [[_column_block(cols[k], off, i, o) for off, i in _offsets(ins)]
                  for k, o in enumerate(outs)]
    per_out = [_per_argument(row, spans, argnums) for row in blocks]
    return pytree.unflatten(out_def, per_out)


def _argnum_spans(args, argnums, offset):
    """Per argnum, (first leaf, leaf count, treedef); and the program inputs differentiated."""
    nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    starts = np.cumsum([0] + [len(pytree.flatten(a)[0]) for a in args])
    spans, wrt = [], []
    for n in nums:
        count = len(pytree.flatten(args[n])[0])
        spans.append((len(wrt), count, pytree.flatten(args[n])[1]))
        wrt += [offset + int(starts[n]) + k for k in range(count)]
    return spans, wrt


def _concrete_shape(aval) -> tuple:
    return bind_shape(aval.shape)


def _offsets(shapes):
    off = 0
    for s in shapes:
        yield off, s
        off += int(np.prod(s))


def _basis(dtypes, shapes):
    """The standard basis of the concatenated flattened leaves, split per leaf:
    ([(n, *shape) per leaf], n)."""
    n = int(sum(np.prod(s) for s in shapes))
    eye = np.eye(n)
    return [eye[:, off:off + int(np.prod(s))].astype(dtype).reshape((n,) + s)
            for (off, s), dtype in zip(_offsets(shapes), dtypes)], n


def _rows(x, start, stop):
    rank = ndim(x)
    if start == 0 and resolve(shape(x)[0]) == stop:
        return x
    return ops.static_slice(x, (start,) + (0,) * (rank - 1), (stop,) + (None,) * (rank - 1),
                            (1,) * rank)


def _block(rows, off, out_shape, in_shape):
    """d out / d x from the gradient rows of out's elements: out.shape + x.shape."""
    size = int(np.prod(out_shape))
    return ops.reshape(_rows(rows, off, off + size), out_shape + in_shape)


def _column_block(cols, off, in_shape, out_shape):
    """d out / d x from the tangents of x's basis: (x.size, *out.shape) -> out.shape + x.shape."""
    size = int(np.prod(in_shape))
    block = ops.reshape(_rows(cols, off, off + size), in_shape + out_shape)
    k, m = len(in_shape), len(out_shape)
    return ops.transpose(block, tuple(range(k, k + m)) + tuple(range(k)))


def _per_argument(blocks, spans, argnums):
    per = [pytree.unflatten(treedef, blocks[start:start + count])
           for start, count, treedef in spans]
    return per[0] if isinstance(argnums, int) else tuple(per)
