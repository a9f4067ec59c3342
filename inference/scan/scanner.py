"""Scan survey inputs with an exported classifier: catalogue, top candidates, mosaic.

::

    result = scan(["cutouts.npy"], "eznet.onnx", "candidates.fits", top=0.005, mosaic="top.png")

Steps: load the model once (:func:`~deepmine.inference.model.get_model`), describe the inputs
(:func:`~deepmine.inference.inputs.readers.resolve_inputs`, checked against the model), cut them into
shards (:func:`~deepmine.inference.scan.shards.plan_shards`), score every shard not yet complete
with :func:`~deepmine.inference.scan.shards.run_shard` (reading + preprocessing in a background
thread, onnxruntime in the foreground, fixed batches), merge the part files
(:func:`~deepmine.inference.scan.shards.merge_parts`: ordinality within the scan, and against a
reference pool when given), write the catalogue atomically in each format, then the top
candidates and their mosaic.

Part files live in ``<catalogue stem>.parts/`` next to the catalogue, with ``plan.json`` (the
model hash, inputs and shard size). ``resume=True`` keeps completed shards (after any
interruption, kill -9 included) when the plan matches; without it an existing parts folder is
an error (so an interrupted scan's work is never thrown away silently). The folder is removed
once the catalogue is written.

Distributed execution: ``executor`` maps the shard function over the shards elsewhere (the
Dask backend). It is called as ``executor(fn, shards)`` where ``fn(shard) -> Path`` is
``functools.partial(run_shard, model_path, out_dir=..., batch_size=..., threads=...,
device=..., keep_going=...)`` (picklable), and must return an iterable of
``(shard, part path or exception)`` in any order. The default runs the shards here in order.
"""
from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..pictures import picture_format
from ..progress import stage
from ..ranking.top_list import (
    DEFAULT_TOP_FRACTION,
    _label,  # noqa: F401 - importable from here as before top_list.py
    mosaic_of,
    select_top,
    write_top,
)
from .layout import InputLayout
from .workdir import clear_parts, open_workdir

__all__ = ["scan", "ScanResult", "InputLayout", "select_top", "mosaic_of", "parts_dir"]



@dataclass
class ScanResult:
    """What a scan produced.

    Attributes
    ----------
    catalog : Path of the first catalogue format written; ``catalogs`` maps format → path
    n_objects : rows in the catalogue
    skipped : [(path, reason)] of unreadable inputs skipped with ``keep_going``
    provider : onnxruntime provider actually used
    seconds : wall-clock time of the whole scan; ``rate`` objects per second
    top : Path of the top-candidate catalogue (ECSV) or None; ``n_top`` its rows
    mosaic : Path of the mosaic PNG or None
    n_shards, n_resumed : shards in the plan, and those found complete (``resume``)
    n_unranked : rows not ranked (blank cutouts, positions off the image: null scores)
    notes : lines for the scan summary (inputs whose pixel scale could not be checked, ...)
    table : the catalogue (astropy Table); None for a streamed scan (over the memory budget, or
        a folder format), whose rows went to the files a block at a time
    warnings : the lines of ``DM_WARN`` (also among ``notes``)
    streamed : the catalogue was written by the streamed merge
    """

    catalog: Path
    catalogs: dict
    n_objects: int
    skipped: list
    provider: str
    seconds: float
    rate: float
    top: Path | None = None
    n_top: int = 0
    mosaic: Path | None = None
    n_shards: int = 0
    n_resumed: int = 0
    n_unranked: int = 0
    notes: list = field(default_factory=list)
    table: object = field(default=None, repr=False)
    warnings: list = field(default_factory=list)
    streamed: bool = False


def parts_dir(out: str | os.PathLike) -> Path:
    """The folder of a scan's part files: ``<out without suffix>.parts``."""
    p = Path(out)
    return p.with_name((p.stem if p.suffix else p.name) + ".parts")


def _input_files(specs) -> list[str]:
    """Every file the specs read: stacks, cutout files, band images, source catalogues."""
    files = []
    for s in specs:
        files.extend(str(p) for p in s.paths)
        if s.options.get("catalog"):
            files.append(str(s.options["catalog"]))
    return list(dict.fromkeys(files))


def _plan_record(model, specs, shard_size, n_shards) -> dict:
    from ..identity import input_identity

    return {"model_scoring_id": model.scoring_id, "model": str(model.path),
            "inputs": [s.to_dict() for s in specs], "shard_size": int(shard_size), "n_shards": n_shards,
            "input_identity": [input_identity(p) for p in _input_files(specs)]}


def _local_executor(fn: Callable, shards: Sequence) -> Iterable:
    for shard in shards:
        try:
            yield shard, fn(shard)
        except InputError as exc:
            yield shard, exc


def scan(
    inputs,
    model_path,
    out,
    *,
    batch_size: int = 256,
    threads: int | None = None,
    device: str = "auto",
    shard_size: int | None = None,
    resume: bool = False,
    reference=None,
    top: float | int | None = None,
    mosaic: str | os.PathLike | None = None,
    keep_going: bool = False,
    progress=None,
    formats: list[str] | None = None,
    layout: InputLayout | None = None,
    executor: Callable | None = None,
    stretch: str = "percentile",
    overwrite: bool = False,
    allow_modified_model: bool = False,
    memory_budget=None,
) -> ScanResult:
    """Scan ``inputs`` with the classifier ``model_path`` and write the catalogue to ``out``.

    Parameters
    ----------
    inputs : path or list of paths (see :mod:`deepmine.inference.inputs.readers`)
    model_path : exported classifier (.onnx); None for the bundled model
    out : catalogue path; its suffix is replaced per format (``x.fits`` → ``x.fits``, ``x.ecsv``...)
    batch_size : objects per onnxruntime call (fixed; the last batch is padded)
    threads : onnxruntime intra-op threads (None: one per core)
    device : ``"auto"``, ``"cpu"`` or ``"cuda"``
    shard_size : objects per shard / part file (default 16 batches)
    resume : keep shards completed by an interrupted run of the same scan
    reference : :class:`~deepmine.inference.ranking.pool.ReferencePool` or its path → ``ordinality_ref``
    top : fraction (< 1) or count (≥ 1) of top candidates to write to ``<stem>_top.ecsv``;
        with ``mosaic`` and no ``top``, the seed's cut (ordinality > 0.995)
    mosaic : PNG or JPEG path (the suffix decides) for the labelled grid of the top candidates (at most 64)
    keep_going : skip unreadable inputs and cutouts (listed in the result and the catalogue)
    progress : a :class:`~deepmine.inference.progress.Progress` (one stage, ``"scanning"``, in
        cutouts) or None for none
    formats : catalogue formats (default fits, ecsv, and parquet with pyarrow)
    layout : :class:`~deepmine.inference.scan.layout.InputLayout`, optional
        How the inputs are read: stacks/cubes/cutout folders (default), survey images with a
        source catalogue (``catalog``, its columns, ``keep_columns``, ``frame``), or sliding
        tiles (``tile``, ``stride``); and ``check_pixel_scale``. Combinations are checked when
        it is built.
    executor : where shards run (see the module docstring); None runs them here
    stretch : mosaic stretch (``"percentile"`` or ``"asinh"``)
    overwrite : replace existing outputs (catalogues, ``_top.ecsv``, mosaic) and, without
        ``resume``, an interrupted scan's parts (:mod:`deepmine.inference.scan.workdir`); never an input
    allow_modified_model : scan with a model whose stored content hash does not verify (the
        catalogue records the mismatch in ``DM_WARN``)
    memory_budget : bytes (or ``"2G"``) the merge may hold (default 2 GB). A catalogue over it,
        or asked for as a Parquet dataset / HATS (``formats``), is merged as a stream
        (:mod:`deepmine.inference.catalog.stream`): the same rows and values, written a block at a
        time; formats given by default then become the Parquet dataset (``<stem>_parquet/``)

    Resume plans, catalogues (``DM_SCID``) and the reference-pool check use the model's scoring
    identity (:mod:`deepmine.inference.identity`).
    """
    from ..atomic import check_outputs
    from ..catalog.io import FOLDER_FORMATS, catalog_paths, parse_formats, write_catalog
    from ..catalog.merge import DEFAULT_BUDGET, parse_budget
    from ..catalog.stream import choose_merge
    from ..identity import check_content_hash, pool_model_check
    from ..inputs.readers import FLAG_BITS, FLAG_UNRANKED, resolve_inputs
    from ..model import get_model, resolve_model_path
    from ..ranking.pool import ReferencePool
    from .shards import merge_parts, plan_shards, run_shard, shard_done

    t0 = time.perf_counter()
    layout = layout if layout is not None else InputLayout()
    check_pixel_scale = layout.check_pixel_scale
    budget = parse_budget(DEFAULT_BUDGET if memory_budget is None else memory_budget)
    fmts = parse_formats(None) if formats is None else formats
    out_paths = catalog_paths(out, fmts)
    first = catalog_paths(out, ["fits"])["fits"]  # <stem>.fits: names the top list and the parts folder
    top_out = first.with_name(first.stem + "_top.ecsv") if (top is not None or mosaic is not None) else None
    read = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    read += [layout.catalog, resolve_model_path(model_path), None if isinstance(reference, ReferencePool) else reference]
    folders = [out_paths[f] for f in FOLDER_FORMATS if f in out_paths]
    check_outputs(list(out_paths.values()) + [top_out, mosaic], read, overwrite, folders=folders)
    picture_format(mosaic, "--mosaic", raster=True)
    warnings = []
    note = check_content_hash(resolve_model_path(model_path), allow_modified_model)
    if note:
        warnings.append(note)
    pool = None
    if reference is not None:
        pool = reference if isinstance(reference, ReferencePool) else ReferencePool.load(reference)
    model = get_model(model_path, device, threads)
    if pool is not None:
        note = pool_model_check(pool, model)
        if note:
            warnings.append(note)
    b = model.batch_size(batch_size)
    if shard_size is None:
        shard_size = 16 * b
    specs, skipped = resolve_inputs(inputs, model.metadata, keep_going=keep_going, **layout.reader_options())
    if not specs:
        raise InputError("INPUT: nothing to scan (every input was skipped: "
                         + "; ".join(r for _, r in skipped) + ")")
    shards = plan_shards(specs, shard_size)
    streamed, stream_fmts = choose_merge(sum(s.n for s in shards), fmts, budget, explicit=formats is not None)
    if streamed and stream_fmts != fmts:
        fmts = stream_fmts
        out_paths = catalog_paths(out, fmts)
        folders = [out_paths[f] for f in FOLDER_FORMATS if f in out_paths]
        check_outputs(list(out_paths.values()), read, overwrite, folders=folders)
    if "hats" in fmts and not all(s.kind in ("survey", "tiles") for s in specs):
        raise InputError("--format hats: needs RA/Dec on every row (a survey scan with --catalog or --tile); "
                         "use --format dataset")
    folder = parts_dir(first)
    open_workdir(folder, _plan_record(model, specs, shard_size, len(shards)), resume=resume, overwrite=overwrite,
                 what="scan", unit="shard")
    n_resumed = sum(shard_done(s, folder) for s in shards)
    total = sum(s.n for s in shards)

    advance = stage(progress, "scanning", total) if progress else None

    fn = functools.partial(run_shard, model_path if model_path is None else str(model.path), out_dir=folder,
                           batch_size=b, threads=threads, device=device, keep_going=keep_going)
    parts = []
    if executor is None:
        fn_local = functools.partial(fn, progress=advance)
        results = _local_executor(fn_local, shards)
    else:
        results = executor(fn, shards)
    for shard, res in results:
        if isinstance(res, BaseException):
            if not (keep_going and isinstance(res, InputError)):
                raise res
            skipped.append((shard.spec.name, str(res)))
            continue
        parts.append(res)
        if executor is not None and advance is not None:
            advance(shard.n)
    parts = sorted(parts, key=lambda p: p.name)
    if streamed:
        return _finish_streamed(
            parts, out_paths, top_out, model=model, pool=pool, reference=reference, warnings=warnings, specs=specs,
            b=b, threads=threads, skipped=skipped, top=top, mosaic=mosaic, budget=budget, folder=folder, t0=t0,
            total=total, shards=shards, n_resumed=n_resumed, check_pixel_scale=check_pixel_scale, stretch=stretch,
            executor=executor)
    table = merge_parts(parts, reference=pool, with_spec_index=True)
    seen = set()
    for item in list(table.meta.pop("skipped", [])) + [list(s) for s in skipped]:
        if tuple(item) not in seen:
            seen.add(tuple(item))
    skipped = [list(s) for s in seen]
    skipped.sort()
    spec_index = np.asarray(table["spec_index"])
    table.remove_column("spec_index")
    seconds = time.perf_counter() - t0
    from .. import __version__

    table.meta.update(_provenance(model, specs, b, threads, len(table), skipped, __version__, FLAG_BITS))
    if pool is not None:
        table.meta["DM_REF"] = str(reference) if not isinstance(reference, ReferencePool) else "in-memory pool"
        table.meta["DM_REFID"] = str(pool.provenance.get("scoring_id") or pool.provenance.get("model_hash") or "")
    if warnings:
        table.meta["DM_WARN"] = warnings
    written = write_catalog(table, out, fmts)
    result = ScanResult(catalog=next(iter(written.values())), catalogs=written, n_objects=len(table),
                        skipped=skipped, provider=model.provider, seconds=seconds,
                        rate=total / seconds if seconds > 0 else float("nan"), n_shards=len(shards),
                        n_resumed=n_resumed, table=table, warnings=list(warnings))
    result.n_unranked = int(np.count_nonzero(np.asarray(table["flags"]) & FLAG_UNRANKED))
    _notes(result, specs, model, check_pixel_scale, warnings)
    clear_parts(folder, keep_others=False)

    if top is not None or mosaic is not None:
        work = table.copy(copy_data=False)
        work["spec_index"] = spec_index
        write_top(work, top, top_out, mosaic, result, specs, model, stretch)
    result.seconds = time.perf_counter() - t0
    return result


def _provenance(model, specs, b, threads, n_rows, skipped, version, flag_bits) -> dict:
    """The catalogue's provenance keys (module docstring of :mod:`deepmine.inference.catalog.io`)."""
    return {
        "DM_MODEL": str(model.path),
        "DM_SHA": model.sha256,
        "DM_SCID": model.scoring_id,
        "DM_META": json.loads(model.metadata.to_json()),
        "DM_VERS": version,
        "DM_INPUT": [s.summary() for s in specs],
        "DM_PROV": model.provider,
        "DM_BATCH": int(b),
        "DM_THRD": -1 if threads is None else int(threads),
        "DATE": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "DM_NOBJ": n_rows,
        "DM_SKIP": skipped,
        "DM_FLAGS": {k: v[0] for k, v in flag_bits.items()},
    }


def _notes(result, specs, model, check_pixel_scale: bool, warnings) -> None:
    result.notes.extend(warnings)
    for spec in specs:
        if spec.options.get("pixel_scale") is None:
            result.notes.append(f"{spec.name}: no celestial WCS, so its pixel scale was not checked "
                                f"(the model expects {model.metadata.pixel_scale:g}\"/px)")
        elif not check_pixel_scale:
            result.notes.append(f"{spec.name}: pixel scale {spec.options['pixel_scale']:.4g}\"/px accepted as given "
                                f"(the model expects {model.metadata.pixel_scale:g}\"/px)")
    if result.n_unranked:
        result.notes.append(f"{result.n_unranked:,} rows not ranked (blank cutouts or positions off the image: "
                            "null logit and ordinality, flags BLANK/OFF_IMAGE)")


def _finish_streamed(parts, out_paths: dict, top_out, **v) -> ScanResult:
    """The streamed end of :func:`scan` (``v``: the scan's state, by name): merge and write a
    block at a time, keep the top candidates, remove the parts."""
    from .. import __version__
    from ..catalog.stream import write_streamed
    from ..inputs.readers import FLAG_BITS

    model, pool, reference, warnings = v["model"], v["pool"], v["reference"], v["warnings"]
    meta = _provenance(model, v["specs"], v["b"], v["threads"], 0, [list(s) for s in v["skipped"]], __version__,
                       FLAG_BITS)
    if pool is not None:
        meta["DM_REF"] = str(reference) if not isinstance(reference, type(pool)) else "in-memory pool"
        meta["DM_REFID"] = str(pool.provenance.get("scoring_id") or pool.provenance.get("model_hash") or "")
    if warnings:
        meta["DM_WARN"] = warnings
    top, mosaic = v["top"], v["mosaic"]
    want_top = top is not None or mosaic is not None
    if want_top and top is None:
        top = DEFAULT_TOP_FRACTION
    got = write_streamed(parts, out_paths, meta, reference=pool, budget=v["budget"], work_dir=v["folder"],
                         top=top if want_top else None, executor=v["executor"])
    seconds = time.perf_counter() - v["t0"]
    total = v["total"]
    result = ScanResult(catalog=next(iter(out_paths.values())), catalogs=dict(out_paths), n_objects=got.n_rows,
                        skipped=got.skipped, provider=model.provider, seconds=seconds,
                        rate=total / seconds if seconds > 0 else float("nan"), n_shards=len(v["shards"]),
                        n_resumed=v["n_resumed"], table=None, warnings=list(warnings), streamed=True)
    result.n_unranked = got.n_unranked
    _notes(result, v["specs"], model, v["check_pixel_scale"], warnings)
    clear_parts(v["folder"], keep_others=False)
    if want_top:
        write_top(got.top, top, top_out, mosaic, result, v["specs"], model, v["stretch"])
    result.seconds = time.perf_counter() - v["t0"]
    return result
