"""Conditional VAE (the founding document's §4.4.1 family), convolutional and schema-driven.

* Encoder q(z | x, y): strided convs over [image ‖ one-hot condition maps] → μ, log σ².
* Decoder p(x | z, y): the DCGAN-style transposed-conv stack on [z ‖ one-hot(y)], images in [-1, 1].
* Loss: reconstruction (sum of squared errors per image) + β · KL(q(z|x,y) ‖ N(0, I)), the
  closed form ½ Σ (μ² + σ² − log σ² − 1). (The document applies ``nn.KLDivLoss`` to the latent
  itself, which is not a KL to the prior; this is.)

The decoder alone is exported: it has the same ``forward(z, codes)`` as the GAN generators, so the
generation job, checkpoints and determinism guarantees apply unchanged.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from aigc_synth.models.cgan import num_upsamplings
from aigc_synth.models.dcgan import DCGANGenerator, one_hot_codes


class CVAEDecoder(DCGANGenerator):
    """p(x | z, y); identical interface to the GAN generators (``z_dim``, ``resolution``, ``forward(z, codes)``)."""

    def __init__(self, cardinalities: Sequence[int], resolution: int = 64, z_dim: int = 64, base_channels: int = 32):
        super().__init__(cardinalities, resolution=resolution, z_dim=z_dim, base_channels=base_channels)


class CVAEEncoder(nn.Module):
    """q(z | x, y) → (μ, log σ²)."""

    def __init__(self, cardinalities: Sequence[int], resolution: int = 64, z_dim: int = 64, base_channels: int = 32):
        super().__init__()
        n_down = num_upsamplings(resolution)
        self.cardinalities = [int(c) for c in cardinalities]
        chans = [base_channels * 2**i for i in range(n_down)]
        layers: list[nn.Module] = [nn.Conv2d(3 + sum(self.cardinalities), chans[0], 4, 2, 1), nn.LeakyReLU(0.2, True)]
        for i in range(n_down - 1):
            layers += [nn.Conv2d(chans[i], chans[i + 1], 4, 2, 1), nn.BatchNorm2d(chans[i + 1]), nn.LeakyReLU(0.2, True)]
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.to_stats = nn.Linear(chans[-1] * 4 * 4, 2 * z_dim)

    def forward(self, x: torch.Tensor, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = one_hot_codes(codes, self.cardinalities)[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])
        mu, logvar = self.to_stats(self.features(torch.cat([x, maps], dim=1))).chunk(2, dim=1)
        return mu, logvar.clamp(-10, 10)


def reparameterise(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """z = μ + σ·ε with ε ~ N(0, I): the sampling step stays differentiable in μ and σ."""
    eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + (0.5 * logvar).exp() * eps


def kl_to_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) ‖ N(0, I)) per sample, summed over latent dimensions."""
    return 0.5 * (mu.square() + logvar.exp() - logvar - 1).sum(dim=1)


def cvae_loss(x: torch.Tensor, recon: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
              beta: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, reconstruction, kl), each the mean over the batch of per-image sums."""
    rec = (recon - x).square().flatten(1).sum(dim=1).mean()
    kl = kl_to_standard_normal(mu, logvar).mean()
    return rec + beta * kl, rec, kl
