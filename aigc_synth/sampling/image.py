"""The ``image`` sampler kind: a conditional image generator under a condition plan.

Sample ``i`` of a job gets its condition from the plan and its latent from the seed
``attempt_seeds(job.seed, i, attempt)``; the generator runs on fixed-size micro-batches
(:func:`aigc_synth.sampling.sampler.generate_images`), so rows are bit-identical whatever the
batch or actor. Its shard rows: ``sample_id, seed, <factors…>, image{bytes, path}, width,
height, model_id`` (+ the gate columns on gated jobs), images encoded as ``job.image_format``
(png by default; jpeg / webp at ``job.image_quality``), the same bytes in Parquet and in the files.
The gate (when on) judges the generated pixels before encoding, so it never depends on the format.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from aigc_synth.io.shards import BOXES_TYPE, GATE_COLUMNS, IMAGE_FILE_EXTENSIONS, IMAGE_TYPE, arrow_schema, png_filename, png_reldir
from aigc_synth.sampling.base import EncodedShard, SampleBatch, SamplerKind
from aigc_synth.sampling.plan import ConditionPlan
from aigc_synth.seeds import attempt_seeds
from aigc_synth.schema import ConditionSchema


def job_plan(job: dict[str, Any]) -> ConditionPlan:
    """The resolved job's condition plan."""
    return ConditionPlan(job["plan"], ConditionSchema.from_dict(job["schema"]), job["num_samples"], job["seed"])


class ImageEncoder:
    """SampleBatch of images → encoded image bytes + the shard's Arrow table (no model needed)."""

    def __init__(self, job: dict[str, Any]):
        self.schema = ConditionSchema.from_dict(job["schema"])
        self.model_id, self.resolution, self.gated = job["model_id"], int(job["resolution"]), bool(job.get("gate"))
        # .get: a job dict resolved before formats existed means png, as it did then
        self.image_format, self.image_quality = job.get("image_format", "png"), int(job.get("image_quality", 90))
        self.ext = IMAGE_FILE_EXTENSIONS[self.image_format]
        self.layout = bool(job.get("layout"))

    def __call__(self, batch: SampleBatch, shard: int, formats: Sequence[str]) -> EncodedShard:
        from aigc_synth.sampling.sampler import encode_image

        ids = batch.sample_ids
        names = [png_filename(int(i), self.ext) for i in ids]
        data = [encode_image(img, self.image_format, self.image_quality) for img in batch.images]
        # the image's path: into the shard's image folder ("png" in formats: the folder, whatever the
        # encoding) when there is one, else just its name
        paths = [f"{png_reldir(shard)}/{n}" for n in names] if "png" in formats else names
        n = len(ids)
        columns: dict[str, pa.Array] = {"sample_id": pa.array(ids, pa.int64()),
                                        "seed": pa.array(batch.columns["seed"], pa.int64())}
        columns.update({name: pa.array(list(batch.columns[name]), pa.string()) for name in self.schema.names})
        columns["image"] = pa.StructArray.from_arrays([pa.array(data, pa.binary()), pa.array(paths, pa.string())],
                                                      fields=list(IMAGE_TYPE))
        columns["width"] = pa.array(np.full(n, self.resolution), pa.int32())
        columns["height"] = pa.array(np.full(n, self.resolution), pa.int32())
        columns["model_id"] = pa.array([self.model_id] * n, pa.string())
        if self.gated:
            columns.update({name: pa.array(batch.columns[name], typ) for name, (typ, _) in GATE_COLUMNS.items()})
        if self.layout:
            columns["scene_id"] = pa.array(batch.columns["scene_id"], pa.int64())
            columns["boxes"] = pa.array(list(batch.columns["boxes"]), BOXES_TYPE)
        table = pa.Table.from_pydict(columns, schema=arrow_schema(self.schema.names, gate=self.gated, boxes=self.layout))
        return EncodedShard(table=table, files=list(zip(names, data)))


class ImageSampler:
    """A conditional image generator and the job's plan, loaded once per actor."""

    def __init__(self, job: dict[str, Any], checkpoint_bytes: bytes, device: str = "cpu"):
        from aigc_synth.models.exported import load_generator_from_bytes

        self.job, self.device = job, device
        self.gen = load_generator_from_bytes(checkpoint_bytes, source=job["checkpoint"], device=device)
        self.model_id = self.gen.model_id
        if self.model_id != job["model_id"]:
            raise RuntimeError("checkpoint bytes shipped to the actor do not match the validated model id")
        self.plan = job_plan(job)
        self.encode = ImageEncoder(job)
        self.scene_source = None
        if job.get("layout"):
            from aigc_synth.sampling.layout import SceneSource

            self.scene_source = SceneSource(job)

    def images(self, codes: np.ndarray, seeds: np.ndarray, layouts: np.ndarray | None = None) -> np.ndarray:
        """uint8 images, ``job.batch_size`` rows per call (never changes the bytes)."""
        from aigc_synth.sampling.sampler import generate_images

        step = self.job["batch_size"]
        parts = [generate_images(self.gen, codes[i:i + step], seeds[i:i + step], self.device, self.job["compute_batch"],
                                 layouts=None if layouts is None else layouts[i:i + step])
                 for i in range(0, len(codes), step)]
        return np.concatenate(parts) if parts else np.zeros((0, self.gen.resolution, self.gen.resolution, 3), np.uint8)

    def sample(self, sample_ids: np.ndarray, attempt: int = 0) -> SampleBatch:
        ids = np.asarray(sample_ids, dtype=np.int64)
        codes = self.plan.codes_for(ids)
        seeds = attempt_seeds(self.job["seed"], ids, attempt)
        columns: dict[str, np.ndarray] = {"seed": seeds}
        layouts = None
        if self.scene_source is not None:  # layout models: the scene first, then the image that shows it
            from aigc_synth.sampling.layout import layouts_and_labels

            scenes, codes = self.scene_source.scenes_for(ids, codes, self.plan.schema)
            layouts, columns["scene_id"], columns["boxes"] = layouts_and_labels(scenes, self.gen.resolution)
        for f, (name, values) in enumerate(self.plan.schema.factors):
            columns[name] = np.asarray(values, dtype=object)[codes[:, f]]
        return SampleBatch(sample_ids=ids, columns=columns, images=self.images(codes, seeds, layouts), codes=codes)


IMAGE_KIND = SamplerKind(name="image", build=ImageSampler, encoder=ImageEncoder)
