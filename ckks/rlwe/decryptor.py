"""Decryption (needs the secret key; lives on the client)."""
import numpy as np

from kernels import modarith
from ..ciphertext import Ciphertext, Plaintext
from ..errors import ContextMismatchError


class Decryptor:
    def __init__(self, context, secret_key):
        from .keys import SecretKey
        if not isinstance(secret_key, SecretKey):
            raise TypeError("Decryptor needs a SecretKey")
        if secret_key.context_id != context.fingerprint:
            raise ContextMismatchError("secret key belongs to another context")
        self.ctx = context
        self._sk = secret_key

    def decrypt_plaintext(self, ct: Ciphertext) -> Plaintext:
        """c_0 + c_1 s (+ c_2 s^2): the noisy scaled message, NTT form."""
        if not isinstance(ct, Ciphertext):
            raise TypeError(f"expected a Ciphertext, got {type(ct).__name__}")
        if ct.context_id != self.ctx.fingerprint:
            raise ContextMismatchError("ciphertext belongs to another context")
        k = ct.level + 1
        q = self.ctx.q_all[:k]
        s = self._sk.data[:k]
        acc = ct.data[ct.size - 1].copy()
        # Horner: ((c_{n-1} s + c_{n-2}) s + ...) + c_0
        for i in range(ct.size - 2, -1, -1):
            modarith.mul(acc, s, q, acc)
            modarith.add(acc, ct.data[i], q, acc)
        return Plaintext(acc, ct.level, ct.scale, ct.context_id)

    def decrypt(self, ct: Ciphertext, complex: bool = False) -> np.ndarray:
        """The N/2 slot values (real parts unless ``complex``)."""
        z = self.ctx.encoder.decode(self.decrypt_plaintext(ct))
        return z if complex else z.real
