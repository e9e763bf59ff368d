"""HTTP inference service around a :class:`hemet.roles.Server` (Python stdlib only).

Endpoints (bodies are :mod:`hemet.roles` messages, errors are JSON ``{"error": ...}``)::

    GET    /health              {"status": "ok", "model", "fingerprint", "sessions", ...}
    GET    /model               model info (parameters, layouts, rotation steps, fingerprint)
    POST   /sessions            body: key bundle     -> 201 {"session": ID, "ttl": seconds}
    POST   /sessions/ID/keys    body: key part       -> 200 {"missing": Galois keys still missing}
    POST   /sessions/ID/infer   body: request        -> 200 response (encrypted logits)
    DELETE /sessions/ID                              -> 204 (keys dropped)

Every request needs ``Content-Length`` (411 without), bounded by the exact size of a valid key
bundle or request (413 above, refused before the body is read).  Malformed bodies are 400,
unknown or expired sessions 404, keys or ciphertexts for other parameters / another model /
another session's keys 409, well-formed but unusable bodies (wrong Galois keys, wrong number
or level of ciphertexts) 422, a full session store 503.  Connections are served by threads
(``ThreadingHTTPServer``); evaluations run one at a time under one lock (the Numba workqueue
layer cannot run parallel kernels from two threads), queued rather than dropped.  Sessions
hold the keys in memory up to ``max_sessions``, each for ``ttl`` seconds after its last use;
expired sessions are dropped (keys freed) on every request and by a sweeper thread.
"""
from __future__ import annotations

import json
import re
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .roles import ProtocolError, Server, Session

__all__ = ["SessionStore", "InferenceService", "make_http_server", "serve", "HTTPClient",
           "ServiceError"]

_SESSION_PATH = re.compile(r"^/sessions/([0-9a-f]{32})(/infer|/keys)?$")


class StoreFull(Exception):
    pass


class SessionStore:
    """Sessions by id, at most ``max_sessions``, each expiring ``ttl`` seconds after last use."""

    def __init__(self, max_sessions: int = 8, ttl: float = 600.0, clock=time.monotonic):
        if max_sessions < 1 or ttl <= 0:
            raise ValueError("max_sessions must be >= 1 and ttl > 0")
        self.max_sessions = int(max_sessions)
        self.ttl = float(ttl)
        self.clock = clock
        self._d: OrderedDict[str, tuple[Session, float]] = OrderedDict()
        self._lock = threading.Lock()
        self.expired = 0

    def __len__(self):
        with self._lock:
            return len(self._d)

    def purge(self) -> int:
        """Drop expired sessions (their keys are released); returns how many."""
        now = self.clock()
        with self._lock:
            dead = [sid for sid, (_, t) in self._d.items() if now - t > self.ttl]
            for sid in dead:
                self._d.pop(sid)[0].close()
            self.expired += len(dead)
        return len(dead)

    def add(self, session: Session) -> None:
        self.purge()
        with self._lock:
            if len(self._d) >= self.max_sessions:
                raise StoreFull(f"the server holds its maximum of {self.max_sessions} sessions; "
                                "retry later")
            self._d[session.id] = (session, self.clock())

    def get(self, sid: str) -> Session:
        self.purge()
        with self._lock:
            if sid not in self._d:
                raise KeyError(sid)
            s, _ = self._d[sid]
            self._d[sid] = (s, self.clock())
            self._d.move_to_end(sid)
            return s

    def drop(self, sid: str) -> bool:
        with self._lock:
            item = self._d.pop(sid, None)
        if item:
            item[0].close()
        return item is not None


class InferenceService:
    """Request handling independent of HTTP: ``handle(method, path, body) -> (status, type, body)``."""

    def __init__(self, server: Server, max_sessions: int = 8, ttl: float = 600.0,
                 max_inflight: int = 16):
        self.server = server
        self.store = SessionStore(max_sessions, ttl)
        # requests with bodies in memory at once (each at most a key part or a request):
        # bounds the memory a crowd of clients can pin; beyond it, 503 after a short wait
        self.inflight = threading.BoundedSemaphore(max_inflight)
        self.eval_lock = threading.Lock()   # one evaluation at a time, waiting threads queue
        self.stats = {"requests": 0, "inferences": 0, "errors": 0, "sessions_opened": 0}
        self._stats_lock = threading.Lock()

    def body_limit(self, method: str, path: str) -> int:
        if method == "POST" and path == "/sessions":
            return self.server.limits["key_bundle"]
        if method == "POST" and _SESSION_PATH.match(path) and path.endswith("/infer"):
            return self.server.limits["request"]
        if method == "POST" and _SESSION_PATH.match(path) and path.endswith("/keys"):
            return self.server.limits["key_part"]
        return 0

    def _count(self, key):
        with self._stats_lock:
            self.stats[key] += 1

    def handle(self, method: str, path: str, body: bytes):
        self._count("requests")
        try:
            return self._route(method, path, body)
        except ProtocolError as e:
            self._count("errors")
            return _json(e.status, {"error": str(e)})

    def _route(self, method, path, body):
        path = path.split("?", 1)[0]
        if path == "/health":
            if method != "GET":
                raise ProtocolError(f"{method} not allowed on /health", 405)
            s = self.server
            return _json(200, {"status": "ok", "model": s.info.name,
                               "fingerprint": s.fingerprint.hex(), "sessions": len(self.store),
                               "max_sessions": self.store.max_sessions, "ttl": self.store.ttl,
                               "limits": s.limits, **self.stats})
        if path == "/model":
            if method != "GET":
                raise ProtocolError(f"{method} not allowed on /model", 405)
            return 200, "application/octet-stream", self.server.public_info()
        if path == "/sessions":
            if method != "POST":
                raise ProtocolError(f"{method} not allowed on /sessions", 405)
            session = self.server.open_session(body, secrets.token_hex(16))
            try:
                self.store.add(session)
            except StoreFull as e:
                session.close()
                raise ProtocolError(str(e), 503) from None
            self._count("sessions_opened")
            return _json(201, {"session": session.id, "ttl": self.store.ttl})
        m = _SESSION_PATH.match(path)
        if not m:
            raise ProtocolError(f"no such endpoint {path!r}", 404)
        sid, action = m.group(1), m.group(2)
        if not action:
            if method != "DELETE":
                raise ProtocolError(f"{method} not allowed on a session (DELETE ends it)", 405)
            if not self.store.drop(sid):
                raise ProtocolError("unknown or expired session", 404)
            return 204, "application/json", b""
        if method != "POST":
            raise ProtocolError(f"{method} not allowed on /sessions/ID{action}", 405)
        try:
            session = self.store.get(sid)
        except KeyError:
            raise ProtocolError("unknown or expired session: open a new one with POST /sessions",
                                404) from None
        if action == "/keys":
            with session_lock(session):
                missing = self.server.add_keys(session, body)
            return _json(200, {"missing": missing})
        self.server.parse_request(session, body)      # validate before queueing
        with self.eval_lock:
            if session.closed:
                raise ProtocolError("the session expired while the request waited", 404)
            out = self.server.evaluate(session, body)
        self._count("inferences")
        return 200, "application/octet-stream", out


_SESSION_LOCKS_GUARD = threading.Lock()


def session_lock(session) -> threading.Lock:
    """A lock per session: key parts of one session are added one at a time."""
    with _SESSION_LOCKS_GUARD:
        lock = session.__dict__.get("_lock")
        if lock is None:
            lock = threading.Lock()
            object.__setattr__(session, "_lock", lock)
        return lock


def _json(status: int, obj) -> tuple:
    return status, "application/json", json.dumps(obj).encode()


class _Handler(BaseHTTPRequestHandler):
    server_version = "hemet-serve/1"
    protocol_version = "HTTP/1.1"
    timeout = 120  # seconds of socket inactivity before a connection is dropped

    def log_message(self, fmt, *args):  # quiet unless --verbose
        if getattr(self.server, "verbose", False):
            super().log_message(fmt, *args)

    def _send(self, status, ctype, body):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        if status >= 400:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def _drain(self, n: int, cap: int = 64 << 20) -> None:
        """Read and discard a refused body (up to ``cap`` bytes) so the client, still sending,
        gets the error answer instead of a reset connection; beyond the cap, just close."""
        self.close_connection = True
        left = min(n, cap)
        self.connection.settimeout(5)
        try:
            while left > 0:
                chunk = self.rfile.read(min(left, 1 << 20))
                if not chunk:
                    break
                left -= len(chunk)
        except OSError:
            pass

    def _dispatch(self):
        service: InferenceService = self.server.service
        path = self.path.split("?", 1)[0]
        limit = service.body_limit(self.command, path)
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            return self._send(*_json(411, {"error": "chunked bodies are not accepted; send "
                                           "Content-Length"}))
        length = self.headers.get("Content-Length")
        if length is None and self.command == "POST":
            return self._send(*_json(411, {"error": "Content-Length required"}))
        length = "0" if length is None else length.strip()
        if not length.isdigit():
            self.close_connection = True
            return self._send(*_json(400, {"error": f"bad Content-Length {length!r}"}))
        n = int(length)
        if n > limit:                       # refused from the headers, before any allocation
            service._count("errors")
            self._drain(n)
            return self._send(*_json(413, {"error": f"body of {n} bytes exceeds the limit of "
                                           f"{limit} bytes for {self.command} {path}"}))
        if n == 0:
            return self._handle(service, b"")
        if not service.inflight.acquire(timeout=30):
            self._drain(n)
            return self._send(*_json(503, {"error": "server busy: too many requests in flight; "
                                           "retry later"}))
        try:
            body = self.rfile.read(n)
            if len(body) != n:
                self.close_connection = True
                return self._send(*_json(400, {"error": "body shorter than Content-Length"}))
            self._handle(service, body)
        finally:
            service.inflight.release()

    def _handle(self, service, body):
        try:
            status, ctype, out = service.handle(self.command, self.path, body)
        except Exception as e:  # noqa: BLE001 - never kill the server on one request
            service._count("errors")
            status, ctype, out = _json(500, {"error": f"internal error: {type(e).__name__}: {e}"})
        self._send(status, ctype, out)

    do_GET = do_POST = do_DELETE = do_PUT = _dispatch


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # listen backlog: concurrent clients wait instead of being refused


def make_http_server(service: InferenceService, host: str = "127.0.0.1", port: int = 0,
                     verbose: bool = False) -> ThreadingHTTPServer:
    httpd = _HTTPServer((host, port), _Handler)
    httpd.service = service
    httpd.verbose = verbose
    return httpd


def serve(service: InferenceService, host: str = "127.0.0.1", port: int = 8000,
          verbose: bool = False, ready=None) -> None:
    """Serve until interrupted; a sweeper thread drops expired sessions every few seconds."""
    httpd = make_http_server(service, host, port, verbose)
    stop = threading.Event()

    def sweep():
        while not stop.wait(min(5.0, service.store.ttl / 2)):
            service.store.purge()

    threading.Thread(target=sweep, daemon=True).start()
    if ready:
        ready(httpd.server_address)
    try:
        httpd.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        httpd.server_close()


# ---------------------------------------------------------------------------- client side
class ServiceError(ProtocolError):
    """An HTTP error answer of the service (``status``, message from its JSON body)."""


class HTTPClient:
    """The client side of the protocol over HTTP (urllib)."""

    def __init__(self, url: str, timeout: float = 600.0):
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _call(self, method, path, body=None):
        req = urllib.request.Request(self.url + path, data=body, method=method)
        if body is not None:
            req.add_header("Content-Type", "application/octet-stream")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                msg = json.loads(raw)["error"]
            except Exception:  # noqa: BLE001
                msg = raw[:200].decode("utf-8", "replace")
            raise ServiceError(f"HTTP {e.code}: {msg}", e.code) from None

    def health(self) -> dict:
        return json.loads(self._call("GET", "/health")[1])

    def model_info(self) -> bytes:
        return self._call("GET", "/model")[1]

    def open_session(self, bundle: bytes, parts=()) -> str:
        """POST the key bundle, then every key part; returns the session id."""
        sid = json.loads(self._call("POST", "/sessions", bundle)[1])["session"]
        for part in parts:
            self.add_keys(sid, part)
        return sid

    def add_keys(self, session: str, part: bytes) -> int:
        return json.loads(self._call("POST", f"/sessions/{session}/keys", part)[1])["missing"]

    def infer(self, session: str, request: bytes) -> bytes:
        return self._call("POST", f"/sessions/{session}/infer", request)[1]

    def close_session(self, session: str) -> None:
        self._call("DELETE", f"/sessions/{session}")
