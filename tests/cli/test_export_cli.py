"""``deepmine export`` end to end on small checkpoints, and its one-line errors."""
import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytestmark = pytest.mark.torch

from deepmine.inference.metadata import read_metadata  # noqa: E402


def _one_line_error(rc, out, err, *needles):
    assert rc == 2, (rc, out, err)
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("deepmine export: error: "), err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    assert "Traceback" not in err


@pytest.mark.parametrize("name", ["lensflow", "eznet"])
def test_export_checkpoint_cli(tmp_path, cli, name, export_checkpoint):
    ckpt, model = export_checkpoint(tmp_path, name)
    out = tmp_path / f"{name}.onnx"
    rc, stdout, err = cli("export", ckpt, "--out", out)
    assert rc == 0, err
    assert f"wrote {out}" in stdout and "parity     fp32 max |Δ|" in stdout and "sha256:" in stdout
    meta, props = read_metadata(out)
    assert meta.architecture == name and meta.input_shape == model.deepmine_config["input_shape"]
    assert meta.preprocessing == model.deepmine_config["preprocessing"]  # LensFlow: its template too
    assert meta.training["seed"] == 11 and meta.training["heldout"]["ranking_performance"] == 0.5
    assert meta.training["checkpoint"]["file"] == ckpt.name
    assert meta.training["checkpoint"]["sha256"].startswith("sha256:")
    assert meta.parity["passed"] and meta.extra["export"]["scores"] == "model"
    assert sorted(os.listdir(tmp_path)) == sorted([ckpt.name, out.name])


def test_export_int8_cli_with_calibration(tmp_path, cli, export_checkpoint):
    from deepmine.export.parity import synthetic_cutouts

    ckpt, _ = export_checkpoint(tmp_path, "lensflow")
    cal, _ = synthetic_cutouts(32, (1, 36, 36), seed=1)
    np.save(tmp_path / "cal.npy", cal)
    out = tmp_path / "q.onnx"
    rc, stdout, err = cli("export", ckpt, "--out", out, "--int8", "--calibration", tmp_path / "cal.npy", "--json")
    assert rc == 0, err
    doc = json.loads(stdout)
    assert doc["metadata"]["precision"] == "int8" and "rp_change" in doc["metadata"]["parity"]["int8"]
    assert doc["content_hash"] == read_metadata(out)[1]["deepmine.content_hash"]


def test_unknown_architecture(tmp_path, cli, export_checkpoint):
    ckpt, _ = export_checkpoint(tmp_path, "lensflow")
    data = torch.load(ckpt, weights_only=True)
    data["architecture"] = "nosuchnet"
    torch.save(data, ckpt)
    rc, out, err = cli("export", ckpt, "--out", tmp_path / "m.onnx")
    _one_line_error(rc, out, err, str(ckpt), "nosuchnet")
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("content", [b"not a checkpoint at all", b"PK\x03\x04 truncated zip"])
def test_corrupt_checkpoint(tmp_path, cli, content):
    ckpt = tmp_path / "bad.pt"
    ckpt.write_bytes(content)
    rc, out, err = cli("export", ckpt, "--out", tmp_path / "m.onnx")
    _one_line_error(rc, out, err, str(ckpt), "checkpoint")
    assert os.listdir(tmp_path) == ["bad.pt"]


def test_truncated_checkpoint(tmp_path, cli, export_checkpoint):
    ckpt, _ = export_checkpoint(tmp_path, "lensflow")
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    rc, out, err = cli("export", ckpt, "--out", tmp_path / "m.onnx")
    _one_line_error(rc, out, err, str(ckpt))
    assert not (tmp_path / "m.onnx").exists()


def test_unwritable_output(tmp_path, cli, export_checkpoint):
    ckpt, _ = export_checkpoint(tmp_path, "lensflow")
    rc, out, err = cli("export", ckpt, "--out", tmp_path / "missing" / "m.onnx")
    _one_line_error(rc, out, err, "missing", "does not exist")
    (tmp_path / "adir").mkdir()
    _one_line_error(*cli("export", ckpt, "--out", tmp_path / "adir"), "adir", "is a folder")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write to a read-only folder")
def test_read_only_output_folder(tmp_path, cli, export_checkpoint):
    ckpt, _ = export_checkpoint(tmp_path, "lensflow")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        _one_line_error(*cli("export", ckpt, "--out", locked / "m.onnx"), "not writable")
    finally:
        locked.chmod(0o700)


def test_option_errors(tmp_path, cli, export_checkpoint):
    ckpt, _ = export_checkpoint(tmp_path, "lensflow")
    out = tmp_path / "m.onnx"
    _one_line_error(*cli("export", ckpt, "--out", out, "--int8"), "--int8 needs --calibration")
    _one_line_error(*cli("export", ckpt, "--out", out, "--int8", "--fp16", "--calibration", ckpt), "choose one")
    _one_line_error(*cli("export", ckpt, "--out", out, "--calibration", ckpt), "only used with --int8")
    _one_line_error(*cli("export", ckpt, "--out", out, "--level", "all"), "--level")
    (tmp_path / "bad.npy").write_bytes(b"garbage")
    _one_line_error(*cli("export", ckpt, "--out", out, "--cutouts", tmp_path / "bad.npy"), "bad.npy", ".npy")
    np.save(tmp_path / "wrong.npy", np.zeros((4, 3, 8, 8), np.float32))
    _one_line_error(*cli("export", ckpt, "--out", out, "--cutouts", tmp_path / "wrong.npy"), "expected N×1×36×36")
    _one_line_error(*cli("export", tmp_path / "none.pt", "--out", out), "none.pt", "not found")
    assert not out.exists()


def test_export_lensgenerator_checkpoint(tmp_path, cli, export_checkpoint):
    from deepmine.training.registry import available_models

    if "lensgenerator" not in available_models():
        pytest.skip("the LensGenerator is not registered in this tree")
    ckpt, gen = export_checkpoint(tmp_path, "lensgenerator", latent_dim=8, features=4, size=16)
    out = tmp_path / "gen.onnx"
    rc, stdout, err = cli("export", ckpt, "--out", out)
    assert rc == 0, err
    meta, _ = read_metadata(out)
    assert meta.task == "generator" and meta.input_shape == [8] and meta.parity["fp32"]["max_abs_image"] <= 1e-5
    assert meta.extra["export"]["images"] == "model.images"
    import onnxruntime as ort

    z = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    (img,) = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"latent": z})
    with torch.no_grad():
        want = gen.eval().images(torch.from_numpy(z)).numpy()
    assert img.shape == (3, 3, 16, 16) and 0.0 <= img.min() and img.max() <= 1.0
    np.testing.assert_allclose(img, want, atol=1e-5)


def test_export_without_check_or_optimisation(tmp_path, cli, export_checkpoint):
    ckpt, _ = export_checkpoint(tmp_path, "lensflow")
    out = tmp_path / "m.onnx"
    rc, stdout, err = cli("export", ckpt, "--out", out, "--no-check", "--no-optimize")
    assert rc == 0, err
    assert "parity     not checked (--no-check)" in stdout
    meta, _ = read_metadata(out)
    assert meta.parity == {"checked": False} and meta.extra["export"]["optimization"] == "none"


def test_evaluation_figures_go_into_the_metadata(tmp_path, cli, export_checkpoint):
    """--evaluation: a JSON object of figures measured on an export of the checkpoint (issue 17:
    the bundled model carries its σ curve) lands in metadata.extra["evaluation"], with the file
    name and sha256; a file that is not a JSON object is one line naming it."""
    from deepmine.inference.metadata import file_sha256

    ckpt, _ = export_checkpoint(tmp_path, "lensflow")
    ev = tmp_path / "evaluation.json"
    ev.write_text(json.dumps({"sigmas": [0.0, 0.2], "offsets": {"default": {"0.2": {"rp": 0.5}}}}))
    out = tmp_path / "m.onnx"
    rc, _, err = cli("export", ckpt, "--out", out, "--evaluation", ev)
    assert rc == 0, err and "evaluation evaluation.json" in err
    got = read_metadata(out)[0].extra["evaluation"]
    assert got["offsets"]["default"]["0.2"]["rp"] == 0.5 and got["file"] == "evaluation.json"
    assert got["file_sha256"] == file_sha256(ev)
    (tmp_path / "list.json").write_text("[1, 2]")
    _one_line_error(*cli("export", ckpt, "--out", tmp_path / "b.onnx", "--evaluation", tmp_path / "list.json"),
                    "list.json", "expected a JSON object")
    (tmp_path / "bad.json").write_text("{oops")
    _one_line_error(*cli("export", ckpt, "--out", tmp_path / "b.onnx", "--evaluation", tmp_path / "bad.json"),
                    "bad.json", "not valid JSON")
