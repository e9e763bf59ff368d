#!/usr/bin/env python3
"""Time CKKS operations in our engine, Microsoft SEAL and (where available) OpenFHE.

Same ring degree N, same limb count (levels + 1 primes: a 50-bit first prime and ``levels``
40-bit scale primes), same scale 2^40, top level, same thread count, in one run::

    python3 bench/compare_reference.py --log-n 15 --levels 15              # table
    python3 bench/compare_reference.py --log-n 15 --levels 15 --threads 2  # + 1->2 thread speedup
    python3 bench/compare_reference.py --log-n 15 --levels 15 --json       # {op: {ours_ms, seal_ms, ratio, ...}}
    python3 bench/compare_reference.py --log-n 15 --levels 15 --profile    # + key-switching phases

Ours and SEAL are timed alternately, call by call, so background load hits both alike; the
ratio is ours / SEAL of the medians.  Key switching differs by design and the table says how:

* ours: hybrid key switching with our Parameters' dnum (fewest digits that keep log2(QP)
  within the 128-bit bound) and alpha = ceil((levels+1)/dnum) special primes of 50 bits;
* SEAL: supports a single special prime (the last prime of its chain), so it key-switches
  with dnum = levels + 1 digits (one prime each) and one special prime (here: our first
  special prime, 50 bits); its Q primes are exactly ours.  SEAL runs every operation on one
  thread (it has no intra-operation threading), whatever ``--threads`` says.
* OpenFHE (third column, if its Python 3.10 virtual environment exists; see
  ``bench/README.md``): HYBRID key switching with numLargeDigits = our dnum, FIXEDMANUAL
  rescaling, OMP_NUM_THREADS = ``--threads``; it picks its own primes (same bit sizes).
"""
import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OPENFHE_VENV_PY = ROOT / ".cache" / "openfhe-venv" / "bin" / "python"
ROT_STEPS = tuple(range(1, 9))

# op name -> description (table order)
OPS = {
    "rotate": "rotate by 1 slot (key switch)",
    "multiply_relin": "ct x ct + relinearize",
    "relinearize": "relinearize (size 3 -> 2)",
    "multiply_plain": "ct x pt",
    "rescale": "rescale (drop 1 prime)",
    "add": "ct + ct",
    "rotate8_plain": "8 rotations (steps 1..8)",
    "rotate8_hoisted": "8 hoisted rotations",
    "ntt_limb": "forward NTT, per limb",
    "intt_limb": "inverse NTT, per limb",
}


def median_ms(samples):
    return 1e3 * statistics.median(samples)


def time_pairs(fns, repeat, threads=None):
    """Time each callable of ``fns`` (a dict, values may be None) ``repeat`` times, round robin,
    after one warm-up call each; returns {name: median ms}.  ``threads`` optionally maps a
    name to the Numba thread count set (outside the timed region) before each of its calls,
    so 1- and 2-thread runs interleave and share the machine's load alike."""
    from kernels import set_num_threads
    threads = threads or {}
    live = {k: f for k, f in fns.items() if f is not None}
    for k, f in live.items():
        if k in threads:
            set_num_threads(threads[k])
        f()
    samples = {k: [] for k in live}
    for _ in range(repeat):
        for k, f in live.items():
            if k in threads:
                set_num_threads(threads[k])
            t0 = time.perf_counter()
            f()
            samples[k].append(time.perf_counter() - t0)
    return {k: median_ms(v) for k, v in samples.items()}


# -- ours ----------------------------------------------------------------------------------
class Ours:
    def __init__(self, log_n, levels, seed=0):
        import ckks
        self.ckks = ckks
        self.params = ckks.Parameters(log_n=log_n, depth=levels)
        self.ctx = ctx = ckks.Context(self.params)
        kg = ckks.KeyGenerator(ctx)
        self.sk = kg.secret_key
        self.ev = ckks.Evaluator(ctx, relin_key=kg.relin_key(), galois_keys=kg.galois_keys(steps=ROT_STEPS))
        enc = ckks.Encryptor(ctx, kg.public_key)
        rng = np.random.default_rng(seed)
        self.values = rng.uniform(-1, 1, ctx.slots)
        self.ct = enc.encrypt(self.values)
        self.ct2 = enc.encrypt(rng.uniform(-1, 1, ctx.slots))
        self.pt = ctx.encoder.encode(rng.uniform(-1, 1, ctx.slots))
        self.ct3 = self.ev.multiply(self.ct, self.ct2, relinearize=False)
        self.level = ctx.max_level
        self.ks = self.ev._ks
        self.rot_key = self.ev.galois_keys.get(ckks.galois_element(1, ctx.n))
        self.limbs = self.level + 1
        self.ntt_buf = np.ascontiguousarray(self.ct.data[0]).copy()

    def rotate_error(self):
        dec = self.ckks.Decryptor(self.ctx, self.sk)
        return float(np.abs(dec.decrypt(self.ev.rotate(self.ct, 1)) - np.roll(self.values, -1)).max())

    def ops(self):
        ev, ct, ct2, pt, ct3 = self.ev, self.ct, self.ct2, self.pt, self.ct3
        rows = self.ctx.q_rows(self.level)
        return {
            "rotate": lambda: ev.rotate(ct, 1),
            "multiply_relin": lambda: ev.multiply(ct, ct2),
            "relinearize": lambda: ev.relinearize(ct3),
            "multiply_plain": lambda: ev.multiply(ct, pt),
            "rescale": lambda: ev.rescale(ct),
            "add": lambda: ev.add(ct, ct2),
            "rotate8_plain": lambda: [ev.rotate(ct, s) for s in ROT_STEPS],
            "rotate8_hoisted": lambda: ev.rotate_hoisted(ct, ROT_STEPS),
            "ntt_limb": lambda: self.ctx.ntt(self.ntt_buf, rows),
            "intt_limb": lambda: self.ctx.intt(self.ntt_buf, rows),
        }

    def keyswitch(self):
        ks, c1, key, level = self.ks, self.ct.data[1], self.rot_key.data, self.level
        return lambda: ks.switch(c1, key, level)

    def describe(self):
        p = self.params
        return (f"ours: {p.describe()}; Q = {p.first_bits} + {p.depth} x {p.scale_bits} bits, "
                f"P = {p.alpha} x {p.special_bits} bits")


# -- SEAL ----------------------------------------------------------------------------------
class Seal:
    def __init__(self, ours: Ours, seed=0):
        import seal
        self.seal = seal
        p = ours.params
        n = p.n
        self.notes = []
        parms = seal.EncryptionParameters(seal.scheme_type.ckks)
        parms.set_poly_modulus_degree(n)
        try:
            parms.set_coeff_modulus([seal.Modulus(q) for q in p.q] + [seal.Modulus(p.p[0])])
            self.notes.append("SEAL primes: our Q primes + our first special prime (single special prime)")
        except Exception as e:  # pragma: no cover - fall back to SEAL's own primes
            parms.set_coeff_modulus(seal.CoeffModulus.Create(
                n, [p.first_bits] + [p.scale_bits] * p.depth + [p.special_bits]))
            self.notes.append(f"SEAL primes: CoeffModulus.Create (own primes, same sizes): {e}")
        self.context = seal.SEALContext(parms, True, seal.sec_level_type.tc128)
        if not self.context.parameters_set():
            msg = self.context.parameter_error_message()
            self.context = seal.SEALContext(parms, True, seal.sec_level_type.none)
            self.notes.append(f"SEAL refused the chain at 128-bit ({msg}); using sec_level_type.none")
            if not self.context.parameters_set():
                raise RuntimeError(f"SEAL refuses the parameters: {self.context.parameter_error_message()}")
        else:
            self.notes.append("SEAL sec_level: tc128 (accepted)")
        log_qp = sum(math.log2(q) for q in p.q) + math.log2(p.p[0])
        self.notes.append(f"SEAL key switching: dnum = {p.depth + 1} (one prime per digit), "
                          f"1 special prime; log2(QP) = {log_qp:.1f}")
        kg = seal.KeyGenerator(self.context)
        self.sk = kg.secret_key()
        pk = kg.create_public_key()
        self.rk = kg.create_relin_keys()
        self.gk = seal.GaloisKeys()
        kg.create_galois_keys([1], self.gk)  # 8 plain rotations: 8 x step 1 (same cost each)
        self.enc = seal.Encryptor(self.context, pk)
        self.evl = seal.Evaluator(self.context)
        self.encoder = seal.CKKSEncoder(self.context)
        rng = np.random.default_rng(seed)
        self.values = rng.uniform(-1, 1, n // 2)
        scale = p.scale
        self.ct = self.enc.encrypt(self.encoder.encode(self.values, scale))
        self.ct2 = self.enc.encrypt(self.encoder.encode(rng.uniform(-1, 1, n // 2), scale))
        self.pt = self.encoder.encode(rng.uniform(-1, 1, n // 2), scale)
        self.ct3 = self.evl.multiply(self.ct, self.ct2)
        self.ct_coeff = self.evl.transform_from_ntt(self.ct)
        self.limbs = self.ct.coeff_modulus_size()
        assert self.limbs == p.depth + 1, (self.limbs, p.depth + 1)

    def rotate_error(self):
        dec = self.seal.Decryptor(self.context, self.sk)
        out = np.array(self.encoder.decode(dec.decrypt(self.evl.rotate_vector(self.ct, 1, self.gk))))
        return float(np.abs(out - np.roll(self.values, -1)).max())

    def ops(self):
        e, ct, ct2, pt, ct3, gk, rk = self.evl, self.ct, self.ct2, self.pt, self.ct3, self.gk, self.rk
        return {
            "rotate": lambda: e.rotate_vector(ct, 1, gk),
            "multiply_relin": lambda: e.relinearize(e.multiply(ct, ct2), rk),
            "relinearize": lambda: e.relinearize(ct3, rk),
            "multiply_plain": lambda: e.multiply_plain(ct, pt),
            "rescale": lambda: e.rescale_to_next(ct),
            "add": lambda: e.add(ct, ct2),
            "rotate8_plain": lambda: [e.rotate_vector(ct, 1, gk) for _ in ROT_STEPS],
            "rotate8_hoisted": None,  # SEAL has no hoisted rotations
            # a 2-component ciphertext: 2 x limbs forward NTTs
            "ntt_limb": lambda: e.transform_to_ntt(self.ct_coeff),
            "intt_limb": lambda: e.transform_from_ntt(self.ct),
        }


# -- OpenFHE (subprocess) --------------------------------------------------------------------
def openfhe_python(explicit):
    if explicit:
        return explicit
    if os.environ.get("HEMET_OPENFHE_PYTHON"):
        return os.environ["HEMET_OPENFHE_PYTHON"]
    try:
        import openfhe  # noqa: F401  (importable here: run the worker with this interpreter)
        return sys.executable
    except ImportError:
        pass
    return str(OPENFHE_VENV_PY) if OPENFHE_VENV_PY.exists() else None


def run_openfhe(py, params, threads, repeat, ops="all", timeout=900):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    cmd = [py, str(HERE / "_openfhe_worker.py"), "--log-n", str(params.log_n),
           "--levels", str(params.depth), "--dnum", str(params.dnum),
           "--first-bits", str(params.first_bits), "--scale-bits", str(params.scale_bits),
           "--repeat", str(repeat), "--ops", ops]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError((r.stderr or r.stdout).strip()[-600:])
    return json.loads(r.stdout.strip().splitlines()[-1])


# -- key-switching phase profile -------------------------------------------------------------
def profile_keyswitch(ours: Ours, repeat):
    """Median ms of the phases of KeySwitcher.switch at the top level, with the current thread
    count.  ModUp, the inner product and ModDown are each fused kernels (one or two parallel
    regions), so the phases are timed as the engine runs them, not split further."""
    ks, ctx, level = ours.ks, ours.ctx, ours.level
    c1, key = ours.ct.data[1], ours.rot_key.data
    ext = ks.decompose(c1, level)
    acc = ks.inner_product(ext, key, level)
    fns = {
        "switch (total)": ours.keyswitch(),
        "decompose (ModUp, all digits)": lambda: ks.decompose(c1, level),
        "inner_product": lambda: ks.inner_product(ext, key, level),
        "mod_down": lambda: ks.mod_down(acc, level),
    }
    # hoisted rotations to ROT_STEPS, as rotate_hoisted runs them: one ModUp, then the keys
    # through the batched kernels (KeySwitcher.rotate_ext_many)
    from ckks import galois_element
    gs = [galois_element(s, ctx.n) for s in ROT_STEPS]
    hkeys = [ours.ev.galois_keys.get(g).data for g in gs]
    perms = [ours.ev._perm(g) for g in gs]
    ct = ours.ct
    fns.update({
        f"hoisted x{len(gs)}: rotate_hoisted (total)": lambda: ours.ev.rotate_hoisted(ct, ROT_STEPS),
        f"hoisted x{len(gs)}: decompose (once)": lambda: ks.decompose(ct.data[1], level),
        f"hoisted x{len(gs)}: rotate_ext_many (all keys)": lambda: ks.rotate_ext_many(
            ext, hkeys, ct.data[0], perms, level),
    })
    med = time_pairs(fns, repeat)
    k = level + 1
    n_up_ntt = sum(len(t[2]) for t in ks._up_tables(level))
    limb_counts = {"decompose (ModUp, all digits)": k + n_up_ntt,
                   "mod_down": 2 * (len(ctx.special_rows) + k)}
    return med, limb_counts, ks.digit_count(level)


# -- output --------------------------------------------------------------------------------
def fmt(x, spec="9.2f"):
    return format(x, spec) if x is not None else " " * (int(spec.split(".")[0]) - 1) + "-"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--log-n", type=int, default=15)
    ap.add_argument("--levels", type=int, default=15, help="rescale levels: levels+1 primes")
    ap.add_argument("--threads", type=int, default=1, help="our (Numba) and OpenFHE's (OpenMP) threads")
    ap.add_argument("--repeat", type=int, default=7, help="timed calls per op (median)")
    ap.add_argument("--json", action="store_true", help="print {op: {ours_ms, seal_ms, ratio, ...}}")
    ap.add_argument("--profile", action="store_true", help="also time the phases of key switching")
    ap.add_argument("--no-seal", action="store_true")
    ap.add_argument("--no-openfhe", action="store_true")
    ap.add_argument("--openfhe-python", default=None,
                    help=f"interpreter with openfhe installed (default: {OPENFHE_VENV_PY.relative_to(ROOT)})")
    args = ap.parse_args(argv)
    log = (lambda *a: print(*a, file=sys.stderr)) if args.json else print

    import ckks
    import numba
    if args.threads > numba.config.NUMBA_NUM_THREADS:
        ap.error(f"--threads {args.threads} > NUMBA_NUM_THREADS = {numba.config.NUMBA_NUM_THREADS}")

    t0 = time.perf_counter()
    ours = Ours(args.log_n, args.levels)
    log(ours.describe())
    log(f"ours: setup (context + keys for steps 1..8) {time.perf_counter() - t0:.1f} s")

    seal_side = None
    if not args.no_seal:
        try:
            seal_side = Seal(ours)
            for note in seal_side.notes:
                log(note)
        except ImportError:
            log("SEAL: not installed (pip install seal-python, or pip install -e .[bench]); skipped")

    openfhe = None
    if not args.no_openfhe:
        py = openfhe_python(args.openfhe_python)
        if py is None:
            log(f"OpenFHE: no interpreter with openfhe ({OPENFHE_VENV_PY.relative_to(ROOT)} missing; "
                "see bench/README.md); skipped")
        else:
            try:
                openfhe = run_openfhe(py, ours.params, args.threads, args.repeat)
                info = openfhe["info"]
                log(f"OpenFHE {info.get('version')}: ring_dim {info['ring_dim']}, depth {info['depth']}, "
                    f"log2(Q) {info['log_q']}, HYBRID dnum {info['dnum']}, security {info['security']}, "
                    f"OMP threads {args.threads}, rotate error {info['rotate_max_err']:.1e}")
                for r in info.get("refused", []):
                    log(f"OpenFHE refused: {r}")
            except Exception as e:
                log(f"OpenFHE: worker failed ({e}); skipped")
                openfhe = None

    ckks.set_num_threads(args.threads)
    ours_ops = ours.ops()
    seal_ops = seal_side.ops() if seal_side else {}
    fns = {}
    for op in OPS:
        fns[("ours", op)] = ours_ops[op]
        fns[("seal", op)] = seal_ops.get(op)
    fns[("ours", "keyswitch")] = ours.keyswitch()
    med = time_pairs(fns, args.repeat)
    # per-limb NTT: ours transforms `limbs` rows, SEAL's ciphertext has 2 x limbs
    for op in ("ntt_limb", "intt_limb"):
        med[("ours", op)] /= ours.limbs
        if ("seal", op) in med:
            med[("seal", op)] /= 2 * seal_side.limbs
    extra = {}
    if args.threads > 1:
        # 1 vs `threads` threads, interleaved call by call (load drifts on a shared machine)
        ks_fn = ours.keyswitch()
        sp = time_pairs({"rot_t1": ours_ops["rotate"], "rot_tn": ours_ops["rotate"],
                         "ks_t1": ks_fn, "ks_tn": ks_fn}, args.repeat,
                        threads={"rot_t1": 1, "rot_tn": args.threads,
                                 "ks_t1": 1, "ks_tn": args.threads})
        ckks.set_num_threads(args.threads)
        ks_med = sp["ks_tn"]
        extra["rotate_t1"], extra["rotate_tn"] = sp["rot_t1"], sp["rot_tn"]
        extra["keyswitch_t1"] = sp["ks_t1"]
        if openfhe is not None:
            try:
                one_ofhe = run_openfhe(openfhe_python(args.openfhe_python), ours.params, 1,
                                       args.repeat, ops="rotate")
                extra["openfhe_rotate_t1"] = one_ofhe["ms"]["rotate"]
            except Exception as e:
                log(f"OpenFHE 1-thread rerun failed: {e}")
    else:
        ks_med = med[("ours", "keyswitch")]

    results = {}
    for op in OPS:
        o = med.get(("ours", op))
        s = med.get(("seal", op))
        f = openfhe["ms"].get(op) if openfhe else None
        if op in ("ntt_limb", "intt_limb"):
            f = None
        row = {"ours_ms": o, "seal_ms": s, "ratio": (o / s if o and s else None)}
        if openfhe is not None:
            row["openfhe_ms"] = f
            row["ratio_openfhe"] = o / f if o and f else None
        results[op] = row
    results["keyswitch"] = {"ours_ms": ks_med, "seal_ms": None, "ratio": None}
    if "rotate_t1" in extra:
        results["rotate_1thread"] = {"ours_ms": extra["rotate_t1"], "seal_ms": med.get(("seal", "rotate")),
                                     "ratio": None}
        results["keyswitch_1thread"] = {"ours_ms": extra["keyswitch_t1"], "seal_ms": None, "ratio": None}
        results["rotate_1thread"]["speedup"] = extra["rotate_t1"] / extra["rotate_tn"]
        results["keyswitch_1thread"]["speedup"] = extra["keyswitch_t1"] / ks_med
        if openfhe is not None and "openfhe_rotate_t1" in extra:
            results["rotate_1thread"]["openfhe_ms"] = extra["openfhe_rotate_t1"]

    if args.json:
        print(json.dumps(results, indent=1))
        return results

    # ---- table
    print()
    print(f"N = 2^{args.log_n}, {args.levels} levels ({ours.limbs} limbs), scale 2^{ours.params.scale_bits}, "
          f"top level, threads: ours {args.threads}, SEAL 1, OpenFHE {args.threads if openfhe else '-'}; "
          f"median of {args.repeat}; {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.1f}")
    head = f"{'op':<34}{'ours ms':>10}{'SEAL ms':>10}{'ours/SEAL':>10}"
    if openfhe is not None:
        head += f"{'OpenFHE ms':>12}{'ours/OFHE':>10}"
    print(head)
    print("-" * len(head))
    for op, desc in list(OPS.items()) + [("keyswitch", "KeySwitcher.switch (ours only)")]:
        r = results[op]
        line = f"{desc:<34}{fmt(r['ours_ms'], '10.3f')}{fmt(r['seal_ms'], '10.3f')}{fmt(r['ratio'], '10.2f')}"
        if openfhe is not None:
            line += f"{fmt(r.get('openfhe_ms'), '12.3f')}{fmt(r.get('ratio_openfhe'), '10.2f')}"
        print(line)
    print("(per-limb NTTs: ours = one (limbs, N) array / limbs; SEAL = transform_to_ntt of a "
          "coefficient-form / transform_from_ntt of an NTT-form ciphertext / (2 x limbs))")

    # ---- targets
    print()
    print("targets:")

    def check(label, value, ok):
        print(f"  {label:<62} {value:<22} {'OK' if ok else 'MISSED'}")

    rot, mul = results["rotate"], results["multiply_relin"]
    if rot["ratio"] is not None:
        note = "" if args.threads == 1 else " (ours multi-thread!)"
        check(f"rotate <= 0.4x SEAL{note}", f"{rot['ratio']:.2f}x", rot["ratio"] <= 0.4)
        check(f"ct x ct + relin <= 0.4x SEAL{note}", f"{mul['ratio']:.2f}x", mul["ratio"] <= 0.4)
    h = results["rotate8_hoisted"]["ours_ms"] / results["rotate8_plain"]["ours_ms"]
    check("hoisted rotations to 8 steps <= 0.5x 8 plain rotations", f"{h:.2f}x", h <= 0.5)
    ntt_us = 1e3 * results["ntt_limb"]["ours_ms"]
    check(f"per-limb NTT at N=2^16 <= 200 us (here N=2^{args.log_n}, {args.threads} thr)",
          f"{ntt_us:.1f} us", ntt_us <= 200 if args.log_n == 16 else True)
    if args.threads > 1:
        sp_ks = extra["keyswitch_t1"] / ks_med
        sp_rot = extra["rotate_t1"] / extra["rotate_tn"]
        print(f"  rotate (interleaved): 1 thread {extra['rotate_t1']:.2f} ms, {args.threads} threads "
              f"{extra['rotate_tn']:.2f} ms: speedup {sp_rot:.2f}x")
        print(f"  key switch (interleaved): 1 thread {extra['keyswitch_t1']:.2f} ms, "
              f"{args.threads} threads {ks_med:.2f} ms")
        check(f"key switching {args.threads} threads >= 1.6x faster than 1", f"{sp_ks:.2f}x", sp_ks >= 1.6)
        if "openfhe_rotate_t1" in extra and openfhe and openfhe["ms"].get("rotate"):
            print(f"  OpenFHE rotate: 1 thread {extra['openfhe_rotate_t1']:.2f} ms, {args.threads} threads "
                  f"{openfhe['ms']['rotate']:.2f} ms: speedup {extra['openfhe_rotate_t1'] / openfhe['ms']['rotate']:.2f}x")

    # ---- correctness of what was timed
    msg = f"rotation error (max abs, slots): ours {ours.rotate_error():.1e}"
    if seal_side:
        msg += f", SEAL {seal_side.rotate_error():.1e}"
    print(msg)

    if args.profile:
        ckks.set_num_threads(args.threads)
        med_p, limbs, digits = profile_keyswitch(ours, args.repeat)
        p = ours.params
        print()
        print(f"key switching phases (ours, top level, {args.threads} thread(s), dnum {p.dnum}, "
              f"{digits} digits, alpha {p.alpha}):")
        total = med_p["switch (total)"]
        for name, ms in med_p.items():
            if name.startswith("hoisted"):
                continue
            extra_s = f"  ({limbs[name]} limb NTTs inside)" if name in limbs else ""
            print(f"  {name:<38}{ms:9.3f} ms {100 * ms / total:5.1f}%{extra_s}")
        hoisted = {n: ms for n, ms in med_p.items() if n.startswith("hoisted")}
        total = next(iter(hoisted.values()))
        print(f"hoisted rotations (ours, {len(ROT_STEPS)} keys, timed alongside):")
        for name, ms in hoisted.items():
            print(f"  {name:<46}{ms:9.3f} ms {100 * ms / total:5.1f}%")
    return results


if __name__ == "__main__":
    main()
