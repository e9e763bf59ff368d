"""CIFAR-10 / CIFAR-100 readers (standard "python version" layout) and the shipped sample.

Images are returned as uint8 arrays in NHWC layout (N, 32, 32, 3), labels as int64 (N,).
The data directory comes from the ``root`` argument or the ``HEMET_DATA`` environment
variable; it may be the directory that contains ``cifar-10-batches-py/`` /
``cifar-100-python/`` or that folder itself.
"""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

__all__ = [
    "DataError", "Split", "CIFAR10_DIR", "CIFAR100_DIR", "data_root", "load_cifar10",
    "load_cifar100", "load_dataset", "load_sample", "train_val_split", "CIFAR10_MEAN",
    "CIFAR10_STD", "CIFAR100_MEAN", "CIFAR100_STD", "NUM_CLASSES", "CIFAR10_CLASSES",
    "to_nchw_float", "dataset_stats",
]

CIFAR10_DIR = "cifar-10-batches-py"
CIFAR100_DIR = "cifar-100-python"
# Per-channel statistics of the training sets, pixels scaled to [0, 1].
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "cifar100-coarse": 20}


class DataError(RuntimeError):
    """A data set is missing, incomplete or corrupt."""


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # uint8 (N, 32, 32, 3)
    labels: np.ndarray  # int64 (N,)

    def __len__(self) -> int:
        return len(self.labels)


def data_root(root: str | os.PathLike | None = None) -> Path:
    """Resolve the data directory from ``root`` or ``$HEMET_DATA``."""
    if root is None:
        root = os.environ.get("HEMET_DATA")
        if not root:
            raise DataError("no data directory given: pass --data DIR / root=... or set HEMET_DATA")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DataError(f"data directory {str(path)!r} does not exist")
    return path


def _find(root: str | os.PathLike | None, sub: str) -> Path:
    base = data_root(root)
    if base.name == sub:
        return base
    if (base / sub).is_dir():
        return base / sub
    raise DataError(f"{sub}/ not found in {str(base)!r} (expected {str(base / sub)!r})")


def _unpickle(path: Path) -> dict:
    if not path.is_file():
        raise DataError(f"missing file {str(path)!r}")
    try:
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="bytes")
    except Exception as e:  # noqa: BLE001 - any unpickling failure means corrupt data
        raise DataError(f"cannot read {str(path)!r}: corrupt pickle ({type(e).__name__}: {e})") from e
    if not isinstance(d, dict):
        raise DataError(f"{str(path)!r} is corrupt: expected a dict, got {type(d).__name__}")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in d.items()}


def _decode(d: dict, path: Path, label_key: str, n_classes: int) -> Split:
    for key in ("data", label_key):
        if key not in d:
            raise DataError(f"{str(path)!r} is corrupt: key {key!r} missing")
    try:
        data = np.asarray(d["data"], dtype=np.uint8) if not isinstance(d["data"], np.ndarray) else d["data"]
        labels = np.asarray(d[label_key], dtype=np.int64)
    except (TypeError, ValueError) as e:
        raise DataError(f"{str(path)!r} is corrupt: {e}") from e
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{str(path)!r} is corrupt: 'data' must be uint8 (N, 3072), "
                        f"got {data.dtype} {data.shape}")
    if labels.ndim != 1 or len(labels) != len(data):
        raise DataError(f"{str(path)!r} is corrupt: {len(data)} images but "
                        f"{labels.shape} {label_key!r}")
    if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
        raise DataError(f"{str(path)!r} is corrupt: {label_key!r} outside 0..{n_classes - 1}")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return Split(np.ascontiguousarray(images), labels)


def _concat(splits: list[Split]) -> Split:
    return Split(np.concatenate([s.images for s in splits]), np.concatenate([s.labels for s in splits]))


def load_cifar10(root=None, split: str = "train") -> Split:
    """CIFAR-10 ``train`` (data_batch_1..5, 50,000 images) or ``test`` (10,000)."""
    d = _find(root, CIFAR10_DIR)
    if split == "train":
        names = [f"data_batch_{i}" for i in range(1, 6)]
    elif split == "test":
        names = ["test_batch"]
    else:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    missing = [n for n in names if not (d / n).is_file()]
    if missing:
        raise DataError(f"CIFAR-10 in {str(d)!r} is incomplete: missing {', '.join(missing)}")
    return _concat([_decode(_unpickle(d / n), d / n, "labels", 10) for n in names])


def load_cifar100(root=None, split: str = "train", label: str = "fine") -> Split:
    """CIFAR-100 ``train``/``test`` with ``fine`` (100) or ``coarse`` (20) labels."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if label not in ("fine", "coarse"):
        raise ValueError(f"label must be 'fine' or 'coarse', got {label!r}")
    d = _find(root, CIFAR100_DIR)
    path = d / split
    return _decode(_unpickle(path), path, f"{label}_labels", 100 if label == "fine" else 20)


def load_dataset(name: str, root=None, split: str = "train") -> Split:
    """``cifar10``, ``cifar100`` (fine labels) or ``cifar100-coarse``."""
    if name == "cifar10":
        return load_cifar10(root, split)
    if name == "cifar100":
        return load_cifar100(root, split, "fine")
    if name == "cifar100-coarse":
        return load_cifar100(root, split, "coarse")
    raise ValueError(f"unknown dataset {name!r}; choose from {sorted(NUM_CLASSES)}")


def dataset_stats(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    return (CIFAR10_MEAN, CIFAR10_STD) if name == "cifar10" else (CIFAR100_MEAN, CIFAR100_STD)


def train_val_split(split: Split, n_val: int = 5000, seed: int = 0) -> tuple[Split, Split]:
    """Hold out a fixed random validation set from the training data."""
    if not 0 <= n_val < len(split):
        raise ValueError(f"n_val={n_val} out of range for {len(split)} images")
    perm = np.random.default_rng(seed).permutation(len(split))
    val, tr = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    return Split(split.images[tr], split.labels[tr]), Split(split.images[val], split.labels[val])


SAMPLE_FILE = "cifar10_test_sample.npz"


def load_sample() -> Split:
    """The first 64 CIFAR-10 test images shipped with the package (uint8 NHWC + labels)."""
    with resources.files("hemet").joinpath("assets", SAMPLE_FILE).open("rb") as f:
        z = np.load(f)
        return Split(z["images"].copy(), z["labels"].astype(np.int64))


def to_nchw_float(images: np.ndarray) -> np.ndarray:
    """uint8 NHWC -> float64 NCHW in [0, 1]: the input every HEMET model file expects."""
    return images.transpose(0, 3, 1, 2).astype(np.float64) / 255.0
