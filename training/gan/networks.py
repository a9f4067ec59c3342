"""The GAN's two networks: a LensGenerator and an EZnet discriminator, their Adam optimisers,
one training step, BatchNorm calibration and sampling; DiffAugment's translation and the loss.

See :mod:`deepmine.training.gan` for the procedure these pieces serve. torch is imported inside
the functions, so that importing :mod:`deepmine.training.gan` needs no torch.
"""
from __future__ import annotations

import numpy as np

from deepmine.inference.errors import InputError

from .recipe import GanRecipe

__all__ = ["GanNetworks", "translate", "gan_loss"]


class GanNetworks:
    """The two networks, their optimisers and one training step."""

    def __init__(self, recipe: GanRecipe, image_shape: tuple, device: str):
        import torch

        from ..registry import create_model

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
        loss_real = gan_loss(s_real, ones, real_label)
        loss_fake = gan_loss(s_fake, zeros, 1.0)
        loss_d = loss_real + loss_fake
        loss_d.backward()
        self.opt_d.step()

        self.opt_g.zero_grad(set_to_none=True)
        # the generator is scored in the same kind of batch as the discriminator was trained
        # on: BatchNorm makes a bundled batch's scores differ from a fakes-only batch's
        fake_t = t(fake)
        s_gen = D(torch.cat([real, fake_t]))[n:] if self.recipe["data"]["discriminator_batches"] == "bundled" else D(fake_t)
        loss_g = gan_loss(s_gen, ones, 1.0)
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


def gan_loss(scores, labels, real_label: float):
    """EZnet's two-sigmoid BCE (the classifier's loss), with optional one-sided smoothing."""
    from ..eznet import EZnet

    if real_label >= 1.0:
        return EZnet.loss(scores, labels)
    import torch
    from torch.nn import functional as F

    target = F.one_hot(labels.long(), 2).to(scores.dtype)
    target = torch.where(target > 0, torch.full_like(target, real_label), target)
    return F.binary_cross_entropy_with_logits(scores, target)
