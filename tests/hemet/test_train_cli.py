import json

import numpy as np
import pytest

from hemet import cli, data as D, modelfile, reference, zoo
from hemet.train import augment_batch, collapsed

from helpers import random_weights


def test_augment_batch_is_crop_and_flip():
    rng = np.random.default_rng(0)
    imgs = np.random.default_rng(1).integers(1, 256, (40, 8, 8, 3), dtype=np.uint8)
    out = augment_batch(imgs, rng, pad=2)
    assert out.shape == imgs.shape and out.dtype == np.uint8
    changed = 0
    for src, dst in zip(imgs, out):
        pad = np.zeros((12, 12, 3), np.uint8)
        pad[2:10, 2:10] = src
        found = any(np.array_equal(dst, c if not f else c[:, ::-1])
                    for dy in range(5) for dx in range(5) for f in (0, 1)
                    for c in [pad[dy:dy + 8, dx:dx + 8]])
        assert found
        changed += not np.array_equal(src, dst)
    assert changed > 20  # most images are actually transformed


def test_cutout_masks_one_clipped_square():
    imgs = np.full((200, 16, 16, 3), 200, np.uint8)
    out = augment_batch(imgs, np.random.default_rng(2), pad=0, cutout=6, fill=(1, 2, 3))
    masked = (out == np.array([1, 2, 3], np.uint8)).all(-1)
    assert ((out == 200).all(-1) | masked).all()  # every pixel is either kept or filled
    for m in masked:
        ys, xs = np.nonzero(m)
        assert len(ys) > 0
        # one axis-aligned rectangle, at most 6x6, a full 6x6 unless clipped at a border
        assert len(ys) == (np.ptp(ys) + 1) * (np.ptp(xs) + 1) and np.ptp(ys) < 6 and np.ptp(xs) < 6
        if 0 < ys.min() and ys.max() < 15 and 0 < xs.min() and xs.max() < 15:
            assert len(ys) == 36
    sizes = masked.sum((1, 2))
    assert sizes.min() < 36 == sizes.max()  # border clipping happens, full squares too


def test_collapse_rule():
    assert collapsed(0.10, 0.73)            # chance after 73%: diverged
    assert not collapsed(0.476, 0.687)      # a noisy epoch at high learning rate
    assert not collapsed(0.10, 0.25)        # too early to tell


def _run(capsys, argv):
    rc = cli.main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_eval_plain_json_on_sample(tmp_path, capsys):
    g = zoo.build("hemet-fire1-4", 10)
    w = random_weights(g, seed=3, dtype=np.float32)
    modelfile.save(tmp_path / "rand", g, w)
    rc, out, _ = _run(capsys, ["eval", "--plain", "--model", str(tmp_path / "rand.json"),
                               "--dataset", "sample", "--json"])
    assert rc == 0
    res = json.loads(out)
    assert set(res) == {"model", "accuracy", "n"} and res["n"] == 64
    s = D.load_sample()
    m = modelfile.load(tmp_path / "rand")
    expect = float((reference.forward(m, D.to_nchw_float(s.images)).argmax(1) == s.labels).mean())
    assert res["accuracy"] == pytest.approx(expect)


def test_eval_errors(tmp_path, capsys, cifar10_dir):
    rc, _, err = _run(capsys, ["eval", "--plain", "--model", str(tmp_path / "none"),
                               "--dataset", "sample"])
    assert rc == 2 and "no model" in err
    (tmp_path / "bad.json").write_text("{")
    (tmp_path / "bad.npz").write_bytes(b"")
    rc, _, err = _run(capsys, ["eval", "--plain", "--model", str(tmp_path / "bad.json"),
                               "--dataset", "sample"])
    assert rc == 2 and "JSON" in err
    g = zoo.build("squeezenet", 10)
    modelfile.save(tmp_path / "ok", g, random_weights(g))
    rc, _, err = _run(capsys, ["eval", "--plain", "--model", str(tmp_path / "ok"),
                               "--data", str(tmp_path / "missing"), "--dataset", "cifar10"])
    assert rc == 2 and "does not exist" in err


def test_subcommand_registry():
    assert {"train", "eval"} <= set(cli.COMMANDS)
    with pytest.raises(ValueError):
        cli.register("eval", "dup", lambda p: None, lambda a: 0)
    cli.register("_probe", "test", lambda p: p.add_argument("--x", type=int),
                 lambda a: a.x + 1)
    try:
        assert cli.main(["_probe", "--x", "4"]) == 5
    finally:
        del cli.COMMANDS["_probe"]


def test_train_export_resume(tmp_path, capsys, cifar10_dir):
    torch = pytest.importorskip("torch", reason="torch not installed")
    from hemet import torch_modules as TM
    from hemet.train import evaluate_torch
    out = tmp_path / "run"
    base = ["train", "--model", "hemet-fire1-4", "--data", str(cifar10_dir), "--out", str(out),
            "--batch-size", "16", "--n-val", "20", "--no-progress", "--threads", "1"]
    rc, stdout, _ = _run(capsys, base + ["--epochs", "2", "--export", str(tmp_path / "m")])
    assert rc == 0
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["epochs_done"] == 2 and 0 <= summary["best_val"] <= 1
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2] and all(np.isfinite(r["train_loss"]) for r in log)
    m = modelfile.load(tmp_path / "m")
    assert m.graph.depth() == zoo.build("hemet-fire1-4").depth()
    # the exported file reproduces the best checkpoint's predictions
    state = torch.load(out / "best.pt", weights_only=False)
    net = TM.GraphNet(zoo.build("hemet-fire1-4", 10))
    net.load_state_dict(state["model"])
    net.eval()
    s = D.load_sample()
    with torch.no_grad():
        t_logits = net(torch.from_numpy(D.to_nchw_float(s.images)).float()).numpy()
    r_logits = reference.forward(m, D.to_nchw_float(s.images))
    np.testing.assert_allclose(r_logits, t_logits, atol=1e-3 * max(1, np.abs(r_logits).max()))
    tr, val = D.train_val_split(D.load_cifar10(cifar10_dir), 20, seed=12345)
    assert evaluate_torch(net, val) == pytest.approx(state["val_acc"])
    # a run killed after logging epoch 3 but before its checkpoint landed...
    with open(out / "log.jsonl", "a") as f:
        f.write(json.dumps({"epoch": 3, "train_loss": 1.0, "train_acc": 0.5, "val_acc": 0.99}) + "\n")
    # ...resumes from the checkpoint for one more epoch: the log is the checkpoint's again
    rc, stdout, _ = _run(capsys, base + ["--epochs", "3", "--resume"])
    assert rc == 0 and "resumed" in stdout
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3] and log[2]["val_acc"] != 0.99
    assert not list(out.glob("*.tmp"))
    assert torch.load(out / "last.pt", weights_only=False)["epoch"] == 3


def test_train_is_deterministic(tmp_path, capsys, cifar10_dir):
    torch = pytest.importorskip("torch", reason="torch not installed")
    finals = []
    for i in range(2):
        out = tmp_path / f"r{i}"
        rc, _, _ = _run(capsys, ["train", "--model", "dwsep", "--data", str(cifar10_dir), "--out",
                                 str(out), "--batch-size", "25", "--n-val", "20", "--epochs", "1",
                                 "--no-progress", "--no-compile"])
        assert rc == 0
        finals.append(torch.load(out / "last.pt", weights_only=False)["model"])
    assert all(torch.equal(finals[0][k], finals[1][k]) for k in finals[0])


def test_train_rolls_back_a_diverged_epoch(tmp_path, capsys, cifar10_dir, monkeypatch):
    torch = pytest.importorskip("torch", reason="torch not installed")
    import hemet.train as T
    calls = []

    def fake_collapse(val, best):  # the second evaluated epoch "diverges" once
        calls.append(val)
        return len(calls) == 2
    monkeypatch.setattr(T, "collapsed", fake_collapse)
    out = tmp_path / "r"
    def argv(out, *extra):
        return ["train", "--model", "dwsep", "--data", str(cifar10_dir), "--out", str(out),
                "--batch-size", "25", "--n-val", "20", "--epochs", "2", "--lr", "0.05",
                "--no-progress", "--no-compile", *extra]
    rc, stdout, _ = _run(capsys, argv(out))
    assert rc == 0 and "diverged" in stdout
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["rollbacks"] == 1 and summary["epochs_done"] == 2
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 2]
    assert log[1]["rollback"] == 1 and log[1]["lr_scale"] == 0.5 and "rollback" not in log[2]
    assert log[2]["lr"] == pytest.approx(log[1]["lr"] * 0.5)  # the retry runs at half the rate
    last = torch.load(out / "last.pt", weights_only=False)
    assert last["rollbacks"] == 1 and last["lr_scale"] == 0.5 and last["epoch"] == 2
    # a run that keeps diverging gives up with a clear error instead of training on garbage
    monkeypatch.setattr(T, "collapsed", lambda v, b: True)
    with pytest.raises(FloatingPointError, match="rollbacks"):
        cli.main(argv(tmp_path / "r2", "--max-rollbacks", "1"))


SHIPPED = ["squeezenet-cifar10", "hemet-cifar10", "hemet-fire1-4-cifar10"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_models_on_sample(name, capsys):
    if name not in cli.shipped_models():
        pytest.skip(f"shipped model {name} not present yet")
    m = modelfile.load(cli.resolve_model(name))
    assert m.classes == 10 and m.graph.metadata.get("dataset") == "cifar10"
    rc, out, _ = _run(capsys, ["eval", "--plain", "--model", name, "--dataset", "sample", "--json"])
    res = json.loads(out)
    assert rc == 0 and res["model"] == name and res["n"] == 64
    assert res["accuracy"] >= 0.5  # far above chance (0.1) for a trained network
    size = sum(p.stat().st_size for p in cli.resolve_model(name).parent.glob(
        cli.resolve_model(name).stem + ".*"))
    assert size < 5_000_000


def test_shipped_models_full_test_set(real_cifar10):
    shipped = cli.shipped_models()
    if "squeezenet-cifar10" not in shipped:
        pytest.skip("no shipped model yet")
    te = D.load_cifar10(real_cifar10, "test")
    m = modelfile.load(shipped["squeezenet-cifar10"])
    acc = reference.accuracy(m, te.images[:500], te.labels[:500])
    assert acc >= 0.6


def test_train_cifar100_head(tmp_path, capsys, cifar100_dir):
    pytest.importorskip("torch", reason="torch not installed")
    rc, _, _ = _run(capsys, ["train", "--model", "dwsep", "--dataset", "cifar100", "--data",
                             str(cifar100_dir), "--out", str(tmp_path / "r"), "--batch-size", "10",
                             "--n-val", "10", "--epochs", "1", "--no-progress", "--no-compile", "--export",
                             str(tmp_path / "m100")])
    assert rc == 0
    m = modelfile.load(tmp_path / "m100")
    assert m.classes == 100 and m.graph.metadata["dataset"] == "cifar100"
    norm = m.graph.nodes[0].layer
    assert norm.op == "normalize" and norm.mean == D.CIFAR100_MEAN


def test_device_choice(monkeypatch):
    torch = pytest.importorskip("torch", reason="torch not installed")
    from hemet.train import resolve_device, resolve_precision
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu" and resolve_device("cpu") == "cpu"
    with pytest.raises(ValueError, match="sees no CUDA GPU"):
        resolve_device("cuda")
    for bad in ("gpu0", "tpu", "cuda:x", "mps"):
        with pytest.raises(ValueError, match="device must be"):
            resolve_device(bad)
    # a machine with one GPU: auto takes it, an index past the last is refused
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("auto") == "cuda" and resolve_device("cuda:0") == "cuda:0"
    with pytest.raises(ValueError, match="only 1 CUDA GPU"):
        resolve_device("cuda:1")
    for native, want in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda native=native: native)
        assert resolve_precision("auto", "cuda:0") == want
    assert resolve_precision("fp32", "cuda") == "fp32"


def test_train_device_errors_and_resume_elsewhere(tmp_path, capsys, cifar10_dir, monkeypatch):
    """A GPU asked for where torch sees none is a clear error before anything is written; a run
    checkpointed on a GPU resumes on the CPU (``--device`` is run control, like --threads)."""
    torch = pytest.importorskip("torch", reason="torch not installed")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "run"
    base = ["train", "--model", "dwsep", "--data", str(cifar10_dir), "--out", str(out),
            "--batch-size", "25", "--n-val", "20", "--no-progress", "--no-compile"]
    rc, _, err = _run(capsys, base + ["--epochs", "1", "--device", "cuda"])
    assert rc == 2 and "sees no CUDA GPU" in err and not out.exists()
    rc, stdout, _ = _run(capsys, base + ["--epochs", "1"])
    assert rc == 0 and "on cpu" in stdout
    assert json.loads((out / "config.json").read_text())["device"] == "cpu"
    last = torch.load(out / "last.pt", weights_only=False)
    last["config"]["device"] = "cuda:0"  # as if trained on a GPU machine
    torch.save(last, out / "last.pt")
    rc, stdout, _ = _run(capsys, base + ["--epochs", "2", "--resume", "--device", "cpu"])
    assert rc == 0 and "resumed" in stdout and "on cpu" in stdout
    assert torch.load(out / "last.pt", weights_only=False)["epoch"] == 2
