"""tracejit: trace NumPy code into IR, differentiate it, compile it to Numba kernels.

    @tracejit.function
    def loss(params, x, y): ...            # plain NumPy inside

    value, grads = tracejit.value_and_grad(loss)(params, x, y)
"""

__version__ = "0.1.0"

from . import lax, nn, pytree, testing  # noqa: F401
from . import numpy_api as _numpy_api  # noqa: F401  (installs NumPy's surface on tracers)
from .api import (
    Function,
    custom_vjp,
    function,
    grad,
    hessian,
    jacobian,
    jvp,
    make_ir,
    stop_gradient,
    value_and_grad,
    vjp,
)
from .errors import (
    ConcretizationError,
    ShapeError,
    TracejitError,
    TracerTypeError,
    UnsupportedError,
)

__all__ = [
    "ConcretizationError", "Function", "ShapeError", "TracejitError", "TracerTypeError",
    "UnsupportedError", "custom_vjp", "function", "grad", "hessian", "jacobian", "jvp", "make_ir",
    "stop_gradient", "value_and_grad", "vjp",
]
