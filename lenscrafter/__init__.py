"""deepmine.lenscrafter — Numba lens synthesis (SIE + Sersic, noise, PSF) and the selection function.

Never imports torch (it may import :mod:`deepmine.inference`).
"""
