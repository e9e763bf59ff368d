"""The inverse "special FFT" of CKKS encoding over a batch of slot vectors.

CKKS slot j holds m(zeta^(5^j)); turning slot values back into coefficients is an FFT over
the 5^j-ordered roots (HEAAN's special FFT).  Encoding a linear layer's diagonals runs it
thousands of times per inference, so it is compiled, batched and parallel over vectors
instead of a NumPy pass per stage (which spends its time in temporaries).
"""
import numpy as np
from numba import njit, prange

__all__ = ["special_fft_inv"]


@njit(cache=True, parallel=True)
def special_fft_inv(v, w_inv, brv, out):
    """out[b] = bit-reversed inverse special FFT of v[b] divided by the length (v is
    overwritten).  ``v`` (B, s) complex128; ``w_inv``: the stages' inverse twiddles
    concatenated for butterfly lengths 2, 4, ..., s (length L's L/2 roots start at L/2 - 1);
    ``brv``: the bit-reversal permutation of range(s)."""
    nb, s = v.shape
    inv_s = 1.0 / s
    for b in prange(nb):
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
        for j in range(s):
            out[b, j] = v[b, brv[j]] * inv_s
