"""The gymnasium environment ``aigc_synth/scene-v0``: a scene placed on a highway-env road and driven.

Needs ``aigc_synth[sim]``'s highway-env (skipped without it). Orientation facts checked here against
highway-env itself: its y axis points to the driver's right, lane index 0 is its leftmost lane, and
its ``LANE_LEFT`` action lowers the lane index; the contract counts lanes from the right.
"""

from __future__ import annotations

import importlib
import os
import sys

import numpy as np
import pytest

pytest.importorskip("highway_env")
# headless rendering: SDL's offscreen driver draws for real ("dummy" makes highway-env skip drawing)
os.environ.setdefault("SDL_VIDEODRIVER", "offscreen")

import gymnasium

from aigc_synth.scenes import gym_env
from aigc_synth.scenes.format import (
    EGO_LENGTH,
    EGO_WIDTH,
    LANE_WIDTH,
    Agent,
    Scene,
    SceneError,
    scenes_to_table,
)

ENV_ID = "aigc_synth/scene-v0"
IDLE, LANE_LEFT = 1, 0  # DiscreteMetaAction indices


def four_lane_scene() -> Scene:
    """4 lanes, ego on lane 1 (asymmetric: highway-env lane 2); agents on lanes 0, 2, 3, ahead and behind.

    Scene() sorts the agents by (lane, s), so look them up by content, not by the order written here.
    """
    agents = [
        Agent(0, 25.0, 0.0, 24.0, 12.0, 2.5, "truck"),
        Agent(0, -30.0, 0.0, 23.0, 4.5, 1.8, "car"),
        Agent(2, 40.0, 0.5, 28.0, 4.0, 1.7, "car"),  # drifting left
        Agent(2, -20.0, -0.4, 26.0, 5.5, 1.9, "car"),  # drifting right
        Agent(3, 60.0, 0.0, 31.0, 4.8, 1.8, "car"),
    ]
    return Scene(scene_id=7, seed=1, traffic="light", num_lanes=4, speed_limit=33.33, ego_lane=1, ego_speed=25.0,
                 agents=agents, model_id="test")


def two_lane_scene() -> Scene:
    return Scene(scene_id=8, seed=2, traffic="light", num_lanes=2, speed_limit=27.78, ego_lane=0, ego_speed=20.0,
                 agents=[Agent(1, 30.0, 0.0, 22.0, 4.5, 1.8, "car")], model_id="test")


def make(scene=None, **kwargs):
    env = gymnasium.make(ENV_ID, scene=four_lane_scene() if scene is None else scene, **kwargs)
    env.reset(seed=0)
    return env


def lane_centre_y(scene: Scene, lane: int) -> float:
    return (scene.num_lanes - 1 - lane) * LANE_WIDTH


def test_reset_places_every_vehicle_of_the_scene():
    scene = four_lane_scene()
    env = make(scene)
    u = env.unwrapped
    x0 = u.config["ego_x"]
    assert len(u.road.vehicles) == 1 + len(scene.agents) == len(u.agent_vehicles) + 1
    assert [lane.width for lane in u.road.network.lanes_list()] == [LANE_WIDTH] * 4
    assert [lane.speed_limit for lane in u.road.network.lanes_list()] == [scene.speed_limit] * 4

    ego = u.vehicle
    assert ego is u.road.vehicles[0] and type(ego).__name__ == "MDPVehicle"  # DiscreteMetaAction's vehicle class
    assert ego.lane_index == ("0", "1", 2)  # contract lane 1 of 4 = highway-env lane 4 - 1 - 1
    assert ego.position == pytest.approx([x0, lane_centre_y(scene, 1)], abs=1e-9)
    assert ego.speed == scene.ego_speed and ego.heading == 0
    assert (ego.LENGTH, ego.WIDTH) == (EGO_LENGTH, EGO_WIDTH)

    for agent, v in zip(scene.agents, u.agent_vehicles):
        assert type(v).__name__ == "IDMVehicle"
        assert v.position[0] == pytest.approx(x0 + agent.s, abs=1e-6)
        assert v.lane_index[2] == scene.num_lanes - 1 - agent.lane
        assert v.target_lane_index == v.lane_index
        assert v.position[1] == pytest.approx(lane_centre_y(scene, agent.lane) - agent.d, abs=1e-9)
        assert (v.LENGTH, v.WIDTH, v.speed) == (agent.length, agent.width, agent.speed)
        assert v.diagonal == pytest.approx(np.hypot(agent.length, agent.width))
        assert v.DELTA == type(v).DELTA  # deterministic: no randomize_behavior() by default
    assert u.agent_vehicles[0].LENGTH != type(u.agent_vehicles[0]).LENGTH  # per-instance size, class untouched


def test_lane_orientation_matches_highway_env():
    scene = four_lane_scene()
    u = make(scene).unwrapped
    by_lane = {a.lane: v for a, v in zip(scene.agents, u.agent_vehicles)}
    assert by_lane[3].lane_index[2] == 0  # the contract's leftmost lane is highway-env's lane 0 ...
    assert by_lane[0].lane_index[2] == 3  # ... and its rightmost lane highway-env's last one
    assert by_lane[3].position[1] < by_lane[0].position[1]  # left = smaller y
    by_d = {a.d: v for a, v in zip(scene.agents, u.agent_vehicles)}  # both on lane 2: d = +0.5 (left), -0.4 (right)
    assert by_d[0.5].position[1] < lane_centre_y(scene, 2) < by_d[-0.4].position[1]
    # highway-env's own "left": LANE_LEFT lowers the lane index, i.e. moves the ego from contract lane 1 to lane 2
    env = make(scene)
    env.step(LANE_LEFT)
    env.step(IDLE)
    assert env.unwrapped.vehicle.lane_index[2] == scene.num_lanes - 1 - 2
    assert env.unwrapped.vehicle.position[1] == pytest.approx(lane_centre_y(scene, 2), abs=0.3)


def test_steps_run_and_agents_drive_forward():
    env = make()
    u = env.unwrapped
    obs, _ = env.reset(seed=0)
    start = [v.position[0] for v in u.agent_vehicles]
    assert obs.shape == env.observation_space.shape
    for _ in range(20):
        obs, reward, _, _, info = env.step(IDLE)
        assert obs.shape == env.observation_space.shape and np.isfinite(obs).all()
        assert np.isfinite(reward) and info["scene_id"] == 7
    assert len(u.road.vehicles) == 1 + len(u.scene.agents)  # highway-env never removes anyone
    assert all(v.position[0] > x for v, x in zip(u.agent_vehicles, start))
    assert not u.vehicle.crashed  # nobody in the ego's lane: IDLE is safe


def test_same_seed_same_rollout():
    positions = []
    for _ in range(2):
        env = make(config={"randomize_behavior": True})
        for _ in range(5):
            env.step(IDLE)
        positions.append(np.array([v.position for v in env.unwrapped.road.vehicles]))
    np.testing.assert_array_equal(positions[0], positions[1])


def test_randomize_behavior_is_opt_in():
    u = make(config={"randomize_behavior": True}).unwrapped
    assert all(v.DELTA != type(v).DELTA for v in u.agent_vehicles)


def test_render_rgb_array():
    env = make(render_mode="rgb_array")
    env.step(IDLE)
    frame = env.render()
    u = env.unwrapped
    assert frame.shape == (u.config["screen_height"], u.config["screen_width"], 3) and frame.dtype == np.uint8
    assert frame.std() > 0  # something was drawn
    env.close()


def test_reset_options_switch_scene():
    env = make()
    u = env.unwrapped
    assert len(u.road.vehicles) == 6
    env.reset(options={"scene": two_lane_scene()})
    assert len(u.road.vehicles) == 2 and len(u.road.network.lanes_list()) == 2
    assert u.vehicle.lane_index == ("0", "1", 1) and u.agent_vehicles[0].lane_index == ("0", "1", 0)
    env.reset()  # the switch sticks
    assert u.scene == two_lane_scene() and len(u.road.vehicles) == 2
    with pytest.raises(SceneError, match="lane 5 is outside"):
        env.reset(options={"scene": Scene(**{**two_lane_scene().__dict__, "ego_lane": 5})})
    assert u.scene == two_lane_scene()  # a rejected scene changes nothing


def test_scene_as_parquet_row_dict():
    scene = four_lane_scene()
    row = scenes_to_table([scene]).to_pylist()[0]
    assert isinstance(row["agents"][0], dict)
    from_row, from_scene = make(row).unwrapped, make(scene).unwrapped
    assert from_row.scene == scene
    np.testing.assert_array_equal([v.position for v in from_row.road.vehicles], [v.position for v in from_scene.road.vehicles])


def test_bad_scenes_are_scene_errors():
    with pytest.raises(SceneError, match="needs a scene"):
        gymnasium.make(ENV_ID)
    with pytest.raises(SceneError, match="not a scene row"):
        gymnasium.make(ENV_ID, scene={"scene_id": 1})
    with pytest.raises(SceneError, match="outside the window"):
        gymnasium.make(ENV_ID, scene=Scene(**{**two_lane_scene().__dict__, "agents": [Agent(1, 500.0, 0, 20, 4, 2, "car")]}))


def test_register_is_idempotent():
    gym_env.register_scene_env()
    gym_env.register_scene_env()
    assert gymnasium.registry[ENV_ID].entry_point == "aigc_synth.scenes.gym_env:SceneEnv"
    importlib.reload(gym_env)  # import-time registration again: no duplicate-registration error


def test_missing_highway_env_is_a_scene_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "highway_env", None)  # makes `import highway_env...` raise ImportError
    monkeypatch.delitem(sys.modules, "aigc_synth.scenes.gym_env")  # restored afterwards
    with pytest.raises(SceneError, match=r"highway-env is not installed: pip install 'aigc_synth\[sim\]'"):
        importlib.import_module("aigc_synth.scenes.gym_env")
    with pytest.raises(SceneError, match=r"highway-env is not installed"):
        gym_env.register_scene_env()
