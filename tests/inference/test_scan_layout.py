"""scan()'s input layout object: combinations refused where it is built; the old keywords still work."""
from __future__ import annotations

import pytest

from deepmine.inference.errors import InputError
from deepmine.inference.scan.layout import InputLayout


@pytest.mark.parametrize("options, message", [
    ({"catalog": "s.ecsv", "tile": 32}, "exclude each other"),
    ({"catalog": "s.ecsv", "stride": 16}, "exclude each other"),
    ({"ra_col": "RA"}, "need --catalog"),
    ({"x_col": "px", "tile": 32}, "need --catalog"),
    ({"keep_columns": ["id"]}, "need --catalog"),
])  # fmt: skip
def test_bad_combinations_are_refused_when_built(options, message):
    with pytest.raises(InputError, match=message):
        InputLayout(**options)


def test_kinds_and_reader_options():
    assert InputLayout().kind == "cutouts"
    assert InputLayout(tile=32).kind == "tiles" and InputLayout(stride=8).kind == "tiles"
    lay = InputLayout(catalog="s.ecsv", ra_col="RA", keep_columns=("id",), frame="galactic")
    assert lay.kind == "survey" and lay.keep_columns == ["id"]
    opts = lay.reader_options()
    assert opts["catalog"] == "s.ecsv" and opts["frame"] == "galactic" and opts["check_pixel_scale"] is True
    import inspect

    from deepmine.inference.inputs.readers import resolve_inputs

    assert set(opts) <= set(inspect.signature(resolve_inputs).parameters)  # every field reaches the reader


def test_scan_takes_a_layout_not_loose_keywords(tmp_path, make_classifier, survey_files):
    """The layout travels as one object; its fields are no keywords of scan() (issue 16)."""
    import inspect

    from deepmine.inference.catalog.io import read_catalog
    from deepmine.inference.scan.scanner import scan

    params = inspect.signature(scan).parameters
    assert not {"catalog", "ra_col", "dec_col", "x_col", "y_col", "tile", "stride", "frame", "keep_columns",
                "check_pixel_scale"} & set(params)
    toy = make_classifier(tmp_path / "toy.onnx", shape=(3, 32, 32))
    files = [str(f) for f in survey_files(tmp_path)[0]]
    kw = {"formats": ["ecsv"], "progress": False, "threads": 1}
    tiled = scan(files, toy, tmp_path / "tiled.ecsv", layout=InputLayout(tile=32, stride=16), **kw)
    plain = scan(files, toy, tmp_path / "plain.ecsv", layout=InputLayout(tile=32), **kw)
    assert len(read_catalog(tiled.catalog)) > len(read_catalog(plain.catalog)) > 0  # stride 16 overlaps
    with pytest.raises(TypeError):
        scan(files, toy, tmp_path / "old.ecsv", tile=32, **kw)


def test_cli_refuses_a_bad_layout_in_one_line(tmp_path, cli):
    rc, _, err = cli("scan", tmp_path / "i.fits", "--catalog", tmp_path / "s.ecsv", "--tile", "32", "--out",
                     tmp_path / "o.ecsv")
    assert rc != 0 and "exclude each other" in err and len(err.strip().splitlines()) == 1
