"""A scene's road written back into SUMO: one network per road, and where each vehicle goes on it.

:mod:`.replay` and :mod:`.export` put a :class:`~aigc_synth.scenes.format.Scene` back into SUMO.
This module builds the network of the scene's road (cached per process by its parameters, through
:func:`~aigc_synth.scenes.sumo.cached_net`) and maps every vehicle's lane coordinates to the edge,
SUMO lane and position that put it where the scene says.

Frame
    The frame of the straight export is kept for every kind: the road starts
    :data:`~aigc_synth.scenes.sumo.EGO_X` metres of reference line behind the ego and is
    :data:`~aigc_synth.scenes.sumo.ROAD_LENGTH` long, so reference-line ``s`` lies ``EGO_X + s`` from
    the road's start. :func:`road_extent` only lengthens a merge or lane-drop road whose event lies
    near or beyond an end (then the road starts earlier and every position shifts with it). Plane
    coordinates of the non-straight networks are :func:`~aigc_synth.scenes.road.to_plane` of the
    distance from the road's start: the reference line (the right edge of lane 0) starts at the
    origin heading ``+x`` and the lanes lie to its left; the straight network is
    :func:`~aigc_synth.scenes.sumo.road_net`, unchanged (its lanes lie below ``y = 0``).

Networks
    * ``straight``: :func:`~aigc_synth.scenes.sumo.road_net`, edge ``road``.
    * ``curve``: an arc of the scene's curvature, ``ROAD_LENGTH`` of reference line, drawn every
      :data:`CURVE_STEP` m; one edge ``road`` unless it turns more than :data:`MAX_EDGE_TURN`, then
      edges ``road_0``, ``road_1``, ... of equal turn (netconvert cuts an edge that comes back
      near its own end).
    * ``merge``: ``road_up`` (``num_lanes`` lanes) up to where the acceleration lane begins,
      ``road_acc`` (``num_lanes + 1`` lanes; SUMO lane 0 is the acceleration lane, lane
      :data:`~aigc_synth.scenes.format.RAMP_LANE`) up to ``event_s``, ``road_down`` (``num_lanes``
      lanes) to the end, and the one-lane ``ramp`` that joins SUMO lane 0 of ``road_acc`` at
      :data:`~aigc_synth.scenes.format.RAMP_ANGLE`, its centre line where
      :func:`~aigc_synth.scenes.road.lane_offset` puts it; its projection on the reference line
      starts where the road does, at least :data:`EVENT_MARGIN` m before the acceleration lane
      (which is at least :data:`MIN_ACCEL_LENGTH` long). The acceleration lane has no connection
      onwards, so ramp vehicles must change onto the road.
    * ``lane_drop``: ``road_up`` (``num_lanes`` lanes) up to ``event_s``, then ``road_down`` with
      ``num_lanes - 1``; the leftmost lane has no connection onwards.

    Junctions get a straight custom shape across the road, so netconvert does not cut the lanes
    back around them: every edge's lanes start and end where its reference span does. Straight
    edges and the ramp carry their length explicitly (netconvert would count the way from a shape's
    end to a node that does not lie on it).

Positions
    SUMO gives all lanes of an edge the same length (the edge's ``length``, whatever the lanes'
    own shapes) and draws position ``pos`` at the fraction ``pos / length`` of each lane's shape.
    A vehicle whose centre is at reference ``s`` on an edge spanning ``[start, end]`` of the
    reference line therefore has its centre at ``(s - start) / (end - start) * length``: on a
    straight edge that is ``s - start``, on an arc every lane's point at that fraction lies at
    reference ``s`` (the lanes are concentric), on the ramp it is the distance along the ramp. SUMO
    positions are front bumpers: ``departPos`` is that plus half the vehicle's length, on the next
    edge of its route when the front reaches past the edge's end; on a lane that ends there the
    front is put at the lane's end instead (at most half a length back; never so for SUMO's own
    scenes, whose vehicles always have their front on a lane).
"""

from __future__ import annotations

import functools
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aigc_synth.scenes.format import LANE_WIDTH, RAMP_ANGLE, RAMP_LANE, Road, Scene, SceneError
from aigc_synth.scenes.road import lane_offset, to_plane
from aigc_synth.scenes.sumo import EGO_X, ROAD_LENGTH, cached_net, edge_attrs, road_net, scene_routes_xml
from aigc_synth.scenes.sumo_roads import NO_INTERNAL_LINKS

#: An event (end of an acceleration lane or of a dropped lane) lies at least this far inside the road,
#: which is lengthened if needed; also the shortest ramp (metres of reference line).
EVENT_MARGIN = 50.0
#: The shortest acceleration lane a network has (a shorter one starts earlier): SUMO needs edges of some length.
MIN_ACCEL_LENGTH = 1.0
#: Largest turn of one curve edge, radians.
MAX_EDGE_TURN = math.pi
#: Spacing of a curve's shape points along the reference line, metres (the chord sags < 5 mm at radius 100 m).
CURVE_STEP = 2.0


@dataclass(frozen=True)
class Section:
    """One edge of a scene's network and the stretch of reference line it spans.

    ``lanes[i]`` is the contract lane of SUMO lane ``i``; ``length`` is SUMO's length of the edge (its
    position units). The ramp spans the reference line it projects onto.
    """

    edge: str
    start: float  # scene s where the edge begins
    end: float  # scene s where it ends
    lanes: tuple[int, ...]
    length: float


@dataclass(frozen=True)
class SceneNet:
    """The network of a scene's road: its file, its edges and one route per edge to the road's end."""

    path: Path
    road: Road
    sections: tuple[Section, ...]  # the edges of any one lane come in driving order (the ramp first)
    routes: tuple[tuple[str, tuple[str, ...]], ...]  # (route id, edges), the first edge where it starts

    def section(self, edge: str) -> Section:
        return next(sec for sec in self.sections if sec.edge == edge)

    def route_of(self, edge: str) -> tuple[str, tuple[str, ...]]:
        return next(r for r in self.routes if r[1][0] == edge)


def road_extent(road: Road) -> tuple[float, float]:
    """``(start, end)``: the scene ``s`` where the exported road of ``road`` begins and ends.

    ``(-EGO_X, ROAD_LENGTH - EGO_X)``, moved out where a merge's acceleration lane (or its
    :data:`EVENT_MARGIN` m of ramp) or a lane drop's end would not lie :data:`EVENT_MARGIN` m inside.
    """
    start, end = -EGO_X, ROAD_LENGTH - EGO_X
    if road.kind == "merge":
        return min(start, accel_start(road) - EVENT_MARGIN), max(end, road.event_s + EVENT_MARGIN)
    if road.kind == "lane_drop":
        return min(start, road.event_s - EVENT_MARGIN), max(end, road.event_s + EVENT_MARGIN)
    return start, end


def accel_start(road: Road) -> float:
    """Scene ``s`` where a merge road's acceleration lane begins (at least :data:`MIN_ACCEL_LENGTH` before it ends)."""
    return min(road.event_s - road.event_length, road.event_s - MIN_ACCEL_LENGTH)


def net_name(scene: Scene) -> str:
    """The file stem of a scene's road (exports): ``road_<n>lanes_<limit>`` for a straight road, as
    before road kinds, else the kind and its parameters, e.g. ``merge_3lanes_33.33_e91.75_l171.6``."""
    r = scene.road
    if r.kind == "straight":
        return f"road_{scene.num_lanes}lanes_{scene.speed_limit:g}"

    def num(x: float) -> str:  # every decimal the scene keeps (":g" would round large values), no trailing zeros
        return f"{x:.3f}".rstrip("0").rstrip(".")

    params = {"curve": f"k{r.curvature:.7f}", "merge": f"e{num(r.event_s)}_l{num(r.event_length)}", "lane_drop": f"e{num(r.event_s)}"}
    return f"{r.kind}_{scene.num_lanes}lanes_{num(scene.speed_limit)}_{params[r.kind]}"


def scene_net(scene: Scene) -> SceneNet:
    """The network of ``scene``'s road, lane count and speed limit (built once per process)."""
    return _build(scene.road, scene.num_lanes, scene.speed_limit)


@functools.lru_cache(maxsize=256)
def _build(road: Road, num_lanes: int, speed_limit: float) -> SceneNet:
    if road.kind == "straight":
        lanes = tuple(range(num_lanes))
        sec = Section("road", -EGO_X, ROAD_LENGTH - EGO_X, lanes, ROAD_LENGTH)
        return SceneNet(road_net(num_lanes, speed_limit), road, (sec,), (("r", ("road",)),))
    builder = {"curve": _curve, "merge": _merge, "lane_drop": _lane_drop}.get(road.kind)
    if builder is None:
        raise SceneError(f"no SUMO network for road kind {road.kind!r}")
    path, sections, routes = builder(road, num_lanes, speed_limit)
    lengths = {e.get("id"): float(e.find("lane").get("length")) for e in ET.parse(path).getroot().iter("edge")}
    sections = tuple(Section(sec.edge, sec.start, sec.end, sec.lanes, lengths[sec.edge]) for sec in sections)
    return SceneNet(path, road, sections, tuple((f"r_{edges[0]}", edges) for edges in routes))


def _xy(road: Road, start: float, s: float, lateral: float) -> str:
    """Plane point (network frame: distance from the road's start) ``lateral`` m left of reference ``s``."""
    x, y, _ = to_plane(road, s - start, lateral)
    return f"{x:.3f},{y:.3f}"


def _node(nid: str, road: Road, start: float, s: float, left: float, right: float) -> str:
    """A node on the road's left edge at reference ``s`` whose junction is a line across the road from
    ``left`` to ``right`` (lateral offsets): netconvert then keeps every lane's full length."""
    x, y = _xy(road, start, s, left).split(",")
    return f'<node id="{nid}" x="{x}" y="{y}" shape="{_xy(road, start, s, left)} {_xy(road, start, s, right)}"/>'


def _curve(road: Road, num_lanes: int, speed_limit: float) -> tuple[Path, list[Section], list[tuple[str, ...]]]:
    start, end = road_extent(road)
    left = num_lanes * LANE_WIDTH  # edges are drawn on the road's left edge, SUMO lays lanes to the right
    pieces = max(1, math.ceil(abs(road.curvature) * (end - start) / MAX_EDGE_TURN))
    bounds = np.linspace(start, end, pieces + 1)
    names = ["road"] if pieces == 1 else [f"road_{i}" for i in range(pieces)]
    nodes = [_node(f"n{i}", road, start, s, left, 0.0) for i, s in enumerate(bounds)]
    edges = []
    for i, name in enumerate(names):
        steps = max(1, math.ceil((bounds[i + 1] - bounds[i]) / CURVE_STEP))
        shape = " ".join(_xy(road, start, s, left) for s in np.linspace(bounds[i], bounds[i + 1], steps + 1))
        edges.append(f'<edge id="{name}" from="n{i}" to="n{i + 1}" {edge_attrs(num_lanes, speed_limit)} shape="{shape}"/>')
    path = cached_net(f"scene_curve_{num_lanes}l_{speed_limit:.3f}_{road.curvature:.7f}.net.xml",
                      "<nodes>" + "".join(nodes) + "</nodes>", "<edges>" + "".join(edges) + "</edges>", extra=NO_INTERNAL_LINKS)
    lanes = tuple(range(num_lanes))
    sections = [Section(name, float(bounds[i]), float(bounds[i + 1]), lanes, 0.0) for i, name in enumerate(names)]
    return path, sections, [tuple(names[i:]) for i in range(len(names))]


def _merge(road: Road, num_lanes: int, speed_limit: float) -> tuple[Path, list[Section], list[tuple[str, ...]]]:
    n, (start, end) = num_lanes, road_extent(road)
    a, e = accel_start(road), road.event_s
    left = n * LANE_WIDTH
    ramp_from, ramp_to = _xy(road, start, start, lane_offset(road, n, RAMP_LANE, start)), _xy(road, start, a, -0.5 * LANE_WIDTH)
    ramp_length = (a - start) / math.cos(RAMP_ANGLE)
    rx, ry = ramp_from.split(",")
    nodes = [_node("s", road, start, start, left, 0.0), _node("A", road, start, a, left, -LANE_WIDTH),
             _node("E", road, start, e, left, -LANE_WIDTH), _node("z", road, start, end, left, 0.0),
             f'<node id="R" x="{rx}" y="{ry}"/>']
    edges = [f'<edge id="road_up" from="s" to="A" {edge_attrs(n, speed_limit)} length="{a - start:.3f}"/>',
             f'<edge id="road_acc" from="A" to="E" {edge_attrs(n + 1, speed_limit)} length="{e - a:.3f}"/>',
             f'<edge id="road_down" from="E" to="z" {edge_attrs(n, speed_limit)} length="{end - e:.3f}"/>',
             # drawn on its lane's centre line, which does not end at node A
             (f'<edge id="ramp" from="R" to="A" {edge_attrs(1, speed_limit)} spreadType="center" '
              f'length="{ramp_length:.3f}" shape="{ramp_from} {ramp_to}"/>')]
    conns = [f'<connection from="road_up" to="road_acc" fromLane="{i}" toLane="{i + 1}"/>' for i in range(n)]
    conns.append('<connection from="ramp" to="road_acc" fromLane="0" toLane="0"/>')
    conns += [f'<connection from="road_acc" to="road_down" fromLane="{i + 1}" toLane="{i}"/>' for i in range(n)]
    path = cached_net(f"scene_merge_{n}l_{speed_limit:.3f}_{e:.3f}_{a:.3f}_{start:.3f}_{end:.3f}.net.xml",
                      "<nodes>" + "".join(nodes) + "</nodes>", "<edges>" + "".join(edges) + "</edges>",
                      "<connections>" + "".join(conns) + "</connections>", NO_INTERNAL_LINKS)
    main = tuple(range(n))
    sections = [Section("ramp", start, a, (RAMP_LANE,), 0.0), Section("road_up", start, a, main, 0.0),
                Section("road_acc", a, e, (RAMP_LANE, *main), 0.0), Section("road_down", e, end, main, 0.0)]
    routes = [("ramp", "road_acc", "road_down"), ("road_up", "road_acc", "road_down"), ("road_acc", "road_down"), ("road_down",)]
    return path, sections, routes


def _lane_drop(road: Road, num_lanes: int, speed_limit: float) -> tuple[Path, list[Section], list[tuple[str, ...]]]:
    n, (start, end), e = num_lanes, road_extent(road), road.event_s
    left = n * LANE_WIDTH
    nodes = [_node("s", road, start, start, left, 0.0), _node("E", road, start, e, left, 0.0),
             _node("z", road, start, end, (n - 1) * LANE_WIDTH, 0.0)]
    edges = [f'<edge id="road_up" from="s" to="E" {edge_attrs(n, speed_limit)} length="{e - start:.3f}"/>',
             # one lane fewer, right-aligned: drawn on its own left edge, one lane right of node E
             (f'<edge id="road_down" from="E" to="z" {edge_attrs(n - 1, speed_limit)} length="{end - e:.3f}" '
              f'shape="{_xy(road, start, e, (n - 1) * LANE_WIDTH)} {_xy(road, start, end, (n - 1) * LANE_WIDTH)}"/>')]
    conns = [f'<connection from="road_up" to="road_down" fromLane="{i}" toLane="{i}"/>' for i in range(n - 1)]
    path = cached_net(f"scene_drop_{n}l_{speed_limit:.3f}_{e:.3f}_{start:.3f}_{end:.3f}.net.xml",
                      "<nodes>" + "".join(nodes) + "</nodes>", "<edges>" + "".join(edges) + "</edges>",
                      "<connections>" + "".join(conns) + "</connections>", NO_INTERNAL_LINKS)
    sections = [Section("road_up", start, e, tuple(range(n)), 0.0), Section("road_down", e, end, tuple(range(n - 1)), 0.0)]
    return path, sections, [("road_up", "road_down"), ("road_down",)]


def place(net: SceneNet, lane: int, s: float, length: float) -> tuple[str, int, float]:
    """``(route id, SUMO lane, departPos)`` of a vehicle of ``length`` whose centre is at ``(lane, s)``
    (see the module docstring; the route starts on the edge that holds the vehicle's front)."""
    held = [sec for sec in net.sections if lane in sec.lanes and sec.start <= s <= sec.end]
    if not held:
        raise SceneError(f"lane {lane} at s={s} is not on the {net.road.kind} road's network")
    sec = held[-1]  # on a boundary: the downstream edge
    front = (s - sec.start) / (sec.end - sec.start) * sec.length + length / 2
    while front > sec.length:
        edges = net.route_of(sec.edge)[1]
        nxt = net.section(edges[1]) if len(edges) > 1 else None
        if nxt is None or lane not in nxt.lanes:
            front = sec.length  # the lane ends here: the front goes to its end
            break
        front, sec = front - sec.length, nxt
    return net.route_of(sec.edge)[0], sec.lanes.index(lane), front


def contract_lane(net: SceneNet, edge: str, sumo_lane: int) -> int | None:
    """The contract lane of SUMO lane ``sumo_lane`` of ``edge`` (None off the scene's network)."""
    sec = next((x for x in net.sections if x.edge == edge), None)
    return sec.lanes[sumo_lane] if sec is not None and 0 <= sumo_lane < len(sec.lanes) else None


def scene_net_routes_xml(scene: Scene, net: SceneNet | None = None) -> str:
    """The route file placing every vehicle of ``scene`` on :func:`scene_net` (a straight road's is
    :func:`~aigc_synth.scenes.sumo.scene_routes_xml`'s, unchanged)."""
    if scene.road.kind == "straight":
        return scene_routes_xml(scene)
    net = net or scene_net(scene)
    return scene_routes_xml(scene, dict(net.routes), functools.partial(place, net))


__all__ = ["CURVE_STEP", "EVENT_MARGIN", "MAX_EDGE_TURN", "MIN_ACCEL_LENGTH", "SceneNet", "Section", "accel_start",
           "contract_lane", "net_name", "place", "road_extent", "scene_net", "scene_net_routes_xml"]
