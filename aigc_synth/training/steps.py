"""One optimisation step per training objective (:data:`OBJECTIVES`; a family names its ``objective``).
The training loop (:mod:`aigc_synth.training.trainer`) calls ``step(ctx, real, codes, **inputs)``.

A step returns the scalars it wants logged (all are checked to be finite by the loop).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn
from torch.nn import functional as F

from aigc_synth.models.cvae import cvae_loss, reparameterise
from aigc_synth.training.augment import diff_augment


@dataclass
class TrainContext:
    """What a step may touch: the two networks, their optimisers, the config and the aug RNG."""

    G: nn.Module
    D: nn.Module  # discriminator, or the VAE's encoder
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    cfg: Any  # the family's config dataclass
    aug_gen: torch.Generator

    @property
    def policies(self) -> tuple[str, ...]:
        return ("translation", "cutout") if getattr(self.cfg, "diffaugment", False) else ()


def d_loss_fn(kind: str, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    if kind == "hinge":
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
    if kind == "bce":
        return (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
                + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))
    raise ValueError(f"unknown loss {kind!r}; use 'hinge' or 'bce'")


def g_loss_fn(kind: str, fake_logits: torch.Tensor) -> torch.Tensor:
    if kind == "hinge":
        return -fake_logits.mean()
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
    raise ValueError(f"unknown loss {kind!r}; use 'hinge' or 'bce'")


def aux_class_loss(class_logits: list[torch.Tensor], codes: torch.Tensor) -> torch.Tensor:
    """Sum over condition factors of the cross-entropy of the discriminator's class heads."""
    return sum(F.cross_entropy(logits, codes[:, f]) for f, logits in enumerate(class_logits))


def gan_step(ctx: TrainContext, real: torch.Tensor, codes: torch.Tensor) -> dict[str, torch.Tensor]:
    """One discriminator update then one generator update (cGAN and DCGAN)."""
    G, D, cfg, policies, aug_gen = ctx.G, ctx.D, ctx.cfg, ctx.policies, ctx.aug_gen
    B = real.shape[0]
    z = torch.randn(B, G.z_dim).to(real.device)  # the CPU stream on every device: resumes stay exact
    fake_codes = codes  # generate the same condition mix as the real batch
    with torch.no_grad():
        fake = G(z, fake_codes)
    real_in = diff_augment(real, policies, aug_gen) if policies else real
    fake_in = diff_augment(fake, policies, aug_gen) if policies else fake
    use_aux = getattr(cfg, "aux_class_weight", 0.0) > 0
    if use_aux:  # the auxiliary classifier learns from real images only (fakes would teach it their errors)
        real_logits, real_class_logits = D(real_in, codes, return_aux=True)
    else:
        real_logits = D(real_in, codes)
    fake_logits = D(fake_in, fake_codes)
    loss_d = d_loss_fn(cfg.loss, real_logits, fake_logits)
    if use_aux:
        loss_d = loss_d + aux_class_loss(real_class_logits, codes)
    ctx.opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    ctx.opt_d.step()
    if cfg.mode_seeking > 0:
        # pair each sample of the first half with one of the second half that has the same
        # condition but another z; MSGAN's term grows when their images are alike
        half = B // 2
        fake_codes = torch.cat([codes[:half], codes[:half], codes[2 * half:]])
    fake = G(z, fake_codes)
    fake_in = diff_augment(fake, policies, aug_gen) if policies else fake
    if use_aux:
        fake_logits_g, fake_class_logits = D(fake_in, fake_codes, return_aux=True)
        loss_g = g_loss_fn(cfg.loss, fake_logits_g) + cfg.aux_class_weight * aux_class_loss(fake_class_logits, fake_codes)
    else:
        loss_g = g_loss_fn(cfg.loss, D(fake_in, fake_codes))
    if cfg.mode_seeking > 0:
        ratio = (fake[:half] - fake[half:2 * half]).abs().mean() / (z[:half] - z[half:2 * half]).abs().mean()
        loss_g = loss_g + cfg.mode_seeking / (ratio + 1e-5)
    ctx.opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    ctx.opt_g.step()
    return {"loss_d": loss_d, "loss_g": loss_g, "d_real": real_logits.mean(), "d_fake": fake_logits.mean()}


def vae_step(ctx: TrainContext, real: torch.Tensor, codes: torch.Tensor) -> dict[str, torch.Tensor]:
    """Encoder (``ctx.D``) and decoder (``ctx.G``) trained jointly by ``ctx.opt_g``."""
    mu, logvar = ctx.D(real, codes)
    recon = ctx.G(reparameterise(mu, logvar), codes)
    loss_total, loss_rec, loss_kl = cvae_loss(real, recon, mu, logvar, ctx.cfg.kl_weight)
    ctx.opt_g.zero_grad(set_to_none=True)
    loss_total.backward()
    ctx.opt_g.step()
    return {"loss_rec": loss_rec, "loss_kl": loss_kl}



def vehicle_mean_colours(images: torch.Tensor, layout: torch.Tensor) -> torch.Tensor:
    """(n_vehicles, 3): the mean colour of every vehicle face (:func:`vehicle_instances`) in ``images``,
    vehicles of all images stacked."""
    from aigc_synth.models.layout_gan import vehicle_instances

    b, c, h, w = images.shape
    ids = vehicle_instances(layout)  # (B, H, W), 0 = none
    seg = (ids + torch.arange(b, device=ids.device)[:, None, None] * (h * w + 1)).flatten()
    sums = torch.zeros(b * (h * w + 1), c, dtype=images.dtype, device=images.device)
    sums = sums.index_add(0, seg, images.permute(0, 2, 3, 1).reshape(-1, c))
    counts = torch.bincount(seg, minlength=b * (h * w + 1))
    keep = (counts > 0) & (torch.arange(len(counts), device=ids.device) % (h * w + 1) != 0)
    return sums[keep] / counts[keep, None].to(images.dtype)


def layout_gan_step(ctx: TrainContext, real: torch.Tensor, codes: torch.Tensor, layout: torch.Tensor) -> dict[str, torch.Tensor]:
    """One discriminator then one generator update of the layout-conditioned GAN.

    The discriminator sees (image, codes, layout). Besides real vs generated it gets real images
    paired with a *rolled* layout (the next sample's) as fakes, weighted by
    ``cfg.layout_mismatch_weight``: a discriminator that ignored the layout could not reject them,
    so the generator is pushed to put vehicles where the layout says. The MSGAN term pairs two
    latents under the same condition and layout (the fakes' second half repeats the first half's).
    """
    G, D, cfg = ctx.G, ctx.D, ctx.cfg
    B = real.shape[0]
    half = B // 2 if cfg.mode_seeking > 0 else 0
    z = torch.randn(B, G.z_dim).to(real.device)  # the CPU stream on every device: resumes stay exact
    codes_g = torch.cat([codes[:half], codes[:half], codes[2 * half:]]) if half else codes
    layout_g = torch.cat([layout[:half], layout[:half], layout[2 * half:]]) if half else layout
    with torch.no_grad():
        fake = G(z, codes_g, layout_g)
    use_aux = cfg.aux_class_weight > 0
    if use_aux:  # the auxiliary classifier learns from real images only
        real_logits, real_class_logits = D(real, codes, layout, return_aux=True)
    else:
        real_logits = D(real, codes, layout)
    fake_logits = D(fake, codes_g, layout_g)
    loss_d = d_loss_fn(cfg.loss, real_logits, fake_logits)
    if cfg.layout_mismatch_weight > 0:
        wrong = D(real, codes, torch.roll(layout, 1, dims=0))
        loss_d = loss_d + cfg.layout_mismatch_weight * F.relu(1 + wrong).mean()
    if use_aux:
        loss_d = loss_d + aux_class_loss(real_class_logits, codes)
    ctx.opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    ctx.opt_d.step()

    fake = G(z, codes_g, layout_g)
    if use_aux:
        logits_g, class_logits = D(fake, codes_g, layout_g, return_aux=True)
        loss_g = g_loss_fn(cfg.loss, logits_g) + cfg.aux_class_weight * aux_class_loss(class_logits, codes_g)
    else:
        loss_g = g_loss_fn(cfg.loss, D(fake, codes_g, layout_g))
    if half:
        # measured on average-pooled images: colours, lighting, sky must differ between the two latents;
        # at full resolution the noise inputs met the term with pixel speckle instead. With the particle
        # overlay on, rain / snow pairs also differ by their particles (seeded from z), which eases the
        # term for those samples (pooling averages most of it away)
        pooled = F.avg_pool2d(fake, cfg.mode_seeking_pool) if cfg.mode_seeking_pool > 1 else fake
        ratio = (pooled[:half] - pooled[half:2 * half]).abs().mean() / (z[:half] - z[half:2 * half]).abs().mean()
        loss_g = loss_g + cfg.mode_seeking / (ratio + 1e-5)
    if half and cfg.vehicle_mode_seeking > 0:
        # the same MSGAN ratio on each vehicle's mean colour: the global term is dominated by sky and
        # road, and a mean over a vehicle's pixels cannot be met with speckle
        a, b = vehicle_mean_colours(fake[:half], layout_g[:half]), vehicle_mean_colours(fake[half:2 * half], layout_g[:half])
        if a.shape[0]:
            ratio_v = (a - b).abs().mean() / (z[:half] - z[half:2 * half]).abs().mean()
            loss_g = loss_g + cfg.vehicle_mode_seeking / (ratio_v + 1e-5)
    ctx.opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    ctx.opt_g.step()
    return {"loss_d": loss_d, "loss_g": loss_g, "d_real": real_logits.mean(), "d_fake": fake_logits.mean()}


def diffusion_step(ctx: TrainContext, real: torch.Tensor, codes: torch.Tensor, layout: torch.Tensor) -> dict[str, torch.Tensor]:
    """The diffusion family: v-prediction loss of ``ctx.G`` (noise, timesteps and guidance dropout from the
    CPU stream ``ctx.aug_gen``), clipped gradients, one optimiser step."""
    loss = ctx.G.diffusion_loss(real, codes, layout, ctx.aug_gen, ctx.cfg.condition_dropout)
    ctx.opt_g.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(ctx.G.parameters(), ctx.cfg.grad_clip)
    ctx.opt_g.step()
    return {"loss": loss.detach()}


#: Training objectives by name (a :class:`~aigc_synth.models.registry.Family` names its ``objective``).
OBJECTIVES: dict[str, Callable[..., dict[str, torch.Tensor]]] = {"gan": gan_step, "layout_gan": layout_gan_step, "vae": vae_step,
                                                                  "diffusion": diffusion_step}


def train_step_for(family: Any) -> Callable[..., dict[str, torch.Tensor]]:
    """The step function of ``family`` (a Family); ValueError for a family that cannot be trained."""
    if family.objective is None:
        raise ValueError(f"the {family.name} family is a benchmark stand-in with no parameters; it cannot be trained")
    if family.objective not in OBJECTIVES:
        raise ValueError(f"the {family.name} family names objective {family.objective!r}; registered: {sorted(OBJECTIVES)}")
    return OBJECTIVES[family.objective]
