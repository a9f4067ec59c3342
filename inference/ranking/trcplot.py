"""Tracer-recovery-curve plots in the style of the seed's Figure 3.2 (and 2.5)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..pictures import save_figure
from .kernels import TracerRecoveryCurve


def plot_trc(
    curve: TracerRecoveryCurve,
    path: str | os.PathLike,
    *,
    rp: float | None = None,
    cut: float = 0.995,
    title: str | None = None,
    n_negatives: int | None = None,
) -> Path:
    """Write a TRC figure: recovered fraction vs ordinality, the no-discrimination line, and a
    zoom on the top of the ranking (ordinality ≥ 0.95) where visual inspection happens.

    The area between the TRC and the diagonal (ranking performance numerator) is shaded light,
    the area of a perfect classifier darker, as in Figure 3.2.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # recovered[i] holds on (ordinality[i-1], ordinality[i]]; nothing is recovered above the top tracer
    x = np.concatenate([curve.ordinality, [1.0]])
    y = np.concatenate([curve.recovered, [0.0]])
    # dense grid (plus every step) for the shaded area between the TRC and the diagonal
    o_sorted = np.sort(curve.tracer_ordinality)
    g = np.unique(np.concatenate([np.linspace(0.0, 1.0, 4001), 1.0 - np.geomspace(1e-6, 0.05, 2000), x]))
    yg = 1.0 - np.searchsorted(o_sorted, g, side="left") / o_sorted.shape[0]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4), gridspec_kw={"width_ratios": [1.15, 1]})
    for ax, (lo, hi) in zip(axes, [(0.0, 1.0), (0.95, 1.0)]):
        ax.fill_between([0, 1], [1, 0], [1, 1], color="#1f77b4", alpha=0.18, lw=0, label="perfect classifier")
        ax.fill_between(g, yg, 1 - g, where=yg >= 1 - g, interpolate=True, color="#1f77b4", alpha=0.45,
                        lw=0, label="TRC above no discrimination")
        ax.step(x, y, where="pre", color="k", lw=1.6, label="tracer recovery curve")
        ax.plot([0, 1], [1, 0], ls="--", color="tab:red", lw=1.2, label="no discrimination")
        ax.axvline(cut, color="tab:green", ls=":", lw=1.2, label=f"inspection cut {cut:g}")
        ax.set_xlim(lo, hi)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("ordinality")
        ax.grid(alpha=0.25)
    axes[0].set_ylabel("fraction of tracers recovered (ordinality ≥ x)")
    axes[1].set_title(f"top {100 * (1 - 0.95):.0f} % of the ranking", fontsize=10)
    frac = curve.at(cut)
    label = f"RP = {rp:.4f}, " if rp is not None else ""
    n_t = curve.tracer_ordinality.shape[0]
    sub = f"{label}{100 * frac:.1f} % of {n_t} tracers above {cut:g}"
    if n_negatives is not None:
        sub += f" ({n_negatives:,} negatives)"
    axes[0].set_title(title or "Tracer recovery curve", fontsize=11)
    fig.suptitle(sub, fontsize=10, y=0.02, va="bottom")
    axes[0].legend(loc="lower left", fontsize=8, framealpha=0.9)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    save_figure(fig, path, "--plot", dpi=120)
    plt.close(fig)
    return Path(path)
