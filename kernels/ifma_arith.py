"""AVX-512 IFMA building blocks for element-wise RNS arithmetic and basis conversion.

Vectors of eight uint64 lanes (``kernels.ifma.V8``), values below 2^52.  Two reductions:

* Shoup (constant multiplier): ``vmulred(x, w, ws)`` = x*w mod q in [0, 2q) for x < 2^52,
  w < q and ws = floor(w * 2^52 / q) (see ``kernels/ntt.py``).
* Montgomery with R = 2^52, lazily accumulated: products a*b (a, b < 2^50) are summed as their
  low and high 52-bit halves (``madd52lo`` / ``madd52hi``, no reduction per term), and
  ``vredc`` returns a value congruent to (hi * 2^52 + lo) * 2^-52 mod p.  Sums of at most
  ``GROUP`` = 4 terms are reduced at a time: each high half is < a*b / 2^52 < p/4 (a < 2^50,
  b < p), so redc's result is < hi + p + 5 < 2p + 5 and two ``min(t, t - p)`` make it exact.
  A Montgomery constant c' = c * 2^52 mod p in the sum makes the result exactly sum a*c mod p.

Like ``kernels/ifma.py``: only call these when ``kernels.cpu.HAS_IFMA`` is true.

Lane-level helpers are ``inline="always"``; row-level ones (a loop over a whole limb) are
ordinary compiled calls: inlining them into every call site of the fused key-switching kernels
gained nothing measurable (8 hoisted / 8 plain rotations at N = 2^15, CPU ms, same within
noise) and cost about 45% more cold compile time (``python -m hemet.warmup``: 28.5 s vs 51 s
of CPU with an empty cache).
"""
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.core.extending import intrinsic

from .ifma import (V8, lanes3, madd52hi, madd52lo, vadd, vand, vbcast, vload, vmin, vprefetch,
                   vstore, vstore_nt, vsub)
from .ntt import _fwd_block16_ifma, _inv_block16_ifma, _inv_tail_ifma

GROUP = 4
# Key rows are fetched this many lanes (1 KB) ahead in the inner-product loops: a digit group
# streams 8 key rows per key (16 in the two-key kernel) from memory, more concurrent streams
# than the hardware prefetchers follow well.  Measured on the fused two-key kernel (8 keys,
# 16 rows, N = 2^15): 26.0 -> 22.7 ms; 2 KB ahead was the same, 4-8 KB slower.
PREFETCH = np.uint64(128)
MASK52 = np.uint64((1 << 52) - 1)
_R = 1 << 52


@intrinsic
def vsrl52(typingctx, a):
    """Lane-wise logical shift right by 52."""
    if a != V8:
        return None

    def codegen(context, builder, sig, args):
        vec = ir.VectorType(ir.IntType(64), 8)
        return builder.lshr(args[0], ir.Constant(vec, [52] * 8))

    return V8(a), codegen


@intrinsic
def vgather(typingctx, ary, idx):
    """Lanes ary[idx[l]] (AVX-512 gather, no bounds check); ary a C-contiguous uint64 array."""
    if not (isinstance(ary, types.Array) and ary.dtype == types.uint64 and ary.layout == "C"
            and idx == V8):
        return None

    def codegen(context, builder, sig, args):
        vec = ir.VectorType(ir.IntType(64), 8)
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        base = builder.bitcast(data, ir.IntType(8).as_pointer())
        mty = ir.VectorType(ir.IntType(1), 8)
        fnty = ir.FunctionType(vec, [vec, base.type, vec, mty, ir.IntType(32)])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.x86.avx512.mask.gather.qpq.512")
        return builder.call(fn, [ir.Constant(vec, [0] * 8), base, args[1],
                                 ir.Constant(mty, [1] * 8), ir.Constant(ir.IntType(32), 8)])

    return V8(ary, idx), codegen


@intrinsic
def vpermvar(typingctx, a, idx):
    """Lanes a[idx[l] & 7] (vpermq)."""
    if a != V8 or idx != V8:
        return None

    def codegen(context, builder, sig, args):
        vec = ir.VectorType(ir.IntType(64), 8)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vec, [vec, vec]),
                                            "llvm.x86.avx512.permvar.di.512")
        return builder.call(fn, [args[0], args[1]])

    return V8(a, idx), codegen


def blocked_permutation(perm) -> bool:
    """True when perm maps every aligned block of 8 entries onto one aligned block of 8 (every
    Galois automorphism of kernels.automorphism does: the low 3 bits of a bit-reversed index
    only touch the top bits of its exponent), so ``permute_row`` can use one load and one lane
    permutation per 8 entries instead of a gather."""
    p = np.asarray(perm).reshape(-1, 8)
    return bool(((p >> 3) == (p[:, :1] >> 3)).all())


def scatter_codes(perm) -> np.ndarray:
    """A blocked permutation (``blocked_permutation``) as one uint64 per *source* block b:
    (destination block << 32) | the destination's eight 3-bit lane indices, so a kernel can
    walk its input in order and store each permuted block where it belongs
    (out[8 D + l] = a[8 b + lane_l] for code (D << 32) | lanes)."""
    p = np.asarray(perm, dtype=np.int64).reshape(-1, 8)
    src = p[:, 0] >> 3
    lanes = ((p & 7) << (3 * np.arange(8, dtype=np.int64))).sum(axis=1)
    codes = np.empty(len(p), dtype=np.uint64)
    codes[src] = (np.arange(len(p), dtype=np.uint64) << np.uint64(32)) | lanes.astype(np.uint64)
    return codes


@njit(cache=True)
def permute_row(a, perm, blocked, out):
    """out[j] = a[perm[j]] (perm: uint64 indices below len(a), C-contiguous; ``blocked`` as
    decided by ``blocked_permutation``)."""
    n = np.uint64(out.shape[0])
    if blocked:
        seven = vbcast(np.uint64(7))
        for jj in range(np.uint64(0), n, np.uint64(8)):
            src = perm[jj] & ~np.uint64(7)
            vstore(out, jj, vpermvar(vload(a, src), vand(vload(perm, jj), seven)))
    else:
        for jj in range(np.uint64(0), n, np.uint64(8)):
            vstore(out, jj, vgather(a, vload(perm, jj)))


# -- host-side constants --------------------------------------------------------------------
def shoup(w, q):
    """floor(w * 2^52 / q) element-wise (Python ints; w < q < 2^50)."""
    w = np.asarray(w, dtype=np.uint64)
    q = np.broadcast_to(np.asarray(q, dtype=np.uint64), w.shape)
    return np.array([(int(a) << 52) // int(b) for a, b in zip(w.ravel(), q.ravel())],
                    dtype=np.uint64).reshape(w.shape)


def mont(c, p):
    """c * 2^52 mod p element-wise (Montgomery form)."""
    c = np.asarray(c, dtype=np.uint64)
    p = np.broadcast_to(np.asarray(p, dtype=np.uint64), c.shape)
    return np.array([(int(a) << 52) % int(b) for a, b in zip(c.ravel(), p.ravel())],
                    dtype=np.uint64).reshape(c.shape)


def neg_inv52(q):
    """-q^-1 mod 2^52 per prime (the Montgomery reduction's multiplier)."""
    return np.array([(-pow(int(x), -1, _R)) % _R for x in np.asarray(q).ravel()], dtype=np.uint64)


def r52(q):
    """2^52 mod q and its Shoup companion: multiplying a redc result by it undoes the 2^-52."""
    r = np.array([_R % int(x) for x in np.asarray(q).ravel()], dtype=np.uint64)
    return r, shoup(r, q)


# -- vector helpers ---------------------------------------------------------------------------
@njit(cache=True, inline="always")
def vmulred(x, w, ws, negq, mask, zero):
    """x*w mod q in [0, 2q) for x < 2^52 (negq = 2^52 - q)."""
    qh = madd52hi(zero, x, ws)
    return vand(madd52lo(madd52lo(zero, x, w), qh, negq), mask)


@njit(cache=True, inline="always")
def vredc(alo, ahi, p, pneg, zero):
    """(ahi * 2^52 + alo) * 2^-52 mod p, up to a few multiples of p (see the module doc).

    m = lo52(alo) * (-p^-1) mod 2^52 makes alo + lo52(m p) a multiple of 2^52, so
    (ahi 2^52 + alo + m p) / 2^52 = ahi + hi52(m p) + (alo + lo52(m p)) >> 52 exactly."""
    m = madd52lo(zero, alo, pneg)
    c = vsrl52(madd52lo(alo, m, p))
    return madd52hi(vadd(ahi, c), m, p)


@njit(cache=True, inline="always")
def vfix2(t, p):
    """[0, 3p) -> [0, p)."""
    t = vmin(t, vsub(t, p))
    return vmin(t, vsub(t, p))


@njit(cache=True, inline="always")
def _prefetch_group(key, a0, a1, a2, a3, kstep, j):
    """The cache lines at lane j of a digit group's 8 key rows (both components)."""
    vprefetch(key, a0 + j)
    vprefetch(key, a1 + j)
    vprefetch(key, a2 + j)
    vprefetch(key, a3 + j)
    vprefetch(key, a0 + kstep + j)
    vprefetch(key, a1 + kstep + j)
    vprefetch(key, a2 + kstep + j)
    vprefetch(key, a3 + kstep + j)


@njit(cache=True)
def conv_row(y, lo, hi, cm, ps, pnegs, out):
    """out[j] = sum_{i in [lo, hi)} y[i, j] * c_i mod p, exactly in [0, p).

    y: C-contiguous (rows, n) with entries < 2^50; cm[i - lo] = c_i * 2^52 mod p (Montgomery
    constants, c_i < p); out: (n,) C-contiguous, n a multiple of 8."""
    n = np.uint64(out.shape[0])
    zero = vbcast(np.uint64(0))
    p = vbcast(ps)
    pneg = vbcast(pnegs)
    ulo = np.uint64(lo)
    if hi - lo == GROUP:
        # the common case (full digits), unrolled with the constants in registers
        c0 = vbcast(cm[0])
        c1 = vbcast(cm[1])
        c2 = vbcast(cm[2])
        c3 = vbcast(cm[3])
        b0 = ulo * n
        b1 = b0 + n
        b2 = b1 + n
        b3 = b2 + n
        for jj in range(np.uint64(0), n, np.uint64(8)):
            v0 = vload(y, b0 + jj)
            v1 = vload(y, b1 + jj)
            v2 = vload(y, b2 + jj)
            v3 = vload(y, b3 + jj)
            alo = madd52lo(madd52lo(zero, v0, c0), v1, c1)
            ahi = madd52hi(madd52hi(zero, v0, c0), v1, c1)
            blo = madd52lo(madd52lo(zero, v2, c2), v3, c3)
            bhi = madd52hi(madd52hi(zero, v2, c2), v3, c3)
            vstore(out, jj, vfix2(vredc(vadd(alo, blo), vadd(ahi, bhi), p, pneg, zero), p))
        return
    if hi - lo <= GROUP:
        for jj in range(np.uint64(0), n, np.uint64(8)):
            alo = zero
            ahi = zero
            for ii in range(lo, hi):
                v = vload(y, np.uint64(ii) * n + jj)
                c = vbcast(cm[np.uint64(ii) - ulo])
                alo = madd52lo(alo, v, c)
                ahi = madd52hi(ahi, v, c)
            vstore(out, jj, vfix2(vredc(alo, ahi, p, pneg, zero), p))
        return
    for jj in range(np.uint64(0), n, np.uint64(8)):
        s = zero
        i = lo
        while i < hi:
            ie = min(i + GROUP, hi)
            alo = zero
            ahi = zero
            for ii in range(i, ie):
                v = vload(y, np.uint64(ii) * n + jj)
                c = vbcast(cm[np.uint64(ii) - ulo])
                alo = madd52lo(alo, v, c)
                ahi = madd52hi(ahi, v, c)
            s = vadd(s, vfix2(vredc(alo, ahi, p, pneg, zero), p))
            s = vmin(s, vsub(s, p))
            i = ie
        vstore(out, jj, s)


@njit(cache=True)
def conv_row2(y, lo, hi, cma, pas, pnegas, outa, cmb, pbs, pnegbs, outb):
    """``conv_row`` to two targets in one pass over the source rows (each loaded once):
    outa with (cma, pas), outb with (cmb, pbs).  With ``GROUP`` source rows the outputs are
    left partly reduced, below 2p + 5 (see the module docstring): below 4p, which is all the
    forward NTT that follows needs; with any other count exactly reduced."""
    n = np.uint64(outa.shape[0])
    zero = vbcast(np.uint64(0))
    pa = vbcast(pas)
    pnega = vbcast(pnegas)
    pb = vbcast(pbs)
    pnegb = vbcast(pnegbs)
    if hi - lo != GROUP:
        # any other count: groups of at most GROUP rows, each reduced, summed mod p
        ulo = np.uint64(lo)
        for jj in range(np.uint64(0), n, np.uint64(8)):
            sa = zero
            sb = zero
            i = lo
            while i < hi:
                ie = min(i + GROUP, hi)
                alo = zero
                ahi = zero
                blo = zero
                bhi = zero
                for ii in range(i, ie):
                    v = vload(y, np.uint64(ii) * n + jj)
                    ca = vbcast(cma[np.uint64(ii) - ulo])
                    cb = vbcast(cmb[np.uint64(ii) - ulo])
                    alo = madd52lo(alo, v, ca)
                    ahi = madd52hi(ahi, v, ca)
                    blo = madd52lo(blo, v, cb)
                    bhi = madd52hi(bhi, v, cb)
                sa = vadd(sa, vfix2(vredc(alo, ahi, pa, pnega, zero), pa))
                sa = vmin(sa, vsub(sa, pa))
                sb = vadd(sb, vfix2(vredc(blo, bhi, pb, pnegb, zero), pb))
                sb = vmin(sb, vsub(sb, pb))
                i = ie
            vstore(outa, jj, sa)
            vstore(outb, jj, sb)
        return
    ca0 = vbcast(cma[0])
    ca1 = vbcast(cma[1])
    ca2 = vbcast(cma[2])
    ca3 = vbcast(cma[3])
    cb0 = vbcast(cmb[0])
    cb1 = vbcast(cmb[1])
    cb2 = vbcast(cmb[2])
    cb3 = vbcast(cmb[3])
    b0 = np.uint64(lo) * n
    b1 = b0 + n
    b2 = b1 + n
    b3 = b2 + n
    for jj in range(np.uint64(0), n, np.uint64(8)):
        v0 = vload(y, b0 + jj)
        v1 = vload(y, b1 + jj)
        v2 = vload(y, b2 + jj)
        v3 = vload(y, b3 + jj)
        lo_ = vadd(madd52lo(madd52lo(zero, v0, ca0), v1, ca1), madd52lo(madd52lo(zero, v2, ca2), v3, ca3))
        hi_ = vadd(madd52hi(madd52hi(zero, v0, ca0), v1, ca1), madd52hi(madd52hi(zero, v2, ca2), v3, ca3))
        vstore(outa, jj, vredc(lo_, hi_, pa, pnega, zero))
        lo_ = vadd(madd52lo(madd52lo(zero, v0, cb0), v1, cb1), madd52lo(madd52lo(zero, v2, cb2), v3, cb3))
        hi_ = vadd(madd52hi(madd52hi(zero, v0, cb0), v1, cb1), madd52hi(madd52hi(zero, v2, cb2), v3, cb3))
        vstore(outb, jj, vredc(lo_, hi_, pb, pnegb, zero))


@njit(cache=True)
def ip_row(ext, key, r, g, qs, qnegs, r52s, r52ss, o0, o1):
    """o_c[j] = sum_d ext[d, r, j] * key[d, c, g, j] mod q for c = 0, 1, exactly in [0, q).

    ext (D, m, n) and key (D_all, 2, M, n) C-contiguous, entries < q < 2^50."""
    # (o0 stands in for the unused twiddle arrays)
    _ip_row(ext, key, r, g, qs, qnegs, r52s, r52ss, o0, o1, True, False, o0, o0)


@njit(cache=True)
def ip_row_mont(ext, key, r, g, qs, qnegs, o0, o1):
    """``ip_row`` times 2^-52 mod q (no final correction: callers fold 2^52 into later
    constants)."""
    _ip_row(ext, key, r, g, qs, qnegs, qs, qs, o0, o1, False, False, o0, o0)


@njit(cache=True)
def ip_row_mont_inv(ext, key, r, g, qs, qnegs, o0, o1, w, ws, ni, nis, w1n, w1ns):
    """``ip_row_mont`` followed by the inverse NTT of both outputs (``ntt._inv_limb_ifma``
    with this prime's table rows w, ws, ni, nis, w1n, w1ns), the transform's in-register
    first stages run inside the inner-product pass.  Why: the pass streams key rows from
    memory and leaves the core idle between loads; the transform's register stages fill
    that time instead of costing a pass of their own (8 keys' P rows at N = 2^15: 8.9-9.5 ->
    7.9-8.3 ms)."""
    _ip_row(ext, key, r, g, qs, qnegs, qs, qs, o0, o1, False, True, w, ws)
    _inv_tail_ifma(o0, w, ws, qs, ni, nis, w1n, w1ns)
    _inv_tail_ifma(o1, w, ws, qs, ni, nis, w1n, w1ns)


@njit(cache=True)
def _ip_row(ext, key, r, g, qs, qnegs, r52s, r52ss, o0, o1, fix, inv, w, ws):
    """Digits in groups of ``GROUP``: a full group runs unrolled with its row offsets
    computed once (the loop body is then loads and multiply-adds only); every group after the
    first adds its reduced sum to the outputs.  ``fix`` (S * 2^-52 -> S) is linear, so it is
    applied per group.  ``inv``: the last group runs the inverse NTT's register stages on
    each 16-element block of both outputs once the block is complete."""
    d_count, m, nn = ext.shape
    big_m = np.uint64(key.shape[2])
    n = np.uint64(nn)
    um = np.uint64(m)
    ur = np.uint64(r)
    ug = np.uint64(g)
    zero = vbcast(np.uint64(0))
    q = vbcast(qs)
    qneg = vbcast(qnegs)
    negq = vbcast(np.uint64(1 << 52) - qs)
    mask = vbcast(MASK52)
    rr = vbcast(r52s)
    rrs = vbcast(r52ss)
    kstep = big_m * n             # key[d, 0, g] -> key[d, 1, g]
    two_q = vbcast(qs + qs)
    d = 0
    while d < d_count:
        cnt = min(GROUP, d_count - d)
        acc = d > 0
        blocks = inv and d + cnt == d_count
        if cnt == GROUP:
            ud = np.uint64(d)
            e0 = (ud * um + ur) * n
            e1 = e0 + um * n
            e2 = e1 + um * n
            e3 = e2 + um * n
            a0 = ((ud * np.uint64(2)) * big_m + ug) * n
            a1 = a0 + np.uint64(2) * kstep
            a2 = a1 + np.uint64(2) * kstep
            a3 = a2 + np.uint64(2) * kstep
            for jj in range(np.uint64(0), n, np.uint64(8)):
                _prefetch_group(key, a0, a1, a2, a3, kstep, jj + PREFETCH)
                v0 = vload(ext, e0 + jj)
                v1 = vload(ext, e1 + jj)
                v2 = vload(ext, e2 + jj)
                v3 = vload(ext, e3 + jj)
                k0 = vload(key, a0 + jj)
                k1 = vload(key, a1 + jj)
                k2 = vload(key, a2 + jj)
                k3 = vload(key, a3 + jj)
                lo = vadd(madd52lo(madd52lo(zero, v0, k0), v1, k1),
                          madd52lo(madd52lo(zero, v2, k2), v3, k3))
                hi = vadd(madd52hi(madd52hi(zero, v0, k0), v1, k1),
                          madd52hi(madd52hi(zero, v2, k2), v3, k3))
                s0 = vfix2(vredc(lo, hi, q, qneg, zero), q)
                k0 = vload(key, a0 + kstep + jj)
                k1 = vload(key, a1 + kstep + jj)
                k2 = vload(key, a2 + kstep + jj)
                k3 = vload(key, a3 + kstep + jj)
                lo = vadd(madd52lo(madd52lo(zero, v0, k0), v1, k1),
                          madd52lo(madd52lo(zero, v2, k2), v3, k3))
                hi = vadd(madd52hi(madd52hi(zero, v0, k0), v1, k1),
                          madd52hi(madd52hi(zero, v2, k2), v3, k3))
                s1 = vfix2(vredc(lo, hi, q, qneg, zero), q)
                if fix:
                    # s = S * 2^-52 mod q; times 2^52 mod q (Shoup) gives S
                    t0 = vmulred(s0, rr, rrs, negq, mask, zero)
                    t1 = vmulred(s1, rr, rrs, negq, mask, zero)
                    s0 = vmin(t0, vsub(t0, q))
                    s1 = vmin(t1, vsub(t1, q))
                if acc:
                    s0 = vadd(s0, vload(o0, jj))
                    s0 = vmin(s0, vsub(s0, q))
                    s1 = vadd(s1, vload(o1, jj))
                    s1 = vmin(s1, vsub(s1, q))
                vstore(o0, jj, s0)
                vstore(o1, jj, s1)
                if blocks and jj & np.uint64(8):
                    c16 = jj >> np.uint64(4)
                    _inv_block16_ifma(o0, c16, w, ws, n, two_q, negq, mask, zero)
                    _inv_block16_ifma(o1, c16, w, ws, n, two_q, negq, mask, zero)
        else:
            for jj in range(np.uint64(0), n, np.uint64(8)):
                l0 = zero
                h0 = zero
                l1 = zero
                h1 = zero
                for dd in range(d, d + cnt):
                    ud = np.uint64(dd)
                    v = vload(ext, (ud * um + ur) * n + jj)
                    k0 = vload(key, ((ud * np.uint64(2)) * big_m + ug) * n + jj)
                    k1 = vload(key, ((ud * np.uint64(2) + np.uint64(1)) * big_m + ug) * n + jj)
                    l0 = madd52lo(l0, v, k0)
                    h0 = madd52hi(h0, v, k0)
                    l1 = madd52lo(l1, v, k1)
                    h1 = madd52hi(h1, v, k1)
                s0 = vfix2(vredc(l0, h0, q, qneg, zero), q)
                s1 = vfix2(vredc(l1, h1, q, qneg, zero), q)
                if fix:
                    t0 = vmulred(s0, rr, rrs, negq, mask, zero)
                    t1 = vmulred(s1, rr, rrs, negq, mask, zero)
                    s0 = vmin(t0, vsub(t0, q))
                    s1 = vmin(t1, vsub(t1, q))
                if acc:
                    s0 = vadd(s0, vload(o0, jj))
                    s0 = vmin(s0, vsub(s0, q))
                    s1 = vadd(s1, vload(o1, jj))
                    s1 = vmin(s1, vsub(s1, q))
                vstore(o0, jj, s0)
                vstore(o1, jj, s1)
                if blocks and jj & np.uint64(8):
                    c16 = jj >> np.uint64(4)
                    _inv_block16_ifma(o0, c16, w, ws, n, two_q, negq, mask, zero)
                    _inv_block16_ifma(o1, c16, w, ws, n, two_q, negq, mask, zero)
        d += cnt


@njit(cache=True, inline="always")
def _prefetch_digits(key, d_count, big_m, ug, n, j):
    """The cache lines at lane j of a row's key rows (both components) for any digit count."""
    for dd in range(d_count):
        a = ((np.uint64(dd) * np.uint64(2)) * big_m + ug) * n + j
        vprefetch(key, a)
        vprefetch(key, a + big_m * n)


@njit(cache=True, inline="always")
def _ip2_group(ext, key_a, key_b, two, d, de, um, ur, ug, big_m, n, kstep, jj, zero):
    """Lazy Montgomery sums (low, high halves) of digits d..de-1 of one block against both
    components of key_a and, with ``two``, key_b (else zeros)."""
    la0 = zero
    ha0 = zero
    la1 = zero
    ha1 = zero
    lb0 = zero
    hb0 = zero
    lb1 = zero
    hb1 = zero
    for dd in range(d, de):
        ud = np.uint64(dd)
        v = vload(ext, (ud * um + ur) * n + jj)
        ka = ((ud * np.uint64(2)) * big_m + ug) * n + jj
        k0 = vload(key_a, ka)
        k1 = vload(key_a, ka + kstep)
        la0 = madd52lo(la0, v, k0)
        ha0 = madd52hi(ha0, v, k0)
        la1 = madd52lo(la1, v, k1)
        ha1 = madd52hi(ha1, v, k1)
        if two:
            k0 = vload(key_b, ka)
            k1 = vload(key_b, ka + kstep)
            lb0 = madd52lo(lb0, v, k0)
            hb0 = madd52hi(hb0, v, k0)
            lb1 = madd52lo(lb1, v, k1)
            hb1 = madd52hi(hb1, v, k1)
    return la0, ha0, la1, ha1, lb0, hb0, lb1, hb1


@njit(cache=True, inline="always")
def _ipmd_finish(s0, s1, jj, t0, t1, c0v, q, c, cc, negq, mask, zero, code, out0, out1, nt):
    """ModDown's last step, + c0 and the permutation for one block of the inner product's
    reduced sums s0, s1 < q (see ``ip_moddown_perm_row``)."""
    u0 = vmulred(vsub(vadd(s0, q), vload(t0, jj)), c, cc, negq, mask, zero)
    u0 = vadd(vmin(u0, vsub(u0, q)), c0v)
    u0 = vmin(u0, vsub(u0, q))
    u1 = vmulred(vsub(vadd(s1, q), vload(t1, jj)), c, cc, negq, mask, zero)
    u1 = vmin(u1, vsub(u1, q))
    dst = (code >> np.uint64(32)) << np.uint64(3)
    lanes = lanes3(code)
    if nt:
        vstore_nt(out0, dst, vpermvar(u0, lanes))
        vstore_nt(out1, dst, vpermvar(u1, lanes))
    else:
        vstore(out0, dst, vpermvar(u0, lanes))
        vstore(out1, dst, vpermvar(u1, lanes))


@njit(cache=True, inline="always")
def _ipmd_block(v0, v1, v2, v3, key, a0, a1, a2, a3, kstep, jj, t0, t1, c0v, q, qneg, c, cc,
                negq, mask, zero, code, out0, out1, nt):
    """One block of ``ip_moddown_perm_row`` (full digit group) from the digits' vectors."""
    k0 = vload(key, a0 + jj)
    k1 = vload(key, a1 + jj)
    k2 = vload(key, a2 + jj)
    k3 = vload(key, a3 + jj)
    lo = vadd(madd52lo(madd52lo(zero, v0, k0), v1, k1), madd52lo(madd52lo(zero, v2, k2), v3, k3))
    hi = vadd(madd52hi(madd52hi(zero, v0, k0), v1, k1), madd52hi(madd52hi(zero, v2, k2), v3, k3))
    s0 = vfix2(vredc(lo, hi, q, qneg, zero), q)
    k0 = vload(key, a0 + kstep + jj)
    k1 = vload(key, a1 + kstep + jj)
    k2 = vload(key, a2 + kstep + jj)
    k3 = vload(key, a3 + kstep + jj)
    lo = vadd(madd52lo(madd52lo(zero, v0, k0), v1, k1), madd52lo(madd52lo(zero, v2, k2), v3, k3))
    hi = vadd(madd52hi(madd52hi(zero, v0, k0), v1, k1), madd52hi(madd52hi(zero, v2, k2), v3, k3))
    s1 = vfix2(vredc(lo, hi, q, qneg, zero), q)
    _ipmd_finish(s0, s1, jj, t0, t1, c0v, q, c, cc, negq, mask, zero, code, out0, out1, nt)


@njit(cache=True)
def ip_moddown_perm_row(ext, key, r, g, qs, qnegs, t0, t1, w, ws, cs, css, c0, codes, out0,
                        out1, nt):
    """The inner product of row r fused with ModDown's last step, the rotation's c0 and its
    permutation, in one pass over the row (any number of digits):
    out0 = sigma(((ip_0 - t0) * c + c0) mod q), out1 = sigma((ip_1 - t1) * c mod q), with ip_c
    the Montgomery inner product (``ip_row_mont``), t_c the forward NTT of ModDown's converted
    P part and sigma given by ``scatter_codes`` (source blocks in order, each stored at its
    destination; ``nt``: non-temporal stores, outputs 64-byte aligned).  No scratch rows for
    the inner product.

    t0 and t1 arrive after ``ntt._fwd_head_ifma`` (w, ws: this prime's forward table rows):
    the transform's in-register last stages run here, block by block just before use, where
    they fill the time the pass otherwise spends waiting for key rows (8 keys' fused passes
    at N = 2^15, 1 thread: 46-50 -> 40-44 ms)."""
    ip_moddown_perm_row2(ext, key, key, r, g, qs, qnegs, t0, t1, t0, t1, w, ws, cs, css, c0,
                         codes, codes, out0, out1, out0, out1, nt, False)


@njit(cache=True)
def ip_moddown_perm_row2(ext, key_a, key_b, r, g, qs, qnegs, ta0, ta1, tb0, tb1, w, ws, cs, css,
                         c0, codes_a, codes_b, oa0, oa1, ob0, ob1, nt, two=True):
    """``ip_moddown_perm_row`` for two keys (same row, same digits, both keys of the same
    shape) in one pass: each digit vector and c0 is loaded once for both; the t rows after
    ``ntt._fwd_head_ifma`` as there.  ``two=False``: key_a only (the b arguments are
    ignored)."""
    d_count, m, nn = ext.shape
    big_m = np.uint64(key_a.shape[2])
    n = np.uint64(nn)
    um = np.uint64(m)
    ur = np.uint64(r)
    ug = np.uint64(g)
    zero = vbcast(np.uint64(0))
    q = vbcast(qs)
    qneg = vbcast(qnegs)
    negq = vbcast(np.uint64(1 << 52) - qs)
    mask = vbcast(MASK52)
    c = vbcast(cs)
    cc = vbcast(css)
    two_q = vbcast(qs + qs)
    kstep = big_m * n
    full = d_count == GROUP
    e0 = ur * n
    e1 = e0 + um * n
    e2 = e1 + um * n
    e3 = e2 + um * n
    a0 = ug * n
    a1 = a0 + np.uint64(2) * kstep
    a2 = a1 + np.uint64(2) * kstep
    a3 = a2 + np.uint64(2) * kstep
    b = np.uint64(0)
    for jj in range(np.uint64(0), n, np.uint64(8)):
        if not jj & np.uint64(8):
            c16 = jj >> np.uint64(4)
            _fwd_block16_ifma(ta0, c16, w, ws, n, q, two_q, negq, mask, zero)
            _fwd_block16_ifma(ta1, c16, w, ws, n, q, two_q, negq, mask, zero)
            if two:
                _fwd_block16_ifma(tb0, c16, w, ws, n, q, two_q, negq, mask, zero)
                _fwd_block16_ifma(tb1, c16, w, ws, n, q, two_q, negq, mask, zero)
        c0v = vload(c0, jj)
        if full:
            # the common case, unrolled with the row offsets computed once
            _prefetch_group(key_a, a0, a1, a2, a3, kstep, jj + PREFETCH)
            if two:
                _prefetch_group(key_b, a0, a1, a2, a3, kstep, jj + PREFETCH)
            v0 = vload(ext, e0 + jj)
            v1 = vload(ext, e1 + jj)
            v2 = vload(ext, e2 + jj)
            v3 = vload(ext, e3 + jj)
            _ipmd_block(v0, v1, v2, v3, key_a, a0, a1, a2, a3, kstep, jj, ta0, ta1, c0v, q,
                        qneg, c, cc, negq, mask, zero, codes_a[b], oa0, oa1, nt)
            if two:
                _ipmd_block(v0, v1, v2, v3, key_b, a0, a1, a2, a3, kstep, jj, tb0, tb1, c0v, q,
                            qneg, c, cc, negq, mask, zero, codes_b[b], ob0, ob1, nt)
        else:
            _prefetch_digits(key_a, d_count, big_m, ug, n, jj + PREFETCH)
            if two:
                _prefetch_digits(key_b, d_count, big_m, ug, n, jj + PREFETCH)
            # digit groups of at most GROUP (the lazy sums' bound), each reduced, summed mod q
            la0, ha0, la1, ha1, lb0, hb0, lb1, hb1 = _ip2_group(
                ext, key_a, key_b, two, 0, min(GROUP, d_count), um, ur, ug, big_m, n, kstep, jj,
                zero)
            sa0 = vfix2(vredc(la0, ha0, q, qneg, zero), q)
            sa1 = vfix2(vredc(la1, ha1, q, qneg, zero), q)
            sb0 = vfix2(vredc(lb0, hb0, q, qneg, zero), q)
            sb1 = vfix2(vredc(lb1, hb1, q, qneg, zero), q)
            d = GROUP
            while d < d_count:
                de = min(d + GROUP, d_count)
                la0, ha0, la1, ha1, lb0, hb0, lb1, hb1 = _ip2_group(
                    ext, key_a, key_b, two, d, de, um, ur, ug, big_m, n, kstep, jj, zero)
                sa0 = vadd(sa0, vfix2(vredc(la0, ha0, q, qneg, zero), q))
                sa0 = vmin(sa0, vsub(sa0, q))
                sa1 = vadd(sa1, vfix2(vredc(la1, ha1, q, qneg, zero), q))
                sa1 = vmin(sa1, vsub(sa1, q))
                sb0 = vadd(sb0, vfix2(vredc(lb0, hb0, q, qneg, zero), q))
                sb0 = vmin(sb0, vsub(sb0, q))
                sb1 = vadd(sb1, vfix2(vredc(lb1, hb1, q, qneg, zero), q))
                sb1 = vmin(sb1, vsub(sb1, q))
                d = de
            _ipmd_finish(sa0, sa1, jj, ta0, ta1, c0v, q, c, cc, negq, mask, zero, codes_a[b],
                         oa0, oa1, nt)
            if two:
                _ipmd_finish(sb0, sb1, jj, tb0, tb1, c0v, q, c, cc, negq, mask, zero,
                             codes_b[b], ob0, ob1, nt)
        b += np.uint64(1)


@njit(cache=True)
def sub_mul_row(a, b, cs, css, qs, out):
    """out[j] = (a[j] - b[j]) * c mod q for a, b < q (cs = c, css its Shoup companion)."""
    n = np.uint64(out.shape[0])
    zero = vbcast(np.uint64(0))
    q = vbcast(qs)
    negq = vbcast(np.uint64(1 << 52) - qs)
    mask = vbcast(MASK52)
    c = vbcast(cs)
    cc = vbcast(css)
    for jj in range(np.uint64(0), n, np.uint64(8)):
        d = vsub(vadd(vload(a, jj), q), vload(b, jj))    # (0, 2q)
        t = vmulred(d, c, cc, negq, mask, zero)
        vstore(out, jj, vmin(t, vsub(t, q)))


# -- element-wise kernels -----------------------------------------------------------------------
@njit(cache=True, parallel=True)
def key_inner_product(ext, key, rows, q_all, qneg_all, r52_all, r52s_all, out):
    """IFMA ``modarith.key_inner_product`` (same contract) with per-prime constants."""
    m = ext.shape[1]
    for r in prange(m):
        g = rows[r]
        ip_row(ext, key, r, g, q_all[g], qneg_all[g], r52_all[g], r52s_all[g], out[0, r], out[1, r])


@njit(cache=True, parallel=True)
def convert(x, q_from, qhat_inv, qhat_inv_s, q_to, pneg_to, qhat_mont, out):
    """IFMA ``basis.convert``: qhat_mont (m, k) holds [Q/q_i]_{p_t} * 2^52 mod p_t
    (transposed: one contiguous row of constants per target)."""
    k, nn = x.shape
    n = np.uint64(nn)
    m = q_to.shape[0]
    y = np.empty((k, nn), dtype=np.uint64)
    for i in prange(k):
        zero = vbcast(np.uint64(0))
        qs = q_from[i]
        q = vbcast(qs)
        negq = vbcast(np.uint64(1 << 52) - qs)
        mask = vbcast(MASK52)
        c = vbcast(qhat_inv[i])
        cs = vbcast(qhat_inv_s[i])
        xi = x[i]
        yi = y[i]
        for jj in range(np.uint64(0), n, np.uint64(8)):
            t = vmulred(vload(xi, jj), c, cs, negq, mask, zero)
            vstore(yi, jj, vmin(t, vsub(t, q)))
    for t in prange(m):
        conv_row(y, 0, k, qhat_mont[t], q_to[t], pneg_to[t], out[t])


@njit(cache=True)
def sub_mul_add_row(a, b, cs, css, d, qs, out):
    """out[j] = (a[j] - b[j]) * c + d[j] mod q for a, b, d < q."""
    n = np.uint64(out.shape[0])
    zero = vbcast(np.uint64(0))
    q = vbcast(qs)
    negq = vbcast(np.uint64(1 << 52) - qs)
    mask = vbcast(MASK52)
    c = vbcast(cs)
    cc = vbcast(css)
    for jj in range(np.uint64(0), n, np.uint64(8)):
        t = vmulred(vsub(vadd(vload(a, jj), q), vload(b, jj)), c, cc, negq, mask, zero)
        t = vadd(vmin(t, vsub(t, q)), vload(d, jj))
        vstore(out, jj, vmin(t, vsub(t, q)))


@njit(cache=True)
def sub_mul_add_perm_row(a, b, cs, css, d, add, qs, perm, out):
    """out[j] = v[perm[j]] with v = (a - b) * c (+ d if ``add``) mod q, for a blocked perm
    (see ``blocked_permutation``): each source block is computed once, lanes permuted."""
    n = np.uint64(out.shape[0])
    zero = vbcast(np.uint64(0))
    q = vbcast(qs)
    negq = vbcast(np.uint64(1 << 52) - qs)
    mask = vbcast(MASK52)
    c = vbcast(cs)
    cc = vbcast(css)
    seven = vbcast(np.uint64(7))
    for jj in range(np.uint64(0), n, np.uint64(8)):
        src = perm[jj] & ~np.uint64(7)
        t = vmulred(vsub(vadd(vload(a, src), q), vload(b, src)), c, cc, negq, mask, zero)
        t = vmin(t, vsub(t, q))
        if add:
            t = vadd(t, vload(d, src))
            t = vmin(t, vsub(t, q))
        vstore(out, jj, vpermvar(t, vand(vload(perm, jj), seven)))
