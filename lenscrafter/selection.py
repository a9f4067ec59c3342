"""Selection function: how likely a trained model is to find a lens, over a grid of lens parameters.

Seed section 3.1.1 and Figure 3.3; SPEC.md section 6. For every cell of a
:class:`~deepmine.lenscrafter.selection_grid.SelectionGrid`, LensCrafter crafts ``per_cell``
lenses (axis values inside the cell, the other parameters at the Figure 4.2 reference lens or
drawn from the priors), the model scores them, and each lens's ordinality is taken against a
reference pool of negatives scored by the same model. A lens is *detected* when its ordinality
exceeds the inspection cut (0.995 by default: the top 0.5 % that the seed inspects by eye).

Work is cut into *parts*: runs of consecutive cells holding about ``part_lenses`` lenses
(whole craft chunks of about 1024 lenses). :func:`run_cells` computes one part — a plain
function of (model path, grid, cells, pool) → table, the same for a local loop and for a
distributed backend (:func:`run_part` is its picklable form, handed to ``map_parts``) — and
:func:`selection_function` runs every part, writes each as a part file (atomic; its presence
marks it done, so ``resume`` skips it), merges them and writes the result (FITS and ECSV,
atomic). When the model runs on a GPU, the next chunk is crafted in a helper thread while the
current one is scanned. Memory is bounded by two craft chunks (≈ 130 MB for 3×64×64 cutouts) whatever the grid's size.

Cost: every lens is crafted once and scanned once, so the time is
``cells × per_cell × (1/craft rate + 1/scan rate)`` plus the same for the pool's negatives;
it grows linearly with the number of cells (the product of the bins) and with ``per_cell``.
The default grid (:func:`~deepmine.lenscrafter.selection_grid.default_grid`: 4⁴ × 8² = 16,384
cells × 4 lenses = 65,536 lenses) plus a 20,000-negative pool is a few minutes on 2 cores.

Determinism: lens j of cell c is lens ``c·per_cell + j`` of the grid; its place in the cell
comes from the stream (seed, c) and its noise from LensCrafter's stream (craft seed, lens
number), so results do not depend on the scan batch size, the thread count, the pipelining
or how cells are split into parts.

Uncertainties: Wilson score intervals (as ``astropy.stats.binom_conf_interval``, without scipy) at 68.27 %
confidence by default (``level``).
"""
from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from deepmine.inference.errors import InputError, file_error, first_line
from deepmine.inference.formats import HSC_BANDS

from .selection_grid import SelectionGrid

__all__ = [
    "SelectionFunction",
    "run_cells",
    "run_part",
    "assemble",
    "plan_parts",
    "chunks_of",
    "cell_uniforms",
    "selection_function",
    "build_reference_pool",
    "score_negatives_file",
    "wilson_interval",
    "lens_params_for_cells",
    "DEFAULT_CUT",
    "DEFAULT_LEVEL",
]

DEFAULT_CUT = 0.995
DEFAULT_LEVEL = 0.6827
#: Lenses crafted (and then scanned) at once: bounds memory (about 65 MB for 3×64×64 cutouts)
#: and sets how often work switches between Numba and onnxruntime, whose spinning threads
#: slow the other down for a moment after each switch (256 cost ~10 % more CPU time than 1024).
CRAFT_LENSES = 1024
#: Target lenses per part file (the unit of resume and of distributed work).
DEFAULT_PART_LENSES = 4096
#: Negatives crafted for a reference pool when none is given (its top 0.5 % = 100 objects).
DEFAULT_POOL_SIZE = 20000
MARKER = "deepmine-selection-function-1"
PART_MARKER = "deepmine-selection-part-1"


# --------------------------------------------------------------------------------------
# statistics
# --------------------------------------------------------------------------------------
def wilson_interval(k, n, level: float = DEFAULT_LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of a binomial fraction ``k / n`` (arrays; n = 0 → [0, 1]).

    Parameters
    ----------
    k, n : int arrays of the same shape; detections and trials
    level : confidence level (0.6827 ≈ 1σ)

    Returns
    -------
    lo, hi : float64 arrays
    """
    from statistics import NormalDist  # stdlib: astropy's version needs scipy, not a core dependency

    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    lo = np.zeros(np.shape(n), dtype=np.float64)
    hi = np.ones(np.shape(n), dtype=np.float64)
    ok = n > 0
    if np.any(ok):
        z = NormalDist().inv_cdf(0.5 + level / 2.0)
        kk, nn = k[ok], n[ok]
        mid = (kk + z * z / 2.0) / (nn + z * z)
        half = z * np.sqrt(nn) / (nn + z * z) * np.sqrt(kk / nn * (nn - kk) / nn + z * z / (4.0 * nn))
        lo[ok] = np.where(kk == 0, 0.0, mid - half)
        hi[ok] = np.where(kk == nn, 1.0, mid + half)
    return lo, hi


# --------------------------------------------------------------------------------------
# the lenses of a set of cells
# --------------------------------------------------------------------------------------
def _seeds(seed: int) -> tuple[np.random.SeedSequence, int]:
    """(root of the per-chunk parameter draws, the craft noise seed) of a master seed."""
    root = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, 0x5E1EC7])
    return root, int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, 0xC4AF7]).generate_state(1)[0])


def cell_uniforms(seed: int, cells, per_cell: int, n_axes: int) -> np.ndarray:
    """Uniform fractions (lenses × axes) placing each lens inside its cell; cell c's come from
    its own stream (seed, c), so they do not depend on which cells are crafted together."""
    root, _ = _seeds(seed)
    out = np.empty((len(cells) * int(per_cell), n_axes))
    for i, c in enumerate(np.asarray(cells, dtype=np.int64)):
        rng = np.random.default_rng(np.random.SeedSequence(root.entropy, spawn_key=(int(c),)))
        out[i * per_cell:(i + 1) * per_cell] = rng.random((per_cell, n_axes))
    return out


def lens_params_for_cells(grid: SelectionGrid, cells, per_cell: int, seed: int):
    """LensCrafter parameter table of ``per_cell`` lenses in each of ``cells`` (consecutive cells).

    Lens j of cell c is lens number ``c * per_cell + j`` of the grid. Its place inside the cell
    comes from the stream (``seed``, c) (:func:`cell_uniforms`) and its noise from LensCrafter's
    stream (craft seed, lens number), so with ``others="reference"`` every lens is the same
    however cells are grouped. With ``others="prior"`` the other parameters are drawn per craft
    chunk (seeded by its first cell); :func:`plan_parts` and :func:`chunks_of` keep chunks
    aligned, so results are the same for any split into parts made of whole chunks.

    Returns
    -------
    params : astropy Table (one row per lens, LensCrafter's columns plus ``cell``)
    craft_seed : int and index_offset : int — pass both to ``craft_lenses``
    """
    from astropy.table import Table

    from .params import sample_lens_params

    cells = np.asarray(cells, dtype=np.int64)
    if cells.size == 0 or np.any(np.diff(cells) != 1):
        raise InputError("lens_params_for_cells: expected a non-empty run of consecutive cells")
    n = int(cells.size) * int(per_cell)
    root, craft_seed = _seeds(seed)
    u = cell_uniforms(seed, cells, per_cell, len(grid.axes)) if grid.sampling == "uniform" else None
    values = {column: np.full(n, float(v)) for column, v in grid.fixed.items()}
    values.update(grid.axis_values(cells, per_cell, u))
    if grid.others == "prior":
        # the priors place the source relative to θ_E, so the grid's values go in as overrides
        prior_seed = int(np.random.SeedSequence(root.entropy, spawn_key=(int(cells[0]), 1)).generate_state(1)[0])
        params = sample_lens_params(n, seed=prior_seed, **values)
        params["cell"] = np.repeat(cells, per_cell)
    else:
        # one Table built from plain columns (building the reference table and replacing
        # columns one by one cost as much as crafting a few lenses per chunk)
        cols = {c: np.full(n, v) for c, v in _reference_values().items()}
        cols.update(values)
        cols["cell"] = np.repeat(cells, per_cell)
        params = Table(cols, copy=False)
    return params, craft_seed, int(cells[0]) * int(per_cell)


@functools.lru_cache(maxsize=1)
def _reference_values() -> dict:
    from .params import reference_lens_params

    ref = reference_lens_params(1)
    return {c: float(ref[c][0]) for c in ref.colnames}




def _craft_for_model(params, craft_seed: int, index_offset: int, model):
    """Craft ``params`` the way ``model`` needs its input: size, pixel scale, bands, dtype."""
    from .synth import craft_lenses

    meta = model.metadata
    c, h, w = model.input_shape
    if h != w:
        raise InputError(f"selection function: model input {h}×{w} is not square; LensCrafter crafts square cutouts")
    output = "uint8" if meta.preprocessing.get("kind") == "percentile" else "float32"
    images = craft_lenses(params, seed=craft_seed, index_offset=index_offset, size=int(h),
                          pixel_scale=float(meta.pixel_scale), output=output)
    return _select_bands(images, meta.bands)


CRAFT_BANDS = HSC_BANDS


def _select_bands(images: np.ndarray, bands) -> np.ndarray:
    bands = list(bands)
    if bands == list(CRAFT_BANDS):
        return images
    missing = [b for b in bands if b not in CRAFT_BANDS]
    if missing:
        raise InputError(
            f"selection function: the model expects bands {bands}; LensCrafter crafts {list(CRAFT_BANDS)}"
        )
    return np.ascontiguousarray(images[:, [CRAFT_BANDS.index(b) for b in bands]])


# --------------------------------------------------------------------------------------
# one part: a plain function, the same locally and on a distributed backend
# --------------------------------------------------------------------------------------
_POOLS: dict = {}


def _get_pool(pool):
    """A :class:`ReferencePool` from a pool, a path (cached per process) or sorted scores."""
    from deepmine.inference.pool import ReferencePool

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


def chunks_of(cells: np.ndarray, per_cell: int) -> list:
    """Split cells into craft chunks: runs of consecutive cells inside the same block of
    ``CRAFT_LENSES // per_cell`` cells (blocks aligned at cell 0), about :data:`CRAFT_LENSES`
    lenses each. The alignment makes every chunk, and so every lens, the same however the
    cells are split into parts."""
    cells = np.asarray(cells, dtype=np.int64)
    if cells.size == 0:
        return []
    step = max(1, CRAFT_LENSES // int(per_cell))
    breaks = np.flatnonzero((np.diff(cells) != 1) | (np.diff(cells // step) != 0)) + 1
    return np.split(cells, breaks)


def _numba_threadsafe() -> bool:
    """Whether Numba's threading layer runs parallel kernels from two threads at once (tbb, omp;
    workqueue does not)."""
    import numba

    try:
        return numba.threading_layer() in ("tbb", "omp")
    except ValueError:  # no parallel kernel has run yet
        return False


class _Inline:
    """A stand-in for a one-thread executor that runs each job when it is submitted."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def submit(self, fn, *args):
        from concurrent.futures import Future

        fut = Future()
        try:
            fut.set_result(fn(*args))
        except BaseException as exc:  # noqa: BLE001 - re-raised by result()
            fut.set_exception(exc)
        return fut


def run_cells(
    model_path,
    grid: SelectionGrid,
    cells,
    *,
    pool,
    per_cell: int | None = None,
    seed: int = 0,
    cut: float = DEFAULT_CUT,
    device: str = "cpu",
    threads: int | None = None,
    batch_size: int | None = None,
    part_path=None,
    progress: Callable[[int], None] | None = None,
    pipeline: bool | None = None,
):
    """Craft, scan and count the lenses of ``cells``: one part of a selection function.

    Parameters
    ----------
    model_path : path of the exported classifier (a per-process cached session is used)
    grid : SelectionGrid
    cells : 1-D int array of flat cell indices (consecutive in practice; see :func:`plan_parts`)
    pool : ReferencePool, path of a stored pool, or sorted negative logits
    per_cell : lenses per cell (default ``grid.per_cell``)
    seed : master seed; lenses depend only on (seed, grid, per_cell, craft chunk)
    cut : inspection cut on ordinality; detected = ordinality > cut
    device, threads, batch_size : passed to :func:`deepmine.inference.model.get_model` / ``predict``
    part_path : if given, the part is also written there (FITS, atomically)
    progress : called with the number of cells finished after each craft chunk
    pipeline : craft the next chunk in a helper thread while the current one is scanned.
        Default (None): only when the model runs on a GPU; on CPU both stages use every core
        and overlapping them was measured slower (2 cores: crafting in a second thread ran
        up to 1.5× slower per chunk).

    Returns
    -------
    astropy Table, one row per cell: ``cell``, ``n``, ``n_detected``, ``sum_ordinality``,
    ``median_logit``, ``craft_s``, ``scan_s`` (seconds; a chunk's time shared equally by its lenses).
    """
    from astropy.table import Table

    from deepmine.inference.model import get_model

    per_cell = int(grid.per_cell if per_cell is None else per_cell)
    if per_cell < 1:
        raise InputError(f"--per-cell: must be at least 1, got {per_cell}")
    if not 0.0 <= cut < 1.0:
        raise InputError(f"--cut: must lie in [0, 1), got {cut}")
    cells = np.asarray(cells, dtype=np.int64).ravel()
    grid.unravel(cells)  # range check
    model = get_model(model_path, device=device, threads=threads)
    ref = _get_pool(pool)
    m = cells.size
    logits = np.empty(m * per_cell, dtype=np.float32)
    craft_s = np.zeros(m, dtype=np.float64)
    scan_s = np.zeros(m, dtype=np.float64)

    def craft(chunk):
        t0 = time.perf_counter()
        params, craft_seed, offset = lens_params_for_cells(grid, chunk, per_cell, seed)
        images = _craft_for_model(params, craft_seed, offset, model)
        return images, time.perf_counter() - t0

    chunks = chunks_of(cells, per_cell)
    start = 0
    first = craft(chunks[0]) if chunks else None
    # pipeline: craft chunk i+1 in a helper thread while chunk i is scanned (onnxruntime and
    # Numba release the GIL); at most two chunks of images are alive at once. Only where
    # Numba's threading layer allows parallel kernels launched from two threads at once.
    if pipeline is None:
        pipeline = model.provider != "CPUExecutionProvider"
    overlap = pipeline and len(chunks) > 1 and _numba_threadsafe()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="deepmine-craft") if overlap else _Inline() as ex:
        pending = None
        for i, chunk in enumerate(chunks):
            images, t_craft = first if pending is None else pending.result()
            pending = ex.submit(craft, chunks[i + 1]) if i + 1 < len(chunks) else None
            k = chunk.size
            t1 = time.perf_counter()
            logits[start * per_cell:(start + k) * per_cell] = model.predict(images, batch_size=batch_size)[0]
            craft_s[start:start + k] = t_craft / k
            scan_s[start:start + k] = (time.perf_counter() - t1) / k
            start += k
            del images
            if progress is not None:
                progress(k)
    # ordinality of the whole part at once (one kernel launch; its time goes to scanning)
    t1 = time.perf_counter()
    order = ref.ordinality(logits).reshape(m, per_cell)
    scan_s += (time.perf_counter() - t1) / max(m, 1)
    n_det = (order > cut).sum(axis=1).astype(np.int64)
    sum_ord = order.sum(axis=1)
    med_logit = np.median(logits.reshape(m, per_cell), axis=1).astype(np.float32)
    part = Table(
        {
            "cell": cells,
            "n": np.full(m, per_cell, dtype=np.int64),
            "n_detected": n_det,
            "sum_ordinality": sum_ord,
            "median_logit": med_logit,
            "craft_s": craft_s,
            "scan_s": scan_s,
        }
    )
    part.meta["DMSELPRT"] = PART_MARKER
    part.meta["MODELHSH"] = model.scoring_id
    part.meta["PROVIDER"] = model.provider
    if part_path is not None:
        from deepmine.inference.atomic import atomic_path

        with atomic_path(part_path, suffix=".fits") as tmp:
            part.write(tmp, format="fits", overwrite=True)
    return part


def plan_parts(grid: SelectionGrid, per_cell: int, part_lenses: int = DEFAULT_PART_LENSES) -> list:
    """Split the grid's cells into parts of about ``part_lenses`` lenses (whole craft chunks).

    Returns a list of 1-D int64 arrays of consecutive flat cell indices.
    """
    chunk_cells = max(1, CRAFT_LENSES // int(per_cell))
    cells_per_part = max(1, int(part_lenses) // (chunk_cells * int(per_cell))) * chunk_cells
    n = grid.n_cells
    return [np.arange(s, min(s + cells_per_part, n), dtype=np.int64) for s in range(0, n, cells_per_part)]


# --------------------------------------------------------------------------------------
# reference pools
# --------------------------------------------------------------------------------------
def build_reference_pool(model, n: int = DEFAULT_POOL_SIZE, *, seed: int = 0, batch_size: int | None = None,
                         progress: Callable[[int], None] | None = None):
    """Score ``n`` LensCrafter non-lens scenes with ``model`` into a :class:`ReferencePool`.

    The negatives (every kind of :data:`deepmine.lenscrafter.NEGATIVE_KINDS`, in turn) are
    crafted in chunks of :data:`CRAFT_LENSES` from a seed derived from ``seed``, at the model's
    size and pixel scale; only their logits are kept.
    """
    from deepmine.inference.pool import ReferencePool

    from .negatives import craft_negatives

    if int(n) < 1:
        raise InputError(f"--pool-size: must be at least 1, got {n}")
    meta = model.metadata
    c, h, w = model.input_shape
    kind = meta.preprocessing.get("kind")
    output = "uint8" if kind == "percentile" else "float32"
    scores = np.empty(int(n), dtype=np.float32)
    neg_seed = int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, 0x9E6A7]).generate_state(1)[0])
    for s in range(0, int(n), CRAFT_LENSES):
        k = min(CRAFT_LENSES, int(n) - s)
        images, _ = craft_negatives(k, seed=neg_seed, index_offset=s, size=int(h),
                                    pixel_scale=float(meta.pixel_scale), output=output)
        scores[s:s + k] = model.predict(_select_bands(images, meta.bands), batch_size=batch_size)[0]
        if progress is not None:
            progress(k)
    return ReferencePool.from_scores(
        scores, model_hash=model.sha256, scoring_id=model.scoring_id, source="lenscrafter negatives", n_negatives=int(n), seed=int(seed),
        created=_now(),
    )


def score_negatives_file(model, path, *, batch_size: int | None = None,
                         progress: Callable[[int], None] | None = None):
    """Score the cutouts of ``path`` into a :class:`ReferencePool`.

    ``path`` is anything the scanner reads as cutouts (:func:`deepmine.inference.readers.resolve_inputs`):
    a ``.npy`` stack, a FITS cube or a directory of FITS cutouts. Blank cutouts (flag BLANK)
    are left out of the pool: their scores mean nothing.
    """
    from deepmine.inference.metadata import file_sha256
    from deepmine.inference.pool import ReferencePool
    from deepmine.inference.readers import FLAG_BLANK, read_block, resolve_inputs

    p = Path(path)
    if not p.exists():
        raise file_error(p, "negatives file not found")
    meta = model.metadata
    (spec,), _ = resolve_inputs([p], meta)
    scores, blank = [], 0
    step = CRAFT_LENSES
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
        n_blank_skipped=blank, created=_now(),
    )


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------------------
# the result
# --------------------------------------------------------------------------------------
def table_paths(path) -> tuple[Path, Path]:
    """(FITS, ECSV) paths a selection table is written to: ``path`` may end in ``.fits``,
    ``.fit`` or ``.ecsv``; the other format goes beside it."""
    p = Path(path)
    stem = p.with_suffix("") if p.suffix.lower() in (".fits", ".fit", ".ecsv") else p
    return stem.with_suffix(".fits"), stem.with_suffix(".ecsv")


@dataclass
class SelectionFunction:
    """A measured selection function: one table row per grid cell plus the grid and provenance.

    Attributes
    ----------
    table : astropy Table
        Per cell: ``cell``; per axis ``i_<axis>`` (bin), ``<axis>`` (centre), ``<axis>_lo``,
        ``<axis>_hi`` (edges); ``n``, ``n_detected``, ``fraction``, ``fraction_lo``,
        ``fraction_hi`` (Wilson, ``level``), ``mean_ordinality``, ``median_logit``, ``craft_s``,
        ``scan_s`` (seconds spent on the cell).
    grid : SelectionGrid
    provenance : dict
        Model hash and path, pool (size, source, hash), cut, seed, per_cell, level, part size,
        deepmine version, dates, provider, timings.
    """

    table: object
    grid: SelectionGrid
    provenance: dict = field(default_factory=dict)

    @property
    def cut(self) -> float:
        return float(self.provenance.get("cut", DEFAULT_CUT))

    @property
    def level(self) -> float:
        return float(self.provenance.get("level", DEFAULT_LEVEL))

    def cube(self, column: str = "fraction") -> np.ndarray:
        """``column`` as an N-dimensional array of the grid's shape (axis order of the grid)."""
        out = np.full(self.grid.n_cells, np.nan if self.table[column].dtype.kind == "f" else 0,
                      dtype=self.table[column].dtype)
        out[np.asarray(self.table["cell"])] = np.asarray(self.table[column])
        return out.reshape(self.grid.shape)

    def marginal(self, *names: str) -> dict:
        """Counts summed over every axis but ``names`` (in that order), with fractions and Wilson bounds.

        Returns a dict with ``n``, ``n_detected``, ``fraction``, ``fraction_lo``, ``fraction_hi``
        (arrays shaped by the kept axes' bins) and ``axes`` (the kept GridAxis objects).
        With ``sampling="uniform"`` this is the detection fraction averaged uniformly (in each
        axis's scale) over the other axes' ranges.
        """
        idx = [self.grid.names.index(self.grid.axis(nm).name) for nm in names]
        if len(set(idx)) != len(idx):
            raise InputError(f"marginal: axes repeat in {names}")
        others = tuple(i for i in range(len(self.grid.axes)) if i not in idx)
        n = self.cube("n").sum(axis=others)
        k = self.cube("n_detected").sum(axis=others)
        # sum() keeps the remaining axes in grid order; bring them to the requested order
        kept = sorted(idx)
        perm = [kept.index(i) for i in idx]
        n, k = np.transpose(n, perm), np.transpose(k, perm)
        frac = np.divide(k, n, out=np.full(n.shape, np.nan), where=n > 0)
        lo, hi = wilson_interval(k, n, self.level)
        return {"n": n, "n_detected": k, "fraction": frac, "fraction_lo": lo, "fraction_hi": hi,
                "axes": [self.grid.axes[i] for i in idx]}

    def summary(self) -> dict:
        t = self.table
        n, k = int(np.sum(t["n"])), int(np.sum(t["n_detected"]))
        return {
            "cells": int(len(t)),
            "lenses": n,
            "detected": k,
            "fraction": k / n if n else float("nan"),
            "cut": self.cut,
            "craft_s": float(np.sum(t["craft_s"])),
            "scan_s": float(np.sum(t["scan_s"])),
        }

    # -- files ----------------------------------------------------------------------------
    def _table_with_meta(self):
        t = self.table.copy(copy_data=False)
        t.meta.clear()
        t.meta["DMSEL"] = MARKER
        t.meta["CUT"] = self.cut
        t.meta["LEVEL"] = self.level
        t.meta["NCELLS"] = self.grid.n_cells
        # the scoring identity of the model (graph and weights; deepmine.inference.identity)
        t.meta["MODELHSH"] = str(self.provenance.get("scoring_id") or self.provenance.get("model_sha256", ""))
        t.meta["GRIDJSON"] = self.grid.to_json()
        t.meta["PROVJSON"] = json.dumps(self.provenance, sort_keys=True, default=str)
        return t

    def save(self, path) -> list:
        """Write the table as FITS at ``path`` and ECSV beside it (both atomic); return the paths.

        ``path`` may end in ``.fits`` or ``.ecsv``; the other format goes beside it.
        """
        from deepmine.inference.atomic import atomic_path

        fits_path, ecsv_path = table_paths(path)
        t = self._table_with_meta()
        with atomic_path(fits_path, suffix=".fits") as tmp:
            t.write(tmp, format="fits", overwrite=True)
        with atomic_path(ecsv_path, suffix=".ecsv") as tmp:
            t.write(tmp, format="ascii.ecsv", overwrite=True)
        return [fits_path, ecsv_path]

    @classmethod
    def load(cls, path) -> SelectionFunction:
        """Read a table written by :meth:`save` (FITS or ECSV)."""
        from astropy.table import Table

        p = Path(path)
        if not p.is_file():
            raise file_error(p, "selection function table not found")
        fmt = "ascii.ecsv" if p.suffix.lower() == ".ecsv" else "fits"
        try:
            t = Table.read(p, format=fmt)
        except Exception as exc:  # noqa: BLE001 - astropy raises many types for bad files
            raise file_error(p, f"cannot read table ({type(exc).__name__}: {first_line(exc) if str(exc) else ''})") from None
        if t.meta.get("DMSEL") != MARKER:
            raise file_error(p, "not a deepmine selection function (no DMSEL marker)")
        grid = SelectionGrid.from_dict(json.loads(t.meta["GRIDJSON"]))
        prov = json.loads(t.meta.get("PROVJSON", "{}"))
        return cls(t, grid, prov)


def selection_summary(path) -> dict:
    """A compact, JSON-ready digest of a selection-function table, for a model's metadata.

    Overall counts and fraction detected, the inspection cut and confidence level, the grid
    (axes, ranges, bins), each axis's 1-D marginal completeness (fraction and Wilson bounds per
    bin, averaged over the other axes), and where the table came from (file sha256, the hash of
    the model it measured, the reference pool, seed, lenses per cell, date).
    """
    from deepmine.inference.metadata import file_sha256

    sel = SelectionFunction.load(path)
    prov = sel.provenance

    def clean(a) -> list:
        return [None if not np.isfinite(v) else round(float(v), 4) for v in np.asarray(a, dtype=float).ravel()]

    marginals = {}
    for ax in sel.grid.axes:
        m = sel.marginal(ax.name)
        marginals[ax.name] = {"centers": clean(ax.centers), "n": [int(v) for v in m["n"]],
                              "fraction": clean(m["fraction"]), "fraction_lo": clean(m["fraction_lo"]),
                              "fraction_hi": clean(m["fraction_hi"])}  # fmt: skip
    return {
        **{k: v for k, v in sel.summary().items() if k not in ("craft_s", "scan_s")},
        "level": sel.level,
        "axes": [{"name": a.name, "column": a.column, "lo": a.lo, "hi": a.hi, "bins": a.bins, "scale": a.scale}
                 for a in sel.grid.axes],  # fmt: skip
        "marginals": marginals,
        "file": Path(path).name, "file_sha256": file_sha256(path),
        "model_sha256": prov.get("model_sha256"), "pool_size": prov.get("pool_size"),
        "pool_source": (prov.get("pool") or {}).get("source"), "seed": prov.get("seed"),
        "per_cell": prov.get("per_cell"), "created": prov.get("created"),
    }  # fmt: skip


def assemble(grid: SelectionGrid, parts: list, *, level: float = DEFAULT_LEVEL, provenance: dict | None = None) -> SelectionFunction:
    """Merge part tables into a :class:`SelectionFunction` (one row per cell, sorted by cell)."""
    from astropy.table import Table, vstack

    if not parts:
        raise InputError("selection function: no parts to merge")
    raw = vstack([p if isinstance(p, Table) else Table(p) for p in parts], metadata_conflicts="silent")
    raw.meta.clear()
    raw.sort("cell")
    cells = np.asarray(raw["cell"])
    if np.any(np.diff(cells) == 0):
        raise InputError("selection function: a cell appears in more than one part")
    idx = grid.unravel(cells)
    t = Table()
    t["cell"] = cells
    for k, a in enumerate(grid.axes):
        e = a.edges
        t[f"i_{a.name}"] = idx[:, k].astype(np.int16)
        t[a.name] = a.centers[idx[:, k]]
        t[f"{a.name}_lo"] = e[idx[:, k]]
        t[f"{a.name}_hi"] = e[idx[:, k] + 1]
    n = np.asarray(raw["n"], dtype=np.int64)
    k_det = np.asarray(raw["n_detected"], dtype=np.int64)
    t["n"] = n
    t["n_detected"] = k_det
    t["fraction"] = np.divide(k_det, n, out=np.full(n.shape, np.nan), where=n > 0)
    t["fraction_lo"], t["fraction_hi"] = wilson_interval(k_det, n, level)
    t["mean_ordinality"] = np.divide(np.asarray(raw["sum_ordinality"]), n, out=np.full(n.shape, np.nan), where=n > 0)
    t["median_logit"] = np.asarray(raw["median_logit"], dtype=np.float32)
    t["craft_s"] = np.asarray(raw["craft_s"])
    t["scan_s"] = np.asarray(raw["scan_s"])
    units = {"theta_e": "arcsec", "r_eff_fg": "arcsec", "m_fg": "mag", "m_arc": "mag"}
    for a in grid.axes:
        if a.name in units:
            for c in (a.name, f"{a.name}_lo", f"{a.name}_hi"):
                t[c].unit = units[a.name]
    t["craft_s"].unit = t["scan_s"].unit = "s"
    prov = dict(provenance or {})
    prov.setdefault("level", level)
    return SelectionFunction(t, grid, prov)


# --------------------------------------------------------------------------------------
# the whole run
# --------------------------------------------------------------------------------------
def _manifest(grid, per_cell, seed, cut, part_lenses, model_id, pool_scores) -> dict:
    import hashlib

    return {
        "marker": PART_MARKER,
        "grid": grid.to_dict(),
        "per_cell": int(per_cell),
        "seed": int(seed),
        "cut": float(cut),
        "part_lenses": int(part_lenses),
        "craft_lenses": CRAFT_LENSES,
        "model_scoring_id": model_id,
        "pool_sha256": "sha256:" + hashlib.sha256(np.ascontiguousarray(pool_scores).tobytes()).hexdigest(),
    }


def _check_manifest(workdir: Path, manifest: dict, resume: bool) -> None:
    from deepmine.inference.atomic import atomic_open

    mpath = workdir / "manifest.json"
    if mpath.exists():
        try:
            old = json.loads(mpath.read_text())
        except (OSError, json.JSONDecodeError):
            old = None
        if resume:
            if old != manifest:
                diff = sorted(k for k in manifest if old is None or old.get(k) != manifest[k])
                raise file_error(
                    workdir, f"parts were made with different settings ({', '.join(diff)}); rerun without "
                    "--resume or use another --workdir"
                )
            return
        for part in workdir.glob("part-*.fits"):
            part.unlink()
    with atomic_open(mpath, "w") as fh:
        json.dump(manifest, fh, sort_keys=True, indent=1)


def _part_file(workdir, cells):
    return None if workdir is None else Path(workdir) / f"part-{int(cells[0]):09d}.fits"


def run_part(model_path, grid: SelectionGrid, workdir, kwargs: dict, cells):
    """:func:`run_cells` on ``cells``, writing its part file in ``workdir`` — the picklable job
    that :func:`selection_function` hands to ``map_parts`` (e.g. a Dask ``client.map``)."""
    return run_cells(model_path, grid, cells, part_path=_part_file(workdir, cells), **kwargs)


def selection_function(
    model_path,
    grid: SelectionGrid,
    *,
    pool,
    per_cell: int | None = None,
    seed: int = 0,
    cut: float = DEFAULT_CUT,
    level: float = DEFAULT_LEVEL,
    workdir=None,
    resume: bool = False,
    part_lenses: int = DEFAULT_PART_LENSES,
    device: str = "cpu",
    threads: int | None = None,
    batch_size: int | None = None,
    out=None,
    progress: Callable[[int], None] | None = None,
    map_parts: Callable | None = None,
) -> SelectionFunction:
    """Measure the selection function of ``model_path`` over ``grid``.

    Parameters
    ----------
    model_path : exported classifier (.onnx)
    grid : SelectionGrid
    pool : ReferencePool (or a stored pool's path): negatives scored by the same model
    per_cell : lenses per cell (default ``grid.per_cell``)
    seed, cut, level : master seed, inspection cut on ordinality, Wilson confidence level
    workdir : folder for part files (default: ``<out>.parts`` beside ``out``, else none kept)
    resume : keep part files already finished by an earlier run with the same settings
    part_lenses : about this many lenses per part file
    device, threads, batch_size : model session and scan batch
    out : if given, write the table there (FITS + ECSV beside, atomically)
    progress : called with the number of cells finished
    map_parts : optional ``map_parts(job, list_of_cells) -> iterable of tables`` running the
        parts elsewhere (a distributed backend). ``job(cells)`` is a picklable
        :func:`run_part` partial that writes the part file itself (workers must see
        ``workdir``, the model file and, when given as a path, the pool).

    Returns
    -------
    SelectionFunction
    """
    from deepmine.inference import __version__
    from deepmine.inference.model import get_model

    per_cell = int(grid.per_cell if per_cell is None else per_cell)
    if per_cell < 1:
        raise InputError(f"--per-cell: must be at least 1, got {per_cell}")
    if not 0.0 <= cut < 1.0:
        raise InputError(f"--cut: must lie in [0, 1), got {cut}")
    if not 0.0 < level < 1.0:
        raise InputError(f"confidence level must lie in (0, 1), got {level}")
    t_start = time.perf_counter()
    model = get_model(model_path, device=device, threads=threads)
    ref = _get_pool(pool)
    from deepmine.inference.identity import pool_model_check

    pool_warning = pool_model_check(ref, model)
    if len(ref) * (1.0 - cut) < 1.0:
        raise InputError(
            f"--cut {cut}: the reference pool holds {len(ref)} negatives, fewer than one above the cut; "
            "use a larger pool (--pool-size) or a lower cut"
        )
    if out is not None and workdir is None:
        workdir = Path(out).with_suffix("").with_name(Path(out).stem + ".parts")
    parts_plan = plan_parts(grid, per_cell, part_lenses)
    workdir = Path(workdir) if workdir is not None else None
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        _check_manifest(workdir, _manifest(grid, per_cell, seed, cut, part_lenses, model.scoring_id, ref.scores),
                        resume)

    def part_file(cells):
        return _part_file(workdir, cells)

    from astropy.table import Table

    results, todo = [], []
    for cells in parts_plan:
        pf = part_file(cells)
        if resume and pf is not None and pf.exists():
            try:
                t = Table.read(pf, format="fits")
                if (t.meta.get("DMSELPRT") == PART_MARKER and t.meta.get("MODELHSH") == model.scoring_id
                        and np.array_equal(np.asarray(t["cell"]), cells)):
                    results.append(t)
                    if progress is not None:
                        progress(int(cells.size))
                    continue
            except Exception:  # noqa: BLE001 - an unreadable part is recomputed
                pass
        todo.append(cells)

    kwargs = dict(pool=ref, per_cell=per_cell, seed=seed, cut=cut, device=device, threads=threads,
                  batch_size=batch_size)
    if map_parts is None:
        for cells in todo:
            results.append(run_cells(model_path, grid, cells, part_path=part_file(cells), progress=progress, **kwargs))
    else:
        job = functools.partial(run_part, str(model_path), grid, None if workdir is None else str(workdir), kwargs)
        for t in map_parts(job, todo):
            results.append(t)
            if progress is not None:
                progress(len(t))
    prov = {
        "model": str(model_path),
        "model_sha256": model.sha256,
        "scoring_id": model.scoring_id,
        "architecture": model.metadata.architecture,
        "provider": model.provider,
        "threads": threads,
        "pool": {k: v for k, v in ref.provenance.items()},
        "pool_size": len(ref),
        "cut": float(cut),
        "level": float(level),
        "seed": int(seed),
        "per_cell": per_cell,
        "part_lenses": int(part_lenses),
        "craft_lenses": CRAFT_LENSES,
        "parts": len(parts_plan),
        "parts_resumed": len(parts_plan) - len(todo),
        "wall_s": time.perf_counter() - t_start,
        "created": _now(),
        "deepmine_version": __version__,
    }
    if pool_warning:
        prov["warnings"] = [pool_warning]
    sel = assemble(grid, results, level=level, provenance=prov)
    if out is not None:
        sel.save(out)
    return sel
