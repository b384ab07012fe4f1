"""Why a function traced again, the `tracejit` logger, and the retrace warning.

Every trace gets a reason, worked out against the nearest signature the same
dispatcher traced before (the fewest differences; JAX's explain_cache_misses
does the same), naming every difference: a new dtype, a new rank, a new
broadcast pattern (an axis that is 1 or no longer 1), a static argument's
value, the argument structure, a size the code read as a Python int, or a
transformation object created anew for every call. Traces and compiles are logged (INFO) on the
standard `logging` logger "tracejit"; `TRACEJIT_LOG_COMPILES=1` prints them to
stderr. After RETRACE_LIMIT traces of one function a `RetraceWarning` names
the cause and the fix, once.
"""

from __future__ import annotations

import collections
import inspect
import logging
import os
import sys
import warnings
import weakref
from dataclasses import dataclass, field

import numpy as np

from ..core.ir import dtype_name

logger = logging.getLogger("tracejit")
RETRACE_LIMIT = 5  # traces of one function (or of one signature by new objects) before warning
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # tracejit/


class RetraceWarning(UserWarning):
    """A function keeps tracing again; the message names the cause and the fix."""


@dataclass(frozen=True)
class Reason:
    """Why a trace happened. `kind` is one of KINDS; `subject` names what changed
    (an argument path, a static argument) so that reasons can be counted."""

    kind: str
    text: str
    subject: str = ""
    values: tuple = field(default=(), compare=False)

    @property
    def fix(self) -> str:
        kind = self.kind
        if kind == "recreated" and self.subject.startswith(("tracejit.jvp(", "tracejit.vjp(")):
            kind = "called"  # a function-style transformation: nothing to hoist
        return FIXES[kind].format(subject=self.subject or "it")


FIXES = {
    "first": "",
    "recreated": "create it once, outside the loop (f = {subject}): every new object starts "
                 "with empty tables and traces again",
    "called": "decorate the function with @tracejit.function: {subject} of a plain Python "
              "function makes a new tracejit function, with empty tables, on every call",
    "size": "the kernel is specialised to every value of {subject} because the code reads it "
            "as a Python int (x.shape[k], len(x), x.size, or a reshape that merges axes); keep "
            "such reads out of the function (x.mean() rather than x.sum() / x.shape[0], reshape "
            "with -1) or pad inputs to a few fixed sizes",
    "dtype": "convert {subject} to one dtype before the call (e.g. x.astype(np.float32)); each "
             "dtype needs its own kernel",
    "rank": "pass {subject} with one rank (reshape it outside the function); each rank needs "
            "its own kernel",
    "broadcast": "an axis of size 1 broadcasts, so whether an axis is 1 is part of the "
                 "signature: avoid size-1 batches of {subject} (drop or pad the last partial "
                 "batch)",
    "static": "each value of a static argument is baked into its own kernel: pass {subject} as "
              "an ordinary argument (a runtime input) unless it changes the program's structure",
    "structure": "keep the nesting of tuples, lists and dicts of {subject} the same from call "
                 "to call",
    "type": "pass {subject} as the same kind of value every time (always a float, or always an "
            "array)",
}

KIND_PHRASES = {
    "recreated": "a new object for every call",
    "size": "sizes the code reads as Python ints",
    "dtype": "new dtypes",
    "rank": "new ranks",
    "broadcast": "new broadcast patterns (axes of size 1)",
    "static": "new values of a static argument",
    "structure": "new argument structures",
    "type": "new argument types",
}
# What the retraces of one cause had in common, `values` the values seen in order.
SUMMARIES = {
    "recreated": "new {subject} objects traced signatures that earlier ones had traced",
    "size": "{subject} took the sizes {values}",
    "dtype": "{subject} arrived as {values}",
    "rank": "{subject} arrived with ranks {values}",
    "broadcast": "{subject} arrived with the shapes {values}",
    "static": "the static argument {subject} took the values {values}",
    "structure": "{subject} changed structure",
    "type": "{subject} arrived as {values}",
}


# ----------------------------------------------------------------- reasons

class _History:
    """What one dispatcher traced: (abstract key, {(leaf, axis): size bound}) and why."""

    def __init__(self):
        self.signatures: list[tuple] = []
        self.reasons: list[Reason] = []
        self.warned = False


_histories: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class _Origin:
    """One user function under one transformation, across the objects made for it."""

    def __init__(self):
        self.signatures: set = set()  # abstract keys traced by any object
        self.recreated: list[Reason] = []  # traces of a known signature by a new object
        self.warned = False


# user function (its code, for plain functions) -> {(kind, argnums): _Origin}
_origins: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def reason_for(record) -> Reason:
    """Why `record` (events.TraceRecord) traces, from this dispatcher's history."""
    history = _histories.get(record.dispatcher)
    names = leaf_paths(record.dispatcher, record.abstract[0], record.statics)
    if history is None or not history.signatures:
        origin = _origin(record.dispatcher)
        if origin is not None and record.abstract in origin.signatures:
            kind = getattr(record.dispatcher, "kind", "function")
            fn_name = getattr(_user_function(record.dispatcher), "__name__", "fn")
            return Reason("recreated", f"a new tracejit.{kind}({fn_name}) object traced a "
                          "signature an earlier one already traced", f"tracejit.{kind}({fn_name})")
        return Reason("first", "first call")
    same = [sizes for abstract, sizes in history.signatures if abstract == record.abstract]
    if same:
        return _size_reason(same[-1], record.leaves, names)
    # Against the nearest earlier signature (fewest differences; one of another
    # structure is farthest; the latest on ties), naming everything that changed.
    candidates = [_differences(record.abstract, old, names)
                  for old, _ in reversed(history.signatures)]
    found = min(candidates, key=lambda d: (d[0].kind == "structure", len(d)))
    first = found[0]
    return Reason(first.kind, "; ".join(r.text for r in found), first.subject, first.values)


def _size_reason(bound: dict, leaves: list, names: list) -> Reason:
    for (leaf, axis), old in bound.items():
        new = np.shape(leaves[leaf])[axis]
        if new != old:
            subject = f"{_name(names, leaf)}.shape[{axis}]"
            return Reason("size", f"{subject} is {new}; the code read it as a Python int when "
                          f"it was {old}", subject, (old, new))
    return Reason("size", "a size the code read as a Python int changed", "a size")


def _differences(new: tuple, old: tuple, names: list) -> list[Reason]:
    if new[0] != old[0] or len(new) != len(old):
        return [Reason("structure", "the arguments have a new structure", "the arguments")]
    found = _static_differences(new[1], old[1])
    for k, (a, b) in enumerate(zip(new[2:], old[2:])):
        if a != b:
            found += _leaf_differences(_name(names, k), a, b)
    return found or [Reason("structure", "a new signature", "the arguments")]


def _name(names: list, leaf: int) -> str:
    return names[leaf] if leaf < len(names) else f"argument leaf {leaf}"


def _static_differences(new: tuple, old: tuple) -> list[Reason]:
    new_values, old_values = dict(new[1:]), dict(old[1:])
    return [Reason("static", f"static argument {name} = {value!r} (was "
                   f"{old_values.get(name, '<unset>')!r})", name,
                   (repr(old_values.get(name, "<unset>")), repr(value)))
            for name, value in new_values.items() if old_values.get(name, _UNSET) != value]


_UNSET = object()


def _leaf_differences(path: str, new, old) -> list[Reason]:
    """Every way one argument leaf changed: dtype, number of dimensions, unit axes."""
    if not (_is_array(new) and _is_array(old)):
        return [Reason("type", f"{path} is {_describe(new)} (was {_describe(old)})", path,
                       (_describe(old), _describe(new)))]
    (dtype, units), (old_dtype, old_units) = new, old
    found = []
    if dtype != old_dtype:
        found.append(Reason("dtype", f"{path} is {dtype} (was {old_dtype})", path,
                            (str(old_dtype), str(dtype))))
    if len(units) != len(old_units):
        found.append(Reason("rank", f"{path} has {_dimensions(len(units))} (was "
                            f"{len(old_units)})", path, (len(old_units), len(units))))
    axes = [k for k, (u, v) in enumerate(zip(units, old_units)) if u != v]
    if axes and len(units) == len(old_units):
        said = ", ".join(f"axis {k} {'has size 1' if units[k] else 'is no longer 1'}"
                         for k in axes)
        found.append(Reason("broadcast", f"{path}: {said}", path,
                            (_unit_pattern(old_units), _unit_pattern(units))))
    return found


def _dimensions(count: int) -> str:
    return f"{count} dimension{'' if count == 1 else 's'}"


def _unit_pattern(units: tuple) -> str:
    return "(" + ", ".join("1" if unit else "n" for unit in units) + ")"


def _is_array(sig) -> bool:
    return isinstance(sig, tuple) and len(sig) == 2 and isinstance(sig[1], tuple)


def _describe(sig) -> str:
    if _is_array(sig):
        return f"a {sig[0]} array of rank {len(sig[1])}"
    if isinstance(sig, tuple) and len(sig) == 1:
        return f"a NumPy {sig[0]} scalar"
    if isinstance(sig, type):
        return f"a Python {sig.__name__}"
    return f"a {sig[-1].__name__}" if isinstance(sig, tuple) else str(sig)


# ----------------------------------------------------------------- names

def _user_function(dispatcher):
    return getattr(getattr(dispatcher, "fun", dispatcher), "fn", None)


def _origin(dispatcher) -> _Origin | None:
    """What all objects made for this dispatcher's user function traced. A
    function with no closure and no defaults is known by its code, so that a
    lambda written inside a loop is one function; any other by its identity
    (its captured values may change the program)."""
    fn = _user_function(dispatcher)
    if not inspect.isfunction(fn):
        return None
    plain = not (fn.__closure__ or fn.__defaults__ or fn.__kwdefaults__)
    table = _origins.setdefault(fn.__code__ if plain else fn, {})
    kind = (getattr(dispatcher, "kind", "function"), repr(getattr(dispatcher, "argnums", None)))
    return table.setdefault(kind, _Origin())


def leaf_paths(dispatcher, treedef: tuple, statics: tuple) -> list[str]:
    """A readable path per argument leaf: `x`, `params[0][1]`, `params['W']`."""
    names = _parameter_names(dispatcher, statics)
    if treedef[0] != "t":
        return _paths(treedef, "args")
    children = treedef[1]
    if statics and len(children) == 2 and children[1][0] == "d":  # (positional, keywords)
        positional, keywords = children
        paths = [p for i, child in enumerate(positional[1])
                 for p in _paths(child, names[i] if i < len(names) else f"args[{i}]")]
        return paths + [p for key, child in zip(keywords[1], keywords[2])
                        for p in _paths(child, str(key))]
    return [p for i, child in enumerate(children)
            for p in _paths(child, names[i] if i < len(names) else f"args[{i}]")]


def _parameter_names(dispatcher, statics: tuple) -> list[str]:
    if getattr(dispatcher, "kind", None) == "jvp":
        return ["primals", "tangents"]
    signature = getattr(getattr(dispatcher, "fun", dispatcher), "_signature", None)
    if signature is None:
        return []
    static = dict(statics[1:]) if statics else {}
    return [name for name, p in signature.parameters.items()
            if name not in static and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def _paths(treedef: tuple, prefix: str) -> list[str]:
    tag = treedef[0]
    if tag == "*":
        return [prefix]
    if tag is None:
        return []
    if tag == "d":
        return [p for key, child in zip(treedef[1], treedef[2])
                for p in _paths(child, f"{prefix}[{key!r}]")]
    return [p for i, child in enumerate(treedef[1]) for p in _paths(child, f"{prefix}[{i}]")]


def signature_text(record) -> str:
    """The traced call's argument types, nested as the arguments are:
    `((f64[10,5], f64[5]), f64[32,10]), n=3`."""
    texts = iter([_leaf_text(leaf) for leaf in record.leaves])
    treedef = record.abstract[0]
    if not record.statics:
        return _tree_text(treedef, texts)
    (_, positional), (_, keys, keywords) = treedef[1]  # the split form: (args, kwargs)
    parts = [_tree_text(child, texts, False) for child in positional]
    parts += [f"{key}={_tree_text(child, texts, False)}" for key, child in zip(keys, keywords)]
    parts += [f"{name}={value!r}" for name, value in record.statics[1:]]
    return "(" + ", ".join(parts) + ")"


def _leaf_text(leaf) -> str:
    if isinstance(leaf, (np.ndarray, np.generic)):
        shape = ",".join(str(d) for d in np.shape(leaf))
        return f"{dtype_name(leaf.dtype)}[{shape}]" if isinstance(leaf, np.ndarray) else \
            dtype_name(leaf.dtype)
    return type(leaf).__name__


def _tree_text(treedef: tuple, texts, top: bool = True) -> str:
    tag = treedef[0]
    if tag == "*":
        return next(texts)
    if tag is None:
        return "None"
    if tag == "d":
        inner = ", ".join(f"{k!r}: {_tree_text(c, texts, False)}"
                          for k, c in zip(treedef[1], treedef[2]))
        return "{" + inner + "}"
    inner = ", ".join(_tree_text(c, texts, False) for c in treedef[1])
    if top and tag == "t":
        return f"({inner})"
    return f"[{inner}]" if tag == "l" else f"({inner}{',' if len(treedef[1]) == 1 else ''})"


# ----------------------------------------------------------------- events

def traced(record) -> None:
    """A trace finished (events.prepared): remember it, log it, warn on retraces."""
    history = _histories.get(record.dispatcher)
    if history is None:
        history = _histories[record.dispatcher] = _History()
    bound = {(leaf, axis): np.shape(record.leaves[leaf])[axis]
             for leaf, axis in getattr(record.entry, "bound_axes", ())}
    history.signatures.append((record.abstract, bound))
    history.reasons.append(record.reason)
    origin = _origin(record.dispatcher)
    if origin is not None:
        origin.signatures.add(record.abstract)
        if record.reason.kind == "recreated":
            origin.recreated.append(record.reason)
    if logger.isEnabledFor(logging.INFO):
        logger.info("trace %s%s: %s; trace %.1f ms, passes %.1f ms, IR %d -> %d equations",
                    record.dispatcher.name, signature_text(record), record.reason.text,
                    (record.traced - record.start) * 1e3, (record.end - record.traced) * 1e3,
                    len(record.program.eqns), len(record.optimized.eqns))
    _maybe_warn(record, history, origin)


def compiled(record) -> None:
    """A compile finished or failed (events.compile_end / compile_failed)."""
    level = logging.DEBUG if record.source == "memory" else logging.INFO
    if not logger.isEnabledFor(level):
        return
    seconds = record.end - record.start
    where = f" on thread {record.thread[2]}" if record.thread[2] != "MainThread" else ""
    if record.error is not None:
        logger.warning("compile %s failed after %.2f s%s: %s", record.kernel.name, seconds,
                       where, record.error)
        return
    phases = ", ".join(f"{name} {t:.2f} s" for name, t in record.phases.items() if t >= 0.005)
    if record.worker_seconds is not None:
        where = f" in the compile worker process ({record.worker_seconds:.2f} s there)"
    logger.log(level, "compile %s: %s in %.2f s%s%s", record.kernel.name,
               SOURCE_PHRASES.get(record.source, record.source), seconds,
               f" (Numba: {phases})" if phases else "", where)


SOURCE_PHRASES = {"compiled": "compiled by Numba", "disk": "loaded from Numba's disk cache",
                  "memory": "machine code already in memory"}


def _maybe_warn(record, history: _History, origin: _Origin | None) -> None:
    if record.reason.kind == "recreated" and len(origin.recreated) + 1 >= RETRACE_LIMIT \
            and not origin.warned:
        origin.warned = True
        _warn(retrace_message(record.dispatcher.name, len(origin.recreated) + 1,
                              origin.recreated))
    elif len(history.signatures) >= RETRACE_LIMIT and not history.warned:
        history.warned = True
        _warn(retrace_message(record.dispatcher.name, len(history.signatures),
                              history.reasons[1:]))


def retrace_message(name: str, traces: int, retraces: list[Reason]) -> str:
    """The warning's text: how often, the commonest cause and what it changed, the fix."""
    counts = collections.Counter((r.kind, r.subject) for r in retraces)
    (kind, subject), count = counts.most_common(1)[0]
    seen = [v for r in retraces if (r.kind, r.subject) == (kind, subject) for v in r.values]
    values = ", ".join(str(v) for v in dict.fromkeys(seen))
    others = sorted({KIND_PHRASES[k] for k, _ in counts if k != kind})
    return (f"{name} has been traced {traces} times; every trace costs a trace and a compile "
            f"(or a disk-cache load). {count} of the {len(retraces)} retraces came from "
            f"{KIND_PHRASES[kind]}: " + SUMMARIES[kind].format(subject=subject, values=values)
            + f". Fix: {Reason(kind, '', subject).fix}."
            + (f" Other causes: {', '.join(others)}." if others else "")
            + " (To silence: warnings.filterwarnings('ignore', "
              "category=tracejit.RetraceWarning).)")


def _warn(message: str) -> None:
    warnings.warn(message, RetraceWarning, stacklevel=_user_stacklevel())


def _user_stacklevel() -> int:
    """warnings.warn's stacklevel of the innermost frame outside tracejit."""
    frame, level = sys._getframe(2), 2
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(
            _PACKAGE_DIR):
        frame, level = frame.f_back, level + 1
    return level


def _configure_from_environment() -> None:
    if os.environ.get("TRACEJIT_LOG_COMPILES", "").strip().lower() in {"1", "true", "yes", "on"}:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("tracejit: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False  # printed here; not a second time by a root handler


_configure_from_environment()
