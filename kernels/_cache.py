"""Numba's on-disk cache, made safe for kernels that call kernels in other files.

Numba keys each cached function by the stamp (mtime, size) of its own source file only, but a
compiled kernel contains the code of every jitted function it calls: after an edit to
``ifma_arith.py``, the cached kernels of ``basis.py`` would go on running the old callee code
(seen here: a deliberately broken ``ifma_arith`` passed the tests on a warm cache).  The
locators installed below serve the functions of this project's packages (``kernels``, ``ckks``,
``hemet``) and stamp each with its own file's stamp plus a hash of every kernel source, so any
edit to a kernel file recompiles everything that may have inlined it.

They wrap Numba's own locators (same cache directories: ``NUMBA_CACHE_DIR``, ``__pycache__``
or the user-wide cache) through ``CacheImpl._locator_classes``, an internal of Numba; where a
Numba version lacks it, ``INSTALLED`` is False and caching works as plain Numba does.
"""
import hashlib
from pathlib import Path

_KERNELS = Path(__file__).resolve().parent
_ROOTS = tuple(_KERNELS.parent / name for name in ("kernels", "ckks", "hemet"))


def _kernels_hash() -> str:
    h = hashlib.sha256()
    for p in sorted(_KERNELS.glob("*.py")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


KERNELS_HASH = _kernels_hash()


def _ours(py_file) -> bool:
    try:
        path = Path(py_file).resolve()
    except (OSError, RuntimeError):
        return False
    return any(root in path.parents for root in _ROOTS)


def _wrap(base):
    class Locator(base):
        @classmethod
        def from_function(cls, py_func, py_file):
            if not _ours(py_file):
                return None
            return super().from_function(py_func, py_file)

        def get_source_stamp(self):
            return (super().get_source_stamp(), KERNELS_HASH)

    Locator.__name__ = Locator.__qualname__ = "Hemet" + base.__name__
    return Locator


def _install() -> bool:
    try:
        from numba.core import caching
        impl = caching.CacheImpl
        bases = [caching.UserProvidedCacheLocator, caching.InTreeCacheLocator,
                 caching.UserWideCacheLocator]
        current = impl._locator_classes
    except AttributeError:
        return False
    if any(getattr(c, "__name__", "").startswith("Hemet") for c in current):
        return True
    # ours first, in Numba's own order; Numba's follow for everyone else's functions
    impl._locator_classes = [_wrap(b) for b in bases] + list(current)
    return True


INSTALLED = _install()
