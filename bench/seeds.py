"""Seed-to-seed spread of the accuracy comparison: several ``hemet train`` runs per network.

    python bench/seeds.py runs/seed*-squeezenet runs/seed*-hemet-fire1-4 --json
    python bench/seeds.py hemet/checkpoints/squeezenet-cifar10=hemet/assets/squeezenet-cifar10.json ...

Each argument is a ``hemet train --out`` directory (``config.json``, ``log.jsonl`` and the
``--export`` model file), optionally ``DIR=MODEL.json`` where the exported model lives elsewhere
(the shipped seed-0 runs: their logs are in ``hemet/checkpoints``, their models in
``hemet/assets``).  For every run: the seed, best validation accuracy, undone
divergences and the exported (best-on-validation) model's plaintext accuracy on the full
CIFAR-10 test set ($HEMET_DATA or ``--data``).  Per network: the mean and sample standard
deviation of the test accuracy; for two networks, the difference of means (the second
network named on the command line minus the first) with its standard error and 95% interval
(Welch: the networks' spreads differ), the figures to hold against the paper's +0.4 points.
The test set only scores finished runs: nothing here selects on it.

``--previous FILE`` adds the runs of an earlier ``--json`` output with the test accuracies
measured then: seeds trained in other sessions or on other machines whose run directories are
gone.  Every run must share one training recipe (its ``config.json`` less the model, seed and
where files go): a table that mixed recipes would compare them, not the networks.  The
output records that recipe and the command; ``--plot PNG`` draws every run's accuracy with
the means (matplotlib, optional).

``--combine A.json B.json`` joins tables of the same two networks trained under different
recipes (the bf16 GPU seeds and fp32 CPU seeds, say) without pooling their runs: each table's
gain weighted by its inverse variance, an interval with Welch-Satterthwaite degrees of
freedom, and Cochran's Q for whether the tables disagree.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


# config.json fields that say which run this is or where it writes, not how it trains
NOT_RECIPE = ("model", "seed", "out", "export", "data", "progress", "threads", "max_minutes",
              "device")


def recipe_of(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if k not in NOT_RECIPE}


def common_recipe(runs: list[dict]) -> dict:
    """The recipe every run shares; SystemExit naming the first field where two differ."""
    first = runs[0]
    for r in runs[1:]:
        for k in sorted(set(first["recipe"]) | set(r["recipe"])):
            if first["recipe"].get(k) != r["recipe"].get(k):
                raise SystemExit(f"runs train differently: {k} = {first['recipe'].get(k)!r} in "
                                 f"{first['run']} but {r['recipe'].get(k)!r} in {r['run']}")
    return dict(first["recipe"])


def read_run(arg: str) -> dict:
    run, _, model_file = arg.partition("=")
    run = Path(run)
    cfg = json.loads((run / "config.json").read_text())
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    epochs = [r for r in log if "val_acc" in r and "rollback" not in r]
    if not epochs:
        raise SystemExit(f"{run}: no finished epoch in log.jsonl")
    if model_file:
        model_file = Path(model_file)
    else:
        export = Path(cfg["export"])
        model_file = export if export.suffix == ".json" else export.with_suffix(".json")
    if not model_file.is_absolute():
        model_file = Path.cwd() / model_file
    if not model_file.exists():
        raise SystemExit(f"{run}: no model file {model_file} (give it as {run}=MODEL.json)")
    return {"run": str(run), "model": cfg["model"], "seed": cfg["seed"],
            "epochs": max(r["epoch"] for r in epochs), "planned_epochs": cfg["epochs"],
            "best_val": max(r["val_acc"] for r in epochs),
            "rollbacks": max([r.get("rollback", 0) for r in log] + [0]),
            "final_train_acc": epochs[-1]["train_acc"], "model_file": str(model_file),
            "recipe": recipe_of(cfg)}


def _fraction(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= v <= 1.0


def read_previous(path: str) -> tuple[list[dict], dict]:
    """The runs of an earlier ``--json`` output (each with the file's recipe, to be checked
    against the new runs') and where they came from; SystemExit on anything malformed."""
    try:
        d = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise SystemExit(f"--previous {path}: {e}") from None
    if not (isinstance(d, dict) and isinstance(d.get("recipe"), dict)
            and isinstance(d.get("runs"), list) and d["runs"]):
        raise SystemExit(f"--previous {path}: not a bench/seeds.py --json output "
                         "(needs its recipe and runs)")
    runs = []
    for i, r in enumerate(d["runs"]):
        if not (isinstance(r, dict) and isinstance(r.get("model"), str)
                and all(type(r.get(k)) is int and r[k] >= 0 for k in ("seed", "epochs", "rollbacks"))
                and _fraction(r.get("test")) and _fraction(r.get("best_val"))):
            raise SystemExit(f"--previous {path}: run {i} lacks a model, a seed, epochs, "
                             "rollbacks or accuracies in [0, 1]")
        runs.append(dict(r, recipe=d["recipe"], recorded_in=r.get("recorded_in", str(path))))
    return runs, {"file": str(path), "command": d.get("command")}


def test_accuracy(model_file: str, split) -> float:
    from hemet import modelfile, reference
    return reference.accuracy(modelfile.load(model_file), split.images, split.labels, 250)


def t_cdf(t: float, df: float) -> float:
    """Student's t distribution function, by Simpson's rule on its density (no SciPy here)."""
    if t < 0:
        return 1.0 - t_cdf(-t, df)
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
    f = lambda x: c * (1 + x * x / df) ** (-(df + 1) / 2)  # noqa: E731
    # the density's tail beyond |t| = 200 holds under 1e-9 of the mass for df >= 2; there the
    # steps would be too coarse, so integrate up to 200 and add the tail's closed form
    top, n = min(t, 200.0), 4000
    h = top / n
    area = f(0) + f(top) + sum((4 if i % 2 else 2) * f(i * h) for i in range(1, n))
    inside = 0.5 + area * h / 3
    if t > 200.0:  # P(T > x) ~ c x^-df (df^((df+1)/2)) / df for large x
        inside += c * df ** ((df - 1) / 2) * (200.0 ** -df - t ** -df)
    return min(inside, 1.0)


def t_quantile(p: float, df: float) -> float:
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
    return (lo + hi) / 2


def welch_interval(sa: dict, sb: dict, level: float = 0.95) -> tuple[float, float, float]:
    """The interval for the difference of means, in points, and its Welch-Satterthwaite
    degrees of freedom: the two networks' spreads differ five-fold, so no pooled variance."""
    va, vb = sa["std"] ** 2 / sa["n"], sb["std"] ** 2 / sb["n"]
    df = (va + vb) ** 2 / (va ** 2 / (sa["n"] - 1) + vb ** 2 / (sb["n"] - 1))
    half = 100 * t_quantile((1 + level) / 2, df) * math.sqrt(va + vb)
    diff = 100 * (sb["mean"] - sa["mean"])
    return diff - half, diff + half, df


def chi2_sf(x: float, df: int) -> float:
    """P(X > x) for X ~ chi-square with integer df, in closed form (no SciPy here)."""
    if x <= 0:
        return 1.0
    h = x / 2
    if df % 2 == 0:
        return math.exp(-h) * sum(h ** j / math.factorial(j) for j in range(df // 2))
    return math.erfc(math.sqrt(h)) + math.exp(-h) * sum(
        h ** (j - 0.5) / math.gamma(j + 0.5) for j in range(1, (df + 1) // 2))


def combine(tables: list[dict], names: list[str], level: float = 0.95) -> dict:
    """One gain from several tables of the same two networks trained under different recipes
    (bf16 on a GPU, fp32 on CPUs...): each table's Welch gain, weighted by its inverse
    variance.  Runs of different recipes never share a mean; the recipes only share the
    question.  The interval's degrees of freedom are Welch-Satterthwaite's over all the
    means the estimate is a combination of (the weights are taken as known, as is usual);
    Cochran's Q says whether the tables' gains differ by more than their errors."""
    if len(tables) < 2:
        raise SystemExit("--combine needs two or more tables")
    pair, rows = None, []
    for t, name in zip(tables, names):
        g = t.get("gain") if isinstance(t, dict) else None
        if not (g and g.get("stderr") and isinstance(t.get("recipe"), dict)):
            raise SystemExit(f"{name}: not a two-network bench/seeds.py --json table with "
                             "two or more seeds per network")
        if pair is None:
            pair = (g["over"], g["of"])
        elif (g["over"], g["of"]) != pair:
            raise SystemExit(f"{name} compares {g['of']} with {g['over']}, not {pair[1]} with "
                             f"{pair[0]}")
        try:
            nets = [t["networks"][pair[0]], t["networks"][pair[1]]]
            parts = [100 ** 2 * s["std"] ** 2 / s["n"] for s in nets]
            if not all(type(s["n"]) is int and s["n"] > 1 for s in nets):
                raise TypeError
        except (KeyError, TypeError, ZeroDivisionError):
            raise SystemExit(f"{name}: malformed table (networks {pair}, each with n > 1 "
                             "and a std)") from None
        rows.append({"table": name, "points": g["points"], "stderr": g["stderr"],
                     "n": [s["n"] for s in nets], "parts": parts, "recipe": t["recipe"],
                     "dof": [s["n"] - 1 for s in nets]})
    for i, a in enumerate(rows):
        for b in rows[i + 1:]:
            if a["recipe"] == b["recipe"]:
                raise SystemExit(f"{a['table']} and {b['table']} share a recipe: make them one "
                                 "table (bench/seeds.py --previous)")
    w = [1 / sum(r["parts"]) for r in rows]
    total = sum(w)
    points = sum(wi * r["points"] for wi, r in zip(w, rows)) / total
    var = 1 / total
    df = var ** 2 / sum(((wi / total) ** 2 * v) ** 2 / d
                        for wi, r in zip(w, rows) for v, d in zip(r["parts"], r["dof"]))
    half = t_quantile((1 + level) / 2, df) * math.sqrt(var)
    q = sum(wi * (r["points"] - points) ** 2 for wi, r in zip(w, rows))
    differ = sorted({k for r in rows for k in set(r["recipe"]) | set(rows[0]["recipe"])
                     if r["recipe"].get(k) != rows[0]["recipe"].get(k)})
    return {"of": pair[1], "over": pair[0], "points": points, "stderr": math.sqrt(var),
            "ci": {"level": level, "low": points - half, "high": points + half, "df": df},
            "heterogeneity": {"q": q, "df": len(rows) - 1, "p": chi2_sf(q, len(rows) - 1)},
            "tables": [{"table": r["table"], "points": r["points"], "stderr": r["stderr"],
                        "seeds": dict(zip(pair, r["n"])), "weight": wi / total,
                        # the recipe fields on which the tables differ
                        "recipe": {k: r["recipe"].get(k) for k in differ}}
                       for wi, r in zip(w, rows)]}


def summarize(runs: list[dict]) -> dict:
    nets: dict[str, list[dict]] = {}
    for r in runs:
        nets.setdefault(r["model"], []).append(r)
    recipe = common_recipe(runs)
    runs = [{k: v for k, v in r.items() if k != "recipe"} for r in runs]
    out = {"recipe": recipe, "runs": runs, "networks": {}}
    for name, rs in nets.items():
        acc = [r["test"] for r in rs]
        out["networks"][name] = {
            "seeds": [r["seed"] for r in rs], "n": len(acc), "mean": statistics.fmean(acc),
            "std": statistics.stdev(acc) if len(acc) > 1 else None,
            "min": min(acc), "max": max(acc)}
    if len(nets) == 2:
        (a, sa), (b, sb) = out["networks"].items()
        diff = 100 * (sb["mean"] - sa["mean"])
        se = None
        if sa["std"] is not None and sb["std"] is not None:
            se = 100 * math.sqrt(sa["std"] ** 2 / sa["n"] + sb["std"] ** 2 / sb["n"])
        paired = sorted(set(sa["seeds"]) & set(sb["seeds"]))
        by = {(r["model"], r["seed"]): r["test"] for r in runs}
        per_seed = {s: 100 * (by[(b, s)] - by[(a, s)]) for s in paired}
        ci = None
        if se:
            lo, hi, df = welch_interval(sa, sb)
            ci = {"level": 0.95, "low": lo, "high": hi, "df": df}
        out["gain"] = {"of": b, "over": a, "points": diff, "stderr": se, "ci": ci,
                       "per_seed": per_seed,
                       "median_per_seed": statistics.median(per_seed.values()) if paired else None}
    return out


def plot(out: dict, path: Path) -> str | None:
    """Every run's test accuracy per network, its mean and the mean's standard error."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install matplotlib): no plot", file=sys.stderr)
        return None
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for x, (name, s) in enumerate(out["networks"].items()):
        rs = [r for r in out["runs"] if r["model"] == name]
        ax.scatter([x] * len(rs), [100 * r["test"] for r in rs], color="C0", zorder=3,
                   label="one seed" if x == 0 else None)
        for r in rs:
            ax.annotate(str(r["seed"]), (x, 100 * r["test"]), xytext=(6, -3),
                        textcoords="offset points", fontsize=8)
        se = 100 * s["std"] / math.sqrt(s["n"]) if s["std"] is not None else 0.0
        ax.errorbar([x + 0.25], [100 * s["mean"]], yerr=[se], fmt="s", color="C3", capsize=4,
                    label="mean +- standard error" if x == 0 else None)
    names = list(out["networks"])
    ax.set_xticks(range(len(names)), names)
    ax.set_xlim(-0.5, len(names) - 0.3)
    ax.set_ylabel("test accuracy, full CIFAR-10 test set (%)")
    g = out.get("gain")
    title = "test accuracy per training seed"
    if g and g["stderr"] is not None:
        title += f"\ngain {g['points']:+.2f} points (standard error {g['stderr']:.2f})"
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)


def print_combined(files: list[str], as_json: bool) -> int:
    tables = []
    for f in files:
        try:
            tables.append(json.loads(Path(f).read_text()))
        except (OSError, ValueError) as e:
            raise SystemExit(f"--combine {f}: {e}") from None
    c = combine(tables, files)
    if as_json:
        print(json.dumps(c, indent=1))
        return 0
    for t in c["tables"]:
        print(f"{t['table']}: {t['points']:+.2f} points (standard error {t['stderr']:.2f}), "
              f"seeds {t['seeds']}, weight {t['weight']:.2f}, {t['recipe']}")
    h = c["heterogeneity"]
    print(f"combined gain of {c['of']} over {c['over']}: {c['points']:+.2f} points (standard "
          f"error {c['stderr']:.2f}), 95% interval {c['ci']['low']:+.2f} to "
          f"{c['ci']['high']:+.2f}; tables differ: Q = {h['q']:.2f} on {h['df']} df, p = {h['p']:.2f}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="*", help="hemet train --out directories (DIR or DIR=MODEL.json)")
    ap.add_argument("--data", default=None, help="CIFAR-10 directory (default: $HEMET_DATA)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--plot", default=None, metavar="PNG", help="draw the runs' accuracies")
    ap.add_argument("--previous", default=None, metavar="JSON",
                    help="an earlier --json output whose runs (and test accuracies) to include")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                    help="models evaluated at once (default: one per core)")
    ap.add_argument("--combine", nargs="+", default=None, metavar="JSON",
                    help="instead of runs: two or more --json tables of the same two networks "
                         "under different recipes, whose gains to combine")
    raw = sys.argv[1:] if argv is None else list(argv)
    a = ap.parse_args(raw)
    if a.combine:
        if a.runs or a.previous or a.plot:
            ap.error("--combine takes tables only (no runs, --previous or --plot)")
        return print_combined(a.combine, a.json)
    if not a.runs:
        ap.error("give run directories (or --combine tables)")
    from hemet import data as D
    split = D.load_dataset("cifar10", a.data, "test")
    runs = []
    for run in a.runs:
        r = read_run(run)
        if r["epochs"] < r["planned_epochs"]:
            print(f"skipping {run}: {r['epochs']} of {r['planned_epochs']} epochs done",
                  file=sys.stderr)
            continue
        runs.append(r)
    previous, source = read_previous(a.previous) if a.previous else ([], None)
    seen = {(r["model"], r["seed"]) for r in previous}
    for r in runs:
        if (r["model"], r["seed"]) in seen:
            raise SystemExit(f"{r['run']}: seed {r['seed']} of {r['model']} is already in "
                             f"{a.previous}")
    # each model's test pass is single-threaded numpy: --jobs of them at once
    with ProcessPoolExecutor(max(1, a.jobs)) as pool:
        tests = pool.map(test_accuracy, [r["model_file"] for r in runs], [split] * len(runs))
        for r, t in zip(runs, tests):
            r["test"] = t
            print(f"{r['model']:>16} seed {r['seed']}: test {100 * r['test']:.2f}%  best val "
                  f"{100 * r['best_val']:.2f}%  rollbacks {r['rollbacks']}", file=sys.stderr)
    runs = previous + runs
    if not runs:
        raise SystemExit("no finished runs")
    out = summarize(runs)
    out["command"] = " ".join(["python bench/seeds.py"] + raw)
    if source:
        out["previous"] = source
    if a.plot:
        out["plot"] = plot(out, Path(a.plot))
    if a.json:
        print(json.dumps(out, indent=1))
        return 0
    for name, s in out["networks"].items():
        std = f" +- {100 * s['std']:.2f}" if s["std"] is not None else ""
        print(f"{name}: {s['n']} seeds, test {100 * s['mean']:.2f}%{std} "
              f"(range {100 * s['min']:.2f}-{100 * s['max']:.2f})")
    g = out.get("gain")
    if g:
        se = f" (standard error {g['stderr']:.2f})" if g["stderr"] is not None else ""
        if g["ci"]:
            se += f", 95% interval {g['ci']['low']:+.2f} to {g['ci']['high']:+.2f}"
        print(f"gain of {g['of']} over {g['over']}: {g['points']:+.2f} points{se}; per seed "
              + ", ".join(f"{s}: {d:+.2f}" for s, d in g["per_seed"].items())
              + (f" (median {g['median_per_seed']:+.2f})" if g["per_seed"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
