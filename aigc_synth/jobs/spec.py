"""Validation of a job spec, before anything is written or Ray is started.

:func:`validate_job` checks the whole spec, loads the checkpoint fully (so a corrupt or
mismatched model fails here, in the driver, not in every actor), checks the output location and
any earlier output there, and returns a :class:`ResolvedJob`: plain data that the actors get.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aigc_synth.config import GenerateRoot
from aigc_synth.errors import CheckpointError, JobSpecError, PlanError, SchemaError, StorageError, first_line
from aigc_synth.io.atomic import Store, check_writable_directory, open_store
from aigc_synth.models.exported import load_generator, resolve_checkpoint_path
from aigc_synth.jobs.gate import validate_gate
from aigc_synth.sampling.layout import resolve_scene_source
from aigc_synth.jobs.manifest import JOB_FINGERPRINT, MANIFEST, job_fingerprint
from aigc_synth.sampling.plan import ConditionPlan
from aigc_synth.sampling.sampler import COMPUTE_BATCH, DEFAULT_IMAGE_FORMAT, DEFAULT_IMAGE_QUALITY, IMAGE_FORMATS
from aigc_synth.schema import ConditionSchema

SUPPORTED_FORMATS = ("parquet", "png")


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
    sampler: str = "image"  # the sampler kind the actors build (aigc_synth.sampling.registry)
    gate: dict[str, Any] | None = None  # the condition-fidelity gate, resolved (None: off)
    image_format: str = DEFAULT_IMAGE_FORMAT  # png | jpeg | webp: the encoding of every image (Parquet and files)
    image_quality: int = DEFAULT_IMAGE_QUALITY  # jpeg / webp quality, 1-100 (unused for png)
    layout: bool = False  # a layout-conditioned generator: each sample renders a scene (aigc_synth.sampling.layout)
    scenes: str | None = None  # layout jobs: the given scenes' directory (None: sampled by the scene model)
    scene_checkpoint: str | None = None  # layout jobs without scenes: the scene model's checkpoint
    scene_model_id: str | None = None
    job_spec: dict[str, Any] = field(default_factory=dict)


def _positive_int(value: Any, key: str, what: str = "a positive integer") -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise JobSpecError(f"{key} must be {what}, got {value}")


def _check_numbers(job, res) -> list[str]:
    _positive_int(job.num_samples, "job.num_samples")
    if job.num_samples > job.max_samples:
        raise JobSpecError(f"job.num_samples={job.num_samples} exceeds job.max_samples={job.max_samples} (raise the limit if intended)")
    _positive_int(job.shard_size, "job.shard_size")
    formats = list(job.formats)
    if not formats or [f for f in formats if f not in SUPPORTED_FORMATS]:
        raise JobSpecError(f"job.formats must be a non-empty subset of {list(SUPPORTED_FORMATS)}, got {formats}")
    if job.image_format not in IMAGE_FORMATS:
        raise JobSpecError(f"job.image_format must be one of {list(IMAGE_FORMATS)}, got {job.image_format!r}")
    quality = job.image_quality
    if not isinstance(quality, int) or isinstance(quality, bool) or not 1 <= quality <= 100:
        raise JobSpecError(f"job.image_quality must be an integer from 1 to 100 (jpeg / webp quality), got {quality!r}")
    if job.sampler == "scenes" and job.image_format != DEFAULT_IMAGE_FORMAT:
        raise JobSpecError(f"job.image_format does not apply to scene jobs (they hold no images), got {job.image_format!r}")
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


@dataclass
class _Model:
    """What validation learns from the checkpoint (either kind)."""

    path: Path
    model_id: str
    family: str
    model_config: dict[str, Any]
    schema: ConditionSchema
    resolution: int


def _image_model(job) -> _Model:
    ckpt_path = resolve_checkpoint_path(job.checkpoint)
    try:
        loaded = load_generator(ckpt_path)
    except CheckpointError as exc:
        raise JobSpecError(str(exc)) from None
    if job.resolution is not None and job.resolution != loaded.resolution:
        raise JobSpecError(f"job.resolution={job.resolution} is not supported by the checkpoint, which generates "
                           f"{loaded.resolution}x{loaded.resolution} images (train or pick a {job.resolution}-px model)")
    return _Model(ckpt_path, loaded.model_id, loaded.family, dict(loaded.model_config), loaded.schema, loaded.resolution)


def _scene_model(job, formats: list[str]) -> _Model:
    from aigc_synth.sampling.scene import scene_schema
    from aigc_synth.models.scene_families import load_scene_generator, resolve_scene_checkpoint

    if formats != ["parquet"]:
        raise JobSpecError(f"scene jobs write Parquet only: set job.formats=[parquet], got {formats}")
    if job.resolution is not None:
        raise JobSpecError("job.resolution does not apply to scene jobs (they hold no images)")
    if job.gate.enabled:
        raise JobSpecError("job.gate is for image jobs; scene jobs have no condition-fidelity gate")
    ckpt_path = resolve_scene_checkpoint(job.checkpoint)
    try:
        gen = load_scene_generator(ckpt_path)
    except CheckpointError as exc:
        raise JobSpecError(str(exc)) from None
    config = {"family": gen.family, **{k: v for k, v in gen.meta.get("recipe", {}).items() if k != "family"}}
    return _Model(ckpt_path, gen.model_id, gen.family, config, scene_schema(gen.traffic, gen.lanes), 0)


def _scene_plan(plan: dict[str, Any]) -> dict[str, Any]:
    """Lane counts are schema values (strings); accept ``num_lanes: [3, 4]`` as users write it."""
    plan = dict(plan)
    plan["factors"] = {k: [str(v) for v in vals] if k == "num_lanes" and isinstance(vals, list) else vals
                       for k, vals in (plan.get("factors") or {}).items()}
    return plan


def validate_job(cfg: GenerateRoot) -> ResolvedJob:
    """Check the whole spec and the checkpoint; raise :class:`JobSpecError` with one clear line."""
    job, res = cfg.job, cfg.resources
    formats = _check_numbers(job, res)
    if job.sampler not in ("image", "scenes"):
        raise JobSpecError(f"job.sampler must be 'image' or 'scenes', got {job.sampler!r}")
    model = _scene_model(job, formats) if job.sampler == "scenes" else _image_model(job)
    ckpt_path, schema = model.path, model.schema
    if job.sampler == "scenes" and (job.scenes or job.scene_checkpoint):
        raise JobSpecError("job.scenes / job.scene_checkpoint are for image jobs of a layout-conditioned model; a scene job samples scenes with job.checkpoint")
    layout = resolve_scene_source(job, model.family, model.schema, model.path) if job.sampler == "image" else {}
    if job.schema:
        try:
            schema.check_compatible(ConditionSchema.from_dict(job.schema))
        except SchemaError as exc:
            raise JobSpecError(str(exc)) from None
    plan_dict = job.plan if isinstance(job.plan, dict) else asdict(job.plan)
    if job.sampler == "scenes":
        plan_dict = _scene_plan(plan_dict)
    try:
        ConditionPlan(plan_dict, schema, job.num_samples, job.seed)
    except (PlanError, SchemaError) as exc:
        hint = " (the scene model's trained cells)" if job.sampler == "scenes" else ""
        raise JobSpecError(f"job.plan: {exc}{hint}") from None
    gate = validate_gate(job.gate, schema, formats, layout=bool(layout)) if job.sampler == "image" else None
    store, output_dir, out = _check_output_location(cfg.output_dir)
    resolved = ResolvedJob(
        output_dir=output_dir, num_samples=job.num_samples, seed=job.seed, shard_size=job.shard_size,
        num_shards=math.ceil(job.num_samples / job.shard_size), formats=formats, plan=plan_dict,
        checkpoint=str(ckpt_path.absolute()), model_id=model.model_id, schema=schema.to_dict(),
        family=model.family, model_config=model.model_config,
        resolution=model.resolution, batch_size=res.batch_size, compute_batch=job.compute_batch, sampler=job.sampler, gate=gate,
        image_format=job.image_format, image_quality=job.image_quality, **layout,
    )
    # no paths: the model is its id and given scenes are their content hash, so the same job run from
    # another checkout or machine writes the same manifest (paths go to run.json, see job_sources)
    resolved.job_spec = {"name": job.name, **({"sampler": job.sampler} if job.sampler != "image" else {}), "num_samples": job.num_samples, "seed": job.seed, "shard_size": job.shard_size,
                         "compute_batch": job.compute_batch, "formats": formats, "plan": plan_dict}
    if job.image_format != DEFAULT_IMAGE_FORMAT:  # only then, so png jobs keep their fingerprints and manifest bytes
        resolved.job_spec.update(image_format=job.image_format, image_quality=job.image_quality)
    if layout:  # only for layout models, so other jobs keep their fingerprints
        if layout.get("scenes"):
            from aigc_synth.scenes.dataset import scenes_id

            resolved.job_spec["scenes_id"] = scenes_id(layout["scenes"])
        if layout.get("scene_model_id"):
            resolved.job_spec["scene_model_id"] = layout["scene_model_id"]
    if gate is not None:  # only when on, so ungated jobs keep their fingerprints
        resolved.job_spec["gate"] = {k: gate[k] for k in ("max_tries", "min_confidence", "classifier_id")}
    try:
        check_existing_output(store, out, resolved, cfg.overwrite)
    except OSError as exc:  # an object store refusing to list or read (permissions, network)
        raise JobSpecError(f"cannot read output_dir {out}: {first_line(exc)}") from None
    return resolved


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
