"""Samplers: distributions and that randomness comes from the OS."""
import numpy as np
import pytest

from ckks.ring import sampling

N = 1 << 16


def test_gaussian_moments_and_tail():
    e = sampling.gaussian(sampling.new_seed(), N)
    assert e.dtype == np.int64
    assert abs(e.mean()) < 0.06          # ~4 standard errors of 3.2/sqrt(N)
    assert 3.1 < e.std() < 3.3
    assert np.abs(e).max() <= 61
    # discrete Gaussian shape: P(0)/P(1) = exp(1/(2 sigma^2))
    ratio = np.mean(e == 0) / np.mean(np.abs(e) == 1) * 2
    assert ratio == pytest.approx(np.exp(1 / (2 * 3.2 ** 2)), rel=0.08)


def test_ternary_is_uniform_on_minus_one_zero_one():
    t = sampling.ternary(sampling.new_seed(), N)
    assert set(np.unique(t).tolist()) == {-1, 0, 1}
    freq = np.bincount(t + 1) / N
    assert np.all(np.abs(freq - 1 / 3) < 0.01)


def test_uniform_mod_range_and_balance():
    primes = [(1 << 50) - 27, 65537, 12289]
    u = sampling.uniform_mod(sampling.new_seed(), primes, N)
    for row, q in zip(u, primes):
        assert row.max() < q
        # mean of U[0, q) is (q-1)/2 with standard error q/sqrt(12 N)
        assert abs(row.astype(np.float64).mean() / q - 0.5) < 5 / np.sqrt(12 * N)


def test_same_seed_same_stream_and_fresh_seeds_differ():
    s = sampling.new_seed()
    assert len(s) == 32
    assert np.array_equal(sampling.gaussian(s, 64), sampling.gaussian(s, 64))
    assert not np.array_equal(sampling.gaussian(s, 1024), sampling.gaussian(sampling.new_seed(), 1024))


def test_seeds_come_from_the_os(monkeypatch):
    calls = []
    real = sampling.secrets.token_bytes

    def spy(n):
        calls.append(n)
        return real(n)

    monkeypatch.setattr(sampling.secrets, "token_bytes", spy)
    sampling.new_seed()
    assert calls == [32]


def test_uniform_mod_hits_every_residue_equally():
    """Small primes make any bias of the reduction visible: every residue class near 1/q."""
    n = 1 << 16
    for q in (17, 257, 65537):
        u = sampling.uniform_mod(sampling.new_seed(), [q], n)[0]
        assert u.max() < q
        if q <= 257:
            freq = np.bincount(u.astype(np.int64), minlength=q) / n
            sd = np.sqrt((1 / q) * (1 - 1 / q) / n)
            assert np.all(np.abs(freq - 1 / q) < 5 * sd)
        else:  # too many classes for counts: halves of the range instead
            assert abs(np.mean(u < q // 2) - (q // 2) / q) < 5 * 0.5 / np.sqrt(n)
