"""DiffAugment (Zhao et al. 2020), translation and cutout policies only.

Its colour policy (brightness, saturation, contrast) is left out on purpose: brightness and colour
*are* the time-of-day and weather labels here, so jittering them would teach the discriminator to
ignore the conditions.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def translation(x: torch.Tensor, ratio: float = 0.125, generator: torch.Generator | None = None) -> torch.Tensor:
    """Shift each image by up to ``ratio`` of its size, filling with zeros."""
    b, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    # drawn on the CPU generator, then moved: the same draws on every device (a CPU generator cannot
    # fill a CUDA tensor)
    dy = torch.randint(-sh, sh + 1, (b, 1, 1), generator=generator).to(x.device)
    dx = torch.randint(-sw, sw + 1, (b, 1, 1), generator=generator).to(x.device)
    gy, gx = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    gy = torch.clamp(gy[None] + dy + 1, 0, h + 1)
    gx = torch.clamp(gx[None] + dx + 1, 0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1])
    idx = torch.arange(b, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[idx, gy, gx].permute(0, 3, 1, 2).contiguous()


def cutout(x: torch.Tensor, ratio: float = 0.5, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero a random square of ``ratio`` × size per image."""
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oy = torch.randint(0, h + (1 - ch % 2), (b, 1, 1), generator=generator).to(x.device)
    ox = torch.randint(0, w + (1 - cw % 2), (b, 1, 1), generator=generator).to(x.device)
    gy, gx = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    inside_y = (gy[None] >= oy - ch // 2) & (gy[None] < oy - ch // 2 + ch)
    inside_x = (gx[None] >= ox - cw // 2) & (gx[None] < ox - cw // 2 + cw)
    keep = ~(inside_y & inside_x)
    return x * keep[:, None].to(x.dtype)


def diff_augment(x: torch.Tensor, policies: tuple[str, ...] = ("translation", "cutout"),
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Apply the differentiable augmentations in order (same call for real and fake batches)."""
    for policy in policies:
        if policy == "translation":
            x = translation(x, generator=generator)
        elif policy == "cutout":
            x = cutout(x, generator=generator)
        else:
            raise ValueError(f"unsupported DiffAugment policy {policy!r}: only 'translation' and 'cutout' keep the labels intact")
    return x
