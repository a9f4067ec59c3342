"""Training curves in the style of the seed's Figures 3.2 (right) and 4.4.

Three panels over epochs: loss, accuracy and ranking performance, each for the train set
(solid) and the held-out test set (dashed); phase boundaries are marked by vertical lines.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

from deepmine.inference.atomic import atomic_path


def plot_curves(history: list[dict], path: str | os.PathLike, title: str = "") -> Path:
    """Write the loss / accuracy / RP curves of ``history`` (rows of history.csv) to ``path``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), constrained_layout=True)
    panels = [("loss", "Loss", None), ("accuracy", "Accuracy", (0, 1.02)), ("rp", "Ranking performance", (-0.05, 1.02))]
    for ax, (key, label, ylim) in zip(axes, panels):
        for split, style, colour in (("train", "-", "#1f5fa8"), ("test", "--", "#d1495b")):
            ys = [r[f"{split}_{key}"] for r in history]
            if all(isinstance(y, float) and math.isnan(y) for y in ys):
                continue
            ax.plot(epochs, ys, style, color=colour, lw=1.6, marker="o" if len(epochs) < 30 else None, ms=3,
                    label=f"{split}set")  # fmt: skip
        prev = None
        for r in history:
            if prev is not None and r["phase"] != prev:
                ax.axvline(r["epoch"] - 0.5, color="0.6", lw=0.8, ls=":")
                ax.text(r["epoch"] - 0.4, 1.0, str(r["phase"]), transform=ax.get_xaxis_transform(), fontsize=7,
                        color="0.4", va="top")  # fmt: skip
            prev = r["phase"]
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        if ylim:
            values = [r[f"{s}_{key}"] for r in history for s in ("train", "test")]
            low = min([v for v in values if not math.isnan(v)], default=0.0)
            ax.set_ylim(min(ylim[0], low - 0.05), ylim[1])
        ax.grid(alpha=0.3)
        ax.legend(frameon=False, fontsize=8, loc="best")
    if title:
        fig.suptitle(title)
    p = Path(path)
    with atomic_path(p) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return p
