"""Circuits built on the evaluator: linear transforms (diagonal method, BSGS)."""
from .lintrans import LinearTransform  # noqa: F401
