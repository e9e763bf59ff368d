"""Random weights for graphs (no torch needed)."""
import numpy as np


def random_weights(graph, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    w = {}
    for k, shape in graph.weight_shapes().items():
        param = k.rsplit(".", 1)[1]
        if param == "running_var":
            a = rng.uniform(0.5, 2.0, shape)
        elif param == "weight" and len(shape) > 1:
            fan_in = int(np.prod(shape[1:]))
            a = rng.normal(0, 1 / np.sqrt(fan_in), shape)
        elif param == "a":
            a = rng.normal(0.1, 0.05, shape)
        elif param in ("b", "weight"):
            a = rng.normal(1.0, 0.1, shape)
        else:
            a = rng.normal(0, 0.1, shape)
        w[k] = a.astype(dtype)
    return w
