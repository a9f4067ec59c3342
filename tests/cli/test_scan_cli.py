"""``deepmine scan`` end to end: catalogue, provenance, top list, mosaic, bad inputs."""

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from deepmine.inference.catalog.io import read_catalog
from deepmine.inference.model import load_model
from deepmine.inference.ranking import ordinality
from deepmine.inference.ranking.pool import ReferencePool
from deepmine.inference.scan.scanner import scan


@pytest.fixture(scope="module")
def toy(tmp_path_factory, make_classifier):
    return make_classifier(tmp_path_factory.mktemp("m") / "toy.onnx", shape=(3, 32, 32))


def test_cli_scan_writes_catalogue_with_provenance_top_and_mosaic(tmp_path, toy, cli, blobs, toy_logit):
    x = blobs(700, shape=(3, 32, 32), seed=7)
    np.save(tmp_path / "a.npy", x[:500])
    np.save(tmp_path / "b.npy", x[500:])
    rc, out, err = cli("scan", tmp_path / "a.npy", tmp_path / "b.npy", "--model", toy, "--out", tmp_path / "cat.fits",
                       "--batch-size", 64, "--shard-size", 100, "--threads", 1, "--top", "0.01",
                       "--mosaic", tmp_path / "top.png")
    assert rc == 0, err
    assert "scanned 700 objects" in err and "CPUExecutionProvider" in err
    expect = toy_logit(x / 255.0)
    for suffix in (".fits", ".ecsv", ".parquet"):
        t = read_catalog(tmp_path / f"cat{suffix}")
        assert t.colnames == ["id", "source", "index", "ra", "dec", "x", "y", "logit", "probability", "ordinality",
                              "flags"]
        assert t["id"].tolist() == list(range(700))
        assert t["index"].tolist() == list(range(500)) + list(range(200))
        assert set(t["source"]) == {str(tmp_path / "a.npy"), str(tmp_path / "b.npy")}
        np.testing.assert_allclose(t["logit"], expect, atol=1e-4)
        np.testing.assert_allclose(t["ordinality"], ordinality(np.asarray(t["logit"])))
        assert t.meta["DM_SHA"] == load_model(toy).sha256 and t.meta["DM_PROV"] == "CPUExecutionProvider"
        assert t.meta["DM_META"]["bands"] == ["i", "r", "g"] and t.meta["DM_BATCH"] == 64
        assert [i["name"] for i in t.meta["DM_INPUT"]] == [str(tmp_path / "a.npy"), str(tmp_path / "b.npy")]
        assert t["logit"].dtype == np.float32 and t["ordinality"].dtype == np.float64 and t["flags"].dtype == np.int32
    top = Table.read(tmp_path / "cat_top.ecsv")
    assert len(top) == 7 and top["id"].tolist() == np.argsort(-np.asarray(t["logit"]), kind="stable")[:7].tolist()
    assert not (tmp_path / "cat.parts").exists()
    from PIL import Image

    img = Image.open(tmp_path / "top.png")
    assert img.mode == "RGB" and img.size[0] > 7 * 128


def test_reference_pool_gives_ordinality_ref_and_ranks_the_top(tmp_path, toy, blobs):
    x = blobs(300, shape=(3, 32, 32), seed=8)
    np.save(tmp_path / "c.npy", x)
    pool = ReferencePool.from_scores(np.linspace(-1, 3, 1001))
    pool.save(tmp_path / "pool.fits")
    res = scan(tmp_path / "c.npy", toy, tmp_path / "out.ecsv", reference=tmp_path / "pool.fits", top=5,
               progress=False, formats=["ecsv"], batch_size=32)
    t = read_catalog(res.catalog)
    np.testing.assert_allclose(t["ordinality_ref"], pool.ordinality(np.asarray(t["logit"])))
    assert res.n_top == 5 and res.top.name == "out_top.ecsv"
    assert t.meta["DM_REF"].endswith("pool.fits")


def test_nan_blank_and_fits_inputs_are_flagged_not_fatal(tmp_path, toy, blobs):
    x = blobs(10, shape=(3, 32, 32), seed=9, dtype=np.float32)
    x[2, :, :4, :4] = np.nan
    x[3] = 0.0
    x[4, 1, 5, 5] = np.inf
    fits.PrimaryHDU(x).writeto(tmp_path / "cube.fits")
    res = scan([tmp_path / "cube.fits"], toy, tmp_path / "o.fits", formats=["fits"], progress=False)
    t = read_catalog(res.catalog)
    assert t["flags"].tolist() == [0, 0, 1, 2, 1, 0, 0, 0, 0, 0]
    logit = np.asarray(t["logit"])  # the blank cutout is not ranked: null scores, no ordinality
    assert np.isnan(logit[3]) and np.isnan(t["ordinality"][3]) and np.isfinite(np.delete(logit, 3)).all()


def test_keep_going_lists_skipped_files(tmp_path, toy, cli, blobs):
    np.save(tmp_path / "good.npy", blobs(20, shape=(3, 32, 32)))
    (tmp_path / "bad.npy").write_bytes(b"\x93NUMPY garbage")
    d = tmp_path / "dir"
    d.mkdir()
    for i in range(3):
        fits.PrimaryHDU(blobs(1, shape=(3, 32, 32), seed=i)[0]).writeto(d / f"c{i}.fits")
    (d / "c1.fits").write_bytes(b"SIMPLE  =                    T" + b" " * 100)
    args = ("scan", tmp_path / "good.npy", tmp_path / "bad.npy", d, "--model", toy, "--out", tmp_path / "k.ecsv",
            "--format", "ecsv")
    rc, out, err = cli(*args)
    assert rc == 2 and err.count("\n") == 1 and "bad.npy: not a readable .npy file" in err
    rc, out, err = cli(*args, "--keep-going")
    assert rc == 0, err
    assert "skipped 2 unreadable file(s)" in err and "bad.npy" in err and "c1.fits" in err
    t = read_catalog(tmp_path / "k.ecsv")
    assert len(t) == 22 and [s.rsplit("/", 1)[-1] for s in t["source"][-2:]] == ["c0.fits", "c2.fits"]
    assert sorted(p.rsplit("/", 1)[-1] for p, _ in t.meta["DM_SKIP"]) == ["bad.npy", "c1.fits"]


def test_cli_errors_are_one_line_naming_the_option_or_file(tmp_path, toy, cli):
    np.save(tmp_path / "a.npy", np.zeros((4, 3, 16, 16), np.uint8))
    rc, out, err = cli("scan", tmp_path / "a.npy", "--model", toy, "--out", tmp_path / "o.fits")
    assert rc == 2 and err.count("\n") == 1 and "the model expects cutouts 3×32×32" in err
    np.save(tmp_path / "b.npy", np.zeros((4, 3, 32, 32), np.uint8))
    for extra, msg in [(("--top", "-3"), "--top: must be positive"),
                       (("--format", "xml"), "--format: expected a comma-separated list"),
                       (("--device", "tpu"), "--device: expected one of auto, cpu, cuda"),
                       (("--reference", tmp_path / "nope.fits"), "nope.fits: reference pool not found"),
                       (("--out", tmp_path / "no" / "dir.fits"), "folder"),
                       (("--stretch", "log"), "--stretch")]:
        args = ["scan", tmp_path / "b.npy", "--model", toy, "--out", tmp_path / "o.fits", *extra]
        rc, out, err = cli(*args)
        assert rc == 2 and msg in err and err.count("\n") == 1, (extra, err)
    rc, out, err = cli("scan", tmp_path / "b.npy", "--model", tmp_path / "m.onnx", "--out", tmp_path / "o.fits")
    assert rc == 2 and "m.onnx: model file not found" in err


def test_survey_scan_from_cli_with_tiles_and_catalogue(tmp_path, toy, cli):
    from astropy.wcs import WCS

    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval, w.wcs.crpix, w.wcs.cdelt = [10.0, -5.0], [60.0, 60.0], [-0.168 / 3600, 0.168 / 3600]
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:120, :120]
    blob = 30 * np.exp(-((yy - 70) ** 2 + (xx - 40) ** 2) / 20.0)
    files = []
    for b in "irg":
        p = tmp_path / f"{b}.fits"
        fits.PrimaryHDU((rng.normal(size=(120, 120)) + blob).astype(np.float32), header=w.to_header()).writeto(p)
        files.append(p)
    ra, dec = w.all_pix2world([40.0, 100.0, 5.0], [70.0, 20.0, 118.0], 0)
    Table({"ra": ra, "dec": dec}).write(tmp_path / "src.ecsv")
    rc, out, err = cli("scan", *files, "--catalog", tmp_path / "src.ecsv", "--model", toy, "--out",
                       tmp_path / "s.ecsv", "--format", "ecsv", "--mosaic", tmp_path / "s.png", "--top", "3")
    assert rc == 0, err
    t = read_catalog(tmp_path / "s.ecsv")
    np.testing.assert_allclose(t["x"], [40, 100, 5], atol=1e-6)
    assert t["logit"].argmax() == 0 and t["flags"].tolist() == [0, 0, 5]
    rc, out, err = cli("scan", *files, "--tile", 32, "--stride", 16, "--model", toy, "--out", tmp_path / "t.ecsv",
                       "--format", "ecsv")
    assert rc == 0, err
    t = read_catalog(tmp_path / "t.ecsv")
    assert len(t) == 7 * 7
    inside = t[(t["flags"] & 4) == 0]  # padded edge tiles are flagged (and score oddly with this toy model)
    assert len(inside) == 6 * 6
    best = inside[np.argmax(inside["logit"])]
    assert abs(best["x"] - 40) <= 8 and abs(best["y"] - 70) <= 8 and np.isfinite(best["ra"])


@pytest.mark.parametrize("n", [0, 1, 1003])
def test_chunked_catalogue_writing_round_trips_every_format(tmp_path, n):
    from deepmine.inference.catalog.io import write_catalog

    rng = np.random.default_rng(n)
    t = Table({"id": np.arange(n), "source": np.array(["a.npy", "dir/b.fits"])[np.arange(n) % 2],
               "index": np.arange(n), "ra": rng.random(n), "logit": rng.random(n).astype(np.float32),
               "probability": rng.random(n).astype(np.float32), "ordinality": rng.random(n),
               "flags": (np.arange(n) % 5).astype(np.int32)})
    if n:
        t["ra"][0] = np.nan
    t.meta.update({"DM_SHA": "sha256:" + "a" * 64, "DM_META": {"template": [0.5] * 300}, "DM_VERS": "0.1"})
    paths = write_catalog(t, tmp_path / "c.fits", ["fits", "ecsv", "parquet"], chunk=100)
    with fits.open(paths["fits"]) as hdul:
        hdul.verify("exception")
    for path in paths.values():
        r = read_catalog(path)
        assert r.colnames == t.colnames and len(r) == n
        for c in t.colnames:
            assert r[c].dtype.kind == t[c].dtype.kind, (path, c)
            np.testing.assert_array_equal(np.asarray(r[c]), np.asarray(t[c]))
        assert r.meta["DM_META"] == {"template": [0.5] * 300} and r.meta["DM_SHA"] == t.meta["DM_SHA"]


def test_read_catalog_errors(tmp_path):
    from deepmine.inference.errors import InputError

    with pytest.raises(InputError, match="nope.fits: catalogue not found"):
        read_catalog(tmp_path / "nope.fits")
    (tmp_path / "e.ecsv").write_text("")
    with pytest.raises(InputError, match="e.ecsv: catalogue is empty"):
        read_catalog(tmp_path / "e.ecsv")
    (tmp_path / "bad.fits").write_bytes(b"garbage" * 100)
    with pytest.raises(InputError, match="bad.fits: not a readable catalogue"):
        read_catalog(tmp_path / "bad.fits")
    Table({"a": [1, 2]}).write(tmp_path / "other.ecsv")
    with pytest.raises(InputError, match="other.ecsv: not a deepmine scan catalogue \\(no column id"):
        read_catalog(tmp_path / "other.ecsv")


def test_scan_runs_with_torch_blocked(tmp_path, toy, blobs, torch_blocker):
    import subprocess
    import sys
    import textwrap

    np.save(tmp_path / "a.npy", blobs(40, shape=(3, 32, 32)))
    code = torch_blocker + textwrap.dedent(f"""
        import sys
        from deepmine.inference.cli.app import main
        rc = main(["scan", {str(tmp_path / 'a.npy')!r}, "--model", {str(toy)!r}, "--out", {str(tmp_path / 'o.fits')!r},
                   "--mosaic", {str(tmp_path / 'm.png')!r}, "--top", "4"])
        assert "torch" not in sys.modules
        sys.exit(rc)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "DEEPMINE_NO_PROGRESS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(read_catalog(tmp_path / "o.fits")) == 40 and (tmp_path / "m.png").stat().st_size > 0
