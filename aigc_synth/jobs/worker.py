"""The actor of a generation job and the commit of one shard.

:class:`ShardWorker` is a Ray Data callable class: it builds its sampler once (in ``__init__``,
from the checkpoint bytes the driver shipped), then turns shard ids into committed shards. With
``write=False`` it returns the sampled rows instead, for a separate CPU stage
(:func:`encode_and_commit`). It never looks inside the sampler: see :mod:`aigc_synth.sampling.base`.
"""

from __future__ import annotations

import json
import os
import pickle
from typing import Any

import numpy as np

from aigc_synth.io.atomic import Store
from aigc_synth.io.shards import write_shard
from aigc_synth.sampling.base import SampleBatch
from aigc_synth.sampling.registry import sampler_kind


def shard_sample_ids(job: dict[str, Any], shard: int) -> np.ndarray:
    first = shard * job["shard_size"]
    return np.arange(first, min(first + job["shard_size"], job["num_samples"]), dtype=np.int64)


def commit_shard(job: dict[str, Any], encoder, shard: int, batch: SampleBatch, store: Store | str) -> dict[str, Any]:
    """Encode a shard's rows and write them atomically; return its manifest entry."""
    encoded = encoder(batch, shard, job["formats"])
    return write_shard(store, shard, sample_ids=batch.sample_ids, table=encoded.table, files=encoded.files,
                       formats=job["formats"])


class ShardWorker:
    """Ray Data callable class: loads the sampler once, then samples (and commits) whole shards."""

    def __init__(self, job: dict[str, Any], checkpoint_bytes: bytes, torch_threads: int, use_gpu: bool, write: bool = True,
                 classifier_bytes: bytes | None = None, storage_env: dict[str, str] | None = None):
        import torch

        from aigc_synth.io.atomic import open_store

        torch.set_num_threads(torch_threads)
        self.job, self.write = job, write
        # object-store output: the driver's credentials/endpoint (this process may predate them),
        # then one filesystem client for the actor's lifetime
        os.environ.update(storage_env or {})
        self.store = open_store(job["output_dir"]) if write else None
        device = "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
        if use_gpu and device == "cpu":
            raise RuntimeError("actor was given a GPU by Ray but torch.cuda.is_available() is False")
        kind = sampler_kind(job["sampler"])
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

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        shards = [int(s) for s in batch["id"]]
        if self.write:
            entries = [commit_shard(self.job, self.encoder, s, self.sample_shard(s), self.store) for s in shards]
            return {"entry": np.asarray([json.dumps(e) for e in entries], dtype=object)}
        # our own actors' in-memory rows, handed to our own CPU stage (never a file from outside)
        return {"id": np.asarray(shards), "rows": np.asarray([pickle.dumps(self.sample_shard(s)) for s in shards], dtype=object)}


def encode_and_commit(batch: dict[str, np.ndarray], job: dict[str, Any],
                      storage_env: dict[str, str] | None = None) -> dict[str, np.ndarray]:
    """The separate CPU stage (``resources.png_stage``): sampled rows → encoded, committed shard."""
    os.environ.update(storage_env or {})
    encoder = sampler_kind(job["sampler"]).encoder(job)
    entries = [json.dumps(commit_shard(job, encoder, int(shard), pickle.loads(rows), job["output_dir"]))
               for shard, rows in zip(batch["id"], batch["rows"])]
    return {"entry": np.asarray(entries, dtype=object)}
