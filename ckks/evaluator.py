"""Homomorphic operations on ciphertexts (SEAL's names, explicit rescaling).

Scales: ``multiply`` multiplies scales; ``rescale`` divides by the dropped prime.  A constant
or vector multiplied into a ciphertext is encoded at the scale of the prime the next rescale
drops, so "multiply then rescale" by a plaintext value leaves the scale exactly unchanged.
Additions need equal scales (up to float rounding) and match levels by dropping primes.
"""
import functools
import numbers
import time

import numpy as np

from kernels import modarith
from kernels.automorphism import galois_permutation
from kernels.rescale import rescale as _rescale_kernel
from .ciphertext import Ciphertext, Plaintext
from .errors import ContextMismatchError, KeyMissingError, LevelError, ScaleMismatchError
from .rlwe.keys import GaloisKeys, RelinKey, conjugation_element, galois_element
from .rlwe.keyswitch import KeySwitcher

_SCALE_RTOL = 2.0 ** -40  # two scales that differ below this are the same number up to rounding


def _op(name):
    """Record the outermost evaluator call in the trace, when one is attached."""
    def deco(fn):
        @functools.wraps(fn)
        def wrapper(self, *args, **kwargs):
            if self.trace is None or self._depth:
                return fn(self, *args, **kwargs)
            self._depth += 1
            try:
                t0 = time.perf_counter()
                out = fn(self, *args, **kwargs)
                seconds = time.perf_counter() - t0
            finally:
                self._depth -= 1
            self.trace.record(name, args, kwargs, out, seconds)
            return out
        return wrapper
    return deco


class Evaluator:
    def __init__(self, context, relin_key: RelinKey = None, galois_keys: GaloisKeys = None, trace=None):
        for key in (relin_key, galois_keys):
            if key is not None and key.context_id != context.fingerprint:
                raise ContextMismatchError("evaluation key belongs to another context")
        self.ctx = context
        self.relin_key = relin_key
        self.galois_keys = galois_keys
        self.trace = trace
        self._depth = 0
        self._ks = KeySwitcher(context)
        self._perms = {}
        self._q_last_inv = {}

    # -- checks and conversions ----------------------------------------------------------
    def _check(self, x):
        if not isinstance(x, (Ciphertext, Plaintext)):
            raise TypeError(f"expected a Ciphertext or Plaintext, got {type(x).__name__}")
        if x.context_id != self.ctx.fingerprint:
            raise ContextMismatchError("operand belongs to another context (different parameters)")
        return x

    def _q(self, level):
        return self.ctx.q_all[: level + 1]

    @_op("drop_level")
    def drop_level(self, x, level: int):
        """The same value at a lower level (drops primes; exact, scale unchanged)."""
        self._check(x)
        level = self.ctx.check_level(level)
        if level > x.level:
            raise LevelError(f"cannot raise level {x.level} to {level}")
        if level == x.level:
            return x
        if isinstance(x, Ciphertext):
            return Ciphertext(x.data[:, : level + 1].copy(), level, x.scale, x.context_id)
        return Plaintext(x.data[: level + 1].copy(), level, x.scale, x.context_id)

    def _match(self, a, b):
        """Bring two operands to one level and one scale, exactly, or raise."""
        level = min(a.level, b.level)
        a, b = self.drop_level(a, level), self.drop_level(b, level)
        if abs(a.scale / b.scale - 1.0) <= _SCALE_RTOL:
            return a, b
        hi, lo = (a, b) if a.scale > b.scale else (b, a)
        ratio = hi.scale / lo.scale
        r = round(ratio)
        if isinstance(lo, Ciphertext) and r >= 2 and abs(ratio / r - 1.0) <= _SCALE_RTOL:
            lo = self._mul_int(lo, r)  # exact: multiplies value and scale by the integer r
            return (hi, lo) if hi is a else (lo, hi)
        raise ScaleMismatchError(
            f"scales 2^{np.log2(a.scale):.4f} and 2^{np.log2(b.scale):.4f} differ and their ratio "
            f"{ratio:.6g} is not an integer; rescale or encode the plaintext at the ciphertext's scale")

    def _checked_scale(self, scale: float, level: int) -> float:
        """A product's scale must stay well below Q_level or decryption wraps around."""
        log_q = self.ctx.log_q(level)
        if np.log2(scale) >= log_q - 2:
            raise LevelError(
                f"scale 2^{np.log2(scale):.1f} would exceed the modulus 2^{log_q:.1f} left at level {level}: "
                "rescale before multiplying again")
        return scale

    def _mul_int(self, ct, r: int):
        q = self._q(ct.level)
        c = np.array([r % int(x) for x in q], dtype=np.uint64)
        out = np.empty_like(ct.data)
        for i in range(ct.size):
            modarith.mul_scalar(ct.data[i], c, q, out[i])
        return Ciphertext(out, ct.level, self._checked_scale(ct.scale * r, ct.level), ct.context_id)

    def _as_operand(self, ct, other, for_multiply: bool):
        """Plaintext/Ciphertext pass through; numbers and arrays are encoded for ``ct``."""
        if isinstance(other, (Ciphertext, Plaintext)):
            return self._check(other)
        scale = self._plain_scale(ct) if for_multiply else ct.scale
        if isinstance(other, numbers.Number) and not isinstance(other, bool):
            return _Constant(other, scale)
        arr = np.asarray(other)
        if arr.dtype.kind not in "iufc":
            raise TypeError(f"cannot use {type(other).__name__} as an operand")
        return self.ctx.encoder.encode(arr.ravel() if arr.ndim else arr.reshape(1), level=ct.level, scale=scale)

    def _plain_scale(self, ct) -> float:
        """Scale for a multiplied-in constant: the prime the next rescale divides by."""
        return float(self.ctx.primes[ct.level]) if ct.level > 0 else self.ctx.params.scale

    def _constant_residues(self, value, scale: float, level: int) -> np.ndarray:
        v = complex(value)
        if v.imag != 0:
            raise TypeError("complex constants: encode them as a vector")
        c = int(round(v.real * scale))
        return np.array([c % int(x) for x in self._q(level)], dtype=np.uint64)

    # -- addition ------------------------------------------------------------------------
    @_op("add")
    def add(self, a: Ciphertext, b):
        return self._add_sub(a, b)

    @_op("sub")
    def sub(self, a: Ciphertext, b):
        return self._add_sub(a, b, subtract=True)

    def _add_sub(self, a, b, subtract=False):
        self._check(a)
        if not isinstance(a, Ciphertext):
            raise TypeError("the first operand must be a Ciphertext")
        b = self._as_operand(a, b, for_multiply=False)
        op = modarith.sub if subtract else modarith.add
        if isinstance(b, _Constant):
            c = self._constant_residues(b.value, a.scale, a.level)
            if subtract:
                c = (self._q(a.level) - c) % self._q(a.level)
            out = a.data.copy()
            modarith.add_scalar(a.data[0], c, self._q(a.level), out[0])
            return Ciphertext(out, a.level, a.scale, a.context_id)
        a, b = self._match(a, b)
        q = self._q(a.level)
        if isinstance(b, Plaintext):
            out = a.data.copy()
            op(a.data[0], b.data, q, out[0])
            return Ciphertext(out, a.level, a.scale, a.context_id)
        big, small = (a, b) if a.size >= b.size else (b, a)
        out = np.empty_like(big.data)
        for i in range(big.size):
            if i < small.size:
                op(a.data[i], b.data[i], q, out[i])
            elif big is a:
                out[i] = a.data[i]
            elif subtract:
                modarith.neg(b.data[i], q, out[i])
            else:
                out[i] = b.data[i]
        return Ciphertext(out, a.level, a.scale, a.context_id)

    @_op("negate")
    def negate(self, a: Ciphertext):
        self._check(a)
        out = np.empty_like(a.data)
        for i in range(a.size):
            modarith.neg(a.data[i], self._q(a.level), out[i])
        return Ciphertext(out, a.level, a.scale, a.context_id)

    # -- multiplication ------------------------------------------------------------------
    @_op("multiply")
    def multiply(self, a: Ciphertext, b, relinearize: bool = True):
        """a*b; ciphertext products are relinearized unless ``relinearize=False``.

        Numbers and vectors are encoded at the scale of the prime the next rescale drops."""
        self._check(a)
        b = self._as_operand(a, b, for_multiply=True)
        if isinstance(b, _Constant):
            c = self._constant_residues(b.value, b.scale, a.level)
            out = np.empty_like(a.data)
            for i in range(a.size):
                modarith.mul_scalar(a.data[i], c, self._q(a.level), out[i])
            return Ciphertext(out, a.level, self._checked_scale(a.scale * b.scale, a.level), a.context_id)
        level = min(a.level, b.level)
        a, b = self.drop_level(a, level), self.drop_level(b, level)
        q = self._q(level)
        if isinstance(b, Plaintext):
            out = np.empty_like(a.data)
            for i in range(a.size):
                modarith.mul(a.data[i], b.data, q, out[i])
            return Ciphertext(out, level, self._checked_scale(a.scale * b.scale, level), a.context_id)
        if a.size != 2 or b.size != 2:
            raise ValueError("relinearize ciphertexts before multiplying them again")
        out = np.empty((3,) + a.data.shape[1:], dtype=np.uint64)
        modarith.mul(a.data[0], b.data[0], q, out[0])
        modarith.mul(a.data[0], b.data[1], q, out[1])
        modarith.mul_add(a.data[1], b.data[0], q, out[1])
        modarith.mul(a.data[1], b.data[1], q, out[2])
        ct = Ciphertext(out, level, self._checked_scale(a.scale * b.scale, level), a.context_id)
        return self._relinearize(ct) if relinearize else ct

    @_op("square")
    def square(self, a: Ciphertext, relinearize: bool = True):
        self._check(a)
        if a.size != 2:
            raise ValueError("relinearize before squaring")
        q = self._q(a.level)
        out = np.empty((3,) + a.data.shape[1:], dtype=np.uint64)
        modarith.mul(a.data[0], a.data[0], q, out[0])
        modarith.mul(a.data[0], a.data[1], q, out[1])
        modarith.add(out[1], out[1], q, out[1])
        modarith.mul(a.data[1], a.data[1], q, out[2])
        ct = Ciphertext(out, a.level, self._checked_scale(a.scale * a.scale, a.level), a.context_id)
        return self._relinearize(ct) if relinearize else ct

    @_op("relinearize")
    def relinearize(self, a: Ciphertext):
        self._check(a)
        return self._relinearize(a)

    def _relinearize(self, a):
        if a.size == 2:
            return a
        if a.size != 3:
            raise ValueError(f"cannot relinearize a ciphertext of size {a.size}")
        if self.relin_key is None:
            raise KeyMissingError("no relinearization key: pass relin_key= to the Evaluator")
        # key switch of c_2 with (c_0, c_1) added in the same kernel
        ext = self._ks.decompose(a.data[2], a.level)
        out = self._ks.switch_ext_add(ext, self.relin_key.data, a.level, a.data[:2])
        return Ciphertext(out, a.level, a.scale, a.context_id)

    # -- levels --------------------------------------------------------------------------
    @_op("rescale")
    def rescale(self, a: Ciphertext):
        """Divide by the last prime q_l (rounding): level - 1, scale / q_l."""
        self._check(a)
        if a.level == 0:
            raise LevelError("no level left to rescale (level 0)")
        level = a.level
        if level not in self._q_last_inv:
            ql = self.ctx.primes[level]
            self._q_last_inv[level] = np.array([pow(ql, -1, p) for p in self.ctx.primes[:level]], dtype=np.uint64)
        rows = self.ctx.q_rows(level)
        out = np.empty((a.size, level, self.ctx.n), dtype=np.uint64)
        for i in range(a.size):
            _rescale_kernel(a.data[i], rows, self.ctx.tables, self._q_last_inv[level], out[i])
        return Ciphertext(out, level - 1, a.scale / self.ctx.primes[level], a.context_id)

    mod_switch_to = drop_level  # SEAL's name

    # -- rotations -----------------------------------------------------------------------
    def _perm(self, g):
        if g not in self._perms:
            self._perms[g] = galois_permutation(self.ctx.n, g)
        return self._perms[g]

    def _galois_key(self, g, what):
        if self.galois_keys is None or g not in self.galois_keys:
            raise KeyMissingError(f"no Galois key for {what}: generate it with KeyGenerator.galois_keys")
        return self.galois_keys.get(g)

    def _apply_galois(self, a, g, key, ext=None):
        """sigma_g(a) given the digits of c_1 (computed here unless hoisted)."""
        level = a.level
        if ext is None:
            ext = self._ks.decompose(a.data[1], level)
        # inner product, ModDown, + c_0 and the permutation in two fused parallel regions
        out = self._ks.switch_ext_add(ext, key.data, level, a.data[:1], self._perm(g))
        return Ciphertext(out, level, a.scale, a.context_id)

    def _rotation_input(self, a):
        self._check(a)
        if not isinstance(a, Ciphertext) or a.size != 2:
            raise ValueError("rotate needs a relinearized (size 2) Ciphertext")

    @_op("rotate")
    def rotate(self, a: Ciphertext, step: int):
        """Slot i+step moves to slot i (``np.roll(v, -step)``)."""
        self._rotation_input(a)
        step = int(step) % self.ctx.slots
        if step == 0:
            return a.copy()
        g = galois_element(step, self.ctx.n)
        return self._apply_galois(a, g, self._galois_key(g, f"rotation by {step}"))

    @_op("rotate_hoisted")
    def rotate_hoisted(self, a: Ciphertext, steps) -> list:
        """Rotations of one ciphertext to many steps, decomposing c_1 only once."""
        self._rotation_input(a)
        steps = [int(s) % self.ctx.slots for s in steps]
        keys = {s: self._galois_key(galois_element(s, self.ctx.n), f"rotation by {s}") for s in steps if s}
        if not keys:
            return [a.copy() for _ in steps]
        # one ModUp, then every key through the batched kernels (digits loaded once per row)
        ext = self._ks.decompose(a.data[1], a.level)
        order = list(keys)
        data = self._ks.rotate_ext_many(ext, [keys[s].data for s in order], a.data[0],
                                        [self._perm(galois_element(s, self.ctx.n)) for s in order],
                                        a.level)
        index = {s: i for i, s in enumerate(order)}
        out, used = [], set()
        for s in steps:
            if s == 0:
                out.append(a.copy())
                continue
            d = data[index[s]]
            out.append(Ciphertext(d.copy() if s in used else d, a.level, a.scale, a.context_id))
            used.add(s)
        return out

    @_op("conjugate")
    def conjugate(self, a: Ciphertext):
        self._rotation_input(a)
        g = conjugation_element(self.ctx.n)
        return self._apply_galois(a, g, self._galois_key(g, "conjugation"))

    @_op("sum_slots")
    def sum_slots(self, a: Ciphertext, count: int = None):
        """Slot i becomes the sum of slots i..i+count-1 (cyclically); count a power of two.

        Needs rotation keys for 1, 2, 4, ..., count/2."""
        count = self.ctx.slots if count is None else int(count)
        if count < 1 or count & (count - 1) or count > self.ctx.slots:
            raise ValueError(f"count must be a power of two in 1..{self.ctx.slots}")
        step = 1
        while step < count:
            a = self.add(a, self.rotate(a, step))
            step *= 2
        return a


class _Constant:
    __slots__ = ("value", "scale")

    def __init__(self, value, scale):
        self.value = value
        self.scale = scale
