"""The founding document's DCGAN, made conditional: the baseline (``model=dcgan_baseline``).

Recipe kept from the document: transposed convolutions with BatchNorm and ReLU in the generator,
strided convolutions with BatchNorm and LeakyReLU(0.2) in the discriminator, N(0, 0.02) init,
BCE loss, Adam lr 2e-4 β1 0.5. Conditioning is the classic one: the one-hot condition is
concatenated to ``z`` and, as constant feature maps, to the discriminator input.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from aigc_synth.models.cgan import num_upsamplings


def one_hot_codes(codes: torch.Tensor, cardinalities: Sequence[int]) -> torch.Tensor:
    """(B, F) codes → (B, Σ cardinalities) concatenated one-hots."""
    return torch.cat([F.one_hot(codes[:, f], int(c)).float() for f, c in enumerate(cardinalities)], dim=1)


def dcgan_init_(module: nn.Module) -> None:
    """DCGAN init: conv weights N(0, 0.02); BatchNorm gain N(1, 0.02), bias 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class DCGANGenerator(nn.Module):
    """[z ‖ one-hot(y)] as a 1×1 map → ConvTranspose stack → image (B, 3, R, R) in [-1, 1]."""

    def __init__(self, cardinalities: Sequence[int], resolution: int = 64, z_dim: int = 100, base_channels: int = 32):
        super().__init__()
        n_up = num_upsamplings(resolution)
        self.z_dim, self.resolution, self.cardinalities = z_dim, resolution, [int(c) for c in cardinalities]
        c_in = z_dim + sum(self.cardinalities)
        chans = [base_channels * 2 ** (n_up - 1 - i) for i in range(n_up)]  # e.g. 256,128,64,32 at 64 px
        layers: list[nn.Module] = [nn.ConvTranspose2d(c_in, chans[0], 4, 1, 0, bias=False), nn.BatchNorm2d(chans[0]), nn.ReLU(True)]
        for i in range(n_up - 1):
            layers += [nn.ConvTranspose2d(chans[i], chans[i + 1], 4, 2, 1, bias=False), nn.BatchNorm2d(chans[i + 1]), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(chans[-1], 3, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)
        dcgan_init_(self)

    def forward(self, z: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        x = torch.cat([z, one_hot_codes(codes, self.cardinalities)], dim=1)
        return self.main(x[:, :, None, None])


class DCGANDiscriminator(nn.Module):
    """[image ‖ one-hot(y) maps] → strided conv stack → logit (B,) (BCE-with-logits in training)."""

    def __init__(self, cardinalities: Sequence[int], resolution: int = 64, base_channels: int = 32):
        super().__init__()
        n_down = num_upsamplings(resolution)
        self.cardinalities = [int(c) for c in cardinalities]
        chans = [base_channels * 2**i for i in range(n_down)]
        layers: list[nn.Module] = [nn.Conv2d(3 + sum(self.cardinalities), chans[0], 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
        for i in range(n_down - 1):
            layers += [nn.Conv2d(chans[i], chans[i + 1], 4, 2, 1, bias=False), nn.BatchNorm2d(chans[i + 1]), nn.LeakyReLU(0.2, True)]
        # the document ends in Sigmoid + BCELoss; logits + BCEWithLogitsLoss is the same loss, stably
        layers += [nn.Conv2d(chans[-1], 1, 4, 1, 0, bias=False)]
        self.main = nn.Sequential(*layers)
        dcgan_init_(self)

    def forward(self, x: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        maps = one_hot_codes(codes, self.cardinalities)[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])
        return self.main(torch.cat([x, maps], dim=1)).flatten()
