"""The lenses of a selection function's cells: where each lens sits in its cell, its parameters.

Lens j of cell c is lens ``c·per_cell + j`` of the grid; its place in the cell comes from the
stream (seed, c) (:func:`cell_uniforms`) and its noise from LensCrafter's stream (craft seed,
lens number). Used by :mod:`deepmine.lenscrafter.selection.measure` (whole LensCrafter lenses) and
:mod:`deepmine.lenscrafter.selection.onto` (arcs painted onto real deflectors).
"""
from __future__ import annotations

import functools

import numpy as np

from deepmine.inference.errors import InputError

from .grid import SelectionGrid
from .pool import select_bands

__all__ = ["cell_seeds", "cell_uniforms", "lens_params_for_cells", "craft_for_model"]


def cell_seeds(seed: int) -> tuple[np.random.SeedSequence, int]:
    """(root of the per-chunk parameter draws, the craft noise seed) of a master seed."""
    root = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, 0x5E1EC7])
    return root, int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, 0xC4AF7]).generate_state(1)[0])


def cell_uniforms(seed: int, cells, per_cell: int, n_axes: int) -> np.ndarray:
    """Uniform fractions (lenses × axes) placing each lens inside its cell; cell c's come from
    its own stream (seed, c), so they do not depend on which cells are crafted together."""
    root, _ = cell_seeds(seed)
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

    from ..params import sample_lens_params

    cells = np.asarray(cells, dtype=np.int64)
    if cells.size == 0 or np.any(np.diff(cells) != 1):
        raise InputError("lens_params_for_cells: expected a non-empty run of consecutive cells")
    n = int(cells.size) * int(per_cell)
    root, craft_seed = cell_seeds(seed)
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
    from ..params import reference_lens_params

    ref = reference_lens_params(1)
    return {c: float(ref[c][0]) for c in ref.colnames}


def craft_for_model(params, craft_seed: int, index_offset: int, model):
    """Craft ``params`` the way ``model`` needs its input: size, pixel scale, bands, dtype."""
    from ..synth import craft_lenses

    meta = model.metadata
    c, h, w = model.input_shape
    if h != w:
        raise InputError(f"selection function: model input {h}×{w} is not square; LensCrafter crafts square cutouts")
    output = "uint8" if meta.preprocessing.get("kind") == "percentile" else "float32"
    images = craft_lenses(params, seed=craft_seed, index_offset=index_offset, size=int(h),
                          pixel_scale=float(meta.pixel_scale), output=output)
    return select_bands(images, meta.bands)
