"""Non-lens scenes (negatives) rendered through the same pipeline as the lenses.

A classifier trained against smooth ellipticals only learns nothing useful, so negatives cover
what a survey scan meets. Kinds (:data:`NEGATIVE_KINDS`):

``elliptical``  lone early-type galaxy (red, n 3–6)
``disc``        disc galaxy (blue-ish, n ≈ 1, often edge-on) with a small red bulge
``spiral``      bulge + logarithmic-spiral disc (2–3 arms, pitch 10–30°, blue arms)
``ring``        red galaxy with a blue star-forming ring (1–3″, no lensing): the hardest
                look-alike of an Einstein ring
``field``       2–6 galaxies of mixed types scattered over the cutout, no dominant centre
``star``        1–3 stars (PSF-shaped), one near the centre, bright ones included
``blend``       a red galaxy with 1–2 close (0.8–3″) blue companions, some elongated
                tangentially (look-alikes of arcs)
``artefact``    a galaxy with cosmic rays (sharp, one band), a satellite trail, or a
                saturated star with bleed trails

Every scene also gets the field population of :mod:`.field` (galaxies from published i-band
counts to i = 26 with published sizes and colours — mostly faint blue galaxies — and stars with
spikes and saturation), exactly as around the crafted lenses, so that neighbours do not tell
the classes apart. Early types (the main galaxy of ``elliptical``, ``ring`` and ``blend``) have
the red-sequence colours and the size–luminosity relation of the lens galaxies of
:func:`~deepmine.lenscrafter.params.sample_lens_params` (:func:`.field.early_type`).
Scene i is drawn from ``numpy.random.default_rng([seed, i, 0x4E47])``, its field from
``default_rng([seed, i, field.FIELD_SALT + 1])`` and its noise from the kernel stream
``(seed, i)``: reproducible, independent of threads and chunks.
"""
from __future__ import annotations

import numpy as np
from astropy.table import Table

from deepmine.inference.errors import InputError

from . import kernels
from .field import (
    FIELD_SALT,
    I_MAX,
    add_field,
    apply_saturation,
    early_type,
    flux_ratios,
    red_colour,
    saturate,
    star_rows,
)
from .pipeline import PIXEL_SCALE, ZERO_POINT
from .profiles import magnitude_to_flux, sersic_amp_from_flux
from .synth import field_scale, finish, observation, render

NEGATIVE_KINDS = ("elliptical", "disc", "spiral", "ring", "field", "star", "blend", "artefact")

_SEED_SALT = 0x4E47


def _colour(rng, kind: str) -> tuple[float, float]:
    """(i/g, r/g) flux ratios: red early types, blue star-forming, or in between."""
    if kind == "red":
        return red_colour(rng)
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
        """A star (:func:`.field.star_rows`: diffraction spikes when brighter than i = 19)."""
        self.rows.extend(star_rows(x, y, m_g, colour[0], colour[1], self.ps, self.zp, self.rng.uniform(0.0, 90.0)))

    def early_type(self, x, y, m_g, n, e, phi, main=False):
        """A red-sequence galaxy with the colours and size of the lens galaxies (:func:`.field.early_type`)."""
        et = early_type(self.rng, m_g)
        rr, ri = flux_ratios(et["g_r"][0], et["r_i"][0])
        r_eff = float(et["r_eff"][0])
        self.sersic(x, y, r_eff, n, e, phi, m_g, (float(ri), float(rr)), main)
        return r_eff

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


def _centre(rng, spread=0.3):
    return rng.normal(0.0, spread, 2)


def _build(kind: str, sc: _Scene) -> None:  # noqa: C901 - one branch per kind, kept together
    rng = sc.rng
    if kind == "elliptical":
        x, y = _centre(rng, 0.2)
        sc.early_type(x, y, rng.uniform(19.5, 23.5), rng.uniform(3.0, 6.0), rng.uniform(0.0, 0.4),
                      rng.uniform(0, np.pi), True)
    elif kind == "disc":
        x, y = _centre(rng, 0.2)
        phi = rng.uniform(0, np.pi)
        m = rng.uniform(19.5, 23.5)
        sc.sersic(x, y, np.exp(rng.uniform(np.log(0.5), np.log(3.0))), rng.uniform(0.7, 1.5),
                  rng.uniform(0.2, 0.85), phi, m, _colour(rng, rng.choice(["blue", "mid"])), True)
        if rng.random() < 0.7:
            sc.sersic(x, y, rng.uniform(0.15, 0.5), 4.0, rng.uniform(0, 0.3), phi,
                      m + rng.uniform(1.0, 3.5), _colour(rng, "red"))
    elif kind == "spiral":
        x, y = _centre(rng, 0.2)
        phi = rng.uniform(0, np.pi)
        m = rng.uniform(19.0, 23.0)
        r = np.exp(rng.uniform(np.log(0.8), np.log(3.0)))
        e = rng.uniform(0.0, 0.5)
        sc.spiral(x, y, r, 1.0, e, phi, m, _colour(rng, "blue"), int(rng.integers(2, 4)), rng.uniform(1.0, 2.5),
                  rng.uniform(10, 30), rng.uniform(0, 6.3))
        sc.main = {"m_g_main": m, "r_eff_main": r, "n_main": 1.0, "e_main": e}
        sc.sersic(x, y, rng.uniform(0.15, 0.6), rng.uniform(2, 4), e * 0.5, phi, m + rng.uniform(1.5, 3.5),
                  _colour(rng, "red"))
    elif kind == "ring":
        x, y = _centre(rng, 0.15)
        e = rng.uniform(0.0, 0.35)
        phi = rng.uniform(0, np.pi)
        m = rng.uniform(20.0, 23.0)
        sc.early_type(x, y, m, rng.uniform(2.0, 5.0), e, phi, True)
        sc.ring(x, y, rng.uniform(0.8, 3.0), rng.uniform(0.08, 0.35), rng.uniform(0, 0.4),
                phi + rng.normal(0, 0.3), m + rng.uniform(-1.0, 1.0), _colour(rng, "blue"))
    elif kind == "field":
        for j in range(int(rng.integers(2, 7))):
            x, y = sc.anywhere(1.0)
            sc.galaxy(x, y, rng.uniform(20.5, 25.0), main=(j == 0))
    elif kind == "star":
        x, y = _centre(rng, 0.3)
        m = rng.uniform(16.0, 22.5)
        sc.star(x, y, m, _colour(rng, "mid"))
        sc.main = {"m_g_main": m, "r_eff_main": 0.0, "n_main": 0.0, "e_main": 0.0}
        for _ in range(int(rng.integers(0, 3))):
            x, y = sc.anywhere()
            sc.star(x, y, rng.uniform(17.0, 24.0), _colour(rng, "mid"))
    elif kind == "blend":
        x, y = _centre(rng, 0.2)
        m = rng.uniform(20.0, 23.0)
        sc.early_type(x, y, m, rng.uniform(2.5, 6.0), rng.uniform(0, 0.4), rng.uniform(0, np.pi), True)
        for _ in range(int(rng.integers(1, 3))):
            d = rng.uniform(0.8, 3.0)
            a = rng.uniform(0, 2 * np.pi)
            tangential = rng.random() < 0.5
            phi = a + np.pi / 2 if tangential else rng.uniform(0, np.pi)
            sc.sersic(x + d * np.cos(a), y + d * np.sin(a), rng.uniform(0.15, 0.8), rng.uniform(0.5, 1.5),
                      rng.uniform(0.3, 0.8) if tangential else rng.uniform(0, 0.5), phi,
                      m + rng.uniform(0.5, 3.0), _colour(rng, "blue"))
    elif kind == "artefact":
        x, y = _centre(rng, 0.3)
        sc.galaxy(x, y, rng.uniform(20.0, 23.5), main=True)
        which = rng.choice(["cosmic_rays", "trail", "saturated_star"])
        if which == "trail":
            bands = np.zeros(3)
            if rng.random() < 0.7:
                bands[rng.integers(0, 3)] = 1.0
            else:
                bands[:] = 1.0
            px, py = sc.anywhere(2.0)
            sc.trail(px, py, rng.uniform(0, np.pi), rng.uniform(0.1, 0.3), rng.uniform(0.3, 5.0), bands)
        elif which == "saturated_star":
            px, py = sc.anywhere(1.0)
            sc.star(px, py, rng.uniform(14.0, 17.0), _colour(rng, "mid"))
            sc.post.append(("saturate", rng.uniform(150.0, 500.0)))
        else:
            sc.post.append(("cosmic_rays", int(rng.integers(1, 5))))
        sc.main["artefact"] = which
    else:  # pragma: no cover - checked by craft_negatives
        raise InputError(f"unknown negative kind {kind!r}")


def _cosmic_rays(img, rng, count, sky):
    """Sharp tracks (no PSF) in one band: 1–4 px wide segments 2–20 px long."""
    _, h, w = img.shape
    ch = rng.integers(0, 3)
    for _ in range(count):
        length = rng.uniform(2, 20)
        ang = rng.uniform(0, np.pi)
        y0, x0 = rng.uniform(0, h), rng.uniform(0, w)
        amp = rng.uniform(50, 1000) * max(sky[ch], 0.02)
        t = np.linspace(0.0, length, int(4 * length) + 2)
        yy = np.clip((y0 + t * np.sin(ang)).astype(int), 0, h - 1)
        xx = np.clip((x0 + t * np.cos(ang)).astype(int), 0, w - 1)
        img[ch, yy, xx] += amp
    return img


def craft_negatives(n: int, *, seed: int = 0, kinds=None, weights=None, size: int = 64,
                    pixel_scale: float = PIXEL_SCALE, noise: bool = True, psf=True, supersample: int = 1,
                    output: str = "uint8", zero_point: float = ZERO_POINT, gain=None, sky_sigma=None,
                    index_offset: int = 0, field=None, field_i_max: float = I_MAX):
    """Synthesize ``n`` non-lens scenes (see the module docstring for the kinds).

    Parameters
    ----------
    n : number of scenes.
    seed : scene i is drawn and noised from ``(seed, index_offset + i)``.
    kinds : sequence of kind names (default all of :data:`NEGATIVE_KINDS`); scene kinds cycle
        through them (or are drawn with ``weights`` when given), so small sets cover every kind.
    size, pixel_scale, noise, psf, supersample, output, zero_point, gain, sky_sigma :
        as :func:`craft_lenses`.
    field, field_i_max : the field population added to every scene, as :func:`craft_lenses`
        (``None`` or 1 = the published counts, a number scales them, 0 = none; faint limit
        ``field_i_max`` in i-band AB mag, default 26.0). Drawn from
        ``default_rng([seed, index_offset + i, field.FIELD_SALT + 1])``.

    Returns
    -------
    images : (n, 3, size, size) uint8 or float32, channels i, r, g.
    table : astropy Table with ``index, kind, n_components, m_g_main, r_eff_main, n_main,
        e_main, artefact`` per scene.
    """
    n = int(n)
    if n < 1:
        raise InputError(f"n={n!r}: expected at least 1 negative")
    kinds = NEGATIVE_KINDS if kinds is None else tuple(kinds)
    bad = [k for k in kinds if k not in NEGATIVE_KINDS]
    if bad or not kinds:
        raise InputError(f"kinds: unknown {', '.join(map(repr, bad)) or 'empty list'}; known: {', '.join(NEGATIVE_KINDS)}")
    if output not in ("uint8", "float32"):
        raise InputError(f"output={output!r}: expected 'uint8' or 'float32'")
    if weights is not None:
        w = np.asarray(weights, dtype=float)
        if w.shape != (len(kinds),) or np.any(w < 0) or not np.isfinite(w).all() or w.sum() <= 0:
            raise InputError(f"weights: expected {len(kinds)} non-negative numbers with a positive sum")
        w = w / w.sum()
    obs = observation(size=size, pixel_scale=pixel_scale, noise=noise, psf=psf, supersample=supersample,
                      gain=gain, sky_sigma=sky_sigma)
    scale = field_scale(field)
    half = 0.5 * obs.size * obs.pixel_scale
    all_rows, starts, posts, table_rows = [], [0], [], []
    for i in range(n):
        idx = index_offset + i
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, idx, _SEED_SALT])
        kind = kinds[idx % len(kinds)] if weights is None else kinds[rng.choice(len(kinds), p=w)]
        sc = _Scene(rng, obs.pixel_scale, zero_point, half)
        _build(kind, sc)
        all_rows.extend(sc.rows)
        starts.append(starts[-1] + len(sc.rows))
        posts.append((sc.post, rng))
        mn = sc.main
        table_rows.append((idx, kind, len(sc.rows), mn.get("m_g_main", np.nan), mn.get("r_eff_main", np.nan),
                           mn.get("n_main", np.nan), mn.get("e_main", np.nan), mn.get("artefact", "")))
    comp = np.array(all_rows) if all_rows else np.zeros((0, kernels.NF))
    lenses = np.zeros((n, 6))
    lenses[:, 1] = 1.0
    lenses[:, 2] = 1.0
    starts = np.asarray(starts, dtype=np.int64)
    field_post = ()
    if scale > 0:
        comp, starts, field_post = add_field(comp, starts, seed=seed, index_offset=index_offset, size=obs.size,
                                             pixel_scale=obs.pixel_scale, zero_point=zero_point, scale=scale,
                                             i_max=field_i_max, salt=FIELD_SALT + 1)
    imgs = apply_saturation(render(comp, starts, lenses, obs, seed, index_offset), field_post)
    for i, (post, rng) in enumerate(posts):
        for what, arg in post:
            if what == "cosmic_rays":
                _cosmic_rays(imgs[i], rng, arg, obs.sky_sigma if noise else np.full(3, 0.05))
            elif what == "saturate":
                saturate(imgs[i], rng, arg)
    table = Table(rows=table_rows, names=("index", "kind", "n_components", "m_g_main", "r_eff_main", "n_main",
                                          "e_main", "artefact"),
                  dtype=(np.int64, "U10", np.int64, float, float, float, float, "U14"))
    table["m_g_main"].unit = "mag"
    table["r_eff_main"].unit = "arcsec"
    table.meta["deepmine"] = "lenscrafter negatives"
    return finish(imgs, output), table
