"""Rematerialisation: a cheap value that a later loop nest reads is computed again
there instead of stored by the nest that made it.

A nest stores every value that another nest reads. When that value is a short chain of
cheap elementwise operations (a comparison, a conversion, a select, ...) of arrays that
are stored anyway, the reading nest can compute it again from them: the first nest
writes nothing for it, and the second reads those arrays instead. It pays when they
take fewer bytes per element than the value's write and its read did. Max pooling's
gradient is the case: its ties mask `convert(x == max)` (float32) is recomputed from
`x` and the window's max, and one full-size array is neither written nor read back.
A relu's boolean mask stays stored: recomputing it would read a float32 array for a
one-byte mask.

`rematerialised` rewrites the program that codegen then schedules again; each copy
must land in its reader's nest, or the program is kept as it was.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..core.ir import Program, Var, consumers_of
from ..core.shapes import concrete_shape
from ..trace.registry import ELEMENTWISE
from .schedule import source

CHEAP = frozenset({"eq", "ne", "lt", "le", "gt", "ge", "convert", "select", "logical_and",
                   "logical_or", "logical_not", "neg", "add", "sub", "mul", "maximum",
                   "minimum"})
LONGEST_CHAIN = 3  # equations copied for one value at most
FEWEST_ELEMENTS = 1 << 16  # smaller values (their traced sizes): no bandwidth to save


def rematerialised(program: Program, groups, virtual: dict, views: set):
    """The program with each worthwhile value's chain copied in front of its readers
    in other nests, and the ids of the copies (None when there is none)."""
    group_of = _nests_of(groups)
    consumers = consumers_of(program)
    returned = {id(a) for a in program.outvars if isinstance(a, Var)}
    made_by = {id(v): e for e in program.eqns for v in e.outputs}
    copies: dict[int, list] = {}  # id(reader) -> the chains copied in front of it
    for group in groups:
        if not group.is_loop:
            continue
        for eqn in group.eqns:
            readers = _outside_readers(eqn, group, consumers, group_of, views, returned)
            chain = readers and _chain(eqn, group, group_of, made_by, virtual)
            if chain and _pays(eqn, chain, virtual):
                for reader in readers:
                    copies.setdefault(id(reader), []).append(chain)
    return _rewritten(program, copies) if copies else None


def landed(copied: Program, copies: frozenset, groups) -> bool:
    """Did every copy join the nest of the equation that reads it?"""
    group_of = _nests_of(groups)
    made = {id(v) for e in copied.eqns if id(e) in copies for v in e.outputs}
    return all(group_of.get(id(atom)) is group_of.get(id(eqn.outputs[0]))
               for eqn in copied.eqns for atom in eqn.inputs if id(atom) in made)


def _nests_of(groups) -> dict:
    """id(value) -> the group (nest) that computes it."""
    return {id(v): g for g in groups for e in g.eqns for v in e.outputs}


def _outside_readers(eqn, group, consumers, group_of, views, returned) -> list:
    """The equations of other loop nests that read `eqn`'s value, if only such do."""
    if eqn.prim.kind != ELEMENTWISE or eqn.prim.name not in CHEAP or len(eqn.outputs) != 1:
        return []
    out = eqn.outputs[0]
    if (id(out) in returned or id(out) in group.prologue
            or _elements(out.aval.shape) < FEWEST_ELEMENTS):
        return []
    readers = [u for u in consumers.get(id(out), []) if group_of.get(id(u.outputs[0])) is not group]
    if any(id(u) in views or u.prim.kind != ELEMENTWISE
           or not getattr(group_of.get(id(u.outputs[0])), "is_loop", False) for u in readers):
        return []
    return readers


def _chain(eqn, group, group_of, made_by, virtual) -> list | None:
    """`eqn` and the cheap equations of its nest it needs, in program order, when
    everything else they read is stored (None otherwise)."""
    chain, todo = [], [eqn]
    while todo:
        current = todo.pop()
        if any(e is current for e in chain):
            continue
        if (current.prim.kind != ELEMENTWISE or current.prim.name not in CHEAP
                or len(chain) == LONGEST_CHAIN):
            return None
        chain.append(current)
        for atom in current.inputs:
            if not isinstance(atom, Var) or group_of.get(id(source(atom, virtual))) is not group:
                continue  # a literal, or stored by another nest
            if atom is not source(atom, virtual):
                return None  # read through an index map from this nest's own values
            todo.append(made_by[id(atom)])
    order = {id(e): k for k, e in enumerate(group.eqns)}
    return sorted(chain, key=lambda e: order[id(e)])


def _pays(eqn, chain, virtual) -> bool:
    """Do the arrays the copy reads take at most the bytes per element of writing the
    value and reading it back?"""
    out = eqn.outputs[0].aval
    made = {id(v) for e in chain for v in e.outputs}
    read = {id(a): a for e in chain for a in e.inputs if isinstance(a, Var) and id(a) not in made}
    size = _elements(out.shape)
    cost = 0.0
    for atom in read.values():
        stored = source(atom, virtual)
        cost += np.dtype(stored.aval.dtype).itemsize * _elements(stored.aval.shape) / size
    return cost <= 2 * np.dtype(out.dtype).itemsize


def _elements(shape) -> int:
    return max(math.prod(concrete_shape(shape)), 1)


def _rewritten(program: Program, copies: dict):
    """Each reader preceded by fresh copies of its chains, reading their values; and
    the ids of those copies."""
    eqns, copied = [], set()
    for eqn in program.eqns:
        renamed = {}
        for chain in copies.get(id(eqn), ()):
            for original in chain:
                outputs = [Var(v.aval) for v in original.outputs]
                inputs = [renamed.get(id(a), a) if isinstance(a, Var) else a
                          for a in original.inputs]
                eqns.append(dataclasses.replace(original, inputs=inputs, outputs=outputs))
                copied.add(id(eqns[-1]))
                renamed.update({id(v): w for v, w in zip(original.outputs, outputs)})
        if renamed:
            eqn = dataclasses.replace(eqn, inputs=[renamed.get(id(a), a) if isinstance(a, Var)
                                                   else a for a in eqn.inputs])
        eqns.append(eqn)
    return dataclasses.replace(program, eqns=eqns), frozenset(copied)


__all__ = ["landed", "rematerialised"]
