"""Negacyclic NTT kernels against exact Python-integer references, both kernel families."""
import functools
import os
import re
import subprocess
import sys

import numba
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sympy import isprime

from kernels import cpu, ntt

PATHS = [
    "portable",
    pytest.param("ifma", marks=pytest.mark.skipif(
        not cpu.HAS_IFMA, reason="CPU lacks AVX-512 IFMA (avx512ifma); portable path only")),
]


def kernels(path):
    return getattr(ntt, "forward_" + path), getattr(ntt, "inverse_" + path)


@functools.lru_cache(maxsize=None)
def ntt_primes(n, count, top_bits=50):
    """The `count` largest primes p < 2^top_bits with p = 1 mod 2n."""
    out = []
    m = ((1 << top_bits) - 1) // (2 * n)
    while len(out) < count:
        p = 1 + m * 2 * n
        if isprime(p):
            out.append(p)
        m -= 1
    return tuple(out)


@functools.lru_cache(maxsize=None)
def tables(n, count=3, top_bits=50):
    return ntt.make_tables(list(ntt_primes(n, count, top_bits)), n)


def bitrev(j, log_n):
    return int(format(j, f"0{log_n}b")[::-1], 2) if log_n else 0


def ref_forward(coeffs, q, psi):
    """out[j] = sum_i a[i] psi^(i (2 bitrev(j) + 1)) mod q, O(N^2) with Python ints."""
    n = len(coeffs)
    log_n = n.bit_length() - 1
    pw = [pow(psi, e, q) for e in range(2 * n)]
    out = []
    for j in range(n):
        e = 2 * bitrev(j, log_n) + 1
        out.append(sum(int(c) * pw[(i * e) % (2 * n)] for i, c in enumerate(coeffs)) % q)
    return out


def negacyclic_mul(a, b, q):
    n = len(a)
    out = [0] * n
    for i, x in enumerate(a):
        x = int(x)
        if x == 0:
            continue
        for j, y in enumerate(b):
            k = i + j
            if k < n:
                out[k] += x * int(y)
            else:
                out[k - n] -= x * int(y)
    return [v % q for v in out]


def random_poly(rng, t, rows, mode="random"):
    n = t.w_fwd.shape[1]
    a = np.empty((len(rows), n), dtype=np.uint64)
    for r, p in enumerate(rows):
        q = int(t.q[p])
        if mode == "zero":
            a[r] = 0
        elif mode == "max":
            a[r] = q - 1
        else:
            a[r] = rng.integers(0, q, n, dtype=np.uint64)
            if mode == "edges":  # sprinkle 0 and q - 1
                a[r, rng.random(n) < 0.3] = q - 1
                a[r, rng.random(n) < 0.2] = 0
    return a


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request, monkeypatch):
    """One thread (serial kernels) or all threads with the prange kernels forced on."""
    old = numba.get_num_threads()
    want = min(request.param, numba.config.NUMBA_NUM_THREADS)
    cpu.set_num_threads(want)
    if want > 1:
        monkeypatch.setattr(ntt, "PARALLEL_MIN_ELEMENTS", 0)
    yield want
    cpu.set_num_threads(old)


def test_parallel_kernels_are_used_when_forced(monkeypatch):
    """The prange kernels give the same result as the serial ones."""
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("one thread only")
    monkeypatch.setattr(ntt, "PARALLEL_MIN_ELEMENTS", 0)
    t = tables(256)
    rows = np.array([2, 0, 1, 1, 0], dtype=np.int64)
    a = random_poly(np.random.default_rng(9), t, rows, "edges")
    for path in ("portable", "ifma") if cpu.HAS_IFMA else ("portable",):
        fwd, inv = kernels(path)
        b = a.copy()
        fwd(b, rows, t)
        c = a.copy()
        cpu.set_num_threads(1)
        try:
            fwd(c, rows, t)
        finally:
            cpu.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        assert np.array_equal(b, c)
        inv(b, rows, t)
        assert np.array_equal(b, a)
        with pytest.raises(ValueError, match="rows out of range"):
            fwd(b, np.array([0, 1, 2, 3, 0]), t)
        with pytest.raises(ValueError, match="rows out of range"):
            inv(b, np.array([0, 1, -2, 0, 0]), t)


# ---------------------------------------------------------------------------------------------
# exact references
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("log_n", [4, 5, 6, 7, 8])
def test_forward_matches_reference(path, log_n, threads):
    n = 1 << log_n
    t = tables(n)
    fwd, inv = kernels(path)
    rows = np.array([2, 0], dtype=np.int64)
    rng = np.random.default_rng(log_n)
    a = random_poly(rng, t, rows, "edges")
    orig = a.copy()
    fwd(a, rows, t)
    for r, p in enumerate(rows):
        q, psi = int(t.q[p]), int(t.psi[p])
        assert a[r].tolist() == ref_forward(orig[r].tolist(), q, psi), (r, p)
    inv(a, rows, t)
    assert np.array_equal(a, orig)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("log_n", [4, 6, 7])
def test_negacyclic_convolution(path, log_n):
    n = 1 << log_n
    t = tables(n)
    fwd, inv = kernels(path)
    rows = np.array([1, 2, 0], dtype=np.int64)
    rng = np.random.default_rng(100 + log_n)
    a = random_poly(rng, t, rows, "edges")
    b = random_poly(rng, t, rows)
    want = [negacyclic_mul(a[r].tolist(), b[r].tolist(), int(t.q[p])) for r, p in enumerate(rows)]
    fa, fb = a.copy(), b.copy()
    fwd(fa, rows, t)
    fwd(fb, rows, t)
    prod = np.empty_like(fa)
    for r, p in enumerate(rows):
        q = int(t.q[p])
        prod[r] = [(int(x) * int(y)) % q for x, y in zip(fa[r], fb[r])]
    inv(prod, rows, t)
    for r in range(len(rows)):
        assert prod[r].tolist() == want[r]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("log_n", [9, 11, 13])
def test_multiplication_by_x_and_linearity(path, log_n):
    """fwd(X a) = omega_j fwd(a) with omega_j = psi^(2 bitrev(j) + 1); fwd is linear."""
    n = 1 << log_n
    t = tables(n)
    fwd, inv = kernels(path)
    rows = np.array([2, 0], dtype=np.int64)
    rng = np.random.default_rng(log_n)
    a = random_poly(rng, t, rows, "edges")
    b = random_poly(rng, t, rows)
    xa = np.empty_like(a)
    for r, p in enumerate(rows):
        q = int(t.q[p])
        xa[r, 1:] = a[r, :-1]
        xa[r, 0] = (q - int(a[r, -1])) % q
    s = np.empty_like(a)
    for r, p in enumerate(rows):
        s[r] = (a[r] + b[r]) % t.q[p]      # < 2^51: no overflow
    fa, fb, fxa, fs = a.copy(), b.copy(), xa.copy(), s.copy()
    for arr in (fa, fb, fxa, fs):
        fwd(arr, rows, t)
        assert all(int(arr[r].max()) < int(t.q[p]) for r, p in enumerate(rows))
    for r, p in enumerate(rows):
        q, psi = int(t.q[p]), int(t.psi[p])
        omega = [pow(psi, 2 * bitrev(j, log_n) + 1, q) for j in range(n)]
        assert [(int(x) * w) % q for x, w in zip(fa[r], omega)] == fxa[r].tolist()
        assert np.array_equal((fa[r] + fb[r]) % t.q[p], fs[r])
    inv(fxa, rows, t)
    assert np.array_equal(fxa, xa)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("log_n", [4, 5, 10, 13, 14, 15, 16, 17])
def test_round_trip_all_sizes(path, log_n, threads):
    n = 1 << log_n
    t = tables(n, 3)
    fwd, inv = kernels(path)
    rows = np.array([2, 0, 1, 2], dtype=np.int64)
    rng = np.random.default_rng(7 * log_n)
    a = random_poly(rng, t, rows, "edges")
    orig = a.copy()
    fwd(a, rows, t)
    assert all(int(a[r].max()) < int(t.q[p]) for r, p in enumerate(rows))
    inv(a, rows, t)
    assert np.array_equal(a, orig)


@pytest.mark.parametrize("log_n", [4, 7, 12, 16])
def test_paths_agree(log_n):
    """Both families give bit-identical results, forward and inverse (IFMA CPUs only)."""
    if not cpu.HAS_IFMA:
        pytest.skip("CPU lacks AVX-512 IFMA (avx512ifma); nothing to compare against")
    n = 1 << log_n
    t = tables(n)
    rows = np.array([0, 2, 1], dtype=np.int64)
    rng = np.random.default_rng(log_n)
    a = random_poly(rng, t, rows, "edges")
    b = a.copy()
    ntt.forward_portable(a, rows, t)
    ntt.forward_ifma(b, rows, t)
    assert np.array_equal(a, b)
    c = random_poly(rng, t, rows, "edges")
    d = c.copy()
    ntt.inverse_portable(c, rows, t)
    ntt.inverse_ifma(d, rows, t)
    assert np.array_equal(c, d)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("mode", ["zero", "max"])
def test_edge_values(path, mode):
    n = 64
    t = tables(n)
    fwd, inv = kernels(path)
    rows = np.array([0], dtype=np.int64)
    a = random_poly(None, t, rows, mode)
    orig = a.copy()
    q, psi = int(t.q[0]), int(t.psi[0])
    fwd(a, rows, t)
    assert a[0].tolist() == ref_forward(orig[0].tolist(), q, psi)
    inv(a, rows, t)
    assert np.array_equal(a, orig)
    # inverse of the all-(q-1) evaluation vector (inputs at the top of the range)
    e = np.full((1, n), q - 1, dtype=np.uint64)
    inv(e, rows, t)
    assert int(e.max()) < q
    fwd(e, rows, t)
    assert np.all(e == q - 1)


@pytest.mark.parametrize("path", PATHS)
def test_small_primes(path):
    """Primes far below 2^50 (about 2^30) work too."""
    n = 256
    t = tables(n, 2, 31)
    fwd, inv = kernels(path)
    rows = np.array([1, 0], dtype=np.int64)
    rng = np.random.default_rng(3)
    a = random_poly(rng, t, rows, "edges")
    orig = a.copy()
    fwd(a, rows, t)
    for r, p in enumerate(rows):
        assert a[r].tolist() == ref_forward(orig[r].tolist(), int(t.q[p]), int(t.psi[p]))
    inv(a, rows, t)
    assert np.array_equal(a, orig)


# ---------------------------------------------------------------------------------------------
# hypothesis
# ---------------------------------------------------------------------------------------------

@st.composite
def ntt_case(draw):
    log_n = draw(st.integers(4, 7))
    k = draw(st.integers(1, 4))
    rows = draw(st.lists(st.integers(0, 2), min_size=k, max_size=k))
    mode = draw(st.sampled_from(["random", "edges", "zero", "max"]))
    seed = draw(st.integers(0, 2**32 - 1))
    return log_n, np.array(rows, dtype=np.int64), mode, seed


@pytest.mark.parametrize("path", PATHS)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=ntt_case())
def test_hypothesis_reference(path, case):
    log_n, rows, mode, seed = case
    t = tables(1 << log_n)
    fwd, inv = kernels(path)
    a = random_poly(np.random.default_rng(seed), t, rows, mode)
    orig = a.copy()
    fwd(a, rows, t)
    for r, p in enumerate(rows):
        assert a[r].tolist() == ref_forward(orig[r].tolist(), int(t.q[p]), int(t.psi[p]))
    inv(a, rows, t)
    assert np.array_equal(a, orig)


@pytest.mark.parametrize("path", PATHS)
@settings(max_examples=15, deadline=None)
@given(log_n=st.integers(8, 13), seed=st.integers(0, 2**32 - 1),
       mode=st.sampled_from(["random", "edges"]), k=st.integers(1, 3))
def test_hypothesis_round_trip(path, log_n, seed, mode, k):
    t = tables(1 << log_n)
    fwd, inv = kernels(path)
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, 3, k).astype(np.int64)
    a = random_poly(rng, t, rows, mode)
    orig = a.copy()
    fwd(a, rows, t)
    assert all(int(a[r].max()) < int(t.q[p]) for r, p in enumerate(rows))
    inv(a, rows, t)
    assert np.array_equal(a, orig)


# ---------------------------------------------------------------------------------------------
# tables, dispatch, validation
# ---------------------------------------------------------------------------------------------

def test_tables_fields():
    n = 32
    primes = list(ntt_primes(n, 3))[::-1]
    t = ntt.make_tables(primes, n)
    assert t.q.dtype == np.uint64 and t.q.tolist() == primes
    assert t.psi.dtype == np.uint64 and t.psi.shape == (3,)
    for q, psi in zip(primes, t.psi.tolist()):
        assert pow(psi, n, q) == q - 1          # primitive 2n-th root (2n is a power of two)


@pytest.mark.parametrize("q,n", [(97, 16), (193, 32), (7681, 256), (12289, 512), (40961, 16)])
def test_psi_is_smallest_primitive_root(q, n):
    t = ntt.make_tables([q], n)
    psi = int(t.psi[0])
    roots = [x for x in range(1, q) if pow(x, n, q) == q - 1]
    assert psi == min(roots)


def test_psi_deterministic():
    n = 1024
    p = list(ntt_primes(n, 2))
    t1 = ntt.make_tables(p, n)
    t2 = ntt.make_tables(p[::-1], n)
    assert t1.psi.tolist() == t2.psi.tolist()[::-1]


@pytest.mark.parametrize("primes,n,msg", [
    ([97], 24, "power of two"),
    ([97], 8, "2^4"),
    ([97], 1 << 18, "2^4"),
    ([97], 0, "power of two"),
    ([97], 16.5, "power of two"),
    ([], 16, "non-empty"),
    ([97, 97], 16, "distinct"),
    ([225], 16, "not prime"),                   # 225 = 15^2 = 1 mod 32
    ([1089], 16, "not prime"),                  # 33^2
    ([101], 16, "1 mod 2N"),
    ([(1 << 50) + 1], 16, "2^50"),
    ([1], 16, "(2, 2^50)"),
    (["x"], 16, "integers"),
    ([97.5], 16, "not an integer"),
])
def test_make_tables_validation(primes, n, msg):
    with pytest.raises(ValueError, match=re.escape(msg)):
        ntt.make_tables(primes, n)


@pytest.mark.parametrize("path", PATHS)
def test_call_validation(path):
    t = tables(16)
    fwd, _ = kernels(path)
    with pytest.raises(TypeError):
        fwd(np.zeros((1, 16), dtype=np.int64), np.zeros(1, np.int64), t)
    with pytest.raises(ValueError):
        fwd(np.zeros((1, 32), dtype=np.uint64), np.zeros(1, np.int64), t)
    with pytest.raises(ValueError):
        fwd(np.zeros((2, 16), dtype=np.uint64), np.zeros(1, np.int64), t)
    with pytest.raises(ValueError, match="rows out of range"):
        fwd(np.zeros((1, 16), dtype=np.uint64), np.array([3]), t)
    with pytest.raises(ValueError, match="rows out of range"):
        fwd(np.zeros((1, 16), dtype=np.uint64), np.array([-1]), t)
    a = np.zeros((1, 16), dtype=np.uint64)
    fwd(a, [2], t)                        # any integer sequence is accepted as rows
    assert not a.any()
    with pytest.raises(ValueError):
        fwd(np.zeros((16, 2), dtype=np.uint64).T, np.zeros(2, np.int64), t)


def test_default_dispatch():
    want = "ifma" if cpu.USE_IFMA else "portable"
    assert ntt.ACTIVE_PATH == want
    assert ntt.forward is getattr(ntt, "forward_" + want)
    assert ntt.inverse is getattr(ntt, "inverse_" + want)


def test_portable_env_forces_portable_path():
    code = ("import kernels.ntt as m, kernels.cpu as c; "
            "assert m.ACTIVE_PATH == 'portable' and not c.USE_IFMA; "
            "assert m.forward is m.forward_portable and m.inverse is m.inverse_portable; "
            "print('ok')")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, HEMET_PORTABLE="1")
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_ifma_entry_points_refuse_without_ifma(monkeypatch):
    """On a CPU without IFMA the IFMA kernels are never compiled or called."""
    monkeypatch.setattr(ntt, "HAS_IFMA", False)
    t = tables(16)
    a = np.zeros((1, 16), dtype=np.uint64)
    with pytest.raises(RuntimeError, match="IFMA"):
        ntt.forward_ifma(a, np.zeros(1, np.int64), t)
    with pytest.raises(RuntimeError, match="IFMA"):
        ntt.inverse_ifma(a, np.zeros(1, np.int64), t)


def test_tables_subset_by_fancy_index():
    t = tables(64)
    sub = ntt.NTTTables(*(f[[2, 0]] for f in t))
    rows = np.array([0, 1], dtype=np.int64)
    a = random_poly(np.random.default_rng(5), t, np.array([2, 0]), "random")
    b = a.copy()
    ntt.forward(a, np.array([2, 0]), t)
    ntt.forward(b, rows, sub)
    assert np.array_equal(a, b)


@pytest.mark.parametrize("cpu_name, features", [
    ("haswell", "+avx,+avx2,+fma,+sse4.2,+popcnt,+bmi,+bmi2"),   # AVX2 + FMA, no AVX-512
    ("x86-64", "+sse2,-sse4.1,-avx,-fma"),   # the baseline: SSE2 only, fma and rint by libm
])
def test_portable_path_on_other_targets(cpu_name, features):
    """The portable kernels compiled for CPUs without AVX-512 are exact: their four-lane
    vectors are generic LLVM IR, split into two SSE2 registers or calls where AVX is absent."""
    code = r"""
import numpy as np
from kernels import ntt
from sympy import isprime
for n in (16, 64, 1024):
    ps, m = [], ((1 << 50) - 1) // (2 * n)
    while len(ps) < 2:
        if isprime(1 + m * 2 * n):
            ps.append(1 + m * 2 * n)
        m -= 1
    t = ntt.make_tables(ps, n)
    rows = np.array([1, 0])
    rng = np.random.default_rng(n)
    a = np.stack([rng.integers(0, ps[r], n, dtype=np.uint64) for r in rows])
    a[:, :5] = np.array(ps)[rows, None] - 1
    orig = a.copy()
    ntt.forward_portable(a, rows, t)
    if n == 16:
        q, psi = ps[1], int(t.psi[1])
        br = [int(format(j, '04b')[::-1], 2) for j in range(n)]
        ref = [sum(int(c) * pow(psi, i * (2 * br[j] + 1), q) for i, c in enumerate(orig[0])) % q
               for j in range(n)]
        assert a[0].tolist() == ref
    ntt.inverse_portable(a, rows, t)
    assert np.array_equal(a, orig)
print('ok')
"""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, HEMET_PORTABLE="1", NUMBA_CPU_NAME=cpu_name,
               NUMBA_CPU_FEATURES=features)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "ok"


@pytest.mark.parametrize("path", PATHS)
def test_tiny_primes(path):
    """Primes of a few bits (97, 193, 12289) through both kernel families."""
    fwd, inv = kernels(path)
    for primes, n in (([97, 193], 16), ([12289, 7681], 256)):
        t = ntt.make_tables(primes, n)
        rows = np.array([1, 0], dtype=np.int64)
        a = random_poly(np.random.default_rng(n), t, rows, "edges")
        orig = a.copy()
        fwd(a, rows, t)
        for r, p in enumerate(rows):
            assert a[r].tolist() == ref_forward(orig[r].tolist(), int(t.q[p]), int(t.psi[p]))
        inv(a, rows, t)
        assert np.array_equal(a, orig)


@pytest.mark.parametrize("path", PATHS)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(log_n=st.integers(4, 6), b=st.integers(1, 3),
       rows=st.lists(st.integers(0, 2), min_size=1, max_size=3),
       bound=st.sampled_from(["direct", "edge", "wide"]), seed=st.integers(0, 2 ** 32 - 1))
def test_forward_signed_matches_reference(path, log_n, b, rows, bound, seed):
    """NTT of signed coefficients reduced per row: straight into the transform below
    SIGNED_DIRECT (its edges +-(2^51 - 1) planted), reduced first up to int64's ends."""
    n = 1 << log_n
    t = tables(n)
    rng = np.random.default_rng(seed)
    top = {"direct": 2 ** 40, "edge": ntt.SIGNED_DIRECT - 1, "wide": 2 ** 63 - 1}[bound]
    x = rng.integers(-top, top, (b, n), dtype=np.int64, endpoint=True)
    x[:, :2] = [top, -top]
    if bound == "wide":
        x[0, 2] = -2 ** 63
    out = np.empty((b * len(rows), n), np.uint64)
    ntt.forward_signed(x, np.array(rows), t, out, ifma=path == "ifma")
    for r in range(out.shape[0]):
        q, psi = int(t.q[rows[r % len(rows)]]), int(t.psi[rows[r % len(rows)]])
        assert out[r].tolist() == ref_forward([int(c) % q for c in x[r // len(rows)]], q, psi)


def test_forward_signed_refuses_bad_arguments():
    t = tables(16)
    out = np.empty((2, 16), np.uint64)
    with pytest.raises(TypeError, match="int64"):
        ntt.forward_signed(np.zeros((1, 16), np.uint64), np.arange(2), t, out)
    with pytest.raises(ValueError, match="rows"):
        ntt.forward_signed(np.zeros((1, 16), np.int64), np.arange(3), t, out)
    with pytest.raises(ValueError, match="rows out of range"):
        ntt.forward_signed(np.zeros((1, 16), np.int64), np.array([0, 7]), t, out, ifma=False)
