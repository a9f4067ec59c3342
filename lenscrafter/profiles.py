"""Lens and light profiles: the SIE deflection and the elliptical Sersic surface brightness.

Conventions are lenstronomy's (``SIE`` and ``SERSIC_ELLIPSE``), written with an axis ratio and a
position angle instead of lenstronomy's (e1, e2):

* ``phi`` is the position angle of the major axis in **radians**, counter-clockwise from +x;
  ``q`` is the minor/major axis ratio (0 < q <= 1). lenstronomy's ellipticity moduli are
  ``e1 = (1-q)/(1+q)·cos 2phi``, ``e2 = (1-q)/(1+q)·sin 2phi``.
* Coordinates rotate into the profile frame as ``x' = cos(phi)·dx + sin(phi)·dy``,
  ``y' = -sin(phi)·dx + cos(phi)·dy``; the elliptical radius is ``sqrt(q·x'² + y'²/q)``
  (the product-average convention: ``R_eff`` and ``θ_E`` are circularised).
* SIE convergence ``κ = θ_E / (2·sqrt(q·x'² + y'²/q))``; the deflection is Kormann et al. /
  Keeton & Kochanek's closed form with a core of 1e-10″ (as lenstronomy) so the centre is finite.
* Sersic ``I(R) = amp·exp(-b_n·((R/R_eff)^(1/n) - 1))`` with ``b_n = 1.9992·n - 0.3271``
  (lenstronomy's approximation); ``amp`` is the surface brightness at ``R_eff``; R is floored
  at 1e-4″ as in lenstronomy.

All angles on the sky are in arcsec; surface brightness is in flux per arcsec² (the flux unit is
the caller's: counts for a zero point). The scalar ``@njit`` kernels here are the one
implementation used by both the array functions and the batched synthesis in :mod:`.synth`.
"""
from __future__ import annotations

import math

import numba as nb
import numpy as np

from deepmine.inference.errors import InputError

#: lenstronomy's SIE core (s_scale) in arcsec; keeps the deflection finite at the centre.
SIE_CORE = 1e-10
#: lenstronomy's Sersic radius floor in arcsec.
SERSIC_R_MIN = 1e-4


@nb.njit(cache=True, inline="always")
def sersic_bn(n):
    """``b_n = 1.9992·n − 0.3271`` (lenstronomy), floored at 1e-5."""
    return max(1.9992 * n - 0.3271, 1e-5)


# Cephes atan: rational approximation on |t| <= 0.66 after range reduction; ~1e-16 relative.
_AP0, _AP1, _AP2, _AP3, _AP4 = (-8.750608600031904122785e-1, -1.615753718733365076637e1,
                                -7.500855792314704667340e1, -1.228866684490136173410e2,
                                -6.485021904942025371773e1)
_AQ0, _AQ1, _AQ2, _AQ3, _AQ4 = (2.485846490142306297962e1, 1.650270098316988542046e2,
                                4.328810604912902668951e2, 4.853903996359136964868e2,
                                1.945506571482613964425e2)
_MOREBITS = 6.123233995736765886130e-17


@nb.njit(cache=True, inline="always")
def fast_atan(x):  # pragma: no cover - compiled
    """Arctangent (Cephes ``atan``; a few times faster than libm here, same accuracy)."""
    sign = 1.0
    if x < 0.0:
        sign = -1.0
        x = -x
    if x > 2.414213562373095:
        y = 0.5 * math.pi
        t = -1.0 / x
        extra = _MOREBITS
    elif x > 0.66:
        y = 0.25 * math.pi
        t = (x - 1.0) / (x + 1.0)
        extra = 0.5 * _MOREBITS
    else:
        y = 0.0
        t = x
        extra = 0.0
    z = t * t
    p = (((_AP0 * z + _AP1) * z + _AP2) * z + _AP3) * z + _AP4
    q = ((((z + _AQ0) * z + _AQ1) * z + _AQ2) * z + _AQ3) * z + _AQ4
    return sign * (y + (t * z * p / q + t) + extra)


#: Length of a prepared SIE / Sersic parameter vector (see :func:`sie_prep`, :func:`sersic_prep`).
NPREP = 12


@nb.njit(cache=True, inline="always")
def sie_prep(theta_e, q, cphi, sphi, cx, cy, out):  # pragma: no cover - compiled
    """Per-lens constants of :func:`sie_alpha` into ``out`` (length :data:`NPREP`)."""
    s = SIE_CORE / math.sqrt(q)
    b = theta_e * math.sqrt(q)  # lenstronomy: major-axis radius × sqrt((1+q²)/2)
    eps2 = 1.0 - q * q
    circ = eps2 < 1e-12
    eps = 1.0 if circ else math.sqrt(eps2)
    out[0] = b if circ else b / eps
    out[1] = eps
    out[2] = q * q
    out[3] = s
    out[4] = q * q * s
    out[5] = cphi
    out[6] = sphi
    out[7] = cx
    out[8] = cy
    out[9] = 1.0 if circ else 0.0
    out[10] = s * s


@nb.njit(cache=True, inline="always", fastmath=True)
def sie_alpha(x, y, p):  # pragma: no cover - compiled
    """SIE deflection (arcsec) at (x, y) from prepared constants ``p`` (:func:`sie_prep`).

    Keeton & Kochanek (1998) with core s → 0: ``α_x' = b/ε·atan(ε x'/(ψ+s))``,
    ``α_y' = b/ε·atanh(ε y'/(ψ+q²s))``, ``ψ = sqrt(q²(s²+x'²)+y'²)``, ``ε = sqrt(1−q²)``.
    """
    dx = x - p[7]
    dy = y - p[8]
    cphi = p[5]
    sphi = p[6]
    xp = cphi * dx + sphi * dy
    yp = -sphi * dx + cphi * dy
    psi = math.sqrt(p[2] * (p[10] + xp * xp) + yp * yp)
    if p[9] > 0.5:  # circular limit: atan(e·z)/e → z
        axp = p[0] * xp / (psi + p[3])
        ayp = p[0] * yp / (psi + p[4])
    else:
        eps = p[1]
        axp = p[0] * fast_atan(eps * xp / (psi + p[3]))
        z = eps * yp / (psi + p[4])  # |z| < 1
        ayp = p[0] * 0.5 * math.log((1.0 + z) / (1.0 - z))  # atanh(z)
    return cphi * axp - sphi * ayp, sphi * axp + cphi * ayp


@nb.njit(cache=True, inline="always")
def sersic_prep(r_eff, n, q, cphi, sphi, cx, cy, out):  # pragma: no cover - compiled
    """Per-profile constants of :func:`sersic_shape` into ``out`` (length :data:`NPREP`)."""
    out[0] = 0.5 / n
    out[1] = sersic_bn(n)
    out[2] = q
    out[3] = 1.0 / q
    out[4] = 1.0 / (r_eff * r_eff)
    out[5] = cphi
    out[6] = sphi
    out[7] = cx
    out[8] = cy
    out[9] = (SERSIC_R_MIN * SERSIC_R_MIN) / (r_eff * r_eff)
    out[10] = np.inf  # squared radius (in R_eff units) beyond which the profile is taken as 0


@nb.njit(cache=True, inline="always")
def sersic_set_cutoff(p, amp_max, floor):  # pragma: no cover - compiled
    """Truncate a prepared Sersic where ``amp_max``·profile < ``floor`` (same flux unit)."""
    if amp_max > floor > 0.0:
        big = math.log(amp_max / floor) / p[1]
        p[10] = (1.0 + big) ** (1.0 / p[0])  # ((1 + L/b)^n)² = (1 + L/b)^(2n)


@nb.njit(cache=True, inline="always", fastmath=True)
def sersic_shape(x, y, pre, j):  # pragma: no cover - compiled
    """Sersic profile normalised to 1 at R_eff, from prepared constants ``pre[j]`` (:func:`sersic_prep`)."""
    dx = x - pre[j, 7]
    dy = y - pre[j, 8]
    xp = pre[j, 5] * dx + pre[j, 6] * dy
    yp = -pre[j, 6] * dx + pre[j, 5] * dy
    r2 = max((pre[j, 2] * xp * xp + pre[j, 3] * yp * yp) * pre[j, 4], pre[j, 9])
    if r2 > pre[j, 10]:
        return 0.0
    bn = pre[j, 1]
    return math.exp(bn - bn * math.exp(pre[j, 0] * math.log(r2)))


@nb.njit(cache=True)
def _sie_array(x, y, theta_e, q, phi, cx, cy, ax, ay):  # pragma: no cover
    p = np.empty(NPREP)
    sie_prep(theta_e, q, math.cos(phi), math.sin(phi), cx, cy, p)
    for k in range(x.size):
        ax[k], ay[k] = sie_alpha(x[k], y[k], p)


@nb.njit(cache=True)
def _sersic_array(x, y, amp, r_eff, n, q, phi, cx, cy, out):  # pragma: no cover
    p = np.empty((1, NPREP))
    sersic_prep(r_eff, n, q, math.cos(phi), math.sin(phi), cx, cy, p[0])
    for k in range(x.size):
        out[k] = amp * sersic_shape(x[k], y[k], p, 0)


def _check_scalar(name: str, value, low: float, high: float, low_open: bool = False) -> float:
    v = float(value)
    bad = not np.isfinite(v) or v > high or (v <= low if low_open else v < low)
    if bad:
        bracket = "(" if low_open else "["
        raise InputError(f"{name}={value!r} is out of range; expected {bracket}{low:g}, {high:g}]")
    return v


def _grid(x, y) -> tuple[np.ndarray, np.ndarray, tuple]:
    xb, yb = np.broadcast_arrays(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
    return np.ascontiguousarray(xb).ravel(), np.ascontiguousarray(yb).ravel(), xb.shape


def sie_deflection(x, y, theta_e, q, phi, center_x=0.0, center_y=0.0):
    """Deflection angle of a singular isothermal ellipsoid (lenstronomy ``SIE`` convention).

    Parameters
    ----------
    x, y : array_like
        Image-plane positions, arcsec (broadcast against each other).
    theta_e : float
        Einstein radius, arcsec, circularised (product average of the axes); >= 0.
    q : float
        Axis ratio minor/major of the convergence, 0 < q <= 1.
    phi : float
        Position angle of the major axis, radians, counter-clockwise from +x.
    center_x, center_y : float
        Lens centre, arcsec.

    Returns
    -------
    (alpha_x, alpha_y) : float64 arrays of the broadcast shape, arcsec. The source-plane position
    is ``(x - alpha_x, y - alpha_y)``.
    """
    theta_e = _check_scalar("theta_e", theta_e, 0.0, np.inf)
    q = _check_scalar("q", q, 0.0, 1.0, low_open=True)
    xf, yf, shape = _grid(x, y)
    ax = np.empty_like(xf)
    ay = np.empty_like(xf)
    _sie_array(xf, yf, theta_e, q, float(phi), float(center_x), float(center_y), ax, ay)
    return ax.reshape(shape), ay.reshape(shape)


def sersic(x, y, amp, r_eff, n, q, phi, center_x=0.0, center_y=0.0):
    """Elliptical Sersic surface brightness (lenstronomy ``SERSIC_ELLIPSE`` convention).

    Parameters
    ----------
    x, y : array_like
        Positions, arcsec.
    amp : float
        Surface brightness at the (circularised) effective radius, flux per arcsec².
    r_eff : float
        Half-light radius, arcsec, circularised (> 0).
    n : float
        Sersic index (> 0.2).
    q, phi : float
        Axis ratio minor/major (0 < q <= 1) and major-axis position angle (radians, CCW from +x).
    center_x, center_y : float
        Centre, arcsec.

    Returns
    -------
    float64 array of the broadcast shape of ``x`` and ``y``, flux per arcsec².
    """
    r_eff = _check_scalar("r_eff", r_eff, 0.0, np.inf, low_open=True)
    n = _check_scalar("n", n, 0.2, 20.0)
    q = _check_scalar("q", q, 0.0, 1.0, low_open=True)
    xf, yf, shape = _grid(x, y)
    out = np.empty_like(xf)
    _sersic_array(xf, yf, float(amp), r_eff, n, q, float(phi), float(center_x), float(center_y), out)
    return out.reshape(shape)


def sersic_total_flux(amp, r_eff, n):
    """Analytic total flux of a Sersic profile: ``amp·2π·n·R_eff²·e^{b_n}·Γ(2n)/b_n^{2n}``.

    Independent of ``q`` in the circularised convention. ``amp`` in flux/arcsec², ``r_eff`` in
    arcsec; returns flux. Works on arrays.
    """
    n = np.asarray(n, dtype=np.float64)
    bn = np.maximum(1.9992 * n - 0.3271, 1e-5)
    lg = math.lgamma(2.0 * float(n)) if n.ndim == 0 else np.vectorize(math.lgamma, otypes=[np.float64])(2.0 * n)
    return np.asarray(amp) * 2.0 * np.pi * n * np.asarray(r_eff) ** 2 * np.exp(bn + lg - 2.0 * n * np.log(bn))


def sersic_amp_from_flux(flux, r_eff, n):
    """Inverse of :func:`sersic_total_flux`: the ``amp`` giving total ``flux``."""
    return np.asarray(flux) / sersic_total_flux(1.0, r_eff, n)


def magnitude_to_flux(mag, zero_point=27.0):
    """Total flux (counts) of an AB magnitude for a zero point: ``10**(-0.4·(mag − zp))``.

    The default zero point 27.0 is that of HSC coadds.
    """
    return 10.0 ** (-0.4 * (np.asarray(mag, dtype=np.float64) - zero_point))
