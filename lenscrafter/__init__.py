"""deepmine.lenscrafter — Numba lens synthesis (SIE + Sersic, noise, PSF) and the selection function.

Never imports torch (it may import :mod:`deepmine.inference`).

Physics: :func:`sie_deflection`, :func:`sersic` (lenstronomy conventions, :mod:`.profiles`).
Pipeline (seed Figure 4.2): :func:`deflect` → :func:`compose` → :func:`shot_noise` →
:func:`convolve_psf` → :func:`observe` → :func:`percentile_normalization`.
Parameter tables and priors: :func:`reference_lens_params`, :func:`sample_lens_params`
(:mod:`.params` documents the columns). Batched synthesis: :func:`craft_lenses`,
:func:`craft_negatives`. The field population around every scene (galaxies and stars from
published counts, sizes and colours): :func:`field_population` (:mod:`.field`). Arcs painted
onto real galaxy cutouts: :func:`paint_arcs` (:mod:`.paint.arcs`); as files, with the survey's
calibration checked (``deepmine craft --onto``): :func:`craft_onto` (:mod:`.paint.onto`).
"""
# name → module; resolved on first access (PEP 562), so that importing a command module
# (deepmine.lenscrafter.cli.*) for `deepmine --help` does not compile or load Numba.
_LAZY = {
    "percentile_normalization": "deepmine.inference.preprocess",
    **dict.fromkeys(("NEGATIVE_KINDS", "craft_negatives"), ".negatives"),
    **dict.fromkeys(("LENS_COLUMNS", "PARAM_RANGES", "check_lens_params", "offset_lenses", "read_lens_params",
                     "reference_lens_params", "sample_lens_params"), ".params"),
    **dict.fromkeys(("BANDS", "HSC", "PIXEL_SCALE", "ZERO_POINT", "compose", "convolve_psf", "deflect",
                     "gaussian_psf", "moffat_psf", "observe", "pixel_grid", "shot_noise"), ".pipeline"),
    **dict.fromkeys(("magnitude_to_flux", "sersic", "sersic_amp_from_flux", "sersic_total_flux",
                     "sie_deflection"), ".profiles"),
    "craft_lenses": ".synth",
    **dict.fromkeys(("arc_snr", "paint_arcs"), ".paint.arcs"),
    "measure_light": ".paint.galaxy_light",
    **dict.fromkeys(("craft_onto", "read_deflectors"), ".paint.onto"),
    "field_population": ".field",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
