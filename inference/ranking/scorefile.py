"""Read a column of scores from a ``.npy`` array or a catalogue (FITS binary table, ECSV, Parquet),
or a batch at a time from a Parquet file or dataset folder (:func:`iter_scores`)."""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import InputError, file_error, first_line
from ..formats import is_fits, load_npy

SCORE_COLUMNS = ("logit", "score", "probability")
#: Rows a batch of :func:`iter_scores`.
BATCH_ROWS = 1 << 20


def read_scores(path: str | os.PathLike, column: str | None = None) -> np.ndarray:
    """Return the 1-D scores stored in ``path``.

    Parameters
    ----------
    path : .npy file (1-D array, memory-mapped), a table readable by astropy
        (``.fits``/``.fit``/``.fz``, ``.ecsv``, ``.parquet``, ``.csv``) or a Parquet dataset folder.
    column : str, optional
        Table column to read; by default the first of ``logit``, ``score``, ``probability``.
        Rows of a scan catalogue flagged as not ranked (``BLANK``, ``OFF_IMAGE``) are left out.

    Raises
    ------
    InputError
        Missing, empty, truncated or corrupt file; missing column; non-1-D array.
    """
    p = Path(path)
    if p.is_dir():  # a Parquet dataset folder (deepmine scan --format dataset), read a batch at a time
        return np.concatenate(list(iter_scores(p, column, check=False)))
    if not p.is_file():
        raise file_error(p, "file not found")
    if p.stat().st_size == 0:
        raise file_error(p, "file is empty")
    suffix = "".join(p.suffixes[-2:]).lower() if p.suffix.lower() == ".gz" else p.suffix.lower()
    if suffix == ".npy":
        arr = load_npy(p)
        if column is not None:
            raise file_error(p, f"--column {column!r} given, but a .npy file has no columns")
        if arr.ndim == 2 and 1 in arr.shape:
            arr = arr.reshape(-1)
        if arr.ndim != 1:
            raise file_error(p, f"expected a 1-D array of scores, got shape {arr.shape}")
        return np.asarray(arr)
    from astropy.table import Table

    try:
        table = Table.read(p)
    except Exception as exc:  # astropy raises many kinds for bad files
        first = first_line(exc)
        raise file_error(p, f"not a readable catalogue ({first})") from None
    if column is None:
        column = next((c for c in SCORE_COLUMNS if c in table.colnames), None)
        if column is None:
            raise file_error(p, f"no score column (looked for {', '.join(SCORE_COLUMNS)}); pass --column")
    elif column not in table.colnames:
        raise file_error(p, f"no column {column!r}; columns are: {', '.join(table.colnames)}")
    col = table[column]
    data = np.asarray(col.filled(np.nan) if hasattr(col, "filled") else col)
    if "flags" in table.colnames and data.ndim == 1:
        from ..inputs.readers import FLAG_UNRANKED

        # a deepmine scan catalogue: rows that were not ranked (blank, off the image) have
        # null scores by design and take no part in any ranking
        data = data[(np.asarray(table["flags"]) & FLAG_UNRANKED) == 0]
    if data.ndim != 1:
        raise file_error(p, f"column {column!r} is not 1-D (shape {data.shape})")
    if len(data) == 0:
        raise file_error(p, "catalogue has no rows")
    return data


def checked_scores(path, column=None, name: str | None = None) -> np.ndarray:
    """:func:`read_scores` followed by :func:`~deepmine.inference.ranking.check_scores`, errors naming the file."""
    from .kernels import check_scores

    data = read_scores(path, column)
    try:
        return check_scores(data, name or str(path))
    except InputError as exc:
        raise InputError(str(exc)) from None


def scoring_id_of(path: str | os.PathLike) -> str | None:
    """The model scoring identity a scores file records, or None (a bare ``.npy``, a table
    without one): ``DM_SCID`` of a scan catalogue (FITS header, ECSV or Parquet metadata),
    ``scoring_id`` of a reference pool. Reads headers only."""
    import json
    import re

    p = Path(path)
    if p.is_dir():  # a Parquet dataset: its first file's schema
        from ..catalog.dataset import dataset_files

        files = dataset_files(p)
        if not files:
            return None
        p = files[0]
    low = p.name.lower()
    try:
        if is_fits(p):
            from astropy.io import fits

            with fits.open(p, memmap=True) as hdul:
                for hdu in hdul[:2]:
                    h = hdu.header
                    if h.get("DM_SCID"):
                        return str(h["DM_SCID"])
                    if "PROVJSON" in h:
                        prov = json.loads(h["PROVJSON"])
                        return prov.get("scoring_id") or prov.get("model_hash")
            return None
        if low.endswith(".ecsv"):
            with open(p, encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    if not line.startswith("#"):
                        return None
                    m = re.match(r"#\s+DM_SCID:\s*'?([^'\s]+)'?", line)
                    if m:
                        return m.group(1)
            return None
        if low.endswith(".parquet"):
            import pyarrow.parquet as pq

            meta = pq.read_schema(p).metadata or {}
            for value in meta.values():
                m = re.search(rb"DM_SCID['\"]?:\s*['\"]?([^'\"\s,}]+)", value)
                if m:
                    return m.group(1).decode()
    except Exception:  # noqa: BLE001 - an unreadable header records nothing; read_scores reports bad files
        return None
    return None


def is_parquet_source(path: str | os.PathLike) -> bool:
    """A Parquet file or a folder of Parquet files (a dataset)."""
    p = Path(path)
    return p.suffix.lower() == ".parquet" and p.is_file() or p.is_dir()


def _dataset(path: Path):
    import pyarrow.dataset as ds

    from ..catalog.dataset import dataset_files

    try:
        if path.is_dir():
            files = dataset_files(path)
            if not files:
                raise file_error(path, "folder holds no Parquet files")
            return ds.dataset([str(f) for f in files], format="parquet")
        return ds.dataset(str(path), format="parquet")
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many kinds for bad files
        raise file_error(path, f"not a readable Parquet catalogue ({first_line(exc)})") from None


def _column(path: Path, names: list[str], column: str | None) -> str:
    if column is None:
        column = next((c for c in SCORE_COLUMNS if c in names), None)
        if column is None:
            raise file_error(path, f"no score column (looked for {', '.join(SCORE_COLUMNS)}); pass --column")
    elif column not in names:
        raise file_error(path, f"no column {column!r}; columns are: {', '.join(names)}")
    return column


def iter_scores(path: str | os.PathLike, column: str | None = None, *, batch_rows: int = BATCH_ROWS,
                check: bool = True) -> Iterator[np.ndarray]:
    """Batches of the scores in a Parquet file or dataset folder (rows not ranked left out).

    Raises
    ------
    InputError
        Unreadable file, missing column, or (``check``) a NaN/inf score, naming the file and row.
    """
    from ..inputs.blocks import FLAG_UNRANKED

    p = Path(path)
    data = _dataset(p)
    col = _column(p, data.schema.names, column)
    cols = [col] + (["flags"] if "flags" in data.schema.names else [])
    seen = 0
    try:
        batches = data.to_batches(columns=cols, batch_size=int(batch_rows))
        for batch in batches:
            arr = batch.column(0).to_numpy(zero_copy_only=False)
            if arr.dtype.kind not in "fiu":
                raise file_error(p, f"column {col!r} is not numeric ({arr.dtype})")
            if len(cols) == 2:
                arr = arr[(batch.column(1).to_numpy(zero_copy_only=False) & FLAG_UNRANKED) == 0]
            if check and arr.size:
                bad = np.flatnonzero(~np.isfinite(arr))
                if bad.size:
                    raise file_error(p, f"score {seen + int(bad[0])} of column {col!r} is {arr[bad[0]]}; NaN, "
                                     "null and inf scores cannot be ranked")
            seen += arr.size
            yield arr
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise file_error(p, f"not a readable Parquet catalogue ({first_line(exc)})") from None
    if seen == 0:
        raise file_error(p, "catalogue has no ranked rows")
