"""Reduced precision: int8 static QDQ quantisation and float16 conversion.

int8
    :func:`onnxruntime.quantization.quantize_static` in the QDQ format (QuantizeLinear /
    DequantizeLinear pairs around each quantised operator — standard ONNX, which onnxruntime
    turns into integer kernels at load time), per-channel int8 weights, uint8 activations
    (onnxruntime's recommended "U8S8" for x86 CPUs), min/max calibration over the given
    cutouts; only the arithmetic operators (:data:`QUANTIZED_OPS`) are quantised. The graph
    first goes through onnxruntime's quantisation pre-processing (symbolic shape inference and
    graph optimisation).
float16
    ``onnxruntime.transformers.float16.convert_float_to_float16`` with float32 graph inputs and
    outputs kept (``keep_io_types``), so a scanner feeds and reads float32 whatever the
    precision. This is the converter of onnxconverter-common as shipped inside onnxruntime, so
    no extra dependency is needed; onnxconverter-common 1.16 itself mis-types a graph output
    that also feeds another node (``logit`` feeds ``probability``) and produces a graph
    onnxruntime refuses. onnx has no float16 converter of its own.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import onnx

from .graph import toposort

FP16_CONVERTER = "onnxruntime.transformers.float16"

#: Operators quantised to int8: the ones that do the arithmetic. Quantising the cheap ones too
#: (Resize, Concat, MaxPool, Add, Mul) wraps every one in Quantize/Dequantize pairs and made
#: EZnet (49 Resize + 99 Concat) slower than float32 in our measurements; see
#: benchmarks/bench_export.py.
QUANTIZED_OPS = ("Conv", "Gemm", "MatMul")


class _ArrayReader:
    """A ``CalibrationDataReader`` over a float32 N×… array in batches."""

    def __init__(self, input_name: str, data: np.ndarray, batch_size: int = 32):
        self.input_name = input_name
        self.data = np.ascontiguousarray(data, dtype=np.float32)
        self.batch_size = batch_size
        self.pos = 0

    def get_next(self):
        if self.pos >= self.data.shape[0]:
            return None
        batch = self.data[self.pos : self.pos + self.batch_size]
        self.pos += self.batch_size
        return {self.input_name: batch}

    def rewind(self):
        self.pos = 0


def quantize_int8(
    model: onnx.ModelProto, input_name: str, calibration: np.ndarray, *, per_channel: bool = True
) -> tuple[onnx.ModelProto, dict]:
    """Static int8 QDQ quantisation of a float32 graph calibrated on ``calibration``.

    Parameters
    ----------
    model : onnx.ModelProto
        The float32 graph (already optimised).
    input_name : str
        Its input name.
    calibration : float32 array
        Preprocessed model inputs (N×C×H×W) spanning the data the model will see.

    Returns
    -------
    The quantised graph and a description of the settings for the metadata.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="deepmine-int8-") as tmp:
        src, pre, dst = (os.fspath(Path(tmp) / n) for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        onnx.save(model, src)
        quant_pre_process(src, pre, skip_symbolic_shape=False)
        quantize_static(
            pre, dst, _ArrayReader(input_name, calibration),
            quant_format=QuantFormat.QDQ, per_channel=per_channel,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax, op_types_to_quantize=list(QUANTIZED_OPS),
        )  # fmt: skip
        quantized = onnx.load(dst)
    settings = {
        "format": "QDQ",
        "weights": "int8 per-channel" if per_channel else "int8 per-tensor",
        "activations": "uint8",
        "calibration": "minmax",
        "operators": list(QUANTIZED_OPS),
        "calibration_samples": int(calibration.shape[0]),
    }
    return quantized, settings


def convert_fp16(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict]:
    """Float16 weights and arithmetic, float32 graph inputs/outputs."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.ModelProto.FromString(model.SerializeToString())
    del model.graph.value_info[:]  # stale float32 annotations would contradict the new types
    converted = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False)
    return toposort(converted), {"converter": FP16_CONVERTER, "io_types": "float32"}
