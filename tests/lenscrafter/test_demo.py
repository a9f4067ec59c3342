"""``deepmine demo`` in-process: outputs exist, figures are consistent with the catalogue, and
bad options give one-line errors."""
import json

import numpy as np
import pytest
from astropy.table import Table

from deepmine.inference.model import BUNDLED_MODEL_DIR
from deepmine.inference.ranking import ranking_performance

pytestmark = pytest.mark.slow


@pytest.mark.skipif(not (BUNDLED_MODEL_DIR / "default.onnx").exists(), reason="no bundled model")
def test_demo_outputs_and_figures(cli, tmp_path):
    out = tmp_path / "demo"
    rc, stdout, err = cli("demo", "--out", out, "--negatives", "600", "--lenses", "10", "--json", "--no-selection")
    assert rc == 0, err
    r = json.loads(stdout)
    cat = Table.read(out / "catalog.fits")
    truth = Table.read(out / "truth.ecsv")
    assert len(cat) == len(truth) == 610
    lens = np.asarray(truth["is_lens"])[np.asarray(cat["index"])]
    logit = np.asarray(cat["logit"], dtype=float)
    assert r["ranking_performance"] == pytest.approx(ranking_performance(logit[lens], logit[~lens]))
    assert r["ranking_performance"] > 0.6  # far above chance (0); floors: test_clean_install
    for name in ("top_candidates.png", "trc.png", "demo.json", "catalog.ecsv"):
        assert (out / name).stat().st_size > 500
    assert r["replaced"] == []
    # the demo owns its folder: a rerun replaces its own files, and says so (issue 18)
    rc, stdout, err = cli("demo", "--out", out, "--negatives", "600", "--lenses", "10", "--no-selection")
    assert rc == 0, err
    assert "replaced" in err and "catalog.fits" in json.loads((out / "demo.json").read_text())["replaced"]


def test_demo_bad_options(cli, tmp_path):
    rc, _, err = cli("demo", "--negatives", "10")
    assert rc != 0 and "--negatives" in err and len(err.strip().splitlines()) == 1
    rc, _, err = cli("demo", "--model", tmp_path / "nope.onnx", "--out", tmp_path / "d")
    assert rc != 0 and "nope.onnx" in err and len(err.strip().splitlines()) == 1
