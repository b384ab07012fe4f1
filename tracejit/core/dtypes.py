"""The dtype facts the op layer and the primitive records share (no imports of either)."""

from __future__ import annotations

import numpy as np

# A Python scalar of each kind, for np.result_type's weak promotion (NumPy 2)
WEAK_STAND_INS = {"b": False, "i": 0, "f": 0.0, "c": 0j}


def is_inexact(dtype) -> bool:
    """Floating point or complex: what derivatives are taken of."""
    return np.issubdtype(dtype, np.inexact)


def is_float(aval) -> bool:
    """A value derivatives are taken of: floating point or complex. Complex values
    follow JAX's convention: a cotangent w stands for the real-linear functional
    t -> Re(w t) (no conjugate), so the rules of holomorphic ops are their real ones."""
    return is_inexact(aval.dtype)


def is_real_float(dtype) -> bool:
    return np.issubdtype(dtype, np.floating)


def is_complex(dtype) -> bool:
    return np.issubdtype(dtype, np.complexfloating)


def real_dtype(dtype) -> np.dtype:
    """complex64 -> float32, complex128 -> float64; real dtypes are their own."""
    dtype = np.dtype(dtype)
    return np.finfo(dtype).dtype if is_complex(dtype) else dtype


def complex_dtype(dtype) -> np.dtype:
    """The complex dtype NumPy promotes `dtype` to (float32 -> complex64, others complex128)."""
    return np.result_type(dtype, np.complex64)
