"""Scanner inputs: describe them once (:func:`resolve_inputs`), then read any range of objects.

A :class:`SourceSpec` is a small, picklable description of one input — file paths and a few
options, never pixels — so a shard (``deepmine.inference.shards.Shard``) can name "objects
``start:stop`` of this input" and any process can read them with :func:`read_block`.

Kinds of input
--------------
``npy``
    A ``.npy`` stack N×C×H×W (or N×H×W for one band), any real dtype. Each block is read
    through its own short-lived memory map, so resident memory stays at one block.
``fits_cube``
    A FITS image N×C×H×W or N×H×W (or a single C×H×W / H×W cutout), read through
    ``hdu.section`` (only the block's rows; BZERO/BSCALE applied; tile-compressed too).
``fits_dir``
    A directory of single-cutout FITS files (C×H×W or H×W each), in sorted name order.
``survey``
    Per-band survey images with a WCS (one file per band, in the model's band order unless
    their ``FILTER``/``BAND`` header cards say otherwise) plus a source catalogue with RA/Dec
    (degrees, through the first band's WCS) or x/y (0-based pixel) columns. Cutouts of the
    model's size are cut through ``.section``, so tile-compressed (``CompImageHDU``) images are
    never decompressed whole.

    **Centring convention** (the same everywhere in deepmine): a cutout's centre is the pixel
    coordinate ((W−1)/2, (H−1)/2), where LensCrafter puts a centred lens and where a tile's
    ``x``/``y`` point. Around a catalogue position (x, y) the reader takes the *nearest-centred*
    cutout, exactly as :class:`astropy.nddata.Cutout2D` does: first column
    ``x0 = ceil(x − W/2)`` (rows likewise), so the source lands within (−½, +½] pixel of the
    cutout's centre; an exact tie (source half a pixel from two candidates) goes to the cutout
    whose centre is left of/below the source, as in astropy.
``tiles``
    Sliding tiles of the model's size over the same kind of survey images, with a stride
    (default: the tile size). Tiles start at 0, stride, 2·stride, ... and cover the whole
    image; the last row/column may stick out of the image and is padded.

Every block comes back as a :class:`Block`: the cutouts (uint8 stays uint8 — taken to be
percentile-normalised already, the HSC convention; every other dtype becomes float32, with
BZERO/BSCALE applied, before any arithmetic), per-object flags, positions (NaN where unknown),
and the source name and index of each object.

Flags (int32 bitmask, the catalogue's ``flags`` column)
--------------------------------------------------------
``FLAG_NONFINITE`` = 1
    Some pixels were NaN or ±inf; they are masked (ignored by the normalisation, 0 in the model
    input).
``FLAG_BLANK`` = 2
    No signal: every band is constant or entirely masked. The score is meaningless.
``FLAG_EDGE`` = 4
    Partly (or wholly) off the survey image: the missing pixels are padded as masked pixels.
``FLAG_BAND_BLANK`` = 8
    At least one band, but not all, is constant or entirely masked.
``FLAG_SCORE_NONFINITE`` = 16
    The model returned a NaN/inf logit (set by the merge; such rows get NaN ordinality).
``FLAG_OFF_IMAGE`` = 32
    The catalogue position is not finite or the cutout lies wholly off the image: nothing to
    score.

Rows flagged ``BLANK`` or ``OFF_IMAGE`` are **not ranked**: their logit, probability and
ordinalities are null (NaN in FITS, empty in ECSV, null in Parquet) and they do not count in
anyone else's ordinality. Cutouts only partly off the edge stay ranked (``EDGE``).

Pixel scale
-----------
Inputs with a celestial WCS (survey images, FITS cutouts in a directory: the first file's
header) are checked against the model's pixel scale: more than 5 % apart is refused with one
line naming both scales, unless ``check_pixel_scale=False`` (``deepmine scan
--accept-pixel-scale``). Inputs without one (``.npy`` stacks, cubes, images without WCS) are
accepted; ``spec.options["pixel_scale"]`` is then None and the scan summary says so.
"""
from __future__ import annotations

import functools
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numba as nb
import numpy as np

from .errors import InputError, file_error, first_line
from .formats import FITS_SUFFIXES, band_name, is_fits
from .metadata import ModelMetadata
from .sourcecat import check_frame, check_keep, kept_columns, sky_columns, to_wcs_frame

FLAG_NONFINITE = 1
FLAG_BLANK = 2
FLAG_EDGE = 4
FLAG_BAND_BLANK = 8
FLAG_SCORE_NONFINITE = 16
FLAG_OFF_IMAGE = 32
#: Rows with any of these flags are not scored or ranked (null logit and ordinality).
FLAG_UNRANKED = FLAG_BLANK | FLAG_OFF_IMAGE
#: Largest relative difference between an input's WCS pixel scale and the model's.
PIXEL_SCALE_TOLERANCE = 0.05
FLAG_BITS = {
    "NONFINITE": (FLAG_NONFINITE, "NaN/inf pixels masked"),
    "BLANK": (FLAG_BLANK, "blank cutout: every band constant or masked"),
    "EDGE": (FLAG_EDGE, "partly off the image edge; padded with masked pixels"),
    "BAND_BLANK": (FLAG_BAND_BLANK, "some (not all) bands constant or masked"),
    "SCORE_NONFINITE": (FLAG_SCORE_NONFINITE, "model returned a NaN/inf logit"),
    "OFF_IMAGE": (FLAG_OFF_IMAGE, "position not finite or wholly off the image: not scored"),
}

KINDS = ("npy", "fits_cube", "fits_dir", "survey", "tiles")

__all__ = [
    "SourceSpec", "Block", "resolve_inputs", "read_block", "cutout_flags", "FLAG_BITS",
    "FLAG_NONFINITE", "FLAG_BLANK", "FLAG_EDGE", "FLAG_BAND_BLANK", "FLAG_SCORE_NONFINITE", "FLAG_OFF_IMAGE",
    "FLAG_UNRANKED", "cutout_origin", "wcs_pixel_scale",
]


@dataclass
class SourceSpec:
    """One input, described by paths and options only (picklable, JSON-compatible).

    Attributes
    ----------
    kind : one of ``npy``, ``fits_cube``, ``fits_dir``, ``survey``, ``tiles``
    paths : list of str
        ``npy``/``fits_cube``: the file; ``fits_dir``: every cutout file (sorted);
        ``survey``/``tiles``: the band images in the model's band order.
    n : int
        Number of objects.
    name : str
        What the catalogue's ``source`` column says (the input path as given; for a
        directory, each file's path instead).
    options : dict
        Kind-specific: ``offset``/``dtype``/``shape`` (npy), ``hdu`` (FITS), ``catalog``,
        ``ra_col``... (survey), ``tile``/``stride``/``grid`` (tiles), ``image_shape``.
    """

    kind: str
    paths: list
    n: int
    name: str
    options: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> dict:
        """:meth:`to_dict` with a directory's file list shortened (for catalogue headers)."""
        d = asdict(self)
        if self.kind == "fits_dir" and len(self.paths) > 3:
            d["paths"] = self.paths[:2] + [f"... {len(self.paths)} files in all"]
        return d


@dataclass
class Block:
    """Objects ``start:stop`` of one input, as read (see the module docstring)."""

    images: np.ndarray  # N×C×H×W, uint8 or float32
    flags: np.ndarray  # int32 (N,)
    index: np.ndarray  # int64 (N,): index within the source
    source: list  # str per object
    ra: np.ndarray
    dec: np.ndarray
    x: np.ndarray
    y: np.ndarray
    valid: np.ndarray  # bool (N,): False where a file was skipped (keep_going)
    skipped: list  # [(path, reason)]
    extra: dict = field(default_factory=dict)  # kept source-catalogue columns (survey scans)


# ----------------------------------------------------------------------------------------
# flags
# ----------------------------------------------------------------------------------------
@nb.njit(cache=True, nogil=True)
def _flags_kernel(x, out):  # pragma: no cover - compiled
    n, c, h, w = x.shape
    for i in range(n):
        f = 0
        blank = 0
        for j in range(c):
            bad = False
            first = True
            lo = 0.0
            hi = 0.0
            for yy in range(h):
                for xx in range(w):
                    v = x[i, j, yy, xx]
                    if v != v or v == np.inf or v == -np.inf:
                        bad = True
                        continue
                    if first:
                        lo = v
                        hi = v
                        first = False
                    elif v < lo:
                        lo = v
                    elif v > hi:
                        hi = v
            if bad:
                f |= 1
            if first or not hi > lo:
                blank += 1
        if blank == c:
            f |= 2
        elif blank > 0:
            f |= 8
        out[i] |= f


def cutout_flags(images: np.ndarray, flags: np.ndarray | None = None) -> np.ndarray:
    """NONFINITE / BLANK / BAND_BLANK flags of N×C×H×W cutouts, OR-ed into ``flags``."""
    x = np.ascontiguousarray(images)
    out = np.zeros(x.shape[0], dtype=np.int32) if flags is None else flags
    if not x.shape[0]:
        return out
    if x.dtype.kind in "ui":  # no NaN possible: vectorised min/max per band
        planes = x.reshape(x.shape[0], x.shape[1], -1)
        blank = (planes.min(axis=2) == planes.max(axis=2)).sum(axis=1)
        out |= np.where(blank == x.shape[1], FLAG_BLANK, np.where(blank > 0, FLAG_BAND_BLANK, 0)).astype(np.int32)
        return out
    _flags_kernel(x, out)
    return out


# ----------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------
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


def _check_pixel_scale(path, header, meta: ModelMetadata, check: bool) -> float | None:
    scale = wcs_pixel_scale(header)
    want = float(meta.pixel_scale)
    if check and scale is not None and want > 0 and abs(scale / want - 1.0) > PIXEL_SCALE_TOLERANCE:
        raise file_error(path, f"pixel scale {scale:.4g}\"/px (from its WCS) differs from the model's {want:.4g}\"/px "
                               f"by more than {PIXEL_SCALE_TOLERANCE:.0%}; resample the image, or pass "
                               "--accept-pixel-scale to scan it anyway")
    return scale


def _check_dtype(dtype: np.dtype, where) -> None:
    if dtype.kind not in "uif" or dtype.itemsize > 8:
        raise file_error(where, f"cannot scan pixels of dtype {dtype}; expected integers or floats")


def _to_pixels(a: np.ndarray) -> np.ndarray:
    """uint8 stays (normalised cutouts); every other dtype becomes float32 (native byte order)."""
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    return np.ascontiguousarray(a, dtype=np.float32)


def _nchw(shape: tuple, meta: ModelMetadata) -> tuple[int, bool] | None:
    """(N, is_stack) when ``shape`` holds cutouts the model fits, else None."""
    c, h, w = (int(v) for v in meta.input_shape)
    shape = tuple(int(v) for v in shape)
    if shape == (c, h, w) or (c == 1 and shape == (h, w)):
        return 1, False
    if len(shape) == 4 and shape[1:] == (c, h, w):
        return shape[0], True
    if c == 1 and len(shape) == 3 and shape[1:] == (h, w):
        return shape[0], True
    return None


def _shape_error(path, shape, meta: ModelMetadata) -> InputError:
    c, h, w = (int(v) for v in meta.input_shape)
    return file_error(
        path,
        f"holds an array of shape {tuple(shape)}, but the model expects cutouts {c}×{h}×{w} "
        f"(N×{c}×{h}×{w}{f' or N×{h}×{w}' if c == 1 else ''}; bands {', '.join(meta.bands)}); "
        "for survey images pass --catalog or --tile",
    )


def _image_hdu(hdul, path):
    """Index of the first HDU with image data (CompImageHDU included)."""
    for k, hdu in enumerate(hdul):
        if getattr(hdu, "is_image", False) and getattr(hdu, "shape", ()) and len(hdu.shape) >= 2:
            return k
    raise file_error(path, "no image data in this FITS file")


def _open_fits(path):
    from astropy.io import fits

    try:
        return fits.open(path, memmap=False, lazy_load_hdus=True)
    except Exception as exc:  # astropy raises OSError, ValueError, ... for bad files
        raise file_error(path, f"not a readable FITS file ({first_line(exc)})") from None


# ----------------------------------------------------------------------------------------
# resolving inputs
# ----------------------------------------------------------------------------------------
def _resolve_npy(p: Path, meta: ModelMetadata) -> SourceSpec:
    try:
        with open(p, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
            else:  # format 3.0 (utf-8 field names): let numpy parse it
                mm = np.load(p, mmap_mode="r", allow_pickle=False)
                shape, fortran, dtype = mm.shape, not mm.flags.c_contiguous, mm.dtype
                fh.seek(mm.offset)
                del mm
            offset = fh.tell()
    except Exception as exc:  # noqa: BLE001 - numpy raises ValueError/EOFError/OSError
        raise file_error(p, f"not a readable .npy file ({first_line(exc)})") from None
    _check_dtype(np.dtype(dtype), p)
    if fortran and len(shape) > 1:
        raise file_error(p, "Fortran-ordered .npy; save it C-ordered (np.ascontiguousarray) to scan it")
    fit = _nchw(shape, meta)
    if fit is None:
        raise _shape_error(p, shape, meta)
    need = offset + int(np.prod(shape)) * np.dtype(dtype).itemsize
    size = p.stat().st_size
    if size < need:
        raise file_error(p, f"truncated .npy file ({size} bytes, the header promises {need})")
    return SourceSpec("npy", [str(p)], fit[0], str(p),
                      {"offset": offset, "dtype": np.dtype(dtype).str, "shape": list(shape)})


def _resolve_fits_cube(p: Path, meta: ModelMetadata) -> SourceSpec:
    with _open_fits(p) as hdul:
        try:
            k = _image_hdu(hdul, p)
            shape = tuple(hdul[k].shape)
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - malformed headers
            raise file_error(p, f"not a readable FITS file ({first_line(exc)})") from None
    fit = _nchw(shape, meta)
    if fit is None:
        raise _shape_error(p, shape, meta)
    return SourceSpec("fits_cube", [str(p)], fit[0], str(p), {"hdu": k, "shape": list(shape), "stack": fit[1]})


def _resolve_fits_dir(p: Path, meta: ModelMetadata, check_scale: bool = True) -> SourceSpec:
    files = sorted(str(f) for f in p.iterdir() if f.is_file() and is_fits(f))
    if not files:
        raise file_error(p, f"directory holds no FITS cutouts ({', '.join(FITS_SUFFIXES)})")
    scale = None
    try:
        with _open_fits(files[0]) as hdul:
            header = hdul[_image_hdu(hdul, files[0])].header
    except InputError:
        header = {}  # an unreadable first cutout is reported (or skipped) when it is read
    if header:
        scale = _check_pixel_scale(files[0], header, meta, check_scale)
    return SourceSpec("fits_dir", files, len(files), str(p), {"pixel_scale": scale})


_BAND_KEYS = ("BAND", "FILTER", "FILTER1", "FILTNAM")


def _band_of(header, bands: list[str]) -> str | None:
    for key in _BAND_KEYS:
        val = header.get(key)
        if isinstance(val, str) and val.strip():
            return band_name(val, bands)
    return None


def _resolve_images(paths: list[Path], meta: ModelMetadata, check_scale: bool = True):
    """Band images in model band order, their image HDU indices, the common (ny, nx) and the
    first image's WCS pixel scale (None without a celestial WCS)."""
    c = meta.channels
    if len(paths) != c:
        raise InputError(
            f"survey images: got {len(paths)} image file(s), the model expects {c} band(s) "
            f"({', '.join(meta.bands)}): give one image per band, in that order"
        )
    bands = [b.lower() for b in meta.bands]
    found = []
    for p in paths:
        with _open_fits(p) as hdul:
            k = _image_hdu(hdul, p)
            hdu = hdul[k]
            shape = tuple(hdu.shape)
            if len(shape) != 2:
                raise file_error(p, f"expected a 2-D survey image, got shape {shape}")
            band = _band_of(hdu.header, bands) or _band_of(hdul[0].header, bands)
            scale = _check_pixel_scale(p, hdu.header, meta, check_scale)
        found.append((str(p), k, shape, band, scale))
    shapes = {f[2] for f in found}
    if len(shapes) != 1:
        raise InputError("survey images: the band images differ in size "
                         f"({', '.join(f'{Path(f[0]).name} {f[2]}' for f in found)}); they must be registered")
    labelled = [f[3] for f in found]
    if all(b is not None for b in labelled) and sorted(labelled) == sorted(bands) and len(set(labelled)) == c:
        found.sort(key=lambda f: bands.index(f[3]))
    elif all(b is not None for b in labelled) and any(b not in bands for b in labelled):
        raise InputError(f"survey images: header bands {labelled} do not match the model's bands {bands}")
    return [f[0] for f in found], [f[1] for f in found], found[0][2], found[0][4]


def _read_wcs(path: str, hdu: int):
    from astropy.wcs import WCS

    with _open_fits(path) as hdul:
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


def _resolve_survey(paths, meta, catalog, ra_col, dec_col, x_col, y_col, check_scale=True, keep=None,
                    frame="icrs") -> SourceSpec:
    from astropy.table import Table

    images, hdus, shape, scale = _resolve_images(paths, meta, check_scale)
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
    if "ra_col" in cols and _read_wcs(images[0], hdus[0]) is None:
        raise file_error(images[0], "has no WCS in its header, so RA/Dec cannot be placed; pass --x-col/--y-col")
    opts = {"hdus": hdus, "image_shape": list(shape), "catalog": str(cat), "pixel_scale": scale, **cols,
            "keep": check_keep(keep, names, cat), "frame": check_frame(frame)}
    return SourceSpec("survey", images, len(table), str(cat), opts)


def _resolve_tiles(paths, meta, tile, stride, check_scale=True) -> SourceSpec:
    images, hdus, shape, scale = _resolve_images(paths, meta, check_scale)
    c, h, w = (int(v) for v in meta.input_shape)
    if tile is not None and int(tile) != h:
        raise InputError(f"--tile: the model takes {h}×{w} cutouts, so tiles must be {h} pixels, got {tile}")
    if h != w and tile is not None:
        raise InputError(f"--tile: the model's cutouts are not square ({h}×{w}); leave --tile out")
    s = int(stride) if stride is not None else h
    if s < 1:
        raise InputError(f"--stride: must be at least 1 pixel, got {stride}")
    ny, nx = shape
    nty = -(-max(ny - h, 0) // s) + 1
    ntx = -(-max(nx - w, 0) // s) + 1
    opts = {"hdus": hdus, "image_shape": [ny, nx], "tile": [h, w], "stride": s, "grid": [nty, ntx],
            "pixel_scale": scale}
    return SourceSpec("tiles", images, nty * ntx, images[0], opts)


def resolve_inputs(
    inputs,
    metadata: ModelMetadata,
    *,
    catalog: str | os.PathLike | None = None,
    ra_col: str | None = None,
    dec_col: str | None = None,
    x_col: str | None = None,
    y_col: str | None = None,
    tile: int | None = None,
    stride: int | None = None,
    keep_going: bool = False,
    check_pixel_scale: bool = True,
    keep_columns: list[str] | None = None,
    frame: str = "icrs",
) -> tuple[list[SourceSpec], list[tuple[str, str]]]:
    """Describe the inputs of a scan, checking each against the model.

    Parameters
    ----------
    inputs : paths (``.npy``, FITS cubes, directories of FITS cutouts), or — with ``catalog``
        or ``tile``/``stride`` — the per-band survey images (one per model band)
    metadata : the model's metadata (band order, cutout size)
    catalog, ra_col, dec_col, x_col, y_col : source catalogue of a survey scan
    tile, stride : sliding-tile scan (tile must equal the model's cutout size)
    keep_going : skip unreadable inputs instead of raising; they are returned as skipped
    check_pixel_scale : refuse inputs whose WCS pixel scale differs from the model's by more
        than 5 % (False: accept them; see the module docstring)
    keep_columns : source-catalogue columns copied into the candidate catalogue (None: the
        id/name-like ones; ``[]``: none) — :mod:`deepmine.inference.sourcecat`
    frame : astropy frame of the catalogue's RA/Dec columns (default ``icrs``)

    Returns
    -------
    (specs, skipped) where skipped is a list of (path, reason).
    """
    paths = [Path(p) for p in (inputs if isinstance(inputs, (list, tuple)) else [inputs])]
    if not paths:
        raise InputError("INPUT: no inputs given")
    for p in paths:
        if not p.exists():
            if keep_going and catalog is None and tile is None and stride is None:
                continue
            raise file_error(p, "input not found")
    if catalog is not None and (tile is not None or stride is not None):
        raise InputError("--catalog and --tile/--stride exclude each other: cut around sources or tile the image")
    if catalog is not None:
        return [_resolve_survey(paths, metadata, catalog, ra_col, dec_col, x_col, y_col, check_pixel_scale,
                                keep_columns, frame)], []
    if tile is not None or stride is not None:
        return [_resolve_tiles(paths, metadata, tile, stride, check_pixel_scale)], []
    if any(v is not None for v in (ra_col, dec_col, x_col, y_col)) or keep_columns:
        raise InputError("--ra-col/--dec-col/--x-col/--y-col/--keep-columns need --catalog")
    specs, skipped = [], []
    for p in paths:
        try:
            if not p.exists():
                raise file_error(p, "input not found")
            if p.is_dir():
                specs.append(_resolve_fits_dir(p, metadata, check_pixel_scale))
            elif p.stat().st_size == 0:
                raise file_error(p, "file is empty")
            elif p.suffix.lower() == ".npy":
                specs.append(_resolve_npy(p, metadata))
            elif is_fits(p):
                specs.append(_resolve_fits_cube(p, metadata))
            else:
                raise file_error(p, "unknown input type; expected .npy, a FITS cube (.fits/.fz) or a directory of "
                                 "FITS cutouts (survey images need --catalog or --tile)")
        except InputError as exc:
            if not keep_going or "model expects" in str(exc):
                raise
            skipped.append((str(p), str(exc)))
    return specs, skipped


# ----------------------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------------------
def _empty_block(n: int, shape, dtype=np.float32) -> Block:
    nan = np.full(n, np.nan)
    return Block(np.zeros((n,) + tuple(shape), dtype=dtype), np.zeros(n, np.int32), np.zeros(n, np.int64), [],
                 nan, nan.copy(), nan.copy(), nan.copy(), np.ones(n, bool), [])


def _read_npy(spec: SourceSpec, start: int, stop: int, meta: ModelMetadata) -> np.ndarray:
    o = spec.options
    dtype = np.dtype(o["dtype"])
    shape = tuple(o["shape"])
    per = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    if len(shape) in (2, 3) and _nchw(shape, meta) == (1, False):  # a single cutout
        per, shape = int(np.prod(shape)), (1,) + shape
    n = stop - start
    try:
        mm = np.memmap(spec.paths[0], dtype=dtype, mode="r", offset=o["offset"] + start * per * dtype.itemsize,
                       shape=(n * per,))
        arr = np.array(mm)
        del mm
    except (OSError, ValueError) as exc:
        raise file_error(spec.paths[0], f"cannot read objects {start}:{stop} ({first_line(exc)})") from None
    return arr.reshape((n,) + tuple(meta.input_shape))


def _read_fits_cube(spec: SourceSpec, start: int, stop: int, meta: ModelMetadata) -> np.ndarray:
    path = spec.paths[0]
    with _open_fits(path) as hdul:
        try:
            hdu = hdul[spec.options["hdu"]]
            arr = hdu.section[start:stop] if spec.options["stack"] else hdu.section[...][None]
            arr = np.asarray(arr)
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - truncated or corrupt data
            raise file_error(path, f"cannot read objects {start}:{stop} ({first_line(exc)})") from None
    return arr.reshape((stop - start,) + tuple(meta.input_shape))


def _read_one_fits_cutout(path: str, meta: ModelMetadata) -> np.ndarray:
    with _open_fits(path) as hdul:
        try:
            k = _image_hdu(hdul, path)
            arr = np.asarray(hdul[k].section[...])
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise file_error(path, f"cannot read the cutout ({first_line(exc)})") from None
    fit = _nchw(arr.shape, meta)
    if fit is None or fit[1]:
        raise _shape_error(path, arr.shape, meta)
    _check_dtype(arr.dtype, path)
    return arr.reshape(tuple(meta.input_shape))


@functools.lru_cache(maxsize=4)
def _positions(catalog: str, mtime: int, image: str, hdu: int, ra_col, dec_col, x_col, y_col, frame="icrs"):
    """(x, y, ra, dec) float64 arrays of a source catalogue (cached per process; RA/Dec in
    ``frame``, see :mod:`deepmine.inference.sourcecat`)."""
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


def _cut(section_of, y0: int, x0: int, h: int, w: int, ny: int, nx: int) -> tuple[np.ndarray, bool]:
    """Pixels [y0:y0+h, x0:x0+w] of an image (NaN outside it) and whether it was padded."""
    out = np.full((h, w), np.nan, dtype=np.float32)
    ya, yb = max(y0, 0), min(y0 + h, ny)
    xa, xb = max(x0, 0), min(x0 + w, nx)
    if ya < yb and xa < xb:
        out[ya - y0:yb - y0, xa - x0:xb - x0] = section_of[ya:yb, xa:xb]
    return out, not (ya == y0 and xa == x0 and yb == y0 + h and xb == x0 + w)


def _read_survey(spec: SourceSpec, start: int, stop: int, meta: ModelMetadata, block: Block) -> None:
    o = spec.options
    c, h, w = (int(v) for v in meta.input_shape)
    ny, nx = o["image_shape"]
    n = stop - start
    if spec.kind == "survey":
        x, y, ra, dec = _positions(o["catalog"], os.stat(o["catalog"]).st_mtime_ns, spec.paths[0], o["hdus"][0],
                                   o.get("ra_col"), o.get("dec_col"), o.get("x_col"), o.get("y_col"),
                                   o.get("frame", "icrs"))
        if o.get("keep"):
            kept = kept_columns(o["catalog"], os.stat(o["catalog"]).st_mtime_ns, tuple(o["keep"]))
            block.extra = {k: v[start:stop] for k, v in kept.items()}
        bx, by = x[start:stop], y[start:stop]
        block.ra[:], block.dec[:] = ra[start:stop], dec[start:stop]
        block.x[:], block.y[:] = bx, by
        finite = np.isfinite(bx) & np.isfinite(by)
        x0s = np.where(finite, cutout_origin(np.where(finite, bx, 0.0), w), -10 * (w + nx)).astype(np.int64)
        y0s = np.where(finite, cutout_origin(np.where(finite, by, 0.0), h), -10 * (h + ny)).astype(np.int64)
        off = ~finite | (x0s + w <= 0) | (x0s >= nx) | (y0s + h <= 0) | (y0s >= ny)
        block.flags[off] |= FLAG_OFF_IMAGE
    else:
        nty, ntx = o["grid"]
        s = o["stride"]
        k = np.arange(start, stop)
        y0s, x0s = (k // ntx) * s, (k % ntx) * s
        block.x[:] = x0s + (w - 1) / 2.0
        block.y[:] = y0s + (h - 1) / 2.0
        wcs = _read_wcs(spec.paths[0], o["hdus"][0])
        if wcs is not None and n:
            ra, dec = wcs.all_pix2world(block.x, block.y, 0)
            block.ra[:], block.dec[:] = ra, dec
    block.index[:] = np.arange(start, stop)
    block.source = [spec.name] * n
    for j, (path, k) in enumerate(zip(spec.paths, o["hdus"])):
        with _open_fits(path) as hdul:
            try:
                sec = hdul[k].section
                for i in range(n):
                    if block.flags[i] & FLAG_OFF_IMAGE:
                        block.images[i, j] = np.nan
                        continue
                    block.images[i, j], padded = _cut(sec, int(y0s[i]), int(x0s[i]), h, w, ny, nx)
                    if padded:
                        block.flags[i] |= FLAG_EDGE
            except Exception as exc:  # noqa: BLE001 - truncated or corrupt data
                raise file_error(path, f"cannot read pixels ({first_line(exc)})") from None


def read_block(spec: SourceSpec, start: int, stop: int, metadata: ModelMetadata, *,
               keep_going: bool = False) -> Block:
    """Read objects ``start:stop`` of ``spec`` as a :class:`Block` (flags computed).

    A file that cannot be read raises an :class:`InputError` naming it; with ``keep_going``,
    an unreadable cutout of a ``fits_dir`` is marked invalid and listed in ``block.skipped``
    (other kinds fail as a whole, and the caller skips the block).
    """
    n = stop - start
    shape = tuple(int(v) for v in metadata.input_shape)
    if spec.kind in ("npy", "fits_cube"):
        arr = _read_npy(spec, start, stop, metadata) if spec.kind == "npy" else _read_fits_cube(spec, start, stop, metadata)
        _check_dtype(arr.dtype, spec.paths[0])
        block = _empty_block(0, shape)
        block.images = _to_pixels(arr)
        block.flags = np.zeros(n, np.int32)
        block.index = np.arange(start, stop, dtype=np.int64)
        block.source = [spec.name] * n
        block.ra, block.dec, block.x, block.y = (np.full(n, np.nan) for _ in range(4))
        block.valid = np.ones(n, bool)
    elif spec.kind == "fits_dir":
        block = _empty_block(n, shape)
        cutouts = []
        for i, path in enumerate(spec.paths[start:stop]):
            block.source.append(path)
            try:
                cutouts.append(_read_one_fits_cutout(path, metadata))
            except InputError as exc:
                if not keep_going:
                    raise
                block.valid[i] = False
                block.skipped.append((path, str(exc)))
                cutouts.append(np.zeros(shape, np.float32))
        dtypes = {a.dtype for a, ok in zip(cutouts, block.valid) if ok}
        block.images = (np.stack(cutouts).astype(np.uint8) if dtypes == {np.dtype(np.uint8)}
                        else np.stack(cutouts).astype(np.float32)) if cutouts else block.images
    elif spec.kind in ("survey", "tiles"):
        block = _empty_block(n, shape)
        _read_survey(spec, start, stop, metadata, block)
    else:
        raise InputError(f"unknown input kind {spec.kind!r}; expected one of {KINDS}")
    cutout_flags(block.images, block.flags)
    return block
