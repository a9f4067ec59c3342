"""Ranking against negatives read a batch at a time from Parquet (a file or a dataset folder).

A survey-scale scan's catalogue is a partitioned Parquet dataset (``--format dataset``) of up to
10^10 rows; ``deepmine rank`` and reference pools read its score column in batches
(``pyarrow.dataset``) and never hold more of it than needed:

* :func:`tracer_counts` — for every tracer, the negatives below and equal to it, summed batch by
  batch with the same exact integer counts as :func:`~deepmine.inference.ranking.ranking_performance`
  (memory: the tracers and one batch). RP, the fraction above the cut and the TRC follow
  (:class:`StreamedRanking`), equal bit for bit to the in-memory functions on the same scores.
* :func:`sorted_scores_from_parquet` — the sorted pool of a dataset's scores (memory: the pool
  itself, 4 bytes a float32 logit; the rows are counted first, then read into one array sorted
  in place). Batches come from :func:`deepmine.inference.ranking.scorefile.iter_scores`.

Rows flagged as not ranked (``BLANK``, ``OFF_IMAGE``: null scores by design) are left out, as
:func:`~deepmine.inference.ranking.scorefile.read_scores` leaves them out of a catalogue.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..errors import InputError, file_error
from .scorefile import BATCH_ROWS, is_parquet_source, iter_scores

__all__ = ["is_parquet_source", "iter_scores", "tracer_counts", "StreamedRanking", "sorted_scores_from_parquet",
           "BATCH_ROWS"]


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
        from .kernels import trc_from_ordinality

        return trc_from_ordinality(self.ordinality)


def tracer_counts(tracers, path: str | os.PathLike, column: str | None = None, *,
                  batch_rows: int = BATCH_ROWS) -> StreamedRanking:
    """Count, for every tracer, the negatives of a Parquet file/dataset below and equal to it."""
    from .kernels import _bucket_counts, _n_chunks, check_scores

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


def sorted_scores_from_parquet(path: str | os.PathLike, column: str | None = None, *,
                               batch_rows: int = BATCH_ROWS) -> tuple[np.ndarray, dict]:
    """The sorted scores of a Parquet file/dataset and their provenance (source, column, the
    model's scoring identity ``DM_SCID`` when recorded): a reference pool's contents
    (:meth:`deepmine.inference.ranking.pool.ReferencePool.load`). Memory: the scores, in one array."""
    from .. import __version__
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
    return scores, prov
