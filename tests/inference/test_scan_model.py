"""deepmine.inference.model: loading an exported classifier and scoring with onnxruntime."""
import warnings

import numpy as np
import pytest

from deepmine.inference.errors import InputError
from deepmine.inference.model import get_model, load_model, resolve_model_path


@pytest.fixture(scope="module")
def toy(tmp_path_factory, make_classifier):
    return make_classifier(tmp_path_factory.mktemp("m") / "toy.onnx")


def test_predict_matches_the_graph_computed_with_numpy_for_any_tail(toy, blobs, toy_logit):
    model = load_model(toy, device="cpu", threads=1)
    assert model.provider == "CPUExecutionProvider"
    assert model.sha256.startswith("sha256:") and model.metadata.bands == ["i", "r", "g"]
    x = blobs(37, seed=1)
    for b in (1, 8, 37, 64):  # tail padded to the fixed batch size, padding never leaks into the result
        logit, prob = model.predict(x, batch_size=b)
        assert logit.dtype == np.float32 and prob.dtype == np.float32 and logit.shape == (37,)
        np.testing.assert_allclose(logit, toy_logit(x / 255.0), atol=1e-4)
        np.testing.assert_allclose(prob, 1 / (1 + np.exp(-logit.astype(np.float64))), atol=1e-6)


def test_float_input_is_percentile_normalised_first(toy, blobs):
    from deepmine.inference.preprocess import percentile_normalization

    model = load_model(toy, device="cpu")
    raw = blobs(5, seed=2, dtype=np.float32)
    np.testing.assert_allclose(model.predict(raw)[0], model.predict(percentile_normalization(raw))[0], atol=1e-6)


def test_fixed_batch_graph_is_fed_padded_batches(tmp_path, make_classifier, blobs, toy_logit):
    path = make_classifier(tmp_path / "fixed.onnx", fixed_batch=16)
    model = load_model(path, device="cpu")
    assert model.batch_size(256) == 16
    x = blobs(21, seed=3)
    np.testing.assert_allclose(model.predict(x, batch_size=256)[0], toy_logit(x / 255.0), atol=1e-4)


def test_wrong_cutout_shape_is_refused_saying_what_the_model_expects(toy):
    model = load_model(toy, device="cpu")
    with pytest.raises(InputError, match=r"cutouts are 3×32×32 but the model expects 3×64×64 \(bands i, r, g"):
        model.predict(np.zeros((2, 3, 32, 32), np.uint8))


def test_cuda_request_without_cuda_provider_is_a_clear_error(toy, monkeypatch):
    import onnxruntime as ort

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(InputError, match="--device cuda: onnxruntime has no CUDA provider"):
        load_model(toy, device="cuda")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_model(toy, device="auto").provider == "CPUExecutionProvider"
    with pytest.raises(InputError, match="--device: expected one of auto, cpu, cuda"):
        load_model(toy, device="gpu")


def test_bad_model_files(tmp_path, make_classifier):
    with pytest.raises(InputError, match="missing.onnx: model file not found"):
        load_model(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(InputError, match="junk.onnx: not a readable ONNX model"):
        load_model(junk)
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Identity", ["image"], ["logit"])], "g",
                          [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N"])],
                          [helper.make_tensor_value_info("logit", TensorProto.FLOAT, ["N"])])
    plain = tmp_path / "plain.onnx"
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    plain.write_bytes(m.SerializeToString())
    with pytest.raises(InputError, match="plain.onnx: not a deepmine model"):
        load_model(plain)
    with pytest.raises(InputError, match="--threads: must be at least 1"):
        load_model(make_classifier(tmp_path / "t.onnx"), threads=0)


def test_get_model_keeps_one_session_per_model_and_reloads_a_rewritten_file(tmp_path, make_classifier):
    path = make_classifier(tmp_path / "c.onnx")
    a = get_model(path, "cpu", 1)
    assert get_model(path, "cpu", 1) is a
    assert get_model(path, "cpu", 2) is not a
    make_classifier(path, gain=5.0)
    import os

    os.utime(path, ns=(a.path.stat().st_mtime_ns + 10**9,) * 2)
    b = get_model(path, "cpu", 1)
    assert b is not a and b.sha256 != a.sha256


def test_no_model_and_no_bundled_model_says_pass_model(monkeypatch, tmp_path, make_classifier):
    import deepmine.inference.model as mod

    monkeypatch.setattr(mod, "BUNDLED_MODEL_DIR", tmp_path / "none")
    with pytest.raises(InputError, match="pass --model"):
        resolve_model_path(None)
    (tmp_path / "none").mkdir()
    make_classifier(tmp_path / "none" / "default.onnx")
    assert resolve_model_path(None) == tmp_path / "none" / "default.onnx"
    assert load_model(None).metadata.architecture == "toy"
