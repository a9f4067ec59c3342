"""Scan-rate measurement of an exported model (what ``deepmine bench`` reports).

Three figures, all in cutouts per second, measured on the same model, batch size and threads:

``session``
    the session alone with its input already where it runs: on CUDA an input ``OrtValue`` in
    device memory and outputs kept there (IOBinding), no host copies — the bare GPU ceiling;
    on the CPU the same as ``model_only``;
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


def _cutouts_for(model, n: int, seed: int = 0) -> np.ndarray:
    """What a scan feeds ``model``: uint8 cutouts, or float32 fluxes for a ``--graph-input flux`` graph."""
    x = synthetic_cutouts(model.input_shape, n, seed)
    return x.astype(np.float32) if model.graph_input == "flux" else x


def _rate(fn, n: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return n / best


def session_rate(model, batch_size: int = 256, seconds: float = 1.0, seed: int = 0) -> float:
    """Cutouts/s of ``model``'s session alone, its input resident where it runs (see module doc).

    Runs for at least ``seconds`` (and 3 runs) after 3 warm-up runs.
    """
    import onnxruntime as ort

    b = model.batch_size(batch_size)
    x = model.prepare(_cutouts_for(model, b, seed))
    if model.provider == "CUDAExecutionProvider":
        value = ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0)
        io = model.session.io_binding()
        io.bind_ortvalue_input(model.input_name, value)
        for name in model.output_names:
            io.bind_output(name, "cuda", 0)

        def once():
            model.session.run_with_iobinding(io)
    else:
        def once():
            model.session.run(model.output_names, {model.input_name: x})
    for _ in range(3):
        once()
    runs, t0 = 0, time.perf_counter()
    while runs < 3 or time.perf_counter() - t0 < seconds:
        once()
        runs += 1
    return b * runs / (time.perf_counter() - t0)


def measure_throughput(model, n: int = 2048, batch_size: int = 256, repeats: int = 3, seed: int = 0) -> dict:
    """Measure ``session``, ``model_only`` and ``end_to_end`` cutouts/s of a loaded :class:`~.model.Model`.

    Returns a dict with both rates, their ratio, the provider actually used, n, batch size and
    threads.
    """
    if n < 1 or repeats < 1:
        raise InputError(f"--n and --repeats must be positive, got n={n}, repeats={repeats}")
    b = model.batch_size(batch_size)
    cutouts = _cutouts_for(model, n, seed)
    prepared = model.prepare(cutouts)
    model.run_prepared(prepared[: min(n, b)], b)  # warm-up outside the timings
    session = session_rate(model, b, seconds=0.5)
    model_only = _rate(lambda: model.run_prepared(prepared, b), n, repeats)
    end_to_end = _rate(lambda: model.predict(cutouts, b), n, repeats)
    return {
        "model": str(model.path),
        "architecture": model.metadata.architecture,
        "precision": model.metadata.precision,
        "graph_input": model.graph_input,
        "provider": model.provider,
        "threads": model.threads,
        "batch_size": b,
        "n": n,
        "session_per_s": session,
        "model_only_per_s": model_only,
        "end_to_end_per_s": end_to_end,
        "end_to_end_over_model_only": end_to_end / model_only,
    }
