"""Compile a hemet model into a packed HE program and run it (encrypted or on the mirror).

Compilation keeps, for every graph node, either a *materialized* value (ciphertexts on a
layout: the input, a squaring's output, a linear stage's output) or an *affine expression*
``sum_k M_k v_k + bias`` over materialized values ``v_k``.  Linear ops (normalize, conv,
batch norm, pools, linear, concat) only transform expressions, exactly (sparse products), so
consecutive linear layers become one map.  A ``poly`` activation ``a x^2 + b x + c`` on an
expression E materializes ``x = E`` (one linear stage) and squares it (one level); the next
linear stage W absorbs the coefficients (coefficient merging), either as two inputs
``x^2`` and ``x`` with weights ``a W`` and ``b W`` ("merged", the plain form) or as one input
``y = x^2 + (b/a) x`` (computed beside the square in the same level) with weights ``a W``
("prescaled", the default: half the diagonals); ``W c`` goes into the bias.  So each
conv(+bn)(+pool) + activation costs two levels, concat costs nothing (the branch maps are
stacked into one stage) and the head (conv 1x1 + global pool) is one stage, or one stage plus
log2(H W) rotations with ``global_pool="rotate"``.

Steps of a program (:class:`Step`): linear stages, squarings and (optionally, for global
pooling) rotate-and-sum steps; value 0 is the input.  ``Program.depth`` is the multiplicative
depth, ``Program.rotation_steps`` the Galois keys to generate.

Layout policy (``layout=``): ``"multiplexed"`` (default) keeps the input's base plane and
doubles the gap after every stride-2 conv / 2x2 pool (channels interleaved into the gaps);
``"packed"`` repacks every stage output contiguously (gap 1); ``"per_channel"`` puts every
channel in its own ciphertext, repacked at gap 1; ``"per_channel_strided"`` too, but keeps
the values in place after a downsampling (gaps, no interleaving: the usual
one-channel-per-ciphertext baseline, without the repacking diagonals).  Any layout change is free in kind: a stage maps any input
layout to any output layout; only the diagonal count changes.

Not yet: residual ``add`` nodes (hemet.layers has no add op; :func:`expr_add` is ready for one),
poly activations on the graph output, bootstrapping (the whole network must fit the depth).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from hemet import layers as L
from hemet.graph import INPUT

from . import sparse as S
from .layout import Layout, LayoutError, PooledView
from .linear import LinearStage
from .sparse import AffineMap

__all__ = ["Program", "compile_model", "Expr", "expr_add", "choose_layout", "format_report"]


# ---------------------------------------------------------------- expressions
@dataclass
class Expr:
    """sum over sources v of terms[v] (linear AffineMap, source shape -> shape) + bias."""

    shape: tuple
    terms: dict = field(default_factory=dict)
    bias: np.ndarray = None

    def __post_init__(self):
        self.shape = S.as_map_shape(self.shape)
        if self.bias is None:
            self.bias = np.zeros(int(np.prod(self.shape)))

    def apply(self, m: AffineMap) -> "Expr":
        lin = m.linear_only()
        return Expr(m.out_shape, {v: lin.compose(t) for v, t in self.terms.items()},
                    m.linear_part(self.bias) + m.bias)


def expr_add(a: Expr, b: Expr) -> Expr:
    """Residual addition of two expressions (sum of maps per source)."""
    if a.shape != b.shape:
        raise ValueError(f"cannot add {a.shape} and {b.shape}")
    terms = dict(a.terms)
    for v, t in b.terms.items():
        terms[v] = terms[v] + t if v in terms else t
    return Expr(a.shape, terms, a.bias + b.bias)


def _expr_concat(exprs: list[Expr], src_shapes: dict) -> Expr:
    srcs = []
    for e in exprs:
        srcs += [v for v in e.terms if v not in srcs]
    terms = {}
    for v in srcs:
        terms[v] = AffineMap.vstack([e.terms[v] if v in e.terms else AffineMap.zeros(src_shapes[v], e.shape)
                                     for e in exprs])
    c = sum(e.shape[0] for e in exprs)
    return Expr((c,) + exprs[0].shape[1:], terms, np.concatenate([e.bias for e in exprs]))


def _is_source(e: Expr) -> bool:
    return len(e.terms) == 1 and not np.any(e.bias) and next(iter(e.terms.values())).is_identity()


def _summable(e: Expr) -> bool:
    _, h, w = e.shape
    return not (h & (h - 1) or w & (w - 1))


def _poolable(e: Expr, k: int, prog) -> bool:
    """k x k average pooling of ``e`` by rotate-and-add: one source, a per-channel scale
    (identity, batch norm, poly coefficients), a plain layout with room for the window."""
    if len(e.terms) != 1 or k < 2 or k & (k - 1):
        return False
    (v, t), = e.terms.items()
    lay = prog.layouts[v]
    c, h, w = e.shape
    if not isinstance(lay, Layout) or lay.shape != e.shape or t.diagonal is None or h % k or w % k:
        return False
    d = t.diagonal.reshape(c, h * w)
    return bool(np.all(d == d[:, :1]))


def _channel_scaled_source(e: Expr, prog):
    """(source, per-channel scale) when ``e`` is one materialized value on a plain layout times a
    per-channel scale (identity, batch norm, poly coefficients) with power-of-two H and W, so
    its channel sums can be taken in place by rotations; else None."""
    found = _channel_scaled_sources(e, prog)
    return found[0] if found is not None and len(found) == 1 else None


def _channel_scaled_sources(e: Expr, prog):
    """[(source, per-channel scale)] when every term of ``e`` is such a value (a merged
    activation gives two: x^2 and x); else None."""
    if not e.terms or len(e.shape) != 3:
        return None
    c, h, w = e.shape
    out = []
    for v, t in e.terms.items():
        lay = prog.layouts[v]
        if (not isinstance(lay, Layout) or lay.shape != e.shape or t.diagonal is None
                or sum_steps(lay) is None):
            return None
        d = t.diagonal.reshape(c, h * w)
        if not np.all(d == d[:, :1]):
            return None
        out.append((v, d[:, 0]))
    return out


def _pointwise_before(node, g, weights):
    """(input name, weight (F, C), bias (F,)) when ``node``'s input is a 1x1, stride-1 conv
    whose only consumer is ``node``; else None.  Global pooling commutes with it."""
    if node.inputs[0] == INPUT:
        return None
    src = g.node(node.inputs[0])
    lay = src.layer
    if not (isinstance(lay, L.Conv2d) and lay.kernel_size == 1 and lay.stride == 1
            and lay.padding in (0, -1) and lay.groups == 1):
        return None
    if [n.name for n in g.consumers().get(src.name, [])] != [node.name]:
        return None
    wgt = np.asarray(weights[f"{src.name}.weight"], dtype=np.float64)
    bias = (np.asarray(weights[f"{src.name}.bias"], dtype=np.float64) if lay.bias
            else np.zeros(lay.out_channels))
    return src.inputs[0], wgt.reshape(lay.out_channels, lay.in_channels), bias


def choose_layout(policy: str, shape, src: Layout, slots: int) -> Layout:
    """Output layout of a stage reading ``src`` (see module doc)."""
    c, h, w = S.as_map_shape(shape)
    if h == 1 and w == 1:
        return Layout.vector(c, slots) if not policy.startswith("per_channel") else \
            Layout.per_channel(c, 1, 1, slots)
    if policy == "packed":
        return Layout.packed(c, h, w, slots)
    if policy == "per_channel":
        return Layout.per_channel(c, h, w, slots)
    if policy not in ("multiplexed", "per_channel_strided"):
        raise ValueError(f"unknown layout policy {policy!r}")
    per_channel = policy == "per_channel_strided"
    if src.height % h == 0 and src.width % w == 0 and src.height // h == src.width // w:
        r = src.height // h
        if r & (r - 1) == 0:
            try:
                if per_channel:  # one channel per ciphertext, values kept in place (gaps)
                    return Layout.per_channel(c, h, w, slots, gap=src.gap * r,
                                              base_h=src.base_h, base_w=src.base_w)
                return Layout(c, h, w, src.base_h, src.base_w, src.gap * r, slots)
            except LayoutError:
                pass
    return Layout.per_channel(c, h, w, slots) if per_channel else Layout.packed(c, h, w, slots)


# ---------------------------------------------------------------- the program
@dataclass
class Step:
    """``kind``: "linear" (``stage`` over ``srcs``), "square" (one src), "prescaled" (x^2 + t*x,
    one level; ``coeffs``) or "sum" (one src; ``steps``: rotate-and-add steps, no level)."""

    kind: str
    srcs: tuple
    out: int
    stage: LinearStage = None
    steps: tuple = ()
    coeffs: list = None  # "prescaled": per ciphertext, the slot vector t of x^2 + t*x
    name: str = ""       # the graph node (activations, sums) for reports


def sum_steps(layout: Layout) -> list[int] | None:
    """Rotate-and-add steps summing each channel's H x W values into its (0, 0) slot, or None
    when H or W is not a power of two."""
    h, w, g = layout.height, layout.width, layout.gap
    if h & (h - 1) or w & (w - 1):
        return None
    steps = [g * (1 << e) for e in range(w.bit_length() - 1)]
    steps += [g * layout.base_w * (1 << e) for e in range(h.bit_length() - 1)]
    return steps


class Program:
    def __init__(self, input_layout: Layout, slots: int):
        self.input_layout = input_layout
        self.slots = slots
        self.layouts = {0: input_layout}   # value id -> layout
        self.consumed = {0: 0}             # value id -> levels consumed since the input
        self.steps: list[Step] = []
        self.output = None
        self.output_shape = None

    def _new_value(self, layout, consumed):
        vid = len(self.layouts)
        self.layouts[vid] = layout
        self.consumed[vid] = consumed
        return vid

    def add_linear(self, stage: LinearStage, srcs: list[int]) -> int:
        vid = self._new_value(stage.out_layout, max(self.consumed[s] for s in srcs) + 1)
        self.steps.append(Step("linear", tuple(srcs), vid, stage=stage))
        return vid

    def add_square(self, src: int) -> int:
        vid = self._new_value(self.layouts[src], self.consumed[src] + 1)
        self.steps.append(Step("square", (src,), vid))
        return vid

    def add_prescaled(self, src: int, t) -> int:
        """x^2 + t[c]*x in one level: the square and the plaintext product both rescale from
        x's level, at equal scales (t is encoded at x's scale), and add."""
        lay = self.layouts[src]
        vecs = lay.pack(np.repeat(np.asarray(t, np.float64), lay.height * lay.width).reshape(lay.shape))
        vid = self._new_value(lay, self.consumed[src] + 1)
        self.steps.append(Step("prescaled", (src,), vid, coeffs=vecs))
        return vid

    def add_pool(self, src: int, k: int) -> int:
        """Sum every k x k window into its corner in place (rotations and additions, no
        level); the value then lives on a :class:`PooledView` of the source layout (the
        1 / k^2 goes into the next stage)."""
        lay = self.layouts[src]
        steps = [lay.gap * (1 << e) for e in range(k.bit_length() - 1)]
        steps += [lay.gap * lay.base_w * (1 << e) for e in range(k.bit_length() - 1)]
        vid = self._new_value(PooledView(lay, k), self.consumed[src])
        self.steps.append(Step("sum", (src,), vid, steps=tuple(steps)))
        return vid

    def add_sum(self, src: int) -> int:
        """Sum every channel's map into its (0, 0) slot (rotations and additions, no level);
        the result is a (C, 1, 1) value on the same base, gap and planes."""
        lay = self.layouts[src]
        steps = sum_steps(lay)
        out = Layout(lay.channels, 1, 1, lay.base_h, lay.base_w, lay.gap, lay.slots,
                     lay.plane_stride, lay.multiplex)
        vid = self._new_value(out, self.consumed[src])
        self.steps.append(Step("sum", (src,), vid, steps=tuple(steps)))
        return vid

    # ------------------------------------------------------------------ facts
    @property
    def depth(self) -> int:
        return self.consumed[self.output]

    @property
    def stages(self) -> list[LinearStage]:
        return [s.stage for s in self.steps if s.kind == "linear"]

    @property
    def rotation_steps(self) -> set:
        """Every rotation step of the program: generate Galois keys for exactly these."""
        out = set()
        for st in self.stages:
            out |= st.rotation_steps
        for s in self.steps:
            out |= {x % self.slots for x in s.steps} - {0}
        return out

    def rotation_uses(self) -> dict:
        """{step: rotations by it in one run} (hoisted baby steps, giant steps, sums)."""
        uses = {}
        for s in self.steps:
            if s.kind == "linear":
                for step, n in s.stage.rotation_uses().items():
                    uses[step] = uses.get(step, 0) + n
            elif s.kind == "sum":
                n = self.layouts[s.srcs[0]].n_ciphertexts
                for x in s.steps:
                    if x % self.slots:
                        uses[x % self.slots] = uses.get(x % self.slots, 0) + n
        return uses

    def key_plan(self, max_keys: int = None):
        """(Galois key steps, paths) with at most ``max_keys`` keys (None: one per step).

        The powers of two are always kept (every step is a sum of them); then, greedily, the
        step whose key saves the most extra key switches: a dropped step ``s`` costs its uses
        times one extra rotation when two kept steps sum to it (mod slots; the first one is
        hoisted with the baby steps where it is one), else times ``len(binary path) - 1``
        (the binary expansion of ``s`` or of ``s - slots``).  On SqueezeNet at N = 2^16 (62
        of 176 keys) that is 298 extra key switches, against 746 keeping the most used steps.
        Give ``paths`` to ``HEBackend(rotation_paths=...)``."""
        uses = self.rotation_uses()
        if max_keys is None or len(uses) <= max_keys:
            return set(uses), {}
        slots = self.slots
        pow2 = [1 << e for e in range(slots.bit_length() - 1)]
        if max_keys < len(pow2):
            raise ValueError(f"max_keys must be at least log2(slots) = {len(pow2)}")
        keep = set(pow2)

        def binary(step):
            up = [1 << e for e in range(step.bit_length()) if step >> e & 1]
            down_n = slots - step
            down = [slots - (1 << e) for e in range(down_n.bit_length()) if down_n >> e & 1]
            return min((p for p in (up, down) if all(x in keep for x in p)), key=len)

        def hops(step):  # extra rotations of one use of ``step`` under ``keep``
            if step in keep:
                return 0
            if any((step - a) % slots in keep for a in keep):
                return 1
            return len(binary(step)) - 1

        cur = {s: hops(s) for s in uses}
        while len(keep) < max_keys:
            best, best_gain = None, 0
            for c in uses:
                if c in keep:
                    continue
                gain = uses[c] * cur[c]
                for s, h in cur.items():
                    if h > 1 and s != c and ((s - c) % slots in keep or (s - c) % slots == c):
                        gain += uses[s] * (h - 1)
                if gain > best_gain:
                    best, best_gain = c, gain
            if best is None:
                break
            keep.add(best)
            # the new key itself, and pairs through it (best + a kept step, or best + best)
            cur = {s: (0 if s == best else 1 if h > 1 and (s - best) % slots in keep else h)
                   for s, h in cur.items()}
        ranked = sorted(keep, key=lambda x: (-uses.get(x, 0), x))
        paths = {}
        for step in uses:
            if step in keep:
                continue
            pair = next(([a, (step - a) % slots] for a in ranked if (step - a) % slots in keep), None)
            paths[step] = pair if pair is not None else binary(step)
        return keep, paths

    def key_plan_costs(self, paths: dict) -> int:
        """Extra key switches per run that ``paths`` cost."""
        uses = self.rotation_uses()
        return sum(uses[s] * (len(p) - 1) for s, p in paths.items())

    def costs(self) -> dict:
        tot = {"stages": len(self.stages), "squares": 0, "rotations": 0, "pt_mults": 0,
               "rescales": 0, "diagonals": 0, "ct_squares": 0}
        for s in self.steps:
            n = self.layouts[s.srcs[0]].n_ciphertexts
            if s.kind in ("square", "prescaled"):
                tot["squares"] += 1
                tot["ct_squares"] += n
                tot["rescales"] += n
                if s.kind == "prescaled":
                    tot["pt_mults"] += n
                    tot["rescales"] += n
            elif s.kind == "sum":
                tot["rotations"] += n * len(s.steps)
            else:
                c = s.stage.costs()
                for k in ("rotations", "pt_mults", "rescales", "diagonals"):
                    tot[k] += c[k]
        tot["depth"] = self.depth
        tot["rotation_keys"] = len(self.rotation_steps)
        return tot

    def describe(self) -> str:
        lines = [f"input {self.input_layout.describe()}"]
        for s in self.steps:
            n = self.layouts[s.srcs[0]].n_ciphertexts
            if s.kind in ("square", "prescaled"):
                what = "square" if s.kind == "square" else "square_plus_tx"
                lines.append(f"v{s.out} = {what}(v{s.srcs[0]})  [{n} ct]")
            elif s.kind == "sum":
                what = "pool_in_place" if isinstance(self.layouts[s.out], PooledView) else "sum_hw"
                lines.append(f"v{s.out} = {what}(v{s.srcs[0]})  [{n} ct, steps {list(s.steps)}]")
            else:
                st = s.stage
                c = st.costs()
                lines.append(f"v{s.out} = {st.name}({', '.join(f'v{i}' for i in s.srcs)}) -> "
                             f"{st.out_layout.describe()}; {c['diagonals']} diagonals, "
                             f"B={c['baby_steps']}, {c['rotations']} rotations")
        lines.append(f"output v{self.output}, depth {self.depth}, "
                     f"{len(self.rotation_steps)} rotation keys")
        return "\n".join(lines)

    def levels_and_scales(self, backend, input_level: int = None, out_scale: float = None) -> dict:
        """(level, scale) of every value for a run whose input is at ``input_level`` (default:
        the top level): the same float arithmetic as the evaluator, so the scales are exact."""
        level = backend.max_level if input_level is None else input_level
        out_scale = backend.fresh_scale if out_scale is None else out_scale
        ls = {0: (level, backend.fresh_scale)}
        for s in self.steps:
            if s.kind in ("square", "prescaled"):
                lv, sc = ls[s.srcs[0]]
                ls[s.out] = (lv - 1, sc * sc / backend.prime(lv))
            elif s.kind == "sum":
                ls[s.out] = ls[s.srcs[0]]
            else:
                ls[s.out] = (min(ls[v][0] for v in s.srcs) - 1, out_scale)
        return ls

    def prepare(self, backend, input_level: int = None, out_scale: float = None) -> dict:
        """Pre-encode the stages' diagonals at the level and scale where the run uses them,
        into the backend's cache, pinned (never evicted), while they fit its byte budget:
        in NTT form while the budget also holds every plaintext still to come in compact
        form (``HEBackend(compact=True)``: int64 coefficients, N * 8 bytes), compact after.

        Deepest stages first: a plaintext at level l costs (l+1) limbs, so a budget holds the
        most plaintexts (encodings saved) when the low-level ones go in first.  Returns
        {step index: plaintexts prepared}."""
        ls = self.levels_and_scales(backend, input_level, out_scale)
        out_scale = backend.fresh_scale if out_scale is None else out_scale
        done = {}
        order = sorted(range(len(self.steps)),
                       key=lambda i: min(ls[v][0] for v in self.steps[i].srcs))
        pinning = getattr(backend, "pinning", None)
        if pinning is not None:
            backend.pinning = True
            backend.pin_pending = sum(len(s.coeffs) if s.kind == "prescaled" else
                                      s.stage.n_diagonals if s.kind == "linear" else 0
                                      for s in self.steps)
        try:
            for idx in order:
                s = self.steps[idx]
                if s.kind == "linear":
                    level = min(ls[v][0] for v in s.srcs)
                    done[idx] = s.stage.prepare(backend, level, [ls[v][1] for v in s.srcs], out_scale)
                elif s.kind == "prescaled":
                    for j in range(len(s.coeffs)):
                        self._coeff_plain(backend, s, j, *ls[s.srcs[0]])
                    done[idx] = len(s.coeffs)
        finally:
            if pinning is not None:
                backend.pinning = pinning
        return done

    @staticmethod
    def _coeff_plain(backend, step, j, level, scale):
        """The t vector of a prescaled step, encoded at x's level and scale."""
        return backend.encode_cached(("prescaled", id(step), j, level, scale),
                                     lambda: step.coeffs[j], level, scale)

    # ------------------------------------------------------------------ running
    def encrypt(self, backend, x) -> list:
        return [backend.encrypt(v) for v in self.input_layout.pack(x)]

    def run_encrypted(self, backend, cts: list, out_scale: float = None, report: list = None) -> list:
        """Input ciphertexts (on ``input_layout``) -> output ciphertexts (on the output layout).

        ``report``: a list that receives one dict per step (see :func:`format_report`): name,
        kind, ciphertexts in/out, output level and log2 scale, rotations (hoisted baby steps
        and plain ones), key switches, ct x pt products, plaintexts encoded on the way, seconds."""
        if len(cts) != self.input_layout.n_ciphertexts:
            raise ValueError(f"expected {self.input_layout.n_ciphertexts} input ciphertexts")
        level = min(backend.level(c) for c in cts)
        if level < self.depth:
            raise ValueError(f"the program needs depth {self.depth}, the input is at level {level}")
        out_scale = backend.fresh_scale if out_scale is None else out_scale
        values = {0: cts}
        uses = {}
        for s in self.steps:
            for v in s.srcs:
                uses[v] = uses.get(v, 0) + 1
        for s in self.steps:
            if report is not None:
                before = dict(getattr(backend, "counts", {}))
                t0 = time.perf_counter()
                enc0 = getattr(backend, "encode_seconds", 0.0)
            self._run_step(backend, s, values, out_scale)
            if report is not None:
                report.append(self._report_row(backend, s, values[s.out], before,
                                               time.perf_counter() - t0,
                                               getattr(backend, "encode_seconds", 0.0) - enc0))
            for v in s.srcs:  # free values nobody needs any more
                uses[v] -= 1
                if uses[v] == 0 and v != self.output:
                    del values[v]
        return values[self.output]

    def _report_row(self, backend, s, out, before, seconds, encode_seconds) -> dict:
        after = getattr(backend, "counts", {})
        d = {k: after.get(k, 0) - before.get(k, 0) for k in
             ("rotate", "rotate_hoisted", "decompose", "multiply_plain", "square", "encode", "add")}
        name = s.stage.name if s.kind == "linear" else (s.name or f"v{s.out}")
        return {"name": name, "kind": s.kind, "out": s.out,
                "in_cts": sum(self.layouts[v].n_ciphertexts for v in s.srcs),
                "out_cts": len(out), "level": backend.level(out[0]),
                "log2_scale": float(np.log2(backend.scale(out[0]))),
                "rotations": d["rotate"] + d["rotate_hoisted"], "hoisted": d["rotate_hoisted"],
                "keyswitches": d["rotate"] + d["rotate_hoisted"] + d["square"],
                "pt_mults": d["multiply_plain"], "adds": d["add"], "squares": d["square"],
                "encodes": d["encode"], "encode_s": encode_seconds, "seconds": seconds}

    def _run_step(self, backend, s, values, out_scale):
        if s.kind == "square":
            values[s.out] = [backend.rescale(backend.square(c)) for c in values[s.srcs[0]]]
        elif s.kind == "prescaled":
            out = []
            for j, c in enumerate(values[s.srcs[0]]):
                t = self._coeff_plain(backend, s, j, backend.level(c), backend.scale(c))
                out.append(backend.add(backend.rescale(backend.square(c)),
                                       backend.rescale(backend.multiply_plain(c, t))))
            values[s.out] = out
        elif s.kind == "sum":
            out = []
            for c in values[s.srcs[0]]:
                for step in s.steps:
                    c = backend.add(c, backend.rotate(c, step))
                out.append(c)
            values[s.out] = out
        else:
            values[s.out] = s.stage.evaluate(backend, [values[v] for v in s.srcs],
                                             out_scale=out_scale)

    def run(self, backend, x) -> np.ndarray:
        """Encrypt a (C, H, W) image, run, decrypt, unpack: the output vector."""
        out = self.run_encrypted(backend, self.encrypt(backend, x))
        y = self.layouts[self.output].unpack([backend.decrypt(c) for c in out])
        return y.reshape(self.output_shape)


def format_report(rows: list) -> str:
    """A table of :meth:`Program.run_encrypted`'s per-step report, with a total line."""
    head = (f"{'step':<18} {'kind':<9} {'ct in/out':>9} {'level':>5} {'log2 sc':>7} {'rot':>5} "
            f"{'(hoist)':>7} {'ct*pt':>6} {'encode':>6} {'enc s':>6} {'seconds':>8}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['name'][:18]:<18} {r['kind']:<9} {str(r['in_cts']) + '/' + str(r['out_cts']):>9} "
                     f"{r['level']:>5} {r['log2_scale']:>7.2f} {r['rotations']:>5} {r['hoisted']:>7} "
                     f"{r['pt_mults']:>6} {r['encodes']:>6} {r['encode_s']:>6.2f} {r['seconds']:>8.3f}")
    tot = {k: sum(r[k] for r in rows) for k in ("rotations", "hoisted", "pt_mults", "encodes",
                                                 "encode_s", "seconds")}
    lines.append("-" * len(head))
    lines.append(f"{'total':<18} {'':<9} {'':>9} {'':>5} {'':>7} {tot['rotations']:>5} {tot['hoisted']:>7} "
                 f"{tot['pt_mults']:>6} {tot['encodes']:>6} {tot['encode_s']:>6.2f} {tot['seconds']:>8.3f}")
    return "\n".join(lines)


def compile_model(model, slots: int, layout: str = "multiplexed", input_layout: Layout = None,
                  baby_steps: int = None, global_pool: str = "sum",
                  materialize: bool = True, activation: str = "prescaled",
                  max_ratio: float = 2.0 ** 20, pool: str = "rotate",
                  repack: bool = False) -> Program:
    """A :class:`Program` for a loaded ``hemet.modelfile.Model`` (graph + weights).

    ``global_pool``: ``"sum"`` (default) sums each channel of the pooled map in place with
    log2(H) + log2(W) rotations, before the layers that follow (a 1x1 conv right before the
    pool commutes with it and moves after it), so the next stage is a small dense map that
    reads only the channel sums: the output ciphertext holds the logits and exact zeros, as
    with ``"matrix"``, which folds global average pooling into the linear stages (thousands
    of diagonals: 8,201 ct x pt in the hemet-fire1-4 head vs 320); it falls back to
    ``"matrix"`` where the pooled map is not one scaled materialized value.  ``"rotate"`` sums each channel with
    log2(H) + log2(W) rotations and additions instead of thousands of diagonals (the 1/(H W)
    goes into the stage before), but the other slots of the result then hold partial sums of
    the last feature map: mask them (one more level) before the client decrypts where the
    model must stay private.  ``materialize=False`` builds the plans only (costs, depth,
    rotation keys; no diagonal values, cannot run): for cost estimates of large layouts.

    ``pool``: ``"rotate"`` (default) sums each k x k average-pooling window in place with
    2 log2(k) rotations when the pool's input is one materialized value times a per-channel
    scale (the 1/k^2 and the scale go into the next stage), so the next stage reads the
    pooled values where they lie (a :class:`PooledView`: gap doubled); otherwise, or with
    ``"matrix"``, the pool folds into the next stage's map (a 3x3 conv after it becomes a
    4x4-footprint map: more diagonals; hemet-fire1-4: 11,799 vs 10,071 ct x pt).

    ``repack``: after an in-place pool whose values are spread over more ciphertexts than
    they fill (hemet-fire1-4's pool1: 64 channels of 16 x 16 in four ciphertexts, 1/4 of the
    slots each), gather them into a multiplexed layout with one linear stage (64 ct x pt,
    one level), so the next stage reads one ciphertext instead of four (conv_f1: 2,304 ->
    784 ct x pt).  It costs a level everywhere: worth it where the ring stays the same
    (``hemet.search.cost.best_plan`` decides by predicted latency).

    ``activation``: ``"prescaled"`` (default) computes ``y = x^2 + (b/a) x`` within the
    squaring's level (the plaintext product by ``t = b/a``, encoded at x's scale, rescales
    beside the square, at the same scale) and gives the next stage the one input ``y`` with
    weights ``a W``; ``"merged"`` feeds ``x^2`` and ``x`` as two inputs (weights ``a W`` and
    ``b W``).  Same depth and, in exact arithmetic, the same errors (``a W (e_sq + t e_x) =
    a W e_sq + b W e_x``), but prescaling halves the diagonals and the baby-step rotations
    for one ct x pt product and rescale per ciphertext.  ``y`` never sits at level 0 (a stage
    follows), so ``|y|`` only has to stay below ~2^49 at scale 2^40: ``t`` is capped at
    ``max_ratio``, and an activation with some ``a = 0`` or ``|b/a| > max_ratio`` is merged.
    Both ``x^2`` forms need ``a`` per channel only; ``square`` (a = 1, b = 0) is a plain square.
    """
    if activation not in ("merged", "prescaled"):
        raise ValueError(f"activation must be 'merged' or 'prescaled', got {activation!r}")
    if pool not in ("matrix", "rotate"):
        raise ValueError(f"pool must be 'matrix' or 'rotate', got {pool!r}")
    if global_pool not in ("sum", "matrix", "rotate"):
        raise ValueError(f"global_pool must be 'sum', 'matrix' or 'rotate', got {global_pool!r}")
    build_values = bool(materialize)
    g = model.graph
    weights = model.weights
    shapes = g.shapes
    c, h, w = g.input_shape
    if input_layout is None:
        input_layout = (Layout.per_channel(c, h, w, slots) if layout.startswith("per_channel")
                        else Layout.replicated(Layout.packed(c, h, w, slots)))
    prog = Program(input_layout, slots)
    src_shapes = {0: input_layout.shape}
    exprs = {INPUT: Expr(input_layout.shape, {0: S.identity(input_layout.shape)})}
    materialized = {}

    def wt(node, k):
        return np.asarray(weights[f"{node.name}.{k}"], dtype=np.float64)

    def materialize(name) -> int:
        if name in materialized:
            return materialized[name]
        e = exprs[name]
        if len(e.terms) == 1 and not np.any(e.bias):
            (v, t), = e.terms.items()
            if t.is_identity():
                materialized[name] = v
                return v
        srcs = list(e.terms)
        first = prog.layouts[srcs[0]]
        out_layout = choose_layout(layout, e.shape, first, slots)
        ins = [(prog.layouts[v], e.terms[v]) for v in srcs]
        rep = Layout.replicated(out_layout) if isinstance(out_layout, Layout) else out_layout
        stage = None
        if rep is not out_layout and name != g.output:
            # a map that fills at most half a ciphertext can often write more copies with the
            # diagonals it has anyway; the next stage then reads the nearest copy
            plans = [LinearStage(ins, lay, bias=e.bias, baby_steps=baby_steps, name=name,
                                 materialize=False) for lay in (out_layout, rep)]
            a, b = (p.costs() for p in plans)
            pick = int(b["pt_mults"] <= 1.05 * a["pt_mults"]
                       and b["rotations"] <= a["rotations"] + max(2, a["rotations"] // 20))
            out_layout = (out_layout, rep)[pick]
            if not build_values:  # a plan is all that is wanted: keep the one just built
                stage = plans[pick]
        if stage is None:
            stage = LinearStage(ins, out_layout, bias=e.bias, baby_steps=baby_steps, name=name,
                                materialize=build_values)
        vid = prog.add_linear(stage, srcs)
        src_shapes[vid] = out_layout.shape
        materialized[name] = vid
        return vid

    def _sum_first(node):
        """GAP (then a 1x1 conv moved after it) as in-place channel sums + a dense map."""
        pw = _pointwise_before(node, g, weights)
        name, (wgt, bias) = (pw[0], pw[1:]) if pw else (node.inputs[0], (None, None))
        x = exprs[name]
        found = _channel_scaled_sources(x, prog)
        if found is None:
            return None
        if node.name in summed:
            return summed[node.name]
        c, h, w = x.shape
        terms = {}
        for v, d in found:   # each source summed on its own: the map is linear in them
            total = prog.add_sum(v)
            prog.steps[-1].name = node.name
            src_shapes[total] = prog.layouts[total].shape
            terms[total] = S.channel_affine((c,), d / (h * w))
        e = Expr((c,), terms, x.bias.reshape(c, h * w).mean(axis=1))
        if wgt is not None:
            e = e.apply(S.dense((c,), wgt, bias))
        summed[node.name] = e
        return e

    # an expression's maps (millions of entries for a wide conv) are dropped after the last
    # node that reads it: a node reads its inputs, a global pool also the input of the 1x1
    # conv before it (``_sum_first``); the output is materialized at the end
    last_read = {}
    for step, node in enumerate(g.nodes):
        for name in node.inputs:
            last_read[name] = step
        if isinstance(node.layer, L.GlobalAvgPool) and node.inputs[0] != INPUT:
            for name in g.node(node.inputs[0]).inputs:
                last_read[name] = step
    last_read.pop(g.output, None)
    drop_after = {}
    for name, step in last_read.items():
        drop_after.setdefault(step, []).append(name)

    summed = {}
    for step, node in enumerate(g.nodes):
        lay = node.layer
        ins = [exprs[i] for i in node.inputs]
        x = ins[0]
        if isinstance(lay, L.Normalize):
            std = np.array(lay.std)
            e = x.apply(S.channel_affine(x.shape, 1 / std, -np.array(lay.mean) / std))
        elif isinstance(lay, L.Conv2d):
            e = x.apply(S.conv2d(x.shape, wt(node, "weight"), wt(node, "bias") if lay.bias else None,
                                 lay.stride, lay.padding, lay.groups))
        elif isinstance(lay, L.BatchNorm):
            scale = wt(node, "weight") / np.sqrt(wt(node, "running_var") + lay.eps)
            shift = wt(node, "bias") - wt(node, "running_mean") * scale
            e = x.apply(S.channel_affine(x.shape, scale, shift))
        elif isinstance(lay, L.AvgPool) and pool == "rotate" and _poolable(x, lay.kernel_size, prog):
            k = lay.kernel_size
            (v, t), = x.terms.items()
            pooled = prog.add_pool(v, k)
            prog.steps[-1].name = node.name
            src_shapes[pooled] = prog.layouts[pooled].shape
            c_, h_, w_ = x.shape
            d = t.diagonal.reshape(c_, h_ * w_)[:, 0]
            e = Expr(prog.layouts[pooled].shape, {pooled: S.channel_affine(prog.layouts[pooled].shape, d / (k * k))},
                     S.avg_pool(x.shape, k).linear_part(x.bias))
            if repack and prog.layouts[pooled].n_ciphertexts > choose_layout(
                    layout, e.shape, prog.layouts[pooled], slots).n_ciphertexts:
                exprs[node.name] = e
                v = materialize(node.name)
                e = Expr(prog.layouts[v].shape, {v: S.identity(prog.layouts[v].shape)})
        elif isinstance(lay, L.AvgPool):
            e = x.apply(S.avg_pool(x.shape, lay.kernel_size))
        elif isinstance(lay, L.GlobalAvgPool) and global_pool == "sum" and _sum_first(node) is not None:
            e = _sum_first(node)
        elif isinstance(lay, L.GlobalAvgPool) and global_pool == "rotate" and _summable(x):
            hw = x.shape[1] * x.shape[2]
            if _is_source(x):   # sum now, divide in the next stage
                v = materialize(node.inputs[0])
                total = prog.add_sum(v)
                prog.steps[-1].name = node.name
                src_shapes[total] = prog.layouts[total].shape
                e = Expr((x.shape[0],), {total: S.channel_affine((x.shape[0],), 1.0 / hw)})
            else:               # divide in the stage that materializes x, then sum for free
                exprs[f"{node.name}__scaled"] = x.apply(S.channel_affine(x.shape, 1.0 / hw))
                v = materialize(f"{node.name}__scaled")
                total = prog.add_sum(v)
                prog.steps[-1].name = node.name
                src_shapes[total] = prog.layouts[total].shape
                e = Expr((x.shape[0],), {total: S.identity((x.shape[0],))})
        elif isinstance(lay, L.GlobalAvgPool):
            e = x.apply(S.global_avg_pool(x.shape))
        elif isinstance(lay, L.Linear):
            e = x.apply(S.dense(x.shape, wt(node, "weight"), wt(node, "bias") if lay.bias else None))
        elif isinstance(lay, L.Concat):
            e = _expr_concat(ins, src_shapes)
        elif isinstance(lay, (L.Poly, L.Square)):
            if node.name == g.output:
                raise NotImplementedError("an activation as the graph output is not supported")
            y = materialize(node.inputs[0])
            shape = prog.layouts[y].shape
            if isinstance(lay, L.Square):
                a, b, cc = np.ones(shape[0]), np.zeros(shape[0]), np.zeros(shape[0])
            else:
                a, b, cc = wt(node, "a"), wt(node, "b"), wt(node, "c")
            if (activation == "prescaled" and np.any(b) and np.all(a != 0)
                    and np.max(np.abs(b / a)) <= max_ratio):
                y2 = prog.add_prescaled(y, b / a)      # y2 = x^2 + (b/a) x
                prog.steps[-1].name = node.name
                terms = {y2: S.channel_affine(shape, a)}
            else:
                y2 = prog.add_square(y)
                prog.steps[-1].name = node.name
                terms = {y2: S.identity(shape) if np.all(a == 1) else S.channel_affine(shape, a)}
                if np.any(b):
                    terms[y] = S.channel_affine(shape, b)
            src_shapes[y2] = shape
            e = Expr(shape, terms, np.repeat(cc, shape[1] * shape[2]))
        else:
            raise NotImplementedError(f"op {node.op!r} is not supported by the HE compiler")
        exprs[node.name] = e
        for name in drop_after.get(step, []):
            del exprs[name]
    prog.output = materialize(g.output)
    prog.output_shape = shapes[g.output]
    return prog
