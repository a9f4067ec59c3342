"""FITS extensions (``file.fits[N]``, ``file.fits[EXTNAME]``, ``[EXTNAME,EXTVER]``) wherever a FITS
image is read, and HSC-style multi-extension files (IMAGE, MASK, VARIANCE): the image plane is
scanned, bad mask/variance pixels are NaN, a bad centre is flagged (issue 19).

Real files shipped with astropy where they fit (``test0.fits``: four SCI extensions; the
Rice-compressed DSS image of M13), made MEF files where none is shipped."""
from pathlib import Path

import astropy
import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from deepmine.inference.errors import InputError
from deepmine.inference.formats import open_stack, split_extension
from deepmine.inference.inputs.readers import (
    FLAG_BITS,
    FLAG_CENTER_MASKED,
    FLAG_EDGE,
    FLAG_NONFINITE,
    read_block,
    resolve_inputs,
)
from deepmine.inference.metadata import ModelMetadata

DATA = Path(astropy.__file__).parent / "io/fits"
TEST0 = DATA / "tests/data/test0.fits"  # PRIMARY + SCI,1..SCI,4, each 40×40 int16
M13 = DATA / "hdu/compressed/tests/data/m13_rice.fits"  # PRIMARY + COMPRESSED_IMAGE 300×300, TAN WCS, 1"/px
HSC_MP = {"MP_BAD": 0, "MP_SAT": 1, "MP_INTRP": 2, "MP_CR": 3, "MP_EDGE": 4, "MP_DETECTED": 5, "MP_NO_DATA": 8}


def _meta(c=1, size=40, scale=0.168):
    return ModelMetadata(architecture="toy", input_shape=[c, size, size], bands=["i", "r", "g"][:c] if c > 1 else ["r"],
                         pixel_scale=scale)


def _all(spec, meta):
    return read_block(spec, 0, spec.n, meta)


# ------------------------------------------------------------------ the parser
@pytest.mark.parametrize("given, expect", [
    ("a.fits[1]", ("a.fits", 1)), ("a.fits[0]", ("a.fits", 0)), ("d/a.fits.fz[SCI]", ("d/a.fits.fz", "SCI")),
    ("a.fits[sci, 3]", ("a.fits", ("SCI", 3))), ("a.fits", ("a.fits", None)), ("run[1].npy", ("run[1].npy", None)),
    ("a[1].fits", ("a[1].fits", None)),
])
def test_split_extension(given, expect):
    path, ext = split_extension(given)
    assert (str(path), ext) == expect


@pytest.mark.parametrize("bad", ["a.fits[SCI,x]", "a.fits[SCI,]", "a.fits[,2]"])
def test_split_extension_refuses_what_it_cannot_read(bad):
    with pytest.raises(InputError, match=r"cannot read the extension"):
        split_extension(bad)


# ------------------------------------------------------------------ real files shipped with astropy
def test_named_extensions_of_a_real_multi_extension_file():
    meta = _meta()
    with fits.open(TEST0) as hdul:
        truth = {k: hdul[k].data.astype(np.float32) for k in range(1, 5)}
    for name, k in [(f"{TEST0}[3]", 3), (f"{TEST0}[SCI,2]", 2), (f"{TEST0}[sci]", 1), (str(TEST0), 1)]:
        (spec,), _ = resolve_inputs([name], meta)
        assert spec.kind == "fits_cube" and spec.n == 1 and spec.paths == [str(TEST0)] and spec.name == name
        np.testing.assert_array_equal(_all(spec, meta).images[0, 0], truth[k])


def test_missing_or_non_image_extensions_are_one_line_errors():
    meta = _meta()
    with pytest.raises(InputError, match=r"test0\.fits\[7\]: no extension 7 .*it has 0 PRIMARY, 1 SCI"):
        resolve_inputs([f"{TEST0}[7]"], meta)
    with pytest.raises(InputError, match=r"no extension 'ERR'"):
        resolve_inputs([f"{TEST0}[ERR]"], meta)
    with pytest.raises(InputError, match=r"\[0\]: extension 0 holds no image data"):
        resolve_inputs([f"{TEST0}[0]"], meta)
    with pytest.raises(InputError, match=r"nothere\.fits: input not found"):
        resolve_inputs([str(TEST0.with_name("nothere.fits")) + "[1]"], meta)


def test_survey_image_named_by_extension_on_the_compressed_m13_image(tmp_path):
    """``m13_rice.fits[COMPRESSED_IMAGE]`` and ``[1]`` cut the same cutouts as the plain name."""
    meta = _meta(c=1, size=32, scale=1.0)
    Table({"x": [150.0, 10.2, 290.0], "y": [150.0, 200.7, 5.0]}).write(tmp_path / "src.ecsv")
    blocks = []
    for name in (str(M13), f"{M13}[COMPRESSED_IMAGE]", f"{M13}[1]"):
        (spec,), _ = resolve_inputs([name], meta, catalog=tmp_path / "src.ecsv")
        assert spec.paths == [str(M13)] and spec.options["hdus"] == [1]
        blocks.append(_all(spec, meta))
    for b in blocks[1:]:
        np.testing.assert_array_equal(b.images, blocks[0].images)
        assert b.flags.tolist() == blocks[0].flags.tolist() == [0] + [FLAG_EDGE | FLAG_NONFINITE] * 2
    (spec,), _ = resolve_inputs([f"{M13}[1]"], meta, tile=32, stride=100)
    assert spec.kind == "tiles" and spec.name == f"{M13}[1]" and spec.n == 16


def test_open_stack_takes_an_extension(tmp_path):
    cube = np.arange(2 * 3 * 8 * 8, dtype=np.float32).reshape(2, 3, 8, 8)
    fits.HDUList([fits.PrimaryHDU(np.zeros((4, 4, 4), np.float32)), fits.ImageHDU(cube, name="STACK")]).writeto(
        tmp_path / "c.fits")
    np.testing.assert_array_equal(open_stack(f"{tmp_path / 'c.fits'}[STACK]"), cube)
    np.testing.assert_array_equal(open_stack(f"{tmp_path / 'c.fits'}[1]"), cube)
    assert open_stack(tmp_path / "c.fits").shape == (4, 1, 4, 4)  # the first 3-D/4-D image, as before
    with pytest.raises(InputError, match=r"no extension 'NOPE'"):
        open_stack(f"{tmp_path / 'c.fits'}[NOPE]")
    from deepmine.inference.cli.common import existing_file  # the CLI's check of --cutouts, --positives...

    assert str(existing_file(f"{tmp_path / 'c.fits'}[STACK]", "cutout stack")).endswith("c.fits[STACK]")
    with pytest.raises(InputError, match=r"nope\.fits: cutout stack not found"):
        existing_file(f"{tmp_path / 'nope.fits'}[1]", "cutout stack")


# ------------------------------------------------------------------ HSC-style IMAGE / MASK / VARIANCE
def _mef(path, image, mask, variance, header=None, compress=False, mp=True):
    img_hdu = fits.CompImageHDU if compress else fits.ImageHDU
    mask_hdr = fits.Header([(f"HIERARCH {k}", v) for k, v in HSC_MP.items()] if mp else [])
    hdus = [fits.PrimaryHDU(), img_hdu(image.astype(np.float32), header=header, name="IMAGE"),
            img_hdu(mask.astype(np.int32), header=mask_hdr, name="MASK"),
            img_hdu(variance.astype(np.float32), header=header, name="VARIANCE")]
    fits.HDUList(hdus).writeto(path)
    return path


def test_directory_of_hsc_cutouts_masks_bad_pixels_and_flags_a_masked_centre(tmp_path):
    meta = _meta(c=1, size=16)
    rng = np.random.default_rng(0)
    d = tmp_path / "cut"
    d.mkdir()
    img = rng.normal(size=(4, 16, 16)).astype(np.float32)
    mask = np.zeros((4, 16, 16), np.int32)
    var = np.ones((4, 16, 16), np.float32)
    mask[0] = 1 << 5  # DETECTED everywhere: informational, not bad
    mask[1, 0, 0] = 1 << 1  # SAT in a corner
    mask[2, 7:9, 7:9] = 1 << 8  # NO_DATA on the centre (2×2 for an even size)
    var[3, 8, 8] = np.inf  # a bad variance at the centre
    for k in range(4):
        _mef(d / f"c{k}.fits", img[k], mask[k], var[k])
    (spec,), _ = resolve_inputs([d], meta)
    b = _all(spec, meta)
    assert b.images.dtype == np.float32
    np.testing.assert_array_equal(b.images[0, 0], img[0])
    assert np.isnan(b.images[1, 0, 0, 0]) and np.isfinite(b.images[1, 0]).sum() == 255
    assert np.isnan(b.images[2, 0, 7:9, 7:9]).all() and np.isnan(b.images[3, 0, 8, 8])
    assert b.flags.tolist() == [0, FLAG_NONFINITE, FLAG_NONFINITE | FLAG_CENTER_MASKED,
                                FLAG_NONFINITE | FLAG_CENTER_MASKED]
    assert FLAG_BITS["CENTER_MASKED"][0] == FLAG_CENTER_MASKED == 64


def test_cube_with_mask_planes_compressed_and_a_mask_without_plane_names(tmp_path):
    meta = _meta(c=1, size=16)
    img = np.random.default_rng(1).normal(size=(5, 16, 16)).astype(np.float32)
    mask = np.zeros((5, 16, 16), np.int32)
    mask[2, 8, 7] = 1 << 5  # DETECTED at the centre: not bad
    mask[3, 8, 7] = 1 << 3  # CR at the centre: bad
    var = np.ones_like(img)
    _mef(tmp_path / "c.fits", img, mask, var, compress=True)
    (spec,), _ = resolve_inputs([f"{tmp_path / 'c.fits'}[IMAGE]"], meta)
    assert spec.options["planes"] == {"mask": 2, "bits": 0b100001011, "variance": 3}
    b = read_block(spec, 1, 5, meta)
    assert b.flags.tolist() == [0, 0, FLAG_NONFINITE | FLAG_CENTER_MASKED, 0]
    with fits.open(tmp_path / "c.fits") as hdul:  # the float image is quantised by the compression
        np.testing.assert_array_equal(b.images[1, 0], hdul["IMAGE"].data[2])
    # a mask whose header names no planes: any non-zero value is bad
    _mef(tmp_path / "n.fits", img, mask, var, mp=False)
    (spec,), _ = resolve_inputs([tmp_path / "n.fits"], meta)
    assert _all(spec, meta).flags.tolist() == [0, 0] + [FLAG_NONFINITE | FLAG_CENTER_MASKED] * 2 + [0]
    # the mask plane scanned as the image has no companions
    (spec,), _ = resolve_inputs([f"{tmp_path / 'n.fits'}[MASK]"], meta)
    assert spec.options["planes"] is None


def _survey(tmp_path, compress=False):
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval, w.wcs.crpix, w.wcs.cdelt = [150.0, 2.0], [50.0, 50.0], [-0.168 / 3600, 0.168 / 3600]
    rng = np.random.default_rng(2)
    files, imgs = [], {}
    for band in "gir":  # out of order on purpose: FILTER cards put them right
        img = rng.normal(size=(100, 100)).astype(np.float32)
        mask = np.zeros((100, 100), np.int32)
        mask[:, :] |= 1 << 5
        if band == "r":
            mask[30, 30] |= 1 << 1  # SAT at the first source's centre (16×16 cutout around x=y=30 → centre 29.5..)
            mask[70, 60] |= 1 << 0  # BAD away from the second source's centre
        var = np.ones_like(img)
        var[40:42, 80:82] = np.nan
        hdr = w.to_header()
        hdr["FILTER"] = f"HSC-{band.upper()}"
        files.append(_mef(tmp_path / f"calexp-{band}.fits", img, mask, var, header=hdr, compress=compress))
        imgs[band] = fits.getdata(files[-1], "IMAGE")  # as stored (compression quantises floats)
    Table({"object_id": [1, 2, 3], "x": [30.0, 60.0, 80.4], "y": [30.0, 66.0, 40.6]}).write(tmp_path / "src.ecsv")
    return [f"{f}[IMAGE]" for f in files], imgs


@pytest.mark.parametrize("compress", [False, True])
def test_survey_calexps_with_mask_and_variance(tmp_path, compress):
    meta = _meta(c=3, size=16)
    files, imgs = _survey(tmp_path, compress)
    (spec,), _ = resolve_inputs(files, meta, catalog=tmp_path / "src.ecsv")
    assert [Path(p).name for p in spec.paths] == ["calexp-i.fits", "calexp-r.fits", "calexp-g.fits"]
    b = _all(spec, meta)
    # source 1: SAT at (30, 30) in r, inside the central 2×2 of a cutout starting at 22
    assert b.flags[0] == FLAG_NONFINITE | FLAG_CENTER_MASKED and np.isnan(b.images[0, 1, 8, 8])
    assert np.isfinite(b.images[0, [0, 2]]).all()
    # source 2: BAD pixel in r inside the cutout but off its centre
    assert b.flags[1] == FLAG_NONFINITE and np.isnan(b.images[1, 1, 70 - 58, 60 - 52])
    # source 3: NaN variance on its central pixels in every band
    assert b.flags[2] == FLAG_NONFINITE | FLAG_CENTER_MASKED
    np.testing.assert_array_equal(b.images[1, 0][~np.isnan(b.images[1, 0])],
                                  imgs["i"][58:74, 52:68][~np.isnan(b.images[1, 0])])


def test_scan_cli_with_extensions_and_masks(tmp_path, cli, make_classifier):
    """End to end: the catalogue carries CENTER_MASKED and its DM_FLAGS names it; a missing
    extension is one line on the command line, exit 2, no traceback."""
    from deepmine.inference.catalog.io import read_catalog

    model = make_classifier(tmp_path / "toy.onnx", shape=(3, 16, 16))
    files, _ = _survey(tmp_path)
    rc, out, err = cli("scan", *files, "--catalog", tmp_path / "src.ecsv", "--model", model,
                       "--accept-pixel-scale", "--out", tmp_path / "s.fits", "--format", "fits")
    assert rc == 0, err
    t = read_catalog(tmp_path / "s.fits")
    assert (t["flags"] & FLAG_CENTER_MASKED).tolist() == [64, 0, 64] and list(t["object_id"]) == [1, 2, 3]
    assert "CENTER_MASKED" in t.meta["DM_FLAGS"]
    rc, out, err = cli("scan", files[0].replace("[IMAGE]", "[SCI]"), *files[1:], "--catalog", tmp_path / "src.ecsv",
                       "--model", model, "--out", tmp_path / "x.fits")
    assert rc == 2 and "Traceback" not in err
    line = [x for x in err.splitlines() if x.strip()]
    assert len(line) == 1 and "calexp-g.fits[SCI]: no extension 'SCI'" in line[0]


def test_an_extension_input_is_never_written_over(tmp_path, cli, make_classifier):
    """``--out cube.fits`` with the input ``cube.fits[1]`` is the input file, --overwrite or not."""
    from deepmine.inference.atomic import check_outputs

    model = make_classifier(tmp_path / "toy.onnx", shape=(1, 16, 16), bands=("r",))
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.ones((4, 16, 16), np.float32))]).writeto(tmp_path / "c.fits")
    before = (tmp_path / "c.fits").read_bytes()
    rc, out, err = cli("scan", f"{tmp_path / 'c.fits'}[1]", "--model", model, "--out", tmp_path / "c.fits",
                       "--overwrite")
    assert rc == 2 and "would write over the input" in err and (tmp_path / "c.fits").read_bytes() == before
    with pytest.raises(InputError, match="would write over the input"):
        check_outputs([tmp_path / "c.fits"], [f"{tmp_path / 'c.fits'}[SCI,2]"], overwrite=True)


def test_inspect_shows_a_masked_cube_as_it_was_scanned(tmp_path, cli, make_classifier):
    """The grading page re-reads ``cube.fits[IMAGE]`` through the scan's own reader: the named
    extension, and the masked pixels NaN as the scanner saw them."""
    from deepmine.inference.inspect.app import InspectSession

    model = make_classifier(tmp_path / "toy.onnx", shape=(3, 16, 16))
    img = np.random.default_rng(5).normal(size=(8, 3, 16, 16)).astype(np.float32)
    mask = np.zeros(img.shape, np.int32)
    mask[:, 1, 7:9, 7:9] = 1 << 1  # SAT centres in r
    _mef(tmp_path / "c.fits", img, mask, np.ones_like(img))
    name = f"{tmp_path / 'c.fits'}[IMAGE]"
    rc, out, err = cli("scan", name, "--model", model, "--out", tmp_path / "s.fits", "--format", "fits")
    assert rc == 0, err
    s = InspectSession(tmp_path / "s.fits", top=3, grader="ann")
    (spec,), _ = resolve_inputs([name], _meta(c=3, size=16))
    scanned = _all(spec, _meta(c=3, size=16)).images
    for rank in range(3):
        i = int(s.rows[rank]["index"])
        np.testing.assert_array_equal(s.store.get(name, i), scanned[i])
        assert s.image(rank)[:4] == b"\x89PNG"
    assert np.isnan(scanned[:, 1, 7:9, 7:9]).all()
