"""The context: parameters plus every precomputed table that operations share."""
import numpy as np

from kernels import ntt
from .params import Parameters


class Context:
    """Precomputation for one parameter set: primes, NTT tables, RNS bases per level.

    Table rows are the primes q_0..q_L followed by the special primes p_0..p_{alpha-1}; an
    RNS polynomial at level l over Q_l uses rows 0..l, and key switching extends it to the
    rows of Q_l and P.
    """

    def __init__(self, params: Parameters):
        if not isinstance(params, Parameters):
            raise TypeError("Context needs ckks.Parameters")
        self.params = params
        self.n = params.n
        self.log_n = params.log_n
        self.slots = params.slots
        self.max_level = params.depth
        self.primes = list(params.q) + list(params.p)
        self.q_all = np.array(self.primes, dtype=np.uint64)
        self.tables = ntt.make_tables(self.primes, self.n)
        self.special_rows = np.arange(params.depth + 1, len(self.primes), dtype=np.int64)
        self.fingerprint = params.fingerprint()
        self._q_rows = [np.arange(l + 1, dtype=np.int64) for l in range(params.depth + 1)]
        self._qp_rows = [np.concatenate([r, self.special_rows]) for r in self._q_rows]
        p_prod = 1
        for p in params.p:
            p_prod *= p
        self.p_product = p_prod
        self._log_q = np.cumsum([np.log2(float(x)) for x in params.q]).tolist()
        self._encoder = None

    def __repr__(self):
        return f"Context({self.params.describe()})"

    # -- bases ---------------------------------------------------------------------------
    def q_rows(self, level: int) -> np.ndarray:
        return self._q_rows[level]

    def qp_rows(self, level: int) -> np.ndarray:
        return self._qp_rows[level]

    def log_q(self, level: int) -> float:
        """log2 of Q_level, the modulus left at ``level``."""
        return self._log_q[level]

    def moduli(self, rows: np.ndarray) -> np.ndarray:
        return self.q_all[rows]

    # -- transforms ----------------------------------------------------------------------
    def ntt(self, a: np.ndarray, rows: np.ndarray) -> None:
        ntt.forward(a, rows, self.tables)

    def intt(self, a: np.ndarray, rows: np.ndarray) -> None:
        ntt.inverse(a, rows, self.tables)

    def check_level(self, level: int) -> int:
        if not isinstance(level, (int, np.integer)) or not 0 <= level <= self.max_level:
            raise ValueError(f"level must be in 0..{self.max_level}, got {level!r}")
        return int(level)

    @property
    def encoder(self):
        if self._encoder is None:
            from .encoder import Encoder
            self._encoder = Encoder(self)
        return self._encoder
