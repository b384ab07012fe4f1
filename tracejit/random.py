"""Random numbers that work the same eagerly, traced and compiled.

Two vocabularies over one counter-based generator (Threefry-2x32, see
primitives/random.py), whose draw is a pure function of a key and a counter:

- functional, as `jax.random`: `k = key(0)`, `k1, k2 = split(k)`,
  `uniform(k1, (3, 4))`, `normal`, `bernoulli`, `categorical`, `permutation`.
  The same key gives the same numbers; new numbers need a new key.
- stateful, as Keras 3's `SeedGenerator` / `tf.random.Generator`:
  `gen = SeedGenerator(42)`, `gen.normal((3,))` or `normal(gen, (3,))`. Its
  state is a `tracejit.Variable`: a compiled function that draws from it
  advances it on every call (a fresh draw each time, no retrace), exactly as
  eager code would.

A key is a uint32 array of two words. Inside a kernel, a draw is an
elementwise equation of the element's position, so it fuses into the loop
nest of its consumers; the interpreter and the kernel give the same bits.
The default float dtype is float64 (NumPy's); pass `dtype=np.float32` for
Keras' floatx. Legacy `np.random.*` calls inside a traced function draw from
`global_generator()` (registered below into tracejit/numpy/random.py).
"""

from __future__ import annotations

import numpy as np

from .core.errors import TracerTypeError, with_location
from .core.shapes import value as size_value
from .frontend.variables import Variable
from .numpy import random as numpy_random
from .primitives.random import random_bits
from .trace import ops
from .trace.tracer import Tracer, operand

__all__ = ["SeedGenerator", "Generator", "bernoulli", "categorical", "exponential",
           "global_generator", "key", "normal", "permutation", "seed", "split",
           "uniform"]

# The counter's first word says what a block is for, so streams never overlap:
# draws use 0, 1, ...; split and the generators' next keys use the top values.
_SPLIT = 0xFFFFFFFF
_WORD_MASK = 0xFFFFFFFF


def key(seed) -> np.ndarray:
    """A key from an integer seed (as `jax.random.key` / `PRNGKey`)."""
    seed = int(seed)
    return np.array([(seed >> 32) & _WORD_MASK, seed & _WORD_MASK], dtype=np.uint32)


PRNGKey = key


def _check_key(k, what: str):
    k = operand(_as_key(k))
    aval = ops.aval_of(k)
    if tuple(map(size_value, aval.shape)) != (2,) or aval.dtype != np.uint32:
        raise TracerTypeError(with_location(
            f"tracejit.random.{what}: a key is a uint32 array of shape (2,) "
            f"(tracejit.random.key(seed)), got {aval.dtype} {tuple(aval.shape)}"))
    return k


def _as_key(k):
    if isinstance(k, SeedGenerator):
        return k.next()
    if isinstance(k, Variable):
        return k.value if not isinstance(operand(k), Tracer) else operand(k)
    return k


def _bits(k, stream, like, dtype):
    """`random_bits` of key `k` at counter word `stream`, shaped like `like`."""
    k0, k1 = k[0], k[1]
    return ops.bind(random_bits, k0, k1, stream, like, dtype=np.dtype(dtype))


def _like(shape):
    """A stand-in of `shape` whose values are never read (only its shape): a
    broadcast scalar, or the given array itself."""
    if isinstance(shape, (Tracer, Variable, np.ndarray)) or (
            isinstance(shape, np.generic) and not isinstance(shape, np.integer)):
        return operand(shape)
    shape = (int(shape),) if np.ndim(shape) == 0 else tuple(int(d) for d in shape)
    return ops.broadcast_in_dim(np.float32(0), shape, (), traced=True)


def _float(dtype):
    dtype = np.dtype(np.float64 if dtype is None else dtype)
    if dtype not in (np.float32, np.float64):
        raise TracerTypeError(with_location(
            f"tracejit.random: floating draws are float32 or float64, got {dtype}"))
    return dtype


def split(k, num=2):
    """`num` new keys from `k` (an array of shape (num, 2)), as `jax.random.split`."""
    k = _check_key(k, "split")
    return _bits(k, _SPLIT, _like((int(num), 2)), np.uint32)


def bits(k, shape=()):
    """Uniform uint32 words."""
    return _bits(_check_key(k, "bits"), 0, _like(shape), np.uint32)


def uniform(k, shape=(), dtype=None, minval=0.0, maxval=1.0):
    """Uniform floats in [minval, maxval)."""
    u = _bits(_check_key(k, "uniform"), 0, _like(shape), _float(dtype))
    if isinstance(minval, (int, float)) and isinstance(maxval, (int, float)) \
            and (minval, maxval) == (0.0, 1.0):
        return u
    return u * (maxval - minval) + minval


def normal(k, shape=(), dtype=None, loc=0.0, scale=1.0):
    """Standard normal floats (Box-Muller on two uniforms), times `scale` plus `loc`."""
    k = _check_key(k, "normal")
    dtype, like = _float(dtype), _like(shape)
    u1 = _bits(k, 0, like, dtype)
    u2 = _bits(k, 1, like, dtype)
    radius = np.sqrt(-2.0 * np.log1p(-u1))  # 1 - u1 is in (0, 1]: finite
    z = radius * np.cos((2.0 * np.pi) * u2)
    if isinstance(loc, (int, float)) and isinstance(scale, (int, float)) \
            and (loc, scale) == (0.0, 1.0):
        return z
    return z * scale + loc


def exponential(k, shape=(), dtype=None):
    """Exponential floats of rate 1."""
    return -np.log1p(-uniform(k, shape, dtype))


def bernoulli(k, p=0.5, shape=None):
    """Booleans, True with probability `p` (broadcast against `shape`)."""
    shape = np.shape(operand(p)) if shape is None else shape
    dtype = ops.aval_of(operand(p)).dtype
    dtype = dtype if dtype in (np.float32, np.float64) else np.float64
    return uniform(k, shape, dtype) < p


def categorical(k, logits, axis=-1, shape=None):
    """Class indices drawn with probabilities softmax(logits) along `axis`
    (Gumbel-max: argmax(logits + Gumbel noise)); `shape` is the batch shape of
    the draws, logits broadcast against it (default: logits without `axis`)."""
    logits = operand(logits)
    aval = ops.aval_of(logits)
    dtype = aval.dtype if aval.dtype in (np.float32, np.float64) else np.float64
    ndim = len(aval.shape)
    axis = axis % ndim - ndim  # from the end: leading batch axes may be added
    like = logits
    if shape is not None:  # JAX's rule: shape = extra leading axes + logits' batch axes
        prefix = tuple(shape)[:len(shape) - (ndim - 1)]
        like = _like((*prefix, *map(size_value, aval.shape)))
    u = uniform(k, like, dtype)
    tiny = np.finfo(dtype).tiny
    gumbel = -np.log(np.maximum(-np.log1p(-u), tiny))
    return np.argmax(logits + gumbel, axis=axis)


def permutation(k, x, axis=0):
    """A random permutation of range(x) (an int), or of `x` along `axis`."""
    k = _check_key(k, "permutation")
    if isinstance(x, (int, np.integer)):
        return np.argsort(uniform(k, (int(x),)))
    x = operand(x)
    n = ops.aval_of(x).shape[axis]
    order = np.argsort(uniform(k, (int(n),)))
    return ops.gather(x, [order], axis % len(ops.aval_of(x).shape))


def _draws(cls):
    """The functional draws as methods of a generator (`gen.normal(shape)`)."""
    for name in ("uniform", "normal", "exponential", "bernoulli",
                 "categorical", "permutation", "bits"):
        fn = globals()[name]

        def method(self, *args, _fn=fn, **kwargs):
            return _fn(self.next(), *args, **kwargs)

        method.__name__ = name
        method.__doc__ = fn.__doc__
        setattr(cls, name, method)
    return cls


@_draws
class SeedGenerator:
    """A stateful generator, as Keras 3's `keras.random.SeedGenerator` and
    `tf.random.Generator`: its state (a base key and a call counter) is a
    non-trainable `tracejit.Variable`, so a compiled function drawing from it
    gets new numbers on every call and advances it, without retracing.

        gen = tracejit.random.SeedGenerator(42)
        @tracejit.function
        def noisy(x):
            return x + 0.1 * gen.normal(x.shape)   # or tracejit.random.normal(gen, ...)
    """

    def __init__(self, seed=None, name=None):
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1, np.uint64)[0])
        base = key(seed)
        self.state = Variable(np.array([base[0], base[1], 0], dtype=np.uint32),
                              trainable=False, name=name or "seed_generator_state")

    def next(self):
        """A new key; advances the state by one."""
        state = operand(self.state)
        base = state[0:2]
        new_key = _bits(base, state[2], _like((2,)), np.uint32)
        self.state.assign(state + np.array([0, 0, 1], dtype=np.uint32))
        return new_key

    def reseed(self, seed) -> None:
        base = key(seed)
        self.state.assign(np.array([base[0], base[1], 0], dtype=np.uint32))

    def __repr__(self) -> str:
        return f"<tracejit.random.SeedGenerator state={self.state.numpy().tolist()}>"


Generator = SeedGenerator  # tf.random.Generator's name

_global: list = []


def global_generator() -> SeedGenerator:
    """The generator legacy `np.random.*` calls draw from inside traced
    functions: seeded (once, on first use) from a digest of NumPy's global
    state, so `np.random.seed(n)` before the first traced draw fixes it."""
    if not _global:
        state = np.random.mtrand._rand.get_state()
        digest = np.frombuffer(np.asarray(state[1]).tobytes(), np.uint64)
        seed_value = int(np.bitwise_xor.reduce(digest) ^ np.uint64(state[2]))
        _global.append(SeedGenerator(seed_value, name="numpy_random_state"))
    return _global[0]


def seed(value) -> None:
    """Reseed the generator legacy `np.random.*` calls use inside traced functions."""
    global_generator().reseed(value)


# ------------------------------------ legacy np.random draws inside a trace

def _size(size, *params):
    if size is not None:
        return (int(size),) if np.ndim(size) == 0 else tuple(int(d) for d in size)
    return np.broadcast_shapes(*(np.shape(operand(p)) for p in params))


def _legacy_uniform(low=0.0, high=1.0, size=None):
    return uniform(global_generator(), _size(size, low, high), minval=low, maxval=high)


def _legacy_normal(loc=0.0, scale=1.0, size=None):
    return normal(global_generator(), _size(size, loc, scale), loc=loc, scale=scale)


def _legacy_exponential(scale=1.0, size=None):
    return exponential(global_generator(), _size(size, scale)) * scale


def _legacy_randint(low, high=None, size=None, dtype=int):
    low, high = (0, low) if high is None else (low, high)
    u = _legacy_uniform(size=_size(size, low, high))
    return np.floor(u * (high - low) + low).astype(dtype)


def _legacy_choice(a, size=None, replace=True, p=None):
    n = int(a) if isinstance(a, (int, np.integer)) else len(operand(a))
    if not replace:
        if p is not None:
            raise numpy_random.RandomInTraceError(with_location(
                "np.random.choice(replace=False, p=...) is not drawn at run time",
                hint=numpy_random.HINT))
        count = int(np.prod(_size(size)))
        index = permutation(global_generator(), n)[:count].reshape(_size(size))
    elif p is None:
        index = _legacy_randint(n, size=size)
    else:
        logits = np.log(np.asarray(p, dtype=np.float64))
        index = categorical(global_generator(), logits, shape=_size(size))
    return index if isinstance(a, (int, np.integer)) else ops.gather(operand(a), [index], 0)


numpy_random.RUNTIME_DRAWS.update({
    "rand": lambda *shape: _legacy_uniform(size=shape),
    "randn": lambda *shape: _legacy_normal(size=shape),
    "random": lambda size=None: _legacy_uniform(size=size),
    "random_sample": lambda size=None: _legacy_uniform(size=size),
    "ranf": lambda size=None: _legacy_uniform(size=size),
    "sample": lambda size=None: _legacy_uniform(size=size),
    "uniform": _legacy_uniform,
    "normal": _legacy_normal,
    "standard_normal": lambda size=None: _legacy_normal(size=size),
    "exponential": _legacy_exponential,
    "standard_exponential": lambda size=None: _legacy_exponential(size=size),
    "randint": _legacy_randint,
    "permutation": lambda x: permutation(global_generator(), x),
    "choice": _legacy_choice,
})
