"""Per-example gradients with `tracejit.vmap`: DP-SGD on the seeds' MLP.

The model of seed 003 (10 inputs -> 5 relu -> 2 softmax) trained with
differentially private SGD (Abadi et al., 2016): every example's gradient is
clipped to an L2 norm of at most `clip`, the clipped gradients are summed,
Gaussian noise of scale `noise * clip` is added, and the average steps the
weights. `vmap(grad(loss))` gives all the per-example gradients in one kernel;
the whole step - per-example gradients, clipping, noise, update - is one
compiled function.

    python examples/per_example_gradients.py [--steps 30]
"""

import argparse

import numpy as np

import tracejit


def init(rng, sizes=(10, 5, 2)):
    params = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        params += [rng.standard_normal((n_in, n_out)) * np.sqrt(2.0 / n_in), np.zeros(n_out)]
    return tuple(params)


def loss(params, x, label):
    """Softmax cross-entropy of one example (x: (10,), label: a one-hot (2,))."""
    w1, b1, w2, b2 = params
    logits = np.maximum(x @ w1 + b1, 0.0) @ w2 + b2
    shifted = logits - logits.max()
    return -(label * (shifted - np.log(np.exp(shifted).sum()))).sum()


per_example_grads = tracejit.vmap(tracejit.grad(loss), in_axes=(None, 0, 0))


def clipped_sum(grads, clip):
    """Each example's gradient (over all parameters) scaled to norm <= clip, summed."""
    squares = sum((g.reshape(g.shape[0], -1) ** 2).sum(axis=1) for g in grads)
    scale = np.minimum(1.0, clip / (np.sqrt(squares) + 1e-12))
    return tuple((g * scale.reshape((-1,) + (1,) * (g.ndim - 1))).sum(axis=0) for g in grads)


@tracejit.function
def dp_sgd_step(params, x, labels, noise, lr, clip, sigma):
    grads = clipped_sum(per_example_grads(params, x, labels), clip)
    n = x.shape[0]
    return tuple(p - lr * (g + sigma * clip * z) / n for p, g, z in zip(params, grads, noise))


def mean_loss(params, x, labels):
    return tracejit.vmap(loss, in_axes=(None, 0, 0))(params, x, labels).mean()


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--clip", type=float, default=1.0)
    parser.add_argument("--sigma", type=float, default=0.5, help="noise multiplier")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 10))
    labels = np.eye(2)[(x[:, 0] + x[:, 1] > 0).astype(int)]  # a learnable rule
    params = init(rng)

    grads = per_example_grads(params, x, labels)
    single = tracejit.grad(loss)
    loop = [single(params, x[i], labels[i]) for i in range(len(x))]
    error = max(np.abs(g - np.stack([row[k] for row in loop])).max() for k, g in enumerate(grads))
    print(f"per-example gradients {[g.shape for g in grads]}, max difference from a loop of "
          f"grad: {error:.1e}")

    losses = [float(mean_loss(params, x, labels))]
    for _ in range(args.steps):
        noise = tuple(rng.standard_normal(p.shape) for p in params)
        params = dp_sgd_step(params, x, labels, noise, 0.5, args.clip, args.sigma)
        losses.append(float(mean_loss(params, x, labels)))
    print(f"DP-SGD, {args.steps} steps (clip {args.clip}, noise multiplier {args.sigma}): "
          f"loss {losses[0]:.4f} -> {losses[-1]:.4f}")
    return {"losses": losses, "error": error}


if __name__ == "__main__":
    main()
