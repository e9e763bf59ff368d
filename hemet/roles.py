"""The two parties of private inference, and the validated messages between them.

* :class:`Client` owns the secret key and the image.  From the server's public model
  description (:class:`ModelInfo`: parameters, input and output layouts, rotation steps,
  model fingerprint; never the weights) it creates the keys, exports the evaluation-key
  bundle (public key, relinearization key and exactly the Galois keys the program needs),
  encrypts images and decrypts logits.
* :class:`Server` owns the model.  It compiles it (``hemet.he.program.compile_model``),
  publishes :meth:`Server.public_info`, opens a :class:`Session` per client key bundle and
  evaluates encrypted requests.  No code path gives it a secret key: every method takes bytes
  or public objects, refuses a ``ckks.SecretKey`` anywhere, and the server and its sessions
  refuse to store one as an attribute.

Messages (version 1) are one container format, all integers little-endian::

    offset  size  field
    0       8     magic b"HEMETMSG"
    8       2     version (uint16) = 1
    10      1     kind: 1 model info, 2 key bundle, 3 request, 4 response, 5 key part
    11      1     flags = 0
    12      4     section count (uint32)
    16      ...   sections: tag (4 ASCII bytes) | length (uint64) | data
    end-4   4     CRC-32 of every byte before it

============  =========================================================================
kind          sections, in this order
============  =========================================================================
model info    PARM (ckks parameters), INFO (UTF-8 JSON: name, classes, shapes, layouts,
              rotation steps, depth, fingerprint)
key bundle    PARM, FPRT (16-byte model fingerprint), PKEY, RKEY, then at most one GKEY
              (ckks objects)
key part      FPRT, KEYI (16-byte key id: SHA-256 of the public key), GKEY
request       FPRT, KEYI, CTXT x n_inputs
response      FPRT, KEYI, CTXT x n_outputs
============  =========================================================================

A GKEY section holds at most ``GALOIS_CHUNK`` Galois keys.  A model needing more sends the key
bundle without them and then key parts (``Client.key_parts``): a real network's keys are
gigabytes (279 keys of 19 MiB for hemet-fire1-4 at N = 2^15), and chunks keep every message,
and the memory of both sides, bounded.  A session evaluates once it holds exactly the Galois
keys of the model's rotation steps; missing, duplicate or unneeded keys are refused.

The ckks objects inside are the engine's own validated serialization
(``ckks.serialization``).  Every reader checks everything and raises :class:`ProtocolError`
(a ``ValueError``) naming the problem; its ``status`` is the HTTP status the service answers
with (400 malformed, 409 mismatched model / parameters / keys, 413 too large, 422 well
formed but unusable).

The model fingerprint hashes the compiled program (graph, weights, layouts, rotation steps,
parameters): keys made for another model or another compilation are refused.
"""
from __future__ import annotations

import enum
import hashlib
import json
import struct
import threading
import time
import zlib
from dataclasses import dataclass

import numpy as np

import ckks
from ckks import serialization as ser
from ckks.rlwe.keys import SecretKey, galois_element

__all__ = ["ProtocolError", "MsgKind", "pack_message", "unpack_message", "ModelInfo",
           "Client", "Server", "Session", "ENGINE_LOCK", "model_fingerprint", "as_image",
           "run_steps"]

# The Numba workqueue threading layer cannot run parallel kernels from two Python threads at
# once: every engine call of a Client or Server (keygen, encryption, evaluation, decryption)
# holds this lock, so clients and servers in one process may be driven from many threads.
ENGINE_LOCK = threading.RLock()

MAGIC = b"HEMETMSG"
VERSION = 1
_HEAD = struct.Struct("<8sHBBI")
_SECTION = struct.Struct("<4sQ")
_CRC = struct.Struct("<I")
FINGERPRINT_BYTES = 16
MAX_SECTIONS = 4096
MAX_INFO_JSON = 1 << 20
GALOIS_CHUNK = 16          # Galois keys per GKEY section


class ProtocolError(ValueError):
    """A message that is malformed, too large, or does not fit this model / these keys."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = int(status)


class MsgKind(enum.IntEnum):
    MODEL_INFO = 1
    KEY_BUNDLE = 2
    REQUEST = 3
    RESPONSE = 4
    KEY_PART = 5


_KIND_NAMES = {MsgKind.MODEL_INFO: "model info", MsgKind.KEY_BUNDLE: "key bundle",
               MsgKind.REQUEST: "request", MsgKind.RESPONSE: "response",
               MsgKind.KEY_PART: "key part"}


# ---------------------------------------------------------------------------- containers
def pack_message(kind: MsgKind, sections) -> bytes:
    """A container of ``kind`` holding ``(tag, data)`` sections in order; ``data`` is bytes-like
    or a list of bytes-like pieces that make the section one after another (a key part's Galois
    keys, hundreds of MB, go from the key arrays into the message in one copy)."""
    parts = [_HEAD.pack(MAGIC, VERSION, int(kind), 0, len(sections))]
    for tag, data in sections:
        if isinstance(data, SecretKey):
            raise TypeError("refusing to put a SecretKey into a message")
        tag = tag.encode("ascii") if isinstance(tag, str) else bytes(tag)
        if len(tag) != 4:
            raise ValueError(f"section tag {tag!r} must be 4 bytes")
        pieces = [memoryview(d).cast("B") for d in (data if isinstance(data, list) else [data])]
        parts += [_SECTION.pack(tag, sum(p.nbytes for p in pieces)), *pieces]
    crc = 0
    for part in parts:
        crc = zlib.crc32(part, crc)
    return b"".join(parts + [_CRC.pack(crc)])


def unpack_message(data, kind: MsgKind, max_bytes: int | None = None) -> list[tuple[str, memoryview]]:
    """Check a container (magic, version, kind, flags, section bounds, checksum) and return its
    sections as ``(tag, memoryview)``; raises :class:`ProtocolError`."""
    what = _KIND_NAMES[MsgKind(kind)]
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ProtocolError(f"{what}: expected bytes, got {type(data).__name__}")
    buf = memoryview(data).cast("B") if isinstance(data, memoryview) else memoryview(data)
    n = len(buf)
    if max_bytes is not None and n > max_bytes:
        raise ProtocolError(f"{what}: {n} bytes exceeds the limit of {max_bytes}", 413)
    if n < _HEAD.size + _CRC.size:
        raise ProtocolError(f"{what}: truncated: {n} bytes, shorter than the header")
    magic, version, got, flags, count = _HEAD.unpack_from(buf, 0)
    if magic != MAGIC:
        raise ProtocolError(f"{what}: bad magic {bytes(magic)!r} (not a HEMET message)")
    if version != VERSION:
        raise ProtocolError(f"{what}: unsupported message version {version} (this build reads {VERSION})")
    if got != kind:
        name = _KIND_NAMES.get(got, f"unknown kind {got}")
        raise ProtocolError(f"expected a {what} message, got {name}")
    if flags:
        raise ProtocolError(f"{what}: unsupported flags 0x{flags:02x}")
    if count > MAX_SECTIONS:
        raise ProtocolError(f"{what}: {count} sections exceeds the limit of {MAX_SECTIONS}")
    (crc,) = _CRC.unpack_from(buf, n - _CRC.size)
    if zlib.crc32(buf[:n - _CRC.size]) != crc:
        raise ProtocolError(f"{what}: checksum mismatch (corrupted or truncated message)")
    end = n - _CRC.size
    pos = _HEAD.size
    out = []
    for i in range(count):
        if pos + _SECTION.size > end:
            raise ProtocolError(f"{what}: truncated in the header of section {i}")
        tag, length = _SECTION.unpack_from(buf, pos)
        pos += _SECTION.size
        if length > end - pos:
            raise ProtocolError(f"{what}: section {i} claims {length} bytes, {end - pos} left")
        try:
            name = tag.decode("ascii")
        except UnicodeDecodeError:
            raise ProtocolError(f"{what}: section {i} has a non-ASCII tag {tag!r}") from None
        out.append((name, buf[pos:pos + length]))
        pos += length
    if pos != end:
        raise ProtocolError(f"{what}: {end - pos} trailing bytes after the last section")
    return out


def _expect_tags(sections, tags: list[str], what: str, repeat: str = None) -> None:
    """Sections must be exactly ``tags`` then (optionally) any number of ``repeat``."""
    got = [t for t, _ in sections]
    head = got[:len(tags)]
    if head != tags or (repeat is None and len(got) != len(tags)) or \
            any(t != repeat for t in got[len(tags):]):
        want = " ".join(tags) + (f" {repeat}..." if repeat else "")
        raise ProtocolError(f"{what}: sections {' '.join(got) or '(none)'}, expected {want}")


def _fixed(section: memoryview, size: int, what: str) -> bytes:
    if len(section) != size:
        raise ProtocolError(f"{what}: {len(section)} bytes, expected {size}")
    return bytes(section)


def _refuse_secret(*objs) -> None:
    for o in objs:
        if isinstance(o, SecretKey):
            raise TypeError("the server never takes a SecretKey")
        if isinstance(o, (list, tuple, set, frozenset)):
            _refuse_secret(*o)
        elif isinstance(o, dict):
            _refuse_secret(*o.keys(), *o.values())


def _ckks_kind(data: memoryview, what: str) -> "ser.Kind":
    try:
        return ser.peek_kind(data)
    except ckks.SerializationError as e:
        raise ProtocolError(f"{what}: {e}") from None


def _load(loader, ctx, data: memoryview, what: str):
    """A ckks object of the server's context: other-parameter objects are 409, broken ones 400."""
    kind = _ckks_kind(data, what)
    if kind == ser.Kind.SECRET_KEY:
        raise ProtocolError(f"{what}: refusing a SECRET key: secret keys never leave the client")
    if len(data) >= 28 and bytes(data[12:28]) != ctx.fingerprint:
        raise ProtocolError(f"{what} was made for other encryption parameters "
                            "(parameter fingerprint mismatch)", 409)
    try:
        return loader(ctx, data)
    except ckks.SerializationError as e:
        raise ProtocolError(f"{what}: {e}") from None


# ---------------------------------------------------------------------------- model info
def _layout_dict(lay) -> dict:
    return {k: getattr(lay, k) for k in ("channels", "height", "width", "base_h", "base_w", "gap",
                                         "slots", "plane_stride", "replicas", "multiplex")}


def _layout_from(d, what: str):
    from hemet.he.layout import Layout, LayoutError
    keys = ("channels", "height", "width", "base_h", "base_w", "gap", "slots", "plane_stride",
            "replicas", "multiplex")
    if not isinstance(d, dict) or set(d) != set(keys):
        raise ProtocolError(f"model info: {what} must be an object with keys {', '.join(keys)}")
    for k in keys[:-1]:
        if not isinstance(d[k], int) or isinstance(d[k], bool) or not 1 <= d[k] <= 1 << 24:
            raise ProtocolError(f"model info: {what}.{k} must be an int in 1..2^24")
    if not isinstance(d["multiplex"], bool):
        raise ProtocolError(f"model info: {what}.multiplex must be a boolean")
    try:
        return Layout(**{k: d[k] for k in keys})
    except LayoutError as e:
        raise ProtocolError(f"model info: {what}: {e}") from None


def model_fingerprint(program, params, model=None, key_steps=None) -> bytes:
    """16 bytes naming the compiled program: graph, weights, layouts, Galois-key steps
    (``key_steps``, default every rotation step), parameters."""
    h = hashlib.sha256(b"hemet-program-v1\0")
    h.update(params.fingerprint())
    if model is not None:
        from hemet.modelfile import graph_to_json
        h.update(json.dumps(graph_to_json(model.graph), sort_keys=True).encode())
        for k in sorted(model.weights):
            w = np.ascontiguousarray(model.weights[k], dtype=np.float64)
            h.update(k.encode() + b"\0" + str(w.shape).encode())
            h.update(w.tobytes())
    h.update(json.dumps({"in": _layout_dict(program.input_layout),
                         "out": _layout_dict(program.layouts[program.output]),
                         "shape": list(program.output_shape), "depth": program.depth,
                         "steps": sorted(int(s) for s in (program.rotation_steps if key_steps is None
                                                          else key_steps)),
                         "program": program.describe()}, sort_keys=True).encode())
    return h.digest()[:FINGERPRINT_BYTES]


@dataclass(frozen=True)
class ModelInfo:
    """The public description of a compiled model: what a client needs, and no weights."""

    name: str
    classes: int
    params: ckks.Parameters
    input_layout: object
    output_layout: object
    input_shape: tuple
    output_shape: tuple
    rotation_steps: tuple
    depth: int
    fingerprint: bytes

    @property
    def galois_elements(self) -> set:
        return {galois_element(int(s), self.params.n) for s in self.rotation_steps} - {1}

    def to_bytes(self) -> bytes:
        doc = {"name": self.name, "classes": self.classes,
               "input_shape": list(self.input_shape), "output_shape": list(self.output_shape),
               "input_layout": _layout_dict(self.input_layout),
               "output_layout": _layout_dict(self.output_layout),
               "rotation_steps": list(self.rotation_steps), "depth": self.depth,
               "fingerprint": self.fingerprint.hex()}
        return pack_message(MsgKind.MODEL_INFO, [("PARM", ser.dump_parameters(self.params)),
                                                 ("INFO", json.dumps(doc, sort_keys=True).encode())])

    @classmethod
    def from_bytes(cls, data) -> "ModelInfo":
        secs = unpack_message(data, MsgKind.MODEL_INFO)
        _expect_tags(secs, ["PARM", "INFO"], "model info")
        try:
            params = ser.load_parameters(secs[0][1])
        except ckks.SerializationError as e:
            raise ProtocolError(f"model info: {e}") from None
        if len(secs[1][1]) > MAX_INFO_JSON:
            raise ProtocolError("model info: description too large")
        try:
            doc = json.loads(bytes(secs[1][1]).decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise ProtocolError(f"model info: description is not JSON: {e}") from None
        want = {"name", "classes", "input_shape", "output_shape", "input_layout", "output_layout",
                "rotation_steps", "depth", "fingerprint"}
        if not isinstance(doc, dict) or set(doc) != want:
            raise ProtocolError(f"model info: description must have exactly the keys {sorted(want)}")

        def ints(v, name, lo, hi):
            if not isinstance(v, list) or not all(isinstance(x, int) and not isinstance(x, bool)
                                                  and lo <= x <= hi for x in v):
                raise ProtocolError(f"model info: {name} must be a list of ints in {lo}..{hi}")
            return tuple(v)

        if not isinstance(doc["name"], str) or len(doc["name"]) > 200:
            raise ProtocolError("model info: name must be a short string")
        if not isinstance(doc["classes"], int) or not 1 <= doc["classes"] <= 1 << 16:
            raise ProtocolError("model info: classes must be a positive int")
        if not isinstance(doc["depth"], int) or not 0 <= doc["depth"] <= params.depth:
            raise ProtocolError(f"model info: depth must be an int in 0..{params.depth}")
        in_shape = ints(doc["input_shape"], "input_shape", 1, 1 << 16)
        out_shape = ints(doc["output_shape"], "output_shape", 1, 1 << 16)
        steps = ints(doc["rotation_steps"], "rotation_steps", 1, params.slots - 1)
        if len(set(steps)) != len(steps):
            raise ProtocolError("model info: duplicate rotation steps")
        fp = doc["fingerprint"]
        if not isinstance(fp, str) or len(fp) != 2 * FINGERPRINT_BYTES:
            raise ProtocolError("model info: fingerprint must be 32 hex digits")
        try:
            fp = bytes.fromhex(fp)
        except ValueError:
            raise ProtocolError("model info: fingerprint must be 32 hex digits") from None
        lin = _layout_from(doc["input_layout"], "input_layout")
        lout = _layout_from(doc["output_layout"], "output_layout")
        for lay, name in ((lin, "input_layout"), (lout, "output_layout")):
            if lay.slots != params.slots:
                raise ProtocolError(f"model info: {name} has {lay.slots} slots, the parameters "
                                    f"{params.slots}")
            if lay.n_ciphertexts > 1024:
                raise ProtocolError(f"model info: {name} needs {lay.n_ciphertexts} ciphertexts")
        if lin.shape != in_shape:
            raise ProtocolError(f"model info: input layout {lin.shape} != input shape {in_shape}")
        if int(np.prod(out_shape)) != lout.size:
            raise ProtocolError(f"model info: output layout {lout.shape} does not hold {out_shape}")
        return cls(doc["name"], doc["classes"], params, lin, lout, in_shape, out_shape,
                   tuple(sorted(steps)), doc["depth"], fp)


# ---------------------------------------------------------------------------- images
def as_image(x, shape) -> np.ndarray:
    """(C, H, W) float64 pixels in [0, 1] from a float CHW array, or a uint8 HWC / CHW array."""
    a = np.asarray(x)
    c, h, w = shape
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.dtype == np.uint8:
        if a.shape == (h, w, c):
            a = a.transpose(2, 0, 1)
        a = a.astype(np.float64) / 255.0
    a = np.asarray(a, dtype=np.float64)
    if a.shape != tuple(shape):
        raise ValueError(f"image must be ({c}, {h}, {w}) floats in [0, 1] or ({h}, {w}, {c}) "
                         f"uint8, got {np.asarray(x).shape} {np.asarray(x).dtype}")
    if not np.all(np.isfinite(a)):
        raise ValueError("image has non-finite values")
    return a


# ---------------------------------------------------------------------------- client
class Client:
    """Owns the secret key: builds keys for a server's :class:`ModelInfo`, encrypts, decrypts.

    ``info``: the server's public info bytes (``Server.public_info()``, ``GET /model``) or a
    :class:`ModelInfo`.  ``progress``: optional callable wrapping an iterable (e.g. tqdm)
    shown while the Galois keys are generated.
    """

    def __init__(self, info, progress=None):
        self.info = info if isinstance(info, ModelInfo) else ModelInfo.from_bytes(info)
        with ENGINE_LOCK:
            self.ctx = ckks.Context(self.info.params)
            self._keygen = ckks.KeyGenerator(self.ctx)
            self._encryptor = ckks.Encryptor(self.ctx, self._keygen.secret_key)  # symmetric
            self._decryptor = ckks.Decryptor(self.ctx, self._keygen.secret_key)
            self._pk_bytes = ser.dump_public_key(self._keygen.public_key)
        self.key_id = hashlib.sha256(self._pk_bytes).digest()[:FINGERPRINT_BYTES]
        self._progress = progress
        self._bundle = None

    @property
    def secret_key(self) -> SecretKey:
        """The client's secret key (for a teaching trace; never send it anywhere)."""
        return self._keygen.secret_key

    def _galois_chunks(self):
        steps = list(self.info.rotation_steps)
        return [steps[i:i + GALOIS_CHUNK] for i in range(0, len(steps), GALOIS_CHUNK)]

    def _galois_section(self, steps) -> list:
        with ENGINE_LOCK:
            return ser.dump_galois_keys_pieces(self._keygen.galois_keys(steps))

    def key_bundle(self) -> bytes:
        """Parameters, model fingerprint, public key, relinearization key and, when they fit one
        section (at most ``GALOIS_CHUNK``), the model's Galois keys; otherwise those follow as
        :meth:`key_parts`.  Cached after the first call."""
        if self._bundle is None:
            chunks = self._galois_chunks()
            with ENGINE_LOCK:
                rk = ser.dump_relin_key(self._keygen.relin_key())
            secs = [("PARM", ser.dump_parameters(self.info.params)), ("FPRT", self.info.fingerprint),
                    ("PKEY", self._pk_bytes), ("RKEY", rk)]
            if len(chunks) == 1:
                secs.append(("GKEY", self._galois_section(chunks[0])))
            self._bundle = pack_message(MsgKind.KEY_BUNDLE, secs)
        return self._bundle

    def key_parts(self):
        """The Galois keys the bundle does not carry, ``GALOIS_CHUNK`` per message (a generator:
        each part is made when asked for, so only one is in memory at a time)."""
        chunks = self._galois_chunks()
        if len(chunks) <= 1:
            return
        for steps in (self._progress(chunks) if self._progress else chunks):
            yield pack_message(MsgKind.KEY_PART, [("FPRT", self.info.fingerprint),
                                                  ("KEYI", self.key_id),
                                                  ("GKEY", self._galois_section(steps))])

    def encrypt(self, image) -> bytes:
        """An image ((C, H, W) floats in [0, 1] or (H, W, C) uint8) -> request bytes.  The
        model's first layer normalizes: pixels go in as they are."""
        x = as_image(image, self.info.input_shape)
        vecs = self.info.input_layout.pack(x)
        with ENGINE_LOCK:
            cts = [ser.dump_ciphertext(self._encryptor.encrypt(v)) for v in vecs]
        return pack_message(MsgKind.REQUEST, [("FPRT", self.info.fingerprint), ("KEYI", self.key_id)]
                            + [("CTXT", c) for c in cts])

    def decrypt(self, response) -> np.ndarray:
        """Response bytes -> the logits (the model's output shape)."""
        secs = unpack_message(response, MsgKind.RESPONSE)
        _expect_tags(secs, ["FPRT", "KEYI"], "response", repeat="CTXT")
        if _fixed(secs[0][1], FINGERPRINT_BYTES, "response fingerprint") != self.info.fingerprint:
            raise ProtocolError("response: computed by another model", 409)
        if _fixed(secs[1][1], FINGERPRINT_BYTES, "response key id") != self.key_id:
            raise ProtocolError("response: encrypted under other keys", 409)
        lay = self.info.output_layout
        if len(secs) - 2 != lay.n_ciphertexts:
            raise ProtocolError(f"response: {len(secs) - 2} ciphertexts, expected {lay.n_ciphertexts}")
        with ENGINE_LOCK:
            cts = [_load(ser.load_ciphertext, self.ctx, d, "response ciphertext") for _, d in secs[2:]]
            vecs = [np.real(self._decryptor.decrypt(c)) for c in cts]
        return lay.unpack(vecs).reshape(self.info.output_shape)


# ---------------------------------------------------------------------------- server
class _NoSecrets:
    """Refuses to hold a SecretKey in any attribute."""

    def __setattr__(self, name, value):
        _refuse_secret(value)
        object.__setattr__(self, name, value)


class Session(_NoSecrets):
    """One client's evaluation keys on the server (never a secret key)."""

    def __init__(self, sid: str, key_id: bytes, public_key, relin_key, missing: set, nbytes: int):
        self.id = sid
        self.key_id = key_id
        self.public_key = public_key
        self.relin_key = relin_key
        self.galois = {}           # Galois element -> SwitchingKey, until complete
        self.missing = set(missing)
        self.evaluator = self.backend = None
        self.nbytes = nbytes
        self.created = self.last_used = time.monotonic()
        self.requests = 0
        self.closed = False

    @property
    def ready(self) -> bool:
        return self.backend is not None

    def close(self) -> None:
        """Drop the keys (the session cannot evaluate afterwards)."""
        self.closed = True
        self.evaluator = self.backend = self.public_key = self.relin_key = None
        self.galois = {}


def run_steps(program, backend, cts, report: list = None):
    """``program.run_encrypted``, filling ``report`` (a list) with one dict per step (name, kind,
    level, rotations, products, seconds: ``hemet.he.program.format_report``) when the program
    supports it; otherwise one row for the whole program."""
    import inspect
    if report is None:
        return program.run_encrypted(backend, cts)
    if "report" in inspect.signature(program.run_encrypted).parameters:
        return program.run_encrypted(backend, cts, report=report)
    t0 = time.perf_counter()
    out = program.run_encrypted(backend, cts)
    report.append({"name": "whole program", "kind": "all", "seconds": time.perf_counter() - t0})
    return out


class Server(_NoSecrets):
    """Owns the model: compiles it for ``params`` and evaluates clients' encrypted requests.

    ``model``: a ``hemet.modelfile.Model``.  ``params``: ``ckks.Parameters`` (default: the
    smallest 128-bit-secure set for the model's depth).  ``compile_options`` go to
    ``compile_model`` (``global_pool="rotate"`` is refused: it leaves partial sums of the last
    feature map in the output).  ``prepare=True`` pre-encodes the diagonals at start-up into the
    plaintext cache shared by every session (bounded by ``max_cache_bytes``).

    ``max_galois_keys``: the Galois keys clients make (``Program.key_plan``; None: one per
    rotation step).  Fewer keys mean faster key generation and smaller bundles and sessions;
    each dropped step runs as two (or a few) rotations by kept steps.  hemet-fire1-4: 173
    steps, 3.2 GB of keys; 64 keys: 1.2 GB and about 200 more key switches per image.
    """

    def __init__(self, model, params: ckks.Parameters = None, *, prepare: bool = False,
                 max_cache_bytes: int = 1 << 30, max_galois_keys: int | None = 64,
                 **compile_options):
        from hemet.he import HEBackend
        from hemet.he.program import compile_model
        _refuse_secret(model, params, *compile_options.values())
        if compile_options.get("global_pool", "sum") == "rotate":
            raise ValueError("the server refuses global_pool='rotate': it would leak partial "
                             "sums of the last feature map to the client ('sum' does not)")
        chosen = params is None
        if chosen:
            params = ckks.Parameters(depth=model.graph.depth())
        if not isinstance(params, ckks.Parameters):
            raise TypeError("params must be ckks.Parameters")
        self.program = compile_model(model, params.slots, **compile_options)
        if chosen and self.program.depth > params.depth:  # repack=True: one more level
            params = ckks.Parameters(depth=self.program.depth)
            if params.slots != self.program.slots:
                self.program = compile_model(model, params.slots, **compile_options)
        self.model = model
        self.params = params
        if self.program.depth > params.depth:
            raise ValueError(f"the model needs depth {self.program.depth}, the parameters have "
                             f"{params.depth}")
        key_steps, self.rotation_paths = self.program.key_plan(max_galois_keys)
        with ENGINE_LOCK:
            self.ctx = ckks.Context(params)
            self._encoding = HEBackend(ckks.Evaluator(self.ctx), max_cache_bytes=max_cache_bytes)
            if prepare:
                self.program.prepare(self._encoding)
        fp = model_fingerprint(self.program, params, model, key_steps)
        self.info = ModelInfo(model.name, model.classes, params, self.program.input_layout,
                              self.program.layouts[self.program.output], tuple(model.graph.input_shape),
                              tuple(self.program.output_shape),
                              tuple(sorted(int(s) for s in key_steps)),
                              self.program.depth, fp)
        self._info_bytes = self.info.to_bytes()
        self.limits = self._limits()

    @property
    def fingerprint(self) -> bytes:
        return self.info.fingerprint

    def public_info(self) -> bytes:
        return self._info_bytes

    # -------------------------------------------------------------- sizes
    def _limits(self) -> dict:
        """Exact sizes of a valid key bundle and request (the service's body limits)."""
        p, n = self.params, self.params.n
        big_l = p.depth
        k = big_l + 1 + p.alpha
        digits = -(-(big_l + 1) // p.alpha)
        head = 44 + 4 + 4  # ckks header + header crc + payload crc
        n_gal = len(self.info.galois_elements)
        chunk = min(n_gal, GALOIS_CHUNK)
        gkey = head + 8 * chunk + chunk * digits * 2 * k * n * 8
        sizes = {"PARM": len(ser.dump_parameters(p)), "FPRT": FINGERPRINT_BYTES,
                 "PKEY": head + 2 * (big_l + 1) * n * 8, "RKEY": head + digits * 2 * k * n * 8,
                 "GKEY": gkey}
        frame = _HEAD.size + _CRC.size
        bundle = frame + sum(_SECTION.size + v for v in sizes.values())
        part = frame + 3 * _SECTION.size + 2 * FINGERPRINT_BYTES + gkey
        ct = head + 2 * (big_l + 1) * n * 8
        n_in = self.info.input_layout.n_ciphertexts
        request = frame + 2 * (_SECTION.size + FINGERPRINT_BYTES) + n_in * (_SECTION.size + ct)
        return {"key_bundle": bundle, "key_part": part, "request": request,
                "galois_keys": n_gal, "galois_key_bytes": digits * 2 * k * n * 8}

    # -------------------------------------------------------------- sessions
    def open_session(self, bundle, sid: str = None) -> Session:
        """Validate a client's key bundle; the session is ready when it holds every Galois key
        (in the bundle, or after :meth:`add_keys`).  Raises ProtocolError."""
        _refuse_secret(bundle, sid)
        secs = unpack_message(bundle, MsgKind.KEY_BUNDLE, max_bytes=self.limits["key_bundle"])
        tags = ["PARM", "FPRT", "PKEY", "RKEY"] + (["GKEY"] if len(secs) == 5 else [])
        _expect_tags(secs, tags, "key bundle")
        parm, fprt, pkey, rkey = (d for _, d in secs[:4])
        if _ckks_kind(parm, "key bundle parameters") != ser.Kind.PARAMETERS:
            raise ProtocolError("key bundle: the PARM section is not parameters")
        if bytes(parm) != ser.dump_parameters(self.params):
            raise ProtocolError("key bundle: made for other encryption parameters than this "
                                f"server's ({self.params.describe()})", 409)
        if _fixed(fprt, FINGERPRINT_BYTES, "key bundle fingerprint") != self.fingerprint:
            raise ProtocolError("key bundle: made for another model (model fingerprint "
                                f"{bytes(fprt).hex()} != {self.fingerprint.hex()})", 409)
        pk = _load(ser.load_public_key, self.ctx, pkey, "public key")
        rk = _load(ser.load_relin_key, self.ctx, rkey, "relinearization key")
        import secrets
        key_id = hashlib.sha256(bytes(pkey)).digest()[:FINGERPRINT_BYTES]
        session = Session(sid or secrets.token_hex(16), key_id, pk, rk, self.info.galois_elements,
                          len(bundle))
        if len(secs) == 5:
            self._take_galois(session, secs[4][1])
        return session

    def add_keys(self, session: Session, part) -> int:
        """Add a key part's Galois keys to ``session``; returns how many are still missing."""
        _refuse_secret(part)
        if not isinstance(session, Session) or session.closed:
            raise ProtocolError("session is closed or invalid", 404)
        secs = unpack_message(part, MsgKind.KEY_PART, max_bytes=self.limits["key_part"])
        _expect_tags(secs, ["FPRT", "KEYI", "GKEY"], "key part")
        if _fixed(secs[0][1], FINGERPRINT_BYTES, "key part fingerprint") != self.fingerprint:
            raise ProtocolError("key part: made for another model (model fingerprint mismatch)", 409)
        if _fixed(secs[1][1], FINGERPRINT_BYTES, "key part key id") != session.key_id:
            raise ProtocolError("key part: made from other keys than this session's (key id "
                                "mismatch)", 409)
        self._take_galois(session, secs[2][1])
        session.nbytes += len(part)
        return len(session.missing)

    def _take_galois(self, session: Session, data) -> None:
        from hemet.he import HEBackend
        gk = _load(ser.load_galois_keys, self.ctx, data, "Galois keys")
        got = set(gk.keys)
        if len(got) > GALOIS_CHUNK:
            raise ProtocolError(f"Galois keys: {len(got)} keys in one section, at most {GALOIS_CHUNK}")
        extra = got - self.info.galois_elements
        if extra:
            raise ProtocolError(f"Galois keys: {len(extra)} keys the model does not need "
                                f"(elements {sorted(extra)[:4]}...)", 422)
        again = got - session.missing
        if again:
            raise ProtocolError(f"Galois keys: {len(again)} keys this session already holds", 422)
        session.galois.update(gk.keys)
        session.missing -= got
        if not session.missing:
            keys = ckks.GaloisKeys(session.galois, self.ctx.fingerprint)
            with ENGINE_LOCK:
                ev = ckks.Evaluator(self.ctx, relin_key=session.relin_key, galois_keys=keys)
                be = HEBackend(ev, max_cache_bytes=0, rotation_paths=self.rotation_paths)
            be.cache = self._encoding.cache  # diagonals do not depend on keys: one shared cache
            session.galois = {}
            session.evaluator, session.backend = ev, be

    def parse_request(self, session: Session, request) -> list:
        """Validate a request for ``session``: the input ciphertexts (fresh, top level)."""
        _refuse_secret(request)
        secs = unpack_message(request, MsgKind.REQUEST, max_bytes=self.limits["request"])
        _expect_tags(secs, ["FPRT", "KEYI"], "request", repeat="CTXT")
        if _fixed(secs[0][1], FINGERPRINT_BYTES, "request fingerprint") != self.fingerprint:
            raise ProtocolError("request: encrypted for another model (model fingerprint mismatch)", 409)
        if _fixed(secs[1][1], FINGERPRINT_BYTES, "request key id") != session.key_id:
            raise ProtocolError("request: encrypted under other keys than this session's "
                                "(key id mismatch)", 409)
        n_in = self.info.input_layout.n_ciphertexts
        if len(secs) - 2 != n_in:
            raise ProtocolError(f"request: {len(secs) - 2} ciphertexts, the model's input layout "
                                f"takes {n_in}", 422)
        cts = []
        for i, (_, d) in enumerate(secs[2:]):
            ct = _load(ser.load_ciphertext, self.ctx, d, f"request ciphertext {i}")
            if ct.size != 2 or ct.level != self.params.max_level or ct.scale != self.params.scale:
                raise ProtocolError(f"request ciphertext {i}: size {ct.size}, level {ct.level}, scale "
                                    f"2^{np.log2(ct.scale):.2f}; expected a fresh encryption (size 2, "
                                    f"level {self.params.max_level}, scale 2^{self.params.scale_bits})", 422)
            cts.append(ct)
        return cts

    def evaluate(self, session: Session, request, report: list = None) -> bytes:
        """Validate a request, run the program on it, and return the response bytes (outputs
        dropped to level 0: smaller, and nothing of the remaining modulus is revealed).
        ``report``: a list receiving the program's per-step rows (see :func:`run_steps`)."""
        if not isinstance(session, Session) or session.closed:
            raise ProtocolError("session is closed or invalid", 404)
        if not session.ready:
            raise ProtocolError(f"session incomplete: {len(session.missing)} of the model's "
                                f"{len(self.info.galois_elements)} Galois keys missing (send key "
                                "parts first)", 409)
        cts = self.parse_request(session, request)
        with ENGINE_LOCK:
            out = run_steps(self.program, session.backend, cts, report)
            out = [session.evaluator.drop_level(c, 0) for c in out]
            payload = [ser.dump_ciphertext(c) for c in out]
        session.requests += 1
        session.last_used = time.monotonic()
        return pack_message(MsgKind.RESPONSE, [("FPRT", self.fingerprint), ("KEYI", session.key_id)]
                            + [("CTXT", c) for c in payload])
