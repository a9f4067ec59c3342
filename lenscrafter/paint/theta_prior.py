"""θ_E of a painted lens from its deflector's measured light (issue 21: "θ_E ... from a prior
that can follow the galaxy's measured light").

A brighter galaxy is more massive and lenses with a larger Einstein radius. Two textbook
relations turn the deflector's i-band magnitude into θ_E:

* **Faber–Jackson** (Faber & Jackson 1976, ApJ 204, 668): an elliptical's luminosity grows as
  the fourth power of its stellar velocity dispersion, L ∝ σ⁴. With every deflector taken at
  the anchor's redshift (so a difference of apparent magnitude is one of luminosity; no
  k-correction), ``σ = σ_ref · 10^(−0.1 (m − m_ref))``: 4 magnitudes brighter is a luminosity
  ×10^1.6 and σ ×10^0.4.
* **Singular isothermal sphere** (e.g. Schneider, Ehlers & Falco 1992, *Gravitational Lenses*,
  §8.1.4; Treu 2010, ARA&A 48, 87, eq. 3): ``θ_E = 4π (σ/c)² D_ls/D_s`` (radians), so θ_E ∝ σ²
  ∝ 10^(−0.2 (m − m_ref)): 4 magnitudes brighter is θ_E ×10^0.8 ≈ 6.3.

The magnitude ``m`` is :func:`deflector_magnitude`: the i-band AB magnitude in a 2″-radius
aperture (:data:`APERTURE`) around the galaxy's windowed centroid (or the given centre),
sky-subtracted — the ``m_dfl`` of ``deepmine selection --onto``. The anchor is stated in that
magnitude.

Defaults (:data:`LIGHT_PRIOR`; every one a parameter, ``--light-prior KEY=VALUE,...``):

* ``sigma_ref`` = 240 km/s at ``m_ref`` = 19.5: a BOSS CMASS-like luminous red galaxy at
  z ≈ 0.5 (i ≈ 19.5; median σ ≈ 240 km/s, Thomas et al. 2013, MNRAS 431, 1383). A rough anchor:
  set it for the survey's own deflectors (their zero point and aperture) where it is known.
* ``dls_ds`` = 0.6: D_ls/D_s of a lens at z_l ≈ 0.5 and a source at z_s ≈ 1.5–2 in flat ΛCDM
  (Ω_m = 0.3: 0.57–0.64). With the anchor, θ_E(m_ref) = 1.0″.
* ``scatter`` = 0.08 dex: log-normal scatter of σ at fixed magnitude (the σ–L relation of
  early-type galaxies scatters by ≈ 0.07–0.1 dex in log σ, Bernardi et al. 2003, AJ 125, 1849);
  log10 θ_E then scatters by twice that.

The drawn θ_E is clipped to the θ_E range (``theta_e=(low, high)``, default 0.8–2.8″); a
deflector without light above the sky in its aperture gets the range's low end.
"""
from __future__ import annotations

import math

import numpy as np

from deepmine.inference.errors import InputError

from .galaxy_light import _check_number

__all__ = ["LIGHT_PRIOR", "APERTURE", "C_KMS", "light_prior", "sigma_from_magnitude", "theta_e_sis",
           "theta_e_from_magnitude", "deflector_magnitude"]

#: Faber–Jackson anchor, lens geometry and scatter of the light-following θ_E prior (module docstring).
LIGHT_PRIOR = {"sigma_ref": 240.0, "m_ref": 19.5, "dls_ds": 0.6, "scatter": 0.08}
#: Accepted range of each :data:`LIGHT_PRIOR` parameter (km/s, AB mag, ratio, dex).
LIGHT_PRIOR_RANGES = {"sigma_ref": (10.0, 1000.0), "m_ref": (5.0, 35.0), "dls_ds": (0.01, 1.0),
                      "scatter": (0.0, 0.5)}
#: Radius (arcsec) of the aperture of the deflector's magnitude (``m_dfl``).
APERTURE = 2.0
#: Speed of light, km/s.
C_KMS = 299792.458
_ARCSEC_PER_RAD = 180.0 * 3600.0 / math.pi


def light_prior(spec=True) -> dict:
    """The light prior's parameters: ``True`` → :data:`LIGHT_PRIOR`; a dict → those with its
    overrides (checked; unknown keys and values out of :data:`LIGHT_PRIOR_RANGES` refused)."""
    over = {} if spec is True else dict(spec)
    unknown = sorted(set(over) - set(LIGHT_PRIOR))
    if unknown:
        raise InputError(f"light prior: unknown parameter(s) {', '.join(unknown)}; expected {', '.join(LIGHT_PRIOR)}")
    out = {**LIGHT_PRIOR}
    for k, v in over.items():
        out[k] = _check_number(f"light prior {k}", v, *LIGHT_PRIOR_RANGES[k])
    return out


def sigma_from_magnitude(m, sigma_ref: float = LIGHT_PRIOR["sigma_ref"], m_ref: float = LIGHT_PRIOR["m_ref"]):
    """Faber–Jackson velocity dispersion (km/s) of a deflector of magnitude ``m`` (L ∝ σ⁴).

    >>> round(float(sigma_from_magnitude(15.5, 240.0, 19.5) / 240.0), 6) == round(10 ** 0.4, 6)
    True
    """
    return sigma_ref * 10.0 ** (-0.1 * (np.asarray(m, dtype=np.float64) - m_ref))


def theta_e_sis(sigma, dls_ds: float = LIGHT_PRIOR["dls_ds"]):
    """Einstein radius (arcsec) of a singular isothermal sphere: 4π (σ/c)² D_ls/D_s.

    >>> round(float(theta_e_sis(240.0, 0.6)), 3)
    0.997
    """
    s = np.asarray(sigma, dtype=np.float64)
    return 4.0 * math.pi * (s / C_KMS) ** 2 * dls_ds * _ARCSEC_PER_RAD


def theta_e_from_magnitude(m, *, sigma_ref: float = LIGHT_PRIOR["sigma_ref"], m_ref: float = LIGHT_PRIOR["m_ref"],
                           dls_ds: float = LIGHT_PRIOR["dls_ds"]):
    """θ_E (arcsec, no scatter, not clipped) of a deflector of aperture magnitude ``m``:
    ``theta_e_sis(sigma_from_magnitude(m))`` ∝ 10^(−0.2 (m − m_ref))."""
    return theta_e_sis(sigma_from_magnitude(m, sigma_ref, m_ref), dls_ds)


def deflector_magnitude(cutouts, x, y, sky_i, zero_point_i: float, pixel_scale: float) -> np.ndarray:
    """i-band AB magnitude in a :data:`APERTURE` radius around ``(x, y)`` (pixels), sky ``sky_i``
    subtracted; NaN where that flux is not positive. ``cutouts``: (N, C, H, W), band i first."""
    from .galaxy_light import aperture_flux

    a = np.asarray(cutouts)
    f = aperture_flux(a[:, :1], x, y, APERTURE / pixel_scale,
                      sky=np.asarray(sky_i, dtype=np.float64).reshape(-1, 1))[:, 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(f > 0, zero_point_i - 2.5 * np.log10(np.where(f > 0, f, 1.0)), np.nan)
