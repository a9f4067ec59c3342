"""The candidate catalogue of a scan: columns, provenance, writing and reading.

Columns (astropy Table, one row per scanned object, sorted by ``id``)
--------------------------------------------------------------------
``id`` int64
    Running number of the object in the scan (inputs in the order given, objects in file order).
``source`` str
    Where the object came from: the input path as given (for a directory of cutouts, the
    cutout file; for a survey scan, the source catalogue; for tiles, the first band image).
``index`` int64
    Index of the object within ``source`` (catalogue row, tile number; 0 for a cutout file).
``ra``, ``dec`` float64, unit ``deg``; ``x``, ``y`` float64, unit ``pix`` (0-based pixels of the
    survey image). NaN where unknown (stacks and cutout files). Units are in every format
    (FITS ``TUNITn``, the ECSV header, Parquet's table metadata).
kept columns (survey scans)
    The source catalogue's id/name-like columns, or those of ``--keep-columns``, after ``flags``
    (``cat_<name>`` where the name is a catalogue column; :mod:`deepmine.inference.inputs.sourcecat`).
``logit`` float32
    Positive-class log-odds: rank on this, not on the probability, which saturates.
``probability`` float32
    sigmoid(logit).
``ordinality`` float64
    Position of the logit in the scan's ascending order / N (ties averaged; seed 2.4).
``ordinality_ref`` float64 (only with a reference pool)
    Ordinality of the logit against the stored negative pool (comparable across scans).
``flags`` int32
    Bitmask, see :data:`deepmine.inference.inputs.blocks.FLAG_BITS` (1 NaN/inf or masked pixels,
    2 blank cutout, 4 partly off the image edge and padded, 8 some bands blank,
    16 non-finite score, 32 position off the image or not finite, 64 central pixel masked).

Provenance (``table.meta``; FITS header cards of the BINTABLE HDU)
------------------------------------------------------------------
``DM_MODEL`` (model path), ``DM_SHA`` (model file sha256), ``DM_META`` (model metadata
JSON), ``DM_VERS`` (deepmine version), ``DM_INPUT`` (inputs JSON), ``DM_PROV``
(onnxruntime provider actually used), ``DM_BATCH`` (batch size), ``DM_THRD`` (threads),
``DATE`` (UTC, ISO 8601), ``DM_NOBJ``, ``DM_SKIP`` (skipped files JSON), ``DM_FLAGS`` (the flag
bits JSON), ``DM_REF`` (reference pool, when given). The same keys are in ``table.meta`` (and
in the ECSV/Parquet metadata), with JSON values decoded.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..errors import InputError, MissingDependencyError, file_error, first_line
from ..formats import is_fits, output_paths
from .dataset import NULLABLE_COLUMNS, dataset_files

FORMATS = ("fits", "ecsv", "parquet", "dataset", "hats")
SUFFIX = {"fits": ".fits", "ecsv": ".ecsv", "parquet": ".parquet", "dataset": "_parquet", "hats": "_hats"}
#: Formats written as folders (:mod:`deepmine.inference.catalog.dataset`).
FOLDER_FORMATS = ("dataset", "hats")
_JSON_KEYS = ("DM_META", "DM_INPUT", "DM_SKIP", "DM_FLAGS", "DM_WARN")

__all__ = ["write_catalog", "read_catalog", "catalog_paths", "parse_formats", "FORMATS"]


def parse_formats(text: str | None) -> list[str]:
    """``"fits,ecsv"`` → ["fits", "ecsv"]; None → fits, ecsv and parquet when pyarrow is installed."""
    if text is None:
        from importlib.util import find_spec  # finding pyarrow is enough; importing it costs ~0.1 s

        return ["fits", "ecsv"] + (["parquet"] if find_spec("pyarrow") is not None else [])
    fmts = [f.strip().lower() for f in str(text).split(",") if f.strip()]
    bad = [f for f in fmts if f not in FORMATS]
    if bad or not fmts:
        raise InputError(f"--format: expected a comma-separated list of {', '.join(FORMATS)}, got {text!r}")
    for f in ("parquet", "dataset", "hats"):
        if f in fmts:
            try:
                import pyarrow  # noqa: F401
            except ImportError:
                raise MissingDependencyError(f"--format {f} needs pyarrow: pip install pyarrow") from None
    if "hats" in fmts:
        import importlib.util

        if importlib.util.find_spec("hats_import") is None:
            raise MissingDependencyError("--format hats needs hats-import and lsdb: pip install 'deepmine[hats]'")
    return list(dict.fromkeys(fmts))


def catalog_paths(out: str | os.PathLike, formats: list[str]) -> dict[str, Path]:
    """Output path per format: ``out`` with its table suffix replaced (``out`` itself for its own
    format). Table suffixes (:data:`deepmine.inference.formats.TABLE_SUFFIXES`: ``.fits``,
    ``.fits.gz``, ``.ecsv``, ``.parquet``, ``.csv``, ``.txt``, ``.vot``, ``.h5``...) are replaced — ``cat.csv`` →
    ``cat.fits``, ``cat.ecsv`` —; any other name gets the format's suffix appended
    (``scan.v2`` → ``scan.v2.fits``). The folder formats are ``<stem>_parquet/`` (a partitioned
    Parquet dataset) and ``<stem>_hats/`` (HATS). An existing folder is refused: name a file inside it."""
    paths = output_paths(out, [SUFFIX[f] for f in formats], example="candidates")
    return dict(zip(formats, paths))


def _fits_header_cards(meta: dict) -> list[tuple[str, object]]:
    cards = []
    for key, value in meta.items():
        if not (key.isupper() and len(key) <= 8):
            continue
        if key in _JSON_KEYS:
            value = json.dumps(value, sort_keys=True, default=str)
        elif isinstance(value, (dict, list, tuple)):
            value = json.dumps(value, default=str)
        if isinstance(value, str) and not value.isascii():
            # FITS cards are ASCII: a non-ASCII path (``cut outs ✓.npy``) is kept as \u escapes
            value = value.encode("ascii", "backslashreplace").decode("ascii")
        cards.append((key, value))
    return cards


def _ascii_safe_columns(table):
    """``table`` with str columns holding non-ASCII text (file names) as UTF-8 bytes, which
    FITS stores as is and :func:`read_catalog` decodes back; no copy when all text is ASCII."""
    out = table
    for name in table.colnames:
        col = np.asarray(table[name])
        if col.dtype.kind == "U" and col.size and not all(str(v).isascii() for v in np.unique(col)):
            if out is table:
                out = table.copy(copy_data=False)
            out[name] = np.char.encode(col, "utf-8")
    return out


def _write_fits_chunked(table, path: Path, chunk: int, extname: str = "CATALOG") -> None:
    """A one-BINTABLE FITS file written ``chunk`` rows at a time (memory: one chunk, not a copy
    of the whole table). Column formats come from the dtypes, which every chunk shares (a str
    column has one width for the whole table), so the rows are those of ``table_to_hdu(table)``."""
    from astropy.io import fits

    plain = _ascii_safe_columns(table.copy(copy_data=False))
    plain.meta = {}
    n = len(plain)
    hdu = fits.table_to_hdu(plain[:0])
    for key, value in _fits_header_cards(table.meta):
        hdu.header[key] = value
    hdu.header["EXTNAME"] = extname
    hdu.header["NAXIS2"] = n
    row_bytes = hdu.header["NAXIS1"]
    with open(path, "wb") as fh:
        fits.PrimaryHDU().writeto(fh)
        fh.write(hdu.header.tostring().encode("ascii"))
        for start in range(0, n, chunk):
            part = fits.table_to_hdu(plain[start:start + chunk])
            if part.header["NAXIS1"] != row_bytes:  # pragma: no cover - dtypes are shared
                raise RuntimeError("catalogue chunk has a different row layout")
            rows = np.asarray(part.data)
            big = np.dtype([(name, rows.dtype.fields[name][0].newbyteorder(">")) for name in rows.dtype.names])
            fh.write(rows.astype(big).tobytes())  # FITS is big-endian
        fh.write(b"\0" * ((-(n * row_bytes)) % 2880))




def _with_nulls(table):
    """``table`` with NaN in the score columns as masked (null) values, for ECSV;
    FITS keeps NaN, the float null of the FITS standard. No copy when nothing is NaN."""
    from astropy.table import MaskedColumn

    out = None
    for name in NULLABLE_COLUMNS:
        if name in table.colnames:
            data = np.asarray(table[name])
            nan = np.isnan(data)
            if nan.any():
                out = table.copy(copy_data=False) if out is None else out
                out[name] = MaskedColumn(data, mask=nan, unit=table[name].unit, description=table[name].description)
    return table if out is None else out


def _write_parquet(table, path: Path) -> None:
    """Parquet through pyarrow: NaN scores become real nulls (astropy's writer stores a mask as
    a second column), and the table's YAML header (units, provenance) goes into the schema
    metadata under ``table_meta_yaml``, where astropy's reader and :func:`_read_parquet` find it
    (:func:`deepmine.inference.catalog.dataset.arrow_schema`)."""
    import pyarrow.parquet as pq

    from .dataset import arrow_schema, arrow_table

    cols = {name: np.asarray(table[name]) for name in table.colnames}
    pq.write_table(arrow_table(cols, arrow_schema(table[:0])), path)


def _write_ecsv_chunked(table, path: Path, chunk: int) -> None:
    """ECSV written ``chunk`` rows at a time (astropy formats each chunk; the header once)."""
    import io

    n = len(table)
    with open(path, "w", encoding="utf-8", newline="") as fh:
        for start in range(0, max(n, 1), chunk):
            buf = io.StringIO()
            _with_nulls(table[start:start + chunk]).write(buf, format="ascii.ecsv")
            text = buf.getvalue()
            if start > 0:  # drop the YAML header and the column-name line
                lines = text.splitlines(keepends=True)
                k = 0
                while k < len(lines) and lines[k].startswith("#"):
                    k += 1
                text = "".join(lines[k + 1:])
            fh.write(text)


def write_catalog(table, out: str | os.PathLike, formats: list[str] | None = None, *,
                  chunk: int = 50_000, extname: str = "CATALOG") -> dict[str, Path]:
    """Write ``table`` in each format, atomically; return {format: path}.

    The one writer of deepmine's marked tables (scan catalogues, top lists, selection-function
    tables): a marker and the provenance travel in ``table.meta``; ``extname`` names the FITS
    table extension.

    Provenance keys of ``table.meta`` (upper case, ≤ 8 characters; see the module docstring)
    become FITS header cards (long strings continue over CONTINUE cards). FITS and ECSV are
    written ``chunk`` rows at a time, so writing needs little memory beyond the table itself;
    ``dataset`` and ``hats`` are folders (:mod:`deepmine.inference.catalog.dataset`).
    """
    fmts = parse_formats(None) if formats is None else formats
    paths = catalog_paths(out, fmts)
    for fmt, path in paths.items():
        if fmt == "fits":
            with atomic_path(path, suffix=".fits") as tmp:
                _write_fits_chunked(table, tmp, chunk, extname)
        elif fmt == "ecsv":
            with atomic_path(path, suffix=".ecsv") as tmp:
                _write_ecsv_chunked(table, tmp, chunk)
        elif fmt == "parquet":
            with atomic_path(path, suffix=".parquet") as tmp:
                _write_parquet(table, tmp)
        elif fmt in FOLDER_FORMATS:
            if fmt == "hats" and "dataset" in paths:
                continue  # built from the dataset below
            from .dataset import iter_table_blocks, write_blocks

            outs = {f: paths[f] for f in FOLDER_FORMATS if f in paths}
            write_blocks(iter_table_blocks(table), table[:0], outs)
        else:
            raise InputError(f"--format: unknown format {fmt!r}")
    return paths


def _read_parquet(p: Path):
    """Parquet through astropy (needs pandas for the metadata), else straight through pyarrow."""
    from astropy.table import Table

    try:
        return Table.read(p, format="parquet")
    except ImportError:
        pass
    import numpy as np
    import pyarrow.parquet as pq
    from astropy.table.meta import get_header_from_yaml

    arrow = pq.read_table(p)
    table = Table({name: np.asarray(arrow.column(name).to_numpy(zero_copy_only=False)) for name in arrow.column_names})
    raw = (arrow.schema.metadata or {}).get(b"table_meta_yaml")
    if raw:
        header = get_header_from_yaml(raw.decode().splitlines())
        meta = header.get("meta") if isinstance(header, dict) else None
        if isinstance(meta, dict):
            table.meta.update(meta)
        for col in (header.get("datatype") or []) if isinstance(header, dict) else []:
            if isinstance(col, dict) and col.get("unit") and col.get("name") in table.colnames:
                table[col["name"]].unit = col["unit"]
    return table


def _read_parquet_folder(p: Path):
    """A Parquet dataset folder (``--format dataset``) read whole into one Table."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from astropy.table import Table
    from astropy.table.meta import get_header_from_yaml

    files = dataset_files(p)
    if not files:
        raise file_error(p, "folder holds no Parquet files")
    arrow = pa.concat_tables([pq.read_table(f) for f in files])
    table = Table({name: np.asarray(arrow.column(name).to_numpy(zero_copy_only=False)) for name in arrow.column_names})
    raw = (pq.read_schema(files[0]).metadata or {}).get(b"table_meta_yaml")
    if raw:
        header = get_header_from_yaml(raw.decode().splitlines())
        table.meta.update(header.get("meta") or {})
        for col in header.get("datatype") or []:
            if col.get("unit") and col.get("name") in table.colnames:
                table[col["name"]].unit = col["unit"]
    return table


def read_catalog(path: str | os.PathLike):
    """Read a scan catalogue (FITS, ECSV or Parquet) with its provenance in ``table.meta``.

    Raises
    ------
    InputError
        Missing, empty, unreadable file, or a table that is not a deepmine scan catalogue.
    """
    from astropy.table import Table

    p = Path(path)
    if p.is_dir():
        try:
            table = _read_parquet_folder(p)
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - pyarrow raises many kinds for bad files
            raise file_error(p, f"not a readable catalogue ({first_line(exc)})") from None
        return _finish_catalog(table, p)
    if not p.is_file():
        raise file_error(p, "catalogue not found")
    if p.stat().st_size == 0:
        raise file_error(p, "catalogue is empty (0 bytes)")
    suffix = p.suffix.lower()
    try:
        if is_fits(p):
            table = Table.read(p, hdu=1)
        elif suffix == ".ecsv":
            table = Table.read(p, format="ascii.ecsv")
        elif suffix == ".parquet":
            table = _read_parquet(p)
        else:
            table = Table.read(p)
    except Exception as exc:  # noqa: BLE001 - astropy raises many kinds for bad files
        raise file_error(p, f"not a readable catalogue ({first_line(exc)})") from None
    return _finish_catalog(table, p)


def _finish_catalog(table, p: Path):
    """Common clean-up of a read catalogue: text as str, nulls as NaN, native byte order, checks."""
    table.convert_bytestring_to_unicode()
    for name in NULLABLE_COLUMNS:  # null scores (ECSV, Parquet) read back as NaN, as in FITS
        col = table[name] if name in table.colnames else None
        if col is not None and getattr(col, "mask", None) is not None and np.any(col.mask):
            table[name] = np.where(np.asarray(col.mask), np.nan, np.asarray(col.filled(0), dtype=np.float64)).astype(col.dtype)
    for name in table.colnames:
        dt = table[name].dtype
        if dt.kind == "O":
            table[name] = np.asarray(table[name], dtype=str)
        elif dt.kind in "uif" and not dt.isnative:  # FITS is big-endian; units and descriptions kept
            unit, desc = table[name].unit, table[name].description
            table[name] = np.asarray(table[name]).astype(dt.newbyteorder("="))
            table[name].unit, table[name].description = unit, desc
    missing = [c for c in ("id", "logit", "probability", "ordinality", "flags") if c not in table.colnames]
    if missing:
        raise file_error(p, f"not a deepmine scan catalogue (no column {', '.join(missing)})")
    for key in _JSON_KEYS:
        val = table.meta.get(key)
        if isinstance(val, str):
            try:
                table.meta[key] = json.loads(val)
            except ValueError:
                pass
    return table
