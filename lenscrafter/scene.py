"""The scene painter behind LensCrafter's non-lens scenes and the field around crafted lenses.

:class:`_Scene` collects Sersic, star and ring components (rows of the kernel's component
table, flux in counts) for one cutout, drawing from its own ``numpy`` generator; colours are
(i/g, r/g) flux ratios. :func:`field_rows` adds faint field galaxies to scenes that already
exist (used by :func:`deepmine.lenscrafter.craft_lenses` with ``field > 0``). Lives apart from
:mod:`.negatives` so that :mod:`.synth` and :mod:`.negatives` do not import each other.
"""
from __future__ import annotations

import numpy as np

from . import kernels
from .profiles import magnitude_to_flux, sersic_amp_from_flux

_RED = (20.5, 5.5)  # i/g, r/g flux ratios of an early type (Figure 4.2 foreground)
_SEED_SALT = 0x4E47


def _colour(rng, kind: str) -> tuple[float, float]:
    """(i/g, r/g) flux ratios: red early types, blue star-forming, or in between."""
    if kind == "red":
        s = 10 ** rng.normal(0, 0.12)
        return _RED[0] * s, _RED[1] * 10 ** rng.normal(0, 0.08)
    if kind == "blue":
        gi = rng.uniform(0.2, 1.2)
        return 10 ** (0.4 * gi), 10 ** (0.4 * gi * rng.uniform(0.5, 0.7))
    gi = rng.uniform(1.0, 3.0)  # intermediate
    return 10 ** (0.4 * gi), 10 ** (0.4 * gi * 0.6)


class _Scene:
    def __init__(self, rng, pixel_scale, zero_point, half):
        self.rng = rng
        self.ps = pixel_scale
        self.zp = zero_point
        self.half = half  # half-size of the cutout, arcsec
        self.rows: list[np.ndarray] = []
        self.post: list[tuple] = []
        self.main: dict = {}

    def _row(self, kind, x, y, r, n, q, phi, flux_g, colour):
        row = np.zeros(kernels.NF)
        row[0] = kind
        row[2:7] = (x, y, r, n, q)
        row[7] = np.cos(phi)
        row[8] = np.sin(phi)
        ri, rr = colour
        row[9:12] = magnitude_to_flux(flux_g, self.zp) * np.array([ri, rr, 1.0])  # caller converts
        self.rows.append(row)
        return row

    def sersic(self, x, y, r_eff, n, e, phi, m_g, colour, main=False):
        row = self._row(kernels.SERSIC, x, y, r_eff, n, 1.0 - e, phi, m_g, colour)
        row[9:12] *= sersic_amp_from_flux(1.0, r_eff, n) * self.ps**2
        if main:
            self.main = {"m_g_main": m_g, "r_eff_main": r_eff, "n_main": n, "e_main": e}
        return row

    def spiral(self, x, y, r_eff, n, e, phi, m_g, colour, arms, amp, pitch_deg, phase):
        row = self.sersic(x, y, r_eff, n, e, phi, m_g, colour)
        row[0] = kernels.SPIRAL
        row[12:16] = (amp, arms, 1.0 / np.tan(np.radians(pitch_deg)), phase)
        return row

    def ring(self, x, y, radius, width, e, phi, m_g, colour):
        row = self._row(kernels.RING, x, y, radius, width, 1.0 - e, phi, m_g, colour)
        # total flux of a thin Gaussian ring ≈ (2π)^{3/2}·R·w·peak (circularised radius)
        row[9:12] *= self.ps**2 / ((2 * np.pi) ** 1.5 * radius * width)
        return row

    def star(self, x, y, m_g, colour):
        return self._row(kernels.POINT, x, y, 0.0, 1.0, 1.0, 0.0, m_g, colour)

    def trail(self, x, y, phi, width, sb_peak, bands):
        row = np.zeros(kernels.NF)
        row[0] = kernels.TRAIL
        row[2:7] = (x, y, width, 1.0, 1.0)
        row[7] = np.cos(phi)
        row[8] = np.sin(phi)
        row[9:12] = sb_peak * np.asarray(bands, float)
        self.rows.append(row)

    def anywhere(self, margin=0.0):
        h = self.half - margin
        return self.rng.uniform(-h, h, 2)

    def galaxy(self, x, y, m_g, main=False):
        """A random galaxy: early type, disc or spiral."""
        rng = self.rng
        t = rng.choice(3, p=[0.4, 0.35, 0.25])
        phi = rng.uniform(0, np.pi)
        if t == 0:
            self.sersic(x, y, np.exp(rng.uniform(np.log(0.25), np.log(2.0))), rng.uniform(2.5, 6),
                        rng.uniform(0, 0.45), phi, m_g, _colour(rng, "red"), main)
        elif t == 1:
            self.sersic(x, y, np.exp(rng.uniform(np.log(0.3), np.log(2.0))), rng.uniform(0.6, 1.5),
                        rng.uniform(0.1, 0.8), phi, m_g, _colour(rng, "blue"), main)
        else:
            r = np.exp(rng.uniform(np.log(0.5), np.log(2.0)))
            self.spiral(x, y, r, 1.0, rng.uniform(0, 0.5), phi, m_g, _colour(rng, "blue"),
                        int(rng.integers(2, 4)), rng.uniform(0.5, 1.2), rng.uniform(10, 30), rng.uniform(0, 6.3))
            if main:
                self.main = {"m_g_main": m_g, "r_eff_main": r, "n_main": 1.0, "e_main": 0.0}

    def field(self, mean=1.2):
        for _ in range(self.rng.poisson(mean)):
            x, y = self.anywhere()
            self.galaxy(x, y, self.rng.uniform(22.0, 26.5))


def field_rows(comp, starts, mean, *, seed, index_offset, size, pixel_scale, zero_point):
    """Append Poisson(``mean``) faint field galaxies to every scene of (comp, starts)."""
    half = 0.5 * size * pixel_scale
    out, new_starts = [], [0]
    for i in range(len(starts) - 1):
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, index_offset + i, _SEED_SALT + 1])
        sc = _Scene(rng, pixel_scale, zero_point, half)
        sc.field(mean)
        out.append(comp[starts[i]:starts[i + 1]])
        if sc.rows:
            out.append(np.array(sc.rows))
        new_starts.append(new_starts[-1] + starts[i + 1] - starts[i] + len(sc.rows))
    return np.concatenate(out), np.asarray(new_starts, dtype=np.int64)
