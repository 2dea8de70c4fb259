"""Read real data sets' 2-D annotations as :class:`~aigc_synth.data.annotation_layout.FrameAnnotations`.

Layout-conditioned generators take the raster :func:`~aigc_synth.data.annotation_layout.annotation_layout`
builds from these; nothing here looks at pixels (image headers at most, for the size).

* :func:`read_bdd100k_annotations` – BDD100K (Scalabel) detection labels, plus optionally its lane
  labels (polylines) and drivable-area labels (polygons), each a JSON list of frames::

      {"name": "b1c66a42-6f7d68ca.jpg", "labels": [
          {"id": "0", "category": "lane/single white",
           "attributes": {"laneDirection": "parallel", "laneStyle": "solid", "laneTypes": "single white"},
           "poly2d": [{"vertices": [[x, y], ...], "types": "LL", "closed": false}]},
          {"id": "1", "category": "area/drivable", "attributes": {"areaType": "direct"},
           "poly2d": [{"vertices": [[x, y], ...], "types": "LLLL", "closed": true}]}]}

  ``types`` marks each vertex ``L`` (on the curve) or ``C`` (Bézier control point: ``LCCL`` is a
  cubic, ``LCL`` a quadratic), which are flattened into polylines. The older forms are read too: a
  category ``lane`` or ``drivable area`` with the kind in ``laneTypes`` / ``areaType``, bare
  categories (``single white``, ``direct``), and ``poly2d`` as a list of ``[x, y, type]``. BDD100K's
  combined label files hold boxes, lanes and areas in one file: pass it for all three.
* :func:`read_coco_annotations` – COCO ``instances.json`` (boxes only).

Both return ``(frames, skipped)``: annotations keyed by image file name and an
:class:`AnnotationSkipped` counter. A malformed item never raises: a frame the layout could not
trust (malformed frame, duplicate name, malformed box, missing image) is skipped and counted by
reason; a box, polyline or polygon that is malformed is dropped from its frame and counted in
``skipped.boxes`` / ``skipped.shapes``. Only a file that cannot be used at all is an error
(:class:`~aigc_synth.errors.UsageError`, one line).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Sequence

from PIL import Image

from aigc_synth.data.annotation_layout import Box, FrameAnnotations, Points
from aigc_synth.data.bdd100k import Skipped, clip_boxes, format_skipped
from aigc_synth.errors import AigcSynthError, UsageError, reading

BDD100K_IMAGE_SIZE = (1280, 720)  # every BDD100K image; used when no image directory is given
#: drivable-area categories of BDD100K's forms (Scalabel's, the combined 100k files', the bare RLE class names)
DRIVABLE_CATEGORIES = frozenset({"area/drivable", "area/alternative", "drivable area", "direct", "alternative"})
#: BDD100K's lane categories (bare; Scalabel prefixes them with ``lane/``)
LANE_CATEGORIES = frozenset({"crosswalk", "double other", "double white", "double yellow", "road curb",
                             "single other", "single white", "single yellow"})
BEZIER_STEPS = 8  # segments each Bézier curve is flattened into


class AnnotationSkipped(Skipped):
    """:class:`~aigc_synth.data.bdd100k.Skipped` (frames by reason, ``boxes`` dropped by reason) plus
    ``shapes``: lane polylines and drivable polygons dropped, and shape frames not used, by reason."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.shapes: Counter = Counter()


def format_annotation_skipped(skipped: Skipped) -> str:
    """:func:`~aigc_synth.data.bdd100k.format_skipped`, then the dropped shapes if any
    (``"; 3 shapes dropped (malformed lane poly2d: 3)"``)."""
    text = format_skipped(skipped)
    shapes = getattr(skipped, "shapes", None)
    if shapes:
        text += f"; {sum(shapes.values())} shapes dropped (" + ", ".join(f"{k}: {v}" for k, v in shapes.most_common()) + ")"
    return text


# ------------------------------------------------------------------------------------------------
# shared parsing
# ------------------------------------------------------------------------------------------------
def _load_json(path: str | Path, what: str) -> Any:
    """The parsed file; a missing or unreadable file, or one that is not JSON, is one UsageError line."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise UsageError(f"{what} file not found: {p}")
    try:
        with reading(p, what), open(p, encoding="utf-8") as fh:
            return json.load(fh)
    except AigcSynthError as exc:
        if isinstance(exc, UsageError) or exc.exit_status != 2:
            raise
        raise UsageError(str(exc)) from None


def _name(source: Any) -> str:
    """How messages name a labels source: its path, or "the given frames" for parsed JSON (a request's)."""
    return str(source) if isinstance(source, (str, Path)) else "the given frames"


def _frames(path: str | Path | list | Mapping, what: str) -> list[Any]:
    """The frames of a labels file, or of its parsed JSON (a list, or Scalabel's ``{"frames": [...]}``)."""
    data = path if isinstance(path, (list, Mapping)) else _load_json(path, what)
    if isinstance(data, Mapping) and isinstance(data.get("frames"), list):  # Scalabel's "dataset" form
        data = data["frames"]
    if not isinstance(data, list):
        raise UsageError(f"{what} {_name(path)} must be a JSON list of frames ({{'name', 'labels'}}), got a {type(data).__name__}")
    return data


def _finite(*values: Any) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)


def _bezier(points: Sequence[tuple[float, float]]) -> Points:
    """A quadratic (3 points) or cubic (4 points) Bézier flattened, without its first point."""
    n = len(points) - 1
    out = []
    for s in range(1, BEZIER_STEPS + 1):
        t = s / BEZIER_STEPS
        w = [math.comb(n, i) * (1 - t) ** (n - i) * t ** i for i in range(n + 1)]
        out.append((sum(wi * p[0] for wi, p in zip(w, points)), sum(wi * p[1] for wi, p in zip(w, points))))
    return out


def _flatten(vertices: Sequence[tuple[float, float]], types: str, closed: bool) -> Points | None:
    """Vertices with their ``L``/``C`` types as a polyline (closed: ending on the first vertex again);
    None when the types do not describe lines and quadratic/cubic curves."""
    if types and len(types) != len(vertices):
        return None
    types = (types or "L" * len(vertices)).upper()
    if not vertices or set(types) - {"L", "C"} or types[0] != "L":
        return None
    pts, ring = list(vertices), types
    if closed:
        pts, ring = pts + [pts[0]], types + "L"
    out: Points = [pts[0]]
    k = 0
    while k < len(pts) - 1:
        run = 0
        while k + 1 + run < len(pts) and ring[k + 1 + run] == "C":
            run += 1
        end = k + 1 + run
        if run > 2 or end >= len(pts):
            return None
        out += _bezier(pts[k:end + 1]) if run else [pts[end]]
        k = end
    return out


def _poly2d(value: Any, polygon: bool) -> list[Points] | None:
    """The shapes of one label's ``poly2d`` (Scalabel: a list of {vertices, types, closed}; legacy: a
    list of [x, y(, type)]); None when any is malformed: a polygon needs 3 points, a polyline 2."""
    if not isinstance(value, list) or not value:
        return None
    if all(isinstance(v, Mapping) for v in value):
        items = [(v.get("vertices"), v.get("types") or "", bool(v.get("closed", polygon))) for v in value]
    elif all(isinstance(v, (list, tuple)) for v in value):  # one shape as [x, y, type] triples
        items = [([v[:2] for v in value], "".join(str(v[2]) if len(v) > 2 else "L" for v in value), polygon)]
    else:
        return None
    shapes = []
    for vertices, types, closed in items:
        if not isinstance(vertices, list) or not isinstance(types, str):
            return None
        if not all(isinstance(v, (list, tuple)) and len(v) >= 2 and _finite(v[0], v[1]) for v in vertices):
            return None
        # a drivable area is closed whatever its flag says (its last edge may be a curve, too)
        points = _flatten([(float(v[0]), float(v[1])) for v in vertices], types, closed or polygon)
        if points is not None and polygon:
            points = points[:-1]  # the first vertex again: polygons close implicitly
        if points is None or len(points) < (3 if polygon else 2):
            return None
        shapes.append(points)
    return shapes


def _lane_style(label: Mapping[str, Any]) -> str | None:
    """A lane label's style (see FrameAnnotations), None when the label is no lane."""
    category = str(label.get("category") or "")
    attrs = label.get("attributes") if isinstance(label.get("attributes"), Mapping) else {}
    if category == "lane":  # the combined 100k files: the kind is an attribute
        category = str(attrs.get("laneTypes") or attrs.get("laneType") or "")
    elif category.startswith("lane/"):
        category = category[len("lane/"):]
    elif category not in LANE_CATEGORIES:
        return None
    return "vertical" if attrs.get("laneDirection") == "vertical" else category


def _box2d(label: Mapping[str, Any]) -> Box | None:
    b = label["box2d"]
    if not isinstance(b, Mapping):
        return None
    x1, y1, x2, y2 = (b.get(k) for k in ("x1", "y1", "x2", "y2"))
    if not _finite(x1, y1, x2, y2) or x2 < x1 or y2 < y1:
        return None
    return float(x1), float(y1), float(x2), float(y2), str(label.get("category") or "unknown")


def _image_size(path: Path) -> tuple[int, int] | None:
    try:
        with Image.open(path) as im:  # lazy: reads the header only
            return im.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None


# ------------------------------------------------------------------------------------------------
# BDD100K
# ------------------------------------------------------------------------------------------------
def _read_shapes(path: str | Path, what: str, kept: Mapping[str, FrameAnnotations], known: set[str],
                 skipped: AnnotationSkipped) -> dict[str, list[Mapping[str, Any]]]:
    """Labels per frame of a lane / drivable file, for frames kept from the detection labels (frames
    skipped there are already counted; others count as ``<what> frame not in the labels``)."""
    out: dict[str, list[Mapping[str, Any]]] = {}
    for frame in _frames(path, f"BDD100K {what} labels"):
        if not isinstance(frame, Mapping) or not isinstance(frame.get("name"), str) or not isinstance(frame.get("labels") or [], list):
            skipped.shapes[f"malformed {what} frame"] += 1
        elif frame["name"] in out:
            skipped.shapes[f"duplicate {what} frame"] += 1
        elif frame["name"] in kept:
            out[frame["name"]] = [lab for lab in frame.get("labels") or [] if isinstance(lab, Mapping)]
            if len(out[frame["name"]]) < len(frame.get("labels") or []):
                skipped.shapes[f"malformed {what} label"] += len(frame.get("labels") or []) - len(out[frame["name"]])
        elif frame["name"] not in known:
            skipped.shapes[f"{what} frame not in the labels"] += 1
    return out


def read_bdd100k_annotations(labels_json: str | Path | list, lanes_json: str | Path | list | None = None,
                             drivable_json: str | Path | list | None = None, *, images_dir: str | Path | None = None,
                             image_size: tuple[int, int] = BDD100K_IMAGE_SIZE
                             ) -> tuple[dict[str, FrameAnnotations], AnnotationSkipped]:
    """BDD100K frames as annotations keyed by frame name, and what was skipped (see the module docstring).

    Frames come from ``labels_json`` (boxes; all categories kept, the layout maps them); their lanes
    from ``lanes_json`` and drivable polygons from ``drivable_json``. A frame absent from a given
    shape file, or any frame when that file is not given, has ``lanes`` / ``drivable`` None
    (unknown); a frame listed there without shapes has an empty list. The image size is read from
    ``images_dir/<name>``'s header when ``images_dir`` is given (frames without a readable image are
    skipped), else ``image_size``. Boxes are clipped to the image (:func:`~aigc_synth.data.bdd100k.clip_boxes`).

    ``skipped`` counts frames by reason (``malformed frame``, ``duplicate name``, ``malformed box2d``,
    ``missing image``, ``unreadable image``; ``len(frames) + sum(skipped.values())`` is the labels'
    frame count), dropped boxes in ``skipped.boxes`` and dropped shapes in ``skipped.shapes``
    (``malformed lane poly2d``, ``malformed drivable poly2d``, ...). Each file may also be given as its
    parsed JSON (a list of frames: a served request's). A frame's ``attributes`` object, when it has
    one, is kept in ``meta["attributes"]``. Raises :class:`~aigc_synth.errors.UsageError` (one line)
    for a missing or invalid file and when no frame is usable.
    """
    frames_in = _frames(labels_json, "BDD100K labels")
    img_dir = Path(images_dir).expanduser() if images_dir is not None else None
    if img_dir is not None and not img_dir.is_dir():
        raise UsageError(f"BDD100K image directory not found: {img_dir}")
    skipped = AnnotationSkipped()
    frames: dict[str, FrameAnnotations] = {}
    seen: set[str] = set()
    for frame in frames_in:
        if not isinstance(frame, Mapping) or not isinstance(frame.get("name"), str) or not frame["name"] \
                or not isinstance(frame.get("labels") or [], list):
            skipped["malformed frame"] += 1
            continue
        name = frame["name"]
        if name in seen:  # two label sets for one image: keeping either would be a guess
            skipped["duplicate name"] += 1
            continue
        seen.add(name)
        labels = [lab for lab in frame.get("labels") or [] if isinstance(lab, Mapping) and lab.get("box2d") is not None]
        boxes = [_box2d(lab) for lab in labels]
        if any(b is None for b in boxes):  # a vehicle missing from the layout would be painted over
            skipped["malformed box2d"] += 1
            continue
        size = image_size
        if img_dir is not None:
            if not (img_dir / name).is_file():
                skipped["missing image"] += 1
                continue
            size = _image_size(img_dir / name)
            if size is None:
                skipped["unreadable image"] += 1
                continue
        w, h = size
        meta = {"attributes": dict(frame["attributes"])} if isinstance(frame.get("attributes"), Mapping) else {}
        frames[name] = FrameAnnotations(float(w), float(h), clip_boxes(boxes, w, h, skipped.boxes), meta=meta)  # type: ignore[arg-type]
    if not frames:
        why = ", ".join(f"{k}: {v}" for k, v in skipped.most_common()) or "the list is empty"
        raise UsageError(f"no usable frames in {_name(labels_json)}: {sum(skipped.values())} of {len(frames_in)} skipped ({why})")

    if lanes_json is not None:
        for name, labels in _read_shapes(lanes_json, "lane", frames, seen, skipped).items():
            lanes, styles = [], []
            for lab in labels:
                style = _lane_style(lab)
                if style is None or lab.get("box2d") is not None:
                    continue  # boxes and areas in a combined file
                shapes = _poly2d(lab.get("poly2d"), polygon=False)
                if shapes is None:
                    skipped.shapes["malformed lane poly2d"] += 1
                    continue
                lanes += shapes
                styles += [style] * len(shapes)
            frames[name].lanes, frames[name].lane_styles = lanes, styles
    if drivable_json is not None:
        for name, labels in _read_shapes(drivable_json, "drivable", frames, seen, skipped).items():
            polygons = []
            for lab in labels:
                if str(lab.get("category") or "") not in DRIVABLE_CATEGORIES:
                    continue  # background, lanes and boxes in a combined file
                shapes = _poly2d(lab.get("poly2d"), polygon=True)
                if shapes is None:
                    skipped.shapes["malformed drivable poly2d"] += 1
                    continue
                polygons += shapes
            frames[name].drivable = polygons
    return frames, skipped


# ------------------------------------------------------------------------------------------------
# COCO
# ------------------------------------------------------------------------------------------------
def read_coco_annotations(instances_json: str | Path) -> tuple[dict[str, FrameAnnotations], AnnotationSkipped]:
    """COCO ``instances.json`` as annotations keyed by ``file_name`` (boxes only: ``lanes`` and
    ``drivable`` are None; ``meta`` holds the image entry's ``attributes`` and ``conditions`` objects
    where it has them), and what was skipped.

    Boxes keep their category's name (the layout maps ``car`` → car, ``truck`` / ``bus`` → truck and
    ignores the rest); ``bbox`` ``[x, y, w, h]`` becomes (x, y, x + w, y + h) clipped to the image.
    ``skipped`` counts images by reason (``malformed image``, ``duplicate image id``,
    ``duplicate file_name``) and dropped boxes in ``skipped.boxes`` (``malformed annotation``,
    ``unknown image_id``, ``unknown category_id``, ``crowd`` (a group of objects is no one face),
    plus :func:`~aigc_synth.data.bdd100k.clip_boxes`' reasons). Raises :class:`~aigc_synth.errors.UsageError`
    (one line) for a missing file, one that is not JSON, one without ``images`` and ``annotations``
    lists, and when no image is usable.
    """
    data = _load_json(instances_json, "COCO instances")
    if not isinstance(data, Mapping) or not isinstance(data.get("images"), list) or not isinstance(data.get("annotations"), list):
        raise UsageError(f"COCO instances {instances_json} must be a JSON object with 'images' and 'annotations' lists")
    skipped = AnnotationSkipped()
    names: dict[int, str] = {}
    for cat in data.get("categories") or []:
        if isinstance(cat, Mapping) and isinstance(cat.get("id"), int) and isinstance(cat.get("name"), str):
            names[cat["id"]] = cat["name"]  # a malformed category leaves its boxes as "unknown category_id"
    images: dict[int, tuple[str, int, int]] = {}
    files: set[str] = set()
    for im in data["images"]:
        if not isinstance(im, Mapping) or isinstance(im.get("id"), bool) or not isinstance(im.get("id"), int) \
                or not isinstance(im.get("file_name"), str) or not im["file_name"] \
                or not all(_finite(im.get(k)) and im[k] > 0 for k in ("width", "height")):
            skipped["malformed image"] += 1
        elif im["id"] in images:
            skipped["duplicate image id"] += 1
        elif im["file_name"] in files:
            skipped["duplicate file_name"] += 1
        else:
            images[im["id"]] = (im["file_name"], im["width"], im["height"],
                                {k: dict(im[k]) for k in ("attributes", "conditions") if isinstance(im.get(k), Mapping)})
            files.add(im["file_name"])
    if not images:
        why = ", ".join(f"{k}: {v}" for k, v in skipped.most_common()) or "the list is empty"
        raise UsageError(f"no usable images in {instances_json}: {sum(skipped.values())} of {len(data['images'])} skipped ({why})")
    boxes: dict[int, list[Box]] = {i: [] for i in images}
    for ann in data["annotations"]:
        bbox = ann.get("bbox") if isinstance(ann, Mapping) else None
        if not isinstance(bbox, list) or len(bbox) != 4 or not _finite(*bbox) or bbox[2] < 0 or bbox[3] < 0:
            skipped.boxes["malformed annotation"] += 1
        elif type(ann.get("image_id")) is not int or ann["image_id"] not in images:
            skipped.boxes["unknown image_id"] += 1
        elif type(ann.get("category_id")) is not int or ann["category_id"] not in names:
            skipped.boxes["unknown category_id"] += 1
        elif ann.get("iscrowd"):
            skipped.boxes["crowd"] += 1
        else:
            x, y, w, h = (float(v) for v in bbox)
            boxes[ann["image_id"]].append((x, y, x + w, y + h, names[ann["category_id"]]))
    frames = {}
    for i, (name, w, h, meta) in images.items():
        frames[name] = FrameAnnotations(float(w), float(h), clip_boxes(boxes[i], w, h, skipped.boxes), meta=meta)
    return frames, skipped
