"""The one place that builds onnxruntime sessions.

:func:`open_session` picks the execution providers for a ``device`` (``"auto"``: CUDA when
onnxruntime-gpu can load it, else CPU; ``"cpu"``; ``"cuda"``: CUDA or a clear error), sets the
graph optimisation level and thread counts, turns onnxruntime's private exception types into
one-line :class:`~deepmine.inference.errors.InputError`\\ s naming the file, and checks
``session.get_providers()`` after creation, because onnxruntime silently falls back to the CPU
when the CUDA provider cannot load (SPEC section 9). Model loading (:mod:`.model`), metadata
reading (:mod:`.metadata`), the generator (:mod:`.generate`) and ``deepmine info`` all use it.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

from .errors import InputError, file_error, first_line

DEVICES = ("auto", "cpu", "cuda")


def providers_for(device: str) -> list[str]:
    """onnxruntime providers to ask for on ``device`` (refuses ``cuda`` without the CUDA provider)."""
    import onnxruntime as ort

    if device not in DEVICES:
        raise InputError(f"--device: expected one of {', '.join(DEVICES)}, got {device!r}")
    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in available:
        if device == "cuda":
            raise InputError("--device cuda: onnxruntime has no CUDA provider here "
                             f"(available: {', '.join(available)}); install deepmine[gpu] (onnxruntime-gpu) "
                             "or use --device cpu")
        return ["CPUExecutionProvider"]
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


def open_session(path: str | os.PathLike, *, device: str = "cpu", threads: int | None = None,
                 optimize: bool = True, what: str = "onnxruntime cannot load the model"):
    """An ``onnxruntime.InferenceSession`` for ``path``.

    Parameters
    ----------
    path : .onnx file
    device : ``"auto"``, ``"cpu"`` or ``"cuda"``
    threads : intra-op threads (None: onnxruntime's default, one per core); inter-op is 1
    optimize : ``ORT_ENABLE_ALL`` graph optimisation (True) or none (False: metadata reads)
    what : the start of the error message when onnxruntime cannot load the file
    """
    import onnxruntime as ort

    p = Path(path)
    if threads is not None and (int(threads) != threads or int(threads) < 1):
        raise InputError(f"--threads: must be at least 1 (a whole number), got {threads!r}")
    providers = providers_for(device)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                     else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    opts.log_severity_level = 3
    opts.inter_op_num_threads = 1
    if threads is not None:
        opts.intra_op_num_threads = int(threads)
    try:
        sess = ort.InferenceSession(str(p), opts, providers=providers)
    except Exception as exc:  # onnxruntime raises private exception types
        raise file_error(p, f"{what} ({first_line(exc)})") from None
    used = sess.get_providers()
    if providers[0] == "CUDAExecutionProvider" and used[0] != "CUDAExecutionProvider":
        if device == "cuda":
            raise InputError("--device cuda: the CUDA provider failed to load (check the CUDA/cuDNN "
                             "libraries onnxruntime-gpu needs); use --device cpu")
        warnings.warn("CUDA provider failed to load; scanning on CPU", RuntimeWarning, stacklevel=3)
    return sess
