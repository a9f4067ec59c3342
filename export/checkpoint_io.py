"""Reading training checkpoints for export, and their provenance for the model metadata."""
from __future__ import annotations

import os
from pathlib import Path

from deepmine.inference.errors import DeepmineError, file_error, first_line

#: Provenance keys copied into ``metadata.training`` (all of them JSON-compatible).
PROVENANCE_KEYS = (
    "recipe_name", "recipe", "seed", "data", "split", "epochs", "phases", "heldout",
    "deepmine_version", "torch_version", "device",
)  # fmt: skip


def load(path: str | os.PathLike):
    """``deepmine.training.checkpoint.load_checkpoint`` with every failure as one line.

    Returns (model in eval mode, info dict).
    """
    from deepmine.training.checkpoint import load_checkpoint

    p = Path(path)
    try:
        return load_checkpoint(p)
    except DeepmineError:
        raise
    except Exception as exc:  # noqa: BLE001 - torch.load/zip/pickle raise many types on bad files
        first = first_line(exc)[:200]
        raise file_error(p, f"not a readable deepmine checkpoint ({type(exc).__name__}: {first})") from None


def training_provenance(info: dict, path: str | os.PathLike | None = None) -> dict:
    """``metadata.training`` from a checkpoint's info: its provenance, the checkpoint file's
    name and sha256, and whether training could resume from it."""
    from deepmine.inference.metadata import file_sha256

    prov = dict(info.get("provenance") or {})
    out = {k: prov[k] for k in PROVENANCE_KEYS if k in prov}
    out.update({k: v for k, v in prov.items() if k not in out})
    if path is not None:
        out["checkpoint"] = {"file": Path(path).name, "sha256": file_sha256(path)}
    return _jsonable(out)


def _jsonable(value):
    """Plain JSON types only (tuples → lists, numpy/torch scalars → numbers, others → str)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
