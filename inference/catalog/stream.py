"""A scan's catalogue written from the streamed merge: choice of path, provenance, top list.

:func:`deepmine.inference.scan.scanner.scan` merges in memory when the catalogue fits the memory
budget and every format asked for can be written from a table; otherwise it calls
:func:`write_streamed`, which writes the Parquet formats (file, dataset, HATS) a block at a time
with :func:`~deepmine.inference.catalog.merge.stream_merge` and keeps only the top candidates
(ordinality above the cut, or the highest logits) in memory for the ``_top.ecsv`` and the mosaic.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError

__all__ = ["BYTES_PER_ROW", "choose_merge", "write_streamed", "StreamedCatalog"]

#: Memory a catalogue row takes in the in-memory merge and writers (measured: ~70 B of numbers,
#: the ``source`` strings at 4 B a character, a copy while writing).
BYTES_PER_ROW = 400
STREAM_FORMATS = ("parquet", "dataset", "hats")


def choose_merge(n_rows: int, formats: list[str], budget: int, *, explicit: bool) -> tuple[bool, list[str]]:
    """(stream?, formats): stream when a folder format is asked for (and only streamable ones
    are) or when ``n_rows`` rows would not fit ``budget`` in memory. Formats given by default
    become ``dataset`` for a streamed scan; FITS/ECSV asked for explicitly are refused then."""
    folder = any(f in ("dataset", "hats") for f in formats)
    too_big = n_rows * BYTES_PER_ROW > budget
    if not too_big:
        return folder and all(f in STREAM_FORMATS for f in formats), formats
    whole = [f for f in formats if f not in STREAM_FORMATS]
    if whole and explicit:
        raise InputError(f"--format {','.join(whole)}: a catalogue of {n_rows:,} rows needs ~{n_rows * BYTES_PER_ROW / 1e9:.1f} "
                         f"GB in memory, over --memory-budget {budget / 1e9:g} GB; use --format dataset (or "
                         "parquet, hats), or raise --memory-budget")
    kept = [f for f in formats if f in STREAM_FORMATS and f != "parquet"]
    return True, kept or ["dataset"]


@dataclass
class StreamedCatalog:
    """What :func:`write_streamed` wrote: rows, skipped files, the top candidates (a Table or None)."""

    n_rows: int
    n_unranked: int
    skipped: list
    top: object


class _TopRows:
    """Rows that may be top candidates, in id order: above the ordinality cut (``top`` < 1) or
    among the ``top`` highest logits (a count); :func:`~deepmine.inference.scan.scanner.select_top`
    then picks from them exactly what it picks from the whole catalogue."""

    def __init__(self, top, column: str, sources):
        from ..inputs.blocks import FLAG_UNRANKED

        self.top, self.column, self.sources = top, column, np.asarray(sources)
        self.unranked_flag = FLAG_UNRANKED
        self.rows: dict | None = None
        self.n_unranked = 0

    def __call__(self, block: dict, counted: bool = False) -> None:
        flags = np.asarray(block["flags"])
        unranked = (flags & self.unranked_flag) != 0
        if not counted:  # (rows a parallel task already counted come back with counted=True)
            self.n_unranked += int(np.count_nonzero(unranked))
        if self.top is None:
            return
        logit = np.asarray(block["logit"], dtype=np.float64)
        ok = np.isfinite(logit) & ~unranked
        if isinstance(self.top, float) and self.top < 1:
            ok &= np.asarray(block[self.column]) > 1.0 - self.top
        rows = {k: np.asarray(v)[ok] for k, v in block.items()}
        if self.rows is not None:
            rows = {k: np.concatenate([self.rows[k], rows[k]]) for k in rows}
        if not (isinstance(self.top, float) and self.top < 1) and len(rows["id"]) > int(self.top):
            best = np.argsort(-np.asarray(rows["logit"], dtype=np.float64), kind="stable")[: int(self.top)]
            best.sort()  # back to id order
            rows = {k: v[best] for k, v in rows.items()}
        self.rows = rows

    def table(self, template):
        from astropy.table import Table

        rows = self.rows if self.rows is not None else {k: np.zeros(0, dtype=template[k].dtype)
                                                        for k in template.colnames}
        rows = dict(rows)
        if rows["source"].dtype.kind in "iu":
            rows["source"] = self.sources[rows["source"]]
        t = Table(rows)
        for k in template.colnames:
            if k in t.colnames and template[k].unit is not None:
                t[k].unit = template[k].unit
        return t


def write_chunk(item) -> tuple:
    """Task of a parallel output pass: write one chunk of a streamed merge as one file of the
    dataset. ``item`` = (chunk, file path, schema template, row-group rows, top, rank column).
    Returns (rows, rows not ranked, the chunk's top-candidate rows or None)."""
    from .dataset import ParquetFileWriter, arrow_schema

    chunk, path, template, rg, top, column = item
    keep = _TopRows(top, column, chunk.sources)
    writer = ParquetFileWriter(path, arrow_schema(template), chunk.sources, rg)
    ok = False
    try:
        for block in chunk.blocks(0, source_codes=True):
            writer.write(block)
            keep(block)
        ok = True
    finally:
        writer.close(ok)
    return writer.rows, keep.n_unranked, keep.rows


def _write_parallel(m, template, paths: dict, executor, keep: _TopRows, rows_per_file: int) -> None:
    """The output pass as tasks: every chunk of ~``rows_per_file`` rows written by ``executor``
    (``executor(fn, items)`` yields ``(item, result or exception)``, the scanner's hook) into the
    dataset's temporary folder; HATS, if asked for, is then built from the dataset."""
    import pyarrow.parquet as pq

    from .dataset import arrow_schema, atomic_dir, write_hats

    schema = arrow_schema(template)
    with atomic_dir(paths["dataset"]) as tmp:
        chunks = m.chunks(rows_per_file)
        items = [(c, tmp / f"part-{k:05d}.parquet", template[:0], m.block_rows, keep.top, keep.column)
                 for k, c in enumerate(chunks)]
        got = {}
        for item, res in executor(write_chunk, items):
            if isinstance(res, BaseException):
                raise res
            got[str(item[1])] = res
        for item in items:  # in id order, as a serial pass would see them
            rows, unranked, top_rows = got[str(item[1])]
            keep.n_unranked += unranked
            if top_rows is not None:
                keep(top_rows, counted=True)
        pq.write_metadata(schema, tmp / "_common_metadata")
    if "hats" in paths:
        write_hats(paths["dataset"], paths["hats"])


def write_streamed(parts, paths: dict, meta: dict, *, reference=None, budget, work_dir: str | os.PathLike,
                   top=None, executor=None, rows_per_file: int | None = None) -> StreamedCatalog:
    """Merge ``parts`` a block at a time into ``paths`` (format → output), with ``meta`` as the
    provenance; return the rows, skipped files and the top-candidate rows (with ``spec_index``).

    With ``executor`` (the Dask backend's hook) and a ``dataset`` output (no single ``parquet``
    file), the output pass runs as tasks, one file of the dataset each: the client only reads
    ``id`` and ``logit`` (survey and rank passes) and the top candidates the tasks return."""
    from .dataset import ROWS_PER_FILE, write_blocks
    from .merge import stream_merge

    with stream_merge(parts, reference=reference, budget=budget, work_dir=work_dir, with_spec_index=True) as m:
        template = m.template()
        template.remove_column("spec_index")
        template.meta.update(meta)
        template.meta["DM_NOBJ"] = m.n_rows
        template.meta["DM_SKIP"] = sorted({tuple(s) for s in list(meta.get("DM_SKIP", [])) + m.skipped})
        template.meta["DM_SKIP"] = [list(s) for s in template.meta["DM_SKIP"]]
        column = "ordinality_ref" if "ordinality_ref" in m.dtypes else "ordinality"
        keep = _TopRows(top, column, m.sources)
        outs = {k: Path(v) for k, v in paths.items()}
        if executor is not None and "dataset" in outs and "parquet" not in outs:
            _write_parallel(m, template, outs, executor, keep, rows_per_file or ROWS_PER_FILE)
        else:
            write_blocks(m.blocks(0, source_codes=True), template, outs, on_block=keep, sources=m.sources,
                         row_group_rows=m.block_rows)
        full = m.template()
        full.meta.update(template.meta)
        return StreamedCatalog(m.n_rows, keep.n_unranked, template.meta["DM_SKIP"],
                               keep.table(full) if top is not None else None)
