"""Pixel statistics of image sets that the domain classifier does not see, for the layout table
(:mod:`aigc_synth.evaluation.layout_table`): fine detail, border seams, variety across latents.

All take uint8 images (N, H, W, 3) and compare a generated set with real renders of the same scenes.
"""

from __future__ import annotations

import numpy as np

#: px: the frame where zero padding leaves its trace in a convolutional generator
BORDER_WIDTH = 3


def blur_residual(x: np.ndarray) -> np.ndarray:
    """|x - its 3×3 box blur| for images (N, H, W[, C]), edges replicated."""
    pads = ((0, 0), (1, 1), (1, 1)) + ((0, 0),) * (x.ndim - 3)
    pad = np.pad(x, pads, mode="edge")
    blur = sum(pad[:, i:i + x.shape[1], j:j + x.shape[2]] for i in range(3) for j in range(3)) / 9.0
    return np.abs(x - blur)


def high_frequency_energy(images: np.ndarray) -> np.ndarray:
    """Per image, the mean |pixel - its 3×3 box blur| (grey levels): rain streaks, snow flakes and
    sensor noise live here; a generator that smooths them away scores lower than the real renders."""
    return blur_residual(images.astype(np.float32).mean(axis=3)).mean(axis=(1, 2))


def border_energy(images: np.ndarray, width: int = BORDER_WIDTH) -> np.ndarray:
    """Per image, the mean |pixel - its 3×3 box blur| per colour channel over the outer ``width``-pixel
    frame: the bright / coloured seams a generator's zero padding draws along the image border (seen in
    the sample grids) score high here; the real renders have only their sensor noise there."""
    frame = np.ones(images.shape[1:3], bool)
    frame[width:-width, width:-width] = False
    return blur_residual(images.astype(np.float32))[:, frame].mean(axis=(1, 2))


def group_variety(images: np.ndarray, features: np.ndarray, k: int) -> dict[str, float]:
    """Variety inside groups of ``k`` consecutive images (one scene and condition each): the mean
    per-pixel standard deviation across the group (grey levels) and the mean pairwise distance of the
    classifier features. Real groups differ by cosmetic seed (car palettes, light level, dash phase,
    particles); generated groups by latent."""
    x = images.astype(np.float32).reshape(-1, k, *images.shape[1:])
    f = np.asarray(features, np.float64).reshape(-1, k, features.shape[-1])
    d = np.linalg.norm(f[:, :, None] - f[:, None, :], axis=-1)
    return {"pixel_std": float(x.std(axis=1).mean()), "feature_distance": float(d.sum(axis=(1, 2)).mean() / (k * (k - 1)))}
