"""LensCrafter physics against lenstronomy (SIE, SERSIC_ELLIPSE) and analytic cases."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import integrate

from deepmine.inference.errors import InputError
from deepmine.lenscrafter import (
    craft_lenses,
    deflect,
    magnitude_to_flux,
    pixel_grid,
    reference_lens_params,
    sersic,
    sersic_amp_from_flux,
    sersic_total_flux,
    sie_deflection,
)

lenstronomy = pytest.importorskip("lenstronomy")
from lenstronomy.LensModel.Profiles.sie import SIE  # noqa: E402
from lenstronomy.LightModel.Profiles.sersic import SersicElliptic  # noqa: E402
from lenstronomy.Util.param_util import phi_q2_ellipticity  # noqa: E402

_PTS = np.random.default_rng(0).uniform(-5, 5, (2, 400))

floats = dict(allow_nan=False, allow_infinity=False)


@given(theta_e=st.floats(0.05, 6.0, **floats), q=st.floats(0.1, 1.0, **floats),
       phi=st.floats(-math.pi, math.pi, **floats), cx=st.floats(-1, 1, **floats), cy=st.floats(-1, 1, **floats))
def test_sie_matches_lenstronomy(theta_e, q, phi, cx, cy):
    x, y = _PTS
    keep = np.hypot(x - cx, y - cy) > 1e-3  # away from the singular centre
    x, y = x[keep], y[keep]
    e1, e2 = phi_q2_ellipticity(phi, q)
    ref_x, ref_y = SIE().derivatives(x, y, theta_e, e1, e2, cx, cy)
    ax, ay = sie_deflection(x, y, theta_e, q, phi, cx, cy)
    norm = np.hypot(ref_x, ref_y)
    assert np.all(np.abs(ax - ref_x) <= 1e-4 * norm + 1e-12)
    assert np.all(np.abs(ay - ref_y) <= 1e-4 * norm + 1e-12)


@given(amp=st.floats(0.01, 100, **floats), r_eff=st.floats(0.05, 5.0, **floats), n=st.floats(0.3, 8.0, **floats),
       q=st.floats(0.1, 1.0, **floats), phi=st.floats(-math.pi, math.pi, **floats),
       cx=st.floats(-1, 1, **floats), cy=st.floats(-1, 1, **floats))
def test_sersic_matches_lenstronomy(amp, r_eff, n, q, phi, cx, cy):
    x, y = _PTS
    keep = np.hypot(x - cx, y - cy) > 1e-3
    x, y = x[keep], y[keep]
    e1, e2 = phi_q2_ellipticity(phi, q)
    ref = SersicElliptic().function(x, y, amp, r_eff, n, e1, e2, cx, cy)
    got = sersic(x, y, amp, r_eff, n, q, phi, cx, cy)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-300)


def test_circular_sie_maps_a_ring_at_theta_e_onto_the_origin():
    ang = np.linspace(0, 2 * np.pi, 50)
    for theta_e in (0.3, 1.5, 4.0):
        x, y = theta_e * np.cos(ang), theta_e * np.sin(ang)
        ax, ay = sie_deflection(x, y, theta_e, 1.0, 0.3)
        np.testing.assert_allclose(x - ax, 0, atol=1e-9)  # core of 1e-10″
        np.testing.assert_allclose(y - ay, 0, atol=1e-9)
        # |alpha| = theta_E everywhere for an SIS
        ax, ay = sie_deflection(_PTS[0], _PTS[1], theta_e, 1.0, 0.0)
        np.testing.assert_allclose(np.hypot(ax, ay), theta_e, rtol=1e-9)


def test_rendered_einstein_ring_peaks_at_theta_e():
    t = reference_lens_params(1)
    t["theta_e"], t["e_sie"], t["src_x"], t["src_y"] = 1.2, 0.0, 0.0, 0.0
    t["r_eff_src"], t["m_g_fg"] = 0.05, 40.0  # tiny source; foreground effectively off
    img = craft_lenses(t, noise=False, psf=False, output="float32", size=64, supersample=2, field=0)[0, 0]
    x, y = pixel_grid(64)
    r = np.hypot(x, y)
    assert np.sum(img * r) / np.sum(img) == pytest.approx(1.2, abs=0.03)  # light-weighted radius
    assert r[np.unravel_index(np.argmax(img), img.shape)] == pytest.approx(1.2, abs=0.12)


def test_sersic_total_flux_matches_the_integral():
    for n in (0.5, 1.0, 2.5, 4.0, 7.0):
        r_eff = 0.7
        val, _ = integrate.quad(lambda r, r_eff=r_eff, n=n: 2 * np.pi * r * sersic(r, 0.0, 1.0, r_eff, n, 1.0, 0.0), 0, 2000 * r_eff,
                                limit=500, points=[r_eff, 10 * r_eff])
        assert sersic_total_flux(1.0, r_eff, n) == pytest.approx(val, rel=2e-4)
    # ellipticity does not change the total flux (circularised radius)
    x, y = pixel_grid(1000, 0.01)
    tot = sersic(x, y, 1.0, 0.5, 1.0, 0.5, 0.4).sum() * 0.01**2
    assert tot == pytest.approx(sersic_total_flux(1.0, 0.5, 1.0), rel=2e-3)


def test_magnitudes_set_the_total_counts_in_every_band():
    t = reference_lens_params(1)
    t["theta_e"], t["m_g_src"], t["n_fg"], t["r_eff_fg"] = 0.0, 40.0, 1.0, 0.4
    img = craft_lenses(t, noise=False, psf=True, output="float32", supersample=4, field=0)[0]
    flux_g = magnitude_to_flux(21.5)
    np.testing.assert_allclose(img.sum(axis=(1, 2)), [20.5 * flux_g, 5.5 * flux_g, flux_g], rtol=5e-3)
    assert sersic_amp_from_flux(sersic_total_flux(3.0, 0.4, 2.0), 0.4, 2.0) == pytest.approx(3.0)


def test_surface_brightness_is_conserved_and_kernel_matches_array_functions():
    t = reference_lens_params(1)
    t["m_g_fg"] = 40.0  # lensed source only
    img = craft_lenses(t, noise=False, psf=False, output="float32", field=0)[0, 2].astype(float)
    x, y = pixel_grid(64)
    row = t[0]
    ax, ay = sie_deflection(x, y, row["theta_e"], 1 - row["e_sie"], np.radians(row["phi_sie"]))
    amp = sersic_amp_from_flux(magnitude_to_flux(row["m_g_src"]), row["r_eff_src"], row["n_src"]) * 0.168**2
    src = lambda u, v: sersic(u, v, amp, row["r_eff_src"], row["n_src"], 1 - row["e_src"],  # noqa: E731
                              np.radians(row["phi_src"]), row["src_x"], row["src_y"])
    expected = deflect((ax, ay), src, x, y)
    np.testing.assert_allclose(img, expected, rtol=1e-5, atol=1e-6)
    # lensing moves light, it does not brighten it: the image never exceeds the source's peak
    assert img.max() <= src(row["src_x"], row["src_y"]) * (1 + 1e-5)


def test_sis_magnification_of_a_small_source():
    theta_e, beta = 1.5, 0.5
    x, y = pixel_grid(1100, 0.005)
    ax, ay = sie_deflection(x, y, theta_e, 1.0, 0.0)
    src = lambda u, v: sersic(u, v, 1.0, 0.04, 1.0, 1.0, 0.0, beta, 0.0)  # noqa: E731
    flux = deflect((ax, ay), src, x, y).sum() * 0.005**2
    assert flux / sersic_total_flux(1.0, 0.04, 1.0) == pytest.approx(2 * theta_e / beta, rel=0.02)


def test_no_lens_and_a_source_outside_the_cutout_are_fine():
    t = reference_lens_params(2)
    t["theta_e"][0] = 0.0
    t["src_x"][1], t["m_g_fg"][1] = 50.0, 40.0
    img = craft_lenses(t, noise=False, output="float32", field=0)
    assert np.all(np.isfinite(img))
    assert img[1].max() < 1e-3  # nothing lensed into view from 50″ away


@pytest.mark.parametrize("call", [
    lambda: sie_deflection(0.0, 1.0, -1.0, 0.5, 0.0),
    lambda: sie_deflection(0.0, 1.0, 1.0, 0.0, 0.0),
    lambda: sersic(0.0, 1.0, 1.0, 0.0, 1.0, 0.5, 0.0),
    lambda: sersic(0.0, 1.0, 1.0, 1.0, 0.1, 0.5, 0.0),
    lambda: sersic(0.0, 1.0, 1.0, 1.0, 1.0, 1.5, 0.0),
])
def test_profiles_reject_out_of_range_parameters(call):
    with pytest.raises(InputError, match="out of range"):
        call()


def test_vectorised_math_matches_numpy():
    from deepmine.lenscrafter.vmath import vatan, vexp, vlog

    rng = np.random.default_rng(3)
    x = np.concatenate([rng.uniform(-50, 50, 5000), np.linspace(-699, 700, 5000), [0.0, 1e-12]])
    out, tmp = np.empty_like(x), np.empty_like(x)
    vexp(x, out, tmp)
    np.testing.assert_allclose(out, np.exp(x), rtol=1e-14)
    y = np.exp(rng.uniform(-700, 700, 5000))
    out, tmp = np.empty_like(y), np.empty_like(y)
    vlog(y, out, tmp)
    np.testing.assert_allclose(out, np.log(y), rtol=1e-14, atol=1e-15)
    z = np.concatenate([rng.standard_cauchy(5000), [0.0, 1e300, -1e-300]])
    out = np.empty_like(z)
    vatan(z, out)
    np.testing.assert_allclose(out, np.arctan(z), rtol=1e-14)
