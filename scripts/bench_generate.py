#!/usr/bin/env python
"""Generation throughput of image jobs, against a fair ceiling, side by side in one run.

    python scripts/bench_generate.py --json throughput.json                  # docs/benchmarks.md table (~10 min here)
    python scripts/bench_generate.py --job-samples 2000 --probe-samples 600 --null-samples 4000   # quicker

For every model given with ``--model NAME=CHECKPOINT`` (default: the bundled layout model and the
condition-only cGAN), from the same resolved job (``aigc-synth generate``'s defaults, only
``job.num_samples`` and ``job.checkpoint`` changed):

  one process, one thread   a job actor's exact work (:class:`~aigc_synth.jobs.worker.ShardWorker`:
                            scene + layout for layout models, forward, encode, atomic shard writes),
                            shard after shard, torch on one thread;
  process pool (ceiling)    the same work in one process per core, shards dealt round-robin, timed
                            from the moment every process has loaded its model: what the machine
                            can do without Ray;
  Ray job                   ``aigc-synth generate`` through ``run_generation``: steady state (from the
                            shards' own timestamps, after every actor's first shard), without Ray's
                            start-up, and wall clock; its profile (ms per image per stage, actors' busy
                            share, time waiting on Ray);

then the ``null`` family (no network: the pipeline's own ceiling, what a GPU node sees) as a Ray
job on 1 and on 2 CPUs, and with encode + write as a separate CPU stage (the GPU-node shape).
``--json FILE`` keeps every figure.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np


def resolve_job(checkpoint: str, n: int, out: Path, extra: tuple[str, ...] = ()) -> dict:
    """The job dict an actor receives for ``aigc-synth generate job.checkpoint=… job.num_samples=n``."""
    import os

    from aigc_synth.config import compose
    from aigc_synth.jobs.cluster import plan_pool
    from aigc_synth.jobs.spec import validate_job, with_pool_shard_size

    cfg = compose("generate", [f"output_dir={out}", f"job.checkpoint={checkpoint}", f"job.num_samples={n}", *extra])
    pool = plan_pool(cfg.resources, float(os.cpu_count() or 1), 0.0)  # the shards the Ray job on this machine gets
    return asdict(with_pool_shard_size(validate_job(cfg), pool.actors))


def _worker_process(job: dict, shards: list[int], ready, go, results) -> None:
    """One process of the ceiling pool: load the sampler, say ready, wait, commit its shards."""
    from aigc_synth.jobs.worker import ShardWorker

    worker = ShardWorker(job, Path(job["checkpoint"]).read_bytes(), torch_threads=1, use_gpu=False)
    worker.sampler.sample(np.arange(4))  # warm-up (pure function of the ids: nothing is written)
    ready.release()
    go.wait()
    profiles = []
    for s in shards:
        out = worker({"id": np.asarray([s])})
        profiles.append(json.loads(out["profile"][0]))
    results.put((time.time(), profiles))


def local_rate(job: dict, processes: int) -> dict:
    """The job's own work in ``processes`` plain processes (no Ray): img/s and ms per image per stage."""
    Path(job["output_dir"]).mkdir(parents=True, exist_ok=True)
    ctx = mp.get_context("spawn")  # a clean interpreter per process, as a Ray worker is
    ready, go, results = ctx.Semaphore(0), ctx.Event(), ctx.Queue()
    shards = list(range(job["num_shards"]))
    procs = [ctx.Process(target=_worker_process, args=(job, shards[k::processes], ready, go, results))
             for k in range(processes)]
    for p in procs:
        p.start()
    for _ in procs:
        ready.acquire()
    t0 = time.time()
    go.set()
    ends, profiles = [], []
    for _ in procs:
        end, prof = results.get()
        ends.append(end)
        profiles.extend(prof)
    for p in procs:
        p.join()
    rows = sum(p["rows"] for p in profiles)
    stages = ("sample", "encode", "files", "sync", "parquet", "hash")
    return {"processes": processes, "img_per_s": rows / (max(ends) - t0),
            "stage_ms_per_row": {k: round(1000 * sum(p.get(k, 0.0) for p in profiles) / rows, 3) for k in stages}}


def steady_rate(profiles: list[dict]) -> float | None:
    """Rows per second between the moment every actor has finished its first shard and the last shard's end."""
    if len(profiles) < 3:
        return None
    first_end: dict[int, float] = {}
    for p in profiles:
        end = p["start"] + p["busy"]
        first_end[p["pid"]] = min(first_end.get(p["pid"], end), end)
    t0 = max(first_end.values())
    ends = [p["start"] + p["busy"] for p in profiles]
    rows = sum(p["rows"] for p in profiles if p["start"] >= t0 - 1e-9)
    span = max(ends) - t0
    return rows / span if span > 0 and rows else None


def ray_job(checkpoint: str, n: int, out: Path, num_cpus: int | None = None, extra: tuple[str, ...] = ()) -> dict:
    """One ``aigc-synth generate`` run on a fresh local Ray; its rates and profile."""
    import ray

    from aigc_synth.config import compose
    from aigc_synth.jobs.generate import run_generation

    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    overrides = [f"output_dir={out}", f"job.checkpoint={checkpoint}", f"job.num_samples={n}", "preview=false", *extra]
    t0 = time.perf_counter()
    run_generation(compose("generate", overrides), progress=False, log=lambda *_: None)
    wall = time.perf_counter() - t0
    run = json.loads((out / "run.json").read_text())
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    ray.shutdown()
    profile = run["profile"]
    return {"img_per_s_steady": steady_rate(profile.get("per_shard", [])) or run["timings"]["images_per_s"],
            "img_per_s_without_ray_start": run["timings"]["images_per_s"], "img_per_s_wall": n / wall,
            "ray_start_s": run["timings"]["ray_start_s"], "resources": run["resources"],
            "stage_ms_per_row": profile["stage_ms_per_row"], "actor_busy_share": profile["actor_busy_share"],
            "waiting_on_ray_s": profile["waiting_on_ray_s"], "bytes_per_image": size / n}


def null_checkpoint(path: Path, like: dict) -> str:
    """A ``null``-family checkpoint (no network) of the same resolution and schema as ``like``."""
    from aigc_synth.models.exported import export_generator
    from aigc_synth.models.registry import build_generator
    from aigc_synth.schema import ConditionSchema

    schema = ConditionSchema.from_dict(like["schema"])
    params = {"resolution": like["resolution"], "z_dim": 64}
    export_generator(path, family="null", model_params=params, schema=schema,
                     generator=build_generator("null", schema.cardinalities, **params))
    return str(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", default=None, metavar="NAME=CHECKPOINT",
                    help="a model to measure (repeatable); default: bundled layout model and the cGAN")
    ap.add_argument("--job-samples", type=int, default=10_000, help="images per Ray job")
    ap.add_argument("--probe-samples", type=int, default=2_000, help="images for the one-process and process-pool rates")
    ap.add_argument("--null-samples", type=int, default=20_000, help="images per null-family job")
    ap.add_argument("--json", type=str, default=None)
    args = ap.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    models = args.model or ["layout_gan (bundled default)=default", "cgan (condition-only)=aigc_synth/assets/cgan_generator.pt"]
    cores = os.cpu_count() or 1
    tmp = Path(tempfile.mkdtemp(prefix="aigc-bench-", dir=os.environ.get("AIGC_BENCH_TMP")))
    res: dict = {"machine": {"cpus": cores}, "models": {}}
    try:
        for k, spec in enumerate(models):
            name, _, ckpt = spec.partition("=")
            row = res["models"][name] = {"checkpoint": ckpt}
            row["one_process_one_thread"] = local_rate(resolve_job(ckpt, args.probe_samples, tmp / f"m{k}-serial"), 1)
            row["process_pool"] = local_rate(resolve_job(ckpt, args.probe_samples, tmp / f"m{k}-pool"), cores)
            row["ray_job"] = ray_job(ckpt, args.job_samples, tmp / f"m{k}-job")
            row["job_steady_over_pool"] = row["ray_job"]["img_per_s_steady"] / row["process_pool"]["img_per_s"]
            print(f"{name}: one process {row['one_process_one_thread']['img_per_s']:.1f} img/s, "
                  f"{cores}-process pool {row['process_pool']['img_per_s']:.1f}, Ray job steady "
                  f"{row['ray_job']['img_per_s_steady']:.1f} / without Ray start {row['ray_job']['img_per_s_without_ray_start']:.1f} "
                  f"/ wall {row['ray_job']['img_per_s_wall']:.1f}; steady / pool = {row['job_steady_over_pool']:.2f}; "
                  f"ms/image {row['ray_job']['stage_ms_per_row']}; actors busy {row['ray_job']['actor_busy_share']:.0%}", flush=True)
        like = resolve_job("default", 8, tmp / "like")
        null = null_checkpoint(tmp / "null.pt", like)
        res["null_pipeline"] = {f"{c} CPU": ray_job(null, args.null_samples, tmp / f"null{c}", num_cpus=c) for c in (1, 2)}
        res["null_pipeline"]["2 CPU, encode + write as a CPU stage"] = ray_job(
            null, args.null_samples, tmp / "null-stage", num_cpus=2, extra=("resources.png_stage=true",))
        for name, j in res["null_pipeline"].items():
            print(f"null pipeline, {name}: steady {j['img_per_s_steady']:.1f} img/s, "
                  f"without Ray start {j['img_per_s_without_ray_start']:.1f}; ms/image {j['stage_ms_per_row']}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2, default=float))


if __name__ == "__main__":
    main()
