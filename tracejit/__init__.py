"""tracejit: trace NumPy code into IR, differentiate it, compile it to Numba kernels.

    @tracejit.function
    def loss(params, x, y): ...            # plain NumPy inside

    value, grads = tracejit.value_and_grad(loss)(params, x, y)
"""

# ruff: noqa: E402 - a cold process's compile worker starts first (backend/startup.py,
# standard library only), so that its start-up overlaps the rest of this import.
from .backend import startup

startup.start_worker_if_cold()

# Registration, in one place and in pipeline order: the primitive records, NumPy's
# and SciPy's surface on tracers, then the control-flow records (above the backend).
# isort: off
from . import primitives  # noqa: F401
from . import numpy  # noqa: F401
from . import control  # noqa: F401
# isort: on
from . import distributed, distribution, lax, nn, random, testing  # noqa: F401
from .core import config, pytree  # noqa: F401
from .core.errors import (
    ConcretizationError,
    LeakedTracerError,
    ShapeError,
    TracejitError,
    TracerTypeError,
    UnsupportedError,
)
from .core.version import __version__  # noqa: F401
from .frontend.api import (
    Function,
    custom_vjp,
    function,
    grad,
    gradients,
    hessian,
    jacfwd,
    jacobian,
    jacrev,
    jvp,
    make_ir,
    stop_gradient,
    value_and_grad,
    vjp,
    vmap,
)
from .frontend.eager_grad import EagerFallbackWarning
from .frontend.tape import GradientTape, UnconnectedGradients
from .frontend.variables import Variable
from .observe.log import RetraceWarning
from .profiling.profiler import Profiler, Report, profile, profiler

__all__ = [
    "ConcretizationError", "EagerFallbackWarning", "Function", "GradientTape",
    "LeakedTracerError", "Profiler",
    "Report", "RetraceWarning", "ShapeError", "TracejitError", "TracerTypeError",
    "UnconnectedGradients", "UnsupportedError", "Variable", "custom_vjp", "function", "grad",
    "gradients", "hessian", "jacfwd", "jacobian", "jacrev", "jvp", "make_ir", "profile", "profiler",
    "stop_gradient", "value_and_grad", "vjp", "vmap",
]
