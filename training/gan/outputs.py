"""What a GAN run writes besides checkpoints: picture grids, CSV and JSON files, sample stacks.

Every file is written atomically (a temporary file in the same folder, then ``os.replace``),
so an interrupted run never leaves a half-written output.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from deepmine.inference.atomic import atomic_open, atomic_path
from deepmine.inference.errors import InputError

from ..csvrows import write_csv

__all__ = ["sample_grid", "save_samples", "write_csv", "write_json"]


def sample_grid(images: np.ndarray, path: str | os.PathLike, columns: int | None = None, scale: int = 2,
                gap: int = 2) -> Path:
    """Write a PNG grid of uint8 cutouts (N×C×H×W; 3 channels i, r, g shown as R, G, B,
    1 channel as grey), ``scale`` screen pixels per cutout pixel, atomically."""
    from PIL import Image

    a = np.asarray(images)
    if a.ndim != 4 or a.shape[0] == 0:
        raise InputError(f"sample grid: expected N×C×H×W cutouts, got shape {a.shape}")
    if a.dtype != np.uint8:
        from deepmine.inference.generate import to_uint8

        a = to_uint8(a)
    n, c, h, w = a.shape
    if c == 1:
        a = np.repeat(a, 3, axis=1)
    elif c != 3:
        a = a[:, :3] if c > 3 else np.concatenate([a, np.zeros((n, 3 - c, h, w), np.uint8)], 1)
    cols = columns or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    canvas = np.full((rows * (h + gap) + gap, cols * (w + gap) + gap, 3), 40, np.uint8)
    for i in range(n):
        r, q = divmod(i, cols)
        y, x = gap + r * (h + gap), gap + q * (w + gap)
        canvas[y : y + h, x : x + w] = a[i].transpose(1, 2, 0)
    img = Image.fromarray(canvas)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    p = Path(path)
    with atomic_path(p) as tmp:
        img.save(tmp, format="PNG")
    return p


def save_samples(path: Path, samples: np.ndarray) -> Path:
    """Write a stack of cutouts as ``.npy``, atomically."""
    with atomic_path(path) as tmp:
        np.save(tmp, samples)
    return path


def write_json(path: Path, data) -> None:
    """Write ``data`` as indented JSON (sorted keys), atomically."""
    with atomic_open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True, default=str)
        fh.write("\n")
