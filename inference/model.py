"""An exported classifier, ready to score cutouts with onnxruntime (never torch).

Contract (used by the scanner, the Dask backend, the selection function and ``inspect``)::

    model = load_model(path, device="auto", threads=None)   # or path=None: the bundled model
    model.metadata      # ModelMetadata: bands, input_shape (C×H×W), preprocessing, ...
    model.provider      # provider actually in use, from session.get_providers()
    model.path, model.sha256
    logit, probability = model.predict(images)   # images N×C×H×W uint8 or float; float32 (N,)

    get_model(path, device, threads)   # per-process cache: one session per (model, device, threads)

``predict`` runs :func:`~deepmine.inference.preprocess.prepare_batch` (the one preprocessing
implementation) and feeds onnxruntime fixed-size batches (``batch_size``, default 256), the
last one padded with zeros, so the graph always sees the same shape (static shapes let the
CUDA EP keep its cuDNN algorithm choice; on CPU it costs at most one partial batch).

Providers: ``device="cpu"`` → CPUExecutionProvider; ``"cuda"`` → CUDAExecutionProvider, an
:class:`~deepmine.inference.errors.InputError` when onnxruntime-gpu is not installed or the
provider fails to load (onnxruntime itself falls back to CPU silently, so the providers of the
created session are checked); ``"auto"`` → CUDA when it loads, otherwise CPU with a warning
(only when a CUDA provider was offered and failed). ``threads`` sets ``intra_op_num_threads``
(default: onnxruntime's choice, one per core); graph optimisation is ``ORT_ENABLE_ALL``.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from .errors import InputError, file_error
from .metadata import ModelMetadata, file_sha256, read_metadata
from .preprocess import DEFAULT_HIGH, DEFAULT_LOW, percentile_normalization, prepare_batch
from .session import DEVICES, open_session

__all__ = ["Model", "load_model", "get_model", "resolve_model_path", "BUNDLED_MODEL_DIR", "DEVICES"]

#: Where the demo's bundled default model lives (``inference/models/*.onnx``).
BUNDLED_MODEL_DIR = Path(__file__).resolve().parent / "models"
DEFAULT_BATCH = 256


def resolve_model_path(path: str | os.PathLike | None) -> Path:
    """``path`` as a Path, or the bundled default model when ``path`` is None.

    The bundled model is ``inference/models/default.onnx`` if present, else the only ``.onnx``
    file in that folder. Without one, the error says to pass ``--model``.
    """
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise file_error(p, "model file not found")
        if p.is_dir():
            raise file_error(p, "expected an .onnx model file, got a directory")
        return p
    default = BUNDLED_MODEL_DIR / "default.onnx"
    if default.is_file():
        return default
    found = sorted(BUNDLED_MODEL_DIR.glob("*.onnx")) if BUNDLED_MODEL_DIR.is_dir() else []
    if len(found) == 1:
        return found[0]
    raise InputError("--model: no model given and no bundled model installed; pass --model MODEL.onnx "
                     "(an exported classifier, see `deepmine export`)")


class Model:
    """An onnxruntime session of a deepmine classifier plus its metadata.

    Build it with :func:`load_model` (or :func:`get_model`). Attributes: ``metadata``,
    ``provider`` (the provider actually used), ``providers`` (all of the session's), ``path``,
    ``sha256`` (``sha256:<hex>`` of the file), ``scoring_id`` (graph and weights only), ``session``, ``input_name``, ``threads``,
    ``device`` (as requested).
    """

    def __init__(self, path: Path, session, metadata: ModelMetadata, props: dict, device: str,
                 threads: int | None):
        self.path = Path(path)
        self.session = session
        self.metadata = metadata
        self.props = props
        self.device = device
        self.threads = threads
        self.providers = list(session.get_providers())
        self.provider = self.providers[0]
        self.sha256 = file_sha256(self.path)
        inputs = session.get_inputs()
        if len(inputs) != 1:
            raise file_error(self.path, f"expected one graph input 'image', found {[i.name for i in inputs]}")
        self.input_name = inputs[0].name
        #: the graph input's element type: ``"float"`` (preprocessed 0..1 input, the default),
        #: ``"float16"`` or ``"uint8"`` (normalised uint8 cutouts, scaled by 1/255 inside the graph)
        self.input_type = str(inputs[0].type).removeprefix("tensor(").removesuffix(")")
        #: what the graph's input holds: ``"float32"`` (preprocessed, 0..1), ``"uint8"`` or ``"flux"``
        self.graph_input = metadata.preprocessing.get("graph_input", "float32")
        self._local = threading.local()
        batch_dim = inputs[0].shape[0] if inputs[0].shape else None
        #: a batch size fixed in the graph itself (None when the batch axis is dynamic)
        self.fixed_batch = batch_dim if isinstance(batch_dim, int) and batch_dim > 0 else None
        outs = [o.name for o in session.get_outputs()]
        if "logit" not in outs and "probability" not in outs:
            raise file_error(self.path, f"classifier has neither a 'logit' nor a 'probability' output (has {outs})")
        self.output_names = [n for n in ("logit", "probability") if n in outs]

    @property
    def scoring_id(self) -> str:
        """The model's scoring identity (graph and weights only; :mod:`deepmine.inference.identity`)."""
        if getattr(self, "_scoring_id", None) is None:
            from .identity import scoring_identity

            self._scoring_id = scoring_identity(self.path)
        return self._scoring_id

    # ------------------------------------------------------------------------------------
    @property
    def input_shape(self) -> tuple[int, int, int]:
        """C×H×W the model expects."""
        c, h, w = (int(v) for v in self.metadata.input_shape)
        return c, h, w

    def batch_size(self, requested: int | None = None) -> int:
        """The batch size actually used: the graph's fixed batch if it has one, else ``requested``."""
        if self.fixed_batch is not None:
            return self.fixed_batch
        b = DEFAULT_BATCH if requested is None else int(requested)
        if b < 1:
            raise InputError(f"--batch-size: must be at least 1, got {b}")
        return b

    def prepare(self, images) -> np.ndarray:
        """Preprocess stored cutouts (N×C×H×W) into the graph's input (NaN/inf → 0).

        float32 in 0..1 for the usual graphs; for a graph exported with ``--graph-input uint8``
        the normalised uint8 cutouts themselves (float fluxes are percentile-normalised first);
        for ``--graph-input flux`` the float32 fluxes as they are (uint8 cutouts are refused).
        """
        if self.graph_input == "flux":  # the graph normalises fluxes itself
            x = np.asarray(images)
            if x.dtype == np.uint8:
                raise InputError(f"{self.path}: this model takes raw fluxes (exported with --graph-input flux) and "
                                 "normalises them itself; these cutouts are uint8, already normalised — scan them "
                                 "with a model exported with --graph-input float32 or uint8")
            return np.ascontiguousarray(x, dtype=np.float32)
        if self.input_type == "uint8":  # the graph divides by 255 itself: feed uint8 (a quarter of the bytes)
            x = np.asarray(images)
            if x.dtype != np.uint8:
                x = percentile_normalization(x, **_percentiles(self.metadata.preprocessing))
            return np.ascontiguousarray(x)
        x = prepare_batch(images, self.metadata.preprocessing)
        if self.metadata.preprocessing.get("kind") == "none" and not np.all(np.isfinite(x)):
            x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
        return x

    def run_prepared(self, x: np.ndarray, batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Score preprocessed input (:meth:`prepare`) in fixed-size batches (last one zero-padded)."""
        b = self.batch_size(batch_size)
        n = x.shape[0]
        dtype = np.uint8 if self.input_type == "uint8" else np.float32
        logit = np.empty(n, dtype=np.float32)
        prob = np.empty(n, dtype=np.float32)
        for start in range(0, n, b):
            chunk = x[start:start + b]
            k = chunk.shape[0]
            if k < b:
                padded = np.zeros((b,) + x.shape[1:], dtype=dtype)
                padded[:k] = chunk
                chunk = padded
            lo, pr = self._run(np.ascontiguousarray(chunk, dtype=dtype))
            logit[start:start + k] = lo[:k]
            prob[start:start + k] = pr[:k]
        return logit, prob

    def _run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.provider == "CUDAExecutionProvider":
            outs = self._run_cuda(batch)
        else:
            outs = self.session.run(self.output_names, {self.input_name: batch})
        got = dict(zip(self.output_names, outs))
        if "logit" in got:
            lo = np.asarray(got["logit"], dtype=np.float32).reshape(batch.shape[0], -1)[:, -1]
            pr = (np.asarray(got["probability"], dtype=np.float32).reshape(batch.shape[0], -1)[:, -1]
                  if "probability" in got else _sigmoid(lo))
        else:  # probability only (an older export): log-odds, saturating where p is 0 or 1
            pr = np.asarray(got["probability"], dtype=np.float32).reshape(batch.shape[0], -1)[:, -1]
            with np.errstate(divide="ignore"):
                lo = (np.log(pr) - np.log1p(-pr)).astype(np.float32)
        return lo, pr

    def _run_cuda(self, batch: np.ndarray) -> list[np.ndarray]:
        """One batch through the CUDA provider with IOBinding.

        The input is copied into a device buffer kept per thread and batch shape (no
        allocation per batch), the outputs stay on the device until the run ends and only the
        N logits come back. One buffer per thread, so threads sharing a Model do not race.
        """
        import onnxruntime as ort

        key = (batch.shape, batch.dtype.str)
        local = self._local
        if getattr(local, "key", None) != key:
            local.key = key
            local.input = ort.OrtValue.ortvalue_from_shape_and_type(batch.shape, batch.dtype, "cuda", 0)
            local.binding = self.session.io_binding()
            local.binding.bind_ortvalue_input(self.input_name, local.input)
            for name in self.output_names:
                local.binding.bind_output(name, "cuda", 0)
        local.input.update_inplace(batch)
        self.session.run_with_iobinding(local.binding)
        return [o.numpy() for o in local.binding.get_outputs()]

    def predict(self, images, batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(logit, probability)``, float32 (N,) each, for stored cutouts N×C×H×W.

        ``images`` are uint8 (already percentile-normalised, the HSC convention) or float
        fluxes; they are checked against the model's C×H×W and preprocessed as its metadata
        says. Work is done in chunks of ``batch_size`` so memory stays bounded.
        """
        x = np.asarray(images)
        if x.ndim == 3:
            x = x[None]
        check_cutout_shape(x.shape, self.metadata, "images")
        b = self.batch_size(batch_size)
        n = x.shape[0]
        logit = np.empty(n, dtype=np.float32)
        prob = np.empty(n, dtype=np.float32)
        for start in range(0, n, b):
            lo, pr = self.run_prepared(self.prepare(x[start:start + b]), b)
            logit[start:start + b] = lo
            prob[start:start + b] = pr
        return logit, prob

    def describe(self) -> dict:
        """Provenance of this model and session (JSON-compatible)."""
        return {"model": str(self.path), "model_sha256": self.sha256, "provider": self.provider,
                "providers": self.providers, "threads": self.threads, "device": self.device,
                "architecture": self.metadata.architecture, "input_shape": list(self.input_shape),
                "bands": list(self.metadata.bands)}

    def __repr__(self) -> str:
        return f"Model({str(self.path)!r}, {self.metadata.architecture}, provider={self.provider})"


def _percentiles(spec) -> dict:
    return {"low": float(spec.get("low", DEFAULT_LOW)), "high": float(spec.get("high", DEFAULT_HIGH))}


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).astype(np.float32)


def check_cutout_shape(shape: tuple, metadata: ModelMetadata, name: str) -> None:
    """Refuse cutouts whose C×H×W differs from the model's, saying what the model expects."""
    c, h, w = (int(v) for v in metadata.input_shape)
    got = tuple(int(v) for v in shape[1:])
    if got != (c, h, w):
        raise InputError(
            f"{name}: cutouts are {'×'.join(map(str, got))} but the model expects {c}×{h}×{w} "
            f"(bands {', '.join(metadata.bands)}, {h}×{w} pixels at {metadata.pixel_scale}\"/px)"
        )


def load_model(path: str | os.PathLike | None = None, *, device: str = "auto", threads: int | None = None) -> Model:
    """Open an exported deepmine classifier with onnxruntime.

    Parameters
    ----------
    path : .onnx file, or None for the bundled default model
    device : ``"auto"``, ``"cpu"`` or ``"cuda"`` (see the module docstring)
    threads : onnxruntime intra-op threads (None: onnxruntime's default, one per core)

    Raises
    ------
    InputError
        Missing or unreadable file, not a deepmine classifier, CUDA requested but unavailable.
    """

    p = resolve_model_path(path)
    meta, props = read_metadata(p)
    if meta.task != "classifier":
        raise file_error(p, f"is a {meta.task} model; scanning needs a classifier")
    sess = open_session(p, device=device, threads=threads)
    return Model(p, sess, meta, props, device, threads)


_CACHE: dict[tuple, Model] = {}
_CACHE_LOCK = threading.Lock()


def get_model(path: str | os.PathLike | None = None, device: str = "auto", threads: int | None = None) -> Model:
    """:func:`load_model` with a per-process cache, so a worker keeps one session per model.

    The key is (resolved path, file size and mtime, device, threads): a rewritten model file is
    reloaded.
    """
    p = resolve_model_path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns, device, threads)
    with _CACHE_LOCK:
        model = _CACHE.get(key)
        if model is None:
            model = load_model(p, device=device, threads=threads)
            _CACHE[key] = model
        return model
