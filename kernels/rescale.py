"""Rescaling: divide an NTT-form RNS polynomial by its last prime, rounding to nearest."""
import numpy as np

from . import basis, modarith, ntt


def rescale(x: np.ndarray, rows: np.ndarray, tables, q_last_inv: np.ndarray, out: np.ndarray) -> None:
    """out = round(x / q_last) over the first k-1 rows, for (k, N) NTT-form ``x``.

    q_last_inv[i] = q_last^-1 mod q[rows[i]].  The last row is brought to the coefficient
    domain, lifted centred to the other primes, and subtracted, so the exact division by
    q_last that follows rounds instead of flooring.
    """
    k, n = x.shape
    last = x[k - 1:k].copy()
    ntt.inverse(last, rows[k - 1:k], tables)
    q = tables.q[rows[:k - 1]]
    lifted = np.empty((k - 1, n), dtype=np.uint64)
    basis.lift_centered(last[0], tables.q[rows[k - 1]], q, lifted)
    ntt.forward(lifted, rows[:k - 1], tables)
    modarith.sub_mul_scalar(x[:k - 1], lifted, q_last_inv, q, out)
