"""Layout-conditioned GAN: images that put vehicles where a scene's layout says.

* Generator: ``z`` + condition embedding (weather, time of day, traffic) as a global style, and
  the rasterised layout (:mod:`aigc_synth.data.layout`) injected at **every** resolution by
  SPADE-style modulation (Park et al. 2019): each level normalises its features (BatchNorm without
  affine) and rescales them per pixel by ``1 + γ(layout) + γ(style)`` and shifts by
  ``β(layout) + β(style)``. The style path carries ``z``, so ``z`` decides colours, lighting and
  texture everywhere while the layout decides geometry; a per-level noise map (scaled by a learned
  per-channel weight, StyleGAN's noise inputs) adds the pixel-level variety a fixed layout would
  otherwise freeze.
* Particle overlay (optional, ``particles=True``): the renderer's rain streaks and snow flakes,
  drawn over the image by a fixed, weightless overlay (:mod:`aigc_synth.models.particles`).
* Per-vehicle codes (optional, ``instance_codes=C``): the global style gives every car of an image
  the same look, while the renderer draws each vehicle's colour on its own. Each vehicle face of the
  layout (:func:`vehicle_instances`) is filled with its own random C-vector (drawn from z's
  generator), which every SPADE norm reads beside the layout — LostGAN's instance-specific
  modulation (Sun & Wu 2019) without box tokens. Zero-initialised, so also fine-tunable.
  Experimental: a measured fine-tune with them raised variety but with noise, and lost FD.
* Unknown layout channels (optional, ``layout_unknown_flags=True``): one input plane per layout
  channel, 1 where a data set does not annotate that channel (COCO has no lanes or road area), beside
  the raster, for the generator's SPADE convs and the discriminator alike
  (:func:`~aigc_synth.data.annotation_layout.with_unknown_flags`; why: :mod:`aigc_synth.data.annotated_images`).
* Discriminator: the spectral-norm projection discriminator of :mod:`aigc_synth.models.cgan`, fed
  the image **and** the layout as extra input channels, so a vehicle drawn where the layout has none
  (or missing where it has one) is something it can see.

Both are plain modules: ``cardinalities`` and sizes in, no config objects. The generator's noise
maps come from a generator seeded by ``z`` itself, so an image stays a pure function of
``(z, codes, layout)`` (what per-sample seeding in jobs relies on).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from aigc_synth.data.annotation_layout import with_unknown_flags
from aigc_synth.models.cgan import FactorEmbedding, ProjectionDiscriminator, num_upsamplings
from aigc_synth.models.particles import ParticleOverlay

#: Number of layout channels (:data:`aigc_synth.data.layout.LAYOUT_CHANNELS`), fixed by the format.
LAYOUT_CHANNELS = 6


def _at(m: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``m`` area-resampled to ``x``'s spatial size."""
    return F.interpolate(m, size=x.shape[-2:], mode="area") if m.shape[-1] != x.shape[-1] else m


def vehicle_instances(layout: torch.Tensor) -> torch.Tensor:
    """(B, L, R, R) layout → (B, R, R) int64 instance ids (0 = no vehicle), a pure function of the layout.

    A vehicle's id is the largest pixel index of its face's interior (the face channels minus the
    ``edges`` ring, so touching vehicles stay apart), found by propagating the maximum over
    8-connected interior pixels; ring pixels then take a neighbouring interior's id. Faces hidden
    behind others are only their visible part; faces too small for an interior get no id."""
    b, _, h, w = layout.shape
    face = (layout[:, 2] + layout[:, 3]) > 0.5
    interior = face & (layout[:, 5] < 0.5)
    ids = torch.arange(1, h * w + 1, dtype=layout.dtype, device=layout.device).view(1, h, w).expand(b, h, w)
    lab = torch.where(interior, ids, torch.zeros_like(ids))
    for _ in range(h + w):  # at most the longest path through a face
        grown = F.max_pool2d(lab[:, None], 3, 1, 1)[:, 0] * interior
        if torch.equal(grown, lab):
            break
        lab = grown
    ring = face & ~interior
    lab = torch.where(ring, F.max_pool2d(lab[:, None], 3, 1, 1)[:, 0], lab)
    return lab.long()


class SPADENorm(nn.Module):
    """BatchNorm (no affine) modulated per pixel by the layout and per sample by the style."""

    def __init__(self, channels: int, style_dim: int, layout_channels: int, hidden: int, instance_codes: int = 0):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.shared = nn.Sequential(nn.Conv2d(layout_channels, hidden, 3, padding=1), nn.ReLU())
        # per-vehicle random codes (LostGAN's instance-specific modulation): zero at the start, so a
        # trained generator can be fine-tuned into them without changing its images
        self.instance = nn.Conv2d(instance_codes, hidden, 3, padding=1) if instance_codes else None
        if self.instance is not None:
            nn.init.zeros_(self.instance.weight)
            nn.init.zeros_(self.instance.bias)
        self.gamma = nn.Conv2d(hidden, channels, 3, padding=1)
        self.beta = nn.Conv2d(hidden, channels, 3, padding=1)
        self.style = nn.Linear(style_dim, 2 * channels)
        for layer in (self.gamma, self.beta, self.style):  # start as plain BatchNorm
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, style: torch.Tensor, layout: torch.Tensor,
                instance: torch.Tensor | None = None) -> torch.Tensor:
        lay = _at(layout, x)
        if self.instance is not None:
            h = F.relu(self.shared[0](lay) + self.instance(_at(instance, x)))
        else:
            h = self.shared(lay)
        g_s, b_s = self.style(style)[:, :, None, None].chunk(2, dim=1)
        return self.bn(x) * (1 + self.gamma(h) + g_s) + self.beta(h) + b_s


class _LayoutBlock(nn.Module):
    """×2 nearest upsampling, 3×3 conv, noise, SPADE norm, ReLU."""

    def __init__(self, c_in: int, c_out: int, style_dim: int, layout_channels: int, hidden: int, instance_codes: int = 0):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.noise_weight = nn.Parameter(torch.zeros(1, c_out, 1, 1))
        self.norm = SPADENorm(c_out, style_dim, layout_channels, hidden, instance_codes)

    def forward(self, x: torch.Tensor, style: torch.Tensor, layout: torch.Tensor, noise: torch.Tensor,
                instance: torch.Tensor | None = None) -> torch.Tensor:
        x = self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))
        x = x + self.noise_weight * noise
        return F.relu(self.norm(x, style, layout, instance))


class LayoutGenerator(nn.Module):
    """z (B, z_dim) + codes (B, F) + layout (B, L, R, R) → image (B, 3, R, R) in [-1, 1].

    Widths halve per level from ``base_channels * 2**(levels - 1)`` at 4×4 (the cGAN's schedule)
    down to ``base_channels / 2`` at full resolution, where a last block sees the layout at pixel
    precision before the RGB conv.
    """

    def __init__(self, cardinalities: Sequence[int], resolution: int = 64, z_dim: int = 64,
                 base_channels: int = 32, embed_dim: int = 64, layout_channels: int = LAYOUT_CHANNELS,
                 spade_hidden: int = 32, truncation: float = 1.0, instance_codes: int = 0, particles: bool = False,
                 factors: Sequence[tuple[str, Sequence[str]]] | None = None, calibration_factors: Sequence[int] = (),
                 layout_unknown_flags: bool = False):
        super().__init__()
        n_up = num_upsamplings(resolution)
        self.z_dim, self.resolution, self.layout_channels = z_dim, resolution, layout_channels
        # one "unknown" plane per layout channel beside the raster (data/annotated_images.py): every SPADE
        # conv then reads 2 × layout_channels inputs; a plain (scene) layout gets zero planes
        self.layout_unknown_flags = bool(layout_unknown_flags)
        layout_channels = layout_channels * (2 if self.layout_unknown_flags else 1)
        # truncation trick (BigGAN / StyleGAN): z is scaled by ψ before use; 1 in training. ψ < 1 trades a
        # little variety for fewer broken images from latents far out in the tails (stored in the checkpoint)
        self.truncation = float(truncation)
        self.embed = FactorEmbedding(cardinalities, embed_dim)
        chans = [base_channels * 2 ** (n_up - 1 - i) for i in range(n_up)] + [max(base_channels // 2, 8)]
        self.chans = chans
        style_dim = embed_dim + z_dim
        self.stem = nn.Linear(style_dim, 4 * 4 * chans[0])
        self.instance_codes = int(instance_codes)
        self.stem_norm = SPADENorm(chans[0], style_dim, layout_channels, spade_hidden, self.instance_codes)
        # the SPADE hidden width shrinks at high resolution, where its convs dominate the cost
        self.blocks = nn.ModuleList(
            _LayoutBlock(chans[i], chans[i + 1], style_dim, layout_channels,
                         spade_hidden if i < n_up - 2 else spade_hidden // 2, self.instance_codes)
            for i in range(n_up))
        self.to_rgb = nn.Conv2d(chans[-1], 3, 3, padding=1)
        # per-condition row-colour calibration (training/calibration.py): a (K, 3, R) table of offsets
        # added to each image row at sampling time, K = the combinations of the factors it is keyed by;
        # fitted after training, zero (and absent) until then, never applied in training mode
        self.calibration_factors = tuple(int(f) for f in calibration_factors)
        self.cardinalities = tuple(int(c) for c in cardinalities)
        if self.calibration_factors:
            keys = math.prod(self.cardinalities[f] for f in self.calibration_factors)
            self.register_buffer("row_calibration", torch.zeros(keys, 3, resolution))
        else:
            self.row_calibration = None
        # the renderer's rain streaks / snow flakes drawn over the image (models/particles.py); needs the
        # schema's factor names and values (``factors``) to know which codes mean rain, snow, night
        self.set_particles(particles, factors)

    def set_particles(self, enabled: bool, factors: Sequence[tuple[str, Sequence[str]]] | None = None) -> None:
        """Switch the fixed particle overlay (:class:`~aigc_synth.models.particles.ParticleOverlay`) on or
        off; ``factors`` are the schema's ``(name, values)`` pairs. It has no weights, so a trained
        generator can switch."""
        if enabled and factors is None:
            raise ValueError("particles=True needs factors: the condition schema's (name, values) pairs")
        self.particles = ParticleOverlay(factors, self.resolution) if enabled else None

    def _noise(self, z: torch.Tensor) -> list[torch.Tensor]:
        """Per-sample noise maps for every level, then the per-vehicle code tables and the particle
        overlay's uniform seeds and light jitter when those are on, drawn from a generator seeded by that
        sample's z (optional inputs last, so the level maps never depend on them)."""
        shapes = [(1, 8 * 2**i) for i in range(len(self.blocks))]
        maps, tables = [], []
        for b in range(z.shape[0]):
            seed = int((z[b, :4].double() * 1e6).abs().sum().item()) % (2**62)  # a pure function of z
            g = torch.Generator().manual_seed(seed)
            # drawn in level order, the optional inputs after: the level maps match a generator without them
            maps.append([torch.randn(1, c, s, s, generator=g) for c, s in shapes])
            if self.instance_codes:  # one code per possible instance id (ids are pixel indices + 1)
                tables.append(torch.randn(self.resolution**2 + 1, self.instance_codes, generator=g))
            if self.particles is not None:  # uniform seeds and a light jitter, after everything else
                maps[-1].append(torch.rand(1, 1, self.resolution, self.resolution, generator=g))
                maps[-1].append(torch.rand(1, generator=g))
        n = len(shapes) + (2 if self.particles is not None else 0)
        out = [torch.cat([m[i] for m in maps]).to(z.device) for i in range(n)]
        return out, (torch.stack(tables).to(z.device) if tables else None)

    def _instance_map(self, layout: torch.Tensor, tables: torch.Tensor) -> torch.Tensor:
        """(B, instance_codes, R, R): each vehicle's face filled with its own random code, 0 elsewhere."""
        ids = vehicle_instances(layout)  # (B, R, R)
        codes = torch.gather(tables, 1, ids.flatten(1)[..., None].expand(-1, -1, tables.shape[-1]))
        codes = codes * (ids.flatten(1) > 0)[..., None]
        return codes.transpose(1, 2).reshape(layout.shape[0], -1, *ids.shape[1:])

    def forward(self, z: torch.Tensor, codes: torch.Tensor, layout: torch.Tensor) -> torch.Tensor:
        if self.truncation != 1.0 and not self.training:
            z = z * self.truncation
        if self.layout_unknown_flags:
            layout = with_unknown_flags(layout)
        cond = self.embed(codes)
        style = torch.cat([cond, z], dim=1)
        noises, tables = self._noise(z)
        inst = self._instance_map(layout, tables) if tables is not None else None
        x = self.stem(style).view(z.shape[0], self.chans[0], 4, 4)
        x = F.relu(self.stem_norm(x, style, layout, inst))
        for block, noise in zip(self.blocks, noises):
            x = block(x, style, layout, noise, inst)
        image = torch.tanh(self.to_rgb(x))
        if self.particles is not None:
            image = self.particles(image, codes, layout, noises[-2], noises[-1])
        if self.row_calibration is not None and not self.training:
            key = calibration_keys(codes, self.calibration_factors, self.cardinalities)
            image = (image + self.row_calibration[key][..., None]).clamp(-1, 1)
        return image


def calibration_keys(codes, factors: Sequence[int], cardinalities: Sequence[int]):
    """(n,) row of a row-colour calibration table for each row of ``codes`` (a tensor or an array):
    the row-major index of its values of ``factors``. The one definition, for the generator that
    reads the table and the fit that writes it (``training/calibration.py``)."""
    key = 0
    for f in factors:
        key = key * int(cardinalities[f]) + codes[:, f]
    return key


class LayoutDiscriminator(nn.Module):
    """(image, codes, layout) → logit (B,): the projection discriminator on image ⊕ layout channels
    (⊕ the "unknown" planes with ``layout_unknown_flags``, as the generator)."""

    def __init__(self, cardinalities: Sequence[int], resolution: int = 64, base_channels: int = 32,
                 aux_head: bool = False, layout_channels: int = LAYOUT_CHANNELS, layout_unknown_flags: bool = False):
        super().__init__()
        self.layout_unknown_flags = bool(layout_unknown_flags)
        self.net = ProjectionDiscriminator(cardinalities, resolution, base_channels, aux_head=aux_head,
                                           in_channels=3 + layout_channels * (2 if self.layout_unknown_flags else 1))

    def forward(self, x: torch.Tensor, codes: torch.Tensor, layout: torch.Tensor, return_aux: bool = False):
        if self.layout_unknown_flags:
            layout = with_unknown_flags(layout)
        return self.net(torch.cat([x, layout * 2 - 1], dim=1), codes, return_aux=return_aux)
