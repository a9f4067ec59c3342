"""Per-epoch figures of a classifier run: loss, accuracy, ranking performance; ``history.csv``.

Train-set figures are those of the epoch's own minibatches (train mode, augmented, as the
weights evolved through the epoch: :class:`EpochMetrics` fed by the trainer); test-set figures
come from one pass of :func:`evaluate` in eval mode, without augmentation, at the end of the
epoch. Ranking performance is :func:`deepmine.inference.ranking.ranking_performance` of the
positives' logits against the negatives'.
"""
from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import numpy as np
import torch

from deepmine.inference.ranking import ranking_performance

from . import data as D
from .csvrows import write_csv

__all__ = ["HISTORY", "COLUMNS", "EpochMetrics", "evaluate", "positive_logits", "write_history", "read_history"]

HISTORY = "history.csv"
COLUMNS = ["phase", "phase_epoch", "epoch", "lr", "train_loss", "train_accuracy", "train_rp",
           "test_loss", "test_accuracy", "test_rp", "n_train", "seconds", "data_seconds"]  # fmt: skip


class EpochMetrics:
    """Sums of loss and correct answers, and the positive-class logits of each class, over batches."""

    def __init__(self):
        self.loss_sum = 0.0
        self.n = 0
        self.correct = 0
        self.pos: list[np.ndarray] = []
        self.neg: list[np.ndarray] = []

    def add(self, loss: float, logits: np.ndarray, labels: np.ndarray) -> None:
        """Add a batch: its mean ``loss``, positive-class ``logits`` and 0/1 ``labels``."""
        self.loss_sum += loss * len(labels)
        self.n += len(labels)
        self.correct += int(np.sum((logits > 0) == (labels == 1)))
        self.pos.append(logits[labels == 1])
        self.neg.append(logits[labels == 0])

    def result(self) -> tuple[float, float, float]:
        """(mean loss, accuracy, ranking performance); NaN where undefined."""
        if self.n == 0:
            return math.nan, math.nan, math.nan
        pos = np.concatenate(self.pos) if self.pos else np.empty(0)
        neg = np.concatenate(self.neg) if self.neg else np.empty(0)
        if not (np.all(np.isfinite(pos)) and np.all(np.isfinite(neg))):
            return self.loss_sum / self.n, self.correct / self.n, math.nan
        rp = ranking_performance(pos, neg) if pos.size and neg.size else math.nan
        return self.loss_sum / self.n, self.correct / self.n, float(rp)


@torch.no_grad()
def positive_logits(model, src, index, spec: dict, batch_size: int, device, amp: bool = False) -> np.ndarray:
    """Positive-class logits of rows ``index`` of ``src`` (eval mode, no augmentation)."""
    model.eval()
    out = []
    for x in D.eval_batches(src, index, spec, batch_size):
        xt = torch.from_numpy(x).to(device)
        with torch.autocast(device.type, enabled=amp):
            out.append(model.positive_logit(model(xt)).float().cpu().numpy())
    return np.concatenate(out) if out else np.empty(0, np.float32)


@torch.no_grad()
def evaluate(model, pdata: dict, spec: dict, batch_size: int, device, amp: bool = False) -> tuple[float, float, float]:
    """(loss, accuracy, RP) of ``model`` on a phase's test set.

    Parameters
    ----------
    pdata : dict
        A phase's data (:func:`deepmine.training.phases.TrainingData.phase_data`): sources
        ``pos_src``/``neg_src`` and test rows ``pos_test``/``neg_test``.
    spec : dict
        The model's preprocessing.
    device : torch.device; amp : autocast (CUDA)
    """
    m = EpochMetrics()
    model.eval()
    for src, index, label in ((pdata["pos_src"], pdata["pos_test"], 1), (pdata["neg_src"], pdata["neg_test"], 0)):
        for x in D.eval_batches(src, index, spec, batch_size):
            xt = torch.from_numpy(x).to(device)
            y = torch.full((x.shape[0],), label, dtype=torch.long, device=device)
            with torch.autocast(device.type, enabled=amp):
                scores = model(xt)
            scores = scores.float()
            loss = float(model.loss(scores, y))
            m.add(loss, model.positive_logit(scores).cpu().numpy(), y.cpu().numpy())
    return m.result()


def write_history(path: Path, history: list[dict]) -> None:
    """Write the rows of ``history.csv`` (:data:`COLUMNS`; floats with 6 significant digits), atomically."""
    write_csv(path, history, COLUMNS)


def read_history(path: str | os.PathLike) -> list[dict]:
    """Rows of a ``history.csv`` with numbers parsed."""
    rows = []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            rows.append({k: (v if k == "phase" else float(v)) for k, v in row.items()})
    return rows
