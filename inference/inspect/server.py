"""The HTTP server of the grading page: endpoints, request checks, a bounded thread pool.

Serves one :class:`~deepmine.inference.inspect.app.InspectSession` (the candidates and the
grade log) with :class:`http.server.ThreadingHTTPServer` from the standard library.

Endpoints
---------
``GET /``                      the page (``static/inspect.html``, ``.js``, ``.css``); the page carries
                               the session token in ``<meta name="deepmine-token">``
``GET /api/state?grader=G``    catalogue and its identity, totals, progress of G, first candidate G
                               has not graded
``GET /api/page?start=&count=&grader=``  candidates ``start..start+count`` (rank order) with grades
``GET /api/cutout/CATID/RANK-ID.png?band=rgb|K&stretch=percentile|asinh&soft=S``  candidate RANK
                               (0 = largest logit; ID its catalogue id) of catalogue CATID, RGB or
                               band K, rendered by :func:`deepmine.inference.mosaic.render_rgb`;
                               cacheable, because the URL names the catalogue and the object
``POST /api/grade {catalog, rank, id, grade, grader}``  record a grade (saved before the reply)
``POST /api/undo {catalog, grader}``  withdraw G's latest grade; replies with the candidate's rank

Who may grade
-------------
Every grade names the catalogue (:func:`~deepmine.inference.inspect.cutouts.catalog_identity`)
and the object (rank and id): a grade for another catalogue or object than the one served at
that rank is refused with 409, so a page left open on an earlier catalogue (the README's loop:
retrain, rescan, inspect again on the same port) cannot record grades against objects its
grader never saw. Every POST must carry the session's random token (``X-Deepmine-Token``,
embedded in the page; a cross-site page can neither read it nor send the header without a
CORS preflight, which is never granted), a ``Host`` that is the bound address (127.0.0.1,
localhost, [::1] or the host given; other names only with ``allow_hosts`` — a DNS-rebinding
page has its own name) and, when present, a matching ``Origin``. Bodies are JSON of at most
64 KiB with a ``Content-Length``; a refused request's connection is closed (its body is never
parsed as another request); sockets time out after :data:`READ_TIMEOUT` seconds and at most
:data:`MAX_HANDLERS` connections are served at once, so stalled clients cannot exhaust the
server. Responses carry ``Content-Security-Policy`` (this origin only, no inline script),
``X-Frame-Options: DENY`` and ``Referrer-Policy: no-referrer``.
"""
from __future__ import annotations

import errno
import json
import secrets
import sys
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import parse_qs, urlsplit

from ..errors import DeepmineError, InputError
from .app import InspectSession, StaleGrade
from .grades import check_grade, check_grader

STATIC_FILES = {"inspect.html": "text/html; charset=utf-8", "inspect.js": "text/javascript; charset=utf-8",
                "inspect.css": "text/css; charset=utf-8"}
#: Largest POST body accepted (bytes).
MAX_BODY = 64 * 1024
#: Seconds a connection may stay silent (reading a request line, headers or body).
READ_TIMEOUT = 10.0
#: Connections served at once; more are answered 503 and closed.
MAX_HANDLERS = 32
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self'; script-src 'self'; style-src 'self'; "
                               "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


# -- HTTP --------------------------------------------------------------------------------------
class _Refused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _strict_json(body: bytes) -> dict:
    def no_constants(name):
        raise ValueError(f"{name} is not a number")

    try:
        obj = json.loads(body.decode("utf-8"), parse_constant=no_constants)
    except (UnicodeDecodeError, ValueError) as exc:
        raise _Refused(400, f"not JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise _Refused(400, "expected a JSON object")
    return obj


def _field(body: dict, name: str, kind: type):
    value = body.get(name)
    if kind is int and (type(value) is not int or value < 0):  # bool is not int here
        raise _Refused(400, f"{name}: expected a whole number >= 0, got {json.dumps(value)}")
    if kind is str and not isinstance(value, str):
        raise _Refused(400, f"{name}: expected a string, got {json.dumps(value)}")
    return value


class _Handler(BaseHTTPRequestHandler):
    session: InspectSession  # set on the subclass made by make_server
    allowed_hosts: frozenset = frozenset()  # set by make_server: "host:port" strings
    server_version = "deepmine-inspect"
    protocol_version = "HTTP/1.1"
    timeout = READ_TIMEOUT  # socket timeout for every read: stalled clients are dropped

    def log_message(self, format, *args):  # noqa: A002 - quiet: the terminal shows the URL only
        pass

    def _send(self, status: int, body: bytes, ctype: str, cache: bool = False) -> None:
        try:
            self._send_unguarded(status, body, ctype, cache)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):  # the client left: nothing to tell it
            self.close_connection = True

    def _send_unguarded(self, status: int, body: bytes, ctype: str, cache: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "private, max-age=86400, immutable" if cache else "no-store")
        for key, value in SECURITY_HEADERS.items():
            self.send_header(key, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj, status: int = 200) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def _error(self, status: int, message: str, close: bool = False) -> None:
        if close:
            self.close_connection = True
        self._json({"error": message}, status)

    def _check_host(self) -> None:
        host = (self.headers.get("Host") or "").strip().lower()
        if host not in self.allowed_hosts:
            raise _Refused(403, f"Host {host!r} is not this server's address (see --allow-host)")

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        url = urlsplit(self.path)
        q = {k: v[-1] for k, v in parse_qs(url.query).items()}
        path = url.path
        try:
            self._check_host()
            if path in ("/", "/index.html"):
                path = "/inspect.html"
            if path.lstrip("/") in STATIC_FILES:
                name = path.lstrip("/")
                body = resources.files("deepmine.inference.inspect").joinpath("static", name).read_bytes()
                if name == "inspect.html":
                    body = body.replace(b"__DEEPMINE_TOKEN__", self.session.token.encode())
                return self._send(200, body, STATIC_FILES[name])
            s = self.session
            grader = q.get("grader") or s.grader
            if path == "/api/state":
                return self._json(s.state(grader))
            if path == "/api/page":
                return self._json({"start": int(q.get("start", 0)), "candidates": s.page(q.get("start", 0), q.get("count", 60)),
                                   "state": s.state(grader)})
            if path.startswith("/api/cutout/") and path.endswith(".png"):
                catalog, _, name = path[len("/api/cutout/"):-4].partition("/")
                rank, _, id_ = name.partition("-")
                s.check_object(catalog, int(rank), int(id_))
                band = q.get("band", "rgb")
                band_idx = None if band == "rgb" else int(band)
                png = s.image(int(rank), band_idx, q.get("stretch", "percentile"), float(q.get("soft", 0.05)))
                return self._send(200, png, "image/png", cache=True)
            return self._error(404, f"no such page: {url.path}")
        except _Refused as exc:
            return self._error(exc.status, str(exc), close=True)
        except StaleGrade as exc:
            return self._error(404, str(exc))
        except (KeyError, IndexError):
            return self._error(404, f"no such candidate: {url.path}")
        except (InputError, ValueError) as exc:
            return self._error(400, str(exc))
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True
            return None
        except Exception as exc:  # noqa: BLE001 - report to the page, keep serving
            print(f"deepmine inspect: {self.command} {url.path}: {type(exc).__name__}: {exc}", file=sys.stderr)
            return self._error(500, f"{type(exc).__name__}: {exc}")

    do_HEAD = do_GET

    def _read_body(self) -> dict:
        """Check who is asking, then read exactly the declared JSON body (or refuse: the caller
        closes the connection, so an unread body is never parsed as another request)."""
        self._check_host()
        origin = self.headers.get("Origin")
        if origin is not None and urlsplit(origin).netloc.lower() != (self.headers.get("Host") or "").lower():
            raise _Refused(403, "cross-origin requests are refused")
        if not secrets.compare_digest(self.headers.get("X-Deepmine-Token", ""), self.session.token):
            raise _Refused(403, "missing or wrong session token: this page was not served by the running 'deepmine "
                                "inspect' (restarted?); reload the page; nothing was recorded")
        if not self.headers.get("Content-Type", "").split(";")[0].strip() == "application/json":
            raise _Refused(415, "send JSON (Content-Type: application/json)")
        raw = self.headers.get("Content-Length")
        if raw is None:
            raise _Refused(411, "Content-Length required")
        if not raw.strip().isdigit():
            raise _Refused(400, f"bad Content-Length {raw!r}")
        length = int(raw)
        if length > MAX_BODY:
            raise _Refused(413, f"body of {length} bytes; at most {MAX_BODY}")
        body = self.rfile.read(length)
        if len(body) != length:
            raise _Refused(400, "body shorter than its Content-Length")
        return _strict_json(body)

    def do_POST(self) -> None:  # noqa: N802
        url = urlsplit(self.path)
        try:
            body = self._read_body()
            if url.path not in ("/api/grade", "/api/undo"):
                return self._error(404, f"no such endpoint: {url.path}", close=True)
            s = self.session
            catalog = _field(body, "catalog", str)
            grader = check_grader(_field(body, "grader", str))
            if url.path == "/api/grade":
                rank, id_ = _field(body, "rank", int), _field(body, "id", int)
                grade = check_grade(_field(body, "grade", str))
                s.check_object(catalog, rank, id_)
                return self._json(s.grade(rank, grade, grader))
            if url.path == "/api/undo":
                s.check_catalog(catalog)
                return self._json(s.undo(grader))
            return self._error(404, f"no such endpoint: {url.path}", close=True)
        except _Refused as exc:
            return self._error(exc.status, str(exc), close=True)
        except StaleGrade as exc:
            return self._error(409, str(exc))
        except InputError as exc:
            return self._error(400, str(exc))
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True
            return None
        except DeepmineError as exc:
            return self._error(500, str(exc))
        except OSError as exc:  # the grades file could not be written: nothing was recorded
            print(f"deepmine inspect: grade NOT saved: {exc}", file=sys.stderr)
            return self._error(500, f"grade NOT saved: {exc}")
        except Exception as exc:  # noqa: BLE001 - one line in the terminal, keep serving
            print(f"deepmine inspect: POST {url.path}: {type(exc).__name__}: {exc}", file=sys.stderr)
            return self._error(500, f"{type(exc).__name__}: {exc}", close=True)


class _BoundedServer(ThreadingHTTPServer):
    """A threading server that serves at most :data:`MAX_HANDLERS` connections at once."""

    daemon_threads = True

    def __init__(self, *args, **kwargs):
        self._slots = threading.BoundedSemaphore(MAX_HANDLERS)
        self._open: set = set()
        self._open_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def server_close(self):
        """Stop listening and close every connection still open (a browser's keep-alive
        connection must not keep talking to a server that has stopped serving)."""
        import socket

        super().server_close()
        with self._open_lock:
            open_now = list(self._open)
        for request in open_now:
            try:
                request.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def process_request(self, request, client_address):
        if not self._slots.acquire(blocking=False):
            try:
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            except OSError:
                pass
            self.shutdown_request(request)
            return
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._open_lock:
                self._open.discard(request)
            self._slots.release()


def make_server(session: InspectSession, host: str = "127.0.0.1", port: int = 8050,
                allow_hosts: Sequence[str] = ()) -> ThreadingHTTPServer:
    """Bind the grading server (``port=0``: any free port; ``server.server_address`` tells which).

    Requests must name the server by its address in ``Host``: 127.0.0.1, localhost, [::1] or
    ``host``, with the port; ``allow_hosts`` adds names (``--allow-host NAME`` when grading from
    other machines with ``--host 0.0.0.0``; the session token still guards every grade).

    Raises
    ------
    InputError
        The port is in use or the address cannot be bound.
    """
    handler = type("InspectHandler", (_Handler,), {"session": session})
    try:
        server = _BoundedServer((host, int(port)), handler)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise InputError(f"--port {port}: port already in use on {host}; choose another (--port 0 picks a free one)") from None
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise InputError(f"--port {port}: not allowed to listen there (ports below 1024 need root); choose another") from None
        raise InputError(f"--host {host} --port {port}: cannot listen there ({exc.strerror or exc})") from None
    bound = server.server_address[1]
    names = {"127.0.0.1", "localhost", "[::1]", *(h.strip().lower() for h in allow_hosts if h.strip())}
    if host not in ("0.0.0.0", "", "::"):
        names.add(f"[{host}]" if ":" in host else host.lower())
    handler.allowed_hosts = frozenset(f"{n}:{bound}" for n in names)
    return server


def server_url(server: ThreadingHTTPServer) -> str:
    host, port = server.server_address[:2]
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else (f"[{host}]" if ":" in str(host) else host)
    return f"http://{shown}:{port}/"


def serve_in_thread(server: ThreadingHTTPServer) -> threading.Thread:
    """Run ``server`` in a daemon thread (tests, notebooks); stop with ``server.shutdown()``."""
    thread = threading.Thread(target=server.serve_forever, name="deepmine-inspect", daemon=True)
    thread.start()
    return thread
