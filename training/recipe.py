"""Training recipes: TOML files naming the model, the data handling, the optimiser and phases.

A recipe is a TOML file (or the name of a shipped one: ``eznet``, ``lensflow``, in
``deepmine/training/recipes/``). Every key has a default (:data:`DEFAULTS`); unknown keys are
refused, so a typo never passes silently. Layout::

    name = "eznet-hsc"
    description = "..."
    extends = "eznet"          # optional: start from a shipped recipe (or a path)
    seed = 0

    [model]                    # name + constructor options of deepmine.training.create_model
    name = "eznet"
    [data]                     # splits, batches, negative learning, augmentation
    [optimizer]                # sgd | adam, lr, momentum, nesterov, weight_decay, betas
    [schedule]                 # step decays of the LR at given epochs (of the phase), or cosine
    [early_stop]               # stop a phase when the held-out metric stops improving
    [[phase]]                  # one or more phases, run in order
    name = "main"
    epochs = 250
    [phase.optimizer]          # any section may be overridden inside a phase
    lr = 0.01

Phase keys: ``name``, ``epochs``, ``enabled``, ``conv_lr_scale`` (LR multiplier of the
convolution layers; seed phase 1: 0.1), ``source`` (``"given"``: the --positives/--negatives
files; ``"generic"``: the built-in generic two-class set of
:func:`deepmine.training.data.generic_two_class`; ``"files"``: the phase's own ``positives``
and ``negatives`` paths, relative to the recipe), ``generic_size``, ``negatives_top_fraction``
(seed phase 2: keep only this top fraction of the negative pool as ranked by the model at the
phase start, 0.06), ``extra_negatives`` / ``extra_positives`` (add the files given with
--extra-negatives, e.g. inspected false positives, and --extra-positives, e.g. tracers, to the
phase's train set), ``reset_head`` (re-initialise the fully connected layers at the phase start,
as when moving from the generic set to lenses).

With ``extends``, sections merge key by key, and phases merge by name (a child phase of the
same name updates the parent's; new names are appended).
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from deepmine.inference.errors import InputError, file_error

DEFAULTS: dict[str, Any] = {
    "name": "",
    "description": "",
    "seed": 0,
    "deterministic": True,
    "model": {"name": ""},
    "data": {
        "test_fraction": 0.2,          # held out from positives and negatives (each)
        "max_test_negatives": 0,       # 0: no cap
        "batch_positives": 32,         # positives per minibatch (each paired with negatives)
        "negatives_per_positive": 1,
        "positives_per_epoch": 0,      # 0: every train positive once per epoch
        "symmetries": True,            # random square symmetries (8)
        "crop": 0,                     # random crop size rescaled to the input size (LensFlow 90)
        "shift": 0,                    # random integer translation, up to this many pixels per axis (0: none)
        "channels": [],                # bands (channel indices) taken from the files; [] = all
        "eval_batch_size": 256,
        "template": "positives",       # LensFlow histogram template: positives | negatives | all | path.npy
        "template_images": 2000,       # images sampled to build it
    },
    "optimizer": {
        "name": "sgd",
        "lr": 0.1,
        "momentum": 0.9,
        "nesterov": True,
        "weight_decay": 1e-4,
        "betas": [0.9, 0.999],
    },
    "schedule": {"name": "step", "milestones": [], "gamma": 0.1},  # step | cosine (milestones unused)
    "early_stop": {
        "metric": "test_rp",          # test_rp | test_loss | test_accuracy
        "patience": 0,                # 0: never stop early
        "min_delta": 0.0,
        "restore_best": True,         # end a phase with the weights of its best held-out epoch
    },
    "checkpoint_every": 1,
}  # fmt: skip

PHASE_DEFAULTS: dict[str, Any] = {
    "name": "main",
    "epochs": 1,
    "enabled": True,
    "conv_lr_scale": 1.0,
    "source": "given",
    "generic_size": 2000,
    "positives": "",
    "negatives": "",
    "negatives_top_fraction": 0.0,
    "extra_negatives": False,
    "extra_positives": False,
    "reset_head": False,
}
PHASE_SECTIONS = ("data", "optimizer", "schedule", "early_stop")
BUILTIN = ("eznet", "lensflow", "demo", "demo-anneal", "survey")


@dataclass
class Recipe:
    """A resolved recipe: top-level settings plus fully merged phases."""

    settings: dict
    phases: list = field(default_factory=list)
    source: str = ""
    base_dir: str = "."

    @property
    def name(self) -> str:
        return self.settings["name"]

    @property
    def model(self) -> dict:
        return self.settings["model"]

    @property
    def seed(self) -> int:
        return int(self.settings["seed"])

    def to_dict(self) -> dict:
        """JSON-compatible form (stored in checkpoints and the ONNX metadata)."""
        return {"settings": copy.deepcopy(self.settings), "phases": copy.deepcopy(self.phases), "source": self.source}

    def total_epochs(self) -> int:
        return sum(int(p["epochs"]) for p in self.phases)


def builtin_recipe_path(name: str) -> Path:
    return Path(str(resources.files("deepmine.training") / "recipes" / f"{name}.toml"))


def _read_toml(path: Path, builtin: tuple = BUILTIN) -> dict:
    import tomllib

    if not path.is_file():
        raise file_error(path, "recipe not found" + (f" (shipped recipes: {', '.join(builtin)})" if path.suffix != ".toml" else ""))
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise file_error(path, f"not valid TOML ({exc})") from None


def _resolve_path(ref: str, relative_to: Path, builtin: tuple = BUILTIN) -> Path:
    if ref in builtin:
        return builtin_recipe_path(ref)
    p = Path(ref)
    return p if p.is_absolute() else (relative_to / p)


def _merge(base: dict, child: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in child.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "model":
            out[k] = _merge(out[k], v)
        elif k == "model" and isinstance(v, dict) and isinstance(out.get(k), dict):
            # a different model name replaces the model section; the same name merges
            out[k] = _merge(out[k], v) if v.get("name", out[k].get("name")) == out[k].get("name") else copy.deepcopy(v)
        elif k == "phase" and isinstance(v, list) and isinstance(out.get(k), list):
            phases = out[k]
            for ph in v:
                match = next((i for i, p in enumerate(phases) if p.get("name", "main") == ph.get("name", "main")), None)
                if match is None:
                    phases.append(copy.deepcopy(ph))
                else:
                    phases[match] = _merge(phases[match], ph)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _load_raw(path: Path, seen: tuple = (), builtin: tuple = BUILTIN) -> dict:
    """Read a recipe and merge the chain of ``extends`` under it; ``builtin`` names the shipped
    recipes that ``extends`` may name (the GAN recipes pass their own)."""
    if path.resolve() in seen:
        raise file_error(path, "recipe extends itself (a cycle of 'extends')")
    data = _read_toml(path, builtin)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise file_error(path, f"extends must be a recipe name or path, got {parent!r}")
    base = _load_raw(_resolve_path(parent, path.parent, builtin), seen + (path.resolve(),), builtin)
    return _merge(base, data)


def _apply_sets(data: dict, sets: dict[str, Any]) -> dict:
    data = copy.deepcopy(data)
    for key, value in sets.items():
        parts = key.split(".")
        if parts[0] == "phase":
            if len(parts) < 3:
                raise InputError(f"--set {key}: give phase.<index or name>.<key>")
            phases = data.setdefault("phase", [{"name": "main"}])
            sel = [p for j, p in enumerate(phases) if str(j) == parts[1] or p.get("name") == parts[1]]
            if not sel:
                raise InputError(f"--set {key}: no phase {parts[1]!r} (phases: {', '.join(p.get('name', 'main') for p in phases)})")
            node = sel[0]
            for part in parts[2:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = value
        elif key == "epochs":
            for p in data.setdefault("phase", [{"name": "main"}]):
                p["epochs"] = value
        else:
            node = data
            for part in parts[:-1]:
                node = node.setdefault(part, {})
                if not isinstance(node, dict):
                    raise InputError(f"--set {key}: {part} is not a section")
            node[parts[-1]] = value
    return data


def parse_set(text: str) -> tuple[str, Any]:
    """``"optimizer.lr=0.01"`` → ("optimizer.lr", 0.01); values are TOML (strings may be bare)."""
    import tomllib

    if "=" not in text:
        raise InputError(f"--set {text!r}: expected KEY=VALUE, e.g. optimizer.lr=0.01 or phase.coarse.epochs=2")
    key, value = (s.strip() for s in text.split("=", 1))
    if not key:
        raise InputError(f"--set {text!r}: empty key")
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value
    return key, parsed


def _check_keys(section: dict, allowed: dict, where: str) -> None:
    unknown = sorted(set(section) - set(allowed))
    if unknown:
        raise InputError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")


def _check_types(section: dict, defaults: dict, where: str) -> dict:
    out = {}
    for k, default in defaults.items():
        v = section.get(k, default)
        if isinstance(default, bool):
            if not isinstance(v, bool):
                raise InputError(f"{where}.{k}: expected true or false, got {v!r}")
        elif isinstance(default, int):
            if isinstance(v, bool) or not (isinstance(v, int) or (isinstance(v, float) and v.is_integer())):
                raise InputError(f"{where}.{k}: expected an integer, got {v!r}")
            v = int(v)
        elif isinstance(default, float):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise InputError(f"{where}.{k}: expected a number, got {v!r}")
            v = float(v)
        elif isinstance(default, str):
            if not isinstance(v, str):
                raise InputError(f"{where}.{k}: expected a string, got {v!r}")
        elif isinstance(default, list):
            if not isinstance(v, list):
                raise InputError(f"{where}.{k}: expected a list, got {v!r}")
        out[k] = v
    return out


def _validate(data: dict, where: str) -> tuple[dict, list]:
    top_allowed = dict(DEFAULTS, phase=None)
    _check_keys(data, top_allowed, where)
    settings: dict[str, Any] = {}
    for key, default in DEFAULTS.items():
        if isinstance(default, dict) and key != "model":
            sec = data.get(key, {})
            if not isinstance(sec, dict):
                raise InputError(f"{where}: [{key}] must be a table")
            _check_keys(sec, default, f"{where} [{key}]")
            settings[key] = _check_types(sec, default, f"{where} {key}")
        elif key == "model":
            model = data.get("model", {})
            if not isinstance(model, dict) or not model.get("name"):
                raise InputError(f"{where}: [model] needs a name (\"eznet\" or \"lensflow\")")
            settings["model"] = copy.deepcopy(model)
        else:
            settings[key] = _check_types({key: data.get(key, default)}, {key: default}, where)[key]
    phases_raw = data.get("phase", [{"name": "main"}])
    if not isinstance(phases_raw, list) or not phases_raw:
        raise InputError(f"{where}: [[phase]] must be a list of tables with at least one phase")
    phases = []
    for i, ph in enumerate(phases_raw):
        pw = f"{where} phase {ph.get('name', i) if isinstance(ph, dict) else i}"
        if not isinstance(ph, dict):
            raise InputError(f"{pw}: must be a table")
        _check_keys(ph, dict(PHASE_DEFAULTS, **{s: None for s in PHASE_SECTIONS}), pw)
        merged = _check_types(ph, PHASE_DEFAULTS, pw)
        for s in PHASE_SECTIONS:
            sub = ph.get(s, {})
            if not isinstance(sub, dict):
                raise InputError(f"{pw}: [{s}] must be a table")
            _check_keys(sub, DEFAULTS[s], f"{pw} [{s}]")
            merged[s] = _check_types(_merge(settings[s], sub), DEFAULTS[s], f"{pw} {s}")
        _check_phase(merged, pw)
        if merged["enabled"]:
            phases.append(merged)
    if not phases:
        raise InputError(f"{where}: every phase is disabled")
    names = [p["name"] for p in phases]
    if len(set(names)) != len(names):
        raise InputError(f"{where}: phase names must be unique, got {names}")
    return settings, phases


def _check_phase(p: dict, where: str) -> None:
    if p["epochs"] < 1:
        raise InputError(f"{where}.epochs: must be >= 1, got {p['epochs']}")
    if p["source"] not in ("given", "generic", "files"):
        raise InputError(f"{where}.source: expected 'given', 'generic' or 'files', got {p['source']!r}")
    if p["source"] == "files" and not (p["positives"] and p["negatives"]):
        raise InputError(f"{where}: source 'files' needs positives and negatives paths")
    if not 0.0 <= p["negatives_top_fraction"] < 1.0:
        raise InputError(f"{where}.negatives_top_fraction: must be in [0, 1), got {p['negatives_top_fraction']}")
    if p["conv_lr_scale"] < 0:
        raise InputError(f"{where}.conv_lr_scale: must be >= 0, got {p['conv_lr_scale']}")
    opt = p["optimizer"]
    if opt["name"] not in ("sgd", "adam"):
        raise InputError(f"{where} optimizer.name: expected 'sgd' or 'adam', got {opt['name']!r}")
    if opt["lr"] <= 0:
        raise InputError(f"{where} optimizer.lr: must be > 0, got {opt['lr']}")
    if opt["weight_decay"] < 0 or not 0 <= opt["momentum"] < 1:
        raise InputError(f"{where} optimizer: weight_decay must be >= 0 and momentum in [0, 1)")
    if len(opt["betas"]) != 2 or not all(0 <= b < 1 for b in opt["betas"]):
        raise InputError(f"{where} optimizer.betas: expected two numbers in [0, 1), got {opt['betas']}")
    sch = p["schedule"]
    if sch["name"] not in ("step", "cosine"):
        raise InputError(f"{where} schedule.name: expected 'step' or 'cosine', got {sch['name']!r}")
    ms = sch["milestones"]
    if not all(isinstance(m, int) and m > 0 for m in ms) or ms != sorted(ms):
        raise InputError(f"{where} schedule.milestones: expected increasing positive epoch numbers, got {ms}")
    if not 0 < sch["gamma"] <= 1:
        raise InputError(f"{where} schedule.gamma: must be in (0, 1], got {sch['gamma']}")
    es = p["early_stop"]
    if es["metric"] not in ("test_rp", "test_loss", "test_accuracy"):
        raise InputError(f"{where} early_stop.metric: expected test_rp, test_loss or test_accuracy, got {es['metric']!r}")
    if es["patience"] < 0:
        raise InputError(f"{where} early_stop.patience: must be >= 0")
    d = p["data"]
    if not 0 <= d["test_fraction"] < 1:
        raise InputError(f"{where} data.test_fraction: must be in [0, 1), got {d['test_fraction']}")
    for k in ("batch_positives", "negatives_per_positive", "eval_batch_size", "template_images"):
        if d[k] < 1:
            raise InputError(f"{where} data.{k}: must be >= 1, got {d[k]}")
    if d["crop"] < 0 or d["shift"] < 0 or d["positives_per_epoch"] < 0 or d["max_test_negatives"] < 0:
        raise InputError(f"{where} data: crop, shift, positives_per_epoch and max_test_negatives must be >= 0")
    if not all(isinstance(c, int) and c >= 0 for c in d["channels"]):
        raise InputError(f"{where} data.channels: expected channel indices (integers >= 0), got {d['channels']}")


def load_recipe(config: str | os.PathLike, sets: dict[str, Any] | None = None) -> Recipe:
    """Read, merge (``extends``), override (``sets``: dotted keys) and validate a recipe.

    Parameters
    ----------
    config : path to a TOML recipe, or a shipped recipe's name (``"eznet"``, ``"lensflow"``)
    sets : dict, optional
        Dotted-key overrides applied last, e.g. ``{"optimizer.lr": 0.01, "epochs": 2,
        "phase.coarse.epochs": 3}`` (``epochs`` alone sets every phase).
    """
    ref = os.fspath(config)
    path = builtin_recipe_path(ref) if ref in BUILTIN and not Path(ref).exists() else Path(ref)
    data = _load_raw(path)
    if sets:
        data = _apply_sets(data, sets)
    settings, phases = _validate(data, str(path))
    if not settings["name"]:
        settings["name"] = path.stem
    return Recipe(settings, phases, source=str(path), base_dir=str(path.parent.resolve()))
