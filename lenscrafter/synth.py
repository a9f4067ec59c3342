"""Batched synthesis: a lens parameter table → an N×3×H×W stack of i, r, g cutouts.

One compiled kernel (:func:`kernels.render_batch`) renders each scene on a grid padded by the
PSF half-width (so light from just outside the cutout is blurred in), convolves with the PSF
(separable SVD terms: one for a Gaussian), crops, and adds photon and sky noise, in parallel
over scenes (``numba.prange``). Profiles are truncated where they fall below 1e-7 counts per
pixel (:data:`kernels.PROFILE_FLOOR`), far below any sky noise.
Scene i draws its noise from the stream ``(seed, i)`` and its field population
(:mod:`.field`) from ``numpy.random.default_rng([seed, i, field.FIELD_SALT])``: output is
identical for any thread count and any chunking (``index_offset``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.table import Table

from deepmine.inference.errors import InputError
from deepmine.inference.preprocess import percentile_normalization

from . import kernels
from .field import FIELD_SALT, I_MAX, add_field, apply_saturation
from .params import check_lens_params
from .pipeline import HSC, PIXEL_SCALE, ZERO_POINT, check_psf, default_psf, psf_terms
from .profiles import magnitude_to_flux, sersic_amp_from_flux


@dataclass(frozen=True)
class Observation:
    """Observing conditions of a batch, in channel order i, r, g (see :mod:`.pipeline`)."""

    rows: np.ndarray
    cols: np.ndarray
    gain: np.ndarray
    sky_sigma: np.ndarray
    size: int
    pixel_scale: float
    supersample: int


def observation(*, size=64, pixel_scale=PIXEL_SCALE, noise=True, psf=True, supersample=1,
                gain=None, sky_sigma=None) -> Observation:
    """Check the observing options of :func:`craft_lenses` and build the PSF terms."""
    size = int(size)
    if not 8 <= size <= 1024:
        raise InputError(f"size={size}: expected 8 <= size <= 1024 pixels")
    if not (np.isfinite(pixel_scale) and 0.001 <= pixel_scale <= 10.0):
        raise InputError(f"pixel_scale={pixel_scale!r}: expected 0.001 <= pixel_scale <= 10 arcsec")
    ss = int(supersample)
    if not 1 <= ss <= 16 or ss != supersample:
        raise InputError(f"supersample={supersample!r}: expected a whole number 1..16")
    if psf is True:
        kern = default_psf(pixel_scale)
    elif psf is False or psf is None:
        kern = np.ones((3, 1, 1))
    else:
        kern = check_psf(psf, 3)
    rows, cols = psf_terms(kern)
    g = np.broadcast_to(np.asarray(HSC["gain"] if gain is None else gain, float), (3,)).copy()
    s = np.broadcast_to(np.asarray(HSC["sky_sigma"] if sky_sigma is None else sky_sigma, float), (3,)).copy()
    if np.any(~np.isfinite(g) | (g <= 0)):
        raise InputError(f"gain={gain!r}: expected positive electrons per count")
    if np.any(~np.isfinite(s) | (s < 0)):
        raise InputError(f"sky_sigma={sky_sigma!r}: expected non-negative counts")
    if not noise:
        g = np.zeros(3)
        s = np.zeros(3)
    return Observation(rows, cols, g, s, size, float(pixel_scale), ss)


def band_amplitudes(m_g, ratio_r, ratio_i, zero_point=ZERO_POINT) -> np.ndarray:
    """Total fluxes (counts) in channel order i, r, g from the g magnitude and flux ratios: (N, 3)."""
    fg = magnitude_to_flux(m_g, zero_point)
    return np.stack([fg * np.asarray(ratio_i), fg * np.asarray(ratio_r), fg], axis=-1)


def sersic_rows(plane, x, y, r_eff, n, e, phi_deg, flux, pixel_scale) -> np.ndarray:
    """Component rows (:mod:`.kernels`) for Sersic profiles of total ``flux`` (N, 3) counts."""
    x = np.atleast_1d(np.asarray(x, float))
    m = x.shape[0]
    rows = np.zeros((m, kernels.NF))
    rows[:, 0] = kernels.SERSIC
    rows[:, 1] = plane
    rows[:, 2] = x
    rows[:, 3] = y
    rows[:, 4] = r_eff
    rows[:, 5] = n
    rows[:, 6] = 1.0 - np.asarray(e, float)
    phi = np.radians(phi_deg)
    rows[:, 7] = np.cos(phi)
    rows[:, 8] = np.sin(phi)
    amp = sersic_amp_from_flux(np.asarray(flux, float), np.asarray(r_eff, float)[..., None] * np.ones(3),
                               np.asarray(n, float)[..., None] * np.ones(3))
    rows[:, 9:12] = amp * pixel_scale**2
    return rows


def lens_scene(params: Table, pixel_scale: float, zero_point: float = ZERO_POINT):
    """Component rows, scene starts and SIE parameters of a checked lens table."""
    p = {c: np.asarray(params[c], dtype=np.float64) for c in params.colnames}
    n = len(params)
    fg = sersic_rows(0, p["fg_x"], p["fg_y"], p["r_eff_fg"], p["n_fg"], p["e_fg"], p["phi_fg"],
                     band_amplitudes(p["m_g_fg"], p["ratio_r_fg"], p["ratio_i_fg"], zero_point), pixel_scale)
    src = sersic_rows(1, p["src_x"], p["src_y"], p["r_eff_src"], p["n_src"], p["e_src"], p["phi_src"],
                      band_amplitudes(p["m_g_src"], p["ratio_r_src"], p["ratio_i_src"], zero_point), pixel_scale)
    comp = np.empty((2 * n, kernels.NF))
    comp[0::2] = fg
    comp[1::2] = src
    starts = np.arange(0, 2 * n + 1, 2, dtype=np.int64)
    lenses = np.zeros((n, 6))
    lenses[:, 0] = p["theta_e"]
    lenses[:, 1] = 1.0 - p["e_sie"]
    phi = np.radians(p["phi_sie"])
    lenses[:, 2] = np.cos(phi)
    lenses[:, 3] = np.sin(phi)
    lenses[:, 4] = p["dfl_x"]
    lenses[:, 5] = p["dfl_y"]
    return comp, starts, lenses


def render(comp, starts, lenses, obs: Observation, seed: int = 0, index_offset: int = 0) -> np.ndarray:
    """Run the compiled batch renderer; float32 (N, 3, size, size) counts per pixel."""
    n = lenses.shape[0]
    out = np.empty((n, 3, obs.size, obs.size), dtype=np.float32)
    if n:
        kernels.render_batch(
            np.ascontiguousarray(comp, dtype=np.float64), np.ascontiguousarray(starts, dtype=np.int64),
            np.ascontiguousarray(lenses, dtype=np.float64), obs.size, obs.pixel_scale, obs.supersample,
            obs.rows, obs.cols, obs.gain, obs.sky_sigma, np.uint64(int(seed) & 0xFFFFFFFFFFFFFFFF),
            int(index_offset), out,
        )
    return out


def finish(images: np.ndarray, output: str) -> np.ndarray:
    """``"float32"`` → counts as they are; ``"uint8"`` → per-band percentile normalisation."""
    if output == "float32":
        return images
    if output == "uint8":
        return percentile_normalization(images)
    raise InputError(f"output={output!r}: expected 'uint8' or 'float32'")


def craft_lenses(params: Table, *, seed: int = 0, size: int = 64, pixel_scale: float = PIXEL_SCALE,
                 noise: bool = True, psf=True, supersample: int = 1, output: str = "uint8",
                 zero_point: float = ZERO_POINT, gain=None, sky_sigma=None,
                 field: float | None = None, index_offset: int = 0, field_i_max: float = I_MAX) -> np.ndarray:
    """Synthesize one 3-band cutout per row of a lens table (seed Figure 4.2 pipeline).

    Parameters
    ----------
    params : astropy Table
        One row per lens with every column of :mod:`.params` (e.g. from
        :func:`sample_lens_params` or :func:`reference_lens_params`); checked, and out-of-range
        values raise :class:`InputError` naming the column, row and range.
    seed : int
        Noise seed; lens i uses the stream ``(seed, index_offset + i)``.
    size, pixel_scale : cutout side (pixels) and pixel scale (arcsec; HSC 0.168).
    noise : add shot noise (gain) and Gaussian sky noise (``sky_sigma``), defaults :data:`HSC`.
    psf : True (per-band Gaussian, HSC seeing), False (none), or a K×K / 3×K×K kernel array in
        channel order i, r, g (e.g. an HSC PSF image), K odd.
    supersample : sub-pixel samples per axis (1 = pixel centres).
    output : ``"uint8"`` (percentile-normalised, the scanner's convention) or ``"float32"``
        (counts per pixel for ``zero_point``).
    gain, sky_sigma : electrons per count and sky noise (counts/pixel), scalar or per channel.
    field : the field population around each lens (:mod:`.field`: galaxies from published
        i-band counts down to ``field_i_max``, with published sizes and colours, and stars with
        spikes and saturation). ``None`` (default) or 1 = the published counts; another number
        scales them (e.g. 0.5, 2); 0 = a clean lens on empty sky. (Before LensCrafter had a
        realistic field this was the mean number of faint galaxies, default 0; ``field=1``
        as in ``deepmine craft --field 1`` now means the published counts.) Drawn from
        ``default_rng([seed, index_offset + i, field.FIELD_SALT])``.
    index_offset : global index of the first row (for chunked generation).
    field_i_max : faint limit of the field population, i-band AB mag (default 26.0, HSC Wide).

    Returns
    -------
    (N, 3, size, size) array, channels i, r, g (R, G, B).
    """
    comp, starts, lenses, post, obs = lens_scenes(
        params, seed=seed, size=size, pixel_scale=pixel_scale, noise=noise, psf=psf, supersample=supersample,
        output=output, zero_point=zero_point, gain=gain, sky_sigma=sky_sigma, field=field,
        index_offset=index_offset, field_i_max=field_i_max)
    images = apply_saturation(render(comp, starts, lenses, obs, seed, index_offset), post)
    return finish(images, output)


def lens_scenes(params: Table, *, seed: int = 0, size: int = 64, pixel_scale: float = PIXEL_SCALE,
                noise: bool = True, psf=True, supersample: int = 1, output: str = "uint8",
                zero_point: float = ZERO_POINT, gain=None, sky_sigma=None, field: float | None = None,
                index_offset: int = 0, field_i_max: float = I_MAX):
    """The Python half of :func:`craft_lenses` (same arguments): checks, component rows, field.

    Returns ``(comp, starts, lenses, post, obs)`` for :func:`render` and
    :func:`~.field.apply_saturation`.
    """
    check_lens_params(params)
    if output not in ("uint8", "float32"):
        raise InputError(f"output={output!r}: expected 'uint8' or 'float32'")
    obs = observation(size=size, pixel_scale=pixel_scale, noise=noise, psf=psf, supersample=supersample,
                      gain=gain, sky_sigma=sky_sigma)
    comp, starts, lenses = lens_scene(params, obs.pixel_scale, zero_point)
    scale = field_scale(field)
    post = ()
    if scale > 0:
        comp, starts, post = add_field(comp, starts, seed=seed, index_offset=index_offset, size=obs.size,
                                       pixel_scale=obs.pixel_scale, zero_point=zero_point, scale=scale,
                                       i_max=field_i_max, salt=FIELD_SALT)
    return comp, starts, lenses, post, obs


def craft_lens_chunks(params: Table, chunk: int = 2048, *, seed: int = 0, output: str = "uint8",
                      index_offset: int = 0, **options):
    """:func:`craft_lenses` of ``params`` a chunk of rows at a time, pipelined: yields
    ``(start, stop, images)`` for rows ``start:stop``.

    While the compiled renderer (which releases the GIL) draws chunk k on every core, a second
    thread prepares chunk k + 1 (checks, component rows and the field population, which is
    Python), so the cores do not wait for it. The first chunk is at most 256 rows, so that
    the pipeline fills quickly. The images equal ``craft_lenses(params[a:b],
    index_offset=index_offset + a, ...)`` for any chunk size.
    """
    from concurrent.futures import ThreadPoolExecutor

    n = len(params)
    chunk = max(int(chunk), 1)
    first = min(chunk, 256)  # a short first chunk: the pipeline fills (and the cores start) sooner
    bounds = [(0, min(first, n))] + [(a, min(a + chunk, n)) for a in range(first, n, chunk)] if n else []

    def prepare(a, b):
        return lens_scenes(params[a:b], seed=seed, output=output, index_offset=index_offset + a, **options)

    with ThreadPoolExecutor(max_workers=1) as pool:
        nxt = pool.submit(prepare, *bounds[0]) if bounds else None
        for k, (a, b) in enumerate(bounds):
            comp, starts, lenses, post, obs = nxt.result()
            nxt = pool.submit(prepare, *bounds[k + 1]) if k + 1 < len(bounds) else None
            images = apply_saturation(render(comp, starts, lenses, obs, seed, index_offset + a), post)
            yield a, b, finish(images, output)


def field_scale(field) -> float:
    """The scale factor of the published field counts for a ``field`` option (None → 1)."""
    scale = 1.0 if field is None else field
    try:
        scale = float(scale)
    except (TypeError, ValueError):
        raise InputError(f"field={field!r}: expected None or a scale factor of the published counts in 0..50") from None
    if not (np.isfinite(scale) and 0.0 <= scale <= 50.0):
        raise InputError(f"field={field!r}: expected None or a scale factor of the published counts in 0..50")
    return scale
