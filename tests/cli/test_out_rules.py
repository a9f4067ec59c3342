"""``--out`` suffix rules, one implementation (:func:`deepmine.inference.formats.output_paths`)
for the commands whose --help states them: ``selection`` (FITS + ECSV) and ``export`` (ONNX);
``scan`` states the same rule for its catalogues (issue 19)."""
import numpy as np
import pytest

from deepmine.inference.errors import InputError
from deepmine.inference.formats import output_paths


@pytest.mark.parametrize("out, expect", [
    ("sel.fits", ["sel.fits", "sel.ecsv"]), ("sel.ecsv", ["sel.fits", "sel.ecsv"]),
    ("sel.csv", ["sel.fits", "sel.ecsv"]), ("sel.fits.gz", ["sel.fits", "sel.ecsv"]),
    ("sel", ["sel.fits", "sel.ecsv"]), ("run.v2", ["run.v2.fits", "run.v2.ecsv"]),
])
def test_table_outputs(out, expect):
    assert [str(p) for p in output_paths(out, (".fits", ".ecsv"))] == expect


@pytest.mark.parametrize("out, expect", [("m.onnx", "m.onnx"), ("m.ONNX", "m.ONNX"), ("m", "m.onnx"),
                                         ("m.v2", "m.v2.onnx")])
def test_model_outputs(out, expect):
    assert str(output_paths(out, (".onnx",), known=(".onnx",))[0]) == expect


def test_a_folder_is_refused_naming_the_option(tmp_path):
    with pytest.raises(InputError, match=r"--out: is a folder; name the file, e.g. .*/selection\.fits"):
        output_paths(tmp_path, (".fits", ".ecsv"), example="selection")


GRID = """
per_cell = 2
[axes.m_arc]
range = [18.0, 22.0]
bins = 2
"""


def _one_line(rc, err, *needles):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in lines[0], (n, lines[0])


def test_selection_out_suffix_rules(tmp_path, cli, make_classifier, blobs):
    model = make_classifier(tmp_path / "toy.onnx", shape=(3, 64, 64))
    (tmp_path / "grid.toml").write_text(GRID)
    np.save(tmp_path / "neg.npy", blobs(60, seed=1))
    args = ("--model", model, "--grid", tmp_path / "grid.toml", "--negatives", tmp_path / "neg.npy", "--cut", 0.9)
    rc, out, err = cli("selection", *args, "--out", tmp_path / "sel.csv")
    assert rc == 0, err
    assert (tmp_path / "sel.fits").is_file() and (tmp_path / "sel.ecsv").is_file()
    assert not list(tmp_path.glob("sel.csv*"))  # nor sel.csv.fits, sel.csv.parts
    assert f"wrote {tmp_path / 'sel.fits'}" in out
    (tmp_path / "adir").mkdir()
    _one_line(*cli("selection", *args, "--out", tmp_path / "adir")[::2], "adir: --out: is a folder")
    assert not (tmp_path / "adir.fits").exists()
    rc, out, err = cli("selection", *args, "--out", tmp_path / "sel")  # the written files exist: refused
    _one_line(rc, err, "sel.fits", "--overwrite")


@pytest.mark.torch
def test_export_out_suffix_rules(tmp_path, cli, export_checkpoint):
    pytest.importorskip("torch")
    pytest.importorskip("onnx")

    ckpt, _ = export_checkpoint(tmp_path, "lensflow")
    rc, out, err = cli("export", ckpt, "--out", tmp_path / "model", "--no-check")
    assert rc == 0, err
    assert (tmp_path / "model.onnx").is_file() and not (tmp_path / "model").exists()
    (tmp_path / "adir").mkdir()
    _one_line(*cli("export", ckpt, "--out", tmp_path / "adir")[::2], "adir: --out: is a folder", "adir/model.onnx")
