import warnings

import pytest
from hypothesis import HealthCheck, settings

import ckks

settings.register_profile("hemet", deadline=None, max_examples=25,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.load_profile("hemet")


class Toolkit:
    """A context with every key the scheme tests need."""

    def __init__(self, params, steps=(1, 2, 3, 5, -1, -4, 7, 16)):
        self.params = params
        self.ctx = ckks.Context(params)
        self.keygen = ckks.KeyGenerator(self.ctx)
        self.encryptor = ckks.Encryptor(self.ctx, self.keygen.public_key)
        self.sym_encryptor = ckks.Encryptor(self.ctx, self.keygen.secret_key)
        self.decryptor = ckks.Decryptor(self.ctx, self.keygen.secret_key)
        pow2 = [1 << i for i in range(params.log_n - 1)]
        self.evaluator = ckks.Evaluator(self.ctx, relin_key=self.keygen.relin_key(),
                                        galois_keys=self.keygen.galois_keys(set(steps) | set(pow2), conjugate=True))


def _insecure(**kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ckks.SecurityWarning)
        return ckks.Parameters(allow_insecure=True, **kw)


@pytest.fixture(scope="session")
def small():
    """N = 2^10, 4 levels, 2 digits: fast, insecure (teaching-sized)."""
    return Toolkit(_insecure(log_n=10, depth=4, dnum=2))


@pytest.fixture(scope="session")
def secure13():
    """N = 2^13, 128-bit secure, depth 2."""
    return Toolkit(ckks.Parameters(log_n=13, depth=2))
