"""Rendering traffic scenes through the procedural camera: boxes, visibility, look, determinism.

Scenes are built by hand (or with the SUMO-free RandomSceneSampler); nothing is written to disk.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from aigc_synth.data.scene_render import (
    CAMERA_HEIGHT,
    FOCAL,
    HORIZON,
    NEAR_CLIP,
    contact_sheet,
    render_scene,
    render_scenes_from,
)
from aigc_synth.scenes.baselines import RandomSceneSampler
from aigc_synth.scenes.format import LANE_WIDTH, Agent, Scene, SceneError

WEATHERS = ("clear", "overcast", "rain", "fog", "snow")
TIMES = ("day", "dusk", "night")


def vehicle(lane: int, s: float, kind: str = "car", d: float = 0.0) -> Agent:
    length, width = (4.5, 1.8) if kind == "car" else (12.0, 2.5)
    return Agent(lane, s, d, 20.0, length, width, kind)


def scene(*agents: Agent, ego_lane: int = 1, num_lanes: int = 3) -> Scene:
    return Scene(0, 7, "moderate", num_lanes, 33.33, ego_lane, 20.0, agents, "test")


def only_box(r) -> np.ndarray:
    assert len(r.boxes) == 1, r.boxes
    return r.boxes[0]


def test_boxes_are_inside_the_image_and_consistent_for_sampled_scenes():
    sampler = RandomSceneSampler()
    for size in (32, 64):
        for k, (traffic, lanes) in enumerate([("light", 2), ("moderate", 3), ("heavy", 4)]):
            sc = sampler.sample(traffic, lanes, seed=k)
            r = render_scene(sc, "clear", "day", seed=k, size=size)
            assert r.image.shape == (size, size, 3) and r.image.dtype == np.uint8
            n = len(r.boxes)
            assert r.boxes.shape == (n, 4) and r.boxes.dtype == np.float32
            assert r.visible.shape == (n,) and r.visible.dtype == np.float32 and r.agents.shape == (n,)
            assert n > 0  # these seeds have vehicles ahead
            assert np.all(r.boxes >= 0) and np.all(r.boxes <= size)
            assert np.all(r.boxes[:, 0] <= r.boxes[:, 2]) and np.all(r.boxes[:, 1] <= r.boxes[:, 3])
            assert np.all(r.visible > 0) and np.all(r.visible <= 1)
            assert np.all(np.diff(r.agents) > 0)  # ascending agent indices, no duplicates
            for i, label in zip(r.agents, r.labels):
                a = sc.agents[i]
                assert label == a.kind and a.s - a.length / 2 > NEAR_CLIP


def test_a_car_straight_ahead_is_centred_and_shrinks_toward_the_horizon():
    near = only_box(render_scene(scene(vehicle(1, 20.0)), "clear", "day", 0))
    far = only_box(render_scene(scene(vehicle(1, 40.0)), "clear", "day", 0))
    assert abs((near[0] + near[2]) / 2 - 32) <= 1 and abs((far[0] + far[2]) / 2 - 32) <= 1
    assert far[2] - far[0] < near[2] - near[0] and far[3] - far[1] < near[3] - near[1]
    horizon = HORIZON * 64
    assert horizon < far[3] < near[3]  # bottoms stand on the road, the farther one nearer the horizon
    # the pinhole model exactly: bottom row = horizon + f * camera height / distance to the rear face
    assert near[3] == pytest.approx(horizon + FOCAL * 64 * CAMERA_HEIGHT / (20.0 - 2.25), abs=1e-3)


def test_lanes_to_the_left_appear_left_of_the_image_centre():
    left = only_box(render_scene(scene(vehicle(2, 20.0)), "clear", "day", 0))  # ego_lane + 1
    right = only_box(render_scene(scene(vehicle(0, 20.0)), "clear", "day", 0))  # ego_lane - 1
    assert (left[0] + left[2]) / 2 < 32 - 4 and (right[0] + right[2]) / 2 > 32 + 4
    # a lateral offset d > 0 moves the car left too
    shifted = only_box(render_scene(scene(vehicle(1, 20.0, d=1.0)), "clear", "day", 0))
    assert (shifted[0] + shifted[2]) / 2 < 32 - 1


def test_a_truck_is_taller_than_a_car_at_the_same_distance():
    # same rear-face distance: the truck's centre is further ahead by the length difference
    car = only_box(render_scene(scene(vehicle(1, 30.0)), "clear", "day", 0))
    truck = only_box(render_scene(scene(vehicle(1, 30.0 + (12.0 - 4.5) / 2, "truck")), "clear", "day", 0))
    assert truck[3] - truck[1] > 2 * (car[3] - car[1])
    assert truck[3] == pytest.approx(car[3])
    assert render_scene(scene(vehicle(1, 30.0, "truck")), "clear", "day", 0).labels == ["truck"]


@pytest.mark.parametrize("lane, s", [(1, -10.0), (1, 3.0), (2, 0.0), (0, 4.0)])
def test_vehicles_behind_or_beside_the_ego_get_no_box(lane, s):
    r = render_scene(scene(vehicle(lane, s)), "clear", "day", 0)
    assert len(r.boxes) == 0 and len(r.agents) == 0 and r.labels == []


def test_nearer_vehicles_hide_farther_ones_and_the_border_clips():
    sc = scene(vehicle(1, 10.0), vehicle(1, 30.0))  # agents sorted by (lane, s): 0 = near, 1 = far
    r = render_scene(sc, "clear", "day", 0)
    vis = dict(zip(r.agents.tolist(), r.visible.tolist()))
    assert vis[0] == 1.0 and vis.get(1, 0.0) < 0.5
    # a car one lane over and behind the near one is only partly hidden
    r = render_scene(scene(vehicle(1, 10.0), vehicle(2, 25.0)), "clear", "day", 0)
    vis = dict(zip(r.agents.tolist(), r.visible.tolist()))
    assert 0 < vis[1] < 1 and vis[0] == 1.0
    # close in the next lane: the face runs off the left border; visible = the share inside the image
    r = render_scene(scene(vehicle(2, 7.0)), "clear", "day", 0)
    z, x, f = 7.0 - 2.25, LANE_WIDTH, FOCAL * 64
    x0, x1 = 32 - f * (x + 0.9) / z, 32 - f * (x - 0.9) / z
    assert x0 < 0 and r.boxes[0, 0] == 0
    assert r.visible[0] == pytest.approx(x1 / (x1 - x0), abs=1e-5)


@pytest.mark.parametrize("lane", [0, 1, 2])
def test_the_vehicle_is_drawn_exactly_where_its_box_is(lane):
    empty = render_scene(scene(), "clear", "day", 5).image.astype(int)
    r = render_scene(scene(vehicle(lane, 25.0)), "clear", "day", 5)
    x0, y0, x1, y1 = only_box(r)
    diff = np.abs(r.image.astype(int) - empty).sum(axis=2)
    inside = np.zeros(diff.shape, bool)
    inside[math.floor(y0):math.ceil(y1), math.floor(x0):math.ceil(x1)] = True
    assert diff[inside].mean() > 20
    assert diff[~inside].max() == 0  # on a clear day nothing else changes (no glow, haze, reflections)


def test_a_car_in_the_left_lane_stands_inside_that_lanes_markings():
    size, horizon, f = 128, HORIZON * 128, FOCAL * 128
    r = render_scene(scene(vehicle(2, 20.0)), "clear", "day", 0, size=size)  # leftmost lane: yellow line on its left
    x0, _, x1, y1 = only_box(r)
    # back-project to metres left of the camera axis: the car's centre from its box, the line from the pixels
    car_left = (size / 2 - (x0 + x1) / 2) * (20.0 - 2.25) / f
    assert car_left == pytest.approx(LANE_WIDTH, abs=0.01)
    for y in range(math.ceil(y1) + 1, math.ceil(y1) + 6):  # road rows just in front of the car
        row = r.image[y].astype(int)
        yellow = row[:, 0] + row[:, 1] - 2 * row[:, 2]  # yellow paint stands out from grey asphalt and green verge
        x_line = int(np.argmax(yellow)) + 0.5
        line_left = (size / 2 - x_line) * CAMERA_HEIGHT / (y + 0.5 - horizon)
        assert yellow.max() > 150 and line_left == pytest.approx(1.5 * LANE_WIDTH, abs=0.3)  # the road's left edge


def test_every_weather_and_time_renders_and_fog_hides_far_vehicles():
    sc = RandomSceneSampler().sample("moderate", 3, seed=4)
    for w in WEATHERS:
        for t in TIMES:
            r = render_scene(sc, w, t, 1, size=32)
            assert r.image.shape == (32, 32, 3) and r.weather == w and r.time_of_day == t

    def contrast(weather: str, time: str = "day") -> float:
        r = render_scene(scene(vehicle(1, 60.0)), weather, time, 2, size=128)
        empty = render_scene(scene(), weather, time, 2, size=128).image.astype(float)
        x0, y0, x1, y1 = (int(round(c)) for c in only_box(r))
        return float(np.abs(r.image.astype(float) - empty)[y0:y1, x0:x1].mean())

    assert contrast("fog") < 0.5 * contrast("clear")
    night = render_scene(scene(vehicle(1, 30.0)), "clear", "night", 2, size=64)
    x0, y0, x1, y1 = (int(round(c)) for c in only_box(night))
    red = night.image[y0:y1 + 1, x0:x1 + 1].astype(int)
    assert (red[..., 0] - red[..., 1]).max() > 60 and night.image.mean() < 60  # tail lights glow in the dark


def test_render_is_deterministic_and_the_seed_is_cosmetic():
    sc = RandomSceneSampler().sample("heavy", 3, seed=9)
    a = render_scene(sc, "rain", "dusk", 3)
    b = render_scene(sc, "rain", "dusk", 3)
    assert a.image.tobytes() == b.image.tobytes() and a.boxes.tobytes() == b.boxes.tobytes()
    c = render_scene(sc, "rain", "dusk", 4)
    assert not np.array_equal(a.image, c.image)
    assert np.array_equal(a.boxes, c.boxes) and np.array_equal(a.visible, c.visible) and np.array_equal(a.agents, c.agents)
    d = render_scene(sc, "clear", "night", 3)  # weather and time never move boxes either
    assert np.array_equal(a.boxes, d.boxes)
    batch = render_scenes_from([sc, sc], ["rain", "clear"], ["dusk", "night"], [3, 3])
    assert batch[0].image.tobytes() == a.image.tobytes() and batch[1].image.tobytes() == d.image.tobytes()
    same = render_scenes_from([sc, sc], "rain", "dusk", 3)
    assert same[1].image.tobytes() == a.image.tobytes()
    with pytest.raises(ValueError, match="2 scenes but 1 seeds"):
        render_scenes_from([sc, sc], "rain", "dusk", [3])


def test_bad_arguments_are_refused():
    sc = scene(vehicle(1, 20.0))
    with pytest.raises(SceneError, match="weather"):
        render_scene(sc, "hail", "day", 0)
    with pytest.raises(SceneError, match="time_of_day"):
        render_scene(sc, "clear", "noon", 0)
    with pytest.raises(ValueError, match="size"):
        render_scene(sc, "clear", "day", 0, size=8)
    with pytest.raises(SceneError, match="ego lane"):
        render_scene(scene(ego_lane=3), "clear", "day", 0)


def test_contact_sheet_tiles_images_with_boxes():
    rs = [render_scene(scene(vehicle(1, 15.0 + 10 * k)), "clear", "day", k, size=32) for k in range(3)]
    before = [r.image.copy() for r in rs]
    sheet = contact_sheet(rs, columns=2, scale=2, gap=2)
    assert sheet.shape == (2 * 64 + 3 * 2, 2 * 64 + 3 * 2, 3) and sheet.dtype == np.uint8
    tile = sheet[2:66, 2:66].astype(int)
    plain = np.repeat(np.repeat(rs[0].image, 2, 0), 2, 1).astype(int)
    x0, y0 = (int(math.floor(c * 2)) for c in rs[0].boxes[0, :2])
    assert tuple(tile[y0, x0]) == (0, 255, 0) and not np.array_equal(tile, plain)
    assert all(np.array_equal(r.image, im) for r, im in zip(rs, before))  # boxes go on a copy
