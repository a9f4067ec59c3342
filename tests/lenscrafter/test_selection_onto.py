"""``deepmine selection --onto``: the selection function measured on real deflectors (issue 21).

The deflectors are LensCrafter ellipticals in flux units (zero point 27; many galaxies quickly,
as the issue asks where a test needs many), stored as a FITS cube with a WCS, ``BANDS`` and
calibration cards. The model is the bundled one.
"""
import json

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from deepmine.inference.model import get_model
from deepmine.lenscrafter import craft_negatives, paint_arcs
from deepmine.lenscrafter.paint.onto import read_deflectors
from deepmine.lenscrafter.selection.grid import SelectionGrid, make_axis
from deepmine.lenscrafter.selection.measure import run_cells
from deepmine.lenscrafter.selection.onto import default_onto_grid, known_onto_parameters, prepare_onto

N = 80
GRID = """
per_cell = 3
others = "prior"
[axes.theta_e]
range = [0.8, 2.4]
bins = 2
[axes.m_arc]
range = [21.0, 24.0]
bins = 2
[axes.m_dfl]
range = [17.0, 23.0]
bins = 3
"""


def _header(scale=0.168, **cards):
    h = fits.Header()
    h["CTYPE1"], h["CTYPE2"] = "RA---TAN", "DEC--TAN"
    h["CRVAL1"], h["CRVAL2"] = 150.1, 2.2
    h["CRPIX1"], h["CRPIX2"] = 32.5, 32.5
    h["CDELT1"], h["CDELT2"] = -scale / 3600.0, scale / 3600.0
    h["BANDS"] = "i,r,g"
    h.update(cards)
    return h


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("selonto")
    imgs, _ = craft_negatives(N, seed=4, kinds=["elliptical"], output="float32", field=0)
    fits.PrimaryHDU(imgs, header=_header(MAGZERO=27.0, GAIN=3.0)).writeto(d / "dfl.fits")
    fits.PrimaryHDU(imgs[:, :, 8:-8, 8:-8], header=_header(MAGZERO=27.0, GAIN=3.0)).writeto(d / "small.fits")
    (d / "grid.toml").write_text(GRID)
    (d / "bad.toml").write_text(GRID.replace("[axes.m_dfl]", "[axes.m_fg]"))
    return d


def _one_line(rc, err, needle):
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert rc == 2, err
    assert len(lines) == 1 and needle in lines[0], err


def test_cells_paint_deflectors_from_their_own_bins(files):
    src = prepare_onto(files / "dfl.fits")
    grid = SelectionGrid([make_axis("m_dfl", 17.0, 23.0, 3, known=known_onto_parameters()),
                          make_axis("q_dfl", 0.0, 1.0, 2, known=known_onto_parameters())], per_cell=5)
    cells = np.arange(grid.n_cells)
    chosen = src.choose(grid, cells, 5, seed=1)
    m, q = src.properties["m_dfl"], src.properties["q_dfl"]
    idx = grid.unravel(cells)
    e_m, e_q = grid.axes[0].edges, grid.axes[1].edges
    for i in cells:
        ok = ((m >= e_m[idx[i, 0]]) & (m < e_m[idx[i, 0] + 1]) & (q >= e_q[idx[i, 1]]) & (q < e_q[idx[i, 1] + 1]))
        if ok.any():
            assert np.all(ok[chosen[i]]), i
        else:
            assert np.all(chosen[i] == -1), i
    assert (chosen >= 0).any() and (chosen == -1).any()  # some cells hold deflectors, some are empty
    # the same cell draws the same deflectors whatever else is asked for
    np.testing.assert_array_equal(src.choose(grid, cells[2:4], 5, seed=1), chosen[2:4])


def test_painted_lens_is_paint_arcs_of_its_deflector(files):
    src = prepare_onto(files / "dfl.fits")
    grid = default_onto_grid(src, per_cell=2)
    model = get_model(None, device="cpu")
    cells = np.arange(40, 46)
    images, counts = src.images_for_cells(grid, cells, 2, seed=3, model=model)
    assert images.dtype == np.float32 and len(images) == counts.sum()
    # lens 0 of the first non-empty cell, redrawn by hand: paint_arcs on that deflector with its lens number
    i = int(np.argmax(counts > 0))
    from deepmine.lenscrafter.selection.cells import cell_seeds, cell_uniforms

    k = int(counts[:i].sum())
    dfl = src.choose(grid, cells, 2, seed=3)[i, 0]
    u = cell_uniforms(3, cells[i:i + 1], 2, len(grid.axes))
    vals = grid.axis_values(cells[i:i + 1], 2, u)
    painted, _ = paint_arcs(read_deflectors(files / "dfl.fits").take([dfl]), zero_point=27.0, gain=3.0,
                            seed=cell_seeds(3)[1], indices=[int(cells[i]) * 2], theta_e=vals["theta_e"][:1],
                            m_g_src=vals["m_g_src"][:1])
    np.testing.assert_allclose(images[k], painted[0].astype(np.float32), rtol=1e-6, atol=1e-6)


def test_parts_do_not_change_the_result(files):
    from deepmine.lenscrafter.selection.grid import read_grid

    src = prepare_onto(files / "dfl.fits")
    grid = read_grid(files / "grid.toml", known=known_onto_parameters())
    model = get_model(None, device="cpu")
    pool = np.sort(np.linspace(-5, 5, 100).astype(np.float32))
    whole = run_cells(None, grid, np.arange(grid.n_cells), pool=pool, seed=2, onto=src, device="cpu")
    a = run_cells(None, grid, np.arange(5), pool=pool, seed=2, onto=src, device="cpu")
    b = run_cells(None, grid, np.arange(5, grid.n_cells), pool=pool, seed=2, onto=src, device="cpu")
    for col in ("n", "n_detected", "sum_ordinality"):
        np.testing.assert_array_equal(np.concatenate([a[col], b[col]]), whole[col])
    assert model.input_shape[-1] == src.size


def test_cli_end_to_end_and_resume(cli, files, tmp_path):
    out = tmp_path / "sel.fits"
    args = ("selection", "--onto", files / "dfl.fits", "--grid", files / "grid.toml", "--cut", 0.95,
            "--out", out, "--device", "cpu", "--json", "--keep-parts", "--part-lenses", 6)
    rc, so, err = cli(*args)
    assert rc == 0, err
    s = json.loads(so.strip().splitlines()[-1])
    t = Table.read(out)
    assert {"theta_e", "m_arc", "m_dfl", "n", "fraction"} <= set(t.colnames)
    assert len(t) == 12 and s["lenses"] == int(np.sum(t["n"])) > 0
    prov = json.loads(t.meta["PROVJSON"])
    assert prov["onto"]["n"] == N and prov["pool"]["source"] == str(files / "dfl.fits")
    # resume with every part kept: the same counts
    rc, so, err = cli(*args, "--resume", "--overwrite")
    assert rc == 0, err
    t2 = Table.read(out)
    np.testing.assert_array_equal(t2["n_detected"], t["n_detected"])
    assert json.loads(t2.meta["PROVJSON"])["parts_resumed"] == json.loads(t2.meta["PROVJSON"])["parts"]


@pytest.mark.parametrize("extra,needle", [
    (["--grid", "bad.toml"], "'m_fg' describes a crafted deflector"),
    (["--zero-point", 30], "zero point 27 (header) disagrees with --zero-point 30"),
    (["--pixel-scale", 0.2], "differs from --pixel-scale"),
])
def test_onto_refusals_one_line(cli, files, tmp_path, monkeypatch, extra, needle):
    monkeypatch.chdir(files)
    rc, _, err = cli("selection", "--onto", "dfl.fits", "--out", tmp_path / "x.fits", "--device", "cpu", *extra)
    _one_line(rc, err, needle)
    assert not (tmp_path / "x.fits").exists()


def test_model_mismatch_and_options_without_onto_refused(cli, files, tmp_path):
    rc, _, err = cli("selection", "--onto", files / "small.fits", "--out", tmp_path / "x.fits", "--device", "cpu")
    _one_line(rc, err, "holds 48×48 cutouts; the model takes 64×64")
    rc, _, err = cli("selection", "--gain", 3, "--out", tmp_path / "x.fits", "--dry-run")
    _one_line(rc, err, "--gain applies to --onto only")


def test_onto_source_travels_to_workers(files):
    """Distributed parts pickle the source (not its open memory map) and paint the same lenses."""
    import pickle

    src = prepare_onto(files / "dfl.fits")
    grid = default_onto_grid(src, per_cell=2)
    model = get_model(None, device="cpu")
    copy = pickle.loads(pickle.dumps(src))
    assert copy._open is None and copy.identity() == src.identity()
    a, na = src.images_for_cells(grid, np.arange(10, 14), 2, seed=5, model=model)
    b, nb = copy.images_for_cells(grid, np.arange(10, 14), 2, seed=5, model=model)
    np.testing.assert_array_equal(na, nb)
    np.testing.assert_array_equal(a, b)


def test_cli_onto_plot_writes_the_corner_and_completeness_pictures(cli, files, tmp_path):
    """`selection --onto ... --plot` on a small grid with the bundled model: both figures are
    written as PNG, hold a picture (not a blank canvas) and the corner plot bins the deflectors."""
    from PIL import Image

    from deepmine.lenscrafter.selection.plot import completeness_path

    out, plot = tmp_path / "sel.fits", tmp_path / "sel.png"
    rc, so, err = cli("selection", "--onto", files / "dfl.fits", "--grid", files / "grid.toml", "--cut", 0.95,
                      "--out", out, "--device", "cpu", "--plot", plot)
    assert rc == 0, err
    assert f"wrote {plot}" in so and f"wrote {completeness_path(plot)}" in so
    for p in (plot, completeness_path(plot)):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(p) as im:
            pixels = np.asarray(im.convert("L"), dtype=np.float64)
        assert min(pixels.shape) > 300 and pixels.std() > 10, p  # drawn, not an empty canvas
    t = Table.read(out)
    assert len(t) == 12 and np.isfinite(t["fraction"]).any()
