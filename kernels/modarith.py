"""Element-wise modular arithmetic over RNS polynomials.

Portable and exact for primes q < 2^50: a product a*b < 2^102 is reduced with a float64
quotient estimate, which is off by at most one, and the remainder is computed exactly in
float64 with FMA (see :func:`mulmod`), then corrected branch-free.
Arrays are ``(k, N)`` uint64; ``q`` is the ``(k,)`` vector of the rows' primes.  The row
kernels on four-lane vectors (``f4_*`` users: ``key_ip_row``, ``sub_mul_row`` and the kernels
built on them) need C-contiguous rows, as the scheme layer always passes; Numba refuses to
compile them for strided views.
"""
import numpy as np
from numba import njit, prange, float64, int64, uint64

from .cpu import USE_IFMA
from .f64x4 import fadd, fadd_if_neg, fbcast, fload, fmul, fnfma, frint, fstore, fsub
from .ifma import as_f64, as_u64, fma

# Exact conversions between uint64 below 2^52 and float64 by bit patterns: without AVX-512
# there is no vector instruction for uint64 <-> float64 (nor a 64-bit multiply), and LLVM
# expands them into long scalar sequences.
_EXP52 = np.uint64(0x4330000000000000)         # bits of 2.0**52
_F52 = np.float64(2.0 ** 52)
_MAGIC = np.float64(1.5 * 2.0 ** 52)
_MAGIC_BITS = np.uint64(0x4338000000000000)    # bits of 1.5 * 2.0**52
_F32 = np.float64(2.0 ** 32)


@njit(cache=True, inline="always")
def to_f64(x):
    """float64(x), exactly, for uint64 x < 2^52: bits(2^52) | x is the double 2^52 + x."""
    return as_f64(x | _EXP52) - _F52


@njit(cache=True, inline="always")
def rem_exact(hi, lo, qh, qd, q):
    """hi + lo - qh*q as a uint64 in [0, 2q), for integer-valued doubles hi, lo and qh where
    this integer r lies in [-q, 2q) and r - lo lies below 2^52 in magnitude, as it does when
    hi = fl(x*y), lo = fma(x, y, -hi) split a product x*y < 2^102 (|lo| <= 2^49).

    fma(-qh, q, hi) = r - lo is then exact, and adding lo gives the integer r exactly.
    r + 1.5*2^52 lies in [2^52, 2^53), where the ulp is 1, so its bits minus those of
    1.5*2^52 are r in two's complement; a negative r is then >= 2^64 - q and min(r, r + q)
    maps it to [0, q)."""
    r = fma(-qh, qd, hi) + lo
    ri = as_u64(r + _MAGIC) - _MAGIC_BITS
    return min(ri, ri + q)


@njit(inline="always", cache=True)
def mulmod(a, b, q, qinv):
    """a*b mod q in [0, q) for a < 2^52, b < 2^50 and ab/q < 2^51 (so for any a < 2^52 and
    b < q < 2^50); qinv = 1.0 / q."""
    # t = fl(fl(ab) * fl(1/q)) has relative error <= 3*2^-53, below 0.75 on a quotient < 2^51,
    # so floor(t) is floor(ab/q) - 1, + 0 or + 1 and r = ab - floor(t) q lies in [-q, 2q).
    af = to_f64(a)
    bf = to_f64(b)
    hi = af * bf
    r = rem_exact(hi, fma(af, bf, -hi), np.floor(hi * qinv), to_f64(q), q)
    return min(r, r - q)


@njit(inline="always", cache=True)
def reduce_small(x, q, qinv):
    """x mod q for x < 2^63 (lazily accumulated sums), by :func:`reduce_signed_one`."""
    qd = to_f64(q)  # the constants are loop-invariant: LLVM hoists them out of callers' loops
    return reduce_signed_one(int64(x), q, qd, qinv, two32_mod(qd, qinv))


# -- four-lane float64 forms (kernels/f64x4.py), for portable kernels that keep residues as
# exact float64 integers.  For a prime 97 <= q < 2^50 (the smallest NTT-friendly one is 97),
# qv = q and qi = fl(1/q) in every lane:
# * f4_red(x) = x - rint(x qi) q for integer |x| <= 2^53: x qi lies within |x/q| 2^-52 of x/q,
#   so |f4_red(x)| <= q/2 + |x| 2^-52 <= q/2 + 2, an integer that one FMA computes exactly;
# * f4_residue(x) = f4_red(x), plus q where negative: the residue in [0, q) (q/2 + 2 < q);
# * f4_mulmod(a, b) = a b - rint(fl(a b) qi) q for integers with |a b| / q < 2^50 and
#   |a b| < 2^101: three roundings put the quotient estimate within 2^50 * 3 2^-53 = 3/8 of
#   ab/q, so |result| < 7q/8; hi = fl(ab) and lo = ab - hi (one FMA, |lo| <= 2^47) are exact,
#   hi - k q = r - lo is an integer below 2^53 that one FMA computes exactly, and subtracting
#   -lo gives r exactly.  Sums of four such terms plus a reduced value stay below 4q + 2.
@njit(cache=True, inline="always")
def f4_red(x, qv, qi):
    return fnfma(frint(fmul(x, qi)), qv, x)


@njit(cache=True, inline="always")
def f4_mulmod_est(a, b, t, qv):
    """a b - rint(t) q, exactly, for an estimate t of ab/q (the NTT passes x * fl(w/q))."""
    hi = fmul(a, b)
    return fsub(fnfma(frint(t), qv, hi), fnfma(a, b, hi))


@njit(cache=True, inline="always")
def f4_mulmod(a, b, qv, qi):
    return f4_mulmod_est(a, b, fmul(fmul(a, b), qi), qv)


@njit(cache=True, inline="always")
def f4_residue(x, qv, qi):
    return fadd_if_neg(f4_red(x, qv, qi), qv)


@njit(cache=True, parallel=True)
def add(a, b, q, out):
    k, n = a.shape
    for i in prange(k):
        qi = q[i]
        for j in range(n):
            s = a[i, j] + b[i, j]
            out[i, j] = min(s, s - qi)


@njit(cache=True, parallel=True)
def sub(a, b, q, out):
    k, n = a.shape
    for i in prange(k):
        qi = q[i]
        for j in range(n):
            s = a[i, j] + (qi - b[i, j])
            out[i, j] = min(s, s - qi)


@njit(cache=True, parallel=True)
def neg(a, q, out):
    k, n = a.shape
    for i in prange(k):
        qi = q[i]
        for j in range(n):
            s = qi - a[i, j]
            out[i, j] = min(s, s - qi)


@njit(cache=True, parallel=True)
def mul(a, b, q, out):
    k, n = a.shape
    for i in prange(k):
        qi = q[i]
        qinv = 1.0 / float64(qi)
        for j in range(n):
            out[i, j] = mulmod(a[i, j], b[i, j], qi, qinv)


@njit(cache=True, parallel=True)
def mul_add(a, b, q, out):
    """out += a*b (mod q)."""
    k, n = a.shape
    for i in prange(k):
        qi = q[i]
        qinv = 1.0 / float64(qi)
        for j in range(n):
            s = out[i, j] + mulmod(a[i, j], b[i, j], qi, qinv)
            out[i, j] = min(s, s - qi)


@njit(cache=True, parallel=True)
def mul_scalar(a, c, q, out):
    """out[i] = a[i] * c[i] (mod q[i]) with one constant per row, c[i] < q[i]."""
    k, n = a.shape
    for i in prange(k):
        qi = q[i]
        ci = c[i]
        qinv = 1.0 / float64(qi)
        for j in range(n):
            out[i, j] = mulmod(a[i, j], ci, qi, qinv)


@njit(cache=True, parallel=True)
def add_scalar(a, c, q, out):
    """out[i] = a[i] + c[i] (mod q[i]); adds a constant to every evaluation point."""
    k, n = a.shape
    for i in prange(k):
        qi = q[i]
        ci = c[i]
        for j in range(n):
            s = a[i, j] + ci
            out[i, j] = min(s, s - qi)


@njit(cache=True, inline="always")
def sub_mul_row(a, b, c, qi, out):
    """out = (a - b) c mod qi for rows of residues a, b and a constant c < qi (out may be a),
    on four-lane float64 vectors: the last step of rescale and ModDown."""
    qd = to_f64(qi)
    qv = fbcast(qd)
    qinv = fbcast(1.0 / qd)
    cv = fbcast(to_f64(c))
    for jj in range(out.shape[0] >> 2):
        j = jj << 2
        d = fsub(fload(a, j), fload(b, j))
        fstore(out, j, f4_residue(f4_mulmod(d, cv, qv, qinv), qv, qinv))


@njit(cache=True, parallel=True)
def sub_mul_scalar(a, b, c, q, out):
    """out[i] = (a[i] - b[i]) * c[i] (mod q[i]) (:func:`sub_mul_row` per row)."""
    for i in prange(a.shape[0]):
        sub_mul_row(a[i], b[i], c[i], q[i], out[i])


_MASK32 = np.uint64((1 << 32) - 1)


@njit(cache=True, inline="always")
def two32_mod(qd, qinv):
    """2^32 mod q as a float64, exactly, for a prime q < 2^50 (qd = float(q), qinv = 1.0 / q).

    fl(2^32 fl(1/q)) is within 2^32/q * 2^-52 < 1/q of 2^32/q, whose fractional part is 0
    (q = 2, where every step is exact) or at least 1/q, so t is floor(2^32 / q) and the FMA
    gives 2^32 - t q exactly."""
    t = np.floor(_F32 * qinv)
    return fma(-t, qd, _F32)


@njit(cache=True, inline="always")
def signed_to_f64(x):
    """float64(x), exactly, for int64 |x| < 2^51: the double 1.5*2^52 + x has the bits of
    1.5*2^52 plus x (its ulp is 1)."""
    return as_f64(uint64(x) + _MAGIC_BITS) - _MAGIC


@njit(cache=True, inline="always")
def reduce_signed_one(v, q, qd, qinv, rd):
    """v mod q in [0, q) for any int64 v and prime q < 2^50; qd = float(q), qinv = 1.0 / q,
    rd = float(2^32 mod q).

    Without int64 <-> float64 conversions or 64-bit multiplies (AVX2 has neither): v = vh 2^32
    + vl with |vh| <= 2^31 and 0 <= vl < 2^32, both exact as doubles, and T = vh rd + vl = v
    (mod q) with |T / q| < 2^32.  hi = fl(vh rd) and lo = fma(vh, rd, -hi) split vh rd exactly
    (|lo| <= 2^28); the estimate fl(fl(hi + vl) / q) is within 2^-20 of T / q, so its floor
    leaves T - qh q in [-q, 2q), which rem_exact computes exactly."""
    vh = signed_to_f64(v >> 32)
    vl = to_f64(uint64(v) & _MASK32)
    hi = vh * rd
    r = rem_exact(hi, fma(vh, rd, -hi) + vl, np.floor((hi + vl) * qinv), qd, q)
    return min(r, r - q)


@njit(cache=True, inline="always")
def reduce_signed_row(x, q, out):
    """out[j] = x[j] mod q for signed int64 x, by :func:`reduce_signed_one`."""
    qd = to_f64(q)
    qinv = 1.0 / qd
    rd = two32_mod(qd, qinv)
    for j in range(x.shape[0]):
        out[j] = reduce_signed_one(x[j], q, qd, qinv, rd)


@njit(cache=True, parallel=True)
def reduce_signed(x, q, out):
    """out[i, j] = x[j] mod q[i] for signed int64 coefficients (encoding, sampling), with
    :func:`reduce_signed_one`: no hardware division, the loop vectorizes."""
    for i in prange(out.shape[0]):
        reduce_signed_row(x, q[i], out[i])


@njit(cache=True, parallel=True)
def reduce_signed_rows(x, q, out):
    """out[b * k + i, j] = x[b, j] mod q[i] for a batch of signed int64 vectors:
    :func:`reduce_signed` over many vectors in one parallel region."""
    k = q.shape[0]
    for r in prange(x.shape[0] * k):
        reduce_signed_row(x[r // k], q[r % k], out[r])


@njit(inline="always", cache=True)
def key_ip_row(ext, key, r, g, qi, o0, o1):
    """o_c = sum_d ext[d, r] key[d, c, g] mod qi for c = 0, 1 (the key inner product of one
    row), on four-lane float64 vectors with a reduction every four digits."""
    d_count = ext.shape[0]
    qd = to_f64(qi)
    qv = fbcast(qd)
    qinv = fbcast(1.0 / qd)
    for jj in range(ext.shape[2] >> 2):
        j = jj << 2
        a0 = fbcast(0.0)
        a1 = fbcast(0.0)
        for d in range(d_count):
            x = fload(ext[d, r], j)
            a0 = fadd(a0, f4_mulmod(x, fload(key[d, 0, g], j), qv, qinv))
            a1 = fadd(a1, f4_mulmod(x, fload(key[d, 1, g], j), qv, qinv))
            if d & 3 == 3:
                a0 = f4_red(a0, qv, qinv)
                a1 = f4_red(a1, qv, qinv)
        fstore(o0, j, f4_residue(a0, qv, qinv))
        fstore(o1, j, f4_residue(a1, qv, qinv))


@njit(cache=True, parallel=True)
def key_inner_product_portable(ext, key, rows, q_all, out):
    """out[c, r] = sum_d ext[d, r] * key[d, c, rows[r]] (mod q_all[rows[r]]) for c = 0, 1.

    ``ext`` (D, m, N) holds the ModUp-extended digits, ``key`` (D_all, 2, M, N) a key-switching
    key over every prime of the context; ``rows`` picks the key rows of the current basis.
    Both key components are accumulated in one pass so each digit row is read once.
    """
    for r in prange(ext.shape[1]):
        g = rows[r]
        key_ip_row(ext, key, r, g, q_all[g], out[0, r], out[1, r])


_IP_CONSTANTS = {}


def ifma_prime_constants(q_all):
    """(-q^-1 mod 2^52, 2^52 mod q, its Shoup companion) per prime, cached by prime list."""
    key = q_all.tobytes()
    got = _IP_CONSTANTS.get(key)
    if got is None:
        from . import ifma_arith as fx
        got = (fx.neg_inv52(q_all),) + fx.r52(q_all)
        _IP_CONSTANTS[key] = got
    return got


def key_inner_product_ifma(ext, key, rows, q_all, out):
    from . import ifma_arith as fx
    qneg, rr, rr_s = ifma_prime_constants(q_all)
    fx.key_inner_product(ext, key, rows, q_all, qneg, rr, rr_s, out)


def key_inner_product(ext, key, rows, q_all, out):
    """out[c, r] = sum_d ext[d, r] * key[d, c, rows[r]] (mod q_all[rows[r]]) for c = 0, 1.

    ``ext`` (D, m, N) holds the ModUp-extended digits, ``key`` (D_all, 2, M, N) a key-switching
    key over every prime of the context; ``rows`` picks the key rows of the current basis.
    IFMA (lazy Montgomery sums) where available, else the portable kernel.
    """
    (key_inner_product_ifma if USE_IFMA else key_inner_product_portable)(ext, key, rows, q_all, out)
