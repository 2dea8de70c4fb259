"""BDD100K: read its detection labels as conditioned training/reference data, and export generated images to it.

BDD100K (det_20 / Scalabel) labels are a JSON list of frames::

    {"name": "b1c66a42-6f7d68ca.jpg",
     "attributes": {"weather": "clear", "timeofday": "daytime", "scene": "city street"},
     "labels": [{"id": "0", "category": "car", "box2d": {"x1": .., "y1": .., "x2": .., "y2": ..},
                 "attributes": {"occluded": false, "truncated": false}}, ...]}

A mapping file (``conf/mappings/bdd100k.yaml`` by default; ``data.bdd100k_mapping`` picks another)
turns frame attributes into condition-schema values, and derives ``traffic``, which BDD100K lacks,
from the number of vehicle boxes. Frames the mapping cannot label (BDD100K's ``undefined``, a missing
image, ...) are skipped and counted per reason, because real label files always contain some and
dropping them silently would hide a mapping that throws most of the data away.

* :func:`read_bdd100k` – labels JSON + image directory → records (path, conditions, boxes) + skip counts;
* :class:`BDD100KDataset` – the same items and ``batch()`` as :class:`~aigc_synth.data.datasets.FolderDataset`;
* :func:`export_bdd100k` – rows of a generation job (``iter_image_rows``) → ``images/`` + ``labels.json``;
* :func:`write_bdd100k_fixture` – a small BDD100K-shaped data set rendered procedurally (tests, demos); with
  ``layout_labels=True`` from traffic scenes (:func:`fixture_scenes`), plus lane and drivable-area labels.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from aigc_synth import CONF_DIR
from aigc_synth.io.atomic import staged_directory as _staged
from aigc_synth.errors import SchemaError, UsageError, reading
from aigc_synth.schema import DEFAULT_SCHEMA, ConditionSchema

#: The mapping used when none is given (``aigc_synth/conf`` is a link to the repository's ``conf/``).
DEFAULT_MAPPING_PATH = CONF_DIR / "mappings" / "bdd100k.yaml"
#: Categories of BDD100K's detection task (other categories are kept as boxes too, never refused).
BDD100K_CATEGORIES = ("car", "truck", "bus", "person", "rider", "bike", "motor", "train", "traffic light", "traffic sign")
_MAPPING_KEYS = {"factors", "traffic", "export"}

Box = tuple[float, float, float, float, str]  # x1, y1, x2, y2 (pixels of the original image), category


# ------------------------------------------------------------------------------------------------
# the mapping
# ------------------------------------------------------------------------------------------------
def _mapping_error(path: Any, what: str) -> UsageError:
    return UsageError(f"BDD100K mapping {path}: {what}")


def load_bdd100k_mapping(path: str | Path | None = None, schema: ConditionSchema = DEFAULT_SCHEMA) -> dict[str, Any]:
    """Read and validate a mapping YAML against ``schema``; return it normalised::

        {"path": str,
         "factors": {factor: {"from": bdd_attribute, "values": {bdd_value: schema_value}}},
         "traffic": None | {"factor", "attribute" (or None), "count_categories": [..], "levels": [(value, max or None), ..]},
         "export": {"scene": str, "default_category": str}}

    Every schema factor must be covered exactly once (by ``factors`` or by ``traffic``) and every
    mapped value must be one of the schema's values: a typo would otherwise silently skip frames.
    """
    import yaml

    p = Path(path).expanduser() if path else DEFAULT_MAPPING_PATH
    if not p.is_file():
        raise UsageError(f"BDD100K mapping file not found: {p}")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise _mapping_error(p, f"not valid YAML ({' '.join(str(exc).split())[:200]})") from None
    if not isinstance(raw, Mapping):
        raise _mapping_error(p, "expected a mapping with keys 'factors', 'traffic', 'export'")
    unknown = set(raw) - _MAPPING_KEYS
    if unknown:
        raise _mapping_error(p, f"unknown key(s) {sorted(unknown)}; allowed: {sorted(_MAPPING_KEYS)}")

    factors: dict[str, dict[str, Any]] = {}
    for factor, spec in (raw.get("factors") or {}).items():
        if factor not in schema.names:
            raise SchemaError(f"BDD100K mapping {p}: factor {factor!r} is not in the schema; factors: {schema.names}")
        if not isinstance(spec, Mapping) or not isinstance(spec.get("from"), str) or not isinstance(spec.get("values"), Mapping):
            raise _mapping_error(p, f"factors.{factor} needs 'from: <BDD100K attribute>' and "
                                    "'values: {bdd value: schema value}'")
        values = {str(k): str(v) for k, v in spec["values"].items()}
        allowed = schema.values(factor)
        for bdd_value, value in values.items():
            if value not in allowed:
                raise SchemaError(f"BDD100K mapping {p}: factors.{factor}.values maps {bdd_value!r} to {value!r}, "
                                  f"which is not a {factor} value; allowed: {list(allowed)}")
        factors[str(factor)] = {"from": spec["from"], "values": values}

    traffic = None
    if raw.get("traffic") is not None:
        t = raw["traffic"]
        if not isinstance(t, Mapping) or not isinstance(t.get("levels"), Mapping) or not t["levels"]:
            raise _mapping_error(p, "traffic needs 'levels: {schema value: max vehicle count, ..., last: null}'")
        factor = str(t.get("factor", "traffic"))
        if factor not in schema.names:
            raise SchemaError(f"BDD100K mapping {p}: traffic.factor {factor!r} is not in the schema; factors: {schema.names}")
        if factor in factors:
            raise _mapping_error(p, f"factor {factor!r} is mapped twice (factors and traffic)")
        categories = t.get("count_categories", ["car", "truck", "bus"])
        if isinstance(categories, str) or not isinstance(categories, Sequence) or not categories:
            raise _mapping_error(p, "traffic.count_categories must be a non-empty list of BDD100K categories")
        levels: list[tuple[str, int | None]] = []
        items = list(t["levels"].items())
        for k, (value, limit) in enumerate(items):
            if str(value) not in schema.values(factor):
                raise SchemaError(f"BDD100K mapping {p}: traffic level {value!r} is not a {factor} value; "
                                  f"allowed: {list(schema.values(factor))}")
            last = k == len(items) - 1
            if last != (limit is None):
                raise _mapping_error(p, "traffic.levels: every level but the last needs a max vehicle count; the last needs null")
            if limit is not None:
                if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
                    raise _mapping_error(p, f"traffic.levels.{value}: max vehicle count must be an integer >= 0, got {limit!r}")
                if levels and limit <= levels[-1][1]:  # type: ignore[operator]
                    raise _mapping_error(p, "traffic.levels: max vehicle counts must increase from level to level")
            levels.append((str(value), limit))
        attribute = t.get("attribute")
        traffic = {"factor": factor, "attribute": str(attribute) if attribute else None,
                   "count_categories": [str(c) for c in categories], "levels": levels}

    covered = set(factors) | ({traffic["factor"]} if traffic else set())
    missing = [n for n in schema.names if n not in covered]
    if missing:
        raise SchemaError(f"BDD100K mapping {p}: schema factor(s) {missing} are not mapped "
                          "(add them under 'factors' or 'traffic')")
    export = {"scene": "highway", "default_category": "car", **(raw.get("export") or {})}
    return {"path": str(p), "factors": factors, "traffic": traffic,
            "export": {"scene": str(export["scene"]), "default_category": str(export["default_category"])}}


def resolve_mapping(mapping: str | Path | Mapping[str, Any] | None, schema: ConditionSchema) -> dict[str, Any]:
    """A loaded mapping is used as is (callers reading many files load it once); a path/None is loaded."""
    if isinstance(mapping, Mapping):
        return dict(mapping)
    return load_bdd100k_mapping(mapping, schema)


def traffic_level(vehicles: int, levels: Sequence[tuple[str, int | None]]) -> str:
    """The first level whose max vehicle count is >= ``vehicles`` (the last level has no limit)."""
    for value, limit in levels:
        if limit is None or vehicles <= limit:
            return value
    return levels[-1][0]


def inverse_values(values: Mapping[str, str]) -> dict[str, str]:
    """schema value → BDD100K value: the BDD100K value spelled like the schema value, else the first listed."""
    inv: dict[str, str] = {}
    for bdd_value, value in values.items():
        if value not in inv or bdd_value == value:
            inv[value] = bdd_value
    return inv


# ------------------------------------------------------------------------------------------------
# reading
# ------------------------------------------------------------------------------------------------
@dataclass
class BDD100KRecord:
    """One usable frame: its image file, its conditions (schema values) and its boxes."""

    path: Path
    conditions: dict[str, str]
    boxes: list[Box] = field(default_factory=list)


def _load_frames(labels_json: Path) -> list[Any]:
    if not labels_json.is_file():
        raise UsageError(f"BDD100K labels file not found: {labels_json}")
    with reading(labels_json, "BDD100K labels"):  # invalid JSON, nested too deeply, unreadable: one line
        with open(labels_json, encoding="utf-8") as fh:
            data = json.load(fh)
    if isinstance(data, Mapping) and isinstance(data.get("frames"), list):  # the Scalabel "dataset" form
        data = data["frames"]
    if not isinstance(data, list):
        raise UsageError(f"BDD100K labels {labels_json} must be a JSON list of frames ({{'name', 'attributes', 'labels'}}), "
                         f"got a {type(data).__name__}")
    return data


def _frame_boxes(frame: Mapping[str, Any]) -> list[Box] | None:
    """The frame's box2d labels; None if one is malformed (labels without box2d, e.g. lanes, are not boxes)."""
    boxes: list[Box] = []
    for label in frame.get("labels") or []:
        if not isinstance(label, Mapping) or label.get("box2d") is None:
            continue
        b = label["box2d"]
        try:
            x1, y1, x2, y2 = (float(b[k]) for k in ("x1", "y1", "x2", "y2"))
        except (TypeError, KeyError, ValueError):
            return None
        if not all(math.isfinite(v) for v in (x1, y1, x2, y2)) or x2 < x1 or y2 < y1:
            return None
        boxes.append((x1, y1, x2, y2, str(label.get("category") or "unknown")))
    return boxes


class Skipped(Counter):
    """Skipped frames by reason (a Counter), plus ``boxes``: boxes dropped from kept frames, by reason."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.boxes: Counter = Counter()


def clip_boxes(boxes: Sequence[Box], width: int, height: int, dropped: Counter) -> list[Box]:
    """``boxes`` clipped to a ``width`` × ``height`` image; a box with no area inside it is dropped and
    counted in ``dropped`` (``outside the image``, or ``no area`` for a zero-width / zero-height box)."""
    kept: list[Box] = []
    for x1, y1, x2, y2, category in boxes:
        if x2 <= x1 or y2 <= y1:
            dropped["no area"] += 1
            continue
        cx1, cy1, cx2, cy2 = max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height))
        if cx2 <= cx1 or cy2 <= cy1:
            dropped["outside the image"] += 1
            continue
        kept.append((cx1, cy1, cx2, cy2, category))
    return kept


def mapped_conditions(attrs: Mapping[str, Any], m: Mapping[str, Any]) -> tuple[dict[str, str], str | None]:
    """``(conditions, reason)``: the schema values of the mapping ``m``'s ``factors`` read from a frame's
    ``attrs``, and the skip reason of the first one it cannot map (``weather=undefined``,
    ``timeofday=<missing>``), else None. Traffic is :func:`traffic_condition`'s."""
    conditions: dict[str, str] = {}
    for factor, spec in m["factors"].items():
        raw = attrs.get(spec["from"])
        if raw is None or str(raw) not in spec["values"]:
            return conditions, f"{spec['from']}={'<missing>' if raw is None else raw}"
        conditions[factor] = spec["values"][str(raw)]
    return conditions, None


def traffic_condition(attrs: Mapping[str, Any], boxes: Sequence[Box], m: Mapping[str, Any],
                      schema: ConditionSchema) -> tuple[str | None, str | None]:
    """``(value, reason)`` of the mapping's traffic factor for a frame with attributes ``attrs`` and
    (clipped) ``boxes``: the explicit traffic attribute when present (reason ``traffic=<value>`` when it
    is no schema value), else the level of the number of ``count_categories`` boxes."""
    traffic = m["traffic"]
    explicit = attrs.get(traffic["attribute"]) if traffic["attribute"] else None
    if explicit is not None:
        if str(explicit) not in schema.values(traffic["factor"]):
            return None, f"{traffic['attribute']}={explicit}"
        return str(explicit), None
    counted = set(traffic["count_categories"])
    return traffic_level(sum(1 for b in boxes if b[4] in counted), traffic["levels"]), None


def image_header_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the image's header, None when it is not a readable image."""
    try:
        with Image.open(path) as im:  # lazy: reads the header only
            return im.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None


def checked_image_size(path: Path) -> tuple[tuple[int, int] | None, str | None]:
    """``(size, None)`` for a readable image file, else ``(None, reason)`` as the readers count it."""
    if not path.is_file():
        return None, "missing image"
    size = image_header_size(path)
    return (size, None) if size is not None else (None, "unreadable image")


def read_bdd100k(images_dir: str | Path, labels_json: str | Path, schema: ConditionSchema = DEFAULT_SCHEMA,
                 mapping: str | Path | Mapping[str, Any] | None = None) -> tuple[list[BDD100KRecord], Skipped]:
    """Read a BDD100K labels JSON against the images in ``images_dir``; return ``(records, skipped)``.

    ``skipped`` counts skipped frames by their first reason, in this order: ``malformed frame``,
    ``duplicate name``, ``<attribute>=<value>`` (a value the mapping does not know, ``undefined``
    included; ``<missing>`` when the attribute is absent), ``malformed box2d``, ``missing image``,
    ``unreadable image``, then an unknown explicit traffic attribute. Each skipped frame counts once,
    so ``len(records) + sum(skipped.values())`` is the frame count. Boxes of kept frames are clipped
    to their image (its header gives the size); those with no area inside it are dropped, counted in
    ``skipped.boxes``, and never count toward the traffic level.
    Raises :class:`~aigc_synth.errors.UsageError` (one line) for a missing/invalid labels file or
    image directory and when no frame is usable.
    """
    images_dir, labels_json = Path(images_dir).expanduser(), Path(labels_json).expanduser()
    m = resolve_mapping(mapping, schema)
    frames = _load_frames(labels_json)
    if not images_dir.is_dir():
        raise UsageError(f"BDD100K image directory not found: {images_dir}")
    traffic = m["traffic"]
    records: list[BDD100KRecord] = []
    skipped = Skipped()
    seen: set[str] = set()
    for frame in frames:
        if not isinstance(frame, Mapping) or not isinstance(frame.get("name"), str) or not frame["name"]:
            skipped["malformed frame"] += 1
            continue
        name = frame["name"]
        if name in seen:  # two labels for one image: keeping either would be a guess
            skipped["duplicate name"] += 1
            continue
        seen.add(name)
        attrs = frame.get("attributes") if isinstance(frame.get("attributes"), Mapping) else {}
        conditions, reason = mapped_conditions(attrs, m)
        boxes = _frame_boxes(frame)
        if reason is None and boxes is None:
            reason = "malformed box2d"
        path, size = images_dir / name, None
        if reason is None:
            size, reason = checked_image_size(path)
        if reason is None:
            boxes = clip_boxes(boxes or [], *size, skipped.boxes)
        if reason is None and traffic:
            value, reason = traffic_condition(attrs, boxes or [], m, schema)
            conditions[traffic["factor"]] = value
        if reason is not None:
            skipped[reason] += 1
            continue
        records.append(BDD100KRecord(path=path, conditions=schema.validate(conditions), boxes=boxes or []))
    if not records:
        why = ", ".join(f"{k}: {v}" for k, v in skipped.most_common()) or "the list is empty"
        raise UsageError(f"no usable frames in {labels_json} (images in {images_dir}): "
                         f"{sum(skipped.values())} of {len(frames)} skipped ({why}); mapping {m['path']}")
    return records, skipped


def format_skipped(skipped: Mapping[str, int]) -> str:
    """``"3 skipped (weather=undefined: 2, missing image: 1)"`` for logs, then the dropped boxes if any
    (``"; 2 boxes dropped (outside the image: 2)"``)."""
    text = "0 skipped" if not skipped else (
        f"{sum(skipped.values())} skipped (" + ", ".join(f"{k}: {v}" for k, v in Counter(skipped).most_common()) + ")")
    boxes = getattr(skipped, "boxes", None)
    if boxes:
        text += f"; {sum(boxes.values())} boxes dropped (" + ", ".join(f"{k}: {v}" for k, v in boxes.most_common()) + ")"
    return text


class BDD100KDataset(Dataset):
    """BDD100K images + labels as ``{"image": uint8 (3, R, R), "codes": int64 (F,)}`` items.

    The interface of :class:`~aigc_synth.data.datasets.FolderDataset` (``batch``, ``__len__``,
    indices wrap around), so the trainer and the evaluation use either. Images are resized to the
    square ``resolution`` the same way (bicubic, aspect ratio not kept); ``batch()`` also returns
    each image's boxes scaled accordingly. ``skipped`` holds the reader's skip counts.
    """

    def __init__(self, images_dir: str | Path, labels_json: str | Path, schema: ConditionSchema = DEFAULT_SCHEMA,
                 resolution: int = 64, mapping: str | Path | Mapping[str, Any] | None = None):
        self.schema, self.resolution = schema, int(resolution)
        self.records, self.skipped = read_bdd100k(images_dir, labels_json, schema, mapping)
        self.files = [r.path for r in self.records]
        self.codes = schema.encode_many(r.conditions for r in self.records)

    def __len__(self) -> int:
        return len(self.records)

    def _scaled(self, i: int, size: tuple[int, int]) -> np.ndarray:
        sx, sy = self.resolution / size[0], self.resolution / size[1]
        b = np.asarray([r[:4] for r in self.records[i].boxes], np.float32).reshape(-1, 4)
        return b * np.array([sx, sy, sx, sy], np.float32)

    def _load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        with Image.open(self.files[i]) as im:
            size = im.size
            im = im.convert("RGB")
            if im.size != (self.resolution, self.resolution):
                im = im.resize((self.resolution, self.resolution), Image.BICUBIC)
            return np.asarray(im, dtype=np.uint8), self._scaled(i, size)

    @cached_property
    def boxes(self) -> list[np.ndarray]:
        """Per item: float32 (n, 4) x1, y1, x2, y2 scaled to ``resolution``. Computed on first use,
        because it reads every image's header and training never needs it."""
        out = []
        for i, path in enumerate(self.files):
            with Image.open(path) as im:  # lazy: reads the header only
                out.append(self._scaled(i, im.size))
        return out

    def categories(self, index: int) -> list[str]:
        """The category of each box of item ``index`` (same order as :attr:`boxes`)."""
        return [b[4] for b in self.records[int(index) % len(self)].boxes]

    def batch(self, indices: Sequence[int]) -> dict[str, Any]:
        idx = [int(i) % len(self) for i in indices]
        loaded = [self._load(i) for i in idx]
        images = np.stack([img for img, _ in loaded])
        return {"image": torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
                "codes": torch.from_numpy(self.codes[idx]),
                "boxes": [torch.from_numpy(b) for _, b in loaded]}

    def __getitem__(self, index: int) -> dict[str, Any]:
        b = self.batch([index])
        return {k: v[0] for k, v in b.items()}


# ------------------------------------------------------------------------------------------------
# writing
# ------------------------------------------------------------------------------------------------
def image_extension(data: bytes) -> str:
    """File extension of encoded image bytes (:func:`aigc_synth.io.image_export.image_extension`),
    as a one-line UsageError for bytes that are no PNG, JPEG or WebP."""
    from aigc_synth.io.image_export import image_extension as extension

    try:
        return extension(data)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def bdd100k_attributes(conditions: Mapping[str, str], m: Mapping[str, Any],
                      inverse: Mapping[str, Mapping[str, str]]) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    for factor, spec in m["factors"].items():
        value = conditions.get(factor)
        if value not in inverse[factor]:
            raise UsageError(f"condition {factor}={value!r} has no BDD100K {spec['from']} value in mapping {m['path']}")
        attrs[spec["from"]] = inverse[factor][value]
    attrs["scene"] = m["export"]["scene"]
    traffic = m["traffic"]
    if traffic and traffic["attribute"] and conditions.get(traffic["factor"]) is not None:
        attrs[traffic["attribute"]] = conditions[traffic["factor"]]  # not BDD100K's: keeps traffic without boxes
    return attrs


def box_labels(boxes: Iterable[Any], default_category: str) -> list[dict[str, Any]]:
    labels = []
    for k, b in enumerate(boxes):
        if isinstance(b, Mapping):
            x1, y1, x2, y2 = (b[k_] for k_ in ("x0", "y0", "x1", "y1"))
            category = b.get("label") or default_category
        else:  # (x1, y1, x2, y2[, category]) tuples, as BDD100KRecord.boxes
            x1, y1, x2, y2 = b[:4]
            category = b[4] if len(b) > 4 and b[4] else default_category
        labels.append({"id": str(k), "category": str(category),
                       "box2d": {"x1": float(x1), "y1": float(y1), "x2": float(x2), "y2": float(y2)},
                       "attributes": {"occluded": False, "truncated": False}})
    return labels


def export_bdd100k(rows: Sequence[Mapping[str, Any]], out_dir: str | Path,
                   mapping: str | Path | Mapping[str, Any] | None = None,
                   schema: ConditionSchema = DEFAULT_SCHEMA) -> list[Path]:
    """Write rows of :func:`~aigc_synth.io.reader.iter_image_rows` as ``out_dir/images/<sample_id>.<ext>``
    plus ``out_dir/labels.json`` (BDD100K frames, attributes mapped back through the mapping);
    return ``[labels.json]``. Everything is checked and staged first: a failure writes nothing."""
    out = Path(out_dir).expanduser()
    m = resolve_mapping(mapping, schema)
    inverse = {factor: inverse_values(spec["values"]) for factor, spec in m["factors"].items()}
    rows = list(rows)
    if not rows:
        raise UsageError("nothing to export: no image rows")
    with _staged(out) as tmp:
        (tmp / "images").mkdir()
        frames, names = [], set()
        for row in rows:
            data = bytes(row["image"])
            name = f"{int(row['sample_id']):09d}.{image_extension(data)}"
            if name in names:
                raise UsageError(f"sample_id {row['sample_id']} appears twice in the rows to export")
            names.add(name)
            (tmp / "images" / name).write_bytes(data)
            attributes = bdd100k_attributes(row["conditions"], m, inverse)
            if row.get("source_frame") is not None:  # condition transfer: the annotated frame it redraws
                attributes["source_frame"] = row["source_frame"]
            frames.append({"name": name, "attributes": attributes,
                           "labels": box_labels(row.get("boxes") or [], m["export"]["default_category"])})
        with open(tmp / "labels.json", "w", encoding="utf-8") as fh:
            json.dump(frames, fh, indent=1)
            fh.write("\n")
    return [out / "labels.json"]

