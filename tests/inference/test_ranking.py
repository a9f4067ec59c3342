"""The ranking module against scipy and scikit-learn, on random and heavily tied data."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score

from deepmine.inference import InputError
from deepmine.inference.ranking import (
    auc,
    fraction_above,
    ordinality,
    ordinality_against,
    ranking_performance,
    tracer_recovery_curve,
)
from deepmine.inference.ranking.pool import ReferencePool

# scores drawn from a few levels (heavy ties, like probabilities saturated at 1.0) or freely
tied = st.sampled_from([0.0, -0.0, 0.25, 0.5, 1.0, 1.0, 1.0, 3.5, -2.0])
free = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=32)
score_arrays = st.one_of(
    hnp.arrays(np.float32, st.integers(1, 300), elements=tied),
    hnp.arrays(np.float32, st.integers(1, 300), elements=free),
    hnp.arrays(np.float64, st.integers(1, 300), elements=st.one_of(tied, free)),
)


@given(score_arrays)
def test_ordinality_matches_scipy_rankdata(x):
    np.testing.assert_allclose(ordinality(x), rankdata(x, method="average") / x.size, rtol=0, atol=1e-12)


def test_ordinality_large_with_saturation():
    rng = np.random.default_rng(0)
    x = rng.random(200_000).astype(np.float32)
    x[rng.random(x.size) < 0.3] = 1.0  # saturated probabilities
    np.testing.assert_allclose(ordinality(x), rankdata(x) / x.size, atol=1e-12)


def test_ordinality_negative_zero_ties_with_zero():
    x = np.array([0.0, -0.0, 1.0, -1.0], dtype=np.float32)
    np.testing.assert_allclose(ordinality(x), [0.625, 0.625, 1.0, 0.25])


@given(score_arrays, score_arrays)
def test_ranking_performance_is_two_auc_minus_one(t, n):
    y = np.r_[np.ones(t.size), np.zeros(n.size)]
    s = np.r_[t.astype(np.float64), n.astype(np.float64)]
    expected = 2 * roc_auc_score(y, s) - 1
    assert abs(ranking_performance(t, n) - expected) <= 1e-9
    assert abs(2 * auc(s, y) - 1 - expected) <= 1e-9


@given(score_arrays, score_arrays)
def test_ordinality_against_definition(s, ref):
    r = ref.astype(np.float64)
    expected = np.array([(np.sum(r < v) + 0.5 * np.sum(r == v)) / r.size for v in s.astype(np.float64)])
    np.testing.assert_allclose(ordinality_against(s, ref), expected, atol=1e-12)
    pool = ReferencePool.from_scores(ref)
    np.testing.assert_allclose(pool.ordinality(s), expected, atol=1e-12)
    np.testing.assert_allclose(ordinality_against(s, pool), expected, atol=1e-12)


def test_rp_is_twice_mean_ordinality_minus_one_and_trc_area():
    rng = np.random.default_rng(1)
    t = rng.normal(2, 1, 500)
    n = rng.normal(0, 1, 50_000)
    rp = ranking_performance(t, n)
    assert rp == pytest.approx(2 * ordinality_against(t, n).mean() - 1, abs=1e-12)
    trc = tracer_recovery_curve(t, n)
    # area under the TRC step function equals the mean tracer ordinality
    # left-continuous steps: recovered[i] holds on (ordinality[i-1], ordinality[i]]
    area = np.sum(np.diff(trc.ordinality) * trc.recovered[1:])
    assert 2 * area - 1 == pytest.approx(rp, abs=1e-12)
    assert trc.recovered[0] == 1.0 and np.all(np.diff(trc.recovered) <= 0)
    assert trc.at(0.995) == pytest.approx(fraction_above(t, n, 0.995), abs=1.0 / t.size)


def test_perfect_and_inverted_classifiers():
    n = np.arange(1000, dtype=np.float64)
    assert ranking_performance(n + 5000, n) == 1.0
    assert ranking_performance(n - 5000, n) == -1.0
    assert ranking_performance(n, n) == pytest.approx(0.0, abs=1e-12)


def test_many_tracers_few_negatives_path():
    rng = np.random.default_rng(2)
    t = rng.integers(0, 5, 20_000).astype(np.float32)
    n = rng.integers(0, 5, 30).astype(np.float32)
    y = np.r_[np.ones(t.size), np.zeros(n.size)]
    assert ranking_performance(t, n) == pytest.approx(2 * roc_auc_score(y, np.r_[t, n]) - 1, abs=1e-9)


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.array([1.0, np.nan]), "index 1 is nan"),
        (np.array([np.inf, 1.0]), "index 0 is inf"),
        (np.array([]), "empty"),
        (np.ones((2, 2)), "1-D"),
        (np.array(["a", "b"]), "real-valued"),
        (np.array([True, False]), "real-valued"),
    ],
)
def test_bad_scores_are_refused(bad, match):
    with pytest.raises(InputError, match=match):
        ordinality(bad)
    with pytest.raises(InputError, match=match):
        ranking_performance(bad, np.ones(3))
    with pytest.raises(InputError, match=match):
        ordinality_against(np.ones(3), bad)


def test_mismatched_lengths_and_one_class_labels():
    with pytest.raises(InputError, match="mismatched lengths"):
        auc(np.ones(3), np.ones(4))
    with pytest.raises(InputError, match="at least one positive"):
        auc(np.ones(3), np.ones(3))
    with pytest.raises(InputError, match="cut"):
        fraction_above(np.ones(3), np.ones(3), cut=1.5)


def test_reference_pool_roundtrip(tmp_path):
    rng = np.random.default_rng(3)
    pool = ReferencePool.from_scores(rng.normal(size=10_000).astype(np.float32), model_hash="sha256:abc")
    path = pool.save(tmp_path / "pool.fits")
    back = ReferencePool.load(path)
    np.testing.assert_array_equal(back.scores, pool.scores)
    assert back.provenance["model_hash"] == "sha256:abc"
    assert back.provenance["score"] == "logit"
    s = rng.normal(size=100)
    np.testing.assert_allclose(back.ordinality(s), ordinality_against(s, pool.scores))


def test_reference_pool_bad_files(tmp_path):
    from astropy.io import fits

    with pytest.raises(InputError, match="not found"):
        ReferencePool.load(tmp_path / "missing.fits")
    fits.PrimaryHDU(np.arange(5.0)).writeto(tmp_path / "plain.fits")
    with pytest.raises(InputError, match="not a deepmine reference pool"):
        ReferencePool.load(tmp_path / "plain.fits")
    good = ReferencePool.from_scores(np.arange(100.0)).save(tmp_path / "good.fits")
    data = good.read_bytes()
    (tmp_path / "trunc.fits").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="trunc.fits"):
        ReferencePool.load(tmp_path / "trunc.fits")
