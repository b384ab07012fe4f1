"""`GradientTape` and `gradients`: TensorFlow's words for reverse mode.

A tape records the equations appended to a builder while it is open: inside
`@tracejit.function` that is the trace's own builder (the gradient is replayed
into the trace and compiles with it); outside, an `EagerBuilder` (eager.py)
that computes values as it records. Either way `gradient` cuts the recorded
equations between the watched values and the targets into a program and
differentiates it with `autodiff.vjp_program`: one code path, one set of
rules. Eagerly, the adjoint program is cached by the structure of the cut
(`_Adjoints`), so a training loop builds it once and then runs it compiled;
and the cut itself is made once per structure of the recording (`_Plan`,
keyed by the eager builder's trail and what the tape watches): a step that
repeats an earlier one's structure only gathers its values and runs the
adjoint.

TensorFlow's conventions: a source the target does not depend on gets None
(or zeros with `unconnected_gradients="zero"`); a non-persistent tape answers
one `gradient` or `jacobian` call; only watched values (trainable Variables
read on the tape, unless `watch_accessed_variables=False`, and what
`watch` names) are differentiated.
"""

from __future__ import annotations

import contextlib
import enum
import operator
from dataclasses import dataclass, replace

import numpy as np

from ..backend.compiler import Dispatcher, Stats
from ..backend.interpreter import interpret
from ..core import pytree
from ..core.errors import warn
from ..core.ir import Eqn, Literal, Program, Var, programs_in
from ..core.shapes import Sym, resolve
from ..numpy import api as numpy_api
from ..trace import ops
from ..trace.tracer import Builder, Tracer, current_builder, located, replay, store
from ..transforms import autodiff, passes
from ..transforms.pipeline import run_passes
from .eager import EagerBuilder, EagerTracer
from .variables import Variable, recording_tapes


class UnconnectedGradients(enum.Enum):
    """What `gradient` returns for a source the target does not depend on."""

    NONE = "none"
    ZERO = "zero"


class GradientTape:
    """Records operations for reverse-mode differentiation, as `tf.GradientTape`:

        with tracejit.GradientTape() as tape:
            loss = np.mean((W * x + b - y) ** 2)     # W, b: tracejit.Variable
        dW, db = tape.gradient(loss, [W, b])

    Works eagerly and inside `@tracejit.function` (where the gradient is
    compiled into the kernel). Sources may be Variables, watched arrays and
    values computed on the tape, in any nested structure."""

    def __init__(self, persistent=False, watch_accessed_variables=True):
        self.persistent = persistent
        self.watch_accessed_variables = watch_accessed_variables
        self.builder = None
        self._owns_builder = False
        self._segments: list[tuple[int, int]] = []  # ranges of builder.eqns recorded
        self._open: int | None = None  # start of the range being recorded
        self._watched_vars: dict[int, Variable] = {}
        self._watched_ids: set[int] = set()  # ids of watched IR variables
        self._reads: dict[int, dict[int, None]] = {}  # id(Variable) -> ids read on the tape
        self._watched_arrays: set[int] = set()  # ids of plain arrays given to watch()
        self._used = False

    # --------------------------------------------------------- recording
    def __enter__(self) -> GradientTape:
        builder = current_builder()
        if builder is None:  # eager (nested eager tapes share the outermost one's builder)
            builder = EagerBuilder()
            builder.push()
            self._owns_builder = True
        self.builder = builder
        self._resume()
        return self

    def __exit__(self, *exc) -> None:
        if self._open is not None:
            self._pause()
        if self._owns_builder:
            self.builder.pop()
            self._owns_builder = False

    def _resume(self) -> None:
        self._open = len(self.builder.eqns)
        recording_tapes.append(self)

    def _pause(self) -> None:
        self._segments.append((self._open, len(self.builder.eqns)))
        self._open = None
        recording_tapes.remove(self)

    @contextlib.contextmanager
    def stop_recording(self):
        """Operations inside are not recorded by this tape (others still record)."""
        if self._open is None:
            raise RuntimeError("GradientTape.stop_recording: the tape is not recording")
        self._pause()
        try:
            yield
        finally:
            self._resume()

    def reset(self) -> None:
        """Forget everything recorded so far (the tape keeps recording if open)."""
        self._segments.clear()
        self._watched_vars.clear()
        self._watched_ids.clear()
        self._reads.clear()
        self._used = False
        if self._open is not None:
            self._open = len(self.builder.eqns)

    # ----------------------------------------------------------- watching
    def watch(self, tensor):
        """Differentiate with respect to `tensor` (Variables, arrays, values on
        the tape; nested structures). Returns what was watched: for a NumPy
        array, the recorded value to compute with (`x = tape.watch(x)`), since
        NumPy operations on the array alone never reach the tape."""
        leaves, treedef = pytree.flatten(tensor)
        return pytree.unflatten(treedef, [self._watch(leaf) for leaf in leaves])

    def _watch(self, value):
        if isinstance(value, Variable):
            self._watched_vars[id(value)] = value
            return value
        if self.builder is None:
            raise RuntimeError("GradientTape.watch on a tape that was never entered")
        if isinstance(value, Tracer) and value.builder is self.builder:
            tracer = value
        elif isinstance(self.builder, EagerBuilder):
            tracer = self.builder.watch_array(_value_of(value))
            self._watched_arrays.add(id(value))
        else:
            array = np.asarray(value)
            tracer = Tracer(self.builder, self.builder.capture(array))
        self._watched_ids.add(id(tracer.ir_var))
        return tracer

    def watched_variables(self) -> list:
        return list(self._watched_vars.values())

    @staticmethod
    def wait() -> None:
        """Block until the eager gradient programs compiling in the background are done."""
        _ADJOINTS.wait()

    @staticmethod
    def clear_cache() -> None:
        """Forget the eager gradient programs (after changing TRACEJIT_DISABLE_JIT)."""
        _ADJOINTS.clear()

    # hooks called by variables.py
    def _would_watch(self, variable) -> bool:
        return id(variable) in self._watched_vars or (
            self.watch_accessed_variables and variable.trainable)

    def _read(self, variable, *values) -> None:
        if self.watch_accessed_variables and variable.trainable:
            self._watched_vars.setdefault(id(variable), variable)
        for value in values:
            if isinstance(value, Tracer) and value.builder is self.builder:
                self._reads.setdefault(id(variable), {})[id(value.ir_var)] = None

    def _assigned(self, variable) -> None:
        """An eager assignment: the next read is a new recorded input."""
        if isinstance(self.builder, EagerBuilder):
            self.builder.variable_inputs.pop(id(variable), None)

    # ---------------------------------------------------------- gradients
    def gradient(self, target, sources, output_gradients=None,
                 unconnected_gradients=UnconnectedGradients.NONE):
        """d(sum of target) / d(sources), in the structure of `sources`.
        `output_gradients` weights the target (a vector-Jacobian product)."""
        kind = type(sources)
        if kind is list and all(type(s) in _LEAF_TYPES for s in sources):  # (the common case)
            source_leaves, source_def = sources, None
        else:
            source_leaves, source_def = pytree.flatten(sources)
        seeds = None if output_gradients is None else pytree.flatten(output_gradients)[0]
        grads = self._vjps(target, source_leaves, [seeds], unconnected_gradients)[0]
        return grads if source_def is None else pytree.unflatten(source_def, grads)

    def jacobian(self, target, sources, unconnected_gradients=UnconnectedGradients.NONE,
                 parallel_iterations=None, experimental_use_pfor=True):
        """d target[i...] / d source[j...], shaped target.shape + source.shape,
        one reverse pass per element of the target."""
        source_leaves, source_def = pytree.flatten(sources)
        shape = _shape_of(target)
        size = int(np.prod(shape))
        dtype = ops.aval_of(target).dtype
        seeds = [[np.eye(size, dtype=dtype)[k].reshape(shape)] for k in range(size)]
        rows = self._vjps(target, source_leaves, seeds, unconnected_gradients)
        jac = [_stack_rows([row[k] for row in rows], shape, source)
               for k, source in enumerate(source_leaves)]
        return pytree.unflatten(source_def, jac)

    def _vjps(self, target, sources, seed_sets, unconnected) -> list:
        """One list of source gradients per set of target seeds."""
        if self._used and not self.persistent:
            raise RuntimeError("A non-persistent GradientTape can only be used to compute one "
                               "set of gradients (or jacobians); use "
                               "GradientTape(persistent=True) for more")
        if self.builder is None:
            raise RuntimeError("GradientTape.gradient on a tape that was never entered")
        self._used = True
        zero = unconnected is not UnconnectedGradients.NONE and UnconnectedGradients(
            getattr(unconnected, "value", unconnected)) is UnconnectedGradients.ZERO
        targets = [target] if type(target) is EagerTracer else pytree.flatten(target)[0]
        if not any(isinstance(t, Tracer) for t in targets) and any(
                id(s) in self._watched_arrays for s in sources):
            warn("GradientTape.gradient: the target was not recorded. NumPy operations on a "
                 "plain array never reach the tape: compute with the value that "
                 "`x = tape.watch(x)` returns")
        replaying = current_builder() is self.builder  # a tape records: the gradient too
        if not replaying and isinstance(self.builder, EagerBuilder):
            plan = _plan(self, targets, sources)
            cut, run = plan.cut, plan.runner(self.builder, targets)
        else:
            cut = _cut(self, targets, sources, lift_literals=not replaying)
            run = lambda seeds: _evaluate(self.builder, cut, seeds, replaying)  # noqa: E731
        results = []
        for seeds in seed_sets:
            grads = [] if cut is None else run(seeds)
            results.append([_source_gradient(cut, k, grads, source, zero)
                            for k, source in enumerate(sources)])
        return results


# ----------------------------------------------------------- the cut

@dataclass
class _Cut:
    """The recorded equations between the watched values and the targets as
    a program: inputs are [sources..., other values read..., literals...]."""

    program: Program
    n_sources: int
    n_free: int
    literals: list  # values of the lifted literal inputs
    groups: list  # per requested source: its input positions (several reads of a Variable)
    targets: list  # the differentiable targets (tracers)
    kept: list  # their positions among the targets given


def _recorded(tape: GradientTape) -> list:
    eqns = tape.builder.eqns
    ranges = list(tape._segments)
    if tape._open is not None:
        ranges.append((tape._open, len(eqns)))
    return [eqn for start, stop in ranges for eqn in eqns[start:stop]]


def _cut(tape: GradientTape, targets, sources, lift_literals: bool) -> _Cut | None:
    builder = tape.builder
    eqns = _recorded(tape)
    watched = set(tape._watched_ids)
    for key in tape._watched_vars:
        watched.update(tape._reads.get(key, ()))
    reach = set(watched)  # values that depend on watched ones through recorded equations
    for eqn in eqns:
        if any(isinstance(a, Var) and id(a) in reach for a in eqn.inputs):
            reach.update(id(v) for v in eqn.outputs)
    kept = [k for k, t in enumerate(targets) if isinstance(t, Tracer) and t.builder is builder
            and id(t.ir_var) in reach and autodiff.is_float(t.aval)]
    if not kept:
        return None
    target_vars = [targets[k].ir_var for k in kept]
    wanted = [_source_ids(tape, s) & reach for s in sources]
    source_ids = set().union(*wanted)
    needed = _needed(eqns, target_vars, reach, source_ids)
    external = _external_inputs(needed, target_vars)
    src = [v for v in external if id(v) in source_ids and autodiff.is_float(v.aval)]
    free = [v for v in external if not (id(v) in source_ids and autodiff.is_float(v.aval))]
    needed, lifted = _lift_literals(needed) if lift_literals else (needed, [])
    program = Program(src + free + [var for var, _ in lifted], [], needed, target_vars,
                      builder.checks, "tape")
    position = {id(v): k for k, v in enumerate(src)}
    groups = [[position[i] for i in ids if i in position] for ids in wanted]
    return _Cut(program, len(src), len(free), [value for _, value in lifted], groups,
                [targets[k] for k in kept], kept)


def _source_ids(tape: GradientTape, source) -> set:
    if isinstance(source, Variable):
        if id(source) not in tape._watched_vars:
            return set()
        return set(tape._reads.get(id(source), ()))
    if isinstance(source, Tracer) and source.builder is tape.builder:
        return {id(source.ir_var)}
    var = tape.builder._captured.get(id(source)) if isinstance(source, np.ndarray) else None
    return {id(var)} if var is not None else set()


def _needed(eqns, target_vars, reach, source_ids) -> list:
    """The recorded equations the targets depend on through watched values,
    stopping at sources (a source computed on the tape is an input here)."""
    live = {id(v) for v in target_vars}
    needed = []
    for eqn in reversed(eqns):
        outs = [id(v) for v in eqn.outputs]
        if not any(o in live for o in outs) or any(o in source_ids for o in outs):
            continue
        needed.append(eqn)
        live.update(id(a) for a in eqn.inputs if isinstance(a, Var) and id(a) in reach)
    return needed[::-1]


def _external_inputs(needed, target_vars) -> list:
    """Variables the cut reads but does not compute, in the order of first
    use (a structural order, so equal programs get equal cache keys)."""
    defined = {id(v) for eqn in needed for v in eqn.outputs}
    seen, order = set(), []
    for atom in [a for eqn in needed for a in eqn.inputs] + list(target_vars):
        if isinstance(atom, Var) and id(atom) not in defined and id(atom) not in seen:
            seen.add(id(atom))
            order.append(atom)
    return order


def _lift_literals(eqns):
    """Scalar constants become inputs: a training loop over scalar data (or
    a changing Python float) keeps one program structure."""
    lifted, out = [], []
    for eqn in eqns:
        if not any(isinstance(a, Literal) for a in eqn.inputs):
            out.append(eqn)
            continue
        inputs = []
        for atom in eqn.inputs:
            if isinstance(atom, Literal):
                var = Var(atom.aval)
                lifted.append((var, atom.value))
                atom = var
            inputs.append(atom)
        out.append(Eqn(eqn.prim, inputs, eqn.params, eqn.outputs, eqn.location))
    return out, lifted


# ------------------------------------------------------------ evaluation

def _joint(program: Program, n_sources: int, n_targets: int) -> Program:
    """The adjoint of a cut: (inputs..., target seeds...) -> source gradients."""
    joint = autodiff.vjp_program(program, list(range(n_sources)), [autodiff.INPUT] * n_targets)
    return replace(joint, outvars=joint.outvars[n_targets:])


def _evaluate(builder, cut: _Cut, seeds, replaying: bool) -> list:
    program = cut.program
    external = program.invars[:cut.n_sources + cut.n_free]
    if replaying:  # inside a trace, or while a tape records: the gradient is recorded too
        leaves = [_tracer(builder, v) for v in external]
        leaves += [_seed(t, s, traced=True) for t, s in zip(cut.targets, _seeds(seeds, cut))]
        joint = passes.dce(_joint(program, cut.n_sources, len(cut.targets)))
        return replay(joint, leaves, joint.consts)
    leaves = [builder.values[id(v)] for v in external] + cut.literals
    leaves += [_seed(t, s, traced=False) for t, s in zip(cut.targets, _seeds(seeds, cut))]
    return _ADJOINTS.run(program, cut.n_sources, len(cut.targets), leaves)


# ------------------------------------------------- one cut per structure

class _Plan:
    """An eager gradient worked out once per structure of recording: the cut,
    where its inputs are in any recording of that structure (the positions
    of the values, (equation, operand) positions of the lifted literals), and
    the adjoint's slot in the cache."""

    def __init__(self, tape: GradientTape, targets, sources):
        builder = tape.builder
        self.cut = cut = _cut(tape, targets, sources, lift_literals=True)
        if cut is None:
            return
        program = cut.program
        ordinal = builder.ordinal
        self.external = [ordinal[id(v)] for v in program.invars[:cut.n_sources + cut.n_free]]
        in_cut = {id(e.outputs[0]) for e in program.eqns}
        self.literals = [(k, p) for k, e in enumerate(builder.eqns) if id(e.outputs[0]) in in_cut
                         for p, a in enumerate(e.inputs) if isinstance(a, Literal)]
        assert len(self.literals) == len(cut.literals)
        backward, used = _backward_program(program, cut.n_sources)
        # where each input of the backward program is in a recording: (trail
        # position, None) for a value, (equation, operand) for a lifted literal
        places = [(k, None) for k in self.external] + self.literals + [
            (ordinal[id(v)], None) for e in program.eqns for v in e.outputs]
        self.places = [places[k] for k in used]
        # the gather of those inputs: values by position in the recording's
        # trail (C speed), then the lifted literals put in their places
        self.gather = _getter([k if p is None else 0 for k, p in self.places])
        self.literal_places = [(n, k, p) for n, (k, p) in enumerate(self.places)
                               if p is not None]
        self.slot = _ADJOINTS.slot(backward, cut.n_sources, len(cut.targets))
        # kept for as long as the structure recurs: no values of this recording
        self.cut = replace(cut, targets=[], literals=[])

    def runner(self, builder: EagerBuilder, targets):
        """The gradient of this recording, per set of seeds."""
        cut = self.cut
        if cut is None:
            return None
        leaves = self.gather(builder.trail)
        eqns = builder.eqns
        for n, k, p in self.literal_places:
            leaves[n] = eqns[k].inputs[p].value
        kept = [targets[k] for k in cut.kept]

        def run(seeds):
            seeds = [None] * len(kept) if seeds is None else [seeds[k] for k in cut.kept]
            return self.slot.run(leaves + [_seed(t, s, traced=False) for t, s in zip(kept, seeds)])

        return run


def _getter(indices: list):
    """items -> [items[k] for k in indices], in C."""
    if not indices:
        return lambda items: []
    get = operator.itemgetter(*indices)
    if len(indices) == 1:
        return lambda items: [get(items)]
    return lambda items: list(get(items))


def _backward_program(program: Program, n_sources: int):
    """The adjoint of a cut that reads the forward values the tape recorded
    instead of computing them again: its inputs are the cut's inputs and its
    equations' outputs (those the derivative rules use: returned as positions
    in that list), then one seed per target; its outputs the sources'
    gradients. (Equations whose reverse mode changes their forward pass, a
    loop saving its steps, are computed again.)"""
    builder = Builder(program.name + "_vjp")
    builder.checks.pairs.extend(program.checks.pairs)
    recorded = list(program.invars) + [v for e in program.eqns for v in e.outputs]
    with builder, located(f"<gradient of {program.name}>"):
        env = {id(v): builder.new_input(v.aval) for v in recorded}
        pullbacks = {}
        for eqn in program.eqns:
            if eqn.prim.vjp_forward is not None and autodiff._needs_gradient(eqn):
                xs = [autodiff._read(env, a) for a in eqn.inputs]
                with located(eqn.location):
                    result, pullbacks[id(eqn)] = eqn.prim.vjp_forward(*xs, **eqn.params)
                store(env, eqn, result)
        cts: dict = {}
        for atom in program.outvars:
            autodiff._accumulate(cts, atom, builder.new_input(atom.aval))
        autodiff._backward(program, env, cts, pullbacks)
        grads = [autodiff._gradient_of(cts, v, env[id(v)]) for v in program.invars[:n_sources]]
        backward = passes.dce(builder.program(grads))
    read = {id(a) for e in backward.eqns for a in e.inputs} | {id(a) for a in backward.outvars}
    used = [k for k, v in enumerate(backward.invars[:len(recorded)]) if id(v) in read]
    invars = [backward.invars[k] for k in used] + backward.invars[len(recorded):]
    return replace(backward, invars=invars), used


def _plan(tape: GradientTape, targets, sources) -> _Plan:
    key = _plan_key(tape, targets, sources)
    plan = _ADJOINTS.plans.get(key) if key is not None else None
    if plan is None:
        plan = _Plan(tape, targets, sources)
        if key is not None:
            _ADJOINTS.remember(key, plan)
    return plan


def _plan_key(tape: GradientTape, targets, sources):
    """What the cut depends on, by position in the recording: its structure
    (the trie node it reached), the ranges this tape recorded, the watched
    values, targets and sources. None when some value was not numbered."""
    builder = tape.builder
    ordinal = builder.ordinal
    reads = tape._reads
    ranges = tuple(tape._segments)
    if tape._open is not None:
        ranges += ((tape._open, len(builder.eqns)),)
    try:
        watched = [ordinal[i] for i in tape._watched_ids]
        for key in tape._watched_vars:
            read = reads.get(key)
            if read:
                watched += [ordinal[i] for i in read]
        watched.sort()  # (a multiset: a value both watched and read counts twice, always)
        return (builder.node, ranges, tuple(watched),
                tuple([ordinal[id(t.ir_var)] if isinstance(t, Tracer) and t.builder is builder
                       else None for t in targets]),
                tuple([_source_key(tape, s, ordinal) for s in sources]))
    except KeyError:
        return None


def _source_key(tape: GradientTape, source, ordinal) -> tuple:
    """A source's values, by position in the recording (`_source_ids`, cheaply
    for a Variable, the common case)."""
    if type(source) is Variable:
        read = tape._reads.get(id(source))
        if not read or id(source) not in tape._watched_vars:
            return ()
        return tuple(sorted([ordinal[i] for i in read]))
    return tuple(sorted(ordinal[i] for i in _source_ids(tape, source)))


_LEAF_TYPES = frozenset({Variable, EagerTracer, np.ndarray})


def _seeds(seeds, cut: _Cut) -> list:
    if seeds is None:
        return [None] * len(cut.targets)
    return [seeds[k] for k in cut.kept]


def _seed(target, seed, traced: bool):
    if seed is None:
        if traced:
            return ops.full_like(target, 1.0)
        value = target.value  # (np.ones_like is slow on a NumPy scalar: a 0-d array here too)
        return np.ones(np.shape(value) if type(value) is not np.ndarray else value.shape,
                       value.dtype if hasattr(value, "dtype") else np.result_type(value))
    if traced:
        return ops.convert(seed, target.dtype)
    return np.asarray(_value_of(seed), dtype=target.dtype)


def _tracer(builder, var: Var):
    if isinstance(builder, EagerBuilder):
        return EagerTracer(builder, var, builder.values[id(var)])
    return Tracer(builder, var)


def _source_gradient(cut: _Cut | None, k: int, grads: list, source, zero: bool):
    parts = [grads[i] for i in cut.groups[k]] if cut is not None else []
    if not parts:
        return _zeros(source) if zero else None
    total = parts[0]
    for part in parts[1:]:
        total = ops.add(total, part)
    return total


def _zeros(source):
    if isinstance(source, Variable):
        return np.zeros(source.shape, source.dtype)
    if isinstance(source, EagerTracer):
        return np.zeros_like(source.value)
    return ops.zeros_like(source)


def _value_of(value):
    if isinstance(value, EagerTracer):
        return value.value
    if isinstance(value, Variable):
        return value._value
    return value


def _shape_of(value) -> tuple:
    """Sizes as ints (a traced size is bound: the Jacobian's shape needs it)."""
    if isinstance(value, Tracer) and not isinstance(value, EagerTracer):
        return tuple(value.shape)
    return np.shape(_value_of(value))


def _stack_rows(rows, target_shape, source):
    """The rows of one source's Jacobian, shaped target.shape + source.shape."""
    if all(r is None for r in rows):
        return None
    shape = tuple(target_shape) + _shape_of(source)
    if any(isinstance(r, Tracer) and not isinstance(r, EagerTracer) for r in rows):
        return ops.reshape(numpy_api.stack(rows), shape)
    return np.stack([np.asarray(_value_of(r)) for r in rows]).reshape(shape)


# ------------------------------------------------------ the eager cache

MAX_STRUCTURES = 1024


class _Adjoint(Dispatcher):
    """The compiled adjoint of one structure of cut (its own dispatch table:
    per batch size and dtypes, as any function)."""

    def __init__(self, stats: Stats, program: Program, n_sources: int):
        super().__init__("tape_gradient")
        self.stats = stats
        self.program, self.n_sources = program, n_sources

    def build(self, args, statics):
        program = self.program
        input_syms = [(k, axis, d) for k, v in enumerate(program.invars)
                      for axis, d in enumerate(v.aval.shape) if type(d) is not int]
        return program, ("t", (pytree.LEAF,) * self.n_sources), input_syms


class _Adjoints:
    """Eager tapes' gradient programs. A cut is keyed by its structure (the
    equations and types, not the values, with sizes symbolic): the first time
    a structure is seen its adjoint is interpreted; when it comes again it is
    compiled (in the background, as any kernel) and reused from then on."""

    def __init__(self):
        self.stats = Stats()
        self._by_structure: dict = {}  # structure key -> _Slot
        self.plans: dict = {}  # plan key (tape.py's) -> _Plan

    def slot(self, program: Program, n_sources: int, n_targets: int) -> _Slot:
        """The slot of an adjoint program: (inputs..., target seeds...) ->
        source gradients."""
        key = structure_key(program, n_sources, n_targets)
        slot = self._by_structure.get(key)
        if slot is None:
            if len(self._by_structure) >= MAX_STRUCTURES:
                self.clear()
            slot = self._by_structure[key] = _Slot(self.stats, program, n_sources)
        return slot

    def run(self, program: Program, n_sources: int, n_targets: int, leaves: list) -> list:
        """The gradient of a cut: its joint (forward computed again) in a slot."""
        key = ("joint", structure_key(program, n_sources, n_targets))
        slot = self._by_structure.get(key)
        if slot is None:
            if len(self._by_structure) >= MAX_STRUCTURES:
                self.clear()
            joint = _joint(program, n_sources, n_targets)
            slot = self._by_structure[key] = _Slot(self.stats, joint, n_sources)
        return slot.run(leaves)

    def remember(self, key, plan: _Plan) -> None:
        if len(self.plans) >= MAX_STRUCTURES:
            self.plans.clear()
        self.plans[key] = plan

    def wait(self) -> None:
        for slot in list(self._by_structure.values()):
            if slot.adjoint is not None:
                slot.adjoint.wait()

    def clear(self) -> None:
        self._by_structure.clear()
        self.plans.clear()


class _Slot:
    """One structure's adjoint: interpreted the first time, then compiled."""

    def __init__(self, stats: Stats, program: Program, n_sources: int):
        self.stats = stats
        self.program, self.n_sources = program, n_sources
        self.adjoint: _Adjoint | None = None
        self.seen = False

    def run(self, leaves: list) -> list:
        if self.adjoint is not None:
            return list(self.adjoint.call_flat(tuple(leaves)))
        if self.seen:
            self.adjoint = _Adjoint(self.stats, self.program, self.n_sources)
            return self.run(leaves)
        self.seen = True
        program = run_passes(self.program)
        return [_typed(v, a.aval) for v, a in
                zip(interpret(program, leaves, program.consts), program.outvars)]


def _typed(value, aval):
    return np.asarray(value, dtype=aval.dtype) if aval.ndim else aval.dtype.type(value)


_ADJOINTS = _Adjoints()
GradientTape.stats = _ADJOINTS.stats  # traces and compiles of eager gradient programs


def structure_key(program: Program, *extra) -> tuple:
    """A hashable description of a program's structure: types (sizes as
    symbols numbered by first appearance), equations, parameters, wiring."""
    syms: dict[int, int] = {}

    def dim(d):
        root = resolve(d)
        return root if type(root) is int else ("n", syms.setdefault(id(root), len(syms)))

    def canonical(value):
        if isinstance(value, Sym):
            return dim(value)
        if isinstance(value, (tuple, list)):
            if programs_in(tuple(value)):
                return tuple(program_key(p) for p in value)
            return tuple(canonical(v) for v in value)
        if isinstance(value, Program):
            return program_key(value)
        return value

    def aval(a):
        return (a.dtype.str, a.weak, tuple(dim(d) for d in a.shape))

    def program_key(p: Program) -> tuple:
        names: dict[int, int] = {}

        def name(atom):
            if isinstance(atom, Literal):
                return ("lit", atom.aval.dtype.str, atom.value.item())
            return names[id(atom)]

        for v in p.invars + p.constvars:
            names[id(v)] = len(names)
        parts = [tuple(aval(v.aval) for v in p.invars), tuple(aval(v.aval) for v in p.constvars),
                 tuple(id(c) for c in p.consts)]
        for eqn in p.eqns:
            inputs = tuple(name(a) for a in eqn.inputs)
            for v in eqn.outputs:
                names[id(v)] = len(names)
            parts.append((eqn.prim.name, inputs,
                          tuple((k, canonical(v)) for k, v in sorted(eqn.params.items()))))
        parts.append(tuple(name(a) for a in p.outvars))
        return tuple(parts)

    return (program_key(program), *extra)


__all__ = ["GradientTape", "UnconnectedGradients"]
