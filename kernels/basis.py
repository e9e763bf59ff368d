"""RNS basis conversion (ModUp / ModDown of hybrid key switching) and exact CRT decoding.

Fast basis conversion (Bajard et al., HPS): for x given by residues modulo q_0..q_{k-1}
with Q = prod q_i, ``convert`` returns sum_i [x_i * (Q/q_i)^-1]_{q_i} * (Q/q_i) modulo each
target prime.  That equals x + u*Q with 0 <= u < k: the small multiple of Q is the usual
approximation error that key switching absorbs.
"""
import numpy as np
from numba import get_thread_id, njit, prange, float64, uint64

from . import ifma_arith as _fx
from .cpu import USE_IFMA
from .f64x4 import fadd, fbcast, fload, fstore
from .modarith import (f4_mulmod, f4_red, f4_residue, key_ip_row, mulmod, reduce_small, sub_mul_row,
                       to_f64)
from .ntt import (_fwd_head_ifma, _fwd_limb_ifma, _fwd_limb_portable, _inv_limb_ifma,
                  _inv_limb_portable)


@njit(cache=True, parallel=True)
def convert_portable(x, q_from, qhat_inv, q_to, qhat_mod, out):
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
        qinv = 1.0 / float64(qi)
        for j in range(n):
            v = x[j]
            r = reduce_small(v, qi, qinv)   # v < 2^50: no integer division
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


def convert_ifma(x, q_from, qhat_inv, q_to, qhat_mod, out):
    """``convert`` on AVX-512 IFMA (constants converted per call; the key switcher caches them)."""
    qhat_mont = np.ascontiguousarray(_fx.mont(qhat_mod, q_to.reshape(1, -1)).T)
    _fx.convert(x, q_from, qhat_inv, _fx.shoup(qhat_inv, q_from), q_to, _fx.neg_inv52(q_to),
                qhat_mont, out)


def convert(x, q_from, qhat_inv, q_to, qhat_mod, out):
    """Approximate basis conversion of coefficient-domain residues.

    x: (k, N) residues mod q_from; qhat_inv: (k,) [(Q/q_i)^-1]_{q_i};
    qhat_mod: (k, m) [Q/q_i]_{p_t}; out: (m, N) residues mod q_to.
    """
    (convert_ifma if USE_IFMA else convert_portable)(x, q_from, qhat_inv, q_to, qhat_mod, out)


# ---------------------------------------------------------------------------------------------
# Fused hybrid key switching (ModUp, inner product, ModDown), few parallel regions
# ---------------------------------------------------------------------------------------------
# Each kernel is one prange region whose items are whole limbs: a limb's copy, inverse NTT,
# basis conversion, forward NTT and final arithmetic run back to back while it is in cache,
# and results go straight into their destination rows (no temporaries, no fancy indexing).
# The inverse NTTs fold a per-row constant into their last stage (``ni``/``w1n`` are N^-1 and
# w_inv[1] * N^-1 multiplied by [(Q/q_i)^-1]_{q_i}), so they output the conversion's y_i.
# Conversion constants ``cm``: IFMA kernels take Montgomery forms (c * 2^52 mod p),
# portable ones plain residues; ``*_c`` companions: Shoup (uint64) or w/q (float64).
#
# Scratch rows ``tmp`` are per thread (first axis numba.config.NUMBA_NUM_THREADS, indexed by
# get_thread_id()), so they stay in cache from one limb to the next.
# Shapes: c (k, N) NTT form over Q_l; ext (D, m, N) with m = k + alpha; digit j owns rows
# [dig_lo[j], dig_hi[j]) of Q_l; the (digit, target row) items of ModUp are (item_digit,
# item_pos); cm_up (D, m, alpha) with cm_up[j, t, i] the constant of source i of digit j
# for target row t; cm_down (k, alpha).

@njit(cache=True, parallel=True)
def modup_prepare_ifma(c, own_digit, ext, y, rows, q, w, ws, ni, ni_c, w1n, w1n_c):
    k, n = c.shape
    for i in prange(k):
        g = rows[i]
        ci = c[i]
        yi = y[i]
        ei = ext[own_digit[i], i]
        for j in range(n):
            v = ci[j]
            yi[j] = v
            ei[j] = v
        _inv_limb_ifma(yi, w[g], ws[g], q[g], ni[i], ni_c[i], w1n[i], w1n_c[i])


@njit(cache=True, parallel=True)
def modup_prepare_portable(c, own_digit, ext, y, rows, q, w, wf, ni, ni_c, w1n, w1n_c):
    k, n = c.shape
    for i in prange(k):
        g = rows[i]
        ci = c[i]
        yi = y[i]
        ei = ext[own_digit[i], i]
        for j in range(n):
            v = ci[j]
            yi[j] = v
            ei[j] = v
        _inv_limb_portable(yi, w[g], wf[g], q[g], ni[i], ni_c[i], w1n[i], w1n_c[i])


@njit(cache=True, parallel=True)
def modup_convert_ifma(y, item_digit, item_pos, dig_lo, dig_hi, cm, qp_rows, q, pneg, w, ws, ext):
    for it in prange(item_digit.shape[0]):
        j = item_digit[it]
        t = item_pos[it]
        g = qp_rows[t]
        o = ext[j, t]
        _fx.conv_row(y, dig_lo[j], dig_hi[j], cm[j, t], q[g], pneg[g], o)
        _fwd_limb_ifma(o, w[g], ws[g], q[g])


@njit(inline="always", cache=True)
def _conv_row_portable(y, lo, hi, cm, p, out):
    """out = sum_i y[i] cm[i - lo] mod p over rows lo..hi-1 (residues of other primes below
    2^50), on four-lane float64 vectors with a reduction every four terms (modarith.f4_*)."""
    n = out.shape[0]
    pd = to_f64(p)
    pv = fbcast(pd)
    pi = fbcast(1.0 / pd)
    for jj in range(n >> 2):
        j = jj << 2
        acc = fbcast(0.0)
        for i in range(lo, hi):
            acc = fadd(acc, f4_mulmod(fload(y[i], j), fbcast(to_f64(cm[i - lo])), pv, pi))
            if (i - lo) & 3 == 3:
                acc = f4_red(acc, pv, pi)
        fstore(out, j, f4_residue(acc, pv, pi))


@njit(cache=True, parallel=True)
def modup_convert_portable(y, item_digit, item_pos, dig_lo, dig_hi, cm, qp_rows, q, w, wf, ext):
    for it in prange(item_digit.shape[0]):
        j = item_digit[it]
        t = item_pos[it]
        g = qp_rows[t]
        o = ext[j, t]
        _conv_row_portable(y, dig_lo[j], dig_hi[j], cm[j, t], q[g], o)
        _fwd_limb_portable(o, w[g], wf[g], q[g])


# ModDown of (size, m, N) over Q_l+P: y (size * alpha, N) scratch, tmp (threads, N) scratch.
@njit(cache=True, parallel=True)
def moddown_prepare_ifma(x, y, p_rows, q, w, ws, ni, ni_c, w1n, w1n_c):
    size, m, n = x.shape
    alpha = p_rows.shape[0]
    k = m - alpha
    for it in prange(size * alpha):
        s = it // alpha
        j = it - s * alpha
        g = p_rows[j]
        src = x[s, k + j]
        yi = y[it]
        for jj in range(n):
            yi[jj] = src[jj]
        _inv_limb_ifma(yi, w[g], ws[g], q[g], ni[j], ni_c[j], w1n[j], w1n_c[j])


@njit(cache=True, parallel=True)
def moddown_prepare_portable(x, y, p_rows, q, w, wf, ni, ni_c, w1n, w1n_c):
    size, m, n = x.shape
    alpha = p_rows.shape[0]
    k = m - alpha
    for it in prange(size * alpha):
        s = it // alpha
        j = it - s * alpha
        g = p_rows[j]
        src = x[s, k + j]
        yi = y[it]
        for jj in range(n):
            yi[jj] = src[jj]
        _inv_limb_portable(yi, w[g], wf[g], q[g], ni[j], ni_c[j], w1n[j], w1n_c[j])


@njit(cache=True, parallel=True)
def moddown_finish_ifma(x, y, cm, q_rows, q, pneg, p_inv, p_inv_c, w, ws, tmp, out):
    size, k, n = out.shape
    alpha = y.shape[0] // size
    for it in prange(size * k):
        s = it // k
        r = it - s * k
        g = q_rows[r]
        t = tmp[get_thread_id()]
        _fx.conv_row(y, s * alpha, (s + 1) * alpha, cm[r], q[g], pneg[g], t)
        _fwd_limb_ifma(t, w[g], ws[g], q[g])
        _fx.sub_mul_row(x[s, r], t, p_inv[r], p_inv_c[r], q[g], out[s, r])


@njit(cache=True, parallel=True)
def moddown_finish_portable(x, y, cm, q_rows, q, p_inv, w, wf, tmp, out):
    size, k, n = out.shape
    alpha = y.shape[0] // size
    for it in prange(size * k):
        s = it // k
        r = it - s * k
        g = q_rows[r]
        t = tmp[get_thread_id()]
        _conv_row_portable(y, s * alpha, (s + 1) * alpha, cm[r], q[g], t)
        _fwd_limb_portable(t, w[g], wf[g], q[g])
        sub_mul_row(x[s, r], t, p_inv[r], q[g], out[s, r])


# Inner product fused with ModDown: the P rows' products go straight into y (then inverse
# NTT), the Q rows' products into ``out`` (then ModDown's last step in place).  The IFMA
# versions keep the products in Montgomery form (times 2^-52): the inverse NTT's folded
# constants and P^-1 carry an extra 2^52, and ``cm`` holds plain residues so the conversion
# (a Montgomery sum) comes out times 2^-52 too.
@njit(cache=True, parallel=True)
def ip_moddown_prepare_ifma(ext, key, qp_rows, q, qneg, w, ws, ni, ni_c, w1n, w1n_c, y):
    m = ext.shape[1]
    alpha = y.shape[0] // 2
    k = m - alpha
    for j in prange(alpha):
        g = qp_rows[k + j]
        y0 = y[j]
        y1 = y[alpha + j]
        _fx.ip_row_mont_inv(ext, key, k + j, g, q[g], qneg[g], y0, y1, w[g], ws[g], ni[j], ni_c[j],
                            w1n[j], w1n_c[j])


@njit(cache=True, parallel=True)
def ip_moddown_prepare_portable(ext, key, qp_rows, q, w, wf, ni, ni_c, w1n, w1n_c, y):
    m = ext.shape[1]
    alpha = y.shape[0] // 2
    k = m - alpha
    for j in prange(alpha):
        g = qp_rows[k + j]
        y0 = y[j]
        y1 = y[alpha + j]
        key_ip_row(ext, key, k + j, g, q[g], y0, y1)
        _inv_limb_portable(y0, w[g], wf[g], q[g], ni[j], ni_c[j], w1n[j], w1n_c[j])
        _inv_limb_portable(y1, w[g], wf[g], q[g], ni[j], ni_c[j], w1n[j], w1n_c[j])


@njit(cache=True, parallel=True)
def ip_moddown_finish_ifma(ext, key, y, cm, qp_rows, q, qneg, p_inv, p_inv_c, w, ws, tmp, out):
    size, k, n = out.shape
    alpha = y.shape[0] // 2
    for r in prange(k):
        g = qp_rows[r]
        o0 = out[0, r]
        o1 = out[1, r]
        _fx.ip_row_mont(ext, key, r, g, q[g], qneg[g], o0, o1)
        t = tmp[get_thread_id()]
        _fx.conv_row(y, 0, alpha, cm[r], q[g], qneg[g], t)
        _fwd_limb_ifma(t, w[g], ws[g], q[g])
        _fx.sub_mul_row(o0, t, p_inv[r], p_inv_c[r], q[g], o0)
        _fx.conv_row(y, alpha, 2 * alpha, cm[r], q[g], qneg[g], t)
        _fwd_limb_ifma(t, w[g], ws[g], q[g])
        _fx.sub_mul_row(o1, t, p_inv[r], p_inv_c[r], q[g], o1)


@njit(cache=True, parallel=True)
def ip_moddown_finish_portable(ext, key, y, cm, qp_rows, q, p_inv, w, wf, tmp, out):
    size, k, n = out.shape
    alpha = y.shape[0] // 2
    for r in prange(k):
        g = qp_rows[r]
        o0 = out[0, r]
        o1 = out[1, r]
        key_ip_row(ext, key, r, g, q[g], o0, o1)
        t = tmp[get_thread_id()]
        _conv_row_portable(y, 0, alpha, cm[r], q[g], t)
        _fwd_limb_portable(t, w[g], wf[g], q[g])
        sub_mul_row(o0, t, p_inv[r], q[g], o0)
        _conv_row_portable(y, alpha, 2 * alpha, cm[r], q[g], t)
        _fwd_limb_portable(t, w[g], wf[g], q[g])
        sub_mul_row(o1, t, p_inv[r], q[g], o1)


# The caller's last step fused in as well: out[c] = sigma(u_c + addend[c]) for c < A, sigma(u_c)
# otherwise, with u = ModDown(ext * key), addend (A, k, N), A in 0..2, and sigma the NTT-domain
# permutation ``perm`` (out[c, r, j] = value[r, perm[j]]) or none when perm is empty.
# Rotation: A = 1 (c0), perm; relinearization: A = 2 (c0, c1), no perm.  tmp (threads, 3, N).
# The IFMA kernel takes perm as uint64 and ``blocked`` (see ifma_arith.blocked_permutation:
# one load + one lane permutation per 8 entries, else AVX-512 gathers); the portable one int64.
@njit(cache=True, parallel=True)
def ip_moddown_add_finish_ifma(ext, key, y, cm, qp_rows, q, qneg, p_inv, p_inv_c,
                               w, ws, addend, perm, blocked, tmp, out):
    size, k, n = out.shape
    alpha = y.shape[0] // 2
    n_add = addend.shape[0]
    permute = perm.shape[0] > 0
    for r in prange(k):
        g = qp_rows[r]
        scratch = tmp[get_thread_id()]
        a0 = scratch[0]
        a1 = scratch[1]
        t = scratch[2]
        if permute:
            d0 = a0
            d1 = a1
        else:
            d0 = out[0, r]
            d1 = out[1, r]
        _fx.ip_row_mont(ext, key, r, g, q[g], qneg[g], d0, d1)
        _fx.conv_row(y, 0, alpha, cm[r], q[g], qneg[g], t)
        _fwd_limb_ifma(t, w[g], ws[g], q[g])
        if blocked:
            # last step and permutation in one pass
            _fx.sub_mul_add_perm_row(d0, t, p_inv[r], p_inv_c[r], addend[0, r] if n_add > 0 else t,
                                     n_add > 0, q[g], perm, out[0, r])
            _fx.conv_row(y, alpha, 2 * alpha, cm[r], q[g], qneg[g], t)
            _fwd_limb_ifma(t, w[g], ws[g], q[g])
            _fx.sub_mul_add_perm_row(d1, t, p_inv[r], p_inv_c[r], addend[1, r] if n_add > 1 else t,
                                     n_add > 1, q[g], perm, out[1, r])
            continue
        if n_add > 0:
            _fx.sub_mul_add_row(d0, t, p_inv[r], p_inv_c[r], addend[0, r], q[g], d0)
        else:
            _fx.sub_mul_row(d0, t, p_inv[r], p_inv_c[r], q[g], d0)
        _fx.conv_row(y, alpha, 2 * alpha, cm[r], q[g], qneg[g], t)
        _fwd_limb_ifma(t, w[g], ws[g], q[g])
        if n_add > 1:
            _fx.sub_mul_add_row(d1, t, p_inv[r], p_inv_c[r], addend[1, r], q[g], d1)
        else:
            _fx.sub_mul_row(d1, t, p_inv[r], p_inv_c[r], q[g], d1)
        if permute:
            _fx.permute_row(a0, perm, False, out[0, r])
            _fx.permute_row(a1, perm, False, out[1, r])


@njit(cache=True, parallel=True)
def ip_moddown_add_finish_portable(ext, key, y, cm, qp_rows, q, p_inv, w, wf, addend, perm, tmp, out):
    size, k, n = out.shape
    alpha = y.shape[0] // 2
    n_add = addend.shape[0]
    permute = perm.shape[0] > 0
    for r in prange(k):
        g = qp_rows[r]
        qi = q[g]
        scratch = tmp[get_thread_id()]
        a0 = scratch[0]
        a1 = scratch[1]
        t = scratch[2]
        if permute:
            d0 = a0
            d1 = a1
        else:
            d0 = out[0, r]
            d1 = out[1, r]
        key_ip_row(ext, key, r, g, qi, d0, d1)
        _conv_row_portable(y, 0, alpha, cm[r], qi, t)
        _fwd_limb_portable(t, w[g], wf[g], qi)
        sub_mul_row(d0, t, p_inv[r], qi, d0)
        _conv_row_portable(y, alpha, 2 * alpha, cm[r], qi, t)
        _fwd_limb_portable(t, w[g], wf[g], qi)
        sub_mul_row(d1, t, p_inv[r], qi, d1)
        for c in range(n_add):
            d = d0 if c == 0 else d1
            ar = addend[c, r]
            for j in range(n):
                v = d[j] + ar[j]
                d[j] = min(v, v - qi)
        if permute:
            o0 = out[0, r]
            o1 = out[1, r]
            for j in range(n):
                p = perm[j]
                o0[j] = a0[p]
                o1[j] = a1[p]


# ---------------------------------------------------------------------------------------------
# Hoisted rotations: one ciphertext's digits against several Galois keys in one pass
# ---------------------------------------------------------------------------------------------
# ``keys`` is a tuple of HOIST_GROUP switching keys (padded by repetition; the first ``count``
# are used), ``perms`` (count, N) their NTT-domain permutations (int64 / uint64; read only for
# the unfused cases), ``codes`` (count, N/8) the same permutations as scatter codes
# (``ifma_arith.scatter_codes``, blocked ones), y (count, 2 alpha, N) the scratch of their P
# rows and ``out`` a tuple of as many (2, k, N) results (padded alike).
# Work items are (pair of rows, key) -- (pair of rows, pair of keys) in the IFMA finish --,
# keys innermost, so a row's twiddles and c0's row are reused across keys.  IFMA finish, per
# key: both rows' ModDown conversions in one pass over the key's P rows (``conv_row2``), their
# NTTs' memory stages, then per row a single pass that runs the NTTs' register stages and
# computes the inner product, ModDown's last step, + c0 and the permutation
# (``ip_moddown_perm_row``, or ``..._row2`` for two keys sharing the digits' loads): no
# inner-product scratch rows, each permuted block stored at its destination.  That pass
# streams keys from memory; the register stages run in its load shadow.
# ``nt``: write the (blocked-permutation) results with non-temporal stores, for outputs much
# larger than the caches (every ``out`` row 64-byte aligned).
# out[i] = (sigma_i(c0 + u0_i), sigma_i(u1_i)) with u_i = ModDown(ext * keys[i]).
HOIST_GROUP = 8


@njit(cache=True, parallel=True)
def hoisted_prepare_ifma(ext, keys, count, qp_rows, q, qneg, w, ws, ni, ni_c, w1n, w1n_c, y):
    m = ext.shape[1]
    alpha = y.shape[1] // 2
    k = m - alpha
    for it in prange(alpha * count):
        j = it // count
        i = it - j * count
        key = keys[i]
        g = qp_rows[k + j]
        y0 = y[i, j]
        y1 = y[i, alpha + j]
        _fx.ip_row_mont_inv(ext, key, k + j, g, q[g], qneg[g], y0, y1, w[g], ws[g], ni[j], ni_c[j],
                            w1n[j], w1n_c[j])


@njit(cache=True, parallel=True)
def hoisted_prepare_portable(ext, keys, count, qp_rows, q, w, wf, ni, ni_c, w1n, w1n_c, y):
    m = ext.shape[1]
    alpha = y.shape[1] // 2
    k = m - alpha
    for it in prange(alpha * count):
        j = it // count
        i = it - j * count
        key = keys[i]
        g = qp_rows[k + j]
        y0 = y[i, j]
        y1 = y[i, alpha + j]
        key_ip_row(ext, key, k + j, g, q[g], y0, y1)
        _inv_limb_portable(y0, w[g], wf[g], q[g], ni[j], ni_c[j], w1n[j], w1n_c[j])
        _inv_limb_portable(y1, w[g], wf[g], q[g], ni[j], ni_c[j], w1n[j], w1n_c[j])


@njit(cache=True)
def _hoisted_item_ifma(ext, keys, i, ra, rb, y, cm, qp_rows, q, qneg, p_inv, p_inv_c, w, ws,
                       c0, perms, blocked, codes, nt, scratch, out):
    """Rows ra..rb (rb = ra or ra + 1) of key i (see hoisted_finish_ifma)."""
    alpha = y.shape[1] // 2
    key = keys[i]
    yi = y[i]
    if blocked[i]:
        # both rows' ModDown conversions in one pass over the key's P rows, then per row one
        # pass: inner product, last step, c0, permutation (no inner-product scratch rows)
        ga = qp_rows[ra]
        gb = qp_rows[rb]
        t0a = scratch[0]
        t1a = scratch[1]
        t0b = scratch[2]
        t1b = scratch[3]
        if rb != ra:
            _fx.conv_row2(yi, 0, alpha, cm[ra], q[ga], qneg[ga], t0a, cm[rb], q[gb], qneg[gb], t0b)
            _fx.conv_row2(yi, alpha, 2 * alpha, cm[ra], q[ga], qneg[ga], t1a,
                          cm[rb], q[gb], qneg[gb], t1b)
        else:
            _fx.conv_row(yi, 0, alpha, cm[ra], q[ga], qneg[ga], t0a)
            _fx.conv_row(yi, alpha, 2 * alpha, cm[ra], q[ga], qneg[ga], t1a)
        _fwd_head_ifma(t0a, w[ga], ws[ga], q[ga])
        _fwd_head_ifma(t1a, w[ga], ws[ga], q[ga])
        _fx.ip_moddown_perm_row(ext, key, ra, ga, q[ga], qneg[ga], t0a, t1a, w[ga], ws[ga],
                                p_inv[ra], p_inv_c[ra], c0[ra], codes[i], out[i][0, ra],
                                out[i][1, ra], nt)
        if rb != ra:
            _fwd_head_ifma(t0b, w[gb], ws[gb], q[gb])
            _fwd_head_ifma(t1b, w[gb], ws[gb], q[gb])
            _fx.ip_moddown_perm_row(ext, key, rb, gb, q[gb], qneg[gb], t0b, t1b, w[gb], ws[gb],
                                    p_inv[rb], p_inv_c[rb], c0[rb], codes[i], out[i][0, rb],
                                    out[i][1, rb], nt)
        return
    perm = perms[i]
    a0 = scratch[0]
    a1 = scratch[1]
    t = scratch[2]
    for r in range(ra, rb + 1):
        g = qp_rows[r]
        qg = q[g]
        _fx.ip_row_mont(ext, key, r, g, qg, qneg[g], a0, a1)
        _fx.conv_row(yi, 0, alpha, cm[r], qg, qneg[g], t)
        _fwd_limb_ifma(t, w[g], ws[g], qg)
        if blocked[i]:
            _fx.sub_mul_add_perm_row(a0, t, p_inv[r], p_inv_c[r], c0[r], True, qg, perm, out[i][0, r])
            _fx.conv_row(yi, alpha, 2 * alpha, cm[r], qg, qneg[g], t)
            _fwd_limb_ifma(t, w[g], ws[g], qg)
            _fx.sub_mul_add_perm_row(a1, t, p_inv[r], p_inv_c[r], t, False, qg, perm, out[i][1, r])
        else:
            _fx.sub_mul_add_row(a0, t, p_inv[r], p_inv_c[r], c0[r], qg, a0)
            _fx.conv_row(yi, alpha, 2 * alpha, cm[r], qg, qneg[g], t)
            _fwd_limb_ifma(t, w[g], ws[g], qg)
            _fx.sub_mul_row(a1, t, p_inv[r], p_inv_c[r], qg, a1)
            _fx.permute_row(a0, perm, False, out[i][0, r])
            _fx.permute_row(a1, perm, False, out[i][1, r])


@njit(cache=True)
def _hoisted_pair_ifma(ext, keys, i, ra, rb, y, cm, qp_rows, q, qneg, p_inv, p_inv_c, w, ws,
                       c0, codes, nt, scratch, out):
    """Rows ra..rb of keys i and i + 1 sharing one pass over the digits (see
    hoisted_finish_ifma); scratch rows [key][row a, row b][component]."""
    alpha = y.shape[1] // 2
    ga = qp_rows[ra]
    gb = qp_rows[rb]
    for u in range(2):
        yu = y[i + u]
        if rb != ra:
            _fx.conv_row2(yu, 0, alpha, cm[ra], q[ga], qneg[ga], scratch[4 * u],
                          cm[rb], q[gb], qneg[gb], scratch[4 * u + 2])
            _fx.conv_row2(yu, alpha, 2 * alpha, cm[ra], q[ga], qneg[ga], scratch[4 * u + 1],
                          cm[rb], q[gb], qneg[gb], scratch[4 * u + 3])
        else:
            _fx.conv_row(yu, 0, alpha, cm[ra], q[ga], qneg[ga], scratch[4 * u])
            _fx.conv_row(yu, alpha, 2 * alpha, cm[ra], q[ga], qneg[ga], scratch[4 * u + 1])
        _fwd_head_ifma(scratch[4 * u], w[ga], ws[ga], q[ga])
        _fwd_head_ifma(scratch[4 * u + 1], w[ga], ws[ga], q[ga])
    _fx.ip_moddown_perm_row2(ext, keys[i], keys[i + 1], ra, ga, q[ga], qneg[ga], scratch[0],
                             scratch[1], scratch[4], scratch[5], w[ga], ws[ga], p_inv[ra],
                             p_inv_c[ra], c0[ra], codes[i], codes[i + 1], out[i][0, ra],
                             out[i][1, ra], out[i + 1][0, ra], out[i + 1][1, ra], nt)
    if rb != ra:
        for u in range(2):
            _fwd_head_ifma(scratch[4 * u + 2], w[gb], ws[gb], q[gb])
            _fwd_head_ifma(scratch[4 * u + 3], w[gb], ws[gb], q[gb])
        _fx.ip_moddown_perm_row2(ext, keys[i], keys[i + 1], rb, gb, q[gb], qneg[gb],
                                 scratch[2], scratch[3], scratch[6], scratch[7], w[gb], ws[gb],
                                 p_inv[rb], p_inv_c[rb], c0[rb], codes[i], codes[i + 1],
                                 out[i][0, rb], out[i][1, rb], out[i + 1][0, rb],
                                 out[i + 1][1, rb], nt)


@njit(cache=True, parallel=True)
def hoisted_finish_ifma(ext, keys, count, y, cm, qp_rows, q, qneg, p_inv, p_inv_c, w, ws,
                        c0, perms, blocked, codes, nt, tmp, out):
    """Items (pair of rows, pair of keys), keys innermost.  With blocked permutations both
    keys share one pass over the rows' digits (the digits are the largest stream after the
    keys); tmp (threads, 8, N)."""
    k = out[0].shape[1]
    pairs = (k + 1) // 2
    kpairs = (count + 1) // 2
    for it in prange(pairs * kpairs):
        pr = it // kpairs
        i = 2 * (it - pr * kpairs)
        ra = 2 * pr
        rb = min(ra + 1, k - 1)
        scratch = tmp[get_thread_id()]
        if not (i + 1 < count and blocked[i] and blocked[i + 1]):
            _hoisted_item_ifma(ext, keys, i, ra, rb, y, cm, qp_rows, q, qneg, p_inv, p_inv_c, w,
                               ws, c0, perms, blocked, codes, nt, scratch, out)
            if i + 1 < count:
                _hoisted_item_ifma(ext, keys, i + 1, ra, rb, y, cm, qp_rows, q, qneg, p_inv,
                                   p_inv_c, w, ws, c0, perms, blocked, codes, nt, scratch, out)
            continue
        _hoisted_pair_ifma(ext, keys, i, ra, rb, y, cm, qp_rows, q, qneg, p_inv, p_inv_c, w, ws,
                           c0, codes, nt, scratch, out)


@njit(cache=True, parallel=True)
def hoisted_finish_portable(ext, keys, count, y, cm, qp_rows, q, p_inv, w, wf, c0, perms, tmp, out):
    k = out[0].shape[1]
    n = out[0].shape[2]
    alpha = y.shape[1] // 2
    for it in prange(k * count):
        r = it // count
        i = it - r * count
        key = keys[i]
        g = qp_rows[r]
        qi = q[g]
        scratch = tmp[get_thread_id()]
        a0 = scratch[0]
        a1 = scratch[1]
        t = scratch[2]
        yi = y[i]
        key_ip_row(ext, key, r, g, qi, a0, a1)
        _conv_row_portable(yi, 0, alpha, cm[r], qi, t)
        _fwd_limb_portable(t, w[g], wf[g], qi)
        sub_mul_row(a0, t, p_inv[r], qi, a0)
        _conv_row_portable(yi, alpha, 2 * alpha, cm[r], qi, t)
        _fwd_limb_portable(t, w[g], wf[g], qi)
        sub_mul_row(a1, t, p_inv[r], qi, a1)
        cr = c0[r]
        o0 = out[i][0, r]
        o1 = out[i][1, r]
        perm = perms[i]
        for j in range(n):
            p = perm[j]
            v = a0[p] + cr[p]
            o0[j] = min(v, v - qi)
            o1[j] = a1[p]
