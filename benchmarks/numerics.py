"""Accuracy of tracejit.nn in the tails: worst error in ulps over a sweep of the
whole float32 / float64 range, for values and gradients, against references
computed exactly from the same float inputs with mpmath (60 digits past
the inputs' own size).

    python benchmarks/numerics.py            # compiled kernels (what users run)
    python benchmarks/numerics.py --interpret

Elementwise functions (sigmoid, log_sigmoid, softplus, the binary
cross-entropy) are swept over +-[tiny, max] log-spaced and densely over the
range where they are not trivially 0, 1 or x. Row functions (logsumexp,
log_softmax, the softmax cross-entropies) take rows of every scale, rows with
one dominant entry (where log(1 + tiny) loses everything) and rows far from 0.

Error unit: ulps of the reference in the tested dtype. Two honest exceptions:
- outputs whose exact value is 0 through cancellation (logsumexp near 0,
  log_softmax's J^T w) are measured in ulps of the size of what cancels
  (`scale` below), the best any floating-point algorithm can promise;
- softmax-type outputs exp(x_i - lse) inherit the rounding of x_i - lse, which
  exp amplifies |x_i - lse| times: that error is divided by max(1, |x_i - lse|),
  the condition number, so the table shows the algorithm's own error.
tests/test_faults.py asserts the table's bounds (BOUNDS).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mpmath as mp  # noqa: E402

import tracejit  # noqa: E402
from tracejit import nn  # noqa: E402

mp.mp.dps = 60  # rows get 60 digits more than their entries' size (x_i - lse at 1e300)
ROW = 8  # entries per row of the row functions

# Worst ulps allowed (value, gradient) in float32 and float64, compiled or interpreted;
# the largest measured (numba 0.68.1, x86-64): sigmoid 1.7 / 4.1 (float32 kernels: the
# derivative of e / (1 + e) subtracts e^2 / (1 + e)^2, losing a bit near 0), every
# other value <= 1.7, every other gradient <= 2.3.
BOUNDS = {
    "sigmoid": (3, 6), "log_sigmoid": (3, 3), "softplus": (3, 3),
    "binary_cross_entropy": (2, 4), "logsumexp": (2, 3), "log_softmax": (3, 4),
    "cross_entropy": (2, 3), "sparse_cross_entropy": (2, 4),
}


@dataclass
class Result:
    name: str
    dtype: str
    value_ulps: float
    grad_ulps: float
    points: int


# ------------------------------------------------------------------ inputs

def sweep(dtype, n: int = 600) -> np.ndarray:
    info = np.finfo(dtype)
    top = np.log10(float(info.max)) * (1 - 1e-12)  # 10 ** log10(max) may round past max
    wide = np.logspace(np.log10(float(info.tiny)), top, n // 3)
    edge = float(np.log(info.max)) * 1.2  # past where exp over- or underflows
    core = np.linspace(-edge, edge, n // 3)
    return np.concatenate([-wide, wide, core, [0.0, -0.0]]).astype(dtype)


def rows(dtype, rng) -> np.ndarray:
    info = np.finfo(dtype)
    top = np.log10(float(info.max)) - 1
    out = [scale * rng.standard_normal(ROW) for scale in np.logspace(-30, top, 48)]
    for gap in (1.0, 10.0, 40.0, 100.0, 0.9 * float(np.log(info.max))):
        out.append(-gap * np.arange(ROW))  # one dominant entry
        out.append(-gap * rng.permutation(np.arange(ROW)) + rng.uniform(-1, 1))
    for offset in np.logspace(0, top, 12):
        out.append(offset * np.sign(rng.standard_normal()) + rng.standard_normal(ROW))
    return np.asarray(out).astype(dtype)


def inputs(dtype, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    x = sweep(dtype)
    # the mean of the cross-entropy must itself be representable: no logits past max / n
    bce_x = np.clip(x, -float(np.finfo(dtype).max) / len(x), float(np.finfo(dtype).max) / len(x))
    r = rows(dtype, rng)
    classes = rng.integers(0, ROW, len(r))
    return {
        "x": x, "bce_x": bce_x, "labels01": (rng.random(len(x)) < 0.5).astype(dtype), "rows": r,
        "weights": rng.standard_normal(r.shape).astype(dtype),
        "onehot": np.eye(ROW, dtype=dtype)[classes], "classes": classes,
    }


# ------------------------------------------------------------------ tracejit side

ELEMENTWISE = ("sigmoid", "log_sigmoid", "softplus", "binary_cross_entropy")
ROWWISE = ("logsumexp", "log_softmax", "cross_entropy", "sparse_cross_entropy")


def _elementwise(xs, labels01):
    """The elementwise functions in one program (one kernel); each differentiated
    variable feeds one function only, so its gradient is that function's."""
    values = dict(zip(ELEMENTWISE, (nn.sigmoid(xs[0]), nn.log_sigmoid(xs[1]),
                                    nn.softplus(xs[2]),
                                    nn.binary_cross_entropy(xs[3], labels01))))
    return sum(np.sum(v) for v in values.values()), values


def _rowwise(rs, weights, onehot, classes):
    values = dict(zip(ROWWISE, (nn.logsumexp(rs[0], axis=1), nn.log_softmax(rs[1]),
                                nn.cross_entropy(rs[2], onehot),
                                nn.sparse_cross_entropy(rs[3], classes))))
    total = sum(np.sum(v) for k, v in values.items() if k != "log_softmax")
    return total + np.sum(weights * values["log_softmax"]), values


def tracejit_side(data: dict, names) -> tuple[dict, dict]:
    """(values, gradients) per function, as tracejit computes them."""
    values, grads = {}, {}
    if set(names) & set(ELEMENTWISE):
        xs = (*(data["x"].copy() for _ in range(3)), data["bce_x"])
        (_, found), g = tracejit.value_and_grad(_elementwise, has_aux=True)(xs, data["labels01"])
        values.update(found)
        grads.update(zip(ELEMENTWISE, g))
    if set(names) & set(ROWWISE):
        rs = tuple(data["rows"].copy() for _ in range(4))
        (_, found), g = tracejit.value_and_grad(_rowwise, has_aux=True)(
            rs, data["weights"], data["onehot"], data["classes"])
        values.update(found)
        grads.update(zip(ROWWISE, g))
    return values, grads


# ------------------------------------------------------------------ references

def _exp(v):
    """mp.exp, short-cut where the result is beyond even long double (0 or inf)."""
    if v < -12000:
        return mp.mpf(0)
    return mp.inf if v > 12000 else mp.exp(v)


def _softplus(v):
    return v + mp.log1p(_exp(-v)) if v > 0 else mp.log1p(_exp(v))


def _sigmoid(v):
    return 1 / (1 + _exp(-v))


def _lse(row):
    top = max(row)
    return top + mp.log(mp.fsum(_exp(v - top) for v in row))


def _mp(array) -> list:
    return [mp.mpf(float(v)) for v in np.ravel(array)]


def references(data: dict) -> dict:
    """name -> (value, gradient, value scale, gradient scale, gradient condition)."""
    x, bce_x = _mp(data["x"]), _mp(data["bce_x"])
    y = _mp(data["labels01"])
    n = len(x)
    out = {
        "sigmoid": ([_sigmoid(v) for v in x], [_sigmoid(v) * _sigmoid(-v) for v in x]),
        "log_sigmoid": ([-_softplus(-v) for v in x], [_sigmoid(-v) for v in x]),
        "softplus": ([_softplus(v) for v in x], [_sigmoid(v) for v in x]),
        "binary_cross_entropy": (
            [mp.fsum(b * _softplus(-v) + (1 - b) * _softplus(v) for v, b in zip(bce_x, y)) / n],
            [(-_sigmoid(-v) if b else _sigmoid(v)) / n for v, b in zip(bce_x, y)]),
    }
    out = {k: (v, g, None, None, None) for k, (v, g) in out.items()}
    r = [[mp.mpf(float(v)) for v in row] for row in data["rows"]]
    digits = [60 + max(0, int(np.log10(max(1.0, np.abs(row).max())))) for row in data["rows"]]
    lse, p = [], []
    for row, dps in zip(r, digits):
        with mp.workdps(dps):
            lse.append(_lse(row))
            p.append([_exp(v - lse[-1]) for v in row])
    cond = [max(1.0, abs(float(v - top))) for row, top in zip(r, lse) for v in row]
    size = [max(abs(float(v)) for v in row) for row in r]
    w = [_mp(row) for row in data["weights"]]
    out["logsumexp"] = (lse, [pi for row in p for pi in row], size, None, cond)
    with mp.workdps(max(digits)):
        log_p = [v - top for row, top in zip(r, lse) for v in row]
    out["log_softmax"] = (
        log_p,
        [wi - pi * mp.fsum(wr) for wr, pr in zip(w, p) for wi, pi in zip(wr, pr)],
        [s for s in size for _ in range(ROW)],
        [max(abs(float(v)) for v in wr) for wr in w for _ in range(ROW)], cond)
    onehot = [_mp(row) for row in data["onehot"]]
    m = len(r)
    with mp.workdps(max(digits)):
        ce = mp.fsum(-mp.fsum(t * (v - top) for t, v in zip(tr, row))
                     for tr, row, top in zip(onehot, r, lse)) / m
    ce_grad = [(pi - ti) / m for pr, tr in zip(p, onehot) for pi, ti in zip(pr, tr)]
    for name in ("cross_entropy", "sparse_cross_entropy"):
        out[name] = ([ce], ce_grad, None, [1.0 / m] * len(ce_grad), cond)
    return out


# ------------------------------------------------------------------ measuring

def _longdouble(v) -> np.longdouble:
    """An mpf as the nearest-below long double (to 64 bits, whatever its exponent)."""
    if not v or not mp.isfinite(v):
        return np.longdouble(float(v))
    sign, man, exp, bits = v._mpf_  # |v| = man * 2**exp
    shift = max(0, bits - 64)
    top = np.longdouble(man >> shift)
    return np.ldexp(-top if sign else top, exp + shift)


def ulps(got, want, dtype, scale=None, cond=None) -> float:
    """Worst |got - want| in ulps of `want` (or of `scale`, if larger) in `dtype`,
    divided by the condition number `cond` where given."""
    got = np.asarray(got, dtype=np.longdouble).ravel()
    with np.errstate(over="ignore", invalid="ignore"):
        want = np.array([_longdouble(mp.mpf(v)) for v in want])
        size = np.abs(want)
        if scale is not None:
            size = np.maximum(size, np.asarray(scale, dtype=np.longdouble).ravel())
        rounded = want.astype(dtype).astype(np.longdouble)  # inf where the dtype overflows
        spacing = np.spacing(size.astype(dtype)).astype(np.longdouble)
        error = np.where(np.isinf(rounded) & (got == rounded), 0,
                         np.abs(got - want) / spacing)
    if cond is not None:
        error = error / np.asarray(cond, dtype=np.longdouble).ravel()
    return float(np.max(error))


def table(dtypes=(np.float32, np.float64), names=ELEMENTWISE + ROWWISE) -> list[Result]:
    results = []
    for dtype in dtypes:
        data = inputs(dtype)
        values, grads = tracejit_side(data, names)
        for name, (v_ref, g_ref, v_scale, g_scale, cond) in references(data).items():
            if name in names:
                results.append(Result(
                    name, np.dtype(dtype).name, ulps(values[name], v_ref, dtype, v_scale),
                    ulps(grads[name], g_ref, dtype, g_scale, cond), len(g_ref)))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--interpret", action="store_true",
                        help="run the NumPy reference interpreter instead of kernels")
    args = parser.parse_args()
    if args.interpret:
        os.environ["TRACEJIT_DISABLE_JIT"] = "1"
    os.environ.setdefault("TRACEJIT_COMPILE", "sync")
    print(f"{'function':<24}{'dtype':<9}{'points':>7}{'value ulps':>12}{'grad ulps':>11}"
          f"{'bounds':>10}")
    for r in table():
        bound = BOUNDS[r.name]
        print(f"{r.name:<24}{r.dtype:<9}{r.points:>7}{r.value_ulps:>12.2f}{r.grad_ulps:>11.2f}"
              f"{bound[0]:>6}/{bound[1]}")


if __name__ == "__main__":
    main()
