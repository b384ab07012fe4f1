"""The numerically stable composites under their `tracejit.nn.functional` name.

They live in `tracejit.numpy.composites`, below both this package and the
SciPy surface (`scipy.special.logsumexp`, `softmax`, `expit` use them too).
"""

from ..numpy.composites import (  # noqa: F401
    binary_cross_entropy,
    cross_entropy,
    erf,
    log_sigmoid,
    log_softmax,
    logsumexp,
    relu,
    sigmoid,
    sigmoid_cross_entropy,
    softmax,
    softplus,
    sparse_cross_entropy,
)
