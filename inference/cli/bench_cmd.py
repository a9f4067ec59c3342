"""``deepmine bench``: scan rate of exported models on this machine (torch-free)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from .common import out_console


def bench(
    models: Optional[list[Path]] = typer.Argument(
        None, help="Exported .onnx classifiers to time (default: the bundled model).", show_default=False
    ),
    n: int = typer.Option(2048, "--n", min=1, help="Cutouts per timed pass."),
    batch_size: int = typer.Option(256, "--batch-size", "-b", min=1, help="Batch size (fixed; last batch padded)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="onnxruntime intra-op threads (default: all cores)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda (cuda needs deepmine[gpu])."),
    repeats: int = typer.Option(3, "--repeats", min=1, help="Timed passes; the best is reported."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per model."),
    allow_modified_model: bool = typer.Option(
        False, "--allow-modified-model", help="Time a model whose stored content hash does not verify."),
) -> None:
    """Measure the scan rate (cutouts/s) of each model: the session alone with its input already
    on the device ("session": IOBinding on CUDA), onnxruntime on preprocessed batches copied from
    the host ("model only") and end to end from uint8 cutouts (preprocessing included), with the
    provider actually used. Compare fp32, int8 and fp16 exports, or --graph-input uint8/flux
    exports, of one model by passing them all. "ratio" is end to end over model only.
    """
    from rich.table import Table

    from ..identity import check_content_hash
    from ..model import load_model, resolve_model_path
    from ..throughput import measure_throughput
    from .common import err_console

    results = []
    for path in models or [None]:
        note = check_content_hash(resolve_model_path(path), allow_modified_model)
        model = load_model(path, device=device, threads=threads)
        results.append(measure_throughput(model, n=n, batch_size=batch_size, repeats=repeats))
        if note:
            results[-1]["warning"] = note
            err_console.print(f"warning: {note}", markup=False)
    if as_json:
        for r in results:
            print(json.dumps(r))
        return
    table = Table(title=f"scan rate (cutouts per second, best of {repeats})")
    for col in ("model", "arch", "precision", "input", "provider", "threads", "batch", "session", "model only",
                "end to end", "ratio"):
        table.add_column(col, justify="right" if col not in ("model", "arch", "provider") else "left",
                         no_wrap=col == "model")
    for r in results:
        table.add_row(Path(r["model"]).name, r["architecture"], r["precision"], r["graph_input"],
                      r["provider"].replace("ExecutionProvider", ""), str(r["threads"] or "all"), str(r["batch_size"]),
                      f"{r['session_per_s']:,.0f}", f"{r['model_only_per_s']:,.0f}",
                      f"{r['end_to_end_per_s']:,.0f}", f"{r['end_to_end_over_model_only']:.2f}")
    out_console.print(table)


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)
