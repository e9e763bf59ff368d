"""RNS basis conversion (ModUp / ModDown of hybrid key switching) and exact CRT decoding.

Fast basis conversion (Bajard et al., HPS): for x given by residues modulo q_0..q_{k-1}
with Q = prod q_i, ``convert`` returns sum_i [x_i * (Q/q_i)^-1]_{q_i} * (Q/q_i) modulo each
target prime.  That equals x + u*Q with 0 <= u < k: the small multiple of Q is the usual
approximation error that key switching absorbs.
"""
import numpy as np
from numba import njit, prange, float64, uint64

from .modarith import mulmod, reduce_small


@njit(cache=True, parallel=True)
def convert(x, q_from, qhat_inv, q_to, qhat_mod, out):
    """Approximate basis conversion of coefficient-domain residues.

    x: (k, N) residues mod q_from; qhat_inv: (k,) [(Q/q_i)^-1]_{q_i};
    qhat_mod: (k, m) [Q/q_i]_{p_t}; out: (m, N) residues mod q_to.
    """
    k, n = x.shape
    m = q_to.shape[0]
    y = np.empty((k, n), dtype=np.uint64)
    for i in prange(k):
        qi = q_from[i]
        qinv = 1.0 / float64(qi)
        c = qhat_inv[i]
        for j in range(n):
            y[i, j] = mulmod(x[i, j], c, qi, qinv)
    for t in prange(m):
        p = q_to[t]
        pinv = 1.0 / float64(p)
        o = out[t]
        for j in range(n):
            o[j] = 0
        # y < 2^50 and each product is reduced below p < 2^50, so k < 2^13 terms cannot overflow.
        for i in range(k):
            c = qhat_mod[i, t]
            yi = y[i]
            for j in range(n):
                o[j] += mulmod(yi[j], c, p, pinv)
        for j in range(n):
            o[j] = reduce_small(o[j], p, pinv)


@njit(cache=True, parallel=True)
def lift_centered(x, q_src, q, out):
    """out[i] = [x]_{q_src} mod q[i], with x taken in (-q_src/2, q_src/2].

    Used by rescale: subtracting the centred remainder makes the division by q_src round to
    nearest instead of flooring.
    """
    k, n = out.shape
    half = q_src >> uint64(1)
    for i in prange(k):
        qi = q[i]
        qs_mod = q_src % qi
        for j in range(n):
            v = x[j]
            r = v % qi
            if v > half:
                # v - q_src (negative) modulo qi
                s = r + (qi - qs_mod)
                r = min(s, s - qi)
            out[i, j] = r


@njit(cache=True, parallel=True)
def crt_to_float(x, q, garner_inv, half_digits, out):
    """Centred CRT reconstruction of (k, N) residues to float64 values, exact up to rounding.

    garner_inv[j, i] = q_j^-1 mod q_i (j < i); half_digits are the mixed-radix digits of
    floor(Q/2).  Mixed-radix digits of x are computed exactly with Garner's algorithm and
    compared with floor(Q/2) to decide the sign exactly; the value is then evaluated by
    Horner's rule in float64, so its relative error is ~k*2^-53 however large Q is.
    Negative values get the digits of Q - x, so no cancellation happens.
    """
    k, n = x.shape
    for j in prange(n):
        d = np.empty(k, dtype=np.uint64)
        _garner(x, j, q, garner_inv, False, d)
        negative = False
        for i in range(k - 1, -1, -1):
            if d[i] != half_digits[i]:
                negative = d[i] > half_digits[i]
                break
        if negative:
            _garner(x, j, q, garner_inv, True, d)
        acc = 0.0
        for i in range(k - 1, -1, -1):
            acc = acc * float64(q[i]) + float64(d[i])
        out[j] = -acc if negative else acc


@njit(inline="always", cache=True)
def _garner(x, j, q, garner_inv, negate, d):
    """Mixed-radix digits d of x[:, j] (or of Q - x[:, j]): x = d_0 + q_0 (d_1 + q_1 (...))."""
    k = x.shape[0]
    for i in range(k):
        qi = q[i]
        qinv = 1.0 / float64(qi)
        t = x[i, j]
        if negate:
            t = min(qi - t, uint64(0) - t)  # (q - x) mod q; 0 stays 0
        for l in range(i):
            s = t + (qi - d[l] % qi)
            s = min(s, s - qi)
            t = mulmod(s, garner_inv[l, i], qi, qinv)
        d[i] = t


def mixed_radix_digits(value: int, primes) -> np.ndarray:
    """Digits of a non-negative integer below prod(primes) in the mixed radix of ``primes``."""
    out = []
    for p in primes:
        out.append(value % p)
        value //= p
    return np.array(out, dtype=np.uint64)
