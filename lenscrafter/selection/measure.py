"""Selection function: how likely a trained model is to find a lens, over a grid of lens parameters.

Seed section 3.1.1 and Figure 3.3; SPEC.md section 6. For every cell of a
:class:`~deepmine.lenscrafter.selection.grid.SelectionGrid`, LensCrafter crafts ``per_cell``
lenses (axis values inside the cell, the other parameters at the Figure 4.2 reference lens or
drawn from the priors), the model scores them, and each lens's ordinality is taken against a
reference pool of negatives scored by the same model. A lens is *detected* when its ordinality
exceeds the inspection cut (0.995 by default: the top 0.5 % that the seed inspects by eye).

Work is cut into *parts*: runs of consecutive cells holding about ``part_lenses`` lenses
(whole craft chunks of about 1024 lenses). :func:`run_cells` computes one part — a plain
function of (model path, grid, cells, pool) → table, the same for a local loop and for a
distributed backend (:func:`run_part` is its picklable form, handed to ``map_parts``) — and
:func:`selection_function` runs every part, writes each as a part file (atomic, then its completion
marker: the work-folder contract of :mod:`deepmine.inference.scan.workdir`, shared with scan shards;
``resume`` skips parts with a matching marker), merges them and writes the result (FITS and ECSV,
atomic). When the model runs on a GPU, the next chunk is crafted in a helper thread while the
current one is scanned. Memory is bounded by two craft chunks (≈ 130 MB for 3×64×64 cutouts) whatever the grid's size.

Cost: every lens is crafted once and scanned once, so the time is
``cells × per_cell × (1/craft rate + 1/scan rate)`` plus the same for the pool's negatives;
it grows linearly with the number of cells (the product of the bins) and with ``per_cell``.
The default grid (:func:`~deepmine.lenscrafter.selection.grid.default_grid`: 4⁴ × 8² = 16,384
cells × 4 lenses = 65,536 lenses) plus a 20,000-negative pool is a few minutes on 2 cores.

Determinism: lens j of cell c is lens ``c·per_cell + j`` of the grid; its place in the cell
comes from the stream (seed, c) and its noise from LensCrafter's stream (craft seed, lens
number), so results do not depend on the scan batch size, the thread count, the pipelining
or how cells are split into parts.

The result (:class:`~deepmine.lenscrafter.selection.result.SelectionFunction`, the merge of parts,
Wilson intervals) is in :mod:`~deepmine.lenscrafter.selection.result`, the reference pools in
:mod:`~deepmine.lenscrafter.selection.pool`, and arcs painted onto real deflectors instead of
whole LensCrafter scenes (``deepmine selection --onto``) in :mod:`~deepmine.lenscrafter.selection.onto`;
their public names are importable from here too.
"""
from __future__ import annotations

import functools
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from deepmine.inference.errors import InputError

from .cells import cell_uniforms, craft_for_model, lens_params_for_cells  # noqa: F401 - re-exported
from .grid import SelectionGrid
from .pool import (  # noqa: F401 - re-exported
    CRAFT_BANDS,
    DEFAULT_POOL_SIZE,
    build_reference_pool,
    get_pool,
    now_utc,
    score_negatives_file,
    select_bands,
)
from .result import (  # noqa: F401 - re-exported
    DEFAULT_CUT,
    DEFAULT_LEVEL,
    MARKER,
    SelectionFunction,
    assemble,
    selection_summary,
    table_paths,
    wilson_interval,
)

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

#: Lenses crafted (and then scanned) at once: bounds memory (about 65 MB for 3×64×64 cutouts)
#: and sets how often work switches between Numba and onnxruntime, whose spinning threads
#: slow the other down for a moment after each switch (256 cost ~10 % more CPU time than 1024).
CRAFT_LENSES = 1024
#: Target lenses per part file (the unit of resume and of distributed work).
DEFAULT_PART_LENSES = 4096
PART_MARKER = "deepmine-selection-part-1"


# --------------------------------------------------------------------------------------
# one part: a plain function, the same locally and on a distributed backend
# --------------------------------------------------------------------------------------
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
    onto=None,
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
    onto : :class:`~deepmine.lenscrafter.selection.onto.OntoSource`, optional
        Paint arcs onto its real deflectors instead of crafting whole LensCrafter lenses; a
        cell whose deflector bins hold no deflector gets no lenses (``n = 0``).

    Returns
    -------
    astropy Table, one row per cell: ``cell``, ``n``, ``n_detected``, ``sum_ordinality``,
    ``median_logit``, ``craft_s``, ``scan_s`` (seconds; a chunk's time shared equally by its lenses).
    """
    from deepmine.inference.model import get_model

    per_cell = int(grid.per_cell if per_cell is None else per_cell)
    if per_cell < 1:
        raise InputError(f"--per-cell: must be at least 1, got {per_cell}")
    if not 0.0 <= cut < 1.0:
        raise InputError(f"--cut: must lie in [0, 1), got {cut}")
    cells = np.asarray(cells, dtype=np.int64).ravel()
    grid.unravel(cells)  # range check
    model = get_model(model_path, device=device, threads=threads)
    ref = get_pool(pool)
    m = cells.size
    counts = np.zeros(m, dtype=np.int64)
    logits = []
    craft_s = np.zeros(m, dtype=np.float64)
    scan_s = np.zeros(m, dtype=np.float64)

    def craft(chunk):
        t0 = time.perf_counter()
        if onto is None:
            params, craft_seed, offset = lens_params_for_cells(grid, chunk, per_cell, seed)
            images = craft_for_model(params, craft_seed, offset, model)
            n_cell = np.full(chunk.size, per_cell, dtype=np.int64)
        else:
            images, n_cell = onto.images_for_cells(grid, chunk, per_cell, seed, model)
        return images, n_cell, time.perf_counter() - t0

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
            images, n_cell, t_craft = first if pending is None else pending.result()
            pending = ex.submit(craft, chunks[i + 1]) if i + 1 < len(chunks) else None
            k = chunk.size
            t1 = time.perf_counter()
            if len(images):
                logits.append(model.predict(images, batch_size=batch_size)[0])
            counts[start:start + k] = n_cell
            craft_s[start:start + k] = t_craft / k
            scan_s[start:start + k] = (time.perf_counter() - t1) / k
            start += k
            del images
            if progress is not None:
                progress(k)
    logits = np.concatenate(logits) if logits else np.empty(0, np.float32)
    # ordinality of the whole part at once (one kernel launch; its time goes to scanning)
    t1 = time.perf_counter()
    order = ref.ordinality(logits) if logits.size else np.empty(0)
    scan_s += (time.perf_counter() - t1) / max(m, 1)
    part = count_part(cells, counts, order, logits, craft_s, scan_s, cut)
    part.meta["DMSELPRT"] = PART_MARKER
    part.meta["MODELHSH"] = model.scoring_id
    part.meta["PROVIDER"] = model.provider
    if part_path is not None:
        from deepmine.inference.atomic import atomic_path
        from deepmine.inference.scan.workdir import mark_done

        with atomic_path(part_path, suffix=".fits") as tmp:
            part.write(tmp, format="fits", overwrite=True)
        mark_done(part_path, part_key(cells), cells=int(np.size(cells)))
    return part


def part_key(cells) -> str:
    """What a part file holds (its completion marker names it): the cells, first to last."""
    c = np.asarray(cells)
    return f"{PART_MARKER} cells {int(c[0])}-{int(c[-1])} n {c.size}"


def count_part(cells, counts, order, logits, craft_s, scan_s, cut: float):
    """The part table of ``cells``: cell i holds ``counts[i]`` consecutive lenses of ``order``
    (ordinalities) and ``logits``; detected = ordinality > ``cut``. A cell without lenses has
    ``n = 0`` and NaN median logit."""
    from astropy.table import Table

    m = len(cells)
    counts = np.asarray(counts, dtype=np.int64)
    if counts.size and np.all(counts == counts[0]) and counts[0] > 0:  # the usual case: one reshape
        o, lg = order.reshape(m, counts[0]), logits.reshape(m, counts[0])
        n_det = (o > cut).sum(axis=1).astype(np.int64)
        sum_ord = o.sum(axis=1)
        med = np.median(lg, axis=1).astype(np.float32)
    else:
        owner = np.repeat(np.arange(m), counts)
        n_det = np.bincount(owner, weights=order > cut, minlength=m).astype(np.int64)
        sum_ord = np.bincount(owner, weights=order, minlength=m)
        bounds = np.concatenate([[0], np.cumsum(counts)])
        med = np.array([np.median(logits[a:b]) if b > a else np.nan for a, b in zip(bounds[:-1], bounds[1:])],
                       dtype=np.float32)
    return Table({"cell": np.asarray(cells, dtype=np.int64), "n": counts, "n_detected": n_det,
                  "sum_ordinality": sum_ord, "median_logit": med, "craft_s": craft_s, "scan_s": scan_s})


def plan_parts(grid: SelectionGrid, per_cell: int, part_lenses: int = DEFAULT_PART_LENSES) -> list:
    """Split the grid's cells into parts of about ``part_lenses`` lenses (whole craft chunks).

    Returns a list of 1-D int64 arrays of consecutive flat cell indices.
    """
    chunk_cells = max(1, CRAFT_LENSES // int(per_cell))
    cells_per_part = max(1, int(part_lenses) // (chunk_cells * int(per_cell))) * chunk_cells
    n = grid.n_cells
    return [np.arange(s, min(s + cells_per_part, n), dtype=np.int64) for s in range(0, n, cells_per_part)]


# --------------------------------------------------------------------------------------
# the whole run
# --------------------------------------------------------------------------------------
def _manifest(grid, per_cell, seed, cut, part_lenses, model_id, pool_scores, onto=None) -> dict:
    import hashlib

    extra = {} if onto is None else {"onto": onto.identity()}
    return {**extra,
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
    overwrite: bool = False,
    part_lenses: int = DEFAULT_PART_LENSES,
    device: str = "cpu",
    threads: int | None = None,
    batch_size: int | None = None,
    out=None,
    progress: Callable[[int], None] | None = None,
    map_parts: Callable | None = None,
    onto=None,
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
        (:mod:`deepmine.inference.scan.workdir`: a different model, pool, grid or seed is refused)
    overwrite : without ``resume``, clear an earlier run's part files instead of refusing them
    part_lenses : about this many lenses per part file
    device, threads, batch_size : model session and scan batch
    out : if given, write the table there (FITS + ECSV beside, atomically)
    progress : called with the number of cells finished
    map_parts : optional ``map_parts(job, list_of_cells) -> iterable of tables`` running the
        parts elsewhere (a distributed backend). ``job(cells)`` is a picklable
        :func:`run_part` partial that writes the part file itself (workers must see
        ``workdir``, the model file and, when given as a path, the pool).
    onto : :class:`~deepmine.lenscrafter.selection.onto.OntoSource`, optional
        Paint arcs onto real deflector cutouts instead of crafting whole lenses (``deepmine
        selection --onto``); checked against the model and recorded in the manifest and provenance.

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
    if onto is not None:
        from .onto import check_onto_grid

        onto.check_model(model)
        check_onto_grid(grid, onto)
    ref = get_pool(pool)
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
        from deepmine.inference.scan.workdir import open_workdir

        plan = _manifest(grid, per_cell, seed, cut, part_lenses, model.scoring_id, ref.scores, onto)
        open_workdir(workdir, {**plan, "model": str(model_path)}, resume=resume, overwrite=overwrite,
                     what="selection function")

    def part_file(cells):
        return _part_file(workdir, cells)

    from astropy.table import Table

    from deepmine.inference.scan.workdir import part_done

    results, todo = [], []
    for cells in parts_plan:
        pf = part_file(cells)
        if resume and pf is not None and part_done(pf, part_key(cells)):
            try:
                t = Table.read(pf, format="fits")
                if np.array_equal(np.asarray(t["cell"]), cells):
                    results.append(t)
                    if progress is not None:
                        progress(int(cells.size))
                    continue
            except Exception:  # noqa: BLE001 - an unreadable part is recomputed
                pass
        todo.append(cells)

    kwargs = dict(pool=ref, per_cell=per_cell, seed=seed, cut=cut, device=device, threads=threads,
                  batch_size=batch_size, onto=onto)
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
        "created": now_utc(),
        "deepmine_version": __version__,
    }
    if onto is not None:
        prov["onto"] = onto.identity()
    if pool_warning:
        prov["warnings"] = [pool_warning]
    sel = assemble(grid, results, level=level, provenance=prov)
    if out is not None:
        sel.save(out)
    return sel
