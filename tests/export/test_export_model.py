"""deepmine.export.export_model on small torch modules: graph, parity, metadata, precision."""
import copy
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.torch

from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from deepmine.export import ExportWarning, ParityError, content_hash, export_model, op_counts  # noqa: E402
from deepmine.export import parity as parity_mod  # noqa: E402
from deepmine.inference.errors import InputError  # noqa: E402
from deepmine.inference.metadata import ModelMetadata, read_metadata  # noqa: E402
from deepmine.inference.onnxhash import verify_content_hash  # noqa: E402
from deepmine.inference.preprocess import prepare_batch  # noqa: E402


class TinyNet(nn.Module):
    """conv → BN → tanh, then an EZnet-like block BN → tanh → conv on a concatenation with a
    resized copy of the input, then a dropout head with two softmax scores."""

    def __init__(self, c=3):
        super().__init__()
        self.conv1 = nn.Conv2d(c, 6, 3)
        self.bn1 = nn.BatchNorm2d(6)
        self.bn2 = nn.BatchNorm2d(6 + c)
        self.conv2 = nn.Conv2d(6 + c, 5, 3)
        self.fc = nn.Linear(5 * 4 * 4, 12)
        self.drop = nn.Dropout(0.5)
        self.out = nn.Linear(12, 2)
        g = torch.Generator().manual_seed(1)
        for bn in (self.bn1, self.bn2):  # non-trivial running statistics to fold
            bn.running_mean.copy_(torch.rand(bn.num_features, generator=g) - 0.5)
            bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
            bn.weight.data.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
            bn.bias.data.copy_(torch.rand(bn.num_features, generator=g) - 0.5)

    def forward(self, x):
        y = torch.tanh(self.bn1(self.conv1(x)))
        y = torch.cat([y, F.interpolate(x, size=y.shape[-2:], mode="bilinear", align_corners=False)], 1)
        y = self.conv2(torch.tanh(self.bn2(y)))
        y = F.interpolate(y, size=(4, 4), mode="bilinear", align_corners=False)
        return self.out(self.drop(F.relu(self.fc(y.flatten(1)))))


class TinyGenerator(nn.Module):
    def __init__(self, latent=8):
        super().__init__()
        self.fc = nn.Linear(latent, 4 * 4 * 4)
        self.up = nn.ConvTranspose2d(4, 3, 4, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, z):
        return torch.tanh(self.bn(self.up(self.fc(z).reshape(-1, 4, 4, 4))))


def _meta(**kw):
    base = dict(architecture="tiny", input_shape=[3, 16, 16], bands=["i", "r", "g"],
                preprocessing={"kind": "percentile", "low": 0.5, "high": 99.5})  # fmt: skip
    base.update(kw)
    return ModelMetadata(**base)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(0)
    model = TinyNet().train()  # export must switch to eval and restore the mode
    path = tmp_path_factory.mktemp("export") / "tiny.onnx"
    export_model(model, path, _meta(training={"seed": 7}), np.zeros((3, 16, 16), np.float32), scores="softmax")
    return model, path


def test_fp32_export_graph_and_metadata(tiny):
    model, path = tiny
    assert model.training, "export left the model in eval mode"
    proto = onnx.load(str(path))
    ops = op_counts(proto)
    assert "BatchNormalization" not in ops and "Dropout" not in ops, ops
    assert [i.name for i in proto.graph.input] == ["image"]
    assert [o.name for o in proto.graph.output] == ["logit", "probability"]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch axis
    meta, props = read_metadata(path)
    assert meta.architecture == "tiny" and meta.precision == "fp32" and meta.training == {"seed": 7}
    export = meta.extra["export"]
    assert export["exporter"] == "dynamo" and export["optimization"] == "basic"
    assert export["batchnorm_folded"]["to_affine"] >= 1  # bn2 follows a concatenation, not a conv
    p = meta.parity
    assert p["passed"] and p["fp32"]["max_abs_probability"] <= 1e-5 and p["fp32"]["batch_1"]["passed"]
    assert p["n"] == 64 and p["source"].startswith("64 ")
    # the hash: onnx-based and torch/onnx-free byte-level verification agree
    stored = props["deepmine.content_hash"]
    assert stored == content_hash(proto)
    assert verify_content_hash(path) == {"stored": stored, "computed": stored, "ok": True}


@pytest.mark.parametrize("n", [1, 2, 5])
def test_onnx_matches_torch_eval_for_any_batch(tiny, n):
    model, path = tiny
    x = prepare_batch(np.random.default_rng(n).normal(size=(n, 3, 16, 16)), {"kind": "percentile"})
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logit, prob = sess.run(None, {"image": x})
    model.eval()
    with torch.no_grad():
        s = model(torch.from_numpy(x)).double()
    model.train()
    want = (s[:, 1] - s[:, 0]).numpy()
    assert logit.shape == (n,) and prob.shape == (n,)
    np.testing.assert_allclose(logit, want, atol=1e-5)
    np.testing.assert_allclose(prob, 1 / (1 + np.exp(-want)), atol=1e-6)


def test_failed_parity_writes_nothing_and_keeps_old_file(tmp_path, monkeypatch):
    real = parity_mod.torch_outputs

    def off(wrapper, inputs, batch_size=64):
        out = real(wrapper, inputs, batch_size)
        return [o + 1e-3 for o in out]

    monkeypatch.setattr(parity_mod, "torch_outputs", off)
    path = tmp_path / "m.onnx"
    path.write_bytes(b"previous model")
    with pytest.raises(ParityError, match=r"fp32 parity check failed: max \|Δ probability\| 0.001.*not written"):
        export_model(TinyNet(), path, _meta(), np.zeros((2, 3, 16, 16), np.float32), scores="softmax")
    assert path.read_bytes() == b"previous model"
    assert os.listdir(tmp_path) == ["m.onnx"]  # no temporary file left behind


def test_bad_arguments_are_one_line_input_errors(tmp_path):
    x = np.zeros((2, 3, 16, 16), np.float32)
    with pytest.raises(InputError, match="folder .* does not exist"):
        export_model(TinyNet(), tmp_path / "no" / "m.onnx", _meta(), x, scores="softmax")
    with pytest.raises(InputError, match="example image has shape"):
        export_model(TinyNet(), tmp_path / "m.onnx", _meta(), np.zeros((2, 3, 8, 8)), scores="softmax")
    with pytest.raises(InputError, match="int8 and fp16"):
        export_model(TinyNet(), tmp_path / "m.onnx", _meta(), x, int8_calibration=x, fp16=True)
    with pytest.raises(InputError, match="at least 8"):
        export_model(TinyNet(), tmp_path / "m.onnx", _meta(), x, int8_calibration=x)
    with pytest.raises(InputError, match="cannot tell how architecture 'tiny'"):
        export_model(TinyNet(), tmp_path / "m.onnx", _meta(), x)
    assert os.listdir(tmp_path) == []


def test_int8_export_records_rp_change_and_quantises(tmp_path):
    torch.manual_seed(3)
    cal, _ = parity_mod.synthetic_cutouts(48, (3, 16, 16), seed=9)
    path = export_model(TinyNet(), tmp_path / "q.onnx", _meta(), np.zeros((2, 3, 16, 16), np.float32),
                        scores="softmax", int8_calibration=cal)  # fmt: skip
    meta, _ = read_metadata(path)
    assert meta.precision == "int8"
    q = meta.parity["int8"]
    assert q["labels"] == "true labels" and abs(q["rp_change"] - (q["rp_int8"] - q["rp_fp32"])) < 1e-12
    assert meta.parity["fp32"]["passed"]
    assert meta.extra["export"]["int8"]["calibration_samples"] == 48
    ops = op_counts(onnx.load(str(path)))
    assert ops.get("QuantizeLinear", 0) > 0 and ops.get("DequantizeLinear", 0) > 0
    x = prepare_batch(cal[:4], meta.preprocessing)
    logit, prob = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": x})
    assert logit.dtype == np.float32 and np.all(np.isfinite(logit)) and prob.shape == (4,)


def test_int8_beyond_rp_tolerance_warns_but_writes(tmp_path, monkeypatch):
    def bad(fp32, int8, labels, tolerance=0.01):
        return {"rp_fp32": 0.9, "rp_int8": 0.8, "rp_change": -0.1, "rp_tolerance": tolerance,
                "labels": "true labels", "passed": False}  # fmt: skip

    monkeypatch.setattr(parity_mod, "rp_change", bad)
    cal, _ = parity_mod.synthetic_cutouts(16, (3, 16, 16), seed=2)
    with pytest.warns(ExportWarning, match=r"ranking performance by -0.1000"):
        path = export_model(TinyNet(), tmp_path / "q.onnx", _meta(), cal[:2], scores="softmax",
                            int8_calibration=cal, optimize=False)  # fmt: skip
    meta, _ = read_metadata(path)
    assert meta.parity["passed"] is False and meta.parity["int8"]["rp_change"] == -0.1
    assert meta.extra["export"]["optimization"] == "none"


def test_fp16_export_keeps_float32_io(tmp_path):
    path = export_model(TinyNet(), tmp_path / "h.onnx", _meta(), np.zeros((2, 3, 16, 16), np.float32),
                        scores="softmax", fp16=True)  # fmt: skip
    meta, _ = read_metadata(path)
    assert meta.precision == "fp16" and meta.parity["fp16"]["passed"]
    assert meta.parity["fp16"]["atol"] == parity_mod.TOLERANCES["fp16"]
    assert meta.extra["export"]["fp16"]["converter"] == "onnxruntime.transformers.float16"
    proto = onnx.load(str(path))
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in proto.graph.initializer)


def test_generator_export(tmp_path):
    torch.manual_seed(0)
    gen = TinyGenerator()
    gen.output_range = (-1.0, 1.0)  # tanh head: mapped to 0..1 by the wrapper
    meta = ModelMetadata(architecture="tinygen", task="generator", input_shape=[8], bands=["i", "r", "g"],
                         preprocessing={"kind": "none"}, outputs={"image": "N×3×8×8 in 0..1"})  # fmt: skip
    path = export_model(gen, tmp_path / "g.onnx", meta, np.zeros((2, 8), np.float32))
    got, _ = read_metadata(path)
    assert got.task == "generator" and got.parity["fp32"]["max_abs_image"] <= 1e-5
    proto = onnx.load(str(path))
    assert [i.name for i in proto.graph.input] == ["latent"] and [o.name for o in proto.graph.output] == ["image"]
    assert "BatchNormalization" not in op_counts(proto)
    z = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    (img,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"latent": z})
    assert img.shape == (3, 3, 8, 8) and img.min() >= 0.0 and img.max() <= 1.0
    with torch.no_grad():
        want = (gen.eval()(torch.from_numpy(z)).numpy() + 1) / 2
    np.testing.assert_allclose(img, want, atol=1e-5)


def test_check_batch_sources():
    meta = _meta()
    given = np.random.default_rng(0).random((10, 3, 16, 16)).astype(np.float32)
    b = parity_mod.check_batch(meta, cutouts=given)
    assert b["source"] == "10 given cutouts" and b["labels"] is None and b["inputs"].dtype == np.float32
    with pytest.raises(InputError, match="expected N×3×16×16"):
        parity_mod.check_batch(meta, cutouts=given[:, :2])
    lc = parity_mod.check_batch(_meta(input_shape=[3, 32, 32]), n=8)  # i, r, g at 0.168″: LensCrafter's
    assert lc["source"].endswith("LensCrafter cutouts (lenses and non-lens scenes)")
    assert lc["inputs"].shape == (8, 3, 32, 32) and lc["labels"].tolist() == [1] * 4 + [0] * 4
    odd = parity_mod.check_batch(_meta(bands=["u", "z", "y"]), n=6)  # bands LensCrafter lacks
    assert odd["source"].startswith("6 synthetic scenes") and odd["labels"].sum() == 3
    assert 0.0 <= odd["inputs"].min() and odd["inputs"].max() <= 1.0


def test_rp_change_without_labels_uses_fp32_decisions():
    fp32 = np.linspace(-3, 3, 40)
    r = parity_mod.rp_change(fp32, fp32[::-1].copy(), None)
    assert r["rp_fp32"] == 1.0 and r["rp_int8"] == -1.0 and not r["passed"]
    assert parity_mod.rp_change(fp32, fp32 + 1e-3, None)["passed"]


def test_dynamo_failure_falls_back_with_the_reason_recorded(tmp_path, monkeypatch):
    real = torch.onnx.export

    def dynamo_broken(*args, dynamo=True, **kwargs):
        if dynamo:
            raise RuntimeError("unsupported operator in this test")
        return real(*args, dynamo=False, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", dynamo_broken)
    with pytest.warns(ExportWarning, match="falling back to the TorchScript exporter"):
        path = export_model(TinyNet(), tmp_path / "m.onnx", _meta(), np.zeros((2, 3, 16, 16), np.float32),
                            scores="softmax")  # fmt: skip
    meta, _ = read_metadata(path)
    info = meta.extra["export"]
    assert info["exporter"] == "torchscript" and "unsupported operator in this test" in info["fallback_reason"]
    assert meta.parity["passed"] and "BatchNormalization" not in op_counts(onnx.load(str(path)))


def test_parity_allows_torchs_own_float32_error_and_no_more(tmp_path):
    """A deep, confident classifier differs from its own float64 run by more than 1e-5 in
    probability; the check then allows atol + 2 × that error (and still catches real mismatches)."""

    class Confident(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(3)
            self.layers = nn.Sequential(*[nn.Sequential(nn.Conv2d(8 if i else 3, 8, 3, padding=1), nn.Tanh())
                                          for i in range(12)])  # fmt: skip
            self.fc = nn.Linear(8 * 16 * 16, 2)
            with torch.no_grad():
                self.fc.weight.mul_(20.0)

        def forward(self, x):
            return self.fc(self.layers(x).flatten(1))

    from deepmine.export.wrappers import wrap

    model = Confident().eval()
    wrapper, _ = wrap(model, "classifier", "tiny", "softmax")
    x = np.random.default_rng(0).standard_normal((64, 3, 16, 16)).astype(np.float32)
    r = parity_mod.float32_rounding(wrapper, x)
    with torch.no_grad():
        p32 = wrapper(torch.from_numpy(x))[1].double().numpy()
        p64 = copy.deepcopy(wrapper).double()(torch.from_numpy(x).double())[1].numpy()
    assert r == pytest.approx(np.max(np.abs(p32 - p64))) and r > 0
    ref = [np.zeros(4), np.full(4, 0.5)]
    near = [np.zeros(4), np.full(4, 0.5 + 1e-5 + 1.5 * r)]
    assert not parity_mod.compare("classifier", ref, near, 1e-5)["passed"]
    res = parity_mod.compare("classifier", ref, near, 1e-5, rounding=r)
    assert res["passed"] and res["tolerance"] == pytest.approx(1e-5 + 2 * r)
    far = [np.zeros(4), np.full(4, 0.5 + 1e-5 + 2.5 * r)]
    assert not parity_mod.compare("classifier", ref, far, 1e-5, rounding=r)["passed"]
