"""The content hash of an exported model, checked on the file's own bytes (no onnx needed).

The exporter (:func:`deepmine.export.exporter.stamp`) hashes the serialised model without the
``deepmine.content_hash`` entry of its ``metadata_props`` and then adds that entry.
:func:`verify_content_hash` removes the entry's bytes from the file (a minimal protobuf
reader: onnx is not a base dependency) and compares; ``deepmine info`` reports the result and
the scanner refuses a model whose stored hash does not match.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .errors import file_error
from .metadata import HASH_KEY

#: Field number of ``ModelProto.metadata_props`` (onnx.proto).
_METADATA_PROPS_FIELD = 14


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def _fields(data: bytes):
    """Top-level (field number, wire type, start, payload start, end) of a protobuf message."""
    pos = 0
    while pos < len(data):
        start = pos
        tag, pos = _varint(data, pos)
        field, wire = tag >> 3, tag & 7
        body = pos
        if wire == 0:
            _, pos = _varint(data, pos)
        elif wire == 1:
            pos += 8
        elif wire == 2:
            n, body = _varint(data, pos)
            pos = body + n
        elif wire == 5:
            pos += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if pos > len(data):
            raise ValueError("truncated field")
        yield field, wire, start, body, pos


def content_hash_of_bytes(data: bytes, key: str = HASH_KEY) -> tuple[str, str | None]:
    """(computed ``sha256:<hex>``, stored value) of a serialised ONNX model.

    The exporter hashes the serialised model *without* the ``key`` entry of
    ``metadata_props`` and then adds that entry; removing the entry's bytes from the file
    gives back exactly what was hashed (protobuf writes fields in field-number order).
    """
    keep, stored = [], None
    key_b = key.encode()
    for field, wire, start, body, end in _fields(data):
        if field == _METADATA_PROPS_FIELD and wire == 2:
            sub = data[body:end]
            entry = {f: sub[b:e] for f, w, _, b, e in _fields(sub) if w == 2}
            if entry.get(1) == key_b:
                stored = entry.get(2, b"").decode("utf-8", "replace")
                continue
        keep.append(data[start:end])
    return "sha256:" + hashlib.sha256(b"".join(keep)).hexdigest(), stored


def scoring_bytes(data: bytes) -> bytes:
    """The serialised model without any ``metadata_props`` entry (field 14): graph, weights,
    opsets and the rest, exactly as stored. See :func:`deepmine.inference.identity.scoring_identity`."""
    return b"".join(data[start:end] for field, _w, start, _b, end in _fields(data)
                    if field != _METADATA_PROPS_FIELD)


def verify_content_hash(path: str | os.PathLike) -> dict:
    """``{"stored", "computed", "ok"}`` for a model file (``ok`` None when no hash is stored)."""
    try:
        computed, stored = content_hash_of_bytes(Path(path).read_bytes())
    except ValueError as exc:
        raise file_error(path, f"not a well-formed ONNX file ({exc})") from None
    return {"stored": stored, "computed": computed, "ok": None if stored is None else stored == computed}
