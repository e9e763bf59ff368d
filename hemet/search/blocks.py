"""The search space: the mobile blocks of a network and the two changes HEMET tries on each.

Blocks are recognized by the node names ``hemet.layers`` gives them: a fire module ``X``
(``X_squeeze_conv`` ... ``X_concat`` -> ``X_act``) and a depthwise-separable block ``X``
(``X_dw_conv`` -> ``X_pw_act``).

``replace``: the block becomes one regular 3x3 conv + batch norm + activation (the zoo's
HEMET networks: fire ``i`` -> ``conv_f{i}`` of the expand-3x3 width, i.e. 64 for fires 1-2 and
128 for fires 3-4; a depthwise-separable block -> a 3x3 conv of its output width and stride).
Two levels instead of four.

``merge``: node merging, which shortens the block's critical path: the activation inside the
block goes, so its two linear layers compose into one stage (squeeze into the expands; the
depthwise into the pointwise conv).  Also two levels instead of four, but the block loses a
nonlinearity (the accuracy check decides).

Consumers downstream get their channel counts updated (a replaced fire may be narrower).
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from hemet import layers as L
from hemet.graph import INPUT, Graph

__all__ = ["Block", "find_blocks", "replace_block", "merge_block", "CHANGES", "apply_change",
           "same_structure", "cost_proxy"]


@dataclass(frozen=True)
class Block:
    name: str       # the prefix X
    kind: str       # "fire" or "dwsep"
    input: str      # node the block reads
    output: str     # node the block's consumers read
    nodes: tuple    # names of the block's nodes
    in_channels: int
    width: int      # channels of the regular conv replacing it
    stride: int


def _by_name(graph: Graph) -> dict:
    return {n.name: n for n in graph.nodes}


def find_blocks(graph: Graph) -> list[Block]:
    """The fire and depthwise-separable blocks of ``graph``, in node order."""
    nodes = _by_name(graph)
    shapes = graph.shapes
    out = []
    for n in graph.nodes:
        m = re.fullmatch(r"(.+)_squeeze_conv", n.name)
        if m and f"{m[1]}_concat" in nodes and f"{m[1]}_act" in nodes:
            x = m[1]
            members = tuple(k for k in nodes if k.startswith(f"{x}_"))
            e3 = nodes[f"{x}_expand3_conv"].layer
            out.append(Block(x, "fire", n.inputs[0], f"{x}_act", members,
                             shapes[n.inputs[0]][0], e3.out_channels, 1))
            continue
        m = re.fullmatch(r"(.+)_dw_conv", n.name)
        if m and isinstance(n.layer, L.Conv2d) and n.layer.depthwise and f"{m[1]}_pw_act" in nodes:
            x = m[1]
            members = tuple(k for k in nodes if k.startswith(f"{x}_dw_") or k.startswith(f"{x}_pw_"))
            pw = nodes[f"{x}_pw_conv"].layer
            out.append(Block(x, "dwsep", n.inputs[0], f"{x}_pw_act", members,
                             shapes[n.inputs[0]][0], pw.out_channels, n.layer.stride))
    return out


def _conv_prefix(block: Block) -> str:
    m = re.fullmatch(r"fire(\d+)", block.name)
    return f"conv_f{m[1]}" if m else f"conv_{block.name}"


def _act(graph: Graph) -> str:
    return "square" if any(n.op == "square" for n in graph.nodes) and not any(
        n.op == "poly" for n in graph.nodes) else "poly"


def _rebuild(graph: Graph, nodes: list, renamed: dict) -> Graph:
    """A graph of ``nodes`` whose inputs are renamed by ``renamed``, with channel counts of
    downstream layers fixed to what now reaches them."""
    shapes = {INPUT: graph.input_shape}
    fixed = []
    for n in nodes:
        inputs = tuple(renamed.get(i, i) for i in n.inputs)
        lay = n.layer
        c = shapes[inputs[0]][0] if len(shapes[inputs[0]]) else None
        if isinstance(lay, L.Conv2d) and lay.in_channels != c:
            if lay.depthwise:
                lay = dataclasses.replace(lay, in_channels=c, out_channels=c, groups=c)
            else:
                lay = dataclasses.replace(lay, in_channels=c)
        elif isinstance(lay, L.BatchNorm) and lay.channels != c:
            lay = dataclasses.replace(lay, channels=c)
        elif isinstance(lay, L.Poly) and lay.channels != c:
            lay = dataclasses.replace(lay, channels=c)
        elif isinstance(lay, L.Linear) and lay.in_features != shapes[inputs[0]][0]:
            lay = dataclasses.replace(lay, in_features=shapes[inputs[0]][0])
        node = L.Node(n.name, lay, inputs)
        shapes[n.name] = lay.out_shape([shapes[i] for i in inputs])
        fixed.append(node)
    out = renamed.get(graph.output, graph.output)
    return Graph(graph.name, fixed, graph.classes, graph.input_shape, out, dict(graph.metadata))


def _swap(graph: Graph, block: Block, new: list) -> Graph:
    """``graph`` with ``block``'s nodes replaced by ``new`` (where the block's output stood);
    what read the block's output reads ``new``'s last node."""
    members = set(block.nodes)
    nodes = []
    for n in graph.nodes:
        if n.name in members:
            if n.name == block.output:
                nodes += new
            continue
        nodes.append(n)
    return _rebuild(graph, nodes, {block.output: new[-1].name})


def replace_block(graph: Graph, block: Block) -> Graph:
    """``block`` -> regular 3x3 conv + BN + activation (see module doc)."""
    prefix = _conv_prefix(block)
    new = L.ConvBNAct(block.in_channels, block.width, 3, block.stride, act=_act(graph)).nodes(
        prefix, block.input)
    return _swap(graph, block, new)


def merge_block(graph: Graph, block: Block) -> Graph | None:
    """Node merging (see module doc); None where the block has no inner activation left."""
    inner = f"{block.name}_squeeze_act" if block.kind == "fire" else f"{block.name}_dw_act"
    names = {n.name for n in graph.nodes}
    if inner not in names:
        return None
    src = _by_name(graph)[inner].inputs[0]
    nodes = [n for n in graph.nodes if n.name != inner]
    return _rebuild(graph, nodes, {inner: src})


CHANGES = {"replace": replace_block, "merge": merge_block}


def apply_change(graph: Graph, block: Block, change: str) -> Graph | None:
    return CHANGES[change](graph, block)


def same_structure(a: Graph, b: Graph) -> bool:
    """Same nodes (names, ops, attributes, inputs), input shape, classes and output."""
    def key(g):
        return (g.input_shape, g.classes, g.output,
                [(n.name, n.op, n.layer.attrs(), n.inputs) for n in g.nodes])
    return key(a) == key(b)


def _merged(graph: Graph) -> list[tuple[Block, str]]:
    """Merged blocks of ``graph``: (block, the node whose output the block's tail now reads)."""
    names = {n.name for n in graph.nodes}
    out = []
    for b in find_blocks(graph):
        inner = f"{b.name}_squeeze_act" if b.kind == "fire" else f"{b.name}_dw_act"
        if inner not in names:
            out.append(b)
    return out


def cost_proxy(graph: Graph) -> Graph:
    """A graph with the same HE plan shape as ``graph`` for costing: each merged block becomes
    one 3x3 conv (stride of the block) from its input to its output channels + BN + act.

    The compiler composes a merged block's two convs into one stage whose diagonals are those
    of such a conv (the packed channels share diagonals), but it composes them as a sparse
    product without merging duplicates: squeeze (64 -> 32) into a 3x3 expand is ~600M
    triples for SqueezeNet's fire 1 (over 20 GB), so the search never compiles the merged
    graph itself."""
    for b in _merged(graph):
        c_out = graph.shapes[b.output][0]
        new = L.ConvBNAct(b.in_channels, c_out, 3, b.stride, act=_act(graph)).nodes(
            f"{b.name}_merged", b.input)
        graph = _swap(graph, b, new)
    return graph
