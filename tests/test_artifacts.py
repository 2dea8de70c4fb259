"""Flat-rectangle detector (aigc_synth.metrics.artifacts): DiffAugment cutout squares in generated images."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from aigc_synth.data.procedural import render_scenes
from aigc_synth.metrics.artifacts import (
    CUTOUT_RATIO,
    DEFAULT_TOLERANCE,
    cutout_side,
    default_min_side,
    flat_rectangle_rate,
    flat_rectangles,
    largest_rectangle,
    paste_cutout,
)
from aigc_synth.schema import DEFAULT_SCHEMA


@pytest.fixture(scope="module")
def real() -> np.ndarray:
    """One real 64x64 procedural image per condition (45), fixed seeds."""
    codes = np.array([DEFAULT_SCHEMA.encode(c) for c in DEFAULT_SCHEMA.combinations()])
    return render_scenes(codes, list(range(100, 100 + len(codes)))).images


def test_thresholds_follow_diffaugment_cutout():
    from aigc_synth.training.augment import cutout

    # the detector's geometry is copied from augment.cutout so the metric need not import torch
    assert inspect.signature(cutout).parameters["ratio"].default == CUTOUT_RATIO
    assert cutout_side(64) == 32 and default_min_side(64) == 8


def test_real_images_have_none(real):
    res = flat_rectangle_rate(real)
    assert (res["images"], res["count"], res["rate"], res["indices"]) == (45, 0, 0.0, [])
    assert res["min_side"] == 8 and res["tolerance"] == DEFAULT_TOLERANCE and res["value"] == 128
    # nor any single-colour flat region at the any-colour default: the renderer's sensor noise is ±3.8 levels
    assert flat_rectangle_rate(real[:15], value=None)["count"] == 0


def test_pasted_grey_square_found_once_at_its_place(real):
    image = real[0].copy()
    image[20:52, 10:42] = 128  # a full 32 px cutout: x 10..42, y 20..52
    assert flat_rectangles(image) == [(10, 20, 42, 52)]
    rng = np.random.default_rng(3)
    for im in real[:12]:  # the training geometry: centre anywhere, clipped at the borders (16..32 px visible)
        pasted, rect = paste_cutout(im, rng)
        assert 16 <= rect[2] - rect[0] <= 32 and 16 <= rect[3] - rect[1] <= 32
        found = flat_rectangles(pasted)
        assert len(found) == 1
        assert found[0][0] <= rect[0] and found[0][1] <= rect[1] and found[0][2] >= rect[2] and found[0][3] >= rect[3]
        assert (found[0][2] - found[0][0]) * (found[0][3] - found[0][1]) <= 1.1 * (rect[2] - rect[0]) * (rect[3] - rect[1])


def test_square_smaller_than_min_side_is_ignored(real):
    image = real[1].copy()
    image[5:12, 5:12] = 128  # 7 x 7
    image[30:60, 40:47] = 128  # 30 x 7: one side too short
    assert flat_rectangles(image) == []
    image[5:13, 5:13] = 128  # 8 x 8
    assert flat_rectangles(image) == [(5, 5, 13, 13)]
    assert flat_rectangles(image, min_side=9) == []


def test_tolerance_is_respected(real):
    rng = np.random.default_rng(0)
    image = real[2].copy()
    patch = 128 + rng.integers(-3, 4, (16, 16, 3))
    patch[0, 0, 1] = 128 + 8  # the worst pixel, one channel
    image[10:26, 30:46] = patch
    assert flat_rectangles(image, tolerance=8) == [(30, 10, 46, 26)]
    # at 7 the worst pixel breaks the 16 x 16 square; what is left is smaller, but still flat
    assert all(not (r[0] <= 30 and r[1] <= 10) for r in flat_rectangles(image, tolerance=7))
    assert flat_rectangles(image, tolerance=2) == []
    # another value: the same square is 128-ish, so nothing sits within 8 of 160
    assert flat_rectangles(image, value=160) == []


def test_any_colour_mode_finds_flat_non_grey_square(real):
    image = real[3].copy()
    image[8:28, 20:44] = (40, 200, 90)
    image[8:28, 20:44, 2] += np.arange(24, dtype=np.uint8) % 3  # within 2 of the median (91)
    assert flat_rectangles(image, value=None) == [(20, 8, 44, 28)]
    assert flat_rectangles(image) == []  # not grey


def test_rate_counts_correctly(real):
    images = real[:10].copy()
    for i, (y, x) in {2: (0, 0), 5: (30, 30), 7: (10, 40)}.items():
        images[i, y:y + 20, x:x + 20] = 128
    res = flat_rectangle_rate(images, max_examples=2, chunk=4)  # chunks must not shift the indices
    assert (res["images"], res["count"], res["rate"]) == (10, 3, 0.3)
    assert res["indices"] == [2, 5, 7] and res["examples"] == [2, 5]
    assert [r[0] for r in res["rectangles"]] == [[0, 0, 20, 20], [30, 30, 50, 50], [40, 10, 60, 30]]
    assert res["mean_area"] == 400.0 and res["mean_width"] == 20.0
    # an iterable of single images gives the same answer
    assert flat_rectangle_rate(iter(images))["indices"] == [2, 5, 7]


def test_largest_rectangle_matches_brute_force():
    rng = np.random.default_rng(1)
    for _ in range(60):
        h, w = rng.integers(1, 9, 2)
        mask = rng.random((h, w)) < rng.uniform(0.5, 0.95)
        side = int(rng.integers(1, 4))
        best = 0
        for y0 in range(h):
            for x0 in range(w):
                for y1 in range(y0 + side, h + 1):
                    for x1 in range(x0 + side, w + 1):
                        if mask[y0:y1, x0:x1].all():
                            best = max(best, (y1 - y0) * (x1 - x0))
        rect = largest_rectangle(mask, side)
        area = 0 if rect is None else (rect[2] - rect[0]) * (rect[3] - rect[1])
        assert area == best
        if rect is not None:
            assert mask[rect[1]:rect[3], rect[0]:rect[2]].all()
            assert rect[2] - rect[0] >= side and rect[3] - rect[1] >= side
