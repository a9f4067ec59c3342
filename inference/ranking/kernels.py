"""Ordinality, tracer recovery and ranking performance (seed 2.4, 4.6; SPEC section 4).

Definitions
-----------
ordinality(s)
    Position of each score in the ascending order, 1-based, divided by N; tied scores share
    the average position (``scipy.stats.rankdata(s, method="average") / N``).
ordinality_against(s, ref)
    ``(count(ref < s) + ½·count(ref == s)) / len(ref)``: the ordinality of new objects in a
    fixed reference pool, so that scans of different patches stay comparable.
tracer_recovery_curve(t, neg)
    Fraction of tracers whose ordinality against the negatives is at or above each ordinality.
ranking_performance(t, neg)
    Area between the TRC and the line of no discrimination over that of a perfect classifier:
    ``2·mean(ordinality_against(t, neg)) − 1`` = 2·AUC − 1, ties counted half.

Implementation: Numba kernels working on the scores' own dtype (float32 stays float32).
Sorting is an LSD radix argsort of order-preserving integer keys (−0.0 and +0.0 tie, as
they compare equal). When tracers are few, nothing is sorted but the tracers: one parallel
pass over the negatives counts, for every distinct tracer score, the negatives below and equal
to it (:func:`_bucket_counts`). All counts are integers, so results are exact up to the final
division. Extra memory: O(N) integers (keys and indices) for :func:`ordinality`, O(T·threads)
for the tracer kernels.
"""
from __future__ import annotations

from typing import NamedTuple

import numba as nb
import numpy as np

from ..errors import InputError

__all__ = [
    "ordinality",
    "ordinality_against",
    "tracer_recovery_curve",
    "ranking_performance",
    "fraction_above",
    "auc",
    "TracerRecoveryCurve",
    "trc_from_ordinality",
    "check_scores",
]


# --------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------
@nb.njit(cache=True)
def _first_nonfinite(x):  # pragma: no cover - compiled
    for i in range(x.shape[0]):
        if not np.isfinite(x[i]):
            return i
    return -1


def check_scores(scores, name: str = "scores") -> np.ndarray:
    """Return ``scores`` as a contiguous 1-D float32/float64 array, or raise InputError.

    Rejects non-1-D input, empty input, non-numeric or boolean dtypes, and NaN/inf values
    (naming the first offending index). Integers become float64 (exact below 2**53).
    """
    x = np.asarray(scores)
    if x.ndim != 1:
        raise InputError(f"{name}: expected a 1-D array of scores, got shape {x.shape}")
    if x.size == 0:
        raise InputError(f"{name}: no scores (empty array)")
    if x.dtype == np.bool_ or not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise InputError(f"{name}: expected real-valued scores, got dtype {x.dtype}")
    if not x.dtype.isnative:  # FITS tables are big-endian
        x = x.astype(x.dtype.newbyteorder("="))
    if x.dtype == np.float16:
        x = x.astype(np.float32)
    elif not np.issubdtype(x.dtype, np.floating) or x.dtype.itemsize > 8:
        x = x.astype(np.float64)
    x = np.ascontiguousarray(x)
    bad = _first_nonfinite(x)
    if bad >= 0:
        raise InputError(
            f"{name}: score at index {bad} is {float(x[bad])}; NaN and inf scores cannot be ranked "
            "(check the scan's flags, or drop those rows)"
        )
    return x


# --------------------------------------------------------------------------------------
# radix argsort of order-preserving integer keys
# --------------------------------------------------------------------------------------
@nb.njit(cache=True)
def _order_keys(bits, sign):  # pragma: no cover - compiled
    """Unsigned keys that sort as the IEEE floats whose bits they are (``sign``: the sign bit of
    their width); -0.0 ties with +0.0. One kernel, compiled once per width."""
    keys = np.empty_like(bits)
    zero = sign ^ sign
    for i in range(bits.shape[0]):
        b = bits[i]
        if b == sign:  # -0.0 ties with +0.0
            b = zero
        keys[i] = (b ^ sign) if (b & sign) == zero else ~b
    return keys


def _float_keys_u32(x):
    """Order-preserving uint32 keys of float32 scores."""
    return _order_keys(x.view(np.uint32), np.uint32(0x80000000))


def _float_keys_u64(x):
    """Order-preserving uint64 keys of float64 scores."""
    return _order_keys(x.view(np.uint64), np.uint64(0x8000000000000000))


@nb.njit(cache=True)
def _radix_argsort(keys, idx_dtype_sample, digit_bits, n_digits):  # pragma: no cover - compiled
    """LSD radix argsort: returns (sorted keys, order) with ``order`` of ``idx_dtype_sample``'s dtype."""
    n = keys.shape[0]
    nb_ = 1 << digit_bits
    mask = keys.dtype.type(nb_ - 1)
    hist = np.zeros((n_digits, nb_), dtype=np.int64)
    for i in range(n):
        k = keys[i]
        for d in range(n_digits):
            hist[d, (k >> (d * digit_bits)) & mask] += 1
    src_k = keys  # our own key array: sorted in place of a copy
    src_i = np.empty(n, dtype=idx_dtype_sample.dtype)
    for i in range(n):
        src_i[i] = i
    dst_k = np.empty_like(src_k)
    dst_i = np.empty_like(src_i)
    offsets = np.empty(nb_, dtype=np.int64)
    for d in range(n_digits):
        # skip a digit that is the same for every key
        skip = False
        for b in range(nb_):
            if hist[d, b] == n:
                skip = True
                break
        if skip:
            continue
        acc = 0
        for b in range(nb_):
            offsets[b] = acc
            acc += hist[d, b]
        shift = d * digit_bits
        for i in range(n):
            k = src_k[i]
            b = (k >> shift) & mask
            pos = offsets[b]
            offsets[b] = pos + 1
            dst_k[pos] = k
            dst_i[pos] = src_i[i]
        src_k, dst_k = dst_k, src_k
        src_i, dst_i = dst_i, src_i
    return src_k, src_i


@nb.njit(cache=True)
def sorted_values(sorted_keys, order, below, n, out):  # pragma: no cover - compiled
    """Ordinality of sorted keys: ``out[order[t]]`` = average 1-based position of key t's ties / n.

    ``below``: how many of the ``n`` ranked values lie below these keys (0 for a whole array;
    a key range's offset in the streamed merge, :mod:`.merge`).
    """
    m = sorted_keys.shape[0]
    i = 0
    while i < m:
        j = i + 1
        while j < m and sorted_keys[j] == sorted_keys[i]:
            j += 1
        # 1-based positions below+i+1 .. below+j share their average
        value = (below + i + 1 + below + j) * 0.5 / n
        for t in range(i, j):
            out[order[t]] = value
        i = j


def _argsort_keys(x: np.ndarray):
    if x.dtype == np.float32:
        keys = _float_keys_u32(x)
        digits = (11, 3)
    else:
        keys = _float_keys_u64(np.ascontiguousarray(x, dtype=np.float64))
        digits = (16, 4)
    idx_sample = np.empty(0, dtype=np.int32 if x.shape[0] < 2**31 - 1 else np.int64)
    return _radix_argsort(keys, idx_sample, digits[0], digits[1])


def ordinality(scores) -> np.ndarray:
    """Ordinality of every score within its own set (ties share the average position).

    Parameters
    ----------
    scores : 1-D array of N finite real scores (logits preferred: they do not saturate).

    Returns
    -------
    float64 array of N values in (0, 1]: ``rankdata(scores, "average") / N``.
    """
    x = check_scores(scores)
    sorted_keys, order = _argsort_keys(x)
    out = np.empty(x.shape[0], dtype=np.float64)
    sorted_values(sorted_keys, order, 0, x.shape[0], out)
    return out


# --------------------------------------------------------------------------------------
# counts against a pool
# --------------------------------------------------------------------------------------
@nb.njit(parallel=True, cache=True)
def _bucket_counts(values, data, n_chunks):  # pragma: no cover - compiled
    """For sorted distinct ``values`` (K), count data points strictly below and equal to each.

    Returns (less, equal), int64 arrays of length K. One pass over ``data``, parallel in
    ``n_chunks`` chunks, each with its own O(K) counters; binary search per data point.
    """
    k = values.shape[0]
    m = data.shape[0]
    between = np.zeros((n_chunks, k + 1), dtype=np.int64)  # data in (values[p-1], values[p])
    equal = np.zeros((n_chunks, k), dtype=np.int64)
    step = (m + n_chunks - 1) // n_chunks
    for c in nb.prange(n_chunks):
        start = c * step
        stop = min(m, start + step)
        for i in range(start, stop):
            v = data[i]
            p = np.searchsorted(values, v)  # first index with values[p] >= v
            if p < k and values[p] == v:
                equal[c, p] += 1
            else:
                between[c, p] += 1
    less = np.zeros(k, dtype=np.int64)
    eq = np.zeros(k, dtype=np.int64)
    acc = 0
    for p in range(k):
        b = 0
        e = 0
        for c in range(n_chunks):
            b += between[c, p]
            e += equal[c, p]
        acc += b
        less[p] = acc
        eq[p] = e
        acc += e
    return less, eq


@nb.njit(parallel=True, cache=True)
def _search_sorted_counts(sorted_ref, scores, out):  # pragma: no cover - compiled
    m = sorted_ref.shape[0]
    for i in nb.prange(scores.shape[0]):
        s = scores[i]
        lo = np.searchsorted(sorted_ref, s, side="left")
        hi = np.searchsorted(sorted_ref, s, side="right")
        out[i] = (lo + 0.5 * (hi - lo)) / m


def _n_chunks(m: int) -> int:
    return max(1, min(nb.get_num_threads() * 4, m // 65536 or 1))


def _counts_against(scores: np.ndarray, reference: np.ndarray):
    """(unique scores, inverse, less, equal) counts of ``reference`` for each distinct score."""
    uniq, inverse = np.unique(scores, return_inverse=True)
    if uniq.dtype != reference.dtype:  # compare in float64, exactly
        uniq = uniq.astype(np.float64)
        reference = reference.astype(np.float64)
    less, eq = _bucket_counts(uniq, reference, _n_chunks(reference.shape[0]))
    return uniq, inverse, less, eq


def ordinality_against(scores, reference, *, assume_sorted: bool = False) -> np.ndarray:
    """Ordinality of ``scores`` in a fixed ``reference`` pool.

    Parameters
    ----------
    scores : 1-D array of finite scores (N)
    reference : 1-D array of finite scores (M), or a :class:`~deepmine.inference.ranking.pool.ReferencePool`
    assume_sorted : bool
        ``reference`` is sorted ascending (a stored pool is); then each score is placed by
        binary search. Otherwise the reference is not sorted unless the scores are many.

    Returns
    -------
    float64 array (N): ``(count(ref < s) + ½·count(ref == s)) / M``, in [0, 1].
    """
    if hasattr(reference, "scores") and not isinstance(reference, np.ndarray):  # a ReferencePool (sorted)
        reference, assume_sorted = reference.scores, True
    s = check_scores(scores, "scores")
    ref = check_scores(reference, "reference") if not assume_sorted else _check_sorted(reference)
    if s.dtype != ref.dtype:
        s = s.astype(np.float64)
        ref = ref.astype(np.float64)
    if not assume_sorted and s.shape[0] * 8 > ref.shape[0]:
        ref = np.sort(ref)
        assume_sorted = True
    if assume_sorted:
        if s.shape[0] < 100_000:  # thread start-up would dominate: numpy's serial search
            lo = np.searchsorted(ref, s, side="left")
            hi = np.searchsorted(ref, s, side="right")
            return (lo + 0.5 * (hi - lo)) / ref.shape[0]
        out = np.empty(s.shape[0], dtype=np.float64)
        _search_sorted_counts(ref, s, out)
        return out
    _, inverse, less, eq = _counts_against(s, ref)
    return ((less + 0.5 * eq) / ref.shape[0])[inverse]


def _checked_pair(a, b, name_a: str, name_b: str) -> tuple[np.ndarray, np.ndarray]:
    """Check two score arrays and bring them to one dtype (float64 unless both are float32)."""
    a = check_scores(a, name_a)
    b = check_scores(b, name_b)
    if a.dtype != b.dtype:
        a, b = a.astype(np.float64), b.astype(np.float64)
    return a, b


def _check_sorted(reference) -> np.ndarray:
    ref = np.asarray(reference)
    if ref.ndim != 1 or ref.size == 0:
        raise InputError(f"reference: expected a non-empty 1-D sorted pool, got shape {ref.shape}")
    if ref.dtype not in (np.float32, np.float64):
        ref = ref.astype(np.float64)
    if not (np.isfinite(ref[0]) and np.isfinite(ref[-1])) or ref[0] > ref[-1]:
        raise InputError("reference: the pool is not sorted ascending or holds NaN/inf scores")
    return ref


# --------------------------------------------------------------------------------------
# tracers
# --------------------------------------------------------------------------------------
class TracerRecoveryCurve(NamedTuple):
    """Step function of the TRC: ``recovered[i]`` = fraction of tracers with ordinality ≥ ``ordinality[i]``.

    The curve is left-continuous: ``recovered[i]`` holds on ``(ordinality[i-1], ordinality[i]]``
    and is 0 above the highest tracer, so its area is ``Σ diff(ordinality)·recovered[1:]`` =
    mean tracer ordinality.

    ``ordinality`` starts at 0 (everything recovered) and holds every distinct tracer
    ordinality in increasing order; ``tracer_ordinality`` is each tracer's own value.
    """

    ordinality: np.ndarray
    recovered: np.ndarray
    tracer_ordinality: np.ndarray

    def at(self, cut: float) -> float:
        """Fraction of tracers with ordinality ≥ ``cut``."""
        return float(np.mean(self.tracer_ordinality >= cut))


def tracer_recovery_curve(tracer_scores, negative_scores) -> TracerRecoveryCurve:
    """Tracer recovery curve: tracers ranked against the negative pool (not inserted into it).

    Returns
    -------
    TracerRecoveryCurve(ordinality, recovered, tracer_ordinality)
    """
    return trc_from_ordinality(ordinality_against(tracer_scores, negative_scores))


def trc_from_ordinality(o: np.ndarray) -> TracerRecoveryCurve:
    """The :class:`TracerRecoveryCurve` of tracers whose ordinalities against the negatives are ``o``."""
    o = np.asarray(o, dtype=np.float64)
    xs = np.unique(o)
    # fraction of tracers with ordinality >= x, for every distinct x
    rec = 1.0 - np.searchsorted(np.sort(o), xs, side="left") / o.shape[0]
    if xs[0] > 0.0:
        xs = np.concatenate([[0.0], xs])
        rec = np.concatenate([[1.0], rec])
    return TracerRecoveryCurve(xs, rec, o)


def ranking_performance(tracer_scores, negative_scores) -> float:
    """Ranking performance: ``2·mean(ordinality_against(tracers, negatives)) − 1``.

    Equals ``2·AUC − 1`` (ties counted half). Exact integer counting; no sort of the
    negatives: one parallel pass over them with a binary search among the distinct tracer
    scores (or the other way round when negatives are the fewer).
    """
    t, n = _checked_pair(tracer_scores, negative_scores, "tracer scores", "negative scores")
    if t.shape[0] <= n.shape[0]:
        _, inverse, less, eq = _counts_against(t, n)
        counts = np.bincount(inverse, minlength=less.shape[0])
        twice = int(np.dot(2 * less + eq, counts))  # Σ_t 2·below + equal
    else:  # count tracers above each distinct negative instead
        _, inverse, less, eq = _counts_against(n, t)
        counts = np.bincount(inverse, minlength=less.shape[0])
        above = t.shape[0] - less - eq
        twice = int(np.dot(2 * above + eq, counts))
    return 2.0 * twice / (2.0 * t.shape[0] * n.shape[0]) - 1.0


def fraction_above(tracer_scores, negative_scores, cut: float = 0.995) -> float:
    """Fraction of tracers whose ordinality against the negatives is above ``cut`` (strictly)."""
    if not 0.0 <= cut <= 1.0:
        raise InputError(f"cut: ordinality cut must be in [0, 1], got {cut}")
    return float(np.mean(ordinality_against(tracer_scores, negative_scores) > cut))


def auc(scores, labels) -> float:
    """ROC AUC with ties counted half, from scores and binary labels (1 = positive)."""
    s = np.asarray(scores)
    y = np.asarray(labels)
    if s.shape != y.shape:
        raise InputError(f"scores and labels have mismatched lengths: {s.shape} vs {y.shape}")
    y = y.astype(bool) if y.dtype != bool else y
    if y.all() or not y.any():
        raise InputError("labels: need at least one positive and one negative")
    return (ranking_performance(s[y], s[~y]) + 1.0) / 2.0
