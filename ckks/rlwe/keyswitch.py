"""Hybrid key switching (Han-Ki): digit decomposition, ModUp, inner product, ModDown.

A ciphertext component c at level l is split into digits of alpha primes each; every digit
is extended (ModUp) to all primes of Q_l and the special primes P, multiplied with the key's
digit, summed, and divided by P (ModDown).  ``decompose`` is the expensive shared part, so
hoisted rotations call it once and reuse the digits for every step.
"""
import math
import threading

import numba
import numpy as np

from kernels import basis, cpu, modarith
from kernels import ifma_arith as fx


_THREADS = numba.config.NUMBA_NUM_THREADS  # per-thread scratch rows of the fused kernels
NT_STORES = True              # hoisted rotations: non-temporal stores for large results
NT_MIN_BYTES = 16 << 20       # ... when all results together exceed this (about the L3 share)


def _aligned_empty(shape):
    """np.empty(shape, uint64) whose data starts on a 64-byte boundary (cache line)."""
    size = int(np.prod(shape))
    buf = np.empty(size + 8, dtype=np.uint64)
    off = (-buf.ctypes.data % 64) // 8
    return buf[off:off + size].reshape(shape)


class KeySwitcher:
    """Key switching for one context; every table is cached per level.

    The work runs in a handful of fused kernels (``kernels.basis``), each one parallel region
    over whole limbs: ``decompose`` is two regions (inverse NTT + scale of the digits' rows,
    then conversion + forward NTT of every (digit, target row)), ``switch_ext`` (inner product
    and ModDown) two more.  ``ifma`` picks the AVX-512 IFMA kernels (default: where the CPU
    has them and HEMET_PORTABLE is not set) or the portable ones.
    """

    def __init__(self, context, ifma: bool = None):
        self.ctx = context
        self.alpha = context.params.alpha
        if ifma is None:
            ifma = cpu.USE_IFMA
        if ifma and not cpu.HAS_IFMA:
            raise RuntimeError("this CPU has no AVX-512 IFMA")
        self.ifma = bool(ifma)
        self._up = {}
        self._down = {}
        self._up_plans = {}
        self._down_plans = {}
        self._perms = {}
        self._local = threading.local()
        t = context.tables
        q = context.q_all
        if self.ifma:
            self._qneg, self._r52, self._r52_c = modarith.ifma_prime_constants(q)
            self._fwd = (t.w_fwd, t.ws_fwd)
            self._inv = (t.w_inv, t.ws_inv)
        else:
            self._fwd = (t.w_fwd, t.wf_fwd)
            self._inv = (t.w_inv, t.wf_inv)

    def digit_count(self, level: int) -> int:
        return math.ceil((level + 1) / self.alpha)

    # -- precomputation ------------------------------------------------------------------
    def _companion(self, w, q):
        """Shoup companions (IFMA) or float quotients w/q (portable) of constants w < q."""
        if self.ifma:
            return fx.shoup(w, q)
        return np.asarray(w, dtype=np.uint64).astype(np.float64) / np.asarray(q, dtype=np.uint64).astype(np.float64)

    def _folded_inverse(self, rows, factors):
        """Last-stage constants of inverse NTTs whose output is scaled by ``factors``."""
        t = self.ctx.tables
        q = t.q[rows]
        f = [int(x) for x in factors]
        ni = np.array([int(a) * b % int(p) for a, b, p in zip(t.n_inv[rows], f, q)], dtype=np.uint64)
        w1n = np.array([int(a) * b % int(p) for a, b, p in zip(t.w1_n_inv[rows], f, q)], dtype=np.uint64)
        return ni, self._companion(ni, q), w1n, self._companion(w1n, q)

    def _up_plan(self, level: int):
        if level in self._up_plans:
            return self._up_plans[level]
        ctx = self.ctx
        k = level + 1
        qp = ctx.qp_rows(level)
        m = len(qp)
        digits = self.digit_count(level)
        dig_lo = np.array([j * self.alpha for j in range(digits)], dtype=np.int64)
        dig_hi = np.minimum(dig_lo + self.alpha, k).astype(np.int64)
        own_digit = (np.arange(k) // self.alpha).astype(np.int64)
        qhat_inv = np.empty(k, dtype=np.uint64)
        cm = np.zeros((digits, m, self.alpha), dtype=np.uint64)
        items = []
        for j in range(digits):
            lo, hi = int(dig_lo[j]), int(dig_hi[j])
            targets = [t for t in range(m) if not lo <= t < hi]
            items += [(j, t) for t in targets]
            inv, hat_mod = _conversion_constants(ctx, np.arange(lo, hi), qp[targets])
            qhat_inv[lo:hi] = inv
            p_t = ctx.q_all[qp[targets]]
            if self.ifma:
                hat_mod = fx.mont(hat_mod, p_t.reshape(1, -1))
            cm[j, targets, :hi - lo] = hat_mod.T
        item_digit = np.array([a for a, _ in items], dtype=np.int64)
        item_pos = np.array([b for _, b in items], dtype=np.int64)
        plan = (own_digit, dig_lo, dig_hi, item_digit, item_pos, cm,
                self._folded_inverse(ctx.q_rows(level), qhat_inv))
        self._up_plans[level] = plan
        return plan

    def _down_plan(self, level: int):
        if level in self._down_plans:
            return self._down_plans[level]
        ctx = self.ctx
        q_rows = ctx.q_rows(level)
        phat_inv, phat_mod = _conversion_constants(ctx, ctx.special_rows, q_rows)
        q = ctx.q_all[q_rows]
        cm_plain = np.ascontiguousarray(phat_mod.T)               # (k, alpha)
        p_inv = np.array([pow(ctx.p_product % int(x), -1, int(x)) for x in q], dtype=np.uint64)
        folded = self._folded_inverse(ctx.special_rows, phat_inv)
        if not self.ifma:
            plan = (cm_plain, p_inv, None, folded)
            fused = plan
        else:
            plan = (np.ascontiguousarray(fx.mont(phat_mod, q.reshape(1, -1)).T), p_inv,
                    fx.shoup(p_inv, q), folded)
            # fused kernels: inner products in Montgomery form (times 2^-52), see kernels.basis
            p_inv_m = fx.mont(p_inv, q)
            pr = ctx.q_all[ctx.special_rows]
            fused = (cm_plain, p_inv_m, fx.shoup(p_inv_m, q),
                     self._folded_inverse(ctx.special_rows, fx.mont(phat_inv, pr)))
        self._down_plans[level] = (plan, fused)
        return self._down_plans[level]

    def _up_tables(self, level: int):
        """Per digit: own rows, target rows, their positions in the Q_l+P basis, constants
        (the unfused form, kept for profiling tools)."""
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

    # -- the steps -------------------------------------------------------------------------
    def decompose(self, c: np.ndarray, level: int) -> np.ndarray:
        """ModUp every digit of ``c`` (NTT form over Q_l): (digits, l+1+alpha, N) NTT form."""
        ctx = self.ctx
        own_digit, dig_lo, dig_hi, item_digit, item_pos, cm, (ni, ni_c, w1n, w1n_c) = self._up_plan(level)
        k = level + 1
        c = np.ascontiguousarray(c, dtype=np.uint64)
        if c.shape != (k, ctx.n):
            raise ValueError(f"expected a ({k}, {ctx.n}) polynomial, got {c.shape}")
        m = k + len(ctx.special_rows)
        ext = np.empty((len(dig_lo), m, ctx.n), dtype=np.uint64)
        y = np.empty((k, ctx.n), dtype=np.uint64)
        q_rows, qp = ctx.q_rows(level), ctx.qp_rows(level)
        q = ctx.q_all
        if self.ifma:
            basis.modup_prepare_ifma(c, own_digit, ext, y, q_rows, q, *self._inv, ni, ni_c, w1n, w1n_c)
            basis.modup_convert_ifma(y, item_digit, item_pos, dig_lo, dig_hi, cm, qp, q, self._qneg,
                                     *self._fwd, ext)
        else:
            basis.modup_prepare_portable(c, own_digit, ext, y, q_rows, q, *self._inv, ni, ni_c, w1n, w1n_c)
            basis.modup_convert_portable(y, item_digit, item_pos, dig_lo, dig_hi, cm, qp, q,
                                         *self._fwd, ext)
        return ext

    def inner_product(self, ext: np.ndarray, key_data: np.ndarray, level: int) -> np.ndarray:
        """sum_d ext[d] * key[d] over Q_l+P: (2, l+1+alpha, N)."""
        ctx = self.ctx
        out = np.empty((2, ext.shape[1], ctx.n), dtype=np.uint64)
        if self.ifma:
            fx.key_inner_product(ext, key_data, ctx.qp_rows(level), ctx.q_all, self._qneg,
                                 self._r52, self._r52_c, out)
        else:
            modarith.key_inner_product_portable(ext, key_data, ctx.qp_rows(level), ctx.q_all, out)
        return out

    def mod_down(self, x: np.ndarray, level: int) -> np.ndarray:
        """Divide (size, l+1+alpha, N) NTT-form polynomials by P: (size, l+1, N) over Q_l."""
        ctx = self.ctx
        cm, p_inv, p_inv_c, (ni, ni_c, w1n, w1n_c) = self._down_plan(level)[0]
        k = level + 1
        x = np.ascontiguousarray(x, dtype=np.uint64)
        size = x.shape[0]
        alpha = len(ctx.special_rows)
        y = np.empty((size * alpha, ctx.n), dtype=np.uint64)
        tmp = np.empty((_THREADS, ctx.n), dtype=np.uint64)
        out = np.empty((size, k, ctx.n), dtype=np.uint64)
        q = ctx.q_all
        if self.ifma:
            basis.moddown_prepare_ifma(x, y, ctx.special_rows, q, *self._inv, ni, ni_c, w1n, w1n_c)
            basis.moddown_finish_ifma(x, y, cm, ctx.q_rows(level), q, self._qneg, p_inv, p_inv_c,
                                      *self._fwd, tmp, out)
        else:
            basis.moddown_prepare_portable(x, y, ctx.special_rows, q, *self._inv, ni, ni_c, w1n, w1n_c)
            basis.moddown_finish_portable(x, y, cm, ctx.q_rows(level), q, p_inv, *self._fwd, tmp, out)
        return out

    def switch_ext(self, ext: np.ndarray, key_data: np.ndarray, level: int) -> np.ndarray:
        """Inner product with the key and ModDown, fused: (2, l+1, N) from ``decompose``'s
        digits (equals ``mod_down(inner_product(ext, key_data, level), level)``)."""
        ctx = self.ctx
        cm, p_inv, p_inv_c, (ni, ni_c, w1n, w1n_c) = self._down_plan(level)[1]
        k = level + 1
        alpha = len(ctx.special_rows)
        if ext.shape[1] != k + alpha or not ext.flags.c_contiguous:
            raise ValueError("ext must be decompose's C-contiguous output for this level")
        if not key_data.flags.c_contiguous or key_data.shape[0] < ext.shape[0]:
            raise ValueError("key_data must be a C-contiguous switching key with enough digits")
        y = np.empty((2 * alpha, ctx.n), dtype=np.uint64)
        tmp = np.empty((_THREADS, ctx.n), dtype=np.uint64)
        out = np.empty((2, k, ctx.n), dtype=np.uint64)
        qp = ctx.qp_rows(level)
        q = ctx.q_all
        if self.ifma:
            basis.ip_moddown_prepare_ifma(ext, key_data, qp, q, self._qneg, *self._inv,
                                          ni, ni_c, w1n, w1n_c, y)
            basis.ip_moddown_finish_ifma(ext, key_data, y, cm, qp, q, self._qneg, p_inv, p_inv_c,
                                         *self._fwd, tmp, out)
        else:
            basis.ip_moddown_prepare_portable(ext, key_data, qp, q, *self._inv, ni, ni_c, w1n, w1n_c, y)
            basis.ip_moddown_finish_portable(ext, key_data, y, cm, qp, q, p_inv, *self._fwd, tmp, out)
        return out

    def switch_ext_add(self, ext: np.ndarray, key_data: np.ndarray, level: int, addend=None,
                       perm=None) -> np.ndarray:
        """``switch_ext`` with the caller's last step fused in (two parallel regions):
        out[c] = sigma(u_c + addend[c]) for the A = len(addend) <= 2 first components and
        sigma(u_c) for the others, sigma the NTT-domain permutation ``perm`` (out[:, r, j] =
        value[r, perm[j]]) or the identity when perm is None.

        Rotation: ``switch_ext_add(ext, key, level, c[:1], perm)``;
        relinearization: ``switch_ext_add(decompose(c[2]), key, level, c[:2])``."""
        ctx = self.ctx
        cm, p_inv, p_inv_c, (ni, ni_c, w1n, w1n_c) = self._down_plan(level)[1]
        k = level + 1
        alpha = len(ctx.special_rows)
        if ext.shape[1] != k + alpha or not ext.flags.c_contiguous:
            raise ValueError("ext must be decompose's C-contiguous output for this level")
        if not key_data.flags.c_contiguous or key_data.shape[0] < ext.shape[0]:
            raise ValueError("key_data must be a C-contiguous switching key with enough digits")
        if addend is None:
            addend = np.empty((0, k, ctx.n), dtype=np.uint64)
        addend = np.ascontiguousarray(addend, dtype=np.uint64)
        if addend.ndim != 3 or addend.shape[0] > 2 or addend.shape[1:] != (k, ctx.n):
            raise ValueError(f"addend must be (A <= 2, {k}, {ctx.n}), got {addend.shape}")
        if perm is None:
            perm, blocked = np.empty(0, dtype=np.int64), False
        else:
            perm, blocked = self._perm_info(perm)
        y = np.empty((2 * alpha, ctx.n), dtype=np.uint64)
        tmp = np.empty((_THREADS, 3, ctx.n), dtype=np.uint64)
        out = np.empty((2, k, ctx.n), dtype=np.uint64)
        qp = ctx.qp_rows(level)
        q = ctx.q_all
        if self.ifma:
            basis.ip_moddown_prepare_ifma(ext, key_data, qp, q, self._qneg, *self._inv,
                                          ni, ni_c, w1n, w1n_c, y)
            basis.ip_moddown_add_finish_ifma(ext, key_data, y, cm, qp, q, self._qneg, p_inv,
                                             p_inv_c, *self._fwd, addend, perm.view(np.uint64),
                                             blocked, tmp, out)
        else:
            basis.ip_moddown_prepare_portable(ext, key_data, qp, q, *self._inv, ni, ni_c, w1n, w1n_c, y)
            basis.ip_moddown_add_finish_portable(ext, key_data, y, cm, qp, q, p_inv, *self._fwd,
                                                 addend, perm, tmp, out)
        return out

    def rotate_ext(self, ext: np.ndarray, key_data: np.ndarray, c0: np.ndarray, perm: np.ndarray,
                   level: int) -> np.ndarray:
        """A whole rotation from the digits of c_1 (hoistable): (sigma(c0 + u0), sigma(u1)) with
        u = switch_ext(ext, key_data, level) and sigma the NTT-domain permutation ``perm``."""
        return self.switch_ext_add(ext, key_data, level, np.asarray(c0)[None], perm)

    def _scratch(self, name, shape):
        """A scratch array kept between calls (per Python thread): a fresh 16 MB array costs
        page faults and zeroing on every call once the allocator has returned it to the OS."""
        store = self._local.__dict__
        a = store.get(name)
        size = int(np.prod(shape))
        if a is None or a.size < size:
            a = store[name] = np.empty(size, dtype=np.uint64)
        return a[:size].reshape(shape)

    def _perm_info(self, perm):
        """(int64 perm, blocked) for an N-entry permutation, checked once per array object."""
        return self._perm_entry(perm)[1:3]

    def _perm_entry(self, perm):
        """(perm, int64 perm, blocked, scatter codes or None), cached per array object."""
        got = self._perms.get(id(perm))
        if got is not None and got[0] is perm:
            return got
        p = np.ascontiguousarray(perm, dtype=np.int64)
        if p.shape != (self.ctx.n,):
            raise ValueError("perm must have N entries")
        if p.min() < 0 or p.max() >= self.ctx.n:
            raise ValueError("perm entries must lie in 0..N-1")
        blocked = bool(self.ifma and fx.blocked_permutation(p))
        if len(self._perms) >= 256:
            self._perms.clear()
        entry = (perm, p, blocked, fx.scatter_codes(p) if blocked else None)
        self._perms[id(perm)] = entry   # holding perm keeps its id unique
        return entry

    def rotate_ext_many(self, ext: np.ndarray, keys, c0: np.ndarray, perms, level: int) -> list:
        """Hoisted rotations: ``rotate_ext(ext, keys[i], c0, perms[i], level)`` for every i,
        as a list of (2, l+1, N) arrays, bit-identical to the one-key form.

        Hoisting shares the ModUp (``decompose``); each key still streams once (42 MB at
        N = 2^15 with 15 levels) and pays its own ModDown (40 NTTs).  What the batched kernels
        (``basis.hoisted_*``, keys in groups of ``basis.HOIST_GROUP``) save over calling
        ``rotate_ext`` per key: work items are (pair of rows, pair of keys) with the keys
        innermost, so a row's twiddles and c0's row are reused across keys; one pass over a
        key's P-row scratch serves both rows' ModDown conversions; the inner product,
        ModDown's last step, c0 and the permutation run as one pass over the row, shared by
        the item's two keys (digits and c0 loaded once), without scratch rows, writing each
        permuted block straight to its destination (non-temporal stores when the results
        are far larger than the caches); no per-call scratch allocations."""
        ctx = self.ctx
        cm, p_inv, p_inv_c, (ni, ni_c, w1n, w1n_c) = self._down_plan(level)[1]
        k = level + 1
        alpha = len(ctx.special_rows)
        keys = list(keys)
        perms = list(perms)
        if len(keys) != len(perms):
            raise ValueError("need one permutation per key")
        if ext.shape[1] != k + alpha or not ext.flags.c_contiguous:
            raise ValueError("ext must be decompose's C-contiguous output for this level")
        for key in keys:
            if (not isinstance(key, np.ndarray) or key.dtype != np.uint64 or key.ndim != 4
                    or not key.flags.c_contiguous or key.shape[0] < ext.shape[0]
                    or key.shape[1:] != keys[0].shape[1:]):
                raise ValueError("keys must be C-contiguous switching keys with enough digits")
        c0 = np.ascontiguousarray(c0, dtype=np.uint64)
        if c0.shape != (k, ctx.n):
            raise ValueError(f"c0 must be ({k}, {ctx.n}), got {c0.shape}")
        info = [self._perm_entry(p)[1:] for p in perms]
        count = len(keys)
        out = [_aligned_empty((2, k, ctx.n)) for _ in range(count)]
        # results far larger than the caches go to memory with non-temporal stores
        nt = NT_STORES and count * out[0].nbytes >= NT_MIN_BYTES if count else False
        if count == 0:
            return out
        # the P-row scratch of a group stays below ~32 MB (N = 2^16 with many special primes)
        group = max(1, min(basis.HOIST_GROUP, (32 << 20) // (16 * alpha * ctx.n)))
        y = self._scratch("hoist_y", (min(group, count), 2 * alpha, ctx.n))
        tmp = self._scratch("hoist_tmp", (_THREADS, 8, ctx.n))
        qp = ctx.qp_rows(level)
        q = ctx.q_all
        for g0 in range(0, count, group):
            g1 = min(g0 + group, count)
            cnt = g1 - g0
            ks = tuple(keys[g0:g1]) + (keys[g0],) * (basis.HOIST_GROUP - cnt)
            # the fused kernels walk blocked permutations through their scatter codes; the
            # index arrays are only read for the others
            plain = any(not e[1] for e in info[g0:g1]) or not self.ifma
            ps = (np.stack([e[0] for e in info[g0:g1]]) if plain
                  else np.zeros((cnt, 8), dtype=np.int64))
            o = tuple(out[g0:g1]) + (out[g0],) * (basis.HOIST_GROUP - cnt)
            yy = y[:cnt]
            if self.ifma:
                blocked = np.array([e[1] for e in info[g0:g1]], dtype=np.bool_)
                codes = np.stack([e[2] if e[1] else np.zeros(ctx.n // 8, dtype=np.uint64)
                                  for e in info[g0:g1]])
                basis.hoisted_prepare_ifma(ext, ks, cnt, qp, q, self._qneg, *self._inv,
                                           ni, ni_c, w1n, w1n_c, yy)
                basis.hoisted_finish_ifma(ext, ks, cnt, yy, cm, qp, q, self._qneg, p_inv, p_inv_c,
                                          *self._fwd, c0, ps.view(np.uint64), blocked, codes, nt, tmp, o)
            else:
                basis.hoisted_prepare_portable(ext, ks, cnt, qp, q, *self._inv,
                                               ni, ni_c, w1n, w1n_c, yy)
                basis.hoisted_finish_portable(ext, ks, cnt, yy, cm, qp, q, p_inv, *self._fwd,
                                              c0, ps, tmp, o)
        return out

    def switch(self, c: np.ndarray, key_data: np.ndarray, level: int) -> np.ndarray:
        """Key-switch one component: (2, l+1, N) whose decryption under the key's target
        secret equals c times the key's source secret."""
        return self.switch_ext(self.decompose(c, level), key_data, level)


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
