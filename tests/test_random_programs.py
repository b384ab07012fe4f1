"""Random NumPy programs from Hypothesis, differentiated and checked against
finite differences (interpreter mode, float64).

A program is a few lines of plain NumPy source, each making a new value from
earlier ones: elementwise unary and binary ops (with broadcasting), reductions
over random axes with or without keepdims, matmul, transpose, slicing,
concatenate and stack, and small loops (scan, fori_loop) whose bodies return
literals and their own inputs beside computed values. Domains are kept safe
by construction (`log(a ** 2 + 1)`, division by `b ** 2 + 1`, exp of a tanh),
and inputs are drawn from a seeded generator so that kinks (max, where,
clip-like ops) are almost surely not within the finite-difference step. A
failing example prints as source.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tracejit
from tracejit import lax
from tracejit.testing import check_grads

UNARY = [
    "np.sin({a})", "np.cos({a})", "np.tanh({a})", "np.arctan({a})", "-{a}",
    "np.exp(np.tanh({a}))", "np.log({a} ** 2 + 1.0)", "np.sqrt({a} ** 2 + 1.0)",
    "np.log1p({a} * {a})", "np.expm1(np.sin({a}))", "np.logaddexp(0.0, {a})",
    "{a} ** 2", "0.2 * {a} ** 3", "1.0 / ({a} ** 2 + 1.0)", "({a} ** 2 + 1.0) ** 0.75",
    "np.square(np.cos({a})) * 2", "np.clip({a}, -0.5, 0.7)",
    # log-softmax and softmax with the shift written out (algebra.detach_shifts)
    "{a} - np.max({a}) - np.log(np.sum(np.exp({a} - np.max({a}))))",
    "np.exp({a} - np.max({a})) / np.sum(np.exp({a} - np.max({a})))",
]
BINARY = [
    "{a} + {b}", "{a} - {b}", "{a} * {b}", "{a} / ({b} ** 2 + 1.0)",
    "np.maximum({a}, {b})", "np.minimum({a}, {b})", "np.where({a} > {b}, {a} * {b}, {b} - {a})",
    "np.logaddexp({a}, {b})",
]
REDUCTIONS = ["np.sum", "np.mean", "np.max", "np.min", "np.prod", "np.var", "np.linalg.norm"]
SLICES = ["1:", ":-1", "::2", "::-1", "1::2", "0", "-1", "None", ":"]
# loops over {a}'s leading axis, bodies returning literals (per-step output, carry) beside
# computed values and their own inputs: a literal once shifted its neighbours' cotangents
LOOPS = [
    "lax.scan(lambda c, x: (np.tanh(c * x) + c, 3.0), {a}[0], {a})[0]",
    "lax.scan(lambda c, x: (np.sin(c) * x + c, (2.0, c * x)), {a}[0], {a})[1][1]",
    "lax.scan(lambda c, x: ((c[0] * np.cos(x) + c[1] * c[0], 0.5), x), ({a}[0], np.mean({a})),"
    " {a}, reverse=True)[0][0]",
    "lax.fori_loop(0, 2, lambda i, c: (np.sin(c[0]) * c[1] + c[0], 1.5), ({a}, np.mean({a})))[0]",
]
NAMESPACE = {"np": np, "lax": lax}  # lax runs eagerly outside a trace


def _shape_of(expr, shapes):
    """Evaluate `expr` on arrays of ones to learn its shape (None if NumPy rejects it)."""
    env = {f"v{i}": np.ones(s) for i, s in enumerate(shapes)}
    try:
        with np.errstate(all="ignore"):
            return np.shape(eval(expr, dict(NAMESPACE), env))  # noqa: S307 - our own templates
    except (ValueError, IndexError):
        return None


@dataclass
class Program:
    input_shapes: list
    lines: list  # "v3 = np.sin(v1)", ...
    output: int

    def source(self) -> str:
        args = ", ".join(f"v{i}" for i in range(len(self.input_shapes)))
        body = "".join(f"    {line}\n" for line in self.lines)
        return f"def program({args}):\n{body}    return v{self.output}\n"

    def function(self):
        namespace = dict(NAMESPACE)
        exec(self.source(), namespace)  # noqa: S102 - source built from our templates
        return namespace["program"]

    def __repr__(self) -> str:
        return f"Program(input shapes {self.input_shapes}):\n{self.source()}"


# ------------------------------------------------------------ the generator

def _unary(draw, shapes):
    a = draw(st.integers(0, len(shapes) - 1))
    return draw(st.sampled_from(UNARY)).format(a=f"v{a}")


def _binary(draw, shapes):
    pairs = [(i, j) for i in range(len(shapes)) for j in range(len(shapes))
             if _shape_of(f"v{i} + v{j}", shapes) is not None]
    i, j = draw(st.sampled_from(pairs))  # (i, i) always broadcasts
    return draw(st.sampled_from(BINARY)).format(a=f"v{i}", b=f"v{j}")


def _reduction(draw, shapes):
    a = draw(st.integers(0, len(shapes) - 1))
    ndim = len(shapes[a])
    axes = [None] + list(range(-ndim, ndim)) + ([(0, ndim - 1)] if ndim >= 2 else [])
    axis = draw(st.sampled_from(axes))
    keepdims = draw(st.booleans())
    return f"{draw(st.sampled_from(REDUCTIONS))}(v{a}, axis={axis}, keepdims={keepdims})"


def _matmul(draw, shapes):
    candidates = [f"v{i}{t} @ v{j}" for i, a in enumerate(shapes) for j, b in enumerate(shapes)
                  for t in ("", ".T") if 1 <= len(a) <= 2 and 1 <= len(b) <= 2]
    valid = [expr for expr in candidates if _shape_of(expr, shapes) is not None]
    return draw(st.sampled_from(valid)) if valid else None


def _transpose(draw, shapes):
    candidates = [i for i, s in enumerate(shapes) if len(s) >= 2]
    if not candidates:
        return None
    a = draw(st.sampled_from(candidates))
    return draw(st.sampled_from([f"v{a}.T", f"np.swapaxes(v{a}, 0, -1)"]))


def _slice(draw, shapes):
    candidates = [i for i, s in enumerate(shapes) if len(s) >= 1 and min(s) >= 2]
    if not candidates:
        return None
    a = draw(st.sampled_from(candidates))
    key = [draw(st.sampled_from(SLICES)) for _ in shapes[a]]
    return f"v{a}[{', '.join(key)}]"


def _join(draw, shapes):
    a = draw(st.integers(0, len(shapes) - 1))
    ndim = len(shapes[a])
    partners = [j for j, s in enumerate(shapes) if len(s) == ndim]
    b = draw(st.sampled_from(partners))
    if draw(st.booleans()):
        axis = draw(st.integers(-ndim - 1, ndim))
        expr = f"np.stack([v{a}, np.sin(v{b})], axis={axis})"
    else:
        if ndim == 0:
            return None
        axis = draw(st.integers(-ndim, ndim - 1))
        expr = f"np.concatenate([v{a}, v{b} * 2.0], axis={axis})"
    return expr if _shape_of(expr, shapes) is not None else None


def _loop(draw, shapes):
    candidates = [i for i, s in enumerate(shapes) if len(s) >= 1]
    if not candidates:
        return None
    a = draw(st.sampled_from(candidates))
    return draw(st.sampled_from(LOOPS)).format(a=f"v{a}")


BUILDERS = [_unary, _binary, _reduction, _matmul, _transpose, _slice, _join, _loop]
SIZES = (2, 3, 4)


@st.composite
def programs(draw, max_lines=5):
    m, n = draw(st.sampled_from(SIZES)), draw(st.sampled_from(SIZES))
    kinds = [(m, n), (n,), (m, 1), (n, m), ()]
    shapes = draw(st.lists(st.sampled_from(kinds), min_size=1, max_size=3))
    n_inputs, lines = len(shapes), []
    for _ in range(draw(st.integers(1, max_lines))):
        expr = draw(st.sampled_from(BUILDERS))(draw, shapes)
        shape = None if expr is None else _shape_of(expr, shapes)
        if shape is None or len(shape) > 3:  # not applicable here: fall back to a unary op
            expr = _unary(draw, shapes)
            shape = _shape_of(expr, shapes)
        lines.append(f"v{len(shapes)} = {expr}")
        shapes.append(shape)
    return Program(shapes[:n_inputs], lines, len(shapes) - 1)


def _inputs(program, seed):
    rng = np.random.default_rng(seed)
    return tuple(rng.standard_normal(shape) for shape in program.input_shapes)


SEEDS = st.integers(0, 2**32 - 1)
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(autouse=True)
def _interpreter(interpret):
    """Every program runs through the NumPy reference interpreter."""


# ----------------------------------------------------------------- the tests
# Sized so that the file runs in about 15 s when every example passes.

@settings(max_examples=500, **SETTINGS)
@given(programs(), SEEDS)
def test_random_program_value_and_first_derivatives(program, seed):
    fn, args = program.function(), _inputs(program, seed)
    np.testing.assert_allclose(tracejit.function(fn)(*args), fn(*args), rtol=1e-10,
                               atol=1e-10)
    check_grads(fn, args, order=1, atol=1e-4, rtol=1e-4)


@settings(max_examples=150, **SETTINGS)
@given(programs(max_lines=3), SEEDS)
def test_random_program_second_derivatives(program, seed):
    check_grads(program.function(), _inputs(program, seed), order=2, atol=1e-4, rtol=1e-4)


@settings(max_examples=150, **SETTINGS)
@given(programs(), SEEDS)
def test_random_scalar_loss_gradient(program, seed):
    """`grad` of `sum(program(...) * weights)` against finite differences, input by input."""
    fn, args = program.function(), _inputs(program, seed)
    weights = np.random.default_rng(seed + 1).standard_normal(np.shape(fn(*args)))

    def loss(*xs):
        return np.sum(fn(*xs) * weights)

    grads = tracejit.grad(loss, argnums=tuple(range(len(args))))(*args)
    eps = 1e-6
    for k, (x, g) in enumerate(zip(args, grads)):
        assert np.shape(g) == np.shape(x)
        direction = np.random.default_rng(seed + 2 + k).standard_normal(np.shape(x))
        shifted = [list(args), list(args)]
        shifted[0][k], shifted[1][k] = x + eps * direction, x - eps * direction
        numeric = (loss(*shifted[0]) - loss(*shifted[1])) / (2 * eps)
        np.testing.assert_allclose(np.sum(g * direction), numeric, rtol=1e-4, atol=1e-4)
