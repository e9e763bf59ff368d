"""Allocator setup: keep large temporaries in the process between operations.

A key switch at N = 2^16 allocates and frees tens of MB of temporaries (the digits, the
extended-basis products, the output); an encode batch at N = 2^15 is 88 MB; a compile's maps
and diagonals are hundreds of MB.  glibc's defaults hand such memory back to the kernel (sizes
above a dynamic mmap threshold are mapped and unmapped; a heap top above twice that threshold
is trimmed) and fault it in again, zeroed, on the next use.  On these VMs that is worse than a
page fault: the balloon driver reports freed memory to the host, and touching it again ran at
75-500 MB/s (a 762 MiB array took 1.6-10 s to fill the first time, 0.1-0.15 s the second).
Measured on the 2-core EPYC (``bench/results/amd/README.md``), session 15: 2,152 page faults
and 16 ms of system time per rotation at N = 2^16, level 12, dnum 1, 2 threads (median 50.6
ms; 39.7 ms with a 32 MiB mmap threshold); session 17, ``hemet demo`` alternated: 44.8, 41.7,
39.8 s with a 32 MiB threshold, 33.9, 35.4, 35.8 s with 1 GiB.

The cost: a process keeps its peak heap (that demo: 3.20 GB maximum resident with 32 MiB,
3.41-3.56 GB with 1 GiB); holes left by freed arrays are reused by the next ones, and a free
heap top beyond the trim threshold still goes back.

Done once, at import, through ``mallopt``; only where the C library has it (glibc) and the
user set no ``MALLOC_*_`` variable of their own (theirs win).
"""
from __future__ import annotations

import ctypes
import os
import sys

__all__ = ["tune_malloc", "MALLOC_SETTINGS"]

# mallopt's parameter numbers (malloc.h)
_PARAM = {"trim_threshold": -1, "top_pad": -2, "mmap_threshold": -3}

MALLOC_SETTINGS = {
    # fixing it also stops the dynamic threshold, so a one-off large free no longer changes
    # later behaviour; above it (a network's multi-GiB stores) mapping is what is wanted
    "mmap_threshold": 1 << 30,
    # a free heap top is given back only beyond this: the temporaries of one operation
    # (up to ~100 MB at N = 2^16 with 30+ limbs) stay
    "trim_threshold": 1 << 30,
    # grow the heap in steps of this much, so a larger temporary is one brk, not many
    "top_pad": 64 << 20,
}

_CAPPED_MMAP_THRESHOLD = 32 << 20  # HEAP_MAX_SIZE / 2 on 64-bit

_tuned = None


def _user_set_malloc() -> bool:
    return any(k.startswith("MALLOC_") and k.endswith("_") for k in os.environ)


def tune_malloc() -> bool:
    """Apply :data:`MALLOC_SETTINGS` (once per process).  True where they are in effect;
    False on other C libraries or where the user's ``MALLOC_*_`` variables decide."""
    global _tuned
    if _tuned is not None:
        return _tuned
    _tuned = False
    if not sys.platform.startswith("linux") or _user_set_malloc():
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    results = {name: mallopt(_PARAM[name], value) for name, value in MALLOC_SETTINGS.items()}
    if results["mmap_threshold"] != 1:  # a glibc that caps it at HEAP_MAX_SIZE / 2
        results["mmap_threshold"] = mallopt(_PARAM["mmap_threshold"], _CAPPED_MMAP_THRESHOLD)
    _tuned = all(r == 1 for r in results.values())
    return _tuned
