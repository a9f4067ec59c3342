"""``deepmine train gan``: train the GAN lens generator (seed 4.3; needs ``deepmine[train]``).

The command joins the ``deepmine train`` group in :mod:`.train_cmd` (``register_train``).
torch and :mod:`deepmine.training` are imported inside the command, so this module keeps the
CLI torch-free.
"""
from __future__ import annotations

from pathlib import Path

import typer


def gan(
    config: str = typer.Argument(..., help="GAN recipe: a TOML file or a shipped one (gan, gan-fast, gan-tiny)."),
    positives: list[Path] = typer.Option(..., "--positives", help="Lens cutouts (.npy/FITS, N×C×H×W); repeatable.",
                                         show_default=False),
    negatives: list[Path] = typer.Option(..., "--negatives", help="Non-lens cutouts for pre-training; repeatable.",
                                         show_default=False),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: checkpoints, losses.csv, diversity.csv, "
                             "samples/*.png, augmented.npy, generator.pt.", show_default=False),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its checkpoint."),
    device: str = typer.Option("cpu", "--device", help="torch device: cpu or cuda."),
    sets: list[str] = typer.Option([], "--set", help="Override a recipe key, e.g. --set cycles.count=2 (repeatable)."),
) -> None:
    """Train the GAN lens generator: pre-train on negatives, retrain on positives in cycles,
    write the augmented lenses (uint8 cutouts, the scanner's format), per-epoch losses,
    per-cycle sample grids and diversity figures. Export `generator.pt` with `deepmine export`
    and sample it torch-free with `deepmine generate`."""
    from deepmine.inference.errors import InputError, require

    require("torch", "train")
    from deepmine.inference.cli.common import err_console, out_console, progress_bar
    from deepmine.training.gan import load_gan_recipe, train_gan
    from deepmine.training.recipe import parse_set

    recipe = load_gan_recipe(config, dict(parse_set(t) for t in (sets or [])))
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise InputError(f"--device: expected cpu or cuda, got {device!r}")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise InputError("--device cuda: torch sees no CUDA device; use --device cpu")
    with progress_bar() as bar:
        result = train_gan(recipe, positives, negatives, out, resume=resume, device=device, progress=bar,
                           log=lambda m: err_console.print(m, highlight=False))
    ov = result.overall
    out_console.print(f"wrote {ov['n']} augmented lenses to {result.augmented}")
    out_console.print(f"generator {result.generator} (export: deepmine export {result.generator} --out GEN.onnx)")
    out_console.print(f"mean pairwise distance {ov['mean_pairwise']:.4f} (positives {ov['train_mean_pairwise']:.4f}); "
                      f"nearest-positive median {ov['nn_train_median']:.4f}; memorised {100 * ov['memorised_fraction']:.1f} %")


def register_train(train_app: typer.Typer) -> None:
    """Add ``gan`` to a ``deepmine train`` typer group."""
    train_app.command("gan")(gan)
