"""``deepmine info MODEL.onnx``: what a model expects, where it came from, whether it is intact.

Torch-free and onnx-free: the metadata is read with onnxruntime
(:func:`deepmine.inference.metadata.read_metadata`), and the content hash is verified on the
file's protobuf bytes directly (:func:`verify_content_hash`).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import typer

from ..errors import InputError, file_error
from .common import existing_file, out_console

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


def content_hash_of_bytes(data: bytes, key: str = "deepmine.content_hash") -> tuple[str, str | None]:
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


def verify_content_hash(path: str | os.PathLike) -> dict:
    """``{"stored", "computed", "ok"}`` for a model file (``ok`` None when no hash is stored)."""
    try:
        computed, stored = content_hash_of_bytes(Path(path).read_bytes())
    except ValueError as exc:
        raise file_error(path, f"not a well-formed ONNX file ({exc})") from None
    return {"stored": stored, "computed": computed, "ok": None if stored is None else stored == computed}


def _graph_io(path: Path) -> dict:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def desc(args):
        return [{"name": a.name, "type": a.type, "shape": [d if isinstance(d, int) else str(d) for d in a.shape]} for a in args]

    return {"inputs": desc(sess.get_inputs()), "outputs": desc(sess.get_outputs())}


def _short(value, width: int = 90) -> str:
    """One readable line: long lists are summarised, long text cut."""
    if isinstance(value, list) and len(value) > 8 and all(isinstance(v, (int, float)) for v in value):
        return f"[{len(value)} numbers, {min(value):.4g} … {max(value):.4g}]"
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


def _flat(prefix: str, value, rows: list, depth: int = 0) -> None:
    if isinstance(value, dict) and value and depth < 2:
        for k, v in value.items():
            _flat(f"{prefix}.{k}" if prefix else str(k), v, rows, depth + 1)
    else:
        rows.append((prefix, _short(value)))


def info(
    model: Path = typer.Argument(..., help="An ONNX model written by `deepmine export`.", show_default=False),
    as_json: bool = typer.Option(False, "--json", help="Print everything as JSON on stdout."),
) -> None:
    """Show a model's deepmine metadata: architecture, input (shape, bands, pixel scale,
    preprocessing), outputs, precision, training provenance, export parity check, and whether
    the content hash still matches the file. Exits with an error if it does not."""
    from rich.markup import escape
    from rich.table import Table

    from ..metadata import read_metadata

    existing_file(model, "model file")
    meta, props = read_metadata(model)
    check = verify_content_hash(model)
    io = _graph_io(model)
    data = json.loads(meta.to_json())
    if as_json:
        print(json.dumps({"path": str(model), "size_bytes": model.stat().st_size, "metadata": data,
                          "content_hash": check, "graph": io}))  # fmt: skip
    else:
        table = Table(title=f"{model.name} — deepmine {meta.task}", show_header=False, box=None, pad_edge=False)
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column(overflow="fold")
        pre = dict(meta.preprocessing)
        if "template" in pre:
            pre["template"] = _short(pre["template"])
        rows = [
            ("architecture", meta.architecture),
            ("precision", meta.precision),
            ("input", " ".join(f"{i['name']} {i['type']} [{'×'.join(map(str, i['shape']))}]" for i in io["inputs"])),
            ("outputs", ", ".join(f"{o['name']} [{'×'.join(map(str, o['shape']))}]" for o in io["outputs"])),
            ("input shape", "×".join(map(str, meta.input_shape))),
        ]
        if meta.task == "classifier":
            rows += [("bands", ", ".join(meta.bands)), ("pixel scale", f"{meta.pixel_scale} arcsec/pixel")]
        rows.append(("preprocessing", ", ".join(f"{k}={_short(v, 60)}" for k, v in pre.items())))
        for k, v in meta.outputs.items():
            rows.append((f"output {k}", str(v)))
        _flat("config", meta.architecture_config, rows)
        _flat("training", meta.training or "(none recorded)", rows)
        _flat("parity", meta.parity or "(none recorded)", rows)
        _flat("export", meta.extra.get("export", {}), rows)
        rows += [("deepmine", meta.deepmine_version), ("size", f"{model.stat().st_size / 1e6:.2f} MB")]
        if check["ok"] is None:
            rows.append(("content hash", "[yellow]none stored (not written by deepmine export)[/yellow]"))
        elif check["ok"]:
            rows.append(("content hash", f"{check['stored']} [green](verified)[/green]"))
        else:
            rows.append(("content hash", f"[red]MISMATCH[/red] stored {check['stored']}, file {check['computed']}"))
        for k, v in rows:
            table.add_row(escape(k), v if k == "content hash" else escape(v))
        out_console.print(table)
    if check["ok"] is False:
        raise InputError(f"{model}: content hash mismatch: the file was changed after export; re-export it")


def register(app: typer.Typer) -> None:
    app.command("info")(info)
