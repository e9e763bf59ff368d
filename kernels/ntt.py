"""Negacyclic number-theoretic transform over Z_q[X]/(X^N + 1), one prime per row.

``forward`` maps coefficients to evaluations at the odd powers of a primitive 2N-th root of
unity ``psi``, in bit-reversed order::

    out[j] = sum_i a[i] * psi^(i * (2*bitrev(j) + 1))  mod q

``inverse`` is its exact inverse.  Both work in place on a C-contiguous ``(k, N)`` uint64
array; ``rows[i]`` names the table row (prime) of row ``i``.

Two kernel families with the same contract:

* portable: Cooley-Tukey / Gentleman-Sande with Harvey lazy reduction and a Shoup-style
  multiplication whose quotient is estimated in float64 (exact for primes < 2^50).
* ifma: AVX-512 IFMA (52-bit multiply-add) through llvmlite intrinsics, see ``kernels/ifma.py``;
  compiled only when first called, and only called when the CPU has IFMA.

``ACTIVE_PATH`` names the family ``forward``/``inverse`` use ("ifma" or "portable").
"""
from __future__ import annotations

import typing
from typing import Sequence

import numpy as np
from numba import njit, prange

from .cpu import HAS_IFMA, USE_IFMA

MAX_PRIME_BITS = 50
MIN_LOG_N = 4
MAX_LOG_N = 17

ACTIVE_PATH = "ifma" if USE_IFMA else "portable"


class NTTTables(typing.NamedTuple):
    q: np.ndarray          # (k,) uint64 primes, in the order given to make_tables
    psi: np.ndarray        # (k,) uint64 smallest primitive 2N-th root of unity mod q
    n: int                 # ring degree N
    log_n: int
    w_fwd: np.ndarray      # (k, N) uint64: w_fwd[i, m+j] = psi^bitrev(m+j)   (CT twiddles)
    wf_fwd: np.ndarray     # (k, N) float64: w_fwd / q (quotient estimate for the float path)
    ws_fwd: np.ndarray     # (k, N) uint64: floor(w_fwd * 2^52 / q) (Shoup companion, IFMA)
    w_inv: np.ndarray      # (k, N) uint64: w_inv[i, h+j] = psi^-bitrev(h+j)  (GS twiddles)
    wf_inv: np.ndarray     # (k, N) float64
    ws_inv: np.ndarray     # (k, N) uint64
    n_inv: np.ndarray      # (k,) uint64: N^-1 mod q
    n_inv_f: np.ndarray    # (k,) float64
    n_inv_s: np.ndarray    # (k,) uint64
    w1_n_inv: np.ndarray   # (k,) uint64: w_inv[1] * N^-1 mod q (folded into the last GS stage)
    w1_n_inv_f: np.ndarray  # (k,) float64
    w1_n_inv_s: np.ndarray  # (k,) uint64


# ---------------------------------------------------------------------------------------------
# table construction
# ---------------------------------------------------------------------------------------------

def _is_prime(p: int) -> bool:
    """Deterministic Miller-Rabin for p < 3.3e24 (covers every p < 2^50)."""
    if p < 2:
        return False
    small = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41)
    for s in small:
        if p % s == 0:
            return p == s
    d, r = p - 1, 0
    while d % 2 == 0:
        d //= 2
        r += 1
    for a in small:
        x = pow(a, d, p)
        if x in (1, p - 1):
            continue
        for _ in range(r - 1):
            x = x * x % p
            if x == p - 1:
                break
        else:
            return False
    return True


def _bitrev_perm(log_n: int) -> np.ndarray:
    n = 1 << log_n
    idx = np.arange(n, dtype=np.uint64)
    rev = np.zeros(n, dtype=np.uint64)
    for b in range(log_n):
        rev |= ((idx >> np.uint64(b)) & np.uint64(1)) << np.uint64(log_n - 1 - b)
    return rev.astype(np.int64)


@njit(cache=True)
def _mulmod_scalar(a, b, q):
    """a*b mod q for a, b < q < 2^50, exact: the float quotient is off by at most 1."""
    qh = np.uint64(np.float64(a) * np.float64(b) / np.float64(q))
    r = np.int64(a * b - qh * q)   # true value in (-q, 2q): the low 64 bits are exact
    if r < 0:
        r += np.int64(q)
    elif r >= np.int64(q):
        r -= np.int64(q)
    return np.uint64(r)


@njit(cache=True)
def _powers(g, n, q):
    """[g^0, g^1, ..., g^(n-1)] mod q."""
    out = np.empty(n, dtype=np.uint64)
    x = np.uint64(1)
    for i in range(n):
        out[i] = x
        x = _mulmod_scalar(x, g, q)
    return out


@njit(cache=True)
def _shoup52_nb(w, q):
    # floor(w * 2^52 / q) by long division, 13 bits at a time: the remainder r < q < 2^50,
    # so r << 13 < 2^63 never overflows.
    out = np.empty(w.shape[0], dtype=np.uint64)
    for i in range(w.shape[0]):
        r = w[i]
        quo = np.uint64(0)
        for _ in range(4):
            r = r << np.uint64(13)
            d = r // q
            r = r - d * q
            quo = (quo << np.uint64(13)) | d
        out[i] = quo
    return out


def _smallest_psi(q: int, n: int) -> int:
    two_n = 2 * n
    e = (q - 1) // two_n
    x = 2
    while True:
        g = pow(x, e, q)
        if pow(g, n, q) == q - 1:
            break
        x += 1
    # the primitive 2n-th roots are exactly g^odd; take the smallest
    pw = _powers(np.uint64(g), two_n, np.uint64(q))
    return int(pw[1::2].min())


def make_tables(primes: Sequence[int], n: int) -> NTTTables:
    """Precompute the NTT tables of ``primes`` for ring degree ``n``."""
    try:
        n_int = int(n)
    except (TypeError, ValueError):
        raise ValueError(f"n must be an integer power of two, got {n!r}") from None
    if n_int != n or n_int <= 0 or n_int & (n_int - 1):
        raise ValueError(f"n must be a power of two, got {n!r}")
    log_n = n_int.bit_length() - 1
    if not MIN_LOG_N <= log_n <= MAX_LOG_N:
        raise ValueError(f"n must be in 2^{MIN_LOG_N}..2^{MAX_LOG_N}, got {n_int}")
    n = n_int
    try:
        plist = [int(p) for p in primes]
    except (TypeError, ValueError):
        raise ValueError("primes must be a sequence of integers") from None
    if not plist:
        raise ValueError("primes must be non-empty")
    for p, orig in zip(plist, primes):
        if p != orig:
            raise ValueError(f"prime {orig!r} is not an integer")
    if len(set(plist)) != len(plist):
        raise ValueError("primes must be distinct")
    for p in plist:
        if not 2 < p < (1 << MAX_PRIME_BITS):
            raise ValueError(f"prime {p} must be in (2, 2^{MAX_PRIME_BITS})")
        if p % (2 * n) != 1:
            raise ValueError(f"prime {p} is not 1 mod 2N = {2 * n}")
        if not _is_prime(p):
            raise ValueError(f"{p} is not prime")

    k = len(plist)
    rev = _bitrev_perm(log_n)
    q_arr = np.array(plist, dtype=np.uint64)
    psi_arr = np.empty(k, dtype=np.uint64)
    w_fwd = np.empty((k, n), dtype=np.uint64)
    w_inv = np.empty((k, n), dtype=np.uint64)
    n_inv = np.empty(k, dtype=np.uint64)
    w1n = np.empty(k, dtype=np.uint64)
    for i, p in enumerate(plist):
        psi = _smallest_psi(p, n)
        psi_arr[i] = psi
        pw = _powers(np.uint64(psi), n, np.uint64(p))
        w_fwd[i] = pw[rev]
        pwi = _powers(np.uint64(pow(psi, -1, p)), n, np.uint64(p))
        w_inv[i] = pwi[rev]
        ni = pow(n, -1, p)
        n_inv[i] = ni
        w1n[i] = int(w_inv[i, 1]) * ni % p

    qf = q_arr.astype(np.float64)

    def fquot(w):  # w / q, correctly rounded: relative error <= 2^-53
        return w.astype(np.float64) / qf.reshape((-1,) + (1,) * (w.ndim - 1))

    def shoup(w):
        if w.ndim == 1:
            return np.array([_shoup52_nb(w[i:i + 1], q_arr[i])[0] for i in range(k)],
                            dtype=np.uint64)
        return np.stack([_shoup52_nb(w[i], q_arr[i]) for i in range(k)])

    return NTTTables(
        q=q_arr, psi=psi_arr, n=n, log_n=log_n,
        w_fwd=w_fwd, wf_fwd=fquot(w_fwd), ws_fwd=shoup(w_fwd),
        w_inv=w_inv, wf_inv=fquot(w_inv), ws_inv=shoup(w_inv),
        n_inv=n_inv, n_inv_f=fquot(n_inv), n_inv_s=shoup(n_inv),
        w1_n_inv=w1n, w1_n_inv_f=fquot(w1n), w1_n_inv_s=shoup(w1n),
    )


# ---------------------------------------------------------------------------------------------
# portable kernels
# ---------------------------------------------------------------------------------------------
# mulred(x, w, wf, q) = x*w mod q, result in [0, 2q), for x < 4q < 2^52 and w < q:
# x is exact in float64 and wf = fl(w/q) has relative error <= 2^-53, so z' = fl(x * wf)
# differs from z = x*w/q < 4q < 2^52 by less than 1 (two roundings, z*2^-52 < 1).  The
# truncated quotient is therefore floor(z) - 1, floor(z) or floor(z) + 1, and
# r = x*w - qh*q = q*(z - qh) lies in (-q, 2q).  Computed modulo 2^64 the low bits are exact;
# a negative r wraps to >= 2^64 - q, so min(r, r + q) maps it to [0, q) and leaves [0, 2q) alone.


@njit(cache=True, inline="always")
def _mulred(x, w, wf, q):
    qh = np.uint64(np.float64(x) * wf)
    r = x * w - qh * q
    return min(r, r + q)


@njit(cache=True, inline="always")
def _fwd_limb_portable(x, w, wf, q):
    n = np.uint64(x.shape[0])
    two_q = q + q
    m = np.uint64(1)
    t = n >> np.uint64(1)
    # Harvey invariant: every value stays in [0, 4q) between stages (4q < 2^52, no overflow).
    while m < n:
        for i in range(m):
            ww = w[m + i]
            wwf = wf[m + i]
            j1 = np.uint64(2) * i * t
            for j in range(j1, j1 + t):
                u = x[j]
                u = min(u, u - two_q)            # [0, 4q) -> [0, 2q)
                v = _mulred(x[j + t], ww, wwf, q)  # [0, 2q)
                x[j] = u + v                     # [0, 4q)
                x[j + t] = u - v + two_q         # (0, 4q)
        m = m << np.uint64(1)
        t = t >> np.uint64(1)
    for j in range(n):
        u = x[j]
        u = min(u, u - two_q)
        x[j] = min(u, u - q)


@njit(cache=True, inline="always")
def _inv_limb_portable(x, w, wf, q, ni, nif, w1n, w1nf):
    n = np.uint64(x.shape[0])
    two_q = q + q
    t = np.uint64(1)
    m = n
    # Harvey invariant: values in [0, 2q) between stages.
    while m > np.uint64(2):
        h = m >> np.uint64(1)
        for i in range(h):
            ww = w[h + i]
            wwf = wf[h + i]
            j1 = np.uint64(2) * i * t
            for j in range(j1, j1 + t):
                u = x[j]
                v = x[j + t]
                s = u + v                        # [0, 4q)
                x[j] = min(s, s - two_q)         # [0, 2q)
                x[j + t] = _mulred(u - v + two_q, ww, wwf, q)  # input (0, 4q) -> [0, 2q)
        t = t << np.uint64(1)
        m = h
    # last stage with N^-1 folded into both outputs
    for j in range(t):
        u = x[j]
        v = x[j + t]
        a0 = _mulred(u + v, ni, nif, q)
        a1 = _mulred(u - v + two_q, w1n, w1nf, q)
        x[j] = min(a0, a0 - q)
        x[j + t] = min(a1, a1 - q)


@njit(cache=True, parallel=True)
def _forward_portable_kernel(a, rows, q, w, wf):
    for r in prange(a.shape[0]):
        p = rows[r]
        _fwd_limb_portable(a[r], w[p], wf[p], q[p])


@njit(cache=True, parallel=True)
def _inverse_portable_kernel(a, rows, q, w, wf, ni, nif, w1n, w1nf):
    for r in prange(a.shape[0]):
        p = rows[r]
        _inv_limb_portable(a[r], w[p], wf[p], q[p], ni[p], nif[p], w1n[p], w1nf[p])


# ---------------------------------------------------------------------------------------------
# dispatch
# ---------------------------------------------------------------------------------------------

def _check(a, rows, t):
    if not isinstance(a, np.ndarray) or a.dtype != np.uint64 or a.ndim != 2:
        raise TypeError("a must be a 2-D uint64 ndarray")
    if not a.flags.c_contiguous:
        raise ValueError("a must be C-contiguous")
    if a.shape[1] != t.n:
        raise ValueError(f"a has {a.shape[1]} columns, tables are for N = {t.n}")
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    if rows.shape != (a.shape[0],):
        raise ValueError(f"rows must have shape ({a.shape[0]},), got {rows.shape}")
    if rows.size and (rows.min() < 0 or rows.max() >= t.q.shape[0]):
        raise ValueError("rows out of range of the tables")
    return rows


def forward_portable(a: np.ndarray, rows: np.ndarray, t: NTTTables) -> None:
    rows = _check(a, rows, t)
    _forward_portable_kernel(a, rows, t.q, t.w_fwd, t.wf_fwd)


def inverse_portable(a: np.ndarray, rows: np.ndarray, t: NTTTables) -> None:
    rows = _check(a, rows, t)
    _inverse_portable_kernel(a, rows, t.q, t.w_inv, t.wf_inv, t.n_inv, t.n_inv_f,
                             t.w1_n_inv, t.w1_n_inv_f)


def forward_ifma(a: np.ndarray, rows: np.ndarray, t: NTTTables) -> None:
    raise NotImplementedError("IFMA kernels not written yet")


def inverse_ifma(a: np.ndarray, rows: np.ndarray, t: NTTTables) -> None:
    raise NotImplementedError("IFMA kernels not written yet")


ACTIVE_PATH = "portable"  # IFMA kernels pending
forward = forward_portable
inverse = inverse_portable
