"""The camera renderer and the layout raster on every road kind (issue 29): straight output unchanged
bit for bit, curves bend to their side, a merge's ramp and acceleration lane lie right of lane 0 and
end at event_s, a lane drop's leftmost lane ends, boxes sit at the projected vehicle poses (checked
against an independent projection here), visibility is exact on the projected faces, and the layout
raster agrees with the render. Scenes are built by hand; the SUMO test skips without libsumo."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest

from aigc_synth.data.camera import (
    CAMERA_HEIGHT,
    FOCAL,
    HORIZON,
    NEAR_CLIP,
    SHOULDER,
    TAPER_LENGTH,
    VEHICLE_HEIGHT,
    road_raster,
)
from aigc_synth.data.layout import LAYOUT_CHANNELS, scene_layout
from aigc_synth.data.scene_render import render_scene, scene_boxes
from aigc_synth.scenes.format import (
    LANE_WIDTH,
    RAMP_LANE,
    ROAD_KINDS,
    STRAIGHT_ROAD,
    Agent,
    Road,
    Scene,
)
from aigc_synth.scenes.road import lane_offset, to_plane, vehicle_pose

ROAD, LINES = LAYOUT_CHANNELS.index("road"), LAYOUT_CHANNELS.index("lane_lines")
LEFT, RIGHT = Road("curve", curvature=1 / 300), Road("curve", curvature=-1 / 300)
MERGE = Road("merge", event_s=40.0, event_length=100.0)  # acceleration lane from -60 m to 40 m
DROP = Road("lane_drop", event_s=30.0)


def car(lane: int, s: float, d: float = 0.0, kind: str = "car") -> Agent:
    length, width = (4.5, 1.8) if kind == "car" else (12.0, 2.5)
    return Agent(lane, s, d, 20.0, length, width, kind)


def scene(road: Road, *agents: Agent, num_lanes: int = 3, ego_lane: int = 1) -> Scene:
    return Scene(0, 7, "moderate", num_lanes, 33.33, ego_lane, 20.0, agents, "test", road)


def ground_row(depth: float, size: int) -> int:
    """The image row whose centre sees the road ``depth`` metres ahead."""
    return int(HORIZON * size + FOCAL * size * CAMERA_HEIGHT / depth)


def row_depth(row: int, size: int) -> float:
    return FOCAL * size * CAMERA_HEIGHT / (row + 0.5 - HORIZON * size)


# -- straight roads: unchanged -------------------------------------------------------------------------
def straight_scenes() -> list[Scene]:
    a = [car(1, 10.0), car(1, 25.0, 0.3, "truck"), car(0, 8.0, -0.2), car(2, 40.0), car(2, 3.0),
         Agent(0, 60.0, 0.0, 20, 16.0, 2.5, "truck")]
    b = [car(0, 15.0), car(1, 30.0, -0.5, "truck"), car(1, 90.0)]
    return [Scene(0, 7, "moderate", 3, 33.33, 1, 20.0, a, "test"), Scene(1, 7, "light", 2, 27.78, 0, 20.0, b, "test")]


def digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


# computed with the renderer and the layout raster as they were before road kinds were drawn
PINNED_RENDERS = [
    ((0, "clear", "day", 0, 64), "5c8c14653c10ac3a", "cd0d1741a05be7e3"),
    ((0, "rain", "night", 3, 64), "3f7d44981607a5d1", "cd0d1741a05be7e3"),
    ((0, "snow", "dusk", 11, 128), "31287cc7445a6e90", "d4aff6d463767edc"),
    ((1, "fog", "day", 5, 32), "3d2b61f8b527ccd7", "03c2def671257651"),
    ((1, "overcast", "dusk", 2, 128), "86930a895e997f5f", "b19dfc596fac8303"),
]
PINNED_LAYOUTS = [((0, 32), "5c9cc700b9b5dca6", "373f9ca5453cf522"), ((0, 64), "462bd273d9d983b7", "cd0d1741a05be7e3"),
                  ((1, 32), "31d619676b7a0fe2", "03c2def671257651"), ((1, 64), "3c27f4e385830129", "3b33f0712192eb1b")]


def test_straight_renders_layouts_and_boxes_are_unchanged():
    scenes = straight_scenes()
    for (i, weather, time, seed, size), image, boxes in PINNED_RENDERS:
        r = render_scene(scenes[i], weather, time, seed, size)
        assert (digest(r.image), digest(r.boxes, r.visible, r.agents)) == (image, boxes), (i, weather, time, seed, size)
    for (i, size), layout, boxes in PINNED_LAYOUTS:
        b = scene_boxes(scenes[i], size)
        assert (digest(scene_layout(scenes[i], size)), digest(b.boxes, b.visible, b.agents)) == (layout, boxes), (i, size)


def test_the_general_road_geometry_reproduces_a_straight_road():
    """road_raster (curves, ramps, drops) on a straight road draws what the closed form draws (it
    integrates over sub-rows where the closed form samples each row's centre: edge pixels differ a bit)."""
    size = 64
    empty = scene(STRAIGHT_ROAD)
    legacy = scene_layout(empty, size)
    ground = np.clip(np.arange(size)[:, None] + 1 - HORIZON * size, 0, 1)
    general = road_raster(empty, size)
    lines = np.clip(sum(m.coverage for m in general.marks), 0, 1)
    assert np.abs(general.surface * ground - legacy[ROAD]).mean() < 0.005
    assert np.abs(lines - legacy[LINES]).mean() < 0.01


# -- every kind: boxes at the projected poses ------------------------------------------------------------
def expected_faces(sc: Scene, size: int) -> dict[int, tuple[float, tuple[float, ...]]]:
    """Independent of the renderer: each agent's rear face from its plane pose through the pinhole
    camera on the ego's lane centre at s = 0, as {agent: (depth of the face centre, trapezoid)} with the
    trapezoid (x_left, x_right, top_left, top_right, bottom_left, bottom_right) in pixels."""
    road, f, hz = sc.road, FOCAL * size, HORIZON * size
    x0, y0, h0 = to_plane(road, 0.0, lane_offset(road, sc.num_lanes, sc.ego_lane, 0.0))
    out = {}
    for i, a in enumerate(sc.agents):
        x, y, heading = vehicle_pose(road, sc.num_lanes, a.lane, a.s, a.d)
        pts = []
        for side in (1.0, 0.0, -1.0):  # left corner, centre, right corner of the rear face
            px = x - a.length / 2 * math.cos(heading) - side * a.width / 2 * math.sin(heading)
            py = y - a.length / 2 * math.sin(heading) + side * a.width / 2 * math.cos(heading)
            pts.append((math.cos(h0) * (px - x0) + math.sin(h0) * (py - y0), -math.sin(h0) * (px - x0) + math.cos(h0) * (py - y0)))
        if min(pts[0][0], pts[2][0]) <= NEAR_CLIP:
            continue
        (zl, xl), (zr, xr) = pts[0], pts[2]
        top, bottom = CAMERA_HEIGHT - VEHICLE_HEIGHT[a.kind], CAMERA_HEIGHT
        out[i] = (pts[1][0], (size / 2 - f * xl / zl, size / 2 - f * xr / zr, hz + f * top / zl, hz + f * top / zr,
                              hz + f * bottom / zl, hz + f * bottom / zr))
    return out


def tight_box(q: tuple[float, ...]) -> tuple[float, float, float, float]:
    return q[0], min(q[2], q[3]), q[1], max(q[4], q[5])


def check_boxes_at_poses(sc: Scene, size: int) -> int:
    """Every box is its expected face's box (clipped); every face wholly in view and not overlapped by a
    nearer one has a box with visible 1. Returns the number of boxes."""
    r = render_scene(sc, "clear", "day", 0, size)
    faces = expected_faces(sc, size)
    agents = r.agents.tolist()
    for i, box in zip(agents, r.boxes):
        assert i in faces, f"agent {i} has a box but its face is behind the near clip"
        x0, y0, x1, y1 = tight_box(faces[i][1])
        if x0 >= 0 and y0 >= 0 and x1 <= size and y1 <= size:  # wholly inside: the tight box itself
            np.testing.assert_allclose(box, (x0, y0, x1, y1), atol=1e-3)
        else:  # cut by the border: the same columns, rows inside the unclipped ones
            assert box[0] == pytest.approx(max(x0, 0), abs=1e-3) and box[2] == pytest.approx(min(x1, size), abs=1e-3)
            assert max(y0, 0) - 1e-3 <= box[1] <= box[3] <= min(y1, size) + 1e-3
    for i, (depth, q) in faces.items():
        x0, y0, x1, y1 = tight_box(q)
        overlapped = any(d < depth and b[0] < x1 and b[2] > x0 and b[1] < y1 and b[3] > y0
                         for d, b in ((d, tight_box(p)) for j, (d, p) in faces.items() if j != i))
        if x0 >= 0 and y0 >= 0 and x1 <= size and y1 <= size and not overlapped:
            assert i in agents and r.visible[agents.index(i)] == pytest.approx(1.0, abs=1e-5), i
    return len(r.boxes)


KIND_SCENES = {
    "left curve": scene(LEFT, car(1, 15.0), car(1, 30.0), car(0, 60.0), car(2, 90.0, kind="truck"), car(1, 120.0), car(2, 8.0)),
    "right curve": scene(RIGHT, car(1, 30.0), car(0, 60.0), car(2, 90.0, kind="truck"), car(1, 120.0), car(0, 9.0, 0.4)),
    "merge": scene(MERGE, car(RAMP_LANE, 20.0), car(RAMP_LANE, -50.0), car(0, 50.0), car(1, 25.0), ego_lane=0),
    "merge ahead": scene(Road("merge", event_s=140.0, event_length=100.0), car(RAMP_LANE, 30.0), car(RAMP_LANE, 60.0), car(0, 50.0)),
    "lane drop": scene(DROP, car(2, 20.0), car(1, 45.0), car(0, 25.0, kind="truck"), car(1, 10.0)),
}


@pytest.mark.parametrize("name", list(KIND_SCENES))
def test_boxes_sit_at_the_projected_vehicle_poses(name):
    for size in (64, 128):
        assert check_boxes_at_poses(KIND_SCENES[name], size) >= 2


def inside(q: tuple[float, ...], x: np.ndarray, y: np.ndarray) -> np.ndarray:
    t = q[2] + (q[3] - q[2]) * (x - q[0]) / (q[1] - q[0])
    b = q[4] + (q[5] - q[4]) * (x - q[0]) / (q[1] - q[0])
    return (x > q[0]) & (x < q[1]) & (y > t) & (y < b)


def test_a_turned_face_is_a_trapezoid_and_visibility_is_exact():
    size = 256
    # far along a left curve and on the ramp a car is turned to the left: its left corner is the nearer one
    for sc, margin in ((scene(LEFT, car(1, 120.0)), 0.0), (scene(Road("merge", event_s=140.0, event_length=100.0),
                                                                  car(RAMP_LANE, 20.0), ego_lane=0), 0.15)):
        q = expected_faces(sc, size)[0][1]
        assert q[4] - q[2] > q[5] - q[3] + margin  # the face's left side is taller than its right
        painted = scene_layout(sc, size)[LAYOUT_CHANNELS.index("car")]
        area = (q[1] - q[0]) * ((q[4] - q[2]) + (q[5] - q[3])) / 2
        assert painted.sum() == pytest.approx(area, rel=1e-4)  # exact coverage of the trapezoid
        left, right = painted[:, int(q[0]) + 1].sum(), painted[:, math.ceil(q[1]) - 2].sum()
        assert left > right + margin / 2
        assert render_scene(sc, "clear", "day", 0, size).visible[0] == pytest.approx(1.0)
    # partly hidden turned faces (a curve, the ramp): visible against a 1/16-pixel point count of the
    # independent trapezoids, painted in the order of their centres' depth
    for sc in (scene(LEFT, car(1, 30.0), car(0, 60.0), car(2, 20.0), car(2, 35.0, 0.8), car(1, 45.0, -0.6, "truck")),
               scene(Road("merge", event_s=140.0, event_length=100.0), car(RAMP_LANE, 35.0), car(0, 12.0, -0.5), ego_lane=0),
               scene(RIGHT, car(1, 12.0, 0.5), car(2, 25.0), car(0, 18.0))):
        size = 64
        faces = expected_faces(sc, size)
        g = (np.arange(size * 16) + 0.5) / 16
        x, y = np.meshgrid(g, g)
        b = scene_boxes(sc, size)
        assert any(0 < v < 0.9 for v in b.visible)  # something is partly hidden
        for i, vis in zip(b.agents.tolist(), b.visible):
            depth, q = faces[i]
            hidden = np.zeros(x.shape, bool)
            for d, p in faces.values():
                if d < depth:
                    hidden |= inside(p, x, y)
            area = (q[1] - q[0]) * ((q[4] - q[2]) + (q[5] - q[3])) / 2
            assert vis == pytest.approx((inside(q, x, y) & ~hidden).sum() / 256 / area, abs=0.01)


# -- the road of each kind ------------------------------------------------------------------------------
def test_a_curve_bends_toward_its_side_as_its_circle_says():
    size = 128
    f, cx = FOCAL * size, size / 2
    mids, checked = {}, 0
    for road in (LEFT, STRAIGHT_ROAD, RIGHT):
        road_channel = scene_layout(scene(road), size)[ROAD]
        mids[road.curvature] = []
        for depth in (20.0, 40.0, 80.0):
            row = ground_row(depth, size)
            xs = np.arange(size) + 0.5
            w = road_channel[row]
            mid = float((w * xs).sum() / w.sum())  # centre of the asphalt in that row
            if road.curvature:  # the asphalt's edges at this depth on the circles of radius R - lateral
                z, R = row_depth(row, size), 1 / road.curvature
                edge = [R - math.copysign(math.sqrt((R - lat) ** 2 - z * z), R) - 1.5 * LANE_WIDTH
                        for lat in (-SHOULDER, 3 * LANE_WIDTH + SHOULDER)]
                lo, hi = sorted(cx - f * e / z for e in edge)
                if lo > 0 and hi < size:  # the whole asphalt in view
                    assert mid == pytest.approx((lo + hi) / 2, abs=0.6)
                    checked += 1
            mids[road.curvature].append(mid)
    assert checked >= 4
    left, straight, right = mids[LEFT.curvature], mids[0.0], mids[RIGHT.curvature]
    assert all(a < b - 2 < c - 4 for a, b, c in zip(left, straight, right))  # positive curvature bends left
    assert left[2] - straight[2] < left[0] - straight[0]  # and more so further away
    # the markings bend too: the render's lane lines differ from the straight road's
    assert not np.array_equal(render_scene(scene(LEFT), "clear", "day", 0).image,
                              render_scene(scene(STRAIGHT_ROAD), "clear", "day", 0).image)


def test_a_merge_has_road_right_of_lane_0_near_the_ego_and_not_past_event_s():
    size = 128
    f, cx = FOCAL * size, size / 2
    sc, plain = scene(MERGE, ego_lane=0), scene(STRAIGHT_ROAD, ego_lane=0)
    merge_road, plain_road = scene_layout(sc, size)[ROAD], scene_layout(plain, size)[ROAD]
    # the acceleration lane's centre is one lane right of the camera (ego on lane 0)
    for depth in (8.0, 15.0, 30.0):
        row = ground_row(depth, size)
        col = int(cx + f * LANE_WIDTH / row_depth(row, size))
        assert merge_road[row, col] > 0.99 and plain_road[row, col] < 0.01
    hz = HORIZON * size
    for row in range(int(hz) + 1, size):  # rows wholly past the end and its taper: lane 0's edge is the road's
        near = f * CAMERA_HEIGHT / (row + 1 - hz)  # depth at the row's lower (near) edge
        if near > MERGE.event_s + TAPER_LENGTH:
            col = math.ceil(cx + f * (0.5 * LANE_WIDTH + SHOULDER) / near) + 1
            assert merge_road[row, col:].max() < 0.01, row
    geometry, straight = road_raster(sc, size), road_raster(plain, size)
    far = slice(int(HORIZON * size) + 1, ground_row(MERGE.event_s + TAPER_LENGTH, size) - 1)
    np.testing.assert_allclose(geometry.surface[far], straight.surface[far], atol=1e-5)
    # three dashed lines: lane 1 | 2 and lane 0 | 1 run to the horizon, acceleration lane | lane 0 stops at event_s
    drawn = [np.nonzero(m.coverage.sum(axis=1) > 1e-3)[0] for m in geometry.marks if m.dash is not None]
    assert len(drawn) == 3 and all(rows.max() > ground_row(12.0, size) for rows in drawn)  # all start near the ego
    assert sorted(rows.min() <= int(HORIZON * size) + 1 for rows in drawn) == [False, True, True]
    assert max(rows.min() for rows in drawn) >= ground_row(MERGE.event_s, size) - 1
    # the ramp comes in from the right before the acceleration lane: a merge further ahead shows it there
    ahead = scene(Road("merge", event_s=140.0, event_length=100.0))
    ramp = road_raster(ahead, size).surface - road_raster(scene(STRAIGHT_ROAD), size).surface
    assert np.abs(ramp[:, : size // 2]).max() < 0.05 and ramp[:, size // 2:].max() > 0.99


def test_a_lane_drop_ends_the_leftmost_lane_at_event_s():
    size = 128
    f, cx = FOCAL * size, size / 2
    drop_road = scene_layout(scene(DROP), size)[ROAD]
    for depth, on_road in ((10.0, True), (25.0, True), (DROP.event_s + TAPER_LENGTH + 10, False), (90.0, False)):
        row = ground_row(depth, size)
        col = int(cx - f * LANE_WIDTH / row_depth(row, size))  # the leftmost lane's centre (ego on lane 1)
        assert (drop_road[row, col] > 0.99) if on_road else (drop_road[row, col] < 0.01), depth
    # past the taper the road is the 2-lane road; its right edge never moves
    two = road_raster(scene(STRAIGHT_ROAD, num_lanes=2, ego_lane=1), size)
    far = slice(int(HORIZON * size) + 1, ground_row(DROP.event_s + TAPER_LENGTH, size) - 1)
    np.testing.assert_allclose(road_raster(scene(DROP), size).surface[far], two.surface[far], atol=1e-5)
    near = slice(ground_row(DROP.event_s, size) + 1, size)
    np.testing.assert_allclose(road_raster(scene(DROP), size).surface[near][:, size // 2:],
                               road_raster(scene(STRAIGHT_ROAD), size).surface[near][:, size // 2:], atol=1e-5)


# -- the layout raster agrees with the render ----------------------------------------------------------
@pytest.mark.parametrize("name", list(KIND_SCENES))
def test_layout_and_render_agree_on_every_kind(name):
    sc, size = KIND_SCENES[name], 64
    r, b = render_scene(sc, "clear", "day", 4, size), scene_boxes(sc, size)
    assert np.array_equal(r.boxes, b.boxes) and np.array_equal(r.visible, b.visible) and np.array_equal(r.agents, b.agents)
    lay = scene_layout(sc, size)
    faces = lay[LAYOUT_CHANNELS.index("car")] + lay[LAYOUT_CHANNELS.index("truck")]
    in_box = np.zeros((size, size), bool)
    for x0, y0, x1, y1 in b.boxes:
        in_box[int(y0):math.ceil(y1), int(x0):math.ceil(x1)] = True
    assert faces[~in_box].max() < 0.05 and faces[in_box].sum() > 0
    # the render changes from the empty road exactly inside the boxes (clear day: no glow, haze or reflections)
    empty = render_scene(scene(sc.road, num_lanes=sc.num_lanes, ego_lane=sc.ego_lane), "clear", "day", 4, size)
    diff = np.abs(r.image.astype(int) - empty.image.astype(int)).sum(axis=2)
    assert diff[~in_box].max() == 0 and diff[in_box].mean() > 5
    # the layout's road is the render's asphalt: grey where the road channel is 1, green verge where it is 0
    grey = np.abs(r.image.astype(int) - r.image.mean(axis=2, keepdims=True)).max(axis=2) < 12
    plain = ~in_box & (lay[LINES] < 0.01) & (np.arange(size)[:, None] > HORIZON * size + 1)
    assert grey[plain & (lay[ROAD] > 0.99)].mean() > 0.97 and grey[plain & (lay[ROAD] < 0.01)].mean() < 0.03


def test_sumo_scenes_of_every_kind_render_with_boxes_at_their_poses():
    pytest.importorskip("libsumo")
    from aigc_synth.scenes.sumo import SimOptions
    from aigc_synth.scenes.sumo_dataset import simulate_scenes

    for kind in ROAD_KINDS[1:]:
        scenes = simulate_scenes("moderate", 3, 4, seed=1, road=kind, options=SimOptions(scenes_per_run=4))
        total, ramp = 0, []
        for sc in scenes:
            total += check_boxes_at_poses(sc, 64)
            b = scene_boxes(sc, 64)
            assert np.array_equal(b.boxes, render_scene(sc, "fog", "night", 1, 64).boxes)
            ramp += [box for i, box in zip(b.agents.tolist(), b.boxes) if sc.agents[i].lane == RAMP_LANE]
        assert total > 0, kind
        assert all((box[0] + box[2]) / 2 > 32 for box in ramp)  # ramp vehicles appear right of the image centre
