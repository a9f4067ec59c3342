"""deepmine.lenscrafter — Numba lens synthesis (SIE + Sersic, noise, PSF) and the selection function.

Never imports torch (it may import :mod:`deepmine.inference`).

Physics: :func:`sie_deflection`, :func:`sersic` (lenstronomy conventions, :mod:`.profiles`).
Pipeline (seed Figure 4.2): :func:`deflect` → :func:`compose` → :func:`shot_noise` →
:func:`convolve_psf` → :func:`observe` → :func:`percentile_normalization`.
Parameter tables and priors: :func:`reference_lens_params`, :func:`sample_lens_params`
(:mod:`.params` documents the columns). Batched synthesis: :func:`craft_lenses`,
:func:`craft_negatives`. The field population around every scene (galaxies and stars from
published counts, sizes and colours): :func:`field_population` (:mod:`.field`).
"""
from deepmine.inference.preprocess import percentile_normalization

from .field import field_population
from .negatives import NEGATIVE_KINDS, craft_negatives
from .params import (
    LENS_COLUMNS,
    PARAM_RANGES,
    check_lens_params,
    offset_lenses,
    read_lens_params,
    reference_lens_params,
    sample_lens_params,
)
from .pipeline import (
    BANDS,
    HSC,
    PIXEL_SCALE,
    ZERO_POINT,
    compose,
    convolve_psf,
    deflect,
    gaussian_psf,
    moffat_psf,
    observe,
    pixel_grid,
    shot_noise,
)
from .profiles import magnitude_to_flux, sersic, sersic_amp_from_flux, sersic_total_flux, sie_deflection
from .synth import craft_lenses

__all__ = [
    "BANDS", "HSC", "LENS_COLUMNS", "NEGATIVE_KINDS", "PARAM_RANGES", "PIXEL_SCALE", "ZERO_POINT",
    "check_lens_params", "compose", "convolve_psf", "craft_lenses", "craft_negatives", "deflect",
    "field_population", "gaussian_psf", "magnitude_to_flux", "moffat_psf", "observe", "offset_lenses", "percentile_normalization",
    "pixel_grid", "read_lens_params", "reference_lens_params", "sample_lens_params", "sersic",
    "sersic_amp_from_flux", "sersic_total_flux", "shot_noise", "sie_deflection",
]  # fmt: skip
