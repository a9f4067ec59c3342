"""The one resume mechanism (inference/scan/workdir.py), used by scan shards and selection parts."""
import json

import pytest

from deepmine.inference.errors import InputError
from deepmine.inference.scan.workdir import clear_parts, has_parts, mark_done, open_workdir, part_done


def _plan(**kw):
    plan = {"model_scoring_id": "sha256:m1", "model": "m.onnx", "shard_size": 64,
            "input_identity": [{"path": "in.npy", "size": 10, "sha256": "a"}]}
    plan.update(kw)
    return plan


def _part(folder, k, key="k"):
    p = folder / f"part-{k:06d}.npz"
    p.write_bytes(b"x")
    mark_done(p, key)
    return p


def test_a_part_is_done_only_with_its_file_and_a_matching_marker(tmp_path):
    p = tmp_path / "part-000001.npz"
    assert not part_done(p, "k")
    p.write_bytes(b"x")
    assert not part_done(p, "k")  # killed between the part and its marker: redone
    mark_done(p, "k", rows=3)
    assert part_done(p, "k") and not part_done(p, "other")
    assert json.loads((tmp_path / "part-000001.done").read_text()) == {"key": "k", "rows": 3}
    (tmp_path / "part-000001.done").write_text("{not json")
    assert not part_done(p, "k")


def test_open_workdir_protects_resumes_or_starts_over(tmp_path):
    w = tmp_path / "cat.parts"
    assert open_workdir(w, _plan(), resume=False, what="scan", unit="shard") == 0
    _part(w, 0), _part(w, 1)
    (w / "pool.fits").write_bytes(b"pool")  # not a part: never touched
    with pytest.raises(InputError, match=r"cat\.parts: an interrupted scan left 2 completed shard\(s\) here; pass "
                                         r"--resume .* or --overwrite"):
        open_workdir(w, _plan(), resume=False, what="scan", unit="shard")
    assert has_parts(w) == 2
    assert open_workdir(w, _plan(), resume=True) == 2
    with pytest.raises(InputError, match=r"other\.onnx: cannot resume .*graph or weights differ"):
        open_workdir(w, _plan(model_scoring_id="sha256:m2", model="other.onnx"), resume=True)
    with pytest.raises(InputError, match=r"in\.npy: changed since the interrupted run"):
        open_workdir(w, _plan(input_identity=[{"path": "in.npy", "size": 11, "sha256": "b"}]), resume=True)
    with pytest.raises(InputError, match=r"different settings \(shard_size\)"):
        open_workdir(w, _plan(shard_size=128), resume=True)
    with pytest.raises(InputError, match=r"different settings \(inputs\)"):
        open_workdir(w, _plan(input_identity=[]), resume=True)
    # --overwrite without --resume: the parts go, the pool stays, a new plan is written
    assert open_workdir(w, _plan(shard_size=128), resume=False, overwrite=True) == 0
    assert has_parts(w) == 0 and (w / "pool.fits").read_bytes() == b"pool"
    assert json.loads((w / "plan.json").read_text())["shard_size"] == 128


def test_clear_parts_keeps_other_files_unless_told(tmp_path):
    w = tmp_path / "w"
    open_workdir(w, _plan(), resume=False)
    _part(w, 0)
    (w / "pool.fits").write_bytes(b"pool")
    clear_parts(w)
    assert sorted(p.name for p in w.iterdir()) == ["pool.fits"]
    clear_parts(w, keep_others=False)
    assert not w.exists()
    open_workdir(w, _plan(), resume=False)
    _part(w, 0)
    clear_parts(w)
    assert not w.exists()  # nothing else was there
