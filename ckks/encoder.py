"""CKKS encoding: complex slot vectors <-> scaled integer polynomials (canonical embedding).

Slot j holds m(zeta^(5^j)) for zeta = exp(i*pi/N), j < N/2, so the Galois element 5^r
rotates the slots by r.  The embedding and its inverse are the "special FFT" (HEAAN):
O(N log N) butterflies over the 5^j-ordered roots, vectorized per stage with NumPy.
"""
import numpy as np

from kernels import basis, modarith, ntt
from kernels.automorphism import bit_reverse_indices
from kernels.fft import LIMIT as ROUND_LIMIT, special_fft_inv, special_fft_inv_round
from .ciphertext import Plaintext


class Encoder:
    def __init__(self, context):
        self.ctx = context
        n = context.n
        self.slots = n // 2
        m = 2 * n
        self._m = m
        # rot_group[j] = 5^j mod 2N
        rot = np.empty(self.slots, dtype=np.int64)
        x = 1
        for j in range(self.slots):
            rot[j] = x
            x = x * 5 % m
        self._rot = rot
        self._ksi = np.exp(2j * np.pi * np.arange(m + 1) / m)
        self._brv = bit_reverse_indices(self.slots)
        # per-stage twiddles: stage with butterfly length `length` uses lenh = length/2 roots
        self._stages = []
        length = 2
        while length <= self.slots:
            lenh, lenq = length // 2, length * 4
            idx = (rot[:lenh] % lenq) * (m // lenq)
            idx_inv = (lenq - rot[:lenh] % lenq) * (m // lenq)
            self._stages.append((length, self._ksi[idx], self._ksi[idx_inv]))
            length *= 2
        self._w_inv = np.concatenate([w for _, _, w in self._stages]) if self._stages else \
            np.zeros(1, dtype=np.complex128)
        self._garner = {}

    # -- embedding -----------------------------------------------------------------------
    def _fft_special(self, vals: np.ndarray) -> np.ndarray:
        """Coefficient pairs -> slot values (evaluation at zeta^(5^j))."""
        v = vals[self._brv].copy()
        s = self.slots
        for length, w, _ in self._stages:
            v = v.reshape(s // length, length)
            lenh = length // 2
            u = v[:, :lenh].copy()
            t = v[:, lenh:] * w
            v[:, :lenh] = u + t
            v[:, lenh:] = u - t
            v = v.reshape(s)
        return v

    def embed_inverse(self, values) -> np.ndarray:
        """Real coefficients (float64, length N) of the polynomial whose slots are ``values``."""
        return self.embed_inverse_many([values])[0]

    def embed_inverse_many(self, vectors) -> np.ndarray:
        """:meth:`embed_inverse` of several slot vectors at once: (B, N) float64."""
        z = self._slot_matrix(vectors)
        c = np.empty_like(z)
        special_fft_inv(z, self._w_inv, self._brv, c)
        return np.concatenate([c.real, c.imag], axis=1)

    def scaled_coeffs_many(self, vectors, scale: float) -> tuple[np.ndarray, float]:
        """round(scale * embed_inverse(v)) of each slot vector as int64, (B, N), in one pass,
        and the largest magnitude: the int64 values hold only where it is below
        ``kernels.fft.LIMIT`` (2^62)."""
        ints = np.empty((len(vectors), self.ctx.n), dtype=np.int64)
        top = special_fft_inv_round(self._slot_matrix(vectors), self._w_inv, self._brv, float(scale), ints)
        return ints, float(top)

    def _slot_matrix(self, vectors) -> np.ndarray:
        """(B, slots) complex128, zero-padded, of checked slot vectors."""
        z = np.zeros((len(vectors), self.slots), dtype=np.complex128)
        for b, values in enumerate(vectors):
            values = np.asarray(values)
            if values.ndim != 1 or values.size > self.slots:
                raise ValueError(f"expected a 1-D vector of at most {self.slots} values, got shape {values.shape}")
            if not np.all(np.isfinite(values)):
                raise ValueError("values must be finite")
            z[b, : values.size] = values
        return z

    def embed(self, coeffs: np.ndarray) -> np.ndarray:
        """Slot values of a real polynomial given by its N coefficients."""
        s = self.slots
        return self._fft_special(coeffs[:s] + 1j * coeffs[s:])

    # -- encode / decode -----------------------------------------------------------------
    def encode(self, values, level: int = None, scale: float = None) -> Plaintext:
        """Plaintext (NTT form) at ``level`` (default: top) holding round(scale * values)."""
        return self.encode_many([values], level, scale)[0]

    def encode_many(self, vectors, level: int = None, scale: float = None, out: np.ndarray = None) -> list:
        """:meth:`encode` of several vectors at one level and scale, in one batch (the FFTs,
        reductions and NTTs each run once over all of them, on every thread).

        ``out``: a C-contiguous uint64 array of ``len(vectors) * (level + 1) * N`` elements to
        write the plaintexts into (they are views of it), for a caller that reuses one buffer:
        a fresh ~270 MB batch at N = 2^16 costs as much in page faults as in NTTs."""
        ctx = self.ctx
        level = ctx.max_level if level is None else ctx.check_level(level)
        scale = ctx.params.scale if scale is None else float(scale)
        if not (scale >= 1.0 and np.isfinite(scale)):
            raise ValueError(f"scale must be a finite number >= 1, got {scale}")
        if np.log2(scale) >= ctx.log_q(level) - 1:
            raise ValueError(f"scale 2^{np.log2(scale):.1f} does not fit the modulus 2^{ctx.log_q(level):.1f} at level {level}")
        if not len(vectors):
            return []
        ints, big = self.scaled_coeffs_many(vectors, scale)
        rows = ctx.q_rows(level)
        k = len(rows)
        shape = (len(vectors) * k, ctx.n)
        if out is None:
            data = np.empty(shape, dtype=np.uint64)
        else:
            if out.dtype != np.uint64 or not out.flags.c_contiguous or out.size != shape[0] * shape[1]:
                raise ValueError(f"out must be a C-contiguous uint64 array of {shape[0] * shape[1]} elements")
            data = out.reshape(shape)
        if big < ROUND_LIMIT:
            ntt.forward_signed(ints, rows, ctx.tables, data)
        else:  # coefficients past int64: exact Python integers (rare: huge values or scales)
            coeffs = np.round(self.embed_inverse_many(vectors) * scale)
            for b in range(len(vectors)):
                self.coeffs_to_rns(coeffs[b], rows, data[b * k:(b + 1) * k])
            ctx.ntt(data, np.tile(rows, len(vectors)))
        return [Plaintext(data[b * k:(b + 1) * k], level, scale, ctx.fingerprint)
                for b in range(len(vectors))]

    def coeffs_to_rns(self, coeffs: np.ndarray, rows: np.ndarray, out: np.ndarray = None) -> np.ndarray:
        """Integer-valued float64 coefficients -> (k, N) residues (into ``out`` when given)."""
        q = self.ctx.moduli(rows)
        if out is None:
            out = np.empty((len(rows), self.ctx.n), dtype=np.uint64)
        big = np.max(np.abs(coeffs)) if coeffs.size else 0.0
        if big < 2.0 ** 62:
            modarith.reduce_signed(coeffs.astype(np.int64), q, out)
        else:
            # Beyond int64: exact Python integers (float64 values are integers here).
            ints = [int(c) for c in coeffs]
            for i, qi in enumerate(q.tolist()):
                out[i] = np.array([c % qi for c in ints], dtype=np.uint64)
        return out

    def decode(self, pt: Plaintext) -> np.ndarray:
        """Complex slot values of a plaintext (exact CRT over all its primes)."""
        ctx = self.ctx
        rows = ctx.q_rows(pt.level)
        data = pt.data.copy()
        ctx.intt(data, rows)
        coeffs = self.rns_to_float(data, pt.level)
        return self.embed(coeffs / pt.scale)

    def rns_to_float(self, data: np.ndarray, level: int) -> np.ndarray:
        """Centred coefficient values (float64) of coefficient-domain residues at ``level``."""
        q = self.ctx.moduli(self.ctx.q_rows(level))
        if level not in self._garner:
            k = len(q)
            g = np.zeros((k, k), dtype=np.uint64)
            for j in range(k):
                for i in range(j + 1, k):
                    g[j, i] = pow(int(q[j]), -1, int(q[i]))
            big = 1
            for p in q.tolist():
                big *= p
            self._garner[level] = (g, basis.mixed_radix_digits(big // 2, q.tolist()))
        out = np.empty(data.shape[1], dtype=np.float64)
        basis.crt_to_float(data, q, *self._garner[level], out)
        return out

