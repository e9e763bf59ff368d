"""CKKS parameters: ring degree, RNS primes, scale, hybrid key switching, 128-bit security.

The modulus chain is Q = q_0 * q_1 * ... * q_L with q_0 the base prime (it holds the integer
part of the final result) and q_1..q_L close to the scale 2^scale_bits (each rescale divides
by one of them).  Key switching uses ``dnum`` digits of ``alpha = ceil((L+1)/dnum)`` primes
and alpha special primes P, so log2(QP) rather than log2(Q) must meet the security bound.
"""
import hashlib
import math
import warnings
from dataclasses import dataclass, field

from .errors import SecurityError, SecurityWarning
from .ring.primes import MAX_PRIME_BITS, largest_primes, scale_primes

# HE standard (homomorphicencryption.org, 2018), ternary secret, classical 128-bit security:
# the largest log2(QP) per log2(N).
MAX_LOG_QP_128 = {10: 27, 11: 54, 12: 109, 13: 218, 14: 438, 15: 881, 16: 1772, 17: 3544}
MIN_LOG_N, MAX_LOG_N = 4, 17


@dataclass(frozen=True)
class Parameters:
    """RNS-CKKS parameters.

    ``Parameters(depth=5)`` picks the smallest 128-bit-secure ring degree for five rescales at
    scale 2^40 and the fewest key-switching digits that fit it.  ``log_n`` and ``dnum`` may be
    given; parameters below 128-bit security raise ``SecurityError`` unless
    ``allow_insecure=True`` (for teaching), which warns instead.
    """

    log_n: int = None
    depth: int = 1
    scale_bits: int = 40
    first_bits: int = None
    special_bits: int = MAX_PRIME_BITS
    dnum: int = None
    allow_insecure: bool = False
    q: tuple = field(init=False)
    p: tuple = field(init=False)

    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass)
        if not isinstance(self.depth, int) or self.depth < 0:
            raise ValueError(f"depth must be a non-negative int, got {self.depth!r}")
        if not isinstance(self.scale_bits, int) or not 10 <= self.scale_bits <= MAX_PRIME_BITS:
            raise ValueError(f"scale_bits must be in 10..{MAX_PRIME_BITS}, got {self.scale_bits!r}")
        if self.first_bits is None:
            set_("first_bits", min(self.scale_bits + 10, MAX_PRIME_BITS))
        if not self.scale_bits <= self.first_bits <= MAX_PRIME_BITS:
            raise ValueError(f"first_bits must be in scale_bits..{MAX_PRIME_BITS}")
        if not 20 <= self.special_bits <= MAX_PRIME_BITS:
            raise ValueError(f"special_bits must be in 20..{MAX_PRIME_BITS}")
        if self.log_n is None:
            set_("log_n", self._smallest_secure_log_n())
        if not isinstance(self.log_n, int) or not MIN_LOG_N <= self.log_n <= MAX_LOG_N:
            raise ValueError(f"log_n must be in {MIN_LOG_N}..{MAX_LOG_N}, got {self.log_n!r}")
        if self.dnum is None:
            set_("dnum", self._fewest_secure_dnum(self.log_n))
        if not isinstance(self.dnum, int) or not 1 <= self.dnum <= self.depth + 1:
            raise ValueError(f"dnum must be in 1..depth+1 = {self.depth + 1}, got {self.dnum!r}")
        q, p = self._make_primes()
        set_("q", tuple(q))
        set_("p", tuple(p))
        self._check_security()

    # -- derived sizes -------------------------------------------------------------------
    @property
    def n(self) -> int:
        return 1 << self.log_n

    @property
    def slots(self) -> int:
        return self.n // 2

    @property
    def max_level(self) -> int:
        return self.depth

    @property
    def alpha(self) -> int:
        """Primes per key-switching digit, and the number of special primes."""
        return math.ceil((self.depth + 1) / self.dnum)

    @property
    def scale(self) -> float:
        return float(2 ** self.scale_bits)

    @property
    def log_qp(self) -> float:
        return sum(math.log2(x) for x in self.q + self.p)

    @property
    def security_bits_ok(self) -> bool:
        return self.log_qp <= MAX_LOG_QP_128.get(self.log_n, 0)

    def estimated_log_qp(self, log_n: int, dnum: int) -> int:
        alpha = math.ceil((self.depth + 1) / dnum)
        return self.first_bits + self.depth * (self.scale_bits + 1) + alpha * self.special_bits

    # -- choices -------------------------------------------------------------------------
    def _smallest_secure_log_n(self) -> int:
        for log_n in range(max(MIN_LOG_N, 10), MAX_LOG_N + 1):
            if any(self.estimated_log_qp(log_n, d) <= MAX_LOG_QP_128[log_n]
                   for d in range(1, self.depth + 2)):
                return log_n
        raise SecurityError(
            f"depth {self.depth} at scale 2^{self.scale_bits} needs more than log2(QP) = "
            f"{MAX_LOG_QP_128[MAX_LOG_N]}, the 128-bit bound for N = 2^{MAX_LOG_N}")

    def _fewest_secure_dnum(self, log_n: int) -> int:
        bound = MAX_LOG_QP_128.get(log_n, 0)
        for d in range(1, self.depth + 2):
            if self.estimated_log_qp(log_n, d) <= bound:
                return d
        return self.depth + 1  # one prime per digit: the smallest P; the check below decides

    def _make_primes(self):
        n = self.n
        q0 = largest_primes(self.first_bits, 1, n)
        qs = scale_primes(self.scale_bits, self.depth, n, taken=q0) if self.depth else []
        p = largest_primes(self.special_bits, self.alpha, n, taken=q0 + qs)
        return q0 + qs, p

    def _check_security(self) -> None:
        bound = MAX_LOG_QP_128.get(self.log_n)
        if bound is not None and self.log_qp <= bound:
            return
        msg = (f"log2(QP) = {self.log_qp:.1f} exceeds {bound} bits, the 128-bit bound for "
               f"N = 2^{self.log_n} (HE standard, ternary secret)" if bound is not None else
               f"N = 2^{self.log_n} is below 2^10 and has no 128-bit parameter set")
        if not self.allow_insecure:
            raise SecurityError(msg + "; use a larger log_n, fewer levels, more digits (dnum), "
                                "or allow_insecure=True for teaching")
        warnings.warn("INSECURE parameters: " + msg, SecurityWarning, stacklevel=3)

    # -- identity ------------------------------------------------------------------------
    def fingerprint(self) -> bytes:
        """16 bytes naming these parameters; objects of different parameters never mix."""
        text = f"ckks-v1|{self.log_n}|{self.scale_bits}|{self.q}|{self.p}|{self.dnum}"
        return hashlib.sha256(text.encode()).digest()[:16]

    def to_bytes(self) -> bytes:
        from .serialization import dump_parameters
        return dump_parameters(self)

    @staticmethod
    def from_bytes(data: bytes) -> "Parameters":
        from .serialization import load_parameters
        return load_parameters(data)

    def describe(self) -> str:
        return (f"N=2^{self.log_n} slots={self.slots} depth={self.depth} scale=2^{self.scale_bits} "
                f"log2(QP)={self.log_qp:.1f} (max {MAX_LOG_QP_128.get(self.log_n, 'n/a')}) "
                f"dnum={self.dnum} alpha={self.alpha}")
