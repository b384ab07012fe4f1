"""Scheduling: a Program's equations grouped into loop nests, in an order.

- Elementwise and index-moving equations over the same iteration space fuse
  into one nest (unit axes do not count, so (n, 1) and (n,) share it); their
  intermediate values are scalar locals, never arrays.
- A reduction joins the nest over its input and accumulates there; work on
  its result (a row's mean, its log) runs as an epilogue after the inner
  loop that completed it; scalar work that needs nothing from the loops runs
  before them (a prologue).
- Index maps whose consumers are all loop nests are never stored: readers
  index their operand through the map (`virtual_reads`).
- Array ops (matmul, gather, ...) and control flow stand alone.

Fusion follows dataflow only: a nest grows by the consumers of what it
computes, never by unrelated equations that happen to share its space, so
the structure of the program (one nest per layer, per time step) survives
into the kernel, where identical nests become one shared function. The list
scheduler keeps a ready queue with dependency counts: linear in the program.
"""

from __future__ import annotations

import heapq
from collections import deque

from ..core.ir import Program, Var, consumers_of
from ..core.shapes import is_one, resolve
from ..trace.registry import ARRAY, ELEMENTWISE, INDEXMAP, REDUCE


class Group:
    """One loop nest (or one standalone equation when `space` is None)."""

    def __init__(self, space: tuple | None, first, virtual: dict):
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
        level = len(loop_space(eqn))
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
        return (bool(self.space) and not loop_space(eqn) and eqn.prim.kind != REDUCE
                and not any(id(a) in self.members and id(a) not in self.prologue
                            for a in (source(x, self.virtual) for x in eqn.inputs)))

    @property
    def is_loop(self) -> bool:
        return self.space is not None


def full_shape(eqn) -> tuple:
    """The shape an equation iterates over: its output, or a reduction's input."""
    aval = eqn.inputs[0].aval if eqn.prim.kind == REDUCE else eqn.outputs[0].aval
    return tuple(map(resolve, aval.shape))


def loop_space(eqn) -> tuple | None:
    """The loop space: the iterated shape without unit axes (so (n, 1) and (n,)
    share one nest), or None for equations that stand alone."""
    if eqn.prim.kind not in (ELEMENTWISE, INDEXMAP, REDUCE):
        return None
    return tuple(d for d in full_shape(eqn) if not is_one(d))


def _fits(group: Group, eqn, produced: dict, virtual: dict) -> bool:
    """Can `eqn` join the nest: in its innermost body (same space), or as an
    epilogue after loop `level` ends (its space is a prefix of the nest's)?"""
    space = loop_space(eqn)
    if not group.is_loop or space is None or space != group.space[:len(space)]:
        return False
    level = len(space)
    for atom in eqn.inputs:
        atom = source(atom, virtual)
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
    shape = full_shape(eqn)
    loops = [k for k in range(len(shape)) if not is_one(shape[k])]
    kept = [pos for pos, k in enumerate(loops) if k not in eqn.params["axes"]]
    return len(kept) if kept == list(range(len(kept))) else -1


def _same_element(eqn) -> bool:
    """An index map that reads the element at the same loop position (it only
    adds or drops unit axes), so it can read a value computed in the nest."""
    (x,) = eqn.inputs
    out = eqn.outputs[0].aval
    mapping = eqn.prim.index_map(x.aval, out, **eqn.params)
    targets = [m for m, d in zip(mapping, x.aval.shape) if not is_one(resolve(d))]
    if any(axis is None or (start, step) != (0, 1) for axis, start, step in targets):
        return False
    out_axes = [k for k, d in enumerate(out.shape) if not is_one(resolve(d))]
    return [axis for axis, _, _ in targets] == out_axes


def source(atom, virtual: dict):
    """The stored value a virtual (read-through) variable reads from."""
    while isinstance(atom, Var) and id(atom) in virtual:
        atom = virtual[id(atom)].inputs[0]
    return atom


FUSABLE = (ELEMENTWISE, INDEXMAP, REDUCE)
PULL_DEPTH = 8  # how far back a nest looks for the other inputs of its consumers


def _is_scalar_work(eqn) -> bool:
    return eqn.prim.kind == ELEMENTWISE and not loop_space(eqn)


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
        if eqn.prim.kind not in (ELEMENTWISE, INDEXMAP) or id(eqn) in views or out.aval.ndim == 0:
            stored.update(id(v) for v in eqn.outputs)  # arrays, and scalars (plain locals)
            continue
        if eqn.prim.kind != INDEXMAP or id(out) in outputs:
            continue
        operand = eqn.inputs[0]
        readable = (not isinstance(operand, Var) or id(operand) in stored
                    or id(operand) in virtual)
        users = consumers.get(id(out), [])
        if readable and all(u.prim.kind in (ELEMENTWISE, INDEXMAP, REDUCE) and id(u) not in views
                            or u.prim.shape_only for u in users):
            virtual[id(out)] = eqn
    return virtual


def schedule(program: Program, views: set, virtual: dict,
             copies: frozenset = frozenset()) -> list[Group]:
    """List scheduling with a ready queue: keep adding ready consumers of the
    open nest that fit it; otherwise start a new group with the earliest
    ready equation (program order). Equations in `copies` (remat.py's)
    join only a nest that one of them began: the copies precede their reader, which
    then joins them."""
    eqns = [e for e in program.eqns if id(e.outputs[0]) not in virtual]
    order = {id(e): k for k, e in enumerate(eqns)}
    producer = {id(v): e for e in eqns for v in e.outputs}
    waiting: dict[int, int] = {}
    users: dict[int, list] = {}
    deps_of: dict[int, list] = {}
    for e in eqns:
        deps = {} if e.prim.shape_only else {
            id(producer[id(a)]): producer[id(a)] for a in (source(x, virtual) for x in e.inputs)
            if isinstance(a, Var) and id(a) in producer}
        waiting[id(e)] = len(deps)
        deps_of[id(e)] = list(deps.values())
        for d in deps:
            users.setdefault(d, []).append(e)
    # Size-only equations (mean's divisor) depend on input shapes alone: first.
    ready = [((not e.prim.shape_only, order[id(e)]), id(e), e) for e in eqns
             if waiting[id(e)] == 0]
    heapq.heapify(ready)
    # Ready scalar work may also join a nest as its prologue (1/n before the
    # loop that needs it): it is cheap, and it merges no loops.
    scalars = [item for item in ready if _is_scalar_work(item[2])]
    heapq.heapify(scalars)
    done: set[int] = set()
    produced: dict[int, Group] = {}
    groups: list[Group] = []
    current: Group | None = None
    candidates: deque = deque()
    wanted: deque = deque()  # the open nest's consumers still waiting for other inputs
    explored: set[int] = set()

    def finish(eqn, group: Group) -> None:
        done.add(id(eqn))
        for v in eqn.outputs:
            produced[id(v)] = group
        for user in users.get(id(eqn), ()):
            waiting[id(user)] -= 1
            if waiting[id(user)] == 0:
                item = ((True, order[id(user)]), id(user), user)
                heapq.heappush(ready, item)
                if _is_scalar_work(user):
                    heapq.heappush(scalars, item)
                candidates.append(user)
            elif user.prim.kind in FUSABLE:
                wanted.append(user)

    def _may_join(eqn) -> bool:
        return id(eqn) not in copies or id(current.eqns[0]) in copies

    def missing_input(eqn, depth: int):
        """A ready equation `eqn` waits for (directly or through a short chain)
        that fits the open nest: sibling chains meeting in a consumer fuse."""
        for dep in deps_of[id(eqn)]:
            if id(dep) in done or id(dep) in explored or id(dep) in views:
                continue
            if waiting[id(dep)] == 0:
                if _may_join(dep) and _fits(current, dep, produced, virtual):
                    return dep
            elif depth and dep.prim.kind in FUSABLE:
                explored.add(id(dep))
                found = missing_input(dep, depth - 1)
                if found is not None:
                    return found
        return None

    def next_fitting():
        while candidates:
            eqn = candidates.popleft()
            if (id(eqn) not in done and id(eqn) not in views and _may_join(eqn)
                    and _fits(current, eqn, produced, virtual)):
                return eqn
        while wanted and current.is_loop:
            found = missing_input(wanted[0], PULL_DEPTH)
            if found is not None:
                return found
            wanted.popleft()
        while scalars and current.is_loop:
            _, _, eqn = heapq.heappop(scalars)
            if id(eqn) not in done and _fits(current, eqn, produced, virtual):
                return eqn
        return None

    while len(done) < len(eqns):
        pick = next_fitting() if current is not None else None
        if pick is not None:
            current.add(pick)
            finish(pick, current)
            continue
        _, _, pick = heapq.heappop(ready)
        if id(pick) in done:
            continue
        space = None if id(pick) in views else loop_space(pick)
        current = Group(space, pick, virtual)
        groups.append(current)
        candidates.clear()
        wanted.clear()
        explored.clear()
        finish(pick, current)
        if space is None:
            current = None  # a standalone equation takes nothing else
    # The recursive closure refers to itself: break that cycle, freed without the gc.
    missing_input = _may_join = None  # noqa: F811
    return groups


__all__ = ["Group", "schedule", "virtual_reads", "full_shape", "loop_space", "source", "ARRAY"]
