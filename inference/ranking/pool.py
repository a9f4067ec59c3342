"""A stored reference pool: sorted negative scores and their provenance.

Scans of different patches, nights or machines are only comparable when their ordinality is
taken against the same pool of negatives scored by the same model. A pool is one FITS file:
the primary HDU holds the sorted scores (1-D, float32 or float64, memory-mapped on load) and
its header the provenance (``DMPOOL`` marker, ``NSCORES``, ``SCOREKND``, ``DM_SCID`` — the
scoring identity of the model that scored it, see :mod:`deepmine.inference.identity` —,
``MODELHSH`` (the model file's sha256, when known) and the full provenance as JSON in
``PROVJSON``, long-string CONTINUE cards). A pool with no recorded model (made from bare
scores) is accepted by the scanner with a warning; one from another model is refused.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..errors import InputError, file_error

POOL_MARKER = "deepmine-reference-pool-1"


@dataclass
class ReferencePool:
    """Sorted reference scores (ascending) with provenance.

    Attributes
    ----------
    scores : 1-D float array, sorted ascending
    provenance : dict
        Free-form: model hash, score kind (``"logit"``), source files, date, deepmine version.
    """

    scores: np.ndarray
    provenance: dict = field(default_factory=dict)

    @classmethod
    def from_scores(cls, scores, **provenance) -> ReferencePool:
        """Sort ``scores`` (finite, 1-D) into a pool; keyword arguments become provenance."""
        from .kernels import check_scores  # Numba loads when a pool is used, not at import

        s = np.sort(check_scores(scores, "reference scores"))
        from .. import __version__

        prov = {"score": "logit", "deepmine_version": __version__}
        prov.update(provenance)
        return cls(s, prov)

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def ordinality(self, scores) -> np.ndarray:
        """Ordinality of ``scores`` in this pool (see :func:`ordinality_against`)."""
        from .kernels import ordinality_against

        return ordinality_against(scores, self.scores, assume_sorted=True)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the pool atomically as FITS."""
        from astropy.io import fits

        hdu = fits.PrimaryHDU(np.asarray(self.scores))
        h = hdu.header
        h["DMPOOL"] = (POOL_MARKER, "deepmine reference pool")
        h["NSCORES"] = len(self)
        h["SCOREKND"] = str(self.provenance.get("score", "logit"))
        if "model_hash" in self.provenance:
            h["MODELHSH"] = str(self.provenance["model_hash"])[:68]
        if self.provenance.get("scoring_id"):
            h["DM_SCID"] = str(self.provenance["scoring_id"])  # a long-string (CONTINUE) card
        h["PROVJSON"] = json.dumps(self.provenance, sort_keys=True, default=str)
        with atomic_path(path, suffix=".fits") as tmp:
            hdu.writeto(tmp, overwrite=True)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> ReferencePool:
        """Read a pool written by :meth:`save`, or build one from the logits of a Parquet scan
        catalogue (a file or a ``--format dataset`` folder, read a batch at a time)."""
        from astropy.io import fits

        p = Path(path)
        from .stream import is_parquet_source, sorted_scores_from_parquet

        if is_parquet_source(p):  # a scan catalogue of negatives (Parquet file or dataset), read in batches
            return cls(*sorted_scores_from_parquet(p))
        if not p.is_file():
            raise file_error(p, "reference pool not found")
        try:
            with fits.open(p, memmap=True) as hdul:
                h = hdul[0].header
                if h.get("DMPOOL") != POOL_MARKER:
                    raise file_error(p, "not a deepmine reference pool (no DMPOOL header card)")
                data = hdul[0].data
                if data is None or data.ndim != 1 or data.shape[0] != h.get("NSCORES"):
                    raise file_error(p, "reference pool is truncated or malformed")
                scores = np.asarray(data.astype(data.dtype.newbyteorder("=")))
                prov = json.loads(h.get("PROVJSON", "{}"))
        except InputError:
            raise
        except (OSError, ValueError, TypeError) as exc:
            raise file_error(p, f"cannot read reference pool ({exc})") from None
        if scores.size > 1 and np.any(np.diff(scores[:: max(1, scores.size // 4096)]) < 0):
            raise file_error(p, "reference pool is not sorted")
        return cls(scores, prov)
