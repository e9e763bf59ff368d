"""HEMET model files: a JSON layer graph plus an .npz of weights.

``<base>.json``::

    {"format": "hemet-model", "version": 1,
     "name": "squeezenet-cifar10", "classes": 10,
     "input": {"name": "input", "shape": [3, 32, 32], "layout": "NCHW", "range": [0, 1]},
     "output": "gap",
     "weights": "<base>.npz",
     "nodes": [{"name": "normalize", "op": "normalize", "inputs": ["input"],
                "attrs": {"mean": [...], "std": [...]}, "weights": {}},
               {"name": "conv1_conv", "op": "conv2d", "inputs": ["normalize"],
                "attrs": {...}, "weights": {"weight": [64, 3, 3, 3]}}, ...],
     "metadata": {...}}

Nodes are in topological order; every node has a unique name, an op, named inputs
(``"input"`` is the image), its attributes and the shapes of its weights.  The .npz
holds one array per weight, keyed ``"<node>.<param>"`` (float32 or float64).
Inputs are pixels scaled to [0, 1]; the first node normalizes them.

Op semantics (per sample, feature maps (C, H, W), vectors (F,); see ``hemet.reference``):

============== ============================================ ===============================
op             attrs                                        computes (weights)
============== ============================================ ===============================
normalize      mean[C], std[C]                              (x - mean[c]) / std[c]
conv2d         in_channels, out_channels, kernel_size,      zero-padded cross-correlation
               stride (1|2), padding, groups, bias          (weight[O, C/groups, k, k],
                                                            bias[O]); groups == C: depthwise
batchnorm      channels, eps                                (x - running_mean) /
                                                            sqrt(running_var + eps) *
                                                            weight + bias
poly           channels                                     a[c] x^2 + b[c] x + c[c]
square         -                                            x^2
avgpool        kernel_size k                                k x k mean, stride k, no padding
global_avgpool -                                            mean over H, W -> (C,)
concat         - (>= 2 inputs)                              channel concatenation, in order
linear         in_features, out_features, bias              weight[O, F] x + bias[O]
============== ============================================ ===============================
"""
from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .graph import INPUT, Graph, GraphError
from .layers import LayerError, Node, op_from_attrs

__all__ = ["ModelFormatError", "Model", "FORMAT", "VERSION", "save", "load", "graph_to_json",
           "graph_from_json", "validate_weights", "resolve_path"]

FORMAT = "hemet-model"
VERSION = 1


class ModelFormatError(ValueError):
    """A model file (JSON graph or .npz weights) is malformed or inconsistent."""


@dataclass
class Model:
    graph: Graph
    weights: dict[str, np.ndarray]
    path: Path | None = None

    @property
    def name(self) -> str:
        return self.graph.name

    @property
    def classes(self) -> int:
        return self.graph.classes


def graph_to_json(graph: Graph, weights_file: str | None = None) -> dict:
    return {
        "format": FORMAT, "version": VERSION, "name": graph.name, "classes": graph.classes,
        "input": {"name": INPUT, "shape": list(graph.input_shape), "layout": "NCHW",
                  "range": [0, 1]},
        "output": graph.output,
        "weights": weights_file,
        "nodes": [{"name": n.name, "op": n.op, "inputs": list(n.inputs), "attrs": n.layer.attrs(),
                   "weights": {k: list(s) for k, s in n.layer.weight_shapes().items()}}
                  for n in graph.nodes],
        "metadata": graph.metadata,
    }


def _req(d: dict, key: str, typ, where: str):
    if key not in d:
        raise ModelFormatError(f"{where}: missing key {key!r}")
    v = d[key]
    if not isinstance(v, typ) or isinstance(v, bool) and typ is not bool:
        raise ModelFormatError(f"{where}: {key!r} must be {getattr(typ, '__name__', typ)}, "
                               f"got {type(v).__name__}")
    return v


def graph_from_json(doc) -> Graph:
    """Validate a parsed JSON document and build the ``Graph`` (raises ModelFormatError)."""
    if not isinstance(doc, dict):
        raise ModelFormatError("model JSON must be an object")
    if doc.get("format") != FORMAT:
        raise ModelFormatError(f"not a HEMET model file: format is {doc.get('format')!r}, "
                               f"expected {FORMAT!r}")
    if doc.get("version") != VERSION:
        raise ModelFormatError(f"unsupported model file version {doc.get('version')!r} "
                               f"(this reader supports {VERSION})")
    name = _req(doc, "name", str, "model")
    classes = _req(doc, "classes", int, "model")
    inp = _req(doc, "input", dict, "model")
    shape = _req(inp, "shape", list, "input")
    if inp.get("name", INPUT) != INPUT:
        raise ModelFormatError(f"input name must be {INPUT!r}")
    if inp.get("layout", "NCHW") != "NCHW":
        raise ModelFormatError("input layout must be 'NCHW'")
    raw_nodes = _req(doc, "nodes", list, "model")
    nodes = []
    for i, nd in enumerate(raw_nodes):
        where = f"node #{i}"
        if not isinstance(nd, dict):
            raise ModelFormatError(f"{where} must be an object")
        extra = set(nd) - {"name", "op", "inputs", "attrs", "weights"}
        if extra:
            raise ModelFormatError(f"{where}: unknown keys {sorted(extra)}")
        nname = _req(nd, "name", str, where)
        where = f"node {nname!r}"
        op = _req(nd, "op", str, where)
        inputs = _req(nd, "inputs", list, where)
        if not all(isinstance(x, str) for x in inputs):
            raise ModelFormatError(f"{where}: inputs must be strings")
        attrs = nd.get("attrs", {})
        try:
            layer = op_from_attrs(op, attrs)
            node = Node(nname, layer, tuple(inputs))
        except LayerError as e:
            raise ModelFormatError(f"{where}: {e}") from e
        declared = nd.get("weights", {})
        expected = {k: list(s) for k, s in layer.weight_shapes().items()}
        if declared != expected:
            raise ModelFormatError(f"{where}: declared weights {declared} do not match the "
                                   f"op's weights {expected}")
        nodes.append(node)
    meta = doc.get("metadata", {})
    if not isinstance(meta, dict):
        raise ModelFormatError("metadata must be an object")
    try:
        return Graph(name, nodes, classes, tuple(shape), doc.get("output"), meta)
    except GraphError as e:
        raise ModelFormatError(f"invalid graph: {e}") from e


def validate_weights(graph: Graph, weights: dict) -> dict[str, np.ndarray]:
    """Check names, shapes, dtypes and finiteness of ``weights`` against ``graph``."""
    expected = graph.weight_shapes()
    missing = sorted(set(expected) - set(weights))
    extra = sorted(set(weights) - set(expected))
    if missing:
        raise ModelFormatError(f"missing weights: {missing}")
    if extra:
        raise ModelFormatError(f"unexpected weights: {extra}")
    out = {}
    for k, shape in expected.items():
        a = np.asarray(weights[k])
        if a.dtype not in (np.float32, np.float64):
            raise ModelFormatError(f"weight {k!r} has dtype {a.dtype}, expected float32/float64")
        if tuple(a.shape) != tuple(shape):
            raise ModelFormatError(f"weight {k!r} has shape {a.shape}, expected {tuple(shape)}")
        if not np.all(np.isfinite(a)):
            raise ModelFormatError(f"weight {k!r} contains NaN or inf")
        if k.endswith(".running_var") and np.any(a < 0):
            raise ModelFormatError(f"weight {k!r} has negative variances")
        out[k] = a
    return out


def resolve_path(path: str | os.PathLike) -> tuple[Path, Path]:
    """``foo``, ``foo.json`` or ``foo.npz`` -> (foo.json, foo.npz)."""
    p = Path(path)
    if p.suffix in (".json", ".npz"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".json"), p.with_name(p.name + ".npz")


def save(path, graph: Graph, weights: dict, dtype=None) -> Path:
    """Write ``<base>.json`` and ``<base>.npz``; returns the JSON path.

    ``dtype`` (e.g. ``np.float32``) converts the weights before writing; by default they
    are written as given, so a load returns them bit for bit.
    """
    jpath, npath = resolve_path(path)
    w = validate_weights(graph, weights)
    if dtype is not None:
        w = {k: v.astype(dtype) for k, v in w.items()}
    doc = graph_to_json(graph, npath.name)
    jpath.parent.mkdir(parents=True, exist_ok=True)
    # np.savez appends .npz to names without it; write through a file object instead
    with open(npath, "wb") as f:
        np.savez(f, **w)
    with open(jpath, "w") as f:
        json.dump(doc, f, indent=1, allow_nan=False)
        f.write("\n")
    return jpath


def load(path) -> Model:
    """Load and fully validate a model file (raises ModelFormatError)."""
    jpath, npath = resolve_path(path)
    if not jpath.is_file():
        raise ModelFormatError(f"model file {str(jpath)!r} not found")
    try:
        with open(jpath) as f:
            doc = json.load(f, parse_constant=_reject_constant)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelFormatError(f"{str(jpath)!r} is not valid JSON: {e}") from e
    graph = graph_from_json(doc)
    wname = doc.get("weights")
    if wname is not None:
        if not isinstance(wname, str) or Path(wname).name != wname:
            raise ModelFormatError(f"'weights' must be a file name next to the JSON, got {wname!r}")
        npath = jpath.with_name(wname)
    if not npath.is_file():
        raise ModelFormatError(f"weights file {str(npath)!r} not found")
    try:
        with np.load(npath, allow_pickle=False) as z:
            raw = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise ModelFormatError(f"{str(npath)!r} is not a valid .npz file: {e}") from e
    return Model(graph, validate_weights(graph, raw), jpath)


def _reject_constant(name):
    raise ModelFormatError(f"non-finite number {name} in model JSON")
