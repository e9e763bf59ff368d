"""Compiling hemet graphs into packed programs: mirror (exact) and encrypted runs against
hemet.reference.forward."""
import numpy as np
import pytest

from hemet import layers as L
from hemet.graph import INPUT, Graph
from hemet.he import MirrorBackend
from hemet.he.program import compile_model
from hemet.modelfile import Model
from hemet.reference import forward
from hemet.zoo import random_weights

pytestmark = pytest.mark.filterwarnings("ignore::ckks.SecurityWarning")




def tiny_fire_net(act="poly"):
    """normalize -> conv s2 + bn + act -> pool -> fire (concat) -> conv 1x1 -> global pool."""
    nodes = [L.Node("normalize", L.Normalize((0.5,) * 3, (0.25,) * 3), (INPUT,))]
    nodes += L.ConvBNAct(3, 4, 3, stride=2, act=act).nodes("c1", "normalize")
    nodes += [L.Node("pool", L.AvgPool(2), ("c1_act",))]
    nodes += L.Fire(4, 2, 2, 2, act=act).nodes("fire", "pool")
    nodes += [L.Node("classifier", L.Conv2d(4, 3, 1, 1, 0, 1, True), ("fire_act",)),
              L.Node("gap", L.GlobalAvgPool(), ("classifier",))]
    g = Graph("tiny-fire", nodes, 3, input_shape=(3, 16, 16))
    return Model(g, random_weights(g, 1))


def tiny_dwsep_net():
    """dwsep blocks (depthwise s2, pointwise), a linear head on the flattened map."""
    nodes = [L.Node("normalize", L.Normalize((0.5,) * 3, (0.25,) * 3), (INPUT,))]
    nodes += L.ConvBNAct(3, 4, 3, act="square").nodes("c1", "normalize")
    nodes += L.DWSep(4, 8, 2).nodes("dw1", "c1_act")
    nodes += L.DWSep(8, 8, 2).nodes("dw2", "dw1_pw_act")
    nodes += [L.Node("gap", L.GlobalAvgPool(), ("dw2_pw_act",)),
              L.Node("fc", L.Linear(8, 5), ("gap",))]
    g = Graph("tiny-dwsep", nodes, 5, input_shape=(3, 8, 8))
    return Model(g, random_weights(g, 2))


@pytest.mark.parametrize("activation", ["prescaled", "merged"])
@pytest.mark.parametrize("policy", ["multiplexed", "packed", "per_channel", "per_channel_strided"])
@pytest.mark.parametrize("make", [tiny_fire_net, tiny_dwsep_net])
def test_program_on_mirror_matches_reference(make, policy, activation):
    model = make()
    prog = compile_model(model, 1024, layout=policy, activation=activation)
    assert prog.depth == model.graph.depth()
    x = np.random.default_rng(5).uniform(0, 1, model.graph.input_shape)
    mb = MirrorBackend(1024, depth=prog.depth)
    got = prog.run(mb, x)
    want = forward(model, x[None])[0]
    np.testing.assert_allclose(got, want, atol=1e-9, rtol=0)
    # every rotation the run made is in the key set, and counts match the plan
    assert mb.counts["rescale"] == prog.costs()["rescales"]
    assert mb.counts["rotate"] + mb.counts["rotate_hoisted"] == prog.costs()["rotations"]


def test_multiplexed_layout_after_stride_and_pool():
    prog = compile_model(tiny_fire_net(), 1024, activation="merged")
    lays = [prog.layouts[s.out] for s in prog.steps if s.kind == "linear"]
    # conv s2: 4x8x8 kept on the 16x16 base with gap 2; pool + squeeze: gap 4; concat: one stage
    assert (lays[0].gap, lays[0].base_h, lays[0].shape) == (2, 16, (4, 8, 8))
    assert (lays[1].gap, lays[1].shape) == (4, (2, 4, 4))
    assert (lays[2].gap, lays[2].shape) == (4, (4, 4, 4))
    assert lays[-1].shape == (3, 1, 1)
    assert [len(s.srcs) for s in prog.steps if s.kind == "linear"] == [1, 2, 2, 2]  # merged x^2, x
    assert "square" in prog.describe()


@pytest.mark.parametrize("activation", ["prescaled", "merged"])
def test_program_encrypted(hekit, activation):
    model = tiny_fire_net()
    prog = compile_model(model, hekit.slots, activation=activation)
    assert prog.depth == 7 == hekit.params.depth
    be = hekit.backend(prog.rotation_steps)  # exactly the compiled key set
    prog.prepare(be)  # pre-encode every diagonal at its level and scale
    encoded = be.cache.misses
    n_coeffs = sum(len(s.coeffs) for s in prog.steps if s.kind == "prescaled")
    assert encoded == prog.costs()["diagonals"] + n_coeffs
    x = np.random.default_rng(6).uniform(0, 1, model.graph.input_shape)
    got = prog.run(be, x)
    assert be.cache.misses == encoded  # the run found every plaintext pre-encoded
    want = forward(model, x[None])[0]
    assert np.max(np.abs(got - want)) < 1e-3 * max(1.0, np.abs(want).max())


def test_unsupported_ops():
    nodes = [L.Node("fc", L.Linear(12, 4), (INPUT,))]
    with pytest.raises(Exception):
        Graph("bad", nodes, 4, input_shape=(3, 2, 2))  # linear on a map: rejected by the graph
    nodes = [L.Node("gap", L.GlobalAvgPool(), (INPUT,)), L.Node("sq", L.Square(), ("gap",))]
    g = Graph("act-out", nodes, 3, input_shape=(3, 2, 2))
    with pytest.raises(NotImplementedError):
        compile_model(Model(g, {}), 64)


@pytest.mark.parametrize("policy", ["multiplexed", "packed", "per_channel"])
def test_global_pool_by_rotations(policy, hekit):
    model = tiny_fire_net()
    x = np.random.default_rng(7).uniform(0, 1, model.graph.input_shape)
    want = forward(model, x[None])[0]
    matrix = compile_model(model, 1024, layout=policy, global_pool="matrix")
    prog = compile_model(model, 1024, layout=policy, global_pool="rotate")
    assert prog.depth == matrix.depth == model.graph.depth()
    assert [s.kind for s in prog.steps][-1] == "sum"
    assert prog.costs()["pt_mults"] < matrix.costs()["pt_mults"]
    np.testing.assert_allclose(prog.run(MirrorBackend(1024, depth=prog.depth), x), want, atol=1e-9)
    if policy == "multiplexed":
        got = prog.run(hekit.backend(prog.rotation_steps), x)
        assert np.max(np.abs(got - want)) < 1e-3 * max(1.0, np.abs(want).max())
    # a linear layer after the pool: sum first, divide in the linear stage
    dw = tiny_dwsep_net()
    x = np.random.default_rng(8).uniform(0, 1, dw.graph.input_shape)
    prog = compile_model(dw, 1024, layout=policy, global_pool="rotate")
    np.testing.assert_allclose(prog.run(MirrorBackend(1024, depth=prog.depth), x),
                               forward(dw, x[None])[0], atol=1e-9)


def _output_slots(prog, backend, x):
    """The raw slots of the program's output ciphertexts and the mask of those holding outputs."""
    out = prog.run_encrypted(backend, prog.encrypt(backend, x))
    raw = np.concatenate([backend.decrypt(c) for c in out])
    lay = prog.layouts[prog.output]
    used = np.zeros(raw.size, dtype=bool)
    ct, slot = lay.flat_slot_index()
    used[np.asarray(ct) * prog.slots + np.asarray(slot)] = True
    return raw, used


@pytest.mark.parametrize("net", ["fire", "dwsep"])
@pytest.mark.parametrize("policy", ["multiplexed", "packed"])
def test_global_pool_sum_first_leaves_only_logits(net, policy, hekit):
    """GAP summed in place before the classifier: same logits, a small head, and every
    output slot that is not a logit exactly zero (no partial sums of the feature map)."""
    model = tiny_fire_net() if net == "fire" else tiny_dwsep_net()
    x = np.random.default_rng(9).uniform(0, 1, model.graph.input_shape)
    want = forward(model, x[None])[0]
    matrix = compile_model(model, 1024, layout=policy, global_pool="matrix")
    prog = compile_model(model, 1024, layout=policy, global_pool="sum")
    assert prog.depth == matrix.depth == model.graph.depth()
    assert "sum" in [s.kind for s in prog.steps]
    assert prog.costs()["pt_mults"] < matrix.costs()["pt_mults"]
    mirror = MirrorBackend(1024, depth=prog.depth)
    np.testing.assert_allclose(prog.run(mirror, x), want, atol=1e-9)
    raw, used = _output_slots(prog, mirror, x)
    assert np.all(raw[~used] == 0.0)
    np.testing.assert_allclose(np.sort(raw[used]), np.sort(want), atol=1e-9)
    if net == "fire":  # "rotate" sums after the classifier: partial sums left in the output
        rot = compile_model(model, 1024, layout=policy, global_pool="rotate")
        raw_rot, used_rot = _output_slots(rot, MirrorBackend(1024, depth=rot.depth), x)
        assert np.any(raw_rot[~used_rot] != 0.0)
    if policy == "multiplexed" and net == "fire":
        got = prog.run(hekit.backend(prog.rotation_steps), x)
        assert np.max(np.abs(got - want)) < 1e-3 * max(1.0, np.abs(want).max())


@pytest.mark.parametrize("activation", ["merged", "prescaled-fallback"])
def test_global_pool_sum_first_after_a_merged_activation(activation, hekit):
    """The last activation in merged form (x^2 and x as two sources: asked for, or the
    prescaled form's fallback for a channel with a = 0) still sums in place, one sum per
    source, instead of a dense map over every slot (hemet-fire2-4's head: 16,384 ct x pt)."""
    model = tiny_fire_net()
    if activation == "prescaled-fallback":
        model.weights["fire_act.a"] = model.weights["fire_act.a"].copy()
        model.weights["fire_act.a"][0] = 0.0
    opts = {"activation": "merged" if activation == "merged" else "prescaled"}
    prog = compile_model(model, 1024, global_pool="sum", **opts)
    matrix = compile_model(model, 1024, global_pool="matrix", **opts)
    sums = [s for s in prog.steps if s.kind == "sum" and s.name == "gap"]
    assert len(sums) == 2 and prog.depth == matrix.depth == model.graph.depth()
    assert prog.costs()["pt_mults"] < matrix.costs()["pt_mults"]
    x = np.random.default_rng(12).uniform(0, 1, model.graph.input_shape)
    want = forward(model, x[None])[0]
    mirror = MirrorBackend(1024, depth=prog.depth)
    np.testing.assert_allclose(prog.run(mirror, x), want, atol=1e-9)
    raw, used = _output_slots(prog, mirror, x)
    assert np.all(raw[~used] == 0.0)
    got = prog.run(hekit.backend(prog.rotation_steps), x)
    assert np.max(np.abs(got - want)) < 1e-3 * max(1.0, np.abs(want).max())


def test_plan_only_compile_has_the_same_costs():
    model = tiny_fire_net()
    full = compile_model(model, 1024)
    plan = compile_model(model, 1024, materialize=False)
    assert plan.costs() == full.costs() and plan.rotation_steps == full.rotation_steps
    assert not any(st.materialized for st in plan.stages)
    with pytest.raises(RuntimeError, match="plan only"):
        plan.run(MirrorBackend(1024, depth=plan.depth), np.zeros(model.graph.input_shape))


@pytest.mark.parametrize("make", [tiny_fire_net, tiny_dwsep_net])
def test_prescaled_activation(make, hekit):
    """y = x^2 + (b/a) x beside the square: same depth, half the diagonals of merging."""
    model = make()
    merged = compile_model(model, 1024, activation="merged")
    pre = compile_model(model, 1024, max_ratio=np.inf)
    assert pre.depth == merged.depth == model.graph.depth()
    assert "prescaled" in [s.kind for s in pre.steps]
    assert pre.costs()["diagonals"] < merged.costs()["diagonals"]
    assert pre.costs()["rotations"] <= merged.costs()["rotations"]
    x = np.random.default_rng(9).uniform(0, 1, model.graph.input_shape)
    want = forward(model, x[None])[0]
    np.testing.assert_allclose(pre.run(MirrorBackend(1024, depth=pre.depth), x), want, atol=1e-9)
    if make is tiny_fire_net:
        got = pre.run(hekit.backend(pre.rotation_steps), x)
        assert np.max(np.abs(got - want)) < 1e-3 * max(1.0, np.abs(want).max())
    # an activation with a = 0 somewhere falls back to merging
    w = dict(model.weights)
    key = next(k for k in w if k.endswith(".a"))
    w[key] = w[key].copy()
    w[key][0] = 0.0
    fallback = compile_model(Model(model.graph, w), 1024, max_ratio=np.inf)
    n_pre = sum(s.kind == "prescaled" for s in pre.steps)
    assert sum(s.kind == "prescaled" for s in fallback.steps) == n_pre - 1
    np.testing.assert_allclose(fallback.run(MirrorBackend(1024, depth=fallback.depth), x),
                               forward(Model(model.graph, w), x[None])[0], atol=1e-9)


def test_expression_algebra_residual_add():
    """expr_add (for a future residual op): conv(x) + x as one expression, one stage."""
    from hemet.he import Layout, LinearStage
    from hemet.he import sparse as S
    from hemet.he.program import Expr, expr_add
    rng = np.random.default_rng(11)
    shape = (4, 8, 8)
    conv = S.conv2d(shape, rng.normal(size=(4, 4, 3, 3)), rng.normal(size=4))
    x_expr = Expr(shape, {0: S.identity(shape)})
    e = expr_add(x_expr.apply(conv), x_expr)
    lay = Layout.packed(*shape, 1024)
    stage = LinearStage([(lay, e.terms[0])], lay, bias=e.bias)
    x = rng.normal(size=shape)
    mb = MirrorBackend(1024)
    got = lay.unpack([o.vec for o in stage.evaluate(mb, [[mb.encrypt(v) for v in lay.pack(x)]])])
    np.testing.assert_allclose(got, conv(x) + x, atol=1e-9)


def test_choose_layout_policies():
    from hemet.he import Layout
    from hemet.he.program import choose_layout
    src = Layout.packed(4, 8, 8, 1024)
    assert choose_layout("multiplexed", (8, 4, 4), src, 1024) == Layout(8, 4, 4, 8, 8, 2, 1024)
    assert choose_layout("multiplexed", (8, 8, 8), src, 1024) == Layout(8, 8, 8, 8, 8, 1, 1024)
    # odd sizes: no power-of-two ratio -> repack (the conversion happens inside the stage)
    odd = Layout.packed(4, 6, 6, 1024)
    assert choose_layout("multiplexed", (4, 3, 3), odd, 1024).gap == 2
    assert choose_layout("multiplexed", (4, 2, 2), Layout(4, 3, 3, 6, 6, 2, 1024), 1024) == \
        Layout.packed(4, 2, 2, 1024)
    assert choose_layout("packed", (8, 4, 4), src, 1024) == Layout.packed(8, 4, 4, 1024)
    assert choose_layout("per_channel", (8, 4, 4), src, 1024).n_ciphertexts == 8
    pcs = choose_layout("per_channel_strided", (8, 4, 4), Layout.per_channel(4, 8, 8, 1024), 1024)
    assert pcs == Layout.per_channel(8, 4, 4, 1024, gap=2, base_h=8, base_w=8)
    assert choose_layout("per_channel_strided", (10, 1, 1), src, 1024).n_ciphertexts == 10
    assert choose_layout("multiplexed", (10, 1, 1), src, 1024) == Layout.vector(10, 1024)
    with pytest.raises(ValueError):
        choose_layout("diagonal", (8, 4, 4), src, 1024)


def test_odd_sizes_program_on_mirror():
    nodes = [L.Node("c1", L.Conv2d(3, 4, 3, 2, 1, 1, True), (INPUT,)),
             L.Node("a1", L.Poly(4), ("c1",)),
             L.Node("c2", L.Conv2d(4, 4, 3, 2, 1, 1, True), ("a1",)),
             L.Node("gap", L.GlobalAvgPool(), ("c2",))]
    g = Graph("odd", nodes, 4, input_shape=(3, 6, 6))
    model = Model(g, random_weights(g, 4))
    prog = compile_model(model, 256)
    x = np.random.default_rng(1).uniform(0, 1, (3, 6, 6))
    np.testing.assert_allclose(prog.run(MirrorBackend(256, depth=prog.depth), x),
                               forward(model, x[None])[0], atol=1e-9)


def test_run_report_and_pinned_prepare(hekit):
    from hemet.he.program import format_report
    model = tiny_fire_net()
    prog = compile_model(model, hekit.slots)
    n = hekit.ctx.n
    be = hekit.backend(prog.rotation_steps, max_cache_bytes=60 * 3 * n * 8)
    done = prog.prepare(be)
    assert be.cache.bytes <= 60 * 3 * n * 8 and be.cache.pinned_bytes == be.cache.bytes
    # deepest stage first: the last linear stage (lowest level) is fully prepared
    last = max(i for i, s in enumerate(prog.steps) if s.kind == "linear")
    assert done[last] == prog.steps[last].stage.costs()["diagonals"]
    x = np.random.default_rng(6).uniform(0, 1, model.graph.input_shape)
    rep = []
    out = prog.run_encrypted(be, prog.encrypt(be, x), report=rep)
    got = prog.layouts[prog.output].unpack([be.decrypt(c) for c in out]).reshape(prog.output_shape)
    want = forward(model, x[None])[0]
    assert np.max(np.abs(got - want)) < 1e-3 * max(1.0, np.abs(want).max())
    assert len(rep) == len(prog.steps)
    assert sum(r["pt_mults"] for r in rep) == prog.costs()["pt_mults"]
    assert sum(r["rotations"] for r in rep) == prog.costs()["rotations"]
    assert [r["level"] for r in rep] == [hekit.params.depth - prog.consumed[s.out] for s in prog.steps]
    table = format_report(rep)
    assert "total" in table and rep[0]["name"] in table


def test_key_plan_caps_the_galois_keys(hekit):
    """Fewer keys than steps: dropped steps run as paths of kept ones; same result."""
    model = tiny_fire_net()
    prog = compile_model(model, hekit.slots)
    all_steps = prog.rotation_steps
    log_slots = hekit.slots.bit_length() - 1
    keys, paths = prog.key_plan(log_slots + 4)
    assert len(keys) <= log_slots + 4 < len(all_steps)
    assert set(paths) | (keys & all_steps) == all_steps
    for s, p in paths.items():
        assert sum(p) % hekit.slots == s and all(x in keys for x in p)
    assert prog.key_plan(None) == (all_steps, {})
    be = hekit.backend(keys)
    be.paths = paths
    x = np.random.default_rng(6).uniform(0, 1, model.graph.input_shape)
    got = prog.run(be, x)
    want = forward(model, x[None])[0]
    assert np.max(np.abs(got - want)) < 1e-3 * max(1.0, np.abs(want).max())
    n_rot = be.counts["rotate"] + be.counts["rotate_hoisted"]
    assert n_rot >= prog.costs()["rotations"] + prog.key_plan_costs(paths) - len(paths)


@pytest.mark.parametrize("policy", ["multiplexed", "per_channel_strided", "packed"])
def test_pool_by_rotations_in_place(policy, hekit):
    """pool="rotate": 2x2 average pools as rotate-and-add (no level, fewer diagonals next)."""
    from hemet.he.layout import PooledView
    model = tiny_fire_net()
    prog = compile_model(model, hekit.slots, layout=policy, pool="rotate")
    base = compile_model(model, hekit.slots, layout=policy, pool="matrix")
    assert any(isinstance(prog.layouts[s.out], PooledView) for s in prog.steps)
    assert prog.depth == base.depth and prog.costs()["pt_mults"] < base.costs()["pt_mults"]
    x = np.random.default_rng(6).uniform(0, 1, model.graph.input_shape)
    want = forward(model, x[None])[0]
    got = prog.run(MirrorBackend(hekit.slots, depth=prog.depth), x)
    assert np.max(np.abs(got - want)) < 1e-9 * max(1.0, np.abs(want).max())
    if policy == "multiplexed":
        be = hekit.backend(prog.rotation_steps)
        got = prog.run(be, x)
        assert np.max(np.abs(got - want)) < 1e-3 * max(1.0, np.abs(want).max())


def test_pool_rotate_falls_back_when_not_a_scaled_source():
    """A pool right after a linear op (no materialized value under it) folds into the map."""
    nodes = [L.Node("c1", L.Conv2d(3, 4, 3, 1, 1, 1, True), (INPUT,)),
             L.Node("pool", L.AvgPool(2), ("c1",)),
             L.Node("a1", L.Poly(4), ("pool",)),
             L.Node("gap", L.GlobalAvgPool(), ("a1",))]
    g = Graph("p", nodes, 4, input_shape=(3, 8, 8))
    model = Model(g, random_weights(g, 3))
    prog = compile_model(model, 1024, pool="rotate", global_pool="matrix")
    assert not any(s.kind == "sum" for s in prog.steps)
    x = np.random.default_rng(1).uniform(0, 1, (3, 8, 8))
    got = prog.run(MirrorBackend(1024, depth=prog.depth), x)
    want = forward(model, x[None])[0]
    assert np.max(np.abs(got - want)) < 1e-9 * max(1.0, np.abs(want).max())


def test_prepared_plaintexts_are_the_ones_the_run_uses(hekit):
    """After ``prepare`` (unbounded cache), a run encodes nothing: the plaintexts are found
    under the scales the run asks for, even where a rescale lands one ulp from the plan."""
    model = tiny_fire_net()
    x = np.random.default_rng(11).uniform(0, 1, model.graph.input_shape)
    prog = compile_model(model, hekit.ctx.slots)
    be = hekit.backend(prog.rotation_steps, max_cache_bytes=None)
    prog.prepare(be)
    pinned, misses = len(be.cache), be.cache.misses
    be.counts.clear()
    got = prog.run(be, x)
    assert be.cache.misses == misses and len(be.cache) == pinned
    assert be.counts["encode"] == 0
    want = forward(model, x[None])[0]
    assert np.max(np.abs(got - want)) < 1e-3 * max(1.0, np.abs(want).max())


def pool_over_two_ciphertexts_net():
    """conv 3 -> 8 channels on 16 x 16 (two 1024-slot ciphertexts), pool, conv, pool, head."""
    nodes = [L.Node("normalize", L.Normalize((0.5,) * 3, (0.25,) * 3), (INPUT,))]
    nodes += L.ConvBNAct(3, 8, 3, act="poly").nodes("c1", "normalize")
    nodes += [L.Node("pool", L.AvgPool(2), ("c1_act",))]
    nodes += L.ConvBNAct(8, 8, 3, act="poly").nodes("c2", "pool")
    nodes += [L.Node("classifier", L.Conv2d(8, 3, 1, 1, 0, 1, True), ("c2_act",)),
              L.Node("gap", L.GlobalAvgPool(), ("classifier",))]
    g = Graph("two-ct-pool", nodes, 3, input_shape=(3, 16, 16))
    return Model(g, random_weights(g, 3))


def test_repack_after_pool_gathers_ciphertexts(hekit):
    model = pool_over_two_ciphertexts_net()
    x = np.random.default_rng(8).uniform(0, 1, model.graph.input_shape)
    want = forward(model, x[None])[0]
    progs = {r: compile_model(model, 1024, repack=r) for r in (False, True)}
    for r, prog in progs.items():
        mb = MirrorBackend(1024, depth=prog.depth)
        np.testing.assert_allclose(prog.run(mb, x), want, atol=1e-9, rtol=0)
    plain, rep = progs[False], progs[True]
    assert rep.depth == plain.depth + 1  # one level for the gathering stage
    c2 = {r: next(s.stage for s in p.steps if s.kind == "linear" and s.stage.name == "c2_bn")
          for r, p in progs.items()}
    assert c2[False].costs()["in_ciphertexts"] == [2] and c2[True].costs()["in_ciphertexts"] == [1]
    assert c2[True].n_diagonals < c2[False].n_diagonals
    # and encrypted, at the depth it needs
    kit = type(hekit)(depth=rep.depth)
    be = kit.backend(rep.rotation_steps)
    got = rep.run(be, x)
    assert np.max(np.abs(got - want)) < 1e-3 * max(1.0, np.abs(want).max())


@pytest.mark.parametrize("make", [tiny_fire_net, tiny_dwsep_net])
def test_compile_drops_the_maps_of_expressions_no_node_reads_again(make, monkeypatch):
    """A wide conv's map has millions of entries: once its stage is built and no later node
    reads its expression, the compiler must not hold it (hemet-fire1-4 held 953 MB)."""
    import gc
    import weakref
    from hemet.he import program
    seen, alive_at_last = [], []
    real = program.LinearStage

    def spy(inputs, *a, **k):
        gc.collect()
        alive_at_last[:] = [r() is not None for r in seen]
        stage = real(inputs, *a, **k)
        seen.extend(weakref.ref(m) for _, m in inputs)
        return stage

    monkeypatch.setattr(program, "LinearStage", spy)
    prog = compile_model(make(), 256, materialize=False)
    assert len(prog.stages) >= 3 and len(alive_at_last) >= 2
    assert not any(alive_at_last), alive_at_last
