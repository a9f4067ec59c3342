"""The local grading page of ``deepmine inspect`` (seed 2.5, 2.6, 4.7): view and grade the top
candidates of a scan in a browser.

Web stack: the standard library only — :class:`http.server.ThreadingHTTPServer`, a handful
of JSON endpoints and one static page of vanilla JavaScript (``static/inspect.*``). The page
is a single-user local tool: it needs no routing, templating, sessions or database, and a web
framework (or a front-end build) would add dependencies to the torch-free scanner install for
nothing; the standard library server is maintained with Python and is enough for one or a few
graders on localhost. It binds 127.0.0.1 by default; POSTs must be JSON from the page's own
origin (a cross-site page cannot grade).

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
Every grade names the catalogue (:func:`~deepmine.inference.inspect_cutouts.catalog_identity`)
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
import os
import secrets
import sys
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np

from .errors import DeepmineError, InputError
from .inspect_cutouts import INFO_COLUMNS, CutoutStore, catalog_bands, catalog_identity, read_catalog, select_top
from .inspect_grades import GRADES, GradeLog, check_grade, check_grader

STATIC_FILES = {"inspect.html": "text/html; charset=utf-8", "inspect.js": "text/javascript; charset=utf-8",
                "inspect.css": "text/css; charset=utf-8"}
MAX_PAGE = 500
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


def png_bytes(image: np.ndarray) -> bytes:
    """Encode an H×W×3 uint8 image as PNG (pillow)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def default_grades_path(catalog: str | os.PathLike) -> Path:
    """``scan.fits`` → ``scan.grades.ecsv`` beside it."""
    p = Path(catalog)
    stem = p.name
    for suffix in (".fits.gz", ".fits", ".fit", ".fz", ".ecsv", ".parquet", ".csv"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return p.with_name(f"{stem}.grades.ecsv")


def _lock(grades: Path):
    """Hold an exclusive lock on ``.<grades>.lock`` while serving, so that two servers never
    rewrite the same grades file (each would drop the other's grades). The OS releases it when
    the process ends, killed or not. No-op where ``fcntl`` is missing (Windows)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return None
    from .atomic import check_writable

    check_writable(grades)
    fh = open(grades.with_name(f".{grades.name}.lock"), "a+")
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        raise InputError(f"{grades}: grades file in use by another 'deepmine inspect'; grade in that page, or "
                         "pass --grades to use another file (export combines several)") from None
    return fh


def _num(x) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


class StaleGrade(DeepmineError):
    """A grade for another catalogue or object than the one being served (HTTP 409)."""


class InspectSession:
    """The candidates on show, their cutouts and the grading log.

    Parameters
    ----------
    catalog : scan catalogue (FITS/ECSV/Parquet) with id, source, index, logit...
    cutouts : cutout stacks the rows point at (default: found from the ``source`` column).
    top : count, or fraction of the catalogue's rows (default 0.005: ordinality > 0.995).
    grades : grades file (default ``<catalogue>.grades.ecsv`` beside the catalogue).
    grader : default grader name shown on the page.
    """

    def __init__(self, catalog: str | os.PathLike, cutouts: Sequence[os.PathLike] | None = None,
                 top: float | int = 0.005, grades: str | os.PathLike | None = None, grader: str = "grader"):
        self.catalog_path = Path(catalog)
        table = read_catalog(self.catalog_path)
        self.n_catalog = len(table)
        self.rows = select_top(table, top)
        self.store = CutoutStore.for_rows(self.rows, cutouts, [self.catalog_path.parent], what=str(self.catalog_path),
                                          meta=table.meta)
        self.grader = check_grader(grader)
        self.grades_path = Path(grades) if grades is not None else default_grades_path(self.catalog_path)
        self._lock_file = _lock(self.grades_path)
        self.catalog_id = catalog_identity(table, self.catalog_path)
        self.token = secrets.token_urlsafe(24)
        self.log = GradeLog(self.grades_path, catalog=self.catalog_path.resolve(), catalog_id=self.catalog_id)
        self._rank_of = {int(i): k for k, i in enumerate(self.rows["id"])}
        self._records = [self._record(k) for k in range(len(self.rows))]
        self._check_log(table)
        self.bands = catalog_bands(table.meta, self.store.n_bands)

    def close(self) -> None:
        """Release the grades file for another server."""
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def _record(self, k: int) -> dict:
        row = self.rows[k]
        rec = {"rank": k, "id": int(row["id"]), "source": str(row["source"]), "index": int(row["index"]),
               "flags": int(row["flags"])}
        for c in INFO_COLUMNS:
            rec[c] = _num(row[c])
        return rec

    def check_catalog(self, catalog: str) -> None:
        """Refuse (:class:`StaleGrade`) a request made for another catalogue."""
        if catalog != self.catalog_id:
            raise StaleGrade(f"this page shows catalogue {catalog}, but the server now serves {self.catalog_path.name} "
                             f"({self.catalog_id}): reload the page; nothing was recorded")

    def check_object(self, catalog: str, rank: int, id: int) -> None:
        """Refuse (:class:`StaleGrade`) a grade for another catalogue or another object."""
        self.check_catalog(catalog)
        if not 0 <= rank < len(self._records) or self._records[rank]["id"] != id:
            raise StaleGrade(f"object id {id} is not candidate {rank} of {self.catalog_path.name}: reload the page; "
                             "nothing was recorded")

    def _check_log(self, table) -> None:
        by_id = {int(i): (str(s), int(x)) for i, s, x in zip(table["id"], table["source"], table["index"])}
        for a in self.log.actions:
            where = by_id.get(a.id)
            if where is None or Path(where[0]).name != Path(a.source).name or where[1] != a.index:
                raise InputError(
                    f"{self.grades_path}: grades another catalogue (id {a.id} at {a.source}[{a.index}] is not a row "
                    f"of {self.catalog_path}); pass --grades to use another grades file"
                )

    # -- queries used by the HTTP handler ------------------------------------------------------
    def __len__(self) -> int:
        return len(self._records)

    def rank_of(self, id: int) -> int | None:
        return self._rank_of.get(int(id))

    def state(self, grader: str) -> dict:
        grader = check_grader(grader)
        mine = self.log.graded_by(grader)
        ids = [r["id"] for r in self._records]
        graded = sum(i in mine for i in ids)
        anyone = self.log.current()
        first = next((k for k, i in enumerate(ids) if i not in mine), len(ids) - 1 if ids else 0)
        return {
            "catalog": self.catalog_path.name, "catalog_id": self.catalog_id, "grades_file": str(self.grades_path),
            "n_catalog": self.n_catalog,
            "total": len(ids), "graded": graded, "graded_any": sum(i in anyone for i in ids),
            "first_ungraded": first, "grader": grader, "default_grader": self.grader,
            "graders": self.log.graders(), "grades": GRADES, "bands": self.bands,
        }

    def page(self, start: int, count: int) -> list[dict]:
        start = max(0, int(start))
        count = max(0, min(int(count), MAX_PAGE))
        current = self.log.current()
        return [dict(r, grades=current.get(r["id"], {})) for r in self._records[start:start + count]]

    def image(self, rank: int, band: int | None = None, stretch: str = "percentile", soft: float = 0.05) -> bytes:
        """PNG of candidate ``rank``: RGB (bands i, r, g → R, G, B), or band ``band`` in grey."""
        from .mosaic import STRETCHES, render_rgb

        if not 0 <= rank < len(self._records):
            raise KeyError(rank)
        if stretch not in STRETCHES:
            raise InputError(f"stretch {stretch!r}: expected one of {', '.join(STRETCHES)}")
        if not (np.isfinite(soft) and 0 < soft <= 10):
            raise InputError(f"soft={soft}: expected a number in (0, 10]")
        r = self._records[rank]
        cutout = self.store.get(r["source"], r["index"])
        if band is None:
            rgb = render_rgb(cutout, bands=self.bands, stretch=stretch, soft=soft)
        elif 0 <= band < cutout.shape[0]:
            rgb = render_rgb(cutout[band], stretch=stretch, soft=soft)
        else:
            raise InputError(f"band {band}: the cutouts have {cutout.shape[0]} band(s)")
        return png_bytes(rgb)

    def grade(self, rank: int, grade: str, grader: str) -> dict:
        if not 0 <= int(rank) < len(self._records):
            raise InputError(f"no candidate of rank {rank}")
        self.log.grade(self._records[int(rank)], grade, grader)
        return self._after(int(rank), grader)

    def undo(self, grader: str) -> dict:
        action = self.log.undo(grader)
        rank = None if action is None else self.rank_of(action.id)
        return self._after(rank, grader)

    def _after(self, rank: int | None, grader: str) -> dict:
        out = {"state": self.state(grader), "rank": rank}
        if rank is not None:
            out["grades"] = self.log.grades_of(self._records[rank]["id"])
        return out


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
                body = resources.files("deepmine.inference").joinpath("static", name).read_bytes()
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
            raise _Refused(403, "missing or wrong session token: grade from the page this server served")
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
        super().__init__(*args, **kwargs)

    def process_request(self, request, client_address):
        if not self._slots.acquire(blocking=False):
            try:
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
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
