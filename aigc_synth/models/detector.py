"""The vehicle detector: a small CenterNet-style network that finds vehicles in 64×64 driving scenes.

It is the measuring instrument behind :mod:`aigc_synth.metrics.layout` (do generated images show
vehicles inside the boxes that were requested?). Like the domain classifier it is trained on real
rendered scenes only and is never a generator loss.

Network
    A four-level conv backbone (strides 2, 4, 8) with a top-down path back to stride
    :data:`DETECTOR_STRIDE` = 2, i.e. a 32×32 output grid: distant vehicles are only a few pixels
    wide, so a coarser grid would put several of them in one cell. The head has
    :data:`NUM_OUTPUTS` channels per cell:

    * ``0``: the class-agnostic "vehicle centre" heatmap logit (sigmoid → score);
    * ``1, 2``: ``log`` of the box width and height in input pixels (log: sizes span 2 to 64 px,
      and an error of one pixel matters far more on a small box than on a large one);
    * ``3, 4``: the sub-cell offset of the centre, in cells, in [0, 1] after a sigmoid.

:func:`decode` turns outputs into boxes: 3×3 max-pool peak extraction on the heatmap, top-k,
score threshold.
"""

from __future__ import annotations

import copy
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

#: Input side in pixels; images of any other size are resized by the loader (see ``metrics.layout``).
DETECTOR_INPUT = 64
#: Input pixels per output cell.
DETECTOR_STRIDE = 2
#: Heatmap logit, log w, log h, offset x, offset y.
NUM_OUTPUTS = 5
#: Initial heatmap bias: sigmoid(-4.6) ≈ 0.01, CenterNet's prior so the focal loss starts calm.
HEAT_PRIOR_BIAS = -4.6


class _ConvBNReLU(nn.Sequential):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class VehicleCenterNet(nn.Module):
    """uint8 or [-1, 1] images (B, 3, 64, 64) → raw outputs (B, :data:`NUM_OUTPUTS`, 32, 32).

    ``widths`` are the channels at strides 2, 2 (the output level's own features), 4 and 8.
    Use :meth:`fused` for inference: BatchNorm folded into the convolutions and channels-last
    memory, about twice as fast on one CPU thread.
    """

    def __init__(self, widths: Sequence[int] = (16, 24, 48, 64)):
        super().__init__()
        self.widths = [int(w) for w in widths]
        if len(self.widths) != 4:
            raise ValueError(f"widths needs 4 entries, got {list(widths)}")
        a, b, c, d = self.widths
        self.level1 = nn.Sequential(_ConvBNReLU(3, a, 2), _ConvBNReLU(a, b))  # 32×32
        self.level2 = nn.Sequential(_ConvBNReLU(b, c, 2), _ConvBNReLU(c, c))  # 16×16
        self.level3 = nn.Sequential(_ConvBNReLU(c, d, 2), _ConvBNReLU(d, d))  # 8×8: context for large, near vehicles
        self.lateral3 = nn.Conv2d(d, c, 1)
        self.merge2 = _ConvBNReLU(c, c)
        self.lateral2 = nn.Conv2d(c, b, 1)
        self.head = nn.Sequential(_ConvBNReLU(b, b), nn.Conv2d(b, NUM_OUTPUTS, 1))
        with torch.no_grad():
            self.head[-1].bias.zero_()
            self.head[-1].bias[0] = HEAT_PRIOR_BIAS
            # start at a mid-size (~8 px) box so the log-size loss starts small
            self.head[-1].bias[1:3] = float(np.log(8.0))

    @staticmethod
    def prepare(images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, 64, 64) in [0, 255] or float in [-1, 1] → float [-1, 1]."""
        x = images.float() / 127.5 - 1.0 if images.dtype == torch.uint8 else images.float()
        if x.shape[-2:] != (DETECTOR_INPUT, DETECTOR_INPUT):
            raise ValueError(f"the detector reads {DETECTOR_INPUT}×{DETECTOR_INPUT} images, got {tuple(x.shape[-2:])}")
        return x

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        f1 = self.level1(self.prepare(images))
        f2 = self.level2(f1)
        f3 = self.level3(f2)
        p2 = self.merge2(f2 + F.interpolate(self.lateral3(f3), scale_factor=2, mode="nearest"))
        p1 = f1 + F.interpolate(self.lateral2(p2), scale_factor=2, mode="nearest")
        return self.head(p1)

    def fused(self) -> VehicleCenterNet:
        """An eval-mode copy with every Conv+BN folded into one conv, in channels-last memory."""
        m = copy.deepcopy(self).eval()
        for mod in m.modules():
            if isinstance(mod, _ConvBNReLU) and isinstance(mod[1], nn.BatchNorm2d):
                mod[0] = fuse_conv_bn_eval(mod[0], mod[1])
                mod[1] = nn.Identity()
        return m.to(memory_format=torch.channels_last).requires_grad_(False)


@torch.no_grad()
def decode(outputs: torch.Tensor, max_dets: int = 50, score_threshold: float = 0.05,
           image_size: int = DETECTOR_INPUT) -> list[tuple[np.ndarray, np.ndarray]]:
    """Raw outputs (B, 5, h, w) → per image ``(boxes float32 (k, 4) x0 y0 x1 y1 px, scores float32 (k,))``.

    A cell is a detection when its heatmap score is the maximum of its 3×3 neighbourhood (CenterNet's
    max-pool NMS), among the ``max_dets`` best of the image, and at least ``score_threshold``.
    Boxes are clipped to the ``image_size`` square and sorted by descending score.
    """
    outputs = outputs.float()
    b, _, h, w = outputs.shape
    stride = image_size / w
    heat = torch.sigmoid(outputs[:, 0])
    peaks = heat * (F.max_pool2d(heat[:, None], 3, stride=1, padding=1)[:, 0] == heat)
    k = min(int(max_dets), h * w)
    scores, idx = peaks.reshape(b, -1).topk(k, dim=1)  # sorted, descending
    ys, xs = (idx // w).float(), (idx % w).float()
    flat = outputs.reshape(b, NUM_OUTPUTS, -1)

    def gather(channel: int) -> torch.Tensor:
        return flat[:, channel].gather(1, idx)

    size_w, size_h = gather(1).clamp(max=8.0).exp(), gather(2).clamp(max=8.0).exp()
    cx = (xs + torch.sigmoid(gather(3))) * stride
    cy = (ys + torch.sigmoid(gather(4))) * stride
    boxes = torch.stack([cx - size_w / 2, cy - size_h / 2, cx + size_w / 2, cy + size_h / 2], dim=2).clamp(0, image_size)
    out = []
    for i in range(b):
        keep = scores[i] >= score_threshold
        out.append((boxes[i][keep].numpy().astype(np.float32), scores[i][keep].numpy().astype(np.float32)))
    return out
