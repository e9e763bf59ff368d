"""Packing gain, measured: a network prefix in the multiplexed layout vs one channel per ciphertext.

    python bench/layouts.py --json                               # hemet-fire1-4-cifar10 up to conv_f1_act
    python bench/layouts.py --until conv1_act --repeat 5         # a shorter prefix
    python bench/layouts.py --log-n 15 --json                    # at the full network's ring

A whole network one channel per ciphertext takes ~20 min per image, so this times a *prefix*:
the model's nodes that ``--until NODE`` depends on, with NODE as the output (original weights).
It is compiled twice, ``layout="multiplexed"`` (the compiler's default) and
``layout="per_channel_strided"`` (the usual one-channel-per-ciphertext baseline), and both run
at the same 128-bit-secure parameters (``select_parameters`` for the deeper of the two), each
with its own Galois keys and a plaintext cache of ``--cache-gb`` (pinned by ``prepare``; what
does not fit is encoded on use, inside the timed run, as a server short of memory would).
Repetitions alternate multiplexed / per-channel in one process, so both see the same load:
the ratio of medians is the figure to quote.  Every run is decrypted and compared with the
plaintext reference (``hemet.reference.forward`` of the prefix): max |enc - ref| / max |ref|.
The whole network's plan counts of both layouts (plan-only compile) are printed beside them.

The ring follows the prefix's depth: hemet-fire1-4 up to conv_f1_act runs at N = 2^14, the
whole network at 2^15.  Per-channel work is fixed (one ciphertext per channel, mostly empty
slots) while the multiplexed program needs half the ciphertexts at twice N, so the ratio
grows with N: ``--log-n 15`` measures it at the network's ring.

An activation as the output: the compiler refuses one (in a network the next stage absorbs its
``a`` and ``c``), so the prefix is compiled up to the activation's input and the step the
network runs is appended: ``u = x^2 + (b/a) x`` (``Program.add_prescaled``) or ``u = x^2``;
the client side then checks ``a u + c`` against the reference.  In the network a stage follows
and ``u`` never sits at level 0 (``|u|`` may exceed what the last prime holds at scale 2^40:
errors of order 1 when it does), so such a prefix gets one spare level.

``--json`` prints one object: per layout {seconds (list), median_s, pt_mults, rotations,
ciphertexts, keys, max_rel_err, ...}, ``ratio`` (per-channel median / multiplexed median),
``parameters``, ``network`` (whole-network plan counts per layout).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hemet import layers as L  # noqa: E402
from hemet.graph import INPUT, Graph  # noqa: E402
from hemet.modelfile import Model  # noqa: E402

LAYOUTS = ("multiplexed", "per_channel_strided")
SHORT = {"multiplexed": "multiplexed", "per_channel_strided": "per-channel"}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def peak_rss_gb() -> float:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


class PrefixGraph(Graph):
    """A graph whose output is an inner feature map (``Graph`` insists on (classes,) logits)."""

    def _infer(self):
        shapes = {INPUT: self.input_shape}
        for n in self.nodes:
            shapes[n.name] = n.layer.out_shape([shapes[i] for i in n.inputs])
        return shapes


def prefix_model(model: Model, until: str) -> Model:
    """The nodes ``until`` depends on, in graph order, with ``until`` as the output and the
    original weights (nodes it does not need, e.g. a parallel branch, are left out: the
    compiler would otherwise materialize their activations too)."""
    g = model.graph
    names = [n.name for n in g.nodes]
    if until not in names:
        raise SystemExit(f"no node {until!r} in {g.name}; nodes: {', '.join(names)}")
    need, todo = set(), [until]
    while todo:
        v = todo.pop()
        if v != INPUT and v not in need:
            need.add(v)
            todo += list(g.node(v).inputs)
    nodes = [n for n in g.nodes if n.name in need]
    keys = {f"{n.name}.{k}" for n in nodes for k in n.layer.weight_shapes()}
    sub = PrefixGraph(f"{g.name}[:{until}]", nodes, g.classes, g.input_shape, output=until,
                      metadata=dict(g.metadata))
    return Model(sub, {k: v for k, v in model.weights.items() if k in keys})


def compile_prefix(sub: Model, slots: int, layout: str, **opts):
    """(program, post): ``post`` is None, or per-channel (a, c) with the sub-model's output
    ``a u + c`` for the program's decrypted output ``u`` (an activation output, module doc)."""
    from hemet.he.program import compile_model
    g = sub.graph
    last = g.node(g.output)
    if not isinstance(last.layer, (L.Poly, L.Square)):
        return compile_model(sub, slots, layout=layout, **opts), None
    prog = compile_model(prefix_model(sub, last.inputs[0]), slots, layout=layout, **opts)
    ch = g.shapes[g.output][0]
    if isinstance(last.layer, L.Square):
        a, b, c = np.ones(ch), np.zeros(ch), np.zeros(ch)
    else:
        a, b, c = (np.asarray(sub.weights[f"{last.name}.{k}"], np.float64) for k in "abc")
    # the compiler's own choice for an activation (compile_model, activation="prescaled")
    if np.any(b) and np.all(a != 0) and np.max(np.abs(b / a)) <= 2.0 ** 20:
        prog.add_prescaled(prog.output, b / a)
    elif not np.any(b):
        prog.add_square(prog.output)
    else:
        raise NotImplementedError(f"{last.name}: merged activation (some a = 0) as the output")
    prog.steps[-1].name = last.name
    prog.output = prog.steps[-1].out
    return prog, (a, c)


def levels_needed(sub: Model, layouts=LAYOUTS, **opts) -> int:
    """Depth of the deeper program, plus the spare level of an activation output (module doc)."""
    return max(p.depth + (post is not None) for p, post in
               (compile_prefix(sub, 2 ** 14, lay, materialize=False, **opts) for lay in layouts))


def plan_counts(prog) -> dict:
    """Counts of one run: ciphertexts = produced by the steps (as ``network.py --plan-only``);
    keys = Galois keys (rotation steps) the program needs."""
    c = prog.costs()
    return {"depth": prog.depth, "pt_mults": c["pt_mults"], "rotations": c["rotations"],
            "ciphertexts": sum(prog.layouts[s.out].n_ciphertexts for s in prog.steps),
            "input_ciphertexts": prog.input_layout.n_ciphertexts,
            "ct_squares": c["ct_squares"], "keys": len(prog.rotation_steps)}


def network_counts(model: Model, layouts=LAYOUTS, **opts) -> dict:
    """Whole-network plan counts per layout (``materialize=False``), at the ring the deeper
    program needs (``select_parameters``)."""
    from hemet.he.program import compile_model
    from hemet.search.params import select_parameters
    slots = 2 ** 14
    progs = {lay: compile_model(model, slots, layout=lay, materialize=False, **opts) for lay in layouts}
    params = select_parameters(max(p.depth for p in progs.values()))
    if params.slots != slots:
        progs = {lay: compile_model(model, params.slots, layout=lay, materialize=False, **opts)
                 for lay in layouts}
    out = {lay: plan_counts(p) for lay, p in progs.items()}
    out["log_n"] = params.log_n
    return out


def _decoded(prog, be, cts, post):
    u = prog.layouts[prog.output].unpack([be.decrypt(c) for c in cts]).reshape(prog.output_shape)
    if post is None:
        return u
    a, c = post
    return a.reshape(-1, 1, 1) * u + c.reshape(-1, 1, 1)


def compare(sub: Model, x: np.ndarray, params=None, repeat: int = 3, cache_bytes: int = 3 << 29,
            layouts=LAYOUTS, warmup: bool = True, verbose: bool = True, **opts) -> dict:
    """Compile ``sub`` in each layout, make keys, prepare, then ``repeat`` rounds of encrypted
    runs, one per layout in turn; every output is checked against the reference.
    ``params``: ckks.Parameters (default: 128-bit, ``select_parameters`` for the deeper
    program); ``cache_bytes``: plaintext cache of each program's backend."""
    import ckks
    from hemet.he import HEBackend
    from hemet.he.program import format_report
    from hemet.reference import forward
    from hemet.search.params import select_parameters

    say = log if verbose else (lambda *a: None)
    ref = forward(sub, x[None])[0]
    if params is None:  # the depths decide the ring: plan-only compiles are cheap
        params = select_parameters(levels_needed(sub, layouts, **opts))
    t0 = time.perf_counter()
    progs = {}
    for lay in layouts:
        t = time.perf_counter()
        progs[lay] = compile_prefix(sub, params.slots, lay, **opts)
        p = progs[lay][0]
        say(f"{SHORT[lay]}: compile {time.perf_counter() - t:.1f} s, depth {p.depth}, "
            f"{plan_counts(p)}, diagonals {sum(st.diagonal_bytes() for st in p.stages) / 2 ** 30:.2f} GiB")
    depth = max(p.depth + (post is not None) for p, post in progs.values())
    if depth > params.depth:
        raise ValueError(f"the programs need {depth} levels, the parameters have {params.depth}")
    say(f"{params.describe()}; compile {time.perf_counter() - t0:.1f} s")

    ctx = ckks.Context(params)
    kg = ckks.KeyGenerator(ctx)
    relin = kg.relin_key()
    enc, dec = ckks.Encryptor(ctx, kg.public_key), ckks.Decryptor(ctx, kg.secret_key)
    backends, result = {}, {}
    for lay in layouts:
        prog = progs[lay][0]
        t = time.perf_counter()
        gk = kg.galois_keys(sorted(prog.rotation_steps))
        keygen_s = time.perf_counter() - t
        be = HEBackend(ckks.Evaluator(ctx, relin, gk), enc, dec, max_cache_bytes=cache_bytes)
        t = time.perf_counter()
        prog.prepare(be)
        prepare_s = time.perf_counter() - t
        backends[lay] = be
        result[lay] = dict(plan_counts(prog), keygen_s=round(keygen_s, 2), prepare_s=round(prepare_s, 1),
                           pinned=len(be.cache), pinned_bytes=be.cache.bytes,
                           seconds=[], encode_s=[], encodes=[], max_rel_err=0.0)
        say(f"{SHORT[lay]}: {len(prog.rotation_steps)} Galois keys in {keygen_s:.1f} s; prepare "
            f"{prepare_s:.1f} s: {len(be.cache)} plaintexts pinned, {be.cache.bytes / 2 ** 30:.2f} GiB "
            f"(of {prog.costs()['diagonals']} diagonals); peak RSS {peak_rss_gb():.2f} GiB")

    def run(lay):
        prog, post = progs[lay]
        be = backends[lay]
        cts = prog.encrypt(be, x)
        be.encode_seconds = 0.0
        rep = []
        t = time.perf_counter()
        out = prog.run_encrypted(be, cts, report=rep)
        sec = time.perf_counter() - t
        y = _decoded(prog, be, out, post)
        err = float(np.max(np.abs(y - ref)) / np.max(np.abs(ref)))
        return sec, err, rep, be.encode_seconds

    if warmup:  # JIT / first-touch costs go into an untimed run of the cheaper program
        sec, err, _, _ = run(layouts[0])
        say(f"warm-up ({SHORT[layouts[0]]}): {sec:.2f} s, rel err {err:.1e}")
    reports = {lay: [] for lay in layouts}
    for r in range(repeat):
        for lay in layouts:  # alternate: both layouts see the same load
            sec, err, rep, enc_s = run(lay)
            res = result[lay]
            res["seconds"].append(round(sec, 3))
            res["encode_s"].append(round(enc_s, 2))
            res["encodes"].append(sum(row["encodes"] for row in rep))
            res["max_rel_err"] = max(res["max_rel_err"], err)
            reports[lay].append(rep)
            say(f"rep {r + 1}/{repeat} {SHORT[lay]:<11}: server {sec:7.2f} s (encoding {enc_s:.2f} s, "
                f"{res['encodes'][-1]} full encodes), rel err {err:.1e}, load {os.getloadavg()[0]:.1f}")
            if r == 0:
                say(format_report(rep))
    for lay in layouts:
        res = result[lay]
        res["median_s"] = round(statistics.median(res["seconds"]), 3)
        mid = res["seconds"].index(sorted(res["seconds"])[(len(res["seconds"]) - 1) // 2])
        res["per_step"] = [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()
                            if k not in ("out", "log2_scale")} for row in reports[lay][mid]]
    out = {"layouts": result, "parameters": {"log_n": params.log_n, "slots": params.slots,
                                              "depth": params.depth, "dnum": params.dnum,
                                              "describe": params.describe()}}
    if len(layouts) == 2:
        a, b = layouts
        out["ratio"] = round(result[b]["median_s"] / result[a]["median_s"], 2)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="hemet-fire1-4-cifar10", help="shipped model name or model file")
    p.add_argument("--until", default="conv_f1_act",
                   help="last node of the prefix (its output); default: the activation after "
                        "the first convolution that follows pool1 in hemet-fire1-4")
    p.add_argument("--repeat", type=int, default=3, help="rounds of (multiplexed, per-channel) runs")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--image", type=int, default=0, help="index in the shipped CIFAR-10 sample")
    p.add_argument("--cache-gb", type=float, default=1.5,
                   help="plaintexts pinned per program (GiB; both programs live at once: ~4.5 GiB "
                        "peak with the default prefix); the rest is encoded on use")
    p.add_argument("--repack", action="store_true",
                   help="compile with repack=True (one more level; only the multiplexed layout changes)")
    p.add_argument("--log-n", type=int, default=None,
                   help="ring degree (default: smallest keys for the depth)")
    p.add_argument("--dnum", type=int, default=None)
    p.add_argument("--no-network", action="store_true", help="skip the whole-network plan counts")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)

    import ckks
    from hemet import modelfile
    from hemet.cli import resolve_model
    from hemet.data import to_nchw_float

    ckks.set_num_threads(a.threads)
    model = modelfile.load(resolve_model(a.model))
    sub = prefix_model(model, a.until)
    log(f"model {a.model}, prefix up to {a.until}: {', '.join(n.name for n in sub.graph.nodes)}")
    z = np.load(ROOT / "hemet" / "assets" / "cifar10_test_sample.npz")
    x = to_nchw_float(z["images"][a.image:a.image + 1])[0]
    opts = {"repack": a.repack}

    network = None
    if not a.no_network:
        t = time.perf_counter()
        network = network_counts(model, **opts)
        log(f"whole network (plan only, N = 2^{network['log_n']}, {time.perf_counter() - t:.1f} s): "
            + "; ".join(f"{SHORT[lay]} {network[lay]}" for lay in LAYOUTS))

    params = None
    if a.log_n is not None or a.dnum is not None:
        from hemet.search.params import select_parameters
        params = select_parameters(levels_needed(sub, **opts), a.log_n, a.dnum)
    res = compare(sub, x, params, a.repeat, int(a.cache_gb * 2 ** 30), **opts)
    res.update(model=a.model, until=a.until, prefix_nodes=[n.name for n in sub.graph.nodes],
               image=a.image, threads=a.threads, repeat=a.repeat, cache_gb=a.cache_gb,
               repack=a.repack, network=network, peak_rss_gb=round(peak_rss_gb(), 2),
               loadavg=os.getloadavg()[0])
    for lay in LAYOUTS:
        r = res["layouts"][lay]
        log(f"{SHORT[lay]:<11}: median {r['median_s']:.2f} s {r['seconds']}, {r['pt_mults']} ct x pt, "
            f"{r['rotations']} rotations, {r['ciphertexts']} ciphertexts, {r['keys']} keys, "
            f"max rel err {r['max_rel_err']:.1e}")
    log(f"per-channel / multiplexed = {res['ratio']:.2f}x (medians), peak RSS {res['peak_rss_gb']} GiB")
    if a.json:
        print(json.dumps(res))
    else:
        print(json.dumps({k: v for k, v in res.items() if k != "layouts"}
                         | {"layouts": {lay: {k: v for k, v in r.items() if k != "per_step"}
                                        for lay, r in res["layouts"].items()}}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
