"""``hemet tour``: a step-through of encrypted computation, then of one network layer.

Part 1 computes ``0.5 x^2 + x rot(y, 1)`` step by step; part 2 runs one convolution layer
(normalize + 3x3 conv, 3 -> 4 channels on an 8x8 image) compiled by ``hemet.he`` into packed
diagonals, baby-step giant-step rotations and plaintext products.  A ``ckks.Trace`` on the
evaluator records every HE operation: level, scale, time and -- because this tour plays the
client and holds the secret key -- the decrypted slots and their precision in bits against
the exact NumPy values.  A real server never has the secret key, so it sees none of this.
"""
from __future__ import annotations

import math
import sys
import textwrap
import time
import warnings

import numpy as np

__all__ = ["main"]


def _fmt_slots(v, k=4) -> str:
    return "[" + ", ".join(f"{x:+.4f}" for x in np.real(np.asarray(v)[:k])) + ", ...]"


def _entry_line(e) -> str:
    lv = "->".join(str(x) for x in e.levels_in) if e.levels_in else "-"
    sc = f"2^{e.log2_scale_out:.2f}" if e.log2_scale_out is not None else "-"
    bits = f"{e.bits:5.1f} bits" if e.bits is not None else "    -     "
    slots = _fmt_slots(e.slots) if e.slots is not None else ""
    extra = "".join(f" {k}={v}" for k, v in e.extra.items() if k in ("step", "steps") and v is not None)
    if len(extra) > 30:
        extra = extra[:27] + "..."
    return (f"  {e.op:<15s}{extra:<14s} level {lv:>5s} -> {e.level_out:<2d} scale {sc:<9s} "
            f"{e.seconds * 1e3:8.2f} ms  {bits}  {slots}")


class _Pair:
    """A ciphertext and its mirror (clear float64 slots of the same program)."""

    __slots__ = ("ct", "mv")

    def __init__(self, ct, mv):
        self.ct, self.mv = ct, mv


class TwinBackend:
    """Runs every backend operation on the encrypted backend and on the float64 mirror in
    lockstep, and logs it: level, scale, time of the HE operation, and (holding the client's
    decryptor) the decrypted slots and their precision against the mirror's exact values."""

    def __init__(self, he, mirror, decryptor, log):
        self.he, self.mirror, self.dec, self.log = he, mirror, decryptor, log
        self.slots, self.max_level, self.fresh_scale = he.slots, he.max_level, he.fresh_scale
        self.rows = []

    def prime(self, level):
        return self.he.prime(level)

    def level(self, x):
        return x.ct.level

    def scale(self, x):
        return x.ct.scale

    def encode_cached(self, key, make, level, scale):
        return (self.he.encode_cached(key, make, level, scale),
                self.mirror.encode_cached(key, make, level, scale))

    def _do(self, name, he_fn, mv_fn, detail=""):
        t0 = time.perf_counter()
        ct = he_fn()
        secs = time.perf_counter() - t0
        mv = mv_fn()
        cts, mvs = (ct, mv) if isinstance(ct, list) else ([ct], [mv])
        for c, m in zip(cts, mvs):
            got = np.real(self.dec.decrypt(c))
            want = m.vec
            err = float(np.max(np.abs(got - want)))
            bits = -math.log2(err) if err > 0 else float("inf")
            self.rows.append((name, c.level, c.scale, secs / len(cts), bits))
            self.log(f"  {name:<16s}{detail[:22]:<23s} level {c.level}  scale 2^{math.log2(c.scale):6.2f} "
                     f"{secs * 1e3 / len(cts):8.2f} ms  {bits:5.1f} bits  {_fmt_slots(got)}")
            detail = ""
        return [_Pair(c, m) for c, m in zip(cts, mvs)] if isinstance(ct, list) else _Pair(ct, mv)

    def drop_level(self, x, level):
        if level == x.ct.level:
            return x
        return self._do("drop_level", lambda: self.he.drop_level(x.ct, level),
                        lambda: self.mirror.drop_level(x.mv, level))

    def rotate(self, x, step):
        return self._do("rotate", lambda: self.he.rotate(x.ct, step),
                        lambda: self.mirror.rotate(x.mv, step), f"step {step}")

    def rotate_hoisted(self, x, steps):
        steps = list(steps)
        return self._do("rotate_hoisted", lambda: self.he.rotate_hoisted(x.ct, steps),
                        lambda: self.mirror.rotate_hoisted(x.mv, steps), f"steps {steps}")

    def multiply_plain(self, x, pt):
        return self._do("multiply_plain", lambda: self.he.multiply_plain(x.ct, pt[0]),
                        lambda: self.mirror.multiply_plain(x.mv, pt[1]))

    def multiply_plain_add(self, acc, x, pt):
        if acc is None:
            return self.multiply_plain(x, pt)
        return self._do("mul_plain_add", lambda: self.he.multiply_plain_add(acc.ct, x.ct, pt[0]),
                        lambda: self.mirror.multiply_plain_add(acc.mv, x.mv, pt[1]))

    def multiply_plain_add_many(self, acc: dict, terms) -> None:
        """One logged operation per term (the engine fuses a batch into one kernel call)."""
        for key, x, pt in terms:
            acc[key] = self.multiply_plain_add(acc.get(key), x, pt)

    def add(self, a, b):
        return self._do("add", lambda: self.he.add(a.ct, b.ct), lambda: self.mirror.add(a.mv, b.mv))

    def add_plain(self, x, vec):
        return self._do("add_plain", lambda: self.he.add_plain(x.ct, vec),
                        lambda: self.mirror.add_plain(x.mv, vec))

    def square(self, x):
        return self._do("square", lambda: self.he.square(x.ct), lambda: self.mirror.square(x.mv))

    def rescale(self, x):
        return self._do("rescale", lambda: self.he.rescale(x.ct), lambda: self.mirror.rescale(x.mv))


def main(log_n: int = 13, quiet: bool = False, out=None) -> int:
    import ckks
    from hemet.he import HEBackend, MirrorBackend

    out = out or sys.stdout
    t_start = time.perf_counter()

    def say(title, text):
        if not quiet:
            print(f"\n== {title} ==", file=out)
            print(textwrap.fill(" ".join(text.split()), width=96), file=out)

    def show(text):
        if not quiet:
            print("   " + text, file=out)

    # --------------------------------------------------------------- parameters and keys
    say("Parameters and keys (client)", """
        The client picks CKKS parameters: ring degree N (N/2 slots per ciphertext), a chain of
        primes (one per multiplicative level, each about the scale 2^40) and special primes for
        key switching.  It draws the secret key and makes the evaluation keys: a
        relinearization key and one Galois key per rotation step.  Only these go to the
        server.  Here the tour also keeps a trace holding the secret key, to show what is
        inside every ciphertext.""")
    insecure = log_n < 13
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ckks.SecurityWarning)
        params = ckks.Parameters(log_n=log_n, depth=2, allow_insecure=insecure)
    ctx = ckks.Context(params)
    show(params.describe() + ("  [INSECURE: teaching size]" if insecure else "  [128-bit secure]"))
    keygen = ckks.KeyGenerator(ctx)
    trace = ckks.Trace(ctx, secret_key=keygen.secret_key, show_slots=4)
    enc = ckks.Encryptor(ctx, keygen.public_key)
    dec = ckks.Decryptor(ctx, keygen.secret_key)

    # --------------------------------------------------------------- part 1
    ev = ckks.Evaluator(ctx, relin_key=keygen.relin_key(), galois_keys=keygen.galois_keys([1]),
                        trace=trace)
    rng = np.random.default_rng(7)
    x = rng.uniform(-1, 1, ctx.slots)
    y = rng.uniform(-1, 1, ctx.slots)

    def step(title, text, fn):
        say(title, text)
        n0 = len(trace)
        r = fn()
        for e in trace.entries[n0:]:
            print(_entry_line(e), file=out)
        return r

    say("Part 1: a small encrypted computation", """
        Goal: z = 0.5 * x^2 + x * rotate(y, 1) on all slots at once.  Each line below is one HE
        operation: its name, the level before -> after, the scale after, the time, the
        precision (bits of the largest error over every slot) and the first decrypted slots.""")
    show(f"x = {_fmt_slots(x)}   y = {_fmt_slots(y)}")
    cx = step("Encrypt", """Encryption hides the scaled, encoded vector under fresh noise at the
        top level; the precision is that of the encoding noise (about 2^-20 relative to the
        scale 2^40 here).""", lambda: trace.watch(enc.encrypt(x), x, label="x", record=True))
    cy = trace.watch(enc.encrypt(y), y, label="y", record=True)
    print(_entry_line(trace.entries[-1]), file=out)
    sq = step("Square (with relinearization)", """Multiplying two ciphertexts multiplies the
        scales (2^80) and makes a three-part ciphertext; relinearization (a key switch with the
        relinearization key) brings it back to two parts.  The level does not change yet.""",
              lambda: ev.square(cx))
    sq = step("Rescale", """Rescaling divides by the last prime, about 2^40: the scale returns near
        2^40 and one level is consumed.  The depth of a circuit is the number of rescales it
        needs.""", lambda: ev.rescale(sq))
    half = step("Multiply by a constant, rescale", """A constant is encoded at the scale of the
        prime the next rescale drops, so multiply-then-rescale keeps the scale exactly; this
        costs a level too.""", lambda: ev.rescale(ev.multiply(sq, 0.5)))
    ry = step("Rotate", """A rotation permutes the slots (slot i+1 -> slot i) with a Galois
        automorphism and switches the key back with the Galois key of step 1: the costliest
        operation, and the reason the server needs one key per rotation step.""",
              lambda: ev.rotate(cy, 1))
    xr = step("Multiply, rescale", """x * rotate(y, 1): another ciphertext product at the top
        level, rescaled one level down.  Its scale is 2^80 / q_top, exactly the scale of x^2 after its
        rescale: CKKS adds only values of equal scale, so circuits are arranged for that.""",
              lambda: ev.rescale(ev.multiply(cx, ry)))
    z = step("Add", """Addition needs one level and one scale: the evaluator drops the fresher
        operand's extra prime (exact) and adds.""", lambda: ev.add(half, xr))
    got = np.real(dec.decrypt(z))
    want = 0.5 * x * x + x * np.roll(y, -1)
    err = float(np.max(np.abs(got - want)))
    show(f"decrypted z = {_fmt_slots(got)}; expected {_fmt_slots(want)}")
    show(f"max error {err:.1e} over {ctx.slots} slots ({-math.log2(err):.1f} bits)")

    # --------------------------------------------------------------- part 2
    say("Part 2: one network layer", """
        A network layer is a linear map on the image.  hemet.he packs the 3x8x8 image
        channel after channel into the slots (a layout), folds normalization and convolution
        into one matrix, and evaluates it with the diagonal method: the output is
        sum_d diag_d * rotate(x, d), with only the nonzero generalized diagonals.  Rotations are
        split baby-step / giant-step and the baby steps are hoisted (one key-switch
        decomposition shared by all of them).  Every diagonal is a plaintext encoded at the
        level and scale where it is used, so the layer costs one level (one rescale).""")
    from hemet.he import Layout, LinearStage
    from hemet.he import sparse as S
    from hemet.he.program import Expr
    from hemet.reference import conv2d
    wrng = np.random.default_rng(3)
    weight, bias = wrng.normal(0, 0.3, (4, 3, 3, 3)), wrng.normal(0, 0.1, 4)
    mean, std = np.full(3, 0.5), np.full(3, 0.25)
    e = Expr((3, 8, 8), {0: S.identity((3, 8, 8))})
    e = e.apply(S.channel_affine((3, 8, 8), 1 / std, -mean / std))     # normalize
    e = e.apply(S.conv2d((3, 8, 8), weight, bias, 1, 1, 1))            # 3x3 conv, padding 1
    in_layout, out_layout = Layout.packed(3, 8, 8, ctx.slots), Layout.packed(4, 8, 8, ctx.slots)
    st = LinearStage([(in_layout, e.terms[0])], out_layout, bias=e.bias, name="normalize+conv")
    c = st.costs()
    steps = sorted(st.rotation_steps)
    show(f"input layout: {in_layout.describe()}")
    show(f"output layout: {out_layout.describe()}")
    show(f"plan: {c['diagonals']} diagonals (ct x pt products), baby steps B = {c['baby_steps']}, "
         f"{c['rotations']} rotations; Galois keys for {len(steps)} steps {steps}")
    gk = keygen.galois_keys(steps)
    be = HEBackend(ckks.Evaluator(ctx, galois_keys=gk), enc, dec)
    mirror = MirrorBackend.like(ctx)
    img = wrng.uniform(0, 1, (3, 8, 8))
    say("The layer's operations", """Each line is one operation of the layer on the server:
        hoisted baby-step rotations (one key-switch decomposition for all of them), fused
        plaintext multiply-adds by the diagonals, giant-step rotations, one rescale and the
        bias.  Beside the encrypted run, the same program runs on a float64 mirror; the
        precision column compares every decrypted intermediate with it.""")
    twin = TwinBackend(be, mirror, dec, lambda m: print(m, file=out))
    inputs = [twin._do("encrypt", lambda v=v: enc.encrypt(v), lambda v=v: mirror.encrypt(v))
              for v in in_layout.pack(img)]
    t0 = time.perf_counter()
    res = st.evaluate(twin, [inputs], out_scale=ctx.params.scale)
    secs = time.perf_counter() - t0
    res = [r.ct for r in res]
    got = out_layout.unpack([np.real(dec.decrypt(c)) for c in res])
    want = conv2d(((img - 0.5) / 0.25)[None], weight, bias, 1, 1, 1)[0]
    err = float(np.max(np.abs(got - want)))
    counts = {}
    for r in twin.rows:
        counts[r[0]] = counts.get(r[0], 0) + 1
    show(f"operations: {', '.join(f'{k} x{v}' for k, v in counts.items())}; layer time {secs:.3f} s "
         "(with the decryptions of this tour)")
    show(f"output channel 0, row 0: {_fmt_slots(got[0, 0])}; reference {_fmt_slots(want[0, 0])}")
    show(f"max error vs hemet.reference over the 4x8x8 output: {err:.1e} ({-math.log2(err):.1f} bits); "
         f"output level {res[0].level}, scale 2^{math.log2(res[0].scale):.2f}")
    if not quiet:
        print(f"\n(tour finished in {time.perf_counter() - t_start:.1f} s)", file=out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
