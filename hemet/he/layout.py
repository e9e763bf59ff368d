"""Slot layouts: where value (c, h, w) of a C x H x W feature map lives in the ciphertexts.

A layout has a base plane of ``base_h x base_w`` slots and a gap ``g`` (1, 2, 4, ...).  With
multiplexing (the default), channel ``c`` has sub-position ``t = c mod g^2``,
``(i, j) = (t // g, t % g)``, and lies in plane ``p = c // g^2`` at

    slot-in-plane = (g*h + i) * base_w + (g*w + j).

Planes follow each other every ``plane_stride`` slots (default ``base_h * base_w``, rounded up
to a power of two when that does not divide the slots, so no plane straddles two ciphertexts;
an explicit stride may straddle: the linear stages handle any placement) across the
ciphertexts: ``global = p * plane_stride + slot-in-plane``, ciphertext ``global // slots``,
slot ``global % slots``.

With ``g = 1`` this is plain channel-major packing.  After a stride-2 convolution or a 2x2
pool, keeping ``base_h, base_w`` and doubling ``g`` leaves every value where the strided
kernel put it and interleaves 4x more channels into the gaps (multiplexed packing, Lee et al.
ICML 2022) instead of repacking.  ``multiplex=False`` keeps one channel per plane (sub-position
(0, 0), gaps left empty) and ``Layout.per_channel`` puts each channel in its own ciphertext: the
one-ciphertext-per-channel layout, for comparison.

Replicas.  A layout that fills at most half a ciphertext can be stored ``replicas`` times,
copy ``r`` at ``global + r * slots / replicas``: the client packs every copy, and a linear stage
reads each value from the copy nearest the output slot it feeds.  A first convolution on a
replicated 3-channel input then needs 4 channel offsets per output plane instead of 16
(hemet-fire1-4's conv1: 144 diagonals instead of 576, all at the top level), for nothing but
slots that were empty anyway.

Vectors (F,) are treated as (F, 1, 1) maps (``Layout.vector``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Layout", "LayoutError"]


class LayoutError(ValueError):
    """A layout that cannot hold its feature map, or data of the wrong shape."""


def _is_pow2(x: int) -> bool:
    return x >= 1 and not x & (x - 1)


@dataclass(frozen=True)
class Layout:
    channels: int
    height: int
    width: int
    base_h: int
    base_w: int
    gap: int
    slots: int
    plane_stride: int | None = None  # default base_h * base_w, padded to a divisor of slots
    multiplex: bool = True
    replicas: int = 1                # copies of the whole layout, every slots / replicas slots

    def __post_init__(self):
        for name in ("channels", "height", "width", "base_h", "base_w", "gap", "slots"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise LayoutError(f"{name} must be a positive int, got {v!r}")
            object.__setattr__(self, name, int(v))
        if not _is_pow2(self.gap):
            raise LayoutError(f"gap must be a power of two, got {self.gap}")
        if not _is_pow2(self.slots):
            raise LayoutError(f"slots must be a power of two, got {self.slots}")
        g = self.gap
        if g * self.height > self.base_h or g * self.width > self.base_w:
            raise LayoutError(
                f"a {self.height}x{self.width} map with gap {g} needs a base of at least "
                f"{g * self.height}x{g * self.width}, got {self.base_h}x{self.base_w}")
        plane = self.base_h * self.base_w
        if plane > self.slots:
            raise LayoutError(f"plane of {self.base_h}x{self.base_w} = {plane} slots is larger than "
                              f"the {self.slots} slots of a ciphertext")
        if self.plane_stride is None:  # keep planes inside ciphertexts: pad to a divisor of slots
            stride = plane if self.slots % plane == 0 else 1 << (plane - 1).bit_length()
        else:
            stride = int(self.plane_stride)
        if stride < plane:
            raise LayoutError(f"plane_stride {stride} is smaller than the plane ({plane} slots)")
        if stride > self.slots and stride % self.slots:
            raise LayoutError(f"plane_stride {stride} above {self.slots} slots must be a multiple of it")
        object.__setattr__(self, "plane_stride", stride)
        object.__setattr__(self, "multiplex", bool(self.multiplex))
        r = self.replicas
        if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or not _is_pow2(int(r)) \
                or r > self.slots:
            raise LayoutError(f"replicas must be a power of two up to the slots, got {r!r}")
        object.__setattr__(self, "replicas", int(r))
        if r > 1:
            last = (self.n_planes - 1) * stride + self.base_h * self.base_w
            if last > self.slots // r:
                raise LayoutError(f"{r} replicas of a layout spanning {last} slots do not fit "
                                  f"{self.slots} slots")

    # ------------------------------------------------------------------ constructors
    @classmethod
    def packed(cls, channels, height, width, slots, gap=1, base_h=None, base_w=None):
        """Channel-major packing (gap 1: contiguous planes of height x width slots)."""
        base_h = gap * height if base_h is None else base_h
        base_w = gap * width if base_w is None else base_w
        return cls(channels, height, width, base_h, base_w, gap, slots)

    @classmethod
    def per_channel(cls, channels, height, width, slots, gap=1, base_h=None, base_w=None):
        """One ciphertext per channel (each channel's plane at slot 0 of its own ciphertext)."""
        base_h = gap * height if base_h is None else base_h
        base_w = gap * width if base_w is None else base_w
        return cls(channels, height, width, base_h, base_w, gap, slots, plane_stride=slots,
                   multiplex=False)

    @classmethod
    def vector(cls, features, slots):
        """A vector (F,) in slots 0..F-1 (as an (F, 1, 1) map)."""
        return cls(features, 1, 1, 1, 1, 1, slots)

    @classmethod
    def replicated(cls, layout: "Layout") -> "Layout":
        """``layout`` (one ciphertext) with as many copies as fit: each copy takes the
        smallest power-of-two number of planes that holds the channels."""
        if layout.n_ciphertexts != 1 or layout.plane_stride > layout.slots:
            return layout
        span = layout.plane_stride * (1 << (layout.n_planes - 1).bit_length())
        if 2 * span > layout.slots:
            return layout
        return cls(layout.channels, layout.height, layout.width, layout.base_h, layout.base_w,
                   layout.gap, layout.slots, layout.plane_stride, layout.multiplex,
                   replicas=layout.slots // span)

    @property
    def replica_stride(self) -> int:
        return self.slots // self.replicas

    def with_shape(self, channels, height, width, gap=None):
        """The same base, slots and style for another map size (and gap)."""
        return Layout(channels, height, width, self.base_h, self.base_w,
                      self.gap if gap is None else gap, self.slots,
                      self.plane_stride if self.plane_stride >= self.slots else None, self.multiplex)

    # ------------------------------------------------------------------ geometry
    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)

    @property
    def size(self) -> int:
        return self.channels * self.height * self.width

    @property
    def channels_per_plane(self) -> int:
        return self.gap * self.gap if self.multiplex else 1

    @property
    def n_planes(self) -> int:
        return -(-self.channels // self.channels_per_plane)

    @property
    def n_ciphertexts(self) -> int:
        last = (self.n_planes - 1) * self.plane_stride + self.base_h * self.base_w - 1
        return last // self.slots + 1

    def global_index(self, c, h, w) -> np.ndarray:
        c, h, w = (np.asarray(a, dtype=np.int64) for a in (c, h, w))
        if np.any((c < 0) | (c >= self.channels) | (h < 0) | (h >= self.height)
                  | (w < 0) | (w >= self.width)):
            raise LayoutError(f"index out of range for a {self.shape} map")
        g = self.gap
        if self.multiplex:
            t, p = c % (g * g), c // (g * g)
            i, j = t // g, t % g
        else:
            p, i, j = c, 0, 0
        return p * self.plane_stride + (g * h + i) * self.base_w + (g * w + j)

    def slot_index(self, c, h, w):
        """(ciphertext index, slot) arrays for values (c, h, w) (broadcast, vectorized)."""
        gi = self.global_index(c, h, w)
        return gi // self.slots, gi % self.slots

    def flat_slot_index(self):
        """(ciphertext, slot) of every value in C-major (c, h, w) order."""
        c, h, w = np.meshgrid(np.arange(self.channels), np.arange(self.height),
                              np.arange(self.width), indexing="ij")
        return self.slot_index(c.ravel(), h.ravel(), w.ravel())

    # ------------------------------------------------------------------ data
    def pack(self, x) -> list[np.ndarray]:
        """A (C, H, W) array (or (F,) for a vector layout) -> list of float64 slot vectors."""
        x = np.asarray(x, dtype=np.float64)
        if x.shape != self.shape and not (x.ndim == 1 and self.height == self.width == 1
                                          and x.shape == (self.channels,)):
            raise LayoutError(f"expected an array of shape {self.shape}, got {x.shape}")
        ct, slot = self.flat_slot_index()
        out = np.zeros((self.n_ciphertexts, self.slots))
        reps = getattr(self, "replicas", 1)  # a PooledView has none
        for r in range(reps):
            out[ct, slot + r * (self.slots // reps)] = x.ravel()
        return list(out)

    def unpack(self, vectors) -> np.ndarray:
        """List of slot vectors -> (C, H, W) array (real parts)."""
        vectors = list(vectors)
        if len(vectors) != self.n_ciphertexts:
            raise LayoutError(f"expected {self.n_ciphertexts} slot vectors, got {len(vectors)}")
        for v in vectors:
            if np.shape(v) != (self.slots,):
                raise LayoutError(f"slot vectors must have shape ({self.slots},), got {np.shape(v)}")
        ct, slot = self.flat_slot_index()
        arr = np.real(np.asarray(vectors))
        return arr[ct, slot].reshape(self.shape)

    def occupancy(self) -> float:
        """Fraction of the ciphertexts' slots that hold values."""
        return self.size / (self.n_ciphertexts * self.slots)

    def describe(self) -> str:
        style = "multiplexed" if self.multiplex else "one plane per channel"
        rep = f", {self.replicas} replicas" if self.replicas > 1 else ""
        return (f"{self.channels}x{self.height}x{self.width} on base {self.base_h}x{self.base_w}, "
                f"gap {self.gap} ({style}), plane stride {self.plane_stride}{rep}, "
                f"{self.n_ciphertexts} ciphertext(s) of {self.slots} slots")


class PooledView:
    """The layout a k x k rotate-and-add pooling leaves: value (c, h, w) sits where the source
    layout keeps (c, k h, k w) (the window's corner), so nothing moves and no level is spent.

    It answers what stages and the program ask of a layout (``shape``, ``n_ciphertexts``,
    ``flat_slot_index``, ``pack``/``unpack``, ``describe``); ``gap`` is the source's times k,
    so a following multiplexed stage keeps the base plane.  Not a :class:`Layout` (its
    channel interleaving is the source's, at the source's gap)."""

    def __init__(self, src: Layout, k: int):
        if src.height % k or src.width % k:
            raise LayoutError(f"a {src.height}x{src.width} map does not pool by {k}")
        self.src, self.k = src, k
        self.channels, self.height, self.width = src.channels, src.height // k, src.width // k
        self.base_h, self.base_w, self.gap = src.base_h, src.base_w, src.gap * k
        self.slots, self.plane_stride, self.multiplex = src.slots, src.plane_stride, src.multiplex

    shape = Layout.shape
    size = Layout.size
    pack = Layout.pack
    unpack = Layout.unpack
    occupancy = Layout.occupancy
    flat_slot_index = Layout.flat_slot_index
    slot_index = Layout.slot_index

    @property
    def n_ciphertexts(self) -> int:
        return self.src.n_ciphertexts

    def global_index(self, c, h, w) -> np.ndarray:
        return self.src.global_index(c, np.asarray(h) * self.k, np.asarray(w) * self.k)

    def describe(self) -> str:
        return f"{self.channels}x{self.height}x{self.width} pooled by {self.k} in place on ({self.src.describe()})"

    def __eq__(self, other):
        return isinstance(other, PooledView) and (self.src, self.k) == (other.src, other.k)

    def __hash__(self):
        return hash((self.src, self.k))
