"""Loop-vectorisable exp, log and atan on float64 arrays (for the synthesis fast path).

Numba on this platform has no SVML, so ``math.exp`` and friends are scalar libm calls that stop
LLVM from vectorising a loop. These versions use only arithmetic, selects and integer bit
operations on array views, so each loop compiles to SIMD code. Accuracy: relative error below
~2e-15 for exp (|x| ≤ 700; smaller arguments give 0), log (positive finite input) and atan
(Cephes' rational approximation); the tests compare them with NumPy.
"""
from __future__ import annotations

import math

import numba as nb
import numpy as np

_LOG2E = 1.4426950408889634
_LN2_HI = 0.6931471803691238
_LN2_LO = 1.9082149292705877e-10
_MAGIC = 6755399441055744.0  # 2**52 + 2**51: adding it rounds to an integer in the low bits
_MAGIC_BITS = np.int64(0x4338000000000000)
_SQRT2 = 1.4142135623730951
#: Fast-math flags without ``reassoc``: re-association would undo the rounding trick of vexp.
_FAST = {"nnan", "ninf", "nsz", "arcp", "contract", "afn"}


@nb.njit(cache=True, fastmath=_FAST)
def vexp(x, out, tmp):  # pragma: no cover - compiled
    """``out[:] = exp(x)`` for 1-D float64 arrays; ``tmp`` is float64 scratch of the same size."""
    n = x.size
    ti = tmp.view(np.int64)
    for i in range(n):
        v = min(max(x[i], -700.0), 700.0)
        tmp[i] = v * _LOG2E + _MAGIC  # round(v·log2 e) in the low bits
    for i in range(n):
        k = tmp[i] - _MAGIC
        v = min(max(x[i], -700.0), 700.0)
        r = (v - k * _LN2_HI) - k * _LN2_LO  # |r| <= ln2/2
        # Taylor series of exp(r) to r**12 (Horner)
        p = 2.08767569878681e-09
        p = p * r + 2.505210838544172e-08
        p = p * r + 2.755731922398589e-07
        p = p * r + 2.7557319223985893e-06
        p = p * r + 2.48015873015873e-05
        p = p * r + 0.0001984126984126984
        p = p * r + 0.001388888888888889
        p = p * r + 0.008333333333333333
        p = p * r + 0.041666666666666664
        p = p * r + 0.16666666666666666
        p = p * r + 0.5
        p = p * r + 1.0
        p = p * r + 1.0
        out[i] = p
    for i in range(n):
        ti[i] = ((ti[i] - _MAGIC_BITS) + np.int64(1023)) << np.int64(52)  # 2**k
    for i in range(n):
        out[i] = out[i] * tmp[i] if x[i] > -700.0 else 0.0


@nb.njit(cache=True, fastmath=_FAST)
def vlog(x, out, tmp):  # pragma: no cover - compiled
    """``out[:] = log(x)`` for positive finite 1-D float64 ``x``; ``tmp`` float64 scratch."""
    n = x.size
    xi = x.view(np.int64)
    ti = tmp.view(np.int64)
    oi = out.view(np.int64)
    for i in range(n):  # mantissa in [1, 2) into out, exponent (as magic float) into tmp
        b = xi[i]
        oi[i] = (b & np.int64(0x000FFFFFFFFFFFFF)) | np.int64(0x3FF0000000000000)
        ti[i] = ((b >> np.int64(52)) & np.int64(0x7FF)) - np.int64(1023) + _MAGIC_BITS
    for i in range(n):
        m = out[i]
        e = tmp[i] - _MAGIC
        big = m > _SQRT2
        m = 0.5 * m if big else m
        e = e + 1.0 if big else e
        f = (m - 1.0) / (m + 1.0)  # |f| <= 0.1716
        s = f * f
        # atanh series: log(m) = 2f·Σ s**k/(2k+1), s = f², to s**9 (Horner)
        p = 0.05263157894736842
        p = p * s + 0.058823529411764705
        p = p * s + 0.06666666666666667
        p = p * s + 0.07692307692307693
        p = p * s + 0.09090909090909091
        p = p * s + 0.1111111111111111
        p = p * s + 0.14285714285714285
        p = p * s + 0.2
        p = p * s + 0.3333333333333333
        p = p * s + 1.0
        out[i] = e * _LN2_HI + (e * _LN2_LO + 2.0 * f * p)


_AP0, _AP1, _AP2, _AP3, _AP4 = (-8.750608600031904122785e-1, -1.615753718733365076637e1,
                                -7.500855792314704667340e1, -1.228866684490136173410e2,
                                -6.485021904942025371773e1)
_AQ0, _AQ1, _AQ2, _AQ3, _AQ4 = (2.485846490142306297962e1, 1.650270098316988542046e2,
                                4.328810604912902668951e2, 4.853903996359136964868e2,
                                1.945506571482613964425e2)


@nb.njit(cache=True, fastmath=_FAST)
def vatan(x, out):  # pragma: no cover - compiled
    """``out[:] = atan(x)`` (Cephes, branch-free) for 1-D float64 arrays."""
    for i in range(x.size):
        v = x[i]
        a = abs(v)
        big = a > 2.414213562373095
        mid = a > 0.66
        t = -1.0 / max(a, 1e-300) if big else ((a - 1.0) / (a + 1.0) if mid else a)
        y0 = 0.5 * math.pi if big else (0.25 * math.pi if mid else 0.0)
        z = t * t
        p = (((_AP0 * z + _AP1) * z + _AP2) * z + _AP3) * z + _AP4
        q = ((((z + _AQ0) * z + _AQ1) * z + _AQ2) * z + _AQ3) * z + _AQ4
        r = y0 + (t * z * p / q + t)
        out[i] = r if v >= 0.0 else -r


@nb.njit(cache=True, fastmath=_FAST)
def vsincos_2pi(u, s_out, c_out):  # pragma: no cover - compiled
    """``sin(2πu)``, ``cos(2πu)`` for 1-D float64 ``u`` in [0, 1) (quadrant reduction + Taylor)."""
    for i in range(u.size):
        t = u[i] * 4.0
        kf = math.floor(t + 0.5)  # nearest quadrant 0..4
        r = (t - kf) * (0.5 * math.pi)  # |r| <= π/4
        r2 = r * r
        # Taylor series to r**13 / r**14 (Horner in r²)
        sn = 1.6059043836821613e-10
        sn = sn * r2 + -2.505210838544172e-08
        sn = sn * r2 + 2.7557319223985893e-06
        sn = sn * r2 + -0.0001984126984126984
        sn = sn * r2 + 0.008333333333333333
        sn = sn * r2 + -0.16666666666666666
        sn = sn * r2 + 1.0
        sn = sn * r
        cs = -1.1470745597729725e-11
        cs = cs * r2 + 2.08767569878681e-09
        cs = cs * r2 + -2.755731922398589e-07
        cs = cs * r2 + 2.48015873015873e-05
        cs = cs * r2 + -0.001388888888888889
        cs = cs * r2 + 0.041666666666666664
        cs = cs * r2 + -0.5
        cs = cs * r2 + 1.0
        kq = kf - 4.0 * math.floor(kf * 0.25)  # quadrant 0..3, kept in floating point (SIMD selects)
        q0 = kq < 0.5
        q1 = kq < 1.5
        q2 = kq < 2.5
        s_out[i] = sn if q0 else (cs if q1 else (-sn if q2 else -cs))
        c_out[i] = cs if q0 else (-sn if q1 else (-cs if q2 else sn))
