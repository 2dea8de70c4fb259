#!/usr/bin/env python
"""Generation throughput: the Ray job vs a single-process ceiling vs a plain loop, in one run.

    python scripts/bench_generate.py                      # 10k-image job, bundled model
    python scripts/bench_generate.py --num-samples 2000   # quicker

Prints, with the same model on the same machine:
  (a) ceiling:    generator forward + PNG encode in one process, best of 1..N torch threads;
  (b) Ray job:    `aigc-synth generate` (balanced plan) via run_generation, with and without Ray start-up;
  (c) plain loop: a single process that generates batches and saves each image with
                  torchvision.utils.save_image, as the founding document's example does;
and the ratios job ÷ ceiling and job ÷ plain loop; (b') repeats the job with PNG encoding as a
separate CPU stage (resources.png_stage=true) for comparison. It also reports the share of PNG encoding in
the ceiling's per-image cost (the most a separate PNG stage could save when cores are free).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aigc_synth.io.checkpoint import load_generator  # noqa: E402
from aigc_synth.io.checkpoint import resolve_checkpoint_path  # noqa: E402
from aigc_synth.sampling.plan import ConditionPlan  # noqa: E402
from aigc_synth.sampling.sampler import encode_png, generate_images  # noqa: E402
from aigc_synth.schema import DEFAULT_SCHEMA  # noqa: E402


def ceiling(gen, n: int, threads: int) -> dict[str, float]:
    torch.set_num_threads(threads)
    plan = ConditionPlan({"kind": "grid"}, DEFAULT_SCHEMA, n, 0)
    ids = np.arange(n)
    codes, seeds = plan.codes_for(ids), plan.seeds_for(ids)
    generate_images(gen, codes[:64], seeds[:64])  # warm-up
    t0 = time.perf_counter()
    images = generate_images(gen, codes, seeds)
    t_gen = time.perf_counter() - t0
    t0 = time.perf_counter()
    for img in images:
        encode_png(img)
    t_png = time.perf_counter() - t0
    return {"threads": threads, "img_per_s": n / (t_gen + t_png), "png_share": t_png / (t_gen + t_png)}


def plain_loop(gen, n: int, out: Path, batch: int = 64) -> float:
    """The founding document's way: torch default threads, batches, torchvision.save_image per image."""
    from torchvision.utils import save_image

    torch.set_num_threads(os.cpu_count() or 1)
    out.mkdir(parents=True, exist_ok=True)
    rng = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    done = 0
    with torch.no_grad():
        while done < n:
            b = min(batch, n - done)
            z = torch.randn(b, gen.z_dim, generator=rng)
            codes = torch.stack([torch.randint(0, c, (b,), generator=rng) for c in DEFAULT_SCHEMA.cardinalities], 1)
            fake = gen.module(z, codes)
            for i in range(b):
                save_image(fake[i], out / f"{done + i:07d}.png", normalize=True, value_range=(-1, 1))
            done += b
    return n / (time.perf_counter() - t0)


def ray_job(checkpoint: str, n: int, out: Path, actors: int | None, batch_size: int, png_stage: bool = False) -> dict:
    from aigc_synth.config import compose
    from aigc_synth.jobs.generate import run_generation

    overrides = [f"output_dir={out}", f"job.checkpoint={checkpoint}", f"job.num_samples={n}", "job.shard_size=250",
                 f"resources.batch_size={batch_size}", "preview=false", f"resources.png_stage={str(png_stage).lower()}"]
    if actors:
        overrides.append(f"resources.actors={actors}")
    t0 = time.perf_counter()
    run_generation(compose("generate", overrides), progress=False, log=lambda *_: None)
    wall = time.perf_counter() - t0
    run = json.loads((Path(out) / "run.json").read_text())  # this run's timings and resources
    return {"with_start_img_per_s": n / wall, "without_start_img_per_s": run["timings"]["images_per_s"],
            "ray_start_s": run["timings"]["ray_start_s"], "wall_s": wall, "resources": run["resources"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="default")
    ap.add_argument("--num-samples", type=int, default=10_000, help="images in the Ray job")
    ap.add_argument("--probe-samples", type=int, default=2_000, help="images for the ceiling and the plain loop")
    ap.add_argument("--actors", type=int, default=None, help="default: the job's own automatic sizing")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--json", type=str, default=None, help="also write the figures here")
    args = ap.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ckpt = str(resolve_checkpoint_path(args.checkpoint))
    gen = load_generator(ckpt)
    tmp = Path(tempfile.mkdtemp(prefix="aigc-bench-"))
    try:
        ceilings = [ceiling(gen, args.probe_samples, t) for t in range(1, (os.cpu_count() or 1) + 1)]
        best = max(ceilings, key=lambda c: c["img_per_s"])
        plain = plain_loop(gen, args.probe_samples, tmp / "plain")
        job = ray_job(ckpt, args.num_samples, tmp / "job", args.actors, args.batch_size)
        job_png_stage = ray_job(ckpt, args.num_samples, tmp / "job_png", args.actors, args.batch_size, png_stage=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result = {
        "machine": {"cpus": os.cpu_count(), "torch": torch.__version__},
        "model": {"path": ckpt, "family": gen.family, "resolution": gen.resolution},
        "ceiling": ceilings, "ceiling_best_img_per_s": best["img_per_s"], "plain_loop_img_per_s": plain,
        "job": job, "job_separate_png_stage": job_png_stage, "num_samples": args.num_samples, "probe_samples": args.probe_samples,
        "ratio_job_over_ceiling": job["without_start_img_per_s"] / best["img_per_s"],
        "ratio_job_over_ceiling_with_start": job["with_start_img_per_s"] / best["img_per_s"],
        "ratio_job_over_plain_loop": job["without_start_img_per_s"] / plain,
        "ratio_job_over_plain_loop_with_start": job["with_start_img_per_s"] / plain,
    }
    print(f"(a) ceiling, one process:        {best['img_per_s']:8.1f} img/s at {best['threads']} thread(s) "
          f"(PNG encode = {best['png_share']:.0%} of the per-image cost)   [" +
          ", ".join(f"{c['threads']}t: {c['img_per_s']:.1f}" for c in ceilings) + "]")
    print(f"(b) Ray job, {args.num_samples} images:       {job['without_start_img_per_s']:8.1f} img/s without Ray start-up, "
          f"{job['with_start_img_per_s']:.1f} img/s with it (Ray start {job['ray_start_s']:.1f} s; "
          f"{job['resources']['actors']} actors × {job['resources']['cpus_per_actor']} CPU)")
    print(f"(b') same job, PNG as a separate CPU stage: {job_png_stage['without_start_img_per_s']:8.1f} img/s without start-up "
          f"({job_png_stage['without_start_img_per_s'] / job['without_start_img_per_s']:.2f}× the in-actor PNG job)")
    print(f"(c) plain loop (save_image):     {plain:8.1f} img/s")
    print(f"job ÷ ceiling:    {result['ratio_job_over_ceiling']:.2f}  (with start-up {result['ratio_job_over_ceiling_with_start']:.2f})")
    print(f"job ÷ plain loop: {result['ratio_job_over_plain_loop']:.2f}  (with start-up {result['ratio_job_over_plain_loop_with_start']:.2f})")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
