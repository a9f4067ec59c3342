"""Catalogues for big scans: Parquet written a block at a time, partitioned datasets, HATS.

Formats (``--format``; see :func:`deepmine.inference.catalog.io.catalog_paths` for the names)
------------------------------------------------------------------------------------------
``parquet``
    One Parquet file, one row group per block.
``dataset``
    A partitioned Parquet dataset: the folder ``<stem>_parquet/`` holding ``part-00000.parquet``,
    ``part-00001.parquet``... of at most ``rows_per_file`` rows (default 2**22), row groups of at
    most a block (2**20 rows), in id order, plus ``_common_metadata`` (the schema). Read it with
    ``pyarrow.dataset.dataset(folder)``, pandas, Spark, DuckDB or
    :func:`deepmine.inference.catalog.io.read_catalog`.
``hats``
    A HATS catalogue (HEALPix-partitioned Parquet; the folder ``<stem>_hats/``), built from the
    dataset by ``hats-import`` (the ``[hats]`` extra) when every row has RA/Dec; read it with
    ``lsdb.read_hats`` to cross-match the candidates with other survey catalogues.

Every file carries the catalogue's units (per-field metadata and astropy's ``table_meta_yaml``
schema metadata, with the provenance), null (not NaN) scores for rows that were not ranked,
and is written atomically: a folder appears complete under its name, or not at all.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from ..errors import InputError, MissingDependencyError, first_line

__all__ = ["arrow_schema", "arrow_table", "ParquetFileWriter", "ParquetDatasetWriter", "write_hats",
           "atomic_dir", "dataset_files", "iter_table_blocks", "ROWS_PER_FILE"]

ROWS_PER_FILE = 2**22
ROW_GROUP_ROWS = 2**20
#: Score columns that are null (not NaN) in ECSV and Parquet where a row was not ranked.
NULLABLE_COLUMNS = ("logit", "probability", "ordinality", "ordinality_ref")


def arrow_schema(template):
    """pyarrow schema of a catalogue from an astropy Table (zero rows are enough): units as
    per-field metadata, the table's YAML header (units, provenance) as ``table_meta_yaml``."""
    import pyarrow as pa
    from astropy.table.meta import get_yaml_from_table

    fields = []
    for name in template.colnames:
        data = np.asarray(template[name])
        typ = pa.string() if data.dtype.kind in "US" else pa.from_numpy_dtype(data.dtype)
        unit = template[name].unit
        fields.append(pa.field(name, typ, metadata={b"unit": str(unit).encode()} if unit is not None else None))
    meta = {b"table_meta_yaml": "\n".join(get_yaml_from_table(template)).encode("utf-8")}
    for name in template.colnames:  # string widths, which astropy's Parquet reader wants
        dt = np.asarray(template[name]).dtype
        if dt.kind in "US":
            meta[f"table::len::{name}".encode()] = str(dt.itemsize // (4 if dt.kind == "U" else 1)).encode()
    return pa.schema(fields, metadata=meta)


def arrow_table(block: dict, schema, sources=None):
    """A block (column → array) as a pyarrow Table of ``schema``; NaN scores become nulls.
    With ``sources``, ``block["source"]`` holds int32 indices into it (see
    :meth:`deepmine.inference.catalog.merge.StreamedMerge.blocks`)."""
    import pyarrow as pa

    cols = []
    for f in schema:
        data = np.asarray(block[f.name])
        if sources is not None and f.name == "source":
            codes = pa.DictionaryArray.from_arrays(pa.array(data, type=pa.int32()), pa.array(np.asarray(sources)))
            cols.append(codes.cast(f.type))
            continue
        null = np.isnan(data) if f.name in NULLABLE_COLUMNS and data.dtype.kind == "f" else None
        cols.append(pa.array(data, type=f.type, mask=null if null is not None and null.any() else None))
    return pa.Table.from_arrays(cols, schema=schema)


def writer_options(schema) -> dict:
    """Parquet writer settings: snappy; dictionary encoding only where values repeat (``source``,
    ``flags``, ``spec_index``), not on scores and positions, where it only costs time."""
    repeat = [f.name for f in schema if f.name in ("source", "flags", "spec_index")]
    return {"compression": "snappy", "use_dictionary": repeat}


def iter_table_blocks(table, rows: int = 2**20) -> Iterator[dict]:
    """An in-memory astropy Table as blocks of at most ``rows`` rows."""
    n = len(table)
    for start in range(0, n, rows):
        yield {k: np.asarray(table[k][start:start + rows]) for k in table.colnames}


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it takes ``path``'s place (an
    existing folder there is replaced: callers check ``--overwrite`` first)."""
    dest = Path(path)
    tmp = dest.parent / f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        old = None
        if dest.exists() or dest.is_symlink():
            old = dest.parent / f".{dest.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(dest, old)
        os.replace(tmp, dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class _RowGroups:
    """Blocks of any size in, row groups of exactly ``rows`` rows out (the last fewer): blocks
    are converted to Arrow as they come and joined without copying (``pyarrow.concat_tables``)."""

    def __init__(self, schema, sources, rows: int, emit):
        self.schema, self.sources, self.size, self.emit = schema, sources, int(rows), emit
        self.pending: list = []
        self.n = 0

    def write(self, block: dict) -> None:
        import pyarrow as pa

        t = arrow_table(block, self.schema, self.sources)
        if not t.num_rows:
            return
        self.pending.append(t)
        self.n += t.num_rows
        if self.n >= self.size:
            whole = pa.concat_tables(self.pending)
            at = 0
            while self.n - at >= self.size:
                self.emit(whole.slice(at, self.size))
                at += self.size
            self.pending = [whole.slice(at)] if at < self.n else []
            self.n -= at

    def flush(self) -> None:
        import pyarrow as pa

        if self.n:
            self.emit(pa.concat_tables(self.pending))
        self.pending, self.n = [], 0


class ParquetFileWriter:
    """One Parquet file written a row group at a time (``row_group_rows`` rows each); appears at
    ``path`` on :meth:`close`."""

    def __init__(self, path, schema, sources=None, row_group_rows: int = ROW_GROUP_ROWS):
        import pyarrow.parquet as pq

        from ..atomic import atomic_path

        self._ctx = atomic_path(path, suffix=".parquet")
        self._tmp = self._ctx.__enter__()
        self.schema = schema
        self._writer = pq.ParquetWriter(self._tmp, schema, **writer_options(schema))
        self._groups = _RowGroups(schema, sources, row_group_rows, self._emit)
        self.rows = 0

    def _emit(self, t) -> None:
        self._writer.write_table(t, row_group_size=t.num_rows)
        self.rows += t.num_rows

    def write(self, block: dict) -> None:
        self._groups.write(block)

    def close(self, ok: bool = True) -> None:
        if ok:
            self._groups.flush()
        self._writer.close()
        if ok:
            self._ctx.__exit__(None, None, None)
        else:
            with contextlib.suppress(BaseException):
                self._ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)


class ParquetDatasetWriter:
    """A partitioned Parquet dataset (files of at most ``rows_per_file`` rows, rounded down to
    whole row groups of ``row_group_rows``) written into a temporary folder that takes ``path``'s place on :meth:`close`."""

    def __init__(self, path, schema, rows_per_file: int = ROWS_PER_FILE, sources=None,
                 row_group_rows: int = ROW_GROUP_ROWS):
        import pyarrow.parquet as pq

        self.path = Path(path)
        self.schema = schema
        rg = min(int(row_group_rows), int(rows_per_file))
        self.rows_per_file = max(1, int(rows_per_file) // rg) * rg  # whole row groups in every file
        self._ctx = atomic_dir(self.path)
        self._tmp = self._ctx.__enter__()
        self._pq = pq
        self._writer = None
        self._in_file = 0
        self._groups = _RowGroups(schema, sources, rg, self._emit)
        self.files = 0
        self.rows = 0

    def _next_file(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._writer = self._pq.ParquetWriter(self._tmp / f"part-{self.files:05d}.parquet", self.schema,
                                              **writer_options(self.schema))
        self.files += 1
        self._in_file = 0

    def write(self, block: dict) -> None:
        self._groups.write(block)

    def _emit(self, t) -> None:
        at = 0
        while at < t.num_rows:
            if self._writer is None or self._in_file >= self.rows_per_file:
                self._next_file()
            k = min(t.num_rows - at, self.rows_per_file - self._in_file)
            self._writer.write_table(t.slice(at, k), row_group_size=k)
            self._in_file += k
            at += k
            self.rows += k

    def close(self, ok: bool = True) -> None:
        if ok:
            self._groups.flush()
        if self._writer is None and ok:  # an empty catalogue: one file with the schema and no rows
            self._next_file()
        if self._writer is not None:
            self._writer.close()
        if ok:
            self._pq.write_metadata(self.schema, self._tmp / "_common_metadata")
            self._ctx.__exit__(None, None, None)
        else:
            with contextlib.suppress(BaseException):
                self._ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)


def dataset_files(folder: str | os.PathLike) -> list[Path]:
    """The data files of a Parquet dataset folder, in order (``_``/``.`` files left out)."""
    folder = Path(folder)
    return sorted(p for p in folder.rglob("*.parquet") if not any(part.startswith(("_", "."))
                                                                   for part in p.relative_to(folder).parts))


def write_hats(dataset: str | os.PathLike, out: str | os.PathLike, *, ra: str = "ra", dec: str = "dec",
               workers: int = 1) -> Path:
    """Build a HATS catalogue at ``out`` from a Parquet dataset (hats-import, a local Dask
    cluster of ``workers`` processes); atomic like the other outputs.

    Raises
    ------
    MissingDependencyError
        hats-import is not installed (the ``[hats]`` extra).
    InputError
        hats-import refused the rows (e.g. RA/Dec out of range).
    """
    try:
        from distributed import Client
        from hats_import import ImportArguments, pipeline_with_client
    except ImportError:
        raise MissingDependencyError("--format hats needs hats-import and lsdb: pip install 'deepmine[hats]'") from None
    out = Path(out)
    with atomic_dir(out) as tmp, contextlib.ExitStack() as stack:
        work = tmp / ".work"
        args = ImportArguments(
            output_path=str(tmp), output_artifact_name="catalog", input_path=str(dataset), file_reader="parquet",
            ra_column=ra, dec_column=dec, tmp_dir=str(work), progress_bar=False, resume=False,
            dask_n_workers=workers, dask_threads_per_worker=1)
        client = stack.enter_context(Client(n_workers=workers, threads_per_worker=1, processes=False,
                                            dashboard_address=None))
        try:
            pipeline_with_client(args, client)
        except Exception as exc:  # noqa: BLE001 - hats-import raises many kinds
            raise InputError(f"{out}: hats-import could not build the HATS catalogue ({first_line(exc)})") from None
        shutil.rmtree(work, ignore_errors=True)
        for item in (tmp / "catalog").iterdir():  # the catalogue itself at the top of the folder
            os.replace(item, tmp / item.name)
        (tmp / "catalog").rmdir()
    return out


def write_blocks(blocks: Iterable[dict], template, paths: dict, *, rows_per_file: int = ROWS_PER_FILE,
                 row_group_rows: int = ROW_GROUP_ROWS, on_block=None, sources=None) -> dict:
    """Write blocks (column → array, in catalogue order) to the streaming formats in one pass.

    ``paths`` maps ``parquet``/``dataset``/``hats`` to outputs; ``hats`` needs ``dataset``'s
    rows: it is built from the dataset (a temporary one when ``dataset`` is not asked for).
    Row groups hold ``row_group_rows`` rows whatever the blocks' sizes.
    ``on_block(block)`` sees every block (top-list selection). ``sources``: the blocks'
    ``source`` column holds indices into these names. Returns ``paths``.
    """
    unknown = set(paths) - {"parquet", "dataset", "hats"}
    if unknown:
        raise InputError(f"--format: {', '.join(sorted(unknown))} cannot be written a block at a time "
                         "(a catalogue over the memory budget is Parquet, a Parquet dataset or HATS)")
    schema = arrow_schema(template)
    writers = []
    scratch = None
    if "parquet" in paths:
        writers.append(ParquetFileWriter(paths["parquet"], schema, sources, row_group_rows))
    ds_path = paths.get("dataset")
    if ds_path is None and "hats" in paths:
        scratch = Path(paths["hats"]).parent / f".{Path(paths['hats']).name}.rows-{uuid.uuid4().hex[:8]}"
        ds_path = scratch
    if ds_path is not None:
        writers.append(ParquetDatasetWriter(ds_path, schema, rows_per_file, sources, row_group_rows))
    ok = False
    no_radec = 0
    try:
        for block in blocks:
            if "hats" in paths and len(block["id"]):
                no_radec += int(np.count_nonzero(~(np.isfinite(block["ra"]) & np.isfinite(block["dec"]))))
            for w in writers:
                w.write(block)
            if on_block is not None:
                on_block(block)
        ok = True
    finally:
        for w in writers:
            w.close(ok)
    try:
        if "hats" in paths:
            if no_radec:
                raise InputError(f"{paths['hats']}: --format hats needs RA/Dec on every row, and {no_radec:,} rows "
                                 "have none (cutout stacks); use --format dataset")
            write_hats(ds_path, paths["hats"])
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    return paths
