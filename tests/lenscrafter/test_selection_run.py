"""Selection function end to end: a brightness-only ONNX model, resume, determinism, the CLI.

The model built here scores a cutout by the mean flux in an annulus of radius 6–12 px around
the centre (where the reference lens's arc lies, θ_E = 1.5″ ≈ 9 px), with the foreground
pushed to m_g = 27 so that only the arc contributes: its selection function must rise with
arc brightness and be flat in the foreground's Sersic index and ellipticity.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import deepmine.lenscrafter.selection.measure as selection_module  # noqa: E402
from deepmine.inference.errors import InputError  # noqa: E402
from deepmine.inference.metadata import ModelMetadata  # noqa: E402
from deepmine.lenscrafter.selection.grid import SelectionGrid, make_axis, read_grid  # noqa: E402
from deepmine.lenscrafter.selection.measure import (  # noqa: E402
    SelectionFunction,
    build_reference_pool,
    chunks_of,
    plan_parts,
    run_cells,
    selection_function,
)

GRID_TOML = """
per_cell = 24
[axes.m_arc]
range = [17.0, 23.0]
bins = 4
[axes.n_fg]
range = [1.0, 5.0]
bins = 2
[axes.e_fg]
range = [0.0, 0.5]
bins = 2
[fixed]
m_fg = 27.0
"""


def ring_model(path, r_in: float = 6.0, r_out: float = 12.0):
    """ONNX classifier: logit = mean flux (all bands) in an annulus; raw fluxes (preprocessing none)."""
    yy, xx = np.mgrid[:64, :64] - 31.5
    r = np.hypot(xx, yy)
    ring = ((r >= r_in) & (r <= r_out)).astype(np.float32)
    mask = np.broadcast_to(ring / ring.sum() / 3, (1, 3, 64, 64)).astype(np.float32)
    nodes = [
        helper.make_node("Mul", ["image", "mask"], ["weighted"]),
        helper.make_node("ReduceSum", ["weighted", "axes"], ["logit"], keepdims=0),
        helper.make_node("Sigmoid", ["logit"], ["probability"]),
    ]
    graph = helper.make_graph(
        nodes, "ring_brightness",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 64, 64])],
        [helper.make_tensor_value_info("logit", TensorProto.FLOAT, ["N"]),
         helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["N"])],
        [numpy_helper.from_array(mask, "mask"), numpy_helper.from_array(np.array([1, 2, 3], np.int64), "axes")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = ModelMetadata(architecture="ring-brightness", preprocessing={"kind": "none"})
    for k, v in meta.to_props().items():
        model.metadata_props.add(key=k, value=v)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("sel")
    model = ring_model(d / "ring.onnx")
    grid = d / "grid.toml"
    grid.write_text(GRID_TOML)
    from deepmine.inference.model import get_model

    pool = build_reference_pool(get_model(model, device="cpu"), 1000, seed=3)
    pool.save(d / "pool.fits")
    return {"dir": d, "model": model, "grid": grid, "pool": d / "pool.fits"}


@pytest.fixture(scope="module")
def measured(files):
    g = read_grid(files["grid"])
    return selection_function(files["model"], g, pool=files["pool"], cut=0.99, seed=5)


def test_brightness_model_rises_with_arc_flux_and_is_flat_elsewhere(measured):
    sel = measured
    arc = sel.marginal("m_arc")
    f = arc["fraction"]
    # brightest arcs (17–18.5 mag) found, faintest (21.5–23) never; monotone in between
    assert f[0] >= 0.9 and f[-1] == 0.0
    assert np.all(np.diff(f) <= 0.05)
    for name in ("n_fg", "e_fg"):
        m = sel.marginal(name)
        k, n = m["n_detected"], m["n"]
        p = k.sum() / n.sum()
        sigma = np.sqrt(p * (1 - p) * (1 / n[0] + 1 / n[1]))
        assert abs(m["fraction"][0] - m["fraction"][1]) <= 3 * sigma + 1e-9, (name, m["fraction"])
    # each cell's Wilson interval holds its fraction; counts add up
    t = sel.table
    assert np.all((t["fraction_lo"] <= t["fraction"]) & (t["fraction"] <= t["fraction_hi"]))
    assert int(np.sum(t["n"])) == 16 * 24 and np.all(t["craft_s"] > 0) and np.all(t["scan_s"] > 0)
    assert sel.provenance["model_sha256"].startswith("sha256:") and sel.provenance["pool_size"] == 1000


def test_parts_do_not_change_the_lenses(files, measured):
    """Any split of the cells into parts (as a distributed backend makes) gives the same result."""
    g = read_grid(files["grid"])
    cells = np.arange(g.n_cells)
    pieces = [run_cells(files["model"], g, c, pool=files["pool"], seed=5, cut=0.99)
              for c in (cells[:5], cells[5:11], cells[11:])]
    got = np.concatenate([np.asarray(p["median_logit"]) for p in pieces])
    np.testing.assert_array_equal(got, np.asarray(measured.table["median_logit"]))
    np.testing.assert_array_equal(np.concatenate([p["n_detected"] for p in pieces]), measured.table["n_detected"])


def test_chunks_are_aligned_runs():
    chunks = chunks_of(np.array([0, 1, 2, 5, 6, 7, 8, 9]), per_cell=256)  # 4 cells per chunk
    assert [c.tolist() for c in chunks] == [[0, 1, 2], [5, 6, 7], [8, 9]]
    g = SelectionGrid(axes=[make_axis("m_arc", 18, 27, 10)])
    parts = plan_parts(g, per_cell=400, part_lenses=2000)
    assert np.array_equal(np.concatenate(parts), np.arange(10)) and all(len(p) % 2 == 0 for p in parts[:-1])


def test_resume_after_interruption(files, measured, tmp_path, monkeypatch):
    # smaller craft chunks than the default, so the 16 cells make two parts (this also
    # checks that the chunk size does not change the lenses)
    monkeypatch.setattr(selection_module, "CRAFT_LENSES", 256)
    g = read_grid(files["grid"])
    work = tmp_path / "parts"
    calls = []

    def interrupt_in_second_part(k):
        calls.append(k)
        if sum(calls) > 10:
            raise KeyboardInterrupt

    # parts hold whole craft chunks: 256 // 24 = 10 cells, so parts of cells 0-9 and 10-15
    with pytest.raises(KeyboardInterrupt):
        selection_function(files["model"], g, pool=files["pool"], cut=0.99, seed=5, workdir=work,
                           part_lenses=200, progress=interrupt_in_second_part)
    assert len(list(work.glob("part-*.fits"))) == 1
    sel = selection_function(files["model"], g, pool=files["pool"], cut=0.99, seed=5, workdir=work,
                             part_lenses=200, resume=True)
    assert sel.provenance["parts_resumed"] == 1 and sel.provenance["parts"] == 2
    np.testing.assert_array_equal(sel.table["n_detected"], measured.table["n_detected"])
    np.testing.assert_array_equal(sel.table["median_logit"], measured.table["median_logit"])
    # other settings: the old parts are refused with a clear line
    with pytest.raises(InputError, match="different settings .*seed"):
        selection_function(files["model"], g, pool=files["pool"], cut=0.99, seed=6, workdir=work,
                           part_lenses=200, resume=True)


def test_pool_too_small_or_from_another_model(files, tmp_path):
    from deepmine.inference.ranking.pool import ReferencePool

    g = read_grid(files["grid"])
    with pytest.raises(InputError, match="fewer than one above the cut"):
        selection_function(files["model"], g, pool=ReferencePool.from_scores(np.arange(50.0)), cut=0.995)
    other = ReferencePool.from_scores(np.arange(5000.0), model_hash="sha256:0000")
    with pytest.raises(InputError, match="scored by another model \\(sha256:0000\\) than ring.onnx"):
        selection_function(files["model"], g, pool=other)


def test_cli_end_to_end_with_plots(cli, files, tmp_path):
    out = tmp_path / "sel.fits"
    plot = tmp_path / "corner.png"
    rc, stdout, err = cli("selection", "--model", files["model"], "--grid", files["grid"], "--out", out,
                          "--plot", plot, "--per-cell", 6, "--reference", files["pool"], "--cut", 0.99,
                          "--json")
    assert rc == 0, err
    summary = json.loads(stdout)
    assert summary["lenses"] == 16 * 6 and summary["cells"] == 16
    for p in (out, out.with_suffix(".ecsv"), plot, tmp_path / "corner_completeness.png"):
        assert p.is_file() and p.stat().st_size > 0
    sel = SelectionFunction.load(out.with_suffix(".ecsv"))
    assert sel.cube("n").shape == (4, 2, 2) and sel.cut == 0.99
    assert not (tmp_path / "sel.parts").exists()  # parts removed after success


def test_cli_negatives_file_and_dry_run(cli, files, tmp_path):
    from deepmine.lenscrafter import craft_negatives

    neg, _ = craft_negatives(300, seed=9, output="float32")
    np.save(tmp_path / "neg.npy", neg)
    out = tmp_path / "sel.fits"
    rc, stdout, err = cli("selection", "--model", files["model"], "--grid", files["grid"], "--out", out,
                          "--per-cell", 2, "--negatives", tmp_path / "neg.npy", "--cut", 0.9, "--json")
    assert rc == 0, err
    assert SelectionFunction.load(out).provenance["pool_size"] == 300
    rc, stdout, _ = cli("selection", "--out", tmp_path / "x.fits", "--dry-run")
    assert rc == 0 and "theta_e" in stdout and "65,536 lenses" in stdout
    assert not (tmp_path / "x.fits").exists()


@pytest.mark.parametrize(
    "grid_text, needle",
    [
        ("[axes.arc_mag]\nrange = [18, 27]\nbins = 3\n", "unknown parameter 'arc_mag'"),
        ("[axes.m_arc]\nrange = [22, 18]\nbins = 3\n", "empty range [22, 18]"),
    ],
)
def test_cli_bad_grid_one_line(cli, files, tmp_path, grid_text, needle):
    g = tmp_path / "bad.toml"
    g.write_text(grid_text)
    rc, _, err = cli("selection", "--model", files["model"], "--grid", g, "--out", tmp_path / "s.fits")
    assert rc == 2 and needle in err and str(g) in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_cli_option_errors(cli, files, tmp_path):
    rc, _, err = cli("selection", "--model", files["model"], "--out", tmp_path / "s.fits",
                     "--reference", files["pool"], "--negatives", files["pool"])
    assert rc == 2 and "exclude each other" in err
    rc, _, err = cli("selection", "--model", files["model"], "--out", tmp_path / "s.fits", "--cut", "1.5")
    assert rc == 2 and "--cut" in err
    rc, _, err = cli("selection", "--model", files["model"], "--out", tmp_path / "s.fits", "--per-cell", "0")
    assert rc == 2 and "--per-cell" in err
    rc, _, err = cli("selection", "--model", files["model"], "--out", tmp_path / "nofolder" / "s.fits",
                     "--grid", files["grid"], "--reference", files["pool"])
    assert rc == 2 and "does not exist" in err


def test_map_parts_hook_runs_picklable_jobs(files, measured, tmp_path, monkeypatch):
    """The hook a distributed backend uses: jobs pickle, run anywhere, write their own parts."""
    import pickle

    monkeypatch.setattr(selection_module, "CRAFT_LENSES", 256)
    g = read_grid(files["grid"])
    seen = []

    def map_parts(job, todo):
        for cells in todo:
            seen.append(len(cells))
            yield pickle.loads(pickle.dumps(job))(cells)

    sel = selection_function(files["model"], g, pool=files["pool"], cut=0.99, seed=5, workdir=tmp_path,
                             part_lenses=200, map_parts=map_parts)
    assert seen == [10, 6] and len(list(tmp_path.glob("part-*.fits"))) == 2
    np.testing.assert_array_equal(sel.table["n_detected"], measured.table["n_detected"])


def test_cli_resume_reuses_parts_and_pool(cli, files, tmp_path):
    out = tmp_path / "sel.fits"
    args = ("selection", "--model", files["model"], "--grid", files["grid"], "--out", out, "--per-cell", 4,
            "--pool-size", 400, "--cut", 0.99, "--keep-parts")
    rc, _, err = cli(*args)
    assert rc == 0, err
    first = SelectionFunction.load(out)
    work = tmp_path / "sel.parts"
    # a part holds whole craft chunks (1024 lenses = 256 cells of 4 here): one part
    assert (work / "pool.fits").is_file() and len(list(work.glob("part-*.fits"))) == 1
    rc, _, err = cli(*args, "--resume")
    assert rc == 2 and "sel.fits: already exists; pass --overwrite" in err
    rc, _, err = cli(*args, "--resume", "--overwrite")
    assert rc == 0, err
    again = SelectionFunction.load(out)
    assert again.provenance["parts_resumed"] == again.provenance["parts"] == 1
    np.testing.assert_array_equal(again.table["median_logit"], first.table["median_logit"])
    assert again.provenance["pool"]["n_negatives"] == 400
    # the same parts folder under another --out: refused without --resume, cleared with --overwrite
    other = [a if a != out else tmp_path / "sel2.fits" for a in args] + ["--workdir", work]
    rc, _, err = cli(*other)
    assert rc == 2 and "sel.parts: an interrupted selection function left 1 completed part(s) here" in err
    rc, _, err = cli(*other, "--overwrite")
    assert rc == 0, err
    assert SelectionFunction.load(tmp_path / "sel2.fits").provenance["parts_resumed"] == 0


def test_summary_goes_into_an_exported_models_metadata(measured, tmp_path, cli):
    """`deepmine export --selection`: the table's digest lands in metadata.extra["selection"]."""
    from deepmine.lenscrafter.selection.measure import selection_summary

    measured.save(tmp_path / "sel.fits")
    s = selection_summary(tmp_path / "sel.fits")
    t = measured.table
    assert s["lenses"] == 16 * 24 and s["detected"] == int(np.sum(t["n_detected"])) and s["cut"] == 0.99
    assert [a["name"] for a in s["axes"]] == measured.grid.names
    arc = measured.marginal("m_arc")
    assert s["marginals"]["m_arc"]["fraction"] == pytest.approx(list(arc["fraction"]), abs=1e-4)
    assert s["marginals"]["m_arc"]["n"] == [int(v) for v in arc["n"]]
    assert s["model_sha256"] == measured.provenance["model_sha256"] and s["file_sha256"].startswith("sha256:")
    json.dumps(s, allow_nan=False)  # goes into the ONNX metadata as JSON

    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from deepmine.inference.metadata import read_metadata
    from deepmine.training import create_model
    from deepmine.training.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = create_model("eznet", table=[{"kernels": 4, "kernel": 3, "size": 6}, {"kernels": 4, "kernel": 1, "size": 1}],
                         size=16, hidden=8)  # fmt: skip
    ckpt = save_checkpoint(tmp_path / "m.pt", model, {"recipe_name": "test"})
    rc, out, err = cli("export", ckpt, "--out", tmp_path / "m.onnx", "--selection", tmp_path / "sel.fits")
    assert rc == 0, err
    assert f"selection  {s['detected']:,} of {s['lenses']:,} grid lenses detected" in out
    meta, _ = read_metadata(tmp_path / "m.onnx")
    assert meta.extra["selection"] == s
    rc, out, err = cli("export", ckpt, "--out", tmp_path / "n.onnx", "--selection", tmp_path / "nope.fits")
    assert rc == 2 and "nope.fits" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "n.onnx").exists()
