"""`grad` of a function whose Python control flow reads traced values: the eager tape.

A `while err > tol:` loop or a series summed until a term is small cannot be
traced (the condition has no value while tracing: `ConcretizationError`). The
eager `GradientTape` follows any Python control flow, so `grad` and
`value_and_grad` fall back to it for such a function, once warned: each call
then runs the function eagerly, recording, and differentiates what it
recorded (the adjoint program is cached by structure, so a loop that takes
the same path twice reuses it). Inside another eager gradient (`grad(grad(f))`)
the nested tape records its gradient too, so higher orders work the same way.
"""

from __future__ import annotations

import numpy as np

from ..core import pytree
from ..core.errors import warn
from ..trace.tracer import current_builder
from .eager import EagerBuilder, unwrap
from .tape import GradientTape


class EagerFallbackWarning(UserWarning):
    """A gradient runs eagerly because its function's control flow reads traced values."""


FALLBACK_WARNING = (
    "{name}: Python control flow depends on a traced value ({error}), so the gradient runs "
    "eagerly on the GradientTape, uncompiled. To compile it, write the loop with "
    "tracejit.lax.while_loop / lax.fori_loop and the branch with lax.cond (or np.where)")


def can_fall_back() -> bool:
    """Outside any trace, or inside an eager tape (nested gradients share its builder)."""
    builder = current_builder()
    return builder is None or isinstance(builder, EagerBuilder)


def warn_once(transform, error) -> None:
    if not getattr(transform, "_eager_warned", False):
        transform._eager_warned = True
        first_line = str(error).splitlines()[0]
        warn(FALLBACK_WARNING.format(name=transform.name, error=first_line), EagerFallbackWarning)


def eager_grad(transform, args, kwargs):
    """What the compiled `Grad` transform returns, computed on an eager tape."""
    nested = current_builder() is not None
    argnums = transform.argnums
    nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    with GradientTape(persistent=False, watch_accessed_variables=False) as tape:
        args = list(args)
        for n in nums:
            args[n] = tape.watch(_as_float(args[n]))
        out = transform.fun.fn(*args, **kwargs)
    value, aux = out if transform.has_aux else (out, None)
    grads = tape.gradient(value, [args[n] for n in nums], unconnected_gradients="zero")
    grads = grads[0] if isinstance(argnums, int) else tuple(grads)
    if transform.with_value:
        result = ((value, aux) if transform.has_aux else value), grads
    else:
        result = (grads, aux) if transform.has_aux else grads
    return result if nested else _as_arrays(result)


def _as_float(tree):
    """Integer arguments cannot be differentiated; Python numbers become float64."""
    leaves, treedef = pytree.flatten(tree)
    return pytree.unflatten(treedef, [np.asarray(x, np.float64) if isinstance(x, (int, float))
                                      else x for x in leaves])


def _as_arrays(tree):
    leaves, treedef = pytree.flatten(unwrap(tree))
    return pytree.unflatten(treedef, [np.asarray(x) if not isinstance(x, np.ndarray) else x
                                      for x in leaves])
