"""The encrypted backend: the operations a packed program needs, on ``ckks`` ciphertexts.

:class:`HEBackend` wraps a ``ckks.Evaluator`` (plus, optionally, an encryptor and decryptor)
and owns the plaintext cache: diagonals are encoded lazily at the level and scale of use and
kept in an LRU cache bounded by ``max_cache_bytes`` (a plaintext at level l is (l+1)*N*8
bytes: 256 KiB per limb at N = 2^15).  :class:`~hemet.he.mirror.MirrorBackend` implements the
same interface on float64 vectors.
"""
from __future__ import annotations

import time
from collections import Counter, OrderedDict

import numpy as np

from ckks import Plaintext
from kernels.fft import LIMIT as ROUND_LIMIT
from kernels.ntt import fits_direct, forward_signed

from numba.typed import List

from ckks import Ciphertext

from ._fused import coeff_mul_add_many, mul_add_many

__all__ = ["HEBackend", "PlaintextCache"]


class PlaintextCache:
    """Plaintext cache bounded by a byte budget (None: unbounded; 0: off).

    Entries stored with ``pin=True`` (by ``prepare``) are never evicted, and are only stored
    while they fit the budget; other entries are LRU among themselves and never push a pinned
    one out.  A program that runs its stages in the same order each time then keeps the
    pinned prefix instead of thrashing (an LRU cache smaller than the working set of a
    repeated scan hits nothing)."""

    def __init__(self, max_bytes: int | None = 1 << 30):
        self.max_bytes = max_bytes
        self._d = OrderedDict()
        self._pinned = set()
        self.bytes = 0
        self.pinned_bytes = 0
        self.hits = self.misses = 0

    def _fits(self, size) -> bool:
        return self.max_bytes is None or self.bytes + size <= self.max_bytes

    def get(self, key, make, pin: bool = False):
        pt = self.lookup(key, pin)
        if pt is None:
            pt = make()
            self.store(key, pt, pin)
        return pt

    def lookup(self, key, pin: bool = False):
        """The entry for ``key`` (pinned now when ``pin``), or None: a miss."""
        if key in self._d:
            self._d.move_to_end(key)
            self.hits += 1
            if pin and key not in self._pinned:
                self._pinned.add(key)
                self.pinned_bytes += self._d[key].data.nbytes
            return self._d[key]
        self.misses += 1
        return None

    def keeps(self, size: int) -> bool:
        """Whether :meth:`store` keeps an unpinned entry of ``size`` bytes (evicting others)."""
        return self.max_bytes is None or self.pinned_bytes + size <= self.max_bytes

    def store(self, key, pt, pin: bool = False) -> None:
        """Keep ``pt`` (made after a miss) when the budget allows."""
        size = pt.data.nbytes
        if pin:
            if self._fits(size):
                self._d[key] = pt
                self._pinned.add(key)
                self.bytes += size
                self.pinned_bytes += size
            return
        if self.keeps(size):
            self._d[key] = pt
            self.bytes += size
            if self.max_bytes is not None and self.bytes > self.max_bytes:
                for old in [k for k in self._d if k not in self._pinned]:
                    if self.bytes <= self.max_bytes:
                        break
                    self.bytes -= self._d.pop(old).data.nbytes

    def __len__(self):
        return len(self._d)

    def clear(self):
        self._d.clear()
        self._pinned.clear()
        self.bytes = self.pinned_bytes = 0


class _Coeffs:
    """A pinned plaintext in compact form: its int64 coefficients (``data``, length N) and
    whether they all lie below ``kernels.ntt.SIGNED_DIRECT`` in magnitude (``small``,
    ``kernels.ntt.fits_direct``)."""

    __slots__ = ("data", "small")

    def __init__(self, data, small: bool):
        self.data, self.small = data, small


class _CompactPlaintext:
    """A compact cache entry fetched for a batch of products at ``level``/``scale``:
    ``multiply_plain_add_many`` converts it limb by limb inside the products."""

    __slots__ = ("coeffs", "small", "level", "scale")

    def __init__(self, coeffs, small, level, scale):
        self.coeffs, self.small, self.level, self.scale = coeffs, small, level, scale


def _at_scale(pt, scale):
    """``pt`` labelled with ``scale`` when a cache hit was encoded one ulp away (see
    ``linear.scale_key``): the integers differ by far less than the encoding's rounding, and
    every product of a stage then carries exactly the scale the stage expects."""
    if isinstance(pt, Plaintext) and pt.scale != scale:
        return Plaintext(pt.data, pt.level, float(scale), pt.context_id)
    return pt


class HEBackend:
    def __init__(self, evaluator, encryptor=None, decryptor=None, max_cache_bytes: int | None = 1 << 30,
                 compact: bool = True, rotation_paths: dict = None):
        self.ev = evaluator
        self.ctx = evaluator.ctx
        self.slots = self.ctx.slots
        self.max_level = self.ctx.max_level
        self.fresh_scale = self.ctx.params.scale
        self.encryptor = encryptor
        self.decryptor = decryptor
        self.cache = PlaintextCache(max_cache_bytes)
        self.counts = Counter()
        self.encode_seconds = 0.0
        self.pinning = False  # set by Program.prepare: encodes made meanwhile are pinned
        self.compact = compact
        self.pin_pending = 0  # plaintexts prepare will still pin after this one
        self._scratch = np.empty(0, dtype=np.uint64)  # transient misses (encode_cached_many)
        # steps without a Galois key -> kept steps summing to them (Program.key_plan)
        self.paths = {int(k) % self.slots: [int(x) for x in v] for k, v in (rotation_paths or {}).items()}

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
        step = int(step) % self.slots
        path = self.paths.get(step)
        if path is None:
            self.counts["rotate"] += 1
            return self.ev.rotate(ct, step)
        for s in path:  # a step without its own key: rotations by kept steps summing to it
            self.counts["rotate"] += 1
            ct = self.ev.rotate(ct, s)
        return ct

    def rotate_hoisted(self, ct, steps):
        steps = [int(s) % self.slots for s in steps]
        hoist = [s for s in steps if s not in self.paths]
        hoist += sorted({self.paths[s][0] for s in steps if s in self.paths} - set(hoist))
        nz = sum(1 for s in hoist if s)
        self.counts["rotate_hoisted"] += nz
        if nz:
            self.counts["decompose"] += 1
        got = dict(zip(hoist, self.ev.rotate_hoisted(ct, hoist)))
        out = []
        for s in steps:
            if s in self.paths:
                r = got[self.paths[s][0]]
                for x in self.paths[s][1:]:
                    self.counts["rotate"] += 1
                    r = self.ev.rotate(r, x)
                out.append(r)
            else:
                out.append(got[s])
        return out

    def encode_cached(self, key, make, level, scale):
        """The plaintext of ``make()`` at ``level``/``scale``, through the cache.  Entries
        pinned by ``prepare`` are kept compact when ``compact`` (the default): the int64
        coefficient vector (N * 8 bytes whatever the level, vs (level+1) * N * 8 in NTT form),
        turned into a plaintext on use by an RNS reduction and NTTs (no FFT, ~half the cost
        of an encode)."""
        entry = self.cache.get(key, lambda: self._encode_entry(make, level, scale),
                               pin=self.pinning)
        if isinstance(entry, _Coeffs):
            t0 = time.perf_counter()
            pt = self._from_coeffs(entry.data, level, scale)
            self.encode_seconds += time.perf_counter() - t0
            self.counts["encode_compact"] += 1
            return pt
        return _at_scale(entry, scale)

    def encode_cached_many(self, items, level, scale, transient: bool = False) -> list:
        """``encode_cached`` for several ``(key, make)`` at one level and scale, for
        ``multiply_plain_add_many``: misses are encoded together (``Encoder.encode_many``: one
        FFT, reduction and NTT call over all of them, both threads busy); compact entries come
        back as they are, and the products convert them limb by limb in cache
        (``_fused.coeff_mul_add_many``) instead of writing NTT-form plaintexts out to memory
        and reading them back.

        ``transient``: misses the cache will not keep are written into one buffer this backend
        reuses, so they are valid only until the next transient call (a stage multiplies each
        batch before fetching the next); misses a bounded cache keeps are encoded there too and
        copied into arrays of their own.  A fresh batch's pages cost as much as its NTTs when
        the process holds GiBs: 268 MB per batch of 32 at N = 2^16 and 17 limbs."""
        if self.pinning:  # prepare: each entry decides its own form (NTT or compact)
            entries = [self.cache.get(key, (lambda m=make: self._encode_entry(m, level, scale)),
                                      pin=True) for key, make in items]
        else:
            entries = [self.cache.lookup(key) for key, _ in items]
            miss = [i for i, e in enumerate(entries) if e is None]
            if miss:
                t0 = time.perf_counter()
                size = (level + 1) * self.ctx.n
                keep = self.cache.keeps(size * 8)  # all or none: one size, one budget check
                # a bounded cache may later evict some of a batch: each kept plaintext then
                # owns its array, or a survivor would hold the whole batch beyond the budget
                own = keep and self.cache.max_bytes is not None and len(miss) > 1
                out = None
                # kept copies are made at once, so their batch can go to the reused buffer too:
                # a fresh 88 MB batch (32 at N = 2^15, 11 limbs) is memory first touched there,
                # where the copies reuse freed heap
                if transient and (own or not keep):
                    if self._scratch.size < len(miss) * size:
                        self._scratch = np.empty(len(miss) * size, dtype=np.uint64)
                    out = self._scratch[: len(miss) * size]
                pts = self.ctx.encoder.encode_many([items[i][1]() for i in miss], level, scale, out=out)
                self.counts["encode"] += len(miss)
                for i, pt in zip(miss, pts):
                    if own:
                        pt = Plaintext(pt.data.copy(), pt.level, pt.scale, pt.context_id)
                    if keep:
                        self.cache.store(items[i][0], pt)
                    entries[i] = pt
                self.encode_seconds += time.perf_counter() - t0
        out = []
        for e in entries:
            if isinstance(e, _Coeffs):  # converted inside the products that use it
                self.counts["encode_compact"] += 1
                out.append(_CompactPlaintext(e.data, e.small, level, float(scale)))
            else:
                out.append(_at_scale(e, scale))
        return out

    def _encode_entry(self, make, level, scale):
        enc = self.ctx.encoder
        t0 = time.perf_counter()
        try:
            if self.pinning:
                self.pin_pending = max(0, self.pin_pending - 1)
            if (self.pinning and self._compact_at(level)
                    and 1.0 <= scale < 2.0 ** (self.ctx.log_q(level) - 1)  # else encode raises
                    and not self._ntt_fits(level)):
                c, top = enc.scaled_coeffs_many([make()], scale)
                if top < ROUND_LIMIT:
                    return _Coeffs(c[0], fits_direct(c[0]))
            self.counts["encode"] += 1
            return enc.encode(make(), level=level, scale=scale)
        finally:
            self.encode_seconds += time.perf_counter() - t0

    def _ntt_fits(self, level: int) -> bool:
        """Pin this one in NTT form: the budget still holds it plus the ``pin_pending``
        plaintexts ``prepare`` has announced, compact (so deep levels go in NTT form first)."""
        mb = self.cache.max_bytes
        limb = self.ctx.n * 8
        return mb is None or self.cache.bytes + (level + 1) * limb + self.pin_pending * limb <= mb

    def _compact_at(self, level: int) -> bool:
        return self.compact and level >= 1

    def _from_coeffs(self, coeffs, level, scale):
        ctx = self.ctx
        rows = ctx.q_rows(level)
        data = np.empty((level + 1, ctx.n), dtype=np.uint64)
        forward_signed(coeffs[None], rows, ctx.tables, data)
        return Plaintext(data, level, float(scale), ctx.fingerprint)

    def cache_room(self, level: int) -> bool:
        """Whether one more pinned plaintext at ``level`` fits the cache budget."""
        mb = self.cache.max_bytes
        size = self.ctx.n * 8 * (1 if self._compact_at(level) and not self._ntt_fits(level) else level + 1)
        return mb is None or self.cache.bytes + size <= mb

    def _ntt_form(self, pt):
        if isinstance(pt, _CompactPlaintext):
            return self._from_coeffs(pt.coeffs, pt.level, pt.scale)
        return pt

    def multiply_plain(self, ct, pt):
        self.counts["multiply_plain"] += 1
        return self.ev.multiply(ct, self._ntt_form(pt))

    def multiply_plain_add(self, acc, ct, pt):
        """``acc + ct * pt``, in place into ``acc`` (a ciphertext this caller owns, e.g. from
        ``multiply_plain``); ``acc=None``: ``ct * pt``.  One fused kernel (no temporary)."""
        if acc is None:
            return self.multiply_plain(ct, pt)
        if not (acc.level == ct.level == pt.level) or acc.size != 2 or ct.size != 2:
            return self.add(acc, self.multiply_plain(ct, self._ntt_form(pt)))
        self.multiply_plain_add_many({0: acc}, [(0, ct, pt)])
        return acc

    def multiply_plain_add_many(self, acc: dict, terms) -> None:
        """``acc[key] += ct * pt`` for every ``(key, ct, pt)`` (missing keys start at zero),
        in place, in one fused kernel call for the batch."""
        terms = list(terms)
        if not terms:
            return
        ct0 = terms[0][1]
        level = ct0.level
        if any(ct.level != level or pt.level != level or ct.size != 2 for _, ct, pt in terms):
            for key, ct, pt in terms:
                acc[key] = self.multiply_plain_add(acc.get(key), ct, pt)
            return
        cts, pts, accs, keys = List(), List(), List(), []
        c_cts, coeffs, c_accs, c_keys, small = List(), List(), List(), [], []
        for key, ct, pt in terms:
            a = acc.get(key)
            if a is None:
                a = acc[key] = Ciphertext(np.zeros_like(ct.data), level,
                                          self.ev._checked_scale(ct.scale * pt.scale, level),
                                          ct.context_id)
            if isinstance(pt, _CompactPlaintext):
                c_cts.append(ct.data)
                coeffs.append(pt.coeffs)
                small.append(pt.small)
                c_accs.append(a.data)
                c_keys.append(key)
            else:
                cts.append(ct.data)
                pts.append(pt.data)
                accs.append(a.data)
                keys.append(key)
        q = self.ctx.q_all[: level + 1]
        if len(cts):
            mul_add_many(cts, pts, accs, q, keys)
        if len(c_cts):
            coeff_mul_add_many(c_cts, coeffs, c_accs, q, self.ctx.q_rows(level), self.ctx.tables,
                               c_keys, small=small)
        self.counts["multiply_plain"] += len(terms)
        self.counts["add"] += len(terms)

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
