"""Physics of arcs painted onto real cutouts (issue 21): flux against lenstronomy and the SIS.

* The arc's total flux equals lenstronomy's ``ImageModel`` image of the same lens (SIE + Sersic
  source, same PSF, no lens light), pixel by pixel and in total.
* For a singular isothermal sphere and a compact source at β < θ_E the lensed flux is
  μ = 2θ_E/β times the source's (the two images' |μ±| = θ_E/β ± 1 add up).
* The real deflector's pixels are untouched, bit for bit, wherever the arc is zero.
* Band order, pixel scale, zero-point and gain mismatches are refused in one line (the CLI
  refusals are in tests/lenscrafter/test_craft_onto.py; these are the library's).
"""
import numpy as np
import pytest

from deepmine.inference.errors import InputError
from deepmine.lenscrafter import craft_negatives, paint_arcs
from deepmine.lenscrafter.pipeline import gaussian_psf
from deepmine.lenscrafter.profiles import magnitude_to_flux, sersic_amp_from_flux

PS = 0.168


def _galaxy(size=96, seed=0):
    yy, xx = np.mgrid[:size, :size].astype(float)
    c = (size - 1) / 2.0
    gal = 40.0 * np.exp(-((xx - c) ** 2 + (yy - c) ** 2 / 0.7) / 20.0)
    sky = np.random.default_rng(seed).normal(0.0, 0.07, (1, 3, size, size))
    return gal + sky


def _lenstronomy_arc(row, size, kernel, band_flux, supersample):
    pytest.importorskip("lenstronomy")
    from lenstronomy.Data.imaging_data import ImageData
    from lenstronomy.Data.psf import PSF
    from lenstronomy.ImSim.image_model import ImageModel
    from lenstronomy.LensModel.lens_model import LensModel
    from lenstronomy.LightModel.light_model import LightModel
    from lenstronomy.Util.param_util import phi_q2_ellipticity

    half = (size - 1) / 2 * PS
    data = ImageData(image_data=np.zeros((size, size)), ra_at_xy_0=-half, dec_at_xy_0=-half,
                     transform_pix2angle=np.array([[PS, 0], [0, PS]]))
    model = ImageModel(data, PSF(psf_type="PIXEL", kernel_point_source=kernel),
                       lens_model_class=LensModel(["SIE"]), source_model_class=LightModel(["SERSIC_ELLIPSE"]),
                       kwargs_numerics={"supersampling_factor": supersample, "supersampling_convolution": False})
    e1, e2 = phi_q2_ellipticity(np.radians(row["phi_sie"]), 1 - row["e_sie"])
    s1, s2 = phi_q2_ellipticity(np.radians(row["phi_src"]), 1 - row["e_src"])
    kl = [{"theta_E": row["theta_e"], "e1": e1, "e2": e2, "center_x": row["dfl_x"], "center_y": row["dfl_y"]}]
    ks = [{"amp": float(sersic_amp_from_flux(band_flux, row["r_eff_src"], row["n_src"])), "R_sersic": row["r_eff_src"],
           "n_sersic": row["n_src"], "e1": s1, "e2": s2, "center_x": row["src_x"], "center_y": row["src_y"]}]
    return model.image(kl, ks)


def test_arc_flux_matches_lenstronomy_image_model():
    size, ss = 96, 4
    cut = _galaxy(size)
    kernel = gaussian_psf(0.7, PS, 21)
    painted, params, arcs = paint_arcs(cut, psf=kernel, arc_noise=False, return_arcs=True, supersample=ss, seed=5,
                                       theta_e=1.4, m_g_src=22.0, r_eff_src=0.35, n_src=1.0, src_x=0.25, src_y=-0.1,
                                       zero_point=27.0)
    row = params[0]
    ref = _lenstronomy_arc(row, size, kernel, magnitude_to_flux(row["m_g_src"]), ss)
    ours = arcs[0, 2].astype(np.float64)  # g band: flux = 10^(-0.4 (m_g - 27))
    assert ref.sum() > 100.0  # a bright arc: the comparison means something
    assert abs(ours.sum() / ref.sum() - 1.0) < 0.01
    inner = (slice(12, -12), slice(12, -12))  # lenstronomy convolves with zero padding at the edges
    np.testing.assert_allclose(ours[inner], ref[inner], atol=0.01 * ref.max())


def test_sis_magnification_is_two_theta_e_over_beta():
    """μ = 2θ_E/β for an SIS (e = 0) and a compact source at β = 0.5″ < θ_E = 1.5″ (μ = 6)."""
    size = 128  # 21.5″: both images (θ_E ± β) and the PSF wings inside the cutout
    blank = np.zeros((1, 3, size, size))  # no light: the SIE gets q = 1, angle 0 (an SIS)
    te, beta = 1.5, 0.5
    painted, params, arcs = paint_arcs(blank, psf=0.6, arc_noise=False, return_arcs=True, supersample=8, seed=1,
                                       theta_e=te, m_g_src=22.0, r_eff_src=0.03, n_src=1.0, e_src=0.0,
                                       src_x=beta, src_y=0.0, sky_sigma=0.05)
    assert params["e_sie"][0] == 0.0
    mu = arcs[0, 2].astype(np.float64).sum() / magnitude_to_flux(22.0)
    assert abs(mu / (2 * te / beta) - 1.0) < 0.01, mu
    assert abs(params["mu"][0] - mu) < 1e-4 * mu  # the table's μ is the same quantity


@pytest.mark.parametrize("noise", [False, True])
def test_deflector_pixels_untouched_where_the_arc_is_zero(noise):
    real, _ = craft_negatives(3, seed=2, kinds=["elliptical"], output="float32", field=1.0)
    painted, _, arcs = paint_arcs(real, seed=4, return_arcs=True, arc_noise=noise, m_g_src=22.5)
    zero = arcs == 0
    assert zero.mean() > 0.1  # plenty of pixels far from the arc
    assert painted.dtype == np.float32
    np.testing.assert_array_equal(painted[zero], real[zero])  # bit for bit
    if not noise:
        np.testing.assert_allclose(painted.astype(np.float64) - real, arcs, atol=1e-5 * arcs.max())


@pytest.mark.parametrize("kwargs,needle", [
    ({"bands": ("g", "r", "i")}, "bands=('g', 'r', 'i'): LensCrafter paints channels in the order i, r, g"),
    ({"pixel_scale": 0.0}, "pixel_scale=0.0 is out of range"),
    ({"zero_point": (27.0, 27.0)}, "zero_point: expected a number or 3 values"),
    ({"zero_point": 5.0}, "zero_point=5 (band i) is out of range"),
    ({"gain": (1.0, -1.0, 1.0)}, "gain=-1 (band r) is out of range"),
])
def test_library_mismatches_refused_in_one_line(kwargs, needle):
    with pytest.raises(InputError) as exc:
        paint_arcs(np.zeros((1, 3, 32, 32)), **kwargs)
    msg = str(exc.value)
    assert needle in msg and "\n" not in msg


def test_deflector_band_order_outside_irg_refused(tmp_path):
    from deepmine.lenscrafter.paint.onto import read_deflectors

    np.save(tmp_path / "d.npy", np.zeros((2, 3, 32, 32), np.float32))
    with pytest.raises(InputError, match=r"bands g,r,z: LensCrafter paints the bands i, r, g"):
        read_deflectors(tmp_path / "d.npy", bands="g,r,z")
