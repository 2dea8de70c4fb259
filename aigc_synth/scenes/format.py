"""The traffic-scene contract (v2): a one-direction highway snapshot around an ego vehicle, on one of
four road kinds.

Every scene source (SUMO ground truth, the baselines, later the learned generators) produces
:class:`Scene` objects, every consumer (metrics, replay, exporters, Parquet shards) reads them; this
module is the only place that defines what a scene is.

Geometry and units
    * The road is one direction, ``num_lanes`` lanes of :data:`LANE_WIDTH` metres, described by
      :class:`Road` (straight, a constant-radius curve, an on-ramp merge, or a lane drop).
      Lane ``0`` is the **rightmost** lane (SUMO's convention), lane ``num_lanes - 1`` the leftmost;
      on a merge road the on-ramp and its acceleration lane are lane :data:`RAMP_LANE` (-1).
    * Positions are lane coordinates along the road's **reference line**, the right edge of lane 0:
      ``s`` is arc length along it (on a curve the lanes' own lengths differ; every ``s`` is
      measured on the reference line), lane ``k``'s centre lies ``(k + 0.5) * LANE_WIDTH`` to its
      left. :mod:`aigc_synth.scenes.road` turns lane coordinates into plane coordinates.
    * The ego is a car of :data:`EGO_LENGTH` x :data:`EGO_WIDTH` metres on ``ego_lane``, centred on
      its lane, at longitudinal position 0.
    * ``Agent.s`` is the agent's centre along the reference line relative to the ego's centre, in
      metres, positive ahead. Only agents with ``-WINDOW_BEHIND <= s <= WINDOW_AHEAD`` belong to a scene.
    * ``Agent.d`` is the agent's lateral offset from its lane centre in metres, positive to the
      left (SUMO and OpenDRIVE convention); non-zero only while a vehicle changes lanes.
    * Speeds are in m/s, sizes in metres.

Canonical form
    A :class:`Scene` normalises itself on construction, so two scenes with the same content are
    equal and serialise to identical bytes: every float is rounded to :data:`PRECISION` decimals,
    integers are plain ``int``, and ``agents`` becomes a tuple sorted by ``(lane, s)`` ascending
    (ties broken by the remaining fields), i.e. lane by lane from the right, back to front.

Versions
    v1 files (no ``road`` column, written before road kinds existed) read as ``straight`` roads;
    :func:`scenes_to_table` always writes v2.

Traffic levels
    ``traffic`` names a density band in vehicles per km per lane (:data:`TRAFFIC_DENSITY`); the
    generators draw a density from the band, so the expected number of agents in a window is
    ``density * (WINDOW_BEHIND + WINDOW_AHEAD) / 1000 * num_lanes`` (minus the ego).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Iterable, Sequence

import pyarrow as pa

from aigc_synth.errors import AigcSynthError

TRAFFIC_LEVELS: tuple[str, ...] = ("light", "moderate", "heavy")
# Density band of each traffic level, vehicles / km / lane (free flow, near capacity, congested).
TRAFFIC_DENSITY: dict[str, tuple[float, float]] = {"light": (5.0, 12.0), "moderate": (15.0, 25.0), "heavy": (30.0, 45.0)}
LANE_COUNTS: tuple[int, ...] = (2, 3, 4)
# Speed limits (m/s) the bundled generators draw from: 100 km/h and 120 km/h.
SPEED_LIMITS: tuple[float, ...] = (27.78, 33.33)
WINDOW_BEHIND = 50.0
WINDOW_AHEAD = 150.0
EGO_LENGTH = 5.0  # SUMO's default passenger car
EGO_WIDTH = 1.8
LANE_WIDTH = 3.2  # SUMO's default lane width
AGENT_KINDS: tuple[str, ...] = ("car", "truck")
PRECISION = 3  # decimals kept for every float, so equal scenes give equal bytes
EGO_INDEX = -1  # stands for the ego in :func:`overlap_pairs`
#: ``job.sampler`` of scene jobs: the scene kind's name (:mod:`aigc_synth.sampling.scene`), in their manifests.
SCENE_SAMPLER = "scenes"
#: Road kinds of the contract, in this order wherever a table or plan lists them.
ROAD_KINDS: tuple[str, ...] = ("straight", "curve", "merge", "lane_drop")
#: ``Agent.lane`` of a vehicle on a merge road's on-ramp or acceleration lane (right of lane 0).
RAMP_LANE = -1
#: Curve radii the bundled SUMO ground truth draws from, metres (|curvature| from 1/1500 to 1/300 per metre).
CURVE_RADIUS_RANGE: tuple[float, float] = (300.0, 1500.0)
#: Angle at which a merge road's on-ramp meets the acceleration lane, radians (about 5.7 degrees).
RAMP_ANGLE = 0.1
SCENE_CONTRACT_VERSION = 2


class SceneError(AigcSynthError, ValueError):
    """A scene (or a request to build one) is invalid, or a simulator is missing (CLI exit 2)."""


def _r(x: float) -> float:
    return round(float(x), PRECISION) + 0.0  # + 0.0 turns -0.0 into 0.0 (same bytes for equal values)


@dataclass(frozen=True, order=True)
class Agent:
    """One vehicle around the ego. Field order is the sort order: ``(lane, s, ...)``."""

    lane: int
    s: float
    d: float
    speed: float
    length: float
    width: float
    kind: str

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise through the back door, once, at construction
        set_(self, "lane", int(self.lane))
        for name in ("s", "d", "speed", "length", "width"):
            set_(self, name, _r(getattr(self, name)))
        set_(self, "kind", str(self.kind))


@dataclass(frozen=True)
class Road:
    """The road a scene stands on, in the scene's lane coordinates (``s`` relative to the ego).

    ``kind`` is one of :data:`ROAD_KINDS`; the other fields are zero unless the kind uses them:

    * ``straight``: nothing else.
    * ``curve``: ``curvature`` of the reference line, 1/metres, positive when the road bends left
      (constant over the whole window).
    * ``merge``: an on-ramp joins from the right. Its acceleration lane (lane :data:`RAMP_LANE`)
      runs parallel to lane 0 from ``event_s - event_length`` to ``event_s``, where it ends;
      before that the ramp approaches at :data:`RAMP_ANGLE`, so a ramp vehicle at ``s`` lies
      ``(event_s - event_length - s) * tan(RAMP_ANGLE)`` further right than the acceleration lane.
    * ``lane_drop``: the leftmost lane (``num_lanes - 1``) ends at ``event_s``; beyond it the road
      has ``num_lanes - 1`` lanes.
    """

    kind: str = "straight"
    curvature: float = 0.0
    event_s: float = 0.0
    event_length: float = 0.0

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "kind", str(self.kind))
        # curvature keeps more decimals than positions: 1/1500 m is 0.000667 per metre
        set_(self, "curvature", round(float(self.curvature), 7) + 0.0)
        set_(self, "event_s", _r(self.event_s))
        set_(self, "event_length", _r(self.event_length))

    def problems(self, num_lanes: int) -> list[str]:
        """Human-readable problems of this road for a scene of ``num_lanes`` lanes (empty when valid)."""
        out = road_kind_problems(self.kind, num_lanes)
        if self.kind not in ROAD_KINDS:
            return out
        if not all(math.isfinite(v) for v in (self.curvature, self.event_s, self.event_length)):
            return [f"road has a non-finite value: {self}"]
        used = {"straight": (), "curve": ("curvature",), "merge": ("event_s", "event_length"), "lane_drop": ("event_s",)}[self.kind]
        for name in ("curvature", "event_s", "event_length"):
            if name not in used and getattr(self, name) != 0:
                out.append(f"a {self.kind} road has no {name} (got {getattr(self, name)})")
        if self.kind == "curve" and not 0 < abs(self.curvature) <= 1 / 100:
            out.append(f"curve curvature must be non-zero with a radius of at least 100 m, got {self.curvature}")
        if self.kind == "merge" and self.event_length <= 0:
            out.append(f"a merge road needs an acceleration lane (event_length > 0), got {self.event_length}")
        return out


def road_kind_problems(kind: str, num_lanes: int) -> list[str]:
    """What is wrong with asking for a ``kind`` road of ``num_lanes`` lanes, whatever its parameters."""
    if kind not in ROAD_KINDS:
        return [f"unknown road kind {kind!r}; allowed: {list(ROAD_KINDS)}"]
    if kind == "lane_drop" and num_lanes < 2:
        return [f"a lane drop needs at least 2 lanes, got {num_lanes}"]
    return []


STRAIGHT_ROAD = Road()
ROAD_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Road))


@dataclass(frozen=True)
class Scene:
    """A highway snapshot: road, ego state and the agents inside the window, in canonical order.

    ``seed`` is the random seed the scene was generated from (for SUMO scenes the simulation run's
    seed, shared by the scenes of that run) and ``model_id`` names the generator
    (``"sumo-1.28.0"``, ``"random"``, ``"marginal"``, ...). ``agents`` may be given as any iterable
    of :class:`Agent` (or of dicts of its fields); it is stored as a tuple in canonical order.
    ``road`` (a :class:`Road` or a dict of its fields) defaults to a straight road.
    """

    scene_id: int
    seed: int
    traffic: str
    num_lanes: int
    speed_limit: float
    ego_lane: int
    ego_speed: float
    agents: tuple[Agent, ...]
    model_id: str
    road: Road = STRAIGHT_ROAD

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "road", self.road if isinstance(self.road, Road) else Road(**self.road))
        for name in ("scene_id", "seed", "num_lanes", "ego_lane"):
            set_(self, name, int(getattr(self, name)))
        set_(self, "speed_limit", _r(self.speed_limit))
        set_(self, "ego_speed", _r(self.ego_speed))
        set_(self, "traffic", str(self.traffic))
        set_(self, "model_id", str(self.model_id))
        set_(self, "agents", tuple(sorted(a if isinstance(a, Agent) else Agent(**a) for a in self.agents)))


def lane_exists(road: Road, num_lanes: int, lane: int, s: float) -> bool:
    """Whether lane ``lane`` exists at ``s`` on ``road`` (a vehicle's centre must lie on an existing lane).

    The on-ramp (:data:`RAMP_LANE`) of a merge road exists up to ``event_s``, where its acceleration
    lane ends; a lane drop's leftmost lane exists up to ``event_s``; every other lane everywhere.
    """
    return lowest_lane(road) <= lane < num_lanes and s <= lane_end(road, num_lanes, lane)


def lowest_lane(road: Road) -> int:
    """The rightmost lane index a scene on ``road`` can use: :data:`RAMP_LANE` on a merge road, else 0."""
    return RAMP_LANE if road.kind == "merge" else 0


def lane_end(road: Road, num_lanes: int, lane: int) -> float:
    """Where lane ``lane`` ends on ``road`` (``s``, metres from the ego; ``inf`` for a lane that does
    not end): a merge road's on-ramp and a lane drop's leftmost lane end at ``event_s``."""
    if (road.kind == "merge" and lane == RAMP_LANE) or (road.kind == "lane_drop" and lane == num_lanes - 1):
        return road.event_s
    return math.inf


AGENT_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Agent))
SCENE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Scene))


def scene_arrow_schema() -> pa.Schema:
    """The Arrow/Parquet schema of a table of scenes (one row per scene, agents as a list column, the
    road as a struct column; v2)."""

    def f(name: str, typ: pa.DataType) -> pa.Field:
        return pa.field(name, typ, nullable=False)

    agent = pa.struct([
        f("lane", pa.int32()), f("s", pa.float64()), f("d", pa.float64()), f("speed", pa.float64()),
        f("length", pa.float64()), f("width", pa.float64()), f("kind", pa.string()),
    ])
    return pa.schema([
        f("scene_id", pa.int64()), f("seed", pa.int64()), f("traffic", pa.string()), f("num_lanes", pa.int32()),
        f("speed_limit", pa.float64()), f("ego_lane", pa.int32()), f("ego_speed", pa.float64()),
        f("agents", pa.list_(f("item", agent))), f("model_id", pa.string()),
        f("road", pa.struct([f("kind", pa.string()), f("curvature", pa.float64()), f("event_s", pa.float64()),
                             f("event_length", pa.float64())])),
    ], metadata={b"aigc_synth.scene_contract": str(SCENE_CONTRACT_VERSION).encode()})


def scenes_to_table(scenes: Iterable[Scene]) -> pa.Table:
    """Scenes as one Arrow table with :func:`scene_arrow_schema` (row order = input order)."""
    scenes = list(scenes)
    cols: dict[str, list] = {name: [getattr(sc, name) for sc in scenes] for name in SCENE_FIELDS}
    cols["agents"] = [[{k: getattr(a, k) for k in AGENT_FIELDS} for a in sc.agents] for sc in scenes]
    cols["road"] = [{k: getattr(sc.road, k) for k in ROAD_FIELDS} for sc in scenes]
    return pa.Table.from_pydict(cols, schema=scene_arrow_schema())


def table_to_scenes(table: pa.Table) -> list[Scene]:
    """Inverse of :func:`scenes_to_table` (exact round trip).

    A table with the contract's columns but looser types (nullable fields from a reader that drops
    the not-null flags, int64 lanes from type inference) is cast to the schema; a v1 table (every
    column but ``road``) reads as straight roads; any other table raises SceneError.
    """
    expected = scene_arrow_schema()
    try:
        if table.schema.names == expected.names[:-1]:  # v1: before road kinds
            road = {k: getattr(STRAIGHT_ROAD, k) for k in ROAD_FIELDS}
            table = table.append_column("road", pa.array([road] * table.num_rows, expected.field("road").type))
        if table.schema.names != expected.names:
            raise ValueError(f"columns {table.schema.names} != {expected.names}")
        table = table.cast(expected)
    except (ValueError, TypeError, NotImplementedError) as exc:  # pyarrow's errors derive from these
        raise SceneError(f"not a scene table: {exc}") from exc
    return [Scene(**row) for row in table.to_pylist()]


def overlap_pairs(scene: Scene) -> list[tuple[int, int]]:
    """Pairs of vehicles that overlap longitudinally in the same lane, as agent indices ``(i, j)``.

    Two vehicles overlap when ``|s_i - s_j| < (length_i + length_j) / 2``; lateral offsets are
    ignored (each vehicle occupies its own lane). The ego (at ``s = 0`` on ``ego_lane``, length
    :data:`EGO_LENGTH`) is index :data:`EGO_INDEX` (-1). Pairs come sorted, with ``i < j``.
    """
    lanes: dict[int, list[tuple[float, float, int]]] = {}
    lanes.setdefault(scene.ego_lane, []).append((0.0, EGO_LENGTH, EGO_INDEX))
    for i, a in enumerate(scene.agents):
        lanes.setdefault(a.lane, []).append((a.s, a.length, i))
    longest = max([EGO_LENGTH] + [a.length for a in scene.agents])
    pairs = []
    for vehicles in lanes.values():
        vehicles.sort()
        for k, (s_i, len_i, i) in enumerate(vehicles):
            for s_j, len_j, j in vehicles[k + 1:]:
                if s_j - s_i >= (len_i + longest) / 2:  # sorted by s: nothing further can overlap
                    break
                if s_j - s_i < (len_i + len_j) / 2:
                    pairs.append((min(i, j), max(i, j)))
    return sorted(pairs)


def _name(i: int) -> str:
    return "ego" if i == EGO_INDEX else f"agent {i}"


def validate_scene(scene: Scene, *, check_overlaps: bool = True) -> list[str]:
    """Human-readable problems with ``scene`` (empty when it satisfies the contract).

    ``check_overlaps=False`` skips the overlap test (for consumers that measure overlaps, e.g. replay).
    """
    problems = []
    if scene.traffic not in TRAFFIC_LEVELS:
        problems.append(f"unknown traffic level {scene.traffic!r}; allowed: {list(TRAFFIC_LEVELS)}")
    if scene.num_lanes < 1:
        problems.append(f"num_lanes must be >= 1, got {scene.num_lanes}")
    if not (math.isfinite(scene.speed_limit) and scene.speed_limit > 0):
        problems.append(f"speed_limit must be a positive number, got {scene.speed_limit}")
    if not 0 <= scene.ego_lane < scene.num_lanes:
        problems.append(f"ego lane {scene.ego_lane} is outside [0, {scene.num_lanes})")
    road_problems = scene.road.problems(scene.num_lanes)
    problems += road_problems
    if not road_problems and 0 <= scene.ego_lane < scene.num_lanes and not lane_exists(scene.road, scene.num_lanes, scene.ego_lane, 0.0):
        problems.append(f"the ego's lane {scene.ego_lane} ends before the ego on this {scene.road.kind} road")
    lowest = lowest_lane(scene.road)
    if not (math.isfinite(scene.ego_speed) and scene.ego_speed >= 0):
        problems.append(f"ego speed must be >= 0, got {scene.ego_speed}")
    for i, a in enumerate(scene.agents):
        if not all(math.isfinite(getattr(a, k)) for k in ("s", "d", "speed", "length", "width")):
            problems.append(f"agent {i} has a non-finite value: {a}")
            continue
        if not lowest <= a.lane < scene.num_lanes:
            problems.append(f"agent {i} lane {a.lane} is outside [{lowest}, {scene.num_lanes})")
        elif not road_problems and not lane_exists(scene.road, scene.num_lanes, a.lane, a.s):
            problems.append(f"agent {i} at s={a.s} is on lane {a.lane}, which ends before it on this {scene.road.kind} road")
        if not -WINDOW_BEHIND <= a.s <= WINDOW_AHEAD:
            problems.append(f"agent {i} at s={a.s} is outside the window [{-WINDOW_BEHIND}, {WINDOW_AHEAD}]")
        if abs(a.d) > LANE_WIDTH / 2:
            problems.append(f"agent {i} lateral offset d={a.d} leaves its lane (|d| > {LANE_WIDTH / 2})")
        if a.length <= 0 or a.width <= 0:
            problems.append(f"agent {i} has a non-positive size {a.length} x {a.width}")
        if a.speed < 0:
            problems.append(f"agent {i} has a negative speed {a.speed}")
        if a.kind not in AGENT_KINDS:
            problems.append(f"agent {i} has unknown kind {a.kind!r}; allowed: {list(AGENT_KINDS)}")
    for i, j in overlap_pairs(scene) if check_overlaps else []:
        lane = scene.ego_lane if i == EGO_INDEX else scene.agents[i].lane
        problems.append(f"{_name(i)} and {_name(j)} overlap in lane {lane}")
    return problems


def require_straight(scenes: Iterable[Scene], consumer: str) -> None:
    """Raise SceneError for the first scene whose road is not straight: ``consumer`` (the camera
    renderer and the layout raster built from it) does not draw the other road kinds' geometry yet,
    and a straight road in their place would be silently wrong."""
    for sc in scenes:
        if sc.road.kind != "straight":
            raise SceneError(f"scene {sc.scene_id} is on a {sc.road.kind} road; {consumer} supports straight roads only so far")


def require_valid(scenes: Sequence[Scene]) -> None:
    """Raise SceneError naming the first problem of the first invalid scene (for writers)."""
    for sc in scenes:
        problems = validate_scene(sc)
        if problems:
            raise SceneError(f"scene {sc.scene_id}: {problems[0]}" + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
