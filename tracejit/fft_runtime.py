"""The FFT that generated kernels call (Numba has no np.fft).

`fft(x, inverse)` transforms each row of a 2-D C-contiguous complex array with
NumPy's conventions: X_k = sum_j x_j e^(-2 pi i jk / n), the inverse with +i and
divided by n. Powers of two take the iterative radix-2 algorithm; other sizes
Bluestein's chirp-z transform, which writes the DFT as a convolution computed
by radix-2 FFTs of a power-of-two size >= 2n - 1, so every size is O(n log n).
The work is done in complex128 (a complex64 result is rounded once, at the
end); twiddles and chirps are computed from exact integer angles, not by
recurrence, so the error stays near NumPy's pocketfft (~1e-16 * log n relative
to the norm in float64). Disk-cached like the other runtime helpers.
"""

import numpy as np
from numba import njit


@njit(cache=True)
def _twiddles(n, sign):
    """exp(sign * 2 pi i k / n) for k < n / 2."""
    out = np.empty(max(n // 2, 1), np.complex128)
    for k in range(out.shape[0]):
        angle = sign * 2.0 * np.pi * k / n
        out[k] = complex(np.cos(angle), np.sin(angle))
    return out


@njit(cache=True)
def _radix2(a, twiddles):
    """In-place FFT of `a` (length a power of two) with the given twiddles."""
    n = a.shape[0]
    j = 0
    for i in range(1, n):  # bit-reversal permutation
        bit = n >> 1
        while j & bit:
            j ^= bit
            bit >>= 1
        j |= bit
        if i < j:
            a[i], a[j] = a[j], a[i]
    size = 2
    while size <= n:
        half, step = size // 2, n // size
        for start in range(0, n, size):
            for k in range(half):
                v = a[start + k + half] * twiddles[k * step]
                u = a[start + k]
                a[start + k] = u + v
                a[start + k + half] = u - v
        size *= 2


@njit(cache=True)
def _chirp(n, sign):
    """exp(sign * pi i k^2 / n), the angle reduced exactly (k^2 mod 2n)."""
    out = np.empty(n, np.complex128)
    for k in range(n):
        angle = sign * np.pi * ((k * k) % (2 * n)) / n
        out[k] = complex(np.cos(angle), np.sin(angle))
    return out


@njit(cache=True)
def fft(x, inverse):
    """FFT of each row of `x` (rows, n); the inverse divides by n."""
    rows, n = x.shape
    if n < 1:
        raise ValueError("Invalid number of FFT data points (0) specified.")
    sign = 1.0 if inverse else -1.0
    out = np.empty((rows, n), x.dtype)
    work = np.empty(n, np.complex128)
    scale = 1.0 / n if inverse else 1.0
    if n & (n - 1) == 0:
        twiddles = _twiddles(n, sign)
        for r in range(rows):
            for k in range(n):
                work[k] = x[r, k]
            _radix2(work, twiddles)
            for k in range(n):
                out[r, k] = work[k] * scale
        return out
    m = 1
    while m < 2 * n - 1:
        m *= 2
    chirp = _chirp(n, sign)
    forward, backward = _twiddles(m, -1.0), _twiddles(m, 1.0)
    kernel = np.zeros(m, np.complex128)  # conj(chirp) at offsets -(n-1) .. n-1, circularly
    kernel[0] = chirp[0].conjugate()
    for k in range(1, n):
        kernel[k] = kernel[m - k] = chirp[k].conjugate()
    _radix2(kernel, forward)
    a = np.empty(m, np.complex128)
    for r in range(rows):
        for k in range(n):
            a[k] = x[r, k] * chirp[k]
        for k in range(n, m):
            a[k] = 0.0
        _radix2(a, forward)
        for k in range(m):
            a[k] *= kernel[k]
        _radix2(a, backward)  # the circular convolution, times m
        for k in range(n):
            out[r, k] = a[k] * chirp[k] * (scale / m)
    return out
