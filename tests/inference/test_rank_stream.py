"""``deepmine rank`` and reference pools on Parquet datasets, read a batch at a time (issue 22):
the same figures, bit for bit, as the in-memory ranking of the same scores."""
import json

import numpy as np
import pytest

from deepmine.inference.catalog.dataset import write_blocks
from deepmine.inference.catalog.merge import stream_merge
from deepmine.inference.errors import InputError
from deepmine.inference.ranking import fraction_above, ranking_performance, tracer_recovery_curve
from deepmine.inference.ranking.pool import ReferencePool
from deepmine.inference.ranking.stream import iter_scores, sorted_scores_from_parquet, tracer_counts

pytest.importorskip("pyarrow")


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory, write_parts):
    d = tmp_path_factory.mktemp("rank")
    paths = write_parts(d / "parts", 60_000, 5_000, seed=4)
    with stream_merge(paths) as m:
        template = m.template()
        template.meta["DM_SCID"] = "sha256:abc"
        write_blocks(m.blocks(0, source_codes=True), template, {"dataset": d / "neg_parquet", "parquet": d / "neg.parquet"},
                     rows_per_file=16_384, row_group_rows=8_192, sources=m.sources)
    logit = np.concatenate([np.load(p)["logit"] for p in paths])
    flags = np.concatenate([np.load(p)["flags"] for p in paths])
    neg = logit[(flags & 2) == 0]  # BLANK rows (null logits) are not ranked
    assert np.isfinite(neg).all()
    rng = np.random.default_rng(9)
    tr = np.r_[rng.normal(4, 2, 300).astype(np.float32), neg[:20]]  # some tracers tie negatives
    np.save(d / "tr.npy", tr)
    np.save(d / "neg.npy", neg)
    return d, neg, tr


def test_streamed_counts_equal_in_memory(catalogue):
    d, neg, tr = catalogue
    for batch_rows in (1_000, 1 << 20):
        got = tracer_counts(tr, d / "neg_parquet", batch_rows=batch_rows)
        assert got.n_negatives == neg.size
        assert got.ranking_performance() == ranking_performance(tr, neg)
        assert got.fraction_above(0.99) == fraction_above(tr, neg, 0.99)
        a, b = got.curve(), tracer_recovery_curve(tr, neg)
        np.testing.assert_array_equal(a.ordinality, b.ordinality)
        np.testing.assert_array_equal(a.recovered, b.recovered)


def test_cli_rank_on_a_dataset(catalogue, cli):
    d, neg, tr = catalogue
    outs = []
    for src in (d / "neg_parquet", d / "neg.parquet", d / "neg.npy"):
        rc, out, err = cli("rank", src, "--tracers", d / "tr.npy", "--json")
        assert rc == 0, err
        outs.append(json.loads(out))
    assert outs[0] == outs[1] == outs[2]
    rc, out, err = cli("rank", d / "neg_parquet", "--tracers", d / "tr.npy", "--save-pool", d / "pool.fits",
                       "--plot", d / "trc.png")
    assert rc == 0, err
    assert "ranking performance" in out and (d / "trc.png").is_file()
    pool = ReferencePool.load(d / "pool.fits")
    np.testing.assert_array_equal(pool.scores, np.sort(neg))
    assert pool.provenance["scoring_id"] == "sha256:abc"
    rc, out, err = cli("rank", d / "neg.npy", "--tracers", d / "neg_parquet", "--json")  # tracers as a dataset
    assert rc == 0, err and json.loads(out)["n_tracers"] == neg.size


def test_reference_pool_from_a_dataset(catalogue):
    d, neg, _ = catalogue
    pool = ReferencePool.load(d / "neg_parquet")
    assert pool.scores.dtype == np.float32
    np.testing.assert_array_equal(pool.scores, np.sort(neg))
    np.testing.assert_array_equal(sorted_scores_from_parquet(d / "neg.parquet", batch_rows=999)[0], pool.scores)
    assert pool.provenance["scoring_id"] == "sha256:abc"


def test_bad_parquet_sources(catalogue, tmp_path, cli):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"logit": np.array([1.0, np.nan, 2.0])}), tmp_path / "nan.parquet")
    with pytest.raises(InputError, match=r"nan.parquet: score 1 of column 'logit' is nan"):
        list(iter_scores(tmp_path / "nan.parquet"))
    (tmp_path / "empty_parquet").mkdir()
    rc, out, err = cli("rank", tmp_path / "empty_parquet", "--tracers", catalogue[0] / "tr.npy")
    assert rc != 0 and "folder holds no Parquet files" in err and "Traceback" not in err
    with pytest.raises(InputError, match="no column 'score'"):
        list(iter_scores(catalogue[0] / "neg_parquet", "score"))
