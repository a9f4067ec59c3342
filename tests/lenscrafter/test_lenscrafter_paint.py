"""LensCrafter arcs painted onto real cutouts (deepmine.lenscrafter.paint.arcs, issue 21's core)."""
import doctest

import numpy as np
import pytest

from deepmine.inference.errors import InputError
from deepmine.lenscrafter import (
    arc_snr,
    craft_lenses,
    gaussian_psf,
    measure_light,
    paint_arcs,
    sersic,
    sersic_amp_from_flux,
    sie_deflection,
)
from deepmine.lenscrafter.paint import arcs as paint_mod
from deepmine.lenscrafter.pipeline import convolve_psf, pixel_grid

PS = 0.168


def _sky(n, sigma=0.07, size=64, seed=0):
    return np.random.default_rng(seed).normal(0.0, sigma, (n, 3, size, size))


def _galaxy(x0, y0, size=64, amp=30.0, r=3.0, q=1.0, phi=0.0):
    yy, xx = np.mgrid[:size, :size].astype(float)
    dx, dy = xx - x0, yy - y0
    c, s = np.cos(phi), np.sin(phi)
    xp, yp = c * dx + s * dy, -s * dx + c * dy
    g = amp * np.exp(-0.5 * (q * xp**2 + yp**2 / q) / r**2)
    return np.broadcast_to(g, (3, size, size)).copy()


def test_doctests():
    assert doctest.testmod(paint_mod).failed == 0


def test_blank_cutout_arc_equals_lenscrafter_lensed_source():
    blank = _sky(4, sigma=0.05, seed=3)
    painted, params, arcs = paint_arcs(blank, seed=7, zero_point=27.0, psf=(0.6, 0.7, 0.8), arc_noise=False,
                                       return_arcs=True, m_g_src=(22.0, 23.0))
    # painted − real = the noiseless arc, to float precision
    np.testing.assert_allclose(painted - blank.astype(np.float64), arcs, atol=1e-6)
    # LensCrafter's own synthesis of the same table, deflector light off (m_g_fg = 40 → ~1e-5 counts)
    ref = craft_lenses(params, seed=7, noise=False, psf=np.stack([gaussian_psf(f, PS, 21) for f in (0.6, 0.7, 0.8)]),
                       field=0, output="float32")
    np.testing.assert_allclose(arcs, ref, atol=2e-4 * arcs.max())
    assert arcs.max() > 0.5  # bright arcs: the comparison is not trivial


def test_arc_matches_direct_sie_sersic_computation():
    """Independent of the renderer: ray-trace with sie_deflection, sersic on the pixel grid, convolve."""
    painted, params, arcs = paint_arcs(np.zeros((1, 3, 48, 48)), seed=2, psf=0.7, arc_noise=False,
                                       return_arcs=True, supersample=1, sky_sigma=0.05)
    row = params[0]
    x, y = pixel_grid(48, PS)
    ax, ay = sie_deflection(x, y, row["theta_e"], 1 - row["e_sie"], np.radians(row["phi_sie"]),
                            row["dfl_x"], row["dfl_y"])
    flux_g = 10 ** (-0.4 * (row["m_g_src"] - 27.0))
    amp = sersic_amp_from_flux(flux_g, row["r_eff_src"], row["n_src"])
    img = sersic(x - ax, y - ay, amp, row["r_eff_src"], row["n_src"], 1 - row["e_src"],
                 np.radians(row["phi_src"]), row["src_x"], row["src_y"]) * PS**2
    # convolve with the padded grid like the renderer: compare away from the edges
    big_x, big_y = pixel_grid(48 + 20, PS)
    bx, by = sie_deflection(big_x, big_y, row["theta_e"], 1 - row["e_sie"], np.radians(row["phi_sie"]),
                            row["dfl_x"], row["dfl_y"])
    big = sersic(big_x - bx, big_y - by, amp, row["r_eff_src"], row["n_src"], 1 - row["e_src"],
                 np.radians(row["phi_src"]), row["src_x"], row["src_y"]) * PS**2
    conv = convolve_psf(big, gaussian_psf(0.7, PS))[10:-10, 10:-10]
    np.testing.assert_allclose(arcs[0, 2], conv, atol=1e-4 * conv.max())
    assert img.sum() > 0 and abs(arcs[0, 2].sum() - img.sum()) < 0.02 * img.sum()


def test_painted_blank_cutout_equals_arc_within_noise():
    blank = _sky(3, sigma=0.07, seed=5)
    painted, params, arcs = paint_arcs(blank, seed=11, gain=1000.0, return_arcs=True)
    resid = painted - blank - arcs  # the arc's own photon noise: variance arc / gain
    var = np.maximum(arcs, 0) / 1000.0
    bright = arcs > 0.5
    z = resid[bright] / np.sqrt(var[bright])
    assert abs(z.mean()) < 0.2 and 0.8 < z.std() < 1.2
    np.testing.assert_allclose(resid[arcs == 0], 0.0, atol=1e-12)  # the galaxy is untouched where there is no arc


@pytest.mark.parametrize("x0,y0", [(31.5, 31.5), (31.83, 31.21), (30.6, 32.4)])
def test_centroid_of_symmetric_galaxy(x0, y0):
    cut = _galaxy(x0, y0, r=2.5, q=0.6, phi=0.4)[None] + _sky(1, sigma=0.05, seed=1)
    light = measure_light(cut)
    assert abs(light["x"][0] - x0) < 0.05 and abs(light["y"][0] - y0) < 0.05
    assert light["q_light"][0] == pytest.approx(0.6, abs=0.08)
    assert np.radians(light["phi_light"][0]) == pytest.approx(0.4, abs=0.1)
    # the SIE of the painted lens sits at the centroid, in arcsec from the cutout centre
    _, params = paint_arcs(cut, seed=0)
    assert params["dfl_x"][0] == pytest.approx((light["x"][0] - 31.5) * PS, abs=1e-9)
    assert params["dfl_y"][0] == pytest.approx((light["y"][0] - 31.5) * PS, abs=1e-9)
    assert params["e_sie"][0] == pytest.approx(min(1 - light["q_light"][0], 0.5), abs=1e-9)


def test_centroid_ignores_a_neighbour_at_the_edge():
    cut = _galaxy(31.7, 31.4)[None] + _galaxy(58.0, 8.0, amp=60.0)[None] + _sky(1, sigma=0.05, seed=2)
    light = measure_light(cut)
    assert abs(light["x"][0] - 31.7) < 0.05 and abs(light["y"][0] - 31.4) < 0.05


def test_snr_definition_analytic():
    arc = np.zeros((2, 3, 16, 16))
    arc[:, :, 3:5, 3:8] = 4.0  # 10 pixels above 1σ
    arc[:, :, 10, 10] = 0.5    # below 1σ: not counted
    sigma, gain = 1.0, 2.0
    want = 40.0 / np.sqrt(10 * (sigma**2 + 4.0 / gain))
    np.testing.assert_allclose(arc_snr(arc, sigma, gain), want, rtol=1e-12)
    light = np.zeros_like(arc)
    light[:, :, 3:5, 3:8] = 2.0  # the galaxy's own photon noise in those pixels
    np.testing.assert_allclose(arc_snr(arc, sigma, gain, light), 40.0 / np.sqrt(10 * (1.0 + 6.0 / gain)))
    assert arc_snr(np.zeros((4, 4)), 1.0, 1.0) == 0.0


def test_snr_and_magnitude_columns_of_paint():
    blank = _sky(2, sigma=0.05, seed=9)
    _, params, arcs = paint_arcs(blank, seed=4, gain=(900.0, 800.0, 700.0), zero_point=(27.0, 27.1, 27.2),
                                 sky_sigma=0.05, return_arcs=True)
    light = blank - np.asarray(params["sky_i", "sky_r", "sky_g"]).view(float).reshape(2, 3)[..., None, None]
    want = arc_snr(arcs, 0.05, np.array([900.0, 800.0, 700.0]), light)
    np.testing.assert_allclose(np.c_[params["snr_i"], params["snr_r"], params["snr_g"]], want, rtol=1e-10)
    tot = arcs.astype(float).sum(axis=(-2, -1))
    np.testing.assert_allclose(params["m_arc_r"], 27.1 - 2.5 * np.log10(tot[:, 1]), rtol=1e-12)
    # a brighter source gives a brighter arc, the magnification is > 1
    assert np.all(params["mu"] > 1.0)


def test_zero_points_scale_the_arc():
    blank = np.zeros((1, 3, 32, 32))
    kw = dict(seed=1, arc_noise=False, return_arcs=True, sky_sigma=0.05)
    _, _, a27 = paint_arcs(blank, zero_point=27.0, **kw)
    _, _, a28 = paint_arcs(blank, zero_point=(27.0, 27.0, 28.0), **kw)
    np.testing.assert_allclose(a28[0, 2], a27[0, 2] * 10**0.4, rtol=1e-5, atol=1e-9)
    np.testing.assert_array_equal(a28[0, :2], a27[0, :2])


def test_deterministic_per_seed_and_index():
    cut = _galaxy(31.5, 31.5)[None] + _sky(5, seed=3)
    p1, t1 = paint_arcs(cut, seed=21)
    p2, t2 = paint_arcs(cut, seed=21)
    np.testing.assert_array_equal(p1, p2)
    # cutout 3 alone, with its global index, gets the same arc and parameters
    p3, t3 = paint_arcs(cut[3:4], seed=21, index_offset=3)
    np.testing.assert_array_equal(p3[0], p1[3])
    for c in ("theta_e", "m_g_src", "src_x", "phi_sie"):
        assert t3[c][0] == t1[c][3]
    p4, _ = paint_arcs(cut, seed=22)
    assert not np.array_equal(p4, p1)


def test_float32_in_float32_out_and_theta_e_prior():
    cut = (_galaxy(31.5, 31.5)[None] + _sky(50, seed=4)).astype(np.float32)
    painted, params = paint_arcs(cut, seed=0)
    assert painted.dtype == np.float32
    assert 0.8 <= params["theta_e"].min() and params["theta_e"].max() <= 2.8
    _, fixed = paint_arcs(cut[:3], seed=0, theta_e=1.7, follow_light=False, m_g_src=24.0)
    assert np.all(fixed["theta_e"] == 1.7) and np.all(fixed["m_g_src"] == 24.0)


@pytest.mark.parametrize("kwargs,name", [
    (dict(theta_e=(0.5, 30.0)), "theta_e"),
    (dict(theta_e=-1.0), "theta_e"),
    (dict(theta_e=(2.0, 1.0)), "theta_e"),
    (dict(pixel_scale=0.0), "pixel_scale"),
    (dict(zero_point=(27.0, 27.0, 99.0)), "zero_point"),
    (dict(gain=-5.0), "gain"),
    (dict(psf=-0.5), "psf"),
    (dict(m_g_src=80.0), "m_g_src"),
    (dict(r_eff_src=(0.1, 100.0)), "r_eff_src"),
    (dict(m_g_fg=20.0), "m_g_fg"),
    (dict(bands=("g", "r", "i")), "bands"),
    (dict(supersample=0), "supersample"),
    (dict(centers=np.zeros((3, 2))), "centers"),
])
def test_out_of_range_refused_naming_the_parameter(kwargs, name):
    cut = _sky(2)
    with pytest.raises(InputError, match=name):
        paint_arcs(cut, **kwargs)


def test_bad_cutouts_refused():
    with pytest.raises(InputError, match="channels"):
        paint_arcs(np.zeros((1, 1, 32, 32)))
    with pytest.raises(InputError, match="square"):
        paint_arcs(np.zeros((1, 3, 32, 40)))
    with pytest.raises(InputError, match="uint8"):
        paint_arcs(np.zeros((1, 3, 32, 32), np.uint8))
    bad = np.zeros((1, 3, 32, 32))
    bad[0, 0, 3, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        paint_arcs(bad)
