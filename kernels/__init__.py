"""Numba kernels for RNS polynomial arithmetic.

Plain functions over NumPy arrays, no objects.  An RNS polynomial is a C-contiguous
``uint64`` array of shape ``(k, N)``: row ``i`` holds the residues modulo the ``i``-th prime of
its basis.  Kernels that need per-prime tables take ``rows``, an ``int64`` array mapping each
row of the polynomial to a row of the tables, so one table serves every basis (Q_l, P, Q_l+P).

All primes are below 2^50 so that both the AVX-512 IFMA path (52-bit multipliers) and the
portable float64-quotient path are exact.
"""
from . import _cache  # noqa: F401  (first: before any cached kernel is defined)
from .cpu import HAS_IFMA, USE_IFMA, set_num_threads, get_num_threads  # noqa: F401
from .memory import tune_malloc

tune_malloc()
