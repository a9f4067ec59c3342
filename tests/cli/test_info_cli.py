"""``deepmine info MODEL.onnx``: readable metadata, JSON, hash verification, torch-free."""
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")  # to export the model under test; `info` itself is torch-free
onnx = pytest.importorskip("onnx")
pytestmark = pytest.mark.torch

from deepmine.export import export_model  # noqa: E402
from deepmine.inference.metadata import ModelMetadata  # noqa: E402


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 3)
        self.fc = torch.nn.Linear(2, 2)

    def forward(self, x):
        return self.fc(self.conv(x).mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    torch.manual_seed(0)
    meta = ModelMetadata(
        architecture="tiny", input_shape=[1, 12, 12], bands=["i"], pixel_scale=0.06,
        preprocessing={"kind": "histogram_match", "template": np.linspace(0, 1, 256).tolist()},
        architecture_config={"filters": [2]}, training={"seed": 5, "heldout": {"ranking_performance": 0.91}},
    )  # fmt: skip
    path = tmp_path_factory.mktemp("info") / "tiny.onnx"
    return export_model(Tiny(), path, meta, np.zeros((2, 1, 12, 12), np.float32), scores="softmax")


def test_info_prints_metadata_readably(cli, model_path):
    rc, out, err = cli("info", model_path)
    assert rc == 0, err
    flat = " ".join(out.split())  # rich wraps long rows at the console width
    for text in ("architecture", "tiny", "fp32", "image tensor(float) [batch×1×12×12]", "logit [batch]",
                 "0.06 arcsec/pixel", "kind=histogram_match", "256 numbers",
                 "training.seed", "training.heldout.ranking_performance", "0.91", "parity.fp32.passed",
                 "export.exporter", "dynamo", "(verified)"):  # fmt: skip
        assert text in flat, (text, out)


def test_info_json(cli, model_path):
    rc, out, err = cli("info", model_path, "--json")
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["metadata"]["architecture"] == "tiny" and doc["metadata"]["training"]["seed"] == 5
    assert doc["content_hash"]["ok"] is True and doc["content_hash"]["stored"].startswith("sha256:")
    assert doc["graph"]["inputs"][0]["name"] == "image" and doc["graph"]["inputs"][0]["shape"][1:] == [1, 12, 12]
    assert [o["name"] for o in doc["graph"]["outputs"]] == ["logit", "probability"]
    assert len(doc["metadata"]["preprocessing"]["template"]) == 256  # JSON is complete, not summarised


def test_info_detects_a_modified_model(cli, model_path, tmp_path):
    proto = onnx.load(str(model_path))
    w = proto.graph.initializer[0]
    arr = onnx.numpy_helper.to_array(w).copy()
    arr.flat[0] += 1.0
    w.CopyFrom(onnx.numpy_helper.from_array(arr, w.name))
    bad = tmp_path / "changed.onnx"
    bad.write_bytes(proto.SerializeToString())
    rc, out, err = cli("info", bad)
    assert rc == 2 and "MISMATCH" in out
    assert err.strip() == f"deepmine info: error: {bad}: content hash mismatch: the file was changed after export; re-export it"


def test_info_errors(cli, tmp_path):
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])  # fmt: skip
    plain = tmp_path / "plain.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(plain))
    rc, out, err = cli("info", plain)
    assert rc == 2 and "not a deepmine model" in err and len(err.strip().splitlines()) == 1
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00garbage" * 10)
    rc, out, err = cli("info", junk)
    assert rc == 2 and "junk.onnx" in err and len(err.strip().splitlines()) == 1
    rc, out, err = cli("info", tmp_path / "none.onnx")
    assert rc == 2 and "not found" in err


def test_info_runs_without_torch_and_onnx(model_path):
    code = textwrap.dedent(f"""
        import importlib.abc, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "onnx", "onnxscript"):
                    raise ImportError(name + " blocked")
        sys.meta_path.insert(0, Block())
        from deepmine.inference.cli.app import main
        rc = main(["info", {str(model_path)!r}, "--json"])
        assert "torch" not in sys.modules and "onnx" not in sys.modules
        sys.exit(rc)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["content_hash"]["ok"] is True
