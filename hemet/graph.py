"""The layer graph: nodes in topological order, shape inference and cost counts.

``depth`` counts multiplicative levels after coefficient merging:
one level per linear layer (conv / linear) and one per squaring (``poly``/``square``);
batch norm folds into the conv before it, ``normalize`` into the conv after it,
average pooling merges with a neighbouring linear layer and concat is free.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .layers import AvgPool, BatchNorm, Concat, GlobalAvgPool, LayerError, Node, Normalize

__all__ = ["Graph", "GraphError", "INPUT", "depth", "params", "macs"]

INPUT = "input"


class GraphError(LayerError):
    """Structurally invalid graph."""


@dataclass
class Graph:
    name: str
    nodes: list[Node]
    classes: int
    input_shape: tuple[int, ...] = (3, 32, 32)
    output: str | None = None  # default: the last node
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        self.input_shape = tuple(self.input_shape)
        if self.output is None and self.nodes:
            self.output = self.nodes[-1].name
        self._shapes = self._infer()

    # ------------------------------------------------------------ structure
    def _infer(self) -> dict[str, tuple[int, ...]]:
        if not isinstance(self.name, str) or not self.name:
            raise GraphError("graph name must be a non-empty string")
        if not self.nodes:
            raise GraphError("graph has no nodes")
        if (not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in self.input_shape)
                or len(self.input_shape) != 3):
            raise GraphError(f"input shape must be 3 positive ints (C, H, W), got {self.input_shape}")
        if isinstance(self.classes, bool) or not isinstance(self.classes, int) or self.classes < 2:
            raise GraphError(f"classes must be an int >= 2, got {self.classes!r}")
        shapes = {INPUT: self.input_shape}
        for node in self.nodes:
            if not isinstance(node, Node):
                raise GraphError(f"not a Node: {node!r}")
            if node.name in shapes:
                raise GraphError(f"duplicate node name {node.name!r}")
            for i in node.inputs:
                if i not in shapes:
                    raise GraphError(f"node {node.name!r} reads {i!r}, which is not defined before it "
                                     "(nodes must be in topological order)")
            try:
                shapes[node.name] = node.layer.out_shape([shapes[i] for i in node.inputs])
            except LayerError as e:
                raise GraphError(f"node {node.name!r}: {e}") from e
        if self.output not in shapes or self.output == INPUT:
            raise GraphError(f"output {self.output!r} is not a node")
        if shapes[self.output] != (self.classes,):
            raise GraphError(f"output {self.output!r} has shape {shapes[self.output]}, "
                             f"expected ({self.classes},)")
        used = {i for n in self.nodes for i in n.inputs} | {self.output}
        dead = [n.name for n in self.nodes if n.name not in used]
        if dead:
            raise GraphError(f"nodes not reaching the output: {dead}")
        return shapes

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return dict(self._shapes)

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def consumers(self) -> dict[str, list[Node]]:
        out: dict[str, list[Node]] = {INPUT: []}
        for n in self.nodes:
            out.setdefault(n.name, [])
            for i in n.inputs:
                out[i].append(n)
        return out

    def weight_shapes(self) -> dict[str, tuple[int, ...]]:
        """All weights, keyed ``"<node>.<param>"``."""
        return {f"{n.name}.{k}": s for n in self.nodes for k, s in n.layer.weight_shapes().items()}

    # ------------------------------------------------------------ costs
    def params(self, folded: bool = False) -> int:
        """Trainable parameters (BN running stats excluded).

        ``folded=True`` counts what the encrypted side stores after folding batch norm
        into the conv before it (a bias per output channel instead of BN's 4 vectors).
        """
        total = 0
        for n in self.nodes:
            for k, s in n.layer.weight_shapes().items():
                if isinstance(n.layer, BatchNorm) and (k.startswith("running") or folded):
                    continue
                size = 1
                for d in s:
                    size *= d
                total += size
            if folded and isinstance(n.layer, BatchNorm):
                prod = self.node(n.inputs[0]) if n.inputs[0] != INPUT else None
                if prod is None or not getattr(prod.layer, "bias", True):
                    total += n.layer.channels  # the new bias
        return total

    def macs(self) -> int:
        s = self._shapes
        return sum(n.layer.macs([s[i] for i in n.inputs], s[n.name]) for n in self.nodes)

    def level_costs(self) -> dict[str, int]:
        """Multiplicative levels each node consumes after merging (see module doc)."""
        cons = self.consumers()
        byname = {n.name: n for n in self.nodes}

        def producer_linear(n):
            return n.inputs[0] != INPUT and byname[n.inputs[0]].layer.linear

        def sole_consumer_linear(n):
            c = cons[n.name]
            return len(c) > 0 and all(x.layer.linear for x in c)

        costs = {}
        for n in self.nodes:
            lay = n.layer
            if lay.linear or n.op in ("poly", "square"):
                costs[n.name] = 1
            elif isinstance(lay, Concat):
                costs[n.name] = 0
            elif isinstance(lay, BatchNorm):
                costs[n.name] = 0 if (producer_linear(n) or sole_consumer_linear(n)) else 1
            elif isinstance(lay, Normalize):
                costs[n.name] = 0 if (sole_consumer_linear(n) or producer_linear(n)) else 1
            elif isinstance(lay, (AvgPool, GlobalAvgPool)):
                costs[n.name] = 0 if (producer_linear(n) or sole_consumer_linear(n)) else 1
            else:  # pragma: no cover - every registered op is handled above
                raise GraphError(f"no level cost for op {n.op!r}")
        return costs

    def depth(self) -> int:
        """Multiplicative depth: max over paths of the level costs."""
        costs = self.level_costs()
        lv = {INPUT: 0}
        for n in self.nodes:
            lv[n.name] = max(lv[i] for i in n.inputs) + costs[n.name]
        return lv[self.output]

    def count(self, op: str) -> int:
        return sum(n.op == op for n in self.nodes)

    def summary(self) -> dict:
        return {"name": self.name, "classes": self.classes, "params": self.params(),
                "params_folded": self.params(folded=True), "macs": self.macs(),
                "depth": self.depth(),
                "activations": self.count("poly") + self.count("square")}




def _graph_of(model) -> Graph:
    """Accept a Graph, a loaded Model, or a model file path."""
    if isinstance(model, Graph):
        return model
    if hasattr(model, "graph") and isinstance(model.graph, Graph):
        return model.graph
    from .modelfile import load
    return load(model).graph


def depth(model) -> int:
    """Multiplicative depth of a Graph / Model / model file (see module doc)."""
    return _graph_of(model).depth()


def params(model, folded: bool = False) -> int:
    """Trainable parameter count (``folded``: after folding batch norm into convs)."""
    return _graph_of(model).params(folded)


def macs(model) -> int:
    """Multiply-accumulates per image."""
    return _graph_of(model).macs()
