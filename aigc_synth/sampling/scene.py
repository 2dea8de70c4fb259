"""The ``scenes`` sampler kind: a traffic-scene generator under a (traffic level × lane count × road) plan.

Sample ``i`` of a scene job gets its traffic level, lane count and road kind from the job's
condition plan (factors ``traffic``, ``num_lanes`` and, for a model trained on more than straight
roads, ``road``: the cells the model was trained on) and its seed from ``attempt_seeds(job.seed,
i)``; the scene is a pure function of (model, traffic, lanes, road, seed, i), so shards are
byte-identical whatever the batch or actor. Its shard rows are the public scene
contract (:func:`aigc_synth.scenes.format.scene_arrow_schema`, ``scene_id`` = the sample id).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from aigc_synth.errors import CheckpointError, JobSpecError
from aigc_synth.models.scene_families import SCENE_GENERATOR_FORMAT
from aigc_synth.scenes.format import ROAD_KINDS, SCENE_SAMPLER
from aigc_synth.sampling.base import (EncodedShard, KindResolution, ResolvedModel, SampleBatch, SamplerBase, SamplerKind,
                                      check_model_id, table_rows)
from aigc_synth.sampling.image import job_plan
from aigc_synth.sampling.layout import ROAD_FACTOR
from aigc_synth.seeds import attempt_seeds
from aigc_synth.schema import ConditionSchema

TRAFFIC_FACTOR, LANES_FACTOR = "traffic", "num_lanes"


def scene_schema(traffic: Sequence[str], lanes: Sequence[int], roads: Sequence[str] = ("straight",)) -> ConditionSchema:
    """The condition schema of a scene model: its traffic levels and lane counts (as strings), and
    its road kinds when it knows more than the straight road (so requests to a straight-only model
    need not name the road)."""
    factors = {TRAFFIC_FACTOR: list(traffic), LANES_FACTOR: [str(int(n)) for n in lanes]}
    if list(roads) != ["straight"]:
        factors[ROAD_FACTOR] = list(roads)
    return ConditionSchema.from_dict(factors)


def scene_cells(schema: ConditionSchema, codes: np.ndarray) -> tuple[list[str], list[int], list[str] | None]:
    """(traffic levels, lane counts, road kinds or None for a straight-only schema) of the plan codes
    ``codes`` (one row per sample) of a :func:`scene_schema`: the arguments of a scene generator's
    ``sample`` for those samples."""
    names = schema.names

    def values(name: str) -> list:
        options = schema.factors[names.index(name)][1]
        return [options[c] for c in codes[:, names.index(name)]]

    roads = values(ROAD_FACTOR) if ROAD_FACTOR in names else None
    return values(TRAFFIC_FACTOR), [int(n) for n in values(LANES_FACTOR)], roads


def encode_scenes(job: dict[str, Any]):
    """SampleBatch of scenes → the shard's scene table (no files)."""
    from aigc_synth.scenes.format import scenes_to_table

    def encode(batch: SampleBatch, shard: int, formats: Sequence[str]) -> EncodedShard:
        return EncodedShard(table=scenes_to_table(list(batch.columns["scene"])), files=[])

    return encode


def resolve_scene_job(job: Any, formats: list[str]) -> KindResolution:
    """A scene job's own checks and its checkpoint (a scene generator, loaded fully): JobSpecError with one line."""
    from aigc_synth.models.scene_families import load_scene_generator, resolve_scene_checkpoint

    if formats != ["parquet"]:
        raise JobSpecError(f"scene jobs write Parquet only: set job.formats=[parquet], got {formats}")
    if job.resolution is not None:
        raise JobSpecError("job.resolution does not apply to scene jobs (they hold no images)")
    if job.scenes or job.scene_checkpoint:
        raise JobSpecError("job.scenes / job.scene_checkpoint are for image jobs of a layout-conditioned model; a scene job samples scenes with job.checkpoint")
    ckpt_path = resolve_scene_checkpoint(job.checkpoint)
    try:
        gen = load_scene_generator(ckpt_path)
    except CheckpointError as exc:
        raise JobSpecError(str(exc)) from None
    config = {"family": gen.family, **{k: v for k, v in gen.meta.get("recipe", {}).items() if k != "family"}}
    return KindResolution(model=ResolvedModel(ckpt_path, gen.model_id, gen.family, config,
                                              scene_schema(gen.traffic, gen.lanes, gen.roads)))


class SceneJobSampler(SamplerBase):
    """A scene generator, loaded once per actor."""

    def __init__(self, job: dict[str, Any], checkpoint_bytes: bytes, device: str = "cpu"):
        from aigc_synth.models.scene_families import load_scene_generator_from_bytes

        super().__init__(job, encode_scenes(job))
        self.gen = load_scene_generator_from_bytes(checkpoint_bytes, source=job["checkpoint"])
        self.model_id = self.gen.model_id
        check_model_id(self, job)
        self.plan = job_plan(job)

    def sample_for(self, job: dict[str, Any], sample_ids: np.ndarray, attempt: int = 0) -> SampleBatch:
        ids = np.asarray(sample_ids, dtype=np.int64)
        plan = self.plan if job is self.job else job_plan(job)
        codes = plan.codes_for(ids)
        seeds = attempt_seeds(job["seed"], ids, attempt)
        traffic, lanes, roads = scene_cells(plan.schema, codes)
        scenes = self.gen.sample(traffic, lanes, seeds.tolist(), ids.tolist(), compute_batch=job["compute_batch"], roads=roads)
        column = np.empty(len(scenes), dtype=object)
        column[:] = scenes
        return SampleBatch(sample_ids=ids, columns={"scene": column, "seed": seeds}, codes=codes)


def respond_scenes(sampler: SceneJobSampler, batch: SampleBatch, job: dict[str, Any], fmt: str | None) -> dict[str, Any]:
    """A served request's scenes: the rows of the scene contract, as a scene job's shard holds them."""
    return {"scenes": table_rows(batch, sampler.encode)}


#: Scenes per (road, traffic, lanes) cell in a scene job's preview.png.
SCENES_PER_CONDITION = 2


def preview_scenes(store: Any, manifest: dict[str, Any]) -> np.ndarray | None:
    """Scene jobs: a bird's-eye view of the first scenes of every (road, traffic, lanes) cell, one row each."""
    from collections import defaultdict

    from aigc_synth.scenes.bev import bev_grid
    from aigc_synth.scenes.format import table_to_scenes

    found: dict[tuple, list] = defaultdict(list)
    for shard in manifest["shards"]:
        for sc in table_to_scenes(store.read_table(shard["path"])):
            key = (sc.road.kind, sc.traffic, sc.num_lanes)
            if len(found[key]) < SCENES_PER_CONDITION:
                found[key].append(sc)
        if len(found) >= len(manifest["counts_per_condition"]) and all(len(v) >= SCENES_PER_CONDITION for v in found.values()):
            break
    if not found:
        return None
    traffic_order = manifest["schema"]["traffic"]
    rows = [found[k] for k in sorted(found, key=lambda k: (ROAD_KINDS.index(k[0]), traffic_order.index(k[1]), k[2]))]
    return bev_grid(rows, columns=SCENES_PER_CONDITION, max_lanes=max(k[2] for k in found))


SCENE_KIND = SamplerKind(name=SCENE_SAMPLER, aliases=("default_scenes", "bundled_scenes"), resolve=resolve_scene_job, build=SceneJobSampler, encoder=encode_scenes,
                         respond=respond_scenes, unit="scene", plan_hint=" (the scene model's trained cells)",
                         checkpoint_format=SCENE_GENERATOR_FORMAT, preview=preview_scenes)
