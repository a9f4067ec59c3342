"""``deepmine rank`` end to end, and the one error path shared by every command."""
import json

import numpy as np
import pytest
from astropy.table import Table
from sklearn.metrics import roc_auc_score


@pytest.fixture
def scores(tmp_path):
    rng = np.random.default_rng(0)
    neg = rng.normal(0, 1, 20_000).astype(np.float32)
    tr = rng.normal(3, 1, 100).astype(np.float32)
    np.save(tmp_path / "neg.npy", neg)
    np.save(tmp_path / "tr.npy", tr)
    Table({"id": np.arange(neg.size), "logit": neg}).write(tmp_path / "cat.fits")
    Table({"id": np.arange(tr.size), "logit": tr}).write(tmp_path / "tracers.ecsv")
    return tmp_path, neg, tr


def test_rank_prints_rp_and_writes_plot_and_pool(cli, scores):
    d, neg, tr = scores
    rc, out, err = cli("rank", d / "neg.npy", "--tracers", d / "tr.npy", "--plot", d / "trc.png",
                       "--save-pool", d / "pool.fits", "--json")
    assert rc == 0, err
    res = json.loads(out)
    expected = 2 * roc_auc_score(np.r_[np.ones(tr.size), np.zeros(neg.size)], np.r_[tr, neg]) - 1
    assert res["ranking_performance"] == pytest.approx(expected, abs=1e-9)
    assert (d / "trc.png").stat().st_size > 10_000
    # the stored pool gives the same answer; catalogues (FITS, ECSV) read their logit column
    rc2, out2, _ = cli("rank", d / "pool.fits", "--tracers", d / "tracers.ecsv", "--json")
    rc3, out3, _ = cli("rank", d / "cat.fits", "--tracers", d / "tr.npy", "--json")
    assert rc2 == rc3 == 0
    assert json.loads(out2)["ranking_performance"] == pytest.approx(expected, abs=1e-9)
    assert json.loads(out3)["fraction_above_cut"] == pytest.approx(res["fraction_above_cut"])


def _one_line_error(rc, err, *needles):
    assert rc != 0
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda p: None, "not found"),
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_text("not numpy at all"), "not a readable .npy array"),
        (lambda p: p.write_bytes(open(p.parent / "neg.npy", "rb").read()[:100]), "not a readable .npy"),
        (lambda p: np.save(p, np.array([0.5, np.nan, 1.0])), "NaN and inf"),
        (lambda p: np.save(p, np.zeros((3, 3))), "1-D"),
    ],
    ids=["missing", "empty", "text", "truncated", "nan", "wrong-shape"],
)
def test_rank_bad_tracer_files(cli, scores, make, needle):
    d, _, _ = scores
    bad = d / "bad.npy"
    make(bad)
    rc, _, err = cli("rank", d / "neg.npy", "--tracers", bad)
    _one_line_error(rc, err, "deepmine rank: error:", needle)
    if needle != "not found":
        assert "bad.npy" in err


def test_rank_bad_catalogue_column_and_options(cli, scores, tmp_path):
    d, _, _ = scores
    rc, _, err = cli("rank", d / "cat.fits", "--tracers", d / "tr.npy", "--column", "nope")
    _one_line_error(rc, err, "cat.fits", "no column 'nope'")
    (tmp_path / "junk.fits").write_bytes(b"SIMPLE  =  junk" * 50)
    rc, _, err = cli("rank", tmp_path / "junk.fits", "--tracers", d / "tr.npy")
    _one_line_error(rc, err, "junk.fits")
    rc, _, err = cli("rank", d / "neg.npy")
    _one_line_error(rc, err, "--tracers")
    rc, _, err = cli("rank", d / "neg.npy", "-t", d / "tr.npy", "--cut", "2")
    _one_line_error(rc, err, "--cut")
    rc, _, err = cli("nosuchcommand")
    _one_line_error(rc, err, "No such command")


def test_rank_unwritable_plot_keeps_nothing_half_written(cli, scores):
    d, _, _ = scores
    rc, _, err = cli("rank", d / "neg.npy", "-t", d / "tr.npy", "--plot", d / "no_such_dir" / "trc.png")
    _one_line_error(rc, err, "does not exist")
    (d / "trc.png").write_bytes(b"old")
    rc, _, err = cli("rank", d / "neg.npy", "-t", d / "tr.npy", "--plot", d / "trc.png")
    _one_line_error(rc, err, "already exists; pass --overwrite")
    assert (d / "trc.png").read_bytes() == b"old"
    rc, _, _ = cli("rank", d / "neg.npy", "-t", d / "tr.npy", "--plot", d / "trc.png", "--overwrite")
    assert rc == 0 and (d / "trc.png").read_bytes()[:4] == b"\x89PNG"
    assert not list(d.glob(".trc.png*")), "temporary files left behind"


def test_version_and_help(cli):
    rc, out, _ = cli("--version")
    assert rc == 0 and out.startswith("deepmine ")
    rc, out, _ = cli("rank", "--help")
    assert rc == 0 and "--tracers" in out


def test_debug_shows_traceback(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "deepmine.inference.cli", "--debug", "rank", str(tmp_path / "x.npy"),
                           "-t", str(tmp_path / "y.npy")], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr
