"""``hemet`` subcommands for private inference: demo, infer, eval --encrypted, compile, bench,
serve, client, tour (registered into :mod:`hemet.cli` on import).

Parameters: 128-bit-secure CKKS by default (the smallest ring for the model's depth);
``--insecure --log-n N`` picks small teaching parameters instead (fast, NOT secure).
"""
from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from . import cli

__all__ = ["load_model", "make_params", "load_image", "PrivateInference"]

DEFAULT_MODEL = "hemet-fire1-4-cifar10"  # the searched network: the fastest HEMET model


# ---------------------------------------------------------------------------- helpers
class CommandError(Exception):
    pass


def _progress(args, desc: str, total=None):
    """A tqdm wrapper for iterables (stderr), or the identity with --no-progress / no tqdm."""
    if getattr(args, "no_progress", False) or getattr(args, "json", False):
        return lambda it: it
    try:
        from tqdm import tqdm
    except ImportError:
        return lambda it: it
    return lambda it: tqdm(it, desc=desc, total=total, leave=False, file=sys.stderr,
                           dynamic_ncols=True)


def load_model(name: str):
    from .modelfile import load
    try:
        return load(cli.resolve_model(name))
    except FileNotFoundError as e:
        shipped = ", ".join(cli.shipped_models()) or "none yet"
        raise CommandError(
            f"{e}\n  shipped models: {shipped}. The HEMET CIFAR-10 model ({DEFAULT_MODEL}) is "
            "shipped once training has exported it (hemet/assets/README.md); meanwhile pass "
            "--model PATH to any model file (.json + .npz).") from None


def make_params(depth: int, args):
    import ckks
    if getattr(args, "insecure", False):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ckks.SecurityWarning)
            return ckks.Parameters(log_n=args.log_n or 12, depth=depth, dnum=getattr(args, "dnum", None),
                                   allow_insecure=True)
    # 128-bit secure: raises SecurityError for a log_n / dnum below the bound
    return ckks.Parameters(log_n=getattr(args, "log_n", None), depth=depth,
                           dnum=getattr(args, "dnum", None))


def compile_plan(model, args, log=print) -> tuple:
    """(params, compile options) for ``model``, chosen as ``bench/network.py``, ``hemet
    search`` and ``bench/reproduce.py`` choose them: 128-bit-secure parameters with the
    smallest keys for the program's depth (``hemet.search.params.select_parameters``), and
    ``--repack auto`` (the default) compiles with or without gathering pooled values spread
    over several ciphertexts (one more level), whichever ``hemet.search.cost.best_plan``
    predicts faster from this machine's calibration (hemet-fire1-4: on, 9.6 -> 6.0 s per
    image; SqueezeNet: off); ``on`` / ``off`` force it.  Teaching parameters (``--insecure``)
    never repack."""
    import ckks
    from .search.params import select_parameters
    mode = getattr(args, "repack", "off")
    depth = model.graph.depth()
    if getattr(args, "insecure", False):
        return make_params(depth, args), {}
    kw = {"log_n": getattr(args, "log_n", None), "dnum": getattr(args, "dnum", None)}
    if mode == "off":
        return select_parameters(depth, **kw), {}
    from .search.cost import best_plan, plan_network
    try:
        if mode == "on":
            plan = plan_network(model, repack=True, **kw)
        else:
            plan, _ = best_plan(model, threads=ckks.get_num_threads(), **kw)
    except KeyError as e:  # no calibration for this ring and thread count
        log(f"  repack: {e.args[0]}; compiling without repacking")
        return select_parameters(depth, **kw), {}
    repack = bool(plan.options.get("repack")) and plan.prog.depth > depth
    return plan.params, ({"repack": True} if repack else {})


def load_image(spec: str, shape):
    """(image (C, H, W) in [0, 1], label or None, description) from an index into the shipped
    64-image CIFAR-10 sample, or a .npy / .npz / image file."""
    from .data import load_sample
    from .roles import as_image
    s = str(spec)
    if s.isdigit():
        sample = load_sample()
        i = int(s)
        if not 0 <= i < len(sample.labels):
            raise CommandError(f"image index {i} out of range 0..{len(sample.labels) - 1}")
        return as_image(sample.images[i], shape), int(sample.labels[i]), f"sample image {i}"
    p = Path(s)
    if not p.is_file():
        raise CommandError(f"--image {s!r}: not a sample index (0..63) nor a file")
    if p.suffix == ".npy":
        arr = np.load(p, allow_pickle=False)
    elif p.suffix == ".npz":
        with np.load(p, allow_pickle=False) as z:
            key = "image" if "image" in z else ("images" if "images" in z else z.files[0])
            arr = z[key]
            if key == "images":
                arr = arr[0]
    else:
        try:
            from PIL import Image
        except ImportError:
            raise CommandError("reading image files needs Pillow; use .npy / .npz or an index") from None
        img = Image.open(p).convert("RGB").resize((shape[2], shape[1]))
        arr = np.asarray(img, dtype=np.uint8)
    try:
        return as_image(arr, shape), None, str(p)
    except ValueError as e:
        raise CommandError(f"--image {s!r}: {e}") from None


def class_name(classes: int, k: int) -> str:
    if classes == 10:
        from .data import CIFAR10_CLASSES
        return CIFAR10_CLASSES[k]
    return str(k)


class PrivateInference:
    """Client and Server in one process (the demo / infer / eval / bench commands): keys made
    by the client, only the key bundle, requests and responses cross to the server.
    ``cache_bytes``: the server's plaintext cache (0 for one image, which uses each diagonal
    once)."""

    def __init__(self, model, params, progress=None, log=print, prepare=False, galois_keys=64,
                 compile_options=None, cache_bytes=1 << 30):
        from .roles import Client, Server
        self.times = {}
        t = time.perf_counter()
        self.server = Server(model, params, prepare=prepare, max_galois_keys=galois_keys,
                             max_cache_bytes=cache_bytes, **(compile_options or {}))
        self.times["compile"] = time.perf_counter() - t
        info = self.server.public_info()
        t0 = time.perf_counter()
        log(f"  parameters: {params.describe()}"
            + ("" if params.security_bits_ok else "  [INSECURE]"))
        log(f"  program: depth {self.server.program.depth}, "
            f"{len(self.server.info.rotation_steps)} rotation keys, "
            f"{self.server.info.input_layout.n_ciphertexts} input ciphertext(s)")
        t = time.perf_counter()
        self.client = Client(info, progress=progress)
        bundle = self.client.key_bundle()
        self.times["keygen"] = time.perf_counter() - t
        t = time.perf_counter()
        self.session = self.server.open_session(bundle)
        self.times["load_keys"] = time.perf_counter() - t
        self.key_bytes = len(bundle)
        del bundle
        for part in self.client.key_parts():     # one Galois-key chunk in memory at a time
            t = time.perf_counter()
            self.server.add_keys(self.session, part)
            self.times["load_keys"] += time.perf_counter() - t
            self.key_bytes += len(part)
        total = time.perf_counter() - t0
        self.times["keygen"] = total - self.times["load_keys"]   # the client's share
        log(f"  keys: {self.key_bytes / 2 ** 20:.1f} MiB (public, relinearization, "
            f"{len(self.server.info.rotation_steps)} Galois keys) made and loaded in {total:.1f} s")

    def infer(self, image, report=None):
        t0 = time.perf_counter()
        req = self.client.encrypt(image)
        t1 = time.perf_counter()
        resp = self.server.evaluate(self.session, req, report=report)
        t2 = time.perf_counter()
        logits = self.client.decrypt(resp)
        t3 = time.perf_counter()
        return logits, {"encrypt": t1 - t0, "evaluate": t2 - t1, "decrypt": t3 - t2,
                        "request_bytes": len(req), "response_bytes": len(resp)}


class _ProgressList(list):
    """A report list that advances a progress bar as the program appends a row per step."""

    def __init__(self, args, desc, total):
        super().__init__()
        self.bar = None
        if not (getattr(args, "json", False) or getattr(args, "no_progress", False)):
            try:
                from tqdm import tqdm
                self.bar = tqdm(total=total, desc=desc, leave=False, file=sys.stderr)
            except ImportError:
                pass

    def append(self, row):
        super().append(row)
        if self.bar is not None:
            self.bar.set_postfix_str(str(row.get("name", ""))[:24])
            self.bar.update(1)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _jsonable(row: dict) -> dict:
    return {k: (v if isinstance(v, (str, int, float, bool, type(None))) else str(v))
            for k, v in row.items()}


def _format_report(rows) -> str:
    try:
        from .he.program import format_report
        return format_report(list(rows))
    except (ImportError, KeyError, TypeError, ValueError):
        return "\n".join(f"  {r.get('name', '?'):<40s} {r['seconds']:9.3f} s" for r in rows)


def _add_params_args(p):
    p.add_argument("--insecure", action="store_true",
                   help="small INSECURE teaching parameters (with --log-n, default 12): fast")
    p.add_argument("--log-n", type=int, default=None, help="ring degree log2(N)")
    p.add_argument("--dnum", type=int, default=None, help="key-switching digits")
    p.add_argument("--repack", default="auto", choices=["auto", "on", "off"],
                   help="gather pooled values spread over several ciphertexts (one more level): "
                        "auto (default) where the calibrated latency model predicts it faster")
    p.add_argument("--no-progress", action="store_true")


def _plain_logits(model, x):
    from .reference import forward
    return forward(model, x[None])[0]


# ---------------------------------------------------------------------------- infer / demo
def _infer_setup(p, default_model=None):
    p.add_argument("--model", default=default_model, required=default_model is None,
                   help="shipped model name or model file path")
    p.add_argument("--galois-keys", type=int, default=32,
                   help="Galois keys the client makes (default 32: for one image, fewer keys save "
                        "more key generation than the extra rotations cost; hemet-fire1-4: 380 "
                        "extra key switches vs 194 at 64 keys)")
    p.add_argument("--image", default="0", help="index into the shipped 64 CIFAR-10 test images "
                   "(default 0) or a .npy/.npz/image file")
    _add_params_args(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _infer(args, demo: bool) -> int:
    out = (lambda *a, **k: None) if args.json else print
    if demo:
        out("HEMET demo: private CIFAR-10 classification with CKKS homomorphic encryption")
    model = load_model(args.model)
    x, label, what = load_image(args.image, model.graph.input_shape)
    t_all = time.perf_counter()
    params, opts = compile_plan(model, args, log=out)
    t_plan = time.perf_counter() - t_all
    out(f"model {args.model} ({model.name}), {what}"
        + (f", true class {class_name(model.classes, label)}" if label is not None else ""))
    # one image: every diagonal is encoded once, so a cache would only copy each plaintext
    # into memory that is never read again
    pi = PrivateInference(model, params, _progress(args, "Galois keys"), log=out,
                          galois_keys=args.galois_keys, compile_options=opts, cache_bytes=0)
    pi.times["plan"] = t_plan
    report = _ProgressList(args, "encrypted layers", len(pi.server.program.steps))
    logits, t = pi.infer(x, report=report)
    report.close()
    plain = _plain_logits(model, x)
    enc_cls, plain_cls = int(np.argmax(logits)), int(np.argmax(plain))
    err = float(np.max(np.abs(logits - plain)))
    total = time.perf_counter() - t_all
    res = {"model": args.model, "image": what, "label": label,
           "encrypted_class": enc_cls, "plaintext_class": plain_cls,
           "encrypted_class_name": class_name(model.classes, enc_cls),
           "plaintext_class_name": class_name(model.classes, plain_cls),
           "agree": enc_cls == plain_cls, "max_logit_error": err,
           "secure_128": bool(params.security_bits_ok), "log_n": params.log_n,
           "depth": params.depth, "times": {**pi.times, **{k: v for k, v in t.items()
                                                           if not k.endswith("bytes")}},
           "layers": [_jsonable(r) for r in report],
           "key_bundle_bytes": pi.key_bytes, "request_bytes": t["request_bytes"],
           "response_bytes": t["response_bytes"], "total_seconds": total}
    if args.json:
        print(json.dumps(res))
        return 0
    print("\nper-layer times (server, on the ciphertext):")
    print(_format_report(report))
    print(f"\n  client: encrypt {t['encrypt']:.2f} s ({t['request_bytes'] / 2 ** 20:.1f} MiB), "
          f"decrypt {t['decrypt']:.3f} s ({t['response_bytes'] / 2 ** 10:.0f} KiB response)")
    print(f"  server: evaluate {t['evaluate']:.2f} s; plan {pi.times['plan']:.1f} s, "
          f"compile {pi.times['compile']:.1f} s, "
          f"load keys {pi.times['load_keys']:.1f} s; total {total:.1f} s")
    print(f"\n  encrypted: class {enc_cls} ({res['encrypted_class_name']})")
    print(f"  plaintext: class {plain_cls} ({res['plaintext_class_name']})   "
          f"{'agree' if res['agree'] else 'DISAGREE'}; max |logit error| {err:.2e}")
    if label is not None:
        print(f"  true:      class {label} ({class_name(model.classes, label)})")
    print(f"  security: {'128-bit' if params.security_bits_ok else 'INSECURE (teaching)'} "
          f"CKKS, N = 2^{params.log_n}, depth {params.depth}")
    return 0 if res["agree"] else 1


# ---------------------------------------------------------------------------- eval --encrypted
def _eval_encrypted(args) -> int:
    from . import data as D
    if args.dataset == "sample":
        split = D.load_sample()
    else:
        split = D.load_dataset(args.dataset, args.data, args.split)
    n = len(split.labels) if args.limit is None else min(args.limit, len(split.labels))
    model = load_model(args.model)
    log = (lambda *a, **k: None) if args.json else print
    params, opts = compile_plan(model, args, log=log)
    log(f"encrypted evaluation of {args.model} on {n} {args.dataset} images")
    pi = PrivateInference(model, params, _progress(args, "Galois keys"), log=log,
                          compile_options=opts)
    correct = plain_correct = agree = 0
    max_err = 0.0
    secs = []
    for i in _progress(args, "encrypted eval", n)(range(n)):
        x = D.to_nchw_float(split.images[i:i + 1])[0]
        t = time.perf_counter()
        logits, _ = pi.infer(x)
        secs.append(time.perf_counter() - t)
        plain = _plain_logits(model, x)
        c, pc = int(np.argmax(logits)), int(np.argmax(plain))
        correct += c == split.labels[i]
        plain_correct += pc == split.labels[i]
        agree += c == pc
        max_err = max(max_err, float(np.max(np.abs(logits - plain))))
    res = {"model": args.model, "n": n, "encrypted_accuracy": correct / n if n else float("nan"),
           "plaintext_accuracy": plain_correct / n if n else float("nan"),
           "agreement": agree / n if n else float("nan"), "max_logit_error": max_err,
           "seconds_per_image": float(np.mean(secs)) if secs else None,
           "secure_128": bool(params.security_bits_ok)}
    if args.json:
        print(json.dumps(res))
    else:
        print(f"{args.model}: encrypted accuracy {res['encrypted_accuracy']:.4f}, plaintext "
              f"{res['plaintext_accuracy']:.4f}, agreement {res['agreement']:.4f} on {n} images; "
              f"max |logit error| {max_err:.2e}; {res['seconds_per_image']:.2f} s per image")
    return 0


def _extend_eval() -> None:
    """Add ``--encrypted`` to the existing ``hemet eval`` (which owns ``--plain``)."""
    base = cli.COMMANDS.get("eval")
    if base is None or getattr(base.run, "_hemet_encrypted", False):
        return

    def setup(p):
        base.setup(p)
        for a in p._actions:
            if a.dest == "plain":
                a.required = False
        p.add_argument("--encrypted", action="store_true",
                       help="encrypted evaluation: CKKS client and server in this process")
        _add_params_args(p)

    def run(a):
        if a.encrypted and a.plain:
            raise CommandError("choose one of --plain and --encrypted")
        if a.encrypted:
            return _eval_encrypted(a)
        if not a.plain:
            raise CommandError("choose --plain or --encrypted")
        return base.run(a)
    run._hemet_encrypted = True
    cli.COMMANDS["eval"] = cli.Command("eval", base.help + " (--plain or --encrypted)", setup, run)


# ---------------------------------------------------------------------------- compile / bench
def _compile_setup(p):
    p.add_argument("--model", required=True, help="shipped model, model file, or zoo network "
                   "name (plan only, no weights)")
    _add_params_args(p)
    p.add_argument("--layout", default="multiplexed", choices=["multiplexed", "packed", "per_channel"])
    p.add_argument("--activation", default="prescaled", choices=["prescaled", "merged"])
    p.add_argument("--out", default=None, help="write the public model info (what a client "
                   "fetches) to this file")
    p.add_argument("--json", action="store_true")


def _compile_run(args) -> int:
    from . import zoo
    from .he.program import compile_model
    from .roles import Server
    if args.model in zoo.NETWORKS and args.model not in cli.shipped_models():
        from .modelfile import Model
        g = zoo.build(args.model)
        params = make_params(g.depth(), args)
        w = {k: np.zeros(s) for k, s in g.weight_shapes().items()}
        t = time.perf_counter()
        prog = compile_model(Model(g, w), params.slots, layout=args.layout,
                             activation=args.activation, materialize=False)
        secs = time.perf_counter() - t
        info, limits, fp = None, None, None
    else:
        model = load_model(args.model)
        params, opts = compile_plan(model, args, log=lambda *a: None)
        t = time.perf_counter()
        srv = Server(model, params, layout=args.layout, activation=args.activation, **opts)
        secs = time.perf_counter() - t
        prog, info, limits, fp = srv.program, srv.public_info(), srv.limits, srv.fingerprint.hex()
        if args.out:
            Path(args.out).write_bytes(info)
    res = {"model": args.model, "parameters": params.describe(),
           "secure_128": bool(params.security_bits_ok), "compile_seconds": secs,
           "costs": prog.costs(), "fingerprint": fp, "sizes": limits}
    if args.json:
        print(json.dumps(res))
        return 0
    print(f"{args.model}: {params.describe()}" + ("" if params.security_bits_ok else " [INSECURE]"))
    print(prog.describe())
    c = prog.costs()
    print(f"costs: {c['rotations']} rotations, {c['pt_mults']} ct x pt products, "
          f"{c['squares']} squarings, {c['rotation_keys']} Galois keys; compiled in {secs:.1f} s")
    if limits:
        print(f"key bundle {limits['key_bundle'] / 2 ** 20:.1f} MiB, request "
              f"{limits['request'] / 2 ** 20:.2f} MiB; model fingerprint {fp}")
    if args.out:
        print(f"public model info written to {args.out}")
    return 0


def _bench_setup(p):
    p.add_argument("--model", default=DEFAULT_MODEL, help="shipped model name or model file")
    p.add_argument("--repeat", type=int, default=3, help="encrypted inferences to time")
    p.add_argument("--image", default="0")
    _add_params_args(p)
    p.add_argument("--json", action="store_true")


def _bench_run(args) -> int:
    model = load_model(args.model)
    x, _, _ = load_image(args.image, model.graph.input_shape)
    log = (lambda *a, **k: None) if args.json else print
    params, opts = compile_plan(model, args, log=log)
    pi = PrivateInference(model, params, _progress(args, "Galois keys"), log=log,
                          compile_options=opts)
    runs = []
    layer = {}
    for _ in _progress(args, "bench", args.repeat)(range(max(1, args.repeat))):
        report = []
        _, t = pi.infer(x, report=report)
        for i, r in enumerate(report):
            layer.setdefault(f"{i:02d} {r.get('kind', '')} {r.get('name', '')}", []).append(r["seconds"])
        runs.append(t)
    med = {k: float(np.median([r[k] for r in runs])) for k in ("encrypt", "evaluate", "decrypt")}
    res = {"model": args.model, "parameters": params.describe(), "repeat": len(runs),
           "setup": pi.times, "median": med,
           "first_evaluate": runs[0]["evaluate"],
           "layers_median": {k: float(np.median(v)) for k, v in layer.items()},
           "key_bundle_bytes": pi.key_bytes, "request_bytes": runs[0]["request_bytes"],
           "response_bytes": runs[0]["response_bytes"]}
    if args.json:
        print(json.dumps(res))
        return 0
    print(f"setup: compile {pi.times['compile']:.2f} s, keygen {pi.times['keygen']:.2f} s, "
          f"load keys {pi.times['load_keys']:.2f} s")
    print(f"median of {len(runs)}: encrypt {med['encrypt']:.3f} s, evaluate {med['evaluate']:.3f} s "
          f"(first {runs[0]['evaluate']:.3f} s), decrypt {med['decrypt']:.4f} s")
    for k, v in res["layers_median"].items():
        print(f"  {k:<44s} {v:9.4f} s")
    return 0


# ---------------------------------------------------------------------------- serve / client
def _serve_setup(p):
    p.add_argument("--model", default=DEFAULT_MODEL, help="shipped model name or model file")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-sessions", type=int, default=8, help="key sets held in memory")
    p.add_argument("--ttl", type=float, default=600.0, help="seconds an idle session lives")
    p.add_argument("--max-inflight", type=int, default=16,
                   help="requests with bodies held in memory at once (more wait, then 503)")
    p.add_argument("--prepare", action="store_true", help="pre-encode the diagonals at start")
    p.add_argument("--verbose", action="store_true", help="log every HTTP request")
    _add_params_args(p)


def _serve_run(args) -> int:
    from .roles import Server
    from .service import InferenceService, serve
    model = load_model(args.model)
    params, opts = compile_plan(model, args)
    server = Server(model, params, prepare=args.prepare, **opts)
    service = InferenceService(server, args.max_sessions, args.ttl, args.max_inflight)

    lim = server.limits
    print(f"hemet serve: each session holds {lim['galois_keys']} Galois keys = "
          f"{lim['galois_keys'] * lim['galois_key_bytes'] / 2 ** 20:.0f} MiB; at most "
          f"{args.max_sessions} sessions", flush=True)

    def ready(addr):
        print(f"hemet serve: {model.name} ({params.describe()}"
              f"{'' if params.security_bits_ok else ', INSECURE'}) on http://{addr[0]}:{addr[1]}  "
              f"fingerprint {server.fingerprint.hex()}", flush=True)
    serve(service, args.host, args.port, args.verbose, ready=ready)
    return 0


def _client_setup(p):
    p.add_argument("--server", required=True, help="service URL, e.g. http://127.0.0.1:8000")
    p.add_argument("--image", default="0", help="index into the shipped 64 CIFAR-10 test images "
                   "or a .npy/.npz/image file")
    p.add_argument("--repeat", type=int, default=1, help="requests in the same session")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true")


def _client_run(args) -> int:
    from .roles import Client
    from .service import HTTPClient, ServiceError
    http = HTTPClient(args.server)
    t0 = time.perf_counter()
    try:
        client = Client(http.model_info(), progress=_progress(args, "Galois keys"))
        x, label, what = load_image(args.image, client.info.input_shape)
        bundle = client.key_bundle()
        t1 = time.perf_counter()
        key_bytes = len(bundle)

        def parts():
            nonlocal key_bytes
            for part in client.key_parts():
                key_bytes += len(part)
                yield part
        sid = http.open_session(bundle, parts())
        t2 = time.perf_counter()
        results = []
        for _ in range(max(1, args.repeat)):
            ta = time.perf_counter()
            logits = client.decrypt(http.infer(sid, client.encrypt(x)))
            results.append((logits, time.perf_counter() - ta))
        http.close_session(sid)
    except ServiceError as e:
        raise CommandError(f"server answered {e}") from None
    except OSError as e:
        raise CommandError(f"cannot reach {args.server}: {e}") from None
    logits = results[-1][0]
    k = int(np.argmax(logits))
    res = {"server": args.server, "model": client.info.name, "image": what, "label": label,
           "class": k, "class_name": class_name(client.info.classes, k),
           "logits": [float(v) for v in np.ravel(logits)], "keygen_seconds": t1 - t0,
           "keys_and_upload_seconds": t2 - t0, "inference_seconds": [r[1] for r in results],
           "key_bytes": key_bytes}
    if args.json:
        print(json.dumps(res))
    else:
        print(f"{what}: class {k} ({res['class_name']})"
              + (f", true {class_name(client.info.classes, label)}" if label is not None else ""))
        print(f"keys made and uploaded in {t2 - t0:.1f} s ({key_bytes / 2 ** 20:.1f} MiB); "
              f"encrypted inference round trip {results[-1][1]:.2f} s")
    return 0


# ---------------------------------------------------------------------------- tour
def _tour_setup(p):
    p.add_argument("--log-n", type=int, default=13,
                   help="log2(N) (default 13: 128-bit secure; below is insecure and faster)")
    p.add_argument("--quiet", action="store_true", help="only the trace tables")


def _tour_run(args) -> int:
    from .tour import main
    return main(log_n=args.log_n, quiet=args.quiet)


# ---------------------------------------------------------------------------- registration
def _wrap(run):
    def wrapped(args):
        try:
            return run(args)
        except CommandError as e:
            print(f"hemet {args.command}: error: {e}", file=sys.stderr)
            return 2
        except Exception as e:  # noqa: BLE001 - only the expected kinds are reported
            import ckks
            from .he.layout import LayoutError
            from .roles import ProtocolError
            if isinstance(e, (ProtocolError, LayoutError, ckks.CKKSError)):
                print(f"hemet {args.command}: error: {e}", file=sys.stderr)
                return 2
            raise
    return wrapped


_COMMANDS = [
    ("demo", "encrypt a shipped CIFAR-10 test image, classify it under 128-bit CKKS, compare "
     "with the plaintext model", lambda p: _infer_setup(p, DEFAULT_MODEL), lambda a: _infer(a, True)),
    ("infer", "private inference of one image (client and server in this process)",
     _infer_setup, lambda a: _infer(a, False)),
    ("compile", "compile a model into an HE program: depth, rotations, keys, sizes",
     _compile_setup, _compile_run),
    ("bench", "time key generation, encryption, encrypted layers and decryption",
     _bench_setup, _bench_run),
    ("serve", "HTTP private-inference service (the server never holds a secret key)",
     _serve_setup, _serve_run),
    ("client", "classify an image through a running `hemet serve`", _client_setup, _client_run),
    ("tour", "step through an encrypted computation and one network layer, with a trace",
     _tour_setup, _tour_run),
]

REGISTERED = []
for _name, _help, _setup, _run in _COMMANDS:
    if _name not in cli.COMMANDS:
        cli.register(_name, _help, _setup, _wrap(_run))
        REGISTERED.append(_name)
_extend_eval()
if "eval" in cli.COMMANDS:
    _c = cli.COMMANDS["eval"]
    if not getattr(_c.run, "_wrapped", False):
        _w = _wrap(_c.run)
        _w._wrapped = True
        _w._hemet_encrypted = True
        cli.COMMANDS["eval"] = cli.Command("eval", _c.help, _c.setup, _w)
