"""vmap: the batched program against stacking the per-example one, over the
whole primitive table (tests/test_primitives.py), with in_axes 0, 1, -1 and
None per argument; then composition with grad, jvp, jit, lax loops, nested
vmap, Variables and GradientTape; the Jacobians built on it; JAX's vmap when
JAX is installed.
"""

from __future__ import annotations

import contextlib
import warnings
import zlib

import numpy as np
import pytest
from test_primitives import ROWS

import tracejit
from tracejit import lax
from tracejit.testing import check_grads
from tracejit.trace.registry import ELEMENTWISE, INDEXMAP, REGISTRY
from tracejit.transforms import batching

AXES = (0, 1, -1, None)
BATCH = 3
# exact: the same elementwise arithmetic in the same order, or elements moved
EXACT_PRIMS = {"gather", "scatter_add", "slice_embed", "dynamic_slice", "dynamic_slice_embed",
               "concatenate", "reshape", "argsort", "argmax", "argmin", "reduce_max",
               "reduce_min", "stop_gradient", "switch"}


def is_exact(row) -> bool:
    prim = REGISTRY[row.prim]
    return prim.kind in (ELEMENTWISE, INDEXMAP) or row.prim in EXACT_PRIMS


def is_array(value) -> bool:
    return isinstance(value, np.ndarray)


def axes_for(row, index: int, variant: int, args) -> list:
    """in_axes per argument, cycling through AXES along the table; Python scalars
    stay unmapped, and at least one argument is mapped."""
    axes = []
    for k, arg in enumerate(args):
        axis = AXES[(index + k + 2 * variant) % len(AXES)] if is_array(arg) else None
        if axis == 1 and arg.ndim == 0:
            axis = 0
        axes.append(axis)
    if all(a is None for a in axes):
        first = next((k for k, a in enumerate(args) if is_array(a)), None)
        if first is None:
            return []
        axes[first] = -1
    return axes


def batch_of(row, shapes, axes, seed) -> tuple[list, list]:
    """(mapped arguments, the per-example argument lists)."""
    rng = np.random.default_rng(seed)
    fixed = [sample(rng, shape, np.float64) for sample, shape in zip(row.domain, shapes)]
    examples = [list(fixed) for _ in range(BATCH)]
    mapped = list(fixed)
    for k, (axis, sample, shape) in enumerate(zip(axes, row.domain, shapes)):
        if axis is None:
            continue
        draws = [np.asarray(sample(rng, shape, np.float64)) for _ in range(BATCH)]
        for example, draw in zip(examples, draws):
            example[k] = draw
        mapped[k] = np.stack(draws, axis=axis)
    return mapped, examples


def stacked(fn, examples):
    outs = [fn(*example) for example in examples]
    if isinstance(outs[0], (tuple, list)):
        return [np.stack([np.asarray(o[k]) for o in outs]) for k in range(len(outs[0]))]
    return np.stack([np.asarray(o) for o in outs])


def assert_same(got, want, exact: bool):
    got = got if isinstance(got, (tuple, list)) else [got]
    want = want if isinstance(want, (tuple, list)) else [want]
    assert len(got) == len(want)
    for g, w in zip(got, want):
        g, w = np.asarray(g), np.asarray(w)
        assert g.shape == w.shape and g.dtype == w.dtype, (g.shape, g.dtype, w.shape, w.dtype)
        if exact or w.dtype.kind not in "fc":
            np.testing.assert_array_equal(g, w)
        else:
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12, equal_nan=True)


CASES = [pytest.param(r, variant, id=f"{r.label}-{variant}")
         for index, r in enumerate(ROWS) for variant in (0, 1)]


@contextlib.contextmanager
def interpreted():
    """References run through the interpreter: only the kernel under test compiles."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRACEJIT_DISABLE_JIT", "1")
        yield


def run_case(r, variant):
    index = ROWS.index(r)
    shapes = r.shapes[0]
    seed = zlib.crc32(f"vmap/{r.label}/{variant}".encode())
    probe = batch_of(r, shapes, [None] * len(shapes), seed)[0]
    axes = axes_for(r, index, variant, probe)
    if not axes:
        pytest.skip("no array argument to map")
    mapped, examples = batch_of(r, shapes, axes, seed)
    got = tracejit.vmap(r.fn, in_axes=tuple(axes))(*mapped)
    with interpreted():
        want = stacked(tracejit.function(r.fn), examples)
    assert_same(got, want, is_exact(r))


@pytest.mark.parametrize("r, variant", CASES)
def test_vmap_matches_stacked_examples(r, variant, interpret):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tracejit.RetraceWarning)
        run_case(r, variant)


COMPILED = ["add", "gather_pair", "while_loop", "switch", "reduce_sum",
            "cumsum"]


@pytest.mark.parametrize("label", COMPILED)
def test_vmap_compiled_matches_stacked_examples(label, compiled):
    r = next(r for r in ROWS if r.label == label)
    run_case(r, 0)


def test_every_primitive_has_a_batching_rule():
    """No primitive falls back to the loop over the batch."""
    missing = [name for name, prim in REGISTRY.items() if prim.batch is None]
    assert not missing, f"primitives without a batching rule: {missing}"


def test_a_primitive_without_a_rule_loops_over_the_batch(interpret, monkeypatch):
    """The fallback: a scan over the examples, after a one-time warning naming the primitive."""
    monkeypatch.setattr(REGISTRY["cumsum"], "batch", None)
    monkeypatch.setattr(batching, "_warned", set())
    xs = np.random.default_rng(0).standard_normal((4, 3, 2))
    with pytest.warns(UserWarning, match="cumsum has no batching rule"):
        got = tracejit.vmap(lambda x, w: np.cumsum(x * w, axis=1), in_axes=(0, None))(
            xs, np.arange(2.0))
    np.testing.assert_array_equal(got, np.cumsum(xs * np.arange(2.0), axis=2))


# ------------------------------------------------------------ the API

def test_in_axes_pytrees_out_axes_and_kwargs(interpret):
    rng = np.random.default_rng(0)
    params = {"w": rng.standard_normal((3, 4)), "b": rng.standard_normal(4)}
    xs = rng.standard_normal((4, 5, 3))

    def f(p, x):
        y = x @ p["w"] + p["b"]
        return {"y": y, "s": y.sum()}

    out = tracejit.vmap(f, in_axes=({"w": None, "b": None}, 1), out_axes={"y": 1, "s": 0})(
        params, xs)
    want = [f(params, xs[:, i]) for i in range(5)]
    np.testing.assert_array_equal(out["y"], np.stack([w["y"] for w in want], axis=1))
    np.testing.assert_allclose(out["s"], [w["s"] for w in want], rtol=1e-13)
    both = tracejit.vmap(lambda x, scale: x * scale)(xs, scale=np.arange(4.0))
    np.testing.assert_array_equal(both, xs * np.arange(4.0)[:, None, None])


def test_axis_size_and_unmapped_outputs(interpret):
    x = np.arange(3.0)
    out = tracejit.vmap(lambda v: v * 2.0, in_axes=None, axis_size=4)(x)
    np.testing.assert_array_equal(out, np.broadcast_to(x * 2.0, (4, 3)))
    out = tracejit.vmap(lambda v, w: (v + w, w), in_axes=(0, None), out_axes=(0, None))(
        np.ones((2, 3)), x)
    np.testing.assert_array_equal(out[1], x)


def test_errors_name_the_problem(interpret):
    with pytest.raises(tracejit.ShapeError, match="inconsistent sizes"):
        tracejit.vmap(lambda a, b: a + b)(np.ones((3, 2)), np.ones((4, 2)))
    with pytest.raises(tracejit.TracerTypeError, match="axis_size"):
        tracejit.vmap(lambda a: a, in_axes=None)(np.ones(3))
    with pytest.raises(tracejit.TracerTypeError, match="does not match the structure"):
        tracejit.vmap(lambda a, b: a, in_axes=(0, 0, 0))(np.ones(3), np.ones(3))
    with pytest.raises(tracejit.ShapeError, match="out of bounds"):
        tracejit.vmap(lambda a: a, in_axes=2)(np.ones((3, 2)))
    with pytest.raises(tracejit.TracerTypeError, match="out_axes is None"):
        tracejit.vmap(lambda a: a, out_axes=None)(np.ones(3))


def test_one_kernel_for_every_batch_size(compiled):
    f = tracejit.vmap(lambda x, w: np.tanh(x @ w).sum(), in_axes=(0, None))
    w = np.ones((3, 2))
    for n in (4, 7, 16):
        xs = np.random.default_rng(n).standard_normal((n, 3))
        np.testing.assert_allclose(f(xs, w), np.tanh(xs @ w).sum(axis=1), rtol=1e-12)
    assert f.stats.traces == 1 and f.stats.compiles == 1


def test_chunk_size(interpret):
    xs = np.random.default_rng(1).standard_normal((10, 3))
    f = tracejit.vmap(lambda x: np.cumsum(x), chunk_size=4)
    np.testing.assert_array_equal(f(xs), np.cumsum(xs, axis=1))


# ----------------------------------------------------------- composition

def mlp_loss(params, x, y):
    w1, b1, w2, b2 = params
    h = np.tanh(x @ w1 + b1)
    return ((h @ w2 + b2 - y) ** 2).sum()


def mlp_data(n=5, seed=0):
    rng = np.random.default_rng(seed)
    params = (rng.standard_normal((3, 4)), rng.standard_normal(4), rng.standard_normal((4, 2)),
              rng.standard_normal(2))
    return params, rng.standard_normal((n, 3)), rng.standard_normal((n, 2))


@pytest.mark.parametrize("jit", [False, True])
def test_per_example_gradients(jit, mode):
    params, xs, ys = mlp_data()
    per_example = tracejit.vmap(tracejit.grad(mlp_loss), in_axes=(None, 0, 0))
    if jit:
        per_example = tracejit.function(per_example)
    got = per_example(params, xs, ys)
    with interpreted():
        single = tracejit.grad(mlp_loss)
        want = [single(params, x, y) for x, y in zip(xs, ys)]
    for k in range(4):
        np.testing.assert_allclose(got[k], np.stack([w[k] for w in want]), rtol=1e-12,
                                   atol=1e-12)


def test_grad_of_vmap_against_finite_differences(interpret):
    params, xs, ys = mlp_data()

    def total(w1, xs):
        full = (w1,) + params[1:]
        return tracejit.vmap(mlp_loss, in_axes=(None, 0, 0))(full, xs, ys).sum()

    check_grads(total, (params[0], xs), order=2, modes=("rev", "fwd"))
    jitted = tracejit.function(tracejit.grad(total, argnums=(0, 1)))
    want = tracejit.grad(lambda w1, xs: sum(mlp_loss((w1,) + params[1:], x, y)
                                            for x, y in zip(xs, ys)), argnums=(0, 1))
    for g, w in zip(jitted(params[0], xs), want(params[0], xs)):
        np.testing.assert_allclose(g, w, rtol=1e-12)


def test_nested_vmap_and_jvp(interpret):
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((5, 4))
    pairwise = tracejit.vmap(tracejit.vmap(lambda u, v: np.sin(u) @ v, in_axes=(None, 0)),
                             in_axes=(0, None))
    np.testing.assert_allclose(pairwise(a, b), np.sin(a) @ b.T, rtol=1e-13)
    tangents = rng.standard_normal((3, 4))
    _, t = tracejit.vmap(lambda x, t: tracejit.jvp(lambda v: np.sin(v) * v, (x,), (t,)))(
        a, tangents)
    np.testing.assert_allclose(t, (np.cos(a) * a + np.sin(a)) * tangents, rtol=1e-13)


def test_vmap_inside_scan_and_of_scan(interpret):
    rng = np.random.default_rng(3)
    xs, w = rng.standard_normal((6, 4, 3)), rng.standard_normal((3, 3))

    def step(h, x):
        h = tracejit.vmap(lambda hi, xi: np.tanh(xi @ w + hi))(h, x)
        return h, h.sum()

    h, sums = tracejit.function(lambda xs: lax.scan(step, np.zeros((4, 3)), xs))(xs)
    ref = np.zeros((4, 3))
    for x in xs:
        ref = np.tanh(x @ w + ref)
    np.testing.assert_allclose(h, ref, rtol=1e-13)
    assert sums.shape == (6,)


def test_while_with_batched_predicate_and_grad(interpret):
    x = np.array([0.5, 2.0, 9.0])

    def halve_until_small(v):
        return lax.while_loop(lambda c: c[0] > 1.0, lambda c: (c[0] * 0.5, c[1] + 1), (v, 0))

    v, count = tracejit.vmap(halve_until_small)(x)
    np.testing.assert_array_equal(v, [0.5, 1.0, 0.5625])
    np.testing.assert_array_equal(count, [0, 1, 4])
    g = tracejit.grad(lambda x: tracejit.vmap(halve_until_small)(x)[0].sum())(x)
    np.testing.assert_array_equal(g, [1.0, 0.5, 0.0625])


def test_vmap_of_grad_through_a_batched_while_names_the_workaround(interpret):
    def shrink(v):
        return lax.while_loop(lambda c: c[0] > 1.0, lambda c: (np.sqrt(c[0]) * 0.9, c[1] + 1),
                              (v, 0))[0]

    x = np.array([0.5, 2.0, 9.0])
    with pytest.raises(tracejit.UnsupportedError, match=r"grad\(lambda p: vmap\(f\)"):
        tracejit.vmap(tracejit.grad(shrink))(x)
    got = tracejit.grad(lambda x: tracejit.vmap(shrink)(x).sum())(x)
    np.testing.assert_allclose(got, [tracejit.grad(shrink)(v) for v in x], rtol=1e-14)


def test_custom_vjp_under_vmap(interpret):
    @tracejit.custom_vjp
    def clip_gradient(x, bound):
        return x

    clip_gradient.defvjp(lambda x, bound: (x, bound),
                         lambda bound, g: (np.clip(g, -bound, bound), 0.0 * bound))
    xs = np.array([[1.0, -2.0], [3.0, 0.5]])
    bounds = np.array([0.5, 4.0])
    g = tracejit.grad(lambda xs: (tracejit.vmap(clip_gradient)(xs, bounds) * 3.0).sum())(xs)
    np.testing.assert_array_equal(g, [[0.5, 0.5], [3.0, 3.0]])
    per = tracejit.vmap(tracejit.grad(lambda x, b: (clip_gradient(x, b) * 3.0).sum()))(xs, bounds)
    np.testing.assert_array_equal(per, g)


def test_variables_and_gradient_tape(interpret):
    scale = tracejit.Variable(np.array([1.0, 2.0]))
    f = tracejit.vmap(lambda x: x * scale)
    xs = np.arange(6.0).reshape(3, 2)
    np.testing.assert_array_equal(f(xs), xs * [1.0, 2.0])
    x = tracejit.Variable(xs)
    with tracejit.GradientTape() as tape:
        y = tracejit.vmap(lambda v: (np.sin(v) * scale).sum())(x)
        loss = y.sum()
    gx, gs = tape.gradient(loss, [x, scale])
    np.testing.assert_allclose(gx, np.cos(xs) * [1.0, 2.0], rtol=1e-13)
    np.testing.assert_allclose(gs, np.sin(xs).sum(axis=0), rtol=1e-13)


# ------------------------------------------------------------- Jacobians

def test_jacobians_one_kernel(mode):
    rng = np.random.default_rng(4)
    a = rng.standard_normal((4, 3))

    def f(x):
        return np.tanh(a @ x) * x.sum()

    x = rng.standard_normal(3)
    t = np.tanh(a @ x)
    want = (1 - t * t)[:, None] * a * x.sum() + t[:, None]
    jr = tracejit.jacrev(f)
    np.testing.assert_allclose(jr(x), want, rtol=1e-12)
    assert jr.stats.traces == 1 and tracejit.jacobian is tracejit.jacrev
    if mode == "interpret":  # compiled: one kernel each, as jacrev's
        np.testing.assert_allclose(tracejit.jacfwd(f)(x), want, rtol=1e-12)
        h = tracejit.hessian(lambda x: (np.sin(x) ** 2).sum() * a[0, 0])(x)
        np.testing.assert_allclose(h, np.diag(2 * np.cos(2 * x)) * a[0, 0], rtol=1e-12,
                                   atol=1e-15)


def test_jacobian_pytrees(interpret):
    x, y = np.array([1.0, 2.0]), np.array(3.0)
    jac = tracejit.jacrev(lambda x, y: {"p": x * y, "s": (x ** 2).sum()}, argnums=(0, 1))(x, y)
    np.testing.assert_array_equal(jac["p"][0], np.diag([3.0, 3.0]))
    np.testing.assert_array_equal(jac["p"][1], x)
    np.testing.assert_array_equal(jac["s"][0], 2 * x)
    assert jac["s"][1].shape == ()


# --------------------------------------------------------------- vs JAX

def test_against_jax_vmap(interpret, jax_x64):
    jax, jnp = jax_x64, jax_x64.numpy
    params, xs, ys = mlp_data(seed=5)

    def loss(np_):
        def f(params, x, y):
            w1, b1, w2, b2 = params
            h = np_.tanh(x @ w1 + b1)
            return ((h @ w2 + b2 - y) ** 2).sum()
        return f

    got = tracejit.vmap(tracejit.grad(loss(np)), in_axes=(None, 0, 0))(params, xs, ys)
    want = jax.vmap(jax.grad(loss(jnp)), in_axes=(None, 0, 0))(params, xs, ys)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, np.asarray(w), rtol=1e-12)
    got = tracejit.hessian(lambda x: (np.sin(x) * x[::-1]).sum())(xs[0])
    want = jax.hessian(lambda x: (jnp.sin(x) * x[::-1]).sum())(xs[0])
    np.testing.assert_allclose(got, np.asarray(want), rtol=1e-12)
    got = tracejit.vmap(lambda x: x.sum(axis=0), in_axes=1, out_axes=-1)(xs.reshape(5, 3, 1))
    want = jax.vmap(lambda x: x.sum(axis=0), in_axes=1, out_axes=-1)(xs.reshape(5, 3, 1))
    np.testing.assert_allclose(got, np.asarray(want), rtol=1e-13)


def test_compositions_against_jax(interpret, jax_x64):
    """grad of vmap, vmap of vmap, vmap of jvp, vmap inside scan: the same numbers as JAX."""
    jax, jnp = jax_x64, jax_x64.numpy
    rng = np.random.default_rng(6)
    w = rng.standard_normal((3, 3))
    xs, ts = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))

    def cell(xp):
        return lambda w, x: xp.tanh(x @ w) * xp.sin(x)

    pairs = [
        (tracejit.grad(lambda w: tracejit.vmap(cell(np), in_axes=(None, 0))(w, xs).sum())(w),
         jax.grad(lambda w: jax.vmap(cell(jnp), in_axes=(None, 0))(w, xs).sum())(w)),
        (tracejit.vmap(tracejit.vmap(cell(np), in_axes=(None, 0)), in_axes=(None, 1))(
            w, xs.reshape(2, 2, 3)),
         jax.vmap(jax.vmap(cell(jnp), in_axes=(None, 0)), in_axes=(None, 1))(
            w, xs.reshape(2, 2, 3))),
        (tracejit.vmap(lambda x, t: tracejit.jvp(lambda v: cell(np)(w, v), (x,), (t,))[1])(xs, ts),
         jax.vmap(lambda x, t: jax.jvp(lambda v: cell(jnp)(w, v), (x,), (t,))[1])(xs, ts)),
        (tracejit.function(lambda xs: lax.scan(
            lambda c, x: (c + tracejit.vmap(cell(np), in_axes=(None, 0))(w, x), None),
            np.zeros((2, 3)), xs)[0])(xs.reshape(2, 2, 3)),
         jax.lax.scan(lambda c, x: (c + jax.vmap(cell(jnp), in_axes=(None, 0))(w, x), None),
                      jnp.zeros((2, 3)), xs.reshape(2, 2, 3))[0]),
    ]
    for got, want in pairs:
        np.testing.assert_allclose(got, np.asarray(want), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("mode", ["interpreted", "compiled"])
def test_vmap_of_random_draws_gives_each_example_its_own_draws(mode, monkeypatch):
    """Under vmap a draw's position leaves out the batch axis: the same key draws the
    same numbers for every example, per-example keys what each would draw alone."""
    from tracejit import random as tr

    monkeypatch.setenv("TRACEJIT_COMPILE", "sync")
    if mode == "interpreted":
        monkeypatch.setenv("TRACEJIT_DISABLE_JIT", "1")
    xs = np.arange(1.0, 13.0).reshape(4, 3)
    keys = np.stack([tr.key(seed) for seed in range(4)])

    def shared(x):
        return x * tr.uniform(tr.key(3), x, x.dtype)

    def own(key, x):
        return x * tr.normal(key, x, x.dtype)

    np.testing.assert_array_equal(tracejit.function(tracejit.vmap(shared))(xs),
                                  np.stack([shared(x) for x in xs]))
    np.testing.assert_allclose(tracejit.function(tracejit.vmap(own))(keys, xs),
                               np.stack([own(k, x) for k, x in zip(keys, xs)]), rtol=1e-12)
