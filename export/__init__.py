"""deepmine.export — torch → ONNX with deepmine metadata, parity checks, optimisation, quantisation.

Public API::

    from deepmine.export import export_model, export_checkpoint, metadata_for

    export_checkpoint("runs/eznet/model.pt", "eznet.onnx")                   # fp32, checked
    export_checkpoint("model.pt", "eznet-int8.onnx", int8_calibration=cutouts)
    export_model(model, "m.onnx", metadata_for(model), example)

Imports torch, onnx, onnxscript and onnxruntime (the ``[train]`` extra).
"""
from .exporter import ParityError, content_hash, export_checkpoint, export_model, metadata_for, stamp
from .graph import ExportError, ExportWarning, fold_batchnorm, op_counts, optimize_offline, torch_to_onnx

__all__ = [
    "export_model", "export_checkpoint", "metadata_for", "content_hash", "stamp",
    "ExportError", "ExportWarning", "ParityError", "fold_batchnorm", "op_counts", "optimize_offline", "torch_to_onnx",
]  # fmt: skip
