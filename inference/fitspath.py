"""Names of FITS files: the suffixes a FITS file may end with, and the one parser of an
extension named in a path (``file.fits[N]``, ``file.fits[EXTNAME]``, ``file.fits[EXTNAME,EXTVER]``,
cfitsio's and astropy's notation). Re-exported by :mod:`deepmine.inference.formats`; kept apart
(it imports nothing of deepmine but the errors) so that the output check of
:mod:`deepmine.inference.atomic` can strip an input's extension too.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import InputError

__all__ = ["FITS_SUFFIXES", "is_fits", "split_extension"]

#: Names a FITS file may end with (compressed forms included), longest first.
FITS_SUFFIXES = (".fits.gz", ".fits.fz", ".fit.gz", ".fits", ".fit", ".fts", ".fz")


def is_fits(path: str | os.PathLike) -> bool:
    """Whether ``path``'s name ends with a FITS suffix (case-insensitive)."""
    return Path(path).name.lower().endswith(FITS_SUFFIXES)


_EXT = re.compile(r"^(?P<file>.+)\[(?P<ext>[^\[\]]+)\]$")


def split_extension(path: str | os.PathLike) -> tuple[Path, int | str | tuple[str, int] | None]:
    """``(file, extension)`` of a FITS image named ``file.fits[N]``, ``file.fits[EXTNAME]`` or
    ``file.fits[EXTNAME,EXTVER]``; ``(path, None)`` when no extension is named.

    Only names whose part before the brackets is a FITS name (:func:`is_fits`) are split, so a
    file such as ``run[1].npy`` keeps its name. ``N`` counts HDUs from 0 (the primary), as
    astropy's ``hdul[N]`` does; an EXTNAME is matched case-insensitively, as astropy matches it.

    >>> split_extension("img.fits[1]"), split_extension("img.fz[sci, 2]"), split_extension("a.npy")
    ((PosixPath('img.fits'), 1), (PosixPath('img.fz'), ('SCI', 2)), (PosixPath('a.npy'), None))
    """
    m = _EXT.match(str(path))
    if m is None or not is_fits(m["file"]):
        return Path(path), None
    ext = m["ext"].strip()
    if ext.isdigit():
        return Path(m["file"]), int(ext)
    name, comma, ver = (v.strip() for v in ext.partition(","))
    if not name or (comma and not ver.isdigit()):
        raise InputError(f"{path}: cannot read the extension [{ext}]; expected [N], [EXTNAME] or [EXTNAME,EXTVER]")
    return Path(m["file"]), ((name.upper(), int(ver)) if ver else name.upper())
