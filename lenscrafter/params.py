"""The lens parameter table (one row per lens, every parameter of seed Figure 4.2) and priors.

Columns (astropy :class:`~astropy.table.Table`, written as ECSV; angles in **degrees**, CCW from
+x; positions in arcsec from the cutout centre; ellipticity ``e = 1 − q`` with ``q`` the
minor/major axis ratio; flux ratios are band flux over g-band flux):

==============  =====================================================================
Deflector (SIE)
``theta_e``     Einstein radius (arcsec, circularised); 0 = no lensing
``e_sie``       ellipticity 1 − q of the convergence (Figure 4.2 "aspect ratio 1.8" → 0.444)
``phi_sie``     position angle of the major axis (deg)
``dfl_x/_y``    centre of the deflector (arcsec)
Foreground (lens light, Sersic, not lensed)
``m_g_fg``      total g-band AB magnitude
``ratio_r_fg``  r/g flux ratio (5.5); ``ratio_i_fg`` i/g flux ratio (20.5)
``r_eff_fg``    half-light radius (arcsec); ``n_fg`` Sersic index
``e_fg``        ellipticity; ``phi_fg`` position angle (deg); ``fg_x/_y`` centre (arcsec)
Source (Sersic, lensed)
``m_g_src``     total (unlensed) g-band AB magnitude
``ratio_r_src`` r/g flux ratio (1.6); ``ratio_i_src`` i/g flux ratio (2.6)
``r_eff_src``   half-light radius (arcsec); ``n_src`` Sersic index
``e_src``       ellipticity; ``phi_src`` (deg); ``src_x/_y`` source-plane centre (arcsec)
==============  =====================================================================

Reference lens (Figure 4.2, upper-left lens of Figure 4.1). Where the seed gives a range the
reference takes a typical value: θ_E = 1.5″, m_g_fg = 21.5, R_eff,fg = 1.5″, n_fg = 4,
m_g_src = 23.0. The seed lists the source with R_eff = 6″ and n = 7; a lensed background galaxy
at z ≈ 1–2 has R_eff ≈ 0.1–0.5″ and n ≈ 0.5–2, and a 6″ n = 7 source would swamp the lens in
a diffuse halo, so the reference uses **R_eff,src = 0.3″ and n_src = 1.0**;
``reference_lens_params(literal=True)`` gives the seed's literal values (both are inside the
accepted ranges). Source offset 0.17″ at +45° → ``src_x = src_y = 0.1202``.
"""
from __future__ import annotations

import numpy as np
from astropy.table import Table

from deepmine.inference.errors import InputError

#: Column order of a lens table.
LENS_COLUMNS = (
    "theta_e", "e_sie", "phi_sie", "dfl_x", "dfl_y",
    "m_g_fg", "ratio_r_fg", "ratio_i_fg", "r_eff_fg", "n_fg", "e_fg", "phi_fg", "fg_x", "fg_y",
    "m_g_src", "ratio_r_src", "ratio_i_src", "r_eff_src", "n_src", "e_src", "phi_src", "src_x", "src_y",
)  # fmt: skip

UNITS = {
    "theta_e": "arcsec", "phi_sie": "deg", "dfl_x": "arcsec", "dfl_y": "arcsec",
    "m_g_fg": "mag", "r_eff_fg": "arcsec", "phi_fg": "deg", "fg_x": "arcsec", "fg_y": "arcsec",
    "m_g_src": "mag", "r_eff_src": "arcsec", "phi_src": "deg", "src_x": "arcsec", "src_y": "arcsec",
}  # fmt: skip

#: Accepted (physical) range of every column, inclusive.
PARAM_RANGES = {
    "theta_e": (0.0, 20.0), "e_sie": (0.0, 0.95), "phi_sie": (-360.0, 360.0),
    "dfl_x": (-60.0, 60.0), "dfl_y": (-60.0, 60.0),
    "m_g_fg": (5.0, 40.0), "ratio_r_fg": (1e-4, 1e4), "ratio_i_fg": (1e-4, 1e4),
    "r_eff_fg": (0.005, 30.0), "n_fg": (0.2, 10.0), "e_fg": (0.0, 0.95), "phi_fg": (-360.0, 360.0),
    "fg_x": (-60.0, 60.0), "fg_y": (-60.0, 60.0),
    "m_g_src": (5.0, 40.0), "ratio_r_src": (1e-4, 1e4), "ratio_i_src": (1e-4, 1e4),
    "r_eff_src": (0.005, 30.0), "n_src": (0.2, 10.0), "e_src": (0.0, 0.95), "phi_src": (-360.0, 360.0),
    "src_x": (-60.0, 60.0), "src_y": (-60.0, 60.0),
}  # fmt: skip

REFERENCE = {
    "theta_e": 1.5, "e_sie": 1.0 - 1.0 / 1.8, "phi_sie": 5.0, "dfl_x": 0.0, "dfl_y": 0.0,
    "m_g_fg": 21.5, "ratio_r_fg": 5.5, "ratio_i_fg": 20.5, "r_eff_fg": 1.5, "n_fg": 4.0,
    "e_fg": 0.10, "phi_fg": 5.0, "fg_x": 0.0, "fg_y": 0.0,
    "m_g_src": 23.0, "ratio_r_src": 1.6, "ratio_i_src": 2.6, "r_eff_src": 0.3, "n_src": 1.0,
    "e_src": 0.35, "phi_src": -85.0,
    "src_x": 0.17 * np.cos(np.radians(45.0)), "src_y": 0.17 * np.sin(np.radians(45.0)),
}  # fmt: skip

#: Ranges of Figure 4.2 used for the selection function (Figure 3.3).
FIGURE_4_2_RANGES = {
    "m_g_src": (18.0, 27.0), "m_g_fg": (18.0, 27.0), "r_eff_fg": (0.5, 6.0), "n_fg": (0.5, 6.0),
    "theta_e": (0.1, 6.0),
}  # fmt: skip


def _table(cols: dict[str, np.ndarray]) -> Table:
    t = Table({name: np.asarray(cols[name], dtype=np.float64) for name in LENS_COLUMNS})
    for name, unit in UNITS.items():
        t[name].unit = unit
    t.meta["deepmine"] = "lenscrafter lens parameters"
    return t


def reference_lens_params(n: int = 1, literal: bool = False) -> Table:
    """``n`` copies of the Figure 4.2 reference lens (see the module docstring).

    ``literal=True`` uses the seed's literal source R_eff = 6″ and n = 7.
    """
    if int(n) < 1:
        raise InputError(f"n={n!r}: expected at least 1 lens")
    vals = dict(REFERENCE)
    if literal:
        vals.update(r_eff_src=6.0, n_src=7.0)
    return _table({k: np.full(int(n), v) for k, v in vals.items()})


def _draw(rng, n, spec, name):
    """An override: a number (fixed), a ``(low, high)`` tuple (uniform) or ``n`` values (array/list)."""
    if np.isscalar(spec):
        return np.full(n, float(spec))
    if isinstance(spec, tuple) and len(spec) == 2:
        lo, hi = float(spec[0]), float(spec[1])
        if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
            raise InputError(f"{name}: range {spec!r} must be finite with low <= high")
        return rng.uniform(lo, hi, n)
    arr = np.asarray(spec, dtype=np.float64)
    if arr.shape == (n,):
        return arr
    raise InputError(f"{name}: expected a number, a (low, high) tuple or {n} values, got shape {arr.shape}")


def sample_lens_params(n: int, seed: int = 0, **overrides) -> Table:
    """Draw ``n`` random lenses from physically motivated priors (HSC-like galaxy-scale lenses).

    Priors (independent unless stated):

    * θ_E ~ U(0.6, 3.0)″; e_sie ~ U(0, 0.5); phi_sie ~ U(−90, 90)°.
    * Foreground (early type): m_g ~ U(20, 23.5); n ~ U(2.5, 6); e ~ U(0, 0.4);
      phi = phi_sie + N(0, 10°) (light follows mass). Colours and size are those of a
      red-sequence galaxy of that magnitude (:func:`.field.early_type`): absolute magnitude
      M_r ~ N(−22.0, 0.5) (1–4 L*), hence a redshift (z ≈ 0.25 at m_g = 20, ≈ 0.6 at 23.5),
      red-sequence colours g − r and r − i at that redshift (Eisenstein et al. 2001 LRG tracks,
      scatter 0.05/0.04 mag) and R_eff from the Shen et al. (2003) early-type
      size–luminosity relation with its scatter (typically 0.5–2″). (Before, the colours were
      the seed's r/g = 5.5, i/g = 20.5, i.e. r − i = 1.43, redder than any z < 1 early type,
      and R_eff ~ log-U(0.5, 3)″ independent of m_g.) These draws use a stream of their own
      (``(seed, 0x1E45, 1)``), so every other column keeps its values for a given seed.
    * Source (star-forming): m_g ~ U(23, 26) (unlensed); R_eff ~ log-U(0.1, 0.6)″;
      n ~ U(0.5, 2.5); e ~ U(0, 0.6); phi ~ U(−90, 90)°; colours 1.6 and 2.6 with 0.1 dex
      scatter; position uniform over a disc of radius 0.6·θ_E around the deflector (inside the
      caustic region, so arcs and rings form).

    ``overrides`` replace any column: a number (fixed), a ``(low, high)`` tuple (uniform) or an
    array (or list) of ``n`` values, e.g. ``sample_lens_params(100, theta_e=(0.1, 6.0), m_g_src=24)``.
    The result is validated (:func:`check_lens_params`).
    """
    t = _table(sample_lens_columns(n, seed, **overrides))
    check_lens_params(t)
    return t


def sample_lens_columns(n: int, seed: int = 0, **overrides) -> dict[str, np.ndarray]:
    """The columns of :func:`sample_lens_params` as plain float64 arrays, not yet checked.

    The same draws, without building a Table: for callers that draw many small batches from
    streams of their own (:func:`deepmine.lenscrafter.paint_arcs`, one per cutout) and build one
    table at the end.
    """
    n = int(n)
    if n < 1:
        raise InputError(f"n={n!r}: expected at least 1 lens")
    unknown = sorted(set(overrides) - set(LENS_COLUMNS))
    if unknown:
        raise InputError(f"unknown lens parameter(s) {', '.join(unknown)}; known: {', '.join(LENS_COLUMNS)}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x1E45]))
    u = rng.uniform
    c: dict[str, np.ndarray] = {}
    c["theta_e"] = u(0.6, 3.0, n)
    c["e_sie"] = u(0.0, 0.5, n)
    c["phi_sie"] = u(-90.0, 90.0, n)
    c["dfl_x"] = np.zeros(n)
    c["dfl_y"] = np.zeros(n)
    c["m_g_fg"] = u(20.0, 23.5, n)
    rng.normal(0, 0.1, 2 * n)  # the former colour draws: keeps the stream of the other columns
    rng.uniform(0.0, 1.0, n)  # the former R_eff draw
    c["n_fg"] = u(2.5, 6.0, n)
    c["e_fg"] = u(0.0, 0.4, n)
    c["phi_fg"] = c["phi_sie"] + rng.normal(0, 10.0, n)
    c["fg_x"] = np.zeros(n)
    c["fg_y"] = np.zeros(n)
    c["m_g_src"] = u(23.0, 26.0, n)
    c["ratio_r_src"] = 1.6 * 10 ** rng.normal(0, 0.1, n)
    c["ratio_i_src"] = 2.6 * 10 ** rng.normal(0, 0.1, n)
    c["r_eff_src"] = np.exp(u(np.log(0.1), np.log(0.6), n))
    c["n_src"] = u(0.5, 2.5, n)
    c["e_src"] = u(0.0, 0.6, n)
    c["phi_src"] = u(-90.0, 90.0, n)
    rad = 0.6 * np.sqrt(u(0.0, 1.0, n))
    ang = u(0.0, 2 * np.pi, n)
    for name, spec in overrides.items():  # theta_e first matters for the source position
        if name in ("theta_e", "m_g_fg"):  # m_g_fg: the deflector's colours and size follow it
            c[name] = _draw(rng, n, spec, name)
    from .field import early_type, flux_ratios

    et = early_type(np.random.default_rng(np.random.SeedSequence([int(seed), 0x1E45, 1])), c["m_g_fg"])
    c["ratio_r_fg"], c["ratio_i_fg"] = flux_ratios(et["g_r"], et["r_i"])
    c["r_eff_fg"] = np.clip(et["r_eff"], 0.1, 10.0)
    c["src_x"] = rad * c["theta_e"] * np.cos(ang)
    c["src_y"] = rad * c["theta_e"] * np.sin(ang)
    for name, spec in overrides.items():
        if name not in ("theta_e", "m_g_fg"):
            c[name] = _draw(rng, n, spec, name)
    return c


def offset_lenses(params: Table, sigma: float = 0.2, seed: int = 0) -> Table:
    """A copy of ``params`` with every lens moved as a whole by N(0, ``sigma``) arcsec per axis.

    The deflector, its light and the source move together (``dfl_*``, ``fg_*`` and ``src_*``
    get the same shift), so each lens keeps its configuration and only its place in the cutout
    changes. Survey cutouts are centred on catalogue positions, not on the lens to the pixel,
    and LensCrafter's non-lens scenes scatter their main galaxy by 0.2″ (0.15″ for rings): a
    training set whose lenses all sit exactly at the centre teaches a classifier that being
    centred is what a lens is. ``sigma`` = 0 returns an unchanged copy.
    """
    if not sigma >= 0:
        raise InputError(f"sigma={sigma!r}: expected an offset scale >= 0 arcsec")
    out = params.copy()
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x0FF5]))
    n = len(out)
    for ax in ("x", "y"):
        d = rng.normal(0.0, sigma, n) if sigma > 0 else np.zeros(n)
        for col in (f"dfl_{ax}", f"fg_{ax}", f"src_{ax}"):
            out[col] = np.asarray(out[col], dtype=np.float64) + d
    check_lens_params(out)
    return out


def check_lens_params(params: Table) -> Table:
    """Raise :class:`InputError` unless ``params`` has every lens column, finite and in range.

    The message names the first offending column, row and accepted range. Returns ``params``.
    """
    if not hasattr(params, "colnames"):
        raise InputError(f"lens parameters: expected an astropy Table, got {type(params).__name__}")
    missing = [c for c in LENS_COLUMNS if c not in params.colnames]
    if missing:
        raise InputError(
            f"lens parameter table lacks column(s) {', '.join(missing)}; start from "
            "reference_lens_params(n) or sample_lens_params(n) and change the columns you vary"
        )
    if len(params) == 0:
        raise InputError("lens parameter table has no rows")
    for name in LENS_COLUMNS:
        try:
            v = np.asarray(params[name], dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError(f"lens parameter {name}: expected numbers, got {params[name].dtype}") from None
        lo, hi = PARAM_RANGES[name]
        bad = ~np.isfinite(v) | (v < lo) | (v > hi)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InputError(
                f"lens parameter {name}={v[i]!r} (row {i}) is out of range; expected {lo:g} <= {name} <= {hi:g}"
            )
    return params


def read_lens_params(path) -> Table:
    """Read a lens table (ECSV, FITS, or anything astropy reads) and check it."""
    from pathlib import Path

    from deepmine.inference.errors import file_error

    p = Path(path)
    if not p.is_file():
        raise file_error(p, "parameter table not found")
    try:
        t = Table.read(p, format="ascii.ecsv") if p.suffix.lower() == ".ecsv" else Table.read(p)
    except Exception as exc:  # noqa: BLE001 - astropy raises many kinds
        raise file_error(p, f"cannot read the parameter table ({exc})") from None
    try:
        return check_lens_params(t)
    except InputError as exc:
        raise file_error(p, str(exc)) from None
