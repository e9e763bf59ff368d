"""Negacyclic number-theoretic transform over Z_q[X]/(X^N + 1), one prime per row.

``forward`` maps coefficients to evaluations at the odd powers of a primitive 2N-th root of
unity ``psi``, in bit-reversed order::

    out[j] = sum_i a[i] * psi^(i * (2*bitrev(j) + 1))  mod q

``inverse`` is its exact inverse.  Both work in place on a C-contiguous ``(k, N)`` uint64
array; ``rows[i]`` names the table row (prime) of row ``i``.

Two kernel families with the same contract:

* portable: Cooley-Tukey / Gentleman-Sande in float64 arithmetic on four-lane vectors
  (``kernels/f64x4.py``, generic LLVM vector IR): signed lazy values between stages, a
  quotient estimate and exact FMA products, exact for primes < 2^50; radix-4 passes over
  memory and the last three stages in registers.
* ifma: AVX-512 IFMA (52-bit multiply-add) through llvmlite intrinsics, see ``kernels/ifma.py``;
  compiled only when first called, and only called when the CPU has IFMA.

``ACTIVE_PATH`` names the family ``forward``/``inverse`` use ("ifma" or "portable").

Calls with one limb, one thread, or fewer than ``PARALLEL_MIN_ELEMENTS`` coefficients run a
serial kernel; larger ones a ``prange`` kernel over limbs.  Other Numba code can fuse the
per-limb transforms directly: ``_fwd_limb_portable(x, w, wf, q)``,
``_inv_limb_portable(x, w, wf, q, ni, nif, w1n, w1nf)``, ``_fwd_limb_ifma(x, w, ws, q)``,
``_inv_limb_ifma(x, w, ws, q, ni, nis, w1n, w1ns)`` with the rows of the table fields
(``*_fwd`` / ``*_inv``, ``n_inv*``, ``w1_n_inv*``).  The IFMA ones also come split into
their memory stages and their in-register 16-element blocks (``_fwd_head_ifma`` +
``_fwd_block16_ifma``, ``_inv_block16_ifma`` + ``_inv_tail_ifma``) for kernels that run the
blocks inside a pass of their own.

Single-thread medians (microseconds per limb, forward and inverse alike): IFMA on the
AVX-512 Xeon: N=2^14: 28, N=2^15: 52, N=2^16: 105; portable on an AVX2 EPYC (Zen 3):
N=2^15: 131 / 130 (the scalar-form kernels it replaced: 254 / 246).
"""
from __future__ import annotations

import typing
from typing import Sequence

import numba
import numpy as np
from numba import njit, prange

from .cpu import HAS_IFMA, USE_IFMA
from .ifma import (madd52hi, madd52lo, shuf_even, shuf_hi1, shuf_hi2, shuf_hi4, shuf_ihi,
                   shuf_ilo, shuf_lo1, shuf_lo2, shuf_lo4, shuf_odd, spread2, spread4, vadd,
                   vand, vbcast, vload, vmin, vstore, vsub)
from .f64x4 import (fadd, fbcast, fload, fload_dup2, fmul, fshuf_even,
                    fshuf_hi1, fshuf_hi2, fshuf_ihi, fshuf_ilo, fshuf_lo1, fshuf_lo2, fshuf_odd,
                    fstore, fsub)
from .modarith import f4_mulmod_est, f4_red, f4_residue, reduce_signed_row, to_f64

MAX_PRIME_BITS = 50
MIN_LOG_N = 4
MAX_LOG_N = 17

ACTIVE_PATH = "ifma" if USE_IFMA else "portable"


class NTTTables(typing.NamedTuple):
    """Per-prime NTT tables.  Every field is an array whose first axis is the prime, so
    ``NTTTables(*(f[idx] for f in t))`` selects (or reorders) primes; N = ``w_fwd.shape[1]``."""

    q: np.ndarray          # (k,) uint64 primes, in the order given to make_tables
    psi: np.ndarray        # (k,) uint64 smallest primitive 2N-th root of unity mod q
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

    ws_fwd = shoup(w_fwd)
    ws_inv = shoup(w_inv)

    return NTTTables(
        q=q_arr, psi=psi_arr,
        w_fwd=w_fwd, wf_fwd=fquot(w_fwd), ws_fwd=ws_fwd,
        w_inv=w_inv, wf_inv=fquot(w_inv), ws_inv=ws_inv,
        n_inv=n_inv, n_inv_f=fquot(n_inv), n_inv_s=shoup(n_inv),
        w1_n_inv=w1n, w1_n_inv_f=fquot(w1n), w1_n_inv_s=shoup(w1n),
    )


# ---------------------------------------------------------------------------------------------
# portable kernels
# ---------------------------------------------------------------------------------------------
# The portable kernels compute in float64, on four-lane vectors (kernels/f64x4.py): each limb
# is converted in place to float64 integers by the first pass and back to uint64 residues in
# [0, q) by the last (the row's memory is viewed as float64 in between), so no butterfly
# converts between integers and floats, which AVX2 can only do through bit tricks.  Values
# are signed between stages.  Measured on an AVX2 EPYC, N = 2^15: 131 / 130 us per limb
# forward / inverse, against 254 / 246 us for the uint64 kernels with a float quotient that
# these replace; the last three stages run in registers, where the loop vectoriser had left
# the short stages (t <= 8) scalar at two to three times a long stage's cost.
#
# Why exact, for primes q < 2^50 and integer-valued lanes x with |x| < 2^52:
# * red(x) = modarith.f4_red(x): |red(x)| <= q/2 + 2 for integer |x| <= 2^53, exactly.
# * mulred(x, w, wf) = x*w - rint(x * wf) * q for w < q, wf = fl(w/q): t = fl(x * wf) is
#   within |z| * 2^-52 of z = x*w/q, so r = q * (z - rint(t)) has |r| < q * (1/2 + |x| 2^-52),
#   below q for |x| < 2^51 and below 1.5q for any |x| < 2^52.  With hi = fl(x*w) the product
#   is hi + lo exactly, lo = fma(x, w, -hi), |lo| <= 2^49; hi - k*q = r - lo is an integer
#   below 2^53 in magnitude, so one FMA computes it exactly, and adding lo gives r exactly.
# * Cooley-Tukey (u, v) -> red(u) +- mulred(v): outputs below q/2 + 2 + 1.5q from any inputs
#   below 2^52, so every forward stage after the first sees |x| <= 2q + 2 (< 2^51).
# * Gentleman-Sande (u, v) -> red(u + v), mulred(u - v): from inputs below 2^52 the outputs
#   fall below 1.5q + 2, then below q/2 + 2 + |u - v| 2^-52 q + q/2 < 1.25q + 3, and so on
#   towards q; every sum stays far below 2^53, so the integers are exact throughout.
# * out(x) = modarith.f4_residue(x): red(x), plus q where negative: [0, q).
# So both kernels take uint64 inputs below 2^52, not only residues, and the forward one also
# signed int64 inputs below 2^51 in magnitude (exact through fload's signed conversion).

@njit(cache=True, inline="always")
def _fmulred(x, w, wf, q):
    return f4_mulmod_est(x, w, fmul(x, wf), q)


@njit(cache=True, inline="always")
def _fct(u, v, w, wf, q, qinv):
    u = f4_red(u, q, qinv)
    v = _fmulred(v, w, wf, q)
    return fadd(u, v), fsub(u, v)


@njit(cache=True, inline="always")
def _fgs(u, v, w, wf, q, qinv):
    return f4_red(fadd(u, v), q, qinv), _fmulred(fsub(u, v), w, wf, q)


@njit(cache=True, inline="always")
def _ftw(w, wf, k):
    # one twiddle (uint64 table) and its quotient companion in all four lanes
    return fbcast(to_f64(w[k])), fbcast(wf[k])


@njit(cache=True, inline="always")
def _fstore4(xf, j, b0, b1, b2, b3, a0, a1, a2, a3):
    # the four quarters of a radix-4 pass, at offset j of each
    fstore(xf, b0 + j, a0)
    fstore(xf, b1 + j, a1)
    fstore(xf, b2 + j, a2)
    fstore(xf, b3 + j, a3)


_U1 = np.uint64(1)
_U2 = np.uint64(2)
_U3 = np.uint64(3)
_U4 = np.uint64(4)


@njit(cache=True)
def _fwd_limb_portable(x, w, wf, q):
    _fwd_limb_from_portable(x, x, w, wf, q)


@njit(cache=True)
def _fwd_limb_from_portable(src, x, w, wf, q):
    """x = NTT(src) mod q: ``src`` uint64 below 2^52 (``src is x``: in place) or signed
    int64 below 2^51 in magnitude, such as a compact plaintext's coefficients (the first
    stage takes signed inputs, so they need no reduction first)."""
    n = np.uint64(x.shape[0])
    qs = to_f64(q)
    qv = fbcast(qs)
    qi = fbcast(1.0 / qs)
    xf = x.view(np.float64)
    # first stage (t = n/2), reading the integers
    h = n >> _U1
    tw, twf = _ftw(w, wf, _U1)
    for jj in range(h >> _U2):
        j = jj << _U2
        a, b = _fct(fload(src, j), fload(src, j + h), tw, twf, qv, qi)
        fstore(xf, j, a)
        fstore(xf, j + h, b)
    # stages t = n/4 ... 16 in pairs (radix 4: half the passes over memory)
    m = _U2
    t = n >> _U2
    while t >= np.uint64(16):
        t2 = t >> _U1
        for i in range(m):
            w1, w1f = _ftw(w, wf, m + i)
            k2 = (m + i) << _U1
            w2, w2f = _ftw(w, wf, k2)
            w3, w3f = _ftw(w, wf, k2 + _U1)
            b0 = (i * t) << _U1
            b1 = b0 + t2
            b2 = b0 + t
            b3 = b2 + t2
            for jj in range(t2 >> _U2):
                j = jj << _U2
                a0, a2 = _fct(fload(xf, b0 + j), fload(xf, b2 + j), w1, w1f, qv, qi)
                a1, a3 = _fct(fload(xf, b1 + j), fload(xf, b3 + j), w1, w1f, qv, qi)
                a0, a1 = _fct(a0, a1, w2, w2f, qv, qi)
                a2, a3 = _fct(a2, a3, w3, w3f, qv, qi)
                _fstore4(xf, j, b0, b1, b2, b3, a0, a1, a2, a3)
        m = m << _U2
        t = t >> _U2
    if t == np.uint64(8):
        for i in range(m):
            tw, twf = _ftw(w, wf, m + i)
            b0 = i << _U4
            a0, a2 = _fct(fload(xf, b0), fload(xf, b0 + np.uint64(8)), tw, twf, qv, qi)
            a1, a3 = _fct(fload(xf, b0 + _U4), fload(xf, b0 + np.uint64(12)), tw, twf, qv, qi)
            fstore(xf, b0, a0)
            fstore(xf, b0 + _U4, a1)
            fstore(xf, b0 + np.uint64(8), a2)
            fstore(xf, b0 + np.uint64(12), a3)
        m = m << _U1
    # t = 4, 2, 1 in registers, one block of 8 at a time (m == n/8), writing residues back
    for i in range(m):
        j = i << _U3
        tw, twf = _ftw(w, wf, m + i)
        p, r = _fct(fload(xf, j), fload(xf, j + _U4), tw, twf, qv, qi)
        k = (m + i) << _U1
        u, v = _fct(fshuf_lo2(p, r), fshuf_hi2(p, r), fload_dup2(w, k), fload_dup2(wf, k),
                    qv, qi)
        k = k << _U1
        u, v = _fct(fshuf_lo1(u, v), fshuf_hi1(u, v), fload(w, k), fload(wf, k), qv, qi)
        fstore(x, j, f4_residue(fshuf_ilo(u, v), qv, qi))
        fstore(x, j + _U4, f4_residue(fshuf_ihi(u, v), qv, qi))


@njit(cache=True)
def _inv_limb_portable(x, w, wf, q, ni, nif, w1n, w1nf):
    n = np.uint64(x.shape[0])
    qs = to_f64(q)
    qv = fbcast(qs)
    qi = fbcast(1.0 / qs)
    xf = x.view(np.float64)
    # t = 1, 2, 4 in registers, one block of 8 at a time, reading the uint64 residues
    h = n >> _U1
    for i in range(n >> _U3):
        j = i << _U3
        a = fload(x, j)
        b = fload(x, j + _U4)
        k = h + (i << _U2)
        u, v = _fgs(fshuf_even(a, b), fshuf_odd(a, b), fload(w, k), fload(wf, k), qv, qi)
        k = (h >> _U1) + (i << _U1)
        u, v = _fgs(fshuf_lo1(u, v), fshuf_hi1(u, v), fload_dup2(w, k), fload_dup2(wf, k),
                    qv, qi)
        tw, twf = _ftw(w, wf, (h >> _U2) + i)
        u, v = _fgs(fshuf_lo2(u, v), fshuf_hi2(u, v), tw, twf, qv, qi)
        fstore(xf, j, u)
        fstore(xf, j + _U4, v)
    # stages t = 8 ... n/4 in pairs (h groups, then h/2)
    h = n >> _U4
    t = np.uint64(8)
    while h >= _U4:
        for i in range(h >> _U1):
            wa, waf = _ftw(w, wf, h + (i << _U1))
            wb, wbf = _ftw(w, wf, h + (i << _U1) + _U1)
            wc, wcf = _ftw(w, wf, (h >> _U1) + i)
            b0 = (i * t) << _U2
            b1 = b0 + t
            b2 = b1 + t
            b3 = b2 + t
            for jj in range(t >> _U2):
                j = jj << _U2
                a0, a1 = _fgs(fload(xf, b0 + j), fload(xf, b1 + j), wa, waf, qv, qi)
                a2, a3 = _fgs(fload(xf, b2 + j), fload(xf, b3 + j), wb, wbf, qv, qi)
                a0, a2 = _fgs(a0, a2, wc, wcf, qv, qi)
                a1, a3 = _fgs(a1, a3, wc, wcf, qv, qi)
                _fstore4(xf, j, b0, b1, b2, b3, a0, a1, a2, a3)
        h = h >> _U2
        t = t << _U2
    if h == _U2:
        for i in range(_U2):
            tw, twf = _ftw(w, wf, _U2 + i)
            b0 = (i * t) << _U1
            for jj in range(t >> _U2):
                j = b0 + (jj << _U2)
                a, b = _fgs(fload(xf, j), fload(xf, j + t), tw, twf, qv, qi)
                fstore(xf, j, a)
                fstore(xf, j + t, b)
        t = t << _U1
    # last stage (t = n/2) with N^-1 folded in, writing residues back
    nv = fbcast(to_f64(ni))
    nvf = fbcast(nif)
    w1 = fbcast(to_f64(w1n))
    w1f = fbcast(w1nf)
    for jj in range(t >> _U2):
        j = jj << _U2
        u = fload(xf, j)
        v = fload(xf, j + t)
        fstore(x, j, f4_residue(_fmulred(fadd(u, v), nv, nvf, qv), qv, qi))
        fstore(x, j + t, f4_residue(_fmulred(fsub(u, v), w1, w1f, qv), qv, qi))


@njit(cache=True, inline="always")
def _check_rows(rows, k):
    for r in range(rows.shape[0]):
        if rows[r] < 0 or rows[r] >= k:
            raise ValueError("rows out of range of the tables")


@njit(cache=True)
def _forward_portable_serial(a, rows, q, w, wf):
    _check_rows(rows, q.shape[0])
    for r in range(a.shape[0]):
        p = rows[r]
        _fwd_limb_portable(a[r], w[p], wf[p], q[p])


@njit(cache=True, parallel=True)
def _forward_portable_parallel(a, rows, q, w, wf):
    _check_rows(rows, q.shape[0])
    for r in prange(a.shape[0]):
        p = rows[r]
        _fwd_limb_portable(a[r], w[p], wf[p], q[p])


@njit(cache=True)
def _inverse_portable_serial(a, rows, q, w, wf, ni, nif, w1n, w1nf):
    _check_rows(rows, q.shape[0])
    for r in range(a.shape[0]):
        p = rows[r]
        _inv_limb_portable(a[r], w[p], wf[p], q[p], ni[p], nif[p], w1n[p], w1nf[p])


@njit(cache=True, parallel=True)
def _inverse_portable_parallel(a, rows, q, w, wf, ni, nif, w1n, w1nf):
    _check_rows(rows, q.shape[0])
    for r in prange(a.shape[0]):
        p = rows[r]
        _inv_limb_portable(a[r], w[p], wf[p], q[p], ni[p], nif[p], w1n[p], w1nf[p])


# ---------------------------------------------------------------------------------------------
# IFMA kernels (8 lanes of 52-bit multiply-add; see kernels/ifma.py)
# ---------------------------------------------------------------------------------------------
# vmulred(x, w, ws) = x*w mod q in [0, 2q) for x < 2^52, w < q, ws = floor(w * 2^52 / q):
# Shoup with beta = 2^52.  qh = floor(x*ws / 2^52) and x*w/q - qh lies in [0, 1 + x/2^52) so
# r = x*w - qh*q is in [0, 2q) < 2^52; its low 52 bits are lo52(x*w) + lo52(qh*(2^52 - q))
# mod 2^52 (each term < 2^52, sum < 2^53: no 64-bit overflow), masked to 52 bits.

_MASK52 = np.uint64((1 << 52) - 1)
_TWO52 = np.uint64(1 << 52)


@njit(cache=True, inline="always")
def _vmulred(x, w, ws, negq, mask, zero):
    qh = madd52hi(zero, x, ws)
    return vand(madd52lo(madd52lo(zero, x, w), qh, negq), mask)


@njit(cache=True, inline="always")
def _vct(u, v, w, ws, two_q, negq, mask, zero):
    # Cooley-Tukey butterfly, inputs and outputs in [0, 4q)
    u = vmin(u, vsub(u, two_q))                  # [0, 2q)
    v = _vmulred(v, w, ws, negq, mask, zero)      # [0, 2q)
    return vadd(u, v), vsub(vadd(u, two_q), v)   # [0, 4q), (0, 4q)


@njit(cache=True, inline="always")
def _vgs(u, v, w, ws, two_q, negq, mask, zero):
    # Gentleman-Sande butterfly, inputs and outputs in [0, 2q)
    s = vadd(u, v)                                # [0, 4q)
    d = vsub(vadd(u, two_q), v)                   # (0, 4q) < 2^52
    return vmin(s, vsub(s, two_q)), _vmulred(d, w, ws, negq, mask, zero)


@njit(cache=True, inline="always")
def _vgs_last(u, v, ni, nis, w1n, w1ns, q, two_q, negq, mask, zero):
    # last Gentleman-Sande stage with N^-1 folded in; outputs fully reduced to [0, q)
    s = _vmulred(vadd(u, v), ni, nis, negq, mask, zero)
    d = _vmulred(vsub(vadd(u, two_q), v), w1n, w1ns, negq, mask, zero)
    return vmin(s, vsub(s, q)), vmin(d, vsub(d, q))


# The IFMA transforms come in two parts so that fused kernels can run the in-register part
# of a transform inside another pass over the row (``kernels/ifma_arith.py``): the forward
# transform's last four stages (t = 8, 4, 2, 1) and the inverse transform's first four
# (t = 1, 2, 4, 8) work on one 16-element block at a time (``_fwd_block16_ifma``,
# ``_inv_block16_ifma``: block c is x[16c : 16c + 16]); the other stages go through memory
# (``_fwd_head_ifma`` before the blocks, ``_inv_tail_ifma`` after them).
@njit(cache=True, inline="always")
def _fwd_block16_ifma(x, c, w, ws, n, q, two_q, negq, mask, zero):
    # Twiddles of block c: t=8 group n/16 + c; t=4 groups n/8 + 2c + lane//4; t=2 groups
    # n/4 + 4c + lane//2; t=1 groups n/2 + 8c + lane.  The 8-lane loads at n/8 + 2c and
    # n/4 + 4c end below n/2 + 4 <= n: in bounds.  Output fully reduced to [0, q).
    m = n >> np.uint64(4)
    b = c << np.uint64(4)
    e = c << np.uint64(3)
    e4 = (n >> np.uint64(3)) + (c << np.uint64(1))
    e2 = (n >> np.uint64(2)) + (c << np.uint64(2))
    half = n >> np.uint64(1)
    a0 = vload(x, b)
    a1 = vload(x, b + np.uint64(8))
    a0, a1 = _vct(a0, a1, vbcast(w[m + c]), vbcast(ws[m + c]), two_q, negq, mask, zero)
    u = shuf_lo4(a0, a1)
    v = shuf_hi4(a0, a1)
    u, v = _vct(u, v, spread4(vload(w, e4)), spread4(vload(ws, e4)), two_q, negq, mask, zero)
    a0 = shuf_lo2(u, v)
    a1 = shuf_hi2(u, v)
    a0, a1 = _vct(a0, a1, spread2(vload(w, e2)), spread2(vload(ws, e2)), two_q, negq, mask, zero)
    u = shuf_lo1(a0, a1)
    v = shuf_hi1(a0, a1)
    u, v = _vct(u, v, vload(w, half + e), vload(ws, half + e), two_q, negq, mask, zero)
    u = vmin(u, vsub(u, two_q))               # [0, 4q) -> [0, 2q) -> [0, q)
    u = vmin(u, vsub(u, q))
    v = vmin(v, vsub(v, two_q))
    v = vmin(v, vsub(v, q))
    vstore(x, b, shuf_ilo(u, v))
    vstore(x, b + np.uint64(8), shuf_ihi(u, v))


@njit(cache=True)
def _fwd_head_ifma(x, w, ws, qs):
    """The forward stages with t >= 16 (through memory): radix-2 once if their count is odd,
    then radix-4.  Input < q, output < 4q."""
    n = np.uint64(x.shape[0])
    zero = vbcast(np.uint64(0))
    two_q = vbcast(qs + qs)
    negq = vbcast(_TWO52 - qs)
    mask = vbcast(_MASK52)
    log_n = np.uint64(0)
    while (np.uint64(1) << log_n) < n:
        log_n += np.uint64(1)
    m = np.uint64(1)
    t = n >> np.uint64(1)
    if (log_n - np.uint64(4)) & np.uint64(1):
        wv = vbcast(w[1])
        wsv = vbcast(ws[1])
        for j in range(np.uint64(0), t, np.uint64(8)):
            u, v = _vct(vload(x, j), vload(x, j + t), wv, wsv, two_q, negq, mask, zero)
            vstore(x, j, u)
            vstore(x, j + t, v)
        m = np.uint64(2)
        t = t >> np.uint64(1)
    while t >= np.uint64(16):
        h = t >> np.uint64(1)
        for i in range(m):
            w1 = vbcast(w[m + i])
            w1s = vbcast(ws[m + i])
            k2 = (m + i) << np.uint64(1)
            w2a = vbcast(w[k2])
            w2as = vbcast(ws[k2])
            w2b = vbcast(w[k2 + np.uint64(1)])
            w2bs = vbcast(ws[k2 + np.uint64(1)])
            j1 = (i * t) << np.uint64(1)
            for j in range(j1, j1 + h, np.uint64(8)):
                x0 = vload(x, j)
                x1 = vload(x, j + h)
                x2 = vload(x, j + t)
                x3 = vload(x, j + t + h)
                x0, x2 = _vct(x0, x2, w1, w1s, two_q, negq, mask, zero)
                x1, x3 = _vct(x1, x3, w1, w1s, two_q, negq, mask, zero)
                x0, x1 = _vct(x0, x1, w2a, w2as, two_q, negq, mask, zero)
                x2, x3 = _vct(x2, x3, w2b, w2bs, two_q, negq, mask, zero)
                vstore(x, j, x0)
                vstore(x, j + h, x1)
                vstore(x, j + t, x2)
                vstore(x, j + t + h, x3)
        m = m << np.uint64(2)
        t = t >> np.uint64(2)


@njit(cache=True)
def _fwd_limb_ifma(x, w, ws, qs):
    n = np.uint64(x.shape[0])
    zero = vbcast(np.uint64(0))
    q = vbcast(qs)
    two_q = vbcast(qs + qs)
    negq = vbcast(_TWO52 - qs)
    mask = vbcast(_MASK52)
    _fwd_head_ifma(x, w, ws, qs)
    for c in range(n >> np.uint64(4)):
        _fwd_block16_ifma(x, np.uint64(c), w, ws, n, q, two_q, negq, mask, zero)


@njit(cache=True, inline="always")
def _inv_block16_ifma(x, c, w, ws, n, two_q, negq, mask, zero):
    # Input < 2q, output < 2q.  Twiddles mirror _fwd_block16_ifma's.  No branch in here: one
    # (for n == 16, where t = 8 is the last stage) made the inlined block 5x slower, so n == 16
    # gets N^-1 from _inv_tail_ifma instead.
    m16 = n >> np.uint64(4)
    b = c << np.uint64(4)
    e = c << np.uint64(3)
    e4 = (n >> np.uint64(3)) + (c << np.uint64(1))
    e2 = (n >> np.uint64(2)) + (c << np.uint64(2))
    half = n >> np.uint64(1)
    a0 = vload(x, b)
    a1 = vload(x, b + np.uint64(8))
    u = shuf_even(a0, a1)
    v = shuf_odd(a0, a1)
    u, v = _vgs(u, v, vload(w, half + e), vload(ws, half + e), two_q, negq, mask, zero)
    a0 = shuf_lo1(u, v)
    a1 = shuf_hi1(u, v)
    a0, a1 = _vgs(a0, a1, spread2(vload(w, e2)), spread2(vload(ws, e2)), two_q, negq, mask, zero)
    u = shuf_lo2(a0, a1)
    v = shuf_hi2(a0, a1)
    u, v = _vgs(u, v, spread4(vload(w, e4)), spread4(vload(ws, e4)), two_q, negq, mask, zero)
    a0 = shuf_lo4(u, v)
    a1 = shuf_hi4(u, v)
    a0, a1 = _vgs(a0, a1, vbcast(w[m16 + c]), vbcast(ws[m16 + c]), two_q, negq, mask, zero)
    vstore(x, b, a0)
    vstore(x, b + np.uint64(8), a1)


@njit(cache=True)
def _inv_tail_ifma(x, w, ws, qs, ni_s, nis_s, w1n_s, w1ns_s):
    """The inverse stages with t >= 16 (through memory): radix-2 once if their count is odd,
    then radix-4; N^-1 folded into the last (n == 16: no such stage, N^-1 alone).  Output
    fully reduced to [0, q)."""
    n = np.uint64(x.shape[0])
    zero = vbcast(np.uint64(0))
    q = vbcast(qs)
    two_q = vbcast(qs + qs)
    negq = vbcast(_TWO52 - qs)
    mask = vbcast(_MASK52)
    ni = vbcast(ni_s)
    nis = vbcast(nis_s)
    w1n = vbcast(w1n_s)
    w1ns = vbcast(w1ns_s)
    if n == np.uint64(16):
        # the blocks ran every stage with plain butterflies: N^-1 (with w_1 of the last
        # stage already applied) is a scaling, and the output fully reduced
        for j in range(np.uint64(0), n, np.uint64(8)):
            y = _vmulred(vload(x, j), ni, nis, negq, mask, zero)
            vstore(x, j, vmin(y, vsub(y, q)))
        return
    log_n = np.uint64(0)
    while (np.uint64(1) << log_n) < n:
        log_n += np.uint64(1)
    t = np.uint64(16)
    h = n >> np.uint64(5)                         # groups of the stage with half-size t
    if t < n and (log_n - np.uint64(4)) & np.uint64(1):
        if h == np.uint64(1):
            for j in range(np.uint64(0), t, np.uint64(8)):
                u, v = _vgs_last(vload(x, j), vload(x, j + t), ni, nis, w1n, w1ns,
                                 q, two_q, negq, mask, zero)
                vstore(x, j, u)
                vstore(x, j + t, v)
        else:
            for i in range(h):
                wv = vbcast(w[h + i])
                wsv = vbcast(ws[h + i])
                j1 = (i * t) << np.uint64(1)
                for j in range(j1, j1 + t, np.uint64(8)):
                    u, v = _vgs(vload(x, j), vload(x, j + t), wv, wsv, two_q, negq, mask, zero)
                    vstore(x, j, u)
                    vstore(x, j + t, v)
        t = t << np.uint64(1)
        h = h >> np.uint64(1)
    while t < n:
        # stages t (h groups) and 2t (h/2 groups) merged
        t2 = t << np.uint64(1)
        t3 = t2 + t
        h2 = h >> np.uint64(1)
        for i in range(h2):
            k2 = (h + i + i)
            wa = vbcast(w[k2])
            was = vbcast(ws[k2])
            wb = vbcast(w[k2 + np.uint64(1)])
            wbs = vbcast(ws[k2 + np.uint64(1)])
            w2 = vbcast(w[h2 + i])
            w2s = vbcast(ws[h2 + i])
            j1 = (i * t) << np.uint64(2)
            if h2 == np.uint64(1):
                for j in range(j1, j1 + t, np.uint64(8)):
                    x0 = vload(x, j)
                    x1 = vload(x, j + t)
                    x2 = vload(x, j + t2)
                    x3 = vload(x, j + t3)
                    x0, x1 = _vgs(x0, x1, wa, was, two_q, negq, mask, zero)
                    x2, x3 = _vgs(x2, x3, wb, wbs, two_q, negq, mask, zero)
                    x0, x2 = _vgs_last(x0, x2, ni, nis, w1n, w1ns, q, two_q, negq, mask, zero)
                    x1, x3 = _vgs_last(x1, x3, ni, nis, w1n, w1ns, q, two_q, negq, mask, zero)
                    vstore(x, j, x0)
                    vstore(x, j + t, x1)
                    vstore(x, j + t2, x2)
                    vstore(x, j + t3, x3)
            else:
                for j in range(j1, j1 + t, np.uint64(8)):
                    x0 = vload(x, j)
                    x1 = vload(x, j + t)
                    x2 = vload(x, j + t2)
                    x3 = vload(x, j + t3)
                    x0, x1 = _vgs(x0, x1, wa, was, two_q, negq, mask, zero)
                    x2, x3 = _vgs(x2, x3, wb, wbs, two_q, negq, mask, zero)
                    x0, x2 = _vgs(x0, x2, w2, w2s, two_q, negq, mask, zero)
                    x1, x3 = _vgs(x1, x3, w2, w2s, two_q, negq, mask, zero)
                    vstore(x, j, x0)
                    vstore(x, j + t, x1)
                    vstore(x, j + t2, x2)
                    vstore(x, j + t3, x3)
        t = t << np.uint64(2)
        h = h >> np.uint64(2)




@njit(cache=True)
def _inv_limb_ifma(x, w, ws, qs, ni_s, nis_s, w1n_s, w1ns_s):
    n = np.uint64(x.shape[0])
    zero = vbcast(np.uint64(0))
    q = vbcast(qs)
    two_q = vbcast(qs + qs)
    negq = vbcast(_TWO52 - qs)
    mask = vbcast(_MASK52)
    for c in range(n >> np.uint64(4)):
        _inv_block16_ifma(x, np.uint64(c), w, ws, n, two_q, negq, mask, zero)
    _inv_tail_ifma(x, w, ws, qs, ni_s, nis_s, w1n_s, w1ns_s)


@njit(cache=True)
def _forward_ifma_serial(a, rows, q, w, ws):
    _check_rows(rows, q.shape[0])
    for r in range(a.shape[0]):
        p = rows[r]
        _fwd_limb_ifma(a[r], w[p], ws[p], q[p])


@njit(cache=True, parallel=True)
def _forward_ifma_parallel(a, rows, q, w, ws):
    _check_rows(rows, q.shape[0])
    for r in prange(a.shape[0]):
        p = rows[r]
        _fwd_limb_ifma(a[r], w[p], ws[p], q[p])


@njit(cache=True)
def _inverse_ifma_serial(a, rows, q, w, ws, ni, nis, w1n, w1ns):
    _check_rows(rows, q.shape[0])
    for r in range(a.shape[0]):
        p = rows[r]
        _inv_limb_ifma(a[r], w[p], ws[p], q[p], ni[p], nis[p], w1n[p], w1ns[p])


@njit(cache=True, parallel=True)
def _inverse_ifma_parallel(a, rows, q, w, ws, ni, nis, w1n, w1ns):
    _check_rows(rows, q.shape[0])
    for r in prange(a.shape[0]):
        p = rows[r]
        _inv_limb_ifma(a[r], w[p], ws[p], q[p], ni[p], nis[p], w1n[p], w1ns[p])


# ---------------------------------------------------------------------------------------------
# dispatch
# ---------------------------------------------------------------------------------------------

def _check(a, rows, t):
    # cheap checks only (this runs on every call); rows are bounds-checked in the kernels
    if type(a) is not np.ndarray or a.dtype != np.uint64 or a.ndim != 2:
        raise TypeError("a must be a 2-D uint64 ndarray")
    if not a.flags.c_contiguous:
        raise ValueError("a must be C-contiguous")
    if a.shape[1] != t.w_fwd.shape[1]:
        raise ValueError(f"a has {a.shape[1]} columns, tables are for N = {t.w_fwd.shape[1]}")
    if type(rows) is not np.ndarray or rows.dtype != np.int64 or not rows.flags.c_contiguous:
        rows = np.ascontiguousarray(rows, dtype=np.int64)
    if rows.shape != (a.shape[0],):
        raise ValueError(f"rows must have shape ({a.shape[0]},), got {rows.shape}")
    return rows


# Below this many coefficients (k * N) a call runs serially: a parallel region costs
# 30-120 us with the workqueue layer on these VMs (thread wake-ups), about a 2^14-point
# IFMA transform of 4 limbs.  Also serial with one limb or one thread.
PARALLEL_MIN_ELEMENTS = 1 << 17


def _serial(a):
    return (a.shape[0] < 2 or a.shape[0] * a.shape[1] < PARALLEL_MIN_ELEMENTS
            or numba.get_num_threads() == 1)


def forward_portable(a: np.ndarray, rows: np.ndarray, t: NTTTables) -> None:
    rows = _check(a, rows, t)
    kern = _forward_portable_serial if _serial(a) else _forward_portable_parallel
    kern(a, rows, t.q, t.w_fwd, t.wf_fwd)


def inverse_portable(a: np.ndarray, rows: np.ndarray, t: NTTTables) -> None:
    rows = _check(a, rows, t)
    kern = _inverse_portable_serial if _serial(a) else _inverse_portable_parallel
    kern(a, rows, t.q, t.w_inv, t.wf_inv, t.n_inv, t.n_inv_f, t.w1_n_inv, t.w1_n_inv_f)


def forward_ifma(a: np.ndarray, rows: np.ndarray, t: NTTTables) -> None:
    if not HAS_IFMA:
        raise RuntimeError("this CPU has no AVX-512 IFMA: use forward_portable")
    rows = _check(a, rows, t)
    kern = _forward_ifma_serial if _serial(a) else _forward_ifma_parallel
    kern(a, rows, t.q, t.w_fwd, t.ws_fwd)


def inverse_ifma(a: np.ndarray, rows: np.ndarray, t: NTTTables) -> None:
    if not HAS_IFMA:
        raise RuntimeError("this CPU has no AVX-512 IFMA: use inverse_portable")
    rows = _check(a, rows, t)
    kern = _inverse_ifma_serial if _serial(a) else _inverse_ifma_parallel
    kern(a, rows, t.q, t.w_inv, t.ws_inv, t.n_inv, t.n_inv_s, t.w1_n_inv,
         t.w1_n_inv_s)


# -- signed integer coefficients (encoding, compact plaintexts) -------------------------------
SIGNED_DIRECT = 1 << 51
"""Signed inputs below this in magnitude go straight into the portable forward transform."""


@njit(cache=True, inline="always")
def _fwd_limb_signed_portable(x, out, w, wf, q, direct):
    """out = NTT(x mod q) for a signed int64 row x: straight from x when ``direct`` (every
    |x| below SIGNED_DIRECT), else reduced into ``out`` first."""
    if direct:
        _fwd_limb_from_portable(x, out, w, wf, q)
    else:
        reduce_signed_row(x, q, out)
        _fwd_limb_portable(out, w, wf, q)


@njit(cache=True, parallel=True)
def _forward_signed_portable(x, rows, out, q, w, wf, direct):
    _check_rows(rows, q.shape[0])
    k = rows.shape[0]
    for r in prange(out.shape[0]):
        p = rows[r % k]
        _fwd_limb_signed_portable(x[r // k], out[r], w[p], wf[p], q[p], direct)


@njit(cache=True, parallel=True)
def _forward_signed_ifma(x, rows, out, q, w, ws):
    _check_rows(rows, q.shape[0])
    k = rows.shape[0]
    for r in prange(out.shape[0]):
        p = rows[r % k]
        reduce_signed_row(x[r // k], q[p], out[r])
        _fwd_limb_ifma(out[r], w[p], ws[p], q[p])


def forward_signed(x: np.ndarray, rows: np.ndarray, t: NTTTables, out: np.ndarray,
                   ifma: bool = USE_IFMA) -> None:
    """out[b * k + i] = NTT(x[b] mod q[rows[i]]) for signed int64 coefficient vectors
    x (B, N) and k rows: the reduction and the transform in one pass over each limb.  The
    portable path reads inputs below ``SIGNED_DIRECT`` as they are (its first stage takes
    signed values) and reduces larger ones first; the IFMA one always reduces first."""
    if type(x) is not np.ndarray or x.dtype != np.int64 or x.ndim != 2 or not x.flags.c_contiguous:
        raise TypeError("x must be a C-contiguous 2-D int64 ndarray")
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    _check(out, np.tile(rows, x.shape[0]), t)
    if x.shape[1] != out.shape[1]:
        raise ValueError("x and out must have the same number of columns")
    if ifma:
        _forward_signed_ifma(x, rows, out, t.q, t.w_fwd, t.ws_fwd)
    else:
        _forward_signed_portable(x, rows, out, t.q, t.w_fwd, t.wf_fwd, fits_direct(x))


def fits_direct(x: np.ndarray) -> bool:
    """Whether every value of the int64 array x lies below SIGNED_DIRECT in magnitude."""
    return bool(x.size == 0 or -SIGNED_DIRECT < x.min() and x.max() < SIGNED_DIRECT)


if USE_IFMA:
    forward = forward_ifma
    inverse = inverse_ifma
else:
    forward = forward_portable
    inverse = inverse_portable
