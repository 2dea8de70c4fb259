"""Flat-rectangle artifacts: DiffAugment cutout squares that leak into generated images.

:func:`aigc_synth.training.augment.cutout` zeroes a square of ``int(size * 0.5 + 0.5)`` pixels a side
(32 at 64×64) in *both* the real and the fake batches the discriminator sees. Zero in [-1, 1] is
pixel value 128 after :func:`aigc_synth.sampling.sampler.to_uint8`, so a generator that learns to
imitate augmented reals paints flat mid-grey blocks of about that shape. The square's centre is drawn
anywhere in the image (borders included), so the visible part is 16..32 pixels a side at 64×64.

* :func:`flat_rectangles` - the axis-aligned rectangles of one image whose every pixel, in all three
  channels, is within ``tolerance`` of ``value`` (or of the rectangle's own median colour with
  ``value=None``), largest first, as ``(x0, y0, x1, y1)`` with exclusive ends (``image[y0:y1, x0:x1]``).
* :func:`flat_rectangle_rate` - how many images of a batch carry at least one.
* :func:`paste_cutout` - a synthetic cutout with DiffAugment's geometry, to calibrate the detector.

Thresholds (measured with ``scripts/audit_flat_rectangles.py`` on 4,500 real procedural images, 100
per condition, and the bundled 64×64 generator):

* ``min_side`` defaults to a quarter of the cutout side (8 at 64×64): half the smallest visible piece
  of a border-clipped cutout, so the generator's soft-edged copies still contain such a square.
* ``tolerance`` defaults to 8 grey levels, not 2: the generator does not reproduce 128 exactly, the
  medians of its grey blocks range over about 120-135 per channel with ±2 of texture, so at
  tolerance 2 the bundled model scores 0 % although about 3 % of its images visibly carry the blocks
  (6: 1.7 %, 8: 3.0 %, 10: 3.8 %). Real images never come that close to 128: over every 8×8 window
  the smallest worst-channel distance is 12 levels on the 4,500 audit images and 10 on 45,000 (a
  rain/day sky), because no real surface is mid-grey and the renderer adds ±3.8 levels of noise.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

#: :func:`aigc_synth.training.augment.cutout`'s default ``ratio`` (side of the square / image size).
#: Copied rather than imported so this metric does not pull in torch; tests/test_artifacts.py checks it.
CUTOUT_RATIO = 0.5
#: A zeroed [-1, 1] pixel after ``to_uint8``: floor((0 + 1) * 127.5 + 0.5).
CUTOUT_VALUE = 128
#: Per-channel distance to ``value`` still counted as flat (see the module docstring for why 8).
DEFAULT_TOLERANCE = 8
#: The same with ``value=None`` (distance to the rectangle's own median): must stay below the real
#: renderer's sensor noise (±3.8 levels), or every real surface counts as flat; at 3, 66 of 4,500 real
#: images are flagged, at 2 none.
DEFAULT_ANY_COLOUR_TOLERANCE = 2

Rect = tuple[int, int, int, int]


def cutout_side(resolution: int, ratio: float = CUTOUT_RATIO) -> int:
    """Side in pixels of DiffAugment's cutout square at ``resolution`` (same rounding as augment.cutout)."""
    return int(resolution * ratio + 0.5)


def default_min_side(resolution: int) -> int:
    """A quarter of the cutout side (8 at 64×64), never below 2 so single noisy pixels cannot count."""
    return max(cutout_side(resolution) // 4, 2)


def _check_images(images: np.ndarray) -> np.ndarray:
    if images.dtype != np.uint8 or images.ndim < 3 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 images (..., H, W, 3), got {images.dtype} {images.shape}")
    return images


def flat_mask(image: np.ndarray, tolerance: int = DEFAULT_TOLERANCE, value: int | Sequence[int] = CUTOUT_VALUE) -> np.ndarray:
    """bool (..., H, W): pixels whose three channels are all within ``tolerance`` of ``value``."""
    diff = np.abs(image.astype(np.int16) - np.asarray(value, np.int16))
    return (diff <= tolerance).all(-1)


def _has_square(masks: np.ndarray, side: int) -> np.ndarray:
    """bool (B,): does each (B, H, W) mask hold a fully True ``side`` × ``side`` square? (integral images)"""
    b, h, w = masks.shape
    if side > h or side > w:
        return np.zeros(b, bool)
    ii = np.zeros((b, h + 1, w + 1), np.int32)
    ii[:, 1:, 1:] = masks.cumsum(1, dtype=np.int32).cumsum(2, dtype=np.int32)
    window = ii[:, side:, side:] - ii[:, :-side, side:] - ii[:, side:, :-side] + ii[:, :-side, :-side]
    return (window == side * side).any((1, 2))


def largest_rectangle(mask: np.ndarray, min_side: int = 1) -> Rect | None:
    """Largest-area all-True axis-aligned rectangle of a (H, W) bool mask with both sides >= ``min_side``.

    Histogram of heights, vectorised: ``heights[r, c]`` is the run of True ending at row ``r`` in
    column ``c``; for every row and every left column the running minimum of the heights over the
    next ``k + 1`` columns is the tallest rectangle of width ``k + 1`` whose bottom edge is that row.
    Every maximal rectangle is one of these, so the best admissible one is the answer. Rows are
    processed in blocks of at most ~4M (row, left, width) cells, so memory stays bounded at any size.
    """
    mask = np.asarray(mask, bool)
    h, w = mask.shape
    if min_side > h or min_side > w or not mask.any():
        return None
    heights = np.zeros((h, w), np.int32)
    run = np.zeros(w, np.int32)
    for r in range(h):
        run = np.where(mask[r], run + 1, 0)
        heights[r] = run
    # shifted[r, l, k] = heights[r, l + k] (0 past the right edge), so a cumulative min along k is the
    # minimum height over columns l..l+k
    cols = np.arange(w)[:, None] + np.arange(w)[None, :]
    valid = cols < w
    cols = np.where(valid, cols, 0)
    width = np.arange(1, w + 1)[None, None, :]
    best: tuple[int, Rect] | None = None
    block = max(1, (1 << 22) // (w * w))
    for r0 in range(0, h, block):
        hb = heights[r0:r0 + block]
        tallest = np.minimum.accumulate(np.where(valid[None], hb[:, cols], 0), axis=2)
        area = np.where((tallest >= min_side) & (width >= min_side), tallest * width, 0)
        flat = int(area.argmax())
        if area.flat[flat] == 0:
            continue
        r, left, k = np.unravel_index(flat, area.shape)
        if best is None or area.flat[flat] > best[0]:
            height = int(tallest[r, left, k])
            bottom = r0 + int(r) + 1
            best = (int(area.flat[flat]), (int(left), bottom - height, int(left) + int(k) + 1, bottom))
    return None if best is None else best[1]


def _greedy(mask: np.ndarray, min_side: int, max_rectangles: int) -> list[Rect]:
    """Largest rectangle, remove it, repeat: disjoint rectangles, largest first."""
    mask = mask.copy()
    found: list[Rect] = []
    while len(found) < max_rectangles:
        rect = largest_rectangle(mask, min_side)
        if rect is None:
            break
        x0, y0, x1, y1 = rect
        mask[y0:y1, x0:x1] = False
        found.append(rect)
    return found


def _window_range(image: np.ndarray, side: int) -> np.ndarray:
    """(H-side+1, W-side+1): the largest per-channel max - min over each side × side window (separable)."""
    x = image.astype(np.int16)
    hi = sliding_window_view(sliding_window_view(x, side, axis=0).max(-1), side, axis=1).max(-1)
    lo = sliding_window_view(sliding_window_view(x, side, axis=0).min(-1), side, axis=1).min(-1)
    return (hi - lo).max(-1)


def _any_colour(image: np.ndarray, min_side: int, tolerance: int, max_rectangles: int, max_seeds: int = 64) -> list[Rect]:
    """``value=None``: rectangles within ``tolerance`` of their own median colour.

    A pixel within ``tolerance`` of the median implies a per-channel range <= 2·tolerance, so only
    windows passing that cheap test seed a search; the seed's median colour gives a mask, its largest
    rectangle is re-checked against that rectangle's own median (and retried once with it).
    """
    h, w = image.shape[:2]
    if min_side > h or min_side > w:
        return []
    x = image.astype(np.int16)
    seeds = np.argwhere(_window_range(image, min_side) <= 2 * tolerance)
    free = np.ones((h, w), bool)
    tried = np.zeros((h, w), bool)  # seed corners inside a rectangle that failed: they would find it again
    found: list[Rect] = []
    tries = 0
    for cy, cx in seeds:
        if len(found) >= max_rectangles or tries >= max_seeds:
            break  # bounded work on images that are flat almost everywhere
        if tried[cy, cx] or not free[cy:cy + min_side, cx:cx + min_side].all():
            continue  # already inside an accepted or a failed rectangle
        tries += 1
        colour = np.median(x[cy:cy + min_side, cx:cx + min_side].reshape(-1, 3), axis=0)
        for attempt in range(2):
            rect = largest_rectangle(flat_mask(image, tolerance, np.rint(colour).astype(np.int16)) & free, min_side)
            if rect is None:
                break
            x0, y0, x1, y1 = rect
            patch = x[y0:y1, x0:x1].reshape(-1, 3)
            colour = np.median(patch, axis=0)
            if (np.abs(patch - colour) <= tolerance).all():
                free[y0:y1, x0:x1] = False
                found.append(rect)
                break
            if attempt:
                tried[y0:y1, x0:x1] = True
        tried[cy, cx] = True
    return sorted(found, key=lambda r: -(r[2] - r[0]) * (r[3] - r[1]))


def _tolerance(tolerance: int | None, value: int | None) -> int:
    if tolerance is None:
        return DEFAULT_ANY_COLOUR_TOLERANCE if value is None else DEFAULT_TOLERANCE
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    return int(tolerance)


def flat_rectangles(image: np.ndarray, min_side: int | None = None, tolerance: int | None = None,
                    value: int | None = CUTOUT_VALUE, max_rectangles: int = 8) -> list[Rect]:
    """Disjoint flat rectangles of a uint8 (H, W, 3) image, largest first, as ``(x0, y0, x1, y1)`` (ends exclusive).

    A rectangle counts when both sides are >= ``min_side`` (default :func:`default_min_side` of the
    image's smaller side) and every pixel of all three channels is within ``tolerance`` of ``value``
    (``None``: of the rectangle's own median colour, i.e. any single flat colour). ``tolerance``
    defaults to :data:`DEFAULT_TOLERANCE` (8) with a fixed ``value`` and to
    :data:`DEFAULT_ANY_COLOUR_TOLERANCE` (2) with ``value=None``. The first entry is the largest; the
    rest are found greedily in what is left, up to ``max_rectangles``.
    """
    image = _check_images(np.asarray(image))
    if image.ndim != 3:
        raise ValueError(f"expected one (H, W, 3) image, got shape {image.shape}")
    side = default_min_side(min(image.shape[:2])) if min_side is None else int(min_side)
    if side < 1:
        raise ValueError(f"min_side must be >= 1, got {min_side}")
    tolerance = _tolerance(tolerance, value)
    if value is None:
        return _any_colour(image, side, tolerance, max_rectangles)
    mask = flat_mask(image, tolerance, value)
    if not _has_square(mask[None], side)[0]:
        return []
    return _greedy(mask, side, max_rectangles)


def _chunks(images: np.ndarray | Iterable[np.ndarray], size: int) -> Iterable[np.ndarray]:
    if isinstance(images, np.ndarray):
        for start in range(0, len(images), size):
            yield images[start:start + size]
        return
    buf: list[np.ndarray] = []
    for im in images:
        buf.append(np.asarray(im))
        if len(buf) == size:
            yield np.stack(buf)
            buf = []
    if buf:
        yield np.stack(buf)


def flat_rectangle_rate(images: np.ndarray | Iterable[np.ndarray], *, min_side: int | None = None,
                        tolerance: int | None = None, value: int | None = CUTOUT_VALUE,
                        max_examples: int = 16, chunk: int = 512) -> dict[str, Any]:
    """Share of images with at least one flat rectangle (see :func:`flat_rectangles` for the parameters).

    ``images`` is uint8 (N, H, W, 3) or an iterable of (H, W, 3) images of one size. Returns
    ``{"images", "count", "rate", "examples" (first ``max_examples`` flagged indices), "indices" (all
    flagged), "rectangles" (per flagged index, largest first), "mean_area" / "mean_width" /
    "mean_height" (of each flagged image's largest rectangle; None without any), "min_side",
    "tolerance", "value"}``. With a fixed ``value`` a whole chunk is screened at once (an image is
    flagged iff its mask holds a full ``min_side`` square), and only flagged images are searched.
    """
    total, indices, rects = 0, [], []
    side = min_side
    tolerance = _tolerance(tolerance, value)
    for batch in _chunks(images, chunk):
        batch = _check_images(batch)
        if side is None:
            side = default_min_side(min(batch.shape[1:3]))
        if value is None:
            candidates = np.arange(len(batch))
        else:
            candidates = np.nonzero(_has_square(flat_mask(batch, tolerance, value), side))[0]
        for i in candidates:
            found = flat_rectangles(batch[i], side, tolerance, value)
            if found:
                indices.append(total + int(i))
                rects.append([list(r) for r in found])
        total += len(batch)
    largest = np.array([r[0] for r in rects], np.float64).reshape(-1, 4)
    widths, heights = largest[:, 2] - largest[:, 0], largest[:, 3] - largest[:, 1]
    return {
        "images": total, "count": len(indices), "rate": len(indices) / total if total else float("nan"),
        "examples": indices[:max_examples], "indices": indices, "rectangles": rects,
        "mean_area": float((widths * heights).mean()) if len(rects) else None,
        "mean_width": float(widths.mean()) if len(rects) else None,
        "mean_height": float(heights.mean()) if len(rects) else None,
        "min_side": side, "tolerance": tolerance, "value": value,
    }


def paste_cutout(image: np.ndarray, rng: np.random.Generator, value: int = CUTOUT_VALUE,
                 ratio: float = CUTOUT_RATIO) -> tuple[np.ndarray, Rect]:
    """A copy of ``image`` with a ``value`` square placed exactly as augment.cutout places its zeros.

    The centre is uniform over ``[0, size + (1 - side % 2))`` on each axis and the square is clipped at
    the borders, so the visible part is between half and all of the cutout side. Returns the image and
    the visible rectangle ``(x0, y0, x1, y1)``.
    """
    h, w = image.shape[:2]
    ch, cw = cutout_side(h, ratio), cutout_side(w, ratio)
    oy = int(rng.integers(0, h + (1 - ch % 2)))
    ox = int(rng.integers(0, w + (1 - cw % 2)))
    y0, x0 = max(oy - ch // 2, 0), max(ox - cw // 2, 0)
    y1, x1 = min(oy - ch // 2 + ch, h), min(ox - cw // 2 + cw, w)
    out = image.copy()
    out[y0:y1, x0:x1] = value
    return out, (x0, y0, x1, y1)
