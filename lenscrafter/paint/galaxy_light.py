"""The light of the galaxy in a real cutout: sky, windowed centroid and shape (torch-free).

Used by :func:`deepmine.lenscrafter.paint_arcs` to put an SIE on a real galaxy. The sky of every
band is the median of the cutout's border (``border`` pixels wide) and its noise 1.4826 × the
border's median absolute deviation. The centre is the light-weighted centroid (first moments)
of one band (default the i band) above the sky (pixels more than 1σ above it), in a Gaussian
window (σ 0.6″) that starts on the light's local maximum reached uphill from the cutout centre
and follows the centroid until it stops moving (SExtractor's windowed positions: exact for a
symmetric galaxy, and neighbours do not pull it). Axis ratio and angle come from the
window-corrected second moments of that light.
"""
from __future__ import annotations

import math

import numba as nb
import numpy as np
from astropy.table import Table

from deepmine.inference.errors import InputError

from ..pipeline import PIXEL_SCALE

_MAD_TO_SIGMA = 1.482602218505602


def _check_number(name, value, low, high):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name}={value!r}: expected a number in [{low:g}, {high:g}]") from None
    if not (np.isfinite(v) and low <= v <= high):
        raise InputError(f"{name}={value!r} is out of range; expected {low:g} <= {name} <= {high:g}")
    return v


def _border(img: np.ndarray, width: int) -> np.ndarray:
    """Pixels of the outer ``width``-pixel frame of (..., H, W), flattened on the last axis."""
    h, w = img.shape[-2:]
    m = np.zeros((h, w), bool)
    m[:width] = m[-width:] = True
    m[:, :width] = m[:, -width:] = True
    return img[..., m]


def sky_level(cutouts, border: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Sky and sky noise of every band: median of the border and 1.4826 × its MAD.

    Parameters
    ----------
    cutouts : (N, C, H, W) array, flux per pixel
    border : width of the frame of pixels used, pixels

    Returns
    -------
    (sky, sigma) : two (N, C) float64 arrays, flux per pixel.
    """
    a = np.asarray(cutouts, dtype=np.float64)
    b = _border(a, int(border))
    sky = np.median(b, axis=-1)
    sigma = _MAD_TO_SIGMA * np.median(np.abs(b - sky[..., None]), axis=-1)
    return sky, sigma


def _climb(light: np.ndarray, x: float, y: float, max_steps: int) -> tuple[int, int]:
    """Steepest ascent over the 3×3-smoothed light from the pixel nearest (x, y) to a local maximum."""
    h, w = light.shape
    p = np.pad(light, 1)
    sm = sum(p[1 + dy:1 + dy + h, 1 + dx:1 + dx + w] for dy in (-1, 0, 1) for dx in (-1, 0, 1))
    r, c = int(round(y)), int(round(x))
    for _ in range(max_steps):
        r0, r1, c0, c1 = max(r - 1, 0), min(r + 2, h), max(c - 1, 0), min(c + 2, w)
        win = sm[r0:r1, c0:c1]
        k = int(np.argmax(win))
        nr, nc = r0 + k // win.shape[1], c0 + k % win.shape[1]
        if win.flat[k] <= sm[r, c]:
            break
        r, c = nr, nc
    return c, r


@nb.njit(cache=True)
def _window_sums(light, xc, yc, s_w):  # pragma: no cover - compiled
    """Σw, Σwx, Σwy of ``light`` under a Gaussian window at (xc, yc) (pixels within 5σ)."""
    h, w = light.shape
    r = 5.0 * s_w
    y0, y1 = max(0, int(yc - r)), min(h, int(yc + r) + 2)
    x0, x1 = max(0, int(xc - r)), min(w, int(xc + r) + 2)
    k = -0.5 / (s_w * s_w)
    t = sx = sy = 0.0
    for yy in range(y0, y1):
        dy2 = (yy - yc) * (yy - yc)
        for xx in range(x0, x1):
            v = light[yy, xx]
            if v != 0.0:
                wv = v * math.exp(k * ((xx - xc) * (xx - xc) + dy2))
                t += wv
                sx += wv * xx
                sy += wv * yy
    return t, sx, sy


@nb.njit(cache=True)
def _window_iterate(light, px, py, s_w, max_iter, tol):  # pragma: no cover - compiled
    """Windowed centroid from the peak (px, py) and the second moments there.

    The window follows the centroid until it moves less than ``tol``; a centroid that drifts
    more than 2 window sigmas from the peak (a neighbour pulling) is replaced by the centroid
    of one window on the peak. Returns (xc, yc, Mxx, Mxy, Myy, ok); pixels beyond 5 window
    sigmas are left out (weight < 4e-6).
    """
    xc, yc = px, py
    for _ in range(max_iter):
        t, sx, sy = _window_sums(light, xc, yc, s_w)
        if not t > 0.0:
            break
        nx, ny = sx / t, sy / t
        moved = math.hypot(nx - xc, ny - yc)
        xc, yc = nx, ny
        if moved < tol:
            break
    if not math.hypot(xc - px, yc - py) <= 2.0 * s_w:
        t, sx, sy = _window_sums(light, px, py, s_w)
        if t > 0.0:
            xc, yc = sx / t, sy / t
    h, w = light.shape
    r = 5.0 * s_w
    y0, y1 = max(0, int(yc - r)), min(h, int(yc + r) + 2)
    x0, x1 = max(0, int(xc - r)), min(w, int(xc + r) + 2)
    k = -0.5 / (s_w * s_w)
    t = mxx = mxy = myy = 0.0
    for yy in range(y0, y1):
        for xx in range(x0, x1):
            v = light[yy, xx]
            if v != 0.0:
                dx, dy = xx - xc, yy - yc
                wv = v * math.exp(k * (dx * dx + dy * dy))
                t += wv
                mxx += wv * dx * dx
                mxy += wv * dx * dy
                myy += wv * dy * dy
    if not t > 0.0:
        return xc, yc, 0.0, 0.0, 0.0, False
    return xc, yc, mxx / t, mxy / t, myy / t, True


def _moments(img, sky, sigma, s_w, nsigma, max_iter, tol):
    """Windowed centroid and window-corrected second moments of one band (pixel units).

    The window starts on the local maximum of the light reached by steepest ascent from the
    cutout centre (so it stays on the galaxy the cutout is centred on, not on a brighter
    neighbour) and follows the centroid; a centroid more than 2 window sigmas from that peak
    (a neighbour pulling) is replaced by the centroid of one window on the peak.
    """
    h, w = img.shape
    light = img - sky
    light = np.ascontiguousarray(np.where(light > nsigma * sigma, light, 0.0))
    if not light.any():
        return (w - 1) / 2.0, (h - 1) / 2.0, 1.0, 0.0, False
    px, py = _climb(light, (w - 1) / 2.0, (h - 1) / 2.0, max(h, w))

    xc, yc, mxx, mxy, myy, ok = _window_iterate(light, float(px), float(py), float(s_w), int(max_iter), float(tol))
    if not ok:
        return (w - 1) / 2.0, (h - 1) / 2.0, 1.0, 0.0, False
    m = np.array([[mxx, mxy], [mxy, myy]])
    # a Gaussian window multiplies a Gaussian light profile: C⁻¹ = M⁻¹ − W⁻¹ undoes it
    try:
        c = np.linalg.inv(np.linalg.inv(m) - np.eye(2) / (s_w * s_w))
        if not np.all(np.linalg.eigvalsh(c) > 0):
            c = m
    except np.linalg.LinAlgError:
        c = m
    lam = np.linalg.eigvalsh(c)
    q = float(math.sqrt(max(lam[0], 0.0) / lam[1])) if lam[1] > 0 else 1.0
    phi = 0.5 * math.degrees(math.atan2(2.0 * c[0, 1], c[0, 0] - c[1, 1]))
    return xc, yc, q, phi, True


def measure_light(cutouts, *, pixel_scale: float = PIXEL_SCALE, band: int = 0, border: int = 4,
                  window: float = 0.6, nsigma: float = 1.0, max_iter: int = 100, tol: float = 1e-6) -> Table:
    """Centroid, shape and sky of the galaxy in each cutout (see the module docstring).

    Parameters
    ----------
    cutouts : (N, C, H, W) array
        Flux per pixel, any zero point; channel ``band`` (default 0, the i band in the HSC
        order i, r, g) is measured.
    pixel_scale : float
        Arcsec per pixel (for ``window``).
    band : int
        Channel whose light defines the centre and shape.
    border : int
        Width (pixels) of the frame from which sky and sky noise are taken.
    window : float
        Sigma of the Gaussian window of the moments, arcsec (0.6″ = 3.6 HSC pixels).
    nsigma : float
        Only pixels more than ``nsigma`` × the sky noise above the sky carry weight.
    max_iter, tol : iterations of the window and their stopping step (pixels).

    Returns
    -------
    astropy Table with one row per cutout: ``x``, ``y`` (centroid, 0-based pixel coordinates,
    column and row), ``dx``, ``dy`` (centroid from the cutout centre ((W−1)/2, (H−1)/2), arcsec),
    ``q_light`` (minor/major axis ratio), ``phi_light`` (major-axis angle, degrees CCW from +x,
    −90..90), ``found`` (False: no light above the threshold, the centre and q = 1 are used),
    ``sky`` and ``sky_sigma`` (N, C; flux per pixel).
    """
    a = np.asarray(cutouts, dtype=np.float64)
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4:
        raise InputError(f"cutouts: expected an N×C×H×W stack, got shape {np.shape(cutouts)}")
    _check_number("pixel_scale", pixel_scale, 0.001, 10.0)
    _check_number("window", window, 1e-3, 100.0)
    band = int(band)
    if not 0 <= band < a.shape[1]:
        raise InputError(f"band={band}: expected a channel index 0..{a.shape[1] - 1}")
    border = int(border)
    if not 1 <= border <= min(a.shape[-2:]) // 4:
        raise InputError(f"border={border}: expected 1..{min(a.shape[-2:]) // 4} pixels")
    sky, sigma = sky_level(a, border)
    h, w = a.shape[-2:]
    s_w = window / pixel_scale
    rows = [_moments(a[i, band], sky[i, band], sigma[i, band], s_w, nsigma, int(max_iter), tol)
            for i in range(a.shape[0])]
    x = np.array([r[0] for r in rows])
    y = np.array([r[1] for r in rows])
    t = Table({
        "x": x, "y": y,
        "dx": (x - (w - 1) / 2.0) * pixel_scale, "dy": (y - (h - 1) / 2.0) * pixel_scale,
        "q_light": np.array([r[2] for r in rows]), "phi_light": np.array([r[3] for r in rows]),
        "found": np.array([r[4] for r in rows], bool), "sky": sky, "sky_sigma": sigma,
    })
    for c, u in (("x", "pix"), ("y", "pix"), ("dx", "arcsec"), ("dy", "arcsec"), ("phi_light", "deg")):
        t[c].unit = u
    return t


def aperture_flux(cutouts, x, y, radius: float, sky=None) -> np.ndarray:
    """Flux above the sky in a circular aperture of every cutout and band.

    Parameters
    ----------
    cutouts : (N, C, H, W) array, flux per pixel
    x, y : N aperture centres, 0-based pixel coordinates (column, row)
    radius : aperture radius, pixels; a pixel counts when its centre lies inside
    sky : (N, C) sky per pixel to subtract (default: :func:`sky_level`'s border median)

    Returns
    -------
    (N, C) float64: Σ (I − sky) over the aperture.

    >>> img = np.zeros((1, 1, 9, 9)); img[0, 0, 4, 4] = 5.0
    >>> aperture_flux(img, [4.0], [4.0], 1.5, sky=np.zeros((1, 1))).tolist()
    [[5.0]]
    """
    a = np.asarray(cutouts, dtype=np.float64)
    if sky is None:
        sky = sky_level(a)[0]
    h, w = a.shape[-2:]
    yy, xx = np.mgrid[0:h, 0:w]
    x = np.asarray(x, dtype=np.float64)[:, None, None]
    y = np.asarray(y, dtype=np.float64)[:, None, None]
    inside = ((xx - x) ** 2 + (yy - y) ** 2 <= float(radius) ** 2)[:, None]
    return np.where(inside, a - np.asarray(sky, dtype=np.float64)[..., None, None], 0.0).sum(axis=(-2, -1))
