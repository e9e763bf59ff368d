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


ROOT = Path(__file__).resolve().parents[2]
# the development and CI machines keep CIFAR-10 beside the checkout (shared/data, see its README)
SHARED_ARCHIVE = ROOT.parent / "shared" / "data" / "cifar-10-python.tar.xz"
EXTRACTED = ROOT / ".cache" / "cifar10-shared"


def _extract_shared() -> Path | None:
    """CIFAR-10 from the shared archive, unpacked once into .cache/ (about 15 s), so that the
    real-data tests run in CI instead of skipping; None where there is no archive."""
    if (EXTRACTED / "cifar-10-batches-py" / "test_batch").is_file():
        return EXTRACTED
    if not SHARED_ARCHIVE.is_file():
        return None
    import shutil
    import tarfile
    import tempfile
    EXTRACTED.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=EXTRACTED.parent))
    try:
        with tarfile.open(SHARED_ARCHIVE, "r:xz") as tar:
            # the "data" filter refuses links and paths outside tmp (Pythons since 3.10.12)
            kw = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(tmp, **kw)
        if not (tmp / "cifar-10-batches-py" / "test_batch").is_file():
            return None
        try:
            tmp.rename(EXTRACTED)  # atomic: a concurrent run sees all of it or none
        except OSError:
            pass  # another run got there first
        return EXTRACTED if (EXTRACTED / "cifar-10-batches-py" / "test_batch").is_file() else None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def real_data_dir():
    for c in REAL_DATA_CANDIDATES:
        if c and (Path(c) / "cifar-10-batches-py" / "test_batch").is_file():
            return Path(c)
    return _extract_shared()


@pytest.fixture
def real_cifar10():
    d = real_data_dir()
    if d is None:
        pytest.skip("real CIFAR-10 not found: set HEMET_DATA to a directory with "
                    "cifar-10-batches-py/ (extract ../shared/data/cifar-10-python.tar.xz)")
    return d
