"""Hybrid key switching (Han-Ki): digit decomposition, ModUp, inner product, ModDown.

A ciphertext component c at level l is split into digits of alpha primes each; every digit
is extended (ModUp) to all primes of Q_l and the special primes P, multiplied with the key's
digit, summed, and divided by P (ModDown).  ``decompose`` is the expensive shared part, so
hoisted rotations call it once and reuse the digits for every step.
"""
import math

import numpy as np

from kernels import basis, modarith


class KeySwitcher:
    def __init__(self, context):
        self.ctx = context
        self.alpha = context.params.alpha
        self._up = {}
        self._down = {}

    def digit_count(self, level: int) -> int:
        return math.ceil((level + 1) / self.alpha)

    # -- precomputation ------------------------------------------------------------------
    def _up_tables(self, level: int):
        """Per digit: own rows, target rows, their positions in the Q_l+P basis, constants."""
        if level in self._up:
            return self._up[level]
        ctx = self.ctx
        qp = ctx.qp_rows(level)
        out = []
        for j in range(self.digit_count(level)):
            own = np.arange(j * self.alpha, min((j + 1) * self.alpha, level + 1), dtype=np.int64)
            own_pos = own.copy()  # Q rows sit first in the Q_l+P basis, at their own index
            to_pos = np.array([i for i in range(len(qp)) if not (own[0] <= i <= own[-1])], dtype=np.int64)
            to_rows = qp[to_pos]
            out.append((own, own_pos, to_rows, to_pos) + _conversion_constants(ctx, own, to_rows))
        self._up[level] = out
        return out

    def _down_tables(self, level: int):
        if level in self._down:
            return self._down[level]
        ctx = self.ctx
        q_rows = ctx.q_rows(level)
        phat_inv, phat_mod = _conversion_constants(ctx, ctx.special_rows, q_rows)
        p_inv = np.array([pow(ctx.p_product % int(ctx.q_all[r]), -1, int(ctx.q_all[r]))
                          for r in q_rows], dtype=np.uint64)
        self._down[level] = (phat_inv, phat_mod, p_inv)
        return self._down[level]

    # -- the three steps -----------------------------------------------------------------
    def decompose(self, c: np.ndarray, level: int) -> np.ndarray:
        """ModUp every digit of ``c`` (NTT form over Q_l): (digits, l+1+alpha, N) NTT form."""
        ctx = self.ctx
        q_rows = ctx.q_rows(level)
        coeff = c.copy()
        ctx.intt(coeff, q_rows)
        tables = self._up_tables(level)
        m = level + 1 + len(ctx.special_rows)
        ext = np.empty((len(tables), m, ctx.n), dtype=np.uint64)
        for j, (own, own_pos, to_rows, to_pos, qhat_inv, qhat_mod) in enumerate(tables):
            ext[j, own_pos] = c[own]
            conv = np.empty((len(to_rows), ctx.n), dtype=np.uint64)
            basis.convert(coeff[own[0]:own[-1] + 1], ctx.q_all[own], qhat_inv,
                          ctx.q_all[to_rows], qhat_mod, conv)
            ctx.ntt(conv, to_rows)
            ext[j, to_pos] = conv
        return ext

    def inner_product(self, ext: np.ndarray, key_data: np.ndarray, level: int) -> np.ndarray:
        """sum_d ext[d] * key[d] over Q_l+P: (2, l+1+alpha, N)."""
        ctx = self.ctx
        out = np.empty((2, ext.shape[1], ctx.n), dtype=np.uint64)
        modarith.key_inner_product(ext, key_data, ctx.qp_rows(level), ctx.q_all, out)
        return out

    def mod_down(self, x: np.ndarray, level: int) -> np.ndarray:
        """Divide (size, l+1+alpha, N) NTT-form polynomials by P: (size, l+1, N) over Q_l."""
        ctx = self.ctx
        phat_inv, phat_mod, p_inv = self._down_tables(level)
        q_rows = ctx.q_rows(level)
        k = level + 1
        size = x.shape[0]
        alpha = len(ctx.special_rows)
        xp = np.ascontiguousarray(x[:, k:]).reshape(size * alpha, ctx.n)
        ctx.intt(xp, np.tile(ctx.special_rows, size))
        q = ctx.q_all[q_rows]
        conv = np.empty((size * k, ctx.n), dtype=np.uint64)
        for s in range(size):
            basis.convert(xp[s * alpha:(s + 1) * alpha], ctx.q_all[ctx.special_rows], phat_inv,
                          q, phat_mod, conv[s * k:(s + 1) * k])
        ctx.ntt(conv, np.tile(q_rows, size))
        out = np.empty((size, k, ctx.n), dtype=np.uint64)
        for s in range(size):
            modarith.sub_mul_scalar(x[s, :k], conv[s * k:(s + 1) * k], p_inv, q, out[s])
        return out

    def switch(self, c: np.ndarray, key_data: np.ndarray, level: int) -> np.ndarray:
        """Key-switch one component: (2, l+1, N) whose decryption under the key's target
        secret equals c times the key's source secret."""
        return self.mod_down(self.inner_product(self.decompose(c, level), key_data, level), level)


def _conversion_constants(ctx, from_rows, to_rows):
    """[(Q/q_i)^-1]_{q_i} and [Q/q_i]_{p_t} for the fast conversion from ``from_rows``."""
    qs = [int(ctx.q_all[r]) for r in from_rows]
    big = 1
    for q in qs:
        big *= q
    hat = [big // q for q in qs]
    hat_inv = np.array([pow(h % q, -1, q) for h, q in zip(hat, qs)], dtype=np.uint64)
    targets = [int(ctx.q_all[r]) for r in to_rows]
    hat_mod = np.array([[h % p for p in targets] for h in hat], dtype=np.uint64).reshape(len(qs), len(targets))
    return hat_inv, hat_mod
