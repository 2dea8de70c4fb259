"""Per-family model configs: each family owns one dataclass, registered with Hydra under ``model/``.

The YAML presets in ``conf/model/`` extend these (``defaults: [<family>_schema]``) and add only
comments, so the dataclass is the one source of every default. Fields shared by every image
family sit in :class:`ImageModelConfig`; a field that only one family understands lives only in
that family's class (``model.aux_class_weight`` on a DCGAN is an unknown key, refused by Hydra).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List


@dataclass
class ImageModelConfig:
    """Fields of every image generator family: architecture sizes and optimiser."""

    family: str = "cgan"
    resolution: int = 64  # 32 | 64 | 128
    z_dim: int = 64
    base_channels: int = 32
    d_base_channels: int = 32  # the second network: discriminator, or the VAE's encoder
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    beta1: float = 0.0
    beta2: float = 0.99
    ema_decay: float = 0.0  # 0 disables the EMA generator
    ema_start: int = 0


@dataclass
class CGANConfig(ImageModelConfig):
    """The default conditional GAN: conditional-BN generator, spectral-norm projection
    discriminator, hinge loss, EMA generator, DiffAugment (translation + cutout)."""

    family: str = "cgan"
    loss: str = "hinge"  # hinge | bce
    embed_dim: int = 64
    ema_decay: float = 0.999
    ema_start: int = 200
    diffaugment: bool = True
    # MSGAN term against z-collapse (without it every column of the grid looked alike; 1.0 let z override the condition)
    mode_seeking: float = 0.1
    aux_class_weight: float = 0.0  # weight of the generator's AC-GAN term (0 = no auxiliary classifier)


@dataclass
class LayoutGANConfig(ImageModelConfig):
    """The layout-conditioned GAN (default image family): SPADE-modulated generator fed a scene's
    rasterised layout, projection discriminator on image ⊕ layout, hinge loss, EMA. No DiffAugment:
    the renderer yields unlimited real images, and its cutout leaked grey rectangles into the cGAN."""

    family: str = "layout_gan"
    loss: str = "hinge"
    embed_dim: int = 64
    spade_hidden: int = 32
    ema_decay: float = 0.999
    ema_start: int = 200
    diffaugment: bool = False
    # MSGAN term (two latents, same condition and layout, must differ). Off by default: with noise inputs
    # the generator met it with pixel speckle (seen in the sample grids at 1,000-1,500 steps), and a
    # fixed layout leaves little real variety to seek (colours, light level, dash phase)
    mode_seeking: float = 0.0
    mode_seeking_pool: int = 4  # the MSGAN term compares images average-pooled by this factor (1 = full resolution)
    # MSGAN ratio on each vehicle's mean colour (same latent pairs; needs mode_seeking > 0 for the pairs)
    vehicle_mode_seeking: float = 0.0
    truncation: float = 1.0  # ψ of the exported generator (sampling only; training always uses z as drawn)
    # per-vehicle random codes read by every SPADE norm (models/layout_gan.vehicle_instances); 0 = off.
    # Also fine-tunable into a state without them (zero-initialised)
    instance_codes: int = 0
    # the renderer's rain streaks / snow flakes drawn over the image by a fixed overlay
    # (models/particles.py): right for the bundled renderer's data only; needs a weather factor
    particles: bool = False
    aux_class_weight: float = 0.2  # AC-GAN head on weather / time / traffic (0 = off)
    # matching-aware discriminator (Reed et al. 2016): real images paired with another sample's
    # layout count as fake, so D must check that vehicles sit where the layout says
    layout_mismatch_weight: float = 0.5
    # one "unknown" input plane per layout channel (G and D) for annotated data whose frames lack some
    # channels (COCO: no lanes, no road area); see aigc_synth/data/annotated_images.py. Architecture
    layout_unknown_flags: bool = False


@dataclass
class LayoutDiffusionConfig(ImageModelConfig):
    """Layout-conditioned diffusion (:mod:`aigc_synth.models.layout_diffusion`): diffusers' UNet on pixels,
    v-prediction, classifier-free guidance, DPM-Solver++ sampling, EMA. No second network (``d_*``,
    ``lr_d`` and ``z_dim`` are unused: the noise has the image's shape)."""

    family: str = "layout_diffusion"
    base_channels: int = 32
    channel_mult: List[int] = field(default_factory=lambda: [1, 2, 2, 4])  # UNet widths: base_channels × each
    layers_per_block: int = 1
    condition_dropout: float = 0.1  # share of training images with the null condition and no layout (guidance)
    sampling_steps: int = 16  # DPM-Solver++ steps of the exported model (job.sampling.steps overrides)
    guidance: float = 2.0  # classifier-free guidance scale (1 = conditional only; job.sampling.guidance overrides)
    # guidance only on the solver steps whose diffusion timestep (0..1000) lies in [t_min, t_max]; the others
    # sample conditionally only (guidance in a limited interval, Kynkäänniemi et al. 2024)
    guidance_t_min: int = 0
    guidance_t_max: int = 1000
    lr_g: float = 2e-4
    beta1: float = 0.9
    beta2: float = 0.999
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    ema_start: int = 200
    # one "unknown" input plane per layout channel (as layout_gan's); architecture
    layout_unknown_flags: bool = False


@dataclass
class DCGANConfig(ImageModelConfig):
    """The founding document's DCGAN recipe, conditional by concatenation: BCE, Adam β1 0.5, z of 100."""

    family: str = "dcgan"
    loss: str = "bce"  # bce | hinge
    z_dim: int = 100
    beta1: float = 0.5
    beta2: float = 0.999
    diffaugment: bool = False
    mode_seeking: float = 0.0


@dataclass
class CVAEConfig(ImageModelConfig):
    """Conditional VAE: reconstruction (sum of squares) + kl_weight · KL(q ‖ N(0, I))."""

    family: str = "cvae"
    lr_g: float = 1e-3
    lr_d: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    kl_weight: float = 1.0


@dataclass
class SceneModelConfig:
    """Fields of every traffic-scene generator family (``scene_ar``, ``scene_marginal``, ``scene_random``)."""

    family: str = "scene_ar"


@dataclass
class SceneARConfig(SceneModelConfig):
    """The autoregressive scene model (:mod:`aigc_synth.models.scene_ar`) and its optimiser."""

    family: str = "scene_ar"
    hidden: int = 192  # GRU state
    head_hidden: int = 192  # width of each choice's MLP
    # "relative": a lane's later vehicles draw their speed relative to the vehicle behind (finer near
    # equal speeds); "absolute": every speed on absolute bins (checkpoints exported before 2026-12-07)
    speed_coding: str = "relative"
    # "headway": a lane's later vehicles draw their gap as a time headway beyond minGap behind the vehicle
    # behind (the same bins at every speed); "metres": every gap on metre bins (checkpoints before 2026-12-07)
    gap_coding: str = "headway"
    lr: float = 1e-3  # Adam; cosine decay to lr * lr_final_fraction over train.steps
    lr_final_fraction: float = 0.05
    grad_clip: float = 1.0
    validation_fraction: float = 0.05  # of data.scenes held out for the validation loss (best_generator.pt)


@dataclass
class SceneMarginalConfig(SceneModelConfig):
    """Baseline: agents drawn independently from the training marginals (fit, no optimisation)."""

    family: str = "scene_marginal"


@dataclass
class SceneRandomConfig(SceneModelConfig):
    """Baseline: highway-env's ``create_random`` (count from the traffic level, uniform placement)."""

    family: str = "scene_random"
    speed_low: float = 0.5  # speeds uniform in [low, high] x the speed limit
    speed_high: float = 1.0
