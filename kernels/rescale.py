"""Rescaling: divide an NTT-form RNS polynomial by its last prime, rounding to nearest."""
import numpy as np
from numba import float64, njit, prange, uint64

from . import ifma_arith as _fx
from . import ntt
from .cpu import USE_IFMA
from .modarith import mulmod, reduce_small


@njit(inline="always", cache=True)
def _lift_row(v_row, half, qs_mod, qi, out):
    """out[j] = [v]_{q_src} mod qi with v taken centred (see basis.lift_centered)."""
    qinv = 1.0 / float64(qi)
    for j in range(out.shape[0]):
        v = v_row[j]
        r = reduce_small(v, qi, qinv)
        if v > half:
            s = r + (qi - qs_mod)
            r = min(s, s - qi)
        out[j] = r


@njit(cache=True, parallel=True)
def _rescale_rows_ifma(x, last, q_src, rows, q, w, ws, qli, qli_c, tmp, out):
    k1, n = out.shape
    half = q_src >> uint64(1)
    for i in prange(k1):
        g = rows[i]
        qi = q[g]
        t = tmp[i]
        _lift_row(last, half, q_src % qi, qi, t)
        ntt._fwd_limb_ifma(t, w[g], ws[g], qi)
        _fx.sub_mul_row(x[i], t, qli[i], qli_c[i], qi, out[i])


@njit(cache=True, parallel=True)
def _rescale_rows_portable(x, last, q_src, rows, q, w, wf, qli, tmp, out):
    k1, n = out.shape
    half = q_src >> uint64(1)
    for i in prange(k1):
        g = rows[i]
        qi = q[g]
        t = tmp[i]
        _lift_row(last, half, q_src % qi, qi, t)
        ntt._fwd_limb_portable(t, w[g], wf[g], qi)
        xi = x[i]
        oi = out[i]
        c = qli[i]
        qinv = 1.0 / float64(qi)
        for j in range(n):
            s = xi[j] + (qi - t[j])
            s = min(s, s - qi)
            oi[j] = mulmod(s, c, qi, qinv)


_SHOUP = {}


def rescale(x: np.ndarray, rows: np.ndarray, tables, q_last_inv: np.ndarray, out: np.ndarray,
            ifma: bool = None) -> None:
    """out = round(x / q_last) over the first k-1 rows, for (k, N) NTT-form ``x``.

    q_last_inv[i] = q_last^-1 mod q[rows[i]].  The last row is brought to the coefficient
    domain, lifted centred to the other primes, and subtracted, so the exact division by
    q_last that follows rounds instead of flooring.  After the last row's inverse NTT, one
    parallel region does lift + forward NTT + subtract-and-scale per row.  ``ifma`` picks the
    kernel family (default: ``kernels.cpu.USE_IFMA``).
    """
    k, n = x.shape
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    x = np.ascontiguousarray(x, dtype=np.uint64)
    last = x[k - 1:k].copy()
    ntt.inverse(last, rows[k - 1:k], tables)
    q_src = tables.q[rows[k - 1]]
    tmp = np.empty((k - 1, n), dtype=np.uint64)
    qli = np.ascontiguousarray(q_last_inv, dtype=np.uint64)
    if USE_IFMA if ifma is None else ifma:
        q = tables.q[rows[:k - 1]]
        key = qli.tobytes() + q.tobytes()
        qli_c = _SHOUP.get(key)
        if qli_c is None:
            qli_c = _SHOUP[key] = _fx.shoup(qli, q)
        _rescale_rows_ifma(x, last[0], q_src, rows, tables.q, tables.w_fwd, tables.ws_fwd,
                           qli, qli_c, tmp, out)
    else:
        _rescale_rows_portable(x, last[0], q_src, rows, tables.q, tables.w_fwd, tables.wf_fwd,
                               qli, tmp, out)
