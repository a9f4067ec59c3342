"""Scan-rate measurement of an exported model (what ``deepmine bench`` reports).

Two figures, both in cutouts per second, measured on the same model, batch size and threads:

``model_only``
    bare ``InferenceSession.run`` on preprocessed float32 batches already in memory — the
    ceiling set by the model and the provider;
``end_to_end``
    :meth:`Model.predict` from uint8 cutouts (shape check, preprocessing, padding, run) — what
    a scan of in-memory data achieves before file reading.

Warm-up runs (session initialisation, cuDNN algorithm search on CUDA) are excluded.
"""
from __future__ import annotations

import time

import numpy as np

from .errors import InputError


def synthetic_cutouts(shape: tuple[int, int, int], n: int, seed: int = 0) -> np.ndarray:
    """``n`` uint8 cutouts of C×H×W: smooth sky noise plus a bright blob, HSC-like statistics."""
    rng = np.random.default_rng(seed)
    c, h, w = shape
    yy, xx = np.mgrid[:h, :w]
    blob = np.exp(-((xx - w / 2) ** 2 + (yy - h / 2) ** 2) / (2 * (0.12 * w) ** 2))
    x = 40 + 12 * rng.standard_normal((n, c, h, w)) + 200 * blob * rng.uniform(0.2, 1.0, (n, c, 1, 1))
    return np.clip(x, 0, 255).astype(np.uint8)


def _rate(fn, n: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return n / best


def measure_throughput(model, n: int = 2048, batch_size: int = 256, repeats: int = 3, seed: int = 0) -> dict:
    """Measure ``model_only`` and ``end_to_end`` cutouts/s of a loaded :class:`~.model.Model`.

    Returns a dict with both rates, their ratio, the provider actually used, n, batch size and
    threads.
    """
    if n < 1 or repeats < 1:
        raise InputError(f"--n and --repeats must be positive, got n={n}, repeats={repeats}")
    b = model.batch_size(batch_size)
    cutouts = synthetic_cutouts(model.input_shape, n, seed)
    prepared = model.prepare(cutouts)
    model.run_prepared(prepared[: min(n, b)], b)  # warm-up outside the timings
    model_only = _rate(lambda: model.run_prepared(prepared, b), n, repeats)
    end_to_end = _rate(lambda: model.predict(cutouts, b), n, repeats)
    return {
        "model": str(model.path),
        "architecture": model.metadata.architecture,
        "precision": model.metadata.precision,
        "provider": model.provider,
        "threads": model.threads,
        "batch_size": b,
        "n": n,
        "model_only_per_s": model_only,
        "end_to_end_per_s": end_to_end,
        "end_to_end_over_model_only": end_to_end / model_only,
    }
