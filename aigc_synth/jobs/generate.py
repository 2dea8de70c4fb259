"""The generation job: a Ray Data pipeline that fans shards out over an actor pool of generators.

Pipeline::

    from_items(shard ids)       ──►  map_batches(ShardGenerator, compute=ActorPoolStrategy(size=K))  ──►  driver
         (one row per shard)          each actor loads the generator once, then per shard:            collects the
                                      plan → latents → images → PNG → atomic Parquet + PNG folder      manifest entries

The unit of work is the shard, so every file is written exactly once by one actor and committed by
rename; images never cross process boundaries (only ~200-byte manifest entries do). A shard's
bytes depend only on (job seed, sample ids, model), so Ray's retries after an actor dies rewrite
identical bytes, and skipping committed shards on a rerun is safe.

Order of work in :func:`run_generation`: validate the spec → read the checkpoint safely → check the
output directory → connect to Ray → check the cluster can host the pool (GPUs, CPUs) → only then
create files. Any failure before the last step writes nothing.

``output_dir`` is a local directory or a ``pyarrow.fs`` URI (``s3://bucket/prefix?region=...``):
the driver resolves it once to validate it (parse, scheme, bucket reachable) and hands the plain
URI string to the actors, which resolve it again with the driver's storage credentials
(:func:`aigc_synth.io.atomic.storage_env`). See :mod:`aigc_synth.io.shards` for the commit protocol.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import queue
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from aigc_synth.config import GenerateRoot
from aigc_synth.io.atomic import Store, StorageError, open_store, storage_env
from aigc_synth.io.checkpoint import CheckpointError, load_generator
from aigc_synth.io.shards import committed_shard_entry, remove_stale_temporaries, write_shard
from aigc_synth.sampling.plan import ConditionPlan, PlanError
from aigc_synth.sampling.sampler import COMPUTE_BATCH, PNG_COMPRESS_LEVEL
from aigc_synth.sampling.seeds import derive_seeds
from aigc_synth.schema import ConditionSchema, SchemaError

MANIFEST = "manifest.json"
JOB_FINGERPRINT = "job.json"  # written before the first shard: lets a rerun resume, refuses a different job
MANIFEST_FORMAT = "aigc_synth.manifest/v1"
#: How this particular run went (resources, timings, shards skipped). Kept out of the manifest so
#: that the manifest is a pure function of the job spec and model: a resumed run writes the same bytes.
RUN_INFO = "run.json"
#: derive_seeds stream of gate attempt t (t ≥ 1); far from the latent (0) and plan (1..F) streams.
GATE_STREAM = 1 << 20
SUPPORTED_FORMATS = ("parquet", "png")
BUNDLED_CHECKPOINT = Path(__file__).resolve().parent.parent / "assets" / "default_generator.pt"


class JobSpecError(ValueError):
    """The job spec or the environment cannot run this job. Raised before anything is written."""


class JobStalledError(RuntimeError):
    """No shard finished within ``resources.progress_timeout_s``: Ray is likely waiting forever."""


# ------------------------------------------------------------------------------------------------
# validation (pure, no side effects)
# ------------------------------------------------------------------------------------------------
@dataclass
class ResolvedJob:
    """Everything an actor needs, as plain data (no Hydra, no OmegaConf)."""

    output_dir: str
    num_samples: int
    seed: int
    shard_size: int
    num_shards: int
    formats: list[str]
    plan: dict[str, Any]
    checkpoint: str
    model_id: str
    schema: dict[str, list[str]]
    family: str
    model_config: dict[str, Any]
    resolution: int
    batch_size: int
    compute_batch: int = COMPUTE_BATCH
    gate: dict[str, Any] | None = None  # the condition-fidelity gate, resolved (None: off)
    job_spec: dict[str, Any] = field(default_factory=dict)


def resolve_checkpoint_path(checkpoint: str | None) -> Path:
    return BUNDLED_CHECKPOINT if checkpoint in (None, "", "default", "bundled") else Path(checkpoint).expanduser()


def _nearest_existing_parent(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def validate_job(cfg: GenerateRoot) -> ResolvedJob:
    """Check the whole spec and the checkpoint; raise :class:`JobSpecError` with one clear line."""
    job, res = cfg.job, cfg.resources
    if not isinstance(job.num_samples, int) or job.num_samples <= 0:
        raise JobSpecError(f"job.num_samples must be a positive integer, got {job.num_samples}")
    if job.num_samples > job.max_samples:
        raise JobSpecError(f"job.num_samples={job.num_samples} exceeds job.max_samples={job.max_samples} (raise the limit if intended)")
    if not isinstance(job.shard_size, int) or job.shard_size <= 0:
        raise JobSpecError(f"job.shard_size must be a positive integer, got {job.shard_size}")
    formats = list(job.formats)
    bad = [f for f in formats if f not in SUPPORTED_FORMATS]
    if not formats or bad:
        raise JobSpecError(f"job.formats must be a non-empty subset of {list(SUPPORTED_FORMATS)}, got {formats}")
    if not isinstance(job.compute_batch, int) or job.compute_batch <= 0:
        raise JobSpecError(f"job.compute_batch must be a positive integer, got {job.compute_batch}")
    if not isinstance(res.batch_size, int) or res.batch_size <= 0:
        raise JobSpecError(f"resources.batch_size must be a positive integer, got {res.batch_size}")
    if res.actors is not None and (not isinstance(res.actors, int) or res.actors <= 0):
        raise JobSpecError(f"resources.actors must be a positive integer (or null for auto), got {res.actors}")
    if res.num_gpus is None or res.num_gpus < 0:
        raise JobSpecError(f"resources.num_gpus must be >= 0, got {res.num_gpus}")
    if res.cpus_per_actor is not None and res.cpus_per_actor <= 0:
        raise JobSpecError(f"resources.cpus_per_actor must be > 0, got {res.cpus_per_actor}")

    ckpt_path = resolve_checkpoint_path(job.checkpoint)
    try:
        # a full load (build the module, load its weights) so a corrupt or mismatched checkpoint
        # fails here, in the driver, and not in every actor after the output exists
        loaded = load_generator(ckpt_path)
    except CheckpointError as exc:
        raise JobSpecError(str(exc)) from None
    header = {"family": loaded.family, "model_config": loaded.model_config}
    schema = loaded.schema
    if job.resolution is not None and job.resolution != loaded.resolution:
        raise JobSpecError(f"job.resolution={job.resolution} is not supported by the checkpoint, which generates "
                           f"{loaded.resolution}x{loaded.resolution} images (train or pick a {job.resolution}-px model)")
    declared = getattr(job, "schema", None)
    if declared:
        try:
            schema.check_compatible(ConditionSchema.from_dict(declared))
        except SchemaError as exc:
            raise JobSpecError(str(exc)) from None
    try:
        ConditionPlan(job.plan if isinstance(job.plan, dict) else asdict(job.plan), schema, job.num_samples, job.seed)
    except (PlanError, SchemaError) as exc:
        raise JobSpecError(f"job.plan: {exc}") from None
    gate = validate_gate(job.gate, schema, formats)
    if gate is not None and res.png_stage:
        raise JobSpecError("job.gate cannot run with resources.png_stage=true (the gate scores images inside the actor)")

    try:
        store = open_store(cfg.output_dir)
        if store.remote:
            store.check_reachable()
    except StorageError as exc:
        raise JobSpecError(str(exc)) from None
    if store.remote:
        output_dir, out = store.uri, store.display
    else:
        out = store.root
        if out.exists() and not out.is_dir():
            raise JobSpecError(f"output_dir {out} exists and is not a directory")
        parent = _nearest_existing_parent(out)
        if not parent.is_dir():
            raise JobSpecError(f"output_dir {out} is not writable: {parent} is a file, not a directory")
        if not os.access(parent, os.W_OK | os.X_OK) or os.statvfs(parent).f_flag & os.ST_RDONLY:
            raise JobSpecError(f"output_dir {out} is not writable (no write permission on {parent}, or a read-only filesystem)")
        output_dir = str(out.absolute())
    plan_dict = job.plan if isinstance(job.plan, dict) else asdict(job.plan)
    resolved = ResolvedJob(
        output_dir=output_dir, num_samples=job.num_samples, seed=job.seed, shard_size=job.shard_size,
        num_shards=math.ceil(job.num_samples / job.shard_size), formats=formats, plan=plan_dict,
        checkpoint=str(ckpt_path.absolute()), model_id=loaded.model_id, schema=schema.to_dict(),
        family=header["family"], model_config=dict(header["model_config"]),
        resolution=loaded.resolution, batch_size=res.batch_size, compute_batch=job.compute_batch, gate=gate,
    )
    resolved.job_spec = {"name": job.name, "num_samples": job.num_samples, "seed": job.seed, "shard_size": job.shard_size,
                         "compute_batch": job.compute_batch,
                         "formats": formats, "plan": plan_dict, "checkpoint": resolved.checkpoint}
    if gate is not None:  # only when on, so ungated jobs keep their fingerprints
        resolved.job_spec["gate"] = {k: gate[k] for k in ("max_tries", "min_confidence", "classifier_id")}
    try:
        _check_existing_output(store, out, resolved, cfg.overwrite)
    except OSError as exc:  # an object store refusing to list or read (permissions, network)
        raise JobSpecError(f"cannot read output_dir {out}: {(str(exc).strip().splitlines() or [''])[0][:300]}") from None
    return resolved


def _check_existing_output(store: Store, out, resolved: ResolvedJob, overwrite: bool) -> None:
    """Refuse another job's output, a finished job, or a foreign non-empty directory (no overwrite)."""
    has_fingerprint = store.exists(JOB_FINGERPRINT)
    if has_fingerprint and not overwrite:
        try:
            previous = json.loads(store.read_bytes(JOB_FINGERPRINT))
        except (OSError, json.JSONDecodeError):
            previous = None
        if previous != job_fingerprint(resolved):
            raise JobSpecError(f"output_dir {out} holds output of a different job spec or model; choose another output_dir "
                               "or pass overwrite=true to replace it")
    if store.exists(MANIFEST) and not overwrite:
        raise JobSpecError(f"output_dir {out} already holds a finished job ({MANIFEST}); choose another output_dir or pass overwrite=true")
    if store.is_dir() and not store.is_empty() and not overwrite and not has_fingerprint:
        raise JobSpecError(f"output_dir {out} is not empty and holds no aigc_synth output; choose an empty directory or pass overwrite=true")


def validate_gate(gate_cfg, schema: ConditionSchema, formats: list[str]) -> dict[str, Any] | None:
    """Check the gate settings and load its classifier once; None when the gate is off."""
    if gate_cfg is None or not gate_cfg.enabled:
        return None
    from aigc_synth.metrics.domain import load_domain_classifier, resolve_classifier_path

    if not isinstance(gate_cfg.max_tries, int) or gate_cfg.max_tries < 1:
        raise JobSpecError(f"job.gate.max_tries must be a positive integer, got {gate_cfg.max_tries}")
    if not 0.0 <= float(gate_cfg.min_confidence) < 1.0:
        raise JobSpecError(f"job.gate.min_confidence must lie in [0, 1), got {gate_cfg.min_confidence}")
    if "parquet" not in formats:
        raise JobSpecError("job.gate needs 'parquet' in job.formats: per-row gate confidence is stored there")
    path = resolve_classifier_path(gate_cfg.classifier)
    try:
        judge = load_domain_classifier(path)
    except CheckpointError as exc:
        raise JobSpecError(f"job.gate.classifier: {exc}") from None
    if judge.schema.to_dict() != schema.to_dict():
        raise JobSpecError(f"job.gate.classifier {path} was trained on schema {judge.schema.to_dict()}, "
                           f"the checkpoint generates {schema.to_dict()}")
    return {"max_tries": int(gate_cfg.max_tries), "min_confidence": float(gate_cfg.min_confidence),
            "classifier": str(path.absolute()), "classifier_id": judge.classifier_id}


def job_fingerprint(job: ResolvedJob) -> dict[str, Any]:
    """What must match for a rerun to resume into an output directory."""
    spec = {k: v for k, v in job.job_spec.items() if k != "checkpoint"}
    return {"job": spec, "model_id": job.model_id, "schema": job.schema}


# ------------------------------------------------------------------------------------------------
# Ray: connection and resource planning
# ------------------------------------------------------------------------------------------------
def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds on an unreachable ``host:port`` (ray.init would retry for much longer)."""
    import socket

    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s):
            pass
    except (OSError, ValueError) as exc:
        raise JobSpecError(f"cannot reach the Ray cluster at {address}: {exc}") from None


def connect_ray(address: str | None, num_cpus: int | None = None) -> float:
    """Join ``address`` / ``RAY_ADDRESS`` / ``auto``, or start a local instance; return seconds taken."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    t0 = time.time()
    if ray.is_initialized():
        return 0.0
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address and address != "auto" and not address.startswith(("ray://", "http://", "https://")):
        _check_reachable(address)
    try:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            # "local" forces a fresh instance instead of silently joining a `ray start` cluster
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise JobSpecError(f"cannot connect to Ray at {address or 'a new local instance'}: {str(exc).splitlines()[0][:300]}") from None
    return time.time() - t0


@dataclass
class PoolPlan:
    actors: int
    cpus_per_actor: float
    gpus_per_actor: float
    torch_threads: int
    cluster_cpus: float
    cluster_gpus: float


def plan_pool(resources, cluster_cpus: float, cluster_gpus: float) -> PoolPlan:
    """Size the actor pool so it always leaves ``reserve_cpus`` for Ray Data's other tasks.

    On 2 CPUs, two actors of 1 CPU each starve the read task and Ray waits forever; here the
    default gives each actor (CPUs − reserve) / actors, e.g. 0.75 each, and fails fast with a
    clear message when a request cannot fit.
    """
    gpus = float(resources.num_gpus or 0)
    reserve = float(resources.reserve_cpus)
    if gpus > 0:
        if cluster_gpus <= 0:
            raise JobSpecError(f"resources.num_gpus={gpus} per actor but the Ray cluster has no GPUs "
                               f"(cluster resources: {cluster_cpus:g} CPU, 0 GPU); use resources.num_gpus=0 to run on CPUs")
        actors = resources.actors or max(1, int(cluster_gpus // gpus))
        if actors * gpus > cluster_gpus + 1e-9:
            raise JobSpecError(f"{actors} actors × {gpus:g} GPU need {actors * gpus:g} GPUs but the cluster has {cluster_gpus:g}")
    else:
        actors = resources.actors or max(1, int(round(cluster_cpus - reserve)))
    free = cluster_cpus - reserve
    if resources.cpus_per_actor is not None:
        cpus = float(resources.cpus_per_actor)
    elif gpus > 0:
        cpus = min(1.0, free / actors) if free > 0 else 0.0
    else:
        cpus = free / actors if free > 0 else 0.0
    if cpus <= 0 or actors * cpus > free + 1e-9:
        raise JobSpecError(f"cannot fit {actors} actor(s) × {cpus:g} CPU on {cluster_cpus:g} CPUs while keeping "
                           f"{reserve:g} CPU free for Ray Data's read/write tasks; lower resources.actors or resources.cpus_per_actor")
    threads = max(1, int(cpus + 0.5))
    return PoolPlan(actors, round(cpus, 4), gpus, threads, cluster_cpus, cluster_gpus)


# ------------------------------------------------------------------------------------------------
# the actor
# ------------------------------------------------------------------------------------------------
def shard_sample_ids(job: dict[str, Any], shard: int) -> np.ndarray:
    first = shard * job["shard_size"]
    return np.arange(first, min(first + job["shard_size"], job["num_samples"]), dtype=np.int64)


def job_plan(job: dict[str, Any]) -> ConditionPlan:
    return ConditionPlan(job["plan"], ConditionSchema.from_dict(job["schema"]), job["num_samples"], job["seed"])


def commit_shard(job: dict[str, Any], plan: ConditionPlan, shard: int, images: np.ndarray,
                 gate: dict[str, np.ndarray] | None = None, store: Store | None = None) -> dict[str, Any]:
    """PNG-encode a shard's images and write it atomically; return its manifest entry.

    ``gate`` (gated jobs): the seeds actually used plus the per-row gate columns. ``store``: the
    output, already resolved by this process (default: resolve ``job["output_dir"]``).
    """
    from aigc_synth.sampling.sampler import encode_png

    schema = plan.schema
    ids = shard_sample_ids(job, shard)
    codes = plan.codes_for(ids)
    conditions = {name: [vals[c] for c in codes[:, f]] for f, (name, vals) in enumerate(schema.factors)}
    seeds = gate["seed"] if gate is not None else plan.seeds_for(ids)
    return write_shard(store or job["output_dir"], shard, sample_ids=ids, seeds=seeds, conditions=conditions,
                       png_bytes=[encode_png(img) for img in images], width=job["resolution"], height=job["resolution"],
                       model_id=job["model_id"], formats=job["formats"], gate=gate)


def gated_images(render: Callable[[np.ndarray, np.ndarray], np.ndarray], judge, job: dict[str, Any],
                 ids: np.ndarray, codes: np.ndarray, first_seeds: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The condition-fidelity gate: render, let the classifier judge, re-render rejects.

    Attempt ``t`` of sample ``i`` uses ``first_seeds`` for ``t = 0`` and
    ``derive_seeds(job.seed, i, stream=GATE_STREAM + t)`` after, so the output is a pure function
    of (job, sample id): the same whatever the actor count or batch size. A sample passes when
    the predicted condition equals the request and its confidence reaches ``min_confidence``;
    one that never passes keeps its most confident attempt and ``gate_passed = False``.
    """
    gate = job["gate"]

    def judge_batch(images: np.ndarray, want: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scores = judge.score(images)
        conf = scores.confidence(want)
        ok = (scores.predicted_codes() == want).all(axis=1) & (conf >= gate["min_confidence"])
        return conf, ok

    images = render(codes, first_seeds)
    conf, passed = judge_batch(images, codes)
    seeds, attempts = first_seeds.copy(), np.ones(len(ids), np.int32)
    for t in range(1, gate["max_tries"]):
        todo = np.flatnonzero(~passed)
        if not len(todo):
            break
        retry_seeds = derive_seeds(job["seed"], ids[todo], stream=GATE_STREAM + t)
        retry = render(codes[todo], retry_seeds)
        c, ok = judge_batch(retry, codes[todo])
        attempts[todo] = t + 1
        better = ok | (c > conf[todo])
        take = todo[better]
        images[take], seeds[take], conf[take] = retry[better], retry_seeds[better], c[better]
        passed[todo[ok]] = True
    # rounded so the stored value never depends on the last float bit
    return images, {"seed": seeds, "gate_confidence": np.round(conf, 4).astype(np.float32),
                    "gate_attempts": attempts, "gate_passed": passed}


class ShardGenerator:
    """Ray Data callable class: loads the generator once (in ``__init__``), then renders whole shards.

    With ``write=True`` (the default pipeline) it also encodes and commits each shard, so images
    never leave the actor; with ``write=False`` it returns raw pixels for a separate CPU stage
    (:func:`encode_and_commit`), an alternative the benchmark measures side by side.
    """

    def __init__(self, job: dict[str, Any], checkpoint_bytes: bytes, torch_threads: int, use_gpu: bool, write: bool = True,
                 classifier_bytes: bytes | None = None, storage_env: dict[str, str] | None = None):
        import torch

        from aigc_synth.io.checkpoint import load_generator_from_bytes
        from aigc_synth.metrics.domain import load_domain_classifier_from_bytes

        torch.set_num_threads(torch_threads)
        self.job, self.write = job, write
        # object-store output: the driver's credentials/endpoint (this process may predate them),
        # then one filesystem client for the actor's lifetime
        os.environ.update(storage_env or {})
        self.store = open_store(job["output_dir"]) if write else None
        self.device = "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
        if use_gpu and self.device == "cpu":
            raise RuntimeError("actor was given a GPU by Ray but torch.cuda.is_available() is False")
        self.gen = load_generator_from_bytes(checkpoint_bytes, source=job["checkpoint"], device=self.device)
        if self.gen.model_id != job["model_id"]:
            raise RuntimeError("checkpoint bytes shipped to the actor do not match the validated model id")
        self.plan = job_plan(job)
        self.judge = None
        if job.get("gate"):
            self.judge = load_domain_classifier_from_bytes(classifier_bytes, source=job["gate"]["classifier"])
            if self.judge.classifier_id != job["gate"]["classifier_id"]:
                raise RuntimeError("classifier bytes shipped to the actor do not match the validated classifier id")

    def _images(self, codes: np.ndarray, seeds: np.ndarray) -> np.ndarray:
        from aigc_synth.sampling.sampler import generate_images

        step = self.job["batch_size"]
        parts = [generate_images(self.gen, codes[i:i + step], seeds[i:i + step], self.device, self.job["compute_batch"])
                 for i in range(0, len(codes), step)]
        return np.concatenate(parts) if parts else np.zeros((0, self.gen.resolution, self.gen.resolution, 3), np.uint8)

    def render(self, shard: int) -> tuple[np.ndarray, dict[str, np.ndarray] | None]:
        ids = shard_sample_ids(self.job, shard)
        codes, seeds = self.plan.codes_for(ids), self.plan.seeds_for(ids)
        if self.judge is None:
            return self._images(codes, seeds), None
        return gated_images(self._images, self.judge, self.job, ids, codes, seeds)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        shards = [int(s) for s in batch["id"]]
        if self.write:
            return {"entry": np.asarray([json.dumps(commit_shard(self.job, self.plan, s, *self.render(s), store=self.store))
                                         for s in shards], dtype=object)}
        if self.judge is not None:
            raise RuntimeError("the separate PNG stage does not carry gate columns; use resources.png_stage=false with job.gate")
        images = [self.render(s)[0] for s in shards]
        return {"id": np.asarray(shards), "pixels": np.asarray([im.tobytes() for im in images], dtype=object),
                "rows": np.asarray([len(im) for im in images])}


def encode_and_commit(batch: dict[str, np.ndarray], job: dict[str, Any],
                      storage_env: dict[str, str] | None = None) -> dict[str, np.ndarray]:
    """The separate CPU stage: raw pixels → PNG → atomic shard files → manifest entry."""
    os.environ.update(storage_env or {})
    r, plan = job["resolution"], job_plan(job)
    entries = []
    for shard, pixels, rows in zip(batch["id"], batch["pixels"], batch["rows"]):
        images = np.frombuffer(pixels, dtype=np.uint8).reshape(int(rows), r, r, 3)
        entries.append(json.dumps(commit_shard(job, plan, int(shard), images)))
    return {"entry": np.asarray(entries, dtype=object)}


# ------------------------------------------------------------------------------------------------
# the driver
# ------------------------------------------------------------------------------------------------
def gate_summary(out: Path | str | Store, entries: list[dict[str, Any]], schema: ConditionSchema,
                 gate: dict[str, Any]) -> dict[str, Any]:
    """Accept rates per condition from the committed shards' gate columns (read shard by shard,
    so a resumed job reports exactly what a clean run would)."""
    store = open_store(out)
    stats: dict[str, list[int]] = {}  # key → [rows, passed first try, passed at all, attempts]
    for entry in entries:
        t = store.read_table(entry["path"], columns=[*schema.names, "gate_attempts", "gate_passed"])
        cols = [t.column(n).to_pylist() for n in schema.names]
        for *cond, attempts, passed in zip(*cols, t.column("gate_attempts").to_pylist(), t.column("gate_passed").to_pylist()):
            s = stats.setdefault("/".join(cond), [0, 0, 0, 0])
            s[0] += 1
            s[1] += int(passed and attempts == 1)
            s[2] += int(passed)
            s[3] += attempts
    order = ["/".join(c.values()) for c in schema.combinations()]
    per = {k: {"rows": v[0], "accept_rate_first_try": round(v[1] / v[0], 4), "pass_rate": round(v[2] / v[0], 4),
               "mean_attempts": round(v[3] / v[0], 4)} for k, v in sorted(stats.items(), key=lambda kv: order.index(kv[0]))}
    tot = [sum(v[i] for v in stats.values()) for i in range(4)]
    return {"classifier_id": gate["classifier_id"], "max_tries": gate["max_tries"], "min_confidence": gate["min_confidence"],
            "accept_rate_first_try": round(tot[1] / tot[0], 4), "pass_rate": round(tot[2] / tot[0], 4),
            "mean_attempts": round(tot[3] / tot[0], 4), "per_condition": per}


def library_versions() -> dict[str, str]:
    import PIL
    import pyarrow
    import ray
    import torch

    from aigc_synth import __version__

    return {"aigc_synth": __version__, "ray": ray.__version__, "torch": torch.__version__, "pyarrow": pyarrow.__version__,
            "numpy": np.__version__, "pillow": PIL.__version__, "python": platform.python_version()}


def _iterate_with_timeout(iterator, timeout_s: float):
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


def run_generation(cfg: GenerateRoot, progress: bool = True, log=print) -> dict[str, Any]:
    """Validate, run the Ray job, write the manifest; return the manifest dict."""
    import ray
    from tqdm import tqdm

    t_start = time.time()
    job = validate_job(cfg)
    ray_start_s = connect_ray(cfg.ray.address, cfg.ray.num_cpus)
    cluster = ray.cluster_resources()
    pool = plan_pool(cfg.resources, float(cluster.get("CPU", 0)), float(cluster.get("GPU", 0)))
    checkpoint_bytes = Path(job.checkpoint).read_bytes()
    if hashlib.sha256(checkpoint_bytes).hexdigest() != job.model_id:
        raise JobSpecError(f"checkpoint {job.checkpoint} changed while the job was starting")
    classifier_bytes = Path(job.gate["classifier"]).read_bytes() if job.gate else None

    store = open_store(job.output_dir)
    out = store.display
    try:
        if cfg.overwrite and store.exists():
            for sub in ("parquet", "png", MANIFEST, JOB_FINGERPRINT, RUN_INFO, "preview.png"):
                store.delete(sub)
        store.makedirs()
        remove_stale_temporaries(store)
        store.write_json(JOB_FINGERPRINT, job_fingerprint(job))
    except OSError as exc:
        if not store.remote:
            raise
        # the first write of the job: a store that refuses it (permissions) fails here, before any shard
        raise JobSpecError(f"cannot write to output_dir {out}: {(str(exc).strip().splitlines() or [''])[0][:300]}") from None
    # resume: shards committed by an earlier (interrupted) run of the same job are kept as they are
    committed: dict[int, dict[str, Any]] = {}
    for shard in range(job.num_shards):
        first = shard * job.shard_size
        ids = np.arange(first, min(first + job.shard_size, job.num_samples))
        entry = committed_shard_entry(store, shard, ids, job.formats)
        if entry is not None:
            committed[shard] = entry
    todo = [s for s in range(job.num_shards) if s not in committed]
    if committed:
        log(f"resuming: {len(committed)} of {job.num_shards} shards already committed, skipped")

    from ray.data import ActorPoolStrategy, DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.wait_for_min_actors_s = int(cfg.resources.progress_timeout_s)
    pool_size = max(1, min(pool.actors, len(todo)))  # no idle actors for short jobs
    entries: list[dict[str, Any]] = list(committed.values())
    t_gen = time.time()
    if todo:
        log(f"generating {len(todo)} shard(s) with {pool_size} actor(s) × {pool.cpus_per_actor:g} CPU / "
            f"{pool.gpus_per_actor:g} GPU, {pool.torch_threads} torch thread(s) each → {out}")
        # from_items puts the (tiny) shard list straight into the object store: no read task that
        # would need a whole CPU of its own next to the actor pool (ray.data.range's read task does)
        ds = ray.data.from_items([{"id": s} for s in todo], override_num_blocks=min(len(todo), 10_000))
        separate_png = bool(cfg.resources.png_stage)
        env = storage_env() if store.remote else {}  # constructor arguments, unlike runtime_env not shown by the dashboard
        ds = ds.map_batches(
            ShardGenerator,
            batch_size=1,
            compute=ActorPoolStrategy(size=pool_size),
            num_cpus=pool.cpus_per_actor,
            num_gpus=pool.gpus_per_actor,
            fn_constructor_kwargs={"job": asdict(job), "checkpoint_bytes": checkpoint_bytes, "write": not separate_png,
                                   "classifier_bytes": classifier_bytes, "storage_env": env,
                                   "torch_threads": pool.torch_threads, "use_gpu": pool.gpus_per_actor > 0},
        )
        if separate_png:  # PNG encoding + writing as CPU tasks in the reserved share
            ds = ds.map_batches(encode_and_commit, batch_size=1, fn_kwargs={"job": asdict(job), "storage_env": env},
                                num_cpus=max(0.1, min(1.0, float(cfg.resources.reserve_cpus))))
        bar = tqdm(total=job.num_samples, initial=sum(e["rows"] for e in entries), unit="img", desc="generate",
                   disable=not progress)
        for row in _iterate_with_timeout(ds.iter_rows(), cfg.resources.progress_timeout_s):
            entry = json.loads(row["entry"])
            entries.append(entry)
            bar.update(entry["rows"])
        bar.close()
    generated = job.num_samples - sum(e["rows"] for e in committed.values())
    gen_s = time.time() - t_gen
    entries.sort(key=lambda e: e["shard"])
    if [e["shard"] for e in entries] != list(range(job.num_shards)):
        raise RuntimeError(f"expected shards 0..{job.num_shards - 1}, got {[e['shard'] for e in entries]}")
    # a writer killed mid-shard (actor crash, then retried elsewhere) leaves its .tmp-* file behind;
    # every shard is committed now, so nothing is still writing
    remove_stale_temporaries(store)

    schema = ConditionSchema.from_dict(job.schema)
    plan = ConditionPlan(job.plan, schema, job.num_samples, job.seed)
    manifest = {
        "format": MANIFEST_FORMAT,
        "job": job.job_spec,
        "schema": job.schema,
        "model_id": job.model_id,
        "model": {"family": job.family, "config": job.model_config, "checkpoint": job.checkpoint, "resolution": job.resolution},
        "determinism": {"compute_batch": job.compute_batch, "png_compress_level": PNG_COMPRESS_LEVEL,
                        "latent": "torch.randn(z_dim) from torch.Generator(cpu).manual_seed(seed)",
                        "seed": "splitmix64(job.seed, sample_id)"},
        "versions": library_versions(),
        "num_samples": job.num_samples,
        "num_shards": job.num_shards,
        "counts_per_condition": plan.counts(),
        "shards": entries,
    }
    if job.gate:
        manifest["gate"] = gate_summary(store, entries, schema, job.gate)
    run_info = {
        "resources": {"actors": pool_size, "cpus_per_actor": pool.cpus_per_actor, "gpus_per_actor": pool.gpus_per_actor,
                      "torch_threads": pool.torch_threads, "batch_size": job.batch_size,
                      "cluster_cpus": pool.cluster_cpus, "cluster_gpus": pool.cluster_gpus},
        "timings": {"ray_start_s": round(ray_start_s, 3), "generate_s": round(gen_s, 3),
                    "total_s": round(time.time() - t_start, 3), "images_per_s": round(generated / max(gen_s, 1e-9), 2)},
        "shards_skipped_on_resume": len(committed),
        "images_generated": generated,
    }
    store.write_json(RUN_INFO, run_info)
    store.write_json(MANIFEST, manifest)  # the commit point of the whole job
    return manifest
