"""Scans whose catalogue is merged as a stream (issue 22): a Parquet dataset with the same rows
as the in-memory catalogue, the same top list, the memory-budget switch, one-line refusals."""
import numpy as np
import pytest
from astropy.table import Table

from deepmine.inference.catalog import stream as catalog_stream
from deepmine.inference.catalog.io import read_catalog
from deepmine.inference.errors import InputError
from deepmine.inference.ranking.pool import ReferencePool
from deepmine.inference.scan.scanner import scan

pytest.importorskip("pyarrow")


@pytest.fixture(scope="module")
def toy(tmp_path_factory, make_classifier):
    return make_classifier(tmp_path_factory.mktemp("m") / "toy.onnx", shape=(3, 32, 32))


@pytest.fixture(scope="module")
def stacks(tmp_path_factory, blobs):
    d = tmp_path_factory.mktemp("in")
    x = blobs(900, shape=(3, 32, 32), seed=11)
    x[::37] = 0  # blank cutouts: null rows
    x[5:40] = x[5]  # ties
    np.save(d / "a.npy", x[:600])
    np.save(d / "b.npy", x[600:])
    ReferencePool.from_scores(np.linspace(-1, 3, 501)).save(d / "pool.fits")
    return d


@pytest.mark.parametrize("top, pool", [(0.05, False), (17, True)])
def test_streamed_scan_equals_in_memory_scan(tmp_path, toy, stacks, top, pool):
    ins = [stacks / "a.npy", stacks / "b.npy"]
    kw = dict(batch_size=64, shard_size=128, progress=False, reference=stacks / "pool.fits" if pool else None,
              top=top, mosaic=None, threads=1)
    mem = scan(ins, toy, tmp_path / "mem.fits", formats=["parquet"], **kw)
    big = scan(ins, toy, tmp_path / "big.fits", formats=["dataset", "parquet"], **kw)
    assert big.streamed and big.table is None and not mem.streamed
    assert big.catalogs["dataset"] == tmp_path / "big_parquet" and big.catalogs["dataset"].is_dir()
    assert big.n_objects == mem.n_objects == 900 and big.n_unranked == mem.n_unranked > 0
    a = read_catalog(tmp_path / "mem.parquet")
    for path in (tmp_path / "big_parquet", tmp_path / "big.parquet"):
        b = read_catalog(path)
        assert b.colnames == a.colnames
        for k in a.colnames:
            assert b[k].unit == a[k].unit
            np.testing.assert_array_equal(np.asarray(b[k]), np.asarray(a[k]), err_msg=k)
        for key in ("DM_SHA", "DM_SCID", "DM_NOBJ", "DM_INPUT", "DM_FLAGS") + (("DM_REF",) if pool else ()):
            assert b.meta[key] == a.meta[key], key
    ta, tb = Table.read(tmp_path / "mem_top.ecsv"), Table.read(tmp_path / "big_top.ecsv")
    assert len(ta) and ta.colnames == tb.colnames
    for k in ta.colnames:
        np.testing.assert_array_equal(np.asarray(tb[k]), np.asarray(ta[k]), err_msg=k)
    assert not (tmp_path / "big.parts").exists()


def test_memory_budget_switches_to_a_stream(tmp_path, toy, stacks, monkeypatch):
    monkeypatch.setattr(catalog_stream, "BYTES_PER_ROW", 10**7)  # 900 rows "need" 9 GB
    with pytest.raises(InputError, match=r"--format fits: a catalogue of 600 rows .* --memory-budget"):
        scan(stacks / "a.npy", toy, tmp_path / "x.fits", formats=["fits"], progress=False, memory_budget="1G")
    res = scan([stacks / "a.npy", stacks / "b.npy"], toy, tmp_path / "cat.fits", progress=False, memory_budget="1G",
               mosaic=tmp_path / "top.png")
    assert res.streamed and list(res.catalogs) == ["dataset"] and res.n_top == 5
    assert len(read_catalog(tmp_path / "cat_parquet")) == 900 and (tmp_path / "top.png").is_file()
    assert not (tmp_path / "cat.fits").exists()


def test_cli_dataset_overwrite_and_refusals(tmp_path, toy, stacks, cli):
    args = ("scan", stacks / "a.npy", "--model", toy, "--out", tmp_path / "c.fits", "--format", "dataset",
            "--threads", 1, "--memory-budget", "1.5G")
    rc, out, err = cli(*args)
    assert rc == 0, err
    assert f"wrote catalogue  {tmp_path / 'c_parquet'}/" in err
    rc, out, err = cli(*args)
    assert rc != 0 and "c_parquet: already exists; pass --overwrite" in err and "Traceback" not in err
    rc, out, err = cli(*args, "--overwrite")
    assert rc == 0, err
    assert len(read_catalog(tmp_path / "c_parquet")) == 600
    rc, out, err = cli(*args[:-2], "--memory-budget", "lots")
    assert rc != 0 and "--memory-budget" in err and len(err.strip().splitlines()) == 1
    rc, out, err = cli("scan", stacks / "a.npy", "--model", toy, "--out", tmp_path / "h.fits", "--format", "hats")
    assert rc != 0 and "--format hats" in err and "Traceback" not in err


def test_choose_merge():
    assert catalog_stream.choose_merge(10, ["fits", "ecsv"], 2 * 10**9, explicit=False) == (False, ["fits", "ecsv"])
    assert catalog_stream.choose_merge(10, ["dataset"], 2 * 10**9, explicit=True) == (True, ["dataset"])
    assert catalog_stream.choose_merge(10, ["fits", "dataset"], 2 * 10**9, explicit=True) == (False, ["fits", "dataset"])
    assert catalog_stream.choose_merge(10**9, ["fits", "parquet"], 2 * 10**9, explicit=False) == (True, ["dataset"])
    assert catalog_stream.choose_merge(10**9, ["hats", "parquet"], 2 * 10**9, explicit=True) == (True, ["hats"])
