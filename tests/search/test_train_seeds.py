"""bench/train_seeds.py: seeds of several networks as parallel hemet train runs, skipped when
finished, resumed when not, tabulated by bench/seeds.py."""
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

from test_seeds import _make_cifar10  # noqa: E402

TINY = ["--", "--epochs", "1", "--batch-size", "25", "--n-val", "20", "--limit-train", "50",
        "--no-compile"]


def test_parse_seeds():
    import train_seeds
    assert train_seeds.parse_seeds(["6", "8-10", "7"]) == [6, 7, 8, 9, 10]
    with pytest.raises(SystemExit, match="bad seed"):
        train_seeds.parse_seeds(["x"])


def test_train_seeds_runs_skips_and_tabulates(tmp_path, capsys, monkeypatch):
    pytest.importorskip("torch", reason="torch not installed")
    import seeds
    import train_seeds
    monkeypatch.chdir(tmp_path)
    data = _make_cifar10(tmp_path / "data")
    argv = ["--models", "dwsep", "hemet-fire1-4", "--seeds", "0-1", "--jobs", "2",
            "--device", "cpu", "--data", str(data), "--poll", "1", *TINY]
    assert train_seeds.main(argv) == 0
    out = capsys.readouterr().out
    runs = [tmp_path / "runs" / f"seed{s}-{m}" for m in ("dwsep", "hemet-fire1-4") for s in (0, 1)]
    for run in runs:
        m = run.name.split("-", 1)[1]
        assert (run / "export" / f"{m}-cifar10.json").is_file()
        cfg = json.loads((run / "config.json").read_text())
        assert (cfg["model"], cfg["epochs"], cfg["cutout"], cfg["lr"]) == (m, 1, 8, 0.03)
        assert f"done  runs/{run.name}" in out
    # hemet-fire1-4 has the most MACs: its runs start first
    starts = [line.split(":")[0] for line in out.splitlines() if line.startswith("start")]
    assert starts[:2] == ["start runs/seed0-hemet-fire1-4", "start runs/seed1-hemet-fire1-4"]
    mtimes = [(r / "last.pt").stat().st_mtime for r in runs]
    # run again: everything is finished, nothing is started
    assert train_seeds.main(argv) == 0
    again = capsys.readouterr().out
    assert "start" not in again and again.count("skip") == 4
    assert [(r / "last.pt").stat().st_mtime for r in runs] == mtimes
    table = again.splitlines()[-1].split("python bench/seeds.py ")[1].split()
    assert seeds.main(table[:-1] + ["--data", str(data), "--json", "--jobs", "1"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["networks"]["dwsep"]["n"] == 2 and summary["gain"]["of"] == "hemet-fire1-4"


def test_train_seeds_resumes_and_reports_failure(tmp_path, capsys, monkeypatch):
    pytest.importorskip("torch", reason="torch not installed")
    import train_seeds
    monkeypatch.chdir(tmp_path)
    data = _make_cifar10(tmp_path / "data")
    base = ["--models", "dwsep", "--seeds", "3", "--jobs", "1", "--device", "cpu",
            "--data", str(data), "--poll", "1"]
    tiny = [a if a != "1" else "2" for a in TINY]  # two epochs
    run = tmp_path / "runs" / "seed3-dwsep"
    # a run stopped after its first epoch (by its time limit) is unfinished...
    assert train_seeds.main(base + tiny + ["--max-minutes", "1e-6"]) == 1
    assert "FAIL  runs/seed3-dwsep: stopped unfinished" in capsys.readouterr().out
    assert train_seeds.epochs_done(run) == 1
    # ...and the next call resumes it instead of starting over
    assert train_seeds.main(base + tiny) == 0
    out = capsys.readouterr().out
    assert "--resume" in out and "done  runs/seed3-dwsep" in out
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2]
    assert "resumed dwsep at epoch 1/2" in (run / "train.out").read_text()


def test_recipe_pins_bf16_and_says_where_it_is_emulated(tmp_path, monkeypatch):
    """The table's runs trained in bf16; "auto" would pick fp32 on a CPU without native bf16
    and give runs that bench/seeds.py refuses to tabulate with them."""
    pytest.importorskip("torch", reason="torch not installed")
    import argparse
    import train_seeds
    from hemet import train
    a = argparse.Namespace(threads=1, device="cpu", data=None, extra=[])
    cmd = train_seeds.command("squeezenet", 3, tmp_path / "run", a)
    assert cmd[cmd.index("--precision") + 1] == "bf16"
    table = json.loads((ROOT / "bench" / "results" / "seeds.json").read_text())
    assert table["recipe"]["precision"] == "bf16"
    monkeypatch.setattr(train, "resolve_precision", lambda p, d="cpu": "fp32")
    assert "emulates" in train_seeds.precision_note("cpu", [])
    assert train_seeds.precision_note("cpu", ["--precision", "fp32"]) is None
    monkeypatch.setattr(train, "resolve_precision", lambda p, d="cpu": "bf16")
    assert train_seeds.precision_note("cpu", []) is None


def test_schedule():
    """Several workers: longest runs first (they would otherwise finish alone at the end).
    One worker: seed by seed, the networks alternating as named, so a cut-short campaign
    leaves paired seeds."""
    import train_seeds
    todo = [(20, 0, "squeezenet", "a"), (20, 1, "squeezenet", "b"),
            (35, 0, "hemet-fire1-4", "c"), (35, 1, "hemet-fire1-4", "d")]
    assert [t[3] for t in train_seeds.schedule(todo, 2)] == ["c", "d", "a", "b"]
    assert [t[3] for t in train_seeds.schedule(todo, 1)] == ["a", "c", "b", "d"]
