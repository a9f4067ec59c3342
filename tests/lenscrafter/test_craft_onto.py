"""``deepmine craft --onto``: LensCrafter arcs painted onto real galaxy cutouts, end to end.

The deflectors are real galaxies: 64×64 cutouts of the Hubble eXtreme Deep Field image that
scikit-image ships (tools/evaluate_bundled.py's ``hdf_cutouts``: sRGB-linearised 8-bit composite,
resampled to 0.168″/px, HSC seeing, flux scaled for zero point 27; assumptions written there),
stored as a FITS cube with a TAN WCS of 0.168″/px and a ``BANDS`` card.
"""
import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

pytest.importorskip("skimage")

ROOT = Path(__file__).resolve().parents[2]
N = 8


def _hdf_cutouts():
    spec = importlib.util.spec_from_file_location("evaluate_bundled", ROOT / "tools" / "evaluate_bundled.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.hdf_cutouts(max_galaxies=N)[0]


def _header(scale=0.168, bands="i,r,g", **cards):
    h = fits.Header()
    h["CTYPE1"], h["CTYPE2"] = "RA---TAN", "DEC--TAN"
    h["CRVAL1"], h["CRVAL2"] = 53.16, -27.78
    h["CRPIX1"], h["CRPIX2"] = 32.5, 32.5
    h["CDELT1"], h["CDELT2"] = -scale / 3600.0, scale / 3600.0
    h["CUNIT1"], h["CUNIT2"] = "deg", "deg"
    if bands:
        h["BANDS"] = bands
    for k, v in cards.items():
        h[k] = v
    return h


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    cut = _hdf_cutouts()
    d = tmp_path_factory.mktemp("onto")
    fits.PrimaryHDU(cut, header=_header()).writeto(d / "cube.fits")
    return cut, d / "cube.fits"


def _sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _one_line(rc, err, needle):
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert rc == 2, err
    assert len(lines) == 1 and needle in lines[0], err
    assert "Traceback" not in err


def test_onto_cube_end_to_end(cli, real, tmp_path):
    cut, cube = real
    out = tmp_path / "painted.npy"
    rc, _, err = cli("craft", "--onto", cube, "--zero-point", 27, "--gain", 1000, "--seed", 3, "--out", out,
                     "--theta-e", "1.0,2.0")
    assert rc == 0, err
    stack = np.load(out)
    assert stack.shape == (N, 3, 64, 64) and stack.dtype == np.uint8
    tab = Table.read(tmp_path / "painted.ecsv")
    assert len(tab) == N
    for col in ("theta_e", "x", "y", "index", "m_arc_i", "m_arc_r", "m_arc_g", "snr_i", "snr_r", "snr_g", "mu",
                "m_g_src", "src_x", "dfl_x", "q_light"):
        assert col in tab.colnames, col
    assert tab.meta["pixel_scale"] == pytest.approx(0.168, rel=1e-6)  # from the WCS
    assert tab.meta["bands"] == "i,r,g" and tab.meta["seed"] == 3
    assert np.all((tab["theta_e"] >= 1.0) & (tab["theta_e"] <= 2.0))
    assert np.all(np.isfinite(tab["m_arc_g"])) and np.all(tab["snr_g"] >= 0)
    # the deflector sits on the galaxy: the centroid is near the cutout centre (cutouts are centred on it)
    assert np.all(np.abs(tab["x"] - 31.5) < 1.5) and np.all(np.abs(tab["y"] - 31.5) < 1.5)

    # --float keeps flux; the uint8 stack is exactly the scanner's normalisation of it
    rc, _, err = cli("craft", "--onto", cube, "--zero-point", 27, "--gain", 1000, "--seed", 3,
                     "--out", tmp_path / "flux.npy", "--theta-e", "1.0,2.0", "--float")
    assert rc == 0, err
    flux = np.load(tmp_path / "flux.npy")
    assert flux.dtype == np.float32 and flux.shape == stack.shape
    from deepmine.inference.preprocess import percentile_normalization

    np.testing.assert_array_equal(percentile_normalization(flux), stack)
    arc = flux.astype(np.float64) - cut
    assert np.all(arc.sum(axis=(-2, -1)) > 0)  # an arc was added to every cutout and band
    # far from the arc the real pixels are kept (float32 rounding only)
    far = np.abs(arc) < 1e-9
    assert far.mean() > 0.3


def test_onto_deterministic_per_seed_and_chunking(real, tmp_path):
    from deepmine.lenscrafter.paint.onto import craft_onto

    _, cube = real
    kw = dict(zero_point=27.0, gain=1000.0, seed=11)
    craft_onto(cube, tmp_path / "a.npy", **kw)
    craft_onto(cube, tmp_path / "b.npy", chunk=3, **kw)
    assert _sha(tmp_path / "a.npy") == _sha(tmp_path / "b.npy")
    ta, tb = Table.read(tmp_path / "a.ecsv"), Table.read(tmp_path / "b.ecsv")
    np.testing.assert_array_equal(ta["theta_e"], tb["theta_e"])
    np.testing.assert_array_equal(ta["snr_g"], tb["snr_g"])
    craft_onto(cube, tmp_path / "c.npy", **{**kw, "seed": 12})
    assert _sha(tmp_path / "a.npy") != _sha(tmp_path / "c.npy")


def test_onto_directory_in_another_band_order_gives_the_same_lenses(real, tmp_path):
    from deepmine.lenscrafter.paint.onto import craft_onto

    cut, cube = real
    folder = tmp_path / "cutouts"
    folder.mkdir()
    for k, c in enumerate(cut):
        fits.PrimaryHDU(c[::-1], header=_header(bands=None, BAND1="HSC-G", BAND2="HSC-R", BAND3="HSC-I",
                                               MAGZERO=27.0, GAIN=1000.0)).writeto(folder / f"gal{k:02d}.fits")
    t_dir = craft_onto(folder, tmp_path / "dir.npy", seed=5, dtype="float32")
    t_cube = craft_onto(cube, tmp_path / "cube.npy", seed=5, zero_point=27, gain=1000, dtype="float32")
    np.testing.assert_array_equal(np.load(tmp_path / "dir.npy"), np.load(tmp_path / "cube.npy"))
    assert list(t_dir["file"]) == [f"gal{k:02d}.fits" for k in range(N)]
    assert t_dir.meta["bands_in_file"] == "g,r,i"
    np.testing.assert_array_equal(t_dir["theta_e"], t_cube["theta_e"])


def test_pixel_scale_mismatch_refused_in_one_line(cli, real, tmp_path):
    _, cube = real
    out = tmp_path / "p.npy"
    rc, _, err = cli("craft", "--onto", cube, "--zero-point", 27, "--gain", 1000, "--pixel-scale", 0.2,
                     "--out", out)
    _one_line(rc, err, "differs from --pixel-scale")
    assert not out.exists() and not out.with_suffix(".ecsv").exists()
    assert not list(tmp_path.iterdir())  # no temporary file left either


def test_existing_output_refused_without_overwrite(cli, real, tmp_path):
    _, cube = real
    out = tmp_path / "p.npy"
    args = ("craft", "--onto", cube, "--zero-point", 27, "--gain", 1000, "--out", out)
    assert cli(*args)[0] == 0
    before = _sha(out), _sha(out.with_suffix(".ecsv"))
    rc, _, err = cli(*args, "--seed", 9)
    _one_line(rc, err, "already exists; pass --overwrite")
    assert (_sha(out), _sha(out.with_suffix(".ecsv"))) == before
    rc, _, err = cli(*args, "--seed", 9, "--overwrite")
    assert rc == 0, err
    assert _sha(out) != before[0]


@pytest.mark.parametrize("extra,needle", [
    ([], "no zero point"),
    (["--zero-point", 27], "no gain"),
    (["--zero-point", "27,27"], "--zero-point '27,27': expected 1 or 3 numbers"),
    (["--zero-point", 27, "--gain", 1000, "--size", 48], "not the --size 48"),
    (["--zero-point", 27, "--gain", 1000, "--bands", "g,r,i"], "disagrees with the header's band order"),
    (["--zero-point", 27, "--gain", 1000, "--theta-e", "2,1"], "--theta-e 2,1"),
    (["--zero-point", 27, "--gain", 1000, "--n", 3], "--n does not apply to --onto"),
    (["--zero-point", 27, "--gain", 1000, "--psf", "psf.npy", "--psf-fwhm", 0.7], "contradict"),
    (["--gain", 1000], "no zero point"),
])
def test_onto_refusals_one_line(cli, real, tmp_path, monkeypatch, extra, needle):
    _, cube = real
    monkeypatch.chdir(tmp_path)
    np.save("psf.npy", np.ones((5, 5)))
    rc, _, err = cli("craft", "--onto", cube, "--out", "x.npy", *extra)
    _one_line(rc, err, needle)
    assert not (tmp_path / "x.npy").exists()


def test_header_calibration_mismatch_and_bad_pixels(cli, real, tmp_path, monkeypatch):
    cut, _ = real
    monkeypatch.chdir(tmp_path)
    fits.PrimaryHDU(cut, header=_header(MAGZERO=27.0, GAIN=3.0)).writeto("cal.fits")
    rc, _, err = cli("craft", "--onto", "cal.fits", "--out", "x.npy", "--zero-point", 31)
    _one_line(rc, err, "zero point 27 (header) disagrees with --zero-point 31")
    rc, _, err = cli("craft", "--onto", "cal.fits", "--out", "x.npy", "--gain", 4)
    _one_line(rc, err, "gain 3 e-/count (header) disagrees")
    bad = cut.copy()
    bad[5, 1, 3, 3] = np.nan
    fits.PrimaryHDU(bad, header=_header(MAGZERO=27.0, GAIN=3.0)).writeto("nan.fits")
    rc, _, err = cli("craft", "--onto", "nan.fits", "--out", "x.npy")
    _one_line(rc, err, "cutout 5 holds NaN")
    np.save("u8.npy", np.zeros((2, 3, 32, 32), np.uint8))
    rc, _, err = cli("craft", "--onto", "u8.npy", "--out", "x.npy", "--pixel-scale", 0.168, "--zero-point", 27,
                     "--gain", 1)
    _one_line(rc, err, "uint8 pixels")
    rc, _, err = cli("craft", "--onto", "u8.npy", "--out", "x.npy", "--zero-point", 27, "--gain", 1)
    _one_line(rc, err, "pass --pixel-scale")
    assert not (tmp_path / "x.npy").exists()


def test_negatives_flag_has_a_no_form(cli, tmp_path):
    rc, _, err = cli("craft", "--n", 3, "--no-negatives", "--out", tmp_path / "l.npy", "--field", 0)
    assert rc == 0, err
    assert "kind" not in Table.read(tmp_path / "l.ecsv").colnames
    rc, _, err = cli("craft", "--n", 3, "--negatives", "--out", tmp_path / "n.npy", "--field", 0)
    assert rc == 0, err
    assert "kind" in Table.read(tmp_path / "n.ecsv").colnames
    rc, _, err = cli("craft", "--n", 3, "--out", tmp_path / "z.npy", "--zero-point", 27)
    _one_line(rc, err, "--zero-point applies to --onto only")


def test_onto_psf_fwhm_and_exptime(cli, real, tmp_path):
    _, cube = real
    out = tmp_path / "p.npy"
    rc, _, err = cli("craft", "--onto", cube, "--zero-point", "27,27,27", "--exptime", 100, "--psf-fwhm",
                     "0.6,0.7,0.8", "--out", out, "--float")
    assert rc == 0, err
    meta = Table.read(out.with_suffix(".ecsv")).meta
    assert meta["psf"] == "gaussian 0.6,0.7,0.8" and meta["gain_e_per_unit"] == [100.0] * 3
    psf = np.zeros((3, 9, 9))
    psf[:, 4, 4] = 1.0
    np.save(tmp_path / "psf.npy", psf)
    rc, _, err = cli("craft", "--onto", cube, "--zero-point", 27, "--gain", 1000, "--psf", tmp_path / "psf.npy",
                     "--out", tmp_path / "k.npy")
    assert rc == 0, err
    assert Table.read(tmp_path / "k.ecsv").meta["psf"] == "kernel"


def test_unlensed_control_negatives(cli, real, tmp_path):
    """--unlensed paints a LensCrafter source beside each galaxy, not lensed (theta_E 0.01"): μ <= 1."""
    _, cube = real
    out = tmp_path / "u.npy"
    rc, _, err = cli("craft", "--onto", cube, "--zero-point", 27, "--gain", 1000, "--unlensed", "--out", out)
    assert rc == 0, err and "unlensed sources painted" in err
    t = Table.read(out.with_suffix(".ecsv"))
    assert t.meta["unlensed"] is True and np.all(t["theta_e"] == 0.01)
    assert np.all((t["m_g_src"] >= 21.5) & (t["m_g_src"] <= 24.5))
    rel = np.hypot(t["src_x"] - t["dfl_x"], t["src_y"] - t["dfl_y"])
    assert rel.max() <= 3.0 * np.sqrt(2) and rel.max() > 0.5
    # not magnified: at most the source's flux (less where its Sersic wings leave the cutout)
    assert np.all((t["mu"] > 0.5) & (t["mu"] < 1.02))
    rc, _, err = cli("craft", "--onto", cube, "--zero-point", 27, "--gain", 1000, "--unlensed", "--theta-e", "1,2",
                     "--out", tmp_path / "v.npy")
    _one_line(rc, err, "--theta-e does not apply with --unlensed")
    rc, _, err = cli("craft", "--n", 2, "--unlensed", "--out", tmp_path / "w.npy")
    _one_line(rc, err, "--unlensed applies to --onto only")


def test_survey_recipe_pairs_painted_positives_with_real_negatives():
    from deepmine.training.recipe import builtin_recipe_path, load_recipe

    r = load_recipe("survey")
    (main,) = r.phases
    assert main["data"]["negatives_per_positive"] == 1 and main["data"]["shift"] > 0
    assert main["extra_negatives"] and main["early_stop"]["restore_best"]
    text = builtin_recipe_path("survey").read_text()
    assert "craft --onto" in text and "--unlensed" in text
