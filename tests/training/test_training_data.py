"""Training data: readers, augmentation, negative learning, recipes, checkpoints."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

from deepmine.inference.errors import InputError  # noqa: E402
from deepmine.inference.preprocess import prepare_batch  # noqa: E402
from deepmine.training import create_model, load_checkpoint, load_recipe  # noqa: E402
from deepmine.training import data as D  # noqa: E402
from deepmine.training.checkpoint import save_checkpoint  # noqa: E402
from deepmine.training.recipe import parse_set  # noqa: E402


# ---------------------------------------------------------------- readers
def test_open_cutouts_npy_fits_and_single_band(tmp_path):
    from astropy.io import fits

    rng = np.random.default_rng(0)
    cube = rng.integers(0, 255, (5, 3, 8, 8), dtype=np.uint8)
    np.save(tmp_path / "a.npy", cube)
    a = D.open_cutouts(tmp_path / "a.npy")
    assert isinstance(a, np.memmap) and a.shape == (5, 3, 8, 8)
    flat = rng.normal(size=(4, 8, 8)).astype(np.float32)
    fits.PrimaryHDU(flat).writeto(tmp_path / "b.fits")
    b = D.open_cutouts(tmp_path / "b.fits")
    assert b.shape == (4, 1, 8, 8)
    np.testing.assert_array_equal(b[:, 0], flat)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: None, "--positives file not found"),
        (lambda p: p.write_bytes(b"not numpy"), "not a readable .npy array"),
        (lambda p: np.save(p, np.zeros((4, 8))), "expected N×C×H×W"),
        (lambda p: np.save(p, np.zeros((0, 1, 8, 8))), "holds no cutouts"),
        (lambda p: np.save(p, np.array([["a"]] * 2).reshape(1, 1, 2, 1)), "expected numeric pixels"),
    ],
)
def test_open_cutouts_errors_name_the_file(tmp_path, make, message):
    path = tmp_path / "x.npy"
    make(path)
    with pytest.raises(InputError) as info:
        D.open_cutouts(path, "--positives")
    assert str(path) in str(info.value) and message in str(info.value)


def test_make_source_checks_shape_and_selects_channels(tmp_path):
    arr = np.zeros((3, 3, 16, 16), np.uint8)
    with pytest.raises(InputError, match="cutouts are 3×16×16 but the model takes 1×16×16"):
        D.make_source([("f.npy", arr)], None, (1, 16, 16))
    src = D.make_source([("f.npy", arr), ("g.npy", arr + 1)], [2], (1, 16, 16))
    assert len(src) == 6 and src.image_shape == (1, 16, 16)
    rows = src.take(np.array([4, 0, 4]))
    assert rows[:, 0, 0, 0].tolist() == [1, 0, 1]
    with pytest.raises(InputError, match="channels \\[5\\] requested but the cutouts have 3"):
        D.make_source([("f.npy", arr)], [5], (1, 16, 16))


# ---------------------------------------------------------------- augmentation
def test_square_symmetries_are_the_eight_group_elements():
    img = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    outs = [D.apply_symmetry(img, np.array([k]))[0, 0] for k in range(8)]
    assert len({o.tobytes() for o in outs}) == 8  # all distinct
    expected = [np.rot90(img[0, 0], k) for k in range(4)] + [np.rot90(img[0, 0].T, k) for k in range(4)]
    assert {o.tobytes() for o in outs} == {e.tobytes() for e in expected}
    # flips are in the group
    group = {o.tobytes() for o in outs}
    for f in (img[0, 0][::-1], img[0, 0][:, ::-1], img[0, 0].T, np.rot90(img[0, 0], 2).T):
        assert np.ascontiguousarray(f).tobytes() in group
    rng = np.random.default_rng(1)
    batch = np.repeat(img, 400, axis=0)
    seen = {b[0].tobytes() for b in D.random_symmetry(batch, rng)}
    assert seen == group


def test_random_crop_rescale():
    rng = np.random.default_rng(0)
    x = rng.random((6, 1, 100, 100)).astype(np.float32)
    y = D.random_crop_rescale(x, 90, np.random.default_rng(3))
    assert y.shape == x.shape and y.dtype == np.float32
    assert y.min() >= x.min() - 1e-6 and y.max() <= x.max() + 1e-6
    # a constant image stays constant; the identity crop returns the input
    c = np.full((2, 1, 100, 100), 0.25, np.float32)
    np.testing.assert_allclose(D.random_crop_rescale(c, 90, rng), 0.25, rtol=1e-6)
    np.testing.assert_array_equal(D.random_crop_rescale(x, 100, rng), x)
    # a horizontal ramp stays a ramp spanning 90 % of the original range
    ramp = np.broadcast_to(np.linspace(0, 1, 100, dtype=np.float32), (1, 1, 100, 100)).copy()
    r = D.random_crop_rescale(ramp, 90, rng)[0, 0]
    assert np.all(np.diff(r[0]) > 0) and 0.88 < r[0, -1] - r[0, 0] < 0.9
    with pytest.raises(InputError, match="data.crop"):
        D.random_crop_rescale(x, 101, rng)


def _sky(n=5, c=3, h=32, w=32, seed=0):
    """Sky-like preprocessed images: a positive level with noise, a source off-centre."""
    rng = np.random.default_rng(seed)
    x = (0.2 + 0.02 * rng.standard_normal((n, c, h, w))).astype(np.float32)
    x[:, :, h // 2 - 3 : h // 2 + 1, w // 2 : w // 2 + 5] += 1.0
    return x


def test_shift_images_moves_content_by_the_drawn_amount():
    x = _sky(n=4, h=24, w=20)
    dy, dx = np.array([2, -3, 0, 1]), np.array([-1, 3, 0, 3])
    y = D.shift_images(x, dy, dx, limit=3)
    assert y.shape == x.shape and y.dtype == x.dtype
    for i in range(4):
        rolled = np.roll(x[i], (dy[i], dx[i]), axis=(-2, -1))
        # away from the border (the strip a shift uncovers) the shift is exactly np.roll's
        np.testing.assert_array_equal(y[i, :, 3:-3, 3:-3], rolled[:, 3:-3, 3:-3])
        np.testing.assert_array_equal(
            y[i, :, max(dy[i], 0) : 24 + min(dy[i], 0), max(dx[i], 0) : 20 + min(dx[i], 0)],
            rolled[:, max(dy[i], 0) : 24 + min(dy[i], 0), max(dx[i], 0) : 20 + min(dx[i], 0)],
        )
    np.testing.assert_array_equal(y[2], x[2])  # (0, 0) is the identity
    # the uncovered strip is the mirror image of the pixels just inside the edge
    # (image 0 moved 2 down, 1 left: its top rows mirror rows 2 and 1; its right column col 18)
    np.testing.assert_array_equal(y[0, :, 0], x[0][:, 2][:, np.r_[1:20, 18]])
    np.testing.assert_array_equal(y[0, :, 1], x[0][:, 1][:, np.r_[1:20, 18]])
    with pytest.raises(InputError, match="data.shift"):
        D.shift_images(x, np.full(4, 20), np.zeros(4, int))


def test_random_shift_borders_look_like_sky_not_zeros():
    x = _sky(n=64, h=32, w=32)
    y = D.random_shift(x, 3, np.random.default_rng(1))
    assert y.shape == x.shape and y.dtype == np.float32
    border = np.concatenate([y[..., :3, :].ravel(), y[..., -3:, :].ravel(), y[..., :, :3].ravel(), y[..., :, -3:].ravel()])
    assert np.all(border != 0) and abs(border.mean() - 0.2) < 0.01  # the sky's level, no zero strip
    assert 0.015 < border.std() < 0.025  # and its noise: no constant fill
    # each image moved by its draw (uniform in -3..3 per axis, rows then columns, from the rng)
    d = np.random.default_rng(1).integers(-3, 4, size=(2, 64))
    assert np.abs(d).max() == 3 and np.any(d != 0)
    for i in range(64):
        rolled = np.roll(x[i], (d[0, i], d[1, i]), axis=(-2, -1))
        np.testing.assert_array_equal(y[i, :, 3:-3, 3:-3], rolled[:, 3:-3, 3:-3])


def test_random_shift_draws_every_offset_and_is_deterministic_per_seed():
    # a single bright pixel far from the border shows the drawn shift exactly
    x = np.zeros((2000, 1, 16, 16), np.float32)
    x[:, 0, 8, 8] = 1.0
    y = D.random_shift(x, 2, np.random.default_rng(7))
    pos = np.array([np.unravel_index(np.argmax(im[0]), (16, 16)) for im in y]) - 8
    assert set(map(tuple, pos)) == {(a, b) for a in range(-2, 3) for b in range(-2, 3)}  # uniform, all 25
    assert np.all(np.bincount(pos[:, 0] + 2) > 300) and np.all(np.bincount(pos[:, 1] + 2) > 300)
    np.testing.assert_array_equal(y, D.random_shift(x, 2, np.random.default_rng(7)))
    assert not np.array_equal(y, D.random_shift(x, 2, np.random.default_rng(8)))
    # shift = 0 is the identity and draws nothing
    rng = np.random.default_rng(3)
    assert D.random_shift(x, 0, rng) is x
    assert rng.integers(1 << 30) == np.random.default_rng(3).integers(1 << 30)
    with pytest.raises(InputError, match="data.shift"):
        D.random_shift(x, 16, rng)
    with pytest.raises(InputError, match="data.shift"):
        D.random_shift(x, -1, rng)


def test_sampler_shifts_positives_and_negatives_and_is_reproducible():
    ps, ns = _sources(n_pos=8, n_neg=20, shape=(1, 16, 16))
    spec = {"kind": "percentile"}
    base = D.NegativeLearningSampler(ps, ns, np.arange(8), np.arange(20), spec, batch_positives=8, symmetries=False)
    shifted = D.NegativeLearningSampler(ps, ns, np.arange(8), np.arange(20), spec, batch_positives=8,
                                        symmetries=False, shift=2)  # fmt: skip
    (b0,) = base.batches(np.random.default_rng(0))
    (b1,) = shifted.batches(np.random.default_rng(0))
    (b2,) = shifted.batches(np.random.default_rng(0))
    np.testing.assert_array_equal(b1.images, b2.images)
    assert b1.labels.tolist() == b0.labels.tolist()
    # the row-id pixel (0, 0) moved in positives and negatives alike (same rows: the plan comes first)
    moved = [not np.array_equal(b1.images[i], b0.images[i]) for i in range(16)]
    assert any(moved[:8]) and any(moved[8:])
    with pytest.raises(InputError, match="data.shift"):
        D.NegativeLearningSampler(ps, ns, np.arange(8), np.arange(20), spec, shift=-1)


# ---------------------------------------------------------------- negative learning
def _sources(n_pos=10, n_neg=50, shape=(1, 8, 8)):
    pos = np.full((n_pos,) + shape, 200, np.uint8)
    pos[:, 0, 0, 0] = np.arange(n_pos)  # row id in a pixel
    neg = np.full((n_neg,) + shape, 10, np.uint8)
    neg[:, 0, 0, 0] = np.arange(n_neg)
    return D.CutoutSource([pos], ["p"]), D.CutoutSource([neg], ["n"])


def test_negative_learning_pairs_each_positive_with_a_fresh_negative():
    ps, ns = _sources()
    spec = {"kind": "percentile"}
    s = D.NegativeLearningSampler(ps, ns, np.arange(10), np.arange(50), spec, batch_positives=4, symmetries=False)
    assert len(s) == 3
    plan1 = s.plan(np.random.default_rng(0))
    assert [len(p) for p, _ in plan1] == [4, 4, 2] and [len(n) for _, n in plan1] == [4, 4, 2]
    pos = np.concatenate([p for p, _ in plan1])
    neg = np.concatenate([n for _, n in plan1])
    assert sorted(pos) == list(range(10))  # every positive once per epoch
    assert len(set(neg)) == 10  # negatives drawn without replacement within the epoch
    plan2 = s.plan(np.random.default_rng(1))
    assert set(np.concatenate([n for _, n in plan2])) != set(neg)  # the train set changes per epoch
    batches = list(s.batches(np.random.default_rng(0)))
    b = batches[0]
    assert b.images.dtype == np.float32 and b.labels.tolist() == [1] * 4 + [0] * 4
    # preprocessing is prepare_batch's, byte for byte (no augmentation here)
    np.testing.assert_array_equal(b.images[:4], prepare_batch(ps.take(plan1[0][0]), spec))


def test_balanced_batches_and_pool_smaller_than_epoch():
    ps, ns = _sources(n_pos=10, n_neg=3)
    s = D.NegativeLearningSampler(ps, ns, np.arange(10), np.arange(3), {"kind": "percentile"},
                                  batch_positives=64, negatives_per_positive=2)  # fmt: skip
    (p, n), = s.plan(np.random.default_rng(0))
    assert len(p) == 10 and len(n) == 20 and set(n) <= {0, 1, 2}
    with pytest.raises(InputError, match="no negatives left"):
        D.NegativeLearningSampler(ps, ns, np.arange(10), np.arange(0), {"kind": "percentile"})


def test_split_indices_is_deterministic_and_disjoint():
    a = D.split_indices(100, 0.2, np.random.default_rng(5))
    b = D.split_indices(100, 0.2, np.random.default_rng(5))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert len(a[1]) == 20 and not set(a[0]) & set(a[1]) and len(a[0]) + len(a[1]) == 100
    assert len(D.split_indices(3, 0.01, np.random.default_rng(0))[1]) == 1


def test_generic_two_class_set():
    curves, blobs = D.generic_two_class(6, (1, 32, 32), seed=3)
    assert curves.shape == blobs.shape == (6, 1, 32, 32)
    again, _ = D.generic_two_class(6, (1, 32, 32), seed=3)
    np.testing.assert_array_equal(curves, again)
    assert not np.array_equal(curves, blobs)


# ---------------------------------------------------------------- recipes
def test_shipped_recipes_hold_the_seed_values():
    ez = load_recipe("eznet")
    (main,) = ez.phases
    opt = main["optimizer"]
    assert (opt["name"], opt["lr"], opt["momentum"], opt["nesterov"], opt["weight_decay"]) == ("sgd", 0.1, 0.9, True, 1e-4)
    assert main["schedule"] == {"name": "step", "milestones": [150, 220], "gamma": 0.1}
    assert main["epochs"] == 250 and main["early_stop"]["patience"] > 0
    lf = load_recipe("lensflow")
    assert [p["name"] for p in lf.phases] == ["pretrain", "coarse", "fine", "search"]
    pre, coarse, fine, search = lf.phases
    assert pre["source"] == "generic" and pre["epochs"] == 8
    assert coarse["conv_lr_scale"] == 0.1 and coarse["epochs"] == 20
    assert fine["negatives_top_fraction"] == 0.06 and fine["extra_negatives"] and fine["epochs"] == 25
    assert search["extra_positives"] and search["extra_negatives"]
    assert lf.phases[1]["optimizer"]["name"] == "adam"
    assert lf.phases[1]["data"]["batch_positives"] == 64 and lf.phases[1]["data"]["crop"] == 90


LENSCRAFTER_RECIPES = ("eznet", "lensflow", "demo", "demo-anneal")


@pytest.mark.parametrize("name", LENSCRAFTER_RECIPES)
def test_lenscrafter_recipes_shift_and_document_their_offsets(name):
    """Every recipe that trains on LensCrafter data shifts its images (issue 17) in every phase
    and names the whole-lens offset σ its data should be crafted with."""
    from deepmine.training.recipe import builtin_recipe_path

    r = load_recipe(name)
    assert all(p["data"]["shift"] > 0 for p in r.phases)
    text = builtin_recipe_path(name).read_text()
    assert "shift" in text and "offset_lenses" in text and "σ = 0.2″" in text


def test_shift_is_a_recipe_setting():
    assert load_recipe("eznet", {"data.shift": 0}).phases[0]["data"]["shift"] == 0
    with pytest.raises(InputError, match="shift"):
        load_recipe("eznet", {"data.shift": -1})
    with pytest.raises(InputError, match="expected an integer"):
        load_recipe("eznet", {"data.shift": 1.5})


def test_recipe_extends_sets_and_errors(tmp_path):
    child = tmp_path / "child.toml"
    child.write_text('extends = "lensflow"\nseed = 4\n[[phase]]\nname = "coarse"\nepochs = 2\n'
                     '[phase.optimizer]\nlr = 0.01\n[[phase]]\nname = "fine"\nenabled = false\n')  # fmt: skip
    r = load_recipe(child, {"phase.search.epochs": 1, "data.crop": 0})
    assert [p["name"] for p in r.phases] == ["pretrain", "coarse", "search"]
    assert r.phases[1]["epochs"] == 2 and r.phases[1]["optimizer"]["lr"] == 0.01
    assert r.phases[1]["conv_lr_scale"] == 0.1  # inherited
    assert r.phases[2]["epochs"] == 1 and r.phases[0]["data"]["crop"] == 0 and r.seed == 4
    assert [p["epochs"] for p in load_recipe(child, {"epochs": 3}).phases] == [3, 3, 3]
    assert parse_set("optimizer.lr=0.01") == ("optimizer.lr", 0.01)
    assert parse_set("data.template=negatives") == ("data.template", "negatives")

    bad = tmp_path / "bad.toml"
    cases = [
        ('[model]\nname = "eznet"\n[optimizer]\nlearning_rate = 1\n', "unknown key(s) learning_rate"),
        ('[model]\nname = "eznet"\n[optimizer]\nname = "rmsprop"\n', "expected 'sgd' or 'adam'"),
        ('[model]\nname = "eznet"\n[schedule]\nmilestones = [20, 10]\n', "increasing positive epoch"),
        ('[model]\nname = "eznet"\n[[phase]]\nepochs = 0\n', "epochs: must be >= 1"),
        ('[model]\nname = "eznet"\n[data]\ntest_fraction = 1.5\n', "test_fraction"),
        ('[model]\nname = "eznet"\n[data]\nsymmetries = "yes"\n', "expected true or false"),
        ("[data]\ncrop = 1\n", "[model] needs a name"),
        ("this is = not toml = at all", "not valid TOML"),
        ('extends = "bad.toml"\n', "extends itself"),
    ]
    for text, message in cases:
        bad.write_text(text)
        with pytest.raises(InputError) as info:
            load_recipe(bad)
        assert message in str(info.value), (text, str(info.value))
    with pytest.raises(InputError, match="recipe not found"):
        load_recipe(tmp_path / "missing.toml")
    with pytest.raises(InputError, match="no phase 'nope'"):
        load_recipe("eznet", {"phase.nope.epochs": 1})


# ---------------------------------------------------------------- checkpoints
def test_checkpoint_roundtrip_and_errors(tmp_path):
    torch.manual_seed(0)
    model = create_model("eznet", table=[{"kernels": 3, "kernel": 3, "size": 4}], size=8, hidden=4)
    model.eval()
    path = save_checkpoint(tmp_path / "m.pt", model, {"seed": 1, "epochs": 0})
    loaded, info = load_checkpoint(path)
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert info["architecture"] == "eznet" and info["provenance"] == {"seed": 1, "epochs": 0}
    assert info["deepmine_config"] == model.deepmine_config and "state_dict" not in info
    raw = torch.load(path, weights_only=True)
    assert {"architecture", "overrides", "state_dict", "deepmine_config", "provenance"} <= set(raw)

    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "junk.pt").write_bytes(b"\x00garbage" * 10)
    torch.save({"weights": 1}, tmp_path / "other.pt")
    bad_arch = dict(raw, architecture="resnet")
    torch.save(bad_arch, tmp_path / "arch.pt")
    bad_sd = dict(raw, state_dict={"x": torch.zeros(1)})
    torch.save(bad_sd, tmp_path / "sd.pt")
    for name, message in [("missing.pt", "checkpoint not found"), ("empty.pt", "checkpoint is empty"),
                          ("junk.pt", "not a readable deepmine checkpoint"), ("other.pt", "not a deepmine checkpoint"),
                          ("arch.pt", "unknown model 'resnet'"), ("sd.pt", "weights do not fit the eznet")]:  # fmt: skip
        with pytest.raises(InputError) as info:
            load_checkpoint(tmp_path / name)
        assert str(tmp_path / name) in str(info.value) and message in str(info.value), str(info.value)


def test_cosine_schedule_anneals_over_the_phase_epochs():
    """schedule.name = "cosine": epoch e of E at ½(1 + cos(π (e + ½) / E)) × the LR; the demo
    recipe uses it, stopping near zero; an unknown name is refused in one line."""
    import math

    import torch

    from deepmine.training.phases import make_scheduler

    r = load_recipe("demo", {"phase.main.epochs": 4})
    (main,) = r.phases
    assert main["schedule"]["name"] == "cosine" and main["optimizer"]["name"] == "adam"
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=main["optimizer"]["lr"])
    sched = make_scheduler(opt, main)
    lrs = []
    for _ in range(4):
        lrs.append(opt.param_groups[0]["lr"])
        sched.step()
    want = [main["optimizer"]["lr"] * 0.5 * (1 + math.cos(math.pi * (e + 0.5) / 4)) for e in range(4)]
    assert lrs == pytest.approx(want) and lrs[-1] < 0.05 * lrs[0]
    with pytest.raises(InputError, match="schedule.name: expected 'step' or 'cosine'"):
        load_recipe("eznet", {"schedule.name": "linear"})
