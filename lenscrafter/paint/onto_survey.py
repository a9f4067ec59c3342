"""Deflectors cut from survey images around a source catalogue, for ``craft --onto`` (issue 21).

``deepmine craft --onto i.fits --onto r.fits --onto g.fits --catalog lrgs.ecsv`` paints arcs
onto cutouts cut exactly as ``deepmine scan`` cuts them around catalogue positions: the
scanner's own readers (:func:`deepmine.inference.inputs.readers.resolve_inputs` and
:func:`~deepmine.inference.inputs.readers.read_block`; nearest-centred cutouts as ``Cutout2D``,
tile-compressed images read through ``.section``, extensions ``file.fits[SCI]``, RA/Dec through
the WCS or x/y pixel columns). One image per band: in the order of ``--bands`` when given, else
as their ``FILTER``-like header cards say, else i, r, g as given. Each image's header gives its
band's zero point and gain (``MAGZERO``..., ``GAIN``), the first image's WCS the pixel scale.
Catalogue row k is cutout k; a cutout that leaves the image or holds masked pixels is refused by
its row (drop it from the catalogue).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from deepmine.inference.errors import InputError, file_error

from ..pipeline import BANDS, PIXEL_SCALE

__all__ = ["SurveyDeflectors", "read_survey_deflectors"]


class SurveyDeflectors:
    """Cutouts around the sources of a catalogue on three band images, read as the scanner reads them.

    The interface of :class:`deepmine.lenscrafter.paint.onto.Deflectors`: ``path`` (the catalogue),
    ``n``, ``size``, ``files`` (None), ``bands_in_file`` (i, r, g), ``header`` (the first image's),
    ``band_headers`` (one per band, i, r, g), ``read(start, stop)`` and ``take(indices)``.
    """

    def __init__(self, catalog, spec, meta, band_headers):
        self.path, self.spec, self.meta = Path(catalog), spec, meta
        self.n, self.size = int(spec.n), int(meta.input_shape[-1])
        self.files, self.bands_in_file, self.order = None, tuple(BANDS), [0, 1, 2]
        self.band_headers = band_headers
        self.header = band_headers[0]

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.take(np.arange(int(start), int(stop)))

    def take(self, indices) -> np.ndarray:
        from deepmine.inference.inputs.readers import read_block

        idx = np.asarray(indices, dtype=np.int64)
        uniq, inv = np.unique(idx, return_inverse=True)
        out = np.empty((uniq.size, len(BANDS), self.size, self.size))
        runs = np.split(np.arange(uniq.size), np.flatnonzero(np.diff(uniq) != 1) + 1) if uniq.size else []
        for run in runs:
            a, b = int(uniq[run[0]]), int(uniq[run[-1]]) + 1
            block = read_block(self.spec, a, b, self.meta)
            imgs = np.asarray(block.images, dtype=np.float64)
            bad = ~(np.isfinite(imgs).all(axis=(1, 2, 3)) & np.asarray(block.valid, bool))
            if bad.any():
                k = a + int(np.argmax(bad))
                raise file_error(self.path, f"row {k}: its cutout leaves the image or holds masked pixels; "
                                            "drop that source from the catalogue before painting")
            out[run] = imgs
        return out[inv]


def read_survey_deflectors(images, catalog, *, bands=None, size=None, pixel_scale=None, ra_col=None, dec_col=None,
                           x_col=None, y_col=None) -> SurveyDeflectors:
    """Open the band ``images`` and ``catalog`` as deflectors (see the module docstring)."""
    from deepmine.inference.formats import image_hdu, open_fits
    from deepmine.inference.inputs.readers import resolve_inputs
    from deepmine.inference.metadata import ModelMetadata

    paths = [Path(p) for p in images]
    if len(paths) != len(BANDS):
        raise InputError(f"--onto with --catalog: give {len(BANDS)} survey images, one per band "
                         f"({', '.join(BANDS)}), got {len(paths)}")
    if bands is not None:
        order = [str(b).strip().lower() for b in (bands.split(",") if isinstance(bands, str) else bands)]
        if sorted(order) != sorted(BANDS):
            raise InputError(f"--bands {','.join(order)}: the images must be the bands {', '.join(BANDS)}")
        paths = [paths[order.index(b)] for b in BANDS]
    s = int(size) if size is not None else 64
    meta = ModelMetadata(architecture="deflectors", input_shape=[len(BANDS), s, s], bands=list(BANDS),
                         pixel_scale=float(pixel_scale or PIXEL_SCALE))
    (spec,), _ = resolve_inputs(paths, meta, catalog=catalog, ra_col=ra_col, dec_col=dec_col, x_col=x_col,
                                y_col=y_col, check_pixel_scale=False, keep_columns=[])
    headers = []
    for f, k in zip(spec.paths, spec.options["hdus"]):
        with open_fits(f) as hdul:
            h = hdul[image_hdu(hdul, f, ndim=(2,)) if k is None else k].header.copy()
            for key, v in hdul[0].header.items():  # primary cards not repeated in the image HDU
                if key not in h and key not in ("", "COMMENT", "HISTORY"):
                    h[key] = v
        headers.append(h)
    return SurveyDeflectors(catalog, spec, meta, headers)
