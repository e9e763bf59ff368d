"""The on-disk kernel cache goes stale as a whole when any kernel source changes."""
import numba
import pytest

import kernels
from kernels import _cache, basis


def _locator(dispatcher):
    return dispatcher._cache._impl._locator


def test_kernels_use_the_project_locator():
    assert _cache.INSTALLED, f"numba {numba.__version__}: CacheImpl._locator_classes missing"
    for fn in (basis.hoisted_finish_ifma, kernels.ntt._forward_ifma_serial):
        loc = _locator(fn)
        assert type(loc).__name__.startswith("Hemet")
        assert loc.get_source_stamp()[1] == _cache.KERNELS_HASH


def test_stamp_follows_every_kernel_source(monkeypatch):
    """A cache entry saved under one kernel-source hash does not match under another: an
    edit to ifma_arith.py invalidates basis.py's cached kernels, which inline its code."""
    loc = _locator(basis.hoisted_finish_ifma)
    before = loc.get_source_stamp()
    monkeypatch.setattr(_cache, "KERNELS_HASH", "0" * 64)
    after = loc.get_source_stamp()
    assert before != after and before[0] == after[0]


def test_hash_covers_each_kernel_file(tmp_path, monkeypatch):
    src = _cache._KERNELS
    for p in src.glob("*.py"):
        (tmp_path / p.name).write_bytes(p.read_bytes())
    monkeypatch.setattr(_cache, "_KERNELS", tmp_path)
    assert _cache._kernels_hash() == _cache.KERNELS_HASH
    f = tmp_path / "ifma_arith.py"
    f.write_bytes(f.read_bytes() + b"\n")
    assert _cache._kernels_hash() != _cache.KERNELS_HASH


@pytest.mark.parametrize("path,ours", [("kernels/basis.py", True), ("hemet/he/_fused.py", True),
                                       ("../elsewhere/mod.py", False)])
def test_only_project_files_are_claimed(path, ours):
    assert _cache._ours(_cache._KERNELS.parent / path) is ours
