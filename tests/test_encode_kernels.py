"""Encoding kernels: the batched inverse special FFT against the canonical embedding, batched reduction."""
import warnings

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import ckks


def _ctx(log_n):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ckks.SecurityWarning)
        return ckks.Context(ckks.Parameters(log_n=log_n, depth=2, allow_insecure=True))


@settings(max_examples=20, deadline=None)
@given(st.integers(4, 7), st.integers(0, 2 ** 32 - 1), st.integers(1, 4))
def test_embed_inverse_many_matches_the_definition(log_n, seed, batch):
    """Coefficients c with sum_i c_i zeta^(i 5^j) = v_j for zeta = exp(i pi / N), every slot j."""
    ctx = _ctx(log_n)
    n, slots = ctx.n, ctx.slots
    rng = np.random.default_rng(seed)
    vs = rng.uniform(-1, 1, (batch, slots)) + 1j * rng.uniform(-1, 1, (batch, slots))
    coeffs = ctx.encoder.embed_inverse_many(list(vs))
    assert coeffs.shape == (batch, n) and coeffs.dtype == np.float64
    roots = np.array([pow(5, j, 2 * n) for j in range(slots)])
    vander = np.exp(1j * np.pi * np.outer(roots, np.arange(n)) / n)
    np.testing.assert_allclose(coeffs @ vander.T, vs, atol=1e-9)
    np.testing.assert_array_equal(ctx.encoder.embed_inverse(vs[0]), coeffs[0])


def test_encode_many_equals_encode_each():
    ctx = _ctx(10)
    rng = np.random.default_rng(3)
    vecs = [rng.uniform(-1, 1, ctx.slots) for _ in range(5)] + [rng.uniform(-1, 1, 7)]
    for level in (0, ctx.max_level):
        many = ctx.encoder.encode_many(vecs, level=level, scale=2.0 ** 30)
        for v, pt in zip(vecs, many):
            one = ctx.encoder.encode(v, level=level, scale=2.0 ** 30)
            assert pt.level == one.level == level and pt.scale == one.scale
            np.testing.assert_array_equal(pt.data, one.data)
            np.testing.assert_allclose(np.real(ctx.encoder.decode(pt))[:v.size], v, atol=1e-6)
    assert ctx.encoder.encode_many([], level=0) == []
    with pytest.raises(ValueError):
        ctx.encoder.encode_many([np.zeros(ctx.slots + 1)])
    with pytest.raises(ValueError):
        ctx.encoder.encode_many([np.array([np.nan])])


def test_reduce_signed_rows_matches_python_integers():
    from kernels import modarith
    rng = np.random.default_rng(5)
    q = np.array([(1 << 50) - 27, (1 << 40) + 15, 65537], dtype=np.uint64)
    x = rng.integers(-(2 ** 62), 2 ** 62, (3, 64), dtype=np.int64)
    x[0, :4] = [-(2 ** 62), 2 ** 62, -1, 0]
    out = np.empty((9, 64), dtype=np.uint64)
    modarith.reduce_signed_rows(x, q, out)
    want = [[int(v) % int(p) for v in x[b]] for b in range(3) for p in q]
    assert np.array_equal(out, np.array(want, dtype=np.uint64))
