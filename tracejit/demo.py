"""The demo: gradients of the four seed questions' models, trained, then the
profile of what the JIT cost and bought.

    python -m tracejit demo        (also: python examples/demo.py)

Every question is "how do I get the gradient of my loss with respect to my
variables?", asked in TensorFlow words; here the loss is plain NumPy and one
fused Numba kernel per signature computes value and gradient.
"""

from __future__ import annotations

import time
import timeit

import numpy as np

import tracejit


def square() -> None:
    """`y = x ** 2` at x = 3: dy/dx = 6 (the GradientTape hello-world)."""
    print(f"d(x**2)/dx at 3.0 = {tracejit.grad(lambda x: x ** 2)(3.0)}")


def scalar_regression() -> None:
    """One point, scalar variables: d/dw, d/db of (y - (w x + b))**2."""
    def loss(w, b, x, y):
        return (y - (w * x + b)) ** 2

    dw, db = tracejit.grad(loss, argnums=(0, 1))(0.5, 1.0, 2.0, 3.0)
    print(f"scalar model at w=0.5, b=1: dL/dw = {dw}, dL/db = {db}")


def linear_loss(params, x, y):
    W, b = params
    return np.mean((W * x + b - y) ** 2)


def linear_model(steps: int = 200, lr: float = 0.05) -> None:
    """The linear model of the TensorFlow tutorial: gradients w.r.t. [W, b], then SGD."""
    W, b = np.array([0.5]), np.array([0.0])
    x, y = np.array([1.0, 2.0, 3.0, 4.0]), np.array([2.0, 4.0, 6.0, 8.0])
    value_and_grad = tracejit.value_and_grad(linear_loss)
    loss, (dW, db) = value_and_grad((W, b), x, y)
    print(f"linear model: loss = {loss:.4f}, dL/dW = {dW}, dL/db = {db}")
    for _ in range(steps):
        loss, (dW, db) = value_and_grad((W, b), x, y)
        W, b = W - lr * dW, b - lr * db
    print(f"  after {steps} SGD steps: W = {W[0]:.4f}, b = {b[0]:.4f}, loss = {loss:.2e}")


def mlp_loss(params, x, y):
    """Dense(10 -> 5, relu) -> Dense(5 -> 2) -> softmax cross-entropy."""
    (W1, b1), (W2, b2) = params
    h = np.maximum(x @ W1 + b1, 0.0)
    z = h @ W2 + b2
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return -(y * log_p).sum(axis=1).mean()


def mlp_by_hand(params, x, y):
    """The same value and gradient written out in NumPy, for comparison."""
    (W1, b1), (W2, b2) = params
    pre = x @ W1 + b1
    h = np.maximum(pre, 0.0)
    z = h @ W2 + b2
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    n = x.shape[0]
    loss = -(y * np.log(p)).sum() / n
    dz = (p * y.sum(axis=1, keepdims=True) - y) / n
    dh = (dz @ W2.T) * (pre > 0)
    return loss, ((x.T @ dh, dh.sum(0)), (h.T @ dz, dz.sum(0)))


def mlp(steps: int = 300, lr: float = 0.5) -> tuple:
    """The two-layer Keras model of the last seed, trained with SGD; returns
    the compiled value-and-gradient and its arguments."""
    rng = np.random.default_rng(0)
    params = ((rng.normal(0, 0.3, (10, 5)), np.zeros(5)), (rng.normal(0, 0.3, (5, 2)), np.zeros(2)))
    x = rng.normal(size=(32, 10))
    y = np.eye(2)[rng.integers(0, 2, 32)]
    value_and_grad = tracejit.value_and_grad(mlp_loss)

    start = time.perf_counter()
    loss, grads = value_and_grad(params, x, y)  # answered by the interpreter while
    first = time.perf_counter() - start          # Numba compiles in the background
    ref_loss, ref_grads = mlp_by_hand(params, x, y)
    worst = max(np.abs(g - r).max() for g, r in zip(_leaves(grads), _leaves(ref_grads)))
    print(f"two-layer model: loss = {loss:.6f} (by hand {ref_loss:.6f}), largest gradient "
          f"difference {worst:.1e}; first call {first * 1e3:.1f} ms")
    for _ in range(steps):
        loss, ((dW1, db1), (dW2, db2)) = value_and_grad(params, x, y)
        (W1, b1), (W2, b2) = params
        params = ((W1 - lr * dW1, b1 - lr * db1), (W2 - lr * dW2, b2 - lr * db2))
    print(f"  after {steps} SGD steps: loss = {loss:.6f}")
    return value_and_grad, (params, x, y)


def speed_against_numpy(value_and_grad, args) -> None:
    compiled = _per_call_us(lambda: value_and_grad(*args))
    by_hand = _per_call_us(lambda: mlp_by_hand(*args))
    print(f"two-layer model, value and gradient per call: tracejit {compiled:.1f} µs, NumPy by "
          f"hand {by_hand:.1f} µs -> {by_hand / compiled:.1f}x faster")


def _leaves(tree):
    return tracejit.pytree.flatten(tree)[0]


def _per_call_us(fn, repeat: int = 5) -> float:
    number = max(1, int(0.05 / max(timeit.timeit(fn, number=1), 1e-7)))
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def main() -> None:
    with tracejit.profiler() as prof:
        square()
        scalar_regression()
        linear_model()
        trained = mlp()
        prof.wait()  # the compiles still running belong in the table
    speed_against_numpy(*trained)
    print()
    print(prof)


if __name__ == "__main__":
    main()
