#!/usr/bin/env python
"""Diagnostics of the SUMO ground truth and of a scene model against it, behind the figures in docs/benchmarks.md "Scene figures".

    python scripts/diagnose_scenes.py lane-drop-speeds --checkpoint default --reference data/eval5/heldout --floor data/eval5/heldout2
    python scripts/diagnose_scenes.py hard-braking --checkpoint default --floor data/eval5/heldout2 --scenes 400
    python scripts/diagnose_scenes.py floors --sets data/eval5/heldout2 data/eval5/heldout data/eval5/heldout3
    python scripts/diagnose_scenes.py sampling-seeds --reference data/eval5/heldout --floor data/eval5/heldout2
    python scripts/diagnose_scenes.py warm-up --road lane_drop --traffic heavy --runs 6 --until 1200
    python scripts/diagnose_scenes.py rank-checkpoints --reference data/eval5/heldout --checkpoints a=runs/x/generator.pt b=default
    python scripts/diagnose_scenes.py merge-completion --sets data/eval5/heldout data/eval5/heldout2 --seeds 0 1 --workers 2

``lane-drop-speeds``: median speed ÷ limit of the agents of lane-drop scenes per traffic level and per
distance band to the drop point, and of the ego, for the reference, the floor and the model (sampled on the
floor set's exact roads, traffic and lane counts). ``hard-braking``: replays ``--scenes`` scenes of the floor
set on ``--roads`` (default straight and curve) and as many sampled by the model (same cells) in SUMO for 10 s
with the benchmark's replay, prints per road kind the share of vehicles that brake harder than 4.5 m/s² with a
95 % Poisson interval (the benchmark's 200 scenes per kind cannot tell shares of a few in 10,000 apart), and
lists when, how hard and at what speed the first ``--show`` such vehicles first brake.
``floors``: how far apart independent SUMO sets are: per road kind, each of ``--sets`` but the first as the
reference, the MMD of every other set against it (the floors a ratio could use) and of the model sampled like
the first set, as a multiple of the floors' mean.
``sampling-seeds``: how much the model's own sampling seed moves the benchmark's ratios: the model sampled on the
floor set's cells (as ``evaluate`` does, seed 0 reproducing it) with each of ``--seeds``, MMD ÷ floor per kind.
``warm-up``: is a road kind's ground truth steady after the warm-up? Runs ``--runs`` tracks per lane count from
the standing start (the dataset's placement and SUMO options, warm-up aside) and prints, every 30 s of simulated
time, the mean speed ÷ limit of the vehicles on the last 300 m of the corridor's first edge (before the merge
or the drop), averaged over the runs.
``rank-checkpoints``: the trainer's ``val_mmd`` on an independent SUMO set — each checkpoint sampled on the
reference's cells (with each of ``--seeds``), the geometric mean over features of the MMD to the reference per road
kind and over kinds and features (the ranking MMD ÷ floor's geometric mean gives for any floor); with ``--floor``
also the largest MMD ÷ floor per kind.
``merge-completion``: the share of ramp vehicles that merge before their acceleration lane ends, replayed on
every merge scene of each of ``--sets`` (SUMO) and of the model sampled like each set with each of ``--seeds``,
with a 95 % Wilson interval per row and per model-vs-SUMO difference, and per traffic level the ramp vehicles per
scene, their median speed and distance to the acceleration lane's end and their share that merge (the benchmark and
``evaluate`` replay every merge scene too, ``replay_all_merges``; this adds several SUMO sets and sampling seeds).
"""

from __future__ import annotations

import argparse
import sys
import uuid

import numpy as np

from aigc_synth.metrics.scenes import FEATURES, geometric_mean_of, replay_summary, scene_mmd, wilson_interval
from aigc_synth.models.scene_families import load_scene_generator, resolve_scene_checkpoint
from aigc_synth.scenes.dataset import read_scenes
from aigc_synth.scenes.format import RAMP_LANE, Scene
from aigc_synth.scenes.replay import is_hard_braking, replay_scene
from aigc_synth.scenes.road_net import scene_net, scene_net_routes_xml
from aigc_synth.scenes.sumo import SumoRun, scene_sumo_args, scene_vehicle_ids, sumo_work_dir

BANDS = ((-300.0, -100.0), (-100.0, -30.0), (-30.0, 0.0), (0.0, 300.0))  # m from the drop point


def sample_like(checkpoint: str, scenes: list[Scene], seed: int) -> list[Scene]:
    """One generated scene per given scene: its traffic, lane count and exact road."""
    gen = load_scene_generator(resolve_scene_checkpoint(None if checkpoint == "default" else checkpoint))
    n = len(scenes)
    return gen.sample([s.traffic for s in scenes], [s.num_lanes for s in scenes], [seed + i for i in range(n)], list(range(n)),
                      roads=[s.road for s in scenes])


def lane_drop_speeds(args: argparse.Namespace) -> None:
    ref = [s for s in read_scenes(args.reference) if s.road.kind == "lane_drop"]
    floor = [s for s in read_scenes(args.floor) if s.road.kind == "lane_drop"]
    for name, scenes in (("reference", ref), ("floor", floor), ("model", sample_like(args.checkpoint, floor, args.seed))):
        print(name)
        for traffic in ("light", "moderate", "heavy"):
            cell = [s for s in scenes if s.traffic == traffic]
            ego = np.median([s.ego_speed / s.speed_limit for s in cell])
            bands = []
            for lo, hi in BANDS:
                v = [a.speed / s.speed_limit for s in cell for a in s.agents if lo <= a.s - s.road.event_s < hi]
                bands.append(f"[{lo:g},{hi:g}) m: {np.median(v) if v else float('nan'):.3f} (n={len(v)})")
            print(f"  {traffic:8s} ego {ego:.3f} | " + " | ".join(bands))


def first_hard_brakes(scene: Scene) -> list[dict]:
    """Each vehicle's first step below HARD_BRAKING in a 10 s SUMO replay: time, acceleration, start speed."""
    ids = scene_vehicle_ids(scene)
    speeds = [scene.ego_speed] + [a.speed for a in scene.agents]
    net = scene_net(scene)
    routes = sumo_work_dir() / f"diagnose_{uuid.uuid4().hex}.rou.xml"
    routes.write_text(scene_net_routes_xml(scene, net))
    events, seen = [], set()
    try:
        with SumoRun.run(scene_sumo_args(net.path, routes, **{"step-length": "0.1"})) as traci:
            V = traci.vehicle
            for step in range(101):
                traci.simulationStep()
                for v in V.getIDList():
                    acc = V.getAcceleration(v)
                    if is_hard_braking(acc) and v not in seen:
                        seen.add(v)
                        i = ids.index(v)
                        events.append({"t": round(step * 0.1 + 0.1, 1), "acc": round(acc, 2), "ego": i == 0,
                                       "start_speed": round(speeds[i], 1), "traffic": scene.traffic})
    finally:
        routes.unlink(missing_ok=True)
    return events


def hard_braking(args: argparse.Namespace) -> None:
    floor = [s for s in read_scenes(args.floor) if s.road.kind in args.roads]
    floor = [floor[i] for i in np.random.default_rng(args.seed).permutation(len(floor))[:args.scenes]]
    for name, scenes in (("SUMO (floor set)", floor), ("model", sample_like(args.checkpoint, floor, args.seed))):
        # the benchmark's own count (replay_scene: every vehicle that ever brakes harder than the limit in 10 s)
        results = [replay_scene(s) for s in scenes]
        print(f"{name}, {len(scenes)} scenes:")
        for kind in args.roads:
            summary = replay_summary([r for s, r in zip(scenes, results) if s.road.kind == kind])
            low, high = summary["hard_braking_share_95"]
            print(f"    {kind:9s} {summary['hard_braking_vehicles']:3d} of {summary['vehicles']:6d} vehicles brake hard: "
                  f"{summary['hard_braking_share']:.3%} (95 % interval {low:.3%}–{high:.3%})")
        listed = 0
        for s, r in zip(scenes, results):
            if r["hard_braking"] and listed < args.show:
                for e in first_hard_brakes(s):
                    print("   ", dict(e, road=s.road.kind))
                    listed += 1


def _replay_all(scenes: list[Scene], workers: int) -> list[dict]:
    if workers <= 1:
        return [replay_scene(s) for s in scenes]
    from multiprocessing import get_context

    with get_context("spawn").Pool(workers) as pool:  # one libsumo per process
        return pool.map(replay_scene, scenes, chunksize=10)


def merge_completion(args: argparse.Namespace) -> None:
    rows = []
    for path in args.sets:
        sumo = [s for s in read_scenes(path) if s.road.kind == "merge"]
        rows.append((f"SUMO {path}", sumo))
        rows += [(f"model like {path}, seed {seed}", sample_like(args.checkpoint, sumo, seed)) for seed in args.seeds]
    print(f"merge completion: ramp vehicles at t = 0 that reach the main road before their acceleration lane ends "
          f"(10 s replay; checkpoint {args.checkpoint})")
    shares = {}
    for name, scenes in rows:
        results = _replay_all(scenes, args.workers)
        summary = replay_summary(results)
        k = summary["merged_vehicles"]
        shares[name] = (k, summary["ramp_vehicles"])
        low, high = wilson_interval(k, summary["ramp_vehicles"])
        print(f"  {name:45s} {len(scenes):4d} scenes  {k:5d} of {summary['ramp_vehicles']:5d} ramp vehicles merge: "
              f"{k / max(summary['ramp_vehicles'], 1):.3f} (95 % {low:.3f}-{high:.3f})", flush=True)
        # where a difference comes from: how many ramp vehicles each traffic level puts there, how fast, how far
        # from the end of their acceleration lane, and the share of them that merge
        for traffic in ("light", "moderate", "heavy"):
            cell = [(sc, r) for sc, r in zip(scenes, results) if sc.traffic == traffic]
            ramp = [(sc, a) for sc, _ in cell for a in sc.agents if a.lane == RAMP_LANE]
            n, merged = sum(r["ramp_vehicles"] for _, r in cell), sum(r["merged"] for _, r in cell)
            if not ramp:
                continue
            print(f"      {traffic:8s} {len(ramp) / len(cell):.2f} ramp vehicles per scene, speed median "
                  f"{np.median([a.speed for _, a in ramp]):.1f} m/s, to the lane's end median "
                  f"{np.median([sc.road.event_s - a.s for sc, a in ramp]):.0f} m; merge {merged / n:.3f} ({merged} of {n})")
    sumo_rows = [n for n in shares if n.startswith("SUMO")]
    for name, (k, n) in shares.items():
        for ref in sumo_rows:
            if name == ref:
                continue
            k2, n2 = shares[ref]
            p1, p2 = k / max(n, 1), k2 / max(n2, 1)
            se = np.sqrt(p1 * (1 - p1) / max(n, 1) + p2 * (1 - p2) / max(n2, 1))
            print(f"  {name} - {ref}: {p1 - p2:+.3f} (95 % {p1 - p2 - 1.96 * se:+.3f} to {p1 - p2 + 1.96 * se:+.3f})")


def floors(args: argparse.Namespace) -> None:
    sets = {path: read_scenes(path) for path in args.sets}
    model = sample_like(args.checkpoint, sets[args.sets[0]], args.seed)  # the first set's cells and roads
    print(f"MMD of the model (sampled like {args.sets[0]}) and of every other SUMO set against each reference; "
          "ratio = model / the mean of the SUMO floors")
    for kind in ("straight", "curve", "merge", "lane_drop"):
        by_set = {path: [s for s in scenes if s.road.kind == kind] for path, scenes in sets.items()}
        generated = [s for s in model if s.road.kind == kind]
        for reference in args.sets[1:]:
            floor_mmds = {other: scene_mmd(by_set[other], by_set[reference]) for other in args.sets if other != reference}
            ours = scene_mmd(generated, by_set[reference])
            cells = []
            for f in FEATURES:
                fl = [m[f]["mmd"] for m in floor_mmds.values()]
                cells.append(f"{f} {ours[f]['mmd'] / np.mean(fl):.2f} (floors {' / '.join(f'{x:.1e}' for x in fl)}, "
                             f"spread {max(fl) / min(fl):.1f}x)")
            print(f"{kind:9s} vs {reference}: " + "; ".join(cells))


def sampling_seeds(args: argparse.Namespace) -> None:
    from aigc_synth.seeds import attempt_seeds

    reference, floor = read_scenes(args.reference), read_scenes(args.floor)
    gen = load_scene_generator(resolve_scene_checkpoint(None if args.checkpoint == "default" else args.checkpoint))
    ids = np.arange(len(floor))
    print("MMD / floor per road kind and feature, the model sampled on the floor set's cells with each job seed "
          "(seed 0 = scripts/bench_scenes.py's and evaluate's sample)")
    for seed in args.seeds:
        scenes = gen.sample([s.traffic for s in floor], [s.num_lanes for s in floor], attempt_seeds(seed, ids).tolist(),
                            ids.tolist(), roads=[s.road.kind for s in floor])
        for kind in ("straight", "curve", "merge", "lane_drop"):
            ref = [s for s in reference if s.road.kind == kind]
            floor_mmd = scene_mmd([s for s in floor if s.road.kind == kind], ref)
            ours = scene_mmd([s for s in scenes if s.road.kind == kind], ref)
            print(f"seed {seed} {kind:9s} " + " ".join(f"{f} {ours[f]['mmd'] / floor_mmd[f]['mmd']:.2f}" for f in FEATURES),
                  flush=True)


def rank_checkpoints(args: argparse.Namespace) -> None:
    from aigc_synth.seeds import attempt_seeds

    reference = read_scenes(args.reference)
    floor = read_scenes(args.floor) if args.floor else None
    kinds = [k for k in ("straight", "curve", "merge", "lane_drop") if any(s.road.kind == k for s in reference)]
    ref = {k: [s for s in reference if s.road.kind == k] for k in kinds}
    floor_mmd = {k: scene_mmd([s for s in floor if s.road.kind == k], ref[k]) for k in kinds} if floor else {}
    ids = np.arange(len(reference))
    print(f"geometric mean of MMD to {args.reference} per road kind and overall (lower is better)"
          + ("; [largest MMD / floor]" if floor else ""))
    for spec in args.checkpoints:
        label, _, path = spec.rpartition("=")
        gen = load_scene_generator(resolve_scene_checkpoint(None if path == "default" else path))
        step = gen.meta.get("step", "?")
        for seed in args.seeds:
            scenes = gen.sample([s.traffic for s in reference], [s.num_lanes for s in reference],
                                attempt_seeds(seed, ids).tolist(), ids.tolist(), roads=[s.road.kind for s in reference])
            ours = {k: scene_mmd([s for s in scenes if s.road.kind == k], ref[k]) for k in kinds}
            means = geometric_mean_of(ours)  # the trainer's val_mmd, on this set
            cells = []
            for k in kinds:
                cell = f"{k} {means[k]:.2e}"
                if floor:
                    cell += f" [{max(ours[k][f]['mmd'] / floor_mmd[k][f]['mmd'] for f in FEATURES):.2f}]"
                cells.append(cell)
            print(f"{label or path} (step {step}) seed {seed}: all {means['all']:.3e}; " + "; ".join(cells), flush=True)


def warm_up(args: argparse.Namespace) -> None:
    from aigc_synth.scenes.sumo import SimOptions
    from aigc_synth.scenes.sumo_roads import prepare_road_run

    times = np.arange(30, args.until + 1, 30)
    curves = []
    for run in range(args.runs):
        for lanes in (2, 3, 4):
            r = prepare_road_run(args.road, args.traffic, lanes, np.random.default_rng([args.seed, run, lanes]), SimOptions())
            first = r.track.corridors[0][0]
            speeds = []
            try:
                with SumoRun.run(r.args) as traci:
                    V = traci.vehicle
                    for t in times:
                        traci.simulationStep(float(t))
                        v = [V.getSpeed(x) for x in traci.edge.getLastStepVehicleIDs(first.edge)
                             if V.getLanePosition(x) > r.track.lengths[first.edge] - 300.0]
                        speeds.append(np.mean(v) / r.speed_limit if v else np.nan)
            finally:
                r.routes.unlink(missing_ok=True)
            curves.append(speeds)
    mean = np.nanmean(np.array(curves), axis=0)
    print(f"{args.road}, {args.traffic}: mean speed / limit on the last 300 m of {first.edge}, {len(curves)} runs")
    for t, m in zip(times, mean):
        print(f"t = {t:5d} s  {m:.3f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    a = sub.add_parser("lane-drop-speeds")
    a.add_argument("--reference", required=True)
    a.add_argument("--floor", required=True)
    b = sub.add_parser("hard-braking")
    b.add_argument("--floor", required=True)
    b.add_argument("--scenes", type=int, default=400)
    b.add_argument("--roads", nargs="+", default=["straight", "curve"], choices=("straight", "curve", "merge", "lane_drop"))
    b.add_argument("--show", type=int, default=10, help="events listed per set")
    for p in (a, b):
        p.add_argument("--checkpoint", default="default", help="scene_ar generator.pt (default: bundled)")
        p.add_argument("--seed", type=int, default=1000)
    f = sub.add_parser("floors")
    f.add_argument("--sets", nargs="+", required=True,
                   help="SUMO scene folders: the model samples like the first; each of the others is a reference in turn")
    f.add_argument("--checkpoint", default="default", help="scene_ar generator.pt (default: bundled)")
    f.add_argument("--seed", type=int, default=7)
    d = sub.add_parser("sampling-seeds")
    d.add_argument("--reference", required=True)
    d.add_argument("--floor", required=True)
    d.add_argument("--checkpoint", default="default", help="scene_ar generator.pt (default: bundled)")
    d.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    w = sub.add_parser("warm-up")
    w.add_argument("--road", default="lane_drop", choices=("curve", "merge", "lane_drop"))
    w.add_argument("--traffic", default="heavy", choices=("light", "moderate", "heavy"))
    w.add_argument("--runs", type=int, default=6, help="runs per lane count (2, 3, 4)")
    w.add_argument("--until", type=int, default=1200, help="simulated seconds")
    w.add_argument("--seed", type=int, default=99)
    r = sub.add_parser("rank-checkpoints")
    r.add_argument("--reference", required=True)
    r.add_argument("--floor", default=None, help="a second SUMO set: also print the largest MMD / floor per kind")
    r.add_argument("--checkpoints", nargs="+", required=True, help="LABEL=PATH or PATH (default = bundled)")
    r.add_argument("--seeds", type=int, nargs="+", default=[0])
    m = sub.add_parser("merge-completion")
    m.add_argument("--sets", nargs="+", required=True, help="SUMO scene folders (their merge scenes are replayed)")
    m.add_argument("--checkpoint", default="default", help="scene_ar generator.pt (default: bundled)")
    m.add_argument("--seeds", type=int, nargs="+", default=[0], help="model sampling seeds, one model row per set and seed")
    m.add_argument("--workers", type=int, default=1, help="replay processes")
    args = ap.parse_args(argv)
    {"lane-drop-speeds": lane_drop_speeds, "hard-braking": hard_braking, "floors": floors, "sampling-seeds": sampling_seeds,
     "warm-up": warm_up, "merge-completion": merge_completion,
     "rank-checkpoints": rank_checkpoints}[args.what](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
