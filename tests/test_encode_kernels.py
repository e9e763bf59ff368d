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


@settings(max_examples=25, deadline=None)
@given(st.integers(4, 7), st.integers(0, 2 ** 32 - 1), st.integers(1, 3),
       st.sampled_from([1.0, 2.0 ** 20, 2.0 ** 40, 2.0 ** 61, 2.0 ** 80, 2.0 ** 1020]),
       st.sampled_from([1e-3, 1.0, 1e6]))
def test_special_fft_inv_round_is_numpys_round_of_the_fft(log_n, seed, batch, scale, mag):
    """Bit for bit NumPy's round(special_fft_inv(v) * scale) cast to int64 wherever every
    coefficient is below 2^62; otherwise it reports a maximum at or past 2^62 (inf where the
    product overflows), so the caller takes the exact path."""
    from kernels.fft import LIMIT, special_fft_inv, special_fft_inv_round
    ctx = _ctx(log_n)
    e, slots = ctx.encoder, ctx.slots
    rng = np.random.default_rng(seed)
    v = (rng.uniform(-1, 1, (batch, slots)) + 1j * rng.uniform(-1, 1, (batch, slots))) * mag
    c = np.empty_like(v)
    special_fft_inv(v.copy(), e._w_inv, e._brv, c)
    with np.errstate(over="ignore", invalid="ignore"):
        want = np.round(np.concatenate([c.real, c.imag], axis=1) * scale)
    out = np.empty((batch, ctx.n), dtype=np.int64)
    top = special_fft_inv_round(v.copy(), e._w_inv, e._brv, scale, out)
    wmax = np.max(np.abs(want))
    if wmax < LIMIT:
        assert top == wmax
        np.testing.assert_array_equal(out, want.astype(np.int64))
    else:
        assert top >= LIMIT and (np.isfinite(wmax) or top == np.inf)


def test_encode_many_past_int64_takes_the_exact_path():
    """Coefficients near 2^70 (scale 2^70): encoded through Python integers, decoded back."""
    ctx = _ctx(10)
    level = ctx.max_level
    assert ctx.log_q(level) > 72
    rng = np.random.default_rng(8)
    vecs = [rng.uniform(-1, 1, ctx.slots) for _ in range(2)]
    pts = ctx.encoder.encode_many(vecs, level=level, scale=2.0 ** 70)
    for v, pt in zip(vecs, pts):
        np.testing.assert_allclose(np.real(ctx.encoder.decode(pt)), v, atol=1e-9)
        want = ctx.encoder.coeffs_to_rns(np.round(ctx.encoder.embed_inverse(v) * 2.0 ** 70),
                                         ctx.q_rows(level))
        ctx.ntt(want, ctx.q_rows(level))
        np.testing.assert_array_equal(pt.data, want)


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


def test_encode_many_into_a_given_buffer():
    ctx = _ctx(10)
    rng = np.random.default_rng(4)
    vecs = [rng.uniform(-1, 1, ctx.slots) for _ in range(3)]
    level = ctx.max_level
    k = level + 1
    buf = np.full(3 * k * ctx.n + 5, 7, dtype=np.uint64)
    got = ctx.encoder.encode_many(vecs, level=level, scale=2.0 ** 30, out=buf[: 3 * k * ctx.n])
    for v, pt in zip(vecs, got):
        assert np.shares_memory(pt.data, buf)
        np.testing.assert_array_equal(pt.data, ctx.encoder.encode(v, level=level, scale=2.0 ** 30).data)
    assert np.all(buf[3 * k * ctx.n:] == 7)  # nothing written past the batch
    for bad in (np.empty(3 * k * ctx.n, np.int64), np.empty(3 * k * ctx.n - 1, np.uint64),
                np.empty(2 * 3 * k * ctx.n, np.uint64)[::2]):
        with pytest.raises(ValueError, match="out must be"):
            ctx.encoder.encode_many(vecs, level=level, scale=2.0 ** 30, out=bad)


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
