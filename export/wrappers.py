"""Wrappers that give a trained torch model deepmine's graph interface (SPEC sections 2-3).

Classifiers' ``forward`` returns raw two-class scores (N, 2) = (non-lens, lens). The exported
graph takes ``image`` (float32 N×C×H×W) and returns

``logit``
    the positive-class log-odds (N,), float32;
``probability``
    ``sigmoid(logit)`` (N,), float32.

How the log-odds follow from the two scores depends on the head the model was trained with
(the ``scores`` argument):

``"softmax"`` (LensFlow)
    a two-way softmax: ``logit = s1 - s0``, so that ``sigmoid(logit)`` equals the softmax
    probability of the positive class.
``"sigmoid"`` (EZnet)
    two independent sigmoid outputs (negative, positive): ``logit = s1``.
``"logit"``
    the model already returns the positive-class logit, shape (N,) or (N, 1);
``"model"``
    the model's own ``positive_logit(scores)`` (every classifier built by
    :func:`deepmine.training.create_model` has one) — the default when it exists, so that the
    convention has one implementation, next to the model's loss.

Generators take ``latent`` (float32 N×L) and return ``image`` (float32 N×C×H×W in 0..1); a
generator whose output is in −1..1 (a tanh head, ``output_range=(-1, 1)``) is mapped to 0..1.
"""
from __future__ import annotations

import torch
from torch import nn

from deepmine.inference.errors import InputError

SCORE_KINDS = ("model", "softmax", "sigmoid", "logit")

#: How the registered classifiers turn their two scores into the positive-class logit.
DEFAULT_SCORES = {"lensflow": "softmax", "eznet": "sigmoid"}


def score_kind(model: nn.Module, architecture: str, scores: str | None = None) -> str:
    """The score convention of ``model``: ``scores`` if given, else ``"model"`` when the model
    has ``positive_logit``, else its ``deepmine_config["scores"]``, else the architecture's
    default (:data:`DEFAULT_SCORES`)."""
    kind = scores
    if kind is None and callable(getattr(model, "positive_logit", None)):
        kind = "model"
    if kind is None:
        cfg = getattr(model, "deepmine_config", None) or {}
        kind = cfg.get("scores")
    if kind is None:
        kind = DEFAULT_SCORES.get(str(architecture).lower())
    if kind is None:
        raise InputError(
            f"export: cannot tell how architecture {architecture!r} turns its scores into a logit; "
            f"pass scores= one of {SCORE_KINDS}"
        )
    if kind == "model" and not callable(getattr(model, "positive_logit", None)):
        raise InputError("export: scores='model' needs a model with a positive_logit(scores) method")
    if kind not in SCORE_KINDS:
        raise InputError(f"export: scores must be one of {SCORE_KINDS}, got {kind!r}")
    return kind


class ClassifierGraph(nn.Module):
    """``image`` → (``logit``, ``probability``) around a classifier returning raw scores."""

    def __init__(self, model: nn.Module, scores: str):
        super().__init__()
        if scores not in SCORE_KINDS:
            raise InputError(f"export: scores must be one of {SCORE_KINDS}, got {scores!r}")
        self.model = model
        self.scores = scores

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.model(image)
        if self.scores == "model":
            logit = self.model.positive_logit(s)
        elif self.scores == "softmax":
            logit = s[:, 1] - s[:, 0]
        elif self.scores == "sigmoid":
            logit = s[:, 1]
        else:
            logit = s.reshape(s.shape[0])
        return logit, torch.sigmoid(logit)


class GeneratorGraph(nn.Module):
    """``latent`` → ``image`` in 0..1 around a generator: its own ``images(latent)`` when it has
    one (LensGenerator), else its output mapped from ``output_range`` (its native range)."""

    def __init__(self, model: nn.Module, output_range: tuple[float, float] = (0.0, 1.0)):
        super().__init__()
        lo, hi = (float(v) for v in output_range)
        if not hi > lo:
            raise InputError(f"export: generator output_range must be increasing, got {output_range!r}")
        self.model = model
        self.lo, self.span = lo, hi - lo
        self.own = callable(getattr(model, "images", None))

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        if self.own:
            return self.model.images(latent)
        img = self.model(latent)
        if self.lo != 0.0 or self.span != 1.0:
            img = (img - self.lo) / self.span
        return img


def wrap(model: nn.Module, task: str, architecture: str, scores: str | None = None) -> tuple[nn.Module, dict]:
    """Wrap ``model`` for export; return the wrapper and a description for the metadata."""
    if task == "classifier":
        kind = score_kind(model, architecture, scores)
        return ClassifierGraph(model, kind).eval(), {"scores": kind}
    if task == "generator":
        cfg = getattr(model, "deepmine_config", None) or {}
        rng = cfg.get("output_range") or getattr(model, "output_range", None) or (0.0, 1.0)
        g = GeneratorGraph(model, tuple(rng)).eval()
        return g, {"output_range": [float(v) for v in rng], "images": "model.images" if g.own else "mapped"}
    raise InputError(f"export: task must be 'classifier' or 'generator', got {task!r}")


def io_names(task: str) -> tuple[str, list[str]]:
    """Graph input name and output names for a task."""
    return ("image", ["logit", "probability"]) if task == "classifier" else ("latent", ["image"])
