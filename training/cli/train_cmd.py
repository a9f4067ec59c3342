"""``deepmine train lensflow|eznet CONFIG``: train a classifier with a recipe (needs ``deepmine[train]``).

The sub-commands are thin: options are parsed here, the work is
:func:`deepmine.training.trainer.train`. torch is imported inside the command, so
``deepmine --help`` stays torch-free and a torch-less install says what to install.
``deepmine train gan`` comes from ``train_gan_cmd.py`` (``register_train(train_app)``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from deepmine.inference.cli.common import err_console, existing_file, out_console, progress_bar
from deepmine.inference.errors import InputError

train_app = typer.Typer(
    help="Train a classifier (LensFlow, EZnet) or the LensGenerator GAN with a recipe; needs `pip install 'deepmine[train]'`.",
    no_args_is_help=True,
)

CONFIG_HELP = (
    "Recipe: a TOML file, or the name of a shipped recipe (`eznet`, `lensflow`). "
    "Its [model] name must match the sub-command."
)


def _run(
    architecture: str,
    config: str,
    positives: list[Path],
    negatives: list[Path],
    out: Path,
    resume: bool,
    device: str,
    amp: bool,
    plot: bool,
    extra_negatives: list[Path],
    extra_positives: list[Path],
    seed: Optional[int],
    sets: list[str],
    as_json: bool,
    init: Optional[Path] = None,
) -> None:
    from deepmine.inference.errors import require

    require("torch", "train")
    from deepmine.training.recipe import load_recipe, parse_set
    from deepmine.training.trainer import train

    if init is not None:
        existing_file(init, "--init checkpoint")
    overrides = dict(parse_set(s) for s in sets)
    if seed is not None:
        overrides["seed"] = int(seed)
    recipe = load_recipe(config, overrides)
    if recipe.model["name"].lower() != architecture:
        raise InputError(
            f"{config}: the recipe trains {recipe.model['name']!r}, not {architecture!r}; "
            f"use `deepmine train {recipe.model['name']}` or another recipe"
        )
    if not as_json:
        phases = ", ".join(f"{p['name']} ({p['epochs']} epochs)" for p in recipe.phases)
        err_console.print(f"training {architecture} with recipe {recipe.name!r}: {phases} → {out}")
    with progress_bar() as bar:
        result = train(
            recipe, [str(p) for p in positives], [str(p) for p in negatives], out,
            extra_positives=[str(p) for p in extra_positives] or None,
            extra_negatives=[str(p) for p in extra_negatives] or None,
            resume=resume, device=device, amp=amp, plot=plot, init=init, progress=bar,
        )  # fmt: skip
    summary = {
        "model": str(result.model_path),
        "checkpoint": str(result.checkpoint_path),
        "history": str(result.out_dir / "history.csv"),
        "epochs": len(result.history),
        "heldout": result.heldout,
    }
    if result.plot_path is not None:
        summary["plot"] = str(result.plot_path)
    if as_json:
        import json
        import math

        # NaN (nothing held out: data.test_fraction = 0) is not JSON; write null
        summary["heldout"] = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in result.heldout.items()}
        print(json.dumps(summary))
        return
    h = result.heldout
    out_console.print(
        f"held-out ranking performance {h.get('ranking_performance', float('nan')):.4f}, "
        f"accuracy {h.get('accuracy', float('nan')):.4f} ({h.get('n_positives', 0)} positives, "
        f"{h.get('n_negatives', 0)} negatives)"
    )
    for key in ("model", "checkpoint", "history", "plot"):
        if key in summary:
            out_console.print(f"wrote {key:<10} {summary[key]}")


def _command(architecture: str):
    def command(
        config: str = typer.Argument(..., help=CONFIG_HELP, show_default=False),
        positives: list[Path] = typer.Option(
            ..., "--positives", help="Positive cutouts (.npy or FITS, N×C×H×W; uint8 or float). Repeatable.",
            show_default=False,
        ),
        negatives: list[Path] = typer.Option(
            ..., "--negatives", help="Negative pool cutouts, same formats. Repeatable.", show_default=False
        ),
        out: Path = typer.Option(..., "--out", "-o", help="Output folder (checkpoints, history.csv, model.pt).",
                                 show_default=False),  # fmt: skip
        resume: bool = typer.Option(False, "--resume", help="Continue the run in --out where it stopped (bit-for-bit)."),
        init: Optional[Path] = typer.Option(
            None, "--init", help="Start from the weights of this checkpoint (model.pt of an earlier run with the "
            "same [model]): fine-tuning, or the next stage of a staged recipe. Recorded in the provenance.",
        ),
        device: str = typer.Option("auto", "--device", help="cpu, cuda or auto."),
        amp: bool = typer.Option(False, "--amp", help="Automatic mixed precision (CUDA only)."),
        plot: bool = typer.Option(False, "--plot", help="Write curves.png: loss, accuracy and RP per epoch."),
        extra_negatives: list[Path] = typer.Option(
            [], "--extra-negatives", help="Inspected false positives, added as negatives by phases that ask "
            "for them (LensFlow phases 2-3). Repeatable.",
        ),
        extra_positives: list[Path] = typer.Option(
            [], "--extra-positives", help="Tracers added as positives by phases that ask for them (LensFlow "
            "phase 3). Repeatable.",
        ),
        seed: Optional[int] = typer.Option(None, "--seed", help="Override the recipe's seed."),
        sets: list[str] = typer.Option(
            [], "--set", help="Override a recipe value: KEY=VALUE with dotted keys, e.g. optimizer.lr=0.01, "
            "epochs=5 (every phase), phase.coarse.epochs=3. Repeatable.",
        ),
        as_json: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
    ) -> None:
        _run(architecture, config, positives, negatives, out, resume, device, amp, plot, extra_negatives,
             extra_positives, seed, sets, as_json, init)  # fmt: skip

    command.__doc__ = {
        "lensflow": "Train LensFlow (seed 2.3-2.6): 1×100×100 single-band cutouts, histogram matching, "
        "Adam, balanced 64+64 batches, phases 0 (pre-training) to 3 (search).",
        "eznet": "Train EZnet (seed 4.5-4.6): block-table ConvNet on 3×64×64 cutouts, percentile "
        "normalisation, SGD Nesterov with step LR, negative learning.",
    }[architecture]
    return command


for _name in ("lensflow", "eznet"):
    train_app.command(_name)(_command(_name))


from .train_gan_cmd import register_train as _register_gan  # noqa: E402 - after the group exists

_register_gan(train_app)


def register(app: typer.Typer) -> None:
    app.add_typer(train_app, name="train")
