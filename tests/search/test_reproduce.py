"""bench/reproduce.py --plan-only: both networks' facts and predictions, JSON shape."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_plan_only_json(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "reproduce.py"), "--plan-only", "--json",
                          "--plot", str(tmp_path / "p.png")], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    b, h = d["baseline"], d["hemet"]
    # SqueezeNet as compiled; hemet-fire1-4 (graph depth 11) with its four pooled ciphertexts
    # gathered into one: a 12th level, same ring, predicted faster
    assert (b["depth"], b["log_n"], b["repack"]) == (19, 16, False)
    assert (h["depth"], h["log_n"], h["repack"]) == (12, 15, True)
    assert h["predicted_s_2t"] < b["predicted_s_2t"]
    assert d["latency_reduction"] == round(1 - h["predicted_s_2t"] / b["predicted_s_2t"], 4)
    assert d["accuracy_gain"] is None  # plan only: no accuracy
    assert sum(s["seconds"] for s in b["predicted_steps_2t"]) == __import__("pytest").approx(
        b["predicted_s_2t"], abs=0.05)
    # bench/network.py --plan-only prices with the same calibrated model (no rule of thumb)
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "network.py"), "--model", h["model"],
                          "--plan-only", "--json"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    n = json.loads(out.stdout)
    assert (n["depth"], n["repack"], n["calibration_exact"]) == (12, True, True)
    assert n["predicted_s"] == __import__("pytest").approx(h["predicted_s_2t"], abs=0.01)


def test_agreement_record_resumes_per_model(tmp_path):
    import numpy as np
    sys.path.insert(0, str(ROOT / "bench"))
    import network
    from hemet import modelfile, zoo
    g = zoo.build("hemet-fire1-4", 10)
    m = modelfile.Model(g, zoo.random_weights(g, 1))
    rec = network.AgreementRecord(tmp_path, m)
    rec.add({"index": 0, "agree": 1, "rel_err": 1e-4})
    rec.add({"index": 2, "agree": 0, "rel_err": 3e-3})
    with open(rec.path, "a") as f:
        f.write('{"index": 5, "agr')  # a run killed mid-write
    again = network.AgreementRecord(tmp_path, m)
    assert sorted(again.rows) == [0, 2]
    s = again.summary(3)
    assert (s["agree"], s["agree_images"], s["max_rel_err"]) == (1, 2, 3e-3)
    assert again.summary(1)["agree_images"] == 1  # only the first n images count
    # other weights -> another file: results of different models never mix
    w = dict(m.weights)
    k = sorted(w)[0]
    w[k] = w[k] + np.float32(1e-3)
    other = network.AgreementRecord(tmp_path, modelfile.Model(g, w))
    assert other.digest != rec.digest and other.rows == {}


def test_seed_study_is_read_from_the_seed_table(tmp_path):
    """The multi-seed gain comes from bench/seeds.py's table, only when it compares the same two
    networks; a malformed table is a clear error, a missing one gives nothing."""
    import pytest
    sys.path.insert(0, str(ROOT / "bench"))
    import reproduce
    import seeds
    runs = [{"model": m, "seed": s, "test": t, "best_val": t, "rollbacks": 0,
             "recipe": {"dataset": "cifar10", "epochs": 1}}
            for m, s, t in [("squeezenet", 0, 0.80), ("squeezenet", 1, 0.82), ("squeezenet", 2, 0.81),
                            ("hemet-fire1-4", 0, 0.815), ("hemet-fire1-4", 1, 0.818),
                            ("hemet-fire1-4", 2, 0.82)]]
    table = seeds.summarize(runs)
    f = tmp_path / "seeds.json"
    f.write_text(json.dumps(table))
    st = reproduce.seed_study("squeezenet-cifar10", "hemet-fire1-4-cifar10", f)
    g = table["gain"]
    assert st["seeds"] == 3 and st["file"] == str(f)
    assert st["points"] == round(g["points"], 2) == pytest.approx(100 * (0.8177 - 0.81), abs=0.01)
    assert st["ci95"] == [round(g["ci"]["low"], 2), round(g["ci"]["high"], 2)]
    assert st["ci95"][0] < st["points"] < st["ci95"][1]
    assert st["median_per_seed"] == round(g["median_per_seed"], 2)
    assert reproduce.seed_study("squeezenet-cifar10", "hemet-fire2-4-cifar10", f) is None
    assert reproduce.seed_study("squeezenet-cifar10", "hemet-fire1-4-cifar10", tmp_path / "no") is None
    del table["gain"]["ci"]
    f.write_text(json.dumps(table))
    with pytest.raises(SystemExit, match="not a bench/seeds.py --json table"):
        reproduce.seed_study("squeezenet-cifar10", "hemet-fire1-4-cifar10", f)
    f.write_text("{")
    with pytest.raises(SystemExit, match="not a bench/seeds.py"):
        reproduce.seed_study("squeezenet-cifar10", "hemet-fire1-4-cifar10", f)


def test_shipped_seed_table_is_consistent():
    """bench/results/seeds.json, which README quotes: its gain is what its runs give."""
    import pytest
    sys.path.insert(0, str(ROOT / "bench"))
    import reproduce
    import seeds
    d = json.loads(reproduce.SEEDS.read_text())
    again = seeds.summarize([dict(r, recipe=d["recipe"]) for r in d["runs"]])
    assert again["gain"]["points"] == pytest.approx(d["gain"]["points"])
    assert again["gain"]["ci"] == pytest.approx(d["gain"]["ci"])
    assert {str(k): v for k, v in again["gain"]["per_seed"].items()} == pytest.approx(d["gain"]["per_seed"])
    st = reproduce.seed_study("squeezenet-cifar10", "hemet-fire1-4-cifar10")
    assert st["seeds"] == len(d["gain"]["per_seed"]) >= 7
    assert st["file"] == "bench/results/seeds.json"
