"""``deepmine demo``: a mock survey with hidden lenses, scanned and ranked by the bundled model.

Steps (all torch-free, everything written to one folder):

1. Craft a mock survey with LensCrafter: ``n_negatives`` non-lens scenes of every kind
   (ellipticals, discs, spirals, rings, field galaxies, stars, blends, artefacts) with
   ``n_lenses`` lenses hidden among them in random order (``survey.npy``, truth in
   ``truth.ecsv``). Hidden lenses are drawn from LensCrafter's priors with arcs bright enough to
   be found by eye (source m_g 22–24, θ_E 1–2.5″) and moved off the cutout centre as a whole by
   N(0, 0.1″) per axis (:data:`DEMO_OFFSET_SIGMA`), as catalogue positions are — the demo shows
   the mining loop, the selection function shows where it stops working.
2. Scan it with the bundled model (:func:`deepmine.inference.scan.scanner.scan`): catalogue (FITS,
   ECSV), the top 0.5 % (ordinality > 0.995) and their mosaic.
3. Rank: ranking performance of the hidden lenses against the non-lens scenes and how many
   lenses rank in the survey's top 0.5 % (ordinality against the non-lens scenes > 0.995: a
   lens counts when fewer than 0.5 % of the non-lens scenes score above it, so hidden lenses
   do not crowd each other out of the cut); TRC plot.
4. A small selection function (θ_E × arc magnitude) with the survey's non-lens scores as the
   reference pool: completeness curves.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from deepmine.inference.atomic import atomic_open, atomic_path
from deepmine.inference.errors import InputError

DEMO_LENS_PRIORS = {"m_g_src": (22.0, 24.0), "theta_e": (1.0, 2.5)}
#: Whole-lens offset of the hidden lenses (arcsec per axis): real catalogue centroids are not
#: exact (issue 17); 0.1″ is 0.6 pixel.
DEMO_OFFSET_SIGMA = 0.1


def craft_mock_survey(out_dir: Path, n_negatives: int, n_lenses: int, seed: int) -> tuple[Path, np.ndarray]:
    """Write ``survey.npy`` (uint8 N×3×64×64) and ``truth.ecsv``; return the path and is-lens flags."""
    from astropy.table import Table

    from . import craft_lenses, craft_negatives, offset_lenses, sample_lens_params

    neg, neg_table = craft_negatives(n_negatives, seed=seed)
    params = offset_lenses(sample_lens_params(n_lenses, seed=seed + 1, **DEMO_LENS_PRIORS), DEMO_OFFSET_SIGMA,
                           seed=seed + 2)
    lenses = craft_lenses(params, seed=seed + 1, field=1.0)
    images = np.concatenate([neg, lenses])
    is_lens = np.r_[np.zeros(n_negatives, bool), np.ones(n_lenses, bool)]
    kind = np.r_[np.asarray(neg_table["kind"]).astype(str), np.full(n_lenses, "lens")]
    order = np.random.default_rng(seed).permutation(images.shape[0])
    survey = out_dir / "survey.npy"
    with atomic_path(survey) as tmp:
        np.save(tmp, images[order])
    truth = Table({"index": np.arange(order.size), "is_lens": is_lens[order], "kind": kind[order]})
    with atomic_path(out_dir / "truth.ecsv") as tmp:
        truth.write(tmp, format="ascii.ecsv", overwrite=True)
    return survey, is_lens[order]


def small_selection(model_path, pool_scores: np.ndarray, out_dir: Path, seed: int, per_cell: int = 6):
    """θ_E × arc-magnitude selection function against the survey's own non-lens pool."""
    from deepmine.inference.ranking.pool import ReferencePool
    from deepmine.inference.scan.workdir import clear_parts

    from .selection.grid import SelectionGrid, make_axis
    from .selection.measure import selection_function
    from .selection.plot import plot_completeness

    grid = SelectionGrid(
        axes=[make_axis("theta_e", 0.3, 3.0, 6, "log"), make_axis("m_arc", 21.0, 26.0, 5)],
        others="prior", per_cell=per_cell,
    )
    pool = ReferencePool.from_scores(pool_scores, source="demo survey non-lens scenes")
    # the demo owns its folder: an earlier run's parts are replaced, and removed once merged
    sel = selection_function(model_path, grid, pool=pool, seed=seed, workdir=out_dir / "selection.parts",
                             out=out_dir / "selection.fits", threads=None, overwrite=True)
    clear_parts(out_dir / "selection.parts")
    plot = plot_completeness(sel, out_dir / "selection.png",
                             title="Demo selection function (ordinality > 0.995 vs the survey's non-lenses)")
    return sel, plot


def run_demo(out_dir, *, n_negatives: int = 3000, n_lenses: int = 40, seed: int = 0, model=None,
             threads: int | None = None, selection: bool = True, progress=None) -> dict:
    """Run the whole demo into ``out_dir``; return the figures and output paths (JSON-ready).

    ``progress`` is a :class:`deepmine.inference.progress.Progress` (or None) for the scan."""
    from deepmine.inference.model import resolve_model_path
    from deepmine.inference.ranking import ordinality_against, ranking_performance, tracer_recovery_curve
    from deepmine.inference.ranking.trcplot import plot_trc
    from deepmine.inference.scan.scanner import scan

    if n_negatives < 200 or n_lenses < 1:
        raise InputError(f"--negatives must be >= 200 and --lenses >= 1, got {n_negatives} and {n_lenses}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # the demo owns its folder: a rerun replaces its own files (and says which)
    earlier = {p.name for p in out.iterdir() if p.is_file()}
    model_path = resolve_model_path(model)
    t0 = time.perf_counter()
    survey, is_lens = craft_mock_survey(out, n_negatives, n_lenses, seed)
    t_craft = time.perf_counter() - t0
    cat_path = out / "catalog.fits"
    for stale in (out / "catalog.parts",):
        if stale.exists():
            import shutil

            shutil.rmtree(stale)
    res = scan([survey], model_path, cat_path, threads=threads, top=0.005, mosaic=out / "top_candidates.png",
               progress=progress, formats=["fits", "ecsv"], overwrite=True)
    table = res.table
    idx = np.asarray(table["index"])
    logit = np.asarray(table["logit"], dtype=np.float64)
    lens_rows = is_lens[idx]
    rp = ranking_performance(logit[lens_rows], logit[~lens_rows])
    in_top = int(np.sum(ordinality_against(logit[lens_rows], logit[~lens_rows]) > 0.995))
    trc = tracer_recovery_curve(logit[lens_rows], logit[~lens_rows])
    plot_trc(trc, out / "trc.png", rp=rp, n_negatives=int((~lens_rows).sum()),
             title="Demo: hidden lenses ranked against the mock survey's non-lens scenes")
    result = {
        "out": str(out), "model": str(model_path), "provider": res.provider,
        "n_objects": int(res.n_objects), "n_lenses": int(n_lenses), "ranking_performance": rp,
        "lenses_in_top_0.5%": in_top, "top_0.5%_size": int(res.n_top),
        "catalog": str(res.catalog), "top": str(res.top), "mosaic": str(res.mosaic), "trc": str(out / "trc.png"),
        "craft_s": t_craft, "scan_s": res.seconds, "scan_rate_per_s": res.rate,
    }
    if selection:
        t1 = time.perf_counter()
        sel, plot = small_selection(model_path, logit[~lens_rows], out, seed)
        result["selection"] = str(out / "selection.fits")
        result["selection_plot"] = str(plot)
        result["selection_s"] = time.perf_counter() - t1
    result["replaced"] = sorted(earlier & {"demo.json", *(p.name for p in out.iterdir() if p.is_file())})
    with atomic_open(out / "demo.json", "w") as fh:
        json.dump(result, fh, indent=2, default=str)
    result["total_s"] = time.perf_counter() - t0
    return result
