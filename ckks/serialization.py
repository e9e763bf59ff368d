"""Versioned binary serialization of parameters, keys, ciphertexts and plaintexts.

Format (version 1)
------------------
Every object is one self-describing byte string; all integers are little-endian::

    offset  size  field
    0       8     magic b"HEMETCK\\0"
    8       2     format version (uint16), currently 1
    10      1     object kind (see ``Kind``)
    11      1     flags, must be 0
    12      16    parameter fingerprint (``Parameters.fingerprint()``)
    28      16    kind fields (below)
    44      8*k   Galois elements, uint64 (Galois keys only: k = count)
    H       4     CRC-32 of bytes [0, H): the header checksum
    H+4     8*m   payload: m uint64 words, C order
    end-4   4     CRC-32 of the payload

Kind fields of the polynomial objects (ciphertext, plaintext and every key), 16 bytes::

    level uint16 | count uint16 | rows uint16 | log_n uint8 | reserved uint8 (0) | scale float64

=============  ===========  ===============  ==============================  =====  =========
kind           level        count            payload shape                   rows   scale
=============  ===========  ===============  ==============================  =====  =========
ciphertext     0..L         size (2 or 3)    (size, level+1, N)              l+1    in [1, 2^(60(l+2))]
plaintext      0..L         1                (level+1, N)                    l+1    in [1, 2^(60(l+2))]
public key     L            2 (b, a)         (2, L+1, N)                     L+1    0
relin key      0            digits           (digits, 2, L+1+alpha, N)       K      0
Galois keys    0            keys             (keys, digits, 2, K, N)         K      0
secret key     0            1                (L+1+alpha, N)                  K      0
=============  ===========  ===============  ==============================  =====  =========

``L = depth`` is the top level, ``K = L + 1 + alpha`` the number of primes of Q and P and
``digits = ceil((L + 1) / alpha)``; switching and secret keys always cover every prime, so
their level field is unused (0).  The Galois elements (odd, below 2N, distinct, written in
increasing order) follow the kind fields; an empty Galois key set has all kind fields 0 and
no payload.  Every residue is in NTT form and below its prime: row ``i`` of a polynomial is
reduced modulo ``Context.q_all[i]`` (the primes of Q, then those of P).

Kind fields of parameters, 16 bytes, followed by the primes (Q then P) as the payload::

    log_n uint8 | scale_bits uint8 | first_bits uint8 | special_bits uint8 | depth uint16 |
    dnum uint16 | allow_insecure uint8 (0/1) | reserved 3 bytes (0) | prime count uint32

Loading validates everything (magic, version, kind, checksums, fingerprint against the
context, level, size, scale, shapes, payload length, every residue below its prime, Galois
elements) and raises ``ckks.SerializationError`` naming the problem; no other exception
escapes a ``load_*`` function given bytes.

Secret keys
-----------
**A secret key is serialized only by the explicit ``dump_secret_key`` and read only by
``load_secret_key``.**  No other function (and not ``pickle``) accepts or produces one: the
other loaders refuse the secret-key kind, so secret bytes can never be mistaken for a
public object.  Whoever holds those bytes can decrypt everything: keep them on the client.
"""
import enum
import math
import struct
import zlib

import numpy as np

from .ciphertext import Ciphertext, Plaintext
from .context import Context
from .errors import SerializationError
from .params import Parameters
from .rlwe.keys import GaloisKeys, PublicKey, RelinKey, SecretKey, SwitchingKey

__all__ = [
    "MAGIC", "FORMAT_VERSION", "Kind", "peek_kind",
    "dump_parameters", "load_parameters",
    "dump_ciphertext", "load_ciphertext", "dump_plaintext", "load_plaintext",
    "dump_public_key", "load_public_key", "dump_relin_key", "load_relin_key",
    "dump_galois_keys", "dump_galois_keys_pieces", "load_galois_keys",
    "dump_secret_key", "load_secret_key",
]

MAGIC = b"HEMETCK\0"
FORMAT_VERSION = 1


class Kind(enum.IntEnum):
    PARAMETERS = 1
    CIPHERTEXT = 2
    PLAINTEXT = 3
    PUBLIC_KEY = 4
    RELIN_KEY = 5
    GALOIS_KEYS = 6
    SECRET_KEY = 7


_NAMES = {Kind.PARAMETERS: "parameters", Kind.CIPHERTEXT: "ciphertext", Kind.PLAINTEXT: "plaintext",
          Kind.PUBLIC_KEY: "public key", Kind.RELIN_KEY: "relinearization key",
          Kind.GALOIS_KEYS: "Galois keys", Kind.SECRET_KEY: "secret key"}

_COMMON = struct.Struct("<8sHBB16s")         # magic, version, kind, flags, fingerprint
_POLY = struct.Struct("<HHHBBd")             # level, count, rows, log_n, reserved, scale
_PARAMS = struct.Struct("<BBBBHHB3sI")       # log_n, scale_bits, first_bits, special_bits,
#                                              depth, dnum, allow_insecure, reserved, n_primes
_CRC = struct.Struct("<I")
_FIXED = _COMMON.size + _POLY.size           # 44: both kind-field layouts are 16 bytes
assert _PARAMS.size == _POLY.size == 16

_U64 = np.dtype("<u8")
_MAX_DEPTH = 1024                            # bounds the prime search of load_parameters


def _log2_scale_limit(level: int) -> int:
    """A scale above 2^this at ``level`` is absurd (far beyond any product of the primes)."""
    return 60 * (level + 2)


# ---------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------
def _check_type(obj, cls, what: str):
    if isinstance(obj, SecretKey) and cls is not SecretKey:
        raise TypeError(f"refusing to serialize a SecretKey as {what}; "
                        "use ckks.serialization.dump_secret_key explicitly")
    if not isinstance(obj, cls):
        raise TypeError(f"expected a {cls.__name__}, got {type(obj).__name__}")


def _fingerprint_of(obj, what: str) -> bytes:
    fp = getattr(obj, "context_id", None)
    if not isinstance(fp, bytes) or len(fp) != 16:
        raise SerializationError(f"cannot serialize {what}: context_id must be 16 bytes")
    return fp


def _array(data, ndim: int, what: str, layout: str) -> np.ndarray:
    """``data`` checked to be a uint64 array of ``ndim`` dimensions with a power-of-two last axis."""
    if not isinstance(data, np.ndarray) or data.dtype != np.uint64 or data.ndim != ndim:
        raise SerializationError(f"cannot serialize {what}: data must be a uint64 array {layout}")
    n = data.shape[-1]
    if n < 2 or n & (n - 1) or 0 in data.shape:
        raise SerializationError(f"cannot serialize {what}: data has shape {data.shape}, not {layout}")
    return data


def _u16(value: int, name: str, what: str) -> int:
    if not 0 <= value < 1 << 16:
        raise SerializationError(f"cannot serialize {what}: {name} {value} does not fit 16 bits")
    return value


def _words(data: np.ndarray) -> memoryview:
    """An array's little-endian uint64 words as bytes, without a copy where it is already
    contiguous ``<u8`` (a key set is hundreds of MB: every copy is fresh memory)."""
    return memoryview(np.ascontiguousarray(data, dtype=_U64)).cast("B")


def _seal(kind: Kind, fingerprint: bytes, fields: bytes, pieces: list, extra: bytes = b"") -> list:
    """The object's bytes as pieces to write one after another (``b"".join`` of them is the
    object); the payload is ``pieces`` (bytes-like): a key set's keys are never gathered into
    one array, and a writer that takes pieces never gathers the whole object either."""
    header = _COMMON.pack(MAGIC, FORMAT_VERSION, int(kind), 0, fingerprint) + fields + extra
    crc = 0
    for piece in pieces:
        crc = zlib.crc32(piece, crc)
    return [header, _CRC.pack(zlib.crc32(header)), *pieces, _CRC.pack(crc)]


def _dump_poly(kind: Kind, fingerprint: bytes, arrays: list, level: int, count: int,
               scale: float, what: str, extra: bytes = b"") -> list:
    """Kind fields from the arguments; rows and log_n from the arrays (rows = axis -2), which
    have one shape and are written in order (their stack is the payload)."""
    rows, n = arrays[0].shape[-2], arrays[0].shape[-1]
    fields = _POLY.pack(_u16(level, "level", what), _u16(count, "count", what),
                        _u16(rows, "rows", what), n.bit_length() - 1, 0, float(scale))
    return _seal(kind, fingerprint, fields, [_words(a) for a in arrays], extra)


def dump_parameters(params) -> bytes:
    """Parameters (or a Context's parameters) as bytes; ``load_parameters`` rebuilds them."""
    if isinstance(params, Context):
        params = params.params
    _check_type(params, Parameters, "parameters")
    primes = list(params.q) + list(params.p)
    fields = _PARAMS.pack(params.log_n, params.scale_bits, params.first_bits, params.special_bits,
                          _u16(params.depth, "depth", "parameters"), params.dnum,
                          1 if params.allow_insecure else 0, b"\0\0\0", len(primes))
    return b"".join(_seal(Kind.PARAMETERS, params.fingerprint(), fields,
                          [np.array(primes, dtype=_U64).tobytes()]))


def dump_ciphertext(ct: Ciphertext) -> bytes:
    what = "ciphertext"
    _check_type(ct, Ciphertext, what)
    data = _array(ct.data, 3, what, "(size, level+1, N)")
    if data.shape[0] not in (2, 3) or data.shape[1] != ct.level + 1:
        raise SerializationError(f"cannot serialize {what}: data shape {data.shape} does not match "
                                 f"size 2 or 3 and level {ct.level}")
    return b"".join(_dump_poly(Kind.CIPHERTEXT, _fingerprint_of(ct, what), [data], ct.level,
                               data.shape[0], ct.scale, what))


def dump_plaintext(pt: Plaintext) -> bytes:
    what = "plaintext"
    _check_type(pt, Plaintext, what)
    data = _array(pt.data, 2, what, "(level+1, N)")
    if data.shape[0] != pt.level + 1:
        raise SerializationError(f"cannot serialize {what}: data shape {data.shape} does not match "
                                 f"level {pt.level}")
    return b"".join(_dump_poly(Kind.PLAINTEXT, _fingerprint_of(pt, what), [data], pt.level, 1,
                               pt.scale, what))


def dump_public_key(pk: PublicKey) -> bytes:
    what = "public key"
    _check_type(pk, PublicKey, what)
    data = _array(pk.data, 3, what, "(2, L+1, N)")
    if data.shape[0] != 2 or data.shape[1] < 1:
        raise SerializationError(f"cannot serialize {what}: data shape {data.shape} is not (2, L+1, N)")
    return b"".join(_dump_poly(Kind.PUBLIC_KEY, _fingerprint_of(pk, what), [data],
                               data.shape[1] - 1, 2, 0.0, what))


def _switching_data(data, what: str) -> np.ndarray:
    data = _array(data, 4, what, "(digits, 2, L+1+alpha, N)")
    if data.shape[0] < 1 or data.shape[1] != 2 or data.shape[2] < 1:
        raise SerializationError(f"cannot serialize {what}: data shape {data.shape} is not "
                                 "(digits, 2, L+1+alpha, N)")
    return data


def dump_relin_key(rk: RelinKey) -> bytes:
    what = "relinearization key"
    _check_type(rk, RelinKey, what)
    data = _switching_data(rk.data, what)
    return b"".join(_dump_poly(Kind.RELIN_KEY, _fingerprint_of(rk, what), [data], 0,
                               data.shape[0], 0.0, what))


def dump_galois_keys(gk: GaloisKeys) -> bytes:
    return b"".join(dump_galois_keys_pieces(gk))


def dump_galois_keys_pieces(gk: GaloisKeys) -> list:
    """``dump_galois_keys``'s bytes as pieces to write one after another (views of the keys
    themselves, no copy): a key set is hundreds of MB, and a writer that takes pieces (a file's
    ``writelines``, ``hemet.roles.pack_message``) then copies it once instead of twice."""
    what = "Galois keys"
    _check_type(gk, GaloisKeys, what)
    fp = _fingerprint_of(gk, what)
    keys = getattr(gk, "keys", None)
    if not isinstance(keys, dict):
        raise SerializationError(f"cannot serialize {what}: keys must be a dict")
    elements = sorted(keys)
    if not elements:  # N is unknown here: log_n 0 and no payload mark the empty set
        return _seal(Kind.GALOIS_KEYS, fp, _POLY.pack(0, 0, 0, 0, 0, 0.0), [])
    shape = None
    for g in elements:
        key = keys[g]
        if not isinstance(g, (int, np.integer)) or not 0 < g < 1 << 64:
            raise SerializationError(f"cannot serialize {what}: bad Galois element {g!r}")
        if not isinstance(key, SwitchingKey) or isinstance(key, RelinKey):
            raise SerializationError(f"cannot serialize {what}: the key for {g} is not a SwitchingKey")
        if key.context_id != fp:
            raise SerializationError(f"cannot serialize {what}: the key for {g} belongs to another context")
        if shape is None:
            shape = _switching_data(key.data, what).shape
        elif _switching_data(key.data, what).shape != shape:
            raise SerializationError(f"cannot serialize {what}: keys have different shapes")
    extra = np.array(elements, dtype=_U64).tobytes()
    return _dump_poly(Kind.GALOIS_KEYS, fp, [keys[g].data for g in elements], 0, len(elements),
                      0.0, what, extra)


def dump_secret_key(sk: SecretKey) -> bytes:
    """**Serializes the SECRET key.**  The only way to turn a secret key into bytes: whoever
    holds the result can decrypt every ciphertext of this context.  Keep it on the client,
    encrypt it at rest, never send it to the server.  Read it back with ``load_secret_key``."""
    what = "secret key"
    _check_type(sk, SecretKey, what)
    data = _array(sk.data, 2, what, "(L+1+alpha, N)")
    return b"".join(_dump_poly(Kind.SECRET_KEY, _fingerprint_of(sk, what), [data], 0, 1, 0.0, what))


# ---------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------
class _Reader:
    """Parsed, checked envelope: header fields and a view of the payload."""

    __slots__ = ("buf", "kind", "fingerprint", "fields", "extra", "payload_start", "what")


def _as_buffer(data) -> memoryview:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise SerializationError(f"expected bytes, got {type(data).__name__}")
    try:
        mv = memoryview(data)
        if not mv.c_contiguous:
            raise SerializationError("expected a contiguous bytes buffer")
        return mv.cast("B") if mv.format != "B" or mv.ndim != 1 else mv
    except (TypeError, ValueError) as exc:
        if isinstance(exc, SerializationError):
            raise
        raise SerializationError(f"unreadable buffer: {exc}") from None


def _open(data, kind: Kind, context) -> _Reader:
    what = _NAMES[kind]
    buf = _as_buffer(data)
    if len(buf) < _COMMON.size:
        raise SerializationError(f"{what}: truncated: {len(buf)} bytes, shorter than the "
                                 f"{_COMMON.size}-byte header")
    magic, version, got_kind, flags, fingerprint = _COMMON.unpack_from(buf, 0)
    if magic != MAGIC:
        raise SerializationError(f"{what}: bad magic {bytes(magic)!r} (not a HEMET CKKS object)")
    if version != FORMAT_VERSION:
        raise SerializationError(f"{what}: unsupported format version {version} "
                                 f"(this build reads version {FORMAT_VERSION})")
    if got_kind != kind:
        name = _NAMES.get(got_kind)
        if got_kind == Kind.SECRET_KEY:
            raise SerializationError(f"expected {what}, got a secret key: secret keys load only "
                                     "through ckks.serialization.load_secret_key")
        raise SerializationError(f"expected {what}, got " +
                                 (name if name else f"unknown object kind {got_kind}"))
    if flags != 0:
        raise SerializationError(f"{what}: unsupported flags 0x{flags:02x}")
    if len(buf) < _FIXED:
        raise SerializationError(f"{what}: truncated header: {len(buf)} of {_FIXED + _CRC.size} bytes")
    n_extra = 0
    if kind == Kind.GALOIS_KEYS:
        n_extra = _POLY.unpack_from(buf, _COMMON.size)[1]
    header_end = _FIXED + 8 * n_extra
    if len(buf) < header_end + _CRC.size:
        raise SerializationError(f"{what}: truncated header: {len(buf)} of "
                                 f"{header_end + _CRC.size} bytes")
    (crc,) = _CRC.unpack_from(buf, header_end)
    if zlib.crc32(buf[:header_end]) != crc:
        raise SerializationError(f"{what}: header checksum mismatch (corrupted header)")
    if context is not None and bytes(fingerprint) != context.fingerprint:
        raise SerializationError(f"{what} belongs to another context (parameter fingerprint "
                                 f"{bytes(fingerprint).hex()} != {context.fingerprint.hex()})")
    r = _Reader()
    r.buf, r.kind, r.fingerprint, r.what = buf, kind, bytes(fingerprint), what
    r.fields = buf[_COMMON.size:_FIXED]
    r.extra = buf[_FIXED:header_end]
    r.payload_start = header_end + _CRC.size
    return r


def _payload(r: _Reader, shape, moduli=None) -> np.ndarray:
    """The payload as a fresh uint64 array of ``shape``: length checked against the header
    (truncated / trailing bytes) before anything is allocated, then every residue of row i
    (axis -2) checked below ``moduli[i]``, then the payload checksum."""
    words = math.prod(shape)
    expected = r.payload_start + 8 * words + _CRC.size
    got = len(r.buf)
    if got < expected:
        raise SerializationError(f"{r.what}: truncated: {got} bytes, expected {expected}")
    if got > expected:
        raise SerializationError(f"{r.what}: {got - expected} trailing bytes after the object "
                                 f"(expected {expected} bytes)")
    payload = r.buf[r.payload_start:expected - _CRC.size]
    arr = np.frombuffer(payload, dtype=_U64, count=words).astype(np.uint64).reshape(shape)
    if moduli is not None:
        _check_residues(arr, moduli, r.what)
    (crc,) = _CRC.unpack_from(r.buf, expected - _CRC.size)
    if zlib.crc32(payload) != crc:
        raise SerializationError(f"{r.what}: payload checksum mismatch (corrupted data)")
    return arr


def _check_residues(arr: np.ndarray, moduli: np.ndarray, what: str) -> None:
    """Every residue of row i (axis -2) is below moduli[i]; vectorized, one pass."""
    if arr.size == 0:
        return
    maxima = arr.max(axis=-1)                       # (..., rows)
    bad = maxima >= moduli
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        row, prime = idx[-1], int(moduli[idx[-1]])
        col = int(np.argmax(arr[idx] >= prime))
        where = f"polynomial {idx[:-1]}, " if idx[:-1] else ""
        raise SerializationError(f"{what}: residue {int(arr[idx][col])} at {where}row {row}, "
                                 f"coefficient {col} is not below its prime {prime}")


def _check_context(context) -> None:
    if not isinstance(context, Context):
        raise TypeError(f"expected a ckks.Context, got {type(context).__name__}")


def _poly_fields(r: _Reader, context: Context):
    level, count, rows, log_n, reserved, scale = _POLY.unpack_from(r.fields, 0)
    if reserved != 0:
        raise SerializationError(f"{r.what}: reserved header byte is {reserved}, expected 0")
    if log_n != context.log_n:
        raise SerializationError(f"{r.what}: ring degree 2^{log_n} does not match the "
                                 f"context's 2^{context.log_n}")
    return level, count, rows, scale


def _check_key_fields(r: _Reader, context: Context, level, rows, scale, expected_rows,
                      expected_level=0):
    if level != expected_level:
        raise SerializationError(f"{r.what}: level field {level}, expected {expected_level}")
    if rows != expected_rows:
        raise SerializationError(f"{r.what}: {rows} rows per polynomial, expected {expected_rows}")
    if scale != 0.0 or math.copysign(1.0, scale) < 0:
        raise SerializationError(f"{r.what}: scale field must be 0 for keys, got {scale!r}")


def _check_scale(r: _Reader, level: int, scale: float) -> None:
    if not math.isfinite(scale):
        raise SerializationError(f"{r.what}: scale {scale!r} is not finite")
    if scale < 1.0:
        raise SerializationError(f"{r.what}: scale {scale!r} is below 1")
    if math.log2(scale) > _log2_scale_limit(level):
        raise SerializationError(f"{r.what}: scale 2^{math.log2(scale):.1f} is absurd at level "
                                 f"{level} (limit 2^{_log2_scale_limit(level)})")


def _check_level(r: _Reader, context: Context, level: int) -> None:
    if not 0 <= level <= context.max_level:
        raise SerializationError(f"{r.what}: level {level} out of range 0..{context.max_level}")


def _load_poly(kind: Kind, context, data):
    """Ciphertext or plaintext."""
    _check_context(context)
    r = _open(data, kind, context)
    level, count, rows, scale = _poly_fields(r, context)
    _check_level(r, context, level)
    if kind == Kind.CIPHERTEXT:
        if count not in (2, 3):
            raise SerializationError(f"{r.what}: size {count}, expected 2 or 3")
    elif count != 1:
        raise SerializationError(f"{r.what}: polynomial count {count}, expected 1")
    if rows != level + 1:
        raise SerializationError(f"{r.what}: {rows} limbs inconsistent with level {level} "
                                 f"(expected {level + 1})")
    _check_scale(r, level, scale)
    n = context.n
    shape = (count, rows, n) if kind == Kind.CIPHERTEXT else (rows, n)
    arr = _payload(r, shape, context.q_all[:rows])
    cls = Ciphertext if kind == Kind.CIPHERTEXT else Plaintext
    return cls(arr, level, scale, context.fingerprint)


def load_ciphertext(context: Context, data) -> Ciphertext:
    return _load_poly(Kind.CIPHERTEXT, context, data)


def load_plaintext(context: Context, data) -> Plaintext:
    return _load_poly(Kind.PLAINTEXT, context, data)


def load_public_key(context: Context, data) -> PublicKey:
    _check_context(context)
    r = _open(data, Kind.PUBLIC_KEY, context)
    level, count, rows, scale = _poly_fields(r, context)
    _check_key_fields(r, context, level, rows, scale, context.max_level + 1, context.max_level)
    if count != 2:
        raise SerializationError(f"{r.what}: {count} polynomials, expected 2")
    arr = _payload(r, (2, rows, context.n), context.q_all[:rows])
    return PublicKey(arr, context.fingerprint)


def _digits(context: Context) -> int:
    alpha = context.params.alpha
    return -(-(context.max_level + 1) // alpha)


def load_relin_key(context: Context, data) -> RelinKey:
    _check_context(context)
    r = _open(data, Kind.RELIN_KEY, context)
    level, count, rows, scale = _poly_fields(r, context)
    _check_key_fields(r, context, level, rows, scale, len(context.primes))
    digits = _digits(context)
    if count != digits:
        raise SerializationError(f"{r.what}: {count} digits, expected {digits}")
    arr = _payload(r, (digits, 2, rows, context.n), context.q_all)
    return RelinKey(arr, context.fingerprint)


def load_galois_keys(context: Context, data) -> GaloisKeys:
    _check_context(context)
    r = _open(data, Kind.GALOIS_KEYS, context)
    if bytes(r.fields) == _POLY.pack(0, 0, 0, 0, 0, 0.0):  # the empty key set
        _payload(r, (0,))
        return GaloisKeys({}, context.fingerprint)
    level, count, rows, scale = _poly_fields(r, context)
    if count == 0:
        raise SerializationError(f"{r.what}: an empty key set must have all header fields 0")
    two_n = 2 * context.n
    elements = [int(g) for g in np.frombuffer(r.extra, dtype=_U64, count=count)]
    _check_key_fields(r, context, level, rows, scale, len(context.primes))
    seen = set()
    for g in elements:
        if g % 2 == 0 or not 0 < g < two_n:
            raise SerializationError(f"{r.what}: invalid Galois element {g} (must be odd and "
                                     f"below 2N = {two_n})")
        if g in seen:
            raise SerializationError(f"{r.what}: duplicate Galois element {g}")
        seen.add(g)
    digits = _digits(context)
    n = context.n
    arr = _payload(r, (count, digits, 2, rows, n), context.q_all)
    keys = {g: SwitchingKey(arr[i], context.fingerprint) for i, g in enumerate(elements)}
    return GaloisKeys(keys, context.fingerprint)


def load_secret_key(context: Context, data) -> SecretKey:
    """**Reads a SECRET key** written by ``dump_secret_key`` (the only loader that accepts one)."""
    _check_context(context)
    r = _open(data, Kind.SECRET_KEY, context)
    level, count, rows, scale = _poly_fields(r, context)
    _check_key_fields(r, context, level, rows, scale, len(context.primes))
    if count != 1:
        raise SerializationError(f"{r.what}: {count} polynomials, expected 1")
    arr = _payload(r, (rows, context.n), context.q_all)
    return SecretKey(arr, context.fingerprint)


def load_parameters(data) -> Parameters:
    """Rebuild ``Parameters`` and check that their primes and fingerprint match the stored ones."""
    r = _open(data, Kind.PARAMETERS, None)
    (log_n, scale_bits, first_bits, special_bits, depth, dnum, insecure, reserved,
     n_primes) = _PARAMS.unpack_from(r.fields, 0)
    what = r.what
    if reserved != b"\0\0\0":
        raise SerializationError(f"{what}: reserved header bytes are not zero")
    if insecure not in (0, 1):
        raise SerializationError(f"{what}: allow_insecure flag is {insecure}, expected 0 or 1")
    if depth > _MAX_DEPTH:
        raise SerializationError(f"{what}: depth {depth} exceeds the supported {_MAX_DEPTH}")
    if not 1 <= dnum <= depth + 1:
        raise SerializationError(f"{what}: dnum {dnum} out of range 1..{depth + 1}")
    expected_primes = depth + 1 + -(-(depth + 1) // dnum)
    if n_primes != expected_primes:
        raise SerializationError(f"{what}: {n_primes} primes, expected {expected_primes} for "
                                 f"depth {depth} and dnum {dnum}")
    primes = _payload(r, (n_primes,))
    stored_q = tuple(int(x) for x in primes[:depth + 1])
    stored_p = tuple(int(x) for x in primes[depth + 1:])
    # Cheap consistency check before the (slower) prime search: the fingerprint of the stored
    # fields and primes, computed by Parameters.fingerprint itself on an unvalidated shell.
    shell = object.__new__(Parameters)
    for name, value in dict(log_n=log_n, depth=depth, scale_bits=scale_bits, first_bits=first_bits,
                            special_bits=special_bits, dnum=dnum, allow_insecure=bool(insecure),
                            q=stored_q, p=stored_p).items():
        object.__setattr__(shell, name, value)
    try:
        shell_fp = shell.fingerprint()
    except Exception:  # noqa: BLE001 - a malformed shell must not escape as another error
        shell_fp = None
    if shell_fp != r.fingerprint:
        raise SerializationError(f"{what}: stored fingerprint does not match the stored fields and primes")
    try:
        # insecure parameters warn (SecurityWarning) on load too: the reader should know
        params = Parameters(log_n=log_n, depth=depth, scale_bits=scale_bits, first_bits=first_bits,
                            special_bits=special_bits, dnum=dnum, allow_insecure=bool(insecure))
    except Exception as exc:  # noqa: BLE001 - ValueError, SecurityError ...
        raise SerializationError(f"{what}: invalid parameters: {exc}") from None
    if params.q != stored_q or params.p != stored_p:
        raise SerializationError(f"{what}: rebuilt primes differ from the stored primes")
    if params.fingerprint() != r.fingerprint:
        raise SerializationError(f"{what}: rebuilt fingerprint differs from the stored one")
    return params


def peek_kind(data) -> Kind:
    """The object kind of serialized bytes (checks magic and version only)."""
    buf = _as_buffer(data)
    if len(buf) < _COMMON.size:
        raise SerializationError(f"truncated: {len(buf)} bytes, shorter than the header")
    magic, version, kind, _, _ = _COMMON.unpack_from(buf, 0)
    if magic != MAGIC:
        raise SerializationError(f"bad magic {bytes(magic)!r} (not a HEMET CKKS object)")
    if version != FORMAT_VERSION:
        raise SerializationError(f"unsupported format version {version}")
    try:
        return Kind(kind)
    except ValueError:
        raise SerializationError(f"unknown object kind {kind}") from None

