"""``deepmine scan`` and ``deepmine selection`` with ``--cluster``: attached to one LocalCluster
shared by the module, plus one embedded ``--cluster local`` run."""
import importlib.util

import numpy as np
import pytest

pytest.importorskip("distributed")

from deepmine.inference.catalog.io import read_catalog  # noqa: E402
from deepmine.inference.cluster import connect  # noqa: E402
from deepmine.inference.errors import InputError  # noqa: E402

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def scheduler():
    with connect("local", workers=2, threads_per_worker=1, dashboard_address=":0", log=None) as be:
        yield be.client.scheduler.address


@pytest.fixture(scope="module")
def scan_files(tmp_path_factory, make_classifier, blobs):
    d = tmp_path_factory.mktemp("clustercli")
    model = make_classifier(d / "m.onnx", shape=(3, 32, 32), conv_channels=8)
    np.save(d / "x.npy", blobs(900, shape=(3, 32, 32), seed=4))
    return d, model


def _scan_args(d, model, out, *extra):
    return ("scan", d / "x.npy", "-m", model, "-o", d / out, "--format", "ecsv", "--shard-size", 100,
            "--batch-size", 50, "--device", "cpu", *extra)


def _same(a, b):
    ta, tb = read_catalog(a), read_catalog(b)
    assert np.array_equal(np.asarray(ta["id"]), np.asarray(tb["id"]))
    np.testing.assert_allclose(np.asarray(ta["logit"]), np.asarray(tb["logit"]), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(ta["ordinality"]), np.asarray(tb["ordinality"]))


def test_scan_attached_to_a_scheduler_equals_a_local_scan(cli, scheduler, scan_files):
    d, model = scan_files
    rc, _, err = cli(*_scan_args(d, model, "ref.ecsv", "--threads", 1))
    assert rc == 0, err
    rc, _, err = cli(*_scan_args(d, model, "attached.ecsv", "--cluster", scheduler, "--workers", 2))
    assert rc == 0, err
    assert f"attached to {scheduler}: 2 workers, 1 thread per task" in err
    assert "dashboard: http://" in err or "dashboard: unavailable" in err
    _same(d / "attached.ecsv", d / "ref.ecsv")
    meta = read_catalog(d / "attached.ecsv").meta
    assert meta["DM_THRD"] == 1  # each task got its worker's one core


def test_scan_on_an_embedded_local_cluster(cli, scan_files):
    d, model = scan_files
    if not (d / "ref.ecsv").exists():
        assert cli(*_scan_args(d, model, "ref.ecsv", "--threads", 1))[0] == 0
    rc, _, err = cli(*_scan_args(d, model, "local.ecsv", "--cluster", "local", "--workers", 2, "--threads", 1))
    assert rc == 0, err
    assert "local cluster: 2 workers × 1 thread" in err
    if importlib.util.find_spec("bokeh") is not None:
        assert "dashboard: http://" in err
    else:
        assert "dashboard: unavailable (install bokeh" in err
    _same(d / "local.ecsv", d / "ref.ecsv")


def test_cluster_option_errors_are_one_line(cli, scan_files):
    d, model = scan_files
    rc, _, err = cli(*_scan_args(d, model, "bad.ecsv", "--cluster", "everywhere"))
    assert rc == 2 and "--cluster: expected local, slurm, pbs" in err and len(err.strip().splitlines()) == 1
    rc, _, err = cli(*_scan_args(d, model, "bad.ecsv", "--workers", 2))
    assert rc == 2 and "--workers: only used with --cluster" in err
    rc, _, err = cli(*_scan_args(d, model, "bad.ecsv", "--cluster", "local", "--cluster-opt", "queue=x"))
    assert rc == 2 and "--cluster-opt: only used with --cluster slurm or pbs" in err
    with pytest.raises(InputError, match="cannot reach the scheduler at tcp://127.0.0.1:1"):
        with connect("tcp://127.0.0.1:1", wait_timeout=1, log=None):
            pass


GRID = """
[axes.theta_e]
range = [0.3, 3.0]
bins = 2
scale = "log"
[axes.m_arc]
range = [18.0, 26.0]
bins = 3
"""


@pytest.mark.slow  # up to a minute when the workers compile LensCrafter's Numba kernels (cold cache)
def test_selection_attached_to_a_scheduler_equals_a_local_run(cli, scheduler, tmp_path, make_classifier):
    from deepmine.lenscrafter.selection.measure import CRAFT_LENSES, SelectionFunction

    model = make_classifier(tmp_path / "sel.onnx", shape=(3, 32, 32))
    (tmp_path / "grid.toml").write_text(GRID)
    # 6 cells in craft chunks of 4 cells, one chunk per part: 2 parts
    common = ("selection", "--model", model, "--grid", tmp_path / "grid.toml", "--pool-size", 400,
              "--per-cell", CRAFT_LENSES // 4, "--part-lenses", CRAFT_LENSES, "--cut", 0.99, "--seed", 2,
              "--device", "cpu")
    rc, _, err = cli(*common, "--out", tmp_path / "local.fits", "--threads", 1)
    assert rc == 0, err
    rc, _, err = cli(*common, "--out", tmp_path / "dist.fits", "--cluster", scheduler)
    assert rc == 0, err
    assert f"attached to {scheduler}" in err
    a, b = SelectionFunction.load(tmp_path / "local.fits"), SelectionFunction.load(tmp_path / "dist.fits")
    assert b.provenance["parts"] == 2
    for col in ("cell", "n", "n_detected", "mean_ordinality", "median_logit"):
        np.testing.assert_array_equal(np.asarray(a.table[col]), np.asarray(b.table[col]), err_msg=col)
