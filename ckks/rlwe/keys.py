"""Keys and key generation.

Every key polynomial is stored in NTT form.  A key-switching key from secret s_from to s_to
holds, per digit j over all primes of Q and P, (b_j, a_j) with b_j = -a_j s_to + e_j +
P * g_j * s_from, where g_j is 1 modulo the primes of digit j and 0 modulo the others.
"""
import numpy as np

from kernels import modarith
from kernels.automorphism import galois_permutation, permute
from ..errors import ContextMismatchError, KeyMissingError
from ..ring import sampling


class SecretKey:
    """The ternary secret s (NTT form over every prime). Never leaves the client unless
    serialized with the explicit ``ckks.serialization.dump_secret_key``."""

    def __init__(self, data: np.ndarray, context_id: bytes):
        self.data = data
        self.context_id = context_id

    def __repr__(self):
        return "SecretKey(<hidden>)"

    def __reduce__(self):
        raise TypeError("SecretKey is not picklable; use ckks.serialization.dump_secret_key explicitly")


class PublicKey:
    def __init__(self, data: np.ndarray, context_id: bytes):
        self.data = data  # (2, L+1, N): (b, a) with b = -a s + e
        self.context_id = context_id

    def to_bytes(self) -> bytes:
        from ..serialization import dump_public_key
        return dump_public_key(self)

    @staticmethod
    def from_bytes(context, data: bytes) -> "PublicKey":
        from ..serialization import load_public_key
        return load_public_key(context, data)


class SwitchingKey:
    def __init__(self, data: np.ndarray, context_id: bytes):
        self.data = data  # (digits, 2, L+1+alpha, N)
        self.context_id = context_id


class RelinKey(SwitchingKey):
    """Switches s^2 to s."""

    def to_bytes(self) -> bytes:
        from ..serialization import dump_relin_key
        return dump_relin_key(self)

    @staticmethod
    def from_bytes(context, data: bytes) -> "RelinKey":
        from ..serialization import load_relin_key
        return load_relin_key(context, data)


class GaloisKeys:
    """Switching keys by Galois element.  The key for g switches s to sigma_g^-1(s), so a
    rotation key-switches first and applies the permutation once, after ModDown."""

    def __init__(self, keys: dict, context_id: bytes):
        self.keys = dict(keys)
        self.context_id = context_id

    def __contains__(self, g):
        return g in self.keys

    def get(self, g: int) -> SwitchingKey:
        try:
            return self.keys[g]
        except KeyError:
            raise KeyMissingError(f"no Galois key for element {g}") from None

    @property
    def elements(self):
        return sorted(self.keys)

    def to_bytes(self) -> bytes:
        from ..serialization import dump_galois_keys
        return dump_galois_keys(self)

    @staticmethod
    def from_bytes(context, data: bytes) -> "GaloisKeys":
        from ..serialization import load_galois_keys
        return load_galois_keys(context, data)


def galois_element(step: int, n: int) -> int:
    """5^step mod 2N: the automorphism that rotates slots left by ``step``."""
    slots = n // 2
    return pow(5, step % slots, 2 * n)


def conjugation_element(n: int) -> int:
    return 2 * n - 1


class KeyGenerator:
    """Creates the secret key and every key derived from it."""

    def __init__(self, context, secret_key: SecretKey = None):
        self.ctx = context
        if secret_key is None:
            secret_key = self._new_secret()
        elif secret_key.context_id != context.fingerprint:
            raise ContextMismatchError("secret key belongs to another context")
        self.secret_key = secret_key
        self._public_key = None

    def _new_secret(self) -> SecretKey:
        ctx = self.ctx
        rows = np.arange(len(ctx.primes), dtype=np.int64)
        s = np.empty((len(rows), ctx.n), dtype=np.uint64)
        modarith.reduce_signed(sampling.ternary(sampling.new_seed(), ctx.n), ctx.q_all, s)
        ctx.ntt(s, rows)
        return SecretKey(s, ctx.fingerprint)

    def _error(self, rows: np.ndarray) -> np.ndarray:
        ctx = self.ctx
        e = np.empty((len(rows), ctx.n), dtype=np.uint64)
        modarith.reduce_signed(sampling.gaussian(sampling.new_seed(), ctx.n), ctx.q_all[rows], e)
        ctx.ntt(e, rows)
        return e

    @property
    def public_key(self) -> PublicKey:
        if self._public_key is None:
            ctx = self.ctx
            rows = ctx.q_rows(ctx.max_level)
            q = ctx.q_all[rows]
            a = sampling.uniform_mod(sampling.new_seed(), q, ctx.n)
            b = self._error(rows)
            as_ = np.empty_like(a)
            modarith.mul(a, self.secret_key.data[rows], q, as_)
            modarith.sub(b, as_, q, b)
            self._public_key = PublicKey(np.stack([b, a]), ctx.fingerprint)
        return self._public_key

    def switching_key(self, s_from: np.ndarray, s_to: np.ndarray) -> np.ndarray:
        """(digits, 2, L+1+alpha, N) key data switching s_from to s_to (NTT form, all rows)."""
        ctx = self.ctx
        alpha = ctx.params.alpha
        rows = np.arange(len(ctx.primes), dtype=np.int64)
        q = ctx.q_all
        digits = -(-(ctx.max_level + 1) // alpha)
        out = np.empty((digits, 2, len(rows), ctx.n), dtype=np.uint64)
        p_mod = np.array([ctx.p_product % int(x) for x in q], dtype=np.uint64)
        for j in range(digits):
            a = sampling.uniform_mod(sampling.new_seed(), q, ctx.n)
            b = self._error(rows)
            tmp = np.empty_like(a)
            modarith.mul(a, s_to, q, tmp)
            modarith.sub(b, tmp, q, b)
            lo, hi = j * alpha, min((j + 1) * alpha, ctx.max_level + 1)
            gadget = np.zeros(len(rows), dtype=np.uint64)
            gadget[lo:hi] = p_mod[lo:hi]
            modarith.mul_scalar(s_from, gadget, q, tmp)
            modarith.add(b, tmp, q, b)
            out[j, 0] = b
            out[j, 1] = a
        return out

    def relin_key(self) -> RelinKey:
        ctx = self.ctx
        s = self.secret_key.data
        s2 = np.empty_like(s)
        modarith.mul(s, s, ctx.q_all, s2)
        return RelinKey(self.switching_key(s2, s), ctx.fingerprint)

    def galois_keys(self, steps=(), conjugate: bool = False) -> GaloisKeys:
        """Keys for rotations by each of ``steps`` (slots moving left) and, optionally,
        conjugation."""
        ctx = self.ctx
        elements = {galois_element(int(s), ctx.n) for s in steps}
        if conjugate:
            elements.add(conjugation_element(ctx.n))
        elements.discard(1)
        keys = {}
        s = self.secret_key.data
        for g in sorted(elements):
            g_inv = pow(g, -1, 2 * ctx.n)
            s_perm = np.empty_like(s)
            permute(s, galois_permutation(ctx.n, g_inv), s_perm)
            keys[g] = SwitchingKey(self.switching_key(s, s_perm), ctx.fingerprint)
        return GaloisKeys(keys, ctx.fingerprint)
