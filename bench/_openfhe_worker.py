"""OpenFHE timings for ``compare_reference.py``, run as a subprocess.

The ``openfhe`` wheel needs Python 3.10, so this script runs in its own virtual environment
(``.cache/openfhe-venv``, see ``bench/README.md``); it imports nothing from this project and
prints one JSON object on stdout: ``{"info": {...}, "ms": {op: median_ms}}``.  Threads: set
``OMP_NUM_THREADS`` in its environment (OpenFHE parallelizes over RNS limbs with OpenMP).

CKKS setup matching ours: ring dimension 2^log_n, multiplicative depth = levels, scaling mod
size 40, first mod size 50, FIXEDMANUAL scaling (explicit rescale), HYBRID key switching with
numLargeDigits = our dnum; security HEStd_128_classic when OpenFHE accepts the set at that
ring dimension, else HEStd_NotSet (reported in ``info``).
"""
import argparse
import json
import math
import statistics
import sys
import time


def timed(fn, repeat):
    fn()  # warm-up
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(out)


def make_context(o, log_n, levels, dnum, first_bits, scale_bits, security):
    p = o.CCParamsCKKSRNS()
    p.SetMultiplicativeDepth(levels)
    p.SetScalingModSize(scale_bits)
    p.SetFirstModSize(first_bits)
    p.SetRingDim(1 << log_n)
    p.SetBatchSize(1 << (log_n - 1))
    p.SetSecurityLevel(security)
    p.SetKeySwitchTechnique(o.HYBRID)
    p.SetNumLargeDigits(dnum)
    p.SetScalingTechnique(o.FIXEDMANUAL)
    cc = o.GenCryptoContext(p)
    for feature in (o.PKE, o.KEYSWITCH, o.LEVELEDSHE):
        cc.Enable(feature)
    return cc


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--log-n", type=int, default=15)
    ap.add_argument("--levels", type=int, default=15)
    ap.add_argument("--dnum", type=int, default=4)
    ap.add_argument("--first-bits", type=int, default=50)
    ap.add_argument("--scale-bits", type=int, default=40)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--ops", default="all", help="comma-separated subset, or 'all'")
    args = ap.parse_args(argv)

    import openfhe as o

    n = 1 << args.log_n
    info = {"version": getattr(o, "__version__", None)}
    cc = None
    for name in ("HEStd_128_classic", "HEStd_NotSet"):
        try:
            cc = make_context(o, args.log_n, args.levels, args.dnum, args.first_bits,
                              args.scale_bits, getattr(o, name))
        except Exception as e:  # OpenFHE refuses the set at this security level
            info.setdefault("refused", []).append(f"{name}: {str(e).strip()[:200]}")
            continue
        if cc.GetRingDimension() == n:
            info["security"] = name
            break
        info.setdefault("refused", []).append(f"{name}: raised ring dimension to {cc.GetRingDimension()}")
        cc = None
    if cc is None:
        raise SystemExit("OpenFHE accepted no parameter set at this ring dimension")
    info.update(ring_dim=cc.GetRingDimension(), log_q=round(math.log2(cc.GetModulus()), 1),
                dnum=args.dnum, depth=args.levels)

    kp = cc.KeyGen()
    cc.EvalMultKeyGen(kp.secretKey)
    steps = list(range(1, 9))
    cc.EvalRotateKeyGen(kp.secretKey, steps)
    values = [((i * 7919) % 2001) / 1000.0 - 1.0 for i in range(n // 2)]
    pt = cc.MakeCKKSPackedPlaintext(values)
    ct = cc.Encrypt(kp.publicKey, pt)
    ct2 = cc.Encrypt(kp.publicKey, pt)
    ct3 = cc.EvalMultNoRelin(ct, ct2)

    # correctness of a rotation (so the timings are of a working configuration)
    rot = cc.EvalRotate(ct, 1)
    res = cc.Decrypt(rot, kp.secretKey)
    res.SetLength(8)
    got = res.GetRealPackedValue()
    info["rotate_max_err"] = max(abs(got[i] - values[(i + 1) % (n // 2)]) for i in range(8))

    def hoisted8():
        pre = cc.EvalFastRotationPrecompute(ct)
        return [cc.EvalFastRotation(ct, s, 2 * n, pre) for s in steps]

    ops = {
        "rotate": lambda: cc.EvalRotate(ct, 1),
        "multiply_relin": lambda: cc.EvalMult(ct, ct2),
        "relinearize": lambda: cc.Relinearize(ct3),
        "multiply_plain": lambda: cc.EvalMult(ct, pt),
        "rescale": lambda: cc.Rescale(ct),
        "add": lambda: cc.EvalAdd(ct, ct2),
        "rotate8_hoisted": hoisted8,
        "rotate8_plain": lambda: [cc.EvalRotate(ct, s) for s in steps],
    }
    wanted = list(ops) if args.ops == "all" else args.ops.split(",")
    ms = {op: timed(ops[op], args.repeat) for op in wanted}
    json.dump({"info": info, "ms": ms}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
