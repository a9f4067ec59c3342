"""``deepmine train gan``: train the GAN lens generator (seed 4.3; needs ``deepmine[train]``).

The command joins the ``deepmine train`` group in :mod:`.train_cmd`::

    from .train_gan_cmd import gan
    train_app.command("gan")(gan)

torch and :mod:`deepmine.training` are imported inside the command, so this module keeps the
CLI torch-free.
"""
from __future__ import annotations

from pathlib import Path
from typing import List

import typer


def gan(
    config: str = typer.Argument(..., help="GAN recipe: a TOML file or a shipped one (gan, gan-fast, gan-tiny)."),
    positives: List[Path] = typer.Option(..., "--positives", "-p", help="Lens cutouts (.npy/FITS, N×C×H×W); repeatable.",
                                         show_default=False),
    negatives: List[Path] = typer.Option(..., "--negatives", "-n", help="Non-lens cutouts for pre-training; repeatable.",
                                         show_default=False),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: checkpoints, losses.csv, diversity.csv, "
                             "samples/*.png, augmented.npy, generator.pt.", show_default=False),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its checkpoint."),
    device: str = typer.Option("cpu", "--device", help="torch device: cpu or cuda."),
    sets: List[str] = typer.Option([], "--set", help="Override a recipe key, e.g. --set cycles.count=2 (repeatable)."),
) -> None:
    """Train the GAN lens generator: pre-train on negatives, retrain on positives in cycles,
    write the augmented lenses (uint8 cutouts, the scanner's format), per-epoch losses,
    per-cycle sample grids and diversity figures. Export `generator.pt` with `deepmine export`
    and sample it torch-free with `deepmine generate`."""
    from ..errors import require

    require("torch", "train")
    from deepmine.training.gan import gan_command

    gan_command(config, positives, negatives, out, resume=resume, device=device, sets=sets)


def register_train(train_app: typer.Typer) -> None:
    """Add ``gan`` to a ``deepmine train`` typer group."""
    train_app.command("gan")(gan)
