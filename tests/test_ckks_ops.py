"""Every homomorphic operation against plaintext arithmetic."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import ckks

seeds = st.integers(0, 2 ** 32 - 1)


def bits(got, expect):
    err = np.max(np.abs(np.asarray(got) - np.asarray(expect)))
    return np.inf if err == 0 else -np.log2(err)


def vec(seed, n, complex_=False):
    rng = np.random.default_rng(seed)
    v = rng.uniform(-1, 1, n)
    if complex_:
        v = v + 1j * rng.uniform(-1, 1, n)
    return v


# -- encoder ------------------------------------------------------------------------------
def test_special_fft_is_the_canonical_embedding(small):
    enc, n = small.ctx.encoder, small.ctx.n
    rng = np.random.default_rng(0)
    coeffs = rng.normal(size=n)
    zeta = np.exp(1j * np.pi / n)
    roots = zeta ** np.array([pow(5, j, 2 * n) for j in range(n // 2)])
    naive = np.array([np.sum(coeffs * r ** np.arange(n)) for r in roots])
    assert np.allclose(enc.embed(coeffs), naive, atol=1e-9)
    assert np.allclose(enc.embed_inverse(naive), coeffs, atol=1e-9)


@given(seeds, st.integers(0, 4), st.sampled_from([20.0, 30.0, 45.0]))
def test_encode_decode_at_any_level_and_scale(small, seed, level, log_scale):
    z = vec(seed, small.ctx.slots, complex_=True)
    pt = small.ctx.encoder.encode(z, level=level, scale=2 ** log_scale)
    assert pt.level == level and pt.data.shape == (level + 1, small.ctx.n)
    assert bits(small.ctx.encoder.decode(pt), z) > log_scale - 12


def test_encode_rejects_bad_input(small):
    enc = small.ctx.encoder
    with pytest.raises(ValueError):
        enc.encode(np.zeros(small.ctx.slots + 1))
    with pytest.raises(ValueError):
        enc.encode([np.nan])
    with pytest.raises(ValueError):
        enc.encode([1.0], level=99)


def test_encode_beyond_int64_coefficients(small):
    z = vec(1, 8)
    pt = small.ctx.encoder.encode(z * 1000, scale=2 ** 60)
    assert bits(small.ctx.encoder.decode(pt)[:8].real, z * 1000) > 30


# -- encryption ---------------------------------------------------------------------------
@given(seeds)
def test_encrypt_decrypt_precision(secure13, seed):
    z = vec(seed, secure13.ctx.slots)
    assert bits(secure13.decryptor.decrypt(secure13.encryptor.encrypt(z)), z) >= 22
    assert bits(secure13.decryptor.decrypt(secure13.sym_encryptor.encrypt(z)), z) >= 22


def test_encryption_is_randomized(small):
    a = small.encryptor.encrypt([0.5])
    b = small.encryptor.encrypt([0.5])
    assert not np.array_equal(a.data, b.data)


def test_fresh_secret_keys_differ_and_are_ternary(small):
    ctx = small.ctx
    s = small.keygen.secret_key.data[:1].copy()
    ctx.intt(s, ctx.q_rows(0))
    q0 = int(ctx.q_all[0])
    assert set(np.unique(s).tolist()) <= {0, 1, q0 - 1}
    other = ckks.KeyGenerator(ctx).secret_key.data
    assert not np.array_equal(other, small.keygen.secret_key.data)


# -- addition -----------------------------------------------------------------------------
@given(seeds)
def test_add_sub_negate(small, seed):
    x, y = vec(seed, small.ctx.slots), vec(seed + 1, small.ctx.slots)
    ev, e, d = small.evaluator, small.encryptor, small.decryptor
    cx, cy = e.encrypt(x), e.encrypt(y)
    py = small.ctx.encoder.encode(y)
    c = float(np.random.default_rng(seed).uniform(-3, 3))
    assert bits(d.decrypt(ev.add(cx, cy)), x + y) > 18
    assert bits(d.decrypt(ev.sub(cx, cy)), x - y) > 18
    assert bits(d.decrypt(ev.add(cx, py)), x + y) > 18
    assert bits(d.decrypt(ev.sub(cx, py)), x - y) > 18
    assert bits(d.decrypt(ev.add(cx, y)), x + y) > 18
    assert bits(d.decrypt(ev.add(cx, c)), x + c) > 18
    assert bits(d.decrypt(ev.sub(cx, c)), x - c) > 18
    assert bits(d.decrypt(ev.negate(cx)), -x) > 18


# -- multiplication -----------------------------------------------------------------------
@given(seeds)
def test_multiply_relinearize_rescale_precision(secure13, seed):
    x, y = vec(seed, secure13.ctx.slots), vec(seed + 7, secure13.ctx.slots)
    ev, e, d = secure13.evaluator, secure13.encryptor, secure13.decryptor
    cx, cy = e.encrypt(x), e.encrypt(y)
    prod = ev.multiply(cx, cy, relinearize=False)
    assert prod.size == 3
    assert bits(d.decrypt(prod), x * y) >= 20          # size-3 decryption uses s^2
    relin = ev.relinearize(prod)
    assert relin.size == 2
    out = ev.rescale(relin)
    assert out.level == cx.level - 1
    assert abs(np.log2(out.scale) - 40) < 0.01
    assert bits(d.decrypt(out), x * y) >= 20
    assert bits(d.decrypt(ev.rescale(ev.square(cx))), x * x) >= 20


@given(seeds)
def test_multiply_by_plaintext_vector_and_constant_keeps_scale(small, seed):
    x, y = vec(seed, small.ctx.slots), vec(seed + 3, small.ctx.slots)
    c = float(np.random.default_rng(seed).uniform(-2, 2))
    ev, e, d = small.evaluator, small.encryptor, small.decryptor
    cx = e.encrypt(x)
    for other, expect in [(y, x * y), (c, x * c), (3, 3 * x)]:
        out = ev.rescale(ev.multiply(cx, other))
        assert out.scale == cx.scale  # encoded at the dropped prime: exact scale restoration
        assert bits(d.decrypt(out), expect) > 15
    pt = small.ctx.encoder.encode(y, scale=2 ** 30)
    out = ev.multiply(cx, pt)
    assert out.scale == cx.scale * 2 ** 30
    assert bits(d.decrypt(ev.rescale(out)), x * y) > 15


def test_level_and_scale_matching(small):
    ev, e, d = small.evaluator, small.encryptor, small.decryptor
    x = vec(5, small.ctx.slots)
    cx = e.encrypt(x)
    low = ev.rescale(ev.multiply(cx, 0.5))
    s = ev.add(cx, low)  # levels differ: the higher operand drops primes exactly
    assert s.level == low.level
    assert bits(d.decrypt(s), 1.5 * x) > 15
    sq = ev.multiply(cx, cx)  # scale 2^80 vs 2^40: ratio 2^40 is an integer -> multiply
    assert ev.add(sq, cx).scale == sq.scale
    odd = ckks.Ciphertext(cx.data, cx.level, cx.scale * 1.37, cx.context_id)
    with pytest.raises(ckks.ScaleMismatchError):
        ev.add(odd, cx)
    with pytest.raises(ckks.LevelError):
        ev.drop_level(low, cx.level)
    bottom = cx
    while bottom.level:
        bottom = ev.rescale(ev.multiply(bottom, 1.0))
    with pytest.raises(ckks.LevelError):
        ev.rescale(bottom)
    with pytest.raises(ckks.LevelError, match="rescale before"):
        ev.multiply(ev.drop_level(ev.square(cx), 1), x)  # 2^80 * 2^40 > Q_1 ~ 2^90


def test_integer_scale_ratio_addition_is_exact(small):
    ev, e, d = small.evaluator, small.encryptor, small.decryptor
    x, y = vec(1, small.ctx.slots), vec(2, small.ctx.slots)
    cx = e.encrypt(x)
    cy = e.encrypt(y, scale=cx.scale * 8)
    out = ev.add(cx, cy)
    assert out.scale == cy.scale
    assert bits(d.decrypt(out), x + y) > 18


# -- rotations ----------------------------------------------------------------------------
@given(seeds, st.sampled_from([1, 2, 3, 5, -1, -4, 7, 16, 64, 0]))
def test_rotate_is_np_roll(small, seed, step):
    x = vec(seed, small.ctx.slots)
    out = small.evaluator.rotate(small.encryptor.encrypt(x), step)
    assert bits(small.decryptor.decrypt(out), np.roll(x, -step)) > 17


@given(seeds, st.integers(-600, 600))
def test_rotate_random_steps_at_128_bits(secure13, seed, step):
    steps = [1, 2, 3, 5, -1, -4, 7, 16]
    step = steps[abs(step) % len(steps)]
    x = vec(seed, secure13.ctx.slots)
    ct = secure13.evaluator.rescale(secure13.evaluator.multiply(secure13.encryptor.encrypt(x), 1.0))
    out = secure13.evaluator.rotate(ct, step)
    assert bits(secure13.decryptor.decrypt(out), np.roll(x, -step)) >= 18


@given(seeds)
def test_conjugate(small, seed):
    z = vec(seed, small.ctx.slots, complex_=True)
    out = small.evaluator.conjugate(small.encryptor.encrypt(z))
    assert bits(small.decryptor.decrypt(out, complex=True), np.conj(z)) > 17


@given(seeds)
def test_hoisted_rotations_equal_plain_ones(small, seed):
    x = vec(seed, small.ctx.slots)
    ct = small.encryptor.encrypt(x)
    steps = [1, 2, 3, 5, -1, 0, 16]
    hoisted = small.evaluator.rotate_hoisted(ct, steps)
    for s, h in zip(steps, hoisted):
        plain = small.evaluator.rotate(ct, s)
        assert np.array_equal(h.data, plain.data)  # same digits, same key: bit-identical
        assert bits(small.decryptor.decrypt(h), np.roll(x, -s)) > 17


@given(seeds, st.sampled_from([1, 2, 8, 64]))
def test_sum_slots(small, seed, count):
    x = vec(seed, small.ctx.slots)
    out = small.evaluator.sum_slots(small.encryptor.encrypt(x), count)
    expect = sum(np.roll(x, -i) for i in range(count))
    assert bits(small.decryptor.decrypt(out), expect) > 12


def test_missing_keys_and_foreign_objects(small, secure13):
    ev = small.evaluator
    ct = small.encryptor.encrypt([1.0])
    with pytest.raises(ckks.KeyMissingError, match="rotation by 9"):
        ev.rotate(ct, 9)
    with pytest.raises(ckks.KeyMissingError):
        ckks.Evaluator(small.ctx).multiply(ct, ct)
    foreign = secure13.encryptor.encrypt([1.0])
    with pytest.raises(ckks.ContextMismatchError):
        ev.add(ct, foreign)
    with pytest.raises(ckks.ContextMismatchError):
        small.decryptor.decrypt(foreign)
    with pytest.raises(TypeError):
        ev.add(ct, "text")


# -- depth --------------------------------------------------------------------------------
@pytest.mark.slow
def test_depth_10_chain_at_n_2_15():
    """Ten ct x ct multiplications, each relinearized and rescaled, at 128-bit security."""
    params = ckks.Parameters(log_n=15, depth=10)
    ctx = ckks.Context(params)
    kg = ckks.KeyGenerator(ctx)
    ev = ckks.Evaluator(ctx, relin_key=kg.relin_key())
    enc = ckks.Encryptor(ctx, kg.public_key)
    rng = np.random.default_rng(11)
    x = rng.uniform(-1, 1, ctx.slots)
    ct, expect = enc.encrypt(x), x.copy()
    for level in range(10, 0, -1):
        # factors of magnitude 0.8..1 keep the product from vanishing, so precision stays meaningful
        y = rng.choice([-1, 1], ctx.slots) * rng.uniform(0.8, 1.0, ctx.slots)
        ct = ev.rescale(ev.multiply(ct, enc.encrypt(y, level=level)))
        expect = expect * y
    assert ct.level == 0
    assert bits(ckks.Decryptor(ctx, kg.secret_key).decrypt(ct), expect) >= 15
