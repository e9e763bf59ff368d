"""The float64 mirror: runs the same packed program on cleartext slot vectors.

A :class:`MirrorBackend` implements the backend interface of :class:`~hemet.he.backend.HEBackend`
with a :class:`MirrorCt` (a float64 slot vector plus the level and scale the ciphertext would
have): rotation is ``np.roll(v, -step)``, a plaintext product is elementwise, squaring is
elementwise, rescale only moves the bookkeeping.  The same layouts, diagonals and BSGS plans
run, so a layout or plan bug shows in the clear, exactly (no CKKS noise), and level/scale
errors show too.  Operation counts are kept in ``counts``.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

__all__ = ["MirrorBackend", "MirrorCt"]


@dataclass
class MirrorCt:
    vec: np.ndarray
    level: int
    scale: float


class MirrorBackend:
    """``slots``; ``primes`` (q_0..q_L, e.g. ``context.primes``) for level/scale bookkeeping
    (default: L = ``depth`` primes equal to 2^40); ``scale``: the fresh encryption scale."""

    def __init__(self, slots: int, primes=None, depth: int = 30, scale: float = 2.0 ** 40):
        self.slots = int(slots)
        self.primes = list(primes) if primes is not None else [2.0 ** 50] + [2.0 ** 40] * depth
        self.max_level = len(self.primes) - 1 if primes is None else None
        self.fresh_scale = float(scale)
        self.counts = Counter()

    @classmethod
    def like(cls, context):
        """A mirror of a ``ckks.Context`` (same slots, primes and scale)."""
        m = cls(context.slots, context.primes[: context.max_level + 1], scale=context.params.scale)
        m.max_level = context.max_level
        return m

    # ------------------------------------------------------------------ data
    def encrypt(self, vec, level: int = None) -> MirrorCt:
        v = np.zeros(self.slots)
        vec = np.asarray(vec, dtype=np.float64)
        v[: vec.size] = vec
        level = self.max_level if level is None else level
        self.counts["encrypt"] += 1
        return MirrorCt(v, level, self.fresh_scale)

    def decrypt(self, ct: MirrorCt) -> np.ndarray:
        return ct.vec.copy()

    def prime(self, level: int) -> float:
        return float(self.primes[level])

    def level(self, ct) -> int:
        return ct.level

    def scale(self, ct) -> float:
        return ct.scale

    # ------------------------------------------------------------------ operations
    def drop_level(self, ct, level):
        if level > ct.level:
            raise ValueError(f"cannot raise level {ct.level} to {level}")
        return ct if level == ct.level else MirrorCt(ct.vec, level, ct.scale)

    def rotate(self, ct, step):
        self.counts["rotate"] += 1
        return MirrorCt(np.roll(ct.vec, -int(step)), ct.level, ct.scale)

    def rotate_hoisted(self, ct, steps):
        steps = list(steps)
        nz = sum(1 for s in steps if int(s) % self.slots)
        self.counts["rotate_hoisted"] += nz
        if nz:
            self.counts["decompose"] += 1
        return [MirrorCt(np.roll(ct.vec, -int(s)), ct.level, ct.scale) for s in steps]

    def encode_cached(self, key, make, level, scale):
        return (np.asarray(make(), dtype=np.float64), level, float(scale))

    def multiply_plain(self, ct, pt):
        vec, level, scale = pt
        if level != ct.level:
            raise ValueError(f"plaintext at level {level}, ciphertext at {ct.level}")
        self.counts["multiply_plain"] += 1
        return MirrorCt(ct.vec * vec, ct.level, ct.scale * scale)

    def multiply_plain_add(self, acc, ct, pt):
        """``acc + ct * pt`` (the HE backend does it in place)."""
        prod = self.multiply_plain(ct, pt)
        return prod if acc is None else self.add(acc, prod)

    def multiply_plain_add_many(self, acc: dict, terms) -> None:
        """``acc[key] = acc[key] + ct * pt`` for every ``(key, ct, pt)``."""
        for key, ct, pt in terms:
            acc[key] = self.multiply_plain_add(acc.get(key), ct, pt)

    def _same(self, a, b, what):
        if a.level != b.level:
            raise ValueError(f"{what}: levels {a.level} and {b.level} differ")
        if abs(a.scale / b.scale - 1) > 2.0 ** -40:
            raise ValueError(f"{what}: scales 2^{np.log2(a.scale):.3f} and 2^{np.log2(b.scale):.3f} differ")

    def add(self, a, b):
        self._same(a, b, "add")
        self.counts["add"] += 1
        return MirrorCt(a.vec + b.vec, a.level, a.scale)

    def add_plain(self, ct, vec):
        self.counts["add_plain"] += 1
        return MirrorCt(ct.vec + np.asarray(vec, dtype=np.float64), ct.level, ct.scale)

    def square(self, ct):
        self.counts["square"] += 1
        return MirrorCt(ct.vec * ct.vec, ct.level, ct.scale * ct.scale)

    def rescale(self, ct):
        if ct.level < 1:
            raise ValueError("no level left to rescale")
        self.counts["rescale"] += 1
        return MirrorCt(ct.vec, ct.level - 1, ct.scale / self.prime(ct.level))
