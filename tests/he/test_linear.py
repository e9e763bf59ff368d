"""Every layer type as a linear stage: mirror (exact) and encrypted (small insecure parameters)
against hemet's NumPy reference."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from hemet import layers as L
from hemet.he import AffineMap, Layout, LinearStage, MirrorBackend
from hemet.he import backend as backend_mod
from hemet.he import sparse as S
from hemet.he.linear import best_baby_steps
from hemet.reference import run_node

pytestmark = pytest.mark.filterwarnings("ignore::ckks.SecurityWarning")

C, H, W = 4, 8, 8


def ref(layer, x, **w):
    """hemet.reference on one (C, H, W) / (F,) sample."""
    return run_node(layer, [x[None]], {k: np.asarray(v, float) for k, v in w.items()})[0]


def conv_case(rng, cin, cout, k, stride, groups, h=H, w=W):
    layer = L.Conv2d(cin, cout, k, stride, k // 2, groups, True)
    wt = rng.normal(0, 1 / np.sqrt(cin // groups * k * k), (cout, cin // groups, k, k))
    b = rng.normal(0, 0.1, cout)
    m = S.conv2d((cin, h, w), wt, b, stride, k // 2, groups)
    return m, lambda x: ref(layer, x, weight=wt, bias=b)


def bn_params(rng, c):
    return dict(weight=rng.normal(1, .1, c), bias=rng.normal(0, .1, c),
                running_mean=rng.normal(0, .1, c), running_var=rng.uniform(.5, 2, c))


def make_case(name, rng):
    """(map, reference function, input layout, output layout) for a layer type."""
    slots = 1024
    lin = Layout.packed(C, H, W, slots)
    mux2 = lambda c: Layout(c, H // 2, W // 2, H, W, 2, slots)  # noqa: E731  after stride 2
    if name == "conv3x3":
        m, f = conv_case(rng, C, 6, 3, 1, 1)
        return m, f, lin, Layout.packed(6, H, W, slots)
    if name == "conv3x3_s2":
        m, f = conv_case(rng, C, 8, 3, 2, 1)
        return m, f, lin, mux2(8)
    if name == "conv3x3_s2_repacked":
        m, f = conv_case(rng, C, 8, 3, 2, 1)
        return m, f, lin, Layout.packed(8, H // 2, W // 2, slots)
    if name == "pointwise":
        m, f = conv_case(rng, C, 5, 1, 1, 1)
        return m, f, lin, Layout.packed(5, H, W, slots)
    if name == "depthwise":
        m, f = conv_case(rng, C, C, 3, 1, C)
        return m, f, lin, lin
    if name == "depthwise_s2":
        m, f = conv_case(rng, C, C, 3, 2, C)
        return m, f, lin, mux2(C)
    if name == "grouped":
        m, f = conv_case(rng, C, 4, 3, 1, 2)
        return m, f, lin, lin
    if name == "avgpool":
        m = S.avg_pool((C, H, W), 2)
        return m, lambda x: ref(L.AvgPool(2), x), lin, mux2(C)
    if name == "global_avgpool":
        m = S.global_avg_pool((C, H, W))
        return m, lambda x: ref(L.GlobalAvgPool(), x), lin, Layout.vector(C, slots)
    if name == "linear_flat":
        wt, b = rng.normal(0, .1, (7, C * H * W)), rng.normal(0, .1, 7)
        m = S.dense((C, H, W), wt, b)
        return m, lambda x: wt @ x.ravel() + b, lin, Layout.vector(7, slots)
    if name == "batchnorm_folded":
        conv, fc = conv_case(rng, C, C, 3, 1, 1)
        p = bn_params(rng, C)
        scale = p["weight"] / np.sqrt(p["running_var"] + 1e-5)
        m = S.channel_affine((C, H, W), scale, p["bias"] - p["running_mean"] * scale).compose(conv)
        return m, lambda x: ref(L.BatchNorm(C), fc(x), **p), lin, lin
    if name == "pool_then_conv":
        conv, fc = conv_case(rng, C, 6, 3, 1, 1, H // 2, W // 2)
        m = conv.compose(S.avg_pool((C, H, W), 2))
        return m, lambda x: fc(ref(L.AvgPool(2), x)), lin, Layout(6, H // 2, W // 2, H, W, 2, slots)
    if name == "concat":  # fire expand: 1x1 and 3x3 of one input, side by side
        m1, f1 = conv_case(rng, C, 3, 1, 1, 1)
        m3, f3 = conv_case(rng, C, 5, 3, 1, 1)
        m = AffineMap.vstack([m1, m3])
        concat = lambda x: run_node(L.Concat(), [f1(x)[None], f3(x)[None]], {})[0]  # noqa: E731
        return m, concat, lin, Layout.packed(8, H, W, slots)
    if name == "replicated_input_conv":  # 3 channels stored 4 times; output fills the ciphertext
        m, f = conv_case(rng, 3, 16, 3, 1, 1)
        return m, f, Layout.replicated(Layout.packed(3, H, W, slots)), Layout.packed(16, H, W, slots)
    if name == "per_channel_conv":
        m, f = conv_case(rng, C, 3, 3, 1, 1)
        return m, f, Layout.per_channel(C, H, W, slots), Layout.per_channel(3, H, W, slots)
    if name == "multi_ct_conv":  # 256-slot ciphertexts: 6 inputs (planes straddle), 2 outputs
        m, f = conv_case(rng, 16, 20, 3, 2, 1)
        return (m, f, Layout(16, H, W, H, W, 1, 256, plane_stride=96),
                Layout(20, H // 2, W // 2, H, W, 2, 256))
    raise KeyError(name)


CASES = ["conv3x3", "conv3x3_s2", "conv3x3_s2_repacked", "pointwise", "depthwise", "depthwise_s2",
         "grouped", "avgpool", "global_avgpool", "linear_flat", "batchnorm_folded", "pool_then_conv",
         "concat", "per_channel_conv", "replicated_input_conv"]


@pytest.mark.parametrize("name", CASES + ["multi_ct_conv"])
def test_layer_on_mirror_is_exact(name, rng):
    m, f, lin, lout = make_case(name, rng)
    x = rng.normal(size=m.in_shape)
    want = f(x)
    slots = lout.slots
    assert lin.n_ciphertexts > 1 or name != "multi_ct_conv"
    stage = LinearStage([(lin, m)], lout)
    mb = MirrorBackend(slots)
    cts = [mb.encrypt(v) for v in lin.pack(x)]
    out = stage.evaluate(mb, [cts])
    got = lout.unpack([mb.decrypt(c) for c in out])
    np.testing.assert_allclose(got.reshape(want.shape), want, atol=1e-9, rtol=0)
    # one level consumed, scale kept; BSGS never needs more rotations than diagonals
    assert out[0].level == mb.max_level - 1 and out[0].scale == cts[0].scale
    c = stage.costs()
    assert c["rotations"] <= c["diagonals"]
    assert mb.counts["rotate"] + mb.counts["rotate_hoisted"] == c["rotations"]
    assert mb.counts["multiply_plain"] == c["pt_mults"] and mb.counts["rescale"] == c["rescales"]
    # slots that hold no output value stay exactly zero
    mask = np.ones((lout.n_ciphertexts, slots), bool)
    ct, sl = lout.flat_slot_index()
    mask[ct, sl] = False
    assert not np.any(np.asarray([mb.decrypt(o) for o in out])[mask])


def test_replicated_input_needs_fewer_diagonals(rng):
    m, _, rep, lout = make_case("replicated_input_conv", rng)
    assert rep.replicas == 4 and rep.replica_stride == 256
    plain = LinearStage([(Layout.packed(3, H, W, 1024), m)], lout)
    fewer = LinearStage([(rep, m)], lout)
    # 16 output planes read 3 input planes: 16 plane offsets x 9 taps without copies, the 4
    # offsets to the nearest copy with them
    assert plain.n_diagonals == 16 * 9 and fewer.n_diagonals == 4 * 9
    assert fewer.costs()["rotations"] < plain.costs()["rotations"]
    x = rng.normal(size=m.in_shape)
    mb = MirrorBackend(1024)
    outs = [st.evaluate(mb, [[mb.encrypt(v) for v in lay.pack(x)]])
            for st, lay in ((plain, Layout.packed(3, H, W, 1024)), (fewer, rep))]
    a, b = ([mb.decrypt(c) for c in o] for o in outs)
    np.testing.assert_allclose(lout.unpack(a), lout.unpack(b), atol=1e-12)


def test_replicated_output_writes_every_copy(rng):
    m, f = conv_case(rng, C, 3, 3, 1, 1)
    lout = Layout.replicated(Layout.packed(3, H, W, 1024))
    assert lout.replicas == 4
    stage = LinearStage([(Layout.packed(C, H, W, 1024), m)], lout)
    mb = MirrorBackend(1024)
    x = rng.normal(size=m.in_shape)
    v = mb.decrypt(stage.evaluate(mb, [[mb.encrypt(u) for u in Layout.packed(C, H, W, 1024).pack(x)]])[0])
    np.testing.assert_allclose(v, lout.pack(f(x))[0], atol=1e-9)  # all four copies, zeros between


@pytest.mark.parametrize("name", CASES)
def test_layer_encrypted(name, rng, hekit):
    m, f, lin, lout = make_case(name, rng)
    x = rng.normal(size=m.in_shape)
    want = f(x)
    stage = LinearStage([(lin, m)], lout)
    be = hekit.backend(stage.rotation_steps)
    cts = [be.encrypt(v, level=2) for v in lin.pack(x)]
    out = stage.evaluate(be, [cts])
    got = lout.unpack([be.decrypt(c) for c in out]).reshape(want.shape)
    assert np.max(np.abs(got - want)) < 1e-3 * max(1.0, np.max(np.abs(want)))
    assert out[0].level == 1 and out[0].scale == pytest.approx(cts[0].scale, rel=1e-12)


def poly_case(rng, act="poly"):
    """poly activation a x^2 + b x + c, then a conv: the merged two-input stage."""
    lin = Layout.packed(C, H, W, 1024)
    lout = Layout(6, H // 2, W // 2, H, W, 2, 1024)
    conv, fc = conv_case(rng, C, 6, 3, 2, 1)
    a, b, c = rng.normal(.1, .05, C), rng.normal(1, .1, C), rng.normal(0, .1, C)
    if act == "square":
        a, b, c = np.ones(C), np.zeros(C), np.zeros(C)
    lin_part = conv.linear_only()
    inputs = [(lin, lin_part.compose(S.channel_affine((C, H, W), a)))]
    if np.any(b):
        inputs.append((lin, lin_part.compose(S.channel_affine((C, H, W), b))))
    bias = conv(np.broadcast_to(c[:, None, None], (C, H, W))).ravel()  # W c + conv bias
    stage = LinearStage(inputs, lout, bias=bias)
    layer = L.Poly(C)
    f = lambda x: fc(ref(layer, x, a=a, b=b, c=c))  # noqa: E731
    return stage, f, lin, lout


def run_merged(backend, stage, lin, lout, x, out_scale=None):
    cts = [backend.encrypt(v) for v in lin.pack(x)]
    sq = [backend.rescale(backend.square(ct)) for ct in cts]
    ins = [sq, cts] if len(stage.inputs) == 2 else [sq]
    out = stage.evaluate(backend, ins, out_scale=out_scale)
    return lout.unpack([backend.decrypt(c) for c in out]), out, cts


@pytest.mark.parametrize("act", ["poly", "square"])
def test_poly_activation_merged_into_conv(act, rng, hekit):
    stage, f, lin, lout = poly_case(rng, act)
    x = rng.normal(size=(C, H, W))
    want = f(x)
    mb = hekit.mirror()
    got, out, cts = run_merged(mb, stage, lin, lout, x, out_scale=hekit.params.scale)
    np.testing.assert_allclose(got, want, atol=1e-9, rtol=0)
    # two levels for square + merged stage; output back at the fresh scale exactly
    assert out[0].level == cts[0].level - 2 and out[0].scale == pytest.approx(hekit.params.scale, rel=1e-14)
    be = hekit.backend(stage.rotation_steps)
    got, out, cts = run_merged(be, stage, lin, lout, x, out_scale=hekit.params.scale)
    assert np.max(np.abs(got - want)) < 1e-3 * max(1.0, np.max(np.abs(want)))
    assert out[0].level == cts[0].level - 2


def test_residual_add_as_two_input_stage(rng, hekit):
    """conv(x1) + x2 with x2 on another layout (residual): one stage, two inputs."""
    lin = Layout.packed(C, H, W, 1024)
    lres = Layout.per_channel(C, H, W, 1024)
    conv, fc = conv_case(rng, C, C, 3, 1, 1)
    stage = LinearStage([(lin, conv), (lres, S.identity((C, H, W)))], lin)
    x1, x2 = rng.normal(size=(2, C, H, W))
    want = fc(x1) + x2
    for backend in (hekit.mirror(), hekit.backend(stage.rotation_steps)):
        ins = [[backend.encrypt(v) for v in lay.pack(x)] for lay, x in ((lin, x1), (lres, x2))]
        got = lin.unpack([backend.decrypt(c) for c in stage.evaluate(backend, ins)])
        tol = 1e-9 if isinstance(backend, MirrorBackend) else 1e-3
        assert np.max(np.abs(got - want)) < tol * max(1, np.abs(want).max())


def test_plaintext_cache_is_bounded(rng, hekit):
    m, f, lin, lout = make_case("conv3x3", rng)
    stage = LinearStage([(lin, m)], lout)
    limb = hekit.ctx.n * 8
    be = hekit.backend(stage.rotation_steps, max_cache_bytes=10 * 3 * limb)  # 10 plaintexts at level 2
    x = rng.normal(size=(C, H, W))
    for _ in range(2):
        cts = [be.encrypt(v, level=2) for v in lin.pack(x)]
        got = lout.unpack([be.decrypt(c) for c in stage.evaluate(be, [cts])])
        assert be.cache.bytes <= 10 * 3 * limb
        assert np.max(np.abs(got - f(x))) < 1e-3 * max(1, np.abs(f(x)).max())
    stage.prepare(be, 2, [cts[0].scale])
    assert be.cache.bytes <= 10 * 3 * limb


@pytest.mark.parametrize("batch", [1, 3, 32])
def test_stage_with_transient_misses_is_correct(rng, hekit, batch):
    """No cache at all: every batch's plaintexts are encoded into the backend's one reused
    buffer, each batch overwriting the last; the stage must use every batch before the next
    fetch (a generator that fetched ahead would multiply with overwritten plaintexts)."""
    m, f, lin, lout = make_case("conv3x3", rng)
    stage = LinearStage([(lin, m)], lout)
    stage.batch = batch
    be = hekit.backend(stage.rotation_steps, max_cache_bytes=0)
    x = rng.normal(size=(C, H, W))
    for _ in range(2):
        cts = [be.encrypt(v, level=2) for v in lin.pack(x)]
        got = lout.unpack([be.decrypt(c) for c in stage.evaluate(be, [cts])])
        assert np.max(np.abs(got - f(x))) < 1e-3 * max(1, np.abs(f(x)).max())
    assert len(be.cache) == 0
    assert (be._scratch.size > 0) == (batch > 1)  # batch 1 fetches one by one (encode_cached)


def test_transient_misses_share_a_buffer_and_kept_ones_do_not(rng, hekit):
    limb = hekit.ctx.n * 8
    level, enc = 2, hekit.ctx.encoder
    be = hekit.backend([], max_cache_bytes=4 * 3 * limb)  # room for 4 at level 2
    scale = be.prime(level)
    vecs = [rng.normal(size=hekit.slots) for _ in range(9)]
    want = [enc.encode(v, level=level, scale=scale).data for v in vecs]
    items = [(("t", i), (lambda v=v: v)) for i, v in enumerate(vecs)]
    kept = be.encode_cached_many(items[:3], level, scale, transient=True)  # room: kept, own memory
    assert len(be.cache) == 3 and be._scratch.size == 3 * 3 * hekit.ctx.n  # encoded there, copied out
    assert not any(np.shares_memory(pt.data, be._scratch) for pt in kept)
    be.cache._pinned.update(k for k, _ in items[:3])  # as if prepare had pinned them
    be.cache.pinned_bytes = 3 * 3 * limb
    be.cache.max_bytes = 3 * 3 * limb  # no room for another: the rest are transient
    a = be.encode_cached_many(items[3:6], level, scale, transient=True)
    for i, pt in enumerate(a):
        assert np.array_equal(pt.data, want[3 + i])
    b = be.encode_cached_many(items[6:9], level, scale, transient=True)
    assert len(be.cache) == 3 and be._scratch.size == 3 * 3 * hekit.ctx.n
    for i, pt in enumerate(b):
        assert np.array_equal(pt.data, want[6 + i]) and np.shares_memory(pt.data, a[i].data)
    for i, pt in enumerate(kept):
        assert np.array_equal(pt.data, want[i]) and not np.shares_memory(pt.data, be._scratch)
    c = be.encode_cached_many(items[6:9], level, scale)  # not transient: fresh arrays
    assert not any(np.shares_memory(pt.data, be._scratch) for pt in c)
    for i, pt in enumerate(kept):  # a bounded cache: kept ones own their arrays, not the batch's
        assert pt.data.base is None or pt.data.base.nbytes == pt.data.nbytes
        assert not any(np.shares_memory(pt.data, o.data) for o in kept[i + 1:])


@given(st.integers(0, 2 ** 32 - 1), st.integers(1, 60), st.sampled_from([1, 2, 3]),
       st.sampled_from([1, 2]))
def test_diagonals_reproduce_the_slot_matrix(seed, nnz, n_in, n_out):
    """Random sparse maps between multi-ciphertext layouts: diagonals == slot matrix, mirror ==
    matrix product, BSGS never needs more rotations than diagonals."""
    rng = np.random.default_rng(seed)
    slots = 32
    lin = Layout(n_in * 2, 4, 4, 4, 4, 1, slots)
    lout = Layout(n_out * 2, 4, 4, 4, 4, 1, slots)
    rows, cols = rng.integers(0, lout.size, nnz), rng.integers(0, lin.size, nnz)
    m = AffineMap(lin.shape, lout.shape, rows, cols, rng.normal(size=nnz), rng.normal(size=lout.size))
    stage = LinearStage([(lin, m)], lout)
    ict, isl = lin.flat_slot_index()
    oct_, osl = lout.flat_slot_index()
    want = np.zeros((lout.n_ciphertexts * slots, lin.n_ciphertexts * slots))
    np.add.at(want, ((oct_ * slots + osl)[m.rows], (ict * slots + isl)[m.cols]), m.vals)
    np.testing.assert_allclose(stage.dense_matrix(), want, atol=1e-12)
    c = stage.costs()
    assert c["rotations"] <= c["diagonals"]
    B, rot = best_baby_steps([(b.out_ct, b.d) for blocks in stage._blocks for b in blocks.values()],
                             lout.n_ciphertexts, slots)
    assert rot == c["rotations"]
    x = rng.normal(size=lin.shape)
    mb = MirrorBackend(slots)
    out = stage.evaluate(mb, [[mb.encrypt(v) for v in lin.pack(x)]])
    np.testing.assert_allclose(lout.unpack([o.vec for o in out]).ravel(), m(x).ravel(), atol=1e-9)


def test_diagonals_in_several_passes_equal_one_pass(rng, monkeypatch):
    """Layouts of many input ciphertexts count their diagonals a few ciphertexts per pass."""
    from hemet.he import linear
    slots = 32
    lin, lout = Layout(12, 4, 4, 4, 4, 1, slots), Layout(4, 4, 4, 4, 4, 1, slots)
    nnz = 400
    m = AffineMap(lin.shape, lout.shape, rng.integers(0, lout.size, nnz),
                  rng.integers(0, lin.size, nnz), rng.normal(size=nnz))
    one = LinearStage([(lin, m)], lout)
    monkeypatch.setattr(linear, "_COUNTS_BYTES", 2 * 4 * lout.n_ciphertexts * slots)  # 2 per pass
    several = LinearStage([(lin, m)], lout)
    assert lin.n_ciphertexts > 2 and len(one._blocks[0]) == lin.n_ciphertexts
    np.testing.assert_array_equal(several.dense_matrix(), one.dense_matrix())
    assert several.costs() == one.costs()


def test_stage_errors(rng):
    m, f, lin, lout = make_case("conv3x3", rng)
    with pytest.raises(ValueError, match="reads"):
        LinearStage([(Layout.packed(3, H, W, 1024), m)], lout)
    with pytest.raises(ValueError, match="writes"):
        LinearStage([(lin, m)], lin)
    stage = LinearStage([(lin, m)], lout)
    mb = MirrorBackend(1024)
    with pytest.raises(ValueError, match="level"):
        stage.evaluate(mb, [[mb.encrypt(v, level=0) for v in lin.pack(np.zeros(lin.shape))]])
    plan = LinearStage([(lin, m)], lout, materialize=False)
    assert plan.costs() == stage.costs()
    with pytest.raises(RuntimeError, match="plan only"):
        plan.evaluate(mb, [[mb.encrypt(v) for v in lin.pack(np.zeros(lin.shape))]])


def test_full_ciphertext_conv_32_to_32_at_n4096():
    """A wide conv filling a whole ciphertext (32 channels x 8 x 8 = 2048 slots, wrap-around
    channel offsets): 288 diagonals, BSGS rotations far below that, encrypted error tiny."""
    from .conftest import HEKit
    kit = HEKit(log_n=12, depth=2)
    rng = np.random.default_rng(3)
    m, f = conv_case(rng, 32, 32, 3, 1, 1)
    lay = Layout.packed(32, H, W, kit.slots)
    stage = LinearStage([(lay, m)], lay)
    c = stage.costs()
    assert c["diagonals"] == 32 * 9 and c["rotations"] <= 2 * int(np.sqrt(32 * 9)) + 4
    x = rng.normal(size=(32, H, W))
    be = kit.backend(stage.rotation_steps)
    out = stage.evaluate(be, [[be.encrypt(v) for v in lay.pack(x)]])
    want = f(x)
    assert np.max(np.abs(lay.unpack([be.decrypt(o) for o in out]) - want)) < 1e-3 * np.abs(want).max()


def test_pinned_cache_keeps_its_prefix():
    """Pinned entries fill the budget and stay; later (unpinned) entries never evict them."""
    from hemet.he.backend import PlaintextCache

    class P:
        def __init__(self, n):
            self.data = np.zeros(n, dtype=np.uint8)

    c = PlaintextCache(max_bytes=100)
    for k in range(5):
        c.get(("pin", k), lambda: P(30), pin=True)
    assert c.bytes == c.pinned_bytes == 90 and len(c) == 3  # the 4th and 5th did not fit
    for k in range(10):  # a scan of unpinned entries: stored only beside the pinned ones
        c.get(("scan", k), lambda: P(10))
        assert c.bytes <= 100
    hits = c.hits
    for k in range(3):
        c.get(("pin", k), lambda: P(30))
    assert c.hits == hits + 3
    c.get(("big", 0), lambda: P(20))  # does not fit beside the pinned 90: not stored
    assert c.bytes <= 100 and ("big", 0) not in c._d


def test_fused_multiply_add_is_exact(rng, hekit):
    be = hekit.backend([])
    ctx = hekit.ctx
    ct = be.encrypt(rng.normal(size=hekit.slots), level=3)
    pts = [ctx.encoder.encode(rng.normal(size=hekit.slots), level=3, scale=be.prime(3)) for _ in range(3)]
    want = be.ev.multiply(ct, pts[0])
    for pt in pts[1:]:
        want = be.ev.add(want, be.ev.multiply(ct, pt))
    acc = None
    for pt in pts:
        acc = be.multiply_plain_add(acc, ct, pt)
    assert np.array_equal(acc.data, want.data) and acc.scale == want.scale
    # level mismatch: falls back to the plain (matching) path
    ct2 = be.encrypt(rng.normal(size=hekit.slots), level=4)
    got = be.multiply_plain_add(be.multiply_plain(ct, pts[0]), ct2, pts[1])
    assert got.level == 3


def test_compact_pinned_plaintexts_equal_encodes(rng, hekit):
    """A plaintext pinned compactly (int64 coefficients) comes back bit for bit equal to a
    direct encode, at any level; at level 0 it is pinned in NTT form."""
    be = hekit.backend([])
    enc = hekit.ctx.encoder
    be.pinning = True
    be.pin_pending = 10 ** 6  # as if many more were announced: no room for NTT form
    for level in (0, 1, 3, 7):
        v = rng.normal(size=hekit.slots) * 3
        scale = be.prime(max(level, 1)) * 1.5
        pt = be.encode_cached(("t", level), lambda: v, level, scale)
        want = enc.encode(v, level=level, scale=scale)
        assert np.array_equal(pt.data, want.data) and pt.level == level and pt.scale == want.scale
        again = be.encode_cached(("t", level), lambda: None, level, scale)  # from the cache
        assert np.array_equal(again.data, want.data)
    be.pinning = False
    n = hekit.ctx.n
    assert be.cache.bytes == n * 8 * 3 + n * 8 * 1  # three compact entries + one level-0 plaintext


def test_pinning_prefers_ntt_form_while_the_budget_holds_the_rest(rng, hekit):
    be = hekit.backend([], max_cache_bytes=None)
    be.pinning = True
    be.pin_pending = 0
    limb = hekit.ctx.n * 8
    be.encode_cached(("a",), lambda: rng.normal(size=8), 3, be.prime(3))
    assert be.cache.bytes == 4 * limb  # unbounded: NTT form
    be = hekit.backend([], max_cache_bytes=10 * limb)
    be.pinning, be.pin_pending = True, 5
    be.encode_cached(("a",), lambda: rng.normal(size=8), 3, be.prime(3))  # 4 + 4 pending <= 10
    be.encode_cached(("b",), lambda: rng.normal(size=8), 3, be.prime(3))  # 4 + 4 + 3 > 10: compact
    assert be.cache.bytes == 5 * limb


def test_encode_cached_many_matches_single_encodes(rng, hekit):
    be = hekit.backend([])
    enc = hekit.ctx.encoder
    vecs = [rng.normal(size=hekit.slots) for _ in range(5)]
    be.pinning, be.pin_pending = True, 10 ** 6  # compact
    be.encode_cached_many([(("v", i), (lambda v=v: v)) for i, v in enumerate(vecs[:3])], 4, be.prime(4))
    be.pinning = False
    before = be.counts["encode_compact"]
    got = be.encode_cached_many([(("v", i), (lambda v=v: v)) for i, v in enumerate(vecs)], 4, be.prime(4))
    assert be.counts["encode_compact"] - before == 3
    assert sum(isinstance(pt, backend_mod._CompactPlaintext) for pt in got) == 3  # converted on use
    for v, pt in zip(vecs, got):
        assert np.array_equal(be._ntt_form(pt).data, enc.encode(v, level=4, scale=be.prime(4)).data)


def test_products_of_compact_and_ntt_form_plaintexts_are_exact(rng, hekit):
    """One batch mixing compact (converted inside the products; one with coefficients past
    2^51, which the portable kernel reduces first) and NTT-form plaintexts, accumulators
    shared between terms: bit for bit the evaluator's multiply and add."""
    be = hekit.backend([])
    enc = hekit.ctx.encoder
    level, scale = 3, be.prime(3)
    vecs = [rng.normal(size=hekit.slots) for _ in range(6)]
    vecs[0] = vecs[0] * 2.0 ** 57 / scale
    be.pinning, be.pin_pending = True, 10 ** 6  # the first four pinned compact
    be.encode_cached_many([(("w", i), (lambda v=v: v)) for i, v in enumerate(vecs[:4])], level, scale)
    be.pinning = False
    pts = be.encode_cached_many([(("w", i), (lambda v=v: v)) for i, v in enumerate(vecs)], level, scale)
    kinds = [isinstance(p, backend_mod._CompactPlaintext) for p in pts]
    assert kinds == [True] * 4 + [False] * 2
    assert [p.small for p in pts[:4]] == [False, True, True, True]
    cts = [be.encrypt(rng.normal(size=hekit.slots), level=level) for _ in range(3)]
    terms = [(i % 2, cts[i % 3], pt) for i, pt in enumerate(pts)]
    acc = {}
    be.multiply_plain_add_many(acc, terms)
    for key in (0, 1):
        want = None
        for k, ct, v in [(i % 2, cts[i % 3], vecs[i]) for i in range(6)]:
            if k == key:
                prod = be.ev.multiply(ct, enc.encode(v, level=level, scale=scale))
                want = prod if want is None else be.ev.add(want, prod)
        assert np.array_equal(acc[key].data, want.data) and acc[key].scale == want.scale
    # a compact plaintext where the levels differ takes the plain path, converted first
    ct4 = be.encrypt(rng.normal(size=hekit.slots), level=level + 1)
    got = be.multiply_plain_add(be.multiply_plain(cts[0], pts[1]), ct4, pts[0])
    want = be.ev.add(be.ev.multiply(cts[0], enc.encode(vecs[1], level=level, scale=scale)),
                     be.ev.multiply(be.ev.drop_level(ct4, level), enc.encode(vecs[0], level=level, scale=scale)))
    assert got.level == level and np.array_equal(got.data, want.data)
