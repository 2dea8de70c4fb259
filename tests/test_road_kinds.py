"""Road kinds (issue 29): the v2 scene contract, road geometry, SUMO ground truth on curve / merge /
lane-drop tracks, and the bird's-eye view of each kind.

The SUMO tests skip without ``aigc_synth[sim]`` (libsumo); the contract and geometry tests always run.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from aigc_synth.scenes.format import (
    CURVE_RADIUS_RANGE,
    LANE_WIDTH,
    RAMP_LANE,
    ROAD_KINDS,
    STRAIGHT_ROAD,
    WINDOW_AHEAD,
    WINDOW_BEHIND,
    Agent,
    Road,
    Scene,
    SceneError,
    lane_exists,
    scene_arrow_schema,
    scenes_to_table,
    table_to_scenes,
    validate_scene,
)
from aigc_synth.scenes.road import lane_offset, to_plane, vehicle_pose


def car(lane: int, s: float) -> Agent:
    return Agent(lane, s, 0.0, 20.0, 5.0, 1.8, "car")


def scene(road: Road, *agents: Agent, num_lanes: int = 3, ego_lane: int = 1) -> Scene:
    return Scene(0, 7, "moderate", num_lanes, 33.33, ego_lane, 20.0, agents, "test", road)


MERGE = Road("merge", event_s=80.0, event_length=200.0)
DROP = Road("lane_drop", event_s=40.0)
CURVE = Road("curve", curvature=1 / 500)


# -- contract ------------------------------------------------------------------------------------
def test_road_round_trips_and_v1_tables_read_as_straight():
    scenes = [scene(STRAIGHT_ROAD, car(0, 10.0)), scene(CURVE, car(2, -20.0)), scene(MERGE, car(RAMP_LANE, 30.0)),
              scene(DROP, car(2, 20.0))]
    table = scenes_to_table(scenes)
    assert table.schema.equals(scene_arrow_schema()) and table.schema.names[-1] == "road"
    assert table_to_scenes(table) == scenes
    v1 = table.drop_columns(["road"])  # a file written before road kinds
    assert [sc.road for sc in table_to_scenes(v1)] == [STRAIGHT_ROAD] * 4
    # a dict road (as from JSON) is the same scene
    assert Scene(**{**scenes[1].__dict__, "road": {"kind": "curve", "curvature": 0.002}}) == scenes[1]


@pytest.mark.parametrize("road, agents, num_lanes, message", [
    (Road("spiral"), (), 3, "unknown road kind"),
    (Road("curve"), (), 3, "non-zero"),
    (Road("straight", curvature=0.01), (), 3, "has no curvature"),
    (Road("merge", event_s=10.0), (), 3, "acceleration lane"),
    (Road("lane_drop", event_s=10.0), (), 1, "at least 2 lanes"),
    (STRAIGHT_ROAD, (car(RAMP_LANE, 10.0),), 3, "outside [0, 3)"),
    (MERGE, (car(RAMP_LANE, 85.0),), 3, "ends before it"),  # past the acceleration lane's end
    (DROP, (car(2, 45.0),), 3, "ends before it"),  # on the dropped lane after it ended
])
def test_invalid_roads_and_lanes_are_reported(road, agents, num_lanes, message):
    problems = validate_scene(scene(road, *agents, num_lanes=num_lanes, ego_lane=0))
    assert any(message in p for p in problems), problems


def test_ego_on_a_lane_that_ended_is_invalid():
    assert any("ego's lane" in p for p in validate_scene(scene(Road("lane_drop", event_s=-10.0), ego_lane=2)))
    assert validate_scene(scene(Road("lane_drop", event_s=10.0), car(2, 5.0), ego_lane=2)) == []


def test_lane_exists_by_kind():
    assert lane_exists(MERGE, 3, RAMP_LANE, 80.0) and not lane_exists(MERGE, 3, RAMP_LANE, 80.5)
    assert not lane_exists(STRAIGHT_ROAD, 3, RAMP_LANE, 0.0)
    assert lane_exists(DROP, 3, 2, 40.0) and not lane_exists(DROP, 3, 2, 41.0) and lane_exists(DROP, 3, 1, 1e3)


# -- geometry --------------------------------------------------------------------------------------
def test_curve_geometry_is_a_circle_of_the_road_curvature():
    R = 500.0
    for s in (-50.0, 30.0, 150.0):
        x, y, heading = to_plane(CURVE, s, 0.0)
        assert math.hypot(x, y - R) == pytest.approx(R)  # the reference line lies on the circle
        assert heading == pytest.approx(s / R)
        # a lane k metres to the left lies on the concentric circle of radius R - k
        x, y, _ = to_plane(CURVE, s, 2 * LANE_WIDTH)
        assert math.hypot(x, y - R) == pytest.approx(R - 2 * LANE_WIDTH)
    right = Road("curve", curvature=-1 / R)
    assert to_plane(right, 100.0, 0.0)[1] < 0 < to_plane(CURVE, 100.0, 0.0)[1]  # bends the other way
    assert to_plane(STRAIGHT_ROAD, 42.0, 1.5) == (42.0, 1.5, 0.0)


def test_ramp_joins_the_road_at_the_ramp_angle():
    start = MERGE.event_s - MERGE.event_length  # -120: the acceleration lane begins
    assert lane_offset(MERGE, 3, RAMP_LANE, start + 10) == pytest.approx(-LANE_WIDTH / 2)
    assert lane_offset(MERGE, 3, RAMP_LANE, start - 100) == pytest.approx(-LANE_WIDTH / 2 - 100 * math.tan(0.1))
    assert vehicle_pose(MERGE, 3, RAMP_LANE, start - 20, 0.0)[2] == pytest.approx(0.1)  # heading towards the road
    assert vehicle_pose(MERGE, 3, 1, 0.0, 0.0) == (0.0, 1.5 * LANE_WIDTH, 0.0)


def test_bev_draws_each_kind():
    from aigc_synth.scenes.bev import bev_grid, render_bev

    straight = render_bev(scene(STRAIGHT_ROAD, car(0, 10.0)))
    curve = render_bev(scene(CURVE, car(0, 10.0)))
    assert curve.shape[1] <= straight.shape[1] + 1 and curve.shape[0] > straight.shape[0]  # the bend needs height
    merge = render_bev(scene(MERGE, car(RAMP_LANE, -130.0)))
    assert merge.shape[0] > straight.shape[0]  # the ramp comes in from below the road
    drop = render_bev(scene(Road("lane_drop", event_s=0.0)), max_lanes=3)
    # the top lane's centre row (12 px of caption, 1 m above the road, half a lane, at 2 px/m): grey road
    # before the drop point, background after it
    top_lane_y = 12 + int(round((1.0 + 0.5 * LANE_WIDTH) * 2))
    before, after = drop[top_lane_y, 40], drop[top_lane_y, drop.shape[1] - 40]
    assert tuple(before) == (90, 90, 90) and tuple(after) == (245, 245, 245)
    grid = bev_grid([[scene(STRAIGHT_ROAD)], [scene(CURVE)]], columns=1)
    assert grid.shape[0] == straight.shape[0] + curve.shape[0] + 4


# -- SUMO ground truth -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def road_scenes():
    pytest.importorskip("libsumo")
    from aigc_synth.scenes.sumo import SimOptions
    from aigc_synth.scenes.sumo_dataset import simulate_scenes

    opts = SimOptions(scenes_per_run=6)
    return {road: simulate_scenes("moderate", 3, 6, seed=3, road=road, options=opts) for road in ROAD_KINDS[1:]}


def test_sumo_scenes_of_every_kind_are_valid_and_carry_their_road(road_scenes):
    for road, scenes in road_scenes.items():
        assert len(scenes) == 6
        for sc in scenes:
            assert sc.road.kind == road and validate_scene(sc) == [], (road, validate_scene(sc))
            assert all(-WINDOW_BEHIND <= a.s <= WINDOW_AHEAD for a in sc.agents)
    radii = {1 / abs(sc.road.curvature) for sc in road_scenes["curve"]}
    assert all(CURVE_RADIUS_RANGE[0] - 1 <= r <= CURVE_RADIUS_RANGE[1] + 1 for r in radii)
    for sc in road_scenes["merge"] + road_scenes["lane_drop"]:
        assert -30.0 <= sc.road.event_s  # the event is near the ego, in or just behind the window
    # ramp vehicles appear (on the ramp or its acceleration lane) and sit right of lane 0
    assert any(a.lane == RAMP_LANE for sc in road_scenes["merge"] for a in sc.agents)


def test_sumo_road_scenes_are_deterministic_and_straight_cells_unchanged():
    pytest.importorskip("libsumo")
    from aigc_synth.scenes.sumo import SimOptions
    from aigc_synth.scenes.sumo_dataset import cell_seed, simulate_scenes

    opts = SimOptions(scenes_per_run=3)
    a = simulate_scenes("light", 2, 3, seed=11, road="merge", options=opts)
    assert a == simulate_scenes("light", 2, 3, seed=11, road="merge", options=opts)
    # straight cells keep the seed key they had before road kinds (datasets built earlier stay valid)
    assert cell_seed(0, "light", 3) == int(np.random.SeedSequence([0, 0, 3]).generate_state(1)[0])
    assert cell_seed(0, "light", 3, "curve") != cell_seed(0, "light", 3)
    with pytest.raises(SceneError, match="unknown road kind"):
        simulate_scenes("light", 2, 3, seed=0, road="roundabout")
    with pytest.raises(SceneError, match="at least 2 lanes"):
        simulate_scenes("light", 1, 3, seed=0, road="lane_drop")


def test_a_lane_drop_run_warms_up_for_a_time_drawn_from_its_range(monkeypatch):
    """A heavy lane drop jams from the standing start and then cycles (docs/experiments.md), so its
    runs start their snapshots at a time drawn per run; the other kinds keep the fixed warm-up."""
    pytest.importorskip("libsumo")
    from aigc_synth.scenes import sumo_roads
    from aigc_synth.scenes.sumo import SimOptions

    used = []
    monkeypatch.setattr(sumo_roads, "collect_snapshots", lambda args, routes, opts, *_: used.append(opts.warmup_s) or [])
    opts = SimOptions(lane_drop_warmup_s=(300.0, 950.0))
    for run in range(4):
        sumo_roads.simulate_road_run("lane_drop", "heavy", 3, 5, run, opts)
    sumo_roads.simulate_road_run("lane_drop", "heavy", 3, 5, 0, opts)
    sumo_roads.simulate_road_run("curve", "heavy", 3, 5, 0, opts)
    sumo_roads.simulate_road_run("merge", "heavy", 3, 5, 0, opts)
    assert all(300.0 <= w <= 950.0 for w in used[:4]) and len(set(used[:4])) == 4
    assert used[4] == used[0]  # a pure function of (seed, run)
    assert used[5:] == [opts.warmup_s, opts.warmup_s] == [120.0, 120.0]


def test_dataset_over_road_kinds_is_balanced():
    pytest.importorskip("libsumo")
    from aigc_synth.scenes.sumo import SimOptions
    from aigc_synth.scenes.sumo_dataset import sumo_scene_dataset

    scenes = sumo_scene_dataset(8, seed=0, traffic_levels=("light",), lane_counts=(2, 3), road_kinds=("straight", "lane_drop"),
                                options=SimOptions(scenes_per_run=2))
    assert [sc.road.kind for sc in scenes] == ["straight"] * 4 + ["lane_drop"] * 4
    assert [sc.num_lanes for sc in scenes] == [2, 2, 3, 3] * 2


def test_renderer_and_layout_raster_draw_a_curve_not_a_straight_road():
    """The camera renderer and the layout raster draw every kind's geometry (tests/test_render_roads.py),
    so a curve is never rendered as a straight road silently (the exporters and the replay build every
    kind: tests/test_road_exports.py; the annotation export, which draws straight lane lines only,
    refuses the other kinds: tests/test_annotation_layout.py)."""
    from aigc_synth.data.layout import scene_layout
    from aigc_synth.data.scene_render import render_scene

    curved, straight = scene(CURVE, car(0, 10.0)), scene(STRAIGHT_ROAD, car(0, 10.0))
    r, s = render_scene(curved, "clear", "day", seed=0), render_scene(straight, "clear", "day", seed=0)
    assert len(r.boxes) == 1 and not np.array_equal(r.image, s.image) and not np.array_equal(r.boxes, s.boxes)
    assert not np.array_equal(scene_layout(curved), scene_layout(straight))
