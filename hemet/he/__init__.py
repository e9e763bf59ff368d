"""HEMET's HE layer library: slot layouts, encrypted linear stages with merged activations,
a float64 mirror executor and the model compiler.

``layout``   where (c, h, w) lives in the slots (packed, multiplexed with gaps, per channel)
``sparse``   exact affine maps (conv, pool, dense, batch norm, compositions) as sparse triples
``linear``   linear stages: diagonals per ciphertext block, hoisted baby-step giant-step
``backend``  the encrypted backend (ckks Evaluator + bounded plaintext cache)
``mirror``   the float64 mirror backend (same program, cleartext slot vectors)
``program``  compile a hemet model into stages, depth, rotation keys; run it

Example (a loaded ``hemet.modelfile.Model`` ``model``; ``x`` a (C, H, W) image in [0, 1])::

    import ckks
    from hemet.he import HEBackend, MirrorBackend
    from hemet.he.program import compile_model

    prog = compile_model(model, slots=2 ** 14)        # layouts, merged stages, plans
    y = prog.run(MirrorBackend(2 ** 14, depth=prog.depth), x)   # float64 mirror, exact
    ctx = ckks.Context(ckks.Parameters(log_n=15, depth=prog.depth))
    kg = ckks.KeyGenerator(ctx)
    ev = ckks.Evaluator(ctx, kg.relin_key(), kg.galois_keys(prog.rotation_steps))
    be = HEBackend(ev, ckks.Encryptor(ctx, kg.public_key), ckks.Decryptor(ctx, kg.secret_key))
    prog.prepare(be)                                  # pre-encode diagonals (bounded cache)
    y = prog.run(be, x)                               # encrypted
"""
from .layout import Layout, LayoutError  # noqa: F401
from .sparse import AffineMap  # noqa: F401
from .linear import LinearStage, StageInput  # noqa: F401
from .backend import HEBackend, PlaintextCache  # noqa: F401
from .mirror import MirrorBackend, MirrorCt  # noqa: F401
