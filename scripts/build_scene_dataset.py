#!/usr/bin/env python
"""Build a SUMO ground-truth traffic-scene dataset as Parquet shards.

    python scripts/build_scene_dataset.py --num-scenes 3000 --seed 0 --out data/scenes --split train
    python scripts/build_scene_dataset.py --num-scenes 600 --seed 0 --out data/scenes --split heldout

Writes ``<out>/<split>/part-00000.parquet, ...`` (schema: ``aigc_synth.scenes.format.scene_arrow_schema``,
``--shard-size`` scenes each) and ``<out>/<split>/manifest.json``, each file atomically (temporary
name, then ``os.replace``); shards left from an earlier, larger build of the split are removed.
The scenes are balanced over traffic levels x lane counts (``sumo_scene_dataset``). Each split
draws from its own seed derived from ``(--seed, --split)``, so ``train`` and ``heldout`` built with
the same ``--seed`` never share a simulation run. Needs ``pip install 'aigc_synth[sim]'``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from aigc_synth.io.atomic import atomic_write_with
from aigc_synth.scenes.dataset import split_seed
from aigc_synth.scenes.format import LANE_COUNTS, ROAD_KINDS, TRAFFIC_LEVELS, scenes_to_table
from aigc_synth.scenes.sumo import SimOptions, sumo_model_id
from aigc_synth.scenes.sumo_dataset import sumo_scene_dataset


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--num-scenes", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--split", default="train", help="split name; also keys the seed (default: train)")
    ap.add_argument("--shard-size", type=int, default=1000, help="scenes per Parquet file")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="SUMO processes (default: all cores)")
    ap.add_argument("--traffic", nargs="+", default=list(TRAFFIC_LEVELS), choices=TRAFFIC_LEVELS)
    ap.add_argument("--lanes", nargs="+", type=int, default=list(LANE_COUNTS))
    ap.add_argument("--scenes-per-run", type=int, default=SimOptions().scenes_per_run,
                    help="scenes cut from one simulation run (default 20; evaluation sets: 5, so that a set holds many "
                         "independent runs and two sets differ as little as the simulator allows, docs/scenes.md)")
    ap.add_argument("--roads", nargs="+", default=["straight"], choices=ROAD_KINDS,
                    help="road kinds, balanced like traffic and lanes (default: straight)")
    args = ap.parse_args(argv)
    if args.num_scenes < 1 or args.shard_size < 1 or args.scenes_per_run < 1:
        ap.error("--num-scenes, --shard-size and --scenes-per-run must be >= 1")

    t0 = time.perf_counter()
    seed = split_seed(args.seed, args.split)
    scenes = sumo_scene_dataset(args.num_scenes, seed, args.traffic, args.lanes, workers=args.workers, road_kinds=args.roads,
                                options=SimOptions(scenes_per_run=args.scenes_per_run))
    seconds = time.perf_counter() - t0

    out = args.out / args.split
    out.mkdir(parents=True, exist_ok=True)
    shards = []
    for k, start in enumerate(range(0, len(scenes), args.shard_size)):
        name = f"part-{k:05d}.parquet"
        table = scenes_to_table(scenes[start:start + args.shard_size])
        atomic_write_with(out / name, lambda p, t=table: pq.write_table(t, p))
        shards.append(name)
    for stale in sorted(set(p.name for p in out.glob("part-*.parquet")) - set(shards)):
        (out / stale).unlink()

    counts = Counter(sc.traffic for sc in scenes)
    agents = {t: float(np.mean([len(sc.agents) for sc in scenes if sc.traffic == t])) for t in counts}
    manifest = {
        "split": args.split, "seed": args.seed, "split_seed": seed, "num_scenes": len(scenes), "model_id": sumo_model_id(),
        "traffic_levels": args.traffic, "lane_counts": args.lanes, "road_kinds": args.roads, "scenes_per_run": args.scenes_per_run,
        "shards": shards,
        "scenes_per_traffic": dict(counts), "mean_agents_per_traffic": agents, "build_seconds": round(seconds, 1),
    }
    atomic_write_with(out / "manifest.json", lambda p: p.write_text(json.dumps(manifest, indent=2) + "\n"))

    for t in args.traffic:
        print(f"{t:>9}: {counts[t]:>6} scenes, {agents.get(t, 0.0):5.1f} agents/scene")
    print(f"{len(scenes)} scenes in {seconds:.1f} s ({args.workers} workers) -> {out} ({len(shards)} shards)")
    return 0


if __name__ == "__main__":  # required: the SUMO workers are spawned processes that import this file
    raise SystemExit(main())
