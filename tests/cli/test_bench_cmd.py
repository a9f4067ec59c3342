"""``deepmine bench``: scan-rate figures of an exported model (torch-free)."""
import json

import pytest


def test_bench_reports_both_rates(cli, tmp_path, make_classifier):
    model = make_classifier(tmp_path / "toy.onnx", conv_channels=4)
    rc, out, err = cli("bench", model, "--n", "300", "--batch-size", "64", "--threads", "1", "--repeats", "2",
                       "--device", "cpu", "--json")
    assert rc == 0, err
    r = json.loads(out)
    assert r["provider"] == "CPUExecutionProvider"
    assert r["n"] == 300 and r["batch_size"] == 64 and r["threads"] == 1
    assert r["model_only_per_s"] > 0 and r["end_to_end_per_s"] > 0
    # preprocessing can only add work
    assert r["end_to_end_over_model_only"] == pytest.approx(r["end_to_end_per_s"] / r["model_only_per_s"])


def test_bench_table_and_errors(cli, tmp_path, make_classifier):
    model = make_classifier(tmp_path / "toy.onnx")
    rc, out, _ = cli("bench", model, "--n", "64", "--repeats", "1", "--device", "cpu")
    assert rc == 0 and "scan rate" in out and "toy.onnx" in out
    rc, _, err = cli("bench", tmp_path / "missing.onnx")
    assert rc != 0 and "missing.onnx" in err and "not found" in err
    (tmp_path / "junk.onnx").write_bytes(b"\x00garbage" * 10)
    rc, _, err = cli("bench", tmp_path / "junk.onnx")
    assert rc != 0 and "junk.onnx" in err and len(err.strip().splitlines()) == 1
    rc, _, err = cli("bench", model, "--device", "tpu")
    assert rc != 0 and "--device" in err
