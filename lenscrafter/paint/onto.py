"""``deepmine craft --onto``: LensCrafter arcs painted onto a survey's own cutouts, as files.

:func:`craft_onto` reads real deflector cutouts in flux units, checks what they are, paints an
arc around every galaxy with :func:`deepmine.lenscrafter.paint_arcs` (the physics, the S/N and
magnitude definitions are in :mod:`deepmine.lenscrafter.paint.arcs`) and writes the painted stack and
its parameter table, as ``deepmine craft`` does for whole synthetic scenes.

**Inputs** (:func:`read_deflectors`): a FITS cube N×C×H×W (or a ``.npy`` stack), read by
:func:`deepmine.inference.formats.open_stack` (memory-mapped; ``cube.fits[1]``/``cube.fits[SCI]``
names the extension, whose header, plus the primary's cards, is checked), or a directory of FITS cutouts
C×H×W (every ``*.fits``/``*.fits.gz``/... file, sorted by name, as the scanner reads such a
directory). C = 3 bands. Or three survey images (one per band) and a source catalogue
(``catalog=``; ``--onto i.fits --onto r.fits --onto g.fits --catalog lrgs.ecsv``): cutouts cut
around the sources exactly as ``deepmine scan`` cuts them (:mod:`deepmine.lenscrafter.paint.onto_survey`;
each image's header gives its band's zero point and gain).

**What is checked** (each refusal is one line naming the file and the option):

* *band order*: the header's ``BANDS`` card (``"i,r,g"``) or its ``BAND1``..``BAND3`` cards,
  or ``bands=`` (``--bands``); both given and different: refused. Any order of i, r, g is read
  and the cutouts are reordered to LensCrafter's (and the HSC models') i, r, g; other bands are
  refused. No header card and no ``bands``: i, r, g is assumed (written in the table's meta).
* *pixel scale*: from the celestial WCS of the (first) header
  (:func:`deepmine.inference.inputs.readers.wcs_pixel_scale`), else ``pixel_scale``; both given and
  more than 5 % apart (the scanner's tolerance): refused. Neither: refused.
* *cutout size*: ``size`` (``--size``), when given, must be the cutouts' side.
* *zero point*: the header's ``MAGZERO``/``MAGZPT``/``ZEROPNT`` card, else ``zero_point``
  (one number or one per band); both given and more than 0.01 mag apart: refused. Neither:
  refused (an arc's magnitude means nothing without it).
* *gain*: electrons per flux unit for the arc's photon noise is ``gain × exptime``: ``gain``
  from the header's ``GAIN`` card or the option (e-/count; 1 when only ``exptime`` is given,
  for images in electrons per second), ``exptime`` (s) only from the option (for images in
  counts per second). Header and option more than 1 % apart: refused. Neither: refused.
* *pixels*: float or integer flux (uint8 stacks are normalised images, not flux: refused); a
  cutout holding NaN or inf is refused by its index.

The PSF is a kernel image (``psf``, K×K or 3×K×K in the order i, r, g, as ``deepmine craft --psf``) or a FWHM per
band (``psf_fwhm``, arcsec; default HSC-Wide median seeing, i 0.58″, r 0.76″, g 0.77″): a Gaussian, or with
``psf_beta`` (``--psf-beta``) a Moffat ``(1 + (r/α)²)^−β`` of that FWHM
(:func:`~deepmine.lenscrafter.pipeline.moffat_psf`; β ≈ 4.765 fits ground-based seeing, Trujillo et al. 2001).
The table's ``psf`` meta says which (``"moffat beta=4.765 0.58,0.76,0.77"``).

**Outputs**: ``out`` (``.npy``, N×3×H×W, channels i, r, g): uint8 normalised exactly as the
scanner normalises float cutouts (:func:`deepmine.inference.preprocess.percentile_normalization`,
0.5 %/99.5 % per band), or float32 flux with ``dtype="float32"``; the parameter table beside it
(``<out>.ecsv``: :func:`paint_arcs`'s columns, per band ``m_arc_<b>`` and ``snr_<b>``, θ_E, the
centroid ``x``, ``y``..., plus ``file`` for a directory of cutouts). Both are written atomically
and existing files are refused unless ``overwrite`` (:func:`deepmine.inference.atomic.check_outputs`,
checked before anything is read). Work is done in chunks; cutout ``i`` always draws its arc from
``(seed, i)``, so the result does not depend on the chunk size.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from deepmine.inference.errors import InputError, file_error, first_line
from deepmine.inference.formats import FITS_SUFFIXES, band_name, is_fits, open_stack
from deepmine.inference.progress import stage

from ..pipeline import BANDS, HSC

__all__ = ["Deflectors", "read_deflectors", "calibrate", "craft_onto", "ZERO_POINT_KEYS", "CHUNK"]

#: Header cards read as the AB zero point of the cutouts' flux unit.
ZERO_POINT_KEYS = ("MAGZERO", "MAGZPT", "ZEROPNT")
#: Largest relative difference between a WCS pixel scale and ``pixel_scale`` (the scanner's).
PIXEL_SCALE_TOLERANCE = 0.05
#: Cutouts painted per chunk.
CHUNK = 1024
#: ``unlensed=True`` (``--unlensed``): control negatives — a LensCrafter source painted beside each
#: galaxy without lensing (θ_E = 0.01″), anywhere within ±3″ of it, unlensed g 21.5–24.5 (the
#: default lens prior's sources, 23–26, brightened by a typical magnification of ~4).
UNLENSED = {"theta_e": 0.01, "src_x": (-3.0, 3.0), "src_y": (-3.0, 3.0), "m_g_src": (21.5, 24.5)}


class Deflectors:
    """Real cutouts to paint on: ``read(start, stop)`` gives float64 N×3×H×W in i, r, g order.

    Attributes: ``path``, ``n``, ``size``, ``files`` (directory input, else None), ``order``
    (channel index in the file of i, r, g), ``bands_in_file``, ``header`` (the first header).
    """

    def __init__(self, path, arr, files, bands_in_file, header):
        self.path, self._arr, self.files, self.header = Path(path), arr, files, header
        self.bands_in_file = tuple(bands_in_file)
        self.order = [self.bands_in_file.index(b) for b in BANDS]
        self.n = len(files) if files is not None else arr.shape[0]
        self.size = int(self._first_shape()[-1])
        self.band_headers = [header] * len(BANDS)

    def _first_shape(self):
        return self._arr.shape if self.files is None else _read_cutout(self.files[0]).shape

    def read(self, start: int, stop: int) -> np.ndarray:
        """Cutouts ``start:stop`` as float64 in i, r, g order (checked: flux, finite)."""
        return self.take(np.arange(int(start), int(stop)))

    def take(self, indices) -> np.ndarray:
        """Cutouts ``indices`` (any order, repeats allowed) as float64 in i, r, g order (checked)."""
        idx = np.asarray(indices, dtype=np.int64)
        if self.files is None:
            uniq, inv = np.unique(idx, return_inverse=True)  # sorted reads of a memory map
            a = np.asarray(self._arr[uniq])[inv] if idx.size else np.asarray(self._arr[:0])
        else:
            a = np.stack([_read_cutout(self.files[k], self.size) for k in idx]) if idx.size else \
                np.empty((0, len(BANDS), self.size, self.size))
        if a.dtype == np.uint8:
            raise file_error(self.path, "uint8 pixels are percentile-normalised images, not flux; "
                             "paint onto flux cutouts")
        a = a.astype(np.float64)[:, self.order]
        bad = ~np.isfinite(a).all(axis=(1, 2, 3))
        if bad.any():
            k = int(idx[int(np.argmax(bad))])
            where = f"cutout {k}" + (f" ({Path(self.files[k]).name})" if self.files is not None else "")
            raise file_error(self.path, f"{where} holds NaN or inf pixels; fill or drop it before painting")
        return a


def _read_cutout(path, size: int | None = None) -> np.ndarray:
    from astropy.io import fits

    try:
        with fits.open(path, memmap=False) as hdul:
            hdu = next((h for h in hdul if getattr(h, "is_image", False) and h.data is not None), None)
            arr = None if hdu is None else np.asarray(hdu.data)
    except Exception as exc:  # noqa: BLE001 - astropy raises many kinds for bad files
        raise file_error(path, f"not a readable FITS cutout ({first_line(exc)})") from None
    if arr is None or arr.ndim != 3 or arr.shape[0] != len(BANDS) or arr.shape[1] != arr.shape[2]:
        raise file_error(path, f"expected a 3×H×W cutout (bands {', '.join(BANDS)}), got shape "
                               f"{None if arr is None else arr.shape}")
    if size is not None and arr.shape[-1] != size:
        raise file_error(path, f"is {arr.shape[-1]}×{arr.shape[-1]} pixels, the first cutout {size}×{size}; "
                               "every cutout of the directory must have one size")
    if arr.dtype.kind not in "uif":
        raise file_error(path, f"expected numeric pixels, got dtype {arr.dtype}")
    return arr


def _first_header(path, files):
    """The header of the cube (or of the directory's first cutout): the image HDU the name
    picks (``cube.fits[1]``, ``cube.fits[SCI]``: :func:`~deepmine.inference.formats.split_extension`,
    the one parser) or the first 3-D/4-D one, plus the primary HDU's cards it does not repeat;
    ``{}`` for a ``.npy`` stack."""
    from deepmine.inference.formats import image_hdu, open_fits, split_extension

    src = files[0] if files is not None else path
    if not is_fits(split_extension(src)[0]):
        return {}
    hdul = open_fits(src)
    try:
        with hdul:
            if split_extension(src)[1] is not None:
                hdu = hdul[image_hdu(hdul, src, ndim=(3, 4))]
            else:
                hdu = next((h for h in hdul if getattr(h, "is_image", False) and h.header.get("NAXIS", 0) >= 3),
                           hdul[0])
            header = hdu.header.copy()
            for k, v in hdul[0].header.items():  # primary cards not repeated in the image HDU
                if k not in header and k not in ("", "COMMENT", "HISTORY"):
                    header[k] = v
            return header
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise file_error(src, f"not a readable FITS file ({first_line(exc)})") from None


def _band_name(value) -> str:
    """``"HSC-I"``, ``"hsc_i"``, ``"i"`` → ``"i"`` (the scanner's reading of FILTER cards)."""
    return band_name(value, BANDS)


def _header_bands(header) -> tuple[str, ...] | None:
    if header.get("BANDS"):
        return tuple(_band_name(b) for b in str(header["BANDS"]).split(",") if b.strip())
    cards = [header.get(f"BAND{k}") for k in range(1, len(BANDS) + 1)]
    if all(isinstance(c, str) and c.strip() for c in cards):
        return tuple(_band_name(c) for c in cards)
    return None


def _parse_bands(text) -> tuple[str, ...]:
    items = text.split(",") if isinstance(text, str) else text
    return tuple(_band_name(b) for b in items if str(b).strip())


def read_deflectors(path, *, bands=None, catalog=None, size=None, pixel_scale=None, **columns) -> Deflectors:
    """Open DEFLECTORS (FITS cube, ``.npy`` stack or directory of FITS cutouts) and check its bands.

    ``bands``: the file's channel order (a sequence or ``"g,r,i"``); default the header's, else
    i, r, g. Raises one-line :class:`InputError` (see the module docstring). With ``catalog``,
    ``path`` is a list of three survey images and the cutouts are cut around the catalogue's
    sources (:mod:`deepmine.lenscrafter.paint.onto_survey`; ``columns``: ``ra_col``, ``dec_col``,
    ``x_col``, ``y_col``; ``size``, default 64).
    """
    if catalog is not None:
        from .onto_survey import read_survey_deflectors

        return read_survey_deflectors(path if isinstance(path, (list, tuple)) else [path], catalog, bands=bands,
                                      size=size, pixel_scale=pixel_scale, **columns)
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            raise InputError(f"--onto: {len(path)} files given; several files are survey images and need --catalog")
        path = path[0]
    if columns:
        raise InputError("--ra-col/--dec-col/--x-col/--y-col need --catalog")
    p = Path(path)
    files = None
    if p.is_dir():
        files = sorted(str(f) for f in p.iterdir() if f.is_file() and is_fits(f))
        if not files:
            raise file_error(p, f"directory holds no FITS cutouts ({', '.join(FITS_SUFFIXES)})")
        arr = None
    else:
        arr = open_stack(p, what="deflector stack", channels=(len(BANDS),))
    header = _first_header(p, files)
    in_header = _header_bands(header)
    given = None if bands is None else _parse_bands(bands)
    if given is not None and in_header is not None and given != in_header:
        raise file_error(p, f"--bands {','.join(given)} disagrees with the header's band order "
                            f"{','.join(in_header)}; omit --bands or fix the header")
    order = given or in_header or BANDS
    if sorted(order) != sorted(BANDS):
        raise file_error(p, f"bands {','.join(order)}: LensCrafter paints the bands {', '.join(BANDS)} "
                            "(one each, any order)")
    return Deflectors(p, arr, files, order, header)


def _per_band(name, value, order) -> np.ndarray | None:
    """None, a number or one value per band of the file's ``order`` → 3 values in i, r, g order."""
    if value is None:
        return None
    v = np.atleast_1d(np.asarray(value, dtype=np.float64))
    if v.shape == (1,):
        return np.full(len(BANDS), float(v[0]))
    if v.shape != (len(BANDS),):
        raise InputError(f"{name}: expected one number or {len(BANDS)} (one per band {', '.join(order)}), "
                         f"got {v.size}")
    return v[[list(order).index(b) for b in BANDS]]


def _resolve_scale(d: Deflectors, pixel_scale, size) -> float:
    from deepmine.inference.inputs.readers import wcs_pixel_scale

    wcs = wcs_pixel_scale(d.header) if d.header else None
    if wcs is not None and pixel_scale is not None and abs(wcs / pixel_scale - 1.0) > PIXEL_SCALE_TOLERANCE:
        raise file_error(d.path, f"pixel scale {wcs:.4g}\"/px (from its WCS) differs from --pixel-scale "
                                 f"{pixel_scale:.4g} by more than {PIXEL_SCALE_TOLERANCE:.0%}; resample the "
                                 "cutouts or omit --pixel-scale")
    scale = wcs if wcs is not None else pixel_scale
    if scale is None:
        raise file_error(d.path, "has no celestial WCS to give its pixel scale; pass --pixel-scale (arcsec/px)")
    if size is not None and int(size) != d.size:
        raise file_error(d.path, f"holds {d.size}×{d.size} cutouts, not the --size {size} asked for; "
                                 "cut them to that size or omit --size")
    return float(scale)


def _header_values(d, keys) -> np.ndarray | None:
    """The first of ``keys`` in each band's header (i, r, g), or None unless every band has one."""
    vals = [next((float(h[k]) for k in keys if k in h), None) if h else None for h in d.band_headers]
    return None if any(v is None for v in vals) else np.array(vals)


def _fmt(v) -> str:
    v = np.atleast_1d(v)
    return f"{v[0]:g}" if np.all(v == v[0]) else ",".join(f"{x:g}" for x in v)


def _resolve_calibration(d: Deflectors, zero_point, gain, exptime):
    hz = _header_values(d, ZERO_POINT_KEYS)
    zp = _per_band("zero_point", zero_point, d.bands_in_file)
    if zp is not None and hz is not None and np.any(np.abs(zp - hz) > 0.01):
        raise file_error(d.path, f"zero point {_fmt(hz)} (header) disagrees with --zero-point "
                                 f"{','.join(f'{v:g}' for v in zp)}; omit --zero-point or fix the header")
    if zp is None:
        if hz is None:
            raise file_error(d.path, f"no zero point ({'/'.join(ZERO_POINT_KEYS)} card); pass --zero-point "
                                     "(AB mag of one flux unit, one per band or one for all)")
        zp = hz
    hg = _header_values(d, ("GAIN",))
    g = _per_band("gain", gain, d.bands_in_file)
    if g is not None and hg is not None and np.any(np.abs(g / hg - 1.0) > 0.01):
        raise file_error(d.path, f"gain {_fmt(hg)} e-/count (header) disagrees with --gain "
                                 f"{','.join(f'{v:g}' for v in g)}; omit --gain or fix the header")
    t = _per_band("exptime", exptime, d.bands_in_file)
    if g is None:
        g = hg
    if g is None and t is None:
        raise file_error(d.path, "no gain (GAIN card); pass --gain (electrons per count) or --exptime (seconds, "
                                 "for images in counts per second) for the arc's photon noise")
    eff = (np.ones(len(BANDS)) if g is None else g) * (np.ones(len(BANDS)) if t is None else t)
    for name, v in (("zero_point", zp), ("gain × exptime", eff)):
        if not np.all(np.isfinite(v)) or (name != "zero_point" and np.any(v <= 0)):
            raise InputError(f"{name}: expected finite positive numbers, got {v.tolist()}")
    return zp, eff


def _resolve_psf(d: Deflectors, psf, psf_fwhm, scale, psf_beta=None):
    from ..pipeline import check_psf, default_psf, moffat_psf

    if psf is not None and psf_fwhm is not None:
        raise InputError("--psf and --psf-fwhm contradict each other; give one")
    if psf is not None and psf_beta is not None:
        raise InputError("--psf-beta shapes a --psf-fwhm Moffat; a --psf kernel image has its own shape: give one")
    if psf is not None:
        return check_psf(psf, len(BANDS)), "kernel"
    fw = _per_band("psf_fwhm", psf_fwhm, d.bands_in_file)
    fw = np.asarray(HSC["psf_fwhm"], dtype=np.float64) if fw is None else fw
    if not np.all(np.isfinite(fw)) or np.any(fw <= 0) or np.any(fw > 20):
        raise InputError(f"psf_fwhm: expected 0 < FWHM <= 20 arcsec per band, got {fw.tolist()}")
    hsc = "-hsc" if psf_fwhm is None else ""
    if psf_beta is None:
        return default_psf(scale, fw), f"gaussian{hsc} " + ",".join(f"{f:g}" for f in fw)
    beta = float(psf_beta)
    if not (np.isfinite(beta) and 1.0 < beta <= 50.0):
        raise InputError(f"--psf-beta {psf_beta!r}: expected a Moffat beta with 1 < beta <= 50")
    k = moffat_psf(float(fw.max()), beta, scale).shape[0]  # one kernel size for the three bands
    kern = np.stack([moffat_psf(float(f), beta, scale, k) for f in fw])
    return kern, f"moffat{hsc} beta={beta:g} " + ",".join(f"{f:g}" for f in fw)


def calibrate(d: Deflectors, *, pixel_scale=None, size=None, zero_point=None, gain=None, exptime=None, psf=None,
              psf_fwhm=None, psf_beta=None):
    """Pixel scale, zero points, electrons per flux unit and PSF of ``d``, checked against its header.

    Returns ``(pixel_scale, zero_point (3,), gain_e_per_unit (3,), psf kernels, psf description)``,
    per band in the order i, r, g; refusals are one line (see the module docstring).
    """
    scale = _resolve_scale(d, pixel_scale, size)
    zp, eff_gain = _resolve_calibration(d, zero_point, gain, exptime)
    kern, psf_desc = _resolve_psf(d, psf, psf_fwhm, scale, psf_beta)
    return scale, zp, eff_gain, kern, psf_desc


def _prior_text(prior) -> str:
    """The θ_E prior of a parameter table's meta, in words."""
    if not prior:
        return "uniform in theta_e"
    return "light (Faber-Jackson + SIS, clipped to theta_e): " + ", ".join(
        f"{k}={v:g}" for k, v in prior.items() if k != "kind")


def craft_onto(deflectors, out, *, zero_point=None, gain=None, exptime=None, psf=None, psf_fwhm=None,
               psf_beta=None, pixel_scale=None, size=None, bands=None, theta_e=None, seed: int = 0, dtype: str = "uint8",
               overwrite: bool = False, inputs=(), progress=None, chunk: int = CHUNK, unlensed: bool = False,
               catalog=None, columns=None, **paint_kwargs):
    """Paint LensCrafter arcs onto the cutouts of ``deflectors`` and write ``out`` and its table.

    Parameters (the checks are in the module docstring)
    ----------
    deflectors : path of a FITS cube / ``.npy`` stack or a directory of FITS cutouts (flux units)
    out : ``.npy`` path of the painted stack; the table goes to ``out`` with suffix ``.ecsv``
    zero_point, gain, exptime, psf_fwhm : a number or one per band (the file's band order)
    psf : K×K or 3×K×K kernel array (order i, r, g)
    psf_beta : Moffat β of the ``psf_fwhm`` PSF (default: Gaussian)
    pixel_scale : arcsec/px when the file has no WCS (checked against the WCS otherwise)
    size : expected cutout side (pixels), checked
    bands : the file's band order (checked against its header)
    theta_e : (low, high) θ_E prior in arcsec (default :data:`paint.THETA_E_DEFAULT`); with
        ``theta_e_from_light=True`` (or a dict of :data:`~deepmine.lenscrafter.paint.theta_prior.LIGHT_PRIOR`
        overrides; passed to :func:`paint_arcs`), θ_E follows the deflector's i-band magnitude
        (Faber–Jackson + SIS) clipped to that range
    seed : parameters and arc noise of cutout ``i`` come from ``(seed, i)``
    dtype : ``"uint8"`` (percentile-normalised as the scanner does) or ``"float32"`` (flux)
    overwrite : replace existing outputs; ``inputs`` are further paths never written over
    progress : :class:`deepmine.inference.progress.Progress` (one stage, "painting arcs")
    unlensed : paint control negatives instead of lenses (:data:`UNLENSED`): the same renderer,
        PSF and photon noise, no lensing — a model trained with them as negatives cannot score
        "LensCrafter light is present" as a lens (docs/benchmarks.md measured that it does otherwise)
    catalog, columns : with ``catalog``, ``deflectors`` are three survey images and the cutouts are
        cut around the catalogue's sources (``columns``: ``ra_col``/``dec_col``/``x_col``/``y_col``)
    **paint_kwargs : passed to :func:`paint_arcs` (``follow_light``, ``m_g_src=(lo, hi)``...)

    Returns the parameter table (also written).
    """
    from deepmine.inference.atomic import atomic_path, check_outputs
    from deepmine.inference.preprocess import percentile_normalization

    from .arcs import THETA_E_DEFAULT, paint_arcs

    out = Path(out)
    if out.suffix.lower() != ".npy":
        raise InputError(f"--out {out}: expected a .npy file name")
    if dtype not in ("uint8", "float32"):
        raise InputError(f"dtype {dtype!r}: expected uint8 or float32")
    if int(seed) < 0:
        raise InputError(f"--seed: must be a whole number >= 0, got {seed}")
    table_path = out.with_suffix(".ecsv")
    given = list(deflectors) if isinstance(deflectors, (list, tuple)) else [deflectors]
    check_outputs([out, table_path], [*given, catalog, *inputs], overwrite)
    d = read_deflectors(deflectors, bands=bands, catalog=catalog, size=size, pixel_scale=pixel_scale,
                        **(columns or {}))
    scale, zp, eff_gain, kern, psf_desc = calibrate(d, pixel_scale=pixel_scale, size=size, zero_point=zero_point,
                                                    gain=gain, exptime=exptime, psf=psf, psf_fwhm=psf_fwhm,
                                                    psf_beta=psf_beta)
    if unlensed:
        if theta_e is not None:
            raise InputError("--theta-e does not apply with --unlensed (no lensing: theta_E = 0.01\")")
        if paint_kwargs.get("theta_e_from_light"):
            raise InputError("--theta-e-from-light does not apply with --unlensed (no lensing)")
        paint_kwargs = {**{k: v for k, v in UNLENSED.items() if k != "theta_e"}, **paint_kwargs}
        te = UNLENSED["theta_e"]
    else:
        te = THETA_E_DEFAULT if theta_e is None else tuple(theta_e)
    need = d.n * len(BANDS) * d.size ** 2 * np.dtype(dtype).itemsize
    folder = out.parent if str(out.parent) else Path(".")
    import shutil

    if need > shutil.disk_usage(folder).free:
        raise InputError(f"the painted stack needs {need / 2**30:,.1f} GiB but {folder} has "
                         f"{shutil.disk_usage(folder).free / 2**30:,.1f} GiB free; write elsewhere")
    advance = stage(progress, "painting arcs", d.n)
    tables = []
    from astropy.table import vstack

    with atomic_path(out) as tmp:
        stack = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.dtype(dtype),
                                          shape=(d.n, len(BANDS), d.size, d.size))
        for a in range(0, d.n, int(chunk)):
            b = min(a + int(chunk), d.n)
            painted, tab = paint_arcs(d.read(a, b), pixel_scale=scale, zero_point=zp, gain=eff_gain, psf=kern,
                                      seed=seed, index_offset=a, theta_e=te, **paint_kwargs)
            painted = painted.astype(np.float32)  # what a float32 stack of it would hold; scanned from that
            stack[a:b] = percentile_normalization(painted) if dtype == "uint8" else painted
            tables.append(tab)
            advance(b - a)
        stack.flush()
        del stack
    table = vstack(tables, metadata_conflicts="silent") if len(tables) > 1 else tables[0]
    if d.files is not None:
        table["file"] = [os.path.basename(f) for f in d.files]
    table.meta.update({
        "deepmine": "lenscrafter arcs painted onto real cutouts (deepmine craft --onto)",
        "deflectors": ",".join(map(str, given)), **({"catalog": str(catalog)} if catalog is not None else {}),
        "stack": out.name, "seed": int(seed), "size": d.size,
        "pixel_scale": scale, "bands": ",".join(BANDS), "bands_in_file": ",".join(d.bands_in_file),
        "zero_point": zp.tolist(), "gain_e_per_unit": eff_gain.tolist(), "psf": psf_desc,
        "theta_e": [float(v) for v in np.atleast_1d(te)], "unlensed": bool(unlensed), "dtype": dtype,
        "theta_e_prior": _prior_text(table.meta.get("paint", {}).get("theta_e_prior")),
        "normalisation": "percentile 0.5/99.5 per band (the scanner's)" if dtype == "uint8" else "none (flux)",
    })
    table.meta.get("paint", {}).pop("index_offset", None)
    with atomic_path(table_path) as tmp:
        table.write(tmp, format="ascii.ecsv", overwrite=True)
    return table
