"""LensGenerator (seed 4.3, Figure 3.1): the DCGAN generator that turns a latent vector into a
3×64×64 cutout.

Architecture (Radford et al. 2015, the implementation the seed cites)
----------------------------------------------------------------------
The seed: "a generator which starts with a random latent vector of size 64. Through four
consecutive transposed convolution blocks, the dimensionality of the latent vector is gradually
increased to 3×64×64". As in Radford et al.'s Figure 1, the latent vector is first *projected*
to a small spatial representation (``8·features`` maps of 4×4 — a 4×4 transposed convolution of
the 1×1 latent, i.e. a linear projection), then four fractionally-strided (transposed)
convolutions, kernel 4, stride 2, padding 1, double the size each time::

    latent L×1×1 ─project→ 8f×4×4 ─T1→ 4f×8×8 ─T2→ 2f×16×16 ─T3→ f×32×32 ─T4→ C×64×64

Every layer but the last is followed by BatchNorm and ReLU; the last by the output activation:
``tanh`` (DCGAN practice; images in −1..1, ``output_range = (-1, 1)``) or ``sigmoid`` (0..1).
Biases are off where BatchNorm follows (it would cancel them); the output layer has one (it
lets the sky level reach the border pixels, which a transposed convolution reaches with half
its kernel; without it a short training leaves a grey frame). Weights are initialised as in
DCGAN: convolutions N(0, 0.02), BatchNorm scale N(1, 0.02), shift 0.

Images in deepmine's convention are percentile-normalised uint8 cutouts / 255 (0..1, the
EZnet input, see :mod:`deepmine.inference.preprocess`); :meth:`LensGenerator.images` maps the
generator's native output to that range, so the EZnet discriminator and the exported ONNX graph
(``latent`` → ``image`` in 0..1) both see the same pixels as a classifier does.

Other sizes: ``size`` must be 4·2^k (k ≥ 1); the number of upsampling blocks is then k (4 for
64×64, the seed's), halving the width each time from ``features·2^(k-1)``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from deepmine.inference.errors import InputError
from deepmine.inference.formats import HSC_BANDS

from .registry import register_model

HSC_PIXEL_SCALE = 0.168
OUTPUT_ACTIVATIONS = {"tanh": (-1.0, 1.0), "sigmoid": (0.0, 1.0)}


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or int(value) < 1:
        raise InputError(f"lensgenerator: {name} must be a positive integer, got {value!r}")
    return int(value)


def dcgan_init(module: nn.Module) -> None:
    """DCGAN weight initialisation (conv N(0, 0.02); BatchNorm scale N(1, 0.02), shift 0)."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


@register_model("lensgenerator")
class LensGenerator(nn.Module):
    """DCGAN generator: latent (N, L) → image (N, C, size, size) in ``output_range``.

    Parameters
    ----------
    latent_dim : int
        Length L of the latent vector (64, the seed's).
    features : int
        Width f of the last upsampling block; earlier blocks have 2f, 4f, 8f maps (64, DCGAN's
        ``ngf``; use 16-32 for fast CPU runs).
    channels : int
        Output bands (3: i, r, g → R, G, B).
    size : int
        Output height = width in pixels (64); must be 4·2^k.
    output : {"tanh", "sigmoid"}
        Output activation (``tanh``: −1..1, DCGAN practice; ``sigmoid``: 0..1).
    bands : list[str] or None
        Band per channel (default ``["i", "r", "g"]`` for 3 channels).
    pixel_scale : float
        Arcsec per pixel of the images it imitates (0.168, HSC).
    """

    architecture = "lensgenerator"

    def __init__(
        self,
        latent_dim: int = 64,
        features: int = 64,
        channels: int = 3,
        size: int = 64,
        output: str = "tanh",
        bands=None,
        pixel_scale: float = HSC_PIXEL_SCALE,
    ):
        super().__init__()
        latent_dim = _positive_int("latent_dim", latent_dim)
        features = _positive_int("features", features)
        channels = _positive_int("channels", channels)
        size = _positive_int("size", size)
        k = math.log2(size / 4) if size >= 8 else -1
        if k < 1 or not float(k).is_integer():
            raise InputError(f"lensgenerator: size must be 4·2^k with k >= 1 (8, 16, 32, 64, 128, ...), got {size}")
        n_up = int(k)
        if output not in OUTPUT_ACTIVATIONS:
            raise InputError(f"lensgenerator: output must be one of {sorted(OUTPUT_ACTIVATIONS)}, got {output!r}")
        if bands is None:
            bands = list(HSC_BANDS) if channels == 3 else [f"b{i}" for i in range(channels)]
        bands = [str(b) for b in bands]
        if len(bands) != channels:
            raise InputError(f"lensgenerator: {len(bands)} band names for {channels} channels")

        width = features * 2 ** (n_up - 1)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(latent_dim, width, 4, 1, 0, bias=False),  # projection to width×4×4
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        ]
        for _ in range(n_up - 1):
            layers += [nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(width // 2),
                       nn.ReLU(inplace=True)]
            width //= 2
        # the output layer keeps its bias: no BatchNorm follows it, and a learned offset lets the
        # dark sky reach the cutout's border pixels, which get half the kernel support inside
        layers.append(nn.ConvTranspose2d(width, channels, 4, 2, 1, bias=True))
        layers.append(nn.Tanh() if output == "tanh" else nn.Sigmoid())
        self.net = nn.Sequential(*layers)
        self.apply(dcgan_init)

        self.latent_dim = latent_dim
        self.output_range = OUTPUT_ACTIVATIONS[output]
        self.deepmine_overrides = {
            "latent_dim": latent_dim, "features": features, "channels": channels, "size": size,
            "output": output, "bands": bands, "pixel_scale": float(pixel_scale),
        }  # fmt: skip
        self.deepmine_config = {
            "architecture": "lensgenerator",
            "task": "generator",
            "architecture_config": {
                "latent_dim": latent_dim, "features": features, "upsampling_blocks": n_up, "kernel": 4,
                "stride": 2, "output_activation": output, "output_range": list(OUTPUT_ACTIVATIONS[output]),
                "image_shape": [channels, size, size],
            },  # fmt: skip
            "input_shape": [latent_dim],
            "bands": bands,
            "pixel_scale": float(pixel_scale),
            "preprocessing": {"kind": "percentile", "low": 0.5, "high": 99.5},
            "outputs": {"image": f"float32 N×{channels}×{size}×{size} in 0..1 (uint8 cutout / 255)"},
        }

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        """Images (N, C, H, W) in the native ``output_range`` from latent vectors (N, L)."""
        return self.net(latent.reshape(latent.shape[0], -1, 1, 1))

    def images(self, latent: torch.Tensor) -> torch.Tensor:
        """Images in 0..1 (deepmine's model-input convention) from latent vectors (N, L)."""
        lo, hi = self.output_range
        img = self.forward(latent)
        return img if (lo, hi) == (0.0, 1.0) else (img - lo) / (hi - lo)

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` standard-normal latent vectors (N, L) (the prior of training and of
        :func:`deepmine.inference.generate.generate`)."""
        return torch.randn(n, self.latent_dim, generator=generator, device=next(self.parameters()).device)
