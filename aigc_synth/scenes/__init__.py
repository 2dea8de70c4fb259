"""Traffic scenes: a highway snapshot around an ego vehicle, its ground truth and its uses.

* :mod:`.format`    the scene contract (dataclasses, Arrow schema, validation) — no simulator needed;
* :mod:`.road`      road geometry: lane coordinates of any road kind to the plane;
* :mod:`.sumo`      ground-truth scenes from the SUMO traffic simulator (``aigc_synth[sim]``; the
  curve, merge and lane-drop tracks in :mod:`.sumo_roads`);
* :mod:`.baselines` naive scene samplers to compare generators against;
* :mod:`.road_net`  a scene's road as a SUMO network, and where each vehicle goes on it;
* :mod:`.replay`    simulated realism: drive a scene in SUMO, count collisions / hard braking / TTC
  (and, on merges, the ramp vehicles that merge in time);
* :mod:`.export`    write scenes as SUMO configurations or OpenSCENARIO + OpenDRIVE files;
* :mod:`.gym_env`   a gymnasium env on highway-env built from a scene (every road kind).

Only the simulator-free part is imported here; ``import aigc_synth.scenes.sumo`` and friends load
SUMO lazily and raise :class:`SceneError` with an install hint when it is missing.
"""

from aigc_synth.scenes.format import (
    AGENT_KINDS,
    EGO_LENGTH,
    EGO_WIDTH,
    LANE_COUNTS,
    LANE_WIDTH,
    RAMP_LANE,
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
    overlap_pairs,
    require_valid,
    scene_arrow_schema,
    scenes_to_table,
    table_to_scenes,
    validate_scene,
)

__all__ = [
    "AGENT_KINDS", "EGO_LENGTH", "EGO_WIDTH", "LANE_COUNTS", "LANE_WIDTH", "RAMP_LANE", "ROAD_KINDS", "SPEED_LIMITS", "TRAFFIC_DENSITY",
    "TRAFFIC_LEVELS", "WINDOW_AHEAD", "WINDOW_BEHIND", "Agent", "Road", "Scene", "SceneError", "overlap_pairs", "require_valid",
    "scene_arrow_schema", "scenes_to_table", "table_to_scenes", "validate_scene",
]
