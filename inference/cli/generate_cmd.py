"""``deepmine generate``: sample an exported LensGenerator (onnxruntime, no torch)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from .common import existing_file, out_console, task


def generate(
    model: Path = typer.Argument(..., help="Exported generator (.onnx from `deepmine export` of a LensGenerator).",
                                 show_default=False),
    n: int = typer.Option(..., "--n", "-n", help="Number of cutouts to generate.", show_default=False),
    out: Path = typer.Option(..., "--out", "-o", help="Output file: .npy (N×C×H×W uint8, the scanner's format) "
                             "or .fits; a <out>.provenance.json sidecar is written beside it.", show_default=False),
    seed: int = typer.Option(0, "--seed", "-s", help="Seed of the latent vectors (same seed and n → same cutouts)."),
    batch_size: int = typer.Option(256, "--batch-size", "-b", help="Latent vectors per onnxruntime call."),
    threads: Optional[int] = typer.Option(None, "--threads", help="onnxruntime intra-op threads (default: one per core)."),
    as_json: bool = typer.Option(False, "--json", help="Print the provenance as JSON on stdout."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out and its provenance sidecar."),
) -> None:
    """Generate GAN lens cutouts for training augmentation (seed 4.3).

    Writes uint8 cutouts in the model's band order (HSC: i, r, g), percentile-normalised like
    survey cutouts, so `deepmine scan` and training read them directly. The output appears
    atomically: an interrupted run leaves no partial file.
    """
    from ..errors import InputError
    from ..generate import check_output, load_generator, sidecar_path, write_generated

    existing_file(model, "generator model")
    if n <= 0:
        raise InputError(f"--n: the number of cutouts must be at least 1, got {n}")
    if batch_size <= 0:
        raise InputError(f"--batch-size: must be at least 1, got {batch_size}")
    if seed < 0:
        raise InputError(f"--seed: must be non-negative, got {seed}")
    check_output(out, [model], overwrite)
    gen = load_generator(model, threads=threads)
    with task("generating", n) as advance:
        prov = write_generated(out, gen, n, seed=seed, batch_size=batch_size, progress=advance)
    if as_json:
        print(json.dumps(prov))
        return
    c, h, w = gen.image_shape
    out_console.print(f"wrote {n} cutouts {c}×{h}×{w} uint8 (bands {', '.join(gen.metadata.bands)}) to {out}")
    out_console.print(f"provenance in {sidecar_path(out)} (seed {seed})")


def register(app: typer.Typer) -> None:
    app.command("generate")(generate)
