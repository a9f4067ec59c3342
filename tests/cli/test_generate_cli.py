"""``deepmine generate`` and :mod:`deepmine.inference.generate` — torch-free.

The generator here is a tiny ONNX graph built with ``onnx.helper`` (latent → MatMul → Sigmoid
→ Reshape) carrying deepmine generator metadata, so these tests need neither torch nor a
trained GAN; ``test_gan_train.py`` covers a real exported LensGenerator.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from deepmine.inference.errors import InputError  # noqa: E402
from deepmine.inference.generate import (  # noqa: E402
    diversity,
    load_generator,
    sidecar_path,
    to_uint8,
    write_generated,
)
from deepmine.inference.metadata import ModelMetadata  # noqa: E402


def make_generator(path, latent=8, shape=(3, 16, 16), fixed_batch=None, task="generator"):
    from onnx import TensorProto, helper, numpy_helper

    c, h, w = shape
    rng = np.random.default_rng(1)
    weights = (rng.standard_normal((latent, c * h * w)) * 0.7).astype(np.float32)
    batch = fixed_batch or "N"
    nodes = [
        helper.make_node("MatMul", ["latent", "W"], ["m"]),
        helper.make_node("Sigmoid", ["m"], ["s"]),
        helper.make_node("Reshape", ["s", "shape"], ["image"]),
    ]
    graph = helper.make_graph(
        nodes, "toy_generator",
        [helper.make_tensor_value_info("latent", TensorProto.FLOAT, [batch, latent])],
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, c, h, w])],
        [numpy_helper.from_array(weights, "W"), numpy_helper.from_array(np.array([-1, c, h, w], np.int64), "shape")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if task == "generator":
        meta = ModelMetadata(architecture="lensgenerator", task="generator", input_shape=[latent])
    else:
        meta = ModelMetadata(architecture="eznet", task="classifier", input_shape=list(shape))
    helper.set_model_props(model, meta.to_props())
    onnx.save(model, str(path))
    return path, weights


def reference_images(weights, latent, shape):
    return (1.0 / (1.0 + np.exp(-(latent.astype(np.float64) @ weights)))).reshape((len(latent),) + shape)


@pytest.fixture(scope="module")
def gen_path(tmp_path_factory):
    path, _ = make_generator(tmp_path_factory.mktemp("gen") / "toy.onnx")
    return path


def test_sample_is_the_graph_output_in_uint8(tmp_path):
    path, weights = make_generator(tmp_path / "g.onnx")
    gen = load_generator(path)
    assert gen.latent_dim == 8 and gen.image_shape == (3, 16, 16)
    images = gen.sample(37, seed=5, batch_size=10)
    assert images.dtype == np.uint8 and images.shape == (37, 3, 16, 16)
    latent = np.random.default_rng(5).standard_normal((37, 8), dtype=np.float32)
    expected = np.rint(reference_images(weights, latent, (3, 16, 16)) * 255)
    assert np.abs(images.astype(int) - expected).max() <= 1  # float32 graph vs float64 reference


def test_samples_depend_on_seed_and_n_only(gen_path):
    gen = load_generator(gen_path)
    a = gen.sample(50, seed=3, batch_size=7)
    b = gen.sample(50, seed=3, batch_size=64)
    c = gen.sample(20, seed=3, batch_size=3)
    assert np.array_equal(a, b)
    assert np.array_equal(a[:20], c)
    assert not np.array_equal(a, gen.sample(50, seed=4))


def test_fixed_batch_graph_pads_the_tail(tmp_path):
    path, _ = make_generator(tmp_path / "fixed.onnx", fixed_batch=16)
    gen = load_generator(path)
    assert gen.fixed_batch == 16
    assert np.array_equal(gen.sample(21, seed=1), load_generator(make_generator(tmp_path / "dyn.onnx")[0]).sample(21, seed=1))


def test_to_uint8_rounds_clips_and_zeroes_nan():
    x = np.array([-0.2, 0.0, 0.5, 1 / 255 * 0.49, 1.0, 1.7, np.nan], np.float32)
    assert to_uint8(x).tolist() == [0, 0, 128, 0, 255, 255, 0]


def test_written_npy_loads_in_the_scanner(tmp_path, gen_path):
    from deepmine.inference.inputs.readers import read_block, resolve_inputs

    out = tmp_path / "lenses.npy"
    prov = write_generated(out, load_generator(gen_path), 30, seed=2, batch_size=8)
    stored = np.load(out)
    assert stored.dtype == np.uint8 and stored.shape == (30, 3, 16, 16)
    assert np.array_equal(stored, load_generator(gen_path).sample(30, seed=2))
    side = json.loads(sidecar_path(out).read_text())
    assert side == json.loads(json.dumps(prov))
    assert side["seed"] == 2 and side["n"] == 30 and side["model_sha256"].startswith("sha256:")
    assert side["bands"] == ["i", "r", "g"]
    meta = ModelMetadata(architecture="toy", input_shape=[3, 16, 16])
    specs, skipped = resolve_inputs([out], meta)
    assert not skipped and specs[0].n == 30
    block = read_block(specs[0], 0, 30, meta)
    assert np.array_equal(np.asarray(block.images), stored)


def test_generated_file_scans_end_to_end(tmp_path, gen_path, cli, make_classifier):
    model = make_classifier(tmp_path / "clf.onnx", shape=(3, 16, 16))
    out = tmp_path / "gan.npy"
    rc, _, err = cli("generate", gen_path, "--n", 12, "--out", out, "--seed", 1)
    assert rc == 0, err
    from deepmine.inference.model import load_model

    logit, prob = load_model(model, device="cpu").predict(np.load(out))
    assert logit.shape == (12,) and np.isfinite(logit).all() and ((prob >= 0) & (prob <= 1)).all()


def test_fits_output_keeps_provenance(tmp_path, gen_path):
    from astropy.io import fits

    out = tmp_path / "lenses.fits"
    write_generated(out, load_generator(gen_path), 5, seed=9)
    with fits.open(out) as hdul:
        assert hdul[0].data.dtype == np.uint8 and hdul[0].data.shape == (5, 3, 16, 16)
        assert hdul[0].header["DMSEED"] == 9 and hdul[0].header["DMBANDS"] == "i,r,g"
    assert np.array_equal(fits.getdata(out), load_generator(gen_path).sample(5, seed=9))


def test_cli_writes_file_and_json(tmp_path, gen_path, cli):
    out = tmp_path / "g.npy"
    rc, stdout, err = cli("generate", gen_path, "--n", 9, "--out", out, "--seed", 4, "--batch-size", 2, "--json")
    assert rc == 0, err
    prov = json.loads(stdout)
    assert prov["n"] == 9 and prov["shape"] == [9, 3, 16, 16] and prov["seed"] == 4
    assert np.load(out).shape == (9, 3, 16, 16)


def test_interrupted_generation_leaves_nothing(tmp_path, gen_path):
    out = tmp_path / "half.npy"
    calls = []

    def boom(k):
        calls.append(k)
        if len(calls) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_generated(out, load_generator(gen_path), 40, batch_size=10, progress=boom)
    assert not out.exists() and not sidecar_path(out).exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "args, message",
    [
        (["--n", "0"], "--n: the number of cutouts must be at least 1"),
        (["--n", "-3"], "--n: the number of cutouts must be at least 1"),
        (["--n", "4", "--batch-size", "0"], "--batch-size"),
        (["--n", "4", "--seed", "-1"], "--seed"),
    ],
)
def test_cli_rejects_bad_numbers(tmp_path, gen_path, cli, args, message):
    rc, _, err = cli("generate", gen_path, "--out", tmp_path / "x.npy", *args)
    assert rc == 2 and message in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.npy").exists()


def test_cli_rejects_classifier_model(tmp_path, cli):
    path, _ = make_generator(tmp_path / "clf.onnx", task="classifier")
    rc, _, err = cli("generate", path, "--n", 3, "--out", tmp_path / "x.npy")
    assert rc == 2 and "not a generator model" in err and "classifier" in err


def test_cli_rejects_missing_and_non_onnx_models(tmp_path, cli):
    rc, _, err = cli("generate", tmp_path / "none.onnx", "--n", 3, "--out", tmp_path / "x.npy")
    assert rc == 2 and "none.onnx" in err and "not found" in err
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is not a model")
    rc, _, err = cli("generate", junk, "--n", 3, "--out", tmp_path / "x.npy")
    assert rc == 2 and "junk.onnx" in err and "ONNX" in err


def test_cli_rejects_unwritable_or_unknown_outputs(tmp_path, gen_path, cli):
    rc, _, err = cli("generate", gen_path, "--n", 3, "--out", tmp_path / "no" / "such" / "x.npy")
    assert rc == 2 and "does not exist" in err
    rc, _, err = cli("generate", gen_path, "--n", 3, "--out", tmp_path / "x.png")
    assert rc == 2 and "use .npy or .fits" in err
    rc, _, err = cli("generate", gen_path, "--n", 3, "--out", tmp_path)
    assert rc == 2


def test_diversity_detects_collapse_and_copies():
    rng = np.random.default_rng(0)
    training = rng.integers(0, 256, (20, 3, 8, 8), dtype=np.uint8)
    collapsed = np.repeat(training[:1], 10, axis=0)
    d = diversity(collapsed, training)
    assert d["mean_pairwise"] == 0.0
    assert d["nn_train_min"] == pytest.approx(0.0, abs=1e-6) and d["memorised_fraction"] == 1.0
    fresh = rng.integers(0, 256, (10, 3, 8, 8), dtype=np.uint8)
    d2 = diversity(fresh, training)
    # independent uniform images: RMS distance ≈ sqrt(2 · var(U(0,1))) = sqrt(1/6) ≈ 0.408
    assert d2["mean_pairwise"] == pytest.approx(np.sqrt(1 / 6), rel=0.05)
    assert d2["train_mean_pairwise"] == pytest.approx(np.sqrt(1 / 6), rel=0.05)
    assert d2["memorised_fraction"] == 0.0 and d2["nn_train_min"] > 0.3
    # float input in 0..1 gives the same figures as uint8 / 255
    d3 = diversity(fresh.astype(np.float32) / 255, training.astype(np.float32) / 255)
    assert d3["mean_pairwise"] == pytest.approx(d2["mean_pairwise"], rel=1e-5)


def test_diversity_rejects_bad_shapes():
    with pytest.raises(InputError, match="at least 2"):
        diversity(np.zeros((1, 3, 8, 8), np.uint8))
    with pytest.raises(InputError, match="N×C×H×W"):
        diversity(np.zeros((4, 8, 8), np.uint8))
    with pytest.raises(InputError, match="training"):
        diversity(np.zeros((4, 3, 8, 8), np.uint8), np.zeros((4, 3, 4, 4), np.uint8))


def test_generate_runs_with_torch_blocked(tmp_path, gen_path, torch_blocker):
    import subprocess
    import sys
    import textwrap

    out = tmp_path / "blocked.npy"
    code = torch_blocker + textwrap.dedent(f"""
        import sys
        from deepmine.inference.cli.app import main
        assert main(["generate", {str(gen_path)!r}, "--n", "6", "--out", {str(out)!r}]) == 0
        assert "torch" not in sys.modules
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert np.load(out).shape == (6, 3, 16, 16)
