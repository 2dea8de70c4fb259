"""A gymnasium environment that starts from one traffic scene, simulated by highway-env.

:class:`SceneEnv` builds a straight highway-env road with the scene's lanes and speed limit, puts
a controllable ego where the scene says and every agent as a highway-env ``IDMVehicle`` (IDM car
following + MOBIL lane changes) at its exact position, speed and size, then lets a policy drive
the ego. Observation, action and reward are highway-env's ``highway-v0`` ones (Kinematics
observation, ``DiscreteMetaAction``, speed / right-lane / collision reward) and can be changed
through ``config`` like any highway-env environment. Importing this module registers the
environment as ``aigc_synth/scene-v0`` (:func:`register_scene_env`).

Needs ``aigc_synth[sim]`` (gymnasium + highway-env); without them importing this module raises
:class:`~aigc_synth.scenes.format.SceneError` with an install hint.

Usage::

    import gymnasium
    import pyarrow.parquet as pq

    import aigc_synth.scenes.gym_env  # noqa: F401  (registers "aigc_synth/scene-v0")
    from aigc_synth.scenes.format import table_to_scenes

    scenes = table_to_scenes(pq.read_table("out/scenes/part-00000.parquet"))
    env = gymnasium.make("aigc_synth/scene-v0", scene=scenes[0], render_mode="rgb_array")
    obs, info = env.reset(seed=0)
    for _ in range(20):
        obs, reward, terminated, truncated, info = env.step(1)  # DiscreteMetaAction 1 = IDLE
        frame = env.render()  # (H, W, 3) uint8
        if terminated or truncated:
            break
    obs, info = env.reset(options={"scene": scenes[1]})  # same env, next scene
    env.close()

``scene`` may also be a Parquet row as a dict (:class:`~aigc_synth.scenes.format.Scene` fields,
agents as a list of dicts). ``env.unwrapped.agent_vehicles[i]`` is the highway-env vehicle of
``scene.agents[i]``.

Geometry (the contract's frame mapped onto highway-env's)
    * highway-env's road runs along +x and its y axis points to the driver's RIGHT (down on
      screen): lane index ``0`` is the leftmost lane, at y = 0, and a vehicle's lateral lane
      coordinate is positive to the right. The contract counts lanes from the right, so scene
      lane ``L`` is highway-env lane ``("0", "1", num_lanes - 1 - L)`` (:func:`highway_lane_id`)
      and an agent's offset ``d`` (positive left) becomes the lateral coordinate ``-d``.
      highway-env's "right lane" reward favours high lane indices, i.e. the contract's low lanes.
    * Lanes are :data:`~aigc_synth.scenes.format.LANE_WIDTH` (3.2 m) wide, not highway-env's
      default 4 m (the observation's normalisation of y still assumes 4 m lanes, which only scales
      the normalised values).
    * The ego's centre starts at x = ``config["ego_x"]`` (:data:`EGO_X`, 100 m: like the SUMO
      and OpenSCENARIO exports, every agent of the window lies at x > 0), an agent's centre at
      ``ego_x + s``. The road is ``config["road_length"]`` (10 km) long so nobody runs off its end
      within an episode; highway-env never removes vehicles.
    * The ego is :data:`~aigc_synth.scenes.format.EGO_LENGTH` x
      :data:`~aigc_synth.scenes.format.EGO_WIDTH`, each agent its own ``length`` x ``width``.

Behaviour notes
    * Every vehicle starts with heading 0 (along the road) and its scene speed. Agents keep their
      initial speed as IDM desired speed (highway-env's own convention), so an agent at 0 m/s
      stays put unless it changes lanes.
    * With ``DiscreteMetaAction`` the ego tracks the nearest of the action's ``target_speeds``
      (highway-env default 20, 25, 30 m/s), not ``ego_speed``; pass
      ``config={"action": {"type": "DiscreteMetaAction", "target_speeds": [...]}}`` to change them.
    * The agents' driver models are deterministic (highway-env's ``IDMVehicle`` defaults);
      ``config["randomize_behavior"] = True`` draws each agent's IDM exponent from the seeded
      ``np_random`` as ``highway-v0`` does.
    * ``lanes_count``, ``vehicles_count``, ``vehicles_density``, ``initial_lane_id`` and
      ``ego_spacing`` of the highway-env config are ignored: the scene places everyone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from aigc_synth.scenes.format import (
    EGO_LENGTH,
    EGO_WIDTH,
    LANE_WIDTH,
    WINDOW_BEHIND,
    Scene,
    SceneError,
    validate_scene,
)

INSTALL_HINT = "highway-env is not installed: pip install 'aigc_synth[sim]'"
ENV_ID = "aigc_synth/scene-v0"
# Same origin as the SUMO / OpenSCENARIO exports (sumo.EGO_X): agents up to WINDOW_BEHIND back stay on the road.
EGO_X = WINDOW_BEHIND + 50.0
ROAD_LENGTH = 10_000.0  # m; highway-env's own default, far beyond a 40 s episode at its 40 m/s top speed

try:  # optional dependencies (aigc_synth[sim]): a missing one is a SceneError with an install hint, like SUMO's
    from highway_env import utils
    from highway_env.envs.highway_env import HighwayEnv
    from highway_env.road.lane import LineType, StraightLane
    from highway_env.road.road import LaneIndex, Road, RoadNetwork
    from highway_env.vehicle.kinematics import Vehicle
except ImportError as exc:
    raise SceneError(INSTALL_HINT) from exc


def highway_lane_id(lane: int, num_lanes: int) -> int:
    """highway-env's lane id of the contract's ``lane``: highway-env counts from the left, the contract from the right."""
    return num_lanes - 1 - lane


def as_scene(scene: Scene | Mapping[str, Any] | None) -> Scene:
    """``scene`` as a :class:`Scene` (a dict is a Parquet row), checked against the contract.

    Overlapping vehicles are accepted (simulating them is how one sees the crash); any other
    contract violation (lane outside the road, agent outside the window, ...) raises SceneError.
    """
    if scene is None:
        raise SceneError(f"{ENV_ID} needs a scene: gymnasium.make({ENV_ID!r}, scene=...)")
    if not isinstance(scene, Scene):
        if not isinstance(scene, Mapping):
            raise SceneError(f"a scene must be a Scene or a dict of its fields, got {type(scene).__name__}")
        try:
            scene = Scene(**scene)
        except TypeError as exc:  # missing / unknown fields, in the scene or in one of its agents
            raise SceneError(f"not a scene row: {exc}") from exc
    problems = validate_scene(scene, check_overlaps=False)
    if problems:
        raise SceneError(f"scene {scene.scene_id} cannot be simulated: {problems[0]}")
    from aigc_synth.scenes.format import require_straight

    require_straight([scene], ENV_ID)
    return scene


def _set_size(vehicle: Vehicle, length: float, width: float) -> None:
    """Give one vehicle its own size (highway-env sizes are class attributes)."""
    vehicle.LENGTH = length
    vehicle.WIDTH = width
    # computed in RoadObject.__init__ from the class size; the collision check's broad phase uses it
    vehicle.diagonal = math.hypot(length, width)


def _pin_lane(vehicle: Vehicle, road: Road, lane_index: LaneIndex) -> None:
    """Put ``vehicle`` on the scene's lane even if ``|d|`` = half a lane makes another one as close."""
    vehicle.lane_index = lane_index
    vehicle.lane = road.network.get_lane(lane_index)
    if hasattr(vehicle, "target_lane_index"):  # ControlledVehicle and subclasses steer towards it
        vehicle.target_lane_index = lane_index


class SceneEnv(HighwayEnv):
    """highway-env's highway task, started from one :class:`Scene` instead of random traffic.

    ``SceneEnv(scene, config=None, render_mode=None)``, normally through
    ``gymnasium.make("aigc_synth/scene-v0", scene=..., config=..., render_mode=...)``; ``scene``
    is a :class:`Scene` or a Parquet row dict, ``config`` overrides :meth:`default_config` (as in
    any highway-env environment, a nested dict such as ``"action"`` is replaced whole).
    ``reset(options={"scene": other})`` switches to another scene for this and later episodes.
    After a reset, :attr:`agent_vehicles` lists the vehicle of each of ``scene.agents``, in order.
    """

    def __init__(self, scene: Scene | Mapping[str, Any] | None = None, config: dict | None = None,
                 render_mode: str | None = None) -> None:
        self.scene: Scene = as_scene(scene)  # before AbstractEnv.__init__, which already resets
        self.agent_vehicles: list[Vehicle] = []
        super().__init__(config=config, render_mode=render_mode)

    @classmethod
    def default_config(cls) -> dict:
        """highway-v0's configuration plus this environment's keys ``ego_x``, ``road_length``, ``randomize_behavior``."""
        config = super().default_config()
        config.update({
            "ego_x": EGO_X,  # [m] ego centre from the road start
            "road_length": ROAD_LENGTH,  # [m]
            "randomize_behavior": False,  # True: random IDM exponent per agent, as highway-v0 does
            "vehicles_count": 0,  # unused: the scene places every vehicle
        })
        return config

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        """Start an episode; ``options={"scene": scene}`` switches scene first (``"config"`` works as in highway-env)."""
        if options and "scene" in options:
            self.scene = as_scene(options["scene"])  # validated before anything changes
            options = {k: v for k, v in options.items() if k != "scene"}
        return super().reset(seed=seed, options=options)

    def _create_road(self) -> None:
        """A straight road of the scene's lanes, LANE_WIDTH wide, highway-env lane 0 on the left."""
        n, length = self.scene.num_lanes, float(self.config["road_length"])
        network = RoadNetwork()
        # RoadNetwork.straight_road_network has no width argument (always 4 m lanes): same layout, built by hand
        for i in range(n):
            y = i * LANE_WIDTH
            line_types = (LineType.CONTINUOUS_LINE if i == 0 else LineType.STRIPED,
                          LineType.CONTINUOUS_LINE if i == n - 1 else LineType.NONE)
            network.add_lane("0", "1", StraightLane([0.0, y], [length, y], width=LANE_WIDTH, line_types=line_types,
                                                    speed_limit=self.scene.speed_limit))
        self.road = Road(network=network, np_random=self.np_random, record_history=self.config["show_trajectories"],
                         neighbour_vehicles_connected_lanes=self.config["neighbour_vehicles_connected_lanes"])

    def _create_vehicles(self) -> None:
        """The ego (the action type's vehicle class) and one ``other_vehicles_type`` vehicle per agent."""
        scene, road, x0 = self.scene, self.road, float(self.config["ego_x"])
        self.config["lanes_count"] = scene.num_lanes  # for anything that still reads it

        ego_index = ("0", "1", highway_lane_id(scene.ego_lane, scene.num_lanes))
        lane = road.network.get_lane(ego_index)
        ego = self.action_type.vehicle_class(road, lane.position(x0, 0.0), lane.heading_at(x0), scene.ego_speed)
        _set_size(ego, EGO_LENGTH, EGO_WIDTH)
        _pin_lane(ego, road, ego_index)
        self.controlled_vehicles = [ego]
        road.vehicles.append(ego)

        other_type = utils.class_from_path(self.config["other_vehicles_type"])
        self.agent_vehicles = []
        for agent in scene.agents:
            index = ("0", "1", highway_lane_id(agent.lane, scene.num_lanes))
            lane = road.network.get_lane(index)
            x = x0 + agent.s
            # lateral coordinate positive to the right (y down), d positive to the left: hence -d
            vehicle = other_type(road, lane.position(x, -agent.d), lane.heading_at(x), agent.speed)
            _set_size(vehicle, agent.length, agent.width)
            _pin_lane(vehicle, road, index)
            if self.config["randomize_behavior"] and hasattr(vehicle, "randomize_behavior"):
                vehicle.randomize_behavior()
            self.agent_vehicles.append(vehicle)
            road.vehicles.append(vehicle)

    def _info(self, obs: Any, action: Any = None) -> dict:
        """highway-env's info plus the scene's id."""
        info = super()._info(obs, action)
        info["scene_id"] = self.scene.scene_id
        return info


def register_scene_env() -> None:
    """Register :class:`SceneEnv` with gymnasium as ``aigc_synth/scene-v0`` (idempotent; done at import).

    Raises SceneError when gymnasium or highway-env is missing.
    """
    try:
        import gymnasium as gym
        import highway_env  # noqa: F401  (the entry point's base class)
    except ImportError as exc:
        raise SceneError(INSTALL_HINT) from exc
    if ENV_ID not in gym.registry:
        gym.register(id=ENV_ID, entry_point="aigc_synth.scenes.gym_env:SceneEnv")


register_scene_env()

__all__ = ["EGO_X", "ENV_ID", "INSTALL_HINT", "ROAD_LENGTH", "SceneEnv", "as_scene", "highway_lane_id", "register_scene_env"]
