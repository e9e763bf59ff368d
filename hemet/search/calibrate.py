"""Per-operation latency of this engine at every level of a parameter set, measured through
the same :class:`~hemet.he.backend.HEBackend` calls the executor makes (so an engine speed-up
shows after recalibrating), and cached on disk as JSON with a description of the machine.

A table is keyed by (log2 N, depth, dnum, threads) and holds, per operation of
:mod:`hemet.search.counts`, the median seconds of one call at each level 0..depth (None where
the executor never runs it: products and rescales need level >= 1).  ``hoist`` and
``hoist_step`` come from two timed calls (one and ``HOIST_STEPS`` nonzero steps): a hoisted
call costs ``hoist + m * hoist_step``.
"""
from __future__ import annotations

import json
import os
import platform
import time
import warnings
from pathlib import Path

import numpy as np

from ckks import Plaintext
from kernels.ifma_arith import GROUP

from .counts import BATCH

__all__ = ["machine", "table_key", "calibrate", "combine", "Calibration", "SHIPPED", "default_path",
           "OtherMachineWarning"]

SHIPPED = Path(__file__).resolve().parent / "calibration.json"
HOIST_STEPS = 8
FORMAT = "hemet-calibration"


def default_path() -> Path:
    """Where ``hemet calibrate`` writes and the predictor reads first:
    ``$HEMET_CALIBRATION``, else the shipped file."""
    env = os.environ.get("HEMET_CALIBRATION")
    return Path(env) if env else SHIPPED


class OtherMachineWarning(UserWarning):
    """Latencies predicted from tables measured on another machine (CPU, cores or kernel
    path): they are that machine's, not this one's."""


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    """What makes timings comparable: CPU, cores, IFMA path, library versions."""
    from importlib import metadata

    import numba

    import kernels
    try:
        version = metadata.version("hemet")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return {"cpu": _cpu_model(), "cores": os.cpu_count(), "ifma": bool(kernels.HAS_IFMA),
            "ifma_used": bool(kernels.USE_IFMA), "python": platform.python_version(),
            "numpy": np.__version__, "numba": numba.__version__, "hemet": version,
            "commit": _commit()}


def _commit() -> str | None:
    """The engine's git commit, where the package runs from a checkout (calibrations go stale
    when the engine changes, so the file says which engine it measured)."""
    import subprocess
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _describe(m: dict) -> str:
    path = "IFMA" if m.get("ifma_used") else "portable"
    return f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores, {path} kernels"


def table_key(log_n: int, depth: int, dnum: int, threads: int) -> str:
    return f"N2^{log_n}-L{depth}-dnum{dnum}-t{threads}"


def _time(fn, n_items: int = 1, min_seconds: float = 0.05, reps: int = 5) -> float:
    """Seconds of one ``fn(i)``: the median of ``reps`` batches of calls lasting >= min_seconds
    (``i`` cycles over ``n_items``: distinct operands, see ``POOL_BYTES``).  The median, not
    the fastest: a network's time is a sum over thousands of calls, so the table must hold a
    typical call.  On the 2-core EPYC the fastest of 5 was 8-10% below the median of 60
    rotations at N = 2^16 and 15% below their mean; the median still ignores one batch slowed
    by another job."""
    fn(0)
    t0 = time.perf_counter()
    fn(1 % n_items)
    one = max(time.perf_counter() - t0, 1e-7)
    inner = max(1, int(min_seconds / one))
    out, i = [], 2
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn(i % n_items)
            i += 1
        out.append((time.perf_counter() - t0) / inner)
    return float(np.median(out))


# The executor streams distinct plaintexts, rotated ciphertexts and Galois keys from memory
# (GiBs of them): timing one operand again and again measures cache-resident speed instead,
# ~1.5x faster for ct x pt products at N = 2^15.  So operands come from pools this large
# (beyond the last-level cache) and rotations cycle over ``KEYS`` distinct keys.
POOL_BYTES = 640 << 20
KEYS = 24


def calibrate(log_n: int, depth: int, dnum: int, threads: int = None, levels=None,
              reps: int = 5, log=None, insecure: bool = False, pool_bytes: int = POOL_BYTES,
              keys: int = KEYS) -> dict:
    """Measure one table (see module doc).  ``levels``: the levels to time (default all);
    the others are left None.  ``insecure``: allow parameters below 128 bits (tests)."""
    import ckks
    from hemet.he import HEBackend

    if threads is not None:
        ckks.set_num_threads(threads)
    threads = ckks.get_num_threads()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ckks.SecurityWarning)
        params = ckks.Parameters(log_n=log_n, depth=depth, dnum=dnum, allow_insecure=insecure)
    ctx = ckks.Context(params)
    kg = ckks.KeyGenerator(ctx)
    n_keys = max(keys, HOIST_STEPS + 1)
    steps = list(range(1, n_keys + 1))
    ev = ckks.Evaluator(ctx, kg.relin_key(), kg.galois_keys(steps))
    enc = ckks.Encryptor(ctx, kg.public_key)
    be = HEBackend(ev, enc, None, max_cache_bytes=None)
    rng = np.random.default_rng(0)
    slots, n = params.slots, params.n
    top = enc.encrypt(rng.uniform(-1, 1, slots))
    ops = {k: [None] * (depth + 1) for k in
           ("rotate", "hoist", "hoist_step", "hoist_copy", "mul_plain", "mul_new", "mul_add",
            "add", "add_plain", "square", "rescale", "drop_level", "encode", "convert", "convert1")}
    levels = sorted(set(range(depth + 1) if levels is None else levels), reverse=True)
    vec = rng.uniform(-1, 1, slots)
    hoists = [steps[i:i + HOIST_STEPS] for i in range(0, n_keys - HOIST_STEPS + 1, HOIST_STEPS)]
    t_start = time.perf_counter()
    for level in levels:
        limb = n * 8 * (level + 1)
        n_ct = int(min(max(pool_bytes // (3 * limb), 4), 2048))
        cts = [ev.drop_level(top, level)]
        for i in range(1, n_ct):  # distinct copies (the values do not matter for timing)
            cts.append(cts[0].copy())
        ct = cts[0]
        ops["rotate"][level] = _time(lambda i: be.rotate(cts[i % n_ct], steps[i % n_keys]), n_keys, reps=reps)
        t1 = _time(lambda i: be.rotate_hoisted(cts[i % n_ct], [steps[i % n_keys]]), n_keys, reps=reps)
        tm = _time(lambda i: be.rotate_hoisted(cts[i % n_ct], hoists[i % len(hoists)]), len(hoists) * n_ct,
                   reps=reps)
        step = max((tm - t1) / (HOIST_STEPS - 1), 0.0)
        ops["hoist_step"][level] = step
        ops["hoist"][level] = max(t1 - step, 0.0)
        ops["hoist_copy"][level] = _time(lambda i: be.rotate_hoisted(cts[i], [0]), n_ct, reps=reps)
        ops["add"][level] = _time(lambda i: be.add(cts[i], cts[(i + 1) % n_ct]), n_ct, reps=reps)
        ops["add_plain"][level] = _time(lambda i: be.add_plain(cts[i], vec), n_ct, reps=reps)
        if level >= 1:
            scale = params.scale
            pt0 = ctx.encoder.encode(vec, level=level, scale=scale)
            pts = [pt0] + [Plaintext(pt0.data.copy(), level, pt0.scale, pt0.context_id)
                           for _ in range(n_ct - 1)]
            ops["mul_plain"][level] = _time(lambda i: be.multiply_plain(cts[i], pts[i]), n_ct, reps=reps)
            # the stage's products: batches of BATCH terms, one kernel call each, into
            # accumulators that exist (mul_add) or start at zero (mul_new), GROUP terms per
            # accumulator: the stages add many terms into each (hemet-fire1-4's batches: 32
            # terms into 2-3), which the IFMA kernel reduces once per GROUP products
            nb = max(n_ct // BATCH, 1)
            terms = [[((b, t // GROUP), cts[(b * BATCH + t) % n_ct], pts[(b * BATCH + t) % n_ct])
                      for t in range(BATCH)] for b in range(nb)]
            accs = {}
            for tb in terms:
                be.multiply_plain_add_many(accs, tb)
            ops["mul_add"][level] = _time(lambda i: be.multiply_plain_add_many(accs, terms[i]), nb,
                                          reps=reps) / BATCH
            ops["mul_new"][level] = _time(lambda i: be.multiply_plain_add_many({}, terms[i]), nb,
                                          reps=reps) / BATCH
            del accs, terms
            del pts
            ops["square"][level] = _time(lambda i: be.square(cts[i]), n_ct, reps=reps)
            ops["rescale"][level] = _time(lambda i: be.rescale(cts[i]), n_ct, reps=reps)
            ops["drop_level"][level] = _time(lambda i: be.drop_level(cts[i], level - 1), n_ct, reps=reps)
            ops["encode"][level] = _encode_seconds(be, vec, level, scale, reps)
            ops["convert"][level], ops["convert1"][level] = _convert_seconds(
                be, vec, level, scale, reps, max(64, pool_bytes // (n * 8)), cts,
                ops["mul_add"][level])
        del cts
        if log:
            log(f"  level {level}: rotate {ops['rotate'][level] * 1e3:.2f} ms, hoisted "
                f"{ops['hoist'][level] * 1e3:.2f} + {ops['hoist_step'][level] * 1e3:.2f}/step ms"
                + (f", mul_add {ops['mul_add'][level] * 1e3:.3f} ms, encode "
                   f"{ops['encode'][level] * 1e3:.2f} ms, convert {ops['convert'][level] * 1e3:.3f} ms"
                   if level >= 1 else ""))
    return {"log_n": log_n, "depth": depth, "dnum": dnum, "threads": threads,
            "levels": levels, "ops": ops, "seconds": round(time.perf_counter() - t_start, 1),
            "measured": time.strftime("%Y-%m-%d %H:%M:%S"), "loadavg": os.getloadavg()[0]}


def combine(tables: list) -> dict:
    """One table from several passes of :func:`calibrate` over the same parameters: the
    median of the passes per operation and level (None where a pass has None).  Passes taken
    minutes apart: on the 2-core EPYC two passes of one table, 50 min apart, differed by
    0.75-0.96x per operation, moving a prediction by 15%; a burst of other work inside one
    pass's window no longer sets the whole table."""
    if not tables:
        raise ValueError("no tables to combine")
    first = tables[0]
    keys = {(t["log_n"], t["depth"], t["dnum"], t["threads"]) for t in tables}
    if len(keys) != 1:
        raise ValueError(f"tables of different parameters cannot be combined: {sorted(keys)}")
    ops = {}
    for op, col in first["ops"].items():
        cols = [t["ops"][op] for t in tables]
        ops[op] = [None if any(c[lv] is None for c in cols) else float(np.median([c[lv] for c in cols]))
                   for lv in range(len(col))]
    out = dict(first, ops=ops, passes=len(tables),
               seconds=round(sum(t.get("seconds", 0.0) for t in tables), 1),
               measured=[t.get("measured") for t in tables],
               loadavg=[t.get("loadavg") for t in tables])
    return out


_uid = iter(range(1 << 62))


def _encode_seconds(be, vec, level, scale, reps) -> float:
    """A plaintext encoded on use, as the executor's batched fetch does (cache misses, into
    the backend's reused buffer)."""
    batch = BATCH

    def run(_):
        items = [(("calib", next(_uid)), (lambda g=g: np.roll(vec, g))) for g in range(batch)]
        be.encode_cached_many(items, level, scale, transient=True)

    cache, be.cache.max_bytes = be.cache.max_bytes, 0
    try:
        return _time(run, reps=reps) / batch
    finally:
        be.cache.max_bytes = cache


def _convert_seconds(be, vec, level, scale, reps, n_pinned, cts, mul_add) -> tuple[float, float]:
    """Pinned compact plaintexts: what a product costs beyond ``mul_add`` when its plaintext
    is compact (converted limb by limb inside the batch's products), and one converted alone
    to NTT form (``encode_cached``)."""
    n_pinned = -(-n_pinned // BATCH) * BATCH
    keys = [("calib-pin", next(_uid)) for _ in range(n_pinned)]
    be.cache.clear()
    be.cache.max_bytes = (n_pinned + 1) * be.ctx.n * 8
    be.pinning, be.pin_pending = True, 1 << 40  # no room in NTT form: every entry compact
    try:
        first = be.encode_cached(keys[0], lambda: vec, level, scale)
        be.encode_cached(keys[0], lambda: vec, level, scale)
        e = be.cache._d[keys[0]]
        for k in keys[1:]:  # the same coefficients, distinct arrays (no FFT per entry)
            be.cache.get(k, lambda: type(e)(e.data.copy(), e.small), pin=True)
    finally:
        be.pinning, be.pin_pending = False, 0
    del first
    # the ciphertexts and accumulators of the mul_add timing, so the difference is the
    # conversion alone
    n_ct = len(cts)
    nb = max(n_ct // BATCH, 1)
    terms = []
    for b in range(0, n_pinned, BATCH):
        pts = be.encode_cached_many([(k, lambda: vec) for k in keys[b:b + BATCH]], level, scale)
        c = (b // BATCH) % nb
        terms.append([((c, t // GROUP), cts[(c * BATCH + t) % n_ct], pt)
                      for t, pt in enumerate(pts)])
    accs = {}
    for tb in terms:
        be.multiply_plain_add_many(accs, tb)
    many = _time(lambda i: be.multiply_plain_add_many(accs, terms[i]), len(terms), reps=reps) / BATCH
    del accs, terms
    one = _time(lambda i: be.encode_cached(keys[i], lambda: vec, level, scale), n_pinned, reps=reps)
    be.cache.clear()
    be.cache.max_bytes = None
    return max(many - mul_add, 0.0), one


class Calibration:
    """Tables on disk (JSON): ``{"format", "version", "machine", "tables": {key: table}}``."""

    def __init__(self, data: dict = None, path: Path = None):
        self.data = data or {"format": FORMAT, "version": 1, "machine": machine(), "tables": {}}
        self.path = path

    @classmethod
    def load(cls, path=None, warn: bool = True) -> "Calibration":
        """The tables at ``path`` (default :func:`default_path`); where that file does not
        exist yet, the shipped ones.  ``warn``: an :class:`OtherMachineWarning` when they were
        measured on another machine."""
        path = Path(path) if path else default_path()
        src = path if path.is_file() else SHIPPED
        if not src.is_file():
            return cls(path=path)
        data = json.loads(src.read_text())
        if data.get("format") != FORMAT:
            raise ValueError(f"{src} is not a calibration file")
        cal = cls(data, path)
        if warn and cal.tables and not cal.same_machine():
            theirs, mine = data.get("machine", {}), machine()
            warnings.warn(
                f"latency calibration {src} was measured on another machine ({_describe(theirs)}; "
                f"this one: {_describe(mine)}): predicted seconds are that machine's.  Time this "
                "one with `hemet calibrate --out FILE` and set HEMET_CALIBRATION=FILE",
                OtherMachineWarning, stacklevel=2)
        return cal

    def save(self, path=None) -> Path:
        path = Path(path or self.path or default_path())
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1))
        os.replace(tmp, path)
        self.path = path
        return path

    @property
    def tables(self) -> dict:
        return self.data["tables"]

    def add(self, table: dict) -> None:
        self.data["machine"] = machine()
        self.tables[table_key(table["log_n"], table["depth"], table["dnum"], table["threads"])] = table

    def same_machine(self) -> bool:
        """Measured on a machine like this one: same CPU model, cores and kernel path."""
        mine, theirs = machine(), self.data.get("machine", {})
        return all(mine.get(k) == theirs.get(k) for k in ("cpu", "cores", "ifma_used"))

    def table(self, log_n: int, depth: int, dnum: int, threads: int) -> tuple[dict, bool]:
        """(table, exact): the table for these parameters, else the one with the same ring
        degree and threads and the nearest depth >= this one (then the nearest below):
        non-key-switching costs per level depend only on N and the level; key switching
        also on the digits, so such a table is approximate (``exact`` False)."""
        key = table_key(log_n, depth, dnum, threads)
        if key in self.tables:
            return self.tables[key], True
        same = [t for t in self.tables.values() if t["log_n"] == log_n and t["threads"] == threads]
        if not same:
            raise KeyError(f"no calibration for N = 2^{log_n} with {threads} threads "
                           f"(have {sorted(self.tables)}); run `hemet calibrate`")
        above = [t for t in same if t["depth"] >= depth]
        best = min(above, key=lambda t: t["depth"]) if above else max(same, key=lambda t: t["depth"])
        return best, False
