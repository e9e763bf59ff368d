"""The exact affine maps against hemet.reference, and their algebra; random layouts through
the mirror."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from hemet import layers as L
from hemet.he import AffineMap, Layout, LinearStage, MirrorBackend
from hemet.he import sparse as S
from hemet.reference import conv2d, run_node


@st.composite
def convs(draw):
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    cin = groups * draw(st.integers(1, 3))
    cout = groups * draw(st.integers(1, 3))
    if draw(st.booleans()):  # depthwise
        groups = cin
        cout = cin
    k = draw(st.sampled_from([1, 3, 5]))
    stride = draw(st.sampled_from([1, 2]))
    pad = draw(st.integers(0, k // 2))
    h = draw(st.integers(max(1, k - 2 * pad), 9))
    w = draw(st.integers(max(1, k - 2 * pad), 9))
    seed = draw(st.integers(0, 2 ** 32 - 1))
    return cin, cout, k, stride, pad, groups, h, w, seed


@given(convs())
def test_conv_map_matches_reference(case):
    cin, cout, k, stride, pad, groups, h, w, seed = case
    rng = np.random.default_rng(seed)
    wt = rng.normal(size=(cout, cin // groups, k, k))
    b = rng.normal(size=cout)
    x = rng.normal(size=(cin, h, w))
    m = S.conv2d((cin, h, w), wt, b, stride, pad, groups)
    want = conv2d(x[None], wt, b, stride, pad, groups)[0]
    assert m.out_shape == want.shape
    np.testing.assert_allclose(m(x), want, atol=1e-12)
    np.testing.assert_allclose(m.dense() @ x.ravel() + m.bias, want.ravel(), atol=1e-12)


@given(st.integers(1, 4), st.sampled_from([2, 4, 6]), st.sampled_from([2, 3]),
       st.integers(0, 2 ** 32 - 1))
def test_pools_match_reference(c, hw, k, seed):
    x = np.random.default_rng(seed).normal(size=(c, hw * k // 2 * 2, hw * k // 2 * 2))
    shape = x.shape
    if shape[1] % k == 0:
        np.testing.assert_allclose(S.avg_pool(shape, k)(x), run_node(L.AvgPool(k), [x[None]], {})[0],
                                   atol=1e-12)
    np.testing.assert_allclose(S.global_avg_pool(shape)(x),
                               run_node(L.GlobalAvgPool(), [x[None]], {})[0], atol=1e-12)


def _random_map(rng, in_shape, out_shape, nnz):
    n_in, n_out = int(np.prod(in_shape)), int(np.prod(out_shape))
    return AffineMap(in_shape, out_shape, rng.integers(0, n_out, nnz), rng.integers(0, n_in, nnz),
                     rng.normal(size=nnz), rng.normal(size=n_out), coalesce=bool(rng.integers(2)))


@given(st.integers(0, 2 ** 32 - 1), st.integers(0, 40), st.integers(0, 40))
def test_compose_is_the_matrix_product(seed, n1, n2):
    rng = np.random.default_rng(seed)
    a = _random_map(rng, (2, 3, 3), (3, 2, 2), n1)
    b = _random_map(rng, (3, 2, 2), (5,), n2)
    x = rng.normal(size=(2, 3, 3))
    ba = b.compose(a)
    np.testing.assert_allclose(ba(x), b(a(x)), atol=1e-12)
    np.testing.assert_allclose(ba.dense(), b.dense() @ a.dense(), atol=1e-12)
    np.testing.assert_allclose(ba.coalesced().dense(), ba.dense(), atol=1e-12)
    # diagonal maps take the fast paths
    d = S.channel_affine((3, 2, 2), rng.normal(size=3), rng.normal(size=3))
    np.testing.assert_allclose(d.compose(a)(x), d(a(x)), atol=1e-12)
    np.testing.assert_allclose(b.compose(d)(a(x)), b(d(a(x))), atol=1e-12)
    assert S.identity((3, 2, 2)).is_identity() and not d.is_identity()


def test_dense_and_vstack():
    rng = np.random.default_rng(0)
    wt = rng.normal(size=(4, 2 * 3 * 3))
    x = rng.normal(size=(2, 3, 3))
    np.testing.assert_allclose(S.dense((2, 3, 3), wt, np.ones(4))(x), wt @ x.ravel() + 1)
    m1 = S.conv2d((2, 3, 3), rng.normal(size=(1, 2, 1, 1)))
    m2 = S.conv2d((2, 3, 3), rng.normal(size=(3, 2, 3, 3)), np.ones(3))
    np.testing.assert_allclose(AffineMap.vstack([m1, m2])(x), np.concatenate([m1(x), m2(x)]))
    with pytest.raises(ValueError):
        S.conv2d((3, 4, 4), np.zeros((2, 2, 3, 3)))


@st.composite
def layout_for(draw, c, h, w, slots):
    kind = draw(st.sampled_from(["packed", "gap2", "per_channel", "straddle"]))
    if kind == "packed":
        return Layout.packed(c, h, w, slots)
    if kind == "gap2":
        return Layout(c, h, w, 2 * h, 2 * w, 2, slots)
    if kind == "per_channel":
        return Layout.per_channel(c, h, w, slots)
    return Layout(c, h, w, h, w, 1, slots, plane_stride=h * w + 1)


@given(st.data(), convs())
def test_random_conv_between_random_layouts_on_mirror(data, case):
    cin, cout, k, stride, pad, groups, h, w, seed = case
    rng = np.random.default_rng(seed)
    wt = rng.normal(size=(cout, cin // groups, k, k))
    m = S.conv2d((cin, h, w), wt, rng.normal(size=cout), stride, pad, groups)
    slots = 1024
    lin = data.draw(layout_for(cin, h, w, slots))
    lout = data.draw(layout_for(*m.out_shape, slots))
    stage = LinearStage([(lin, m)], lout)
    assert stage.costs()["rotations"] <= stage.n_diagonals
    x = rng.normal(size=(cin, h, w))
    mb = MirrorBackend(slots)
    out = stage.evaluate(mb, [[mb.encrypt(v) for v in lin.pack(x)]])
    np.testing.assert_allclose(lout.unpack([o.vec for o in out]), m(x), atol=1e-9)
