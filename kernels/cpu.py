"""CPU feature detection and the threading setup shared by all kernels.

Must be imported before any ``parallel=True`` kernel compiles, since Numba fixes the
threading layer at first use.
"""
import os

import numba
from llvmlite import binding as _llvm

# workqueue: the OpenMP layer busy-waits and was slower with 2 threads on 2-core machines,
# and workqueue needs no extra package.  A user's explicit NUMBA_THREADING_LAYER wins.
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"

_FEATURES = _llvm.get_host_cpu_features()
HAS_IFMA = bool(_FEATURES.get("avx512ifma", False) and _FEATURES.get("avx512f", False))
# HEMET_PORTABLE=1 forces the portable kernels (used to test both paths on IFMA machines).
USE_IFMA = HAS_IFMA and os.environ.get("HEMET_PORTABLE", "") in ("", "0")


def set_num_threads(n: int) -> None:
    """Threads used by the parallel kernels (at most the cores Numba found)."""
    n = int(n)
    if not 1 <= n <= numba.config.NUMBA_NUM_THREADS:
        raise ValueError(f"threads must be in 1..{numba.config.NUMBA_NUM_THREADS}, got {n}")
    numba.set_num_threads(n)


def get_num_threads() -> int:
    return numba.get_num_threads()
