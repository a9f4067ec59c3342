"""Issue 19 for LensCrafter's readers: ``file.fits[N]`` / ``file.fits[EXTNAME]`` wherever a FITS
image is read (``craft --onto``, ``--psf``), and picture files whose format follows the suffix."""
import numpy as np
import pytest
from astropy.io import fits

N, SIZE, SCALE = 4, 48, 0.2


def _galaxies(seed=0):
    """N round galaxies in flux units (i, r, g), sky noise 0.05, centred near the cutout centre."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    out = np.empty((N, 3, SIZE, SIZE))
    for k in range(N):
        x0, y0 = rng.uniform(23, 24, 2)
        gal = rng.uniform(5, 30) * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * rng.uniform(2, 4) ** 2))
        out[k] = gal * np.array([1.0, 0.7, 0.4])[:, None, None] + rng.normal(0, 0.05, (3, SIZE, SIZE))
    return out


def _wcs_cards(h):
    h["CTYPE1"], h["CTYPE2"] = "RA---TAN", "DEC--TAN"
    h["CRVAL1"], h["CRVAL2"] = 150.1, 2.2
    h["CRPIX1"], h["CRPIX2"] = SIZE / 2 + 0.5, SIZE / 2 + 0.5
    h["CDELT1"], h["CDELT2"] = -SCALE / 3600.0, SCALE / 3600.0
    h["CUNIT1"], h["CUNIT2"] = "deg", "deg"
    return h


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The same cube (bands g, r, i) as a plain file and as extension 1 'DEFL' of another."""
    d = tmp_path_factory.mktemp("ext")
    gri = _galaxies()[:, ::-1].astype(np.float32)
    h = _wcs_cards(fits.Header())
    h["BANDS"], h["GAIN"], h["MAGZERO"] = "g,r,i", 500.0, 27.0
    fits.PrimaryHDU(gri, header=h).writeto(d / "plain.fits")
    prim = fits.Header()
    prim["MAGZERO"] = 27.0  # a primary card: read with the extension's header
    ext = _wcs_cards(fits.Header())
    ext["BANDS"], ext["GAIN"] = "g,r,i", 500.0
    fits.HDUList([fits.PrimaryHDU(header=prim), fits.ImageHDU(gri, header=ext, name="DEFL")]).writeto(d / "ext.fits")
    return d


def _one_line(rc, err, needle):
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert rc != 0 and len(lines) == 1 and needle in lines[0], err
    assert "Traceback" not in err


def test_onto_reads_the_named_extension_and_its_header(cli, files, tmp_path):
    from astropy.table import Table

    outs = {}
    for name, src in (("plain", files / "plain.fits"), ("num", f"{files / 'ext.fits'}[1]"),
                      ("name", f"{files / 'ext.fits'}[defl]")):
        out = tmp_path / f"{name}.npy"
        rc, _, err = cli("craft", "--onto", src, "--seed", 4, "--float", "--out", out)
        assert rc == 0, err
        outs[name] = (np.load(out), Table.read(out.with_suffix(".ecsv")))
    stack, tab = outs["plain"]
    assert tab.meta["bands_in_file"] == "g,r,i" and tab.meta["pixel_scale"] == pytest.approx(SCALE, rel=1e-6)
    assert tab.meta["zero_point"] == [27.0] * 3 and tab.meta["gain_e_per_unit"] == [500.0] * 3
    for name in ("num", "name"):
        s, t = outs[name]
        np.testing.assert_array_equal(s, stack)
        for key in ("bands_in_file", "pixel_scale", "zero_point", "gain_e_per_unit"):
            assert t.meta[key] == tab.meta[key], (name, key)
        np.testing.assert_array_equal(t["theta_e"], tab["theta_e"])
    rc, _, err = cli("craft", "--onto", f"{files / 'ext.fits'}[7]", "--out", tmp_path / "x.npy")
    _one_line(rc, err, "no extension 7")


def test_psf_from_a_named_fits_extension(cli, tmp_path):
    psf = np.zeros((3, 9, 9))
    psf[:, 3:6, 3:6] = 1.0
    psf[1, 4, 4] = 3.0
    np.save(tmp_path / "k.npy", psf)
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(psf, name="PSF")]).writeto(tmp_path / "k.fits")
    stacks = []
    for arg in (tmp_path / "k.npy", f"{tmp_path / 'k.fits'}[1]", f"{tmp_path / 'k.fits'}[PSF]"):
        out = tmp_path / f"s{len(stacks)}.npy"
        rc, _, err = cli("craft", "--n", 3, "--field", 0, "--size", 32, "--psf", arg, "--out", out, "--float")
        assert rc == 0, err
        stacks.append(np.load(out))
    np.testing.assert_array_equal(stacks[1], stacks[0])
    np.testing.assert_array_equal(stacks[2], stacks[0])
    rc, _, err = cli("craft", "--n", 3, "--psf", f"{tmp_path / 'k.fits'}[2]", "--out", tmp_path / "x.npy")
    _one_line(rc, err, "no extension 2")


def test_preview_format_follows_the_suffix(cli, tmp_path):
    rc, _, err = cli("craft", "--preview", tmp_path / "p.jpg", "--size", 32)
    assert rc == 0, err
    assert (tmp_path / "p.jpg").read_bytes()[:3] == b"\xff\xd8\xff"  # JPEG, not PNG bytes
    rc, _, err = cli("craft", "--preview", tmp_path / "p.gif")
    _one_line(rc, err, "--preview: unknown figure format '.gif'")
    assert not (tmp_path / "p.gif").exists()


@pytest.mark.parametrize("command,option,stale", [("craft", "--preview", "(PNG)"),
                                                  ("scan", "--mosaic", "labelled PNG grid")])
def test_picture_help_names_the_formats(cli, command, option, stale):
    import re

    rc, out, _ = cli(command, "--help")
    text = re.sub(r"[\s│]+", " ", out)
    assert rc == 0 and option in text
    assert stale not in text and ".jpg" in text
