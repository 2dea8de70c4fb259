#!/usr/bin/env python
"""Scene-job throughput: the Ray job vs a plain single-process loop, side by side in one run.

    python scripts/bench_scene_generate.py                     # 20k scenes, bundled scene model
    python scripts/bench_scene_generate.py --num-samples 5000  # quicker

(a) plain loop: one process (all cores for torch) samples the same balanced grid in chunks of
    ``shard_size`` with the same generator calls and writes one Parquet file per chunk;
(b) Ray job: ``aigc-synth generate job=scenes`` through ``run_generation`` (actors sized by the
    planner), timed with and without Ray start-up.
Both produce the same scenes (the job is a pure function of seeds); the script checks that the
first shard's rows are equal, then prints scenes/s and the ratio job / loop.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from aigc_synth.config import compose
from aigc_synth.jobs.generate import run_generation
from aigc_synth.sampling.image import job_plan
from aigc_synth.sampling.scene import scene_cells, scene_schema
from aigc_synth.scenes.format import scenes_to_table
from aigc_synth.models.scene_families import load_scene_generator, resolve_scene_checkpoint
from aigc_synth.seeds import attempt_seeds


def plain_loop(checkpoint: str | None, n: int, shard: int, seed: int, out: Path) -> tuple[float, list]:
    import torch

    torch.set_num_threads(torch.get_num_threads())
    gen = load_scene_generator(resolve_scene_checkpoint(checkpoint))
    schema = scene_schema(gen.traffic, gen.lanes, gen.roads)  # the job's cells: every road kind the model knows
    plan = job_plan({"plan": {"kind": "grid", "factors": {}}, "schema": schema.to_dict(), "num_samples": n, "seed": seed})
    t0 = time.perf_counter()
    first = None
    for k, start in enumerate(range(0, n, shard)):
        ids = np.arange(start, min(start + shard, n))
        traffic, lanes, roads = scene_cells(schema, plan.codes_for(ids))
        table = scenes_to_table(gen.sample(traffic, lanes, attempt_seeds(seed, ids).tolist(), ids.tolist(), compute_batch=64, roads=roads))
        pq.write_table(table, out / f"part-{k:05d}.parquet", compression="snappy")
        first = first or table.to_pylist()
    return n / (time.perf_counter() - t0), first


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--num-samples", type=int, default=20_000)
    ap.add_argument("--shard-size", type=int, default=500)
    ap.add_argument("--checkpoint", default=None, help="scene generator.pt (default: bundled)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_scenes_") as tmp:
        loop_dir = Path(tmp) / "loop"
        loop_dir.mkdir()
        loop_rate, loop_first = plain_loop(args.checkpoint, args.num_samples, args.shard_size, args.seed, loop_dir)
        overrides = ["job=scenes", f"output_dir={Path(tmp) / 'job'}", f"job.num_samples={args.num_samples}",
                     f"job.shard_size={args.shard_size}", f"job.seed={args.seed}", "preview=false"]
        if args.checkpoint:
            overrides.append(f"job.checkpoint={args.checkpoint}")
        t0 = time.perf_counter()
        run_generation(compose("generate", overrides), progress=False)
        total = time.perf_counter() - t0
        run = json.loads((Path(tmp) / "job" / "run.json").read_text())
        job_first = pq.read_table(Path(tmp) / "job" / "parquet" / "part-00000.parquet").to_pylist()
    steady = run["timings"]["images_per_s"]
    result = {"num_samples": args.num_samples, "shard_size": args.shard_size, "plain_loop_scenes_per_s": round(loop_rate, 1),
              "job_scenes_per_s_without_ray_start": steady, "job_scenes_per_s_with_ray_start": round(args.num_samples / total, 1),
              "job_over_loop": round(steady / loop_rate, 2), "actors": run["resources"]["actors"],
              "cpus_per_actor": run["resources"]["cpus_per_actor"], "same_rows": loop_first == job_first,
              "profile_ms_per_scene": run["profile"]["stage_ms_per_row"], "actor_busy_share": run["profile"]["actor_busy_share"]}
    print(json.dumps(result, indent=2))
    return 0 if result["same_rows"] else 1


if __name__ == "__main__":
    sys.exit(main())
