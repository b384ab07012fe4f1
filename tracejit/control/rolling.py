"""Loop rolling: a Python `for` loop unrolled by the trace becomes a `scan` again.

Tracing runs the user's Python loop, so a 25-step RNN arrives as 25 copies of
its step. When the same block of equations repeats k >= 3 times in a row,
each repetition reading only

- values of its own repetition,
- values of the previous one (a carry; the first repetition reads its initial value),
- the same value from before the block (a loop invariant),
- one row of an array per repetition (`X[t]`), or one of k same-typed values
  (the weights of each layer, stacked),

it is rewritten into one `scan` whose body is the first repetition. Values
used after the block become the scan's final carry or its stacked outputs.
Anything else - different ops or shapes, a value from two repetitions back -
leaves the block unrolled. The rewrite is exact: the body computes the same
operations in the same order. Blocks made only of elementwise work are left
alone (they fuse into one loop nest anyway).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from ..core.ir import AVal, Literal, Program, Var, pretty, programs_in
from ..core.shapes import bind as bind_dim
from ..core.shapes import resolve, value
from ..trace import ops
from ..trace.registry import ELEMENTWISE, INDEXMAP
from ..trace.tracer import Builder, bind, located, store, trace_closed
from . import flow as cf

log = logging.getLogger("tracejit")
MIN_TRIPS = 3


# ------------------------------------------------------------- signatures

def _signature(eqn, program_keys: dict) -> tuple:
    """What must agree between repetitions: the op, its parameters (a row
    slice's position may differ), and the types of operands and results."""
    params = []
    for key, param in sorted(eqn.params.items()):
        subs = programs_in(param)
        if subs:
            param = tuple(_program_key(p, program_keys) for p in subs)
        elif eqn.prim.name == "slice" and key in ("starts", "stops"):
            param = "*"
        params.append((key, _hashable(param)))
    return (eqn.prim.name, tuple(params), tuple(_type(a) for a in eqn.inputs),
            tuple(_type(v) for v in eqn.outputs))


def _type(atom) -> tuple:
    """Sizes by value: layers of equal width are the same step even when their
    sizes are different symbols (rolling then fixes those sizes, see `_unify`)."""
    return (atom.aval.dtype.str, tuple(value(d) for d in atom.aval.shape))


def _unify(eqns, run) -> None:
    """Sizes that differ as symbols between repetitions (each layer's width is
    its own input size) become fixed sizes: the kernel is specialised to them,
    a model with other widths gets another kernel (never a wrong one)."""
    for offset in range(run.period):
        for sizes in _dims_by_slot(eqns, run, offset):
            roots = [resolve(d) for d in sizes]
            if len({r if type(r) is int else id(r) for r in roots}) > 1:
                for d in sizes:
                    bind_dim(d)


def _dims_by_slot(eqns, run, offset):
    """For each operand/result axis of the body's equation at `offset`, its
    size in every repetition."""
    reps = [eqns[run.start + j * run.period + offset] for j in range(run.trips)]
    for slot in range(len(reps[0].inputs) + len(reps[0].outputs)):
        atoms = [(list(e.inputs) + list(e.outputs))[slot] for e in reps]
        for axis in range(atoms[0].aval.ndim):
            yield [a.aval.shape[axis] for a in atoms]


def _hashable(value):
    if isinstance(value, tuple):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, (np.ndarray, np.generic)):
        return ("array", np.asarray(value).tobytes(), np.asarray(value).dtype.str)
    try:
        hash(value)
    except TypeError:
        return ("id", id(value))
    return value


def _program_key(program: Program, keys: dict) -> str:
    if id(program) not in keys:
        keys[id(program)] = pretty(program)
    return keys[id(program)]


def _candidate_periods(sigs: list) -> list[int]:
    """Distances between consecutive occurrences of the same equation, shortest
    first (inner loops roll first; the body's length shows up for each of its ops)."""
    last: dict = {}
    distances: Counter = Counter()
    for k, sig in enumerate(sigs):
        if sig in last:
            distances[k - last[sig]] += 1
        last[sig] = k
    return sorted(d for d, n in distances.items() if n >= MIN_TRIPS - 1)


def _windows(sigs: list, period: int) -> list[tuple[int, int]]:
    """Maximal windows [a, b) in which every signature equals the one a period on."""
    out, start = [], None
    for k in range(len(sigs) - period):
        if sigs[k] == sigs[k + period]:
            start = k if start is None else start
        elif start is not None:
            out.append((start, k + period))
            start = None
    if start is not None:
        out.append((start, len(sigs)))
    return [(a, b) for a, b in out if b - a >= MIN_TRIPS * period]


# ------------------------------------------------------------- analysis

@dataclass
class Run:
    """A block of `trips` repetitions of `period` equations starting at `start`."""

    start: int
    period: int
    trips: int
    # per body slot (eqn offset, operand index) -> how the slot is fed
    slots: dict = field(default_factory=dict)
    carries: list = field(default_factory=list)  # (source offset, output index, init atom)
    invariants: list = field(default_factory=list)  # atoms from before the block
    stacked: list = field(default_factory=list)  # per-step operands: ("values", [atoms]) / rows
    outputs: dict = field(default_factory=dict)  # (offset, out index) -> repetitions used later

    @property
    def end(self) -> int:
        return self.start + self.period * self.trips


def _analyse(eqns, start: int, period: int, trips: int, defined_at: dict,
             last_use: dict) -> Run | None:
    run = Run(start, period, trips)
    end = run.end
    carry_index: dict = {}
    invariant_index: dict = {}
    for offset in range(period):
        for m in range(len(eqns[start + offset].inputs)):
            feeds = [eqns[start + j * period + offset].inputs[m] for j in range(trips)]
            kind = _slot(run, feeds, defined_at, start, end, period, offset, carry_index,
                         invariant_index)
            if kind is None:
                return None
            run.slots[offset, m] = kind
        if not _params_agree(run, eqns, offset):
            return None
    for offset in range(period):
        for o, _ in enumerate(eqns[start + offset].outputs):
            used = [j for j in range(trips)
                    if last_use.get(id(eqns[start + j * period + offset].outputs[o]), -1) >= end]
            if used:
                run.outputs[offset, o] = used
    return run


def _slot(run, feeds, defined_at, start, end, period, offset, carry_index, invariant_index):
    """Classify one operand slot over the repetitions (None: not regular)."""
    where = [defined_at.get(id(a)) if isinstance(a, Var) else None for a in feeds]
    inside = [w is not None and start <= w[0] < end for w in where]
    if all(inside):  # from this repetition
        rel = {((w[0] - start) - j * period, w[1]) for j, w in enumerate(where)}
        if len(rel) == 1:
            (rel_offset, o), = rel
            if 0 <= rel_offset < offset:
                return ("body", rel_offset, o)
    if not inside[0] and all(inside[1:]):  # from the previous repetition: a carry
        rel = {((w[0] - start) - (j - 1) * period, w[1]) for j, w in enumerate(where) if j}
        if len(rel) == 1:
            (src, o), = rel
            if 0 <= src < period:
                key = (src, o)
                if key not in carry_index:
                    carry_index[key] = len(run.carries)
                    run.carries.append((src, o, feeds[0]))
                elif run.carries[carry_index[key]][2] is not feeds[0] and not _same_literal(
                        run.carries[carry_index[key]][2], feeds[0]):
                    return None
                return ("carry", carry_index[key])
    if any(inside):
        return None
    first = feeds[0]
    if all(a is first or _same_literal(a, first) for a in feeds):  # the same outside value
        key = ("lit", _hashable(first.value.item()), first.aval.dtype.str) if isinstance(
            first, Literal) else id(first)
        if isinstance(first, Literal):
            return ("literal", first)
        if key not in invariant_index:
            invariant_index[key] = len(run.invariants)
            run.invariants.append(first)
        return ("invariant", invariant_index[key])
    if all(isinstance(a, Var) for a in feeds) or all(isinstance(a, Literal) for a in feeds):
        run.stacked.append(("values", feeds))  # one outside value per repetition
        return ("stacked", len(run.stacked) - 1)
    return None


def _same_literal(a, b) -> bool:
    return (isinstance(a, Literal) and isinstance(b, Literal) and a.aval.dtype == b.aval.dtype
            and bool(np.all(a.value == b.value)) and np.signbit(a.value) == np.signbit(b.value))


def _params_agree(run: Run, eqns, offset: int) -> bool:
    """Parameters must be equal, except a row slice moving by one row a step."""
    first = eqns[run.start + offset]
    others = [eqns[run.start + j * run.period + offset] for j in range(1, run.trips)]
    if all(e.params == first.params for e in others):
        return True
    if any(programs_in(p) for p in first.params.values()):
        # loop bodies are compared by identity: equal ones (an inner loop rolled in
        # every repetition of an outer one) agree when they print the same
        keys: dict = {}
        return all(_signature(e, keys) == _signature(first, keys)
                   and _body_values(e) == _body_values(first) for e in others)
    if first.prim.name != "slice" or run.slots.get((offset, 0), ("",))[0] != "invariant":
        return False
    rows = _row_slices([eqns[run.start + j * run.period + offset] for j in range(run.trips)])
    if rows is None:
        return False
    run.slots[offset, "rows"] = rows
    return True


def _body_values(eqn) -> list:
    """What the printed form of an equation's sub-programs leaves out or abbreviates:
    their constants and array parameters, by value."""
    out: list = []
    for param in eqn.params.values():
        for sub in programs_in(param):
            out.extend(_hashable(c) for c in sub.consts)
            for inner in sub.eqns:
                out.extend(_hashable(v) for v in inner.params.values() if not programs_in(v))
                out.extend(_body_values(inner))
    return out


def _row_slices(eqns) -> tuple | None:
    """(axis, first row, step) when the slices take one row of one axis each,
    moving by a constant step; None otherwise."""
    first = eqns[0].params
    moving = [a for a in range(len(first["starts"]))
              if len({e.params["starts"][a] for e in eqns}) > 1]
    if len(moving) != 1:
        return None
    (axis,) = moving
    starts = [e.params["starts"][axis] for e in eqns]
    step = starts[1] - starts[0]
    for e, s in zip(eqns, starts):
        p = e.params
        if p["stops"][axis] != s + 1 or p["steps"][axis] != 1:
            return None
        if any(p[k][a] != first[k][a] for k in ("starts", "stops", "steps")
               for a in range(len(p["starts"])) if a != axis):
            return None
    if step <= 0 or any(b - a != step for a, b in zip(starts, starts[1:])):
        return None
    return axis, starts[0], step


def _worth_rolling(eqns, start: int, period: int) -> bool:
    """Elementwise-only blocks fuse into one nest unrolled: leave them."""
    return any(eqns[start + k].prim.kind not in (ELEMENTWISE, INDEXMAP) for k in range(period))


def find_runs(program: Program) -> list[Run]:
    eqns = program.eqns
    keys: dict = {}
    sigs = [_signature(e, keys) for e in eqns]
    defined_at = {id(v): (k, o) for k, e in enumerate(eqns) for o, v in enumerate(e.outputs)}
    last_use = _last_uses(program)
    taken = [False] * len(eqns)
    runs = []
    for period in _candidate_periods(sigs):
        for a, b in _windows(sigs, period):
            run = _best_run(eqns, a, b, period, taken, defined_at, last_use)
            if run is not None:
                runs.append(run)
                for k in range(run.start, run.end):
                    taken[k] = True
    return sorted(runs, key=lambda r: r.start)


def _last_uses(program: Program) -> dict:
    """Where each value is last read: an equation index, or len(eqns) for outputs."""
    last: dict = {}
    for k, e in enumerate(program.eqns):
        for a in e.inputs:
            if isinstance(a, Var):
                last[id(a)] = k
    for a in program.outvars:
        if isinstance(a, Var):
            last[id(a)] = len(program.eqns)
    return last


def _best_run(eqns, a, b, period, taken, defined_at, last_use) -> Run | None:
    for start in range(a, a + period):  # the body may start anywhere in the window
        trips = (b - start) // period
        end = start + trips * period
        if trips < MIN_TRIPS or any(taken[start:end]) or not _worth_rolling(eqns, start, period):
            continue
        run = _analyse(eqns, start, period, trips, defined_at, last_use)
        if run is not None:
            return run
    return None


# ------------------------------------------------------------- rewriting

def roll_loops(program: Program) -> Program:
    """The program with each regular repeated block rewritten as a scan,
    innermost first (a rolled inner loop makes the outer repetitions equal)."""
    for _ in range(8):  # nesting depth
        runs = find_runs(program)
        if not runs:
            return program
        program = _rewrite(program, runs)
    return program


def _rewrite(program: Program, runs: list[Run]) -> Program:
    builder = Builder(program.name)
    builder.checks = program.checks
    by_start = {r.start: r for r in runs}
    with builder:
        env: dict = {}
        for var in program.invars:
            env[id(var)] = builder.new_input(var.aval)
        for var, value in zip(program.constvars, program.consts):
            env[id(var)] = value

        def read(atom):
            return atom.value if isinstance(atom, Literal) else env[id(atom)]

        k = 0
        while k < len(program.eqns):
            run = by_start.get(k)
            if run is None:
                eqn = program.eqns[k]
                with located(eqn.location):
                    store(env, eqn, bind(eqn.prim, *[read(a) for a in eqn.inputs], **eqn.params))
                k += 1
                continue
            _emit_scan(program.eqns, run, env, read)
            k = run.end
        return builder.program([read(a) for a in program.outvars])


def _emit_scan(eqns, run: Run, env: dict, read) -> None:
    _unify(eqns, run)
    body_eqns = eqns[run.start:run.start + run.period]
    location = body_eqns[0].location
    log.info("tracejit: rolled %d iterations of a %d-equation loop body at %s", run.trips,
             run.period, location)
    with located(location):
        invariants = [read(a) for a in run.invariants]
        carry_types = [body_eqns[src].outputs[o].aval for src, o, _ in run.carries]
        inits = [_init(read, init, aval) for (_, _, init), aval in zip(run.carries, carry_types)]
        rows = {key[0]: value for key, value in run.slots.items() if key[1] == "rows"}
        xs, x_avals = [], []
        for _, feeds in run.stacked:
            stack = _stack([read(a) for a in feeds])
            xs.append(stack)
            x_avals.append(AVal(tuple(ops.aval_of(stack).shape[1:]), ops.aval_of(stack).dtype))
        row_inputs = {}
        for offset, (axis, first, step) in rows.items():
            source = invariants[run.slots[offset, 0][1]]
            row_inputs[offset] = len(xs)
            taken = _rows(source, body_eqns[offset].params, axis, first, step, run.trips)
            xs.append(taken)
            x_avals.append(AVal(tuple(ops.aval_of(taken).shape[1:]), ops.aval_of(taken).dtype))
        n_inv, n_carry = len(invariants), len(inits)
        ys_wanted = [key for key, used in run.outputs.items() if not _carried_out(run, key)]
        finals = [key for key, used in run.outputs.items() if _carried_out(run, key)]

        def step(*ins):
            inv, carry, x = ins[:n_inv], ins[n_inv:n_inv + n_carry], ins[n_inv + n_carry:]
            local: dict = {}
            for offset, eqn in enumerate(body_eqns):
                args = [_feed(run, offset, m, a, inv, carry, x, local)
                        for m, a in enumerate(eqn.inputs)]
                params = eqn.params
                if offset in rows:
                    axis = rows[offset][0]
                    value = ops.expand_dims(x[row_inputs[offset]], (axis,))
                    local[offset, 0] = value
                    continue
                with located(eqn.location):
                    result = bind(eqn.prim, *args, **params)
                for o, value in enumerate(result if eqn.prim.multiple_results else [result]):
                    local[offset, o] = value
            new_carry = [local[src, o] for src, o, _ in run.carries]
            return new_carry + [local[key] for key in ys_wanted]

        carry_avals = [AVal(tuple(a.shape), a.dtype) for a in carry_types]
        body, captured, _ = trace_closed(step, [ops.aval_of(v) for v in invariants]
                                         + carry_avals + x_avals, "loop_body")
        outs = cf.scan_bind(captured + invariants, inits, xs, body, run.trips, False)
    finals_out = {(src, o): outs[c] for c, (src, o, _) in enumerate(run.carries)}
    last = run.trips - 1
    for key in finals:
        _set(env, eqns, run, key, last, finals_out[key])
    for n, key in enumerate(ys_wanted):
        stacked = outs[n_carry + n]
        for j in run.outputs[key]:
            _set(env, eqns, run, key, j, _row(stacked, j))


def _carried_out(run: Run, key) -> bool:
    """An output used after the block only from the last repetition, and carried."""
    return run.outputs[key] == [run.trips - 1] and any(
        (src, o) == key for src, o, _ in run.carries)


def _set(env, eqns, run: Run, key, j, value) -> None:
    offset, o = key
    env[id(eqns[run.start + j * run.period + offset].outputs[o])] = value


def _feed(run, offset, m, atom, inv, carry, x, local):
    kind = run.slots[offset, m]
    if kind[0] == "body":
        return local[kind[1], kind[2]]
    if kind[0] == "carry":
        return carry[kind[1]]
    if kind[0] == "invariant":
        return inv[kind[1]]
    if kind[0] == "stacked":
        return x[kind[1]]
    return kind[1].value  # a literal


def _init(read, init, aval):
    value = read(init)
    if ops.aval_of(value).dtype != aval.dtype:
        value = ops.convert(value, aval.dtype)
    return value


def _stack(values):
    from ..numpy.api import stack

    return stack(values)


def _rows(x, params, axis: int, first: int, step: int, trips: int):
    """The rows the repetitions slice (first, first + step, ... along `axis`,
    the other axes as the slice takes them), `axis` moved to the front."""
    n = ops.aval_of(x).ndim
    stop = first + step * (trips - 1) + 1
    whole = first == 0 and step == 1 and stop == resolve(ops.aval_of(x).shape[axis])
    starts = tuple(first if a == axis else params["starts"][a] for a in range(n))
    stops = tuple((None if whole else stop) if a == axis else params["stops"][a]
                  for a in range(n))
    steps = tuple(step if a == axis else params["steps"][a] for a in range(n))
    taken = ops.static_slice(x, starts, stops, steps, normalized=True)
    if axis:
        taken = ops.transpose(taken, (axis,) + tuple(a for a in range(n) if a != axis))
    return taken


def _row(stacked, j: int):
    n = ops.aval_of(stacked).ndim
    starts = (j,) + (0,) * (n - 1)
    stops = (j + 1,) + (None,) * (n - 1)
    taken = ops.static_slice(stacked, starts, stops, (1,) * n, normalized=True)
    return ops.squeeze(taken, (0,))


__all__ = ["find_runs", "roll_loops"]
