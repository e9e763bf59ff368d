"""pytest-benchmark suite for CKKS operations at the top level.

Every benchmark runs at N = 2^14 (8 levels), 2^15 (15 levels) and 2^16 (24 levels), single
thread unless its name says otherwise; see ``bench/conftest.py`` for the shared setups and
``bench/README.md`` for commands.  Quick run (N = 2^14 only)::

    python3 -m pytest bench/bench_ckks.py -k 14 --benchmark-min-rounds=3

Groups put the numbers to compare side by side: ``rotate8-<size>`` holds the hoisted and the
plain 8 rotations (target: hoisted <= 0.5x plain), ``keyswitch-<size>`` the 1- and 2-thread
key switches (target: 2 threads >= 1.6x faster), ``keyswitch-phases-<size>`` the three phases
of ``KeySwitcher.switch``.
"""
import numpy as np
import pytest

from conftest import ROT_STEPS


def _tag(benchmark, setup, group, **extra):
    benchmark.group = f"{group}-logn{setup.log_n}-L{setup.levels}"
    benchmark.extra_info.update(log_n=setup.log_n, levels=setup.levels, limbs=setup.level + 1,
                                dnum=setup.params.dnum, alpha=setup.params.alpha, **extra)


# -- arithmetic ----------------------------------------------------------------------------
def test_multiply_relin(benchmark, setup):
    """ct x ct followed by relinearization (one key switch)."""
    _tag(benchmark, setup, "multiply")
    out = benchmark(setup.ev.multiply, setup.ct, setup.ct2)
    assert out.size == 2 and out.level == setup.level


def test_multiply_norelin(benchmark, setup):
    """ct x ct tensor product only (size-3 result)."""
    _tag(benchmark, setup, "multiply")
    out = benchmark(setup.ev.multiply, setup.ct, setup.ct2, relinearize=False)
    assert out.size == 3


def test_multiply_plain(benchmark, setup):
    """ct x pt (plaintext at the top level, NTT form)."""
    _tag(benchmark, setup, "multiply")
    out = benchmark(setup.ev.multiply, setup.ct, setup.pt)
    assert out.size == 2


def test_relinearize(benchmark, setup):
    """Relinearization of a size-3 ciphertext alone."""
    _tag(benchmark, setup, "multiply")
    out = benchmark(setup.ev.relinearize, setup.ct3)
    assert out.size == 2


def test_add(benchmark, setup):
    _tag(benchmark, setup, "add")
    benchmark(setup.ev.add, setup.ct, setup.ct2)


def test_rescale(benchmark, setup):
    _tag(benchmark, setup, "rescale")
    out = benchmark(setup.ev.rescale, setup.ct)
    assert out.level == setup.level - 1


# -- rotations -----------------------------------------------------------------------------
def test_rotate(benchmark, setup):
    """One rotation by 1 slot (key switch + automorphism)."""
    _tag(benchmark, setup, "rotate")
    out = benchmark(setup.ev.rotate, setup.ct, 1)
    assert out.level == setup.level


def test_rotate8_hoisted(benchmark, setup):
    """Rotations to steps 1..8 of one ciphertext, digits decomposed once."""
    _tag(benchmark, setup, "rotate8", steps=len(ROT_STEPS))
    out = benchmark(setup.ev.rotate_hoisted, setup.ct, ROT_STEPS)
    assert len(out) == len(ROT_STEPS)


def test_rotate8_plain(benchmark, setup):
    """The same 8 rotations one after the other (baseline for hoisting)."""
    _tag(benchmark, setup, "rotate8", steps=len(ROT_STEPS))
    ev, ct = setup.ev, setup.ct
    out = benchmark(lambda: [ev.rotate(ct, s) for s in ROT_STEPS])
    assert len(out) == len(ROT_STEPS)


# -- encoding ------------------------------------------------------------------------------
@pytest.mark.parametrize("into", ["fresh", "reused"])
def test_encode32(benchmark, setup, into):
    """A batch of 32 plaintexts at the top level, as a stage encodes its cache misses: into
    fresh arrays, or into one buffer reused across batches (``encode_many(out=...)``, what
    ``HEBackend.encode_cached_many(transient=True)`` does for misses it will not keep)."""
    _tag(benchmark, setup, "encode32", into=into)
    enc, level = setup.ctx.encoder, setup.level
    vecs = [np.roll(setup.values, i) for i in range(32)]
    buf = np.empty(32 * (level + 1) * setup.ctx.n, dtype=np.uint64) if into == "reused" else None
    out = benchmark(lambda: enc.encode_many(vecs, level, setup.params.scale, out=buf))
    assert len(out) == 32 and out[0].data.shape == (level + 1, setup.ctx.n)


# -- key switching -------------------------------------------------------------------------
@pytest.mark.parametrize("threads", [1, 2], ids=["t1", "t2"])
def test_keyswitch(benchmark, setup, threads):
    """KeySwitcher.switch of c_1 with a rotation key: decompose + inner product + ModDown."""
    _tag(benchmark, setup, "keyswitch", threads=threads)
    ks, c1, key, level = setup.ks, setup.ct.data[1], setup.rot_key.data, setup.level
    out = benchmark(ks.switch, c1, key, level)
    assert out.shape == (2, level + 1, setup.ctx.n)


@pytest.mark.parametrize("phase", ["decompose", "inner_product", "mod_down"])
def test_keyswitch_phase(benchmark, setup, phase):
    """One phase of KeySwitcher.switch, single thread."""
    _tag(benchmark, setup, "keyswitch-phases", phase=phase)
    ks, c1, key, level = setup.ks, setup.ct.data[1], setup.rot_key.data, setup.level
    ext = ks.decompose(c1, level)
    acc = ks.inner_product(ext, key, level)
    fn = {"decompose": lambda: ks.decompose(c1, level),
          "inner_product": lambda: ks.inner_product(ext, key, level),
          "mod_down": lambda: ks.mod_down(acc, level)}[phase]
    benchmark(fn)
