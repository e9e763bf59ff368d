"""ckks.trace (operation traces with shadows and precision) and the ckks.tour walk-through."""
import gc
import math
import subprocess
import sys

import numpy as np
import pytest

import ckks
from ckks.trace import Trace, TraceEntry

pytestmark = pytest.mark.filterwarnings("ignore::ckks.SecurityWarning")

STEPS = (1, 2, 3, 5)


@pytest.fixture(scope="module")
def env():
    params = ckks.Parameters(log_n=10, depth=3, allow_insecure=True)
    ctx = ckks.Context(params)
    kg = ckks.KeyGenerator(ctx)

    class Env:
        pass

    e = Env()
    e.ctx = ctx
    e.sk = kg.secret_key
    e.enc = ckks.Encryptor(ctx, kg.public_key)
    e.dec = ckks.Decryptor(ctx, kg.secret_key)
    e.rk = kg.relin_key()
    e.gk = kg.galois_keys(steps=STEPS, conjugate=True)
    rng = np.random.default_rng(7)
    e.x = rng.uniform(-1, 1, ctx.slots)
    e.y = rng.uniform(-1, 1, ctx.slots)
    e.z = rng.uniform(-1, 1, ctx.slots) + 1j * rng.uniform(-1, 1, ctx.slots)
    return e


def make(env, secret=True, show_slots=4):
    trace = Trace(env.ctx, secret_key=env.sk if secret else None, show_slots=show_slots)
    ev = ckks.Evaluator(env.ctx, env.rk, env.gk, trace=trace)
    return trace, ev


def bits_of(env, ct, expected):
    """Independent precision: decrypt with our own Decryptor, compare with NumPy."""
    err = np.max(np.abs(env.dec.decrypt(ct, complex=True) - expected))
    return -math.log2(err)


def test_records_levels_scales_limbs_sizes(env):
    trace, ev = make(env)
    a = trace.watch(env.enc.encrypt(env.x), env.x, label="x")
    b = trace.watch(env.enc.encrypt(env.y), env.y, label="y")
    c3 = ev.multiply(a, b, relinearize=False)
    c2 = ev.relinearize(c3)
    c = ev.rescale(c2)
    r = ev.rotate(c, 1)
    assert [e.op for e in trace.entries] == ["multiply", "relinearize", "rescale", "rotate"]
    top = env.ctx.max_level
    e0, e1, e2, e3 = trace.entries
    assert isinstance(e0, TraceEntry) and [e.index for e in trace] == [0, 1, 2, 3]
    assert e0.levels_in == (top, top) and e0.level_out == top and e0.size_out == 3
    assert e0.log2_scales_in == pytest.approx((40.0, 40.0)) and e0.log2_scale_out == pytest.approx(80.0)
    assert e0.limbs_out == top + 1 and e0.extra["relinearize"] is False
    assert e1.levels_in == (top,) and e1.size_out == 2 and e1.log2_scale_out == pytest.approx(80.0)
    assert e2.level_in == top and e2.level_out == top - 1 and e2.limbs_out == top
    assert e2.log2_scale_in == pytest.approx(80.0)
    assert e2.log2_scale_out == pytest.approx(math.log2(c.scale)) and abs(e2.log2_scale_out - 40) < 0.01
    assert e3.level_out == c.level == r.level and e3.extra["step"] == 1
    for e, ct in zip(trace.entries, (c3, c2, c, r)):
        assert (e.level_out, e.limbs_out, e.size_out) == (ct.level, ct.limbs, ct.size)
        assert e.log2_scale_out == math.log2(ct.scale)
        assert e.seconds >= 0 and e.ms == e.seconds * 1e3
        assert e.slots is not None and len(e.slots) == 4


def test_precision_matches_independent_computation(env):
    trace, ev = make(env)
    x, y = env.x, env.y
    a = trace.watch(env.enc.encrypt(x), x)
    b = trace.watch(env.enc.encrypt(y), y)
    outs, wants = [], []
    c = ev.multiply(a, b, relinearize=False)
    outs.append(c), wants.append(x * y)
    c = ev.relinearize(c)
    outs.append(c), wants.append(x * y)
    c = ev.rescale(c)
    outs.append(c), wants.append(x * y)
    c = ev.rotate(c, 3)
    outs.append(c), wants.append(np.roll(x * y, -3))
    c = ev.add(c, ev.rescale(ev.square(a)))
    outs.append(c), wants.append(np.roll(x * y, -3) + x * x)
    assert len(trace) == 7  # square and the inner rescale are recorded too
    recorded = [e for e in trace if e.op != "square"]
    recorded = recorded[:4] + recorded[5:]  # skip the rescale of the square
    for e, ct, want in zip(recorded, outs, wants):
        assert e.bits is not None and e.bits >= 15, (e.op, e.bits)
        assert e.bits == pytest.approx(bits_of(env, ct, want), abs=1e-9), e.op
        assert e.max_error == pytest.approx(2.0 ** -e.bits)
        np.testing.assert_allclose(e.slots, want[:4], atol=1e-4)
        np.testing.assert_allclose(trace.expected(ct), want, atol=1e-12)


def test_shadows_rotations_conjugate_hoisted_sum_slots(env):
    trace, ev = make(env)
    z = env.z
    a = trace.watch(env.enc.encrypt(z), z)
    cases = [
        (ev.rotate(a, 2), np.roll(z, -2)),
        (ev.rotate(a, -env.ctx.slots + 5), np.roll(z, -5)),
        (ev.conjugate(a), np.conj(z)),
        (ev.sum_slots(a, 4), z + np.roll(z, -1) + np.roll(z, -2) + np.roll(z, -3)),
    ]
    for ct, want in cases:
        np.testing.assert_allclose(trace.expected(ct), want, atol=1e-12)
    hoisted = ev.rotate_hoisted(a, [0, 1, 5])
    wants = [z, np.roll(z, -1), np.roll(z, -5)]
    for ct, want in zip(hoisted, wants):
        np.testing.assert_allclose(trace.expected(ct), want, atol=1e-12)
    ops = [e.op for e in trace]
    assert ops == ["rotate", "rotate", "conjugate", "sum_slots", "rotate_hoisted"]  # nested ops hidden
    assert trace[-1].outputs == 3
    independent = [bits_of(env, ct, w) for ct, w in cases]
    for e, want_bits in zip(trace.entries[:4], independent):
        assert e.bits >= 15 and e.bits == pytest.approx(want_bits, abs=1e-9)
    assert trace[-1].bits == pytest.approx(min(bits_of(env, c, w) for c, w in zip(hoisted, wants)), abs=1e-9)
    assert np.iscomplexobj(trace[2].slots)  # complex slots are shown as complex
    np.testing.assert_allclose(trace[2].slots, np.conj(z[:4]), atol=1e-4)


def test_shadows_plaintexts_numbers_arrays(env):
    trace, ev = make(env)
    x, y = env.x, env.y
    ctx = env.ctx
    a = trace.watch(env.enc.encrypt(x), x)
    pt = ctx.encoder.encode(y)
    pt_low = ctx.encoder.encode(y, level=1, scale=ctx.primes[1])
    vec = [0.5, -2.0, 3.0]
    vec_full = np.zeros(ctx.slots)
    vec_full[:3] = vec
    cases = [
        (ev.add(a, pt), x + y),
        (ev.sub(a, pt), x - y),
        (ev.add(a, 0.25), x + 0.25),
        (ev.sub(a, 3), x - 3),
        (ev.negate(a), -x),
        (ev.multiply(a, 1.5), 1.5 * x),
        (ev.multiply(a, pt), x * y),
        (ev.multiply(a, pt_low), x * y),
        (ev.multiply(a, vec), x * vec_full),
        (ev.add(a, vec), x + vec_full),
        (ev.square(a), x * x),
        (ev.mod_switch_to(a, 1), x),
    ]
    assert [e.op for e in trace] == ["add", "sub", "add", "sub", "negate", "multiply", "multiply",
                                     "multiply", "multiply", "add", "square", "drop_level"]
    for e, (ct, want) in zip(trace, cases):
        assert trace.expected(ct) is not None, e.op
        np.testing.assert_allclose(trace.expected(ct), want, atol=1e-9)
        assert e.bits >= 15, (e.op, e.bits)
        assert e.bits == pytest.approx(bits_of(env, ct, want), abs=0.05), e.op
    assert trace[0].levels_in == (ctx.max_level, ctx.max_level)
    assert trace[7].levels_in == (ctx.max_level, 1) and trace[7].level_out == 1
    assert trace[2].extra["b"] == 0.25 and trace[11].extra["level"] == 1
    # keyword operands bind like positional ones
    r = ev.rotate(a, step=2)
    np.testing.assert_allclose(trace.expected(r), np.roll(x, -2))
    assert trace[-1].extra["step"] == 2


def test_unwatched_inputs_have_no_precision(env):
    trace, ev = make(env)
    a = env.enc.encrypt(env.x)  # not watched
    b = trace.watch(env.enc.encrypt(env.y), env.y)
    c = ev.add(a, b)
    d = ev.rotate(c, 1)
    assert trace.expected(c) is None and trace.expected(d) is None
    for e in trace:
        assert e.bits is None and e.max_error is None
        assert e.slots is not None  # still decrypted: the trace has the secret key
    np.testing.assert_allclose(trace[0].slots, (env.x + env.y)[:4], atol=1e-5)
    assert "-" in trace.table().splitlines()[-1].split()[-1]


def test_without_secret_key_nothing_is_decrypted(env):
    trace, ev = make(env, secret=False)
    assert not trace.decrypts
    a = trace.watch(env.enc.encrypt(env.x), env.x, record=True)
    c = ev.rescale(ev.multiply(a, a))
    ev.rotate(c, 1)
    assert [e.op for e in trace] == ["input", "multiply", "rescale", "rotate"]
    for e in trace:
        assert e.slots is None and e.bits is None and e.max_error is None
        assert e.level_out is not None and e.limbs_out is not None
    table = trace.table()
    assert "[" not in table  # no slot values anywhere


def test_table_lists_every_op_and_clear(env):
    trace, ev = make(env, show_slots=2)
    a = trace.watch(env.enc.encrypt(env.x), env.x, label="x", record=True)
    b = ev.multiply(a, a, relinearize=False)
    b = ev.relinearize(b)
    b = ev.rescale(b)
    b = ev.add(b, 1.0)
    b = ev.sub(b, 1.0)
    b = ev.negate(b)
    b = ev.rescale(ev.multiply(b, 2.0))
    b = ev.rescale(ev.square(b))
    b = ev.mod_switch_to(b, 0)
    s = ev.sum_slots(a, 2)
    ev.rotate(s, 1)
    ev.rotate_hoisted(s, [1, 2])
    ev.conjugate(s)
    table = trace.table()
    assert str(trace) == table
    for op in ("input", "add", "sub", "negate", "multiply", "square", "relinearize", "rescale",
               "drop_level", "rotate", "rotate_hoisted", "conjugate", "sum_slots"):
        assert op in table, op
    lines = table.splitlines()
    assert len(lines) == 2 + len(trace)
    for col in ("#", "op", "level", "scale", "limbs", "size", "ms", "slots", "bits"):
        assert col in lines[0]
    assert "input x" in lines[2]
    assert len({len(line) for line in lines[:2]}) == 1  # header and rule aligned
    assert len(trace[1].slots) == 2
    trace.clear()
    assert len(trace) == 0 and "no operations" in trace.table()
    assert trace.expected(a) is not None  # shadows survive clear() by default
    trace.clear(shadows=True)
    assert trace.expected(a) is None


def test_shadows_do_not_keep_ciphertexts_alive(env):
    trace, ev = make(env, secret=False)
    a = trace.watch(env.enc.encrypt(env.x), env.x)
    b = ev.negate(a)
    assert trace.expected(b) is not None
    del a, b
    gc.collect()
    assert trace._shadows == {}


def test_watch_validation(env):
    trace, _ = make(env)
    ct = env.enc.encrypt(env.x)
    with pytest.raises(TypeError):
        trace.watch(env.ctx.encoder.encode(env.x), env.x)
    with pytest.raises(ValueError):
        trace.watch(ct, np.zeros(env.ctx.slots + 1))
    trace.watch(ct, [1.0, 2.0], label="short")
    assert trace.label(ct) == "short"
    np.testing.assert_array_equal(trace.expected(ct)[:3], [1, 2, 0])


def test_tour_quiet_runs(capsys):
    from ckks import tour
    assert tour.main(["--quiet"]) == 0
    out = capsys.readouterr().out
    for word in ("multiply", "relinearize", "rescale", "rotate", "bits"):
        assert word in out


def test_tour_module_runs():
    res = subprocess.run([sys.executable, "-m", "ckks.tour"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    for word in ("Parameters", "Encode", "Encrypt", "Relinearize", "Rescale", "Rotate", "size 3",
                 "relinearize", "rescale", "rotate", "N=2^13"):
        assert word in out, word
