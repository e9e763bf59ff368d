"""The private-inference subcommands (in process): infer, demo, eval --encrypted, compile,
bench, tour; all on small INSECURE parameters and tiny models."""
import json

import numpy as np
import pytest

from hemet import layers as L
from hemet.cli import main
from hemet.graph import INPUT, Graph
from hemet.modelfile import save
from hemet.reference import forward
from hemet.roles import ModelInfo

from .conftest import random_weights

pytestmark = pytest.mark.filterwarnings("ignore::ckks.SecurityWarning")
FAST = ["--insecure", "--log-n", "10", "--dnum", "1", "--no-progress"]


@pytest.fixture(scope="module")
def cifar_model_file(tmp_path_factory):
    """A 10-class model on 3x32x32 CIFAR images: conv s2 -> poly -> pool -> 1x1 -> pool."""
    nodes = [L.Node("normalize", L.Normalize((0.49, 0.48, 0.45), (0.25, 0.24, 0.26)), (INPUT,))]
    nodes += L.ConvBNAct(3, 4, 3, stride=2, act="poly").nodes("c1", "normalize")
    nodes += [L.Node("pool", L.AvgPool(2), ("c1_act",)),
              L.Node("classifier", L.Conv2d(4, 10, 1, 1, 0, 1, True), ("pool",)),
              L.Node("gap", L.GlobalAvgPool(), ("classifier",))]
    g = Graph("tiny-cifar", nodes, 10, input_shape=(3, 32, 32))
    base = tmp_path_factory.mktemp("cifar") / "tiny-cifar"
    save(base, g, random_weights(g, 4))
    return str(base) + ".json"


def _json_out(capsys):
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_infer_json(model_file, model, tmp_path, capsys, monkeypatch):
    from hemet import roles
    servers, real_init = [], roles.Server.__init__

    def spy(self, *a, **k):
        real_init(self, *a, **k)
        servers.append(self)

    monkeypatch.setattr(roles.Server, "__init__", spy)
    x = np.random.default_rng(2).uniform(0, 1, (3, 8, 8))
    np.save(tmp_path / "x.npy", x)
    assert main(["infer", "--model", model_file, "--image", str(tmp_path / "x.npy"), "--json"] + FAST) == 0
    # one image uses each diagonal once: nothing is cached (copied into memory never read again)
    cache, = (s._encoding.cache for s in servers)   # the sessions' backends share it
    assert cache.misses > 0 and len(cache) == 0
    res = _json_out(capsys)
    want = forward(model, x[None])[0]
    assert res["agree"] and res["encrypted_class"] == int(np.argmax(want))
    assert res["max_logit_error"] < 1e-3 and not res["secure_128"]
    assert [r["kind"] for r in res["layers"]][-1] == "linear"


def test_demo_on_a_sample_image(cifar_model_file, capsys):
    assert main(["demo", "--model", cifar_model_file, "--image", "3", "--insecure", "--log-n", "12",
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "encrypted: class" in out and "plaintext: class" in out and "agree" in out
    assert "per-layer times" in out and "true:" in out and "INSECURE" in out


def test_demo_without_the_shipped_model(capsys, monkeypatch, tmp_path):
    from hemet import cli
    monkeypatch.setattr(cli, "assets_dir", lambda: tmp_path)  # an install without shipped models
    assert "hemet-fire1-4-cifar10" not in cli.shipped_models()
    assert main(["demo", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "hemet-fire1-4-cifar10" in err and "--model" in err


def test_eval_encrypted_and_plain(cifar_model_file, capsys):
    assert main(["eval", "--encrypted", "--model", cifar_model_file, "--dataset", "sample",
                 "--limit", "2", "--json", "--insecure", "--log-n", "12"]) == 0
    res = _json_out(capsys)
    assert res["n"] == 2 and res["agreement"] == 1.0 and res["max_logit_error"] < 1e-3
    assert main(["eval", "--plain", "--model", cifar_model_file, "--dataset", "sample",
                 "--limit", "4", "--json"]) == 0
    assert _json_out(capsys)["n"] == 4
    assert main(["eval", "--model", cifar_model_file, "--dataset", "sample"]) == 2


def test_compile_writes_public_info(model_file, tmp_path, capsys):
    out = tmp_path / "info.bin"
    assert main(["compile", "--model", model_file, "--out", str(out), "--json"] + FAST) == 0
    res = _json_out(capsys)
    info = ModelInfo.from_bytes(out.read_bytes())
    assert info.fingerprint.hex() == res["fingerprint"]
    assert res["costs"]["rotation_keys"] == len(info.rotation_steps)


def test_bench(model_file, tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.full((3, 8, 8), 0.5))
    assert main(["bench", "--model", model_file, "--image", str(tmp_path / "x.npy"), "--repeat", "2",
                 "--json"] + FAST) == 0
    res = _json_out(capsys)
    assert res["repeat"] == 2 and res["median"]["evaluate"] > 0 and res["layers_median"]


def test_secure_parameters_are_checked(model_file, capsys):
    # log_n 10 cannot be 128-bit secure for depth 3: a clear error, not a traceback
    assert main(["compile", "--model", model_file, "--log-n", "10"]) == 2
    assert "128-bit" in capsys.readouterr().err


def test_tour(capsys):
    assert main(["tour"]) == 0                       # 128-bit secure N = 2^13, about a second
    out = capsys.readouterr().out
    for word in ("Rescale", "Rotate", "one network layer", "rotate_hoisted", "bits", "max error"):
        assert word in out


def test_compile_plan_repacks_where_predicted_faster():
    """``--repack auto`` follows the calibrated latency model (hemet-fire1-4: gathering after
    pool1 stays on N = 2^15 and is predicted faster); ``off`` and teaching parameters keep the
    graph's depth."""
    import argparse
    from hemet.commands import compile_plan, load_model
    model = load_model("hemet-fire1-4-cifar10")
    ns = dict(insecure=False, log_n=None, dnum=None)
    params, opts = compile_plan(model, argparse.Namespace(repack="auto", **ns))
    assert opts == {"repack": True} and params.depth == model.graph.depth() + 1 and params.log_n == 15
    params, opts = compile_plan(model, argparse.Namespace(repack="off", **ns))
    assert opts == {} and params.depth == model.graph.depth()
    params, opts = compile_plan(model, argparse.Namespace(repack="on", **dict(ns, insecure=True, log_n=12)))
    assert opts == {} and params.depth == model.graph.depth()
