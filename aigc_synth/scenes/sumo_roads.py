"""SUMO ground truth on the curve, merge and lane-drop road kinds (straight roads: :mod:`.sumo`).

Every kind is simulated on a **closed track**, for the reason :mod:`.sumo` gives for the straight
one: a loop holds exactly the vehicles placed on it, so each traffic level's density band
(:data:`~aigc_synth.scenes.format.TRAFFIC_DENSITY`) is held, congested traffic included. Vehicles,
their types, the warm-up, the time step and the snapshot rule are the straight track's; what
changes is the network and where a scene is cut from it.

``curve``
    A ring of four quarter arcs, driven counter-clockwise for a left curve and clockwise for a right
    one; the radius of the reference line (the right edge of lane 0) is drawn per run with
    ``1 / radius`` uniform in ``1 / CURVE_RADIUS_RANGE``. Scenes are cut from inside one arc, so the
    whole window has the run's curvature. SUMO's car following ignores curvature: the traffic is
    the straight road's, the geometry is the curve's.
``merge``
    The straight track with an on-ramp: one straight is split at the merge node ``M`` into the
    upstream main road, an acceleration lane section of ``ACCEL_LANE_RANGE`` metres (``num_lanes +
    1`` lanes, the ramp joins its rightmost lane, which then ends) and the downstream road. The ramp
    is fed by an off-ramp on the other straight, so ramp vehicles circulate like the rest (a share
    drawn per run from ``RAMP_SHARE`` of the vehicles on the ramp's lap take it every lap). Scenes:
    an ego on the main road whose window overlaps the acceleration lane.
``lane_drop``
    The straight track where one straight loses its leftmost lane for :data:`DROP_SECTION` metres (a
    bottleneck, which is why jams form upstream in heavy traffic) and gains it back after. Scenes:
    an ego whose window holds the point where the lane ends (and not the point where it returns).
    Its traffic takes longer to settle than the other kinds' (a start-up jam, then a slow cycle of
    queue and release), so its warm-up is drawn per run (:attr:`SimOptions.lane_drop_warmup_s`).

Lane coordinates follow :mod:`aigc_synth.scenes.format`: on the merge track SUMO's lane ``i + 1`` of
the acceleration section is the contract's lane ``i`` and SUMO's lane 0 there, like the ramp edge,
is :data:`~aigc_synth.scenes.format.RAMP_LANE`; a ramp vehicle's ``s`` is its projection on the
reference line (the ramp meets the road at :data:`~aigc_synth.scenes.format.RAMP_ANGLE`).
"""

from __future__ import annotations

import math
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from aigc_synth.scenes.format import (
    CURVE_RADIUS_RANGE,
    LANE_WIDTH,
    PRECISION,
    RAMP_ANGLE,
    RAMP_LANE,
    TRAFFIC_DENSITY,
    WINDOW_AHEAD,
    WINDOW_BEHIND,
    Agent,
    Road,
    Scene,
    SceneError,
)
from aigc_synth.scenes.sumo import (
    VEHICLE_TYPE_BY_ID,
    EDGE_MARGIN,
    EGO_TYPE,
    MIN_GAP,
    TRACK_RADIUS,
    TRACK_STRAIGHT,
    TRUCK_SHARE,
    VEHICLE_TYPES,
    SimOptions,
    edge_attrs,
    cached_net,
    collect_snapshots,
    ground_truth_args,
    sumo_model_id,
    sumo_work_dir,
)

ACCEL_LANE_RANGE: tuple[float, float] = (150.0, 300.0)  # acceleration lane length, metres, per run
RAMP_SHARE: tuple[float, float] = (0.1, 0.3)  # share of the vehicles on the ramp's lap that take the ramp
RAMP_LENGTH = 600.0  # the ramp edge (off-ramp to merge), metres
MERGE_UPSTREAM = 700.0  # main road before the merge node on its straight
DROP_SECTION = 400.0  # length of the reduced section of a lane drop (longer than a window)
DROP_UPSTREAM = 700.0
# where the event must lie in a scene's window (s relative to the ego): close enough to matter
EVENT_WINDOW: tuple[float, float] = (-30.0, WINDOW_AHEAD - 20.0)
# SUMO's eagerness for strategic lane changes (LC2013 lcStrategic, default 1) on the lane-drop track:
# at 1 drivers leave the ending lane kilometres ahead, so it is empty in every scene (measured: 0 of
# 38 moderate-traffic agents upstream of the drop on it; at 0.05: 18 of 128, merging 3-116 m before
# the end). The merge track keeps 1: ramp drivers must not miss the off-ramp that feeds the ramp.
DROP_LC_STRATEGIC = 0.05


# vehicles cross a junction in one step (no internal lanes): the tracks' junctions join collinear edges
NO_INTERNAL_LINKS = ("--no-internal-links", "true")


def _connections(rows: list[str]) -> str:
    return "<connections>" + "".join(rows) + "</connections>"


@dataclass(frozen=True)
class Segment:
    """One edge of a corridor: where it starts on the corridor's reference line and how its SUMO lanes
    map to contract lanes (``lane_map[i]`` for SUMO lane ``i``; None: not part of the road)."""

    edge: str
    start: float
    lane_map: tuple[int | None, ...]
    ramp: bool = False  # the on-ramp edge: s is its projection, counted back from ``start`` (its end)


@dataclass(frozen=True)
class Track:
    """A road kind's closed track: the network, lap(s), lengths and the corridors scenes are cut from."""

    net: Path
    laps: dict[str, tuple[str, ...]]  # route group -> its edges, one lap in driving order
    lengths: dict[str, float]  # edge -> length (lane 0; all lanes of a straight edge are equally long)
    lanes: dict[str, int]  # edge -> SUMO lanes
    corridors: tuple[tuple[Segment, ...], ...]
    road: Callable[[float], Road]  # the scene's road, given the ego's corridor position
    in_window: Callable[[float, float], bool]  # (ego corridor s, corridor length) -> eligible
    lane_scale: dict[tuple[str, int], float]  # (edge, SUMO lane) -> reference metres per lane metre (curves)
    lc_strategic: float = 1.0  # every vType's lcStrategic on this track


def _read_lengths(path: Path) -> tuple[dict[str, float], dict[str, int], dict[tuple[str, int], list[tuple[float, float]]]]:
    lengths, lanes, shapes = {}, {}, {}
    for e in ET.parse(path).getroot().iter("edge"):
        if e.get("id").startswith(":"):
            continue
        ls = e.findall("lane")
        lengths[e.get("id")], lanes[e.get("id")] = float(ls[0].get("length")), len(ls)
        for lane in ls:
            shapes[(e.get("id"), int(lane.get("index")))] = [tuple(map(float, p.split(","))) for p in lane.get("shape").split()]
    return lengths, lanes, shapes


def curve_track(num_lanes: int, speed_limit: float, curvature: float) -> Track:
    """The ring for a curve of ``curvature`` (1/m of the reference line, positive = left)."""
    sign, radius = (1 if curvature > 0 else -1), 1.0 / abs(curvature)
    # SUMO lays an edge's lanes to the right of its geometry line: on a left (counter-clockwise) ring
    # the reference line (right edge of lane 0) is num_lanes lanes outside it, on a right ring inside
    geometry_r = radius - num_lanes * LANE_WIDTH if sign > 0 else radius + num_lanes * LANE_WIDTH
    pts = 24

    def arc(q: int) -> str:  # quarter q of the ring, in driving order
        a0 = q * math.pi / 2 * sign
        return " ".join(f"{geometry_r * math.cos(a0 + sign * math.pi / 2 * i / pts):.3f},"
                        f"{geometry_r * math.sin(a0 + sign * math.pi / 2 * i / pts):.3f}" for i in range(pts + 1))

    nodes = "".join(f'<node id="r{q}" x="{geometry_r * math.cos(q * math.pi / 2 * sign):.3f}" '
                    f'y="{geometry_r * math.sin(q * math.pi / 2 * sign):.3f}"/>' for q in range(4))
    attrs = edge_attrs(num_lanes, speed_limit)
    edges = "".join(f'<edge id="q{q}" from="r{q}" to="r{(q + 1) % 4}" {attrs} shape="{arc(q)}"/>' for q in range(4))
    path = cached_net(f"curve_{num_lanes}l_{speed_limit:.3f}_{curvature:.7f}.net.xml", f"<nodes>{nodes}</nodes>",
                      f"<edges>{edges}</edges>", extra=NO_INTERNAL_LINKS)
    lengths, lanes, shapes = _read_lengths(path)
    # SUMO gives every lane of an edge the edge's length and draws a position at that fraction of each
    # lane's own shape, so one scale per edge maps a position on any lane to the reference line (a
    # per-lane radius ratio here put lane 2 of a 300 m ring ~7 m ahead of lane 0 at the same place)
    scale = {(edge, k): radius * (math.pi / 2) / lengths[edge] for (edge, k) in shapes}
    laps = {"main": ("q0", "q1", "q2", "q3")}
    corridors = tuple((Segment(e, 0.0, tuple(range(num_lanes))),) for e in ("q0", "q2"))  # two opposite arcs per instant
    margin = WINDOW_BEHIND + EDGE_MARGIN, WINDOW_AHEAD + EDGE_MARGIN
    ref_len = lengths["q0"] * scale[("q0", 0)]
    return Track(path, laps, lengths, lanes, corridors, road=lambda s: Road("curve", curvature=curvature),
                 in_window=lambda s, _n: margin[0] <= s <= ref_len - margin[1], lane_scale=scale)


def _stadium_nodes_edges(split0: list[tuple[str, float, int]], split1: list[tuple[str, float, int]], num_lanes: int,
                         speed_limit: float, extra_edges: str = "") -> tuple[str, str]:
    """The straight track's stadium with its straights cut into ``(edge, length, lanes)`` pieces
    (``split0`` along the lower straight left to right, ``split1`` along the upper one right to left)."""
    L, R = TRACK_STRAIGHT, TRACK_RADIUS

    def arc(cx: float, a0: float) -> str:
        return " ".join(f"{cx + R * math.cos(a0 + math.pi * i / 24):.3f},{R + R * math.sin(a0 + math.pi * i / 24):.3f}" for i in range(25))

    nodes, edges, x = ['<node id="n0" x="0" y="0"/>'], [], 0.0
    prev = "n0"
    for k, (eid, length, lanes) in enumerate(split0):
        x += length
        nid = "n1" if k == len(split0) - 1 else f"a{eid}"
        nodes.append(f'<node id="{nid}" x="{x:.3f}" y="0"/>')
        edges.append(f'<edge id="{eid}" from="{prev}" to="{nid}" {edge_attrs(lanes, speed_limit)}/>')
        prev = nid
    nodes.append(f'<node id="n2" x="{L:g}" y="{2 * R:g}"/>')
    edges.append(f'<edge id="c0" from="n1" to="n2" {edge_attrs(num_lanes, speed_limit)} shape="{arc(L, -math.pi / 2)}"/>')
    prev, x = "n2", L
    for k, (eid, length, lanes) in enumerate(split1):
        x -= length
        nid = "n3" if k == len(split1) - 1 else f"b{eid}"
        nodes.append(f'<node id="{nid}" x="{x:.3f}" y="{2 * R:g}"/>')
        edges.append(f'<edge id="{eid}" from="{prev}" to="{nid}" {edge_attrs(lanes, speed_limit)}/>')
        prev = nid
    edges.append(f'<edge id="c1" from="n3" to="n0" {edge_attrs(num_lanes, speed_limit)} shape="{arc(0.0, math.pi / 2)}"/>')
    return "<nodes>" + "".join(nodes) + "</nodes>", "<edges>" + "".join(edges) + extra_edges + "</edges>"


def merge_track(num_lanes: int, speed_limit: float, accel_length: float) -> Track:
    """The stadium with an on-ramp (see the module docstring)."""
    n, A, L, R = num_lanes, accel_length, TRACK_STRAIGHT, TRACK_RADIUS
    down = L - MERGE_UPSTREAM - A
    split0 = [("m_up", MERGE_UPSTREAM, n), ("m_acc", A, n + 1), ("m_down", down, n)]
    split1 = [("o_up", L / 2, n), ("o_down", L / 2, n)]
    # the ramp: from the off-ramp node (upper straight's middle) round to the merge node, arriving
    # from the lower right at RAMP_ANGLE; its length is set, SUMO does not need the drawn path to match
    mx = MERGE_UPSTREAM
    shape = (f"{L / 2:.3f},{2 * R:.3f} {L / 2 - 60:.3f},{2 * R + 40:.3f} {-200:.3f},{2 * R + 40:.3f} {-200:.3f},{-150:.3f} "
             f"{mx - 150 * math.cos(RAMP_ANGLE):.3f},{-n * LANE_WIDTH - 150 * math.sin(RAMP_ANGLE):.3f} {mx:.3f},{-n * LANE_WIDTH:.3f}")
    ramp = (f'<edge id="ramp" from="bo_up" to="am_up" numLanes="1" speed="{speed_limit:.3f}" width="{LANE_WIDTH:g}" '
            f'length="{RAMP_LENGTH:g}" priority="-1" shape="{shape}"/>')
    nodes, edges = _stadium_nodes_edges(split0, split1, n, speed_limit, ramp)
    conns = ['<connection from="m_up" to="m_acc" fromLane="{0}" toLane="{1}"/>'.format(i, i + 1) for i in range(n)]
    conns.append('<connection from="ramp" to="m_acc" fromLane="0" toLane="0"/>')
    conns += ['<connection from="m_acc" to="m_down" fromLane="{0}" toLane="{1}"/>'.format(i + 1, i) for i in range(n)]
    conns += ['<connection from="o_up" to="o_down" fromLane="{0}" toLane="{0}"/>'.format(i) for i in range(n)]
    conns.append('<connection from="o_up" to="ramp" fromLane="0" toLane="0"/>')
    path = cached_net(f"merge_{n}l_{speed_limit:.3f}_{A:.1f}.net.xml", nodes, edges, _connections(conns), NO_INTERNAL_LINKS)
    lengths, lanes, _ = _read_lengths(path)
    laps = {"main": ("m_up", "m_acc", "m_down", "c0", "o_up", "o_down", "c1"),
            "ramp": ("m_acc", "m_down", "c0", "o_up", "ramp")}
    up, acc = lengths["m_up"], lengths["m_acc"]
    corridor = (Segment("m_up", 0.0, tuple(range(n))), Segment("m_acc", up, (RAMP_LANE, *range(n))),
                Segment("m_down", up + acc, tuple(range(n))), Segment("ramp", up, (RAMP_LANE,), ramp=True))
    end = up + acc  # where the acceleration lane ends, corridor s
    total = up + acc + lengths["m_down"]

    def eligible(s: float, _n: float) -> bool:
        return (WINDOW_BEHIND + EDGE_MARGIN <= s <= total - WINDOW_AHEAD - EDGE_MARGIN
                and EVENT_WINDOW[0] <= end - s and end - s - acc <= EVENT_WINDOW[1])

    return Track(path, laps, lengths, lanes, (corridor,), road=lambda s: Road("merge", event_s=end - s, event_length=acc),
                 in_window=eligible, lane_scale={})


def lane_drop_track(num_lanes: int, speed_limit: float) -> Track:
    """The stadium whose lower straight loses its leftmost lane for :data:`DROP_SECTION` metres."""
    n, L = num_lanes, TRACK_STRAIGHT
    if n < 2:
        raise SceneError(f"a lane drop needs at least 2 lanes, got {n}")
    split0 = [("d_up", DROP_UPSTREAM, n), ("d_mid", DROP_SECTION, n - 1), ("d_down", L - DROP_UPSTREAM - DROP_SECTION, n)]
    nodes, edges = _stadium_nodes_edges(split0, [("s1", L, n)], n, speed_limit)
    conns = ['<connection from="d_up" to="d_mid" fromLane="{0}" toLane="{0}"/>'.format(i) for i in range(n - 1)]
    conns += ['<connection from="d_mid" to="d_down" fromLane="{0}" toLane="{0}"/>'.format(i) for i in range(n - 1)]
    path = cached_net(f"drop_{n}l_{speed_limit:.3f}.net.xml", nodes, edges, _connections(conns), NO_INTERNAL_LINKS)
    lengths, lanes, _ = _read_lengths(path)
    up = lengths["d_up"]
    corridor = (Segment("d_up", 0.0, tuple(range(n))), Segment("d_mid", up, tuple(range(n - 1))))

    def eligible(s: float, _n: float) -> bool:
        return (s >= WINDOW_BEHIND + EDGE_MARGIN and s + WINDOW_AHEAD + EDGE_MARGIN <= up + lengths["d_mid"]
                and EVENT_WINDOW[0] <= up - s <= EVENT_WINDOW[1])

    return Track(path, {"main": ("d_up", "d_mid", "d_down", "c0", "s1", "c1")}, lengths, lanes, (corridor,),
                 road=lambda s: Road("lane_drop", event_s=up - s), in_window=eligible, lane_scale={},
                 lc_strategic=DROP_LC_STRATEGIC)


PLACE_ATTEMPTS = 20  # draws of a run's placement before giving up (a heavy draw may overfill a short edge)


def _place(rng: np.random.Generator, density: float, track: Track, truck_share: float, ramp_share: float
           ) -> list[tuple[str, str, str, int, float]]:
    """(type, route group, edge, SUMO lane, front position) of every vehicle: random hard rods on every
    lane of the laps (the acceleration lane excepted), ``density`` per km of lane. A draw that puts
    more vehicles on a lane of an edge than fit there is drawn again (from the same generator, so a
    run stays a pure function of its seed; runs that never overfill are unchanged)."""
    for _attempt in range(PLACE_ATTEMPTS - 1):
        try:
            return _place_once(rng, density, track, truck_share, ramp_share)
        except SceneError:
            continue
    return _place_once(rng, density, track, truck_share, ramp_share)


def _place_once(rng: np.random.Generator, density: float, track: Track, truck_share: float, ramp_share: float
                ) -> list[tuple[str, str, str, int, float]]:
    cars = [t for t in VEHICLE_TYPES if t.kind == "car"]
    trucks = [t for t in VEHICLE_TYPES if t.kind == "truck"]
    edges = sorted(set(e for lap in track.laps.values() for e in lap), key=lambda e: [e for lap in track.laps.values() for e in lap].index(e))
    slots = [(e, k) for e in edges for k in range(track.lanes[e]) if not (e == "m_acc" and k == 0)]
    lengths = np.array([track.lengths[e] for e, _ in slots])
    n_total = int(round(density * lengths.sum() / 1000.0))
    out = []
    for (edge, lane), n in zip(slots, rng.multinomial(n_total, lengths / lengths.sum())):
        if n == 0:
            continue
        types = [g[rng.choice(len(g), p=[t.share for t in g])] for g in (trucks if rng.random() < truck_share else cars for _ in range(n))]
        rods = np.array([t.length + MIN_GAP + 1.0 for t in types])
        free = track.lengths[edge] - rods.sum()
        if free <= 0:
            raise SceneError(f"{n} vehicles do not fit on edge {edge} ({track.lengths[edge]:.0f} m)")
        fronts = np.cumsum(rng.dirichlet(np.ones(n + 1))[:n] * free + rods)
        for t, f in zip(types, fronts):
            in_main = edge in track.laps["main"]
            in_ramp = "ramp" in track.laps and edge in track.laps["ramp"]
            group = "ramp" if in_ramp and (not in_main or rng.random() < ramp_share) else "main"
            out.append((t.id, group, edge, lane, float(f)))
    return out


def _routes(track: Track, vehicles: list[tuple[str, str, str, int, float]]) -> str:
    lines = ["<routes>"]
    for t in VEHICLE_TYPES:
        lines.append(f'    <vType id="{t.id}" vClass="{t.vclass}" length="{t.length:g}" width="{t.width:g}" '
                     f'minGap="{MIN_GAP:g}" maxSpeed="{t.max_speed:g}" speedFactor="normc(1,{t.speed_dev:g},0.5,1.5)" '
                     f'lcStrategic="{track.lc_strategic:g}"/>')
    for group, lap in track.laps.items():
        for i, e in enumerate(lap):
            lines.append(f'    <route id="{group}_{e}" edges="{" ".join(lap[i:] + lap[:i])}" repeat="100"/>')
    for i, (tid, group, edge, lane, front) in enumerate(vehicles):
        lines.append(f'    <vehicle id="v{i}" type="{tid}" route="{group}_{edge}" depart="0" departLane="{lane}" '
                     f'departPos="{front:.3f}" departSpeed="0"/>')
    lines.append("</routes>")
    return "\n".join(lines) + "\n"


def _corridor_snapshot(traci: Any, rng: np.random.Generator, types: dict[str, str], track: Track,
                       corridor: tuple[Segment, ...]) -> tuple[int, float, Road, list[Agent]] | None:
    """(ego lane, ego speed, road, agents) around a random eligible ego of ``corridor``, or None."""
    V = traci.vehicle
    seen = []  # (vehicle, contract lane, corridor s of its centre, is_main_lane)
    for seg in corridor:
        for v in traci.edge.getLastStepVehicleIDs(seg.edge):
            k = V.getLaneIndex(v)
            lane = seg.lane_map[k] if k < len(seg.lane_map) else None
            if lane is None:
                continue
            half = VEHICLE_TYPE_BY_ID[types[v]].length / 2
            pos = V.getLanePosition(v)
            if seg.ramp:  # distance to the merge node along the ramp, projected on the reference line
                s = seg.start - (track.lengths[seg.edge] - pos + half) * math.cos(RAMP_ANGLE)
            else:
                s = seg.start + (pos - half) * track.lane_scale.get((seg.edge, k), 1.0)
            seen.append((v, lane, s))
    total = max(seg.start + track.lengths[seg.edge] for seg in corridor if not seg.ramp)
    candidates = sorted((v, s) for v, lane, s in seen
                        if types[v] == EGO_TYPE and lane != RAMP_LANE and track.in_window(s, total)
                        and abs(V.getLateralLanePosition(v)) < 1e-3)
    if not candidates:
        return None
    ego, ego_s = candidates[rng.integers(len(candidates))]
    ego_lane = next(lane for v, lane, _ in seen if v == ego)
    agents = []
    for v, lane, s in seen:
        rel = round(s - ego_s, PRECISION)
        if v != ego and -WINDOW_BEHIND <= rel <= WINDOW_AHEAD:
            t = VEHICLE_TYPE_BY_ID[types[v]]
            agents.append(Agent(lane, rel, V.getLateralLanePosition(v), V.getSpeed(v), t.length, t.width, t.kind))
    return ego_lane, V.getSpeed(ego), track.road(ego_s), agents


def build_track(road_kind: str, num_lanes: int, speed_limit: float, rng: np.random.Generator) -> tuple[Track, float]:
    """The run's track for ``road_kind`` with its parameters drawn from ``rng``, and its ramp share."""
    if road_kind == "curve":  # Road keeps 7 decimals of curvature
        return curve_track(num_lanes, speed_limit, uniform_road("curve", rng).curvature), 0.0
    if road_kind == "merge":
        accel = round(float(rng.uniform(*ACCEL_LANE_RANGE)), 1)
        return merge_track(num_lanes, speed_limit, accel), float(rng.uniform(*RAMP_SHARE))
    if road_kind == "lane_drop":
        return lane_drop_track(num_lanes, speed_limit), 0.0
    raise SceneError(f"no SUMO track for road kind {road_kind!r}")


def uniform_road(kind: str, rng: np.random.Generator) -> Road:
    """A ``kind`` road with its parameters uniform over the ranges the SUMO ground truth covers (the
    random baseline's roads): curvature as in :func:`build_track`, merge acceleration lanes in
    :data:`ACCEL_LANE_RANGE`, events (where the ramp or the dropped lane ends) anywhere a scene of
    that kind may hold them (:data:`EVENT_WINDOW`, plus the acceleration lane for a merge)."""
    if kind == "straight":
        return Road()
    if kind == "curve":
        inv = rng.uniform(1.0 / CURVE_RADIUS_RANGE[1], 1.0 / CURVE_RADIUS_RANGE[0])
        return Road("curve", curvature=float(inv if rng.random() < 0.5 else -inv))
    if kind == "merge":
        accel = float(rng.uniform(*ACCEL_LANE_RANGE))
        return Road("merge", event_s=float(rng.uniform(EVENT_WINDOW[0], EVENT_WINDOW[1] + accel)), event_length=accel)
    if kind == "lane_drop":
        return Road("lane_drop", event_s=float(rng.uniform(*EVENT_WINDOW)))
    raise SceneError(f"unknown road kind {kind!r}")


@dataclass(frozen=True)
class RoadRun:
    """One ground-truth run, set up and not yet simulated (:func:`prepare_road_run`)."""

    run_seed: int
    speed_limit: float
    track: Track
    types: dict[str, str]  # SUMO vehicle id -> VEHICLE_TYPES id
    routes: Path  # the run's route file; removed by collect_snapshots (or by the caller)
    args: list[str]  # sumo options
    opts: SimOptions  # with this run's warm-up


def prepare_road_run(road_kind: str, traffic: str, num_lanes: int, rng: np.random.Generator, opts: SimOptions) -> RoadRun:
    """Draw run ``rng``'s speed limit, density, track and vehicles and write its route file. The draws
    are the dataset's (in this order); :func:`simulate_road_run` then cuts scenes from the run, and
    ``scripts/diagnose_scenes.py warm-up`` follows its traffic over time."""
    run_seed = int(rng.integers(2**31 - 1))
    speed_limit = float(opts.speed_limits[rng.integers(len(opts.speed_limits))])
    density = rng.uniform(*TRAFFIC_DENSITY[traffic])
    track, ramp_share = build_track(road_kind, num_lanes, speed_limit, rng)
    vehicles = _place(rng, density, track, rng.uniform(*TRUCK_SHARE), ramp_share)
    if road_kind == "lane_drop":  # drawn after the placement, so a run's vehicles do not depend on it
        opts = replace(opts, warmup_s=float(rng.uniform(*opts.lane_drop_warmup_s)))
    routes = sumo_work_dir() / f"run_{uuid.uuid4().hex}.rou.xml"
    routes.write_text(_routes(track, vehicles))
    return RoadRun(run_seed, speed_limit, track, {f"v{i}": v[0] for i, v in enumerate(vehicles)}, routes,
                   ground_truth_args(track.net, routes, opts, run_seed), opts)


def simulate_road_run(road_kind: str, traffic: str, num_lanes: int, seed: int, run: int, opts: SimOptions) -> list[Scene]:
    """The ``opts.scenes_per_run`` scenes of run ``run`` on a ``road_kind`` track (scene_id 0), as
    :func:`aigc_synth.scenes.sumo.simulate_straight_run` does for straight roads."""
    rng = np.random.default_rng([seed, run])
    r = prepare_road_run(road_kind, traffic, num_lanes, rng, opts)
    model_id = sumo_model_id()
    # one scene per corridor per snapshot; a merge or drop track has one corridor, so it may take twice
    # the straight track's time to fill its quota (patience 4 instead of 2)
    snaps = collect_snapshots(r.args, r.routes, r.opts, 4, [lambda traci, c=corridor: _corridor_snapshot(traci, rng, r.types, r.track, c)
                                                           for corridor in r.track.corridors])
    return [Scene(0, r.run_seed, traffic, num_lanes, r.speed_limit, ego_lane, ego_speed, tuple(agents), model_id, road)
            for ego_lane, ego_speed, road, agents in snaps]


__all__ = ["ACCEL_LANE_RANGE", "DROP_SECTION", "RAMP_SHARE", "build_track", "curve_track", "lane_drop_track", "merge_track", "uniform_road",
           "RoadRun", "prepare_road_run", "simulate_road_run"]
