"""The layout raster of :mod:`aigc_synth.data.layout`, built from 2-D annotations instead of a scene.

Real data sets (BDD100K, COCO) have no :class:`~aigc_synth.scenes.format.Scene`: they have boxes
with categories and, for BDD100K, lane polylines and drivable-area polygons. :func:`annotation_layout`
turns one frame's annotations (:class:`FrameAnnotations`, pixels of a ``width`` × ``height`` image)
into the same ``LAYOUT_CHANNELS`` raster a layout-conditioned generator takes, plus a flag per
channel saying whether the annotations determine it at all.

How each channel is built (coordinates are first scaled to the ``size`` × ``size`` raster, so the
aspect ratio is not kept, as :class:`~aigc_synth.data.bdd100k.BDD100KDataset` resizes images)
    ``road``        coverage of the union of the drivable polygons: exact horizontally, sampled at
                    :data:`POLYGON_SUBROWS` rows per pixel row (even-odd fill; overlapping polygons
                    add up, clipped to 1), then hidden by the vehicle faces, as in ``scene_layout``
    ``lane_lines``  each polyline drawn like the scene path draws a lane boundary: per pixel row, a
                    horizontal span centred where the line crosses the row centre (clamped into the
                    segment, weighted by the share of the row the segment spans) whose width is what
                    a :data:`~aigc_synth.data.camera.LINE_WIDTH` marking on flat ground has at
                    that row for the ego camera: ``LINE_WIDTH / CAMERA_HEIGHT * (y - HORIZON * size)``
                    pixels (zero at and above the horizon). A horizontal segment has no horizontal
                    cross-section and adds nothing; lines of a style in :data:`NON_BOUNDARY_LANE_STYLES`
                    (crosswalks, lines across the road) are not lane boundaries and are not drawn
    ``car/truck``   exact fractional pixel coverage of each box (``pixel_coverage``), categories
                    mapped by :data:`VEHICLE_CATEGORIES` (others ignored), painted far to near:
                    ascending bottom edge (a lower bottom edge stands nearer on flat ground), ties by
                    box height then annotation order; a nearer face overwrites by its coverage
    ``nearness``    ``min(1, NEAR_SCALE / depth)`` with the depth of the box's ground contact under
                    the ego camera, ``depth = FOCAL * size * CAMERA_HEIGHT / (y_bottom - HORIZON * size)``:
                    the inverse of the renderer's projection, so it is exact for rendered scenes (a box
                    cut at the image bottom is near enough to get 1 either way)
    ``edges``       the one-pixel ring inside each visible face; a side lying on the image border
                    is a truncation, not the vehicle's outline, and gets no ring (as ``scene_layout``,
                    which uses the unclipped face)

Real images come from other cameras; the horizon row, camera height and focal length assumed are
the renderer's, so the lane width and the nearness of a real frame are estimates.

Agreement with :func:`~aigc_synth.data.layout.scene_layout` on rendered scenes, where
:func:`annotations_from_scene` gives what a BDD100K export of the render carries (20
``RandomSceneSampler`` scenes, 2-4 lanes, every traffic level, size 64; ``tests/test_annotation_layout.py``),
mean absolute difference per channel, mean over scenes / worst scene: road 0.0019 / 0.0026,
lane_lines 0.0006 / 0.0007, car 0.0001 / 0.0005, truck 0.00001 / 0.00006, nearness 0.00001 /
0.00014, edges 0.0001 / 0.0005. IoU of the ``> 0.5`` masks over all scenes: car 0.999, truck
0.9996; the worst single scene 0.91 (10 of 11 pixels). At size 32 road is 0.0037 / 0.0052, the rest
alike. The residue: the drivable polygon is sampled at 4 scan lines per row where the scene samples
the row centre (single pixels on the shallow road edges near the horizon differ by up to 0.4), lane
lines stop where they leave the image, and a vehicle hidden entirely has no box, while
``scene_layout`` keeps a trace of it at the anti-aliased edges of the face in front.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from aigc_synth.data.camera import (
    CAMERA_HEIGHT,
    FOCAL,
    HORIZON,
    LINE_WIDTH,
    SHOULDER,
    span_coverage,
)
from aigc_synth.data.layout import LAYOUT_CHANNELS, NEAR_SCALE, face_alpha
from aigc_synth.data.scene_render import scene_boxes
from aigc_synth.scenes.format import LANE_WIDTH, Scene, require_straight

#: annotation category → layout channel; every other category (person, traffic sign, ...) is ignored
VEHICLE_CATEGORIES: dict[str, str] = {"car": "car", "truck": "truck", "bus": "truck"}
#: lane styles that are no lane boundary: BDD100K's crosswalks, and lines across the road
#: (``laneDirection: vertical``, which the readers turn into the style ``"vertical"``)
NON_BOUNDARY_LANE_STYLES = frozenset({"crosswalk", "vertical"})
POLYGON_SUBROWS = 4  # scan lines per pixel row for the drivable polygons
BORDER_EPS = 1e-3  # px of the annotated image: a box side this close to the border is a truncation

Box = tuple[float, float, float, float, str]  # x1, y1, x2, y2 (pixels of the annotated image), category
Points = list[tuple[float, float]]


@dataclass
class FrameAnnotations:
    """One frame's 2-D annotations in pixels of its ``width`` × ``height`` image.

    ``boxes`` (x1, y1, x2, y2, category) with the data set's category names; ``lanes`` polylines
    (each a list of (x, y) points) and ``lane_styles`` one style per polyline (BDD100K's lane
    category without ``lane/``: ``"single white"``, ``"road curb"``, ``"crosswalk"``, ...; empty
    means a lane boundary); ``drivable`` closed polygons (lists of (x, y), the last point joins the
    first). ``None`` means "not annotated" (the channel is unknown), an empty list "annotated:
    there is none". ``meta``: fields of the data set's own the layout does not read (COCO: the image
    entry's ``attributes`` and ``conditions``, which give a training frame its conditions).
    """

    width: float
    height: float
    boxes: list[Box] = field(default_factory=list)
    lanes: list[Points] | None = None
    lane_styles: list[str] | None = None
    drivable: list[Points] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.width) and math.isfinite(self.height) and self.width > 0 and self.height > 0):
            raise ValueError(f"image size must be positive, got {self.width} x {self.height}")
        if self.lanes is not None and self.lane_styles is not None and len(self.lane_styles) != len(self.lanes):
            raise ValueError(f"{len(self.lanes)} lanes but {len(self.lane_styles)} lane styles")


# ------------------------------------------------------------------------------------------------
# rasterising
# ------------------------------------------------------------------------------------------------
def polygon_coverage(points: Sequence[tuple[float, float]], height: int, width: int,
                     subrows: int = POLYGON_SUBROWS) -> np.ndarray:
    """float32 (height, width): share of each pixel inside the closed polygon ``points`` (pixels),
    even-odd rule, exact along each of ``subrows`` scan lines per pixel row and averaged over them."""
    p = np.asarray(points, np.float64).reshape(-1, 2)
    if len(p) < 3:
        return np.zeros((height, width), np.float32)
    (x0, y0), (x1, y1) = p.T, np.roll(p, -1, axis=0).T
    ys = (np.arange(height * subrows, dtype=np.float64) + 0.5)[:, None] / subrows
    # half-open in y so a vertex shared by two edges is crossed once
    crosses = (ys >= np.minimum(y0, y1)) & (ys < np.maximum(y0, y1))
    dy = np.where(y1 != y0, y1 - y0, 1.0)
    xc = np.where(crosses, x0 + (ys - y0) / dy * (x1 - x0), np.nan)
    xc = np.sort(xc, axis=1)  # NaN (no crossing) sorts last
    if xc.shape[1] % 2:
        xc = np.concatenate([xc, np.full((len(xc), 1), np.nan)], axis=1)
    lo, hi = xc[:, 0::2], xc[:, 1::2]
    ok = np.isfinite(lo) & np.isfinite(hi)
    xs = np.arange(width, dtype=np.float64) + 0.5
    cov = np.where(ok[..., None], span_coverage(np.where(ok, lo, 0)[..., None], np.where(ok, hi, 0)[..., None], xs), 0.0)
    return cov.sum(axis=1).reshape(height, subrows, width).mean(axis=1).clip(0.0, 1.0).astype(np.float32)


def lane_width_px(y: np.ndarray | float, size: int) -> np.ndarray:
    """Width (px) of a :data:`LINE_WIDTH` marking on flat ground at image row ``y`` of the ego camera."""
    return np.float64(LINE_WIDTH / CAMERA_HEIGHT) * np.maximum(np.asarray(y, np.float64) - HORIZON * size, 0.0)


def polyline_coverage(points: Sequence[tuple[float, float]], size: int) -> np.ndarray:
    """float32 (size, size): the polyline ``points`` (pixels of the raster) drawn as a lane marking,
    the way ``scene_layout`` draws a lane boundary (see the module docstring); not clipped to 1."""
    p = np.asarray(points, np.float64).reshape(-1, 2)
    cov = np.zeros((size, size), np.float64)
    xs = np.arange(size, dtype=np.float64) + 0.5
    for (xa, ya), (xb, yb) in zip(p[:-1], p[1:]):
        y_lo, y_hi = min(ya, yb), max(ya, yb)
        i0, i1 = max(int(math.floor(y_lo)), 0), min(int(math.ceil(y_hi)), size)
        if y_hi <= y_lo or i1 <= i0:
            continue
        rows = np.arange(i0, i1)
        share = np.clip(np.minimum(rows + 1.0, y_hi) - np.maximum(rows, y_lo), 0.0, 1.0)
        yc = np.clip(rows + 0.5, y_lo, y_hi)
        x = xa + (xb - xa) * (yc - ya) / (yb - ya)
        half = lane_width_px(yc, size) / 2
        cov[i0:i1] += share[:, None] * span_coverage((x - half)[:, None], (x + half)[:, None], xs[None, :])
    return cov.astype(np.float32)


def _faces(ann: FrameAnnotations, size: int) -> list[tuple[str, tuple[float, float, float, float], tuple[float, ...], int]]:
    """Vehicle boxes scaled to the raster, painter's order, each with its box extended one pixel past
    the sides that lie on the image border (so the ring leaves them out) and its index in ``ann.boxes``."""
    sx, sy = size / ann.width, size / ann.height
    faces = []
    for k, (x1, y1, x2, y2, category) in enumerate(ann.boxes):
        kind = VEHICLE_CATEGORIES.get(str(category))
        if kind is None or not all(math.isfinite(v) for v in (x1, y1, x2, y2)) or x2 <= x1 or y2 <= y1:
            continue
        box = (x1 * sx, y1 * sy, x2 * sx, y2 * sy)
        open_sides = (x1 <= BORDER_EPS, y1 <= BORDER_EPS, x2 >= ann.width - BORDER_EPS, y2 >= ann.height - BORDER_EPS)
        ext = (box[0] - open_sides[0], box[1] - open_sides[1], box[2] + open_sides[2], box[3] + open_sides[3])
        faces.append(((box[3], box[3] - box[1], k), kind, box, ext))
    faces.sort(key=lambda f: f[0])
    return [(kind, box, ext, key[2]) for key, kind, box, ext in faces]


def known_channels(ann: FrameAnnotations) -> np.ndarray:
    """bool ``(len(LAYOUT_CHANNELS),)``: which channels of :func:`annotation_layout` ``ann`` determines:
    all but ``road`` when ``ann.drivable`` is None and ``lane_lines`` when ``ann.lanes`` is None."""
    known = np.ones(len(LAYOUT_CHANNELS), bool)
    known[LAYOUT_CHANNELS.index("road")] = ann.drivable is not None
    known[LAYOUT_CHANNELS.index("lane_lines")] = ann.lanes is not None
    return known


def annotation_layout(ann: FrameAnnotations, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """``(raster, known)``: float32 ``(len(LAYOUT_CHANNELS), size, size)`` in [0, 1], the channels of
    :func:`~aigc_synth.data.layout.scene_layout` built from ``ann`` (see the module docstring), and
    bool ``(len(LAYOUT_CHANNELS),)``: ``known[c]`` is False for ``road`` when ``ann.drivable`` is None
    and for ``lane_lines`` when ``ann.lanes`` is None (those channels are then zero), True otherwise."""
    size = int(size)
    sx, sy = size / ann.width, size / ann.height
    out = np.zeros((len(LAYOUT_CHANNELS), size, size), np.float32)
    known = known_channels(ann)
    road, lines, car, truck, near, edges = out
    if ann.drivable is not None:
        for poly in ann.drivable:
            road += polygon_coverage([(x * sx, y * sy) for x, y in poly], size, size)
        np.clip(road, 0.0, 1.0, out=road)
    if ann.lanes is not None:
        styles = ann.lane_styles or [""] * len(ann.lanes)
        for line, style in zip(ann.lanes, styles):
            if style not in NON_BOUNDARY_LANE_STYLES:
                lines += polyline_coverage([(x * sx, y * sy) for x, y in line], size)
        np.clip(lines, 0.0, 1.0, out=lines)
    f_h = FOCAL * size * CAMERA_HEIGHT
    for kind, box, ext, _ in _faces(ann, size):
        face = face_alpha(box, size)
        if face is None:
            continue
        sl_y, sl_x, a = face
        keep = 1.0 - a
        for ch in (road, lines, car, truck, near, edges):
            ch[sl_y, sl_x] *= keep
        (truck if kind == "truck" else car)[sl_y, sl_x] += a
        near[sl_y, sl_x] += a * min(1.0, NEAR_SCALE * max(box[3] - HORIZON * size, 0.0) / f_h)
        x0, y0, x1, y1 = ext
        inner = face_alpha((x0 + 1, y0 + 1, x1 - 1, y1 - 1), size) if x1 - x0 > 2 and y1 - y0 > 2 else None
        ring = a.copy()
        if inner is not None:
            iy, ix, ia = inner
            ring[iy.start - sl_y.start:iy.stop - sl_y.start, ix.start - sl_x.start:ix.stop - sl_x.start] -= ia
        edges[sl_y, sl_x] += np.clip(ring, 0.0, 1.0)
    return np.clip(out, 0.0, 1.0), known


def annotation_boxes(ann: FrameAnnotations, size: int = 64) -> list[dict[str, Any]]:
    """The vehicle boxes :func:`annotation_layout` paints, in annotation order, scaled to the ``size`` ×
    ``size`` raster like it (aspect ratio not kept): ``{x0, y0, x1, y1, agent, label, visible}`` with
    ``agent`` the box's index in ``ann.boxes``, ``label`` its category as annotated (``car``, ``truck``,
    ``bus``) and ``visible`` the share of its face the raster shows, the rest hidden by nearer faces
    (painted far to near as in :func:`annotation_layout`; 0 for a box too small to cover any pixel)."""
    faces = _faces(ann, int(size))
    keep = np.ones((int(size), int(size)), np.float64)  # what nearer faces leave of each pixel
    visible: dict[int, float] = {}
    for _, box, _, k in reversed(faces):  # near to far
        face = face_alpha(box, int(size))
        if face is None:
            visible[k] = 0.0
            continue
        sl_y, sl_x, a = face
        visible[k] = float((a * keep[sl_y, sl_x]).sum() / max(a.sum(), 1e-12))
        keep[sl_y, sl_x] *= 1.0 - a
    out = []
    for _, box, _, k in sorted(faces, key=lambda f: f[3]):
        x0, y0, x1, y1 = box
        out.append({"x0": float(x0), "y0": float(y0), "x1": float(x1), "y1": float(y1), "agent": int(k),
                    "label": str(ann.boxes[k][4]), "visible": min(1.0, max(0.0, visible[k]))})
    return out


def annotation_layouts(annotations: Sequence[FrameAnnotations], size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Stacked :func:`annotation_layout`: float32 ``(n, C, size, size)`` and bool ``(n, C)``."""
    pairs = [annotation_layout(a, size) for a in annotations]
    if not pairs:
        return np.zeros((0, len(LAYOUT_CHANNELS), size, size), np.float32), np.zeros((0, len(LAYOUT_CHANNELS)), bool)
    return np.stack([r for r, _ in pairs]), np.stack([k for _, k in pairs])


def with_unknown_flags(layout: torch.Tensor, known: torch.Tensor | np.ndarray | None = None) -> torch.Tensor:
    """The layout input of a model built with ``layout_unknown_flags`` (``model.layout_unknown_flags``;
    :mod:`aigc_synth.data.annotated_images` says why): float ``(B, 2C, H, W)``, the raster ``layout``
    ``(B, C, H, W)`` with its unknown channels zeroed, then one plane per channel, all 1 for a sample
    whose channel is unknown (``known[b, c]`` False) and 0 where it is known. ``known=None`` means
    every channel known (a scene's layout: the planes are zero). A ``(B, 2C, H, W)`` input is taken
    to be flagged already and returned as is."""
    c = len(LAYOUT_CHANNELS)
    if layout.dim() != 4 or layout.shape[1] not in (c, 2 * c):
        raise ValueError(f"a layout must be (B, {c}, H, W) or, flagged, (B, {2 * c}, H, W); got {tuple(layout.shape)}")
    if layout.shape[1] == 2 * c:
        return layout
    if known is None:
        return torch.cat([layout, torch.zeros_like(layout)], dim=1)
    known = torch.as_tensor(known, dtype=torch.bool, device=layout.device).reshape(layout.shape[0], c, 1, 1)
    unknown = (~known).to(layout.dtype).expand_as(layout)
    return torch.cat([layout * (1 - unknown), unknown], dim=1)


# ------------------------------------------------------------------------------------------------
# what a BDD100K export of a rendered scene carries
# ------------------------------------------------------------------------------------------------
def clip_polygon(points: Sequence[tuple[float, float]], width: float, height: float) -> Points:
    """The polygon ``points`` clipped to the image rectangle [0, width] × [0, height] (Sutherland-Hodgman)."""
    poly = [(float(x), float(y)) for x, y in points]
    for axis, bound, sign in ((0, 0.0, 1.0), (0, float(width), -1.0), (1, 0.0, 1.0), (1, float(height), -1.0)):
        out: Points = []
        for k, cur in enumerate(poly):
            prev = poly[k - 1]
            cur_in, prev_in = sign * (cur[axis] - bound) >= 0, sign * (prev[axis] - bound) >= 0
            if cur_in != prev_in:
                t = (bound - prev[axis]) / (cur[axis] - prev[axis])
                cut = [prev[0] + t * (cur[0] - prev[0]), prev[1] + t * (cur[1] - prev[1])]
                cut[axis] = bound
                out.append((cut[0], cut[1]))
            if cur_in:
                out.append(cur)
        poly = out
        if not poly:
            break
    return poly


def _clip_segment(p: tuple[float, float], q: tuple[float, float], width: float, height: float) -> Points | None:
    """The part of segment p→q inside the image (Liang-Barsky), None when there is none."""
    (x0, y0), (dx, dy) = p, (q[0] - p[0], q[1] - p[1])
    t0, t1 = 0.0, 1.0
    for d, lo, hi, v in ((dx, 0.0, width, x0), (dy, 0.0, height, y0)):
        if d == 0:
            if not lo <= v <= hi:
                return None
            continue
        a, b = (lo - v) / d, (hi - v) / d
        t0, t1 = max(t0, min(a, b)), min(t1, max(a, b))
    if t1 <= t0:
        return None
    return [(x0 + t0 * dx, y0 + t0 * dy), (x0 + t1 * dx, y0 + t1 * dy)]


def annotations_from_scene(scene: Scene, size: int = 64) -> FrameAnnotations:
    """The annotations a BDD100K export of ``scene`` rendered at ``size`` carries, in its pixels:
    the renderer's boxes (:func:`~aigc_synth.data.scene_render.scene_boxes`, category = agent kind),
    every lane boundary as a two-point polyline from the vanishing point to where it leaves the image
    (style ``"single yellow"`` for the left edge line, ``"single white"`` otherwise, as painted), and
    the asphalt (lanes and shoulders) as one drivable polygon clipped to the image.

    Straight roads only: the lane lines and the drivable area are straight lines to the vanishing
    point, wrong for a curve, a merge or a lane drop, so any other road kind raises SceneError."""
    require_straight([scene], "the annotation export (lane lines, drivable area)")
    W = H = float(size)
    hz, cx, k_bottom = HORIZON * H, W / 2.0, (H - HORIZON * H) / CAMERA_HEIGHT
    b = scene_boxes(scene, int(size))
    boxes = [(float(x0), float(y0), float(x1), float(y1), str(label)) for (x0, y0, x1, y1), label in zip(b.boxes.tolist(), b.labels)]
    x_right = -(scene.ego_lane + 0.5) * LANE_WIDTH
    x_left = (scene.num_lanes - scene.ego_lane - 0.5) * LANE_WIDTH
    lanes, styles = [], []
    for n in range(scene.num_lanes + 1):
        seg = _clip_segment((cx, hz), (cx - (x_right + n * LANE_WIDTH) * k_bottom, H), W, H)
        if seg is not None:
            lanes.append(seg)
            styles.append("single yellow" if n == scene.num_lanes else "single white")
    road = clip_polygon([(cx, hz), (cx - (x_right - SHOULDER) * k_bottom, H), (cx - (x_left + SHOULDER) * k_bottom, H)], W, H)
    return FrameAnnotations(W, H, boxes, lanes, styles, [road] if len(road) >= 3 else [])
