"""Ranking against negatives read a batch at a time from Parquet (a file or a dataset folder).

A survey-scale scan's catalogue is a partitioned Parquet dataset (``--format dataset``) of up to
10^10 rows; ``deepmine rank`` and reference pools read its score column in batches
(``pyarrow.dataset``) and never hold more of it than needed:

* :func:`tracer_counts` — for every tracer, the negatives below and equal to it, summed batch by
  batch with the same exact integer counts as :func:`~deepmine.inference.ranking.ranking_performance`
  (memory: the tracers and one batch). RP, the fraction above the cut and the TRC follow
  (:class:`StreamedRanking`), equal bit for bit to the in-memory functions on the same scores.
* :func:`pool_from_parquet` — the sorted pool of a dataset's scores (memory: the pool itself,
  4 bytes a float32 logit; the rows are counted first, then read into one array sorted in place).

Rows flagged as not ranked (``BLANK``, ``OFF_IMAGE``: null scores by design) are left out, as
:func:`~deepmine.inference.scorefile.read_scores` leaves them out of a catalogue.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError, file_error, first_line

__all__ = ["is_parquet_source", "iter_scores", "tracer_counts", "StreamedRanking", "pool_from_parquet",
           "BATCH_ROWS"]

BATCH_ROWS = 1 << 20


def is_parquet_source(path: str | os.PathLike) -> bool:
    """A Parquet file or a folder of Parquet files (a dataset)."""
    p = Path(path)
    return p.suffix.lower() == ".parquet" and p.is_file() or p.is_dir()


def _dataset(path: Path):
    import pyarrow.dataset as ds

    from .catalog_dataset import dataset_files

    try:
        if path.is_dir():
            files = dataset_files(path)
            if not files:
                raise file_error(path, "folder holds no Parquet files")
            return ds.dataset([str(f) for f in files], format="parquet")
        return ds.dataset(str(path), format="parquet")
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many kinds for bad files
        raise file_error(path, f"not a readable Parquet catalogue ({first_line(exc)})") from None


def _column(path: Path, names: list[str], column: str | None) -> str:
    from .scorefile import SCORE_COLUMNS

    if column is None:
        column = next((c for c in SCORE_COLUMNS if c in names), None)
        if column is None:
            raise file_error(path, f"no score column (looked for {', '.join(SCORE_COLUMNS)}); pass --column")
    elif column not in names:
        raise file_error(path, f"no column {column!r}; columns are: {', '.join(names)}")
    return column


def iter_scores(path: str | os.PathLike, column: str | None = None, *, batch_rows: int = BATCH_ROWS,
                check: bool = True) -> Iterator[np.ndarray]:
    """Batches of the scores in a Parquet file or dataset folder (rows not ranked left out).

    Raises
    ------
    InputError
        Unreadable file, missing column, or (``check``) a NaN/inf score, naming the file and row.
    """
    from .blocks import FLAG_UNRANKED

    p = Path(path)
    data = _dataset(p)
    col = _column(p, data.schema.names, column)
    cols = [col] + (["flags"] if "flags" in data.schema.names else [])
    seen = 0
    try:
        batches = data.to_batches(columns=cols, batch_size=int(batch_rows))
        for batch in batches:
            arr = batch.column(0).to_numpy(zero_copy_only=False)
            if arr.dtype.kind not in "fiu":
                raise file_error(p, f"column {col!r} is not numeric ({arr.dtype})")
            if len(cols) == 2:
                arr = arr[(batch.column(1).to_numpy(zero_copy_only=False) & FLAG_UNRANKED) == 0]
            if check and arr.size:
                bad = np.flatnonzero(~np.isfinite(arr))
                if bad.size:
                    raise file_error(p, f"score {seen + int(bad[0])} of column {col!r} is {arr[bad[0]]}; NaN, "
                                     "null and inf scores cannot be ranked")
            seen += arr.size
            yield arr
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise file_error(p, f"not a readable Parquet catalogue ({first_line(exc)})") from None
    if seen == 0:
        raise file_error(p, "catalogue has no ranked rows")


@dataclass
class StreamedRanking:
    """Tracers against streamed negatives: per tracer, negatives ``less`` than and ``equal`` to it."""

    tracers: np.ndarray
    less: np.ndarray
    equal: np.ndarray
    n_negatives: int

    @property
    def ordinality(self) -> np.ndarray:
        """Each tracer's ordinality against the negatives (:func:`~deepmine.inference.ranking.ordinality_against`)."""
        return (self.less + 0.5 * self.equal) / self.n_negatives

    def ranking_performance(self) -> float:
        """2·AUC − 1, the exact integer count of :func:`~deepmine.inference.ranking.ranking_performance`."""
        twice = int(np.sum(2 * self.less + self.equal))
        return 2.0 * twice / (2.0 * self.tracers.shape[0] * self.n_negatives) - 1.0

    def fraction_above(self, cut: float = 0.995) -> float:
        if not 0.0 <= cut <= 1.0:
            raise InputError(f"cut: ordinality cut must be in [0, 1], got {cut}")
        return float(np.mean(self.ordinality > cut))

    def curve(self):
        """The :class:`~deepmine.inference.ranking.TracerRecoveryCurve`."""
        from .ranking import trc_from_ordinality

        return trc_from_ordinality(self.ordinality)


def tracer_counts(tracers, path: str | os.PathLike, column: str | None = None, *,
                  batch_rows: int = BATCH_ROWS) -> StreamedRanking:
    """Count, for every tracer, the negatives of a Parquet file/dataset below and equal to it."""
    from .ranking import _bucket_counts, _n_chunks, check_scores

    t = check_scores(tracers, "tracer scores")
    uniq, inverse = np.unique(t, return_inverse=True)
    less = np.zeros(uniq.shape[0], dtype=np.int64)
    eq = np.zeros(uniq.shape[0], dtype=np.int64)
    m = 0
    for batch in iter_scores(path, column, batch_rows=batch_rows):
        if not batch.size:
            continue
        b = np.ascontiguousarray(batch if batch.dtype in (np.float32, np.float64) else batch.astype(np.float64))
        u = uniq
        if u.dtype != b.dtype:  # compare in float64, exactly (as ranking._counts_against)
            u, b = u.astype(np.float64), b.astype(np.float64)
        lb, eb = _bucket_counts(u, b, _n_chunks(b.shape[0]))
        less += lb
        eq += eb
        m += b.shape[0]
    return StreamedRanking(t, less[inverse], eq[inverse], m)


def pool_from_parquet(path: str | os.PathLike, column: str | None = None, *, batch_rows: int = BATCH_ROWS):
    """The sorted scores of a Parquet file/dataset as a :class:`~deepmine.inference.pool.ReferencePool`
    (provenance: the source, column and the model's scoring identity ``DM_SCID`` when recorded)."""
    from . import __version__
    from .pool import ReferencePool
    from .scorefile import scoring_id_of

    n, dtype = 0, None
    for batch in iter_scores(path, column, batch_rows=batch_rows, check=False):
        n += batch.size
        dtype = np.result_type(dtype or batch.dtype, batch.dtype)
    dtype = np.float32 if dtype == np.float32 else np.float64
    scores = np.empty(n, dtype=dtype)
    at = 0
    for batch in iter_scores(path, column, batch_rows=batch_rows):
        scores[at:at + batch.size] = batch
        at += batch.size
    if at != n:
        raise file_error(path, "changed while it was read")
    scores.sort()
    prov = {"score": "logit", "deepmine_version": __version__, "source": str(path), "column": column or "auto"}
    sid = scoring_id_of(path)
    if sid:
        prov["scoring_id"] = sid
    return ReferencePool(scores, prov)
