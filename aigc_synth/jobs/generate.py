"""The generation job's driver: a Ray Data pipeline that fans shards out over an actor pool.

Pipeline::

    from_items(shard ids)       ──►  map_batches(ShardWorker, compute=ActorPoolStrategy(size=K))  ──►  driver
         (one row per shard)          each actor builds its sampler once, then per shard:              collects the
                                      sample → (gate) → encode → atomic Parquet + file folder          manifest entries

The unit of work is the shard, so every file is written exactly once by one actor and committed by
rename; rows never cross process boundaries (only ~200-byte manifest entries do). A shard's bytes
depend only on (job seed, sample ids, model), so Ray's retries after an actor dies rewrite
identical bytes, and skipping committed shards on a rerun is safe.

Order of work in :func:`run_generation`: validate the spec (:mod:`~aigc_synth.jobs.spec`) → connect
to Ray and size the pool (:mod:`~aigc_synth.jobs.cluster`) → only then create files, resume what an
earlier run committed, run the pool (:mod:`~aigc_synth.jobs.worker`), write ``run.json`` and, last,
``manifest.json`` (:mod:`~aigc_synth.jobs.manifest`). Any failure before the files step writes nothing.
"""

from __future__ import annotations

import hashlib
import json
import queue
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from aigc_synth.config import GenerateRoot
from aigc_synth.errors import JobSpecError, JobStalledError, first_line
from aigc_synth.io.atomic import Store, open_store, storage_env
from aigc_synth.io.shards import committed_shard_entry, remove_stale_temporaries
from aigc_synth.jobs.cluster import encode_pool, plan_pool
from aigc_synth.runtime.cluster import connect_ray
from aigc_synth.jobs.gate import gate_summary
from aigc_synth.runtime.logfilter import drop_stderr_lines
from aigc_synth.jobs.manifest import (
    JOB_FINGERPRINT,
    MANIFEST,
    OUTPUT_ENTRIES,
    RUN_INFO,
    build_manifest,
    build_run_info,
    job_fingerprint,
    job_sources,
    summarize_profile,
)
from aigc_synth.jobs.spec import ResolvedJob, validate_job, with_pool_shard_size
from aigc_synth.jobs.worker import ShardEncoder, ShardWorker
from aigc_synth.sampling.plan import ConditionPlan
from aigc_synth.sampling.registry import sampler_kind
from aigc_synth.schema import ConditionSchema


def _iterate_with_timeout(iterator: Iterable, timeout_s: float) -> Iterator:
    """Yield from ``iterator`` in a thread; raise JobStalledError if nothing arrives for ``timeout_s``."""
    q: queue.Queue = queue.Queue(maxsize=64)
    done = object()

    def pump():
        try:
            for item in iterator:
                q.put(item)
            q.put(done)
        except BaseException as exc:  # forwarded to the driver thread
            q.put(exc)

    threading.Thread(target=pump, daemon=True, name="aigc-synth-results").start()
    while True:
        try:
            item = q.get(timeout=timeout_s)
        except queue.Empty:
            raise JobStalledError(f"no shard finished in {timeout_s:g} s; Ray appears stuck (dead actors or no resources). "
                                  "Raise resources.progress_timeout_s if shards are legitimately slower") from None
        if item is done:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


def prepare_output(store: Store, job: ResolvedJob, overwrite: bool) -> dict[int, dict[str, Any]]:
    """Create the output, write the fingerprint, return the shards an earlier run committed."""
    try:
        if overwrite and store.exists():
            for entry in OUTPUT_ENTRIES:
                store.delete(entry)
        store.makedirs()
        remove_stale_temporaries(store)
        store.write_json(JOB_FINGERPRINT, job_fingerprint(job))
    except OSError as exc:
        if not store.remote:
            raise
        # the first write of the job: a store that refuses it (permissions) fails here, before any shard
        raise JobSpecError(f"cannot write to output_dir {store.display}: {first_line(exc)}") from None
    committed: dict[int, dict[str, Any]] = {}
    for shard in range(job.num_shards):
        first = shard * job.shard_size
        ids = np.arange(first, min(first + job.shard_size, job.num_samples))
        entry = committed_shard_entry(store, shard, ids, job.formats)
        if entry is not None:
            committed[shard] = entry
    return committed


def run_generation(cfg: GenerateRoot, progress: bool = True, log=print) -> dict[str, Any]:
    """Validate, run the Ray job, write the manifest; return the manifest dict."""
    import ray
    from ray.data import ActorPoolStrategy, DataContext
    from tqdm import tqdm

    t_start = time.time()
    job = validate_job(cfg)
    ray_start_s = connect_ray(cfg.ray.address, cfg.ray.num_cpus)
    cluster = ray.cluster_resources()
    pool = plan_pool(cfg.resources, float(cluster.get("CPU", 0)), float(cluster.get("GPU", 0)))
    job = with_pool_shard_size(job, pool.actors)  # job.shard_size=auto: settled from the pool it runs on
    separate_encode = cfg.resources.png_stage if cfg.resources.png_stage is not None else pool.gpus_per_actor > 0
    encode_cpus, encoders = encode_pool(cfg.resources, pool) if separate_encode else (0.0, 0)  # checked before any file
    checkpoint_bytes = Path(job.checkpoint).read_bytes()
    if hashlib.sha256(checkpoint_bytes).hexdigest() != job.model_id:
        raise JobSpecError(f"checkpoint {job.checkpoint} changed while the job was starting")
    classifier_bytes = Path(job.gate["classifier"]).read_bytes() if job.gate else None

    store = open_store(job.output_dir)
    committed = prepare_output(store, job, cfg.overwrite)
    todo = [s for s in range(job.num_shards) if s not in committed]
    if committed:
        log(f"resuming: {len(committed)} of {job.num_shards} shards already committed, skipped")

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.wait_for_min_actors_s = int(cfg.resources.progress_timeout_s)
    pool_size = max(1, min(pool.actors, len(todo)))  # no idle actors for short jobs
    entries: list[dict[str, Any]] = list(committed.values())
    profiles: list[dict[str, Any]] = []  # this run's shards: where the time went (run.json "profile")
    t_gen = time.time()
    if todo:
        log(f"generating {len(todo)} shard(s) with {pool_size} actor(s) × {pool.cpus_per_actor:g} CPU / "
            f"{pool.gpus_per_actor:g} GPU, {pool.torch_threads} torch thread(s) each → {store.display}")
        # from_items puts the (tiny) shard list straight into the object store: no read task that
        # would need a whole CPU of its own next to the actor pool (ray.data.range's read task does)
        ds = ray.data.from_items([{"id": s} for s in todo], override_num_blocks=min(len(todo), 10_000))
        kind = sampler_kind(job.sampler)  # shipped to the actors as it is (a plugin's kind included)
        env = storage_env() if store.remote else {}  # constructor arguments, unlike runtime_env not shown by the dashboard
        ds = ds.map_batches(
            ShardWorker, batch_size=1, compute=ActorPoolStrategy(size=pool_size),
            num_cpus=pool.cpus_per_actor, num_gpus=pool.gpus_per_actor,
            fn_constructor_kwargs={"job": asdict(job), "checkpoint_bytes": checkpoint_bytes, "write": not separate_encode,
                                   "classifier_bytes": classifier_bytes, "storage_env": env,
                                   "torch_threads": pool.torch_threads, "use_gpu": pool.gpus_per_actor > 0, "kind": kind},
        )
        if separate_encode:  # encoding + writing on the CPUs the pool leaves (a fixed pool: ShardEncoder says why)
            log(f"encoding with {encoders} CPU actor(s) × {encode_cpus:g} CPU")
            ds = ds.map_batches(ShardEncoder, batch_size=1, compute=ActorPoolStrategy(size=encoders), num_cpus=encode_cpus,
                                fn_constructor_kwargs={"job": asdict(job), "storage_env": env, "kind": kind})
        # Ray is up already, so its daemons keep the real stderr; only this process's fd 2 is filtered.
        # The bar closes before a failure propagates: the CLI's error line comes after it, not under it
        with drop_stderr_lines(), tqdm(total=job.num_samples, initial=sum(e["rows"] for e in entries),
                                       unit=sampler_kind(job.sampler).unit, desc="generate",
                                       disable=not progress) as bar:
            for row in _iterate_with_timeout(ds.iter_rows(), cfg.resources.progress_timeout_s):
                entry = json.loads(row["entry"])
                entries.append(entry)
                profiles.append(json.loads(row["profile"]))
                bar.update(entry["rows"])
    generated = job.num_samples - sum(e["rows"] for e in committed.values())
    gen_s = time.time() - t_gen
    entries.sort(key=lambda e: e["shard"])
    if [e["shard"] for e in entries] != list(range(job.num_shards)):
        raise RuntimeError(f"expected shards 0..{job.num_shards - 1}, got {[e['shard'] for e in entries]}")
    # a writer killed mid-shard (actor crash, then retried elsewhere) leaves its .tmp-* file behind;
    # every shard is committed now, so nothing is still writing
    remove_stale_temporaries(store)

    schema = ConditionSchema.from_dict(job.schema)
    counts = ConditionPlan(job.plan, schema, job.num_samples, job.seed).counts()
    gate = gate_summary(store, entries, schema, job.gate) if job.gate else None
    manifest = build_manifest(job, counts, entries, gate)
    timings = {"ray_start_s": round(ray_start_s, 3), "generate_s": round(gen_s, 3), "total_s": round(time.time() - t_start, 3),
               "images_per_s": round(generated / max(gen_s, 1e-9), 2)}
    profile = summarize_profile(profiles, pool_size, gen_s)
    store.write_json(RUN_INFO, build_run_info(pool, pool_size, job.batch_size, timings, len(committed), generated, profile,
                                             sources=job_sources(job)))
    store.write_json(MANIFEST, manifest)  # the commit point of the whole job
    return manifest
