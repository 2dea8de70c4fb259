"""Train a :class:`~aigc_synth.models.detector.VehicleCenterNet` from arrays: the vehicle detector's recipe.

``scripts/train_vehicle_detector.py`` (the bundled ``assets/vehicle_detector.pt``) renders its pools
and calls :func:`train_vehicle_detector`; the downstream benchmark
(:mod:`aigc_synth.benchmarks.downstream`) calls it on real, generated and mixed sets. The recipe:

* targets (:func:`encode_targets`): CenterNet heatmap (elliptical Gaussian per counted box), log
  width / height and sub-cell offset at the centre cell; ignore boxes (the layout metric's
  ground-truth filter, :func:`~aigc_synth.metrics.layout.gt_ignore_mask`) get weight 0;
* loss (:func:`detection_loss`): penalty-reduced focal loss (alpha 2, beta 4) + L1 on log size and
  offset at centres;
* optimiser: AdamW (weight decay 1e-4), one-cycle learning rate;
* augmentation: horizontal flip (with the boxes) p = 0.5, then :func:`augment` (gain, bias, blur,
  noise; no geometry).

Batches are drawn with replacement, ``batch_size`` per step, for exactly ``steps`` steps whatever
the number of examples.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF
from tqdm import tqdm

from aigc_synth.metrics.layout import gt_ignore_mask
from aigc_synth.models.detector import DETECTOR_INPUT, DETECTOR_STRIDE, VehicleCenterNet

GRID = DETECTOR_INPUT // DETECTOR_STRIDE
DEFAULT_WIDTHS = (16, 24, 48, 64)


# ---- targets and loss ------------------------------------------------------------------------------------

def encode_targets(boxes: Sequence[np.ndarray], ignore: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
    """CenterNet targets on the output grid for boxes (pixels) that count; ignore boxes get weight 0.

    ``heat`` (B, G, G): an elliptical Gaussian per counted box (sigma = box side / 6 in cells, at
    least 0.5), exactly 1 at the box centre's cell; ``weight`` the per-cell negative-loss weight
    (0 inside ignore boxes, except where a counted box's Gaussian is); ``size`` (B, 2, G, G) log w, h
    in pixels and ``offset`` (B, 2, G, G) the centre's position inside its cell, both at ``pos``.
    """
    b = len(boxes)
    heat = np.zeros((b, GRID, GRID), np.float32)
    weight = np.ones((b, GRID, GRID), np.float32)
    size = np.zeros((b, 2, GRID, GRID), np.float32)
    offset = np.zeros((b, 2, GRID, GRID), np.float32)
    pos = np.zeros((b, GRID, GRID), np.float32)
    g = np.arange(GRID, dtype=np.float32)
    for i, (bx, ig) in enumerate(zip(boxes, ignore)):
        for (x0, y0, x1, y1), skip in zip(bx, ig):
            if skip:
                weight[i, int(y0 // DETECTOR_STRIDE):int(np.ceil(y1 / DETECTOR_STRIDE)),
                       int(x0 // DETECTOR_STRIDE):int(np.ceil(x1 / DETECTOR_STRIDE))] = 0.0
                continue
            cx, cy = (x0 + x1) / 2 / DETECTOR_STRIDE, (y0 + y1) / 2 / DETECTOR_STRIDE
            ix, iy = min(int(cx), GRID - 1), min(int(cy), GRID - 1)
            sx = max((x1 - x0) / DETECTOR_STRIDE / 6.0, 0.5)
            sy = max((y1 - y0) / DETECTOR_STRIDE / 6.0, 0.5)
            gauss = np.exp(-((g[None, :] - ix) ** 2) / (2 * sx * sx) - ((g[:, None] - iy) ** 2) / (2 * sy * sy))
            np.maximum(heat[i], gauss, out=heat[i])
            size[i, :, iy, ix] = np.log(max(x1 - x0, 0.5)), np.log(max(y1 - y0, 0.5))
            offset[i, :, iy, ix] = cx - ix, cy - iy
            pos[i, iy, ix] = 1.0
    weight[heat > 0.01] = 1.0
    return {k: torch.from_numpy(v) for k, v in
            {"heat": heat, "weight": weight, "size": size, "offset": offset, "pos": pos}.items()}


def detection_loss(out: torch.Tensor, t: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    """Penalty-reduced focal loss on the heatmap (CenterNet) + L1 on log size and offset at centres."""
    logit = out[:, 0]
    p = torch.sigmoid(logit)
    pos = t["pos"]
    num_pos = pos.sum().clamp(min=1.0)
    pos_loss = F.logsigmoid(logit) * (1 - p) ** 2 * pos
    neg_loss = F.logsigmoid(-logit) * p ** 2 * (1 - t["heat"]) ** 4 * (1 - pos) * t["weight"]
    focal = -(pos_loss.sum() + neg_loss.sum()) / num_pos
    m = pos[:, None]
    size_l1 = (F.l1_loss(out[:, 1:3], t["size"], reduction="none") * m).sum() / num_pos
    off_l1 = (F.l1_loss(torch.sigmoid(out[:, 3:5]), t["offset"], reduction="none") * m).sum() / num_pos
    loss = focal + size_l1 + off_l1
    return loss, {"focal": focal.item(), "size": size_l1.item(), "offset": off_l1.item()}


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """[-1, 1] batch → brightness/contrast jitter, sometimes blurred, light noise (no geometry: the
    flip is applied with the boxes). Blur and noise stand in for the softness and grain of generated images."""
    b = x.shape[0]
    gain = 1.0 + 0.2 * (torch.rand(b, 1, 1, 1, generator=gen) - 0.5)
    bias = 0.1 * (torch.rand(b, 1, 1, 1, generator=gen) - 0.5)
    x = x * gain + bias
    if torch.rand(1, generator=gen).item() < 0.4:
        sigma = 0.3 + 0.6 * torch.rand(1, generator=gen).item()
        x = TF.gaussian_blur(x, kernel_size=[5, 5], sigma=[sigma, sigma])
    noise = torch.randn(x.shape, generator=gen) * (0.05 * torch.rand(b, 1, 1, 1, generator=gen))
    return (x + noise).clamp(-1, 1)


AUGMENT_DESCRIPTION = "hflip p=.5, gain ±10 %, bias ±0.05, blur p=.4 sigma .3-.9, noise <= 0.05"
LOSS_DESCRIPTION = ("penalty-reduced focal (alpha 2, beta 4) on elliptical Gaussian heatmap, ignore boxes masked; "
                    "L1 on log w/h and sigmoid offset at centres")


# ---- training --------------------------------------------------------------------------------------------

def one_cycle(opt: torch.optim.Optimizer, lr: float, steps: int, pct_start: float) -> torch.optim.lr_scheduler.LRScheduler:
    """OneCycleLR over ``steps``; runs of one or two steps (smoke tests) get a constant rate / a
    valid warm-up share (OneCycleLR divides by zero on an empty phase and rejects pct_start > 1)."""
    if steps < 2:
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    if steps == 2:
        pct_start = 0.75
    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=pct_start)


def _as_nchw_uint8(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(images, np.ndarray):
        if images.ndim != 4 or images.shape[3] != 3:
            raise ValueError(f"expected (n, H, W, 3) uint8 images, got shape {images.shape}")
        images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected uint8 (n, 3, H, W) images, got {images.dtype} {tuple(images.shape)}")
    if tuple(images.shape[2:]) != (DETECTOR_INPUT, DETECTOR_INPUT):
        raise ValueError(f"the detector trains on {DETECTOR_INPUT}x{DETECTOR_INPUT} images, got {tuple(images.shape[2:])}")
    return images


def train_vehicle_detector(images: np.ndarray | torch.Tensor, boxes: Sequence[np.ndarray],
                           visible: Sequence[np.ndarray] | None = None, steps: int = 1000, batch_size: int = 64,
                           seed: int = 0, lr: float = 3e-3, widths: Sequence[int] = DEFAULT_WIDTHS, *,
                           ignore: Sequence[np.ndarray] | None = None, init_seed: int | None = None,
                           progress: bool = True,
                           callback: Callable[[int, int, dict[str, float]], None] | None = None) -> VehicleCenterNet:
    """Train a detector on ``images`` (uint8, (n, 64, 64, 3) numpy or (n, 3, 64, 64) tensor) with their
    ``boxes`` (per image (k, 4) x0 y0 x1 y1 pixels) for exactly ``steps`` steps of ``batch_size``
    images drawn with replacement; return it in eval mode.

    The ignore boxes are ``ignore`` (per image bool (k,)) when given, else the layout metric's
    ground-truth filter on ``boxes`` and their ``visible`` fractions. ``seed`` drives the batch
    draws, flips and augmentation; the initial weights come from ``torch.manual_seed(init_seed)``
    when ``init_seed`` is given, else from the global torch RNG as it stands (what the bundled
    detector's script does: it seeds once, before rendering). ``callback(step, batch, logs)`` runs
    after every step with the number of images that step trained on.
    """
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps}, {batch_size}")
    images = _as_nchw_uint8(images)
    n = len(images)
    if n == 0 or len(boxes) != n:
        raise ValueError(f"{n} images but {len(boxes)} box lists")
    if ignore is None:
        if visible is not None and len(visible) != n:
            raise ValueError(f"{n} images but {len(visible)} visibility lists")
        ignore = [gt_ignore_mask(b, None if visible is None else visible[i]) for i, b in enumerate(boxes)]
    elif len(ignore) != n:
        raise ValueError(f"{n} images but {len(ignore)} ignore masks")
    if init_seed is not None:
        torch.manual_seed(init_seed)
    model = VehicleCenterNet(widths).to(memory_format=torch.channels_last)  # ~25 % faster steps on CPU
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    # at least two warm-up steps: OneCycleLR divides by zero on a one-step phase (tiny smoke runs)
    sched = one_cycle(opt, lr, steps, max(0.1, 2.5 / steps))
    gen = torch.Generator().manual_seed(seed)
    model.train()
    bar = tqdm(total=steps, desc="vehicle detector", mininterval=5, disable=not progress)
    for step in range(1, steps + 1):
        idx = torch.randint(0, n, (batch_size,), generator=gen)
        flip = (torch.rand(batch_size, generator=gen) < 0.5).tolist()
        x = images[idx].float() / 127.5 - 1.0
        x = torch.where(torch.tensor(flip)[:, None, None, None], x.flip(-1), x)
        batch_boxes = []
        for i, f in zip(idx.tolist(), flip):
            b = boxes[i]
            batch_boxes.append(np.stack([DETECTOR_INPUT - b[:, 2], b[:, 1], DETECTOR_INPUT - b[:, 0], b[:, 3]], 1)
                               if f and len(b) else b)
        targets = encode_targets(batch_boxes, [ignore[i] for i in idx.tolist()])
        x = augment(x, gen).contiguous(memory_format=torch.channels_last)
        loss, logs = detection_loss(model(x), targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.update(1)
        if step % 25 == 0 or step == steps:
            bar.set_postfix({k: f"{v:.3f}" for k, v in logs.items()})
        if callback is not None:
            callback(step, len(idx), {"loss": loss.item(), **logs})
    bar.close()
    model.eval()
    return model


def recipe(steps: int, batch_size: int, lr: float, seed: int, widths: Sequence[int]) -> dict[str, Any]:
    """The recipe's plain-data description (stored in checkpoints and reports)."""
    return {"widths": [int(w) for w in widths], "steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed,
            "optimizer": "AdamW wd 1e-4, one-cycle", "loss": LOSS_DESCRIPTION, "augment": AUGMENT_DESCRIPTION}
