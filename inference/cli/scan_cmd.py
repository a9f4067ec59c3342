"""``deepmine scan``: score survey cutouts with an exported model (onnxruntime, no torch)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .cluster_options import CLUSTER_HELP, CLUSTER_OPT_HELP, WORKERS_HELP, cli_cluster
from .common import err_console, parse_fraction_or_count, progress_bar


def scan(
    inputs: list[Path] = typer.Argument(
        ..., help="Cutouts: .npy stacks, FITS cubes (N×C×H×W or N×H×W), directories of FITS cutouts; or, with "
        "--catalog / --tile, one survey image per model band (in the model's band order). A FITS path may name "
        "its extension: 'img.fits[1]', 'calexp.fits[IMAGE]' (MASK/VARIANCE planes beside it are applied).",
        show_default=False,
    ),
    model: Optional[Path] = typer.Option(
        None, "--model", "-m", help="Exported classifier (.onnx). Default: the bundled model, when installed."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Catalogue file; a table suffix (.fits, .ecsv, .parquet, .csv, ...) is replaced per --format (cat.csv → cat.fits, cat.ecsv), other names get the suffix appended; a folder is refused.",
                             show_default=False),
    catalog: Optional[Path] = typer.Option(None, "--catalog", help="Source catalogue (ECSV/FITS/...) to cut around."),
    ra_col: Optional[str] = typer.Option(None, "--ra-col", help="RA column (deg) of --catalog [default: ra]."),
    dec_col: Optional[str] = typer.Option(None, "--dec-col", help="Dec column (deg) of --catalog [default: dec]."),
    x_col: Optional[str] = typer.Option(None, "--x-col", help="x column (0-based pixels) of --catalog."),
    y_col: Optional[str] = typer.Option(None, "--y-col", help="y column (0-based pixels) of --catalog."),
    keep_columns: Optional[list[str]] = typer.Option(
        None, "--keep-columns", help="--catalog columns copied into the candidate catalogue (comma-separated or "
        "repeated; 'none' for none) [default: its id/name-like columns: id, name, object_id, objid, source_id, ...]."),
    frame: str = typer.Option("icrs", "--frame", help="Astropy frame of the --catalog RA/Dec columns (icrs, fk5, "
                              "fk4, galactic, ...); degrees or sexagesimal strings."),
    tile: Optional[int] = typer.Option(None, "--tile", help="Tile the survey images (tile = the model's cutout size)."),
    stride: Optional[int] = typer.Option(None, "--stride", help="Tile stride in pixels [default: the tile size]."),
    batch_size: int = typer.Option(256, "--batch-size", "-b", min=1, help="Objects per onnxruntime call."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="onnxruntime threads [default: all cores]."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda (auto falls back to CPU with a warning)."),
    shard_size: Optional[int] = typer.Option(None, "--shard-size", min=1,
                                             help="Objects per shard / part file [default: 16 batches]."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted scan of the same inputs."),
    reference: Optional[Path] = typer.Option(None, "--reference", help="Reference negative pool (deepmine rank "
                                             "--save-pool) for ordinality_ref."),
    top: Optional[str] = typer.Option(None, "--top", help="Top candidates to list: a fraction (0.005 = "
                                      "ordinality > 0.995, against the --reference pool when given) or a "
                                      "count [default with --mosaic: 0.005]."),
    mosaic: Optional[Path] = typer.Option(None, "--mosaic", help="Write a labelled grid of the top candidates: "
                                          "PNG or JPEG as the suffix says (.png, .jpg, .jpeg); others are refused."),
    stretch: str = typer.Option("percentile", "--stretch", help="Mosaic stretch: percentile | asinh."),
    keep_going: bool = typer.Option(False, "--keep-going", help="Skip unreadable files and list them."),
    accept_pixel_scale: bool = typer.Option(
        False, "--accept-pixel-scale", help="Scan images whose WCS pixel scale differs from the model's by more "
        "than 5 % (refused by default: the model learnt sizes in pixels)."),
    formats: Optional[str] = typer.Option(None, "--format", help="Comma-separated: fits,ecsv,parquet,dataset,hats "
                                          "(dataset: a partitioned Parquet folder <stem>_parquet/; hats: HEALPix-"
                                          "partitioned <stem>_hats/ for lsdb, needs RA/Dec and the [hats] extra) "
                                          "[default: fits,ecsv + parquet when pyarrow is installed; a scan over "
                                          "--memory-budget: dataset]."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs (catalogues, _top.ecsv, "
                                   "mosaic) and, without --resume, an interrupted scan's shards; an input is never written over."),
    allow_modified_model: bool = typer.Option(
        False, "--allow-modified-model", help="Scan with a model whose stored content hash does not verify "
        "(recorded in the catalogue's DM_WARN)."),
    memory_budget: str = typer.Option(
        "2G", "--memory-budget", help="Memory the merge of the part files may hold (2G, 500M, ...). A catalogue "
        "over it is merged as a stream with the same exact ordinality and written as a Parquet dataset "
        "(<stem>_parquet/) or HATS (--format dataset,hats); FITS/ECSV then hold only the --top list."),
    cluster: Optional[str] = typer.Option(None, "--cluster", help=CLUSTER_HELP),
    workers: Optional[int] = typer.Option(None, "--workers", help=WORKERS_HELP),
    cluster_opt: Optional[list[str]] = typer.Option(None, "--cluster-opt", help=CLUSTER_OPT_HELP),
) -> None:
    """Scan survey cutouts with an exported classifier; write a ranked catalogue (and a mosaic).

    The model's metadata decides band order, cutout size and preprocessing; inputs that do not
    fit are refused. Work is sharded: an interrupted scan continues with --resume.
    """
    from ..catalog.io import parse_formats
    from ..errors import InputError
    from ..mosaic import STRETCHES
    from ..scan.layout import InputLayout
    from ..scan.scanner import scan as run_scan

    top_value = parse_fraction_or_count(top, "--top") if top is not None else None
    if stretch not in STRETCHES:
        raise InputError(f"--stretch: expected one of {', '.join(STRETCHES)}, got {stretch!r}")
    layout = InputLayout(catalog=catalog, ra_col=ra_col, dec_col=dec_col, x_col=x_col, y_col=y_col,
                         keep_columns=keep_columns, frame=frame, tile=tile, stride=stride,
                         check_pixel_scale=not accept_pixel_scale)  # fmt: skip

    run = cli_cluster(cluster, workers, threads, cluster_opt, model=model, device=device)
    with progress_bar() as bar:
        result = run_scan(
            [str(p) for p in inputs], model, out, batch_size=batch_size, threads=run.threads, device=device,
            shard_size=shard_size, resume=resume, reference=reference, top=top_value, mosaic=mosaic,
            keep_going=keep_going, progress=bar,
            formats=parse_formats(formats), layout=layout, stretch=stretch, executor=run.executor,
            overwrite=overwrite, allow_modified_model=allow_modified_model, memory_budget=memory_budget,
        )
    err_console.print(
        f"scanned {result.n_objects:,} objects in {result.seconds:.1f} s ({result.rate:,.0f}/s) on {result.provider}"
        + (f"; resumed {result.n_resumed} of {result.n_shards} shards" if result.n_resumed else "")
    )
    for note in result.notes:
        err_console.print(f"{'warning' if note in result.warnings else 'note'}: {note}",
                          markup=False)
    for path in result.catalogs.values():
        err_console.print(f"wrote catalogue  {path}" + ("/" if path.is_dir() else ""))
    if result.top is not None:
        err_console.print(f"wrote top        {result.top} ({result.n_top} candidates)")
    if result.mosaic is not None:
        err_console.print(f"wrote mosaic     {result.mosaic}")
    if result.skipped:
        err_console.print(f"skipped {len(result.skipped)} unreadable file(s):")
        for _path, reason in result.skipped:
            err_console.print(f"  {reason}", markup=False)


def register(app: typer.Typer) -> None:
    app.command("scan")(scan)
