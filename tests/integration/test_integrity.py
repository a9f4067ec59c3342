"""Nothing stale, nothing overwritten (issue 18): inputs and models are the ones they claim to be.

Every refusal is checked for its exit code, its one line (no traceback) and for leaving every
existing file byte-identical.
"""
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from deepmine.inference.catalog.io import read_catalog
from deepmine.inference.errors import InputError
from deepmine.inference.identity import (
    WHOLE_FILE_LIMIT,
    changed_inputs,
    input_identity,
    same_input,
    scoring_identity,
)
from deepmine.inference.ranking.pool import ReferencePool


def digests(folder: Path) -> dict:
    """sha256 of every file under ``folder`` (the 'nothing changed' witness)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def with_metadata(src: Path, dst: Path, **entries) -> Path:
    """Copy a model adding metadata entries (no change to graph or weights)."""
    import onnx

    m = onnx.load(str(src))
    for k, v in entries.items():
        e = m.metadata_props.add()
        e.key, e.value = k, v
    dst.write_bytes(m.SerializeToString())
    return dst


def stamped(src: Path, dst: Path) -> Path:
    """Copy a model with a ``deepmine.content_hash`` as the exporter stores it."""
    from deepmine.inference.onnxhash import content_hash_of_bytes

    digest, _ = content_hash_of_bytes(src.read_bytes())
    return with_metadata(src, dst, **{"deepmine.content_hash": digest})


def tampered(src: Path, dst: Path) -> Path:
    """A stamped model whose weight ``gain`` was changed after stamping."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(src))
    for i, t in enumerate(m.graph.initializer):
        if t.name == "gain":
            m.graph.initializer[i].CopyFrom(numpy_helper.from_array(np.array([7.0], np.float32), "gain"))
    dst.write_bytes(m.SerializeToString())
    return dst


@pytest.fixture(scope="module")
def toy(tmp_path_factory, make_classifier):
    return make_classifier(tmp_path_factory.mktemp("m") / "toy.onnx", shape=(3, 16, 16))


# -- item 1: the two identities ----------------------------------------------------------
def test_scoring_identity_ignores_metadata_but_not_weights(tmp_path, toy, make_classifier):
    base = scoring_identity(toy)
    assert base.startswith("sha256:")
    more = with_metadata(toy, tmp_path / "more.onnx", **{"deepmine.extra": '{"selection": 1}', "x": "y"})
    assert more.read_bytes() != toy.read_bytes()
    assert scoring_identity(more) == base
    other = make_classifier(tmp_path / "other.onnx", shape=(3, 16, 16), gain=19.0)
    assert scoring_identity(other) != base
    (tmp_path / "junk.onnx").write_bytes(b"\xff" * 10)
    with pytest.raises(InputError, match="junk.onnx: not a well-formed ONNX file"):
        scoring_identity(tmp_path / "junk.onnx")


def test_input_identity_whole_and_sampled(tmp_path):
    a = tmp_path / "a.bin"
    a.write_bytes(b"x" * 1000)
    ida = input_identity(a)
    assert ida["size"] == 1000 and ida["fingerprint"].startswith("sha256:")
    os.utime(a, ns=(1, 1))
    assert same_input(ida, input_identity(a))  # same bytes, new time: the same small input
    a.write_bytes(b"y" + b"x" * 999)
    assert not same_input(ida, input_identity(a))
    assert changed_inputs([ida], [a]) == [str(a)]
    big = tmp_path / "big.bin"
    with open(big, "wb") as fh:
        fh.truncate(WHOLE_FILE_LIMIT + 4096)
    idb = input_identity(big)
    assert idb["fingerprint"].startswith("sampled:")
    with open(big, "r+b") as fh:  # a change in a sampled block (the middle)
        fh.seek((WHOLE_FILE_LIMIT + 4096) // 2)
        fh.write(b"z")
    assert not same_input(idb, input_identity(big))


# -- item 2: resume refuses changed inputs or model --------------------------------------
def _interrupted_scan(tmp_path, model, x, shards_done=3):
    """The state a kill -9 leaves: plan.json and some completed shards of ``s.npy``."""
    from deepmine.inference.inputs.readers import resolve_inputs
    from deepmine.inference.model import get_model
    from deepmine.inference.scan.scanner import _plan_record, parts_dir
    from deepmine.inference.scan.shards import plan_shards, run_shard
    from deepmine.inference.scan.workdir import open_workdir

    np.save(tmp_path / "s.npy", x)
    m = get_model(model, "cpu", 1)
    specs, _ = resolve_inputs([str(tmp_path / "s.npy")], m.metadata)
    shards = plan_shards(specs, 40)
    folder = parts_dir(tmp_path / "cat.ecsv")
    open_workdir(folder, _plan_record(m, specs, 40, len(shards)), resume=False)
    for s in shards[:shards_done]:
        run_shard(str(model), s, folder, batch_size=8, threads=1, device="cpu")
    return folder


def test_resume_refuses_replaced_input_of_same_shape(tmp_path, toy, cli, blobs):
    x = blobs(200, shape=(3, 16, 16), seed=1)
    folder = _interrupted_scan(tmp_path, toy, x)
    np.save(tmp_path / "s.npy", blobs(200, shape=(3, 16, 16), seed=2))  # other content, same shape
    before = digests(tmp_path)
    rc, out, err = cli("scan", tmp_path / "s.npy", "--model", toy, "--out", tmp_path / "cat.ecsv", "--format", "ecsv",
                       "--batch-size", 8, "--shard-size", 40, "--threads", 1, "--resume")
    assert rc == 2
    line = one_line(err)
    assert "s.npy: changed since the interrupted scan" in line
    assert digests(tmp_path) == before and not (tmp_path / "cat.ecsv").exists()
    # the same content resumes and gives exactly a fresh scan's catalogue
    np.save(tmp_path / "s.npy", x)
    rc, _, err = cli("scan", tmp_path / "s.npy", "--model", toy, "--out", tmp_path / "cat.ecsv", "--format", "ecsv",
                     "--batch-size", 8, "--shard-size", 40, "--threads", 1, "--resume")
    assert rc == 0, err and "resumed 3 of 5 shards" in err
    assert not folder.exists()
    rc, _, err = cli("scan", tmp_path / "s.npy", "--model", toy, "--out", tmp_path / "fresh.ecsv", "--format", "ecsv",
                     "--batch-size", 8, "--threads", 1)
    assert rc == 0, err
    np.testing.assert_array_equal(read_catalog(tmp_path / "cat.ecsv")["logit"],
                                  read_catalog(tmp_path / "fresh.ecsv")["logit"])


def test_resume_refuses_another_model(tmp_path, toy, cli, make_classifier, blobs):
    _interrupted_scan(tmp_path, toy, blobs(200, shape=(3, 16, 16), seed=1))
    other = make_classifier(tmp_path / "other.onnx", shape=(3, 16, 16), gain=5.0)
    before = digests(tmp_path)
    rc, _, err = cli("scan", tmp_path / "s.npy", "--model", other, "--out", tmp_path / "cat.ecsv", "--format",
                     "ecsv", "--batch-size", 8, "--shard-size", 40, "--resume")
    assert rc == 2 and "other.onnx: cannot resume" in one_line(err) and "graph or weights differ" in err
    assert digests(tmp_path) == before
    # only metadata added: the same scoring identity, so the scan resumes
    more = with_metadata(toy, tmp_path / "more.onnx", note="selection summary")
    rc, _, err = cli("scan", tmp_path / "s.npy", "--model", more, "--out", tmp_path / "cat.ecsv", "--format",
                     "ecsv", "--batch-size", 8, "--shard-size", 40, "--resume")
    assert rc == 0, err


# -- item 3: pools and catalogues carry the scoring identity ------------------------------
def test_catalogue_and_pool_carry_scoring_identity_and_reference_is_checked(tmp_path, toy, cli, make_classifier, blobs):
    np.save(tmp_path / "n.npy", blobs(120, shape=(3, 16, 16), seed=3))
    np.save(tmp_path / "t.npy", blobs(30, shape=(3, 16, 16), seed=4))
    rc, _, err = cli("scan", tmp_path / "n.npy", "--model", toy, "--out", tmp_path / "n.fits", "--format",
                     "fits,ecsv", "--batch-size", 8)
    assert rc == 0, err
    sid = scoring_identity(toy)
    assert read_catalog(tmp_path / "n.fits").meta["DM_SCID"] == sid
    assert read_catalog(tmp_path / "n.ecsv").meta["DM_SCID"] == sid
    rc, _, err = cli("rank", tmp_path / "n.fits", "--tracers", tmp_path / "n.fits", "--save-pool",
                     tmp_path / "pool.fits")
    assert rc == 0, err
    pool = ReferencePool.load(tmp_path / "pool.fits")
    assert pool.provenance["scoring_id"] == sid
    from astropy.io import fits

    assert fits.getheader(tmp_path / "pool.fits")["DM_SCID"] == sid
    # the pool is refused by another model, naming both
    other = make_classifier(tmp_path / "other.onnx", shape=(3, 16, 16), gain=5.0)
    before = digests(tmp_path)
    rc, _, err = cli("scan", tmp_path / "t.npy", "--model", other, "--out", tmp_path / "t.ecsv", "--format", "ecsv",
                     "--reference", tmp_path / "pool.fits")
    line = one_line(err)
    assert rc == 2 and "the pool was scored by another model" in line and sid in line and "other.onnx" in line
    assert digests(tmp_path) == before
    # accepted by its own model
    rc, _, err = cli("scan", tmp_path / "t.npy", "--model", toy, "--out", tmp_path / "t.ecsv", "--format", "ecsv",
                     "--reference", tmp_path / "pool.fits")
    assert rc == 0, err
    assert read_catalog(tmp_path / "t.ecsv").meta["DM_REFID"] == sid
    # a pool from bare scores: accepted, with a warning recorded in the catalogue
    np.save(tmp_path / "bare.npy", np.linspace(-1, 1, 500))
    rc, _, err = cli("rank", tmp_path / "bare.npy", "--tracers", tmp_path / "bare.npy", "--save-pool",
                     tmp_path / "bare.fits")
    assert rc == 0, err
    rc, _, err = cli("scan", tmp_path / "t.npy", "--model", toy, "--out", tmp_path / "u.ecsv", "--format", "ecsv",
                     "--reference", tmp_path / "bare.fits")
    assert rc == 0, err
    assert "warning: --reference: the pool records no model" in err
    assert any("records no model" in w for w in read_catalog(tmp_path / "u.ecsv").meta["DM_WARN"])


def test_modified_model_refused_unless_allowed(tmp_path, toy, cli, blobs):
    good = stamped(toy, tmp_path / "good.onnx")
    bad = tampered(good, tmp_path / "bad.onnx")
    np.save(tmp_path / "a.npy", blobs(20, shape=(3, 16, 16), seed=5))
    rc, _, err = cli("scan", tmp_path / "a.npy", "--model", good, "--out", tmp_path / "g.ecsv", "--format", "ecsv")
    assert rc == 0, err
    before = digests(tmp_path)
    rc, _, err = cli("scan", tmp_path / "a.npy", "--model", bad, "--out", tmp_path / "b.ecsv", "--format", "ecsv")
    line = one_line(err)
    assert rc == 2 and "bad.onnx: content hash does not verify" in line and "--allow-modified-model" in line
    assert digests(tmp_path) == before
    rc, _, err = cli("scan", tmp_path / "a.npy", "--model", bad, "--out", tmp_path / "b.ecsv", "--format", "ecsv",
                     "--allow-modified-model")
    assert rc == 0, err
    assert any("content hash does not verify" in w for w in read_catalog(tmp_path / "b.ecsv").meta["DM_WARN"])


# -- item 4: never write over an input; existing outputs only with --overwrite ------------
@pytest.mark.parametrize("case", ["catalog-sidecar", "cube", "existing", "mosaic-is-input"])
def test_scan_never_writes_over_inputs_or_existing_outputs(tmp_path, toy, cli, case, blobs):
    np.save(tmp_path / "a.npy", blobs(20, shape=(3, 16, 16), seed=6))
    (tmp_path / "targets.ecsv").write_text("# user's own table\n")
    from astropy.io import fits

    fits.PrimaryHDU(blobs(4, shape=(3, 16, 16), seed=6).astype(np.float32)).writeto(tmp_path / "cube.fits")
    (tmp_path / "old.ecsv").write_text("# an earlier catalogue\n")
    args = {
        "catalog-sidecar": ["--out", tmp_path / "targets.fits", "--reference", tmp_path / "targets.ecsv"],
        "cube": ["--out", tmp_path / "cube.fits"],
        "existing": ["--out", tmp_path / "old.ecsv", "--format", "ecsv"],
        "mosaic-is-input": ["--out", tmp_path / "new.ecsv", "--mosaic", tmp_path / "a.npy"],
    }[case]
    before = digests(tmp_path)
    first = tmp_path / ("cube.fits" if case == "cube" else "a.npy")
    rc, _, err = cli("scan", first, "--model", toy, *args)
    line = one_line(err)
    assert rc == 2
    if case == "existing":
        assert "old.ecsv: already exists; pass --overwrite" in line
    else:
        assert "would write over the input" in line
    assert digests(tmp_path) == before
    if case == "existing":
        rc, _, err = cli("scan", tmp_path / "a.npy", "--model", toy, *args, "--overwrite")
        assert rc == 0, err and len(read_catalog(tmp_path / "old.ecsv")) == 20


# -- selection: outputs, models, sizes --------------------------------------------------
HUGE_GRID = """
[axes.theta_e]
range = [0.3, 6.0]
bins = 100000
[axes.m_arc]
range = [18, 27]
bins = 100000
"""


def test_selection_grid_too_big_is_refused_before_allocating(tmp_path, cli):
    (tmp_path / "huge.toml").write_text(HUGE_GRID)
    before = digests(tmp_path)
    rc, out, err = cli("selection", "--out", tmp_path / "sel.fits", "--grid", tmp_path / "huge.toml", "--dry-run")
    line = one_line(err)
    assert rc == 2 and "100000 × 100000 = 10,000,000,000 cells, over the limit" in line
    assert digests(tmp_path) == before


def test_selection_refuses_bad_plot_input_outputs_and_modified_model(tmp_path, toy, cli):
    (tmp_path / "g.toml").write_text('[axes.theta_e]\nrange = [0.3, 6.0]\nbins = 2\n')
    good = stamped(toy, tmp_path / "good.onnx")
    bad = tampered(good, tmp_path / "bad.onnx")
    (tmp_path / "sel.ecsv").write_text("# an earlier table\n")
    base = ("selection", "--grid", tmp_path / "g.toml", "--per-cell", 1, "--pool-size", 10)
    cases = [
        (("--model", good, "--out", tmp_path / "s.fits", "--plot", tmp_path / "c.xyz"), "unknown figure format '.xyz'"),
        (("--model", good, "--out", tmp_path / "s.fits", "--save-pool", tmp_path / "g.toml"),
         "would write over the input"),
        (("--model", good, "--out", tmp_path / "s.fits", "--save-pool", good), "would write over the input"),
        (("--model", good, "--out", tmp_path / "sel.fits"), "sel.ecsv: already exists; pass --overwrite"),
        (("--model", bad, "--out", tmp_path / "s.fits"), "bad.onnx: content hash does not verify"),
    ]
    before = digests(tmp_path)
    for args, message in cases:
        rc, _, err = cli(*base, *args)
        assert rc == 2 and message in one_line(err), (args, err)
        assert digests(tmp_path) == before


def test_rank_plot_suffix_and_models_of_tracers(tmp_path, cli):
    np.save(tmp_path / "n.npy", np.linspace(-2, 2, 300))
    np.save(tmp_path / "t.npy", np.linspace(0, 3, 30))
    before = digests(tmp_path)
    rc, _, err = cli("rank", tmp_path / "n.npy", "-t", tmp_path / "t.npy", "--plot", tmp_path / "x.xyz")
    assert rc == 2 and "x.xyz: --plot: unknown figure format '.xyz'" in one_line(err)
    rc, _, err = cli("rank", tmp_path / "n.npy", "-t", tmp_path / "t.npy", "--save-pool", tmp_path / "t.npy")
    assert rc == 2 and "would write over the input" in one_line(err)
    assert digests(tmp_path) == before


# -- item 6: crashes become one line, or work ---------------------------------------------
def test_unicode_input_path_scans_and_round_trips(tmp_path, toy, cli, blobs):
    src = tmp_path / "cut outs ✓.npy"
    np.save(src, blobs(12, shape=(3, 16, 16), seed=9))
    rc, _, err = cli("scan", src, "--model", toy, "--out", tmp_path / "ü.fits", "--top", 3)
    assert rc == 0, err
    for suffix in (".fits", ".ecsv", ".parquet"):
        t = read_catalog(tmp_path / f"ü{suffix}")
        assert set(t["source"]) == {str(src)} and t.meta["DM_INPUT"][0]["name"] == str(src)
    assert not (tmp_path / "ü.parts").exists()


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_top_nan_is_one_line(tmp_path, toy, cli, value, blobs):
    np.save(tmp_path / "a.npy", blobs(4, shape=(3, 16, 16)))
    before = digests(tmp_path)
    rc, _, err = cli("scan", tmp_path / "a.npy", "--model", toy, "--out", tmp_path / "c.ecsv", "--top", value)
    assert rc == 2 and f"--top: expected a fraction in (0, 1) or a count, got {value!r}" in one_line(err)
    assert digests(tmp_path) == before


def test_sexagesimal_catalogue_positions_and_catalogue_never_overwritten(tmp_path, toy, cli, reader_meta, read_all, survey_images):
    from astropy.coordinates import SkyCoord
    from astropy.table import Table

    from deepmine.inference.inputs.readers import resolve_inputs

    _, paths, w = survey_images(tmp_path)
    xs, ys = np.array([30.2, 60.4, 99.0]), np.array([40.3, 20.6, 79.0])
    ra, dec = w.all_pix2world(xs, ys, 0)
    c = SkyCoord(ra, dec, unit="deg")
    Table({"ra": ra, "dec": dec}).write(tmp_path / "deg.ecsv")
    Table({"ra": c.ra.to_string(unit="hourangle", sep=":", precision=4),
           "dec": c.dec.to_string(sep=":", precision=3, alwayssign=True)}).write(tmp_path / "targets.ecsv")
    Table({"ra": [f"{v:.8f}" for v in ra], "dec": [f"{v:.8f}" for v in dec]}).write(tmp_path / "degstr.ecsv")
    images = [paths[b] for b in "irg"]
    ref = read_all(resolve_inputs(images, reader_meta, catalog=tmp_path / "deg.ecsv")[0][0])
    for name in ("targets.ecsv", "degstr.ecsv"):
        b = read_all(resolve_inputs(images, reader_meta, catalog=tmp_path / name)[0][0])
        np.testing.assert_allclose(b.ra, ref.ra, atol=1e-5)
        np.testing.assert_allclose(b.x, xs, atol=0.01)
    Table({"ra": ["10:00:00", "garbage"], "dec": ["+02:00:00", "+02:00:00"]}).write(tmp_path / "bad.ecsv")
    with pytest.raises(InputError, match=r"bad.ecsv: row 1: cannot read RA/Dec 'garbage'"):
        read_all(resolve_inputs(images, reader_meta, catalog=tmp_path / "bad.ecsv")[0][0])
    # the case: --out targets.fits would have replaced targets.ecsv (its ECSV side output)
    before = digests(tmp_path)
    rc, _, err = cli("scan", *images, "--catalog", tmp_path / "targets.ecsv", "--model", toy,
                     "--out", tmp_path / "targets.fits")
    assert rc == 2 and "targets.ecsv: would write over the input" in one_line(err)
    assert digests(tmp_path) == before
    rc, _, err = cli("scan", *images, "--catalog", tmp_path / "targets.ecsv", "--model", toy,
                     "--out", tmp_path / "found.fits")
    assert rc == 0, err
    np.testing.assert_allclose(read_catalog(tmp_path / "found.fits")["x"], xs, atol=0.01)


def test_craft_refuses_bad_seed_huge_n_and_existing_or_input_outputs(tmp_path, cli):
    np.save(tmp_path / "old.npy", np.zeros(3))
    (tmp_path / "lenses.ecsv").write_text("# my lens parameters\n")
    cases = [
        (("--n", 2, "--seed", -1, "--out", tmp_path / "a.npy"), "--seed: must be a whole number >= 0, got -1"),
        (("--n", 2_000_000_000, "--out", tmp_path / "a.npy"), "--n 2,000,000,000: the stack needs"),
        (("--n", 2, "--out", tmp_path / "old.npy"), "old.npy: already exists; pass --overwrite"),
        # the parameter sidecar of --out lenses.npy is lenses.ecsv, the input table
        (("--params", tmp_path / "lenses.ecsv", "--out", tmp_path / "lenses.npy"), "would write over the input"),
        (("--n", 2, "--out", tmp_path / "b.npy", "--preview", tmp_path / "b.ecsv"), "is written twice"),
    ]
    before = digests(tmp_path)
    for args, message in cases:
        rc, _, err = cli("craft", *args)
        assert rc == 2 and message in one_line(err), (args, err)
        assert digests(tmp_path) == before
    rc, _, err = cli("craft", "--n", 2, "--size", 16, "--out", tmp_path / "old.npy", "--overwrite")
    assert rc == 0, err and np.load(tmp_path / "old.npy").shape == (2, 3, 16, 16)


def test_bench_refuses_a_modified_model_and_generate_existing_outputs(tmp_path, toy, cli):
    bad = tampered(stamped(toy, tmp_path / "good.onnx"), tmp_path / "bad.onnx")
    rc, _, err = cli("bench", bad, "--n", 8, "--repeats", 1, "--device", "cpu")
    assert rc == 2 and "bad.onnx: content hash does not verify" in one_line(err)
    rc, out, err = cli("bench", bad, "--n", 8, "--repeats", 1, "--device", "cpu", "--json", "--allow-modified-model")
    assert rc == 0, err and "content hash does not verify" in out
    np.save(tmp_path / "g.npy", np.zeros(2))
    before = digests(tmp_path)
    rc, _, err = cli("generate", toy, "--n", 2, "--out", tmp_path / "g.npy")
    assert rc == 2 and "g.npy: already exists; pass --overwrite" in one_line(err)
    assert digests(tmp_path) == before
