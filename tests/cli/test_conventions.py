"""Astronomers' conventions (issue 19): licence, catalogue units and kept columns, pictures, CLI habits."""
from __future__ import annotations

from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[2]


def test_code_is_bsd3_and_thesis_credited_cc_by():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert meta["license"] == "BSD-3-Clause"
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("BSD 3-Clause License")
    assert "Neither the name of the copyright holder" in text
    readme = (ROOT / "README.md").read_text()
    credit = readme.split("## Licence and credit", 1)[1]
    assert "BSD 3-Clause" in credit and "CC-BY 4.0" in credit and "Pourrahmani" in credit


# ---------------------------------------------------------------------------------------------
# catalogues: units, kept source-catalogue columns, --frame
# ---------------------------------------------------------------------------------------------
def test_catalogue_units_and_kept_columns_in_every_format(tmp_path, cli, make_classifier, survey_files):
    import numpy as np
    from astropy.io import fits
    from astropy.table import Table

    from deepmine.inference.catalog.io import read_catalog

    toy = make_classifier(tmp_path / "toy.onnx", shape=(3, 32, 32))
    files, w = survey_files(tmp_path)
    xs, ys = np.array([40.0, 100.0, 5.0, 60.0]), np.array([70.0, 20.0, 118.0, 60.0])
    ra, dec = w.all_pix2world(xs, ys, 0)
    Table({"ra": ra, "dec": dec, "ID": [7, 8, 9, 10], "name": ["a", "bb", "", "dddd"],
           "mag": [20.0, 21, 22, 23]}).write(tmp_path / "src.ecsv")
    rc, _, err = cli("scan", *files, "--catalog", tmp_path / "src.ecsv", "--model", toy, "--out",
                     tmp_path / "s.fits", "--shard-size", 2, "--batch-size", 2, "--top", 2)
    assert rc == 0, err
    for suffix in (".fits", ".ecsv", ".parquet"):
        t = read_catalog(tmp_path / f"s{suffix}")
        assert str(t["ra"].unit) == "deg" and str(t["dec"].unit) == "deg", suffix
        assert str(t["x"].unit) == "pix" and str(t["y"].unit) == "pix", suffix
        assert t["ID"].tolist() == [7, 8, 9, 10] and [v or "" for v in t["name"].tolist()] == ["a", "bb", "", "dddd"], suffix
        assert "mag" not in t.colnames
    hdr = fits.getheader(tmp_path / "s.fits", 1)
    units = {hdr[f"TTYPE{i}"]: hdr.get(f"TUNIT{i}") for i in range(1, hdr["TFIELDS"] + 1)}
    assert units["ra"] == "deg" and units["x"] == "pix"
    top = Table.read(tmp_path / "s_top.ecsv")
    assert "name" in top.colnames and str(top["ra"].unit) == "deg"
    # explicit columns (a clash with a catalogue column is renamed cat_<name>) and none
    Table({"ra": ra, "dec": dec, "id": ["x1", "x2", "x3", "x4"], "mag": [20.0, 21, 22, 23]}).write(tmp_path / "s2.ecsv")
    rc, _, err = cli("scan", *files, "--catalog", tmp_path / "s2.ecsv", "--model", toy, "--out", tmp_path / "k.ecsv",
                     "--format", "ecsv", "--keep-columns", "id,mag")
    assert rc == 0, err
    t = read_catalog(tmp_path / "k.ecsv")
    assert t["cat_id"].tolist() == ["x1", "x2", "x3", "x4"] and t["mag"].tolist() == [20, 21, 22, 23]
    assert t["id"].tolist() == [0, 1, 2, 3]
    rc, _, err = cli("scan", *files, "--catalog", tmp_path / "s2.ecsv", "--model", toy, "--out", tmp_path / "n.ecsv",
                     "--format", "ecsv", "--keep-columns", "none")
    assert rc == 0, err and "cat_id" not in read_catalog(tmp_path / "n.ecsv").colnames
    rc, _, err = cli("scan", *files, "--catalog", tmp_path / "s2.ecsv", "--model", toy, "--out", tmp_path / "m.ecsv",
                     "--keep-columns", "objid")
    assert rc != 0 and "--keep-columns: no column 'objid'" in err and len(err.strip().splitlines()) == 1


def test_frame_transforms_catalogue_coordinates(tmp_path, make_classifier, survey_files):
    import astropy.units as u
    import numpy as np
    from astropy.coordinates import SkyCoord
    from astropy.table import Table

    from deepmine.inference.catalog.io import read_catalog
    from deepmine.inference.errors import InputError
    from deepmine.inference.scan.layout import InputLayout
    from deepmine.inference.scan.scanner import scan

    toy = make_classifier(tmp_path / "toy.onnx", shape=(3, 32, 32))
    files, w = survey_files(tmp_path)
    xs, ys = np.array([40.0, 80.0]), np.array([70.0, 30.0])
    ra, dec = w.all_pix2world(xs, ys, 0)
    gal = SkyCoord(ra * u.deg, dec * u.deg, frame="icrs").galactic
    Table({"l": gal.l.deg, "b": gal.b.deg}).write(tmp_path / "gal.ecsv")
    scan([str(f) for f in files], toy, tmp_path / "g.ecsv", formats=["ecsv"],
         layout=InputLayout(catalog=tmp_path / "gal.ecsv", ra_col="l", dec_col="b", frame="galactic"))
    t = read_catalog(tmp_path / "g.ecsv")
    np.testing.assert_allclose(t["x"], xs, atol=1e-5)
    np.testing.assert_allclose(t["ra"], ra, atol=1e-8)
    import pytest

    with pytest.raises(InputError, match="--frame: unknown frame 'nosuch'"):
        scan([str(f) for f in files], toy, tmp_path / "h.ecsv", formats=["ecsv"],
             layout=InputLayout(catalog=tmp_path / "gal.ecsv", ra_col="l", dec_col="b", frame="nosuch"))


# ---------------------------------------------------------------------------------------------
# pictures: format from the suffix, labels with id and RA/Dec shortened on the right, corner plot
# ---------------------------------------------------------------------------------------------
def test_fit_text_shortens_on_the_right():
    from deepmine.inference.mosaic import fit_text

    assert fit_text("short", 10, len) == "short"
    out = fit_text("survey_cutouts.npy[2732]", 12, len)
    assert out.startswith("survey_cut") and out.endswith("…") and len(out) <= 12


def test_picture_format_follows_the_suffix_or_is_refused(tmp_path):
    import pytest

    from deepmine.inference.errors import InputError
    from deepmine.inference.pictures import picture_format

    assert picture_format(tmp_path / "a.PNG", raster=True) == "png"
    assert picture_format(tmp_path / "a.jpg", raster=True) == picture_format(tmp_path / "a.jpeg") == "jpeg"
    assert picture_format(tmp_path / "a.pdf") == "pdf"
    for bad, raster in (("a.pdf", True), ("a.gif", False), ("a", False)):
        with pytest.raises(InputError, match="--mosaic: unknown figure format") as exc:
            picture_format(tmp_path / bad, "--mosaic", raster=raster)
        assert "\n" not in str(exc.value)


def test_mosaic_jpeg_and_labels_with_name_and_radec(tmp_path, cli, make_classifier, survey_files):
    import numpy as np
    from astropy.table import Table
    from PIL import Image

    from deepmine.inference.scan.scanner import _label

    toy = make_classifier(tmp_path / "toy.onnx", shape=(3, 32, 32))
    files, w = survey_files(tmp_path)
    ra, dec = w.all_pix2world([40.0, 80.0, 60.0], [70.0, 30.0, 60.0], 0)
    Table({"ra": ra, "dec": dec, "name": ["SDSS J0040-0500 a very long name", "b", "c"]}).write(tmp_path / "s.ecsv")
    common = ("--catalog", tmp_path / "s.ecsv", "--model", toy, "--format", "ecsv", "--top", 3)
    rc, _, err = cli("scan", *files, *common, "--out", tmp_path / "c.ecsv", "--mosaic", tmp_path / "m.jpg")
    assert rc == 0, err
    with Image.open(tmp_path / "m.jpg") as im:
        assert im.format == "JPEG"
    rc, _, err = cli("scan", *files, *common, "--out", tmp_path / "d.ecsv", "--mosaic", tmp_path / "m.gif")
    assert rc != 0 and "m.gif: --mosaic: unknown figure format '.gif'" in err
    assert not (tmp_path / "d.ecsv").exists()  # refused before scanning
    t = Table.read(tmp_path / "c.ecsv")
    row = t[np.flatnonzero(t["name"] == "SDSS J0040-0500 a very long name")[0]]
    lab = _label(0, row, "ordinality", ["name"], True).split("\n")
    assert lab[0].startswith("#1  id ") and "SDSS J0040" in lab[0]
    assert lab[2] == f"{row['ra']:.5f}  {row['dec']:+.5f}" and lab[3].startswith("s.ecsv[")


def test_corner_plot_labels_inside_the_figure():
    import numpy as np
    from astropy.table import Table

    from deepmine.lenscrafter.selection.grid import SelectionGrid, default_grid
    from deepmine.lenscrafter.selection.measure import assemble
    from deepmine.lenscrafter.selection.plot import corner_figure

    for k in (2, 3, 6):
        g = SelectionGrid(axes=default_grid().axes[:k])
        n = np.full(g.n_cells, 10)
        part = Table({"cell": np.arange(g.n_cells), "n": n, "n_detected": n // 2, "sum_ordinality": n * 0.5,
                      "median_logit": np.zeros(g.n_cells, np.float32), "craft_s": np.ones(g.n_cells),
                      "scan_s": np.ones(g.n_cells)})
        fig = corner_figure(assemble(g, [part], provenance={"cut": 0.995}))
        fig.canvas.draw()
        box = fig.bbox
        labels = [a.xaxis.label for a in fig.axes] + [a.yaxis.label for a in fig.axes] + list(fig.texts)
        assert any("detection fraction" in t.get_text() for t in labels)
        for text in [t for t in labels if t.get_visible() and t.get_text()]:
            ext = text.get_window_extent()
            assert ext.x0 >= box.x0 - 1 and ext.x1 <= box.x1 + 1 and ext.y0 >= box.y0 - 1 and ext.y1 <= box.y1 + 1, \
                (k, text.get_text())
        import matplotlib.pyplot as plt

        plt.close(fig)


# ---------------------------------------------------------------------------------------------
# CLI habits: flags, short options, --out suffix rules, no wrapping into files
# ---------------------------------------------------------------------------------------------
def _commands():
    import typer.main

    from deepmine.inference.cli.app import app

    group = typer.main.get_command(app)
    out = {}

    def walk(cmd, name):
        subs = getattr(cmd, "commands", None)
        if subs:
            for sub_name, sub in subs.items():
                walk(sub, f"{name} {sub_name}".strip())
        else:
            out[name] = cmd

    walk(group, "")
    return out


def test_flags_take_no_value_and_short_options_have_one_meaning():
    import click

    commands = _commands()
    assert "scan" in commands and "rank" in commands
    meaning: dict[str, set] = {}
    for name, cmd in commands.items():
        for p in cmd.params:
            if not isinstance(p, click.Option):
                continue
            if isinstance(p.type, click.types.BoolParamType) or p.is_flag:
                assert p.is_flag, f"{name} {p.opts}: a boolean option must be a flag (--x/--no-x), not take a value"
            for short in [o for o in p.opts + p.secondary_opts if len(o) == 2 and o.startswith("-")]:
                meaning.setdefault(short, set()).add(p.opts[0] if short != p.opts[0] else p.name)
    for short, longs in meaning.items():
        assert len(longs) == 1, f"short option {short} means {sorted(longs)} in different commands"


def test_out_suffix_rules(tmp_path):
    import pytest

    from deepmine.inference.catalog.io import catalog_paths
    from deepmine.inference.errors import InputError

    fmts = ["fits", "ecsv"]
    assert catalog_paths(tmp_path / "cat.csv", fmts) == {"fits": tmp_path / "cat.fits", "ecsv": tmp_path / "cat.ecsv"}
    assert catalog_paths(tmp_path / "cat.ecsv", fmts)["ecsv"] == tmp_path / "cat.ecsv"
    assert catalog_paths(tmp_path / "scan.v2", fmts)["fits"] == tmp_path / "scan.v2.fits"
    (tmp_path / "somedir").mkdir()
    with pytest.raises(InputError, match="--out: is a folder"):
        catalog_paths(tmp_path / "somedir", fmts)


def test_messages_are_not_wrapped_when_not_on_a_terminal():
    import os
    import subprocess
    import sys

    line = "next: deepmine scan " + " ".join(f"/data/survey_{k:03d}.fits" for k in range(12))
    code = ("from deepmine.inference.cli.common import err_console, out_console; "
            f"err_console.print({line!r}); out_console.print({line!r})")
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == line and r.stdout.strip() == line


def test_long_work_off_a_terminal_writes_plain_progress_lines(monkeypatch, capsys):
    """A batch job's log shows progress while the work runs (rich draws nothing off a terminal
    until the end): one plain line per stage every DEEPMINE_PROGRESS_EVERY seconds; 0 = never."""
    from deepmine.inference.cli import common

    monkeypatch.delenv("DEEPMINE_NO_PROGRESS", raising=False)
    monkeypatch.setenv("DEEPMINE_PROGRESS_EVERY", "1e-9")
    with common.progress_bar() as open_stage:
        advance = open_stage("crafting lenses", 4)
        for _ in range(4):
            advance(1)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("crafting lenses: ")]
    assert lines[0].startswith("crafting lenses: 1/4 (25 %), ") and lines[0].endswith(" elapsed")
    assert any(ln.startswith("crafting lenses: 4/4 (100 %)") for ln in lines)
    assert (common._rate(1234.4), common._rate(12.34), common._rate(0.554)) == ("1,234/s", "12.3/s", "0.55/s")

    monkeypatch.setenv("DEEPMINE_PROGRESS_EVERY", "0")
    with common.progress_bar() as open_stage:
        open_stage("scanning", None)(5, "note")
    assert "scanning: " not in capsys.readouterr().err
