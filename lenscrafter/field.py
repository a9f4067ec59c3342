"""The field population of LensCrafter scenes: galaxies, stars and red lens galaxies as in HSC Wide.

A 64×64 HSC cutout (0.168″/px, 10.8″ on a side) of the real sky holds several neighbours, most of
them faint blue galaxies — the classic arc impostors — and now and then a star. This module
draws that population, per cutout, from published counts, sizes and colours; both the lenses
(:func:`~deepmine.lenscrafter.synth.craft_lenses`) and the non-lens scenes
(:func:`~deepmine.lenscrafter.negatives.craft_negatives`) get it, through the one renderer of
:mod:`.kernels`. It imports neither of those modules (they import it).

Distributions (every number below is used as written; magnitudes are AB)
------------------------------------------------------------------------

**Galaxy counts** (i band). Cumulative counts ``N(<i) = 46 × 10^{0.31 (i − 25)}`` galaxies per
arcmin² (LSST Science Book v2.0, 2009, arXiv:0912.0201, §3.7.2 eq. 3.7, fitted to the CFHTLS
Deep counts for 20.5 < i < 25.5). The differential counts are therefore
``dN/di = 0.31 ln 10 · N(<i)`` = 1.18 × 10⁵ galaxies deg⁻² mag⁻¹ at i = 25 with slope
d log N / di = 0.31, the same slope as the I-band compilation of Metcalfe et al. (2001, MNRAS
323, 795; 0.33) and the CFDF counts of McCracken et al. (2001, A&A 376, 756; 0.33 for
20 < I_AB < 24). The power law is used from i = 17 (:data:`I_MIN`) to the survey depth, by
default i = 26 (:data:`I_MAX`, HSC Wide: 5σ point-source depth i ≈ 26.2, Aihara et al. 2018,
PASJ 70, S8). In a 10.8″ cutout that is 3.0 galaxies with i < 26 (1.0 with i < 24.5).
**Galaxy sizes**. Star-forming (blue) galaxies: exponential discs (Sersic n ~ U(0.5, 1.5))
whose median scale length follows ``ln(r_d / arcsec) = −1.145 − 0.269 (i − 23)`` (Miller et
al. 2013, MNRAS 429, 2858, the CFHTLenS size prior fitted to HST galaxies), half-light radius
``r_e = 1.678 r_d`` (0.53″ at i = 23, 0.24″ at i = 26), log-normal scatter σ_ln = 0.4.
Early types (red field galaxies and the lens galaxies): the SDSS size–luminosity relation of
Shen et al. (2003, MNRAS 343, 978, eq. 14 and Table 1, early types):
``log10(R_50 / kpc) = −0.4 · 0.65 · M_r − 5.06`` with scatter
``σ_lnR = 0.25 + 0.23 / (1 + 10^{−0.8 (M_r + 20.52)})``, converted to arcsec at the galaxy's
redshift in flat ΛCDM (H₀ = 70 km s⁻¹ Mpc⁻¹, Ω_m = 0.3); Sersic n ~ U(2.5, 5.5).
**Galaxy colours**. Red-sequence (early-type) colours follow a passively evolving early type
through the g, r, i filters (:data:`RED_SEQUENCE`: g − r from 0.95 at z = 0.1 through 1.50 at
z = 0.3 to 1.90 at z ≥ 0.7; r − i from 0.42 at z = 0.1 through 0.52 at 0.3 and 0.85 at 0.5 to
1.18 at 0.7 — the SDSS LRG colour tracks of Eisenstein et al. 2001, AJ 122, 2267, Fig. 1, which
the BOSS LOWZ/CMASS cuts follow: CMASS d⊥ = (r − i) − (g − r)/8 > 0.55 at z ≈ 0.5), with an
intrinsic scatter of 0.05 mag in g − r and 0.04 mag in r − i. The redshift of a red galaxy
follows from its magnitude and an absolute magnitude drawn from N(−21.0, 0.8) (field) or
N(−22.0, 0.5) (lens galaxies: 1–4 L*, M*_r = −21.2 for h = 0.7, Blanton et al. 2003, ApJ 592,
819; SLACS and SuGOHI deflectors are massive early types at z ≈ 0.2–0.8, Auger et al. 2009,
ApJ 705, 1099; Sonnenfeld et al. 2018, PASJ 70, S29), with the early-type r-band
K-correction ``K_r ≈ 0.9 z + 2.0 z²`` (0.45 at z = 0.3, 0.95 at 0.5; Chilingarian et al.
2010, MNRAS 405, 1409). Blue galaxies: g − r ~ N(0.45, 0.20) clipped to (−0.1, 1.2),
r − i ~ N(0.30, 0.15) clipped to (−0.2, 0.9) — the blue cloud of z ≈ 0.5–1.5 star-forming
galaxies that dominates faint counts (the "faint blue galaxies"; the median colour of
I-selected galaxies gets bluer at faint magnitudes, McCracken et al. 2001 Fig. 11). The red
fraction falls with magnitude: ``f_red(i) = clip(0.40 − 0.08 (i − 20), 0.05, 0.40)`` (40 % at
i ≤ 20, 24 % at i = 22, 5 % at i ≥ 23.4) — a smooth approximation of quiescent fractions in
magnitude-limited samples, not a fit. Ellipticity ``e = 1 − q``: blue U(0, 0.75), red
U(0, 0.4); position angles uniform.
**Stars** (high Galactic latitude, b ≈ 40–60°, the HSC Wide fields). Differential counts
``log10(dN/di / deg⁻² mag⁻¹)`` = 2.6 at i = 16, 2.9 at i = 19, 3.0 at i ≥ 22 (linear in
between; :data:`STAR_COUNTS`), ≈ 8,000 stars deg⁻² for 16 < i < 26 (0.07 per cutout). This
is an approximation of the order of magnitude of the SDSS high-latitude star counts (Yasuda et
al. 2001, AJ 122, 1104) and of star-count models at b ≈ 50° (Bahcall & Soneira 1980, ApJS 44,
73; Robin et al. 2003, A&A 409, 523, the Besançon model), which flatten at faint magnitudes
where the halo thins out; it is the least certain of these numbers (a factor ~2). Colours on
the stellar locus (Covey et al. 2007, AJ 134, 2398): g − r ~ U(0.2, 1.5),
r − i = 0.1 + 0.45 (g − r − 0.2) below g − r = 1.3, M dwarfs above with r − i ~ U(0.6, 1.8).
Stars brighter than i = 19 (:data:`I_SPIKE`) get four diffraction spikes (two perpendicular
components, 1 % of the flux each, exponential length 0.5–3″ growing with brightness), and
scenes with a star brighter than i = 18.5 (:data:`I_SATURATE`) are saturated at a level of
U(150, 500) counts with bleed trails (:func:`saturate`; HSC Wide saturates at i ≈ 17.5–18.5).

Random numbers: the population of cutout ``i`` is drawn from
``numpy.random.default_rng([seed, i, salt])`` (salt :data:`FIELD_SALT` around lenses,
``FIELD_SALT + 1`` in non-lens scenes), so it depends on (seed, i) only — not on threads nor
on chunking (SPEC §9).
"""
from __future__ import annotations

import math

import numpy as np
from astropy.table import Table

from deepmine.inference.errors import InputError

from . import kernels
from .pipeline import PIXEL_SCALE, ZERO_POINT
from .profiles import magnitude_to_flux, sersic_amp_from_flux

#: Faint limit of the field (i, AB): HSC Wide depth.
I_MAX = 26.0
#: Bright limit of the field galaxies and stars (i, AB).
I_MIN = 17.0
#: Cumulative galaxy counts N(<i) = COUNTS_N25 · 10^(COUNTS_SLOPE (i − 25)) per arcmin² (LSST SB eq. 3.7).
COUNTS_N25 = 46.0
COUNTS_SLOPE = 0.31
#: Star counts: (i, log10 dN/di per deg² per mag) nodes, linear interpolation, flat beyond.
STAR_COUNTS = ((16.0, 2.6), (19.0, 2.9), (22.0, 3.0), (30.0, 3.0))
#: Stars brighter than this (i) get diffraction spikes; scenes with one brighter than I_SATURATE saturate.
I_SPIKE = 19.0
I_SATURATE = 18.5
#: Red-sequence colour track (z, g − r, r − i) of a passively evolving early type (see module doc).
RED_SEQUENCE = (
    (0.05, 0.80, 0.38), (0.10, 0.95, 0.42), (0.20, 1.22, 0.46), (0.30, 1.50, 0.52), (0.40, 1.70, 0.65),
    (0.50, 1.82, 0.85), (0.60, 1.88, 1.05), (0.70, 1.90, 1.18), (0.80, 1.90, 1.27), (0.90, 1.90, 1.33),
    (1.00, 1.90, 1.38), (1.20, 1.90, 1.45),
)  # fmt: skip
#: Margin (arcsec) around the cutout over which field sources are also placed (their light spills in).
MARGIN = 1.0
FIELD_SALT = 0x4649
ARCSEC2_PER_DEG2 = 3600.0**2

_RS = np.asarray(RED_SEQUENCE)
_ZGRID = np.linspace(0.02, 1.2, 237)


def _cosmology_grid():
    """Luminosity distance modulus and kpc per arcsec on :data:`_ZGRID` (flat ΛCDM, H0 70, Ωm 0.3)."""
    z = np.linspace(0.0, 1.2, 2401)
    ez = np.sqrt(0.3 * (1 + z) ** 3 + 0.7)
    dc = np.concatenate([[0.0], np.cumsum(0.5 * (1 / ez[1:] + 1 / ez[:-1]) * np.diff(z))]) * 299792.458 / 70.0
    dc = np.interp(_ZGRID, z, dc)  # Mpc
    dm = 5.0 * np.log10(dc * (1 + _ZGRID) * 1e5)  # D_L in units of 10 pc
    kpc_per_arcsec = dc / (1 + _ZGRID) * 1e3 * np.pi / (180 * 3600)
    return dm, kpc_per_arcsec


_DM, _KPC_PER_ARCSEC = _cosmology_grid()
_KR = 0.9 * _ZGRID + 2.0 * _ZGRID**2
_GR = np.interp(_ZGRID, _RS[:, 0], _RS[:, 1])
_RI = np.interp(_ZGRID, _RS[:, 0], _RS[:, 2])


# ----------------------------------------------------------------------------- published counts
def galaxy_counts_between(i_lo, i_hi, area_arcsec2=1.0):
    """Expected number of galaxies with ``i_lo < i < i_hi`` (AB) in ``area_arcsec2`` arcsec².

    From the cumulative counts of the module docstring (LSST Science Book eq. 3.7).

    >>> round(float(galaxy_counts_between(17.0, 26.0, (64 * 0.168) ** 2)), 2)
    3.01
    """
    cum = lambda m: COUNTS_N25 * 10.0 ** (COUNTS_SLOPE * (np.asarray(m, float) - 25.0))  # noqa: E731
    return (cum(i_hi) - cum(i_lo)) * np.asarray(area_arcsec2, float) / 3600.0


def _star_dndm(i):
    nodes = np.asarray(STAR_COUNTS)
    return 10.0 ** np.interp(i, nodes[:, 0], nodes[:, 1])


def star_counts_between(i_lo, i_hi, area_arcsec2=1.0):
    """Expected number of stars with ``i_lo < i < i_hi`` (AB) in ``area_arcsec2`` arcsec² (:data:`STAR_COUNTS`).

    >>> round(float(star_counts_between(16.0, 26.0, 3600.0**2)), -2)  # per deg²
    8400.0
    """
    grid = np.linspace(float(i_lo), float(i_hi), 401)
    d = _star_dndm(grid)
    return float(np.sum(0.5 * (d[1:] + d[:-1]) * np.diff(grid))) * float(area_arcsec2) / ARCSEC2_PER_DEG2


# ----------------------------------------------------------------------------- early types
def _solve_z(m_obs, abs_r, band):
    """Redshift at which an early type of absolute r magnitude ``abs_r`` has magnitude ``m_obs``."""
    base = _DM + _KR
    if band == "g":
        pred = base + _GR
    elif band == "i":
        pred = base - _RI
    else:
        pred = base
    # pred(z) rises monotonically; solve abs_r + pred(z) = m_obs per object
    return np.interp(np.asarray(m_obs, float) - np.asarray(abs_r, float), pred, _ZGRID)


def early_type(rng, m, *, band="g", abs_mean=-22.0, abs_sigma=0.5):
    """Red-sequence colours, redshift and half-light radius of early types of magnitude ``m``.

    Parameters
    ----------
    rng : numpy Generator
    m : array of total magnitudes (AB) in ``band``.
    band : ``"g"`` or ``"i"``, the band of ``m``.
    abs_mean, abs_sigma : normal distribution of the absolute r magnitude (AB, h = 0.7):
        −22.0 ± 0.5 for lens galaxies, −21.0 ± 0.8 for red field galaxies.

    Returns
    -------
    dict of arrays: ``z``, ``g_r``, ``r_i`` (mag), ``r_eff`` (arcsec), ``abs_r`` (mag).
    """
    m = np.atleast_1d(np.asarray(m, float))
    k = m.size
    abs_r = rng.normal(abs_mean, abs_sigma, k)
    z = _solve_z(m, abs_r, band)
    pred = np.interp(z, _ZGRID, _DM + _KR + (_GR if band == "g" else -_RI if band == "i" else 0.0))
    abs_r = m - pred  # consistent with the clipped redshift
    g_r = np.interp(z, _ZGRID, _GR) + rng.normal(0.0, 0.05, k)
    r_i = np.interp(z, _ZGRID, _RI) + rng.normal(0.0, 0.04, k)
    sig = 0.25 + 0.23 / (1.0 + 10.0 ** (-0.8 * (abs_r + 20.52)))
    r_kpc = 10.0 ** (-0.4 * 0.65 * abs_r - 5.06) * np.exp(rng.normal(0.0, 1.0, k) * sig)
    r_eff = np.clip(r_kpc / np.interp(z, _ZGRID, _KPC_PER_ARCSEC), 0.05, 20.0)
    return {"z": z, "g_r": g_r, "r_i": r_i, "r_eff": r_eff, "abs_r": abs_r}


def flux_ratios(g_r, r_i):
    """(r/g, i/g) flux ratios of LensCrafter's tables from the colours g − r and r − i (mag)."""
    g_r = np.asarray(g_r, float)
    return 10.0 ** (0.4 * g_r), 10.0 ** (0.4 * (g_r + np.asarray(r_i, float)))


def red_colour(rng, z=None):
    """(i/g, r/g) flux ratios of one red-sequence galaxy at ``z`` (default U(0.2, 0.7))."""
    z = rng.uniform(0.2, 0.7) if z is None else z
    g_r = float(np.interp(z, _RS[:, 0], _RS[:, 1])) + rng.normal(0.0, 0.05)
    r_i = float(np.interp(z, _RS[:, 0], _RS[:, 2])) + rng.normal(0.0, 0.04)
    rr, ri = flux_ratios(g_r, r_i)
    return float(ri), float(rr)


def red_fraction(i):
    """Fraction of red (early-type) field galaxies at i magnitude ``i`` (module docstring)."""
    return np.clip(0.40 - 0.08 * (np.asarray(i, float) - 20.0), 0.05, 0.40)


# ----------------------------------------------------------------------------- one cutout
_COLS = ("index", "kind", "x", "y", "m_i", "m_g", "g_r", "r_i", "r_eff", "n_sersic", "e", "phi", "red", "inside")


def _power_law_mags(rng, k, lo, hi, slope):
    a, b = 10.0 ** (slope * lo), 10.0 ** (slope * hi)
    return np.log10(a + rng.uniform(0.0, 1.0, k) * (b - a)) / slope


class _Setup:
    """Per-batch constants of :func:`_draw_one`: expected numbers and the star magnitude CDF."""

    def __init__(self, half, i_min, i_max, scale):
        self.half, self.i_min, self.i_max = half, i_min, i_max
        area = (2.0 * (half + MARGIN)) ** 2
        self.s_lo = min(i_min, 16.0)
        self.lam_g = scale * galaxy_counts_between(i_min, i_max, area) if i_max > i_min else 0.0
        self.lam_s = scale * star_counts_between(self.s_lo, i_max, area) if i_max > self.s_lo else 0.0
        self.grid = np.linspace(self.s_lo, i_max, 401)
        d = _star_dndm(self.grid)
        self.cdf = np.concatenate([[0.0], np.cumsum(0.5 * (d[1:] + d[:-1]) * np.diff(self.grid))])


def _draw_one(rng, su: _Setup):
    """Sources of one cutout: dict of arrays (galaxies first, then stars); positions in arcsec."""
    half, i_min, i_max = su.half, su.i_min, su.i_max
    h = half + MARGIN
    ng = rng.poisson(su.lam_g)
    ns = rng.poisson(su.lam_s)
    m_i = _power_law_mags(rng, ng, i_min, i_max, COUNTS_SLOPE)
    red = rng.uniform(0.0, 1.0, ng) < red_fraction(m_i)
    g_r = np.clip(rng.normal(0.45, 0.20, ng), -0.1, 1.2)
    r_i = np.clip(rng.normal(0.30, 0.15, ng), -0.2, 0.9)
    r_d = np.exp(-1.145 - 0.269 * (m_i - 23.0) + rng.normal(0.0, 0.4, ng))
    r_eff = np.clip(1.678 * r_d, 0.03, 10.0)
    n_s = rng.uniform(0.5, 1.5, ng)
    e = rng.uniform(0.0, 0.75, ng)
    if red.any():
        et = early_type(rng, m_i[red], band="i", abs_mean=-21.0, abs_sigma=0.8)
        g_r[red], r_i[red], r_eff[red] = et["g_r"], et["r_i"], et["r_eff"]
        n_s[red] = rng.uniform(2.5, 5.5, int(red.sum()))
        e[red] = rng.uniform(0.0, 0.4, int(red.sum()))
    ms = np.interp(rng.uniform(0.0, 1.0, ns) * su.cdf[-1], su.cdf, su.grid) if ns else np.zeros(0)
    s_gr = rng.uniform(0.2, 1.5, ns)
    s_ri = np.where(s_gr < 1.3, 0.1 + 0.45 * (s_gr - 0.2), rng.uniform(0.6, 1.8, ns))
    k = ng + ns
    xy = rng.uniform(-h, h, (k, 2))
    phi = rng.uniform(0.0, 180.0, k)
    cat = lambda a, b: np.concatenate([np.asarray(a, float), np.asarray(b, float)])  # noqa: E731
    out = {
        "kind": np.array(["galaxy"] * ng + ["star"] * ns, dtype="U6"),
        "x": xy[:, 0], "y": xy[:, 1], "m_i": cat(m_i, ms), "g_r": cat(g_r, s_gr), "r_i": cat(r_i, s_ri),
        "r_eff": cat(r_eff, np.zeros(ns)), "n_sersic": cat(n_s, np.zeros(ns)), "e": cat(e, np.zeros(ns)),
        "phi": phi, "red": np.concatenate([red, np.zeros(ns, bool)]),
    }  # fmt: skip
    out["m_g"] = out["m_i"] + out["g_r"] + out["r_i"]
    out["inside"] = (np.abs(out["x"]) <= half) & (np.abs(out["y"]) <= half)
    if ns and ms.min() < I_SPIKE:  # spike geometry, drawn only when needed (keeps the stream short)
        out["spike_phi"] = rng.uniform(0.0, 90.0, ns)
    out["saturate"] = rng.uniform(150.0, 500.0) if ns and ms.min() < I_SATURATE else 0.0
    return out


def _check(size, pixel_scale, i_max, i_min, scale):
    if not (np.isfinite(i_max) and 15.0 <= i_max <= 30.0):
        raise InputError(f"field i_max={i_max!r}: expected a depth 15 <= i_max <= 30 mag")
    if not (np.isfinite(i_min) and 10.0 <= i_min <= i_max):
        raise InputError(f"field i_min={i_min!r}: expected 10 <= i_min <= i_max mag")
    if not (np.isfinite(scale) and 0.0 <= scale <= 50.0):
        raise InputError(f"field={scale!r}: expected a scale factor of the published counts in 0..50")
    return 0.5 * int(size) * float(pixel_scale)


def field_population(n: int, *, seed: int = 0, size: int = 64, pixel_scale: float = PIXEL_SCALE,
                     i_max: float = I_MAX, i_min: float = I_MIN, scale: float = 1.0, index_offset: int = 0,
                     salt: int = FIELD_SALT) -> Table:
    """The field sources (galaxies and stars) of ``n`` cutouts, as a table.

    Counts, sizes and colours follow the published distributions of the module docstring.
    Sources are placed uniformly over the cutout and a margin of :data:`MARGIN` arcsec around
    it (their light spills in); ``inside`` marks those whose centre lies in the cutout.

    Parameters
    ----------
    n : int
        Number of cutouts.
    seed : int
        Cutout i is drawn from ``numpy.random.default_rng([seed, index_offset + i, salt])``.
    size : int
        Cutout side, pixels.
    pixel_scale : float
        Arcsec per pixel (HSC 0.168).
    i_max, i_min : float
        Faint and bright limits of the field, i-band AB magnitudes (default 26.0, HSC Wide
        depth, and 17.0 for galaxies; stars start at min(i_min, 16.0)).
    scale : float
        Multiplies the published galaxy and star counts (1 = published; 0 = no field).
    index_offset : int
        Global index of the first cutout (for chunked generation).
    salt : int
        Stream salt (:data:`FIELD_SALT` around lenses, ``FIELD_SALT + 1`` in non-lens scenes).

    Returns
    -------
    astropy Table, one row per source: ``index`` (cutout), ``kind`` (``galaxy``/``star``),
    ``x``, ``y`` (arcsec from the cutout centre, +x right, +y up), ``m_i``, ``m_g`` (AB mag),
    ``g_r``, ``r_i`` (mag), ``r_eff`` (arcsec; 0 for stars), ``n_sersic``, ``e`` (1 − q),
    ``phi`` (deg, CCW from +x), ``red`` (early type), ``inside`` (centre within the cutout).

    Examples
    --------
    >>> from deepmine.lenscrafter.field import field_population
    >>> t = field_population(200, seed=1)
    >>> round(float((t["inside"] & (t["kind"] == "galaxy")).sum()) / 200, 1)  # 3.0 expected
    3.1
    """
    n = int(n)
    if n < 1:
        raise InputError(f"n={n!r}: expected at least 1 cutout")
    su = _Setup(_check(size, pixel_scale, i_max, i_min, scale), float(i_min), float(i_max), float(scale))
    cols = {c: [] for c in _COLS}
    for i in range(n):
        idx = int(index_offset) + i
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, idx, int(salt)])
        d = _draw_one(rng, su)
        cols["index"].append(np.full(d["x"].size, idx, dtype=np.int64))
        for c in _COLS[1:]:
            cols[c].append(d[c])
    t = Table({c: np.concatenate(v) for c, v in cols.items()})
    for c, u in (("x", "arcsec"), ("y", "arcsec"), ("m_i", "mag"), ("m_g", "mag"), ("g_r", "mag"),
                 ("r_i", "mag"), ("r_eff", "arcsec"), ("phi", "deg")):
        t[c].unit = u
    t.meta.update({"deepmine": "lenscrafter field population", "seed": int(seed), "i_max": float(i_max),
                   "i_min": float(i_min), "scale": float(scale), "size": int(size),
                   "pixel_scale": float(pixel_scale)})
    return t


# ----------------------------------------------------------------------------- component rows
def star_rows(x, y, m_g, ratio_i, ratio_r, pixel_scale, zero_point=ZERO_POINT, spike_phi=0.0) -> list:
    """Component rows of one star: a point source, plus diffraction spikes when bright.

    Spikes (i < :data:`I_SPIKE`): two perpendicular :data:`kernels.SPIKE` components at
    ``spike_phi`` and ``spike_phi + 90°`` (degrees), each with 1 % of the flux, a Gaussian
    cross-section of 0.6 pixel (before the PSF) and an exponential length growing from 0.5″ (i = 19) to 3″ (i = 14).
    """
    fg = magnitude_to_flux(m_g, zero_point)
    flux = fg * np.array([ratio_i, ratio_r, 1.0])
    row = np.zeros(kernels.NF)
    row[0] = kernels.POINT
    row[2:7] = (x, y, 0.0, 1.0, 1.0)
    row[7] = 1.0
    row[9:12] = flux
    rows = [row]
    m_i = m_g - 2.5 * math.log10(ratio_i)
    if m_i < I_SPIKE:
        width = 0.6 * pixel_scale
        length = float(np.clip(0.5 + 0.5 * (I_SPIKE - m_i), 0.5, 3.0))
        peak = 0.01 * flux / (math.sqrt(2 * math.pi) * width * 2.0 * length) * pixel_scale**2
        for k in range(2):
            sp = np.zeros(kernels.NF)
            ang = math.radians(spike_phi + 90.0 * k)
            sp[0] = kernels.SPIKE
            sp[2:7] = (x, y, width, length, 1.0)
            sp[7] = math.cos(ang)
            sp[8] = math.sin(ang)
            sp[9:12] = peak
            rows.append(sp)
    return rows


def sersic_row(x, y, r_eff, n, e, phi_deg, m_g, ratio_i, ratio_r, pixel_scale, zero_point=ZERO_POINT):
    """One lens-plane Sersic component row of total g magnitude ``m_g`` and flux ratios i/g, r/g."""
    row = np.zeros(kernels.NF)
    row[0] = kernels.SERSIC
    row[2:7] = (x, y, r_eff, n, 1.0 - e)
    phi = math.radians(phi_deg)
    row[7] = math.cos(phi)
    row[8] = math.sin(phi)
    flux = magnitude_to_flux(m_g, zero_point) * np.array([ratio_i, ratio_r, 1.0])
    row[9:12] = flux * sersic_amp_from_flux(1.0, r_eff, n) * pixel_scale**2
    return row


def _galaxy_rows(d: dict, pixel_scale: float, zero_point: float) -> np.ndarray:
    """Sersic component rows (lens plane) of the galaxies of ``d`` (arrays of one or many cutouts)."""
    ng = d["x"].size
    rr, ri = flux_ratios(d["g_r"], d["r_i"])
    g = np.zeros((ng, kernels.NF))
    if not ng:
        return g
    g[:, 0] = kernels.SERSIC
    g[:, 2] = d["x"]
    g[:, 3] = d["y"]
    g[:, 4] = d["r_eff"]
    g[:, 5] = d["n_sersic"]
    g[:, 6] = 1.0 - d["e"]
    phi = np.radians(d["phi"])
    g[:, 7] = np.cos(phi)
    g[:, 8] = np.sin(phi)
    flux = magnitude_to_flux(d["m_g"], zero_point)[:, None] * np.stack([ri, rr, np.ones(ng)], -1)
    g[:, 9:12] = flux * sersic_amp_from_flux(1.0, d["r_eff"], d["n_sersic"])[:, None] * pixel_scale**2
    return g


def _star_rows_of(d: dict, ng: int, pixel_scale: float, zero_point: float) -> list:
    rr, ri = flux_ratios(d["g_r"][ng:], d["r_i"][ng:])
    rows = []
    for j, k in enumerate(range(ng, d["x"].size)):  # stars follow the galaxies
        spk = d["spike_phi"][j] if "spike_phi" in d else 0.0
        rows.extend(star_rows(d["x"][k], d["y"][k], d["m_g"][k], ri[j], rr[j], pixel_scale, zero_point, spk))
    return rows


_GAL_KEYS = ("x", "y", "r_eff", "n_sersic", "e", "phi", "m_g", "g_r", "r_i")


def add_field(comp, starts, *, seed, index_offset, size, pixel_scale, zero_point=ZERO_POINT, scale=1.0,
              i_max=I_MAX, i_min=I_MIN, salt=FIELD_SALT):
    """Append the field population to every scene of ``(comp, starts)`` (rows of :mod:`.kernels`).

    Returns ``(comp, starts, post)``: the new rows and scene starts, and per scene a
    ``(level, rng)`` pair: the saturation level in counts (0 = none) to apply with
    :func:`apply_saturation` after rendering, and the scene's generator.
    """
    su = _Setup(_check(size, pixel_scale, i_max, i_min, scale), float(i_min), float(i_max), float(scale))
    nsc = len(starts) - 1
    draws, post = [], []
    for i in range(nsc):
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(index_offset) + i, int(salt)])
        d = _draw_one(rng, su)
        draws.append(d)
        post.append((d["saturate"], rng))
    ngal = np.array([int((d["kind"] == "galaxy").sum()) for d in draws], dtype=np.int64)
    allg = {k: np.concatenate([d[k][:n] for d, n in zip(draws, ngal)]) for k in _GAL_KEYS} if nsc else {}
    grows = _galaxy_rows(allg, pixel_scale, zero_point) if nsc else np.zeros((0, kernels.NF))
    goff = np.concatenate([[0], np.cumsum(ngal)])
    out, new_starts = [], [0]
    for i, d in enumerate(draws):
        out.append(comp[starts[i]:starts[i + 1]])
        out.append(grows[goff[i]:goff[i + 1]])
        srows = _star_rows_of(d, int(ngal[i]), pixel_scale, zero_point) if d["x"].size > ngal[i] else []
        if srows:
            out.append(np.array(srows))
        new_starts.append(new_starts[-1] + starts[i + 1] - starts[i] + int(ngal[i]) + len(srows))
    comp = np.concatenate(out) if out else np.zeros((0, kernels.NF))
    return comp, np.asarray(new_starts, dtype=np.int64), post


def saturate(img, rng, level):
    """In place: clip one scene (C×H×W counts) at ``level`` and bleed along columns (+y/−y).

    The bleed length of a column is 5 % of its excess charge in units of the level (a
    look-alike of coadd bleed trails, which are partly masked, not a charge-transfer model).
    """
    for ch in range(img.shape[0]):
        plane = img[ch]
        sat = plane > level
        if not sat.any():
            continue
        for col in np.flatnonzero(sat.any(axis=0)):
            rows_ = np.flatnonzero(sat[:, col])
            excess = float(np.sum(plane[rows_, col] - level))
            bleed = int(min(0.05 * excess / level, plane.shape[0]))
            lo = max(rows_.min() - bleed // 2, 0)
            hi = min(rows_.max() + bleed // 2 + 1, plane.shape[0])
            plane[lo:hi, col] = level * rng.uniform(0.97, 1.0, hi - lo)
    return img


def apply_saturation(images, post):
    """Saturate the rendered scenes whose field holds a bright star (``post`` of :func:`add_field`)."""
    for i, (level, rng) in enumerate(post):
        if level > 0:
            saturate(images[i], rng, level)
    return images
