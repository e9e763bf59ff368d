"""HEMET: HE-friendly mobile networks for private inference with CKKS."""
from .modelfile import ModelFormatError

__all__ = ["ModelFormatError"]
