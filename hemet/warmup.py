"""Compile every Numba kernel a private inference uses, or load it from the on-disk cache.

On a fresh install nothing is cached yet, and compiling the engine's kernels costs about a
minute of one core (measured 51 s of CPU on a loaded machine), most of it in the fused
key-switching kernels, paid by whatever runs first.  This runs one private inference on a tiny
model with tiny (insecure, teaching-size) parameters, which calls the same kernels with the same
argument types as a real one, so Numba writes them all to its cache; a later `hemet demo`
then starts warm.  With a warm cache it only loads them (a few seconds).

    python -m hemet.warmup      # e.g. right after installing, or in a container build step

(Racing it in a background process against the real run was slower here: both compiled the
same kernels at once on two cores.)
"""
from __future__ import annotations

import sys
import warnings

import numpy as np

__all__ = ["run"]


def _tiny_model():
    from . import layers as L
    from .graph import INPUT, Graph
    from .modelfile import Model
    from .zoo import random_weights
    nodes = [L.Node("normalize", L.Normalize((0.5,) * 3, (0.25,) * 3), (INPUT,))]
    nodes += L.ConvBNAct(3, 4, 3, act="poly").nodes("c1", "normalize")
    nodes += [L.Node("pool", L.AvgPool(2), ("c1_act",))]
    nodes += L.Fire(4, 2, 2, 2, act="poly").nodes("fire", "pool")
    nodes += [L.Node("classifier", L.Conv2d(4, 3, 1, 1, 0, 1, True), ("fire_act",)),
              L.Node("gap", L.GlobalAvgPool(), ("classifier",))]
    g = Graph("warmup", nodes, 3, input_shape=(3, 8, 8))
    return Model(g, random_weights(g, 0))


def run() -> float:
    """One private inference on the tiny model; returns its max logit error (a sanity check)."""
    import ckks
    from .reference import forward
    from .roles import Client, Server
    model = _tiny_model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ckks.SecurityWarning)
        params = ckks.Parameters(log_n=10, depth=model.graph.depth(), dnum=2, allow_insecure=True)
        server = Server(model, params, max_galois_keys=None)
        client = Client(server.public_info())
        session = server.open_session(client.key_bundle())
        for part in client.key_parts():
            server.add_keys(session, part)
        x = np.random.default_rng(0).uniform(0, 1, model.graph.input_shape)
        got = client.decrypt(server.evaluate(session, client.encrypt(x)))
    return float(np.max(np.abs(got - forward(model, x[None])[0])))


if __name__ == "__main__":
    err = run()
    print(f"kernels ready (tiny private inference, max logit error {err:.1e})")
    sys.exit(0 if err < 1e-2 else 1)
