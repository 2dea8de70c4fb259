"""The domain classifier: a small CNN that reads a driving scene and predicts its condition.

It is the feature extractor behind every metric in :mod:`aigc_synth.evaluation` (its penultimate
activations play the role Inception's pool3 plays for FID) and the judge of the generation
quality gate. It is trained on real procedural scenes only and is never a generator loss.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

#: Every input is resized to this side before the network (bilinear, antialiased).
CLASSIFIER_INPUT = 64


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class DomainClassifier(nn.Module):
    """uint8 or [-1, 1] images (B, 3, H, W) → per-factor logits, vehicle count, features.

    ``forward`` returns ``(logits, count, features)``: ``logits`` a list with one (B, C_f) tensor per
    factor, ``count`` (B,) the regressed vehicle count, ``features`` (B, feature_dim) the
    penultimate activations used as the metric embedding.
    """

    def __init__(self, cardinalities: Sequence[int], width: int = 32, feature_dim: int = 128, stem: int = 0):
        super().__init__()
        self.cardinalities = [int(c) for c in cardinalities]
        self.width, self.feature_dim, self.stem = int(width), int(feature_dim), int(stem)
        w = self.width
        # optional full-resolution stem: small, distant vehicles (traffic density) need the 64-px detail
        head = [_block(3, self.stem, 1), _block(self.stem, w, 2)] if self.stem else [_block(3, w, 2)]
        self.body = nn.Sequential(
            *head,                                             # 32
            _block(w, 2 * w, 2), _block(2 * w, 2 * w, 1),      # 16
            _block(2 * w, 4 * w, 2), _block(4 * w, 4 * w, 1),  # 8
            _block(4 * w, 8 * w, 2),                           # 4
        )
        self.embed = nn.Sequential(nn.Linear(8 * w, self.feature_dim), nn.ReLU(inplace=True))
        self.heads = nn.ModuleList(nn.Linear(self.feature_dim, c) for c in self.cardinalities)
        self.count_head = nn.Linear(self.feature_dim, 1)

    @staticmethod
    def prepare(images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) in [0, 255] or float in [-1, 1] → float [-1, 1] at the input size."""
        x = images.float() / 127.5 - 1.0 if images.dtype == torch.uint8 else images.float()
        if x.shape[-1] != CLASSIFIER_INPUT or x.shape[-2] != CLASSIFIER_INPUT:
            x = F.interpolate(x, size=(CLASSIFIER_INPUT, CLASSIFIER_INPUT), mode="bilinear",
                              align_corners=False, antialias=True)
        return x

    def features(self, images: torch.Tensor) -> torch.Tensor:
        h = self.body(self.prepare(images))
        return self.embed(h.mean(dim=(2, 3)))

    def forward(self, images: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        f = self.features(images)
        return [head(f) for head in self.heads], self.count_head(f).squeeze(1), f
