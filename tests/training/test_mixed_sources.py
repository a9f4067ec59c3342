"""A training source mixing uint8 stacks (already percentile-normalised) with float stacks (flux):
every row is normalised exactly once, as the scanner normalises that row alone (no train/serve skew)."""
import numpy as np
import pytest

from deepmine.inference.preprocess import percentile_normalization, prepare_batch

SPECS = [{"kind": "percentile", "low": 0.5, "high": 99.5}, {"kind": "percentile", "low": 2.0, "high": 98.0},
         {"kind": "histogram_match", "template": list(np.linspace(0.0, 1.0, 32) ** 2)}, {"kind": "none"}]


@pytest.fixture
def mixed():
    from deepmine.training import data as D

    rng = np.random.default_rng(0)
    flux = (rng.lognormal(0.0, 1.0, (7, 3, 16, 16)) * 50.0).astype(np.float32)
    u8 = rng.integers(0, 256, (5, 3, 16, 16), dtype=np.uint8)
    more = rng.normal(10.0, 3.0, (4, 3, 16, 16))  # float64, another file
    src = D.make_source([("u8.npy", u8), ("flux.npy", flux), ("more.fits", more)])
    rows = np.concatenate([u8.astype(np.float64), flux, more])  # row i of the source, as stored
    dtypes = [np.uint8] * 5 + [np.float32] * 7 + [np.float64] * 4
    return D, src, rows, dtypes


def _scanner(row, dtype, spec):
    """What the scanner makes of this one stored row (Model.predict → prepare_batch)."""
    return prepare_batch(row[None].astype(dtype), spec)[0]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s["kind"] + str(s.get("low", "")))
def test_every_row_is_preprocessed_as_the_scanner_does_it_alone(mixed, spec):
    D, src, rows, dtypes = mixed
    idx = np.array([3, 15, 0, 7, 7, 11, 2, 14, 5, 9, 12, 1])  # any order, repeats, all three files
    got = src.prepared(idx, spec)
    assert got.dtype == np.float32 and got.shape == (idx.size, 3, 16, 16)
    for j, i in enumerate(idx):
        np.testing.assert_array_equal(got[j], _scanner(rows[i], dtypes[i], spec), err_msg=f"row {i}")
    for j, x in enumerate(D.eval_batches(src, idx, spec, batch_size=5)):
        np.testing.assert_array_equal(x, got[5 * j: 5 * j + 5])


def test_sampler_batches_hold_each_row_normalised_once(mixed):
    D, src, rows, dtypes = mixed
    spec = SPECS[0]
    sampler = D.NegativeLearningSampler(src, src, np.arange(8), np.arange(8, 16), spec, batch_positives=4,
                                        symmetries=False)
    plan = sampler.plan(np.random.default_rng(3))
    for (pos, neg), batch in zip(plan, sampler.batches(np.random.default_rng(3))):
        for j, i in enumerate(np.concatenate([pos, neg])):
            np.testing.assert_array_equal(batch.images[j], _scanner(rows[i], dtypes[i], spec))


def test_take_gives_uint8_rows_when_any_file_is_uint8(mixed):
    D, src, rows, dtypes = mixed
    idx = np.array([4, 6, 13, 0])
    raw = src.take(idx)
    assert raw.dtype == np.uint8
    np.testing.assert_array_equal(raw[0], rows[4].astype(np.uint8))  # kept as stored, not re-normalised
    np.testing.assert_array_equal(raw[1], percentile_normalization(rows[6].astype(np.float32)))
    np.testing.assert_array_equal(raw[2], percentile_normalization(rows[13]))
    # and the default preprocessing of those uint8 rows is the scanner's of each row alone
    for j, i in enumerate(idx):
        np.testing.assert_array_equal(prepare_batch(raw[j:j + 1], SPECS[0])[0], _scanner(rows[i], dtypes[i], SPECS[0]))
    # float-only sources keep their values (their common dtype)
    flo = D.make_source([("a.npy", rows[5:12].astype(np.float32)), ("b.npy", rows[12:])])
    assert flo.take([0, 8]).dtype == np.float64
    np.testing.assert_array_equal(flo.take([8])[0], rows[13])
