"""Parameters and Galois key plan for a compiled network, as the end-to-end bench picks them
(``bench/network.py``: the smallest keys for the depth, Galois keys capped by a byte budget)."""
from __future__ import annotations

__all__ = ["key_bytes", "select_parameters", "max_galois_keys"]


def key_bytes(params) -> int:
    """One Galois (or relinearization) key: dnum digits x 2 polynomials over Q_L * P."""
    return 2 * params.dnum * (params.depth + 1 + params.alpha) * params.n * 8


def select_parameters(depth: int, log_n: int = None, dnum: int = None):
    """128-bit-secure ``ckks.Parameters`` for ``depth`` with the smallest keys: the smallest
    secure ring or the next one, each with every secure digit count (a deeper network can
    land on a larger ring, e.g. depth 13 -> N = 2^16, dnum 1)."""
    import ckks
    if log_n is not None or dnum is not None:
        return ckks.Parameters(depth=depth, log_n=log_n, dnum=dnum)
    best = base = ckks.Parameters(depth=depth)
    for ln in (base.log_n, base.log_n + 1):
        for d in range(1, depth + 2):
            try:
                p = ckks.Parameters(depth=depth, log_n=ln, dnum=d)
            except ckks.SecurityError:
                continue
            if key_bytes(p) < key_bytes(best):
                best = p
    return best


def max_galois_keys(params, key_gb: float) -> int:
    """Galois keys that fit ``key_gb`` (1e9 bytes) beside the relinearization key."""
    return int(key_gb * 1e9 // key_bytes(params)) - 1
