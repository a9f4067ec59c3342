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
augmentation, at the end of the epoch.

Reproducibility: the model is initialised from ``torch.manual_seed(seed)``; every epoch
reseeds torch and draws all its data (pairing, order, augmentation) from a NumPy generator
seeded by (seed, phase, epoch). A checkpoint holds model, optimiser, scheduler, AMP scaler,
early-stopping state, RNG states and the phase's data selection, so ``resume=True`` continues
bit-for-bit on the same device (CPU runs are deterministic).
"""
from __future__ import annotations

import copy
import csv
import json
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from deepmine.inference.atomic import atomic_open, check_writable
from deepmine.inference.errors import DeepmineError, InputError, file_error
from deepmine.inference.preprocess import histogram_template, percentile_normalization
from deepmine.inference.progress import stage
from deepmine.inference.ranking import ranking_performance

from . import data as D
from .checkpoint import read_checkpoint, save_checkpoint
from .recipe import Recipe, load_recipe
from .registry import create_model

CHECKPOINT = "checkpoint.pt"
MODEL = "model.pt"
HISTORY = "history.csv"
COLUMNS = ["phase", "phase_epoch", "epoch", "lr", "train_loss", "train_accuracy", "train_rp",
           "test_loss", "test_accuracy", "test_rp", "n_train", "seconds", "data_seconds"]  # fmt: skip


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


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _epoch_seed(seed: int, phase: int, epoch: int) -> list[int]:
    return [int(seed), int(phase), int(epoch)]


class _Metrics:
    def __init__(self):
        self.loss_sum = 0.0
        self.n = 0
        self.correct = 0
        self.pos: list[np.ndarray] = []
        self.neg: list[np.ndarray] = []

    def add(self, loss: float, logits: np.ndarray, labels: np.ndarray) -> None:
        self.loss_sum += loss * len(labels)
        self.n += len(labels)
        self.correct += int(np.sum((logits > 0) == (labels == 1)))
        self.pos.append(logits[labels == 1])
        self.neg.append(logits[labels == 0])

    def result(self) -> tuple[float, float, float]:
        if self.n == 0:
            return math.nan, math.nan, math.nan
        pos = np.concatenate(self.pos) if self.pos else np.empty(0)
        neg = np.concatenate(self.neg) if self.neg else np.empty(0)
        if not (np.all(np.isfinite(pos)) and np.all(np.isfinite(neg))):
            return self.loss_sum / self.n, self.correct / self.n, math.nan
        rp = ranking_performance(pos, neg) if pos.size and neg.size else math.nan
        return self.loss_sum / self.n, self.correct / self.n, float(rp)


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

    # ---------------------------------------------------------------- setup
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

    def _open_data(self, model) -> None:
        shape = tuple(model.deepmine_config["input_shape"])
        channels = self.recipe.settings["data"]["channels"]
        self.arrays = {}
        self.provenance_data = {}
        for key, paths in self.files.items():
            items = []
            for p in paths:
                arr = D.open_cutouts(p, f"--{key.replace('_', '-')}")
                items.append((p, arr))
            self.arrays[key] = items
            self.provenance_data[key] = [D.describe_file(p, a) for p, a in items]
        self.pos_src = D.make_source(self.arrays["positives"] + self.arrays["extra_positives"], channels, shape, "--positives")
        self.neg_src = D.make_source(self.arrays["negatives"] + self.arrays["extra_negatives"], channels, shape, "--negatives")
        n_pos = sum(a.shape[0] for _, a in self.arrays["positives"])
        n_neg = sum(a.shape[0] for _, a in self.arrays["negatives"])
        d = self.recipe.settings["data"]
        self.pos_train, self.pos_test = D.split_indices(n_pos, d["test_fraction"], np.random.default_rng([self.seed, 101]))
        self.neg_train, self.neg_test = D.split_indices(
            n_neg, d["test_fraction"], np.random.default_rng([self.seed, 102]), d["max_test_negatives"]
        )
        self.pos_extra = np.arange(n_pos, len(self.pos_src))
        self.neg_extra = np.arange(n_neg, len(self.neg_src))
        self.split = {
            "n_train_positives": int(self.pos_train.size), "n_test_positives": int(self.pos_test.size),
            "n_train_negatives": int(self.neg_train.size), "n_test_negatives": int(self.neg_test.size),
            "n_extra_positives": int(self.pos_extra.size), "n_extra_negatives": int(self.neg_extra.size),
        }  # fmt: skip

    def _template(self) -> np.ndarray:
        d = self.recipe.settings["data"]
        choice = d["template"]
        if choice in ("positives", "negatives", "all"):
            rng = np.random.default_rng([self.seed, 103])
            parts = []
            if choice in ("positives", "all"):
                idx = self.pos_train[rng.permutation(self.pos_train.size)[: d["template_images"]]]
                parts.append(self.pos_src.take(np.sort(idx)))
            if choice in ("negatives", "all"):
                idx = self.neg_train[rng.permutation(self.neg_train.size)[: d["template_images"]]]
                parts.append(self.neg_src.take(np.sort(idx)))
            imgs = np.concatenate(parts)
            if imgs.dtype != np.uint8:
                imgs = percentile_normalization(imgs)
            return histogram_template(imgs)
        path = Path(choice)
        if not path.is_absolute():
            path = Path(self.recipe.base_dir) / path
        if not path.is_file():
            raise file_error(path, "data.template: template file not found (or use positives, negatives, all)")
        try:
            t = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise file_error(path, f"data.template: not a readable .npy array ({exc})") from None
        return np.asarray(t, dtype=np.float64).ravel()

    # ---------------------------------------------------------------- phases
    def _phase_data(self, pi: int, phase: dict, model, saved: dict | None) -> dict:
        """Sources and row indices of a phase's train and test sets."""
        spec = model.deepmine_config["preprocessing"]
        shape = tuple(model.deepmine_config["input_shape"])
        if phase["source"] == "generic":
            pos, neg = D.generic_two_class(phase["generic_size"], shape, seed=self.seed + 7919 * pi)
            ps = D.CutoutSource([pos], ["generic:curves"])
            ns = D.CutoutSource([neg], ["generic:blobs"])
            n = phase["generic_size"]
            tf = phase["data"]["test_fraction"]
            ptr, pte = D.split_indices(n, tf, np.random.default_rng([self.seed, pi, 201]))
            ntr, nte = D.split_indices(n, tf, np.random.default_rng([self.seed, pi, 202]))
            return {"pos_src": ps, "neg_src": ns, "pos_train": ptr, "pos_test": pte, "neg_train": ntr, "neg_test": nte, "saved": {}}
        if phase["source"] == "files":
            items = {}
            for key in ("positives", "negatives"):
                p = Path(phase[key])
                p = p if p.is_absolute() else Path(self.recipe.base_dir) / p
                items[key] = [(str(p), D.open_cutouts(p, f"phase {phase['name']} {key}"))]
                self.provenance_data[f"phase_{phase['name']}_{key}"] = [D.describe_file(p, items[key][0][1])]
            channels = phase["data"]["channels"]
            ps = D.make_source(items["positives"], channels, shape)
            ns = D.make_source(items["negatives"], channels, shape)
            tf = phase["data"]["test_fraction"]
            ptr, pte = D.split_indices(len(ps), tf, np.random.default_rng([self.seed, pi, 201]))
            ntr, nte = D.split_indices(len(ns), tf, np.random.default_rng([self.seed, pi, 202]))
            return {"pos_src": ps, "neg_src": ns, "pos_train": ptr, "pos_test": pte, "neg_train": ntr, "neg_test": nte, "saved": {}}
        pos_train = self.pos_train
        neg_train = self.neg_train
        chosen = {}
        if phase["negatives_top_fraction"] > 0:
            if saved and "negative_rows" in saved:
                neg_train = np.asarray(saved["negative_rows"], dtype=np.int64)
            else:
                logits = self._logits(model, self.neg_src, neg_train, spec, phase["data"]["eval_batch_size"])
                k = max(1, math.ceil(phase["negatives_top_fraction"] * neg_train.size))
                order = np.argsort(-logits, kind="stable")[:k]
                neg_train = np.sort(neg_train[order])
            chosen["negative_rows"] = neg_train.tolist()
        if phase["extra_negatives"]:
            neg_train = np.concatenate([neg_train, self.neg_extra])
        if phase["extra_positives"]:
            pos_train = np.concatenate([pos_train, self.pos_extra])
        return {"pos_src": self.pos_src, "neg_src": self.neg_src, "pos_train": pos_train, "pos_test": self.pos_test,
                "neg_train": neg_train, "neg_test": self.neg_test, "saved": chosen}  # fmt: skip

    def _optimizer(self, model, phase: dict):
        opt = phase["optimizer"]
        scale = phase["conv_lr_scale"]
        groups = [
            {"params": list(model.feature_parameters()), "lr": opt["lr"] * scale},
            {"params": list(model.head_parameters()), "lr": opt["lr"]},
        ]
        if opt["name"] == "sgd":
            return torch.optim.SGD(groups, lr=opt["lr"], momentum=opt["momentum"],
                                   nesterov=opt["nesterov"] and opt["momentum"] > 0, weight_decay=opt["weight_decay"])  # fmt: skip
        return torch.optim.Adam(groups, lr=opt["lr"], betas=tuple(opt["betas"]), weight_decay=opt["weight_decay"])

    @torch.no_grad()
    def _logits(self, model, src, index, spec, batch_size) -> np.ndarray:
        model.eval()
        out = []
        for x in D.eval_batches(src, index, spec, batch_size):
            xt = torch.from_numpy(x).to(self.device)
            with torch.autocast(self.device.type, enabled=self.amp):
                out.append(model.positive_logit(model(xt)).float().cpu().numpy())
        return np.concatenate(out) if out else np.empty(0, np.float32)

    @torch.no_grad()
    def _evaluate(self, model, pdata, spec, batch_size) -> tuple[float, float, float]:
        m = _Metrics()
        model.eval()
        for src, index, label in ((pdata["pos_src"], pdata["pos_test"], 1), (pdata["neg_src"], pdata["neg_test"], 0)):
            for x in D.eval_batches(src, index, spec, batch_size):
                xt = torch.from_numpy(x).to(self.device)
                y = torch.full((x.shape[0],), label, dtype=torch.long, device=self.device)
                with torch.autocast(self.device.type, enabled=self.amp):
                    scores = model(xt)
                scores = scores.float()
                loss = float(model.loss(scores, y))
                m.add(loss, model.positive_logit(scores).cpu().numpy(), y.cpu().numpy())
        return m.result()

    def _train_epoch(self, model, sampler, optimizer, scaler, rng, advance) -> tuple[tuple, float, float]:
        model.train()
        m = _Metrics()
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

    # ---------------------------------------------------------------- run
    def run(self, resume: bool = False, plot: bool = False) -> TrainResult:
        if self.out.exists() and not self.out.is_dir():
            raise file_error(self.out, "--out must be a folder, got a file")
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise file_error(self.out, f"cannot create the output folder ({exc.strerror})") from None
        check_writable(self.out / CHECKPOINT)
        _remove_stale_temporaries(self.out)
        ckpt_path = self.out / CHECKPOINT
        state = None
        if ckpt_path.exists():
            if not resume:
                raise file_error(self.out, "already holds a training run (checkpoint.pt); pass --resume to continue it, "
                                           "or choose another --out")  # fmt: skip
            saved = read_checkpoint(ckpt_path)
            if "training_state" not in saved:
                raise file_error(ckpt_path, "holds no training state; cannot resume from it")
            now = self.recipe.to_dict()
            if (saved["provenance"].get("recipe"), saved["provenance"].get("phases")) != (now["settings"], now["phases"]):
                raise file_error(ckpt_path, "was written by a different recipe (or --set values); resume with the same "
                                            "recipe, or start a new run in another --out")  # fmt: skip
            state = saved
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

    def _run(self, state: dict | None, plot: bool) -> TrainResult:
        recipe = self.recipe
        if state is not None:
            model = self._build_model(state["overrides"])
            model.load_state_dict(state["state_dict"])
            model.deepmine_config = state["deepmine_config"]
        else:
            model = self._build_model()
        self._open_data(model)
        if state is not None:
            if _data_identity(state["provenance"]["data"]) != _data_identity(self.provenance_data):
                raise file_error(self.out / CHECKPOINT, "was trained on different data files (hashes differ); "
                                                        "resume with the same --positives/--negatives/--extra-*")  # fmt: skip
            self.init_provenance = state["provenance"].get("init") or {}
        else:
            if model.deepmine_config["preprocessing"]["kind"] == "histogram_match" and hasattr(model, "set_template"):
                model.set_template(self._template())
            if self.init is not None:
                self.init_provenance = _load_init(model, self.init)
        model.to(self.device)
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
                torch.manual_seed(hash_seed(self.seed, pi, -1))
                for mod in _head_modules(model):
                    if hasattr(mod, "reset_parameters"):
                        mod.reset_parameters()
            pdata = self._phase_data(pi, phase, model, saved_pd)
            d = phase["data"]
            sampler = D.NegativeLearningSampler(
                pdata["pos_src"], pdata["neg_src"], pdata["pos_train"], pdata["neg_train"], spec,
                batch_positives=d["batch_positives"], negatives_per_positive=d["negatives_per_positive"],
                positives_per_epoch=d["positives_per_epoch"], symmetries=d["symmetries"], crop=d["crop"],
                shift=d["shift"],
            )  # fmt: skip
            optimizer = self._optimizer(model, phase)
            scheduler = torch.optim.lr_scheduler.MultiStepLR(
                optimizer, milestones=phase["schedule"]["milestones"], gamma=phase["schedule"]["gamma"]
            )
            scaler = torch.amp.GradScaler("cuda") if self.amp else None
            es = phase["early_stop"]
            higher = es["metric"] != "test_loss"
            stop_state = {"best": None, "best_epoch": 0, "bad_epochs": 0}
            best_sd = None
            first_epoch = 0
            if resuming_here:
                optimizer.load_state_dict(ts["optimizer"])
                scheduler.load_state_dict(ts["scheduler"])
                if scaler is not None and ts.get("scaler"):
                    scaler.load_state_dict(ts["scaler"])
                stop_state = dict(ts["early_stop"])
                best_sd = ts.get("best_state_dict")
                first_epoch = start_epoch
                _restore_rng(ts.get("rng"))
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
                # early stopping on the held-out metric
                value = {"test_rp": te_rp, "test_loss": te_loss, "test_accuracy": te_acc}[es["metric"]]
                if not math.isnan(value):
                    best = stop_state["best"]
                    improved = best is None or (value > best + es["min_delta"] if higher else value < best - es["min_delta"])
                    if improved:
                        stop_state = {"best": value, "best_epoch": e + 1, "bad_epochs": 0}
                        if es["restore_best"]:
                            best_sd = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
                    else:
                        stop_state["bad_epochs"] += 1
                last = e + 1 == phase["epochs"]
                if es["patience"] and stop_state["bad_epochs"] >= es["patience"]:
                    last = True
                if last:
                    finished = True
                    if es["restore_best"] and best_sd is not None:
                        model.load_state_dict(best_sd)
                    phases_done.append({
                        "name": phase["name"], "epochs": e + 1, "best_epoch": stop_state["best_epoch"],
                        "best": stop_state["best"], "metric": es["metric"],
                        "stopped_early": e + 1 < phase["epochs"],
                    })  # fmt: skip
                self._write_history(history)
                if last or (e + 1) % recipe.settings["checkpoint_every"] == 0:
                    tstate = {
                        "phase_index": pi, "phase_epoch": e + 1, "epoch": global_epoch, "phase_finished": finished,
                        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                        "scaler": scaler.state_dict() if scaler is not None else None,
                        "rng": _rng_state(), "history": history, "early_stop": stop_state,
                        "best_state_dict": None if finished else best_sd, "phase_data": pdata["saved"],
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

        # held-out figures of the final model (on the final phase's test set)
        pdata = getattr(self, "_last_pdata", None)
        if pdata is None:  # resumed after the last phase had finished
            pdata = self._phase_data(len(recipe.phases) - 1, recipe.phases[-1], model, ts.get("phase_data") if ts else None)
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
            "data": self.provenance_data,
            "split": self.split,
            "epochs": epochs,
            "phases_done": phases_done,
            "heldout": heldout or {},
            "deepmine_version": getattr(inf, "__version__", ""),
            "torch_version": str(torch.__version__),
            "device": str(self.device),
            "amp": self.amp,
            "init": self.init_provenance,
        }

    def _write_history(self, history: list[dict]) -> None:
        with atomic_open(self.out / HISTORY, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=COLUMNS)
            w.writeheader()
            for row in history:
                w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def _load_init(model, path: Path) -> dict:
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


def _remove_stale_temporaries(folder: Path) -> None:
    """Delete temporary files that a run killed while writing left behind (see atomic_path)."""
    ours = ("checkpoint", "model", "history", "recipe", "curves")
    for stale in folder.glob(".*.tmp*"):
        stem = stale.name.split(".")[1]
        if stem in ours or stem.startswith("phase-"):
            stale.unlink(missing_ok=True)


def _data_identity(data: dict) -> dict:
    """What must not change for a resume: the bytes (hash) and shapes of the given files."""
    return {k: [(f["sha256"], list(f["shape"])) for f in data.get(k, [])]
            for k in ("positives", "negatives", "extra_positives", "extra_negatives")}  # fmt: skip


def _head_modules(model):
    return list(model.head.modules()) if hasattr(model, "head") else list(model.classifier.modules())


def hash_seed(seed: int, phase: int, epoch: int) -> int:
    """A torch seed for (seed, phase, epoch): 63 bits from NumPy's SeedSequence."""
    words = np.random.SeedSequence([int(seed), int(phase) + 1, int(epoch) + 1, 7]).generate_state(1, np.uint64)
    return int(words[0]) & ((1 << 63) - 1)


def _restore_rng(state: dict | None) -> None:
    if not state:
        return
    torch.set_rng_state(state["torch"])
    py = state.get("python")
    if py is not None:
        random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


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


def read_history(path: str | os.PathLike) -> list[dict]:
    """Rows of a ``history.csv`` with numbers parsed."""
    rows = []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            rows.append({k: (v if k == "phase" else float(v)) for k, v in row.items()})
    return rows


__all__ = ["train", "Trainer", "TrainResult", "resolve_device", "read_history", "TrainingDiverged", "COLUMNS"]
