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

from aigc_synth.errors import CheckpointError, JobSpecError
from aigc_synth.models.exported import GENERATOR_FORMAT
from aigc_synth.io.shards import BOXES_TYPE, GATE_COLUMNS, IMAGE_FILE_EXTENSIONS, IMAGE_TYPE, arrow_schema, png_filename, png_reldir
from aigc_synth.sampling.base import (EncodedShard, KindResolution, ResolvedModel, SampleBatch, SamplerBase, SamplerKind,
                                      check_model_id)
from aigc_synth.sampling.plan import ConditionPlan
from aigc_synth.schema import ConditionSchema
from aigc_synth.seeds import attempt_seeds

#: What a served request may ask its images as: the job's PNG bytes, or the raw pixels as ``.npy``.
SERVE_FORMATS = ("png", "npy")


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
        self.transfer = bool(job.get("layouts"))  # condition transfer: rows name their source frame

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
        if self.transfer:
            columns["source_frame"] = pa.array(list(batch.columns["source_frame"]), pa.string())
        table = pa.Table.from_pydict(columns, schema=arrow_schema(self.schema.names, gate=self.gated, boxes=self.layout,
                                                                  source_frame=self.transfer))
        return EncodedShard(table=table, files=list(zip(names, data)))


def resolve_image_job(job: Any, formats: list[str]) -> KindResolution:
    """The checkpoint (an exported image generator, loaded fully) and, for a layout-conditioned model,
    where each sample's scene comes from (or, with ``job.layouts``, its annotated frame:
    :mod:`aigc_synth.sampling.transfer`); JobSpecError with one line for anything wrong."""
    from aigc_synth.models.exported import load_generator, resolve_checkpoint_path
    from aigc_synth.sampling.layout import resolve_scene_source

    ckpt_path = resolve_checkpoint_path(job.checkpoint)
    try:
        loaded = load_generator(ckpt_path)
    except CheckpointError as exc:
        raise JobSpecError(str(exc)) from None
    if job.resolution is not None and job.resolution != loaded.resolution:
        raise JobSpecError(f"job.resolution={job.resolution} is not supported by the checkpoint, which generates "
                           f"{loaded.resolution}x{loaded.resolution} images (train or pick a {job.resolution}-px model)")
    model = ResolvedModel(ckpt_path, loaded.model_id, loaded.family, dict(loaded.model_config), loaded.schema, loaded.resolution)
    spec: dict[str, Any] = {}
    settled: dict[str, Any] = {}
    plan_schema = None
    if job.layouts:  # condition transfer: the frames are the layouts, and settle the job's size and plan
        from aigc_synth.sampling.transfer import resolve_transfer

        fields, spec, settled = resolve_transfer(job, loaded.family, loaded.schema, ckpt_path, model.model_config)
    else:
        given = [k for k in ("lanes", "drivable", "images", "format") if getattr(job, f"layouts_{k}")]
        if given or job.layouts_unknown_as_zero:
            raise JobSpecError(f"job.layouts_{(given or ['unknown_as_zero'])[0]} applies to condition transfer only: "
                               "give job.layouts (a BDD100K labels JSON or COCO instances.json)")
        fields, roads = resolve_scene_source(job, loaded.family, loaded.schema, ckpt_path)
        if roads:  # layout models: the plan may name road kinds (sampling/layout.py)
            from dataclasses import asdict

            from aigc_synth.sampling.layout import ROAD_FACTOR, layout_job_schema, plan_with_default_road

            plan_schema = layout_job_schema(loaded.schema, roads)
            if ROAD_FACTOR in plan_schema.names and not fields.get("scenes"):  # sampled scenes: straight unless named
                plan = job.plan if isinstance(job.plan, dict) else asdict(job.plan)
                settled["plan"] = plan_with_default_road(plan)
    sampling = job.sampling.options()
    if sampling:  # the family checks its own options (driver-side: a bad one fails before any work)
        if not hasattr(loaded.module, "configure_sampling"):
            raise JobSpecError(f"job.sampling: a {loaded.family} model has no sampling options (got {sorted(sampling)})")
        try:
            loaded.module.configure_sampling(**sampling)
        except ValueError as exc:
            raise JobSpecError(f"job.sampling: {exc}") from None
        fields["sampling"] = spec["sampling"] = sampling
    if fields.get("scenes"):  # given scenes enter the fingerprint as their content hash: no paths
        from aigc_synth.scenes.dataset import scenes_id

        spec["scenes_id"] = scenes_id(fields["scenes"])
    if fields.get("scene_model_id"):
        spec["scene_model_id"] = fields["scene_model_id"]
    return KindResolution(model=model, fields=fields, spec=spec, job=settled, schema=plan_schema)


class ImageSampler(SamplerBase):
    """A conditional image generator (and, for layout models, its scene source), loaded once per actor."""

    def __init__(self, job: dict[str, Any], checkpoint_bytes: bytes, device: str = "cpu"):
        from aigc_synth.models.exported import load_generator_from_bytes

        super().__init__(job, ImageEncoder(job))
        self.device = device
        self.gen = load_generator_from_bytes(checkpoint_bytes, source=job["checkpoint"], device=device)
        self.model_id = self.gen.model_id
        check_model_id(self, job)
        if job.get("sampling"):  # validated in the driver (resolve_image_job)
            self.gen.module.configure_sampling(**job["sampling"])
        self.plan = job_plan(job)
        self.scene_source = None
        if job.get("layout") and not job.get("layouts"):
            from aigc_synth.sampling.layout import SceneSource

            self.scene_source = SceneSource(job)
        self._transfer: dict[str, Any] = {}  # condition transfer: frames by id (the job's, a few requests')

    def transfer_source(self, layouts: dict[str, Any]):
        """The :class:`~aigc_synth.sampling.transfer.TransferSource` of a job's ``layouts`` entry, read once."""
        from aigc_synth.sampling.transfer import TransferSource

        source = self._transfer.get(layouts["id"])
        if source is None:
            if len(self._transfer) >= 8:  # served requests bring their own frames: keep a few
                self._transfer.pop(next(iter(self._transfer)))
            flagged = bool(self.job["model_config"].get("layout_unknown_flags"))
            source = self._transfer[layouts["id"]] = TransferSource(layouts, self.gen.schema, self.gen.resolution, flagged)
        return source

    def images(self, codes: np.ndarray, seeds: np.ndarray, layouts: np.ndarray | None = None) -> np.ndarray:
        """uint8 images, ``job.batch_size`` rows per call (never changes the bytes)."""
        from aigc_synth.sampling.sampler import generate_images

        step = self.job["batch_size"]
        parts = [generate_images(self.gen, codes[i:i + step], seeds[i:i + step], self.device, self.job["compute_batch"],
                                 layouts=None if layouts is None else layouts[i:i + step])
                 for i in range(0, len(codes), step)]
        return np.concatenate(parts) if parts else np.zeros((0, self.gen.resolution, self.gen.resolution, 3), np.uint8)

    def _rows(self, job: dict[str, Any], sample_ids: np.ndarray, attempt: int) -> tuple[SampleBatch, np.ndarray | None]:
        """Everything of the rows but their pixels: (batch without images, layouts or None)."""
        ids = np.asarray(sample_ids, dtype=np.int64)
        plan = self.plan if job is self.job else job_plan(job)
        seeds = attempt_seeds(job["seed"], ids, attempt)
        columns: dict[str, np.ndarray] = {"seed": seeds}
        layouts = None
        if job.get("layouts"):  # condition transfer: frame i // C under condition i % C (sampling/transfer.py)
            codes, layouts, extra = self.transfer_source(job["layouts"]).rows(ids, job["layouts"]["conditions"])
            columns.update(extra)
        else:
            codes = plan.codes_for(ids)
            if self.scene_source is not None:  # layout models: the scene first, then the image that shows it
                from aigc_synth.sampling.layout import layouts_and_labels

                scenes, codes = self.scene_source.scenes_for(ids, codes, plan.schema, seed=job["seed"])
                layouts, columns["scene_id"], columns["boxes"] = layouts_and_labels(scenes, self.gen.resolution)
        for f, (name, values) in enumerate(plan.schema.factors):
            columns[name] = np.asarray(values, dtype=object)[codes[:, f]]
        # the model's factors lead the plan's (a layout job's road follows them): the network and the
        # gate see only the model's own codes
        codes = codes[:, :len(self.gen.schema.names)]
        return SampleBatch(sample_ids=ids, columns=columns, codes=codes), layouts

    def sample_for(self, job: dict[str, Any], sample_ids: np.ndarray, attempt: int = 0) -> SampleBatch:
        return self.sample_slices([(job, sample_ids)], attempt)[0]

    def sample_slices(self, slices, attempt: int = 0) -> list[SampleBatch]:
        """Rows of several jobs (a replica's merged requests) through one run of the network: each row is
        a pure function of its own code, seed and layout, so sharing calls never changes a byte."""
        prepared = [self._rows(job, ids, attempt) for job, ids in slices]
        batches = [b for b, _ in prepared]
        if not batches:
            return []
        codes = np.concatenate([b.codes for b in batches])
        seeds = np.concatenate([b.columns["seed"] for b in batches])
        layouts = None
        if prepared[0][1] is not None:  # a flagged model's transfer rows have "unknown" planes: scenes get zero ones
            width = max(lay.shape[1] for _, lay in prepared)
            layouts = np.concatenate([lay if lay.shape[1] == width else np.concatenate([lay, np.zeros_like(lay)], axis=1)
                                      for _, lay in prepared])
        images = self.images(codes, seeds, layouts)
        start = 0
        for b in batches:
            b.images, start = images[start:start + len(b)], start + len(b)
        return batches


def respond_images(sampler: ImageSampler, batch: SampleBatch, job: dict[str, Any], fmt: str | None) -> dict[str, Any]:
    """A served request's images: one record per row (its index, condition, seed, encoded bytes as base64
    and their sha256; a layout model's rows add ``scene_id`` and ``boxes``), in ``fmt`` (png | npy)."""
    import base64
    import hashlib
    import io

    from aigc_synth.sampling.sampler import encode_png

    fmt = fmt or SERVE_FORMATS[0]
    names = list(job["schema"])  # the request's factors (a transfer request's carry no road)
    records = []
    for n, sample_id in enumerate(batch.sample_ids.tolist()):
        if fmt == "png":
            data = encode_png(batch.images[n])
        else:
            buf = io.BytesIO()
            np.save(buf, np.ascontiguousarray(batch.images[n]), allow_pickle=False)
            data = buf.getvalue()
        record = {"sample_index": int(sample_id), "condition": {k: str(batch.columns[k][n]) for k in names},
                  "seed": int(batch.columns["seed"][n]), "sha256": hashlib.sha256(data).hexdigest(),
                  "data": base64.b64encode(data).decode("ascii")}
        if "scene_id" in batch.columns:
            record.update(scene_id=int(batch.columns["scene_id"][n]), boxes=batch.columns["boxes"][n])
        if "source_frame" in batch.columns:
            record["source_frame"] = str(batch.columns["source_frame"][n])
        records.append(record)
    r = sampler.gen.resolution
    return {"format": fmt, "width": r, "height": r, "images": records}


#: Samples per condition in an image job's preview.png.
PREVIEW_PER_CONDITION = 8


def preview_images(store: Any, manifest: dict[str, Any], per_condition: int = PREVIEW_PER_CONDITION) -> np.ndarray | None:
    """An image job's preview: one row per generated condition (schema order), up to 8 samples each (as
    many columns as the fullest row: a small job's preview is not mostly empty); a layout job's right
    half repeats the grid with each image's boxes drawn. A job with a ``road`` factor keeps one row per
    image condition and splits its columns between the road kinds (in schema order, 8 // kinds each),
    so every row shows every kind without a grid four times as tall."""
    import io
    from collections import defaultdict

    from PIL import Image

    from aigc_synth.data.scene_render import draw_boxes
    from aigc_synth.sampling.layout import ROAD_FACTOR

    names = list(manifest["schema"])
    roads = [None]
    if ROAD_FACTOR in names:  # the kinds the job drew (a plan that names none draws straight only)
        at = names.index(ROAD_FACTOR)
        roads = sorted({key.split(ConditionSchema.KEY_SEP)[at] for key in manifest["counts_per_condition"]})
    per_cell = max(1, per_condition // len(roads))
    found: dict[tuple, list[bytes]] = defaultdict(list)
    boxes: dict[tuple, list[list]] = defaultdict(list)
    wanted = len(manifest["counts_per_condition"])
    for shard in manifest["shards"]:
        if "path" not in shard:
            return None
        table = store.read_table(shard["path"])
        conds = list(zip(*[table.column(n).to_pylist() for n in names]))
        images = table.column("image").combine_chunks().field("bytes").to_pylist()
        shard_boxes = table.column("boxes").to_pylist() if "boxes" in table.column_names else [None] * len(images)
        for cond, data, bx in zip(conds, images, shard_boxes):
            if len(found[cond]) < per_cell:
                found[cond].append(data)
                boxes[cond].append(bx)
        if len(found) >= wanted and all(len(v) >= per_cell for v in found.values()):
            break
    if not found:
        return None
    order = {n: {v: i for i, v in enumerate(vals)} for n, vals in manifest["schema"].items()}
    road_at = names.index(ROAD_FACTOR) if ROAD_FACTOR in names else None

    def row_key(cond: tuple) -> tuple:  # the condition without its road
        return tuple(v for i, v in enumerate(cond) if i != road_at)

    def road_rank(cond: tuple) -> int:
        return 0 if road_at is None else order[ROAD_FACTOR][cond[road_at]]

    cells: dict[tuple, list[tuple]] = defaultdict(list)  # row → its (cond, k) cells, road by road
    for cond in sorted(found, key=road_rank):
        cells[row_key(cond)] += [(cond, k) for k in range(len(found[cond]))]
    row_names = [n for n in names if n != ROAD_FACTOR]
    rows = sorted(cells, key=lambda c: [order[n][v] for n, v in zip(row_names, c)])
    first = np.asarray(Image.open(io.BytesIO(found[cells[rows[0]][0][0]][0])).convert("RGB"))
    h, w = first.shape[:2]
    columns = max(len(v) for v in cells.values())
    grid = np.zeros((len(rows) * h, columns * w, 3), np.uint8)
    boxed = grid.copy()  # layout jobs: the right half repeats the grid with each image's boxes drawn
    has_boxes = any(b is not None for bs in boxes.values() for b in bs)
    for r, row in enumerate(rows):
        for c, (cond, k) in enumerate(cells[row]):
            image = np.asarray(Image.open(io.BytesIO(found[cond][k])).convert("RGB"))
            grid[r * h:(r + 1) * h, c * w:(c + 1) * w] = image
            if has_boxes:
                xyxy = np.array([[b["x0"], b["y0"], b["x1"], b["y1"]] for b in boxes[cond][k] or []], np.float64).reshape(-1, 4)
                boxed[r * h:(r + 1) * h, c * w:(c + 1) * w] = draw_boxes(image, xyxy)
    if has_boxes:
        grid = np.concatenate([grid, np.full((grid.shape[0], 4, 3), 255, np.uint8), boxed], axis=1)
    return grid


IMAGE_KIND = SamplerKind(name="image", resolve=resolve_image_job, build=ImageSampler, encoder=ImageEncoder,
                         respond=respond_images, serve_formats=SERVE_FORMATS, unit="image", images=True, gate=True,
                         checkpoint_format=GENERATOR_FORMAT, preview=preview_images)
