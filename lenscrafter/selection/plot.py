"""Figures of a selection function: the corner plot of Figure 3.3 and 1-D completeness curves.

Both read a :class:`~deepmine.lenscrafter.selection.measure.SelectionFunction`. Panels show detection
fractions *marginalised* over the axes not shown (detections and lenses summed over them),
which with the grid's default uniform sampling is the detection probability averaged over
those axes' ranges. The seed's Figure 3.3 shows cuts with the other parameters fixed; to get
those, measure a grid whose other parameters are fixed (the ``[fixed]`` table of a grid file).
"""
from __future__ import annotations

import os
from pathlib import Path

CMAP = "viridis"


def _setup():
    import matplotlib

    if not os.environ.get("MPLBACKEND"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> Path:
    from deepmine.inference.pictures import save_figure

    return save_figure(fig, path, "--plot")


def _log_axis(axis) -> None:
    """Log scale with plain labels at 1, 2, 5 × 10^k and no minor labels."""
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FormatStrFormatter("%g"))
    axis.set_minor_formatter(NullFormatter())


def _scale(ax, which: str, axis_def) -> None:
    if axis_def.scale == "log":
        (ax.set_xscale if which == "x" else ax.set_yscale)("log")
        _log_axis(ax.xaxis if which == "x" else ax.yaxis)


def _title(sel) -> str:
    prov = sel.provenance
    s = sel.summary()
    model = Path(str(prov.get("model", "model"))).name
    pool = prov.get("pool_size")
    pool_text = f", pool of {pool:,} negatives" if isinstance(pool, int) else ""
    return (f"Selection function of {model}: detected = ordinality > {sel.cut:g}\n"
            f"{s['lenses']:,} lenses in {s['cells']:,} cells{pool_text}")


def plot_corner(sel, path, *, names=None, title: str | None = None) -> Path:
    """Corner plot of all 2-D marginal detection fractions (lower triangle) and the 1-D
    marginals with Wilson bands (diagonal), in the style of the seed's Figure 3.3.

    Parameters
    ----------
    sel : SelectionFunction
    path : output image (PNG, PDF, SVG), written atomically
    names : axes to show (default: all)
    """
    plt = _setup()
    fig = corner_figure(sel, names=names, title=title)
    p = _save(fig, path)
    plt.close(fig)
    return p


def corner_figure(sel, *, names=None, title: str | None = None):
    """The matplotlib figure of :func:`plot_corner` (every label inside the figure)."""
    plt = _setup()
    axes_all = sel.grid.axes if names is None else [sel.grid.axis(n) for n in names]
    k = len(axes_all)
    size = 2.2 * k + 1.2 if k > 1 else 4.5
    fig, grid_ax = plt.subplots(k, k, figsize=(size, size), squeeze=False)
    mesh = None
    for i, ai in enumerate(axes_all):
        for j, aj in enumerate(axes_all):
            ax = grid_ax[i, j]
            if j > i:
                ax.set_visible(False)
                continue
            if i == j:
                m = sel.marginal(ai.name)
                e = ai.edges
                ax.fill_between(ai.centers, m["fraction_lo"], m["fraction_hi"], color="C0", alpha=0.3, lw=0)
                ax.plot(ai.centers, m["fraction"], "o-", color="C0", ms=3)
                _scale(ax, "x", ai)
                ax.set_xlim(e[0], e[-1])
                ax.set_ylim(-0.02, 1.02)
                ax.yaxis.tick_right()
                ax.yaxis.set_label_position("right")
                ax.set_ylabel("detected", fontsize=8)
            else:
                m = sel.marginal(ai.name, aj.name)  # rows: ai (y), columns: aj (x)
                mesh = ax.pcolormesh(aj.edges, ai.edges, m["fraction"], cmap=CMAP, vmin=0, vmax=1,
                                     shading="flat")
                _scale(ax, "x", aj)
                _scale(ax, "y", ai)
            ax.tick_params(labelsize=7)
            if i == k - 1:
                ax.set_xlabel(aj.label, fontsize=10)
            else:
                ax.tick_params(labelbottom=False)
            if j == 0 and i > 0:
                ax.set_ylabel(ai.label, fontsize=10)
            elif i != j:
                ax.tick_params(labelleft=False)
    if mesh is not None:
        # in the empty upper triangle, clear of the diagonal panels' "detected" labels; the label
        # on two lines so that it stays inside the figure however few axes there are
        cax = fig.add_axes([0.62, 0.72, 0.3, 0.025] if k > 2 else [0.62, 0.80, 0.30, 0.03])
        cb = fig.colorbar(mesh, cax=cax, orientation="horizontal")
        cb.set_label(f"detection fraction\n(ordinality > {sel.cut:g})", fontsize=9)
        cb.ax.tick_params(labelsize=8)
    fig.suptitle(title or _title(sel), fontsize=10, y=0.995)
    fig.subplots_adjust(left=0.55 / size + 0.03, right=1 - 0.75 / size, bottom=0.5 / size + 0.02,
                        top=1 - 0.55 / size, wspace=0.08, hspace=0.08)
    return fig


def plot_completeness(sel, path, *, x_names=("theta_e", "m_arc"), title: str | None = None) -> Path:
    """1-D completeness curves: detection fraction against each of ``x_names`` (one panel each),
    marginalised over all other axes (black, with Wilson band) and split by the bins of the other
    named axis (coloured), e.g. completeness vs θ_E for each arc magnitude bin.

    Axes missing from the grid are skipped; with none present the first two grid axes are used.
    """
    plt = _setup()
    have = [n for n in x_names if n in sel.grid.names]
    if not have:
        have = sel.grid.names[:2]
    fig, axs = plt.subplots(1, len(have), figsize=(6.8 * len(have), 4.2), squeeze=False)
    cmap = plt.get_cmap("plasma")
    for ax, name in zip(axs[0], have):
        a = sel.grid.axis(name)
        split = next((n for n in have if n != name), None)
        if split is None:
            split = next((n for n in sel.grid.names if n != name), None)
        if split is not None:
            b = sel.grid.axis(split)
            m2 = sel.marginal(name, split)
            for jb in range(b.bins):
                color = cmap(0.9 * jb / max(1, b.bins - 1))
                ax.plot(a.centers, m2["fraction"][:, jb], "-", color=color, lw=1.2, alpha=0.9,
                        label=f"{b.label} {b.edges[jb]:.3g}–{b.edges[jb + 1]:.3g}")
        m = sel.marginal(name)
        ax.fill_between(a.centers, m["fraction_lo"], m["fraction_hi"], color="k", alpha=0.2, lw=0)
        ax.plot(a.centers, m["fraction"], "o-", color="k", lw=2, ms=4, label="all")
        _scale(ax, "x", a)
        ax.set_xlim(a.edges[0], a.edges[-1])
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel(a.label)
        ax.set_ylabel(f"completeness (ordinality > {sel.cut:g})")
        ax.grid(alpha=0.3)
        # beside the axes, not on them: completeness curves run along 1.0, where "best" still covers them
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, frameon=False)
    fig.suptitle(title or _title(sel), fontsize=9)
    fig.tight_layout()
    p = _save(fig, path)
    plt.close(fig)
    return p


def completeness_path(corner_path) -> Path:
    """Where the completeness curves go beside a corner plot: ``<stem>_completeness<suffix>``."""
    p = Path(corner_path)
    return p.with_name(f"{p.stem}_completeness{p.suffix or '.png'}")
