"""``deepmine selection``: the selection function of a model over a grid of lens parameters."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import typer

from deepmine.inference.cli.cluster_options import CLUSTER_HELP, CLUSTER_OPT_HELP, WORKERS_HELP, cli_cluster
from deepmine.inference.cli.common import err_console, existing_file, out_console, task
from deepmine.inference.errors import InputError


def selection(
    out: Path = typer.Option(..., "--out", "-o", help="Output table, FITS with an ECSV copy beside it: a table suffix (.fits, .ecsv, .csv, ...) is replaced (sel.csv → sel.fits, sel.ecsv), other names get .fits and .ecsv appended; a folder is refused.",
                             show_default=False),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Exported classifier (.onnx); default: the bundled model."),
    grid: Optional[Path] = typer.Option(
        None, "--grid", "-g", help="Grid file (.toml or .ecsv) naming parameters, ranges and bins; default: the six "
        "parameters of Figure 3.3 (see --dry-run).",
    ),
    plot: Optional[Path] = typer.Option(
        None, "--plot", help="Corner plot of all 2-D marginal cuts (PNG/PDF/SVG); the 1-D completeness curves vs "
        "θ_E and arc magnitude go beside it as STEM_completeness.EXT.",
    ),
    per_cell: Optional[int] = typer.Option(None, "--per-cell", help="Lenses per cell (default: the grid file's per_cell, else 8; 4 on the default grid)."),
    reference: Optional[Path] = typer.Option(
        None, "--reference", help="Stored reference pool (FITS) of negatives scored with this model.",
    ),
    negatives: Optional[Path] = typer.Option(
        None, "--negatives", help="Negative cutouts (.npy, FITS cube, folder of FITS cutouts) to score into the pool.",
    ),
    pool_size: int = typer.Option(20000, "--pool-size", help="LensCrafter negatives crafted for the pool when "
                                  "neither --reference nor --negatives is given."),
    save_pool: Optional[Path] = typer.Option(None, "--save-pool", help="Store the scored pool here (default: in the work folder)."),
    cut: float = typer.Option(0.995, "--cut", help="Inspection cut: detected = ordinality against the pool > cut."),
    seed: int = typer.Option(0, "--seed", help="Master seed (lenses and crafted negatives)."),
    resume: bool = typer.Option(False, "--resume", help="Keep the cells finished by an interrupted run with the same settings (a different model, pool or settings is refused)."),
    workdir: Optional[Path] = typer.Option(None, "--workdir", help="Folder of part files and the crafted pool (default: OUT.parts beside --out, e.g. sel.parts)."),
    part_lenses: int = typer.Option(4096, "--part-lenses", help="About this many lenses per part file (unit of resume)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda (auto: CUDA when onnxruntime-gpu loads it)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="onnxruntime threads (default: one per core)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Scan batch size (default 256)."),
    keep_parts: bool = typer.Option(False, "--keep-parts", help="Keep the part files after a successful run."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the grid and its size, write nothing."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs (table, its .ecsv, plots, "
                                   "--save-pool) and, without --resume, an earlier run's part files; an input is never written over."),
    allow_modified_model: bool = typer.Option(
        False, "--allow-modified-model", help="Use a model whose stored content hash does not verify (recorded in "
        "the table's provenance)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
    cluster: Optional[str] = typer.Option(None, "--cluster", help=CLUSTER_HELP),
    workers: Optional[int] = typer.Option(None, "--workers", help=WORKERS_HELP),
    cluster_opt: Optional[list[str]] = typer.Option(None, "--cluster-opt", help=CLUSTER_OPT_HELP),
    onto: Optional[list[Path]] = typer.Option(
        None, "--onto", help="Measure on real deflectors: paint the lenses' arcs onto these cutouts in flux units "
        "(FITS cube N×3×H×W, .npy, or a directory of FITS cutouts — or, repeated, three survey images with "
        "--catalog), as `craft --onto`; the grid varies θ_E, the source and the deflectors' measured m_dfl, "
        "q_dfl; the pool defaults to the unpainted deflectors."),
    catalog: Optional[Path] = typer.Option(None, "--catalog", help="--onto survey images: the deflectors' catalogue."),
    ra_col: Optional[str] = typer.Option(None, "--ra-col", help="--catalog: RA column (default ra)."),
    dec_col: Optional[str] = typer.Option(None, "--dec-col", help="--catalog: Dec column (default dec)."),
    x_col: Optional[str] = typer.Option(None, "--x-col", help="--catalog: x pixel column, 0-based."),
    y_col: Optional[str] = typer.Option(None, "--y-col", help="--catalog: y pixel column, 0-based."),
    zero_point: Optional[str] = typer.Option(None, "--zero-point", help="--onto: AB zero point (one, or one per "
                                             "band in the file's order)."),
    gain: Optional[str] = typer.Option(None, "--gain", help="--onto: electrons per count (one or one per band)."),
    exptime: Optional[str] = typer.Option(None, "--exptime", help="--onto: exposure time, s, for cutouts in counts "
                                          "per second."),
    psf: Optional[Path] = typer.Option(None, "--psf", help="--onto: PSF kernel file (.npy or FITS, K×K or 3×K×K, "
                                       "i, r, g)."),
    psf_fwhm: Optional[str] = typer.Option(None, "--psf-fwhm", help="--onto: PSF FWHM, arcsec (one or one per "
                                           "band): a Gaussian, or a Moffat with --psf-beta; default HSC-Wide seeing."),
    psf_beta: Optional[float] = typer.Option(None, "--psf-beta", help="--onto: the --psf-fwhm PSF is a Moffat "
                                             "(1 + (r/α)²)^-β of this β; without it, a Gaussian."),
    theta_e_from_light: bool = typer.Option(False, "--theta-e-from-light", help="--onto: θ_E from each deflector's "
                                            "i-band magnitude (Faber–Jackson + SIS, clipped to 0.8–2.8\"), as "
                                            "`craft --onto --theta-e-from-light`; θ_E is then no grid axis."),
    light_prior: Optional[str] = typer.Option(None, "--light-prior", help="--onto: parameters of "
                                              "--theta-e-from-light (implies it), KEY=VALUE,...: sigma_ref, m_ref, "
                                              "dls_ds, scatter (docs/lenscrafter.md)."),
    pixel_scale: Optional[float] = typer.Option(None, "--pixel-scale", help="--onto: arcsec per pixel when the "
                                                "cutouts have no WCS (checked against it otherwise)."),
    bands: Optional[str] = typer.Option(None, "--bands", help="--onto: the cutouts' band order, e.g. g,r,i "
                                        "(default: the header's BANDS card, else i,r,g)."),
) -> None:
    """Measure a model's selection function (seed 3.1.1, Figure 3.3): for every cell of a grid
    of lens parameters, craft lenses with LensCrafter, scan them, and count the fraction whose
    ordinality against a reference pool of negatives (scored by the same model) exceeds the cut.

    Writes one row per cell (counts, detection fraction, Wilson 68 % interval, cost, provenance)
    as FITS and ECSV. With --onto, the arcs are painted onto the survey's own deflector cutouts
    and the cells bin θ_E × arc magnitude × the deflectors' measured m_dfl (i, 2″ aperture) and
    q_dfl (docs/lenscrafter.md). Parameters not on the grid sit at the Figure 4.2 reference lens (or are
    drawn from the priors: `others = "prior"` in the grid file). Cost: cells × per-cell lenses,
    each crafted and scanned once (the default grid: 16,384 cells × 4 = 65,536 lenses, plus a
    20,000-negative pool; a few minutes on 2 cores; time grows linearly with cells × per-cell).
    """
    from deepmine.lenscrafter.selection.grid import default_grid, read_grid
    from deepmine.lenscrafter.selection.measure import (
        build_reference_pool,
        plan_parts,
        score_negatives_file,
        selection_function,
    )
    from deepmine.lenscrafter.selection.pool import stored_pool

    if reference is not None and negatives is not None:
        raise InputError("--reference and --negatives exclude each other: give a stored pool or cutouts to score")
    if per_cell is not None and per_cell < 1:
        raise InputError(f"--per-cell: must be at least 1, got {per_cell}")
    if not 0.0 <= cut < 1.0:
        raise InputError(f"--cut: must lie in [0, 1), got {cut}")
    if part_lenses < 1:
        raise InputError(f"--part-lenses: must be at least 1, got {part_lenses}")
    if plot is not None:
        from deepmine.inference.formats import check_plot_path

        check_plot_path(plot)
    source = None
    cols = {k: v for k, v in (("ra_col", ra_col), ("dec_col", dec_col), ("x_col", x_col), ("y_col", y_col))
            if v is not None}
    if onto:
        from deepmine.lenscrafter.cli.craft_cmd import parse_light_prior

        source = _prepare_onto(onto if len(onto) > 1 or catalog is not None else onto[0], zero_point, gain, exptime,
                               psf, psf_fwhm, pixel_scale, bands, catalog, cols, psf_beta=psf_beta,
                               light=parse_light_prior(theta_e_from_light, light_prior))
    else:
        for opt, val in (("--zero-point", zero_point), ("--gain", gain), ("--exptime", exptime), ("--psf", psf),
                         ("--psf-fwhm", psf_fwhm), ("--psf-beta", psf_beta), ("--pixel-scale", pixel_scale),
                         ("--theta-e-from-light", theta_e_from_light or None), ("--light-prior", light_prior), ("--bands", bands),
                         ("--catalog", catalog), ("--ra-col", ra_col), ("--dec-col", dec_col), ("--x-col", x_col),
                         ("--y-col", y_col)):
            if val is not None:
                raise InputError(f"{opt} applies to --onto only")
    if source is not None:
        from deepmine.lenscrafter.selection.onto import check_onto_grid, default_onto_grid, read_onto_grid

        g = read_onto_grid(existing_file(grid, "grid file")) if grid is not None else default_onto_grid(source)
        check_onto_grid(g, source)
    else:
        g = read_grid(existing_file(grid, "grid file")) if grid is not None else default_grid()
    n_cell = int(per_cell or g.per_cell)
    n_lenses = g.n_cells * n_cell
    if dry_run:
        out_console.print(g.describe())
        out_console.print(f"{n_cell} lenses per cell → {n_lenses:,} lenses in {len(plan_parts(g, n_cell, part_lenses))} parts")
        return
    from deepmine.inference.atomic import check_outputs
    from deepmine.inference.formats import output_paths
    from deepmine.inference.identity import check_content_hash
    from deepmine.inference.model import get_model, resolve_model_path
    from deepmine.inference.ranking.pool import ReferencePool
    from deepmine.inference.scan.workdir import clear_parts
    from deepmine.lenscrafter.selection.plot import completeness_path

    out, out_ecsv = output_paths(out, (".fits", ".ecsv"), example="selection")
    model_path = resolve_model_path(model)
    check_outputs([out, out_ecsv, plot,
                   None if plot is None else completeness_path(plot), save_pool],
                  [model_path, grid, reference, negatives, *(onto or []), catalog, psf], overwrite)
    modified = check_content_hash(model_path, allow_modified_model)
    m = get_model(model_path, device=device, threads=threads)
    if source is not None:
        source.check_model(m)
    work = Path(workdir) if workdir is not None else out.with_name(out.stem + ".parts")
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    # -- the reference pool: computed once, stored, reused on --resume ----------------------
    pool_path = Path(save_pool) if save_pool is not None else work / "pool.fits"
    if reference is not None:
        pool = ReferencePool.load(existing_file(reference, "reference pool"))
    elif save_pool is None and negatives is None:
        # a pool this command made before with the same model and settings: reuse it
        pool = (stored_pool(pool_path, m, seed=seed, n=pool_size, source="lenscrafter negatives") if source is None
                else stored_pool(pool_path, m, seed=None, n=source.n, source=str(source.path)))
    else:
        pool = None
    if pool is None:
        if negatives is None and source is not None:
            from deepmine.lenscrafter.selection.onto import score_deflectors

            with task("scoring the unpainted deflectors", source.n) as advance:
                pool = score_deflectors(m, source, batch_size=batch_size, progress=advance)
        elif negatives is not None:
            from deepmine.inference.inputs.readers import resolve_inputs

            (spec,), _ = resolve_inputs([negatives], m.metadata)
            with task("scoring negatives", spec.n) as advance:
                pool = score_negatives_file(m, negatives, batch_size=batch_size, progress=advance)
        else:
            with task("crafting + scoring negatives", pool_size) as advance:
                pool = build_reference_pool(m, pool_size, seed=seed, batch_size=batch_size, progress=advance)
        pool.save(pool_path)
    t_pool = time.perf_counter() - t0

    # -- the grid ------------------------------------------------------------------------------
    err_console.print(f"[bold]selection function[/] of {model_path.name} ({m.provider}): {g.n_cells:,} cells × "
                      f"{n_cell} = {n_lenses:,} lenses; pool {len(pool):,} negatives; cut {cut:g}")
    run = cli_cluster(cluster, workers, threads, cluster_opt, model=model_path, device=device)
    t1 = time.perf_counter()
    done = [0]
    with task("cells", g.n_cells) as advance:
        def progress(k: int) -> None:
            done[0] += k
            rate = done[0] * n_cell / max(time.perf_counter() - t1, 1e-9)
            advance(k, f"{rate:,.0f} lenses/s")

        sel = selection_function(
            model_path, g, pool=pool, per_cell=n_cell, seed=seed, cut=cut, workdir=work, resume=resume,
            overwrite=overwrite, part_lenses=part_lenses, device=device, threads=run.threads, batch_size=batch_size, progress=progress,
            map_parts=run.map_parts, onto=source,
        )
    sel.provenance["pool_file"] = str(reference or pool_path)
    if modified:
        sel.provenance.setdefault("warnings", []).append(modified)
    for warning in sel.provenance.get("warnings", []):
        err_console.print(f"warning: {warning}", markup=False)
    sel.provenance["pool_s"] = t_pool
    written = sel.save(out)
    plots = []
    if plot is not None:
        from deepmine.lenscrafter.selection.plot import plot_completeness, plot_corner

        plots = [plot_corner(sel, plot), plot_completeness(sel, completeness_path(plot))]
    if not keep_parts:
        clear_parts(work)  # the stored pool (work/pool.fits) stays for a later run
    s = sel.summary()
    s.update({"wall_s": time.perf_counter() - t0, "pool_s": t_pool, "grid_s": time.perf_counter() - t1,
              "outputs": [str(p) for p in written + plots], "pool": str(reference or pool_path)})
    if as_json:
        print(json.dumps(s))
        return
    out_console.print(
        f"{s['lenses']:,} lenses in {s['cells']:,} cells: {100 * s['fraction']:.2f} % detected above {cut:g} "
        f"({s['wall_s']:.1f} s; crafting {s['craft_s']:.1f} s, scanning {s['scan_s']:.1f} s)"
    )
    for p in s["outputs"]:
        out_console.print(f"wrote {p}")


def _prepare_onto(onto, zero_point, gain, exptime, psf, psf_fwhm, pixel_scale, bands, catalog, cols, psf_beta=None,
                  light=False):
    """Open, check and measure the deflectors of --onto (the checks of `craft --onto`)."""
    from deepmine.lenscrafter.cli.craft_cmd import _floats, _read_psf
    from deepmine.lenscrafter.paint.onto import read_deflectors
    from deepmine.lenscrafter.selection.onto import prepare_onto

    n = read_deflectors(onto, bands=bands, catalog=catalog, **cols).n
    with task("measuring deflectors", n) as advance:
        return prepare_onto(onto, zero_point=_floats(zero_point, "--zero-point", (1, 3)),
                            gain=_floats(gain, "--gain", (1, 3)), exptime=_floats(exptime, "--exptime", (1, 3)),
                            psf=_read_psf(psf) if psf is not None else None,
                            psf_fwhm=_floats(psf_fwhm, "--psf-fwhm", (1, 3)), psf_beta=psf_beta,
                            pixel_scale=pixel_scale,
                            bands=bands, progress=advance, catalog=catalog, columns=cols, theta_e_from_light=light)


def register(app: typer.Typer) -> None:
    app.command("selection")(selection)
