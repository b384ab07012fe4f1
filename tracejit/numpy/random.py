"""Random draws inside a traced function: runtime draws, never frozen constants.

A trace runs the user's Python once; a draw made then by NumPy would be baked
into the kernel as a constant, and every later call would repeat the same
"random" numbers (silently non-stochastic training). So:
- the legacy `np.random.<function>(...)` calls of the common distributions
  (rand, randn, random, uniform, normal, standard_normal, exponential, randint,
  permutation, choice, ...) become runtime draws from tracejit's generator
  (`tracejit.random.global_generator()`, seeded from NumPy's global state):
  fresh numbers on every call, no retrace. The stream differs from NumPy's
  own (Threefry instead of the Mersenne Twister), the distribution does not;
- the other legacy functions (shuffle in place, binomial, gamma...) raise at
  the call, naming the user's line (the module's functions are rebound while
  tracing);
- a draw through a name bound before the trace (`from numpy.random import
  randn`) or a `Generator` / `RandomState` the function reaches (its globals,
  closure, defaults, static arguments) is caught by comparing the generator's
  state before and after the trace;
- `np.random.default_rng()` without a seed (fresh entropy on every eager call).
A generator seeded *inside* the function draws the same numbers on every eager
call too, so that case is traced as constants, which is exactly right.
"""

from __future__ import annotations

import contextlib
import functools
import threading

import numpy as np

from ..core.errors import UnsupportedError, with_location
from ..trace.tracer import add_trace_guard, add_tracing_hook, tracing_thread

HINT = ("use tracejit.random (a SeedGenerator, or keys) or np.random's rand/randn/random/"
        "uniform/normal/randint/permutation/choice, which draw at run time; or draw the "
        "random numbers outside the traced function and pass them in as an "
        "argument (eps = rng.standard_normal(shape); loss(params, eps)): every call then "
        "gets fresh draws and the generator advances exactly as in eager code")

_LEGACY = [name for name in (
    "beta binomial bytes chisquare choice dirichlet exponential f gamma geometric gumbel "
    "hypergeometric laplace logistic lognormal logseries multinomial multivariate_normal "
    "negative_binomial noncentral_chisquare noncentral_f normal pareto permutation poisson "
    "power rand randint randn random random_integers random_sample ranf rayleigh sample "
    "shuffle standard_cauchy standard_exponential standard_gamma standard_normal standard_t "
    "triangular uniform vonmises wald weibull zipf").split() if hasattr(np.random, name)]
_ORIGINAL = {name: getattr(np.random, name) for name in _LEGACY + ["default_rng"]}


class RandomInTraceError(UnsupportedError):
    """A random draw inside a traced function (it would be frozen into the kernel)."""


def _on_tracing_thread() -> bool:
    return threading.get_ident() in tracing_thread


def _refuse(name):
    original = _ORIGINAL[name]

    @functools.wraps(original)
    def draw(*args, **kwargs):
        if not _on_tracing_thread():
            return original(*args, **kwargs)
        runtime = RUNTIME_DRAWS.get(name)
        if runtime is not None:
            return runtime(*args, **kwargs)
        raise RandomInTraceError(with_location(
            f"np.random.{name} inside a traced function would be frozen into the kernel as "
            "a constant (the same numbers on every call), and tracejit draws only "
            f"{', '.join(sorted(RUNTIME_DRAWS))} at run time", hint=HINT))

    return draw


# Legacy functions drawn at run time: name -> fn(*args, **kwargs), registered by
# tracejit.random (above this package) when it is imported.
RUNTIME_DRAWS: dict = {}


def _default_rng(seed=None, *args, **kwargs):
    if seed is None and _on_tracing_thread():
        raise RandomInTraceError(with_location(
            "np.random.default_rng() without a seed inside a traced function would be "
            "frozen into the kernel (eager code gets fresh entropy on every call)", hint=HINT))
    return _ORIGINAL["default_rng"](seed, *args, **kwargs)


_PATCHED = {name: _refuse(name) for name in _LEGACY}
_PATCHED["default_rng"] = _default_rng


def _install():
    for name, wrapper in _PATCHED.items():
        setattr(np.random, name, wrapper)


def _uninstall():
    for name, original in _ORIGINAL.items():
        setattr(np.random, name, original)


add_tracing_hook(_install, _uninstall)


# ------------------------------------------------ generator states around a trace

def _generators(fn, depth=3) -> list:
    """Generators, RandomStates and bit generators `fn` can reach by name."""
    found, seen = [], set()

    def visit(obj, level):
        if id(obj) in seen or level < 0:
            return
        seen.add(id(obj))
        if isinstance(obj, (np.random.Generator, np.random.RandomState,
                            np.random.BitGenerator)):
            found.append(obj)
        elif isinstance(obj, (tuple, list)):
            for item in obj[:64]:
                visit(item, level - 1)
        elif isinstance(obj, dict):
            for item in list(obj.values())[:64]:
                visit(item, level - 1)
        elif isinstance(obj, functools.partial):
            visit(obj.func, level - 1)
            visit(obj.args, level - 1)
            visit(obj.keywords, level - 1)
        elif callable(obj):
            _visit_function(obj, level, visit)

    visit(fn, depth)
    return found


def _visit_function(obj, level, visit):
    inner = getattr(obj, "fn", None) or getattr(obj, "__wrapped__", None)
    if inner is not None and inner is not obj:
        visit(inner, level)  # a wrapper (tracejit's own, functools.wraps) costs no depth
    code = getattr(obj, "__code__", None)
    if code is None:
        return
    names = set(code.co_names)
    for const in code.co_consts:
        if hasattr(const, "co_names"):
            names.update(const.co_names)
    module_globals = getattr(obj, "__globals__", {})
    for name in names:
        if name in module_globals:
            value = module_globals[name]
            if not isinstance(value, type(np)):
                visit(value, 0)
    for cell in getattr(obj, "__closure__", None) or ():
        try:
            visit(cell.cell_contents, level - 1)
        except ValueError:  # an empty cell
            pass
    visit(getattr(obj, "__defaults__", None) or (), level - 1)


def _state(gen):
    if isinstance(gen, np.random.RandomState):
        kind, keys, pos, *rest = gen.get_state()
        return (kind, keys.tobytes(), pos, *rest)
    bit = gen if isinstance(gen, np.random.BitGenerator) else gen.bit_generator
    return repr(bit.state)


@contextlib.contextmanager
def _guard(fn):
    generators = _generators(fn)
    before = [_state(g) for g in generators]
    legacy = _state(np.random.mtrand._rand)
    yield
    changed = [g for g, s in zip(generators, before) if _state(g) != s]
    if _state(np.random.mtrand._rand) != legacy:
        changed.append("np.random's global generator")
    if changed:
        what = changed[0] if isinstance(changed[0], str) else type(changed[0]).__name__
        name = getattr(fn, "__qualname__", getattr(fn, "__name__", "the function"))
        raise RandomInTraceError(with_location(
            f"{name} drew random numbers from a {what} while being traced (or another "
            "thread drew from it meanwhile): traced draws would be frozen into the kernel as "
            "constants (the same numbers on every call)",
            location=f"tracing {name}", hint=HINT))


add_trace_guard(_guard)
