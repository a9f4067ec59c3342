"""The selection-based percentile normalisation is byte-identical to the sort-based one (issue 22).

Models are trained on the uint8 images that ``percentile_normalization`` makes, so its output
may not change by a single byte. :func:`reference` is the sort-based kernel of deepmine ≤ 0.1
(numpy's ``"linear"`` percentile of the finite pixels, NaN/inf ignored), written again in
plain numpy with the same float64 expressions; the compiled kernel must agree with it on
random and adversarial inputs (NaN, inf, ties, constant bands, sorted bands, signed zeros,
subnormals, float32 extremes, one finite pixel) and on every code path (tails, np.partition).
"""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from deepmine.inference.preprocess import percentile_normalization


def reference(images, low=0.5, high=99.5):
    """Sort-based per-band percentile normalisation (deepmine's kernel before issue 22), in numpy."""
    x = np.asarray(images)
    x = x.astype(np.float32 if x.dtype.itemsize <= 4 else np.float64)
    out = np.zeros(x.shape, dtype=np.uint8)
    for idx in np.ndindex(*x.shape[:-2]):
        plane = x[idx]
        finite = np.isfinite(plane)
        vals = np.sort(plane[finite].astype(np.float64))
        m = vals.size
        if m == 0:
            continue
        pos_lo = low / 100.0 * (m - 1)
        a = int(np.floor(pos_lo))
        b = min(a + 1, m - 1)
        lo = vals[a] + (pos_lo - a) * (vals[b] - vals[a])
        pos_hi = high / 100.0 * (m - 1)
        a = int(np.floor(pos_hi))
        b = min(a + 1, m - 1)
        hi = vals[a] + (pos_hi - a) * (vals[b] - vals[a])
        span = hi - lo
        if span <= 0.0:
            continue
        with np.errstate(invalid="ignore", over="ignore"):
            t = np.clip((plane.astype(np.float64) - lo) / span, 0.0, 1.0)
            u = np.floor(t * 255.0 + 0.5)
        out[idx] = np.where(finite, u, 0).astype(np.uint8)
    return out


def _check(x, low=0.5, high=99.5):
    got = percentile_normalization(x, low, high)
    want = reference(x, low, high)
    assert got.dtype == np.uint8 and got.shape == np.shape(x)
    np.testing.assert_array_equal(got, want)


# values that make ties, signed zeros, subnormals and float32 extremes likely
SPECIAL = st.sampled_from([0.0, -0.0, 1.0, -1.0, 1e-45, -1e-45, 1e-38, 3.4e38, -3.4e38, 0.5, 2.0, 7.0])
FLOATS32 = st.one_of(st.floats(-1e6, 1e6, width=32), SPECIAL,
                     st.sampled_from([np.nan, np.inf, -np.inf]))
FLOATS64 = st.one_of(st.floats(-1e300, 1e300), st.floats(-10, 10), SPECIAL, st.sampled_from([np.nan, np.inf, -np.inf]))
PERCENTILES = st.sampled_from([(0.5, 99.5), (0.0, 100.0), (1.0, 99.0), (0.5, 99.9), (5.0, 95.0), (25.0, 75.0),
                               (0.0, 0.1), (49.9, 50.1)])


@st.composite
def stacks(draw, elements, dtype):
    shape = draw(st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 24), st.integers(1, 24)))
    return draw(hnp.arrays(dtype, shape, elements=elements))


@given(stacks(FLOATS32, np.float32), PERCENTILES)
def test_float32_matches_sort_reference(x, p):
    _check(x, *p)


@given(stacks(FLOATS64, np.float64), PERCENTILES)
def test_float64_matches_sort_reference(x, p):
    _check(x, *p)


@given(stacks(st.integers(0, 4), np.int16), PERCENTILES)
def test_few_distinct_values_heavy_ties(x, p):
    _check(x, *p)


@given(st.integers(1, 4096), st.floats(0, 1), st.integers(0, 2**32 - 1))
def test_nan_fraction_any(npix, frac, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(1, 1, 1, npix)).astype(np.float32)
    x[rng.random(x.shape) < frac] = np.nan
    _check(x)


def _adversarial(rng, h=64, w=64):
    """Bands that stress a selection: sorted both ways, spikes, constant, ties, NaN-heavy."""
    base = rng.normal(size=(h, w))
    ramp = np.arange(h * w, dtype=float).reshape(h, w)
    planes = [
        ramp, ramp[::-1, ::-1].copy(), -ramp, np.full((h, w), 3.25), np.zeros((h, w)),
        np.where(rng.random((h, w)) < 0.5, 1.0, 2.0), np.round(base * 3) / 3, base ** 3 * 1e4,
        np.where(rng.random((h, w)) < 0.99, np.nan, base), np.where(rng.random((h, w)) < 0.9, np.inf, base),
        np.where(np.arange(h * w).reshape(h, w) == 7, 1.0, 0.0), np.exp(base * 20),
        np.abs(base) * np.where(rng.random((h, w)) < 0.5, -0.0, 0.0), np.sort(base, axis=None).reshape(h, w),
        np.full((h, w), np.nan), np.where(np.arange(h * w).reshape(h, w) == 0, 5.0, np.nan),
    ]
    return np.stack(planes)[:, None]


@pytest.mark.parametrize("size", [1, 2, 3, 8, 63, 64, 100, 128])
@pytest.mark.parametrize("p", [(0.5, 99.5), (0.0, 100.0), (2.0, 98.0), (10.0, 90.0)])
def test_adversarial_bands(size, p):
    x = _adversarial(np.random.default_rng(size), size, size)
    _check(x.astype(np.float32), *p)
    _check(x, *p)


def test_crafted_lenses_unchanged():
    """LensCrafter's own cutouts (float32 counts, the hot path of ``deepmine craft``)."""
    from deepmine.lenscrafter import craft_lenses, sample_lens_params

    flux = craft_lenses(sample_lens_params(64, seed=3), output="float32")
    _check(flux)


def test_every_code_path_of_the_plane_kernel():
    """Tails that do not hold the ranks (forced: klo = khi = 2) and no tails at all use np.partition."""
    from deepmine.inference.preprocess_kernels import percentile_plane, tail_sizes

    rng = np.random.default_rng(5)
    x = rng.normal(size=(4096,)).astype(np.float32)
    x[rng.random(4096) < 0.1] = np.nan
    want = reference(x.reshape(1, 1, 64, 64)).ravel()
    assert tail_sizes(4096, 0.5, 99.5) != (0, 0)
    assert tail_sizes(4096, 10.0, 90.0) == (0, 0)
    for klo, khi in ((0, 0), (2, 2), (23, 24), (64, 64)):
        out = np.empty(4096, np.uint8)
        percentile_plane(x, 0.5, 99.5, klo, khi, out)
        np.testing.assert_array_equal(out, want)


def test_frozen_output_of_the_sort_kernel():
    """sha256 of the sort-based kernel's output (deepmine main a67cc2b) on a fixed mixed input."""
    rng = np.random.default_rng(2026)
    x = np.concatenate([rng.normal(size=(8, 3, 64, 64)) * rng.uniform(0.01, 100, (8, 3, 1, 1)),
                        _adversarial(rng).repeat(3, axis=1)]).astype(np.float32)
    got = percentile_normalization(x)
    assert hashlib.sha256(got.tobytes()).hexdigest() == "a7eae3e172ea4c643f3a49674dc3436b9ae75609079194d4b3aab1993a8d5b01"


def test_agrees_with_numpy_nanpercentile():
    """The percentiles are numpy's: same values to the last bits on ordinary data."""
    rng = np.random.default_rng(9)
    x = rng.normal(size=(20, 3, 64, 64)).astype(np.float32)
    x[rng.random(x.shape) < 0.05] = np.nan
    lo, hi = np.nanpercentile(x.astype(np.float64), [0.5, 99.5], axis=(2, 3))
    with np.errstate(invalid="ignore"):
        t = np.clip((x - lo[..., None, None]) / (hi - lo)[..., None, None], 0, 1)
    want = np.where(np.isfinite(x), np.floor(t * 255 + 0.5), 0).astype(np.uint8)
    got = percentile_normalization(x)
    assert np.mean(got == want) > 0.9999
    assert np.max(np.abs(got.astype(int) - want)) <= 1
