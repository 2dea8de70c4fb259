"""The gymnasium environment on every road kind: highway-env builds the scene's road and every vehicle
starts where the contract puts it (issue 29).

The reference is :func:`aigc_synth.scenes.road.vehicle_pose` (the contract's geometry, also behind the
bird's-eye view and the exports) mapped to the frame the env has always used on a straight road: the
ego's centre at ``(ego_x, its lane's y)``, highway-env's y to the driver's right, highway-env lane
``i``'s centre at ``i`` lane widths. Needs highway-env (skipped without it); the SUMO scenes also need
libsumo.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

pytest.importorskip("highway_env")

import gymnasium
from highway_env.road.lane import CircularLane, StraightLane

from aigc_synth.scenes import gym_env
from aigc_synth.scenes.format import (
    LANE_WIDTH,
    RAMP_ANGLE,
    RAMP_LANE,
    WINDOW_AHEAD,
    WINDOW_BEHIND,
    Agent,
    Road,
    Scene,
)
from aigc_synth.scenes.road import lane_heading, lane_offset, vehicle_pose

ENV_ID = "aigc_synth/scene-v0"
IDLE = 1  # DiscreteMetaAction
# issue 29 accepts 0.5 m, but the env places vehicles exactly (a ramp without its 1 / cos stretch is 0.3 m off)
POSITION_TOL = 0.01  # m
HEADING_TOL = 1e-3  # rad


def car(lane: int, s: float, d: float = 0.0, speed: float = 25.0) -> Agent:
    return Agent(lane, s, d, speed, 4.5, 1.8, "car")


def scene_on(road: Road, agents: list[Agent], num_lanes: int = 3, ego_lane: int = 1, ego_speed: float = 25.0) -> Scene:
    return Scene(scene_id=3, seed=1, traffic="light", num_lanes=num_lanes, speed_limit=33.33, ego_lane=ego_lane,
                 ego_speed=ego_speed, agents=agents, model_id="test", road=road)


# One scene per kind, vehicles spread over the window's ends, every lane and lateral offsets.
HAND_SCENES = {
    "straight": scene_on(Road(), [car(0, -45.0), car(2, 140.0, 0.6), car(1, 30.0, -0.4)]),
    "curve_left": scene_on(Road("curve", curvature=1 / 300), [car(0, -48.0), car(2, 148.0, 0.6), car(0, 60.0, -0.5, 20.0),
                                                              car(1, -30.0)]),
    "curve_right": scene_on(Road("curve", curvature=-1 / 1500), [car(0, -45.0), car(3, 120.0, -0.7), car(1, 40.0)],
                            num_lanes=4, ego_lane=2),
    # the acceleration lane runs from s = -20 to 80; ramp vehicles before it, one drifting
    "merge": scene_on(Road("merge", event_s=80.0, event_length=100.0),
                      [car(RAMP_LANE, -45.0, 0.0, 20.0), car(RAMP_LANE, -30.0, 0.5, 20.0), car(RAMP_LANE, 10.0, 0.3, 22.0),
                       car(0, 40.0), car(2, -20.0)]),
    "lane_drop": scene_on(Road("lane_drop", event_s=60.0), [car(2, 20.0), car(2, -40.0, -0.3), car(1, 35.0), car(0, -20.0)]),
}


def env_pose(scene: Scene, ego_x: float, lane: int, s: float, d: float) -> tuple[float, float, float]:
    """vehicle_pose in highway-env's frame: x + ego_x, y mirrored about the right edge of lane 0 (at
    (num_lanes - 0.5) lane widths, as on the straight road), heading mirrored too."""
    x, y, heading = vehicle_pose(scene.road, scene.num_lanes, lane, s, d)
    return ego_x + x, (scene.num_lanes - 0.5) * LANE_WIDTH - y, -heading


def make(scene: Scene, **kwargs):
    env = gymnasium.make(ENV_ID, scene=scene, **kwargs)
    env.reset(seed=0)
    return env


def check_placement(env, scene: Scene) -> None:
    """Every vehicle at vehicle_pose of its (lane, s, d), heading along its lane, on a lane that lies there."""
    u = env.unwrapped
    x0 = u.config["ego_x"]
    placed = [(scene.ego_lane, 0.0, 0.0, scene.ego_speed, u.vehicle)]
    placed += [(a.lane, a.s, a.d, a.speed, v) for a, v in zip(scene.agents, u.agent_vehicles)]
    assert len(u.road.vehicles) == len(placed)
    for lane, s, d, speed, v in placed:
        x, y, heading = env_pose(scene, x0, lane, s, d)
        where = f"lane {lane} s={s} d={d} on {scene.road}"
        assert math.hypot(v.position[0] - x, v.position[1] - y) < POSITION_TOL, where
        assert abs(v.heading - heading) < HEADING_TOL, where
        # the road itself lies where the contract says: the vehicle's own highway-env lane passes
        # |d| from it (across the reference line, hence the ramp's cosine) and runs along its heading
        hw_lane = u.road.network.get_lane(v.lane_index)
        longitudinal, lateral = hw_lane.local_coordinates(v.position)
        assert lateral == pytest.approx(-d * math.cos(lane_heading(scene.road, lane, s)), abs=0.05), where
        assert -1e-6 <= longitudinal <= hw_lane.length + 1e-6, where
        assert abs(hw_lane.heading_at(longitudinal) - heading) < HEADING_TOL, where
        if d == 0:  # highway-env finds the same lane on its own
            assert u.road.network.get_closest_lane_index(v.position, v.heading) == v.lane_index, where
        assert v.speed == speed, where


def step_20(env) -> None:
    """The issue's acceptance: 20 steps without error, finite observations and rewards."""
    for _ in range(20):
        obs, reward, _, _, info = env.step(IDLE)
        assert np.isfinite(obs).all() and np.isfinite(reward)
        assert all(np.isfinite(r) for r in info["rewards"].values())


@pytest.mark.parametrize("name", list(HAND_SCENES))
def test_every_kind_places_vehicles_and_steps(name):
    scene = HAND_SCENES[name]
    env = make(scene)
    check_placement(env, scene)
    step_20(env)


def test_straight_road_is_unchanged():
    """One edge ("0", "1") of straight lanes from x = 0 to road_length, nothing else on the road."""
    u = make(HAND_SCENES["straight"]).unwrapped
    assert list(u.road.network.graph) == ["0"] and list(u.road.network.graph["0"]) == ["1"]
    for i, lane in enumerate(u.road.network.lanes_list()):
        assert isinstance(lane, StraightLane) and not lane.forbidden
        np.testing.assert_array_equal([lane.start, lane.end], [[0.0, i * LANE_WIDTH], [u.config["road_length"], i * LANE_WIDTH]])
    assert u.road.objects == []


@pytest.mark.parametrize("name", ["curve_left", "curve_right"])
def test_curve_is_concentric_arcs_then_a_tangent_lead_out(name):
    scene = HAND_SCENES[name]
    u = make(scene).unwrapped
    k, n = scene.road.curvature, scene.num_lanes
    built = u.scene_road
    for lane in range(n):
        pieces = built.pieces[lane]
        arcs = [u.road.network.get_lane(p.index) for p in pieces if isinstance(u.road.network.get_lane(p.index), CircularLane)]
        assert arcs and len(arcs) <= 3  # at most three quarter turns
        for arc in arcs:
            assert arc.radius == pytest.approx(1 / abs(k) - math.copysign(1, k) * lane_offset(scene.road, n, lane, 0.0))
            assert arc.clockwise == (k < 0)  # highway-env's y points right: a right bend turns clockwise
            assert abs(arc.end_phase - arc.start_phase) <= gym_env.ARC_PIECE_TURN + 1e-9
        # the whole window lies on the arc
        assert pieces[0].s0 <= -WINDOW_BEHIND and pieces[len(arcs) - 1].s1 >= WINDOW_AHEAD
        # the pieces join without a gap or a kink, the last arc into the straight lead-out
        for a, b in itertools.pairwise(pieces):
            la, lb = u.road.network.get_lane(a.index), u.road.network.get_lane(b.index)
            np.testing.assert_allclose(la.position(la.length, 0.0), lb.position(0.0, 0.0), atol=1e-6)
            assert math.cos(la.heading_at(la.length) - lb.heading_at(0.0)) == pytest.approx(1.0)
        total = sum(u.road.network.get_lane(p.index).length / p.stretch for p in pieces)
        assert total == pytest.approx(u.config["road_length"])


def test_ego_follows_the_curve_across_its_cuts():
    """IDLE on a 300 m radius: after 20 s (~500 m, past the first cut at 371 m) the ego is still centred
    on its lane, and the reward's speed term measures speed along the road, not along x."""
    scene = scene_on(Road("curve", curvature=1 / 300), [], ego_speed=25.0)
    env = make(scene)
    u = env.unwrapped
    for _ in range(20):
        _, _, terminated, _, info = env.step(IDLE)
    assert not terminated and u.vehicle.lane_index == ("1", "2", 1)
    longitudinal, lateral = u.vehicle.lane.local_coordinates(u.vehicle.position)
    assert abs(lateral) < 0.2
    assert abs(u.vehicle.heading - u.vehicle.lane.heading_at(longitudinal)) < 0.02
    assert math.cos(u.vehicle.heading) < 0  # turned by more than a quarter: highway-v0's x speed would be < 0
    assert info["rewards"]["high_speed_reward"] == pytest.approx(0.5, abs=0.02)  # 25 m/s in [20, 30]


def test_merge_ramp_and_acceleration_lane():
    scene = HAND_SCENES["merge"]
    u = make(scene).unwrapped
    x0, n = u.config["ego_x"], scene.num_lanes
    net = u.road.network
    acc = net.get_lane(("0", "1", n))  # on the main edge, right of lane 0: its vehicles can change left
    assert acc.forbidden and isinstance(acc, StraightLane)
    np.testing.assert_allclose([acc.start, acc.end], [[x0 - 20.0, n * LANE_WIDTH], [x0 + 80.0, n * LANE_WIDTH]])
    ramp = net.get_lane(("r", "0", 0))
    assert ramp.forbidden and ramp.heading == pytest.approx(-RAMP_ANGLE)  # towards the road, i.e. up (-y)
    np.testing.assert_allclose(ramp.end, acc.start)
    assert net.next_lane(("r", "0", 0), position=ramp.end) == ("0", "1", n)
    assert net.side_lanes(("0", "1", n)) == [("0", "1", n - 1)]
    assert net.get_lane(("0", "1", n - 1)).is_reachable_from(acc.position(10, 0))
    assert not acc.is_reachable_from(net.get_lane(("0", "1", n - 1)).position(x0, 0))  # nobody changes onto it
    [obstacle] = u.road.objects  # marks the end, as in highway-env's merge-v0
    assert obstacle.position == pytest.approx(acc.position(acc.length + obstacle.LENGTH / 2, 0))


def test_merge_vehicles_drive_from_the_ramp_onto_the_road():
    scene = scene_on(Road("merge", event_s=100.0, event_length=100.0), [car(RAMP_LANE, -40.0), car(RAMP_LANE, 20.0)],
                     ego_lane=2)
    env = make(scene)
    u = env.unwrapped
    for _ in range(8):
        env.step(IDLE)
    n = scene.num_lanes
    assert all(not v.crashed and v.lane_index[:2] == ("0", "1") and v.lane_index[2] < n for v in u.agent_vehicles)


def test_lane_drop_lane_ends_and_its_vehicles_change_right():
    scene = scene_on(Road("lane_drop", event_s=120.0), [car(2, -20.0)], ego_lane=0)
    env = make(scene)
    u = env.unwrapped
    net, x0 = u.road.network, u.config["ego_x"]
    dropped = net.get_lane(("0", "1", 0))
    assert dropped.end[0] == pytest.approx(x0 + 120.0) and net.get_lane(("0", "1", 1)).end[0] == u.config["road_length"]
    assert net.get_lane(("0", "1", 1)).is_reachable_from(dropped.position(50, 0))
    [obstacle] = u.road.objects
    assert obstacle.position == pytest.approx(dropped.position(dropped.length + obstacle.LENGTH / 2, 0))
    for _ in range(8):
        env.step(IDLE)
    [agent] = u.agent_vehicles
    assert agent.lane_index == ("0", "1", 1) and not agent.crashed and agent.position[0] > x0 + 120.0


def test_reset_switches_road_kind():
    env = make(HAND_SCENES["curve_left"])
    u = env.unwrapped
    for name in ("merge", "straight", "lane_drop", "curve_right"):
        env.reset(options={"scene": HAND_SCENES[name]})
        check_placement(env, HAND_SCENES[name])
        assert u.road.neighbour_vehicles_connected_lanes == name.startswith("curve")  # leaders across the arc's cuts


@pytest.fixture(scope="module")
def sumo_scenes():
    pytest.importorskip("libsumo")
    from aigc_synth.scenes.sumo_dataset import simulate_scenes

    return {kind: simulate_scenes("moderate", 3, 3, seed=1, road=kind) for kind in ("curve", "merge", "lane_drop")}


@pytest.mark.parametrize("kind", ["curve", "merge", "lane_drop"])
def test_sumo_scenes_of_every_kind(sumo_scenes, kind):
    """Ground-truth scenes: every one placed as the contract says; the one using most lanes (the fewest
    vehicles among those, to stay quick) steps 20 times."""
    scenes = sumo_scenes[kind]
    env = gymnasium.make(ENV_ID, scene=scenes[0])
    for scene in scenes:
        env.reset(seed=0, options={"scene": scene})
        check_placement(env, scene)
    busiest = max(scenes, key=lambda sc: (len({a.lane for a in sc.agents}), -len(sc.agents)))
    env.reset(seed=0, options={"scene": busiest})
    step_20(env)
