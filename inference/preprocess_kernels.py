"""Compiled kernels of :mod:`.preprocess` (imported on first use: scanning uint8 cutouts never loads Numba).

Percentile normalisation without a sort
---------------------------------------
numpy's ``"linear"`` percentile of the ``m`` finite pixels of a band needs only the order
statistics at ranks ``a = ⌊p/100·(m−1)⌋`` and ``a + 1``, for ``p`` = low and high. With the
default 0.5/99.5 % on a 64×64 band these are among the 22 smallest and the 23 largest of 4,096
values, so one pass over the band keeps the smallest ``klo`` and the largest ``khi`` finite
values in two short sorted buffers (insertion; almost every pixel is rejected by one comparison
with the buffer's last entry) and counts ``m``. A second pass scales and rounds the pixels. When
the tails would be longer than :data:`MAX_TAIL` (wide percentiles, big cutouts) or a rank falls
outside them, the finite values are copied and ``np.partition`` selects the ranks (O(npix), no
full sort). The arithmetic after the selection is the sort-based kernel's, expression for
expression, in float64, so the uint8 output is byte-identical to it (tests/inference/test_preprocess_fast.py
checks that against an independent numpy reference on random and adversarial inputs).
"""
from __future__ import annotations

import numba as nb
import numpy as np

#: longest tail (values kept per end) of the one-pass selection; longer ones use np.partition
MAX_TAIL = 64


@nb.njit(cache=True)
def tail_sizes(npix, low, high):  # pragma: no cover - compiled
    """Values to keep at each end so that the ranks a, a+1 of both percentiles are inside the tails.

    ``(0, 0)`` when either would exceed :data:`MAX_TAIL` (then np.partition selects).
    """
    klo = int(np.floor(low / 100.0 * (npix - 1))) + 3
    khi = (npix - 1) - int(np.floor(high / 100.0 * (npix - 1))) + 3
    klo = min(klo, npix)
    khi = min(khi, npix)
    if klo > MAX_TAIL or khi > MAX_TAIL:
        return 0, 0
    return klo, khi


@nb.njit(cache=True)
def _tails(src, klo, khi, lo_buf, hi_buf):  # pragma: no cover - compiled
    """One pass: the ``klo`` smallest finite values ascending, the ``khi`` largest descending; returns m."""
    for q in range(klo):
        lo_buf[q] = np.inf
    for q in range(khi):
        hi_buf[q] = -np.inf
    lo_cut = np.inf
    hi_cut = -np.inf
    m = 0
    for p in range(src.size):
        v = np.float64(src[p])
        if not np.isfinite(v):
            continue
        m += 1
        if v < lo_cut:
            q = klo - 1
            while q > 0 and lo_buf[q - 1] > v:
                lo_buf[q] = lo_buf[q - 1]
                q -= 1
            lo_buf[q] = v
            lo_cut = lo_buf[klo - 1]
        if v > hi_cut:
            q = khi - 1
            while q > 0 and hi_buf[q - 1] < v:
                hi_buf[q] = hi_buf[q - 1]
                q -= 1
            hi_buf[q] = v
            hi_cut = hi_buf[khi - 1]
    return m


@nb.njit(cache=True)
def _from_tails(r, m, klo, khi, lo_buf, hi_buf):  # pragma: no cover - compiled
    """The value of ascending rank ``r`` among ``m`` if the tails hold it; NaN if they do not."""
    if r < klo:
        return lo_buf[r]
    t = m - 1 - r
    if t < khi:
        return hi_buf[t]
    return np.nan


@nb.njit(cache=True)
def _lerp_ranks(p, m):  # pragma: no cover - compiled
    """numpy 'linear' percentile position: (ranks a, b, fraction) of percentile ``p`` among ``m``."""
    pos = p / 100.0 * (m - 1)
    a = int(np.floor(pos))
    b = min(a + 1, m - 1)
    return a, b, pos - a


@nb.njit(cache=True)
def percentile_plane(src, low, high, klo, khi, dst):  # pragma: no cover - compiled
    """Normalise one band: ``src`` (1-D float32/float64, a contiguous plane) → ``dst`` (1-D uint8).

    ``klo, khi`` from :func:`tail_sizes` for ``src.size`` (any values work; (0, 0) always
    selects with np.partition). NaN/inf pixels are ignored and become 0; a band without
    finite pixels or with equal percentiles becomes all 0.
    """
    npix = src.size
    a_lo = b_lo = a_hi = b_hi = 0
    f_lo = f_hi = 0.0
    va_lo = vb_lo = va_hi = vb_hi = np.nan
    m = 0
    if klo > 0:
        lo_buf = np.empty(klo)
        hi_buf = np.empty(khi)
        m = _tails(src, klo, khi, lo_buf, hi_buf)
        if m > 0:
            a_lo, b_lo, f_lo = _lerp_ranks(low, m)
            a_hi, b_hi, f_hi = _lerp_ranks(high, m)
            va_lo = _from_tails(a_lo, m, klo, khi, lo_buf, hi_buf)
            vb_lo = _from_tails(b_lo, m, klo, khi, lo_buf, hi_buf)
            va_hi = _from_tails(a_hi, m, klo, khi, lo_buf, hi_buf)
            vb_hi = _from_tails(b_hi, m, klo, khi, lo_buf, hi_buf)
    if klo == 0 or (m > 0 and (np.isnan(va_lo) or np.isnan(vb_lo) or np.isnan(va_hi) or np.isnan(vb_hi))):
        buf = np.empty(npix)
        m = 0
        for p in range(npix):
            v = np.float64(src[p])
            if np.isfinite(v):
                buf[m] = v
                m += 1
        if m > 0:
            a_lo, b_lo, f_lo = _lerp_ranks(low, m)
            a_hi, b_hi, f_hi = _lerp_ranks(high, m)
            kth = np.array([a_lo, b_lo, a_hi, b_hi])
            vals = np.partition(buf[:m], kth)
            va_lo, vb_lo, va_hi, vb_hi = vals[a_lo], vals[b_lo], vals[a_hi], vals[b_hi]
    if m == 0:
        dst[:] = 0
        return
    lo = va_lo + f_lo * (vb_lo - va_lo)
    hi = va_hi + f_hi * (vb_hi - va_hi)
    span = hi - lo
    if span <= 0.0:
        dst[:] = 0
        return
    for p in range(npix):
        v = src[p]
        if not np.isfinite(v):
            dst[p] = 0
            continue
        t = (v - lo) / span
        if t < 0.0:
            t = 0.0
        elif t > 1.0:
            t = 1.0
        dst[p] = np.uint8(np.floor(t * 255.0 + 0.5))


@nb.njit(parallel=True, cache=True, nogil=True)
def percentile_batch(x, low, high, out):  # pragma: no cover - compiled
    """:func:`percentile_plane` over every band of a C-contiguous N×C×H×W array, in parallel."""
    n, c, h, w = x.shape
    klo, khi = tail_sizes(h * w, low, high)
    for k in nb.prange(n * c):
        i = k // c
        j = k % c
        percentile_plane(x[i, j].reshape(h * w), low, high, klo, khi, out[i, j].reshape(h * w))


@nb.njit(parallel=True, cache=True)
def histmatch_batch(x, template, out):  # pragma: no cover - compiled
    """Histogram matching of every band of an N×C×H×W float32 array to ``template`` quantiles."""
    n, c, h, w = x.shape
    npix = h * w
    k = template.shape[0]
    for q in nb.prange(n * c):
        i = q // c
        j = q % c
        plane = x[i, j].ravel().copy()
        for p in range(npix):
            if not np.isfinite(plane[p]):
                plane[p] = -np.inf  # NaN/inf pixels rank lowest and end at 0 below
        order = np.argsort(plane, kind="mergesort")
        flat = out[i, j].ravel()
        for r in range(npix):
            p = order[r]
            if plane[p] == -np.inf:
                flat[p] = 0.0
                continue
            u = (r + 0.5) / npix * (k - 1)
            a = int(np.floor(u))
            b = min(a + 1, k - 1)
            flat[p] = template[a] + (u - a) * (template[b] - template[a])
        out[i, j] = flat.reshape(h, w)
