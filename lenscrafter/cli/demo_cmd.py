"""``deepmine demo``: find lenses hidden in a mock survey with the bundled model (no torch)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from deepmine.inference.cli.common import err_console, out_console, progress_bar


def demo(
    out: Path = typer.Option(Path("deepmine-demo"), "--out", "-o", help="Folder for every output (the demo owns "
                             "it: a rerun replaces the demo's own files there, and says so)."),
    negatives: int = typer.Option(3000, "--negatives", min=200, help="Non-lens scenes in the mock survey."),
    lenses: int = typer.Option(40, "--lenses", min=1, help="Lenses hidden among them."),
    seed: int = typer.Option(0, "--seed", help="Random seed of the mock survey."),
    model: Optional[Path] = typer.Option(None, "--model", help="Classifier to use (default: the bundled EZnet)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="onnxruntime threads (default: all cores)."),
    no_selection: bool = typer.Option(False, "--no-selection", help="Skip the small selection function."),
    as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON."),
) -> None:
    """Craft a mock survey with LensCrafter (non-lens scenes of every kind with lenses hidden
    among them), scan it with the bundled model, and report how well the hidden lenses rank:
    ranking performance, how many lenses rank above 99.5 % of the non-lens scenes (the
    survey's top 0.5 %), the candidate catalogue, a mosaic of the top candidates, the TRC plot
    and a small selection function. About 40 s on 2 cores the first time (Numba compiles),
    15 s after.
    """
    from deepmine.lenscrafter.demo import run_demo

    if model is None:
        err_console.print("using the bundled model (pass --model to use your own)")
    with progress_bar() as bar:
        r = run_demo(out, n_negatives=negatives, n_lenses=lenses, seed=seed, model=model, threads=threads,
                     selection=not no_selection, progress=bar)
    if as_json:
        print(json.dumps(r, default=str))
        return
    if r.get("replaced"):
        err_console.print(f"replaced {len(r['replaced'])} file(s) of an earlier demo run in {r['out']}")
    out_console.print(f"mock survey      {r['n_objects']:,} cutouts, {r['n_lenses']} hidden lenses  (scanned at "
                      f"{r['scan_rate_per_s']:,.0f}/s on {r['provider'].replace('ExecutionProvider', '')})")
    out_console.print(f"ranking perf.    {r['ranking_performance']:.4f}")
    out_console.print(f"top 0.5 %        {r['lenses_in_top_0.5%']} of {r['n_lenses']} hidden lenses "
                      "(ranked above 99.5 % of the non-lens scenes)")
    for key, label in (("catalog", "catalogue"), ("top", "top list"), ("mosaic", "mosaic"), ("trc", "TRC plot"),
                       ("selection_plot", "selection")):
        if r.get(key):
            out_console.print(f"{label:<16} {r[key]}")
    out_console.print(f"done in {r['total_s']:.0f} s; inspect the candidates with: deepmine inspect {r['catalog']}")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
