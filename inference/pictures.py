"""Picture files: the format follows the suffix, or the path is refused in one line.

Raster pictures drawn by Pillow (mosaics) are PNG or JPEG (``.png``, ``.jpg``, ``.jpeg``);
matplotlib plots (TRC, selection corner plot, LensCrafter preview, training curves) may also be
PDF, SVG(Z), EPS, PS, TIFF or WebP. Commands call :func:`picture_format` before any long work, so a wrong suffix costs
nothing; the writers call it again to choose the encoder.
"""
from __future__ import annotations

import os
from pathlib import Path

from .errors import file_error

__all__ = ["RASTER", "PLOTS", "picture_format", "save_figure"]

#: suffix → format name (matplotlib's; Pillow's is its upper case)
RASTER = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg"}
PLOTS = {**RASTER, ".pdf": "pdf", ".svg": "svg", ".svgz": "svgz", ".eps": "eps", ".ps": "ps", ".tif": "tiff",
         ".tiff": "tiff", ".webp": "webp"}


def picture_format(path: str | os.PathLike | None, option: str = "--plot", *, raster: bool = False) -> str | None:
    """Format of the picture ``path`` from its suffix (``"png"``, ``"jpeg"``, and for plots
    ``"pdf"``, ``"svg"``, ...); None for None. Raises an :class:`InputError` naming the path and
    ``option`` for any other suffix (or none)."""
    if path is None:
        return None
    table = RASTER if raster else PLOTS
    suffix = Path(path).suffix.lower()
    if suffix not in table:
        allowed = ", ".join(dict.fromkeys(table))
        raise file_error(path, f"{option}: unknown figure format {Path(path).suffix or '(no suffix)'!r}; "
                         f"use one of {allowed}")
    return table[suffix]


def save_figure(fig, path: str | os.PathLike, option: str = "--plot", *, dpi: int = 110) -> Path:
    """Save a matplotlib figure atomically in the format its suffix names."""
    from .atomic import atomic_path

    fmt = picture_format(path, option)
    p = Path(path)
    with atomic_path(p, suffix=p.suffix) as tmp:
        fig.savefig(tmp, dpi=dpi, format=fmt)
    return p
