"""Layouts from 2-D annotations: they agree with the scene layout on rendered scenes, unknown channels
are flagged, BDD100K lanes and drivable areas round-trip through the fixture and the reader, COCO
boxes are read with malformed entries counted."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from aigc_synth.data.annotation_layout import (
    FrameAnnotations,
    annotation_layout,
    annotation_layouts,
    annotations_from_scene,
    clip_polygon,
    polygon_coverage,
)
from aigc_synth.data.annotations import format_annotation_skipped, read_bdd100k_annotations, read_coco_annotations
from aigc_synth.data.bdd100k_fixtures import fixture_scenes, write_bdd100k_fixture
from aigc_synth.data.camera import CAMERA_HEIGHT, FOCAL, HORIZON
from aigc_synth.data.layout import LAYOUT_CHANNELS, NEAR_SCALE, scene_layout
from aigc_synth.errors import UsageError
from aigc_synth.scenes.baselines import RandomSceneSampler
from aigc_synth.scenes.format import SceneError

C = {name: i for i, name in enumerate(LAYOUT_CHANNELS)}
# per-channel bound on the mean |annotation layout - scene layout| of one scene (measured: road <= 0.0026,
# the others <= 0.0007; see annotation_layout's docstring)
MEAN_ABS_TOLERANCE = {"road": 0.005, "lane_lines": 0.003, "car": 0.003, "truck": 0.003, "nearness": 0.003, "edges": 0.003}


def _scenes(n: int = 20) -> list:
    sampler = RandomSceneSampler()
    return [sampler.sample(("light", "moderate", "heavy")[k % 3], 2 + k % 3, seed=k) for k in range(n)]


def _iou(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    return int((a & b).sum()), int((a | b).sum())


def test_annotation_layout_matches_the_scene_layout_on_rendered_scenes():
    diffs, inter, union = [], np.zeros(2, int), np.zeros(2, int)
    for sc in _scenes():
        raster, known = annotation_layout(annotations_from_scene(sc, 64), 64)
        ref = scene_layout(sc, 64)
        assert raster.shape == ref.shape and raster.dtype == np.float32 and known.all()
        assert raster.min() >= 0 and raster.max() <= 1
        diffs.append(np.abs(raster - ref).mean(axis=(1, 2)))
        for k, ch in enumerate(("car", "truck")):
            i, u = _iou(raster[C[ch]] > 0.5, ref[C[ch]] > 0.5)
            inter[k] += i
            union[k] += u
            # a few pixels differ where scene_layout keeps hidden vehicles' anti-aliased edges
            assert u < 12 or i / u >= 0.9, (sc.scene_id, ch, i, u)
    diffs = np.array(diffs)
    for name, tol in MEAN_ABS_TOLERANCE.items():
        assert diffs[:, C[name]].max() <= tol, (name, diffs[:, C[name]].max())
    assert (inter / union >= 0.99).all(), inter / union  # measured 0.999, 0.9996
    assert union.min() > 0  # the scenes have cars and trucks
    # the export draws straight lane lines and drivable areas: it refuses the other road kinds
    with pytest.raises(SceneError, match="on a curve road; the annotation export"):
        annotations_from_scene(RandomSceneSampler().sample("moderate", 3, seed=0, road="curve"), 64)


def test_missing_lanes_and_drivable_are_unknown_and_zero():
    full = annotations_from_scene(_scenes(3)[2], 64)
    raster, known = annotation_layout(full, 64)
    assert known.all() and raster[C["road"]].sum() > 0 and raster[C["lane_lines"]].sum() > 0
    boxes_only = FrameAnnotations(full.width, full.height, full.boxes)
    r2, k2 = annotation_layout(boxes_only, 64)
    assert k2.tolist() == [name not in ("road", "lane_lines") for name in LAYOUT_CHANNELS]
    assert not r2[C["road"]].any() and not r2[C["lane_lines"]].any()
    for name in ("car", "truck", "nearness", "edges"):
        np.testing.assert_array_equal(r2[C[name]], raster[C[name]])
    # annotated as absent: known, and zero
    r3, k3 = annotation_layout(FrameAnnotations(full.width, full.height, full.boxes, lanes=[], drivable=[]), 64)
    assert k3.all() and not r3[C["road"]].any() and not r3[C["lane_lines"]].any()
    stack, known_stack = annotation_layouts([full, boxes_only], 64)
    assert stack.shape == (2, len(LAYOUT_CHANNELS), 64, 64) and known_stack.tolist() == [known.tolist(), k2.tolist()]


def test_boxes_categories_scaling_order_nearness_and_truncation():
    W, H = 1280.0, 720.0  # a BDD100K frame, squashed to 64 x 64
    far = (600.0, 340.0, 700.0, 400.0, "bus")  # bus -> truck: 30..35 x 30.2..35.6 on the raster
    near = (640.0, 360.0, 900.0, 600.0, "car")  # 32..45 x 32..53.3: lower bottom edge, in front of the bus
    ann = FrameAnnotations(W, H, [near, far, (0.0, 0.0, 50.0, 50.0, "person"), (1000.0, 500.0, 1280.0, 720.0, "truck")])
    raster, known = annotation_layout(ann, 64)
    assert not known[C["road"]] and not known[C["lane_lines"]]
    car, truck, near_ch, edges = (raster[C[n]] for n in ("car", "truck", "nearness", "edges"))
    # listed first but nearer: the car wins where both are
    assert car[33, 33] == pytest.approx(1.0) and truck[33, 33] == 0.0
    assert truck[33, 31] == pytest.approx(1.0) and car[33, 31] == 0.0
    assert car.sum() == pytest.approx(13 * (600 - 360) * 64 / 720, rel=1e-4)  # exact coverage, nothing hidden
    assert raster[:, :2, :2].sum() == 0  # the person is no vehicle
    y_bottom = 400.0 * 64 / H
    expected = min(1.0, NEAR_SCALE * (y_bottom - HORIZON * 64) / (FOCAL * 64 * CAMERA_HEIGHT))
    assert near_ch[33, 31] == pytest.approx(expected, rel=1e-5) and 0 < expected < 1
    # the truck cut by the image's right and bottom border: its ring runs along its two inner sides only
    assert edges[63, 60] == 0.0 and edges[60, 63] == 0.0 and edges[60, 50] == pytest.approx(1.0)
    assert truck[63, 63] == pytest.approx(1.0)


def test_polygon_coverage_and_clipping():
    square = [(2.5, 2.0), (6.5, 2.0), (6.5, 5.0), (2.5, 5.0)]
    cov = polygon_coverage(square, 8, 8)
    assert cov.sum() == pytest.approx(12.0) and cov[3, 2] == pytest.approx(0.5) and cov[3, 3] == 1.0
    tri = clip_polygon([(4.0, -4.0), (12.0, 8.0), (-4.0, 8.0)], 8, 8)
    assert all(0 <= x <= 8 and 0 <= y <= 8 for x, y in tri)
    assert polygon_coverage(tri, 8, 8).sum() == pytest.approx(polygon_coverage([(4.0, -4.0), (12.0, 8.0), (-4.0, 8.0)], 8, 8).sum())


# -- BDD100K lanes and drivable areas ---------------------------------------------------------------
N_FIXTURE = 4


@pytest.fixture(scope="module")
def layout_fixture(tmp_path_factory):
    return write_bdd100k_fixture(tmp_path_factory.mktemp("bdd") / "bdd", N_FIXTURE, seed=5, resolution=64, layout_labels=True)


def test_default_fixture_is_unchanged(tmp_path):
    images, labels = write_bdd100k_fixture(tmp_path / "a", 2, seed=1, resolution=32)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["images", "labels.json"]
    _, labels_b = write_bdd100k_fixture(tmp_path / "b", 2, seed=1, resolution=32, layout_labels=False)
    assert labels.read_bytes() == labels_b.read_bytes()
    assert {lab["category"] for f in json.loads(labels.read_text()) for lab in f["labels"]} <= {"car"}
    assert [(p.name, p.read_bytes()) for p in sorted(images.iterdir())] == \
        [(p.name, p.read_bytes()) for p in sorted((tmp_path / "b" / "images").iterdir())]


def test_fixture_lanes_and_drivable_round_trip(layout_fixture):
    images, labels = layout_fixture
    out = labels.parent
    assert sorted(p.name for p in out.iterdir()) == ["drivable.json", "images", "labels.json", "lanes.json"]
    lane = json.loads((out / "lanes.json").read_text())[0]["labels"][0]
    assert lane["category"].startswith("lane/") and lane["poly2d"][0]["types"] == "LL" and lane["poly2d"][0]["closed"] is False
    area = json.loads((out / "drivable.json").read_text())[0]["labels"][0]
    assert area["category"] == "area/drivable" and area["poly2d"][0]["closed"] is True
    frames, skipped = read_bdd100k_annotations(labels, out / "lanes.json", out / "drivable.json", images_dir=images)
    assert skipped == {"missing image": 1} and not skipped.boxes and not skipped.shapes
    scenes = fixture_scenes(N_FIXTURE, 5)
    assert len(frames) == len(scenes) - 1
    for i, sc in enumerate(scenes[:-1]):
        ann = frames[f"{i:06d}.{'jpg' if i % 2 else 'png'}"]
        assert (ann.width, ann.height) == (64.0, 64.0)
        raster, known = annotation_layout(ann, 64)
        expected, _ = annotation_layout(annotations_from_scene(sc, 64), 64)
        assert known.all()
        np.testing.assert_allclose(raster, expected, atol=1e-5)
        diff = np.abs(raster - scene_layout(sc, 64)).mean(axis=(1, 2))
        assert all(diff[C[n]] <= tol for n, tol in MEAN_ABS_TOLERANCE.items()), diff
    # without the shape files the channels are unknown; without images_dir the size is BDD100K's
    plain, _ = read_bdd100k_annotations(labels)
    assert all(a.lanes is None and a.drivable is None and (a.width, a.height) == (1280, 720) for a in plain.values())
    assert len(plain) == len(scenes)


def test_malformed_shapes_are_skipped_and_counted(layout_fixture, tmp_path):
    _, labels = layout_fixture
    lanes = json.loads(labels.with_name("lanes.json").read_text())
    areas = json.loads(labels.with_name("drivable.json").read_text())
    good = len(lanes[0]["labels"])
    lanes[0]["labels"] += [
        {"category": "lane/single white", "poly2d": [{"vertices": [[1, 2]], "types": "L"}]},  # one point
        {"category": "lane/single white", "poly2d": [{"vertices": [[1, 2], [3, "x"]], "types": "LL"}]},
        {"category": "lane/single white", "poly2d": [{"vertices": [[1, 2], [3, 4]], "types": "LX"}]},
        {"category": "lane/road curb", "poly2d": "nope"},
        {"category": "lane/single yellow",  # a cubic Bézier: flattened, kept
         "poly2d": [{"vertices": [[10, 60], [12, 50], [14, 40], [16, 30]], "types": "LCCL", "closed": False}]},
        {"category": "lane", "attributes": {"laneTypes": "crosswalk", "laneDirection": "vertical"},  # legacy form
         "poly2d": [[0, 50, "L"], [60, 50, "L"]]},
        "not a label",
    ]
    lanes[1] = "not a frame"
    lanes.append({"name": "elsewhere.jpg", "labels": []})
    areas[0]["labels"] += [{"category": "area/alternative", "poly2d": [{"vertices": [[0, 0], [5, 5]], "types": "LL", "closed": True}]},
                           {"category": "area/drivable", "poly2d": [{"vertices": [[0, 40], [10, 40], [10, 50]], "types": "LLL",
                                                                     "closed": True}]}]
    (tmp_path / "lanes.json").write_text(json.dumps(lanes))
    (tmp_path / "drivable.json").write_text(json.dumps(areas))
    frames, skipped = read_bdd100k_annotations(labels, tmp_path / "lanes.json", tmp_path / "drivable.json", image_size=(64, 64))
    assert skipped.shapes == {"malformed lane poly2d": 4, "malformed lane label": 1, "malformed lane frame": 1,
                              "lane frame not in the labels": 1, "malformed drivable poly2d": 1}
    assert "8 shapes dropped" in format_annotation_skipped(skipped)
    first = frames["000000.png"]
    assert len(first.lanes) == good + 2 and first.lane_styles[-2:] == ["single yellow", "vertical"]
    curve = first.lanes[-2]
    assert curve[0] == (10.0, 60.0) and curve[-1] == (16.0, 30.0) and len(curve) == 9
    assert len(first.drivable) == 2
    assert frames["000001.jpg"].lanes is None  # its lane frame was malformed: unknown, not empty
    # a line across the road is no lane boundary: it does not reach the raster
    raster, _ = annotation_layout(first, 64)
    without, _ = annotation_layout(FrameAnnotations(64, 64, first.boxes, first.lanes[:-1], first.lane_styles[:-1], first.drivable), 64)
    np.testing.assert_array_equal(raster, without)


def test_bdd100k_annotation_reader_errors(tmp_path):
    (tmp_path / "bad.json").write_text('[{"name": ')
    with pytest.raises(UsageError, match="cannot read BDD100K labels") as exc:
        read_bdd100k_annotations(tmp_path / "bad.json")
    assert "\n" not in str(exc.value)
    with pytest.raises(UsageError, match="not found"):
        read_bdd100k_annotations(tmp_path / "missing.json")
    (tmp_path / "l.json").write_text(json.dumps([{"name": "a.jpg", "labels": [{"category": "car", "box2d": {"x1": 5}}]}, 3]))
    with pytest.raises(UsageError, match="no usable frames .*malformed box2d: 1.*malformed frame: 1"):
        read_bdd100k_annotations(tmp_path / "l.json")


# -- COCO ---------------------------------------------------------------------------------------------
def _coco() -> dict:
    return {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 640, "height": 480},
                   {"id": 2, "file_name": "b.jpg", "width": 320, "height": 320},
                   {"id": 3, "file_name": "c.jpg"},  # no size
                   {"id": 1, "file_name": "d.jpg", "width": 10, "height": 10}],  # duplicate id
        "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}, {"id": 6, "name": "bus"},
                       {"id": 8, "name": "truck"}, {"id": "x"}],
        "annotations": [
            {"image_id": 1, "bbox": [100, 200, 50, 40], "category_id": 3},
            {"image_id": 1, "bbox": [300, 220, 120, 100], "category_id": 6},
            {"image_id": 1, "bbox": [10, 10, 20, 60], "category_id": 1},
            {"image_id": 1, "bbox": [600, 400, 100, 100], "category_id": 8},  # clipped to the image
            {"image_id": 1, "bbox": [700, 10, 10, 10], "category_id": 3},  # outside the image
            {"image_id": 1, "bbox": [1, 2, 3], "category_id": 3},
            {"image_id": 1, "bbox": [1, 2, -3, 4], "category_id": 3},
            {"image_id": 9, "bbox": [1, 2, 3, 4], "category_id": 3},
            {"image_id": 1, "bbox": [1, 2, 3, 4], "category_id": 99},
            {"image_id": 2, "bbox": [1, 2, 30, 40], "category_id": 3, "iscrowd": 1},
            "junk",
        ],
    }


def test_coco_reader_counts_malformed_entries(tmp_path):
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(_coco()))
    frames, skipped = read_coco_annotations(path)
    assert sorted(frames) == ["a.jpg", "b.jpg"]
    assert skipped == {"malformed image": 1, "duplicate image id": 1}
    assert skipped.boxes == {"malformed annotation": 3, "unknown image_id": 1, "unknown category_id": 1, "crowd": 1,
                             "outside the image": 1}
    a = frames["a.jpg"]
    assert (a.width, a.height, a.lanes, a.drivable) == (640.0, 480.0, None, None)
    assert a.boxes == [(100.0, 200.0, 150.0, 240.0, "car"), (300.0, 220.0, 420.0, 320.0, "bus"),
                       (10.0, 10.0, 30.0, 70.0, "person"), (600.0, 400.0, 640.0, 480.0, "truck")]
    assert frames["b.jpg"].boxes == []
    raster, known = annotation_layout(a, 64)
    assert known.tolist() == [False, False, True, True, True, True]
    assert raster[C["truck"], 35, 35] == pytest.approx(1.0) and raster[C["car"], 35, 35] == 0.0  # the bus
    assert raster[C["car"], 28, 12] == pytest.approx(1.0)


def test_broken_coco_files_are_one_line_usage_errors(tmp_path):
    path = tmp_path / "instances.json"
    for text, match in [('{"images": [', "cannot read COCO instances"), ("[1, 2]", "'images' and 'annotations'"),
                        ('{"images": []}', "'images' and 'annotations'"),
                        ('{"images": [{"id": 1}], "annotations": []}', "no usable images .*malformed image: 1")]:
        path.write_text(text)
        with pytest.raises(UsageError, match=match) as exc:
            read_coco_annotations(path)
        assert "\n" not in str(exc.value) and exc.value.exit_status == 2
    with pytest.raises(UsageError, match="not found"):
        read_coco_annotations(tmp_path / "missing.json")


def test_reader_json_errors_name_the_file(tmp_path):
    path = Path(tmp_path) / "instances.json"
    path.write_text("{" * 10)
    with pytest.raises(UsageError, match=str(path.name)):
        read_coco_annotations(path)
