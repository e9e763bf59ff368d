"""Exact affine maps y = M x + bias between flattened tensors, as sparse triples.

``M`` is stored as COO triples (row, col, value) with rows indexing the flattened output and
cols the flattened input, both in C-major (c, h, w) order (vectors are (F, 1, 1)).  The
constructors mirror ``hemet.layers`` / ``hemet.reference`` (convolution is cross-correlation,
weights (Cout, Cin/groups, k, k), zero padding).  ``compose`` multiplies two maps exactly (a
sparse product), so pool -> conv, normalize -> conv, conv -> batch norm and the like become one
map, and ``vstack`` puts maps with one input side by side (channel concatenation).
"""
from __future__ import annotations

import numpy as np

__all__ = ["AffineMap", "conv2d", "avg_pool", "global_avg_pool", "dense", "channel_affine",
           "identity", "as_map_shape"]


def as_map_shape(shape) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) == 1:
        return (shape[0], 1, 1)
    if len(shape) != 3:
        raise ValueError(f"expected a (C, H, W) or (F,) shape, got {shape}")
    return shape


def _coalesce(rows, cols, vals, n_cols):
    """Sum duplicate (row, col) entries and drop exact zeros; sorted by (row, col)."""
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    vals = np.asarray(vals, dtype=np.float64)
    if rows.size == 0:
        return rows, cols, vals
    key = rows * n_cols + cols
    uniq, inv = np.unique(key, return_inverse=True)
    v = np.bincount(inv.ravel(), weights=vals, minlength=uniq.size)
    keep = v != 0
    uniq, v = uniq[keep], v[keep]
    return uniq // n_cols, uniq % n_cols, v


class AffineMap:
    """y = M x + bias with M (out_size x in_size) as sparse triples."""

    def __init__(self, in_shape, out_shape, rows, cols, vals, bias=None, coalesce=True,
                 diagonal=None):
        self.in_shape = as_map_shape(in_shape)
        self.out_shape = as_map_shape(out_shape)
        self.out_dims = tuple(int(d) for d in np.atleast_1d(out_shape))  # (F,) stays (F,)
        self.in_size = int(np.prod(self.in_shape))
        self.out_size = int(np.prod(self.out_shape))
        if coalesce:
            rows, cols, vals = _coalesce(rows, cols, vals, self.in_size)
        self.rows = np.asarray(rows, dtype=np.int64)
        self.cols = np.asarray(cols, dtype=np.int64)
        self.vals = np.asarray(vals, dtype=np.float64)
        if not (self.rows.shape == self.cols.shape == self.vals.shape) or self.rows.ndim != 1:
            raise ValueError("rows, cols and vals must be 1-D arrays of one length")
        if self.rows.size and (self.rows.min() < 0 or self.rows.max() >= self.out_size
                               or self.cols.min() < 0 or self.cols.max() >= self.in_size):
            raise ValueError("triple index out of range")
        self.bias = (np.zeros(self.out_size) if bias is None
                     else np.asarray(bias, dtype=np.float64).reshape(self.out_size).copy())
        # diagonal: a vector d with M = diag(d) (identity, batch norm, normalize, poly coefficients)
        self.diagonal = None if diagonal is None else np.asarray(diagonal, dtype=np.float64)

    @property
    def nnz(self) -> int:
        return self.rows.size

    def dense(self) -> np.ndarray:
        m = np.zeros((self.out_size, self.in_size))
        np.add.at(m, (self.rows, self.cols), self.vals)
        return m

    def linear_part(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64).reshape(self.in_size)
        if not x.any():  # a zero bias pushed through a map: skip a pass over its entries
            return np.zeros(self.out_size)
        return np.bincount(self.rows, weights=self.vals * x[self.cols], minlength=self.out_size)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Apply to one (C, H, W) / (F,) array; returns the out shape (vectors as (F,))."""
        y = self.linear_part(x) + self.bias
        return y.reshape(self.out_dims)

    def is_identity(self) -> bool:
        if self.diagonal is not None:
            return bool(np.all(self.diagonal == 1.0)) and not np.any(self.bias)
        return (self.in_shape == self.out_shape and self.nnz == self.in_size
                and np.array_equal(self.rows, np.arange(self.in_size))
                and np.array_equal(self.cols, self.rows) and np.all(self.vals == 1.0)
                and not np.any(self.bias))

    # ---------------------------------------------------------------- algebra
    def compose(self, first: "AffineMap") -> "AffineMap":
        """self o first: x -> self(first(x)) (exact sparse product; duplicates are not merged:
        the stages sum them, ``coalesced()`` merges them)."""
        if first.out_size != self.in_size:
            raise ValueError(f"cannot compose: {first.out_shape} -> {self.in_shape}")
        bias = self.linear_part(first.bias) + self.bias
        if self.diagonal is not None:  # row scaling of first
            rows, cols, vals = first.rows, first.cols, first.vals * self.diagonal[first.rows]
        elif first.diagonal is not None:  # column scaling of self
            rows, cols, vals = self.rows, self.cols, self.vals * first.diagonal[self.cols]
        else:
            order = np.argsort(first.rows, kind="stable")
            fr, fc, fv = first.rows[order], first.cols[order], first.vals[order]
            start = np.searchsorted(fr, self.cols, side="left")
            counts = np.searchsorted(fr, self.cols, side="right") - start
            rep = np.repeat(np.arange(self.nnz), counts)
            idx = np.arange(rep.size) - np.repeat(np.cumsum(counts) - counts - start, counts)
            rows, cols, vals = self.rows[rep], fc[idx], self.vals[rep] * fv[idx]
        diag = (self.diagonal * first.diagonal
                if self.diagonal is not None and first.diagonal is not None else None)
        return AffineMap(first.in_shape, self.out_dims, rows, cols, vals, bias, coalesce=False,
                         diagonal=diag)

    def coalesced(self) -> "AffineMap":
        return AffineMap(self.in_shape, self.out_dims, self.rows, self.cols, self.vals, self.bias,
                         diagonal=self.diagonal)

    def scale_rows(self, per_out_channel) -> "AffineMap":
        """diag(s) o self, s per output channel (bias scaled too)."""
        s = np.repeat(np.asarray(per_out_channel, dtype=np.float64), self.out_size // self.out_shape[0])
        return AffineMap(self.in_shape, self.out_dims, self.rows, self.cols, self.vals * s[self.rows],
                         self.bias * s, coalesce=False,
                         diagonal=None if self.diagonal is None else self.diagonal * s)

    def linear_only(self) -> "AffineMap":
        return AffineMap(self.in_shape, self.out_dims, self.rows, self.cols, self.vals, None,
                         coalesce=False, diagonal=self.diagonal)

    def __add__(self, other: "AffineMap") -> "AffineMap":
        if self.in_shape != other.in_shape or self.out_shape != other.out_shape:
            raise ValueError("cannot add maps of different shapes")
        return AffineMap(self.in_shape, self.out_dims, np.concatenate([self.rows, other.rows]),
                         np.concatenate([self.cols, other.cols]),
                         np.concatenate([self.vals, other.vals]), self.bias + other.bias,
                         coalesce=False)

    @staticmethod
    def vstack(maps: list["AffineMap"]) -> "AffineMap":
        """Channel concatenation of the outputs of maps sharing one input."""
        h, w = maps[0].out_shape[1:]
        if any(m.out_shape[1:] != (h, w) or m.in_shape != maps[0].in_shape for m in maps):
            raise ValueError("vstack needs one input shape and equal output H, W")
        off = np.cumsum([0] + [m.out_size for m in maps])
        c = sum(m.out_shape[0] for m in maps)
        return AffineMap(maps[0].in_shape, (c, h, w),
                         np.concatenate([m.rows + o for m, o in zip(maps, off)]),
                         np.concatenate([m.cols for m in maps]),
                         np.concatenate([m.vals for m in maps]),
                         np.concatenate([m.bias for m in maps]), coalesce=False)

    @staticmethod
    def zeros(in_shape, out_shape) -> "AffineMap":
        e = np.zeros(0, dtype=np.int64)
        return AffineMap(in_shape, out_shape, e, e, e.astype(np.float64))


# -------------------------------------------------------------------- constructors
def identity(shape) -> AffineMap:
    shape = as_map_shape(shape)
    n = int(np.prod(shape))
    i = np.arange(n)
    return AffineMap(shape, shape, i, i, np.ones(n), coalesce=False, diagonal=np.ones(n))


def channel_affine(shape, scale, shift=None) -> AffineMap:
    """x[c] * scale[c] + shift[c] (batch norm, normalize, poly's linear part)."""
    shape = as_map_shape(shape)
    c = shape[0]
    scale = np.broadcast_to(np.asarray(scale, dtype=np.float64), (c,))
    per = shape[1] * shape[2]
    i = np.arange(c * per)
    bias = None if shift is None else np.repeat(np.broadcast_to(np.asarray(shift, np.float64), (c,)), per)
    d = np.repeat(scale, per)
    return AffineMap(shape, shape, i, i, d, bias, coalesce=False, diagonal=d)


def conv2d(in_shape, weight, bias=None, stride=1, padding=None, groups=1) -> AffineMap:
    """Zero-padded cross-correlation, weight (Cout, Cin/groups, k, k) (``hemet.layers.Conv2d``)."""
    cin, h, w = as_map_shape(in_shape)
    weight = np.asarray(weight, dtype=np.float64)
    cout, cg, k, k2 = weight.shape
    if k != k2:
        raise ValueError("square kernels only")
    padding = k // 2 if padding is None or padding == -1 else int(padding)
    if cin % groups or cout % groups or cin // groups != cg:
        raise ValueError(f"weight {weight.shape} does not fit {cin} input channels in {groups} groups")
    ho, wo = (h + 2 * padding - k) // stride + 1, (w + 2 * padding - k) // stride + 1
    og = cout // groups
    o = np.arange(cout)[:, None, None, None, None, None]
    ci_local = np.arange(cg)[None, :, None, None, None, None]
    ki = np.arange(k)[None, None, :, None, None, None]
    kj = np.arange(k)[None, None, None, :, None, None]
    yo = np.arange(ho)[None, None, None, None, :, None]
    xo = np.arange(wo)[None, None, None, None, None, :]
    full = (cout, cg, k, k, ho, wo)
    hi = yo * stride + ki - padding
    wi = xo * stride + kj - padding
    ci = (o // og) * cg + ci_local
    valid = np.broadcast_to((hi >= 0) & (hi < h) & (wi >= 0) & (wi < w), full)
    rows = np.broadcast_to((o * ho + yo) * wo + xo, full)[valid]
    cols = np.broadcast_to((ci * h + hi) * w + wi, full)[valid]
    vals = np.broadcast_to(weight[:, :, :, :, None, None], full)[valid]
    b = None if bias is None else np.repeat(np.asarray(bias, dtype=np.float64), ho * wo)
    return AffineMap((cin, h, w), (cout, ho, wo), rows, cols, vals, b, coalesce=False)  # no duplicates


def avg_pool(in_shape, k=2) -> AffineMap:
    """k x k average pooling with stride k."""
    c, h, w = as_map_shape(in_shape)
    if h % k or w % k:
        raise ValueError(f"avg pool {k}x{k} needs H, W divisible by {k}")
    ho, wo = h // k, w // k
    cc, y, x, i, j = np.meshgrid(np.arange(c), np.arange(ho), np.arange(wo), np.arange(k),
                                 np.arange(k), indexing="ij")
    rows = ((cc * ho + y) * wo + x).ravel()
    cols = ((cc * h + y * k + i) * w + x * k + j).ravel()
    return AffineMap((c, h, w), (c, ho, wo), rows, cols, np.full(rows.size, 1.0 / (k * k)),
                     coalesce=False)


def global_avg_pool(in_shape) -> AffineMap:
    c, h, w = as_map_shape(in_shape)
    cols = np.arange(c * h * w)
    return AffineMap((c, h, w), (c,), cols // (h * w), cols, np.full(cols.size, 1.0 / (h * w)),
                     coalesce=False)


def dense(in_shape, weight, bias=None) -> AffineMap:
    """Fully connected layer on the C-major flattening of ``in_shape`` (or on a vector)."""
    in_shape = as_map_shape(in_shape)
    weight = np.asarray(weight, dtype=np.float64)
    out_f, in_f = weight.shape
    if in_f != int(np.prod(in_shape)):
        raise ValueError(f"weight {weight.shape} does not fit input {in_shape}")
    r, c = np.nonzero(weight)
    return AffineMap(in_shape, (out_f,), r, c, weight[r, c], bias, coalesce=False)
