"""The paper's comparison on this engine: SqueezeNet-CIFAR against the searched HEMET network.

    python bench/reproduce.py --images 3 --json          # quick: 3 encrypted images each
    python bench/reproduce.py --json                     # 200 images for the agreement
    python bench/reproduce.py --plan-only --json         # counts and predictions, no HE
    python bench/reproduce.py --record bench/results/agreement --json   # resumable 200 images

For each network: depth, N, dnum, log2 QP, rotations and ct x pt products of a run, the
latency predicted by ``hemet.search`` (shipped calibration) and measured on encrypted inputs
with 1 and 2 threads (median server seconds of the first ``--timed`` images, each run at both
thread counts after ``--warmup`` untimed runs; the rest run at ``--threads`` for agreement
only), plaintext accuracy on the full CIFAR-10 test set
($HEMET_DATA; ``hemet.reference``), encrypted top-1 agreement with the plaintext prediction on
the first ``--images`` test images, and a PNG of the latency per layer of both networks.
The pipeline (parameters, keys within ``--key-gb``, plaintexts pinned within ``--cache-gb``,
images) is ``bench/network.py``'s.

``--json`` prints {"baseline": {...}, "hemet": {...}, "latency_reduction": ...,
"accuracy_gain": ..., "accuracy_gain_over_seeds": ...}; reduction = 1 - hemet / baseline
(measured with 2 threads where measured, else predicted), gain in accuracy points of the
shipped (seed-0) models; over seeds: the mean gain, its standard error, 95% interval and median
recorded by ``bench/seeds.py`` in ``bench/results/seeds.json`` (null if that table compares
other networks).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import network as netbench  # noqa: E402  (bench/network.py: the end-to-end pipeline pieces)

log = netbench.log


def _model(name):
    from hemet import modelfile
    from hemet.cli import resolve_model
    return modelfile.load(resolve_model(name))


SEEDS = ROOT / "bench" / "results" / "seeds.json"


def seed_study(baseline: str, hemet: str, path: Path = SEEDS) -> dict | None:
    """The accuracy gain over every seed of ``bench/seeds.py``'s table, when it compares these
    two networks: one seed's gain (the shipped models') is within the seed-to-seed noise, so the
    reproduction shows both.  Recorded there, not measured by this run."""
    try:
        d = json.loads(path.read_text())
        g, ds = d["gain"], d["recipe"]["dataset"]
        if (f"{g['over']}-{ds}", f"{g['of']}-{ds}") != (baseline, hemet):
            return None
        return {"file": str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path),
                "seeds": d["networks"][g["of"]]["n"], "points": round(g["points"], 2),
                "stderr": round(g["stderr"], 2), "median_per_seed": round(g["median_per_seed"], 2),
                "ci95": [round(g["ci"]["low"], 2), round(g["ci"]["high"], 2)]}
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as e:
        raise SystemExit(f"reproduce.py: {path} is not a bench/seeds.py --json table ({e!r})")


def plan_facts(model, cache_gb, key_gb) -> tuple[object, dict]:
    from hemet.search.calibrate import Calibration
    from hemet.search.cost import best_plan, predict
    cal = Calibration.load()
    plan, _ = best_plan(model, 2, cal, cache_gb, key_gb)  # with or without repacking: the faster
    facts = plan.facts()
    facts["repack"] = bool(plan.options.get("repack"))
    pred = {}
    for t in (1, 2):
        try:
            p = predict(plan.counts, plan.params, t, cal)
        except KeyError as e:
            log(f"no prediction for {t} thread(s): {e}")
            continue
        pred[t] = p
        facts[f"predicted_s_{t}t"] = round(p.seconds, 2)
    facts["predicted_steps_2t"] = [{"name": s["name"], "seconds": round(s["seconds"], 3)}
                                   for s in pred[2].steps] if 2 in pred else []
    return plan, facts


def measure(model, a, n_images, options: dict) -> dict:
    """Encrypted runs (bench/network.py's pipeline): per-thread median server seconds,
    agreement, per-step seconds of the first 2-thread run."""
    import ckks
    from hemet.he import HEBackend
    from hemet.he.program import compile_model
    from hemet.reference import forward
    ckks.set_num_threads(2)
    prog = compile_model(model, 2 ** 14, **options)
    params = netbench.choose_parameters(ckks, prog.depth)
    if params.slots != 2 ** 14:
        prog = compile_model(model, params.slots, **options)
    max_keys = int(a.key_gb * 1e9 // netbench.key_bytes(params)) - 1
    steps, paths = prog.key_plan(max_keys)
    ctx = ckks.Context(params)
    t0 = time.perf_counter()
    kg = ckks.KeyGenerator(ctx)
    ev = ckks.Evaluator(ctx, kg.relin_key(), kg.galois_keys(sorted(steps)))
    be = HEBackend(ev, ckks.Encryptor(ctx, kg.public_key), ckks.Decryptor(ctx, kg.secret_key),
                   max_cache_bytes=int(a.cache_gb * 2 ** 30), rotation_paths=paths)
    prog.prepare(be)
    log(f"  keys + prepare {time.perf_counter() - t0:.1f} s ({params.describe()})")
    x, labels = netbench.load_images(n_images)
    plain = forward(model, x)
    record = netbench.AgreementRecord(a.record, model) if a.record else None
    if record is not None:
        log(f"  record {record.path}: {len(record.rows)} images already done")
    seconds = {1: [], 2: []}
    agree, per_step = [], None
    for _ in range(a.warmup):  # a server's first requests touch every cache; not timed
        prog.run_encrypted(be, prog.encrypt(be, x[0]))
    for i in range(len(x)):
        if i >= a.timed and record is not None and i in record.rows:
            continue
        for t in ((2, 1) if i < a.timed else (a.threads,)):
            ckks.set_num_threads(t)
            cts = prog.encrypt(be, x[i])
            rep = []
            quiet = netbench.Quiet(60) if a.quiet and i < a.timed else None
            t0 = time.perf_counter()
            out = prog.run_encrypted(be, cts, report=rep)
            s = time.perf_counter() - t0
            if quiet is not None:
                quiet.stop()
            y = prog.layouts[prog.output].unpack([be.decrypt(c) for c in out]).reshape(prog.output_shape)
            if i < a.timed:  # the timed (and, with --quiet, quiet) runs; the rest only agree
                seconds[t].append(s)
            if t == 2 and per_step is None:
                per_step = [{"name": r["name"], "seconds": round(r["seconds"], 3)} for r in rep]
        agree.append(int(np.argmax(y) == np.argmax(plain[i])))
        if record is not None:
            record.add_run(i, y, plain[i], labels[i], s, t)
        log(f"  image {i}: server {s:.2f} s ({t} thread(s)), top-1 "
            f"{'agrees' if agree[-1] else 'DIFFERS'}")
    ckks.set_num_threads(2)
    out = {f"measured_s_{t}t": round(statistics.median(v), 2) for t, v in seconds.items() if v}
    out.update({f"measured_runs_{t}t": [round(s, 2) for s in v] for t, v in seconds.items() if v})
    out.update(agree=sum(agree), agree_images=len(agree), measured_steps_2t=per_step)
    if record is not None:
        out.update(record.summary(len(x)), model_digest=record.digest)
    return out


def plaintext_accuracy(model) -> float | None:
    from hemet import reference
    from hemet.data import DataError, load_cifar10
    try:
        test = load_cifar10(split="test")
    except DataError as e:
        log(f"no CIFAR-10 test set ({e}): plaintext accuracy skipped")
        return None
    return reference.accuracy(model, test.images, test.labels)


def plot(results: dict, path: Path) -> str | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed (pip install matplotlib): no plot")
        return None
    fig, axes = plt.subplots(1, len(results), figsize=(7 * len(results), 4.5), squeeze=False)
    for ax, (key, r) in zip(axes[0], results.items()):
        # steps in program order (names repeat: a pool's sum and its repacking stage)
        pred = [s["seconds"] for s in r.get("predicted_steps_2t", [])]
        meas = [s["seconds"] for s in (r.get("measured_steps_2t") or [])]
        names = [s["name"] for s in (r.get("predicted_steps_2t") or r.get("measured_steps_2t") or [])]
        xs = np.arange(len(names))
        if meas:
            ax.bar(xs - 0.2, meas[:len(names)], 0.4, label="measured")
        if pred:
            ax.bar(xs + (0.2 if meas else 0), pred, 0.4, label="predicted")
        ax.set_xticks(xs, names, rotation=70, fontsize=7)
        ax.set_ylabel("seconds (2 threads)")
        ax.set_title(f"{key}: {r['model']} (depth {r['depth']}, N = 2^{r['log_n']})")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return str(path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", default="squeezenet-cifar10")
    p.add_argument("--hemet", default="hemet-fire1-4-cifar10", help="the searched network (shipped: "
                   "hemet-fire1-4-cifar10, which `hemet search` reproduces) or a model file")
    p.add_argument("--images", type=int, default=200, help="encrypted test images per network")
    p.add_argument("--timed", type=int, default=2, help="images timed with both 1 and 2 threads")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs of image 0 first")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cache-gb", type=float, default=4.0)
    p.add_argument("--key-gb", type=float, default=4.0)
    p.add_argument("--quiet", action="store_true", help="pause the training jobs (<= 60 s each, "
                   ".cache/quiet) around the timed server runs")
    p.add_argument("--no-accuracy", action="store_true", help="skip the full test-set accuracy")
    p.add_argument("--plan-only", action="store_true", help="counts and predictions only (no HE, "
                   "no accuracy)")
    p.add_argument("--record", default=None, metavar="DIR",
                   help="keep per-image results in DIR/<model digest>.jsonl and skip images already "
                        "there (the first --timed always run): a 200-image run can resume")
    p.add_argument("--plot", default="reproduce_latency.png")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)

    results = {}
    for key, name in (("baseline", a.baseline), ("hemet", a.hemet)):
        model = _model(name)
        log(f"{key}: {name}")
        plan, facts = plan_facts(model, a.cache_gb, a.key_gb)
        r = {"model": name, **facts}
        if not a.plan_only:
            if not a.no_accuracy:
                t0 = time.perf_counter()
                r["plain_accuracy"] = plaintext_accuracy(model)
                log(f"  plaintext accuracy {r['plain_accuracy']} ({time.perf_counter() - t0:.0f} s)")
            r.update(measure(model, a, a.images, plan.options))
        results[key] = r
    b, h = results["baseline"], results["hemet"]
    lat = "measured_s_2t" if "measured_s_2t" in b and "measured_s_2t" in h else "predicted_s_2t"
    out = {"baseline": b, "hemet": h, "latency_basis": lat,
           "latency_reduction": round(1 - h[lat] / b[lat], 4) if lat in b and lat in h else None,
           "accuracy_gain": (round(100 * (h["plain_accuracy"] - b["plain_accuracy"]), 2)
                             if h.get("plain_accuracy") is not None and b.get("plain_accuracy") is not None
                             else None),
           "accuracy_gain_over_seeds": seed_study(a.baseline, a.hemet)}
    if a.plot:
        out["plot"] = plot(results, Path(a.plot))
    if a.json:
        print(json.dumps(out))
    else:
        for key in ("baseline", "hemet"):
            r = out[key]
            print(f"{key:<9} {r['model']:<24} depth {r['depth']:>2}  N 2^{r['log_n']}  log2 QP "
                  f"{r['log_qp']:>7}  rot {r['rotations']:>5}  ct*pt {r['pt_mults']:>6}  predicted "
                  f"{r.get('predicted_s_1t')} / {r.get('predicted_s_2t')} s (1/2 threads)  measured "
                  f"{r.get('measured_s_1t')} / {r.get('measured_s_2t')} s  plain acc "
                  f"{r.get('plain_accuracy')}  agree {r.get('agree')}/{r.get('agree_images')}")
        print(f"latency reduction ({lat}): {out['latency_reduction']}, accuracy gain: "
              f"{out['accuracy_gain']} points, plot: {out.get('plot')}")
        st = out["accuracy_gain_over_seeds"]
        if st:
            print(f"accuracy gain over {st['seeds']} seeds (recorded in {st['file']}): "
                  f"{st['points']:+.2f} points, standard error {st['stderr']:.2f}, 95% interval "
                  f"{st['ci95'][0]:+.2f} to {st['ci95'][1]:+.2f}, median per seed "
                  f"{st['median_per_seed']:+.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
