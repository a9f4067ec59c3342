"""Resumable training runs: one implementation for the classifier trainer and the GAN.

A run's output folder holds a resumable ``checkpoint.pt`` (:mod:`deepmine.training.checkpoint`
with a ``training_state``). Resuming it is allowed only when nothing that decides the result
has changed; this module holds those checks and the pieces of state that make a resumed run
continue bit-for-bit:

- :func:`read_training_state`: the checkpoint's training state (refused when it has none, or
  when it belongs to another kind of run);
- :func:`check_same_recipe`, :func:`check_same_data`: the resolved recipe, and the bytes
  (SHA-256) and shapes of the data files, equal those the run started with;
- :func:`rng_state`, :func:`restore_rng`: torch's (CPU and CUDA) and Python's random states;
- :func:`hash_seed`, :func:`stream_seed`: seeds of per-epoch random streams, so that a resumed
  run draws exactly what an uninterrupted one draws;
- :func:`load_init`: start a run from another run's weights (``--init``);
- :func:`remove_stale_temporaries`: what a run killed while writing left behind.
"""
from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from deepmine.inference.errors import file_error

from .checkpoint import read_checkpoint

__all__ = ["read_training_state", "check_same_recipe", "check_same_data", "data_identity", "rng_state",
           "restore_rng", "hash_seed", "stream_seed", "load_init", "remove_stale_temporaries"]


def read_training_state(path: Path, kind: str | None = None) -> dict:
    """Read a resumable checkpoint; refuse one without a training state (or of another ``kind``).

    Parameters
    ----------
    path : Path
        The run's ``checkpoint.pt``.
    kind : str, optional
        The ``training_state["kind"]`` the run writes (``"gan"``); ``None`` accepts any.

    Returns
    -------
    dict
        The whole checkpoint (:func:`~deepmine.training.checkpoint.read_checkpoint`).
    """
    saved = read_checkpoint(path)
    ts = saved.get("training_state")
    if not ts or (kind is not None and ts.get("kind") != kind):
        what = f" of a {kind.upper()} run" if kind else ""
        raise file_error(path, f"holds no training state{what}; cannot resume from it")
    return saved


def _canonical(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def check_same_recipe(path: Path, saved, now) -> None:
    """Refuse to resume ``path`` when the resolved recipe ``now`` differs from the ``saved`` one.

    Both are JSON-like values (settings, phases); they are compared in canonical JSON form.
    """
    if _canonical(saved) != _canonical(now):
        raise file_error(path, "was written by a different recipe (or --set values); resume with the same recipe, "
                               "or start a new run in another --out")  # fmt: skip


def data_identity(data: dict, keys: Iterable[str]) -> dict:
    """What must not change for a resume: the bytes (hash) and shapes of the files under ``keys``.

    ``data`` maps a key (``"positives"``, ...) to the :func:`~deepmine.training.data.describe_file`
    records of its files.
    """
    return {k: [(f["sha256"], list(f["shape"])) for f in data.get(k, [])] for k in keys}


def check_same_data(path: Path, saved: dict, now: dict, keys: Iterable[str], options: str) -> None:
    """Refuse to resume ``path`` when the data files (``keys``) differ from those it was trained on.

    ``options`` names the command-line options that give them, for the message.
    """
    keys = tuple(keys)
    if data_identity(saved, keys) != data_identity(now, keys):
        raise file_error(path, f"was trained on different data files (hashes differ); resume with the same {options}")


def rng_state() -> dict:
    """torch's CPU (and, where present, CUDA) random state and Python's, for a checkpoint."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict | None) -> None:
    """Restore what :func:`rng_state` saved (keys it lacks are left alone)."""
    if not state:
        return
    torch.set_rng_state(state["torch"])
    py = state.get("python")
    if py is not None:
        random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def hash_seed(seed: int, phase: int, epoch: int) -> int:
    """A torch seed for (seed, phase, epoch): 63 bits from NumPy's SeedSequence (the trainer's)."""
    words = np.random.SeedSequence([int(seed), int(phase) + 1, int(epoch) + 1, 7]).generate_state(1, np.uint64)
    return int(words[0]) & ((1 << 63) - 1)


def stream_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed for the stream (seed, keys...) from SHA-256 (the GAN's; stable across runs and
    platforms). Kept beside :func:`hash_seed` rather than merged with it: each run kind's streams
    are frozen, so that runs stay bit-for-bit reproducible across versions."""
    h = hashlib.sha256(repr((int(seed),) + tuple(int(k) for k in keys)).encode()).digest()
    return int.from_bytes(h[:8], "little") >> 1


def load_init(model, path: Path) -> dict:
    """Start ``model`` from the weights of another run's checkpoint (fine-tuning, later stages
    of a staged recipe); return what the provenance records about that checkpoint."""
    from deepmine.inference.metadata import file_sha256

    data = read_checkpoint(path)
    arch = model.deepmine_config.get("architecture")
    if data["architecture"] != arch:
        raise file_error(path, f"--init holds a {data['architecture']} model; this recipe trains {arch}")
    mine, theirs = model.state_dict(), data["state_dict"]
    bad = sorted(set(mine) ^ set(theirs)) or [k for k in mine if tuple(mine[k].shape) != tuple(theirs[k].shape)]
    if bad:
        k = bad[0]
        what = (f"{k}: {tuple(theirs[k].shape)} there, {tuple(mine[k].shape)} here" if k in mine and k in theirs
                else f"{k} only {'here' if k in mine else 'there'}")  # fmt: skip
        raise file_error(path, f"--init weights do not fit this recipe's {arch} ({len(bad)} tensor(s) differ, e.g. "
                               f"{what}); give the [model] table of the run that wrote it")  # fmt: skip
    model.load_state_dict(theirs)
    prov = data.get("provenance") or {}
    return {
        "path": str(Path(path).resolve()), "sha256": file_sha256(path), "recipe_name": prov.get("recipe_name"),
        "epochs": prov.get("epochs"), "heldout": prov.get("heldout") or {}, "device": prov.get("device"),
        "init": prov.get("init") or {},
    }  # fmt: skip


def remove_stale_temporaries(folder: Path, ours: Iterable[str]) -> None:
    """Delete temporary files that a run killed while writing left behind (see ``atomic_path``).

    ``ours`` are the stems of the files the run writes; ``phase-*`` files always count as ours.
    """
    ours = tuple(ours)
    for stale in folder.glob(".*.tmp*"):
        stem = stale.name.split(".")[1]
        if stem in ours or stem.startswith("phase-"):
            stale.unlink(missing_ok=True)
