"""export --graph-input uint8 / flux (issue 23): preprocessing inside the ONNX graph, generated
from the one preprocessing definition and checked against it (inference/preprocess.py)."""
import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")
import onnxruntime as ort  # noqa: E402

from deepmine.export.graph import percentile_model  # noqa: E402
from deepmine.inference.model import load_model  # noqa: E402
from deepmine.inference.preprocess import percentile_normalization, prepare_batch  # noqa: E402

SMALL = dict(table=[{"kernels": 4, "kernel": 3, "height": 12, "width": 12},
                    {"kernels": 4, "kernel": 3, "height": 6, "width": 6},
                    {"kernels": 4, "kernel": 1, "height": 1, "width": 1}], size=16, hidden=8)


def _adversarial(shape, seed):
    rng = np.random.default_rng(seed)
    n = 24
    x = (rng.normal(0, 1, (n, *shape)) * rng.lognormal(0, 4, (n, shape[0], 1, 1))).astype(np.float32)
    c = shape[0]
    x[0, 0, 2, 2] = np.nan
    x[1, 1 % c] = np.nan                              # no finite pixel
    x[2, 2 % c] = 3.0                                 # constant band
    x[3, 0, :5] = np.inf
    x[4, 1 % c, :2] = -np.inf
    x[5, 0] = np.round(x[5, 0] * 2) / 2               # heavy ties
    x[6, 2 % c] = np.nan
    x[6, 2 % c, 0, 0] = 1.0                           # one finite pixel
    x[7, 1 % c] = np.nan
    x[7, 1 % c, 0, :2] = [1.0, 2.0]                   # two
    x[8] = rng.integers(0, 3, shape).astype(np.float32)  # three values only
    x[9] *= 1e30                                      # huge
    x[10] *= 1e-30                                    # tiny
    return x


@pytest.mark.parametrize("low,high", [(0.5, 99.5), (0.0, 100.0), (1.0, 99.0), (25.0, 75.0)])
@pytest.mark.parametrize("shape", [(3, 64, 64), (1, 13, 7)])
def test_percentile_in_the_graph_equals_the_one_implementation(low, high, shape):
    sess = ort.InferenceSession(percentile_model(shape, low, high).SerializeToString(),
                                providers=["CPUExecutionProvider"])
    for seed in range(3):
        x = _adversarial(shape, seed)
        got = sess.run(None, {"flux": x})[0]
        ref = prepare_batch(x, {"kind": "percentile", "low": low, "high": high})
        assert got.dtype == np.float32
        assert np.max(np.abs(got - ref)) <= 1e-5
        # bit for bit in fact: the same float64 arithmetic, then the same float32 division
        assert np.array_equal(np.rint(got * 255).astype(np.uint8), percentile_normalization(x, low, high))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    import torch
    from typer.testing import CliRunner

    from deepmine.inference.cli.app import app
    from deepmine.training import create_model
    from deepmine.training.checkpoint import save_checkpoint

    d = tmp_path_factory.mktemp("graph_input")
    torch.manual_seed(0)
    ckpt = save_checkpoint(d / "eznet.pt", create_model("eznet", **SMALL), {"recipe_name": "test", "seed": 1})
    out = {}
    for gi in ("float32", "uint8", "flux"):
        r = CliRunner().invoke(app, ["export", str(ckpt), "--out", str(d / f"{gi}.onnx"), "--graph-input", gi])
        assert r.exit_code == 0, r.output
        out[gi] = d / f"{gi}.onnx"
    return out


def test_graph_inputs_give_the_float_graphs_scores(exported):
    ref = load_model(exported["float32"], device="cpu")
    u8 = load_model(exported["uint8"], device="cpu")
    fx = load_model(exported["flux"], device="cpu")
    assert (u8.input_type, u8.graph_input, fx.input_type, fx.graph_input) == ("uint8", "uint8", "float", "flux")
    assert u8.metadata.parity["graph_input"]["passed"] and fx.metadata.parity["graph_input"]["passed"]
    cut = np.random.default_rng(0).integers(0, 256, (100, 3, 16, 16)).astype(np.uint8)
    assert np.array_equal(u8.predict(cut)[0], ref.predict(cut)[0])
    flux = _adversarial((3, 16, 16), 5)
    np.testing.assert_allclose(fx.predict(flux)[0], ref.predict(flux)[0], atol=1e-5)
    np.testing.assert_allclose(u8.predict(flux)[0], ref.predict(flux)[0], atol=1e-5)


def test_uint8_cutouts_refused_by_a_flux_graph(exported, tmp_path, cli):
    np.save(tmp_path / "u8.npy", np.zeros((4, 3, 16, 16), np.uint8))
    rc, out, err = cli("scan", tmp_path / "u8.npy", "--model", exported["flux"], "--out", tmp_path / "c.fits")
    assert rc != 0 and "Traceback" not in err and "raw fluxes" in err and len(err.strip().splitlines()) == 1


def test_graph_input_refused_for_histogram_matching(tmp_path, cli):
    import torch

    from deepmine.training import create_model
    from deepmine.training.checkpoint import save_checkpoint

    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "lf.pt", create_model("lensflow", size=36, filters=[4, 6, 8], hidden=[16, 8]),
                           {"recipe_name": "test", "seed": 1})
    rc, out, err = cli("export", ckpt, "--out", tmp_path / "lf.onnx", "--graph-input", "uint8")
    assert rc != 0 and "percentile" in err and "Traceback" not in err
    assert not (tmp_path / "lf.onnx").exists()


def test_bench_times_every_graph_input(exported, cli):
    import json

    rc, out, err = cli("bench", exported["float32"], exported["uint8"], exported["flux"], "--n", "64",
                       "--repeats", "1", "--device", "cpu", "--json")
    assert rc == 0, err
    rows = [json.loads(line) for line in out.strip().splitlines()]
    assert [r["graph_input"] for r in rows] == ["float32", "uint8", "flux"]
    assert all(r["session_per_s"] > 0 and r["end_to_end_per_s"] > 0 for r in rows)
