import json

import numpy as np
import pytest

import hemet
from hemet import modelfile, zoo
from hemet.modelfile import ModelFormatError

from helpers import random_weights


@pytest.fixture
def saved(tmp_path):
    g = zoo.build("squeezenet", 10)
    w = random_weights(g, seed=1, dtype=np.float32)
    jpath = modelfile.save(tmp_path / "m", g, w)
    return jpath, g, w


def test_exported_from_package():
    assert hemet.ModelFormatError is ModelFormatError
    assert issubclass(ModelFormatError, ValueError)


@pytest.mark.parametrize("name", zoo.network_names())
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip_bit_exact(tmp_path, name, dtype):
    g = zoo.build(name, 100)
    w = random_weights(g, seed=2, dtype=dtype)
    modelfile.save(tmp_path / "x.json", g, w)
    m = modelfile.load(tmp_path / "x")
    assert m.graph.nodes == g.nodes and m.graph.name == g.name and m.classes == 100
    assert m.graph.output == g.output and m.graph.input_shape == (3, 32, 32)
    assert set(m.weights) == set(w)
    for k in w:
        assert m.weights[k].dtype == dtype
        assert m.weights[k].tobytes() == w[k].tobytes()
    # saving the loaded model again gives identical files
    modelfile.save(tmp_path / "y", m.graph, m.weights)
    assert (tmp_path / "x.json").read_text().replace("x.npz", "y.npz") == \
        (tmp_path / "y.json").read_text()


def test_json_header_and_nodes(saved):
    jpath, g, _ = saved
    doc = json.loads(jpath.read_text())
    assert doc["format"] == "hemet-model" and doc["version"] == 1
    assert doc["input"]["shape"] == [3, 32, 32] and doc["classes"] == 10
    assert doc["nodes"][0]["op"] == "normalize" and doc["nodes"][0]["inputs"] == ["input"]
    names = [n["name"] for n in doc["nodes"]]
    assert len(set(names)) == len(names)
    concat = next(n for n in doc["nodes"] if n["op"] == "concat")
    assert len(concat["inputs"]) == 2
    conv = next(n for n in doc["nodes"] if n["op"] == "conv2d")
    assert conv["weights"]["weight"] == [64, 3, 3, 3]


def _edit_json(jpath, fn):
    doc = json.loads(jpath.read_text())
    fn(doc)
    jpath.write_text(json.dumps(doc))


def _edit_npz(jpath, fn):
    npath = jpath.with_suffix(".npz")
    with np.load(npath) as z:
        w = {k: z[k] for k in z.files}
    fn(w)
    with open(npath, "wb") as f:
        np.savez(f, **w)


def _node(doc, op):
    return next(n for n in doc["nodes"] if n["op"] == op)


JSON_CORRUPTIONS = {
    "bad json": lambda p: p.write_text('{"format": "hemet-model", "version": 1, "nodes": ['),
    "not object": lambda p: p.write_text("[1, 2]"),
    "nan in json": lambda p: p.write_text(p.read_text().replace('"eps": 1e-05', '"eps": NaN', 1)),
    "wrong format": lambda p: _edit_json(p, lambda d: d.update(format="onnx")),
    "wrong version": lambda p: _edit_json(p, lambda d: d.update(version=2)),
    "unknown op": lambda p: _edit_json(p, lambda d: _node(d, "poly").update(op="relu")),
    "bad attribute": lambda p: _edit_json(
        p, lambda d: _node(d, "conv2d")["attrs"].update(stride=5)),
    "unknown attribute": lambda p: _edit_json(
        p, lambda d: _node(d, "avgpool")["attrs"].update(mode="max")),
    "declared shape": lambda p: _edit_json(
        p, lambda d: _node(d, "conv2d")["weights"].update(weight=[64, 3, 5, 5])),
    "dangling input": lambda p: _edit_json(
        p, lambda d: _node(d, "concat").update(inputs=["nope", "fire1_expand3_bn"])),
    "duplicate name": lambda p: _edit_json(
        p, lambda d: d["nodes"][2].update(name=d["nodes"][1]["name"])),
    "missing key": lambda p: _edit_json(p, lambda d: d.pop("nodes")),
    "classes": lambda p: _edit_json(p, lambda d: d.update(classes=100)),
    "channels": lambda p: _edit_json(
        p, lambda d: (_node(d, "conv2d")["attrs"].update(out_channels=32),
                      _node(d, "conv2d")["weights"].update(weight=[32, 3, 3, 3]))),
    "missing npz": lambda p: p.with_suffix(".npz").unlink(),
    "corrupt npz": lambda p: p.with_suffix(".npz").write_bytes(b"PK\x03\x04garbage"),
    "missing weight": lambda p: _edit_npz(p, lambda w: w.pop("conv1_conv.weight")),
    "extra weight": lambda p: _edit_npz(p, lambda w: w.update(extra=np.zeros(3))),
    "wrong shape": lambda p: _edit_npz(p, lambda w: w.update(
        {"classifier.bias": np.zeros(11, np.float32)})),
    "nan weight": lambda p: _edit_npz(p, lambda w: w["fire2_act.a"].__setitem__(3, np.nan)),
    "inf weight": lambda p: _edit_npz(p, lambda w: w["conv1_bn.bias"].__setitem__(0, np.inf)),
    "int weight": lambda p: _edit_npz(p, lambda w: w.update(
        {"classifier.bias": np.zeros(10, np.int32)})),
    "negative variance": lambda p: _edit_npz(
        p, lambda w: w["conv1_bn.running_var"].__setitem__(0, -1.0)),
}


@pytest.mark.parametrize("kind", sorted(JSON_CORRUPTIONS))
def test_corrupted_files_raise(saved, kind):
    jpath, _, _ = saved
    modelfile.load(jpath)  # valid before
    JSON_CORRUPTIONS[kind](jpath)
    with pytest.raises(ModelFormatError):
        modelfile.load(jpath)


def test_missing_json(tmp_path):
    with pytest.raises(ModelFormatError, match="not found"):
        modelfile.load(tmp_path / "none.json")


def test_save_validates(tmp_path):
    g = zoo.build("hemet-fire1-4", 10)
    w = random_weights(g)
    w["classifier.weight"] = w["classifier.weight"][:5]
    with pytest.raises(ModelFormatError, match="shape"):
        modelfile.save(tmp_path / "m", g, w)
    assert not (tmp_path / "m.json").exists()


def test_no_torch_import_needed():
    import subprocess
    import sys
    code = ("import sys; sys.modules['torch'] = None; import hemet, hemet.modelfile, "
            "hemet.reference, hemet.zoo, hemet.data, hemet.cli; print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"
