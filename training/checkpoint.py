"""Training checkpoints: one ``.pt`` file per model, the contract with ``deepmine export``.

File format (``torch.save`` of a dict; loadable with ``torch.load(path, weights_only=True)``,
i.e. only tensors, numbers, strings, lists, tuples and dicts inside)::

    {
      "format": "deepmine-checkpoint",      # FORMAT
      "format_version": 1,                  # FORMAT_VERSION
      "architecture": "eznet",              # registry name: create_model(architecture, **overrides)
      "overrides": {...},                   # JSON-compatible constructor options (resolved:
                                            #   EZnet's table is inline, never a path)
      "state_dict": {name: tensor},         # model weights (CPU tensors)
      "deepmine_config": {...},             # ModelMetadata fields: architecture, task,
                                            #   architecture_config, input_shape, bands,
                                            #   pixel_scale, preprocessing (LensFlow: with the
                                            #   histogram template found at training time)
      "provenance": {                       # goes into the ONNX metadata's "training" field
        "recipe": {...},                    #   resolved top-level recipe settings (model, data,
                                            #   optimizer, schedule, early_stop, seed, ...)
        "phases": [{...}],                  #   the resolved phases (each with its own sections)
        "recipe_name": str, "recipe_source": str,
        "seed": int,
        "data": {"positives": [{"path", "sha256", "shape", "dtype"}, ...], "negatives": [...],
                 "extra_positives": [...], "extra_negatives": [...]},
        "split": {"n_train_positives", "n_test_positives", "n_train_negatives",
                  "n_test_negatives", "n_extra_positives", "n_extra_negatives"},
        "epochs": int,                      #   epochs completed (all phases)
        "phases_done": [{"name", "epochs", "best_epoch", "best", "metric", "stopped_early"}],
        "heldout": {"ranking_performance", "loss", "accuracy", "epoch", "phase",
                    "n_positives", "n_negatives"},   # model.pt: the final model on the held-out
                                            #   set; checkpoint.pt: the latest epoch's figures
        "deepmine_version": str, "torch_version": str, "device": str, "amp": bool,
      },
      "training_state": {                   # present in resumable checkpoints only
        "phase_index": int, "phase_epoch": int, "epoch": int,   # last completed
        "phase_finished": bool,             # the phase ended (last epoch or early stop)
        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "scaler": GradScaler state or None,
        "rng": {"torch": ByteTensor, "python": tuple, "cuda": [...]},   # NumPy draws come from
                                            #   a generator seeded by (seed, phase, epoch)
        "phases_done": [...],
        "history": [row dicts of history.csv],
        "early_stop": {"best", "best_epoch", "bad_epochs"},
        "best_state_dict": {...} or None,   # weights at the best held-out epoch of the phase
        "phase_data": {...},                # data chosen at the phase start (e.g. top-6 % negatives)
      },
    }

A training run's output folder holds ``checkpoint.pt`` (latest epoch, resumable) and
``model.pt`` (the final model, no ``training_state``); both load with :func:`load_checkpoint`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from deepmine.inference.atomic import atomic_path
from deepmine.inference.errors import InputError, file_error, first_line

FORMAT = "deepmine-checkpoint"
FORMAT_VERSION = 1
REQUIRED_KEYS = ("architecture", "overrides", "state_dict", "deepmine_config", "provenance")


def save_checkpoint(path: str | os.PathLike, model, provenance: dict, training_state: dict | None = None) -> Path:
    """Write ``model`` (and optionally the training state) atomically to ``path``.

    The model must have been built by :func:`deepmine.training.create_model` (it carries
    ``deepmine_overrides`` and ``deepmine_config``).
    """
    import torch

    arch = getattr(model, "deepmine_config", {}).get("architecture") or getattr(model, "registry_name", None)
    if arch is None or not hasattr(model, "deepmine_overrides"):
        raise InputError("save_checkpoint: the model was not built by deepmine.training.create_model")
    payload: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": arch,
        "overrides": model.deepmine_overrides,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "deepmine_config": model.deepmine_config,
        "provenance": provenance,
    }
    if training_state is not None:
        payload["training_state"] = training_state
    p = Path(path)
    with atomic_path(p) as tmp:
        torch.save(payload, tmp)
    return p


def read_checkpoint(path: str | os.PathLike, map_location: str = "cpu") -> dict:
    """Load and check a checkpoint dict (no model built). Clear InputErrors for bad files."""
    import pickle

    import torch

    p = Path(path)
    if not p.exists():
        raise file_error(p, "checkpoint not found")
    if p.is_dir():
        raise file_error(p, "expected a checkpoint file (.pt), got a directory")
    if p.stat().st_size == 0:
        raise file_error(p, "checkpoint is empty (an interrupted write?)")
    try:
        data = torch.load(p, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError, ImportError) as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        why = next((ln for ln in lines if "error" in ln.lower()), lines[0] if lines else type(exc).__name__)
        raise file_error(p, f"not a readable deepmine checkpoint ({why[:200]})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise file_error(p, "not a deepmine checkpoint (no 'format': 'deepmine-checkpoint'); "
                            "train with `deepmine train` to make one")  # fmt: skip
    version = data.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise file_error(p, f"checkpoint format version {version!r} is newer than this deepmine "
                            f"understands ({FORMAT_VERSION}); upgrade deepmine")  # fmt: skip
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise file_error(p, f"checkpoint lacks {', '.join(missing)}")
    return data


def load_checkpoint(path: str | os.PathLike, map_location: str = "cpu"):
    """Rebuild the model stored in a checkpoint.

    Returns
    -------
    model : torch.nn.Module
        In eval mode, on ``map_location``, with ``deepmine_config`` as stored.
    info : dict
        The checkpoint without ``state_dict`` (architecture, overrides, deepmine_config,
        provenance, and training_state if present).
    """
    from .registry import create_model

    p = Path(path)
    data = read_checkpoint(p, map_location)
    try:
        model = create_model(data["architecture"], **data["overrides"])
    except InputError as exc:
        raise file_error(p, f"cannot rebuild the model ({exc})") from None
    try:
        model.load_state_dict(data["state_dict"])
    except (RuntimeError, KeyError) as exc:
        first = first_line(exc)[:200]
        raise file_error(p, f"weights do not fit the {data['architecture']} architecture ({first})") from None
    model.deepmine_config = data["deepmine_config"]
    model.to(map_location).eval()
    info = {k: v for k, v in data.items() if k != "state_dict"}
    return model, info
