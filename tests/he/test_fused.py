"""The backend's fused product kernels against Python-integer references."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba.typed import List
from sympy import isprime

from kernels import cpu, ntt
from hemet.he._fused import coeff_mul_add_many, mul_add_many, small_flags, term_groups

PATHS = [False, pytest.param(True, marks=pytest.mark.skipif(
    not cpu.HAS_IFMA, reason="CPU lacks AVX-512 IFMA; portable path only"))]


def _tables(n, count=3):
    out, m = [], ((1 << 50) - 1) // (2 * n)
    while len(out) < count:
        if isprime(1 + m * 2 * n):
            out.append(1 + m * 2 * n)
        m -= 1
    return ntt.make_tables(out, n)


def _bitrev(j, log_n):
    return int(format(j, f"0{log_n}b")[::-1], 2)


def ref_ntt(coeffs, q, psi):
    """out[j] = sum_i a[i] psi^(i (2 bitrev(j) + 1)) mod q (kernels.ntt's order), Python ints."""
    n = len(coeffs)
    log_n = n.bit_length() - 1
    pw = [pow(psi, e, q) for e in range(2 * n)]
    return [sum(int(c) * pw[(i * (2 * _bitrev(j, log_n) + 1)) % (2 * n)]
                for i, c in enumerate(coeffs)) % q for j in range(n)]


@st.composite
def batch(draw):
    log_n = draw(st.sampled_from([4, 5, 6]))
    n_terms = draw(st.integers(1, 10))  # groups of 1-4 terms, and several per accumulator
    n_accs = draw(st.integers(1, 3))
    return (log_n, n_terms, draw(st.lists(st.integers(0, n_accs - 1), min_size=n_terms,
                                          max_size=n_terms)),
            draw(st.sampled_from(["random", "edges"])), draw(st.integers(0, 2 ** 32 - 1)))


@pytest.mark.parametrize("ifma", PATHS, ids=["portable", "ifma"])
@settings(max_examples=25, deadline=None)
@given(batch())
def test_coeff_mul_add_many_matches_python_ints(ifma, case):
    """acc[a_t] += ct_t * NTT(c_t mod q) per term, accumulators shared between terms, signed
    coefficients up to 2^62 (the compact plaintexts' bound) and, in the same batch, below
    2^51 (the portable kernel's unreduced path, from its edges +-(2^51 - 1))."""
    log_n, n_terms, acc_of, mode, seed = case
    n = 1 << log_n
    t = _tables(n)
    rows = np.array([0, 1, 2])
    q = t.q[rows]
    rng = np.random.default_rng(seed)
    bounds = rng.choice([2 ** 62, ntt.SIGNED_DIRECT - 1, 2 ** 20], n_terms)
    coeffs = [rng.integers(-b, b, n, dtype=np.int64, endpoint=True) for b in bounds]
    if mode == "edges":
        for c, b in zip(coeffs, bounds):
            c[rng.random(n) < 0.3] = b
            c[rng.random(n) < 0.3] = -b
            c[rng.random(n) < 0.2] = 0
            c[rng.random(n) < 0.2] = -int(q[1])
    cts = [np.stack([np.stack([rng.integers(0, int(qi), n, dtype=np.uint64) for qi in q])
                     for _ in range(2)]) for _ in range(n_terms)]
    accs = [np.stack([np.stack([rng.integers(0, int(qi), n, dtype=np.uint64) for qi in q])
                      for _ in range(2)]) for _ in range(max(acc_of) + 1)]
    want = [[[[int(v) for v in row] for row in poly] for poly in a] for a in accs]
    for ti in range(n_terms):
        for i, qi in enumerate(int(x) for x in q):
            pt = ref_ntt([int(c) % qi for c in coeffs[ti]], qi, int(t.psi[rows[i]]))
            for c in range(2):
                w = want[acc_of[ti]][c][i]
                for j in range(n):
                    w[j] = (w[j] + int(cts[ti][c, i, j]) * pt[j]) % qi
    assert small_flags(coeffs).tolist() == [b < ntt.SIGNED_DIRECT for b in bounds]
    coeff_mul_add_many(List(cts), List(coeffs), List([accs[a] for a in acc_of]), q, rows, t,
                       ifma=ifma)
    for a, w in zip(accs, want):
        assert a.tolist() == w


def _residues(rng, q, n, shape, mode):
    """Random residues below each prime; ``edges``: many 0 and q - 1 (the largest products)."""
    out = np.stack([np.stack([rng.integers(0, int(qi), n, dtype=np.uint64) for qi in q])
                    for _ in range(shape)]) if shape else \
        np.stack([rng.integers(0, int(qi), n, dtype=np.uint64) for qi in q])
    if mode == "edges":
        qm = (np.asarray(q, np.uint64) - np.uint64(1))[:, None]
        top = rng.random(out.shape) < 0.5
        out[top] = np.broadcast_to(qm, out.shape)[top]
        out[rng.random(out.shape) < 0.2] = 0
    return out


@pytest.mark.parametrize("ifma", PATHS, ids=["portable", "ifma"])
@settings(max_examples=25, deadline=None)
@given(batch())
def test_mul_add_many_matches_python_ints(ifma, case):
    """acc[a_t] += ct_t * pt_t per term (NTT-form plaintexts), accumulators shared: the IFMA
    kernel's unreduced sums of up to four products per accumulator are exact."""
    log_n, n_terms, acc_of, mode, seed = case
    n = 1 << log_n
    q = _tables(n).q
    rng = np.random.default_rng(seed)
    cts = [_residues(rng, q, n, 2, mode) for _ in range(n_terms)]
    pts = [_residues(rng, q, n, 0, mode) for _ in range(n_terms)]
    accs = [_residues(rng, q, n, 2, mode) for _ in range(max(acc_of) + 1)]
    want = [[[[int(v) for v in row] for row in poly] for poly in a] for a in accs]
    for ti in range(n_terms):
        for i, qi in enumerate(int(x) for x in q):
            for c in range(2):
                w = want[acc_of[ti]][c][i]
                for j in range(n):
                    w[j] = (w[j] + int(cts[ti][c, i, j]) * int(pts[ti][i, j])) % qi
    mul_add_many(List(cts), List(pts), List([accs[a] for a in acc_of]), q, ifma=ifma)
    for a, w in zip(accs, want):
        assert a.tolist() == w


def test_term_groups_cover_each_term_once_with_one_accumulator_per_group():
    acc_of = ["a", "b", "a", "a", "c", "a", "a", "b", "a"]
    order, starts = term_groups(acc_of)
    assert sorted(order.tolist()) == list(range(len(acc_of)))
    sizes = np.diff(starts)
    assert sizes.max() <= 4 and sizes.min() >= 1 and starts[-1] == len(acc_of)
    for g in range(len(starts) - 1):
        assert len({acc_of[t] for t in order[starts[g]:starts[g + 1]]}) == 1
    assert sizes.tolist() == [4, 2, 2, 1]  # a: 6 terms (4 + 2), b: 2, c: 1


def test_acc_index_must_match_the_terms():
    t = _tables(16)
    ct = np.zeros((2, 3, 16), np.uint64)
    pt = np.zeros((3, 16), np.uint64)
    with pytest.raises(ValueError, match="accumulator index"):
        mul_add_many(List([ct, ct]), List([pt, pt]), List([ct, ct]), t.q, acc_index=[0], ifma=True)


def test_coeff_and_ntt_form_products_agree():
    """The same plaintexts given in NTT form to ``mul_add_many`` give the same accumulators."""
    n = 1 << 10
    t = _tables(n, 4)
    rows = np.arange(4)
    rng = np.random.default_rng(1)
    coeffs = [rng.integers(-2 ** 45, 2 ** 45, n, dtype=np.int64) for _ in range(6)]
    cts = [np.stack([np.stack([rng.integers(0, int(qi), n, dtype=np.uint64) for qi in t.q])
                     for _ in range(2)]) for _ in range(6)]
    pts = []
    for c in coeffs:
        p = np.stack([np.array([int(v) % int(qi) for v in c], dtype=np.uint64) for qi in t.q])
        ntt.forward(p, rows, t)
        pts.append(p)
    acc_a = [np.zeros((2, 4, n), np.uint64) for _ in range(2)]
    acc_b = [np.zeros((2, 4, n), np.uint64) for _ in range(2)]
    mul_add_many(List(cts), List(pts), List([acc_a[i % 2] for i in range(6)]), t.q)
    coeff_mul_add_many(List(cts), List(coeffs), List([acc_b[i % 2] for i in range(6)]), t.q, rows, t)
    assert all(np.array_equal(a, b) for a, b in zip(acc_a, acc_b))


def test_mismatched_term_lists_are_refused():
    t = _tables(16)
    ct = np.zeros((2, 3, 16), np.uint64)
    with pytest.raises(ValueError, match="one coefficient row"):
        coeff_mul_add_many(List([ct, ct]), List([np.zeros(16, np.int64)]), List([ct, ct]),
                           t.q, np.arange(3), t)


def test_a_wrong_small_flag_is_refused_or_exact():
    """The flags must cover the terms; a false flag only costs the reduction (same result)."""
    n = 1 << 6
    t = _tables(n)
    rows = np.arange(3)
    rng = np.random.default_rng(5)
    coeffs = [rng.integers(-2 ** 40, 2 ** 40, n, dtype=np.int64) for _ in range(2)]
    ct = np.stack([np.stack([rng.integers(0, int(qi), n, dtype=np.uint64) for qi in t.q])
                   for _ in range(2)])
    out = []
    for small in ([True, True], [False, False]):
        acc = np.zeros_like(ct)
        coeff_mul_add_many(List([ct, ct]), List(coeffs), List([acc, acc]), t.q, rows, t,
                           ifma=False, small=small)
        out.append(acc)
    assert np.array_equal(*out)
    with pytest.raises(ValueError, match="small flag"):
        coeff_mul_add_many(List([ct, ct]), List(coeffs), List([ct, ct]), t.q, rows, t,
                           ifma=False, small=[True])
