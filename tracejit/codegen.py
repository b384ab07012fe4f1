"""Code generation: a Program becomes the source of one Numba kernel.

The schedule groups equations into loop nests:
- elementwise and index-moving equations over the same iteration space fuse
  into one nest (unit axes do not count, so (n, 1) and (n,) share it); their
  intermediate values are scalar locals, never arrays;
- a reduction joins the nest over its input and accumulates there (a scalar
  accumulator when the reduced axes are innermost, else into its output);
- work on a reduction's result (a row's mean, its log) runs as an epilogue
  right after the inner loop that completed it;
- index maps whose consumers are all loop nests are never stored: readers
  index their operand through the map (a broadcast row sum, a transpose);
- array ops (matmul, gather, concatenate, ...) stand alone and emit what
  their primitive record says; transposes read only by matmul are views.
Only values used outside their nest, or returned, are stored in arrays. The
kernel reads every size from its inputs' `.shape`, so one kernel serves
every batch size; joins of sizes the trace assumed are checked at the top.
Large nests also get a `prange` copy taken above a size threshold.
"""

from __future__ import annotations

import itertools
import re

import numpy as np

from .ir import Literal, Program, Var, consumers_of, use_counts
from .primitives import ARRAY, ELEMENTWISE, INDEXMAP, REDUCE
from .shapes import resolve

FASTMATH = "{'nsz', 'contract', 'arcp', 'afn', 'reassoc'}"  # never nnan/ninf: NaN must flow
# Loop nests over at least this many elements (as traced) also get a prange
# copy, taken at run time when the actual size is this large.
PARALLEL_MIN_SIZE = 1 << 16


def _is_one(dim) -> bool:
    return type(dim) is int and dim == 1


class Group:
    """One loop nest: equations sharing the iteration space `space`."""

    def __init__(self, space: tuple, first, virtual: dict):
        self.space = space
        self.virtual = virtual
        self.eqns = []
        # Values complete only when loop `depth` ends (reductions, epilogues):
        # id(var) -> depth, or -1 when complete only after the whole nest.
        self.ready_at: dict[int, int] = {}
        self.members: set[int] = set()
        self.prologue: set[int] = set()  # scalars computed before the loops start
        if space is None:
            self.eqns.append(first)
        else:
            self.add(first)

    def add(self, eqn) -> None:
        self.eqns.append(eqn)
        level = len(_space(eqn))
        out = id(eqn.outputs[0])
        if self.is_prologue(eqn):
            self.prologue.add(out)
        elif eqn.prim.kind == REDUCE:
            self.ready_at[out] = _reduction_depth(eqn)
        elif level < len(self.space):
            self.ready_at[out] = level
        self.members.add(out)

    def is_prologue(self, eqn) -> bool:
        """Scalar work that needs nothing from the loops runs before them."""
        return (bool(self.space) and not _space(eqn) and eqn.prim.kind != REDUCE
                and not any(id(a) in self.members and id(a) not in self.prologue
                            for a in (_source(x, self.virtual) for x in eqn.inputs)))

    @property
    def is_loop(self) -> bool:
        return self.space is not None


def _full_shape(eqn) -> tuple:
    """The shape an equation iterates over: its output, or a reduction's input."""
    aval = eqn.inputs[0].aval if eqn.prim.kind == REDUCE else eqn.outputs[0].aval
    return tuple(map(resolve, aval.shape))


def _space(eqn) -> tuple | None:
    """The loop space: the iterated shape without unit axes (so (n, 1) and (n,)
    share one nest), or None for array ops."""
    if eqn.prim.kind not in (ELEMENTWISE, INDEXMAP, REDUCE):
        return None
    return tuple(d for d in _full_shape(eqn) if not _is_one(d))


def _expand(shape, idx) -> list[str]:
    """Loop indices for each axis of `shape`: unit axes read index 0."""
    it = iter(idx)
    return ["0" if _is_one(d) else next(it) for d in shape]


def _fits(group: Group, eqn, produced: dict, virtual: dict) -> bool:
    """Can `eqn` join the nest: in its innermost body (same space), or as an
    epilogue after loop `level` ends (its space is a prefix of the nest's)?"""
    space = _space(eqn)
    if not group.is_loop or space is None or space != group.space[:len(space)]:
        return False
    level = len(space)
    for atom in eqn.inputs:
        atom = _source(atom, virtual)
        if (not isinstance(atom, Var) or produced.get(id(atom)) is not group
                or id(atom) in group.prologue):
            continue
        ready = group.ready_at.get(id(atom))
        if ready is None and level != len(group.space):
            return False  # an innermost-loop value, gone after the loop
        if ready is not None and (ready != level or level == len(group.space)):
            return False  # complete only after a loop ends: epilogues of that loop only
        if (eqn.prim.kind == INDEXMAP and level == len(group.space)
                and not _same_element(eqn)):
            return False  # moved elements must come from a stored array
    return True


def _reduction_depth(eqn) -> int:
    """After which loop a reduction's result is complete: the number of kept
    loops when they are the outer ones (a scalar accumulator), else -1."""
    shape = _full_shape(eqn)
    loops = [k for k in range(len(shape)) if not _is_one(shape[k])]
    kept = [pos for pos, k in enumerate(loops) if k not in eqn.params["axes"]]
    return len(kept) if kept == list(range(len(kept))) else -1


def _same_element(eqn) -> bool:
    """An index map that reads the element at the same loop position (it only
    adds or drops unit axes), so it can read a value computed in the nest."""
    (x,) = eqn.inputs
    out = eqn.outputs[0].aval
    mapping = eqn.prim.index_map(x.aval, out, **eqn.params)
    targets = [m for m, d in zip(mapping, x.aval.shape) if not _is_one(resolve(d))]
    if any(axis is None or (start, step) != (0, 1) for axis, start, step in targets):
        return False
    out_axes = [k for k, d in enumerate(out.shape) if not _is_one(resolve(d))]
    return [axis for axis, _, _ in targets] == out_axes


def _source(atom, virtual: dict):
    """The stored value a virtual (read-through) variable reads from."""
    while isinstance(atom, Var) and id(atom) in virtual:
        atom = virtual[id(atom)].inputs[0]
    return atom


def virtual_reads(program: Program, views: set) -> dict:
    """Index maps that are never stored: every consumer is a loop nest, so it
    reads the operand at the mapped index instead (a broadcast of a row sum,
    a transposed input). Maps id(output) -> equation."""
    consumers = consumers_of(program)
    outputs = {id(a) for a in program.outvars if isinstance(a, Var)}
    stored = {id(v) for v in program.invars + program.constvars}
    virtual: dict[int, object] = {}
    for eqn in program.eqns:
        out = eqn.outputs[0]
        if eqn.prim.kind in (ARRAY, REDUCE) or id(eqn) in views or out.aval.ndim == 0:
            stored.add(id(out))  # arrays, and scalars (plain locals of the kernel)
            continue
        if eqn.prim.kind != INDEXMAP or id(out) in outputs:
            continue
        source = eqn.inputs[0]
        readable = not isinstance(source, Var) or id(source) in stored or id(source) in virtual
        users = consumers.get(id(out), [])
        if readable and all((u.prim.kind != ARRAY and id(u) not in views) or u.prim.shape_only
                            for u in users):
            virtual[id(out)] = eqn
    return virtual


def schedule(program: Program, views: set, virtual: dict) -> list[Group]:
    """Greedy list scheduling: keep adding ready equations that fit the open
    loop nest; start a new nest only when none does."""
    pending = [e for e in program.eqns if id(e.outputs[0]) not in virtual]
    # Size-only equations (mean's divisor) depend on input shapes alone: first,
    # so they never split a loop nest.
    pending.sort(key=lambda e: not e.prim.shape_only)
    defined = {id(v) for v in program.invars + program.constvars}
    produced: dict[int, Group] = {}
    groups: list[Group] = []
    current: Group | None = None
    while pending:
        ready = [e for e in pending if e.prim.shape_only or all(
            not isinstance(a, Var) or id(a) in defined
            for a in (_source(x, virtual) for x in e.inputs))]
        pick = next((e for e in ready if current is not None and id(e) not in views
                     and _fits(current, e, produced, virtual)), None)
        if pick is None:
            pick = ready[0]
            space = None if id(pick) in views else _space(pick)
            current = Group(space, pick, virtual) if space is not None else None
            groups.append(current if current is not None else Group(None, pick, virtual))
        else:
            current.add(pick)
        pending.remove(pick)
        out = pick.outputs[0]
        defined.add(id(out))
        produced[id(out)] = current if current is not None else groups[-1]
    return groups


class Emitter:
    """Writes the kernel source; also the `ctx` handed to array-op emitters."""

    def __init__(self, program: Program, kernel_name: str):
        self.program = program
        self.kernel_name = kernel_name
        self.names: dict[int, str] = {}
        self.constants: dict[tuple, str] = {}
        self.dim_names: dict[int, str] = {}
        self.lines: list[str] = []
        self.virtual: dict = {}
        self.parallel = False
        # OpenBLAS threads keep spinning after a product; prange threads would
        # fight them for the cores, so kernels with a matmul stay serial.
        # Ops that raise inside a loop (debug checks) keep the loops serial too: a prange
        # loop cannot leave early.
        self.calls_blas = any(e.prim.blas or e.prim.raises for e in program.eqns)
        self._fresh = itertools.count()

    # -------------------------------------------------------------- naming
    def fresh(self, prefix: str) -> str:
        return f"{prefix}{next(self._fresh)}"

    def name(self, atom) -> str:
        if isinstance(atom, Literal):
            return self.literal(atom.value)
        return self.names[id(atom)]

    def literal(self, value) -> str:
        value = np.asarray(value)[()]
        dtype = value.dtype
        if dtype == np.float64 and np.isfinite(value):
            text = repr(float(value))
            return f"({text})" if text.startswith("-") else text
        if dtype == np.bool_:
            return repr(bool(value))
        if dtype == np.int64:
            return f"({int(value)})" if value < 0 else str(int(value))
        key = (dtype.str, repr(value.item()))
        if key not in self.constants:
            self.constants[key] = f"_k{len(self.constants)}"
        return self.constants[key]

    def constant_lines(self) -> list[str]:
        out = []
        for (dtype_str, text), name in self.constants.items():
            dtype = np.dtype(dtype_str)
            text = {"inf": "np.inf", "-inf": "-np.inf", "nan": "np.nan"}.get(text, text)
            out.append(f"{name} = np.{dtype.name}({text})")
        return out

    def dtype(self, aval) -> str:
        return f"np.{np.dtype(aval.dtype).name}"

    def dims(self, aval) -> list[str]:
        return [self.dim(d) for d in aval.shape]

    def dim(self, d) -> str:
        d = resolve(d)
        return str(d) if type(d) is int else self.dim_names[id(d)]

    def shape(self, aval) -> str:
        dims = self.dims(aval)
        return f"({dims[0]},)" if len(dims) == 1 else f"({', '.join(dims)})"

    def loops(self, dims: list[str], indent: int):
        """`for` headers over `dims`; returns (index names, lines, body indent)."""
        idx = [self.fresh("i") for _ in dims]
        lines = [" " * (indent + 4 * k) + f"for {i} in range({d}):"
                 for k, (i, d) in enumerate(zip(idx, dims))]
        return idx, lines, indent + 4 * len(dims)

    def emit(self, line: str, indent: int = 4) -> None:
        self.lines.append(" " * indent + line)


def generate(program: Program, kernel_name: str) -> str:
    """The source of a module defining `kernel_name(*inputs, *consts) -> tuple`."""
    em = Emitter(program, identifier(kernel_name))
    args = []
    for prefix, variables in (("a", program.invars), ("c", program.constvars)):
        for k, var in enumerate(variables):
            args.append(f"{prefix}{k}")
            em.names[id(var)] = f"{prefix}{k}"
            if var.aval.ndim == 0:  # a 0-d array or a scalar: read it as a scalar
                em.names[id(var)] = f"s{prefix}{k}"
                em.emit(f"s{prefix}{k} = _rt.as_scalar({prefix}{k})")
    _emit_dims(em, program)
    _emit_checks(em, program)
    _emit_empty_checks(em, program)
    views = _matmul_views(program)
    counts = use_counts(program)
    em.virtual = virtual_reads(program, views)
    for group in schedule(program, views, em.virtual):
        if group.is_loop:
            _emit_loop_group(em, group, counts)
        else:
            _emit_single(em, group.eqns[0], id(group.eqns[0]) in views)
    outs = ", ".join(em.name(a) for a in program.outvars)
    em.emit(f"return ({outs}{',' if len(program.outvars) == 1 else ''})")
    return _module_source(em, args, program)


def identifier(name: str) -> str:
    name = re.sub(r"\W", "_", name)
    return name if name[:1].isalpha() else f"k_{name}"


def _module_source(em: Emitter, args: list[str], program: Program) -> str:
    header = [
        f'"""Kernel generated by tracejit for `{program.name}`. Do not edit: regenerated."""',
        "import numpy as np",
        "from numba import njit, prange",
        "",
        "import tracejit.runtime as _rt",
        "",
        *em.constant_lines(),
        "",
        "",
        f"@njit(cache=_CACHE, error_model='numpy', nogil=True, fastmath={FASTMATH}"
        + (", parallel=True)" if em.parallel else ")"),
        f"def {em.kernel_name}({', '.join(args)}):",
    ]
    return "\n".join(header + em.lines) + "\n"


# ------------------------------------------------------------ shapes, checks

def _input_dims(program: Program):
    """(input name index, axis, raw dim) for every input dimension."""
    for k, var in enumerate(program.invars + program.constvars):
        for axis, d in enumerate(var.aval.shape):
            yield k, axis, d


def _emit_dims(em: Emitter, program: Program) -> None:
    all_vars = program.invars + program.constvars
    for k, axis, d in _input_dims(program):
        root = resolve(d)
        if type(root) is not int and id(root) not in em.dim_names:
            name = f"n{len(em.dim_names)}"
            em.dim_names[id(root)] = name
            em.emit(f"{name} = {em.names[id(all_vars[k])]}.shape[{axis}]")


def _emit_checks(em: Emitter, program: Program) -> None:
    all_vars = program.invars + program.constvars
    source = {}
    for k, axis, d in _input_dims(program):
        if type(d) is not int:
            source.setdefault(id(d), f"{em.names[id(all_vars[k])]}.shape[{axis}]")
    done = set()
    for index, (a, b, what) in enumerate(program.checks.pairs):
        sa, sb = source.get(id(a)), source.get(id(b))
        if sa is None or sb is None or sa == sb or (sa, sb) in done:
            continue
        done.add((sa, sb))
        # The dispatcher names the arguments from the check's index (errors.SizeMismatch).
        em.emit(f"if {sa} != {sb}:  # {what}")
        em.emit(f"    raise _rt.SizeMismatch({index}, {sa}, {sb})")


def _emit_empty_checks(em: Emitter, program: Program) -> None:
    """Reductions without an identity (max, argmax...) raise NumPy's error on an empty
    input, as NumPy does, instead of returning their accumulator's start value."""
    done = set()
    for eqn in program.eqns:
        if eqn.prim.kind != REDUCE or not eqn.prim.empty_error:
            continue
        roots = [resolve(eqn.inputs[0].aval.shape[a]) for a in eqn.params["axes"]]
        symbolic = [d for d in roots if type(d) is not int]
        if not symbolic or any(id(d) not in em.dim_names for d in symbolic):
            continue  # known sizes (0 is refused while tracing), or sizes made by the kernel
        size = " * ".join(em.dim(d) for d in symbolic)
        if size not in done:
            done.add(size)
            message = f"{eqn.prim.empty_error} ({eqn.prim.name} at {eqn.location})"
            em.emit(f"if {size} == 0:")
            em.emit(f"    raise ValueError({message!r})")


def _matmul_views(program: Program) -> set:
    """Index maps with a view form (transposes) read only by BLAS calls are
    emitted as zero-copy views: BLAS takes strided operands."""
    consumers = consumers_of(program)
    outputs = {id(a) for a in program.outvars if isinstance(a, Var)}
    views = set()
    for eqn in program.eqns:
        out = eqn.outputs[0]
        users = consumers.get(id(out), [])
        if (eqn.prim.view is not None and users and id(out) not in outputs
                and all(u.prim.blas for u in users)):
            views.add(id(eqn))
    return views


# ------------------------------------------------------------ single ops

def _emit_single(em: Emitter, eqn, as_view: bool) -> None:
    out = eqn.outputs[0]
    name = em.names[id(out)] = em.fresh(f"t_{eqn.prim.name}_")
    ins = [] if eqn.prim.shape_only else [em.name(a) for a in eqn.inputs]
    em.emit(f"# {eqn.prim.name} at {eqn.location}")
    if as_view:
        em.emit(f"{name} = {eqn.prim.view(ins[0], **eqn.params)}")
        return
    for line in eqn.prim.emit(em, name, ins, eqn):
        em.emit(line)


# ------------------------------------------------------------ loop nests

def _emit_loop_group(em: Emitter, group: Group, counts: dict) -> None:
    dims = [em.dim(d) for d in group.space]
    in_group = {id(e.outputs[0]) for e in group.eqns}
    outside_uses = _outside_uses(group, counts)
    em.emit(f"# loop over {space_text(dims)}: " + ", ".join(e.prim.name for e in group.eqns))
    idx = [em.fresh("i") for _ in dims]
    nest = Nest(idx)
    locals_: dict[int, str] = {}
    for eqn in group.eqns:
        shape = _full_shape(eqn)
        level = len(_space(eqn))
        full_idx = _expand(shape, idx[:level])
        lines = nest.pre[0] if id(eqn.outputs[0]) in group.prologue else nest.at(level)
        if eqn.prim.kind == REDUCE:
            _reduction(em, eqn, shape, full_idx, nest, lines, locals_, in_group)
            continue
        out = eqn.outputs[0]
        value = _scalar_expr(em, eqn, shape, full_idx, locals_, in_group)
        local = em.fresh(f"v_{eqn.prim.name}_")
        locals_[id(out)] = local
        lines.append(f"{local} = {value}")
        if id(out) not in outside_uses:
            continue
        if out.aval.ndim == 0:
            em.names[id(out)] = local
        else:
            array = em.names[id(out)] = em.fresh(f"t_{eqn.prim.name}_")
            em.emit(f"{array} = np.empty({em.shape(out.aval)}, {em.dtype(out.aval)})")
            lines.append(f"{array}[{', '.join(full_idx)}] = {local}")
    parallel = (nest.parallel_safe and dims and not em.calls_blas
                and _traced_size(group.space) >= PARALLEL_MIN_SIZE)
    em.parallel |= bool(parallel)
    nest.write(em, dims, bool(parallel))


def _traced_size(space) -> int:
    return int(np.prod([d if type(d) is int else d.value for d in space]))


class Nest:
    """Statements of a loop nest: `pre[d]` runs before loop d starts, `post[d]`
    after it ends, `body` in the innermost loop."""

    def __init__(self, idx):
        self.idx = idx
        self.pre = {d: [] for d in range(len(idx) + 1)}
        self.post = {d: [] for d in range(len(idx) + 1)}
        self.body: list[str] = []

        self.parallel_safe = True  # no cross-iteration writes but `+=`/`*=` sums

    def at(self, level: int) -> list[str]:
        """Where statements of loop level `level` go: the innermost body, or
        after the loop `level` ends (an epilogue)."""
        return self.body if level == len(self.idx) else self.post[level]

    def write(self, em: Emitter, dims, parallel: bool) -> None:
        """Emit the nest; `parallel` adds a prange copy taken above a size threshold
        (threads cost microseconds, so small inputs keep the serial loop)."""
        if not parallel:
            self._write(em, dims, 4, "range")
            return
        size = " * ".join(dims)
        em.emit(f"if {size} >= {PARALLEL_MIN_SIZE}:")
        self._write(em, dims, 8, "prange")
        em.emit("else:")
        self._write(em, dims, 8, "range")

    def _write(self, em: Emitter, dims, indent: int, outer: str) -> None:
        depth = len(dims)
        for level in range(depth):
            for line in self.pre[level]:
                em.emit(line, indent + 4 * level)
            loop = outer if level == 0 else "range"
            em.emit(f"for {self.idx[level]} in {loop}({dims[level]}):", indent + 4 * level)
        for line in self.pre[depth] + self.body + self.post[depth]:
            em.emit(line, indent + 4 * depth)
        for level in reversed(range(depth)):
            for line in self.post[level]:
                em.emit(line, indent + 4 * level)


def space_text(dims) -> str:
    return "(" + ", ".join(dims) + ")"


def _tuple(items) -> str:
    return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"


def _outside_uses(group: Group, counts: dict) -> set:
    inside: dict[int, int] = {}
    for eqn in group.eqns:
        for a in eqn.inputs:
            if isinstance(a, Var):
                inside[id(a)] = inside.get(id(a), 0) + 1
    return {id(e.outputs[0]) for e in group.eqns
            if counts.get(id(e.outputs[0]), 0) > inside.get(id(e.outputs[0]), 0)}


def _read(em: Emitter, atom, index: list[str], locals_: dict, in_group: set) -> str:
    """The scalar expression for `atom` at `index` (one entry per atom axis)."""
    if isinstance(atom, Literal):
        return em.literal(atom.value)
    if id(atom) in locals_:
        return locals_[id(atom)]
    if id(atom) in em.virtual:
        eqn = em.virtual[id(atom)]
        (x,) = eqn.inputs
        mapping = eqn.prim.index_map(x.aval, atom.aval, **eqn.params)
        return _read(em, x, _mapped_index(mapping, index), locals_, in_group)
    name = em.names[id(atom)]
    if atom.aval.ndim == 0:
        return name
    return f"{name}[{', '.join(index)}]"


def _aligned_index(aval, space, idx) -> list[str]:
    """Right-aligned NumPy broadcasting: unit axes of the operand read 0."""
    offset = len(space) - aval.ndim
    return ["0" if _is_one(resolve(d)) and not _is_one(space[offset + k]) else idx[offset + k]
            for k, d in enumerate(aval.shape)]


def _mapped_index(mapping, idx) -> list[str]:
    out = []
    for axis, start, step in mapping:
        if axis is None:
            out.append(str(start))
            continue
        term = idx[axis] if step == 1 else f"{step} * {idx[axis]}"
        out.append(term if start == 0 else f"{start} + {term}")
    return out


def _scalar_expr(em: Emitter, eqn, space, idx, locals_, in_group) -> str:
    prim = eqn.prim
    if prim.kind == INDEXMAP:
        (x,) = eqn.inputs
        mapping = prim.index_map(x.aval, eqn.outputs[0].aval, **eqn.params)
        return _read(em, x, _mapped_index(mapping, idx), locals_, in_group)
    operands = [_read(em, a, _aligned_index(a.aval, space, idx), locals_, in_group)
                for a in eqn.inputs]
    template = prim.scalar
    if callable(template):
        return template(*operands, **eqn.params)
    return template.format(*operands)


def _reduction(em, eqn, shape, full_idx, nest: Nest, lines, locals_, in_group) -> None:
    """Accumulate in the nest: a scalar accumulator when the reduced axes are the
    innermost loops (stored when they end), else straight into the output."""
    prim, out = eqn.prim, eqn.outputs[0]
    (x,) = eqn.inputs
    axes = eqn.params["axes"]
    kept = [k for k in range(len(shape)) if k not in axes]
    value = _read(em, x, full_idx, locals_, in_group)
    identity_fn, update = prim.monoid
    wide = prim.accumulate is not None and prim.accumulate(x.aval.dtype) != x.aval.dtype
    init = em.literal(identity_fn(prim.accumulate(x.aval.dtype) if wide else x.aval.dtype))
    is_arg = "{idx}" in update
    flat = _flat_index(em, shape, axes, full_idx) if is_arg else ""
    name = em.names[id(out)] = em.fresh(f"t_{prim.name}_")
    out_idx = [full_idx[k] for k in kept]
    loop_of = {k: pos for pos, k in enumerate(k for k in range(len(shape))
                                              if not _is_one(shape[k]))}
    kept_loops = [loop_of[k] for k in kept if k in loop_of]
    if kept_loops == list(range(len(kept_loops))):
        depth = len(kept_loops)
        if depth == 0 and not update.startswith("{acc} +=") and not update.startswith(
                "{acc} *="):
            nest.parallel_safe = False  # prange only recognises sum/product reductions
        acc = em.fresh("acc")
        nest.pre[depth].append(f"{acc} = {init}")
        result = f"{name}_i" if is_arg else acc
        if is_arg:
            nest.pre[depth].append(f"{name}_i = 0")
        if out.aval.ndim:
            em.emit(f"{name} = np.empty({em.shape(out.aval)}, {em.dtype(out.aval)})")
            nest.post[depth].append(f"{name}[{', '.join(out_idx)}] = {result}")
        else:
            rounded = f"{em.dtype(out.aval)}({result})" if wide else result
            nest.post[depth].append(f"{name} = {rounded}")
        lines.extend(update.format(acc=acc, v=value, idx=f"{name}_i", k=flat).split("\n"))
        return
    nest.parallel_safe = False  # several outer iterations update one output cell
    cell = f"{name}[{', '.join(out_idx)}]"
    if is_arg:
        em.emit(f"{name}_v = np.full({em.shape(out.aval)}, {init})")
        em.emit(f"{name} = np.zeros({em.shape(out.aval)}, np.int64)")
        acc_cell = f"{name}_v[{', '.join(out_idx)}]"
        lines.extend(update.format(acc=acc_cell, v=value, idx=cell, k=flat).split("\n"))
    elif wide:  # accumulate in a wide array, rounded once the nest is done
        em.emit(f"{name}_w = np.full({em.shape(out.aval)}, {init})")
        wide_cell = f"{name}_w[{', '.join(out_idx)}]"
        lines.extend(update.format(acc=wide_cell, v=value, idx="", k="").split("\n"))
        nest.post[0].append(f"{name} = {name}_w.astype({em.dtype(out.aval)})")
    else:
        em.emit(f"{name} = np.full({em.shape(out.aval)}, {init})")
        lines.extend(update.format(acc=cell, v=value, idx="", k="").split("\n"))


def _flat_index(em: Emitter, shape, axes, idx) -> str:
    """Row-major position within the reduced axes (argmax's answer)."""
    expr = ""
    for k in axes:
        expr = idx[k] if not expr else f"({expr}) * {em.dim(shape[k])} + {idx[k]}"
    return expr


__all__ = ["generate", "schedule", "ARRAY"]
