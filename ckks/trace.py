"""Operation traces: what every evaluator call did to levels, scales, limbs and (for teaching)
to the precision of the encrypted values.

Attach a trace to an evaluator and every outermost public operation is recorded::

    trace = ckks.trace.Trace(ctx, secret_key=keygen.secret_key)   # secret key: teaching only
    ev = ckks.Evaluator(ctx, relin_key, galois_keys, trace=trace)
    ct = trace.watch(encryptor.encrypt(x), x, label="x")          # the clear values of x
    ev.rescale(ev.multiply(ct, ct))
    print(trace)                                                   # an aligned text table

Each :class:`TraceEntry` holds the op name, the operands' levels and log2 scales, the output's
level, log2 scale, limbs (RNS primes) and size (number of polynomials), and the wall time of
the operation.  The time is measured by the evaluator before ``record`` is called, so nothing
the trace does (decryption included) is counted in it.

Without a secret key (the server's view) nothing is decrypted.  With one, the trace decrypts
every output and keeps its first ``show_slots`` slot values; when the clear values of the inputs
are known it also reports the precision in bits, ``-log2(max |decrypted - expected|)`` over all
slots.  The expected values come from a *shadow*: ``watch(ct, values)`` registers the clear
values of a fresh ciphertext, and every recorded op computes its output's shadow from its
inputs' shadows with NumPy (plaintext operands are decoded).  An op with an input whose shadow
is unknown gets no precision (``None``).

Shadows are keyed by the ciphertext's ``id`` and held through a weak reference to its ``data``
array, so they disappear with the ciphertext and a trace never keeps ciphertexts alive.
"""
import math
import numbers
import weakref
from dataclasses import dataclass, field

import numpy as np

from .ciphertext import Ciphertext, Plaintext

# Positional parameter names (after self) of the traced Evaluator methods, to read the
# operands whether they came positionally or by keyword.
_PARAMS = {
    "add": ("a", "b"),
    "sub": ("a", "b"),
    "negate": ("a",),
    "multiply": ("a", "b", "relinearize"),
    "square": ("a", "relinearize"),
    "relinearize": ("a",),
    "rescale": ("a",),
    "drop_level": ("a", "level"),
    "rotate": ("a", "step"),
    "rotate_hoisted": ("a", "steps"),
    "conjugate": ("a",),
    "sum_slots": ("a", "count"),
}
_OPERANDS = ("a", "b")
_IMAG_TOL = 1e-3  # shown slots whose imaginary parts are all below this print as reals


@dataclass
class TraceEntry:
    """One recorded operation (or one watched input, ``op == "input"``)."""

    index: int
    op: str
    levels_in: tuple          # levels of the Ciphertext/Plaintext operands, in order
    level_out: int
    log2_scales_in: tuple     # log2 scales of the Ciphertext/Plaintext operands
    log2_scale_out: float
    limbs_out: int            # RNS primes of the output (level_out + 1)
    size_out: int             # polynomials in the output ciphertext (2, or 3 unrelinearized)
    seconds: float
    outputs: int = 1          # ciphertexts returned (rotate_hoisted returns several)
    slots: np.ndarray = None  # first show_slots decrypted values (secret key only)
    bits: float = None        # precision in bits (secret key and known shadows only)
    max_error: float = None   # max |decrypted - expected| over all slots (idem)
    label: str = None         # the label given to watch(), for inputs
    extra: dict = field(default_factory=dict)  # non-ciphertext arguments (step, count, ...)

    @property
    def level_in(self):
        return self.levels_in[0] if self.levels_in else None

    @property
    def log2_scale_in(self):
        return self.log2_scales_in[0] if self.log2_scales_in else None

    @property
    def ms(self) -> float:
        return self.seconds * 1e3


class Trace:
    """Records evaluator operations; pass it as ``Evaluator(..., trace=trace)``.

    ``secret_key`` (optional, for teaching or debugging on the client) enables decryption of
    every output: ``show_slots`` slot values are kept, and the precision in bits wherever the
    inputs were registered with :meth:`watch`.
    """

    def __init__(self, context, secret_key=None, show_slots: int = 4):
        self.ctx = context
        self.show_slots = int(show_slots)
        if self.show_slots < 0:
            raise ValueError("show_slots must be >= 0")
        self.entries = []
        self._shadows = {}
        self._decryptor = None
        if secret_key is not None:
            from .rlwe.decryptor import Decryptor
            self._decryptor = Decryptor(context, secret_key)

    # -- container protocol --------------------------------------------------------------
    def __len__(self):
        return len(self.entries)

    def __iter__(self):
        return iter(self.entries)

    def __getitem__(self, i):
        return self.entries[i]

    @property
    def decrypts(self) -> bool:
        """Whether this trace holds a secret key (and so decrypts every output)."""
        return self._decryptor is not None

    def clear(self, shadows: bool = False) -> None:
        """Forget the recorded entries (and the watched values too if ``shadows``)."""
        self.entries.clear()
        if shadows:
            self._shadows.clear()

    # -- shadows -------------------------------------------------------------------------
    def watch(self, ct: Ciphertext, values, label: str = None, record: bool = False) -> Ciphertext:
        """Register the clear ``values`` of ``ct`` (zero-padded to all slots, like encoding);
        with ``record=True`` also add an ``input`` row (its precision, with a secret key).
        Returns ``ct``."""
        if not isinstance(ct, Ciphertext):
            raise TypeError(f"watch expects a Ciphertext, got {type(ct).__name__}")
        v = self._pad(values)
        self._set_shadow(ct, v, label)
        if record:
            self._add_entry("input", (), (), ct, [v], 0.0, label=label, extra={})
        return ct

    def expected(self, ct: Ciphertext):
        """The shadow (expected clear slot values, complex) of ``ct``, or None if unknown."""
        entry = self._shadows.get(id(ct))
        if entry is None:
            return None
        ref, level, scale, values, _ = entry
        if ref() is not ct.data or level != ct.level or scale != ct.scale:
            return None  # a different ciphertext now lives at this id
        return values

    def label(self, ct: Ciphertext):
        """The label ``ct`` was watched with (None if none or not watched)."""
        return self._shadows[id(ct)][4] if self.expected(ct) is not None else None

    def _pad(self, values) -> np.ndarray:
        arr = np.asarray(values)
        if arr.dtype.kind not in "iufcb":
            raise TypeError("values must be numeric")
        arr = arr.astype(np.complex128).ravel()
        if arr.size > self.ctx.slots:
            raise ValueError(f"at most {self.ctx.slots} values, got {arr.size}")
        out = np.zeros(self.ctx.slots, dtype=np.complex128)
        out[: arr.size] = arr
        return out

    def _set_shadow(self, ct, values, label=None):
        key = id(ct)
        self_ref = weakref.ref(self)

        def forget(ref, key=key):
            trace = self_ref()
            if trace is not None:
                entry = trace._shadows.get(key)
                if entry is not None and entry[0] is ref:
                    del trace._shadows[key]

        self._shadows[key] = (weakref.ref(ct.data, forget), ct.level, ct.scale, values, label)

    def _operand_values(self, x):
        """Clear slot values of an operand: Ciphertext (its shadow), Plaintext (decoded),
        number (broadcast) or array (zero-padded); None if unknown."""
        if isinstance(x, Ciphertext):
            return self.expected(x)
        if isinstance(x, Plaintext):
            return self.ctx.encoder.decode(x)
        if isinstance(x, numbers.Number) and not isinstance(x, bool):
            return np.full(self.ctx.slots, complex(x), dtype=np.complex128)
        return self._pad(x)

    def _expected(self, name, p):
        """Output shadow(s) of op ``name`` with bound parameters ``p`` (None if unknown)."""
        if name not in _PARAMS or "a" not in p:
            return None
        a = self._operand_values(p["a"])
        if a is None:
            return None
        slots = self.ctx.slots
        if name in ("add", "sub", "multiply"):
            b = self._operand_values(p["b"])
            if b is None:
                return None
            return a + b if name == "add" else a - b if name == "sub" else a * b
        if name == "negate":
            return -a
        if name == "square":
            return a * a
        if name in ("relinearize", "rescale", "drop_level"):
            return a
        if name == "rotate":
            return np.roll(a, -(int(p["step"]) % slots))
        if name == "rotate_hoisted":
            return [np.roll(a, -(int(s) % slots)) for s in p["steps"]]
        if name == "conjugate":
            return np.conj(a)
        if name == "sum_slots":
            count = p.get("count")
            count = slots if count is None else int(count)
            return sum(np.roll(a, -j) for j in range(count))
        return None

    # -- recording -----------------------------------------------------------------------
    def record(self, name: str, args: tuple, kwargs: dict, out, seconds: float) -> None:
        """Called by the evaluator after each outermost operation (see ``ckks.evaluator._op``)."""
        params = dict(zip(_PARAMS.get(name, ()), args))
        params.update(kwargs)
        operands = [params[k] for k in _OPERANDS if isinstance(params.get(k), (Ciphertext, Plaintext))]
        if name not in _PARAMS:  # an op this trace does not know: any polynomial argument
            operands = [x for x in list(args) + list(kwargs.values()) if isinstance(x, (Ciphertext, Plaintext))]
        extra = {k: v for k, v in params.items()
                 if k not in _OPERANDS and isinstance(v, (numbers.Number, list, tuple, type(None)))}
        for k in ("b",):  # a number operand is worth showing too
            if isinstance(params.get(k), numbers.Number):
                extra[k] = params[k]
        outs = out if isinstance(out, (list, tuple)) else [out]
        try:
            expected = self._expected(name, params)
        except (TypeError, ValueError, KeyError):
            expected = None
        if expected is not None and not isinstance(expected, list):
            expected = [expected]
        if expected is not None and len(expected) != len(outs):
            expected = None
        if expected is not None:
            for ct, v in zip(outs, expected):
                if isinstance(ct, Ciphertext):
                    self._set_shadow(ct, v)
        self._add_entry(name, tuple(x.level for x in operands),
                        tuple(math.log2(x.scale) for x in operands),
                        outs, expected, seconds, extra=extra)

    def _add_entry(self, name, levels_in, scales_in, outs, expected, seconds, label=None, extra=None):
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        cts = [c for c in outs if isinstance(c, Ciphertext)]
        first = cts[0] if cts else None
        entry = TraceEntry(
            index=len(self.entries), op=name, levels_in=levels_in,
            level_out=first.level if first is not None else None,
            log2_scales_in=scales_in,
            log2_scale_out=math.log2(first.scale) if first is not None else None,
            limbs_out=first.limbs if first is not None else None,
            size_out=first.size if first is not None else None,
            seconds=float(seconds), outputs=len(outs), label=label, extra=extra or {})
        if self._decryptor is not None and cts:
            decrypted = [self._decryptor.decrypt(c, complex=True) for c in cts]
            shown = decrypted[0][: self.show_slots]
            entry.slots = shown.real.copy() if np.all(np.abs(shown.imag) < _IMAG_TOL) else shown.copy()
            if expected is not None and len(expected) == len(cts):
                err = max(float(np.max(np.abs(d - e))) for d, e in zip(decrypted, expected))
                entry.max_error = err
                entry.bits = -math.log2(err) if err > 0 else math.inf
        self.entries.append(entry)
        return entry

    # -- printing ------------------------------------------------------------------------
    @staticmethod
    def _fmt_value(z) -> str:
        if isinstance(z, (complex, np.complexfloating)):
            return f"{z.real:.4f}{z.imag:+.4f}j"
        return f"{z:.4f}"

    def _row(self, e: TraceEntry):
        def lv(x):
            return "-" if x is None else str(x)

        def sc(x):
            return "-" if x is None else f"{x:.2f}"

        op = e.op if e.label is None else f"{e.op} {e.label}"
        args = ", ".join(f"{k}={v}" for k, v in e.extra.items() if k != "relinearize" and v is not None)
        if e.extra.get("relinearize") is False:
            args = ", ".join(filter(None, [args, "no relin"]))
        if args:
            op += f" ({args})"
        if e.outputs > 1:
            op += f" x{e.outputs}"
        levels = ",".join(lv(x) for x in e.levels_in)
        scales = ",".join(sc(x) for x in e.log2_scales_in)
        level = f"{levels}->{lv(e.level_out)}" if levels else lv(e.level_out)
        scale = f"{scales}->{sc(e.log2_scale_out)}" if scales else sc(e.log2_scale_out)
        slots = "" if e.slots is None else "[" + " ".join(self._fmt_value(z) for z in e.slots) + "]"
        bits = "-" if e.bits is None else ("inf" if math.isinf(e.bits) else f"{e.bits:.1f}")
        return [str(e.index), op, level, scale, lv(e.limbs_out), lv(e.size_out),
                f"{e.ms:.2f}", slots, bits]

    def table(self) -> str:
        """The entries as an aligned text table (slots and bits need a secret key)."""
        header = ["#", "op", "level in->out", "log2 scale in->out", "limbs", "size", "ms", "slots", "bits"]
        left = {1, 7}
        rows = [header] + [self._row(e) for e in self.entries]
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]

        def line(r):
            return "  ".join(c.ljust(w) if i in left else c.rjust(w)
                             for i, (c, w) in enumerate(zip(r, widths))).rstrip()

        rule = "  ".join("-" * w for w in widths)
        body = [line(r) for r in rows[1:]] or ["(no operations recorded)"]
        return "\n".join([line(header), rule] + body)

    def __str__(self):
        return self.table()

    def __repr__(self):
        return f"Trace({len(self.entries)} entries, {'decrypting' if self.decrypts else 'no secret key'})"
