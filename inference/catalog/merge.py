"""Streamed merge of part files: a catalogue of any size in bounded memory, exact ordinality.

:func:`~deepmine.inference.scan.shards.merge_parts` builds the whole catalogue in memory (about
70 bytes a row plus the strings: 39 GB for 10^8 objects). :func:`stream_merge` gives the same
rows, in the same (id) order, with the same values — ``ordinality`` included, bit for bit — a
block at a time, holding at most ``budget`` bytes whatever the number of rows::

    with stream_merge(parts, reference=pool, budget=2e9) as merged:
        for block in merged.blocks():          # dict of column → array, a row group's worth
            writer.write(block)

How the exact ordinality is found without holding the scores
-------------------------------------------------------------
The ordinality of a finite logit ``s`` among the N finite logits of the scan is
``(2·less + equal + 1) / (2N)`` (average position of its ties, 1-based, over N; exactly what
:func:`~deepmine.inference.ranking.ordinality` computes). Logits are float32; their
order-preserving 32-bit integer keys (−0.0 tied with +0.0, as in
:mod:`~deepmine.inference.ranking`) are split by their top 16 bits into 65,536 buckets.

1. **Survey pass**: every part's ``id`` and ``logit`` are read once: row counts, id ranges
   (parts whose id ranges overlap are merged into one unit and sorted by id; a repeated id
   is refused), and the histogram of the keys' buckets.
2. **Rank passes**: the buckets are cut into key ranges whose work fits the budget; for each
   range, every key in it gets its exact value, either by sorting the range's keys (radix
   argsort; 16 bytes a key) or by counting every possible key of its buckets in a dense table
   (512 KiB a bucket, any number of rows: two reads of the logits). Values go, in stream
   order, to a spill file of float64 (8 bytes a ranked row) beside the parts.
3. **Output pass**: the parts are read once more in id order; each row takes its value from
   its range's spill file, which is read sequentially; blocks of ``block_rows`` rows come out.

Disk: the spill files (8 bytes a ranked row) until the merge is closed. Reads: ``id`` and
``logit`` once more than the catalogue itself, ``logit`` once per range (twice for a dense
range). With the default 2 GB budget, one sorted range holds about 7×10^7 keys. A reference
pool's scores (4 or 8 bytes each) are held in memory and counted in the budget.
"""
from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from .parts import damaged as _damaged
from .parts import open_part as _open_part

__all__ = ["stream_merge", "StreamedMerge", "DEFAULT_BUDGET", "parse_budget"]

#: Default memory budget of a streamed merge (bytes).
DEFAULT_BUDGET = 2_000_000_000
#: What the interpreter, numpy, pyarrow and astropy hold before any row is read (measured ~250 MB).
RESERVE = 400_000_000
_BUCKET_BITS = 16
_NBUCKETS = 1 << _BUCKET_BITS
_DENSE_BYTES = (1 << (32 - _BUCKET_BITS)) * 8  # one bucket's dense table (merge_ranks.DENSE_BYTES)

_DTYPES = {"id": np.int64, "index": np.int64, "ra": np.float64, "dec": np.float64, "x": np.float64,
           "y": np.float64, "logit": np.float32, "probability": np.float32, "flags": np.int32,
           "spec_index": np.int32}
UNITS = {"ra": "deg", "dec": "deg", "x": "pix", "y": "pix"}


def parse_budget(text) -> int:
    """``"2G"``, ``"500M"``, ``"1.5GB"``, ``2e9`` → bytes (k/M/G/T are powers of 1000, KiB/MiB/GiB of 1024).

    >>> parse_budget("2G"), parse_budget("512MiB"), parse_budget(3e9)
    (2000000000, 536870912, 3000000000)
    """
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        s = str(text).strip().lower().replace(" ", "")
        scale = 1.0
        for suffix, mult in (("kib", 2**10), ("mib", 2**20), ("gib", 2**30), ("tib", 2**40), ("kb", 1e3),
                             ("mb", 1e6), ("gb", 1e9), ("tb", 1e12), ("k", 1e3), ("m", 1e6), ("g", 1e9),
                             ("t", 1e12), ("b", 1.0)):
            if s.endswith(suffix):
                s, scale = s[: -len(suffix)], mult
                break
        try:
            value = float(s) * scale
        except ValueError:
            raise InputError(f"--memory-budget: expected bytes such as 2G or 500M, got {text!r}") from None
    if not np.isfinite(value) or value < 2 * RESERVE:
        raise InputError(f"--memory-budget: at least {2 * RESERVE / 1e9:g} GB, got {text!r}")
    return int(value)


def _k():
    """The rank passes and their Numba kernels (:mod:`deepmine.inference.ranking.merge`), imported
    on first use so that importing this module (e.g. for :func:`parse_budget` at a scan's start)
    loads no Numba."""
    from ..ranking import merge as merge_ranks

    return merge_ranks


# --------------------------------------------------------------------------------------
# parts
# --------------------------------------------------------------------------------------
@dataclass(slots=True)
class _Part:
    """What the survey pass learnt of one part file (~250 bytes: remaps and kept lists are shared)."""

    path: str
    n: int
    id_min: int
    id_max: int
    is_sorted: bool
    remap: np.ndarray  # the part's source index → global source index
    kept: tuple


@dataclass
class StreamedMerge:
    """A planned streamed merge: its shape, and :meth:`blocks` to read its rows in id order.

    Attributes
    ----------
    n_rows, n_ranked : rows, and rows with a finite logit (the N of the ordinality)
    dtypes : column → numpy dtype, in catalogue order
    units : column → unit string
    skipped : [path, reason] of the files the workers skipped
    ranges : the key ranges of the rank passes (``len(ranges)`` passes over the logits)
    block_rows : rows per block (a Parquet row group)
    budget : the memory budget (bytes)
    """

    n_rows: int
    n_ranked: int
    dtypes: dict
    units: dict
    skipped: list
    ranges: list
    block_rows: int
    budget: int
    _parts: list = field(repr=False, default_factory=list)
    _units: list = field(repr=False, default_factory=list)
    _range_of: np.ndarray | None = field(repr=False, default=None)
    _pool: object = field(repr=False, default=None)
    _sources: np.ndarray | None = field(repr=False, default=None)
    _kept: list = field(repr=False, default_factory=list)
    _offsets: np.ndarray | None = field(repr=False, default=None)  # a chunk's first value in each spill file

    def __enter__(self) -> StreamedMerge:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Remove the spill files."""
        for r in self.ranges:
            if r.spill is not None:
                r.spill.unlink(missing_ok=True)

    def empty_block(self) -> dict:
        """A block of zero rows with the catalogue's columns and dtypes."""
        return {k: np.zeros(0, dtype=dt) for k, dt in self.dtypes.items()}

    def template(self):
        """An astropy Table of zero rows with the catalogue's columns, dtypes and units."""
        from astropy.table import Table

        t = Table(self.empty_block())
        for k, u in self.units.items():
            if k in t.colnames:
                t[k].unit = u
        return t

    @property
    def sources(self) -> np.ndarray:
        """The distinct ``source`` names (``source_codes`` of :meth:`blocks` index into them)."""
        return self._sources

    def blocks(self, block_rows: int | None = None, *, source_codes: bool = False) -> Iterator[dict]:
        """Yield the catalogue as dicts of column → array, in id order, ``block_rows`` rows each
        (the last fewer; default :attr:`block_rows`; ``0``: one block per part file, without
        copying rows into blocks). ``source_codes``: the ``source`` column as int32 indices into
        :attr:`sources` (cheaper to write: a Parquet dictionary), not strings."""
        size = int(self.block_rows if block_rows is None else block_rows)
        handles = {}
        dtypes = dict(self.dtypes, source=np.dtype(np.int32)) if source_codes else self.dtypes
        try:
            for i, r in enumerate(self.ranges):
                handles[id(r)] = open(r.spill, "rb")  # noqa: SIM115 - closed below
                handles[id(r)].seek(8 * int(self._offsets[i]) if self._offsets is not None else 0)
            pending, rows = [], 0
            for unit in self._units:
                block = self._unit_block(unit, handles, source_codes)
                if size <= 0:
                    yield block
                    continue
                pending.append(block)
                rows += len(block["id"])
                if rows >= size:
                    whole = _concat(pending, dtypes)
                    at = 0
                    while rows - at >= size:
                        yield {k: v[at:at + size] for k, v in whole.items()}
                        at += size
                    pending = [{k: v[at:] for k, v in whole.items()}] if at < rows else []
                    rows -= at
            if rows:
                yield _concat(pending, dtypes)
        finally:
            for fh in handles.values():
                fh.close()

    # -- chunks: the output pass cut into pieces that other processes can write -----------
    def chunks(self, rows: int) -> list[StreamedMerge]:
        """The merge cut into consecutive chunks of about ``rows`` rows (whole part files), each a
        picklable :class:`StreamedMerge` whose :meth:`blocks` give just its rows — with their
        exact ordinality, read from the shared spill files at the chunk's offsets. For writing the
        output pass in parallel (Dask workers on the shared filesystem); reads the logits once."""
        import dataclasses

        counts = self._unit_counts()
        cuts, acc = [0], 0
        for u, unit in enumerate(self._units):
            acc += sum(self._parts[i].n for i in unit)
            if acc >= rows and u + 1 < len(self._units):
                cuts.append(u + 1)
                acc = 0
        cuts.append(len(self._units))
        out = []
        for a, b in zip(cuts, cuts[1:]):
            mine = sorted({i for unit in self._units[a:b] for i in unit})
            where = {i: k for k, i in enumerate(mine)}
            out.append(dataclasses.replace(
                self, _parts=[self._parts[i] for i in mine], _units=[[where[i] for i in u] for u in self._units[a:b]],
                _offsets=counts[:a].sum(axis=0) if a else np.zeros(len(self.ranges), np.int64)))
        return out

    def _unit_counts(self) -> np.ndarray:
        """Ranked rows of every unit in every rank range (units × ranges)."""
        from ..ranking.merge import BUCKET_BITS

        counts = np.zeros((len(self._units), max(1, len(self.ranges))), dtype=np.int64)
        if len(self.ranges) <= 1:
            for u, keys in enumerate(self._logit_stream(keys=False)):
                counts[u, 0] = keys
            return counts
        for u, keys in enumerate(self._logit_stream()):
            counts[u] = np.bincount(self._range_of[keys >> BUCKET_BITS], minlength=len(self.ranges))
        return counts

    # -- one unit (a part, or parts whose id ranges overlap) in id order -----------------
    def _read_unit(self, unit: list[int], names, *, kept: bool = False) -> dict:
        out: dict = {}
        pieces: list[dict] = []
        for i in unit:
            part = self._parts[i]
            with _open_part(part.path) as z:
                d = {k: z.get(k) for k in names}
                if kept:
                    d["source"] = part.remap[z.get("source_idx")] if part.n else np.zeros(0, np.int32)
                    for k in self._kept:
                        name = "keep:" + k
                        d[k] = z.get(name) if name in part.kept else _fill(part.n, self.dtypes[k])
            pieces.append(d)
        order = None
        if len(unit) > 1 or not self._parts[unit[0]].is_sorted:
            ids = np.concatenate([p["id"] for p in pieces]) if "id" in names else self._unit_ids(unit)
            order = np.argsort(ids, kind="stable")
            ids = ids[order]
            dup = ids[1:][ids[1:] == ids[:-1]]
            if dup.size:
                raise InputError(f"merge: object id {dup[0]} appears in more than one part file "
                                 "(parts from different scans?)")
        for k in pieces[0]:
            col = pieces[0][k] if len(pieces) == 1 else np.concatenate([p[k] for p in pieces])
            out[k] = col if order is None else col[order]
        return out

    def _unit_ids(self, unit: list[int]) -> np.ndarray:
        ids = []
        for i in unit:
            with _open_part(self._parts[i].path) as z:
                ids.append(z.get("id"))
        return np.concatenate(ids)

    def _unit_block(self, unit: list[int], handles, source_codes: bool = False) -> dict:
        names = [k for k in _DTYPES if k != "spec_index" or "spec_index" in self.dtypes]
        d = self._read_unit(unit, names, kept=True)
        logit = d["logit"].astype(np.float32, copy=False)
        finite = np.isfinite(logit)
        n = logit.shape[0]
        ordn = np.full(n, np.nan)
        if finite.any():
            cnt_all = int(np.count_nonzero(finite))
            if len(self.ranges) == 1:  # one rank pass: the values come in stream order, no keys needed
                which = np.zeros(cnt_all, dtype=np.int32)
            else:
                which = self._range_of[_k().keys_u32(np.ascontiguousarray(logit[finite])) >> _BUCKET_BITS]
            vals = np.empty(cnt_all)
            for r_i in (0,) if len(self.ranges) == 1 else np.unique(which):
                r = self.ranges[r_i]
                sel = which == r_i
                cnt = cnt_all if len(self.ranges) == 1 else int(np.count_nonzero(sel))
                got = np.fromfile(handles[id(r)], dtype=np.float64, count=cnt)
                if got.shape[0] != cnt:
                    raise InputError(f"{r.spill}: spill file truncated during the merge")
                vals[sel] = got
            ordn[finite] = vals
        out = {"id": d["id"], "source": d["source"] if source_codes else self._sources[d["source"]]}
        for k in ("index", "ra", "dec", "x", "y", "logit", "probability"):
            out[k] = d[k]
        out["ordinality"] = ordn
        if "ordinality_ref" in self.dtypes:
            oref = np.full(n, np.nan)
            if finite.any():
                oref[finite] = self._pool.ordinality(logit[finite])
            out["ordinality_ref"] = oref
        out["flags"] = d["flags"]
        for k in self._kept:
            out[k] = d[k]
        if "spec_index" in self.dtypes:
            out["spec_index"] = d["spec_index"]
        return out

    def _logit_stream(self, keys: bool = True) -> Iterator:
        """Keys of the finite logits, unit by unit, in stream order (``keys=False``: their number)."""
        for unit in self._units:
            logit = self._read_unit(unit, ["logit"])["logit"].astype(np.float32, copy=False)
            finite = np.isfinite(logit)
            yield _k().keys_u32(np.ascontiguousarray(logit[finite])) if keys else int(np.count_nonzero(finite))


def _fill(n: int, dt: np.dtype) -> np.ndarray:
    return np.full(n, "" if dt.kind == "U" else (np.nan if dt.kind == "f" else 0), dtype=dt)


def _concat(pieces: list[dict], dtypes: dict) -> dict:
    if len(pieces) == 1:
        return {k: np.asarray(v, dtype=dtypes[k]) for k, v in pieces[0].items()}
    return {k: np.concatenate([p[k] for p in pieces]).astype(dtypes[k], copy=False) for k in pieces[0]}


# --------------------------------------------------------------------------------------
# planning and the rank passes
# --------------------------------------------------------------------------------------
def _survey(paths: list[Path]):
    parts, hist = [], np.zeros(_NBUCKETS, dtype=np.int64)
    sources: dict[str, int] = {}
    kept: dict[str, set] = {}
    skipped: list[list[str]] = []
    shared: dict = {}  # one remap array / kept tuple for all the parts that have the same
    for p in paths:
        with _open_part(p) as z:
            ids = z.get("id")
            logit = z.get("logit").astype(np.float32, copy=False)
            names = z.get("sources")
            codes = tuple(sources.setdefault(str(s), len(sources)) for s in names)
            remap = shared.get(("remap",) + codes)
            if remap is None:
                remap = shared[("remap",) + codes] = np.array(codes, dtype=np.int32)
            mine = tuple(k for k in z.files if k.startswith("keep:"))
            mine = shared.setdefault(("kept",) + mine, mine)
            for k in mine:
                kept.setdefault(k[5:], set()).add(z.dtype(k))
            skipped.extend([list(r) for r in z.get("skipped")])
        n = int(ids.shape[0])
        if logit.shape[0] != n:
            raise _damaged(p, f"{n} ids but {logit.shape[0]} logits")
        is_sorted = bool(n < 2 or np.all(ids[1:] > ids[:-1]))
        parts.append(_Part(str(p), n, int(ids.min()) if n else 0, int(ids.max()) if n else -1, is_sorted, remap,
                           mine))
        lf = logit[np.isfinite(logit)]
        if lf.size:
            hist += np.bincount(_k().keys_u32(np.ascontiguousarray(lf)) >> _BUCKET_BITS, minlength=_NBUCKETS)
    return parts, hist, sources, kept, skipped


def _units(parts: list[_Part]) -> list[list[int]]:
    """Parts in id order; parts whose id ranges overlap are grouped (read together, sorted by id)."""
    order = sorted((i for i, p in enumerate(parts) if p.n), key=lambda i: (parts[i].id_min, parts[i].id_max))
    units: list[list[int]] = []
    top = None
    for i in order:
        if units and parts[i].id_min <= top:
            units[-1].append(i)
            top = max(top, parts[i].id_max)
        else:
            units.append([i])
            top = parts[i].id_max
    return units


def stream_merge(parts: Iterable[str | os.PathLike], *, reference=None, budget=DEFAULT_BUDGET,
                 work_dir: str | os.PathLike | None = None, with_spec_index: bool = False,
                 block_rows: int | None = None, rank_bytes: int | None = None,
                 method: str | None = None) -> StreamedMerge:
    """Plan and rank a streamed merge of part files (see the module docstring).

    Parameters
    ----------
    parts : part files (:func:`~deepmine.inference.scan.shards.run_shard`), any order
    reference : :class:`~deepmine.inference.ranking.pool.ReferencePool` or its path → ``ordinality_ref``
    budget : memory budget in bytes (or ``"2G"``); the rank passes and the blocks stay inside it
    work_dir : folder of the spill files (default: the first part's folder)
    with_spec_index : keep the internal ``spec_index`` column
    block_rows : rows per block (default: from the budget, at most 2**20)
    rank_bytes : memory of one rank pass (default: what the budget leaves after the blocks);
        smaller values give more passes (tests use it to force many ranges)
    method : rank every range by ``"sort"`` or ``"dense"`` counting (default: the cheaper in memory)

    Returns
    -------
    StreamedMerge
        Use as a context manager (removes the spill files); rows through :meth:`StreamedMerge.blocks`.
        The rows, their order and every value are those of
        :func:`~deepmine.inference.scan.shards.merge_parts` on the same parts.
    """
    budget = parse_budget(budget)
    paths = [Path(p) for p in parts]
    plist, hist, sources, kept, skipped = _survey(paths)
    n_rows = sum(p.n for p in plist)
    n_ranked = int(hist.sum())
    units = _units(plist)
    src_names = np.array(list(sources) if sources else [""], dtype=str)
    dtypes: dict = {"id": np.dtype(np.int64), "source": src_names.dtype}
    for k in ("index", "ra", "dec", "x", "y", "logit", "probability"):
        dtypes[k] = np.dtype(_DTYPES[k])
    dtypes["ordinality"] = np.dtype(np.float64)
    pool = None
    if reference is not None:
        from ..ranking.pool import ReferencePool

        pool = reference if isinstance(reference, ReferencePool) else ReferencePool.load(reference)
        dtypes["ordinality_ref"] = np.dtype(np.float64)
    dtypes["flags"] = np.dtype(np.int32)
    for k, dts in kept.items():
        dtypes[k] = np.result_type(*dts)
    if with_spec_index:
        dtypes["spec_index"] = np.dtype(np.int32)
    row_bytes = sum(dt.itemsize for dt in dtypes.values())
    out_share = (budget - RESERVE) // 4
    if block_rows is None:
        block_rows = int(min(2**20, max(4096, out_share // (4 * row_bytes))))
    largest = max((sum(plist[i].n for i in u) for u in units), default=0)
    share = budget - RESERVE - 4 * row_bytes * (block_rows + largest) - (pool.scores.nbytes if pool is not None else 0)
    if share < 64 * _DENSE_BYTES:
        raise InputError(f"--memory-budget: {budget / 1e9:g} GB is too small for blocks of {block_rows:,} rows "
                         f"and part files of up to {largest:,} rows; give more, or use a smaller --shard-size")
    if method not in (None, "sort", "dense"):
        raise ValueError(f"method: expected 'sort' or 'dense', got {method!r}")
    ranges = _k().plan_ranges(hist, share if rank_bytes is None else min(share, int(rank_bytes)), method)
    folder = Path(work_dir) if work_dir is not None else (paths[0].parent if paths else Path("."))
    tag = uuid.uuid4().hex[:8]
    for i, r in enumerate(ranges):
        r.spill = folder / f".merge-{tag}-{i:04d}.f8"
    range_of = np.zeros(_NBUCKETS, dtype=np.int32)
    for i, r in enumerate(ranges):
        range_of[r.first:r.last + 1] = i
    merged = StreamedMerge(n_rows, n_ranked, dtypes, dict(UNITS), skipped, ranges, block_rows, budget,
                           _parts=plist, _units=units, _range_of=range_of, _pool=pool, _sources=src_names,
                           _kept=list(kept))
    try:
        for r in ranges:
            _k().rank_range(merged._logit_stream, r, hist, n_ranked)
    except BaseException:
        merged.close()
        raise
    return merged
