"""HEMET: HE-friendly mobile networks for private inference with CKKS.

``hemet.Client`` / ``hemet.Server`` are the two parties of private inference
(:mod:`hemet.roles`); they load the CKKS engine on first use.
"""
from .modelfile import ModelFormatError

__all__ = ["ModelFormatError", "Client", "Server", "ProtocolError"]


def __getattr__(name):
    # The roles pull in the CKKS engine and the compiler; plain model work does not need them.
    if name in ("Client", "Server", "ProtocolError"):
        from . import roles
        return getattr(roles, name)
    raise AttributeError(f"module 'hemet' has no attribute {name!r}")
