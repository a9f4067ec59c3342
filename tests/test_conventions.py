"""Astronomers' conventions (issue 19): licence, catalogue units and kept columns, pictures, CLI habits."""
from __future__ import annotations

from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


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
def _survey_files(tmp_path, n=120):
    import numpy as np
    from astropy.io import fits
    from astropy.wcs import WCS

    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval, w.wcs.crpix, w.wcs.cdelt = [10.0, -5.0], [60.0, 60.0], [-0.168 / 3600, 0.168 / 3600]
    w.wcs.radesys = "ICRS"
    rng = np.random.default_rng(3)
    files = []
    for b in "irg":
        p = tmp_path / f"{b}.fits"
        fits.PrimaryHDU(rng.normal(size=(n, n)).astype(np.float32), header=w.to_header()).writeto(p)
        files.append(p)
    return files, w


def test_catalogue_units_and_kept_columns_in_every_format(tmp_path, cli):
    import numpy as np
    from astropy.io import fits
    from astropy.table import Table
    from fixtures_models import make_classifier

    from deepmine.inference.catalog import read_catalog

    toy = make_classifier(tmp_path / "toy.onnx", shape=(3, 32, 32))
    files, w = _survey_files(tmp_path)
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


def test_frame_transforms_catalogue_coordinates(tmp_path):
    import astropy.units as u
    import numpy as np
    from astropy.coordinates import SkyCoord
    from astropy.table import Table
    from fixtures_models import make_classifier

    from deepmine.inference.catalog import read_catalog
    from deepmine.inference.errors import InputError
    from deepmine.inference.scanner import scan

    toy = make_classifier(tmp_path / "toy.onnx", shape=(3, 32, 32))
    files, w = _survey_files(tmp_path)
    xs, ys = np.array([40.0, 80.0]), np.array([70.0, 30.0])
    ra, dec = w.all_pix2world(xs, ys, 0)
    gal = SkyCoord(ra * u.deg, dec * u.deg, frame="icrs").galactic
    Table({"l": gal.l.deg, "b": gal.b.deg}).write(tmp_path / "gal.ecsv")
    scan([str(f) for f in files], toy, tmp_path / "g.ecsv", formats=["ecsv"], catalog=tmp_path / "gal.ecsv",
         ra_col="l", dec_col="b", frame="galactic")
    t = read_catalog(tmp_path / "g.ecsv")
    np.testing.assert_allclose(t["x"], xs, atol=1e-5)
    np.testing.assert_allclose(t["ra"], ra, atol=1e-8)
    import pytest

    with pytest.raises(InputError, match="--frame: unknown frame 'nosuch'"):
        scan([str(f) for f in files], toy, tmp_path / "h.ecsv", formats=["ecsv"], catalog=tmp_path / "gal.ecsv",
             ra_col="l", dec_col="b", frame="nosuch")
