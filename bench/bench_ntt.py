"""pytest-benchmark suite for the negacyclic NTT (forward and inverse, both kernel families).

Run (short settings; times are per call, divide by `limbs` for per-limb cost)::

    python3 -m pytest bench/bench_ntt.py --benchmark-columns=median,min,rounds \
        --benchmark-sort=name -q

One limb runs the serial kernel; 16 limbs run the prange kernel with 1 or 2 threads.
"""
import functools

import numba
import numpy as np
import pytest
from sympy import isprime

from kernels import cpu, ntt

PATHS = [
    "portable",
    pytest.param("ifma", marks=pytest.mark.skipif(not cpu.HAS_IFMA, reason="CPU lacks IFMA")),
]


@functools.lru_cache(maxsize=None)
def _tables(log_n, count=16):
    n = 1 << log_n
    primes = []
    m = ((1 << 50) - 1) // (2 * n)
    while len(primes) < count:
        p = 1 + m * 2 * n
        if isprime(p):
            primes.append(p)
        m -= 1
    return ntt.make_tables(primes, n)


@pytest.fixture
def nthreads(request):
    old = numba.get_num_threads()
    yield lambda k: cpu.set_num_threads(min(k, numba.config.NUMBA_NUM_THREADS))
    cpu.set_num_threads(old)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("direction", ["forward", "inverse"])
@pytest.mark.parametrize("log_n", [14, 15, 16])
@pytest.mark.parametrize("limbs,threads", [(1, 1), (16, 1), (16, 2)],
                         ids=["1limb", "16limbs-1thr", "16limbs-2thr"])
def test_ntt(benchmark, nthreads, path, direction, log_n, limbs, threads):
    if threads > numba.config.NUMBA_NUM_THREADS:
        pytest.skip(f"only {numba.config.NUMBA_NUM_THREADS} threads available")
    nthreads(threads)
    t = _tables(log_n)
    fn = getattr(ntt, f"{direction}_{path}")
    rng = np.random.default_rng(0)
    rows = np.arange(limbs, dtype=np.int64)
    a = np.stack([rng.integers(0, int(t.q[r]), t.w_fwd.shape[1], dtype=np.uint64) for r in rows])
    fn(a, rows, t)  # compile / warm up
    benchmark.extra_info.update(limbs=limbs, threads=threads, n=t.w_fwd.shape[1])
    benchmark.pedantic(fn, args=(a, rows, t), rounds=40 if limbs == 1 else 8,
                       iterations=1, warmup_rounds=2)


@pytest.mark.parametrize("inputs", ["below-2^51", "wide"])
@pytest.mark.parametrize("limbs,threads", [(16, 1), (16, 2)], ids=["16limbs-1thr", "16limbs-2thr"])
def test_forward_signed(benchmark, nthreads, inputs, limbs, threads):
    """Signed coefficients to NTT form (encoding, compact plaintexts), N = 2^15, 4 vectors:
    below 2^51 the portable transform reads them as they are; "wide" ones (up to 2^62) are
    reduced first, as every input was before session 13.  On the IFMA path both reduce."""
    if threads > numba.config.NUMBA_NUM_THREADS:
        pytest.skip(f"only {numba.config.NUMBA_NUM_THREADS} threads available")
    nthreads(threads)
    t = _tables(15)
    rng = np.random.default_rng(0)
    top = 2 ** 45 if inputs == "below-2^51" else 2 ** 62
    x = rng.integers(-top, top, (4, t.w_fwd.shape[1]), dtype=np.int64)
    rows = np.arange(limbs, dtype=np.int64)
    out = np.empty((4 * limbs, t.w_fwd.shape[1]), np.uint64)
    ntt.forward_signed(x, rows, t, out)  # compile / warm up
    benchmark.extra_info.update(limbs=limbs, threads=threads, vectors=4, direct=ntt.fits_direct(x))
    benchmark.pedantic(ntt.forward_signed, args=(x, rows, t, out), rounds=8, iterations=1,
                       warmup_rounds=2)
