"""The five ANCHORS.md workloads: data, the loss in plain NumPy, and hand-written baselines.

Every implementation has the signature ``value_and_grad(params, *data) -> (value, grads)``
with ``grads`` in the structure of ``params``. ``Workload.loss`` is what the tracejit column
traces: it is written the way a user would write it, with nothing but NumPy.

Framework versions (JAX, PyTorch, TF, autograd) live in ``frameworks.py`` so that importing
this module never imports a framework (the first-call subprocesses import it too).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
from numba import njit, prange, types
from numba.extending import intrinsic

# --------------------------------------------------------------------------- pytrees
# A tiny pytree of our own: benchmarks must not depend on tracejit (it may be broken) nor on
# JAX (it may be absent). Dict keys are sorted, as in JAX and tracejit, so leaf orders agree.


def tree_leaves(tree: Any) -> list:
    if isinstance(tree, (tuple, list)):
        return [leaf for child in tree for leaf in tree_leaves(child)]
    if isinstance(tree, dict):
        return [leaf for key in sorted(tree) for leaf in tree_leaves(tree[key])]
    return [tree]


def tree_unflatten(like: Any, leaves) -> Any:
    """Rebuild a tree shaped like ``like`` from ``leaves`` (any iterable, in leaf order)."""
    it = iter(leaves)

    def build(node):
        if isinstance(node, (tuple, list)):
            return type(node)(build(child) for child in node)
        if isinstance(node, dict):
            return {key: build(node[key]) for key in sorted(node)}
        return next(it)

    return build(like)


def tree_map(fn: Callable, tree: Any) -> Any:
    return tree_unflatten(tree, [fn(leaf) for leaf in tree_leaves(tree)])


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Workload:
    name: str
    description: str
    family: str  # "linear" | "mlp" | "elementwise": picks the framework versions of the loss
    make_data: Callable  # make_data(dtype, seed) -> (params, data_tuple)
    loss: Callable  # loss(params, *data) -> scalar, plain NumPy
    numpy_value_and_grad: Callable
    numba_value_and_grad: Callable
    heavy: bool = False  # skipped by --quick
    # Extra hand-written kernels, name -> (value_and_grad, dtypes it supports).
    extras: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- seed-linear


def linear_loss(params, x, y):
    W, b = params
    return np.mean((W * x + b - y) ** 2)


def linear_data(dtype, seed):
    rng = np.random.default_rng(seed)
    params = (rng.standard_normal(1).astype(dtype), rng.standard_normal(1).astype(dtype))
    x = np.array([1.0, 2.0, 3.0, 4.0], dtype=dtype)
    y = np.array([2.0, 4.0, 6.0, 8.0], dtype=dtype)
    return params, (x, y)


def numpy_linear_value_and_grad(params, x, y):
    W, b = params
    r = W * x + b - y
    g = (2.0 / r.size) * r
    # keepdims keeps the (1,) shape of W and b for the 1-D data of this workload.
    return np.mean(r * r), ((g * x).sum(keepdims=True), g.sum(keepdims=True))


@njit(cache=True)
def _linear_kernel(W, b, x, y):
    s = 0.0
    gw = 0.0
    gb = 0.0
    for i in range(x.shape[0]):
        r = W[0] * x[i] + b[0] - y[i]
        s += r * r
        gw += r * x[i]
        gb += r
    n = x.shape[0]
    # Gradients are allocated inside the kernel: np.full in the Python wrapper costs more than
    # the whole kernel at this size.
    gW = np.empty_like(W)
    gB = np.empty_like(b)
    gW[0] = 2.0 * gw / n
    gB[0] = 2.0 * gb / n
    return s / n, gW, gB


def numba_linear_value_and_grad(params, x, y):
    W, b = params
    value, gW, gB = _linear_kernel(W, b, x, y)
    return value, (gW, gB)


# --------------------------------------------------------------------------- MLPs


def mlp_loss(params, x, y):
    (W1, b1), (W2, b2) = params
    h = np.maximum(x @ W1 + b1, 0.0)
    z = h @ W2 + b2
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return -(y * logp).sum(axis=1).mean()


def mlp_data(batch, n_in, n_hidden, n_out, dtype, seed):
    rng = np.random.default_rng(seed)

    def dense(n_a, n_b):
        # He-style scaling keeps the logits O(1) so the softmax is not saturated.
        W = rng.standard_normal((n_a, n_b)) * np.sqrt(2.0 / n_a)
        return W.astype(dtype), (0.1 * rng.standard_normal(n_b)).astype(dtype)

    params = (dense(n_in, n_hidden), dense(n_hidden, n_out))
    x = rng.standard_normal((batch, n_in)).astype(dtype)
    y = np.eye(n_out, dtype=dtype)[rng.integers(0, n_out, batch)]
    return params, (x, y)


def numpy_mlp_value_and_grad(params, x, y):
    (W1, b1), (W2, b2) = params
    a1 = x @ W1 + b1
    h = np.maximum(a1, 0.0)
    z = h @ W2 + b2
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    s = e.sum(axis=1, keepdims=True)
    logp = z - np.log(s)
    batch = x.shape[0]
    value = -(y * logp).sum(axis=1).mean()
    # d/dz of -sum(y*logp) is softmax(z)*sum(y) - y; sum(y) is 1 for one-hot labels but is
    # kept so the gradient is right for any y.
    dz = (e / s * y.sum(axis=1, keepdims=True) - y) / batch
    dh = dz @ W2.T
    dh *= a1 > 0
    grads = ((x.T @ dh, dh.sum(axis=0)), (h.T @ dz, dz.sum(axis=0)))
    return value, grads


@njit(cache=True)
def _bias_relu_inplace(a, b):
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            v = a[i, j] + b[j]
            a[i, j] = v if v > 0 else 0


@njit(cache=True)
def _softmax_xent_grad(z, b2, y):
    """Adds b2 to z in place; returns (mean loss, dloss/dz) row by row, in one pass."""
    batch, n_out = z.shape
    dz = np.empty_like(z)
    loss = 0.0
    for i in range(batch):
        m = -np.inf
        for k in range(n_out):
            z[i, k] += b2[k]
            m = max(m, z[i, k])
        s = 0.0
        ysum = 0.0
        for k in range(n_out):
            e = np.exp(z[i, k] - m)
            dz[i, k] = e
            s += e
            ysum += y[i, k]
        lse = m + np.log(s)
        for k in range(n_out):
            loss -= y[i, k] * (z[i, k] - lse)
            dz[i, k] = (dz[i, k] / s * ysum - y[i, k]) / batch
    return loss / batch, dz


@njit(cache=True)
def _column_sums(a):
    # Explicit loop: Numba's a.sum(axis=0) is slow to compile (NUMBA_NOTES.md).
    out = np.zeros(a.shape[1], dtype=a.dtype)
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            out[j] += a[i, j]
    return out


@njit(cache=True)
def _relu_backward_inplace(dh, h):
    for i in range(dh.shape[0]):
        for j in range(dh.shape[1]):
            if h[i, j] <= 0:
                dh[i, j] = 0


@njit(cache=True)
def _mlp_kernel(W1, b1, W2, b2, x, y):
    # BLAS for the four matrix products; loops for everything else, fused so each
    # intermediate is written once. h.T / W2.T are F-contiguous, which BLAS takes without copy.
    h = x @ W1
    _bias_relu_inplace(h, b1)
    z = h @ W2
    value, dz = _softmax_xent_grad(z, b2, y)
    dh = dz @ W2.T
    _relu_backward_inplace(dh, h)
    return value, x.T @ dh, _column_sums(dh), h.T @ dz, _column_sums(dz)


def numba_mlp_value_and_grad(params, x, y):
    (W1, b1), (W2, b2) = params
    value, gW1, gb1, gW2, gb2 = _mlp_kernel(W1, b1, W2, b2, x, y)
    return value, ((gW1, gb1), (gW2, gb2))


# --------------------------------------------------------------------------- elementwise


def elementwise_loss(params, x):
    a, c = params
    return np.sum(np.tanh(a * x + c) ** 2 * np.exp(-x * x))


def elementwise_data(n, dtype, seed):
    rng = np.random.default_rng(seed)
    params = (np.array(0.7, dtype=dtype), np.array(0.1, dtype=dtype))
    return params, (rng.standard_normal(n).astype(dtype),)


def numpy_elementwise_value_and_grad(params, x):
    a, c = params
    t = np.tanh(a * x + c)
    e = np.exp(-x * x)
    tte = t * t * e
    # d/du tanh(u)^2 = 2 t (1 - t^2); times e, written to reuse tte.
    d = 2.0 * (t * e - t * tte)
    return tte.sum(), (np.asarray((d * x).sum()), np.asarray(d.sum()))


@njit(cache=True)
def _elementwise_kernel(a, c, x):
    # The ANCHORS "Numba fused by hand" column: a serial loop calling libm tanh/exp.
    v = 0.0
    ga = 0.0
    gc = 0.0
    for i in range(x.shape[0]):
        xi = x[i]
        t = np.tanh(a * xi + c)
        e = np.exp(-xi * xi)
        v += t * t * e
        d = 2.0 * t * (1.0 - t * t) * e
        ga += d * xi
        gc += d
    return v, ga, gc


def _scalar_grads(params, ga, gc):
    a, c = params
    return np.asarray(ga, dtype=a.dtype), np.asarray(gc, dtype=c.dtype)


def numba_elementwise_value_and_grad(params, x):
    a, c = params
    v, ga, gc = _elementwise_kernel(a[()], c[()], x)
    return v, _scalar_grads(params, ga, gc)


# The NUMBA_NOTES.md recipe that beats JAX: polynomial exp/tanh the compiler can vectorise
# (no libm calls), fastmath without nnan/ninf so NaN still propagates, and prange.
# inline="always" matters: without it the call tanh -> exp was not inlined into the loop,
# which then did not vectorise (measured on 1e6, one thread: 13 ms against 1.7 ms).
_FASTMATH = {"reassoc", "nsz", "contract", "afn", "arcp"}
_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01  # Cody-Waite split: k * _LN2_HI is exact for |k| < 2^11
_LN2_LO = 1.90821492927058770002e-10


@intrinsic
def _int64_bits_as_float64(typingctx, bits):
    sig = types.float64(types.int64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.float64))

    return sig, codegen


@njit(fastmath=_FASTMATH, cache=True, inline="always")
def _exp_poly(x):
    # Clamp instead of branching so the loop stays vectorisable; exp(-708) ~ 3e-308 stands
    # in for underflow to 0, harmless in a sum.
    x = min(max(x, -708.0), 709.0)
    k = np.floor(x * _LOG2E + 0.5)
    r = x - k * _LN2_HI - k * _LN2_LO  # |r| <= ln2/2: degree 11 Taylor is accurate to 1e-15
    p = 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    return p * _int64_bits_as_float64((np.int64(k) + 1023) << 52)


@njit(fastmath=_FASTMATH, cache=True, inline="always")
def _tanh_poly(u):
    # exp of a non-positive argument never overflows; copysign restores the sign.
    e = _exp_poly(-2.0 * np.abs(u))
    return np.copysign((1.0 - e) / (1.0 + e), u)


@njit(parallel=True, fastmath=_FASTMATH, cache=True)
def _elementwise_poly_kernel(a, c, x):
    v = 0.0
    ga = 0.0
    gc = 0.0
    for i in prange(x.shape[0]):
        xi = x[i]
        t = _tanh_poly(a * xi + c)
        e = _exp_poly(-xi * xi)
        tte = t * t * e
        v += tte
        d = 2.0 * (t * e - t * tte)
        ga += d * xi
        gc += d
    return v, ga, gc


def numba_par_elementwise_value_and_grad(params, x):
    a, c = params
    v, ga, gc = _elementwise_poly_kernel(float(a), float(c), x)
    return v, _scalar_grads(params, ga, gc)


# --------------------------------------------------------------------------- the table


def mlp_workload(name, description, sizes, heavy=False):
    """sizes: (batch, inputs, hidden units, classes)."""
    return Workload(
        name=name,
        description=description,
        family="mlp",
        make_data=partial(mlp_data, *sizes),
        loss=mlp_loss,
        numpy_value_and_grad=numpy_mlp_value_and_grad,
        numba_value_and_grad=numba_mlp_value_and_grad,
        heavy=heavy,
    )


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in [
        Workload(
            name="seed-linear",
            description="mean((W*x+b-y)**2), 4 points",
            family="linear",
            make_data=linear_data,
            loss=linear_loss,
            numpy_value_and_grad=numpy_linear_value_and_grad,
            numba_value_and_grad=numba_linear_value_and_grad,
        ),
        mlp_workload("mlp-seed", "batch 32, 10->5 relu ->2 softmax xent", (32, 10, 5, 2)),
        mlp_workload(
            "mlp-medium", "batch 128, 784->256 relu ->10 softmax xent", (128, 784, 256, 10)
        ),
        mlp_workload(
            "mlp-large",
            "batch 2048, 784->256 relu ->10 softmax xent",
            (2048, 784, 256, 10),
            heavy=True,
        ),
        Workload(
            name="elementwise-1e6",
            description="sum(tanh(a*x+c)**2 * exp(-x*x)), x of 1e6",
            family="elementwise",
            make_data=partial(elementwise_data, 1_000_000),
            loss=elementwise_loss,
            numpy_value_and_grad=numpy_elementwise_value_and_grad,
            numba_value_and_grad=numba_elementwise_value_and_grad,
            extras={"numba-par": (numba_par_elementwise_value_and_grad, ("float64",))},
        ),
    ]
}


# --------------------------------------------------------------------------- checks


def tolerance(dtype) -> float:
    return 1e-6 if np.dtype(dtype) == np.float64 else 1e-3


def compare(result, reference, rtol: float) -> tuple[bool, str]:
    """Compare (value, grads) with the reference; normwise relative error per leaf.

    Normwise (max|a-b| / max|b|), not elementwise: gradients have entries near zero whose
    elementwise relative error means nothing.
    """
    (value, grads), (ref_value, ref_grads) = result, reference
    got, want = tree_leaves(grads), tree_leaves(ref_grads)
    if len(got) != len(want):
        return False, f"{len(got)} gradient leaves, expected {len(want)}"
    worst = _rel_err(value, ref_value)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        g = np.asarray(g)
        if g.shape != w.shape:
            return False, f"gradient leaf {i} has shape {g.shape}, expected {w.shape}"
        worst = max(worst, _rel_err(g, w))
    return worst <= rtol, f"max rel err {worst:.1e}"


def _rel_err(a, b) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    scale = max(float(np.max(np.abs(b), initial=0.0)), np.finfo(np.float64).tiny)
    return float(np.max(np.abs(a - b), initial=0.0)) / scale


def check_hand_gradient(workload: Workload, seed: int = 0, rtol: float = 1e-5) -> float:
    """Directional central difference of the float64 loss against the hand gradient.

    Guards the reference every other column is checked against. Returns the relative error.
    The direction has unit norm over all parameters: a bigger step moves some of the 500k
    relu pre-activations of mlp-large across zero and the difference quotient sees the kink.
    """
    params, data = workload.make_data(np.float64, seed)
    rng = np.random.default_rng(seed + 1)
    leaves = tree_leaves(params)
    direction = [rng.standard_normal(np.shape(p)) for p in leaves]
    norm = np.sqrt(sum(float(np.sum(d * d)) for d in direction))
    direction = [d / norm for d in direction]
    _, grads = workload.numpy_value_and_grad(params, *data)
    pairs = zip(tree_leaves(grads), direction, strict=True)
    slope = sum(float(np.sum(g * d)) for g, d in pairs)
    eps = 1e-6

    def shifted(sign):
        moved = [p + sign * eps * d for p, d in zip(leaves, direction, strict=True)]
        return float(workload.loss(tree_unflatten(params, moved), *data))

    numeric = (shifted(1.0) - shifted(-1.0)) / (2 * eps)
    err = abs(numeric - slope) / max(abs(slope), 1e-12)
    if err > rtol:
        raise AssertionError(f"{workload.name}: hand gradient off by {err:.1e} (finite diff)")
    return err
