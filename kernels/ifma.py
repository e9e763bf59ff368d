"""AVX-512 vectors of eight uint64 lanes for Numba, with the IFMA 52-bit multiply-adds.

``V8`` is a Numba type whose LLVM representation is ``<8 x i64>``; the intrinsics below emit
plain LLVM vector IR (loads, stores, adds, shuffles, unsigned min) and calls to
``llvm.x86.avx512.vpmadd52{l,h}.uq.512``.  Everything is module level so ``cache=True`` works
for the kernels that use them.

Nothing here compiles until a kernel that uses it is first called: only call those kernels
when ``kernels.cpu.HAS_IFMA`` is true (the instructions would fault otherwise).
"""
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.extending import intrinsic, models, register_model

_I64 = ir.IntType(64)
_VEC = ir.VectorType(_I64, 8)
_I32 = ir.IntType(32)


class V8Type(types.Type):
    def __init__(self):
        super().__init__(name="V8u64")


V8 = V8Type()


@register_model(V8Type)
class _V8Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _VEC)


def _vec_ptr(context, builder, aryty, ary, idx):
    data = context.make_array(aryty)(context, builder, ary).data
    p = builder.gep(data, [idx])
    return builder.bitcast(p, _VEC.as_pointer())


def _is_u64_array(t):
    # C layout only: the vector loads and stores assume unit stride
    return isinstance(t, types.Array) and t.dtype == types.uint64 and t.layout == "C"


@intrinsic
def vload(typingctx, ary, idx):
    """Eight consecutive lanes ary[idx : idx + 8] (no bounds check; 8-byte alignment)."""
    if not (_is_u64_array(ary) and isinstance(idx, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        ptr = _vec_ptr(context, builder, sig.args[0], args[0], args[1])
        return builder.load(ptr, align=8)

    return V8(ary, idx), codegen


@intrinsic
def vstore(typingctx, ary, idx, v):
    """ary[idx : idx + 8] = v (no bounds check)."""
    if not (_is_u64_array(ary) and isinstance(idx, types.Integer) and v == V8):
        return None

    def codegen(context, builder, sig, args):
        ptr = _vec_ptr(context, builder, sig.args[0], args[0], args[1])
        builder.store(args[2], ptr, align=8)
        return context.get_dummy_value()

    return types.void(ary, idx, v), codegen


@intrinsic
def vbcast(typingctx, x):
    """All eight lanes equal to the uint64 x."""
    if not isinstance(x, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        v = builder.insert_element(ir.Constant(_VEC, ir.Undefined), args[0], ir.Constant(_I32, 0))
        return builder.shuffle_vector(v, ir.Constant(_VEC, ir.Undefined),
                                      ir.Constant(ir.VectorType(_I32, 8), [0] * 8))

    return V8(x), codegen


@intrinsic
def vstore_nt(typingctx, ary, idx, v):
    """ary[idx : idx + 8] = v with a non-temporal store (bypasses the caches: for large
    outputs that are not read back soon).  The address must be 64-byte aligned."""
    if not (_is_u64_array(ary) and isinstance(idx, types.Integer) and v == V8):
        return None

    def codegen(context, builder, sig, args):
        ptr = _vec_ptr(context, builder, sig.args[0], args[0], args[1])
        st = builder.store(args[2], ptr, align=64)
        st.set_metadata("nontemporal", builder.module.add_metadata([ir.Constant(_I32, 1)]))
        return context.get_dummy_value()

    return types.void(ary, idx, v), codegen


@intrinsic
def vprefetch(typingctx, ary, idx):
    """Hint the cache line holding ary[idx] into L1 (``prefetch`` never faults, so idx may run
    past the end of a row)."""
    if not (_is_u64_array(ary) and isinstance(idx, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        i8p = ir.IntType(8).as_pointer()
        p = builder.bitcast(builder.gep(data, [args[1]]), i8p)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, _I32, _I32, _I32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        # read, highest temporal locality, data cache
        builder.call(fn, [p, ir.Constant(_I32, 0), ir.Constant(_I32, 3), ir.Constant(_I32, 1)])
        return context.get_dummy_value()

    return types.void(ary, idx), codegen


@intrinsic
def lanes3(typingctx, code):
    """Lane l = (code >> 3l) & 7 for l = 0..7 (eight 3-bit lane indices packed in a uint64)."""
    if not isinstance(code, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        v = builder.insert_element(ir.Constant(_VEC, ir.Undefined), args[0], ir.Constant(_I32, 0))
        v = builder.shuffle_vector(v, ir.Constant(_VEC, ir.Undefined),
                                   ir.Constant(ir.VectorType(_I32, 8), [0] * 8))
        v = builder.lshr(v, ir.Constant(_VEC, [3 * lane for lane in range(8)]))
        return builder.and_(v, ir.Constant(_VEC, [7] * 8))

    return V8(code), codegen


def _binop(name, fn):
    def typer(typingctx, a, b):
        if a != V8 or b != V8:
            return None

        def codegen(context, builder, sig, args):
            return fn(builder, args[0], args[1])

        return V8(a, b), codegen

    typer.__name__ = typer.__qualname__ = name
    return typer


# Module-level intrinsics (one per operation) so cached kernels can find them by name.
vadd = intrinsic(_binop("vadd", lambda b, x, y: b.add(x, y)))
vsub = intrinsic(_binop("vsub", lambda b, x, y: b.sub(x, y)))
vand = intrinsic(_binop("vand", lambda b, x, y: b.and_(x, y)))
vmin = intrinsic(_binop("vmin", lambda b, x, y: b.select(b.icmp_unsigned("<", x, y), x, y)))


def _madd52(label, name):
    def typer(typingctx, acc, a, b):
        if acc != V8 or a != V8 or b != V8:
            return None

        def codegen(context, builder, sig, args):
            fnty = ir.FunctionType(_VEC, [_VEC, _VEC, _VEC])
            fn = cgutils.get_or_insert_function(builder.module, fnty, name)
            return builder.call(fn, list(args))

        return V8(acc, a, b), codegen

    typer.__name__ = typer.__qualname__ = label
    return typer


# acc + low / high 52 bits of the 104-bit product of the low 52 bits of a and b, lane-wise.
madd52lo = intrinsic(_madd52("madd52lo", "llvm.x86.avx512.vpmadd52l.uq.512"))
madd52hi = intrinsic(_madd52("madd52hi", "llvm.x86.avx512.vpmadd52h.uq.512"))


def _shuffle(name, mask):
    mask = list(mask)

    def typer(typingctx, a, b):
        if a != V8 or b != V8:
            return None

        def codegen(context, builder, sig, args):
            return builder.shuffle_vector(args[0], args[1],
                                          ir.Constant(ir.VectorType(_I32, 8), mask))

        return V8(a, b), codegen

    typer.__name__ = typer.__qualname__ = name
    return typer


# Lane selections from the 16 lanes of (a, b): index < 8 takes a[i], else b[i - 8].
# lo4/hi4: halves; lo2/hi2: pairs; lo1/hi1: single lanes; even/odd: deinterleave;
# ilo/ihi: interleave.
shuf_lo4 = intrinsic(_shuffle("shuf_lo4", (0, 1, 2, 3, 8, 9, 10, 11)))
shuf_hi4 = intrinsic(_shuffle("shuf_hi4", (4, 5, 6, 7, 12, 13, 14, 15)))
shuf_lo2 = intrinsic(_shuffle("shuf_lo2", (0, 1, 8, 9, 4, 5, 12, 13)))
shuf_hi2 = intrinsic(_shuffle("shuf_hi2", (2, 3, 10, 11, 6, 7, 14, 15)))
shuf_lo1 = intrinsic(_shuffle("shuf_lo1", (0, 8, 2, 10, 4, 12, 6, 14)))
shuf_hi1 = intrinsic(_shuffle("shuf_hi1", (1, 9, 3, 11, 5, 13, 7, 15)))
shuf_even = intrinsic(_shuffle("shuf_even", (0, 2, 4, 6, 8, 10, 12, 14)))
shuf_odd = intrinsic(_shuffle("shuf_odd", (1, 3, 5, 7, 9, 11, 13, 15)))
shuf_ilo = intrinsic(_shuffle("shuf_ilo", (0, 8, 1, 9, 2, 10, 3, 11)))
shuf_ihi = intrinsic(_shuffle("shuf_ihi", (4, 12, 5, 13, 6, 14, 7, 15)))


def _permute(name, mask):
    mask = list(mask)

    def typer(typingctx, a):
        if a != V8:
            return None

        def codegen(context, builder, sig, args):
            return builder.shuffle_vector(args[0], ir.Constant(_VEC, ir.Undefined),
                                          ir.Constant(ir.VectorType(_I32, 8), mask))

        return V8(a), codegen

    typer.__name__ = typer.__qualname__ = name
    return typer


# Lane spreads of one vector (twiddles of the in-register NTT stages).
spread4 = intrinsic(_permute("spread4", (0, 0, 0, 0, 1, 1, 1, 1)))
spread2 = intrinsic(_permute("spread2", (0, 0, 1, 1, 2, 2, 3, 3)))


# ---------------------------------------------------------------------------------------------
# Generic scalar intrinsics (plain LLVM, valid on every CPU; used by the portable kernels)
# ---------------------------------------------------------------------------------------------

@intrinsic
def as_f64(typingctx, x):
    """The uint64 bit pattern x reinterpreted as a float64."""
    if x != types.uint64:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(x), codegen


@intrinsic
def as_u64(typingctx, x):
    """The float64 x's bit pattern as a uint64."""
    if x != types.float64:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], _I64)

    return types.uint64(x), codegen


@intrinsic
def fma(typingctx, a, b, c):
    """a * b + c with a single rounding (llvm.fma.f64: one instruction where the CPU has FMA,
    a correct library call otherwise)."""
    if not (a == b == c == types.float64):
        return None

    def codegen(context, builder, sig, args):
        d = ir.DoubleType()
        fn = builder.module.declare_intrinsic("llvm.fma", [d], ir.FunctionType(d, [d, d, d]))
        return builder.call(fn, list(args))

    return types.float64(a, b, c), codegen
