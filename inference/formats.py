"""File formats and data conventions, written down once: suffixes, band order, cutout stacks.

Every module that decides what a file is by its name asks here (as astropy's
``io/fits/connect.py`` keeps one list of FITS suffixes):

- :data:`FITS_SUFFIXES`, :func:`is_fits` (defined in :mod:`.fitspath`), :func:`strip_suffix`
  (``cat.fits.gz`` → ``cat``);
- :data:`STACK_SUFFIXES` and :func:`open_stack`: a stack of cutouts (``.npy`` or a FITS cube),
  memory-mapped, as N×C×H×W — the one reader used by training data, the grading page and
  ``deepmine generate``'s checks (the scanner's streaming readers in :mod:`.inputs.readers` use the
  same suffixes and dtype rules);
- :data:`HSC_BANDS`: the channel order of 3-band cutouts (seed 4.1: bands i, r, g → R, G, B);
- :func:`split_extension`, :func:`open_fits`, :func:`image_hdu`: a FITS image named with an
  extension, ``file.fits[N]`` (HDU number, 0 = primary) or ``file.fits[EXTNAME]`` /
  ``file.fits[EXTNAME,EXTVER]`` (cfitsio's and astropy's notation) — the one parser, used
  wherever a FITS image is read (scan inputs, survey images, cutout stacks; the parser lives in
  :mod:`.fitspath`, which the output check of :mod:`.atomic` uses too).

>>> is_fits("tile.fits.fz"), is_fits("cat.ecsv")
(True, False)
>>> strip_suffix("run/cat.fits.gz").name
'cat'
>>> split_extension("deep/calexp.fits[IMAGE]")
(PosixPath('deep/calexp.fits'), 'IMAGE')
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import InputError, file_error, first_line
from .fitspath import FITS_SUFFIXES, is_fits, split_extension

__all__ = ["FITS_SUFFIXES", "STACK_SUFFIXES", "TABLE_SUFFIXES", "HSC_BANDS", "is_fits", "band_name", "strip_suffix", "load_npy",
           "open_stack", "PLOT_SUFFIXES", "check_plot_path", "split_extension", "open_fits", "image_hdu", "output_paths"]

#: Channel order of 3-band HSC cutouts (seed 4.1): i, r, g shown as R, G, B.
HSC_BANDS = ("i", "r", "g")
#: Cutout stacks: NumPy arrays or FITS cubes.
STACK_SUFFIXES = (".npy", *FITS_SUFFIXES)
#: Tables (catalogues, grades, pools): FITS binary tables, ECSV, Parquet, CSV and the other
#: formats astropy's Table reads (text, VOTable, HDF5).
TABLE_SUFFIXES = (*FITS_SUFFIXES, ".ecsv", ".parquet", ".csv", ".txt", ".dat", ".vot", ".xml", ".h5", ".hdf5")
#: Figure files (``--plot``): the formats matplotlib writes without extra packages.
PLOT_SUFFIXES = (".png", ".jpg", ".jpeg", ".pdf", ".svg", ".svgz", ".eps", ".ps", ".tif", ".tiff", ".webp")


def check_plot_path(path: str | os.PathLike, option: str = "--plot") -> Path:
    """Refuse a figure path whose suffix names no figure format, in one line naming ``option``
    (:func:`deepmine.inference.pictures.picture_format`)."""
    from .pictures import picture_format

    picture_format(path, option)
    return Path(path)


def band_name(value, bands=HSC_BANDS) -> str:
    """A band named by a header card, as one of ``bands`` where it can be read as one:
    ``"HSC-I"``, ``"hsc_i"``, ``"i"`` → ``"i"``; anything else lower-cased as it is.

    >>> band_name("HSC-I"), band_name("r"), band_name("F814W")
    ('i', 'r', 'f814w')
    """
    v = str(value).strip().lower()
    if v in bands:
        return v
    for sep in ("-", "_", " ", "."):
        tail = v.rsplit(sep, 1)[-1]
        if tail in bands:
            return tail
    return v


def strip_suffix(path: str | os.PathLike, suffixes=(*TABLE_SUFFIXES, ".npy")) -> Path:
    """``path`` without its known (possibly double) suffix; unknown suffixes are kept."""
    p = Path(path)
    name = p.name.lower()
    for s in sorted(suffixes, key=len, reverse=True):
        if name.endswith(s) and len(name) > len(s):
            return p.with_name(p.name[: -len(s)])
    return p


def open_fits(path: str | os.PathLike, memmap: bool = False):
    """Open a FITS file (an extension in the name is ignored: pass it to :func:`image_hdu`),
    refusing an unreadable one in one line naming it."""
    from astropy.io import fits

    p = split_extension(path)[0]
    try:
        return fits.open(p, memmap=memmap, lazy_load_hdus=True)
    except Exception as exc:  # astropy raises OSError, ValueError, ... for bad files
        raise file_error(p, f"not a readable FITS file ({first_line(exc)})") from None


def image_hdu(hdul, path: str | os.PathLike, ndim=(2, 3, 4)) -> int:
    """Index of the image HDU ``path`` names (``file.fits[N]``/``[EXTNAME]``), or of the first
    HDU with image data of ``ndim`` dimensions (tile-compressed ``CompImageHDU`` included).

    Raises
    ------
    InputError
        The named extension does not exist, or holds no image data; no image HDU at all.
    """
    ext = split_extension(path)[1]

    def is_image(hdu):
        return getattr(hdu, "is_image", False) and len(getattr(hdu, "shape", ()) or ()) in ndim

    if ext is None:
        for k, hdu in enumerate(hdul):
            if is_image(hdu):
                return k
        raise file_error(path, "no image data in this FITS file")
    try:
        k = hdul.index_of(ext)
        hdul[k]  # noqa: B018 - an index past the end only fails here with lazily loaded HDUs
    except (KeyError, IndexError):
        names = ", ".join(f"{i} {h.name or '(no name)'}" for i, h in enumerate(hdul))
        raise file_error(path, f"no extension {ext!r} in this FITS file (it has {names})") from None
    if not is_image(hdul[k]):
        shape = getattr(hdul[k], "shape", None)
        raise file_error(path, f"extension {ext!r} holds no image data of {'/'.join(map(str, ndim))} dimensions "
                               f"({type(hdul[k]).__name__}{f', shape {shape}' if shape else ''})")
    return k


def output_paths(out: str | os.PathLike, suffixes, *, known=TABLE_SUFFIXES, option: str = "--out",
                 example: str = "output") -> list[Path]:
    """The files a command writes for ``--out OUT``, one per suffix in ``suffixes``.

    The rule every command's ``--help`` states: a known suffix (``known``, by default the table
    suffixes) is replaced by each of ``suffixes`` (kept where it is that suffix already); any
    other name gets the suffix appended; an existing folder is refused in one line naming
    ``option`` (name a file inside it).

    >>> [str(p) for p in output_paths("sel.csv", (".fits", ".ecsv"))]
    ['sel.fits', 'sel.ecsv']
    >>> [str(p) for p in output_paths("run.v2", (".onnx",), known=(".onnx",))]
    ['run.v2.onnx']
    """
    p = Path(out)
    if p.is_dir():
        raise file_error(p, f"{option}: is a folder; name the file, e.g. {p / (example + suffixes[0])}")
    stem = strip_suffix(p, known)
    return [p if p.suffix.lower() == s else Path(str(stem) + s) for s in suffixes]


def load_npy(path: str | os.PathLike) -> np.ndarray:
    """Memory-map a ``.npy`` file (no pickles), refusing text or corrupt files in one line."""
    p = Path(path)
    with open(p, "rb") as fh:
        if fh.read(6) != b"\x93NUMPY":
            raise file_error(p, "not a readable .npy array (no NumPy header; a text or corrupt file?)")
    try:
        return np.load(p, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise file_error(p, f"not a readable .npy array ({first_line(exc)})") from None


def open_stack(path: str | os.PathLike, what: str = "cutout stack", channels=(1, 3)) -> np.ndarray:
    """Memory-map a stack of cutouts and return it as N×C×H×W (N×H×W becomes N×1×H×W).

    Parameters
    ----------
    path : ``.npy`` file or FITS cube (first 3-D or 4-D image HDU, or the one named
        ``cube.fits[N]`` / ``cube.fits[EXTNAME]``)
    what : what the file is, in the "not found" / "is empty" messages (e.g. ``"--positives file"``)
    channels : accepted numbers of bands per cutout (None: any)

    Raises
    ------
    InputError
        Missing, empty or corrupt file; unknown suffix; an array that is not 3-D or 4-D, holds
        no cutouts, has another number of bands, or is not numeric. The message names the file.
    """
    p, ext = split_extension(path)
    if p.is_dir():
        raise file_error(p, f"expected a .npy or FITS {what}, got a directory")
    if not p.is_file():
        raise file_error(p, f"{what} not found")
    if p.stat().st_size == 0:
        raise file_error(p, f"{what} is empty")
    if p.name.lower().endswith(".npy"):
        arr = load_npy(p)
    elif is_fits(p):
        hdul = open_fits(p, memmap=True)
        try:
            k = image_hdu(hdul, path, ndim=(3, 4))
            arr = hdul[k].data
        except InputError as exc:
            if ext is not None:
                raise
            raise file_error(p, "no 3-D or 4-D image HDU (expected an N×C×H×W or N×H×W cube)") from exc
        except Exception as exc:  # noqa: BLE001 - astropy raises many kinds for bad files
            raise file_error(p, f"not a readable FITS cube ({first_line(exc)})") from None
    else:
        raise file_error(p, f"unknown {what} format; expected one of {', '.join(STACK_SUFFIXES)}")
    if arr.ndim == 3:
        arr = arr[:, None]
    if arr.ndim != 4:
        raise file_error(p, f"expected N×C×H×W (or N×H×W) cutouts, got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise file_error(p, "holds no cutouts")
    if channels is not None and arr.shape[1] not in channels:
        want = " or ".join(f"{k} bands ({', '.join(HSC_BANDS)})" if k == 3 else f"{k} band" + "s" * (k != 1)
                           for k in sorted(channels, reverse=True))
        raise file_error(p, f"expected {want} per cutout, got {arr.shape[1]} (shape {arr.shape})")
    if arr.dtype.kind not in "uif":
        raise file_error(p, f"expected numeric pixels, got dtype {arr.dtype}")
    return arr
