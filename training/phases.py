"""What each phase of a classifier run trains on and how: data sets, optimiser, head, early stop.

:class:`TrainingData` opens the run's cutout files once, draws the held-out split, finds the
histogram template (LensFlow) and gives every phase its train and test rows
(:meth:`TrainingData.phase_data`): the run's files, a generic two-class set (phase 0 of
LensFlow), files named by the phase, and the top fraction of the negatives by the current
model's scores (phase 2, "fine"), with tracers and inspected false positives added where a
phase asks for them. :func:`make_optimizer`, :func:`reset_head` and :class:`EarlyStop` are the
per-phase pieces of the loop in :mod:`deepmine.training.trainer`.

Every random draw is seeded from the recipe's seed and fixed stream numbers, so the same seed
and files give the same split and phase sets.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from deepmine.inference.errors import file_error
from deepmine.inference.preprocess import histogram_template, percentile_normalization

from . import data as D
from .metrics import positive_logits
from .resume import hash_seed

__all__ = ["TrainingData", "make_optimizer", "make_scheduler", "reset_head", "EarlyStop"]


class TrainingData:
    """The run's cutout files, held-out split and phase data sets.

    Parameters
    ----------
    recipe : Recipe
    files : dict
        ``positives``, ``negatives``, ``extra_positives``, ``extra_negatives`` → lists of paths.
    shape : tuple
        The model's input shape (C, H, W).

    Attributes
    ----------
    provenance : dict
        key → :func:`~deepmine.training.data.describe_file` records (path, SHA-256, shape,
        dtype) of every file read, phase files included.
    split : dict
        Sizes of the train, test and extra sets.
    """

    def __init__(self, recipe, files: dict, shape: tuple):
        self.recipe = recipe
        self.seed = recipe.seed
        channels = recipe.settings["data"]["channels"]
        self.arrays = {}
        self.provenance = {}
        for key, paths in files.items():
            items = []
            for p in paths:
                arr = D.open_cutouts(p, f"--{key.replace('_', '-')}")
                items.append((p, arr))
            self.arrays[key] = items
            self.provenance[key] = [D.describe_file(p, a) for p, a in items]
        self.pos_src = D.make_source(self.arrays["positives"] + self.arrays["extra_positives"], channels, shape, "--positives")
        self.neg_src = D.make_source(self.arrays["negatives"] + self.arrays["extra_negatives"], channels, shape, "--negatives")
        n_pos = sum(a.shape[0] for _, a in self.arrays["positives"])
        n_neg = sum(a.shape[0] for _, a in self.arrays["negatives"])
        d = recipe.settings["data"]
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

    def template(self) -> np.ndarray:
        """The histogram template of ``data.template``: found on training images, or read from a file."""
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

    def phase_data(self, pi: int, phase: dict, model, saved: dict | None, device, amp: bool = False) -> dict:
        """Sources and row indices of phase ``pi``'s train and test sets.

        Parameters
        ----------
        pi : int; phase : dict
            The phase's index and resolved table.
        model : the model as it starts the phase (scores the negatives of a top-fraction phase)
        saved : dict, optional
            What the phase chose when it started (``"negative_rows"``), from a checkpoint: a
            resumed phase trains on the same rows.
        device : torch.device; amp : autocast while scoring

        Returns
        -------
        dict
            ``pos_src``, ``neg_src``, ``pos_train``, ``pos_test``, ``neg_train``, ``neg_test``,
            and ``saved`` (what a checkpoint must keep to resume the phase).
        """
        shape = tuple(model.deepmine_config["input_shape"])
        if phase["source"] == "generic":
            pos, neg = D.generic_two_class(phase["generic_size"], shape, seed=self.seed + 7919 * pi)
            return self._split_phase(pi, phase, D.CutoutSource([pos], ["generic:curves"]),
                                     D.CutoutSource([neg], ["generic:blobs"]))  # fmt: skip
        if phase["source"] == "files":
            items = {}
            for key in ("positives", "negatives"):
                p = Path(phase[key])
                p = p if p.is_absolute() else Path(self.recipe.base_dir) / p
                items[key] = [(str(p), D.open_cutouts(p, f"phase {phase['name']} {key}"))]
                self.provenance[f"phase_{phase['name']}_{key}"] = [D.describe_file(p, items[key][0][1])]
            channels = phase["data"]["channels"]
            return self._split_phase(pi, phase, D.make_source(items["positives"], channels, shape),
                                     D.make_source(items["negatives"], channels, shape))  # fmt: skip
        pos_train = self.pos_train
        neg_train = self.neg_train
        chosen = {}
        if phase["negatives_top_fraction"] > 0:
            if saved and "negative_rows" in saved:
                neg_train = np.asarray(saved["negative_rows"], dtype=np.int64)
            else:
                spec = model.deepmine_config["preprocessing"]
                logits = positive_logits(model, self.neg_src, neg_train, spec, phase["data"]["eval_batch_size"],
                                         device, amp)  # fmt: skip
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

    def _split_phase(self, pi: int, phase: dict, ps, ns) -> dict:
        """A phase with its own sources: split each into train and test rows."""
        tf = phase["data"]["test_fraction"]
        ptr, pte = D.split_indices(len(ps), tf, np.random.default_rng([self.seed, pi, 201]))
        ntr, nte = D.split_indices(len(ns), tf, np.random.default_rng([self.seed, pi, 202]))
        return {"pos_src": ps, "neg_src": ns, "pos_train": ptr, "pos_test": pte, "neg_train": ntr, "neg_test": nte,
                "saved": {}}  # fmt: skip


def make_optimizer(model, phase: dict):
    """The phase's optimiser: feature (convolution) parameters at ``conv_lr_scale`` × the head's LR."""
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


def make_scheduler(optimizer, phase: dict):
    """The phase's learning-rate schedule, stepped once per epoch.

    ``step`` (default): the LR times ``gamma`` at each of ``milestones`` (epochs of the phase).
    ``cosine``: epoch e (0-based) of E trains at the LR times ½(1 + cos(π (e + ½) / E)), the
    cosine annealing of Loshchilov & Hutter (2017, SGDR, without restarts) taken at each epoch's
    middle, so the first epoch starts near the full LR and the last ends near zero.
    """
    sch = phase["schedule"]
    if sch.get("name", "step") == "cosine":
        epochs = max(int(phase["epochs"]), 1)
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda e: 0.5 * (1.0 + math.cos(math.pi * (min(e, epochs - 1) + 0.5) / epochs))
        )
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=sch["milestones"], gamma=sch["gamma"])


def reset_head(model, seed: int, pi: int) -> None:
    """Re-initialise the classifier head (``reset_head`` phases) from a seed of (seed, phase)."""
    torch.manual_seed(hash_seed(seed, pi, -1))
    head = model.head if hasattr(model, "head") else model.classifier
    for mod in head.modules():
        if hasattr(mod, "reset_parameters"):
            mod.reset_parameters()


class EarlyStop:
    """Early stopping on a held-out metric, with the best epoch's weights kept if asked.

    Parameters
    ----------
    spec : dict
        The phase's ``early_stop`` table: ``metric`` (``test_rp``, ``test_loss``,
        ``test_accuracy``), ``min_delta``, ``patience`` (0: never stop early), ``restore_best``.
    state : dict, optional
        ``{"best", "best_epoch", "bad_epochs"}`` from a checkpoint.
    best_state_dict : dict, optional
        The best epoch's weights from a checkpoint.
    """

    def __init__(self, spec: dict, state: dict | None = None, best_state_dict: dict | None = None):
        self.spec = spec
        self.state = dict(state) if state is not None else {"best": None, "best_epoch": 0, "bad_epochs": 0}
        self.best_state_dict = best_state_dict

    def update(self, model, epoch: int, figures: dict) -> bool:
        """Record phase epoch ``epoch`` (1-based) with its held-out ``figures``; True when patience ran out."""
        es = self.spec
        value = figures[es["metric"]]
        if not math.isnan(value):
            best = self.state["best"]
            higher = es["metric"] != "test_loss"
            improved = best is None or (value > best + es["min_delta"] if higher else value < best - es["min_delta"])
            if improved:
                self.state = {"best": value, "best_epoch": epoch, "bad_epochs": 0}
                if es["restore_best"]:
                    self.best_state_dict = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            else:
                self.state["bad_epochs"] += 1
        return bool(es["patience"] and self.state["bad_epochs"] >= es["patience"])

    def finish(self, model, name: str, epochs: int, planned: int) -> dict:
        """End the phase after ``epochs``: load the best weights if asked; the ``phases_done`` record."""
        if self.spec["restore_best"] and self.best_state_dict is not None:
            model.load_state_dict(self.best_state_dict)
        return {"name": name, "epochs": epochs, "best_epoch": self.state["best_epoch"], "best": self.state["best"],
                "metric": self.spec["metric"], "stopped_early": epochs < planned}  # fmt: skip
