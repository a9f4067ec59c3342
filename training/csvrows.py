"""Rows of figures as CSV: ``history.csv`` of a classifier run, ``losses.csv`` and ``diversity.csv`` of a GAN run.

Torch-free, so that :mod:`deepmine.training.gan` imports without torch.
"""
from __future__ import annotations

import csv
from pathlib import Path

from deepmine.inference.atomic import atomic_open

__all__ = ["write_csv"]


def write_csv(path: Path, rows: list[dict], columns: list[str] | None = None) -> None:
    """Write ``rows`` (dicts) as CSV, atomically; floats with 6 significant digits.

    Parameters
    ----------
    path : Path
    rows : list of dict
    columns : list of str, optional
        The header; default: the rows' keys in order of first appearance (and then nothing is
        written when there are no rows).
    """
    if columns is None:
        if not rows:
            return
        columns = list(rows[0])
        for r in rows[1:]:
            columns += [k for k in r if k not in columns]
    with atomic_open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
