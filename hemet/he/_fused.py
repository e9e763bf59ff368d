"""Fused kernels for the HE backend: ``acc += ct * pt`` over both ciphertext polynomials in
one parallel region (no temporary ciphertext; the plaintext is read once for both)."""
from numba import njit, prange

from kernels.modarith import mulmod_f

__all__ = ["mul_add_many"]


@njit(cache=True, parallel=True)
def mul_add_many(cts, pts, accs, q):
    """accs[t] += cts[t] * pts[t] for every t (typed lists; accumulators may repeat): one
    parallel region per batch of terms instead of one per term, and each thread keeps its
    limb of a shared accumulator in cache across the terms that add into it."""
    k = pts[0].shape[0]
    for i in prange(k):
        qi = q[i]
        qinv = 1.0 / float(qi)
        for t in range(len(cts)):
            ct, pt, acc = cts[t], pts[t], accs[t]
            for j in range(pt.shape[1]):
                b = pt[i, j]
                bf = float(b)
                s = acc[0, i, j] + mulmod_f(b, bf, ct[0, i, j], qi, qinv)
                acc[0, i, j] = min(s, s - qi)
                s = acc[1, i, j] + mulmod_f(b, bf, ct[1, i, j], qi, qinv)
                acc[1, i, j] = min(s, s - qi)
