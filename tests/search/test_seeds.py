"""bench/seeds.py: per-run facts from hemet train's files, test accuracy, the seed statistics."""
import json
import math
import statistics
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))


def _make_cifar10(root):
    """tests/hemet/conftest.py's synthetic CIFAR-10 (loaded by path: every test folder has a
    conftest module)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("hemet_test_data", ROOT / "tests" / "hemet" / "conftest.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.make_cifar10(root, n_per_batch=24)


def _run(tmp, name, model, seed, val_accs, rollback_at=None, planned=None, lr=0.03):
    from hemet import modelfile, zoo
    run = tmp / name
    run.mkdir()
    g = zoo.build(model, 10)
    path = modelfile.save(run / "export" / f"{model}-cifar10.json", g, zoo.random_weights(g, seed))
    log = []
    for e, v in enumerate(val_accs, 1):
        if rollback_at == e:
            log.append({"epoch": e, "train_loss": float("nan"), "rollback": 1, "lr_scale": 0.5})
        log.append({"epoch": e, "train_loss": 1.0, "train_acc": 0.5 + e / 100, "val_acc": v})
    (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    (run / "config.json").write_text(json.dumps({
        "model": model, "seed": seed, "epochs": planned or len(val_accs), "lr": lr,
        "threads": seed + 1, "device": ["cpu", "cuda"][seed % 2], "out": str(run),
        "export": str(run / "export" / f"{model}-cifar10")}))
    return run, path


def test_seed_table(tmp_path, capsys):
    import seeds
    from hemet import data as D, modelfile, reference
    data = _make_cifar10(tmp_path / "data")
    a0, fa0 = _run(tmp_path, "a0", "squeezenet", 0, [0.3, 0.5])
    a1, fa1 = _run(tmp_path, "a1", "squeezenet", 1, [0.2, 0.6], rollback_at=2)
    b0, fb0 = _run(tmp_path, "b0", "hemet-fire1-4", 0, [0.4, 0.45])
    b1, fb1 = _run(tmp_path, "b1", "hemet-fire1-4", 1, [0.1, 0.7])
    late, _ = _run(tmp_path, "late", "hemet-fire1-4", 2, [0.2], planned=2)  # still training
    # a run's model given explicitly (DIR=MODEL.json), as for the shipped seed-0 runs
    args = [str(a0), f"{a1}={fa1}", str(b0), str(b1), str(late), "--data", str(data), "--json",
            "--jobs", "2"]  # results from two worker processes, matched back to their runs
    assert seeds.main(args) == 0
    out = json.loads(capsys.readouterr().out)
    split = D.load_dataset("cifar10", str(data), "test")
    want = {f: reference.accuracy(modelfile.load(f), split.images, split.labels, 250)
            for f in (fa0, fa1, fb0, fb1)}
    runs = {(r["model"], r["seed"]): r for r in out["runs"]}
    assert sorted(runs) == [("hemet-fire1-4", 0), ("hemet-fire1-4", 1), ("squeezenet", 0),
                            ("squeezenet", 1)]  # the unfinished run is left out
    # threads, device, out and export may differ between runs; epochs and lr are the recipe
    assert out["recipe"] == {"epochs": 2, "lr": 0.03}
    assert out["command"] == "python bench/seeds.py " + " ".join(args)
    assert runs[("squeezenet", 0)]["best_val"] == 0.5
    assert runs[("squeezenet", 1)]["rollbacks"] == 1 and runs[("squeezenet", 0)]["rollbacks"] == 0
    assert runs[("squeezenet", 1)]["epochs"] == 2
    for (m, s), f in {("squeezenet", 0): fa0, ("squeezenet", 1): fa1,
                      ("hemet-fire1-4", 0): fb0, ("hemet-fire1-4", 1): fb1}.items():
        assert runs[(m, s)]["test"] == want[f]
    sq, he = out["networks"]["squeezenet"], out["networks"]["hemet-fire1-4"]
    assert sq["mean"] == pytest.approx((want[fa0] + want[fa1]) / 2)
    assert sq["std"] == pytest.approx(statistics.stdev([want[fa0], want[fa1]]))
    g = out["gain"]
    assert (g["of"], g["over"]) == ("hemet-fire1-4", "squeezenet")
    assert g["points"] == pytest.approx(100 * (he["mean"] - sq["mean"]))
    assert g["stderr"] == pytest.approx(100 * math.sqrt(sq["std"] ** 2 / 2 + he["std"] ** 2 / 2))
    assert g["per_seed"]["0"] == pytest.approx(100 * (want[fb0] - want[fa0]))
    lo, hi, df = seeds.welch_interval(sq, he)
    assert g["ci"] == pytest.approx({"level": 0.95, "low": lo, "high": hi, "df": df})
    assert lo < g["points"] < hi


def test_missing_model_file_is_a_clear_error(tmp_path):
    import seeds
    run, path = _run(tmp_path, "r", "squeezenet", 0, [0.5])
    path.unlink()
    with pytest.raises(SystemExit, match="no model file"):
        seeds.read_run(str(run))


def test_runs_of_different_recipes_are_refused(tmp_path):
    import seeds
    data = _make_cifar10(tmp_path / "data")
    a, _ = _run(tmp_path, "a", "squeezenet", 0, [0.3, 0.5])
    b, _ = _run(tmp_path, "b", "hemet-fire1-4", 0, [0.3, 0.5], lr=0.1)
    with pytest.raises(SystemExit, match=r"lr = 0.03 in .* but 0.1 in"):
        seeds.main([str(a), str(b), "--data", str(data), "--json"])


def test_plot_is_written(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    import seeds
    data = _make_cifar10(tmp_path / "data")
    runs = [str(_run(tmp_path, f"{m}{s}", m, s, [0.3, 0.5])[0])
            for m in ("squeezenet", "hemet-fire1-4") for s in (0, 1)]
    png = tmp_path / "plots" / "seeds.png"
    assert seeds.main(runs + ["--data", str(data), "--plot", str(png), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["plot"] == str(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_previous_runs_join_the_table(tmp_path, capsys):
    """--previous: an earlier table's runs (run directories gone) join new ones with the test
    accuracies recorded then; a clash of seeds or recipes, or a malformed file, is refused."""
    import seeds
    data = _make_cifar10(tmp_path / "data")
    a0, _ = _run(tmp_path, "a0", "squeezenet", 0, [0.3, 0.5])
    b0, _ = _run(tmp_path, "b0", "hemet-fire1-4", 0, [0.4, 0.45])
    a1, _ = _run(tmp_path, "a1", "squeezenet", 1, [0.2, 0.6])
    b1, fb1 = _run(tmp_path, "b1", "hemet-fire1-4", 1, [0.1, 0.7])
    common = ["--data", str(data), "--json", "--jobs", "1"]
    assert seeds.main([str(a0), str(b0)] + common) == 0
    first = json.loads(capsys.readouterr().out)
    first["runs"][0]["test"] = 0.123  # what was measured then is kept, not re-measured
    old = tmp_path / "old.json"
    old.write_text(json.dumps(first))
    args = [str(a1), str(b1), "--previous", str(old)] + common
    assert seeds.main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert [(r["model"], r["seed"]) for r in out["runs"]] == [
        ("squeezenet", 0), ("hemet-fire1-4", 0), ("squeezenet", 1), ("hemet-fire1-4", 1)]
    assert out["runs"][0]["test"] == 0.123 and out["runs"][0]["recorded_in"] == str(old)
    assert "recorded_in" not in out["runs"][3]
    assert out["networks"]["squeezenet"]["n"] == 2
    assert out["previous"] == {"file": str(old), "command": first["command"]}
    g = out["gain"]
    assert g["median_per_seed"] == pytest.approx(statistics.median(g["per_seed"].values()))
    # the same seed twice, another recipe, a broken file: refused with a reason
    with pytest.raises(SystemExit, match="seed 0 of squeezenet is already in"):
        seeds.main([str(a0), "--previous", str(old)] + common)
    other = dict(first, recipe={"epochs": 2, "lr": 0.05})
    old.write_text(json.dumps(other))
    with pytest.raises(SystemExit, match="runs train differently: lr"):
        seeds.main(args)
    for bad in ("{", json.dumps({"runs": []}), json.dumps(dict(first, runs=[{"model": "x"}])),
                json.dumps(dict(first, runs=[dict(first["runs"][0], test=1.5)]))):
        old.write_text(bad)
        with pytest.raises(SystemExit, match="--previous"):
            seeds.main(args)


@settings(max_examples=40, deadline=None)
@given(t=st.floats(-1e4, 1e4), df=st.sampled_from([1, 2]))
def test_t_cdf_matches_closed_forms(t, df):
    """df 1 (Cauchy) and df 2 have closed-form distribution functions."""
    import seeds
    exact = 0.5 + math.atan(t) / math.pi if df == 1 else 0.5 + t / (2 * math.sqrt(2 + t * t))
    assert seeds.t_cdf(t, df) == pytest.approx(exact, abs=1e-7)


def test_welch_interval():
    """Quantiles against printed tables; the interval against one computed by hand."""
    import seeds
    for df, q in [(1, 12.7062), (3, 3.1824), (6, 2.4469), (10, 2.2281), (30, 2.0423), (1e6, 1.9600)]:
        assert seeds.t_quantile(0.975, df) == pytest.approx(q, abs=1e-4)
    sa = {"n": 4, "mean": 0.80, "std": 0.02}
    sb = {"n": 3, "mean": 0.83, "std": 0.005}
    va, vb = 0.02 ** 2 / 4, 0.005 ** 2 / 3
    df = (va + vb) ** 2 / (va ** 2 / 3 + vb ** 2 / 2)
    lo, hi, got_df = seeds.welch_interval(sa, sb)
    assert got_df == pytest.approx(df)
    half = 100 * seeds.t_quantile(0.975, df) * math.sqrt(va + vb)
    assert (lo, hi) == pytest.approx((3 - half, 3 + half))
    assert 3 - half < 0 < 3  # few seeds and a wide spread: the interval holds 0
