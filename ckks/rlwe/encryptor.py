"""Public-key and symmetric (secret-key) encryption."""
import numpy as np

from kernels import modarith
from ..ciphertext import Ciphertext, Plaintext
from ..errors import ContextMismatchError
from ..ring import sampling


class Encryptor:
    """Encrypts plaintexts or raw vectors (encoded at the top level and default scale).

    With a ``PublicKey`` anyone can encrypt; with a ``SecretKey`` (the client) encryption is
    symmetric: fresher noise and no public key needed.
    """

    def __init__(self, context, key):
        from .keys import PublicKey, SecretKey
        if not isinstance(key, (PublicKey, SecretKey)):
            raise TypeError("Encryptor needs a PublicKey or a SecretKey")
        if key.context_id != context.fingerprint:
            raise ContextMismatchError("key belongs to another context")
        self.ctx = context
        self.key = key
        self._symmetric = isinstance(key, SecretKey)

    def encrypt(self, values, level: int = None, scale: float = None) -> Ciphertext:
        if isinstance(values, Plaintext):
            if values.context_id != self.ctx.fingerprint:
                raise ContextMismatchError("plaintext belongs to another context")
            pt = values
        else:
            pt = self.ctx.encoder.encode(values, level=level, scale=scale)
        return self.encrypt_plaintext(pt)

    def _small(self, sample, rows):
        ctx = self.ctx
        out = np.empty((len(rows), ctx.n), dtype=np.uint64)
        modarith.reduce_signed(sample(sampling.new_seed(), ctx.n), ctx.q_all[rows], out)
        ctx.ntt(out, rows)
        return out

    def encrypt_plaintext(self, pt: Plaintext) -> Ciphertext:
        ctx = self.ctx
        rows = ctx.q_rows(pt.level)
        q = ctx.q_all[rows]
        k = len(rows)
        ct = np.empty((2, k, ctx.n), dtype=np.uint64)
        if self._symmetric:
            s = self.key.data[:k]
            a = sampling.uniform_mod(sampling.new_seed(), q, ctx.n)
            e = self._small(sampling.gaussian, rows)
            modarith.mul(a, s, q, ct[0])
            modarith.sub(e, ct[0], q, ct[0])
            ct[1] = a
        else:
            b, a = self.key.data[0, :k], self.key.data[1, :k]
            u = self._small(sampling.ternary, rows)
            modarith.mul(u, b, q, ct[0])
            modarith.mul(u, a, q, ct[1])
            modarith.add(ct[0], self._small(sampling.gaussian, rows), q, ct[0])
            modarith.add(ct[1], self._small(sampling.gaussian, rows), q, ct[1])
        modarith.add(ct[0], pt.data, q, ct[0])
        return Ciphertext(ct, pt.level, pt.scale, ctx.fingerprint)
