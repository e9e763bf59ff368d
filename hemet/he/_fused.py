"""Fused kernels for the HE backend: ``acc += ct * pt`` over both ciphertext polynomials in
one parallel region (no temporary ciphertext; the plaintext is read once for both).

``coeff_mul_add_many`` takes pinned *compact* plaintexts (int64 coefficients) and turns each
limb into NTT form in a per-thread buffer right before its products: the converted plaintext
never goes to memory (at N = 2^15 a limb is 256 KiB and stays in the core's L2), where
converting first wrote all limbs out and the products read them back."""
import numpy as np
from numba import njit, prange

from kernels.modarith import mulmod_f
from kernels.ntt import USE_IFMA, _fwd_limb_ifma, _fwd_limb_portable

__all__ = ["mul_add_many", "coeff_mul_add_many"]


@njit(cache=True, inline="always")
def _mul_acc_limb(b_row, ct, acc, i, qi, qinv):
    for j in range(b_row.shape[0]):
        b = b_row[j]
        bf = float(b)
        s = acc[0, i, j] + mulmod_f(b, bf, ct[0, i, j], qi, qinv)
        acc[0, i, j] = min(s, s - qi)
        s = acc[1, i, j] + mulmod_f(b, bf, ct[1, i, j], qi, qinv)
        acc[1, i, j] = min(s, s - qi)


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
            _mul_acc_limb(pts[t][i], cts[t], accs[t], i, qi, qinv)


@njit(cache=True, inline="always")
def _reduce_signed_row(c, qi, qinv, out):
    """out = c mod qi for signed int64 c (|c| <= 2^62), as ``modarith.reduce_signed``."""
    qs = np.int64(qi)
    for j in range(c.shape[0]):
        v = c[j]
        r = v - np.int64(float(v) * qinv) * qs
        r = r + qs if r < 0 else r
        r = r - qs if r >= qs else r
        out[j] = np.uint64(r)


@njit(cache=True, parallel=True)
def _coeff_mul_add_many_ifma(cts, coeffs, accs, q, rows, w, ws):
    k = cts[0].shape[1]
    n = coeffs[0].shape[0]
    for i in prange(k):
        buf = np.empty(n, np.uint64)
        qi = q[i]
        qinv = 1.0 / float(qi)
        p = rows[i]
        for t in range(len(coeffs)):
            _reduce_signed_row(coeffs[t], qi, qinv, buf)
            _fwd_limb_ifma(buf, w[p], ws[p], q[i])
            _mul_acc_limb(buf, cts[t], accs[t], i, qi, qinv)


@njit(cache=True, parallel=True)
def _coeff_mul_add_many_portable(cts, coeffs, accs, q, rows, w, wf):
    k = cts[0].shape[1]
    n = coeffs[0].shape[0]
    for i in prange(k):
        buf = np.empty(n, np.uint64)
        qi = q[i]
        qinv = 1.0 / float(qi)
        p = rows[i]
        for t in range(len(coeffs)):
            _reduce_signed_row(coeffs[t], qi, qinv, buf)
            _fwd_limb_portable(buf, w[p], wf[p], q[i])
            _mul_acc_limb(buf, cts[t], accs[t], i, qi, qinv)


def coeff_mul_add_many(cts, coeffs, accs, q, rows, tables, ifma: bool = USE_IFMA) -> None:
    """accs[t] += cts[t] * NTT(coeffs[t] mod q) for every t (typed lists; ``coeffs[t]``: a
    plaintext's N int64 coefficients), ``q`` the ciphertexts' primes, ``rows`` their rows in
    ``tables``; ``ifma=False``: the portable NTT."""
    if len(coeffs) != len(cts) or len(cts) != len(accs) or not len(cts):
        raise ValueError("one coefficient row, ciphertext and accumulator per term")
    if ifma:
        _coeff_mul_add_many_ifma(cts, coeffs, accs, q, rows, tables.w_fwd, tables.ws_fwd)
    else:
        _coeff_mul_add_many_portable(cts, coeffs, accs, q, rows, tables.w_fwd, tables.wf_fwd)
