"""Tiny deepmine classifiers built with ``onnx.helper`` (no torch), for scanner tests.

``make_classifier(path)`` writes a model whose logit is ``gain · (mean of the central
quarter − mean of the whole cutout)`` over all bands of the preprocessed input: objects with a
bright centre (a lens galaxy, an injected ring) rank high, blank cutouts score 0. The graph has
the deepmine I/O contract (input ``image`` N×C×H×W float32, outputs ``logit`` and
``probability`` (N,)) and deepmine metadata from ``ModelMetadata.to_props()``.

Import explicitly: ``from fixtures_models import make_classifier`` (tests/ is on sys.path).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from deepmine.inference.metadata import ModelMetadata


def make_classifier(path, *, shape=(3, 64, 64), bands=("i", "r", "g"), preprocessing=None, gain=20.0,
                    fixed_batch=None, architecture="toy", conv_channels=0):
    """Write the toy classifier to ``path`` and return the path.

    ``conv_channels`` > 0 adds a 3×3 conv + ReLU branch (heavier compute for timing tests) whose
    global mean is added to the logit with weight 0.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    c, h, w = shape
    batch = fixed_batch if fixed_batch else "N"
    y0, y1, x0, x1 = h // 4, h - h // 4, w // 4, w - w // 4
    inits = [
        numpy_helper.from_array(np.array([y0, x0], np.int64), "starts"),
        numpy_helper.from_array(np.array([y1, x1], np.int64), "ends"),
        numpy_helper.from_array(np.array([2, 3], np.int64), "axes"),
        numpy_helper.from_array(np.array([gain], np.float32), "gain"),
        numpy_helper.from_array(np.array([-1], np.int64), "flat"),
    ]
    nodes = [
        helper.make_node("Slice", ["image", "starts", "ends", "axes"], ["centre"]),
        helper.make_node("ReduceMean", ["centre"], ["m_centre"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("ReduceMean", ["image"], ["m_all"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Sub", ["m_centre", "m_all"], ["diff"]),
        helper.make_node("Mul", ["diff", "gain"], ["raw"]),
    ]
    last = "raw"
    if conv_channels:
        rng = np.random.default_rng(0)
        inits += [
            numpy_helper.from_array(rng.normal(0, 0.1, (conv_channels, c, 3, 3)).astype(np.float32), "cw"),
            numpy_helper.from_array(np.zeros(conv_channels, np.float32), "cb"),
            numpy_helper.from_array(np.array([0.0], np.float32), "zero"),
        ]
        nodes += [
            helper.make_node("Conv", ["image", "cw", "cb"], ["conv"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["conv"], ["relu"]),
            helper.make_node("Conv", ["relu", "cw2", "cb"], ["conv2"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["conv2"], ["relu2"]),
            helper.make_node("ReduceMean", ["relu2"], ["m_conv"], axes=[1, 2, 3], keepdims=0),
            helper.make_node("Mul", ["m_conv", "zero"], ["m_zero"]),
            helper.make_node("Add", ["raw", "m_zero"], ["raw2"]),
        ]
        inits.append(numpy_helper.from_array(rng.normal(0, 0.1, (conv_channels, conv_channels, 3, 3))
                                             .astype(np.float32), "cw2"))
        last = "raw2"
    nodes += [
        helper.make_node("Reshape", [last, "flat"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["probability"]),
    ]
    graph = helper.make_graph(
        nodes, "toy_classifier",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, c, h, w])],
        [helper.make_tensor_value_info("logit", TensorProto.FLOAT, [batch]),
         helper.make_tensor_value_info("probability", TensorProto.FLOAT, [batch])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = ModelMetadata(architecture=architecture, input_shape=list(shape), bands=list(bands),
                         preprocessing=preprocessing or {"kind": "percentile", "low": 0.5, "high": 99.5})
    for k, v in meta.to_props().items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.checker.check_model(model)
    Path(path).write_bytes(model.SerializeToString())
    return Path(path)


def toy_logit(images, gain=20.0):
    """The toy model's logit computed with numpy from preprocessed float input (N×C×H×W)."""
    x = np.asarray(images, dtype=np.float64)
    h, w = x.shape[2:]
    centre = x[:, :, h // 4:h - h // 4, w // 4:w - w // 4].mean(axis=(1, 2, 3))
    return (gain * (centre - x.mean(axis=(1, 2, 3)))).astype(np.float32)


def blobs(n, shape=(3, 64, 64), seed=0, dtype=np.uint8):
    """``n`` noisy cutouts, each with a Gaussian blob of random brightness at the centre.

    uint8 output is percentile-normalised per band (the HSC storage convention).
    """
    from deepmine.inference.preprocess import percentile_normalization

    rng = np.random.default_rng(seed)
    c, h, w = shape
    yy, xx = np.mgrid[:h, :w]
    r2 = (yy - h / 2) ** 2 + (xx - w / 2) ** 2
    amp = rng.uniform(0, 5, n)
    x = rng.normal(0, 1, (n, c, h, w)) + amp[:, None, None, None] * np.exp(-r2 / (2 * (h / 10) ** 2))
    x = x.astype(np.float32)
    return percentile_normalization(x) if dtype == np.uint8 else x.astype(dtype)
