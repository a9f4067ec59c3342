"""Model metadata: the contract between ``deepmine export`` and everything that loads a model.

An exported ONNX graph carries, in its ``metadata_props``:

``deepmine.metadata``
    JSON object (the fields of :class:`ModelMetadata`), UTF-8.
``deepmine.content_hash``
    ``sha256:<hex>`` of the serialised graph with this key removed (computed by the exporter).

Graph I/O names: classifiers take ``image`` (float32 N×C×H×W, preprocessed as
``preprocessing`` says, see :mod:`deepmine.inference.preprocess`) and return ``logit`` (N,)
— the positive-class log-odds — and ``probability`` (N,) = sigmoid(logit). Generators take
``latent`` (float32 N×L) and return ``image`` (float32 N×C×H×W in 0..1).

Only onnxruntime is needed to read it (:func:`read_metadata`), never onnx or torch.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError, file_error
from .formats import HSC_BANDS

METADATA_KEY = "deepmine.metadata"
HASH_KEY = "deepmine.content_hash"
FORMAT_VERSION = 1
TASKS = ("classifier", "generator")
PREPROCESSING_KINDS = ("percentile", "histogram_match", "none")


@dataclass
class ModelMetadata:
    """What a scanner needs to know about a model, and where the model came from.

    Attributes
    ----------
    architecture : str
        Registry name: ``"lensflow"``, ``"eznet"`` or ``"lensgenerator"``.
    task : str
        ``"classifier"`` or ``"generator"``.
    input_shape : list[int]
        C×H×W of one input (classifiers) or ``[latent_dim]`` (generators).
    bands : list[str]
        Band of each input channel, in channel order (HSC: ``["i", "r", "g"]`` → R, G, B).
    pixel_scale : float
        Arcsec per pixel the model was trained at (HSC: 0.168).
    preprocessing : dict
        ``{"kind": "percentile", "low": 0.5, "high": 99.5}``,
        ``{"kind": "histogram_match", "template": [...]}`` or ``{"kind": "none"}``.
    architecture_config : dict
        The configuration the model was built from (e.g. EZnet's block table).
    outputs : dict
        Output name → meaning.
    training : dict
        Provenance: config, seeds, data hashes, epochs, held-out ranking performance, ...
    parity : dict
        Result of the export parity check (max abs difference, batch size, passed).
    precision : str
        ``"fp32"``, ``"fp16"`` or ``"int8"``.
    extra : dict
        Anything else (e.g. selection-function summary of a bundled model).
    """

    architecture: str
    task: str = "classifier"
    input_shape: list = field(default_factory=lambda: [3, 64, 64])
    bands: list = field(default_factory=lambda: list(HSC_BANDS))
    pixel_scale: float = 0.168
    preprocessing: dict = field(default_factory=lambda: {"kind": "percentile", "low": 0.5, "high": 99.5})
    architecture_config: dict = field(default_factory=dict)
    outputs: dict = field(
        default_factory=lambda: {
            "logit": "positive-class log-odds, shape (N,)",
            "probability": "positive-class probability = sigmoid(logit), shape (N,)",
        }
    )
    training: dict = field(default_factory=dict)
    parity: dict = field(default_factory=dict)
    precision: str = "fp32"
    deepmine_version: str = ""
    format_version: int = FORMAT_VERSION
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.task not in TASKS:
            raise InputError(f"model metadata: task must be one of {TASKS}, got {self.task!r}")
        kind = (self.preprocessing or {}).get("kind")
        if kind not in PREPROCESSING_KINDS:
            raise InputError(f"model metadata: preprocessing kind must be one of {PREPROCESSING_KINDS}, got {kind!r}")
        if self.task == "classifier":
            if len(self.input_shape) != 3 or len(self.bands) != self.input_shape[0]:
                raise InputError(
                    f"model metadata: input_shape {self.input_shape} and bands {self.bands} disagree"
                )
        if not self.deepmine_version:
            from . import __version__

            self.deepmine_version = __version__

    # -- (de)serialisation -------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    def to_props(self) -> dict[str, str]:
        """The ``metadata_props`` entries (without the content hash)."""
        return {METADATA_KEY: self.to_json()}

    @classmethod
    def from_json(cls, text: str, source: str = "model") -> ModelMetadata:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"{source}: deepmine metadata is not valid JSON ({exc})") from None
        if not isinstance(data, dict) or "architecture" not in data:
            raise InputError(f"{source}: deepmine metadata lacks the 'architecture' field")
        known = {f.name for f in dataclasses.fields(cls)}
        extra = {k: v for k, v in data.items() if k not in known}
        kwargs = {k: v for k, v in data.items() if k in known}
        meta = cls(**kwargs)
        meta.extra.update(extra)
        return meta

    @classmethod
    def from_props(cls, props: dict[str, str], source: str = "model") -> ModelMetadata:
        if METADATA_KEY not in props:
            raise InputError(
                f"{source}: not a deepmine model (no {METADATA_KEY!r} in the ONNX metadata); "
                "export it with `deepmine export`"
            )
        return cls.from_json(props[METADATA_KEY], source)

    @property
    def channels(self) -> int:
        return int(self.input_shape[0])

    @property
    def size(self) -> tuple[int, int]:
        return int(self.input_shape[1]), int(self.input_shape[2])


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """``sha256:<hex>`` of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


def read_metadata(path: str | os.PathLike) -> tuple[ModelMetadata, dict[str, str]]:
    """Read a model's deepmine metadata with onnxruntime only.

    Returns the parsed :class:`ModelMetadata` and the raw ``metadata_props`` map.
    """
    p = Path(path)
    if not p.is_file():
        raise file_error(p, "model file not found")
    from .session import open_session

    sess = open_session(p, optimize=False, what="not a readable ONNX model")
    props = dict(sess.get_modelmeta().custom_metadata_map)
    return ModelMetadata.from_props(props, str(p)), props
