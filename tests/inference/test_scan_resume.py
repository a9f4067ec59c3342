"""Sharded, resumable scans: kill -9 mid-scan, --resume, nothing lost, nothing duplicated."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from deepmine.inference.catalog.io import read_catalog
from deepmine.inference.errors import InputError
from deepmine.inference.scan.scanner import parts_dir, scan
from deepmine.inference.scan.shards import merge_parts, plan_shards, run_shard, shard_done


def test_shards_reference_inputs_and_cover_every_object_once(tmp_path):
    from deepmine.inference.inputs.readers import resolve_inputs
    from deepmine.inference.metadata import ModelMetadata

    meta = ModelMetadata(architecture="toy", input_shape=[3, 16, 16])
    np.save(tmp_path / "a.npy", np.zeros((10, 3, 16, 16), np.uint8))
    np.save(tmp_path / "b.npy", np.zeros((7, 3, 16, 16), np.uint8))
    specs, _ = resolve_inputs([tmp_path / "a.npy", tmp_path / "b.npy"], meta)
    shards = plan_shards(specs, 4)
    assert [(s.spec_index, s.start, s.stop, s.first_id) for s in shards] == [
        (0, 0, 4, 0), (0, 4, 8, 4), (0, 8, 10, 8), (1, 0, 4, 10), (1, 4, 7, 14)]
    import pickle

    assert len(pickle.dumps(shards[0])) < 2000  # paths and ranges, never pixels
    with pytest.raises(InputError, match="--shard-size: must be at least 1"):
        plan_shards(specs, 0)


def test_run_shard_writes_part_and_marker_and_merge_refuses_duplicates(tmp_path, make_classifier, blobs):
    from deepmine.inference.inputs.readers import resolve_inputs
    from deepmine.inference.model import get_model

    model_path = make_classifier(tmp_path / "m.onnx", shape=(3, 16, 16))
    np.save(tmp_path / "a.npy", blobs(30, shape=(3, 16, 16)))
    specs, _ = resolve_inputs([tmp_path / "a.npy"], get_model(model_path).metadata)
    shards = plan_shards(specs, 12)
    parts = [run_shard(str(model_path), s, tmp_path / "parts", batch_size=8, threads=1, device="cpu") for s in shards]
    assert all(shard_done(s, tmp_path / "parts") for s in shards)
    t = merge_parts(parts)
    assert t["id"].tolist() == list(range(30))
    mtime = parts[0].stat().st_mtime_ns
    assert run_shard(str(model_path), shards[0], tmp_path / "parts", batch_size=8) == parts[0]
    assert parts[0].stat().st_mtime_ns == mtime  # a completed shard is not redone
    with pytest.raises(InputError, match="object id 0 appears in more than one part file"):
        merge_parts([parts[0], parts[0]])


def test_kill_9_mid_scan_then_resume_loses_and_duplicates_nothing(tmp_path, make_classifier, blobs):
    model_path = make_classifier(tmp_path / "slow.onnx", shape=(3, 32, 32), conv_channels=48)
    x = blobs(2400, shape=(3, 32, 32), seed=11)
    np.save(tmp_path / "in.npy", x)
    out = tmp_path / "cat.ecsv"
    code = (
        "from deepmine.inference.cli.app import main; import sys; "
        f"sys.exit(main(['scan', {str(tmp_path / 'in.npy')!r}, '--model', {str(model_path)!r}, '--out', {str(out)!r},"
        " '--format', 'ecsv', '--batch-size', '32', '--shard-size', '64', '--threads', '1']))"
    )
    env = dict(os.environ, DEEPMINE_NO_PROGRESS="1")
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    parts = parts_dir(out)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(parts.glob("part-*.done"))) < 5 and proc.poll() is None:
        time.sleep(0.01)
    assert proc.poll() is None, "the scan finished before it could be interrupted: " + proc.stderr.read().decode()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list(parts.glob("part-*.done")))
    assert 5 <= done < 2400 // 64 + 1
    assert not out.exists()  # the catalogue only appears, whole, at the end
    # without --resume the interrupted work is protected
    with pytest.raises(InputError, match="an interrupted scan left .* completed shard\\(s\\) here; pass --resume"):
        scan(tmp_path / "in.npy", model_path, out, formats=["ecsv"], batch_size=32, shard_size=64, progress=False)
    # a different shard size cannot resume this folder
    with pytest.raises(InputError, match="cannot resume"):
        scan(tmp_path / "in.npy", model_path, out, formats=["ecsv"], batch_size=32, shard_size=128, resume=True,
             progress=False)
    res = scan(tmp_path / "in.npy", model_path, out, formats=["ecsv"], batch_size=32, shard_size=64, resume=True,
               progress=False)
    assert res.n_resumed == done and res.n_shards == 38
    t = read_catalog(out)
    assert t["id"].tolist() == list(range(2400)) and t["index"].tolist() == list(range(2400))
    fresh = scan(tmp_path / "in.npy", model_path, tmp_path / "fresh.ecsv", formats=["ecsv"], batch_size=32,
                 progress=False)
    np.testing.assert_array_equal(t["logit"], read_catalog(fresh.catalog)["logit"])
    assert not parts.exists()


def test_directory_shards_carry_only_their_own_files(tmp_path):
    from astropy.io import fits

    from deepmine.inference.inputs.readers import resolve_inputs
    from deepmine.inference.metadata import ModelMetadata

    meta = ModelMetadata(architecture="toy", input_shape=[3, 16, 16])
    d = tmp_path / "d"
    d.mkdir()
    for i in range(7):
        fits.PrimaryHDU(np.full((3, 16, 16), i, np.float32)).writeto(d / f"c{i}.fits")
    np.save(tmp_path / "a.npy", np.zeros((2, 3, 16, 16), np.uint8))
    specs, _ = resolve_inputs([tmp_path / "a.npy", d], meta)
    shards = plan_shards(specs, 3)
    assert [(s.first_id, s.n, len(s.spec.paths)) for s in shards[1:]] == [(2, 3, 3), (5, 3, 3), (8, 1, 1)]
    assert shards[2].spec.paths[0].endswith("c3.fits") and shards[2].spec.options["first"] == 3
