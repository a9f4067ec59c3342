"""Survey images: cutouts around catalogued sources and sliding tiles, cut from per-band images
with a WCS (:func:`resolve_survey`, :func:`resolve_tiles`, :func:`read_survey`).

``survey``
    Per-band survey images (one file per band, in the model's band order unless their
    ``FILTER``/``BAND`` header cards say otherwise; ``image.fits[N]`` or ``image.fits[EXTNAME]``
    picks the extension, :func:`deepmine.inference.formats.split_extension`) plus a source
    catalogue with RA/Dec (through the first band's WCS; degrees or sexagesimal, any astropy
    frame: :mod:`deepmine.inference.inputs.sourcecat`) or x/y (0-based pixel) columns. Cutouts of the
    model's size are cut through ``.section``, so tile-compressed (``CompImageHDU``) images are
    never decompressed whole. HSC-style files with ``MASK``/``VARIANCE`` planes beside the
    image: :mod:`deepmine.inference.inputs.planes`.
``tiles``
    Sliding tiles of the model's size over the same kind of survey images, with a stride
    (default: the tile size). Tiles start at 0, stride, 2·stride, ... and cover the whole
    image; the last row/column may stick out of the image and is padded.

**Centring convention** (the same everywhere in deepmine): a cutout's centre is the pixel
coordinate ((W−1)/2, (H−1)/2), where LensCrafter puts a centred lens and where a tile's
``x``/``y`` point. Around a catalogue position (x, y) the reader takes the *nearest-centred*
cutout, exactly as :class:`astropy.nddata.Cutout2D` does: first column ``x0 = ceil(x − W/2)``
(rows likewise), so the source lands within (−½, +½] pixel of the cutout's centre; an exact tie
(source half a pixel from two candidates) goes to the cutout whose centre is left of/below the
source, as in astropy.

Pixel scale
-----------
Inputs with a celestial WCS (survey images, FITS cutouts in a directory: the first file's
header) are checked against the model's pixel scale: more than 5 % apart is refused with one
line naming both scales, unless ``check=False`` (``deepmine scan --accept-pixel-scale``).
Inputs without one (``.npy`` stacks, cubes, images without WCS) are accepted;
``spec.options["pixel_scale"]`` is then None and the scan summary says so.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from ..errors import InputError, file_error, first_line
from ..formats import band_name, image_hdu, open_fits, split_extension
from ..metadata import ModelMetadata
from .blocks import FLAG_CENTER_MASKED, FLAG_EDGE, FLAG_OFF_IMAGE, Block, SourceSpec
from .planes import center_masked, find_planes, read_bad
from .sourcecat import check_frame, check_keep, kept_columns, sky_columns, to_wcs_frame

__all__ = ["PIXEL_SCALE_TOLERANCE", "cutout_origin", "wcs_pixel_scale", "check_pixel_scale", "resolve_survey",
           "resolve_tiles", "read_survey"]

#: Largest relative difference between an input's WCS pixel scale and the model's.
PIXEL_SCALE_TOLERANCE = 0.05
_BAND_KEYS = ("BAND", "FILTER", "FILTER1", "FILTNAM")


def cutout_origin(position, size: int) -> np.ndarray:
    """First pixel index of the nearest-centred cutout of ``size`` pixels around ``position``.

    The centring convention of the module docstring, the rule of
    :func:`astropy.nddata.utils.overlap_slices` (``Cutout2D``): ``ceil(position − size/2)``,
    so the cutout's centre ``origin + (size − 1)/2`` lies within (−½, +½] of ``position``.

    >>> cutout_origin(np.array([31.0, 31.5, 32.0, 32.1]), 64).tolist()
    [-1, 0, 0, 1]
    """
    return np.ceil(np.asarray(position, dtype=np.float64) - size / 2.0).astype(np.int64)


def wcs_pixel_scale(header) -> float | None:
    """Pixel scale (arcsec/pixel, geometric mean of the two axes) of a header's celestial WCS,
    or None when it has none."""
    if "CTYPE1" not in header:
        return None
    import warnings

    from astropy.wcs import WCS
    from astropy.wcs.utils import proj_plane_pixel_scales

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wcs = WCS(header, naxis=2)
            if not wcs.has_celestial:
                return None
            scales = proj_plane_pixel_scales(wcs.celestial)
    except Exception:  # noqa: BLE001 - an unreadable WCS is reported where positions are needed
        return None
    return float(np.sqrt(scales[0] * scales[1]) * 3600.0)


def check_pixel_scale(path, header, meta: ModelMetadata, check: bool = True) -> float | None:
    """The WCS pixel scale of ``header`` (None without one), refused in one line naming ``path``
    when ``check`` and it is more than :data:`PIXEL_SCALE_TOLERANCE` off the model's."""
    scale = wcs_pixel_scale(header)
    want = float(meta.pixel_scale)
    if check and scale is not None and want > 0 and abs(scale / want - 1.0) > PIXEL_SCALE_TOLERANCE:
        raise file_error(path, f"pixel scale {scale:.4g}\"/px (from its WCS) differs from the model's {want:.4g}\"/px "
                               f"by more than {PIXEL_SCALE_TOLERANCE:.0%}; resample the image, or pass "
                               "--accept-pixel-scale to scan it anyway")
    return scale


def _band_of(header, bands: list[str]) -> str | None:
    for key in _BAND_KEYS:
        val = header.get(key)
        if isinstance(val, str) and val.strip():
            return band_name(val, bands)
    return None


def _resolve_images(paths: list[Path], meta: ModelMetadata, check_scale: bool = True) -> dict:
    """The band images in model band order: ``files``, image HDU indices ``hdus``, companion
    ``planes`` (:func:`~deepmine.inference.inputs.planes.find_planes`), the common ``image_shape`` and
    the first image's WCS ``pixel_scale`` (None without a celestial WCS)."""
    c = meta.channels
    if len(paths) != c:
        raise InputError(
            f"survey images: got {len(paths)} image file(s), the model expects {c} band(s) "
            f"({', '.join(meta.bands)}): give one image per band, in that order"
        )
    bands = [b.lower() for b in meta.bands]
    found = []
    for p in paths:
        with open_fits(p) as hdul:
            k = image_hdu(hdul, p, ndim=(2, 3, 4))
            hdu = hdul[k]
            shape = tuple(hdu.shape)
            if len(shape) != 2:
                raise file_error(p, f"expected a 2-D survey image, got shape {shape}")
            band = _band_of(hdu.header, bands) or _band_of(hdul[0].header, bands)
            scale = check_pixel_scale(p, hdu.header, meta, check_scale)
            planes = find_planes(hdul, k)
        found.append((str(split_extension(p)[0]), k, shape, band, scale, planes, str(p)))
    shapes = {f[2] for f in found}
    if len(shapes) != 1:
        raise InputError("survey images: the band images differ in size "
                         f"({', '.join(f'{Path(f[6]).name} {f[2]}' for f in found)}); they must be registered")
    labelled = [f[3] for f in found]
    if all(b is not None for b in labelled) and sorted(labelled) == sorted(bands) and len(set(labelled)) == c:
        found.sort(key=lambda f: bands.index(f[3]))
    elif all(b is not None for b in labelled) and any(b not in bands for b in labelled):
        raise InputError(f"survey images: header bands {labelled} do not match the model's bands {bands}")
    return {"files": [f[0] for f in found], "hdus": [f[1] for f in found], "planes": [f[5] for f in found],
            "image_shape": list(found[0][2]), "pixel_scale": found[0][4], "given": [f[6] for f in found]}


def _read_wcs(path: str, hdu: int):
    from astropy.wcs import WCS

    with open_fits(path) as hdul:
        header = hdul[hdu].header
        if "CTYPE1" not in header:
            return None
        try:
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return WCS(header, naxis=2)
        except Exception as exc:  # noqa: BLE001
            raise file_error(path, f"unreadable WCS ({first_line(exc)})") from None


def _options(images: dict) -> dict:
    return {k: images[k] for k in ("hdus", "image_shape", "pixel_scale", "planes")}


def resolve_survey(paths, meta: ModelMetadata, catalog, ra_col=None, dec_col=None, x_col=None, y_col=None,
                   check_scale: bool = True, keep=None, frame: str = "icrs") -> SourceSpec:
    """Describe a scan around the sources of ``catalog`` on the band images ``paths``
    (arguments as :func:`deepmine.inference.inputs.readers.resolve_inputs` takes them)."""
    from astropy.table import Table

    images = _resolve_images(paths, meta, check_scale)
    cat = Path(catalog)
    if not cat.is_file():
        raise file_error(cat, "source catalogue not found")
    try:
        table = Table.read(cat)
    except Exception as exc:  # noqa: BLE001
        raise file_error(cat, f"not a readable catalogue ({first_line(exc)})") from None
    names = table.colnames
    if x_col or y_col:
        cols = {"x_col": x_col or "x", "y_col": y_col or "y"}
    elif ra_col or dec_col:
        cols = {"ra_col": ra_col or "ra", "dec_col": dec_col or "dec"}
    else:
        low = {n.lower(): n for n in names}
        if "ra" in low and "dec" in low:
            cols = {"ra_col": low["ra"], "dec_col": low["dec"]}
        elif "x" in low and "y" in low:
            cols = {"x_col": low["x"], "y_col": low["y"]}
        else:
            raise file_error(cat, f"no ra/dec or x/y columns (has {', '.join(names)}); pass --ra-col/--dec-col "
                             "or --x-col/--y-col")
    for opt, col in cols.items():
        if col not in names:
            raise file_error(cat, f"--{opt.replace('_', '-')}: no column {col!r} (has {', '.join(names)})")
    if "ra_col" in cols and _read_wcs(images["files"][0], images["hdus"][0]) is None:
        raise file_error(images["given"][0], "has no WCS in its header, so RA/Dec cannot be placed; pass "
                                             "--x-col/--y-col")
    opts = {**_options(images), "catalog": str(cat), **cols, "keep": check_keep(keep, names, cat),
            "frame": check_frame(frame)}
    return SourceSpec("survey", images["files"], len(table), str(cat), opts)


def resolve_tiles(paths, meta: ModelMetadata, tile=None, stride=None, check_scale: bool = True) -> SourceSpec:
    """Describe a sliding-tile scan of the band images ``paths`` (tile = the model's size)."""
    images = _resolve_images(paths, meta, check_scale)
    c, h, w = (int(v) for v in meta.input_shape)
    if tile is not None and int(tile) != h:
        raise InputError(f"--tile: the model takes {h}×{w} cutouts, so tiles must be {h} pixels, got {tile}")
    if h != w and tile is not None:
        raise InputError(f"--tile: the model's cutouts are not square ({h}×{w}); leave --tile out")
    s = int(stride) if stride is not None else h
    if s < 1:
        raise InputError(f"--stride: must be at least 1 pixel, got {stride}")
    ny, nx = images["image_shape"]
    nty = -(-max(ny - h, 0) // s) + 1
    ntx = -(-max(nx - w, 0) // s) + 1
    opts = {**_options(images), "tile": [h, w], "stride": s, "grid": [nty, ntx]}
    return SourceSpec("tiles", images["files"], nty * ntx, images["given"][0], opts)


@functools.lru_cache(maxsize=4)
def _positions(catalog: str, mtime: int, image: str, hdu: int, ra_col, dec_col, x_col, y_col, frame="icrs"):
    """(x, y, ra, dec) float64 arrays of a source catalogue (cached per process; RA/Dec in
    ``frame``, see :mod:`deepmine.inference.inputs.sourcecat`)."""
    from astropy.table import Table

    try:
        table = Table.read(catalog)
    except Exception as exc:  # noqa: BLE001
        raise file_error(catalog, f"not a readable catalogue ({first_line(exc)})") from None

    def col(name):
        try:
            return np.asarray(np.ma.filled(np.ma.asarray(table[name], dtype=np.float64), np.nan), dtype=np.float64)
        except (ValueError, TypeError):
            raise file_error(catalog, f"column {name!r} is not numeric (first value {table[name][0]!r})") from None

    wcs = _read_wcs(image, hdu)
    if ra_col is not None:
        ra, dec = to_wcs_frame(*sky_columns(table, ra_col, dec_col, catalog, col), frame, wcs)
        x, y = wcs.all_world2pix(ra, dec, 0) if len(ra) else (ra.copy(), dec.copy())
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    else:
        x, y = col(x_col), col(y_col)
        if wcs is not None and len(x):
            ra, dec = (np.asarray(v, np.float64) for v in wcs.all_pix2world(x, y, 0))
            bad = ~(np.isfinite(x) & np.isfinite(y))
            ra[bad], dec[bad] = np.nan, np.nan
        else:
            ra, dec = np.full(len(x), np.nan), np.full(len(x), np.nan)
    return x, y, ra, dec


def _cut(section_of, y0: int, x0: int, h: int, w: int, ny: int, nx: int, fill=np.nan,
         dtype=np.float32) -> tuple[np.ndarray, bool]:
    """Pixels [y0:y0+h, x0:x0+w] of an image (``fill`` outside it) and whether it was padded."""
    out = np.full((h, w), fill, dtype=dtype)
    ya, yb = max(y0, 0), min(y0 + h, ny)
    xa, xb = max(x0, 0), min(x0 + w, nx)
    if ya < yb and xa < xb:
        out[ya - y0:yb - y0, xa - x0:xb - x0] = section_of[ya:yb, xa:xb]
    return out, not (ya == y0 and xa == x0 and yb == y0 + h and xb == x0 + w)


def _origins(spec: SourceSpec, start: int, stop: int, meta: ModelMetadata, block: Block):
    """First row and column of each cutout (positions, RA/Dec and OFF_IMAGE set in ``block``)."""
    o = spec.options
    c, h, w = (int(v) for v in meta.input_shape)
    ny, nx = o["image_shape"]
    if spec.kind == "survey":
        mtime = os.stat(o["catalog"]).st_mtime_ns
        x, y, ra, dec = _positions(o["catalog"], mtime, spec.paths[0], o["hdus"][0], o.get("ra_col"),
                                   o.get("dec_col"), o.get("x_col"), o.get("y_col"), o.get("frame", "icrs"))
        if o.get("keep"):
            kept = kept_columns(o["catalog"], mtime, tuple(o["keep"]))
            block.extra = {k: v[start:stop] for k, v in kept.items()}
        bx, by = x[start:stop], y[start:stop]
        block.ra[:], block.dec[:] = ra[start:stop], dec[start:stop]
        block.x[:], block.y[:] = bx, by
        finite = np.isfinite(bx) & np.isfinite(by)
        x0s = np.where(finite, cutout_origin(np.where(finite, bx, 0.0), w), -10 * (w + nx)).astype(np.int64)
        y0s = np.where(finite, cutout_origin(np.where(finite, by, 0.0), h), -10 * (h + ny)).astype(np.int64)
        off = ~finite | (x0s + w <= 0) | (x0s >= nx) | (y0s + h <= 0) | (y0s >= ny)
        block.flags[off] |= FLAG_OFF_IMAGE
        return y0s, x0s
    nty, ntx = o["grid"]
    s = o["stride"]
    k = np.arange(start, stop)
    y0s, x0s = (k // ntx) * s, (k % ntx) * s
    block.x[:] = x0s + (w - 1) / 2.0
    block.y[:] = y0s + (h - 1) / 2.0
    wcs = _read_wcs(spec.paths[0], o["hdus"][0])
    if wcs is not None and stop > start:
        ra, dec = wcs.all_pix2world(block.x, block.y, 0)
        block.ra[:], block.dec[:] = ra, dec
    return y0s, x0s


def read_survey(spec: SourceSpec, start: int, stop: int, meta: ModelMetadata, block: Block) -> None:
    """Cut objects ``start:stop`` of a ``survey`` or ``tiles`` input into ``block`` (N×C×H×W
    float32, made by :meth:`Block.empty <deepmine.inference.inputs.blocks.Block.empty>`), with the
    EDGE / OFF_IMAGE / CENTER_MASKED flags and bad mask-plane pixels set to NaN."""
    o = spec.options
    c, h, w = (int(v) for v in meta.input_shape)
    ny, nx = o["image_shape"]
    n = stop - start
    y0s, x0s = _origins(spec, start, stop, meta, block)
    block.index[:] = np.arange(start, stop)
    block.source = [spec.name] * n
    planes = o.get("planes") or [None] * len(spec.paths)
    for j, (path, k, pl) in enumerate(zip(spec.paths, o["hdus"], planes)):
        with open_fits(path) as hdul:
            try:
                sec = hdul[k].section
                for i in range(n):
                    if block.flags[i] & FLAG_OFF_IMAGE:
                        block.images[i, j] = np.nan
                        continue
                    win = (int(y0s[i]), int(x0s[i]), h, w, ny, nx)
                    block.images[i, j], padded = _cut(sec, *win)
                    if padded:
                        block.flags[i] |= FLAG_EDGE
                    bad = read_bad(hdul, pl, lambda s, is_mask, win=win: _cut(
                        s, *win, fill=0, dtype=np.int64 if is_mask else np.float32)[0])
                    if bad is not None:
                        block.images[i, j][bad] = np.nan
                        if center_masked(bad[None])[0]:
                            block.flags[i] |= FLAG_CENTER_MASKED
            except InputError:
                raise
            except Exception as exc:  # noqa: BLE001 - truncated or corrupt data
                raise file_error(path, f"cannot read pixels ({first_line(exc)})") from None
