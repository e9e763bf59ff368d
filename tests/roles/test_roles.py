"""Client / Server roles and the message formats, in process."""
import gc
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import ckks
from ckks import serialization as ser
from hemet.reference import forward
from hemet.roles import (GALOIS_CHUNK, Client, ModelInfo, MsgKind, ProtocolError, Server, Session, pack_message,
                         unpack_message)
from hemet.service import SessionStore, StoreFull

from hemet.he.program import compile_model

from .conftest import insecure_params, tiny_model

pytestmark = pytest.mark.filterwarnings("ignore::ckks.SecurityWarning")


def test_round_trip_matches_reference(server, client, bundle, model, image, open_session):
    session = open_session()
    report = []
    resp = server.evaluate(session, client.encrypt(image), report=report)
    logits = client.decrypt(resp)
    want = forward(model, image[None])[0]
    assert logits.shape == want.shape
    assert np.max(np.abs(logits - want)) < 1e-3 * max(1.0, np.abs(want).max())
    assert report and all("seconds" in r for r in report)
    # uint8 HWC images are accepted too (scaled to [0, 1])
    u8 = (image * 255).round().astype(np.uint8).transpose(1, 2, 0)
    got = client.decrypt(server.evaluate(session, client.encrypt(u8)))
    want = forward(model, (u8.transpose(2, 0, 1) / 255.0)[None])[0]
    assert np.argmax(got) == np.argmax(want)


def test_keys_are_exactly_the_model_keys(server, client, bundle, parts, open_session):
    assert [t for t, _ in unpack_message(bundle, MsgKind.KEY_BUNDLE)] == ["PARM", "FPRT", "PKEY", "RKEY"]
    n = len(server.program.rotation_steps)
    assert n > GALOIS_CHUNK and len(parts) == -(-n // GALOIS_CHUNK)
    elements = set()
    for p in parts:
        secs = dict(unpack_message(p, MsgKind.KEY_PART))
        assert list(secs) == ["FPRT", "KEYI", "GKEY"]
        assert ser.peek_kind(secs["GKEY"]) == ser.Kind.GALOIS_KEYS
        elements |= set(ser.load_galois_keys(server.ctx, secs["GKEY"]).keys)
        assert len(p) <= server.limits["key_part"]
    assert elements == server.info.galois_elements
    assert len(parts[0]) == server.limits["key_part"]          # the limits are exact sizes
    assert len(bundle) <= server.limits["key_bundle"]
    assert len(client.encrypt(np.zeros((3, 8, 8)))) == server.limits["request"]
    # incomplete sessions do not evaluate; duplicate parts are refused
    s = server.open_session(bundle)
    server.add_keys(s, parts[0])
    with pytest.raises(ProtocolError, match="incomplete") as e:
        server.evaluate(s, client.encrypt(np.zeros((3, 8, 8))))
    assert e.value.status == 409
    with pytest.raises(ProtocolError, match="already holds") as e:
        server.add_keys(s, parts[0])
    assert e.value.status == 422
    for p in parts[1:]:
        server.add_keys(s, p)
    assert s.ready and not s.missing


def test_capped_key_plan_still_evaluates_exactly(model, params, image):
    """With fewer Galois keys than rotation steps, the client makes only the kept keys and the
    server runs each dropped step as rotations by kept ones: same logits."""
    all_steps = len(compile_model(model, params.slots).rotation_steps)
    cap = max(params.log_n - 1, all_steps // 2)
    srv = Server(model, params, max_galois_keys=cap)
    assert len(srv.info.rotation_steps) <= cap < all_steps and srv.rotation_paths
    c = Client(srv.public_info())
    s = srv.open_session(c.key_bundle())
    for p in c.key_parts():
        srv.add_keys(s, p)
    assert s.ready and len(srv.info.galois_elements) <= cap
    got = c.decrypt(srv.evaluate(s, c.encrypt(image)))
    want = forward(model, image[None])[0]
    assert np.max(np.abs(got - want)) < 1e-3 * max(1.0, np.abs(want).max())
    assert srv.fingerprint != Server(model, params, max_galois_keys=None).fingerprint


def test_small_key_sets_travel_in_the_bundle(params):
    from hemet import layers as L
    from hemet.graph import INPUT, Graph
    from hemet.modelfile import Model
    g = Graph("one-dense", [L.Node("gap", L.GlobalAvgPool(), (INPUT,)), L.Node("fc", L.Linear(3, 2), ("gap",))],
              2, input_shape=(3, 2, 2))
    srv = Server(Model(g, {"fc.weight": np.eye(2, 3), "fc.bias": np.zeros(2)}), params)
    c = Client(srv.public_info())
    assert 0 < len(srv.info.rotation_steps) <= GALOIS_CHUNK and not list(c.key_parts())
    s = srv.open_session(c.key_bundle())
    assert s.ready
    x = np.random.default_rng(0).uniform(0, 1, (3, 2, 2))
    np.testing.assert_allclose(c.decrypt(srv.evaluate(s, c.encrypt(x))), x.mean(axis=(1, 2))[:2], atol=1e-4)


def test_public_info_has_no_weights(server, model):
    info = server.public_info()
    assert len(info) < 8192
    for w in model.weights.values():
        assert np.asarray(w, np.float64).tobytes()[:16] not in info
    back = ModelInfo.from_bytes(info)
    assert back == server.info


def _reachable(root, limit=200_000):
    seen, stack, out = set(), [root], []
    while stack and len(seen) < limit:
        o = stack.pop()
        if id(o) in seen or isinstance(o, type):
            continue
        seen.add(id(o))
        out.append(o)
        stack.extend(gc.get_referents(o))
    return out


def test_server_never_holds_a_secret_key(server, client, bundle, model, params, open_session):
    session = open_session()
    server.evaluate(session, client.encrypt(np.zeros((3, 8, 8))))
    for root in (server, session):
        assert not any(isinstance(o, ckks.SecretKey) for o in _reachable(root))
    sk = client.secret_key
    with pytest.raises(TypeError):
        server.extra = sk
    with pytest.raises(TypeError):
        session.keys = [sk]
    with pytest.raises(TypeError):
        server.open_session(sk)
    with pytest.raises(TypeError):
        server.evaluate(session, sk)
    with pytest.raises(TypeError):
        Server(model, params, layout=sk)
    with pytest.raises(TypeError):
        pack_message(MsgKind.KEY_BUNDLE, [("PKEY", sk)])


def _sections(data, kind):
    return [(t, bytes(d)) for t, d in unpack_message(data, kind)]


def _replace(data, kind, tag, new):
    return pack_message(kind, [(t, new if t == tag else d) for t, d in _sections(data, kind)])


def test_secret_key_bytes_are_refused(server, client, bundle, parts):
    sk_bytes = ser.dump_secret_key(client.secret_key)
    for tag in ("PKEY", "RKEY"):
        with pytest.raises(ProtocolError, match="SECRET") as e:
            server.open_session(_replace(bundle, MsgKind.KEY_BUNDLE, tag, sk_bytes))
        assert e.value.status == 400
    s = server.open_session(bundle)
    with pytest.raises(ProtocolError, match="SECRET") as e:
        server.add_keys(s, _replace(parts[0], MsgKind.KEY_PART, "GKEY", sk_bytes))
    assert e.value.status == 400


@pytest.mark.parametrize("mutate, status, match", [
    (lambda b: b[:-1], 400, "checksum"),
    (lambda b: b[:10], 400, "truncated"),
    (lambda b: b"XXXXXXXX" + b[8:], 400, "magic"),
    (lambda b: b"", 400, "truncated"),
    (lambda b: bytes([b[0] ^ 1]) + b[1:], 400, "magic"),
    (lambda b: b[:100] + bytes([b[100] ^ 0xFF]) + b[101:], 400, "checksum"),
])
def test_malformed_bundles(server, bundle, mutate, status, match):
    with pytest.raises(ProtocolError, match=match) as e:
        server.open_session(mutate(bundle))
    assert e.value.status == status


def test_container_validation():
    good = pack_message(MsgKind.REQUEST, [("FPRT", b"x" * 16)])
    assert _sections(good, MsgKind.REQUEST) == [("FPRT", b"x" * 16)]
    with pytest.raises(ProtocolError, match="expected a key bundle"):
        unpack_message(good, MsgKind.KEY_BUNDLE)
    body = good[:-4]
    bad_len = body[:16] + struct.pack("<4sQ", b"FPRT", 1 << 40) + body[28:]
    with pytest.raises(ProtocolError, match="claims"):
        unpack_message(bad_len + struct.pack("<I", zlib.crc32(bad_len)), MsgKind.REQUEST)
    extra = body + b"junk"
    with pytest.raises(ProtocolError, match="trailing"):
        unpack_message(extra + struct.pack("<I", zlib.crc32(extra)), MsgKind.REQUEST)
    v2 = body[:8] + struct.pack("<H", 2) + body[10:]
    with pytest.raises(ProtocolError, match="version"):
        unpack_message(v2 + struct.pack("<I", zlib.crc32(v2)), MsgKind.REQUEST)
    with pytest.raises(ProtocolError, match="limit") as e:
        unpack_message(good, MsgKind.REQUEST, max_bytes=10)
    assert e.value.status == 413
    with pytest.raises(ProtocolError):
        unpack_message("text", MsgKind.REQUEST)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["FPRT", "GKEY", "CTXT"]),
                          st.lists(st.binary(max_size=40), max_size=4)), max_size=4))
def test_sections_given_as_pieces(sections):
    """A section given as a list of pieces is the section of their concatenation."""
    joined = pack_message(MsgKind.KEY_PART, [(t, b"".join(ps)) for t, ps in sections])
    assert pack_message(MsgKind.KEY_PART, sections) == joined
    assert _sections(joined, MsgKind.KEY_PART) == [(t, b"".join(ps)) for t, ps in sections]


def test_mismatched_keys(server, client, bundle, parts, model, params, open_session):
    # keys for another model (other weights: other fingerprint), same parameters
    other = Server(tiny_model(seed=9), params)
    other_client = Client(other.public_info())
    with pytest.raises(ProtocolError, match="another model") as e:
        server.open_session(other_client.key_bundle())
    assert e.value.status == 409
    # keys for other parameters
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ckks.SecurityWarning)
        p36 = ckks.Parameters(log_n=params.log_n, depth=params.depth, dnum=params.dnum, scale_bits=36,
                              allow_insecure=True)
    c36 = Client(Server(model, p36).public_info())
    with pytest.raises(ProtocolError, match="parameters") as e:
        server.open_session(c36.key_bundle())
    assert e.value.status == 409
    # a bigger ring: other parameters, and key parts refused on size alone
    c11 = Client(Server(model, insecure_params(model.graph.depth(), log_n=11)).public_info())
    with pytest.raises(ProtocolError, match="parameters") as e:
        server.open_session(c11.key_bundle())
    assert e.value.status == 409
    with pytest.raises(ProtocolError, match="limit") as e:
        server.add_keys(server.open_session(bundle), next(iter(c11.key_parts())))
    assert e.value.status == 413
    # a Galois key the model does not need (a valid ckks object)
    s = server.open_session(bundle)
    wrong = client._keygen.galois_keys([3 + max(server.info.rotation_steps)])
    with pytest.raises(ProtocolError, match="does not need") as e:
        server.add_keys(s, _replace(parts[0], MsgKind.KEY_PART, "GKEY", ser.dump_galois_keys(wrong)))
    assert e.value.status == 422
    # key parts made from another client's keys
    stranger_part = next(iter(Client(server.public_info()).key_parts()))
    with pytest.raises(ProtocolError, match="key id") as e:
        server.add_keys(s, stranger_part)
    assert e.value.status == 409
    # a request encrypted under another client's keys, sent on this client's session
    session = open_session()
    stranger = Client(server.public_info())
    with pytest.raises(ProtocolError, match="other keys") as e:
        server.evaluate(session, stranger.encrypt(np.zeros((3, 8, 8))))
    assert e.value.status == 409


def test_bad_requests(server, client, bundle, open_session):
    session = open_session()
    req = client.encrypt(np.zeros((3, 8, 8)))
    secs = _sections(req, MsgKind.REQUEST)
    with pytest.raises(ProtocolError, match="ciphertexts") as e:
        server.evaluate(session, pack_message(MsgKind.REQUEST, secs[:2]))    # none
    assert e.value.status == 422
    with pytest.raises(ProtocolError, match="limit") as e:                      # one too many
        server.evaluate(session, pack_message(MsgKind.REQUEST, secs + [secs[-1]]))
    assert e.value.status == 413
    ct = ser.load_ciphertext(server.ctx, secs[2][1])
    low = ckks.Evaluator(server.ctx).drop_level(ct, 1)
    with pytest.raises(ProtocolError, match="fresh") as e:
        server.evaluate(session, pack_message(MsgKind.REQUEST, secs[:2] + [("CTXT", ser.dump_ciphertext(low))]))
    assert e.value.status == 422
    with pytest.raises(ProtocolError, match="sections"):
        server.evaluate(session, pack_message(MsgKind.REQUEST, secs[1:]))
    corrupted = bytearray(secs[2][1])
    corrupted[-1] ^= 0xFF
    with pytest.raises(ProtocolError, match="checksum") as e:
        server.evaluate(session, pack_message(MsgKind.REQUEST, secs[:2] + [("CTXT", bytes(corrupted))]))
    assert e.value.status == 400
    with pytest.raises(ProtocolError, match="expected a request"):
        server.evaluate(session, pack_message(MsgKind.RESPONSE, secs))
    # the response is checked by the client too
    resp = server.evaluate(session, req)
    with pytest.raises(ProtocolError, match="other keys"):
        Client(server.public_info()).decrypt(resp)
    session.close()
    with pytest.raises(ProtocolError, match="closed"):
        server.evaluate(session, req)
    with pytest.raises(ProtocolError, match="closed"):
        server.add_keys(session, b"")


def test_model_info_validation(server):
    secs = _sections(server.public_info(), MsgKind.MODEL_INFO)
    import json
    doc = json.loads(secs[1][1])
    for key, value, match in [("rotation_steps", [0], "rotation_steps"),
                              ("fingerprint", "zz", "fingerprint"),
                              ("input_shape", [3, 8], "input layout"),
                              ("depth", 99, "depth")]:
        bad = dict(doc, **{key: value})
        with pytest.raises(ProtocolError, match=match):
            ModelInfo.from_bytes(pack_message(MsgKind.MODEL_INFO, [secs[0], ("INFO", json.dumps(bad).encode())]))
    bad = dict(doc)
    bad["input_layout"] = dict(doc["input_layout"], gap=3)
    with pytest.raises(ProtocolError, match="gap"):
        ModelInfo.from_bytes(pack_message(MsgKind.MODEL_INFO, [secs[0], ("INFO", json.dumps(bad).encode())]))
    # replicas: kept through the round trip, and a count that cannot fit is refused
    reps = server.program.input_layout.replicas
    assert reps > 1 and ModelInfo.from_bytes(server.public_info()).input_layout.replicas == reps
    for reps, match in [(3, "power of two"), (1 << 20, "replicas")]:
        bad = dict(doc)
        bad["input_layout"] = dict(doc["input_layout"], replicas=reps)
        with pytest.raises(ProtocolError, match=match):
            ModelInfo.from_bytes(pack_message(MsgKind.MODEL_INFO, [secs[0], ("INFO", json.dumps(bad).encode())]))
    with pytest.raises(ProtocolError, match="JSON"):
        ModelInfo.from_bytes(pack_message(MsgKind.MODEL_INFO, [secs[0], ("INFO", b"{")]))


def test_server_refuses_rotate_pool(model, params):
    with pytest.raises(ValueError, match="leak"):
        Server(model, params, global_pool="rotate")


def test_session_store_expiry_and_capacity(server, bundle, open_session):
    now = [0.0]
    store = SessionStore(max_sessions=2, ttl=10, clock=lambda: now[0])
    a, b = open_session(), open_session()
    store.add(a)
    store.add(b)
    with pytest.raises(StoreFull):
        store.add(open_session())
    now[0] = 5
    assert store.get(a.id) is a          # a used at t=5, b last at t=0
    now[0] = 12
    assert store.purge() == 1            # b expired: its keys are dropped
    assert b.evaluator is None and b.backend is None and a.backend is not None
    with pytest.raises(KeyError):
        store.get(b.id)
    assert isinstance(store.get(a.id), Session)
    now[0] = 30
    with pytest.raises(KeyError):
        store.get(a.id)
    assert a.backend is None and len(store) == 0


def test_package_exports_the_roles_lazily():
    import hemet
    from hemet import roles
    assert hemet.Client is roles.Client and hemet.Server is roles.Server
    assert issubclass(hemet.ProtocolError, ValueError)
    with pytest.raises(AttributeError):
        hemet.NoSuchThing


def test_default_parameters_cover_a_repacking_program():
    """``Server(model, repack=True)`` without parameters picks the secure set for the
    program's depth (one more than the graph's where pooled values are gathered)."""
    from hemet.layers import ConvBNAct, GlobalAvgPool, AvgPool, Conv2d, Node, Normalize
    from hemet.graph import INPUT, Graph
    from hemet.modelfile import Model
    from hemet.zoo import random_weights
    nodes = [Node("normalize", Normalize((0.5,) * 3, (0.25,) * 3), (INPUT,))]
    nodes += ConvBNAct(3, 16, 3, act="poly").nodes("c1", "normalize")
    nodes += [Node("pool", AvgPool(2), ("c1_act",))]
    nodes += ConvBNAct(16, 8, 3, act="poly").nodes("c2", "pool")
    nodes += [Node("classifier", Conv2d(8, 3, 1, 1, 0, 1, True), ("c2_act",)),
              Node("gap", GlobalAvgPool(), ("classifier",))]
    g = Graph("repack-net", nodes, 3, input_shape=(3, 32, 32))
    model = Model(g, random_weights(g, 5))
    plain = Server(model, max_galois_keys=None)
    srv = Server(model, max_galois_keys=None, repack=True)
    assert srv.program.depth == plain.program.depth + 1 == g.depth() + 1
    assert srv.params.depth == srv.program.depth and srv.params.security_bits_ok
    assert ModelInfo.from_bytes(srv.public_info()).depth == srv.program.depth
