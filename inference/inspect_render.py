"""Cutouts as PNG images for the inspection page, with an adjustable stretch.

Each band is scaled on its own, as the seed displays and normalises cutouts (4.1): clip at the
``low`` and ``high`` percentiles of that band (0.5 % and 99.5 % by default), map to 0..1, apply
the stretch (astropy.visualization: linear, sqrt, asinh, log) and store as 8 bits. RGB images
put bands i, r, g on R, G, B (channel order of the stacks). The default stretch (linear,
0.5–99.5 %) is the seed's percentile normalisation, so the default RGB is what the model saw.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from .errors import InputError

STRETCHES = ("linear", "sqrt", "asinh", "log")
#: Default strength parameter ``a`` of astropy's stretches (asinh: smaller is stronger; log:
#: larger is stronger); ignored by linear and sqrt.
DEFAULT_A = {"asinh": 0.1, "log": 1000.0}


@dataclass(frozen=True)
class Stretch:
    """How a band is turned into 8 bits: percentile clip ``low``..``high`` (%), then ``kind``."""

    kind: str = "linear"
    low: float = 0.5
    high: float = 99.5
    a: float | None = None

    def __post_init__(self):
        if self.kind not in STRETCHES:
            raise InputError(f"stretch {self.kind!r}: expected one of {', '.join(STRETCHES)}")
        if not (0 <= self.low < self.high <= 100):
            raise InputError(f"stretch percentiles {self.low}..{self.high}: need 0 <= low < high <= 100")
        if self.a is not None and not (np.isfinite(self.a) and self.a > 0):
            raise InputError(f"stretch parameter a={self.a}: must be a positive number")

    @classmethod
    def from_query(cls, query: dict) -> "Stretch":
        """Build from URL query values (``stretch``, ``low``, ``high``, ``a``; all optional)."""
        try:
            kind = query.get("stretch", "linear")
            low = float(query.get("low", 0.5))
            high = float(query.get("high", 99.5))
            a = float(query["a"]) if query.get("a") not in (None, "") else None
        except ValueError:
            raise InputError("stretch parameters low, high and a must be numbers") from None
        return cls(kind, low, high, a)

    def function(self):
        from astropy.visualization import AsinhStretch, LinearStretch, LogStretch, SqrtStretch

        a = self.a if self.a is not None else DEFAULT_A.get(self.kind)
        return {"linear": LinearStretch, "sqrt": SqrtStretch,
                "asinh": lambda: AsinhStretch(a=a), "log": lambda: LogStretch(a=a)}[self.kind]()


def stretch_band(band: np.ndarray, stretch: Stretch = Stretch()) -> np.ndarray:
    """One H×W band → H×W uint8 (NaN/inf → 0; a flat band → 0)."""
    x = np.asarray(band, dtype=np.float64)
    finite = np.isfinite(x)
    if not finite.any():
        return np.zeros(x.shape, np.uint8)
    lo, hi = np.percentile(x[finite], [stretch.low, stretch.high])
    if hi <= lo:
        return np.zeros(x.shape, np.uint8)
    t = np.clip((np.where(finite, x, lo) - lo) / (hi - lo), 0.0, 1.0)
    y = np.clip(stretch.function()(t, clip=True), 0.0, 1.0)
    return np.round(y * 255.0).astype(np.uint8)


def render(cutout: np.ndarray, stretch: Stretch = Stretch(), band: int | None = None) -> np.ndarray:
    """A C×H×W cutout → H×W×3 uint8 RGB (bands 0, 1, 2 → R, G, B; one band → grey), or the
    single band ``band`` as H×W uint8."""
    c = np.asarray(cutout)
    if c.ndim != 3:
        raise InputError(f"expected a C×H×W cutout, got shape {c.shape}")
    if band is not None:
        if not 0 <= band < c.shape[0]:
            raise InputError(f"band {band}: the cutouts have {c.shape[0]} band(s)")
        return stretch_band(c[band], stretch)
    planes = [stretch_band(p, stretch) for p in c]
    if len(planes) == 1:
        planes = planes * 3
    return np.stack(planes[:3], axis=-1)


def png_bytes(image: np.ndarray) -> bytes:
    """Encode an H×W or H×W×3 uint8 image as PNG."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
