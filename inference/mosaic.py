"""Colour renderings of cutouts and labelled mosaics for visual inspection (seed 2.5, 4.7).

``render_rgb(cutout, bands=...)`` maps bands to colours as the seed renders HSC cutouts: i, r,
g → R, G, B (whatever order the channels are stored in, when ``bands`` names them; otherwise
channels 0, 1, 2 → R, G, B; one band → grey). Two stretches:

``"percentile"`` (default)
    Each band clipped at its 0.5 and 99.5 percentiles and scaled to 0..1 — what the EZnet
    model sees (seed 4.1). uint8 cutouts (already normalised) are shown as stored.
``"asinh"``
    Lupton-style: sky (median) subtracted per band, one common scale for all bands (the
    99.5 percentile of the brightest), ``asinh(x / soft) / asinh(1 / soft)``, so colours are
    kept and faint arcs stay visible next to a bright deflector.

Masked (NaN/inf) pixels are drawn black. Row 0 of a cutout is drawn at the bottom (FITS /
DS9 convention, ``origin="lower"``), so north is up for a standard survey WCS. ``write_mosaic`` lays cutouts on a grid with a
label under each (e.g. rank, id, logit, ordinality) and writes a PNG atomically.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .errors import InputError
from .formats import HSC_BANDS
from .pictures import picture_format

__all__ = ["render_rgb", "write_mosaic", "STRETCHES"]

STRETCHES = ("percentile", "asinh")
_RGB_BANDS = HSC_BANDS


def _channel_order(c: int, bands: Sequence[str] | None) -> list[int]:
    if c == 1:
        return [0, 0, 0]
    if bands is not None:
        low = [str(b).lower() for b in bands]
        if len(low) != c:
            raise InputError(f"render_rgb: {len(low)} band names given for a cutout of {c} channels")
        if all(b in low for b in _RGB_BANDS):
            return [low.index(b) for b in _RGB_BANDS]
    if c == 2:
        return [0, 1, 1]
    return [0, 1, 2]


def render_rgb(cutout, bands: Sequence[str] | None = None, stretch: str = "percentile",
               soft: float = 0.05) -> np.ndarray:
    """An H×W×3 uint8 RGB rendering of one C×H×W (or H×W) cutout.

    Parameters
    ----------
    cutout : C×H×W or H×W array, uint8 or float
    bands : band name of each channel (e.g. the model's ``["i", "r", "g"]``); i, r, g go to R, G, B
    stretch : ``"percentile"`` or ``"asinh"`` (see the module docstring)
    soft : asinh softening, as a fraction of the common scale
    """
    x = np.asarray(cutout)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise InputError(f"render_rgb: expected a C×H×W or H×W cutout, got shape {x.shape}")
    if stretch not in STRETCHES:
        raise InputError(f"render_rgb: stretch must be one of {STRETCHES}, got {stretch!r}")
    order = _channel_order(x.shape[0], bands)
    planes = x[order].astype(np.float64)
    finite = np.isfinite(planes)
    out = np.zeros(planes.shape, dtype=np.float64)
    if stretch == "percentile" and x.dtype == np.uint8:
        out = planes / 255.0
    elif stretch == "percentile":
        for k in range(3):
            v = planes[k][finite[k]]
            if v.size == 0:
                continue
            lo, hi = np.percentile(v, [0.5, 99.5])
            if hi > lo:
                out[k] = np.clip((planes[k] - lo) / (hi - lo), 0.0, 1.0)
    else:
        sub = np.zeros_like(planes)
        scale = 0.0
        for k in range(3):
            v = planes[k][finite[k]]
            if v.size == 0:
                continue
            sub[k] = planes[k] - np.median(v)
            scale = max(scale, float(np.percentile(v - np.median(v), 99.5)))
        if scale > 0:
            out = np.clip(np.arcsinh(sub / (soft * scale)) / np.arcsinh(1.0 / soft), 0.0, 1.0)
    out[~finite] = 0.0
    rgb = (np.moveaxis(out, 0, -1) * 255.0 + 0.5).astype(np.uint8)
    return np.ascontiguousarray(rgb[::-1])  # row 0 at the bottom (origin="lower")


def write_mosaic(
    images,
    labels: Sequence[str],
    path: str | os.PathLike,
    ncols: int = 8,
    *,
    bands: Sequence[str] | None = None,
    stretch: str = "percentile",
    tile_px: int = 128,
    title: str | None = None,
) -> Path:
    """Write a labelled grid of cutouts as a PNG or JPEG (the suffix decides; atomically).

    Parameters
    ----------
    images : sequence of C×H×W cutouts (or an N×C×H×W array)
    labels : one string per cutout (may hold newlines), drawn under it; a line wider than the
        cutout is shortened on the right with "…"
    path : output ``.png``, ``.jpg`` or ``.jpeg`` (other suffixes are refused)
    ncols : cutouts per row
    bands, stretch : passed to :func:`render_rgb`
    tile_px : displayed size of a cutout in pixels (nearest-neighbour upscaling)
    title : optional line on top
    """
    from PIL import Image, ImageDraw, ImageFont

    imgs = list(images)
    if len(imgs) != len(labels):
        raise InputError(f"write_mosaic: {len(imgs)} cutouts but {len(labels)} labels")
    if not imgs:
        raise InputError("write_mosaic: no cutouts to draw")
    if ncols < 1 or tile_px < 8:
        raise InputError("write_mosaic: ncols must be >= 1 and tile_px >= 8")
    ncols = min(ncols, len(imgs))
    nrows = -(-len(imgs) // ncols)
    try:
        font = ImageFont.load_default(size=max(10, tile_px // 11))
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    lines = max(str(lab).count("\n") + 1 for lab in labels)
    line_h = max(12, tile_px // 9)
    pad = 6
    cell_w, cell_h = tile_px + pad, tile_px + pad + lines * line_h + 2
    top = line_h + 2 * pad if title else pad
    canvas = Image.new("RGB", (ncols * cell_w + pad, top + nrows * cell_h), (20, 20, 20))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((pad, pad), title, fill=(235, 235, 235), font=font)
    for k, (img, label) in enumerate(zip(imgs, labels)):
        r, c = divmod(k, ncols)
        x0, y0 = pad + c * cell_w, top + r * cell_h
        rgb = Image.fromarray(render_rgb(img, bands, stretch)).resize((tile_px, tile_px), Image.NEAREST)
        canvas.paste(rgb, (x0, y0))
        for j, text in enumerate(str(label).split("\n")):
            text = fit_text(text, tile_px + pad // 2, lambda t: draw.textlength(t, font=font))
            draw.text((x0, y0 + tile_px + 2 + j * line_h), text, fill=(235, 235, 235), font=font)
    fmt = picture_format(path, "--mosaic", raster=True)
    with atomic_path(path, suffix=Path(path).suffix) as tmp:
        canvas.save(tmp, format=fmt.upper(), **({"quality": 92} if fmt == "jpeg" else {}))
    return Path(path)


def fit_text(text: str, width: float, measure) -> str:
    """``text`` shortened on the right with "…" until ``measure(text) <= width`` (the start of
    an id or a file name says most, so the end goes first)."""
    if measure(text) <= width:
        return text
    lo, hi = 0, len(text)
    while lo < hi:  # longest prefix that fits with the ellipsis
        mid = (lo + hi + 1) // 2
        if measure(text[:mid].rstrip() + "…") <= width:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo].rstrip() + "…"

