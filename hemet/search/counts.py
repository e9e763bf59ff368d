"""Exact HE operation counts of a compiled :class:`~hemet.he.program.Program`, per step and level.

The counts follow what ``Program.run_encrypted`` and :class:`~hemet.he.backend.HEBackend` do on
a run after ``Program.prepare``: every backend call, at the level of its input ciphertext, with
rotations by steps without a Galois key expanded into their key-plan paths and every plaintext
classified as pinned in NTT form (free on use), pinned compact (an RNS reduction and NTTs on
use, inside the products of its batch of up to 32) or not pinned (a full encode on use).  The pinning is decided by
running the real ``Program.prepare`` against :class:`CacheModel`, a stand-in backend that keeps
the same byte budget with a real :class:`~hemet.he.backend.PlaintextCache` over size-only
entries, so the counts need no keys, no encoding and no materialized diagonals
(``compile_model(..., materialize=False)`` programs work).

Operations (the names :mod:`hemet.search.calibrate` times):

``rotate``      ``HEBackend.rotate`` by a step with a key (one full key switch)
``hoist``       a ``rotate_hoisted`` call with at least one nonzero step (its decomposition)
``hoist_step``  each nonzero step of such a call (inner product, ModDown, permutation)
``hoist_copy``  each zero step of a hoisted call (a ciphertext copy)
``mul_plain``   ``multiply_plain`` (the prescaled t; a zero output)
``mul_new``     a term of ``multiply_plain_add_many`` that starts an accumulator (zeroed first)
``mul_add``     a term of ``multiply_plain_add_many`` into an existing accumulator (the
                stage's products go through it in batches of up to 32 terms of one input
                ciphertext: one fused kernel call per batch; calibrated with four terms
                per accumulator, the group the IFMA kernel reduces at once)
``add``, ``add_plain``, ``square`` (with relinearization), ``rescale``, ``drop_level``
``encode``      a plaintext encoded on use (not pinned; a batch's misses are encoded together)
``convert``     a product's extra cost when its plaintext is pinned compact (converted limb
                by limb inside the batch's fused products, ``_fused.coeff_mul_add_many``)
``convert1``    a pinned compact plaintext turned into NTT form alone (``encode_cached``:
                the prescaled coefficients, a zero output)
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from hemet.he.backend import PlaintextCache
from hemet.he.linear import scale_key
from kernels.fft import LIMIT

__all__ = ["OPS", "CacheModel", "StepCount", "ProgramCounts", "count_program", "count_run"]

OPS = ("rotate", "hoist", "hoist_step", "hoist_copy", "mul_plain", "mul_new", "mul_add", "add",
       "add_plain", "square", "rescale", "drop_level", "encode", "convert", "convert1")

BATCH = 32  # LinearStage.batch: plaintexts fetched together (compact ones converted together)


class _Size:
    __slots__ = ("nbytes",)

    def __init__(self, nbytes):
        self.nbytes = nbytes


class _Entry:
    """A cache entry of the right size: ``kind`` "ntt" or "compact"."""

    __slots__ = ("kind", "data")

    def __init__(self, kind, nbytes):
        self.kind = kind
        self.data = _Size(nbytes)


class CacheModel:
    """The parts of ``HEBackend`` that ``Program.prepare`` and the plaintext cache use, with
    the same decisions (``_encode_entry``, ``_ntt_fits``, ``cache_room``) on sizes only.

    ``primes``: q_0..q_L of the parameters (scales, hence cache keys, depend on them).
    ``encoder``: a ``ckks.Encoder`` to check, as the backend does, that a plaintext's integer
    coefficients fit int64 before keeping it compact (needs a materialized program; costs an
    FFT per plaintext); without one every plaintext is assumed to fit (true unless some
    values are huge, e.g. a prescaled t near ``max_ratio``)."""

    def __init__(self, n: int, primes, scale: float, cache_bytes: int | None = 1 << 30,
                 compact: bool = True, encoder=None):
        self.n = int(n)
        self.primes = [float(q) for q in primes]
        self.max_level = len(self.primes) - 1
        self.fresh_scale = float(scale)
        self.cache = PlaintextCache(cache_bytes)
        self.compact = compact
        self.pinning = False
        self.pin_pending = 0
        self._made = None
        self.encoder = encoder
        self._log_q = np.cumsum(np.log2(self.primes))

    def prime(self, level: int) -> float:
        return self.primes[level]

    def _ntt_fits(self, level: int) -> bool:
        mb = self.cache.max_bytes
        limb = self.n * 8
        return mb is None or self.cache.bytes + (level + 1) * limb + self.pin_pending * limb <= mb

    def _compact_at(self, level: int) -> bool:
        return self.compact and level >= 1

    def cache_room(self, level: int) -> bool:
        mb = self.cache.max_bytes
        size = self.n * 8 * (1 if self._compact_at(level) and not self._ntt_fits(level) else level + 1)
        return mb is None or self.cache.bytes + size <= mb

    def _fits_int64(self, make, level, scale) -> bool:
        if not 1.0 <= scale < 2.0 ** (self._log_q[level] - 1):
            return False
        if self.encoder is None:
            return True
        return self.encoder.scaled_coeffs_many([make()], scale)[1] < LIMIT

    def _entry(self, make, level, scale):
        if self.pinning:
            self.pin_pending = max(0, self.pin_pending - 1)
        if (self.pinning and self._compact_at(level) and not self._ntt_fits(level)
                and self._fits_int64(make, level, scale)):
            e = _Entry("compact", self.n * 8)
        else:
            e = _Entry("ntt", (level + 1) * self.n * 8)
        self._made = e
        return e

    def encode_cached(self, key, make, level, scale):
        return self.cache.get(key, lambda: self._entry(make, level, scale), pin=self.pinning)

    def lookup(self, key, level) -> str:
        """What a run's fetch of ``key`` costs: "ntt" (nothing), "compact" or "encode"."""
        self._made = None
        e = self.cache.get(key, lambda: self._entry(None, level, 1.0), pin=False)
        return "encode" if self._made is not None else e.kind


@dataclass
class StepCount:
    name: str
    kind: str
    level: int                      # level of the step's output
    ops: Counter = field(default_factory=Counter)  # (op, level) -> count

    def total(self, op: str) -> int:
        return sum(n for (o, _), n in self.ops.items() if o == op)


@dataclass
class ProgramCounts:
    steps: list
    max_level: int
    n: int

    def by_op(self) -> Counter:
        out = Counter()
        for s in self.steps:
            for (op, _), n in s.ops.items():
                out[op] += n
        return out

    def by_op_level(self) -> Counter:
        out = Counter()
        for s in self.steps:
            out.update(s.ops)
        return out

    def summary(self) -> dict:
        """Totals in the executor's terms (rotations = key-switched rotations run)."""
        t = self.by_op()
        return {"rotations": t["rotate"] + t["hoist_step"], "hoisted": t["hoist_step"],
                "keyswitches": t["rotate"] + t["hoist_step"] + t["square"],
                "pt_mults": t["mul_plain"] + t["mul_new"] + t["mul_add"], "rescales": t["rescale"],
                "squares": t["square"], "encodes": t["encode"],
                "conversions": t["convert"] + t["convert1"]}


def _rotate(ops, level, step, paths, slots):
    step %= slots
    ops[("rotate", level)] += len(paths.get(step, (step,)))


def _hoisted(ops, level, steps, paths, slots):
    steps = [s % slots for s in steps]
    hoist = [s for s in steps if s not in paths]
    hoist += sorted({paths[s][0] for s in steps if s in paths} - set(hoist))
    nz = sum(1 for s in hoist if s)
    if nz:
        ops[("hoist", level)] += 1
        ops[("hoist_step", level)] += nz
    ops[("hoist_copy", level)] += len(hoist) - nz
    for s in steps:
        if s in paths:
            ops[("rotate", level)] += len(paths[s]) - 1


def _fetch(ops, level, kinds, batch: bool = True):
    """Plaintext fetches: a batch for products (``encode_cached_many``) or, ``batch=False``,
    one ``encode_cached``."""
    compact, encode = kinds.count("compact"), kinds.count("encode")
    if encode:
        ops[("encode", level)] += encode
    if compact:
        ops[("convert" if batch else "convert1", level)] += compact


def _linear(prog, s, level, scales, cache, paths, ops, out_scale):
    """Counts of one stage; returns the scales of its output ciphertexts (the evaluator's float
    arithmetic: the first accumulator of each output sets it, before the rescale)."""
    st = s.stage
    for v in s.srcs:
        if scales[v][1] != level:
            ops[("drop_level", scales[v][1])] += prog.layouts[v].n_ciphertexts
    in_scales = [scales[v][0][0] for v in s.srcs]
    _, pt_scales = st._pt_scales(cache, level, in_scales, out_scale)
    B = st.baby_steps
    started = {}
    for k, blocks in enumerate(st._blocks):
        for j, blk in blocks.items():
            _hoisted(ops, level, st._babies[(k, j)], paths, prog.slots)
            idx = list(zip(blk.out_ct.tolist(), blk.d.tolist()))
            for p0 in range(0, len(idx), BATCH):
                chunk = range(p0, min(p0 + BATCH, len(idx)))
                _fetch(ops, level, [cache.lookup((st.uid, k, j, pos, level, scale_key(pt_scales[k])), level)
                                    for pos in chunk])
            for i, d in idx:
                acc = (i, d - d % B)
                ops[("mul_add" if acc in started else "mul_new", level)] += 1
                started.setdefault(acc, in_scales[k] * pt_scales[k])
    out = []
    q = cache.prime(level)
    for i in range(st.out_layout.n_ciphertexts):
        giants = st._giants.get(i, [])
        for g in giants:
            if g:
                _rotate(ops, level, g, paths, prog.slots)
        ops[("add", level)] += max(len(giants) - 1, 0)
        if giants:
            sc = started[(i, giants[0])]
        else:  # no weight reaches this output ciphertext: a zero product
            zs = out_scale * q / in_scales[0]
            _fetch(ops, level, [cache.lookup(("zero", level, zs), level)], batch=False)
            ops[("mul_plain", level)] += 1
            sc = in_scales[0] * zs
        ops[("rescale", level)] += 1
        if st.has_bias[i]:
            ops[("add_plain", level - 1)] += 1
        out.append(sc / q)
    return out


def count_run(prog, cache: CacheModel, paths: dict | None = None) -> list[StepCount]:
    """Counts of one ``run_encrypted`` from the top level against ``cache``'s state (which the
    run updates, as the backend's cache is).

    Scales are tracked per ciphertext as the evaluator computes them, not as
    ``Program.levels_and_scales`` predicts them: the two can differ in the last bit after a
    stage; the cache keys round them (``hemet.he.linear.scale_key``) as the backend does."""
    paths = {int(k) % prog.slots: [int(x) for x in v] for k, v in (paths or {}).items()}
    out_scale = cache.fresh_scale
    top = cache.max_level
    scales = {0: ([cache.fresh_scale] * prog.input_layout.n_ciphertexts, top)}  # value -> (per ct, level)
    rows = []
    for s in prog.steps:
        ops = Counter()
        src_sc, lv = scales[s.srcs[0]]
        n = len(src_sc)
        if s.kind == "square":
            ops[("square", lv)] += n
            ops[("rescale", lv)] += n
            scales[s.out] = ([x * x / cache.prime(lv) for x in src_sc], lv - 1)
        elif s.kind == "prescaled":
            for j, sc in enumerate(src_sc):
                _fetch(ops, lv, [cache.lookup(("prescaled", id(s), j, lv, sc), lv)], batch=False)
            ops[("square", lv)] += n
            ops[("mul_plain", lv)] += n
            ops[("rescale", lv)] += 2 * n
            ops[("add", lv - 1)] += n
            scales[s.out] = ([x * x / cache.prime(lv) for x in src_sc], lv - 1)
        elif s.kind == "sum":
            for _ in range(n):
                for step in s.steps:
                    _rotate(ops, lv, step, paths, prog.slots)
                    ops[("add", lv)] += 1
            scales[s.out] = (src_sc, lv)
        else:
            level = min(scales[v][1] for v in s.srcs)
            scales[s.out] = (_linear(prog, s, level, scales, cache, paths, ops, out_scale), level - 1)
        name = s.stage.name if s.kind == "linear" else (s.name or f"v{s.out}")
        rows.append(StepCount(name, s.kind, scales[s.out][1], ops))
    return rows


def count_program(prog, params, paths: dict | None = None, cache_bytes: int | None = 4 << 30,
                  compact: bool = True, warm: bool = True, encoder=None) -> ProgramCounts:
    """Counts of a run of ``prog`` with ``ckks.Parameters``-like ``params`` (``n``, ``q``,
    ``scale``; the input at the top level ``params.depth``), after ``Program.prepare`` into a
    cache of ``cache_bytes`` (``HEBackend(max_cache_bytes=..., compact=...)``), Galois key
    ``paths`` from ``Program.key_plan``.  ``warm``: count a second run (what every image after
    the first costs; plaintexts the first run cached unpinned are hits then).  ``encoder``: see
    :class:`CacheModel`."""
    if prog.depth > params.depth:
        raise ValueError(f"the program needs depth {prog.depth}, the parameters have {params.depth}")
    cache = CacheModel(params.n, params.q, params.scale, cache_bytes, compact, encoder)
    prog.prepare(cache)
    rows = count_run(prog, cache, paths)
    if warm:
        rows = count_run(prog, cache, paths)
    return ProgramCounts(rows, params.depth, params.n)
