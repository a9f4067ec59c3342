"""Grades given in visual inspection, kept as an append-only log saved atomically as ECSV.

Grades (seed Tables 2.2 and 4.3, Figure 2.6): ``A`` definite lens, ``B`` probable lens, ``C``
possible lens, ``N`` not a lens (spiral, ring, merger, satellite...), ``X`` artefact.

The grades file is a log of what the graders did, in order, one row per action: a grade, or
``undo`` (which withdraws that grader's latest grade still in force; the row names the
candidate it applied to). Replaying the log gives each grader's current grade of each
candidate, and undo keeps working after a restart. Every action rewrites the whole file
atomically (:func:`deepmine.inference.atomic.atomic_path`), so a killed server or a closed
browser loses nothing and a half-written file never exists. Columns: ``seq`` (action number),
``id``, ``source``, ``index``, ``grade``, ``grader``, ``time`` (UTC, ISO 8601), and the
candidate's ``ra``, ``dec``, ``logit``, ``probability``, ``ordinality`` copied from the
catalogue so the file stands alone; ``meta`` names the catalogue.

Several graders: each action records its grader. :func:`combine_grades` turns several
graders' grades into one class per candidate for export (strict majority by default).
"""
from __future__ import annotations

import datetime as _dt
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_path, check_writable
from ..errors import InputError, file_error, first_line

GRADES = {"A": "definite lens", "B": "probable lens", "C": "possible lens", "N": "not a lens", "X": "artefact"}
LENS_GRADES = ("A", "B")
NEGATIVE_GRADES = ("N", "X")
UNDO = "undo"
FORMAT = "deepmine-grades-1"
#: Candidate columns copied into each row of the grades file.
CANDIDATE_COLUMNS = ("ra", "dec", "logit", "probability", "ordinality")


@dataclass(frozen=True)
class Action:
    """One row of the log: a grade (or ``undo``) given by ``grader`` to candidate ``id``."""

    seq: int
    id: int
    source: str
    index: int
    grade: str
    grader: str
    time: str
    info: tuple = (np.nan,) * len(CANDIDATE_COLUMNS)


def check_grader(name: str) -> str:
    """A grader name: a string of 1 to 64 printable characters, not only spaces."""
    if not isinstance(name, str):
        raise InputError(f"grader name {name!r}: give 1 to 64 printable characters (--grader)")
    name = name.strip()
    if not name or len(name) > 64 or not name.isprintable():
        raise InputError(f"grader name {name!r}: give 1 to 64 printable characters (--grader)")
    return name


def check_grade(grade: str) -> str:
    """One of the documented letters exactly (``A B C N X``; no case folding, no spaces)."""
    if not isinstance(grade, str) or grade not in GRADES:
        raise InputError(f"grade {grade!r}: expected one of {', '.join(GRADES)}")
    return grade


class GradeLog:
    """The grading log of one catalogue, saved to ``path`` after every action (thread-safe).

    Parameters
    ----------
    path : grades file (ECSV); read when it exists.
    catalog : path of the catalogue (recorded in the file's metadata).
    """

    def __init__(self, path: str | os.PathLike, catalog: str | os.PathLike | None = None,
                 catalog_id: str | None = None):
        self.path = Path(path)
        self.catalog = None if catalog is None else str(catalog)
        self.catalog_id = catalog_id
        self.actions: list[Action] = []
        self._lock = threading.RLock()
        self._stacks: dict[str, list[Action]] = {}
        self._current: dict[int, dict[str, str]] = {}
        if self.path.exists():
            for action in read_actions(self.path):
                self._apply(action)
                self.actions.append(action)
            meta = read_meta(self.path)
            if self.catalog is None:
                self.catalog = meta.get("catalog")
            stored = meta.get("catalog_id") or None
            if catalog_id is not None and stored is not None and stored != catalog_id:
                raise file_error(self.path, f"grades catalogue {stored}, not {catalog_id} "
                                 f"({self.catalog or 'another scan'}); pass --grades to use another grades file")
            self.catalog_id = self.catalog_id or stored
        else:
            check_writable(self.path)

    # -- replay -----------------------------------------------------------------------------
    def _apply(self, action: Action) -> None:
        stack = self._stacks.setdefault(action.grader, [])
        if action.grade == UNDO:
            if not stack or stack[-1].id != action.id:
                raise file_error(self.path, f"action {action.seq}: undo of id {action.id} by {action.grader!r} "
                                 "does not match that grader's latest grade (file edited by hand?)")
            stack.pop()
            previous = next((a for a in reversed(stack) if a.id == action.id), None)
            grades = self._current.setdefault(action.id, {})
            if previous is None:
                grades.pop(action.grader, None)
                if not grades:
                    del self._current[action.id]
            else:
                grades[action.grader] = previous.grade
        else:
            stack.append(action)
            self._current.setdefault(action.id, {})[action.grader] = action.grade

    # -- queries ----------------------------------------------------------------------------
    def current(self) -> dict[int, dict[str, str]]:
        """Grades in force: ``{id: {grader: grade}}`` (a copy)."""
        with self._lock:
            return {k: dict(v) for k, v in self._current.items()}

    def grades_of(self, id: int) -> dict[str, str]:
        with self._lock:
            return dict(self._current.get(int(id), {}))

    def graders(self) -> list[str]:
        with self._lock:
            return sorted({a.grader for a in self.actions})

    def graded_by(self, grader: str) -> set[int]:
        with self._lock:
            return {i for i, g in self._current.items() if grader in g}

    # -- actions ----------------------------------------------------------------------------
    def _next(self, row, grade: str, grader: str) -> Action:
        info = tuple(np.nan if c not in row or row[c] is None else float(row[c]) for c in CANDIDATE_COLUMNS)
        now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        seq = self.actions[-1].seq + 1 if self.actions else 1
        return Action(seq, int(row["id"]), str(row["source"]), int(row["index"]), grade, grader, now, info)

    def grade(self, row, grade: str, grader: str) -> Action | None:
        """Record ``grade`` of candidate ``row`` (a mapping with id, source, index...) by ``grader``
        and save. Giving the grade already in force records nothing and returns None."""
        grade = check_grade(grade)
        grader = check_grader(grader)
        with self._lock:
            if self._current.get(int(row["id"]), {}).get(grader) == grade:
                return None
            action = self._next(row, grade, grader)
            self._commit(action)
            return action

    def undo(self, grader: str) -> Action | None:
        """Withdraw ``grader``'s latest grade still in force and save; returns the withdrawn
        grade's action (None when there is nothing to undo)."""
        grader = check_grader(grader)
        with self._lock:
            stack = self._stacks.get(grader)
            if not stack:
                return None
            target = stack[-1]
            row = {"id": target.id, "source": target.source, "index": target.index,
                   **dict(zip(CANDIDATE_COLUMNS, target.info))}
            self._commit(self._next(row, UNDO, grader))
            return target

    def _commit(self, action: Action) -> None:
        self._apply(action)
        self.actions.append(action)
        try:
            self.save()
        except BaseException:
            self.actions.pop()
            self._rebuild()
            raise

    def _rebuild(self) -> None:
        self._stacks.clear()
        self._current.clear()
        for a in self.actions:
            self._apply(a)

    # -- storage ----------------------------------------------------------------------------
    def table(self):
        """The log as an astropy Table (the grades file's content)."""
        from astropy.table import Table

        a = self.actions
        t = Table(meta={
            "format": FORMAT,
            "catalog": self.catalog or "",
            "catalog_id": self.catalog_id or "",
            "grades": dict(GRADES, undo="withdraws the grader's latest grade in force"),
        })
        t["seq"] = np.array([x.seq for x in a], dtype=np.int64)
        t["id"] = np.array([x.id for x in a], dtype=np.int64)
        t["source"] = np.array([x.source for x in a], dtype=str)
        t["index"] = np.array([x.index for x in a], dtype=np.int64)
        t["grade"] = np.array([x.grade for x in a], dtype=str)
        t["grader"] = np.array([x.grader for x in a], dtype=str)
        t["time"] = np.array([x.time for x in a], dtype=str)
        info = np.array([x.info for x in a], dtype=np.float64).reshape(len(a), len(CANDIDATE_COLUMNS))
        for k, c in enumerate(CANDIDATE_COLUMNS):
            t[c] = info[:, k]
        return t

    def save(self) -> None:
        """Write the whole log atomically (temporary file beside it, then ``os.replace``)."""
        with self._lock, atomic_path(self.path) as tmp:
            self.table().write(tmp, format="ascii.ecsv", overwrite=True)


def read_meta(path: str | os.PathLike) -> dict:
    from astropy.table import Table

    try:
        return dict(Table.read(path, format="ascii.ecsv").meta)
    except Exception:  # noqa: BLE001 - read_actions reports bad files
        return {}


def read_actions(path: str | os.PathLike) -> list[Action]:
    """Read a grades file's log; a one-line InputError for anything that is not one."""
    from astropy.table import Table

    p = Path(path)
    if not p.is_file():
        raise file_error(p, "grades file not found")
    if p.stat().st_size == 0:
        raise file_error(p, "grades file is empty")
    try:
        t = Table.read(p, format="ascii.ecsv")
    except Exception as exc:  # noqa: BLE001 - astropy raises many kinds for bad files
        raise file_error(p, f"not a readable ECSV grades file ({first_line(exc)})") from None
    need = ("seq", "id", "source", "index", "grade", "grader", "time")
    missing = [c for c in need if c not in t.colnames]
    if missing or t.meta.get("format") != FORMAT:
        raise file_error(p, "not a deepmine grades file (written by 'deepmine inspect')"
                         + (f": missing column(s) {', '.join(missing)}" if missing else ""))
    actions = []
    for row in t:
        grade = str(row["grade"])
        if grade not in GRADES and grade != UNDO:
            raise file_error(p, f"action {row['seq']}: unknown grade {grade!r}")
        info = tuple(float(row[c]) if c in t.colnames else np.nan for c in CANDIDATE_COLUMNS)
        actions.append(Action(int(row["seq"]), int(row["id"]), str(row["source"]), int(row["index"]),
                              grade, str(row["grader"]), str(row["time"]), info))
    return actions


# -- combining graders --------------------------------------------------------------------------
@dataclass(frozen=True)
class Verdict:
    """A candidate's combined class: ``"lens"``, ``"negative"`` or ``"undecided"``."""

    id: int
    source: str
    index: int
    verdict: str
    grades: str  # "grader:grade,..." for provenance


def combine_grades(logs: Iterable[GradeLog], graders: Sequence[str] | None = None,
                   include_c: bool = False, agreement: str = "majority") -> list[Verdict]:
    """One class per graded candidate, from the grades in force of one or several logs.

    Each grader's grade counts once (the same grader in two logs: the later log wins). A lens
    vote is A or B (and C with ``include_c``); a negative vote is N or X; without
    ``include_c`` a C is a "maybe" that counts in the total but for neither class, so it
    keeps a candidate out of the negatives. ``agreement="majority"``: the class with more
    than half the votes; ``"unanimous"``: all graders' votes.

    Returns
    -------
    list of Verdict, in order of candidate id.
    """
    if agreement not in ("majority", "unanimous"):
        raise InputError(f"--agreement {agreement!r}: expected majority or unanimous")
    where: dict[int, tuple[str, int]] = {}
    votes: dict[int, dict[str, str]] = {}
    wanted = None if not graders else set(graders)
    for log in logs:
        for a in log.actions:
            where.setdefault(a.id, (a.source, a.index))
        for cid, by in log.current().items():
            for grader, grade in by.items():
                if wanted is None or grader in wanted:
                    votes.setdefault(cid, {})[grader] = grade
    lens = set(LENS_GRADES) | ({"C"} if include_c else set())
    out = []
    for cid in sorted(votes):
        by = votes[cid]
        n = len(by)
        n_lens = sum(g in lens for g in by.values())
        n_neg = sum(g in NEGATIVE_GRADES for g in by.values())
        need = n if agreement == "unanimous" else n // 2 + 1
        verdict = "lens" if n_lens >= need else "negative" if n_neg >= need else "undecided"
        src, idx = where[cid]
        out.append(Verdict(cid, src, idx, verdict, ",".join(f"{k}:{v}" for k, v in sorted(by.items()))))
    return out
