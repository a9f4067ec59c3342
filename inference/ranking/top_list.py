"""The top candidates of a scan: selection, the ``_top.ecsv`` list and the labelled mosaic."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..errors import InputError

__all__ = ["select_top", "top_count", "mosaic_of", "write_top", "DEFAULT_TOP_FRACTION", "MOSAIC_MAX"]

DEFAULT_TOP_FRACTION = 0.005  # the seed inspects ordinality > 0.995
MOSAIC_MAX = 64


def top_count(n_rows: int, top: float | int) -> int:
    """How many of ``n_rows`` ranked rows ``--top`` keeps: a count, or ``ceil(fraction · n_rows)``
    (at least 1, at most ``n_rows``); the count of rows with ordinality > 1 − fraction.

    >>> top_count(1000, 0.005), top_count(10, 0.005), top_count(10, 50)
    (5, 1, 10)
    """
    if n_rows <= 0:
        return 0
    if isinstance(top, float) and top < 1:
        return max(1, min(n_rows, math.ceil(top * n_rows - 1e-9)))
    return max(1, min(n_rows, int(top)))


def select_top(table, top: float | int | None, *, column: str | None = None):
    """Rows of the top candidates, best first: the one meaning of ``--top`` (scan, inspect).

    Parameters
    ----------
    table : astropy.table.Table
        A catalogue with ``logit`` (and, when present, ``flags``, ``ordinality``,
        ``ordinality_ref``, ``id``).
    top : float or int or None
        < 1: a fraction — the rows whose ordinality is above 1 − ``top`` (ordinality against the
        reference pool, ``ordinality_ref``, when the table has it (not all null); else among the catalogue's own
        ranked rows, i.e. the ``ceil(top · n)`` highest logits). ≥ 1: a count of the highest
        logits. None: :data:`DEFAULT_TOP_FRACTION`.
    column : str, optional
        The ordinality column to cut a fraction on (default: as above).

    Rows with a non-finite logit or a not-ranked flag (BLANK, OFF_IMAGE: no signal, no score) are
    never selected. Order: logit descending, ties by ``id`` ascending (else by row).
    """
    from ..inputs.blocks import FLAG_UNRANKED

    if top is None:
        top = DEFAULT_TOP_FRACTION
    logit = np.asarray(table["logit"], dtype=np.float64)
    ranked = np.isfinite(logit)
    if "flags" in table.colnames:
        ranked &= (np.asarray(table["flags"]) & FLAG_UNRANKED) == 0
    rows = np.flatnonzero(ranked)
    tie = np.asarray(table["id"])[rows] if "id" in table.colnames else rows
    rows = rows[np.lexsort((tie, -logit[rows]))]
    if isinstance(top, float) and top < 1:
        if not 0 < top < 1:
            raise InputError(f"--top: a fraction must be in (0, 1), got {top}")
        col = column or next((c for c in ("ordinality_ref", "ordinality") if c in table.colnames
                              and np.isfinite(np.asarray(table[c], dtype=np.float64)).any()), None)
        if col is None:
            return table[rows[: top_count(len(rows), top)]]
        ordinality = np.asarray(table[col], dtype=np.float64)[rows]
        return table[rows[ordinality > 1.0 - top]]
    return table[rows[: int(top)]]


def _label(k: int, row, rank_col: str, kept: list, indexed: bool) -> str:
    """Mosaic label: rank, id and the first kept source-catalogue column (e.g. a name); scores;
    RA/Dec in degrees when known; the file (and row) it came from. Lines too wide for a cutout
    are shortened on the right by :func:`deepmine.inference.mosaic.write_mosaic`."""
    head = f"#{k + 1}  id {int(row['id'])}"  # two spaces: the mosaic font's space is narrow
    if kept and str(row[kept[0]]).strip() not in ("", "--", "nan"):
        head += f"  {row[kept[0]]}"
    lines = [head, f"logit {float(row['logit']):.3f}  ord {float(row[rank_col]):.5f}"]
    ra, dec = float(row["ra"]), float(row["dec"])
    if np.isfinite(ra) and np.isfinite(dec):
        lines.append(f"{ra:.5f}  {dec:+.5f}")
    where = Path(str(row["source"])).name + (f"[{int(row['index'])}]" if indexed else "")
    flags = int(row["flags"])
    lines.append(where + (f"  flags {flags}" if flags else ""))
    return "\n".join(lines)


def mosaic_of(top, specs, metadata, path, *, max_cutouts: int = MOSAIC_MAX, ncols: int = 8,
              stretch: str = "percentile") -> Path:
    """Write the mosaic of the first ``max_cutouts`` rows of ``top`` (needs ``spec_index``)."""
    from ..inputs.readers import read_block
    from ..mosaic import write_mosaic
    from ..scan.shards import CATALOG_COLUMNS

    rows = top[:max_cutouts]
    if len(rows) == 0:
        raise InputError("--mosaic: no candidates above the --top cut to draw")
    images, labels = [], []
    rank_col = "ordinality_ref" if "ordinality_ref" in rows.colnames else "ordinality"
    kept = [c for c in rows.colnames if c not in CATALOG_COLUMNS and c != "spec_index"]
    for k, row in enumerate(rows):
        spec = specs[int(row["spec_index"])]
        if spec.kind == "fits_dir":
            i = spec.paths.index(str(row["source"]))
        else:
            i = int(row["index"])
        block = read_block(spec, i, i + 1, metadata)
        images.append(block.images[0])
        labels.append(_label(k, row, rank_col, kept, spec.kind != "fits_dir"))
    title = f"top {len(rows)} of {len(top)} candidates (ranked by logit; {rank_col})"
    return write_mosaic(images, labels, path, ncols=ncols, bands=metadata.bands, stretch=stretch, title=title)


def write_top(work, top, top_out, mosaic, result, specs, model, stretch) -> None:
    """Write the top list (ECSV) and the mosaic of ``work`` (a catalogue with ``spec_index``) into ``result``."""
    from ..catalog.io import write_catalog

    chosen = select_top(work, top)
    out_top = chosen.copy()
    out_top.remove_column("spec_index")
    write_catalog(out_top, top_out, ["ecsv"])
    result.top, result.n_top = top_out, len(chosen)
    if mosaic is not None:
        result.mosaic = mosaic_of(chosen, specs, model.metadata, mosaic, stretch=stretch)
