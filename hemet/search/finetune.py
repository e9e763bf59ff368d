"""Accuracy of a candidate architecture after a short fine-tune (PyTorch, the ``train`` extra).

The search passes the weights to start from (carried over where a node keeps its name and
shape, seeded initialization for restarted layers); then ``steps`` SGD steps on the training
split minus the validation images ``hemet.train`` holds out (same split, same seed), and the
accuracy on (a prefix of) that validation split.  The test set is never read.

The steps follow ``hemet.train``'s recipe (its parameter groups, linear warm-up then cosine
decay, the penalty on activation inputs beyond ``act_range``): without the warm-up and the
penalty, restarted layers under x^2 activations sat at chance (loss ln 10) for more than half
of a 2000-step run before the decaying rate let them learn, so where each run ended was luck.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["FinetuneConfig", "finetune"]


@dataclass
class FinetuneConfig:
    steps: int = 2000
    batch_size: int = 64
    lr: float = 0.02
    n_val: int = 5000          # the held-out split of hemet.train (its default)
    eval_images: int = 5000    # validation images scored (a prefix of the split; 5000: all)
    threads: int = 1
    seed: int = 0
    data: str | None = None
    compile: bool = True       # torch.compile (hemet.train: eager where it fails); off for tiny runs
    precision: str = "auto"    # as hemet.train: bf16 autocast where the CPU has native bf16
    label_smoothing: float = 0.1
    warmup: float = 0.1        # fraction of the steps
    weight_decay: float = 5e-4
    coef_decay: float = 5e-3   # hemet.train's pull on the poly coefficients a
    act_reg: float = 1e-4
    act_range: float = 4.0
    clip: float = 5.0


_DATA = {}


def _splits(cfg: FinetuneConfig):
    from hemet import data as D
    key = (cfg.data, cfg.n_val)
    if key not in _DATA:
        full = D.load_dataset("cifar10", cfg.data, "train")
        _DATA[key] = D.train_val_split(full, cfg.n_val, seed=12345)  # hemet.train's split
    return _DATA[key]


def finetune(graph, weights: dict | None, cfg: FinetuneConfig, log=None) -> tuple[float, dict]:
    """(validation accuracy, fine-tuned weights) of ``graph`` started from ``weights``."""
    import torch

    from hemet.torch_modules import GraphNet, export_weights
    from hemet.train import (_compiled, _lr_at, _param_groups, _to_tensor, augment_batch,
                             evaluate_torch, resolve_precision, sgd_step)
    from hemet import data as D

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    net = GraphNet(graph)
    if weights:
        sd = net.state_dict()
        for k, v in sd.items():
            key = k[len("layers."):]
            if key in weights and tuple(np.shape(weights[key])) == tuple(v.shape):
                sd[k] = torch.as_tensor(np.asarray(weights[key]), dtype=v.dtype)
        net.load_state_dict(sd)
    tr, val = _splits(cfg)
    rng = np.random.default_rng(cfg.seed)
    run = _compiled(net, log or (lambda m: None)) if cfg.compile else net.run
    bf16 = resolve_precision(cfg.precision) == "bf16"
    opt = torch.optim.SGD(_param_groups(net, cfg), lr=cfg.lr, momentum=0.9, nesterov=True)
    warm = max(1, int(cfg.warmup * cfg.steps))
    net.train()
    for step in range(cfg.steps):
        idx = rng.integers(0, len(tr), cfg.batch_size)
        x = _to_tensor(augment_batch(tr.images[idx], rng))
        y = torch.from_numpy(tr.labels[idx])
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, cfg.steps, warm, cfg.lr)
        done = sgd_step(net, run, opt, x, y, cfg, bf16)
        if done is None:
            break
        if log and (step + 1) % 50 == 0:
            log(f"    fine-tune step {step + 1}/{cfg.steps} loss {float(done[1].detach()):.3f}")
    sub = D.Split(val.images[:cfg.eval_images], val.labels[:cfg.eval_images])
    acc = evaluate_torch(net, sub)
    return acc, export_weights(net)
