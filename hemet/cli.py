"""``hemet`` command line: a registry of subcommands.

Add a subcommand with::

    @command("name", "one-line help")
    def _setup(p: argparse.ArgumentParser): ...      # add arguments
    def _run(args) -> int: ...                        # then: _setup.run = _run

or ``register(name, help, setup, run)``.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

__all__ = ["main", "register", "COMMANDS", "resolve_model"]


@dataclass
class Command:
    name: str
    help: str
    setup: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: dict[str, Command] = {}


def register(name: str, help: str, setup, run) -> None:
    if name in COMMANDS:
        raise ValueError(f"subcommand {name!r} already registered")
    COMMANDS[name] = Command(name, help, setup, run)


# ------------------------------------------------------------------ model lookup

def assets_dir() -> Path:
    return Path(__file__).resolve().parent / "assets"


def shipped_models() -> dict[str, Path]:
    """Names of the shipped model files (plus aliases such as ``hemet-cifar10``)."""
    d = assets_dir()
    out = {p.stem: p for p in sorted(d.glob("*.json")) if p.stem != "aliases"}
    alias_file = d / "aliases.json"
    if alias_file.is_file():
        for alias, target in json.loads(alias_file.read_text()).items():
            if target in out:
                out[alias] = out[target]
    return out


def resolve_model(name: str) -> Path:
    """A shipped model name or a path to a model file (``.json``/``.npz``/base path)."""
    shipped = shipped_models()
    if name in shipped:
        return shipped[name]
    p = Path(name)
    from .modelfile import resolve_path
    jpath, _ = resolve_path(p)
    if jpath.is_file():
        return jpath
    raise FileNotFoundError(f"no model {name!r}: not a shipped model ({', '.join(shipped)}) "
                            f"and no file {str(jpath)!r}")


# ------------------------------------------------------------------ train

def _train_setup(p: argparse.ArgumentParser) -> None:
    from .train import TrainConfig
    d = TrainConfig()
    p.add_argument("--model", required=True, help="network: squeezenet, hemet-fire4, "
                   "hemet-fire3-4, hemet-fire2-4, hemet-fire1-4, dwsep")
    p.add_argument("--dataset", default="cifar10", choices=["cifar10", "cifar100",
                                                            "cifar100-coarse"])
    p.add_argument("--data", default=None, help="data directory (default: $HEMET_DATA)")
    p.add_argument("--out", default=None, help="run directory (checkpoints, log); "
                   "default runs/<model>-<dataset>")
    p.add_argument("--export", default=None, help="model file base path written at the end "
                   "from the best-on-validation checkpoint")
    p.add_argument("--resume", action="store_true", help="continue from <out>/last.pt")
    for k in ("epochs", "batch_size", "lr", "momentum", "weight_decay", "coef_decay",
              "warmup_epochs", "label_smoothing", "clip", "act_reg", "act_range", "n_val",
              "seed", "threads", "limit_train", "max_minutes", "cutout", "max_rollbacks"):
        v = getattr(d, k)
        typ = float if isinstance(v, float) or k == "max_minutes" else int
        p.add_argument("--" + k.replace("_", "-"), type=typ, default=v)
    p.add_argument("--activation", default="poly", choices=["poly", "square"])
    p.add_argument("--poly-init", type=float, nargs=3, default=list(d.poly_init),
                   metavar=("A", "B", "C"))
    p.add_argument("--no-compile", dest="compile", action="store_false",
                   help="train eagerly instead of through torch.compile (about 2x slower)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="bf16 autocast (auto: where the CPU or GPU does bf16 natively)")
    p.add_argument("--device", default=d.device,
                   help="cpu, cuda or cuda:N (auto: a CUDA GPU where torch sees one, else cpu)")
    p.add_argument("--no-progress", action="store_true")


def _train_run(a: argparse.Namespace) -> int:
    from .train import TrainConfig, resolve_device, train
    try:
        resolve_device(a.device)  # before any data is read
    except ValueError as e:
        print(f"hemet train: error: {e}", file=sys.stderr)
        return 2
    cfg = TrainConfig(
        model=a.model, dataset=a.dataset, data=a.data,
        out=a.out or f"runs/{a.model}-{a.dataset}", epochs=a.epochs, batch_size=a.batch_size,
        lr=a.lr, momentum=a.momentum, weight_decay=a.weight_decay, coef_decay=a.coef_decay,
        warmup_epochs=a.warmup_epochs, label_smoothing=a.label_smoothing, clip=a.clip,
        act_reg=a.act_reg, act_range=a.act_range, poly_init=tuple(a.poly_init),
        activation=a.activation, n_val=a.n_val, seed=a.seed, threads=a.threads,
        limit_train=a.limit_train, export=a.export, progress=not a.no_progress,
        max_minutes=a.max_minutes, compile=a.compile, precision=a.precision, cutout=a.cutout,
        max_rollbacks=a.max_rollbacks, device=a.device)
    summary = train(cfg, resume=a.resume, log=lambda m: print(m, flush=True))
    print(json.dumps(summary))
    return 0


# ------------------------------------------------------------------ eval

def _eval_setup(p: argparse.ArgumentParser) -> None:
    p.add_argument("--plain", action="store_true", required=True,
                   help="plaintext evaluation of the polynomial network (NumPy float64 reference)")
    p.add_argument("--model", required=True, help="shipped model name or model file path")
    p.add_argument("--dataset", default="cifar10", choices=["cifar10", "cifar100",
                                                            "cifar100-coarse", "sample"],
                   help="'sample' uses the 64 CIFAR-10 test images shipped with the package")
    p.add_argument("--data", default=None, help="data directory (default: $HEMET_DATA)")
    p.add_argument("--split", default="test", choices=["test", "train"])
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N images")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _eval_run(a: argparse.Namespace) -> int:
    from . import data as D
    from . import modelfile, reference
    model = modelfile.load(resolve_model(a.model))
    if a.dataset == "sample":
        split = D.load_sample()
        classes = 10
    else:
        split = D.load_dataset(a.dataset, a.data, a.split)
        classes = D.NUM_CLASSES[a.dataset]
    if model.classes != classes:
        raise SystemExit(f"hemet eval: model {a.model!r} has {model.classes} classes but "
                         f"{a.dataset} has {classes}")
    images, labels = split.images, split.labels
    if a.limit is not None:
        images, labels = images[:a.limit], labels[:a.limit]
    progress = None
    if not a.json:
        try:
            from tqdm import tqdm
            progress = lambda it: tqdm(it, desc="eval", leave=False, file=sys.stderr)  # noqa: E731
        except ImportError:
            pass
    acc = reference.accuracy(model, images, labels, a.batch_size, progress)
    if a.json:
        print(json.dumps({"model": a.model, "accuracy": acc, "n": int(len(labels))}))
    else:
        print(f"{a.model}: accuracy {acc:.4f} on {len(labels)} {a.dataset} {a.split} images "
              f"(plaintext polynomial network)")
    return 0


# ------------------------------------------------------------------ info

def _info_setup(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="shipped model name, model file path, or a "
                   "zoo network name (squeezenet, hemet-fire1-4, ...)")
    p.add_argument("--classes", type=int, default=10, help="head size for zoo network names")
    p.add_argument("--json", action="store_true")


def _info_run(a: argparse.Namespace) -> int:
    from . import zoo
    if a.model in zoo.NETWORKS:
        graph = zoo.build(a.model, a.classes)
    else:
        from .modelfile import load
        graph = load(resolve_model(a.model)).graph
    s = graph.summary()
    s["model"] = a.model
    if a.json:
        print(json.dumps(s))
    else:
        print(f"{a.model}: {s['params']} params ({s['params_folded']} after folding BN), "
              f"{s['macs'] / 1e6:.2f}M MACs, multiplicative depth {s['depth']}, "
              f"{s['activations']} polynomial activations")
    return 0


register("train", "train a network on CIFAR (PyTorch)", _train_setup, _train_run)
register("eval", "evaluate a model file", _eval_setup, _eval_run)
register("info", "parameters, MACs and multiplicative depth of a network", _info_setup, _info_run)


# ------------------------------------------------------------------ search (hemet.search)

def _search_command(name):
    """Setup/run from hemet.search.commands, imported only when the command runs."""
    def setup(p):
        from .search import commands
        getattr(commands, f"{name}_setup")(p)

    def run(a):
        from .search import commands
        return getattr(commands, f"{name}_run")(a)
    return setup, run


register("calibrate", "time each HE operation per level for the latency model (hemet search)",
         *_search_command("calibrate"))
register("search", "greedy HE-friendly architecture search with the calibrated latency model",
         *_search_command("search"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hemet", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for c in COMMANDS.values():
        c.setup(sub.add_parser(c.name, help=c.help, description=c.help))
    return parser


def main(argv: list[str] | None = None) -> int:
    from .data import DataError
    from .modelfile import ModelFormatError
    from . import commands  # noqa: F401  (private-inference subcommands register themselves)
    args = build_parser().parse_args(argv)
    try:
        return int(COMMANDS[args.command].run(args) or 0)
    except (DataError, ModelFormatError, FileNotFoundError) as e:
        print(f"hemet {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
