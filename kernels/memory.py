"""Allocator setup: keep the kernels' large temporaries on the heap between operations.

A key switch at N = 2^16 allocates and frees tens of MB of temporaries (the digits, the
extended-basis products, the output).  glibc's defaults hand such memory back to the kernel
after every operation (sizes above a dynamic mmap threshold are mapped and unmapped; a heap
top above twice that threshold is trimmed) and fault it in again, zeroed, on the next one:
measured on the 2-core EPYC, 2,152 page faults and 16 ms of system time per rotation (median
50.6 ms; 39.7 ms with these settings) at N = 2^16, level 12, dnum 1, 2 threads
(``bench/results/amd/README.md``, session 15).  Fixed thresholds keep those pages in the
process instead.  It is the calibration's fresh processes that gain: a warm server reuses its
heap's holes, and neither it nor ``hemet demo`` measured a change.

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
    # glibc's largest accepted value (HEAP_MAX_SIZE / 2 on 64-bit); fixing it also stops the
    # dynamic threshold, so a one-off large free no longer changes later behaviour
    "mmap_threshold": 32 << 20,
    # a free heap top is given back only beyond this: the temporaries of one operation
    # (up to ~100 MB at N = 2^16 with 30+ limbs) stay, a released network's GiBs do not
    "trim_threshold": 1 << 30,
    # grow the heap in steps of this much, so a larger temporary is one brk, not many
    "top_pad": 64 << 20,
}

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
    results = [mallopt(_PARAM[name], value) for name, value in MALLOC_SETTINGS.items()]
    _tuned = all(r == 1 for r in results)
    return _tuned
