"""The plan's operation counts equal what the executor does, step by step and level by level."""
import warnings
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import ckks
from hemet import layers as L
from hemet.graph import INPUT, Graph
from hemet.he.program import compile_model
from hemet.modelfile import Model
from hemet.search.counts import count_program
from hemet.zoo import random_weights
from recording import RecordingHEBackend, RecordingMirror, per_step
from test_program import tiny_dwsep_net, tiny_fire_net

pytestmark = pytest.mark.filterwarnings("ignore::ckks.SecurityWarning")
FETCH = ("encode", "convert", "convert1")


def _params(depth, log_n=11):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ckks.SecurityWarning)
        return ckks.Parameters(log_n=log_n, depth=depth, dnum=2, allow_insecure=True)


@pytest.mark.parametrize("make", [tiny_fire_net, tiny_dwsep_net])
def test_counts_equal_the_encrypted_run(make):
    """Key-plan paths, pinned NTT / compact / unpinned plaintexts, every backend call."""
    model = make()
    prog = compile_model(model, 1024, global_pool="rotate")
    params = _params(prog.depth)
    steps, paths = prog.key_plan(12)
    assert paths  # some steps run as paths
    ctx = ckks.Context(params)
    kg = ckks.KeyGenerator(ctx)
    ev = ckks.Evaluator(ctx, kg.relin_key(), kg.galois_keys(sorted(steps)))
    n_pt = sum(st.n_diagonals for st in prog.stages)
    budget = int(n_pt * 0.5 * params.n * 8)  # room for about half of them, compact
    be = RecordingHEBackend(ev, ckks.Encryptor(ctx, kg.public_key), None,
                            max_cache_bytes=budget, rotation_paths=paths)
    prog.prepare(be)
    cts = prog.encrypt(be, np.random.default_rng(0).uniform(0, 1, model.graph.input_shape))
    be.ops.clear()
    got = per_step(prog, be, cts)
    pc = count_program(prog, params, paths, cache_bytes=budget, warm=False, encoder=ctx.encoder)
    assert len(pc.steps) == len(got)
    kinds = Counter()
    for (ops, cnt), row in zip(got, pc.steps):
        assert Counter({k: v for k, v in row.ops.items() if k[0] not in FETCH}) == ops, row.name
        assert row.total("encode") == cnt["encode"], row.name
        assert row.total("convert") + row.total("convert1") == cnt["encode_compact"], row.name
        kinds.update(k[0] for k in row.ops)
    assert kinds["encode"] and kinds["convert"] and kinds["rotate"] and kinds["hoist_step"]


def _conv_net(c1, c2, stride, k, hw, act):
    nodes = [L.Node("normalize", L.Normalize((0.5,) * 3, (0.25,) * 3), (INPUT,))]
    nodes += L.ConvBNAct(3, c1, k, stride=stride, act=act).nodes("a", "normalize")
    nodes += L.ConvBNAct(c1, c2, 3, act=act).nodes("b", "a_act")
    nodes += [L.Node("classifier", L.Conv2d(c2, 3, 1, 1, 0, 1, True), ("b_act",)),
              L.Node("gap", L.GlobalAvgPool(), ("classifier",))]
    g = Graph("conv-net", nodes, 3, input_shape=(3, hw, hw))
    return Model(g, random_weights(g, 3))


@settings(max_examples=6, deadline=None)
@given(c1=st.sampled_from([2, 4, 8]), c2=st.sampled_from([2, 4, 8]), stride=st.sampled_from([1, 2]),
       k=st.sampled_from([1, 3]), hw=st.sampled_from([4, 8]), act=st.sampled_from(["poly", "square"]),
       layout=st.sampled_from(["multiplexed", "packed", "per_channel"]),
       activation=st.sampled_from(["prescaled", "merged"]))
def test_counts_equal_the_mirror_run(c1, c2, stride, k, hw, act, layout, activation):
    """Everything pinned (no fetch costs): per step and level, what the mirror executes."""
    model = _conv_net(c1, c2, stride, k, hw, act)
    prog = compile_model(model, 256, layout=layout, activation=activation, global_pool="rotate")
    mb = RecordingMirror(256, depth=prog.depth)
    x = np.random.default_rng(1).uniform(0, 1, model.graph.input_shape)
    got = per_step(prog, mb, prog.encrypt(mb, x))
    params = type("P", (), {"n": 512, "q": mb.primes, "scale": mb.fresh_scale, "depth": prog.depth})
    pc = count_program(prog, params, cache_bytes=None)
    for (ops, _), row in zip(got, pc.steps):
        assert not any(k[0] in FETCH for k in row.ops)
        assert Counter(row.ops) == ops, row.name
    tot = pc.summary()
    assert tot["rotations"] == prog.costs()["rotations"]
    assert tot["pt_mults"] == prog.costs()["pt_mults"]


def test_unpinned_plaintexts_cost_an_encode_each_run():
    model = tiny_fire_net()
    prog = compile_model(model, 1024, global_pool="rotate", materialize=False)
    params = _params(prog.depth)
    n_pt = sum(st.n_diagonals for st in prog.stages)
    none = count_program(prog, params, cache_bytes=0).summary()
    assert none["encodes"] == n_pt + sum(1 for s in prog.steps if s.kind == "prescaled")
    assert none["conversions"] == 0
    everything = count_program(prog, params, cache_bytes=None).summary()
    assert everything["encodes"] == everything["conversions"] == 0
