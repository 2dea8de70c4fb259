"""Layout-conditioned GAN: images that put vehicles where a scene's layout says.

* Generator: ``z`` + condition embedding (weather, time of day, traffic) as a global style, and
  the rasterised layout (:mod:`aigc_synth.data.layout`) injected at **every** resolution by
  SPADE-style modulation (Park et al. 2019): each level normalises its features (BatchNorm without
  affine) and rescales them per pixel by ``1 + γ(layout) + γ(style)`` and shifts by
  ``β(layout) + β(style)``. The style path carries ``z``, so ``z`` decides colours, lighting and
  texture everywhere while the layout decides geometry; a per-level noise map (scaled by a learned
  per-channel weight, StyleGAN's noise inputs) adds the pixel-level variety a fixed layout would
  otherwise freeze.
* Precipitation layer (optional, ``precipitation=True``): rain streaks and snow flakes are sparse,
  pixel-sharp particles laid *over* the scene, which the normalised conv stack above smooths away
  (measured: high-frequency energy 0.58× real under rain, 0.63× under snow, and the lowest coverage
  of any weather). A small head turns one more full-resolution noise map into a per-pixel alpha
  (a pointwise threshold, then a 5×5 smear that can learn slanted streaks) and the style into a
  particle colour, and composites ``image·(1-α) + α·colour`` — the way renderers draw particles.
  It starts with α ≈ 0, so a trained generator can be fine-tuned into it without forgetting.
* Discriminator: the spectral-norm projection discriminator of :mod:`aigc_synth.models.cgan`, fed
  the image **and** the layout as extra input channels, so a vehicle drawn where the layout has none
  (or missing where it has one) is something it can see.

Both are plain modules: ``cardinalities`` and sizes in, no config objects. The generator's noise
maps come from a generator seeded by ``z`` itself, so an image stays a pure function of
``(z, codes, layout)`` (what per-sample seeding in jobs relies on).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from aigc_synth.models.cgan import FactorEmbedding, ProjectionDiscriminator, _num_upsamplings

#: Number of layout channels (:data:`aigc_synth.data.layout.LAYOUT_CHANNELS`), fixed by the format.
LAYOUT_CHANNELS = 6


class SPADENorm(nn.Module):
    """BatchNorm (no affine) modulated per pixel by the layout and per sample by the style."""

    def __init__(self, channels: int, style_dim: int, layout_channels: int, hidden: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.shared = nn.Sequential(nn.Conv2d(layout_channels, hidden, 3, padding=1), nn.ReLU())
        self.gamma = nn.Conv2d(hidden, channels, 3, padding=1)
        self.beta = nn.Conv2d(hidden, channels, 3, padding=1)
        self.style = nn.Linear(style_dim, 2 * channels)
        for layer in (self.gamma, self.beta, self.style):  # start as plain BatchNorm
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, style: torch.Tensor, layout: torch.Tensor) -> torch.Tensor:
        lay = F.interpolate(layout, size=x.shape[-2:], mode="area") if layout.shape[-1] != x.shape[-1] else layout
        h = self.shared(lay)
        g_s, b_s = self.style(style)[:, :, None, None].chunk(2, dim=1)
        return self.bn(x) * (1 + self.gamma(h) + g_s) + self.beta(h) + b_s


class _LayoutBlock(nn.Module):
    """×2 nearest upsampling, 3×3 conv, noise, SPADE norm, ReLU."""

    def __init__(self, c_in: int, c_out: int, style_dim: int, layout_channels: int, hidden: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.noise_weight = nn.Parameter(torch.zeros(1, c_out, 1, 1))
        self.norm = SPADENorm(c_out, style_dim, layout_channels, hidden)

    def forward(self, x: torch.Tensor, style: torch.Tensor, layout: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        x = self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))
        x = x + self.noise_weight * noise
        return F.relu(self.norm(x, style, layout))


class PrecipitationLayer(nn.Module):
    """Particles over an image: α from a full-resolution noise map modulated by the style, colour from
    the style; ``image·(1-α) + α·colour``. The first conv is pointwise (per weather, a threshold on the
    noise: how dense), the next two spread each particle (streak length and slant, flake size)."""

    def __init__(self, style_dim: int, hidden: int = 8):
        super().__init__()
        self.point = nn.Conv2d(1, hidden, 1)
        self.point_style = nn.Linear(style_dim, 2 * hidden)
        self.spread = nn.Sequential(nn.Conv2d(hidden, hidden, 5, padding=2), nn.LeakyReLU(0.2),
                                    nn.Conv2d(hidden, 1, 3, padding=1))
        self.colour = nn.Linear(style_dim, 3)
        nn.init.zeros_(self.point_style.weight)
        nn.init.zeros_(self.point_style.bias)
        nn.init.constant_(self.spread[-1].bias, -6.0)  # α ≈ 0.0025: the base image passes unchanged at the start

    def forward(self, image: torch.Tensor, style: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        gain, shift = self.point_style(style)[:, :, None, None].chunk(2, dim=1)
        h = F.leaky_relu(self.point(noise) * (1 + gain) + shift, 0.2)
        alpha = torch.sigmoid(self.spread(h))
        colour = torch.tanh(self.colour(style))[:, :, None, None]
        return image * (1 - alpha) + alpha * colour


class LayoutGenerator(nn.Module):
    """z (B, z_dim) + codes (B, F) + layout (B, L, R, R) → image (B, 3, R, R) in [-1, 1].

    Widths halve per level from ``base_channels * 2**(levels - 1)`` at 4×4 (the cGAN's schedule)
    down to ``base_channels / 2`` at full resolution, where a last block sees the layout at pixel
    precision before the RGB conv.
    """

    def __init__(self, cardinalities: Sequence[int], resolution: int = 64, z_dim: int = 64,
                 base_channels: int = 32, embed_dim: int = 64, layout_channels: int = LAYOUT_CHANNELS,
                 spade_hidden: int = 32, truncation: float = 1.0, precipitation: bool = False):
        super().__init__()
        n_up = _num_upsamplings(resolution)
        self.z_dim, self.resolution, self.layout_channels = z_dim, resolution, layout_channels
        # truncation trick (BigGAN / StyleGAN): z is scaled by ψ before use; 1 in training. ψ < 1 trades a
        # little variety for fewer broken images from latents far out in the tails (stored in the checkpoint)
        self.truncation = float(truncation)
        self.embed = FactorEmbedding(cardinalities, embed_dim)
        chans = [base_channels * 2 ** (n_up - 1 - i) for i in range(n_up)] + [max(base_channels // 2, 8)]
        self.chans = chans
        style_dim = embed_dim + z_dim
        self.stem = nn.Linear(style_dim, 4 * 4 * chans[0])
        self.stem_norm = SPADENorm(chans[0], style_dim, layout_channels, spade_hidden)
        # the SPADE hidden width shrinks at high resolution, where its convs dominate the cost
        self.blocks = nn.ModuleList(
            _LayoutBlock(chans[i], chans[i + 1], style_dim, layout_channels, spade_hidden if i < n_up - 2 else spade_hidden // 2)
            for i in range(n_up))
        self.to_rgb = nn.Conv2d(chans[-1], 3, 3, padding=1)
        # absent (not merely idle) when off, so checkpoints from before the layer load unchanged
        self.precipitation = PrecipitationLayer(style_dim) if precipitation else None

    def _noise(self, z: torch.Tensor) -> list[torch.Tensor]:
        """Per-sample noise maps for every level (and, last, the precipitation layer's full-resolution
        map), drawn from a generator seeded by that sample's z."""
        sizes = [8 * 2**i for i in range(len(self.blocks))] + ([self.resolution] if self.precipitation is not None else [])
        maps = []
        for b in range(z.shape[0]):
            seed = int((z[b, :4].double() * 1e6).abs().sum().item()) % (2**62)  # a pure function of z
            g = torch.Generator().manual_seed(seed)
            # drawn in level order, the extra map last: the level maps match a generator without the layer
            maps.append([torch.randn(1, 1, s, s, generator=g) for s in sizes])
        return [torch.cat([m[i] for m in maps]).to(z.device) for i in range(len(sizes))]

    def forward(self, z: torch.Tensor, codes: torch.Tensor, layout: torch.Tensor) -> torch.Tensor:
        if self.truncation != 1.0 and not self.training:
            z = z * self.truncation
        style = torch.cat([self.embed(codes), z], dim=1)
        x = self.stem(style).view(z.shape[0], self.chans[0], 4, 4)
        x = F.relu(self.stem_norm(x, style, layout))
        noises = self._noise(z)
        for block, noise in zip(self.blocks, noises):
            x = block(x, style, layout, noise)
        image = torch.tanh(self.to_rgb(x))
        if self.precipitation is not None:
            image = self.precipitation(image, style, noises[-1])
        return image


class LayoutDiscriminator(nn.Module):
    """(image, codes, layout) → logit (B,): the projection discriminator on image ⊕ layout channels."""

    def __init__(self, cardinalities: Sequence[int], resolution: int = 64, base_channels: int = 32,
                 aux_head: bool = False, layout_channels: int = LAYOUT_CHANNELS):
        super().__init__()
        self.net = ProjectionDiscriminator(cardinalities, resolution, base_channels, aux_head=aux_head,
                                           in_channels=3 + layout_channels)

    def forward(self, x: torch.Tensor, codes: torch.Tensor, layout: torch.Tensor, return_aux: bool = False):
        return self.net(torch.cat([x, layout * 2 - 1], dim=1), codes, return_aux=return_aux)
