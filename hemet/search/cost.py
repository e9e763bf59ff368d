"""Predicted encrypted latency: operation counts (:mod:`hemet.search.counts`) times the
calibrated per-operation latency at each level (:mod:`hemet.search.calibrate`).

:func:`plan_network` compiles a model the way ``bench/network.py`` runs it (multiplexed
layout, pools by rotation, global pool by in-place channel sums, prescaled activations; the smallest secure keys
for its depth; Galois keys within ``key_gb``; plaintexts pinned within ``cache_gb``) and
counts one warm run; :func:`predict` prices the counts.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .calibrate import Calibration
from .counts import ProgramCounts, count_program
from .params import max_galois_keys, select_parameters

__all__ = ["NetworkPlan", "Prediction", "plan_network", "predict", "best_plan", "COMPILE_OPTIONS"]

COMPILE_OPTIONS = {"layout": "multiplexed", "global_pool": "sum", "pool": "rotate",
                   "activation": "prescaled"}


@dataclass
class NetworkPlan:
    prog: object
    params: object
    counts: ProgramCounts
    key_steps: set
    paths: dict
    cache_bytes: int
    options: dict = field(default_factory=dict)   # the compile_model options used

    @property
    def depth(self) -> int:
        return self.prog.depth

    def facts(self) -> dict:
        c = self.counts.summary()
        return {"depth": self.prog.depth, "log_n": self.params.log_n, "dnum": self.params.dnum,
                "log_qp": round(self.params.log_qp, 1), "rotation_keys": len(self.key_steps),
                "rotation_steps": len(self.prog.rotation_steps), **c}


@dataclass
class Prediction:
    seconds: float
    steps: list = field(default_factory=list)   # {"name", "kind", "level", "seconds", "by_op"}
    by_op: dict = field(default_factory=dict)
    exact: bool = True                          # the calibration had these very parameters
    table: str = ""


def plan_network(model, cache_gb: float = 4.0, key_gb: float = 4.0, log_n: int = None,
                 dnum: int = None, materialize: bool = False, encoder=None, **compile_kw) -> NetworkPlan:
    """Compile ``model`` (a ``hemet.modelfile.Model``) as the bench does and count a warm run.

    ``materialize=False`` (the default) builds plans only: counts are exact except that
    every pinned plaintext is assumed to fit int64 coefficients (see ``CacheModel``)."""
    from hemet.he.program import compile_model
    opts = dict(COMPILE_OPTIONS, **compile_kw)
    slots = 2 ** 14
    prog = compile_model(model, slots, materialize=materialize, **opts)
    params = select_parameters(prog.depth, log_n, dnum)
    if params.slots != slots:
        prog = compile_model(model, params.slots, materialize=materialize, **opts)
    steps, paths = prog.key_plan(max_galois_keys(params, key_gb))
    cache_bytes = int(cache_gb * 2 ** 30)
    counts = count_program(prog, params, paths, cache_bytes=cache_bytes, encoder=encoder)
    return NetworkPlan(prog, params, counts, set(steps), paths, cache_bytes, opts)


def best_plan(model, threads: int = 2, calibration: Calibration = None, cache_gb: float = 4.0,
              key_gb: float = 4.0, **kw) -> tuple[NetworkPlan, "Prediction"]:
    """:func:`plan_network` without and with ``repack`` (gathering pooled values spread over
    several ciphertexts, one more level); the plan with the lower predicted latency.  Repacking
    pays where the ring stays the same (hemet-fire1-4: 2^15 at depth 11 and 12), not where the
    extra level costs every operation of a deep network (SqueezeNet at 2^16)."""
    cal = calibration or Calibration.load()
    best = None
    for repack in (False, True):
        plan = plan_network(model, cache_gb, key_gb, repack=repack, **kw)
        if repack and plan.prog.depth == best[0].prog.depth:
            break  # nothing to gather: the same program
        pred = predict(plan.counts, plan.params, threads, cal)
        if best is None or pred.seconds < best[1].seconds:
            best = (plan, pred)
    return best


def _fit(col: list) -> tuple[float, float] | None:
    """Theil-Sen line ``a + b * limbs`` over the measured levels: every operation's work is
    linear in the limbs, and on a shared machine single levels are sometimes several times
    too slow (one convert timing at 3.7 ms among 0.7 ms neighbours pulled a least-squares
    line 1.3x too high).  Medians of pairwise slopes and of intercepts ignore such points."""
    pts = [(lv + 1, t) for lv, t in enumerate(col) if t is not None]
    if len(pts) < 2:
        return None
    x = np.array([p[0] for p in pts], float)
    y = np.array([p[1] for p in pts], float)
    i, j = np.triu_indices(len(x), 1)
    b = float(np.median((y[j] - y[i]) / (x[j] - x[i])))
    a = float(np.median(y - b * x))
    return a, b


def _at(ops: dict, op: str, level: int, fits: dict) -> float:
    """Latency of ``op`` at ``level`` from the fitted line, at least half the median per-limb
    rate times the limbs (a noisy fit must not go to zero; one slow level must not set it)."""
    col = ops[op]
    known = [(lv, t) for lv, t in enumerate(col) if t is not None]
    if not known:
        raise KeyError(f"calibration has no {op!r} timings")
    if op not in fits:
        fits[op] = _fit(col)
    per_limb = float(np.median([t / (lv + 1) for lv, t in known]))
    if fits[op] is None:
        return per_limb * (level + 1)
    a, b = fits[op]
    return float(max(a + b * (level + 1), 0.5 * per_limb * (level + 1)))


def predict(counts: ProgramCounts, params, threads: int, calibration: Calibration = None) -> Prediction:
    """Seconds of the counted run: sum over steps, operations and levels of count x latency."""
    cal = calibration or Calibration.load()
    table, exact = cal.table(params.log_n, params.depth, params.dnum, threads)
    ops = table["ops"]
    fits = {}
    total, steps, by_op = 0.0, [], {}
    for s in counts.steps:
        t_step, per = 0.0, {}
        for (op, level), n in s.ops.items():
            t = n * _at(ops, op, level, fits)
            per[op] = per.get(op, 0.0) + t
            by_op[op] = by_op.get(op, 0.0) + t
            t_step += t
        steps.append({"name": s.name, "kind": s.kind, "level": s.level, "seconds": t_step,
                      "by_op": per})
        total += t_step
    key = f"N2^{table['log_n']}-L{table['depth']}-dnum{table['dnum']}-t{table['threads']}"
    return Prediction(total, steps, by_op, exact, key)
