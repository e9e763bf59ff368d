"""The encrypted backend: the operations a packed program needs, on ``ckks`` ciphertexts.

:class:`HEBackend` wraps a ``ckks.Evaluator`` (plus, optionally, an encryptor and decryptor)
and owns the plaintext cache: diagonals are encoded lazily at the level and scale of use and
kept in an LRU cache bounded by ``max_cache_bytes`` (a plaintext at level l is (l+1)*N*8
bytes: 256 KiB per limb at N = 2^15).  :class:`~hemet.he.mirror.MirrorBackend` implements the
same interface on float64 vectors.
"""
from __future__ import annotations

from collections import Counter, OrderedDict

import numpy as np

__all__ = ["HEBackend", "PlaintextCache"]


class PlaintextCache:
    """LRU cache of encoded plaintexts bounded by a byte budget (None: unbounded; 0: off)."""

    def __init__(self, max_bytes: int | None = 1 << 30):
        self.max_bytes = max_bytes
        self._d = OrderedDict()
        self.bytes = 0
        self.hits = self.misses = 0

    def get(self, key, make):
        if key in self._d:
            self._d.move_to_end(key)
            self.hits += 1
            return self._d[key]
        self.misses += 1
        pt = make()
        size = pt.data.nbytes
        if self.max_bytes is None or size <= self.max_bytes:
            self._d[key] = pt
            self.bytes += size
            while self.max_bytes is not None and self.bytes > self.max_bytes:
                _, old = self._d.popitem(last=False)
                self.bytes -= old.data.nbytes
        return pt

    def clear(self):
        self._d.clear()
        self.bytes = 0


class HEBackend:
    def __init__(self, evaluator, encryptor=None, decryptor=None, max_cache_bytes: int | None = 1 << 30):
        self.ev = evaluator
        self.ctx = evaluator.ctx
        self.slots = self.ctx.slots
        self.max_level = self.ctx.max_level
        self.fresh_scale = self.ctx.params.scale
        self.encryptor = encryptor
        self.decryptor = decryptor
        self.cache = PlaintextCache(max_cache_bytes)
        self.counts = Counter()

    # ------------------------------------------------------------------ data
    def encrypt(self, vec, level: int = None):
        if self.encryptor is None:
            raise RuntimeError("no encryptor given to the HEBackend")
        self.counts["encrypt"] += 1
        ct = self.encryptor.encrypt(np.asarray(vec, dtype=np.float64))
        return ct if level is None else self.ev.drop_level(ct, level)

    def decrypt(self, ct) -> np.ndarray:
        if self.decryptor is None:
            raise RuntimeError("no decryptor given to the HEBackend")
        return np.real(self.decryptor.decrypt(ct))

    def prime(self, level: int) -> float:
        return float(self.ctx.primes[level])

    def level(self, ct) -> int:
        return ct.level

    def scale(self, ct) -> float:
        return ct.scale

    # ------------------------------------------------------------------ operations
    def drop_level(self, ct, level):
        return self.ev.drop_level(ct, level)

    def rotate(self, ct, step):
        self.counts["rotate"] += 1
        return self.ev.rotate(ct, step)

    def rotate_hoisted(self, ct, steps):
        steps = list(steps)
        nz = sum(1 for s in steps if int(s) % self.slots)
        self.counts["rotate_hoisted"] += nz
        if nz:
            self.counts["decompose"] += 1
        return self.ev.rotate_hoisted(ct, steps)

    def encode_cached(self, key, make, level, scale):
        enc = self.ctx.encoder
        return self.cache.get(key, lambda: enc.encode(make(), level=level, scale=scale))

    def multiply_plain(self, ct, pt):
        self.counts["multiply_plain"] += 1
        return self.ev.multiply(ct, pt)

    def add(self, a, b):
        self.counts["add"] += 1
        return self.ev.add(a, b)

    def add_plain(self, ct, vec):
        self.counts["add_plain"] += 1
        return self.ev.add(ct, np.asarray(vec, dtype=np.float64))

    def square(self, ct):
        self.counts["square"] += 1
        return self.ev.square(ct)

    def rescale(self, ct):
        self.counts["rescale"] += 1
        return self.ev.rescale(ct)
