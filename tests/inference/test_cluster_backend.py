"""The Dask backend on one embedded LocalCluster (2 single-thread workers) shared by the module:
mapping, retries, worker deaths, the scanner's shards and the selection function's parts."""
import os
import signal
import time

import numpy as np
import pytest

pytest.importorskip("distributed")

from deepmine.inference.cluster import connect, map_shards  # noqa: E402
from deepmine.inference.errors import InputError  # noqa: E402

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def backend():
    with connect("local", workers=2, threads_per_worker=1, dashboard_address=":0", log=None) as be:
        yield be


@pytest.fixture
def cluster(backend):
    backend.client.wait_for_workers(2, timeout=60)  # a worker killed by an earlier test is back
    return backend


# -- small picklable work functions --------------------------------------------------------
def _square(x):
    return x * x, os.getpid()


def _env(_):
    return os.environ.get("NUMBA_NUM_THREADS"), os.environ.get("OMP_NUM_THREADS")


def _bad_input(path):
    with open(path, "a") as fh:
        fh.write("attempt\n")
    raise InputError(f"{path}: not a cutout file")


def _flaky(path):
    """Fails on its first attempt (like a flaky network filesystem), succeeds on the next."""
    if not os.path.exists(path):
        open(path, "w").close()
        raise OSError(f"{path}: stale file handle")
    return "ok"


def _slow(x):
    time.sleep(0.15)
    return x, os.getpid()


def kill_busy_worker(client) -> int:
    """SIGKILL a worker process that is running a task now; return its pid."""
    pids = client.run(os.getpid)
    for _ in range(500):
        busy = [a for a, keys in client.processing().items() if keys and a in pids]
        if busy:
            os.kill(pids[busy[0]], signal.SIGKILL)
            return pids[busy[0]]
        time.sleep(0.01)
    raise AssertionError("no busy worker to kill")


# -- mapping ------------------------------------------------------------------------------------
def test_map_keeps_order_feeds_progress_and_uses_worker_processes(cluster):
    got = []
    res = cluster.map(_square, list(range(40)), weights=[2] * 40, progress=got.append)
    assert [r[0] for r in res] == [x * x for x in range(40)]
    assert sum(got) == 80 and len(got) == 40
    pids = set(cluster.client.run(os.getpid).values())
    assert {r[1] for r in res} <= pids and os.getpid() not in pids
    assert cluster.threads_per_worker == 1
    assert set(cluster.map(_env, [0, 1, 2, 3])) == {("1", "1")}  # workers told their share of cores
    assert cluster.n_workers == 2
    assert cluster.describe()["workers"] == 2


def test_map_shards_attaches_to_a_running_scheduler(cluster):
    address = cluster.client.scheduler.address
    res = map_shards(_square, [3, 1, 2], cluster=address, workers=2, progress=None, log=None)
    assert [r[0] for r in res] == [9, 1, 4]
    assert cluster.n_workers == 2  # attaching and detaching leaves the cluster running


def test_bad_input_is_reported_once_not_retried(cluster, tmp_path):
    path = tmp_path / "attempts.txt"
    with pytest.raises(InputError, match="not a cutout file"):
        cluster.map(_bad_input, [str(path)], retries=3)
    assert path.read_text().count("attempt") == 1
    # errors="return": the failure comes back as a value, the other items still run
    out = dict(cluster.imap_unordered(_square_or_fail, [1, -1, 3], errors="return"))
    assert out[0] == (1, out[0][1]) and out[2][0] == 9
    assert isinstance(out[1], InputError) and "negative" in str(out[1])


def _square_or_fail(x):
    if x < 0:
        raise InputError(f"item {x}: negative")
    return _square(x)


def test_unexpected_errors_are_retried(cluster, tmp_path):
    flags = [str(tmp_path / f"flag-{i}") for i in range(4)]
    assert cluster.map(_flaky, flags, retries=1) == ["ok"] * 4
    with pytest.raises(OSError, match="stale file handle"):
        cluster.map(_flaky, [str(tmp_path / "never")], retries=0)


def test_killed_worker_tasks_rerun_elsewhere_exactly_once(cluster):
    before = set(cluster.client.run(os.getpid).values())
    killed = []

    def progress(k):
        if not killed:
            killed.append(kill_busy_worker(cluster.client))

    res = cluster.map(_slow, list(range(24)), progress=progress)
    assert [r[0] for r in res] == list(range(24))
    assert killed and killed[0] in before
    cluster.client.wait_for_workers(2, timeout=60)
    after = set(cluster.client.run(os.getpid).values())
    assert killed[0] not in after  # the nanny started a fresh worker process


def test_preload_keeps_one_session_per_model_and_checks_the_shared_filesystem(cluster, tmp_path, make_classifier):
    model = make_classifier(tmp_path / "m.onnx", shape=(3, 16, 16))
    cluster.preload_model(model, "cpu")
    sessions = cluster.client.run(_sessions)
    assert all(v == [(str(model.resolve()), "cpu", 1)] for v in sessions.values()), sessions
    with pytest.raises(InputError, match="every worker must see the model"):
        cluster.preload_model(tmp_path / "not-on-this-filesystem.onnx", "cpu")
    assert cluster.map(_square, [2])[0][0] == 4  # the cluster still works


def _sessions():
    from deepmine.inference import model

    return sorted((k[0], k[3], k[4]) for k in model._CACHE)


# -- the scanner's shards ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def scan_data(tmp_path_factory, make_classifier, blobs):
    from deepmine.inference.scan.scanner import scan

    d = tmp_path_factory.mktemp("clusterscan")
    model = make_classifier(d / "slow.onnx", shape=(3, 32, 32), conv_channels=16)
    np.save(d / "a.npy", blobs(1500, shape=(3, 32, 32), seed=5))
    np.save(d / "b.npy", blobs(700, shape=(3, 32, 32), seed=6))
    inputs = [str(d / "a.npy"), str(d / "b.npy")]
    ref = scan(inputs, model, d / "ref.ecsv", batch_size=32, shard_size=64, threads=1, device="cpu",
               progress=False, formats=["ecsv"])
    return d, model, inputs, ref.table


def _same_catalogue(table, ref):
    assert len(table) == len(ref)
    assert np.array_equal(np.asarray(table["id"]), np.asarray(ref["id"]))  # every object exactly once
    assert np.unique(np.asarray(table["id"])).size == len(table)
    for col in ("source", "index", "flags"):
        assert np.array_equal(np.asarray(table[col]), np.asarray(ref[col])), col
    np.testing.assert_allclose(np.asarray(table["logit"]), np.asarray(ref["logit"]), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(table["ordinality"]), np.asarray(ref["ordinality"]), atol=1e-9)


def _cluster_scan(cluster, scan_data, name, **kwargs):
    from deepmine.inference.scan.scanner import scan

    d, model, inputs, _ = scan_data
    kwargs.setdefault("executor", cluster.executor)
    return scan(inputs, model, d / name, batch_size=32, shard_size=64, threads=cluster.threads_per_worker,
                device="cpu", progress=False, formats=["ecsv"], **kwargs)


def test_cluster_scan_equals_single_process_scan(cluster, scan_data):
    res = _cluster_scan(cluster, scan_data, "plain.ecsv")
    _same_catalogue(res.table, scan_data[3])
    assert res.n_shards == 35


def test_cluster_scan_streamed_merge_equals_single_process_scan(cluster, scan_data):
    """Workers write the parts; the client merges them as a stream (issue 22: a Parquet
    dataset, no row gathered in memory) with the values of the in-memory merge."""
    from deepmine.inference.catalog.io import read_catalog
    from deepmine.inference.scan.scanner import scan

    d, model, inputs, ref = scan_data
    res = scan(inputs, model, d / "streamed.fits", batch_size=32, shard_size=64, threads=cluster.threads_per_worker,
               device="cpu", progress=False, formats=["dataset"], executor=cluster.executor)
    assert res.streamed and res.table is None and res.n_objects == len(ref)
    _same_catalogue(read_catalog(res.catalogs["dataset"]), ref)
    assert not (d / "streamed.parts").exists()


def test_worker_killed_mid_scan_catalogue_has_every_object_once(cluster, scan_data):
    killed = []

    def executor(fn, shards):
        for k, item in enumerate(cluster.executor(fn, shards)):
            if k == 2:
                killed.append(kill_busy_worker(cluster.client))
            yield item

    res = _cluster_scan(cluster, scan_data, "killed.ecsv", executor=executor)
    assert killed
    _same_catalogue(res.table, scan_data[3])


def test_resume_across_cluster_runs(cluster, scan_data):
    from deepmine.inference.scan.scanner import parts_dir

    def interrupted(fn, shards):
        for k, item in enumerate(cluster.executor(fn, shards)):
            if k == 5:
                raise KeyboardInterrupt
            yield item

    d = scan_data[0]
    with pytest.raises(KeyboardInterrupt):
        _cluster_scan(cluster, scan_data, "resumed.ecsv", executor=interrupted)
    assert len(list(parts_dir(d / "resumed.ecsv").glob("part-*.done"))) >= 5
    with pytest.raises(InputError, match="pass --resume"):
        _cluster_scan(cluster, scan_data, "resumed.ecsv")
    res = _cluster_scan(cluster, scan_data, "resumed.ecsv", resume=True)
    assert res.n_resumed >= 5
    _same_catalogue(res.table, scan_data[3])
    assert not parts_dir(d / "resumed.ecsv").exists()


def test_unreadable_shard_fails_with_one_line_or_is_skipped(cluster, tmp_path, make_classifier, blobs):
    from deepmine.inference.scan.scanner import scan

    model = make_classifier(tmp_path / "m.onnx", shape=(3, 16, 16))
    good = tmp_path / "good"
    good.mkdir()
    from astropy.io import fits

    x = blobs(6, shape=(3, 16, 16), seed=2)
    for i in range(6):
        fits.writeto(good / f"c{i}.fits", x[i])
    (good / "c3.fits").write_bytes(b"not a FITS file at all" * 20)
    kw = dict(batch_size=4, shard_size=2, device="cpu", progress=False, formats=["ecsv"],
              executor=cluster.executor, threads=1)
    with pytest.raises(InputError, match="c3.fits"):
        scan([str(good)], model, tmp_path / "bad.ecsv", **kw)
    res = scan([str(good)], model, tmp_path / "kept.ecsv", keep_going=True, **kw)
    assert res.n_objects == 5 and any("c3.fits" in p for p, _ in res.skipped)


# -- the selection function's parts ----------------------------------------------------------
@pytest.mark.slow  # up to a minute when the workers compile LensCrafter's Numba kernels (cold cache)
def test_selection_function_on_the_cluster_equals_local(cluster, tmp_path, make_classifier):
    from deepmine.inference.model import get_model
    from deepmine.lenscrafter.selection.grid import SelectionGrid, make_axis
    from deepmine.lenscrafter.selection.measure import (
        CRAFT_LENSES,
        build_reference_pool,
        plan_parts,
        selection_function,
    )

    model = make_classifier(tmp_path / "sel.onnx", shape=(3, 32, 32))
    pool = build_reference_pool(get_model(model, "cpu", 1), 400, seed=1)
    # 6 cells in craft chunks of 4 cells, one chunk per part: 2 parts, whatever CRAFT_LENSES is
    per_cell = CRAFT_LENSES // 4
    grid = SelectionGrid(axes=[make_axis("theta_e", 0.3, 3.0, 2, "log"), make_axis("m_arc", 18, 26, 3)],
                         per_cell=per_cell)
    kw = dict(pool=pool, per_cell=per_cell, seed=3, part_lenses=CRAFT_LENSES, threads=1, device="cpu")
    n_parts = len(plan_parts(grid, per_cell, CRAFT_LENSES))
    assert n_parts == 2
    local = selection_function(model, grid, workdir=tmp_path / "local", **kw)
    done = []
    dist = selection_function(model, grid, workdir=tmp_path / "dist", map_parts=cluster.map_parts,
                              progress=done.append, **kw)
    assert sum(done) == grid.n_cells
    for col in ("cell", "n", "n_detected", "fraction", "mean_ordinality", "median_logit"):
        np.testing.assert_array_equal(np.asarray(dist.table[col]), np.asarray(local.table[col]), err_msg=col)
    assert len(list((tmp_path / "dist").glob("part-*.fits"))) == n_parts  # parts written by the workers
