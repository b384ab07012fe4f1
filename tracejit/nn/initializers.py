"""Weight initializers with Keras' names and formulas: `initializer(shape, dtype)`
returns a NumPy array. Draws come from one generator (`set_random_seed`) or
from the initializer's own `seed`.
"""

from __future__ import annotations

import numpy as np

_rng = np.random.default_rng()


def set_random_seed(seed: int) -> None:
    """Seed the generator behind every initializer without its own seed."""
    global _rng
    _rng = np.random.default_rng(seed)


class Initializer:
    def __init__(self, seed=None):
        self.seed = seed

    def generator(self) -> np.random.Generator:
        return _rng if self.seed is None else np.random.default_rng(self.seed)

    def __call__(self, shape, dtype=np.float32) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Constant(Initializer):
    def __init__(self, value=0.0):
        super().__init__()
        self.value = value

    def __call__(self, shape, dtype=np.float32):
        return np.full(shape, self.value, dtype=dtype)


class Zeros(Constant):
    def __init__(self):
        super().__init__(0.0)


class Ones(Constant):
    def __init__(self):
        super().__init__(1.0)


class RandomNormal(Initializer):
    def __init__(self, mean=0.0, stddev=0.05, seed=None):
        super().__init__(seed)
        self.mean, self.stddev = mean, stddev

    def __call__(self, shape, dtype=np.float32):
        return self.generator().normal(self.mean, self.stddev, shape).astype(dtype)


class RandomUniform(Initializer):
    def __init__(self, minval=-0.05, maxval=0.05, seed=None):
        super().__init__(seed)
        self.minval, self.maxval = minval, maxval

    def __call__(self, shape, dtype=np.float32):
        return self.generator().uniform(self.minval, self.maxval, shape).astype(dtype)


class TruncatedNormal(RandomNormal):
    """Normal draws, redrawn until within two standard deviations of the mean."""

    def __call__(self, shape, dtype=np.float32):
        return (self.mean + self.stddev * _truncated(self.generator(), shape)).astype(dtype)


def _truncated(rng: np.random.Generator, shape) -> np.ndarray:
    draws = rng.standard_normal(shape)
    while True:
        outside = np.abs(draws) > 2.0
        if not outside.any():
            return draws
        draws[outside] = rng.standard_normal(int(outside.sum()))


def fans(shape) -> tuple[int, int]:
    """(fan_in, fan_out) as Keras computes them (the receptive field multiplies both)."""
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = int(np.prod(shape[:-2]))
    return shape[-2] * receptive, shape[-1] * receptive


class VarianceScaling(Initializer):
    """Draws with variance `scale / n`, n the fan in, fan out or their mean."""

    def __init__(self, scale=1.0, mode="fan_in", distribution="truncated_normal", seed=None):
        super().__init__(seed)
        self.scale, self.mode, self.distribution = scale, mode, distribution

    def __call__(self, shape, dtype=np.float32):
        fan_in, fan_out = fans(tuple(shape))
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[self.mode]
        variance = self.scale / max(1.0, n)
        rng = self.generator()
        if self.distribution == "uniform":
            limit = np.sqrt(3.0 * variance)
            return rng.uniform(-limit, limit, shape).astype(dtype)
        if self.distribution == "untruncated_normal":
            return (np.sqrt(variance) * rng.standard_normal(shape)).astype(dtype)
        # std of a unit normal truncated to [-2, 2]: rescale to keep the variance
        stddev = np.sqrt(variance) / 0.87962566103423978
        return (stddev * _truncated(rng, shape)).astype(dtype)


def _scaling(scale, mode, distribution):
    class Named(VarianceScaling):
        def __init__(self, seed=None):
            super().__init__(scale, mode, distribution, seed)

    return Named


GlorotUniform = _scaling(1.0, "fan_avg", "uniform")
GlorotNormal = _scaling(1.0, "fan_avg", "truncated_normal")
HeUniform = _scaling(2.0, "fan_in", "uniform")
HeNormal = _scaling(2.0, "fan_in", "truncated_normal")
LecunUniform = _scaling(1.0, "fan_in", "uniform")
LecunNormal = _scaling(1.0, "fan_in", "truncated_normal")
for _cls, _name in [(GlorotUniform, "GlorotUniform"), (GlorotNormal, "GlorotNormal"),
                    (HeUniform, "HeUniform"), (HeNormal, "HeNormal"),
                    (LecunUniform, "LecunUniform"), (LecunNormal, "LecunNormal")]:
    _cls.__name__ = _cls.__qualname__ = _name

class Orthogonal(Initializer):
    """A random orthogonal matrix (the QR of a normal draw, signs fixed by R's
    diagonal), as Keras' default recurrent kernel; leading axes are flattened."""

    def __init__(self, gain=1.0, seed=None):
        super().__init__(seed)
        self.gain = gain

    def __call__(self, shape, dtype=np.float32):
        rows, cols = int(np.prod(shape[:-1])), shape[-1]
        a = self.generator().standard_normal((max(rows, cols), min(rows, cols)))
        q, r = np.linalg.qr(a)
        q *= np.sign(np.diag(r))
        q = q if rows >= cols else q.T
        return (self.gain * q[:rows, :cols]).reshape(shape).astype(dtype)


NAMES = {
    "uniform": RandomUniform, "orthogonal": Orthogonal,
    "zeros": Zeros, "ones": Ones, "constant": Constant, "random_normal": RandomNormal,
    "random_uniform": RandomUniform, "truncated_normal": TruncatedNormal,
    "glorot_uniform": GlorotUniform, "glorot_normal": GlorotNormal, "he_uniform": HeUniform,
    "he_normal": HeNormal, "lecun_uniform": LecunUniform, "lecun_normal": LecunNormal,
}


def get(identifier):
    """An initializer from a name (Keras' snake_case names), an instance or a
    function `(shape, dtype) -> array`."""
    if isinstance(identifier, type):
        return identifier()
    if callable(identifier):
        return identifier
    try:
        return NAMES[identifier]()
    except (KeyError, TypeError):
        raise ValueError(f"unknown initializer {identifier!r}; known: "
                         f"{', '.join(sorted(NAMES))}") from None
