"""The rank passes of the streamed merge (:mod:`deepmine.inference.catalog.merge`): key ranges
that fit the memory budget, and their exact average-rank values by radix sort or dense
counting, with the Numba kernels (order-preserving float32 keys...). ``cache=True``: compiled
once per installation (a few seconds), then loaded from the cache."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numba as nb
import numpy as np

from ..errors import InputError
from .kernels import _float_keys_u32, sorted_values

__all__ = ["Range", "plan_ranges", "rank_range", "keys_u32", "count_dense", "dense_values", "lookup_dense",
           "sorted_values"]

BUCKET_BITS = 16
NBUCKETS = 1 << BUCKET_BITS
LOW = 1 << (32 - BUCKET_BITS)
SORT_BYTES = 16  # a key being sorted: key, scratch key, index, scratch index (uint32/int32)
DENSE_BYTES = LOW * 8  # one bucket's dense table (float64 after the prefix sum)


@dataclass
class Range:
    """Buckets ``first..last`` (inclusive) of the key histogram, ranked in one pass into ``spill``."""

    first: int  # buckets first..last (inclusive)
    last: int
    count: int
    below: int  # ranked keys in lower buckets
    dense: bool
    spill: Path | None = None


#: order-preserving uint32 keys of float32 values (−0.0 → +0.0's key): the ranking kernel's own
keys_u32 = _float_keys_u32


@nb.njit(cache=True)
def count_dense(table, slot_of, keys):  # pragma: no cover - compiled
    for i in range(keys.shape[0]):
        k = keys[i]
        s = slot_of[k >> 16]
        if s >= 0:
            table[s * 65536 + (k & 0xFFFF)] += 1.0


@nb.njit(cache=True)
def dense_values(table, below, n):  # pragma: no cover - compiled
    """Counts → ordinality values in place: (less + 1 + less + equal)·½ / n."""
    acc = below
    for t in range(table.shape[0]):
        eq = np.int64(table[t])
        if eq:
            table[t] = (acc + 1 + acc + eq) * 0.5 / n
            acc += eq


@nb.njit(cache=True)
def lookup_dense(table, slot_of, keys, out):  # pragma: no cover - compiled
    m = 0
    for i in range(keys.shape[0]):
        k = keys[i]
        s = slot_of[k >> 16]
        if s >= 0:
            out[m] = table[s * 65536 + (k & 0xFFFF)]
            m += 1
    return m


def plan_ranges(hist: np.ndarray, share: int, method: str | None = None) -> list[Range]:
    """Cut the occupied buckets into ranges whose rank pass fits ``share`` bytes, each ranked
    the cheaper way (or ``method``: ``"sort"`` / ``"dense"``)."""
    cost = {None: lambda c, o: min(c * SORT_BYTES, o * DENSE_BYTES), "sort": lambda c, o: c * SORT_BYTES,
            "dense": lambda c, o: o * DENSE_BYTES}[method]
    ranges: list[Range] = []
    below = 0
    cur = None  # [first, last, count, occupied]
    for b in np.flatnonzero(hist):
        c = int(hist[b])
        if cur is not None:
            count, occ = cur[2] + c, cur[3] + 1
            if cost(count, occ) <= share:
                cur[1], cur[2], cur[3] = int(b), count, occ
                continue
            ranges.append(close_range(cur, below, method))
            below += cur[2]
        cur = [int(b), int(b), c, 1]
    if cur is not None:
        ranges.append(close_range(cur, below, method))
    return ranges


def close_range(cur, below: int, method: str | None) -> Range:
    first, last, count, occ = cur
    dense = occ * DENSE_BYTES < count * SORT_BYTES if method is None else method == "dense"
    return Range(first, last, count, below, dense=dense)


def rank_range(logit_stream, r: Range, hist: np.ndarray, n: int) -> None:
    """Write the exact ordinality of every key in range ``r`` to its spill file, in stream order."""
    in_range = np.zeros(NBUCKETS, dtype=bool)
    in_range[r.first:r.last + 1] = True
    with open(r.spill, "wb") as fh:
        if r.dense:
            occupied = np.flatnonzero(hist[r.first:r.last + 1]) + r.first
            slot_of = np.full(NBUCKETS, -1, dtype=np.int64)
            slot_of[occupied] = np.arange(occupied.size)
            table = np.zeros(occupied.size * LOW, dtype=np.float64)  # counts are exact in float64 below 2**53
            for keys in logit_stream():
                count_dense(table, slot_of, keys)
            dense_values(table, r.below, n)
            for keys in logit_stream():
                out = np.empty(keys.shape[0])
                m = lookup_dense(table, slot_of, keys, out)
                fh.write(out[:m].tobytes())
            return
        from .kernels import _radix_argsort

        keys_all = np.empty(r.count, dtype=np.uint32)
        at = 0
        for keys in logit_stream():
            mine = keys[in_range[keys >> BUCKET_BITS]]
            keys_all[at:at + mine.shape[0]] = mine
            at += mine.shape[0]
        if at != r.count:
            raise InputError("merge: a part file changed during the merge (row counts differ between passes)")
        idx = np.empty(0, dtype=np.int32 if r.count < 2**31 - 1 else np.int64)
        sorted_keys, order = _radix_argsort(keys_all, idx, 11, 3)
        del keys_all
        out = np.empty(r.count, dtype=np.float64)
        sorted_values(sorted_keys, order, r.below, n, out)
        del sorted_keys, order
        out.tofile(fh)
