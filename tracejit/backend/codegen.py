"""Code generation: a Program becomes the source of one Numba kernel and of
the shared loop-nest functions it calls.

The schedule (schedule.py) groups equations into loop nests. Each nest is
emitted as loops over scalar locals (only values used outside their nest,
or returned, are stored in arrays), then outlined (outline.py) into a small
function shared by every kernel holding the same nest, so the kernel itself
is a short driver: nest calls, BLAS calls, views, and the loops and branches
of structured control flow, whose bodies are emitted once, whatever the
trip count. The kernel reads every size from its inputs' `.shape`, so one
kernel serves every batch size; joins of sizes the trace assumed are checked
before the call, in Python (compiler.py). Large nests also get a `prange`
copy taken above a size threshold.
"""

from __future__ import annotations

import contextlib
import itertools
import re
from dataclasses import dataclass, field

import numpy as np

from ..core.ir import Literal, Program, Var, consumers_of, subprograms, use_counts
from ..core.shapes import is_one, resolve
from ..primitives.array import index_view, slice_item
from ..trace.registry import CONTROL, INDEXMAP, REDUCE
from .outline import outline
from .remat import landed, rematerialised
from .schedule import full_shape, loop_space, schedule, virtual_reads

# Fast-math flags of nests and kernels: 'reassoc' vectorises float reductions,
# 'contract' fuses a*b+c into an FMA. Each other flag changes NumPy's special
# values (tests/test_special_values.py): 'nnan'/'ninf' delete NaN/inf checks;
# 'arcp' makes float32 1/sqrt(x) an rsqrt estimate (NaN at 0) and a division by
# a loop-invariant subnormal a multiply by inf; 'nsz' folds x/sqrt(x) to sqrt(x)
# and x + 0 to x; 'afn' allows approximate pow/sqrt rewrites and buys nothing here.
FASTMATH = "{'contract', 'reassoc'}"
# Loop nests over at least this many elements (as traced) also get a prange
# copy, taken at run time when the actual size is this large.
PARALLEL_MIN_SIZE = 1 << 16
STACK_START = 16  # rows a while loop's stacks start with (they double as needed)


def decorator(parallel: bool, kernel: bool = False) -> str:
    """The decorator of a nest function, or of a kernel. A kernel calls its nests
    by symbol (`_rt.nest`), so its machine code is never cached on disk: a new
    process might load it before the nests it needs (a kernel is a short driver,
    quick to compile once its nests are). A kernel is called from Python only: no C
    callable wrapper is made for it (LLVM would optimise one per kernel)."""
    flags = f"error_model='numpy', nogil=True, fastmath={FASTMATH}"
    flags += ", parallel=True" if parallel else ""
    if kernel:
        return f"@njit(no_cfunc_wrapper=True, {flags})"
    return f"@_rt.nest(cache=_CACHE, {flags})"


@dataclass
class Generated:
    """A kernel's module source and the shared nest modules it imports."""

    source: str
    helpers: dict = field(default_factory=dict)  # module name -> (function name, source)

    def text(self) -> str:
        """Everything, readable: the kernel, then each nest it calls."""
        parts = [self.source] + [f"# ---- {module} ----\n{text}"
                                 for module, (_, text) in self.helpers.items()]
        return "\n".join(parts)


class Emitter:
    """Writes the kernel source; also the `ctx` handed to array-op emitters."""

    def __init__(self, program: Program, kernel_name: str, tag: str, package: str):
        self.kernel_name = kernel_name
        self.tag = tag  # appended to nest modules' names: what compiled code depends on
        self.package = package  # where the nest modules are imported from
        self.names: dict[int, str] = {}
        self.constants: dict[tuple, str] = {}
        self.dim_names: dict[int, str] = {}
        self.lines: list[str] = []
        self.indent = 4
        self.virtual: dict = {}
        self.parallel = False
        self.helpers: dict[str, tuple] = {}
        self.rows: dict[int, str] = {}  # value (var id) -> the loop stack's row it goes to
        # OpenBLAS threads keep spinning after a product; prange threads would
        # fight them for the cores, so kernels with a matmul stay serial.
        # Ops that raise inside a loop (debug checks) keep the loops serial too: a prange
        # loop cannot leave early.
        self.calls_blas = _calls_blas(program)
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
        return self._constant(dtype.str, repr(value.item()))

    def fixed(self, value: int) -> str:
        """An int64 that a nest's code is compiled for: a module constant (an integer
        literal in a subscript becomes a parameter, shared by every value: outline.py)."""
        return self._constant(np.dtype(np.int64).str, repr(int(value)))

    def _constant(self, dtype_str: str, text: str) -> str:
        key = (dtype_str, text)
        if key not in self.constants:
            self.constants[key] = f"_k{len(self.constants)}"
        return self.constants[key]

    def constant_definitions(self) -> dict:
        """Constant name -> the expression defining it at module level."""
        out = {}
        for (dtype_str, text), name in self.constants.items():
            dtype = np.dtype(dtype_str)
            if dtype.kind == "c":  # both parts, each as a float (inf and nan included)
                value = complex(text)
                text = f"complex({_float_text(value.real)}, {_float_text(value.imag)})"
            out[name] = f"np.{dtype.name}({_float_text(text)})"
        return out

    def dtype(self, aval) -> str:
        return f"np.{np.dtype(aval.dtype).name}"

    def dims(self, aval) -> list[str]:
        return [self.dim(d) for d in aval.shape]

    def dim(self, d) -> str:
        d = resolve(d)
        return str(d) if type(d) is int else self.dim_names[id(d)]

    def empty(self, name: str, var) -> str:
        """The line making `name`, the array of `var`: a new buffer, or the row of a
        scan's stacked output that `var` is stored to, written in place (no copy)."""
        row = self.rows.pop(id(var), None)
        return f"{name} = {row or f'_rt.empty({self.shape(var.aval)}, {self.dtype(var.aval)})'}"

    def shape(self, aval) -> str:
        dims = self.dims(aval)
        return f"({dims[0]},)" if len(dims) == 1 else f"({', '.join(dims)})"

    def loops(self, dims: list[str], indent: int):
        """`for` headers over `dims`; returns (index names, lines, body indent)."""
        idx = [self.fresh("i") for _ in dims]
        lines = [" " * (indent + 4 * k) + f"for {i} in range({d}):"
                 for k, (i, d) in enumerate(zip(idx, dims))]
        return idx, lines, indent + 4 * len(dims)

    def emit(self, line: str, indent: int | None = None) -> None:
        self.lines.append(" " * (self.indent if indent is None else indent) + line)

    @contextlib.contextmanager
    def nested(self):
        """Statements emitted inside are one level deeper (a loop or branch body)."""
        self.indent += 4
        try:
            yield
        finally:
            self.indent -= 4

    @contextlib.contextmanager
    def block(self, exports: list, summary: str, effect: bool = False):
        """Collect the lines emitted inside; if they loop, replace them by a call
        to a shared nest function defining the `exports` (filled in by the body).
        A block with no exports is dropped unless it is an `effect` (a store)."""
        saved, indent = self.lines, self.indent
        self.lines, self.indent = [], 0
        try:
            yield
        finally:
            lines, self.lines, self.indent = self.lines, saved, indent
        if not exports and not effect:
            return  # computes nothing anyone reads
        if len(lines) == 1 and not lines[0].lstrip().startswith(("for ", "if ")):
            self.emit(lines[0].strip())
            return
        helper = outline(lines, exports, self.constant_definitions(), summary, decorator)
        module = f"{helper.name}_{self.tag}" if self.tag else helper.name
        self.helpers[module] = (helper.name, helper.module)
        self.emit(f"# {helper.name}: {summary}")
        self.emit(helper.call)


def _float_text(text) -> str:
    """A float's source text (its repr; inf and nan through np)."""
    text = repr(text) if isinstance(text, float) else text
    return {"inf": "np.inf", "-inf": "-np.inf", "nan": "np.nan"}.get(text, text)


def _calls_blas(program: Program) -> bool:
    return any(e.prim.blas or e.prim.raises or any(_calls_blas(p) for p in subprograms(e))
               for e in program.eqns)


def generate(program: Program, kernel_name: str, tag: str = "",
             package: str = "tracejit_kernels") -> Generated:
    """A module defining `kernel_name(*inputs, *consts) -> tuple`, and its nests
    (modules of `package` named by their content and `tag`)."""
    em = Emitter(program, identifier(kernel_name), tag, package)
    args = []
    for prefix, variables in (("a", program.invars), ("c", program.constvars)):
        for k, var in enumerate(variables):
            args.append(f"{prefix}{k}")
            em.names[id(var)] = f"{prefix}{k}"
            if var.aval.ndim == 0:  # a 0-d array or a scalar: read it as a scalar
                em.names[id(var)] = f"s{prefix}{k}"
                em.emit(f"s{prefix}{k} = _rt.as_scalar({prefix}{k})")
    _emit_dims(em, program)
    _emit_empty_checks(em, program)
    outs = emit_program(em, program)
    em.emit(f"return ({', '.join(outs)}{',' if len(outs) == 1 else ''})")
    return Generated(_module_source(em, args, program), em.helpers)


def emit_program(em: Emitter, program: Program) -> list[str]:
    """Emit a program's equations (its inputs already named); returns the
    expressions of its outputs. Loop bodies and branches come through here too."""
    program, views, groups, virtual = _scheduled(program)
    counts = use_counts(program)
    saved, em.virtual = em.virtual, virtual
    try:
        pieces = _concatenated_in_nests(groups, counts)
        written = {id(eqn) for eqn, _ in pieces.values()}
        composed = _composed_views(program, groups, views, counts)
        for group in groups:
            if group.is_loop:
                _emit_loop_group(em, group, counts, pieces)
            elif id(group.eqns[0]) in written or composed.get(id(group.eqns[0])) is _FOLDED:
                continue  # its pieces' nest wrote it, or a later view indexes through it
            elif group.eqns[0].prim.name in CONTROL_EMITTERS:
                CONTROL_EMITTERS[group.eqns[0].prim.name](em, group.eqns[0])
            else:
                _emit_single(em, group.eqns[0], id(group.eqns[0]) in views,
                             composed.get(id(group.eqns[0])))
        return [em.name(a) for a in program.outvars]
    finally:
        em.virtual = saved


def _scheduled(program: Program):
    """The program (rematerialised where that pays: remat.py), its views, its nests and
    its virtual reads."""
    views = _views(program)
    virtual = virtual_reads(program, views)
    groups = schedule(program, views, virtual)
    rewritten = rematerialised(program, groups, virtual, views)
    if rewritten is not None:
        copied, copies = rewritten
        copied_views = _views(copied)
        copied_virtual = virtual_reads(copied, copied_views)
        copied_groups = schedule(copied, copied_views, copied_virtual, copies)
        if landed(copied, copies, copied_groups):
            return copied, copied_views, copied_groups, copied_virtual
    return program, views, groups, virtual


def identifier(name: str) -> str:
    name = re.sub(r"\W", "_", name)
    return name if name[:1].isalpha() else f"k_{name}"


def _module_source(em: Emitter, args: list[str], program: Program) -> str:
    imports = [f"from {em.package}.{module} import {name}"
               for module, (name, _) in em.helpers.items()]
    if imports:  # each nest called through its LLVM IR translation, or Numba's (nestcall.py)
        imports += ["from tracejit.backend.nestcall import nest_call", ""]
        imports += [f"{name} = nest_call({name})" for name, _ in em.helpers.values()]
    constants = [f"{name} = {text}" for name, text in em.constant_definitions().items()]
    header = [
        f'"""Kernel generated by tracejit for `{program.name}`. Do not edit: regenerated."""',
        "import numpy as np",
        "from numba import njit, prange",
        "",
        "import tracejit.backend.runtime as _rt",
        *imports,
        "",
        *constants,
        "",
        "",
        decorator(em.parallel, kernel=True),
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
            em.emit(f"{name} = {_array_name(em, all_vars[k])}.shape[{axis}]")


def _array_name(em: Emitter, var) -> str:
    name = em.names[id(var)]
    return name[1:] if var.aval.ndim == 0 else name


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


def _views(program: Program) -> set:
    """Index maps with a view form (transposes, squeezes, slices, added unit
    axes) read only by BLAS calls, concatenations, loops and branches, or
    returned, are zero-copy views rather than copies: those readers take
    strided arrays. Not a transpose that a loop's products read every step."""
    consumers = consumers_of(program)
    outputs = {id(a) for a in program.outvars if isinstance(a, Var)}
    views = set()
    for eqn in reversed(program.eqns):  # a view read only by views is one too
        out = eqn.outputs[0]
        users = consumers.get(id(out), [])
        if (eqn.prim.view is not None and (eqn.prim.view_if is None or eqn.prim.view_if(eqn))
                and (users or id(out) in outputs)
                and all(u.prim.blas or u.prim.strided_operands or u.prim.kind == CONTROL
                        or id(u) in views for u in users)
                and not _slow_view_multiplied_every_step(eqn, users)):
            views.add(id(eqn))
    return views


def _slow_view_multiplied_every_step(eqn, users) -> bool:
    """A view that is BLAS's slower case (a transpose: its record's
    `view_slow_in_blas`) and that a loop passes as a constant to a product in its body
    is copied once before the loop, not paid at every step (an LSTM's backward,
    dz @ U^T: 87 against 54 us a step)."""
    if not eqn.prim.view_slow_in_blas:
        return False
    out = eqn.outputs[0]
    return any(operand is out and any(e.prim.blas and any(a is inner for a in e.inputs)
                                      for e in body.eqns)
               for user in users if user.prim.loop_constants is not None
               for operand, body, inner in user.prim.loop_constants(user))


# ------------------------------------------------------------ single ops

_FOLDED = object()  # a view that the one view reading it indexes through


def _composed_views(program: Program, groups, views: set, counts: dict) -> dict:
    """Chains of views that one basic index expresses: a slice of one row then its
    squeeze (a rolled loop's gradient unstacks its layers so) is `x[k]`, not two
    views. Each view costs the driver's compile ~100 LLVM instructions and
    reference counting; the 16-layer MLP's driver had 64 such views.
    id(eqn) -> (base atom, index items) for the view emitted as one index,
    _FOLDED for the views it indexes through."""
    singles = {id(group.eqns[0]) for group in groups if not group.is_loop}
    outputs = {id(a) for a in program.outvars if isinstance(a, Var)}
    index_of: dict = {}  # id(view's value) -> (base atom, mapping per base axis, view)
    composed: dict = {}
    for eqn in program.eqns:
        if id(eqn) not in views or id(eqn) not in singles:
            continue
        (x,) = eqn.inputs
        mapping = eqn.prim.index_map(x.aval, eqn.outputs[0].aval, **eqn.params)
        inner = index_of.get(id(x))
        if inner is None:
            index_of[id(eqn.outputs[0])] = (x, mapping, eqn)
            continue
        base, first, producer = inner
        chained = _chain(first, mapping)
        items = _basic_index(base.aval, eqn.outputs[0].aval, chained)
        if items is None or counts.get(id(x)) != 1 or id(x) in outputs:
            index_of[id(eqn.outputs[0])] = (x, mapping, eqn)
            continue
        composed[id(producer)] = _FOLDED
        composed[id(eqn)] = (base, items)
        index_of[id(eqn.outputs[0])] = (base, chained, eqn)
    return composed


def _chain(first, second) -> list:
    """The index map of two views applied in turn, per axis of the first's input."""
    chained = []
    for axis, start, step in first:
        if axis is None:
            chained.append((None, start, step))
            continue
        axis2, start2, step2 = second[axis]
        chained.append((axis2, start + step * start2, step * step2))
    return chained


def _basic_index(base, out, mapping) -> list[str] | None:
    """NumPy basic-index items taking `out` from `base` by `mapping` (per base axis:
    output axis or None, start, step), or None when no basic index does (axes
    reordered or broadcast, sizes not static)."""
    items, placed = [], -1
    for k, (axis, start, step) in enumerate(mapping):
        if type(start) is not int or type(step) is not int:
            return None
        if axis is None:
            items.append(str(start))
            continue
        if axis <= placed:
            return None
        added = range(placed + 1, axis)  # unit axes the views inserted
        if not all(is_one(resolve(out.shape[a])) for a in added):
            return None
        items += ["None"] * len(added)
        placed = axis
        count, whole = resolve(out.shape[axis]), resolve(base.shape[k])
        if (start, step) == (0, 1) and (count is whole or count == whole):
            items.append(":")
        elif type(count) is int:
            items.append(slice_item(start, step, count))
        else:
            return None
    trailing = range(placed + 1, len(out.shape))
    if not all(is_one(resolve(out.shape[a])) for a in trailing):
        return None
    return items + ["None"] * len(trailing)


def _emit_single(em: Emitter, eqn, as_view: bool, composed=None) -> None:
    out = eqn.outputs[0]
    name = em.names[id(out)] = em.fresh(f"t_{eqn.prim.name}_")
    if composed is not None:  # one index through the views before it
        base, items = composed
        em.emit(f"{name} = {index_view(em.name(base), items)}")
        return
    ins = [] if eqn.prim.shape_only else [em.name(a) for a in eqn.inputs]
    if as_view:
        em.emit(f"{name} = {eqn.prim.view(ins[0], **eqn.params)}")
        return
    with em.block([name], f"{eqn.prim.name} at {eqn.location}"):
        for line in eqn.prim.emit(em, name, ins, eqn):
            em.emit(line)


# ------------------------------------------------------------ loop nests

def _concatenated_in_nests(groups, counts: dict) -> dict:
    """Concatenations whose pieces are all computed by one nest, for nothing else:
    that nest stores each piece at its offset in the concatenation, which then
    costs no copy and its pieces no arrays (an LSTM's backward concatenates its
    four gates' derivatives each step). id(piece) -> (concatenate, offset)."""
    made_in = {id(eqn.outputs[0]): (group, eqn) for group in groups if group.is_loop
               for eqn in group.eqns}
    reads = {id(group): _inside_reads(group) for group in groups if group.is_loop}
    pieces = {}
    for concat in (group.eqns[0] for group in groups if not group.is_loop):
        if not concat.prim.pieces_along:
            continue
        nests = {id(made_in[id(p)][0]) if _stored_in_place(p, concat, made_in, reads, counts)
                 else None for p in concat.inputs}
        if len(nests) == 1 and None not in nests:
            sizes = [resolve(p.aval.shape[_axis(concat)]) for p in concat.inputs]
            offsets = itertools.accumulate([0] + sizes[:-1])
            pieces.update({id(p): (concat, k) for p, k in zip(concat.inputs, offsets)})
    return pieces


def _stored_in_place(piece, concat, made_in, reads, counts) -> bool:
    """Whether a piece's nest can store it straight into the concatenation: made
    element by element in the nest's body, read outside it by the concatenation
    only, of a size known along the axis."""
    group, eqn = made_in.get(id(piece), (None, None)) if isinstance(piece, Var) else (None, None)
    return (eqn is not None and eqn.prim.kind != REDUCE and loop_space(eqn) == group.space
            and id(piece) not in group.prologue
            and counts.get(id(piece)) == reads[id(group)].get(id(piece), 0) + 1
            and type(resolve(piece.aval.shape[_axis(concat)])) is int
            and piece.aval.dtype == concat.outputs[0].aval.dtype)


def _axis(concat) -> int:
    """The axis a concatenation lays its operands along (its record's `pieces_along`)."""
    return concat.params[concat.prim.pieces_along]


def _concatenation(em: Emitter, concat, exports: list) -> str:
    """The array of a concatenation written by its pieces' nest, made once."""
    out = concat.outputs[0]
    if id(out) not in em.names:
        em.names[id(out)] = em.fresh(f"t_{concat.prim.name}_")
        em.emit(em.empty(em.names[id(out)], out))
        exports.append(em.names[id(out)])
    return em.names[id(out)]


def _emit_loop_group(em: Emitter, group, counts: dict, pieces: dict) -> None:
    dims = [em.dim(d) for d in group.space]
    outside_uses = _outside_uses(group, counts)
    exports: list[str] = []
    summary = f"loop over {space_text(dims)}: " + ", ".join(e.prim.name for e in group.eqns)
    with em.block(exports, summary):
        idx = [em.fresh("i") for _ in dims]
        order = _loop_order(group)
        nest = Nest([idx[p] for p in order], order)
        locals_: dict[int, str] = {}
        for eqn in group.eqns:
            shape = full_shape(eqn)
            level = len(loop_space(eqn))
            full_idx = _expand(shape, idx[:level])
            lines = nest.pre[0] if id(eqn.outputs[0]) in group.prologue else nest.at(level)
            out = eqn.outputs[0]
            if eqn.prim.kind == REDUCE:
                _reduction(em, eqn, shape, full_idx, nest, lines, locals_)
                if id(out) in outside_uses:
                    exports.append(em.names[id(out)])
                continue
            value = _scalar_expr(em, eqn, shape, full_idx, locals_)
            local = em.fresh(f"v_{eqn.prim.name}_")
            locals_[id(out)] = local
            lines.append(f"{local} = {value}")
            if id(out) not in outside_uses:
                continue
            if id(out) in pieces:
                concat, offset = pieces[id(out)]
                at = list(full_idx)
                axis = _axis(concat)
                if offset:  # a constant of the nest (not a lifted parameter): LLVM then
                    # sees the pieces' stores apart, and vectorises (a third of the time)
                    at[axis] = em.fixed(offset) + ("" if at[axis] == "0" else f" + {at[axis]}")
                lines.append(f"{_concatenation(em, concat, exports)}[{', '.join(at)}] = {local}")
                continue
            if out.aval.ndim == 0:
                em.names[id(out)] = local
            else:
                array = em.names[id(out)] = em.fresh(f"t_{eqn.prim.name}_")
                em.emit(em.empty(array, out))
                lines.append(f"{array}[{', '.join(full_idx)}] = {local}")
            exports.append(em.names[id(out)])
        parallel = (nest.parallel_safe and dims and not em.calls_blas
                    and _traced_size(group.space) >= PARALLEL_MIN_SIZE)
        nest.write(em, [dims[p] for p in order], bool(parallel))


WINDOW = 16  # cells of a window at most, for its loops to go innermost
SMALL_AXIS = 4  # a window axis of a nest without reductions: at most this long


def _loop_order(group) -> list[int]:
    """The nest's loops, outermost first, as positions in the group's space: the
    space's order, or a small static window's axes innermost when every equation runs
    in the innermost body. A window is what the nest's reductions reduce, or else the
    small static axes set between larger ones (a pooling window of a reshaped view,
    (n, 13, 2, 13, 2, 32)). Each result then accumulates in a scalar, not by updating
    the output array cell by cell, and LLVM unrolls the window's loops around the
    vectorised channel loop (a pool's max 0.61 -> 0.29 ms, its backward's weighting
    1.17 -> 0.28 ms, alone)."""
    order = list(range(len(group.space)))
    if group.prologue or any(loop_space(e) != group.space for e in group.eqns):
        return order
    window = _window(group)
    sizes = [group.space[p] for p in window]
    if (not window or window == order[-len(window):]
            or not all(type(d) is int for d in sizes) or np.prod(sizes) > WINDOW):
        return order
    return [p for p in order if p not in window] + window


def _window(group) -> list[int]:
    """The axes a nest's reductions reduce (when they all reduce the same), or the
    small static axes that larger axes enclose on both sides."""
    reductions = [e for e in group.eqns if e.prim.kind == REDUCE]
    if reductions:
        windows = {tuple(_reduced_positions(e)) for e in reductions}
        return list(windows.pop()) if len(windows) == 1 else []
    space = group.space
    small = [type(d) is int and d <= SMALL_AXIS for d in space]
    return [p for p in range(1, len(space) - 1)
            if small[p] and not small[p - 1] and not small[p + 1]]


def _reduced_positions(eqn) -> list[int]:
    """A reduction's reduced axes as positions in its loop space (unit axes have none)."""
    shape = full_shape(eqn)
    position = {k: pos for pos, k in enumerate(k for k in range(len(shape))
                                                if not is_one(shape[k]))}
    return sorted(position[k] for k in eqn.params["axes"] if k in position)


def _expand(shape, idx) -> list[str]:
    """Loop indices for each axis of `shape`: unit axes read index 0."""
    it = iter(idx)
    return ["0" if is_one(d) else next(it) for d in shape]


def _traced_size(space) -> int:
    return int(np.prod([d if type(d) is int else d.value for d in space]))


class Nest:
    """Statements of a loop nest: `pre[d]` runs before loop d starts, `post[d]`
    after it ends, `body` in the innermost loop."""

    def __init__(self, idx, order=None):
        self.idx = idx  # loop variables, outermost first
        order = range(len(idx)) if order is None else order
        self.loop_at = {p: depth for depth, p in enumerate(order)}  # space pos -> loop
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
            self._write(em, dims, em.indent, "range")
            return
        size = " * ".join(dims)
        em.emit(f"if {size} >= {PARALLEL_MIN_SIZE}:")
        self._write(em, dims, em.indent + 4, "prange")
        em.emit("else:")
        self._write(em, dims, em.indent + 4, "range")

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


def _outside_uses(group, counts: dict) -> set:
    inside = _inside_reads(group)
    return {id(e.outputs[0]) for e in group.eqns
            if counts.get(id(e.outputs[0]), 0) > inside.get(id(e.outputs[0]), 0)}


def _inside_reads(group) -> dict:
    """id(var) -> how often the nest's own equations read it."""
    inside: dict[int, int] = {}
    for eqn in group.eqns:
        for a in eqn.inputs:
            if isinstance(a, Var):
                inside[id(a)] = inside.get(id(a), 0) + 1
    return inside


def _read(em: Emitter, atom, index: list[str], locals_: dict) -> str:
    """The scalar expression for `atom` at `index` (one entry per atom axis)."""
    if isinstance(atom, Literal):
        return em.literal(atom.value)
    if id(atom) in locals_:
        return locals_[id(atom)]
    if id(atom) in em.virtual:
        eqn = em.virtual[id(atom)]
        (x,) = eqn.inputs
        mapping = eqn.prim.index_map(x.aval, atom.aval, **eqn.params)
        return _read(em, x, _mapped_index(mapping, index), locals_)
    name = em.names[id(atom)]
    if atom.aval.ndim == 0:
        return name
    return f"{name}[{', '.join(index)}]"


def _aligned_index(aval, space, idx) -> list[str]:
    """Right-aligned NumPy broadcasting: unit axes of the operand read 0."""
    offset = len(space) - aval.ndim
    return ["0" if is_one(resolve(d)) and not is_one(space[offset + k]) else idx[offset + k]
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


def _scalar_expr(em: Emitter, eqn, space, idx, locals_) -> str:
    prim = eqn.prim
    if prim.kind == INDEXMAP:
        (x,) = eqn.inputs
        mapping = prim.index_map(x.aval, eqn.outputs[0].aval, **eqn.params)
        return _read(em, x, _mapped_index(mapping, idx), locals_)
    operands = [_read(em, a, _aligned_index(a.aval, space, idx), locals_) for a in eqn.inputs]
    template = prim.scalar_for([a.aval for a in eqn.inputs])
    if prim.indexed:  # a counter-based random draw reads its element's position
        return template(*operands, index=idx, sizes=[em.dim(d) for d in space], **eqn.params)
    if callable(template):
        return template(*operands, **eqn.params)
    return template.format(*operands)


def _reduction(em, eqn, shape, full_idx, nest: Nest, lines, locals_) -> None:
    """Accumulate in the nest: a scalar accumulator when the reduced axes are the
    innermost loops (stored when they end), else straight into the output."""
    prim, out = eqn.prim, eqn.outputs[0]
    (x,) = eqn.inputs
    axes = eqn.params["axes"]
    kept = [k for k in range(len(shape)) if k not in axes]
    value = _read(em, x, full_idx, locals_)
    identity_fn, update = prim.monoid
    wide = prim.accumulate is not None and prim.accumulate(x.aval.dtype) != x.aval.dtype
    init = em.literal(identity_fn(prim.accumulate(x.aval.dtype) if wide else x.aval.dtype))
    is_arg = "{idx}" in update
    flat = _flat_index(em, shape, axes, full_idx) if is_arg else ""
    name = em.names[id(out)] = em.fresh(f"t_{prim.name}_")
    out_idx = [full_idx[k] for k in kept]
    loop_of = {k: nest.loop_at[pos] for pos, k in enumerate(k for k in range(len(shape))
                                                          if not is_one(shape[k]))}
    kept_loops = [loop_of[k] for k in kept if k in loop_of]
    if kept_loops == list(range(len(kept_loops))):
        depth = len(kept_loops)
        if depth == 0 and not update.startswith(("{acc} +=", "{acc} *=")):
            nest.parallel_safe = False  # prange only recognises sum/product reductions
        acc = em.fresh("acc")
        nest.pre[depth].append(f"{acc} = {init}")
        result = f"{name}_i" if is_arg else acc
        if is_arg:
            nest.pre[depth].append(f"{name}_i = 0")
        if out.aval.ndim:
            em.emit(em.empty(name, out))
            nest.post[depth].append(f"{name}[{', '.join(out_idx)}] = {result}")
        else:
            rounded = f"{em.dtype(out.aval)}({result})" if wide else result
            nest.post[depth].append(f"{name} = {rounded}")
        lines.extend(update.format(acc=acc, v=value, idx=f"{name}_i", k=flat).split("\n"))
        return
    nest.parallel_safe = False  # several outer iterations update one output cell
    cell = f"{name}[{', '.join(out_idx)}]"
    if is_arg:
        em.emit(f"{name}_v = _rt.full({em.shape(out.aval)}, {init})")
        em.emit(f"{name} = _rt.full({em.shape(out.aval)}, np.int64(0))")
        acc_cell = f"{name}_v[{', '.join(out_idx)}]"
        lines.extend(update.format(acc=acc_cell, v=value, idx=cell, k=flat).split("\n"))
    elif wide:  # accumulate in a wide array, rounded once the nest is done
        em.emit(f"{name}_w = _rt.full({em.shape(out.aval)}, {init})")
        wide_cell = f"{name}_w[{', '.join(out_idx)}]"
        lines.extend(update.format(acc=wide_cell, v=value, idx="", k="").split("\n"))
        nest.post[0].append(f"{name} = {name}_w.astype({em.dtype(out.aval)})")
    else:
        em.emit(f"{name} = _rt.full({em.shape(out.aval)}, {init})")
        lines.extend(update.format(acc=cell, v=value, idx="", k="").split("\n"))


def _flat_index(em: Emitter, shape, axes, idx) -> str:
    """Row-major position within the reduced axes (argmax's answer)."""
    expr = ""
    for k in axes:
        expr = idx[k] if not expr else f"({expr}) * {em.dim(shape[k])} + {idx[k]}"
    return expr


# ------------------------------------------------------------ control flow

def _carry_init(em: Emitter, atom, name: str) -> None:
    """A loop-carried variable starts as its operand; scalars in their dtype."""
    value = em.name(atom)
    if atom.aval.ndim == 0:
        value = f"{em.dtype(atom.aval)}({value})"
    em.emit(f"{name} = {value}")


def _assign(em: Emitter, targets: list[str], values: list[str]) -> None:
    """Simultaneous assignment (a body may swap its carries)."""
    if targets:
        em.emit(f"{', '.join(targets)} = {', '.join(values)}")


def _bind_inputs(em: Emitter, program: Program, names: list[str]) -> None:
    for var, name in zip(program.invars, names):
        em.names[id(var)] = name


def _store_step(em: Emitter, stack: str, t: str, value: str, aval) -> None:
    """stack[t] = value: a scalar store, or a shared nest of copy loops."""
    if value == f"{stack}[{t}]":
        return  # computed in place
    if aval.ndim == 0:
        em.emit(f"{stack}[{t}] = {value}")
        return
    with em.block([], f"store a step's {aval.ndim}-d value", effect=True):
        idx, lines, indent = em.loops(em.dims(aval), 0)
        for line in lines:
            em.emit(line)
        em.emit(" " * indent + f"{stack}[{t}, {', '.join(idx)}] = {value}[{', '.join(idx)}]")


def _emit_scan(em: Emitter, eqn) -> None:
    p = eqn.params
    body, nc, ncarry = p["body"], p["n_consts"], p["n_carry"]
    ins = [em.name(a) for a in eqn.inputs]
    n = em.dim(p["length"])
    em.emit(f"# scan over {n} steps at {eqn.location}")
    carry = [em.fresh("carry") for _ in range(ncarry)]
    for atom, name in zip(eqn.inputs[nc:nc + ncarry], carry):
        _carry_init(em, atom, name)
    ys = [em.fresh("ys") for _ in eqn.outputs[ncarry:]]
    for name, var in zip(ys, eqn.outputs[ncarry:]):
        em.emit(f"{name} = _rt.empty({em.shape(var.aval)}, {em.dtype(var.aval)})")
    t = em.fresh("t")
    steps = f"range({n} - 1, -1, -1)" if p["reverse"] else f"range({n})"
    em.emit(f"for {t} in {steps}:")
    with em.nested():
        slices = []
        for name in ins[nc + ncarry:]:
            slices.append(em.fresh("x"))
            em.emit(f"{slices[-1]} = {name}[{t}]")
        _bind_inputs(em, body, ins[:nc] + carry + slices)
        outs = _emit_into_rows(em, body, ys, t, ncarry)
        for stack, value, var in zip(ys, outs[ncarry:], body.outvars[ncarry:]):
            _store_step(em, stack, t, value, var.aval)
        _assign(em, carry, outs[:ncarry])
    for var, name in zip(eqn.outputs, carry + ys):
        em.names[id(var)] = name


def _emit_into_rows(em: Emitter, body: Program, ys: list[str], t: str, ncarry: int):
    """Emit a scan's body so that the arrays it stacks are computed in their stack's
    row `t` where they are made (`em.empty`); such outputs are named by their row."""
    rows = {}
    for stack, var in zip(ys, body.outvars[ncarry:]):
        if isinstance(var, Var) and var.aval.ndim and var not in body.invars:
            rows.setdefault(id(var), f"{stack}[{t}]")
    saved, em.rows = em.rows, dict(rows)
    try:
        outs = emit_program(em, body)
        unused = em.rows
    finally:
        em.rows = saved
    for k, var in enumerate(body.outvars[ncarry:], ncarry):
        row = f"{ys[k - ncarry]}[{t}]"
        if rows.get(id(var)) == row and id(var) not in unused:
            outs[k] = row
    return outs


def _emit_while(em: Emitter, eqn) -> None:
    p = eqn.params
    cond, body = p["cond"], p["body"]
    n_cond, nc, ncarry = p["n_cond"], p["n_consts"], p["n_carry"]
    ins = [em.name(a) for a in eqn.inputs]
    em.emit(f"# while loop at {eqn.location}")
    count = em.fresh("count")
    em.emit(f"{count} = 0")
    carry = [em.fresh("carry") for _ in range(ncarry)]
    for atom, name in zip(eqn.inputs[n_cond + nc:], carry):
        _carry_init(em, atom, name)
    stacks = [em.fresh("stack") for _ in eqn.outputs[1 + ncarry:]]
    for name, var in zip(stacks, body.outvars[ncarry:]):
        shape = ", ".join([str(STACK_START)] + em.dims(var.aval))
        em.emit(f"{name} = _rt.empty(({shape},), {em.dtype(var.aval)})")
    em.emit("while True:")
    with em.nested():
        _bind_inputs(em, cond, ins[:n_cond] + carry)
        (pred,) = emit_program(em, cond)
        em.emit(f"if not {pred}:")
        em.emit("    break")
        _bind_inputs(em, body, ins[n_cond:n_cond + nc] + carry)
        outs = emit_program(em, body)
        for stack, value, var in zip(stacks, outs[ncarry:], body.outvars[ncarry:]):
            em.emit(f"if {count} == {stack}.shape[0]:")
            em.emit(f"    {stack} = _rt.grow({stack})")
            _store_step(em, stack, count, value, var.aval)
        _assign(em, carry, outs[:ncarry])
        em.emit(f"{count} += 1")
    for name in stacks:
        em.emit(f"{name} = {name}[:{count}]")
    em.dim_names[id(resolve(p["length"]))] = count
    for var, name in zip(eqn.outputs, [count] + carry + stacks):
        em.names[id(var)] = name


def _emit_switch(em: Emitter, eqn) -> None:
    branches = eqn.params["branches"]
    ins = [em.name(a) for a in eqn.inputs]
    em.emit(f"# switch at {eqn.location}")
    outs = [em.fresh("branch_out") for _ in eqn.outputs]
    for k, branch in enumerate(branches):
        test = "else:" if k == len(branches) - 1 else (
            f"{'if' if k == 0 else 'elif'} {ins[0]} <= {k}:")
        em.emit(test)
        with em.nested():
            _bind_inputs(em, branch, ins[1:])
            values = emit_program(em, branch)
            cast = [f"{em.dtype(v.aval)}({x})" if v.aval.ndim == 0 else x
                    for v, x in zip(eqn.outputs, values)]
            _assign(em, outs, cast)
            if not outs:
                em.emit("pass")
    for var, name in zip(eqn.outputs, outs):
        em.names[id(var)] = name


CONTROL_EMITTERS = {"scan": _emit_scan, "while_loop": _emit_while, "switch": _emit_switch}


__all__ = ["Generated", "generate", "identifier"]
