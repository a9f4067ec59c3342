"""The bundled model (inference/models/default.onnx): what its metadata promises, and that it
finds lenses by their arcs — not by a centred red galaxy (the shortcut the selection function of
an earlier build exposed: 60 % of arc-less lens galaxies scored above 99.5 % of the non-lenses).

Torch-free; LensCrafter data with seeds that the build (tools/build_bundled_model.sh) never uses.
"""
import numpy as np
import pytest

from deepmine.inference.metadata import read_metadata
from deepmine.inference.model import BUNDLED_MODEL_DIR, load_model
from deepmine.inference.ranking import ordinality_against, ranking_performance
from deepmine.lenscrafter import craft_lenses, craft_negatives, offset_lenses, sample_lens_params
from deepmine.lenscrafter.demo import DEMO_LENS_PRIORS

BUNDLED = BUNDLED_MODEL_DIR / "default.onnx"
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not BUNDLED.exists(), reason="no bundled model")]


@pytest.fixture(scope="module")
def scored():
    model = load_model(BUNDLED, device="cpu")

    def score(images):
        return model.predict(images)[0].astype(np.float64)

    neg = score(craft_negatives(2000, seed=9101)[0])
    params = sample_lens_params(300, seed=9102, **DEMO_LENS_PRIORS)
    lenses = score(craft_lenses(params, seed=9102, field=1.0))
    moved = score(craft_lenses(offset_lenses(params, 0.2, seed=9104), seed=9102, field=1.0))
    arcless = score(craft_lenses(sample_lens_params(300, seed=9103, m_g_src=35.0), seed=9103, field=1.0))
    return neg, lenses, arcless, moved


def test_metadata_records_heldout_rp_selection_and_stages():
    meta, props = read_metadata(BUNDLED)
    assert meta.architecture == "eznet" and meta.precision == "fp32" and meta.parity["passed"]
    # held out: 4,000 lenses (source m_g 21.5-25.5, θ_E 0.6-3″, offset by 0.2″ rms) and 4,000
    # non-lens scenes of the HSC-Wide sky; 0.962 measured for the 30-epoch build (docs/benchmarks.md)
    assert meta.training["recipe_name"] == "demo-anneal" and meta.training["heldout"]["ranking_performance"] > 0.95
    # stage 1: recipe demo, 30 cosine-annealed epochs (docs/recipes.md)
    init = meta.training["init"]
    assert init["recipe_name"] == "demo" and init["epochs"] == 30 and init["sha256"].startswith("sha256:")
    # the figures of issue 17 travel with the model: lenses moved by 0-0.3″, arc-less lens
    # galaxies, real galaxies (tools/evaluate_bundled.py on an export of the same checkpoint)
    ev = meta.extra["evaluation"]
    assert ev["sigmas"] == [0.0, 0.1, 0.2, 0.3] and set(ev["offsets"]) == {"default", "demo"}
    assert ev["offsets"]["demo"]["0.2"]["rp"] > 0.97 and max(ev["arcless"].values()) < 0.01
    # issue 17: off-centre lenses within 0.02 of the centred ones (0.914 vs 0.915 measured)
    default = ev["offsets"]["default"]
    assert default["0.2"]["rp"] > 0.9 and default["0.0"]["rp"] - default["0.2"]["rp"] < 0.02
    sel = meta.extra["selection"]
    assert sel["lenses"] == 65536 and 0 < sel["fraction"] < 1 and sel["cut"] == 0.995
    assert {a["name"] for a in sel["axes"]} >= {"theta_e", "m_arc", "m_fg"}
    assert BUNDLED.stat().st_size < 5e6  # "a few MB at most"


def test_finds_demo_lenses_by_their_arcs_not_by_centred_galaxies(scored):
    neg, lenses, arcless, _ = scored
    assert ranking_performance(lenses, neg) > 0.95  # 0.99 measured on today's LensCrafter sky
    # the same lens galaxies without an arc: about the non-lens rate, not the lens rate
    assert np.mean(ordinality_against(arcless, neg) > 0.995) < 0.05
    # lens galaxies without arcs are the hardest negatives of all (0.79 measured, 2026-11-26)
    assert ranking_performance(lenses, arcless) > 0.7


def test_finds_demo_lenses_on_todays_sky_as_well_as_on_the_sky_it_was_trained_on(scored):
    neg, lenses, _, _ = scored
    assert ranking_performance(lenses, neg) > 0.97
    assert np.mean(ordinality_against(lenses, neg) > 0.995) > 0.6


def test_off_centre_lenses_score_like_centred_ones(scored):
    """Trained on off-centre lenses from the first epoch (lenscrafter.offset_lenses, σ = 0.2″,
    plus 2-pixel shifts): lenses moved by 0.2″ rms rank about as well as lenses at the centre
    (the previous, centred-lens model fell from RP 0.94 to 0.69 on demo lenses)."""
    neg, lenses, _, moved = scored
    assert ranking_performance(moved, neg) > ranking_performance(lenses, neg) - 0.03
