"""The one implementation of image preprocessing, shared by training, export checks and scans.

Two kinds exist, named in a model's metadata (``preprocessing.kind``):

``"percentile"`` (EZnet, seed 4.1)
    Per-image, per-band percentile normalisation: clip each band at its ``low`` and ``high``
    percentiles (0.5 % and 99.5 % by default), scale to 0..255 and store as uint8. Model input
    is that uint8 image divided by 255 (float32 in 0..1). Cutouts already stored as uint8 are
    taken to be normalised (the HSC convention); float cutouts are normalised here first.

``"histogram_match"`` (LensFlow, seed 2.1)
    Each single-band image is mapped so that its pixel histogram matches a template histogram.
    The template is stored as ``K`` increasing quantiles (values in 0..1) of the template
    pixel distribution; a pixel of empirical CDF ``u`` (mid-rank convention, ties broken by
    position) becomes the template quantile at ``u`` (linear interpolation). Output in 0..1.

All functions take N×C×H×W arrays (a single C×H×W image is accepted too) and return arrays.
NaN and inf pixels are ignored when computing percentiles and become 0 on output.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .errors import InputError

DEFAULT_LOW = 0.5
DEFAULT_HIGH = 99.5


def _as_nchw(x: np.ndarray, name: str = "images") -> tuple[np.ndarray, bool]:
    x = np.asarray(x)
    if x.ndim == 3:
        return x[None], True
    if x.ndim != 4:
        raise InputError(f"{name}: expected an N×C×H×W (or C×H×W) array, got shape {x.shape}")
    return x, False


def percentile_normalization(images, low: float = DEFAULT_LOW, high: float = DEFAULT_HIGH) -> np.ndarray:
    """Per-image, per-band percentile normalisation to uint8 (seed 4.1).

    Parameters
    ----------
    images : array, N×C×H×W or C×H×W, any real dtype
        Fluxes (arbitrary units). NaN/inf pixels are ignored and set to 0.
    low, high : float
        Percentiles (0..100) clipped at the faint and bright ends; defaults 0.5 and 99.5.

    Returns
    -------
    uint8 array of the input's shape, 0..255. A constant band becomes all zeros.

    Notes
    -----
    The percentiles are numpy's ``"linear"`` ones of the finite pixels, found by selection,
    not by sorting (:mod:`.preprocess_kernels`); a pixel ``v`` becomes
    ``floor(255·clip((v − lo)/(hi − lo), 0, 1) + 0.5)`` in float64. Models are trained on these
    bytes: tests/inference/test_preprocess_fast.py holds them equal to the sort-based definition.
    """
    if not (0.0 <= low < high <= 100.0):
        raise InputError(f"percentiles must satisfy 0 <= low < high <= 100, got low={low}, high={high}")
    x, single = _as_nchw(images)
    if not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
        raise InputError(f"images: expected real numbers, got dtype {x.dtype}")
    x = np.ascontiguousarray(x, dtype=np.float32 if x.dtype.itemsize <= 4 else np.float64)
    out = np.empty(x.shape, dtype=np.uint8)
    from .preprocess_kernels import percentile_batch  # Numba loads on first use, not at import

    percentile_batch(x, float(low), float(high), out)
    return out[0] if single else out


def histogram_template(images, n_quantiles: int = 256) -> np.ndarray:
    """Build a histogram-matching template: ``n_quantiles`` quantiles of the pixels in 0..1.

    ``images`` are scaled by their global min/max first (uint8 images by 255).
    """
    x = np.asarray(images)
    if x.size == 0:
        raise InputError("histogram_template: no images given")
    if x.dtype == np.uint8:
        v = x.astype(np.float64).ravel() / 255.0
    else:
        v = x.astype(np.float64).ravel()
        v = v[np.isfinite(v)]
        if v.size == 0:
            raise InputError("histogram_template: every pixel is NaN or inf")
        lo, hi = v.min(), v.max()
        v = (v - lo) / (hi - lo) if hi > lo else np.zeros_like(v)
    return np.quantile(v, np.linspace(0.0, 1.0, n_quantiles)).astype(np.float64)


def histogram_match(images, template) -> np.ndarray:
    """Match each single-band image's histogram to ``template`` (seed 2.1); float32 in 0..1."""
    x, single = _as_nchw(images)
    t = np.asarray(template, dtype=np.float64)
    if t.ndim != 1 or t.size < 2 or not np.all(np.isfinite(t)) or np.any(np.diff(t) < 0):
        raise InputError("histogram template: expected an increasing 1-D array of >= 2 finite quantiles")
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty(x.shape, dtype=np.float32)
    from .preprocess_kernels import histmatch_batch

    histmatch_batch(x, t, out)
    return out[0] if single else out


def prepare_batch(images, spec: Mapping[str, Any]) -> np.ndarray:
    """Turn stored cutouts into a model's float32 input, as the model's metadata says.

    Parameters
    ----------
    images : N×C×H×W array, uint8 (already normalised) or float (raw fluxes)
    spec : mapping
        The model's ``preprocessing`` metadata: ``{"kind": "percentile", "low": .., "high": ..}``
        or ``{"kind": "histogram_match", "template": [...]}`` or ``{"kind": "none"}``.

    Returns
    -------
    float32 N×C×H×W array in 0..1 (``"none"``: the input as float32).
    """
    kind = spec.get("kind", "percentile")
    x, _ = _as_nchw(images)
    if kind == "percentile":
        if x.dtype != np.uint8:
            x = percentile_normalization(x, spec.get("low", DEFAULT_LOW), spec.get("high", DEFAULT_HIGH))
        return _uint8_to_unit(x)
    if kind == "histogram_match":
        return histogram_match(x, spec["template"])
    if kind == "none":
        return np.ascontiguousarray(x, dtype=np.float32)
    raise InputError(f"unknown preprocessing kind {kind!r}; expected 'percentile', 'histogram_match' or 'none'")


def _uint8_to_unit(x: np.ndarray) -> np.ndarray:
    """uint8 → float32 / 255 (one pass, no float64 intermediate)."""
    return np.divide(x, np.float32(255.0), dtype=np.float32)
