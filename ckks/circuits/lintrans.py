"""Plaintext matrix times encrypted vector by the diagonal method with baby-step giant-step.

For a slots x slots matrix M with nonzero (generalized) diagonals d, where
diag_d[i] = M[i, (i + d) mod slots],

    M x = sum_d diag_d * rot(x, d).

Writing d = g*B + b (0 <= b < B) and moving the giant rotation out of the inner sum,

    M x = sum_g rot( sum_b rot(diag_{gB+b}, -gB) * rot(x, b), gB ),

so a matrix with D diagonals costs about B - 1 hoisted baby-step rotations (one digit
decomposition of x) plus D/B giant-step rotations instead of D - 1 rotations.  The rotated
diagonals are encoded once, at the level where the transform runs, with the scale of the
prime the following rescale drops, so the output scale equals the input scale.
"""
import math

import numpy as np

from ..ciphertext import Ciphertext


class LinearTransform:
    def __init__(self, context, diagonals: dict, level: int, baby_steps: int = None):
        """``diagonals``: {offset: vector of length slots} (offsets taken mod slots)."""
        slots = context.slots
        diags = {}
        for d, v in diagonals.items():
            v = np.asarray(v)
            if v.shape != (slots,):
                raise ValueError(f"diagonal {d} must have shape ({slots},), got {v.shape}")
            if np.any(v):
                d = int(d) % slots
                diags[d] = diags.get(d, 0) + v
        if not diags:
            raise ValueError("the matrix has no nonzero diagonal")
        self.ctx = context
        self.level = context.check_level(level)
        if self.level < 1:
            raise ValueError("a linear transform needs one level to rescale")
        self.n_diagonals = len(diags)
        if baby_steps is None:
            baby_steps = _best_baby_steps(sorted(diags), slots)
        self.baby_steps = int(baby_steps)
        B = self.baby_steps
        groups = {}
        for d in sorted(diags):
            groups.setdefault(d // B * B, {})[d % B] = diags[d]
        scale = float(context.primes[self.level])
        enc = context.encoder
        self._plan = []
        for giant, inner in sorted(groups.items()):
            pts = {b: enc.encode(np.roll(v, giant), level=self.level, scale=scale) for b, v in sorted(inner.items())}
            self._plan.append((giant, pts))

    @classmethod
    def from_matrix(cls, context, matrix: np.ndarray, level: int, baby_steps: int = None):
        slots = context.slots
        rows, cols = matrix.shape
        if rows > slots or cols > slots:
            raise ValueError(f"matrix {matrix.shape} larger than {slots} slots")
        full = np.zeros((slots, slots), dtype=matrix.dtype)
        full[:rows, :cols] = matrix
        idx = np.arange(slots)
        diags = {}
        for d in range(slots):
            v = full[idx, (idx + d) % slots]
            if np.any(v):
                diags[d] = v
        return cls(context, diags, level, baby_steps)

    @property
    def rotation_steps(self) -> set:
        """Every rotation step the transform uses (generate Galois keys for these)."""
        steps = {b for _, pts in self._plan for b in pts if b}
        steps |= {g for g, _ in self._plan if g}
        return steps

    @property
    def rotation_count(self) -> int:
        return len({b for _, pts in self._plan for b in pts if b}) + sum(1 for g, _ in self._plan if g)

    def evaluate(self, evaluator, ct: Ciphertext) -> Ciphertext:
        """M ct, rescaled: one level consumed, scale unchanged."""
        if ct.level < self.level:
            raise ValueError(f"transform encoded for level {self.level}, ciphertext at {ct.level}")
        ct = evaluator.drop_level(ct, self.level)
        babies = sorted({b for _, pts in self._plan for b in pts})
        rotated = dict(zip(babies, evaluator.rotate_hoisted(ct, babies)))
        total = None
        for giant, pts in self._plan:
            acc = None
            for b, pt in pts.items():
                term = evaluator.multiply(rotated[b], pt)
                acc = term if acc is None else evaluator.add(acc, term)
            if giant:
                acc = evaluator.rotate(acc, giant)
            total = acc if total is None else evaluator.add(total, acc)
        return evaluator.rescale(total)


def _best_baby_steps(offsets, slots) -> int:
    """Power-of-two B minimising (distinct baby steps) + (giant steps): the rotation count."""
    best, best_cost = 1, None
    for e in range(int(math.log2(slots)) + 1):
        B = 1 << e
        babies = {d % B for d in offsets} - {0}
        giants = {d // B for d in offsets} - {0}
        cost = len(babies) + len(giants)
        if best_cost is None or cost < best_cost:
            best, best_cost = B, cost
    return best
