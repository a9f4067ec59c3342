"""``deepmine info MODEL.onnx``: what a model expects, where it came from, whether it is intact.

Torch-free and onnx-free: the metadata is read with onnxruntime
(:func:`deepmine.inference.metadata.read_metadata`), and the content hash is verified on the
file's protobuf bytes directly (:func:`deepmine.inference.onnxhash.verify_content_hash`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ..errors import InputError
from .common import existing_file, out_console


def _graph_io(path: Path) -> dict:
    from ..session import open_session

    sess = open_session(path, optimize=False, what="not a readable ONNX model")

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


def _providers(as_json: bool) -> None:
    from ..session import provider_report

    rep = provider_report()
    if as_json:
        print(json.dumps(rep))
        return
    dists = ", ".join(f"{k} {v}" for k, v in rep["distributions"].items()) or "none found by pip metadata"
    out_console.print(f"onnxruntime {rep['onnxruntime']} ({dists}) at {rep['file']}", soft_wrap=True, markup=False)
    out_console.print(f"providers   {', '.join(rep['available'])}", soft_wrap=True, markup=False)
    cuda = "usable (--device cuda)" if rep["cuda"] else f"not usable: {rep['reason']}"
    out_console.print(f"CUDA        {cuda}", soft_wrap=True, markup=False)


def info(
    model: Optional[Path] = typer.Argument(None, help="An ONNX model written by `deepmine export`.",
                                           show_default=False),
    as_json: bool = typer.Option(False, "--json", help="Print everything as JSON on stdout."),
    providers: bool = typer.Option(False, "--providers", help="Instead of a model: which onnxruntime is "
                                   "installed, its execution providers, and why CUDA is not usable if it is not."),
) -> None:
    """Show a model's deepmine metadata: architecture, input (shape, bands, pixel scale,
    preprocessing), outputs, precision, training provenance, export parity check, and whether
    the content hash still matches the file. Exits with an error if it does not.
    `deepmine info --providers` shows the onnxruntime execution providers instead."""
    from rich.markup import escape
    from rich.table import Table

    from ..metadata import read_metadata

    if providers:
        if model is not None:
            raise InputError("--providers takes no model")
        _providers(as_json)
        return
    if model is None:
        raise InputError("give a MODEL.onnx, or --providers")
    existing_file(model, "model file")
    meta, props = read_metadata(model)
    from ..onnxhash import verify_content_hash

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
