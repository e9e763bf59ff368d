"""Backends that record every operation the executor makes, at the level it runs at, in the
terms of hemet.search.counts (the counts under test come from the plan, these from the run)."""
from __future__ import annotations

from collections import Counter

from hemet.he import HEBackend, MirrorBackend


class _Recorder:
    def _rec(self, op, level, n=1):
        self.ops[(op, level)] += n

    def add(self, a, b):
        self._rec("add", a.level)
        return super().add(a, b)

    def add_plain(self, ct, vec):
        self._rec("add_plain", ct.level)
        return super().add_plain(ct, vec)

    def square(self, ct):
        self._rec("square", ct.level)
        return super().square(ct)

    def rescale(self, ct):
        self._rec("rescale", ct.level)
        return super().rescale(ct)

    def drop_level(self, ct, level):
        if level != ct.level:
            self._rec("drop_level", ct.level)
        return super().drop_level(ct, level)


class _RecordingEvaluator:
    """Proxy of a ckks.Evaluator: key-switched rotations as the engine runs them."""

    def __init__(self, ev, ops):
        self._ev, self._ops = ev, ops

    def __getattr__(self, name):
        return getattr(self._ev, name)

    def rotate(self, ct, step):
        self._ops[("rotate", ct.level)] += 1
        return self._ev.rotate(ct, step)

    def rotate_hoisted(self, ct, steps):
        nz = sum(1 for s in steps if s)
        if nz:
            self._ops[("hoist", ct.level)] += 1
            self._ops[("hoist_step", ct.level)] += nz
        self._ops[("hoist_copy", ct.level)] += len(steps) - nz
        return self._ev.rotate_hoisted(ct, steps)


class RecordingHEBackend(_Recorder, HEBackend):
    def __init__(self, evaluator, *a, **k):
        super().__init__(evaluator, *a, **k)
        self.ops = Counter()
        self.ev = _RecordingEvaluator(evaluator, self.ops)

    def multiply_plain(self, ct, pt):
        self._rec("mul_plain", ct.level)
        return super().multiply_plain(ct, pt)

    def multiply_plain_add(self, acc, ct, pt):
        if acc is not None and acc.level == ct.level == pt.level:
            self._rec("mul_add", ct.level)
        return super().multiply_plain_add(acc, ct, pt)

    def multiply_plain_add_many(self, acc, terms):
        terms = list(terms)
        seen = set(acc)
        for key, ct, _ in terms:
            self._rec("mul_add" if key in seen else "mul_new", ct.level)
            seen.add(key)
        self.ops, saved = Counter(), self.ops  # its fallback path is not a separate call
        try:
            return super().multiply_plain_add_many(acc, terms)
        finally:
            self.ops = saved


class RecordingMirror(_Recorder, MirrorBackend):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.ops = Counter()

    def rotate(self, ct, step):
        self._rec("rotate", ct.level)
        return super().rotate(ct, step)

    def rotate_hoisted(self, ct, steps):
        nz = sum(1 for s in steps if int(s) % self.slots)
        if nz:
            self._rec("hoist", ct.level)
            self._rec("hoist_step", ct.level, nz)
        self._rec("hoist_copy", ct.level, len(steps) - nz)
        return super().rotate_hoisted(ct, steps)

    def multiply_plain(self, ct, pt):
        self._rec("mul_plain", ct.level)
        return super().multiply_plain(ct, pt)

    def multiply_plain_add_many(self, acc, terms):
        for key, ct, pt in terms:
            prod = MirrorBackend.multiply_plain(self, ct, pt)
            self._rec("mul_add" if key in acc else "mul_new", ct.level)
            acc[key] = prod if key not in acc else MirrorBackend.add(self, acc[key], prod)


def per_step(prog, backend, cts):
    """Run ``prog`` and return the recorded ops of each step (and the HE counts deltas)."""
    rows = []

    class Split(list):  # run_encrypted appends one report row per step: snapshot there
        def append(self, row):
            rows.append((Counter(backend.ops), Counter(getattr(backend, "counts", {}))))
            super().append(row)

    base = (Counter(backend.ops), Counter(getattr(backend, "counts", {})))
    prog.run_encrypted(backend, cts, report=Split())
    out, prev = [], base
    for cur in rows:
        ops = cur[0] - prev[0]
        cnt = cur[1] - prev[1]
        out.append((ops, cnt))
        prev = cur
    return out
