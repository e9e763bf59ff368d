"""PyTorch modules for training the HE-friendly networks (torch is imported here only).

``GraphNet(graph)`` is the trainable counterpart of a ``hemet.graph.Graph``: one
submodule per node, keyed by node name, so ``export_weights`` maps its state
straight onto the model-file weight names ``"<node>.<param>"``.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from . import layers as L
from .graph import INPUT, Graph

__all__ = ["PolyAct", "SquareAct", "NormalizeInput", "GlobalAvgPool2d", "Concat", "GraphNet",
           "FireModule", "DWSepBlock", "ConvBNAct", "module_for", "export_weights",
           "load_weights"]


class PolyAct(nn.Module):
    """a*x^2 + b*x + c with per-channel trainable coefficients (channel dim 1)."""

    def __init__(self, channels: int, a: float = 0.1, b: float = 1.0, c: float = 0.0):
        super().__init__()
        self.channels = channels
        self.a = nn.Parameter(torch.full((channels,), float(a)))
        self.b = nn.Parameter(torch.full((channels,), float(b)))
        self.c = nn.Parameter(torch.full((channels,), float(c)))
        self.a_init, self.b_init = float(a), float(b)

    def forward(self, x):
        shape = (1, -1) + (1,) * (x.dim() - 2)
        a, b, c = self.a.view(shape), self.b.view(shape), self.c.view(shape)
        return (a * x + b) * x + c


class SquareAct(nn.Module):
    def forward(self, x):
        return x * x


class NormalizeInput(nn.Module):
    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1),
                             persistent=False)

    def forward(self, x):
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


class GlobalAvgPool2d(nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3))


class Concat(nn.Module):
    def forward(self, *xs):
        return torch.cat(xs, dim=1)


def module_for(layer: L.Op, poly_init: tuple[float, float, float] = (0.1, 1.0, 0.0)) -> nn.Module:
    """The torch module evaluating one framework-neutral op."""
    if isinstance(layer, L.Normalize):
        return NormalizeInput(layer.mean, layer.std)
    if isinstance(layer, L.Conv2d):
        return nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                         layer.padding, groups=layer.groups, bias=layer.bias)
    if isinstance(layer, L.BatchNorm):
        return nn.BatchNorm2d(layer.channels, eps=layer.eps)
    if isinstance(layer, L.Poly):
        return PolyAct(layer.channels, *poly_init)
    if isinstance(layer, L.Square):
        return SquareAct()
    if isinstance(layer, L.AvgPool):
        return nn.AvgPool2d(layer.kernel_size, layer.kernel_size)
    if isinstance(layer, L.GlobalAvgPool):
        return GlobalAvgPool2d()
    if isinstance(layer, L.Concat):
        return Concat()
    if isinstance(layer, L.Linear):
        return nn.Linear(layer.in_features, layer.out_features, bias=layer.bias)
    raise TypeError(f"no torch module for op {layer.op!r}")


class _NodeRunner(nn.Module):
    """Evaluates a list of nodes; ``inputs`` maps external names to forward() arguments."""

    def __init__(self, nodes, externals, output, poly_init=(0.1, 1.0, 0.0)):
        super().__init__()
        self.nodes = list(nodes)
        self.externals = list(externals)
        self.output = output
        self.layers = nn.ModuleDict({n.name: module_for(n.layer, poly_init) for n in self.nodes})
        # free intermediate tensors after their last use
        last = {}
        for i, n in enumerate(self.nodes):
            for x in n.inputs:
                last[x] = i
        self._free = [[x for x in n.inputs if last[x] == i and x != output]
                      for i, n in enumerate(self.nodes)]

    def forward(self, *xs):
        return self.run(xs)[0]

    def run(self, xs, act_range: float | None = None):
        """Output and, with ``act_range``, the training penalty on activation inputs beyond it.

        The penalty is summed here rather than from recorded tensors so that ``torch.compile``
        fuses it with the activations instead of keeping every input alive for a second pass.
        """
        env = dict(zip(self.externals, xs))
        pen = None
        for n, free in zip(self.nodes, self._free):
            args = [env[i] for i in n.inputs]
            if act_range is not None and n.op in ("poly", "square"):
                term = torch.relu(args[0].abs() - act_range).pow(2).mean()
                pen = term if pen is None else pen + term
            env[n.name] = self.layers[n.name](*args)
            for x in free:
                del env[x]
        return env[self.output], pen


class GraphNet(_NodeRunner):
    """Trainable network for a ``Graph``; input NCHW float in [0, 1]."""

    def __init__(self, graph: Graph, poly_init=(0.1, 1.0, 0.0)):
        super().__init__(graph.nodes, [INPUT], graph.output, poly_init)
        self.graph = graph


class _Block(_NodeRunner):
    def __init__(self, spec, poly_init=(0.1, 1.0, 0.0)):
        nodes = spec.nodes("b", "x")
        super().__init__(nodes, ["x"], nodes[-1].name, poly_init)
        self.spec = spec


class FireModule(_Block):
    """Fire module (``hemet.layers.Fire``) as a torch module."""


class DWSepBlock(_Block):
    """Depthwise-separable block (``hemet.layers.DWSep``) as a torch module."""


class ConvBNAct(_Block):
    """conv -> BN -> poly (``hemet.layers.ConvBNAct``) as a torch module."""


_BN_SKIP = ("num_batches_tracked",)


def export_weights(net: _NodeRunner) -> dict[str, np.ndarray]:
    """State of ``net`` as ``{"<node>.<param>": float64 array}`` (model-file weight names)."""
    out = {}
    for k, v in net.state_dict().items():
        assert k.startswith("layers.")
        key = k[len("layers."):]
        if key.rsplit(".", 1)[-1] in _BN_SKIP:
            continue
        out[key] = v.detach().cpu().numpy().astype(np.float64)
    return out


def load_weights(net: _NodeRunner, weights: dict[str, np.ndarray]) -> None:
    """Inverse of ``export_weights`` (strict: every model-file weight must be present)."""
    sd = net.state_dict()
    new = {}
    for k, v in sd.items():
        key = k[len("layers."):]
        if key.rsplit(".", 1)[-1] in _BN_SKIP:
            new[k] = v
            continue
        if key not in weights:
            raise KeyError(f"missing weight {key!r}")
        arr = np.asarray(weights[key])
        if tuple(arr.shape) != tuple(v.shape):
            raise ValueError(f"weight {key!r}: shape {arr.shape} != {tuple(v.shape)}")
        new[k] = torch.as_tensor(arr, dtype=v.dtype)
    extra = set(weights) - {k[len("layers."):] for k in sd}
    if extra:
        raise KeyError(f"unexpected weights {sorted(extra)}")
    net.load_state_dict(new)


def poly_modules(net: nn.Module) -> list[PolyAct]:
    return [m for m in net.modules() if isinstance(m, PolyAct)]
