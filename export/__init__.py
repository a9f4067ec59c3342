"""deepmine.export — torch → ONNX with deepmine metadata, parity checks, optimisation, quantisation.

Public API::

    from deepmine.export import export_model, export_checkpoint, metadata_for

    export_checkpoint("runs/eznet/model.pt", "eznet.onnx")                   # fp32, checked
    export_checkpoint("model.pt", "eznet-int8.onnx", int8_calibration=cutouts)
    export_model(model, "m.onnx", metadata_for(model), example)

Needs torch, onnx, onnxscript and onnxruntime (the ``[train]`` extra), imported on first use.
"""
_LAZY = {
    "export_model": "exporter", "export_checkpoint": "exporter", "metadata_for": "exporter",
    "content_hash": "exporter", "stamp": "exporter", "ParityError": "exporter",
    "ExportError": "graph", "ExportWarning": "graph", "fold_batchnorm": "graph", "op_counts": "graph",
    "optimize_offline": "graph", "torch_to_onnx": "graph",
}  # fmt: skip

__all__ = list(_LAZY)


def __getattr__(name):
    # torch, onnx and onnxscript are imported on first use of the API, not with the package, so
    # ``deepmine export --help`` (deepmine.export.cli) works on a torch-free install.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
