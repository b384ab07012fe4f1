"""Accuracy of tracejit.nn in the tails: worst error in ulps over a sweep of the
whole float32 / float64 range, for values and gradients, against references
computed exactly from the same float inputs with mpmath (60 digits past
the inputs' own size).

    python benchmarks/numerics.py            # compiled kernels (what users run)
    python benchmarks/numerics.py --interpret
    python benchmarks/numerics.py --ufuncs   # only the table of every elementwise function

The second table: every elementwise function of NumPy and scipy.special that
tracejit traces (UFUNCS), its value and its derivative (tracejit's grad), in
float32 and float64, through the interpreter and through compiled kernels,
each swept over its whole domain (`domain`): worst ulps per function, held to
UFUNC_BOUND (4) except where UFUNC_BOUNDS says why not.

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
tests/test_faults.py asserts the tables' bounds (BOUNDS, UFUNC_BOUNDS) on a sample.
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


# ------------------------------------------- every elementwise function (NumPy, SciPy)
# name -> (traced function, exact value, exact derivative, domain). Each is swept over
# its whole domain in both dtypes; its derivative is tracejit's grad of the function.

UFUNC_BOUND = 4.0  # ulps, values and derivatives, every function, dtype and tier
# ...but digamma, gammaln's derivative (measured 13.2): its recurrence (x > 0) and
# reflection psi(1 - x) - pi / tan(pi x) (x < 0) subtract terms ~4x larger than the
# result near 1 and between its negative poles, so even correctly rounded terms leave
# ~4 ulps; holding 4 there needs double-double internals (not done).
UFUNC_BOUNDS = {"gammaln": (UFUNC_BOUND, 14.0)}


def _special(name):
    def call(x):
        import scipy.special
        return getattr(scipy.special, name)(x)

    return call


def _safe(fn):
    """An mpmath function with NumPy's NaN outside its domain; None at a pole (1/0,
    whose sign depends on the sign of zero: no reference there)."""
    def call(v):
        try:
            out = fn(v)
        except ZeroDivisionError:
            return None
        except (ValueError, OverflowError):
            return mp.nan
        if out is None:
            return None
        return mp.nan if isinstance(out, mp.mpc) and out.imag else mp.re(out)

    return call


def ufunc_ulps(got, want: list, dtype) -> float:
    """`ulps` with NaN where the reference is NaN (else an infinite error), no
    reference at poles, and references past the long double range as inf or 0."""
    got = np.asarray(got, dtype=np.float64).ravel()
    keep, refs, worst = [], [], 0.0
    for k, v in enumerate(want):
        if v is None:
            continue
        if mp.isnan(v):
            worst = max(worst, 0.0 if np.isnan(got[k]) else np.inf)
            continue
        if mp.isfinite(v) and v != 0 and abs(v) > mp.mpf("1e4000"):
            v = mp.inf * mp.sign(v)
        elif mp.isfinite(v) and v != 0 and abs(v) < mp.mpf("1e-4000"):
            v = mp.mpf(0)
        keep.append(k)
        refs.append(v)
    if keep:
        worst = max(worst, ulps(got[keep], refs, dtype))
    return worst


_LOG2, _LOG10 = mp.log(2), mp.log(10)
UFUNCS = {
    "exp": (np.exp, mp.exp, mp.exp, "all"),
    "exp2": (np.exp2, lambda v: mp.power(2, v), lambda v: mp.power(2, v) * _LOG2, "all"),
    "expm1": (np.expm1, mp.expm1, mp.exp, "all"),
    "log": (np.log, mp.log, lambda v: 1 / v, "positive"),
    "log2": (np.log2, lambda v: mp.log(v) / _LOG2, lambda v: 1 / (v * _LOG2), "positive"),
    "log10": (np.log10, lambda v: mp.log(v) / _LOG10, lambda v: 1 / (v * _LOG10), "positive"),
    "log1p": (np.log1p, mp.log1p, lambda v: 1 / (1 + v), "above-1"),
    "sqrt": (np.sqrt, mp.sqrt, lambda v: 1 / (2 * mp.sqrt(v)), "positive"),
    "cbrt": (np.cbrt, lambda v: mp.sign(v) * mp.cbrt(abs(v)),
             lambda v: 1 / (3 * mp.cbrt(abs(v)) ** 2), "all"),
    "square": (np.square, lambda v: v * v, lambda v: 2 * v, "all"),
    "reciprocal": (np.reciprocal, lambda v: 1 / v, lambda v: -1 / (v * v), "all"),
    "sin": (np.sin, mp.sin, mp.cos, "all"),
    "cos": (np.cos, mp.cos, lambda v: -mp.sin(v), "all"),
    "tan": (np.tan, mp.tan, lambda v: 1 / mp.cos(v) ** 2, "all"),
    "arcsin": (np.arcsin, mp.asin, lambda v: 1 / mp.sqrt(1 - v * v), "unit"),
    "arccos": (np.arccos, mp.acos, lambda v: -1 / mp.sqrt(1 - v * v), "unit"),
    "arctan": (np.arctan, mp.atan, lambda v: 1 / (1 + v * v), "all"),
    "sinh": (np.sinh, mp.sinh, mp.cosh, "all"),
    "cosh": (np.cosh, mp.cosh, mp.sinh, "all"),
    "tanh": (np.tanh, mp.tanh, lambda v: 1 / mp.cosh(v) ** 2, "all"),
    "arcsinh": (np.arcsinh, mp.asinh, lambda v: 1 / mp.sqrt(v * v + 1), "all"),
    "arccosh": (np.arccosh, mp.acosh, lambda v: 1 / mp.sqrt(v * v - 1), "above1"),
    "arctanh": (np.arctanh, mp.atanh, lambda v: 1 / (1 - v * v), "unit"),
    "deg2rad": (np.deg2rad, lambda v: v * mp.pi / 180, lambda v: mp.pi / 180, "all"),
    "rad2deg": (np.rad2deg, lambda v: v * 180 / mp.pi, lambda v: 180 / mp.pi, "all"),
    "abs": (np.abs, abs, lambda v: mp.sign(v), "all"),
    "erf": (_special("erf"), mp.erf, lambda v: 2 / mp.sqrt(mp.pi) * _exp(-v * v), "all"),
    "erfc": (_special("erfc"), lambda v: mp.erfc(v) if v < 100 else mp.mpf(0),
             lambda v: -2 / mp.sqrt(mp.pi) * _exp(-v * v), "all"),
    "gammaln": (_special("gammaln"),
                lambda v: mp.inf if v <= 0 and v == int(v) else mp.log(abs(mp.gamma(v))),
                lambda v: None if v <= 0 and v == int(v) else mp.digamma(v), "gamma"),
}


def _magnitudes(dtype, lo, hi, n):
    return np.logspace(np.log10(lo), np.log10(hi) * (1 - 1e-12) if hi > 1 else np.log10(hi),
                       n).astype(dtype)


def domain(kind: str, dtype, n: int = 240) -> np.ndarray:
    """Points over a function's whole domain: log-spaced magnitudes from the
    smallest subnormal to the largest float, dense where the function is not
    trivially 0, 1, x or inf (|x| < 1.2 ln max), and towards the domain's ends."""
    info = np.finfo(dtype)
    tiny, top = float(info.smallest_subnormal), float(info.max)
    edge = float(np.log(top)) * 1.2
    wide = _magnitudes(dtype, tiny, top, n)
    core = np.linspace(0, edge, n).astype(dtype)[1:]
    eps = float(info.eps)
    towards_one = (1 - _magnitudes(dtype, eps / 2, 1, n // 2)).astype(dtype)
    positive = np.concatenate([wide, core, towards_one, [1.0]])
    if kind == "positive":
        points = positive
    elif kind == "all":
        points = np.concatenate([-positive, positive, [0.0]])
    elif kind == "unit":
        inside = positive[positive <= 1]
        points = np.concatenate([-inside, inside, [0.0]])
    elif kind == "above1":
        points = np.concatenate([1 + _magnitudes(dtype, eps, 1, n // 2), positive[positive >= 1]])
    elif kind == "above-1":
        points = np.concatenate([-1 + _magnitudes(dtype, eps / 2, 1, n // 2), -positive[
            positive < 1], positive, [0.0]])
    else:  # gamma: positive, and negative between the poles
        negative = -np.linspace(0, 40, n).astype(dtype) - dtype(0.37)
        points = np.concatenate([positive, negative])
    return np.unique(np.asarray(points, dtype=dtype))


def _all_ufuncs(xs):
    """Every function on its own input (one kernel); sum of all, and each one's values."""
    values = {name: UFUNCS[name][0](x) for name, x in xs.items()}
    return sum(np.sum(v) for v in values.values()), values


def ufunc_side(data: dict, compiled: bool) -> tuple[dict, dict]:
    """(values, derivatives) of every function at its points, from one kernel
    (compiled, or the interpreter)."""
    saved = os.environ.get("TRACEJIT_DISABLE_JIT")
    os.environ["TRACEJIT_DISABLE_JIT"] = "0" if compiled else "1"
    try:
        with np.errstate(all="ignore"):
            (_, values), grads = tracejit.value_and_grad(_all_ufuncs, has_aux=True)(data)
    finally:
        if saved is None:
            os.environ.pop("TRACEJIT_DISABLE_JIT")
        else:
            os.environ["TRACEJIT_DISABLE_JIT"] = saved
    return values, grads


def ufunc_references(data: dict) -> dict:
    """name -> (exact values, exact derivatives) at its points."""
    out = {}
    for name, x in data.items():
        _, value, derivative, _ = UFUNCS[name]
        points = _mp(x)
        out[name] = ([_safe(value)(v) for v in points], [_safe(derivative)(v) for v in points])
    return out


def ufunc_inputs(dtype, names, n: int = 240, sample: int | None = None) -> dict:
    """Each function's points; `sample` keeps that many, spread over the sweep."""
    data = {}
    for name in names:
        x = domain(UFUNCS[name][3], dtype, n)
        if sample is not None and len(x) > sample:
            x = x[np.linspace(0, len(x) - 1, sample).astype(int)]
        data[name] = x
    return data


def ufunc_table(dtypes=(np.float32, np.float64), tiers=("interpreter", "compiled"),
                names=tuple(UFUNCS), n: int = 240, sample: int | None = None) -> list[Result]:
    """Worst ulps per function, dtype and tier (`tier` in Result.dtype's place:
    "float32/compiled")."""
    results = []
    for dtype in dtypes:
        data = ufunc_inputs(dtype, names, n, sample)
        refs = ufunc_references(data)
        for tier in tiers:
            values, grads = ufunc_side(data, tier == "compiled")
            for name in names:
                v_ref, g_ref = refs[name]
                results.append(Result(name, f"{np.dtype(dtype).name}/{tier}",
                                      ufunc_ulps(values[name], v_ref, dtype),
                                      ufunc_ulps(grads[name], g_ref, dtype), len(g_ref)))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--interpret", action="store_true",
                        help="run the NumPy reference interpreter instead of kernels")
    parser.add_argument("--ufuncs", action="store_true",
                        help="only the table of every elementwise function, both tiers")
    args = parser.parse_args()
    if args.interpret:
        os.environ["TRACEJIT_DISABLE_JIT"] = "1"
    os.environ.setdefault("TRACEJIT_COMPILE", "sync")
    if not args.ufuncs:
        print(f"{'function':<24}{'dtype':<9}{'points':>7}{'value ulps':>12}{'grad ulps':>11}"
              f"{'bounds':>10}")
        for r in table():
            bound = BOUNDS[r.name]
            print(f"{r.name:<24}{r.dtype:<9}{r.points:>7}{r.value_ulps:>12.2f}"
                  f"{r.grad_ulps:>11.2f}{bound[0]:>6}/{bound[1]}")
        print()
    tiers = ("interpreter",) if args.interpret else ("interpreter", "compiled")
    print(f"{'function':<14}{'dtype/tier':<22}{'points':>7}{'value ulps':>12}"
          f"{'derivative ulps':>17}   (bound {UFUNC_BOUND:g}; {UFUNC_BOUNDS})")
    for r in ufunc_table(tiers=tiers):
        bound = UFUNC_BOUNDS.get(r.name, (UFUNC_BOUND, UFUNC_BOUND))
        flag = "" if r.value_ulps <= bound[0] and r.grad_ulps <= bound[1] else "  <- over"
        print(f"{r.name:<14}{r.dtype:<22}{r.points:>7}{r.value_ulps:>12.2f}"
              f"{r.grad_ulps:>17.2f}{flag}")


if __name__ == "__main__":
    main()
