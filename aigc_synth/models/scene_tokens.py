"""The token view of a scene for :mod:`aigc_synth.models.scene_ar`: sizes, vectors and the
teacher-forced encoding.

A scene is read lane by lane from the right (a merge road's on-ramp first), back to front, the ego
at its place in its lane, then STOP (see :mod:`.scene_ar`). :class:`LaneState` is what the encoder
and the sampler both track while walking a scene; :func:`encode_scene` turns a scene into the
per-token training arrays. Pure numpy; no network here.
"""

from __future__ import annotations

import math

import numpy as np

from aigc_synth.scenes.format import (
    CURVE_RADIUS_RANGE,
    EGO_LENGTH,
    LANE_WIDTH,
    RAMP_LANE,
    ROAD_KINDS,
    SPEED_LIMITS,
    TRAFFIC_LEVELS,
    WINDOW_AHEAD,
    WINDOW_BEHIND,
    Agent,
    Road,
    Scene,
    lane_end,
    lowest_lane,
)
from aigc_synth.scenes.sumo import MIN_GAP, VEHICLE_TYPES

MAX_LANES = 4  # lanes of the main road (the ego's lanes)
NUM_SLOTS = MAX_LANES + 1  # lane classes: slot 0 is a merge road's on-ramp, slot k + 1 is lane k
STOP = NUM_SLOTS  # lane class that ends the scene
EGO_TYPE = len(VEHICLE_TYPES)  # type class "the ego comes now"
NUM_TYPES = len(VEHICLE_TYPES) + 1
MAX_TOKENS = 96  # vehicles (agents + ego) per scene at most; a heavy 4-lane window holds ~45
WINDOW = WINDOW_BEHIND + WINDOW_AHEAD
# Bumper gap to the vehicle behind (or, for a lane's first vehicle, its centre's distance from the
# window's rear edge): 0.5 m bins up to 50 m, 2 m bins up to the window length.
GAP_EDGES = np.concatenate([np.arange(0.0, 50.0, 0.5), np.arange(50.0, WINDOW + 2.0, 2.0)])
NUM_GAP = len(GAP_EDGES) - 1
SPEED_MAX_RATIO = 1.6  # speed / speed limit
NUM_SPEED = 128
SPEED_EDGES = np.linspace(0.0, SPEED_MAX_RATIO, NUM_SPEED + 1)
# Speed of a lane's later vehicles relative to the vehicle behind (speed ratio minus its ratio): SUMO's
# platoons drive at nearly one speed, so the bins are fine near 0 (0.002 x limit ~ 0.06 m/s) and
# coarse in the tails (0.01 to +-0.2, then 0.05 to +-SPEED_MAX_RATIO).
_DELTA_POS = np.concatenate([np.arange(0.002, 0.04, 0.002), np.arange(0.04, 0.2, 0.01), np.arange(0.2, SPEED_MAX_RATIO + 1e-9, 0.05)])
DELTA_EDGES = np.round(np.concatenate([-_DELTA_POS[::-1], [0.0], _DELTA_POS]), 6)
NUM_DELTA = len(DELTA_EDGES) - 1
# Gap of a lane's later vehicles as a time headway beyond SUMO's standstill gap: (gap - MIN_GAP) / the
# speed of the vehicle behind (at least HEADWAY_SPEED_FLOOR). SUMO's followers keep about their 1 s
# reaction time beyond minGap at every speed, so the target sits at one place whatever the speed, where
# metre bins put it at a speed-dependent bin the head had to learn (too much mass below SUMO's shortest
# headways); bins are 0.01 s wide from 0.8 to 2 s (0.3 m at 30 m/s), coarser in the tails, and reach the
# whole window at the floor speed.
HEADWAY_SPEED_FLOOR = 1.0  # m/s: a standing follower's gap is coded in metres beyond minGap
HEADWAY_EDGES = np.round(np.concatenate([np.arange(-2.6, 0.0, 0.1), np.arange(0.0, 0.8, 0.05), np.arange(0.8, 2.0, 0.01),
                                         np.arange(2.0, 4.0, 0.05), np.arange(4.0, 10.0, 0.25), np.arange(10.0, 30.0, 1.0),
                                         np.arange(30.0, 100.0, 5.0), np.arange(100.0, WINDOW + 26.0, 25.0)]), 6)
NUM_HEADWAY = len(HEADWAY_EDGES) - 1
D_STEP = 0.1  # lateral offsets are kept on a 0.1 m grid (0 exactly for vehicles not changing lanes)
NUM_D = 2 * round((LANE_WIDTH / 2) / D_STEP) + 1
D_CENTRES = (np.arange(NUM_D) - NUM_D // 2) * D_STEP

TYPE_LENGTH = np.array([t.length for t in VEHICLE_TYPES] + [EGO_LENGTH])
_TYPE_OF = {(t.kind, t.length, t.width): k for k, t in enumerate(VEHICLE_TYPES)}

# road: kind one-hot, curvature x the tightest bundled radius (so |x| <= 1), event_s / 100, event_length / 100
ROAD_DIM = len(ROAD_KINDS) + 3
COND_DIM = len(TRAFFIC_LEVELS) + MAX_LANES + ROAD_DIM + 1  # traffic, lane count, road, limit / 30 (last)
EGO_DIM = MAX_LANES + 2  # ego lane one-hot, ego lane across the road, ego speed ratio
TOKEN_DIM = NUM_SLOTS + 1 + NUM_TYPES + 7
LANE_CTX_DIM = NUM_SLOTS + 7
SLOT_DIM = NUM_SLOTS + 9
END_SCALE = 100.0  # m: distances to a lane's end enter the network divided by this, clipped to [-2, 3]


def headway_gap_edges(follower_speed: float) -> np.ndarray:
    """:data:`HEADWAY_EDGES` as bumper gaps (m) behind a vehicle at ``follower_speed`` (m/s)."""
    return MIN_GAP + HEADWAY_EDGES * max(follower_speed, HEADWAY_SPEED_FLOOR)


def bin_index(edges: np.ndarray, x: float) -> int:
    return int(np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2))


def type_index(agent: Agent) -> int:
    """The :data:`VEHICLE_TYPES` index of an agent (nearest length for unknown sizes)."""
    k = _TYPE_OF.get((agent.kind, agent.length, agent.width))
    if k is None:
        k = int(np.argmin(np.abs(TYPE_LENGTH[:-1] - agent.length)))
    return k


# -- the teacher-forced view of a scene ----------------------------------------------------------------
def lane_slot(lane: int) -> int:
    """The lane-choice class of a contract lane (the on-ramp, :data:`RAMP_LANE`, is slot 0)."""
    return lane - RAMP_LANE


def _end_feature(end: float, s: float) -> float:
    return float(np.clip((end - s) / END_SCALE, -2.0, 3.0)) if math.isfinite(end) else 3.0


def road_vector(road: Road) -> np.ndarray:
    v = np.zeros(ROAD_DIM, np.float32)
    v[ROAD_KINDS.index(road.kind)] = 1.0
    v[len(ROAD_KINDS):] = (road.curvature * CURVE_RADIUS_RANGE[0], road.event_s / 100.0, road.event_length / 100.0)
    return v


def condition_vector(traffic: str, num_lanes: int, speed_limit: float, road: Road = Road()) -> np.ndarray:
    v = np.zeros(COND_DIM, np.float32)
    v[TRAFFIC_LEVELS.index(traffic)] = 1.0
    v[len(TRAFFIC_LEVELS) + num_lanes - 1] = 1.0
    v[len(TRAFFIC_LEVELS) + MAX_LANES:-1] = road_vector(road)
    v[-1] = speed_limit / 30.0
    return v


def ego_vector(ego_lane: int, num_lanes: int, ego_ratio: float) -> np.ndarray:
    v = np.zeros(EGO_DIM, np.float32)
    v[ego_lane] = 1.0
    v[MAX_LANES] = ego_lane / max(num_lanes - 1, 1)
    v[MAX_LANES + 1] = ego_ratio
    return v


class LaneState:
    """What the sampler and the teacher-forced encoder both track while walking a scene."""

    def __init__(self, num_lanes: int, ego_lane: int, ego_ratio: float, road: Road = Road()):
        self.num_lanes, self.ego_lane, self.ego_ratio, self.road = num_lanes, ego_lane, ego_ratio, road
        self.lowest = lowest_lane(road)
        self.ends = {k: lane_end(road, num_lanes, k) for k in range(self.lowest, num_lanes)}
        self.lane: int | None = None  # lane of the last token (None: none yet)
        self.prev_s = self.prev_len = self.prev_ratio = 0.0
        self.prev_type = EGO_TYPE  # type of the last vehicle placed (its braking limit bounds the next one's speed)
        self.ego_placed = False
        self.in_lane = 0  # vehicles so far in the current lane
        self.last_token = np.zeros(TOKEN_DIM, np.float32)
        self.last_token[-1] = 1.0  # begin-of-scene flag

    def lane_context(self) -> np.ndarray:
        v = np.zeros(LANE_CTX_DIM, np.float32)
        if self.lane is not None:
            v[lane_slot(self.lane)] = 1.0
        end = self.ends[self.lane] if self.lane is not None else math.inf
        v[NUM_SLOTS:] = (float(self.ego_placed), self.prev_s / 100.0, self.prev_len / 10.0, self.in_lane / 10.0,
                         (self.lane - self.ego_lane) / 3.0 if self.lane is not None else -1.0,
                         float(math.isfinite(end)), _end_feature(end, self.prev_s))
        return v

    def base(self, lane: int) -> tuple[bool, float, float, float]:
        """(first in lane?, centre of the vehicle behind or window start, its length, its speed ratio)."""
        if lane == self.lane:
            return False, self.prev_s, self.prev_len, self.prev_ratio
        return True, -WINDOW_BEHIND, 0.0, 0.0

    def slot(self, lane: int) -> np.ndarray:
        """Features of the chosen lane: where the next vehicle would follow from."""
        first, s0, len0, r0 = self.base(lane)
        v = np.zeros(SLOT_DIM, np.float32)
        v[lane_slot(lane)] = 1.0
        ego_here = lane == self.ego_lane
        end = self.ends[lane]
        v[NUM_SLOTS:] = (float(first), s0 / 100.0, len0 / 10.0, r0, float(ego_here), float(ego_here and not self.ego_placed),
                         (lane - self.ego_lane) / 3.0, float(math.isfinite(end)), _end_feature(end, s0))
        return v

    def s_of(self, lane: int, type_k: int, gap: float) -> float:
        first, s0, len0, _ = self.base(lane)
        return s0 + gap if first else s0 + (len0 + TYPE_LENGTH[type_k]) / 2.0 + gap

    def push(self, lane: int, type_k: int, s: float, ratio: float, d: float, gap: float) -> None:
        first = lane != self.lane
        tok = np.zeros(TOKEN_DIM, np.float32)
        tok[lane_slot(lane)] = 1.0
        tok[NUM_SLOTS + 1 + type_k] = 1.0
        tok[NUM_SLOTS + 1 + NUM_TYPES:] = (s / 100.0, gap / 50.0, ratio, d, TYPE_LENGTH[type_k] / 10.0, float(first), 0.0)
        self.last_token = tok
        self.in_lane = 1 if first else self.in_lane + 1
        self.lane, self.prev_s, self.prev_len, self.prev_ratio = lane, s, float(TYPE_LENGTH[type_k]), ratio
        self.prev_type = type_k
        self.ego_placed |= type_k == EGO_TYPE

    def push_stop(self) -> None:
        tok = np.zeros(TOKEN_DIM, np.float32)
        tok[STOP] = 1.0
        self.last_token = tok


def speed_context(state: LaneState, lane: int, s: float, length: float) -> np.ndarray:
    """Leader known at this point (only ever the ego): exists, bumper gap / 50, ego speed ratio."""
    if lane == state.ego_lane and not state.ego_placed:
        return np.array([1.0, (-s - (length + EGO_LENGTH) / 2.0) / 50.0, state.ego_ratio], np.float32)
    return np.zeros(3, np.float32)


SPEED_CTX_DIM = 3


def encode_scene(scene: Scene) -> dict[str, np.ndarray]:
    """The teacher-forced training view of one scene (all arrays have one row per token, STOP last).

    Keys: ``cond`` (COND_DIM,), ``prefix`` targets ``limit``/``ego_lane``/``ego_speed``, ``ego``
    (EGO_DIM,), and per token ``token_in`` (the previous token), ``lane_ctx``, ``slot``, ``type_in``
    (one-hot + length), ``speed_ctx``, ``gap_in``, ``ratio_in`` and the targets ``lane``, ``type``,
    ``gap`` (metre bin), ``headway`` (:data:`HEADWAY_EDGES` bin behind the vehicle behind, followers only),
    ``speed`` (absolute bin), ``delta`` (bin of the speed ratio minus the vehicle behind's),
    ``d`` with ``follows`` (not first in its lane) and ``is_agent`` (gap/speed/d are learnt on agents only).
    """
    limit_k = int(np.argmin(np.abs(np.asarray(SPEED_LIMITS) - scene.speed_limit)))
    ego_ratio = scene.ego_speed / scene.speed_limit
    state = LaneState(scene.num_lanes, scene.ego_lane, ego_ratio, scene.road)
    vehicles = [(a.lane, a.s, type_index(a), a.speed / scene.speed_limit, a.d) for a in scene.agents]
    vehicles.append((scene.ego_lane, 0.0, EGO_TYPE, ego_ratio, 0.0))
    vehicles.sort(key=lambda v: (v[0], v[1], v[2] == EGO_TYPE))
    rows: dict[str, list] = {k: [] for k in ("token_in", "lane_ctx", "slot", "type_in", "speed_ctx", "gap_in", "ratio_in",
                                             "lane", "type", "gap", "headway", "speed", "delta", "follows", "d", "is_agent")}
    for lane, s, k, ratio, d in vehicles[:MAX_TOKENS]:
        first, s0, len0, ratio0 = state.base(lane)
        gap = s - s0 if first else s - s0 - (len0 + TYPE_LENGTH[k]) / 2.0
        rows["token_in"].append(state.last_token)
        rows["lane_ctx"].append(state.lane_context())
        rows["slot"].append(state.slot(lane))
        rows["type_in"].append(type_features(k))
        rows["speed_ctx"].append(speed_context(state, lane, s, TYPE_LENGTH[k]))
        rows["gap_in"].append(np.float32(gap / 50.0))
        rows["ratio_in"].append(np.float32(ratio))
        rows["lane"].append(lane_slot(lane))
        rows["type"].append(k)
        rows["gap"].append(bin_index(GAP_EDGES, gap))
        rows["headway"].append(bin_index(headway_gap_edges(ratio0 * scene.speed_limit), gap) if not first else 0)
        rows["speed"].append(bin_index(SPEED_EDGES, ratio))
        rows["delta"].append(bin_index(DELTA_EDGES, ratio - ratio0) if not first else NUM_DELTA // 2)
        rows["follows"].append(not first)
        rows["d"].append(int(np.clip(np.round(d / D_STEP), -(NUM_D // 2), NUM_D // 2)) + NUM_D // 2)
        rows["is_agent"].append(k != EGO_TYPE)
        state.push(lane, k, s, ratio, d, gap)
    rows["token_in"].append(state.last_token)
    rows["lane_ctx"].append(state.lane_context())
    rows["slot"].append(np.zeros(SLOT_DIM, np.float32))
    rows["type_in"].append(np.zeros(NUM_TYPES + 1, np.float32))
    rows["speed_ctx"].append(np.zeros(SPEED_CTX_DIM, np.float32))
    rows["gap_in"].append(np.float32(0.0))
    rows["ratio_in"].append(np.float32(0.0))
    for key, value in (("lane", STOP), ("type", 0), ("gap", 0), ("headway", 0), ("speed", 0), ("delta", NUM_DELTA // 2), ("follows", False),
                       ("d", NUM_D // 2), ("is_agent", False)):
        rows[key].append(value)
    out = {k: np.asarray(v) for k, v in rows.items()}
    out["cond"] = condition_vector(scene.traffic, scene.num_lanes, scene.speed_limit, scene.road)
    out["ego"] = ego_vector(scene.ego_lane, scene.num_lanes, ego_ratio)
    out["limit"], out["ego_lane"], out["ego_speed"] = limit_k, scene.ego_lane, bin_index(SPEED_EDGES, ego_ratio)
    return out


def type_features(k: int) -> np.ndarray:
    v = np.zeros(NUM_TYPES + 1, np.float32)
    v[k] = 1.0
    v[-1] = TYPE_LENGTH[k] / 10.0
    return v


__all__ = ["COND_DIM", "DELTA_EDGES", "HEADWAY_EDGES", "HEADWAY_SPEED_FLOOR", "NUM_DELTA", "NUM_HEADWAY", "EGO_DIM", "LANE_CTX_DIM", "MAX_LANES", "MAX_TOKENS", "NUM_SLOTS", "SLOT_DIM", "STOP", "TOKEN_DIM",
           "LaneState", "condition_vector", "ego_vector", "encode_scene", "headway_gap_edges", "lane_slot", "road_vector", "speed_context",
           "type_features", "type_index"]
