#!/usr/bin/env python
"""Generation throughput: where the time goes, against fair ceilings, in one run.

    python scripts/bench_generate.py                          # the README table (10k + 50k jobs, ~6 min here)
    python scripts/bench_generate.py --num-samples 2000 --large-samples 0   # quicker

Every figure comes from this one run, same model, same machine:
  compute-only ceiling  forward + PNG encode in one process, no writes, best of 1..N torch threads;
  one-thread serial     forward + encode + the job's own shard writes (write_shard), one thread;
  fair ceiling          one process doing exactly the job's work (forward, encode, the same writes) with
                        all cores: the best of (torch on all cores, shards serial) and (one shard per
                        thread, N threads: torch ops, zlib and file writes release the GIL);
  plain loop            the founding document's way (torchvision save_image per image);
  10k / 50k job         `aigc-synth generate` through run_generation: steady state (from the shards' own
                        timestamps, after each actor's first shard) and with start-up, plus the job's
                        profile (run.json "profile": seconds per stage per image, actors' busy share);
  null pipeline         the same job on the `null` family (no network: what a GPU node sees) with Ray
                        limited to 1 and then 2 CPUs, i.e. how the pipeline itself scales;
  writes                one 500-image shard's folder written four ways (no sync, fsync per file,
                        one syncfs per shard - the job's choice -, one tar + fsync);
and bytes written per image. ``--json FILE`` keeps everything.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tarfile
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aigc_synth.io.checkpoint import export_generator, load_generator, resolve_checkpoint_path  # noqa: E402
from aigc_synth.io.shards import sync_folder, write_shard  # noqa: E402
from aigc_synth.models.registry import build_generator  # noqa: E402
from aigc_synth.sampling.image import ImageEncoder  # noqa: E402
from aigc_synth.sampling.base import SampleBatch  # noqa: E402
from aigc_synth.sampling.plan import ConditionPlan  # noqa: E402
from aigc_synth.sampling.sampler import encode_png, generate_images  # noqa: E402
from aigc_synth.schema import DEFAULT_SCHEMA  # noqa: E402

SHARD = 500


def _plan(n: int):
    plan = ConditionPlan({"kind": "grid"}, DEFAULT_SCHEMA, n, 0)
    ids = np.arange(n)
    return ids, plan.codes_for(ids), plan.seeds_for(ids)


def compute_ceiling(gen, n: int, threads: int) -> dict[str, float]:
    torch.set_num_threads(threads)
    _, codes, seeds = _plan(n)
    generate_images(gen, codes[:64], seeds[:64])  # warm-up
    t0 = time.perf_counter()
    images = generate_images(gen, codes, seeds)
    t_gen = time.perf_counter() - t0
    t0 = time.perf_counter()
    for img in images:
        encode_png(img)
    t_png = time.perf_counter() - t0
    return {"threads": threads, "img_per_s": n / (t_gen + t_png), "png_share": t_png / (t_gen + t_png)}


def _job_dict(gen, out: Path) -> dict:
    return {"schema": DEFAULT_SCHEMA.to_dict(), "model_id": gen.model_id, "resolution": gen.resolution, "formats": ["parquet", "png"],
            "output_dir": str(out)}


def _one_shard(gen, encoder, out: Path, shard: int, ids, codes, seeds) -> None:
    """Exactly a job actor's work for one shard: forward, encode, the same atomic writes."""
    images = generate_images(gen, codes, seeds)
    columns = {"seed": seeds}
    for f, (name, values) in enumerate(DEFAULT_SCHEMA.factors):
        columns[name] = np.asarray(values, dtype=object)[codes[:, f]]
    encoded = encoder(SampleBatch(sample_ids=ids, columns=columns, images=images, codes=codes), shard, ["parquet", "png"])
    write_shard(out, shard, sample_ids=ids, table=encoded.table, files=encoded.files, formats=["parquet", "png"])


def fair_ceiling(gen, n: int, out: Path, threads: int, per_thread_shards: bool) -> float:
    """One process, the job's work; either torch on ``threads`` cores with shards in series, or one
    shard per thread on ``threads`` threads (torch single-threaded in each)."""
    ids, codes, seeds = _plan(n)
    encoder = ImageEncoder(_job_dict(gen, out))
    shards = [(k, slice(s, min(s + SHARD, n))) for k, s in enumerate(range(0, n, SHARD))]
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    generate_images(gen, codes[:64], seeds[:64])  # warm-up
    t0 = time.perf_counter()
    if per_thread_shards:
        torch.set_num_threads(1)
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda ks: _one_shard(gen, encoder, out, ks[0], ids[ks[1]], codes[ks[1]], seeds[ks[1]]), shards))
    else:
        torch.set_num_threads(threads)
        for k, sl in shards:
            _one_shard(gen, encoder, out, k, ids[sl], codes[sl], seeds[sl])
    return n / (time.perf_counter() - t0)


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
    rows = sum(p["rows"] for p, e in zip(profiles, ends) if p["start"] >= t0 - 1e-9)
    span = max(ends) - t0
    return rows / span if span > 0 and rows else None


def ray_job(checkpoint: str, n: int, out: Path, num_cpus: int | None = None, extra: tuple[str, ...] = ()) -> dict:
    import ray

    from aigc_synth.config import compose
    from aigc_synth.jobs.generate import run_generation

    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    overrides = [f"output_dir={out}", f"job.checkpoint={checkpoint}", f"job.num_samples={n}", f"job.shard_size={SHARD}",
                 "preview=false", *extra]
    t0 = time.perf_counter()
    run_generation(compose("generate", overrides), progress=False, log=lambda *_: None)
    wall = time.perf_counter() - t0
    run = json.loads((out / "run.json").read_text())
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    ray.shutdown()
    return {"img_per_s_with_start": n / wall, "img_per_s_without_ray_start": run["timings"]["images_per_s"],
            "ray_start_s": run["timings"]["ray_start_s"], "profile": run["profile"], "resources": run["resources"],
            "bytes_per_image": size / n, "shard_profiles": run["profile"].get("per_shard", [])}


def write_variants(out: Path) -> dict[str, float]:
    """ms to write one 500-image shard folder, four ways (best of 3)."""
    from aigc_synth.data.procedural import render_scenes

    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    imgs = render_scenes(np.stack([rng.integers(0, c, SHARD) for c in DEFAULT_SCHEMA.cardinalities], 1), list(range(SHARD))).images
    files = [(f"{i:09d}.png", encode_png(im)) for i, im in enumerate(imgs)]

    def plain(d: Path) -> None:
        d.mkdir()
        for name, data in files:
            (d / name).write_bytes(data)

    def fsync_each(d: Path) -> None:
        d.mkdir()
        for name, data in files:
            with open(d / name, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())

    def syncfs_once(d: Path) -> None:
        plain(d)
        sync_folder(d, [n for n, _ in files])

    def tar_fsync(d: Path) -> None:
        d.mkdir()
        with open(d / "shard.tar", "wb") as fh:
            with tarfile.open(fileobj=fh, mode="w") as tar:
                for name, data in files:
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
            fh.flush()
            os.fsync(fh.fileno())

    result = {}
    for name, fn in (("no sync (durable only by luck)", plain), ("fsync per file", fsync_each),
                     ("one syncfs per shard (the job)", syncfs_once), ("one tar + fsync", tar_fsync)):
        best = float("inf")
        for k in range(3):
            d = out / f"{fn.__name__}_{k}"
            t0 = time.perf_counter()
            fn(d)
            best = min(best, time.perf_counter() - t0)
        result[name] = round(best * 1000, 1)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="default")
    ap.add_argument("--num-samples", type=int, default=10_000, help="images in the first job")
    ap.add_argument("--large-samples", type=int, default=50_000, help="images in the second job (0 = skip)")
    ap.add_argument("--null-samples", type=int, default=20_000, help="images per null-family job")
    ap.add_argument("--probe-samples", type=int, default=3_000, help="images for ceilings and the plain loop")
    ap.add_argument("--json", type=str, default=None)
    args = ap.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    cores = os.cpu_count() or 1
    ckpt = str(resolve_checkpoint_path(args.checkpoint))
    gen = load_generator(ckpt)
    tmp = Path(tempfile.mkdtemp(prefix="aigc-bench-", dir=os.environ.get("AIGC_BENCH_TMP")))
    res: dict = {"machine": {"cpus": cores, "torch": torch.__version__}, "model": {"path": ckpt, "family": gen.family}}
    try:
        res["compute_ceiling"] = [compute_ceiling(gen, args.probe_samples, t) for t in range(1, cores + 1)]
        res["one_thread_serial_img_per_s"] = fair_ceiling(gen, args.probe_samples, tmp / "serial", 1, per_thread_shards=False)
        fair = {"torch on all cores, shards in series": fair_ceiling(gen, args.probe_samples, tmp / "f1", cores, False),
                f"one shard per thread x {cores}": fair_ceiling(gen, args.probe_samples, tmp / "f2", cores, True)}
        res["fair_ceiling"] = fair
        res["plain_loop_img_per_s"] = plain_loop(gen, args.probe_samples, tmp / "plain")
        res["writes_ms_per_500_image_shard"] = write_variants(tmp / "writes")
        res["job_small"] = ray_job(ckpt, args.num_samples, tmp / "job10k")
        if args.large_samples:
            res["job_large"] = ray_job(ckpt, args.large_samples, tmp / "job50k")
        null_ckpt = tmp / "null.pt"
        export_generator(null_ckpt, family="null", model_params={"resolution": gen.resolution, "z_dim": gen.z_dim},
                         schema=DEFAULT_SCHEMA, generator=build_generator("null", DEFAULT_SCHEMA.cardinalities,
                                                                         resolution=gen.resolution, z_dim=gen.z_dim))
        res["null_pipeline"] = {f"{c} CPU": ray_job(str(null_ckpt), args.null_samples, tmp / f"null{c}", num_cpus=c)
                                for c in (1, 2)}
        # the GPU-node shape (encode + write as a CPU task stage), forced on here to see what it costs without a GPU
        res["null_pipeline_cpu_stage_2_cpu"] = ray_job(str(null_ckpt), args.null_samples, tmp / "null_stage", num_cpus=2,
                                                       extra=("resources.png_stage=true",))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    best_compute = max(res["compute_ceiling"], key=lambda c: c["img_per_s"])
    best_fair = max(fair.values())
    print(f"compute-only ceiling (forward + PNG, no writes): {best_compute['img_per_s']:8.1f} img/s at {best_compute['threads']} "
          f"thread(s); PNG = {best_compute['png_share']:.0%} of it")
    print(f"one-thread serial (the job's work):              {res['one_thread_serial_img_per_s']:8.1f} img/s "
          f"(x {cores} cores = {cores * res['one_thread_serial_img_per_s']:.1f})")
    for name, rate in fair.items():
        print(f"fair ceiling, {name:<35s}{rate:8.1f} img/s")
    print(f"plain loop (save_image):                         {res['plain_loop_img_per_s']:8.1f} img/s")
    for key in ("job_small", "job_large"):
        if key in res:
            j = res[key]
            n = j["profile"]["rows"]
            steady = j["steady_img_per_s"] = steady_rate_from(j)
            print(f"job {n:>6d} images: steady {steady or float('nan'):8.1f} img/s, {j['img_per_s_without_ray_start']:.1f} without Ray start, "
                  f"{j['img_per_s_with_start']:.1f} with it; steady / fair = {(steady or 0) / best_fair:.2f}, "
                  f"steady / (cores x serial) = {(steady or 0) / (cores * res['one_thread_serial_img_per_s']):.2f}; "
                  f"{j['bytes_per_image']:.0f} B/image written")
            print(f"   profile ms/image: {j['profile']['stage_ms_per_row']}; actors busy {j['profile']['actor_busy_share']:.0%}")
    for name, j in res["null_pipeline"].items():
        j["steady_img_per_s"] = steady_rate_from(j)
        print(f"null pipeline, {name}: steady {j['steady_img_per_s'] or float('nan'):8.1f} img/s "
              f"({j['img_per_s_without_ray_start']:.1f} without Ray start); ms/image {j['profile']['stage_ms_per_row']}")
    stage = res["null_pipeline_cpu_stage_2_cpu"]
    print(f"null pipeline, 2 CPU, encode + write as a CPU stage (the GPU-node shape): {stage['img_per_s_without_ray_start']:.1f} img/s "
          f"without Ray start (in-actor: {res['null_pipeline']['2 CPU']['img_per_s_without_ray_start']:.1f})")
    print("writes, ms per 500-image shard folder:", res["writes_ms_per_500_image_shard"])
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2, default=float))


def steady_rate_from(job: dict) -> float | None:
    return steady_rate(job.get("shard_profiles", [])) or job["img_per_s_without_ray_start"]


if __name__ == "__main__":
    main()
