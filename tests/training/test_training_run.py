"""Training runs: reproducibility, exact resume, LensFlow phases, outputs, the CLI, and the
evidence that a tiny recipe learns to separate LensCrafter lenses from non-lens scenes."""
import csv
import json
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

from deepmine.inference.errors import InputError  # noqa: E402
from deepmine.inference.preprocess import percentile_normalization  # noqa: E402
from deepmine.training import load_checkpoint, load_recipe, train  # noqa: E402
from deepmine.training.data import generic_two_class  # noqa: E402
from deepmine.training.trainer import COLUMNS, read_history  # noqa: E402

TINY_EZNET = """
extends = "eznet"
name = "tiny-eznet"
[model]
name = "eznet"
size = 16
hidden = 8
table = [{kernels = 4, kernel = 3, size = 8}, {kernels = 4, kernel = 3, size = 4}, {kernels = 8, kernel = 1, size = 1}]
[data]
test_fraction = 0.25
batch_positives = 8
[optimizer]
lr = 0.05
[schedule]
milestones = [2]
[early_stop]
patience = 0
[[phase]]
name = "main"
epochs = 4
"""

TINY_LENSFLOW = """
extends = "lensflow"
name = "tiny-lensflow"
[model]
name = "lensflow"
size = 36
filters = [3, 4, 5]
hidden = [16, 8]
[data]
test_fraction = 0.25
batch_positives = 8
crop = 32
template_images = 20
[optimizer]
lr = 0.003
[[phase]]
name = "pretrain"
epochs = 1
generic_size = 24
[[phase]]
name = "coarse"
epochs = 2
[[phase]]
name = "fine"
epochs = 1
negatives_top_fraction = 0.3
[[phase]]
name = "search"
epochs = 1
"""


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """Toy cutout files: curves (positives) and blobs (negatives), uint8 and float."""
    d = tmp_path_factory.mktemp("toy")
    pos, neg = generic_two_class(40, (3, 16, 16), seed=11)
    np.save(d / "pos.npy", percentile_normalization(pos))
    np.save(d / "neg.npy", percentile_normalization(neg))
    p1, n1 = generic_two_class(24, (1, 36, 36), seed=12)
    np.save(d / "pos1.npy", p1)  # float fluxes: normalised by the model's preprocessing
    np.save(d / "neg1.npy", n1)
    extra_p, extra_n = generic_two_class(4, (1, 36, 36), seed=13)
    np.save(d / "tracers.npy", extra_p)
    np.save(d / "false_pos.npy", extra_n)
    (d / "tiny_eznet.toml").write_text(TINY_EZNET)
    (d / "tiny_lensflow.toml").write_text(TINY_LENSFLOW)
    return d


def _state(path):
    return torch.load(path, weights_only=True)["state_dict"]


def test_run_writes_outputs_and_is_reproducible(toy, tmp_path):
    a = train(toy / "tiny_eznet.toml", toy / "pos.npy", toy / "neg.npy", tmp_path / "a", plot=True)
    for name in ("checkpoint.pt", "model.pt", "phase-main.pt", "history.csv", "recipe.json", "curves.png"):
        assert (tmp_path / "a" / name).is_file(), name
    rows = read_history(tmp_path / "a" / "history.csv")
    with open(tmp_path / "a" / "history.csv") as fh:
        assert next(csv.reader(fh)) == COLUMNS
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert [r["lr"] for r in rows] == pytest.approx([0.05, 0.05, 0.005, 0.005])  # step at epoch 2
    assert all(-1 <= r["train_rp"] <= 1 and -1 <= r["test_rp"] <= 1 for r in rows)
    assert all(0 <= r["data_seconds"] <= r["seconds"] for r in rows)
    model, info = load_checkpoint(a.model_path)
    prov = info["provenance"]
    assert prov["seed"] == 0 and prov["epochs"] == 4 and prov["recipe"]["name"] == "tiny-eznet"
    assert prov["data"]["positives"][0]["sha256"].startswith("sha256:")
    assert prov["split"]["n_test_positives"] == 10 and prov["split"]["n_train_negatives"] == 30
    assert prov["heldout"]["ranking_performance"] == pytest.approx(a.heldout["ranking_performance"])
    assert "training_state" not in info
    assert model.deepmine_config["preprocessing"]["kind"] == "percentile"
    json.dumps(prov)  # goes into the ONNX metadata as JSON
    # same seed → same weights; another seed → different weights
    b = train(toy / "tiny_eznet.toml", toy / "pos.npy", toy / "neg.npy", tmp_path / "b")
    sa, sb = _state(a.model_path), _state(b.model_path)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    c = train(toy / "tiny_eznet.toml", toy / "pos.npy", toy / "neg.npy", tmp_path / "c", seed=1)
    sc = _state(c.model_path)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


class _Kill(KeyboardInterrupt):
    pass


def _kill_after(k):
    def hook(row):
        if row["epoch"] == k:
            raise _Kill()

    return hook


def test_resume_after_a_kill_reproduces_the_uninterrupted_run(toy, tmp_path):
    args = (toy / "tiny_lensflow.toml", toy / "pos1.npy", toy / "neg1.npy")
    extras = {"extra_positives": toy / "tracers.npy", "extra_negatives": toy / "false_pos.npy"}
    full = train(*args, tmp_path / "full", **extras)
    # killed in the middle of a phase (epoch 2 = coarse 1/2) and at a phase end (epoch 4 = fine)
    for k in (2, 4):
        out = tmp_path / f"killed{k}"
        with pytest.raises(_Kill):
            train(*args, out, on_epoch_end=_kill_after(k), **extras)
        assert len(read_history(out / "history.csv")) == k
        with pytest.raises(InputError, match="pass --resume"):
            train(*args, out, **extras)
        resumed = train(*args, out, resume=True, **extras)
        ref, got = _state(full.model_path), _state(resumed.model_path)
        assert all(torch.equal(ref[k2], got[k2]) for k2 in ref), f"kill after epoch {k}"
        assert read_history(out / "history.csv") == [
            {**r, "seconds": g["seconds"], "data_seconds": g["data_seconds"]}
            for r, g in zip(read_history(tmp_path / "full" / "history.csv"), read_history(out / "history.csv"))
        ]
    # resuming a finished run changes nothing
    again = train(*args, tmp_path / "full", resume=True, **extras)
    assert all(torch.equal(v, _state(again.model_path)[k]) for k, v in _state(full.model_path).items())


@pytest.mark.slow
def test_resume_after_sigkill_of_the_cli(toy, tmp_path, request):
    """A real kill (SIGKILL, no clean-up) of `deepmine train` mid-run, then --resume."""
    import os
    import signal
    import subprocess
    import time

    common = ["eznet", str(toy / "tiny_eznet.toml"), "--positives", str(toy / "pos.npy"), "--negatives", str(toy / "neg.npy"),
              "--device", "cpu", "--set", "epochs=8"]  # fmt: skip
    out = tmp_path / "killed"
    # bit-for-bit needs the same reduction order in the killed process and in this one: pin both
    # to one thread (other test modules may have changed this process's thread count)
    env = dict(os.environ, DEEPMINE_NO_PROGRESS="1", OMP_NUM_THREADS="1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    request.addfinalizer(lambda: torch.set_num_threads(threads))
    proc = subprocess.Popen([sys.executable, "-m", "deepmine.inference.cli", "train", *common, "-o", str(out)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (out / "history.csv").exists() and len(read_history(out / "history.csv")) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(read_history(out / "history.csv"))
    assert done >= 1
    # the resumed run and the uninterrupted reference run both as `deepmine train` processes:
    # with the shift augmentation on, an in-process run and a CLI process agree to ~1e-6 but not
    # bit for bit (not established why; the in-process kill/resume test above is bit-exact)
    cli = [sys.executable, "-m", "deepmine.inference.cli", "train", *common]
    subprocess.run([*cli, "-o", str(out), "--resume"], env=env, check=True, capture_output=True)
    subprocess.run([*cli, "-o", str(tmp_path / "full")], env=env, check=True, capture_output=True)
    ref, got = _state(tmp_path / "full" / "model.pt"), _state(out / "model.pt")
    assert all(torch.equal(ref[k], got[k]) for k in ref), f"killed after {done} epochs"
    assert not list(out.glob(".*.tmp*"))  # no temporary files left behind by the resumed run


def test_lensflow_phases(toy, tmp_path):
    res = train(toy / "tiny_lensflow.toml", toy / "pos1.npy", toy / "neg1.npy", tmp_path / "lf",
                extra_positives=toy / "tracers.npy", extra_negatives=toy / "false_pos.npy")  # fmt: skip
    rows = res.history
    assert [r["phase"] for r in rows] == ["pretrain", "coarse", "coarse", "fine", "search"]
    n_train = {r["phase"]: r["n_train"] for r in rows}
    # generic pre-training set: 24 + 24, a quarter held out
    assert n_train["pretrain"] == 36
    # coarse: 18 train positives + 18 train negatives; fine: top 30 % of the 18 negatives (6) + 4 false positives
    assert n_train["coarse"] == 36
    assert n_train["fine"] == 18 + 6 + 4
    # search: + 4 tracers; its own top 6 % of the 18 negatives (2) + 4 false positives
    assert n_train["search"] == 18 + 4 + 2 + 4
    for name in ("pretrain", "coarse", "fine", "search"):
        assert (tmp_path / "lf" / f"phase-{name}.pt").is_file()
    model, info = load_checkpoint(res.model_path)
    pre = info["deepmine_config"]["preprocessing"]
    assert pre["kind"] == "histogram_match" and len(pre["template"]) == 256 and pre["template"] != list(np.linspace(0, 1, 256))
    assert info["overrides"]["template"] == pre["template"]
    # coarse phase: the convolution layers learn at 10 % of the LR
    assert rows[1]["lr"] == pytest.approx(0.003)
    # phases finished
    assert [p["name"] for p in info["provenance"]["phases_done"]] == ["pretrain", "coarse", "fine", "search"]


def test_early_stopping_restores_the_best_epoch(toy, tmp_path):
    res = train(toy / "tiny_eznet.toml", toy / "pos.npy", toy / "neg.npy", tmp_path / "es",
                sets={"early_stop.patience": 1, "early_stop.metric": "test_loss", "epochs": 6,
                      "optimizer.lr": 2.0, "schedule.milestones": []})  # fmt: skip
    done = load_checkpoint(res.model_path)[1]["provenance"]["phases_done"][0]
    losses = [r["test_loss"] for r in res.history]
    assert done["best_epoch"] == int(np.argmin(losses)) + 1
    if done["stopped_early"]:
        assert len(losses) == done["best_epoch"] + 1
    assert res.heldout["loss"] == pytest.approx(min(losses), rel=1e-4)


def test_bad_inputs_are_clear_errors(toy, tmp_path):
    r = toy / "tiny_eznet.toml"
    with pytest.raises(InputError, match="--positives file not found"):
        train(r, tmp_path / "nope.npy", toy / "neg.npy", tmp_path / "o1")
    with pytest.raises(InputError, match="cutouts are 1×36×36 but the model takes 3×16×16"):
        train(r, toy / "pos1.npy", toy / "neg.npy", tmp_path / "o2")
    with pytest.raises(InputError, match="--amp: automatic mixed precision needs a CUDA device"):
        train(r, toy / "pos.npy", toy / "neg.npy", tmp_path / "o3", device="cpu", amp=True)
    with pytest.raises(InputError, match="--device .tpu.: expected cpu, cuda or auto"):
        train(r, toy / "pos.npy", toy / "neg.npy", tmp_path / "o4", device="tpu")
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="--out must be a folder"):
        train(r, toy / "pos.npy", toy / "neg.npy", tmp_path / "file")
    # resuming with another recipe or other data is refused
    out = tmp_path / "o5"
    with pytest.raises(_Kill):
        train(r, toy / "pos.npy", toy / "neg.npy", out, on_epoch_end=_kill_after(1))
    with pytest.raises(InputError, match="different recipe"):
        train(r, toy / "pos.npy", toy / "neg.npy", out, resume=True, sets={"optimizer.lr": 0.01})
    with pytest.raises(InputError, match="different data files"):
        train(r, toy / "neg.npy", toy / "pos.npy", out, resume=True)


def test_extras_change_what_the_model_sees_or_are_refused(toy, tmp_path, cli):
    """Issue 18: --extra-negatives/--extra-positives join the training draws of every shipped
    classifier recipe that switches them on (eznet now does), and a recipe that uses them in no
    phase refuses them in one line naming the recipe (nothing written)."""
    sets = {"epochs": 1, "model.table": [{"kernels": 4, "kernel": 3, "size": 4}], "model.size": 16,
            "data.batch_positives": 16}  # fmt: skip
    fp, found = generic_two_class(5, (3, 16, 16), seed=31)
    np.save(tmp_path / "fp.npy", percentile_normalization(found))
    np.save(tmp_path / "found.npy", percentile_normalization(fp))
    plain = train("eznet", toy / "pos.npy", toy / "neg.npy", tmp_path / "plain", sets=sets)
    more = train("eznet", toy / "pos.npy", toy / "neg.npy", tmp_path / "more", sets=sets,
                 extra_negatives=tmp_path / "fp.npy", extra_positives=tmp_path / "found.npy")
    assert more.history[0]["n_train"] == plain.history[0]["n_train"] + 10
    (tmp_path / "plain.toml").write_text('extends = "eznet"\nname = "plain"\n[[phase]]\nname = "main"\n'
                                         'extra_negatives = false\nextra_positives = false\n')
    before = sorted(p.name for p in tmp_path.iterdir())
    rc, _, err = cli("train", "eznet", tmp_path / "plain.toml", "--positives", toy / "pos.npy", "--negatives", toy / "neg.npy",
                     "--extra-negatives", tmp_path / "fp.npy", "-o", tmp_path / "refused")
    lines = [x for x in err.strip().splitlines() if x.strip()]
    assert rc == 2 and "Traceback" not in err
    assert "--extra-negatives: recipe 'plain' adds them in no phase" in lines[-1]
    assert sorted(p.name for p in tmp_path.iterdir()) == before


# ---------------------------------------------------------------- CLI
def test_cli_train_eznet(toy, tmp_path, cli):
    rc, out, err = cli("train", "eznet", toy / "tiny_eznet.toml", "--positives", toy / "pos.npy", "--negatives",
                       toy / "neg.npy", "--out", tmp_path / "cli", "--device", "cpu", "--set", "epochs=2", "--json")  # fmt: skip
    assert rc == 0, err
    summary = json.loads(out)
    assert summary["epochs"] == 2 and -1 <= summary["heldout"]["ranking_performance"] <= 1
    assert (tmp_path / "cli" / "model.pt").is_file()
    rc, out, err = cli("train", "eznet", toy / "tiny_eznet.toml", "--positives", toy / "pos.npy", "--negatives", toy / "neg.npy",
                       "-o", tmp_path / "cli", "--set", "epochs=3", "--resume")  # fmt: skip
    assert rc == 2 and "different recipe" in err
    # nothing held out: the figures are null, not NaN (which is not JSON)
    rc, out, err = cli("train", "eznet", toy / "tiny_eznet.toml", "--positives", toy / "pos.npy", "--negatives", toy / "neg.npy",
                       "-o", tmp_path / "cli0", "--set", "epochs=1", "--set", "data.test_fraction=0", "--json")  # fmt: skip
    assert rc == 0, err
    assert json.loads(out)["heldout"]["ranking_performance"] is None


def test_init_starts_from_an_earlier_runs_weights(toy, tmp_path, cli):
    """--init: a later stage starts from another run's weights, and the provenance says which."""
    a = train(toy / "tiny_eznet.toml", toy / "pos.npy", toy / "neg.npy", tmp_path / "a",
              sets={"epochs": 2})  # fmt: skip
    # zero learning rate: the weights stay those of --init (BatchNorm running stats aside)
    b = train(toy / "tiny_eznet.toml", toy / "pos.npy", toy / "neg.npy", tmp_path / "b",
              sets={"epochs": 1, "optimizer.lr": 1e-12, "optimizer.weight_decay": 0.0}, init=a.model_path)
    sa, sb = _state(a.model_path), _state(b.model_path)
    learned = [k for k in sa if "running" not in k and "num_batches" not in k]
    assert learned and all(torch.allclose(sa[k], sb[k], atol=1e-6) for k in learned)
    fresh = _state(train(toy / "tiny_eznet.toml", toy / "pos.npy", toy / "neg.npy", tmp_path / "c",
                         sets={"epochs": 1, "optimizer.lr": 1e-12}).model_path)  # fmt: skip
    assert not all(torch.allclose(sa[k], fresh[k], atol=1e-6) for k in learned)
    init = load_checkpoint(b.model_path)[1]["provenance"]["init"]
    assert init["sha256"].startswith("sha256:") and init["epochs"] == 2 and init["recipe_name"] == "tiny-eznet"
    assert init["heldout"]["ranking_performance"] == pytest.approx(a.heldout["ranking_performance"])
    assert load_checkpoint(a.model_path)[1]["provenance"]["init"] == {}
    # weights of another table: one line naming the file
    rc, out, err = cli("train", "eznet", toy / "tiny_eznet.toml", "--positives", toy / "pos.npy", "--negatives", toy / "neg.npy",
                       "-o", tmp_path / "d", "--set", "model.table=[{kernels = 5, kernel = 3, size = 4}]",
                       "--init", a.model_path)  # fmt: skip
    last = err.strip().splitlines()[-1]  # (after the "training ... with recipe" line)
    assert rc == 2 and "model.pt" in last and "--init weights do not fit" in last and "Traceback" not in err
    rc, out, err = cli("train", "eznet", toy / "tiny_eznet.toml", "--positives", toy / "pos.npy", "--negatives", toy / "neg.npy",
                       "-o", tmp_path / "e", "--init", tmp_path / "missing.pt")  # fmt: skip
    assert rc == 2 and "missing.pt" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "e").exists()  # refused before anything is written


@pytest.mark.parametrize(
    "args, message",
    [
        (["lensflow", "TINY"], "the recipe trains 'eznet', not 'lensflow'"),
        (["eznet", "missing.toml"], "missing.toml: recipe not found"),
        (["eznet", "TINY", "--set", "optimizer.lr"], "expected KEY=VALUE"),
        (["eznet", "TINY", "--set", "optimizer.lr=-1"], "optimizer.lr: must be > 0"),
    ],
)
def test_cli_train_errors(toy, tmp_path, cli, args, message):
    args = [str(toy / "tiny_eznet.toml") if a == "TINY" else a for a in args]
    rc, out, err = cli("train", *args, "--positives", toy / "pos.npy", "--negatives", toy / "neg.npy", "-o", tmp_path / "x")
    assert rc == 2 and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_cli_without_torch_says_what_to_install(toy, tmp_path, cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    rc, out, err = cli("train", "eznet", "eznet", "--positives", toy / "pos.npy", "--negatives", toy / "neg.npy", "-o", tmp_path / "x")
    assert rc == 3 and "pip install 'deepmine[train]'" in err


def test_shipped_recipes_run_when_shrunk(toy, tmp_path):
    """The seed's recipes themselves (not copies) run end to end with --set shrinking them."""
    sets = {"epochs": 1, "model.table": [{"kernels": 4, "kernel": 3, "size": 4}], "model.size": 16,
            "data.batch_positives": 16}  # fmt: skip
    res = train("eznet", toy / "pos.npy", toy / "neg.npy", tmp_path / "ez", sets=sets)
    assert len(res.history) == 1 and load_recipe("eznet").phases[0]["epochs"] == 250
    assert res.history[0]["lr"] == 0.1
    # LensFlow exactly as Table 2.1 on 1×100×100 cutouts, all four phases, one epoch each
    pos, neg = generic_two_class(12, (1, 100, 100), seed=21)
    np.save(tmp_path / "p100.npy", pos)
    np.save(tmp_path / "n100.npy", neg)
    sets = {"epochs": 1, "phase.pretrain.generic_size": 12, "data.batch_positives": 8, "data.template_images": 8}
    res = train("lensflow", tmp_path / "p100.npy", tmp_path / "n100.npy", tmp_path / "lf",
                sets=sets)  # fmt: skip
    assert [r["phase"] for r in res.history] == ["pretrain", "coarse", "fine", "search"]
    model, info = load_checkpoint(res.model_path)
    assert info["deepmine_config"]["input_shape"] == [1, 100, 100] and model.layer_shapes[9] == ("flatten", (7290,))
    # the shift augmentation (issue 17) ran and is recorded with the other data settings
    prov = info["provenance"]
    assert prov["recipe"]["data"]["shift"] == 3 and all(p["data"]["shift"] == 3 for p in prov["phases"])


# ---------------------------------------------------------------- evidence
@pytest.mark.slow
def test_tiny_recipe_separates_lenscrafter_lenses_from_non_lenses(tmp_path):
    """A 5-block EZnet, 8 epochs of the EZnet recipe on 32×32 LensCrafter cutouts: held-out RP ≥ 0.9.

    Lenses have bright sources (m_g 21–23) and θ_E 1.0–2.2″ so that a few hundred examples
    suffice; negatives are LensCrafter's non-lens scenes of every kind (rings and spirals
    included).
    """
    lc = pytest.importorskip("deepmine.lenscrafter")
    if not hasattr(lc, "craft_lenses"):
        pytest.skip("LensCrafter synthesis not available")
    n = 400
    # empty sky around both (field=0) and no shift augmentation (shift = 0 below): evidence that
    # a few hundred 32×32 examples teach arcs in 8 epochs; with the crowded HSC-Wide field and the
    # recipe's 2-pixel shifts it reaches 0.87-0.88 in that budget (the bundled build trains on both)
    lenses = lc.craft_lenses(lc.sample_lens_params(n, seed=1, m_g_src=(21.0, 23.0), theta_e=(1.0, 2.2)), seed=1, size=32,
                             field=0)
    negatives, _ = lc.craft_negatives(n, seed=2, size=32, field=0)
    np.save(tmp_path / "lenses.npy", lenses)
    np.save(tmp_path / "negatives.npy", negatives)
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(
        'extends = "eznet"\nname = "tiny-lenscrafter"\n[model]\nname = "eznet"\nsize = 32\nhidden = 16\n'
        "table = [{kernels = 8, kernel = 3, size = 16}, {kernels = 8, kernel = 3, size = 8, repeat = 2},\n"
        "         {kernels = 16, kernel = 1, size = 1, repeat = 2}]\n"
        "[data]\ntest_fraction = 0.25\nbatch_positives = 16\nshift = 0\n[optimizer]\nlr = 0.05\n"
        '[schedule]\nmilestones = [6]\n[early_stop]\npatience = 0\n[[phase]]\nname = "main"\nepochs = 8\n'
    )
    res = train(recipe, tmp_path / "lenses.npy", tmp_path / "negatives.npy", tmp_path / "out")
    assert res.heldout["n_positives"] == 100 and res.heldout["n_negatives"] == 100
    assert res.heldout["ranking_performance"] >= 0.9, res.history
