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


@nb.njit(cache=True, inline="always")
def _sie_alpha(x, y, b, q, cphi, sphi, cx, cy):  # pragma: no cover - compiled
    """Deflection (arcsec) of an SIE in the lens-frame parametrisation.

    ``b = θ_E·sqrt(q)`` (lenstronomy's major-axis critical radius times sqrt((1+q²)/2)).
    """
    dx = x - cx
    dy = y - cy
    xp = cphi * dx + sphi * dy
    yp = -sphi * dx + cphi * dy
    s = SIE_CORE / math.sqrt(q)
    psi = math.sqrt(q * q * (s * s + xp * xp) + yp * yp)
    eps2 = 1.0 - q * q
    if eps2 < 1e-12:  # circular limit: atan(e·z)/e → z
        axp = b * xp / (psi + s)
        ayp = b * yp / (psi + q * q * s)
    else:
        eps = math.sqrt(eps2)
        axp = b / eps * math.atan(eps * xp / (psi + s))
        ayp = b / eps * math.atanh(eps * yp / (psi + q * q * s))
    return cphi * axp - sphi * ayp, sphi * axp + cphi * ayp


@nb.njit(cache=True, inline="always")
def _sersic_shape(x, y, r_eff, inv_n, bn, q, cphi, sphi, cx, cy):  # pragma: no cover
    """Sersic profile normalised to 1 at R_eff."""
    dx = x - cx
    dy = y - cy
    xp = cphi * dx + sphi * dy
    yp = -sphi * dx + cphi * dy
    r2 = q * xp * xp + yp * yp / q
    r2 = max(r2, SERSIC_R_MIN * SERSIC_R_MIN) / (r_eff * r_eff)
    return math.exp(bn - bn * math.exp(0.5 * inv_n * math.log(r2)))


@nb.njit(cache=True)
def _sie_array(x, y, theta_e, q, phi, cx, cy, ax, ay):  # pragma: no cover
    b = theta_e * math.sqrt(q)
    c = math.cos(phi)
    s = math.sin(phi)
    for k in range(x.size):
        ax[k], ay[k] = _sie_alpha(x[k], y[k], b, q, c, s, cx, cy)


@nb.njit(cache=True)
def _sersic_array(x, y, amp, r_eff, n, q, phi, cx, cy, out):  # pragma: no cover
    c = math.cos(phi)
    s = math.sin(phi)
    bn = sersic_bn(n)
    for k in range(x.size):
        out[k] = amp * _sersic_shape(x[k], y[k], r_eff, 1.0 / n, bn, q, c, s, cx, cy)


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
    from math import lgamma

    lg = np.vectorize(lgamma, otypes=[np.float64])(2.0 * n)
    return np.asarray(amp) * 2.0 * np.pi * n * np.asarray(r_eff) ** 2 * np.exp(bn + lg - 2.0 * n * np.log(bn))


def sersic_amp_from_flux(flux, r_eff, n):
    """Inverse of :func:`sersic_total_flux`: the ``amp`` giving total ``flux``."""
    return np.asarray(flux) / sersic_total_flux(1.0, r_eff, n)


def magnitude_to_flux(mag, zero_point=27.0):
    """Total flux (counts) of an AB magnitude for a zero point: ``10**(-0.4·(mag − zp))``.

    The default zero point 27.0 is that of HSC coadds.
    """
    return 10.0 ** (-0.4 * (np.asarray(mag, dtype=np.float64) - zero_point))
