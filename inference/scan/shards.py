"""Shards: the unit of work of a scan, on one machine or many.

Contract (the Dask backend uses exactly these)::

    shards = plan_shards(specs, shard_size)            # list[Shard]; inputs by reference only
    part = run_shard(model_path, shard, out_dir, batch_size=256, threads=None, device="auto")
    table = merge_parts(parts, reference=None)         # astropy Table, catalogue columns

:func:`run_shard` is a plain, picklable module-level function. It reads the shard's objects
(:func:`~deepmine.inference.inputs.readers.read_block`), preprocesses and scores them with the
process's cached onnxruntime session (:func:`~deepmine.inference.model.get_model`), reading
and preprocessing the next batches in reader threads while onnxruntime runs the current
one, and writes ``part-<id>.npz`` and then the completion marker ``part-<id>.done`` (JSON:
the shard's key and its row count), each atomically — the work-folder contract of
:mod:`deepmine.inference.scan.workdir`, shared with the selection function's parts. A shard whose
marker exists and matches is complete; anything else is redone. So after a kill -9 a resumed scan redoes only the
shards without a marker, and no object is lost or counted twice (:func:`merge_parts` refuses
duplicate ids).

Part file arrays: ``id`` int64, ``source_idx`` int32 into ``sources`` (str), ``index`` int64,
``ra``/``dec``/``x``/``y`` float64, ``logit``/``probability`` float32, ``flags`` int32,
``spec_index`` int32, ``skipped`` (str, k×2: path, reason), and ``keep:<name>`` per source-catalogue
column kept (``--keep-columns``; survey scans).

The merged catalogue carries units: ``deg`` on ``ra``/``dec``, ``pix`` on ``x``/``y`` (FITS
``TUNITn``, the ECSV header, Parquet's table metadata).
"""
from __future__ import annotations

import collections
import dataclasses
import itertools
import json
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..errors import InputError, file_error
from ..inputs.readers import FLAG_SCORE_NONFINITE, FLAG_UNRANKED, SourceSpec, read_block
from .workdir import mark_done, marker_path, part_done

__all__ = ["Shard", "plan_shards", "run_shard", "merge_parts", "shard_done", "part_paths",
           "DEFAULT_SHARD_SIZE", "CATALOG_COLUMNS"]

DEFAULT_SHARD_SIZE = 4096
#: The catalogue columns, in order (``ordinality_ref`` only with a reference pool).
CATALOG_COLUMNS = ("id", "source", "index", "ra", "dec", "x", "y", "logit", "probability", "ordinality",
                   "ordinality_ref", "flags")


@dataclass(frozen=True)
class Shard:
    """Objects ``start:stop`` of input ``spec`` (number ``spec_index`` of the scan), whose
    catalogue ids are ``first_id .. first_id + (stop - start) - 1``. Holds no pixels. For a
    directory of cutouts, ``spec`` lists only the shard's own files (``start`` is then 0 and
    ``spec.options["first"]`` the position of its first file in the directory)."""

    shard_id: int
    spec_index: int
    spec: SourceSpec
    start: int
    stop: int
    first_id: int

    @property
    def n(self) -> int:
        return self.stop - self.start

    @property
    def key(self) -> str:
        """Identity of this shard's work, written into its completion marker."""
        return json.dumps({"shard": self.shard_id, "input": self.spec.name, "kind": self.spec.kind,
                           "start": self.start, "stop": self.stop, "first_id": self.first_id}, sort_keys=True)

    @property
    def stem(self) -> str:
        return f"part-{self.shard_id:06d}"


def plan_shards(inputs: Iterable[SourceSpec], shard_size: int = DEFAULT_SHARD_SIZE) -> list[Shard]:
    """Cut inputs into shards of at most ``shard_size`` objects (a shard never spans inputs)."""
    if int(shard_size) < 1:
        raise InputError(f"--shard-size: must be at least 1, got {shard_size}")
    shards, first_id = [], 0
    for k, spec in enumerate(inputs):
        for start in range(0, spec.n, int(shard_size)):
            stop = min(start + int(shard_size), spec.n)
            if spec.kind == "fits_dir":  # carry only this shard's files, not the whole directory
                sub = dataclasses.replace(spec, paths=spec.paths[start:stop], n=stop - start,
                                          options={**spec.options, "first": start})
                shards.append(Shard(len(shards), k, sub, 0, stop - start, first_id + start))
            else:
                shards.append(Shard(len(shards), k, spec, start, stop, first_id + start))
        first_id += spec.n
    return shards


def part_paths(shard: Shard, out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """(part file, completion marker) of a shard."""
    part = Path(out_dir) / f"{shard.stem}.npz"
    return part, marker_path(part)


def shard_done(shard: Shard, out_dir: str | os.PathLike) -> bool:
    """True when the shard's part file and a matching completion marker exist
    (:func:`deepmine.inference.scan.workdir.part_done`)."""
    return part_done(part_paths(shard, out_dir)[0], shard.key)


def _prepared_batches(model, shard: Shard, batch: int, keep_going: bool, readers: int):
    """Yield ``(start, block, prepared input)`` in order, ``readers`` threads reading ahead.

    Reading (a memory-mapped slice, FITS cutouts) and preprocessing of the next batches run in
    a thread pool while the caller scores the current one; at most ``readers + 1`` batches are
    in flight, so memory stays bounded. Closing the generator (an error in the caller) cancels
    what has not started and waits for what has.
    """
    def load(s: int):
        block = read_block(shard.spec, s, min(s + batch, shard.stop), model.metadata, keep_going=keep_going)
        return s, block, model.prepare(block.images)

    starts = iter(range(shard.start, shard.stop, batch))
    with ThreadPoolExecutor(readers, thread_name_prefix=f"deepmine-read-{shard.shard_id}") as pool:
        pending = collections.deque(pool.submit(load, s) for s in itertools.islice(starts, readers + 1))
        try:
            while pending:
                item = pending.popleft().result()
                nxt = next(starts, None)
                if nxt is not None:
                    pending.append(pool.submit(load, nxt))
                yield item
        finally:
            for f in pending:
                f.cancel()


def default_readers(provider: str) -> int:
    """Reader threads feeding one session: 1 on the CPU (onnxruntime takes the cores), and on a
    GPU enough cores to keep it busy (half of them, 2 to 8)."""
    if provider == "CUDAExecutionProvider":
        return max(2, min(8, (os.cpu_count() or 2) // 2))
    return 1


def run_shard(
    model_path,
    shard: Shard,
    out_dir,
    *,
    batch_size: int = 256,
    threads: int | None = None,
    device: str = "auto",
    keep_going: bool = False,
    progress: Callable[[int], None] | None = None,
    readers: int | None = None,
) -> Path:
    """Score one shard and write its part file and completion marker (atomically); return the part.

    Parameters
    ----------
    model_path : exported classifier (.onnx), or None for the bundled model
    shard : from :func:`plan_shards`
    out_dir : folder of the part files (created if missing)
    batch_size, threads, device : see :func:`deepmine.inference.model.load_model`
    keep_going : skip unreadable cutout files (listed in the part) instead of failing
    progress : called with the number of objects done after every batch
    readers : threads reading and preprocessing ahead (None: :func:`default_readers`)

    A shard already complete in ``out_dir`` is not redone.
    """
    from ..model import get_model

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    part = part_paths(shard, out)[0]
    if shard_done(shard, out):
        if progress is not None:
            progress(shard.n)
        return part
    model = get_model(model_path, device, threads)
    b = model.batch_size(batch_size)
    n = shard.n
    ids = np.arange(shard.first_id, shard.first_id + n, dtype=np.int64)
    logit = np.full(n, np.nan, np.float32)
    prob = np.full(n, np.nan, np.float32)
    flags = np.zeros(n, np.int32)
    index = np.zeros(n, np.int64)
    pos = {k: np.full(n, np.nan) for k in ("ra", "dec", "x", "y")}
    valid = np.ones(n, bool)
    sources: list[str] = []
    source_of: dict[str, int] = {}
    source_idx = np.zeros(n, np.int32)
    skipped: list[tuple[str, str]] = []
    extra: dict[str, np.ndarray] = {}

    batches = _prepared_batches(model, shard, b, keep_going, readers or default_readers(model.provider))
    try:
        for s, block, x in batches:
            lo, pr = model.run_prepared(x, b)
            sl = slice(s - shard.start, s - shard.start + lo.shape[0])
            logit[sl], prob[sl] = lo, pr
            flags[sl] = block.flags
            index[sl] = block.index
            for k in pos:
                pos[k][sl] = getattr(block, k)
            valid[sl] = block.valid
            for k, v in block.extra.items():
                if k not in extra:
                    extra[k] = np.zeros(n, dtype=v.dtype) if v.dtype.kind != "U" else np.empty(n, dtype=object)
                extra[k][sl] = v
            for j, name in enumerate(block.source):
                if name not in source_of:
                    source_of[name] = len(sources)
                    sources.append(name)
                source_idx[sl.start + j] = source_of[name]
            skipped.extend(block.skipped)
            if progress is not None:
                progress(lo.shape[0])
    finally:
        batches.close()
    unranked = (flags & FLAG_UNRANKED) != 0  # blank or off the image: nothing to score
    logit[unranked] = np.nan
    prob[unranked] = np.nan
    bad = ~np.isfinite(logit) & ~unranked
    flags[bad] |= FLAG_SCORE_NONFINITE
    arrays = {
        "id": ids[valid], "source_idx": source_idx[valid], "index": index[valid],
        "ra": pos["ra"][valid], "dec": pos["dec"][valid], "x": pos["x"][valid], "y": pos["y"][valid],
        "logit": logit[valid], "probability": prob[valid], "flags": flags[valid],
        "spec_index": np.full(int(valid.sum()), shard.spec_index, np.int32),
        "sources": np.array(sources if sources else [""], dtype=str),
        "skipped": np.array(skipped, dtype=str).reshape(-1, 2),
    }
    for k, v in extra.items():
        arrays[f"keep:{k}"] = v[valid].astype(str) if v.dtype == object else v[valid]
    with atomic_path(part, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    mark_done(part, shard.key, rows=int(valid.sum()), skipped=len(skipped))
    return part


def _load_part(path: Path) -> dict:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as exc:  # noqa: BLE001 - zip/npy errors of a damaged part
        raise file_error(path, f"damaged part file ({exc}); delete it and its .done marker, then --resume") from None


def merge_parts(parts: Iterable[str | os.PathLike], *, reference=None, with_spec_index: bool = False):
    """Concatenate part files into the catalogue Table, sorted by id.

    Computes ``ordinality`` (within the scan, from the logit; rows with a NaN/inf logit get NaN)
    and, with ``reference`` (a :class:`~deepmine.inference.ranking.pool.ReferencePool` or a path to
    one), ``ordinality_ref``. Refuses duplicate ids. Skipped files are in
    ``table.meta["skipped"]``. ``with_spec_index`` keeps the internal ``spec_index`` column
    (which input each row came from) for re-reading cutouts.

    Memory: the catalogue itself (about 70 bytes per row plus the ``source`` strings, 4 bytes
    per character) and one copy of it while concatenating; parts given in shard order (as
    :func:`plan_shards` numbers them) are already in id order and are not permuted.
    """
    from astropy.table import Table

    from ..ranking.kernels import ordinality
    from ..ranking.pool import ReferencePool

    names = ("id", "index", "ra", "dec", "x", "y", "logit", "probability", "flags", "spec_index")
    dtypes = {"id": np.int64, "index": np.int64, "ra": np.float64, "dec": np.float64, "x": np.float64,
              "y": np.float64, "logit": np.float32, "probability": np.float32, "flags": np.int32,
              "spec_index": np.int32, "source_idx": np.int32}
    paths = [Path(p) for p in parts]
    sizes = []
    for p in paths:  # first pass: row counts only (npz members load lazily)
        try:
            with np.load(p, allow_pickle=False) as z:
                sizes.append(int(z["id"].shape[0]))
        except Exception as exc:  # noqa: BLE001 - zip/npy errors of a damaged part
            raise file_error(p, f"damaged part file ({exc}); delete it and its .done marker, then --resume") from None
    n = int(sum(sizes))
    cat = {k: np.empty(n, dtype=dt) for k, dt in dtypes.items()}  # filled in place: no second copy
    sources: list[str] = []
    source_of: dict[str, int] = {}
    skipped: list[list[str]] = []
    kept: dict[str, list] = {}
    at = 0
    for p, size in zip(paths, sizes):
        d = _load_part(p)
        sl = slice(at, at + size)
        for k in names:
            cat[k][sl] = d[k]
        for k in d:
            if k.startswith("keep:"):
                kept.setdefault(k[5:], []).append((at, d[k]))
        remap = np.array([source_of.setdefault(str(name), len(source_of)) for name in d["sources"]], dtype=np.int32)
        sources.extend(list(source_of)[len(sources):])
        if size:
            cat["source_idx"][sl] = remap[d["source_idx"]]
        skipped.extend([list(r) for r in d["skipped"]])
        at += size
        del d
    for k, pieces in kept.items():  # one array per kept column (parts without it: "" / NaN)
        dt = np.result_type(*[a.dtype for _, a in pieces])
        col = np.full(n, "" if dt.kind == "U" else (np.nan if dt.kind == "f" else 0), dtype=dt)
        for start, a in pieces:
            col[start:start + len(a)] = a
        cat["keep:" + k] = col
    ids = cat["id"]
    if ids.size > 1 and not np.all(ids[1:] > ids[:-1]):
        order = np.argsort(ids, kind="stable")
        cat = {k: v[order] for k, v in cat.items()}
        ids = cat["id"]
        if np.any(ids[1:] == ids[:-1]):
            dup = ids[1:][ids[1:] == ids[:-1]][0]
            raise InputError(f"merge: object id {dup} appears in more than one part file (parts from different scans?)")
    logit = cat["logit"]
    finite = np.isfinite(logit)
    all_finite = bool(finite.all())
    if all_finite and n:
        ordn = ordinality(logit)
    else:
        ordn = np.full(n, np.nan)
        if finite.any():
            ordn[finite] = ordinality(logit[finite])
    out: dict[str, np.ndarray] = {"id": ids}
    name_arr = np.array(sources if sources else [""], dtype=str)
    out["source"] = name_arr[cat.pop("source_idx")]
    for k in ("index", "ra", "dec", "x", "y", "logit", "probability"):
        out[k] = cat.pop(k)
    out["ordinality"] = ordn
    if reference is not None:
        pool = reference if isinstance(reference, ReferencePool) else ReferencePool.load(reference)
        oref = np.full(n, np.nan)
        if finite.any():
            oref[finite] = pool.ordinality(logit if all_finite else logit[finite])
        out["ordinality_ref"] = oref
    out["flags"] = cat.pop("flags")
    for k in kept:
        out[k] = cat.pop("keep:" + k)
    if with_spec_index:
        out["spec_index"] = cat.pop("spec_index")
    table = Table(out, copy=False)
    for k, unit in (("ra", "deg"), ("dec", "deg"), ("x", "pix"), ("y", "pix")):
        table[k].unit = unit
    table.meta["skipped"] = skipped
    return table
