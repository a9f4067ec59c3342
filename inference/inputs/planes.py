"""Mask and variance planes of multi-extension FITS images (HSC-style ``IMAGE``/``MASK``/``VARIANCE``).

An HSC coadd patch or cutout (``calexp``, the cutout service's files) holds three planes of the
same shape: the image (``EXTNAME = 'IMAGE'``), an integer bit mask (``'MASK'``, its header
naming each bit: ``MP_BAD = 0``, ``MP_SAT = 1``, ``MP_NO_DATA = 8``, ...) and the variance
(``'VARIANCE'``). The scanner scans the image plane and takes the others as companions:

- a pixel is **bad** when its mask has any of the bits of :data:`MASK_PLANES` set (``BAD``,
  ``SAT``, ``CR``, ``NO_DATA``; a mask header without ``MP_*`` cards: any non-zero value), or
  its variance is not finite or negative. ``DETECTED``, ``INTRP``, ``EDGE`` and the other
  informational bits are not bad: every source is ``DETECTED``, and interpolated pixels hold
  values;
- bad pixels are treated exactly as NaN pixels are (ignored by the normalisation, 0 in the model
  input; the ``NONFINITE`` flag);
- a cutout whose central pixel(s) are bad in any band gets the ``CENTER_MASKED`` flag
  (:data:`deepmine.inference.inputs.blocks.FLAG_CENTER_MASKED`).

Companions are found in the image's own file: the HDUs named ``MASK`` and ``VARIANCE`` (with
the image's ``EXTVER`` where there are several) whose shape is the image's. A file without them
is read as before.
"""
from __future__ import annotations

import numpy as np

__all__ = ["MASK_PLANES", "MASK_NAMES", "VARIANCE_NAMES", "find_planes", "bad_pixels", "read_bad", "center_masked"]

#: Mask-plane names whose bits make a pixel bad (HSC / LSST pipeline names).
MASK_PLANES = ("BAD", "SAT", "CR", "NO_DATA")
#: EXTNAMEs of a mask plane and of a variance plane.
MASK_NAMES = ("MASK",)
VARIANCE_NAMES = ("VARIANCE",)


def _companion(hdul, k: int, names) -> int | None:
    image = hdul[k]
    ver = image.header.get("EXTVER", 1)
    found = None
    for j, hdu in enumerate(hdul):
        if j == k or (hdu.name or "").upper() not in names or tuple(getattr(hdu, "shape", ())) != tuple(image.shape):
            continue
        if hdu.header.get("EXTVER", 1) == ver:
            return j
        found = j if found is None else found
    return found


def _bits(header) -> int:
    cards = {str(key)[3:].upper(): header[key] for key in header if str(key).upper().startswith("MP_")}
    if not cards:
        return -1  # no names: any non-zero value is bad
    return int(sum(1 << int(cards[name]) for name in MASK_PLANES if name in cards))


def find_planes(hdul, k: int) -> dict | None:
    """``{"mask": HDU index or None, "bits": int, "variance": HDU index or None}`` of the
    companions of image HDU ``k`` (module docstring), or None when it has none. JSON-compatible,
    so it travels in a :class:`~deepmine.inference.inputs.blocks.SourceSpec`'s options."""
    if (hdul[k].name or "").upper() in MASK_NAMES + VARIANCE_NAMES:
        return None  # a mask or variance plane scanned as the image: no companions
    mask, var = _companion(hdul, k, MASK_NAMES), _companion(hdul, k, VARIANCE_NAMES)
    if mask is None and var is None:
        return None
    return {"mask": mask, "bits": _bits(hdul[mask].header) if mask is not None else 0, "variance": var}


def bad_pixels(mask: np.ndarray | None, variance: np.ndarray | None, bits: int) -> np.ndarray | None:
    """Bad pixels (bool) of a window of the mask and variance planes (either may be None)."""
    bad = None
    if mask is not None:
        bad = (np.asarray(mask).astype(np.int64, copy=False) & bits) != 0
    if variance is not None:
        v = np.asarray(variance, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            vb = ~np.isfinite(v) | (v < 0)
        bad = vb if bad is None else bad | vb
    return bad


def read_bad(hdul, planes: dict | None, window) -> np.ndarray | None:
    """Bad pixels over one window of the companions :func:`find_planes` found (None without
    any): ``window(section, is_mask)`` returns the window of a plane's ``.section`` (integers
    for the mask, floats for the variance; pixels outside the image not bad)."""
    if not planes:
        return None
    mask = None if planes["mask"] is None else window(hdul[planes["mask"]].section, True)
    var = None if planes["variance"] is None else window(hdul[planes["variance"]].section, False)
    return bad_pixels(mask, var, planes["bits"])


def center_masked(bad: np.ndarray) -> np.ndarray:
    """Whether the central pixel(s) of ...×H×W windows are bad, any leading axis but the first
    (objects) folded in: (N, ...) → (N,).

    >>> b = np.zeros((2, 1, 4, 4), bool); b[1, 0, 2, 1] = True
    >>> center_masked(b).tolist()
    [False, True]
    """
    h, w = bad.shape[-2:]
    core = bad[..., (h - 1) // 2: h // 2 + 1, (w - 1) // 2: w // 2 + 1]
    return core.reshape(core.shape[0], -1).any(axis=1)
