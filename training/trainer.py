"""The training loop: phases of negative learning, per-epoch ranking performance, exact resume.

:func:`train` runs a :class:`~deepmine.training.recipe.Recipe` on positive and negative cutout
files and writes into ``out_dir``:

``checkpoint.pt``
    The latest completed epoch, resumable (see :mod:`deepmine.training.checkpoint`).
``model.pt``
    The final model (no training state): what ``deepmine export`` takes.
``phase-<name>.pt``
    The model at the end of each phase.
``history.csv``
    One row per epoch: phase, phase_epoch, epoch, lr, train/test loss, accuracy and ranking
    performance (RP, :func:`deepmine.inference.ranking.ranking_performance` of the positives'
    logits against the negatives'), train-set size, seconds, of which data-pipeline seconds.
``recipe.json``
    The resolved recipe; ``curves.png`` with ``plot=True`` (Figure 3.2 / 4.4 style).

Train-set metrics are those of the epoch's own minibatches (train mode, augmented, as the
weights evolved through the epoch); test-set metrics come from one pass in eval mode, without
augmentation, at the end of the epoch (:mod:`deepmine.training.metrics`). What each phase
trains on, its optimiser and early stopping are in :mod:`deepmine.training.phases`.

Reproducibility: the model is initialised from ``torch.manual_seed(seed)``; every epoch
reseeds torch and draws all its data (pairing, order, augmentation) from a NumPy generator
seeded by (seed, phase, epoch). A checkpoint holds model, optimiser, scheduler, AMP scaler,
early-stopping state, RNG states and the phase's data selection, so ``resume=True`` continues
bit-for-bit on the same device (CPU runs are deterministic; the checks and RNG states of a
resume are in :mod:`deepmine.training.resume`).
"""
from __future__ import annotations

import copy
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from deepmine.inference.atomic import atomic_open, check_writable
from deepmine.inference.errors import DeepmineError, InputError, file_error
from deepmine.inference.progress import stage

from . import data as D
from .checkpoint import save_checkpoint
from .metrics import COLUMNS, HISTORY, EpochMetrics, evaluate, read_history, write_history
from .phases import EarlyStop, TrainingData, make_optimizer, make_scheduler, reset_head
from .recipe import Recipe, load_recipe
from .registry import create_model
from .resume import (
    check_same_data,
    check_same_recipe,
    hash_seed,
    load_init,
    read_training_state,
    remove_stale_temporaries,
    restore_rng,
    rng_state,
)

CHECKPOINT = "checkpoint.pt"
MODEL = "model.pt"
#: the files a run writes (stems), for the clean-up of a killed run's temporaries
OUTPUTS = ("checkpoint", "model", "history", "recipe", "curves")
#: the data files that must be the same when a run is resumed
DATA_KEYS = ("positives", "negatives", "extra_positives", "extra_negatives")


class TrainingDiverged(DeepmineError):
    """The loss became NaN or infinite."""


@dataclass
class TrainResult:
    """What :func:`train` produced."""

    out_dir: Path
    model_path: Path
    checkpoint_path: Path
    history: list = field(default_factory=list)
    heldout: dict = field(default_factory=dict)
    model: object = None
    plot_path: Path | None = None


def resolve_device(device: str) -> torch.device:
    """``"cpu"``, ``"cuda"`` (or ``"cuda:N"``) or ``"auto"`` → torch.device; clear error when absent."""
    d = (device or "auto").lower()
    if d == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if d.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"--device {device}: no CUDA device is available to torch here; use --device cpu or auto")
        return torch.device(d)
    if d == "cpu":
        return torch.device("cpu")
    raise InputError(f"--device {device!r}: expected cpu, cuda or auto")


def _paths(x) -> list[str]:
    if x is None:
        return []
    if isinstance(x, (str, os.PathLike)):
        return [os.fspath(x)]
    return [os.fspath(p) for p in x]


def _epoch_seed(seed: int, phase: int, epoch: int) -> list[int]:
    return [int(seed), int(phase), int(epoch)]


class Trainer:
    """One training run (see :func:`train`)."""

    def __init__(self, recipe: Recipe, positives, negatives, out_dir, *, extra_positives=None,
                 extra_negatives=None, device="cpu", amp=False, progress=None,
                 on_epoch_end: Callable[[dict], None] | None = None, init=None):  # fmt: skip
        self.recipe = recipe
        self.init = Path(init) if init is not None else None
        self.init_provenance: dict = {}
        self.seed = recipe.seed
        self.out = Path(out_dir)
        self.device = resolve_device(device)
        if amp and self.device.type != "cuda":
            raise InputError("--amp: automatic mixed precision needs a CUDA device (--device cuda)")
        self.amp = bool(amp)
        self.progress = progress
        self.on_epoch_end = on_epoch_end
        self.files = {
            "positives": _paths(positives),
            "negatives": _paths(negatives),
            "extra_positives": _paths(extra_positives),
            "extra_negatives": _paths(extra_negatives),
        }
        for key in ("positives", "negatives"):
            if not self.files[key]:
                raise InputError(f"--{key}: give at least one cutout file")
        for key in ("extra_negatives", "extra_positives"):
            if self.files[key] and not any(p.get(key) and p.get("enabled", True) for p in recipe.phases):
                raise InputError(
                    f"--{key.replace('_', '-')}: recipe {recipe.name!r} adds them in no phase, so they would not be "
                    f"trained on; use a recipe that does (set {key} = true in one of its [[phase]] tables) or leave "
                    "them out")

    def _build_model(self, overrides: dict | None = None):
        spec = dict(self.recipe.model)
        name = spec.pop("name")
        if overrides is None:
            table = spec.get("table")
            if isinstance(table, str) and not os.path.isabs(table):
                candidate = Path(self.recipe.base_dir) / table
                if candidate.exists():
                    spec["table"] = str(candidate)
            overrides = spec
        torch.manual_seed(self.seed)
        return create_model(name, **overrides)

    def _train_epoch(self, model, sampler, optimizer, scaler, rng, advance) -> tuple[tuple, float, float]:
        """One pass over the epoch's minibatches: ((loss, accuracy, RP), seconds, data seconds)."""
        model.train()
        m = EpochMetrics()
        data_seconds = 0.0
        t_epoch = time.perf_counter()
        it = sampler.batches(rng)
        while True:
            t0 = time.perf_counter()
            batch = next(it, None)
            data_seconds += time.perf_counter() - t0
            if batch is None:
                break
            x = torch.from_numpy(batch.images).to(self.device, non_blocking=True)
            y = torch.from_numpy(batch.labels).to(self.device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(self.device.type, enabled=self.amp):
                scores = model(x)
            scores = scores.float()
            loss = model.loss(scores, y)
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    "training diverged (the loss became NaN or infinite); lower optimizer.lr in the recipe"
                )
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            m.add(float(loss.detach()), model.positive_logit(scores.detach()).cpu().numpy(), batch.labels)
            advance(1)
        return m.result(), time.perf_counter() - t_epoch, data_seconds

    def _evaluate(self, model, pdata, spec, batch_size) -> tuple[float, float, float]:
        return evaluate(model, pdata, spec, batch_size, self.device, self.amp)

    # ---------------------------------------------------------------- run
    def run(self, resume: bool = False, plot: bool = False) -> TrainResult:
        """Check the output folder (and the checkpoint to resume), then train; see :func:`train`."""
        if self.out.exists() and not self.out.is_dir():
            raise file_error(self.out, "--out must be a folder, got a file")
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise file_error(self.out, f"cannot create the output folder ({exc.strerror})") from None
        check_writable(self.out / CHECKPOINT)
        remove_stale_temporaries(self.out, OUTPUTS)
        ckpt_path = self.out / CHECKPOINT
        state = None
        if ckpt_path.exists():
            if not resume:
                raise file_error(self.out, "already holds a training run (checkpoint.pt); pass --resume to continue it, "
                                           "or choose another --out")  # fmt: skip
            state = read_training_state(ckpt_path)
            now = self.recipe.to_dict()
            check_same_recipe(ckpt_path, [state["provenance"].get("recipe"), state["provenance"].get("phases")],
                              [now["settings"], now["phases"]])  # fmt: skip
        elif (self.out / MODEL).exists() and not resume:
            raise file_error(self.out, "already holds a trained model (model.pt); choose another --out")

        deterministic = self.recipe.settings["deterministic"]
        prev_det = torch.are_deterministic_algorithms_enabled()
        if deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        try:
            return self._run(state, plot)
        finally:
            if deterministic:
                torch.use_deterministic_algorithms(prev_det)

    def _start(self, state: dict | None):
        """The model (fresh, from ``--init`` or from the checkpoint) and the run's data."""
        if state is not None:
            model = self._build_model(state["overrides"])
            model.load_state_dict(state["state_dict"])
            model.deepmine_config = state["deepmine_config"]
        else:
            model = self._build_model()
        self.data = TrainingData(self.recipe, self.files, tuple(model.deepmine_config["input_shape"]))
        if state is not None:
            check_same_data(self.out / CHECKPOINT, state["provenance"]["data"], self.data.provenance, DATA_KEYS,
                            "--positives/--negatives/--extra-*")  # fmt: skip
            self.init_provenance = state["provenance"].get("init") or {}
        else:
            if model.deepmine_config["preprocessing"]["kind"] == "histogram_match" and hasattr(model, "set_template"):
                model.set_template(self.data.template())
            if self.init is not None:
                self.init_provenance = load_init(model, self.init)
        return model.to(self.device)

    def _run(self, state: dict | None, plot: bool) -> TrainResult:
        recipe = self.recipe
        model = self._start(state)
        spec = model.deepmine_config["preprocessing"]

        with atomic_open(self.out / "recipe.json", "w") as fh:
            json.dump(recipe.to_dict(), fh, indent=2, sort_keys=True)

        ts = state["training_state"] if state is not None else None
        history: list[dict] = list(ts["history"]) if ts else []
        phases_done: list[dict] = list(ts.get("phases_done", [])) if ts else []
        start_phase = ts["phase_index"] if ts else 0
        start_epoch = ts["phase_epoch"] if ts else 0
        if ts and ts.get("phase_finished"):
            start_phase, start_epoch = start_phase + 1, 0
        global_epoch = ts["epoch"] if ts else 0

        for pi in range(start_phase, len(recipe.phases)):
            phase = recipe.phases[pi]
            resuming_here = ts is not None and pi == ts["phase_index"] and not ts.get("phase_finished")
            saved_pd = ts.get("phase_data") if resuming_here else None
            if phase["reset_head"] and not resuming_here:
                reset_head(model, self.seed, pi)
            pdata = self.data.phase_data(pi, phase, model, saved_pd, self.device, self.amp)
            d = phase["data"]
            sampler = D.NegativeLearningSampler(
                pdata["pos_src"], pdata["neg_src"], pdata["pos_train"], pdata["neg_train"], spec,
                batch_positives=d["batch_positives"], negatives_per_positive=d["negatives_per_positive"],
                positives_per_epoch=d["positives_per_epoch"], symmetries=d["symmetries"], crop=d["crop"],
                shift=d["shift"],
            )  # fmt: skip
            optimizer = make_optimizer(model, phase)
            scheduler = make_scheduler(optimizer, phase)
            scaler = torch.amp.GradScaler("cuda") if self.amp else None
            stop = EarlyStop(phase["early_stop"])
            first_epoch = 0
            if resuming_here:
                optimizer.load_state_dict(ts["optimizer"])
                scheduler.load_state_dict(ts["scheduler"])
                if scaler is not None and ts.get("scaler"):
                    scaler.load_state_dict(ts["scaler"])
                stop = EarlyStop(phase["early_stop"], ts["early_stop"], ts.get("best_state_dict"))
                first_epoch = start_epoch
                restore_rng(ts.get("rng"))
            advance = stage(self.progress, phase["name"], len(sampler) * phase["epochs"])
            if first_epoch:
                advance(len(sampler) * first_epoch)
            finished = False
            for e in range(first_epoch, phase["epochs"]):
                torch.manual_seed(hash_seed(self.seed, pi, e))
                rng = np.random.default_rng(_epoch_seed(self.seed, pi, e))
                lr = optimizer.param_groups[-1]["lr"]
                (tr_loss, tr_acc, tr_rp), secs, dsecs = self._train_epoch(
                    model, sampler, optimizer, scaler, rng, advance
                )
                scheduler.step()
                te_loss, te_acc, te_rp = self._evaluate(model, pdata, spec, d["eval_batch_size"])
                global_epoch += 1
                row = {
                    "phase": phase["name"], "phase_epoch": e + 1, "epoch": global_epoch, "lr": lr,
                    "train_loss": tr_loss, "train_accuracy": tr_acc, "train_rp": tr_rp,
                    "test_loss": te_loss, "test_accuracy": te_acc, "test_rp": te_rp,
                    "n_train": int(len(pdata["pos_train"]) + len(pdata["neg_train"])),
                    "seconds": round(secs, 4), "data_seconds": round(dsecs, 4),
                }  # fmt: skip
                history.append(row)
                advance(0, f"test RP {te_rp:.3f}" if not math.isnan(te_rp) else "")
                out_of_patience = stop.update(model, e + 1, {"test_rp": te_rp, "test_loss": te_loss,
                                                             "test_accuracy": te_acc})  # fmt: skip
                finished = e + 1 == phase["epochs"] or out_of_patience
                if finished:
                    phases_done.append(stop.finish(model, phase["name"], e + 1, phase["epochs"]))
                write_history(self.out / HISTORY, history)
                if finished or (e + 1) % recipe.settings["checkpoint_every"] == 0:
                    tstate = {
                        "phase_index": pi, "phase_epoch": e + 1, "epoch": global_epoch, "phase_finished": finished,
                        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                        "scaler": scaler.state_dict() if scaler is not None else None,
                        "rng": rng_state(), "history": history, "early_stop": stop.state,
                        "best_state_dict": None if finished else stop.best_state_dict, "phase_data": pdata["saved"],
                        "phases_done": phases_done,
                    }  # fmt: skip
                    latest = {"ranking_performance": te_rp, "loss": te_loss, "accuracy": te_acc,
                              "epoch": global_epoch, "phase": phase["name"]}  # fmt: skip
                    save_checkpoint(self.out / CHECKPOINT, model, self._provenance(global_epoch, phases_done, latest), tstate)
                if self.on_epoch_end is not None:
                    self.on_epoch_end(dict(row))
                if finished:
                    break
            save_checkpoint(self.out / f"phase-{phase['name']}.pt", model, self._provenance(global_epoch, phases_done, None))
            self._last_pdata = pdata
        return self._finish(model, ts, history, phases_done, global_epoch, plot)

    def _finish(self, model, ts, history, phases_done, global_epoch, plot) -> TrainResult:
        """Held-out figures of the final model (on the final phase's test set); ``model.pt``, curves."""
        recipe = self.recipe
        spec = model.deepmine_config["preprocessing"]
        pdata = getattr(self, "_last_pdata", None)
        if pdata is None:  # resumed after the last phase had finished
            pdata = self.data.phase_data(len(recipe.phases) - 1, recipe.phases[-1], model,
                                         ts.get("phase_data") if ts else None, self.device, self.amp)  # fmt: skip
        te_loss, te_acc, te_rp = self._evaluate(model, pdata, spec, recipe.phases[-1]["data"]["eval_batch_size"])
        heldout = {
            "ranking_performance": te_rp, "loss": te_loss, "accuracy": te_acc, "epoch": global_epoch,
            "phase": recipe.phases[-1]["name"], "n_positives": int(len(pdata["pos_test"])),
            "n_negatives": int(len(pdata["neg_test"])),
        }  # fmt: skip
        prov = self._provenance(global_epoch, phases_done, heldout)
        model_path = save_checkpoint(self.out / MODEL, model, prov)
        plot_path = None
        if plot:
            from .curves import plot_curves

            plot_path = plot_curves(history, self.out / "curves.png", title=f"{recipe.name}: {model.deepmine_config['architecture']}")
        model.eval()
        return TrainResult(self.out, model_path, self.out / CHECKPOINT, history, heldout, model, plot_path)

    def _provenance(self, epochs: int, phases_done: list, heldout: dict | None) -> dict:
        import deepmine.inference as inf

        return {
            "recipe": self.recipe.to_dict()["settings"],
            "phases": self.recipe.to_dict()["phases"],
            "recipe_name": self.recipe.name,
            "recipe_source": self.recipe.source,
            "seed": self.seed,
            "data": self.data.provenance,
            "split": self.data.split,
            "epochs": epochs,
            "phases_done": phases_done,
            "heldout": heldout or {},
            "deepmine_version": getattr(inf, "__version__", ""),
            "torch_version": str(torch.__version__),
            "device": str(self.device),
            "amp": self.amp,
            "init": self.init_provenance,
        }


def train(recipe: Recipe | str | os.PathLike, positives, negatives, out_dir, *, extra_positives=None,
          extra_negatives=None, resume: bool = False, device: str = "cpu", amp: bool = False, plot: bool = False,
          seed: int | None = None, sets: dict | None = None, progress=None,
          on_epoch_end: Callable[[dict], None] | None = None, init=None) -> TrainResult:  # fmt: skip
    """Train a model as ``recipe`` says; write checkpoints, history and the final model.

    Parameters
    ----------
    recipe : Recipe, or a recipe path / shipped name (``"eznet"``, ``"lensflow"``)
    positives, negatives : path or list of paths
        Cutout stacks (.npy or FITS, N×C×H×W or N×H×W; uint8 or float).
    out_dir : path
        Output folder (created). Refused if it already holds a run, unless ``resume``.
    extra_positives, extra_negatives : path or list of paths, optional
        Tracers / inspected false positives, used by phases that ask for them.
    resume : bool
        Continue from ``out_dir/checkpoint.pt`` (bit-for-bit on the same device); starts a
        fresh run when there is no checkpoint yet.
    device : ``"cpu"``, ``"cuda"`` or ``"auto"``; amp : mixed precision (CUDA only)
    plot : bool
        Write ``curves.png`` (loss, accuracy, RP per epoch on train and test sets).
    seed : int, optional
        Overrides the recipe's seed.
    sets : dict, optional
        Dotted-key recipe overrides (see :func:`deepmine.training.recipe.load_recipe`).
    progress : :class:`deepmine.inference.progress.Progress`, optional
        One stage per phase, in minibatches; the note shows the held-out RP after each epoch.
    on_epoch_end : callable, optional
        Called with each history row after the epoch's checkpoint is written.
    init : path, optional
        Start from the weights of this checkpoint (``model.pt`` or ``checkpoint.pt`` of an
        earlier run with the same ``[model]``) instead of a random initialisation: fine-tuning,
        or the next stage of a staged build. Recorded in the provenance (path, sha256, its
        recipe and held-out figures); the held-out split is the recipe's (same seed and data
        files give the earlier run's split).
    """
    if not isinstance(recipe, Recipe):
        sets = dict(sets or {})
        if seed is not None:
            sets["seed"] = int(seed)
        recipe = load_recipe(recipe, sets)
    elif seed is not None or sets:
        recipe = copy.deepcopy(recipe)
        if seed is not None:
            recipe.settings["seed"] = int(seed)
        if sets:
            raise InputError("train: give sets together with a recipe path, not a loaded Recipe")
    trainer = Trainer(recipe, positives, negatives, out_dir, extra_positives=extra_positives,
                      extra_negatives=extra_negatives, device=device, amp=amp, progress=progress,
                      on_epoch_end=on_epoch_end, init=init)  # fmt: skip
    return trainer.run(resume=resume, plot=plot)


__all__ = ["train", "Trainer", "TrainResult", "resolve_device", "read_history", "TrainingDiverged", "COLUMNS"]
