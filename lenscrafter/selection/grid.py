"""The parameter grid of a selection function: axes, ranges, bins, and how lenses fill a cell.

A grid is a list of axes (one lens parameter each: a range, a number of bins, a linear or
logarithmic scale) plus the rule for every other parameter. Its cells are the Cartesian
product of the bins, numbered in C order (last axis fastest), so a cell's flat index, its
multi-index and its lenses are fixed by the grid alone.

Grid files
----------
TOML (``.toml``)::

    per_cell = 8            # lenses per cell (optional; the command line can override it)
    others = "reference"    # other parameters: "reference" (Figure 4.2 lens) or "prior"
    sampling = "uniform"    # lenses spread uniformly over the cell (in the axis's scale),
                            # or "center": every lens at the cell centre
    [axes.theta_e]
    range = [0.3, 6.0]
    bins = 8
    scale = "log"           # or "linear" (default)
    [axes.m_arc]
    range = [18, 27]
    bins = 8
    [fixed]                 # optional: parameters held at a value in every cell
    m_fg = 21.0

ECSV (``.ecsv``): one row per axis with columns ``name``, ``lo``, ``hi``, ``bins`` and
optionally ``scale``; ``per_cell``, ``others``, ``sampling`` and ``fixed`` (a mapping) may sit
in the table's meta.

Parameter names are LensCrafter's columns (:func:`deepmine.lenscrafter.reference_lens_params`)
or the short names of Figure 3.3 in :data:`ALIASES`. The six-axis default of Figure 3.3 /
Figure 4.2 is :func:`default_grid`.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from deepmine.inference.errors import InputError, file_error, first_line

#: Figure 3.3 short names → LensCrafter parameter columns.
ALIASES = {
    "m_fg": "m_g_fg",
    "m_arc": "m_g_src",
    "r_eff_fg": "r_eff_fg",
    "n_fg": "n_fg",
    "theta_e": "theta_e",
    "e_fg": "e_fg",
}

#: Axis labels for plots (LaTeX, units).
LABELS = {
    "m_fg": r"$m_g^{\rm fg}$",
    "m_arc": r"$m_g^{\rm arc}$",
    "r_eff_fg": r"$r_{\rm eff}^{\rm fg}$ (″)",
    "n_fg": r"$n^{\rm fg}$",
    "theta_e": r"$\theta_E$ (″)",
    "e_fg": r"$e^{\rm fg}$",
    "m_dfl": r"$m_i^{\rm dfl}$ (2″)",
    "q_dfl": r"$q^{\rm dfl}$",
}

SCALES = ("linear", "log")
SAMPLINGS = ("uniform", "center")
OTHERS = ("reference", "prior")


@dataclass(frozen=True)
class GridAxis:
    """One axis of a selection grid.

    Attributes
    ----------
    name : str
        Name as the user wrote it (a Figure 3.3 alias or a LensCrafter column).
    column : str
        LensCrafter parameter column it sets.
    lo, hi : float
        Range, in the parameter's unit (magnitudes, arcsec, dimensionless).
    bins : int
        Number of bins (≥ 1).
    scale : str
        ``"linear"`` or ``"log"`` (bins equal in log10; needs lo > 0).
    """

    name: str
    column: str
    lo: float
    hi: float
    bins: int
    scale: str = "linear"

    @property
    def edges(self) -> np.ndarray:
        """Bin edges (bins + 1), in the parameter's unit."""
        if self.scale == "log":
            return np.logspace(math.log10(self.lo), math.log10(self.hi), self.bins + 1)
        return np.linspace(self.lo, self.hi, self.bins + 1)

    @property
    def centers(self) -> np.ndarray:
        """Bin centres (geometric for log axes)."""
        e = self.edges
        return np.sqrt(e[:-1] * e[1:]) if self.scale == "log" else 0.5 * (e[:-1] + e[1:])

    @property
    def label(self) -> str:
        return LABELS.get(self.name, self.name)

    def sample(self, bin_index: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Values inside bins ``bin_index`` at fractions ``u`` ∈ [0, 1) of the bin (axis scale)."""
        e = self.edges
        lo, hi = e[bin_index], e[bin_index + 1]
        if self.scale == "log":
            return lo * (hi / lo) ** u
        return lo + (hi - lo) * u


#: Most cells a grid may have (the product of its bins), checked before anything is allocated:
#: a cell list of this length takes 80 MB, and 10^7 cells hold 4·10^7 lenses at 4 per cell.
MAX_CELLS = 10_000_000


@dataclass
class SelectionGrid:
    """Axes, the rule for the other parameters, and the default lenses per cell.

    Attributes
    ----------
    axes : list[GridAxis]
    fixed : dict
        LensCrafter column → value held in every cell.
    others : str
        ``"reference"``: parameters that are neither axes nor fixed take the Figure 4.2
        reference lens values; ``"prior"``: they are drawn from LensCrafter's priors.
    sampling : str
        ``"uniform"``: each lens's axis values are drawn uniformly inside its cell (in the
        axis's scale), so a cell's fraction is the cell average and marginals are averages over
        the grid's range; ``"center"``: every lens sits at the cell centre.
    per_cell : int
        Default number of lenses per cell.
    """

    axes: list
    fixed: dict = field(default_factory=dict)
    others: str = "reference"
    sampling: str = "uniform"
    per_cell: int = 8

    def __post_init__(self):
        if not self.axes:
            raise InputError("selection grid: no axes; name at least one parameter with a range and bins")
        names = [a.name for a in self.axes]
        columns = [a.column for a in self.axes]
        for seen, what in ((names, "name"), (columns, "parameter")):
            dup = {x for x in seen if seen.count(x) > 1}
            if dup:
                raise InputError(f"selection grid: {what} {sorted(dup)[0]!r} appears on more than one axis")
        clash = set(columns) & set(self.fixed)
        if clash:
            raise InputError(f"selection grid: parameter {sorted(clash)[0]!r} is both an axis and fixed")
        if self.others not in OTHERS:
            raise InputError(f"selection grid: others must be one of {OTHERS}, got {self.others!r}")
        if self.sampling not in SAMPLINGS:
            raise InputError(f"selection grid: sampling must be one of {SAMPLINGS}, got {self.sampling!r}")
        if int(self.per_cell) < 1:
            raise InputError(f"selection grid: per_cell must be >= 1, got {self.per_cell}")
        n = math.prod(int(a.bins) for a in self.axes)
        if n > MAX_CELLS:
            raise InputError(f"selection grid: {' × '.join(str(a.bins) for a in self.axes)} = {n:,} cells, over the "
                             f"limit of {MAX_CELLS:,}; use fewer bins")

    # -- geometry -----------------------------------------------------------------------
    @property
    def shape(self) -> tuple:
        return tuple(a.bins for a in self.axes)

    @property
    def n_cells(self) -> int:
        return math.prod(int(b) for b in self.shape)

    @property
    def names(self) -> list:
        return [a.name for a in self.axes]

    def axis(self, name: str) -> GridAxis:
        """The axis called ``name`` (alias or column)."""
        for a in self.axes:
            if name in (a.name, a.column):
                return a
        raise InputError(f"selection grid: no axis {name!r}; axes are {self.names}")

    def unravel(self, cells) -> np.ndarray:
        """Multi-indices (n_cells × n_axes, int64) of flat cell indices."""
        c = np.asarray(cells, dtype=np.int64)
        if c.size and (c.min() < 0 or c.max() >= self.n_cells):
            raise InputError(f"cell indices must lie in [0, {self.n_cells}), got {c.min()}..{c.max()}")
        return np.stack(np.unravel_index(c, self.shape), axis=-1).astype(np.int64)

    def axis_values(self, cells, per_cell: int, u: np.ndarray | None = None) -> dict:
        """Axis values of ``per_cell`` lenses in each of ``cells`` (cell-major order).

        ``u`` (lenses × axes, in [0, 1)) places each lens inside its cell, in the axis's scale;
        with ``sampling="center"`` (or ``u`` None) every lens sits at the cell centre.
        Returns column → float64 array of length ``len(cells) * per_cell``.
        """
        idx = np.repeat(self.unravel(cells), per_cell, axis=0)
        out = {}
        for k, a in enumerate(self.axes):
            if self.sampling == "center" or u is None:
                out[a.column] = a.centers[idx[:, k]]
            else:
                out[a.column] = a.sample(idx[:, k], u[:, k])
        return out

    # -- (de)serialisation ----------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "axes": [asdict(a) for a in self.axes],
            "fixed": dict(self.fixed),
            "others": self.others,
            "sampling": self.sampling,
            "per_cell": int(self.per_cell),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> SelectionGrid:
        return cls(
            axes=[GridAxis(**a) for a in data["axes"]],
            fixed=dict(data.get("fixed", {})),
            others=data.get("others", "reference"),
            sampling=data.get("sampling", "uniform"),
            per_cell=int(data.get("per_cell", 8)),
        )

    def describe(self) -> str:
        """One line per axis, for logs and the command line."""
        lines = [
            f"{a.name:<9} {a.lo:g}..{a.hi:g}  {a.bins} {a.scale} bins  (column {a.column})" for a in self.axes
        ]
        lines.append(f"{self.n_cells:,} cells; other parameters: {self.others}; sampling: {self.sampling}")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------
# parameter names
# --------------------------------------------------------------------------------------
def known_parameters() -> list:
    """LensCrafter's lens parameter columns."""
    from ..params import LENS_COLUMNS

    return list(LENS_COLUMNS)


def resolve_parameter(name: str, where: str = "selection grid", known=None) -> str:
    """LensCrafter column of a parameter name (alias or column), or a one-line InputError."""
    known = known_parameters() if known is None else known
    column = ALIASES.get(name, name)
    if column not in known:
        raise InputError(
            f"{where}: unknown parameter {name!r}; use one of {sorted(ALIASES)} or a LensCrafter "
            f"column ({', '.join(known)})"
        )
    return column


def make_axis(name: str, lo, hi, bins, scale: str = "linear", *, where: str = "selection grid", known=None) -> GridAxis:
    """Build a checked :class:`GridAxis` (errors name the grid and the parameter)."""
    column = resolve_parameter(str(name), where, known)
    try:
        lo, hi, nb = float(lo), float(hi), int(bins)
    except (TypeError, ValueError):
        raise InputError(f"{where}: axis {name!r}: range and bins must be numbers, got {lo!r}, {hi!r}, {bins!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise InputError(f"{where}: axis {name!r}: range must be finite, got [{lo:g}, {hi:g}]")
    if not hi > lo:
        raise InputError(f"{where}: axis {name!r}: empty range [{lo:g}, {hi:g}]; give lo < hi")
    if nb < 1 or nb != float(bins):
        raise InputError(f"{where}: axis {name!r}: bins must be a whole number >= 1, got {bins!r}")
    if scale not in SCALES:
        raise InputError(f"{where}: axis {name!r}: scale must be one of {SCALES}, got {scale!r}")
    if scale == "log" and lo <= 0:
        raise InputError(f"{where}: axis {name!r}: a log axis needs a positive range, got [{lo:g}, {hi:g}]")
    return GridAxis(str(name), column, lo, hi, nb, scale)


#: Figure 3.3 / Figure 4.2 ranges of the default grid: name → (lo, hi, bins, scale).
#: θ_E and the foreground R_eff use log bins (what changes detection happens at small radii);
#: the foreground ellipticity is fixed at 0.10 in Figure 4.2 but varied in Figure 3.3 without
#: a stated range: 0.0–0.5 here. θ_E and the arc magnitude, the two parameters of the 1-D
#: completeness curves, get 8 bins; the other four get 4.
DEFAULT_AXES = {
    "m_fg": (18.0, 27.0, 4, "linear"),
    "m_arc": (18.0, 27.0, 8, "linear"),
    "r_eff_fg": (0.5, 6.0, 4, "log"),
    "n_fg": (0.5, 6.0, 4, "linear"),
    "theta_e": (0.1, 6.0, 8, "log"),
    "e_fg": (0.0, 0.5, 4, "linear"),
}
DEFAULT_PER_CELL = 4


def default_grid(per_cell: int = DEFAULT_PER_CELL, known=None) -> SelectionGrid:
    """The six-parameter grid of Figure 3.3 with the Figure 4.2 ranges (others at the reference lens)."""
    axes = [make_axis(n, *spec, where="default grid", known=known) for n, spec in DEFAULT_AXES.items()]
    return SelectionGrid(axes=axes, per_cell=per_cell)


def _grid_from_mapping(data: dict, where: str, known) -> SelectionGrid:
    allowed = {"axes", "fixed", "others", "sampling", "per_cell"}
    extra = set(data) - allowed
    if extra:
        raise InputError(f"{where}: unknown key {sorted(extra)[0]!r}; expected {sorted(allowed)}")
    axes_spec = data.get("axes")
    if not isinstance(axes_spec, dict) or not axes_spec:
        raise InputError(f"{where}: no [axes.<parameter>] tables; name at least one parameter with range and bins")
    axes = []
    for name, spec in axes_spec.items():
        if not isinstance(spec, dict):
            raise InputError(f"{where}: axis {name!r} must be a table with range and bins")
        bad = set(spec) - {"range", "bins", "scale"}
        if bad:
            raise InputError(f"{where}: axis {name!r}: unknown key {sorted(bad)[0]!r}; expected range, bins, scale")
        rng = spec.get("range")
        if not isinstance(rng, (list, tuple)) or len(rng) != 2:
            raise InputError(f"{where}: axis {name!r}: range must be [lo, hi], got {rng!r}")
        if "bins" not in spec:
            raise InputError(f"{where}: axis {name!r}: bins missing")
        axes.append(make_axis(name, rng[0], rng[1], spec["bins"], spec.get("scale", "linear"), where=where, known=known))
    fixed = {}
    for name, value in dict(data.get("fixed", {})).items():
        column = resolve_parameter(str(name), where, known)
        try:
            fixed[column] = float(value)
        except (TypeError, ValueError):
            raise InputError(f"{where}: fixed parameter {name!r} must be a number, got {value!r}") from None
    kwargs = {k: data[k] for k in ("others", "sampling", "per_cell") if k in data}
    try:
        return SelectionGrid(axes=axes, fixed=fixed, **kwargs)
    except InputError as exc:
        raise InputError(f"{where}: {str(exc).removeprefix('selection grid: ')}") from None


def read_grid(path: str | os.PathLike, known=None) -> SelectionGrid:
    """Read a grid file (TOML or ECSV; see the module docstring)."""
    p = Path(path)
    if not p.is_file():
        raise file_error(p, "grid file not found")
    where = str(p)
    suffix = p.suffix.lower()
    if suffix == ".toml":
        import tomllib

        try:
            data = tomllib.loads(p.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise file_error(p, f"not valid TOML ({exc})") from None
        return _grid_from_mapping(data, where, known)
    if suffix == ".ecsv":
        from astropy.table import Table

        try:
            t = Table.read(p, format="ascii.ecsv")
        except Exception as exc:  # noqa: BLE001 - astropy raises many types for bad files
            raise file_error(p, f"not a readable ECSV table ({first_line(exc)})") from None
        need = {"name", "lo", "hi", "bins"}
        if not need <= set(t.colnames):
            raise file_error(p, f"grid table needs columns name, lo, hi, bins (has {', '.join(t.colnames)})")
        axes = {
            str(r["name"]): {
                "range": [r["lo"], r["hi"]],
                "bins": r["bins"],
                "scale": str(r["scale"]) if "scale" in t.colnames else "linear",
            }
            for r in t
        }
        if len(axes) != len(t):
            raise file_error(p, "a parameter appears on more than one row")
        data = {"axes": axes}
        data.update({k: v for k, v in t.meta.items() if k in ("fixed", "others", "sampling", "per_cell")})
        return _grid_from_mapping(data, where, known)
    raise file_error(p, f"unknown grid format {p.suffix!r}; use .toml or .ecsv")


def write_grid_toml(grid: SelectionGrid, path: str | os.PathLike) -> Path:
    """Write ``grid`` as a TOML grid file (atomically) — a starting point for editing."""
    from deepmine.inference.atomic import atomic_open

    lines = [
        "# deepmine selection grid (see `deepmine selection --help`)",
        f"per_cell = {int(grid.per_cell)}",
        f'others = "{grid.others}"',
        f'sampling = "{grid.sampling}"',
    ]
    for a in grid.axes:
        lines += ["", f"[axes.{a.name}]", f"range = [{a.lo!r}, {a.hi!r}]", f"bins = {a.bins}", f'scale = "{a.scale}"']
    if grid.fixed:
        lines += ["", "[fixed]"] + [f"{k} = {float(v)!r}" for k, v in grid.fixed.items()]
    with atomic_open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    return Path(path)
