import pytest

from hemet import layers as L
from hemet import zoo
from hemet.graph import INPUT, Graph, GraphError


def test_conv_shapes_and_weights():
    c = L.Conv2d(3, 8, 3, 2)
    assert c.padding == 1
    assert c.out_shape([(3, 32, 32)]) == (8, 16, 16)
    assert c.weight_shapes() == {"weight": (8, 3, 3, 3), "bias": (8,)}
    assert c.macs([(3, 32, 32)], (8, 16, 16)) == 8 * 16 * 16 * 3 * 9
    dw = L.depthwise(16, 3, 2)
    assert dw.depthwise and dw.weight_shapes()["weight"] == (16, 1, 3, 3)
    assert dw.out_shape([(16, 9, 9)]) == (16, 5, 5)
    pw = L.pointwise(16, 4, bias=False)
    assert pw.weight_shapes() == {"weight": (4, 16, 1, 1)}
    assert pw.out_shape([(16, 7, 7)]) == (4, 7, 7)


@pytest.mark.parametrize("make", [
    lambda: L.Conv2d(3, 8, 0),
    lambda: L.Conv2d(3, 8, 3, stride=3),
    lambda: L.Conv2d(3, 8, 3, groups=2),
    lambda: L.Conv2d(3, 8, 3, padding=-2),
    lambda: L.Conv2d(3.0, 8, 3),
    lambda: L.BatchNorm(0),
    lambda: L.BatchNorm(4, eps=0),
    lambda: L.Normalize((0.5,), (0.0,)),
    lambda: L.Normalize((0.5, 0.5), (1.0,)),
    lambda: L.Poly(-1),
    lambda: L.Linear(0, 3),
    lambda: L.Node("bad name", L.Square(), ("x",)),
    lambda: L.Node("cat", L.Concat(), ("x",)),
    lambda: L.Node("sq", L.Square(), ("x", "y")),
])
def test_invalid_layers_raise(make):
    with pytest.raises(L.LayerError):
        make()


@pytest.mark.parametrize("layer,shape", [
    (L.Conv2d(4, 8, 3), (3, 8, 8)),
    (L.AvgPool(2), (3, 7, 8)),
    (L.Linear(5, 2), (4,)),
    (L.BatchNorm(3), (4, 2, 2)),
    (L.Poly(3), (2, 2, 2)),
    (L.GlobalAvgPool(), (3,)),
])
def test_shape_mismatch_raises(layer, shape):
    with pytest.raises(L.LayerError):
        layer.out_shape([shape])


def test_op_from_attrs_roundtrip_and_errors():
    for layer in [L.Conv2d(3, 4, 3, 2, 1, 1, False), L.Fire(8, 2, 4, 4).nodes("f", "x")[0].layer,
                  L.Normalize((0.1, 0.2), (0.3, 0.4)), L.Linear(3, 2), L.AvgPool(2), L.Poly(3)]:
        assert L.op_from_attrs(layer.op, layer.attrs()) == layer
    with pytest.raises(L.LayerError, match="unknown op"):
        L.op_from_attrs("relu", {})
    with pytest.raises(L.LayerError, match="unknown attributes"):
        L.op_from_attrs("conv2d", {"in_channels": 3, "dilation": 2})


def _tiny(nodes, classes=2):
    return Graph("tiny", nodes, classes, (3, 4, 4))


def test_graph_validation():
    conv = L.Node("c", L.Conv2d(3, 2, 1), (INPUT,))
    gap = L.Node("g", L.GlobalAvgPool(), ("c",))
    g = _tiny([conv, gap])
    assert g.shapes["c"] == (2, 4, 4) and g.output == "g"
    with pytest.raises(GraphError, match="duplicate"):
        _tiny([conv, L.Node("c", L.GlobalAvgPool(), ("c",))])
    with pytest.raises(GraphError, match="topological"):
        _tiny([gap, conv])
    with pytest.raises(GraphError, match="expected"):
        _tiny([conv, gap], classes=3)
    with pytest.raises(GraphError, match="not reaching"):
        _tiny([conv, L.Node("dead", L.Square(), ("c",)), gap])
    with pytest.raises(GraphError):
        _tiny([L.Node("c", L.Conv2d(4, 2, 1), (INPUT,)), gap])


def test_depth_rules():
    # normalize folds into conv; bn into conv; pool merges with neighbouring conv;
    # poly costs one level; concat is free
    nodes = [L.Node("n", L.Normalize((0, 0, 0), (1, 1, 1)), (INPUT,)),
             L.Node("c1", L.Conv2d(3, 4, 3, bias=False), ("n",)),
             L.Node("b1", L.BatchNorm(4), ("c1",)),
             L.Node("p1", L.Poly(4), ("b1",)),
             L.Node("pool", L.AvgPool(2), ("p1",)),
             L.Node("c2", L.Conv2d(4, 2, 1), ("pool",)),
             L.Node("c3", L.Conv2d(4, 2, 3), ("pool",)),
             L.Node("cat", L.Concat(), ("c2", "c3")),
             L.Node("sq", L.Square(), ("cat",)),
             L.Node("head", L.Conv2d(4, 2, 1), ("sq",)),
             L.Node("gap", L.GlobalAvgPool(), ("head",))]
    g = _tiny(nodes)
    costs = g.level_costs()
    assert [costs[k] for k in ("n", "c1", "b1", "p1", "pool", "cat", "sq", "head", "gap")] == \
        [0, 1, 0, 1, 0, 0, 1, 1, 0]
    assert g.depth() == 1 + 1 + 1 + 1 + 1
    # a pool between two activations has no linear neighbour: it costs a level
    nodes2 = [L.Node("c1", L.Conv2d(3, 2, 1), (INPUT,)), L.Node("s1", L.Square(), ("c1",)),
              L.Node("pool", L.AvgPool(2), ("s1",)), L.Node("s2", L.Square(), ("pool",)),
              L.Node("gap", L.GlobalAvgPool(), ("s2",))]
    g2 = _tiny(nodes2)
    assert g2.level_costs()["pool"] == 1 and g2.level_costs()["gap"] == 1
    assert g2.depth() == 5


def _expected_depth(name):
    """Depth from the definition: stem conv + act, per fire squeeze conv + act + expand
    conv + act, per replacing conv conv + act, classifier conv (pool/BN/GAP merge)."""
    replaced = {"squeezenet": 0, "hemet-fire4": 1, "hemet-fire3-4": 2, "hemet-fire2-4": 3,
                "hemet-fire1-4": 4}[name]
    return 2 + 4 * (4 - replaced) + 2 * replaced + 1


@pytest.mark.parametrize("name", ["squeezenet", "hemet-fire4", "hemet-fire3-4",
                                  "hemet-fire2-4", "hemet-fire1-4"])
@pytest.mark.parametrize("classes", [10, 100])
def test_squeezenet_family_structure(name, classes):
    g = zoo.build(name, classes)
    assert g.shapes[g.output] == (classes,)
    assert g.depth() == _expected_depth(name)
    n_fire = sum(n.name.endswith("_squeeze_conv") for n in g.nodes)
    assert n_fire == 4 - (_expected_depth("squeezenet") - g.depth()) // 2
    assert g.count("poly") == 1 + 2 * n_fire + (4 - n_fire)
    assert not {n.op for n in g.nodes} - {"normalize", "conv2d", "batchnorm", "poly", "avgpool",
                                          "concat", "global_avgpool"}
    assert g.count("avgpool") == 2
    cls = g.node("classifier").layer
    assert cls.out_channels == classes
    assert cls.in_channels == (256 if name == "squeezenet" else 128)


def test_squeezenet_widths():
    g = zoo.build("squeezenet", 10)
    s = g.shapes
    assert s["conv1_act"] == (64, 32, 32) and s["pool1"] == (64, 16, 16)
    assert s["fire1_squeeze_act"] == (32, 16, 16) and s["fire1_act"] == (128, 16, 16)
    assert s["fire2_act"] == (128, 16, 16) and s["pool2"] == (128, 8, 8)
    assert s["fire3_act"] == (256, 8, 8) and s["fire4_act"] == (256, 8, 8)
    assert g.node("classifier").layer.in_channels == 256 and g.count("poly") == 9
    h = zoo.build("hemet-fire3-4", 10)
    assert h.node("conv_f3_conv").layer.in_channels == 128
    assert h.shapes["conv_f3_act"] == (128, 8, 8) and h.shapes["conv_f4_act"] == (128, 8, 8)
    assert h.node("classifier").layer.in_channels == 128
    f = zoo.build("hemet-fire1-4", 100)
    assert f.shapes["conv_f1_act"] == (64, 16, 16) and f.shapes["conv_f2_act"] == (64, 16, 16)


def test_dwsep_network():
    g = zoo.build("dwsep", 100)
    convs = [n.layer for n in g.nodes if n.op == "conv2d"]
    assert sum(c.depthwise for c in convs) == 4
    assert any(c.depthwise and c.stride == 2 for c in convs)
    assert g.shapes[g.output] == (100,)
    sq = zoo.build("squeezenet", 100)
    assert 0.5 < g.params() / sq.params() < 2  # "similar size"
    assert g.depth() == 2 + 4 * 4 + 1


def test_params_and_macs_by_hand():
    nodes = [L.Node("c", L.Conv2d(3, 4, 3, bias=False), (INPUT,)),
             L.Node("b", L.BatchNorm(4), ("c",)),
             L.Node("p", L.Poly(4), ("b",)),
             L.Node("g", L.GlobalAvgPool(), ("p",)),
             L.Node("fc", L.Linear(4, 2), ("g",))]
    g = _tiny(nodes)
    assert g.params() == 4 * 3 * 9 + 2 * 4 + 3 * 4 + 4 * 2 + 2
    assert g.params(folded=True) == 4 * 3 * 9 + 4 + 3 * 4 + 4 * 2 + 2
    assert g.macs() == 4 * 4 * 4 * 3 * 9 + 4 * 2


def test_unknown_network():
    with pytest.raises(ValueError, match="unknown network"):
        zoo.build("resnet")


def test_cost_functions_accept_graph_model_and_path(tmp_path):
    import numpy as np

    from hemet import graph as G, modelfile
    from helpers import random_weights
    g = zoo.build("hemet-fire3-4", 10)
    modelfile.save(tmp_path / "m", g, random_weights(g))
    m = modelfile.load(tmp_path / "m")
    for obj in (g, m, tmp_path / "m.json"):
        assert G.depth(obj) == _expected_depth("hemet-fire3-4")
        assert G.params(obj) == g.params() and G.macs(obj) == g.macs()
    # parameters by hand from the weight shapes (BN running stats are not parameters)
    by_hand = sum(int(np.prod(s)) for k, s in g.weight_shapes().items() if "running" not in k)
    assert G.params(g) == by_hand
    assert G.params(g, folded=True) < G.params(g)


def test_info_command(capsys):
    import json

    from hemet import cli
    assert cli.main(["info", "--model", "hemet-fire1-4", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    g = zoo.build("hemet-fire1-4", 10)
    assert s["depth"] == g.depth() == _expected_depth("hemet-fire1-4")
    assert s["macs"] == g.macs() and s["params"] == g.params() and s["activations"] == 5
