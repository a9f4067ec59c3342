"""What a scan reads: an input described by name (:class:`SourceSpec`), a block of objects as
read (:class:`Block`), and the per-object flags.

A :class:`SourceSpec` is a small, picklable description of one input — file paths and a few
options, never pixels — so a shard (``deepmine.inference.scan.shards.Shard``) can name "objects
``start:stop`` of this input" and any process can read them with
:func:`deepmine.inference.inputs.readers.read_block`, which returns a :class:`Block`.

Flags (int32 bitmask, the catalogue's ``flags`` column)
--------------------------------------------------------
``FLAG_NONFINITE`` = 1
    Some pixels were NaN or ±inf, or marked bad by the file's mask or variance plane
    (:mod:`deepmine.inference.inputs.planes`); they are masked (ignored by the normalisation, 0 in the
    model input).
``FLAG_BLANK`` = 2
    No signal: every band is constant or entirely masked. The score is meaningless.
``FLAG_EDGE`` = 4
    Partly (or wholly) off the survey image: the missing pixels are padded as masked pixels.
``FLAG_BAND_BLANK`` = 8
    At least one band, but not all, is constant or entirely masked.
``FLAG_SCORE_NONFINITE`` = 16
    The model returned a NaN/inf logit (set by the merge; such rows get NaN ordinality).
``FLAG_OFF_IMAGE`` = 32
    The catalogue position is not finite or the cutout lies wholly off the image: nothing to
    score.
``FLAG_CENTER_MASKED`` = 64
    The cutout's central pixel(s) — the one at ((W−1)/2, (H−1)/2), or the 2×2 around it when
    the size is even — are marked bad by a mask or variance plane in at least one band: the
    object itself may be an artefact or a saturated star. Still ranked.

Rows flagged ``BLANK`` or ``OFF_IMAGE`` are **not ranked**: their logit, probability and
ordinalities are null (NaN in FITS, empty in ECSV, null in Parquet) and they do not count in
anyone else's ordinality. Cutouts only partly off the edge stay ranked (``EDGE``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from ..lazyjit import lazy_njit

FLAG_NONFINITE = 1
FLAG_BLANK = 2
FLAG_EDGE = 4
FLAG_BAND_BLANK = 8
FLAG_SCORE_NONFINITE = 16
FLAG_OFF_IMAGE = 32
FLAG_CENTER_MASKED = 64
#: Rows with any of these flags are not scored or ranked (null logit and ordinality).
FLAG_UNRANKED = FLAG_BLANK | FLAG_OFF_IMAGE
FLAG_BITS = {
    "NONFINITE": (FLAG_NONFINITE, "NaN/inf or mask-plane pixels masked"),
    "BLANK": (FLAG_BLANK, "blank cutout: every band constant or masked"),
    "EDGE": (FLAG_EDGE, "partly off the image edge; padded with masked pixels"),
    "BAND_BLANK": (FLAG_BAND_BLANK, "some (not all) bands constant or masked"),
    "SCORE_NONFINITE": (FLAG_SCORE_NONFINITE, "model returned a NaN/inf logit"),
    "OFF_IMAGE": (FLAG_OFF_IMAGE, "position not finite or wholly off the image: not scored"),
    "CENTER_MASKED": (FLAG_CENTER_MASKED, "central pixel(s) marked bad by a mask/variance plane"),
}

#: The kinds of input (:mod:`deepmine.inference.inputs.readers`).
KINDS = ("npy", "fits_cube", "fits_dir", "survey", "tiles")

__all__ = [
    "SourceSpec", "Block", "cutout_flags", "FLAG_BITS", "KINDS",
    "FLAG_NONFINITE", "FLAG_BLANK", "FLAG_EDGE", "FLAG_BAND_BLANK", "FLAG_SCORE_NONFINITE", "FLAG_OFF_IMAGE",
    "FLAG_CENTER_MASKED", "FLAG_UNRANKED",
]


@dataclass
class SourceSpec:
    """One input, described by paths and options only (picklable, JSON-compatible).

    Attributes
    ----------
    kind : one of ``npy``, ``fits_cube``, ``fits_dir``, ``survey``, ``tiles``
    paths : list of str
        ``npy``/``fits_cube``: the file; ``fits_dir``: every cutout file (sorted);
        ``survey``/``tiles``: the band images in the model's band order. Files only: an
        extension named as ``file.fits[N]`` is resolved into the ``hdu``/``hdus`` option.
    n : int
        Number of objects.
    name : str
        What the catalogue's ``source`` column says (the input path as given, extension
        included; for a directory, each file's path instead).
    options : dict
        Kind-specific: ``offset``/``dtype``/``shape`` (npy), ``hdu`` and ``planes`` (FITS),
        ``catalog``, ``ra_col``... (survey), ``tile``/``stride``/``grid`` (tiles), ``image_shape``.
    """

    kind: str
    paths: list
    n: int
    name: str
    options: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> dict:
        """:meth:`to_dict` with a directory's file list shortened (for catalogue headers)."""
        d = asdict(self)
        if self.kind == "fits_dir" and len(self.paths) > 3:
            d["paths"] = self.paths[:2] + [f"... {len(self.paths)} files in all"]
        return d


@dataclass
class Block:
    """Objects ``start:stop`` of one input, as read.

    ``images`` are N×C×H×W: uint8 stays uint8 (taken to be percentile-normalised already, the
    HSC convention); every other dtype becomes float32, with BZERO/BSCALE applied, before any
    arithmetic. Positions are NaN where unknown.
    """

    images: np.ndarray  # N×C×H×W, uint8 or float32
    flags: np.ndarray  # int32 (N,)
    index: np.ndarray  # int64 (N,): index within the source
    source: list  # str per object
    ra: np.ndarray
    dec: np.ndarray
    x: np.ndarray
    y: np.ndarray
    valid: np.ndarray  # bool (N,): False where a file was skipped (keep_going)
    skipped: list  # [(path, reason)]
    extra: dict = field(default_factory=dict)  # kept source-catalogue columns (survey scans)

    @classmethod
    def empty(cls, n: int, shape, dtype=np.float32) -> Block:
        """``n`` zero cutouts of ``shape`` (C×H×W), no flags, unknown positions, all valid."""
        nan = np.full(n, np.nan)
        return cls(np.zeros((n,) + tuple(shape), dtype=dtype), np.zeros(n, np.int32), np.zeros(n, np.int64), [],
                   nan, nan.copy(), nan.copy(), nan.copy(), np.ones(n, bool), [])


@lazy_njit(cache=True, nogil=True)  # Numba is imported at the first float block, not here
def _flags_kernel(x, out):  # pragma: no cover - compiled
    n, c, h, w = x.shape
    for i in range(n):
        f = 0
        blank = 0
        for j in range(c):
            bad = False
            first = True
            lo = 0.0
            hi = 0.0
            for yy in range(h):
                for xx in range(w):
                    v = x[i, j, yy, xx]
                    if v != v or v == np.inf or v == -np.inf:
                        bad = True
                        continue
                    if first:
                        lo = v
                        hi = v
                        first = False
                    elif v < lo:
                        lo = v
                    elif v > hi:
                        hi = v
            if bad:
                f |= 1
            if first or not hi > lo:
                blank += 1
        if blank == c:
            f |= 2
        elif blank > 0:
            f |= 8
        out[i] |= f


def cutout_flags(images: np.ndarray, flags: np.ndarray | None = None) -> np.ndarray:
    """NONFINITE / BLANK / BAND_BLANK flags of N×C×H×W cutouts, OR-ed into ``flags``."""
    x = np.ascontiguousarray(images)
    out = np.zeros(x.shape[0], dtype=np.int32) if flags is None else flags
    if not x.shape[0]:
        return out
    if x.dtype.kind in "ui":  # no NaN possible: vectorised min/max per band
        planes = x.reshape(x.shape[0], x.shape[1], -1)
        blank = (planes.min(axis=2) == planes.max(axis=2)).sum(axis=1)
        out |= np.where(blank == x.shape[1], FLAG_BLANK, np.where(blank > 0, FLAG_BAND_BLANK, 0)).astype(np.int32)
        return out
    _flags_kernel(x, out)
    return out
