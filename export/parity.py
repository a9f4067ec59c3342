"""Parity checks: the exported graph must compute what the torch model computes.

The check batch is, in order of preference:

1. cutouts the caller gives (the survey's own data; ``check_cutouts=`` / ``--cutouts``);
2. LensCrafter cutouts (lenses and non-lens scenes, labelled) when ``deepmine.lenscrafter``
   provides ``craft_lenses`` and the model's input fits them;
3. synthetic scenes made here (labelled): Gaussian galaxies plus noise, half of them with a
   lensing ring around the central galaxy.

Raw cutouts go through :func:`deepmine.inference.preprocess.prepare_batch` with the model's own
preprocessing metadata, exactly as a scan would feed them.

fp32 and fp16 graphs are compared on probabilities (max absolute difference); an int8 graph
cannot match to 1e-5, so it is judged on ranking: the change of the ranking performance
(RP = 2·AUC − 1) of the int8 graph against the fp32 graph on the labelled batch. Without labels
(a caller's cutouts), the labels are the fp32 graph's own decisions (top half = positive), so
the fp32 RP is 1 and the change measures how much of the fp32 ranking int8 keeps.
"""
from __future__ import annotations

import numpy as np

from deepmine.inference.errors import InputError
from deepmine.inference.preprocess import prepare_batch

#: Default tolerances (max |Δ probability|) by precision; int8 uses :data:`RP_TOLERANCE`.
TOLERANCES = {"fp32": 1e-5, "fp16": 5e-3}
#: Largest change of ranking performance accepted for an int8 model.
RP_TOLERANCE = 0.01


def synthetic_cutouts(n: int, shape, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` labelled synthetic scenes of shape C×H×W (float32 fluxes) and their labels.

    Each scene: a central elliptical Gaussian galaxy, 0-3 field galaxies, sky noise; positives
    (every other scene) add a thin ring of radius 20-35 % of the cutout around the centre.
    """
    c, h, w = (int(v) for v in shape)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.empty((n, c, h, w), dtype=np.float32)
    labels = (np.arange(n) % 2).astype(np.int8)
    for i in range(n):
        img = np.zeros((h, w), dtype=np.float32)
        cx, cy = w / 2 + rng.normal(0, 1), h / 2 + rng.normal(0, 1)
        for k in range(1 + rng.integers(0, 4)):
            gx, gy = (cx, cy) if k == 0 else (rng.uniform(0, w), rng.uniform(0, h))
            sig = rng.uniform(0.03, 0.1) * min(h, w)
            q = rng.uniform(0.5, 1.0)
            img += rng.uniform(0.5, 2.0) * np.exp(-0.5 * (((xx - gx) / sig) ** 2 + ((yy - gy) / (q * sig)) ** 2))
        if labels[i]:
            r = rng.uniform(0.2, 0.35) * min(h, w)
            rr = np.hypot(xx - cx, yy - cy)
            img += rng.uniform(0.3, 1.0) * np.exp(-0.5 * ((rr - r) / 1.2) ** 2)
        for j in range(c):
            out[i, j] = img * rng.uniform(0.5, 1.5) + rng.normal(0, 0.05, size=(h, w))
    return out, labels


#: LensCrafter's channel of each band (its cutouts are i, r, g).
LENSCRAFTER_CHANNELS = {"i": 0, "r": 1, "g": 2}


def lenscrafter_cutouts(n: int, shape, bands, pixel_scale: float, seed: int = 0):
    """``n`` labelled LensCrafter cutouts (lenses, then non-lens scenes) as raw float32 counts
    of shape C×H×W with the model's bands (any of i, r, g) and pixel scale; None when
    LensCrafter is not installed or cannot make them (other bands, non-square cutouts)."""
    try:
        from deepmine.lenscrafter import craft_lenses, craft_negatives, sample_lens_params
    except ImportError:
        return None
    c, h, w = (int(v) for v in shape)
    if h != w or len(bands) != c or any(b not in LENSCRAFTER_CHANNELS for b in bands):
        return None
    channels = [LENSCRAFTER_CHANNELS[b] for b in bands]
    n_pos = n - n // 2
    opts = {"seed": seed, "size": h, "pixel_scale": float(pixel_scale), "output": "float32"}
    try:
        neg, _ = craft_negatives(n // 2, **opts)
        pos = craft_lenses(sample_lens_params(n_pos, seed=seed), **opts)
    except (InputError, ValueError):  # a pixel scale or size LensCrafter refuses or cannot fill
        return None
    x = np.concatenate([pos[:, channels], neg[:, channels]]).astype(np.float32, copy=False)
    labels = np.concatenate([np.ones(n_pos, np.int8), np.zeros(n // 2, np.int8)])
    return x, labels


def check_batch(metadata, n: int = 64, cutouts=None, labels=None, seed: int = 0) -> dict:
    """The model inputs to check on: ``{"inputs", "labels", "source"}``.

    ``inputs`` are float32 model inputs (preprocessed); ``labels`` 0/1 or None.
    """
    if metadata.task == "generator":
        rng = np.random.default_rng(seed)
        latent = rng.standard_normal((n, int(metadata.input_shape[0]))).astype(np.float32)
        return {"inputs": latent, "labels": None, "source": f"{n} standard-normal latent vectors"}
    shape = tuple(int(v) for v in metadata.input_shape)
    if cutouts is not None:
        x = np.asarray(cutouts)
        if x.ndim == 3 and shape[0] == 1:
            x = x[:, None]
        if x.ndim != 4 or x.shape[1:] != shape:
            raise InputError(f"check cutouts: expected N×{'×'.join(map(str, shape))} images, got shape {x.shape}")
        if labels is not None and len(labels) != len(x):
            raise InputError(f"check labels: {len(labels)} labels for {len(x)} cutouts")
        source = f"{len(x)} given cutouts"
    else:
        made = lenscrafter_cutouts(n, shape, metadata.bands, metadata.pixel_scale, seed)
        if made is not None:
            x, labels = made
            source = f"{len(x)} LensCrafter cutouts (lenses and non-lens scenes)"
        else:
            x, labels = synthetic_cutouts(n, shape, seed)
            source = f"{len(x)} synthetic scenes (Gaussian galaxies, half with rings)"
    return {"inputs": prepare_batch(x, metadata.preprocessing), "labels": labels, "source": source}


def torch_outputs(wrapper, inputs: np.ndarray, batch_size: int = 64) -> list[np.ndarray]:
    """Outputs of the torch wrapper (eval mode, no grad), float64 numpy arrays."""
    import torch

    parts = []
    with torch.no_grad():
        for i in range(0, len(inputs), batch_size):
            out = wrapper(torch.from_numpy(np.ascontiguousarray(inputs[i : i + batch_size])))
            out = out if isinstance(out, tuple) else (out,)
            parts.append([o.detach().cpu().numpy().astype(np.float64) for o in out])
    return [np.concatenate(p) for p in zip(*parts)]


def onnx_session(model_bytes: bytes):
    """A CPU onnxruntime session at ``ORT_ENABLE_ALL``, as a scanner creates it."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])


def onnx_outputs(session, input_name: str, inputs: np.ndarray, batch_size: int = 64) -> list[np.ndarray]:
    parts = []
    for i in range(0, len(inputs), batch_size):
        out = session.run(None, {input_name: np.ascontiguousarray(inputs[i : i + batch_size])})
        parts.append([o.astype(np.float64) for o in out])
    return [np.concatenate(p) for p in zip(*parts)]


def compare(task: str, reference: list[np.ndarray], candidate: list[np.ndarray], atol: float,
            rounding: float = 0.0) -> dict:
    """Max absolute differences of the graph outputs; ``passed`` when within ``atol``
    (plus twice ``rounding``, torch's own float32 error — see :func:`float32_rounding`).

    Classifiers are judged on ``probability`` (the logit difference is reported too);
    generators on ``image``.
    """
    if task == "generator":
        d = float(np.max(np.abs(reference[0] - candidate[0])))
        return {"max_abs_image": d, "atol": atol, "passed": bool(np.isfinite(d) and d <= atol)}
    dl = float(np.max(np.abs(reference[0] - candidate[0])))
    dp = float(np.max(np.abs(reference[1] - candidate[1])))
    limit = atol + 2.0 * rounding
    ok = bool(np.isfinite(dp) and dp <= limit and np.all(np.isfinite(candidate[1])))
    out = {"max_abs_probability": dp, "max_abs_logit": dl, "atol": atol, "passed": ok}
    if rounding:
        out.update(float32_rounding_probability=rounding, tolerance=limit)
    return out


def float32_rounding(wrapper, inputs: np.ndarray, batch_size: int = 64) -> float:
    """Max |probability| error of the torch model itself in float32 against the same model run
    in float64 on the same inputs.

    A deep, confident classifier (logits of ±10 after many tanh/conv blocks) can differ from
    its own float64 evaluation by more than the fixed 1e-5; an ONNX graph that is exact up to
    float32 rounding then differs from torch by about as much. The parity check allows twice
    this error on top of ``atol``, so it still catches any real disagreement (a wrong op, a bad
    fold) while accepting float32 arithmetic done in another order.
    """
    import copy

    import torch

    model64 = copy.deepcopy(wrapper).double().eval()
    worst = 0.0
    with torch.no_grad():
        for i in range(0, len(inputs), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(inputs[i : i + batch_size], dtype=np.float32))
            p32 = wrapper(x)[1].double()
            p64 = model64(x.double())[1]
            worst = max(worst, float((p32 - p64).abs().max()))
    return worst


def rp_change(fp32_logits: np.ndarray, int8_logits: np.ndarray, labels, tolerance: float = RP_TOLERANCE) -> dict:
    """Ranking performance of the int8 and fp32 graphs on the labelled check batch."""
    from deepmine.inference.ranking import ranking_performance

    if labels is None:
        labels = (fp32_logits > np.median(fp32_logits)).astype(np.int8)
        kind = "fp32 decisions (top half positive)"
    else:
        kind = "true labels"
    labels = np.asarray(labels).astype(bool)
    if labels.all() or not labels.any():
        raise InputError("int8 check: the check batch needs both positives and negatives")
    rp32 = ranking_performance(fp32_logits[labels], fp32_logits[~labels])
    rp8 = ranking_performance(int8_logits[labels], int8_logits[~labels])
    change = float(rp8 - rp32)
    return {
        "rp_fp32": float(rp32), "rp_int8": float(rp8), "rp_change": change, "rp_tolerance": tolerance,
        "labels": kind, "passed": bool(abs(change) <= tolerance),
    }  # fmt: skip
