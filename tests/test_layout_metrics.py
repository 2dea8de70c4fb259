"""Layout fidelity: the COCO-based AP50 / recall, the ground-truth filter and the bundled vehicle detector."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from aigc_synth.errors import CheckpointError
from aigc_synth.metrics.layout import (
    DEFAULT_DETECTOR,
    MIN_BOX_HEIGHT,
    MIN_VISIBLE,
    gt_ignore_mask,
    layout_fidelity,
    load_vehicle_detector,
    score_layout,
)


def _random_boxes(rng: np.random.Generator, n: int) -> np.ndarray:
    x0, y0 = rng.uniform(0, 48, n), rng.uniform(20, 48, n)
    w, h = rng.uniform(5, 14, n), rng.uniform(5, 14, n)
    return np.stack([x0, y0, x0 + w, y0 + h], 1).astype(np.float32)


@pytest.fixture(scope="module")
def gt() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [_random_boxes(rng, int(k)) for k in rng.integers(1, 5, 30)]


def test_perfect_detections_score_one(gt):
    dets = [(b, np.linspace(1.0, 0.5, len(b), dtype=np.float32)) for b in gt]
    res = layout_fidelity(dets, gt)
    assert res["ap50"] == pytest.approx(1.0) and res["recall"] == pytest.approx(1.0)
    assert res["num_gt"] == sum(len(b) for b in gt) and res["num_ignored"] == 0 and res["num_images"] == len(gt)


def test_detections_shifted_by_a_box_width_score_zero(gt):
    shifted = []
    for b in gt:
        s = b.copy()
        w = s[:, 2] - s[:, 0]
        s[:, 0] += w
        s[:, 2] += w
        shifted.append((s, np.ones(len(s), np.float32)))
    res = layout_fidelity(shifted, gt)
    # ≈ 0, not exactly: a shifted box now and then lands on a neighbouring vehicle of the same image
    assert res["ap50"] < 0.02 and res["recall"] < 0.05


def test_ignored_boxes_are_neither_misses_nor_false_positives():
    boxes = [np.array([[10, 30, 20, 40], [40, 30, 42, 32]], np.float32)]  # the second one is 2 px tall
    ignore = [gt_ignore_mask(boxes[0])]
    assert ignore[0].tolist() == [False, True]
    # only the counted box is found: nothing is missed
    res = layout_fidelity([(boxes[0][:1], np.ones(1, np.float32))], boxes, ignore)
    assert (res["ap50"], res["recall"], res["num_gt"], res["num_ignored"]) == (pytest.approx(1.0), 1.0, 1, 1)
    # a higher-scored detection on the ignored box is not a false positive either
    both = (boxes[0][::-1].copy(), np.array([0.9, 0.8], np.float32))
    assert layout_fidelity([both], boxes, ignore)["ap50"] == pytest.approx(1.0)
    # without the filter the tiny box is a miss
    assert layout_fidelity([(boxes[0][:1], np.ones(1, np.float32))], boxes)["recall"] == pytest.approx(0.5)


def test_empty_images_and_empty_sets():
    empty_d = (np.zeros((0, 4), np.float32), np.zeros(0, np.float32))
    box = np.array([[10, 30, 20, 40]], np.float32)
    # images without boxes or detections are fine next to ones with them
    res = layout_fidelity([empty_d, (box, np.ones(1, np.float32))], [np.zeros((0, 4), np.float32), box])
    assert res["ap50"] == pytest.approx(1.0) and res["num_images"] == 2
    # boxes but no detections: zero, not an error
    res = layout_fidelity([empty_d], [box])
    assert res["ap50"] == 0.0 and res["recall"] == 0.0
    # nothing to find: undefined
    res = layout_fidelity([empty_d], [np.zeros((0, 4), np.float32)])
    assert math.isnan(res["ap50"]) and math.isnan(res["recall"]) and res["num_gt"] == 0


def test_gt_filter_thresholds():
    boxes = np.array([[0, 0, 10, MIN_BOX_HEIGHT], [0, 0, 10, MIN_BOX_HEIGHT - 0.1], [0, 0, 10, 10]], np.float32)
    assert gt_ignore_mask(boxes).tolist() == [False, True, False]
    vis = np.array([1.0, 1.0, MIN_VISIBLE - 0.01], np.float32)
    assert gt_ignore_mask(boxes, vis).tolist() == [False, True, True]
    # heights are measured at the detector's 64-px scale: 6 px of a 128-px image is 3 px
    assert gt_ignore_mask(np.array([[0, 0, 10, 6]], np.float32), image_height=128).tolist() == [True]


# ---- the bundled detector on real renders -----------------------------------------------------------

@pytest.fixture(scope="module")
def detector():
    torch.set_num_threads(1)
    return load_vehicle_detector()


@pytest.fixture(scope="module")
def renders():
    """200 real renders of fresh scenes (seeds the training script never uses), with visibility."""
    from aigc_synth.data.scene_render import TIMES, WEATHERS, render_scene
    from aigc_synth.models.scene_families import load_scene_generator, resolve_scene_checkpoint

    gen = load_scene_generator(resolve_scene_checkpoint(None))
    n = 200
    rng = np.random.default_rng(31337)
    scenes = gen.sample([gen.traffic[i % 3] for i in range(n)], [gen.lanes[(i // 3) % 3] for i in range(n)],
                        rng.integers(0, 2**31 - 1, n).tolist(), list(range(n)), compute_batch=256)
    rs = [render_scene(s, WEATHERS[rng.integers(len(WEATHERS))], TIMES[rng.integers(len(TIMES))], i) for i, s in enumerate(scenes)]
    return np.stack([r.image for r in rs]), [r.boxes for r in rs], [r.visible for r in rs]


def test_bundled_detector_finds_vehicles_where_they_are(detector, renders):
    images, boxes, visible = renders
    real = score_layout(detector, images, boxes, visible)
    assert set(real) == {"ap50", "recall", "num_gt", "num_ignored", "num_images"}
    assert real["num_images"] == 200 and real["num_gt"] > 100 and real["num_ignored"] > 0
    assert real["ap50"] >= 0.8 and real["recall"] >= 0.85, real
    # the same detections against another image's boxes: far lower
    rolled = score_layout(detector, images, boxes[1:] + boxes[:1], visible[1:] + visible[:1])
    assert rolled["ap50"] < 0.5 * real["ap50"], (real, rolled)


def test_detect_is_deterministic_and_inside_the_image(detector, renders):
    images = renders[0][:80]
    a, b = detector.detect(images), detector.detect(images)
    part = detector.detect(images[70:])  # another chunking of the same images
    for (ba, sa), (bb, sb) in zip(a, b):
        assert np.array_equal(ba, bb) and np.array_equal(sa, sb)
    for (ba, sa), (bp, sp) in zip(a[70:], part):
        assert np.array_equal(ba, bp) and np.array_equal(sa, sp)
    for boxes, scores in a:
        assert boxes.dtype == np.float32 and boxes.shape == (len(scores), 4)
        assert (boxes >= 0).all() and (boxes <= 64).all() and (boxes[:, 2] >= boxes[:, 0]).all()
        assert (np.diff(scores) <= 0).all()
    # other sizes are resized for the network, boxes come back in the input's pixels
    big = torch.from_numpy(images[:4]).permute(0, 3, 1, 2).repeat_interleave(2, 2).repeat_interleave(2, 3)
    for boxes, _ in detector.detect(big):
        assert (boxes >= 0).all() and (boxes <= 128).all()


def test_bundled_detector_file_and_id(detector):
    assert DEFAULT_DETECTOR.stat().st_size <= 2 * 2**20
    assert detector.detector_id.startswith("vehdet-v1-") and len(detector.detector_id) == len("vehdet-v1-") + 12
    assert detector.meta["gt_filter"]["min_box_height_px_at_64"] == MIN_BOX_HEIGHT
    assert detector.meta["gt_filter"]["min_visible"] == MIN_VISIBLE


def test_loading_a_non_detector_checkpoint_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="not a vehicle detector"):
        load_vehicle_detector(DEFAULT_DETECTOR.parent / "domain_classifier.pt")
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load_vehicle_detector(text)
    with pytest.raises(CheckpointError, match="not found"):
        load_vehicle_detector(tmp_path / "missing.pt")
