"""``craft --onto`` on survey images + a source catalogue (issue 21): cut as the scanner cuts.

Three band images (i, r, g; 0.168″/px TAN WCS, per-band MAGZERO and GAIN cards, FILTER cards)
hold round galaxies on sky noise; the catalogue gives their pixel positions or RA/Dec. Painting
onto them must equal painting onto the same cutouts stored as a cube.
"""
import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

SIZE, N = 64, 6
ZP = {"i": 27.0, "r": 27.1, "g": 27.2}


def _header(band):
    h = fits.Header()
    h["CTYPE1"], h["CTYPE2"] = "RA---TAN", "DEC--TAN"
    h["CRVAL1"], h["CRVAL2"] = 150.0, 2.0
    h["CRPIX1"], h["CRPIX2"] = 200.5, 150.5
    h["CDELT1"], h["CDELT2"] = -0.168 / 3600.0, 0.168 / 3600.0
    h["FILTER"], h["MAGZERO"], h["GAIN"] = f"HSC-{band.upper()}", ZP[band], 3.0
    return h


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    d = tmp_path_factory.mktemp("survey")
    rng = np.random.default_rng(1)
    h, w = 300, 400
    xs = np.array([60.2, 140.3, 220.6, 300.7, 100.4, 250.2])  # never a whole pixel: even cutouts centre between two
    ys = np.array([60.3, 90.8, 150.4, 200.2, 230.6, 240.3])
    yy, xx = np.mgrid[:h, :w].astype(float)
    for k, band in enumerate("irg"):
        img = rng.normal(0.0, 0.07, (h, w))
        for x, y in zip(xs, ys):
            img += (30.0 - 8 * k) * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 12.0)
        fits.PrimaryHDU(img.astype(np.float32), header=_header(band)).writeto(d / f"{band}.fits")
    ra, dec = WCS(_header("i")).pixel_to_world_values(xs, ys)
    Table({"id": np.arange(N), "x": xs, "y": ys, "ra": ra, "dec": dec}).write(d / "cat.ecsv")
    Table({"x": [5.0], "y": [100.0]}).write(d / "edge.ecsv")
    # the same cutouts, nearest-centred as astropy's Cutout2D takes them, as a cube
    cube = []
    for x, y in zip(xs, ys):
        x0, y0 = int(np.ceil(x - SIZE / 2)), int(np.ceil(y - SIZE / 2))
        cube.append([fits.getdata(d / f"{b}.fits")[y0:y0 + SIZE, x0:x0 + SIZE] for b in "irg"])
    ch = fits.Header()
    ch["CTYPE1"], ch["CTYPE2"], ch["CDELT1"], ch["CDELT2"] = "RA---TAN", "DEC--TAN", -0.168 / 3600, 0.168 / 3600
    ch["CRVAL1"], ch["CRVAL2"], ch["BANDS"], ch["GAIN"] = 150.0, 2.0, "i,r,g", 3.0
    fits.PrimaryHDU(np.array(cube, np.float32), header=ch).writeto(d / "cube.fits")
    return d


def _one_line(rc, err, needle):
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert rc == 2, err
    assert len(lines) == 1 and needle in lines[0], err


@pytest.mark.parametrize("order,cols", [("irg", ["--x-col", "x", "--y-col", "y"]), ("gri", [])])
def test_survey_images_paint_like_the_same_cube(cli, survey, tmp_path, order, cols):
    out = tmp_path / "s.npy"
    imgs = [x for b in order for x in ("--onto", survey / f"{b}.fits")]
    rc, _, err = cli("craft", *imgs, "--catalog", survey / "cat.ecsv", *cols, "--out", out, "--float", "--seed", 4)
    assert rc == 0, err
    t = Table.read(out.with_suffix(".ecsv"))
    assert t.meta["zero_point"] == [27.0, 27.1, 27.2] and t.meta["catalog"].endswith("cat.ecsv")
    ref = tmp_path / "c.npy"
    rc, _, err = cli("craft", "--onto", survey / "cube.fits", "--zero-point", "27,27.1,27.2", "--out", ref,
                     "--float", "--seed", 4)
    assert rc == 0, err
    np.testing.assert_array_equal(np.load(out), np.load(ref))


def test_survey_refusals_one_line(cli, survey, tmp_path):
    imgs = [x for b in "irg" for x in ("--onto", survey / f"{b}.fits")]
    rc, _, err = cli("craft", *imgs, "--catalog", survey / "edge.ecsv", "--out", tmp_path / "e.npy")
    _one_line(rc, err, "row 0: its cutout leaves the image")
    rc, _, err = cli("craft", *imgs[:4], "--catalog", survey / "cat.ecsv", "--out", tmp_path / "e.npy")
    _one_line(rc, err, "give 3 survey images")
    rc, _, err = cli("craft", *imgs, "--out", tmp_path / "e.npy")
    _one_line(rc, err, "need --catalog")
    rc, _, err = cli("craft", *imgs, "--catalog", survey / "cat.ecsv", "--zero-point", 30, "--out", tmp_path / "e.npy")
    _one_line(rc, err, "zero point 27,27.1,27.2 (header) disagrees with --zero-point")
    rc, _, err = cli("craft", "--n", 2, "--catalog", survey / "cat.ecsv", "--out", tmp_path / "e.npy")
    _one_line(rc, err, "--catalog and its columns apply to --onto survey images only")
    assert not (tmp_path / "e.npy").exists()


def test_selection_onto_survey_images(cli, survey, tmp_path):
    import json

    grid = tmp_path / "g.toml"
    grid.write_text("per_cell = 2\n[axes.theta_e]\nrange = [0.8, 2.4]\nbins = 2\n[axes.m_arc]\nrange = [21, 24]\nbins = 2\n")
    imgs = [x for b in "irg" for x in ("--onto", survey / f"{b}.fits")]
    out = tmp_path / "sel.fits"
    rc, _, err = cli("selection", *imgs, "--catalog", survey / "cat.ecsv", "--grid", grid, "--cut", 0.8, "--out", out,
                     "--device", "cpu")
    assert rc == 0, err
    t = Table.read(out)
    prov = json.loads(t.meta["PROVJSON"])
    assert len(t) == 4 and int(np.sum(t["n"])) == 8
    assert prov["onto"]["n"] == N and len(prov["onto"]["images"]) == 3 and prov["onto"]["zero_point"] == [27.0, 27.1, 27.2]
    rc, _, err = cli("selection", "--catalog", survey / "cat.ecsv", "--out", tmp_path / "x.fits", "--dry-run")
    _one_line(rc, err, "--catalog applies to --onto only")
