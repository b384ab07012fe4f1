"""The coverage table: every NumPy/SciPy function tracejit traces, and its derivatives.

Generated from the dispatch tables (tracejit.numpy.api: UFUNCS / FUNCTIONS / METHODS,
scipy_api's rebound functions and distributions), so it cannot go stale:

    python -m tracejit.coverage > docs/coverage.md

For each entry the generator traces a call on sample arguments and builds the
reverse- and forward-mode programs (autodiff.vjp_program / jvp_program): "rev"
and "fwd" mean that transformation succeeded; "none" means the result is not
floating point (comparisons, argmax, integer arithmetic), so there is nothing
to differentiate. The primitives the call lowers to are listed too.
tests/test_coverage.py checks that docs/coverage.md is this output.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np

from .numpy import api as numpy_api
from .numpy import scipy as scipy_api
from .trace.tracer import trace
from .transforms import autodiff

_X = np.array([[2.0, 0.3, 0.1], [0.3, 1.5, 0.2], [0.1, 0.2, 1.8]])  # SPD, positive
_V = np.array([0.6, 0.7, 0.8])
_I = np.array([2, 0, 1])

# Calls that the generic ones below do not fit (name -> sample arguments).
SAMPLES = {
    "reshape": (_X, (9,)), "broadcast_to": (_V, (2, 3)), "take": (_X, _I),
    "einsum": ("ij,jk->ik", _X, _X), "tensordot": (_X, _X, 1), "split": (_V, 3),
    "array_split": (_V, 2), "expand_dims": (_V, 0), "swapaxes": (_X, 0, 1),
    "moveaxis": (_X, 0, 1), "repeat": (_V, 2), "tile": (_V, 2), "roll": (_V, 1),
    "full_like": (_V, 2.0), "linspace": (np.array(0.5), np.array(2.0), 4),
    "where": (_V > 0.65, _V, -_V),
    "concatenate": ([_V, _V],), "stack": ([_V, _V],), "vstack": ([_V, _V],),
    "hstack": ([_V, _V],), "dstack": ([_V, _V],), "column_stack": ([_V, _V],),
    "append": (_V, _V), "result_type": (_V,), "polygamma": (1, _V),
    "multigammaln": (_V + 2.0, 2), "solve_triangular": (_X, _V),
    "multivariate_normal.logpdf": (_V, _V * 0.5, _X), "multivariate_normal.pdf": (
        _V, _V * 0.5, _X), "dirichlet.logpdf": (_V / _V.sum(), _V + 1.0),
    "dirichlet.pdf": (_V / _V.sum(), _V + 1.0), "poisson.logpmf": (_I, _V),
    "poisson.pmf": (_I, _V), "t.logpdf": (_V, 3.0), "t.pdf": (_V, 3.0),
    "gamma.logpdf": (_V, 2.0), "gamma.pdf": (_V, 2.0), "beta.logpdf": (_V, 2.0, 3.0),
    "beta.pdf": (_V, 2.0, 3.0), "chi2.logpdf": (_V, 3.0), "chi2.pdf": (_V, 3.0),
    "__getitem__": (_X, (slice(1, None), _I[:2])), "astype": (_X, np.float32),
    "reshape (method)": (_X, 9), "take (method)": (_X, _I), "transpose (method)": (_X, 1, 0),
    "swapaxes (method)": (_X, 0, 1), "repeat (method)": (_V, 2), "item": (_V[:1],),
    "array": ([_V, _V],), "asarray": ([_V, _V],), "asanyarray": ([_V, _V],),
    "ascontiguousarray": ([_V, _V],), "bitwise_and": (_V > 0.65, _V > 0.7),
    "bitwise_or": (_V > 0.65, _V > 0.7), "invert": (_V > 0.65,),
    "__and__": (_V > 0.65, _V > 0.7), "__or__": (_V > 0.65, _V > 0.7),
    "__invert__": (_V > 0.65,), "quantile": (_X, 0.3), "percentile": (_X, 30.0),
    "take_along_axis": (_X, np.argsort(_X, axis=-1), -1),
    "rollaxis": (_X, 1), "vsplit": (_X, 3), "hsplit": (_X, 3), "dsplit": (_X[None], 3),
    "select": ([_V > 0.65, _V < 0.65], [_V, -_V]),
}
_GENERIC = [(_X,), (_X, _X), (_X, 2)]


def _name(fn) -> str:
    module = getattr(fn, "__module__", None) or "numpy"
    name = getattr(fn, "__name__", repr(fn))
    if isinstance(fn, np.ufunc) and getattr(np, name, None) is not fn:
        module = "scipy.special"
    for sub in ("linalg", "fft"):
        if module.startswith(f"numpy.{sub}"):
            return f"np.{sub}.{name}"
    if module.startswith("numpy"):
        return f"np.{name}"
    return f"{module.split('._')[0]}.{name}"


def derivatives(call, args) -> tuple[str, list[str]]:
    """('rev, fwd' | 'rev' | 'fwd' | 'none' | 'not sampled', primitives reached)."""
    try:
        program, _, _ = trace(lambda *xs: call(*xs), tuple(a for a in args if _traced(a)))
    except Exception:  # noqa: BLE001 - an entry this generic sampler cannot call
        return "not sampled", []
    prims = sorted({e.prim.name for e in program.eqns})
    floats = [k for k, v in enumerate(program.invars) if autodiff.is_float(v.aval)]
    outs = [a for a in program.outvars if autodiff.is_float(a.aval)]
    if not outs or not floats:
        return "none", prims
    modes = []
    with contextlib.suppress(Exception):
        autodiff.vjp_program(program, floats, [autodiff.INPUT if autodiff.is_float(a.aval)
                                               else None for a in program.outvars])
        modes.append("rev")
    with contextlib.suppress(Exception):
        autodiff.jvp_program(program, floats)
        modes.append("fwd")
    return ", ".join(modes) or "none", prims


def _traced(arg) -> bool:
    return isinstance(arg, np.ndarray) and arg.dtype.kind in "fb"


def _bind(fn, args):
    """A call of `fn` with its float array arguments traced, the others fixed."""
    def call(*traced):
        it = iter(traced)
        full = [next(it) if _traced(a) else a for a in args]
        out = fn(*[_listed(a, it) for a in full])
        return out if _is_result(out) else 0.0  # a dtype or a shape: nothing to trace

    return call


def _is_result(out) -> bool:
    from .trace.tracer import Tracer
    if isinstance(out, (tuple, list)):
        return all(_is_result(o) for o in out)
    return isinstance(out, (Tracer, np.ndarray, np.generic, float, int, bool))


def _listed(arg, it):
    if isinstance(arg, list):
        return [next(it) if _traced(a) else a for a in arg]
    return arg


def _flatten_lists(args):
    out = []
    for a in args:
        out.extend(a if isinstance(a, list) else [a])
    return out


def _row(name, fn, samples=None):
    if getattr(fn, "__name__", "") in ("array", "asarray", "asanyarray", "ascontiguousarray"):
        fn = _at_call_time(fn.__name__)  # rebound while tracing: look it up then
    key = name if name in SAMPLES else name.split(".")[-1]
    for args in [SAMPLES[key]] if key in SAMPLES else (samples or _GENERIC):
        flat = _flatten_lists(args)
        result = derivatives(_bind(fn, args), flat)
        if result[0] != "not sampled":
            return name, *result
    return name, "not sampled", []


def _at_call_time(name):
    def call(*args):
        return getattr(np, name)(*args)

    return call


def _method_call(method):
    def call(self, *args):
        return getattr(self, method)(*args)

    return call


def entries() -> dict[str, list[tuple]]:
    """Section title -> [(name, derivatives, primitives)]."""
    _import_scipy()
    sections: dict[str, list[tuple]] = {"NumPy ufuncs": [], "NumPy functions": [],
                                        "Array methods and operators": [],
                                        "scipy.special": [], "scipy.linalg": [],
                                        "scipy.stats": []}
    seen: set = set()
    for ufunc in numpy_api.UFUNCS:
        name = _name(ufunc)
        if name in seen:
            continue
        seen.add(name)
        section = "scipy.special" if name.startswith("scipy") else "NumPy ufuncs"
        sections[section].append(_row(name, ufunc))
    for np_fn in numpy_api.FUNCTIONS:
        name = _name(np_fn)
        if name not in seen:
            seen.add(name)
            sections["NumPy functions"].append((name, *_row(np_fn.__name__, np_fn)[1:]))
    for method, value in numpy_api.METHODS.items():
        if method.startswith("__array") or method in ("__iter__", "__len__"):
            continue
        key = f"{method} (method)" if f"{method} (method)" in SAMPLES else method
        if isinstance(value, property):
            row = _row(key, lambda x, m=method: getattr(x, m), [(_X,)])
        else:
            row = _row(key, _method_call(method))
        sections["Array methods and operators"].append(
            (f"x.{method}" if not method.startswith("__") else method, *row[1:]))
    for table, functions in (("scipy.special", scipy_api.SPECIAL_FUNCTIONS),
                             ("scipy.linalg", scipy_api.LINALG_FUNCTIONS)):
        for name, fn in functions.items():
            sections[table].append((f"{table}.{name}", *_row(name, fn)[1:]))
    for dist, methods in scipy_api.DISTRIBUTIONS.items():
        for method, fn in methods.items():
            sections["scipy.stats"].append((f"scipy.stats.{dist}.{method}",
                                            *_row(f"{dist}.{method}", fn, [(_V,)])[1:]))
    for rows in sections.values():
        rows.sort()
    return sections


def _import_scipy():
    import scipy.linalg  # noqa: F401
    import scipy.special  # noqa: F401
    import scipy.stats  # noqa: F401
    scipy_api.register_imported()


HEADER = """# What tracejit traces

Generated by `python -m tracejit.coverage > docs/coverage.md` from the dispatch
tables; `tests/test_coverage.py` fails when this file is not current. For each
entry a call on sample arguments was traced and differentiated: **rev** and
**fwd** mean the reverse- and forward-mode programs were built; **none** means
the result is not floating point. *Lowers to* lists the primitives of the call
(everything else is composed from them, so its derivatives are theirs).

Also traced: `np.array` / `np.asarray` / `np.asanyarray` / `np.ascontiguousarray`
of (nested) lists and tuples holding traced values, `np.r_[...]` and
`np.c_[...]`; `float()`, `int()`, `bool()` and `.item()` of values fixed at
trace time (sizes, constants); indexing with ints, slices, `None`, `...`,
integer arrays (adjacent or not), constant boolean masks, and slices with a
traced start of static length (`x[i * b:(i + 1) * b]`). Random draws inside a
traced function raise (pass the draws in as arguments).
"""


def markdown() -> str:
    with _quiet():
        sections = entries()
    lines = [HEADER]
    for title, rows in sections.items():
        lines += [f"## {title} ({len(rows)})", "", "| function | derivatives | lowers to |",
                  "|---|---|---|"]
        lines += [f"| `{name}` | {modes} | {', '.join(prims)} |" for name, modes, prims in rows]
        lines.append("")
    return "\n".join(lines)


@contextlib.contextmanager
def _quiet():
    with np.errstate(all="ignore"), open(os.devnull, "w") as sink, \
            contextlib.redirect_stderr(sink):
        yield


if __name__ == "__main__":
    print(markdown(), end="")
