"""HEMET's HE layer library: slot layouts, encrypted linear stages with merged activations,
a float64 mirror executor and the model compiler.

``layout``   where (c, h, w) lives in the slots (packed, multiplexed with gaps, per channel)
``sparse``   exact affine maps (conv, pool, dense, batch norm, compositions) as sparse triples
``linear``   linear stages: diagonals per ciphertext block, hoisted baby-step giant-step
``backend``  the encrypted backend (ckks Evaluator + bounded plaintext cache)
``mirror``   the float64 mirror backend (same program, cleartext slot vectors)
``program``  compile a hemet model into stages, depth, rotation keys; run it
"""
from .layout import Layout, LayoutError  # noqa: F401
from .sparse import AffineMap  # noqa: F401
from .linear import LinearStage, StageInput  # noqa: F401
from .backend import HEBackend, PlaintextCache  # noqa: F401
from .mirror import MirrorBackend, MirrorCt  # noqa: F401
