"""What a scan's inputs are laid out as: cutout stacks, survey images with a source catalogue, or tiles.

:class:`InputLayout` gathers the options that only describe how to read the inputs of
:func:`deepmine.inference.scan.scanner.scan` (they travel to
:func:`deepmine.inference.inputs.readers.resolve_inputs`), and checks how they combine when it is
built, so that a bad combination is refused in one line before any model is loaded::

    InputLayout()                                        # .npy stacks, FITS cubes, cutout folders
    InputLayout(catalog="sources.ecsv", ra_col="RA")     # cutouts around catalogued sources
    InputLayout(tile=64, stride=32)                      # sliding tiles over survey images
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields

from ..errors import InputError

__all__ = ["InputLayout"]


@dataclass(frozen=True)
class InputLayout:
    """How the inputs of a scan are read.

    Parameters
    ----------
    catalog : path, optional
        Source catalogue (ECSV/FITS/...): the inputs are survey images, one per model band, and
        cutouts are cut around its sources.
    ra_col, dec_col, x_col, y_col : str, optional
        Columns of ``catalog``: RA/Dec in degrees (default ``ra``/``dec``), or 0-based pixel
        positions.
    keep_columns : list of str, optional
        ``catalog`` columns copied into the candidate catalogue (None: the id/name-like ones,
        ``[]``: none; :mod:`deepmine.inference.inputs.sourcecat`).
    frame : str
        Astropy frame of the catalogue's RA/Dec (default ``icrs``).
    tile, stride : int, optional
        Sliding tiles over survey images (tile = the model's cutout size; stride default: the
        tile).
    check_pixel_scale : bool
        Refuse survey images whose WCS pixel scale is more than 5 % off the model's (False: scan
        them anyway, with a note).

    Raises
    ------
    InputError
        ``catalog`` together with ``tile``/``stride``; catalogue columns without ``catalog``.
    """

    catalog: str | os.PathLike | None = None
    ra_col: str | None = None
    dec_col: str | None = None
    x_col: str | None = None
    y_col: str | None = None
    keep_columns: list[str] | None = None
    frame: str = "icrs"
    tile: int | None = None
    stride: int | None = None
    check_pixel_scale: bool = True

    def __post_init__(self):
        if self.catalog is not None and (self.tile is not None or self.stride is not None):
            raise InputError("--catalog and --tile/--stride exclude each other: cut around sources or tile the image")
        if self.catalog is None and (any(v is not None for v in (self.ra_col, self.dec_col, self.x_col, self.y_col))
                                     or self.keep_columns):  # fmt: skip
            raise InputError("--ra-col/--dec-col/--x-col/--y-col/--keep-columns need --catalog")
        if self.keep_columns is not None:
            object.__setattr__(self, "keep_columns", list(self.keep_columns))

    @property
    def kind(self) -> str:
        """``"survey"`` (around catalogued sources), ``"tiles"`` or ``"cutouts"`` (stacks, cubes, folders)."""
        if self.catalog is not None:
            return "survey"
        return "tiles" if self.tile is not None or self.stride is not None else "cutouts"

    def reader_options(self) -> dict:
        """The keywords of :func:`deepmine.inference.inputs.readers.resolve_inputs` (every field)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}
