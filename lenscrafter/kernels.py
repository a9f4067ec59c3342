"""Numba kernels of the synthesis: random numbers, noise, separable PSF convolution, rendering.

Everything per image is written as a small ``@njit`` function so that the array functions of
:mod:`.pipeline` and the batched renderer :func:`render_batch` share one implementation.

Random numbers are SplitMix64 streams keyed by ``(seed, index)``: every scene of a batch draws
from its own stream, so the output does not depend on the number of threads nor on how a
batch is split into chunks.

Scenes are lists of components (rows of a float64 array, :data:`NF` fields each):

====  ===========================================================================
0     kind: SERSIC, RING, SPIRAL, POINT, TRAIL or SPIKE
1     plane: 0 = lens plane (not lensed), 1 = source plane (lensed by the scene's SIE)
2, 3  centre x, y (arcsec)
4     r_eff (arcsec) — ring radius for RING, trail/spike width (sigma) for TRAIL and SPIKE
5     Sersic n — ring width (sigma, arcsec) for RING, exponential length (arcsec) for SPIKE
6     q (minor/major)
7, 8  cos(phi), sin(phi) of the major axis (trail/spike direction for TRAIL, SPIKE)
9-11  amplitude per channel (i, r, g): value per pixel at R_eff (SERSIC, SPIRAL), at the
      ring's peak (RING), of the trail's spine (TRAIL), at the spike's centre (SPIKE: a
      diffraction spike through the centre, exp(−|along|/length) along, Gaussian across);
      total flux for POINT
12-15 SPIRAL: arm amplitude, number of arms, 1/tan(pitch), phase (rad)
====  ===========================================================================
"""
from __future__ import annotations

import math

import numba as nb
import numpy as np

from .profiles import NPREP, sersic_prep, sersic_set_cutoff, sersic_shape, sie_alpha, sie_prep
from .vmath import _FAST, vatan, vexp, vlog, vsincos_2pi

#: Profiles are truncated where they fall below this many counts per pixel (far below any noise).
PROFILE_FLOOR = 1e-7

SERSIC, RING, SPIRAL, POINT, TRAIL, SPIKE = 0, 1, 2, 3, 4, 5
NF = 16
NCHAN = 3

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_TWO53 = 1.0 / 9007199254740992.0


@nb.njit(cache=True, inline="always")
def _mix(z):  # pragma: no cover - compiled
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


@nb.njit(cache=True)
def stream_state(seed, index, stream):  # pragma: no cover
    """Initial SplitMix64 state of the stream ``(seed, index, stream)`` (a 1-element array)."""
    st = np.empty(1, dtype=np.uint64)
    z = _mix(np.uint64(seed) + _GOLDEN)
    z = _mix(z ^ (np.uint64(index) * _GOLDEN + np.uint64(1)))
    st[0] = _mix(z ^ (np.uint64(stream) * _M2 + np.uint64(7)))
    return st


@nb.njit(cache=True, inline="always")
def _uniform(st):  # pragma: no cover
    """Uniform deviate in (0, 1)."""
    st[0] += _GOLDEN
    return (float(_mix(st[0]) >> np.uint64(11)) + 0.5) * _TWO53


@nb.njit(cache=True, fastmath=_FAST)
def uniforms(st, out):  # pragma: no cover - compiled
    """Fill ``out`` with the next ``out.size`` uniforms of stream ``st`` (SIMD loop).

    Identical to ``out.size`` successive :func:`_uniform` calls.
    """
    base = st[0]
    for i in range(out.size):
        z = _mix(base + np.uint64(i + 1) * _GOLDEN)
        out[i] = (float(z >> np.uint64(11)) + 0.5) * _TWO53
    st[0] = base + np.uint64(out.size) * _GOLDEN


@nb.njit(cache=True, fastmath=_FAST)
def normals(st, out, t1, t2):  # pragma: no cover - compiled
    """Fill ``out`` (even or odd size) with N(0, 1) deviates by the Box-Muller transform.

    ``t1``, ``t2`` are float64 scratch arrays of at least ``(out.size + 1) // 2`` elements.
    """
    m = (out.size + 1) // 2
    u1 = t1[:m]
    u2 = t2[:m]
    uniforms(st, u1)
    uniforms(st, u2)
    lg = np.empty(m)
    sn = np.empty(m)
    vlog(u1, lg, sn)
    vsincos_2pi(u2, sn, u1)  # u1 now holds cos
    for i in range(m):
        rr = math.sqrt(-2.0 * lg[i])
        out[i] = rr * u1[i]
        if m + i < out.size:
            out[m + i] = rr * sn[i]


@nb.njit(cache=True, inline="always")
def _poisson_small(lam, st):  # pragma: no cover - compiled
    """Exact Poisson deviate by inversion (sequential search from 0), for small ``lam``."""
    u = _uniform(st)
    p = math.exp(-lam)
    cdf = p
    k = 0
    while u > cdf and k < 1000:
        k += 1
        p *= lam / k
        cdf += p
    return k


#: Mean (electrons) above which shot noise uses the normal approximation N(λ, λ).
POISSON_EXACT_BELOW = 16.0


@nb.njit(cache=True, inline="always")
def _normal_pair(st):  # pragma: no cover
    """Two independent N(0, 1) deviates (Marsaglia's polar method)."""
    while True:
        u = 2.0 * _uniform(st) - 1.0
        v = 2.0 * _uniform(st) - 1.0
        s = u * u + v * v
        if 0.0 < s < 1.0:
            f = math.sqrt(-2.0 * math.log(s) / s)
            return u * f, v * f


@nb.njit(cache=True)
def shot_noise_plane(img, gain, st):  # pragma: no cover
    """In place: ``img ← Poisson(max(img, 0)·gain) / gain`` (counts → electrons → counts).

    Exact Poisson deviates below :data:`POISSON_EXACT_BELOW` electrons, the normal approximation
    N(λ, λ) above (relative skewness error < 1/4 there; lenstronomy uses the normal
    approximation everywhere).
    """
    flat = img.ravel()
    m = flat.size
    spare = 0.0
    have = False
    for k in range(m):
        lam = flat[k] * gain
        if lam <= 0.0:
            flat[k] = 0.0
            continue
        if lam < POISSON_EXACT_BELOW:
            flat[k] = _poisson_small(lam, st) / gain
            continue
        if have:
            z = spare
            have = False
        else:
            z, spare = _normal_pair(st)
            have = True
        flat[k] = (lam + math.sqrt(lam) * z) / gain


@nb.njit(cache=True)
def gaussian_noise_plane(img, sigma, st):  # pragma: no cover
    """In place: add N(0, sigma²) to every pixel."""
    flat = img.ravel()
    m = flat.size
    z = np.empty(m)
    t1 = np.empty((m + 1) // 2)
    t2 = np.empty((m + 1) // 2)
    normals(st, z, t1, t2)
    for k in range(m):
        flat[k] += sigma * z[k]


@nb.njit(cache=True)
def photon_and_sky_noise_plane(img, gain, sigma, st):  # pragma: no cover
    """In place: photon noise (``gain`` e⁻/count; 0 = none) and sky noise N(0, sigma²) at once.

    Where the mean is below :data:`POISSON_EXACT_BELOW` electrons and the sky variance is less
    than 10× the photon variance, the photon count is an exact Poisson deviate; elsewhere photon
    and sky noise are one normal deviate of variance ``sigma² + img/gain`` (where the sky
    dominates that much the shape of the photon noise's distribution is invisible).
    """
    flat = img.ravel()
    m = flat.size
    s2 = sigma * sigma
    z = np.empty(m)
    t1 = np.empty((m + 1) // 2)
    t2 = np.empty((m + 1) // 2)
    normals(st, z, t1, t2)
    for k in range(m):
        v = flat[k]
        lam = v * gain
        var = s2
        if gain > 0.0:
            if lam <= 0.0:
                v = 0.0
            elif lam < POISSON_EXACT_BELOW and s2 * gain * gain < 10.0 * lam:
                v = _poisson_small(lam, st) / gain
            else:
                var += v / gain
        flat[k] = v + math.sqrt(var) * z[k]


@nb.njit(cache=True)
def convolve_separable(src, rows, cols, tmp, out):  # pragma: no cover
    """Valid correlation of ``src`` (Hp×Wp) with ``Σ_t cols[t] ⊗ rows[t]`` into ``out`` (H×W).

    ``rows``/``cols`` are (T, K) arrays of the (already flipped) separable terms;
    ``Hp = H + K − 1``, ``Wp = W + K − 1``; ``tmp`` is Hp×W scratch.
    """
    nt, kk = rows.shape
    hp = src.shape[0]
    h, w = out.shape
    out[:, :] = 0.0
    for t in range(nt):
        tmp[:, :] = 0.0
        for y in range(hp):
            for i in range(kk):
                r = rows[t, i]
                for x in range(w):
                    tmp[y, x] += r * src[y, x + i]
        for y in range(h):
            for j in range(kk):
                c = cols[t, j]
                for x in range(w):
                    out[y, x] += c * tmp[y + j, x]


@nb.njit(cache=True, inline="always", fastmath=True)
def _component_value(kind, row, pre, j, x, y):  # pragma: no cover
    """Normalised profile of component j at (x, y); ``pre[j]`` = its :func:`sersic_prep` constants."""
    if kind == SERSIC:
        return sersic_shape(x, y, pre, j)
    dx = x - pre[j, 7]
    dy = y - pre[j, 8]
    xp = pre[j, 5] * dx + pre[j, 6] * dy
    yp = -pre[j, 6] * dx + pre[j, 5] * dy
    if kind == TRAIL:
        t = yp / row[4]
        return math.exp(-0.5 * t * t)
    if kind == SPIKE:
        t = yp / row[4]
        return math.exp(-0.5 * t * t - abs(xp) / row[5])
    r = math.sqrt(pre[j, 2] * xp * xp + pre[j, 3] * yp * yp)
    if kind == RING:
        t = (r - row[4]) / row[5]
        return math.exp(-0.5 * t * t)
    if kind == SPIRAL:
        sq = math.sqrt(pre[j, 2])
        arg = row[13] * (math.atan2(yp / sq, xp * sq) - math.log(max(r, 1e-4) / row[4]) * row[14])
        return sersic_shape(x, y, pre, j) * max(0.0, 1.0 + row[12] * math.cos(arg + row[15]))
    return 0.0


@nb.njit(cache=True, fastmath=True)
def render_scene(comp, k0, k1, lens, pixel_scale, supersample, buf):  # pragma: no cover
    """Add the noiseless emission of components ``k0:k1`` to ``buf`` (C×Hp×Wp, counts/pixel).

    ``lens`` = (theta_e, q, cos phi, sin phi, centre x, centre y); theta_e = 0 turns lensing off.
    Pixel (r, c) of ``buf`` is centred at ``((c − (Wp−1)/2)·scale, (r − (Hp−1)/2)·scale)``;
    with ``supersample`` s each pixel averages s×s sub-pixel samples.
    """
    nch, hp, wp = buf.shape
    lensed = lens[0] > 0.0
    lp = np.zeros(NPREP)
    if lensed:
        sie_prep(lens[0], lens[1], lens[2], lens[3], lens[4], lens[5], lp)
    m = k1 - k0
    kinds = np.empty(m, dtype=np.int64)
    planes = np.empty(m, dtype=np.int64)
    pre = np.zeros((m, NPREP))
    amps = np.empty((m, 3))
    rowidx = np.empty(m, dtype=np.int64)
    ext = 0
    for j in range(m):  # extended components first, in a compact list
        row = comp[k0 + j]
        kd = int(row[0])
        if kd == POINT:
            continue
        kinds[ext] = kd
        rowidx[ext] = k0 + j
        planes[ext] = 1 if (row[1] > 0.5 and lensed) else 0
        sersic_prep(max(row[4], 1e-6), max(row[5], 0.05), row[6], row[7], row[8], row[2], row[3], pre[ext])
        amps[ext, 0] = row[9]
        amps[ext, 1] = row[10]
        amps[ext, 2] = row[11]
        if kd == SERSIC:
            sersic_set_cutoff(pre[ext], max(abs(row[9]), abs(row[10]), abs(row[11])), PROFILE_FLOOR)
        ext += 1
    s = supersample
    inv = 1.0 / (s * s)
    step = pixel_scale / s
    x0 = -(wp - 1) * 0.5 * pixel_scale - 0.5 * pixel_scale + 0.5 * step
    y0 = -(hp - 1) * 0.5 * pixel_scale - 0.5 * pixel_scale + 0.5 * step
    nser = 0
    for j in range(ext):
        if kinds[j] == SERSIC:
            nser += 1
    if nser > 0 and s == 1:  # fast path (lenses, most galaxies): SIMD row loops over the Sersics
        sel = np.empty(nser, dtype=np.int64)
        other = np.empty(ext - nser, dtype=np.int64)
        a = 0
        o = 0
        for j in range(ext):
            if kinds[j] == SERSIC:
                sel[a] = j
                a += 1
            else:
                other[o] = j
                o += 1
        _render_rows_sersic(lensed, lp, nser, planes[sel], pre[sel], amps[sel], x0, y0, step, buf)
        # the remaining (non-Sersic) components go through the generic loop below
        kinds_g = kinds[other]
        planes_g = planes[other]
        pre_g = pre[other]
        amps_g = amps[other]
        rowidx_g = rowidx[other]
        ext_g = ext - nser
    else:
        kinds_g = kinds[:ext]
        planes_g = planes[:ext]
        pre_g = pre[:ext]
        amps_g = amps[:ext]
        rowidx_g = rowidx[:ext]
        ext_g = ext
    if ext_g > 0:
        for r in range(hp):
            for c in range(wp):
                a0 = 0.0
                a1 = 0.0
                a2 = 0.0
                for sy in range(s):
                    y = y0 + (r * s + sy) * step
                    for sx in range(s):
                        x = x0 + (c * s + sx) * step
                        xs = x
                        ys = y
                        if lensed:
                            ax, ay = sie_alpha(x, y, lp)
                            xs = x - ax
                            ys = y - ay
                        for j in range(ext_g):
                            kd = kinds_g[j]
                            row = comp[rowidx_g[j]]
                            if planes_g[j] == 1:
                                v = _component_value(kd, row, pre_g, j, xs, ys)
                            else:
                                v = _component_value(kd, row, pre_g, j, x, y)
                            a0 += amps_g[j, 0] * v
                            a1 += amps_g[j, 1] * v
                            a2 += amps_g[j, 2] * v
                buf[0, r, c] += a0 * inv
                buf[1, r, c] += a1 * inv
                buf[2, r, c] += a2 * inv
    for k in range(k0, k1):  # point sources: bilinear deposit of the total flux
        if int(comp[k, 0]) != POINT:
            continue
        fc = comp[k, 2] / pixel_scale + (wp - 1) * 0.5
        fr = comp[k, 3] / pixel_scale + (hp - 1) * 0.5
        c0 = int(math.floor(fc))
        r0 = int(math.floor(fr))
        tc = fc - c0
        tr = fr - r0
        for dr in range(2):
            for dc in range(2):
                rr = r0 + dr
                cc = c0 + dc
                if rr < 0 or rr >= hp or cc < 0 or cc >= wp:
                    continue
                wgt = (tr if dr else 1.0 - tr) * (tc if dc else 1.0 - tc)
                for ch in range(nch):
                    buf[ch, rr, cc] += wgt * comp[k, 9 + ch]


@nb.njit(cache=True, fastmath=_FAST)
def _render_rows_sersic(lensed, lp, ext, planes, pre, amps, x0, y0, step, buf):  # pragma: no cover
    """Row-by-row rendering of Sersic-only scenes with the vectorisable math of :mod:`.vmath`.

    Same formulae as :func:`sie_alpha` and :func:`sersic_shape` (tested equal to 1e-12).
    """
    nch, hp, wp = buf.shape
    xs = np.empty(wp)
    sx = np.empty(wp)
    sy = np.empty(wp)
    t1 = np.empty(wp)
    t2 = np.empty(wp)
    t3 = np.empty(wp)
    t4 = np.empty(wp)
    for c in range(wp):
        xs[c] = x0 + c * step
    for r in range(hp):
        y = y0 + r * step
        if lensed:
            b, eps, q2, s, qs, cphi, sphi, cx, cy, circ, s2 = (lp[0], lp[1], lp[2], lp[3], lp[4], lp[5], lp[6],
                                                              lp[7], lp[8], lp[9], lp[10])
            dy = y - cy
            for c in range(wp):
                dx = xs[c] - cx
                xp = cphi * dx + sphi * dy
                yp = -sphi * dx + cphi * dy
                psi = math.sqrt(q2 * (s2 + xp * xp) + yp * yp)
                t1[c] = eps * xp / (psi + s)
                z = eps * yp / (psi + qs)
                t2[c] = (1.0 + z) / (1.0 - z)
                t4[c] = z
            if circ > 0.5:
                for c in range(wp):  # eps = 1 here: t1, t4 hold x'/(psi+s) and y'/(psi+q²s)
                    t3[c] = t1[c]
                    t2[c] = t4[c]
            else:
                vatan(t1, t3)
                vlog(t2, t4, sx)
                for c in range(wp):
                    t2[c] = 0.5 * t4[c]  # atanh
            for c in range(wp):
                axp = b * t3[c]
                ayp = b * t2[c]
                sx[c] = xs[c] - (cphi * axp - sphi * ayp)
                sy[c] = y - (sphi * axp + cphi * ayp)
        for j in range(ext):
            p0, bn, q, iq, ire2, cphi, sphi, cx, cy, floor, cut = (pre[j, 0], pre[j, 1], pre[j, 2], pre[j, 3],
                                                                   pre[j, 4], pre[j, 5], pre[j, 6], pre[j, 7],
                                                                   pre[j, 8], pre[j, 9], pre[j, 10])
            src = lensed and planes[j] == 1
            for c in range(wp):
                if src:
                    dx = sx[c] - cx
                    dy = sy[c] - cy
                else:
                    dx = xs[c] - cx
                    dy = y - cy
                xp = cphi * dx + sphi * dy
                yp = -sphi * dx + cphi * dy
                t1[c] = max((q * xp * xp + iq * yp * yp) * ire2, floor)
            vlog(t1, t2, t3)
            for c in range(wp):
                t2[c] = p0 * t2[c]
            vexp(t2, t3, t4)
            for c in range(wp):
                t3[c] = bn - bn * t3[c]
            vexp(t3, t2, t4)
            a0 = amps[j, 0]
            a1 = amps[j, 1]
            a2 = amps[j, 2]
            for c in range(wp):
                v = t2[c] if t1[c] <= cut else 0.0
                buf[0, r, c] += a0 * v
                buf[1, r, c] += a1 * v
                buf[2, r, c] += a2 * v


@nb.njit(parallel=True, cache=True, nogil=True)  # nogil: synth.craft_lens_chunks prepares the next chunk meanwhile
def render_batch(comp, starts, lenses, size, pixel_scale, supersample, rows, cols,
                 gain, sky_sigma, seed, index_offset, out):  # pragma: no cover
    """Render, convolve with the PSF, add photon and sky noise for N scenes in parallel.

    Photon noise is drawn after the PSF (photons are counted in detector pixels after the
    atmosphere has blurred them); the seed's pseudo-code draws it before, which smooths the
    photon noise. With coadd gains of ~10³ e⁻/count the difference is far below the sky noise,
    and the array functions of :mod:`.pipeline` let a user run the seed's order.

    Parameters
    ----------
    comp : (M, NF) float64 component rows; scene i owns rows ``starts[i]:starts[i+1]``.
    lenses : (N, 6) float64, see :func:`render_scene`.
    rows, cols : (C, T, K) float64 separable PSF terms per channel (K odd; K = 1, T = 1 and a
        unit tap for no PSF).
    gain : (C,) electrons per count (0 = no shot noise); sky_sigma : (C,) counts (0 = none).
    seed, index_offset : the random stream of scene i is ``(seed, index_offset + i)``.
    out : (N, C, size, size) float32 output.
    """
    n = lenses.shape[0]
    kk = rows.shape[2]
    pad = kk // 2
    hp = size + 2 * pad
    for i in nb.prange(n):
        buf = np.zeros((NCHAN, hp, hp))
        render_scene(comp, starts[i], starts[i + 1], lenses[i], pixel_scale, supersample, buf)
        st = stream_state(seed, index_offset + i, 0)
        tmp = np.empty((hp, size))
        res = np.empty((size, size))
        for ch in range(NCHAN):
            convolve_separable(buf[ch], rows[ch], cols[ch], tmp, res)
            if gain[ch] > 0.0 or sky_sigma[ch] > 0.0:
                photon_and_sky_noise_plane(res, gain[ch], sky_sigma[ch], st)
            for y in range(size):
                for x in range(size):
                    out[i, ch, y, x] = res[y, x]
