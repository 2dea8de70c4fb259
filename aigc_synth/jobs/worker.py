"""The actor of a generation job and the commit of one shard.

:class:`ShardWorker` is a Ray Data callable class: it builds its sampler once (in ``__init__``,
from the checkpoint bytes the driver shipped), then turns shard ids into committed shards. With
``write=False`` it returns the sampled rows instead, for a separate CPU stage
(:class:`ShardEncoder`). It never looks inside the sampler: see :mod:`aigc_synth.sampling.base`.
"""

from __future__ import annotations

import json
import os
import pickle
import time
from typing import Any

import numpy as np

from aigc_synth.io.atomic import Store
from aigc_synth.io.shards import write_shard
from aigc_synth.sampling.base import SampleBatch, SamplerKind
from aigc_synth.sampling.registry import sampler_kind


def shard_sample_ids(job: dict[str, Any], shard: int) -> np.ndarray:
    first = shard * job["shard_size"]
    return np.arange(first, min(first + job["shard_size"], job["num_samples"]), dtype=np.int64)


def commit_shard(job: dict[str, Any], encoder, shard: int, batch: SampleBatch, store: Store | str,
                 profile: dict[str, float] | None = None) -> dict[str, Any]:
    """Encode a shard's rows and write them atomically; return its manifest entry.

    ``profile`` (if given) receives seconds per stage: ``encode``, then write_shard's ``files``,
    ``sync``, ``parquet``, ``hash``."""
    t0 = time.perf_counter()
    encoded = encoder(batch, shard, job["formats"])
    if profile is not None:
        profile["encode"] = profile.get("encode", 0.0) + time.perf_counter() - t0
    return write_shard(store, shard, sample_ids=batch.sample_ids, table=encoded.table, files=encoded.files,
                       formats=job["formats"], timings=profile)


def _profiled(shard: int, rows: int, work) -> tuple[Any, dict[str, Any]]:
    """Run ``work(profile)`` and return (its result, the shard's profile: stage seconds, busy span, pid)."""
    profile: dict[str, Any] = {}
    start = time.time()
    t0 = time.perf_counter()
    result = work(profile)
    profile.update(shard=shard, rows=rows, busy=time.perf_counter() - t0, start=start, pid=os.getpid())
    return result, profile


class ShardWorker:
    """Ray Data callable class: loads the sampler once, then samples (and commits) whole shards."""

    def __init__(self, job: dict[str, Any], checkpoint_bytes: bytes, torch_threads: int, use_gpu: bool, write: bool = True,
                 classifier_bytes: bytes | None = None, storage_env: dict[str, str] | None = None,
                 kind: SamplerKind | None = None):
        import torch

        from aigc_synth.io.atomic import open_store

        torch.set_num_threads(torch_threads)
        self.job, self.write = job, write
        # object-store output: the driver's credentials/endpoint (this process may predate them),
        # then one filesystem client for the actor's lifetime
        os.environ.update(storage_env or {})
        self.store = open_store(job["output_dir"]) if write else None
        device = "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
        if use_gpu and device == "cpu" and not _device_free(job):
            raise RuntimeError("actor was given a GPU by Ray but torch.cuda.is_available() is False")
        # the driver ships the kind itself: a kind registered there (a plugin's) need not be registered here
        kind = kind or sampler_kind(job["sampler"])
        self.sampler = kind.build(job, checkpoint_bytes, device)
        self.encoder = kind.encoder(job)
        self.judge = None
        if job.get("gate"):
            from aigc_synth.jobs.gate import DomainJudge

            self.judge = DomainJudge.from_bytes(job["gate"], classifier_bytes)

    def sample_shard(self, shard: int) -> SampleBatch:
        ids = shard_sample_ids(self.job, shard)
        if self.judge is None:
            return self.sampler.sample(ids)
        from aigc_synth.jobs.gate import gated_sample

        return gated_sample(self.sampler.sample, self.judge, ids, self.job["gate"]["max_tries"])

    def _sample_timed(self, shard: int, profile: dict[str, Any]) -> SampleBatch:
        t0 = time.perf_counter()
        batch = self.sample_shard(shard)
        profile["sample"] = time.perf_counter() - t0  # the network (and the gate's judge, if on)
        return batch

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        shards = [int(s) for s in batch["id"]]
        if self.write:
            done = [_profiled(s, len(shard_sample_ids(self.job, s)), lambda prof, s=s: commit_shard(
                self.job, self.encoder, s, self._sample_timed(s, prof), self.store, prof)) for s in shards]
            return {"entry": np.asarray([json.dumps(e) for e, _ in done], dtype=object),
                    "profile": np.asarray([json.dumps(p) for _, p in done], dtype=object)}
        # our own actors' in-memory rows, handed to our own CPU stage (never a file from outside)
        done = [_profiled(s, len(shard_sample_ids(self.job, s)), lambda prof, s=s: self._sample_timed(s, prof)) for s in shards]
        return {"id": np.asarray(shards), "rows": np.asarray([pickle.dumps(b) for b, _ in done], dtype=object),
                "profile": np.asarray([json.dumps(p) for _, p in done], dtype=object)}


def _device_free(job: dict[str, Any]) -> bool:
    """The job's model runs no network (a benchmark stand-in): a simulated GPU node's actor may run it."""
    from aigc_synth.models.registry import FAMILIES

    family = FAMILIES.get(job.get("family", ""))
    return family is not None and family.device_free


class ShardEncoder:
    """The separate CPU stage (``resources.png_stage``): sampled rows → encoded, committed shard.

    A callable class run as a fixed actor pool, not as tasks: a task's worker process is reclaimed
    by Ray once it idles for a second on a node whose workers outnumber its CPUs (a GPU node with few
    CPUs declared, the simulated cluster), and every shard then paid a fresh process and its imports
    (measured: 16 simulated GPU actors at 0.2x linear with one-second-apart shards, 0.93x without
    the churn; docs/benchmarks.md). The encoder is built once here.
    """

    def __init__(self, job: dict[str, Any], storage_env: dict[str, str] | None = None, kind: SamplerKind | None = None):
        os.environ.update(storage_env or {})
        self.job = job
        self.encoder = (kind or sampler_kind(job["sampler"])).encoder(job)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        entries, profiles = [], []
        for shard, rows, actor_profile in zip(batch["id"], batch["rows"], batch["profile"]):
            sampled = pickle.loads(rows)
            entry, profile = _profiled(int(shard), len(sampled), lambda prof, b=sampled, s=int(shard): commit_shard(
                self.job, self.encoder, s, b, self.job["output_dir"], prof))
            sampler_side = json.loads(actor_profile)
            # two processes: the actor's busy time is its sampling; this stage's is encoding + writing
            # and the shard's timeline (start, pid) is the actor's, so per-actor figures stay per actor
            profile.update(sample=sampler_side.get("sample", 0.0), stage_busy=profile["busy"], busy=sampler_side["busy"],
                           stage_start=profile["start"], stage_pid=profile["pid"], start=sampler_side["start"], pid=sampler_side["pid"])
            entries.append(json.dumps(entry))
            profiles.append(json.dumps(profile))
        return {"entry": np.asarray(entries, dtype=object), "profile": np.asarray(profiles, dtype=object)}
