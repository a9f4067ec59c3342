"""The local grading page of ``deepmine inspect`` (seed 2.5, 2.6, 4.7): view and grade the top
candidates of a scan in a browser.

Web stack: the standard library only — :class:`http.server.ThreadingHTTPServer`, a handful
of JSON endpoints and one static page of vanilla JavaScript (``static/inspect.*``). The page
is a single-user local tool: it needs no routing, templating, sessions or database, and a web
framework (or a front-end build) would add dependencies to the torch-free scanner install for
nothing; the standard library server is maintained with Python and is enough for one or a few
graders on localhost. It binds 127.0.0.1 by default; POSTs must be JSON from the page's own
origin (a cross-site page cannot grade).

The HTTP side (endpoints, who may grade) is :mod:`deepmine.inference.inspect.server`.
"""
from __future__ import annotations

import os
import secrets
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import DeepmineError, InputError, file_error
from ..formats import TABLE_SUFFIXES, strip_suffix
from .cutouts import INFO_COLUMNS, CutoutStore, catalog_bands, catalog_identity, read_catalog, select_top
from .grades import GRADES, GradeLog, check_grader

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
    return p.with_name(f"{strip_suffix(p, TABLE_SUFFIXES).name}.grades.ecsv")


def _lock(grades: Path):
    """Hold an exclusive lock on ``.<grades>.lock`` while serving, so that two servers never
    rewrite the same grades file (each would drop the other's grades). The OS releases it when
    the process ends, killed or not. No-op where ``fcntl`` is missing (Windows)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return None
    from ..atomic import check_writable

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
    top : count of the highest logits, or a fraction: ordinality > 1 − top (against the reference
        pool when the catalogue has ``ordinality_ref``; default 0.005), as ``scan --top``
        (:func:`deepmine.inference.ranking.top_list.select_top`); unranked rows are never shown.
    grades : grades file (default ``<catalogue>.grades.ecsv`` beside the catalogue).
    grader : default grader name shown on the page.
    """

    def __init__(self, catalog: str | os.PathLike, cutouts: Sequence[os.PathLike] | None = None,
                 top: float | int = 0.005, grades: str | os.PathLike | None = None, grader: str = "grader"):
        self.catalog_path = Path(catalog)
        table = read_catalog(self.catalog_path)
        self.n_catalog = len(table)
        self.rows = select_top(table, top)
        if len(self.rows) == 0:
            raise file_error(self.catalog_path, f"no ranked candidates within --top {top} (of {len(table)} rows); "
                                                "give a count, e.g. --top 100")
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
        from ..mosaic import STRETCHES, render_rgb

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
