import numpy as np
import pytest
from hypothesis import given, strategies as st

import ckks
from ckks.circuits import LinearTransform


def keys_for(tk, lt):
    ev = tk.evaluator
    return ckks.Evaluator(tk.ctx, relin_key=ev.relin_key, galois_keys=tk.keygen.galois_keys(lt.rotation_steps))


@given(st.integers(0, 2 ** 32 - 1), st.integers(1, 40))
def test_sparse_diagonal_matrix_times_encrypted_vector(small, seed, n_diags):
    rng = np.random.default_rng(seed)
    slots = small.ctx.slots
    offsets = rng.choice(slots, size=n_diags, replace=False)
    diags = {int(d): rng.uniform(-1, 1, slots) for d in offsets}
    lt = LinearTransform(small.ctx, diags, level=small.ctx.max_level)
    assert lt.rotation_count <= len(diags)  # BSGS never needs more rotations than diagonals
    ev = keys_for(small, lt)
    x = rng.uniform(-1, 1, slots)
    out = lt.evaluate(ev, small.encryptor.encrypt(x))
    idx = np.arange(slots)
    M = np.zeros((slots, slots))
    for d, v in diags.items():
        M[idx, (idx + d) % slots] = v
    assert out.level == small.ctx.max_level - 1 and out.scale == pytest.approx(2.0 ** 40, rel=1e-3)
    assert np.max(np.abs(small.decryptor.decrypt(out) - M @ x)) < 2 ** -12 * max(1, len(diags))


def test_dense_matrix_uses_about_2_sqrt_n_rotations(small):
    rng = np.random.default_rng(3)
    slots = small.ctx.slots
    m = rng.uniform(-1, 1, (64, 64)) / 8
    lt = LinearTransform.from_matrix(small.ctx, m, level=2)
    assert lt.n_diagonals == 127  # 64x64 block in the corner of a 512-slot matrix: -63..63
    assert lt.rotation_count <= 2 * int(np.sqrt(lt.n_diagonals)) + 8
    ev = keys_for(small, lt)
    x = np.zeros(slots)
    x[:64] = rng.uniform(-1, 1, 64)
    out = small.decryptor.decrypt(lt.evaluate(ev, small.encryptor.encrypt(x)))
    assert np.max(np.abs(out[:64] - m @ x[:64])) < 1e-3
    assert np.max(np.abs(out[64:])) < 1e-3


def test_bad_input(small):
    slots = small.ctx.slots
    with pytest.raises(ValueError):
        LinearTransform(small.ctx, {0: np.zeros(slots)}, level=2)
    with pytest.raises(ValueError):
        LinearTransform(small.ctx, {0: np.ones(3)}, level=2)
    with pytest.raises(ValueError):
        LinearTransform(small.ctx, {0: np.ones(slots)}, level=0)
