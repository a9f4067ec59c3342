"""The result of a selection function: its table, marginals, files and the merge of parts.

:class:`SelectionFunction` holds one table row per grid cell (counts, detection fraction,
Wilson interval, cost) with the grid and the provenance; :func:`assemble` merges the part
tables that :func:`deepmine.lenscrafter.selection.measure.run_cells` computes; :func:`selection_summary`
digests a stored table for a model's metadata. How the parts are computed is in
:mod:`deepmine.lenscrafter.selection.measure`.

Uncertainties: Wilson score intervals (as ``astropy.stats.binom_conf_interval``, without scipy) at 68.27 %
confidence by default (``level``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deepmine.inference.errors import InputError, file_error, first_line

from .grid import SelectionGrid

__all__ = ["SelectionFunction", "assemble", "selection_summary", "table_paths", "wilson_interval",
           "DEFAULT_CUT", "DEFAULT_LEVEL", "MARKER"]

DEFAULT_CUT = 0.995
DEFAULT_LEVEL = 0.6827
MARKER = "deepmine-selection-function-1"


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
# the result
# --------------------------------------------------------------------------------------
def table_paths(path) -> tuple[Path, Path]:
    """(FITS, ECSV) paths a selection table is written to, by the ``--out`` rule of every command
    (:func:`deepmine.inference.formats.output_paths`): a table suffix is replaced, any other
    name gets both suffixes appended."""
    from deepmine.inference.formats import output_paths

    fits, ecsv = output_paths(path, (".fits", ".ecsv"), example="selection")
    return fits, ecsv


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
        from deepmine.inference.catalog.io import write_catalog

        return list(write_catalog(self._table_with_meta(), path, ["fits", "ecsv"], extname="SELECTION").values())

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
