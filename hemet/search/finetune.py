"""Accuracy of a candidate architecture after a short fine-tune (PyTorch, the ``train`` extra).

Weights carry over from the current network where a node keeps its name and shape (the new
block's layers start from PyTorch's initialization); then ``steps`` SGD steps on the training
split minus the validation images ``hemet.train`` holds out (same split, same seed), and the
accuracy on (a prefix of) that validation split.  The test set is never read.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["FinetuneConfig", "finetune"]


@dataclass
class FinetuneConfig:
    steps: int = 200
    batch_size: int = 64
    lr: float = 0.02
    n_val: int = 5000          # the held-out split of hemet.train (its default)
    eval_images: int = 2000    # validation images scored (a prefix of the split)
    threads: int = 1
    seed: int = 0
    data: str | None = None
    compile: bool = False      # torch.compile pays off only over many steps
    label_smoothing: float = 0.1


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
    import torch.nn.functional as F

    from hemet.torch_modules import GraphNet, export_weights
    from hemet.train import _to_tensor, augment_batch, evaluate_torch
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
    run = torch.compile(net.run) if cfg.compile else net.run
    opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    net.train()
    for step in range(cfg.steps):
        idx = rng.integers(0, len(tr), cfg.batch_size)
        x = _to_tensor(augment_batch(tr.images[idx], rng))
        y = torch.from_numpy(tr.labels[idx])
        for g in opt.param_groups:  # cosine decay over the short run
            g["lr"] = cfg.lr * 0.5 * (1 + np.cos(np.pi * step / max(cfg.steps, 1)))
        logits, _ = run((x,), None)
        loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
        if not torch.isfinite(loss):
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()
        if log and (step + 1) % 50 == 0:
            log(f"    fine-tune step {step + 1}/{cfg.steps} loss {float(loss):.3f}")
    sub = D.Split(val.images[:cfg.eval_images], val.labels[:cfg.eval_images])
    acc = evaluate_torch(net, sub)
    return acc, export_weights(net)
