import math
import warnings

import pytest
from sympy import isprime

import ckks
from ckks.params import MAX_LOG_QP_128


def test_security_table_is_the_he_standard():
    assert MAX_LOG_QP_128 == {10: 27, 11: 54, 12: 109, 13: 218, 14: 438, 15: 881, 16: 1772, 17: 3544}


@pytest.mark.parametrize("depth", [0, 1, 2, 4, 6, 9, 12, 16, 24])
def test_depth_picks_the_smallest_secure_ring(depth):
    p = ckks.Parameters(depth=depth)
    assert p.log_qp <= MAX_LOG_QP_128[p.log_n]
    assert len(p.q) == depth + 1
    # no smaller ring degree has a secure digit count for this chain
    for log_n in range(10, p.log_n):
        for dnum in range(1, depth + 2):
            with pytest.raises(ckks.SecurityError):
                ckks.Parameters(log_n=log_n, depth=depth, dnum=dnum)


def test_primes_are_ntt_friendly_distinct_and_deterministic():
    p = ckks.Parameters(log_n=14, depth=6)
    primes = p.q + p.p
    assert len(set(primes)) == len(primes)
    for x in primes:
        assert isprime(x) and x % (2 * p.n) == 1 and x < 2 ** 50
    assert p.q[0].bit_length() == p.first_bits
    for x in p.q[1:]:
        assert abs(math.log2(x) - p.scale_bits) < 0.01
    assert ckks.Parameters(log_n=14, depth=6).q == p.q
    assert ckks.Parameters(log_n=14, depth=6).fingerprint() == p.fingerprint()
    assert ckks.Parameters(log_n=14, depth=5).fingerprint() != p.fingerprint()


def test_insecure_raises_unless_opted_out_with_a_warning():
    with pytest.raises(ckks.SecurityError, match="128-bit"):
        ckks.Parameters(log_n=12, depth=4)
    with pytest.warns(ckks.SecurityWarning):
        p = ckks.Parameters(log_n=12, depth=4, allow_insecure=True)
    assert p.log_qp > MAX_LOG_QP_128[12]
    with pytest.raises(ckks.SecurityError):
        ckks.Parameters(depth=200)


@pytest.mark.parametrize("kw", [dict(depth=-1), dict(scale_bits=60), dict(log_n=18, depth=2),
                                dict(depth=3, dnum=9), dict(scale_bits=45, first_bits=40)])
def test_bad_arguments(kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError):
            ckks.Parameters(**kw)


def test_dnum_and_special_primes():
    p = ckks.Parameters(log_n=15, depth=15, dnum=4)
    assert p.alpha == 4 and len(p.p) == 4
    assert p.log_qp <= 881
    with pytest.raises(ckks.SecurityError):
        ckks.Parameters(log_n=15, depth=15, dnum=1)
