"""GAN lens augmentation (seed 4.3, Figure 3.1): train a LensGenerator against an EZnet
discriminator, pre-trained on negatives and retrained on positives, in cycles of samples.

Procedure (choices the seed leaves open are marked *choice*)
-------------------------------------------------------------
1. **Pre-train** on negatives (generic survey cutouts) for ``pretrain.epochs`` epochs.
2. **Cycles** ``c = 1..cycles.count`` (seed: 10): retrain on positives for
   ``cycles.epochs`` epochs, then draw ``cycles.samples`` cutouts (seed: 200) from the
   generator in eval mode — exactly what its exported ONNX graph computes. The seed overcomes
   mode collapse "by 10 cycles of retraining"; *choice* (``cycles.start``): ``"pretrained"``
   (default) restarts every cycle from the pre-trained generator and discriminator with fresh
   Adam state and its own random stream, so each cycle can settle on different modes;
   ``"continue"`` keeps training one GAN and samples it after every cycle.
   Before sampling, the generator's BatchNorm statistics are recomputed for its final weights
   (``output.calibration_batches`` batches of latent vectors; 0 = off): eval mode uses them,
   and the running averages kept during training lag behind the weights.
3. All samples (seed: 2,000) are written as ``augmented.npy`` — uint8 N×C×H×W percentile-
   normalised cutouts, the scanner's and the trainer's format — with a provenance sidecar.

Each step is standard DCGAN practice (Radford et al. 2015): binary cross-entropy, Adam
(lr 2e-4, β = (0.5, 0.999)) for both networks, one discriminator update then one generator
update (non-saturating loss: the generator's fakes labelled real). The discriminator is the
same :class:`~deepmine.training.eznet.EZnet` as the classifier, with its two-sigmoid loss
(:meth:`EZnet.loss`: real = class 1, fake = class 0). Real images are preprocessed exactly as
for the classifier (:func:`deepmine.inference.preprocess.prepare_batch`, uint8 / 255) and, when
``data.symmetries`` is on, turned by a random symmetry of the square (lens images have no
preferred orientation); the generator's images are mapped to the same 0..1 range
(:meth:`LensGenerator.images`). *Choice* (``data.discriminator_batches``): the seed's fakes
"are bundled with random real images and passed to the discriminator" — ``"bundled"``
(default) scores one concatenated batch, so the discriminator's BatchNorm sees both;
``"separate"`` scores them as two batches (the ganhacks advice).

*Addition* (``data.translate``, default 0.125; 0 = the seed's plain DCGAN): before the
discriminator, real and generated images alike are shifted by a random whole number of pixels
(up to 1/8 of the size, zero fill; DiffAugment, Zhao et al. 2020, the standard remedy for
GANs trained on a few dozen images). EZnet's unpadded first convolution sees a cutout's
outermost pixels through a few kernel positions only (measured: 3-8× smaller gradients on the
border rows), so without the shifts a short training leaves the generator's border grey.

One epoch is one pass over the real images of the phase (every negative, or every positive;
``data.images_per_epoch`` > 0 draws that many instead, with replacement when larger than the
set — useful with a few dozen positives). Randomness: weights from ``seed``; the batches and
latent vectors of an epoch from streams seeded by (seed, phase, cycle, epoch), so a resumed run
draws what an uninterrupted one draws.

Output folder::

    recipe.json           the resolved recipe
    losses.csv            one row per epoch: phase, cycle, epoch, loss_d, loss_g, d_real,
                          d_fake (mean discriminator probability of "real"), images, seconds
    diversity.csv         one row per cycle: diversity and memorisation figures
                          (:func:`deepmine.inference.generate.diversity`) of the cycle's samples
                          and of all samples so far
    samples/real.png      a grid of training positives (for comparison)
    samples/cycle_XX.png  a grid of the cycle's samples; samples/cycle_XX.npy the samples
    checkpoint.pt         latest state (resumable; generator checkpoint + training_state)
    pretrained.pt         state after pre-training (the start of every cycle)
    generators/cycle_XX.pt  the generator of each cycle (deepmine checkpoint format)
    generator.pt          the last cycle's generator (export it: ``deepmine export``)
    augmented.npy         all samples; augmented.npy.provenance.json
    summary.json          figures per cycle and overall

Checkpoints use :mod:`deepmine.training.checkpoint` (the generator is the checkpoint's model;
the discriminator, optimisers, RNG and history travel in ``training_state``), so
``deepmine export generator.pt`` works on any of them.
"""
from __future__ import annotations

import copy
import csv
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deepmine.inference.atomic import atomic_open, atomic_path
from deepmine.inference.errors import InputError, file_error
from deepmine.inference.progress import stage

__all__ = ["GAN_DEFAULTS", "GanRecipe", "GanResult", "load_gan_recipe", "train_gan", "sample_grid",
           "augmentation_ablation"]

#: Every recipe key and its default; unknown keys are refused.
GAN_DEFAULTS: dict[str, Any] = {
    "name": "",
    "description": "",
    "seed": 0,
    "deterministic": True,
    "generator": {},        # create_model("lensgenerator", **generator)
    "discriminator": {},    # create_model("eznet", **discriminator); {} = the seed's 50 blocks
    "optimizer": {"lr": 2e-4, "betas": [0.5, 0.999], "lr_discriminator": 0.0},  # 0: same as lr
    "data": {
        "batch_size": 64,               # real images per step (as many fakes)
        "images_per_epoch": 0,          # 0: one pass over the phase's images
        "symmetries": True,             # random square symmetries of the real images
        "channels": [],                 # channel indices taken from the files; [] = all
        "max_negatives": 0,             # 0: all negatives in pre-training
        "discriminator_batches": "bundled",  # bundled | separate
        "real_label": 1.0,              # < 1: one-sided label smoothing
        "translate": 0.125,             # DiffAugment shift (fraction of the size) of reals and fakes
    },
    "pretrain": {"epochs": 5},
    "cycles": {"count": 10, "epochs": 20, "samples": 200, "start": "pretrained"},
    "output": {"grid": 64, "sample_batch": 200, "calibration_batches": 16},
}  # fmt: skip

BUILTIN = ("gan", "gan-fast", "gan-tiny")
START_MODES = ("pretrained", "continue")


@dataclass
class GanRecipe:
    """A resolved GAN recipe (``settings`` holds every key of :data:`GAN_DEFAULTS`)."""

    settings: dict
    source: str = ""

    def __getitem__(self, key):
        return self.settings[key]

    @property
    def seed(self) -> int:
        return int(self.settings["seed"])

    def to_dict(self) -> dict:
        return {"settings": copy.deepcopy(self.settings), "source": self.source}


@dataclass
class GanResult:
    """What :func:`train_gan` made: paths and the per-cycle figures."""

    out_dir: Path
    generator: Path
    augmented: Path
    cycles: list = field(default_factory=list)
    overall: dict = field(default_factory=dict)
    history: list = field(default_factory=list)
    seconds: float = 0.0


# ------------------------------------------------------------------------------------------
# recipe
# ------------------------------------------------------------------------------------------
def load_gan_recipe(config: str | os.PathLike, sets: dict[str, Any] | None = None) -> GanRecipe:
    """Read, merge (``extends``), override (``sets``: dotted keys) and validate a GAN recipe.

    Parameters
    ----------
    config : path to a TOML recipe, or a shipped one's name (``"gan"``: the seed's sizes;
        ``"gan-fast"``: a small discriminator and generator for CPU runs; ``"gan-tiny"``: tests)
    sets : dotted-key overrides, e.g. ``{"cycles.count": 2, "optimizer.lr": 1e-4}``
    """
    from .recipe import _apply_sets, _check_keys, _check_types, _load_raw, builtin_recipe_path

    ref = os.fspath(config)
    path = builtin_recipe_path(ref) if ref in BUILTIN and not Path(ref).exists() else Path(ref)
    data = _load_raw(path, builtin=BUILTIN)
    if sets:
        data = _apply_sets(data, sets)
    where = str(path)
    _check_keys(data, GAN_DEFAULTS, where)
    settings: dict[str, Any] = {}
    for key, default in GAN_DEFAULTS.items():
        if key in ("generator", "discriminator"):
            sec = data.get(key, {})
            if not isinstance(sec, dict):
                raise InputError(f"{where}: [{key}] must be a table of model options")
            settings[key] = copy.deepcopy(sec)
        elif isinstance(default, dict):
            sec = data.get(key, {})
            if not isinstance(sec, dict):
                raise InputError(f"{where}: [{key}] must be a table")
            _check_keys(sec, default, f"{where} [{key}]")
            settings[key] = _check_types(sec, default, f"{where} {key}")
        else:
            settings[key] = _check_types({key: data.get(key, default)}, {key: default}, where)[key]
    _check(settings, where)
    if not settings["name"]:
        settings["name"] = path.stem
    return GanRecipe(settings, str(path))


def _check(s: dict, where: str) -> None:
    opt, d, cyc = s["optimizer"], s["data"], s["cycles"]
    if opt["lr"] <= 0 or opt["lr_discriminator"] < 0:
        raise InputError(f"{where} optimizer: lr must be > 0 and lr_discriminator >= 0")
    if len(opt["betas"]) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in opt["betas"]):
        raise InputError(f"{where} optimizer.betas: expected two numbers in [0, 1), got {opt['betas']}")
    if d["batch_size"] < 2:
        raise InputError(f"{where} data.batch_size: must be >= 2 (BatchNorm), got {d['batch_size']}")
    if d["images_per_epoch"] < 0 or d["max_negatives"] < 0:
        raise InputError(f"{where} data: images_per_epoch and max_negatives must be >= 0")
    if d["discriminator_batches"] not in ("bundled", "separate"):
        raise InputError(f"{where} data.discriminator_batches: expected 'bundled' or 'separate', got "
                         f"{d['discriminator_batches']!r}")
    if not 0.0 <= d["translate"] < 0.5:
        raise InputError(f"{where} data.translate: must be in [0, 0.5), got {d['translate']}")
    if not 0.5 < d["real_label"] <= 1.0:
        raise InputError(f"{where} data.real_label: must be in (0.5, 1], got {d['real_label']}")
    if not all(isinstance(c, int) and c >= 0 for c in d["channels"]):
        raise InputError(f"{where} data.channels: expected channel indices (integers >= 0), got {d['channels']}")
    if s["pretrain"]["epochs"] < 0:
        raise InputError(f"{where} pretrain.epochs: must be >= 0 (0 skips pre-training)")
    for k in ("count", "epochs", "samples"):
        if cyc[k] < 1:
            raise InputError(f"{where} cycles.{k}: must be >= 1, got {cyc[k]}")
    if cyc["start"] not in START_MODES:
        raise InputError(f"{where} cycles.start: expected one of {START_MODES}, got {cyc['start']!r}")
    if s["output"]["grid"] < 1 or s["output"]["sample_batch"] < 1 or s["output"]["calibration_batches"] < 0:
        raise InputError(f"{where} output: grid and sample_batch must be >= 1, calibration_batches >= 0")


# ------------------------------------------------------------------------------------------
# pictures
# ------------------------------------------------------------------------------------------
def sample_grid(images: np.ndarray, path: str | os.PathLike, columns: int | None = None, scale: int = 2,
                gap: int = 2) -> Path:
    """Write a PNG grid of uint8 cutouts (N×C×H×W; 3 channels i, r, g shown as R, G, B,
    1 channel as grey), ``scale`` screen pixels per cutout pixel, atomically."""
    from PIL import Image

    a = np.asarray(images)
    if a.ndim != 4 or a.shape[0] == 0:
        raise InputError(f"sample grid: expected N×C×H×W cutouts, got shape {a.shape}")
    if a.dtype != np.uint8:
        from deepmine.inference.generate import to_uint8

        a = to_uint8(a)
    n, c, h, w = a.shape
    if c == 1:
        a = np.repeat(a, 3, axis=1)
    elif c != 3:
        a = a[:, :3] if c > 3 else np.concatenate([a, np.zeros((n, 3 - c, h, w), np.uint8)], 1)
    cols = columns or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    canvas = np.full((rows * (h + gap) + gap, cols * (w + gap) + gap, 3), 40, np.uint8)
    for i in range(n):
        r, q = divmod(i, cols)
        y, x = gap + r * (h + gap), gap + q * (w + gap)
        canvas[y : y + h, x : x + w] = a[i].transpose(1, 2, 0)
    img = Image.fromarray(canvas)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    p = Path(path)
    with atomic_path(p) as tmp:
        img.save(tmp, format="PNG")
    return p


# ------------------------------------------------------------------------------------------
# training
# ------------------------------------------------------------------------------------------
def _stream_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed for the stream (seed, keys...) (stable across runs and platforms)."""
    h = hashlib.sha256(repr((int(seed),) + tuple(int(k) for k in keys)).encode()).digest()
    return int.from_bytes(h[:8], "little") >> 1


def _write_csv(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    keys = list(rows[0])
    for r in rows[1:]:
        keys += [k for k in r if k not in keys]
    with atomic_open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})


def _write_json(path: Path, data) -> None:
    with atomic_open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True, default=str)
        fh.write("\n")


def _rng_state() -> dict:
    import torch

    return {"torch": torch.get_rng_state()}


class _Gan:
    """The two networks, their optimisers and one training step."""

    def __init__(self, recipe: GanRecipe, image_shape: tuple, device: str):
        import torch

        from .registry import create_model

        s = recipe.settings
        c, h, w = image_shape
        if h != w:
            raise InputError(f"GAN: cutouts must be square, got {h}×{w}")
        torch.manual_seed(recipe.seed)
        g_opts = {"channels": c, "size": h, **s["generator"]}
        d_opts = {"in_channels": c, "size": h, **s["discriminator"]}
        self.G = create_model("lensgenerator", **g_opts).to(device)
        self.D = create_model("eznet", **d_opts).to(device)
        if list(self.G.deepmine_config["architecture_config"]["image_shape"]) != [c, h, w]:
            raise InputError(f"GAN: generator options make {self.G.deepmine_config['architecture_config']['image_shape']}"
                             f" images but the data are {c}×{h}×{w}")
        self.spec = self.D.deepmine_config["preprocessing"]
        self.device = device
        self.recipe = recipe
        self.reset_optimizers()

    def reset_optimizers(self) -> None:
        import torch

        o = self.recipe["optimizer"]
        betas = tuple(float(b) for b in o["betas"])
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=o["lr"], betas=betas)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=o["lr_discriminator"] or o["lr"], betas=betas)

    def state(self) -> dict:
        """Weights of both networks and both optimisers' states (CPU tensors)."""
        return {
            "generator": {k: v.detach().cpu() for k, v in self.G.state_dict().items()},
            "discriminator": {
                "architecture": "eznet", "overrides": self.D.deepmine_overrides,
                "state_dict": {k: v.detach().cpu() for k, v in self.D.state_dict().items()},
            },
            "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
        }  # fmt: skip

    def load_state(self, st: dict, optimizers: bool = True) -> None:
        self.G.load_state_dict(st["generator"])
        self.D.load_state_dict(st["discriminator"]["state_dict"])
        if optimizers:
            self.opt_g.load_state_dict(st["opt_g"])
            self.opt_d.load_state_dict(st["opt_d"])
        else:
            self.reset_optimizers()

    def step(self, real, gen) -> dict:
        """One discriminator update and one generator update on a batch of real images."""
        import torch

        G, D = self.G, self.D
        n = real.shape[0]
        real_label = float(self.recipe["data"]["real_label"])
        ones = torch.ones(n, dtype=torch.long, device=self.device)
        zeros = torch.zeros(n, dtype=torch.long, device=self.device)
        z = torch.randn(n, G.latent_dim, generator=gen).to(self.device)
        fake = G.images(z)
        frac = float(self.recipe["data"]["translate"])
        if frac > 0:
            real = translate(real, frac, gen)

        def t(x):
            return translate(x, frac, gen) if frac > 0 else x

        self.opt_d.zero_grad(set_to_none=True)
        if self.recipe["data"]["discriminator_batches"] == "bundled":
            scores = D(torch.cat([real, t(fake.detach())]))
            s_real, s_fake = scores[:n], scores[n:]
        else:
            s_real, s_fake = D(real), D(t(fake.detach()))
        loss_real = _gan_loss(s_real, ones, real_label)
        loss_fake = _gan_loss(s_fake, zeros, 1.0)
        loss_d = loss_real + loss_fake
        loss_d.backward()
        self.opt_d.step()

        self.opt_g.zero_grad(set_to_none=True)
        # the generator is scored in the same kind of batch as the discriminator was trained
        # on: BatchNorm makes a bundled batch's scores differ from a fakes-only batch's
        fake_t = t(fake)
        s_gen = D(torch.cat([real, fake_t]))[n:] if self.recipe["data"]["discriminator_batches"] == "bundled" else D(fake_t)
        loss_g = _gan_loss(s_gen, ones, 1.0)
        loss_g.backward()
        self.opt_g.step()
        with torch.no_grad():
            d_real = torch.sigmoid(s_real[:, 1]).mean().item()
            d_fake = torch.sigmoid(s_fake[:, 1]).mean().item()
        return {"loss_d": float(loss_d.item()), "loss_g": float(loss_g.item()), "d_real": d_real, "d_fake": d_fake}

    def calibrate(self, seed: int, batches: int, batch: int) -> None:
        """Recompute the generator's BatchNorm statistics for its current weights (a cumulative
        average over ``batches`` batches of latent vectors), so that eval mode — and the exported
        graph — reproduces the image distribution of training mode. The running averages kept
        during training lag behind the weights; after a short retraining they can be far off."""
        import torch
        from torch import nn

        bns = [m for m in self.G.modules() if isinstance(m, nn.BatchNorm2d)]
        if not bns or batches < 1:
            return
        momenta = [m.momentum for m in bns]
        for m in bns:
            m.reset_running_stats()
            m.momentum = None
        gen = torch.Generator().manual_seed(seed)
        self.G.train()
        with torch.no_grad():
            for _ in range(batches):
                self.G(torch.randn(batch, self.G.latent_dim, generator=gen).to(self.device))
        for m, mom in zip(bns, momenta):
            m.momentum = mom

    def sample(self, n: int, seed: int, batch: int) -> np.ndarray:
        """``n`` uint8 cutouts from the generator in eval mode (what its ONNX export computes)."""
        import torch

        from deepmine.inference.generate import to_uint8

        gen = torch.Generator().manual_seed(seed)
        self.G.eval()
        out = []
        with torch.no_grad():
            for i in range(0, n, batch):
                k = min(batch, n - i)
                z = torch.randn(k, self.G.latent_dim, generator=gen).to(self.device)
                out.append(to_uint8(self.G.images(z).cpu().numpy()))
        self.G.train()
        return np.concatenate(out)


def translate(x, fraction: float, gen):
    """Shift each image by a random whole number of pixels, up to ``fraction`` of its size in
    each direction, filling with zeros — DiffAugment's translation (Zhao et al. 2020),
    differentiable, applied alike to real and generated images before the discriminator."""
    import torch

    n, _, h, w = x.shape
    my, mx = int(round(fraction * h)), int(round(fraction * w))
    if my == 0 and mx == 0:
        return x
    dy = torch.randint(-my, my + 1, (n, 1, 1), generator=gen).to(x.device)
    dx = torch.randint(-mx, mx + 1, (n, 1, 1), generator=gen).to(x.device)
    gy = torch.arange(h, device=x.device).view(1, h, 1) - dy  # source row of each output row
    gx = torch.arange(w, device=x.device).view(1, 1, w) - dx
    valid = ((gy >= 0) & (gy < h) & (gx >= 0) & (gx < w)).unsqueeze(1).to(x.dtype)  # N×1×H×W
    idx = (gy.clamp(0, h - 1) * w + gx.clamp(0, w - 1)).view(n, 1, h * w).expand(-1, x.shape[1], -1)
    out = torch.gather(x.reshape(n, x.shape[1], h * w), 2, idx).view_as(x)
    return out * valid


def _gan_loss(scores, labels, real_label: float):
    """EZnet's two-sigmoid BCE (the classifier's loss), with optional one-sided smoothing."""
    from .eznet import EZnet

    if real_label >= 1.0:
        return EZnet.loss(scores, labels)
    import torch
    from torch.nn import functional as F

    target = F.one_hot(labels.long(), 2).to(scores.dtype)
    target = torch.where(target > 0, torch.full_like(target, real_label), target)
    return F.binary_cross_entropy_with_logits(scores, target)


def _epoch_batches(source, rows: np.ndarray, spec: dict, batch: int, per_epoch: int, symmetries: bool,
                   rng: np.random.Generator):
    """Preprocessed float32 batches of one epoch over ``rows`` of ``source``."""
    from deepmine.inference.preprocess import prepare_batch

    from .data import random_symmetry

    if per_epoch:
        pick = rows[rng.integers(0, len(rows), per_epoch)] if per_epoch > len(rows) else \
            rows[rng.permutation(len(rows))[:per_epoch]]
    else:
        pick = rows[rng.permutation(len(rows))]
    for i in range(0, len(pick), batch):
        sel = pick[i : i + batch]
        if len(sel) < 2:  # BatchNorm needs two images; a single leftover joins the next epoch
            break
        x = prepare_batch(source.take(sel), spec)
        if symmetries:
            x = random_symmetry(x, rng)
        yield np.ascontiguousarray(x, dtype=np.float32)


def _n_batches(n_rows: int, batch: int, per_epoch: int) -> int:
    m = per_epoch or n_rows
    return m // batch + (1 if m % batch >= 2 else 0)


def train_gan(
    recipe: GanRecipe | str | os.PathLike,
    positives,
    negatives,
    out_dir: str | os.PathLike,
    *,
    resume: bool = False,
    device: str = "cpu",
    progress: Callable | None = None,
    log: Callable[[str], None] | None = None,
) -> GanResult:
    """Train the GAN and write its samples (see the module docstring for the output folder).

    Parameters
    ----------
    recipe : GanRecipe or a recipe path/name
    positives, negatives : path(s) of cutout stacks (.npy/FITS, N×C×H×W, uint8 or float)
    out_dir : output folder (created); must be empty or absent unless ``resume``
    resume : continue from ``out_dir/checkpoint.pt`` (same recipe and data required)
    device : torch device ("cpu", "cuda")
    progress : a :class:`deepmine.inference.progress.Progress`: one stage (``"GAN"``) counting
        training steps, whose note names the phase and cycle
    log : ``log(message)`` for one line per epoch and per cycle
    """
    import torch

    from deepmine.inference.generate import diversity, sidecar_path

    from .checkpoint import read_checkpoint, save_checkpoint
    from .data import describe_file, make_source, open_cutouts

    t0 = time.time()
    if not isinstance(recipe, GanRecipe):
        recipe = load_gan_recipe(recipe)
    s = recipe.settings
    say = log or (lambda m: None)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise file_error(out, "--out must be a folder")
    ckpt_path = out / "checkpoint.pt"
    if resume:
        if not ckpt_path.is_file():
            raise file_error(out, "nothing to resume (no checkpoint.pt); run without --resume")
    elif out.exists() and any(out.iterdir()):
        raise file_error(out, "output folder is not empty; use --resume to continue it or choose a new --out")
    (out / "samples").mkdir(parents=True, exist_ok=True)
    (out / "generators").mkdir(exist_ok=True)

    def paths(v):
        return [Path(p) for p in (v if isinstance(v, (list, tuple)) else [v])]

    pos_files, neg_files = paths(positives), paths(negatives)
    pos_arrays = [(str(p), open_cutouts(p, "--positives")) for p in pos_files]
    neg_arrays = [(str(p), open_cutouts(p, "--negatives")) for p in neg_files]
    channels = s["data"]["channels"] or None
    pos = make_source(pos_arrays, channels, what="--positives")
    shape = pos.image_shape
    neg = make_source(neg_arrays, channels, input_shape=shape, what="--negatives")
    if len(pos) < 2:
        raise InputError(f"--positives: need at least 2 cutouts to train a GAN, got {len(pos)}")
    data_prov = {
        "positives": [describe_file(p, a) for p, a in pos_arrays],
        "negatives": [describe_file(p, a) for p, a in neg_arrays],
    }

    if s["deterministic"]:
        torch.use_deterministic_algorithms(True, warn_only=True)
    gan = _Gan(recipe, shape, device)
    G = gan.G
    spec = gan.spec
    d = s["data"]
    batch = int(d["batch_size"])
    neg_rows = np.arange(len(neg))
    if d["max_negatives"] and len(neg_rows) > d["max_negatives"]:
        neg_rows = np.sort(np.random.default_rng(_stream_seed(recipe.seed, 7)).choice(
            len(neg_rows), d["max_negatives"], replace=False))
    pos_rows = np.arange(len(pos))
    pos_all = pos.take(pos_rows)
    if pos_all.dtype != np.uint8:
        from deepmine.inference.generate import to_uint8
        from deepmine.inference.preprocess import prepare_batch

        pos_all = to_uint8(prepare_batch(pos_all, spec))

    n_pre = int(s["pretrain"]["epochs"])
    cyc = s["cycles"]
    provenance_base = {
        "recipe": recipe.to_dict(), "recipe_name": s["name"], "seed": recipe.seed, "data": data_prov,
        "task": "gan", "discriminator": {"architecture": "eznet", "overrides": gan.D.deepmine_overrides},
        "torch_version": str(torch.__version__), "device": str(device),
    }  # fmt: skip
    from deepmine.inference import __version__

    provenance_base["deepmine_version"] = __version__

    history: list[dict] = []
    cycles_done: list[dict] = []
    # position: (phase, cycle, epoch) of the last completed epoch
    position = {"phase": "start", "cycle": 0, "epoch": 0}
    if resume:
        data = read_checkpoint(ckpt_path)
        ts = data.get("training_state")
        if not ts or ts.get("kind") != "gan":
            raise file_error(ckpt_path, "not a resumable GAN checkpoint")
        old = ts.get("recipe_settings")
        if json.dumps(old, sort_keys=True) != json.dumps(s, sort_keys=True):
            raise file_error(ckpt_path, "the recipe differs from the one this run started with; resume with the "
                                        "same recipe or start a new --out")
        if [x["sha256"] for x in ts["data"]["positives"] + ts["data"]["negatives"]] != \
                [x["sha256"] for x in data_prov["positives"] + data_prov["negatives"]]:
            raise file_error(ckpt_path, "the --positives/--negatives files differ from the run being resumed")
        gan.load_state(ts["state"])
        torch.set_rng_state(ts["rng"]["torch"])
        history = list(ts["history"])
        cycles_done = list(ts["cycles"])
        position = dict(ts["position"])
        say(f"resuming after {position['phase']} cycle {position['cycle']} epoch {position['epoch']}")
    else:
        _write_json(out / "recipe.json", recipe.to_dict())
        sample_grid(pos_all[: s["output"]["grid"]], out / "samples" / "real.png")

    def save(pos_now: dict, extra_path: Path | None = None) -> None:
        ts = {
            "kind": "gan", "recipe_settings": s, "data": data_prov, "state": gan.state(), "rng": _rng_state(),
            "history": history, "cycles": cycles_done, "position": pos_now,
        }  # fmt: skip
        prov = dict(provenance_base, epochs=len(history), position=pos_now)
        save_checkpoint(ckpt_path, G, prov, ts)
        if extra_path is not None:
            save_checkpoint(extra_path, G, prov, ts)

    steps_pre = n_pre * _n_batches(len(neg_rows), batch, d["images_per_epoch"])
    steps_cyc = cyc["epochs"] * _n_batches(len(pos_rows), batch, d["images_per_epoch"])
    total_steps = steps_pre + cyc["count"] * steps_cyc
    done_steps = sum(int(h["steps"]) for h in history)
    advance = stage(progress, "GAN", total_steps)
    if done_steps:
        advance(done_steps)

    def run_epoch(phase: str, cycle: int, epoch: int, source, rows) -> None:
        nonlocal done_steps
        rng = np.random.default_rng(_stream_seed(recipe.seed, 0 if phase == "pretrain" else 1, cycle, epoch))
        gen = torch.Generator().manual_seed(_stream_seed(recipe.seed, 2, 0 if phase == "pretrain" else 1, cycle, epoch))
        te = time.time()
        sums = {"loss_d": 0.0, "loss_g": 0.0, "d_real": 0.0, "d_fake": 0.0}
        k = 0
        G.train()
        gan.D.train()
        for x in _epoch_batches(source, rows, spec, batch, d["images_per_epoch"], d["symmetries"], rng):
            r = gan.step(torch.from_numpy(x).to(device), gen)
            for key in sums:
                sums[key] += r[key]
            k += 1
            done_steps += 1
            advance(1, f"{phase} {cycle}/{cyc['count']}" if cycle else phase)
        row = {"phase": phase, "cycle": cycle, "epoch": epoch, **{key: v / max(k, 1) for key, v in sums.items()},
               "steps": k, "images": k * batch, "seconds": round(time.time() - te, 3)}
        history.append(row)
        _write_csv(out / "losses.csv", history)
        say(f"{phase} cycle {cycle} epoch {epoch}: loss_d {row['loss_d']:.4f} loss_g {row['loss_g']:.4f} "
            f"D(real) {row['d_real']:.3f} D(fake) {row['d_fake']:.3f}")

    # ---- phase 1: pre-training on negatives --------------------------------------------
    if position["phase"] == "start" or position["phase"] == "pretrain":
        first = position["epoch"] + 1 if position["phase"] == "pretrain" else 1
        for epoch in range(first, n_pre + 1):
            run_epoch("pretrain", 0, epoch, neg, neg_rows)
            position = {"phase": "pretrain", "cycle": 0, "epoch": epoch}
            save(position)
        position = {"phase": "pretrained", "cycle": 0, "epoch": 0}
        save(position, out / "pretrained.pt")
    pretrained_state = None
    if cyc["start"] == "pretrained":
        pre = read_checkpoint(out / "pretrained.pt")
        pretrained_state = pre["training_state"]["state"]

    # ---- phase 2: cycles of retraining on positives, sampling after each ----------------
    all_samples = [np.load(out / "samples" / f"cycle_{c['cycle']:02d}.npy") for c in cycles_done]
    start_cycle = len(cycles_done) + 1
    for cycle in range(start_cycle, cyc["count"] + 1):
        resumed_here = position["phase"] == "cycle" and position["cycle"] == cycle
        first = position["epoch"] + 1 if resumed_here else 1
        if not resumed_here and cyc["start"] == "pretrained":
            gan.load_state(pretrained_state, optimizers=False)
        for epoch in range(first, cyc["epochs"] + 1):
            run_epoch("cycle", cycle, epoch, pos, pos_rows)
            position = {"phase": "cycle", "cycle": cycle, "epoch": epoch}
            if epoch < cyc["epochs"]:
                save(position)
        gan.calibrate(_stream_seed(recipe.seed, 4, cycle), s["output"]["calibration_batches"], max(batch, 64))
        samples = gan.sample(cyc["samples"], _stream_seed(recipe.seed, 3, cycle), s["output"]["sample_batch"])
        tag = f"cycle_{cycle:02d}"
        with atomic_path(out / "samples" / f"{tag}.npy") as tmp:
            np.save(tmp, samples)
        sample_grid(samples[: s["output"]["grid"]], out / "samples" / f"{tag}.png")
        all_samples.append(samples)
        fig = diversity(samples, pos_all)
        cum = diversity(np.concatenate(all_samples), pos_all)
        row = {"cycle": cycle, "samples": len(samples), **{f"cycle_{k}": v for k, v in fig.items() if k != "n"},
               "all_n": cum["n"], "all_mean_pairwise": cum["mean_pairwise"],
               "all_nn_train_median": cum["nn_train_median"], "all_memorised_fraction": cum["memorised_fraction"]}
        cycles_done.append(row)
        _write_csv(out / "diversity.csv", cycles_done)
        position = {"phase": "cycle_done", "cycle": cycle, "epoch": cyc["epochs"]}
        save(position, out / "generators" / f"{tag}.pt")
        say(f"cycle {cycle}: {len(samples)} samples, mean pairwise {fig['mean_pairwise']:.4f} (training set "
            f"{fig['train_mean_pairwise']:.4f}), nearest-training median {fig['nn_train_median']:.4f} (training "
            f"nn median {fig['train_pairwise_nn_median']:.4f}), memorised {100 * fig['memorised_fraction']:.1f} %")

    # ---- outputs ---------------------------------------------------------------------------
    samples = np.concatenate(all_samples)
    aug = out / "augmented.npy"
    with atomic_path(aug) as tmp:
        np.save(tmp, samples)
    overall = diversity(samples, pos_all)
    final_prov = dict(provenance_base, epochs=len(history), cycles=cycles_done, overall=overall)
    save_checkpoint(out / "generator.pt", G, final_prov)  # the last cycle's generator, no training state
    _write_json(sidecar_path(aug), {
        "kind": "deepmine.gan_augmented", "n": int(len(samples)), "shape": list(samples.shape), "dtype": "uint8",
        "cycles": int(cyc["count"]), "samples_per_cycle": int(cyc["samples"]), "recipe": s["name"],
        "seed": recipe.seed, "data": data_prov, "bands": G.deepmine_config["bands"],
        "pixels": "round(255 * generator image): percentile-normalised cutouts", "deepmine_version": __version__,
    })  # fmt: skip
    summary = {"cycles": cycles_done, "overall": overall, "seconds": round(time.time() - t0, 1),
               "n_positives": len(pos), "n_negatives_used": int(len(neg_rows)), "recipe": s["name"]}
    _write_json(out / "summary.json", summary)
    return GanResult(out, out / "generator.pt", aug, cycles_done, overall, history, time.time() - t0)


# ------------------------------------------------------------------------------------------
# ablation: does GAN augmentation help the classifier?
# ------------------------------------------------------------------------------------------
#: Classifier used by :func:`augmentation_ablation` unless told otherwise: a 6-block EZnet
#: (the gan-fast discriminator's table) trained by the EZnet recipe's loop for a short time.
ABLATION_SETS = {
    "model.table": [
        {"kernels": 12, "kernel": 5, "size": 32}, {"kernels": 12, "kernel": 3, "size": 16},
        {"kernels": 12, "kernel": 3, "size": 8, "repeat": 2}, {"kernels": 16, "kernel": 3, "size": 4},
        {"kernels": 16, "kernel": 1, "size": 1},
    ],
    "model.hidden": 32, "data.test_fraction": 0.1, "data.positives_per_epoch": 512, "data.batch_positives": 32,
    "optimizer.lr": 0.02, "schedule.milestones": [], "early_stop.patience": 0, "early_stop.restore_best": False,
    "epochs": 12,
}  # fmt: skip


def augmentation_ablation(positives, negatives, augmented, test_positives, test_negatives, out_dir, *,
                          recipe: str = "eznet", sets: dict | None = None, seeds=(0,), extra_arms: dict | None = None,
                          baseline: bool = True, device: str = "cpu",
                          log: Callable[[str], None] | None = None) -> dict:
    """Ranking performance of a classifier trained with and without GAN samples.

    Trains the classifier recipe (default: EZnet with :data:`ABLATION_SETS`) once per seed and
    arm on the same ``positives`` and ``negatives`` — arm ``"real"`` alone, arm ``"real+gan"``
    with ``augmented`` added to the training positives (the trainer's ``extra_positives``;
    its held-out split is drawn from ``positives`` only, identical in both arms) — and, for
    each ``extra_arms`` name → file, one more arm with that file added instead (e.g. more
    LensCrafter lenses: an upper bound); ``baseline=False`` skips arm ``"real"`` (when it was
    measured already with the same settings and seeds). Every model is scored on the held-out set
    ``test_positives`` vs ``test_negatives`` (RP = 2·AUC − 1, seed 4.6) in eval mode.

    Returns ``{"arms": {arm: {"rp": [per seed], "rp_mean", "rp_std"}}, "sizes": {...}}`` and
    writes it to ``out_dir/ablation.json``.
    """
    import torch

    from deepmine.inference.preprocess import prepare_batch
    from deepmine.inference.ranking import ranking_performance

    from .data import open_cutouts
    from .trainer import train

    say = log or (lambda m: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    arms = {"real": None} if baseline else {}
    arms.update({"real+gan": augmented, **(extra_arms or {})})
    tp, tn = open_cutouts(test_positives, "test positives"), open_cutouts(test_negatives, "test negatives")
    settings = dict(ABLATION_SETS if recipe == "eznet" and sets is None else (sets or {}))
    results: dict = {}
    for arm, extra in arms.items():
        rps = []
        for seed in seeds:
            arm_sets = dict(settings, seed=int(seed), **{"phase.main.extra_positives": extra is not None})
            t = time.time()
            res = train(recipe, positives, negatives, out / f"{arm.replace('+', '_')}_seed{seed}",
                        extra_positives=extra, device=device, sets=arm_sets)
            model = res.model.eval()
            spec = model.deepmine_config["preprocessing"]

            def logits(arr, model=model, spec=spec):
                parts = []
                with torch.no_grad():
                    for i in range(0, len(arr), 256):
                        x = torch.from_numpy(prepare_batch(np.asarray(arr[i:i + 256]), spec)).to(device)
                        parts.append(model.positive_logit(model(x)).cpu().numpy())
                return np.concatenate(parts)

            rp = float(ranking_performance(logits(tp), logits(tn)))
            rps.append(rp)
            say(f"ablation {arm} seed {seed}: held-out RP {rp:.4f} ({time.time() - t:.0f} s)")
        results[arm] = {"rp": rps, "rp_mean": float(np.mean(rps)), "rp_std": float(np.std(rps))}
    sizes = {"positives": int(open_cutouts(positives, "positives").shape[0]),
             "negatives": int(open_cutouts(negatives, "negatives").shape[0]),
             "test_positives": int(tp.shape[0]), "test_negatives": int(tn.shape[0])}
    for arm, extra in arms.items():
        if extra is not None:
            sizes[f"extra_{arm}"] = int(open_cutouts(extra, arm).shape[0])
    report = {"arms": results, "sizes": sizes, "seeds": list(seeds), "recipe": recipe, "sets": settings}
    _write_json(out / "ablation.json", report)
    return report
