"""Condition transfer: a fleet's own labelled frames drawn under other conditions (``job.layouts=``).

A layout-conditioned image job whose layouts come from 2-D annotations instead of traffic scenes:
each usable frame of a BDD100K labels JSON (with optional lane and drivable-area labels) or a COCO
``instances.json`` gives its layout raster
(:func:`~aigc_synth.data.annotation_layout.annotation_layout`), and the job draws that raster under
every condition of the plan.

**Conditions.** The plan names weather × time of day only: a ``grid`` (``factors``; a factor left out
means all its values; no ``weights``) or a ``list`` (``items`` of ``{conditions: {weather, time_of_day}}``,
no weights): its *cells*, in order (grid: row-major over the schema's factor order, each factor's
values as listed). Traffic is each frame's own (a layout *is* its vehicles): the frame's ``traffic``
attribute when it has one (what ``aigc-synth export`` writes), else the level of its vehicle box count
through ``conf/mappings/bdd100k.yaml`` (≤ 2 light, 3–5 moderate, ≥ 6 heavy), as training reads it.

**Sample ids** (a pure rule, frame-major): with ``F`` usable frames in file order and ``C`` cells,
the job has ``F × C`` samples (``job.num_samples`` does not apply) and sample ``i`` is frame ``i // C``
under cell ``i % C``, its latent from ``attempt_seeds(job.seed, i, attempt)`` as in every image job;
so each frame's ``C`` images are consecutive rows.

**Rows** are an image job's plus ``source_frame`` (the frame's name: BDD100K ``name``, COCO
``file_name``); ``scene_id`` is the frame's index among the usable frames; ``boxes`` are the frame's
vehicle boxes (``car``, ``truck``, ``bus``: what the raster draws; other categories are not drawn and
not listed) as annotated, scaled to the output resolution like the raster (aspect ratio not kept),
``agent`` = the box's index in the frame's labels, ``label`` = its category, ``visible`` = the share
of its face nearer faces leave (:func:`~aigc_synth.data.annotation_layout.annotation_boxes`).

**Unknown channels.** A frame without lane labels (not in ``job.layouts_lanes``, or no such file;
every COCO frame) has ``lane_lines`` unknown, likewise ``road`` without drivable-area labels. A model
built with ``layout_unknown_flags`` gets the "unknown" planes; a model without them cannot tell
"unknown" from "none", so such a job is refused unless ``job.layouts_unknown_as_zero=true`` (right for
a model trained with those channels unknown in every frame, e.g. on COCO boxes).

**Fingerprint.** The frames enter the job's fingerprint as :func:`frames_id`, a sha256 of what was
read (names, sizes, boxes, lanes, polygons, traffic), never as paths; an actor re-reads the files and
refuses to work when they changed since validation. ``aigc-synth serve`` takes the same frames inline
(:func:`inline_layouts`).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from aigc_synth.data.annotation_layout import FrameAnnotations, annotation_boxes, annotation_layout, known_channels
from aigc_synth.data.layout import LAYOUT_CHANNELS
from aigc_synth.errors import JobSpecError, PlanError, SchemaError, UsageError
from aigc_synth.schema import ConditionSchema

LAYOUTS_FORMATS = ("bdd100k", "coco")


@dataclass
class TransferFrame:
    """One usable source frame: its name, annotations and own traffic level (None: no traffic factor)."""

    name: str
    ann: FrameAnnotations
    traffic: str | None


# ------------------------------------------------------------------------------------------------
# frames
# ------------------------------------------------------------------------------------------------
def detect_format(data: Any) -> str | None:
    """``bdd100k`` for a list of frames (or Scalabel's ``{"frames": [...]}``), ``coco`` for an object with
    ``images`` and ``annotations``, else None."""
    if isinstance(data, list) or (isinstance(data, Mapping) and isinstance(data.get("frames"), list)):
        return "bdd100k"
    if isinstance(data, Mapping) and "images" in data and "annotations" in data:
        return "coco"
    return None


def read_transfer_frames(source: Mapping[str, Any], schema: ConditionSchema) -> tuple[list[TransferFrame], Any]:
    """The usable frames of ``source`` (``{"format", "labels", "lanes", "drivable", "images", "size"}``;
    ``labels`` / ``lanes`` / ``drivable`` paths or parsed BDD100K frames) in file order, and what was
    skipped (:class:`~aigc_synth.data.annotations.AnnotationSkipped`). UsageError / SchemaError (one
    line) for a file that cannot be used and when no frame is usable."""
    from aigc_synth.data.annotated_images import frame_attributes, schema_value_mapping
    from aigc_synth.data.annotations import (BDD100K_IMAGE_SIZE, format_annotation_skipped, read_bdd100k_annotations,
                                             read_coco_annotations)
    from aigc_synth.data.bdd100k import load_bdd100k_mapping, traffic_condition

    if source["format"] == "coco":
        frames, skipped = read_coco_annotations(source["labels"])
    else:
        size = tuple(source.get("size") or BDD100K_IMAGE_SIZE)
        frames, skipped = read_bdd100k_annotations(source["labels"], source.get("lanes"), source.get("drivable"),
                                                   images_dir=source.get("images"), image_size=size)
    m = load_bdd100k_mapping(None, schema)
    values = schema_value_mapping(m, schema)
    out = []
    for name, ann in frames.items():
        level = None
        if m["traffic"]:
            attrs, mp = frame_attributes(ann, m, values)
            level, reason = traffic_condition(attrs, ann.boxes, mp, schema)
            if reason is not None:
                skipped[reason] += 1
                continue
        out.append(TransferFrame(name, ann, level))
    if not out:
        raise UsageError(f"no usable frames: {format_annotation_skipped(skipped)}")
    return out, skipped


def frames_id(frames: Sequence[TransferFrame]) -> str:
    """sha256 of the frames as read (name, size, boxes, lanes with styles, polygons, traffic), in order."""
    digest = hashlib.sha256()
    for f in frames:
        a = f.ann
        digest.update(json.dumps([f.name, a.width, a.height, a.boxes, a.lanes, a.lane_styles, a.drivable, f.traffic],
                                 separators=(",", ":")).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def unknown_channels_problem(frames: Sequence[TransferFrame], flagged: bool, as_zero: bool) -> str | None:
    """Why a model without ``layout_unknown_flags`` cannot take these frames (see the module docstring), or None."""
    if flagged or as_zero:
        return None
    known = np.stack([known_channels(f.ann) for f in frames])
    unknown = [(c, int((~known[:, LAYOUT_CHANNELS.index(c)]).sum())) for c in ("road", "lane_lines")]
    unknown = [(c, k) for c, k in unknown if k]
    if not unknown:
        return None
    what = " and ".join(f"{c} unknown in {k} of {len(frames)} frames" for c, k in unknown)
    return (f"{what} (no lane / drivable-area labels for them), and the model has no layout_unknown_flags: it would "
            "read 'unknown' as 'none'. Give the labels (BDD100K: job.layouts_lanes, job.layouts_drivable), use a model "
            "trained with model.layout_unknown_flags=true, or set job.layouts_unknown_as_zero=true for a model trained "
            "with those channels unknown in every frame (e.g. on COCO boxes)")


# ------------------------------------------------------------------------------------------------
# conditions
# ------------------------------------------------------------------------------------------------
def traffic_factor(schema: ConditionSchema) -> str | None:
    """The factor each frame fixes itself (the BDD100K mapping's traffic factor), None if none."""
    from aigc_synth.data.bdd100k import load_bdd100k_mapping

    m = load_bdd100k_mapping(None, schema)
    return m["traffic"]["factor"] if m["traffic"] else None


def transfer_conditions(plan: Mapping[str, Any], schema: ConditionSchema, fixed: str | None) -> list[dict[str, str]]:
    """The plan's cells (see the module docstring) as conditions without the ``fixed`` factor; PlanError
    (one line) for a plan that is no grid / list over the other factors."""
    free = [(name, values) for name, values in schema.factors if name != fixed]
    kind = plan.get("kind", "grid")
    note = f" (the {fixed} of each frame is its own)" if fixed else ""
    if kind == "grid":
        factors = plan.get("factors") or {}
        if not isinstance(factors, Mapping):
            raise PlanError(f"plan.factors must map factor → list of values, got {factors!r}")
        if fixed in factors:
            raise PlanError(f"a condition-transfer plan names {[n for n, _ in free]} only{note}; got factors {sorted(factors)}")
        if plan.get("weights") is not None:
            raise PlanError("plan.weights do not apply to condition transfer: every frame is drawn once under each condition")
        axes = []
        for name, values in free:
            chosen = factors.get(name)
            chosen = list(values) if chosen is None else [chosen] if isinstance(chosen, (str, int)) else list(chosen)
            if not chosen:
                raise PlanError(f"empty grid: factor {name!r} has no values (allowed values: {list(values)})")
            axes.append([str(v) for v in chosen])
        cells = [dict(zip([n for n, _ in free], combo)) for combo in itertools.product(*axes)]
    elif kind == "list":
        items = plan.get("items") or []
        if not items:
            raise PlanError("plan kind 'list' needs at least one item: [{conditions: {...}}]")
        cells = []
        for i, item in enumerate(items):
            if not isinstance(item, Mapping) or not isinstance(item.get("conditions"), Mapping):
                raise PlanError(f"plan.items[{i}] must be {{conditions: {{factor: value}}}}, got {item!r}")
            if float(item.get("weight", 1.0)) != 1.0:
                raise PlanError("plan weights do not apply to condition transfer: every frame is drawn once under each condition")
            cond = dict(item["conditions"])
            if fixed in cond:
                raise PlanError(f"plan.items[{i}] names {fixed!r}{note}; name {[n for n, _ in free]} only")
            cells.append(cond)
    else:
        raise PlanError(f"a condition-transfer plan is a 'grid' or a 'list' over {[n for n, _ in free]}, not {kind!r}")
    out = []
    for i, cond in enumerate(cells):
        cond = schema.validate({k: str(v) for k, v in cond.items()}, partial=True)  # SchemaError for a bad one
        missing = [n for n, _ in free if n not in cond]
        if missing:
            raise PlanError(f"condition {i} {cond} is missing {missing}")
        out.append(cond)
    return out


def transfer_plan(frames: Sequence[TransferFrame], cells: Sequence[Mapping[str, str]], schema: ConditionSchema,
                  fixed: str | None) -> dict[str, Any]:
    """The job's plan as an exact ``list`` plan: one item per generated condition, its weight the number
    of samples that get it, so the manifest's counts per condition are the rows' counts."""
    from collections import Counter

    levels = Counter(f.traffic for f in frames)
    counts: Counter = Counter()
    for cell in cells:
        for level, n in levels.items():
            counts[tuple(schema.encode({**cell, **({fixed: level} if fixed else {})}))] += n
    return {"kind": "list", "items": [{"conditions": schema.decode(list(code)), "weight": float(n)}
                                      for code, n in sorted(counts.items())]}


# ------------------------------------------------------------------------------------------------
# the driver's check (job.layouts=) and a served request's frames
# ------------------------------------------------------------------------------------------------
def _spec(frames: Sequence[TransferFrame], cells: list[dict[str, str]], as_zero: bool) -> dict[str, Any]:
    return {"id": frames_id(frames), "num_frames": len(frames), "conditions": cells,
            **({"unknown_as_zero": True} if as_zero else {})}


def resolve_transfer(job: Any, family: str, schema: ConditionSchema, checkpoint: Path,
                     model_config: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """``(fields, spec, job keys)`` of a ``job.layouts`` job, checked in the driver: the ResolvedJob
    fields (``layout``, ``layouts``), the fingerprint's entry (frames id, cells) and the JobConfig keys
    the frames settle (``num_samples`` = frames × cells, the exact ``plan``). JobSpecError, one line."""
    from dataclasses import asdict

    from aigc_synth.errors import BadFileError, reading
    from aigc_synth.models.registry import get_family

    if not get_family(family).layout:
        raise JobSpecError(f"job.layouts needs a layout-conditioned checkpoint (layout_gan, layout_diffusion); {checkpoint} "
                           f"is a {family} model, which takes no layout")
    if job.scenes:
        raise JobSpecError("job.layouts and job.scenes are two sources of layouts; give one")
    path = Path(job.layouts).expanduser()
    if not path.is_file():
        raise JobSpecError(f"job.layouts: file not found: {path}")
    fmt = job.layouts_format
    if fmt is None:
        try:
            with reading(path, "job.layouts"), open(path, encoding="utf-8") as fh:
                fmt = detect_format(json.load(fh))
        except BadFileError as exc:  # not JSON, unreadable: the job's error class, one line
            raise JobSpecError(str(exc)) from None
        if fmt is None:
            raise JobSpecError(f"job.layouts {path}: neither BDD100K frames (a JSON list of {{name, labels}}) nor COCO "
                               "instances ({images, annotations}); set job.layouts_format=bdd100k|coco")
    elif fmt not in LAYOUTS_FORMATS:
        raise JobSpecError(f"job.layouts_format must be one of {list(LAYOUTS_FORMATS)} (or null: from the file), got {fmt!r}")
    extra = {k: getattr(job, f"layouts_{k}") for k in ("lanes", "drivable", "images")}
    if fmt == "coco" and any(extra.values()):
        given = [f"job.layouts_{k}" for k, v in extra.items() if v]
        raise JobSpecError(f"{', '.join(given)} apply to BDD100K labels; {path} is COCO instances (boxes, sizes in the file)")
    source = {"format": fmt, "labels": str(path.absolute()),
              **{k: str(Path(v).expanduser().absolute()) if v else None for k, v in extra.items()}}
    try:
        frames, _ = read_transfer_frames(source, schema)
        fixed = traffic_factor(schema)
    except (UsageError, SchemaError) as exc:
        raise JobSpecError(f"job.layouts: {exc}") from None
    plan = job.plan if isinstance(job.plan, Mapping) else asdict(job.plan)
    try:
        cells = transfer_conditions(plan, schema, fixed)
    except (PlanError, SchemaError) as exc:
        raise JobSpecError(f"job.plan: {exc}") from None
    problem = unknown_channels_problem(frames, bool(model_config.get("layout_unknown_flags")), job.layouts_unknown_as_zero)
    if problem:
        raise JobSpecError(f"job.layouts: {problem}")
    num = len(frames) * len(cells)
    if num > job.max_samples:
        raise JobSpecError(f"job.layouts: {len(frames)} frames × {len(cells)} conditions = {num} samples exceeds "
                           f"job.max_samples={job.max_samples}")
    spec = _spec(frames, cells, job.layouts_unknown_as_zero)
    return ({"layout": True, "layouts": {**source, **spec}}, {"layouts": spec},
            {"num_samples": num, "plan": transfer_plan(frames, cells, schema, fixed)})


def inline_layouts(frames: Any, lanes: Any, drivable: Any, size: Any, conditions: Any, schema: ConditionSchema,
                   flagged: bool, as_zero: bool = False) -> tuple[dict[str, Any], dict[str, Any], int]:
    """A served request's frames (BDD100K frames as JSON; ``lanes`` / ``drivable`` frames, or True for
    the same list, or None; ``size`` [width, height] of the frames' images, None: 1280 × 720) under its
    ``conditions`` (weather × time of day): ``(the job's layouts entry, its exact plan, num_samples)``.
    ValueError with one line for anything wrong."""
    if not isinstance(frames, list) or not frames:
        raise ValueError("'layouts' must be a non-empty list of BDD100K frames {name, labels: [{category, box2d}, ...]}")
    shapes = []
    for key, value in (("layouts_lanes", lanes), ("layouts_drivable", drivable)):
        if value is True:
            value = frames
        elif value is not None and value is not False and not isinstance(value, list):
            raise ValueError(f"{key!r} must be a list of BDD100K frames, or true for the frames of 'layouts'")
        shapes.append(value or None)
    if size is not None and not (isinstance(size, list) and len(size) == 2
                                 and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
        raise ValueError(f"'layouts_size' must be [width, height] in pixels, got {size!r}")
    if isinstance(conditions, Mapping):
        conditions = [conditions]
    if not isinstance(conditions, list) or not conditions:
        raise ValueError("'conditions' must be a condition or a non-empty list of them (weather, time_of_day)")
    for i, cond in enumerate(conditions):
        if not isinstance(cond, Mapping):
            raise ValueError(f"conditions[{i}] must be a condition {{factor: value}}, got {cond!r}")
    source = {"format": "bdd100k", "labels": frames, "lanes": shapes[0], "drivable": shapes[1], "images": None, "size": size}
    read, _ = read_transfer_frames(source, schema)  # UsageError / SchemaError: ValueErrors
    fixed = traffic_factor(schema)
    try:
        cells = transfer_conditions({"kind": "list", "items": [{"conditions": c} for c in conditions]}, schema, fixed)
    except PlanError as exc:  # in the request's words
        raise ValueError(str(exc).replace("plan.items[", "conditions[")) from None
    problem = unknown_channels_problem(read, flagged, as_zero)
    if problem:
        raise ValueError(problem.replace("job.layouts_lanes, job.layouts_drivable", "'layouts_lanes', 'layouts_drivable'")
                         .replace("job.layouts_unknown_as_zero", "'layouts_unknown_as_zero'"))
    return {**source, **_spec(read, cells, as_zero)}, transfer_plan(read, cells, schema, fixed), len(read) * len(cells)


# ------------------------------------------------------------------------------------------------
# the actor's side
# ------------------------------------------------------------------------------------------------
class TransferSource:
    """The frames of a job's ``layouts`` entry, read once per actor (or per served request), and the
    rows of any sample ids (see the module docstring)."""

    def __init__(self, layouts: Mapping[str, Any], schema: ConditionSchema, resolution: int, flagged: bool):
        self.frames, _ = read_transfer_frames(layouts, schema)
        if frames_id(self.frames) != layouts["id"]:
            raise RuntimeError("job.layouts changed since the job was validated (its frames id differs)")
        self.schema, self.resolution, self.flagged = schema, int(resolution), bool(flagged)
        self.fixed = traffic_factor(schema)

    def rows(self, sample_ids: np.ndarray, cells: Sequence[Mapping[str, str]]
             ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """``(codes (n, F), layouts (n, L, R, R), columns scene_id / source_frame / boxes)`` of ``sample_ids``:
        frame ``i // C`` under cell ``i % C``; L = 12 (raster, then "unknown" planes) for a flagged model."""
        import torch

        from aigc_synth.data.annotation_layout import with_unknown_flags

        ids = np.asarray(sample_ids, np.int64)
        c = len(cells)
        if ids.size and (ids.min() < 0 or ids.max() >= len(self.frames) * c):
            raise IndexError(f"sample ids must lie in [0, {len(self.frames) * c})")
        frame_of, cell_of = ids // c, ids % c
        rasters: dict[int, tuple[np.ndarray, list]] = {}
        for f in sorted(set(frame_of.tolist())):  # each frame once per call, however many of its cells
            ann = self.frames[f].ann
            raster, known = annotation_layout(ann, self.resolution)
            if self.flagged:
                raster = with_unknown_flags(torch.from_numpy(raster)[None], known[None])[0].numpy()
            rasters[f] = (raster, annotation_boxes(ann, self.resolution))
        codes = np.zeros((len(ids), len(self.schema.names)), np.int64)
        for row, (f, k) in enumerate(zip(frame_of.tolist(), cell_of.tolist())):
            level = self.frames[f].traffic
            codes[row] = self.schema.encode({**cells[k], **({self.fixed: level} if self.fixed else {})})
        layouts = np.stack([rasters[f][0] for f in frame_of.tolist()]) if len(ids) else \
            np.zeros((0, len(LAYOUT_CHANNELS) * (2 if self.flagged else 1), self.resolution, self.resolution), np.float32)
        boxes = np.empty(len(ids), dtype=object)
        for row, f in enumerate(frame_of.tolist()):
            boxes[row] = [dict(b) for b in rasters[f][1]]
        columns = {"scene_id": frame_of.astype(np.int64),
                   "source_frame": np.asarray([self.frames[f].name for f in frame_of.tolist()], dtype=object),
                   "boxes": boxes}
        return codes, layouts.astype(np.float32), columns
