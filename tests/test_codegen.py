"""What the code generator decides: fusion, read-through index maps, epilogues,
the parallel path for large inputs, and shape checks at the top of kernels."""

import re

import numpy as np
import pytest

import tracejit
from tracejit import nn
from tracejit.backend.nestcall import inspect_llvm


def loop_headers(source: str) -> list[str]:
    """The loop nests of a kernel (scalar-only groups have no loop)."""
    return [line.strip() for line in source.splitlines()
            if line.strip().startswith("# loop") and "loop over ()" not in line]


def test_elementwise_chain_and_reduction_fuse_into_one_loop():
    def f(x, a, c):
        return np.sum(np.tanh(a * x + c) ** 2 * np.exp(-x * x))

    src = tracejit.value_and_grad(f, argnums=(1, 2)).source(np.ones(10), 0.5, 0.1)
    assert len(loop_headers(src)) == 1  # forward, backward and three reductions together
    assert "np.empty" not in src  # no temporaries at all


def test_row_broadcast_is_read_through_not_stored():
    src = tracejit.function(nn.softmax).source(np.ones((4, 3)))
    assert "broadcast_in_dim" not in src.split("def ")[1].split("return")[0].replace(
        "# loop", "")
    assert len(loop_headers(src)) == 3  # max, exp-sum (+ its epilogue), divide


def test_epilogue_runs_after_the_inner_loop():
    def row_norm(x):
        return np.sqrt((x * x).sum(axis=1)) + 1.0

    f = tracejit.function(row_norm)
    assert len(loop_headers(f.source(np.ones((3, 4))))) == 1
    x = np.random.default_rng(0).normal(size=(5, 7))
    np.testing.assert_allclose(f(x), row_norm(x), rtol=1e-13)


@pytest.mark.usefixtures("compiled")
def test_large_inputs_take_the_parallel_path_and_agree():
    def loss(params, x):
        a, c = params
        return np.sum(np.tanh(a * x + c) ** 2 * np.exp(-x * x)) + np.max(x)

    rng = np.random.default_rng(0)
    params = (np.array(0.7), np.array(0.1))
    vg = tracejit.value_and_grad(loss)
    src = vg.source(params, rng.normal(size=200_000))
    assert "in prange(" not in src  # max is not a prange reduction: stays serial
    smooth = tracejit.value_and_grad(lambda p, x: np.sum(np.tanh(p[0] * x + p[1]) ** 2))
    x = rng.normal(size=200_000)
    assert "in prange(" in smooth.source(params, x)
    for n in (200_000, 1_000):  # above and below the threshold, one kernel
        x = rng.normal(size=n)
        value, (ga, gc) = smooth(params, x)
        t = np.tanh(0.7 * x + 0.1)
        np.testing.assert_allclose(value, np.sum(t**2), rtol=1e-12)
        np.testing.assert_allclose(ga, np.sum(2 * t * (1 - t**2) * x), rtol=1e-10)
        np.testing.assert_allclose(gc, np.sum(2 * t * (1 - t**2)), rtol=1e-10)
    assert smooth.stats.traces == 1 and smooth.stats.compiles == 1
    value, grads = vg(params, x)
    np.testing.assert_allclose(value, loss(params, x), rtol=1e-12)


@pytest.mark.usefixtures("compiled")
def test_joined_sizes_are_checked_when_the_kernel_runs():
    f = tracejit.function(lambda x, W: x @ W)
    f(np.ones((2, 3)), np.ones((3, 4)))
    with pytest.raises(ValueError, match="matmul"):
        f(np.ones((2, 5)), np.ones((3, 4)))
    assert f.stats.traces == 1


def test_float32_kernels_write_float32_constants():
    src = tracejit.function(lambda x: np.maximum(x * 0.5, 1.0)).source(
        np.ones(3, np.float32))
    assert "np.float32(0.5)" in src and "np.float32(1.0)" in src


@pytest.mark.usefixtures("compiled")
def test_kernels_take_any_memory_layout_without_retracing():
    f = tracejit.function(lambda x, W: np.tanh(x @ W).sum(axis=0) + x[:, 0].sum())
    rng = np.random.default_rng(1)
    x, W = rng.normal(size=(5, 3)), rng.normal(size=(3, 4))
    for x_in, W_in in [(x, W), (np.asfortranarray(x), W), (x, W.T.copy().T), (x[::-1], W)]:
        expected = np.tanh(x_in @ W_in).sum(axis=0) + x_in[:, 0].sum()
        np.testing.assert_allclose(f(x_in, W_in), expected, rtol=1e-12)
    assert f.stats.traces == 1


def test_scalar_prologue_lets_forward_and_backward_share_one_loop():
    def loss(params, x, y):
        W, b = params
        return np.mean((W * x + b - y) ** 2)

    args = ((np.ones(1), np.zeros(1)), np.arange(4.0), np.arange(4.0) * 2)
    src = tracejit.value_and_grad(loss).source(*args)
    assert len(loop_headers(src)) == 1
    value, (dW, db) = tracejit.value_and_grad(loss)(*args)
    residual = args[1] - args[2]
    np.testing.assert_allclose([value, dW[0], db[0]],
                               [np.mean(residual**2), np.mean(2 * residual * args[1]),
                                np.mean(2 * residual)], rtol=1e-13)


@pytest.mark.parametrize("axis", [0, 1])
def test_many_pieces_concatenate_by_one_shared_copy_and_expand_dims_is_a_view(compiled, axis):
    # A rolled loop stacks each layer's weights: 16 pieces were 16 copy loops in
    # one nest (seconds of compile), each behind a copy adding the unit axis.
    def stack(ws):
        return np.concatenate([w[None] if axis == 0 else w[:, None] for w in ws], axis=axis)

    ws = [np.arange(12.0).reshape(3, 4) * k for k in range(5)]
    f = tracejit.function(stack)
    src = f.source(ws)
    assert src.count("_rt.put3(") == 5 and ("[None]" in src or "[:, None]" in src)
    np.testing.assert_array_equal(f(ws), stack(ws))
    g = tracejit.grad(lambda ws: np.sum(stack(ws) ** 2))(ws)
    for gk, w in zip(g, ws):
        np.testing.assert_allclose(gk, 2 * w)


def test_outlined_nests_take_lifted_offsets_as_int64_not_literals():
    from tracejit.backend.outline import outline

    helper = outline(["y = x[3] + x[5]"], ["y"], {}, "two reads", lambda parallel: "@njit")
    assert "np.int64(3), np.int64(5)" in helper.call  # one compile for every offset


def test_lifted_offsets_that_cannot_be_negative_index_unsigned():
    from tracejit.backend.outline import outline

    helper = outline(["for i in range(4):",
                      "    y[i] = x[i + 3] + x[i - 2] + x[2 * i + 1] + x[i * -1 + 5]"],
                     [], {}, "four reads", lambda parallel: "@njit")
    assert "p1[np.uint64(v0 + o0)]" in helper.module  # counter + offset
    assert "p1[np.uint64(o2 * v0 + o3)]" in helper.module  # a stride too
    assert "p1[v0 - o1]" in helper.module and "p1[v0 * -o4 + o5]" in helper.module


def test_a_nest_reading_at_column_offsets_is_vectorised(compiled):
    # An LSTM's gates are column blocks of one product: read at lifted offsets, each
    # signed index was wrapped (i < 0 ? i + n : i) and LLVM left the loop scalar.
    def gates(z):
        return np.tanh(z[:, 8:16]) * z[:, 16:24] + z[:, ::-1][:, :8]

    z = np.linspace(-1.0, 1.0, 96).reshape(4, 24)
    f = tracejit.function(gates)
    np.testing.assert_allclose(f(z), gates(z), rtol=1e-15)
    entry, _ = f.entry((z,))
    (llvm,) = [text for nest in entry.kernel.nests for text in inspect_llvm(nest).values()]
    assert re.search(r"= load <\d+ x double>", llvm), "the loop was not vectorised"


@pytest.mark.parametrize("loop", ["scan", "while_loop"])
def test_a_transpose_that_a_loop_multiplies_by_is_written_out_once(compiled, loop):
    # Read as a view, every step's product took BLAS's transposed-operand case
    # (an LSTM's backward, dz @ U^T: 87 against 54 us a step).
    from tracejit import lax

    def recur(h0, u):
        u_t = u.T
        if loop == "scan":
            return lax.scan(lambda h, _: (np.tanh(h @ u_t),) * 2, h0, None, length=5)[0]
        return lax.while_loop(lambda c: c[0] < 5, lambda c: (c[0] + 1, np.tanh(c[1] @ u_t)),
                              (0, h0))[1]

    h0, u = np.linspace(-1.0, 1.0, 12).reshape(3, 4), np.arange(16.0).reshape(4, 4) / 40
    f = tracejit.function(recur)
    src = f.source(h0, u)
    assert any(h.endswith(": transpose") for h in loop_headers(src)) and ".T)" not in src
    h = h0
    for _ in range(5):
        h = np.tanh(h @ u.T)
    np.testing.assert_allclose(f(h0, u), h, rtol=1e-14)


def test_a_scan_computes_the_rows_it_stacks_in_place(compiled):
    # An LSTM's forward stacked seven gate arrays a step, each made and then copied.
    from tracejit import lax

    def run(h0, xs):
        def step(h, x):
            h = np.tanh(0.5 * h + x)
            return h, (h, h, 2.0 * h, x)  # stacked twice, carried, and a pass-through
        return lax.scan(step, h0, xs)

    h0, xs = np.linspace(-1.0, 1.0, 6).reshape(2, 3), np.linspace(0.0, 1.0, 24).reshape(4, 2, 3)
    f = tracejit.function(run)
    src = f.source(h0, xs)
    calls = [line for line in src.splitlines() if line.lstrip().startswith("# nest_")]
    assert len(calls) == 3  # the step's nest, then the second copy of h, and x
    assert sum(line.endswith("store a step's 2-d value") for line in calls) == 2
    h, rows = h0, []
    for x in xs:
        h = np.tanh(0.5 * h + x)
        rows.append((h, h, 2.0 * h, x))
    carry, stacked = f(h0, xs)
    np.testing.assert_allclose(carry, h, rtol=1e-15)
    for got, want in zip(stacked, zip(*rows)):
        np.testing.assert_allclose(got, np.stack(want), rtol=1e-15)
    grad = tracejit.grad(lambda h0, xs: np.sum(run(h0, xs)[1][2] ** 2))(h0, xs)
    eps, bumped = 1e-6, h0.copy()
    bumped[0, 1] += eps
    numeric = (np.sum(run_numpy(bumped, xs) ** 2) - np.sum(run_numpy(h0, xs) ** 2)) / eps
    np.testing.assert_allclose(grad[0, 1], numeric, rtol=1e-5)


def run_numpy(h, xs):
    rows = []
    for x in xs:
        h = np.tanh(0.5 * h + x)
        rows.append(2.0 * h)
    return np.stack(rows)


@pytest.mark.parametrize("axis", [0, 1])
def test_a_concatenation_of_one_nests_values_is_written_by_that_nest(compiled, axis):
    # An LSTM's backward concatenates its four gates' derivatives every step.
    def pieces(a, b):
        h = a * b  # one nest computes them all
        return np.concatenate([h, np.tanh(h), h - 1.0, h * a], axis=axis)

    def shared(a, b):  # a piece read elsewhere too: stored, then concatenated
        p = a * b
        return np.concatenate([p, np.tanh(a)], axis=axis) * 2.0, p

    a, b = np.linspace(-1.0, 1.0, 12).reshape(3, 4), np.linspace(0.0, 2.0, 12).reshape(3, 4)
    f, g = tracejit.function(pieces), tracejit.function(shared)
    src = f.source(a, b)
    assert "concatenate at" not in src and "concatenate at" in g.source(a, b)
    # the offsets are the nest's constants, not parameters: LLVM then sees the pieces'
    # stores apart (an LSTM's gate derivatives: 14 -> 4 us a step)
    nest = src.split("# ----")[1]
    assert f"_k0 = np.int64({a.shape[axis]})" in nest
    assert re.search(r"\[_k0 \+ |, _k0 \+ ", nest) and not re.search(r"\bo\d+ \+ ", nest)
    np.testing.assert_allclose(f(a, b), pieces(a, b), rtol=1e-15)
    for got, want in zip(g(a, b), shared(a, b)):
        np.testing.assert_allclose(got, want, rtol=1e-15)
    h = a * b
    dh = (np.cos(h) + np.cos(np.tanh(h)) * (1 - np.tanh(h) ** 2) + np.cos(h - 1.0)
          + np.cos(h * a) * a)
    dw = tracejit.grad(lambda a, b: np.sum(np.sin(pieces(a, b))))(a, b)
    np.testing.assert_allclose(dw, dh * b + np.cos(h * a) * h, rtol=1e-13)


def test_views_of_views_are_one_index(compiled):
    # A rolled loop's gradient unstacks its layers: a slice of one row, then its
    # squeeze, 32 pairs in the 16-layer MLP's driver (0.25-0.4 s of its compile).
    def views(x):
        shared = x[2:3]  # read twice: its own view
        return (np.squeeze(shared, 0) @ x[:4].T, x[:, 3:4][:, 0] @ x,
                x[1:9][2:6:2] @ x.T, shared @ x.T, x[5:6].T @ x[5:6])

    x = np.arange(120.0).reshape(10, 12) / 7
    f = tracejit.function(views)
    src = f.source(x)
    assert "= a0[:, 3]\n" in src and "= a0[3:6:2]\n" in src  # one index each
    assert src.count("= a0[2:3:1]\n") == 1 and "= a0[5:6:1]\n" in src  # not folded
    for got, want in zip(f(x), views(x)):
        np.testing.assert_allclose(got, want, rtol=1e-15)

    def layers(Ws, h):  # a Python loop over layers: rolled, its gradient unstacked
        for W in Ws:
            h = np.tanh(h @ W)
        return np.sum(h ** 2)

    Ws = [np.sin(np.arange(16.0) + k).reshape(4, 4) / 2 for k in range(6)]
    h = np.cos(np.arange(12.0)).reshape(3, 4)
    g = tracejit.grad(layers)
    src = g.source(Ws, h)
    assert "scan over 6 steps" in src and not re.search(r"= \w+\[\d+:\d+:1\]\n", src)
    eps = 1e-6
    for k, dW in enumerate(g(Ws, h)):
        for index in np.ndindex(dW.shape):
            up, down = [W.copy() for W in Ws], [W.copy() for W in Ws]
            up[k][index] += eps
            down[k][index] -= eps
            fd = (layers(up, h) - layers(down, h)) / (2 * eps)
            assert dW[index] == pytest.approx(fd, rel=1e-6, abs=1e-9)


def test_outer_static_loop_counts_are_parameters_of_the_nest(compiled):
    # LLVM unrolled outer loops of literal counts for nothing: a convnet's gradient
    # mask over (n, 11, 11, 64) compiled in 0.45 s, 0.19 s with the 11s as parameters.
    # A small static block (a pool's 2x2 window, an innermost loop) and the loop around
    # it stay literal.
    def pool_and_mask(x, m):
        w = x.reshape(3, 6, 2, 7, 2, 5)
        return w.max(axis=(2, 4)), np.sum(np.where(m, 0.0, x), axis=(0, 1, 2))

    x = np.sin(np.arange(2520.0)).reshape(3, 12, 14, 5)
    m = np.cos(np.arange(2520.0)).reshape(3, 12, 14, 5) > 0
    f = tracejit.function(pool_and_mask)
    src = f.source(x, m)
    nests = [part for part in src.split("# ---- ")[1:]]
    assert len(nests) == 2
    counts = {"reduce_max" in nest: re.findall(r"for \w+ in range\((\w+)\):", nest)
              for nest in nests}
    assert counts[True] == ["o0", "o1", "o2", "5", "2", "2"]  # 3, 6, 7 lifted; the window
    assert counts[False] == ["o0", "o1", "14", "5"]  # and the loop around it: literal
    for got, want in zip(f(x, m), pool_and_mask(x, m)):
        np.testing.assert_allclose(got, want, rtol=1e-14)


@pytest.mark.parametrize("dt", [np.float64, np.float32])
def test_small_windows_over_inner_axes_are_looped_innermost(compiled, dt):
    # A max pool over a reshaped view reduces axes 2 and 4 of six: their loops go
    # innermost and each window's result accumulates in a scalar (0.61 -> 0.29 ms);
    # its backward weights each window's cells by the window's share (1.17 -> 0.28 ms).
    def pools(x):
        w = x.reshape(2, 6, 2, 8, 2, 5)
        return (w.max(axis=(2, 4)), w.sum(axis=(2, 4)),
                np.sum(w * (w == w.max(axis=(2, 4), keepdims=True)), axis=(2, 4)))

    x = np.sin(np.arange(1920.0)).reshape(2, 12, 16, 5).astype(dt)
    f = tracejit.function(pools)
    src = f.source(x)
    assert re.search(r"for \w+ in range\(2\):\n\s+for \w+ in range\(2\):\n\s+\w+ = _rt.maximum",
                     src), "the window's loops are not innermost"
    for got, want in zip(f(x), pools(x)):
        np.testing.assert_allclose(got, want, rtol=1e-5 if dt == np.float32 else 1e-14)
    def spread(x, s):  # the pool's backward weighting: no reduction, the same windows
        return x.reshape(2, 6, 2, 8, 2, 5) * s[:, :, None, :, None, :]

    s = np.cos(np.arange(480.0)).reshape(2, 6, 8, 5).astype(dt)
    src = tracejit.function(spread).source(x, s)
    assert re.search(r"for \w+ in range\(5\):\n\s+for \w+ in range\(2\):\n\s+for \w+ in "
                     r"range\(2\):", src), "the window's loops are not innermost"
    np.testing.assert_allclose(tracejit.function(spread)(x, s), spread(x, s), rtol=1e-15)
    g = tracejit.grad(lambda x: np.sum(np.sin(pools(x)[0])))(x)
    w = x.reshape(2, 6, 2, 8, 2, 5)
    hit = w == w.max(axis=(2, 4), keepdims=True)
    want = (hit / hit.sum(axis=(2, 4), keepdims=True)
            * np.cos(w.max(axis=(2, 4), keepdims=True))).reshape(x.shape)
    np.testing.assert_allclose(g, want, rtol=1e-5 if dt == np.float32 else 1e-14)


def test_a_concatenation_calls_its_copy_helper_without_inlining_it(compiled):
    """A rolled loop stacks every layer's weights: 16 copies, inlined, made one nest's
    compile 1.3 s. The copy helper stays a call, also when read back from disk."""
    f = tracejit.function(lambda a, b, c: np.concatenate([a, b, c]) * 2.0)
    args = [np.full((2, 3), k) for k in (1.0, 2.0, 3.0)]
    np.testing.assert_array_equal(f(*args), 2.0 * np.concatenate(args))
    entry, _ = f.entry(tuple(args))
    (llvm,) = [text for nest in entry.kernel.nests for text in inspect_llvm(nest).values()
               if "put2" in text]
    assert re.search(r"call .*@\S*put2", llvm), "the copy was inlined"


def _pool_loss(x):
    w = np.maximum(x, 0.0).reshape(x.shape[0], x.shape[1] // 2, 2, x.shape[2] // 2, 2,
                                   x.shape[3])
    return np.sum(np.sin(w.max(axis=(2, 4))))


def _pool_grad_by_hand(x):
    w = np.maximum(x, 0.0).reshape(x.shape[0], x.shape[1] // 2, 2, x.shape[2] // 2, 2,
                                   x.shape[3])
    top = w.max(axis=(2, 4), keepdims=True)
    hit = w == top
    return ((hit / hit.sum(axis=(2, 4), keepdims=True) * np.cos(top)).reshape(x.shape)
            * (x > 0))


def test_a_pools_ties_mask_is_recomputed_where_its_gradient_is_spread(compiled):
    # Max pooling's gradient counts each window's ties in one nest and spreads the
    # cotangent over them in the next: there the mask (x == max, as floats) is computed
    # again from x and the window's max (remat.py), not written by the first nest and
    # read back. The relu's boolean mask is not: that would read floats for a byte.
    x = np.sin(np.arange(8 * 32 * 32 * 8.0)).reshape(8, 32, 32, 8)
    grad = tracejit.grad(_pool_loss)
    headers = loop_headers(grad.source(x))
    counting = [h for h in headers if "reduce_sum" in h and "eq" in h]
    spreading = [h for h in headers if "div" in h]
    assert len(counting) == 1 and len(spreading) == 1, headers
    assert "eq, convert" in spreading[0], headers  # the mask made again where it is used
    assert sum("gt" in h or "le" in h or "lt" in h or "ge" in h for h in headers) == 1, headers
    np.testing.assert_allclose(grad(x), _pool_grad_by_hand(x), rtol=1e-14)


@pytest.mark.parametrize("dt", [np.float64, np.float32])
def test_rematerialised_kernels_agree_with_numpy_at_any_size(compiled, monkeypatch, dt):
    # Copies made for every value worth it, however small, then checked by value.
    from tracejit.backend import remat

    monkeypatch.setattr(remat, "FEWEST_ELEMENTS", 1)
    x = np.cos(np.arange(2 * 4 * 6 * 3.0)).reshape(2, 4, 6, 3).astype(dt)
    tol = 1e-5 if dt == np.float32 else 1e-13
    np.testing.assert_allclose(tracejit.grad(_pool_loss)(x), _pool_grad_by_hand(x), rtol=tol)

    def layer_norm(h):
        mu = h.mean(axis=-1, keepdims=True)
        var = ((h - mu) ** 2).mean(axis=-1, keepdims=True)
        return np.sum(np.tanh((h - mu) / np.sqrt(var + 1e-5)) * (h > 0.1))

    h = x.reshape(8, 18)
    value, g = tracejit.value_and_grad(layer_norm)(h)
    assert np.isclose(value, layer_norm(h), rtol=tol)
    h64, e = h.astype(np.float64), np.zeros((8, 18))
    e[3, 5] = 1e-6
    numeric = (layer_norm(h64 + e) - layer_norm(h64 - e)) / 2e-6
    assert np.isclose(g[3, 5], numeric, rtol=1e-3 if dt == np.float32 else 1e-6)
