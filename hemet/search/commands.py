"""``hemet calibrate`` and ``hemet search`` (registered in hemet.cli)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["calibrate_setup", "calibrate_run", "search_setup", "search_run"]

# the parameter sets the shipped networks and their searches land on (bench choices)
DEFAULT_SETS = ("15:11:2", "15:12:2", "16:13:1", "16:15:1", "16:17:1", "16:19:2")


def calibrate_setup(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", nargs="+", default=list(DEFAULT_SETS), metavar="LOGN:DEPTH:DNUM",
                   help="parameter sets to time (default: those of the shipped networks)")
    p.add_argument("--depths", type=int, nargs="+", default=None,
                   help="instead of --params: the bench's parameters for these depths")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--level-step", type=int, default=1,
                   help="time every k-th level (and the top); the predictor fits a line per op")
    p.add_argument("--passes", type=int, default=1,
                   help="time every table this many times, one pass over all tables after "
                   "another, and keep the median per operation (noisy machines: 3)")
    p.add_argument("--out", default=None, help="calibration file (default $HEMET_CALIBRATION or "
                   "the shipped hemet/search/calibration.json); tables are added or replaced")


def calibrate_run(a) -> int:
    from .calibrate import SHIPPED, Calibration, calibrate, combine, default_path
    from .params import select_parameters
    if a.passes < 1:  # before the calibration file is touched
        raise SystemExit("hemet calibrate: --passes must be at least 1")
    sets = []
    if a.depths:
        for d in a.depths:
            p = select_parameters(d)
            sets.append((p.log_n, d, p.dnum))
    else:
        for s in a.params:
            ln, d, dn = (int(x) for x in s.split(":"))
            sets.append((ln, d, dn))
    path = Path(a.out) if a.out else default_path()
    cal = Calibration.load(path, warn=False)
    if cal.tables and not cal.same_machine():
        # one file holds one machine's timings: tables from another would be relabelled as ours
        if path.resolve() == SHIPPED.resolve():
            raise SystemExit("hemet calibrate: the shipped calibration was measured on another "
                             "machine; write this one's with --out FILE (then set "
                             "HEMET_CALIBRATION=FILE)")
        if path.is_file():
            print(f"{path}: starting afresh (its {len(cal.tables)} tables were measured on "
                  "another machine)", file=sys.stderr, flush=True)
        cal = Calibration(path=path)
    passes = {}
    for k in range(a.passes):
        for ln, d, dn in sets:
            for t in a.threads:
                levels = sorted(set(range(0, d + 1, a.level_step)) | {d, 1})
                print(f"calibrating N=2^{ln} depth {d} dnum {dn}, {t} thread(s), levels {levels}"
                      + (f", pass {k + 1} of {a.passes}" if a.passes > 1 else ""),
                      file=sys.stderr, flush=True)
                done = passes.setdefault((ln, d, dn, t), [])
                done.append(calibrate(ln, d, dn, threads=t, levels=levels,
                                      log=lambda m: print(m, file=sys.stderr, flush=True)))
                cal.add(combine(done) if len(done) > 1 else done[0])
                cal.save(path)  # after every table: an interrupted run keeps what it measured
    print(json.dumps({"path": str(path), "tables": sorted(cal.tables), "machine": cal.data["machine"]}))
    return 0


def search_setup(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="squeezenet", help="starting network: a zoo name "
                   "(squeezenet, dwsep; weights from its shipped CIFAR-10 model file where there "
                   "is one), a shipped model name or a model file")
    p.add_argument("--out", default=None, help="output directory (default runs/search-<model>)")
    p.add_argument("--finetune-steps", type=int, default=2000,
                   help="SGD steps of the fine-tune behind each accuracy check (2000 x 64 images, "
                   "about 2.8 epochs); 0: skip the check")
    p.add_argument("--tolerance", type=float, default=0.005,
                   help="accuracy drop allowed when keeping a change (fraction, 0.005 = 0.5 points)")
    p.add_argument("--threads", type=int, default=2, help="threads the latency is predicted for")
    p.add_argument("--changes", nargs="+", default=["replace", "merge"], choices=["replace", "merge"])
    p.add_argument("--calibration", default=None, help="calibration file (default: shipped)")
    p.add_argument("--cache-gb", type=float, default=4.0)
    p.add_argument("--key-gb", type=float, default=4.0)
    p.add_argument("--data", default=None, help="CIFAR-10 directory (default $HEMET_DATA)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--eval-images", type=int, default=5000,
                   help="validation images scored (5000: the whole held-out split)")
    p.add_argument("--train-threads", type=int, default=1)
    p.add_argument("--resume", action="store_true", help="continue from <out>/search_state.json")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")


def _starting_model(name: str):
    from hemet import modelfile, zoo
    from hemet.cli import resolve_model, shipped_models
    if name in zoo.NETWORKS:
        graph = zoo.build(name, 10)
        shipped = shipped_models().get(f"{name}-cifar10")
        weights = modelfile.load(shipped).weights if shipped else zoo.random_weights(graph, 0)
        graph.name = f"{name}-cifar10"
        return modelfile.Model(graph, weights)
    return modelfile.load(resolve_model(name))


def search_run(a) -> int:
    from .calibrate import Calibration
    from .search import SearchConfig, greedy_search
    ft = None
    if a.finetune_steps > 0:
        from .finetune import FinetuneConfig
        ft = FinetuneConfig(steps=a.finetune_steps, batch_size=a.batch_size, lr=a.lr,
                            eval_images=a.eval_images, threads=a.train_threads, data=a.data)
    cfg = SearchConfig(threads=a.threads, tolerance=a.tolerance, changes=tuple(a.changes),
                       cache_gb=a.cache_gb, key_gb=a.key_gb, finetune=ft)
    model = _starting_model(a.model)
    out = a.out or f"runs/search-{a.model}"
    res = greedy_search(model, cfg, out, Calibration.load(a.calibration), resume=a.resume,
                        log=lambda m: print(m, file=sys.stderr, flush=True))
    f = res["final"]
    if a.json:
        print(json.dumps(res))
    else:
        print(f"searched network: {res['model']}\n  depth {f['depth']}, N = 2^{f['log_n']}, "
              f"predicted {f['predicted_s']:.2f} s with {a.threads} threads (start: "
              f"{res['start']['predicted_s']:.2f} s, depth {res['start']['depth']})\n"
              f"  accuracy check: {res['accuracy_check']}; decisions in {out}/search.json")
    return 0
