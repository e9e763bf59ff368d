import numpy as np
import pytest

from hemet import layers as L
from hemet import reference, zoo
from hemet.graph import INPUT, Graph
from hemet.modelfile import Model

from helpers import random_weights

torch = pytest.importorskip("torch", reason="torch not installed: skipping PyTorch comparisons")
from hemet import torch_modules as TM  # noqa: E402


def _net(graph, weights, dtype=torch.float64):
    net = TM.GraphNet(graph)
    TM.load_weights(net, weights)
    return net.to(dtype).eval()


def _compare(graph, seed=0, n=3, atol=1e-5):
    w = random_weights(graph, seed)
    x = np.random.default_rng(seed + 100).uniform(0, 1, (n,) + graph.input_shape)
    ref = reference.forward(Model(graph, w), x)
    with torch.no_grad():
        out = _net(graph, w)(torch.from_numpy(x)).numpy()
    assert ref.shape == (n, graph.classes)
    assert np.abs(ref).max() > 1e-3  # not trivially zero
    np.testing.assert_allclose(ref, out, rtol=0, atol=atol)
    return w, x, ref


def _wrap(nodes, in_shape, x_name):
    """Graph around block nodes: block output -> global pool -> linear -> 2 classes."""
    shapes = {INPUT: in_shape}
    for n in nodes:
        shapes[n.name] = n.layer.out_shape([shapes[i] for i in n.inputs])
    feats = shapes[x_name][0]
    return Graph("probe", nodes + [L.Node("gap_probe", L.GlobalAvgPool(), (x_name,)),
                                   L.Node("fc_probe", L.Linear(feats, 2), ("gap_probe",))],
                 2, in_shape)


BLOCKS = {
    "conv3x3_s1": (lambda: [L.Node("c", L.Conv2d(3, 5, 3), (INPUT,))], "c"),
    "conv3x3_s2": (lambda: [L.Node("c", L.Conv2d(3, 5, 3, 2, bias=False), (INPUT,))], "c"),
    "conv5x5_pad0": (lambda: [L.Node("c", L.Conv2d(3, 4, 5, 1, 0), (INPUT,))], "c"),
    "pointwise": (lambda: [L.Node("c", L.pointwise(3, 6), (INPUT,))], "c"),
    "depthwise_s1": (lambda: [L.Node("c", L.depthwise(3), (INPUT,))], "c"),
    "depthwise_s2": (lambda: [L.Node("c", L.depthwise(3, 3, 2), (INPUT,))], "c"),
    "grouped": (lambda: [L.Node("c", L.Conv2d(3, 6, 3, groups=3), (INPUT,))], "c"),
    "normalize": (lambda: [L.Node("n", L.Normalize((0.4, 0.5, 0.6), (0.2, 0.3, 0.25)),
                                  (INPUT,))], "n"),
    "batchnorm": (lambda: [L.Node("b", L.BatchNorm(3), (INPUT,))], "b"),
    "poly": (lambda: [L.Node("p", L.Poly(3), (INPUT,))], "p"),
    "square": (lambda: [L.Node("s", L.Square(), (INPUT,))], "s"),
    "avgpool": (lambda: [L.Node("a", L.AvgPool(2), (INPUT,))], "a"),
    "concat": (lambda: [L.Node("c1", L.pointwise(3, 2), (INPUT,)),
                        L.Node("c2", L.Conv2d(3, 4, 3), (INPUT,)),
                        L.Node("cat", L.Concat(), ("c1", "c2"))], "cat"),
    "conv_bn_act": (lambda: L.ConvBNAct(3, 8, 3, 2).nodes("cba", INPUT), "cba_act"),
    "fire": (lambda: L.Fire(3, 4, 6, 6).nodes("f", INPUT), "f_act"),
    "fire_square": (lambda: L.Fire(3, 4, 5, 3, act="square").nodes("f", INPUT), "f_act"),
    "dwsep": (lambda: L.DWSep(3, 7, 2).nodes("d", INPUT), "d_pw_act"),
}


@pytest.mark.parametrize("block", sorted(BLOCKS))
def test_block_reference_matches_torch(block):
    make, out = BLOCKS[block]
    _compare(_wrap(make(), (3, 8, 8), out), seed=hash(block) % 1000)


@pytest.mark.parametrize("name", zoo.network_names())
@pytest.mark.parametrize("classes", [10, 100])
def test_zoo_reference_matches_torch(name, classes):
    _compare(zoo.build(name, classes), seed=classes, n=2)


def test_float32_torch_close_to_reference():
    g = zoo.build("squeezenet", 10)
    w, x, ref = _compare(g, seed=5, n=2)
    with torch.no_grad():
        out32 = _net(g, w, torch.float32)(torch.from_numpy(x).float()).numpy()
    scale = np.abs(ref).max()
    assert np.abs(out32 - ref).max() <= 1e-4 * max(scale, 1.0)


def test_torch_block_modules_match_specs():
    for spec, cls in [(L.Fire(3, 4, 6, 6), TM.FireModule), (L.DWSep(3, 5, 2), TM.DWSepBlock),
                      (L.ConvBNAct(3, 4, 3), TM.ConvBNAct)]:
        m = cls(spec).double().eval()
        x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
        nodes = spec.nodes("b", INPUT)
        w = {k[len("layers."):]: v.numpy() for k, v in m.state_dict().items()
             if not k.endswith("num_batches_tracked")}
        env = {INPUT: x.numpy()}
        for n in nodes:
            pw = {k: w[f"{n.name}.{k}"] for k in n.layer.weight_shapes()}
            env[n.name] = reference.run_node(n.layer, [env[i] for i in n.inputs], pw)
        with torch.no_grad():
            np.testing.assert_allclose(m(x).numpy(), env[nodes[-1].name], atol=1e-10)


def test_export_load_weights_roundtrip():
    g = zoo.build("hemet-fire2-4", 10)
    net = TM.GraphNet(g)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_()
    w = TM.export_weights(net)
    assert set(w) == set(g.weight_shapes())
    assert all(w[k].shape == s for k, s in g.weight_shapes().items())
    net2 = TM.GraphNet(g)
    TM.load_weights(net2, w)
    for (k1, v1), (k2, v2) in zip(net.state_dict().items(), net2.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)
    bad = dict(w)
    bad.pop("classifier.bias")
    with pytest.raises(KeyError):
        TM.load_weights(net2, bad)


def test_poly_activation_is_trainable_polynomial():
    p = TM.PolyAct(2, 0.3, -0.5, 0.25)
    x = torch.tensor([[1.0, 2.0], [-1.0, 0.5]])
    y = p(x)
    assert torch.allclose(y, 0.3 * x ** 2 - 0.5 * x + 0.25)
    y.sum().backward()
    assert torch.allclose(p.a.grad, (x ** 2).sum(0)) and torch.allclose(p.c.grad, torch.full((2,), 2.0))
    assert sum(1 for _ in TM.GraphNet(zoo.build("squeezenet")).modules()
               if isinstance(_, TM.PolyAct)) == 9


@pytest.mark.parametrize("name", zoo.network_names())
def test_macs_and_params_match_torch_count(name):
    g = zoo.build(name, 100)
    net = TM.GraphNet(g)
    counted = []

    def hook(mod, inp, out):
        counted.append(out.numel() * mod.in_channels // mod.groups * mod.kernel_size[0]
                       * mod.kernel_size[1])

    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.register_forward_hook(hook)
    net.eval()
    with torch.no_grad():
        net(torch.zeros(1, 3, 32, 32))
    assert sum(counted) == g.macs()
    assert sum(p.numel() for p in net.parameters()) == g.params()
