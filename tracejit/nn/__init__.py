"""Neural-network building blocks with Keras' names on top of the compiler.

- numerically stable composites (`softmax`, `log_softmax`, `logsumexp`,
  `sigmoid`, `relu`, `softplus`, `erf`, `cross_entropy`): functional.py;
- `activations` by name or function; `initializers`;
- layers `Dense`, `Activation`, `Input`, models `Model` (subclassing),
  `Sequential`, with `compile` / `fit` / `evaluate` / `predict`;
- `losses`, `metrics`, `optimizers` (SGD, Adam, AdamW, RMSprop, Adagrad and
  learning-rate `schedules`).
"""

from . import activations, initializers, layers, losses, metrics, optimizers
from .functional import (
    cross_entropy,
    erf,
    log_softmax,
    logsumexp,
    relu,
    sigmoid,
    softmax,
    softplus,
)
from .initializers import set_random_seed
from .layers import Activation, Dense, Input, Layer, floatx, set_floatx
from .models import Model, Sequential
from .training import History

__all__ = [
    "Activation", "Dense", "History", "Input", "Layer", "Model", "Sequential", "activations",
    "cross_entropy", "erf", "floatx", "initializers", "layers", "log_softmax", "logsumexp",
    "losses", "metrics", "optimizers", "relu", "set_floatx", "set_random_seed", "sigmoid",
    "softmax", "softplus",
]
