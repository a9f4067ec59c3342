"""The GAN's training loop: pre-training on negatives, cycles on positives, samples after each.

:func:`train_gan` runs the procedure of :mod:`deepmine.training.gan` and writes its output
folder; :class:`GanRun` holds one run's state (networks, data, history, position) between the
steps. Checkpoints and their resume use :mod:`deepmine.training.checkpoint` and
:mod:`deepmine.training.resume`, as the classifier trainer does. torch is imported when a run
starts, so that importing this module needs no torch.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deepmine.inference.errors import InputError, file_error
from deepmine.inference.progress import stage

from .networks import GanNetworks
from .outputs import sample_grid, save_samples, write_csv, write_json
from .recipe import GanRecipe, load_gan_recipe

__all__ = ["GanResult", "GanRun", "train_gan"]


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


def _epoch_batches(source, rows: np.ndarray, spec: dict, batch: int, per_epoch: int, symmetries: bool,
                   rng: np.random.Generator):
    """Preprocessed float32 batches of one epoch over ``rows`` of ``source``."""
    from ..data import random_symmetry

    if per_epoch:
        pick = rows[rng.integers(0, len(rows), per_epoch)] if per_epoch > len(rows) else \
            rows[rng.permutation(len(rows))[:per_epoch]]
    else:
        pick = rows[rng.permutation(len(rows))]
    for i in range(0, len(pick), batch):
        sel = pick[i : i + batch]
        if len(sel) < 2:  # BatchNorm needs two images; a single leftover joins the next epoch
            break
        x = source.prepared(sel, spec)  # each file's rows normalised once, as the scanner would
        if symmetries:
            x = random_symmetry(x, rng)
        yield np.ascontiguousarray(x, dtype=np.float32)


def _n_batches(n_rows: int, batch: int, per_epoch: int) -> int:
    m = per_epoch or n_rows
    return m // batch + (1 if m % batch >= 2 else 0)


def _check_folder(out: Path, resume: bool) -> None:
    """A new run needs an empty or absent folder; a resumed one its ``checkpoint.pt``."""
    if out.exists() and not out.is_dir():
        raise file_error(out, "--out must be a folder")
    if resume:
        if not (out / "checkpoint.pt").is_file():
            raise file_error(out, "nothing to resume (no checkpoint.pt); run without --resume")
    elif out.exists() and any(out.iterdir()):
        raise file_error(out, "output folder is not empty; use --resume to continue it or choose a new --out")
    (out / "samples").mkdir(parents=True, exist_ok=True)
    (out / "generators").mkdir(exist_ok=True)


class GanRun:
    """One GAN run: its folder, data, networks, history and position (see :func:`train_gan`)."""

    def __init__(self, recipe: GanRecipe, positives, negatives, out: Path, device: str,
                 progress=None, say: Callable[[str], None] = lambda m: None):  # fmt: skip
        import torch

        from deepmine.inference import __version__

        from ..data import describe_file, make_source, open_cutouts
        from ..resume import stream_seed

        self.recipe, self.s, self.out, self.device, self.say = recipe, recipe.settings, out, device, say
        self.ckpt_path = out / "checkpoint.pt"

        def paths(v):
            return [Path(p) for p in (v if isinstance(v, (list, tuple)) else [v])]

        pos_arrays = [(str(p), open_cutouts(p, "--positives")) for p in paths(positives)]
        neg_arrays = [(str(p), open_cutouts(p, "--negatives")) for p in paths(negatives)]
        channels = self.s["data"]["channels"] or None
        self.pos = make_source(pos_arrays, channels, what="--positives")
        shape = self.pos.image_shape
        self.neg = make_source(neg_arrays, channels, input_shape=shape, what="--negatives")
        if len(self.pos) < 2:
            raise InputError(f"--positives: need at least 2 cutouts to train a GAN, got {len(self.pos)}")
        self.data_prov = {
            "positives": [describe_file(p, a) for p, a in pos_arrays],
            "negatives": [describe_file(p, a) for p, a in neg_arrays],
        }

        if self.s["deterministic"]:
            torch.use_deterministic_algorithms(True, warn_only=True)
        self.gan = GanNetworks(recipe, shape, device)
        d = self.s["data"]
        self.batch = int(d["batch_size"])
        self.neg_rows = np.arange(len(self.neg))
        if d["max_negatives"] and len(self.neg_rows) > d["max_negatives"]:
            self.neg_rows = np.sort(np.random.default_rng(stream_seed(recipe.seed, 7)).choice(
                len(self.neg_rows), d["max_negatives"], replace=False))
        self.pos_rows = np.arange(len(self.pos))
        pos_all = self.pos.take(self.pos_rows)
        if pos_all.dtype != np.uint8:
            from deepmine.inference.generate import to_uint8
            from deepmine.inference.preprocess import prepare_batch

            pos_all = to_uint8(prepare_batch(pos_all, self.gan.spec))
        self.pos_all = pos_all
        self.provenance_base = {
            "recipe": recipe.to_dict(), "recipe_name": self.s["name"], "seed": recipe.seed, "data": self.data_prov,
            "task": "gan", "discriminator": {"architecture": "eznet", "overrides": self.gan.D.deepmine_overrides},
            "torch_version": str(torch.__version__), "device": str(device), "deepmine_version": __version__,
        }  # fmt: skip
        self.history: list[dict] = []
        self.cycles_done: list[dict] = []
        #: (phase, cycle, epoch) of the last completed epoch
        self.position = {"phase": "start", "cycle": 0, "epoch": 0}
        self.progress = progress

    # ------------------------------------------------------------------ state
    def start(self, resume: bool) -> None:
        """Continue from the checkpoint (``resume``), or write the recipe and the real-image grid."""
        if resume:
            from ..resume import check_same_data, check_same_recipe, read_training_state, restore_rng

            ts = read_training_state(self.ckpt_path, kind="gan")["training_state"]
            check_same_recipe(self.ckpt_path, ts.get("recipe_settings"), self.s)
            check_same_data(self.ckpt_path, ts["data"], self.data_prov, ("positives", "negatives"),
                            "--positives/--negatives")  # fmt: skip
            self.gan.load_state(ts["state"])
            restore_rng(ts["rng"])
            self.history = list(ts["history"])
            self.cycles_done = list(ts["cycles"])
            self.position = dict(ts["position"])
            p = self.position
            self.say(f"resuming after {p['phase']} cycle {p['cycle']} epoch {p['epoch']}")
        else:
            write_json(self.out / "recipe.json", self.recipe.to_dict())
            sample_grid(self.pos_all[: self.s["output"]["grid"]], self.out / "samples" / "real.png")
        d, cyc = self.s["data"], self.s["cycles"]
        steps_pre = int(self.s["pretrain"]["epochs"]) * _n_batches(len(self.neg_rows), self.batch, d["images_per_epoch"])
        steps_cyc = cyc["epochs"] * _n_batches(len(self.pos_rows), self.batch, d["images_per_epoch"])
        self.done_steps = sum(int(h["steps"]) for h in self.history)
        self.advance = stage(self.progress, "GAN", steps_pre + cyc["count"] * steps_cyc)
        if self.done_steps:
            self.advance(self.done_steps)

    def save(self, position: dict, extra_path: Path | None = None) -> None:
        """Write the resumable ``checkpoint.pt`` at ``position`` (and a copy at ``extra_path``)."""
        from ..checkpoint import save_checkpoint
        from ..resume import rng_state

        self.position = position
        ts = {
            "kind": "gan", "recipe_settings": self.s, "data": self.data_prov, "state": self.gan.state(),
            "rng": rng_state(), "history": self.history, "cycles": self.cycles_done, "position": position,
        }  # fmt: skip
        prov = dict(self.provenance_base, epochs=len(self.history), position=position)
        save_checkpoint(self.ckpt_path, self.gan.G, prov, ts)
        if extra_path is not None:
            save_checkpoint(extra_path, self.gan.G, prov, ts)

    # ------------------------------------------------------------------ training
    def run_epoch(self, phase: str, cycle: int, epoch: int, source, rows) -> None:
        """One epoch of discriminator and generator steps; a row of ``losses.csv``."""
        import torch

        from ..resume import stream_seed

        seed, d, gan = self.recipe.seed, self.s["data"], self.gan
        rng = np.random.default_rng(stream_seed(seed, 0 if phase == "pretrain" else 1, cycle, epoch))
        gen = torch.Generator().manual_seed(stream_seed(seed, 2, 0 if phase == "pretrain" else 1, cycle, epoch))
        te = time.time()
        sums = {"loss_d": 0.0, "loss_g": 0.0, "d_real": 0.0, "d_fake": 0.0}
        k = 0
        gan.G.train()
        gan.D.train()
        for x in _epoch_batches(source, rows, gan.spec, self.batch, d["images_per_epoch"], d["symmetries"], rng):
            r = gan.step(torch.from_numpy(x).to(self.device), gen)
            for key in sums:
                sums[key] += r[key]
            k += 1
            self.done_steps += 1
            self.advance(1, f"{phase} {cycle}/{self.s['cycles']['count']}" if cycle else phase)
        row = {"phase": phase, "cycle": cycle, "epoch": epoch, **{key: v / max(k, 1) for key, v in sums.items()},
               "steps": k, "images": k * self.batch, "seconds": round(time.time() - te, 3)}
        self.history.append(row)
        write_csv(self.out / "losses.csv", self.history)
        self.say(f"{phase} cycle {cycle} epoch {epoch}: loss_d {row['loss_d']:.4f} loss_g {row['loss_g']:.4f} "
                 f"D(real) {row['d_real']:.3f} D(fake) {row['d_fake']:.3f}")

    def pretrain(self) -> None:
        """Phase 1: pre-training on negatives (what is left of it); ``pretrained.pt``."""
        p = self.position
        if p["phase"] not in ("start", "pretrain"):
            return
        first = p["epoch"] + 1 if p["phase"] == "pretrain" else 1
        for epoch in range(first, int(self.s["pretrain"]["epochs"]) + 1):
            self.run_epoch("pretrain", 0, epoch, self.neg, self.neg_rows)
            self.save({"phase": "pretrain", "cycle": 0, "epoch": epoch})
        self.save({"phase": "pretrained", "cycle": 0, "epoch": 0}, self.out / "pretrained.pt")

    def cycles(self) -> list[np.ndarray]:
        """Phase 2: cycles of retraining on positives, sampling after each; every cycle's samples."""
        from deepmine.inference.generate import diversity

        from ..checkpoint import read_checkpoint
        from ..resume import stream_seed

        s, cyc, gan, out = self.s, self.s["cycles"], self.gan, self.out
        pretrained_state = None
        if cyc["start"] == "pretrained":
            pretrained_state = read_checkpoint(out / "pretrained.pt")["training_state"]["state"]
        all_samples = [np.load(out / "samples" / f"cycle_{c['cycle']:02d}.npy") for c in self.cycles_done]
        for cycle in range(len(self.cycles_done) + 1, cyc["count"] + 1):
            resumed_here = self.position["phase"] == "cycle" and self.position["cycle"] == cycle
            first = self.position["epoch"] + 1 if resumed_here else 1
            if not resumed_here and cyc["start"] == "pretrained":
                gan.load_state(pretrained_state, optimizers=False)
            for epoch in range(first, cyc["epochs"] + 1):
                self.run_epoch("cycle", cycle, epoch, self.pos, self.pos_rows)
                self.position = {"phase": "cycle", "cycle": cycle, "epoch": epoch}
                if epoch < cyc["epochs"]:
                    self.save(self.position)
            gan.calibrate(stream_seed(self.recipe.seed, 4, cycle), s["output"]["calibration_batches"], max(self.batch, 64))
            samples = gan.sample(cyc["samples"], stream_seed(self.recipe.seed, 3, cycle), s["output"]["sample_batch"])
            tag = f"cycle_{cycle:02d}"
            save_samples(out / "samples" / f"{tag}.npy", samples)
            sample_grid(samples[: s["output"]["grid"]], out / "samples" / f"{tag}.png")
            all_samples.append(samples)
            fig = diversity(samples, self.pos_all)
            cum = diversity(np.concatenate(all_samples), self.pos_all)
            row = {"cycle": cycle, "samples": len(samples), **{f"cycle_{k}": v for k, v in fig.items() if k != "n"},
                   "all_n": cum["n"], "all_mean_pairwise": cum["mean_pairwise"],
                   "all_nn_train_median": cum["nn_train_median"], "all_memorised_fraction": cum["memorised_fraction"]}
            self.cycles_done.append(row)
            write_csv(out / "diversity.csv", self.cycles_done)
            self.save({"phase": "cycle_done", "cycle": cycle, "epoch": cyc["epochs"]}, out / "generators" / f"{tag}.pt")
            self.say(f"cycle {cycle}: {len(samples)} samples, mean pairwise {fig['mean_pairwise']:.4f} (training set "
                     f"{fig['train_mean_pairwise']:.4f}), nearest-training median {fig['nn_train_median']:.4f} "
                     f"(training nn median {fig['train_pairwise_nn_median']:.4f}), memorised "
                     f"{100 * fig['memorised_fraction']:.1f} %")
        return all_samples

    def finish(self, all_samples: list[np.ndarray], t0: float) -> GanResult:
        """``augmented.npy`` with its sidecar, ``generator.pt`` and ``summary.json``."""
        from deepmine.inference.generate import diversity, sidecar_path

        from ..checkpoint import save_checkpoint

        s, cyc, out, G = self.s, self.s["cycles"], self.out, self.gan.G
        samples = np.concatenate(all_samples)
        aug = save_samples(out / "augmented.npy", samples)
        overall = diversity(samples, self.pos_all)
        final_prov = dict(self.provenance_base, epochs=len(self.history), cycles=self.cycles_done, overall=overall)
        save_checkpoint(out / "generator.pt", G, final_prov)  # the last cycle's generator, no training state
        write_json(sidecar_path(aug), {
            "kind": "deepmine.gan_augmented", "n": int(len(samples)), "shape": list(samples.shape), "dtype": "uint8",
            "cycles": int(cyc["count"]), "samples_per_cycle": int(cyc["samples"]), "recipe": s["name"],
            "seed": self.recipe.seed, "data": self.data_prov, "bands": G.deepmine_config["bands"],
            "pixels": "round(255 * generator image): percentile-normalised cutouts",
            "deepmine_version": self.provenance_base["deepmine_version"],
        })  # fmt: skip
        summary = {"cycles": self.cycles_done, "overall": overall, "seconds": round(time.time() - t0, 1),
                   "n_positives": len(self.pos), "n_negatives_used": int(len(self.neg_rows)), "recipe": s["name"]}
        write_json(out / "summary.json", summary)
        return GanResult(out, out / "generator.pt", aug, self.cycles_done, overall, self.history, time.time() - t0)


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
    """Train the GAN and write its samples (see :mod:`deepmine.training.gan` for the output folder).

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

    Returns
    -------
    GanResult
    """
    t0 = time.time()
    if not isinstance(recipe, GanRecipe):
        recipe = load_gan_recipe(recipe)
    out = Path(out_dir)
    _check_folder(out, resume)
    run = GanRun(recipe, positives, negatives, out, device, progress, log or (lambda m: None))
    run.start(resume)
    run.pretrain()
    return run.finish(run.cycles(), t0)
