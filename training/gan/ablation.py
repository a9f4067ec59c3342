"""Does GAN augmentation help the classifier? Ranking performance with and without GAN samples.

:func:`augmentation_ablation` trains a classifier recipe once per seed and arm (real positives
alone; real positives plus GAN samples; optionally other extra positives) and scores every model
on one held-out set.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .outputs import write_json

__all__ = ["ABLATION_SETS", "augmentation_ablation"]

#: Classifier used by :func:`augmentation_ablation` unless told otherwise: a 6-block EZnet
#: (the gan-fast discriminator's table) trained by the EZnet recipe's loop for a short time.
ABLATION_SETS = {
    "model.table": [
        {"kernels": 12, "kernel": 5, "size": 32}, {"kernels": 12, "kernel": 3, "size": 16},
        {"kernels": 12, "kernel": 3, "size": 8, "repeat": 2}, {"kernels": 16, "kernel": 3, "size": 4},
        {"kernels": 16, "kernel": 1, "size": 1},
    ],
    "model.hidden": 32, "data.test_fraction": 0.1, "data.positives_per_epoch": 512, "data.batch_positives": 32,
    "optimizer.lr": 0.02, "schedule.milestones": [], "early_stop.patience": 0, "early_stop.restore_best": False,
    "epochs": 12,
}  # fmt: skip


def augmentation_ablation(positives, negatives, augmented, test_positives, test_negatives, out_dir, *,
                          recipe: str = "eznet", sets: dict | None = None, seeds=(0,), extra_arms: dict | None = None,
                          baseline: bool = True, device: str = "cpu",
                          log: Callable[[str], None] | None = None) -> dict:
    """Ranking performance of a classifier trained with and without GAN samples.

    Trains the classifier recipe (default: EZnet with :data:`ABLATION_SETS`) once per seed and
    arm on the same ``positives`` and ``negatives`` — arm ``"real"`` alone, arm ``"real+gan"``
    with ``augmented`` added to the training positives (the trainer's ``extra_positives``;
    its held-out split is drawn from ``positives`` only, identical in both arms) — and, for
    each ``extra_arms`` name → file, one more arm with that file added instead (e.g. more
    LensCrafter lenses: an upper bound); ``baseline=False`` skips arm ``"real"`` (when it was
    measured already with the same settings and seeds). Every model is scored on the held-out set
    ``test_positives`` vs ``test_negatives`` (RP = 2·AUC − 1, seed 4.6) in eval mode.

    Returns ``{"arms": {arm: {"rp": [per seed], "rp_mean", "rp_std"}}, "sizes": {...}}`` and
    writes it to ``out_dir/ablation.json``.
    """
    import torch

    from deepmine.inference.preprocess import prepare_batch
    from deepmine.inference.ranking import ranking_performance

    from ..data import open_cutouts
    from ..trainer import train

    say = log or (lambda m: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    arms = {"real": None} if baseline else {}
    arms.update({"real+gan": augmented, **(extra_arms or {})})
    tp, tn = open_cutouts(test_positives, "test positives"), open_cutouts(test_negatives, "test negatives")
    settings = dict(ABLATION_SETS if recipe == "eznet" and sets is None else (sets or {}))
    results: dict = {}
    for arm, extra in arms.items():
        rps = []
        for seed in seeds:
            arm_sets = dict(settings, seed=int(seed), **{"phase.main.extra_positives": extra is not None})
            t = time.time()
            res = train(recipe, positives, negatives, out / f"{arm.replace('+', '_')}_seed{seed}",
                        extra_positives=extra, device=device, sets=arm_sets)
            model = res.model.eval()
            spec = model.deepmine_config["preprocessing"]

            def logits(arr, model=model, spec=spec):
                parts = []
                with torch.no_grad():
                    for i in range(0, len(arr), 256):
                        x = torch.from_numpy(prepare_batch(np.asarray(arr[i:i + 256]), spec)).to(device)
                        parts.append(model.positive_logit(model(x)).cpu().numpy())
                return np.concatenate(parts)

            rp = float(ranking_performance(logits(tp), logits(tn)))
            rps.append(rp)
            say(f"ablation {arm} seed {seed}: held-out RP {rp:.4f} ({time.time() - t:.0f} s)")
        results[arm] = {"rp": rps, "rp_mean": float(np.mean(rps)), "rp_std": float(np.std(rps))}
    sizes = {"positives": int(open_cutouts(positives, "positives").shape[0]),
             "negatives": int(open_cutouts(negatives, "negatives").shape[0]),
             "test_positives": int(tp.shape[0]), "test_negatives": int(tn.shape[0])}
    for arm, extra in arms.items():
        if extra is not None:
            sizes[f"extra_{arm}"] = int(open_cutouts(extra, arm).shape[0])
    report = {"arms": results, "sizes": sizes, "seeds": list(seeds), "recipe": recipe, "sets": settings}
    write_json(out / "ablation.json", report)
    return report
