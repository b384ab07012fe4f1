"""tracejit demo: the gradient of a loss with respect to its variables, compiled.

The question of every TensorFlow GradientTape tutorial, answered with plain
NumPy code and one fused Numba kernel per signature:

    python examples/demo.py
"""

import time
import timeit

import numpy as np

import tracejit


def seed_square():
    """`y = x ** 2` at x = 3: dy/dx = 6 (the GradientTape hello-world)."""
    dy_dx = tracejit.grad(lambda x: x ** 2)(3.0)
    print(f"d(x**2)/dx at 3.0 = {dy_dx}")


@tracejit.function
def linear_loss(params, x, y):
    W, b = params
    return np.mean((W * x + b - y) ** 2)


def seed_linear():
    """The linear model of the TensorFlow tutorial: gradients w.r.t. [W, b]."""
    W, b = np.array([0.5]), np.array([0.0])
    x, y = np.array([1.0, 2.0, 3.0, 4.0]), np.array([2.0, 4.0, 6.0, 8.0])
    loss, (dW, db) = tracejit.value_and_grad(linear_loss)((W, b), x, y)
    print(f"linear model: loss = {loss:.4f}, dL/dW = {dW}, dL/db = {db}")


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


def seed_mlp():
    rng = np.random.default_rng(0)
    params = ((rng.normal(0, 0.3, (10, 5)), np.zeros(5)), (rng.normal(0, 0.3, (5, 2)), np.zeros(2)))
    x = rng.normal(size=(32, 10))
    y = np.eye(2)[rng.integers(0, 2, 32)]
    value_and_grad = tracejit.value_and_grad(mlp_loss)

    start = time.perf_counter()
    loss, grads = value_and_grad(params, x, y)  # answered by the interpreter while
    first = time.perf_counter() - start          # Numba compiles in the background
    value_and_grad.wait()
    ready = time.perf_counter() - start
    ref_loss, ref_grads = mlp_by_hand(params, x, y)
    worst = max(np.abs(g - r).max() for g, r in zip(_leaves(grads), _leaves(ref_grads)))
    print(f"two-layer model: loss = {loss:.6f} (by hand {ref_loss:.6f}), "
          f"largest gradient difference {worst:.1e}")
    print(f"  first call {first:.3f} s; compiled kernel ready after {ready:.2f} s "
          f"({'loaded from the disk cache' if value_and_grad.stats.disk_hits else 'compiled'})")

    compiled = _per_call_us(lambda: value_and_grad(params, x, y))
    by_hand = _per_call_us(lambda: mlp_by_hand(params, x, y))
    print(f"  value and gradient per call: tracejit {compiled:.1f} us, "
          f"NumPy by hand {by_hand:.1f} us -> {by_hand / compiled:.1f}x faster")

    lr = 0.5
    for _ in range(100):
        loss, ((dW1, db1), (dW2, db2)) = value_and_grad(params, x, y)
        (W1, b1), (W2, b2) = params
        params = ((W1 - lr * dW1, b1 - lr * db1), (W2 - lr * dW2, b2 - lr * db2))
    print(f"  after 100 SGD steps: loss = {value_and_grad(params, x, y)[0]:.6f}")


def _leaves(tree):
    return tracejit.pytree.flatten(tree)[0]


def _per_call_us(fn, repeat=5) -> float:
    number = max(1, int(0.1 / max(timeit.timeit(fn, number=1), 1e-7)))
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


if __name__ == "__main__":
    seed_square()
    seed_linear()
    seed_mlp()
