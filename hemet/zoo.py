"""Network builders by name.

``squeezenet``         SqueezeNet-CIFAR (widths from the HEMET authors' latency estimator)
``hemet-fire4``        fire 4 replaced by a regular 3x3 convolution
``hemet-fire3-4``      fires 3-4 replaced
``hemet-fire2-4``      fires 2-4 replaced
``hemet-fire1-4``      all four fires replaced
``dwsep``              depthwise-separable (MobileNet-style) network of similar size
"""
from __future__ import annotations

from .data import CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD
from .graph import INPUT, Graph
from .layers import AvgPool, Conv2d, ConvBNAct, DWSep, Fire, GlobalAvgPool, Node, Normalize

__all__ = ["NETWORKS", "build", "network_names"]

# fire i: (squeeze, expand1x1, expand3x3); replaced fire i -> conv 3x3 of width REPLACED[i]
FIRES = {1: (32, 64, 64), 2: (32, 64, 64), 3: (32, 128, 128), 4: (32, 128, 128)}
REPLACED = {1: 64, 2: 64, 3: 128, 4: 128}


def _stem(classes: int, act: str, width: int = 64) -> list[Node]:
    mean, std = (CIFAR10_MEAN, CIFAR10_STD) if classes == 10 else (CIFAR100_MEAN, CIFAR100_STD)
    nodes = [Node("normalize", Normalize(mean, std), (INPUT,))]
    nodes += ConvBNAct(3, width, 3, act=act).nodes("conv1", "normalize")
    return nodes


def _head(nodes: list[Node], x: str, cin: int, classes: int) -> list[Node]:
    nodes.append(Node("classifier", Conv2d(cin, classes, 1, 1, 0, 1, True), (x,)))
    nodes.append(Node("gap", GlobalAvgPool(), ("classifier",)))
    return nodes


def squeezenet_family(replaced: frozenset[int], classes: int = 10, act: str = "poly",
                      name: str | None = None) -> Graph:
    """SqueezeNet-CIFAR with the fire modules in ``replaced`` swapped for 3x3 convs."""
    nodes = _stem(classes, act)
    x, c = nodes[-1].name, 64
    for i in (1, 2, 3, 4):
        if i in (1, 3):  # 2x2 average pool before fire 1 and fire 3
            nodes.append(Node(f"pool{1 if i == 1 else 2}", AvgPool(2), (x,)))
            x = nodes[-1].name
        if i in replaced:
            block = ConvBNAct(c, REPLACED[i], 3, act=act)
            nodes += block.nodes(f"conv_f{i}", x)
            c = REPLACED[i]
        else:
            s, e1, e3 = FIRES[i]
            block = Fire(c, s, e1, e3, act)
            nodes += block.nodes(f"fire{i}", x)
            c = block.out_channels
        x = nodes[-1].name
    tag = "squeezenet" if not replaced else "hemet-fire" + (
        "4" if replaced == {4} else f"{min(replaced)}-4")
    return Graph(name or f"{tag}-{classes}", _head(nodes, x, c, classes), classes,
                 metadata={"network": tag, "activation": act})


def dwsep_net(classes: int = 10, act: str = "poly", name: str | None = None) -> Graph:
    """MobileNet-style: conv 3x3 3->64, then depthwise-separable blocks
    64->128 (s2), 128->128, 128->256 (s2), 256->256, conv 1x1 -> classes, global pool."""
    nodes = _stem(classes, act)
    x, c = nodes[-1].name, 64
    for i, (cout, stride) in enumerate([(128, 2), (128, 1), (256, 2), (256, 1)], 1):
        nodes += DWSep(c, cout, stride, act).nodes(f"dws{i}", x)
        x, c = nodes[-1].name, cout
    return Graph(name or f"dwsep-{classes}", _head(nodes, x, c, classes), classes,
                 metadata={"network": "dwsep", "activation": act})


NETWORKS = {
    "squeezenet": lambda classes, act: squeezenet_family(frozenset(), classes, act),
    "hemet-fire4": lambda classes, act: squeezenet_family(frozenset({4}), classes, act),
    "hemet-fire3-4": lambda classes, act: squeezenet_family(frozenset({3, 4}), classes, act),
    "hemet-fire2-4": lambda classes, act: squeezenet_family(frozenset({2, 3, 4}), classes, act),
    "hemet-fire1-4": lambda classes, act: squeezenet_family(frozenset({1, 2, 3, 4}), classes, act),
    "dwsep": lambda classes, act: dwsep_net(classes, act),
}


def network_names() -> list[str]:
    return list(NETWORKS)


def build(name: str, classes: int = 10, act: str = "poly") -> Graph:
    """Build network ``name`` with a ``classes``-way head (10 or 100; any >= 2 works)."""
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; choose from {network_names()}")
    return NETWORKS[name](classes, act)


def random_weights(graph: Graph, seed: int = 0) -> dict:
    """Weights for an untrained graph that keep activations O(1) through a deep polynomial
    network: He-like conv/linear weights, batch norm near identity, poly a ~ 0.1 and b ~ 1."""
    import numpy as np

    rng = np.random.default_rng(seed)
    w = {}
    for k, shape in graph.weight_shapes().items():
        param = k.rsplit(".", 1)[1]
        if param == "running_var":
            w[k] = rng.uniform(0.5, 2.0, shape)
        elif param == "weight" and len(shape) > 1:
            w[k] = rng.normal(0, 1 / np.sqrt(np.prod(shape[1:])), shape)
        elif param == "a":
            w[k] = rng.normal(0.1, 0.05, shape)
        elif param in ("b", "weight"):
            w[k] = rng.normal(1.0, 0.1, shape)
        else:
            w[k] = rng.normal(0, 0.1, shape)
    return w
