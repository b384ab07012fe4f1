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

Rules are kept per family: elementwise ops move their batch axes to the front
and broadcast; index maps, reductions and axis-parametrised array ops shift
their axes past the batch axis; matmul folds the batch into its batch axes;
gathers and scatters with batched indices index the batch axis with an iota.
The loops and branches register theirs from control/batching.py. A primitive
with neither a rule nor a family rule runs through `FALLBACK` (a loop over the
batch) with a one-time warning naming it.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..core import pytree
from ..core.errors import ShapeError, TracerTypeError, UnsupportedError, with_location
from ..core.ir import AVal, Literal, Program
from ..core.shapes import bind_shape, is_one, join, resolve
from ..trace import ops
from ..trace.registry import ELEMENTWISE, REDUCE, REGISTRY
from ..trace.tracer import Builder, bind, current_builder, located, store, trace_closed
from . import autodiff

R = REGISTRY
FALLBACK = None  # (prim, size, args, dims, params) -> (out, dims); set by control/batching.py
_warned: set = set()


# ----------------------------------------------------------------- helpers

def ndim(x) -> int:
    return ops.aval_of(x).ndim


def shape(x) -> tuple:
    return tuple(ops.aval_of(x).shape)


def move(x, src: int, dst: int):
    """`x` with its axis `src` moved to position `dst`."""
    if src == dst:
        return x
    perm = list(range(ndim(x)))
    perm.insert(dst, perm.pop(src))
    return ops.transpose(x, perm)


def front(x, dim):
    """The batch axis first (an unbatched value as it is)."""
    return x if dim is None else move(x, dim, 0)


def materialize(x, dim, size):
    """`x` batched along axis 0: moved there, or broadcast when unbatched."""
    if dim is not None:
        return move(x, dim, 0)
    rank = ndim(x)
    return bind(R["broadcast_in_dim"], x, _traced=True, shape=(size,) + shape(x),
                bdims=tuple(range(1, rank + 1)))


def with_unit_axes(x, rank: int):
    """A front-batched `x` padded with unit axes after the batch axis to
    `rank` per-example axes (right-aligned broadcasting against the others)."""
    have = ndim(x) - 1
    if have >= rank:
        return x
    full = shape(x)
    pad = rank - have
    return bind(R["broadcast_in_dim"], x, shape=full[:1] + (1,) * pad + full[1:],
                bdims=(0,) + tuple(range(1 + pad, 1 + rank)))


def batched_aval(aval: AVal, dim, size) -> AVal:
    if dim is None:
        return aval
    dims = tuple(aval.shape)
    return AVal(dims[:dim] + (size,) + dims[dim:], aval.dtype, aval.weak)


def unbatched_aval(aval: AVal, dim) -> AVal:
    if dim is None:
        return aval
    dims = tuple(aval.shape)
    return AVal(dims[:dim] + dims[dim + 1:], aval.dtype, aval.weak)


def iota(size, rank: int):
    """0, 1, ..., size - 1 (int64) along axis 0, with `rank` unit axes after it
    (the batch size may be symbolic: a running sum of ones, exact in integers)."""
    ones = bind(R["broadcast_in_dim"], np.int64(1), _traced=True, shape=(size,), bdims=())
    counts = ops.sub(bind(R["cumsum"], ones, axis=0, reverse=False), np.int64(1))
    return with_unit_axes(counts, rank) if rank else counts


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
    rule = rule_for(prim)
    if rule is not None:
        return rule(size, args, dims, **params)
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


# ------------------------------------------------------------ family rules

def _elementwise(prim):
    def rule(size, args, dims, **params):
        rank = max(ndim(x) - (d is not None) for x, d in zip(args, dims))
        moved = [x if d is None else with_unit_axes(move(x, d, 0), rank)
                 for x, d in zip(args, dims)]
        return bind(prim, *moved, **params), 0

    return rule


def _shift(axes) -> tuple:
    return tuple(a + 1 for a in axes)


def _reduction(prim):
    def rule(size, args, dims, **params):
        key = "axes" if "axes" in params else "axis"
        params = dict(params, **{key: _shift(params[key])})
        return bind(prim, move(args[0], dims[0], 0), **params), 0

    return rule


FAMILY = {ELEMENTWISE: _elementwise, REDUCE: _reduction}


def rule_for(prim):
    """The primitive's `batch` rule, else its family's (made once, kept on the record:
    primitives registered after this module get theirs when first batched)."""
    if prim.batch is None and prim.kind in FAMILY:
        prim.batch = FAMILY[prim.kind](prim)
    return prim.batch


# ------------------------------------------------------------- index maps

def _front_rule(name, shift_params=None):
    """Rules of ops on one operand: the batch axis first, axis parameters
    shifted past it (`shift_params(size, params) -> params`)."""
    def rule(size, args, dims, **params):
        x = move(args[0], dims[0], 0)
        rest = list(args[1:])
        if shift_params is not None:
            params = shift_params(size, params)
        return bind(R[name], x, *rest, **params), 0

    return rule


def _broadcast_params(size, p):
    return dict(p, shape=(size,) + tuple(p["shape"]), bdims=(0,) + _shift(p["bdims"]))


def _slice_params(size, p):
    return dict(p, starts=(0,) + tuple(p["starts"]), stops=(None,) + tuple(p["stops"]),
                steps=(1,) + tuple(p["steps"]))


def _transpose_params(size, p):
    return dict(p, perm=(0,) + _shift(p["perm"]))


def _axes_params(size, p):
    return dict(p, axes=_shift(p["axes"]))


def _axis_params(size, p):
    return dict(p, axis=p["axis"] + 1)


def _reshape_params(size, p):
    return dict(p, shape=(size,) + tuple(p["shape"]))


def _embed_params(size, p):
    return dict(p, shape=(size,) + tuple(p["shape"]), starts=(0,) + tuple(p["starts"]),
                steps=(1,) + tuple(p["steps"]))


def _dimsize(size, args, dims, *, axes, dtype):
    """Sizes are the same for every example: the result is unbatched."""
    return bind(R["dimsize"], move(args[0], dims[0], 0), axes=_shift(axes), dtype=dtype), None


# ----------------------------------------------------------- array ops

def _matmul(size, args, dims):
    """Products of one batched and one unbatched operand stay single BLAS calls
    where the per-example operand is a vector (or a 1-row / 1-column matrix);
    products over an inner size 1 (outer products, per-example gradients of a
    dense layer) are elementwise; the rest become batched products."""
    (a, b), (da, db) = args, dims
    ra, rb = ndim(a) - (da is not None), ndim(b) - (db is not None)
    pa, pb = _example_shape(a, da), _example_shape(b, db)
    if db is None and rb <= 2 and (ra == 1 or (ra == 2 and is_one(pa[0]))):
        rows = _drop_unit(move(a, da, 0), 1) if ra == 2 else move(a, da, 0)
        out = ops.matmul(rows, b)  # rows of a against one matrix: one product
        return (_insert_unit(out, 1) if ra == 2 else out), 0
    if da is None and ra <= 2 and (rb == 1 or (rb == 2 and is_one(pb[1]))):
        cols = move(b, db, 0) if rb == 1 else _drop_unit(move(b, db, 0), 2)
        out = ops.matmul(cols, ops.swap_last(a) if ra == 2 else a)  # columns against one matrix
        return (_insert_unit(out, ndim(out)) if rb == 2 else out), 0
    a, b = move(a, da, 0) if da is not None else a, move(b, db, 0) if db is not None else b
    if ra == 1:
        a = _insert_unit(a, ndim(a) - 1)
    if rb == 1:
        b = _insert_unit(b, ndim(b))
    n = max(max(ra, 2) - 2, max(rb, 2) - 2)
    if da is not None:
        a = with_unit_axes(a, n + 2)
    if db is not None:
        b = with_unit_axes(b, n + 2)
    if is_one(shape(a)[-1]):  # an outer product: a (.., m, 1) * b (.., 1, n), exact
        out = ops.mul(a, b)
    else:
        out = bind(R["matmul"], a, b)
    drop = ([ndim(out) - 1] if rb == 1 else []) + ([ndim(out) - 2] if ra == 1 else [])
    return ops.squeeze(out, drop), 0


def _example_shape(x, dim) -> tuple:
    return tuple(unbatched_aval(ops.aval_of(x), dim).shape)


def _drop_unit(x, axis: int):
    return bind(R["squeeze"], x, axes=(axis,))


def _insert_unit(x, position: int):
    full = shape(x)
    bdims = tuple(k if k < position else k + 1 for k in range(len(full)))
    return bind(R["broadcast_in_dim"], x, shape=full[:position] + (1,) + full[position:],
                bdims=bdims)


def _all_front(size, args, dims):
    return [materialize(x, d, size) for x, d in zip(args, dims)]


def _concatenate(size, args, dims, *, axis):
    return bind(R["concatenate"], *_all_front(size, args, dims), axis=axis + 1), 0


def _same_batch(name):
    """Ops whose operands must share their leading axes (solves): all batched."""
    def rule(size, args, dims, **params):
        return bind(R[name], *_all_front(size, args, dims), **params), 0

    return rule


def _index_rank(indices, dims) -> int:
    return max(ndim(i) - (d is not None) for i, d in zip(indices, dims))


def _batched_indices(indices, dims, rank):
    return [i if d is None else with_unit_axes(move(i, d, 0), rank)
            for i, d in zip(indices, dims)]


def _gather(size, args, dims, *, axis):
    (x, *indices), (dx, *di) = args, dims
    if all(d is None for d in di):
        return bind(R["gather"], move(x, dx, 0), *indices, axis=axis + 1), 0
    rank = _index_rank(indices, di)
    idx = _batched_indices(indices, di, rank)
    if dx is None:  # the indices' batch axis lands where the index axes go
        return bind(R["gather"], x, *idx, axis=axis), axis
    # batch axis just before the indexed ones, indexed by an iota
    x = move(move(x, dx, 0), 0, axis)
    return bind(R["gather"], x, iota(size, rank), *idx, axis=axis), axis


def _scatter_add(size, args, dims, *, axis, shape):
    (g, *indices), (dg, *di) = args, dims
    if all(d is None for d in di):
        return bind(R["scatter_add"], move(g, dg, 0), *indices, axis=axis + 1,
                    shape=(size,) + tuple(shape)), 0
    rank = _index_rank(indices, di)
    idx = _batched_indices(indices, di, rank)
    g = move(materialize(g, dg, size), 0, axis)
    full = tuple(shape)
    out_shape = full[:axis] + (size,) + full[axis:]
    return bind(R["scatter_add"], g, iota(size, rank), *idx, axis=axis, shape=out_shape), axis


def _window(start, size_):
    """The positions start, start + 1, ..., start + size_ - 1 per example."""
    return ops.add(ops.expand_dims(ops.convert(start, np.int64), (1,)),
                   np.arange(size_, dtype=np.int64)[None, :])


def _dynamic_slice(n, args, dims, /, *, axis, size):
    """A batched start reads a window per example: a gather."""
    (x, start), (dx, ds) = args, dims
    if ds is None:
        return bind(R["dynamic_slice"], move(x, dx, 0), start, axis=axis + 1, size=size), 0
    return _gather(n, [x, _window(move(start, ds, 0), size)], [dx, 0], axis=axis)


def _dynamic_embed(size, args, dims, *, axis, shape):
    (g, start), (dg, ds) = args, dims
    if ds is None:
        return bind(R["dynamic_slice_embed"], move(g, dg, 0), start, axis=axis + 1,
                    shape=(size,) + tuple(shape)), 0
    width = resolve(unbatched_aval(ops.aval_of(g), dg).shape[axis])
    return _scatter_add(size, [g, _window(move(start, ds, 0), width)], [dg, 0], axis=axis,
                        shape=shape)


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


def _register_rules() -> None:
    front_rules = {
        "broadcast_in_dim": _broadcast_params, "transpose": _transpose_params,
        "squeeze": _axes_params, "slice": _slice_params, "cumsum": _axis_params,
        "reshape": _reshape_params, "slice_embed": _embed_params,
    }
    for name, shift in front_rules.items():
        R[name].batch = _front_rule(name, shift)
    for name in ("stop_gradient", "argsort", "fft", "cholesky", "slogdet", "eigh", "eig", "svd"):
        R[name].batch = _front_rule(name)  # along trailing axes: the batch leads
    for name in ("solve", "solve_triangular"):
        R[name].batch = _same_batch(name)
    R["matmul"].batch = _matmul
    R["concatenate"].batch = _concatenate
    R["gather"].batch = _gather
    R["scatter_add"].batch = _scatter_add
    R["dynamic_slice"].batch = _dynamic_slice
    R["dynamic_slice_embed"].batch = _dynamic_embed
    R["dimsize"].batch = _dimsize
    R["custom_vjp_call"].batch = _custom_vjp


_register_rules()


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
