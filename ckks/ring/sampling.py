"""Samplers for keys and encryption, fed only by the OS CSPRNG.

Every sampler draws a fresh 32-byte seed from ``secrets`` and expands it with SHAKE-256, so a
polynomial's randomness can also be regenerated from its seed (seeded uniform ``a`` halves
the size of symmetric ciphertexts and keys on the wire).
"""
import hashlib
import math
import secrets

import numpy as np

SIGMA = 3.2
# Tail cut at 19.2 sigma (|e| <= 61): the mass beyond it is far below 2^-128.
_BOUND = 61


def new_seed() -> bytes:
    return secrets.token_bytes(32)


def _stream(seed: bytes, domain: bytes, nbytes: int) -> np.ndarray:
    return np.frombuffer(hashlib.shake_256(domain + b"|" + seed).digest(nbytes), dtype=np.uint8)


def uniform_mod(seed: bytes, primes, n: int, domain: bytes = b"uniform") -> np.ndarray:
    """(k, N) residues, row i exactly uniform in [0, primes[i]), by rejection sampling.

    Candidates are (b + 8)-bit integers for a b-bit prime, kept below the largest multiple of
    q that fits and reduced mod q: each kept one is exactly uniform, at most 1 in 256 is
    rejected, and a coefficient costs ceil((b + 8) / 8) bytes of SHAKE-256 output (7 for
    the 40-50-bit primes here) instead of 8 bytes per candidate at acceptance q / 2^b
    (about 1/2 for primes just above a power of two): key generation is dominated by this
    stream."""
    out = np.empty((len(primes), n), dtype=np.uint64)
    for i, q in enumerate(primes):
        q = int(q)
        width = min(8, (q.bit_length() + 8 + 7) // 8)
        limit = np.uint64(((1 << (8 * width)) // q) * q - 1 if width < 8 else
                          ((1 << 64) // q) * q - 1)
        filled, attempt = 0, 0
        while filled < n:
            want = (n - filled) + (n - filled) // 64 + 64
            raw = _stream(seed, domain + b"|%d|%d" % (i, attempt), width * want)
            cand = np.zeros((want, 8), dtype=np.uint8)
            cand[:, :width] = raw.reshape(want, width)
            cand = cand.view("<u8").ravel()
            ok = cand[cand <= limit] % np.uint64(q)
            take = min(len(ok), n - filled)
            out[i, filled:filled + take] = ok[:take]
            filled += take
            attempt += 1
    return out


def ternary(seed: bytes, n: int) -> np.ndarray:
    """Uniform coefficients in {-1, 0, 1} (int64), as the HE standard's ternary secret."""
    raw = _stream(seed, b"ternary", 2 * n)  # rejection of 255 keeps {0,1,2} exactly uniform
    vals = raw[raw < 255][:n]
    while len(vals) < n:  # practically never: 2n bytes leave > n usable ones
        raw = _stream(seed + bytes(len(vals)), b"ternary-more", 2 * n)
        vals = np.concatenate([vals, raw[raw < 255]])[:n]
    return (vals % 3).astype(np.int64) - 1


def _gaussian_cdf_table() -> np.ndarray:
    """Thresholds on 63-bit uniforms for |e| = 0, 1, ..., _BOUND (half-Gaussian with e=0 halved)."""
    weights = [math.exp(-(x * x) / (2 * SIGMA * SIGMA)) for x in range(_BOUND + 1)]
    weights[0] /= 2  # the sign bit doubles every nonzero magnitude's probability
    total = sum(weights)
    cdf, acc = [], 0.0
    for w in weights:
        acc += w
        cdf.append(min(int(acc / total * (1 << 63)), (1 << 63)))
    cdf[-1] = 1 << 63
    return np.array(cdf, dtype=np.uint64)


_CDF = _gaussian_cdf_table()


def gaussian(seed: bytes, n: int) -> np.ndarray:
    """Discrete Gaussian (sigma 3.2) coefficients as int64, by table lookup on 63-bit uniforms."""
    raw = _stream(seed, b"gaussian", 8 * n).view(np.uint64)
    mag = np.searchsorted(_CDF, raw >> np.uint64(1), side="right").astype(np.int64)
    sign = (raw & np.uint64(1)).astype(np.int64)
    return np.where(sign == 1, -mag, mag)
