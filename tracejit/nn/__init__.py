"""Neural-network building blocks with Keras' names on top of the compiler.

- composites accurate to a few ulp in the tails, gradients too (`softmax`,
  `log_softmax`, `logsumexp`, `sigmoid`, `log_sigmoid`, `relu`, `softplus`, `erf`,
  the cross-entropies): functional.py, from tracejit.numpy.composites;
- `activations` by name or function; `initializers`;
- layers `Dense`, `Activation`, `Input`, models `Model` (subclassing),
  `Sequential`, with `compile` / `fit` / `evaluate` / `predict`;
- `losses`, `metrics`, `optimizers` (SGD, Adam, AdamW, RMSprop, Adagrad and
  learning-rate `schedules`).
"""

from . import activations, initializers, layers, losses, metrics, optimizers
from .functional import (
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
from .initializers import set_random_seed
from .layers import Activation, Dense, Input, Layer, floatx, set_floatx
from .models import Model, Sequential
from .training import History

__all__ = [
    "Activation", "Dense", "History", "Input", "Layer", "Model", "Sequential", "activations",
    "binary_cross_entropy", "cross_entropy", "erf", "floatx", "initializers", "layers",
    "log_sigmoid", "log_softmax", "logsumexp", "losses", "metrics", "optimizers", "relu",
    "set_floatx", "set_random_seed", "sigmoid", "sigmoid_cross_entropy", "softmax",
    "softplus", "sparse_cross_entropy",
]
