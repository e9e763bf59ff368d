"""The inverse "special FFT" of CKKS encoding over a batch of slot vectors.

CKKS slot j holds m(zeta^(5^j)); turning slot values back into coefficients is an FFT over
the 5^j-ordered roots (HEAAN's special FFT).  Encoding a linear layer's diagonals runs it
thousands of times per inference, so it is compiled, batched and parallel over vectors
instead of a NumPy pass per stage (which spends its time in temporaries).
"""
import numpy as np
from numba import njit, prange

__all__ = ["special_fft_inv", "special_fft_inv_round"]


@njit(cache=True, inline="always")
def _butterflies(v, b, w_inv):
    s = v.shape[1]
    length = s
    while length >= 2:
        h = length // 2
        off = h - 1
        for start in range(0, s, length):
            for j in range(h):
                x = v[b, start + j]
                y = v[b, start + j + h]
                v[b, start + j] = x + y
                v[b, start + j + h] = (x - y) * w_inv[off + j]
        length = h


@njit(cache=True, parallel=True)
def special_fft_inv(v, w_inv, brv, out):
    """out[b] = bit-reversed inverse special FFT of v[b] divided by the length (v is
    overwritten).  ``v`` (B, s) complex128; ``w_inv``: the stages' inverse twiddles
    concatenated for butterfly lengths 2, 4, ..., s (length L's L/2 roots start at L/2 - 1);
    ``brv``: the bit-reversal permutation of range(s)."""
    nb, s = v.shape
    inv_s = 1.0 / s
    for b in prange(nb):
        _butterflies(v, b, w_inv)
        for j in range(s):
            out[b, j] = v[b, brv[j]] * inv_s


LIMIT = 2.0 ** 62  # coefficients cast to int64 below this; the caller takes another path above


@njit(cache=True, parallel=True)
def special_fft_inv_round(v, w_inv, brv, scale, out):
    """Encoding's coefficients in one pass: ``out[b]`` (B, 2s) int64 = round-half-even of
    ``scale`` times the real parts, then the imaginary parts, of :func:`special_fft_inv` of
    ``v[b]`` (``v`` is overwritten), the same floating-point operations in the same order as
    that kernel followed by NumPy's ``round(c * scale)``; without the five (B, 2s)
    temporaries, whose fresh pages cost more than the FFT in a process holding GiBs.
    Returns the largest |coefficient|; where it is not below ``LIMIT`` (or NaN) the values
    there are not cast (0 is written) and the caller must not use ``out``."""
    nb, s = v.shape
    inv_s = 1.0 / s
    top = np.zeros(nb)
    for b in prange(nb):
        _butterflies(v, b, w_inv)
        m = 0.0
        for j in range(s):
            c = v[b, brv[j]] * inv_s
            re = np.rint(c.real * scale)
            im = np.rint(c.imag * scale)
            a = max(abs(re), abs(im))
            if not a < LIMIT:  # also NaN
                a = np.inf if a != a else a
                re = im = 0.0
            m = max(m, a)
            out[b, j] = np.int64(re)
            out[b, s + j] = np.int64(im)
        top[b] = m
    return top.max() if nb else 0.0
