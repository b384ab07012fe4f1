"""Activations with Keras' names and defaults, usable by name or as functions:
`Dense(5, activation="relu")`, `Dense(5, activation=tracejit.nn.activations.gelu)`.

All are composites of primitives (their gradients come for free) and work on
arrays, Variables and traced values alike. `softmax` and `sigmoid` used as a
layer's activation remember their logits, as Keras does: a cross-entropy loss
given those probabilities computes from the logits (stable at any scale, and
the numbers Keras gives).
"""

from __future__ import annotations

import math
import weakref

import numpy as np

from ..trace.tracer import Tracer, operand
from . import functional


def linear(x):
    return x


def relu(x):
    return functional.relu(x)


def sigmoid(x):
    return functional.sigmoid(x)


def tanh(x):
    return np.tanh(operand(x))


def softmax(x, axis=-1):
    return functional.softmax(x, axis)


def log_softmax(x, axis=-1):
    return functional.log_softmax(x, axis)


def softplus(x):
    return functional.softplus(x)


def gelu(x, approximate=False):
    """x * Phi(x); with `approximate`, the tanh form of Hendrycks and Gimpel."""
    x = operand(x)
    if approximate:
        inner = math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)
        return 0.5 * x * (1.0 + np.tanh(inner))
    return 0.5 * x * (1.0 + functional.erf(x * math.sqrt(0.5)))


def leaky_relu(x, negative_slope=0.2):
    x = operand(x)
    return np.where(x > 0, x, negative_slope * x)


def elu(x, alpha=1.0):
    """x for x > 0, alpha * (exp(x) - 1) below (no overflow in the branch not taken)."""
    x = operand(x)
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0.0)))


def silu(x):
    """x * sigmoid(x), also called swish."""
    x = operand(x)
    return x * functional.sigmoid(x)


def relu6(x):
    return np.clip(operand(x), 0.0, 6.0)


def hard_sigmoid(x):
    """relu6(x + 3) / 6, as Keras 3 (Keras 2's slope was 0.2)."""
    return np.clip(operand(x) * (1.0 / 6.0) + 0.5, 0.0, 1.0)


def hard_silu(x):
    """x * hard_sigmoid(x), also called hard_swish."""
    x = operand(x)
    return x * hard_sigmoid(x)


_SELU_ALPHA, _SELU_SCALE = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946


def selu(x):
    return _SELU_SCALE * elu(x, _SELU_ALPHA)


def softsign(x):
    x = operand(x)
    return x / (1.0 + np.abs(x))


def exponential(x):
    return np.exp(operand(x))


def mish(x):
    x = operand(x)
    return x * np.tanh(functional.softplus(x))


def log_sigmoid(x):
    return functional.log_sigmoid(x)


ACTIVATIONS = {
    "linear": linear, "relu": relu, "sigmoid": sigmoid, "tanh": tanh, "softmax": softmax,
    "log_softmax": log_softmax, "softplus": softplus, "gelu": gelu, "leaky_relu": leaky_relu,
    "elu": elu, "silu": silu, "swish": silu, "relu6": relu6, "hard_sigmoid": hard_sigmoid,
    "hard_silu": hard_silu, "hard_swish": hard_silu, "selu": selu, "softsign": softsign,
    "exponential": exponential, "mish": mish, "log_sigmoid": log_sigmoid,
}


def get(identifier):
    """An activation function from a name, a function, or None (linear)."""
    if identifier is None:
        return linear
    if callable(identifier):
        return identifier
    try:
        return ACTIVATIONS[identifier]
    except (KeyError, TypeError):
        raise ValueError(f"unknown activation {identifier!r}; known: "
                         f"{', '.join(sorted(ACTIVATIONS))}") from None


# ------------------------------------------------- probabilities' logits

_logits_of_arrays: dict[int, tuple] = {}  # id(probabilities) -> (weakref, logits)


def remember_logits(probabilities, logits, kind: str) -> None:
    """Note that `probabilities` = softmax/sigmoid(`logits`) (`kind`)."""
    if isinstance(probabilities, Tracer):
        table = probabilities.builder.__dict__.setdefault("nn_logits", {})
        table[id(probabilities.ir_var)] = (probabilities, logits, kind)
    elif isinstance(probabilities, np.ndarray):
        key = id(probabilities)
        ref = weakref.ref(probabilities, lambda _: _logits_of_arrays.pop(key, None))
        _logits_of_arrays[key] = (ref, logits, kind)


def logits_of(probabilities, kind: str):
    """The logits `probabilities` came from through `kind`, or None."""
    if isinstance(probabilities, Tracer):
        entry = probabilities.builder.__dict__.get("nn_logits", {}).get(
            id(probabilities.ir_var))
        found = entry is not None and entry[0].ir_var is probabilities.ir_var
    else:
        entry = _logits_of_arrays.get(id(probabilities))
        found = entry is not None and entry[0]() is probabilities
    return entry[1] if found and entry[2] == kind else None


def layer_activation(fn):
    """`fn` as a layer applies it: softmax and sigmoid remember their logits."""
    if fn is softmax or fn is sigmoid:
        kind = fn.__name__

        def apply(x):
            out = fn(x)
            remember_logits(out, x, kind)
            return out

        apply.__name__ = fn.__name__
        return apply
    return fn


__all__ = sorted(ACTIVATIONS) + ["get"]
