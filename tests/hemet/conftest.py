"""Shared fixtures: small synthetic CIFAR files written by the tests."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

REAL_DATA_CANDIDATES = [os.environ.get("HEMET_DATA"), "/work/.cache_cifar"]


def write_batch(path: Path, n: int, rng, label_keys=(("labels", 10),), bytes_keys=True):
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    d = {"batch_label": "synthetic", "data": data}
    for key, k in label_keys:
        d[key] = [int(v) for v in rng.integers(0, k, n)]
    if bytes_keys:
        d = {k.encode(): v for k, v in d.items()}
    with open(path, "wb") as f:
        pickle.dump(d, f, protocol=2)
    return d


def make_cifar10(root: Path, n_per_batch: int = 20, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    for i in range(1, 6):
        write_batch(d / f"data_batch_{i}", n_per_batch, rng)
    write_batch(d / "test_batch", n_per_batch, rng)
    return root


def make_cifar100(root: Path, n: int = 30, seed: int = 1) -> Path:
    rng = np.random.default_rng(seed)
    d = root / "cifar-100-python"
    d.mkdir(parents=True)
    keys = (("fine_labels", 100), ("coarse_labels", 20))
    write_batch(d / "train", n, rng, keys, bytes_keys=False)
    write_batch(d / "test", n // 2, rng, keys, bytes_keys=True)
    return root


@pytest.fixture
def cifar10_dir(tmp_path):
    return make_cifar10(tmp_path / "data")


@pytest.fixture
def cifar100_dir(tmp_path):
    return make_cifar100(tmp_path / "data100")


def real_data_dir():
    for c in REAL_DATA_CANDIDATES:
        if c and (Path(c) / "cifar-10-batches-py" / "test_batch").is_file():
            return Path(c)
    return None


@pytest.fixture
def real_cifar10():
    d = real_data_dir()
    if d is None:
        pytest.skip("real CIFAR-10 not found: set HEMET_DATA to a directory with "
                    "cifar-10-batches-py/ (extract ../shared/data/cifar-10-python.tar.xz)")
    return d
