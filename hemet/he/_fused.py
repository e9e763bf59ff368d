"""Fused kernels for the HE backend: ``acc += ct * pt`` over both ciphertext polynomials in
one parallel region (no temporary ciphertext; the plaintext is read once for both)."""
from numba import njit, prange

from kernels.modarith import mulmod_f

__all__ = ["mul_add_ct"]


@njit(cache=True, parallel=True)
def mul_add_ct(ct, pt, q, acc):
    """acc[p, i] += ct[p, i] * pt[i] (mod q[i]) for p = 0, 1; uint64 arrays (2, k, n) / (k, n)."""
    _, k, n = ct.shape
    for i in prange(k):
        qi = q[i]
        qinv = 1.0 / float(qi)
        for j in range(n):
            b = pt[i, j]
            bf = float(b)
            s = acc[0, i, j] + mulmod_f(b, bf, ct[0, i, j], qi, qinv)
            acc[0, i, j] = min(s, s - qi)
            s = acc[1, i, j] + mulmod_f(b, bf, ct[1, i, j], qi, qinv)
            acc[1, i, j] = min(s, s - qi)
