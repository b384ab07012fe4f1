"""np.fft on traced arrays: every transform composed from the `fft` record.

The record transforms the last axis of a complex array (complex_primitives.py);
here other axes move there and back (transposes), `n` crops or zero-pads,
`norm` scales, real transforms slice or mirror the full spectrum, and the
n-dimensional ones apply the 1-D ones axis by axis, as NumPy defines them.
So their derivatives are those of slices, concatenations, conj, real and the
FFT itself, exactly the transposes of the same linear maps JAX differentiates.
Sizes that scale a norm stay symbolic (`dimsize`); `n` and the real
transforms' half spectrum read the size (it joins the kernel's key).
"""

from __future__ import annotations

import operator

import numpy as np

from ..core.errors import TracerTypeError, UnsupportedError, with_location
from ..core.shapes import bind as bind_dim
from ..core.shapes import normalize_axes
from ..primitives.complex import fft as _fft_last
from ..trace import ops
from .api import asarray, concatenate, implements
from .shape import roll

_NORMS = (None, "backward", "ortho", "forward")


def _axis(axis, ndim) -> int:
    return normalize_axes(axis, ndim, "np.fft")[0]


def _as_complex(a):
    x = asarray(a)
    return ops.convert(x, ops.complex_dtype(x.dtype))


def _size(x, axis) -> int:
    return bind_dim(ops.aval_of(x).shape[axis])


def _resized(x, n, axis):
    """`x` cropped or zero-padded to `n` along `axis` (NumPy's `n` argument)."""
    if n is None:
        return x
    n = operator.index(n)
    if n < 1:
        raise ValueError(with_location(f"Invalid number of FFT data points ({n}) specified."))
    size, ndim = _size(x, axis), ops.aval_of(x).ndim
    if n < size:
        return ops.static_slice(x, [0] * ndim, [n if k == axis else None for k in range(ndim)],
                                [1] * ndim)
    if n > size:
        shape = list(ops.aval_of(x).shape)
        shape[axis] = n
        return ops.slice_embed(x, shape, [0] * ndim, [1] * ndim)
    return x


def _along(x, axis, inverse):
    """The `fft` record along `axis`: moved last and back."""
    ndim = ops.aval_of(x).ndim
    if axis == ndim - 1:
        return _fft_last(x, inverse)
    perm = [k for k in range(ndim) if k != axis] + [axis]
    out = _fft_last(ops.transpose(x, perm), inverse)
    return ops.transpose(out, np.argsort(perm))


def _normalized(out, axis, norm, inverse, n=None):
    """The record has NumPy's "backward" normalisation; other norms rescale."""
    if norm not in _NORMS:
        raise ValueError(with_location(
            f'Invalid norm value {norm!r}; should be "backward", "ortho" or "forward".'))
    if norm in (None, "backward"):
        return out
    real = ops.real_dtype(ops.aval_of(out).dtype)
    count = np.asarray(n, real)[()] if n is not None else ops.dimsize(out, (axis,), real)
    if norm == "ortho":
        root = ops.sqrt(count)
        return ops.mul(out, root) if inverse else ops.div(out, root)
    return ops.mul(out, count) if inverse else ops.div(out, count)


def _no_out(out):
    if out is not None:
        raise UnsupportedError(with_location("np.fft(out=) is not supported while tracing"))


def _complex_transform(inverse):
    def transform(a, n=None, axis=-1, norm=None, out=None):
        _no_out(out)
        x = _as_complex(a)
        axis = _axis(axis, x.ndim)
        return _normalized(_along(_resized(x, n, axis), axis, inverse), axis, norm, inverse)

    return transform


fft = implements(np.fft.fft)(_complex_transform(inverse=False))
ifft = implements(np.fft.ifft)(_complex_transform(inverse=True))


@implements(np.fft.rfft)
def rfft(a, n=None, axis=-1, norm=None, out=None):
    """The first n // 2 + 1 terms of the spectrum of a real signal."""
    _no_out(out)
    x = asarray(a)
    if ops.is_complex(x.dtype):
        raise TracerTypeError(with_location("np.fft.rfft expects a real signal, got complex",
                                            hint="use np.fft.fft for complex signals"))
    axis = _axis(axis, x.ndim)
    x = _resized(_as_complex(x), n, axis)
    size, ndim = _size(x, axis), x.ndim
    spectrum = _along(x, axis, inverse=False)
    half = ops.static_slice(spectrum, [0] * ndim,
                            [size // 2 + 1 if k == axis else None for k in range(ndim)],
                            [1] * ndim)
    return _normalized(half, axis, norm, inverse=False, n=size)


@implements(np.fft.irfft)
def irfft(a, n=None, axis=-1, norm=None, out=None):
    """The real signal of n points whose spectrum starts with `a`: the full
    Hermitian spectrum (a, then the conjugates of a's terms 1.. reversed) inverted,
    its real part kept (what NumPy does with the imaginary parts of a[0] and of
    the Nyquist term)."""
    _no_out(out)
    x = _as_complex(a)
    axis = _axis(axis, x.ndim)
    n = 2 * (_size(x, axis) - 1) if n is None else operator.index(n)
    if n < 1:
        raise ValueError(with_location(f"Invalid number of FFT data points ({n}) specified."))
    x = _resized(x, n // 2 + 1, axis)
    ndim, mirrored = x.ndim, n - n // 2 - 1
    if mirrored:
        tail = ops.static_slice(x, [mirrored if k == axis else 0 for k in range(ndim)],
                                [0 if k == axis else None for k in range(ndim)],
                                [-1 if k == axis else 1 for k in range(ndim)])
        x = concatenate([x, ops.conj(tail)], axis)
    signal = ops.real(_along(x, axis, inverse=True))
    return _normalized(signal, axis, norm, inverse=True, n=n)


_SWAPPED = {None: "forward", "backward": "forward", "ortho": "ortho", "forward": "backward"}


@implements(np.fft.hfft)
def hfft(a, n=None, axis=-1, norm=None, out=None):
    """The real spectrum of a signal with Hermitian symmetry (NumPy: irfft of conj)."""
    _no_out(out)
    return irfft(ops.conj(_as_complex(a)), n, axis, _swapped(norm))


@implements(np.fft.ihfft)
def ihfft(a, n=None, axis=-1, norm=None, out=None):
    _no_out(out)
    return ops.conj(rfft(a, n, axis, _swapped(norm)))


def _swapped(norm):
    if norm not in _SWAPPED:
        _normalized(None, 0, norm, False)  # raises NumPy's error
    return _SWAPPED[norm]


def _cooked(x, s, axes):
    """NumPy's (size, axis) pairs of an n-dimensional transform."""
    ndim = ops.aval_of(x).ndim
    if axes is None:
        axes = tuple(range(ndim - (len(s) if s is not None else ndim), ndim))
    axes = [_axis(a, ndim) for a in axes]
    sizes = [None] * len(axes) if s is None else list(s)
    if len(sizes) != len(axes):
        raise ValueError(with_location("np.fft: shape and axes have different lengths"))
    return list(zip(sizes, axes))


def _complex_nd(inverse, default_axes=None):
    one = ifft if inverse else fft

    def transform(a, s=None, axes=default_axes, norm=None, out=None):
        _no_out(out)
        x = _as_complex(a)
        for n, axis in reversed(_cooked(x, s, axes)):
            x = one(x, n, axis, norm)
        return x

    return transform


fftn = implements(np.fft.fftn)(_complex_nd(inverse=False))
ifftn = implements(np.fft.ifftn)(_complex_nd(inverse=True))
fft2 = implements(np.fft.fft2)(_complex_nd(inverse=False, default_axes=(-2, -1)))
ifft2 = implements(np.fft.ifft2)(_complex_nd(inverse=True, default_axes=(-2, -1)))


def _real_nd(default_axes=None):
    def transform(a, s=None, axes=default_axes, norm=None, out=None):
        _no_out(out)
        pairs = _cooked(asarray(a), s, axes)
        x = rfft(a, *pairs[-1], norm)
        for n, axis in pairs[:-1]:
            x = fft(x, n, axis, norm)
        return x

    return transform


def _inverse_real_nd(default_axes=None):
    def transform(a, s=None, axes=default_axes, norm=None, out=None):
        _no_out(out)
        x = _as_complex(a)
        pairs = _cooked(x, s, axes)
        for n, axis in pairs[:-1]:
            x = ifft(x, n, axis, norm)
        return irfft(x, *pairs[-1], norm)

    return transform


rfftn = implements(np.fft.rfftn)(_real_nd())
rfft2 = implements(np.fft.rfft2)(_real_nd(default_axes=(-2, -1)))
irfftn = implements(np.fft.irfftn)(_inverse_real_nd())
irfft2 = implements(np.fft.irfft2)(_inverse_real_nd(default_axes=(-2, -1)))


def _shift(sign):
    def shift(x, axes=None):
        x = asarray(x)
        axes = range(x.ndim) if axes is None else (axes,) if isinstance(axes, int) else axes
        for axis in axes:
            axis = _axis(axis, x.ndim)
            x = roll(x, sign * (_size(x, axis) // 2), axis)
        return x

    return shift


fftshift = implements(np.fft.fftshift)(_shift(1))
ifftshift = implements(np.fft.ifftshift)(_shift(-1))
