"""Candidates and their cutouts for visual inspection (``deepmine inspect``, seed 2.5, 4.7).

A scan catalogue row points at its cutout by ``(source, index)``: ``source`` names the cutout
stack the scanner read (a ``.npy`` stack or a FITS cube, N×C×H×W or N×H×W, channels i, r, g)
and ``index`` is the cutout's position in it. This module reads a catalogue, picks the top
candidates (largest logit first), finds the stacks the rows point at and checks that every row
fits them, and serves single cutouts from memory-mapped stacks.

Where a stack is looked for (first match wins): the files given with ``--cutouts`` (matched by
the path as written in the catalogue, by resolved path, then by file name; a single stack given
for a catalogue of a single source is taken as that source whatever its name), else the path as
written, relative to the catalogue's folder, the current folder, and the catalogue's folder by
file name. Sources that are not stacks — survey images cut around catalogued sources, sliding
tiles, files of a directory of FITS cutouts — are re-cut from the scan's own inputs exactly as
the scanner cut them (:func:`deepmine.inference.inputs.readers.read_block`), as the catalogue's
provenance (``DM_INPUT``, ``DM_META``) describes them; inputs that moved are looked for beside
the catalogue.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from ..errors import InputError, file_error
from ..formats import HSC_BANDS, open_stack, split_extension
from ..ranking.top_list import select_top, top_count  # noqa: F401 - the one meaning of --top, used here by the page

#: Columns a catalogue must have to be inspected; the others are shown when present.
REQUIRED_COLUMNS = ("id", "source", "index", "logit")
#: Columns copied into the page and the grades table when present (NaN when absent).
INFO_COLUMNS = ("ra", "dec", "x", "y", "logit", "probability", "ordinality", "ordinality_ref")
#: Band labels of 3-band cutouts (seed 4.1: i, r, g → R, G, B).
DEFAULT_BANDS = HSC_BANDS


def _as_str(column) -> np.ndarray:
    data = np.asarray(column)
    if data.dtype.kind == "S":
        data = np.char.decode(data, "utf-8")
    return np.char.strip(data.astype(str))


def read_catalog(path: str | os.PathLike):
    """Read a scan catalogue (:func:`deepmine.inference.catalog.io.read_catalog`) and check it can
    be inspected.

    Returns
    -------
    astropy.table.Table
        With ``id`` (int64, unique), ``source`` (str), ``index`` (int64), ``flags`` (int64) and
        every column of :data:`INFO_COLUMNS` as float64 (NaN where the catalogue lacks it);
        ``meta`` as read (provenance).

    Raises
    ------
    InputError
        Missing/empty/corrupt file, missing columns, no rows, duplicate ids, non-finite logits.
    """
    from astropy.table import Table

    from ..catalog.io import read_catalog as read_scan_catalog

    p = Path(path)
    table = read_scan_catalog(p)
    missing = [c for c in REQUIRED_COLUMNS if c not in table.colnames]
    if missing:
        raise file_error(p, f"not a scan catalogue: missing column(s) {', '.join(missing)}")
    if len(table) == 0:
        raise file_error(p, "catalogue has no rows")
    out = Table(meta=dict(table.meta))
    try:
        out["id"] = np.asarray(table["id"]).astype(np.int64, casting="safe")
        out["source"] = _as_str(table["source"])
        out["index"] = np.asarray(table["index"]).astype(np.int64, casting="safe")
    except TypeError:
        raise file_error(p, "columns id and index must be integers") from None
    for name in INFO_COLUMNS:
        if name in table.colnames:
            col = table[name]
            data = col.filled(np.nan) if hasattr(col, "filled") else col
            out[name] = np.asarray(data, dtype=np.float64)
        else:
            out[name] = np.full(len(table), np.nan)
    out["flags"] = np.asarray(table["flags"], dtype=np.int64)
    ids, counts = np.unique(out["id"], return_counts=True)
    if (counts > 1).any():
        raise file_error(p, f"column id is not unique (id {ids[counts > 1][0]} appears {counts.max()} times)")
    if not np.isfinite(out["logit"]).all():
        bad = int(out["id"][~np.isfinite(out["logit"])][0])
        raise file_error(p, f"row id {bad} has a non-finite logit")
    return out


def catalog_bands(meta: dict, n_bands: int) -> list[str]:
    """Band names of the cutouts, from the model metadata in the catalogue (``DM_META``), else
    i, r, g for 3 bands."""
    model = meta.get("DM_META") if isinstance(meta, dict) else None
    bands = model.get("bands") if isinstance(model, dict) else None
    if isinstance(bands, (list, tuple)) and len(bands) == n_bands:
        return [str(b) for b in bands]
    return list(DEFAULT_BANDS) if n_bands == 3 else [f"band {k}" for k in range(n_bands)]


class CutoutStore:
    """The cutout stacks a set of catalogue rows points at, memory-mapped.

    Parameters
    ----------
    sources : dict
        Source name as written in the catalogue → path of its stack.
    """

    def __init__(self, sources: dict[str, Path], readers: dict | None = None):
        self.paths = {s: Path(p) for s, p in sources.items()}
        self.stacks = {s: open_stack(p) for s, p in self.paths.items()}
        for name, reader in (readers or {}).items():
            self.paths[name] = Path(reader.where)
            self.stacks[name] = reader
        shapes = {a.shape[1:] for a in self.stacks.values()}
        if len(shapes) > 1:
            listing = ", ".join(f"{p.name} {self.stacks[s].shape[1:]}" for s, p in self.paths.items())
            raise InputError(f"cutout stacks differ in C×H×W shape: {listing}")

    @classmethod
    def for_rows(cls, rows, cutouts: Sequence[os.PathLike] | None = None,
                 search_dirs: Iterable[os.PathLike] = (), what: str = "catalogue",
                 meta: dict | None = None) -> CutoutStore:
        """Find and open the stacks that ``rows`` point at, and check every row fits its stack.

        Without ``cutouts``, sources that are not stacks (survey images, sliding tiles, a
        directory of single-cutout FITS files) are re-read from the scan's own inputs, as the
        catalogue's provenance ``meta`` (``DM_INPUT``, ``DM_META``) describes them."""
        search_dirs = list(search_dirs)
        sources = sorted(set(_as_str(rows["source"]).tolist()))
        readers = {} if cutouts else provenance_readers(meta or {}, search_dirs)
        readers = {s: r for s, r in readers.items() if s in sources}
        for s, r in readers.items():
            if isinstance(r, str):
                raise InputError(f"{what}: cannot re-cut the cutouts of source {s!r}: {r}; pass cutout stacks "
                                 "with --cutouts")
        rest = [s for s in sources if s not in readers]
        mapping = resolve_sources(rest, cutouts, search_dirs, what) if rest else {}
        store = cls(mapping, readers)
        store.check_rows(rows, what)
        return store

    @property
    def n_bands(self) -> int:
        return next(iter(self.stacks.values())).shape[1]

    @property
    def dtype(self) -> np.dtype:
        return np.result_type(*[a.dtype for a in self.stacks.values()])

    def check_rows(self, rows, what: str = "catalogue") -> None:
        """Raise a one-line InputError unless every row's ``index`` lies in its stack."""
        src = _as_str(rows["source"])
        idx = np.asarray(rows["index"], dtype=np.int64)
        ids = np.asarray(rows["id"], dtype=np.int64)
        for name, arr in self.stacks.items():
            sel = src == name
            if not sel.any():
                continue
            bad = sel & ((idx < 0) | (idx >= arr.shape[0]))
            if bad.any():
                k = int(np.flatnonzero(bad)[0])
                raise InputError(
                    f"{what}: row id {ids[k]} points at cutout {idx[k]} of {self.paths[name]}, which holds "
                    f"{arr.shape[0]} cutouts; the {what} does not match these cutouts (wrong --cutouts?)"
                )

    def get(self, source: str, index: int) -> np.ndarray:
        """One cutout, C×H×W, as stored (a copy, read from the memory map)."""
        return np.array(self.stacks[source][int(index)])

    def gather(self, sources: Sequence[str], indices: Sequence[int]) -> np.ndarray:
        """Cutouts of several rows, stacked N×C×H×W in the given order, dtype of the stacks."""
        first = next(iter(self.stacks.values()))
        out = np.empty((len(indices),) + first.shape[1:], dtype=self.dtype)
        for k, (s, i) in enumerate(zip(sources, indices)):
            out[k] = self.stacks[s][int(i)]
        return out


def resolve_sources(sources: Sequence[str], cutouts: Sequence[os.PathLike] | None,
                    search_dirs: Iterable[os.PathLike] = (), what: str = "catalogue") -> dict[str, Path]:
    """Map each source name to an existing stack file (see the module docstring for the rules)."""
    mapping: dict[str, Path] = {}
    if cutouts:
        given = [Path(c) for c in cutouts]
        for g in given:
            if not split_extension(g)[0].is_file():
                raise file_error(g, "cutout stack not found (--cutouts)")
        if len(sources) == 1 and len(given) == 1:
            return {sources[0]: given[0]}
        for s in sources:
            hit = [g for g in given if str(g) == s]
            hit = hit or [g for g in given if g.resolve() == Path(s).resolve()]
            hit = hit or [g for g in given if g.name == Path(s).name]
            if len(hit) != 1:
                names = ", ".join(str(g) for g in given)
                problem = "matches none of" if not hit else "matches several of"
                raise InputError(f"{what}: cutout source {s!r} {problem} --cutouts {names}")
            mapping[s] = hit[0]
        return mapping
    dirs = [Path(d) for d in search_dirs]
    for s in sources:
        p = Path(s)
        tries = [p] if p.is_absolute() else [d / p for d in dirs] + [p]
        tries += [d / p.name for d in dirs]
        hit = next((t for t in tries if split_extension(t)[0].is_file()), None)
        if hit is None:
            where = " or ".join(str(d) for d in dirs) or "the current folder"
            raise InputError(
                f"{what}: cutout source {s!r} not found (looked in {where} and the current folder); "
                "pass the stacks with --cutouts"
            )
        mapping[s] = hit
    return mapping


class ScanInputReader:
    """Array-like access (``shape``, ``dtype``, ``[i]``) to the cutouts of one scan input that is
    not a stack, re-cut exactly as the scanner cut them
    (:func:`deepmine.inference.inputs.readers.read_block`): survey images around catalogued
    sources, sliding tiles, or one file of a directory of FITS cutouts (``position``)."""

    def __init__(self, spec, metadata, position: int | None = None):
        self.spec, self.metadata, self.position = spec, metadata, position
        n = 1 if position is not None else int(spec.n)
        self.shape = (n, *(int(v) for v in metadata.input_shape))
        self.where = spec.paths[position] if position is not None else spec.name
        self._dtype = None

    def __getitem__(self, i) -> np.ndarray:
        from ..inputs.readers import read_block

        k = self.position if self.position is not None else int(i)
        return read_block(self.spec, k, k + 1, self.metadata).images[0]

    @property
    def dtype(self) -> np.dtype:
        if self._dtype is None:
            self._dtype = self[0].dtype if self.shape[0] else np.dtype(np.float32)
        return self._dtype


def _relocate(path: str, search_dirs: Sequence[Path]) -> str | None:
    p = Path(path)
    if p.is_file():
        return str(p)
    tries = [] if p.is_absolute() else [d / p for d in search_dirs]
    tries += [d / p.name for d in search_dirs]
    return next((str(t) for t in tries if t.is_file()), None)


def provenance_readers(meta: dict, search_dirs: Sequence[os.PathLike] = ()) -> dict[str, ScanInputReader | str]:
    """Readers for the catalogue sources that are survey images, tiles, FITS-cutout directories
    or FITS cubes read through a named extension (``cube.fits[SCI]``) or with mask planes, from
    the scan provenance (``DM_INPUT`` specs, ``DM_META`` model metadata).
    Relative paths that moved are looked for in ``search_dirs`` (as written, then by name);
    for an input whose files are gone the value is a message saying which file is missing."""
    import dataclasses
    import json

    from ..inputs.readers import SourceSpec
    from ..metadata import ModelMetadata

    specs, model = meta.get("DM_INPUT"), meta.get("DM_META")
    if not isinstance(specs, list) or not isinstance(model, dict):
        return {}
    try:
        metadata = ModelMetadata.from_json(json.dumps(model))
    except (InputError, TypeError):
        return {}
    dirs = [Path(d) for d in search_dirs]
    out: dict[str, ScanInputReader | str] = {}
    for d in specs:
        try:
            spec = SourceSpec(**d)
        except TypeError:
            continue
        recut = spec.kind == "fits_cube" and (spec.name != spec.paths[0] or spec.options.get("planes"))
        if spec.kind not in ("survey", "tiles", "fits_dir") and not recut:
            continue  # a named extension or mask planes: read as scanned (masked pixels NaN)
        paths = [_relocate(p, dirs) for p in spec.paths]
        options = dict(spec.options)
        if spec.kind == "survey":
            options["catalog"] = _relocate(options.get("catalog", ""), dirs)
        if spec.kind == "fits_dir":
            for k, (name, path) in enumerate(zip(spec.paths, paths)):
                out[name] = (ScanInputReader(dataclasses.replace(spec, paths=paths), metadata, k) if path is not None
                             else f"{name} not found")
            continue
        gone = [p for p, q in zip(spec.paths, paths) if q is None]
        if spec.kind == "survey" and options["catalog"] is None:
            gone.append(spec.options.get("catalog", "?"))
        if gone:
            out[spec.name] = f"{spec.kind} input {', '.join(gone)} not found (looked beside the catalogue too)"
            continue
        out[spec.name] = ScanInputReader(dataclasses.replace(spec, paths=paths, options=options), metadata)
    return out


def catalog_identity(table, path: str | os.PathLike | None = None) -> str:
    """A short identity of a scan catalogue, cheap for any size: ``sha256`` of its provenance
    header (model hash, inputs, date of the scan to the second, number of objects — what
    :func:`deepmine.inference.scan.scanner.scan` writes) plus its row count and first and last ids,
    cut to 16 hex digits. Two scans (a rescan after retraining included) get different
    identities; the same catalogue read again or copied keeps its. A catalogue without the
    scanner's header (made by other software) is identified by its file instead: name, size and
    the sha256 of its first MiB (``path`` must then be given).
    The grading page names every image URL and grade with it, grade logs record it, and
    ``inspect export`` refuses to mix grade files of different catalogues.
    """
    import hashlib
    import json

    ids = np.asarray(table["id"]) if "id" in table.colnames and len(table) else np.zeros(0, np.int64)
    ends = [int(ids[0]), int(ids[-1])] if ids.size else []
    head = {k: v for k, v in dict(table.meta).items() if str(k).upper().startswith(("DM_", "DATE"))}
    record = {"meta": head, "rows": len(table), "ids": ends}
    if not ({"DATE", "DM_SHA"} & set(head)) and path is not None:
        p = Path(path)
        with open(p, "rb") as fh:
            record["file"] = [p.name, p.stat().st_size, hashlib.sha256(fh.read(1 << 20)).hexdigest()]
    text = json.dumps(record, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

