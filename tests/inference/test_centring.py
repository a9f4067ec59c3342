"""One centring convention (readers module docstring, docs/formats.md): a cutout's centre is the
pixel coordinate ((W−1)/2, (H−1)/2); around a catalogue position the survey reader takes the
nearest-centred cutout exactly as astropy's Cutout2D does — checked against Cutout2D on a real
tile-compressed image with a WCS, and by injecting crafted lenses into a survey image."""
from pathlib import Path

import astropy
import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import Cutout2D
from astropy.table import Table
from astropy.wcs import WCS

from deepmine.inference.errors import InputError
from deepmine.inference.inputs.readers import (
    FLAG_EDGE,
    FLAG_OFF_IMAGE,
    cutout_origin,
    read_block,
    resolve_inputs,
    wcs_pixel_scale,
)
from deepmine.inference.metadata import ModelMetadata
from deepmine.inference.scan.layout import InputLayout

#: a real image (DSS plate of M13, 1"/px, TAN WCS), Rice tile-compressed, shipped with astropy
M13 = Path(astropy.__file__).parent / "io/fits/hdu/compressed/tests/data/m13_rice.fits"


def _meta(size, pixel_scale):
    return ModelMetadata(architecture="test", input_shape=[3, size, size], bands=["i", "r", "g"],
                         pixel_scale=pixel_scale, preprocessing={"kind": "percentile", "low": 0.5, "high": 99.5})


def _read_all(spec, meta):
    return read_block(spec, 0, spec.n, meta)


@pytest.mark.parametrize("size", [16, 15])
def test_survey_cutouts_equal_cutout2d_on_a_real_compressed_image(tmp_path, size):
    assert M13.exists()
    with fits.open(M13) as hdul:
        assert isinstance(hdul[1], fits.CompImageHDU)
        data = hdul[1].data.astype(np.float32)
        wcs = WCS(hdul[1].header)
    assert wcs_pixel_scale(fits.getheader(M13, 1)) == pytest.approx(1.0, rel=0.01)
    ny, nx = data.shape
    rng = np.random.default_rng(3)
    k = 200
    # random sub-pixel positions, exact ties (integers and half-integers), and edge positions
    x = np.concatenate([rng.uniform(10, nx - 10, k), rng.integers(10, nx - 10, 40).astype(float),
                        rng.integers(10, nx - 10, 40) + 0.5, [0.2, nx - 1.4, 3.0]])
    y = np.concatenate([rng.uniform(10, ny - 10, k), rng.integers(10, ny - 10, 40).astype(float),
                        rng.integers(10, ny - 10, 40) + 0.5, [5.5, ny - 2.0, 0.0]])
    Table({"x": x, "y": y}).write(tmp_path / "xy.ecsv")
    meta = _meta(size, 1.0)
    (spec,), _ = resolve_inputs([M13] * 3, meta, catalog=tmp_path / "xy.ecsv")
    assert spec.options["pixel_scale"] == pytest.approx(1.0, rel=0.01)
    block = _read_all(spec, meta)
    for i in range(len(x)):
        ref = Cutout2D(data, (x[i], y[i]), (size, size), mode="partial", fill_value=np.nan).data
        np.testing.assert_array_equal(block.images[i, 0], ref, err_msg=f"position {x[i]}, {y[i]}")
        # the source lies within (-1/2, +1/2] pixel of the cutout centre ((W-1)/2, (H-1)/2)
        dx = x[i] - cutout_origin(x[i], size) - (size - 1) / 2
        assert -0.5 < dx <= 0.5
    assert all(block.flags[-3:] & FLAG_EDGE)
    # the same through RA/Dec and the image's WCS (away from exact ties, where floating point
    # round trips may land either side)
    ra, dec = wcs.all_pix2world(x[:k], y[:k], 0)
    Table({"ra": ra, "dec": dec}).write(tmp_path / "radec.ecsv")
    (spec2,), _ = resolve_inputs([M13] * 3, meta, catalog=tmp_path / "radec.ecsv")
    np.testing.assert_array_equal(_read_all(spec2, meta).images, block.images[:k])


def _survey_with(image, tmp_path, pixel_scale=0.168, bands="irg"):
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = [image.shape[-1] / 2, image.shape[-2] / 2]
    w.wcs.cdelt = [-pixel_scale / 3600, pixel_scale / 3600]
    paths = []
    for c, b in enumerate(bands):
        h = w.to_header()
        h["FILTER"] = f"HSC-{b.upper()}"
        p = tmp_path / f"sky_{b}.fits"
        fits.PrimaryHDU(image[c].astype(np.float32), header=h).writeto(p)
        paths.append(p)
    return paths, w


def test_injected_crafted_lenses_come_back_as_crafted(tmp_path):
    """Crafted lenses (flux, before normalisation) pasted into a survey image, catalogued at their
    centre plus a random sub-pixel error: the scanner's cutouts are the crafted cutouts."""
    from deepmine.lenscrafter import craft_lenses, sample_lens_params

    n, size = 12, 64
    lenses = craft_lenses(sample_lens_params(n, seed=4), seed=4, output="float32", field=0)
    sky = np.zeros((3, 3 * size, 4 * size), np.float32)
    rng = np.random.default_rng(8)
    xs, ys = [], []
    for i in range(n):
        y0, x0 = (i // 4) * size, (i % 4) * size
        sky[:, y0:y0 + size, x0:x0 + size] = lenses[i]
        # the lens centre is at ((W-1)/2, (H-1)/2) of its cutout; a catalogue is off by < 1/2 px
        xs.append(x0 + (size - 1) / 2 + rng.uniform(-0.4999, 0.5))
        ys.append(y0 + (size - 1) / 2 + rng.uniform(-0.4999, 0.5))
    paths, w = _survey_with(sky, tmp_path)
    ra, dec = w.all_pix2world(np.array(xs), np.array(ys), 0)
    Table({"ra": ra, "dec": dec}).write(tmp_path / "cat.ecsv")
    meta = _meta(size, 0.168)
    (spec,), _ = resolve_inputs(paths, meta, catalog=tmp_path / "cat.ecsv")
    block = _read_all(spec, meta)
    np.testing.assert_allclose(block.images, lenses, rtol=0, atol=1e-3)
    assert not block.flags.any()


def test_positions_off_the_image_or_not_finite_are_flagged(tmp_path):
    paths, _ = _survey_with(np.random.default_rng(1).normal(size=(3, 80, 90)), tmp_path)
    Table({"x": [40.0, np.nan, 500.0, -30.0, 88.0], "y": [40.0, 10.0, 40.0, 40.0, 79.0]}).write(tmp_path / "c.ecsv")
    meta = _meta(16, 0.168)
    (spec,), _ = resolve_inputs(paths, meta, catalog=tmp_path / "c.ecsv")
    flags = _read_all(spec, meta).flags
    assert [bool(f & FLAG_OFF_IMAGE) for f in flags] == [False, True, True, True, False]
    assert flags[4] & FLAG_EDGE  # partly off the edge: still ranked, flagged


@pytest.mark.parametrize("scale", [7.0, 1.0, 0.18])
def test_pixel_scale_is_checked_against_the_model(tmp_path, scale):
    paths, _ = _survey_with(np.random.default_rng(1).normal(size=(3, 80, 90)), tmp_path, pixel_scale=scale)
    Table({"x": [40.0], "y": [40.0]}).write(tmp_path / "c.ecsv")
    meta = _meta(16, 0.168)
    if abs(scale / 0.168 - 1) > 0.05:
        with pytest.raises(InputError, match=rf"sky_i.fits: pixel scale {scale:.4g}\"/px .* model's 0.168\"/px"):
            resolve_inputs(paths, meta, catalog=tmp_path / "c.ecsv")
        with pytest.raises(InputError, match="--accept-pixel-scale"):
            resolve_inputs(paths, meta, tile=16)
    (spec,), _ = resolve_inputs(paths, meta, catalog=tmp_path / "c.ecsv", check_pixel_scale=False)
    assert spec.options["pixel_scale"] == pytest.approx(scale, rel=1e-6)


def test_pixel_scale_of_a_directory_of_cutouts_is_checked(tmp_path):
    d = tmp_path / "cutouts"
    d.mkdir()
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.cdelt = [-0.5 / 3600, 0.5 / 3600]
    fits.PrimaryHDU(np.zeros((3, 16, 16), np.float32), header=w.to_header()).writeto(d / "a.fits")
    with pytest.raises(InputError, match="a.fits: pixel scale 0.5\"/px"):
        resolve_inputs([d], _meta(16, 0.168))
    (spec,), _ = resolve_inputs([d], _meta(16, 0.168), check_pixel_scale=False)
    assert spec.options["pixel_scale"] == pytest.approx(0.5)


def test_unusable_positions_are_not_ranked_in_any_format(tmp_path, make_classifier):
    """Rows off the image or with a NaN position get null scores in FITS (NaN), ECSV (empty) and
    Parquet (null), and take no part in anyone's ordinality; `rank` and `--top` skip them."""
    pytest.importorskip("onnx")
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    from scipy.stats import rankdata

    from deepmine.inference.catalog.io import read_catalog
    from deepmine.inference.ranking.scorefile import read_scores
    from deepmine.inference.scan.scanner import scan

    rng = np.random.default_rng(2)
    sky = rng.normal(size=(3, 120, 160)).astype(np.float32)
    yy, xx = np.mgrid[:120, :160]
    xs = list(rng.uniform(10, 150, 30))
    ys = list(rng.uniform(10, 110, 30))
    for x, y, a in zip(xs, ys, rng.uniform(0, 20, 30)):
        sky += a * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 4.0)
    xs += [np.nan, 400.0, -50.0, 20.0]
    ys += [30.0, 30.0, 60.0, np.inf]
    paths, _ = _survey_with(sky, tmp_path)
    Table({"x": xs, "y": ys}).write(tmp_path / "cat.ecsv")
    model = make_classifier(tmp_path / "m.onnx", shape=(3, 16, 16))
    res = scan(paths, model, tmp_path / "out.fits", layout=InputLayout(catalog=tmp_path / "cat.ecsv"),
               formats=["fits", "ecsv", "parquet"], top=5, progress=None)
    assert res.n_unranked == 4 and any("not ranked" in n for n in res.notes)
    t = read_catalog(tmp_path / "out.fits")
    off = (np.asarray(t["flags"]) & FLAG_OFF_IMAGE) != 0
    assert off.tolist() == [False] * 30 + [True] * 4
    for col in ("logit", "probability", "ordinality"):
        assert np.isnan(np.asarray(t[col])[off]).all() and np.isfinite(np.asarray(t[col])[~off]).all()
    logit = np.asarray(t["logit"])[~off].astype(np.float64)
    np.testing.assert_allclose(np.asarray(t["ordinality"])[~off], rankdata(logit) / logit.size)
    raw = Table.read(tmp_path / "out.ecsv", format="ascii.ecsv")
    assert raw["logit"].mask[off].all() and not raw["logit"].mask[~off].any()
    assert np.isnan(np.asarray(t["ra"])[-1])  # no sky position made up for a non-finite pixel position
    assert pq.read_table(tmp_path / "out.parquet").column("ordinality").null_count == 4
    np.testing.assert_array_equal(read_catalog(tmp_path / "out.ecsv")["logit"][~off], t["logit"][~off])
    assert read_scores(tmp_path / "out.ecsv").size == 30  # what `deepmine rank` ranks
    top = Table.read(res.top, format="ascii.ecsv")
    assert len(top) == 5 and not (np.asarray(top["flags"]) & FLAG_OFF_IMAGE).any()
