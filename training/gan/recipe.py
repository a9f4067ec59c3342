"""GAN recipes: every key with its default (:data:`GAN_DEFAULTS`), reading and checking them.

A GAN recipe is a TOML file like the classifier recipes (``extends``, dotted-key ``sets``;
:mod:`deepmine.training.recipe`), with its own keys; unknown keys are refused. The shipped
ones are ``gan`` (the seed's sizes), ``gan-fast`` (a small discriminator and generator for CPU
runs) and ``gan-tiny`` (tests). What each key does is told in :mod:`deepmine.training.gan`.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deepmine.inference.errors import InputError

__all__ = ["GAN_DEFAULTS", "BUILTIN", "START_MODES", "GanRecipe", "load_gan_recipe"]

#: Every recipe key and its default; unknown keys are refused.
GAN_DEFAULTS: dict[str, Any] = {
    "name": "",
    "description": "",
    "seed": 0,
    "deterministic": True,
    "generator": {},        # create_model("lensgenerator", **generator)
    "discriminator": {},    # create_model("eznet", **discriminator); {} = the seed's 50 blocks
    "optimizer": {"lr": 2e-4, "betas": [0.5, 0.999], "lr_discriminator": 0.0},  # 0: same as lr
    "data": {
        "batch_size": 64,               # real images per step (as many fakes)
        "images_per_epoch": 0,          # 0: one pass over the phase's images
        "symmetries": True,             # random square symmetries of the real images
        "channels": [],                 # channel indices taken from the files; [] = all
        "max_negatives": 0,             # 0: all negatives in pre-training
        "discriminator_batches": "bundled",  # bundled | separate
        "real_label": 1.0,              # < 1: one-sided label smoothing
        "translate": 0.125,             # DiffAugment shift (fraction of the size) of reals and fakes
    },
    "pretrain": {"epochs": 5},
    "cycles": {"count": 10, "epochs": 20, "samples": 200, "start": "pretrained"},
    "output": {"grid": 64, "sample_batch": 200, "calibration_batches": 16},
}  # fmt: skip

BUILTIN = ("gan", "gan-fast", "gan-tiny")
START_MODES = ("pretrained", "continue")


@dataclass
class GanRecipe:
    """A resolved GAN recipe (``settings`` holds every key of :data:`GAN_DEFAULTS`)."""

    settings: dict
    source: str = ""

    def __getitem__(self, key):
        return self.settings[key]

    @property
    def seed(self) -> int:
        return int(self.settings["seed"])

    def to_dict(self) -> dict:
        return {"settings": copy.deepcopy(self.settings), "source": self.source}


def load_gan_recipe(config: str | os.PathLike, sets: dict[str, Any] | None = None) -> GanRecipe:
    """Read, merge (``extends``), override (``sets``: dotted keys) and validate a GAN recipe.

    Parameters
    ----------
    config : path to a TOML recipe, or a shipped one's name (``"gan"``: the seed's sizes;
        ``"gan-fast"``: a small discriminator and generator for CPU runs; ``"gan-tiny"``: tests)
    sets : dotted-key overrides, e.g. ``{"cycles.count": 2, "optimizer.lr": 1e-4}``
    """
    from ..recipe import _apply_sets, _check_keys, _check_types, _load_raw, builtin_recipe_path

    ref = os.fspath(config)
    path = builtin_recipe_path(ref) if ref in BUILTIN and not Path(ref).exists() else Path(ref)
    data = _load_raw(path, builtin=BUILTIN)
    if sets:
        data = _apply_sets(data, sets)
    where = str(path)
    _check_keys(data, GAN_DEFAULTS, where)
    settings: dict[str, Any] = {}
    for key, default in GAN_DEFAULTS.items():
        if key in ("generator", "discriminator"):
            sec = data.get(key, {})
            if not isinstance(sec, dict):
                raise InputError(f"{where}: [{key}] must be a table of model options")
            settings[key] = copy.deepcopy(sec)
        elif isinstance(default, dict):
            sec = data.get(key, {})
            if not isinstance(sec, dict):
                raise InputError(f"{where}: [{key}] must be a table")
            _check_keys(sec, default, f"{where} [{key}]")
            settings[key] = _check_types(sec, default, f"{where} {key}")
        else:
            settings[key] = _check_types({key: data.get(key, default)}, {key: default}, where)[key]
    _check(settings, where)
    if not settings["name"]:
        settings["name"] = path.stem
    return GanRecipe(settings, str(path))


def _check(s: dict, where: str) -> None:
    opt, d, cyc = s["optimizer"], s["data"], s["cycles"]
    if opt["lr"] <= 0 or opt["lr_discriminator"] < 0:
        raise InputError(f"{where} optimizer: lr must be > 0 and lr_discriminator >= 0")
    if len(opt["betas"]) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in opt["betas"]):
        raise InputError(f"{where} optimizer.betas: expected two numbers in [0, 1), got {opt['betas']}")
    if d["batch_size"] < 2:
        raise InputError(f"{where} data.batch_size: must be >= 2 (BatchNorm), got {d['batch_size']}")
    if d["images_per_epoch"] < 0 or d["max_negatives"] < 0:
        raise InputError(f"{where} data: images_per_epoch and max_negatives must be >= 0")
    if d["discriminator_batches"] not in ("bundled", "separate"):
        raise InputError(f"{where} data.discriminator_batches: expected 'bundled' or 'separate', got "
                         f"{d['discriminator_batches']!r}")
    if not 0.0 <= d["translate"] < 0.5:
        raise InputError(f"{where} data.translate: must be in [0, 0.5), got {d['translate']}")
    if not 0.5 < d["real_label"] <= 1.0:
        raise InputError(f"{where} data.real_label: must be in (0.5, 1], got {d['real_label']}")
    if not all(isinstance(c, int) and c >= 0 for c in d["channels"]):
        raise InputError(f"{where} data.channels: expected channel indices (integers >= 0), got {d['channels']}")
    if s["pretrain"]["epochs"] < 0:
        raise InputError(f"{where} pretrain.epochs: must be >= 0 (0 skips pre-training)")
    for k in ("count", "epochs", "samples"):
        if cyc[k] < 1:
            raise InputError(f"{where} cycles.{k}: must be >= 1, got {cyc[k]}")
    if cyc["start"] not in START_MODES:
        raise InputError(f"{where} cycles.start: expected one of {START_MODES}, got {cyc['start']!r}")
    if s["output"]["grid"] < 1 or s["output"]["sample_batch"] < 1 or s["output"]["calibration_batches"] < 0:
        raise InputError(f"{where} output: grid and sample_batch must be >= 1, calibration_batches >= 0")
