"""End-to-end encrypted CIFAR-10 inference with hemet.he: one network, K images.

    python bench/network.py --model hemet-fire1-4-cifar10 --json            # a shipped model
    python bench/network.py --model hemet-fire1-4 --checkpoint --json       # export its training checkpoint
    python bench/network.py --model squeezenet --random-weights --json      # zoo network, random weights
    python bench/network.py --model hemet-fire1-4 --random-weights --plan-only   # counts, no HE

Steps and what is timed: compile (graph -> packed program with its diagonals), key generation
(relinearization + the program's Galois keys; their bytes in memory), ``prepare`` (plaintexts
pre-encoded into a pinned cache of ``--cache-gb``), ``--warmup`` untimed runs of the first
image (default 1), then per image: client encryption, server evaluation
(``Program.run_encrypted``, per-step report), client decryption + unpacking.
Agreement: encrypted top-1 == plaintext (``hemet.reference.forward``) top-1; the logit error
is max |enc - plain| / max |plain| per image.

``--json`` prints one line: {"model", "log_n", "depth", "seconds" (median server seconds per
image), "agree", "n_images", ...details}.  ``--images K`` > 64 reads the CIFAR-10 test set from
``$HEMET_DATA`` (``hemet.data.load_cifar10``); up to 64 come from the shipped sample.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from hemet.zoo import random_weights  # noqa: E402
from hemet.search.params import key_bytes, select_parameters  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

def log(*a):
    print(*a, file=sys.stderr, flush=True)


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def load_model(a):
    from hemet import modelfile
    from hemet.cli import resolve_model
    if a.random_weights:
        from hemet import zoo
        g = zoo.build(a.model, classes=10)
        return modelfile.Model(g, random_weights(g, a.seed)), f"{a.model} (random weights, seed {a.seed})"
    if a.checkpoint:
        from hemet.train import export_checkpoint
        ckpt = Path(a.checkpoint) if a.checkpoint != "best" else \
            ROOT / "hemet" / "assets" / "checkpoints" / f"{a.model}-cifar10" / "best.pt"
        out = Path(tempfile.mkdtemp(prefix="hemet-bench-")) / a.model
        path = export_checkpoint(ckpt, out)
        m = modelfile.load(path)
        return m, f"{a.model} (checkpoint {ckpt.relative_to(ROOT) if ckpt.is_absolute() and ROOT in ckpt.parents else ckpt}, " \
                  f"epoch {m.graph.metadata.get('epochs')})"
    path = resolve_model(a.model)
    return modelfile.load(path), str(path)




def load_images(k: int):
    from hemet.data import to_nchw_float
    if k <= 64:
        z = np.load(ROOT / "hemet" / "assets" / "cifar10_test_sample.npz")
        images, labels = z["images"][:k], z["labels"][:k]
    else:
        from hemet.data import load_cifar10
        s = load_cifar10(split="test")
        images, labels = s.images[:k], s.labels[:k]
    return to_nchw_float(images), np.asarray(labels)


def model_digest(model) -> str:
    """SHA-256 of a model's graph and weights: agreement records are kept per exact model."""
    import hashlib
    from hemet.modelfile import graph_to_json
    h = hashlib.sha256(json.dumps(graph_to_json(model.graph), sort_keys=True).encode())
    for k in sorted(model.weights):
        w = np.ascontiguousarray(model.weights[k], dtype=np.float64)
        h.update(k.encode() + str(w.shape).encode() + w.tobytes())
    return h.hexdigest()[:16]


class AgreementRecord:
    """Per-image results appended to ``DIR/<model digest>.jsonl`` as they are produced, so a
    long agreement run (200 images of SqueezeNet: hours on 2 cores) can stop and resume, and
    results of other weights are never mixed in."""

    def __init__(self, directory, model):
        self.digest = model_digest(model)
        self.path = Path(directory) / f"{self.digest}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rows = {}
        if self.path.is_file():
            for line in self.path.read_text().splitlines():
                try:
                    r = json.loads(line)
                    self.rows[int(r["index"])] = r
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut short by an interrupted run

    def add(self, row: dict):
        self.rows[int(row["index"])] = row
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")

    def add_run(self, i: int, enc, plain, label, seconds: float, threads: int):
        """One image's encrypted logits ``enc`` against the plaintext model's ``plain``."""
        self.add({"index": i, "agree": int(np.argmax(enc) == np.argmax(plain)),
                  "rel_err": float(np.max(np.abs(enc - plain)) / np.max(np.abs(plain))),
                  "server_s": round(seconds, 3), "threads": threads, "label": int(label),
                  "plain_top1": int(np.argmax(plain)), "enc_top1": int(np.argmax(enc))})

    def summary(self, n: int) -> dict:
        got = [self.rows[i] for i in range(n) if i in self.rows]
        return {"agree": sum(r["agree"] for r in got), "agree_images": len(got),
                "max_rel_err": max((r["rel_err"] for r in got), default=None),
                "record": str(self.path)}


def choose_parameters(ckks, depth: int, log_n: int = None, dnum: int = None):
    """128-bit-secure parameters for ``depth`` with the smallest keys
    (``hemet.search.params.select_parameters``, which the latency model prices the same way).
    At depth 11 that is N = 2^15, dnum 2 (18 MiB keys); at depth 19 N = 2^15 needs dnum 20
    (210 MiB keys, 20 digits per key switch) and N = 2^16, dnum 2 wins (60 MiB)."""
    return select_parameters(depth, log_n, dnum)


class Quiet:
    """Pause the training jobs for at most ``seconds`` around a timed section, through
    ``.cache/quiet sleep N`` (which always resumes them); ``stop`` ends the pause early."""

    def __init__(self, seconds: int = 60):
        import subprocess
        self.proc = None
        script = ROOT / ".cache" / "quiet"
        if script.is_file():
            self.proc = subprocess.Popen([str(script), "sleep", str(int(min(seconds, 60)))],
                                         stderr=subprocess.DEVNULL)
            time.sleep(0.2)

    def stop(self):
        if self.proc is None:
            return
        try:  # end the sleep (our grandchild): the script then exits and resumes the jobs
            kids = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
            for k in kids:
                os.kill(int(k), 15)
        except (OSError, ValueError):
            pass
        self.proc.wait()
        self.proc = None


def plan_summary(prog, params, paths: dict, threads: int, cache_bytes: int) -> dict:
    """Counts per step and in total, with each step's latency predicted from the shipped (or
    ``$HEMET_CALIBRATION``) calibration, as ``hemet search`` and ``bench/reproduce.py`` price it."""
    from hemet.search.counts import count_program
    from hemet.search.cost import predict
    depth = prog.depth
    counts = count_program(prog, params, paths, cache_bytes=cache_bytes)
    pred = predict(counts, params, threads)
    seconds = [s["seconds"] for s in pred.steps]
    rows = []
    for i, s in enumerate(prog.steps):
        level = depth - max(prog.consumed[v] for v in s.srcs)  # level the step runs at
        n = prog.layouts[s.srcs[0]].n_ciphertexts
        if s.kind == "linear":
            c = s.stage.costs()
            rows.append({"name": s.stage.name, "kind": "linear", "level": level, "B": c["baby_steps"],
                         "in_cts": sum(c["in_ciphertexts"]), "out_cts": c["out_ciphertexts"],
                         "baby": c["baby_rotations"], "giant": c["giant_rotations"],
                         "pt_mults": c["pt_mults"]})
        else:
            rows.append({"name": s.name or s.kind, "kind": s.kind, "level": level, "B": 0, "in_cts": n,
                         "out_cts": n, "baby": 0, "giant": n * len(s.steps) if s.kind == "sum" else 0,
                         "pt_mults": n if s.kind == "prescaled" else 0})
        rows[-1]["est_s"] = seconds[i] if len(seconds) == len(prog.steps) else float("nan")
    return {"steps": rows, "predicted_s": pred.seconds, "calibration": pred.table,
            "calibration_exact": pred.exact}


def format_plan(rows) -> str:
    head = f"{'step':<18} {'kind':<9} {'level':>5} {'ct in/out':>9} {'B':>5} {'baby':>5} {'giant':>5} {'ct*pt':>7} {'pred s':>7}"
    out = [head, "-" * len(head)]
    for r in rows:
        out.append(f"{r['name'][:18]:<18} {r['kind']:<9} {r['level']:>5} {str(r['in_cts']) + '/' + str(r['out_cts']):>9} "
                   f"{r['B']:>5} {r['baby']:>5} {r['giant']:>5} {r['pt_mults']:>7} {r['est_s']:>7.2f}")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="shipped model name / model file path, or a zoo name "
                   "with --random-weights or --checkpoint")
    p.add_argument("--random-weights", action="store_true", help="zoo network with random weights")
    p.add_argument("--checkpoint", nargs="?", const="best", default=None,
                   help="export a training checkpoint (default hemet/assets/checkpoints/MODEL-cifar10/best.pt)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--images", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1,
                   help="untimed runs of the first image before the timed ones (default 1: "
                        "the plaintext cache and the kernels warm, as in a running server)")
    p.add_argument("--layout", choices=["multiplexed", "packed", "per_channel", "per_channel_strided"], default="multiplexed")
    p.add_argument("--global-pool", choices=["sum", "rotate", "matrix"], default="sum",
                   help="sum: channel sums before the classifier, exact zeros outside the logits (the server's choice)")
    p.add_argument("--pool", choices=["rotate", "matrix"], default="rotate",
                   help="2x2 average pools: rotate-and-add in place, or folded into the next stage")
    p.add_argument("--activation", choices=["prescaled", "merged"], default="prescaled")
    p.add_argument("--repack", choices=["auto", "on", "off"], default="auto",
                   help="gather pooled values spread over several ciphertexts (one more level); "
                        "auto: whichever the latency model (hemet.search, shipped calibration) "
                        "predicts faster")
    p.add_argument("--cache-gb", type=float, default=4.0,
                   help="plaintexts pre-encoded and kept (pinned), deepest stages first")
    p.add_argument("--key-gb", type=float, default=4.0,
                   help="budget for Galois + relinearization keys (1e9 bytes): caps the Galois keys; "
                        "dropped steps run as two or more kept rotations (Program.key_plan)")
    p.add_argument("--log-n", type=int, default=None, help="ring degree (default: smallest keys)")
    p.add_argument("--dnum", type=int, default=None)
    p.add_argument("--quiet-server", action="store_true",
                   help="pause the training jobs (<= 60 s, .cache/quiet) while image 0's server part runs")
    p.add_argument("--plan-only", action="store_true", help="plan counts and estimates, no HE")
    p.add_argument("--report", action="store_true", help="print the per-step table of every image")
    p.add_argument("--record", default=None, metavar="DIR",
                   help="append per-image results to DIR/<model digest>.jsonl and skip images "
                        "already recorded there (resumable agreement runs); agree/n_images "
                        "then count every recorded image among the first --images")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)

    import ckks
    from hemet.he import HEBackend
    from hemet.he.program import compile_model, format_report
    from hemet.reference import forward

    ckks.set_num_threads(a.threads)
    model, source = load_model(a)
    log(f"model {source}")
    t0 = time.perf_counter()
    repack = a.repack == "on"
    if a.repack == "auto":
        from hemet.search.cost import best_plan
        plan, pred = best_plan(model, a.threads, None, a.cache_gb, a.key_gb, layout=a.layout,
                               global_pool=a.global_pool, activation=a.activation, pool=a.pool)
        repack = bool(plan.options.get("repack"))
        log(f"repack {'on' if repack else 'off'} (predicted {pred.seconds:.2f} s, {pred.table})")
        t0 = time.perf_counter()
    opts = dict(layout=a.layout, global_pool=a.global_pool, activation=a.activation, pool=a.pool,
                repack=repack, materialize=not a.plan_only)
    # slots: compile once at 2^14 (N = 2^15), then check that the depth picks that ring
    slots = 2 ** 14
    prog = compile_model(model, slots, **opts)
    compile_s = time.perf_counter() - t0
    params = choose_parameters(ckks, prog.depth, a.log_n, a.dnum)
    if params.slots != slots:
        prog = compile_model(model, params.slots, **opts)
        compile_s = time.perf_counter() - t0
    costs = prog.costs()
    key_bytes_each = key_bytes(params)
    max_keys = int(a.key_gb * 1e9 // key_bytes_each) - 1  # one is the relinearization key
    steps, paths = prog.key_plan(max_keys)
    n_keys = len(steps)
    extra = prog.key_plan_costs(paths)
    log(f"Galois keys: {len(prog.rotation_steps)} steps, {n_keys} keys within {a.key_gb} GB "
        f"({key_bytes_each / 2 ** 20:.1f} MiB each), {len(paths)} steps as paths: +{extra} key switches")
    log(f"{params.describe()}; compile {compile_s:.1f} s, peak RSS so far {peak_rss_gb():.2f} GiB, "
        f"diagonals {sum(st.diagonal_bytes() for st in prog.stages) / 2 ** 30:.2f} GiB")
    log(prog.describe())
    result = {"model": a.model, "log_n": params.log_n, "dnum": params.dnum, "depth": prog.depth,
              "layout": a.layout, "pool": a.pool, "global_pool": a.global_pool, "threads": a.threads,
              "repack": repack,
              "rotation_steps": len(prog.rotation_steps), "rotation_keys": n_keys,
              "rotations": costs["rotations"] + extra, "pt_mults": costs["pt_mults"],
              "key_bytes_est": (n_keys + 1) * key_bytes_each, "compile_s": round(compile_s, 2)}
    if a.plan_only:
        plan = plan_summary(prog, params, paths, a.threads, int(a.cache_gb * 2 ** 30))
        log(format_plan(plan["steps"]))
        result.update(seconds=None, agree=None, n_images=0,
                      predicted_s=round(plan["predicted_s"], 2), calibration=plan["calibration"],
                      calibration_exact=plan["calibration_exact"],
                      ciphertexts=sum(r["out_cts"] for r in plan["steps"]))
        print(json.dumps(result) if a.json else json.dumps(result, indent=1))
        return 0

    ctx = ckks.Context(params)
    t0 = time.perf_counter()
    kg = ckks.KeyGenerator(ctx)
    relin = kg.relin_key()
    gk = kg.galois_keys(sorted(steps))
    keygen_s = time.perf_counter() - t0
    kbytes = relin.data.nbytes + sum(gk.get(g).data.nbytes for g in gk.elements)
    log(f"keygen {keygen_s:.1f} s: {n_keys} Galois keys + relin, {kbytes / 2 ** 30:.2f} GiB")
    ev = ckks.Evaluator(ctx, relin, gk)
    enc, dec = ckks.Encryptor(ctx, kg.public_key), ckks.Decryptor(ctx, kg.secret_key)
    be = HEBackend(ev, enc, dec, max_cache_bytes=int(a.cache_gb * 2 ** 30), rotation_paths=paths)
    t0 = time.perf_counter()
    prog.prepare(be)
    prepare_s = time.perf_counter() - t0
    log(f"prepare {prepare_s:.1f} s: {len(be.cache)} plaintexts pinned, {be.cache.bytes / 2 ** 30:.2f} GiB")

    x, labels = load_images(a.images)
    plain = forward(model, x)
    record = AgreementRecord(a.record, model) if a.record else None
    todo = [i for i in range(len(x)) if record is None or i not in record.rows]
    if record is not None:
        log(f"record {record.path}: {len(x) - len(todo)} of {len(x)} images already done")
    server, client, errs, agree, reports = [], [], [], [], []
    for _ in range(a.warmup if todo else 0):  # a server's first requests fill its caches
        t0 = time.perf_counter()
        prog.run_encrypted(be, prog.encrypt(be, x[todo[0]]))
        log(f"warm-up run: {time.perf_counter() - t0:.2f} s, not timed")
    for i in todo:
        be.encode_seconds = 0.0
        t0 = time.perf_counter()
        cts = prog.encrypt(be, x[i])
        t_enc = time.perf_counter() - t0
        rep = []
        quiet = Quiet(60) if a.quiet_server and i == 0 else None
        t0 = time.perf_counter()
        out = prog.run_encrypted(be, cts, report=rep)
        t_srv = time.perf_counter() - t0
        if quiet is not None:
            quiet.stop()
        t0 = time.perf_counter()
        y = prog.layouts[prog.output].unpack([be.decrypt(c) for c in out]).reshape(prog.output_shape)
        t_dec = time.perf_counter() - t0
        err = float(np.max(np.abs(y - plain[i])) / np.max(np.abs(plain[i])))
        ok = int(np.argmax(y) == np.argmax(plain[i]))
        server.append(t_srv)
        client.append(t_enc + t_dec)
        errs.append(err)
        agree.append(ok)
        reports.append(rep)
        if record is not None:
            record.add_run(i, y, plain[i], labels[i], t_srv, a.threads)
        log(f"image {i}: server {t_srv:.2f} s (encode {be.encode_seconds:.2f} s), client enc {t_enc:.3f} + "
            f"dec {t_dec:.3f} s, rel err {err:.2e}, top-1 {'agrees' if ok else 'DIFFERS'} "
            f"(label {labels[i]}, plain {np.argmax(plain[i])})")
        if a.report or i == todo[0]:
            log(format_report(rep))
    med = lambda v: statistics.median(v) if v else None  # noqa: E731
    if record is not None:
        rec = record.summary(len(x))
        result.update(record=rec["record"], model_digest=record.digest)
        errs_all = [record.rows[i]["rel_err"] for i in range(len(x)) if i in record.rows]
        agree_frac, n_agree = rec["agree"] / max(rec["agree_images"], 1), rec["agree_images"]
    else:
        errs_all, agree_frac, n_agree = errs, sum(agree) / max(len(agree), 1), len(agree)
    result.update({
        "seconds": round(med(server), 3) if server else None, "agree": agree_frac,
        "n_images": n_agree, "images_run": len(server),
        "max_rel_err": max(errs_all, default=None), "median_rel_err": med(errs_all),
        "client_s": round(med(client), 3) if client else None,
        "keygen_s": round(keygen_s, 1), "key_bytes": kbytes, "prepare_s": round(prepare_s, 1),
        "pinned_bytes": be.cache.bytes, "plain_top1_acc": float(np.mean(np.argmax(plain, 1) == labels)),
        "peak_rss_gb": round(peak_rss_gb(), 2), "loadavg": os.getloadavg()[0],
        "per_step": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()}
                     for r in reports[0]] if reports else [],
    })
    if a.json:
        print(json.dumps(result))
    else:
        print(json.dumps({k: v for k, v in result.items() if k != "per_step"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
