"""HEMET's greedy HE-friendly architecture search.

Visit the mobile blocks of the network in order (:func:`hemet.search.blocks.find_blocks`);
for each, price every change (regular-conv replacement, node merging) with the calibrated
latency model on the parameters that change's depth selects (N may shrink; the program is
compiled with and without repacking after pools, whichever is predicted faster); try them
from the best completion (below) down, and keep the first whose predicted latency drops and
whose validation accuracy after a short fine-tune is at most ``tolerance`` below the
*reference*: the current network with the same layers re-initialized (the block's, and the
consumers a change reshapes) and fine-tuned alike.  Comparing against the fully trained
network instead would pit a few hundred steps for the new layers against a whole training
run, and reject every change.

"Drops" looks one step ahead: a change is priced both on its own and in the *completion*
where every later block takes its first applicable change, against the completion without
it.  Depth only pays off when it crosses a ring boundary (fewer levels at the same N can even
cost more: another digit count, wider layers): SqueezeNet-CIFAR reaches N = 2^15 only when all
four fires are replaced, so a purely myopic rule stops after the first (measured with the
shipped calibration: fire2 alone 47.5 -> 50.2 s, but the completions 50.2 -> 17.0 s).
Changes are ranked by their completion, not by the latency right after them: at fire2,
merging drops the latency at once (26.8 -> 26.3 s) but leads to 19.6 s, replacing costs more
now (34.5 s) and leads to 10.3 s.  ``finetune=None`` skips the accuracy check (logged as
skipped).  Every decision is logged; the state is saved after each block (resumable).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hemet import modelfile
from hemet.zoo import random_weights

from .blocks import apply_change, cost_proxy, find_blocks
from .calibrate import Calibration
from .cost import best_plan

__all__ = ["SearchConfig", "predict_graph", "greedy_search"]

STATE = "search_state.json"


@dataclass
class SearchConfig:
    threads: int = 2
    tolerance: float = 0.005          # accuracy drop allowed (fraction of images)
    changes: tuple = ("replace", "merge")
    cache_gb: float = 4.0
    key_gb: float = 4.0
    finetune: object = None           # hemet.search.finetune.FinetuneConfig, or None: skip
    extra: dict = field(default_factory=dict)


def _structure_key(graph) -> str:
    return json.dumps([(n.name, n.op, n.layer.attrs(), n.inputs) for n in graph.nodes],
                      sort_keys=True, default=str)


def predict_graph(graph, cfg: SearchConfig, calibration: Calibration, _memo={}) -> dict:
    """Depth, parameters, counts and predicted seconds of ``graph`` as the bench would run it.
    The plan does not depend on weight values (only on which are zero, and on prescaling
    bounds), so seeded random weights stand in for untrained blocks."""
    key = (_structure_key(graph), cfg.threads, cfg.cache_gb, cfg.key_gb, id(calibration))
    if key not in _memo:
        proxy = cost_proxy(graph)
        plan, pred = best_plan(modelfile.Model(proxy, random_weights(proxy, 0)), cfg.threads,
                               calibration, cfg.cache_gb, cfg.key_gb)
        facts = plan.facts()
        _memo[key] = {"depth": facts["depth"], "log_n": facts["log_n"], "dnum": facts["dnum"],
                      "rotations": facts["rotations"], "pt_mults": facts["pt_mults"],
                      "predicted_s": round(pred.seconds, 3), "calibration": pred.table,
                      "repack": bool(plan.options.get("repack")),
                      "calibration_exact": pred.exact}
    return dict(_memo[key])


def _completion(graph, names, start: int, cfg: SearchConfig):
    """``graph`` with every block from ``names[start]`` on given its first applicable change."""
    for name in names[start:]:
        blk = next((b for b in find_blocks(graph) if b.name == name), None)
        for change in cfg.changes:
            g2 = apply_change(graph, blk, change) if blk is not None else None
            if g2 is not None:
                graph = g2
                break
    return graph


def _carry(weights: dict, graph) -> dict:
    """Weights for ``graph``: ``weights`` where name and shape match, seeded random elsewhere."""
    import numpy as np
    fresh = random_weights(graph, 0)
    return {k: (weights[k] if k in weights and np.shape(weights[k]) == np.shape(v) else v)
            for k, v in fresh.items()}


def _layer(key: str) -> str:
    return key.rsplit(".", 1)[0]


def _fresh_layers(weights: dict, graph) -> set:
    """Layers of ``graph`` that :func:`_carry` cannot fill from ``weights`` (new or reshaped)."""
    import numpy as np
    return {_layer(k) for k, v in random_weights(graph, 0).items()
            if k not in weights or np.shape(weights[k]) != np.shape(v)}


def _reinit(weights: dict, graph, layers: set) -> dict:
    """``weights`` with the given layers back at their seeded initialization."""
    fresh = random_weights(graph, 0)
    return {k: (fresh[k] if _layer(k) in layers else v) for k, v in weights.items()}


def _save_state(out: Path, state: dict, weights: dict) -> None:
    import numpy as np
    np.savez(out / "search_weights.npz", **weights)
    tmp = out / (STATE + ".tmp")
    tmp.write_text(json.dumps(state, indent=1))
    os.replace(tmp, out / STATE)


def greedy_search(model, cfg: SearchConfig, out, calibration: Calibration = None,
                  resume: bool = False, log=print, accuracy_fn=None) -> dict:
    """Run (or resume) the search from ``model`` (a ``hemet.modelfile.Model``); writes
    ``out/searched.json|.npz`` (the model file), ``out/search.json`` (the result and the
    decision log) and the resumable state.  ``accuracy_fn(graph, weights) -> (acc, weights)``
    replaces the fine-tune (tests); by default ``cfg.finetune`` decides."""
    import numpy as np
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cal = calibration or Calibration.load()
    if accuracy_fn is None and cfg.finetune is not None:
        from .finetune import finetune

        def accuracy_fn(graph, weights):
            return finetune(graph, weights, cfg.finetune, log=log)
    check = accuracy_fn is not None

    if resume and (out / STATE).is_file():
        state = json.loads((out / STATE).read_text())
        graph = modelfile.graph_from_json(state["graph"])
        z = np.load(out / "search_weights.npz")
        weights = {k: z[k] for k in z.files}
        log(f"resuming after {state['next_block']} of {len(state['blocks'])} blocks")
    else:
        graph = model.graph
        weights = _carry(model.weights, graph)
        start = predict_graph(graph, cfg, cal)
        acc = None
        if check:
            log(f"fine-tuning the starting network {graph.name} ...")
            acc, weights = accuracy_fn(graph, weights)
        state = {"baseline": graph.name, "config": {k: v for k, v in asdict(cfg).items() if k != "finetune"},
                 "finetune": asdict(cfg.finetune) if cfg.finetune is not None else None,
                 "accuracy_check": "fine-tune" if check else "skipped",
                 "blocks": [b.name for b in find_blocks(graph)], "next_block": 0,
                 "start": dict(start, accuracy=acc), "current": dict(start, accuracy=acc),
                 "decisions": [], "graph": modelfile.graph_to_json(graph)}
        _save_state(out, state, weights)
        log(f"start {graph.name}: depth {start['depth']}, N = 2^{start['log_n']}, predicted "
            f"{start['predicted_s']:.2f} s ({cfg.threads} threads)"
            + (f", val accuracy {acc:.4f}" if acc is not None else ", accuracy check skipped"))
    names = state["blocks"]
    for bi in range(state["next_block"], len(names)):
        cur = state["current"]
        blk = next((b for b in find_blocks(graph) if b.name == names[bi]), None)
        t0 = time.perf_counter()
        log(f"[{bi + 1}/{len(names)}] block {names[bi]}: current {cur['predicted_s']:.2f} s, "
            f"depth {cur['depth']}")
        cands = []
        for change in cfg.changes:
            g2 = apply_change(graph, blk, change) if blk is not None else None
            if g2 is None:
                state["decisions"].append({"block": names[bi], "change": change, "kept": False,
                                           "reason": "not applicable"})
                continue
            cands.append((predict_graph(g2, cfg, cal), cfg.changes.index(change), change, g2))
        # best first by the completion (the lookahead's estimate of where the change leads),
        # then by the latency right after the change
        cands = [(predict_graph(_completion(c[3], names, bi + 1, cfg), cfg, cal)["predicted_s"],)
                 + c for c in cands]
        cands.sort(key=lambda c: (c[0], c[1]["predicted_s"], c[2]))
        kept = None
        without = predict_graph(_completion(graph, names, bi + 1, cfg), cfg, cal)["predicted_s"]
        reference = None
        for ahead, pred, _, change, g2 in cands:
            d = {"block": names[bi], "change": change, **pred,
                 "latency_before_s": cur["predicted_s"], "accuracy_before": cur["accuracy"],
                 "completion_s": ahead, "completion_without_s": without}
            drops = pred["predicted_s"] < cur["predicted_s"] or ahead < without
            if kept is not None:
                d.update(kept=False, reason=f"not tried: {kept} was kept")
                if reference is not None:
                    d["accuracy_before"] = reference
            elif not drops:
                d.update(kept=False, reason="predicted latency does not drop, now or in the completion")
            elif not check:
                d.update(kept=True, accuracy="skipped", reason=(
                    "latency drops" + ("" if pred["predicted_s"] < cur["predicted_s"] else
                                       " in the completion") + "; accuracy check skipped"))
                new_w = _carry(weights, g2)
            else:
                if reference is None:
                    # the yardstick: the current network with the same layers started afresh
                    # and fine-tuned alike; the candidate restarts them too (a merge keeps the
                    # block's layers), so neither side has a head start from full training
                    layers = set(blk.nodes).union(*(_fresh_layers(weights, c[4]) for c in cands))
                    log(f"    fine-tuning the current network with {len(layers)} layers of "
                        f"{names[bi]} and its consumers re-initialized ...")
                    reference, _ = accuracy_fn(graph, _reinit(weights, graph, layers))
                    log(f"    reference (current network, restarted layers): accuracy {reference:.4f}")
                    state.setdefault("references", {})[names[bi]] = reference
                acc, new_w = accuracy_fn(g2, _reinit(_carry(weights, g2), g2, layers))
                ok = acc >= reference - cfg.tolerance
                d.update(kept=ok, accuracy=acc, accuracy_before=reference,
                         reason=("latency drops, accuracy within tolerance" if ok else
                                 f"accuracy drops by {reference - acc:.4f} > {cfg.tolerance}"))
            state["decisions"].append(d)
            log(f"    {change:<8} depth {pred['depth']:>2}, N = 2^{pred['log_n']}, predicted "
                f"{pred['predicted_s']:8.2f} s (completion {ahead:.2f} vs {without:.2f} s)" + (f", accuracy {d['accuracy']}" if "accuracy" in d else "")
                + f" -> {'KEEP' if d['kept'] else 'reject'} ({d['reason']})")
            if d["kept"]:
                kept = change
                graph, weights = g2, new_w
                state["current"] = dict(pred, accuracy=d["accuracy"] if check else None)
        state["next_block"] = bi + 1
        state["graph"] = modelfile.graph_to_json(graph)
        _save_state(out, state, weights)
        log(f"    block {names[bi]} done in {time.perf_counter() - t0:.1f} s")
    from hemet.graph import Graph
    final = Graph(f"{state['baseline']}-searched", graph.nodes, graph.classes, graph.input_shape,
                  graph.output, dict(graph.metadata, network="searched",
                                     searched_from=state["baseline"]))
    path = modelfile.save(out / "searched", final, weights)
    result = {"model": str(path), "baseline": state["baseline"], "start": state["start"],
              "final": state["current"], "accuracy_check": state["accuracy_check"],
              "references": state.get("references", {}),
              "decisions": state["decisions"], "threads": cfg.threads,
              "calibration": str(getattr(cal, "path", None))}
    (out / "search.json").write_text(json.dumps(result, indent=1))
    return result
