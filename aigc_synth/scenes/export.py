"""Write scenes for other tools: SUMO configurations and OpenSCENARIO 1.x + OpenDRIVE files.

Both writers take the scenes in one go, validate every scene first
(:func:`~aigc_synth.scenes.format.validate_scene`) and raise SceneError naming the first problem
without writing anything; the files are written into a temporary directory next to ``out_dir`` and
only then moved into place, so ``out_dir`` never holds a partial export.

Coordinates: the road starts :data:`~aigc_synth.scenes.sumo.EGO_X` (``WINDOW_BEHIND`` + 50 m) of
reference line behind the ego and is :data:`~aigc_synth.scenes.sumo.ROAD_LENGTH` long, so every
vehicle lies ahead of its start and an agent's centre is ``EGO_X + s`` along the road (a merge or
lane-drop road whose event lies near an end is lengthened: :func:`~aigc_synth.scenes.road_net.road_extent`).

* SUMO: one network per road (:mod:`.road_net`), ``<road>.net.xml``, and per scene
  ``scene_<id>.rou.xml`` (every vehicle placed exactly on its edge and lane, ``insertionChecks="none"``)
  and ``scene_<id>.sumocfg`` (``sumo -c scene_<id>.sumocfg``; collisions reported, not resolved).
  ``<road>`` is ``road_<n>lanes_<limit>`` for a straight road (edge ``road``), and for the others the
  kind and its parameters (:func:`~aigc_synth.scenes.road_net.net_name`): a curve is an arc of the
  scene's curvature (edge ``road``, or ``road_0``, ``road_1``, ... on a tight one); a merge road has
  ``road_up``, ``road_acc`` (the acceleration lane is its SUMO lane 0, ending at ``event_s``),
  ``road_down`` and the one-lane ``ramp`` joining it at ``RAMP_ANGLE``; a lane drop has ``road_up``
  and ``road_down``, one lane fewer from ``event_s``. Every vehicle's route runs to the road's end
  (ramp vehicles over the acceleration lane, whose end forces them onto the road).
* OpenSCENARIO: one OpenDRIVE road (id 0, one driving direction, right lanes) per road,
  ``<road>.xodr``, and per scene ``scene_<id>.xosc``: entities ``ego`` and ``agent_<i>``, each
  initialised with a TeleportAction to a LanePosition (``offset`` = ``d``) and an
  AbsoluteSpeedAction, and a storyboard that lets them drive for ``duration_s``. A straight road is
  a line whose reference line is the road's left edge (lane ids ``-1`` = leftmost ... ``-n`` =
  rightmost, i.e. scene lane ``k`` is lane id ``-(n - k)``), as before road kinds. The other kinds
  use the scene's own reference line, the right edge of lane 0, with a ``laneOffset`` of the main
  lanes' width putting the centre lane on the road's left edge, so a LanePosition's ``s`` (of the
  vehicle's rear axle) is measured on the scene's reference line, like ``Agent.s``: a curve is one arc of the scene's curvature; a merge road has
  three lane sections - up to the acceleration lane, the on-ramp as an extra right lane beyond a
  non-drivable wedge (lane type ``none``) that narrows at ``RAMP_ANGLE`` to nothing where the
  acceleration lane begins, then the acceleration lane as the extra right lane up to ``event_s``,
  then the main lanes alone; on a lane drop the leftmost lane ends at ``event_s``, where a lane
  section begins in which its pavement narrows smoothly to nothing over :data:`DROP_TAPER` m
  (the lane offset follows it, so the other lanes stay put and the centre lane does not jump),
  and a third section without it follows (lane ids count from the left, so they shift by one
  there). Lanes are linked across sections.
"""

from __future__ import annotations

import datetime as dt
import math
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np

from aigc_synth.io.atomic import staged_directory as _staged
from aigc_synth.scenes.format import (EGO_LENGTH, EGO_WIDTH, LANE_WIDTH, RAMP_ANGLE, RAMP_LANE, Road, Scene, SceneError,
                                      require_valid)
from aigc_synth.scenes.road import lane_heading, lane_length_factor, lane_offset
from aigc_synth.scenes.road_net import accel_start, net_name, road_extent, scene_net, scene_net_routes_xml
from aigc_synth.scenes.sumo import ROAD_LENGTH, SCENE_SUMO_OPTIONS, scene_vehicle_ids

# OpenSCENARIO places a vehicle by its reference point, conventionally the rear axle centre; the
# bounding box centre sits REAR_AXLE_FROM_CENTRE x length ahead of it, the front axle one
# WHEELBASE x length ahead of the rear one (about right for cars and rigid trucks).
REAR_AXLE_FROM_CENTRE = 0.3
WHEELBASE = 0.6
OSC_MINOR_VERSION = 0  # OpenSCENARIO 1.0: what CARLA ScenarioRunner reads; esmini reads 1.0-1.3
_EPOCH = dt.datetime(2000, 1, 1)  # fixed file-header date: the same scenes give the same bytes
GAP = "gap"  # the wedge between a merge road's ramp and lane 0, in an OpenDRIVE lane section
DROP_TAPER = 30.0  # m after a lane drop's event_s over which the dropped lane's pavement narrows to nothing (OpenDRIVE)


def export_sumo(scenes: Sequence[Scene], out_dir: Path | str) -> list[Path]:
    """Write SUMO files for ``scenes``; return the ``scene_<id>.sumocfg`` paths, in input order."""
    scenes = list(scenes)
    require_valid(scenes)
    out = Path(out_dir)
    with _staged(out) as tmp:
        for sc in scenes:
            network = scene_net(sc)
            net = f"{net_name(sc)}.net.xml"
            if not (tmp / net).exists():
                shutil.copyfile(network.path, tmp / net)
            (tmp / f"scene_{sc.scene_id}.rou.xml").write_text(scene_net_routes_xml(sc, network))
            options = {"net-file": net, "route-files": f"scene_{sc.scene_id}.rou.xml", **SCENE_SUMO_OPTIONS}
            # SUMO reads options from any element with a value attribute; sections are optional
            body = "".join(f'    <{k} value="{v}"/>\n' for k, v in options.items())
            (tmp / f"scene_{sc.scene_id}.sumocfg").write_text(f"<configuration>\n{body}</configuration>\n")
    return [out / f"scene_{sc.scene_id}.sumocfg" for sc in scenes]


def _xosc():
    try:
        from scenariogeneration import helpers, xodr, xosc
    except ImportError as exc:
        raise SceneError("scenariogeneration is not installed: pip install 'aigc_synth[sim]'") from exc
    return helpers, xodr, xosc


def odr_sections(road: Road, num_lanes: int) -> list[tuple[float, tuple[int | str, ...]]]:
    """The OpenDRIVE lane sections of a non-straight road: ``(start, lanes)``, ``start`` in scene ``s``,
    ``lanes`` the contract lanes of right lanes ``-1, -2, ...`` (from the centre lane outwards; :data:`GAP`
    for a merge's non-drivable wedge). A lane drop's second section is its taper (:func:`odr_width`)."""
    start, _ = road_extent(road)
    main = tuple(range(num_lanes - 1, -1, -1))
    if road.kind == "merge":
        return [(start, (*main, GAP, RAMP_LANE)), (accel_start(road), (*main, RAMP_LANE)), (road.event_s, main)]
    if road.kind == "lane_drop":
        return [(start, main), (road.event_s, main), (road.event_s + DROP_TAPER, main[1:])]
    return [(start, main)]


def odr_width(road: Road, num_lanes: int, section_start: float, lane: int | str) -> tuple[float, float, float, float]:
    """Width polynomial ``(a, b, c, d)`` (in the distance from the section's start) of ``lane`` in the
    lane section starting at scene ``s`` ``section_start``.

    A merge's wedge narrows from the ramp's distance to nothing where the acceleration lane begins
    (its ramp lane then lies where :func:`~aigc_synth.scenes.road.lane_offset` puts it). A dropped
    lane narrows smoothly from a full lane to nothing over :data:`DROP_TAPER` m after ``event_s``:
    it lies next to the centre lane, so vanishing at once would move the centre lane with a jump.
    """
    if lane == GAP:
        tan = math.tan(RAMP_ANGLE)
        return (accel_start(road) - section_start) * tan, -tan, 0.0, 0.0
    if road.kind == "lane_drop" and lane == num_lanes - 1 and section_start == road.event_s:
        return LANE_WIDTH, 0.0, -3 * LANE_WIDTH / DROP_TAPER**2, 2 * LANE_WIDTH / DROP_TAPER**3
    return LANE_WIDTH, 0.0, 0.0, 0.0


def odr_lane_id(road: Road, num_lanes: int, lane: int, s: float) -> int:
    """OpenDRIVE lane id of scene lane ``lane`` at scene ``s`` (the lane section there decides)."""
    if road.kind == "straight":
        return -(num_lanes - lane)  # right lanes: -1 next to the centre line
    lanes = [ls for s0, ls in odr_sections(road, num_lanes) if s0 <= s][-1]
    return -(lanes.index(lane) + 1)


def _write_xodr(path: Path, scene: Scene) -> None:
    helpers, xodr, _ = _xosc()
    if scene.road.kind == "straight":
        road = xodr.create_road(xodr.Line(ROAD_LENGTH), id=0, left_lanes=0, right_lanes=scene.num_lanes, lane_width=LANE_WIDTH)
    else:
        road = _odr_road(scene.road, scene.num_lanes)
    road.add_type(xodr.RoadType.motorway, s=0, speed=scene.speed_limit)
    odr = xodr.OpenDrive(net_name(scene))
    odr.add_road(road)
    odr.adjust_roads_and_lanes()
    element = odr.get_element()
    element.find("header").set("date", _EPOCH.isoformat())  # the library stamps "now"
    helpers.printToFile(element, str(path))


def _odr_road(road: Road, num_lanes: int):
    """OpenDRIVE road 0 of a curve, merge or lane-drop road (see the module docstring)."""
    _, xodr, _ = _xosc()
    start, end = road_extent(road)
    geometry = xodr.Arc(road.curvature, length=end - start) if road.kind == "curve" else xodr.Line(end - start)
    lanes = xodr.Lanes()
    previous = None  # the previous section's lanes by contract lane, to link them
    for s0, contract in odr_sections(road, num_lanes):
        ds = round(s0 - start, 3)
        section = xodr.LaneSection(ds, xodr.Lane(xodr.LaneType.none).add_roadmark(xodr.std_roadmark_solid()))
        by_lane, offset = {}, np.zeros(4)
        for i, lane in enumerate(contract):
            width = odr_width(road, num_lanes, s0, lane)
            odr_lane = xodr.Lane(xodr.LaneType.none if lane == GAP else xodr.LaneType.driving, *width)
            if lane != GAP:
                drivable_right = i + 1 < len(contract) and contract[i + 1] != GAP
                odr_lane.add_roadmark(xodr.std_roadmark_broken() if drivable_right else xodr.std_roadmark_solid())
            if lane not in (GAP, RAMP_LANE):
                offset += width
            section.add_right_lane(odr_lane)
            by_lane[lane] = odr_lane
        links = xodr.LaneLinker()
        for lane in [x for x in by_lane if x != GAP and x in (previous or {})]:
            links.add_link(previous[lane], by_lane[lane])
        lanes.add_lanesection(section, links if previous else None)
        # the centre lane lies on the road's left edge: the main lanes' width left of the reference line
        lanes.add_laneoffset(xodr.LaneOffset(ds, *(round(float(c), 12) for c in offset)))  # 3 x 3.2 is 9.600000000000001
        previous = by_lane
    plan = xodr.PlanView()
    plan.add_geometry(geometry)
    return xodr.Road(0, plan, lanes)


def _write_xosc(path: Path, scene: Scene, road_file: str, duration_s: float) -> None:
    _, _, xosc = _xosc()
    entities, init = xosc.Entities(), xosc.Init()
    road, start = scene.road, road_extent(scene.road)[0]
    vehicles = [("ego", "car", scene.ego_lane, 0.0, 0.0, scene.ego_speed, EGO_LENGTH, EGO_WIDTH)]
    vehicles += [(vid, a.kind, a.lane, a.s, a.d, a.speed, a.length, a.width)
                 for vid, a in zip(scene_vehicle_ids(scene)[1:], scene.agents)]
    for vid, kind, lane, s, d, speed, length, width in vehicles:
        height = 1.5 if kind == "car" else 3.5
        box = xosc.BoundingBox(width, length, height, round(REAR_AXLE_FROM_CENTRE * length, 3), 0, height / 2)
        front = xosc.Axle(0.5, 0.7, round(width - 0.2, 3), round(WHEELBASE * length, 3), 0.35)
        rear = xosc.Axle(0.0, 0.7, round(width - 0.2, 3), 0.0, 0.35)
        category = xosc.VehicleCategory.car if kind == "car" else xosc.VehicleCategory.truck
        entities.add_scenario_object(vid, xosc.Vehicle(f"{kind}_{length:g}x{width:g}", category, box, front, rear, 70, 4, 9))
        # the rear axle lies REAR_AXLE_FROM_CENTRE x length behind the centre along the lane, which is
        # less reference line on the outside of a curve and on the ramp (it meets the road at an angle)
        back = REAR_AXLE_FROM_CENTRE * length * math.cos(lane_heading(road, lane, s)) / lane_length_factor(
            road, lane_offset(road, scene.num_lanes, lane, s))
        rear_axle_s = s - start - back
        lane_id = odr_lane_id(road, scene.num_lanes, lane, s - back)  # a lane drop's lanes are renumbered past it
        init.add_init_action(vid, xosc.TeleportAction(xosc.LanePosition(round(rear_axle_s, 3), d, lane_id, 0)))
        init.add_init_action(vid, xosc.AbsoluteSpeedAction(speed, xosc.TransitionDynamics(
            xosc.DynamicsShapes.step, xosc.DynamicsDimension.time, 0)))
    stop = xosc.ValueTrigger("end", 0, xosc.ConditionEdge.rising,
                             xosc.SimulationTimeCondition(duration_s, xosc.Rule.greaterThan), "stop")
    scenario = xosc.Scenario(
        f"scene_{scene.scene_id}", "aigc_synth", xosc.ParameterDeclarations(), entities, xosc.StoryBoard(init, stop),
        xosc.RoadNetwork(roadfile=road_file), xosc.Catalog(), creation_date=_EPOCH, osc_minor_version=OSC_MINOR_VERSION,
    )
    scenario.write_xml(str(path))


def export_openscenario(scenes: Sequence[Scene], out_dir: Path | str, duration_s: float = 10.0) -> list[Path]:
    """Write OpenSCENARIO + OpenDRIVE files for ``scenes``; return the ``.xosc`` paths, in order."""
    scenes = list(scenes)
    require_valid(scenes)
    out = Path(out_dir)
    with _staged(out) as tmp:
        for sc in scenes:
            road = f"{net_name(sc)}.xodr"
            if not (tmp / road).exists():
                _write_xodr(tmp / road, sc)
            _write_xosc(tmp / f"scene_{sc.scene_id}.xosc", sc, road, duration_s)
    return [out / f"scene_{sc.scene_id}.xosc" for sc in scenes]


__all__ = ["DROP_TAPER", "export_openscenario", "export_sumo", "odr_lane_id", "odr_sections", "odr_width"]
