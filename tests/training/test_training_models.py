"""LensFlow and EZnet: layer shapes against the seed's tables, registry, ONNX export parity."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

from deepmine.inference.errors import InputError  # noqa: E402
from deepmine.inference.metadata import ModelMetadata  # noqa: E402
from deepmine.training import available_models, create_model, register_model  # noqa: E402
from deepmine.training.eznet import read_block_table  # noqa: E402

# Seed Table 2.1: (type, data dimensionality) for layers 1..21
TABLE_2_1 = [
    ("convolution", (30, 96, 96)), ("tanh", (30, 96, 96)), ("pooling", (30, 48, 48)),
    ("convolution", (60, 44, 44)), ("tanh", (60, 44, 44)), ("pooling", (60, 22, 22)),
    ("convolution", (90, 18, 18)), ("tanh", (90, 18, 18)), ("pooling", (90, 9, 9)),
    ("flatten", (7290,)),
    ("linear", (1000,)), ("ReLU", (1000,)), ("dropout", (1000,)),
    ("linear", (800,)), ("ReLU", (800,)), ("dropout", (800,)),
    ("linear", (600,)), ("ReLU", (600,)), ("dropout", (600,)),
    ("linear", (2,)), ("softmax", (2,)),
]  # fmt: skip


def _leaf_output_shapes(model, x):
    shapes = []
    hooks = [
        m.register_forward_hook(lambda mod, inp, out: shapes.append((type(mod).__name__, tuple(out.shape[1:]))))
        for m in model.modules()
        if len(list(m.children())) == 0
    ]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return shapes


def test_lensflow_layers_match_table_2_1():
    model = create_model("lensflow").eval()
    assert model.layer_shapes == TABLE_2_1
    shapes = _leaf_output_shapes(model, torch.zeros(2, 1, 100, 100))
    kinds = {"Conv2d": "convolution", "Tanh": "tanh", "MaxPool2d": "pooling", "Flatten": "flatten",
             "Linear": "linear", "ReLU": "ReLU", "Dropout": "dropout"}  # fmt: skip
    measured = [(kinds[k], s) for k, s in shapes]
    assert measured == TABLE_2_1[:-1]  # the softmax is applied outside forward (raw scores)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(5, 5)] * 3 and all(c.padding == (0, 0) for c in convs)
    drops = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert drops == [0.5, 0.5, 0.5]


def _seed_table_4_1_shapes():
    """Expected (H, W, kernels, kernel size) of each of the 50 blocks, from the seed's table."""
    rows = [(1, 16, 5, 50), (1, 12, 4, 40), (1, 12, 3, 32), (1, 12, 3, 24), (6, 12, 3, 16),
            (10, 12, 3, 12), (20, 12, 3, 8), (10, 32, 1, 1)]  # fmt: skip
    out = []
    for repeat, kernels, k, size in rows:
        out += [(kernels, k, size)] * repeat
    return out


def test_eznet_default_is_the_seed_50_block_table():
    model = create_model("eznet").eval()
    expected = _seed_table_4_1_shapes()
    blocks = list(model.blocks)
    assert len(blocks) == 50
    for block, (kernels, k, size) in zip(blocks, expected):
        assert block.conv.out_channels == kernels
        assert block.conv.kernel_size == (k, k)
        assert block.size == (size, size)
    # measured outputs: every block's maps resized to its H×W; channels = maps of the last 2 blocks
    outs = []
    hooks = [b.register_forward_hook(lambda m, i, o: outs.append(tuple(o.shape[1:]))) for b in blocks]
    with torch.no_grad():
        scores = model(torch.rand(2, 3, 64, 64))
    for h in hooks:
        h.remove()
    assert outs == model.block_shapes
    prev = 3
    for (c, h, w), (kernels, _, size) in zip(outs, expected):
        assert (h, w) == (size, size)
        assert c == prev + kernels if prev is not None else True
        prev = kernels  # branching 2: next block keeps this block's maps + its own
    assert scores.shape == (2, 2)
    assert outs[-1] == (64, 1, 1)


def test_shipped_table_file_is_the_default():
    from importlib import resources

    from deepmine.training.eznet import DEFAULT_TABLE, normalize_table

    path = resources.files("deepmine.training") / "tables" / "eznet_hsc64.toml"
    rows, options = read_block_table(str(path))
    assert rows == normalize_table(DEFAULT_TABLE)
    assert options == {"in_channels": 3, "size": 64, "branching": 2, "hidden": 64}
    assert create_model("eznet", table=str(path)).block_shapes == create_model("eznet").block_shapes


def test_eznet_branching_and_concat_from_table(tmp_path):
    table = tmp_path / "t.toml"
    table.write_text(
        "branching = 3\nhidden = 8\nin_channels = 1\nsize = 32\n"
        "[[block]]\nkernels = 4\nkernel = 3\nsize = 20\n"
        "[[block]]\nkernels = 5\nkernel = 3\nsize = [12, 10]\nrepeat = 2\n"
        "[[block]]\nkernels = 6\nkernel = 1\nsize = 1\nconcat = false\n"
    )
    model = create_model("eznet", table=str(table))
    assert model.block_shapes == [(1 + 4, 20, 20), (1 + 4 + 5, 12, 10), (4 + 5 + 5, 12, 10), (6, 1, 1)]
    out = model(torch.rand(3, 1, 32, 32))
    assert out.shape == (3, 2)
    assert model.deepmine_config["input_shape"] == [1, 32, 32]
    # the resolved table rebuilds the same model without the file
    again = create_model("eznet", **model.deepmine_overrides)
    assert again.block_shapes == model.block_shapes


def test_eznet_table_from_ecsv(tmp_path):
    from astropy.table import Table

    t = Table({"kernels": [4, 6], "kernel": [3, 1], "height": [16, 1], "width": [16, 1], "repeat": [2, 1]})
    t.meta["hidden"] = 8
    path = tmp_path / "t.ecsv"
    t.write(path, format="ascii.ecsv")
    rows, options = read_block_table(path)
    assert [r["repeat"] for r in rows] == [2, 1] and options == {"hidden": 8}
    model = create_model("eznet", table=str(path), size=24)
    assert [b.size for b in model.blocks] == [(16, 16), (16, 16), (1, 1)]


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"table": [{"kernels": 4, "kernel": 3}]}, "missing 'height'"),
        ({"table": [{"kernels": 4, "kernel": 3, "size": 8, "colour": 1}]}, "unknown field(s) colour"),
        ({"table": [{"kernels": 4, "kernel": 9, "size": 8}], "size": 8}, "block 1 has a 9×9 kernel"),
        ({"table": [{"kernels": 0, "kernel": 3, "size": 8}]}, "kernels must be >= 1"),
        ({"table": [{"kernels": 2.5, "kernel": 3, "size": 8}]}, "kernels must be an integer"),
        ({"table": []}, "no blocks"),
        ({"table": "/nonexistent/table.toml"}, "table.toml: EZnet block table not found"),
        ({"bands": ["g"]}, "1 band names for 3 input channels"),
        ({"depth": 3}, "unknown option(s) depth"),
    ],
)
def test_eznet_bad_tables_are_clear_errors(overrides, message):
    with pytest.raises(InputError, match=None) as info:
        create_model("eznet", **overrides)
    assert message in str(info.value)


def test_registry_unknown_and_extensible():
    with pytest.raises(InputError, match="unknown model 'resnet'.*eznet.*lensflow"):
        create_model("resnet")
    with pytest.raises(InputError, match="unknown option"):
        create_model("lensflow", filterz=[1, 2, 3])

    @register_model("tiny-test-net")
    class Tiny(torch.nn.Module):
        def __init__(self, width: int = 2):
            super().__init__()
            self.lin = torch.nn.Linear(width, 2)

    assert "tiny-test-net" in available_models()
    assert create_model("Tiny-Test-Net", width=3).lin.in_features == 3


@pytest.mark.parametrize("name", ["lensflow", "eznet"])
def test_deepmine_config_is_valid_metadata(name):
    model = create_model(name)
    meta = ModelMetadata(**model.deepmine_config)
    assert meta.architecture == name and meta.task == "classifier"
    assert meta.preprocessing["kind"] == {"lensflow": "histogram_match", "eznet": "percentile"}[name]
    import json

    json.dumps(model.deepmine_config)
    json.dumps(model.deepmine_overrides)


def test_positive_logit_matches_the_probability_contract():
    scores = torch.tensor([[0.3, -1.2], [2.0, 2.5]])
    lf = create_model("lensflow", size=36, filters=[2, 2, 2], hidden=[4])
    p_softmax = torch.softmax(scores, 1)[:, 1]
    assert torch.allclose(torch.sigmoid(lf.positive_logit(scores)), p_softmax)
    ez = create_model("eznet", table=[{"kernels": 2, "kernel": 1, "size": 1}], size=8)
    assert torch.allclose(torch.sigmoid(ez.positive_logit(scores)), torch.sigmoid(scores)[:, 1])


class _Exported(torch.nn.Module):
    """The exported classifier contract: image → (logit, probability)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, image):
        logit = self.model.positive_logit(self.model(image))
        return logit, torch.sigmoid(logit)


@pytest.mark.parametrize("name", ["lensflow", "eznet"])
def test_onnx_dynamo_export_with_dynamic_batch_matches_torch(name, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    torch.manual_seed(0)
    model = create_model(name).eval()
    wrapper = _Exported(model).eval()
    c, h, w = model.deepmine_config["input_shape"]
    example = torch.rand(2, c, h, w)
    program = torch.onnx.export(
        wrapper, (example,), dynamo=True, input_names=["image"], output_names=["logit", "probability"],
        dynamic_shapes={"image": {0: torch.export.Dim("batch")}}, verbose=False,
    )  # fmt: skip
    path = tmp_path / f"{name}.onnx"
    program.save(str(path))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["logit", "probability"]
    for n in (1, 5):  # batch sizes other than the example's
        x = torch.rand(n, c, h, w)
        logit, prob = sess.run(None, {"image": x.numpy()})
        with torch.no_grad():
            ref_logit, ref_prob = wrapper(x)
        assert logit.shape == (n,)
        np.testing.assert_allclose(logit, ref_logit.numpy(), atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(prob, ref_prob.numpy(), atol=1e-6)
