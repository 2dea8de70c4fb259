"""Simulated realism: drive a scene forward in SUMO and count what goes wrong.

A realistic scene is one real drivers could be in: when SUMO's drivers (Krauss car following,
LC2013 lane changing) take over from the scene's exact positions and speeds, nobody should crash,
brake in panic, or be on course to hit their leader. :func:`replay_scene` places every vehicle
exactly where the scene says (overlaps included, :func:`~aigc_synth.scenes.sumo.scene_routes_xml`)
on a straight road and reports, over ``duration_s``:

* ``collided`` - distinct vehicles ever in physical contact (``--collision.action warn`` so a crash
  does not remove anyone, ``--collision.mingap-factor 0`` so only contact counts, plus the pairs
  that already overlap at t = 0, which SUMO only reports once they move);
* ``hard_braking`` - distinct vehicles whose acceleration ever goes below
  :data:`HARD_BRAKING` (-4.5 m/s^2, the cars' normal maximum deceleration: harder is an emergency);
* ``min_ttc`` - per vehicle, the minimum time-to-collision to its leader in the same lane
  (bumper gap / closing speed, 0 when touching, ``inf`` when never closing in).

Vehicles that reach the end of the road (:data:`~aigc_synth.scenes.sumo.ROAD_LENGTH`; 10-20 s of
driving) leave the measurement. Replays go through the one libsumo simulation of the process
(:class:`~aigc_synth.scenes.sumo.SumoRun`), reloaded per scene (~10 ms).
"""

from __future__ import annotations

import math
import uuid
from typing import Any, Iterable

from aigc_synth.scenes.format import Scene, SceneError, overlap_pairs, validate_scene
from aigc_synth.scenes.sumo import SumoRun, sumo_work_dir, road_net, scene_routes_xml, scene_sumo_args, scene_vehicle_ids

HARD_BRAKING = -4.5  # m/s^2
TTC_THRESHOLD = 0.95  # s; nuPlan's bound for an unsafe time-to-collision
LEADER_RANGE = 300.0  # m looked ahead for a leader (beyond any window)


def replay_scene(scene: Scene, duration_s: float = 10.0, step_length: float = 0.1) -> dict[str, Any]:
    """Replay one scene; return ``{"vehicles", "collided", "hard_braking", "min_ttc"}``.

    ``min_ttc`` lists the ego first, then the agents in canonical order. Scenes whose vehicles
    overlap are replayed (that is what is measured); a scene that breaks the contract otherwise
    (unknown lane, outside the window, ...) raises SceneError.
    """
    problems = validate_scene(scene, check_overlaps=False)
    if problems:
        raise SceneError(f"scene {scene.scene_id} cannot be replayed: {problems[0]}")
    from aigc_synth.scenes.format import require_straight

    require_straight([scene], "the SUMO replay")
    ids = scene_vehicle_ids(scene)
    collided = {ids[i + 1] for pair in overlap_pairs(scene) for i in pair}  # ego index -1 -> ids[0]
    hard: set[str] = set()
    min_ttc = dict.fromkeys(ids, math.inf)
    routes = sumo_work_dir() / f"replay_{uuid.uuid4().hex}.rou.xml"
    routes.write_text(scene_routes_xml(scene))
    try:
        with SumoRun.run(scene_sumo_args(road_net(scene.num_lanes, scene.speed_limit), routes, **{"step-length": f"{step_length:g}"})) as traci:
            V = traci.vehicle
            traci.simulationStep()  # inserts everyone, exactly in place, nobody has moved yet
            if traci.simulation.getDepartedNumber() != len(ids):
                raise SceneError(f"scene {scene.scene_id}: SUMO inserted {traci.simulation.getDepartedNumber()} of {len(ids)} vehicles")
            min_gap = {v: V.getMinGap(v) for v in ids}
            for step in range(int(round(duration_s / step_length)) + 1):
                if step:
                    traci.simulationStep()
                    collided.update(traci.simulation.getCollidingVehiclesIDList())
                for v in V.getIDList():
                    if V.getAcceleration(v) < HARD_BRAKING:
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
    return {"vehicles": len(ids), "collided": len(collided), "hard_braking": len(hard), "min_ttc": [min_ttc[v] for v in ids]}


def replay_many(scenes: Iterable[Scene], duration_s: float = 10.0, step_length: float = 0.1,
                ttc_threshold: float = TTC_THRESHOLD) -> dict[str, Any]:
    """Replay every scene and aggregate: shares of vehicles and of scenes with each failure.

    Returns ``scenes``, ``vehicles``, ``collision_share`` / ``hard_braking_share`` /
    ``low_ttc_share`` (of vehicles; low = min TTC below ``ttc_threshold`` s) and
    ``scene_collision_share`` (scenes with at least one collision).
    """
    results = [replay_scene(sc, duration_s, step_length) for sc in scenes]
    if not results:
        raise SceneError("replay_many needs at least one scene")
    vehicles = sum(r["vehicles"] for r in results)
    return {
        "scenes": len(results),
        "vehicles": vehicles,
        "collision_share": sum(r["collided"] for r in results) / vehicles,
        "hard_braking_share": sum(r["hard_braking"] for r in results) / vehicles,
        "low_ttc_share": sum(t < ttc_threshold for r in results for t in r["min_ttc"]) / vehicles,
        "scene_collision_share": sum(r["collided"] > 0 for r in results) / len(results),
        "ttc_threshold": ttc_threshold,
    }


__all__ = ["HARD_BRAKING", "TTC_THRESHOLD", "replay_many", "replay_scene"]
