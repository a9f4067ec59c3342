"""Scan with models exported by deepmine.export from deepmine.training (torch needed to build them)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch


@pytest.mark.parametrize("name,overrides", [
    ("eznet", {"table": [{"kernels": 8, "kernel": 5, "height": 32, "width": 32},
                         {"kernels": 8, "kernel": 3, "height": 8, "width": 8, "repeat": 2},
                         {"kernels": 8, "kernel": 1, "height": 1, "width": 1}]}),
    ("lensflow", {}),
])
def test_scan_of_an_exported_model_matches_torch(tmp_path, name, overrides, blobs):
    export = pytest.importorskip("deepmine.export")
    training = pytest.importorskip("deepmine.training")
    from deepmine.inference.catalog.io import read_catalog
    from deepmine.inference.preprocess import prepare_batch
    from deepmine.inference.scan.scanner import scan

    torch.manual_seed(0)
    model = training.create_model(name, **overrides).eval()
    meta = export.metadata_for(model)
    path = export.export_model(model, tmp_path / f"{name}.onnx", meta, np.zeros(meta.input_shape, np.float32))
    cutouts = blobs(70, shape=tuple(meta.input_shape), seed=4)
    np.save(tmp_path / "c.npy", cutouts)
    result = scan(tmp_path / "c.npy", path, tmp_path / "cat.ecsv", batch_size=32, formats=["ecsv"], progress=False,
                  top=5, mosaic=tmp_path / "top.png")
    table = read_catalog(result.catalog)
    assert table.meta["DM_META"]["architecture"] == name and len(table) == 70
    with torch.inference_mode():
        x = torch.from_numpy(prepare_batch(cutouts, meta.preprocessing))
        expect = model.positive_logit(model(x)).reshape(-1).numpy()
    np.testing.assert_allclose(table["logit"], expect, atol=1e-4, rtol=1e-4)
    assert result.n_top == 5 and result.mosaic.stat().st_size > 0
