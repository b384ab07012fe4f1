"""An ensemble of 8 small MLPs trained in one step with `tracejit.vmap`.

The models' weights are stacked along a leading axis; `vmap` over that axis
turns one model's `value_and_grad` into all eight's, and the SGD update of
the whole ensemble is one compiled kernel. Each model sees its own bootstrap
resample of the data (in_axes=0 for the data too); the ensemble predicts with
the average of the members' probabilities.

    python examples/ensemble.py [--steps 200]
"""

import argparse

import numpy as np

import tracejit

MEMBERS = 8


def init(rng, sizes=(2, 16, 2)):
    params = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        params += [rng.standard_normal((n_in, n_out)) * np.sqrt(2.0 / n_in), np.zeros(n_out)]
    return tuple(params)


def logits(params, x):
    w1, b1, w2, b2 = params
    return np.tanh(x @ w1 + b1) @ w2 + b2


def loss(params, x, labels):
    z = logits(params, x)
    z = z - z.max(axis=1, keepdims=True)
    return -(labels * (z - np.log(np.exp(z).sum(axis=1, keepdims=True)))).sum(axis=1).mean()


members_value_and_grad = tracejit.vmap(tracejit.value_and_grad(loss))


@tracejit.function
def train_step(ensemble, x, labels, lr):
    losses, grads = members_value_and_grad(ensemble, x, labels)
    return tuple(p - lr * g for p, g in zip(ensemble, grads)), losses


@tracejit.function
def predict(ensemble, x):
    z = tracejit.vmap(logits, in_axes=(0, None))(ensemble, x)  # (members, n, classes)
    p = np.exp(z - z.max(axis=2, keepdims=True))
    return (p / p.sum(axis=2, keepdims=True)).mean(axis=0)


def two_moons(rng, n):
    t = rng.uniform(0, np.pi, n)
    upper = rng.random(n) < 0.5
    x = np.stack([np.cos(t) - 0.5 * ~upper, np.sin(t) * np.where(upper, 1, -1) + 0.25 * ~upper], 1)
    return x + 0.1 * rng.standard_normal((n, 2)), np.eye(2)[upper.astype(int)]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    x, labels = two_moons(rng, 256)
    members = [init(rng) for _ in range(MEMBERS)]
    ensemble = tuple(np.stack(leaves) for leaves in zip(*members))
    resample = rng.integers(0, len(x), (MEMBERS, len(x)))  # a bootstrap sample per member
    xs, ys = x[resample], labels[resample]
    first = None
    for _ in range(args.steps):
        ensemble, losses = train_step(ensemble, xs, ys, 0.5)
        first = losses if first is None else first
    accuracy = float((predict(ensemble, x).argmax(axis=1) == labels.argmax(axis=1)).mean())
    print(f"{MEMBERS} members, {args.steps} steps: losses {np.round(first, 3)} -> "
          f"{np.round(losses, 3)}")
    print(f"ensemble accuracy on the data: {accuracy:.3f}")
    return {"first": first, "last": losses, "accuracy": accuracy}


if __name__ == "__main__":
    main()
