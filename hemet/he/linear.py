"""Linear stages: sparse affine maps between slot layouts, by diagonals with baby-step giant-step.

A stage computes ``y = sum_k M_k x_k + bias`` where every input ``x_k`` is a feature map on its
own layout (a list of ciphertexts) and ``y`` lands on the output layout.  Each ``M_k`` is an
exact :class:`~hemet.he.sparse.AffineMap` (conv, pool, dense, batch norm, compositions).  With
two inputs ``x^2`` and ``x`` (weights ``a*W`` and ``b*W``) the stage is a linear layer with the
polynomial activation before it merged in (coefficient merging); the activation's constant
goes into the bias.

Slot form.  Every triple (out, in, w) maps to (output ciphertext i, slot s) and (input
ciphertext j, slot t); it belongs to the generalized diagonal ``d = (t - s) mod slots`` of the
block (i, j), with ``diag_d[s] = M_ij[s, (s + d) mod slots]`` (``ckks.circuits.LinearTransform``'s
convention), so ``y_i = sum_j sum_d diag_d * rot(x_j, d)``.

Baby-step giant-step with B a power of two, d = g + b (g a multiple of B, b < B):

    y_i = sum_g rot( sum_{k, j, b} rot(diag_{g+b}, -g) * rot(x_kj, b), g )

The baby-step rotations of each input ciphertext are computed once, hoisted (one digit
decomposition), and shared by every output ciphertext; the per-(i, g) accumulators sum over
all inputs and input ciphertexts before their one giant-step rotation.  B minimizes the total
rotation count.

Scales.  The stage runs at level L = the lowest input level (the others are dropped there) and
rescales once.  Input k at scale s_k is multiplied by plaintexts of scale ``out_scale *
primes[L] / s_k``, so every branch sums at one scale and the output scale is ``out_scale``
(default: the scale of input 0, so a one-input stage keeps its scale exactly).

Memory.  Diagonals are kept as float64 slot vectors and encoded lazily, at the level and scale
of use, through a backend cache bounded in bytes (``HEBackend(max_cache_bytes=...)``).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from .layout import Layout, LayoutError
from .sparse import AffineMap

__all__ = ["LinearStage", "StageInput", "best_baby_steps"]

_uid = itertools.count()


@dataclass
class StageInput:
    layout: Layout
    map: AffineMap


def _flat_index(layout: Layout):
    # int32: the stage's gathers over millions of map entries are bound by memory traffic
    ct, slot = layout.flat_slot_index()
    return ct.astype(np.int32), slot.astype(np.int32)


# A hoisted baby-step rotation skips the digit decomposition (ModUp) that a giant-step
# rotation pays (measured at N = 2^15, L = 9: ~11 ms vs ~17 ms), but weighting them so
# (0.65) saved ~1% of the rotation time on hemet-fire1-4 for 35 more Galois keys (+630 MiB):
# the default counts both alike.
BABY_COST = 1.0


def best_baby_steps(block_keys, n_out: int, slots: int, baby_cost: float = BABY_COST) -> tuple[int, int]:
    """(B, rotations) for the power-of-two B minimizing the rotation cost: hoisted baby steps
    weigh ``baby_cost`` of a giant step (1: minimize the rotation count).

    ``block_keys``: list over input ciphertexts of (out_ct array, d array) for its diagonals."""
    best = None
    for e in range(int(math.log2(slots)) + 1):
        B = 1 << e
        n_baby = 0
        giants = set()
        for out_ct, d in block_keys:
            babies = np.unique(_small_int(d % B, B))
            n_baby += int(np.count_nonzero(babies))
            g = d - d % B
            giants.update(zip(out_ct[g != 0].tolist(), g[g != 0].tolist()))
        cost = baby_cost * n_baby + len(giants)
        if best is None or cost < best[2] - 1e-9:
            best = (B, n_baby + len(giants), cost)
    return best[:2]


def _small_int(a, bound):
    """``a`` (values < bound) in the narrowest unsigned type: NumPy's stable sort is a radix
    sort (linear time) for 16-bit and smaller integers."""
    return a.astype(np.uint16) if bound <= 1 << 16 else a


def scale_key(scale: float) -> float:
    """A plaintext scale as a cache key: ``prepare`` predicts the scales of a run with the
    evaluator's float arithmetic, but a rescale can land one ulp away; the same plaintext
    serves both (the backend hands it out at the scale asked for)."""
    return round(math.log2(scale), 9)


class _Block:
    """The diagonals of one (input, input ciphertext) block: output ciphertext ``out_ct`` and
    offset ``d`` per diagonal; values either dense (n, slots) or as segments of (slot, value)
    entries (when that is smaller: e.g. a global pool's thousands of sparse diagonals)."""

    __slots__ = ("out_ct", "d", "n", "slots", "dense", "starts", "seg_slot", "seg_val")

    def __init__(self, keys, slots):
        self.slots = slots
        self.n = keys.size
        self.out_ct, self.d = keys // slots, keys % slots
        self.dense = self.starts = self.seg_slot = self.seg_val = None

    def vector(self, pos) -> np.ndarray:
        if self.dense is not None:
            return self.dense[pos]
        a, b = self.starts[pos], self.starts[pos + 1]
        return np.bincount(self.seg_slot[a:b], weights=self.seg_val[a:b], minlength=self.slots)

    @property
    def nbytes(self) -> int:
        if self.dense is not None:
            return self.dense.nbytes
        return 0 if self.seg_val is None else self.seg_val.nbytes + self.seg_slot.nbytes + self.starts.nbytes


# one pass's diagonal counts stay below this (layouts of many input ciphertexts take several)
_COUNTS_BYTES = 64 << 20


def _diagonal_blocks(m, lay: Layout, out_layout: Layout, out_index, materialize: bool) -> dict:
    """{input ciphertext j: _Block} of map ``m`` from ``lay`` to ``out_layout``
    (:mod:`kernels.diagonals`).  A block is dense where its n diagonals' n * slots values
    take at most twice the room of its entries."""
    from kernels.diagonals import count_diagonals, fill_diagonals
    slots, n_out, n_in = out_layout.slots, out_layout.n_ciphertexts, lay.n_ciphertexts
    args = (m.rows, m.cols, m.vals, *out_index, *_flat_index(lay), slots,
            getattr(out_layout, "replicas", 1), getattr(lay, "replicas", 1))
    step = max(1, _COUNTS_BYTES // (4 * n_out * slots))
    blocks = {}
    for j0 in range(0, n_in, step):
        counts = np.zeros((min(step, n_in - j0), n_out * slots), dtype=np.int32)
        count_diagonals(*args, j0, counts)
        found = {}
        for jj, c in enumerate(counts):
            keys = np.flatnonzero(c)
            if keys.size:
                found[j0 + jj] = (keys, c[keys].astype(np.int64))
                blocks[j0 + jj] = _Block(keys, slots)
        if not materialize or not found:
            continue
        # where each block's values go: dense rows, or segments (dense_at < 0 points into cursor)
        dense_at = np.zeros(len(counts), dtype=np.int64)
        n_dense = n_seg = n_seg_diag = 0
        for j, (keys, per_diag) in found.items():
            counts[j - j0, keys] = np.arange(keys.size, dtype=np.int32)  # counts -> positions
            if keys.size * slots <= 2 * int(per_diag.sum()):
                dense_at[j - j0] = n_dense
                n_dense += keys.size * slots
            else:
                dense_at[j - j0] = -n_seg_diag - 1
                n_seg_diag += keys.size
                n_seg += int(per_diag.sum())
        dense = np.zeros(n_dense)
        seg_slot, seg_val = np.empty(n_seg, dtype=np.int32), np.empty(n_seg)
        cursor = np.empty(n_seg_diag, dtype=np.int64)
        starts = {}
        at = 0
        for j, (keys, per_diag) in found.items():
            if dense_at[j - j0] < 0:
                st = np.concatenate([[0], np.cumsum(per_diag)])
                first = -int(dense_at[j - j0]) - 1
                cursor[first:first + keys.size] = at + st[:-1]
                starts[j] = (at, st)
                at += int(st[-1])
        fill_diagonals(*args, j0, counts, dense_at, dense, cursor, seg_slot, seg_val)
        for j, (keys, _) in found.items():
            blk = blocks[j]
            if dense_at[j - j0] >= 0:
                a = int(dense_at[j - j0])
                blk.dense = dense[a:a + keys.size * slots].reshape(keys.size, slots)
            else:
                a, st = starts[j]
                blk.starts = st
                blk.seg_slot, blk.seg_val = seg_slot[a:a + st[-1]], seg_val[a:a + st[-1]]
    return blocks


class LinearStage:
    """A sparse linear map between layouts, evaluated by hoisted BSGS over several ciphertexts.

    ``inputs``: list of :class:`StageInput` (layout, map) with ``map.in_shape ==
    layout.shape`` and every ``map.out_shape == out_layout.shape``.  ``bias`` (out shape) is
    added after the rescale (plus the maps' own biases).  ``materialize=False`` builds the plan
    and its counts only (no diagonal values; cannot be evaluated) for cost estimates.
    """

    def __init__(self, inputs, out_layout: Layout, bias=None, baby_steps: int = None,
                 materialize: bool = True, name: str = ""):
        if not inputs:
            raise ValueError("a linear stage needs at least one input")
        self.name = name
        self.uid = next(_uid)
        self.inputs = [StageInput(*i) if not isinstance(i, StageInput) else i for i in inputs]
        self.out_layout = out_layout
        slots = out_layout.slots
        self.slots = slots
        total_bias = np.zeros(out_layout.size) if bias is None else \
            np.asarray(bias, dtype=np.float64).reshape(out_layout.size).copy()
        out_index = _flat_index(out_layout)
        self._blocks = []   # per input k: {input ciphertext j: _Block of its diagonals}
        block_keys = []
        for k, inp in enumerate(self.inputs):
            lay, m = inp.layout, inp.map
            if lay.slots != slots:
                raise LayoutError("all layouts of a stage must have the same number of slots")
            if m.in_shape != lay.shape:
                raise LayoutError(f"input {k}: map reads {m.in_shape}, layout holds {lay.shape}")
            if m.out_shape != out_layout.shape:
                raise LayoutError(f"input {k}: map writes {m.out_shape}, output layout holds "
                                  f"{out_layout.shape}")
            total_bias += m.bias
            blocks = _diagonal_blocks(m, lay, out_layout, out_index, materialize)
            block_keys.extend((blk.out_ct, blk.d) for blk in blocks.values())
            self._blocks.append(blocks)
        # the diagonals hold everything the stage needs: drop the (large) COO maps
        self.inputs = [StageInput(inp.layout, None) for inp in self.inputs]
        if baby_steps is None:
            baby_steps, _ = best_baby_steps(block_keys, out_layout.n_ciphertexts, slots)
        if baby_steps < 1 or baby_steps & (baby_steps - 1) or baby_steps > slots:
            raise ValueError(f"baby_steps must be a power of two in 1..{slots}")
        self.baby_steps = B = int(baby_steps)
        self.materialized = materialize
        self.batch = 32  # plaintexts fetched together in evaluate (compact entries: one NTT call)
        self.bias_vectors = out_layout.pack(total_bias.reshape(out_layout.shape))
        self.has_bias = [bool(np.any(v)) for v in self.bias_vectors]
        # the plan: per (k, j): sorted baby steps; per out ct: sorted giant steps
        self._babies = {}
        giants = {}
        for k, blocks in enumerate(self._blocks):
            for j, blk in blocks.items():
                self._babies[(k, j)] = np.unique(blk.d % B).tolist()
                for i, g in set(zip(blk.out_ct.tolist(), (blk.d - blk.d % B).tolist())):
                    giants.setdefault(i, set()).add(g)
        self._giants = {i: sorted(g) for i, g in giants.items()}

    # ------------------------------------------------------------------ plan facts
    @property
    def n_diagonals(self) -> int:
        return sum(blk.n for blocks in self._blocks for blk in blocks.values())

    @property
    def rotation_steps(self) -> set:
        """Every rotation step used (for Galois key generation)."""
        steps = {b for bs in self._babies.values() for b in bs if b}
        steps |= {g for gs in self._giants.values() for g in gs if g}
        return steps

    def rotation_uses(self) -> dict:
        """{step: rotations by it in one evaluation}."""
        uses = {}
        for bs in self._babies.values():
            for b in bs:
                if b:
                    uses[b] = uses.get(b, 0) + 1
        for gs in self._giants.values():
            for g in gs:
                if g:
                    uses[g] = uses.get(g, 0) + 1
        return uses

    def costs(self) -> dict:
        """Operation counts of one evaluation."""
        baby = sum(sum(1 for b in bs if b) for bs in self._babies.values())
        giant = sum(sum(1 for g in gs if g) for gs in self._giants.values())
        n_out = self.out_layout.n_ciphertexts
        return {
            "diagonals": self.n_diagonals,
            "baby_steps": self.baby_steps,
            "baby_rotations": baby,
            "giant_rotations": giant,
            "rotations": baby + giant,
            "hoisted_decompositions": sum(1 for bs in self._babies.values() if any(bs)),
            "pt_mults": self.n_diagonals,
            "rescales": n_out,
            "bias_adds": sum(self.has_bias),
            "in_ciphertexts": [lay.n_ciphertexts for lay in (i.layout for i in self.inputs)],
            "out_ciphertexts": n_out,
        }

    def plaintext_bytes(self, level: int, n: int) -> int:
        """Bytes of all encoded diagonals at ``level`` for ring degree ``n``."""
        return self.n_diagonals * (level + 1) * n * 8

    def diagonal_bytes(self) -> int:
        """Bytes of the stored (float64) diagonals."""
        return sum(blk.nbytes for blocks in self._blocks for blk in blocks.values())

    def dense_matrix(self, k: int = 0) -> np.ndarray:
        """The slot-level matrix of input k (n_out*slots x n_in*slots), from the diagonals (tests)."""
        lay = self.inputs[k].layout
        s = self.slots
        m = np.zeros((self.out_layout.n_ciphertexts * s, lay.n_ciphertexts * s))
        idx = np.arange(s)
        for j, blk in self._blocks[k].items():
            for pos, (i, d) in enumerate(zip(blk.out_ct.tolist(), blk.d.tolist())):
                m[i * s + idx, j * s + (idx + d) % s] += blk.vector(pos)
        return m

    # ------------------------------------------------------------------ evaluation
    def _plain(self, backend, k, j, pos, giant, level, scale):
        blk = self._blocks[k][j]
        key = (self.uid, k, j, pos, level, scale_key(scale))
        return backend.encode_cached(key, lambda: np.roll(blk.vector(pos), giant), level, scale)

    def prepare(self, backend, level: int, in_scales, out_scale: float = None) -> int:
        """Encode every diagonal for a run at ``level`` with these input scales (fills the
        cache); stops when the backend says its cache has no room for another plaintext at
        ``level`` (``backend.cache_room(level)``).  Returns the number prepared."""
        room = getattr(backend, "cache_room", None)
        n = 0
        for _ in self._term_batches(backend, level, in_scales, out_scale):
            n += 1
            if room is not None and not room(level):
                break
        return n

    def _pt_scales(self, backend, level, in_scales, out_scale):
        out_scale = in_scales[0] if out_scale is None else out_scale
        q = backend.prime(level)
        return out_scale, [out_scale * q / s for s in in_scales]

    def _term_batches(self, backend, level, in_scales, out_scale, batch: int = 1):
        """Lists of (k, j, out ct, giant, baby, plaintext) for every diagonal: at most ``batch``
        per list, each list of one input ciphertext (k, j), grouped by (k, j).

        ``batch`` > 1 and a backend with ``encode_cached_many``: a list's plaintexts are
        fetched together (compact cache entries converted together), and misses the cache
        will not keep go into a buffer the next list's fetch reuses: use each list before
        drawing the next."""
        _, pt_scales = self._pt_scales(backend, level, in_scales, out_scale)
        B = self.baby_steps
        many = getattr(backend, "encode_cached_many", None) if batch > 1 else None
        for k, blocks in enumerate(self._blocks):
            for j, blk in blocks.items():
                idx = list(zip(blk.out_ct.tolist(), blk.d.tolist()))
                for p0 in range(0, len(idx), batch):
                    chunk = range(p0, min(p0 + batch, len(idx)))
                    if many is None:
                        pts = [self._plain(backend, k, j, pos, idx[pos][1] - idx[pos][1] % B, level,
                                           pt_scales[k]) for pos in chunk]
                    else:
                        items = [((self.uid, k, j, pos, level, scale_key(pt_scales[k])),
                                  (lambda pos=pos, g=idx[pos][1] - idx[pos][1] % B:
                                   np.roll(blk.vector(pos), g))) for pos in chunk]
                        pts = many(items, level, pt_scales[k], transient=True)
                    yield [(k, j, idx[pos][0], idx[pos][1] - idx[pos][1] % B, idx[pos][1] % B, pt)
                           for pos, pt in zip(chunk, pts)]

    def evaluate(self, backend, inputs, out_scale: float = None) -> list:
        """``inputs``: per stage input, its list of ciphertexts (or mirror vectors).

        Returns the output ciphertexts at one level below the lowest input, scale ``out_scale``
        (default: input 0's scale)."""
        if not self.materialized:
            raise RuntimeError("this stage was built with materialize=False (plan only)")
        if len(inputs) != len(self.inputs):
            raise ValueError(f"expected {len(self.inputs)} inputs, got {len(inputs)}")
        for k, (cts, inp) in enumerate(zip(inputs, self.inputs)):
            if len(cts) != inp.layout.n_ciphertexts:
                raise ValueError(f"input {k}: expected {inp.layout.n_ciphertexts} ciphertexts, "
                                 f"got {len(cts)}")
            scales = {backend.scale(c) for c in cts}
            if max(scales) / min(scales) - 1 > 1e-9:
                raise ValueError(f"input {k}: ciphertexts at different scales")
        level = min(backend.level(c) for cts in inputs for c in cts)
        if level < 1:
            raise ValueError("a linear stage needs one level to rescale (inputs at level 0)")
        inputs = [[backend.drop_level(c, level) for c in cts] for cts in inputs]
        in_scales = [backend.scale(cts[0]) for cts in inputs]
        out_scale, _ = self._pt_scales(backend, level, in_scales, out_scale)
        # hoisted baby steps, once per input ciphertext, shared by all output ciphertexts; only
        # one input ciphertext's rotations are alive at a time (the terms come grouped by (k, j))
        acc = {}
        rotated, current = None, None
        for terms in self._term_batches(backend, level, in_scales, out_scale, self.batch):
            if terms[0][:2] != current:
                current, rotated = terms[0][:2], None
                babies = self._babies[current]
                rotated = dict(zip(babies, backend.rotate_hoisted(inputs[current[0]][current[1]], babies)))
            backend.multiply_plain_add_many(acc, [((i, g), rotated[b], pt)
                                                  for _, _, i, g, b, pt in terms])
        del rotated
        outputs = []
        any_ct = inputs[0][0]
        for i in range(self.out_layout.n_ciphertexts):
            total = None
            for g in self._giants.get(i, []):
                a = acc[(i, g)]
                if g:
                    a = backend.rotate(a, g)
                total = a if total is None else backend.add(total, a)
            if total is None:  # an output ciphertext no weight reaches: a zero at the right scale
                zero = backend.encode_cached(("zero", level, out_scale * backend.prime(level) / in_scales[0]),
                                             lambda: np.zeros(self.slots), level,
                                             out_scale * backend.prime(level) / in_scales[0])
                total = backend.multiply_plain(any_ct, zero)
            total = backend.rescale(total)
            if self.has_bias[i]:
                total = backend.add_plain(total, self.bias_vectors[i])
            outputs.append(total)
        return outputs

    def __repr__(self):
        c = self.costs()
        return (f"LinearStage({self.name or 'unnamed'}: {len(self.inputs)} input(s) -> "
                f"{self.out_layout.shape}, {c['diagonals']} diagonals, B={c['baby_steps']}, "
                f"{c['rotations']} rotations)")
