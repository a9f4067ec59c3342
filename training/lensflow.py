"""LensFlow (seed 2.3, Table 2.1): the single-band ConvNet of the COSMOS search.

Layers (defaults = Table 2.1; input 1×100×100)::

    conv 5×5, 30 filters, no padding → tanh → max-pool 2   30×96×96 → 30×48×48
    conv 5×5, 60 filters             → tanh → max-pool 2   60×44×44 → 60×22×22
    conv 5×5, 90 filters             → tanh → max-pool 2   90×18×18 → 90×9×9
    flatten 7290 → linear 1000 → ReLU → dropout .5 → linear 800 → ReLU → dropout .5
                 → linear 600 → ReLU → dropout .5 → linear 2 (→ softmax)

The seed's text says "average-pooling ... stride 1" for layer 1 and "pooling with a kernel of
size 2×2 and a stride of 1"; Table 2.1's dimensions (96 → 48) need a 5×5 *convolution* and a
2×2 *max*-pool of stride 2, which is what is built (the text's "outputting the largest pixel
value" names max-pooling). Dropout .5 follows every hidden linear layer, as the table lists.

``forward`` returns the two raw scores (N, 2) = (non-lens, lens) before the softmax; the
positive-class logit is ``s1 − s0`` (so that ``sigmoid(logit)`` is the softmax probability).
Preprocessing is histogram matching to a template (seed 2.1); the template is found at
training time and stored in ``deepmine_config["preprocessing"]["template"]`` (the default,
before training, is the uniform template 0..1, i.e. histogram equalisation).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from deepmine.inference.errors import InputError

from .registry import register_model

#: LensFlow's default pixel scale: HST/ACS 0.03″ cutouts of 200 px down-sampled to 100 px.
ACS_DOWNSAMPLED_SCALE = 0.06


def _positive_ints(name, values, n=None):
    try:
        vals = [int(v) for v in values]
    except (TypeError, ValueError):
        raise InputError(f"lensflow: {name} must be a list of positive integers, got {values!r}") from None
    if not vals or any(v <= 0 for v in vals) or (n is not None and len(vals) != n):
        raise InputError(f"lensflow: {name} must be a list of positive integers, got {values!r}")
    return vals


@register_model("lensflow")
class LensFlow(nn.Module):
    """LensFlow classifier (seed Table 2.1).

    Parameters
    ----------
    in_channels : int
        Input bands (1 in the seed).
    size : int
        Input height = width in pixels (100 in the seed).
    filters : list[int]
        Filters of the three convolution blocks (30, 60, 90).
    kernel : int
        Convolution kernel size (5), no padding.
    hidden : list[int]
        Widths of the hidden linear layers (1000, 800, 600).
    dropout : float
        Dropout probability after each hidden linear layer (0.5).
    bands : list[str] or None
        Band names, one per channel (default ``["i"]``, HST/ACS F814W).
    pixel_scale : float
        Arcsec per pixel (default 0.06).
    template : list[float] or None
        Histogram-matching template (increasing quantiles in 0..1); default uniform (256).
    """

    architecture = "lensflow"

    def __init__(
        self,
        in_channels: int = 1,
        size: int = 100,
        filters=(30, 60, 90),
        kernel: int = 5,
        hidden=(1000, 800, 600),
        dropout: float = 0.5,
        bands=None,
        pixel_scale: float = ACS_DOWNSAMPLED_SCALE,
        template=None,
    ):
        super().__init__()
        in_channels = _positive_ints("in_channels", [in_channels])[0]
        size = _positive_ints("size", [size])[0]
        kernel = _positive_ints("kernel", [kernel])[0]
        filters = _positive_ints("filters", filters)
        hidden = _positive_ints("hidden", hidden)
        if not 0.0 <= float(dropout) < 1.0:
            raise InputError(f"lensflow: dropout must be in [0, 1), got {dropout!r}")
        bands = list(bands) if bands is not None else (["i"] if in_channels == 1 else [f"b{i}" for i in range(in_channels)])
        if len(bands) != in_channels:
            raise InputError(f"lensflow: {len(bands)} band names for {in_channels} input channels")
        if template is None:
            template = np.linspace(0.0, 1.0, 256).tolist()
        t = np.asarray(template, dtype=np.float64)
        if t.ndim != 1 or t.size < 2 or np.any(np.diff(t) < 0) or not np.all(np.isfinite(t)):
            raise InputError("lensflow: template must be an increasing list of >= 2 finite quantiles")

        layers: list[nn.Module] = []
        c, s = in_channels, size
        self.layer_shapes: list[tuple[str, tuple[int, ...]]] = []
        for f in filters:
            if s - kernel + 1 < 2:
                raise InputError(f"lensflow: input size {size} is too small for {len(filters)} conv blocks of kernel {kernel}")
            layers += [nn.Conv2d(c, f, kernel), nn.Tanh(), nn.MaxPool2d(2)]
            s = s - kernel + 1
            self.layer_shapes += [("convolution", (f, s, s)), ("tanh", (f, s, s))]
            s //= 2
            c = f
            self.layer_shapes.append(("pooling", (c, s, s)))
        self.features = nn.Sequential(*layers)
        flat = c * s * s
        self.layer_shapes.append(("flatten", (flat,)))
        head: list[nn.Module] = [nn.Flatten()]
        width = flat
        for h in hidden:
            head += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(float(dropout))]
            self.layer_shapes += [("linear", (h,)), ("ReLU", (h,)), ("dropout", (h,))]
            width = h
        head.append(nn.Linear(width, 2))
        self.layer_shapes += [("linear", (2,)), ("softmax", (2,))]
        self.classifier = nn.Sequential(*head)

        self.deepmine_overrides = {
            "in_channels": in_channels, "size": size, "filters": filters, "kernel": kernel,
            "hidden": hidden, "dropout": float(dropout), "bands": bands,
            "pixel_scale": float(pixel_scale), "template": t.tolist(),
        }  # fmt: skip
        self.deepmine_config = {
            "architecture": "lensflow",
            "task": "classifier",
            "architecture_config": {k: v for k, v in self.deepmine_overrides.items() if k != "template"},
            "input_shape": [in_channels, size, size],
            "bands": bands,
            "pixel_scale": float(pixel_scale),
            "preprocessing": {"kind": "histogram_match", "template": t.tolist()},
        }

    #: parameters of the convolution layers (seed phase 1 trains them at 0.1× the LR)
    def feature_parameters(self):
        return self.features.parameters()

    def head_parameters(self):
        return self.classifier.parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw two-class scores (N, 2) = (non-lens, lens), before the softmax."""
        return self.classifier(self.features(x))

    @staticmethod
    def positive_logit(scores: torch.Tensor) -> torch.Tensor:
        """Positive-class log-odds of the softmax: ``s1 − s0`` (N,)."""
        return scores[:, 1] - scores[:, 0]

    @staticmethod
    def loss(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the softmax (seed 2.3); ``labels`` 0/1 integers."""
        return nn.functional.cross_entropy(scores, labels.long())

    def set_template(self, template) -> None:
        """Store the histogram-matching template found at training time."""
        t = np.asarray(template, dtype=np.float64).tolist()
        self.deepmine_overrides["template"] = t
        self.deepmine_config["preprocessing"] = {"kind": "histogram_match", "template": t}
