"""NumPy float64 reference forward pass of a HEMET model file.

Input: NCHW float pixels scaled to [0, 1] (``hemet.data.to_nchw_float``); the model's
first node normalizes them.  Output: logits (N, classes).  This is the exact
polynomial network that the encrypted side evaluates, in plaintext.
"""
from __future__ import annotations

import numpy as np

from . import layers as L
from .graph import INPUT
from .modelfile import Model

__all__ = ["forward", "predict", "accuracy", "conv2d", "run_node"]


def conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride: int, padding: int,
           groups: int) -> np.ndarray:
    """Zero-padded cross-correlation, x (N, C, H, W), w (O, C/groups, k, k)."""
    n, c, h, wd = x.shape
    o, cg, k, _ = w.shape
    if padding:
        x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    ho = (h + 2 * padding - k) // stride + 1
    wo = (wd + 2 * padding - k) // stride + 1
    s = x.strides
    patches = np.lib.stride_tricks.as_strided(
        x, (n, c, ho, wo, k, k), (s[0], s[1], s[2] * stride, s[3] * stride, s[2], s[3]),
        writeable=False)
    og = o // groups
    if groups == 1:
        if k == 1:
            y = np.einsum("nchw,oc->nohw", patches[..., 0, 0], w[:, :, 0, 0], optimize=True)
        else:
            cols = patches.transpose(0, 2, 3, 1, 4, 5).reshape(n * ho * wo, c * k * k)
            y = (cols @ w.reshape(o, -1).T).reshape(n, ho, wo, o).transpose(0, 3, 1, 2)
    elif cg == 1 and og == 1:  # depthwise
        y = np.einsum("nchwij,cij->nchw", patches, w[:, 0], optimize=True)
    else:
        parts = [conv2d(x[:, g * cg:(g + 1) * cg], w[g * og:(g + 1) * og], None, stride, 0, 1)
                 for g in range(groups)]
        y = np.concatenate(parts, axis=1)
    y = np.ascontiguousarray(y)
    if b is not None:
        y += b.reshape(1, -1, 1, 1)
    return y


def _chan(v: np.ndarray, ndim: int) -> np.ndarray:
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def run_node(layer: L.Op, args: list[np.ndarray], w: dict[str, np.ndarray]) -> np.ndarray:
    """Evaluate one op on float64 arrays; ``w`` maps param names to float64 arrays."""
    x = args[0]
    if isinstance(layer, L.Normalize):
        return (x - _chan(np.array(layer.mean), 4)) / _chan(np.array(layer.std), 4)
    if isinstance(layer, L.Conv2d):
        return conv2d(x, w["weight"], w.get("bias"), layer.stride, layer.padding, layer.groups)
    if isinstance(layer, L.BatchNorm):
        scale = w["weight"] / np.sqrt(w["running_var"] + layer.eps)
        shift = w["bias"] - w["running_mean"] * scale
        y = x * _chan(scale, x.ndim)
        y += _chan(shift, x.ndim)
        return y
    if isinstance(layer, L.Poly):
        a, b, c = (_chan(w[k], x.ndim) for k in "abc")
        y = a * x
        y += b
        y *= x
        y += c
        return y
    if isinstance(layer, L.Square):
        return x * x
    if isinstance(layer, L.AvgPool):
        k = layer.kernel_size
        n, c, h, wd = x.shape
        return x.reshape(n, c, h // k, k, wd // k, k).mean(axis=(3, 5))
    if isinstance(layer, L.GlobalAvgPool):
        return x.mean(axis=(2, 3))
    if isinstance(layer, L.Concat):
        return np.concatenate(args, axis=1)
    if isinstance(layer, L.Linear):
        y = x @ w["weight"].T
        return y + w["bias"] if "bias" in w else y
    raise TypeError(f"no reference implementation for op {layer.op!r}")


def forward(model: Model, x: np.ndarray, return_all: bool = False):
    """Logits for NCHW inputs in [0, 1] (float64 throughout)."""
    g = model.graph
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 4 or tuple(x.shape[1:]) != g.input_shape:
        raise ValueError(f"input must be (N, {', '.join(map(str, g.input_shape))}), got {x.shape}")
    env = {INPUT: x}
    last = {}
    for i, n in enumerate(g.nodes):
        for a in n.inputs:
            last[a] = i
    for i, n in enumerate(g.nodes):
        w = {k: model.weights[f"{n.name}.{k}"].astype(np.float64) for k in n.layer.weight_shapes()}
        env[n.name] = run_node(n.layer, [env[a] for a in n.inputs], w)
        if not return_all:
            for a in n.inputs:
                if last[a] == i and a != g.output:
                    del env[a]
    return env if return_all else env[g.output]


def predict(model: Model, images_nhwc_uint8: np.ndarray, batch_size: int = 250,
            progress=None) -> np.ndarray:
    """Predicted classes for uint8 NHWC images."""
    from .data import to_nchw_float
    out = []
    it = range(0, len(images_nhwc_uint8), batch_size)
    for i in (progress(it) if progress else it):
        logits = forward(model, to_nchw_float(images_nhwc_uint8[i:i + batch_size]))
        out.append(logits.argmax(axis=1))
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def accuracy(model: Model, images: np.ndarray, labels: np.ndarray, batch_size: int = 250,
             progress=None) -> float:
    pred = predict(model, images, batch_size, progress)
    return float((pred == np.asarray(labels)).mean()) if len(labels) else float("nan")
