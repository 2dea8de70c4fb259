"""Baseline scene samplers: the floors a learned scene generator has to beat.

Both share one interface, ``sample(traffic, num_lanes, seed, scene_id=0, road="straight") -> Scene``,
a pure function of its arguments (``road``: a road kind, whose parameters the sampler draws, or a
full :class:`~aigc_synth.scenes.format.Road`) (a numpy ``Generator(seed)`` inside), and use SUMO's vehicle catalogue
(:data:`~aigc_synth.scenes.sumo.VEHICLE_TYPES`), so what differs from the ground truth is *where*
vehicles are put, not what they are. Neither needs SUMO installed.

* :class:`RandomSceneSampler` - what highway-env's ``create_random`` amounts to: a count from the
  traffic level's density band, positions uniform in the window and lanes uniform among those that
  exist there (the on-ramp included), speeds uniform, vehicles on their lane centres; road
  parameters uniform over the SUMO ground truth's ranges. No notion of gaps, so dense scenes overlap.
* :class:`MarginalSceneSampler` - fitted on scenes: per road kind and traffic level, the empirical distribution of
  the agent count and independent marginals of every agent attribute (lane, s, d, speed relative
  to the limit, vehicle type), with no context between agents (a position on a lane that has ended
  there is drawn again), and the road parameters of each kind. Right statistics one at a time,
  wrong joint structure.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Protocol, Sequence

import numpy as np

from aigc_synth.scenes.format import (
    ROAD_KINDS,
    SPEED_LIMITS,
    TRAFFIC_DENSITY,
    TRAFFIC_LEVELS,
    WINDOW_AHEAD,
    WINDOW_BEHIND,
    Agent,
    Road,
    Scene,
    SceneError,
    lane_exists,
    road_kind_problems,
)
from aigc_synth.scenes.road import lanes_at, road_at, stratified_roads
from aigc_synth.scenes.sumo import TRUCK_SHARE, VEHICLE_TYPES
from aigc_synth.scenes.sumo_roads import uniform_road

QUANTILES = 201  # points of each fitted continuous marginal's quantile function
MAX_REDRAWS = 20  # draws of a position before an agent on a lane that ends is left out


class SceneSampler(Protocol):
    """Anything that turns (traffic level, lane count, seed) into a scene."""

    model_id: str

    def sample(self, traffic: str, num_lanes: int, seed: int, scene_id: int = 0, road: str | Road = "straight") -> Scene: ...


def _check(traffic: str, num_lanes: int, road: str | Road) -> None:
    if traffic not in TRAFFIC_LEVELS:
        raise SceneError(f"unknown traffic level {traffic!r}; allowed: {list(TRAFFIC_LEVELS)}")
    if num_lanes < 1:
        raise SceneError(f"num_lanes must be >= 1, got {num_lanes}")
    problems = road.problems(num_lanes) if isinstance(road, Road) else road_kind_problems(road, num_lanes)
    if problems:
        raise SceneError(problems[0])


def _vehicle(rng: np.random.Generator, truck_share: float) -> tuple[str, float, float]:
    kind = "truck" if rng.random() < truck_share else "car"
    group = [t for t in VEHICLE_TYPES if t.kind == kind]
    t = group[rng.choice(len(group), p=[g.share for g in group])]
    return t.kind, t.length, t.width


@dataclass(frozen=True)
class RandomSceneSampler:
    """Uniform random placement (the naive baseline), see the module docstring.

    ``speed_range`` is relative to the speed limit (drawn from ``SPEED_LIMITS``); the truck share
    is the middle of the SUMO runs' range.
    """

    speed_range: tuple[float, float] = (0.5, 1.0)
    truck_share: float = sum(TRUCK_SHARE) / 2
    model_id: ClassVar[str] = "random"

    def sample(self, traffic: str, num_lanes: int, seed: int, scene_id: int = 0, road: str | Road = "straight") -> Scene:
        """One scene; the same arguments always give the same scene."""
        _check(traffic, num_lanes, road)
        rng = np.random.default_rng(seed)
        limit = SPEED_LIMITS[rng.integers(len(SPEED_LIMITS))]
        density = rng.uniform(*TRAFFIC_DENSITY[traffic])
        count = int(round(density * (WINDOW_BEHIND + WINDOW_AHEAD) / 1000.0 * num_lanes))
        # a straight road draws nothing here, so straight scenes are what they were before road kinds
        road = road if isinstance(road, Road) else uniform_road(road, rng)
        agents = []
        for _ in range(count):
            kind, length, width = _vehicle(rng, self.truck_share)
            if road.kind == "straight":
                lane, s = int(rng.integers(num_lanes)), rng.uniform(-WINDOW_BEHIND, WINDOW_AHEAD)
            else:
                s = rng.uniform(-WINDOW_BEHIND, WINDOW_AHEAD)
                there = lanes_at(road, num_lanes, s)
                lane = there[rng.integers(len(there))]
            agents.append(Agent(lane, s, 0.0, limit * rng.uniform(*self.speed_range), length, width, kind))
        ego_lanes = [k for k in range(num_lanes) if lane_exists(road, num_lanes, k, 0.0)]
        return Scene(scene_id, seed, traffic, num_lanes, limit, ego_lanes[rng.integers(len(ego_lanes))],
                     limit * rng.uniform(*self.speed_range), tuple(agents), self.model_id, road)


def _hist(values: Sequence) -> dict[str, list]:
    uniq, counts = np.unique(np.asarray(values), return_counts=True)
    return {"values": uniq.tolist(), "weights": counts.tolist()}


def _quantiles(values: Sequence[float]) -> list[float]:
    return np.quantile(np.asarray(values, dtype=float), np.linspace(0, 1, QUANTILES)).tolist() if len(values) else []


@dataclass(frozen=True)
class MarginalSceneSampler:
    """Independent empirical marginals per road kind and traffic level (fit with :meth:`fit`).

    ``tables[key]`` (key: the traffic level on straight roads, ``"<road kind>/<traffic>"`` on the
    others) holds plain containers only (see :meth:`to_dict`): ``counts`` and
    ``lanes`` / ``ego_lanes`` per lane count (``{"3": ...}``), histograms of speed limits and of
    vehicle types ``[kind, length, width]``, and quantile functions (``QUANTILES`` points) of
    ``s``, ``d``, ``speed_ratio`` and ``ego_speed_ratio`` (speed / speed limit, so one fit serves
    both limits). ``roads[kind]`` are the fitted roads of each non-straight kind
    (:func:`~aigc_synth.scenes.road.stratified_roads`, ``QUANTILES`` rows).
    """

    tables: Mapping[str, Mapping[str, Any]]
    roads: Mapping[str, Sequence[Sequence[float]]] = field(default_factory=dict)
    model_id: ClassVar[str] = "marginal"

    @staticmethod
    def table_key(road_kind: str, traffic: str) -> str:
        return traffic if road_kind == "straight" else f"{road_kind}/{traffic}"

    @classmethod
    def fit(cls, scenes: Sequence[Scene]) -> "MarginalSceneSampler":
        """Fit on scenes (e.g. SUMO ground truth); every (road kind, traffic level) present gets a table."""
        tables: dict[str, dict[str, Any]] = {}
        cells = [(r, t) for r in ROAD_KINDS for t in TRAFFIC_LEVELS]
        for road_kind, traffic in cells:
            group = [sc for sc in scenes if sc.traffic == traffic and sc.road.kind == road_kind]
            if not group:
                continue
            by_lanes: dict[int, list[Scene]] = {}
            for sc in group:
                by_lanes.setdefault(sc.num_lanes, []).append(sc)
            agents = [(sc, a) for sc in group for a in sc.agents]
            vehicles = Counter((a.kind, a.length, a.width) for _, a in agents)
            tables[cls.table_key(road_kind, traffic)] = {
                "scenes": len(group),
                "counts": {str(n): _hist([len(sc.agents) for sc in scs]) for n, scs in sorted(by_lanes.items())},
                "lanes": {str(n): _hist([a.lane for sc in scs for a in sc.agents]) for n, scs in sorted(by_lanes.items())},
                "ego_lanes": {str(n): _hist([sc.ego_lane for sc in scs]) for n, scs in sorted(by_lanes.items())},
                "speed_limits": _hist([sc.speed_limit for sc in group]),
                "vehicles": {"values": [list(v) for v in sorted(vehicles)], "weights": [vehicles[v] for v in sorted(vehicles)]},
                "s": _quantiles([a.s for _, a in agents]),
                "d": _quantiles([a.d for _, a in agents]),
                "speed_ratio": _quantiles([a.speed / sc.speed_limit for sc, a in agents]),
                "ego_speed_ratio": _quantiles([sc.ego_speed / sc.speed_limit for sc in group]),
            }
        if not tables:
            raise SceneError("cannot fit a MarginalSceneSampler on no scenes")
        all_roads = [sc.road for sc in scenes]
        roads = {k: [list(r) for r in stratified_roads(all_roads, k, QUANTILES)] for k in ROAD_KINDS if k != "straight"}
        return cls(tables, {k: v for k, v in roads.items() if v})

    def to_dict(self) -> dict[str, Any]:
        """Plain dicts / lists / numbers / strings (JSON-able, loadable with torch weights_only)."""
        return {"model_id": self.model_id, "quantiles": QUANTILES, "tables": {k: dict(v) for k, v in self.tables.items()},
                "roads": {k: [list(r) for r in v] for k, v in self.roads.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "MarginalSceneSampler":
        """Inverse of :meth:`to_dict`."""
        if data.get("model_id") != cls.model_id or data.get("quantiles") != QUANTILES or not data.get("tables"):
            raise SceneError(f"not a {cls.model_id} sampler with {QUANTILES}-point marginals: keys {sorted(data)}")
        return cls({k: dict(v) for k, v in data["tables"].items()}, {k: list(v) for k, v in data.get("roads", {}).items()})

    def sample(self, traffic: str, num_lanes: int, seed: int, scene_id: int = 0, road: str | Road = "straight") -> Scene:
        """One scene; the same arguments always give the same scene."""
        _check(traffic, num_lanes, road)
        road_kind = road.kind if isinstance(road, Road) else road
        table = self.tables.get(self.table_key(road_kind, traffic))
        if table is None or str(num_lanes) not in table["counts"]:
            fitted = {t: sorted(int(n) for n in tab["counts"]) for t, tab in self.tables.items()}
            raise SceneError(f"not fitted for {traffic} traffic on {num_lanes} lanes ({road_kind} road); fitted: {fitted}")
        rng = np.random.default_rng(seed)

        def draw(hist: Mapping[str, list]) -> Any:
            w = np.asarray(hist["weights"], dtype=float)
            return hist["values"][rng.choice(len(w), p=w / w.sum())]

        def quantile(name: str) -> float:
            return float(np.interp(rng.random(), np.linspace(0, 1, QUANTILES), table[name]))

        limit = draw(table["speed_limits"])
        # a straight road draws nothing here, so straight scenes are what they were before road kinds
        if not isinstance(road, Road):
            road = Road() if road_kind == "straight" else road_at(road_kind, self.roads[road_kind], rng.random())
        agents = []
        for _ in range(int(draw(table["counts"][str(num_lanes)]))):
            kind, length, width = draw(table["vehicles"])
            s = min(max(quantile("s"), -WINDOW_BEHIND), WINDOW_AHEAD)
            lane = draw(table["lanes"][str(num_lanes)])
            for _retry in range(MAX_REDRAWS):  # a position past the end of its lane: draw it again
                if lane_exists(road, num_lanes, lane, s):
                    break
                s = min(max(quantile("s"), -WINDOW_BEHIND), WINDOW_AHEAD)
            else:
                continue  # this lane hardly exists in the window: leave the agent out
            agents.append(Agent(lane, s, quantile("d"), max(0.0, limit * quantile("speed_ratio")), length, width, kind))
        ego_lane = draw(table["ego_lanes"][str(num_lanes)])
        for _retry in range(MAX_REDRAWS):
            if lane_exists(road, num_lanes, ego_lane, 0.0):
                break
            ego_lane = draw(table["ego_lanes"][str(num_lanes)])
        else:
            ego_lane = 0
        return Scene(scene_id, seed, traffic, num_lanes, limit, ego_lane,
                     max(0.0, limit * quantile("ego_speed_ratio")), tuple(agents), self.model_id, road)


__all__ = ["MarginalSceneSampler", "QUANTILES", "RandomSceneSampler", "SceneSampler"]
