"""Generalized diagonals of a sparse matrix between slot layouts (the compiler's linear stages).

A matrix entry (row, col, value) takes output element ``row`` to (output ciphertext o, slot s)
and input element ``col`` to (input ciphertext j, slot t) through the layouts' index tables;
it lies on diagonal ``d = (t - s) mod slots`` of block (o, j), at slot s of that diagonal's
vector.  A replicated output layout (``out_reps`` copies, ``slots / out_reps`` apart) writes
every copy: copy r puts the entry at slot ``s + r * slots / out_reps``.  A replicated input
(``in_reps`` copies) is read from the copy nearest the output slot, so d is moved into
``[-st / 2, st / 2)`` modulo ``st = slots / in_reps``.

Two passes over the entries, with no per-entry temporaries: a stage's map has up to ~10^7
entries (hemet-fire1-4's conv_f4: 7.9 million, twice that with two output copies), and
materialising its keys, slots and replicas as NumPy arrays took ~1 GB and, on these VMs, most
of the compile time in first touches of fresh memory.  Entries are visited copy by copy, then
in their order, so every diagonal value is summed in the order ``np.bincount`` over the tiled
arrays summed it.

Block keys are ``o * slots + d``.  Only input ciphertexts ``j0 <= j < j0 + counts.shape[0]``
are handled in one call, so a caller bounds the counts array for layouts of many ciphertexts.
"""
from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["count_diagonals", "fill_diagonals"]


@njit(cache=True, inline="always")
def _place(row, col, shift, out_ct, out_slot, in_ct, in_slot, slots, in_reps):
    """(j, key, s) of one entry in output copy ``shift / (slots / out_reps)``."""
    mask = slots - 1
    s = (out_slot[row] + shift) & mask
    d = (in_slot[col] - s) & mask
    if in_reps > 1:
        st = slots // in_reps
        d = (((d + st // 2) & (st - 1)) - st // 2) & mask
    return in_ct[col], out_ct[row] * slots + d, s


@njit(cache=True)
def count_diagonals(rows, cols, vals, out_ct, out_slot, in_ct, in_slot, slots, out_reps,
                    in_reps, j0, counts):
    """``counts[j - j0, key] += 1`` for every nonzero entry and output copy (``counts``:
    int32, zeroed by the caller, shape (ciphertexts handled, n_out * slots))."""
    nj = counts.shape[0]
    for r in range(out_reps):
        shift = r * (slots // out_reps)
        for e in range(rows.size):
            if vals[e] == 0.0:
                continue
            j, key, s = _place(rows[e], cols[e], shift, out_ct, out_slot, in_ct, in_slot,
                               slots, in_reps)
            j -= j0
            if 0 <= j < nj:
                counts[j, key] += 1


@njit(cache=True)
def fill_diagonals(rows, cols, vals, out_ct, out_slot, in_ct, in_slot, slots, out_reps,
                   in_reps, j0, pos, dense_at, dense, cursor, seg_slot, seg_val):
    """Write every nonzero entry and output copy into its diagonal.

    ``pos[j - j0, key]``: the diagonal's index p within block j.  Block j is dense where
    ``dense_at[j - j0] >= 0``: the value is added at ``dense[dense_at[j - j0] + p * slots + s]``.
    Otherwise its diagonals are segments of (slot, value) entries: ``-dense_at[j - j0] - 1 + p``
    indexes ``cursor``, the next free place of diagonal p in ``seg_slot`` / ``seg_val`` (the
    caller sets it to the diagonal's start; it ends at the next diagonal's start)."""
    nj = pos.shape[0]
    for r in range(out_reps):
        shift = r * (slots // out_reps)
        for e in range(rows.size):
            v = vals[e]
            if v == 0.0:
                continue
            j, key, s = _place(rows[e], cols[e], shift, out_ct, out_slot, in_ct, in_slot,
                               slots, in_reps)
            j -= j0
            if not 0 <= j < nj:
                continue
            p = pos[j, key]
            at = dense_at[j]
            if at >= 0:
                dense[at + p * slots + s] += v
            else:
                c = -at - 1 + p
                k = cursor[c]
                seg_slot[k] = s
                seg_val[k] = v
                cursor[c] = k + 1
