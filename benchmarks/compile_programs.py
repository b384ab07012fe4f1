"""The programs of the compile-time benchmark, written once against an array
module `xp` (NumPy for tracejit and hand-written code, jax.numpy for JAX), as a
user would: plain Python loops over time steps and layers.

Every `make_*` returns (loss, args) for one framework; `hand_rnn_grad` is the
char-RNN's gradient written out in NumPy (backpropagation through time), the
"same maths by hand" the issue compares interpreted calls with.
"""

from __future__ import annotations

import numpy as np


def logsumexp(xp, z):
    m = xp.max(z)
    return m + xp.log(xp.sum(xp.exp(z - m)))


def rnn_loss(xp):
    def loss(params, X, Y, h0):
        Wxh, Whh, Why, bh, by = params
        h, total = h0, 0.0
        for t in range(X.shape[0]):
            h = xp.tanh(X[t] @ Wxh + h @ Whh + bh)
            logits = h @ Why + by
            total = total - (logits - logsumexp(xp, logits))[Y[t]]
        return total / X.shape[0]

    return loss


def rnn_scan_loss(xp, scan):
    """The same RNN with the loop written as `lax.scan` (tracejit's or JAX's)."""
    def loss(params, X, Y, h0):
        Wxh, Whh, Why, bh, by = params

        def step(carry, xy):
            h, total = carry
            x, y = xy
            h = xp.tanh(x @ Wxh + h @ Whh + bh)
            logits = h @ Why + by
            return (h, total - (logits - logsumexp(xp, logits))[y]), None

        (_, total), _ = scan(step, (h0, xp.sum(h0) * 0.0), (X, Y))
        return total / X.shape[0]

    return loss


def rnn_data(steps, vocab=30, hidden=64, seed=0):
    rng = np.random.default_rng(seed)
    shapes = [(vocab, hidden), (hidden, hidden), (hidden, vocab), (hidden,), (vocab,)]
    params = tuple(rng.standard_normal(s) * 0.1 for s in shapes)
    ids = rng.integers(0, vocab, steps + 1)
    return params, np.eye(vocab)[ids[:-1]], ids[1:], np.zeros(hidden)


def mlp_loss(xp):
    def loss(params, x, y):
        h = x
        for W, b in params[:-1]:
            h = xp.tanh(h @ W + b)
        W, b = params[-1]
        return xp.mean((h @ W + b - y) ** 2)

    return loss


def mlp_data(depth, width=64, batch=32, seed=0):
    rng = np.random.default_rng(seed)
    params = [(rng.standard_normal((width, width)) / 8, np.zeros(width)) for _ in range(depth)]
    params.append((rng.standard_normal((width, 1)) / 8, np.zeros(1)))
    return params, rng.standard_normal((batch, width)), rng.standard_normal((batch, 1))


def seed_mlp_loss(xp):
    """The seeds' model: Dense(10 -> 5, relu) -> Dense(5 -> 2), softmax cross-entropy."""
    def loss(params, x, y):
        (W1, b1), (W2, b2) = params
        h = xp.maximum(x @ W1 + b1, 0.0)
        z = h @ W2 + b2
        z = z - z.max(axis=1, keepdims=True)
        log_p = z - xp.log(xp.exp(z).sum(axis=1, keepdims=True))
        return -(y * log_p).sum(axis=1).mean()

    return loss


def seed_mlp_data(seed=0):
    rng = np.random.default_rng(seed)
    params = ((rng.standard_normal((10, 5)) * 0.3, np.zeros(5)),
              (rng.standard_normal((5, 2)) * 0.3, np.zeros(2)))
    x = rng.standard_normal((32, 10))
    return params, x, np.eye(2)[rng.integers(0, 2, 32)]


def ode_net_loss(xp):
    """A neural ODE: fixed-step RK4 of a small MLP's vector field in a Python loop."""
    def field(params, y):
        W1, b1, W2, b2 = params
        return xp.tanh(y @ W1 + b1) @ W2 + b2

    def loss(params, y0, target):
        y, dt = y0, 0.05
        for _ in range(len(params[4])):
            k1 = field(params[:4], y)
            k2 = field(params[:4], y + 0.5 * dt * k1)
            k3 = field(params[:4], y + 0.5 * dt * k2)
            k4 = field(params[:4], y + dt * k3)
            y = y + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
        return xp.mean((y - target) ** 2)

    return loss


def ode_net_data(steps, dim=2, hidden=32, batch=16, seed=0):
    """The step count rides along as the length of a dummy parameter (`len` is static)."""
    rng = np.random.default_rng(seed)
    params = (rng.standard_normal((dim, hidden)) * 0.5, np.zeros(hidden),
              rng.standard_normal((hidden, dim)) * 0.5, np.zeros(dim), np.zeros(steps))
    return params, rng.standard_normal((batch, dim)), rng.standard_normal((batch, dim))


PROGRAMS = {  # name -> (loss maker, data maker, argument)
    "rnn": (rnn_loss, rnn_data),
    "ode_net": (ode_net_loss, ode_net_data),
    "mlp": (mlp_loss, mlp_data),
    "seed_mlp": (seed_mlp_loss, lambda _: seed_mlp_data()),
}


def make(name: str, size, framework: str):
    """(loss, args) for `framework` in ("tracejit", "jax", "numpy")."""
    if name == "rnn_scan":
        return make_rnn_scan(size, framework)
    loss_maker, data_maker = PROGRAMS[name]
    args = data_maker(size)
    if framework == "jax":
        import jax.numpy as jnp

        return loss_maker(jnp), _to_jax(args)
    return loss_maker(np), args


def make_rnn_scan(steps, framework: str):
    args = rnn_data(steps)
    if framework == "jax":
        import jax
        import jax.numpy as jnp

        return rnn_scan_loss(jnp, jax.lax.scan), _to_jax(args)
    import tracejit

    return rnn_scan_loss(np, tracejit.lax.scan), args


def _to_jax(args):
    import jax.numpy as jnp

    if isinstance(args, (tuple, list)):
        return type(args)(_to_jax(a) for a in args)
    return jnp.asarray(args)


def hand_rnn_grad(params, X, Y, h0):
    """The char-RNN gradient by hand: forward over the steps, then back."""
    Wxh, Whh, Why, bh, by = params
    hs, ps, h = [h0], [], h0
    for x in X:
        h = np.tanh(x @ Wxh + h @ Whh + bh)
        z = h @ Why + by
        p = np.exp(z - z.max())
        hs.append(h)
        ps.append(p / p.sum())
    grads = [np.zeros_like(w) for w in params]
    dh_next, steps = np.zeros_like(h0), len(X)
    for t in reversed(range(steps)):
        dz = ps[t].copy()
        dz[Y[t]] -= 1
        dz /= steps
        grads[2] += np.outer(hs[t + 1], dz)
        grads[4] += dz
        draw = (1 - hs[t + 1] ** 2) * (Why @ dz + dh_next)
        grads[3] += draw
        grads[0] += np.outer(X[t], draw)
        grads[1] += np.outer(hs[t], draw)
        dh_next = Whh @ draw
    return grads
