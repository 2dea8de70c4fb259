"""Conditional GAN for driving scenes: SNGAN/BigGAN-style, sized for CPU training.

* Generator: latent ``z`` plus a learned condition embedding; 4×4 transposed-conv blocks with **conditional BatchNorm** (gain and bias predicted from the condition), so every resolution
  level sees the requested weather, time and traffic.
* Discriminator: spectrally normalised conv stack, global sum pooling, and a **projection** head
  ``ψ(φ(x)) + Σ_f ⟨embed_f(y_f), φ(x)⟩`` (Miyato & Koyama 2018) with one embedding per factor.

Both take per-factor integer codes ``(B, F)``; ``cardinalities`` comes from the condition schema,
so a model for another schema needs no code change. The modules never read config objects.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import spectral_norm


def num_upsamplings(resolution: int) -> int:
    n = int(round(math.log2(resolution / 4)))
    if resolution not in (32, 64, 128) or 4 * 2**n != resolution:
        raise ValueError(f"resolution must be 32, 64 or 128, got {resolution}")
    return n


class FactorEmbedding(nn.Module):
    """Sum of one learned embedding per condition factor: codes (B, F) → (B, dim)."""

    def __init__(self, cardinalities: Sequence[int], dim: int):
        super().__init__()
        self.tables = nn.ModuleList(nn.Embedding(int(c), dim) for c in cardinalities)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return sum(table(codes[:, f]) for f, table in enumerate(self.tables))


class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm without its own affine; gain and bias come from the condition embedding."""

    def __init__(self, channels: int, cond_dim: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.gain = nn.Linear(cond_dim, channels)
        self.bias = nn.Linear(cond_dim, channels)
        nn.init.zeros_(self.gain.weight)
        nn.init.ones_(self.gain.bias)
        nn.init.zeros_(self.bias.weight)
        nn.init.zeros_(self.bias.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.bn(x) * self.gain(cond)[:, :, None, None] + self.bias(cond)[:, :, None, None]


class _GenBlock(nn.Module):
    """×2 upsampling by a 4×4 transposed conv, then conditional BatchNorm and ReLU."""

    def __init__(self, c_in: int, c_out: int, cond_dim: int):
        super().__init__()
        self.conv = nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=False)
        self.norm = ConditionalBatchNorm2d(c_out, cond_dim)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.conv(x), cond))


class CondGenerator(nn.Module):
    """z (B, z_dim) + codes (B, F) → image (B, 3, R, R) in [-1, 1].

    Channel widths halve at every level (base*8 at 4×4 … base at R/2), the DCGAN schedule, which
    keeps the forward pass cheap enough to train and serve on CPUs; the final transposed conv
    maps to RGB at full resolution.
    """

    def __init__(self, cardinalities: Sequence[int], resolution: int = 64, z_dim: int = 64,
                 base_channels: int = 32, embed_dim: int = 64):
        super().__init__()
        n_up = num_upsamplings(resolution)
        self.z_dim, self.resolution = z_dim, resolution
        self.embed = FactorEmbedding(cardinalities, embed_dim)
        chans = [base_channels * 2 ** (n_up - 1 - i) for i in range(n_up)]  # 4×4 … R/2
        self.chans = chans
        self.stem = nn.Linear(z_dim + embed_dim, 4 * 4 * chans[0])
        # every conditional BatchNorm sees [condition embedding, z] (BigGAN's shared + hierarchical
        # latent): z then steers every level, which counters the latent being ignored (mode collapse)
        style_dim = embed_dim + z_dim
        self.stem_norm = ConditionalBatchNorm2d(chans[0], style_dim)
        self.blocks = nn.ModuleList(_GenBlock(chans[i], chans[i + 1], style_dim) for i in range(n_up - 1))
        self.to_rgb = nn.ConvTranspose2d(chans[-1], 3, 4, stride=2, padding=1)

    def forward(self, z: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        cond = self.embed(codes)
        style = torch.cat([cond, z], dim=1)
        x = self.stem(torch.cat([z, cond], dim=1)).view(z.shape[0], self.chans[0], 4, 4)
        x = F.relu(self.stem_norm(x, style))
        for block in self.blocks:
            x = block(x, style)
        return torch.tanh(self.to_rgb(x))


class MinibatchStdDev(nn.Module):
    """Append the mean per-group feature standard deviation as one extra channel (ProGAN).

    It lets the discriminator see a batch's lack of variety, so a generator that ignores ``z``
    (mode collapse) is penalised. Only used in training; sampling never runs the discriminator.
    """

    def __init__(self, group_size: int = 4):
        super().__init__()
        self.group_size = group_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        g = min(self.group_size, b)
        while b % g:
            g -= 1
        y = x.view(g, -1, c, h, w)
        y = (y.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # (b/g,)
        y = y.repeat(g).view(b, 1, 1, 1).expand(b, 1, h, w)
        return torch.cat([x, y], dim=1)


class ProjectionDiscriminator(nn.Module):
    """Spectral-norm discriminator with a projection head: (image, codes) → logit (B,).

    Strided 4×4 convs (base … base*8 channels) down to 4×4, a minibatch-stddev channel, global sum
    pooling for φ(x), then ψ(φ) plus one inner-product projection per condition factor.
    """

    def __init__(self, cardinalities: Sequence[int], resolution: int = 64, base_channels: int = 32,
                 aux_head: bool = False, in_channels: int = 3):
        super().__init__()
        n_down = num_upsamplings(resolution)
        chans = [base_channels * 2**i for i in range(n_down)]
        layers: list[nn.Module] = [spectral_norm(nn.Conv2d(in_channels, chans[0], 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
        for i in range(n_down - 1):
            layers += [spectral_norm(nn.Conv2d(chans[i], chans[i + 1], 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
        layers += [MinibatchStdDev(), spectral_norm(nn.Conv2d(chans[-1] + 1, chans[-1], 3, padding=1)), nn.LeakyReLU(0.2)]
        self.features = nn.Sequential(*layers)
        self.head = spectral_norm(nn.Linear(chans[-1], 1))
        self.projections = nn.ModuleList(spectral_norm(nn.Embedding(int(c), chans[-1])) for c in cardinalities)
        # optional auxiliary classifier (AC-GAN, Odena et al. 2017) on the same features: one linear
        # head per factor, trained on real images only; the generator is rewarded when its images
        # are classified as requested, which sharpens conditions the projection alone renders weakly
        # (the vehicle count behind ``traffic``)
        self.aux_heads = (nn.ModuleList(spectral_norm(nn.Linear(chans[-1], int(c))) for c in cardinalities)
                          if aux_head else None)

    def forward(self, x: torch.Tensor, codes: torch.Tensor, return_aux: bool = False):
        """Logit (B,); with ``return_aux`` also a list of per-factor class logits (B, C_f)."""
        phi = self.features(x).sum(dim=(2, 3))
        out = self.head(phi).squeeze(1)
        for f, proj in enumerate(self.projections):
            out = out + (proj(codes[:, f]) * phi).sum(dim=1)
        if not return_aux:
            return out
        if self.aux_heads is None:
            raise ValueError("this discriminator was built without aux_head")
        # sum-pooled φ as in StudioGAN's ACGAN head: with spectral norm everywhere a mean-pooled φ
        # kept the class logits too small to ever become confident (measured: CE stuck near chance)
        return out, [head(phi) for head in self.aux_heads]
