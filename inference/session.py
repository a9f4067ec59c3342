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
_PRELOADED = False


def _preload_cuda() -> None:
    """Let onnxruntime-gpu find CUDA/cuDNN from the ``nvidia-*`` pip packages (once per process).

    ``onnxruntime.preload_dlls()`` (onnxruntime >= 1.21) loads ``libcudart``, ``libcublas``,
    ``libcurand`` and cuDNN from the nvidia-* wheels that torch or ``deepmine[gpu]`` installed, so
    no ``LD_LIBRARY_PATH`` is needed; it does nothing harmful where they are absent.
    """
    global _PRELOADED
    if _PRELOADED:
        return
    _PRELOADED = True
    import onnxruntime as ort

    if hasattr(ort, "preload_dlls") and "CUDAExecutionProvider" in ort.get_available_providers():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ort.preload_dlls(directory="")
        except Exception:  # a missing library shows up as the provider failing to load
            pass


def provider_report() -> dict:
    """Which onnxruntime distributions are installed, which providers they offer, and why not CUDA.

    Returns ``{"distributions": {name: version}, "available": [...], "cuda": bool, "reason": str}``;
    ``reason`` explains a missing CUDA provider (the CPU build only; both ``onnxruntime`` and
    ``onnxruntime-gpu`` installed, which leaves one of them shadowing the other; the CUDA
    libraries not loadable) and is empty when CUDA is usable.
    """
    from importlib import metadata

    import onnxruntime as ort

    dists = {}
    for name in ("onnxruntime", "onnxruntime-gpu"):
        try:
            dists[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    available = list(ort.get_available_providers())
    cuda = "CUDAExecutionProvider" in available
    reason = ""
    if len(dists) == 2:
        reason = ("both onnxruntime and onnxruntime-gpu are installed: they share one import name and "
                  "whichever was installed last wins; `pip uninstall -y onnxruntime onnxruntime-gpu && "
                  "pip install onnxruntime-gpu` (or `pip install 'deepmine[gpu]'` in a fresh environment)")
    if not cuda and not reason:
        reason = ("this onnxruntime is the CPU build; `pip install 'deepmine[gpu]'` in a fresh "
                  "environment installs onnxruntime-gpu")
    if cuda:
        _preload_cuda()
        missing = _missing_cuda_libraries()
        if missing:
            cuda = False
            reason = (f"the CUDA provider is built in but cannot load: {', '.join(missing)} not found "
                      "(install the nvidia-* CUDA 13 / cuDNN 9 wheels, e.g. with torch, or set LD_LIBRARY_PATH)")
    return {"distributions": dists, "onnxruntime": ort.__version__, "available": available,
            "cuda": cuda, "reason": reason, "file": str(Path(ort.__file__).parent)}


def _missing_cuda_libraries() -> list[str]:
    """Shared libraries the CUDA provider needs that cannot be opened in this process."""
    import ctypes

    missing = []
    for lib in ("libcudart.so.13", "libcublas.so.13", "libcublasLt.so.13", "libcurand.so.10", "libcudnn.so.9"):
        try:
            ctypes.CDLL(lib)
        except OSError:
            missing.append(lib)
    return missing


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


#: CUDA execution provider options: no TF32 (float32 models then give the CPU's logits to ~1e-5;
#: export --fp16 for speed), cuDNN's exhaustive algorithm search (once per batch shape).
CUDA_OPTIONS = {"use_tf32": "0", "cudnn_conv_algo_search": "EXHAUSTIVE"}


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
    if providers[0] == "CUDAExecutionProvider":
        _preload_cuda()
    opts = ort.SessionOptions()
    opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                     else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    opts.log_severity_level = 3
    opts.inter_op_num_threads = 1
    if threads is not None:
        opts.intra_op_num_threads = int(threads)
    try:
        sess = ort.InferenceSession(str(p), opts, providers=[
            (name, CUDA_OPTIONS) if name == "CUDAExecutionProvider" else name for name in providers])
    except Exception as exc:  # onnxruntime raises private exception types
        raise file_error(p, f"{what} ({first_line(exc)})") from None
    used = sess.get_providers()
    if providers[0] == "CUDAExecutionProvider" and used[0] != "CUDAExecutionProvider":
        if device == "cuda":
            raise InputError("--device cuda: the CUDA provider failed to load (check the CUDA/cuDNN "
                             "libraries onnxruntime-gpu needs); use --device cpu")
        warnings.warn("CUDA provider failed to load; scanning on CPU", RuntimeWarning, stacklevel=3)
    return sess
