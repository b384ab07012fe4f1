"""Implementations of each workload's value-and-gradient, as columns of the benchmark.

An ``Impl`` is what gets timed: ``call(*args)`` with ``args`` already converted to the
implementation's own array type, the way a training loop keeps its parameters on the
framework's side. ``to_numpy(result)`` turns the result into ``(float, grads pytree of
np.ndarray)`` for the correctness check; it is not timed.

Every framework is optional: a builder raises (ImportError, usually) when it cannot run,
and the table shows "n/a" with the error type.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from workloads import Workload, tree_leaves, tree_map, tree_unflatten


@dataclass
class Impl:
    name: str
    call: Callable
    args: tuple
    to_numpy: Callable
    # Called once after the first call, untimed: blocks until a background compile is done,
    # so the steady-state timing sees the compiled kernel and not a stand-in interpreter.
    settle: Callable | None = None


def _as_numpy_result(result):
    value, grads = result
    return float(value), tree_map(np.asarray, grads)


def _numpy_like(name: str, fn: Callable, params, data) -> Impl:
    return Impl(name, fn, (params, *data), _as_numpy_result)


def build_numpy(w: Workload, params, data) -> Impl:
    return _numpy_like("numpy", w.numpy_value_and_grad, params, data)


def build_numba(w: Workload, params, data) -> Impl:
    return _numpy_like("numba", w.numba_value_and_grad, params, data)


def build_tracejit(w: Workload, params, data) -> Impl:
    # Imported here, not at the top: tracejit is under construction and any failure in it
    # must cost one table cell, not the benchmark.
    import tracejit

    vg = tracejit.value_and_grad(w.loss)
    # tracejit answers the first calls with an interpreter while Numba compiles in a
    # background thread; `wait` (if the API has it) joins that compile.
    impl = _numpy_like("tracejit", vg, params, data)
    impl.settle = getattr(vg, "wait", None)
    return impl


# --------------------------------------------------------------------------- JAX / autograd
# JAX and autograd both offer a NumPy namespace, so one factory per loss serves both. The
# plain-NumPy losses in workloads.py are left as a user writes them.


def _linear_loss_xp(xp):
    def loss(params, x, y):
        W, b = params
        return xp.mean((W * x + b - y) ** 2)

    return loss


def _mlp_loss_xp(xp):
    def loss(params, x, y):
        (W1, b1), (W2, b2) = params
        h = xp.maximum(x @ W1 + b1, 0.0)
        z = h @ W2 + b2
        z = z - z.max(axis=1, keepdims=True)
        logp = z - xp.log(xp.exp(z).sum(axis=1, keepdims=True))
        return -(y * logp).sum(axis=1).mean()

    return loss


def _elementwise_loss_xp(xp):
    def loss(params, x):
        a, c = params
        return xp.sum(xp.tanh(a * x + c) ** 2 * xp.exp(-x * x))

    return loss


_XP_LOSSES = {"linear": _linear_loss_xp, "mlp": _mlp_loss_xp, "elementwise": _elementwise_loss_xp}


def build_jax(w: Workload, params, data) -> Impl:
    import jax

    # Must precede creating any array, or float64 inputs are silently cut to float32.
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    vg = jax.jit(jax.value_and_grad(_XP_LOSSES[w.family](jnp)))

    def call(p, *d):
        # JAX dispatches asynchronously: without blocking we would time only the dispatch.
        return jax.block_until_ready(vg(p, *d))

    args = (tree_map(jnp.asarray, params), *map(jnp.asarray, data))
    return Impl("jax", call, args, _as_numpy_result)


def build_autograd(w: Workload, params, data) -> Impl:
    import autograd
    import autograd.numpy as anp

    vg = autograd.value_and_grad(_XP_LOSSES[w.family](anp))
    return _numpy_like("autograd", vg, params, data)


# --------------------------------------------------------------------------- PyTorch


def _torch_losses(torch) -> dict:
    def linear(params, x, y):
        W, b = params
        return torch.mean((W * x + b - y) ** 2)

    def mlp(params, x, y):
        (W1, b1), (W2, b2) = params
        h = torch.relu(x @ W1 + b1)
        z = h @ W2 + b2
        z = z - z.max(dim=1, keepdim=True).values
        logp = z - torch.log(torch.exp(z).sum(dim=1, keepdim=True))
        return -(y * logp).sum(dim=1).mean()

    def elementwise(params, x):
        a, c = params
        return torch.sum(torch.tanh(a * x + c) ** 2 * torch.exp(-x * x))

    return {"linear": linear, "mlp": mlp, "elementwise": elementwise}


def build_torch(w: Workload, params, data) -> Impl:
    import torch

    loss = _torch_losses(torch)[w.family]

    def call(leaves, *d):
        value = loss(tree_unflatten(params, leaves), *d)
        # autograd.grad instead of backward(): no .grad accumulation to reset between calls.
        grads = torch.autograd.grad(value, leaves)
        return value.detach(), tree_unflatten(params, grads)

    leaves = [torch.from_numpy(np.array(p)).requires_grad_() for p in tree_leaves(params)]
    args = (leaves, *(torch.from_numpy(x) for x in data))

    def to_numpy(result):
        value, grads = result
        return float(value), tree_map(lambda g: g.numpy(), grads)

    return Impl("torch", call, args, to_numpy)


# --------------------------------------------------------------------------- TensorFlow


def _tf_losses(tf) -> dict:
    def linear(params, x, y):
        W, b = params
        return tf.reduce_mean((W * x + b - y) ** 2)

    def mlp(params, x, y):
        (W1, b1), (W2, b2) = params
        h = tf.maximum(x @ W1 + b1, 0.0)
        z = h @ W2 + b2
        z = z - tf.reduce_max(z, axis=1, keepdims=True)
        logp = z - tf.math.log(tf.reduce_sum(tf.exp(z), axis=1, keepdims=True))
        return -tf.reduce_mean(tf.reduce_sum(y * logp, axis=1))

    def elementwise(params, x):
        a, c = params
        return tf.reduce_sum(tf.tanh(a * x + c) ** 2 * tf.exp(-x * x))

    return {"linear": linear, "mlp": mlp, "elementwise": elementwise}


def build_tf(w: Workload, params, data) -> Impl:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's start-up log lines clutter the table
    import tensorflow as tf

    loss = _tf_losses(tf)[w.family]

    @tf.function
    def call(leaves, *d):
        with tf.GradientTape() as tape:
            tape.watch(leaves)
            value = loss(tree_unflatten(params, leaves), *d)
        return value, tree_unflatten(params, tape.gradient(value, leaves))

    leaves = [tf.constant(p) for p in tree_leaves(params)]
    args = (leaves, *(tf.constant(x) for x in data))

    def to_numpy(result):
        value, grads = result
        return float(value), tree_map(lambda g: g.numpy(), grads)

    return Impl("tf", call, args, to_numpy)


# --------------------------------------------------------------------------- registry

BUILDERS: dict[str, Callable[[Workload, Any, Any], Impl]] = {
    "tracejit": build_tracejit,
    "numpy": build_numpy,
    "numba": build_numba,
    "jax": build_jax,
    "torch": build_torch,
    "tf": build_tf,
    "autograd": build_autograd,
}
FRAMEWORKS = ("jax", "torch", "tf", "autograd")


def build_extras(w: Workload, dtype, params, data) -> list[Impl]:
    """Workload-specific hand kernels (e.g. numba-par), where they support the dtype."""
    return [
        _numpy_like(name, fn, params, data)
        for name, (fn, dtypes) in w.extras.items()
        if np.dtype(dtype).name in dtypes
    ]
