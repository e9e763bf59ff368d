"""Every kernel against a Python-integer reference."""
import numpy as np
import pytest
import sympy
from hypothesis import given, strategies as st
from numba import njit

from kernels import basis, modarith, ntt
from kernels.automorphism import automorphism_coeff, galois_permutation, permute
from kernels.rescale import rescale
from ckks.ring.primes import largest_primes, scale_primes

N = 64
PRIMES = largest_primes(50, 3, N) + scale_primes(30, 2, N) + largest_primes(17, 1, N)
Q = np.array(PRIMES, dtype=np.uint64)


def rand_residues(rng, primes, n=N):
    return np.stack([rng.integers(0, int(q), n, dtype=np.uint64) for q in primes])


def edge_residues(rng, primes, n=N):
    """Random residues with 0, 1, q-1 and q/2 planted: the corrections' boundaries."""
    a = rand_residues(rng, primes, n)
    for i, q in enumerate(primes):
        a[i, :4] = [0, 1, q - 1, q // 2]
    return a


seeds = st.integers(0, 2 ** 32 - 1)


@given(seeds)
def test_elementwise_ops_exact(seed):
    rng = np.random.default_rng(seed)
    a, b = edge_residues(rng, PRIMES), rand_residues(rng, PRIMES)
    b[:, :4] = a[:, [2, 2, 2, 0]]  # (q-1)+(q-1), (q-1)^2 ...
    c = rand_residues(rng, PRIMES, 1)[:, 0]
    out = np.empty_like(a)
    ref = lambda f: np.array([[f(int(x), int(y), int(q)) for x, y in zip(ra, rb)]  # noqa: E731
                              for ra, rb, q in zip(a, b, PRIMES)], dtype=np.uint64)
    modarith.add(a, b, Q, out); assert np.array_equal(out, ref(lambda x, y, q: (x + y) % q))
    modarith.sub(a, b, Q, out); assert np.array_equal(out, ref(lambda x, y, q: (x - y) % q))
    modarith.mul(a, b, Q, out); assert np.array_equal(out, ref(lambda x, y, q: x * y % q))
    modarith.neg(a, Q, out); assert np.array_equal(out, ref(lambda x, y, q: -x % q))
    acc = b.copy(); modarith.mul_add(a, a, Q, acc)
    assert np.array_equal(acc, ref(lambda x, y, q: (y + x * x) % q))
    modarith.mul_scalar(a, c, Q, out)
    assert np.array_equal(out, np.array([[int(x) * int(ci) % q for x in row] for row, ci, q in zip(a, c, PRIMES)], dtype=np.uint64))
    modarith.add_scalar(a, c, Q, out)
    assert np.array_equal(out, np.array([[(int(x) + int(ci)) % q for x in row] for row, ci, q in zip(a, c, PRIMES)], dtype=np.uint64))
    modarith.sub_mul_scalar(a, b, c, Q, out)
    assert np.array_equal(out, ref(lambda x, y, q: 0) * 0 + np.array(
        [[(int(x) - int(y)) * int(ci) % q for x, y in zip(ra, rb)] for ra, rb, ci, q in zip(a, b, c, PRIMES)], dtype=np.uint64))


@njit(cache=False)
def _mulmod_vec(a, b, q):
    out = np.empty_like(a)
    qinv = 1.0 / float(q)
    for j in range(a.shape[0]):
        out[j] = modarith.mulmod(a[j], b[j], q, qinv)
    return out


@given(st.one_of(st.sampled_from(PRIMES), st.integers(3, (1 << 50) - 1).map(sympy.prevprime)),
       seeds)
def test_mulmod_over_its_whole_contract(q, seed):
    """a < 2^52 (lazy inputs up to 4q), b < q, any prime q < 2^50: the float64 quotient may be
    off by one either way (below when ab/q is an integer or just above one, as for a = m*q)
    and the FMA remainder must stay exact, at the extremes too."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 1 << 52, 96, dtype=np.uint64)
    b = rng.integers(0, q, 96, dtype=np.uint64)
    a[:6] = [0, 1, (1 << 52) - 1, (1 << 52) - 1, q - 1, 4 * q - 1 if 4 * q < 1 << 52 else q]
    b[:6] = [q - 1, q - 1, q - 1, 1, q - 1, q - 1]
    m = rng.integers(1, ((1 << 52) - 1) // q + 1, 32, dtype=np.uint64)
    a[6:38] = m * np.uint64(q) + rng.integers(0, 2, 32, dtype=np.uint64)
    got = _mulmod_vec(a, b, np.uint64(q))
    assert [int(x) for x in got] == [int(x) * int(y) % q for x, y in zip(a, b)]


@njit(cache=False)
def _reduce_small_vec(x, q):
    out = np.empty_like(x)
    qinv = 1.0 / float(q)
    for j in range(x.shape[0]):
        out[j] = modarith.reduce_small(x[j], q, qinv)
    return out


@given(st.one_of(st.sampled_from(PRIMES), st.integers(3, (1 << 50) - 1).map(sympy.prevprime)),
       seeds)
def test_reduce_small_over_its_whole_contract(q, seed):
    """Any x < 2^63 (the key-switching sums), q below and above 2^32 (where 2^32 mod q is 2^32),
    planted multiples of q and their neighbours."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 1 << 63, 96, dtype=np.uint64)
    x[:4] = [0, 1, (1 << 63) - 1, q]
    m = rng.integers(1, ((1 << 63) - 2) // q, 30, dtype=np.uint64)
    x[4:34] = m * np.uint64(q) + np.tile(np.array([0, 1, np.uint64(q - 1)], np.uint64), 10)
    got = _reduce_small_vec(x, np.uint64(q))
    assert [int(v) for v in got] == [int(v) % q for v in x]


def test_outputs_may_alias_inputs():
    rng = np.random.default_rng(0)
    a, b = rand_residues(rng, PRIMES), rand_residues(rng, PRIMES)
    expect = np.empty_like(a)
    modarith.mul(a, b, Q, expect)
    modarith.mul(a, b, Q, a)
    assert np.array_equal(a, expect)


@given(seeds, st.lists(st.integers(3, (1 << 50) - 1).map(sympy.prevprime), min_size=1,
                       max_size=3))
def test_reduce_signed(seed, extra_primes):
    """Any int64, including the extremes and planted multiples of q (exact quotients, where the
    float64 estimate may fall either side), for the package's primes and random ones < 2^50;
    the batched form too."""
    primes = PRIMES + extra_primes
    q = np.array(primes, dtype=np.uint64)
    rng = np.random.default_rng(seed)
    x = rng.integers(-(2 ** 63), 2 ** 63 - 1, N, dtype=np.int64, endpoint=True)
    x[:8] = [-1, 0, 1, -(2 ** 62), 2 ** 62, -(2 ** 63), 2 ** 63 - 1, -(2 ** 32)]
    x[8:24] = rng.integers(-(2 ** 40), 2 ** 40, 16)  # small coefficients, as encoding makes
    for j, p in enumerate(primes):
        m = rng.integers(-(2 ** 62) // p, (2 ** 62) // p, 4)
        x[24 + 4 * j: 28 + 4 * j] = m * p + np.array([-1, 0, 0, 1])
    out = np.empty((len(primes), N), dtype=np.uint64)
    modarith.reduce_signed(x, q, out)
    expect = np.array([[int(v) % p for v in x] for p in primes], dtype=np.uint64)
    assert np.array_equal(out, expect)
    rows = np.empty((2 * len(primes), N), dtype=np.uint64)
    modarith.reduce_signed_rows(np.stack([x, x[::-1].copy()]), q, rows)
    assert np.array_equal(rows[:len(primes)], expect)
    assert np.array_equal(rows[len(primes):], expect[:, ::-1])


@given(seeds, st.integers(1, 4), st.integers(1, 4))
def test_basis_convert_is_x_plus_small_multiple_of_Q(seed, k, m):
    rng = np.random.default_rng(seed)
    src, dst = PRIMES[:k], PRIMES[k:k + m] if k + m <= len(PRIMES) else PRIMES[-m:]
    dst = [p for p in dst if p not in src] or [PRIMES[-1]]
    big = 1
    for q in src:
        big *= q
    x = rand_residues(rng, src)
    x[:, 0] = 0
    x[:, 1] = [q - 1 for q in src]
    hat = [big // q for q in src]
    hat_inv = np.array([pow(h % q, -1, q) for h, q in zip(hat, src)], dtype=np.uint64)
    hat_mod = np.array([[h % p for p in dst] for h in hat], dtype=np.uint64)
    out = np.empty((len(dst), N), dtype=np.uint64)
    basis.convert(x, np.array(src, dtype=np.uint64), hat_inv, np.array(dst, dtype=np.uint64), hat_mod, out)
    for j in range(N):
        # exact value of x by CRT, and the exact sum the kernel computes (x + u*Q, 0 <= u < k)
        val = sum(int(x[i, j]) * int(hat_inv[i]) % q * h for i, (q, h) in enumerate(zip(src, hat)))
        assert (val - sum(int(x[i, j]) * pow(h, -1, q) * h for i, (q, h) in enumerate(zip(src, hat))) % big) % big == 0
        assert val < len(src) * big
        for t, p in enumerate(dst):
            assert int(out[t, j]) == val % p


@given(seeds, st.integers(1, 5))
def test_crt_to_float_centred(seed, k):
    rng = np.random.default_rng(seed)
    primes = PRIMES[:k]
    big = 1
    for q in primes:
        big *= q
    vals = [int(v) for v in rng.integers(-(2 ** 60), 2 ** 60, N)]
    vals[:4] = [0, 1, -1, (big - 1) // 2]
    x = np.array([[v % q for v in vals] for q in primes], dtype=np.uint64)
    g = np.zeros((k, k), dtype=np.uint64)
    for j in range(k):
        for i in range(j + 1, k):
            g[j, i] = pow(primes[j], -1, primes[i])
    vals[4:6] = [(big - 1) // 2 - 1, -((big - 1) // 2)]
    x = np.array([[v % q for v in vals] for q in primes], dtype=np.uint64)
    out = np.empty(N)
    basis.crt_to_float(x, np.array(primes, dtype=np.uint64), g, basis.mixed_radix_digits(big // 2, primes), out)
    for v, o in zip(vals, out):
        centred = v % big
        centred = centred - big if centred > big // 2 else centred
        assert o == pytest.approx(float(centred), rel=1e-14, abs=0.5)


@given(seeds)
def test_lift_centered(seed):
    rng = np.random.default_rng(seed)
    src = PRIMES[0]
    x = rng.integers(0, src, N, dtype=np.uint64)
    x[:3] = [0, src // 2, src // 2 + 1]
    out = np.empty((len(PRIMES) - 1, N), dtype=np.uint64)
    basis.lift_centered(x, np.uint64(src), Q[1:], out)
    for j, v in enumerate(x):
        c = int(v) - src if int(v) > src // 2 else int(v)
        assert [int(o) for o in out[:, j]] == [c % q for q in PRIMES[1:]]


@pytest.mark.parametrize("g", [5, 25, 3, 2 * N - 1, 5 ** 7 % (2 * N)])
def test_galois_permutation_matches_coefficient_automorphism(g):
    rng = np.random.default_rng(g)
    tables = ntt.make_tables(PRIMES, N)
    rows = np.arange(len(PRIMES), dtype=np.int64)
    a = rand_residues(rng, PRIMES)
    # reference: X -> X^g on coefficients, Python ints
    ref = np.zeros_like(a)
    for i in range(N):
        e = i * g % (2 * N)
        for r, q in enumerate(PRIMES):
            v = int(a[r, i])
            ref[r, e % N] = (q - v) % q if e >= N else v
    assert np.array_equal(automorphism_coeff(a, g, Q), ref)
    a_ntt, ref_ntt = a.copy(), ref.copy()
    ntt.forward(a_ntt, rows, tables)
    ntt.forward(ref_ntt, rows, tables)
    out = np.empty_like(a_ntt)
    permute(a_ntt, galois_permutation(N, g), out)
    assert np.array_equal(out, ref_ntt)



@given(seeds, st.integers(2, 5))
def test_rescale_rounds_to_nearest(seed, k):
    rng = np.random.default_rng(seed)
    primes = PRIMES[:k]
    tables = ntt.make_tables(primes, N)
    rows = np.arange(k, dtype=np.int64)
    big = 1
    for q in primes:
        big *= q
    vals = [int(v) for v in rng.integers(-(2 ** 62), 2 ** 62, N)]
    vals = [v * (big >> 70 if big > 2 ** 75 else 1) + int(rng.integers(0, 2 ** 20)) for v in vals]
    x = np.array([[v % q for v in vals] for q in primes], dtype=np.uint64)
    ql = primes[-1]
    ntt.forward(x, rows, tables)
    inv = np.array([pow(ql, -1, q) for q in primes[:-1]], dtype=np.uint64)
    out = np.empty((k - 1, N), dtype=np.uint64)
    rescale(x, rows, tables, inv, out)
    ntt.inverse(out, rows[:-1], tables)
    for j, v in enumerate(vals):
        c = v % big
        c = c - big if c > big // 2 else c
        expect = (2 * c + ql) // (2 * ql)  # round(c / ql), halves up
        got = [int(o) for o in out[:, j]]
        assert got == [expect % q for q in primes[:-1]] or abs(c / ql - round(c / ql)) > 0.5 - 1e-9


@given(seeds)
def test_key_inner_product(seed):
    rng = np.random.default_rng(seed)
    d, m = 3, 3
    rows = np.array([0, 2, 4], dtype=np.int64)
    ext = np.stack([rand_residues(rng, [PRIMES[r] for r in rows]) for _ in range(d)])
    key = np.stack([np.stack([rand_residues(rng, PRIMES) for _ in range(2)]) for _ in range(d + 1)])
    out = np.empty((2, m, N), dtype=np.uint64)
    modarith.key_inner_product(ext, key, rows, Q, out)
    for c in range(2):
        for r, g in enumerate(rows):
            q = PRIMES[g]
            expect = [sum(int(ext[t, r, j]) * int(key[t, c, g, j]) for t in range(d)) % q for j in range(N)]
            assert [int(v) for v in out[c, r]] == expect
