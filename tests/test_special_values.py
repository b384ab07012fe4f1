"""Compiled kernels give NumPy's special values at 0, +-inf and NaN.

The kernels' fast-math flags (backend/codegen.py) must not let LLVM assume
infinities, NaNs or signed zeros away, nor swap an exact operation for an
estimate: with 'arcp' x86 turns float32 `1 / np.sqrt(x)` into `rsqrt` and a
Newton step, NaN at 0 where NumPy gives inf, and hoists a division by a
loop-invariant subnormal as a multiply by its reciprocal, inf; with 'nsz'
`x / np.sqrt(x)` becomes `np.sqrt(x)`, 0 at 0 where NumPy gives NaN.
"""

from __future__ import annotations

import numpy as np
import pytest

import tracejit


def special_values(dtype) -> np.ndarray:
    info = np.finfo(dtype)
    values = [0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -1.0, 4.0, 2.5, 1e-3,
              info.tiny * 1e5, info.tiny * 1e-3, info.max, -info.max]
    # several vector widths and a remainder, each value in every lane position
    return np.resize(np.array(values, dtype), 67)


def expressions(x, y, z):
    """y: a scalar (a loop-invariant divisor); z: no NaN, one 0 (sums to inf)."""
    return {
        "1 / sqrt(x)": 1 / np.sqrt(x),
        "2 / sqrt(x)": 2.0 / np.sqrt(x),
        "x / sqrt(x)": x / np.sqrt(x),
        "sqrt(x)": np.sqrt(x),
        "log(x)": np.log(x),
        "x / 0": x / 0.0,
        "1 / x": 1.0 / x,
        "x / y": x / y,
        "x * 0": x * 0.0,
        "x - x": x - x,
        "sum(x)": np.sum(x),
        "sum(1 / sqrt(z))": np.sum(1 / np.sqrt(z)),
    }


def differences(got, want, rtol) -> list[str]:
    """Positions where NaN-ness, an infinity, a zero's sign or a value differ."""
    got, want = np.atleast_1d(got), np.atleast_1d(want)
    nan_differs = np.isnan(got) != np.isnan(want)
    special = ~np.isfinite(want) | (want == 0)
    sign_differs = np.signbit(got) != np.signbit(want)
    bits_differ = special & ~np.isnan(want) & ((got != want) | sign_differs)
    finite = np.isfinite(want) & (want != 0)
    with np.errstate(invalid="ignore"):  # got may be inf where want is finite
        value_differs = finite & ~(np.abs(got - want) <= rtol * np.abs(want))
    bad = np.flatnonzero(nan_differs | bits_differ | value_differs)
    return [f"[{k}] got {got[k]!r} want {want[k]!r}" for k in bad[:4]]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_kernels_keep_numpys_special_values(dtype, compiled):
    x = special_values(dtype)
    y = dtype(np.finfo(dtype).tiny * 1e-3)  # subnormal: 1 / y overflows, x / y need not
    z = np.abs(np.nan_to_num(x, nan=1.0, posinf=1.0, neginf=1.0))
    kernel = tracejit.function(expressions)
    got = kernel(x, y, z)
    assert kernel.stats.compiles + kernel.stats.disk_hits == 1, kernel.stats
    with np.errstate(all="ignore"):
        want = expressions(x, y, z)
    rtol = 8 * np.finfo(dtype).eps  # libm and NumPy's log may differ by an ulp or two
    problems = {name: differences(np.asarray(got[name]), np.asarray(want[name]), rtol)
                for name in want}
    problems = {name: found for name, found in problems.items() if found}
    assert not problems, "\n".join(f"{name} at {x.tolist()[:14]}: {found}"
                                   for name, found in problems.items())


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_neutral_elements_keep_numpys_signed_zeros(dtype, mode):
    """x + 0.0 is +0.0 at x = -0.0, so the simplifier may drop `- 0.0`, `+ (-0.0)` and
    `* 1.0` but not `+ 0.0` (it did, in both tiers)."""
    def neutral(x):
        return {"x + 0": x + 0.0, "0 + x": 0.0 + x, "x - 0": x - 0.0, "x + -0": x + -0.0,
                "x * 1": x * 1.0, "x / 1": x / 1.0}

    x = special_values(dtype)
    got = tracejit.function(neutral)(x)
    problems = {name: differences(np.asarray(got[name]), want, 0.0)
                for name, want in neutral(x).items()}
    assert not any(problems.values()), problems
