"""Serialization: bit-exact round trips, working loaded keys, and strict validation on load."""
import math
import pickle
import struct
import warnings
import zlib

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import ckks
from ckks import SerializationError
from ckks import serialization as ser

pytestmark = pytest.mark.filterwarnings("ignore::ckks.SecurityWarning")

TOL = 1e-4
HEADER = 44          # common header + kind fields, before the Galois elements / header CRC


def _insecure(**kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ckks.SecurityWarning)
        return ckks.Parameters(allow_insecure=True, **kw)


class Kit:
    def __init__(self, params, steps=(1, 2, -3)):
        self.params = params
        self.ctx = ckks.Context(params)
        self.kg = ckks.KeyGenerator(self.ctx)
        self.pk = self.kg.public_key
        self.sk = self.kg.secret_key
        self.rk = self.kg.relin_key()
        self.gk = self.kg.galois_keys(list(steps), conjugate=True)
        self.enc = ckks.Encryptor(self.ctx, self.pk)
        self.dec = ckks.Decryptor(self.ctx, self.sk)
        self.rng = np.random.default_rng(1)

    def values(self):
        return self.rng.uniform(-1, 1, self.ctx.slots)


@pytest.fixture(scope="module")
def kit():
    return Kit(_insecure(log_n=10, depth=2))


@pytest.fixture(scope="module")
def other():
    """Same ring degree and depth (same shapes), different primes: another context."""
    return Kit(_insecure(log_n=10, depth=2, scale_bits=35), steps=(1,))


@pytest.fixture(scope="module")
def secure():
    return Kit(ckks.Parameters(log_n=13, depth=2), steps=(1,))


@pytest.fixture(scope="module")
def blobs(kit):
    """One serialized object of every kind, with its loader."""
    ct = kit.enc.encrypt(kit.values())
    ev = ckks.Evaluator(kit.ctx, relin_key=kit.rk)
    ct3 = ev.multiply(ct, ct, relinearize=False)
    pt = kit.ctx.encoder.encode(kit.values(), level=1)
    c = kit.ctx
    return {
        "parameters": (ser.dump_parameters(kit.params), lambda b: ser.load_parameters(b)),
        "ciphertext": (ser.dump_ciphertext(ct), lambda b: ser.load_ciphertext(c, b)),
        "ciphertext3": (ser.dump_ciphertext(ct3), lambda b: ser.load_ciphertext(c, b)),
        "plaintext": (ser.dump_plaintext(pt), lambda b: ser.load_plaintext(c, b)),
        "public_key": (ser.dump_public_key(kit.pk), lambda b: ser.load_public_key(c, b)),
        "relin_key": (ser.dump_relin_key(kit.rk), lambda b: ser.load_relin_key(c, b)),
        "galois_keys": (ser.dump_galois_keys(kit.gk), lambda b: ser.load_galois_keys(c, b)),
        "secret_key": (ser.dump_secret_key(kit.sk), lambda b: ser.load_secret_key(c, b)),
    }


def header_end(b: bytes) -> int:
    """Offset of the header CRC (documented layout)."""
    k = struct.unpack_from("<H", b, 30)[0] if b[10] == ser.Kind.GALOIS_KEYS else 0
    return HEADER + 8 * k


def reseal(b: bytes) -> bytes:
    """Recompute both checksums, so that a crafted change reaches the field checks."""
    b = bytearray(b)
    h = header_end(b)
    b[h:h + 4] = struct.pack("<I", zlib.crc32(bytes(b[:h])))
    b[-4:] = struct.pack("<I", zlib.crc32(bytes(b[h + 4:-4])))
    return bytes(b)


def patch(b: bytes, offset: int, fmt: str, value) -> bytes:
    b = bytearray(b)
    struct.pack_into(fmt, b, offset, value)
    return reseal(bytes(b))


def raises(loader, data, match=None):
    with pytest.raises(SerializationError, match=match) as info:
        loader(data)
    return str(info.value)


def close(a, b):
    return np.max(np.abs(np.asarray(a) - np.asarray(b))) < TOL


# ---------------------------------------------------------------------------------------
# round trips
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["kit", "secure"])
def test_parameters_round_trip(which, request):
    k = request.getfixturevalue(which)
    b = ser.dump_parameters(k.params)
    p = ser.load_parameters(b)
    assert p == k.params and p.fingerprint() == k.params.fingerprint()
    assert (p.q, p.p, p.dnum, p.first_bits, p.allow_insecure) == \
        (k.params.q, k.params.p, k.params.dnum, k.params.first_bits, k.params.allow_insecure)
    assert ser.dump_parameters(p) == b == ser.dump_parameters(k.ctx)
    assert ser.peek_kind(b) == ser.Kind.PARAMETERS


def _same_poly(a, b):
    assert type(a) is type(b)
    assert a.data.dtype == np.uint64 and a.data.flags.c_contiguous and a.data.flags.writeable
    assert np.array_equal(a.data, b.data)
    assert (a.level, a.scale, a.context_id) == (b.level, b.scale, b.context_id)


@pytest.mark.parametrize("which", ["kit", "secure"])
def test_ciphertext_round_trip_decrypts(which, request):
    k = request.getfixturevalue(which)
    v = k.values()
    ct = k.enc.encrypt(v)
    b = ser.dump_ciphertext(ct)
    ct2 = ser.load_ciphertext(k.ctx, b)
    _same_poly(ct, ct2)
    assert ser.dump_ciphertext(ct2) == b
    assert close(k.dec.decrypt(ct2), v)
    # methods on the class delegate here; bytearray / memoryview are accepted too
    _same_poly(ckks.Ciphertext.from_bytes(k.ctx, ct.to_bytes()), ct)
    _same_poly(ser.load_ciphertext(k.ctx, bytearray(b)), ct)
    _same_poly(ser.load_ciphertext(k.ctx, memoryview(b)), ct)


def test_ciphertext_size3_and_lower_level(kit):
    v, w = kit.values(), kit.values()
    ev = ckks.Evaluator(kit.ctx, relin_key=kit.rk)
    a, c = kit.enc.encrypt(v), kit.enc.encrypt(w)
    ct3 = ev.multiply(a, c, relinearize=False)
    assert ct3.size == 3
    back = ser.load_ciphertext(kit.ctx, ser.dump_ciphertext(ct3))
    _same_poly(back, ct3)
    assert close(kit.dec.decrypt(back), v * w)
    low = ev.rescale(ev.relinearize(back))            # level 1, scale not a power of two
    back = ser.load_ciphertext(kit.ctx, ser.dump_ciphertext(low))
    _same_poly(back, low)
    assert back.level == kit.ctx.max_level - 1
    assert close(kit.dec.decrypt(back), v * w)


def test_plaintext_round_trip(kit):
    v = kit.values()
    for level in range(kit.ctx.max_level + 1):
        pt = kit.ctx.encoder.encode(v, level=level)
        b = ser.dump_plaintext(pt)
        pt2 = ser.load_plaintext(kit.ctx, b)
        _same_poly(pt, pt2)
        assert ser.dump_plaintext(pt2) == b
        _same_poly(ckks.Plaintext.from_bytes(kit.ctx, pt.to_bytes()), pt)
        assert close(kit.ctx.encoder.decode(pt2).real, v)


@pytest.mark.parametrize("which", ["kit", "secure"])
def test_public_key_round_trip_encrypts(which, request):
    k = request.getfixturevalue(which)
    b = ser.dump_public_key(k.pk)
    pk = ser.load_public_key(k.ctx, b)
    assert isinstance(pk, ckks.PublicKey) and pk.context_id == k.ctx.fingerprint
    assert np.array_equal(pk.data, k.pk.data) and pk.data.shape == k.pk.data.shape
    assert ser.dump_public_key(pk) == b
    v = k.values()
    assert close(k.dec.decrypt(ckks.Encryptor(k.ctx, pk).encrypt(v)), v)


@pytest.mark.parametrize("which", ["kit", "secure"])
def test_relin_key_round_trip_multiplies(which, request):
    k = request.getfixturevalue(which)
    b = ser.dump_relin_key(k.rk)
    rk = ser.load_relin_key(k.ctx, b)
    assert isinstance(rk, ckks.RelinKey) and rk.context_id == k.ctx.fingerprint
    assert np.array_equal(rk.data, k.rk.data) and rk.data.shape == k.rk.data.shape
    assert ser.dump_relin_key(rk) == b
    v, w = k.values(), k.values()
    ev = ckks.Evaluator(k.ctx, relin_key=rk)
    out = ev.rescale(ev.multiply(k.enc.encrypt(v), k.enc.encrypt(w)))
    assert out.size == 2
    assert close(k.dec.decrypt(out), v * w)


@pytest.mark.parametrize("which", ["kit", "secure"])
def test_galois_keys_round_trip_rotate(which, request):
    k = request.getfixturevalue(which)
    b = ser.dump_galois_keys(k.gk)
    gk = ser.load_galois_keys(k.ctx, b)
    assert isinstance(gk, ckks.GaloisKeys) and gk.context_id == k.ctx.fingerprint
    assert gk.elements == k.gk.elements
    for g in k.gk.elements:
        assert isinstance(gk.get(g), ckks.SwitchingKey) and gk.get(g).context_id == k.ctx.fingerprint
        assert np.array_equal(gk.get(g).data, k.gk.get(g).data)
    assert ser.dump_galois_keys(gk) == b
    v = k.values()
    ev = ckks.Evaluator(k.ctx, galois_keys=gk)
    ct = k.enc.encrypt(v)
    steps = [1, 2, -3] if which == "kit" else [1]
    for s in steps:
        assert close(k.dec.decrypt(ev.rotate(ct, s)), np.roll(v, -s))
    assert close(k.dec.decrypt(ev.conjugate(ct)), v)


def test_empty_galois_keys(kit):
    empty = kit.kg.galois_keys([])
    b = ser.dump_galois_keys(empty)
    gk = ser.load_galois_keys(kit.ctx, b)
    assert gk.elements == [] and gk.context_id == kit.ctx.fingerprint
    assert ser.dump_galois_keys(gk) == b
    raises(lambda d: ser.load_galois_keys(kit.ctx, d), b + b"\0")


def test_secret_key_only_through_explicit_calls(kit, blobs):
    b = ser.dump_secret_key(kit.sk)
    sk = ser.load_secret_key(kit.ctx, b)
    assert isinstance(sk, ckks.SecretKey) and sk.context_id == kit.ctx.fingerprint
    assert np.array_equal(sk.data, kit.sk.data)
    assert ser.dump_secret_key(sk) == b
    v = kit.values()
    assert close(ckks.Decryptor(kit.ctx, sk).decrypt(kit.enc.encrypt(v)), v)
    with pytest.raises(TypeError):
        pickle.dumps(kit.sk)
    # no other dumper takes a secret key, no other loader reads one
    for dump in (ser.dump_public_key, ser.dump_relin_key, ser.dump_galois_keys,
                 ser.dump_ciphertext, ser.dump_plaintext, ser.dump_parameters):
        with pytest.raises(TypeError, match="SecretKey"):
            dump(kit.sk)
    for name, (_, load) in blobs.items():
        if name != "secret_key":
            raises(load, b, match="secret")
    with pytest.raises(TypeError):
        ser.dump_secret_key(kit.pk)


# ---------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------
NAMES = ["parameters", "ciphertext", "ciphertext3", "plaintext", "public_key", "relin_key",
         "galois_keys", "secret_key"]


@settings(max_examples=150)
@given(name=st.sampled_from(NAMES), frac=st.floats(0, 1, exclude_max=True))
def test_truncated_raises(blobs, name, frac):
    b, load = blobs[name]
    cut = int(frac * len(b))
    raises(load, b[:cut])


@settings(max_examples=150)
@given(name=st.sampled_from(NAMES), data=st.data())
def test_flipped_header_byte_raises(blobs, name, data):
    b, load = blobs[name]
    pos = data.draw(st.integers(0, header_end(b) + 3), label="pos")
    mask = data.draw(st.integers(1, 255), label="mask")
    bad = bytearray(b)
    bad[pos] ^= mask
    raises(load, bytes(bad))


@settings(max_examples=150)
@given(name=st.sampled_from(NAMES), data=st.data())
def test_flipped_payload_byte_raises(blobs, name, data):
    b, load = blobs[name]
    pos = data.draw(st.integers(header_end(b) + 4, len(b) - 1), label="pos")
    bad = bytearray(b)
    bad[pos] ^= data.draw(st.integers(1, 255), label="mask")
    raises(load, bytes(bad))


@settings(max_examples=150)
@given(name=st.sampled_from(NAMES), extra=st.binary(min_size=1, max_size=64))
def test_appended_bytes_raise(blobs, name, extra):
    b, load = blobs[name]
    raises(load, b + extra, match="trailing")


@given(junk=st.binary(max_size=200))
def test_random_bytes_raise(blobs, junk):
    for name in NAMES:
        raises(blobs[name][1], junk)
        raises(blobs[name][1], ser.MAGIC + junk)


@pytest.mark.parametrize("name", NAMES)
def test_not_bytes_raises(blobs, name):
    load = blobs[name][1]
    for junk in (None, "HEMETCK", 12, [1, 2], np.zeros(8, dtype=np.uint64)):
        raises(load, junk, match="expected bytes")


@pytest.mark.parametrize("name", NAMES)
def test_magic_version_kind(blobs, name):
    b, load = blobs[name]
    bad = bytearray(b)
    bad[0] ^= 0x01
    raises(load, bytes(bad), match="magic")
    raises(load, b"XXXXXXXX" + b[8:], match="magic")
    for version in (0, 2, 0xFFFF):
        raises(load, patch(b, 8, "<H", version), match="version")
    raises(load, patch(b, 10, "<B", 99), match="kind")
    raises(load, patch(b, 11, "<B", 1), match="flags")


def test_wrong_kind_raises(kit, blobs):
    ct, _ = blobs["ciphertext"]
    raises(lambda d: ser.load_plaintext(kit.ctx, d), ct, match="expected plaintext, got ciphertext")
    raises(lambda d: ser.load_relin_key(kit.ctx, d), blobs["galois_keys"][0], match="expected")
    raises(ser.load_parameters, ct, match="expected parameters")


def flat(obj):
    if isinstance(obj, ckks.GaloisKeys):
        return np.stack([obj.get(g).data for g in obj.elements])
    return obj.data


def _residue_offset(b: bytes, word: int) -> int:
    return header_end(b) + 4 + 8 * word


@pytest.mark.parametrize("name,row", [("ciphertext", 1), ("ciphertext3", 2), ("plaintext", 0),
                                      ("public_key", 2), ("relin_key", 3), ("galois_keys", 3),
                                      ("secret_key", 3)])
def test_residue_not_below_prime_raises(kit, blobs, name, row):
    b, load = blobs[name]
    n = kit.ctx.n
    shape = flat(load(b)).shape
    rows = shape[-2]
    assert row < rows
    q = int(kit.ctx.q_all[row])
    # last polynomial, chosen row, a middle coefficient
    word = (math.prod(shape[:-2]) - 1) * rows * n + row * n + n // 2
    for value in (q, q + 1, 2 ** 64 - 1):
        bad = bytearray(b)
        struct.pack_into("<Q", bad, _residue_offset(b, word), value)
        msg = raises(load, bytes(bad), match="not below its prime")
        assert str(q) in msg and f"row {row}," in msg
        raises(load, reseal(bytes(bad)), match="not below its prime")
    bad = bytearray(b)
    struct.pack_into("<Q", bad, _residue_offset(b, word), q - 1)
    raises(load, bytes(bad), match="checksum")          # in range, but corrupted
    assert flat(load(reseal(bytes(bad)))).reshape(-1)[word] == q - 1


def test_another_context_raises(kit, other):
    v = other.values()
    ct = other.enc.encrypt(v)
    assert ct.data.shape == kit.enc.encrypt(v).data.shape     # same shapes, other primes
    cases = [(ser.dump_ciphertext(ct), ser.load_ciphertext),
             (ser.dump_plaintext(other.ctx.encoder.encode(v)), ser.load_plaintext),
             (ser.dump_public_key(other.pk), ser.load_public_key),
             (ser.dump_relin_key(other.rk), ser.load_relin_key),
             (ser.dump_galois_keys(other.gk), ser.load_galois_keys),
             (ser.dump_secret_key(other.sk), ser.load_secret_key)]
    for b, load in cases:
        raises(lambda d: load(kit.ctx, d), b, match="belongs to another context")
        load(other.ctx, b)                                      # fine in its own context


def test_crafted_ciphertext_fields(kit, blobs):
    b, load = blobs["ciphertext"]
    L = kit.ctx.max_level
    raises(load, patch(b, 28, "<H", L + 1), match="level")
    raises(load, patch(b, 28, "<H", 0xFFFF), match="level")
    raises(load, patch(b, 28, "<H", L - 1), match="inconsistent with level")
    for size in (0, 1, 4, 0xFFFF):
        raises(load, patch(b, 30, "<H", size), match="size")
    raises(load, patch(b, 32, "<H", L), match="inconsistent with level")
    raises(load, patch(b, 34, "<B", kit.ctx.log_n + 1), match="ring degree")
    raises(load, patch(b, 35, "<B", 1), match="reserved")
    for scale in (math.inf, -math.inf, math.nan, 0.0, -0.0, 0.5, -2.0 ** 40):
        raises(load, patch(b, 36, "<d", scale), match="scale")
    raises(load, patch(b, 36, "<d", 2.0 ** (60 * (L + 2) + 1)), match="absurd")
    # a consistent lower-level object with the payload cut accordingly still loads
    rows = L
    body = b[HEADER + 4: HEADER + 4 + 8 * 2 * (L + 1) * kit.ctx.n]
    arr = np.frombuffer(body, dtype="<u8").reshape(2, L + 1, kit.ctx.n)[:, :rows]
    crafted = bytearray(b[:HEADER + 4]) + arr.tobytes() + b"\0\0\0\0"
    struct.pack_into("<HHH", crafted, 28, rows - 1, 2, rows)
    ct = load(reseal(bytes(crafted)))
    assert ct.level == rows - 1 and np.array_equal(ct.data, arr)


def test_crafted_key_fields(kit, blobs):
    pkb, load_pk = blobs["public_key"]
    raises(load_pk, patch(pkb, 28, "<H", 0), match="level")
    raises(load_pk, patch(pkb, 30, "<H", 3), match="polynomials")
    raises(load_pk, patch(pkb, 36, "<d", 1.0), match="scale")
    rkb, load_rk = blobs["relin_key"]
    raises(load_rk, patch(rkb, 30, "<H", 1), match="digits")
    raises(load_rk, patch(rkb, 32, "<H", 3), match="rows")
    raises(load_rk, patch(rkb, 28, "<H", 1), match="level")
    raises(load_rk, patch(rkb, 36, "<d", -0.0), match="scale")
    skb, load_sk = blobs["secret_key"]
    raises(load_sk, patch(skb, 30, "<H", 2), match="polynomials")


def test_crafted_galois_elements(kit, blobs):
    b, load = blobs["galois_keys"]
    two_n = 2 * kit.ctx.n
    elements = np.frombuffer(b[HEADER:HEADER + 8 * len(kit.gk.elements)], dtype="<u8")
    assert list(elements) == kit.gk.elements
    for g in (0, 2, two_n, two_n + 1, 2 ** 64 - 1):
        raises(load, patch(b, HEADER, "<Q", g), match="Galois element")
    raises(load, patch(b, HEADER + 8, "<Q", int(elements[0])), match="duplicate")
    raises(load, patch(b, 30, "<H", 0), match="empty")


def test_crafted_parameters(kit):
    b = ser.dump_parameters(kit.params)
    load = ser.load_parameters
    raises(load, patch(b, 28, "<B", 11), match="fingerprint")            # log_n
    raises(load, patch(b, 32, "<H", 3), match="primes")                  # depth
    raises(load, patch(b, 32, "<H", 60000), match="depth")
    raises(load, patch(b, 34, "<H", 0), match="dnum")
    raises(load, patch(b, 34, "<H", 9), match="dnum")
    raises(load, patch(b, 36, "<B", 2), match="allow_insecure")
    raises(load, patch(b, 37, "<B", 1), match="reserved")
    raises(load, patch(b, 40, "<I", 99), match="primes")
    raises(load, patch(b, 36, "<B", 0), match="invalid parameters")      # insecure without opt-in
    bad = bytearray(b)
    struct.pack_into("<Q", bad, HEADER + 4, kit.params.q[0] + 2 * kit.ctx.n)
    raises(load, reseal(bytes(bad)), match="fingerprint")                # stored primes altered


def test_dump_rejects_malformed_objects(kit):
    ct = kit.enc.encrypt(kit.values())
    with pytest.raises(TypeError):
        ser.dump_ciphertext(kit.ctx.encoder.encode(kit.values()))
    with pytest.raises(SerializationError):
        ser.dump_ciphertext(ckks.Ciphertext(ct.data[:1], ct.level, ct.scale, ct.context_id))
    with pytest.raises(SerializationError):
        ser.dump_ciphertext(ckks.Ciphertext(ct.data, ct.level - 1, ct.scale, ct.context_id))
    with pytest.raises(SerializationError):
        ser.dump_ciphertext(ckks.Ciphertext(ct.data.astype(np.int64), ct.level, ct.scale, ct.context_id))
    with pytest.raises(SerializationError):
        ser.dump_ciphertext(ckks.Ciphertext(ct.data, ct.level, ct.scale, b"short"))
    with pytest.raises(TypeError):
        ser.load_ciphertext(kit.params, ser.dump_ciphertext(ct))


def test_key_and_parameter_methods_round_trip():
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ckks.SecurityWarning)
        params = ckks.Parameters(log_n=10, depth=2, allow_insecure=True)
        assert ckks.Parameters.from_bytes(params.to_bytes()) == params
    ctx = ckks.Context(params)
    kg = ckks.KeyGenerator(ctx)
    pk = ckks.PublicKey.from_bytes(ctx, kg.public_key.to_bytes())
    assert np.array_equal(pk.data, kg.public_key.data)
    rk = kg.relin_key()
    assert np.array_equal(ckks.RelinKey.from_bytes(ctx, rk.to_bytes()).data, rk.data)
    gk = kg.galois_keys([1, 3])
    gk2 = ckks.GaloisKeys.from_bytes(ctx, gk.to_bytes())
    assert gk2.elements == gk.elements
    assert all(np.array_equal(gk2.get(g).data, gk.get(g).data) for g in gk.elements)
    assert not hasattr(kg.secret_key, "to_bytes")


def test_galois_key_bytes_follow_the_documented_layout(kit):
    """Pinned against the module docstring's format: header, elements, header CRC, the keys
    stacked in increasing element order, payload CRC (the keys are written one by one, never
    stacked, so this checks the order and the running checksum)."""
    keys = kit.gk.keys
    elements = sorted(keys)
    first = keys[elements[0]].data
    header = (ser.MAGIC + struct.pack("<HBB", ser.FORMAT_VERSION, int(ser.Kind.GALOIS_KEYS), 0)
              + kit.ctx.fingerprint
              + struct.pack("<HHHBBd", 0, len(elements), first.shape[-2],
                            first.shape[-1].bit_length() - 1, 0, 0.0)
              + np.array(elements, dtype="<u8").tobytes())
    payload = np.stack([keys[g].data for g in elements]).astype("<u8").tobytes()
    want = (header + struct.pack("<I", zlib.crc32(header)) + payload
            + struct.pack("<I", zlib.crc32(payload)))
    assert ser.dump_galois_keys(kit.gk) == want
    # the same bytes as pieces, the keys' among them as views of the key arrays (no copy)
    pieces = ser.dump_galois_keys_pieces(kit.gk)
    assert b"".join(pieces) == want
    for g in elements:
        assert any(np.shares_memory(np.frombuffer(q, dtype=np.uint8), keys[g].data)
                   for q in pieces if len(q) == keys[g].data.nbytes)
