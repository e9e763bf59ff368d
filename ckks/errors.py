"""Exceptions raised by the CKKS engine."""


class CKKSError(Exception):
    """Base class of the engine's errors."""


class SecurityError(CKKSError):
    """Parameters below 128-bit security by the HE standard table."""


class SecurityWarning(UserWarning):
    """Insecure parameters were accepted because the caller opted out explicitly."""


class SerializationError(CKKSError, ValueError):
    """Bytes that do not decode to a valid object of this context."""


class ScaleMismatchError(CKKSError, ValueError):
    """Operands whose scales cannot be matched exactly."""


class LevelError(CKKSError, ValueError):
    """An operation that needs more levels than the operand has left."""


class KeyMissingError(CKKSError, KeyError):
    """An evaluation key (relinearization or Galois) that was not generated."""

    def __str__(self):  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ContextMismatchError(CKKSError, ValueError):
    """Objects from different contexts (parameters) used together."""
