"""``deepmine export``: a training checkpoint → a frozen, checked ONNX model with metadata."""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Optional

import typer

from deepmine.inference.cli.common import err_console, existing_file, out_console
from deepmine.inference.errors import InputError, file_error, first_line, require


def _load_npy(path: Path, what: str):
    import numpy as np

    existing_file(path, what)
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        first = first_line(exc)
        raise file_error(path, f"not a readable .npy {what} ({first})") from None


def export(
    checkpoint: Path = typer.Argument(..., help="Training checkpoint (.pt) written by `deepmine train`.", show_default=False),
    out: Path = typer.Option(..., "--out", "-o", help="Output ONNX model file; .onnx is appended to a name without it (model → model.onnx); a folder is refused.", show_default=False),
    int8: bool = typer.Option(False, "--int8", help="Static int8 (QDQ) quantisation, calibrated on --calibration."),
    calibration: Optional[Path] = typer.Option(
        None, "--calibration", help="Cutouts (.npy, N×C×H×W, as stored) to calibrate --int8 on; a few hundred."
    ),
    fp16: bool = typer.Option(False, "--fp16", help="Float16 weights and arithmetic (for GPU deployment)."),
    graph_input: str = typer.Option(
        "float32", "--graph-input", help="What the graph takes: float32 (cutouts preprocessed to 0..1, the "
        "default), uint8 (normalised uint8 cutouts, divided by 255 inside the graph: a quarter of the bytes to "
        "a GPU, no CPU arithmetic) or flux (float32 fluxes, per-band percentile normalisation inside the graph, "
        "so a GPU does it); uint8 and flux are for percentile-preprocessed classifiers."),
    check: bool = typer.Option(True, "--check/--no-check", help="Parity check onnxruntime vs torch before writing."),
    optimize: bool = typer.Option(True, "--optimize/--no-optimize", help="Save onnxruntime's offline-optimised graph."),
    level: str = typer.Option("basic", "--level", help="Offline optimisation level: basic or extended."),
    cutouts: Optional[Path] = typer.Option(
        None, "--cutouts", help="Cutouts (.npy) for the parity check (default: LensCrafter or synthetic scenes)."
    ),
    labels: Optional[Path] = typer.Option(None, "--labels", help="0/1 labels (.npy) of --cutouts, for the int8 RP check."),
    atol: Optional[float] = typer.Option(
        None, "--atol", help="Max |Δ probability| accepted (default 1e-5 for fp32, 5e-3 for fp16)."
    ),
    selection: Optional[Path] = typer.Option(
        None, "--selection", help="Selection-function table (deepmine selection --out) measured on an export of "
        "this checkpoint: its summary (overall and per-axis completeness, grid, pool) goes into the metadata.",
    ),
    evaluation: Optional[Path] = typer.Option(
        None, "--evaluation", help="Evaluation figures (a JSON object, e.g. tools/evaluate_bundled.py's "
        "evaluation.json) measured on an export of this checkpoint: stored in the metadata as extra.evaluation.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the written model's metadata as JSON on stdout."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out model; an input is never "
                                   "written over."),
) -> None:
    """Export a checkpoint to ONNX: dynamic batch, BatchNorm folded, outputs `logit` and
    `probability`, metadata (architecture, preprocessing, provenance, parity) inside.

    The parity check compares onnxruntime with torch on a batch of cutouts (max |Δ probability|
    ≤ 1e-5 for fp32); a model that fails it is not written. An int8 model is judged on the
    change of ranking performance (warned about beyond 0.01). Nothing partial is ever left at
    --out.
    """
    require("torch", "train")
    require("onnx", "train")
    if int8 and fp16:
        raise InputError("--int8 and --fp16: choose one")
    if int8 and calibration is None:
        raise InputError("--int8 needs --calibration CUTOUTS.npy (a few hundred cutouts like those you will scan)")
    if calibration is not None and not int8:
        raise InputError("--calibration is only used with --int8")
    if labels is not None and cutouts is None:
        raise InputError("--labels needs --cutouts (the labels are of those cutouts)")
    if graph_input not in ("float32", "uint8", "flux"):
        raise InputError(f"--graph-input: expected float32, uint8 or flux, got {graph_input!r}")
    if level not in ("basic", "extended"):
        raise InputError(f"--level: expected basic or extended, got {level!r}")
    existing_file(checkpoint, "checkpoint")
    from deepmine.inference.atomic import check_outputs
    from deepmine.inference.formats import output_paths

    out = output_paths(out, (".onnx",), known=(".onnx",), example="model")[0]
    check_outputs([out], [checkpoint, calibration, cutouts, labels, selection, evaluation], overwrite)
    cal = _load_npy(calibration, "calibration cutouts") if calibration is not None else None
    chk = _load_npy(cutouts, "check cutouts") if cutouts is not None else None
    lab = _load_npy(labels, "labels") if labels is not None else None

    from deepmine.export import ExportWarning, export_checkpoint
    from deepmine.inference.metadata import read_metadata

    def log(message: str) -> None:
        err_console.print(f"[dim]{message}…[/dim]")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = export_checkpoint(
            checkpoint, out, check=check, atol=atol, int8_calibration=cal, fp16=fp16, optimize=optimize,
            optimization_level=level, check_cutouts=chk, check_labels=lab, log=log, selection=selection,
            evaluation=evaluation,
            graph_input=graph_input,
        )  # fmt: skip
    meta, props = read_metadata(path)
    for w in caught:
        if issubclass(w.category, ExportWarning):
            err_console.print(f"[yellow]warning:[/yellow] {w.message}")
    if as_json:
        print(json.dumps({"path": str(path), "metadata": json.loads(meta.to_json()),
                          "content_hash": props.get("deepmine.content_hash")}))  # fmt: skip
        return
    _summary(path, meta, props)


def _summary(path: Path, meta, props: dict) -> None:
    def say(text: str) -> None:
        out_console.print(text, soft_wrap=True)

    p = meta.parity
    say(f"wrote {path}  ({path.stat().st_size / 1e6:.2f} MB, {meta.precision}, {meta.architecture})")
    graph_input = meta.preprocessing.get("graph_input")
    if graph_input:
        what = {"uint8": "normalised uint8 cutouts, /255 in the graph",
                "flux": "float32 fluxes, percentile-normalised in the graph"}[graph_input]
        say(f"input      {graph_input} ({what})")
    if not p.get("checked"):
        say("parity     not checked (--no-check)")
    else:
        f = p["fp32"]
        key = "max_abs_probability" if "max_abs_probability" in f else "max_abs_image"
        bound = (f"{f['tolerance']:.2e} (atol {f['atol']:g} + 2 × torch's float32 error {f['float32_rounding_probability']:.2e})"
                 if "tolerance" in f else f"{f['atol']:g}")  # fmt: skip
        say(f"parity     fp32 max |Δ| {f[key]:.2e} ≤ {bound} on {p['source']}")
        if "fp16" in p:
            say(f"           fp16 max |Δ| {p['fp16'][key]:.2e} ≤ {p['fp16']['atol']:g}")
        if "int8" in p:
            q = p["int8"]
            mark = "" if q["passed"] else "  [yellow](beyond tolerance)[/yellow]"
            say(
                f"           int8 RP {q['rp_int8']:.4f} vs fp32 {q['rp_fp32']:.4f}: change {q['rp_change']:+.4f} "
                f"(tolerance {q['rp_tolerance']}){mark}"
            )
    sel = meta.extra.get("selection")
    if sel:
        say(f"selection  {sel['detected']:,} of {sel['lenses']:,} grid lenses detected ({sel['fraction']:.1%}, "
            f"ordinality > {sel['cut']}) — from {sel['file']}")
    if meta.extra.get("evaluation"):
        say(f"evaluation {meta.extra['evaluation']['file']} ({meta.extra['evaluation']['file_sha256'][:19]}…)")
    say(f"hash       {props.get('deepmine.content_hash')}")


def register(app: typer.Typer) -> None:
    app.command("export")(export)
