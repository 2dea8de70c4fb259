"""File names of a job's output and the builders of its two JSON records.

* ``job.json`` – the job's fingerprint, written before the first shard: a rerun with the same
  spec and model resumes; a different one is refused.
* ``manifest.json`` – written last (the commit point of the whole job); a pure function of the
  job spec and model, so a resumed run writes the same bytes as a clean one.
* ``run.json`` – how this particular run went (resources, timings, shards skipped).
"""

from __future__ import annotations

import platform
from typing import Any

import numpy as np

MANIFEST = "manifest.json"
JOB_FINGERPRINT = "job.json"
RUN_INFO = "run.json"
PREVIEW = "preview.png"
MANIFEST_FORMAT = "aigc_synth.manifest/v1"
#: Everything a job writes at the top of its output directory (``overwrite=true`` removes these).
OUTPUT_ENTRIES = ("parquet", "png", MANIFEST, JOB_FINGERPRINT, RUN_INFO, PREVIEW)


def job_fingerprint(job) -> dict[str, Any]:
    """What must match for a rerun to resume into an output directory."""
    return {"job": job.job_spec, "model_id": job.model_id, "schema": job.schema}


def job_sources(job) -> dict[str, str]:
    """Where this run read its model (and scenes) from: machine-specific, so in ``run.json`` only."""
    names = ("checkpoint", "scenes", "scene_checkpoint")
    return {k: getattr(job, k) for k in names if getattr(job, k, None)}


def library_versions() -> dict[str, str]:
    import PIL
    import pyarrow
    import ray
    import torch

    from aigc_synth import __version__

    return {"aigc_synth": __version__, "ray": ray.__version__, "torch": torch.__version__, "pyarrow": pyarrow.__version__,
            "numpy": np.__version__, "pillow": PIL.__version__, "python": platform.python_version()}


def build_manifest(job, counts_per_condition: dict[str, int], entries: list[dict[str, Any]],
                   gate_summary: dict[str, Any] | None) -> dict[str, Any]:
    """The manifest of a finished job (``entries`` sorted by shard)."""
    from aigc_synth.sampling.sampler import PNG_COMPRESS_LEVEL, image_encoding_record

    manifest = {
        "format": MANIFEST_FORMAT,
        "job": job.job_spec,
        "schema": job.schema,
        "model_id": job.model_id,
        "model": {"family": job.family, "config": job.model_config, "resolution": job.resolution},
        "determinism": {"compute_batch": job.compute_batch, "png_compress_level": PNG_COMPRESS_LEVEL,
                        "latent": "torch.randn(z_dim) from torch.Generator(cpu).manual_seed(seed)",
                        "seed": "splitmix64(job.seed, sample_id)",
                        # jpeg / webp only (png adds nothing, so png manifests keep their bytes)
                        **image_encoding_record(getattr(job, "image_format", "png"), getattr(job, "image_quality", 90))},
        "versions": library_versions(),
        "num_samples": job.num_samples,
        "num_shards": job.num_shards,
        "counts_per_condition": counts_per_condition,
        "shards": entries,
    }
    if gate_summary is not None:
        manifest["gate"] = gate_summary
    return manifest


PROFILE_STAGES = ("sample", "encode", "files", "sync", "parquet", "hash")


def summarize_profile(profiles: list[dict[str, Any]], actors: int, generate_s: float) -> dict[str, Any]:
    """Where a run's time went, from the shards' own profiles (``jobs.worker``): seconds per stage
    summed over shards and per image, the actors' busy share of ``actors x generate_s`` (the rest
    is waiting on Ray: scheduling, the driver, start-up, the tail of the last shards) and per-shard
    means; stage ``sample`` is the network, ``encode`` the image codec, ``files`` / ``parquet`` the
    writes, ``sync`` fsync / syncfs, ``hash`` the manifest checksums."""
    if not profiles:
        return {}
    rows = sum(p["rows"] for p in profiles)
    totals = {k: sum(p.get(k, 0.0) for p in profiles) for k in PROFILE_STAGES}
    busy = sum(p["busy"] for p in profiles)
    capacity = actors * generate_s
    out = {
        "shards": len(profiles), "rows": rows,
        "stage_s": {k: round(v, 3) for k, v in totals.items()},
        "stage_ms_per_row": {k: round(1000 * v / max(rows, 1), 4) for k, v in totals.items()},
        "actor_busy_s": round(busy, 3), "actor_capacity_s": round(capacity, 3),
        "actor_busy_share": round(busy / capacity, 4) if capacity > 0 else None,
        "waiting_on_ray_s": round(max(capacity - busy, 0.0), 3),
        "per_shard_mean_s": {k: round(totals[k] / len(profiles), 4) for k in PROFILE_STAGES} | {"busy": round(busy / len(profiles), 4)},
    }
    t0 = min(p["start"] for p in profiles)
    # per shard, in completion order: start (s after the first shard started), busy and stage seconds, process
    out["per_shard"] = [{"shard": p["shard"], "rows": p["rows"], "start": round(p["start"] - t0, 3), "pid": p["pid"],
                         **{k: round(p.get(k, 0.0), 4) for k in ("busy", *PROFILE_STAGES)}} for p in profiles]
    if any("stage_busy" in p for p in profiles):
        out["cpu_stage_busy_s"] = round(sum(p.get("stage_busy", 0.0) for p in profiles), 3)
    return out


def build_run_info(pool, pool_size: int, batch_size: int, timings: dict[str, float], skipped: int,
                   generated: int, profile: dict[str, Any] | None = None,
                   sources: dict[str, str] | None = None) -> dict[str, Any]:
    """``run.json``: resources, timings (as given, already rounded), resume figures, the profile of this
    run and its ``sources`` (:func:`job_sources`: the paths the manifest leaves out)."""
    return {
        "sources": sources or {},
        "resources": {"actors": pool_size, "cpus_per_actor": pool.cpus_per_actor, "gpus_per_actor": pool.gpus_per_actor,
                      "torch_threads": pool.torch_threads, "batch_size": batch_size,
                      "cluster_cpus": pool.cluster_cpus, "cluster_gpus": pool.cluster_gpus},
        "timings": timings,
        "shards_skipped_on_resume": skipped,
        "images_generated": generated,
        "profile": profile or {},
    }
