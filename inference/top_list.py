"""The top candidates of a scan: selection, the ``_top.ecsv`` list and the labelled mosaic."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import InputError

__all__ = ["select_top", "mosaic_of", "write_top", "DEFAULT_TOP_FRACTION", "MOSAIC_MAX"]

DEFAULT_TOP_FRACTION = 0.005  # the seed inspects ordinality > 0.995
MOSAIC_MAX = 64


def select_top(table, top: float | int | None, *, column: str | None = None):
    """Rows of the top candidates, best first.

    ``top`` < 1 is a fraction (ordinality > 1 − top, against the reference pool when the table
    has ``ordinality_ref``); ``top`` ≥ 1 a count of the highest logits. Rows with NaN scores or
    a not-ranked flag (BLANK, OFF_IMAGE: no signal, no score) are never selected.
    """
    from .readers import FLAG_UNRANKED

    if top is None:
        top = DEFAULT_TOP_FRACTION
    col = column or ("ordinality_ref" if "ordinality_ref" in table.colnames else "ordinality")
    logit = np.asarray(table["logit"], dtype=np.float64)
    finite = np.isfinite(logit) & ((np.asarray(table["flags"]) & FLAG_UNRANKED) == 0)
    if isinstance(top, float) and top < 1:
        if not 0 < top < 1:
            raise InputError(f"--top: a fraction must be in (0, 1), got {top}")
        keep = finite & (np.asarray(table[col]) > 1.0 - top)
        rows = np.flatnonzero(keep)
    else:
        rows = np.flatnonzero(finite)
    rows = rows[np.argsort(-logit[rows], kind="stable")]
    if not (isinstance(top, float) and top < 1):
        rows = rows[: int(top)]
    return table[rows]


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
    from .mosaic import write_mosaic
    from .readers import read_block
    from .shards import CATALOG_COLUMNS

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
    from .catalog import write_catalog

    chosen = select_top(work, top)
    out_top = chosen.copy()
    out_top.remove_column("spec_index")
    write_catalog(out_top, top_out, ["ecsv"])
    result.top, result.n_top = top_out, len(chosen)
    if mosaic is not None:
        result.mosaic = mosaic_of(chosen, specs, model.metadata, mosaic, stretch=stretch)
