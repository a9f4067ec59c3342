"""Issue 21: the PSF of painted arcs as a Moffat FWHM (``--psf-beta``) and θ_E from the deflector's
measured light (Faber–Jackson + SIS, ``--theta-e-from-light``)."""
import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

N, SIZE, SCALE = 4, 48, 0.2


def _galaxies(n=N, seed=0, amp=(5.0, 30.0)):
    """n round galaxies in flux units (i, r, g), sky noise 0.05, centred near the cutout centre."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    out = np.empty((n, 3, SIZE, SIZE))
    for k in range(n):
        x0, y0 = rng.uniform(23, 24, 2)
        a = rng.uniform(*amp) if isinstance(amp, tuple) else amp[k]
        gal = a * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * 3.0**2))
        out[k] = gal * np.array([1.0, 0.7, 0.4])[:, None, None] + rng.normal(0, 0.05, (3, SIZE, SIZE))
    return out


@pytest.fixture(scope="module")
def cube(tmp_path_factory):
    """A g, r, i cube (float32) with zero point 27, gain 500 and a 0.2″/px WCS; and its i, r, g cutouts."""
    d = tmp_path_factory.mktemp("priors")
    irg = _galaxies().astype(np.float32)
    h = fits.Header()
    h["CTYPE1"], h["CTYPE2"] = "RA---TAN", "DEC--TAN"
    h["CRVAL1"], h["CRVAL2"], h["CRPIX1"], h["CRPIX2"] = 150.1, 2.2, 24.5, 24.5
    h["CDELT1"], h["CDELT2"] = -SCALE / 3600.0, SCALE / 3600.0
    h["BANDS"], h["GAIN"], h["MAGZERO"] = "g,r,i", 500.0, 27.0
    fits.PrimaryHDU(irg[:, ::-1], header=h).writeto(d / "cube.fits")
    return d / "cube.fits", irg.astype(np.float64)


def _one_line(rc, err, needle):
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert rc != 0 and len(lines) == 1 and needle in lines[0], err
    assert "Traceback" not in err


# ----------------------------------------------------------------------------- Moffat PSF
def test_psf_beta_paints_with_moffat_kernels(cli, cube, tmp_path):
    from deepmine.lenscrafter import paint_arcs
    from deepmine.lenscrafter.pipeline import moffat_psf

    path, irg = cube
    out = tmp_path / "m.npy"
    # --psf-fwhm in the file's band order (g, r, i): i 0.6″, r 0.7″, g 0.8″
    rc, _, err = cli("craft", "--onto", path, "--psf-fwhm", "0.8,0.7,0.6", "--psf-beta", 3, "--no-noise",
                     "--float", "--seed", 2, "--out", out)
    assert rc == 0, err
    tab = Table.read(out.with_suffix(".ecsv"))
    assert tab.meta["psf"] == "moffat beta=3 0.6,0.7,0.8"
    k = moffat_psf(0.8, 3.0, SCALE).shape[0]
    kern = np.stack([moffat_psf(f, 3.0, SCALE, k) for f in (0.6, 0.7, 0.8)])
    want, params = paint_arcs(irg, pixel_scale=SCALE, zero_point=27.0, gain=500.0, psf=kern, seed=2,
                              arc_noise=False)
    np.testing.assert_array_equal(np.load(out), want.astype(np.float32))
    np.testing.assert_array_equal(tab["theta_e"], params["theta_e"])
    gauss, _ = paint_arcs(irg, pixel_scale=SCALE, zero_point=27.0, gain=500.0, psf=[0.6, 0.7, 0.8], seed=2,
                          arc_noise=False)
    assert np.abs(gauss - want).max() > 1e-3  # the Moffat's wings are not the Gaussian's

    from deepmine.lenscrafter.selection.onto import prepare_onto

    src = prepare_onto(path, psf_fwhm=[0.8, 0.7, 0.6], psf_beta=3.0)
    np.testing.assert_allclose(src.psf, kern, rtol=1e-12)
    assert src.identity()["psf"] == "moffat beta=3 0.6,0.7,0.8"


@pytest.mark.parametrize("extra,needle", [
    (["--psf-beta", 1.0], "--psf-beta 1.0: expected a Moffat beta"),
    (["--psf-beta", 3, "--psf", "k.npy"], "--psf-beta shapes a --psf-fwhm Moffat"),
])
def test_psf_beta_refusals(cli, cube, tmp_path, monkeypatch, extra, needle):
    monkeypatch.chdir(tmp_path)
    np.save("k.npy", np.ones((5, 5)))
    rc, _, err = cli("craft", "--onto", cube[0], "--out", "x.npy", *extra)
    _one_line(rc, err, needle)
    rc, _, err = cli("craft", "--n", 2, "--out", "y.npy", "--psf-beta", 3)
    _one_line(rc, err, "--psf-beta applies to --onto only")
    rc, _, err = cli("selection", "--out", "s.fits", "--psf-beta", 3)
    _one_line(rc, err, "--psf-beta applies to --onto only")


# ----------------------------------------------------------------------------- θ_E from the light
def _flux_amplitude(m, zp=27.0):
    """Peak of the i-band Gaussian (σ 3 px) of ``_galaxies`` whose total i flux is magnitude ``m``."""
    return 10 ** (-0.4 * (m - zp)) / (2 * np.pi * 9.0)


def test_theta_e_from_magnitude_is_faber_jackson_and_sis():
    from deepmine.lenscrafter.paint.theta_prior import (
        LIGHT_PRIOR,
        sigma_from_magnitude,
        theta_e_from_magnitude,
        theta_e_sis,
    )

    p = {k: LIGHT_PRIOR[k] for k in ("sigma_ref", "m_ref", "dls_ds")}
    rad = 4 * np.pi * (p["sigma_ref"] / 299792.458) ** 2 * p["dls_ds"]
    assert theta_e_from_magnitude(p["m_ref"], **p) == pytest.approx(np.degrees(rad) * 3600, rel=1e-12)
    # 4 magnitudes brighter: L × 10^1.6, σ × 10^0.4 (L ∝ σ⁴), θ_E × 10^0.8 (θ_E ∝ σ²)
    assert sigma_from_magnitude(p["m_ref"] - 4, p["sigma_ref"], p["m_ref"]) == pytest.approx(
        p["sigma_ref"] * 10**0.4, rel=1e-12)
    ratio = theta_e_from_magnitude(p["m_ref"] - 4, **p) / theta_e_from_magnitude(p["m_ref"], **p)
    assert ratio == pytest.approx(10**0.8, rel=1e-12)
    assert theta_e_sis(2 * 200.0, 0.5) == pytest.approx(4 * theta_e_sis(200.0, 0.5), rel=1e-12)


def test_paint_arcs_theta_e_follows_the_measured_magnitude():
    from deepmine.lenscrafter import paint_arcs
    from deepmine.lenscrafter.paint.theta_prior import theta_e_from_magnitude

    mags = np.array([19.5, 15.5, 18.0, 21.0])
    cut = _galaxies(4, seed=3, amp=_flux_amplitude(mags))
    prior = {"sigma_ref": 240.0, "m_ref": 19.5, "dls_ds": 0.6, "scatter": 0.0}
    _, t = paint_arcs(cut, pixel_scale=SCALE, zero_point=27.0, gain=500.0, seed=1, theta_e=(0.05, 20.0),
                      theta_e_from_light=prior)
    assert np.all(np.abs(t["m_dfl"] - mags) < 0.02)  # the 2″ aperture holds the whole galaxy
    want = theta_e_from_magnitude(np.asarray(t["m_dfl"]), sigma_ref=240.0, m_ref=19.5, dls_ds=0.6)
    np.testing.assert_allclose(t["theta_e"], want, rtol=1e-12)
    assert t["theta_e"][1] / t["theta_e"][0] == pytest.approx(10**0.8, rel=0.02)
    assert t.meta["paint"]["theta_e_prior"] == {"kind": "light", **prior}
    # clipped to the θ_E range: the brightest at the top, the faintest at the bottom
    _, c = paint_arcs(cut, pixel_scale=SCALE, zero_point=27.0, gain=500.0, seed=1, theta_e_from_light=prior)
    assert c["theta_e"][1] == 2.8 and c["theta_e"][3] == 0.8
    with pytest.raises(Exception, match="theta_e must be the \\(low, high\\) range"):
        paint_arcs(cut, pixel_scale=SCALE, zero_point=27.0, gain=500.0, theta_e=1.0, theta_e_from_light=True)


def test_brighter_deflectors_get_larger_theta_e_on_average():
    from deepmine.lenscrafter import paint_arcs

    n = 24
    mags = np.repeat([18.3, 19.8], n // 2)
    cut = _galaxies(n, seed=5, amp=_flux_amplitude(mags))
    _, t = paint_arcs(cut, pixel_scale=SCALE, zero_point=27.0, gain=500.0, seed=2, theta_e_from_light=True)
    te = np.asarray(t["theta_e"])
    assert np.all((te >= 0.8) & (te <= 2.8))
    bright, faint = te[: n // 2], te[n // 2:]
    assert bright.mean() > 1.4 * faint.mean()  # 1.5 mag: × 10^0.3 ≈ 2 before scatter and clipping
    assert len(np.unique(np.round(bright, 6))) > n // 4  # scattered (log-normal), not one value per class
    _, u = paint_arcs(cut, pixel_scale=SCALE, zero_point=27.0, gain=500.0, seed=2)  # the uniform prior ignores it
    assert abs(np.mean(u["theta_e"][: n // 2]) - np.mean(u["theta_e"][n // 2:])) < 0.6


def test_craft_and_selection_onto_theta_e_from_light(cli, cube, tmp_path, monkeypatch):
    from deepmine.lenscrafter.paint.theta_prior import theta_e_from_magnitude

    path, _ = cube
    out = tmp_path / "l.npy"
    rc, _, err = cli("craft", "--onto", path, "--light-prior", "sigma_ref=300,scatter=0", "--theta-e", "0.1,9",
                     "--out", out)
    assert rc == 0, err
    t = Table.read(out.with_suffix(".ecsv"))
    np.testing.assert_allclose(t["theta_e"], theta_e_from_magnitude(np.asarray(t["m_dfl"]), sigma_ref=300.0),
                               rtol=1e-9)
    assert t.meta["theta_e_prior"].startswith("light (Faber-Jackson + SIS") and "sigma_ref=300" in t.meta["theta_e_prior"]
    monkeypatch.chdir(tmp_path)
    for args, needle in ((["--light-prior", "sigma=3"], "unknown parameter(s) sigma"),
                         (["--light-prior", "scatter"], "expected KEY=VALUE"),
                         (["--theta-e-from-light", "--unlensed"], "--theta-e-from-light does not apply with --unlensed")):
        rc, _, err = cli("craft", "--onto", path, "--out", "x.npy", *args)
        _one_line(rc, err, needle)
    rc, _, err = cli("craft", "--n", 2, "--out", "x.npy", "--theta-e-from-light")
    _one_line(rc, err, "--theta-e-from-light applies to --onto only")

    # selection --onto: θ_E is no axis of the default grid; a grid naming it is refused
    rc, out_text, err = cli("selection", "--onto", path, "--theta-e-from-light", "--out", "s.fits", "--dry-run")
    assert rc == 0, err
    assert "theta_e" not in out_text and "m_dfl" in out_text
    (tmp_path / "g.toml").write_text("[axes.theta_e]\nrange = [1, 2]\nbins = 2\n")
    rc, _, err = cli("selection", "--onto", path, "--theta-e-from-light", "--grid", "g.toml", "--out", "s.fits",
                     "--dry-run")
    _one_line(rc, err, "theta_E follows the deflectors' light")


def test_selection_onto_cells_paint_with_the_light_prior(cube, monkeypatch):
    from types import SimpleNamespace

    import deepmine.lenscrafter.paint.arcs as arcs
    from deepmine.lenscrafter.selection.onto import default_onto_grid, prepare_onto

    src = prepare_onto(cube[0], theta_e_from_light={"scatter": 0.05})
    assert src.identity()["theta_e_light"]["scatter"] == 0.05
    grid = default_onto_grid(src, per_cell=2)
    seen = []
    real = arcs.paint_arcs

    def spy(*a, **kw):
        painted, tab = real(*a, **kw)
        seen.append((kw, tab))
        return painted, tab

    monkeypatch.setattr(arcs, "paint_arcs", spy)
    model = SimpleNamespace(input_shape=(3, SIZE, SIZE), metadata=SimpleNamespace(bands=("i", "r", "g")))
    images, counts = src.images_for_cells(grid, np.arange(grid.n_cells), 2, 0, model)
    assert counts.sum() == len(images) > 0
    (kw, tab), = seen
    assert kw["theta_e_from_light"]["scatter"] == 0.05 and kw["theta_e"] == (0.8, 2.8)
    assert tab.meta["paint"]["theta_e_prior"]["kind"] == "light"
    chosen = src.choose(grid, np.arange(grid.n_cells), 2, 0)
    # the painted lenses' m_dfl is the selection's own measurement of their deflectors (one definition)
    np.testing.assert_allclose(tab["m_dfl"], src.properties["m_dfl"][chosen[chosen >= 0]], rtol=1e-10)
