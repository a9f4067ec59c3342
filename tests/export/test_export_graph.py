"""Graph rewrites of deepmine.export.graph on hand-built ONNX graphs (no torch needed)."""
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("torch")  # deepmine.export imports torch
pytestmark = pytest.mark.torch

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from deepmine.export.graph import fold_batchnorm, op_counts, optimize_offline, toposort  # noqa: E402


def _bn_inits(prefix, c, rng):
    return [
        numpy_helper.from_array(rng.uniform(0.5, 2, c).astype(np.float32), f"{prefix}_s"),
        numpy_helper.from_array(rng.uniform(-1, 1, c).astype(np.float32), f"{prefix}_b"),
        numpy_helper.from_array(rng.uniform(-1, 1, c).astype(np.float32), f"{prefix}_m"),
        numpy_helper.from_array(rng.uniform(0.5, 2, c).astype(np.float32), f"{prefix}_v"),
    ]


def _graph(conv_bias=True):
    """x → BN → Tanh → Conv → BN → Relu: one BN to turn affine, one to fold into the conv."""
    rng = np.random.default_rng(0)
    inits = _bn_inits("bn0", 3, rng) + _bn_inits("bn1", 4, rng)
    inits.append(numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "w"))
    conv_in = ["t", "w"]
    if conv_bias:
        inits.append(numpy_helper.from_array(rng.normal(size=4).astype(np.float32), "cb"))
        conv_in.append("cb")
    nodes = [
        helper.make_node("BatchNormalization", ["x", "bn0_s", "bn0_b", "bn0_m", "bn0_v"], ["y0"], epsilon=1e-3),
        helper.make_node("Tanh", ["y0"], ["t"]),
        helper.make_node("Conv", conv_in, ["c"]),
        helper.make_node("BatchNormalization", ["c", "bn1_s", "bn1_b", "bn1_m", "bn1_v"], ["y1"]),
        helper.make_node("Relu", ["y1"], ["out"]),
    ]
    g = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 4, 6, 6])], inits,
    )  # fmt: skip
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _run(model, x):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


@pytest.mark.parametrize("conv_bias", [True, False])
def test_fold_batchnorm_is_exact_and_removes_every_bn(conv_bias):
    model = _graph(conv_bias)
    folded, counts = fold_batchnorm(model)
    onnx.checker.check_model(folded)
    assert counts == {"into_conv": 1, "to_affine": 1}
    ops = op_counts(folded)
    assert "BatchNormalization" not in ops and ops["Mul"] == 1 and ops["Add"] == 1 and ops["Conv"] == 1
    x = np.random.default_rng(1).normal(size=(5, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(_run(folded, x), _run(model, x), atol=2e-5)
    assert op_counts(model)["BatchNormalization"] == 2  # the input is not modified


def test_offline_optimisation_keeps_results_and_standard_ops():
    folded, _ = fold_batchnorm(_graph())
    opt = optimize_offline(folded, "basic")
    assert all(n.domain in ("", "ai.onnx") for n in opt.graph.node)
    x = np.random.default_rng(2).normal(size=(2, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(_run(opt, x), _run(folded, x), atol=1e-5)


def test_toposort_orders_nodes():
    model = _graph()
    shuffled = onnx.ModelProto.FromString(model.SerializeToString())
    nodes = list(shuffled.graph.node)[::-1]
    del shuffled.graph.node[:]
    shuffled.graph.node.extend(nodes)
    ordered = toposort(shuffled)
    onnx.checker.check_model(ordered)
    assert [n.op_type for n in ordered.graph.node] == [n.op_type for n in model.graph.node]
