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
``GET /``                      the page (``static/inspect.html``, ``.js``, ``.css``)
``GET /api/state?grader=G``    catalogue, totals, progress of G, first candidate G has not graded
``GET /api/page?start=&count=&grader=``  candidates ``start..start+count`` (rank order) with grades
``GET /api/cutout/RANK.png?band=rgb|K&stretch=percentile|asinh&soft=S``  candidate RANK (0 =
                               largest logit), RGB or band K, rendered by
                               :func:`deepmine.inference.mosaic.render_rgb`
``POST /api/grade {rank, grade, grader}``   record a grade (saved before the reply)
``POST /api/undo {grader}``    withdraw G's latest grade; replies with the candidate's rank
"""
from __future__ import annotations

import errno
import json
import os
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np

from .errors import DeepmineError, InputError
from .inspect_cutouts import INFO_COLUMNS, CutoutStore, catalog_bands, read_catalog, select_top
from .inspect_grades import GRADES, GradeLog, check_grader

STATIC_FILES = {"inspect.html": "text/html; charset=utf-8", "inspect.js": "text/javascript; charset=utf-8",
                "inspect.css": "text/css; charset=utf-8"}
MAX_PAGE = 500


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
        self.log = GradeLog(self.grades_path, catalog=self.catalog_path.resolve())
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
            "catalog": self.catalog_path.name, "grades_file": str(self.grades_path), "n_catalog": self.n_catalog,
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
class _Handler(BaseHTTPRequestHandler):
    session: InspectSession  # set on the subclass made by make_server
    server_version = "deepmine-inspect"
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002 - quiet: the terminal shows the URL only
        pass

    def _send(self, status: int, body: bytes, ctype: str, cache: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "max-age=3600" if cache else "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj, status: int = 200) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json({"error": message}, status)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        url = urlsplit(self.path)
        q = {k: v[-1] for k, v in parse_qs(url.query).items()}
        path = url.path
        try:
            if path in ("/", "/index.html"):
                path = "/inspect.html"
            if path.lstrip("/") in STATIC_FILES:
                name = path.lstrip("/")
                body = resources.files("deepmine.inference").joinpath("static", name).read_bytes()
                return self._send(200, body, STATIC_FILES[name])
            s = self.session
            grader = q.get("grader") or s.grader
            if path == "/api/state":
                return self._json(s.state(grader))
            if path == "/api/page":
                return self._json({"start": int(q.get("start", 0)), "candidates": s.page(q.get("start", 0), q.get("count", 60)),
                                   "state": s.state(grader)})
            if path.startswith("/api/cutout/") and path.endswith(".png"):
                rank = int(path[len("/api/cutout/"):-4])
                band = q.get("band", "rgb")
                band_idx = None if band == "rgb" else int(band)
                png = s.image(rank, band_idx, q.get("stretch", "percentile"), float(q.get("soft", 0.05)))
                return self._send(200, png, "image/png", cache=True)
            return self._error(404, f"no such page: {url.path}")
        except (KeyError, IndexError):
            return self._error(404, f"no such candidate: {url.path}")
        except (InputError, ValueError) as exc:
            return self._error(400, str(exc))
        except (BrokenPipeError, ConnectionResetError):
            return None
        except Exception as exc:  # noqa: BLE001 - report to the page, keep serving
            return self._error(500, f"{type(exc).__name__}: {exc}")

    do_HEAD = do_GET

    def do_POST(self) -> None:  # noqa: N802
        url = urlsplit(self.path)
        origin = self.headers.get("Origin")
        host = self.headers.get("Host", "")
        if origin and urlsplit(origin).netloc != host:
            return self._error(403, "cross-origin requests are refused")
        if not self.headers.get("Content-Type", "").startswith("application/json"):
            return self._error(415, "send JSON (Content-Type: application/json)")
        try:
            length = int(self.headers.get("Content-Length", 0))
            body = json.loads(self.rfile.read(length) or b"{}") if length < 1_000_000 else None
            if not isinstance(body, dict):
                return self._error(400, "expected a JSON object")
            grader = body.get("grader") or self.session.grader
            if url.path == "/api/grade":
                return self._json(self.session.grade(int(body["rank"]), str(body["grade"]), grader))
            if url.path == "/api/undo":
                return self._json(self.session.undo(grader))
            return self._error(404, f"no such endpoint: {url.path}")
        except (KeyError, TypeError, json.JSONDecodeError):
            return self._error(400, "expected JSON with rank, grade and grader")
        except (InputError, ValueError) as exc:
            return self._error(400, str(exc))
        except DeepmineError as exc:
            return self._error(500, str(exc))
        except OSError as exc:  # the grades file could not be written: nothing was recorded
            return self._error(500, f"grade NOT saved: {exc}")


def make_server(session: InspectSession, host: str = "127.0.0.1", port: int = 8050) -> ThreadingHTTPServer:
    """Bind the grading server (``port=0``: any free port; ``server.server_address`` tells which).

    Raises
    ------
    InputError
        The port is in use or the address cannot be bound.
    """
    handler = type("InspectHandler", (_Handler,), {"session": session})
    try:
        server = ThreadingHTTPServer((host, int(port)), handler)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise InputError(f"--port {port}: port already in use on {host}; choose another (--port 0 picks a free one)") from None
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise InputError(f"--port {port}: not allowed to listen there (ports below 1024 need root); choose another") from None
        raise InputError(f"--host {host} --port {port}: cannot listen there ({exc.strerror or exc})") from None
    server.daemon_threads = True
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
