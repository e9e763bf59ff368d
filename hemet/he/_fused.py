"""Fused kernels for the HE backend: ``acc += ct * pt`` over both ciphertext polynomials in
one parallel region (no temporary ciphertext; the plaintext is read once for both).

``coeff_mul_add_many`` takes pinned *compact* plaintexts (int64 coefficients) and turns each
limb into NTT form in a per-thread buffer right before its products: the converted plaintext
never goes to memory (at N = 2^15 a limb is 256 KiB and stays in the core's L2), where
converting first wrote all limbs out and the products read them back.

With AVX-512 IFMA the products of up to ``GROUP`` = 4 terms that add into the same
accumulator are summed unreduced as 52-bit halves and reduced once (Montgomery, then a Shoup
multiplication by 2^52 mod q undoes the 2^-52; see ``kernels/ifma_arith``): one reduction per
four products instead of one per product.  ``term_groups`` orders a batch's terms that way.
Measured (``.cache/exp/ifma_muladd.py``; N = 2^15, 6 limbs, 32 distinct ciphertexts and
plaintexts into 3 accumulators): 0.51 -> 0.32 ms per term with 1 thread, 0.27 -> 0.16 ms with
2.  The portable kernels multiply term by term in float64 arithmetic, and their NTT reads a
compact plaintext's coefficients below 2^51 (all of them in the shipped networks) signed, as
they are, where the IFMA one needs residues: per limb and term, N = 2^15, 1 thread, on the
AVX2 EPYC (``.cache/exp/compact_ab.py``), 226 -> 194 us."""
from functools import lru_cache

import numpy as np
from numba import njit, prange

from kernels.ifma import madd52hi, madd52lo, vadd, vbcast, vload, vmin, vprefetch, vstore, vsub
from kernels.ifma_arith import GROUP, MASK52, neg_inv52, r52, vmulred, vredc
from kernels.f64x4 import fadd, fbcast, fload, fstore
from kernels.modarith import f4_mulmod, f4_residue, reduce_signed_row, to_f64
from kernels.ntt import USE_IFMA, _fwd_limb_ifma, _fwd_limb_signed_portable, fits_direct

__all__ = ["mul_add_many", "coeff_mul_add_many", "term_groups"]

_PF = np.uint64(128)   # prefetch distance in lanes (1 KiB): 12 input streams per group


def term_groups(acc_index) -> tuple[np.ndarray, np.ndarray]:
    """``(order, starts)``: the terms (``acc_index[t]``: term t's accumulator, any hashable)
    ordered by accumulator, in groups ``order[starts[g]:starts[g + 1]]`` of at most ``GROUP``
    terms that share one accumulator."""
    by = {}
    for t, a in enumerate(acc_index):
        by.setdefault(a, []).append(t)
    order, starts = [], [0]
    for ts in by.values():
        for c in range(0, len(ts), GROUP):
            order += ts[c:c + GROUP]
            starts.append(len(order))
    return np.array(order, np.int64), np.array(starts, np.int64)


@lru_cache(maxsize=64)
def _mont_constants(primes: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    q = np.array(primes, np.uint64)
    r, rs = r52(q)
    return neg_inv52(q), r, rs


# -- portable: one float64 reduction per product ---------------------------------------------
@njit(cache=True, inline="always")
def _mul_acc_limb(b_row, ct, acc, i, qi):
    """acc[:, i] += ct[:, i] * b_row (mod qi) for both polynomials, on four-lane float64
    vectors (kernels.modarith.f4_*): the plaintext lanes are loaded once for both."""
    qd = to_f64(qi)
    qv = fbcast(qd)
    qi4 = fbcast(1.0 / qd)
    a0 = acc[0, i]
    a1 = acc[1, i]
    c0 = ct[0, i]
    c1 = ct[1, i]
    for jj in range(b_row.shape[0] >> 2):
        j = jj << 2
        b = fload(b_row, j)
        fstore(a0, j, f4_residue(fadd(fload(a0, j), f4_mulmod(b, fload(c0, j), qv, qi4)), qv, qi4))
        fstore(a1, j, f4_residue(fadd(fload(a1, j), f4_mulmod(b, fload(c1, j), qv, qi4)), qv, qi4))


@njit(cache=True, parallel=True)
def _mul_add_many_portable(cts, pts, accs, q):
    k = pts[0].shape[0]
    for i in prange(k):
        qi = q[i]
        for t in range(len(cts)):
            _mul_acc_limb(pts[t][i], cts[t], accs[t], i, qi)


# -- IFMA: lazy Montgomery sums of up to GROUP products per accumulator -----------------------
@njit(cache=True, inline="always")
def _madd_term(p, po, x, c0, c1, jj, f, lo0, hi0, lo1, hi1):
    """The sums plus the 52-bit halves of x[c0 + jj] * p[po + jj] and x[c1 + jj] * p[po + jj]
    (eight lanes each), with the lines ``f`` lanes ahead prefetched."""
    vprefetch(p, po + f)
    vprefetch(x, c0 + f)
    vprefetch(x, c1 + f)
    b = vload(p, po + jj)
    a = vload(x, c0 + jj)
    e = vload(x, c1 + jj)
    return madd52lo(lo0, a, b), madd52hi(hi0, a, b), madd52lo(lo1, e, b), madd52hi(hi1, e, b)


@njit(cache=True, inline="always")
def _reduce_add(acc, at, lo, hi, q, qneg, rr, rrs, negq, mask, zero):
    """acc[at:at + 8] += (hi * 2^52 + lo) mod q.  redc gives the sum times 2^-52 mod q below
    3q (< 2^52, all a Shoup product needs); times 2^52 mod q gives it in [0, 2q)."""
    t = vmulred(vredc(lo, hi, q, qneg, zero), rr, rrs, negq, mask, zero)
    t = vadd(vmin(t, vsub(t, q)), vload(acc, at))
    vstore(acc, at, vmin(t, vsub(t, q)))


@njit(cache=True, inline="always")
def _group_mul_acc_ifma(acc, cnt, x0, x1, x2, x3, p0, p1, p2, p3, po0, po1, po2, po3,
                        c0, c1, n, qs, qnegs, rs, rss):
    """acc[:, i] += sum_u x_u[:, i] * p_u for the group's ``cnt`` (1-4) terms: ``c0``/``c1``
    the flat offsets of limb i's rows of both polynomials (in ``acc`` and every ``x_u``),
    ``po_u`` of each plaintext row in ``p_u``; unused slots repeat term 0 and are skipped."""
    zero = vbcast(np.uint64(0))
    q = vbcast(qs)
    qneg = vbcast(qnegs)
    negq = vbcast(np.uint64(1 << 52) - qs)
    mask = vbcast(MASK52)
    rr = vbcast(rs)
    rrs = vbcast(rss)
    for jj in range(np.uint64(0), n, np.uint64(8)):
        f = jj + _PF
        lo0, hi0, lo1, hi1 = _madd_term(p0, po0, x0, c0, c1, jj, f, zero, zero, zero, zero)
        if cnt > 1:
            lo0, hi0, lo1, hi1 = _madd_term(p1, po1, x1, c0, c1, jj, f, lo0, hi0, lo1, hi1)
        if cnt > 2:
            lo0, hi0, lo1, hi1 = _madd_term(p2, po2, x2, c0, c1, jj, f, lo0, hi0, lo1, hi1)
        if cnt > 3:
            lo0, hi0, lo1, hi1 = _madd_term(p3, po3, x3, c0, c1, jj, f, lo0, hi0, lo1, hi1)
        _reduce_add(acc, c0 + jj, lo0, hi0, q, qneg, rr, rrs, negq, mask, zero)
        _reduce_add(acc, c1 + jj, lo1, hi1, q, qneg, rr, rrs, negq, mask, zero)


@njit(cache=True, inline="always")
def _group(order, starts, g):
    """Group g's size and its terms (missing ones repeat the first)."""
    s = starts[g]
    cnt = starts[g + 1] - s
    t0 = order[s]
    return (cnt, t0, order[s + 1] if cnt > 1 else t0, order[s + 2] if cnt > 2 else t0,
            order[s + 3] if cnt > 3 else t0)


@njit(cache=True, parallel=True)
def _mul_add_many_ifma(cts, pts, accs, q, qneg, r, rs, order, starts):
    k = pts[0].shape[0]
    n = np.uint64(pts[0].shape[1])
    uk = np.uint64(k)
    for i in prange(k):
        ui = np.uint64(i)
        c0 = ui * n
        c1 = (uk + ui) * n
        for g in range(starts.shape[0] - 1):
            cnt, t0, t1, t2, t3 = _group(order, starts, g)
            _group_mul_acc_ifma(accs[t0], cnt, cts[t0], cts[t1], cts[t2], cts[t3],
                                pts[t0], pts[t1], pts[t2], pts[t3], c0, c0, c0, c0,
                                c0, c1, n, q[i], qneg[i], r[i], rs[i])


def _ifma_args(accs, q, acc_index):
    """The grouped kernels' trailing arguments: Montgomery constants of ``q``, then
    ``term_groups`` of the terms' accumulators (default: the same array object is the same
    accumulator)."""
    if acc_index is None:
        acc_index = [a.ctypes.data for a in accs]
    return (*_mont_constants(tuple(int(x) for x in q)), *term_groups(acc_index))


def _check_terms(what, a, cts, accs, acc_index):
    if len(a) != len(cts) or len(cts) != len(accs) or not len(cts):
        raise ValueError(f"one {what}, ciphertext and accumulator per term")
    if acc_index is not None and len(acc_index) != len(accs):
        raise ValueError("one accumulator index per term")


def mul_add_many(cts, pts, accs, q, acc_index=None, ifma: bool = USE_IFMA) -> None:
    """accs[t] += cts[t] * pts[t] for every t (typed lists of (2, k, N) / (k, N) uint64
    arrays, residues below their primes ``q``; accumulators may repeat): one parallel region
    per batch, each thread keeping its limb of a shared accumulator in cache across the terms
    that add into it.  ``acc_index[t]`` names term t's accumulator (default: by array
    identity); ``ifma=False``: the portable kernel."""
    _check_terms("plaintext", pts, cts, accs, acc_index)
    if ifma:
        _mul_add_many_ifma(cts, pts, accs, q, *_ifma_args(accs, q, acc_index))
    else:
        _mul_add_many_portable(cts, pts, accs, q)


# -- compact plaintexts: reduction and NTT per limb in a per-thread buffer --------------------
@njit(cache=True, parallel=True)
def _coeff_mul_add_many_ifma(cts, coeffs, accs, q, rows, w, ws, qneg, r, rs, order, starts):
    k = cts[0].shape[1]
    nn = coeffs[0].shape[0]
    n = np.uint64(nn)
    uk = np.uint64(k)
    for i in prange(k):
        # one group's converted plaintexts: 1 MiB at N = 2^15, in L2 while its products run
        buf = np.empty((GROUP, nn), np.uint64)
        qi = q[i]
        p = rows[i]
        ui = np.uint64(i)
        c0 = ui * n
        c1 = (uk + ui) * n
        for g in range(starts.shape[0] - 1):
            cnt, t0, t1, t2, t3 = _group(order, starts, g)
            for u in range(cnt):
                reduce_signed_row(coeffs[order[starts[g] + u]], qi, buf[u])
                _fwd_limb_ifma(buf[u], w[p], ws[p], qi)
            _group_mul_acc_ifma(accs[t0], cnt, cts[t0], cts[t1], cts[t2], cts[t3],
                                buf, buf, buf, buf, np.uint64(0), n, n + n, n + n + n,
                                c0, c1, n, qi, qneg[i], r[i], rs[i])


@njit(cache=True, parallel=True)
def _coeff_mul_add_many_portable(cts, coeffs, accs, q, rows, w, wf, small):
    k = cts[0].shape[1]
    n = coeffs[0].shape[0]
    for i in prange(k):
        buf = np.empty(n, np.uint64)
        qi = q[i]
        p = rows[i]
        for t in range(len(coeffs)):
            _fwd_limb_signed_portable(coeffs[t], buf, w[p], wf[p], qi, small[t])
            _mul_acc_limb(buf, cts[t], accs[t], i, qi)


def small_flags(coeffs) -> np.ndarray:
    """One flag per compact plaintext of ``coeffs``: all its coefficients below
    ``kernels.ntt.SIGNED_DIRECT`` in magnitude (the portable NTT then reads them as they are)."""
    return np.array([fits_direct(c) for c in coeffs], np.bool_)


def coeff_mul_add_many(cts, coeffs, accs, q, rows, tables, acc_index=None,
                       ifma: bool = USE_IFMA, small=None) -> None:
    """accs[t] += cts[t] * NTT(coeffs[t] mod q) for every t (typed lists; ``coeffs[t]``: a
    plaintext's N int64 coefficients), ``q`` the ciphertexts' primes, ``rows`` their rows in
    ``tables``; ``acc_index`` as in :func:`mul_add_many`; ``ifma=False``: the portable
    kernels; ``small``: :func:`small_flags` of ``coeffs``, if the caller keeps them (else
    computed here, a pass over every plaintext)."""
    _check_terms("coefficient row", coeffs, cts, accs, acc_index)
    if ifma:
        _coeff_mul_add_many_ifma(cts, coeffs, accs, q, rows, tables.w_fwd, tables.ws_fwd,
                                 *_ifma_args(accs, q, acc_index))
    else:
        if small is None:
            small = small_flags(coeffs)
        elif len(small) != len(coeffs):
            raise ValueError("one small flag per coefficient row")
        _coeff_mul_add_many_portable(cts, coeffs, accs, q, rows, tables.w_fwd, tables.wf_fwd,
                                     np.asarray(small, np.bool_))
