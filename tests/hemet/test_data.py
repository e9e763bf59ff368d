import pickle

import numpy as np
import pytest

from hemet import data as D


def _raw(path):
    with open(path, "rb") as f:
        d = pickle.load(f, encoding="bytes")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}


def test_cifar10_reader_layout(cifar10_dir):
    tr = D.load_cifar10(cifar10_dir, "train")
    te = D.load_cifar10(cifar10_dir / "cifar-10-batches-py", "test")  # the folder itself works
    assert tr.images.shape == (100, 32, 32, 3) and tr.images.dtype == np.uint8
    assert te.images.shape == (20, 32, 32, 3) and te.labels.dtype == np.int64
    raw = _raw(cifar10_dir / "cifar-10-batches-py" / "data_batch_2")
    # image 3 of batch 2: channel planes R, G, B each row-major 32x32
    img = tr.images[20 + 3]
    assert np.array_equal(img[..., 0].ravel(), raw["data"][3][:1024])
    assert np.array_equal(img[..., 1].ravel(), raw["data"][3][1024:2048])
    assert np.array_equal(img[..., 2].ravel(), raw["data"][3][2048:])
    assert np.array_equal(tr.labels[20:40], raw["labels"])


def test_hemet_data_env(cifar10_dir, monkeypatch):
    monkeypatch.setenv("HEMET_DATA", str(cifar10_dir))
    assert len(D.load_dataset("cifar10", None, "test")) == 20
    monkeypatch.delenv("HEMET_DATA")
    with pytest.raises(D.DataError, match="HEMET_DATA"):
        D.load_cifar10(None)


def test_cifar100_fine_and_coarse(cifar100_dir):
    raw = _raw(cifar100_dir / "cifar-100-python" / "train")
    fine = D.load_cifar100(cifar100_dir, "train", "fine")
    coarse = D.load_dataset("cifar100-coarse", cifar100_dir, "train")
    assert fine.images.shape == (30, 32, 32, 3)
    assert np.array_equal(fine.labels, raw["fine_labels"])
    assert np.array_equal(coarse.labels, raw["coarse_labels"])
    assert np.array_equal(fine.images, coarse.images)
    assert np.array_equal(fine.images[5, ..., 2].ravel(), raw["data"][5][2048:])
    test = D.load_dataset("cifar100", cifar100_dir, "test")  # bytes keys variant
    assert len(test) == 15 and test.labels.max() < 100


@pytest.mark.parametrize("what", ["dir", "sub", "batch"])
def test_missing_data_errors(tmp_path, cifar10_dir, what):
    if what == "dir":
        with pytest.raises(D.DataError, match="does not exist"):
            D.load_cifar10(tmp_path / "nope")
    elif what == "sub":
        with pytest.raises(D.DataError, match="cifar-100-python"):
            D.load_cifar100(cifar10_dir)
    else:
        (cifar10_dir / "cifar-10-batches-py" / "data_batch_4").unlink()
        with pytest.raises(D.DataError, match="data_batch_4"):
            D.load_cifar10(cifar10_dir, "train")
        assert len(D.load_cifar10(cifar10_dir, "test")) == 20


def _rewrite(path, **changes):
    d = _raw(path)
    d.update(changes)
    with open(path, "wb") as f:
        pickle.dump(d, f)


@pytest.mark.parametrize("corruption,match", [
    ("truncated", "corrupt pickle"),
    ("not_dict", "expected a dict"),
    ("no_labels", "labels"),
    ("bad_shape", "3072"),
    ("label_range", "outside"),
    ("count", "images but"),
])
def test_corrupt_batch_errors(cifar10_dir, corruption, match):
    p = cifar10_dir / "cifar-10-batches-py" / "test_batch"
    if corruption == "truncated":
        p.write_bytes(p.read_bytes()[:500])
    elif corruption == "not_dict":
        p.write_bytes(pickle.dumps([1, 2, 3]))
    elif corruption == "no_labels":
        d = _raw(p)
        del d["labels"]
        p.write_bytes(pickle.dumps(d))
    elif corruption == "bad_shape":
        _rewrite(p, data=np.zeros((20, 3000), np.uint8))
    elif corruption == "label_range":
        _rewrite(p, labels=[10] * 20)
    elif corruption == "count":
        _rewrite(p, labels=[1] * 19)
    with pytest.raises(D.DataError, match=match) as ei:
        D.load_cifar10(cifar10_dir, "test")
    assert "test_batch" in str(ei.value)


def test_bad_split_names(cifar10_dir):
    with pytest.raises(ValueError):
        D.load_cifar10(cifar10_dir, "val")
    with pytest.raises(ValueError):
        D.load_dataset("mnist", cifar10_dir)


def test_train_val_split_disjoint_and_deterministic(cifar10_dir):
    tr = D.load_cifar10(cifar10_dir, "train")
    a, v = D.train_val_split(tr, 30, seed=3)
    a2, v2 = D.train_val_split(tr, 30, seed=3)
    assert len(a) == 70 and len(v) == 30
    assert np.array_equal(v.images, v2.images)
    keys = {im.tobytes() for im in tr.images}
    assert len(keys) == 100  # random synthetic images are distinct
    assert not ({im.tobytes() for im in a.images} & {im.tobytes() for im in v.images})
    assert {im.tobytes() for im in a.images} | {im.tobytes() for im in v.images} == keys


def test_shipped_sample():
    s = D.load_sample()
    assert s.images.shape == (64, 32, 32, 3) and s.images.dtype == np.uint8
    assert s.labels.shape == (64,) and 0 <= s.labels.min() and s.labels.max() < 10
    assert len(np.unique(s.labels)) == 10
    x = D.to_nchw_float(s.images[:2])
    assert x.shape == (2, 3, 32, 32) and x.dtype == np.float64 and 0 <= x.min() and x.max() <= 1


def test_sample_matches_real_test_set(real_cifar10):
    te = D.load_cifar10(real_cifar10, "test")
    s = D.load_sample()
    assert np.array_equal(te.images[:64], s.images)
    assert np.array_equal(te.labels[:64], s.labels)


def test_real_cifar10(real_cifar10):
    tr = D.load_cifar10(real_cifar10, "train")
    te = D.load_cifar10(real_cifar10, "test")
    assert tr.images.shape == (50000, 32, 32, 3) and te.images.shape == (10000, 32, 32, 3)
    assert np.all(np.bincount(tr.labels) == 5000) and np.all(np.bincount(te.labels) == 1000)
    mean = tr.images.reshape(-1, 3).mean(0) / 255
    assert np.allclose(mean, D.CIFAR10_MEAN, atol=1e-3)
