"""Ground-truth traffic scenes from the SUMO microscopic traffic simulator (eclipse-sumo + libsumo).

How a scene is made
    1. **Track.** A closed stadium-shaped loop: two straights of :data:`TRACK_STRAIGHT` m joined by
       two semicircles, ``num_lanes`` lanes, one speed limit, built once per process with
       ``netconvert``. A loop, not an open road, because on an open road the density is whatever the
       entrance can insert (capacity, about 2,000 veh/h/lane), so congested ("heavy") traffic cannot
       be held; a loop keeps exactly the vehicles placed on it (a ring-road experiment). SUMO's car
       following ignores curvature, so the semicircles only close the loop: scenes are cut from the
       straights, whose lanes are parallel and equally long.
    2. **Demand.** Each simulation run draws a density ``k`` uniformly from the traffic level's band
       (:data:`~aigc_synth.scenes.format.TRAFFIC_DENSITY`, vehicles/km/lane):

       ========  ==============  ===============================
       light      5 - 12 veh/km   free flow
       moderate  15 - 25 veh/km   near capacity
       heavy     30 - 45 veh/km   congested, stop-and-go waves
       ========  ==============  ===============================

       and places ``round(k * loop length * num_lanes)`` vehicles. The speed limit is drawn from
       :data:`~aigc_synth.scenes.format.SPEED_LIMITS`, the truck share from :data:`TRUCK_SHARE`.
    3. **Vehicles.** Five types (:data:`VEHICLE_TYPES`): three car sizes and two truck sizes, each
       with SUMO's ``speedFactor`` distribution (desired speed = limit x factor; trucks capped at
       90 km/h). Default models: Krauss car following (driver imperfection sigma = 0.5) and LC2013
       lane changing; a lane change takes :data:`LANE_CHANGE_DURATION` s, so a vehicle caught
       mid-manoeuvre has a lateral offset ``d`` from its lane centre.
    4. **Warm-up.** At t = 0 every vehicle stands still in a random hard-rod layout (uniform random
       gaps, each at least minGap + 1 m, so every insertion succeeds) and the traffic runs for
       ``warmup_s`` (default 120 s) until speeds and platoons have settled (a lane drop: a time drawn per
       run from ``lane_drop_warmup_s``, 300-950 s, see :class:`SimOptions`).
    5. **Snapshots.** Then every ``snapshot_interval_s`` (5 s), on each of the two straights, a car
       of the ego size (:data:`EGO_TYPE`) that is not changing lanes is drawn, away from the
       straight's ends so the window ``[-WINDOW_BEHIND, +WINDOW_AHEAD]`` lies on it; every other
       vehicle on that straight whose centre lies in the window becomes an :class:`Agent`. A run
       gives ``SimOptions.scenes_per_run`` (20) scenes, so the warm-up is paid once per 20 scenes.

Determinism: run ``i`` of ``simulate_scenes(..., seed)`` uses a numpy Generator and a SUMO
``--seed`` both derived from ``(seed, i)``, so the same arguments give identical scenes, in any
process, whatever ran before (``libsumo.load`` restarts the simulation from its options).

libsumo is a process-wide singleton (one simulation per process): every user in this package goes
through :class:`SumoRun`, which starts it once, reloads it for each later run and serialises access.
The same module holds the helpers that write a scene *back* into SUMO (the straight road plus a route
file that places every vehicle exactly, on it or, given the placement of :mod:`.road_net`, on the
network of any other road kind), shared by :mod:`.replay` and :mod:`.export`.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import math
import os
import re
import shutil
import subprocess
import tempfile
import threading
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from aigc_synth.scenes.format import (
    EGO_LENGTH,
    EGO_WIDTH,
    LANE_WIDTH,
    PRECISION,
    SPEED_LIMITS,
    TRAFFIC_DENSITY,
    WINDOW_AHEAD,
    WINDOW_BEHIND,
    Agent,
    Scene,
    SceneError,
)

INSTALL_HINT = "SUMO is not installed: pip install 'aigc_synth[sim]'"


@dataclass(frozen=True)
class VehicleType:
    """A SUMO vType of the generator: size, class, top speed and its share within its kind."""

    id: str
    kind: str  # "car" or "truck" (format.AGENT_KINDS)
    vclass: str
    length: float
    width: float
    max_speed: float  # m/s
    speed_dev: float  # std-dev of SUMO's speedFactor (mean 1)
    share: float  # share within its kind


VEHICLE_TYPES: tuple[VehicleType, ...] = (
    VehicleType("car", "car", "passenger", EGO_LENGTH, EGO_WIDTH, 55.0, 0.1, 0.55),
    VehicleType("car_compact", "car", "passenger", 4.2, 1.75, 50.0, 0.1, 0.25),
    VehicleType("car_large", "car", "passenger", 5.4, 2.0, 50.0, 0.1, 0.20),
    VehicleType("truck", "truck", "truck", 12.0, 2.5, 25.0, 0.05, 0.5),
    VehicleType("truck_semi", "truck", "trailer", 16.5, 2.55, 25.0, 0.05, 0.5),
)
VEHICLE_TYPE_BY_ID = {t.id: t for t in VEHICLE_TYPES}
EGO_TYPE = "car"  # egos are drawn among these, whose size is the contract's EGO_LENGTH x EGO_WIDTH
TRUCK_SHARE = (0.05, 0.20)  # per run, uniform
MIN_GAP = 2.5  # SUMO's default minGap (all types)
LANE_CHANGE_DURATION = 3.0  # s; with SUMO's default (0) a lane change is instantaneous and d is always 0
TRACK_STRAIGHT = 1500.0
TRACK_RADIUS = 120.0
STRAIGHTS = ("s0", "s1")
TRACK_EDGES = ("s0", "c0", "s1", "c1")  # driving order around the loop
EDGE_MARGIN = 20.0  # keeps every window vehicle (trucks included) fully on the straight

# The straight road scenes are written back onto (replay, export): ego centre at EGO_X, so every
# agent's rear is at x > 0; long enough for 20 s of driving at 35 m/s ahead of the window.
ROAD_LENGTH = 1000.0
EGO_X = WINDOW_BEHIND + 50.0
# SUMO options for a scene written back: collisions are reported, not resolved, and mean physical
# contact (mingap-factor 0, not "closer than minGap"); lane changes as in generation.
SCENE_SUMO_OPTIONS: dict[str, str] = {
    "step-length": "0.1",
    "collision.action": "warn",
    "collision.mingap-factor": "0",
    "lanechange.duration": f"{LANE_CHANGE_DURATION:g}",
    "seed": "0",
}
_QUIET = ["--no-step-log", "true", "--no-warnings", "true", "--duration-log.disable", "true"]


# -- libsumo: one simulation per process ----------------------------------------------------------
def _libsumo():
    try:
        # libsumo prints a pyarrow-version warning on stdout at import; keep stdout clean for CLIs
        with contextlib.redirect_stdout(io.StringIO()):
            import libsumo
    except ImportError as exc:
        raise SceneError(INSTALL_HINT) from exc
    return libsumo


def sumo_version() -> str:
    """The SUMO version behind libsumo, e.g. ``"1.28.0"``."""
    return _libsumo().getVersion()[1].split()[-1]


def sumo_model_id() -> str:
    """``model_id`` of SUMO scenes: ``"sumo-<version>"``."""
    return f"sumo-{sumo_version()}"


class SumoRun:
    """The process-wide libsumo simulation: started on first use, reloaded for every later run.

    ``libsumo.load`` re-reads all options, so a run does not inherit anything from the previous one
    (and costs ~10 ms instead of a new start). The lock serialises threads; separate processes each
    have their own simulation. Closed at interpreter exit.
    """

    _lock = threading.RLock()
    _running = False
    _registered = False

    @classmethod
    @contextlib.contextmanager
    def run(cls, args: Sequence[str]) -> Iterator[Any]:
        """Yield the libsumo module with a fresh simulation of ``args`` (sumo options, no binary)."""
        with cls._lock:
            traci = _libsumo()
            try:
                if cls._running:
                    traci.load(list(args))
                else:
                    traci.start(["sumo", *args])
                    if not cls._registered:
                        atexit.register(cls.close)
                        cls._registered = True
                    cls._running = True
                yield traci
            except BaseException:
                cls.close()  # the simulation's state is unknown after an error: start afresh next time
                raise

    @classmethod
    def close(cls) -> None:
        with cls._lock:
            if cls._running:
                cls._running = False
                with contextlib.suppress(Exception):
                    _libsumo().close()


# -- networks ------------------------------------------------------------------------------------
_work_dir_path: Path | None = None


def sumo_work_dir() -> Path:
    """A per-process scratch directory for networks and route files, removed at exit."""
    global _work_dir_path
    if _work_dir_path is None:
        _work_dir_path = Path(tempfile.mkdtemp(prefix="aigc_synth_sumo_"))
        atexit.register(shutil.rmtree, _work_dir_path, True)
    return _work_dir_path


def netconvert(nodes: str, edges: str, out: Path, connections: str | None = None, extra: Sequence[str] = ()) -> None:
    """Build ``out`` (a .net.xml) from plain-XML nodes, edges and optional connections with SUMO's
    netconvert; atomically, and byte-stable (the header comment with date and paths is dropped)."""
    try:
        import sumo
    except ImportError as exc:
        raise SceneError(INSTALL_HINT) from exc
    binary = Path(sumo.SUMO_HOME) / "bin" / "netconvert"
    tmp = out.with_name(f".tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        (tmp / "n.nod.xml").write_text(nodes)
        (tmp / "e.edg.xml").write_text(edges)
        cmd = [str(binary), "-n", "n.nod.xml", "-e", "e.edg.xml", "-o", "net.net.xml", "--no-turnarounds", "true",
               "--offset.disable-normalization", "true", *extra]
        if connections is not None:
            (tmp / "c.con.xml").write_text(connections)
            cmd += ["-x", "c.con.xml"]
        proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SceneError(f"netconvert failed: {proc.stderr.strip()[-500:]}")
        # drop the header comment (date and paths), so the same road gives the same bytes
        text = re.sub(r"<!--.*?-->\s*", "", (tmp / "net.net.xml").read_text(), count=1, flags=re.S)
        (tmp / "net.net.xml").write_text(text)
        os.replace(tmp / "net.net.xml", out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def cached_net(name: str, nodes: str, edges: str, connections: str | None = None, extra: Sequence[str] = ()) -> Path:
    """The network ``name`` in this process's work directory, built by :func:`netconvert` on first use."""
    path = sumo_work_dir() / name
    if not path.exists():
        netconvert(nodes, edges, path, connections, extra)
    return path


def edge_attrs(num_lanes: int, speed_limit: float) -> str:
    return f'numLanes="{num_lanes}" speed="{speed_limit:.3f}" width="{LANE_WIDTH:g}"'


def road_net(num_lanes: int, speed_limit: float) -> Path:
    """A straight one-direction road from x=0 to :data:`ROAD_LENGTH`, edge ``road`` (cached file)."""
    nodes = f'<nodes><node id="a" x="0" y="0"/><node id="b" x="{ROAD_LENGTH:g}" y="0"/></nodes>'
    edges = f'<edges><edge id="road" from="a" to="b" {edge_attrs(num_lanes, speed_limit)}/></edges>'
    return cached_net(f"road_{num_lanes}l_{speed_limit:.3f}.net.xml", nodes, edges)


def _track_net(num_lanes: int, speed_limit: float) -> tuple[Path, dict[str, float]]:
    """The loop track and its edge lengths (the semicircles' lengths come from netconvert)."""
    L, R = TRACK_STRAIGHT, TRACK_RADIUS

    def arc(cx: float, a0: float) -> str:  # semicircle around (cx, R), counter-clockwise from angle a0
        return " ".join(f"{cx + R * math.cos(a0 + math.pi * i / 24):.3f},{R + R * math.sin(a0 + math.pi * i / 24):.3f}" for i in range(25))

    nodes = (f'<nodes><node id="n0" x="0" y="0"/><node id="n1" x="{L:g}" y="0"/>'
             f'<node id="n2" x="{L:g}" y="{2 * R:g}"/><node id="n3" x="0" y="{2 * R:g}"/></nodes>')
    attrs = edge_attrs(num_lanes, speed_limit)
    edges = (f'<edges><edge id="s0" from="n0" to="n1" {attrs}/>'
             f'<edge id="c0" from="n1" to="n2" {attrs} shape="{arc(L, -math.pi / 2)}"/>'
             f'<edge id="s1" from="n2" to="n3" {attrs}/>'
             f'<edge id="c1" from="n3" to="n0" {attrs} shape="{arc(0.0, math.pi / 2)}"/></edges>')
    path = cached_net(f"track_{num_lanes}l_{speed_limit:.3f}.net.xml", nodes, edges)
    lengths = {e.get("id"): float(e.find("lane").get("length")) for e in ET.parse(path).getroot().iter("edge")
               if not e.get("id").startswith(":")}
    return path, lengths


# -- a scene written back into SUMO (replay, export) -----------------------------------------------
def scene_vehicle_ids(scene: Scene) -> list[str]:
    """SUMO ids of a scene's vehicles: ``"ego"``, then ``"agent_<i>"`` in canonical agent order."""
    return ["ego"] + [f"agent_{i}" for i in range(len(scene.agents))]


def scene_routes_xml(scene: Scene, routes: Mapping[str, Sequence[str]] | None = None,
                     place: Callable[[int, float, float], tuple[str, int, float]] | None = None) -> str:
    """A SUMO route file that places every vehicle of ``scene`` exactly on :func:`road_net` (or on another network).

    ``insertionChecks="none"`` makes SUMO insert each vehicle where the scene says even when that is
    unsafe or overlapping (the default checks would silently delay or drop it and hide a bad scene);
    vehicles are listed by their position along the road. Each vehicle's desired speed is at least
    its current speed (``speedFactor``), so nobody brakes just for starting above the limit.

    Another road's network (:mod:`.road_net`) gives ``routes`` (route id -> edges) and
    ``place(lane, s, length) -> (route id, SUMO lane, departPos)``; the default is :func:`road_net`'s
    one route ``r`` over edge ``road``, with the front bumper at ``EGO_X + s + length / 2``.
    """
    vtypes: dict[tuple[str, float, float], str] = {}
    rows = []
    for vid, (kind, lane, s, d, speed, length, width) in zip(
        scene_vehicle_ids(scene),
        [("car", scene.ego_lane, 0.0, 0.0, scene.ego_speed, EGO_LENGTH, EGO_WIDTH)]
        + [(a.kind, a.lane, a.s, a.d, a.speed, a.length, a.width) for a in scene.agents],
    ):
        vtype = vtypes.setdefault((kind, length, width), f"{kind}_{length:g}x{width:g}")
        factor = max(1.0, math.ceil(speed / scene.speed_limit * 1e4) / 1e4)
        front = EGO_X + s + length / 2  # SUMO positions are front bumpers
        route, sumo_lane, pos = ("r", lane, front) if place is None else place(lane, s, length)
        rows.append((front, vid, f'    <vehicle id="{vid}" type="{vtype}" route="{route}" depart="0" departLane="{sumo_lane}" '
                                 f'departPos="{pos:.3f}" departPosLat="{d:.3f}" departSpeed="{speed:.3f}" '
                                 f'speedFactor="{factor:.4f}" insertionChecks="none"/>'))
    # the top speed only has to admit every start speed (SUMO rejects a departSpeed above it)
    max_speed = max([70.0, scene.ego_speed + 1.0] + [a.speed + 1.0 for a in scene.agents])
    lines = ["<routes>"]
    for (kind, length, width), vtype in sorted(vtypes.items(), key=lambda kv: kv[1]):
        vclass = "passenger" if kind == "car" else "truck"
        lines.append(f'    <vType id="{vtype}" vClass="{vclass}" length="{length:g}" width="{width:g}" maxSpeed="{max_speed:g}"/>')
    for rid, edges in (routes or {"r": ("road",)}).items():
        lines.append(f'    <route id="{rid}" edges="{" ".join(edges)}"/>')
    lines += [row for _, _, row in sorted(rows)]
    lines.append("</routes>")
    return "\n".join(lines) + "\n"


def scene_sumo_args(net: Path | str, routes: Path | str, **overrides: str) -> list[str]:
    """sumo options to run a scene written by :func:`scene_routes_xml` (:data:`SCENE_SUMO_OPTIONS`)."""
    opts = {**SCENE_SUMO_OPTIONS, **overrides}
    return ["-n", str(net), "-r", str(routes), *[x for k, v in opts.items() for x in (f"--{k}", v)], *_QUIET]


# -- ground truth ------------------------------------------------------------------------------------
def _place_vehicles(rng: np.random.Generator, density: float, num_lanes: int, lengths: dict[str, float],
                    truck_share: float) -> list[tuple[str, str, int, float]]:
    """(type, edge, lane, front position) of every vehicle: a random hard-rod layout on each edge."""
    cars = [t for t in VEHICLE_TYPES if t.kind == "car"]
    trucks = [t for t in VEHICLE_TYPES if t.kind == "truck"]
    loop = sum(lengths[e] for e in TRACK_EDGES)
    edge_p = np.array([lengths[e] for e in TRACK_EDGES]) / loop
    n_total = int(round(density * loop / 1000.0 * num_lanes))
    per_lane = np.full(num_lanes, n_total // num_lanes)
    per_lane[rng.permutation(num_lanes)[: n_total % num_lanes]] += 1
    out = []
    for lane in range(num_lanes):
        for edge, n in zip(TRACK_EDGES, rng.multinomial(per_lane[lane], edge_p)):
            if n == 0:
                continue
            kinds = [trucks if rng.random() < truck_share else cars for _ in range(n)]
            types = [group[rng.choice(len(group), p=[t.share for t in group])] for group in kinds]
            # each vehicle occupies [front - length - minGap - 1, front]; uniform random free gaps
            rods = np.array([t.length + MIN_GAP + 1.0 for t in types])
            free = lengths[edge] - rods.sum()
            if free <= 0:
                raise SceneError(f"{n} vehicles do not fit on edge {edge} ({lengths[edge]:.0f} m)")
            gaps = rng.dirichlet(np.ones(n + 1))[:n] * free
            fronts = np.cumsum(gaps + rods)
            out += [(t.id, edge, lane, float(f)) for t, f in zip(types, fronts)]
    return out


def _routes_for_run(vehicles: list[tuple[str, str, int, float]]) -> str:
    lines = ["<routes>"]
    for t in VEHICLE_TYPES:
        lines.append(f'    <vType id="{t.id}" vClass="{t.vclass}" length="{t.length:g}" width="{t.width:g}" '
                     f'minGap="{MIN_GAP:g}" maxSpeed="{t.max_speed:g}" speedFactor="normc(1,{t.speed_dev:g},0.5,1.5)"/>')
    for i, e in enumerate(TRACK_EDGES):  # one looping route per start edge
        lines.append(f'    <route id="r_{e}" edges="{" ".join(TRACK_EDGES[i:] + TRACK_EDGES[:i])}" repeat="100"/>')
    for i, (tid, edge, lane, front) in enumerate(vehicles):
        lines.append(f'    <vehicle id="v{i}" type="{tid}" route="r_{edge}" depart="0" departLane="{lane}" '
                     f'departPos="{front:.3f}" departSpeed="0"/>')
    lines.append("</routes>")
    return "\n".join(lines) + "\n"


def _snapshot(traci: Any, rng: np.random.Generator, types: dict[str, str], edge: str, edge_length: float
              ) -> tuple[int, float, list[Agent]] | None:
    """(ego lane, ego speed, agents) around a random eligible ego on ``edge``, or None if none."""
    V = traci.vehicle
    lo, hi = WINDOW_BEHIND + EDGE_MARGIN, edge_length - WINDOW_AHEAD - EDGE_MARGIN
    centres = [(v, V.getLanePosition(v) - VEHICLE_TYPE_BY_ID[types[v]].length / 2) for v in traci.edge.getLastStepVehicleIDs(edge)]
    # sorted: SUMO's list order is not part of any contract, the choice must depend on the seed only
    candidates = sorted((v, c) for v, c in centres
                        if types[v] == EGO_TYPE and lo <= c <= hi and abs(V.getLateralLanePosition(v)) < 1e-3)
    if not candidates:
        return None
    ego, ego_c = candidates[rng.integers(len(candidates))]
    agents = []
    for v, c in centres:
        s = round(c - ego_c, PRECISION)  # the window test on the value the scene will hold
        if v != ego and -WINDOW_BEHIND <= s <= WINDOW_AHEAD:
            t = VEHICLE_TYPE_BY_ID[types[v]]
            agents.append(Agent(V.getLaneIndex(v), s, V.getLateralLanePosition(v), V.getSpeed(v), t.length, t.width, t.kind))
    return V.getLaneIndex(ego), V.getSpeed(ego), agents


@dataclass(frozen=True)
class SimOptions:
    """How each SUMO run of :func:`~aigc_synth.scenes.sumo_dataset.simulate_scenes` is driven (the defaults are the dataset's)."""

    scenes_per_run: int = 20  # the warm-up is paid once per this many scenes
    warmup_s: float = 120.0
    # Lane drops only: the warm-up is drawn per run from this range. From the standing start a heavy
    # lane drop first jams (mean speed / limit over the last 300 m before the drop: 0.16-0.20 at
    # 90-120 s), recovers by 240 s and then cycles between 0.52 and 0.75 with a period of about
    # 700 s (18 runs, `python scripts/diagnose_scenes.py warm-up --road lane_drop`); curves and
    # merges are steady from 60-150 s. A fixed 120 s cut the start-up jam; a random time after 300 s spread
    # over a cycle samples its phases evenly.
    lane_drop_warmup_s: tuple[float, float] = (300.0, 950.0)
    snapshot_interval_s: float = 5.0
    # SUMO time step. Not SUMO's default 1 s: Krauss at 1 s leaves states that need a speed drop
    # within the next second, which a 0.1 s replay turns into > 4.5 m/s^2 braking (3.6% of vehicles
    # in heavy traffic, against 0.1% for scenes simulated at 0.5 s, the same as at 0.25 s).
    step_length: float = 0.5
    speed_limits: tuple[float, ...] = SPEED_LIMITS


def ground_truth_args(net: Path, routes: Path, opts: SimOptions, run_seed: int) -> list[str]:
    """sumo options of a ground-truth run (every road kind's track)."""
    return ["-n", str(net), "-r", str(routes), "--step-length", f"{opts.step_length:g}", "--seed", str(run_seed),
            "--lanechange.duration", f"{LANE_CHANGE_DURATION:g}",
            "--time-to-teleport", "-1",  # a vehicle stuck in a jam stays put: teleports would change the density
            *_QUIET]


def collect_snapshots(args: list[str], routes: Path, opts: SimOptions, patience: int,
                      takers: Sequence[Callable[[Any], Any | None]]) -> list[Any]:
    """Run one ground-truth simulation and collect ``opts.scenes_per_run`` snapshots: after the warm-up,
    every ``opts.snapshot_interval_s`` each taker (one per place scenes are cut from) is called with
    the simulation and returns a snapshot or None (no eligible ego there now). An instant without an
    eligible ego yields nothing; the run stops after ``patience`` times the snapshots' nominal time (a
    safety net). Takers are called in order and only while the quota is open, so the random draws
    they make are the same for the same run. The route file is removed afterwards."""
    snaps: list[Any] = []
    try:
        with SumoRun.run(args) as traci:
            t = opts.warmup_s
            while len(snaps) < opts.scenes_per_run and t <= opts.warmup_s + patience * opts.scenes_per_run * opts.snapshot_interval_s:
                traci.simulationStep(t)
                t += opts.snapshot_interval_s
                for take in takers:
                    snap = take(traci) if len(snaps) < opts.scenes_per_run else None
                    if snap is not None:
                        snaps.append(snap)
    finally:
        routes.unlink(missing_ok=True)
    return snaps


def simulate_straight_run(traffic: str, num_lanes: int, seed: int, run: int, opts: SimOptions) -> list[Scene]:
    """Run ``run`` of a straight-road cell (:mod:`.sumo_dataset`): the ``opts.scenes_per_run`` scenes of run ``run`` (scene_id 0; the caller numbers them).

    A run always collects its full quota, whatever the caller needs, so its scenes depend on
    ``(traffic, num_lanes, seed, run)`` only and runs can be simulated in any order or process.
    """
    rng = np.random.default_rng([seed, run])
    run_seed = int(rng.integers(2**31 - 1))
    speed_limit = float(opts.speed_limits[rng.integers(len(opts.speed_limits))])
    density = rng.uniform(*TRAFFIC_DENSITY[traffic])
    net, lengths = _track_net(num_lanes, speed_limit)
    vehicles = _place_vehicles(rng, density, num_lanes, lengths, rng.uniform(*TRUCK_SHARE))
    types = {f"v{i}": v[0] for i, v in enumerate(vehicles)}
    routes = sumo_work_dir() / f"run_{uuid.uuid4().hex}.rou.xml"
    routes.write_text(_routes_for_run(vehicles))
    args = ground_truth_args(net, routes, opts, run_seed)
    model_id = sumo_model_id()
    snaps = collect_snapshots(args, routes, opts, 2, [lambda traci, e=edge: _snapshot(traci, rng, types, e, lengths[e])
                                                       for edge in STRAIGHTS])
    scenes = [Scene(0, run_seed, traffic, num_lanes, speed_limit, ego_lane, ego_speed, tuple(agents), model_id)
              for ego_lane, ego_speed, agents in snaps]
    return scenes


__all__ = [
    "EGO_TYPE", "EGO_X", "INSTALL_HINT", "ROAD_LENGTH", "SCENE_SUMO_OPTIONS", "TRUCK_SHARE", "VEHICLE_TYPES",
    "SimOptions", "VehicleType", "cached_net", "collect_snapshots", "edge_attrs", "ground_truth_args", "netconvert", "road_net", "scene_routes_xml",
    "scene_sumo_args", "scene_vehicle_ids", "simulate_straight_run", "sumo_model_id", "sumo_version", "sumo_work_dir",
]
