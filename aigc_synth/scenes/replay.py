"""Simulated realism: drive a scene forward in SUMO and count what goes wrong.

A realistic scene is one real drivers could be in: when SUMO's drivers (Krauss car following,
LC2013 lane changing) take over from the scene's exact positions and speeds, nobody should crash,
brake in panic, or be on course to hit their leader. :func:`replay_scene` places every vehicle
exactly where the scene says (overlaps included, :func:`~aigc_synth.scenes.sumo.scene_routes_xml`)
on the network of the scene's road (:mod:`.road_net`: the straight road, an arc of the scene's
curvature, a road with the on-ramp and acceleration lane ending at ``event_s``, or one whose
leftmost lane ends there) and reports, over ``duration_s``:

* ``collided`` - distinct vehicles ever in physical contact (``--collision.action warn`` so a crash
  does not remove anyone, ``--collision.mingap-factor 0`` so only contact counts, plus the pairs
  that already overlap at t = 0, which SUMO only reports once they move);
* ``hard_braking`` - distinct vehicles whose acceleration ever goes below
  :data:`HARD_BRAKING` (-4.5 m/s^2, the cars' normal maximum deceleration: harder is an emergency).
  Braking at exactly that limit is normal braking, but SUMO reports it as -4.500000000000028 m/s^2
  at some speeds (rounding of ``v - 0.45``), so the comparison allows :data:`ROUNDING` (before
  2026-12-07 it did not, and counted such vehicles at random);
* ``min_ttc`` - per vehicle, the minimum time-to-collision to its leader in the same lane
  (bumper gap / closing speed, 0 when touching, ``inf`` when never closing in);
* on every road but a straight one, also ``ramp_vehicles`` - vehicles on the on-ramp or the
  acceleration lane (:data:`~aigc_synth.scenes.format.RAMP_LANE`) at t = 0, and ``merged`` - how
  many of them reached a lane of the main road within ``duration_s`` (before their lane ended:
  it has no way on); one still on the ramp or acceleration lane at the end, or removed or
  teleported before it got across, has not merged. Both are 0 off merge roads.

Vehicles that reach the end of the road (:data:`~aigc_synth.scenes.sumo.ROAD_LENGTH`; 10-20 s of
driving) leave the measurement. Replays go through the one libsumo simulation of the process
(:class:`~aigc_synth.scenes.sumo.SumoRun`), reloaded per scene (~10 ms).
"""

from __future__ import annotations

import math
import uuid
from typing import Any

from aigc_synth.scenes.format import RAMP_LANE, Scene, SceneError, overlap_pairs, validate_scene
from aigc_synth.scenes.road_net import SceneNet, contract_lane, scene_net, scene_net_routes_xml
from aigc_synth.scenes.sumo import SumoRun, scene_sumo_args, scene_vehicle_ids, sumo_work_dir

HARD_BRAKING = -4.5  # m/s^2
ROUNDING = 1e-9  # m/s^2 of floating-point error SUMO's accelerations carry
TTC_THRESHOLD = 0.95  # s; nuPlan's bound for an unsafe time-to-collision
LEADER_RANGE = 300.0  # m looked ahead for a leader (beyond any window)


def replay_scene(scene: Scene, duration_s: float = 10.0, step_length: float = 0.1) -> dict[str, Any]:
    """Replay one scene; return ``{"vehicles", "collided", "hard_braking", "min_ttc"}``, plus
    ``"ramp_vehicles"`` and ``"merged"`` for a scene on any road but a straight one (see the module docstring).

    ``min_ttc`` lists the ego first, then the agents in canonical order. Scenes whose vehicles
    overlap are replayed (that is what is measured); a scene that breaks the contract otherwise
    (unknown lane, outside the window, ...) raises SceneError.
    """
    problems = validate_scene(scene, check_overlaps=False)
    if problems:
        raise SceneError(f"scene {scene.scene_id} cannot be replayed: {problems[0]}")
    ids = scene_vehicle_ids(scene)
    collided = {ids[i + 1] for pair in overlap_pairs(scene) for i in pair}  # ego index -1 -> ids[0]
    hard: set[str] = set()
    min_ttc = dict.fromkeys(ids, math.inf)
    # the ego never starts on the ramp (its lane is a main-road lane): agents only
    on_ramp = {vid for vid, a in zip(ids[1:], scene.agents) if a.lane == RAMP_LANE}
    merging, merged = set(on_ramp), set()  # still to merge; merged onto the main road
    net = scene_net(scene)
    routes = sumo_work_dir() / f"replay_{uuid.uuid4().hex}.rou.xml"
    routes.write_text(scene_net_routes_xml(scene, net))
    try:
        with SumoRun.run(scene_sumo_args(net.path, routes, **{"step-length": f"{step_length:g}"})) as traci:
            V = traci.vehicle
            traci.simulationStep()  # inserts everyone, exactly in place, nobody has moved yet
            if traci.simulation.getDepartedNumber() != len(ids):
                raise SceneError(f"scene {scene.scene_id}: SUMO inserted {traci.simulation.getDepartedNumber()} of {len(ids)} vehicles")
            min_gap = {v: V.getMinGap(v) for v in ids}
            for step in range(int(round(duration_s / step_length)) + 1):
                if step:
                    traci.simulationStep()
                    collided.update(traci.simulation.getCollidingVehiclesIDList())
                if merging:
                    # a teleport jumps the queue, and a vehicle that left the road never got across
                    merging -= set(traci.simulation.getStartingTeleportIDList()) | set(traci.simulation.getArrivedIDList())
                    now = {v for v in merging if _on_main_road(net, V, v)}
                    merged |= now
                    merging -= now
                for v in V.getIDList():
                    if is_hard_braking(V.getAcceleration(v)):
                        hard.add(v)
                    leader = V.getLeader(v, LEADER_RANGE)
                    if leader is not None and leader[0]:
                        closing = V.getSpeed(v) - V.getSpeed(leader[0])
                        gap = leader[1] + min_gap[v]  # getLeader's distance excludes the follower's minGap
                        if gap <= 0:
                            min_ttc[v] = 0.0
                        elif closing > 0:
                            min_ttc[v] = min(min_ttc[v], gap / closing)
    finally:
        routes.unlink(missing_ok=True)
    out = {"vehicles": len(ids), "collided": len(collided), "hard_braking": len(hard), "min_ttc": [min_ttc[v] for v in ids]}
    if scene.road.kind != "straight":  # a straight scene's result keeps the keys it always had
        out.update(ramp_vehicles=len(on_ramp), merged=len(merged))
    return out


def is_hard_braking(acceleration: float) -> bool:
    """Whether a SUMO acceleration (m/s²) is braking harder than :data:`HARD_BRAKING`, rounding error aside."""
    return acceleration < HARD_BRAKING - ROUNDING


def _on_main_road(net: SceneNet, vehicle: Any, v: str) -> bool:
    """Whether vehicle ``v`` is on a lane of the main road (not the ramp or acceleration lane)."""
    lane = contract_lane(net, vehicle.getRoadID(v), vehicle.getLaneIndex(v))
    return lane is not None and lane != RAMP_LANE


__all__ = ["HARD_BRAKING", "TTC_THRESHOLD", "is_hard_braking", "replay_scene"]
