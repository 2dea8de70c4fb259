"""A sampler kind registered from outside the package runs a job, resumes it and serves a request.

The kind below is what a plugin writes: a ``SamplerKind`` with its own checkpoint check, sampler and
encoder, registered with one call. Nothing in ``aigc_synth`` knows its name: validation asks the kind,
the actors and the serving replica get the kind object from the driver, and the served rows are the
job's rows because the replica holds the same sampler.
"""

from __future__ import annotations

import hashlib
import json
import socket
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aigc_synth.errors import JobSpecError
from aigc_synth.sampling.base import (EncodedShard, KindResolution, ResolvedModel, SampleBatch, SamplerBase, SamplerKind,
                                      check_model_id)
from aigc_synth.sampling.plan import ConditionPlan
from aigc_synth.sampling.registry import SAMPLER_KINDS, register_sampler
from aigc_synth.schema import ConditionSchema
from aigc_synth.seeds import attempt_seeds
from tests.helpers import compose_generate

SCHEMA = ConditionSchema.from_dict({"colour": ["red", "green", "blue"]})


# -- the plugin: a "checkpoint" is a text file holding a multiplier ------------------------------------------------
def _resolve(job, formats) -> KindResolution:
    path = Path(job.checkpoint or "")
    if not path.is_file():
        raise JobSpecError(f"toy checkpoint not found: {path}")
    data = path.read_bytes()
    return KindResolution(ResolvedModel(path, hashlib.sha256(data).hexdigest(), "toy", {"scale": int(data)}, SCHEMA))


def _encode(job):
    def encode(batch: SampleBatch, shard: int, formats) -> EncodedShard:
        return EncodedShard(pa.table({"sample_id": pa.array(batch.sample_ids, pa.int64()), "colour": batch.columns["colour"].tolist(),
                                      "value": pa.array(batch.columns["value"], pa.int64())}), [])
    return encode


class ToySampler(SamplerBase):
    def __init__(self, job, checkpoint_bytes: bytes, device: str = "cpu"):
        super().__init__(job, _encode(job))
        self.model_id, self.scale = hashlib.sha256(checkpoint_bytes).hexdigest(), int(checkpoint_bytes)
        check_model_id(self, job)

    def sample_for(self, job, sample_ids, attempt: int = 0) -> SampleBatch:
        plan = ConditionPlan(job["plan"], SCHEMA, job["num_samples"], job["seed"])
        codes, seeds = plan.codes_for(sample_ids), attempt_seeds(job["seed"], sample_ids, attempt)
        return SampleBatch(np.asarray(sample_ids), {"colour": np.array(["red", "green", "blue"], object)[codes[:, 0]],
                                                    "value": seeds % 1000 * self.scale}, codes=codes)


TOY = SamplerKind("toy", resolve=_resolve, build=ToySampler, encoder=_encode, unit="toy")
# ------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def toy_kind(tmp_path_factory):
    register_sampler(TOY)
    checkpoint = tmp_path_factory.mktemp("toy") / "toy.ckpt"
    checkpoint.write_text("3")
    yield checkpoint
    SAMPLER_KINDS.pop("toy")


def _cfg(out: Path, checkpoint: Path, *extra: str):
    return compose_generate([f"output_dir={out}", "job.sampler=toy", f"job.checkpoint={checkpoint}", "job.formats=[parquet]",
                             "job.num_samples=30", "job.shard_size=10", "job.seed=5", "resources.actors=1", *extra])


def _rows(out: Path) -> list[dict]:
    return sorted(pq.read_table(out / "parquet").to_pylist(), key=lambda r: r["sample_id"])


@pytest.mark.slow  # 10-16 s; the default suite keeps under 10 min (run with -m slow)
def test_a_plugin_kind_runs_a_job_and_resumes_it(toy_kind, ray_session, tmp_path):
    from aigc_synth.jobs.generate import run_generation
    from aigc_synth.jobs.spec import validate_job

    full, part = tmp_path / "full", tmp_path / "part"
    run_generation(_cfg(full, toy_kind), progress=False)
    rows = _rows(full)
    assert [r["sample_id"] for r in rows] == list(range(30)) and {r["value"] % 3 for r in rows} == {0}
    manifest = json.loads((full / "manifest.json").read_text())
    assert manifest["job"]["sampler"] == "toy" and manifest["num_samples"] == 30

    # resume: an interrupted run left shard 1 only; the rerun writes the rest and the same manifest
    run_generation(_cfg(part, toy_kind), progress=False)
    for name in ("manifest.json", "parquet/part-00000.parquet", "parquet/part-00002.parquet"):
        (part / name).unlink()
    run_generation(_cfg(part, toy_kind), progress=False)
    assert (part / "manifest.json").read_bytes() == (full / "manifest.json").read_bytes() and _rows(part) == rows

    with pytest.raises(JobSpecError, match="toy checkpoint not found"):  # the kind's own validation, before any work
        validate_job(_cfg(tmp_path / "bad", tmp_path / "missing.ckpt"))
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow  # ~20 s (a Serve app); serving is tested on the built-in kinds by default (tests/test_serve.py)
def test_a_plugin_kind_serves_the_jobs_rows(toy_kind, ray_session, tmp_path):
    from aigc_synth.config import compose
    from aigc_synth.jobs.generate import run_generation
    from aigc_synth.serve.server import start_server, stop_server

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = compose("serve", [f"serve.port={port}", "serve.sampler=toy", f"serve.checkpoint={toy_kind}", "serve.scenes=false",
                            "serve.token=toy-token-0123456789", "serve.app_name=toy_test"])
    running = start_server(cfg, log=lambda m: None)
    try:
        body = {"conditions": list(SCHEMA.combinations()), "seed": 5, "start": 10, "n": 12, "num_samples": 30}
        req = urllib.request.Request(running.url + "/generate", data=json.dumps(body).encode(), method="POST",
                                     headers={"Authorization": "Bearer toy-token-0123456789", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as resp:
            served = json.loads(resp.read())
    finally:
        stop_server()
    # the request is the slice [10, 22) of the job with its list plan and seed
    items = "[" + ",".join("{conditions:{colour:%s},weight:1}" % c["colour"] for c in SCHEMA.combinations()) + "]"
    run_generation(_cfg(tmp_path / "list", toy_kind, "job.plan.kind=list", f"job.plan.items={items}"), progress=False)
    assert served["rows"] == _rows(tmp_path / "list")[10:22]
