"""The registry's complex records: real and imaginary parts, conjugation, and the FFT.

Complex values follow JAX's convention (autodiff.py): a cotangent w stands for
t -> Re(w t), so each linear record's VJP is its transpose under that pairing:
real's is `complex(g, 0)`, imag's `complex(0, -g)`, conj's `conj(g)`, and the
DFT matrix is symmetric, so the FFT's VJP is the FFT itself.

`fft` transforms the last axis with NumPy's normalisation (the inverse divides
by n); np.fft's functions (numpy_fft.py) compose every axis, size and norm
from it. Kernels call `_rt.fft` (radix 2, Bluestein's chirp-z for other
sizes), disk-cached like the other runtime helpers: Numba has no np.fft.
"""

from __future__ import annotations

import numpy as np

from ..core.dtypes import real_dtype
from ..core.errors import ShapeError, TracerTypeError
from ..core.ir import AVal
from ..core.shapes import broadcast_shapes, resolve
from ..trace import ops
from ..trace.batch_axes import leading_batch_rule
from ..trace.registry import REGISTRY
from .array import _array_op, elementwise


def _complex_operand(prim):
    """Wrap `prim`'s rule: its operand must be complex (ops handles real ones)."""
    rule = prim.abstract_eval

    def checked(avals, params, checks):
        if not ops.is_complex(avals[0].dtype):
            raise TracerTypeError(f"{prim.name}: expects a complex operand, got {avals[0].dtype}")
        return rule(avals, params, checks)

    prim.abstract_eval = checked
    return prim


def _tangent(name):
    """A linear unary JVP: the op `ops.<name>` of the tangent."""
    return lambda tangents, out, x: (None if tangents[0] is None
                                     else getattr(ops, name)(tangents[0]))


_complex_operand(elementwise(
    "real", 1, np.real, "({0}).real", dtype_rule=real_dtype,
    vjp=lambda g, out, x: [ops.convert(g, x.dtype)], jvp=_tangent("real")))
_complex_operand(elementwise(
    "imag", 1, np.imag, "({0}).imag", dtype_rule=real_dtype,
    vjp=lambda g, out, x: [ops.make_complex(ops.zeros_like(g), ops.neg(g))],
    jvp=_tangent("imag")))
_complex_operand(elementwise(
    "conj", 1, np.conjugate, "({0}).conjugate()",
    vjp=lambda g, out, x: [ops.conj(g)], jvp=_tangent("conj")))


def _complex_rule(avals, params, checks):
    re, im = avals
    if re.dtype != im.dtype or not np.issubdtype(re.dtype, np.floating):
        raise TracerTypeError(f"complex: expects two float operands of one dtype, got "
                              f"{re.dtype} and {im.dtype}")
    dtype = np.dtype(params["dtype"])
    if dtype != ops.complex_dtype(re.dtype):
        raise TracerTypeError(f"complex: {re.dtype} parts make {ops.complex_dtype(re.dtype)}, "
                              f"not {dtype}")
    shape = broadcast_shapes([re.shape, im.shape], "complex", checks)
    return [AVal(shape, dtype, re.weak and im.weak)]


def _complex_impl(re, im, *, dtype):
    out = np.empty(np.broadcast_shapes(np.shape(re), np.shape(im)), dtype)
    out.real, out.imag = re, im
    return out


def _complex_jvp(tangents, out, re, im, *, dtype):
    t_re, t_im = tangents
    return ops.make_complex(ops.zeros_like(re) if t_re is None else t_re,
                            ops.zeros_like(im) if t_im is None else t_im)


_complex = elementwise(
    "complex", 2, _complex_impl,
    lambda re, im, *, dtype: f"np.{np.dtype(dtype).name}(complex({re}, {im}))",
    vjp=lambda g, out, re, im, *, dtype: [ops.real(g), ops.neg(ops.imag(g))],
    jvp=_complex_jvp)
_complex.abstract_eval = _complex_rule


# --------------------------------------------------------------------- FFT

def fft(x, inverse=False):
    """The DFT of `x` (complex) along its last axis; the inverse divides by n."""
    return ops.bind(REGISTRY["fft"], x, inverse=bool(inverse))


def _fft_rule(avals, params, checks):
    (x,) = avals
    if not ops.is_complex(x.dtype):
        raise TracerTypeError(f"fft: expects a complex operand, got {x.dtype}")
    if x.ndim == 0:
        raise ShapeError("fft: a 0-d array has no axis to transform")
    n = resolve(x.shape[-1])
    if type(n) is int and n < 1:
        raise ShapeError(f"fft: invalid number of data points ({n})")
    return [AVal(x.shape, x.dtype)]


def _fft_impl(x, *, inverse):
    x = np.asarray(x)
    out = np.fft.ifft(x, axis=-1) if inverse else np.fft.fft(x, axis=-1)
    return out.astype(x.dtype, copy=False)


def _emit_fft(ctx, out, ins, eqn):
    """One call on the rows of a 2-D C-contiguous view (the leading axes merged)."""
    aval = eqn.outputs[0].aval
    dims = ctx.dims(aval)
    rows = " * ".join(dims[:-1]) or "1"
    flat = f"np.ascontiguousarray({ins[0]}).reshape(({rows}, {dims[-1]}))"
    return [f"{out} = _rt.fft({flat}, {eqn.params['inverse']}).reshape({ctx.shape(aval)})"]


_array_op("fft", _fft_rule, _fft_impl, _emit_fft,
          lambda g, out, x, *, inverse: [fft(g, inverse)], linear=True)
REGISTRY["fft"].batch = leading_batch_rule("fft")  # along the last axis: the batch leads
