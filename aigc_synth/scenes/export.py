"""Write scenes for other tools: SUMO configurations and OpenSCENARIO 1.x + OpenDRIVE files.

Both writers take the scenes in one go, validate every scene first
(:func:`~aigc_synth.scenes.format.validate_scene`) and raise SceneError naming the first problem
without writing anything; the files are written into a temporary directory next to ``out_dir`` and
only then moved into place, so ``out_dir`` never holds a partial export.

Coordinates: the road is straight along +x from x = 0 (:data:`~aigc_synth.scenes.sumo.ROAD_LENGTH`
long); the ego's centre is at x = :data:`~aigc_synth.scenes.sumo.EGO_X` (``WINDOW_BEHIND`` + 50 m),
so every vehicle lies at positive x; an agent's centre is at ``EGO_X + s``.

* SUMO: one network per (lane count, speed limit), ``road_<n>lanes_<limit>.net.xml``, and per scene
  ``scene_<id>.rou.xml`` (every vehicle placed exactly, ``insertionChecks="none"``) and
  ``scene_<id>.sumocfg`` (``sumo -c scene_<id>.sumocfg``; collisions reported, not resolved).
* OpenSCENARIO: one OpenDRIVE road per (lane count, speed limit), ``road_<n>lanes_<limit>.xodr``
  (one driving direction: OpenDRIVE right lanes ``-1`` = leftmost ... ``-n`` = rightmost, i.e.
  scene lane ``k`` is lane id ``-(n - k)``), and per scene ``scene_<id>.xosc``: entities ``ego`` and
  ``agent_<i>``, each initialised with a TeleportAction to a LanePosition (``offset`` = ``d``) and
  an AbsoluteSpeedAction, and a storyboard that lets them drive for ``duration_s``.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from typing import Sequence

from aigc_synth.io.atomic import staged_directory as _staged
from aigc_synth.scenes.format import EGO_LENGTH, EGO_WIDTH, LANE_WIDTH, Scene, SceneError, require_straight, require_valid
from aigc_synth.scenes.sumo import EGO_X, ROAD_LENGTH, SCENE_SUMO_OPTIONS, road_net, scene_routes_xml, scene_vehicle_ids

# OpenSCENARIO places a vehicle by its reference point, conventionally the rear axle centre; the
# bounding box centre sits REAR_AXLE_FROM_CENTRE x length ahead of it, the front axle one
# WHEELBASE x length ahead of the rear one (about right for cars and rigid trucks).
REAR_AXLE_FROM_CENTRE = 0.3
WHEELBASE = 0.6
OSC_MINOR_VERSION = 0  # OpenSCENARIO 1.0: what CARLA ScenarioRunner reads; esmini reads 1.0-1.3
_EPOCH = dt.datetime(2000, 1, 1)  # fixed file-header date: the same scenes give the same bytes


def _road_name(scene: Scene) -> str:
    return f"road_{scene.num_lanes}lanes_{scene.speed_limit:g}"


def export_sumo(scenes: Sequence[Scene], out_dir: Path | str) -> list[Path]:
    """Write SUMO files for ``scenes``; return the ``scene_<id>.sumocfg`` paths, in input order."""
    scenes = list(scenes)
    require_valid(scenes)
    require_straight(scenes, "the SUMO export")
    out = Path(out_dir)
    with _staged(out) as tmp:
        for sc in scenes:
            net = f"{_road_name(sc)}.net.xml"
            if not (tmp / net).exists():
                shutil.copyfile(road_net(sc.num_lanes, sc.speed_limit), tmp / net)
            (tmp / f"scene_{sc.scene_id}.rou.xml").write_text(scene_routes_xml(sc))
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


def _write_xodr(path: Path, scene: Scene) -> None:
    helpers, xodr, _ = _xosc()
    road = xodr.create_road(xodr.Line(ROAD_LENGTH), id=0, left_lanes=0, right_lanes=scene.num_lanes, lane_width=LANE_WIDTH)
    road.add_type(xodr.RoadType.motorway, s=0, speed=scene.speed_limit)
    odr = xodr.OpenDrive(_road_name(scene))
    odr.add_road(road)
    odr.adjust_roads_and_lanes()
    element = odr.get_element()
    element.find("header").set("date", _EPOCH.isoformat())  # the library stamps "now"
    helpers.printToFile(element, str(path))


def _write_xosc(path: Path, scene: Scene, road_file: str, duration_s: float) -> None:
    _, _, xosc = _xosc()
    entities, init = xosc.Entities(), xosc.Init()
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
        rear_axle_s = EGO_X + s - REAR_AXLE_FROM_CENTRE * length
        lane_id = -(scene.num_lanes - lane)  # OpenDRIVE right lanes: -1 next to the centre line
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
    require_straight(scenes, "the OpenSCENARIO export")
    out = Path(out_dir)
    with _staged(out) as tmp:
        for sc in scenes:
            road = f"{_road_name(sc)}.xodr"
            if not (tmp / road).exists():
                _write_xodr(tmp / road, sc)
            _write_xosc(tmp / f"scene_{sc.scene_id}.xosc", sc, road, duration_s)
    return [out / f"scene_{sc.scene_id}.xosc" for sc in scenes]


__all__ = ["export_openscenario", "export_sumo"]
