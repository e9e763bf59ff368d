"""Vectors of four float64 lanes for Numba's portable kernels.

``F4`` is a Numba type whose LLVM representation is ``<4 x double>``.  The intrinsics below
emit only generic LLVM vector IR (loads, stores, arithmetic, ``llvm.fma``, ``llvm.rint``,
shuffles), never target intrinsics, so they compile on every CPU: one AVX register where the
CPU has AVX, two SSE/NEON registers or scalars elsewhere.

Why explicit vectors: LLVM's loop vectoriser leaves the NTT's stages with short butterfly
spans (t <= 8) scalar, and those stages cost two to three times a long one (measured on an
AVX2 EPYC); with explicit vectors the last three stages run inside registers.

Loads and stores take C-contiguous 1-D arrays and do no bounds checks.  A uint64 array is
read as exact float64 integers (lanes must be below 2^52) and written from integer-valued
float64 lanes in [0, 2^52); ``fload`` also reads int64 arrays (lanes below 2^51 in magnitude),
all by bit patterns (no uint64 <-> float64 conversion instruction
exists before AVX-512).  Everything is module level so ``cache=True`` works for its users.
"""
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.extending import intrinsic, models, register_model

_D = ir.DoubleType()
_I64 = ir.IntType(64)
_I32 = ir.IntType(32)
_VD = ir.VectorType(_D, 4)
_VI = ir.VectorType(_I64, 4)
_EXP52 = 0x4330000000000000     # bits of 2.0**52: bits(2^52) | x is the double 2^52 + x
_TWO52 = float(2 ** 52)
_MAGIC_BITS = 0x4338000000000000   # bits of 1.5 * 2.0**52
_MAGIC = 1.5 * 2 ** 52


class F4Type(types.Type):
    def __init__(self):
        super().__init__(name="F4f64")


F4 = F4Type()


@register_model(F4Type)
class _F4Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _VD)


def _is_array(t, *dtypes):
    return (isinstance(t, types.Array) and t.ndim == 1 and t.layout == "C"
            and t.dtype in (dtypes or (types.float64, types.uint64)))


def _ptr(context, builder, aryty, ary, idx, vty):
    data = context.make_array(aryty)(context, builder, ary).data
    return builder.bitcast(builder.gep(data, [idx]), vty.as_pointer())


def _from_u52(builder, v):
    v = builder.or_(v, ir.Constant(v.type, [_EXP52] * v.type.count))
    v = builder.bitcast(v, ir.VectorType(_D, v.type.count))
    return builder.fsub(v, ir.Constant(v.type, [_TWO52] * v.type.count))


def _from_i51(builder, v):
    # 1.5*2^52 + x lies in [2^52, 2^53) for |x| < 2^51, where the ulp is 1, and its bits are
    # those of 1.5*2^52 plus x in two's complement: one integer add builds the double
    v = builder.add(v, ir.Constant(v.type, [_MAGIC_BITS] * v.type.count))
    v = builder.bitcast(v, ir.VectorType(_D, v.type.count))
    return builder.fsub(v, ir.Constant(v.type, [_MAGIC] * v.type.count))


def _splat(builder, x, count=4):
    vty = ir.VectorType(x.type, count)
    v = builder.insert_element(ir.Constant(vty, ir.Undefined), x, ir.Constant(_I32, 0))
    return builder.shuffle_vector(v, ir.Constant(vty, ir.Undefined),
                                  ir.Constant(ir.VectorType(_I32, count), [0] * count))


@intrinsic
def fload(typingctx, ary, idx):
    """ary[idx : idx + 4] as float64 lanes (exact for uint64 values below 2^52 and int64
    values below 2^51 in magnitude)."""
    if not ((_is_array(ary) or _is_array(ary, types.int64)) and isinstance(idx, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        dt = sig.args[0].dtype
        if dt == types.float64:
            return builder.load(_ptr(context, builder, sig.args[0], args[0], args[1], _VD),
                                align=8)
        v = builder.load(_ptr(context, builder, sig.args[0], args[0], args[1], _VI), align=8)
        return _from_i51(builder, v) if dt == types.int64 else _from_u52(builder, v)

    return F4(ary, idx), codegen


@intrinsic
def fload_dup2(typingctx, ary, idx):
    """(ary[idx], ary[idx], ary[idx + 1], ary[idx + 1]) as float64 lanes."""
    if not (_is_array(ary) and isinstance(idx, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        f64 = sig.args[0].dtype == types.float64
        v = builder.load(_ptr(context, builder, sig.args[0], args[0], args[1],
                              ir.VectorType(_D if f64 else _I64, 2)), align=8)
        if not f64:
            v = _from_u52(builder, v)
        return builder.shuffle_vector(v, ir.Constant(v.type, ir.Undefined),
                                      ir.Constant(ir.VectorType(_I32, 4), [0, 0, 1, 1]))

    return F4(ary, idx), codegen


@intrinsic
def fstore(typingctx, ary, idx, v):
    """ary[idx : idx + 4] = v; a uint64 array takes integer-valued lanes in [0, 2^52)."""
    if not (_is_array(ary) and isinstance(idx, types.Integer) and v == F4):
        return None

    def codegen(context, builder, sig, args):
        x = args[2]
        if sig.args[0].dtype == types.float64:
            builder.store(x, _ptr(context, builder, sig.args[0], args[0], args[1], _VD),
                          align=8)
        else:
            # x + 2^52 lies in [2^52, 2^53), where the ulp is 1: its low 52 bits are x
            x = builder.fadd(x, ir.Constant(_VD, [_TWO52] * 4))
            x = builder.sub(builder.bitcast(x, _VI), ir.Constant(_VI, [_EXP52] * 4))
            builder.store(x, _ptr(context, builder, sig.args[0], args[0], args[1], _VI),
                          align=8)
        return context.get_dummy_value()

    return types.void(ary, idx, v), codegen


@intrinsic
def fbcast(typingctx, x):
    """All four lanes equal to the float64 x."""
    if x != types.float64:
        return None

    def codegen(context, builder, sig, args):
        return _splat(builder, args[0])

    return F4(x), codegen


def _binop(name, fn):
    def typer(typingctx, a, b):
        if a != F4 or b != F4:
            return None

        def codegen(context, builder, sig, args):
            return fn(builder, args[0], args[1])

        return F4(a, b), codegen

    typer.__name__ = typer.__qualname__ = name
    return typer


fadd = intrinsic(_binop("fadd", lambda b, x, y: b.fadd(x, y)))
fsub = intrinsic(_binop("fsub", lambda b, x, y: b.fsub(x, y)))
fmul = intrinsic(_binop("fmul", lambda b, x, y: b.fmul(x, y)))


def _fma_v4(builder):
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(_VD, [_VD, _VD, _VD]),
                                          "llvm.fma.v4f64")


@intrinsic
def ffma(typingctx, a, b, c):
    """a * b + c lane-wise with a single rounding (llvm.fma)."""
    if not (a == b == c == F4):
        return None

    def codegen(context, builder, sig, args):
        fn = _fma_v4(builder)
        return builder.call(fn, list(args))

    return F4(a, b, c), codegen


@intrinsic
def fnfma(typingctx, a, b, c):
    """c - a * b lane-wise with a single rounding (llvm.fma of -a)."""
    if not (a == b == c == F4):
        return None

    def codegen(context, builder, sig, args):
        fn = _fma_v4(builder)
        return builder.call(fn, [builder.fneg(args[0]), args[1], args[2]])

    return F4(a, b, c), codegen


@intrinsic
def frint(typingctx, a):
    """Each lane rounded to the nearest integer, ties to even (llvm.rint)."""
    if a != F4:
        return None

    def codegen(context, builder, sig, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_VD, [_VD]),
                                            "llvm.rint.v4f64")
        return builder.call(fn, [args[0]])

    return F4(a), codegen


@intrinsic
def fadd_if_neg(typingctx, a, b):
    """a + b in the lanes where a < 0, a elsewhere."""
    if a != F4 or b != F4:
        return None

    def codegen(context, builder, sig, args):
        neg = builder.fcmp_ordered("<", args[0], ir.Constant(_VD, [0.0] * 4))
        return builder.select(neg, builder.fadd(args[0], args[1]), args[0])

    return F4(a, b), codegen


def _shuffle(name, mask):
    mask = list(mask)

    def typer(typingctx, a, b):
        if a != F4 or b != F4:
            return None

        def codegen(context, builder, sig, args):
            return builder.shuffle_vector(args[0], args[1],
                                          ir.Constant(ir.VectorType(_I32, 4), mask))

        return F4(a, b), codegen

    typer.__name__ = typer.__qualname__ = name
    return typer


# Lane selections from the 8 lanes of (a, b): index < 4 takes a[i], else b[i - 4].
# lo2/hi2: pairs (a0 a1 b0 b1 / a2 a3 b2 b3); lo1/hi1: alternate lanes within pairs
# (a0 b0 a2 b2 / a1 b1 a3 b3); ilo/ihi: interleave (a0 b0 a1 b1 / a2 b2 a3 b3).
fshuf_lo2 = intrinsic(_shuffle("fshuf_lo2", (0, 1, 4, 5)))
fshuf_hi2 = intrinsic(_shuffle("fshuf_hi2", (2, 3, 6, 7)))
fshuf_lo1 = intrinsic(_shuffle("fshuf_lo1", (0, 4, 2, 6)))
fshuf_hi1 = intrinsic(_shuffle("fshuf_hi1", (1, 5, 3, 7)))
fshuf_ilo = intrinsic(_shuffle("fshuf_ilo", (0, 4, 1, 5)))
fshuf_ihi = intrinsic(_shuffle("fshuf_ihi", (2, 6, 3, 7)))
fshuf_even = intrinsic(_shuffle("fshuf_even", (0, 2, 4, 6)))
fshuf_odd = intrinsic(_shuffle("fshuf_odd", (1, 3, 5, 7)))
