"""Resumable work in parts: one folder, one plan, one completion marker per part.

The one resume mechanism of deepmine (scan shards, selection-function parts). Contract:

* A **work folder** holds ``plan.json`` — what every part depends on (JSON-ready dict; always
  ``model_scoring_id``, the model's scoring identity, and, where files are read,
  ``input_identity``: :func:`deepmine.inference.identity.input_identity` records) — and, per
  part, a part file ``part-<id>.<suffix>`` written atomically, then its marker
  ``part-<id>.done`` (JSON, with the part's ``key``). A part counts as done only when both
  exist and the marker's key matches: a kill at any moment leaves either a complete part or
  one that is redone.
* :func:`open_workdir` decides what happens to a folder that already holds parts: with
  ``resume`` they are kept if the plan is the same (a different model, a changed input or other
  settings are refused with one line naming the model, the file or the settings); without it
  they are refused (pass --resume, or --overwrite to start over), and with ``overwrite`` they are
  cleared. Files that are not parts (a stored reference pool) are left alone.
* :func:`mark_done` / :func:`part_done` write and test a marker; :func:`clear_parts` removes
  parts, markers and the plan once their results are safely merged.

Every function takes plain paths and dicts, so the picklable part jobs that run on other
workers (``run_shard``, ``run_part``) call :func:`mark_done` themselves.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ..errors import file_error

__all__ = ["PLAN", "open_workdir", "mark_done", "part_done", "marker_path", "has_parts", "clear_parts"]

PLAN = "plan.json"


def marker_path(part: str | os.PathLike) -> Path:
    """The completion marker of a part file: ``part-<id>.done`` beside it."""
    p = Path(part)
    return p.with_name(p.name.split(".", 1)[0] + ".done")


def mark_done(part: str | os.PathLike, key: str, **record) -> Path:
    """Write the marker of the (already written) part file ``part``, atomically."""
    from ..atomic import atomic_path

    marker = marker_path(part)
    with atomic_path(marker, suffix=".done") as tmp:
        tmp.write_text(json.dumps({"key": key, **record}))
    return marker


def part_done(part: str | os.PathLike, key: str) -> bool:
    """True when ``part`` and its marker exist and the marker names ``key``."""
    marker = marker_path(part)
    if not (Path(part).is_file() and marker.is_file()):
        return False
    try:
        return json.loads(marker.read_text()).get("key") == key
    except (OSError, ValueError, AttributeError):
        return False


def has_parts(folder: str | os.PathLike) -> int:
    """How many completed parts (markers) ``folder`` holds; 0 when it holds none or is absent."""
    f = Path(folder)
    return len(list(f.glob("part-*.done"))) if f.is_dir() else 0


def _part_files(folder: Path) -> list[Path]:
    return [p for p in folder.glob("part-*") if p.is_file()]


def clear_parts(folder: str | os.PathLike, remove_folder: bool = True, keep_others: bool = True) -> None:
    """Remove the parts, markers and plan of ``folder``, and the folder when nothing else is left
    (``keep_others=False``: the folder goes with whatever else it holds, e.g. merge spill files)."""
    f = Path(folder)
    if not f.is_dir():
        return
    if not keep_others:
        shutil.rmtree(f, ignore_errors=True)
        return
    for p in _part_files(f):
        p.unlink(missing_ok=True)
    (f / PLAN).unlink(missing_ok=True)
    if remove_folder and not any(f.iterdir()):
        shutil.rmtree(f, ignore_errors=True)


def open_workdir(folder: str | os.PathLike, plan: dict, *, resume: bool, overwrite: bool = False,
                 what: str = "run", unit: str = "part") -> int:
    """Prepare ``folder`` for the parts of ``plan``; return how many parts it already holds.

    Parameters
    ----------
    folder : path
        The work folder (created when absent).
    plan : dict
        What every part depends on (JSON-ready). ``model_scoring_id`` and ``model`` (its path,
        for messages) and ``input_identity`` (a list of identity records) get their own
        messages; every other key must be equal to resume.
    resume : bool
        Keep the parts of an interrupted run with the same plan.
    overwrite : bool
        Without ``resume``: clear the parts of an earlier run instead of refusing.
    what, unit : str
        The job's name and its part's name in messages ("scan", "shard").

    Raises
    ------
    InputError
        One line naming the folder, the model or the changed input.
    """
    f = Path(folder)
    n_done = has_parts(f)
    left = _part_files(f) if f.is_dir() else []
    if left and not resume:
        if not overwrite:
            raise file_error(f, f"an interrupted {what} left {n_done} completed {unit}(s) here; pass --resume to "
                             "continue it, or --overwrite (or delete the folder) to start over")
        clear_parts(f, remove_folder=False)
        left, n_done = [], 0
    if left:
        _check_same_plan(f, plan, what)
        return n_done
    f.mkdir(parents=True, exist_ok=True)
    from ..atomic import atomic_open

    with atomic_open(f / PLAN) as fh:
        json.dump(plan, fh, sort_keys=True, indent=1)
    return 0


def _check_same_plan(f: Path, plan: dict, what: str) -> None:
    from ..identity import same_input

    try:
        old = json.loads((f / PLAN).read_text())
    except (OSError, ValueError):
        old = None
    if not isinstance(old, dict) or "model_scoring_id" not in old:
        raise file_error(f, f"cannot resume: the folder's {PLAN} is missing or from an older deepmine; delete the "
                         "folder (or pass --overwrite without --resume) to start over")
    if old["model_scoring_id"] != plan.get("model_scoring_id"):
        raise file_error(plan.get("model", f), f"cannot resume {f}: the model's graph or weights differ from the "
                         f"interrupted {what}'s ({old.get('model')}); rerun with that model, or delete the folder "
                         "to start over")
    before = {r.get("path"): r for r in old.get("input_identity", [])}
    now_paths = set()
    for now in plan.get("input_identity", []):
        now_paths.add(now["path"])
        rec = before.get(now["path"])
        if rec is not None and not same_input(rec, now):
            raise file_error(now["path"], f"changed since the interrupted {what} in {f} (size, time or content "
                             "differ), so its completed parts are stale; delete the folder to start over")
    fixed = ("model_scoring_id", "input_identity", "model")
    mine = json.loads(json.dumps({k: v for k, v in plan.items() if k not in fixed}))
    theirs = {k: v for k, v in old.items() if k not in fixed}
    diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
    if set(before) != now_paths:
        diff.insert(0, "inputs")
    if diff:
        raise file_error(f, f"cannot resume: this folder belongs to a {what} with different settings "
                         f"({', '.join(diff)}); rerun with the same ones, or delete the folder to start over")
