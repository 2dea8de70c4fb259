"""Validation of a job spec, before anything is written or Ray is started.

:func:`validate_job` checks the whole spec, loads the checkpoint fully (so a corrupt or
mismatched model fails here, in the driver, not in every actor), checks the output location and
any earlier output there, and returns a :class:`ResolvedJob`: plain data that the actors get.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from aigc_synth.config import GenerateRoot
from aigc_synth.errors import JobSpecError, PlanError, SchemaError, StorageError, first_line
from aigc_synth.io.atomic import Store, check_writable_directory, open_store
from aigc_synth.jobs.gate import validate_gate
from aigc_synth.jobs.manifest import JOB_FINGERPRINT, MANIFEST, job_fingerprint
from aigc_synth.sampling.plan import ConditionPlan
from aigc_synth.sampling.base import SamplerKind
from aigc_synth.sampling.registry import DEFAULT_SAMPLER, sampler_kind
from aigc_synth.sampling.sampler import COMPUTE_BATCH, DEFAULT_IMAGE_FORMAT, DEFAULT_IMAGE_QUALITY, IMAGE_FORMATS
from aigc_synth.schema import ConditionSchema

SUPPORTED_FORMATS = ("parquet", "png")
AUTO_SHARD_SIZE = "auto"
SHARDS_PER_ACTOR = 8  # auto shard size: at least this many shards per actor, so actors that start late even out
MIN_AUTO_SHARD_ROWS = 64  # auto shard size: enough rows to amortise a shard's round trip for a fast generator
MAX_AUTO_SHARD_ROWS = 1024  # auto shard size: a shard's rows are one actor call, one file and one retry unit


def auto_shard_size(num_samples: int, compute_batch: int, actors: int) -> int:
    """The shard size ``job.shard_size=auto`` resolves to: a pure function of the job and the pool.

    At least :data:`SHARDS_PER_ACTOR` shards per actor (actors come up seconds apart; with fewer
    shards the last ones to start finish last and the others idle: measured, 4 shards per actor gave
    0.75 of linear on 4 simulated GPU actors, ``docs/benchmarks.md``), a multiple of ``compute_batch``
    (a shard's last network call is padded, so another size wastes compute), at least
    :data:`MIN_AUTO_SHARD_ROWS` (a shard costs one actor call, one Parquet file and one rename: tens of
    ms, which a fast generator's 32-row shard would not amortise) and at most :data:`MAX_AUTO_SHARD_ROWS`
    (bounded actor memory and retry cost). E.g. 1,000 images on 2 actors (compute_batch 32): 64 rows;
    1,000,000 on 32 actors: 1,024.
    """
    def multiple(rows: int) -> int:
        return max(compute_batch, rows // compute_batch * compute_batch)

    rows = multiple(num_samples // (SHARDS_PER_ACTOR * max(1, actors)))
    return min(max(rows, -(-MIN_AUTO_SHARD_ROWS // compute_batch) * compute_batch), max(compute_batch, multiple(MAX_AUTO_SHARD_ROWS)))


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
    sampler: str = DEFAULT_SAMPLER  # the sampler kind the actors build (aigc_synth.sampling.registry)
    gate: dict[str, Any] | None = None  # the condition-fidelity gate, resolved (None: off)
    image_format: str = DEFAULT_IMAGE_FORMAT  # png | jpeg | webp: the encoding of every image (Parquet and files)
    image_quality: int = DEFAULT_IMAGE_QUALITY  # jpeg / webp quality, 1-100 (unused for png)
    layout: bool = False  # a layout-conditioned generator: each sample renders a scene (aigc_synth.sampling.layout)
    scenes: str | None = None  # layout jobs: the given scenes' directory (None: sampled by the scene model)
    scene_checkpoint: str | None = None  # layout jobs without scenes: the scene model's checkpoint
    scene_model_id: str | None = None
    layouts: dict[str, Any] | None = None  # condition transfer (job.layouts): the frames' source, id and cells
    sampling: dict[str, Any] | None = None  # the family's sampling options (job.sampling), None: as exported
    job_spec: dict[str, Any] = field(default_factory=dict)
    shard_size_auto: bool = False  # job.shard_size=auto, not settled yet: with_pool_shard_size sets it from the pool


def _positive_int(value: Any, key: str, what: str = "a positive integer") -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise JobSpecError(f"{key} must be {what}, got {value}")


def _check_numbers(job, res) -> list[str]:
    _positive_int(job.num_samples, "job.num_samples")
    if job.num_samples > job.max_samples:
        raise JobSpecError(f"job.num_samples={job.num_samples} exceeds job.max_samples={job.max_samples} (raise the limit if intended)")
    if job.shard_size != AUTO_SHARD_SIZE:
        _positive_int(job.shard_size, "job.shard_size", f"a positive integer or {AUTO_SHARD_SIZE!r}")
    formats = list(job.formats)
    if not formats or [f for f in formats if f not in SUPPORTED_FORMATS]:
        raise JobSpecError(f"job.formats must be a non-empty subset of {list(SUPPORTED_FORMATS)}, got {formats}")
    if job.image_format not in IMAGE_FORMATS:
        raise JobSpecError(f"job.image_format must be one of {list(IMAGE_FORMATS)}, got {job.image_format!r}")
    quality = job.image_quality
    if not isinstance(quality, int) or isinstance(quality, bool) or not 1 <= quality <= 100:
        raise JobSpecError(f"job.image_quality must be an integer from 1 to 100 (jpeg / webp quality), got {quality!r}")
    _positive_int(job.compute_batch, "job.compute_batch")
    _positive_int(res.batch_size, "resources.batch_size")
    if res.actors is not None:
        _positive_int(res.actors, "resources.actors", "a positive integer (or null for auto)")
    if res.num_gpus is None or res.num_gpus < 0:
        raise JobSpecError(f"resources.num_gpus must be >= 0, got {res.num_gpus}")
    if res.cpus_per_actor is not None and res.cpus_per_actor <= 0:
        raise JobSpecError(f"resources.cpus_per_actor must be > 0, got {res.cpus_per_actor}")
    return formats


def _check_output_location(output_dir: str) -> tuple[Store, str, Any]:
    """(store, the output_dir actors get, how messages name it)."""
    try:
        store = open_store(output_dir)
        if store.remote:
            store.check_reachable()
    except StorageError as exc:
        raise JobSpecError(str(exc)) from None
    if store.remote:
        return store, store.uri, store.display
    out = store.root
    try:
        check_writable_directory(out, "output_dir")
    except StorageError as exc:
        raise JobSpecError(str(exc)) from None
    return store, str(out.absolute()), out


def _plan_values_as_strings(plan: dict[str, Any]) -> dict[str, Any]:
    """Schema values are strings; accept ``num_lanes: [3, 4]`` as users write it."""
    plan = dict(plan)
    plan["factors"] = {k: [str(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in vals]
                       if isinstance(vals, list) else vals for k, vals in (plan.get("factors") or {}).items()}
    return plan


def validate_job(cfg: GenerateRoot) -> ResolvedJob:
    """Check the whole spec and the checkpoint; raise :class:`JobSpecError` with one clear line.

    What differs between kinds of output (their own keys, their checkpoint, their extra fields) is
    the job's sampler kind's ``resolve`` (:mod:`aigc_synth.sampling.registry`); the rest is common."""
    job, res = cfg.job, cfg.resources
    formats = _check_numbers(job, res)
    try:
        kind = sampler_kind(job.sampler)
    except ValueError as exc:
        raise JobSpecError(f"job.sampler: {exc}") from None
    if not kind.images and job.image_format != DEFAULT_IMAGE_FORMAT:
        raise JobSpecError(f"job.image_format does not apply to {kind.name} jobs (they hold no images), got {job.image_format!r}")
    if job.gate.enabled and not kind.gate:
        raise JobSpecError(f"job.gate does not apply here: {kind.unit} jobs have no condition-fidelity gate")
    resolution = kind.resolve(job, formats)
    if resolution.job:  # keys the kind's inputs settle (condition transfer: frames × conditions samples, exact plan)
        job = replace(job, **resolution.job)
    model = resolution.model
    schema = resolution.schema or model.schema  # the plan's factors: the model's, a layout job's road after them
    if job.schema:
        try:
            schema.check_compatible(ConditionSchema.from_dict(job.schema))
        except SchemaError as exc:
            raise JobSpecError(str(exc)) from None
    store, output_dir, out = _check_output_location(cfg.output_dir)
    shard_size, shard_size_auto = job.shard_size, job.shard_size == AUTO_SHARD_SIZE
    if shard_size_auto:  # a resumed job keeps its size; a new one's is provisional until the pool is known
        recorded = None if cfg.overwrite else _recorded_shard_size(store)
        shard_size = recorded or auto_shard_size(job.num_samples, job.compute_batch, res.actors or 1)
        shard_size_auto = recorded is None
    plan_dict = _plan_values_as_strings(job.plan if isinstance(job.plan, dict) else asdict(job.plan))
    try:
        ConditionPlan(plan_dict, schema, job.num_samples, job.seed)
    except (PlanError, SchemaError) as exc:
        raise JobSpecError(f"job.plan: {exc}{kind.plan_hint}") from None
    gate = validate_gate(job.gate, model.schema, formats, layout=bool(resolution.fields.get("layout"))) if kind.gate else None
    resolved = ResolvedJob(
        output_dir=output_dir, num_samples=job.num_samples, seed=job.seed, shard_size=shard_size,
        num_shards=math.ceil(job.num_samples / shard_size), shard_size_auto=shard_size_auto, formats=formats, plan=plan_dict,
        checkpoint=str(model.path.absolute()), model_id=model.model_id, schema=schema.to_dict(),
        family=model.family, model_config=model.model_config,
        resolution=model.resolution, batch_size=res.batch_size, compute_batch=job.compute_batch, sampler=kind.name, gate=gate,
        image_format=job.image_format, image_quality=job.image_quality, **resolution.fields,
    )
    # no paths: the model is its id and given scenes are their content hash, so the same job run from
    # another checkout or machine writes the same manifest (paths go to run.json, see job_sources)
    resolved.job_spec = {"name": job.name, **({"sampler": kind.name} if kind.name != DEFAULT_SAMPLER else {}),
                         "num_samples": job.num_samples, "seed": job.seed, "shard_size": shard_size,
                         "compute_batch": job.compute_batch, "formats": formats, "plan": plan_dict}
    if job.image_format != DEFAULT_IMAGE_FORMAT:  # only then, so png jobs keep their fingerprints and manifest bytes
        resolved.job_spec.update(image_format=job.image_format, image_quality=job.image_quality)
    resolved.job_spec.update(resolution.spec)  # the kind's own entries (absent when unused: older fingerprints hold)
    if gate is not None:  # only when on, so ungated jobs keep their fingerprints
        resolved.job_spec["gate"] = {k: gate[k] for k in ("max_tries", "min_confidence", "classifier_id")}
    try:
        check_existing_output(store, out, resolved, cfg.overwrite)
    except OSError as exc:  # an object store refusing to list or read (permissions, network)
        raise JobSpecError(f"cannot read output_dir {out}: {first_line(exc)}") from None
    return resolved


def _recorded_shard_size(store: Store) -> int | None:
    """The shard size an earlier run of a job recorded in its fingerprint (a resumed auto job keeps it)."""
    import json

    try:
        size = json.loads(store.read_bytes(JOB_FINGERPRINT))["job"]["shard_size"] if store.exists(JOB_FINGERPRINT) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return size if isinstance(size, int) and not isinstance(size, bool) and size > 0 else None


def with_pool_shard_size(job: ResolvedJob, actors: int) -> ResolvedJob:
    """Settle ``job.shard_size=auto`` for a pool of ``actors`` (:func:`auto_shard_size`); other jobs as they are."""
    if not job.shard_size_auto:
        return job
    size = auto_shard_size(job.num_samples, job.compute_batch, actors)
    return replace(job, shard_size=size, num_shards=math.ceil(job.num_samples / size), shard_size_auto=False,
                   job_spec={**job.job_spec, "shard_size": size})


def check_existing_output(store: Store, out, resolved: ResolvedJob, overwrite: bool) -> None:
    """Refuse another job's output, a finished job, or a foreign non-empty directory (no overwrite)."""
    import json

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


def serving_job(kind_name: str, checkpoint: str | None, compute_batch: int, batch_size: int,
                sampling: Any = None) -> tuple[SamplerKind, dict[str, Any], bytes]:
    """(kind, resolved job, checkpoint bytes) that a serving replica builds its sampler from: the kind
    checks the checkpoint exactly as it does a job's (layout models get the bundled scene model as their
    scene source). The job's seed, size and plan are placeholders; every request brings its own."""
    from aigc_synth.config import JobConfig, SamplingConfig

    try:
        kind = sampler_kind(kind_name)
    except ValueError as exc:
        raise JobSpecError(str(exc)) from None
    job_cfg = JobConfig(checkpoint=checkpoint, sampler=kind.name, formats=["parquet"], sampling=sampling or SamplingConfig())
    resolution = kind.resolve(job_cfg, ["parquet"])
    model = resolution.model
    data = model.path.read_bytes()
    import hashlib

    if hashlib.sha256(data).hexdigest() != model.model_id:
        raise JobSpecError(f"{model.path} changed while it was being loaded; start again")
    schema = resolution.schema or model.schema  # a layout model's plan adds the road of its scenes
    first = schema.decode([0] * len(schema.names))
    job = ResolvedJob(output_dir="", num_samples=1, seed=0, shard_size=1, num_shards=1, formats=["parquet"],
                      plan={"kind": "list", "items": [{"conditions": first, "weight": 1.0}]},
                      checkpoint=str(model.path.absolute()), model_id=model.model_id, schema=schema.to_dict(),
                      family=model.family, model_config=model.model_config, resolution=model.resolution,
                      batch_size=batch_size, compute_batch=compute_batch, sampler=kind.name, **resolution.fields)
    return kind, asdict(job), data
