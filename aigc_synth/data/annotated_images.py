"""Real photos with their 2-D annotations as training data of the layout families (``data.source=bdd100k|coco``).

Each item is a photo (resized to the training resolution like
:class:`~aigc_synth.data.bdd100k.BDD100KDataset`), its conditions and the layout raster
:func:`~aigc_synth.data.annotation_layout.annotation_layout` builds from its annotations, so
``layout_gan`` and ``layout_diffusion`` train from a fleet's own labelled frames as they do from
scene renders (:mod:`aigc_synth.data.scene_images`).

* BDD100K (:func:`read_bdd100k_layouts`): conditions, images and boxes exactly as
  :func:`~aigc_synth.data.bdd100k.read_bdd100k` reads them for the condition-only families (same
  mapping, same skips); lane polylines from ``data.lanes`` and drivable polygons from
  ``data.drivable`` (:func:`~aigc_synth.data.annotations.read_bdd100k_annotations`).
* COCO (:func:`read_coco_layouts`): boxes from ``instances.json``
  (:func:`~aigc_synth.data.annotations.read_coco_annotations`); ``file_name`` is relative to
  ``data.images``. Conditions come from each image entry: ``attributes`` in BDD100K's vocabulary
  (``{"weather": "rainy", "timeofday": "night"}``, optionally ``traffic``) through the BDD100K mapping
  (``data.bdd100k_mapping``), else ``conditions`` in schema values (``{"weather": "rain",
  "time_of_day": "night", "traffic": "heavy"}``: what ``aigc-synth export --format coco`` writes), so
  an exported job trains back. Traffic, when neither gives it, is the level of the vehicle box count,
  as for BDD100K. An image with neither object is skipped and counted as ``weather=<missing>``: its
  weather and time of day are unknown, and a guessed condition would teach the model a wrong one
  (the error for a file where no image has them says what to add). Images whose header size is not
  the entry's ``width`` × ``height`` are skipped too (the boxes would not fit the pixels).

Unknown channels. BDD100K frames without lane or drivable labels, and every COCO frame, leave
``lane_lines`` / ``road`` unknown (``known`` False). How that reaches the model:

* By default the unknown channel is **zero** (what ``annotation_layout`` returns) and nothing else
  changes: the architecture, and so every bundled checkpoint and the scene path, stay byte-identical.
  That is exact for a data set where a channel is unknown in *every* frame (COCO boxes only): the
  channel is then constant, carries no information either way, and the model learns road and lane
  markings from the pictures alone, conditioned on where the vehicles are. It is wrong only where
  frames mix (some with lanes, some without): "no lanes here" and "lanes not labelled" look alike, so
  the summary line warns and names the switch.
* ``model.layout_unknown_flags=true`` (both families; an architecture key, default off) adds one
  input plane per layout channel, 1 where that channel is unknown
  (:func:`~aigc_synth.data.annotation_layout.with_unknown_flags`), read by the generator's layout
  convolutions (and the GAN's discriminator, the diffusion UNet's input). Unknown channels stay zero,
  so a known channel's planes are zero: a flagged model given a scene's plain 6-channel layout (jobs,
  serving) pads zero planes and reads it as "everything known", and its extra weights see nothing
  on fully known data. Planes rather than one sentinel value in the raster, because a layout value is
  a coverage in [0, 1] where every value means something (0.5 is half a pixel of road), and a
  per-frame flag is what lets one model train on mixed data and later take either kind of layout.

Layouts are computed per batch, not cached (a real data set has too many frames to hold them: 98 kB a
frame at 64 px): ≈13 ms a frame at 64 px for 1280 × 720 with 25 boxes, 12 lane lines and 3 drivable
polygons (one core), which ``train.loader_workers`` spreads over processes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from aigc_synth.data.annotation_layout import FrameAnnotations, annotation_layout, known_channels, with_unknown_flags
from aigc_synth.data.annotations import AnnotationSkipped, format_annotation_skipped, read_bdd100k_annotations, read_coco_annotations
from aigc_synth.data.bdd100k import (
    BDD100KDataset,
    BDD100KRecord,
    checked_image_size,
    load_bdd100k_mapping,
    mapped_conditions,
    read_bdd100k,
    traffic_condition,
)
from aigc_synth.data.bdd100k_fixtures import write_bdd100k_fixture
from aigc_synth.data.layout import LAYOUT_CHANNELS
from aigc_synth.errors import UsageError
from aigc_synth.schema import DEFAULT_SCHEMA, ConditionSchema

#: The layout channels a frame's annotations may leave unknown.
MAYBE_UNKNOWN = ("road", "lane_lines")


@dataclass
class AnnotatedRecord(BDD100KRecord):
    """A usable frame: image, conditions, boxes (clipped to the image) and its full annotations."""

    annotations: FrameAnnotations | None = None


# ------------------------------------------------------------------------------------------------
# readers
# ------------------------------------------------------------------------------------------------
def read_bdd100k_layouts(images_dir: str | Path, labels_json: str | Path, lanes_json: str | Path | None = None,
                         drivable_json: str | Path | None = None, schema: ConditionSchema = DEFAULT_SCHEMA,
                         mapping: str | Path | Mapping[str, Any] | None = None
                         ) -> tuple[list[AnnotatedRecord], AnnotationSkipped]:
    """BDD100K frames as :class:`AnnotatedRecord` and what was skipped (frames by reason, dropped boxes
    and shapes); :class:`~aigc_synth.errors.UsageError` (one line) for any file that cannot be used and
    when no frame is usable."""
    records, skipped = read_bdd100k(images_dir, labels_json, schema, mapping)
    frames, ann_skipped = read_bdd100k_annotations(labels_json, lanes_json, drivable_json, images_dir=images_dir)
    out = AnnotationSkipped(skipped)
    out.boxes, out.shapes = skipped.boxes, ann_skipped.shapes
    root = Path(images_dir).expanduser()
    kept = []
    for r in records:
        ann = frames.get(r.path.relative_to(root).as_posix())
        if ann is None:  # the layout reader wants box2d numbers, where the condition reader takes numeric strings
            out["malformed box2d"] += 1
            continue
        kept.append(AnnotatedRecord(r.path, r.conditions, r.boxes, ann))
    if not kept:
        raise UsageError(f"no usable frames in {labels_json}: {format_annotation_skipped(out)}")
    return kept, out


def schema_value_mapping(m: Mapping[str, Any], schema: ConditionSchema = DEFAULT_SCHEMA) -> dict[str, Any]:
    """The BDD100K mapping ``m`` rewritten for attributes that already hold schema values (COCO's
    ``conditions``): each factor read from its own name, every value to itself, traffic given by the
    traffic factor's name or derived from the box count as in ``m``."""
    out = {**m, "factors": {f: {"from": f, "values": {v: v for v in schema.values(f)}} for f in m["factors"]}}
    if m["traffic"]:
        out["traffic"] = {**m["traffic"], "attribute": m["traffic"]["factor"]}
    return out


def frame_attributes(ann: FrameAnnotations, m: Mapping[str, Any], values: Mapping[str, Any]) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    """``(attributes, mapping)`` a frame's conditions are read with: its ``attributes`` (BDD100K's
    vocabulary) through ``m``, else its ``conditions`` (schema values) through ``values``
    (:func:`schema_value_mapping` of ``m``)."""
    if "attributes" in ann.meta:
        return ann.meta["attributes"], m
    return ann.meta.get("conditions", {}), values


def read_coco_layouts(images_dir: str | Path, instances_json: str | Path, schema: ConditionSchema = DEFAULT_SCHEMA,
                      mapping: str | Path | Mapping[str, Any] | None = None
                      ) -> tuple[list[AnnotatedRecord], AnnotationSkipped]:
    """COCO images as :class:`AnnotatedRecord` (conditions: see the module docstring) and what was
    skipped; :class:`~aigc_synth.errors.UsageError` (one line) for a file that cannot be used and when
    no image is usable."""
    frames, skipped = read_coco_annotations(instances_json)
    root = Path(images_dir).expanduser()
    if not root.is_dir():
        raise UsageError(f"COCO image directory not found: {root}")
    m = mapping if isinstance(mapping, Mapping) else load_bdd100k_mapping(mapping, schema)
    values = schema_value_mapping(m, schema)
    records = []
    for name, ann in frames.items():
        attrs, mp = frame_attributes(ann, m, values)
        conditions, reason = mapped_conditions(attrs, mp)
        path, size = root / name, None
        if reason is None:
            size, reason = checked_image_size(path)
        if reason is None and tuple(size) != (ann.width, ann.height):
            reason = "image size differs from instances.json"
        if reason is None and mp["traffic"]:
            conditions[mp["traffic"]["factor"]], reason = traffic_condition(attrs, ann.boxes, mp, schema)
        if reason is not None:
            skipped[reason] += 1
            continue
        records.append(AnnotatedRecord(path, schema.validate(conditions), list(ann.boxes), ann))
    if not records:
        raise UsageError(f"no usable images in {instances_json} (images in {root}): {format_annotation_skipped(skipped)}; "
                         "an image needs 'attributes' with BDD100K's weather / timeofday values "
                         f"(mapping {m['path']}) or 'conditions' with the schema's values")
    return records, skipped


# ------------------------------------------------------------------------------------------------
# the dataset
# ------------------------------------------------------------------------------------------------
class AnnotatedImageDataset(BDD100KDataset):
    """:class:`~aigc_synth.data.bdd100k.BDD100KDataset`'s items (image, codes, boxes; indices wrap
    around) plus ``layout`` float32 (L, R, R) (L = 12 with ``unknown_flags``: the raster then its
    "unknown" planes), ``layout_known`` bool (6,) and ``labels`` (each box's category)."""

    def __init__(self, records: Sequence[AnnotatedRecord], skipped: AnnotationSkipped, schema: ConditionSchema = DEFAULT_SCHEMA,
                 resolution: int = 64, unknown_flags: bool = False):
        if not records:
            raise ValueError("no annotated frames")
        self.schema, self.resolution, self.unknown_flags = schema, int(resolution), bool(unknown_flags)
        self.records, self.skipped = list(records), skipped
        self.files = [r.path for r in self.records]
        self.codes = schema.encode_many(r.conditions for r in self.records)
        self.known = np.stack([known_channels(r.annotations) for r in self.records])  # (n, C)

    def layout(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """``annotation_layout`` of item ``index``: the raster (C, R, R) and its known flags (C,)."""
        return annotation_layout(self.records[int(index) % len(self)].annotations, self.resolution)

    def batch(self, indices: Sequence[int]) -> dict[str, Any]:
        out = super().batch(indices)
        idx = [int(i) % len(self) for i in indices]
        rasters, known = zip(*(self.layout(i) for i in idx))
        layout, known_t = torch.from_numpy(np.stack(rasters)), torch.from_numpy(np.stack(known))
        out["layout"] = with_unknown_flags(layout, known_t) if self.unknown_flags else layout
        out["layout_known"] = known_t
        out["labels"] = [self.categories(i) for i in idx]
        return out

    def summary(self) -> str:
        """One line: frames, what is known of the layout, what was skipped (and a warning for mixed
        known / unknown channels without ``unknown_flags``)."""
        n = len(self)
        counts = {c: int(self.known[:, LAYOUT_CHANNELS.index(c)].sum()) for c in MAYBE_UNKNOWN}
        text = f"{n} frames, layout known: " + ", ".join(f"{c} {k}/{n}" for c, k in counts.items())
        text += f"; {format_annotation_skipped(self.skipped)}"
        mixed = [c for c, k in counts.items() if 0 < k < n]
        if mixed and not self.unknown_flags:
            text += (f"; warning: {' and '.join(mixed)} known in some frames only, read as 'none' where unknown "
                     "(model.layout_unknown_flags=true tells the model which)")
        return text


def bdd100k_layout_dataset(images: str, labels: str, lanes: str | None = None, drivable: str | None = None,
                           schema: ConditionSchema = DEFAULT_SCHEMA, resolution: int = 64, mapping: str | None = None,
                           unknown_flags: bool = False) -> AnnotatedImageDataset:
    """``data.source=bdd100k`` for a layout family."""
    records, skipped = read_bdd100k_layouts(images, labels, lanes, drivable, schema, mapping)
    return AnnotatedImageDataset(records, skipped, schema, resolution, unknown_flags)


def coco_layout_dataset(images: str, instances: str, schema: ConditionSchema = DEFAULT_SCHEMA, resolution: int = 64,
                        mapping: str | None = None, unknown_flags: bool = False) -> AnnotatedImageDataset:
    """``data.source=coco`` (a layout family)."""
    records, skipped = read_coco_layouts(images, instances, schema, mapping)
    return AnnotatedImageDataset(records, skipped, schema, resolution, unknown_flags)


# ------------------------------------------------------------------------------------------------
# a COCO fixture
# ------------------------------------------------------------------------------------------------
def bdd100k_boxes_to_coco(labels_json: str | Path, out_json: str | Path, width: int, height: int) -> Path:
    """A BDD100K labels file (e.g. :func:`~aigc_synth.data.bdd100k.write_scene_frames`'s) as a COCO
    boxes-only ``instances.json`` at ``out_json`` (``file_name`` = the frame's name, so ``data.images``
    is the same images directory): boxes of ``car`` / ``truck`` / ``bus``, image ``attributes`` = the
    frame's ``weather``, ``timeofday`` and (when present) ``traffic``. Lanes and drivable areas are
    dropped: COCO has no such annotations. Every image is ``width`` × ``height``."""
    categories = {"car": 1, "truck": 2, "bus": 3}
    images, annotations = [], []
    for i, frame in enumerate(json.loads(Path(labels_json).read_text())):
        attrs = {k: v for k, v in frame.get("attributes", {}).items() if k in ("weather", "timeofday", "traffic")}
        images.append({"id": i + 1, "file_name": frame["name"], "width": width, "height": height, "attributes": attrs})
        for label in frame.get("labels") or []:
            if label.get("category") not in categories or "box2d" not in label:
                continue
            b = label["box2d"]
            w, h = b["x2"] - b["x1"], b["y2"] - b["y1"]
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": categories[label["category"]],
                                "bbox": [b["x1"], b["y1"], w, h], "area": w * h, "iscrowd": 0})
    doc = {"images": images, "annotations": annotations,
           "categories": [{"id": cid, "name": name, "supercategory": "vehicle"} for name, cid in categories.items()]}
    path = Path(out_json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path


def write_coco_fixture(out_dir: str | Path, n: int, seed: int, resolution: int = 64) -> tuple[Path, Path]:
    """The frames of ``write_bdd100k_fixture(out_dir, n, seed, resolution, layout_labels=True)`` (which
    it writes too) as a COCO boxes-only export ``out_dir/instances.json``; return ``(images_dir,
    instances_json)``. Image entries carry BDD100K ``attributes`` (weather, timeofday), except frame 1,
    which carries schema ``conditions`` instead (as ``aigc-synth export --format coco`` writes), and
    frame ``n + 1`` (weather undefined in the BDD100K fixture), which carries neither. A reader keeps
    the ``n`` frames the BDD100K reader keeps, with the same conditions."""
    images_dir, labels_json = write_bdd100k_fixture(out_dir, n, seed, resolution, layout_labels=True)
    path = bdd100k_boxes_to_coco(labels_json, Path(out_dir) / "instances.json", resolution, resolution)
    doc = json.loads(path.read_text())
    m = load_bdd100k_mapping()
    for i, entry in enumerate(doc["images"]):
        attrs = {k: v for k, v in entry.pop("attributes").items() if k in ("weather", "timeofday")}
        if i == 1:  # schema values, as our own COCO export writes them
            entry["conditions"], _ = mapped_conditions(attrs, m)
        elif i != n + 1:  # frame n + 1 carries no condition at all
            entry["attributes"] = attrs
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return images_dir, path
