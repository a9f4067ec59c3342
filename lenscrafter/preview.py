"""Figure 4.1-like preview grids and RGB rendering of i, r, g cutouts.

Columns vary one parameter of the Figure 4.2 reference lens each, top to bottom: the Einstein
radius, the source offset, the SIE ellipticity and the foreground Sersic index.
"""
from __future__ import annotations

import numpy as np
from astropy.table import Table, vstack

from deepmine.inference.errors import InputError

from .params import reference_lens_params

#: (column title, parameter, values top to bottom) of the preview grid.
PREVIEW_COLUMNS = (
    ("Einstein radius θ_E (″)", "theta_e", (0.5, 1.0, 1.5, 2.2, 3.0)),
    ("source offset (″)", "offset", (0.0, 0.17, 0.5, 1.0, 1.6)),
    ("SIE ellipticity 1−q", "e_sie", (0.0, 0.2, 0.44, 0.6, 0.75)),
    ("foreground Sersic n", "n_fg", (0.5, 1.5, 3.0, 4.5, 6.0)),
)


def preview_params(literal: bool = False) -> Table:
    """Lens table of the preview grid, row-major (row i of the grid, then column j)."""
    cells = []
    nrows = len(PREVIEW_COLUMNS[0][2])
    for i in range(nrows):
        for _, name, values in PREVIEW_COLUMNS:
            t = reference_lens_params(1, literal=literal)
            v = values[i]
            if name == "offset":
                t["src_x"] = v * np.cos(np.radians(45.0))
                t["src_y"] = v * np.sin(np.radians(45.0))
            else:
                t[name] = v
            cells.append(t)
    return vstack(cells)


def to_rgb(images) -> np.ndarray:
    """(N, 3, H, W) uint8 i, r, g → (N, H, W, 3) RGB for display (row 0 at the bottom → top)."""
    a = np.asarray(images)
    if a.ndim != 4 or a.shape[1] != 3 or a.dtype != np.uint8:
        raise InputError(f"images: expected an N×3×H×W uint8 stack, got {a.dtype} {a.shape}")
    return np.ascontiguousarray(np.transpose(a, (0, 2, 3, 1))[:, ::-1])


def write_preview(path, *, seed: int = 0, literal: bool = False, noise: bool = True, psf=True,
                  size: int = 64, pixel_scale: float = 0.168) -> Table:
    """Render the preview grid and write it as an image (PNG, JPEG, PDF, SVG: the suffix decides,
    others are refused before any work); return its lens table."""
    from deepmine.inference.pictures import picture_format

    picture_format(path, "--preview")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from deepmine.inference.pictures import save_figure

    from .synth import craft_lenses

    params = preview_params(literal)
    imgs = to_rgb(craft_lenses(params, seed=seed, noise=noise, psf=psf, size=size, pixel_scale=pixel_scale,
                               field=0))  # the lens alone: the grid shows how it varies
    ncols = len(PREVIEW_COLUMNS)
    nrows = len(params) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.0 * ncols, 2.0 * nrows + 0.5), squeeze=False)
    for k, ax in enumerate(axes.ravel()):
        i, j = divmod(k, ncols)
        title, name, values = PREVIEW_COLUMNS[j]
        ax.imshow(imgs[k], interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.text(0.03, 0.97, f"{values[i]:g}", color="w", fontsize=8, va="top", transform=ax.transAxes)
        if i == 0:
            ax.set_title(title, fontsize=9)
    fig.suptitle(f"LensCrafter: variations of the Figure 4.2 reference lens (i, r, g → R, G, B; "
                 f"{size}×{size} px at {pixel_scale}″)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, "--preview")
    plt.close(fig)
    return params
