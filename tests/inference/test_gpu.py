"""The CUDA execution provider (issue 23): run where onnxruntime-gpu and a GPU are present,
skipped with the reason elsewhere (CI is CPU-only); the provider report runs everywhere."""
from importlib import metadata

import numpy as np
import pytest

from deepmine.inference.session import provider_report

REPORT = provider_report()
needs_cuda = pytest.mark.skipif(not REPORT["cuda"], reason=f"no usable CUDA provider: {REPORT['reason']}")


def _installed(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def test_provider_report_matches_the_installed_distributions():
    import onnxruntime as ort

    for name in ("onnxruntime", "onnxruntime-gpu"):
        assert REPORT["distributions"].get(name) == _installed(name)
    assert REPORT["available"] == list(ort.get_available_providers())
    if REPORT["cuda"]:
        assert "CUDAExecutionProvider" in REPORT["available"] and REPORT["reason"] == ""
    else:
        assert REPORT["reason"]  # always says why not
    if _installed("onnxruntime") and _installed("onnxruntime-gpu"):
        assert "both onnxruntime and onnxruntime-gpu" in REPORT["reason"]


def test_info_providers_says_why(cli):
    rc, out, err = cli("info", "--providers")
    assert rc == 0, err
    assert "providers" in out and "CPUExecutionProvider" in out
    assert ("usable" in out) and (REPORT["cuda"] or REPORT["reason"].split(";")[0] in out)


def test_cuda_refused_clearly_without_the_provider(cli, tmp_path):
    if REPORT["cuda"]:
        pytest.skip("CUDA is usable here")
    np.save(tmp_path / "x.npy", np.zeros((4, 3, 64, 64), np.uint8))
    rc, out, err = cli("scan", tmp_path / "x.npy", "--out", tmp_path / "c.fits", "--device", "cuda")
    assert rc != 0 and "Traceback" not in err and "--device cuda" in err


@needs_cuda
def test_cuda_scan_records_the_provider_and_matches_the_cpu(tmp_path):
    from deepmine.inference.model import load_model
    from deepmine.inference.scan.scanner import scan

    x = np.random.default_rng(0).integers(0, 256, (3000, 3, 64, 64)).astype(np.uint8)
    np.save(tmp_path / "x.npy", x)
    gpu = scan([str(tmp_path / "x.npy")], None, str(tmp_path / "g.fits"), device="cuda", batch_size=1024)
    cpu = scan([str(tmp_path / "x.npy")], None, str(tmp_path / "c.fits"), device="cpu", batch_size=1024)
    assert gpu.provider == "CUDAExecutionProvider" and cpu.provider == "CPUExecutionProvider"
    d = np.max(np.abs(np.asarray(gpu.table["logit"]) - np.asarray(cpu.table["logit"])))
    assert d <= 1e-4, d
    assert np.array_equal(np.asarray(gpu.table["ordinality"]) > 0.995, np.asarray(cpu.table["ordinality"]) > 0.995)
    m = load_model(None, device="cuda")
    assert m.provider == "CUDAExecutionProvider"


@needs_cuda
def test_cuda_iobinding_handles_a_partial_last_batch_and_changing_batch_sizes():
    from deepmine.inference.model import load_model

    x = np.random.default_rng(1).integers(0, 256, (777, 3, 64, 64)).astype(np.uint8)
    ref = load_model(None, device="cpu").predict(x, 256)[0]
    m = load_model(None, device="cuda")
    for b in (256, 100, 1024):
        assert np.max(np.abs(m.predict(x, b)[0] - ref)) <= 1e-4
