"""A gymnasium environment that starts from one traffic scene, simulated by highway-env.

:class:`SceneEnv` builds the highway-env road of the scene's road (straight, curve, merge or lane
drop; see "Road kinds") with its lanes and speed limit, puts a controllable ego where the scene
says and every agent as a highway-env ``IDMVehicle`` (IDM car following + MOBIL lane changes) at
its exact position, speed and size, then lets a policy drive the ego. Observation, action and reward are highway-env's ``highway-v0`` ones (Kinematics
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
      and an agent's offset ``d`` (positive left) becomes the lateral coordinate ``-d`` (on a
      curve the edge is that of the arc piece the vehicle is on, on a merge's ramp the ramp's).
      highway-env's "right lane" reward favours high lane indices, i.e. the contract's low lanes.
    * Lanes are :data:`~aigc_synth.scenes.format.LANE_WIDTH` (3.2 m) wide, not highway-env's
      default 4 m (the observation's normalisation of y still assumes 4 m lanes, which only scales
      the normalised values).
    * The ego's centre starts at x = ``config["ego_x"]`` (:data:`EGO_X`, 100 m: like the SUMO
      and OpenSCENARIO exports, every agent of the window lies at x > 0), an agent's centre at
      ``ego_x + s`` on a straight road. The road is ``config["road_length"]`` (10 km) long so
      nobody runs off its end within an episode; highway-env never removes vehicles.
    * Every road kind uses the same frame: the plane frame of :mod:`aigc_synth.scenes.road` (the
      ego's; reference line through the origin along +x, y to the left) mirrored to highway-env's
      y-to-the-right and shifted so the ego sits where it does on the straight road
      (:func:`to_env_frame`: ``(ego_x + x, (num_lanes - 0.5) * LANE_WIDTH - y)``, heading negated).
      Every vehicle starts at :func:`~aigc_synth.scenes.road.vehicle_pose` of its ``(lane, s, d)``,
      on the highway-env lane that carries that stretch of its lane, heading along it.
    * The ego is :data:`~aigc_synth.scenes.format.EGO_LENGTH` x
      :data:`~aigc_synth.scenes.format.EGO_WIDTH`, each agent its own ``length`` x ``width``.

Road kinds (:func:`build_road`)
    * ``straight``: edge ``("0", "1")``, one ``StraightLane`` per lane from x = 0 to ``road_length``.
    * ``curve``: concentric ``CircularLane`` arcs of the scene's curvature (lane ``L``'s radius is
      ``1 / |curvature|`` minus its offset on the inside of the bend, plus it on the outside) from
      the road's start, cut into edges ``("0", "1")``, ``("1", "2")``, ... of at most
      :data:`ARC_PIECE_TURN` (a ``CircularLane`` locates points by their angle modulo a turn). The
      arc turns at most :data:`ARC_TURN` (longer, it would run back over itself); a straight
      lead-out edge carries the rest of ``road_length``. The window always lies on the arc, and
      vehicles look for their leaders across the cuts (``neighbour_vehicles_connected_lanes``).
    * ``merge``: the main road as on a straight road plus the acceleration lane, highway-env lane
      ``num_lanes`` of edge ``("0", "1")`` (so its vehicles can change onto the road), a
      ``StraightLane`` from ``event_s - event_length`` to ``event_s``; the ramp before it is edge
      ``("r", "0")``, a ``StraightLane`` at :data:`~aigc_synth.scenes.format.RAMP_ANGLE` whose
      centre line is where :func:`~aigc_synth.scenes.road.lane_offset` puts it, from where the
      road starts. Both are ``forbidden`` (nobody changes onto them), as in highway-env's own
      ``merge-v0``, which also shows where a lane ends: an ``Obstacle`` just past the end of the
      acceleration lane, so that IDM brakes for it and MOBIL changes lanes before it.
    * ``lane_drop``: as a straight road, but the leftmost lane (highway-env lane 0) is a
      ``StraightLane`` that ends at ``event_s``, with an ``Obstacle`` just past its end; it shares
      edge ``("0", "1")`` with the other lanes, so its vehicles can change to the lane on its right.
    * A merge or lane-drop road starts earlier (and ends later) where its event would lie less than
      :data:`EVENT_MARGIN` m inside it; the frame stays the ego's.

Behaviour notes
    * Every vehicle starts heading along its lane (0 on a straight road) at its scene speed. Agents
      keep their initial speed as IDM desired speed (highway-env's own convention), so an agent at
      0 m/s stays put unless it changes lanes.
    * A vehicle whose front already reaches past the end of its lane (a scene may hold one: only its
      centre must lie on the lane) starts in contact with that lane's obstacle and crashes at once.
    * With ``DiscreteMetaAction`` the ego tracks the nearest of the action's ``target_speeds``
      (highway-env default 20, 25, 30 m/s), not ``ego_speed``; pass
      ``config={"action": {"type": "DiscreteMetaAction", "target_speeds": [...]}}`` to change them.
    * The agents' driver models are deterministic (highway-env's ``IDMVehicle`` defaults);
      ``config["randomize_behavior"] = True`` draws each agent's IDM exponent from the seeded
      ``np_random`` as ``highway-v0`` does.
    * Observations are highway-env's, in its world frame: on a curve, relative positions and
      velocities turn with the road (as in highway-env's own curved environments). The reward's
      speed and right-lane terms are measured along the road on every kind (:meth:`SceneEnv._rewards`).
    * ``lanes_count``, ``vehicles_count``, ``vehicles_density``, ``initial_lane_id`` and
      ``ego_spacing`` of the highway-env config are ignored: the scene places everyone.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from aigc_synth.scenes.format import (
    EGO_LENGTH,
    EGO_WIDTH,
    LANE_WIDTH,
    RAMP_ANGLE,
    RAMP_LANE,
    WINDOW_AHEAD,
    WINDOW_BEHIND,
    Scene,
    SceneError,
    lane_end,
    validate_scene,
)
from aigc_synth.scenes.road import lane_length_factor, lane_offset, to_plane

INSTALL_HINT = "highway-env is not installed: pip install 'aigc_synth[sim]'"
ENV_ID = "aigc_synth/scene-v0"
# Same origin as the SUMO / OpenSCENARIO exports (sumo.EGO_X): agents up to WINDOW_BEHIND back stay on the road.
EGO_X = WINDOW_BEHIND + 50.0
ROAD_LENGTH = 10_000.0  # m; highway-env's own default, far beyond a 40 s episode at its 40 m/s top speed
#: Largest turn of one ``CircularLane``, radians: it finds a point's longitudinal coordinate from its
#: angle wrapped to half a turn around the lane's start, so a longer arc would misplace its far end.
ARC_PIECE_TURN = math.pi / 2
#: Largest turn of a curve road's arc, radians. Beyond a full turn the road would run over itself;
#: up to three quarters, the straight lead-out after it stays clear of the arc's lanes.
ARC_TURN = 1.5 * math.pi
#: A merge's acceleration lane (and at least this much ramp) or a dropped lane's end lies at least this
#: far inside the road, metres (the road is lengthened otherwise), so every lane has some length.
EVENT_MARGIN = 50.0

try:  # optional dependencies (aigc_synth[sim]): a missing one is a SceneError with an install hint, like SUMO's
    from highway_env import utils
    from highway_env.envs.highway_env import HighwayEnv
    from highway_env.road.lane import AbstractLane, CircularLane, LineType, StraightLane
    from highway_env.road.road import LaneIndex, Road, RoadNetwork
    from highway_env.vehicle.controller import ControlledVehicle
    from highway_env.vehicle.kinematics import Vehicle
    from highway_env.vehicle.objects import Obstacle
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
    return scene


def to_env_frame(num_lanes: int, ego_x: float, x: float, y: float, heading: float = 0.0) -> tuple[float, float, float]:
    """A pose of :mod:`aigc_synth.scenes.road`'s plane frame in highway-env's: ``(x, y, heading)``.

    highway-env's y points right, so y and the heading change sign; the shift puts the reference
    line at s = 0 where the straight road has always had it, ``ego_x`` along and the right edge
    of lane 0 ``(num_lanes - 0.5)`` lane widths down (highway-env lane ``i``'s centre is at ``i``
    widths).
    """
    return ego_x + x, (num_lanes - 0.5) * LANE_WIDTH - y, -heading


@dataclass(frozen=True)
class LanePiece:
    """One highway-env lane, carrying the stretch ``[s0, s1)`` of reference line of one contract lane.

    Its longitudinal coordinate is 0 at ``s0`` and grows ``stretch`` metres per metre of reference
    line (an arc's lanes are longer outside the bend); ``angle`` is its heading relative to the
    reference line (a merge's ramp), radians, left positive.
    """

    index: LaneIndex
    s0: float
    s1: float
    stretch: float = 1.0
    angle: float = 0.0

    def coordinates(self, s: float, d: float) -> tuple[float, float]:
        """highway-env's ``(longitudinal, lateral)`` of the point ``d`` left of the lane's centre line at
        reference ``s``: the contract measures ``d`` across the reference line, so on the ramp it
        has a component along the lane; highway-env's lateral coordinate is positive to the right.
        """
        return (s - self.s0) * self.stretch + d * math.sin(self.angle), -d * math.cos(self.angle)


@dataclass
class SceneRoad:
    """A scene's highway-env road network, where each contract lane lies on it, and where lanes end.

    ``pieces[lane]`` lists the highway-env lanes of contract lane ``lane`` in driving order;
    ``lane_ends`` the highway-env lanes that end with no lane after them (a merge's acceleration
    lane, a dropped lane), each of which gets an obstacle just past its end.
    """

    network: RoadNetwork
    pieces: dict[int, list[LanePiece]]
    lane_ends: list[LaneIndex]

    def piece(self, lane: int, s: float) -> LanePiece:
        """The highway-env lane holding contract lane ``lane`` at reference ``s`` (the last one beyond the road)."""
        pieces = self.pieces[lane]
        return next((p for p in pieces if s < p.s1), pieces[-1])

    def add(self, lane: int, piece: LanePiece, geometry: AbstractLane) -> None:
        """Add ``geometry`` to the network as ``piece.index``, carrying ``piece`` of contract lane ``lane``."""
        # highway-env numbers an edge's lanes by insertion order: the index must be the next one
        self.network.add_lane(piece.index[0], piece.index[1], geometry)
        assert len(self.network.graph[piece.index[0]][piece.index[1]]) - 1 == piece.index[2], piece
        self.pieces.setdefault(lane, []).append(piece)


def _line_types(hw_id: int, num_lanes: int) -> tuple[int, int]:
    """(left, right) markings of highway-env lane ``hw_id`` of ``num_lanes``: solid road edges, dashes between lanes."""
    return (LineType.CONTINUOUS_LINE if hw_id == 0 else LineType.STRIPED,
            LineType.CONTINUOUS_LINE if hw_id == num_lanes - 1 else LineType.NONE)


def build_road(scene: Scene, ego_x: float = EGO_X, road_length: float = ROAD_LENGTH) -> SceneRoad:
    """The highway-env road network of ``scene``'s road in the :func:`to_env_frame` frame (see the module doc)."""
    road, n, x0 = scene.road, scene.num_lanes, float(ego_x)
    if road.kind == "curve":
        return _curve_road(scene, x0, float(road_length))
    # Straight, merge and lane drop share one straight main road; an event near its start or end moves them out.
    x_start, x_end = 0.0, float(road_length)
    if road.kind == "merge":
        accel = road.event_s - road.event_length  # where the acceleration lane begins
        x_start, x_end = min(x_start, x0 + accel - EVENT_MARGIN), max(x_end, x0 + road.event_s + EVENT_MARGIN)
    elif road.kind == "lane_drop":
        x_start, x_end = min(x_start, x0 + road.event_s - EVENT_MARGIN), max(x_end, x0 + road.event_s + EVENT_MARGIN)
    out = SceneRoad(RoadNetwork(), {}, [])
    s_start = x_start - x0
    for hw_id in range(n):  # added left to right: the list position is highway-env's lane id
        lane, y = n - 1 - hw_id, hw_id * LANE_WIDTH
        end = min(x_end, x0 + lane_end(road, n, lane))  # a dropped lane ends at event_s, the others with the road
        # RoadNetwork.straight_road_network has no width argument (always 4 m lanes): same layout, built by hand
        out.add(lane, LanePiece(("0", "1", hw_id), s_start, end - x0),
                StraightLane([x_start, y], [end, y], width=LANE_WIDTH, line_types=_line_types(hw_id, n),
                             speed_limit=scene.speed_limit))
        if end < x_end:
            out.lane_ends.append(("0", "1", hw_id))
    if road.kind == "merge":
        _add_ramp(out, scene, x0, s_start)
    return out


def _add_ramp(out: SceneRoad, scene: Scene, x0: float, s_start: float) -> None:
    """A merge's acceleration lane (highway-env lane ``num_lanes`` of the main edge) and the ramp leading to it."""
    road, n = scene.road, scene.num_lanes
    accel, end = road.event_s - road.event_length, lane_end(road, n, RAMP_LANE)

    def point(s: float) -> list[float]:
        x, y, _ = to_env_frame(n, x0, *to_plane(road, s, lane_offset(road, n, RAMP_LANE, s)))
        return [x, y]

    # forbidden, as merge-v0's: main-road traffic never changes onto it (nor onto the ramp)
    ramp = LanePiece(("r", "0", 0), s_start, accel, 1.0 / math.cos(RAMP_ANGLE), RAMP_ANGLE)
    out.add(RAMP_LANE, ramp, StraightLane(point(s_start), point(accel), width=LANE_WIDTH, forbidden=True,
                                          line_types=(LineType.CONTINUOUS_LINE, LineType.CONTINUOUS_LINE),
                                          speed_limit=scene.speed_limit))
    acc = LanePiece(("0", "1", n), accel, end)
    out.add(RAMP_LANE, acc, StraightLane(point(accel), point(end), width=LANE_WIDTH, forbidden=True,
                                         line_types=(LineType.STRIPED, LineType.CONTINUOUS_LINE),
                                         speed_limit=scene.speed_limit))
    out.lane_ends.append(acc.index)


def _curve_road(scene: Scene, x0: float, road_length: float) -> SceneRoad:
    """Concentric arcs of the scene's curvature cut into pieces of at most ARC_PIECE_TURN, then a straight lead-out."""
    road, n, k = scene.road, scene.num_lanes, scene.road.curvature
    arc_max = ARC_TURN / abs(k)  # metres of reference line
    # The road starts ego_x behind the ego as on a straight road, unless that would leave the window's
    # front off the arc (only for a far-back ego_x on a tight curve): then it starts later.
    s_start = max(-x0, WINDOW_AHEAD + EVENT_MARGIN - arc_max)
    arc_length = min(road_length, arc_max)
    count = max(1, math.ceil(arc_length * abs(k) / ARC_PIECE_TURN - 1e-9))
    cuts = [s_start + arc_length * i / count for i in range(count + 1)]
    # The bend's centre lies 1 / k left of the reference line (right for k < 0) at every s.
    cx, cy, _ = to_env_frame(n, x0, *to_plane(road, 0.0, 1.0 / k))
    out = SceneRoad(RoadNetwork(), {}, [])
    for p, (s0, s1) in enumerate(itertools.pairwise(cuts)):
        for hw_id in range(n):
            lane = n - 1 - hw_id
            offset = lane_offset(road, n, lane, s0)
            x, y, _ = to_env_frame(n, x0, *to_plane(road, s0, offset))
            phase = math.atan2(y - cy, x - cx)
            # y is mirrored, so the angle about the centre turns by -k per metre of reference line;
            # a right bend (k < 0) is clockwise in highway-env's terms (angle increasing)
            out.add(lane, LanePiece((str(p), str(p + 1), hw_id), s0, s1, lane_length_factor(road, offset)),
                    CircularLane([cx, cy], abs(1.0 / k - offset), phase, phase - k * (s1 - s0), clockwise=k < 0,
                                 width=LANE_WIDTH, line_types=_line_types(hw_id, n), speed_limit=scene.speed_limit))
    s_arc, s_end = cuts[-1], s_start + road_length
    if s_end > s_arc:  # the tangent lead-out: the rest of the road, in the arc's last direction
        for hw_id in range(n):
            lane = n - 1 - hw_id
            x, y, heading = to_env_frame(n, x0, *to_plane(road, s_arc, lane_offset(road, n, lane, s_arc)))
            far = [x + (s_end - s_arc) * math.cos(heading), y + (s_end - s_arc) * math.sin(heading)]
            out.add(lane, LanePiece((str(count), str(count + 1), hw_id), s_arc, s_end),
                    StraightLane([x, y], far, width=LANE_WIDTH, line_types=_line_types(hw_id, n),
                                 speed_limit=scene.speed_limit))
    return out


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
        self.scene_road: SceneRoad | None = None  # built by _create_road
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
        out = super().reset(seed=seed, options=options)
        if self.scene.road.kind == "curve":
            # The arc is cut into edges only because a CircularLane cannot hold more: drivers must see
            # their leader across a cut (the arc's edges share lane ids, which this search relies on).
            # AbstractEnv.reset sets the flag from the config after _reset, hence here.
            self.road.neighbour_vehicles_connected_lanes = True
        return out

    def _create_road(self) -> None:
        """The scene's road (:func:`build_road`), highway-env lane 0 on the left, plus an obstacle past each lane end."""
        built = build_road(self.scene, float(self.config["ego_x"]), float(self.config["road_length"]))
        self.scene_road = built
        self.road = Road(network=built.network, np_random=self.np_random, record_history=self.config["show_trajectories"],
                         neighbour_vehicles_connected_lanes=self.config["neighbour_vehicles_connected_lanes"])
        for index in built.lane_ends:
            # as merge-v0 marks its ramp's end; placed so that the lane stays free up to its very end
            lane = built.network.get_lane(index)
            self.road.objects.append(Obstacle(self.road, lane.position(lane.length + Obstacle.LENGTH / 2, 0.0),
                                              lane.heading_at(lane.length)))

    def _place(self, vehicle_class: type, lane: int, s: float, d: float, speed: float) -> Vehicle:
        """A ``vehicle_class`` vehicle at the scene's ``(lane, s, d)``, heading along its lane, pinned to it."""
        piece = self.scene_road.piece(lane, s)
        geometry = self.road.network.get_lane(piece.index)
        longitudinal, lateral = piece.coordinates(s, d)
        vehicle = vehicle_class(self.road, geometry.position(longitudinal, lateral), geometry.heading_at(longitudinal), speed)
        _pin_lane(vehicle, self.road, piece.index)
        return vehicle

    def _create_vehicles(self) -> None:
        """The ego (the action type's vehicle class) and one ``other_vehicles_type`` vehicle per agent."""
        scene, road = self.scene, self.road
        self.config["lanes_count"] = scene.num_lanes  # for anything that still reads it

        ego = self._place(self.action_type.vehicle_class, scene.ego_lane, 0.0, 0.0, scene.ego_speed)
        _set_size(ego, EGO_LENGTH, EGO_WIDTH)
        self.controlled_vehicles = [ego]
        road.vehicles.append(ego)

        other_type = utils.class_from_path(self.config["other_vehicles_type"])
        self.agent_vehicles = []
        for agent in scene.agents:
            vehicle = self._place(other_type, agent.lane, agent.s, agent.d, agent.speed)
            _set_size(vehicle, agent.length, agent.width)
            if self.config["randomize_behavior"] and hasattr(vehicle, "randomize_behavior"):
                vehicle.randomize_behavior()
            self.agent_vehicles.append(vehicle)
            road.vehicles.append(vehicle)

    def _rewards(self, action: Any) -> dict[str, float]:
        """highway-v0's reward terms; off a straight road, measured against the road rather than the x axis.

        highway-v0 takes the speed along +x as the forward speed, which on a curve falls to zero after a
        quarter turn: here it is the speed along the ego's lane. Its right-lane term divides by the lane
        count of the ego's edge, which on a merge includes the acceleration lane, not a lane of the road
        the ego can drive on: here by the scene's lanes. On a straight road both are highway-v0's values.
        """
        rewards = super()._rewards(action)
        if self.scene.road.kind == "straight":
            return rewards
        ego = self.vehicle
        lane = ego.target_lane_index[2] if isinstance(ego, ControlledVehicle) else ego.lane_index[2]
        rewards["right_lane_reward"] = lane / max(self.scene.num_lanes - 1, 1)
        along = ego.lane.heading_at(ego.lane.local_coordinates(ego.position)[0])
        forward_speed = ego.speed * math.cos(ego.heading - along)
        rewards["high_speed_reward"] = float(np.clip(utils.lmap(forward_speed, self.config["reward_speed_range"], [0, 1]), 0, 1))
        return rewards

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

__all__ = ["ARC_PIECE_TURN", "ARC_TURN", "EGO_X", "ENV_ID", "EVENT_MARGIN", "INSTALL_HINT", "ROAD_LENGTH", "LanePiece",
           "SceneEnv", "SceneRoad", "as_scene", "build_road", "highway_lane_id", "register_scene_env", "to_env_frame"]
