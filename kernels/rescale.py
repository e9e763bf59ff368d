"""Rescaling: divide an NTT-form RNS polynomial by its last prime, rounding to nearest."""
import numpy as np
from numba import njit, prange

from . import ifma_arith as _fx
from . import ntt
from .cpu import USE_IFMA
from .f64x4 import fbcast, fload, fstore
from .modarith import f4_red, f4_residue, sub_mul_row, to_f64


@njit(inline="always", cache=True)
def _lift_row(v_row, q_src, qi, out):
    """out[j] = [v]_{q_src} mod qi with v taken centred (see basis.lift_centered): f4_red by
    q_src gives the centred representative exactly (v/q_src is never within 2^-51 of 1/2)."""
    sd = to_f64(q_src)
    sv = fbcast(sd)
    si = fbcast(1.0 / sd)
    qd = to_f64(qi)
    qv = fbcast(qd)
    qinv = fbcast(1.0 / qd)
    for jj in range(out.shape[0] >> 2):
        j = jj << 2
        fstore(out, j, f4_residue(f4_red(fload(v_row, j), sv, si), qv, qinv))


@njit(cache=True, parallel=True)
def _rescale_rows_ifma(x, last, q_src, rows, q, w, ws, qli, qli_c, tmp, out):
    k1, n = out.shape
    for i in prange(k1):
        g = rows[i]
        qi = q[g]
        t = tmp[i]
        _lift_row(last, q_src, qi, t)
        ntt._fwd_limb_ifma(t, w[g], ws[g], qi)
        _fx.sub_mul_row(x[i], t, qli[i], qli_c[i], qi, out[i])


@njit(cache=True, parallel=True)
def _rescale_rows_portable(x, last, q_src, rows, q, w, wf, qli, tmp, out):
    k1, n = out.shape
    for i in prange(k1):
        g = rows[i]
        qi = q[g]
        t = tmp[i]
        _lift_row(last, q_src, qi, t)
        ntt._fwd_limb_portable(t, w[g], wf[g], qi)
        sub_mul_row(x[i], t, qli[i], qi, out[i])


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
