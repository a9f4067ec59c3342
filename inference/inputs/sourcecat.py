"""The source catalogue of a survey scan: RA/Dec (any astropy frame, degrees or sexagesimal)
and the columns copied into the candidate catalogue (``--keep-columns``).

Conventions
-----------
- RA/Dec columns hold numbers in degrees or strings that :class:`~astropy.coordinates.SkyCoord`
  reads: degrees (``"150.1"``) or sexagesimal (RA in hours ``"10:00:24.0"`` / ``"10h00m24s"``,
  Dec in degrees ``"+02:12:00"``). Blank entries are NaN (the row is flagged off-image).
- ``frame`` (``--frame``, default ``icrs``) is the frame of those columns. ``icrs`` takes them
  as given in the image's own equatorial frame (ICRS and FK5 J2000 differ by < 0.03″, a tenth
  of an HSC pixel); any other astropy frame (``fk5``, ``fk4``, ``galactic``, ...) is
  transformed into the WCS's frame with SkyCoord first, and the candidate catalogue's ``ra``/
  ``dec`` are then those transformed (equatorial) coordinates.
- Kept columns: by default every id/name-like column of the source catalogue (:data:`ID_LIKE`,
  case-insensitive), copied per object into the candidate catalogue under the same name, or
  ``cat_<name>`` where the name is already a catalogue column (``id``, ``index``, ...).
  Masked entries become "" (text) or NaN (numbers).
"""
from __future__ import annotations

import functools

import numpy as np

from ..errors import InputError, file_error, first_line

__all__ = ["ID_LIKE", "default_keep", "check_keep", "kept_name", "kept_columns", "sky_columns",
           "to_wcs_frame", "check_frame"]

#: Source-catalogue columns kept by default (lower-case names).
ID_LIKE = ("id", "name", "object_id", "objid", "objectid", "obj_id", "source_id", "sourceid", "src_id",
           "designation", "iau_name", "specobjid")
#: Catalogue columns a kept column must not overwrite (it is then written as ``cat_<name>``).
RESERVED = ("id", "source", "index", "ra", "dec", "x", "y", "logit", "probability", "ordinality",
            "ordinality_ref", "flags", "spec_index")


def default_keep(names) -> list[str]:
    """The id/name-like columns among ``names``, in catalogue order."""
    return [n for n in names if n.lower() in ID_LIKE]


def check_keep(requested, names, catalog) -> list[str]:
    """``--keep-columns`` resolved against the catalogue's column ``names``: None → the
    id/name-like ones; ``[]`` or ``["none"]`` → none; otherwise every name must exist."""
    if requested is None:
        return default_keep(names)
    req = [c.strip() for item in requested for c in str(item).split(",") if c.strip()]
    if req in ([], ["none"]):
        return []
    missing = [c for c in req if c not in names]
    if missing:
        raise file_error(catalog, f"--keep-columns: no column {', '.join(map(repr, missing))} "
                         f"(has {', '.join(names)})")
    return list(dict.fromkeys(req))


def kept_name(name: str) -> str:
    """Name of a kept column in the candidate catalogue."""
    return f"cat_{name}" if name in RESERVED else name


def check_frame(frame: str) -> str:
    """``--frame`` checked against astropy's frames (one line naming them when unknown)."""
    from astropy.coordinates import frame_transform_graph

    names = frame_transform_graph.get_names()
    f = str(frame).strip().lower()
    if f not in names:
        raise InputError(f"--frame: unknown frame {frame!r}; expected an astropy frame such as "
                         "icrs, fk5, fk4, galactic")
    return f


@functools.lru_cache(maxsize=4)
def kept_columns(catalog: str, mtime: int, names: tuple) -> dict:
    """{kept name: array} of the source catalogue's ``names`` (cached per process; the arrays
    are sliced per block, so a shard's part carries only its own rows)."""
    from astropy.table import Table

    try:
        table = Table.read(catalog)
    except Exception as exc:  # noqa: BLE001
        raise file_error(catalog, f"not a readable catalogue ({first_line(exc)})") from None
    out = {}
    for name in names:
        col = np.ma.asarray(table[name])
        if col.ndim != 1:
            raise file_error(catalog, f"--keep-columns: column {name!r} is not one value per row")
        mask = np.ma.getmaskarray(col)
        data = np.asarray(col.data)
        if data.dtype.kind in "SO":
            data = np.array([v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in data], dtype=str)
        if mask.any():
            if data.dtype.kind == "U":
                data = np.where(mask, "", data)
            else:
                data = np.where(mask, np.nan, data.astype(np.float64))
        out[kept_name(name)] = data
    return out


def sky_columns(table, ra_col: str, dec_col: str, catalog: str, col) -> tuple[np.ndarray, np.ndarray]:
    """RA, Dec in degrees from a source catalogue (numbers in degrees, or strings; module docstring)."""
    ra_c, dec_c = table[ra_col], table[dec_col]
    if np.asarray(ra_c).dtype.kind not in "USO" and np.asarray(dec_c).dtype.kind not in "USO":
        return col(ra_col), col(dec_col)
    import astropy.units as u
    from astropy.coordinates import SkyCoord

    def text(c):
        vals = np.ma.asarray(c)
        mask = np.ma.getmaskarray(vals)
        return np.array([("" if m else str(v)).strip() for v, m in zip(vals.data, mask)], dtype=object)

    ras, decs = text(ra_c), text(dec_c)
    ok = (ras != "") & (decs != "")
    ra = np.full(len(ras), np.nan)
    dec = np.full(len(ras), np.nan)
    if ok.any():
        r, d = ras[ok].astype(str), decs[ok].astype(str)
        sexagesimal = any((":" in v) or ("h" in v.lower()) or (" " in v) for v in r[:100])
        unit = (u.hourangle, u.deg) if sexagesimal else (u.deg, u.deg)
        try:
            c = SkyCoord(r, d, unit=unit)
        except Exception:  # noqa: BLE001 - find the first row astropy cannot read, for the message
            for i in np.flatnonzero(ok):
                try:
                    SkyCoord(ras[i], decs[i], unit=unit)
                except Exception as exc:  # noqa: BLE001
                    raise file_error(catalog, f"row {i}: cannot read RA/Dec {ras[i]!r}, {decs[i]!r} as degrees or "
                                     f"sexagesimal ({first_line(exc)})") from None
            raise
        ra[ok], dec[ok] = c.ra.deg, c.dec.deg
    return ra, dec


def to_wcs_frame(lon: np.ndarray, lat: np.ndarray, frame: str, wcs) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates in ``frame`` (degrees) → longitude/latitude in the WCS's own frame (degrees).
    ``icrs`` is taken as the image's frame as is (module docstring); NaN stays NaN."""
    if frame == "icrs" or not len(lon):
        return lon, lat
    import astropy.units as u
    from astropy.coordinates import SkyCoord
    from astropy.wcs.utils import wcs_to_celestial_frame

    target = wcs_to_celestial_frame(wcs)
    ok = np.isfinite(lon) & np.isfinite(lat)
    out_lon, out_lat = np.full(len(lon), np.nan), np.full(len(lat), np.nan)
    if ok.any():
        c = SkyCoord(lon[ok], lat[ok], unit=(u.deg, u.deg), frame=frame).transform_to(target)
        sph = c.spherical
        out_lon[ok], out_lat[ok] = sph.lon.deg, sph.lat.deg
    return out_lon, out_lat
