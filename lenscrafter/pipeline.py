"""The Figure 4.2 pipeline as array functions, and the observing conditions (PSF, noise).

::

    img = deflect(dfl, src, x, y)        # lensed source on the image-plane grid
    ems = compose(fg, img)               # + foreground light: the emission
    syn = shot_noise(ems, gain)          # Poisson photon noise
    syn = convolve_psf(syn, psf)         # seeing
    syn = observe(syn, sky_sigma)        # Gaussian sky/read noise per band
    png = percentile_normalization(syn)  # deepmine.inference.preprocess (the scanner's own)

Units: images are counts per pixel for the zero point (27.0 = HSC coadds); arrays are
``(..., H, W)`` with the band axis (if any) third from last, channel order i, r, g
(R, G, B) as stored by HSC cutouts.

Order of the noise: these functions run in the seed's order (shot noise, then PSF). The batched
:func:`~deepmine.lenscrafter.synth.craft_lenses` draws photon noise *after* the PSF, as a
detector counts photons that the atmosphere has already spread (shot noise before the PSF would
be smoothed by it); with coadd gains of ~10³ electrons per count the photon noise is far below
the sky noise, so the two orders give images that cannot be told apart.

Default observing conditions (:data:`HSC`): median HSC-Wide seeing FWHM i 0.58″, r 0.76″,
g 0.77″; sky noise per 0.168″ pixel i 0.077, r 0.064, g 0.045 counts (5σ point-source depths
≈ 26.2, 26.4, 26.8 mag); effective gain 1000 electrons per count.
"""
from __future__ import annotations

import math

import numpy as np

from deepmine.inference.errors import InputError
from deepmine.inference.formats import HSC_BANDS

from . import kernels

#: Channel order of every LensCrafter image (R, G, B).
BANDS = HSC_BANDS
PIXEL_SCALE = 0.168
ZERO_POINT = 27.0
HSC = {
    "psf_fwhm": (0.58, 0.76, 0.77),
    "sky_sigma": (0.077, 0.064, 0.045),
    "gain": (1000.0, 1000.0, 1000.0),
}


# ----------------------------------------------------------------------------- PSF kernels
def _kernel_size(sigma_pix: float, size: int | None) -> int:
    if size is None:
        size = 2 * int(math.ceil(4.0 * sigma_pix)) + 1
    size = int(size)
    if size < 1 or size % 2 == 0:
        raise InputError(f"PSF size={size}: expected an odd number of pixels >= 1")
    return size


def gaussian_psf(fwhm: float, pixel_scale: float = PIXEL_SCALE, size: int | None = None) -> np.ndarray:
    """Circular Gaussian PSF kernel (sums to 1). ``fwhm`` in arcsec; ``size`` odd (default ±4σ)."""
    if not (np.isfinite(fwhm) and fwhm > 0):
        raise InputError(f"PSF fwhm={fwhm!r}: expected a positive number of arcsec")
    sigma = fwhm / (2.0 * math.sqrt(2.0 * math.log(2.0))) / pixel_scale
    k = _kernel_size(sigma, size)
    r = np.arange(k) - k // 2
    g = np.exp(-0.5 * (r / sigma) ** 2)
    ker = np.outer(g, g)
    return ker / ker.sum()


def moffat_psf(fwhm: float, beta: float = 4.765, pixel_scale: float = PIXEL_SCALE,
               size: int | None = None) -> np.ndarray:
    """Circular Moffat PSF kernel ``(1 + (r/α)²)^−β`` (sums to 1); ``fwhm`` in arcsec.

    β = 4.765 (Trujillo et al. 2001) fits ground-based seeing; ``size`` defaults to ±6σ of
    the Gaussian of the same FWHM.
    """
    if not (np.isfinite(fwhm) and fwhm > 0):
        raise InputError(f"PSF fwhm={fwhm!r}: expected a positive number of arcsec")
    if not (np.isfinite(beta) and beta > 1):
        raise InputError(f"Moffat beta={beta!r}: expected a number > 1")
    alpha = fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0)) / pixel_scale
    k = _kernel_size(1.5 * fwhm / 2.3548 / pixel_scale, size)
    r = np.arange(k) - k // 2
    rr = r[:, None] ** 2 + r[None, :] ** 2
    ker = (1.0 + rr / alpha**2) ** (-beta)
    return ker / ker.sum()


def check_psf(psf, nchan: int = 3) -> np.ndarray:
    """A (K, K) or (C, K, K) kernel → normalised (C, K, K) float64; K odd, finite, positive sum."""
    k = np.asarray(psf, dtype=np.float64)
    if k.ndim == 2:
        k = np.broadcast_to(k, (nchan,) + k.shape)
    if k.ndim != 3 or k.shape[0] != nchan or k.shape[1] != k.shape[2] or k.shape[1] % 2 == 0:
        raise InputError(
            f"PSF kernel: expected a square, odd-sized K×K or {nchan}×K×K array, got shape {np.shape(psf)}"
        )
    if not np.all(np.isfinite(k)):
        raise InputError("PSF kernel: contains NaN or inf")
    sums = k.sum(axis=(1, 2))
    if np.any(sums <= 0):
        raise InputError("PSF kernel: every band's kernel must have a positive sum")
    return k / sums[:, None, None]


def psf_terms(psf, rtol: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Separable decomposition of PSF kernels for :func:`kernels.convolve_separable`.

    Each band's kernel K (flipped, for a true convolution) is written as ``Σ_t c_t ⊗ r_t`` by
    SVD, keeping the fewest terms whose discarded singular values carry less than ``rtol`` of
    the kernel's norm (a Gaussian needs one term; a Moffat a handful; any kernel at most K,
    which is then exact). Returns (rows, cols), both (C, T, K).
    """
    k = check_psf(psf, np.shape(psf)[0] if np.ndim(psf) == 3 else 3)
    nchan, kk, _ = k.shape
    terms_r, terms_c = [], []
    for ch in range(nchan):
        u, s, vt = np.linalg.svd(k[ch, ::-1, ::-1])
        tail = np.sqrt(np.cumsum((s**2)[::-1])[::-1]) / max(np.sqrt(np.sum(s**2)), 1e-300)
        t = int(np.searchsorted(-tail, -rtol))  # first index whose tail < rtol
        t = max(1, min(t, kk))
        terms_r.append(vt[:t] * s[:t, None])
        terms_c.append(u[:, :t].T)
    nt = max(len(r) for r in terms_r)
    rows = np.zeros((nchan, nt, kk))
    cols = np.zeros((nchan, nt, kk))
    for ch in range(nchan):
        rows[ch, : len(terms_r[ch])] = terms_r[ch]
        cols[ch, : len(terms_c[ch])] = terms_c[ch]
    return rows, cols


def default_psf(pixel_scale: float = PIXEL_SCALE, fwhm=None) -> np.ndarray:
    """Per-channel Gaussian kernels (3, K, K) for the HSC seeing (or ``fwhm`` per channel)."""
    fw = HSC["psf_fwhm"] if fwhm is None else tuple(np.broadcast_to(np.asarray(fwhm, float), (3,)))
    sigma_max = max(fw) / 2.3548 / pixel_scale
    size = _kernel_size(sigma_max, None)
    return np.stack([gaussian_psf(f, pixel_scale, size) for f in fw])


# ----------------------------------------------------------------------------- pipeline steps
def pixel_grid(size: int = 64, pixel_scale: float = PIXEL_SCALE, supersample: int = 1):
    """Pixel-centre coordinates (x, y) in arcsec of a ``size``×``size`` cutout centred on 0.

    Column index runs along +x, row index along +y. With ``supersample`` s the grid has
    ``size·s`` samples per side at the sub-pixel centres.
    """
    s = int(supersample)
    step = pixel_scale / s
    m = int(size) * s
    a = (np.arange(m) - (m - 1) / 2.0) * step
    return np.meshgrid(a, a)


def deflect(dfl, src, x, y) -> np.ndarray:
    """Lensed image of a source: ``src(x − α_x, y − α_y)``.

    Parameters
    ----------
    dfl : (alpha_x, alpha_y)
        Deflection on the image-plane grid (arcsec), e.g. from :func:`sie_deflection`; ``None``
        for no lens.
    src : callable ``(xs, ys) -> surface brightness``
        The source-plane light, e.g. ``lambda u, v: sersic(u, v, ...)``.
    x, y : arrays
        Image-plane grid (arcsec). Surface brightness is conserved: the image at ``x`` has the
        source's brightness at the deflected position.
    """
    if dfl is None:
        return np.asarray(src(x, y))
    ax, ay = dfl
    return np.asarray(src(np.asarray(x) - ax, np.asarray(y) - ay))


def compose(fg, img) -> np.ndarray:
    """Emission map: foreground (lens-plane) light plus the lensed image (same shapes)."""
    fg = np.asarray(fg, dtype=np.float64)
    img = np.asarray(img, dtype=np.float64)
    if fg.shape != img.shape:
        raise InputError(f"compose: foreground shape {fg.shape} differs from image shape {img.shape}")
    return fg + img


def _planes(a: np.ndarray) -> np.ndarray:
    a = np.array(a, dtype=np.float64, copy=True)
    if a.ndim < 2:
        raise InputError(f"expected an image (..., H, W), got shape {a.shape}")
    return a


def _per_band(value, a: np.ndarray, name: str) -> np.ndarray:
    """Broadcast a scalar or per-band (band axis third from last) value over the planes of ``a``."""
    v = np.asarray(value, dtype=np.float64)
    if v.ndim == 0:
        return np.full(a.shape[:-2], float(v))
    if a.ndim < 3 or v.shape != (a.shape[-3],):
        raise InputError(f"{name}: expected a number or one value per band, got shape {v.shape}")
    return np.broadcast_to(v, a.shape[:-2]).copy()


def shot_noise(ems, gain=1000.0, seed: int = 0) -> np.ndarray:
    """Poisson photon noise: ``Poisson(ems·gain)/gain`` per pixel (negative fluxes → 0).

    ``gain`` in electrons per count (scalar or per band); returns a new float64 array.
    """
    a = _planes(ems)
    g = _per_band(gain, a, "gain")
    if np.any(~np.isfinite(g) | (g <= 0)):
        raise InputError("gain: expected positive electrons per count")
    planes = a.reshape((-1,) + a.shape[-2:])
    for j, gj in enumerate(g.ravel()):
        kernels.shot_noise_plane(planes[j], float(gj), kernels.stream_state(seed, j, 1))
    return a


def convolve_psf(img, psf) -> np.ndarray:
    """Convolve every (H, W) plane with the PSF (``same`` size, zero outside the image).

    ``psf``: a K×K kernel for every plane or a C×K×K kernel per band (band axis third from
    last). Kernels are normalised to unit sum, so flux is conserved away from the edges.
    """
    a = _planes(img)
    nb_ = a.shape[-3] if (np.ndim(psf) == 3 and a.ndim >= 3) else 1
    k = check_psf(psf, nb_) if np.ndim(psf) == 3 else check_psf(psf, 1)
    rows, cols = psf_terms(k)
    kk = k.shape[-1]
    pad = kk // 2
    h, w = a.shape[-2:]
    planes = a.reshape((-1,) + a.shape[-2:])
    out = np.empty_like(planes)
    tmp = np.empty((h + 2 * pad, w))
    for j in range(planes.shape[0]):
        ch = j % nb_
        src = np.pad(planes[j], pad)
        kernels.convolve_separable(src, rows[ch], cols[ch], tmp, out[j])
    return out.reshape(a.shape)


def observe(syn, sky_sigma=HSC["sky_sigma"], seed: int = 0) -> np.ndarray:
    """Add Gaussian sky/instrument noise N(0, sky_sigma²) per band (counts; scalar or per band)."""
    a = _planes(syn)
    s = _per_band(sky_sigma, a, "sky_sigma")
    if np.any(~np.isfinite(s) | (s < 0)):
        raise InputError("sky_sigma: expected non-negative noise levels (counts)")
    planes = a.reshape((-1,) + a.shape[-2:])
    for j, sj in enumerate(s.ravel()):
        kernels.gaussian_noise_plane(planes[j], float(sj), kernels.stream_state(seed, j, 2))
    return a
