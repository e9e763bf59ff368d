"""Shared fixtures for the CKKS benchmarks (pytest-benchmark).

Contexts, keys and ciphertexts are built lazily, once per (log_n, levels), and shared by every
benchmark of that size: key generation at N = 2^16 with 24 levels takes seconds and the
Galois keys for 8 steps weigh ~0.7 GB, so nothing is built for a size that is not selected.

Sizes (realistic limb counts, 128-bit secure with the engine's default dnum):

    log_n  levels  primes Q  dnum  alpha (= special primes)
    14     8       9         9     1
    15     15      16        4     4
    16     24      25        2     13

Select sizes with ``-k``: the ids are ``logn14-L8``, ``logn15-L15``, ``logn16-L24``
(``-k 14`` runs only N = 2^14), or with ``--quick`` (same as ``-k logn14``).
Also makes ``pytest bench/`` collect ``bench_*.py`` (pytest only looks at ``test_*.py``).
"""
import functools

import numba
import numpy as np
import pytest

import ckks

SIZES = ((14, 8), (15, 15), (16, 24))
SIZE_IDS = [f"logn{n}-L{l}" for n, l in SIZES]
ROT_STEPS = tuple(range(1, 9))  # hoisted rotations to 8 steps vs 8 plain rotations


def pytest_addoption(parser):
    parser.addoption("--quick", action="store_true", default=False,
                     help="HEMET benchmarks: run only N = 2^14 (logn14-L8)")


def pytest_collect_file(file_path, parent):
    # bench_*.py are benchmark modules; explicitly named files are already collected.
    if (file_path.suffix == ".py" and file_path.name.startswith("bench_")
            and not parent.session.isinitpath(file_path)):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def pytest_collection_modifyitems(config, items):
    if not config.getoption("--quick"):
        return
    keep, drop = [], []
    for item in items:
        spec = getattr(item, "callspec", None)
        size = spec.params.get("size") if spec is not None else None
        (drop if size is not None and size[0] != 14 else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


class Setup:
    """One parameter set with keys and top-level operands.

    ``ct``, ``ct2``: fresh ciphertexts at the top level (scale 2^scale_bits);
    ``pt``: a plaintext at the top level; ``ct3``: the size-3 product ct*ct2 (unrelinearized);
    ``ev``: an Evaluator with the relinearization key and Galois keys for ``ROT_STEPS``.
    """

    def __init__(self, log_n: int, levels: int, steps=ROT_STEPS, seed: int = 0):
        self.log_n, self.levels = log_n, levels
        self.params = ckks.Parameters(log_n=log_n, depth=levels)
        self.ctx = ckks.Context(self.params)
        self.keygen = ckks.KeyGenerator(self.ctx)
        self.secret_key = self.keygen.secret_key
        self.relin_key = self.keygen.relin_key()
        self.galois_keys = self.keygen.galois_keys(steps=steps)
        self.ev = ckks.Evaluator(self.ctx, relin_key=self.relin_key, galois_keys=self.galois_keys)
        self.encryptor = ckks.Encryptor(self.ctx, self.secret_key)
        self.decryptor = ckks.Decryptor(self.ctx, self.secret_key)
        rng = np.random.default_rng(seed)
        self.values = rng.uniform(-1, 1, self.ctx.slots)
        self.values2 = rng.uniform(-1, 1, self.ctx.slots)
        self.ct = self.encryptor.encrypt(self.values)
        self.ct2 = self.encryptor.encrypt(self.values2)
        self.pt = self.ctx.encoder.encode(self.values2)
        self.ct3 = self.ev.multiply(self.ct, self.ct2, relinearize=False)
        self.level = self.ctx.max_level
        self.ks = self.ev._ks  # the Evaluator's KeySwitcher (its tables are cached there)
        self.rot_key = self.galois_keys.get(ckks.galois_element(1, self.ctx.n))

    def describe(self) -> str:
        return self.params.describe()


@functools.lru_cache(maxsize=None)
def get_setup(log_n: int, levels: int) -> Setup:
    return Setup(log_n, levels)


@pytest.fixture(params=SIZES, ids=SIZE_IDS)
def size(request):
    return request.param


@pytest.fixture
def setup(size):
    return get_setup(*size)


@pytest.fixture
def threads():
    """Number of Numba threads for the benchmark (1 unless the test overrides it)."""
    return 1


@pytest.fixture(autouse=True)
def _numba_threads(threads):
    if threads > numba.config.NUMBA_NUM_THREADS:
        pytest.skip(f"needs {threads} threads, Numba has {numba.config.NUMBA_NUM_THREADS}")
    before = ckks.get_num_threads()
    ckks.set_num_threads(threads)
    yield
    ckks.set_num_threads(before)
