"""Reference pools of a selection function: negatives scored by the model being measured.

A lens's ordinality is taken against a pool of negatives scored by the same model
(:class:`deepmine.inference.ranking.pool.ReferencePool`): LensCrafter's non-lens scenes
(:func:`build_reference_pool`) or the user's own cutouts (:func:`score_negatives_file`).
"""
from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from deepmine.inference.errors import InputError, file_error
from deepmine.inference.formats import HSC_BANDS

__all__ = ["build_reference_pool", "score_negatives_file", "select_bands", "get_pool", "stored_pool", "CRAFT_BANDS",
           "DEFAULT_POOL_SIZE", "POOL_CHUNK"]

#: Negatives crafted for a reference pool when none is given (its top 0.5 % = 100 objects).
DEFAULT_POOL_SIZE = 20000
#: Negatives crafted (or read) and scored at once.
POOL_CHUNK = 1024
#: LensCrafter's channel order.
CRAFT_BANDS = HSC_BANDS


def select_bands(images: np.ndarray, bands) -> np.ndarray:
    """The channels of LensCrafter images (order :data:`CRAFT_BANDS`) that a model expects, in its order."""
    bands = list(bands)
    if bands == list(CRAFT_BANDS):
        return images
    missing = [b for b in bands if b not in CRAFT_BANDS]
    if missing:
        raise InputError(
            f"selection function: the model expects bands {bands}; LensCrafter crafts {list(CRAFT_BANDS)}"
        )
    return np.ascontiguousarray(images[:, [CRAFT_BANDS.index(b) for b in bands]])


_POOLS: dict = {}


def get_pool(pool):
    """A :class:`ReferencePool` from a pool, a path (cached per process) or sorted scores."""
    from deepmine.inference.ranking.pool import ReferencePool

    if isinstance(pool, ReferencePool):
        return pool
    if isinstance(pool, (str, os.PathLike)):
        p = Path(pool).resolve()
        st = p.stat() if p.exists() else None
        key = (str(p), st.st_size if st else None, st.st_mtime_ns if st else None)
        if key not in _POOLS:
            _POOLS[key] = ReferencePool.load(p)
        return _POOLS[key]
    return ReferencePool(np.asarray(pool))



def stored_pool(path, model, *, seed: int | None, n: int, source: str):
    """The pool stored at ``path`` by an earlier run, if it was scored by ``model`` (scoring
    identity) from the same negatives (``source``: "lenscrafter negatives" with ``seed``, or the
    path of the user's cutouts) and ``n`` of them; else None (it is then rebuilt and replaced).

    ``deepmine selection`` keeps its pool in the work folder (``OUT.parts/pool.fits``), so a
    resumed or repeated run does not craft and score it again.
    """
    from deepmine.inference.ranking.pool import ReferencePool

    p = Path(path)
    if not p.is_file():
        return None
    pool = ReferencePool.load(p)
    prov = pool.provenance
    have = (prov.get("scoring_id"), prov.get("seed"), prov.get("n_negatives"), prov.get("source"))
    return pool if have == (model.scoring_id, seed, n, source) else None


# --------------------------------------------------------------------------------------
# reference pools
# --------------------------------------------------------------------------------------
def build_reference_pool(model, n: int = DEFAULT_POOL_SIZE, *, seed: int = 0, batch_size: int | None = None,
                         progress: Callable[[int], None] | None = None):
    """Score ``n`` LensCrafter non-lens scenes with ``model`` into a :class:`ReferencePool`.

    The negatives (every kind of :data:`deepmine.lenscrafter.NEGATIVE_KINDS`, in turn) are
    crafted in chunks of :data:`POOL_CHUNK` from a seed derived from ``seed``, at the model's
    size and pixel scale; only their logits are kept.
    """
    from deepmine.inference.ranking.pool import ReferencePool

    from ..negatives import craft_negatives

    if int(n) < 1:
        raise InputError(f"--pool-size: must be at least 1, got {n}")
    meta = model.metadata
    c, h, w = model.input_shape
    kind = meta.preprocessing.get("kind")
    output = "uint8" if kind == "percentile" else "float32"
    scores = np.empty(int(n), dtype=np.float32)
    neg_seed = int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, 0x9E6A7]).generate_state(1)[0])
    for s in range(0, int(n), POOL_CHUNK):
        k = min(POOL_CHUNK, int(n) - s)
        images, _ = craft_negatives(k, seed=neg_seed, index_offset=s, size=int(h),
                                    pixel_scale=float(meta.pixel_scale), output=output)
        scores[s:s + k] = model.predict(select_bands(images, meta.bands), batch_size=batch_size)[0]
        if progress is not None:
            progress(k)
    return ReferencePool.from_scores(
        scores, model_hash=model.sha256, scoring_id=model.scoring_id, source="lenscrafter negatives", n_negatives=int(n), seed=int(seed),
        created=now_utc(),
    )


def score_negatives_file(model, path, *, batch_size: int | None = None,
                         progress: Callable[[int], None] | None = None):
    """Score the cutouts of ``path`` into a :class:`ReferencePool`.

    ``path`` is anything the scanner reads as cutouts (:func:`deepmine.inference.inputs.readers.resolve_inputs`):
    a ``.npy`` stack, a FITS cube or a directory of FITS cutouts. Blank cutouts (flag BLANK)
    are left out of the pool: their scores mean nothing.
    """
    from deepmine.inference.inputs.readers import FLAG_BLANK, read_block, resolve_inputs
    from deepmine.inference.metadata import file_sha256
    from deepmine.inference.ranking.pool import ReferencePool

    p = Path(path)
    if not p.exists():
        raise file_error(p, "negatives file not found")
    meta = model.metadata
    (spec,), _ = resolve_inputs([p], meta)
    scores, blank = [], 0
    step = POOL_CHUNK
    for s in range(0, spec.n, step):
        block = read_block(spec, s, min(s + step, spec.n), meta)
        keep = block.valid & ((block.flags & FLAG_BLANK) == 0)
        blank += int((~keep).sum())
        if keep.any():
            scores.append(model.predict(block.images[keep], batch_size=batch_size)[0])
        if progress is not None:
            progress(int(keep.size))
    scores = np.concatenate(scores) if scores else np.empty(0, np.float32)
    if scores.size == 0:
        raise file_error(p, "no usable negatives (every cutout is blank)")
    if not np.all(np.isfinite(scores)):
        raise file_error(p, "the model gave NaN/inf scores for some negatives (corrupt cutouts?)")
    return ReferencePool.from_scores(
        scores, model_hash=model.sha256, scoring_id=model.scoring_id, source=str(p),
        source_sha256=file_sha256(p) if p.is_file() else None, n_negatives=int(scores.size),
        n_blank_skipped=blank, created=now_utc(),
    )


def now_utc() -> str:
    """The time now, UTC, ISO 8601 to the second (provenance dates)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")

