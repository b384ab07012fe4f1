"""tracejit: trace NumPy code into IR, differentiate it, compile it to Numba kernels.

    @tracejit.function
    def loss(params, x, y): ...            # plain NumPy inside

    value, grads = tracejit.value_and_grad(loss)(params, x, y)
"""

__version__ = "0.1.0"

from . import lax, nn, pytree, random, testing  # noqa: F401
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
    LeakedTracerError,
    ShapeError,
    TracejitError,
    TracerTypeError,
    UnsupportedError,
)
from .log import RetraceWarning
from .profiling import Profiler, Report, profile, profiler
from .tape import GradientTape, UnconnectedGradients, gradients
from .variables import Variable

__all__ = [
    "ConcretizationError", "Function", "GradientTape", "LeakedTracerError", "Profiler",
    "Report", "RetraceWarning", "ShapeError", "TracejitError", "TracerTypeError",
    "UnconnectedGradients", "UnsupportedError", "Variable", "custom_vjp", "function", "grad",
    "gradients", "hessian", "jacobian", "jvp", "make_ir", "profile", "profiler",
    "stop_gradient", "value_and_grad", "vjp",
]
