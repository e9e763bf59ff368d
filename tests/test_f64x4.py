"""The four-lane float64 vectors of kernels/f64x4.py against NumPy, lane by lane."""
from fractions import Fraction

import numpy as np
from hypothesis import given, settings, strategies as st
from numba import njit

from kernels.f64x4 import (fadd, fadd_if_neg, fbcast, ffma, fload, fload_dup2, fmul, fnfma,
                           frint, fshuf_even, fshuf_hi1, fshuf_hi2, fshuf_ihi, fshuf_ilo,
                           fshuf_lo1, fshuf_lo2, fshuf_odd, fstore, fsub)

SHUFFLES = {  # lane indices into the concatenation (a, b)
    0: (0, 1, 4, 5), 1: (2, 3, 6, 7), 2: (0, 4, 2, 6), 3: (1, 5, 3, 7),
    4: (0, 4, 1, 5), 5: (2, 6, 3, 7), 6: (0, 2, 4, 6), 7: (1, 3, 5, 7),
}


@njit
def _all_ops(a, b, c, u, s, out, outu):
    """out rows: a+b, a-b, a*b, fma(a,b,c), c-a*b, rint(a), a+b where a<0, bcast(s),
    the eight shuffles of (a, b), dup2 of a and of u; outu: u round trip and dup2-free store."""
    x = fload(a, 0)
    y = fload(b, 0)
    z = fload(c, 0)
    fstore(out[0], 0, fadd(x, y))
    fstore(out[1], 0, fsub(x, y))
    fstore(out[2], 0, fmul(x, y))
    fstore(out[3], 0, ffma(x, y, z))
    fstore(out[4], 0, fnfma(x, y, z))
    fstore(out[5], 0, frint(x))
    fstore(out[6], 0, fadd_if_neg(x, y))
    fstore(out[7], 0, fbcast(s))
    fstore(out[8], 0, fshuf_lo2(x, y))
    fstore(out[9], 0, fshuf_hi2(x, y))
    fstore(out[10], 0, fshuf_lo1(x, y))
    fstore(out[11], 0, fshuf_hi1(x, y))
    fstore(out[12], 0, fshuf_ilo(x, y))
    fstore(out[13], 0, fshuf_ihi(x, y))
    fstore(out[14], 0, fshuf_even(x, y))
    fstore(out[15], 0, fshuf_odd(x, y))
    fstore(out[16], 0, fload_dup2(a, 1))
    fstore(out[17], 0, fload_dup2(u, 2))
    fstore(outu, 0, fload(u, 1))   # uint64 -> float64 -> uint64


lane = st.floats(-2.0 ** 51, 2.0 ** 51, allow_nan=False).map(np.round)


@settings(max_examples=60, deadline=None)
@given(a=st.lists(lane, min_size=5, max_size=5), b=st.lists(lane, min_size=4, max_size=4),
       c=st.lists(lane, min_size=4, max_size=4), s=lane,
       u=st.lists(st.integers(0, 2 ** 52 - 1), min_size=5, max_size=5))
def test_every_operation_matches_numpy(a, b, c, s, u):
    a, b, c = (np.array(v, np.float64) for v in (a, b, c))
    a[4] = a[0] + 0.5            # a tie for rint (ties to even), beyond the first four lanes
    a[1] = a[1] + 0.5
    u = np.array(u, np.uint64)
    out = np.zeros((18, 4))
    outu = np.zeros(5, np.uint64)
    _all_ops(a, b, c, u, s, out, outu)
    x = a[:4]
    assert np.array_equal(out[0], x + b)
    assert np.array_equal(out[1], x - b)
    assert np.array_equal(out[2], x * b)
    F = Fraction                                   # exact, then one correct rounding
    assert out[3].tolist() == [float(F(p) * F(q) + F(r)) for p, q, r in zip(x, b, c)]
    assert out[4].tolist() == [float(F(r) - F(p) * F(q)) for p, q, r in zip(x, b, c)]
    assert np.array_equal(out[5], np.rint(x))
    assert np.array_equal(out[6], np.where(x < 0, x + b, x))
    assert np.array_equal(out[7], np.full(4, s))
    ab = np.concatenate([x, b])
    for row, idx in SHUFFLES.items():
        assert np.array_equal(out[8 + row], ab[list(idx)])
    assert np.array_equal(out[16], a[[1, 1, 2, 2]])
    assert np.array_equal(out[17], u[[2, 2, 3, 3]].astype(np.float64))
    assert np.array_equal(outu[:4], u[1:5]) and outu[4] == 0


@njit
def _load_signed(x, out):
    for j in range(0, x.shape[0], 4):
        fstore(out, j, fload(x, j))


@settings(max_examples=40, deadline=None)
@given(v=st.lists(st.integers(-2 ** 51 + 1, 2 ** 51 - 1), min_size=4, max_size=40))
def test_signed_load_is_exact_below_2_51(v):
    # the edges of the range the compact-plaintext NTT relies on, then hypothesis' values
    x = np.array([-2 ** 51 + 1, 2 ** 51 - 1, -1, 0] + v, np.int64)
    x = x[: len(x) // 4 * 4]
    out = np.empty(len(x))
    _load_signed(x, out)
    assert [int(f) for f in out] == x.tolist()
