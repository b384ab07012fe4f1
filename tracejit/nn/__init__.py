"""Neural-network building blocks with Keras' names on top of the compiler.

- composites accurate to a few ulp in the tails, gradients too (`softmax`,
  `log_softmax`, `logsumexp`, `sigmoid`, `log_sigmoid`, `relu`, `softplus`, `erf`,
  the cross-entropies): functional.py, from tracejit.numpy.composites;
- `activations` by name or function; `initializers`;
- layers `Dense`, `Activation`, `Input`; `Conv1D`, `Conv2D`, pooling, `Flatten`,
  `Reshape` (convolutional.py); `BatchNormalization`, `LayerNormalization`,
  `Dropout`, `Embedding` (normalization.py); `SimpleRNN`, `LSTM`, `GRU`
  (recurrent.py, on `lax.scan`), `Bidirectional`; `Add`, `Concatenate`...
  (merging.py); models `Model` (subclassing),
  `Sequential`, with `compile` / `fit` / `evaluate` / `predict`;
- `losses`, `metrics`, `optimizers` (SGD, Adam, AdamW, RMSprop, Adagrad and
  learning-rate `schedules`).
"""

from . import activations, callbacks, initializers, layers, losses, metrics, optimizers
from .convolutional import (
    AveragePooling1D,
    AveragePooling2D,
    Conv1D,
    Conv2D,
    Flatten,
    GlobalAveragePooling1D,
    GlobalAveragePooling2D,
    GlobalMaxPooling2D,
    MaxPooling1D,
    MaxPooling2D,
    Reshape,
)
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
from .merging import Add, Average, Concatenate, Maximum, Minimum, Multiply, Subtract
from .models import Model, Sequential
from .normalization import BatchNormalization, Dropout, Embedding, LayerNormalization
from .recurrent import GRU, LSTM, Bidirectional, SimpleRNN
from .saving import load_model
from .training import History

__all__ = [
    "GRU", "LSTM", "AveragePooling1D", "AveragePooling2D", "BatchNormalization", "Conv1D",
    "Conv2D", "Dropout", "Embedding", "Flatten", "GlobalAveragePooling1D",
    "GlobalAveragePooling2D", "GlobalMaxPooling2D", "LayerNormalization", "MaxPooling1D",
    "MaxPooling2D", "Reshape", "SimpleRNN", "Add", "Average", "Bidirectional", "Concatenate",
    "Maximum", "Minimum", "Multiply", "Subtract", "load_model",
    "Activation", "Dense", "History", "Input", "Layer", "Model", "Sequential", "activations",
    "callbacks",
    "binary_cross_entropy", "cross_entropy", "erf", "floatx", "initializers", "layers",
    "log_sigmoid", "log_softmax", "logsumexp", "losses", "metrics", "optimizers", "relu",
    "set_floatx", "set_random_seed", "sigmoid", "sigmoid_cross_entropy", "softmax",
    "softplus", "sparse_cross_entropy",
]
