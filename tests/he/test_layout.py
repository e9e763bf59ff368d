import numpy as np
import pytest
from hypothesis import given, strategies as st

from hemet.he import Layout, LayoutError


@st.composite
def layouts(draw):
    c = draw(st.integers(1, 12))
    h = draw(st.integers(1, 6))
    w = draw(st.integers(1, 6))
    gap = draw(st.sampled_from([1, 2, 4]))
    bh = gap * h + draw(st.integers(0, 3))
    bw = gap * w + draw(st.integers(0, 3))
    slots = 1 << max(4, int(np.ceil(np.log2(bh * bw))) + draw(st.integers(0, 2)))
    style = draw(st.sampled_from(["mux", "plain", "per_channel"]))
    if style == "per_channel":
        return Layout.per_channel(c, h, w, slots, gap=gap, base_h=bh, base_w=bw)
    strides = [None, bh * bw, slots, 2 * slots] + ([bh * bw + 3] if bh * bw + 3 <= slots else [])
    stride = draw(st.sampled_from(strides))
    return Layout(c, h, w, bh, bw, gap, slots, plane_stride=stride, multiplex=style == "mux")


@given(layouts(), st.integers(0, 2 ** 32 - 1))
def test_pack_unpack_round_trip_and_injective(lay, seed):
    x = np.random.default_rng(seed).normal(size=lay.shape)
    vecs = lay.pack(x)
    assert len(vecs) == lay.n_ciphertexts and all(v.shape == (lay.slots,) for v in vecs)
    np.testing.assert_array_equal(lay.unpack(vecs), x)
    ct, slot = lay.flat_slot_index()
    assert len(set(zip(ct.tolist(), slot.tolist()))) == lay.size  # no two values share a slot
    # every slot that is not a value stays zero
    assert sum(np.count_nonzero(v) for v in vecs) == np.count_nonzero(x)


def test_plain_packing_is_channel_major():
    lay = Layout.packed(3, 4, 4, 64)
    ct, slot = lay.slot_index(np.array([0, 1, 2]), np.array([1, 0, 3]), np.array([2, 0, 3]))
    assert ct.tolist() == [0, 0, 0]
    assert slot.tolist() == [0 * 16 + 1 * 4 + 2, 1 * 16, 2 * 16 + 3 * 4 + 3]
    # 20-slot planes in 32-slot ciphertexts: padded to a stride of 32, one plane per ciphertext
    lay = Layout(3, 4, 5, 4, 5, 1, 32)
    assert lay.plane_stride == 32 and lay.n_ciphertexts == 3
    # an explicit stride may straddle ciphertexts
    lay = Layout(3, 4, 5, 4, 5, 1, 32, plane_stride=20)
    assert lay.n_ciphertexts == 2 and tuple(map(int, lay.slot_index(1, 3, 0))) == (1, 3)


def test_multiplexed_gap_keeps_strided_positions_and_interleaves_channels():
    base = Layout.packed(4, 8, 8, 256)
    mux = Layout(8, 4, 4, 8, 8, 2, 256)  # after a stride-2 layer: gap 2, 4 channels per plane
    # channel 0 value (h, w) sits where the gap-1 value (2h, 2w) of channel 0 was
    ct0, s0 = base.slot_index(0, np.arange(4) * 2, np.arange(4) * 2)
    ct1, s1 = mux.slot_index(0, np.arange(4), np.arange(4))
    np.testing.assert_array_equal(s0, s1)
    # channels 1..3 fill the gaps of plane 0, channel 4 starts plane 1
    _, s = mux.slot_index(np.array([1, 2, 3, 4]), 0, 0)
    assert s.tolist() == [1, 8, 9, 64]
    assert mux.n_ciphertexts == 1 and mux.occupancy() == 0.5


def test_per_channel_layout():
    lay = Layout.per_channel(5, 4, 4, 64)
    assert lay.n_ciphertexts == 5
    ct, slot = lay.slot_index(np.arange(5), 1, 2)
    assert ct.tolist() == list(range(5)) and slot.tolist() == [6] * 5


def test_vector_layout():
    lay = Layout.vector(10, 16)
    np.testing.assert_array_equal(lay.pack(np.arange(10.0))[0][:10], np.arange(10.0))
    np.testing.assert_array_equal(lay.unpack(lay.pack(np.arange(10.0))).ravel(), np.arange(10.0))


@pytest.mark.parametrize("kwargs, msg", [
    (dict(channels=1, height=8, width=8, base_h=8, base_w=8, gap=1, slots=32), "larger than"),
    (dict(channels=1, height=4, width=4, base_h=4, base_w=4, gap=2, slots=64), "base of at least"),
    (dict(channels=1, height=4, width=4, base_h=4, base_w=4, gap=3, slots=64), "power of two"),
    (dict(channels=1, height=4, width=4, base_h=4, base_w=4, gap=1, slots=48), "power of two"),
    (dict(channels=0, height=4, width=4, base_h=4, base_w=4, gap=1, slots=64), "positive"),
    (dict(channels=2, height=3, width=3, base_h=3, base_w=3, gap=1, slots=64, plane_stride=8),
     "smaller than"),
    (dict(channels=2, height=3, width=3, base_h=3, base_w=3, gap=1, slots=64, plane_stride=96),
     "multiple"),
])
def test_bad_layouts(kwargs, msg):
    with pytest.raises(LayoutError, match=msg):
        Layout(**kwargs)


def test_bad_data():
    lay = Layout.packed(2, 4, 4, 64)
    with pytest.raises(LayoutError, match="shape"):
        lay.pack(np.zeros((2, 4, 5)))
    with pytest.raises(LayoutError, match="slot vectors"):
        lay.unpack([np.zeros(64), np.zeros(64)])
    with pytest.raises(LayoutError, match="out of range"):
        lay.slot_index(2, 0, 0)


def test_replicated_layout_packs_every_copy():
    base = Layout.packed(3, 4, 4, 256)           # planes of 16 slots: 3 planes -> span 64
    rep = Layout.replicated(base)
    assert (rep.replicas, rep.replica_stride) == (4, 64) and rep.n_ciphertexts == 1
    x = np.arange(48, dtype=float).reshape(3, 4, 4) + 1
    v, = rep.pack(x)
    b, = base.pack(x)
    for r in range(4):
        np.testing.assert_array_equal(v[64 * r:64 * (r + 1)], b[:64])
    np.testing.assert_array_equal(rep.unpack([v]), x)
    assert "4 replicas" in rep.describe()
    # layouts that fill more than half a ciphertext (or several) are left alone
    full = Layout.packed(16, 4, 4, 256)
    assert Layout.replicated(full) is full
    assert Layout.replicated(Layout.packed(3, 4, 4, 32)).replicas == 1


@pytest.mark.parametrize("reps, msg", [(3, "power of two"), (0, "power of two"), (8, "do not fit")])
def test_bad_replicas(reps, msg):
    with pytest.raises(LayoutError, match=msg):
        Layout(3, 4, 4, 4, 4, 1, 256, replicas=reps)
