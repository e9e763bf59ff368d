"""bench/layouts.py on a tiny model with small INSECURE parameters: a network prefix in both
layouts decrypts to the plaintext reference, and one channel per ciphertext costs more products."""
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import ckks
from hemet import layers as L
from hemet.graph import INPUT, Graph
from hemet.modelfile import Model
from hemet.reference import forward
from hemet.zoo import random_weights

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
import layouts  # noqa: E402


def tiny_net() -> Model:
    """normalize -> conv + bn + poly -> pool -> conv + bn + poly -> conv 1x1 -> global pool, 3x8x8."""
    nodes = [L.Node("normalize", L.Normalize((0.5,) * 3, (0.25,) * 3), (INPUT,))]
    nodes += L.ConvBNAct(3, 4, 3, act="poly").nodes("c1", "normalize")
    nodes += [L.Node("pool", L.AvgPool(2), ("c1_act",))]
    nodes += L.ConvBNAct(4, 4, 3, act="poly").nodes("c2", "pool")
    nodes += [L.Node("classifier", L.Conv2d(4, 3, 1, 1, 0, 1, True), ("c2_act",)),
              L.Node("gap", L.GlobalAvgPool(), ("classifier",))]
    g = Graph("tiny-layouts", nodes, 3, input_shape=(3, 8, 8))
    return Model(g, random_weights(g, 3))


@pytest.fixture(scope="module")
def net():
    return tiny_net()


def insecure(levels, log_n=10):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ckks.SecurityWarning)
        return ckks.Parameters(log_n=log_n, depth=levels, dnum=1, allow_insecure=True)


def test_prefix_keeps_the_needed_nodes_and_weights(net):
    sub = layouts.prefix_model(net, "c2_act")
    assert [n.name for n in sub.graph.nodes] == [n.name for n in net.graph.nodes][:8]
    assert sub.graph.output == "c2_act" and "classifier.weight" not in sub.weights
    assert sub.weights["c2_conv.weight"] is net.weights["c2_conv.weight"]
    x = np.random.default_rng(0).uniform(0, 1, (2, 3, 8, 8))
    # the prefix's output is the full network's intermediate feature map
    np.testing.assert_array_equal(forward(sub, x), forward(net, x, return_all=True)["c2_act"])
    with pytest.raises(SystemExit):
        layouts.prefix_model(net, "nope")


def test_prefix_leaves_out_a_parallel_branch():
    nodes = [L.Node("normalize", L.Normalize((0.5,) * 3, (0.25,) * 3), (INPUT,))]
    nodes += L.Fire(3, 2, 2, 2, act="poly").nodes("fire", "normalize")
    nodes += [L.Node("gap", L.GlobalAvgPool(), ("fire_act",)), L.Node("fc", L.Linear(4, 3), ("gap",))]
    g = Graph("tiny-fire", nodes, 3, input_shape=(3, 8, 8))
    sub = layouts.prefix_model(Model(g, random_weights(g, 0)), "fire_expand1_bn")
    names = [n.name for n in sub.graph.nodes]
    assert "fire_squeeze_act" in names and not any(n.startswith("fire_expand3") for n in names)
    assert sub.graph.shapes["fire_expand1_bn"] == (2, 8, 8)


@pytest.mark.parametrize("until", ["c2_act", "c2_bn"])
def test_both_layouts_decrypt_to_the_reference(net, until):
    sub = layouts.prefix_model(net, until)
    levels = layouts.levels_needed(sub)
    # an activation output gets one spare level so that it never sits at level 0
    assert levels == 4 + (until == "c2_act") - (until == "c2_bn")
    x = np.random.default_rng(1).uniform(0, 1, (3, 8, 8))
    res = layouts.compare(sub, x, insecure(levels), repeat=2, warmup=False, verbose=False)
    mux, per = (res["layouts"][lay] for lay in layouts.LAYOUTS)
    for r in (mux, per):
        assert r["max_rel_err"] < 1e-3
        assert len(r["seconds"]) == 2 and r["median_s"] > 0
        assert r["per_step"][-1]["name"] == until
    assert per["pt_mults"] > mux["pt_mults"]
    assert per["ciphertexts"] > mux["ciphertexts"]
    assert per["input_ciphertexts"] == 3 and mux["input_ciphertexts"] == 1
    assert res["parameters"]["slots"] == 512
    assert res["ratio"] == round(per["median_s"] / mux["median_s"], 2)


def test_network_counts_cover_both_layouts(net):
    got = layouts.network_counts(net)
    assert got["log_n"] >= 13
    assert got["per_channel_strided"]["pt_mults"] > got["multiplexed"]["pt_mults"] > 0
    assert got["multiplexed"]["depth"] == got["per_channel_strided"]["depth"] == net.graph.depth()
