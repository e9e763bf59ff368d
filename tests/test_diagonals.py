"""kernels.diagonals against a plain-Python reference: which diagonals a sparse map has, and
every value in its place, summed in the reference's order (so equal exactly)."""
import numpy as np
from hypothesis import given, settings, strategies as st

from kernels.diagonals import count_diagonals, fill_diagonals


def reference(rows, cols, vals, out_ct, out_slot, in_ct, in_slot, slots, out_reps, in_reps):
    """{(j, key): [(slot, value), ...]} in the order of the output copies, then the entries."""
    found = {}
    for r in range(out_reps):
        for row, col, v in zip(rows.tolist(), cols.tolist(), vals.tolist()):
            if v == 0.0:
                continue
            s = (int(out_slot[row]) + r * (slots // out_reps)) % slots
            d = (int(in_slot[col]) - s) % slots
            if in_reps > 1:
                stride = slots // in_reps
                d = ((d + stride // 2) % stride - stride // 2) % slots
            key = int(out_ct[row]) * slots + d
            found.setdefault((int(in_ct[col]), key), []).append((s, v))
    return found


@st.composite
def maps(draw):
    slots = 1 << draw(st.integers(2, 6))
    out_reps = 1 << draw(st.integers(0, 2))
    in_reps = 1 << draw(st.integers(0, 2))
    n_out, n_in = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    out_size, in_size = draw(st.integers(1, 20)), draw(st.integers(1, 20))
    nnz = draw(st.integers(0, 60))
    seed = draw(st.integers(0, 2 ** 32 - 1))
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, out_size, nnz).astype(np.int64)   # duplicates allowed
    cols = rng.integers(0, in_size, nnz).astype(np.int64)
    vals = rng.choice([0.0, 1.0, -2.5, 0.125, 3e-7], nnz) * rng.standard_normal(nnz)
    out_ct = rng.integers(0, n_out, out_size).astype(np.int32)
    out_slot = rng.integers(0, slots // out_reps, out_size).astype(np.int32)
    in_ct = rng.integers(0, n_in, in_size).astype(np.int32)
    in_slot = rng.integers(0, slots, in_size).astype(np.int32)
    return (rows, cols, vals, out_ct, out_slot, in_ct, in_slot, slots, out_reps, in_reps), n_in, n_out


@settings(max_examples=150, deadline=None)
@given(maps(), st.integers(1, 4), st.booleans())
def test_diagonals_match_the_reference(m, chunk, dense):
    args, n_in, n_out = m
    slots = args[7]
    ref = reference(*args)
    for j0 in range(0, n_in, chunk):
        nj = min(chunk, n_in - j0)
        counts = np.zeros((nj, n_out * slots), dtype=np.int32)
        count_diagonals(*args, j0, counts)
        mine = {(j0 + jj, int(k)): int(counts[jj, k]) for jj, k in zip(*np.nonzero(counts))}
        want = {jk: len(e) for jk, e in ref.items() if j0 <= jk[0] < j0 + nj}
        assert mine == want

        # every block dense, or every block in segments
        pos = np.full_like(counts, -1)
        dense_at = np.zeros(nj, dtype=np.int64)
        cursor, seg_base, n_dense, n_seg = [], {}, 0, 0
        for jj in range(nj):
            keys = np.flatnonzero(counts[jj])
            pos[jj, keys] = np.arange(keys.size)
            if dense:
                dense_at[jj] = n_dense
                n_dense += keys.size * slots
            else:
                dense_at[jj] = -len(cursor) - 1
                for k in keys:
                    seg_base[(j0 + jj, int(k))] = n_seg
                    cursor.append(n_seg)
                    n_seg += int(counts[jj, k])
        values = np.zeros(n_dense)
        seg_slot, seg_val = np.full(n_seg, -1, dtype=np.int32), np.full(n_seg, np.nan)
        cursor = np.array(cursor, dtype=np.int64)
        fill_diagonals(*args, j0, pos, dense_at, values, cursor, seg_slot, seg_val)
        for (j, key), entries in want_entries(ref, j0, nj).items():
            p = int(pos[j - j0, key])
            if dense:
                vec = np.zeros(slots)
                for s, v in entries:
                    vec[s] += v
                a = int(dense_at[j - j0]) + p * slots
                assert np.array_equal(values[a:a + slots], vec)
            else:
                a = seg_base[(j, key)]
                assert seg_slot[a:a + len(entries)].tolist() == [s for s, _ in entries]
                assert seg_val[a:a + len(entries)].tolist() == [v for _, v in entries]
        if dense:  # nothing written outside the diagonals
            written = sum(counts[jj].astype(bool).sum() for jj in range(nj)) * slots
            assert written == values.size
        else:
            assert not np.isnan(seg_val).any() and (seg_slot >= 0).all()


def want_entries(ref, j0, nj):
    return {jk: e for jk, e in ref.items() if j0 <= jk[0] < j0 + nj}
