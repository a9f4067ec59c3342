"""Scanner inputs: describe them once (:func:`resolve_inputs`), then read any range of objects
(:func:`read_block`) — cutout stacks and cutout files here, survey images in
:mod:`deepmine.inference.inputs.survey`; what a scan reads (:class:`SourceSpec`, :class:`Block`, the
flags) in :mod:`deepmine.inference.inputs.blocks`.

Kinds of input
--------------
``npy``
    A ``.npy`` stack N×C×H×W (or N×H×W for one band), any real dtype. Each block is read
    through its own short-lived memory map, so resident memory stays at one block.
``fits_cube``
    A FITS image N×C×H×W or N×H×W (or a single C×H×W / H×W cutout), read through
    ``hdu.section`` (only the block's rows; BZERO/BSCALE applied; tile-compressed too). The
    first image HDU, or the one named ``cube.fits[N]`` / ``cube.fits[EXTNAME]``
    (:func:`deepmine.inference.formats.split_extension`).
``fits_dir``
    A directory of single-cutout FITS files (C×H×W or H×W each, the first image HDU of each),
    in sorted name order.
``survey``, ``tiles``
    Per-band survey images with a WCS, cut around a source catalogue's positions or into
    sliding tiles: :mod:`deepmine.inference.inputs.survey` (centring convention, pixel-scale check).

FITS images with ``MASK``/``VARIANCE`` planes beside the image (HSC-style multi-extension
files), of every kind: the image plane is read, pixels the mask or variance marks bad become
NaN (treated as NaN pixels are), and a bad centre sets ``CENTER_MASKED``
(:mod:`deepmine.inference.inputs.planes`).

Every block comes back as a :class:`Block`: the cutouts (uint8 stays uint8 — taken to be
percentile-normalised already, the HSC convention; every other dtype becomes float32, with
BZERO/BSCALE applied, before any arithmetic), per-object flags, positions (NaN where unknown),
and the source name and index of each object.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import InputError, file_error, first_line
from ..formats import FITS_SUFFIXES, image_hdu, is_fits, open_fits, split_extension
from ..metadata import ModelMetadata
from .blocks import (
    FLAG_BAND_BLANK,
    FLAG_BITS,
    FLAG_BLANK,
    FLAG_CENTER_MASKED,
    FLAG_EDGE,
    FLAG_NONFINITE,
    FLAG_OFF_IMAGE,
    FLAG_SCORE_NONFINITE,
    FLAG_UNRANKED,
    KINDS,
    Block,
    SourceSpec,
    cutout_flags,
)
from .planes import center_masked, find_planes, read_bad
from .survey import (
    PIXEL_SCALE_TOLERANCE,
    check_pixel_scale,
    cutout_origin,
    read_survey,
    resolve_survey,
    resolve_tiles,
    wcs_pixel_scale,
)

__all__ = [
    "SourceSpec", "Block", "resolve_inputs", "read_block", "cutout_flags", "FLAG_BITS", "KINDS",
    "FLAG_NONFINITE", "FLAG_BLANK", "FLAG_EDGE", "FLAG_BAND_BLANK", "FLAG_SCORE_NONFINITE", "FLAG_OFF_IMAGE",
    "FLAG_CENTER_MASKED", "FLAG_UNRANKED", "cutout_origin", "wcs_pixel_scale", "PIXEL_SCALE_TOLERANCE",
]


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


def _apply_mask(arr: np.ndarray, bad: np.ndarray | None) -> np.ndarray:
    """``arr`` with bad pixels NaN (float32 then, uint8 included)."""
    if bad is None or not bad.any():
        return arr
    out = np.array(arr, dtype=np.float32)
    out[bad] = np.nan
    return out


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
    with open_fits(p) as hdul:
        try:
            k = image_hdu(hdul, p)
            shape = tuple(hdul[k].shape)
            planes = find_planes(hdul, k)
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - malformed headers
            raise file_error(p, f"not a readable FITS file ({first_line(exc)})") from None
    fit = _nchw(shape, meta)
    if fit is None:
        raise _shape_error(p, shape, meta)
    return SourceSpec("fits_cube", [str(split_extension(p)[0])], fit[0], str(p),
                      {"hdu": k, "shape": list(shape), "stack": fit[1], "planes": planes})


def _resolve_fits_dir(p: Path, meta: ModelMetadata, check_scale: bool = True) -> SourceSpec:
    files = sorted(str(f) for f in p.iterdir() if f.is_file() and is_fits(f))
    if not files:
        raise file_error(p, f"directory holds no FITS cutouts ({', '.join(FITS_SUFFIXES)})")
    scale = None
    try:
        with open_fits(files[0]) as hdul:
            header = hdul[image_hdu(hdul, files[0])].header
    except InputError:
        header = {}  # an unreadable first cutout is reported (or skipped) when it is read
    if header:
        scale = check_pixel_scale(files[0], header, meta, check_scale)
    return SourceSpec("fits_dir", files, len(files), str(p), {"pixel_scale": scale})


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
        or ``tile``/``stride`` — the per-band survey images (one per model band); a FITS path
        may name its extension, ``file.fits[N]`` or ``file.fits[EXTNAME]``
    metadata : the model's metadata (band order, cutout size)
    catalog, ra_col, dec_col, x_col, y_col : source catalogue of a survey scan
    tile, stride : sliding-tile scan (tile must equal the model's cutout size)
    keep_going : skip unreadable inputs instead of raising; they are returned as skipped
    check_pixel_scale : refuse inputs whose WCS pixel scale differs from the model's by more
        than 5 % (False: accept them; see the module docstring)
    keep_columns : source-catalogue columns copied into the candidate catalogue (None: the
        id/name-like ones; ``[]``: none) — :mod:`deepmine.inference.inputs.sourcecat`
    frame : astropy frame of the catalogue's RA/Dec columns (default ``icrs``)

    Returns
    -------
    (specs, skipped) where skipped is a list of (path, reason).
    """
    paths = [Path(p) for p in (inputs if isinstance(inputs, (list, tuple)) else [inputs])]
    if not paths:
        raise InputError("INPUT: no inputs given")
    for p in paths:
        if not split_extension(p)[0].exists():
            if keep_going and catalog is None and tile is None and stride is None:
                continue
            raise file_error(split_extension(p)[0], "input not found")
    if catalog is not None and (tile is not None or stride is not None):
        raise InputError("--catalog and --tile/--stride exclude each other: cut around sources or tile the image")
    if catalog is not None:
        return [resolve_survey(paths, metadata, catalog, ra_col, dec_col, x_col, y_col, check_pixel_scale,
                               keep_columns, frame)], []
    if tile is not None or stride is not None:
        return [resolve_tiles(paths, metadata, tile, stride, check_pixel_scale)], []
    if any(v is not None for v in (ra_col, dec_col, x_col, y_col)) or keep_columns:
        raise InputError("--ra-col/--dec-col/--x-col/--y-col/--keep-columns need --catalog")
    specs, skipped = [], []
    for p in paths:
        try:
            f, ext = split_extension(p)
            if not f.exists():
                raise file_error(f, "input not found")
            if f.is_dir():
                specs.append(_resolve_fits_dir(f, metadata, check_pixel_scale))
            elif f.stat().st_size == 0:
                raise file_error(f, "file is empty")
            elif f.suffix.lower() == ".npy":
                specs.append(_resolve_npy(f, metadata))
            elif is_fits(f):
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


def _read_fits_cube(spec: SourceSpec, start: int, stop: int, meta: ModelMetadata) -> tuple[np.ndarray, np.ndarray]:
    """Objects ``start:stop`` of a FITS cube (bad mask-plane pixels NaN) and their CENTER_MASKED."""
    path, o = spec.paths[0], spec.options
    n = stop - start

    def window(sec, is_mask=False):
        return np.asarray(sec[start:stop] if o["stack"] else sec[...][None])

    with open_fits(path) as hdul:
        try:
            arr = window(hdul[o["hdu"]].section)
            bad = read_bad(hdul, o.get("planes"), window)
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - truncated or corrupt data
            raise file_error(path, f"cannot read objects {start}:{stop} ({first_line(exc)})") from None
    shape = (n,) + tuple(meta.input_shape)
    if bad is None:
        return arr.reshape(shape), np.zeros(n, bool)
    bad = bad.reshape(shape)
    return _apply_mask(arr.reshape(shape), bad), center_masked(bad)


def _read_one_fits_cutout(path: str, meta: ModelMetadata) -> tuple[np.ndarray, bool]:
    with open_fits(path) as hdul:
        try:
            k = image_hdu(hdul, path)
            arr = np.asarray(hdul[k].section[...])
            bad = read_bad(hdul, find_planes(hdul, k), lambda sec, is_mask: np.asarray(sec[...]))
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise file_error(path, f"cannot read the cutout ({first_line(exc)})") from None
    fit = _nchw(arr.shape, meta)
    if fit is None or fit[1]:
        raise _shape_error(path, arr.shape, meta)
    _check_dtype(arr.dtype, path)
    shape = tuple(meta.input_shape)
    if bad is None:
        return arr.reshape(shape), False
    bad = bad.reshape((1,) + shape)
    return _apply_mask(arr.reshape(shape), bad[0]), bool(center_masked(bad)[0])


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
        if spec.kind == "npy":
            arr, centre = _read_npy(spec, start, stop, metadata), np.zeros(n, bool)
        else:
            arr, centre = _read_fits_cube(spec, start, stop, metadata)
        _check_dtype(arr.dtype, spec.paths[0])
        block = Block.empty(0, shape)
        block.images = _to_pixels(arr)
        block.flags = np.where(centre, FLAG_CENTER_MASKED, 0).astype(np.int32)
        block.index = np.arange(start, stop, dtype=np.int64)
        block.source = [spec.name] * n
        block.ra, block.dec, block.x, block.y = (np.full(n, np.nan) for _ in range(4))
        block.valid = np.ones(n, bool)
    elif spec.kind == "fits_dir":
        block = Block.empty(n, shape)
        cutouts = []
        for i, path in enumerate(spec.paths[start:stop]):
            block.source.append(path)
            try:
                cutout, centre = _read_one_fits_cutout(path, metadata)
                cutouts.append(cutout)
                block.flags[i] |= FLAG_CENTER_MASKED if centre else 0
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
        block = Block.empty(n, shape)
        read_survey(spec, start, stop, metadata, block)
    else:
        raise InputError(f"unknown input kind {spec.kind!r}; expected one of {KINDS}")
    cutout_flags(block.images, block.flags)
    return block
