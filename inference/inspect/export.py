"""Graded candidates back into training: ``deepmine inspect export`` (seed 2.5, phase 2).

The false positives graders rejected (N, X: spirals, rings, mergers, artefacts — Figure 2.6)
become extra negatives, and the lenses they found (A, B, optionally C) extra positives, for
``deepmine train ... --extra-negatives / --extra-positives``. Both are written as cutout stacks
N×C×H×W with the dtype of the source stacks, in order of catalogue id, each with a
``<name>.rows.ecsv`` beside it listing id, source, index and the grades of every row.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_path, check_writable
from ..errors import InputError, file_error
from .cutouts import CutoutStore
from .grades import GradeLog, Verdict, combine_grades


@dataclass
class ExportResult:
    """What :func:`export_grades` wrote: counts and paths."""

    n_lenses: int
    n_negatives: int
    n_undecided: int
    written: list[Path]


def rows_path(stack: str | os.PathLike) -> Path:
    p = Path(stack)
    return p.with_name(f"{p.stem}.rows.ecsv")


def _write(path: Path, cutouts: np.ndarray, verdicts: Sequence[Verdict]) -> list[Path]:
    from astropy.table import Table

    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, cutouts)
    t = Table(meta={"cutouts": path.name})
    t["id"] = np.array([v.id for v in verdicts], dtype=np.int64)
    t["source"] = np.array([v.source for v in verdicts], dtype=str)
    t["index"] = np.array([v.index for v in verdicts], dtype=np.int64)
    t["grades"] = np.array([v.grades for v in verdicts], dtype=str)
    side = rows_path(path)
    with atomic_path(side) as tmp:
        t.write(tmp, format="ascii.ecsv", overwrite=True)
    return [path, side]


def _provenance(catalog: Path) -> dict:
    """The catalogue's provenance (``table.meta``); empty if the catalogue is gone."""
    from ..catalog.io import read_catalog

    try:
        return dict(read_catalog(catalog).meta)
    except InputError:
        return {}


def _check_same_catalogue(paths: Sequence[Path], logs: Sequence[GradeLog]) -> None:
    """Grade files of different catalogues grade different objects under the same ids: refuse."""
    def key(log):
        return ("id", log.catalog_id) if log.catalog_id else ("path", Path(log.catalog or "").name)

    first = key(logs[0])
    for p, log in zip(paths[1:], logs[1:]):
        if key(log) != first:
            raise file_error(p, f"grades another catalogue ({key(log)[1] or 'unknown'}) than {paths[0]} "
                                f"({first[1] or 'unknown'}); export each catalogue's grades on their own")


def export_grades(grades: Sequence[str | os.PathLike], negatives: str | os.PathLike | None = None,
                  lenses: str | os.PathLike | None = None, cutouts: Sequence[os.PathLike] | None = None,
                  graders: Sequence[str] | None = None, include_c: bool = False,
                  agreement: str = "majority") -> ExportResult:
    """Write the graded false positives (``negatives``) and lenses (``lenses``) as cutout stacks.

    Parameters
    ----------
    grades : one or several grades files of the same catalogue (graders combined, see
        :func:`~deepmine.inference.inspect.grades.combine_grades`).
    negatives, lenses : output ``.npy`` paths (at least one). A class with no candidate is
        not written (the result says so).
    cutouts : the stacks the catalogue rows point at (default: found from the ``source``
        column beside the catalogue named in the grades file, or beside the grades file).
    graders : only these graders' grades.
    include_c : C (possible lens) counts as a lens; otherwise as neither.
    agreement : ``"majority"`` or ``"unanimous"`` among a candidate's graders.
    """
    if negatives is None and lenses is None:
        raise InputError("nothing to write: give --negatives and/or --lenses")
    outs = [Path(p) for p in (negatives, lenses) if p is not None]
    paths = [Path(g) for g in grades]
    if not paths:
        raise InputError("give at least one grades file")
    for out in outs:
        if out.suffix.lower() != ".npy":
            raise file_error(out, "cutout stacks are written as .npy; name the output *.npy")
        check_writable(out)
        if any(out.resolve() == p.resolve() for p in paths) or any(
                rows_path(out).resolve() == p.resolve() for p in paths):
            raise file_error(out, "would overwrite a grades file; choose another name")
    if negatives is not None and lenses is not None and Path(negatives).resolve() == Path(lenses).resolve():
        raise InputError("--negatives and --lenses name the same file")
    logs = [GradeLog(p) for p in paths]
    for p, log in zip(paths, logs):
        if not log.actions:
            raise file_error(p, "grades file holds no grades")
    _check_same_catalogue(paths, logs)
    verdicts = combine_grades(logs, graders, include_c, agreement)
    if graders and not verdicts:
        raise InputError(f"--grader {', '.join(graders)}: no grades by that grader (graders are: "
                         f"{', '.join(sorted({g for lg in logs for g in lg.graders()}))})")
    search, meta = [], {}
    for p, log in zip(paths, logs):
        if log.catalog:
            cat = Path(log.catalog)
            search.append(cat.parent if cat.is_absolute() else p.parent / cat.parent)
            if not meta and not cutouts:
                meta = _provenance(cat if cat.is_absolute() else p.parent / cat)
        search.append(p.parent)
    groups = {"negative": [v for v in verdicts if v.verdict == "negative"],
              "lens": [v for v in verdicts if v.verdict == "lens"]}
    wanted = [(k, Path(o)) for k, o in (("negative", negatives), ("lens", lenses)) if o is not None]
    needed = [v for k, _ in wanted for v in groups[k]]
    written: list[Path] = []
    if needed:
        rows = {"id": np.array([v.id for v in needed], dtype=np.int64),
                "source": np.array([v.source for v in needed], dtype=str),
                "index": np.array([v.index for v in needed], dtype=np.int64)}
        store = CutoutStore.for_rows(rows, cutouts, dict.fromkeys(search), what=str(paths[0]), meta=meta)
        read = {Path(q).resolve() for q in store.paths.values()}
        for out in outs:
            if out.resolve() in read or rows_path(out).resolve() in read:
                raise file_error(out, "would write over a cutout stack the grades point at; choose another output")
        for kind, out in wanted:
            sel = groups[kind]
            if sel:
                stack = store.gather([v.source for v in sel], [v.index for v in sel])
                written += _write(out, stack, sel)
    return ExportResult(len(groups["lens"]), len(groups["negative"]),
                        sum(v.verdict == "undecided" for v in verdicts), written)
