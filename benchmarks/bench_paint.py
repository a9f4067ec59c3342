"""Painting arcs onto real cutouts (``lenscrafter.paint_arcs``, ``deepmine craft --onto``): cutouts per second.

Run: ``python -m pytest benchmarks/bench_paint.py --benchmark-only -q``. The deflectors are 256
64×64 three-band cutouts of a round galaxy at a random sub-pixel position on HSC-like sky (flux
units, zero point 27); Numba compilation happens outside the timing. The rate (cutouts/s) is
stored in ``benchmark.extra_info`` and the last figures are quoted in docs/benchmarks.md.
"""
import numpy as np
import pytest

from deepmine.lenscrafter import paint_arcs

N = 256


@pytest.fixture(scope="module")
def deflectors():
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:64, :64].astype(float)
    x0, y0 = 31.5 + rng.uniform(-2, 2, N), 31.5 + rng.uniform(-2, 2, N)
    gal = 25.0 * np.exp(-((xx - x0[:, None, None]) ** 2 + (yy - y0[:, None, None]) ** 2) / 18.0)
    return (gal[:, None] * np.array([1.0, 0.6, 0.3])[None, :, None, None]
            + rng.normal(0.0, 0.07, (N, 3, 64, 64))).astype(np.float32)


def test_paint_arcs_rate(benchmark, deflectors):
    paint_arcs(deflectors[:4], seed=0)  # compile outside the timing
    painted, params = benchmark.pedantic(paint_arcs, args=(deflectors,), kwargs={"seed": 1}, rounds=3,
                                         iterations=1)
    assert painted.shape == deflectors.shape and len(params) == N
    benchmark.extra_info["cutouts_per_s"] = N / benchmark.stats.stats.min
