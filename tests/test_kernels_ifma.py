"""IFMA and portable key-switching kernels against Python-integer references.

Both families run in one process: the IFMA kernels are called directly (skipped without
IFMA), the portable ones through ``KeySwitcher(ctx, ifma=False)`` and their ``*_portable``
names.  Edge values 0, 1 and q-1 are planted in every input.
"""
import warnings

import numpy as np
from numba import njit
import pytest
from hypothesis import example, given, strategies as st

import ckks
from ckks.rlwe.keyswitch import KeySwitcher
from kernels import basis, cpu, modarith, ntt
from ckks.ring.primes import largest_primes, scale_primes

N = 64
PRIMES = largest_primes(50, 4, N) + scale_primes(40, 3, N) + scale_primes(30, 2, N) + largest_primes(17, 1, N)
Q = np.array(PRIMES, dtype=np.uint64)
seeds = st.integers(0, 2 ** 32 - 1)

PATHS = ["portable", pytest.param("ifma", marks=pytest.mark.skipif(
    not cpu.HAS_IFMA, reason="CPU lacks AVX-512 IFMA"))]


def edge(rng, primes, n=N):
    a = np.stack([rng.integers(0, int(q), n, dtype=np.uint64) for q in primes])
    for i, q in enumerate(primes):
        a[i, :4] = [0, 1, q - 1, q - 1]
    return a


def crt_hat(src):
    big = 1
    for q in src:
        big *= q
    hat = [big // q for q in src]
    return big, hat, np.array([pow(h % q, -1, q) for h, q in zip(hat, src)], dtype=np.uint64)


@pytest.mark.parametrize("path", PATHS)
@given(seed=seeds, k=st.integers(1, 9), m=st.integers(1, 5))
def test_convert_exact(path, seed, k, m):
    """Both paths return exactly sum_i [x_i qhat_inv_i]_{q_i} * (Q/q_i) mod p_t (k > 4 uses
    several Montgomery groups on the IFMA path)."""
    rng = np.random.default_rng(seed)
    src = PRIMES[:k]
    dst = PRIMES[k:k + m] or PRIMES[-1:]
    big, hat, hat_inv = crt_hat(src)
    hat_mod = np.array([[h % p for p in dst] for h in hat], dtype=np.uint64)
    x = edge(rng, src)
    out = np.empty((len(dst), N), dtype=np.uint64)
    kern = basis.convert_ifma if path == "ifma" else basis.convert_portable
    kern(x, np.array(src, dtype=np.uint64), hat_inv, np.array(dst, dtype=np.uint64), hat_mod, out)
    for j in range(N):
        val = sum(int(x[i, j]) * int(hat_inv[i]) % q * h for i, (q, h) in enumerate(zip(src, hat)))
        assert [int(o) for o in out[:, j]] == [val % p for p in dst]


@njit
def _row_kernels(y, lo, hi, cm, p, a, c, conv, submul):
    basis._conv_row_portable(y, lo, hi, cm, p, conv)
    modarith.sub_mul_row(a, conv, c, p, submul)


@example(seed=0, terms=20, target=0)
@given(seed=seeds, terms=st.integers(1, 20), target=st.integers(0, len(PRIMES) - 1))
def test_portable_row_kernels_exact(seed, terms, target):
    """The float64-vector rows of the portable ModUp / ModDown: sum_i y_i c_i mod p over 1..20
    residue rows of other (larger and smaller) primes, with the all-(q-1) case, then
    (a - that) * c mod p.  Even seeds plant c_i = (p-3)/2, so column 1 (y = 1) sums odd terms
    at the top of the signed range: 17 of them near 2^49 pass 2^53 and would round, which
    the reduction every four terms must prevent."""
    rng = np.random.default_rng(seed)
    src = [PRIMES[(target + 1 + i) % len(PRIMES)] for i in range(terms)]
    p = PRIMES[target]
    y = edge(rng, src)
    y[:, 7] = np.array(src, dtype=np.uint64) - 1
    cm = np.array([rng.integers(0, p) for _ in range(terms)], dtype=np.uint64)
    cm[-1] = p - 1
    if seed % 2 == 0:
        cm[:] = (p - 3) // 2
    a = edge(rng, [p])[0]
    c = np.uint64(rng.integers(0, p)) if seed % 3 else np.uint64(p - 1)
    conv = np.empty(N, dtype=np.uint64)
    submul = np.empty(N, dtype=np.uint64)
    _row_kernels(y, 0, terms, cm, np.uint64(p), a, c, conv, submul)
    for j in range(N):
        want = sum(int(y[i, j]) * int(cm[i]) for i in range(terms)) % p
        assert int(conv[j]) == want
        assert int(submul[j]) == (int(a[j]) - want) * int(c) % p


@pytest.mark.parametrize("path", PATHS)
@given(seed=seeds, d=st.integers(1, 9))
def test_key_inner_product_exact(path, seed, d):
    """Lazy Montgomery sums over 1..9 digits (several groups of 4), all-(q-1) worst case."""
    rng = np.random.default_rng(seed)
    rows = np.array([0, 3, 5, 8, 9], dtype=np.int64)
    ext = np.stack([edge(rng, [PRIMES[r] for r in rows]) for _ in range(d)])
    key = np.stack([np.stack([edge(rng, PRIMES) for _ in range(2)]) for _ in range(d + 1)])
    ext[:, :, 5] = (Q[rows] - 1)[None, :]
    key[:, :, :, 5] = (Q - 1)[None, None, :]
    out = np.empty((2, len(rows), N), dtype=np.uint64)
    kern = modarith.key_inner_product_ifma if path == "ifma" else modarith.key_inner_product_portable
    kern(ext, key, rows, Q, out)
    for c in range(2):
        for r, g in enumerate(rows):
            q = PRIMES[g]
            expect = [sum(int(ext[t, r, j]) * int(key[t, c, g, j]) for t in range(d)) % q for j in range(N)]
            assert [int(v) for v in out[c, r]] == expect


@pytest.mark.skipif(not cpu.HAS_IFMA, reason="CPU lacks AVX-512 IFMA")
@given(seed=seeds, d=st.integers(1, 9), n=st.sampled_from([16, 64]))
def test_ip_row_mont_inv_exact(seed, d, n):
    """The inner product with the inverse NTT's register stages run inside it equals the
    Python-int inner product times 2^-52, inverse-transformed (1..9 digits: the stages run in
    the last of several Montgomery groups; n = 16: the register stages are the whole
    transform)."""
    from kernels import ifma_arith
    rng = np.random.default_rng(seed)
    g, r = 2, 1
    qs = PRIMES[:4]
    q = qs[g]
    t = ntt.make_tables(qs, n)
    ext = np.stack([edge(rng, qs, n) for _ in range(d)])
    key = np.stack([np.stack([edge(rng, qs, n) for _ in range(2)]) for _ in range(d)])
    o = np.empty((2, n), dtype=np.uint64)
    ifma_arith.ip_row_mont_inv(ext, key, r, g, t.q[g], ifma_arith.neg_inv52(q)[0], o[0],
                               o[1], t.w_inv[g], t.ws_inv[g], t.n_inv[g], t.n_inv_s[g],
                               t.w1_n_inv[g], t.w1_n_inv_s[g])
    rinv = pow(1 << 52, -1, q)
    expect = np.array([[sum(int(ext[k, r, j]) * int(key[k, c, g, j]) for k in range(d)) * rinv % q
                        for j in range(n)] for c in range(2)], dtype=np.uint64)
    ntt.inverse_portable(expect, np.array([g, g]), t)
    assert np.array_equal(o, expect)


# -- the fused key-switching kernels, through KeySwitcher, against a Python-int model -----------
@pytest.fixture(scope="module")
def tiny():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ckks.SecurityWarning)
        params = ckks.Parameters(allow_insecure=True, log_n=6, depth=4, dnum=2)
    ctx = ckks.Context(params)
    key = ckks.KeyGenerator(ctx).relin_key().data
    return ctx, key


def _coeffs(ctx, a, rows):
    a = a.copy()
    ntt.inverse(a, rows, ctx.tables)
    return a


def _ntt(ctx, a, rows):
    a = np.ascontiguousarray(a, dtype=np.uint64).copy()
    ntt.forward(a, rows, ctx.tables)
    return a


def _ref_convert(vals, src, dst):
    """Fast basis conversion of coefficient columns (Python ints)."""
    big, hat, hat_inv = crt_hat(src)
    out = np.empty((len(dst), vals.shape[1]), dtype=np.uint64)
    for j in range(vals.shape[1]):
        s = sum(int(vals[i, j]) * int(hat_inv[i]) % q * h for i, (q, h) in enumerate(zip(src, hat)))
        out[:, j] = [s % p for p in dst]
    return out


def ref_decompose(ctx, alpha, c, level):
    k = level + 1
    qp = ctx.qp_rows(level)
    coeff = _coeffs(ctx, c, ctx.q_rows(level))
    digits = -(-k // alpha)
    ext = np.empty((digits, len(qp), ctx.n), dtype=np.uint64)
    for j in range(digits):
        lo, hi = j * alpha, min((j + 1) * alpha, k)
        tgt = [t for t in range(len(qp)) if not lo <= t < hi]
        ext[j, lo:hi] = c[lo:hi]
        conv = _ref_convert(coeff[lo:hi], [int(q) for q in ctx.q_all[lo:hi]],
                            [int(ctx.q_all[qp[t]]) for t in tgt])
        ext[j, tgt] = _ntt(ctx, conv, qp[tgt])
    return ext


def ref_inner_product(ctx, ext, key, level):
    qp = ctx.qp_rows(level)
    out = np.empty((2, len(qp), ctx.n), dtype=np.uint64)
    for c in range(2):
        for r, g in enumerate(qp):
            q = int(ctx.q_all[g])
            out[c, r] = [sum(int(ext[d, r, j]) * int(key[d, c, g, j]) for d in range(ext.shape[0])) % q
                         for j in range(ctx.n)]
    return out


def ref_mod_down(ctx, x, level):
    k = level + 1
    sp = ctx.special_rows
    pr = [int(ctx.q_all[r]) for r in sp]
    qs = [int(ctx.q_all[r]) for r in range(k)]
    out = np.empty((x.shape[0], k, ctx.n), dtype=np.uint64)
    for s in range(x.shape[0]):
        xp = _coeffs(ctx, np.ascontiguousarray(x[s, k:]), sp)
        conv = _ntt(ctx, _ref_convert(xp, pr, qs), ctx.q_rows(level))
        for r, q in enumerate(qs):
            pinv = pow(ctx.p_product % q, -1, q)
            out[s, r] = [(int(a) - int(b)) * pinv % q for a, b in zip(x[s, r], conv[r])]
    return out


@pytest.mark.parametrize("path", PATHS)
@given(seed=seeds, level=st.integers(0, 4))
def test_keyswitch_steps_exact(tiny, path, seed, level):
    """decompose, inner_product, mod_down, switch_ext and switch against the models
    (level 0..4 with alpha 3: partial last digits included)."""
    ctx, key = tiny
    ks = KeySwitcher(ctx, ifma=(path == "ifma"))
    rng = np.random.default_rng(seed)
    c = edge(rng, [int(q) for q in ctx.q_all[:level + 1]], ctx.n)
    ext = ks.decompose(c, level)
    assert np.array_equal(ext, ref_decompose(ctx, ks.alpha, c, level))
    ip = ks.inner_product(ext, key, level)
    assert np.array_equal(ip, ref_inner_product(ctx, ext, key, level))
    x = np.stack([edge(rng, [int(ctx.q_all[g]) for g in ctx.qp_rows(level)], ctx.n) for _ in range(3)])
    assert np.array_equal(ks.mod_down(x, level), ref_mod_down(ctx, x, level))
    expect = ref_mod_down(ctx, ip, level)
    assert np.array_equal(ks.mod_down(ip, level), expect)
    assert np.array_equal(ks.switch_ext(ext, key, level), expect)
    assert np.array_equal(ks.switch(c, key, level), expect)


@pytest.mark.skipif(not cpu.HAS_IFMA, reason="CPU lacks AVX-512 IFMA")
def test_ifma_and_portable_switchers_agree(small):
    ctx = small.ctx
    key = small.evaluator.relin_key.data
    rng = np.random.default_rng(5)
    for level in (ctx.max_level, 1):
        c = edge(rng, [int(q) for q in ctx.q_all[:level + 1]], ctx.n)
        a, b = KeySwitcher(ctx, ifma=True), KeySwitcher(ctx, ifma=False)
        assert np.array_equal(a.switch(c, key, level), b.switch(c, key, level))


@pytest.mark.parametrize("path", PATHS)
@given(seed=seeds, level=st.integers(0, 4), g=st.sampled_from([5, 25, 127, 3]))
def test_rotate_ext_is_permuted_switch(tiny, path, seed, level, g):
    """rotate_ext == (sigma(c0 + u0), sigma(u1)) with u = switch_ext, exactly."""
    from kernels.automorphism import galois_permutation
    ctx, key = tiny
    ks = KeySwitcher(ctx, ifma=(path == "ifma"))
    rng = np.random.default_rng(seed)
    qs = [int(q) for q in ctx.q_all[:level + 1]]
    c0, c1 = edge(rng, qs, ctx.n), edge(rng, qs, ctx.n)
    ext = ks.decompose(c1, level)
    u = ks.switch_ext(ext, key, level)
    perm = galois_permutation(ctx.n, g)
    qcol = np.array(qs, dtype=np.uint64)[:, None]
    expect = np.stack([((u[0] + c0) % qcol)[:, perm], u[1][:, perm]])
    assert np.array_equal(ks.rotate_ext(ext, key, c0, perm, level), expect)


@pytest.mark.parametrize("path", PATHS)
@given(seed=seeds, level=st.integers(0, 4), n_add=st.integers(0, 2), g=st.sampled_from([None, 5, 127]))
def test_switch_ext_add(tiny, path, seed, level, n_add, g):
    """switch_ext_add == sigma(switch_ext + addend) for every addend count and with or
    without a permutation, exactly."""
    from kernels.automorphism import galois_permutation
    ctx, key = tiny
    ks = KeySwitcher(ctx, ifma=(path == "ifma"))
    rng = np.random.default_rng(seed)
    qs = [int(q) for q in ctx.q_all[:level + 1]]
    ext = ks.decompose(edge(rng, qs, ctx.n), level)
    addend = np.stack([edge(rng, qs, ctx.n) for _ in range(n_add)]) if n_add else None
    perm = None if g is None else galois_permutation(ctx.n, g)
    expect = ks.switch_ext(ext, key, level)
    qcol = np.array(qs, dtype=np.uint64)[:, None]
    for c in range(n_add):
        expect[c] = (expect[c] + addend[c]) % qcol
    if perm is not None:
        expect = expect[:, :, perm]
    assert np.array_equal(ks.switch_ext_add(ext, key, level, addend, perm), expect)


@pytest.mark.parametrize("path", PATHS)
@given(seed=seeds, k=st.integers(2, 6))
def test_rescale_both_paths(path, seed, k):
    """The fused rescale equals (x - lift(x_last)) * q_last^-1 computed with Python ints."""
    from kernels.rescale import rescale
    rng = np.random.default_rng(seed)
    primes = PRIMES[:k]
    tables = ntt.make_tables(primes, N)
    rows = np.arange(k, dtype=np.int64)
    x = edge(rng, primes)
    x[-1, 4:8] = [primes[-1] // 2, primes[-1] // 2 + 1, primes[-1] // 2 - 1, 2]  # the centring edge
    x_c = x.copy()
    ntt.forward(x, rows, tables)
    ql = primes[-1]
    inv = np.array([pow(ql, -1, q) for q in primes[:-1]], dtype=np.uint64)
    out = np.empty((k - 1, N), dtype=np.uint64)
    rescale(x, rows, tables, inv, out, ifma=(path == "ifma"))
    ntt.inverse(out, rows[:-1], tables)
    for j in range(N):
        v = int(x_c[-1, j])
        c = v - ql if v > ql // 2 else v
        assert [int(o) for o in out[:, j]] == [(int(x_c[i, j]) - c) * pow(ql, -1, q) % q
                                               for i, q in enumerate(primes[:-1])]


@pytest.mark.skipif(not cpu.HAS_IFMA, reason="CPU lacks AVX-512 IFMA")
@pytest.mark.parametrize("n", [16, 64, 1 << 12])
def test_permute_row_blocked_and_gather(n):
    """Galois permutations map aligned 8-blocks onto aligned 8-blocks (the fast path); a
    random permutation does not and takes the gather path; both exact."""
    from numba import njit
    from kernels import ifma_arith as fx
    from kernels.automorphism import galois_permutation

    @njit
    def run(a, perm, blocked, out):
        fx.permute_row(a, perm, blocked, out)

    rng = np.random.default_rng(n)
    a = rng.integers(0, 2 ** 50, n, dtype=np.uint64)
    for g in (5, 25, 3, 2 * n - 1, pow(5, n // 4 - 1, 2 * n)):
        perm = galois_permutation(n, g)
        assert fx.blocked_permutation(perm)
        for blocked in (True, False):
            out = np.empty_like(a)
            run(a, perm.view(np.uint64), blocked, out)
            assert np.array_equal(out, a[perm])
    perm = rng.permutation(n).astype(np.int64)
    assert not fx.blocked_permutation(perm)
    out = np.empty_like(a)
    run(a, perm.view(np.uint64), False, out)
    assert np.array_equal(out, a[perm])


@pytest.mark.parametrize("path", PATHS)
@given(seed=seeds, n_add=st.integers(0, 2))
def test_switch_ext_add_any_permutation(tiny, path, seed, n_add):
    """A permutation that is not block-structured (gather path) works too."""
    ctx, key = tiny
    ks = KeySwitcher(ctx, ifma=(path == "ifma"))
    rng = np.random.default_rng(seed)
    level = 3
    qs = [int(q) for q in ctx.q_all[:level + 1]]
    ext = ks.decompose(edge(rng, qs, ctx.n), level)
    addend = np.stack([edge(rng, qs, ctx.n) for _ in range(n_add)]) if n_add else None
    perm = rng.permutation(ctx.n).astype(np.int64)
    expect = ks.switch_ext(ext, key, level)
    qcol = np.array(qs, dtype=np.uint64)[:, None]
    for c in range(n_add):
        expect[c] = (expect[c] + addend[c]) % qcol
    assert np.array_equal(ks.switch_ext_add(ext, key, level, addend, perm), expect[:, :, perm])


@pytest.fixture(scope="module")
def wide():
    """alpha = 4 special primes and 4 digits at the top level (the shape of N = 2^15 with 15
    levels): the unrolled full-group branches of the fused kernels."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ckks.SecurityWarning)
        params = ckks.Parameters(allow_insecure=True, log_n=6, depth=15, dnum=4)
    ctx = ckks.Context(params)
    return ctx, ckks.KeyGenerator(ctx).relin_key().data


@pytest.fixture(scope="module")
def deep():
    """One special prime and 9 one-prime digits (the shape of N = 2^14 with 8 levels): more
    digits than one lazy Montgomery group, so the fused kernels sum several."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ckks.SecurityWarning)
        params = ckks.Parameters(allow_insecure=True, log_n=6, depth=8, dnum=9)
    ctx = ckks.Context(params)
    return ctx, ckks.KeyGenerator(ctx).relin_key().data


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("shape", ["tiny", "wide", "deep"])
@given(seed=seeds, level=st.integers(0, 15), count=st.integers(1, 11), nt=st.booleans())
def test_rotate_ext_many_equals_rotate_ext(request, shape, path, seed, level, count, nt):
    """The batched hoisted kernels equal the one-key form exactly, for any number of keys
    (more than one group of ``basis.HOIST_GROUP`` included), block-structured Galois
    permutations and a random (gather) one mixed, partial and full digit groups, odd and
    even limb counts, with and without non-temporal stores."""
    from ckks.rlwe import keyswitch
    from kernels.automorphism import galois_permutation
    ctx, key = request.getfixturevalue(shape)
    level = min(level, ctx.max_level)
    ks = KeySwitcher(ctx, ifma=(path == "ifma"))
    old = keyswitch.NT_MIN_BYTES
    keyswitch.NT_MIN_BYTES = 0 if nt else 1 << 62
    rng = np.random.default_rng(seed)
    qs = [int(q) for q in ctx.q_all[:level + 1]]
    c0, c1 = edge(rng, qs, ctx.n), edge(rng, qs, ctx.n)
    ext = ks.decompose(c1, level)
    keys, perms = [], []
    for i in range(count):
        # distinct keys: scale the test key's rows by i + 1 (any residues make a valid input)
        kd = key.copy()
        for g in range(kd.shape[2]):
            kd[:, :, g] = kd[:, :, g] * np.uint64(i + 1) % ctx.q_all[g]
        keys.append(kd)
        perms.append(rng.permutation(ctx.n).astype(np.int64) if i == 2
                     else galois_permutation(ctx.n, pow(5, i + 1, 2 * ctx.n)))
    try:
        got = ks.rotate_ext_many(ext, keys, c0, perms, level)
    finally:
        keyswitch.NT_MIN_BYTES = old
    assert len(got) == count
    for i in range(count):
        assert np.array_equal(got[i], ks.rotate_ext(ext, keys[i], c0, perms[i], level))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("level,count", [(15, 8), (14, 5), (12, 2), (3, 4)])
def test_rotate_ext_many_key_pairs(wide, path, level, count):
    """Deterministic cover of the two-keys-per-pass branch (4 full digits, blocked
    permutations, even and odd limb and key counts) against the one-key form."""
    from kernels.automorphism import galois_permutation
    ctx, key = wide
    ks = KeySwitcher(ctx, ifma=(path == "ifma"))
    rng = np.random.default_rng(level * 100 + count)
    qs = [int(q) for q in ctx.q_all[:level + 1]]
    c0, c1 = edge(rng, qs, ctx.n), edge(rng, qs, ctx.n)
    ext = ks.decompose(c1, level)
    keys = []
    for i in range(count):
        kd = key.copy()
        for g in range(kd.shape[2]):
            kd[:, :, g] = kd[:, :, g] * np.uint64(i + 2) % ctx.q_all[g]
        keys.append(kd)
    perms = [galois_permutation(ctx.n, pow(5, i + 1, 2 * ctx.n)) for i in range(count)]
    got = ks.rotate_ext_many(ext, keys, c0, perms, level)
    for i in range(count):
        assert np.array_equal(got[i], ks.rotate_ext(ext, keys[i], c0, perms[i], level))


_COMPILE_FOR_IFMA = '''
import pickle, sys
from numba import types
from hemet.he import _fused
from kernels import basis, ifma_arith, ntt, rescale
u2, u1 = types.Array(types.uint64, 2, "C"), types.Array(types.uint64, 1, "C")
i1, u3 = types.Array(types.int64, 1, "C"), types.Array(types.uint64, 3, "C")
L3, L2, Li = types.ListType(u3), types.ListType(u2), types.ListType(i1)
ntt._forward_ifma_parallel.compile((u2, i1, u1, u2, u2))
ntt._inverse_ifma_parallel.compile((u2, i1, u1, u2, u2, u1, u1, u1, u1))
ntt._forward_signed_ifma.compile((types.Array(types.int64, 2, "C"), i1, u2, u1, u2, u2))
rescale._rescale_rows_ifma.compile((u2, u1, types.uint64, i1, u1, u2, u2, u1, u1, u2, u2))
_fused._mul_add_many_ifma.compile((L3, L2, L3, u1, u1, u1, u1, i1, i1))
_fused._coeff_mul_add_many_ifma.compile((L3, Li, L3, u1, i1, u2, u2, u1, u1, u1, i1, i1))
# the key-switching kernels, with the argument types KeySwitcher's IFMA branch passed them
with open(sys.argv[1], "rb") as f:
    recorded = pickle.load(f)
mods = {"kernels.basis": basis, "kernels.ifma_arith": ifma_arith}
for (mod, name), sigs in sorted(recorded.items()):
    for sig in sigs:
        getattr(mods[mod], name).compile(sig)
print("compiled", len(recorded))
'''


def _record_keyswitch_ifma_signatures(monkeypatch):
    """The argument types of every IFMA kernel that KeySwitcher's IFMA branch calls, from a
    run of each key-switching step with those kernels replaced by recorders (nothing IFMA
    executes; the results are garbage and unused)."""
    import numba
    from numba.core.registry import CPUDispatcher
    from ckks.rlwe import keyswitch
    from kernels import ifma_arith
    from kernels.automorphism import galois_permutation
    seen = {}
    for mod in (basis, ifma_arith):
        for name, f in list(vars(mod).items()):
            if isinstance(f, CPUDispatcher) and (mod is ifma_arith or name.endswith("_ifma")):
                def record(*args, _key=(mod.__name__, name)):
                    seen.setdefault(_key, set()).add(tuple(numba.typeof(a) for a in args))
                monkeypatch.setattr(mod, name, record)
    monkeypatch.setattr(cpu, "HAS_IFMA", True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ckks.SecurityWarning)
        params = ckks.Parameters(allow_insecure=True, log_n=6, depth=15, dnum=4)
    ctx = ckks.Context(params)
    key = ckks.KeyGenerator(ctx).relin_key().data
    ks = KeySwitcher(ctx, ifma=True)
    level = 15
    rng = np.random.default_rng(0)
    c = np.stack([rng.integers(0, int(q), ctx.n, dtype=np.uint64) for q in ctx.q_all[:level + 1]])
    ext = ks.decompose(c, level)
    ks.mod_down(ks.inner_product(ext, key, level), level)
    ks.switch_ext(ext, key, level)
    perms = [galois_permutation(ctx.n, pow(5, i + 1, 2 * ctx.n)) for i in range(5)]
    ks.switch_ext_add(ext, key, level, np.stack([c, c]))
    ks.switch_ext_add(ext, key, level, c[None], perms[0])
    perms[2] = rng.permutation(ctx.n).astype(np.int64)     # not blocked: the plain branch
    ks.rotate_ext_many(ext, [key] * 5, c, perms, level)
    return seen


@pytest.mark.skipif(cpu.HAS_IFMA, reason="this CPU runs the IFMA kernels (the tests above)")
def test_ifma_kernels_compile_for_an_ifma_cpu(tmp_path, monkeypatch):
    """Where the CPU lacks IFMA nothing else compiles the IFMA kernels, yet they inline code
    shared with the portable path (modarith's reductions, the NTT helpers): compile them for
    an IFMA CPU (Ice Lake server), in a subprocess with its own cache: the NTT, rescale and
    fused product entry points, and every kernel the key switcher's IFMA branch calls, with
    the argument types it passes.  Without the explicit features LLVM fails on these kernels
    whatever their code."""
    import os
    import pickle
    import subprocess
    import sys
    recorded = _record_keyswitch_ifma_signatures(monkeypatch)
    assert {("kernels.basis", "modup_prepare_ifma"), ("kernels.basis", "hoisted_finish_ifma"),
            ("kernels.ifma_arith", "key_inner_product")} <= set(recorded)
    sigs = tmp_path / "signatures.pkl"
    sigs.write_bytes(pickle.dumps(recorded))
    features = "+avx512f,+avx512ifma,+avx512vl,+avx512dq,+avx512bw,+avx512cd,+avx2,+fma,+avx,+bmi2"
    env = dict(os.environ, NUMBA_CPU_NAME="icelake-server", NUMBA_CPU_FEATURES=features,
               NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    got = subprocess.run([sys.executable, "-c", _COMPILE_FOR_IFMA, str(sigs)], env=env,
                         capture_output=True, text=True, timeout=900)
    assert got.returncode == 0 and f"compiled {len(recorded)}" in got.stdout, got.stderr[-3000:]
