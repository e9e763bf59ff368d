"""kernels.memory: the allocator thresholds keep an operation's large temporaries in the
process, so the next operation does not fault them in again."""
import os
import subprocess
import sys

import pytest

# Three temporaries of MB megabytes per "operation", freed together (a key switch's pattern).
# 20 MB: with glibc's defaults the 60 MB heap top exceeds the trim threshold (twice the
# dynamic mmap threshold, 40 MB here), goes back to the kernel and faults in again, 4 KiB at a
# time (huge pages off, so the count does not depend on what THP finds).  50 MB: above the
# largest dynamic mmap threshold (32 MiB), so each one is mapped and unmapped.
_PROBE = r"""
import resource, sys
import numpy as np
import kernels, kernels.memory as m
MB = int(sys.argv[1])
def op():
    a = [np.ones(MB << 17) for _ in range(3)]
    del a
op(); op()
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    op()
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0) / 10
print(m.tune_malloc(), faults)
"""


def _probe(mb=20, **env_extra):
    env = dict(os.environ, NUMPY_MADVISE_HUGEPAGE="0", **env_extra)
    for k in list(env):
        if k.startswith("MALLOC_") and k.endswith("_") and k not in env_extra:
            del env[k]
    out = subprocess.run([sys.executable, "-c", _PROBE, str(mb)], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    tuned, faults = out.stdout.split()
    return tuned == "True", float(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
@pytest.mark.parametrize("mb", [20, 50])
def test_tuned_allocator_keeps_temporaries(mb):
    tuned, faults = _probe(mb)
    if not tuned:
        pytest.skip("this C library has no mallopt (not glibc)")
    # 3 x 20 MB of 4 KiB pages is 15,360 faults per operation when they go back to the kernel
    # (3 x 50 MB: 38,400)
    assert faults < 500, faults


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_users_malloc_variables_win():
    """A user's own MALLOC_*_ setting leaves glibc's defaults alone, under which the same
    pattern faults every page again (what the tuning is for)."""
    tuned, faults = _probe(MALLOC_PERTURB_="0")
    assert not tuned
    if _probe()[0]:  # glibc: its defaults give the pages back after every operation
        assert faults > 5_000, faults


def test_tune_malloc_is_idempotent():
    from kernels import memory
    first = memory.tune_malloc()
    assert memory.tune_malloc() is first
