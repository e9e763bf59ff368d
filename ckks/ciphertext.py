"""Ciphertext and Plaintext: RNS polynomials in NTT form with their level and scale."""
import numpy as np


class _Poly:
    __slots__ = ("data", "level", "scale", "context_id")

    def __init__(self, data: np.ndarray, level: int, scale: float, context_id: bytes):
        self.data = data
        self.level = int(level)
        self.scale = float(scale)
        self.context_id = context_id

    @property
    def limbs(self) -> int:
        return self.level + 1


class Plaintext(_Poly):
    """An encoded vector: ``data`` is (level+1, N) uint64 in NTT form."""

    __slots__ = ()

    def __repr__(self):
        return f"Plaintext(level={self.level}, scale=2^{np.log2(self.scale):.2f})"

    def to_bytes(self) -> bytes:
        from .serialization import dump_plaintext
        return dump_plaintext(self)

    @staticmethod
    def from_bytes(context, data: bytes) -> "Plaintext":
        from .serialization import load_plaintext
        return load_plaintext(context, data)


class Ciphertext(_Poly):
    """An encryption: ``data`` is (size, level+1, N) uint64 in NTT form, size 2 (or 3 after a
    multiplication before relinearization); decrypts as sum_i data[i] * s^i."""

    __slots__ = ()

    @property
    def size(self) -> int:
        return self.data.shape[0]

    def copy(self) -> "Ciphertext":
        return Ciphertext(self.data.copy(), self.level, self.scale, self.context_id)

    def __repr__(self):
        return f"Ciphertext(size={self.size}, level={self.level}, scale=2^{np.log2(self.scale):.2f})"

    def to_bytes(self) -> bytes:
        from .serialization import dump_ciphertext
        return dump_ciphertext(self)

    @staticmethod
    def from_bytes(context, data: bytes) -> "Ciphertext":
        from .serialization import load_ciphertext
        return load_ciphertext(context, data)
