"""The HTTP service end to end: a real `hemet serve` process on 127.0.0.1, concurrent clients,
bad requests of every kind, and session expiry."""
import http.client
import json
import os
import queue
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
import pytest

from hemet.reference import forward
from hemet.roles import Client, MsgKind, ProtocolError, Server, pack_message, unpack_message
from hemet.service import HTTPClient, InferenceService, ServiceError, make_http_server

from .conftest import tiny_model

pytestmark = pytest.mark.filterwarnings("ignore::ckks.SecurityWarning")

CLI = [sys.executable, "-c", "import sys; from hemet.cli import main; sys.exit(main(sys.argv[1:]))"]


def _start_server(model_file, *extra):
    """`hemet serve` on a free port (--port 0): returns (process, url) once /health answers."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(CLI + ["serve", "--model", model_file, "--host", "127.0.0.1",
                                   "--port", "0", "--insecure", "--log-n", "10", "--dnum", "1",
                                   *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
    deadline = time.monotonic() + 120
    url = None
    seen = []
    while url is None:
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError("server did not start:\n" + "".join(seen))
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            continue
        seen.append(line)
        if " on http://" in line:
            url = line.split(" on ", 1)[1].split()[0]
    for _ in range(100):
        try:
            with urllib.request.urlopen(url + "/health", timeout=5) as r:
                if json.loads(r.read())["status"] == "ok":
                    return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("no /health answer")


def _stop(proc):
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def service(model_file):
    proc, url = _start_server(model_file, "--max-sessions", "6", "--ttl", "120")
    try:
        yield url
    finally:
        _stop(proc)


def _raw(url, method, path, body=None, headers=None, send_body=True):
    host, port = url.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.putrequest(method, path)
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        if body is not None and "Content-Length" not in (headers or {}):
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        if body is not None and send_body:
            conn.send(body)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def test_concurrent_clients_and_bad_requests(service, model):
    http = HTTPClient(service)
    info = http.model_info()
    rng = np.random.default_rng(11)
    images = [rng.uniform(0, 1, (3, 8, 8)) for _ in range(10)]
    want = [forward(model, x[None])[0] for x in images]
    results, errors = {}, []

    def run_client(k):
        try:
            client = Client(info)
            sid = http.open_session(client.key_bundle(), client.key_parts())
            out = []
            for j, x in enumerate(images):
                out.append(client.decrypt(http.infer(sid, client.encrypt(x))))
            results[k] = out
            http.close_session(sid)
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    t0 = time.perf_counter()
    threads = [threading.Thread(target=run_client, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    elapsed = time.perf_counter() - t0
    assert not errors, errors
    assert sorted(results) == [0, 1, 2]
    for k in range(3):
        assert len(results[k]) == 10
        for got, w in zip(results[k], want):
            assert np.max(np.abs(got - w)) < 1e-3 * max(1.0, np.abs(w).max())
            assert np.argmax(got) == np.argmax(w)
    health = http.health()
    assert health["inferences"] >= 30 and health["sessions"] == 0
    print(f"\n3 clients x 10 requests: {elapsed:.1f} s")

    # ---- bad requests: each answered with a 4xx JSON error; the server keeps serving
    client = Client(info)
    bundle = client.key_bundle()
    parts = list(client.key_parts())
    sid = http.open_session(bundle, parts)
    incomplete = http.open_session(bundle, parts[:-1])
    req = client.encrypt(images[0])
    limit = health["limits"]["request"]
    other = Client(Server(tiny_model(seed=9), client.info.params).public_info())
    stranger = Client(info)
    bad = {
        "malformed bundle": ("POST", "/sessions", b"not a key bundle", 400),
        "malformed request": ("POST", f"/sessions/{sid}/infer", req[:-8], 400),
        "unknown session": ("POST", "/sessions/" + "0" * 32 + "/infer", req, 404),
        "unknown path": ("GET", "/nothing", None, 404),
        "wrong method": ("GET", "/sessions", None, 405),
        "other model's keys": ("POST", "/sessions", other.key_bundle(), 409),
        "another client's key part": ("POST", f"/sessions/{incomplete}/keys",
                                      next(iter(stranger.key_parts())), 409),
        "Galois keys missing": ("POST", f"/sessions/{incomplete}/infer", req, 409),
        "duplicate key part": ("POST", f"/sessions/{incomplete}/keys", parts[0], 422),
        "another client's ciphertext": ("POST", f"/sessions/{sid}/infer", stranger.encrypt(images[0]), 409),
        "no ciphertexts": ("POST", f"/sessions/{sid}/infer",
                           pack_message(MsgKind.REQUEST, [(t, bytes(d)) for t, d in
                                                          unpack_message(req, MsgKind.REQUEST)][:2]), 422),
        "oversized request": ("POST", f"/sessions/{sid}/infer", req + b"\0" * 1024, 413),
    }
    for name, (method, path, body, status) in bad.items():
        got, raw = _raw(service, method, path, body)
        assert got == status, (name, got, raw)
        assert "error" in json.loads(raw), name
        assert client.decrypt(http.infer(sid, req)).shape == (4,), name   # still serving
    # a huge claimed size is refused from the headers alone (the body is never sent)
    got, raw = _raw(service, "POST", f"/sessions/{sid}/infer", b"",
                    {"Content-Length": str(10 ** 12)}, send_body=False)
    assert got == 413 and "limit" in json.loads(raw)["error"]
    got, raw = _raw(service, "POST", "/sessions", None)           # no Content-Length
    assert got == 411
    assert limit == len(req)
    with pytest.raises(ServiceError) as e:                        # the client-side error type
        http.infer("f" * 32, req)
    assert e.value.status == 404 and isinstance(e.value, ProtocolError)
    got = client.decrypt(http.infer(sid, req))
    assert np.argmax(got) == np.argmax(want[0])
    http.close_session(sid)
    with pytest.raises(ServiceError) as e:
        http.infer(sid, req)
    assert e.value.status == 404
    assert http.health()["status"] == "ok"


def test_client_command(service, tmp_path, model):
    x = np.random.default_rng(3).uniform(0, 1, (3, 8, 8))
    np.save(tmp_path / "img.npy", x)
    r = subprocess.run(CLI + ["client", "--server", service, "--image", str(tmp_path / "img.npy"),
                              "--json", "--repeat", "2"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    want = forward(model, x[None])[0]
    assert res["class"] == int(np.argmax(want))
    np.testing.assert_allclose(res["logits"], want, atol=1e-3)
    assert len(res["inference_seconds"]) == 2
    r = subprocess.run(CLI + ["client", "--server", "http://127.0.0.1:9", "--image", "0"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "cannot reach" in r.stderr


def test_sessions_expire_and_store_is_bounded(server, model):
    """In-process HTTP server (threads) with a 0.5 s TTL and room for 2 sessions."""
    service = InferenceService(server, max_sessions=2, ttl=0.5)
    httpd = make_http_server(service, "127.0.0.1", 0)
    t = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        url = "http://127.0.0.1:%d" % httpd.server_address[1]
        http = HTTPClient(url)
        client = Client(http.model_info())
        bundle, parts = client.key_bundle(), list(client.key_parts())
        a = http.open_session(bundle, parts)
        http.open_session(bundle)
        with pytest.raises(ServiceError) as e:
            http.open_session(bundle)
        assert e.value.status == 503
        session = service.store._d[a][0]
        req = client.encrypt(np.zeros((3, 8, 8)))
        assert client.decrypt(http.infer(a, req)).shape == (4,)
        time.sleep(0.7)
        with pytest.raises(ServiceError) as e:
            http.infer(a, req)
        assert e.value.status == 404 and "expired" in str(e.value)
        assert session.evaluator is None and session.backend is None     # keys dropped
        assert http.health()["sessions"] == 0
        b = http.open_session(bundle, parts)                               # room again
        assert client.decrypt(http.infer(b, req)).shape == (4,)
    finally:
        httpd.shutdown()
        httpd.server_close()
