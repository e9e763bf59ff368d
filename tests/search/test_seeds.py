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


def test_chi2_sf_against_printed_quantiles():
    import seeds
    for df, x95, x99 in [(1, 3.8415, 6.6349), (2, 5.9915, 9.2103), (3, 7.8147, 11.3449),
                         (4, 9.4877, 13.2767), (7, 14.0671, 18.4753)]:
        assert seeds.chi2_sf(x95, df) == pytest.approx(0.05, abs=2e-5)
        assert seeds.chi2_sf(x99, df) == pytest.approx(0.01, abs=2e-5)
    assert seeds.chi2_sf(0.0, 3) == 1.0


def _table(recipe, a_accs, b_accs):
    """A seeds.py table of squeezenet (a) against hemet-fire1-4 (b) from test accuracies."""
    import seeds
    runs = ([{"model": "squeezenet", "seed": i, "test": t, "recipe": recipe}
             for i, t in enumerate(a_accs)]
            + [{"model": "hemet-fire1-4", "seed": i, "test": t, "recipe": recipe}
               for i, t in enumerate(b_accs)])
    return json.loads(json.dumps(seeds.summarize(runs)))  # as read back from --json


def test_combine_by_hand():
    import seeds
    t1 = _table({"precision": "bf16", "lr": 0.03}, [0.85, 0.83, 0.84, 0.82], [0.845, 0.84, 0.842])
    t2 = _table({"precision": "fp32", "lr": 0.03}, [0.86, 0.85, 0.87], [0.85, 0.855, 0.852, 0.849])
    c = seeds.combine([t1, t2], ["a.json", "b.json"])
    v = [t["gain"]["stderr"] ** 2 for t in (t1, t2)]
    g = [t["gain"]["points"] for t in (t1, t2)]
    w = [1 / x for x in v]
    assert c["points"] == pytest.approx((w[0] * g[0] + w[1] * g[1]) / sum(w))
    assert c["stderr"] == pytest.approx(sum(w) ** -0.5)
    assert c["heterogeneity"]["q"] == pytest.approx(sum(wi * (gi - c["points"]) ** 2 for wi, gi in zip(w, g)))
    assert c["heterogeneity"]["df"] == 1
    assert [t["recipe"] for t in c["tables"]] == [{"precision": "bf16"}, {"precision": "fp32"}]
    assert sum(t["weight"] for t in c["tables"]) == pytest.approx(1.0)
    assert (c["of"], c["over"]) == ("hemet-fire1-4", "squeezenet")
    assert c["ci"]["low"] < c["points"] < c["ci"]["high"]


def test_combine_two_copies_of_one_table():
    """The same seeds under two recipes: the gain is unchanged, its error shrinks by sqrt(2),
    the degrees of freedom double and the tables agree exactly."""
    import seeds
    a, b = [0.85, 0.83, 0.84, 0.82, 0.835], [0.845, 0.84, 0.842]
    t1, t2 = _table({"precision": "bf16"}, a, b), _table({"precision": "fp32"}, a, b)
    c = seeds.combine([t1, t2], ["a", "b"])
    assert c["points"] == pytest.approx(t1["gain"]["points"])
    assert c["stderr"] == pytest.approx(t1["gain"]["stderr"] / math.sqrt(2))
    assert c["ci"]["df"] == pytest.approx(2 * t1["gain"]["ci"]["df"])
    assert c["heterogeneity"]["q"] == pytest.approx(0.0, abs=1e-12)
    assert c["heterogeneity"]["p"] == pytest.approx(1.0)


accs = st.lists(st.floats(0.5, 0.95), min_size=2, max_size=6).filter(
    lambda x: statistics.stdev(x) > 1e-4)


@settings(max_examples=40, deadline=None)
@given(a1=accs, b1=accs, a2=accs, b2=accs)
def test_combine_lies_between_the_tables(a1, b1, a2, b2):
    import seeds
    t1, t2 = _table({"precision": "bf16"}, a1, b1), _table({"precision": "fp32"}, a2, b2)
    c = seeds.combine([t1, t2], ["a", "b"])
    g = sorted(t["gain"]["points"] for t in (t1, t2))
    assert g[0] - 1e-9 <= c["points"] <= g[1] + 1e-9
    assert c["stderr"] <= min(t["gain"]["stderr"] for t in (t1, t2)) + 1e-12
    assert 0.0 <= c["heterogeneity"]["p"] <= 1.0


def test_combine_refuses_what_it_cannot_join(tmp_path, capsys):
    import seeds
    t1 = _table({"precision": "bf16"}, [0.85, 0.83], [0.845, 0.84])
    t2 = _table({"precision": "fp32"}, [0.86, 0.85], [0.85, 0.855])
    with pytest.raises(SystemExit, match="two or more tables"):
        seeds.combine([t1], ["a"])
    with pytest.raises(SystemExit, match="share a recipe"):
        seeds.combine([t1, _table({"precision": "bf16"}, [0.8, 0.81], [0.8, 0.82])], ["a", "b"])
    runs = ([{"model": "hemet-fire1-4", "seed": i, "test": t, "recipe": {"precision": "fp32"}}
             for i, t in enumerate([0.8, 0.81])]
            + [{"model": "squeezenet", "seed": i, "test": t, "recipe": {"precision": "fp32"}}
               for i, t in enumerate([0.8, 0.82])])
    swapped = seeds.summarize(runs)
    with pytest.raises(SystemExit, match="compares squeezenet with hemet-fire1-4"):
        seeds.combine([t1, swapped], ["a", "b"])
    broken = json.loads(json.dumps(t2))
    del broken["networks"]["squeezenet"]["std"]
    with pytest.raises(SystemExit, match="malformed"):
        seeds.combine([t1, broken], ["a", "b"])
    one_seed = _table({"precision": "fp32"}, [0.86], [0.85, 0.855])
    with pytest.raises(SystemExit, match="two or more seeds"):
        seeds.combine([t1, one_seed], ["a", "b"])
    # the command line: tables from files, text and JSON, and no runs beside them
    f1, f2, bad = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "bad.json"
    f1.write_text(json.dumps(t1))
    f2.write_text(json.dumps(t2))
    bad.write_text("{not json")
    assert seeds.main(["--combine", str(f1), str(f2), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["points"] == pytest.approx(seeds.combine([t1, t2], ["x", "y"])["points"])
    assert seeds.main(["--combine", str(f1), str(f2)]) == 0
    assert "combined gain of hemet-fire1-4 over squeezenet" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="--combine .*bad.json"):
        seeds.main(["--combine", str(f1), str(bad)])
    with pytest.raises(SystemExit):
        seeds.main([str(tmp_path), "--combine", str(f1), str(f2)])
    with pytest.raises(SystemExit):
        seeds.main([])
