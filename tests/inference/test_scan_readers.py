"""deepmine.inference.inputs.readers: every kind of scanner input, bad inputs, flags."""
import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from deepmine.inference.errors import InputError
from deepmine.inference.inputs.readers import (
    FLAG_BAND_BLANK,
    FLAG_BLANK,
    FLAG_EDGE,
    FLAG_NONFINITE,
    FLAG_OFF_IMAGE,
    cutout_flags,
    read_block,
    resolve_inputs,
)
from deepmine.inference.metadata import ModelMetadata

META1 = ModelMetadata(architecture="toy", input_shape=[1, 16, 16], bands=["r"])


def test_npy_stack_is_read_in_blocks_exactly(tmp_path, reader_meta):
    x = np.random.default_rng(0).integers(0, 256, (50, 3, 16, 16)).astype(np.uint8)
    np.save(tmp_path / "a.npy", x)
    (spec,), skipped = resolve_inputs([tmp_path / "a.npy"], reader_meta)
    assert spec.kind == "npy" and spec.n == 50 and not skipped
    b = read_block(spec, 7, 23, reader_meta)
    assert b.images.dtype == np.uint8
    np.testing.assert_array_equal(b.images, x[7:23])
    np.testing.assert_array_equal(b.index, np.arange(7, 23))
    assert np.isnan(b.ra).all() and b.source == [str(tmp_path / "a.npy")] * 16


def test_npy_one_band_stack_and_float_dtypes(tmp_path, read_all):
    x = np.random.default_rng(1).normal(size=(9, 16, 16)).astype(">f8")
    np.save(tmp_path / "b.npy", x)
    (spec,), _ = resolve_inputs([tmp_path / "b.npy"], META1)
    b = read_all(spec, META1)
    assert b.images.dtype == np.float32 and b.images.shape == (9, 1, 16, 16)
    np.testing.assert_allclose(b.images[:, 0], x, rtol=1e-6)


def test_fits_cube_respects_bzero_bscale_and_reads_sections(tmp_path, reader_meta, read_all):
    vals = np.random.default_rng(2).uniform(-50, 50, (6, 3, 16, 16)).astype(np.float32)
    hdu = fits.PrimaryHDU(vals.copy())
    hdu.scale("int16", bscale=0.01, bzero=3.0)
    hdu.writeto(tmp_path / "cube.fits")
    (spec,), _ = resolve_inputs([tmp_path / "cube.fits"], reader_meta)
    assert spec.kind == "fits_cube" and spec.n == 6
    b = read_block(spec, 2, 5, reader_meta)
    assert b.images.dtype == np.float32
    np.testing.assert_allclose(b.images, vals[2:5], atol=0.006)
    # N×H×W cube for a one-band model, and a single C×H×W cutout
    fits.PrimaryHDU(np.arange(4 * 256, dtype=np.int16).reshape(4, 16, 16)).writeto(tmp_path / "one.fits")
    (spec1,), _ = resolve_inputs([tmp_path / "one.fits"], META1)
    assert spec1.n == 4 and read_all(spec1, META1).images.shape == (4, 1, 16, 16)
    fits.PrimaryHDU(vals[0]).writeto(tmp_path / "single.fits")
    (spec2,), _ = resolve_inputs([tmp_path / "single.fits"], reader_meta)
    assert spec2.n == 1
    np.testing.assert_array_equal(read_all(spec2).images[0], vals[0])


def test_directory_of_fits_cutouts_and_a_corrupt_one(tmp_path, reader_meta, read_all):
    d = tmp_path / "cut"
    d.mkdir()
    x = np.random.default_rng(3).normal(size=(4, 3, 16, 16)).astype(np.float32)
    for i in range(4):
        fits.PrimaryHDU(x[i]).writeto(d / f"c{i}.fits")
    (d / "c2.fits").write_bytes((d / "c2.fits").read_bytes()[:3000])  # truncated
    (spec,), _ = resolve_inputs([d], reader_meta)
    assert spec.kind == "fits_dir" and spec.n == 4
    with pytest.raises(InputError, match="c2.fits"):
        read_all(spec)
    b = read_all(spec, keep_going=True)
    assert b.valid.tolist() == [True, True, False, True] and b.skipped[0][0].endswith("c2.fits")
    np.testing.assert_array_equal(b.images[3], x[3])
    assert b.source[1].endswith("c1.fits") and b.index.tolist() == [0, 0, 0, 0]


def test_mismatched_inputs_are_refused_saying_what_the_model_expects(tmp_path, reader_meta):
    np.save(tmp_path / "small.npy", np.zeros((3, 3, 8, 8), np.uint8))
    with pytest.raises(InputError, match=r"small.npy: holds an array of shape \(3, 3, 8, 8\), but the model expects "
                                         r"cutouts 3×16×16 .*bands i, r, g"):
        resolve_inputs([tmp_path / "small.npy"], reader_meta)
    np.save(tmp_path / "bands.npy", np.zeros((3, 5, 16, 16), np.uint8))
    with pytest.raises(InputError, match="bands.npy: .*expects cutouts 3×16×16"):
        resolve_inputs([tmp_path / "bands.npy"], reader_meta, keep_going=True)  # a mismatch is never skipped
    np.save(tmp_path / "cplx.npy", np.zeros((3, 3, 16, 16), np.complex64))
    with pytest.raises(InputError, match="cplx.npy: cannot scan pixels of dtype complex64"):
        resolve_inputs([tmp_path / "cplx.npy"], reader_meta)
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(InputError, match="x.txt: unknown input type"):
        resolve_inputs([tmp_path / "x.txt"], reader_meta)


def test_truncated_corrupt_and_missing_files_name_the_file(tmp_path, reader_meta):
    np.save(tmp_path / "t.npy", np.zeros((10, 3, 16, 16), np.uint8))
    data = (tmp_path / "t.npy").read_bytes()
    (tmp_path / "t.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="t.npy: truncated .npy file"):
        resolve_inputs([tmp_path / "t.npy"], reader_meta)
    (tmp_path / "bad.fits").write_bytes(b"SIMPLE  = garbage" * 10)
    with pytest.raises(InputError, match="bad.fits: "):
        resolve_inputs([tmp_path / "bad.fits"], reader_meta)
    with pytest.raises(InputError, match="nope.npy: input not found"):
        resolve_inputs([tmp_path / "nope.npy"], reader_meta)
    np.save(tmp_path / "ok.npy", np.zeros((2, 3, 16, 16), np.uint8))
    specs, skipped = resolve_inputs([tmp_path / "t.npy", tmp_path / "ok.npy", tmp_path / "bad.fits"], reader_meta,
                                    keep_going=True)
    assert [s.n for s in specs] == [2]
    assert [p.rsplit("/", 1)[-1] for p, _ in skipped] == ["t.npy", "bad.fits"]


def test_flags_for_nonfinite_blank_and_partly_blank_cutouts():
    x = np.random.default_rng(4).normal(size=(4, 3, 16, 16)).astype(np.float32)
    x[1, 0, 3, 3] = np.nan
    x[1, 2, 0, 0] = np.inf
    x[2] = 7.0
    x[3, 1] = np.nan
    f = cutout_flags(x)
    assert f.tolist() == [0, FLAG_NONFINITE, FLAG_BLANK, FLAG_NONFINITE | FLAG_BAND_BLANK]
    assert cutout_flags(np.zeros((2, 3, 16, 16), np.uint8)).tolist() == [FLAG_BLANK] * 2


@pytest.mark.parametrize("compressed", [False, True])
def test_survey_cutouts_around_catalogued_sources(tmp_path, compressed, reader_meta, read_all, survey_images):
    imgs, paths, w = survey_images(tmp_path, compressed)
    xs = np.array([30.2, 2.3, 60.4, 99.0, 500.0])  # no exact ties: RA/Dec round trips may land either side
    ys = np.array([40.3, 5.3, 20.6, 79.0, 500.0])
    ra, dec = w.all_pix2world(xs, ys, 0)
    Table({"RA": ra, "DEC": dec, "name": ["a", "b", "c", "d", "e"]}).write(tmp_path / "src.ecsv")
    # files given in g, r, i order: the FILTER cards put them in the model's i, r, g order
    (spec,), _ = resolve_inputs([paths["g"], paths["r"], paths["i"]], reader_meta, catalog=tmp_path / "src.ecsv")
    assert spec.kind == "survey" and spec.paths == [str(paths[b]) for b in "irg"]
    b = read_all(spec)
    np.testing.assert_allclose(b.x, xs, atol=1e-6)
    np.testing.assert_allclose(b.ra, ra)
    # nearest-centred (Cutout2D): first pixel ceil(x - W/2) (tests/inference/test_centring.py has the ties)
    np.testing.assert_array_equal(b.images[0, 0], imgs["i"][33:49, 23:39])
    np.testing.assert_array_equal(b.images[2, 2], imgs["g"][13:29, 53:69])  # x 60.4 → 53, y 20.6 → 13
    assert b.flags[0] == 0 and b.flags[2] == 0
    assert b.flags[1] & FLAG_EDGE and b.flags[1] & FLAG_NONFINITE and not b.flags[1] & FLAG_BLANK
    assert np.isnan(b.images[1, 0, 0, 0]) and b.images[1, 0, 15, 15] == imgs["i"][13, 10]
    assert b.flags[4] & FLAG_OFF_IMAGE
    # x/y columns instead of RA/Dec
    Table({"px": xs, "py": ys}).write(tmp_path / "xy.fits")
    (spec2,), _ = resolve_inputs([paths["i"], paths["r"], paths["g"]], reader_meta, catalog=tmp_path / "xy.fits",
                                 x_col="px", y_col="py")
    np.testing.assert_array_equal(read_all(spec2).images[:4], b.images[:4])


def test_survey_option_errors(tmp_path, reader_meta, survey_images):
    imgs, paths, w = survey_images(tmp_path)
    Table({"ra": [150.0], "dec": [2.0]}).write(tmp_path / "s.ecsv")
    files = [paths[b] for b in "irg"]
    with pytest.raises(InputError, match="--x-col: no column 'px' \\(has ra, dec\\)"):
        resolve_inputs(files, reader_meta, catalog=tmp_path / "s.ecsv", x_col="px", y_col="py")
    with pytest.raises(InputError, match="got 2 image file\\(s\\), the model expects 3 band\\(s\\) \\(i, r, g\\)"):
        resolve_inputs(files[:2], reader_meta, catalog=tmp_path / "s.ecsv")
    with pytest.raises(InputError, match="missing.ecsv: source catalogue not found"):
        resolve_inputs(files, reader_meta, catalog=tmp_path / "missing.ecsv")
    with pytest.raises(InputError, match="--catalog and --tile/--stride exclude each other"):
        resolve_inputs(files, reader_meta, catalog=tmp_path / "s.ecsv", tile=16)
    with pytest.raises(InputError, match="--tile: the model takes 16×16 cutouts"):
        resolve_inputs(files, reader_meta, tile=32)


def test_sliding_tiles_cover_the_image_and_pad_the_last_row(tmp_path, reader_meta, read_all, survey_images):
    imgs, paths, w = survey_images(tmp_path, ny=40, nx=50)
    (spec,), _ = resolve_inputs([paths[b] for b in "irg"], reader_meta, stride=12)
    # y starts 0, 12, 24 (24+16=40 fits); x starts 0, 12, 24, 36 (36+16=52 > 50: padded)
    assert spec.kind == "tiles" and spec.options["grid"] == [3, 4] and spec.n == 12
    b = read_all(spec)
    np.testing.assert_array_equal(b.images[5, 1], imgs["r"][12:28, 12:28])
    assert b.x[5] == 12 + 7.5 and b.y[5] == 12 + 7.5
    edge = (b.flags & FLAG_EDGE) > 0
    assert edge.tolist() == [False, False, False, True] * 3
    ra, dec = w.all_pix2world([b.x[5]], [b.y[5]], 0)
    assert b.ra[5] == pytest.approx(ra[0]) and b.dec[5] == pytest.approx(dec[0])
