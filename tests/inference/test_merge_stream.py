"""Streamed merge (issue 22): same rows, values, units, flags, nulls and ids as the in-memory
merge, exact ordinality with heavy ties in any number of rank passes, bounded catalogues."""
import os

import numpy as np
import pytest

from deepmine.inference.catalog.dataset import dataset_files, write_blocks
from deepmine.inference.catalog.io import read_catalog, write_catalog
from deepmine.inference.catalog.merge import parse_budget, stream_merge
from deepmine.inference.errors import InputError
from deepmine.inference.ranking import ordinality
from deepmine.inference.ranking.pool import ReferencePool
from deepmine.inference.scan.shards import merge_parts

pq = pytest.importorskip("pyarrow.parquet")


def _collect(merged, **kw) -> dict:
    blocks = list(merged.blocks(**kw))
    if not blocks:
        return merged.empty_block()
    return {k: np.concatenate([b[k] for b in blocks]) for k in blocks[0]}


def _same(table, cols: dict) -> None:
    assert list(cols) == table.colnames
    for k in table.colnames:
        a = np.asarray(table[k])
        assert a.dtype == cols[k].dtype, k
        np.testing.assert_array_equal(a, cols[k], err_msg=k)


@pytest.fixture(scope="module")
def parts_1e5(tmp_path_factory, write_parts):
    return write_parts(tmp_path_factory.mktemp("parts"), 100_000, 6_000, seed=1)


@pytest.fixture(scope="module")
def pool():
    rng = np.random.default_rng(5)
    ref = np.round(rng.normal(-2, 3, 20_000), 1).astype(np.float32)
    return ReferencePool.from_scores(ref)


@pytest.mark.parametrize("rank_bytes, method", [(None, None), (200_000, None), (3 * 2**19 * 8, "dense")])
def test_streamed_rows_equal_in_memory(parts_1e5, pool, rank_bytes, method, tmp_path):
    """10^5 rows (heavy ties, ±0.0, 2 % null rows, kept columns missing from some parts), parts
    given in reverse order, one rank pass / many sorted passes / dense passes."""
    ref = merge_parts(parts_1e5, reference=pool, with_spec_index=True)
    with stream_merge(parts_1e5[::-1], reference=pool, with_spec_index=True, block_rows=7_000,
                      rank_bytes=rank_bytes, method=method, work_dir=tmp_path) as m:
        assert m.n_rows == len(ref)
        assert m.n_ranked == int(np.isfinite(np.asarray(ref["logit"])).sum())
        if rank_bytes == 200_000:
            assert len(m.ranges) > 5 and not any(r.dense for r in m.ranges)
        if method == "dense":
            assert len(m.ranges) > 5 and all(r.dense for r in m.ranges)
        cols = _collect(m)
        assert sorted(map(tuple, m.skipped)) == sorted(map(tuple, ref.meta["skipped"]))
        spills = [r.spill for r in m.ranges]
        assert all(p.exists() for p in spills)
    assert not any(p.exists() for p in spills)  # spill files removed
    _same(ref, cols)
    assert np.isnan(cols["ordinality"]).sum() == np.isnan(np.asarray(ref["logit"])).sum() > 0


def test_exact_ordinality_1e6_heavy_ties(tmp_path, write_parts):
    """10^6 rows, 30 % rounded to 0.1 and 5 % saturated: the streamed ordinality is the
    in-memory ``ordinality`` bit for bit, in several sorted and dense rank passes."""
    paths = write_parts(tmp_path, 1_000_000, 65_536, seed=2, kept=False, ties=0.6)
    for k, p in enumerate(paths[:6]):  # a few parts with three values only: buckets of >32768 equal keys
        d = dict(np.load(p))
        d["logit"] = np.where(np.isfinite(d["logit"]), np.float32(k % 3 - 1), np.float32(np.nan))
        np.savez(p, **d)
    logit = np.concatenate([np.load(p)["logit"] for p in paths])
    finite = np.isfinite(logit)
    expect = np.full(logit.shape, np.nan)
    expect[finite] = ordinality(logit[finite])
    with stream_merge(paths, rank_bytes=2_000_000, work_dir=tmp_path) as m:
        assert len(m.ranges) > 3 and any(r.dense for r in m.ranges) and not all(r.dense for r in m.ranges)
        got = np.concatenate([b["ordinality"] for b in m.blocks()])
    np.testing.assert_array_equal(got, expect)


def test_dataset_catalogue_reads_back_as_the_in_memory_one(parts_1e5, pool, tmp_path):
    """Partitioned Parquet written as the merge streams: files and row groups of bounded size,
    same columns, units, flags, null rows, ids and provenance as the in-memory catalogue."""
    ref = merge_parts(parts_1e5, reference=pool)
    ref.meta.update({"DM_NOBJ": len(ref), "DM_VERS": "test"})
    write_catalog(ref, tmp_path / "mem.fits", ["parquet"])
    with stream_merge(parts_1e5, reference=pool, block_rows=10_000) as m:
        template = m.template()
        template.meta.update({"DM_NOBJ": m.n_rows, "DM_VERS": "test"})
        write_blocks(m.blocks(0, source_codes=True), template, {"dataset": tmp_path / "big_parquet",
                     "parquet": tmp_path / "big.parquet"}, rows_per_file=25_000, sources=m.sources,
                     row_group_rows=10_000)
    files = dataset_files(tmp_path / "big_parquet")
    assert len(files) == 5 and (tmp_path / "big_parquet" / "_common_metadata").is_file()  # 2 groups a file
    for f in files:
        meta = pq.ParquetFile(f).metadata
        assert meta.num_rows <= 25_000 and all(meta.row_group(i).num_rows <= 10_000 for i in range(meta.num_row_groups))
        assert meta.row_group(0).num_rows == 10_000
    mem = read_catalog(tmp_path / "mem.parquet")
    for got in (read_catalog(tmp_path / "big_parquet"), read_catalog(tmp_path / "big.parquet")):
        assert got.colnames == mem.colnames
        for k in mem.colnames:
            assert got[k].unit == mem[k].unit, k
            np.testing.assert_array_equal(np.asarray(got[k]), np.asarray(mem[k]), err_msg=k)
        assert got.meta["DM_NOBJ"] == len(mem)
    assert str(mem["ra"].unit) == "deg" and str(mem["x"].unit) == "pix"
    nulls = pq.read_table(files[0], columns=["logit", "ordinality"]).column("ordinality").null_count
    assert nulls > 0  # not NaN: real nulls


def test_in_memory_table_to_dataset_and_overwrite(parts_1e5, tmp_path):
    from deepmine.inference.atomic import check_outputs

    ref = merge_parts(parts_1e5[:3])
    out = write_catalog(ref, tmp_path / "cat.fits", ["dataset"])
    assert out["dataset"] == tmp_path / "cat_parquet" and out["dataset"].is_dir()
    with pytest.raises(InputError, match="already exists; pass --overwrite"):
        check_outputs([out["dataset"]], folders=[out["dataset"]])
    check_outputs([out["dataset"]], overwrite=True, folders=[out["dataset"]])
    write_catalog(ref[:10], tmp_path / "cat.fits", ["dataset"])
    assert len(read_catalog(out["dataset"])) == 10
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_interleaved_parts_and_duplicates(tmp_path, synthetic_part):
    a = synthetic_part(0, 1000, 1)
    b = synthetic_part(0, 1000, 2)
    # two parts whose ids interleave (even / odd), as no plan makes but a merge must take
    for d, keep in ((a, a["id"] % 2 == 0), (b, b["id"] % 2 == 1)):
        for k in list(d):
            if k not in ("sources", "skipped"):
                d[k] = d[k][keep]
    paths = []
    for name, d in (("p0.npz", a), ("p1.npz", b)):
        np.savez(tmp_path / name, **d)
        paths.append(tmp_path / name)
    ref = merge_parts(paths)
    with stream_merge(paths) as m:
        _same(ref, _collect(m, block_rows=100))
    with pytest.raises(InputError, match="appears in more than one part"):
        with stream_merge([paths[0], paths[0]]) as m:
            list(m.blocks())


def test_empty_and_all_null(tmp_path, synthetic_part):
    d = synthetic_part(0, 50, 3, kept=False)
    d["logit"][:] = np.nan
    np.savez(tmp_path / "p.npz", **d)
    empty = {k: v[:0] if k not in ("sources", "skipped") else v for k, v in synthetic_part(50, 10, 4, kept=False).items()}
    np.savez(tmp_path / "e.npz", **empty)
    paths = [tmp_path / "p.npz", tmp_path / "e.npz"]
    with stream_merge(paths) as m:
        assert m.n_ranked == 0 and not m.ranges
        _same(merge_parts(paths), _collect(m))
    with stream_merge([tmp_path / "e.npz"]) as m:
        assert m.n_rows == 0 and _collect(m)["id"].shape == (0,)


def test_damaged_part_and_budget(tmp_path):
    bad = tmp_path / "part-000001.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(InputError, match="part-000001.npz: damaged part file"):
        stream_merge([bad])
    assert parse_budget("2G") == 2_000_000_000 and parse_budget("1.5GiB") == int(1.5 * 2**30)
    for text in ("lots", "100M"):
        with pytest.raises(InputError, match="--memory-budget"):
            parse_budget(text)


def test_hats_catalogue_reads_back_with_lsdb(parts_1e5, tmp_path):
    lsdb = pytest.importorskip("lsdb")
    pytest.importorskip("hats_import")
    with stream_merge(parts_1e5[:4]) as m:
        n = m.n_rows
        write_blocks(m.blocks(), m.template(), {"hats": tmp_path / "cat_hats"})
    cat = lsdb.read_hats(tmp_path / "cat_hats")
    df = cat.compute()
    assert len(df) == n
    assert set(np.asarray(df["id"])) == set(np.asarray(merge_parts(parts_1e5[:4])["id"]))
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]


@pytest.mark.parametrize("rank_bytes, method", [(None, None), (200_000, None), (3 * 2**19 * 8, "dense")])
def test_chunks_give_the_same_rows(parts_1e5, pool, rank_bytes, method, tmp_path):
    """The output pass cut into chunks (for Dask workers): each chunk, pickled as a task would be,
    reads its own rows and their exact values from the shared spill files at its offsets."""
    import pickle

    with stream_merge(parts_1e5, reference=pool, rank_bytes=rank_bytes, method=method, work_dir=tmp_path) as m:
        whole = _collect(m, block_rows=0)
        chunks = m.chunks(15_000)
        assert len(chunks) == 6
        got = [_collect(pickle.loads(pickle.dumps(c)), block_rows=0) for c in chunks[::-1]][::-1]
    for k in whole:
        np.testing.assert_array_equal(np.concatenate([g[k] for g in got]), whole[k], err_msg=k)


def test_parallel_output_pass_equals_serial(parts_1e5, tmp_path):
    from astropy.table import Table

    from deepmine.inference.catalog.stream import write_streamed

    def executor(fn, items):  # in any order, as Dask's would
        for item in items[::-1]:
            yield item, fn(item)

    a = write_streamed(parts_1e5, {"dataset": tmp_path / "a_parquet"}, {"DM_VERS": "t"}, budget="1G",
                       work_dir=tmp_path, top=0.1)
    b = write_streamed(parts_1e5, {"dataset": tmp_path / "b_parquet"}, {"DM_VERS": "t"}, budget="1G",
                       work_dir=tmp_path, top=0.1, executor=executor, rows_per_file=20_000)
    assert len(dataset_files(tmp_path / "b_parquet")) == 5 and (tmp_path / "b_parquet" / "_common_metadata").is_file()
    ta, tb = read_catalog(tmp_path / "a_parquet"), read_catalog(tmp_path / "b_parquet")
    for k in ta.colnames:
        np.testing.assert_array_equal(np.asarray(tb[k]), np.asarray(ta[k]), err_msg=k)
    assert (a.n_rows, a.n_unranked) == (b.n_rows, b.n_unranked) and len(a.top) > 100
    assert isinstance(b.top, Table)
    for k in a.top.colnames:
        np.testing.assert_array_equal(np.asarray(b.top[k]), np.asarray(a.top[k]), err_msg=k)
    assert not list(tmp_path.glob(".merge-*"))
