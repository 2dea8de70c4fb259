"""SUMO's car-following rule restated in closed form (aigc_synth.scenes.car_following), checked against SUMO."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from aigc_synth.scenes.car_following import (
    DECEL,
    MIN_GAP,
    brakes_beyond_limit,
    max_follower_speed,
    min_leader_speed,
    safe_follow_speed,
)
from aigc_synth.scenes.format import EGO_LENGTH, EGO_WIDTH, Agent, Scene

KINDS = ("car", "truck")


def _random_cases(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        kf, kl = rng.choice(KINDS, 2)
        yield str(kf), str(kl), float(rng.uniform(MIN_GAP, 120.0)), float(rng.uniform(0.0, 40.0)), float(rng.uniform(0.0, 40.0))


def test_the_speed_bounds_are_the_edges_of_the_braking_rule_and_inverses_of_each_other():
    for kf, kl, gap, v_follower, v_leader in _random_cases(2000):
        top = max_follower_speed(gap, v_leader, DECEL[kf], DECEL[kl])
        assert not brakes_beyond_limit(gap, top - 1e-6, v_leader, DECEL[kf], DECEL[kl])
        assert brakes_beyond_limit(gap, top + 1e-3, v_leader, DECEL[kf], DECEL[kl])
        slowest = min_leader_speed(gap, v_follower, DECEL[kf], DECEL[kl])
        assert not brakes_beyond_limit(gap, v_follower, slowest + 1e-6, DECEL[kf], DECEL[kl])
        if slowest > 1e-3:
            assert brakes_beyond_limit(gap, v_follower, slowest - 1e-3, DECEL[kf], DECEL[kl])
            assert max_follower_speed(gap, slowest, DECEL[kf], DECEL[kl]) == pytest.approx(v_follower, abs=1e-6)


def _two_car_scene(gap: float, v_follower: float, v_leader: float) -> Scene:
    """The ego ahead on lane 0 of a straight road, one car ``gap`` m (bumper to bumper) behind it."""
    behind = Agent(0, -(gap + EGO_LENGTH), 0.0, v_follower, EGO_LENGTH, EGO_WIDTH, "car")
    return Scene(0, 0, "light", 2, 33.33, 0, v_leader, (behind,), "test")


def test_the_safe_follow_speed_is_sumos_own():
    pytest.importorskip("libsumo")
    from aigc_synth.scenes.road_net import scene_net, scene_net_routes_xml
    from aigc_synth.scenes.sumo import SumoRun, scene_sumo_args, sumo_work_dir

    scene = _two_car_scene(40.0, 25.0, 25.0)
    net = scene_net(scene)
    routes = sumo_work_dir() / f"test_cf_{uuid.uuid4().hex}.rou.xml"
    routes.write_text(scene_net_routes_xml(scene, net))
    try:
        with SumoRun.run(scene_sumo_args(net.path, routes)) as traci:
            traci.simulationStep()
            V = traci.vehicle
            # asked at the safe speed itself, SUMO neither accelerates past it nor brakes below it
            for _, kl, gap, _, v_leader in _random_cases(300, seed=1):
                ours = safe_follow_speed(gap, v_leader, DECEL["car"], DECEL[kl])
                assert V.getFollowSpeed("ego", ours, gap - MIN_GAP, v_leader, DECEL[kl]) == pytest.approx(ours, abs=1e-6)
    finally:
        routes.unlink(missing_ok=True)


@pytest.mark.parametrize("gap, v_leader", [(10.0, 10.0), (20.0, 20.0), (40.0, 30.0)])
@pytest.mark.parametrize("margin, hard", [(-0.02, False), (0.02, True)])
def test_a_follower_past_the_bound_is_the_replays_hard_braking_and_one_inside_is_not(gap, v_leader, margin, hard):
    pytest.importorskip("libsumo")
    from aigc_synth.scenes.replay import replay_scene

    v_follower = max_follower_speed(gap, v_leader, DECEL["car"], DECEL["car"]) + margin
    result = replay_scene(_two_car_scene(gap, v_follower, v_leader), duration_s=1.0)
    assert result["collided"] == 0
    assert (result["hard_braking"] > 0) is hard


def test_braking_at_exactly_the_normal_limit_is_not_hard_braking():
    """A follower between its safe speed + one step of normal braking and the emergency bound brakes at
    exactly 4.5 m/s^2, which SUMO reports as -4.500000000000028 at this speed: not an emergency."""
    pytest.importorskip("libsumo")
    from aigc_synth.scenes.replay import replay_scene

    gap, v_leader = 38.0, 33.0
    normal = safe_follow_speed(gap, v_leader, DECEL["car"], DECEL["car"]) + DECEL["car"] * 0.1
    v_follower = 33.9
    assert normal < v_follower < max_follower_speed(gap, v_leader, DECEL["car"], DECEL["car"])
    assert replay_scene(_two_car_scene(gap, v_follower, v_leader), duration_s=0.5)["hard_braking"] == 0


def test_the_bundled_scene_model_never_samples_a_follower_past_the_bound():
    """The sampler's speed bound is SUMO's rule: no same-lane pair of a generated straight or curved scene breaks it."""
    from aigc_synth.models.scene_families import BUNDLED_SCENE_CHECKPOINT, load_scene_generator

    gen = load_scene_generator(BUNDLED_SCENE_CHECKPOINT)
    n = 240
    traffic = [("light", "moderate", "heavy")[i % 3] for i in range(n)]
    lanes = [(2, 3, 4)[i // 3 % 3] for i in range(n)]
    scenes = gen.sample(traffic, lanes, list(range(n)), list(range(n)), roads=["straight", "curve"] * (n // 2))
    pairs = 0
    for sc in scenes:
        vehicles = sorted([(sc.ego_lane, 0.0, EGO_LENGTH, sc.ego_speed, "car")]
                          + [(a.lane, a.s, a.length, a.speed, a.kind) for a in sc.agents])
        for (lane_f, s_f, len_f, v_f, kind_f), (lane_l, s_l, len_l, v_l, kind_l) in zip(vehicles, vehicles[1:]):
            if lane_f == lane_l:
                pairs += 1
                gap = s_l - s_f - (len_f + len_l) / 2
                assert not brakes_beyond_limit(gap, v_f, v_l, DECEL[kind_f], DECEL[kind_l]), (sc.scene_id, gap, v_f, v_l)
    assert pairs > 1000
