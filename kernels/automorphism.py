"""Galois automorphisms X -> X^g of Z_q[X]/(X^N + 1).

In the NTT domain an automorphism only permutes evaluation points.  ``kernels.ntt`` stores
evaluations in bit-reversed order: entry j holds a(psi^(2*bitrev(j)+1)), so
sigma_g(a)(psi^e) = a(psi^(e*g)) makes entry j take the entry whose exponent is e_j*g mod 2N.
"""
import numpy as np
from numba import njit, prange


def bit_reverse_indices(n: int) -> np.ndarray:
    bits = n.bit_length() - 1
    idx = np.arange(n, dtype=np.int64)
    rev = np.zeros(n, dtype=np.int64)
    for b in range(bits):
        rev |= ((idx >> b) & 1) << (bits - 1 - b)
    return rev


def galois_permutation(n: int, g: int) -> np.ndarray:
    """Index array perm with sigma_g(a)[j] = a[perm[j]] for NTT-domain (bit-reversed) a."""
    if n & (n - 1) or n < 2:
        raise ValueError(f"n must be a power of two, got {n}")
    if g % 2 == 0:
        raise ValueError(f"Galois element must be odd, got {g}")
    rev = bit_reverse_indices(n)
    exps = 2 * rev + 1
    target = (exps * (g % (2 * n))) % (2 * n)
    # position of exponent e is bitrev((e - 1) / 2)
    return rev[(target - 1) // 2].astype(np.int64)


@njit(cache=True, parallel=True)
def permute(a, perm, out):
    """out[i, j] = a[i, perm[j]] for every row (out must not alias a)."""
    k, n = a.shape
    for i in prange(k):
        for j in range(n):
            out[i, j] = a[i, perm[j]]


def automorphism_coeff(a: np.ndarray, g: int, q: np.ndarray) -> np.ndarray:
    """Coefficient-domain sigma_g for (k, N) residues: X^i -> X^(i*g mod 2N) with X^N = -1."""
    k, n = a.shape
    idx = (np.arange(n, dtype=np.int64) * (g % (2 * n))) % (2 * n)
    out = np.zeros_like(a)
    pos = idx % n
    flip = idx >= n
    qcol = q.reshape(-1, 1).astype(np.uint64)
    vals = np.where(flip[None, :], (qcol - a) % qcol, a)
    out[:, pos] = vals
    return out
