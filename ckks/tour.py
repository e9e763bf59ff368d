"""A guided tour of CKKS: ``python -m ckks.tour [--log-n 13] [--quiet]``.

Walks through parameters -> keys -> encode -> encrypt -> multiply -> relinearize -> rescale ->
rotate with a :class:`ckks.trace.Trace` attached to the evaluator (holding the secret key, as
only a teaching trace may), and prints the trace table at the end.
"""
import argparse
import math
import sys
import textwrap
import time

import numpy as np

from .ciphertext import Ciphertext
from .context import Context
from .evaluator import Evaluator
from .params import Parameters
from .rlwe.decryptor import Decryptor
from .rlwe.encryptor import Encryptor
from .rlwe.keys import KeyGenerator
from .trace import Trace


def _slots(v, k=4) -> str:
    return "[" + ", ".join(f"{x:.4f}" for x in np.real(v[:k])) + ", ...]"


def _describe_ct(ct: Ciphertext, n: int) -> str:
    kib = ct.data.nbytes / 1024
    return (f"size {ct.size} (polynomials), level {ct.level}, {ct.limbs} limbs (RNS primes), "
            f"scale 2^{math.log2(ct.scale):.4f}; {ct.size} x {ct.limbs} x {n} uint64 = {kib:.0f} KiB")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ckks.tour", description=__doc__.splitlines()[0])
    ap.add_argument("--log-n", type=int, default=13,
                    help="log2 of the ring degree N (default 13; below 13 is insecure and warns)")
    ap.add_argument("--quiet", action="store_true", help="print only the trace table")
    args = ap.parse_args(argv)
    out = sys.stdout
    t_start = time.perf_counter()
    step_no = [0]

    def say(title, text):
        if args.quiet:
            return
        step_no[0] += 1
        print(f"\n== {step_no[0]}. {title} ==", file=out)
        print(textwrap.fill(" ".join(text.split()), width=92), file=out)

    def show(text):
        if not args.quiet:
            print("   " + text, file=out)

    # 1. parameters ------------------------------------------------------------------------
    say("Parameters", """
        CKKS works in the polynomial ring Z_Q[X]/(X^N + 1).  A ciphertext packs N/2 complex
        numbers ("slots") and every operation acts on all slots at once (SIMD).  The modulus Q
        is a product of primes (an RNS basis): each rescale after a multiplication drops one
        prime, so the number of primes above the base prime is the multiplicative depth
        ("levels").  Real numbers are stored as integers multiplied by a scale, here 2^40, which
        sets the precision.  The ring degree N must grow with log2(QP) -- the total modulus
        including the special primes P used for key switching -- to keep 128-bit security
        (HE standard table); the library refuses insecure sets unless told otherwise.""")
    allow_insecure = args.log_n < 13
    if allow_insecure:
        import warnings
        from .errors import SecurityWarning
        warnings.simplefilter("ignore", SecurityWarning)
        show(f"(log_n={args.log_n} is below 13: INSECURE parameters, for a quick demo only)")
    params = Parameters(log_n=args.log_n, depth=2, allow_insecure=allow_insecure)
    ctx = Context(params)
    show(params.describe())
    show(f"primes q: {[p.bit_length() for p in params.q]} bits, special primes p: "
         f"{[p.bit_length() for p in params.p]} bits")

    # 2. keys ------------------------------------------------------------------------------
    say("Keys", """
        The client draws a small secret key s and publishes an encryption key (b, a) with
        b = -a*s + e.  The server gets evaluation keys only: a relinearization key (to shrink
        products back to two polynomials) and a Galois key per rotation step it will use --
        here just the rotation by 1.  The trace below holds the secret key so it can show the
        decrypted slots and their precision after each step; a real server never has it.""")
    keygen = KeyGenerator(ctx)
    encryptor = Encryptor(ctx, keygen.public_key)
    decryptor = Decryptor(ctx, keygen.secret_key)
    trace = Trace(ctx, secret_key=keygen.secret_key, show_slots=4)
    ev = Evaluator(ctx, relin_key=keygen.relin_key(), galois_keys=keygen.galois_keys(steps=[1]), trace=trace)
    show(f"relinearization key and Galois key for step 1 ({len(ev.galois_keys.elements)} element)")

    # 3. encode ----------------------------------------------------------------------------
    say("Encode", """
        Encoding maps a vector of up to N/2 numbers to one polynomial (an inverse FFT of the
        canonical embedding), multiplied by the scale and rounded to integers.  Decoding
        recovers the numbers with an error of about 1/scale.""")
    rng = np.random.default_rng(2024)
    x = np.round(rng.uniform(-1, 1, ctx.slots), 3)
    y = np.round(rng.uniform(-1, 1, ctx.slots), 3)
    x[:4] = [0.5, 1.0, 1.5, 2.0]
    y[:4] = [2.0, -1.0, 0.25, 0.5]
    pt_x = ctx.encoder.encode(x)
    show(f"x = {_slots(x)}  ({ctx.slots} slots)")
    show(f"y = {_slots(y)}")
    show(f"plaintext of x: level {pt_x.level}, scale 2^{math.log2(pt_x.scale):.0f}, {pt_x.limbs} limbs; "
         f"decodes to {_slots(ctx.encoder.decode(pt_x))}")
    show(f"max encoding error: {np.max(np.abs(ctx.encoder.decode(pt_x) - x)):.1e}")

    # 4. encrypt ---------------------------------------------------------------------------
    say("Encrypt", """
        Encryption hides the plaintext m as the pair (c0, c1) = (u*b + e0 + m, u*a + e1) with a
        fresh small u: anyone with the public key can encrypt, only s decrypts, since
        c0 + c1*s = m + (small noise).  The noise is why CKKS results are approximate.""")
    ct_x = trace.watch(encryptor.encrypt(pt_x), x, label="x", record=True)
    ct_y = trace.watch(encryptor.encrypt(y), y, label="y", record=True)
    show("ct_x: " + _describe_ct(ct_x, ctx.n))
    show(f"decrypt(ct_x) = {_slots(decryptor.decrypt(ct_x))}")

    # 5. multiply --------------------------------------------------------------------------
    say("Multiply", """
        Multiplying (c0, c1) by (d0, d1) gives three polynomials (c0*d0, c0*d1 + c1*d0, c1*d1)
        that decrypt with 1, s and s^2.  The scales multiply too: 2^40 * 2^40 = 2^80.  The
        evaluator normally relinearizes at once; here relinearize=False shows the size-3
        ciphertext.""")
    ct3 = ev.multiply(ct_x, ct_y, relinearize=False)
    show("ct_x * ct_y: " + _describe_ct(ct3, ctx.n))
    show(f"decrypts to {_slots(decryptor.decrypt(ct3))}   x*y = {_slots(x * y)}")

    # 6. relinearize -----------------------------------------------------------------------
    say("Relinearize", """
        Key switching with the relinearization key (an encryption of s^2 under s) turns the
        s^2 term into a correction of c0 and c1: the ciphertext is back to size 2 with the
        same value, level and scale, at the cost of a little noise.  This is the most
        expensive operation (NTTs over the primes of Q and P).""")
    ct2 = ev.relinearize(ct3)
    show("relinearized: " + _describe_ct(ct2, ctx.n))

    # 7. rescale ---------------------------------------------------------------------------
    say("Rescale", """
        The scale 2^80 would overflow the modulus after another multiplication.  Rescaling
        divides the ciphertext by the last prime q_L (about 2^40) and drops it: the level goes
        down by one, the scale returns near 2^40 (exactly 2^80 / q_L) and the noise shrinks
        with it.  Each level allows one more multiplication.""")
    ct = ev.rescale(ct2)
    show(f"level {ct2.level} -> {ct.level}, scale 2^{math.log2(ct2.scale):.4f} -> "
         f"2^{math.log2(ct.scale):.6f} (divided by q_{ct2.level} = {params.q[ct2.level]})")
    show(f"decrypts to {_slots(decryptor.decrypt(ct))}")

    # 8. rotate ----------------------------------------------------------------------------
    say("Rotate", """
        The automorphism X -> X^5 permutes the slots cyclically (slot i+1 moves to slot i);
        applied to a ciphertext it leaves the result encrypted under a permuted key, which the
        Galois key switches back to s.  rotate(ct, 1) therefore encrypts np.roll(v, -1).""")
    rot = ev.rotate(ct, 1)
    got = decryptor.decrypt(rot)
    want = np.roll(x * y, -1)
    show(f"rotate(ct, 1) decrypts to {_slots(got)}")
    show(f"np.roll(x*y, -1)          = {_slots(want)}   max error {np.max(np.abs(got - want)):.1e}")

    # 9. the trace -------------------------------------------------------------------------
    say("Trace", """
        Every evaluator call above was recorded: levels, log2 scale, limbs (primes left), size
        (polynomials), wall time, the first decrypted slots and the precision in bits,
        -log2 of the largest error over all slots against the exact NumPy result.""")
    print(trace.table(), file=out)
    if not args.quiet:
        print(f"\n(tour finished in {time.perf_counter() - t_start:.1f} s)", file=out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
