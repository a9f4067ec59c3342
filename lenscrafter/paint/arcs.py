"""Painting LensCrafter arcs onto real galaxy cutouts (issue 21's core; torch-free).

A survey trains and measures a lens finder on its own sky by drawing simulated arcs around real
galaxies (the seed's LensFlow positives were simulated arcs co-added onto real COSMOS
ellipticals, chapter 2). :func:`paint_arcs` does this for a stack of real cutouts in flux units:

1. :func:`~deepmine.lenscrafter.paint.galaxy_light.measure_light` finds each galaxy: the sky of every
   band is the median of the cutout's border (``border`` pixels wide) and its noise 1.4826 × the
   border's median absolute deviation; the centre is the light-weighted centroid (first moments) of the i band above the
   sky (pixels more than 1σ above it), in a Gaussian window (σ 0.6″) that starts on the light's
   local maximum reached uphill from the cutout centre and follows the centroid until it stops
   moving (SExtractor's windowed positions: exact for a symmetric galaxy, and neighbours do not
   pull it); axis ratio and angle come from the window-corrected second moments of that light.
2. The mass is an SIE centred on that centroid (sub-pixel positions are kept: the deflector
   sits at the centroid in arcsec from the cutout centre ((W−1)/2, (H−1)/2), the convention of
   ``docs/formats.md``). θ_E is drawn from ``theta_e`` (default uniform 0.8–2.8″), or with
   ``theta_e_from_light`` from the deflector's measured i-band magnitude through Faber–Jackson
   and the SIS relation, clipped to that range (:mod:`~deepmine.lenscrafter.paint.theta_prior`); with
   ``follow_light`` the mass has the light's axis ratio (q ≥ 0.5, i.e. ``e_sie`` ≤ 0.5, the
   range of :func:`~deepmine.lenscrafter.sample_lens_params`) and angle (± N(0, 10°), as that
   prior's light follows its mass), otherwise both come from that prior.
3. The source (Sersic) comes from LensCrafter's lens prior
   (:func:`~deepmine.lenscrafter.sample_lens_params`, source columns; overrides such as
   ``m_g_src=(22, 24)`` pass through), placed relative to the SIE centre.
4. The source alone is ray-traced and rendered by LensCrafter's batched renderer
   (:func:`deepmine.lenscrafter.synth.render`: the same SIE and Sersic kernels as
   :func:`~deepmine.lenscrafter.craft_lenses`, PSF-convolved on a grid padded by the PSF
   half-width). No deflector light is drawn: the real galaxy is the deflector.
5. The arc gets its own photon noise (``gain`` electrons per count; the real cutout already
   has sky and galaxy noise) and is added to the real cutout.

Parameters are drawn from a random stream of their own per cutout,
``default_rng(SeedSequence([seed, index, PAINT_SALT]))``, and the arc's photon noise from the
SplitMix64 stream ``(seed, index, 10 + band)``, with ``index = index_offset + i``: a cutout's
arc does not depend on the rest of the batch, on chunking or on the thread count.

**Lensed magnitude** of the arc per band: ``zero_point − 2.5·log10(F)`` with ``F`` the total
flux of the noiseless, PSF-convolved arc inside the cutout (light lensed or blurred outside
it is not counted). **Signal-to-noise** per band (issue 21's definition): with ``a`` the
noiseless arc and ``σ`` the sky noise of the band (measured on the border, or given), over the
pixels ``A = {p : a_p > σ}`` where the arc exceeds 1σ of the sky::

    S/N = Σ_A a_p / sqrt(Σ_A σ_p²),   σ_p² = σ² + (a_p + max(I_p − sky, 0)) / gain

i.e. the arc's flux over the noise of those pixels summed in quadrature: sky noise plus the
photon noise of the arc and of the real galaxy's light ``I_p − sky`` in that pixel. No pixel
above 1σ gives S/N = 0. See :func:`arc_snr`.
"""
from __future__ import annotations

import numpy as np

from deepmine.inference.errors import InputError

from .. import kernels
from ..params import LENS_COLUMNS, PARAM_RANGES, UNITS, check_lens_params, sample_lens_columns
from ..pipeline import BANDS, HSC, PIXEL_SCALE, ZERO_POINT, check_psf, default_psf, psf_terms
from ..synth import Observation, render, sersic_rows
from .galaxy_light import _check_number, measure_light, sky_level  # noqa: F401 - re-exported

#: Salt of the per-cutout parameter streams (distinct from the synthesis and field streams).
PAINT_SALT = 0x9A17
#: θ_E prior of the painted lenses (arcsec, uniform), the range of a galaxy-scale lens on HSC.
THETA_E_DEFAULT = (0.8, 2.8)
#: The source's columns of a lens table: what ``**source`` may set (``src_x``, ``src_y`` relative to the SIE centre).
SOURCE_COLUMNS = tuple(c for c in LENS_COLUMNS if c.endswith("_src") or c.startswith("src_"))
#: m_g_fg written into the parameter table: the faintest accepted value (no deflector light is drawn).
NO_LIGHT_MAG = PARAM_RANGES["m_g_fg"][1]


# ----------------------------------------------------------------------------- signal-to-noise
def arc_snr(arc, sky_sigma, gain, light=None) -> np.ndarray:
    """Signal-to-noise of noiseless arcs (the definition of the module docstring).

    Parameters
    ----------
    arc : (..., H, W) array
        Noiseless arc, flux per pixel (≥ 0).
    sky_sigma : array broadcastable to ``arc.shape[:-2]``
        Sky noise per pixel, same flux unit.
    gain : array broadcastable to ``arc.shape[:-2]``
        Electrons per flux unit, for the photon noise of the arc and of ``light``.
    light : (..., H, W) array, optional
        The real image's light above the sky (its negative values count as 0).

    Returns
    -------
    float64 array of shape ``arc.shape[:-2]``: Σ_A a / sqrt(Σ_A σ_p²) over A = {a > sky_sigma}.

    >>> a = np.zeros((8, 8)); a[2:4, 2:7] = 5.0            # 10 pixels of 5 counts
    >>> round(float(arc_snr(a, 1.0, 1e12)), 6)              # 50 / sqrt(10 · 1²)
    15.811388
    """
    a = np.asarray(arc, dtype=np.float64)
    s = np.broadcast_to(np.asarray(sky_sigma, dtype=np.float64), a.shape[:-2])[..., None, None]
    g = np.broadcast_to(np.asarray(gain, dtype=np.float64), a.shape[:-2])[..., None, None]
    extra = 0.0 if light is None else np.maximum(np.asarray(light, dtype=np.float64), 0.0)
    sel = a > s
    var = s * s + (a + extra) / g
    sig = np.where(sel, a, 0.0).sum(axis=(-2, -1))
    noise = np.sqrt(np.where(sel, var, 0.0).sum(axis=(-2, -1)))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(noise > 0, sig / np.where(noise > 0, noise, 1.0), 0.0)


# ----------------------------------------------------------------------------- checks
def _per_band(name, value, nchan, low, high) -> np.ndarray:
    v = np.asarray(value, dtype=np.float64)
    if v.ndim == 0:
        v = np.full(nchan, float(v))
    if v.shape != (nchan,):
        raise InputError(f"{name}: expected a number or {nchan} values (one per band i, r, g), got shape {v.shape}")
    for b, x in zip(BANDS, v):
        if not (np.isfinite(x) and low <= x <= high):
            raise InputError(f"{name}={float(x):g} (band {b}) is out of range; expected {low:g} <= {name} <= {high:g}")
    return v


def _check_cutouts(cutouts) -> np.ndarray:
    a = np.asarray(cutouts)
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4 or a.shape[0] < 1:
        raise InputError(f"cutouts: expected an N×C×H×W stack, got shape {np.shape(cutouts)}")
    if a.shape[1] != len(BANDS):
        raise InputError(f"cutouts: expected {len(BANDS)} channels in the order {', '.join(BANDS)}, got {a.shape[1]}")
    if a.shape[2] != a.shape[3] or not 8 <= a.shape[2] <= 1024:
        raise InputError(f"cutouts: expected square cutouts of 8..1024 pixels, got {a.shape[2]}×{a.shape[3]}")
    if a.dtype.kind not in "fiu":
        raise InputError(f"cutouts: expected numbers (flux per pixel), got dtype {a.dtype}")
    if a.dtype == np.uint8:
        raise InputError("cutouts: uint8 stacks are percentile-normalised images, not flux; paint onto flux cutouts")
    if not np.all(np.isfinite(a)):
        raise InputError("cutouts: contain NaN or inf (mask or fill them before painting)")
    return a


def _psf_kernels(psf, pixel_scale) -> np.ndarray:
    """None → HSC seeing; numbers → Gaussian FWHM (arcsec) per band; an array → kernel(s)."""
    if psf is None:
        return default_psf(pixel_scale)
    if np.ndim(psf) <= 1:
        fwhm = _per_band("psf", psf, len(BANDS), 0.01, 20.0)
        return default_psf(pixel_scale, fwhm)
    return check_psf(psf, len(BANDS))


def _theta_e_values(theta_e, n: int):
    """(kind, spec) of the θ_E prior, checked: ("range", (lo, hi)), ("fixed", v) or ("array", values)."""
    lo_ok, hi_ok = 0.0, PARAM_RANGES["theta_e"][1]
    if isinstance(theta_e, tuple) and len(theta_e) == 2:
        lo, hi = (_check_number("theta_e", v, lo_ok, hi_ok) for v in theta_e)
        if not (0 < lo <= hi):
            raise InputError(f"theta_e={theta_e!r}: expected a range (low, high) with 0 < low <= high arcsec")
        return "range", (lo, hi)
    if np.isscalar(theta_e):
        v = _check_number("theta_e", theta_e, lo_ok, hi_ok)
        if v <= 0:
            raise InputError(f"theta_e={theta_e!r} is out of range; expected 0 < theta_e <= {hi_ok:g} arcsec")
        return "fixed", v
    arr = np.asarray(theta_e, dtype=np.float64)
    if arr.shape != (n,):
        raise InputError(f"theta_e: expected a number, a (low, high) range or {n} values, got shape {arr.shape}")
    for v in arr:
        _check_number("theta_e", v, 1e-9, hi_ok)
    return "array", arr


# ----------------------------------------------------------------------------- painting
def _draw_lens(i, index, seed, te_kind, te_spec, q_light, phi_light, follow_light, source) -> dict:
    """Lens columns of cutout ``i`` (lens number ``index``) from its own stream: 1-element arrays."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(index), PAINT_SALT]))
    if te_kind == "light":  # te_spec: (low, high, σ_FJ per cutout (km/s), scatter (dex), D_ls/D_s)
        from .theta_prior import theta_e_sis

        lo, hi, sigma, scatter, dls_ds = te_spec
        te = float(np.clip(theta_e_sis(sigma[i] * 10.0 ** (scatter * rng.normal()), dls_ds), lo, hi)) \
            if np.isfinite(sigma[i]) else lo
    elif te_kind == "range":
        te = rng.uniform(*te_spec)
    elif te_kind == "fixed":
        te = te_spec
    else:
        te = float(te_spec[i])
    over = {"theta_e": te}
    if follow_light:
        over["e_sie"] = float(min(1.0 - q_light, 0.5))
        phi = float(phi_light) + rng.normal(0.0, 10.0)
        over["phi_sie"] = (phi + 90.0) % 180.0 - 90.0
    for name, spec in source.items():
        over[name] = float(spec[i]) if isinstance(spec, (np.ndarray, list)) else spec
    sub_seed = int(rng.integers(0, 2**62))
    return sample_lens_columns(1, seed=sub_seed, **over)


def _lens_table(draws: list, light) -> object:
    """One parameter Table from the per-cutout draws, the deflectors moved to the light's centroids."""
    from astropy.table import Table

    cols = {c: np.concatenate([d[c] for d in draws]) for c in LENS_COLUMNS}
    dx = np.asarray(light["dx"], dtype=np.float64)
    dy = np.asarray(light["dy"], dtype=np.float64)
    for col, d in (("dfl_x", dx), ("fg_x", dx), ("src_x", dx), ("dfl_y", dy), ("fg_y", dy), ("src_y", dy)):
        cols[col] = cols[col] + d
    cols["m_g_fg"] = np.full(len(dx), NO_LIGHT_MAG)
    params = Table(cols, copy=False)
    for name, unit in UNITS.items():
        params[name].unit = unit
    params.meta["deepmine"] = "lenscrafter lens parameters"
    check_lens_params(params)
    return params


def paint_arcs(cutouts, *, pixel_scale: float = PIXEL_SCALE, zero_point=ZERO_POINT, gain=HSC["gain"],
               psf=None, seed: int = 0, index_offset: int = 0, indices=None, theta_e=THETA_E_DEFAULT,
               follow_light: bool = True, theta_e_from_light=False, centers=None, sky_sigma=None, arc_noise: bool = True,
               supersample: int = 1, bands=BANDS, border: int = 4, window: float = 0.6,
               return_arcs: bool = False, **source):
    """Paint a LensCrafter arc around the galaxy of every real cutout.

    Parameters
    ----------
    cutouts : (N, 3, H, W) float array
        Real cutouts in flux units (counts per pixel for ``zero_point``), square, channels in
        the order i, r, g (the HSC models' order), sky included or subtracted.
    pixel_scale : float
        Arcsec per pixel of the cutouts (0.168 for HSC).
    zero_point : float or 3 floats
        AB zero point of each band (i, r, g): a flux ``F`` is ``zero_point − 2.5·log10(F)`` mag.
    gain : float or 3 floats
        Electrons per count of each band, for the arc's photon noise (and its S/N).
    psf : None, float or 3 floats, or a K×K / 3×K×K array
        ``None``: Gaussian with HSC-Wide median seeing (i 0.58″, r 0.76″, g 0.77″); numbers:
        Gaussian FWHM per band in arcsec; an array: the PSF image(s), odd K, any normalisation.
    seed, index_offset : int
        Cutout i draws its lens from ``(seed, index_offset + i)`` (see the module docstring).
    indices : N whole numbers >= 0, optional
        The lens numbers of the cutouts instead of ``index_offset + i`` (e.g. the same real
        galaxy painted several times, as lenses of a selection function's cells).
    theta_e : (low, high), float or N floats
        Einstein radius prior, arcsec: uniform on (low, high) (default 0.8–2.8″), fixed, or one
        value per cutout; 0 < θ_E <= 20″.
    theta_e_from_light : bool or dict
        Draw θ_E from the deflector's i-band magnitude in a 2″ aperture (Faber–Jackson L ∝ σ⁴ and
        θ_E = 4π (σ/c)² D_ls/D_s, log-normal scatter), clipped to ``theta_e`` = (low, high):
        :mod:`~deepmine.lenscrafter.paint.theta_prior`, whose :data:`LIGHT_PRIOR` (σ 240 km/s at
        m_i 19.5, D_ls/D_s 0.6, scatter 0.08 dex) a dict overrides. Adds the columns ``m_dfl``
        (mag) and ``sigma_v`` (km/s, Faber–Jackson, before scatter).
    follow_light : bool
        The SIE takes the light's axis ratio (capped at e = 0.5) and angle (± 10°); otherwise
        both come from :func:`~deepmine.lenscrafter.sample_lens_params`'s prior.
    centers : (N, 2) array, optional
        SIE centres (x, y) in 0-based pixel coordinates (e.g. catalogue positions) instead of the
        measured centroids.
    sky_sigma : float or 3 floats, optional
        Sky noise per pixel of each band (flux units) for the S/N; default: measured on the border.
    arc_noise : bool
        Add the arc's photon noise (default). False adds the noiseless arc.
    supersample : int
        Sub-pixel samples per axis when rendering the arc.
    bands : sequence of str
        The cutouts' band order; must be LensCrafter's ("i", "r", "g").
    border, window : sky frame width (pixels) and centroid window (arcsec) of :func:`measure_light`.
    return_arcs : bool
        Also return the noiseless arcs.
    **source
        Overrides of source columns of the prior (``m_g_src``, ``r_eff_src``, ``n_src``,
        ``e_src``, ``phi_src``, ``ratio_r_src``, ``ratio_i_src``; ``src_x``/``src_y`` relative to
        the SIE centre): a number, a ``(low, high)`` tuple (uniform) or an array of N values.

    Returns
    -------
    painted : (N, 3, H, W) array
        The cutouts plus the (noisy) arcs; float64 for float64 input, else float32.
    params : astropy Table
        One row per cutout: every LensCrafter lens column (positions in arcsec from the cutout
        centre, so :func:`~deepmine.lenscrafter.craft_lenses` with ``field=0, noise=False``
        redraws the same arc; ``m_g_fg`` = 40, no deflector light), ``index``, the centroid
        ``x``, ``y`` (pixels), ``found``, ``q_light``, ``phi_light``, per band ``sky_<b>``,
        ``sky_sigma_<b>``, ``m_arc_<b>`` (lensed magnitude of the arc in the cutout, AB mag),
        ``snr_<b>`` (the arc's S/N), and ``mu`` (g-band flux in the cutout over the source's
        unlensed flux).
    arcs : (N, 3, H, W) float32, only with ``return_arcs``
        The noiseless arcs.

    >>> import numpy as np
    >>> from deepmine.lenscrafter import paint_arcs
    >>> yy, xx = np.mgrid[:64, :64]
    >>> gal = 20.0 * np.exp(-((xx - 31.8) ** 2 + (yy - 31.2) ** 2) / 18.0)   # a round galaxy
    >>> sky = np.random.default_rng(0).normal(0.0, 0.07, (2, 3, 64, 64))
    >>> painted, params = paint_arcs(gal + sky, seed=1, m_g_src=23.0)
    >>> painted.shape, len(params)
    ((2, 3, 64, 64), 2)
    >>> bool(abs(params["x"][0] - 31.8) < 0.05 and abs(params["y"][0] - 31.2) < 0.05)
    True
    >>> bool(np.all(params["snr_g"] > 10))
    True
    """
    a = _check_cutouts(cutouts)
    if tuple(bands) != tuple(BANDS):
        raise InputError(f"bands={tuple(bands)}: LensCrafter paints channels in the order {', '.join(BANDS)}; "
                         "reorder the cutouts")
    n, nchan, size, _ = a.shape
    pixel_scale = _check_number("pixel_scale", pixel_scale, 0.001, 10.0)
    zp = _per_band("zero_point", zero_point, nchan, 10.0, 40.0)
    g = _per_band("gain", gain, nchan, 1e-6, 1e15)
    ss = int(supersample)
    if ss != supersample or not 1 <= ss <= 16:
        raise InputError(f"supersample={supersample!r}: expected a whole number 1..16")
    unknown = sorted(set(source) - set(SOURCE_COLUMNS))
    if unknown:
        raise InputError(f"unknown source parameter(s) {', '.join(unknown)}; paint_arcs takes {', '.join(SOURCE_COLUMNS)}")
    te_kind, te_spec = _theta_e_values(theta_e, n)
    prior = None
    if theta_e_from_light is not False and theta_e_from_light is not None:
        from .theta_prior import light_prior

        prior = light_prior(theta_e_from_light)
        if te_kind != "range":
            raise InputError("theta_e_from_light: theta_e must be the (low, high) range the drawn values are clipped to")
    if indices is None:
        idx = np.arange(int(index_offset), int(index_offset) + n, dtype=np.int64)
    else:
        idx = np.asarray(indices)
        if idx.shape != (n,) or idx.dtype.kind not in "iu" or (n and idx.min() < 0):
            raise InputError(f"indices: expected {n} whole numbers >= 0 (one lens number per cutout)")
        idx = idx.astype(np.int64)
    kern = _psf_kernels(psf, pixel_scale)

    light = measure_light(a, pixel_scale=pixel_scale, border=border, window=window)
    if centers is not None:
        cen = np.asarray(centers, dtype=np.float64)
        if cen.shape != (n, 2) or not np.all(np.isfinite(cen)):
            raise InputError(f"centers: expected {n}×2 finite pixel positions (x, y), got shape {cen.shape}")
        light["x"], light["y"] = cen[:, 0], cen[:, 1]
        light["dx"] = (cen[:, 0] - (size - 1) / 2.0) * pixel_scale
        light["dy"] = (cen[:, 1] - (size - 1) / 2.0) * pixel_scale
    sig = light["sky_sigma"] if sky_sigma is None else np.broadcast_to(
        _per_band("sky_sigma", sky_sigma, nchan, 0.0, 1e30), (n, nchan))
    if prior is not None:
        from .theta_prior import deflector_magnitude, sigma_from_magnitude

        m_dfl = deflector_magnitude(a, light["x"], light["y"], np.asarray(light["sky"])[:, 0], zp[0], pixel_scale)
        sigma_fj = sigma_from_magnitude(m_dfl, prior["sigma_ref"], prior["m_ref"])
        te_kind, te_spec = "light", (*te_spec, sigma_fj, prior["scatter"], prior["dls_ds"])

    # ---- parameters: one stream per cutout (plain arrays; one Table at the end)
    q_l, phi_l = np.asarray(light["q_light"]), np.asarray(light["phi_light"])
    draws = [_draw_lens(i, idx[i], seed, te_kind, te_spec, q_l[i], phi_l[i], follow_light, source)
             for i in range(n)]
    params = _lens_table(draws, light)

    # ---- the arcs: LensCrafter's renderer, source plane only, noiseless, PSF-convolved
    p = {c: np.asarray(params[c], dtype=np.float64) for c in LENS_COLUMNS}
    m_g = p["m_g_src"]
    flux = np.stack([p["ratio_i_src"] * 10 ** (-0.4 * (m_g - zp[0])),
                     p["ratio_r_src"] * 10 ** (-0.4 * (m_g - zp[1])),
                     10 ** (-0.4 * (m_g - zp[2]))], axis=-1)
    comp = sersic_rows(1, p["src_x"], p["src_y"], p["r_eff_src"], p["n_src"], p["e_src"], p["phi_src"],
                       flux, pixel_scale)
    starts = np.arange(n + 1, dtype=np.int64)
    lenses = np.zeros((n, 6))
    lenses[:, 0] = p["theta_e"]
    lenses[:, 1] = 1.0 - p["e_sie"]
    phi = np.radians(p["phi_sie"])
    lenses[:, 2], lenses[:, 3] = np.cos(phi), np.sin(phi)
    lenses[:, 4], lenses[:, 5] = p["dfl_x"], p["dfl_y"]
    prows, pcols = psf_terms(kern)
    obs = Observation(prows, pcols, np.zeros(nchan), np.zeros(nchan), size, pixel_scale, ss)
    arcs = render(comp, starts, lenses, obs, seed, 0)  # no noise drawn here: the offset is unused

    noisy = arcs.astype(np.float64)
    if arc_noise:
        for i in range(n):
            for ch in range(nchan):
                plane = noisy[i, ch]
                kernels.shot_noise_plane(plane, float(g[ch]),
                                         kernels.stream_state(np.uint64(int(seed) & 0xFFFFFFFFFFFFFFFF),
                                                              int(idx[i]), 10 + ch))
    out_dtype = np.float64 if a.dtype == np.float64 else np.float32
    painted = (a.astype(np.float64) + noisy).astype(out_dtype)

    # ---- the table
    total = arcs.astype(np.float64).sum(axis=(-2, -1))
    snr = arc_snr(arcs, sig, g, a - np.asarray(light["sky"])[..., None, None])
    params["index"] = idx
    for c in ("x", "y", "found", "q_light", "phi_light"):
        params[c] = light[c]
    with np.errstate(divide="ignore"):
        for b, band in enumerate(BANDS):
            params[f"sky_{band}"] = np.asarray(light["sky"])[:, b]
            params[f"sky_sigma_{band}"] = np.asarray(sig)[:, b]
            params[f"m_arc_{band}"] = np.where(total[:, b] > 0, zp[b] - 2.5 * np.log10(total[:, b]), np.inf)
            params[f"m_arc_{band}"].unit = "mag"
            params[f"snr_{band}"] = snr[:, b]
    params["mu"] = total[:, 2] / flux[:, 2]
    if prior is not None:
        params["m_dfl"], params["sigma_v"] = m_dfl, sigma_fj
        params["m_dfl"].unit, params["sigma_v"].unit = "mag", "km / s"
    params.meta["deepmine"] = "lenscrafter arcs painted onto real cutouts"
    params.meta["paint"] = {"pixel_scale": pixel_scale, "zero_point": zp.tolist(), "gain": g.tolist(),
                            "seed": int(seed), "index_offset": int(index_offset), "follow_light": bool(follow_light),
                            "theta_e": "per cutout" if te_kind == "array" else
                            [float(v) for v in np.atleast_1d(te_spec[:2] if te_kind == "light" else te_spec)][:2],
                            **({"theta_e_prior": {"kind": "light", **prior}} if prior is not None else {})}
    if return_arcs:
        return painted, params, arcs
    return painted, params
