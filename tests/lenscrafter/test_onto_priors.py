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
        a = rng.uniform(*amp) if np.ndim(amp) == 1 else amp[k]
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
