import warnings

import numpy as np
import pytest

import ckks
from hemet.he import HEBackend, MirrorBackend


class HEKit:
    """A small insecure context; Galois keys are made per test for the steps it needs."""

    def __init__(self, log_n=11, depth=7):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ckks.SecurityWarning)
            self.params = ckks.Parameters(log_n=log_n, depth=depth, dnum=2, allow_insecure=True)
        self.ctx = ckks.Context(self.params)
        self.slots = self.ctx.slots
        self.keygen = ckks.KeyGenerator(self.ctx)
        self.relin = self.keygen.relin_key()
        self.encryptor = ckks.Encryptor(self.ctx, self.keygen.public_key)
        self.decryptor = ckks.Decryptor(self.ctx, self.keygen.secret_key)
        self._keys = {}

    def backend(self, steps, max_cache_bytes=1 << 28):
        steps = frozenset(int(s) % self.slots for s in steps) - {0}
        missing = steps - set(self._keys)
        if missing:
            gk = self.keygen.galois_keys(sorted(missing))
            for s in missing:
                self._keys[s] = gk.get(ckks.galois_element(s, self.ctx.n))
        keys = ckks.GaloisKeys({ckks.galois_element(s, self.ctx.n): self._keys[s] for s in steps},
                               self.ctx.fingerprint)
        ev = ckks.Evaluator(self.ctx, relin_key=self.relin, galois_keys=keys)
        return HEBackend(ev, self.encryptor, self.decryptor, max_cache_bytes=max_cache_bytes)

    def mirror(self):
        return MirrorBackend.like(self.ctx)


@pytest.fixture(scope="session")
def hekit():
    return HEKit()


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
