"""A selection function measured on real deflectors: ``deepmine selection --onto DEFLECTORS``.

Instead of crafting whole LensCrafter scenes, every lens of a cell is a LensCrafter arc painted
(:func:`deepmine.lenscrafter.paint_arcs`) around a real galaxy of the survey, so completeness is
measured on the survey's own backgrounds: its deflectors' light, neighbours, sky and artefacts.

**Cells** sample θ_E, the source (``m_arc`` = the source's unlensed g magnitude ``m_g_src``,
as in the LensCrafter grid, and any other source column) and the deflectors' own measured
properties (:data:`DEFLECTOR_AXES`):

* ``m_dfl``: the deflector's i-band AB magnitude in a 2″-radius aperture (:data:`APERTURE`)
  around its windowed centroid, sky-subtracted (:func:`~deepmine.lenscrafter.paint.galaxy_light.aperture_flux`);
* ``q_dfl``: the axis ratio of its i-band light from window-corrected second moments
  (:func:`~deepmine.lenscrafter.measure_light`).

Each lens of a cell paints onto a deflector drawn uniformly (with repeats) from those whose
measured properties fall in the cell's bins, from the stream (seed, cell, 2); a cell whose bins
hold no deflector gets no lenses (``n = 0``, fraction NaN). θ_E and source values are placed
in the cell as for the LensCrafter grid (:func:`~deepmine.lenscrafter.selection.measure.cell_uniforms`);
parameters that are neither axes nor fixed come from :func:`paint_arcs`'s priors
(``others = "prior"``, θ_E uniform 0.8–2.8″) or the Figure 4.2 reference lens
(``others = "reference"``); the SIE follows the galaxy's light (axis ratio, angle ± 10°).
With ``theta_e_from_light`` (``--theta-e-from-light``) θ_E is not a grid axis: every lens takes
it from its deflector's ``m_dfl`` through Faber–Jackson and the SIS relation
(:mod:`~deepmine.lenscrafter.paint.theta_prior`, clipped to 0.8–2.8″), so the cells bin the
source and the deflectors and θ_E follows the deflector's light.
Lens j of cell c is lens number ``c·per_cell + j`` (its arc noise stream), so results do not
depend on how cells are split into parts, and ``--resume`` works as for the LensCrafter grid.

**Reference pool**: by default the deflectors themselves, unpainted (real negatives of the
same survey), scored by the same model: a painted lens is detected when the model ranks it
above 99.5 % of the real galaxies. A pool needs at least 1 / (1 − cut) cutouts (200 at 0.995).

Painted cutouts are scanned as the scanner scans a float stack: float32 flux in, the model's
own preprocessing (percentile normalisation for the HSC models) applied by ``Model.predict``.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deepmine.inference.errors import InputError, file_error

from ..paint.theta_prior import APERTURE as _APERTURE
from .cells import cell_seeds, cell_uniforms
from .grid import SelectionGrid, make_axis
from .pool import POOL_CHUNK, now_utc, select_bands

__all__ = ["OntoSource", "prepare_onto", "default_onto_grid", "known_onto_parameters", "score_deflectors",
           "read_onto_grid", "check_onto_grid",
           "measure_deflectors", "DEFLECTOR_AXES", "APERTURE"]

#: The deflectors' measured properties a grid may bin.
DEFLECTOR_AXES = {
    "m_dfl": "i-band AB magnitude in a 2″-radius aperture (sky-subtracted)",
    "q_dfl": "axis ratio of the i-band light (second moments)",
}
#: Aperture radius (arcsec) of ``m_dfl`` (one definition: :mod:`~deepmine.lenscrafter.paint.theta_prior`).
APERTURE = _APERTURE
#: Largest relative difference between the deflectors' and the model's pixel scales.
PIXEL_SCALE_TOLERANCE = 0.05


def known_onto_parameters() -> list:
    """Parameter columns a ``--onto`` grid may name: θ_E, the source columns, :data:`DEFLECTOR_AXES`."""
    from ..paint.arcs import SOURCE_COLUMNS

    return ["theta_e", *SOURCE_COLUMNS, *DEFLECTOR_AXES]


def measure_deflectors(d, zero_point_i: float, pixel_scale: float, chunk: int = POOL_CHUNK,
                       progress=None) -> dict:
    """``m_dfl`` and ``q_dfl`` (see the module docstring) of every cutout of ``d`` (:class:`Deflectors`).

    A deflector without light above the sky in its aperture gets ``m_dfl`` = NaN (in no bin).
    """
    from ..paint.galaxy_light import measure_light
    from ..paint.theta_prior import deflector_magnitude

    m = np.empty(d.n)
    q = np.empty(d.n)
    for s in range(0, d.n, int(chunk)):
        e = min(s + int(chunk), d.n)
        a = d.read(s, e)
        light = measure_light(a, pixel_scale=pixel_scale)
        m[s:e] = deflector_magnitude(a, light["x"], light["y"], np.asarray(light["sky"])[:, 0], zero_point_i,
                                     pixel_scale)
        q[s:e] = np.where(np.asarray(light["found"]), np.asarray(light["q_light"]), np.nan)
        if progress is not None:
            progress(e - s)
    return {"m_dfl": m, "q_dfl": q}


@dataclass(eq=False)
class OntoSource:
    """Real deflectors to paint a selection function's lenses on (picklable for distributed parts).

    Attributes
    ----------
    path : the deflector stack (FITS cube, ``.npy``) or directory of FITS cutouts
    bands : the file's band order
    pixel_scale : arcsec per pixel; zero_point, gain : 3 values each (i, r, g; e- per flux unit)
    psf : PSF kernels (3×K×K, i, r, g); psf_desc : how it was given
    properties : measured ``m_dfl`` and ``q_dfl`` of every deflector
    n, size : number of deflectors and their side (pixels)
    follow_light : the SIE follows the galaxy's light (axis ratio and angle)
    theta_e_light : parameters of the light-following θ_E prior (empty: θ_E from the grid or
        uniform; see :mod:`~deepmine.lenscrafter.paint.theta_prior`)
    stamp : the input's identity (bytes and modification time) for resume checks
    survey : for survey images + a catalogue, how to reopen them: ``images``, ``catalog``,
        ``columns``, ``bands`` (``path`` is then the catalogue)
    """

    path: str
    bands: tuple
    pixel_scale: float
    zero_point: tuple
    gain: tuple
    psf: np.ndarray
    psf_desc: str
    properties: dict
    n: int
    size: int
    follow_light: bool = True
    stamp: dict = field(default_factory=dict)
    survey: dict = field(default_factory=dict)
    _open: object = field(default=None, repr=False, compare=False)
    _groups: dict = field(default_factory=dict, repr=False, compare=False)
    theta_e_light: dict = field(default_factory=dict)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_open"], state["_groups"] = None, {}
        return state

    def deflectors(self):
        """The opened :class:`~deepmine.lenscrafter.paint.onto.Deflectors` (once per process)."""
        if self._open is None:
            from ..paint.onto import read_deflectors

            if self.survey:
                sv = self.survey
                self._open = read_deflectors(sv["images"], bands=sv["bands"], catalog=sv["catalog"], size=self.size,
                                             **sv["columns"])
            else:
                self._open = read_deflectors(self.path, bands=self.bands)
        return self._open

    def identity(self) -> dict:
        """What the painted lenses depend on (JSON-ready): the manifest of resumable parts holds it."""
        return {"path": str(Path(self.path).resolve()), "n": int(self.n), "size": int(self.size),
                "bands_in_file": ",".join(self.bands), "pixel_scale": float(self.pixel_scale),
                "zero_point": [float(v) for v in self.zero_point], "gain_e_per_unit": [float(v) for v in self.gain],
                "psf": self.psf_desc, "psf_sha256": hashlib.sha256(np.ascontiguousarray(self.psf).tobytes()).hexdigest(),
                "follow_light": bool(self.follow_light), **self.stamp,
                **({"theta_e_light": dict(self.theta_e_light)} if self.theta_e_light else {}),
                **({"images": [str(Path(p).resolve()) for p in self.survey["images"]], "columns": self.survey["columns"]}
                   if self.survey else {})}  # fmt: skip

    def check_model(self, model) -> None:
        """Refuse (one line naming the deflectors) a model whose cutout size or pixel scale differs."""
        c, h, w = model.input_shape
        if (h, w) != (self.size, self.size):
            raise file_error(self.path, f"holds {self.size}×{self.size} cutouts; the model takes {h}×{w}")
        ms = float(model.metadata.pixel_scale)
        if abs(self.pixel_scale / ms - 1.0) > PIXEL_SCALE_TOLERANCE:
            raise file_error(self.path, f"pixel scale {self.pixel_scale:.4g}\"/px differs from the model's "
                                        f"{ms:.4g}\"/px by more than {PIXEL_SCALE_TOLERANCE:.0%}")
        select_bands(np.empty((0, 3, 1, 1)), model.metadata.bands)

    def _group(self, grid: SelectionGrid):
        """(per-deflector key of its deflector-axis bins, sorted order, key boundaries) for ``grid``."""
        key = grid.to_json()
        if key not in self._groups:
            axes = [a for a in grid.axes if a.column in DEFLECTOR_AXES]
            bins = []
            for a in axes:
                v = self.properties[a.column]
                e = a.edges
                b = np.searchsorted(e, v, side="right") - 1
                b = np.where(v == e[-1], a.bins - 1, b)
                bins.append(np.where(np.isfinite(v) & (b >= 0) & (b < a.bins), b, -1))
            if axes:
                bad = np.any(np.stack(bins) < 0, axis=0)
                k = np.ravel_multi_index([np.maximum(b, 0) for b in bins], [a.bins for a in axes])
                k = np.where(bad, -1, k)
            else:
                k = np.zeros(self.n, dtype=np.int64)
            order = np.argsort(k, kind="stable")
            self._groups = {key: (axes, k[order], order)}
        return self._groups[key]

    def choose(self, grid: SelectionGrid, cells, per_cell: int, seed: int) -> np.ndarray:
        """(cells × per_cell) deflector indices, −1 where a cell's bins hold no deflector."""
        axes, sorted_keys, order = self._group(grid)
        root, _ = cell_seeds(seed)
        idx = grid.unravel(cells)
        pos = [grid.axes.index(a) for a in axes]
        keys = (np.ravel_multi_index([idx[:, p] for p in pos], [a.bins for a in axes]) if axes
                else np.zeros(len(idx), dtype=np.int64))
        lo = np.searchsorted(sorted_keys, keys, side="left")
        hi = np.searchsorted(sorted_keys, keys, side="right")
        out = np.full((len(idx), int(per_cell)), -1, dtype=np.int64)
        for i, c in enumerate(np.asarray(cells, dtype=np.int64)):
            if hi[i] > lo[i]:
                rng = np.random.default_rng(np.random.SeedSequence(root.entropy, spawn_key=(int(c), 2)))
                out[i] = order[lo[i] + rng.integers(0, hi[i] - lo[i], size=int(per_cell))]
        return out

    def images_for_cells(self, grid: SelectionGrid, cells, per_cell: int, seed: int, model):
        """Painted cutouts of the lenses of ``cells`` (float32, the model's bands) and lenses per cell."""
        from ..paint.arcs import SOURCE_COLUMNS, THETA_E_DEFAULT, paint_arcs
        from ..params import REFERENCE

        cells = np.asarray(cells, dtype=np.int64)
        per_cell = int(per_cell)
        chosen = self.choose(grid, cells, per_cell, seed)
        keep = chosen >= 0
        counts = keep.sum(axis=1).astype(np.int64)
        c, h, w = model.input_shape
        if not keep.any():
            return np.empty((0, c, h, w), np.float32), counts
        _, craft_seed = cell_seeds(seed)
        u = cell_uniforms(seed, cells, per_cell, len(grid.axes)) if grid.sampling == "uniform" else None
        values = {col: np.full(cells.size * per_cell, float(v)) for col, v in grid.fixed.items()}
        values.update(grid.axis_values(cells, per_cell, u))
        flat = keep.ravel()
        lens_no = (cells[:, None] * per_cell + np.arange(per_cell)[None, :]).ravel()[flat]
        kw = {col: v[flat] for col, v in values.items() if col in SOURCE_COLUMNS}
        if grid.others == "reference":
            kw.update({col: float(REFERENCE[col]) for col in SOURCE_COLUMNS if col not in kw})
        te = values["theta_e"][flat] if "theta_e" in values else (
            float(REFERENCE["theta_e"]) if grid.others == "reference" and not self.theta_e_light else THETA_E_DEFAULT)
        painted, _ = paint_arcs(self.deflectors().take(chosen[keep]), pixel_scale=self.pixel_scale,
                                zero_point=np.asarray(self.zero_point), gain=np.asarray(self.gain), psf=self.psf,
                                seed=craft_seed, indices=lens_no, theta_e=te, follow_light=self.follow_light,
                                theta_e_from_light=dict(self.theta_e_light) or False, **kw)
        return select_bands(painted.astype(np.float32), model.metadata.bands), counts


def _stamp(paths) -> dict:
    from deepmine.inference.formats import split_extension

    files = []
    for p in paths:
        p = split_extension(p)[0]
        files += [p] if p.is_file() else sorted(f for f in p.iterdir() if f.is_file())
    st = [os.stat(f) for f in files]
    return {"bytes": int(sum(s.st_size for s in st)), "mtime_ns": int(max((s.st_mtime_ns for s in st), default=0))}


def prepare_onto(deflectors, *, zero_point=None, gain=None, exptime=None, psf=None, psf_fwhm=None,
                 psf_beta=None, pixel_scale=None, size=None, bands=None, follow_light: bool = True, progress=None, catalog=None,
                 columns=None, theta_e_from_light=False) -> OntoSource:
    """Open, check and measure DEFLECTORS for ``deepmine selection --onto``.

    The checks (band order, pixel scale, size, zero point, gain, PSF: a kernel, or a Gaussian or, with
    ``psf_beta``, Moffat FWHM) are those of
    ``deepmine craft --onto`` (:func:`deepmine.lenscrafter.paint.onto.calibrate`); ``progress`` is
    called with the number of deflectors measured. With ``catalog``, ``deflectors`` are three
    survey images cut around its sources (``columns``: ``ra_col``... as ``craft --onto``).
    """
    from ..paint.onto import calibrate, read_deflectors

    columns = dict(columns or {})
    d = read_deflectors(deflectors, bands=bands, catalog=catalog, size=size, pixel_scale=pixel_scale, **columns)
    given = list(deflectors) if isinstance(deflectors, (list, tuple)) else [deflectors]
    survey = ({"images": [str(p) for p in given], "catalog": str(catalog), "columns": columns, "bands": bands}
              if catalog is not None else {})
    scale, zp, eff_gain, kern, psf_desc = calibrate(d, pixel_scale=pixel_scale, size=size, zero_point=zero_point,
                                                    gain=gain, exptime=exptime, psf=psf, psf_fwhm=psf_fwhm,
                                                    psf_beta=psf_beta)
    light = {}
    if theta_e_from_light is not False and theta_e_from_light is not None:
        from ..paint.theta_prior import light_prior

        light = light_prior(theta_e_from_light)
    props = measure_deflectors(d, float(zp[0]), scale, progress=progress)
    return OntoSource(str(catalog if catalog is not None else given[0]), tuple(d.bands_in_file), float(scale),
                      tuple(map(float, zp)),
                      tuple(map(float, eff_gain)), np.asarray(kern), psf_desc, props, int(d.n), int(d.size),
                      bool(follow_light), _stamp([*given, *([catalog] if catalog is not None else [])]), survey, d,
                      theta_e_light=light)


def default_onto_grid(source: OntoSource, per_cell: int = 4) -> SelectionGrid:
    """θ_E (0.5–3″, 5 log bins) × m_arc (20–26, 6 bins) × m_dfl (the deflectors' range, 3 bins) ×
    q_dfl (0.2–1, 2 bins), other parameters from the priors. ``m_dfl`` spans the 1st to 99th
    percentile of the measured magnitudes, rounded out to 0.1 mag (at least 0.3 mag wide): the
    faintest and brightest 1 % (often a centroid on a faint neighbour) are left out. With the
    source's ``theta_e_light`` prior θ_E is no axis (it follows m_dfl)."""
    known = known_onto_parameters()
    m = source.properties["m_dfl"]
    m = m[np.isfinite(m)]
    if m.size == 0:
        raise file_error(source.path, "no deflector has light above the sky in its 2\" aperture")
    p1, p99 = np.percentile(m, [1.0, 99.0])
    lo, hi = np.floor(p1 * 10) / 10, np.ceil(p99 * 10) / 10
    hi = max(hi, lo + 0.3)
    axes = [*([] if source.theta_e_light else
              [make_axis("theta_e", 0.5, 3.0, 5, "log", where="default --onto grid", known=known)]),
            make_axis("m_arc", 20.0, 26.0, 6, where="default --onto grid", known=known),
            make_axis("m_dfl", lo, hi, 3, where="default --onto grid", known=known),
            make_axis("q_dfl", 0.2, 1.0, 2, where="default --onto grid", known=known)]
    return SelectionGrid(axes=axes, others="prior", per_cell=int(per_cell))


def read_onto_grid(path) -> SelectionGrid:
    """A grid file (:func:`~deepmine.lenscrafter.selection.grid.read_grid`) for ``--onto``, checked
    by :func:`check_onto_grid`."""
    from .grid import known_parameters, read_grid

    return check_onto_grid(read_grid(path, known=[*known_parameters(), *DEFLECTOR_AXES]))


def check_onto_grid(grid: SelectionGrid, source: OntoSource | None = None) -> SelectionGrid:
    """Refuse (one line) a grid naming parameters that a painted real deflector cannot vary, or
    θ_E when ``source`` draws it from the deflectors' light."""
    if source is not None and source.theta_e_light and (
            "theta_e" in grid.fixed or any(a.column == "theta_e" for a in grid.axes)):
        raise InputError("selection --onto --theta-e-from-light: theta_E follows the deflectors' light; "
                         "drop theta_e from the grid (or the option)")
    known = known_onto_parameters()
    bad = [a.name for a in grid.axes if a.column not in known] + [c for c in grid.fixed if c not in known]
    if bad:
        raise InputError(f"selection --onto: {bad[0]!r} describes a crafted deflector; with real deflectors a grid "
                         f"varies {', '.join(known)} (aliases m_arc, theta_e)")
    return grid


def score_deflectors(model, source: OntoSource, *, batch_size: int | None = None, progress=None):
    """The unpainted deflectors scored by ``model``: the default reference pool of ``--onto``."""
    from deepmine.inference.ranking.pool import ReferencePool

    d = source.deflectors()
    scores = np.empty(d.n, dtype=np.float32)
    for s in range(0, d.n, POOL_CHUNK):
        e = min(s + POOL_CHUNK, d.n)
        images = select_bands(d.read(s, e).astype(np.float32), model.metadata.bands)
        scores[s:e] = model.predict(images, batch_size=batch_size)[0]
        if progress is not None:
            progress(e - s)
    if not np.all(np.isfinite(scores)):
        raise file_error(source.path, "the model gave NaN/inf scores for some deflectors")
    return ReferencePool.from_scores(scores, model_hash=model.sha256, scoring_id=model.scoring_id,
                                     source=str(source.path), n_negatives=int(d.n), created=now_utc(),
                                     kind="unpainted deflectors (--onto)")
