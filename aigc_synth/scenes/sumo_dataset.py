"""SUMO ground-truth scene sets: one cell (:func:`simulate_scenes`) or a dataset balanced over road
kinds x traffic levels x lane counts (:func:`sumo_scene_dataset`).

Each cell's simulation runs go to its road kind's track: :func:`aigc_synth.scenes.sumo.simulate_straight_run`
for straight roads, :func:`aigc_synth.scenes.sumo_roads.simulate_road_run` for the others; how a run
makes scenes is described there.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from multiprocessing import get_context
from typing import Callable, Sequence

import numpy as np

from aigc_synth.scenes.format import (LANE_COUNTS, ROAD_KINDS, TRAFFIC_DENSITY, TRAFFIC_LEVELS, Scene, SceneError,
                                     road_kind_problems)
from aigc_synth.scenes.sumo import SimOptions, simulate_straight_run
from aigc_synth.scenes.sumo_roads import simulate_road_run


def _check_request(traffic: str, num_lanes: int, count: int, opts: SimOptions, road: str = "straight") -> None:
    problems = road_kind_problems(road, num_lanes)
    if problems:
        raise SceneError(problems[0])
    if traffic not in TRAFFIC_DENSITY:
        raise SceneError(f"unknown traffic level {traffic!r}; allowed: {list(TRAFFIC_LEVELS)}")
    if num_lanes < 1 or count < 0 or opts.scenes_per_run < 1:
        raise SceneError(f"need num_lanes >= 1, count >= 0, scenes_per_run >= 1 (got {num_lanes}, {count}, {opts.scenes_per_run})")


def _simulate_any(road: str, traffic: str, num_lanes: int, seed: int, run: int, opts: SimOptions) -> list[Scene]:
    """Run ``run`` of a cell on its road kind's track (straight: this module; others: :mod:`.sumo_roads`)."""
    if road == "straight":
        return simulate_straight_run(traffic, num_lanes, seed, run, opts)
    return simulate_road_run(road, traffic, num_lanes, seed, run, opts)


def _assemble(runs: list[list[Scene]], traffic: str, num_lanes: int, count: int, seed: int, first_scene_id: int,
              opts: SimOptions, road: str = "straight") -> list[Scene]:
    """Concatenate runs 0, 1, ... (simulating more if short), cut to ``count``, number the scenes."""
    scenes = [sc for run in runs for sc in run]
    while len(scenes) < count:
        if len(runs) > 10 * (count // opts.scenes_per_run + 1):  # cannot happen with the bundled densities
            raise SceneError(f"SUMO runs of {traffic} traffic on {num_lanes} lanes ({road}) yield no eligible ego")
        runs.append(_simulate_any(road, traffic, num_lanes, seed, len(runs), opts))
        scenes += runs[-1]
    return [replace(sc, scene_id=first_scene_id + i) for i, sc in enumerate(scenes[:count])]


def simulate_scenes(
    traffic: str,
    num_lanes: int,
    count: int,
    seed: int,
    *,
    first_scene_id: int = 0,
    options: SimOptions = SimOptions(),
    road: str = "straight",
) -> list[Scene]:
    """``count`` SUMO scenes of one traffic level and lane count on one road kind (see the module
    docstring; kinds other than ``straight``: :mod:`.sumo_roads`).

    Simulation run ``i`` is seeded from ``(seed, i)``; after ``options.warmup_s`` it takes a
    snapshot every ``options.snapshot_interval_s``, one scene per straight (the two straights are
    1.9 km apart along the loop), until it has ``options.scenes_per_run`` scenes. Runs 0, 1, ...
    are concatenated and cut to ``count``, so a smaller ``count`` gives a prefix of a larger one.
    Scene ids are ``first_scene_id, first_scene_id + 1, ...``; ``Scene.seed`` is the run's SUMO
    seed. Same arguments, same scenes.
    """
    _check_request(traffic, num_lanes, count, options, road)
    return _assemble([], traffic, num_lanes, count, seed, first_scene_id, options, road)


def cell_seed(seed: int, traffic: str, num_lanes: int, road: str = "straight") -> int:
    """The simulation seed of one dataset cell (see :func:`sumo_scene_dataset`)."""
    # a cell's scenes depend on (seed, road, traffic, lanes) only, not on which other cells are
    # requested; straight cells keep the key they had before road kinds (same datasets as before)
    key = [seed, TRAFFIC_LEVELS.index(traffic), num_lanes] + ([] if road == "straight" else [ROAD_KINDS.index(road)])
    return int(np.random.SeedSequence(key).generate_state(1)[0])


def _run_job(job: tuple[str, str, int, int, int, SimOptions]) -> list[Scene]:
    return _simulate_any(*job)


def sumo_scene_dataset(
    num_scenes: int,
    seed: int,
    traffic_levels: Sequence[str] = TRAFFIC_LEVELS,
    lane_counts: Sequence[int] = LANE_COUNTS,
    *,
    workers: int = 1,
    options: SimOptions = SimOptions(),
    map_runs: Callable[[Callable, list], list] | None = None,
    road_kinds: Sequence[str] = ("straight",),
) -> list[Scene]:
    """A balanced SUMO dataset: ``num_scenes`` split evenly over road kinds x traffic levels x lane counts.

    Cells come in order (road kinds outer, then traffic levels, lane counts inner); the first
    ``num_scenes % cells`` cells get one extra scene; scene ids run 0..num_scenes-1 in that order.
    Cell ``(road, traffic, lanes)`` is ``simulate_scenes(traffic, lanes, count, seed=f(seed, road,
    traffic, lanes), road=road)``, so it does not depend on the other cells requested. ``workers > 1`` simulates the
    runs in that many processes (one libsumo each, busiest runs first), with identical results;
    call it under ``if __name__ == "__main__":`` then (the processes are spawned). ``map_runs(fn,
    jobs) -> results`` (in order) hands the runs to another executor instead, e.g. Ray tasks.
    """
    if not traffic_levels or not lane_counts or not road_kinds or any(t not in TRAFFIC_LEVELS for t in traffic_levels):
        raise SceneError(f"need traffic levels from {list(TRAFFIC_LEVELS)} and lane counts, got {list(traffic_levels)}, {list(lane_counts)}")
    combos = [(r, t, n) for r in road_kinds for t in traffic_levels for n in lane_counts]
    cells = [(r, t, n, num_scenes // len(combos) + (k < num_scenes % len(combos))) for k, (r, t, n) in enumerate(combos)]
    for r, t, n, count in cells:
        _check_request(t, n, count, options, r)
    jobs = [(r, t, n, cell_seed(seed, t, n, r), run, options) for r, t, n, count in cells
            for run in range(-(-count // options.scenes_per_run))]
    if map_runs is not None:
        results = list(map_runs(_run_job, jobs))
    elif workers <= 1:
        results = [_run_job(job) for job in jobs]
    else:
        # busiest first (vehicles ~ density x lanes) so the last job to finish is a short one;
        # spawn, not fork: a forked child would inherit this process's libsumo state
        order = sorted(range(len(jobs)), key=lambda i: -sum(TRAFFIC_DENSITY[jobs[i][1]]) * jobs[i][2])
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            futures = {i: pool.submit(_run_job, jobs[i]) for i in order}
            results = [futures[i].result() for i in range(len(jobs))]
    scenes, first = [], 0
    for r, t, n, count in cells:
        runs = [res for job, res in zip(jobs, results) if job[:3] == (r, t, n)]
        scenes += _assemble(runs, t, n, count, cell_seed(seed, t, n, r), first, options, r)
        first += count
    return scenes


__all__ = ["cell_seed", "simulate_scenes", "sumo_scene_dataset"]
