"""``export_model`` and ``export_checkpoint``: torch model → one frozen, checked ONNX file.

Pipeline (each step's result is recorded in the model's metadata, ``extra["export"]``):

1. wrap the model so the graph has deepmine's interface (:mod:`deepmine.export.wrappers`),
   in eval mode (dropout off, BatchNorm on its running statistics);
2. ``torch.onnx.export(..., dynamo=True)`` with a dynamic batch axis
   (:func:`deepmine.export.graph.torch_to_onnx`);
3. fold BatchNorm into constants (:func:`deepmine.export.graph.fold_batchnorm`) and, unless
   ``optimize=False``, save onnxruntime's offline-optimised graph (portable levels only);
4. parity check of the float32 graph against torch (on by default; a failure raises
   :class:`ParityError` and nothing is written);
5. optionally int8 static QDQ quantisation (judged on the change of ranking performance; a
   change beyond ``rp_tolerance`` is recorded and warned about, not refused) or float16
   conversion (judged on probabilities at a looser tolerance, refused on failure);
6. metadata (:class:`deepmine.inference.metadata.ModelMetadata`) and the content hash go into
   ``metadata_props``; the file is written atomically.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx

from deepmine.inference.atomic import atomic_path, check_writable
from deepmine.inference.errors import InputError
from deepmine.inference.metadata import HASH_KEY, METADATA_KEY, ModelMetadata
from deepmine.inference.preprocess import prepare_batch

from . import graph as _graph
from . import parity as _parity
from . import precision as _precision
from .graph import ExportError, ExportWarning
from .wrappers import io_names, wrap


class ParityError(ExportError):
    """The exported graph does not compute what the torch model computes."""


@dataclasses.dataclass
class _Stage:
    log: Callable[[str], None] | None

    def __call__(self, message: str) -> None:
        if self.log is not None:
            self.log(message)


def content_hash(model: onnx.ModelProto) -> str:
    """``sha256:<hex>`` of the serialised model without the ``deepmine.content_hash`` entry."""
    m = onnx.ModelProto.FromString(model.SerializeToString())
    _remove_props(m, {HASH_KEY})
    return "sha256:" + hashlib.sha256(m.SerializeToString()).hexdigest()


def _remove_props(model: onnx.ModelProto, keys) -> None:
    keep = [(p.key, p.value) for p in model.metadata_props if p.key not in keys]
    del model.metadata_props[:]
    for k, v in keep:
        model.metadata_props.add(key=k, value=v)


def stamp(model: onnx.ModelProto, metadata: ModelMetadata) -> onnx.ModelProto:
    """A copy of ``model`` carrying ``metadata`` and its content hash in ``metadata_props``."""
    m = onnx.ModelProto.FromString(model.SerializeToString())
    _remove_props(m, {METADATA_KEY, HASH_KEY})
    for k, v in metadata.to_props().items():
        m.metadata_props.add(key=k, value=v)
    m.producer_name = "deepmine"
    m.producer_version = metadata.deepmine_version
    digest = "sha256:" + hashlib.sha256(m.SerializeToString()).hexdigest()
    m.metadata_props.add(key=HASH_KEY, value=digest)
    return m


def _as_tensor(example, shape, task: str):
    import torch

    x = example if isinstance(example, torch.Tensor) else torch.from_numpy(np.asarray(example))
    x = x.detach().to(torch.float32).cpu()
    want = tuple(int(v) for v in shape)
    if x.ndim == len(want):
        x = x.unsqueeze(0)
    if tuple(x.shape[1:]) != want:
        what = "latent" if task == "generator" else "image"
        raise InputError(
            f"export: example {what} has shape {tuple(x.shape)}, but the metadata says N×{'×'.join(map(str, want))}"
        )
    return x


def export_model(
    model,
    path,
    metadata: ModelMetadata,
    example,
    *,
    check: bool = True,
    atol: float | None = None,
    int8_calibration=None,
    fp16: bool = False,
    optimize: bool = True,
    optimization_level: str = "basic",
    scores: str | None = None,
    check_cutouts=None,
    check_labels=None,
    check_size: int = 64,
    rp_tolerance: float = _parity.RP_TOLERANCE,
    log: Callable[[str], None] | None = None,
    graph_input: str = "float32",
) -> Path:
    """Export a torch model to a frozen ONNX file with deepmine metadata.

    Parameters
    ----------
    model : torch.nn.Module
        A classifier returning raw two-class scores (N, 2) (or a logit, see ``scores``), or a
        generator (``metadata.task == "generator"``) mapping latents to images.
    path : path-like
        Output ``.onnx`` file; written atomically, only if every check passes.
    metadata : ModelMetadata
        What the model expects and where it came from; ``precision``, ``parity`` and
        ``extra["export"]`` are filled in here.
    example : array or tensor
        One model input (C×H×W or L) or a batch of them; only its shape matters (a batch of 2
        is traced).
    check : bool
        Run the parity check (default). ``False`` records ``{"checked": False}``.
    atol : float, optional
        Max |Δ probability| (classifiers) or |Δ pixel| (generators) accepted; default 1e-5
        for fp32 and 5e-3 for fp16.
    int8_calibration : array, optional
        Cutouts as stored (N×C×H×W, uint8 or raw fluxes; preprocessed here with the model's
        preprocessing) to calibrate static int8 quantisation; giving them makes an int8 model.
    fp16 : bool
        Make a float16 model (float32 inputs/outputs kept), for GPU deployment.
    optimize : bool
        Save onnxruntime's offline-optimised graph (``optimization_level`` "basic" or
        "extended").
    scores : str, optional
        How the classifier's scores give the logit: "model" (its ``positive_logit``),
        "softmax", "sigmoid" or "logit"; default "model" when the model has
        ``positive_logit``, else from the architecture (see :mod:`deepmine.export.wrappers`).
    check_cutouts, check_labels : arrays, optional
        The parity batch (raw cutouts, optional 0/1 labels); default LensCrafter or synthetic
        scenes of ``check_size`` cutouts (see :mod:`deepmine.export.parity`).
    rp_tolerance : float
        Largest |ΔRP| of an int8 model before it is flagged (recorded and warned, not refused).
    log : callable, optional
        Receives one line per stage (the CLI's progress).

    Returns
    -------
    pathlib.Path of the written model.

    Raises
    ------
    InputError
        Bad arguments or an unwritable output path (checked before any work).
    ParityError
        The graph disagrees with torch beyond tolerance; nothing is written.
    """
    stage = _Stage(log)
    if int8_calibration is not None and fp16:
        raise InputError("export: choose one of int8 and fp16, not both")
    if metadata.task == "generator" and int8_calibration is not None:
        raise InputError("export: int8 quantisation is for classifiers; export the generator in fp32 or fp16")
    out = check_writable(path)
    precision = "int8" if int8_calibration is not None else "fp16" if fp16 else "fp32"
    if graph_input not in _graph.GRAPH_INPUTS:
        raise InputError(f"export: graph input must be one of {', '.join(_graph.GRAPH_INPUTS)}, got {graph_input!r}")
    if graph_input != "float32" and (metadata.task != "classifier"
                                     or metadata.preprocessing.get("kind") != "percentile"):
        raise InputError(f"export: --graph-input {graph_input} is for classifiers with percentile preprocessing "
                         f"(this model's is {metadata.preprocessing.get('kind')!r})")
    if atol is None:
        atol = _parity.TOLERANCES["fp16" if fp16 else "fp32"]
    if not atol > 0:
        raise InputError(f"export: atol must be positive, got {atol}")
    calibration = None
    if int8_calibration is not None:
        calibration = _calibration_inputs(int8_calibration, metadata)

    x = _as_tensor(example, metadata.input_shape, metadata.task)
    batch = _parity.check_batch(metadata, check_size, check_cutouts, check_labels) if check else None
    was_training = bool(getattr(model, "training", False))
    model.eval()
    try:
        wrapper, wrap_info = wrap(model, metadata.task, metadata.architecture, scores)
        input_name, output_names = io_names(metadata.task)
        t0 = time.perf_counter()
        stage("tracing and exporting with torch.onnx")
        proto, export_info = _graph.torch_to_onnx(wrapper, x, input_name, output_names)
        proto, folded = _graph.fold_batchnorm(proto)
        if optimize:
            stage(f"optimising the graph offline (onnxruntime, {optimization_level})")
            proto = _graph.optimize_offline(proto, optimization_level)
        ops = _graph.op_counts(proto)
        if ops.get("BatchNormalization"):
            raise ExportError(f"export: {ops['BatchNormalization']} BatchNormalization node(s) could not be folded")
        _check_io(proto, input_name, output_names)
        info = {
            **export_info, **wrap_info, "batchnorm_folded": folded,
            "optimization": optimization_level if optimize else "none",
            "onnxruntime": _ort_version(), "seconds": None,
        }  # fmt: skip

        parity: dict = {"checked": bool(check)}
        if check:
            stage("checking parity: onnxruntime vs torch")
            reference = _parity.torch_outputs(wrapper, batch["inputs"])
            fp32 = _graph_outputs(proto, input_name, batch["inputs"])
            # the float32 graph is held to the float32 tolerance even when fp16/int8 follows
            atol32 = atol if precision == "fp32" else _parity.TOLERANCES["fp32"]
            result = _parity.compare(metadata.task, reference, fp32, atol32)
            if not result["passed"] and metadata.task == "classifier" and np.all(np.isfinite(fp32[1])):
                # judge against torch's own float32 rounding for this model (deep, confident nets)
                rounding = _parity.float32_rounding(wrapper, batch["inputs"])
                result = _parity.compare(metadata.task, reference, fp32, atol32, rounding)
            result["batch_1"] = _batch_one(proto, input_name, batch["inputs"], fp32)
            result["passed"] = bool(result["passed"] and result["batch_1"]["passed"])
            parity.update(source=batch["source"], n=int(len(batch["inputs"])), fp32=result)
            if not result["passed"]:
                raise ParityError(_parity_message("fp32", result, batch["source"], out))

        final = proto
        if calibration is not None:
            stage(f"quantising to int8 (static QDQ, {len(calibration)} calibration cutouts)")
            final, qinfo = _precision.quantize_int8(proto, input_name, calibration)
            info["int8"] = qinfo
            if check:
                q = _graph_outputs(final, input_name, batch["inputs"])
                if not np.all(np.isfinite(q[0])):
                    raise ParityError(f"export: the int8 graph gives non-finite logits; {out} was not written")
                rp = _parity.rp_change(fp32[0], q[0], batch["labels"], rp_tolerance)
                rp["max_abs_probability"] = float(np.max(np.abs(q[1] - fp32[1])))
                parity["int8"] = rp
                if not rp["passed"]:
                    warnings.warn(
                        f"int8 model changes the ranking performance by {rp['rp_change']:+.4f} "
                        f"(tolerance {rp_tolerance}) on {batch['source']}; prefer the fp32 model",
                        ExportWarning, stacklevel=2,
                    )  # fmt: skip
        elif fp16:
            stage("converting to float16")
            final, finfo = _precision.convert_fp16(proto)
            info["fp16"] = finfo
            if check:
                h = _graph_outputs(final, input_name, batch["inputs"])
                result = _parity.compare(metadata.task, reference, h, atol)
                parity["fp16"] = result
                if not result["passed"]:
                    raise ParityError(_parity_message("fp16", result, batch["source"], out))
        if graph_input != "float32":
            float_graph = final
            if graph_input == "uint8":
                stage("taking uint8 cutouts in the graph (Cast, Div 255)")
                final = _graph.prepend_uint8_input(final, input_name)
            else:
                stage("taking fluxes in the graph (per-band percentile normalisation inside it)")
                pre = metadata.preprocessing
                final = _graph.prepend_flux_input(final, metadata.input_shape, pre.get("low", 0.5),
                                                  pre.get("high", 99.5), input_name)
            info["graph_input"] = graph_input
            if check:
                parity["graph_input"] = (_uint8_parity(float_graph, final, input_name, batch["inputs"])
                                         if graph_input == "uint8" else
                                         _flux_parity(float_graph, final, input_name, metadata))
                if not parity["graph_input"]["passed"]:
                    raise ParityError(f"export: the {graph_input}-input graph differs from the float one by "
                                      f"{parity['graph_input']['max_abs']:.2e}; {out} was not written")
        if check:
            parity["passed"] = all(parity[k]["passed"] for k in ("fp32", "fp16", "int8", "graph_input") if k in parity)
        info["seconds"] = round(time.perf_counter() - t0, 2)

        meta = copy.deepcopy(metadata)
        meta.precision = precision
        if graph_input != "float32":
            meta.preprocessing = {**meta.preprocessing, "graph_input": graph_input}
        meta.parity = parity
        meta.extra = {**meta.extra, "export": info}
        stage(f"writing {out}")
        stamped = stamp(final, meta)
        with atomic_path(out) as tmp:
            tmp.write_bytes(stamped.SerializeToString())
    finally:
        if was_training:
            model.train()
    return out


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def _graph_outputs(proto: onnx.ModelProto, input_name: str, inputs: np.ndarray) -> list[np.ndarray]:
    return _parity.onnx_outputs(_parity.onnx_session(proto.SerializeToString()), input_name, inputs)


def _batch_one(proto, input_name: str, inputs: np.ndarray, batched: list[np.ndarray]) -> dict:
    """The dynamic batch axis works: the first input alone gives what it gave in the batch."""
    single = _graph_outputs(proto, input_name, inputs[:1])
    d = float(max(np.max(np.abs(s - b[:1])) for s, b in zip(single, batched)))
    return {"max_abs": d, "passed": bool(d <= 1e-5)}


def _uint8_parity(float_graph, uint8_graph, input_name: str, inputs: np.ndarray) -> dict:
    """The uint8-input graph on the uint8 cutouts gives what the float graph gives on x / 255."""
    raw = np.rint(np.asarray(inputs, dtype=np.float64) * 255.0).astype(np.uint8)
    unit = np.divide(raw, np.float32(255.0), dtype=np.float32)
    ref = _graph_outputs(float_graph, input_name, unit)
    got = _graph_outputs(uint8_graph, input_name, raw)
    d = float(max(np.max(np.abs(a - b)) for a, b in zip(ref, got)))
    return {"max_abs": d, "passed": bool(d <= 1e-6), "n": int(len(raw))}


def _flux_parity(float_graph, flux_graph, input_name: str, metadata) -> dict:
    """The flux-input graph on raw fluxes (NaN, inf, constant bands included) gives what the float
    graph gives on :func:`prepare_batch` of them (the CPU's normalisation)."""
    raw, _ = _parity.synthetic_cutouts(64, metadata.input_shape, seed=3)
    raw[0, 0, 3, 3] = np.nan
    raw[1, -1] = 7.0  # a constant band
    raw[2, 0, :4] = np.inf
    ref = _graph_outputs(float_graph, input_name, prepare_batch(raw, metadata.preprocessing))
    got = _graph_outputs(flux_graph, input_name, raw)
    d = float(max(np.max(np.abs(a - b)) for a, b in zip(ref, got)))
    return {"max_abs": d, "passed": bool(d <= 1e-5), "n": int(len(raw))}


def _check_io(proto: onnx.ModelProto, input_name: str, output_names: list[str]) -> None:
    ins = [i.name for i in proto.graph.input]
    outs = [o.name for o in proto.graph.output]
    if ins != [input_name] or outs != output_names:
        raise ExportError(f"export: graph I/O is {ins} → {outs}, expected [{input_name!r}] → {output_names}")
    dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    if dim.HasField("dim_value"):
        raise ExportError(f"export: the batch axis was fixed to {dim.dim_value}; expected a dynamic batch")


def _parity_message(precision: str, result: dict, source: str, out: Path) -> str:
    if "max_abs_probability" in result:
        what = f"max |Δ probability| {result['max_abs_probability']:.3g} (|Δ logit| {result['max_abs_logit']:.3g})"
    elif "max_abs_image" in result:
        what = f"max |Δ pixel| {result['max_abs_image']:.3g}"
    else:
        what = "mismatch"
    extra = ""
    if "batch_1" in result and not result["batch_1"]["passed"]:
        extra = f"; a batch of 1 differs from the same input in a batch by {result['batch_1']['max_abs']:.3g}"
    limit = f"atol {result['atol']:g}"
    if "tolerance" in result:
        limit = (f"tolerance {result['tolerance']:.3g} (atol {result['atol']:g} + 2 × torch's own float32 error "
                 f"{result['float32_rounding_probability']:.3g})")  # fmt: skip
    return (
        f"export: {precision} parity check failed: {what} > {limit} on {source}{extra}; "
        f"{out} was not written (inspect the model, or pass --no-check to skip the check)"
    )


def _calibration_inputs(cutouts, metadata: ModelMetadata) -> np.ndarray:
    x = np.asarray(cutouts)
    shape = tuple(int(v) for v in metadata.input_shape)
    if x.ndim == 3 and shape[0] == 1:
        x = x[:, None]
    if x.ndim != 4 or x.shape[1:] != shape:
        raise InputError(f"calibration cutouts: expected N×{'×'.join(map(str, shape))} images, got shape {x.shape}")
    if len(x) < 8:
        raise InputError(f"calibration cutouts: {len(x)} given; give at least 8 (a few hundred is better)")
    return prepare_batch(x, metadata.preprocessing)


# ------------------------------------------------------------------------------------------
# checkpoints
# ------------------------------------------------------------------------------------------
def metadata_for(model, training: dict | None = None, **overrides) -> ModelMetadata:
    """ModelMetadata from a model built by :func:`deepmine.training.create_model`
    (``model.deepmine_config``), the checkpoint's training provenance and ``overrides``."""
    cfg = dict(getattr(model, "deepmine_config", None) or {})
    fields = {f.name for f in dataclasses.fields(ModelMetadata)}
    kwargs = {k: v for k, v in cfg.items() if k in fields}
    extra = {k: v for k, v in cfg.items() if k not in fields}
    kwargs.update(overrides)
    if "architecture" not in kwargs:
        raise InputError("export: the model has no deepmine_config['architecture']; build it with create_model")
    meta = ModelMetadata(**kwargs)
    if training:
        meta.training = {**meta.training, **training}
    if extra:
        meta.extra = {**meta.extra, "model_config": extra}
    return meta


#: Largest evaluation JSON accepted into a model's metadata (the metadata travels in every copy).
MAX_EVALUATION_BYTES = 256 * 1024


def read_evaluation(path) -> dict:
    """An evaluation JSON object for ``metadata.extra["evaluation"]``, with its file name and sha256.

    Raises :class:`~deepmine.inference.errors.InputError` (one line naming the file) when it is
    missing, larger than :data:`MAX_EVALUATION_BYTES`, or not a JSON object.
    """
    import json

    from deepmine.inference.errors import file_error
    from deepmine.inference.metadata import file_sha256

    p = Path(path)
    if not p.is_file():
        raise file_error(p, "evaluation file not found")
    if p.stat().st_size > MAX_EVALUATION_BYTES:
        raise file_error(p, f"evaluation file larger than {MAX_EVALUATION_BYTES // 1024} KiB; keep the figures only")
    try:
        figures = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise file_error(p, f"not valid JSON ({type(exc).__name__})") from None
    if not isinstance(figures, dict):
        raise file_error(p, "expected a JSON object of figures")
    return {**figures, "file": p.name, "file_sha256": file_sha256(p)}


def export_checkpoint(ckpt_path, out_path, *, selection=None, evaluation=None, **kwargs) -> Path:
    """Export a training checkpoint (:func:`deepmine.training.checkpoint.load_checkpoint`).

    The architecture, its configuration, input shape, bands, pixel scale and preprocessing come
    from the rebuilt model's ``deepmine_config``; the checkpoint's provenance (config, seeds,
    data hashes, epochs, held-out ranking performance) becomes ``metadata.training``.
    ``selection``, a selection-function table (``deepmine selection`` output) measured on an
    export of the same checkpoint, is digested into ``metadata.extra["selection"]``
    (:func:`deepmine.lenscrafter.selection.measure.selection_summary`). ``evaluation``, a JSON object
    measured on an export of the same checkpoint (``tools/evaluate_bundled.py``'s
    ``evaluation.json``: figures on shifted lenses, arc-less lens galaxies, real galaxies), goes
    into ``metadata.extra["evaluation"]`` with its file name and sha256. Other keyword arguments
    are those of :func:`export_model`.
    """
    from .checkpoint_io import load, training_provenance

    check_writable(out_path)
    digest = None
    if selection is not None:
        from deepmine.lenscrafter.selection.measure import selection_summary

        digest = selection_summary(selection)
    figures = read_evaluation(evaluation) if evaluation is not None else None
    model, info = load(ckpt_path)
    meta = metadata_for(model, training_provenance(info, ckpt_path))
    if digest is not None:
        meta.extra = {**meta.extra, "selection": digest}
    if figures is not None:
        meta.extra = {**meta.extra, "evaluation": figures}
    example = np.zeros((2, *meta.input_shape), dtype=np.float32)
    return export_model(model, out_path, meta, example, **kwargs)
