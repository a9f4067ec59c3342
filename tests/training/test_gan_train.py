"""GAN lens augmentation: LensGenerator, a tiny GAN run end to end, resume, export with parity."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

from deepmine.inference.errors import InputError  # noqa: E402
from deepmine.training import create_model  # noqa: E402
from deepmine.training.gan import load_gan_recipe, sample_grid, train_gan  # noqa: E402

SIZE = 32
#: gan-tiny, shrunk further so that a whole run takes a few seconds on one core.
TINY = {"pretrain.epochs": 1, "cycles.count": 2, "cycles.epochs": 2, "cycles.samples": 10,
        "data.batch_size": 6, "data.images_per_epoch": 12, "output.grid": 10, "output.calibration_batches": 2}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """LensCrafter lenses and non-lens scenes, 32×32, uint8 (the scanner's format)."""
    from deepmine.lenscrafter import craft_lenses, craft_negatives, sample_lens_params

    folder = tmp_path_factory.mktemp("gan_data")
    pos = craft_lenses(sample_lens_params(16, seed=1), seed=1, size=SIZE)
    neg = craft_negatives(24, seed=2, size=SIZE)[0]
    np.save(folder / "pos.npy", pos)
    np.save(folder / "neg.npy", neg)
    return folder / "pos.npy", folder / "neg.npy"


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # for this module only: later modules compare runs across processes
    out = tmp_path_factory.mktemp("gan_run") / "run"
    result = train_gan(load_gan_recipe("gan-tiny", TINY), *data, out)
    yield result
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------- model
def test_generator_architecture_follows_the_seed():
    g = create_model("lensgenerator")
    convt = [m for m in g.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    # a projection of the latent to 4×4, then four transposed-convolution blocks to 64×64
    assert len(convt) == 5 and convt[0].in_channels == 64
    assert [m.stride for m in convt[1:]] == [(2, 2)] * 4
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in g.modules()) == 4
    with torch.no_grad():
        x = g.eval()(torch.randn(3, 64))
    assert x.shape == (3, 3, 64, 64) and float(x.min()) >= -1 and float(x.max()) <= 1
    with torch.no_grad():
        img = g.images(torch.randn(2, 64))
    assert float(img.min()) >= 0 and float(img.max()) <= 1
    cfg = g.deepmine_config
    assert cfg["task"] == "generator" and cfg["input_shape"] == [64] and cfg["bands"] == ["i", "r", "g"]
    assert g.output_range == (-1.0, 1.0)


@pytest.mark.parametrize("bad, match", [({"size": 48}, "size must be 4·2"), ({"latent_dim": 0}, "latent_dim"),
                                        ({"output": "relu"}, "output must be"), ({"bands": ["g"]}, "band names")])
def test_generator_rejects_bad_options(bad, match):
    with pytest.raises(InputError, match=match):
        create_model("lensgenerator", **bad)


def test_sigmoid_generator_and_other_sizes():
    g = create_model("lensgenerator", size=16, features=4, output="sigmoid", channels=1)
    assert g(torch.randn(2, 64)).shape == (2, 1, 16, 16) and g.output_range == (0.0, 1.0)


def test_translate_shifts_whole_pixels_with_zero_fill_and_passes_gradients():
    from deepmine.training.gan import translate

    x = torch.rand(64, 2, 8, 8, requires_grad=True)
    y = translate(x, 0.25, torch.Generator().manual_seed(0))
    y.sum().backward()
    assert x.grad is not None and float(x.grad.sum()) > 0
    shifted = 0
    for i in range(64):
        # find the shift (dy, dx) in [-2, 2]² that reproduces image i
        hits = []
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                ref = torch.zeros(2, 8, 8)
                ys, xs = slice(max(dy, 0), 8 + min(dy, 0)), slice(max(dx, 0), 8 + min(dx, 0))
                yo, xo = slice(max(-dy, 0), 8 + min(-dy, 0)), slice(max(-dx, 0), 8 + min(-dx, 0))
                ref[:, ys, xs] = x[i, :, yo, xo].detach()
                if torch.equal(ref, y[i].detach()):
                    hits.append((dy, dx))
        assert len(hits) == 1
        shifted += hits[0] != (0, 0)
    assert shifted > 40  # 24 of 25 shifts move the image


# ---------------------------------------------------------------------------------- recipe
def test_shipped_recipes_load_with_the_seed_defaults():
    r = load_gan_recipe("gan")
    assert r["optimizer"]["lr"] == 2e-4 and r["optimizer"]["betas"][0] == 0.5
    assert r["cycles"]["count"] == 10 and r["cycles"]["samples"] == 200
    assert r["generator"]["latent_dim"] == 64 and r["discriminator"] == {}
    fast = load_gan_recipe("gan-fast")
    assert fast["cycles"]["count"] == 10 and len(fast["discriminator"]["table"]) == 5


def test_recipe_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('extends = "gan"\n[cycles]\ncont = 3\n')
    with pytest.raises(InputError, match=r"unknown key\(s\) cont"):
        load_gan_recipe(bad)
    with pytest.raises(InputError, match="cycles.start"):
        load_gan_recipe("gan", {"cycles.start": "random"})
    with pytest.raises(InputError, match="batch_size"):
        load_gan_recipe("gan", {"data.batch_size": 1})
    with pytest.raises(InputError, match="recipe not found"):
        load_gan_recipe(tmp_path / "none.toml")


# ---------------------------------------------------------------------------------- training
def test_tiny_gan_run_writes_everything(run):
    out = run.out_dir
    for name in ("recipe.json", "losses.csv", "diversity.csv", "summary.json", "checkpoint.pt", "pretrained.pt",
                 "generator.pt", "augmented.npy", "augmented.npy.provenance.json", "samples/real.png",
                 "samples/cycle_01.png", "samples/cycle_02.png", "generators/cycle_02.pt"):
        assert (out / name).is_file(), name
    aug = np.load(out / "augmented.npy")
    assert aug.dtype == np.uint8 and aug.shape == (20, 3, SIZE, SIZE)
    assert np.array_equal(aug[:10], np.load(out / "samples" / "cycle_01.npy"))
    with open(out / "losses.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["phase"], r["cycle"], r["epoch"]) for r in rows] == [
        ("pretrain", "0", "1"), ("cycle", "1", "1"), ("cycle", "1", "2"), ("cycle", "2", "1"), ("cycle", "2", "2")]
    assert all(np.isfinite(float(r["loss_d"])) and np.isfinite(float(r["loss_g"])) for r in rows)
    assert all(int(r["steps"]) == 2 for r in rows)
    with open(out / "diversity.csv") as fh:
        div = list(csv.DictReader(fh))
    assert len(div) == 2 and int(div[1]["all_n"]) == 20
    assert float(div[0]["cycle_mean_pairwise"]) > 0  # eval-mode samples differ (calibrated BatchNorm)
    assert run.overall["n"] == 20 and 0 <= run.overall["memorised_fraction"] <= 1


def test_sample_grid_png(run, tmp_path):
    from PIL import Image

    img = Image.open(run.out_dir / "samples" / "cycle_01.png")
    # 10 samples → 4 columns × 3 rows of 32-pixel cutouts with 2-pixel gaps, doubled
    assert img.mode == "RGB" and img.size == ((4 * 34 + 2) * 2, (3 * 34 + 2) * 2)
    with pytest.raises(InputError, match="N×C×H×W"):
        sample_grid(np.zeros((3, 8, 8), np.uint8), tmp_path / "x.png")


def test_resume_continues_exactly(data, run, tmp_path):
    """Interrupt a run in the second cycle, resume it: the samples equal the uninterrupted run's."""
    out = tmp_path / "interrupted"
    recipe = load_gan_recipe("gan-tiny", TINY)
    stop_at = 4  # steps: 2 pretraining + 2 in cycle 1

    def progress(description, total):
        done = [0]

        def advance(k=1, note=""):
            done[0] += k
            if done[0] == stop_at + 1:
                raise KeyboardInterrupt

        return advance

    with pytest.raises(KeyboardInterrupt):
        train_gan(recipe, *data, out, progress=progress)
    assert not (out / "augmented.npy").exists()
    resumed = train_gan(recipe, *data, out, resume=True)
    assert np.array_equal(np.load(resumed.augmented), np.load(run.augmented))
    with open(out / "losses.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 5


def test_bad_runs_are_refused(data, run, tmp_path):
    pos, neg = data
    recipe = load_gan_recipe("gan-tiny", TINY)
    with pytest.raises(InputError, match="not empty"):
        train_gan(recipe, pos, neg, run.out_dir)
    with pytest.raises(InputError, match="nothing to resume"):
        train_gan(recipe, pos, neg, tmp_path / "fresh", resume=True)
    with pytest.raises(InputError, match="different recipe"):
        train_gan(load_gan_recipe("gan-tiny", dict(TINY, seed=5)), pos, neg, run.out_dir, resume=True)
    other = tmp_path / "other.npy"
    np.save(other, np.load(pos)[::-1])
    with pytest.raises(InputError, match="different data files"):  # the trainer's resume check, shared
        train_gan(recipe, other, neg, run.out_dir, resume=True)
    small = tmp_path / "small.npy"
    np.save(small, np.zeros((4, 3, 16, 16), np.uint8))
    with pytest.raises(InputError, match="model takes"):
        train_gan(recipe, pos, small, tmp_path / "mismatch")
    with pytest.raises(InputError, match="not found"):
        train_gan(recipe, tmp_path / "none.npy", neg, tmp_path / "missing")


# ---------------------------------------------------------------------------------- export
def test_generator_exports_with_parity_and_generates_without_torch(run, tmp_path):
    from deepmine.export import export_checkpoint
    from deepmine.inference.generate import load_generator
    from deepmine.training.checkpoint import load_checkpoint

    onnx_path = export_checkpoint(run.generator, tmp_path / "gen.onnx")
    gen = load_generator(onnx_path)
    meta = gen.metadata
    assert meta.task == "generator" and meta.architecture == "lensgenerator"
    assert meta.parity["passed"] and meta.parity["fp32"]["max_abs_image"] < 1e-5
    assert meta.training["recipe_name"] == "gan-tiny" and "cycles" in meta.training
    assert gen.image_shape == (3, SIZE, SIZE) and gen.latent_dim == 16

    model, _ = load_checkpoint(run.generator)
    z = np.random.default_rng(0).standard_normal((5, 16), dtype=np.float32)
    with torch.no_grad():
        ref = model.images(torch.from_numpy(z)).numpy()
    assert np.abs(gen.images(z) - ref).max() < 1e-5
    # the last cycle's samples were drawn from this very generator in eval mode
    samples = gen.sample(7, seed=1)
    assert samples.dtype == np.uint8 and samples.shape == (7, 3, SIZE, SIZE)


def test_cli_command_registers_in_a_train_group(data, tmp_path):
    import typer
    from typer.testing import CliRunner

    from deepmine.training.cli.train_gan_cmd import register_train as register_gan

    app = typer.Typer()
    register_gan(app)

    @app.command("noop")
    def _noop() -> None:  # a second command keeps typer from collapsing the group
        pass

    pos, neg = data
    out = tmp_path / "cli_run"
    args = ["gan", "gan-tiny", "--positives", str(pos), "--negatives", str(neg), "--out", str(out)]
    for key, value in TINY.items():
        args += ["--set", f"{key}={value}"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "augmented lenses" in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["overall"]["n"] == 20
