"""Training of the HE-friendly networks (PyTorch; CPU threads or a CUDA GPU).

Recipe: random crop (pad 4) + horizontal flip, SGD with Nesterov momentum, linear warm-up
then cosine decay, weight decay (not on batch norm / polynomial b, c), label smoothing,
gradient-norm clipping, an L2 pull of the polynomial coefficients a towards 0, an
optional activation-range penalty on the inputs of the polynomial activations and optional
cutout.  Stacked x^2 activations occasionally blow up at high learning rates: an epoch after
which validation accuracy has collapsed (below half the best so far) or the loss went
non-finite is undone and retried at half the learning rate (``rollbacks`` in the log).
Model selection uses a validation split held out of the training set; the test set is
never looked at here.  Checkpoints (``last.pt``, ``best.pt``) allow resuming.
"""
from __future__ import annotations

import copy
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from . import data as D
from . import modelfile, zoo

__all__ = ["TrainConfig", "train", "augment_batch", "evaluate_torch"]


@dataclass
class TrainConfig:
    model: str = "squeezenet"
    dataset: str = "cifar10"
    data: str | None = None
    out: str = "runs/train"
    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    coef_decay: float = 5e-3        # L2 pull on the poly coefficients a
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    clip: float = 5.0
    act_reg: float = 1e-4           # penalty on poly inputs beyond act_range
    act_range: float = 4.0
    poly_init: tuple = (0.1, 1.0, 0.0)
    activation: str = "poly"
    n_val: int = 5000
    seed: int = 0
    threads: int = 1
    limit_train: int | None = None  # for smoke tests
    eval_every: int = 1
    export: str | None = None       # model file base path written at the end (best on val)
    progress: bool = True
    max_minutes: float | None = None  # stop (resumable) after this much wall time
    compile: bool = True            # torch.compile the training step (a speed choice only)
    precision: str = "auto"         # "bf16" autocast where the CPU does bf16 natively, else "fp32"
    cutout: int = 0                 # side of a random square set to the mean pixel (0: off)
    max_rollbacks: int = 4          # undone diverged epochs before the run gives up
    device: str = "auto"            # "cpu", "cuda", "cuda:N"; "auto": a CUDA GPU where torch sees one


def augment_batch(images: np.ndarray, rng: np.random.Generator, pad: int = 4,
                  cutout: int = 0, fill=(0, 0, 0)) -> np.ndarray:
    """Random crop with zero padding ``pad`` and random horizontal flip (uint8 NHWC); with
    ``cutout`` > 0, a ``cutout``-sided square centred anywhere in the image (clipped at the
    border) is set to ``fill``."""
    n, h, w, c = images.shape
    padded = np.zeros((n, h + 2 * pad, w + 2 * pad, c), dtype=images.dtype)
    padded[:, pad:pad + h, pad:pad + w] = images
    dy = rng.integers(0, 2 * pad + 1, n)
    dx = rng.integers(0, 2 * pad + 1, n)
    flip = rng.random(n) < 0.5
    out = np.empty_like(images)
    for i in range(n):
        crop = padded[i, dy[i]:dy[i] + h, dx[i]:dx[i] + w]
        out[i] = crop[:, ::-1] if flip[i] else crop
    if cutout > 0:
        cy = rng.integers(0, h, n)
        cx = rng.integers(0, w, n)
        half = cutout // 2
        fill = np.asarray(fill, dtype=images.dtype)
        for i in range(n):
            y0, x0 = max(cy[i] - half, 0), max(cx[i] - half, 0)
            out[i, y0:cy[i] - half + cutout, x0:cx[i] - half + cutout] = fill
    return out


def collapsed(val_acc: float, best_val: float) -> bool:
    """Whether an epoch's validation accuracy says training diverged (rather than a noisy
    epoch): below half the best so far, once the best is clearly above chance."""
    return best_val > 0.3 and val_acc < 0.5 * best_val


def _to_tensor(images: np.ndarray):
    import torch
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)


def evaluate_torch(net, split: D.Split, batch_size: int = 500) -> float:
    """Accuracy of a torch network on a split (eval mode, on the network's device)."""
    import torch
    net.eval()
    device = next(net.parameters()).device
    correct = 0
    with torch.no_grad():
        for i in range(0, len(split), batch_size):
            x = _to_tensor(split.images[i:i + batch_size]).to(device)
            pred = net(x).argmax(1).cpu().numpy()
            correct += int((pred == split.labels[i:i + batch_size]).sum())
    return correct / max(len(split), 1)


def _progress(it, total, desc, enabled):
    if enabled:
        try:
            from tqdm import tqdm
            return tqdm(it, total=total, desc=desc, leave=False, mininterval=5.0,
                        file=sys.stderr, dynamic_ncols=True)
        except ImportError:
            pass
    return it


def _param_groups(net, cfg: TrainConfig):
    from .torch_modules import PolyAct
    decay, no_decay, coef_a = [], [], []
    for mod in net.modules():
        for pname, p in mod.named_parameters(recurse=False):
            if isinstance(mod, PolyAct):
                (coef_a if pname == "a" else no_decay).append(p)
            elif p.dim() <= 1:  # BN affine, biases
                no_decay.append(p)
            else:
                decay.append(p)
    return [{"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
            {"params": coef_a, "weight_decay": cfg.coef_decay}]


def _lr_at(step: int, total: int, warm: int, base: float) -> float:
    if step < warm:
        return base * (step + 1) / warm
    t = (step - warm) / max(total - warm, 1)
    return base * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


def _log(path: Path, rec: dict):
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")


def _save(obj, path: Path):
    """``torch.save`` through a temporary file: a run killed mid-write (a session's end) keeps
    the previous checkpoint whole."""
    import torch
    torch.save(obj, str(path) + ".tmp")
    os.replace(str(path) + ".tmp", path)


def build_net(cfg: TrainConfig):
    from .torch_modules import GraphNet
    classes = D.NUM_CLASSES[cfg.dataset]
    graph = zoo.build(cfg.model, classes, cfg.activation)
    graph.name = f"{cfg.model}-{cfg.dataset}"
    return graph, GraphNet(graph, tuple(cfg.poly_init))


# fields a resumed run may change: they do not affect the trained weights
_RUN_CONTROL = ("threads", "progress", "max_minutes", "export", "data", "out", "compile",
                "device")


def _config_from(saved: dict) -> TrainConfig:
    """A checkpoint's config; fields of older versions that no longer exist are dropped."""
    known = {f.name for f in fields(TrainConfig)}
    cfg = {k: v for k, v in saved.items() if k in known}
    cfg["poly_init"] = tuple(cfg["poly_init"])
    return TrainConfig(**cfg)


def resolve_device(device: str) -> str:
    """"auto" -> "cuda" where this torch build sees a GPU, else "cpu"; a GPU named outright
    must exist (a CPU-only torch says so instead of failing at the first step)."""
    import torch
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as e:
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}") from e
    if dev.type == "cpu":
        return "cpu"
    if dev.type != "cuda":
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")
    if not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: torch {torch.__version__} sees no CUDA GPU")
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device {device!r}: only {torch.cuda.device_count()} CUDA GPU(s)")
    return str(dev)


def resolve_precision(precision: str, device: str = "cpu") -> str:
    """"auto" -> "bf16" where the device does bf16 natively (CPUs with AMX or AVX-512 BF16:
    1.8-2.1x faster steps here; GPUs that torch says support it), else "fp32".  Matmuls
    accumulate in fp32; batch norm and the loss stay fp32."""
    if precision in ("fp32", "bf16"):
        return precision
    if precision != "auto":
        raise ValueError(f"precision must be auto, fp32 or bf16, got {precision!r}")
    import torch
    if device.startswith("cuda"):
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    cpu = getattr(torch, "cpu", None)
    native = any(getattr(cpu, f, lambda: False)() for f in
                 ("_is_amx_tile_supported", "_is_avx512_bf16_supported"))
    return "bf16" if native else "fp32"


def _compiled(net, log):
    """``net.run`` through torch.compile (about 2x faster steps on CPU: it fuses the batch-norm,
    activation and penalty passes that dominate eager time), or eager where compiling fails."""
    import torch
    state = {"fn": torch.compile(net.run), "checked": False}

    def step(xs, act_range):
        if state["checked"]:
            return state["fn"](xs, act_range)
        state["checked"] = True
        try:  # compilation happens on the first call
            return state["fn"](xs, act_range)
        except Exception as e:  # no C++ toolchain, unsupported platform
            log(f"torch.compile unavailable ({type(e).__name__}); training eagerly")
            state["fn"] = net.run
            return net.run(xs, act_range)
    return step


def sgd_step(net, step_fn, opt, x, y, cfg, bf16: bool):
    """One step of the recipe (bf16 autocast where asked, label-smoothed cross entropy plus the
    penalty on activation inputs beyond ``cfg.act_range``, clipped gradients): (cross entropy,
    loss with the penalty, fp32 logits), or None when the loss is not finite (no update).
    ``cfg`` needs act_reg, act_range, label_smoothing and clip (``TrainConfig`` or the
    search's ``FinetuneConfig``)."""
    import torch
    import torch.nn.functional as F
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        logits, pen = step_fn((x,), cfg.act_range if cfg.act_reg > 0 else None)
    logits = logits.float()
    loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
    loss_total = loss if pen is None else loss + cfg.act_reg * pen.float()
    if not torch.isfinite(loss_total):
        return None
    opt.zero_grad(set_to_none=True)
    loss_total.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.clip)
    opt.step()
    return loss, loss_total, logits


def train(cfg: TrainConfig, resume: bool = False, log=print) -> dict:
    """Train (or resume) and export the best-on-validation model; returns a summary."""
    import torch

    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    last_ckpt, best_ckpt = out / "last.pt", out / "best.pt"
    if resume and last_ckpt.is_file():
        state = torch.load(last_ckpt, map_location="cpu", weights_only=False)
        saved = state["config"]
        saved["poly_init"] = tuple(saved["poly_init"])
        # the schedule and data are fixed by the run; allow changing only run-control fields
        for k in _RUN_CONTROL:
            saved[k] = getattr(cfg, k)
        if cfg.epochs != saved["epochs"]:
            log(f"note: schedule changed from {saved['epochs']} to {cfg.epochs} epochs")
            saved["epochs"] = cfg.epochs
        cfg = _config_from(saved)
        cfg.device = resolve_device(cfg.device)
    else:
        state = None
        cfg.device = resolve_device(cfg.device)
        cfg.precision = resolve_precision(cfg.precision, cfg.device)  # recorded: it shapes the weights
        with open(out / "config.json", "w") as f:
            json.dump(asdict(cfg), f, indent=1)

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    full = D.load_dataset(cfg.dataset, cfg.data, "train")
    tr, val = D.train_val_split(full, cfg.n_val, seed=12345)
    if cfg.limit_train:
        tr = D.Split(tr.images[:cfg.limit_train], tr.labels[:cfg.limit_train])
    graph, net = build_net(cfg)
    net.to(cfg.device)  # after the CPU-seeded initialization: every device starts alike
    step_fn = _compiled(net, log) if cfg.compile else net.run
    opt = torch.optim.SGD(_param_groups(net, cfg), lr=cfg.lr, momentum=cfg.momentum,
                          nesterov=True)
    steps_per_epoch = math.ceil(len(tr) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    warm = max(1, int(cfg.warmup_epochs * steps_per_epoch))
    start_epoch, step, best_val, history = 0, 0, -1.0, []
    lr_scale, rollbacks = 1.0, 0
    if state is not None:
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start_epoch, step, best_val = state["epoch"], state["step"], state["best_val"]
        history = state.get("history", [])
        # the log as of the checkpoint: a record written by an epoch whose checkpoint never
        # landed (killed in between) would otherwise stand twice once that epoch runs again
        tmp = out / "log.jsonl.tmp"
        tmp.write_text("".join(json.dumps(r) + "\n" for r in history))
        os.replace(tmp, out / "log.jsonl")
        lr_scale, rollbacks = state.get("lr_scale", 1.0), state.get("rollbacks", 0)
        rng = np.random.default_rng()
        rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        log(f"resumed {cfg.model} at epoch {start_epoch}/{cfg.epochs} (best val {best_val:.4f})")
    log(f"{cfg.model} on {cfg.dataset}: {len(tr)} train / {len(val)} val, {cfg.epochs} epochs, "
        f"{cfg.precision} on {cfg.device}, "
        f"{graph.params()} params, {graph.macs() / 1e6:.1f}M MACs, depth {graph.depth()}")
    t_start = time.time()
    from .torch_modules import poly_modules
    polys = poly_modules(net)
    fill = tuple(int(round(255 * m)) for m in D.dataset_stats(cfg.dataset)[0])
    epoch = start_epoch
    while epoch < cfg.epochs:
        snapshot = (copy.deepcopy(net.state_dict()), copy.deepcopy(opt.state_dict()), step)
        diverged = False
        net.train()
        perm = rng.permutation(len(tr))
        t0, seen, loss_sum, correct = time.time(), 0, 0.0, 0
        bar = _progress(range(steps_per_epoch), steps_per_epoch,
                        f"{cfg.model} ep {epoch + 1}/{cfg.epochs}", cfg.progress)
        for b in bar:
            idx = perm[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            x = _to_tensor(augment_batch(tr.images[idx], rng, cutout=cfg.cutout, fill=fill))
            x, y = x.to(cfg.device), torch.from_numpy(tr.labels[idx]).to(cfg.device)
            lr = _lr_at(step, total, warm, cfg.lr) * lr_scale
            for g in opt.param_groups:
                g["lr"] = lr
            done = sgd_step(net, step_fn, opt, x, y, cfg, cfg.precision == "bf16")
            if done is None:
                diverged = True
                break
            loss, _, logits = done
            step += 1
            seen += len(idx)
            loss_sum += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == y).sum())
            if hasattr(bar, "set_postfix") and b % 20 == 0:
                bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}",
                                lr=f"{lr:.4f}")
        rec = {"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1),
               "train_acc": correct / max(seen, 1), "lr": lr, "sec": time.time() - t0,
               "a_absmax": max((float(p.a.detach().abs().max()) for p in polys), default=0.0)}
        if not diverged and ((epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs):
            rec["val_acc"] = evaluate_torch(net, val)
            diverged = collapsed(rec["val_acc"], best_val)
        if diverged:
            if rollbacks >= cfg.max_rollbacks:
                raise FloatingPointError(
                    f"{cfg.model} diverged at epoch {epoch + 1} after {rollbacks} rollbacks; "
                    "lower --lr or raise --clip/--act-reg")
            rollbacks += 1
            lr_scale *= 0.5
            net.load_state_dict(snapshot[0])
            opt.load_state_dict(snapshot[1])
            step = snapshot[2]
            rec.update(rollback=rollbacks, lr_scale=lr_scale)
            history.append(rec)
            _log(out / "log.jsonl", rec)
            log(f"epoch {epoch + 1} diverged ({rec.get('val_acc', 'non-finite loss')}); "
                f"undone, retrying at {lr_scale:g}x the learning rate")
            continue
        if "val_acc" in rec:
            if rec["val_acc"] > best_val:
                best_val = rec["val_acc"]
                _save({"model": net.state_dict(), "epoch": epoch + 1, "val_acc": best_val,
                       "config": asdict(cfg)}, best_ckpt)
        history.append(rec)
        _log(out / "log.jsonl", rec)
        log(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in rec.items()))
        _save({"model": net.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch + 1,
               "step": step, "best_val": best_val, "config": asdict(cfg),
               "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
               "history": history, "lr_scale": lr_scale, "rollbacks": rollbacks}, last_ckpt)
        epoch += 1
        if cfg.max_minutes and (time.time() - t_start) / 60 > cfg.max_minutes and epoch < cfg.epochs:
            log(f"stopping after {cfg.max_minutes} min; resume with --resume")
            break
    summary = {"model": cfg.model, "dataset": cfg.dataset, "epochs_done": epoch,
               "rollbacks": rollbacks,
               "epochs": cfg.epochs, "best_val": best_val, "out": str(out)}
    if cfg.export:
        summary["export"] = str(export_checkpoint(best_ckpt, cfg.export))
        log(f"exported best-on-val weights to {summary['export']}")
    return summary


def export_checkpoint(ckpt, path, name: str | None = None):
    """Write the model file for a training checkpoint (``best.pt`` / ``last.pt``)."""
    import torch
    from .torch_modules import export_weights
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    cfg = _config_from(state["config"])
    graph, net = build_net(cfg)
    net.load_state_dict(state["model"])
    if name:
        graph.name = name
    graph.metadata = dict(graph.metadata, dataset=cfg.dataset, epochs=state["epoch"],
                          val_acc=state.get("val_acc", state.get("best_val")),
                          recipe={k: getattr(cfg, k) for k in (
                              "epochs", "batch_size", "lr", "weight_decay", "coef_decay",
                              "label_smoothing", "clip", "act_reg", "act_range", "seed",
                              "n_val", "precision", "cutout")})
    w = {k: v.astype(np.float32) for k, v in export_weights(net).items()}
    return modelfile.save(path, graph, w)
