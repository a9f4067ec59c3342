"""``deepmine rank``: ranking performance and the tracer recovery curve of a scan."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from .common import existing_file, out_console


def rank(
    scores: Path = typer.Argument(
        ..., help="Scores of the negative pool: .npy (1-D), a catalogue (FITS/ECSV/Parquet, or a Parquet dataset "
        "folder, read in batches) or a reference pool written by --save-pool.", show_default=False,
    ),
    tracers: Path = typer.Option(
        ..., "--tracers", "-t", help="Scores of the tracers (known lenses), same formats.", show_default=False
    ),
    column: Optional[str] = typer.Option(
        None, "--column", "-c", help="Catalogue column of both files (default: logit, score, probability)."
    ),
    tracer_column: Optional[str] = typer.Option(None, "--tracer-column", help="Column of the tracer file, if different."),
    cut: float = typer.Option(0.995, "--cut", min=0.0, max=1.0, help="Inspection cut on ordinality."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write the TRC figure (PNG/PDF/SVG) here."),
    save_pool: Optional[Path] = typer.Option(
        None, "--save-pool", help="Also store the negatives as a sorted reference pool (FITS) here."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON on stdout."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --plot / --save-pool file."),
) -> None:
    """Rank tracers against a pool of negatives: print the ranking performance (RP = 2·AUC − 1)
    and the fraction of tracers above the inspection cut; optionally plot the TRC.

    Tracers are ranked against the pool, not inserted into it (seed 2.4, 4.6). Logits are
    preferred to probabilities, which saturate at 1.0 in float32 and tie the top candidates.
    """
    from ..atomic import check_outputs
    from ..errors import InputError
    from ..formats import check_plot_path, is_fits
    from ..ranking.kernels import fraction_above, ranking_performance, tracer_recovery_curve
    from ..ranking.pool import POOL_MARKER, ReferencePool
    from ..ranking.scorefile import checked_scores, scoring_id_of
    from ..ranking.stream import is_parquet_source, sorted_scores_from_parquet, tracer_counts

    streamed = is_parquet_source(scores)
    if not streamed:
        existing_file(scores, "scores file")
    if not tracers.is_dir():  # a Parquet dataset folder of tracers is read like a file
        existing_file(tracers, "tracer file")
    if plot is not None:
        check_plot_path(plot)
    check_outputs([save_pool, plot], [scores, tracers], overwrite)
    neg_id, tr_id = scoring_id_of(scores), scoring_id_of(tracers)
    if neg_id and tr_id and neg_id != tr_id:
        raise InputError(f"{tracers}: the tracers were scored by another model ({tr_id}) than the negatives in "
                         f"{scores} ({neg_id}); score both with the same model")
    negatives = None
    if streamed:  # a Parquet catalogue of any size: counted a batch at a time
        tr = checked_scores(tracers, tracer_column or column)
        counted = tracer_counts(tr, scores, column)
        _report(counted.ranking_performance(), counted.fraction_above(cut), cut, tr.shape[0], counted.n_negatives,
                as_json, plot=plot, curve=counted.curve, tracers=tracers, scores=scores,
                pool=(lambda: ReferencePool(*sorted_scores_from_parquet(scores, column))) if save_pool is not None else None,
                save_pool=save_pool)
        return
    if is_fits(scores):
        from astropy.io import fits

        try:
            is_pool = fits.getheader(scores).get("DMPOOL") == POOL_MARKER
        except Exception:  # noqa: BLE001 - not a FITS image; read_scores reports it properly
            is_pool = False
        if is_pool:
            negatives = ReferencePool.load(scores).scores
    if negatives is None:
        negatives = checked_scores(scores, column)
    tr = checked_scores(tracers, tracer_column or column)
    extra = {"scoring_id": neg_id} if neg_id else {}
    _report(ranking_performance(tr, negatives), fraction_above(tr, negatives, cut), cut, tr.shape[0],
            negatives.shape[0], as_json, plot=plot,
            curve=lambda: tracer_recovery_curve(tr, negatives), tracers=tracers, scores=scores,
            pool=lambda: ReferencePool.from_scores(negatives, source=str(scores), column=column or "auto", **extra),
            save_pool=save_pool)


def _report(rp, frac, cut, n_tr, n_neg, as_json, *, plot, curve, tracers, scores, pool, save_pool) -> None:
    """Write the pool and the plot, print the figures (text or JSON)."""
    result = {
        "ranking_performance": rp,
        "auc": (rp + 1) / 2,
        "fraction_above_cut": frac,
        "cut": cut,
        "n_tracers": int(n_tr),
        "n_negatives": int(n_neg),
    }
    if save_pool is not None:
        pool().save(save_pool)
        result["pool"] = str(save_pool)
    if plot is not None:
        from ..ranking.trcplot import plot_trc

        plot_trc(curve(), plot, rp=rp, cut=cut, n_negatives=int(n_neg),
                 title=f"Tracer recovery curve: {tracers.name} vs {scores.name}")
        result["plot"] = str(plot)
    if as_json:
        print(json.dumps(result))
        return
    out_console.print(f"ranking performance  {rp:.6f}   (AUC {result['auc']:.6f})")
    out_console.print(
        f"tracers above {cut:g}   {100 * frac:.2f} %   ({round(frac * n_tr)} of {n_tr}; "
        f"{n_neg:,} negatives)"
    )
    for key in ("pool", "plot"):
        if key in result:
            out_console.print(f"wrote {key:<5}           {result[key]}")


def register(app: typer.Typer) -> None:
    app.command("rank")(rank)
