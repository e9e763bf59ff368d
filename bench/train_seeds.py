"""Train several seeds of several networks under one recipe, a few ``hemet train`` processes
at a time: the runs that ``bench/seeds.py`` tabulates.

    python bench/train_seeds.py --models squeezenet hemet-fire1-4 --seeds 6 7 --jobs 2
    python bench/train_seeds.py --models squeezenet hemet-fire1-4 --seeds 8-39 --jobs 8 \\
        --device cuda

Each (network, seed) is one process writing ``<runs>/seed<S>-<network>`` (config, log,
checkpoints) and its exported model in ``export/`` (CIFAR-10, as ``bench/seeds.py``).  The recipe is the README's
(``--epochs 60 --lr 0.03 --cutout 8``, bf16); arguments after ``--`` are added to every run's
command.  Finished runs are skipped and unfinished ones resumed, so the command can be run
again after an interruption.  With several workers the most expensive runs (by MACs) start
first, which keeps the workers busy to the end; with one (``--jobs 1``) the seeds go in order,
the networks alternating as named, so a campaign cut short still leaves paired seeds.  At the
end it prints the ``bench/seeds.py`` command for the table.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# bf16 as well: "auto" would train in fp32 on CPUs without native bf16, a recipe of its own
RECIPE = ["--epochs", "60", "--lr", "0.03", "--cutout", "8", "--precision", "bf16"]


def precision_note(device: str, extra: list[str]) -> str | None:
    """What to say where the recipe's bf16 is emulated on this device (slow), or None."""
    if "--precision" in extra:
        return None
    from hemet.train import resolve_device, resolve_precision
    dev = resolve_device(device)
    if resolve_precision("auto", dev) == "bf16":
        return None
    return (f"note: the recipe trains in bf16, as the runs in bench/results/seeds.json did; "
            f"{dev} has no native bf16, so torch emulates it (4.9x slower per step than fp32 "
            "on an AVX2-only AMD EPYC).  `-- --precision fp32` is faster, but its runs form a "
            "table of their own: bench/seeds.py refuses to mix recipes")


def parse_seeds(specs: list[str]) -> list[int]:
    """``["6", "8-10"]`` -> ``[6, 8, 9, 10]``."""
    seeds: list[int] = []
    for s in specs:
        lo, _, hi = s.partition("-")
        try:
            seeds += list(range(int(lo), int(hi or lo) + 1))
        except ValueError:
            raise SystemExit(f"bad seed {s!r}: give N or N-M") from None
    return sorted(set(seeds))


def epochs_done(run: Path) -> int:
    log = run / "log.jsonl"
    if not log.is_file():
        return 0
    recs = [json.loads(x) for x in log.read_text().splitlines() if x.strip()]
    return max([r["epoch"] for r in recs if "val_acc" in r and "rollback" not in r] + [0])


def finished(run: Path, model: str) -> bool:
    cfg = run / "config.json"
    return (cfg.is_file() and (run / "export" / f"{model}-cifar10.json").is_file()
            and epochs_done(run) >= json.loads(cfg.read_text())["epochs"])


def schedule(todo: list[tuple[int, int, str, Path]], jobs: int) -> list:
    """The order to start ``(macs, seed, model, run)`` runs in (``todo`` is in the order the
    networks were named): longest first for several workers, else seed by seed."""
    if jobs > 1:
        return sorted(todo, key=lambda t: (-t[0], t[1]))
    return sorted(todo, key=lambda t: t[1])  # stable: the named order within a seed


def command(model: str, seed: int, run: Path, a: argparse.Namespace) -> list[str]:
    cmd = [sys.executable, "-m", "hemet", "train", "--model", model, "--seed", str(seed),
           *RECIPE, "--threads", str(a.threads), "--device", a.device, "--no-progress",
           "--out", str(run), "--export", str(run / "export" / f"{model}-cifar10")]
    if a.data:
        cmd += ["--data", a.data]
    if (run / "last.pt").is_file():
        cmd.append("--resume")
    return cmd + a.extra


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", required=True)
    p.add_argument("--seeds", nargs="+", required=True, help="seeds: N or N-M")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--device", default="auto", help="hemet train --device")
    p.add_argument("--runs", default="runs", help="folder of the run directories")
    p.add_argument("--data", default=None, help="data directory (default: $HEMET_DATA)")
    p.add_argument("--poll", type=float, default=30.0, help="seconds between progress lines")
    p.add_argument("extra", nargs=argparse.REMAINDER, help="-- then more hemet train options")
    a = p.parse_args(argv)
    a.extra = a.extra[1:] if a.extra[:1] == ["--"] else a.extra
    from hemet import zoo
    for m in a.models:
        zoo.build(m)  # an unknown name fails here, not in a worker an hour later
    note = precision_note(a.device, a.extra)
    if note:
        print(note, flush=True)
    runs_dir = Path(a.runs)
    todo, dirs = [], []
    for m in a.models:
        macs = zoo.build(m).macs()
        for s in parse_seeds(a.seeds):
            run = runs_dir / f"seed{s}-{m}"
            dirs.append(str(run))
            if finished(run, m):
                print(f"skip {run}: finished", flush=True)
            else:
                todo.append((macs, s, m, run))
    todo = schedule(todo, a.jobs)
    runs_dir.mkdir(parents=True, exist_ok=True)
    active: dict[Path, tuple[subprocess.Popen, str]] = {}
    failed: list[Path] = []
    # the workers import the same hemet as this script
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + [x for x in [os.environ.get("PYTHONPATH")] if x]))
    t0 = last = time.time()
    while todo or active:
        while todo and len(active) < a.jobs:
            _, s, m, run = todo.pop(0)
            run.mkdir(parents=True, exist_ok=True)
            cmd = command(m, s, run, a)
            with open(run / "train.out", "a") as out:
                active[run] = (subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                                env=env), m)
            print(f"start {run}: {shlex.join(cmd[1:])}", flush=True)
        time.sleep(min(a.poll, 1.0))
        for run, (proc, m) in list(active.items()):
            if proc.poll() is None:
                continue
            del active[run]
            if proc.returncode == 0 and finished(run, m):
                print(f"done  {run} ({(time.time() - t0) / 60:.1f} min)", flush=True)
            else:
                failed.append(run)
                why = f"exit {proc.returncode}" if proc.returncode else "stopped unfinished"
                print(f"FAIL  {run}: {why}, see {run / 'train.out'}", flush=True)
        if active and time.time() - last >= a.poll:
            last = time.time()
            print(f"{(last - t0) / 60:.1f} min: " + ", ".join(
                f"{r.name} epoch {epochs_done(r)}" for r in active) + f"; {len(todo)} waiting",
                flush=True)
    print("table: python bench/seeds.py " + " ".join(dirs) + " --json", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
