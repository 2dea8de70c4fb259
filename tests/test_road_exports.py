"""Everything downstream of a scene follows its road (issue 29): the SUMO export and the replay build
each road kind's network (:mod:`aigc_synth.scenes.road_net`), the OpenSCENARIO export its OpenDRIVE road.

Every test needs SUMO (libsumo) for the ground-truth scenes and skips without it; the OpenSCENARIO
test also needs scenariogeneration.
"""

from __future__ import annotations

import math
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from aigc_synth.scenes.format import EGO_LENGTH, EGO_WIDTH, LANE_WIDTH, RAMP_LANE, Agent, Road, Scene, lane_end
from aigc_synth.scenes.road import lane_offset, to_plane, vehicle_pose

KINDS = ("curve", "merge", "lane_drop")


def car(lane: int, s: float, speed: float = 25.0, length: float = 5.0) -> Agent:
    return Agent(lane, s, 0.0, speed, length, 1.8 if length < 10 else 2.5, "car" if length < 10 else "truck")


# hand-made corners of each kind: a tight curve (several edges), an acceleration lane that begins
# before the road would (with a truck reaching past its end), a two-lane drop, vehicles on both
# sides of edge boundaries
EDGE_CASES = {
    "curve": [Scene(100, 0, "light", 4, 27.78, 1, 20.0, [car(0, -45.0), car(3, 140.0, length=16.5), car(2, 60.0)], "hand",
                    Road("curve", curvature=1 / 100))],
    "merge": [Scene(100, 0, "light", 2, 33.33, 0, 25.0, [car(RAMP_LANE, -40.0), car(RAMP_LANE, -21.0, length=12.0), car(1, 30.0)],
                    "hand", Road("merge", event_s=-20.0, event_length=300.0)),
              Scene(101, 0, "light", 3, 33.33, 2, 25.0, [car(RAMP_LANE, -30.0), car(RAMP_LANE, 38.0), car(RAMP_LANE, 55.0),
                                                         car(0, 39.0), car(0, 140.0)], "hand",
                    Road("merge", event_s=140.0, event_length=100.0))],
    "lane_drop": [Scene(100, 0, "light", 2, 27.78, 0, 20.0, [car(1, -10.0), car(1, 45.0), car(0, 61.0)], "hand",
                        Road("lane_drop", event_s=60.0))],
}


@pytest.fixture(scope="module")
def kind_scenes():
    """Per kind: 3 SUMO ground-truth scenes (3 lanes, moderate traffic) and the hand-made ones."""
    pytest.importorskip("libsumo")
    from aigc_synth.scenes.sumo import SimOptions
    from aigc_synth.scenes.sumo_dataset import simulate_scenes

    opts = SimOptions(scenes_per_run=3)
    return {kind: simulate_scenes("moderate", 3, 3, seed=1, road=kind, options=opts) + EDGE_CASES[kind] for kind in KINDS}


def _vehicles(sc: Scene) -> list[Agent]:
    return [Agent(sc.ego_lane, 0.0, 0.0, sc.ego_speed, EGO_LENGTH, EGO_WIDTH, "car"), *sc.agents]


# -- SUMO export -------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_sumo_export_puts_every_vehicle_on_its_edge_lane_and_place(kind, kind_scenes, tmp_path):
    from aigc_synth.scenes.export import export_sumo
    from aigc_synth.scenes.road_net import contract_lane, road_extent, scene_net
    from aigc_synth.scenes.sumo import SumoRun, scene_vehicle_ids

    scenes = kind_scenes[kind]
    cfgs = export_sumo(scenes, tmp_path / "sumo")
    nets = sorted(p.name for p in (tmp_path / "sumo").glob("*.net.xml"))
    assert nets and all(n.startswith(f"{kind}_") for n in nets)
    if kind == "curve":  # the tight curve is cut into edges of at most half a turn
        assert len([e for e in ET.parse(scene_net(scenes[-1]).path).getroot().iter("edge") if e.get("id").startswith("road_")]) == 4
    for sc, cfg in zip(scenes, cfgs):
        net = scene_net(sc)
        start, end = road_extent(sc.road)
        assert end - start >= 1000.0 and start <= -100.0  # the straight export's frame and length, or more
        with SumoRun.run(["-c", str(cfg), "--no-step-log", "true"]) as traci:
            traci.simulationStep()
            assert traci.simulation.getDepartedNumber() == len(sc.agents) + 1
            V = traci.vehicle
            for vid, a in zip(scene_vehicle_ids(sc), _vehicles(sc)):
                edge, index = V.getRoadID(vid), V.getLaneIndex(vid)
                assert contract_lane(net, edge, index) == a.lane, (sc.scene_id, vid, edge, index, a)
                if a.lane == RAMP_LANE:
                    assert edge in ("ramp", "road_acc")
                # where SUMO draws the vehicle's centre (half a length behind its front bumper, in lane
                # position units): the scene's place in the plane, with the road's start at the origin
                pos = V.getLanePosition(vid)
                assert V.getLateralLanePosition(vid) == pytest.approx(a.d, abs=1e-3)
                # a vehicle reaching past the end of its lane has its front put at the end
                s = min(a.s, lane_end(sc.road, sc.num_lanes, a.lane) - a.length / 2)
                ex, ey, _ = to_plane(sc.road, s - start, lane_offset(sc.road, sc.num_lanes, a.lane, s))
                if pos >= a.length / 2:
                    cx, cy = traci.simulation.convert2D(edge, pos - a.length / 2, index)
                    assert math.hypot(cx - ex, cy - ey) < 0.05, (sc.scene_id, vid, a, (cx, cy), (ex, ey))
                else:  # the centre is on the edge before: half a length back from the front, roughly
                    fx, fy = V.getPosition(vid)
                    heading = math.radians(90.0 - V.getAngle(vid))
                    cx, cy = fx - a.length / 2 * math.cos(heading), fy - a.length / 2 * math.sin(heading)
                    assert math.hypot(cx - ex, cy - ey) < 0.5 + abs(a.d), (sc.scene_id, vid, a, (cx, cy), (ex, ey))


def test_a_vehicle_reaching_past_the_end_of_its_lane_stops_at_the_end(tmp_path):
    pytest.importorskip("libsumo")
    from aigc_synth.scenes.road_net import place, scene_net

    sc = Scene(0, 0, "light", 3, 30.0, 0, 20.0, [car(2, 59.0)], "hand", Road("lane_drop", event_s=60.0))
    route, lane, pos = place(scene_net(sc), 2, 59.0, 5.0)
    assert (route, lane, pos) == ("r_road_up", 2, pytest.approx(160.0))  # centre 1 m before the end, front at the end
    assert place(scene_net(sc), 1, 59.0, 5.0)[:2] == ("r_road_down", 1)  # the lane beside it goes on


# -- replay --------------------------------------------------------------------------------------------
def test_replay_drives_every_kind(kind_scenes):
    from aigc_synth.metrics.scenes import replay_summary
    from aigc_synth.scenes.replay import replay_scene

    for kind in KINDS:
        truth = [sc for sc in kind_scenes[kind] if sc.model_id != "hand"]
        for sc in kind_scenes[kind]:
            r = replay_scene(sc)
            ramp = sum(a.lane == RAMP_LANE for a in sc.agents)
            assert r["vehicles"] == len(sc.agents) + 1 == len(r["min_ttc"])
            assert 0 <= r["hard_braking"] <= r["vehicles"] and r["ramp_vehicles"] == ramp and 0 <= r["merged"] <= ramp
            assert all(t >= 0 for t in r["min_ttc"])
        summary = replay_summary([replay_scene(sc) for sc in truth])
        assert summary["collision_share"] == 0.0 and summary["hard_braking_share"] < 0.2, (kind, summary)
        if kind == "merge":  # the ground truth has ramp vehicles, and some of them merge within 10 s
            assert 0.0 < summary["merge_completion"] <= 1.0, summary
        else:
            assert summary["merge_completion"] is None


def test_merge_completion_counts_ramp_vehicles_that_reach_the_road():
    pytest.importorskip("libsumo")
    from aigc_synth.metrics.scenes import replay_summary
    from aigc_synth.scenes.replay import replay_scene

    # one on the acceleration lane, free road beside it; one on the ramp, 80 m before the acceleration lane
    sc = Scene(0, 0, "light", 2, 33.33, 1, 25.0, [car(RAMP_LANE, 60.0), car(RAMP_LANE, -40.0, speed=10.0)], "hand",
               Road("merge", event_s=140.0, event_length=100.0))
    early, late = replay_scene(sc, duration_s=2.0), replay_scene(sc, duration_s=10.0)
    assert (early["ramp_vehicles"], early["merged"]) == (2, 1) and (late["ramp_vehicles"], late["merged"]) == (2, 2)
    assert replay_summary([replay_scene(sc, duration_s=2.0)])["merge_completion"] == 0.5
    straight = replay_scene(Scene(0, 0, "light", 2, 33.33, 1, 25.0, [], "hand"))
    assert set(straight) == {"vehicles", "collided", "hard_braking", "min_ttc"}  # a straight scene's keys are unchanged


# -- OpenSCENARIO / OpenDRIVE ------------------------------------------------------------------------
def _poly(el: ET.Element, ds: float) -> float:
    a, b, c, d = (float(el.get(k)) for k in "abcd")
    return a + b * ds + c * ds**2 + d * ds**3


def _lane_centre(road_el: ET.Element, lane_id: int, s: float) -> tuple[float, str]:
    """(lateral offset of the centre of right lane ``lane_id`` from the reference line, its type) at road ``s``."""
    lanes = road_el.find("lanes")
    offset = [o for o in lanes.findall("laneOffset") if float(o.get("s")) <= s][-1]
    section = [x for x in lanes.findall("laneSection") if float(x.get("s")) <= s][-1]
    ds = s - float(section.get("s"))
    right = {int(lane.get("id")): lane for lane in section.find("right").findall("lane")}
    edge = _poly(offset, s - float(offset.get("s")))
    for i in range(-1, lane_id, -1):
        edge -= _poly(right[i].find("width"), ds)
    return edge - _poly(right[lane_id].find("width"), ds) / 2, right[lane_id].get("type")


def test_openscenario_export_follows_every_kind(kind_scenes, tmp_path):
    xosc = pytest.importorskip("scenariogeneration.xosc")
    xmlschema = pytest.importorskip("xmlschema")
    import scenariogeneration

    from aigc_synth.scenes.export import REAR_AXLE_FROM_CENTRE, export_openscenario
    from aigc_synth.scenes.road_net import net_name, road_extent

    schemas = Path(scenariogeneration.__file__).parent.parent / "schemas" / "opendrive_17_core.xsd"
    schema = xmlschema.XMLSchema(str(schemas)) if schemas.exists() else None
    scenes = [Scene(**{**sc.__dict__, "scene_id": i}) for i, sc in enumerate(sc for kind in KINDS for sc in kind_scenes[kind])]
    paths = export_openscenario(scenes, tmp_path / "osc")
    for sc, path in zip(scenes, paths):
        road, n = sc.road, sc.num_lanes
        start, end = road_extent(road)
        xodr = tmp_path / "osc" / f"{net_name(sc)}.xodr"
        assert schema is None or schema.is_valid(str(xodr)), list(schema.iter_errors(str(xodr)))[:1]
        road_el = ET.parse(xodr).getroot().find("road")
        geometries = road_el.findall("planView/geometry")
        assert len(geometries) == 1 and float(road_el.get("length")) == pytest.approx(end - start)
        assert float(geometries[0].get("length")) == pytest.approx(end - start)
        if road.kind == "curve":
            assert float(geometries[0].find("arc").get("curvature")) == road.curvature
        else:
            assert geometries[0].find("line") is not None
        events = {"curve": [], "merge": [road.event_s - road.event_length, road.event_s],
                  "lane_drop": [road.event_s, road.event_s + 30.0]}[road.kind]
        assert [float(x.get("s")) for x in road_el.findall("lanes/laneSection")] == pytest.approx([0.0] + [e - start for e in events])

        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the parser warns when the file breaks the OpenSCENARIO schema
            parsed = xosc.ParseOpenScenario(str(path))
        assert [o.name for o in parsed.entities.scenario_objects] == ["ego"] + [f"agent_{i}" for i in range(len(sc.agents))]
        assert ET.parse(path).getroot().find("RoadNetwork/LogicFile").get("filepath") == xodr.name
        positions = ET.parse(path).getroot().findall(".//Init//TeleportAction/Position/LanePosition")
        for a, pos in zip(_vehicles(sc), positions):
            s, lane_id = float(pos.get("s")), int(pos.get("laneId"))
            lateral, lane_type = _lane_centre(road_el, lane_id, s)
            assert pos.get("roadId") == "0" and lane_type == "driving"
            # the rear axle, REAR_AXLE_FROM_CENTRE x length behind the centre along the vehicle, in the scene's
            # frame; the export measures it along the lane, which leaves the vehicle's axis on a curve (by
            # the arc's sag) and where the ramp bends into the acceleration lane
            x, y, heading = vehicle_pose(road, n, a.lane, a.s, a.d)
            back = REAR_AXLE_FROM_CENTRE * a.length
            ex, ey, _ = to_plane(road, s + start, lateral + float(pos.get("offset")))
            miss = math.hypot(ex - (x - back * math.cos(heading)), ey - (y - back * math.sin(heading)))
            bend = a.lane == RAMP_LANE and abs(a.s - (road.event_s - road.event_length)) < a.length
            assert miss < 0.01 + back**2 * abs(road.curvature) / 1.5 + (0.3 if bend else 0), (sc.scene_id, a, pos.attrib, miss)
    # lanes link across sections: the acceleration lane continues the ramp, a dropped lane has no successor
    merge = ET.parse(tmp_path / "osc" / f"{net_name(EDGE_CASES['merge'][1])}.xodr").getroot().find("road/lanes")
    ramp, accel = (s.find("right").findall("lane")[-1] for s in merge.findall("laneSection")[:2])
    assert (ramp.find("link/successor").get("id"), accel.find("link/predecessor").get("id")) == ("-4", "-5")
    drop = ET.parse(tmp_path / "osc" / f"{net_name(EDGE_CASES['lane_drop'][0])}.xodr").getroot().find("road")
    taper = drop.findall("lanes/laneSection")[1].find("right").findall("lane")[0]
    assert taper.find("link/successor") is None and _poly(taper.find("width"), 30.0) == pytest.approx(0.0, abs=1e-6)
    assert _lane_centre(drop, -1, 200.0)[0] == pytest.approx(0.5 * LANE_WIDTH)  # past the taper: lane 0 alone, where it was
