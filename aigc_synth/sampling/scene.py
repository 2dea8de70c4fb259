"""The ``scenes`` sampler kind: a traffic-scene generator under a (traffic level × lane count) plan.

Sample ``i`` of a scene job gets its traffic level and lane count from the job's condition plan
(factors ``traffic`` and ``num_lanes``, the cells the model was trained on) and its seed from
``attempt_seeds(job.seed, i)``; the scene is a pure function of (model, traffic, lanes, seed, i),
so shards are byte-identical whatever the batch or actor. Its shard rows are the public scene
contract (:func:`aigc_synth.scenes.format.scene_arrow_schema`, ``scene_id`` = the sample id).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from aigc_synth.sampling.base import EncodedShard, SampleBatch, SamplerKind
from aigc_synth.sampling.image import job_plan
from aigc_synth.seeds import attempt_seeds
from aigc_synth.schema import ConditionSchema

TRAFFIC_FACTOR, LANES_FACTOR = "traffic", "num_lanes"


def scene_schema(traffic: Sequence[str], lanes: Sequence[int]) -> ConditionSchema:
    """The condition schema of a scene model: its traffic levels and lane counts (as strings)."""
    return ConditionSchema.from_dict({TRAFFIC_FACTOR: list(traffic), LANES_FACTOR: [str(int(n)) for n in lanes]})


def encode_scenes(job: dict[str, Any]):
    """SampleBatch of scenes → the shard's scene table (no files)."""
    from aigc_synth.scenes.format import scenes_to_table

    def encode(batch: SampleBatch, shard: int, formats: Sequence[str]) -> EncodedShard:
        return EncodedShard(table=scenes_to_table(list(batch.columns["scene"])), files=[])

    return encode


class SceneJobSampler:
    """A scene generator and the job's plan, loaded once per actor."""

    def __init__(self, job: dict[str, Any], checkpoint_bytes: bytes, device: str = "cpu"):
        from aigc_synth.models.scene_families import load_scene_generator_from_bytes

        self.job = job
        self.gen = load_scene_generator_from_bytes(checkpoint_bytes, source=job["checkpoint"])
        self.model_id = self.gen.model_id
        if self.model_id != job["model_id"]:
            raise RuntimeError("checkpoint bytes shipped to the actor do not match the validated model id")
        self.plan = job_plan(job)
        self.encode = encode_scenes(job)

    def sample(self, sample_ids: np.ndarray, attempt: int = 0) -> SampleBatch:
        ids = np.asarray(sample_ids, dtype=np.int64)
        codes = self.plan.codes_for(ids)
        seeds = attempt_seeds(self.job["seed"], ids, attempt)
        names = self.plan.schema.names
        (t_f, t_values), (l_f, l_values) = [self.plan.schema.factors[names.index(n)] for n in (TRAFFIC_FACTOR, LANES_FACTOR)]
        traffic = [t_values[c] for c in codes[:, names.index(TRAFFIC_FACTOR)]]
        lanes = [int(l_values[c]) for c in codes[:, names.index(LANES_FACTOR)]]
        scenes = self.gen.sample(traffic, lanes, seeds.tolist(), ids.tolist(), compute_batch=self.job["compute_batch"])
        column = np.empty(len(scenes), dtype=object)
        column[:] = scenes
        return SampleBatch(sample_ids=ids, columns={"scene": column, "seed": seeds}, codes=codes)


SCENE_KIND = SamplerKind(name="scenes", build=SceneJobSampler, encoder=encode_scenes)
