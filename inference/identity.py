"""Two identities, defined once: what a model scores with, and which bytes an input holds.

*Scoring identity* of a model (:func:`scoring_identity`)
    ``sha256:<hex>`` of the serialised ONNX model with every ``metadata_props`` entry (protobuf
    field 14 of ``ModelProto``) removed — the graph, its weights (initializers), opsets and IR
    version, exactly as stored. Adding a selection summary, provenance or the content hash to
    the metadata does not change it; any change to a weight or a node does. Computed on the
    file's own bytes (:func:`deepmine.inference.onnxhash.scoring_bytes`; onnx is not needed).
    Pools, catalogues, selection tables and resume plans carry it; two files with the same
    scoring identity give the same scores.

*Identity* of an input file (:func:`input_identity`)
    ``{"path", "size", "mtime_ns", "fingerprint"}``. ``fingerprint`` is ``sha256:<hex>`` of the
    whole file for files up to :data:`WHOLE_FILE_LIMIT` bytes (64 MiB), else ``sampled:<hex>``:
    the sha256 of the size and of :data:`SAMPLE_BLOCK`-byte blocks at the start, the middle,
    the end and the fixed fractions :data:`SAMPLE_FRACTIONS` of the file. Two identities are
    the same input (:func:`same_input`) when size and fingerprint agree and, for a sampled
    fingerprint (which cannot see every byte), the modification time too. A file rewritten
    with the same bytes (``touch``, a copy) is still the same small input.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .errors import file_error

__all__ = ["scoring_identity", "input_identity", "same_input", "changed_inputs", "WHOLE_FILE_LIMIT"]

#: files up to this size are fingerprinted whole
WHOLE_FILE_LIMIT = 64 << 20
#: bytes per sampled block of a larger file
SAMPLE_BLOCK = 1 << 20
#: where sampled blocks start, as fractions of the file (besides first, middle and last)
SAMPLE_FRACTIONS = (0.125, 0.25, 0.375, 0.625, 0.75, 0.875)


def scoring_identity(path: str | os.PathLike) -> str:
    """``sha256:<hex>`` of a model's graph and weights only (``metadata_props`` excluded).

    Raises a one-line :class:`~deepmine.inference.errors.InputError` when the file is not a
    well-formed ONNX protobuf.
    """
    from .onnxhash import scoring_bytes

    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise file_error(p, f"cannot read model ({exc.strerror or exc})") from None
    try:
        body = scoring_bytes(data)
    except ValueError as exc:
        raise file_error(p, f"not a well-formed ONNX file ({exc})") from None
    return "sha256:" + hashlib.sha256(body).hexdigest()


def _fingerprint(p: Path, size: int) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as fh:
        if size <= WHOLE_FILE_LIMIT:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
            return "sha256:" + h.hexdigest()
        h.update(str(size).encode())
        starts = {0, size // 2, max(0, size - SAMPLE_BLOCK)}
        starts.update(int(size * f) for f in SAMPLE_FRACTIONS)
        for start in sorted(starts):
            fh.seek(start)
            h.update(start.to_bytes(8, "little"))
            h.update(fh.read(SAMPLE_BLOCK))
    return "sampled:" + h.hexdigest()


def input_identity(path: str | os.PathLike) -> dict:
    """``{"path", "size", "mtime_ns", "fingerprint"}`` of an input file (see the module docstring)."""
    p = Path(path)
    try:
        st = p.stat()
        fp = _fingerprint(p, st.st_size)
    except OSError as exc:
        raise file_error(p, f"cannot read input ({exc.strerror or exc})") from None
    return {"path": str(p), "size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns), "fingerprint": fp}


def same_input(a: dict, b: dict) -> bool:
    """Whether two :func:`input_identity` records describe the same bytes."""
    if a.get("size") != b.get("size") or a.get("fingerprint") != b.get("fingerprint"):
        return False
    if str(a.get("fingerprint", "")).startswith("sampled:"):
        return a.get("mtime_ns") == b.get("mtime_ns")
    return True


def changed_inputs(recorded: list, paths) -> list[str]:
    """Paths among ``paths`` whose identity differs from ``recorded`` (missing files included)."""
    old = {str(r.get("path")): r for r in recorded or []}
    changed = []
    for path in paths:
        rec = old.get(str(path))
        if rec is None or not Path(path).is_file():
            changed.append(str(path))
            continue
        if not same_input(rec, input_identity(path)):
            changed.append(str(path))
    return changed


def check_content_hash(path: str | os.PathLike, allow_modified: bool = False) -> str | None:
    """Refuse a model whose stored content hash does not verify (it was changed after export).

    Returns None when the hash verifies or none is stored; with ``allow_modified`` a mismatch
    is accepted and a one-line note returned (for the output's provenance). Otherwise raises a
    one-line :class:`~deepmine.inference.errors.InputError`.
    """
    from .onnxhash import verify_content_hash

    check = verify_content_hash(path)
    if check["ok"] is not False:
        return None
    note = (f"content hash does not verify (stored {check['stored']}, computed {check['computed']}): "
            "the file was changed after export")
    if not allow_modified:
        raise file_error(path, note + "; re-export it, or pass --allow-modified-model to use it anyway")
    return f"{Path(path).name}: {note}"


def pool_model_check(pool, model, pool_name: str = "--reference") -> str | None:
    """Refuse a reference pool scored with another model than ``model``.

    The pool's model is its provenance ``scoring_id`` (or, for pools written before scoring
    identities, ``model_hash``: the model file's sha256). Returns None when the pool matches,
    a one-line warning when it records no model at all (made from bare scores), and raises a
    one-line :class:`~deepmine.inference.errors.InputError` naming both models otherwise.
    """
    from .errors import InputError

    prov = getattr(pool, "provenance", {}) or {}
    sid, legacy = prov.get("scoring_id"), prov.get("model_hash")
    if sid is None and legacy is None:
        return (f"{pool_name}: the pool records no model (made from bare scores); its ordinality is only "
                f"meaningful if {Path(str(model.path)).name} scored it")
    if sid is not None and sid == model.scoring_id:
        return None
    if sid is None and legacy in (model.sha256, model.scoring_id):
        return None
    raise InputError(f"{pool_name}: the pool was scored by another model ({sid or legacy}) than "
                     f"{Path(str(model.path)).name} ({model.scoring_id}); score the negatives with this model")
