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
  of any weather). :class:`PrecipitationLayer` turns one more full-resolution noise map into
  particle units gated per condition, smears them with learnt kernels that start as streaks and
  flakes, and composites ``image·(1-α) + α·colour`` — the way renderers draw particles.
  Experimental (see the README for what fine-tunes with it measured).
* Per-vehicle codes (optional, ``instance_codes=C``): the global style gives every car of an image
  the same look, while the renderer draws each vehicle's colour on its own. Each vehicle face of the
  layout (:func:`vehicle_instances`) is filled with its own random C-vector (drawn from z's
  generator), which every SPADE norm reads beside the layout — LostGAN's instance-specific
  modulation (Sun & Wu 2019) without box tokens. Zero-initialised, so also fine-tunable.
  Experimental: a measured fine-tune with them raised variety but with noise, and lost FD.
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

from aigc_synth.data.layout import LAYOUT_CHANNELS as LAYOUT_CHANNEL_NAMES
from aigc_synth.models.cgan import FactorEmbedding, ProjectionDiscriminator, _num_upsamplings
from aigc_synth.models.particles import ParticleOverlay

#: Number of layout channels (:data:`aigc_synth.data.layout.LAYOUT_CHANNELS`), fixed by the format.
LAYOUT_CHANNELS = 6
_CAR, _TRUCK = (LAYOUT_CHANNEL_NAMES.index(c) for c in ("car", "truck"))  # the vehicle-face channels


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


def particle_kernels(hidden: int, size: int = 5) -> torch.Tensor:
    """(hidden, size, size) starting shapes of the precipitation layer's particle units: thin streaks
    at several slants (rain) for the first three quarters, small flakes (snow) for the rest. They are
    priors only (every kernel is learnt), so no shape has to be discovered from the dots a zero-init
    layer would start from."""
    k = torch.zeros(hidden, size, size)
    c = size // 2
    n_streaks = max(1, (3 * hidden) // 4)
    slants = torch.linspace(-0.6, 0.6, n_streaks)  # horizontal pixels per vertical pixel
    for u in range(n_streaks):
        for dy in range(-c, c + 1):
            k[u, c + dy, c + int(round(float(slants[u]) * dy))] = 1.0
    for u in range(n_streaks, hidden):
        k[u, c, c] = 1.0
        if (u - n_streaks) % 2:  # every other flake unit a plus-shaped, larger flake
            k[u, c - 1, c] = k[u, c + 1, c] = k[u, c, c - 1] = k[u, c, c + 1] = 0.5
    return k


class PrecipitationLayer(nn.Module):
    """Particles over an image, gated by the condition: ``image·(1-α) + α·colour``.

    ``hidden`` full-resolution noise maps go through a pointwise threshold into as many particle
    units (each fires on its own map's ≈0.2 % tail, so shapes do not pile up on the same pixels),
    each unit is multiplied by its own **gate per condition combination** (a table indexed by the
    mixed-radix code of weather × time × traffic, so the generator can keep streaks in rain, flakes
    in snow and nothing in clear weather), then smeared by a 5×5 conv that starts as
    :func:`particle_kernels` and summed into α. The colour is a function of the condition too.

    Why a table: any parameter shared between conditions becomes an off-switch for all of them. In
    fine-tunes of a trained generator the discriminator rejected the particles in clear weather, and
    a switch shared across weathers (first a common threshold, then gates computed from the summed
    condition embedding) turned them off in every weather alike, rain and snow included. A table
    entry only hears its own condition's gradient; it is read ×``GATE_GAIN`` so that Adam's fixed
    step size moves it as fast as the shared weights it competes with. At ×50 (lr 2·10⁻⁴) a run from
    scratch took 1,000 steps to move the clear-weather gates from 0.50 to 0.29, where particles are
    still plainly visible; ×200 lets a gate cross from half open to nearly shut in ~50 steps of
    consistent gradient."""

    GATE_GAIN = 200.0

    def __init__(self, cond_dim: int, cardinalities: Sequence[int], hidden: int = 8):
        super().__init__()
        self.noise_channels = hidden
        self.cardinalities = tuple(int(c) for c in cardinalities)
        self.point = nn.Conv2d(hidden, hidden, 1, groups=hidden)
        radix = [1]
        for c in reversed(list(cardinalities)[1:]):
            radix.insert(0, radix[0] * int(c))
        self.register_buffer("radix", torch.tensor(radix, dtype=torch.long), persistent=False)
        self.gate = nn.Parameter(torch.zeros(math.prod(int(c) for c in cardinalities), hidden))
        self.spread = nn.Conv2d(hidden, hidden, 5, padding=2, groups=hidden)  # one shape per unit
        self.to_alpha = nn.Conv2d(hidden, 1, 3, padding=1)
        self.colour = nn.Linear(cond_dim, 3)
        with torch.no_grad():
            # relu(4n - 11): fires where its noise exceeds 2.75σ, 0.3 % of pixels per unit (with 8 units
            # and the smear, about the renderer's particle cover)
            nn.init.constant_(self.point.weight, 4.0)
            nn.init.constant_(self.point.bias, -11.0)
            # every gate half open in every condition at the start (self.gate is zeros)
            self.spread.weight.copy_(particle_kernels(hidden)[:, None])
            self.spread.bias.zero_()
            self.to_alpha.weight.zero_()
            self.to_alpha.weight[0, :, 1, 1] = 16.0  # a 3σ particle at a half-open gate: α ≈ 0.9
            self.to_alpha.bias.fill_(-6.0)
            self.colour.weight.mul_(0.1)
            self.colour.bias.fill_(0.5)  # pale particles to start (rain and snow are both pale)

    def gate_table(self) -> torch.Tensor:
        """The gates in (0, 1), shaped ``(*cardinalities, units)``: entry ``[w, t, f, u]`` is how open
        particle unit ``u`` is in condition (w, t, f). Training logs their mean per first factor."""
        return torch.sigmoid(self.GATE_GAIN * self.gate.detach()).view(*self.cardinalities, -1)

    def forward(self, image: torch.Tensor, codes: torch.Tensor, cond: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.GATE_GAIN * self.gate[(codes.long() * self.radix).sum(dim=1)])
        units = F.relu(self.point(noise)) * gate[:, :, None, None]
        alpha = torch.sigmoid(self.to_alpha(self.spread(units)))
        colour = torch.tanh(self.colour(cond))[:, :, None, None]
        return image * (1 - alpha) + alpha * colour


class LayoutGenerator(nn.Module):
    """z (B, z_dim) + codes (B, F) + layout (B, L, R, R) → image (B, 3, R, R) in [-1, 1].

    Widths halve per level from ``base_channels * 2**(levels - 1)`` at 4×4 (the cGAN's schedule)
    down to ``base_channels / 2`` at full resolution, where a last block sees the layout at pixel
    precision before the RGB conv.
    """

    def __init__(self, cardinalities: Sequence[int], resolution: int = 64, z_dim: int = 64,
                 base_channels: int = 32, embed_dim: int = 64, layout_channels: int = LAYOUT_CHANNELS,
                 spade_hidden: int = 32, truncation: float = 1.0, precipitation: bool = False,
                 instance_codes: int = 0, particles: bool = False,
                 factors: Sequence[tuple[str, Sequence[str]]] | None = None, padding_mode: str = "zeros",
                 vehicle_head: bool = False, dashed_lanes: bool = False, skip_rgb: bool = False,
                 calibration_factors: Sequence[int] = ()):
        super().__init__()
        n_up = _num_upsamplings(resolution)
        self.z_dim, self.resolution, self.layout_channels = z_dim, resolution, layout_channels
        # truncation trick (BigGAN / StyleGAN): z is scaled by ψ before use; 1 in training. ψ < 1 trades a
        # little variety for fewer broken images from latents far out in the tails (stored in the checkpoint)
        self.truncation = float(truncation)
        # trained on layouts whose lane separators are dashed (data/layout.scene_layout's dash_phase):
        # no effect on the network, it tells the sampler to draw them so (sampling/layout.dash_phases)
        self.dashed_lanes = bool(dashed_lanes)
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
        # skip RGB (StyleGAN2's skip generator): a 1×1 RGB conv on every lower level's output, upsampled
        # bilinearly and added before the tanh, so smooth gradients (sky, road, fog) can come from coarse
        # levels directly (the bundled model's sky varies twice as much along a row as the renderer's).
        # Zero-initialised, so a trained generator fine-tunes into it with its images unchanged; as a
        # 750-step fine-tune it did not help (README, Layout model figures), from scratch it is untried.
        self.skip_rgbs = nn.ModuleList(nn.Conv2d(c, 3, 1) for c in chans[1:-1]) if skip_rgb else None
        # vehicle head: a second RGB conv (and, with per-vehicle codes, a per-vehicle colour) added only
        # inside the layout's vehicle faces, weighted by their exact pixel coverage. The shared conv
        # stack draws boundaries only as sharp as a 3×3 conv after nearest upsampling can, and bleeds
        # a face's colour into the road; the renderer's faces are anti-aliased rectangles of one
        # colour. Zero-initialised: a trained generator fine-tunes into it with its images unchanged.
        self.vehicle_rgb = nn.Conv2d(chans[-1], 3, 3, padding=1) if vehicle_head else None
        self.vehicle_colour = nn.Conv2d(self.instance_codes, 3, 1) if vehicle_head and self.instance_codes else None
        for layer in (self.vehicle_rgb, self.vehicle_colour, *(self.skip_rgbs or ())):
            if layer is not None:
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)
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
        # absent (not merely idle) when off, so checkpoints from before the layer load unchanged
        self.precipitation = PrecipitationLayer(embed_dim, cardinalities) if precipitation else None
        # the renderer's rain streaks / snow flakes drawn over the image (models/particles.py); needs the
        # schema's factor names and values (``factors``) to know which codes mean rain, snow, night
        self.set_particles(particles, factors)
        self.set_padding_mode(padding_mode)

    def set_particles(self, enabled: bool, factors: Sequence[tuple[str, Sequence[str]]] | None = None) -> None:
        """Switch the fixed particle overlay (:class:`~aigc_synth.models.particles.ParticleOverlay`) on or
        off; ``factors`` are the schema's ``(name, values)`` pairs. It has no weights, so a trained
        generator can switch."""
        if enabled and self.precipitation is not None:
            raise ValueError("particles (fixed overlay) and precipitation (learnt layer) are alternatives; pick one")
        if enabled and factors is None:
            raise ValueError("particles=True needs factors: the condition schema's (name, values) pairs")
        self.particles = ParticleOverlay(factors, self.resolution) if enabled else None

    def set_padding_mode(self, mode: str) -> None:
        """Pad every 3×3 / 5×5 conv with ``mode`` (``zeros``, ``replicate`` or ``reflect``). Zero padding
        tells each conv where the border is, and the generator draws a bright / coloured seam along it
        (``border`` in ``scripts/eval_layout_models.py``: 1.6× the real renders' energy); replicate padding
        leaves no such cue. No weights change, so a trained generator can switch."""
        if mode not in ("zeros", "replicate", "reflect"):
            raise ValueError(f"padding_mode must be zeros, replicate or reflect; got {mode!r}")
        self.padding_mode = mode
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and m.padding != (0, 0):
                m.padding_mode = mode

    def _noise(self, z: torch.Tensor) -> list[torch.Tensor]:
        """Per-sample noise maps for every level, then the precipitation layer's full-resolution maps and
        the particle overlay's uniform seeds and light jitter when those are on, drawn from a generator
        seeded by that sample's z (optional inputs last, so the level maps never depend on them)."""
        shapes = [(1, 8 * 2**i) for i in range(len(self.blocks))]
        if self.precipitation is not None:
            shapes.append((self.precipitation.noise_channels, self.resolution))
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
        cond = self.embed(codes)
        style = torch.cat([cond, z], dim=1)
        noises, tables = self._noise(z)
        inst = self._instance_map(layout, tables) if tables is not None else None
        x = self.stem(style).view(z.shape[0], self.chans[0], 4, 4)
        x = F.relu(self.stem_norm(x, style, layout, inst))
        coarse = []
        for block, noise in zip(self.blocks, noises):
            x = block(x, style, layout, noise, inst)
            coarse.append(x)
        pre = self.to_rgb(x)
        if self.skip_rgbs is not None:
            for rgb, level in zip(self.skip_rgbs, coarse[:-1]):
                pre = pre + F.interpolate(rgb(level), size=pre.shape[-2:], mode="bilinear", align_corners=False)
        if self.vehicle_rgb is not None:
            face = (layout[:, _CAR] + layout[:, _TRUCK]).clamp(0, 1)[:, None]
            own = self.vehicle_rgb(x)
            if self.vehicle_colour is not None:
                own = own + self.vehicle_colour(inst)
            pre = pre + face * own
        image = torch.tanh(pre)
        if self.precipitation is not None:
            image = self.precipitation(image, codes, cond, noises[len(self.blocks)])
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
    """(image, codes, layout) → logit (B,): the projection discriminator on image ⊕ layout channels.

    ``multiscale=True`` adds a second projection discriminator on 2× average-pooled image ⊕ layout
    (pix2pixHD / SPADE's multi-scale critic): it sees the coarse structure (sky and road gradients,
    lighting) with the same capacity the full-resolution one spends on edges. The logits are then
    (B, 2), one column per scale; the hinge losses average over every element, i.e. over the scales.
    The auxiliary class heads stay on the full-resolution net.
    """

    def __init__(self, cardinalities: Sequence[int], resolution: int = 64, base_channels: int = 32,
                 aux_head: bool = False, layout_channels: int = LAYOUT_CHANNELS, multiscale: bool = False):
        super().__init__()
        self.net = ProjectionDiscriminator(cardinalities, resolution, base_channels, aux_head=aux_head,
                                           in_channels=3 + layout_channels)
        self.low = (ProjectionDiscriminator(cardinalities, resolution // 2, base_channels, in_channels=3 + layout_channels)
                    if multiscale else None)

    def forward(self, x: torch.Tensor, codes: torch.Tensor, layout: torch.Tensor, return_aux: bool = False):
        pair = torch.cat([x, layout * 2 - 1], dim=1)
        out = self.net(pair, codes, return_aux=return_aux)
        if self.low is None:
            return out
        low = self.low(F.avg_pool2d(pair, 2), codes)
        if return_aux:
            return torch.stack([out[0], low], dim=1), out[1]
        return torch.stack([out, low], dim=1)
