"""The search space and the greedy search (accuracy functions stubbed where fine-tuning is not
the point), and the shipped result: the search reproduces hemet-fire1-4."""
import json

import numpy as np
import pytest

from hemet import layers as L
from hemet import modelfile, zoo
from hemet.graph import INPUT, Graph
from hemet.he.program import compile_model
from hemet.search import search as S
from hemet.search.blocks import cost_proxy, find_blocks, merge_block, replace_block, same_structure
from hemet.search.calibrate import Calibration
from hemet.search.counts import OPS

pytestmark = pytest.mark.filterwarnings("ignore::ckks.SecurityWarning")


def test_replacing_every_fire_gives_the_zoo_hemet_networks():
    g = zoo.build("squeezenet")
    assert [b.name for b in find_blocks(g)] == ["fire1", "fire2", "fire3", "fire4"]
    want = {4: "hemet-fire4", 3: "hemet-fire3-4", 2: "hemet-fire2-4", 1: "hemet-fire1-4"}
    for i in (4, 3, 2, 1):
        g = replace_block(g, next(b for b in find_blocks(g) if b.name == f"fire{i}"))
        assert same_structure(g, zoo.build(want[i]))
    assert not same_structure(g, zoo.build("hemet-fire2-4"))


def _depth(g, slots=1024):
    return compile_model(modelfile.Model(g, zoo.random_weights(g, 0)), slots, materialize=False).depth


def test_changes_save_two_levels():
    """Both changes save two levels (on a small fire/dwsep net: a merged SqueezeNet fire is
    too large to compile, hence the cost proxy, which must keep depth and output)."""
    from test_program import tiny_dwsep_net
    for g in (_small_fire_net().graph, tiny_dwsep_net().graph):
        depth = _depth(g)
        for b in find_blocks(g):
            for change in (replace_block, merge_block):
                g2 = change(g, b)
                assert _depth(g2) == depth - 2
                assert _depth(cost_proxy(g2)) == depth - 2
                assert g2.shapes[g2.output] == g.shapes[g.output]
        b = find_blocks(g)[0]
        assert merge_block(merge_block(g, b), b) is None
        merged = merge_block(g, b)
        assert same_structure(cost_proxy(g), g) and not same_structure(cost_proxy(merged), merged)


def _flat_calibration():
    """Latency proportional to limbs for every op at both rings (a stand-in calibration)."""
    cal = Calibration({"format": "hemet-calibration", "version": 1, "machine": {}, "tables": {}})
    for log_n, depth in ((12, 30), (13, 30), (14, 30), (15, 30), (16, 30)):
        cal.add({"log_n": log_n, "depth": depth, "dnum": 1, "threads": 2,
                 "ops": {op: [1e-4 * (lv + 1) * 2 ** (log_n - 15) for lv in range(depth + 1)]
                         for op in OPS}})
    return cal


def _small_fire_net():
    nodes = [L.Node("normalize", L.Normalize((0.5,) * 3, (0.25,) * 3), (INPUT,))]
    nodes += L.ConvBNAct(3, 8, 3).nodes("conv1", "normalize")
    nodes += L.Fire(8, 4, 8, 8).nodes("fire1", "conv1_act")
    nodes += [L.Node("pool", L.AvgPool(2), ("fire1_act",))]
    nodes += L.Fire(16, 4, 8, 8).nodes("fire2", "pool")
    nodes += [L.Node("classifier", L.Conv2d(16, 10, 1, 1, 0, 1, True), ("fire2_act",)),
              L.Node("gap", L.GlobalAvgPool(), ("classifier",))]
    g = Graph("small-fire", nodes, 10, input_shape=(3, 8, 8))
    return modelfile.Model(g, zoo.random_weights(g, 0))


def test_accuracy_gate_and_decision_log(tmp_path):
    """A change is kept only when the stubbed accuracy stays within the tolerance."""
    model = _small_fire_net()
    seen = []

    def acc(graph, weights):
        seen.append(graph)
        names = {n.name for n in graph.nodes}
        # the replacement of fire2 costs 2 points, anything else 0.1
        return (0.78 if "conv_f2_conv" in names else 0.799 if len(seen) > 1 else 0.80), weights

    cfg = S.SearchConfig(threads=2, tolerance=0.005)
    res = S.greedy_search(model, cfg, tmp_path, _flat_calibration(), log=lambda m: None, accuracy_fn=acc)
    dec = [d for d in res["decisions"] if d.get("reason") != "not applicable"]
    by = {(d["block"], d["change"]): d for d in dec}
    assert res["accuracy_check"] == "fine-tune"
    assert any(d["kept"] for d in dec if d["block"] == "fire1")
    f2 = [d for d in dec if d["block"] == "fire2"]
    assert by[("fire2", "replace")]["kept"] is False or by[("fire2", "replace")]["accuracy"] == 0.78
    assert not (by.get(("fire2", "replace"), {}).get("kept"))
    for d in dec:
        if "accuracy" in d and d["accuracy"] != "skipped" and d["kept"]:
            assert d["accuracy"] >= d["accuracy_before"] - 0.005
            assert d["predicted_s"] < d["latency_before_s"]
    final = modelfile.load(res["model"])
    assert final.graph.depth() < model.graph.depth()
    assert json.loads((tmp_path / "search.json").read_text())["decisions"] == res["decisions"]
    assert f2


def test_reference_restarts_the_same_layers_on_both_sides(tmp_path):
    """Each block's yardstick is the current network with the block's layers (and the
    consumers a change reshapes) back at initialization; the candidate restarts the same
    layers, so a merge (which keeps the block's layers) has no head start either."""
    model = _small_fire_net()
    trained = {k: v + 0.25 for k, v in model.weights.items()}   # stands for trained weights
    model = modelfile.Model(model.graph, trained)
    init = zoo.random_weights(model.graph, 0)
    calls = []

    def acc(graph, weights):
        calls.append((graph, weights))
        if len(calls) == 1:        # the starting network: carried over untouched
            assert all(np.array_equal(weights[k], trained[k]) for k in trained)
            return 0.80, weights
        names = {n.name for n in graph.nodes}
        if "fire1_squeeze_act" in names and len(calls) == 2:   # fire1's reference
            for k in ("fire1_squeeze_conv.weight", "fire1_expand3_conv.weight", "fire2_squeeze_conv.weight"):
                assert np.array_equal(weights[k], init[k])
            assert np.array_equal(weights["conv1_conv.weight"], trained["conv1_conv.weight"])
            return 0.70, weights   # restarted layers cost accuracy ...
        return 0.69, weights       # ... and each candidate is within the tolerance of that

    cfg = S.SearchConfig(threads=2, tolerance=0.02)
    res = S.greedy_search(model, cfg, tmp_path, _flat_calibration(), log=lambda m: None, accuracy_fn=acc)
    tried = [d for d in res["decisions"] if "accuracy" in d and d["block"] == "fire1"]
    assert tried and tried[0]["accuracy_before"] == 0.70 and tried[0]["kept"]
    # against the fully trained network (0.80) the same candidate would have been rejected
    assert tried[0]["accuracy"] < 0.80 - cfg.tolerance
    # the candidate restarted the reference's layers that it has
    cand = calls[2][1]
    g2 = calls[2][0]
    for n in g2.nodes:
        if n.name.startswith("fire1_") and f"{n.name}.weight" in cand and f"{n.name}.weight" in init:
            assert np.array_equal(cand[f"{n.name}.weight"], zoo.random_weights(g2, 0)[f"{n.name}.weight"])
    assert set(json.loads((tmp_path / S.STATE).read_text())["references"]) >= {"fire1"}


def test_search_with_a_real_finetune(tmp_path):
    """The torch fine-tune behind the accuracy check runs end to end on a tiny CIFAR-10."""
    pytest.importorskip("torch", reason="torch not installed")
    import importlib.util
    from pathlib import Path
    from hemet.search.finetune import FinetuneConfig
    spec = importlib.util.spec_from_file_location(
        "hemet_test_data", Path(__file__).resolve().parents[1] / "hemet" / "conftest.py")
    fake = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fake)
    data = fake.make_cifar10(tmp_path / "data")
    small = _small_fire_net().graph
    graph = Graph("small-fire-32", list(small.nodes), 10, input_shape=(3, 32, 32))
    model = modelfile.Model(graph, zoo.random_weights(graph, 0))
    ft = FinetuneConfig(steps=3, batch_size=8, n_val=20, eval_images=20, data=str(data),
                        compile=False)
    cfg = S.SearchConfig(threads=2, tolerance=1.0, finetune=ft)   # any accuracy passes
    res = S.greedy_search(model, cfg, tmp_path / "out", _flat_calibration(), log=lambda m: None)
    assert res["accuracy_check"] == "fine-tune"
    accs = [d["accuracy"] for d in res["decisions"] if "accuracy" in d]
    refs = json.loads((tmp_path / "out" / S.STATE).read_text())["references"]
    assert accs and refs and all(0.0 <= a <= 1.0 for a in accs + list(refs.values()))
    assert modelfile.load(res["model"]).graph.depth() < model.graph.depth()


def test_search_from_a_depthwise_separable_network(tmp_path):
    """The search also starts from a MobileNet-style network: every dwsep block is visited
    and each kept change lowers the depth."""
    from test_program import tiny_dwsep_net
    model = tiny_dwsep_net()
    res = S.greedy_search(model, S.SearchConfig(threads=2), tmp_path, _flat_calibration(),
                          log=lambda m: None)
    assert sorted({d["block"] for d in res["decisions"]}) == ["dw1", "dw2"]
    kept = [d for d in res["decisions"] if d["kept"]]
    assert kept and all(d["predicted_s"] < d["latency_before_s"] or d["completion_s"] < d["completion_without_s"]
                        for d in kept)
    final = modelfile.load(res["model"]).graph
    assert final.depth() == model.graph.depth() - 2 * len(kept)
    assert res["final"]["predicted_s"] < res["start"]["predicted_s"]


def test_resume_gives_the_same_result(tmp_path):
    model = _small_fire_net()
    cfg = S.SearchConfig(threads=2)
    cal = _flat_calibration()
    full = S.greedy_search(model, cfg, tmp_path / "a", cal, log=lambda m: None)

    class Stop(Exception):
        pass

    def stop_in_second_block(msg):  # interrupted once the first block's decision is saved
        if msg.startswith("[2/"):
            raise Stop

    with pytest.raises(Stop):
        S.greedy_search(model, cfg, tmp_path / "b", cal, log=stop_in_second_block,
                        accuracy_fn=lambda g, w: (0.5, w))
    state = json.loads((tmp_path / "b" / S.STATE).read_text())
    assert state["next_block"] == 1
    res = S.greedy_search(model, cfg, tmp_path / "b", cal, resume=True, log=lambda m: None,
                          accuracy_fn=lambda g, w: (0.5, w))
    assert same_structure(modelfile.load(res["model"]).graph, modelfile.load(full["model"]).graph)
    assert [d["block"] for d in res["decisions"]] == [d["block"] for d in full["decisions"]]


def test_search_without_finetune_reproduces_the_shipped_hemet_network(tmp_path, capsys):
    """From SqueezeNet-CIFAR with the shipped calibration: hemet-fire1-4 (issue 5's bar)."""
    from hemet.cli import main
    rc = main(["search", "--model", "squeezenet", "--finetune-steps", "0", "--out", str(tmp_path),
               "--json"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert res["accuracy_check"] == "skipped"
    got = modelfile.load(res["model"]).graph
    assert same_structure(got, zoo.build("hemet-fire1-4"))
    assert res["final"]["depth"] == 12 and res["final"]["log_n"] == 15  # graph 11 + repack
    assert res["final"]["repack"] and not res["start"]["repack"]
    assert res["final"]["predicted_s"] < res["start"]["predicted_s"]
    kept = [d for d in res["decisions"] if d["kept"]]
    assert [(d["block"], d["change"], d["accuracy"]) for d in kept] == [
        (f"fire{i}", "replace", "skipped") for i in (1, 2, 3, 4)]
